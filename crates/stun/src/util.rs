//! Bounds-checked byte helpers (never panic).

/// Big-endian u16 at `at`, if in bounds.
pub(crate) fn be16(b: &[u8], at: usize) -> Option<u16> {
    array(b, at).map(u16::from_be_bytes)
}

/// Big-endian u32 at `at`, if in bounds.
pub(crate) fn be32(b: &[u8], at: usize) -> Option<u32> {
    array(b, at).map(u32::from_be_bytes)
}

/// `N` bytes at `at`, if in bounds.
pub(crate) fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// `len` rounded up to a multiple of 4 (saturating).
pub(crate) const fn padded(len: usize) -> usize {
    match len.checked_add(3) {
        Some(v) => v & !3,
        None => usize::MAX & !3,
    }
}

/// Writes `src` at the start of `dst`; `false` if it does not fit.
pub(crate) fn put(dst: &mut [u8], at: usize, src: &[u8]) -> bool {
    let Some(end) = at.checked_add(src.len()) else {
        return false;
    };
    match dst.get_mut(at..end) {
        Some(d) => {
            d.copy_from_slice(src);
            true
        }
        None => false,
    }
}
