//! Zero-copy message parsing.

use std::net::SocketAddr;

use crate::attr;
use crate::error::{AttrError, IntegrityError, ParseError};
use crate::util::{array, be16, be32, padded};
use crate::MAGIC_COOKIE;
use crate::{addr, auth, decode_type, Class, Method, TransactionId, FINGERPRINT_XOR, HEADER_LEN};

/// Maximum accepted byte length of text attributes (USERNAME, REALM, NONCE, SOFTWARE, the
/// ERROR-CODE reason phrase): 763 bytes, the decoding limit of RFC 8489 (128 characters of up to
/// 6 bytes each). For USERNAME RFC 8489 §14.3 asks for fewer than 509 bytes; this crate accepts up
/// to 763 bytes there too, to be lenient with peers.
pub const MAX_TEXT_LEN: usize = 763;

/// Maximum byte length of ALTERNATE-DOMAIN (a DNS name, RFC 8489 §14.16).
pub const MAX_DOMAIN_LEN: usize = 255;

/// One attribute as it appears in a message: its type, its value (without padding), and the
/// offset of its 4-byte TLV header within the message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RawAttribute<'a> {
    /// Attribute type.
    pub typ: u16,
    /// Value bytes, without padding.
    pub value: &'a [u8],
    /// Offset of the attribute's TLV header within the message.
    pub offset: usize,
}

impl RawAttribute<'_> {
    /// Whether the type is comprehension-required (below 0x8000).
    pub const fn is_comprehension_required(&self) -> bool {
        attr::is_comprehension_required(self.typ)
    }
}

/// Which attributes stay visible after MESSAGE-INTEGRITY(-SHA256) (RFC 8489 §14.5, §14.6):
/// after MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT; after
/// MESSAGE-INTEGRITY-SHA256 only FINGERPRINT.
#[derive(Clone, Copy, Default, Debug)]
struct Gate {
    stage: u8,
}

impl Gate {
    fn admit(&mut self, typ: u16) -> bool {
        match (self.stage, typ) {
            (0, attr::MESSAGE_INTEGRITY) => {
                self.stage = 1;
                true
            }
            (0 | 1, attr::MESSAGE_INTEGRITY_SHA256) => {
                self.stage = 2;
                true
            }
            (0..=2, attr::FINGERPRINT) => {
                self.stage = 3;
                true
            }
            (0, _) => true,
            _ => false,
        }
    }
}

/// Iterator over the visible attributes of a [`Message`], in order.
///
/// Attributes that follow MESSAGE-INTEGRITY / MESSAGE-INTEGRITY-SHA256 and that RFC 8489 §14.5 /
/// §14.6 says to ignore are skipped.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    buf: &'a [u8],
    pos: usize,
    gate: Gate,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = RawAttribute<'a>;

    fn next(&mut self) -> Option<RawAttribute<'a>> {
        loop {
            let offset = self.pos;
            let typ = be16(self.buf, offset)?;
            let len = usize::from(be16(self.buf, offset.checked_add(2)?)?);
            let start = offset.checked_add(4)?;
            let value = self.buf.get(start..start.checked_add(len)?)?;
            self.pos = start.checked_add(padded(len))?;
            if self.gate.admit(typ) {
                return Some(RawAttribute { typ, value, offset });
            }
        }
    }
}

/// A small fixed-capacity list of attribute types (no heap): the result of
/// [`Message::unknown_comprehension_required`]. Holds at most [`UnknownList::CAPACITY`] distinct
/// types; further ones are dropped (and [`UnknownList::overflowed`] is set).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct UnknownList {
    types: [u16; UnknownList::CAPACITY],
    len: usize,
    overflowed: bool,
}

impl UnknownList {
    /// Maximum number of types held.
    pub const CAPACITY: usize = 16;

    /// An empty list.
    pub const fn new() -> Self {
        UnknownList {
            types: [0; Self::CAPACITY],
            len: 0,
            overflowed: false,
        }
    }

    /// Adds a type unless already present; returns `false` if the list was full.
    pub fn push(&mut self, typ: u16) -> bool {
        if self.contains(typ) {
            return true;
        }
        match self.types.get_mut(self.len) {
            Some(slot) => {
                *slot = typ;
                self.len = self.len.saturating_add(1);
                true
            }
            None => {
                self.overflowed = true;
                false
            }
        }
    }

    /// The types, in order of first appearance.
    pub fn as_slice(&self) -> &[u16] {
        self.types.get(..self.len).unwrap_or(&[])
    }

    /// Number of types held.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// True if no type is held.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if more distinct types than [`UnknownList::CAPACITY`] were pushed.
    pub const fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Whether `typ` is in the list.
    pub fn contains(&self, typ: u16) -> bool {
        self.as_slice().contains(&typ)
    }

    /// Iterates over the types.
    pub fn iter(&self) -> std::iter::Copied<std::slice::Iter<'_, u16>> {
        self.as_slice().iter().copied()
    }
}

impl<'l> IntoIterator for &'l UnknownList {
    type Item = u16;
    type IntoIter = std::iter::Copied<std::slice::Iter<'l, u16>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over the addresses of every visible attribute of one XOR-address type (TURN messages
/// may carry several XOR-PEER-ADDRESS or XOR-RELAYED-ADDRESS attributes).
#[derive(Clone, Debug)]
pub struct XorAddresses<'a> {
    attrs: Attributes<'a>,
    typ: u16,
    tid: TransactionId,
}

impl Iterator for XorAddresses<'_> {
    type Item = Result<SocketAddr, AttrError>;

    fn next(&mut self) -> Option<Self::Item> {
        let typ = self.typ;
        let a = self.attrs.by_ref().find(|a| a.typ == typ)?;
        Some(addr::decode(a.value, Some(&self.tid)))
    }
}

/// Iterator over the `(algorithm, parameters)` entries of PASSWORD-ALGORITHMS.
#[derive(Clone, Debug)]
pub struct PasswordAlgorithms<'a> {
    rest: &'a [u8],
}

impl<'a> PasswordAlgorithms<'a> {
    /// Checks the whole list first, so that iteration cannot fail.
    fn new(v: &'a [u8]) -> Result<Self, AttrError> {
        let mut rest = v;
        while !rest.is_empty() {
            rest = split_algorithm(rest)
                .ok_or(AttrError::BadLength { len: v.len() })?
                .2;
        }
        Ok(PasswordAlgorithms { rest: v })
    }
}

/// Splits one `algorithm, length, parameters (padded)` entry off the front.
fn split_algorithm(v: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let alg = be16(v, 0)?;
    let plen = usize::from(be16(v, 2)?);
    let params = v.get(4..plen.checked_add(4)?)?;
    // Tolerate missing padding on the last entry.
    let next = padded(plen).checked_add(4)?.min(v.len());
    Some((alg, params, v.get(next..)?))
}

impl<'a> Iterator for PasswordAlgorithms<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (alg, params, rest) = split_algorithm(self.rest)?;
        self.rest = rest;
        Some((alg, params))
    }
}

/// Iterator over the types listed in UNKNOWN-ATTRIBUTES.
#[derive(Clone, Debug)]
pub struct UnknownAttributes<'a> {
    rest: &'a [u8],
}

impl Iterator for UnknownAttributes<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        let t = be16(self.rest, 0)?;
        self.rest = self.rest.get(2..)?;
        Some(t)
    }
}

/// The value of ADDRESS-ERROR-CODE (RFC 8656 §18.12).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AddressError<'a> {
    /// Address family the error is about (1 IPv4, 2 IPv6).
    pub family: u8,
    /// Error code, 300..=699.
    pub code: u16,
    /// Reason phrase.
    pub reason: &'a str,
}

/// The value of ICMP (RFC 8656 §18.13).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Icmp {
    /// ICMP type.
    pub typ: u8,
    /// ICMP code.
    pub code: u8,
    /// Error data (next-hop MTU for "packet too big"/"fragmentation needed", else 0).
    pub error_data: u32,
}

/// A parsed STUN message borrowing its buffer. Attributes are decoded on demand.
///
/// Typed getters all follow one convention: `Ok(None)` if the attribute is absent, `Ok(Some(v))`
/// for the first visible occurrence, `Err(_)` if that occurrence is malformed. The exceptions are
/// presence-only flags ([`Message::dont_fragment`], [`Message::use_candidate`]), which return
/// `bool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    buf: &'a [u8],
    integrity: Option<usize>,
    integrity_sha256: Option<usize>,
    fingerprint: Option<usize>,
}

fn bad_len(v: &[u8]) -> AttrError {
    AttrError::BadLength { len: v.len() }
}

fn exact<const N: usize>(v: &[u8]) -> Result<[u8; N], AttrError> {
    if v.len() != N {
        return Err(bad_len(v));
    }
    array(v, 0).ok_or_else(|| bad_len(v))
}

fn text(v: &[u8], max: usize) -> Result<&str, AttrError> {
    if v.len() > max {
        return Err(AttrError::TooLong { len: v.len(), max });
    }
    std::str::from_utf8(v).map_err(|_| AttrError::BadUtf8)
}

/// Decodes `class` (low 3 bits of `b2`) and `number` into an error code.
fn error_number(b2: u8, number: u8) -> Result<u16, AttrError> {
    let class = b2 & 0x07;
    if !(3..=6).contains(&class) || number > 99 {
        return Err(AttrError::BadValue("error code outside 300..=699"));
    }
    Ok(u16::from(class) * 100 + u16::from(number))
}

impl<'a> Message<'a> {
    /// Parses one whole STUN message: a datagram, or a stream frame cut with
    /// [`crate::stream_frame_len`]. `buf.len()` must equal 20 + the header's length.
    ///
    /// Checks: at least 20 bytes; the top two bits are zero; the length is a multiple of 4 and
    /// matches the buffer exactly; every attribute (with its value padded to 4 bytes) fits; a
    /// FINGERPRINT, if present, is the last attribute.
    ///
    /// Attributes after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT,
    /// and after MESSAGE-INTEGRITY-SHA256 other than FINGERPRINT, are ignored (RFC 8489 §14.5,
    /// §14.6): [`Message::attributes`], [`Message::get`] and the typed getters never show them.
    ///
    /// A message whose bytes 4..8 are not the magic cookie is accepted as an RFC 3489 message
    /// ([`Message::is_rfc3489`]).
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let hdr: [u8; HEADER_LEN] = array(buf, 0).ok_or(ParseError::TooShort { len: buf.len() })?;
        let [b0, _, l0, l1, ..] = hdr;
        if b0 & 0xC0 != 0 {
            return Err(ParseError::NotStun { first_byte: b0 });
        }
        let tid = TransactionId(array(&hdr, 8).ok_or(ParseError::TooShort { len: buf.len() })?);
        let length = u16::from_be_bytes([l0, l1]);
        if length % 4 != 0 {
            return Err(ParseError::BadLength { length, tid });
        }
        let expected = HEADER_LEN + usize::from(length);
        let actual = buf.len();
        if actual < expected {
            return Err(ParseError::Truncated {
                expected,
                actual,
                tid,
            });
        }
        if actual > expected {
            return Err(ParseError::TrailingBytes {
                expected,
                actual,
                tid,
            });
        }

        let mut msg = Message {
            buf,
            integrity: None,
            integrity_sha256: None,
            fingerprint: None,
        };
        let mut gate = Gate::default();
        let mut pos = HEADER_LEN;
        while pos < expected {
            let overrun = ParseError::AttributeOverrun { offset: pos, tid };
            let typ = be16(buf, pos).ok_or(overrun.clone())?;
            let len = be16(buf, pos + 2).ok_or(overrun.clone())?;
            let end = pos + 4 + padded(usize::from(len));
            if end > expected {
                return Err(overrun);
            }
            if typ == attr::FINGERPRINT && end != expected {
                return Err(ParseError::FingerprintNotLast { offset: pos, tid });
            }
            if gate.admit(typ) {
                match typ {
                    attr::MESSAGE_INTEGRITY => msg.integrity = Some(pos),
                    attr::MESSAGE_INTEGRITY_SHA256 => msg.integrity_sha256 = Some(pos),
                    attr::FINGERPRINT => msg.fingerprint = Some(pos),
                    _ => {}
                }
            }
            pos = end;
        }
        Ok(msg)
    }

    /// The message class.
    pub fn class(&self) -> Class {
        self.message_type().0
    }

    /// The message method.
    pub fn method(&self) -> Method {
        self.message_type().1
    }

    fn message_type(&self) -> (Class, Method) {
        decode_type(be16(self.buf, 0).unwrap_or(0))
    }

    /// The raw 16-bit message type.
    pub fn raw_type(&self) -> u16 {
        be16(self.buf, 0).unwrap_or(0)
    }

    /// The transaction id (bytes 8..20).
    pub fn transaction_id(&self) -> TransactionId {
        TransactionId(array(self.buf, 8).unwrap_or_default())
    }

    /// Bytes 4..8: the magic cookie, or for an RFC 3489 message the first 4 bytes of its 128-bit
    /// transaction id.
    pub fn cookie(&self) -> [u8; 4] {
        array(self.buf, 4).unwrap_or_default()
    }

    /// True if bytes 4..8 are not the magic cookie (a classic RFC 3489 message).
    pub fn is_rfc3489(&self) -> bool {
        self.cookie() != MAGIC_COOKIE.to_be_bytes()
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Total length in bytes (20 + the header's length field).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True if the message has no attributes at all.
    pub fn is_empty(&self) -> bool {
        self.buf.len() <= HEADER_LEN
    }

    /// The visible attributes, in order (see [`Message::parse`] for which are ignored).
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            buf: self.buf,
            pos: HEADER_LEN,
            gate: Gate::default(),
        }
    }

    /// The first visible attribute of type `typ`.
    pub fn get(&self, typ: u16) -> Option<RawAttribute<'a>> {
        self.attributes().find(|a| a.typ == typ)
    }

    /// Every visible attribute of type `typ`.
    pub fn get_all(&self, typ: u16) -> impl Iterator<Item = RawAttribute<'a>> + 'a {
        self.attributes().filter(move |a| a.typ == typ)
    }

    /// Comprehension-required attribute types (below 0x8000) for which `known` is false, without
    /// duplicates, in order of appearance (at most [`UnknownList::CAPACITY`]). Pass
    /// [`attr::is_known`] or a narrower predicate.
    pub fn unknown_comprehension_required(&self, known: impl Fn(u16) -> bool) -> UnknownList {
        let mut list = UnknownList::new();
        for a in self.attributes() {
            if a.is_comprehension_required() && !known(a.typ) {
                list.push(a.typ);
            }
        }
        list
    }

    /// True if the message has a (visible) MESSAGE-INTEGRITY attribute.
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    /// True if the message has a (visible) MESSAGE-INTEGRITY-SHA256 attribute.
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256.is_some()
    }

    /// True if the message ends with a FINGERPRINT attribute.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// `None` if there is no FINGERPRINT; otherwise whether its value equals
    /// CRC-32(message up to the attribute) XOR 0x5354554E (RFC 8489 §14.7).
    pub fn check_fingerprint(&self) -> Option<bool> {
        let off = self.fingerprint?;
        let value = self.attr_value(off);
        let ok = match (value.len(), be32(value, 0), self.buf.get(..off)) {
            (4, Some(v), Some(prefix)) => crc32fast::hash(prefix) ^ FINGERPRINT_XOR == v,
            _ => false,
        };
        Some(ok)
    }

    /// The value of the attribute whose TLV header is at `off` (empty if out of range).
    fn attr_value(&self, off: usize) -> &'a [u8] {
        let len = be16(self.buf, off + 2).map_or(0, usize::from);
        self.buf.get(off + 4..off + 4 + len).unwrap_or(&[])
    }

    /// Verifies MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) with `key` (the short-term password,
    /// or a long-term key from [`crate::long_term_key_md5`]): the HMAC covers the message up to
    /// the attribute, with the header length adjusted to end right after it. Compares in
    /// constant time.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let off = self.integrity.ok_or(IntegrityError::Missing)?;
        let tag = self.attr_value(off);
        if tag.len() != 20 {
            return Err(IntegrityError::BadLength { len: tag.len() });
        }
        self.verify(off, tag, |prefix, length| {
            auth::verify_sha1(key, prefix, length, tag)
        })
    }

    /// Verifies MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, RFC 8489 §14.6), accepting values truncated
    /// to 16..=32 bytes in multiples of 4 (the leftmost bytes of the HMAC). Constant time.
    pub fn verify_integrity_sha256(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let off = self.integrity_sha256.ok_or(IntegrityError::Missing)?;
        let tag = self.attr_value(off);
        if !(16..=32).contains(&tag.len()) || tag.len() & 3 != 0 {
            return Err(IntegrityError::BadLength { len: tag.len() });
        }
        self.verify(off, tag, |prefix, length| {
            auth::verify_sha256(key, prefix, length, tag)
        })
    }

    fn verify(
        &self,
        off: usize,
        tag: &[u8],
        check: impl FnOnce(&[u8], u16) -> bool,
    ) -> Result<(), IntegrityError> {
        // Header length as if the message ended right after this attribute.
        let end = off + 4 + tag.len();
        let length = end
            .checked_sub(HEADER_LEN)
            .and_then(|l| u16::try_from(l).ok())
            .ok_or(IntegrityError::Mismatch)?;
        let prefix = self.buf.get(..off).ok_or(IntegrityError::Mismatch)?;
        if check(prefix, length) {
            Ok(())
        } else {
            Err(IntegrityError::Mismatch)
        }
    }

    /// Decodes the first visible attribute of type `typ` with `f`.
    pub fn decode_first<T>(
        &self,
        typ: u16,
        f: impl FnOnce(&'a [u8]) -> Result<T, AttrError>,
    ) -> Result<Option<T>, AttrError> {
        self.get(typ).map(|a| f(a.value)).transpose()
    }

    fn address(&self, typ: u16) -> Result<Option<SocketAddr>, AttrError> {
        self.decode_first(typ, |v| addr::decode(v, None))
    }

    fn xor_address(&self, typ: u16) -> Result<Option<SocketAddr>, AttrError> {
        let tid = self.transaction_id();
        self.decode_first(typ, |v| addr::decode(v, Some(&tid)))
    }

    fn xor_addresses(&self, typ: u16) -> XorAddresses<'a> {
        XorAddresses {
            attrs: self.attributes(),
            typ,
            tid: self.transaction_id(),
        }
    }

    fn text_attr(&self, typ: u16, max: usize) -> Result<Option<&'a str>, AttrError> {
        self.decode_first(typ, |v| text(v, max))
    }

    fn u32_attr(&self, typ: u16) -> Result<Option<u32>, AttrError> {
        self.decode_first(typ, |v| exact::<4>(v).map(u32::from_be_bytes))
    }

    fn u64_attr(&self, typ: u16) -> Result<Option<u64>, AttrError> {
        self.decode_first(typ, |v| exact::<8>(v).map(u64::from_be_bytes))
    }

    /// First byte of a 4-byte value (REQUESTED-TRANSPORT, REQUESTED-ADDRESS-FAMILY, ...).
    fn first_of_4(&self, typ: u16) -> Result<Option<u8>, AttrError> {
        self.decode_first(typ, |v| exact::<4>(v).map(|[b, ..]| b))
    }

    /// First u16 of a 4-byte value (CHANNEL-NUMBER, RESPONSE-PORT).
    fn u16_of_4(&self, typ: u16) -> Result<Option<u16>, AttrError> {
        self.decode_first(typ, |v| {
            exact::<4>(v).map(|[a, b, ..]| u16::from_be_bytes([a, b]))
        })
    }

    // ----- RFC 8489 -----

    /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
    pub fn xor_mapped_address(&self) -> Result<Option<SocketAddr>, AttrError> {
        self.xor_address(attr::XOR_MAPPED_ADDRESS)
    }

    /// MAPPED-ADDRESS (RFC 8489 §14.1).
    pub fn mapped_address(&self) -> Result<Option<SocketAddr>, AttrError> {
        self.address(attr::MAPPED_ADDRESS)
    }

    /// USERNAME (RFC 8489 §14.3): UTF-8, at most [`MAX_TEXT_LEN`] bytes.
    pub fn username(&self) -> Result<Option<&'a str>, AttrError> {
        self.text_attr(attr::USERNAME, MAX_TEXT_LEN)
    }

    /// USERHASH (RFC 8489 §14.4): 32 bytes.
    pub fn userhash(&self) -> Result<Option<&'a [u8; 32]>, AttrError> {
        self.decode_first(attr::USERHASH, |v| v.try_into().map_err(|_| bad_len(v)))
    }

    /// REALM (RFC 8489 §14.9): UTF-8, at most [`MAX_TEXT_LEN`] bytes.
    pub fn realm(&self) -> Result<Option<&'a str>, AttrError> {
        self.text_attr(attr::REALM, MAX_TEXT_LEN)
    }

    /// NONCE (RFC 8489 §14.10): UTF-8, at most [`MAX_TEXT_LEN`] bytes.
    pub fn nonce(&self) -> Result<Option<&'a str>, AttrError> {
        self.text_attr(attr::NONCE, MAX_TEXT_LEN)
    }

    /// SOFTWARE (RFC 8489 §14.14): UTF-8, at most [`MAX_TEXT_LEN`] bytes.
    pub fn software(&self) -> Result<Option<&'a str>, AttrError> {
        self.text_attr(attr::SOFTWARE, MAX_TEXT_LEN)
    }

    /// ERROR-CODE (RFC 8489 §14.8): `(code, reason)` with code in 300..=699.
    pub fn error_code(&self) -> Result<Option<(u16, &'a str)>, AttrError> {
        self.decode_first(attr::ERROR_CODE, |v| {
            let [_, _, class, number]: [u8; 4] = array(v, 0).ok_or_else(|| bad_len(v))?;
            let code = error_number(class, number)?;
            Ok((code, text(v.get(4..).unwrap_or(&[]), MAX_TEXT_LEN)?))
        })
    }

    /// UNKNOWN-ATTRIBUTES (RFC 8489 §14.9): the listed types (the value length must be even).
    pub fn unknown_attributes(&self) -> Result<Option<UnknownAttributes<'a>>, AttrError> {
        self.decode_first(attr::UNKNOWN_ATTRIBUTES, |v| {
            if v.len() % 2 != 0 {
                return Err(bad_len(v));
            }
            Ok(UnknownAttributes { rest: v })
        })
    }

    /// PASSWORD-ALGORITHMS (RFC 8489 §14.11): iterator of `(algorithm, parameters)`.
    pub fn password_algorithms(&self) -> Result<Option<PasswordAlgorithms<'a>>, AttrError> {
        self.decode_first(attr::PASSWORD_ALGORITHMS, PasswordAlgorithms::new)
    }

    /// PASSWORD-ALGORITHM (RFC 8489 §14.12): `(algorithm, parameters)`.
    pub fn password_algorithm(&self) -> Result<Option<(u16, &'a [u8])>, AttrError> {
        self.decode_first(attr::PASSWORD_ALGORITHM, |v| {
            let (alg, params, _) = split_algorithm(v).ok_or_else(|| bad_len(v))?;
            Ok((alg, params))
        })
    }

    /// ALTERNATE-SERVER (RFC 8489 §14.15; plain address encoding).
    pub fn alternate_server(&self) -> Result<Option<SocketAddr>, AttrError> {
        self.address(attr::ALTERNATE_SERVER)
    }

    /// ALTERNATE-DOMAIN (RFC 8489 §14.16): at most [`MAX_DOMAIN_LEN`] bytes.
    pub fn alternate_domain(&self) -> Result<Option<&'a str>, AttrError> {
        self.text_attr(attr::ALTERNATE_DOMAIN, MAX_DOMAIN_LEN)
    }

    // ----- RFC 8656 -----

    /// CHANNEL-NUMBER (RFC 8656 §18.1): the raw number (not range-checked).
    pub fn channel_number(&self) -> Result<Option<u16>, AttrError> {
        self.u16_of_4(attr::CHANNEL_NUMBER)
    }

    /// LIFETIME (RFC 8656 §18.2), seconds.
    pub fn lifetime(&self) -> Result<Option<u32>, AttrError> {
        self.u32_attr(attr::LIFETIME)
    }

    /// The first XOR-PEER-ADDRESS (RFC 8656 §18.3).
    pub fn xor_peer_address(&self) -> Result<Option<SocketAddr>, AttrError> {
        self.xor_address(attr::XOR_PEER_ADDRESS)
    }

    /// Every XOR-PEER-ADDRESS (CreatePermission may carry several).
    pub fn xor_peer_addresses(&self) -> XorAddresses<'a> {
        self.xor_addresses(attr::XOR_PEER_ADDRESS)
    }

    /// DATA (RFC 8656 §18.4).
    pub fn data(&self) -> Result<Option<&'a [u8]>, AttrError> {
        self.decode_first(attr::DATA, Ok)
    }

    /// The first XOR-RELAYED-ADDRESS (RFC 8656 §18.5).
    pub fn xor_relayed_address(&self) -> Result<Option<SocketAddr>, AttrError> {
        self.xor_address(attr::XOR_RELAYED_ADDRESS)
    }

    /// Every XOR-RELAYED-ADDRESS (a dual-stack allocation answer carries two).
    pub fn xor_relayed_addresses(&self) -> XorAddresses<'a> {
        self.xor_addresses(attr::XOR_RELAYED_ADDRESS)
    }

    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6): the raw family byte (1 IPv4, 2 IPv6).
    pub fn requested_address_family(&self) -> Result<Option<u8>, AttrError> {
        self.first_of_4(attr::REQUESTED_ADDRESS_FAMILY)
    }

    /// EVEN-PORT (RFC 8656 §18.7): the R bit ("reserve the next port too"). Accepts a 1-byte
    /// value (the RFC) or a 4-byte one.
    pub fn even_port(&self) -> Result<Option<bool>, AttrError> {
        self.decode_first(attr::EVEN_PORT, |v| match (v.len(), v.first()) {
            (1 | 4, Some(b)) => Ok(b & 0x80 != 0),
            _ => Err(bad_len(v)),
        })
    }

    /// REQUESTED-TRANSPORT (RFC 8656 §18.8): the IP protocol number (17 UDP, 6 TCP).
    pub fn requested_transport(&self) -> Result<Option<u8>, AttrError> {
        self.first_of_4(attr::REQUESTED_TRANSPORT)
    }

    /// DONT-FRAGMENT (RFC 8656 §18.9): whether present.
    pub fn dont_fragment(&self) -> bool {
        self.get(attr::DONT_FRAGMENT).is_some()
    }

    /// RESERVATION-TOKEN (RFC 8656 §18.10): 8 bytes.
    pub fn reservation_token(&self) -> Result<Option<[u8; 8]>, AttrError> {
        self.decode_first(attr::RESERVATION_TOKEN, exact::<8>)
    }

    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11): the raw family byte.
    pub fn additional_address_family(&self) -> Result<Option<u8>, AttrError> {
        self.first_of_4(attr::ADDITIONAL_ADDRESS_FAMILY)
    }

    /// ADDRESS-ERROR-CODE (RFC 8656 §18.12).
    pub fn address_error_code(&self) -> Result<Option<AddressError<'a>>, AttrError> {
        self.decode_first(attr::ADDRESS_ERROR_CODE, |v| {
            let [family, _, class, number]: [u8; 4] = array(v, 0).ok_or_else(|| bad_len(v))?;
            let code = error_number(class, number)?;
            let reason = text(v.get(4..).unwrap_or(&[]), MAX_TEXT_LEN)?;
            Ok(AddressError {
                family,
                code,
                reason,
            })
        })
    }

    /// ICMP (RFC 8656 §18.13).
    pub fn icmp(&self) -> Result<Option<Icmp>, AttrError> {
        self.decode_first(attr::ICMP, |v| {
            let [_, _, typ, code, d0, d1, d2, d3] = exact::<8>(v)?;
            Ok(Icmp {
                typ,
                code,
                error_data: u32::from_be_bytes([d0, d1, d2, d3]),
            })
        })
    }

    // ----- RFC 6062 -----

    /// CONNECTION-ID (RFC 6062 §6.2.1).
    pub fn connection_id(&self) -> Result<Option<u32>, AttrError> {
        self.u32_attr(attr::CONNECTION_ID)
    }

    // ----- RFC 5780 -----

    /// CHANGE-REQUEST (RFC 5780 §7.2): `(change_ip, change_port)`.
    pub fn change_request(&self) -> Result<Option<(bool, bool)>, AttrError> {
        self.decode_first(attr::CHANGE_REQUEST, |v| {
            let [_, _, _, flags] = exact::<4>(v)?;
            Ok((flags & 0x04 != 0, flags & 0x02 != 0))
        })
    }

    /// PADDING (RFC 5780 §7.6): the padding bytes.
    pub fn padding(&self) -> Result<Option<&'a [u8]>, AttrError> {
        self.decode_first(attr::PADDING, Ok)
    }

    /// RESPONSE-PORT (RFC 5780 §7.5).
    pub fn response_port(&self) -> Result<Option<u16>, AttrError> {
        self.u16_of_4(attr::RESPONSE_PORT)
    }

    /// RESPONSE-ORIGIN (RFC 5780 §7.3).
    pub fn response_origin(&self) -> Result<Option<SocketAddr>, AttrError> {
        self.address(attr::RESPONSE_ORIGIN)
    }

    /// OTHER-ADDRESS (RFC 5780 §7.4).
    pub fn other_address(&self) -> Result<Option<SocketAddr>, AttrError> {
        self.address(attr::OTHER_ADDRESS)
    }

    // ----- RFC 3489 -----

    /// RESPONSE-ADDRESS (RFC 3489 §11.2.2).
    pub fn response_address(&self) -> Result<Option<SocketAddr>, AttrError> {
        self.address(attr::RESPONSE_ADDRESS)
    }

    /// SOURCE-ADDRESS (RFC 3489 §11.2.5).
    pub fn source_address(&self) -> Result<Option<SocketAddr>, AttrError> {
        self.address(attr::SOURCE_ADDRESS)
    }

    /// CHANGED-ADDRESS (RFC 3489 §11.2.3).
    pub fn changed_address(&self) -> Result<Option<SocketAddr>, AttrError> {
        self.address(attr::CHANGED_ADDRESS)
    }

    /// REFLECTED-FROM (RFC 3489 §11.2.11).
    pub fn reflected_from(&self) -> Result<Option<SocketAddr>, AttrError> {
        self.address(attr::REFLECTED_FROM)
    }

    // ----- RFC 8445 -----

    /// PRIORITY (RFC 8445 §16.1).
    pub fn priority(&self) -> Result<Option<u32>, AttrError> {
        self.u32_attr(attr::PRIORITY)
    }

    /// USE-CANDIDATE (RFC 8445 §16.1): whether present.
    pub fn use_candidate(&self) -> bool {
        self.get(attr::USE_CANDIDATE).is_some()
    }

    /// ICE-CONTROLLED (RFC 8445 §16.1): the tie-breaker.
    pub fn ice_controlled(&self) -> Result<Option<u64>, AttrError> {
        self.u64_attr(attr::ICE_CONTROLLED)
    }

    /// ICE-CONTROLLING (RFC 8445 §16.1): the tie-breaker.
    pub fn ice_controlling(&self) -> Result<Option<u64>, AttrError> {
        self.u64_attr(attr::ICE_CONTROLLING)
    }
}
