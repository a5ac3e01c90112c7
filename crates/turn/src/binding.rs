//! Binding requests (RFC 8489 §7.3), RFC 5780 behaviour discovery and RFC 3489 compatibility.

use std::net::SocketAddr;

use switchboard_stun::{attr, Class, Message, MessageBuilder, Method, PacketKind};

/// The transport a message arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A UDP datagram.
    Udp,
    /// A frame from a plain TCP connection.
    Tcp,
    /// A frame from a TLS connection.
    Tls,
}

impl Transport {
    /// Lower-case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// Where a message arrived: the facts the caller's socket knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// The client's address as seen by the server (the mapped address).
    pub peer: SocketAddr,
    /// The local address the message arrived on.
    pub local: SocketAddr,
    /// RFC 5780: the server address that differs from `local` in both IP and port, when the
    /// listener has an alternate address. `None` means the server cannot change address.
    pub other: Option<SocketAddr>,
    /// The transport.
    pub transport: Transport,
}

/// Which of the listener's sockets sends the reply (RFC 5780 CHANGE-REQUEST).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The socket (or connection) the request arrived on.
    Same,
    /// Same port, the other IP address.
    ChangeIp,
    /// Same IP address, the other port.
    ChangePort,
    /// The other IP address and the other port.
    ChangeBoth,
}

impl Via {
    /// The source address a reply sent this way carries, given where the request arrived.
    /// `None` when the listener has no alternate address and `self` is not [`Via::Same`].
    pub fn origin(self, local: SocketAddr, other: Option<SocketAddr>) -> Option<SocketAddr> {
        match (self, other) {
            (Via::Same, _) => Some(local),
            (Via::ChangeIp, Some(o)) => Some(SocketAddr::new(o.ip(), local.port())),
            (Via::ChangePort, Some(o)) => Some(SocketAddr::new(local.ip(), o.port())),
            (Via::ChangeBoth, Some(o)) => Some(o),
            (_, None) => None,
        }
    }
}

/// Why an input got no reply. The caller counts these; for stream transports a reason where
/// [`DropReason::is_fault`] is true also closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not a STUN message (first byte outside the STUN range).
    NotStun,
    /// A TURN ChannelData message while no TURN allocation exists.
    ChannelData,
    /// The STUN message failed to parse.
    Malformed,
    /// FINGERPRINT present but wrong.
    BadFingerprint,
    /// An indication: nothing to answer (Binding indications are keep-alives).
    Indication,
    /// A success or error response sent to the server: nothing to answer.
    Response,
    /// The caller's output buffer was too small for the reply (a server bug, never input).
    OutputTooSmall,
}

impl DropReason {
    /// Short stable name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NotStun => "not_stun",
            DropReason::ChannelData => "channel_data",
            DropReason::Malformed => "malformed",
            DropReason::BadFingerprint => "bad_fingerprint",
            DropReason::Indication => "indication",
            DropReason::Response => "response",
            DropReason::OutputTooSmall => "output_too_small",
        }
    }

    /// True when the input shows the peer is not speaking STUN correctly.
    pub fn is_fault(self) -> bool {
        matches!(
            self,
            DropReason::NotStun
                | DropReason::ChannelData
                | DropReason::Malformed
                | DropReason::BadFingerprint
        )
    }
}

/// What the caller should do with one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `out[..len]` to `to` from the socket chosen by `via`.
    Reply {
        /// Which socket sends.
        via: Via,
        /// Destination.
        to: SocketAddr,
        /// Bytes of the output buffer to send.
        len: usize,
        /// Whether the reply is an error response (counted separately).
        error: bool,
    },
    /// Send nothing.
    Drop(DropReason),
}

/// Comprehension-required attributes a Binding request may carry that this server understands
/// (RFC 8489, RFC 5780 and the ICE attributes that ride on Binding).
fn known_in_binding(typ: u16) -> bool {
    matches!(
        typ,
        attr::USERNAME
            | attr::MESSAGE_INTEGRITY
            | attr::MESSAGE_INTEGRITY_SHA256
            | attr::USERHASH
            | attr::REALM
            | attr::NONCE
            | attr::PASSWORD_ALGORITHM
            | attr::CHANGE_REQUEST
            | attr::RESPONSE_PORT
            | attr::PADDING
            | attr::PRIORITY
            | attr::USE_CANDIDATE
            | attr::XOR_MAPPED_ADDRESS
            | attr::MAPPED_ADDRESS
    )
}

/// Answers Binding requests. Immutable after construction; share it between workers.
#[derive(Clone, Debug)]
pub struct BindingService {
    software: String,
}

/// Largest reply this service writes; callers size their output buffers with it.
pub const MAX_REPLY: usize = 2048;

/// Room kept for the other attributes of a reply when PADDING is echoed.
const PADDING_HEADROOM: usize = 256;

impl BindingService {
    /// A service that names itself `software` in the SOFTWARE attribute (empty: no SOFTWARE).
    pub fn new(software: &str) -> Self {
        // SOFTWARE is limited to 128 characters (RFC 8489 §14.14).
        let software: String = software.chars().take(128).collect();
        BindingService { software }
    }

    /// Handles one STUN datagram or stream frame, writing any reply into `out`
    /// (at least [`MAX_REPLY`] bytes).
    pub fn handle(&self, arrival: &Arrival, input: &[u8], out: &mut [u8]) -> Action {
        let Some(&first) = input.first() else {
            return Action::Drop(DropReason::NotStun);
        };
        match switchboard_stun::classify(first) {
            PacketKind::Stun => {}
            PacketKind::ChannelData => return Action::Drop(DropReason::ChannelData),
            _ => return Action::Drop(DropReason::NotStun),
        }
        let msg = match Message::parse(input) {
            Ok(m) => m,
            Err(_) => return Action::Drop(DropReason::Malformed),
        };
        if msg.check_fingerprint() == Some(false) {
            return Action::Drop(DropReason::BadFingerprint);
        }
        match msg.class() {
            Class::Request => self.answer(arrival, &msg, out),
            Class::Indication => Action::Drop(DropReason::Indication),
            Class::Success | Class::Error => Action::Drop(DropReason::Response),
        }
    }

    /// Answers an already parsed request: Binding, or 400 for any other method.
    pub fn answer(&self, arrival: &Arrival, msg: &Message<'_>, out: &mut [u8]) -> Action {
        let result = if msg.method() != Method::BINDING {
            self.error(msg, out, 400, "Bad Request: method not supported here", &[])
                .map(|len| (Via::Same, arrival.peer, len, true))
        } else {
            self.binding(arrival, msg, out)
        };
        match result {
            Some((via, to, len, error)) => Action::Reply {
                via,
                to,
                len,
                error,
            },
            None => Action::Drop(DropReason::OutputTooSmall),
        }
    }

    fn binding(
        &self,
        arrival: &Arrival,
        msg: &Message<'_>,
        out: &mut [u8],
    ) -> Option<(Via, SocketAddr, usize, bool)> {
        let unknown = msg.unknown_comprehension_required(known_in_binding);
        if !unknown.as_slice().is_empty() {
            return self
                .error(msg, out, 420, "Unknown Attribute", unknown.as_slice())
                .map(|len| (Via::Same, arrival.peer, len, true));
        }
        let stream = arrival.transport != Transport::Udp;

        let via = match msg.change_request().transpose() {
            None => Via::Same,
            Some(Ok((false, false))) => Via::Same,
            Some(Ok((true, false))) => Via::ChangeIp,
            Some(Ok((false, true))) => Via::ChangePort,
            Some(Ok((true, true))) => Via::ChangeBoth,
            Some(Err(_)) => {
                return self
                    .error(msg, out, 400, "Bad Request: malformed CHANGE-REQUEST", &[])
                    .map(|len| (Via::Same, arrival.peer, len, true));
            }
        };
        if via != Via::Same {
            if stream {
                return self
                    .error(
                        msg,
                        out,
                        400,
                        "Bad Request: CHANGE-REQUEST is UDP only",
                        &[],
                    )
                    .map(|len| (Via::Same, arrival.peer, len, true));
            }
            if arrival.other.is_none() {
                // RFC 5780 §6.1: a server without an alternate address answers CHANGE-REQUEST
                // with 420, so the client learns it cannot test filtering here.
                return self
                    .error(msg, out, 420, "Unknown Attribute", &[attr::CHANGE_REQUEST])
                    .map(|len| (Via::Same, arrival.peer, len, true));
            }
        }

        let mut to = arrival.peer;
        match msg.response_port().transpose() {
            Some(Ok(port)) if !stream => to.set_port(port),
            Some(Ok(_)) => {
                return self
                    .error(msg, out, 400, "Bad Request: RESPONSE-PORT is UDP only", &[])
                    .map(|len| (Via::Same, arrival.peer, len, true));
            }
            Some(Err(_)) => {
                return self
                    .error(msg, out, 400, "Bad Request: malformed RESPONSE-PORT", &[])
                    .map(|len| (Via::Same, arrival.peer, len, true));
            }
            None => {}
        }

        // RFC 5780 §7.6: PADDING in a request is echoed with the same length, so the client can
        // test fragmentation; the reply is then no larger than the request (no amplification).
        let padding = match msg.padding() {
            Ok(None) => 0,
            Ok(Some(_)) if stream => {
                return self
                    .error(msg, out, 400, "Bad Request: PADDING is UDP only", &[])
                    .map(|len| (Via::Same, arrival.peer, len, true));
            }
            Ok(Some(p)) if p.len() + PADDING_HEADROOM <= MAX_REPLY.min(out.len()) => {
                (p.len() + 3) & !3
            }
            Ok(Some(_)) | Err(_) => {
                return self
                    .error(msg, out, 400, "Bad Request: PADDING too large", &[])
                    .map(|len| (Via::Same, arrival.peer, len, true));
            }
        };

        let origin = via.origin(arrival.local, arrival.other)?;
        let mut b = MessageBuilder::response_to(out, msg, Class::Success).ok()?;
        if msg.is_rfc3489() {
            // RFC 3489 clients read MAPPED-ADDRESS, SOURCE-ADDRESS and CHANGED-ADDRESS. They have
            // no magic cookie, so no XOR attributes and no FINGERPRINT; and no SOFTWARE, which
            // they know as SERVER-NAME and reject unless its length is a multiple of 4.
            b.mapped_address(arrival.peer).ok()?;
            b.source_address(origin).ok()?;
            if let Some(other) = arrival.other {
                b.changed_address(other).ok()?;
            }
        } else {
            b.xor_mapped_address(arrival.peer).ok()?;
            if let Some(other) = arrival.other {
                b.other_address(other).ok()?;
                b.response_origin(origin).ok()?;
            }
            if !self.software.is_empty() {
                b.software(&self.software).ok()?;
            }
        }
        if padding > 0 {
            b.padding(padding).ok()?;
        }
        if !msg.is_rfc3489() {
            b.fingerprint().ok()?;
        }
        Some((via, to, b.finish(), false))
    }

    fn error(
        &self,
        msg: &Message<'_>,
        out: &mut [u8],
        code: u16,
        reason: &str,
        unknown: &[u16],
    ) -> Option<usize> {
        let mut b = MessageBuilder::response_to(out, msg, Class::Error).ok()?;
        b.error_code(code, reason).ok()?;
        if !unknown.is_empty() {
            b.unknown_attributes(unknown).ok()?;
        }
        if !msg.is_rfc3489() {
            if !self.software.is_empty() {
                b.software(&self.software).ok()?;
            }
            b.fingerprint().ok()?;
        }
        Some(b.finish())
    }
}

#[cfg(test)]
mod tests;
