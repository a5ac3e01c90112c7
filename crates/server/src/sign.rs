//! HMAC-SHA256 signatures as lower-case hex and a constant-time comparison: what Pusher's
//! request and channel signing and the webhooks' signatures share.

use hmac::{KeyInit, Mac};

/// HMAC-SHA256 of `message` with `key`, as lower-case hex.
pub(crate) fn hex_hmac(key: &[u8], message: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(message);
    hex(&mac.finalize().into_bytes())
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares in constant time (for equal lengths).
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
