//! Sans-IO STUN/TURN message codec.
//!
//! This crate parses and builds the messages of
//! [RFC 8489](https://www.rfc-editor.org/rfc/rfc8489) (STUN),
//! [RFC 8656](https://www.rfc-editor.org/rfc/rfc8656) (TURN),
//! [RFC 6062](https://www.rfc-editor.org/rfc/rfc6062) (TURN over TCP),
//! [RFC 5780](https://www.rfc-editor.org/rfc/rfc5780) (NAT behaviour discovery),
//! [RFC 8445](https://www.rfc-editor.org/rfc/rfc8445) (ICE) and the classic
//! [RFC 3489](https://www.rfc-editor.org/rfc/rfc3489) format (messages without the magic cookie).
//!
//! * [`Message::parse`] validates the framing of one message in a borrowed buffer and then reads
//!   attributes lazily, without copying or allocating.
//! * [`MessageBuilder`] writes a message into a caller-supplied `&mut [u8]`, without allocating.
//! * [`ChannelData`] parses and encodes TURN ChannelData frames; [`classify`] and
//!   [`PacketKind::of`] demultiplex datagrams (RFC 7983), [`is_binding_request`] tells the
//!   stateless Binding requests from the rest, and [`stream_frame_len`] splits byte streams
//!   (TCP/TLS) into frames.
//!
//! No function of this crate panics on any input.
//!
//! # Example
//!
//! ```
//! use std::net::SocketAddr;
//! use switchboard_stun::{attr, Class, Message, MessageBuilder, Method, TransactionId};
//!
//! // A client builds a Binding request with short-term credentials.
//! let password = b"VOkJxbRl1RmTxUk/WvJxBt";
//! let mut req_buf = [0u8; 128];
//! let mut b = MessageBuilder::new(&mut req_buf, Class::Request, Method::BINDING, TransactionId([7; 12]))?;
//! b.username("evtj:h6vY")?.message_integrity(password)?.fingerprint()?;
//! let n = b.finish();
//!
//! // The server parses it, checks it and answers.
//! let req = Message::parse(&req_buf[..n])?;
//! assert_eq!((req.class(), req.method()), (Class::Request, Method::BINDING));
//! assert_eq!(req.username()?, Some("evtj:h6vY"));
//! assert!(req.unknown_comprehension_required(attr::is_known).is_empty());
//! assert_eq!(req.check_fingerprint(), Some(true));
//! req.verify_integrity(password)?;
//!
//! let client: SocketAddr = "192.0.2.1:32853".parse().unwrap();
//! let mut resp_buf = [0u8; 128];
//! let mut r = MessageBuilder::response_to(&mut resp_buf, &req, Class::Success)?;
//! r.xor_mapped_address(client)?.message_integrity(password)?.fingerprint()?;
//! let m = r.finish();
//!
//! let resp = Message::parse(&resp_buf[..m])?;
//! assert_eq!(resp.transaction_id(), req.transaction_id());
//! assert_eq!(resp.xor_mapped_address()?, Some(client));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

mod addr;
pub mod attr;
mod auth;
mod builder;
mod channel;
mod error;
mod message;
mod util;

pub use auth::{long_term_key_md5, long_term_key_sha256, password_algorithm, userhash};
pub use builder::MessageBuilder;
pub use channel::ChannelData;
pub use error::{AttrError, BuildError, IntegrityError, ParseError};
pub use message::{
    AddressError, Attributes, Icmp, Message, PasswordAlgorithms, RawAttribute, UnknownAttributes,
    UnknownList, XorAddresses, MAX_DOMAIN_LEN, MAX_TEXT_LEN,
};

/// The fixed magic cookie of RFC 5389/8489 messages (bytes 4..8 of the header).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Length of the STUN message header in bytes.
pub const HEADER_LEN: usize = 20;

/// Length of the TURN ChannelData header in bytes.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;

/// The value XORed into the CRC-32 of the FINGERPRINT attribute ("STUN").
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// The 96-bit transaction id of an RFC 8489 message (bytes 8..20 of the header).
///
/// For an RFC 3489 message the 128-bit id is [`Message::cookie`] followed by this value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

impl From<[u8; 12]> for TransactionId {
    fn from(b: [u8; 12]) -> Self {
        TransactionId(b)
    }
}

/// The class of a STUN message (RFC 8489 §5).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Class {
    /// A request (C1 C0 = 0b00).
    Request,
    /// An indication (0b01).
    Indication,
    /// A success response (0b10).
    Success,
    /// An error response (0b11).
    Error,
}

impl Class {
    const fn bits(self) -> u16 {
        match self {
            Class::Request => 0,
            Class::Indication => 1,
            Class::Success => 2,
            Class::Error => 3,
        }
    }

    const fn from_bits(bits: u16) -> Class {
        match bits & 3 {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        }
    }

    /// True for [`Class::Success`] and [`Class::Error`].
    pub const fn is_response(self) -> bool {
        matches!(self, Class::Success | Class::Error)
    }
}

/// A STUN method: a 12-bit number (RFC 8489 §5).
///
/// [`encode_type`] uses only the low 12 bits; [`MessageBuilder`] rejects larger values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Method(pub u16);

impl Method {
    /// Binding (RFC 8489).
    pub const BINDING: Method = Method(0x001);
    /// Shared Secret (RFC 3489, obsolete; no longer used).
    pub const SHARED_SECRET: Method = Method(0x002);
    /// Allocate (RFC 8656).
    pub const ALLOCATE: Method = Method(0x003);
    /// Refresh (RFC 8656).
    pub const REFRESH: Method = Method(0x004);
    /// Send (RFC 8656; indication only).
    pub const SEND: Method = Method(0x006);
    /// Data (RFC 8656; indication only).
    pub const DATA: Method = Method(0x007);
    /// CreatePermission (RFC 8656).
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// ChannelBind (RFC 8656).
    pub const CHANNEL_BIND: Method = Method(0x009);
    /// Connect (RFC 6062).
    pub const CONNECT: Method = Method(0x00A);
    /// ConnectionBind (RFC 6062).
    pub const CONNECTION_BIND: Method = Method(0x00B);
    /// ConnectionAttempt (RFC 6062; indication only).
    pub const CONNECTION_ATTEMPT: Method = Method(0x00C);

    /// The registered name of a method this crate knows, e.g. `"Binding"`.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x001 => "Binding",
            0x002 => "SharedSecret",
            0x003 => "Allocate",
            0x004 => "Refresh",
            0x006 => "Send",
            0x007 => "Data",
            0x008 => "CreatePermission",
            0x009 => "ChannelBind",
            0x00A => "Connect",
            0x00B => "ConnectionBind",
            0x00C => "ConnectionAttempt",
            _ => return None,
        })
    }
}

/// Encodes a class and method into the 16-bit message type (RFC 8489 §5):
/// `M11..M7 C1 M6..M4 C0 M3..M0` in the low 14 bits. Bits of the method above bit 11 are dropped.
pub const fn encode_type(class: Class, method: Method) -> u16 {
    let m = method.0 & 0x0FFF;
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

/// Splits a 16-bit message type into class and method (the inverse of [`encode_type`]).
/// The two most significant bits are ignored.
pub const fn decode_type(t: u16) -> (Class, Method) {
    let m = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let c = ((t >> 4) & 1) | ((t >> 7) & 2);
    (Class::from_bits(c), Method(m))
}

/// What the first byte of a datagram or stream chunk says it is (RFC 7983, RFC 8656 §12).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PacketKind {
    /// 0..=3: a STUN message.
    Stun,
    /// 64..=127: a TURN ChannelData message (channel numbers 0x4000..=0x7FFF: RFC 8656 narrowed
    /// the range to 0x4FFF, i.e. first bytes 64..=79, but RFC 5766 clients use up to 0x7FFE).
    ChannelData,
    /// Anything else (DTLS, RTP, ZRTP, reserved channel ranges, ...), and an empty packet.
    Other,
}

impl PacketKind {
    /// Classifies a whole datagram or stream frame by its first byte ([`classify`]); an empty
    /// one is [`PacketKind::Other`].
    pub const fn of(packet: &[u8]) -> PacketKind {
        match packet.first() {
            Some(&first) => classify(first),
            None => PacketKind::Other,
        }
    }
}

/// Whether `packet` starts with the header of a STUN Binding request: at least [`HEADER_LEN`]
/// bytes and message type 0x0001, with or without the magic cookie (RFC 3489). Only the header
/// is looked at; whether the message is valid is for [`Message::parse`] to say.
///
/// Lets a server send Binding requests, which need no TURN state, to a stateless path without
/// parsing them twice.
pub fn is_binding_request(packet: &[u8]) -> bool {
    matches!(
        header_transaction_id(packet),
        Some((Class::Request, Method::BINDING, _))
    )
}

/// Classifies a packet by its first byte (RFC 7983 demultiplexing as restricted by RFC 8656 §12).
///
/// STUN is recognised only for first bytes 0..=3, i.e. methods below 0x100 (all registered
/// methods); [`Message::parse`] itself accepts any method.
pub const fn classify(first_byte: u8) -> PacketKind {
    match first_byte {
        0..=3 => PacketKind::Stun,
        64..=127 => PacketKind::ChannelData,
        _ => PacketKind::Other,
    }
}

/// For stream transports (RFC 8489 §6.2.2, RFC 8656 §12.5): the length of the next frame at the
/// start of `buf`.
///
/// * `Ok(None)`: more bytes are needed to tell (fewer than 4 bytes available).
/// * STUN: `20 + length`. The length's multiple-of-4 rule is left to [`Message::parse`], whose
///   error then carries the transaction id.
/// * ChannelData: `4 + length` rounded up to a multiple of 4 (padding is mandatory over streams).
/// * `Err(ParseError::UnknownFrame)` if the first byte is neither.
///
/// The frame may be longer than `buf`; wait for that many bytes before parsing it.
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let kind = classify(first);
    if kind == PacketKind::Other {
        return Err(ParseError::UnknownFrame { first_byte: first });
    }
    let Some(len) = util::be16(buf, 2) else {
        return Ok(None);
    };
    let len = usize::from(len);
    Ok(Some(match kind {
        PacketKind::Stun => HEADER_LEN.saturating_add(len),
        _ => CHANNEL_DATA_HEADER_LEN.saturating_add(util::padded(len)),
    }))
}

/// Reads class, method and transaction id from a buffer whose first 20 bytes look like a STUN
/// header (top two bits zero), whether or not the rest of the message is valid. Lets a server
/// answer a malformed request with 400 (Bad Request).
pub fn header_transaction_id(buf: &[u8]) -> Option<(Class, Method, TransactionId)> {
    let hdr: [u8; HEADER_LEN] = util::array(buf, 0)?;
    let [b0, b1, ..] = hdr;
    if b0 & 0xC0 != 0 {
        return None;
    }
    let (class, method) = decode_type(u16::from_be_bytes([b0, b1]));
    Some((class, method, TransactionId(util::array(&hdr, 8)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_encoding_table() {
        let cases = [
            (Class::Request, Method::BINDING, 0x0001),
            (Class::Indication, Method::BINDING, 0x0011),
            (Class::Success, Method::BINDING, 0x0101),
            (Class::Error, Method::BINDING, 0x0111),
            (Class::Request, Method::ALLOCATE, 0x0003),
            (Class::Success, Method::ALLOCATE, 0x0103),
            (Class::Error, Method::ALLOCATE, 0x0113),
            (Class::Request, Method::REFRESH, 0x0004),
            (Class::Error, Method::REFRESH, 0x0114),
            (Class::Indication, Method::SEND, 0x0016),
            (Class::Indication, Method::DATA, 0x0017),
            (Class::Request, Method::CREATE_PERMISSION, 0x0008),
            (Class::Success, Method::CHANNEL_BIND, 0x0109),
            (Class::Request, Method::CONNECT, 0x000A),
            (Class::Success, Method::CONNECTION_BIND, 0x010B),
            (Class::Indication, Method::CONNECTION_ATTEMPT, 0x001C),
            (Class::Request, Method(0x0FFF), 0x3EEF),
            (Class::Error, Method(0x0FFF), 0x3FFF),
            (Class::Success, Method(0x0080), 0x0300),
        ];
        for (class, method, t) in cases {
            assert_eq!(encode_type(class, method), t, "{class:?} {method:?}");
            assert_eq!(decode_type(t), (class, method), "{t:#06x}");
        }
    }

    #[test]
    fn type_roundtrip_exhaustive() {
        for m in 0..=0x0FFF {
            for class in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let t = encode_type(class, Method(m));
                assert_eq!(t & 0xC000, 0);
                assert_eq!(decode_type(t), (class, Method(m)));
            }
        }
    }

    #[test]
    fn classify_ranges() {
        for b in 0..=255u8 {
            let want = match b {
                0..=3 => PacketKind::Stun,
                0x40..=0x7F => PacketKind::ChannelData,
                _ => PacketKind::Other,
            };
            assert_eq!(classify(b), want);
        }
    }

    #[test]
    fn packet_kind_of_whole_packets() {
        assert_eq!(PacketKind::of(&[]), PacketKind::Other);
        for b in 0..=255u8 {
            assert_eq!(PacketKind::of(&[b]), classify(b), "{b:#04x}");
            assert_eq!(PacketKind::of(&[b, 0xFF, 0, 0]), classify(b), "{b:#04x}");
        }
        // RFC 7983: 20..=63 DTLS, 128..=191 RTP/RTCP, 16..=19 ZRTP; none of them is STUN.
        for b in [16u8, 19, 20, 22, 63, 128, 144, 191, 192, 255] {
            assert_eq!(PacketKind::of(&[b; 24]), PacketKind::Other, "{b:#04x}");
        }
        assert_eq!(PacketKind::of(&[0x40, 0x00, 0, 0]), PacketKind::ChannelData);
        assert_eq!(PacketKind::of(&[0x7F, 0xFF, 0, 0]), PacketKind::ChannelData);
    }

    #[test]
    fn binding_request_by_header() {
        // Exactly message type 0x0001 in a whole header, whatever the two type bytes.
        let mut h = [0u8; HEADER_LEN];
        for b0 in 0..=255u8 {
            for b1 in 0..=255u8 {
                h[0] = b0;
                h[1] = b1;
                assert_eq!(
                    is_binding_request(&h),
                    (b0, b1) == (0, 1),
                    "{b0:#04x}{b1:02x}"
                );
            }
        }
        // A short buffer is not a header.
        h[0] = 0;
        h[1] = 1;
        for n in 0..HEADER_LEN {
            assert!(!is_binding_request(&h[..n]), "{n} bytes");
        }
        assert!(is_binding_request(&h));
        // The length field, cookie and transaction id are not looked at (RFC 3489 included).
        h[2..].fill(0xAB);
        assert!(is_binding_request(&h));
        // Other classes and methods of Binding's neighbours are not Binding requests.
        for (class, method) in [
            (Class::Indication, Method::BINDING),
            (Class::Success, Method::BINDING),
            (Class::Error, Method::BINDING),
            (Class::Request, Method::ALLOCATE),
            (Class::Request, Method::REFRESH),
            (Class::Indication, Method::SEND),
        ] {
            h[..2].copy_from_slice(&encode_type(class, method).to_be_bytes());
            assert!(!is_binding_request(&h), "{class:?} {method:?}");
        }
    }

    #[test]
    fn binding_request_built_and_parsed() {
        let mut buf = [0u8; 64];
        let n = {
            let mut b = MessageBuilder::new(
                &mut buf,
                Class::Request,
                Method::BINDING,
                TransactionId([3; 12]),
            )
            .unwrap();
            b.fingerprint().unwrap();
            b.finish()
        };
        assert!(is_binding_request(&buf[..n]));
        assert_eq!(PacketKind::of(&buf[..n]), PacketKind::Stun);
        let mut cd = [0u8; 8];
        let m = ChannelData::encode(0x4001, b"hi", &mut cd, false).unwrap();
        assert_eq!(PacketKind::of(&cd[..m]), PacketKind::ChannelData);
        assert!(!is_binding_request(&cd[..m]));
    }

    #[test]
    fn stream_framing() {
        assert_eq!(stream_frame_len(&[]), Ok(None));
        assert_eq!(stream_frame_len(&[0x00]), Ok(None));
        assert_eq!(stream_frame_len(&[0x00, 0x01, 0x00]), Ok(None));
        assert_eq!(stream_frame_len(&[0x00, 0x01, 0x00, 0x08]), Ok(Some(28)));
        assert_eq!(
            stream_frame_len(&[0x01, 0x01, 0xFF, 0xFC, 9, 9]),
            Ok(Some(20 + 0xFFFC))
        );
        assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00, 0x05]), Ok(Some(12)));
        assert_eq!(stream_frame_len(&[0x4F, 0xFF, 0x00, 0x08]), Ok(Some(12)));
        assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00, 0x00]), Ok(Some(4)));
        assert_eq!(
            stream_frame_len(&[0x40, 0x00, 0xFF, 0xFF]),
            Ok(Some(4 + 0x10000))
        );
        assert_eq!(stream_frame_len(&[0x40]), Ok(None));
        assert_eq!(
            stream_frame_len(&[0x16, 0x03, 0x01, 0x00]),
            Err(ParseError::UnknownFrame { first_byte: 0x16 })
        );
        assert_eq!(
            stream_frame_len(&[0x80]),
            Err(ParseError::UnknownFrame { first_byte: 0x80 })
        );
    }

    #[test]
    fn header_tid_helper() {
        let mut b = [0u8; 24];
        b[0] = 0x01;
        b[1] = 0x13;
        b[8..20].copy_from_slice(&[9; 12]);
        assert_eq!(
            header_transaction_id(&b),
            Some((Class::Error, Method::ALLOCATE, TransactionId([9; 12])))
        );
        assert_eq!(header_transaction_id(&b[..19]), None);
        b[0] = 0x40;
        assert_eq!(header_transaction_id(&b), None);
    }
}

/// Support for tests and fuzzing outside this crate.
#[doc(hidden)]
pub mod testing {
    use crate::{attr, Message};

    /// Calls every accessor and typed getter of `m` and verifies its integrity with a fixed key,
    /// discarding the results: the property tests and the fuzz target use it to prove that no
    /// input, however malformed, makes any of them panic.
    pub fn exercise(m: &Message<'_>) {
        let _ = (
            m.class(),
            m.method(),
            m.transaction_id(),
            m.cookie(),
            m.is_rfc3489(),
            m.raw_type(),
        );
        let _ = (m.as_bytes(), m.len(), m.is_empty());
        for a in m.attributes() {
            let _ = (
                a.typ,
                a.value,
                a.offset,
                a.is_comprehension_required(),
                attr::name(a.typ),
            );
            let _ = m.get(a.typ);
        }
        let _ = m.unknown_comprehension_required(attr::is_known).as_slice();
        let _ = m.check_fingerprint();
        let _ = m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt");
        let _ = m.verify_integrity_sha256(b"VOkJxbRl1RmTxUk/WvJxBt");
        let _ = (
            m.xor_mapped_address(),
            m.mapped_address(),
            m.xor_peer_address(),
            m.xor_relayed_address(),
        );
        let _ = m.xor_peer_addresses().count();
        let _ = m.xor_relayed_addresses().count();
        let _ = (
            m.username(),
            m.realm(),
            m.nonce(),
            m.software(),
            m.alternate_domain(),
        );
        let _ = (
            m.error_code(),
            m.lifetime(),
            m.requested_transport(),
            m.channel_number(),
            m.data(),
        );
        let _ = (
            m.even_port(),
            m.reservation_token(),
            m.dont_fragment(),
            m.requested_address_family(),
        );
        let _ = (
            m.additional_address_family(),
            m.address_error_code(),
            m.icmp(),
            m.change_request(),
        );
        let _ = (
            m.response_port(),
            m.padding(),
            m.response_origin(),
            m.other_address(),
        );
        let _ = (
            m.changed_address(),
            m.source_address(),
            m.response_address(),
            m.reflected_from(),
        );
        let _ = (
            m.priority(),
            m.use_candidate(),
            m.ice_controlled(),
            m.ice_controlling(),
        );
        let _ = (
            m.password_algorithm(),
            m.userhash(),
            m.alternate_server(),
            m.connection_id(),
        );
        if let Ok(Some(it)) = m.password_algorithms() {
            let _ = it.count();
        }
        if let Ok(Some(it)) = m.unknown_attributes() {
            let _ = it.count();
        }
    }
}
