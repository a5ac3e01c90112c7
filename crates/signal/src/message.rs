//! Signaling messages and their validation. A [`Message`] can only be built by a
//! [`Validator`], so whatever the rooms relay has been parsed and normalized.

use std::fmt;

use thiserror::Error;
use webrtc_sdp::attribute_type::{SdpAttribute, SdpAttributeSetup};

use crate::candidate::{Candidate, CandidateError};

/// Offer or answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SdpKind {
    /// `type: "offer"`.
    Offer,
    /// `type: "answer"`.
    Answer,
}

impl SdpKind {
    /// The JSEP `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            SdpKind::Offer => "offer",
            SdpKind::Answer => "answer",
        }
    }
}

impl fmt::Display for SdpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a session description was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SdpError {
    /// Larger than [`Limits::max_sdp_bytes`].
    #[error("SDP of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Size of the SDP.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The declared JSEP type is not the one the message carries (e.g. `"answer"` in an offer),
    /// or is not a type relayed at all (`"pranswer"`, `"rollback"`, anything else).
    #[error("SDP type {found:?} where {expected} was expected")]
    WrongType {
        /// What the message needs.
        expected: SdpKind,
        /// What the client declared (truncated to 16 bytes).
        found: String,
    },
    /// An answer with `a=setup:actpass`, which only an offer may carry (RFC 8842 §5.3).
    #[error("an answer may not carry a=setup:actpass")]
    ActpassInAnswer,
    /// No media section.
    #[error("SDP has no media section")]
    NoMedia,
    /// More media sections than [`Limits::max_m_lines`].
    #[error("SDP has {count} media sections, more than {limit}")]
    TooManyMedia {
        /// m= lines found.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// `webrtc-sdp` refused it; the message names the line.
    #[error("malformed SDP: {0}")]
    Malformed(String),
}

/// Why a candidate message was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CandidateMessageError {
    /// The candidate line itself.
    #[error(transparent)]
    Candidate(#[from] CandidateError),
    /// Neither `sdpMid` nor `sdpMLineIndex` given.
    #[error("candidate needs sdpMid or sdpMLineIndex")]
    NoMediaReference,
    /// `sdpMid` is empty, longer than 32 bytes or not an RFC 5888 token.
    #[error("invalid sdpMid")]
    Mid,
    /// `sdpMLineIndex` is not below [`Limits::max_m_lines`].
    #[error("sdpMLineIndex {index} out of range (< {limit})")]
    MLineIndex {
        /// The index given.
        index: u32,
        /// The limit.
        limit: usize,
    },
    /// `usernameFragment` is not 4..=256 ice-chars (RFC 8839 §5.4).
    #[error("invalid usernameFragment")]
    UsernameFragment,
}

/// Why a bye was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ByeError {
    /// The reason is longer than [`Limits::max_reason_bytes`] or has control characters.
    #[error("invalid bye reason")]
    Reason,
}

/// Validation limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest SDP accepted, in bytes (default 64 KiB).
    pub max_sdp_bytes: usize,
    /// Most media sections in an SDP, and the bound of `sdpMLineIndex` (default 64).
    pub max_m_lines: usize,
    /// Longest bye reason (default 256).
    pub max_reason_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sdp_bytes: 64 * 1024,
            max_m_lines: 64,
            max_reason_bytes: 256,
        }
    }
}

/// A validated session description. `sdp` is the client's text with every line checked by
/// `webrtc-sdp`, re-joined with CRLF (trailing whitespace and blank lines dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    kind: SdpKind,
    sdp: String,
}

impl SessionDescription {
    /// Offer or answer.
    pub fn kind(&self) -> SdpKind {
        self.kind
    }
    /// The normalized SDP text.
    pub fn sdp(&self) -> &str {
        &self.sdp
    }
}

/// Which media section a candidate belongs to. At least one of the two is set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaRef {
    /// `sdpMid`.
    pub mid: Option<String>,
    /// `sdpMLineIndex`.
    pub m_line_index: Option<u16>,
}

/// A validated trickled candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCandidate {
    /// The parsed candidate; its `Display` is what is relayed.
    pub candidate: Candidate,
    /// Its media section.
    pub media: MediaRef,
    /// `usernameFragment`, when the client sent one.
    pub username_fragment: Option<String>,
}

/// A validated signaling message, ready to relay.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// An SDP offer.
    Offer(SessionDescription),
    /// An SDP answer.
    Answer(SessionDescription),
    /// A trickled ICE candidate.
    Candidate(IceCandidate),
    /// No more candidates for this media section (an empty `candidate` string).
    EndOfCandidates(MediaRef),
    /// The sender closes its connection to the recipient(s).
    Bye {
        /// Optional human-readable reason.
        reason: String,
    },
}

/// Builds [`Message`]s from untrusted client input.
#[derive(Debug, Clone, Default)]
pub struct Validator {
    limits: Limits,
}

fn is_token_char(b: u8) -> bool {
    // RFC 4566 token-char: %x21 / %x23-27 / %x2A-2B / %x2D-2E / %x30-39 / %x41-5A / %x5E-7E
    matches!(b, 0x21 | 0x23..=0x27 | 0x2a..=0x2b | 0x2d..=0x2e | 0x30..=0x39 | 0x41..=0x5a | 0x5e..=0x7e)
}

impl Validator {
    /// A validator with these limits.
    pub fn new(limits: Limits) -> Self {
        Validator { limits }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Validates an SDP the client declared as `declared_type` for a message that must carry
    /// `expected`.
    pub fn description(
        &self,
        expected: SdpKind,
        declared_type: &str,
        sdp: &str,
    ) -> Result<Message, SdpError> {
        if declared_type != expected.as_str() {
            let mut found: String = declared_type.chars().take(16).collect();
            found.retain(|c| !c.is_control());
            return Err(SdpError::WrongType { expected, found });
        }
        if sdp.len() > self.limits.max_sdp_bytes {
            return Err(SdpError::TooLarge {
                size: sdp.len(),
                limit: self.limits.max_sdp_bytes,
            });
        }
        if let Some(c) = sdp
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\r' | '\n' | '\t'))
        {
            return Err(SdpError::Malformed(format!(
                "control character U+{:04X}",
                u32::from(c)
            )));
        }
        let mut normalized = String::with_capacity(sdp.len() + 64);
        for line in sdp.lines() {
            let line = line.trim_end();
            if !line.is_empty() {
                normalized.push_str(line);
                normalized.push_str("\r\n");
            }
        }
        let session = webrtc_sdp::parse_sdp(&normalized, false)
            .map_err(|e| SdpError::Malformed(e.to_string()))?;
        if session.media.is_empty() {
            return Err(SdpError::NoMedia);
        }
        if session.media.len() > self.limits.max_m_lines {
            return Err(SdpError::TooManyMedia {
                count: session.media.len(),
                limit: self.limits.max_m_lines,
            });
        }
        let desc = SessionDescription {
            kind: expected,
            sdp: normalized,
        };
        match expected {
            SdpKind::Offer => Ok(Message::Offer(desc)),
            SdpKind::Answer => {
                let actpass =
                    |a: &SdpAttribute| matches!(a, SdpAttribute::Setup(SdpAttributeSetup::Actpass));
                if session.attribute.iter().any(actpass)
                    || session
                        .media
                        .iter()
                        .any(|m| m.get_attributes().iter().any(actpass))
                {
                    return Err(SdpError::ActpassInAnswer);
                }
                Ok(Message::Answer(desc))
            }
        }
    }

    /// Validates an offer (`{type: "offer", sdp}`).
    pub fn offer(&self, declared_type: &str, sdp: &str) -> Result<Message, SdpError> {
        self.description(SdpKind::Offer, declared_type, sdp)
    }

    /// Validates an answer (`{type: "answer", sdp}`).
    pub fn answer(&self, declared_type: &str, sdp: &str) -> Result<Message, SdpError> {
        self.description(SdpKind::Answer, declared_type, sdp)
    }

    /// Validates an `RTCIceCandidateInit`. An empty `candidate` is end-of-candidates for the
    /// media section ([`Message::EndOfCandidates`]).
    pub fn candidate(
        &self,
        candidate: &str,
        sdp_mid: Option<&str>,
        sdp_m_line_index: Option<u32>,
        username_fragment: Option<&str>,
    ) -> Result<Message, CandidateMessageError> {
        if let Some(mid) = sdp_mid {
            if mid.is_empty() || mid.len() > 32 || !mid.bytes().all(is_token_char) {
                return Err(CandidateMessageError::Mid);
            }
        }
        let index = match sdp_m_line_index {
            Some(i) if (i as usize) < self.limits.max_m_lines => u16::try_from(i).ok(),
            Some(index) => {
                return Err(CandidateMessageError::MLineIndex {
                    index,
                    limit: self.limits.max_m_lines,
                })
            }
            None => None,
        };
        if sdp_mid.is_none() && index.is_none() {
            return Err(CandidateMessageError::NoMediaReference);
        }
        let media = MediaRef {
            mid: sdp_mid.map(str::to_owned),
            m_line_index: index,
        };
        if candidate.is_empty() {
            return Ok(Message::EndOfCandidates(media));
        }
        let username_fragment = match username_fragment {
            Some(u)
                if (4..=256).contains(&u.len())
                    && u.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/') =>
            {
                Some(u.to_owned())
            }
            Some(_) => return Err(CandidateMessageError::UsernameFragment),
            None => None,
        };
        Ok(Message::Candidate(IceCandidate {
            candidate: Candidate::parse(candidate)?,
            media,
            username_fragment,
        }))
    }

    /// Validates a bye.
    pub fn bye(&self, reason: &str) -> Result<Message, ByeError> {
        if reason.len() > self.limits.max_reason_bytes || reason.chars().any(char::is_control) {
            return Err(ByeError::Reason);
        }
        Ok(Message::Bye {
            reason: reason.to_owned(),
        })
    }
}
