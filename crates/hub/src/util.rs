//! Small shared helpers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex, ignoring poisoning (the protected state stays consistent at every unlock).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `n` random bytes as lowercase hex. Falls back to a mixed counter if the OS RNG fails (the
/// values are identifiers, not secrets).
pub(crate) fn random_hex(n: usize) -> String {
    static FALLBACK: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let mut buf = vec![0u8; n];
    if getrandom::fill(&mut buf).is_err() {
        for chunk in buf.chunks_mut(8) {
            let mut x = FALLBACK.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
            x ^= x >> 33;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            x ^= x >> 33;
            let bytes = x.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
    let mut out = String::with_capacity(n * 2);
    for b in buf {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// Shard index of `key` among `n` shards (n > 0), stable within the process.
pub(crate) fn shard_of(key: &str, n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut h = SEED.get_or_init(Default::default).build_hasher();
    h.write(key.as_bytes());
    (h.finish() % n as u64) as usize
}

/// Milliseconds of a duration, saturating.
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
