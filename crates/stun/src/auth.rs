//! Credential keys and HMAC helpers (RFC 8489 §9).

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Password algorithm numbers for PASSWORD-ALGORITHM(S) (RFC 8489 §18.5).
pub mod password_algorithm {
    /// MD5: the long-term key is MD5(username ":" realm ":" password) (16 bytes).
    pub const MD5: u16 = 0x0001;
    /// SHA-256: the long-term key is SHA-256(username ":" realm ":" password) (32 bytes).
    pub const SHA256: u16 = 0x0002;
}

fn digest_of<D: Digest>(parts: &[&[u8]]) -> D {
    let mut h = D::new();
    for p in parts {
        h.update(p);
    }
    h
}

/// The long-term credential key of RFC 8489 §9.2.2 with the MD5 algorithm:
/// `MD5(username ":" realm ":" password)`.
///
/// The inputs must already be processed with SASLprep / OpaqueString (RFC 8265) as the RFC
/// requires; this crate does not implement that profile.
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let h: Md5 = digest_of(&[
        username.as_bytes(),
        b":",
        realm.as_bytes(),
        b":",
        password.as_bytes(),
    ]);
    h.finalize().into()
}

/// The long-term credential key of RFC 8489 §9.2.2 with the SHA-256 algorithm (password
/// algorithm 0x0002): `SHA-256(username ":" realm ":" password)`.
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    let h: Sha256 = digest_of(&[
        username.as_bytes(),
        b":",
        realm.as_bytes(),
        b":",
        password.as_bytes(),
    ]);
    h.finalize().into()
}

/// The USERHASH value of RFC 8489 §14.4: `SHA-256(username ":" realm)`.
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    let h: Sha256 = digest_of(&[username.as_bytes(), b":", realm.as_bytes()]);
    h.finalize().into()
}

/// HMAC over `header[0..2] || length || rest`, i.e. a message prefix whose header length field is
/// replaced by `length`.
fn mac_with_length<M: Mac + KeyInit>(key: &[u8], prefix: &[u8], length: u16) -> Option<M> {
    let mut mac = <M as KeyInit>::new_from_slice(key).ok()?;
    mac.update(prefix.get(..2)?);
    mac.update(&length.to_be_bytes());
    mac.update(prefix.get(4..)?);
    Some(mac)
}

/// HMAC-SHA1 of a message prefix with its length field set to `length`.
pub(crate) fn hmac_sha1(key: &[u8], prefix: &[u8], length: u16) -> Option<[u8; 20]> {
    mac_with_length::<Hmac<Sha1>>(key, prefix, length).map(|m| m.finalize().into_bytes().into())
}

/// HMAC-SHA256 of a message prefix with its length field set to `length`.
pub(crate) fn hmac_sha256(key: &[u8], prefix: &[u8], length: u16) -> Option<[u8; 32]> {
    mac_with_length::<Hmac<Sha256>>(key, prefix, length).map(|m| m.finalize().into_bytes().into())
}

/// Constant-time check of an HMAC-SHA1 tag.
pub(crate) fn verify_sha1(key: &[u8], prefix: &[u8], length: u16, tag: &[u8]) -> bool {
    mac_with_length::<Hmac<Sha1>>(key, prefix, length).is_some_and(|m| m.verify_slice(tag).is_ok())
}

/// Constant-time check of a (possibly left-truncated) HMAC-SHA256 tag.
pub(crate) fn verify_sha256(key: &[u8], prefix: &[u8], length: u16, tag: &[u8]) -> bool {
    mac_with_length::<Hmac<Sha256>>(key, prefix, length)
        .is_some_and(|m| m.verify_truncated_left(tag).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_key_rfc5769() {
        // RFC 5769 §2.4 key; cross-checked because MESSAGE-INTEGRITY of that vector verifies.
        let k = long_term_key_md5(
            "\u{30de}\u{30c8}\u{30ea}\u{30c3}\u{30af}\u{30b9}",
            "example.org",
            "TheMatrIX",
        );
        assert_eq!(k.len(), 16);
        assert_eq!(long_term_key_md5("a", "b", "c"), {
            let h: Md5 = digest_of(&[b"a:b:c"]);
            <[u8; 16]>::from(h.finalize())
        });
    }

    #[test]
    fn truncated_sha256_tags() {
        let full = hmac_sha256(b"key", &[0u8; 20], 8).unwrap();
        assert!(verify_sha256(b"key", &[0u8; 20], 8, &full));
        assert!(verify_sha256(b"key", &[0u8; 20], 8, &full[..16]));
        assert!(!verify_sha256(b"key", &[0u8; 20], 8, &full[16..]));
        assert!(!verify_sha256(b"kex", &[0u8; 20], 8, &full));
    }
}
