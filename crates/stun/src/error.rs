//! Error types.

use crate::TransactionId;

/// Why a buffer is not a valid STUN or ChannelData message.
///
/// Variants raised after the 20-byte header could be read carry its transaction id (see
/// [`ParseError::transaction_id`]) so that a server can answer with 400 (Bad Request).
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer bytes than a header (20 for STUN, 4 for ChannelData).
    #[error("buffer too short: {len} bytes")]
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// The two most significant bits of the first byte are not zero.
    #[error("not a STUN message (first byte {first_byte:#04x})")]
    NotStun {
        /// The offending byte.
        first_byte: u8,
    },
    /// The header's message length is not a multiple of 4.
    #[error("message length {length} is not a multiple of 4")]
    BadLength {
        /// The header's length field.
        length: u16,
        /// The header's transaction id.
        tid: TransactionId,
    },
    /// The buffer is shorter than the header says.
    #[error("message truncated: header says {expected} bytes, buffer has {actual}")]
    Truncated {
        /// 20 + the header's length field.
        expected: usize,
        /// The buffer length.
        actual: usize,
        /// The header's transaction id.
        tid: TransactionId,
    },
    /// The buffer is longer than the header says.
    #[error("trailing bytes: header says {expected} bytes, buffer has {actual}")]
    TrailingBytes {
        /// 20 + the header's length field.
        expected: usize,
        /// The buffer length.
        actual: usize,
        /// The header's transaction id.
        tid: TransactionId,
    },
    /// An attribute's header or (padded) value runs past the end of the message.
    #[error("attribute at offset {offset} runs past the end of the message")]
    AttributeOverrun {
        /// Offset of the attribute's TLV header within the message.
        offset: usize,
        /// The header's transaction id.
        tid: TransactionId,
    },
    /// A FINGERPRINT attribute is followed by another attribute.
    #[error("FINGERPRINT at offset {offset} is not the last attribute")]
    FingerprintNotLast {
        /// Offset of the FINGERPRINT attribute within the message.
        offset: usize,
        /// The header's transaction id.
        tid: TransactionId,
    },
    /// A ChannelData channel number outside 0x4000..=0x7FFF.
    #[error("bad ChannelData channel number {channel:#06x}")]
    BadChannel {
        /// The channel number read.
        channel: u16,
    },
    /// A ChannelData length larger than the bytes that follow the header.
    #[error("ChannelData truncated: length {declared}, {available} bytes available")]
    ChannelDataTruncated {
        /// The length field.
        declared: usize,
        /// Bytes after the 4-byte header.
        available: usize,
    },
    /// On a stream, a first byte that starts neither a STUN message nor ChannelData.
    #[error("first byte {first_byte:#04x} starts neither STUN nor ChannelData")]
    UnknownFrame {
        /// The offending byte.
        first_byte: u8,
    },
}

impl ParseError {
    /// The transaction id of the message, if its header could be read.
    pub fn transaction_id(&self) -> Option<TransactionId> {
        match self {
            ParseError::BadLength { tid, .. }
            | ParseError::Truncated { tid, .. }
            | ParseError::TrailingBytes { tid, .. }
            | ParseError::AttributeOverrun { tid, .. }
            | ParseError::FingerprintNotLast { tid, .. } => Some(*tid),
            _ => None,
        }
    }
}

/// Why a message could not be built.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// The output buffer cannot hold the message.
    #[error("buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A value is longer than its attribute allows.
    #[error("value too long: {len} bytes (max {max})")]
    ValueTooLong {
        /// The value's length (bytes, or characters for the 128-character limits).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message would exceed the 16-bit length field.
    #[error("message too long for the 16-bit length field")]
    MessageTooLong,
    /// A method above 0xFFF.
    #[error("method {0:#x} does not fit in 12 bits")]
    InvalidMethod(u16),
    /// A channel number outside 0x4000..=0x7FFF.
    #[error("channel number {0:#06x} outside 0x4000..=0x7FFF")]
    InvalidChannel(u16),
    /// A value that the attribute cannot carry (e.g. error code outside 300..=699).
    #[error("invalid value: {0}")]
    InvalidValue(&'static str),
    /// An attribute after MESSAGE-INTEGRITY(-SHA256) or FINGERPRINT that RFC 8489 §14.5/14.6/14.7
    /// does not allow there (only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT may follow
    /// MESSAGE-INTEGRITY; only FINGERPRINT may follow MESSAGE-INTEGRITY-SHA256; nothing may
    /// follow FINGERPRINT).
    #[error("attribute {0:#06x} not allowed after integrity/fingerprint attributes")]
    AttributeOrder(u16),
}

/// Why MESSAGE-INTEGRITY(-SHA256) verification failed.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum IntegrityError {
    /// The message has no such (visible) attribute.
    #[error("integrity attribute missing")]
    Missing,
    /// The attribute's length is invalid (20 for MESSAGE-INTEGRITY; 16..=32 and a multiple of 4
    /// for MESSAGE-INTEGRITY-SHA256).
    #[error("integrity attribute has invalid length {len}")]
    BadLength {
        /// The attribute's value length.
        len: usize,
    },
    /// The HMAC does not match.
    #[error("integrity check failed")]
    Mismatch,
}

/// Why an attribute value could not be decoded by a typed getter.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum AttrError {
    /// The value's length is wrong for the attribute.
    #[error("attribute value has invalid length {len}")]
    BadLength {
        /// The value length.
        len: usize,
    },
    /// An address family other than 0x01 (IPv4) or 0x02 (IPv6).
    #[error("unknown address family {0:#04x}")]
    BadFamily(u8),
    /// A text attribute that is not UTF-8.
    #[error("attribute value is not valid UTF-8")]
    BadUtf8,
    /// A value longer than the attribute's limit.
    #[error("attribute value too long: {len} bytes (max {max})")]
    TooLong {
        /// The value length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field with a value the attribute does not allow.
    #[error("invalid attribute value: {0}")]
    BadValue(&'static str),
}
