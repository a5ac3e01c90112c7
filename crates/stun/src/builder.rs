//! Allocation-free message building.

use std::net::SocketAddr;

use crate::attr;
use crate::error::BuildError;
use crate::message::{MAX_DOMAIN_LEN, MAX_TEXT_LEN};
use crate::util::{padded, put};
use crate::{
    addr, auth, encode_type, Class, Message, Method, TransactionId, FINGERPRINT_XOR, HEADER_LEN,
    MAGIC_COOKIE,
};

/// Largest value of the header's length field that is a multiple of 4.
const MAX_BODY: usize = 0xFFFC;

/// Maximum number of characters of REALM, NONCE, SOFTWARE and reason phrases (RFC 8489: fewer
/// than 128).
const MAX_CHARS: usize = 127;

/// Writes a STUN message into a caller-supplied buffer, without heap allocation.
///
/// Attributes are appended in call order; the header length is kept up to date, so
/// [`MessageBuilder::as_bytes`] is a complete message at any time. An adder that fails leaves the
/// message unchanged.
///
/// Ordering rules (RFC 8489 §14.5–14.7) are enforced: after MESSAGE-INTEGRITY only
/// MESSAGE-INTEGRITY-SHA256 and FINGERPRINT may be added, after MESSAGE-INTEGRITY-SHA256 only
/// FINGERPRINT, and nothing after FINGERPRINT ([`BuildError::AttributeOrder`]).
#[derive(Debug)]
pub struct MessageBuilder<'b> {
    buf: &'b mut [u8],
    len: usize,
    tid: TransactionId,
    pad: u8,
    stage: u8,
}

impl<'b> MessageBuilder<'b> {
    /// Starts a message with the magic cookie.
    pub fn new(
        buf: &'b mut [u8],
        class: Class,
        method: Method,
        tid: TransactionId,
    ) -> Result<Self, BuildError> {
        Self::new_with_cookie(buf, class, method, MAGIC_COOKIE.to_be_bytes(), tid)
    }

    /// Starts a message with arbitrary bytes 4..8 (e.g. the first 4 bytes of an RFC 3489
    /// 128-bit transaction id).
    pub fn new_with_cookie(
        buf: &'b mut [u8],
        class: Class,
        method: Method,
        cookie: [u8; 4],
        tid: TransactionId,
    ) -> Result<Self, BuildError> {
        if method.0 > 0x0FFF {
            return Err(BuildError::InvalidMethod(method.0));
        }
        let available = buf.len();
        let hdr = buf
            .get_mut(..HEADER_LEN)
            .ok_or(BuildError::BufferTooSmall {
                needed: HEADER_LEN,
                available,
            })?;
        let mut h = [0u8; HEADER_LEN];
        let (t, rest) = h.split_at_mut(2);
        t.copy_from_slice(&encode_type(class, method).to_be_bytes());
        let (_len, rest) = rest.split_at_mut(2);
        let (c, id) = rest.split_at_mut(4);
        c.copy_from_slice(&cookie);
        id.copy_from_slice(&tid.0);
        hdr.copy_from_slice(&h);
        Ok(MessageBuilder {
            buf,
            len: HEADER_LEN,
            tid,
            pad: 0,
            stage: 0,
        })
    }

    /// Starts a response to `req`: same method, the given class, the same transaction id and the
    /// same cookie bytes (so an RFC 3489 request gets its 128-bit id echoed).
    pub fn response_to(
        buf: &'b mut [u8],
        req: &Message<'_>,
        class: Class,
    ) -> Result<Self, BuildError> {
        Self::new_with_cookie(buf, class, req.method(), req.cookie(), req.transaction_id())
    }

    /// Sets the byte used to pad attribute values to a multiple of 4 (default 0). RFC 8489 lets
    /// padding be any value; the RFC 5769 sample messages 2.1–2.3 use 0x20.
    pub fn set_padding_byte(&mut self, pad: u8) -> &mut Self {
        self.pad = pad;
        self
    }

    /// The transaction id written in the header.
    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    /// Total bytes written so far (header included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no attribute has been added yet.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// The message written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// Ends building; returns the total length: `buf[..n]` is the message.
    pub fn finish(self) -> usize {
        self.len
    }

    fn next_stage(&self, typ: u16) -> Result<u8, BuildError> {
        match (self.stage, typ) {
            (0, attr::MESSAGE_INTEGRITY) => Ok(1),
            (0 | 1, attr::MESSAGE_INTEGRITY_SHA256) => Ok(2),
            (0..=2, attr::FINGERPRINT) => Ok(3),
            (0, _) => Ok(0),
            _ => Err(BuildError::AttributeOrder(typ)),
        }
    }

    /// Appends an attribute with a `vlen`-byte value filled by `fill(prefix, value)`, where
    /// `prefix` is the message before the attribute with its length field already covering the
    /// attribute. Nothing is written unless all checks pass.
    fn append(
        &mut self,
        typ: u16,
        vlen: usize,
        fill: impl FnOnce(&[u8], &mut [u8]),
    ) -> Result<&mut Self, BuildError> {
        let stage = self.next_stage(typ)?;
        let vlen16 = u16::try_from(vlen).map_err(|_| BuildError::ValueTooLong {
            len: vlen,
            max: 0xFFFF,
        })?;
        let start = self.len;
        let total = start + 4 + padded(vlen);
        let body = total - HEADER_LEN;
        if body > MAX_BODY {
            return Err(BuildError::MessageTooLong);
        }
        let available = self.buf.len();
        let too_small = BuildError::BufferTooSmall {
            needed: total,
            available,
        };
        let out = self.buf.get_mut(..total).ok_or(too_small.clone())?;
        let (prefix, attr_bytes) = out.split_at_mut_checked(start).ok_or(too_small.clone())?;
        // `body` <= 0xFFFC, so the cast is lossless.
        if !put(prefix, 2, &(body as u16).to_be_bytes()) {
            return Err(too_small);
        }
        let (tl, rest) = attr_bytes
            .split_at_mut_checked(4)
            .ok_or(too_small.clone())?;
        let (value, pad) = rest.split_at_mut_checked(vlen).ok_or(too_small)?;
        let [t0, t1] = typ.to_be_bytes();
        let [l0, l1] = vlen16.to_be_bytes();
        tl.copy_from_slice(&[t0, t1, l0, l1]);
        fill(prefix, value);
        pad.fill(self.pad);
        self.len = total;
        self.stage = stage;
        Ok(self)
    }

    /// Appends an attribute, padding its value to a multiple of 4 with the padding byte.
    pub fn add(&mut self, typ: u16, value: &[u8]) -> Result<&mut Self, BuildError> {
        self.append(typ, value.len(), |_, v| v.copy_from_slice(value))
    }

    /// Appends an attribute with a `len`-byte value written in place by `fill` (zero-copy: e.g.
    /// read a relayed payload straight into a DATA attribute). The slot holds whatever the buffer
    /// held before; `fill` must write all of it.
    pub fn add_with(
        &mut self,
        typ: u16,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<&mut Self, BuildError> {
        self.append(typ, len, |_, v| fill(v))
    }

    fn address(&mut self, typ: u16, a: SocketAddr, xor: bool) -> Result<&mut Self, BuildError> {
        let tid = self.tid;
        let key = if xor { Some(&tid) } else { None };
        self.append(typ, addr::encoded_len(&a), |_, v| addr::encode(&a, key, v))
    }

    fn text(
        &mut self,
        typ: u16,
        s: &str,
        max_chars: Option<usize>,
    ) -> Result<&mut Self, BuildError> {
        if s.len() > MAX_TEXT_LEN {
            return Err(BuildError::ValueTooLong {
                len: s.len(),
                max: MAX_TEXT_LEN,
            });
        }
        if let Some(max) = max_chars {
            let n = s.chars().count();
            if n > max {
                return Err(BuildError::ValueTooLong { len: n, max });
            }
        }
        self.add(typ, s.as_bytes())
    }

    fn u32_attr(&mut self, typ: u16, v: u32) -> Result<&mut Self, BuildError> {
        self.add(typ, &v.to_be_bytes())
    }

    fn u64_attr(&mut self, typ: u16, v: u64) -> Result<&mut Self, BuildError> {
        self.add(typ, &v.to_be_bytes())
    }

    // ----- RFC 8489 -----

    /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
    pub fn xor_mapped_address(&mut self, a: SocketAddr) -> Result<&mut Self, BuildError> {
        self.address(attr::XOR_MAPPED_ADDRESS, a, true)
    }

    /// MAPPED-ADDRESS (RFC 8489 §14.1).
    pub fn mapped_address(&mut self, a: SocketAddr) -> Result<&mut Self, BuildError> {
        self.address(attr::MAPPED_ADDRESS, a, false)
    }

    /// USERNAME (RFC 8489 §14.3), at most [`MAX_TEXT_LEN`](crate::MAX_TEXT_LEN) bytes.
    pub fn username(&mut self, s: &str) -> Result<&mut Self, BuildError> {
        self.text(attr::USERNAME, s, None)
    }

    /// USERHASH (RFC 8489 §14.4); see [`crate::userhash`].
    pub fn userhash(&mut self, h: &[u8; 32]) -> Result<&mut Self, BuildError> {
        self.add(attr::USERHASH, h)
    }

    /// REALM (RFC 8489 §14.9): fewer than 128 characters.
    pub fn realm(&mut self, s: &str) -> Result<&mut Self, BuildError> {
        self.text(attr::REALM, s, Some(MAX_CHARS))
    }

    /// NONCE (RFC 8489 §14.10): fewer than 128 characters.
    pub fn nonce(&mut self, s: &str) -> Result<&mut Self, BuildError> {
        self.text(attr::NONCE, s, Some(MAX_CHARS))
    }

    /// SOFTWARE (RFC 8489 §14.14): fewer than 128 characters.
    pub fn software(&mut self, s: &str) -> Result<&mut Self, BuildError> {
        self.text(attr::SOFTWARE, s, Some(MAX_CHARS))
    }

    /// ERROR-CODE (RFC 8489 §14.8): `code` in 300..=699 (class = code / 100, number =
    /// code % 100), reason fewer than 128 characters.
    pub fn error_code(&mut self, code: u16, reason: &str) -> Result<&mut Self, BuildError> {
        let (class, number) = error_parts(code)?;
        check_reason(reason)?;
        self.append(attr::ERROR_CODE, 4 + reason.len(), |_, v| {
            put(v, 0, &[0, 0, class, number]);
            put(v, 4, reason.as_bytes());
        })
    }

    /// UNKNOWN-ATTRIBUTES (RFC 8489 §14.9).
    pub fn unknown_attributes(&mut self, types: &[u16]) -> Result<&mut Self, BuildError> {
        let len = types.len().saturating_mul(2);
        self.append(attr::UNKNOWN_ATTRIBUTES, len, |_, v| {
            for (chunk, t) in v.chunks_exact_mut(2).zip(types) {
                chunk.copy_from_slice(&t.to_be_bytes());
            }
        })
    }

    /// PASSWORD-ALGORITHMS (RFC 8489 §14.11): `(algorithm, parameters)` entries.
    pub fn password_algorithms(&mut self, algs: &[(u16, &[u8])]) -> Result<&mut Self, BuildError> {
        let mut len = 0usize;
        for (_, p) in algs {
            if p.len() > 0xFFFF {
                return Err(BuildError::ValueTooLong {
                    len: p.len(),
                    max: 0xFFFF,
                });
            }
            len = len.saturating_add(4 + padded(p.len()));
        }
        self.append(attr::PASSWORD_ALGORITHMS, len, |_, v| {
            let mut pos = 0;
            for (alg, p) in algs {
                pos = write_algorithm(v, pos, *alg, p);
            }
        })
    }

    /// PASSWORD-ALGORITHM (RFC 8489 §14.12).
    pub fn password_algorithm(&mut self, alg: u16, params: &[u8]) -> Result<&mut Self, BuildError> {
        if params.len() > 0xFFFF {
            return Err(BuildError::ValueTooLong {
                len: params.len(),
                max: 0xFFFF,
            });
        }
        self.append(
            attr::PASSWORD_ALGORITHM,
            4 + padded(params.len()),
            |_, v| {
                write_algorithm(v, 0, alg, params);
            },
        )
    }

    /// ALTERNATE-SERVER (RFC 8489 §14.15; plain address encoding).
    pub fn alternate_server(&mut self, a: SocketAddr) -> Result<&mut Self, BuildError> {
        self.address(attr::ALTERNATE_SERVER, a, false)
    }

    /// ALTERNATE-DOMAIN (RFC 8489 §14.16), at most 255 bytes.
    pub fn alternate_domain(&mut self, s: &str) -> Result<&mut Self, BuildError> {
        if s.len() > MAX_DOMAIN_LEN {
            return Err(BuildError::ValueTooLong {
                len: s.len(),
                max: MAX_DOMAIN_LEN,
            });
        }
        self.add(attr::ALTERNATE_DOMAIN, s.as_bytes())
    }

    /// MESSAGE-INTEGRITY (RFC 8489 §14.5): HMAC-SHA1 with `key` over the message so far, the
    /// header length covering this attribute.
    pub fn message_integrity(&mut self, key: &[u8]) -> Result<&mut Self, BuildError> {
        self.append(attr::MESSAGE_INTEGRITY, 20, |prefix, v| {
            let length = u16::from_be_bytes([
                prefix.get(2).copied().unwrap_or(0),
                prefix.get(3).copied().unwrap_or(0),
            ]);
            if let Some(mac) = auth::hmac_sha1(key, prefix, length) {
                put(v, 0, &mac);
            }
        })
    }

    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6), full 32 bytes.
    pub fn message_integrity_sha256(&mut self, key: &[u8]) -> Result<&mut Self, BuildError> {
        self.message_integrity_sha256_truncated(key, 32)
    }

    /// MESSAGE-INTEGRITY-SHA256 truncated to `len` bytes (16..=32, a multiple of 4).
    pub fn message_integrity_sha256_truncated(
        &mut self,
        key: &[u8],
        len: usize,
    ) -> Result<&mut Self, BuildError> {
        if !(16..=32).contains(&len) || len & 3 != 0 {
            return Err(BuildError::InvalidValue("MESSAGE-INTEGRITY-SHA256 length"));
        }
        self.append(attr::MESSAGE_INTEGRITY_SHA256, len, |prefix, v| {
            let length = u16::from_be_bytes([
                prefix.get(2).copied().unwrap_or(0),
                prefix.get(3).copied().unwrap_or(0),
            ]);
            if let Some(mac) = auth::hmac_sha256(key, prefix, length) {
                put(v, 0, mac.get(..len).unwrap_or(&[]));
            }
        })
    }

    /// FINGERPRINT (RFC 8489 §14.7): CRC-32 of the message so far XOR 0x5354554E.
    pub fn fingerprint(&mut self) -> Result<&mut Self, BuildError> {
        self.append(attr::FINGERPRINT, 4, |prefix, v| {
            put(
                v,
                0,
                &(crc32fast::hash(prefix) ^ FINGERPRINT_XOR).to_be_bytes(),
            );
        })
    }

    // ----- RFC 8656 -----

    /// CHANNEL-NUMBER (RFC 8656 §18.1): `channel` must be in 0x4000..=0x7FFF (see
    /// [`crate::ChannelData::is_valid_channel`]).
    pub fn channel_number(&mut self, channel: u16) -> Result<&mut Self, BuildError> {
        if !crate::ChannelData::is_valid_channel(channel) {
            return Err(BuildError::InvalidChannel(channel));
        }
        let [a, b] = channel.to_be_bytes();
        self.add(attr::CHANNEL_NUMBER, &[a, b, 0, 0])
    }

    /// LIFETIME (RFC 8656 §18.2), seconds.
    pub fn lifetime(&mut self, secs: u32) -> Result<&mut Self, BuildError> {
        self.u32_attr(attr::LIFETIME, secs)
    }

    /// XOR-PEER-ADDRESS (RFC 8656 §18.3). May be added several times.
    pub fn xor_peer_address(&mut self, a: SocketAddr) -> Result<&mut Self, BuildError> {
        self.address(attr::XOR_PEER_ADDRESS, a, true)
    }

    /// DATA (RFC 8656 §18.4).
    pub fn data(&mut self, data: &[u8]) -> Result<&mut Self, BuildError> {
        self.add(attr::DATA, data)
    }

    /// XOR-RELAYED-ADDRESS (RFC 8656 §18.5). May be added twice (dual-stack allocations).
    pub fn xor_relayed_address(&mut self, a: SocketAddr) -> Result<&mut Self, BuildError> {
        self.address(attr::XOR_RELAYED_ADDRESS, a, true)
    }

    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6): 1 IPv4, 2 IPv6.
    pub fn requested_address_family(&mut self, family: u8) -> Result<&mut Self, BuildError> {
        self.add(attr::REQUESTED_ADDRESS_FAMILY, &[family, 0, 0, 0])
    }

    /// EVEN-PORT (RFC 8656 §18.7) with the R bit ("reserve the next port") as given.
    pub fn even_port(&mut self, reserve_next: bool) -> Result<&mut Self, BuildError> {
        self.add(attr::EVEN_PORT, &[if reserve_next { 0x80 } else { 0 }])
    }

    /// REQUESTED-TRANSPORT (RFC 8656 §18.8): IP protocol number (17 UDP, 6 TCP).
    pub fn requested_transport(&mut self, protocol: u8) -> Result<&mut Self, BuildError> {
        self.add(attr::REQUESTED_TRANSPORT, &[protocol, 0, 0, 0])
    }

    /// DONT-FRAGMENT (RFC 8656 §18.9).
    pub fn dont_fragment(&mut self) -> Result<&mut Self, BuildError> {
        self.add(attr::DONT_FRAGMENT, &[])
    }

    /// RESERVATION-TOKEN (RFC 8656 §18.10).
    pub fn reservation_token(&mut self, token: [u8; 8]) -> Result<&mut Self, BuildError> {
        self.add(attr::RESERVATION_TOKEN, &token)
    }

    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11).
    pub fn additional_address_family(&mut self, family: u8) -> Result<&mut Self, BuildError> {
        self.add(attr::ADDITIONAL_ADDRESS_FAMILY, &[family, 0, 0, 0])
    }

    /// ADDRESS-ERROR-CODE (RFC 8656 §18.12).
    pub fn address_error_code(
        &mut self,
        family: u8,
        code: u16,
        reason: &str,
    ) -> Result<&mut Self, BuildError> {
        let (class, number) = error_parts(code)?;
        check_reason(reason)?;
        self.append(attr::ADDRESS_ERROR_CODE, 4 + reason.len(), |_, v| {
            put(v, 0, &[family, 0, class, number]);
            put(v, 4, reason.as_bytes());
        })
    }

    /// ICMP (RFC 8656 §18.13).
    pub fn icmp(&mut self, typ: u8, code: u8, error_data: u32) -> Result<&mut Self, BuildError> {
        let [d0, d1, d2, d3] = error_data.to_be_bytes();
        self.add(attr::ICMP, &[0, 0, typ, code, d0, d1, d2, d3])
    }

    // ----- RFC 6062 -----

    /// CONNECTION-ID (RFC 6062 §6.2.1).
    pub fn connection_id(&mut self, id: u32) -> Result<&mut Self, BuildError> {
        self.u32_attr(attr::CONNECTION_ID, id)
    }

    // ----- RFC 5780 -----

    /// CHANGE-REQUEST (RFC 5780 §7.2).
    pub fn change_request(
        &mut self,
        change_ip: bool,
        change_port: bool,
    ) -> Result<&mut Self, BuildError> {
        let flags = (if change_ip { 0x04 } else { 0 }) | (if change_port { 0x02 } else { 0 });
        self.add(attr::CHANGE_REQUEST, &[0, 0, 0, flags])
    }

    /// PADDING (RFC 5780 §7.6): `len` zero bytes; `len` must be a multiple of 4.
    pub fn padding(&mut self, len: usize) -> Result<&mut Self, BuildError> {
        if len & 3 != 0 {
            return Err(BuildError::InvalidValue(
                "PADDING length must be a multiple of 4",
            ));
        }
        self.append(attr::PADDING, len, |_, v| v.fill(0))
    }

    /// RESPONSE-PORT (RFC 5780 §7.5).
    pub fn response_port(&mut self, port: u16) -> Result<&mut Self, BuildError> {
        let [a, b] = port.to_be_bytes();
        self.add(attr::RESPONSE_PORT, &[a, b, 0, 0])
    }

    /// RESPONSE-ORIGIN (RFC 5780 §7.3).
    pub fn response_origin(&mut self, a: SocketAddr) -> Result<&mut Self, BuildError> {
        self.address(attr::RESPONSE_ORIGIN, a, false)
    }

    /// OTHER-ADDRESS (RFC 5780 §7.4).
    pub fn other_address(&mut self, a: SocketAddr) -> Result<&mut Self, BuildError> {
        self.address(attr::OTHER_ADDRESS, a, false)
    }

    // ----- RFC 3489 -----

    /// RESPONSE-ADDRESS (RFC 3489 §11.2.2).
    pub fn response_address(&mut self, a: SocketAddr) -> Result<&mut Self, BuildError> {
        self.address(attr::RESPONSE_ADDRESS, a, false)
    }

    /// SOURCE-ADDRESS (RFC 3489 §11.2.5).
    pub fn source_address(&mut self, a: SocketAddr) -> Result<&mut Self, BuildError> {
        self.address(attr::SOURCE_ADDRESS, a, false)
    }

    /// CHANGED-ADDRESS (RFC 3489 §11.2.3).
    pub fn changed_address(&mut self, a: SocketAddr) -> Result<&mut Self, BuildError> {
        self.address(attr::CHANGED_ADDRESS, a, false)
    }

    /// REFLECTED-FROM (RFC 3489 §11.2.11).
    pub fn reflected_from(&mut self, a: SocketAddr) -> Result<&mut Self, BuildError> {
        self.address(attr::REFLECTED_FROM, a, false)
    }

    // ----- RFC 8445 -----

    /// PRIORITY (RFC 8445 §16.1).
    pub fn priority(&mut self, p: u32) -> Result<&mut Self, BuildError> {
        self.u32_attr(attr::PRIORITY, p)
    }

    /// USE-CANDIDATE (RFC 8445 §16.1).
    pub fn use_candidate(&mut self) -> Result<&mut Self, BuildError> {
        self.add(attr::USE_CANDIDATE, &[])
    }

    /// ICE-CONTROLLED (RFC 8445 §16.1).
    pub fn ice_controlled(&mut self, tie_breaker: u64) -> Result<&mut Self, BuildError> {
        self.u64_attr(attr::ICE_CONTROLLED, tie_breaker)
    }

    /// ICE-CONTROLLING (RFC 8445 §16.1).
    pub fn ice_controlling(&mut self, tie_breaker: u64) -> Result<&mut Self, BuildError> {
        self.u64_attr(attr::ICE_CONTROLLING, tie_breaker)
    }
}

/// Splits an error code into (class, number), checking 300..=699.
fn error_parts(code: u16) -> Result<(u8, u8), BuildError> {
    if !(300..=699).contains(&code) {
        return Err(BuildError::InvalidValue("error code outside 300..=699"));
    }
    // Both fit in a u8 after the range check.
    Ok(((code / 100) as u8, (code % 100) as u8))
}

fn check_reason(reason: &str) -> Result<(), BuildError> {
    if reason.len() > MAX_TEXT_LEN {
        return Err(BuildError::ValueTooLong {
            len: reason.len(),
            max: MAX_TEXT_LEN,
        });
    }
    let n = reason.chars().count();
    if n > MAX_CHARS {
        return Err(BuildError::ValueTooLong {
            len: n,
            max: MAX_CHARS,
        });
    }
    Ok(())
}

/// Writes one `algorithm, length, parameters, zero padding` entry at `pos`; returns the end.
fn write_algorithm(v: &mut [u8], pos: usize, alg: u16, params: &[u8]) -> usize {
    let [a0, a1] = alg.to_be_bytes();
    let [l0, l1] = (params.len() as u16).to_be_bytes();
    put(v, pos, &[a0, a1, l0, l1]);
    put(v, pos + 4, params);
    let end = pos + 4 + padded(params.len());
    if let Some(p) = v.get_mut(pos + 4 + params.len()..end) {
        p.fill(0);
    }
    end
}
