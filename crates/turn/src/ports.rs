//! Relay port selection, sans IO: a port is drawn at random from the configured range
//! (RFC 6056 §3.3.1, "Simple Port Randomization"), so that an off-path attacker cannot guess the
//! next relay address from the last one. A port the I/O layer cannot bind (a collision) is
//! retried at another random place, at most [`RANDOM_TRIES`] times; then the whole range is
//! scanned once from a random start, so a nearly full range still finds its last free port;
//! only then is there none (508).
//!
//! ```
//! use switchboard_turn::{Parity, PortPicker};
//!
//! let mut picker = PortPicker::new(49152, 65535, [7; 32]);
//! let taken = [49152u16, 49153];
//! let (port, _socket, next) = picker
//!     .pick(Parity::Even, |p| (!taken.contains(&p)).then_some(p))
//!     .unwrap();
//! assert!((49152..=65535).contains(&port) && port % 2 == 0 && next.is_none());
//! ```

use sha2::{Digest, Sha256};

/// Random draws before falling back to a scan of the range.
pub const RANDOM_TRIES: u32 = 32;

/// Which ports an allocation can take (EVEN-PORT, RFC 8656 §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    /// Any port.
    Any,
    /// An even port (EVEN-PORT with R=0).
    Even,
    /// An even port and the next one, which is reserved (EVEN-PORT with R=1).
    EvenPair,
}

/// Draws relay ports from `lo..=hi`. Its random numbers come from SHA-256 over a secret seed
/// and a counter: unpredictable without the seed, reproducible with it (tests).
#[derive(Clone)]
pub struct PortPicker {
    lo: u16,
    hi: u16,
    seed: [u8; 32],
    counter: u64,
}

impl std::fmt::Debug for PortPicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortPicker")
            .field("lo", &self.lo)
            .field("hi", &self.hi)
            .finish_non_exhaustive()
    }
}

impl PortPicker {
    /// A picker for the ports `lo..=hi` (swapped if given the wrong way round), drawing with a
    /// secret `seed`.
    pub fn new(lo: u16, hi: u16, seed: [u8; 32]) -> Self {
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        PortPicker {
            lo,
            hi,
            seed,
            counter: 0,
        }
    }

    /// The range, inclusive.
    pub fn range(&self) -> (u16, u16) {
        (self.lo, self.hi)
    }

    fn random(&mut self) -> u32 {
        self.counter = self.counter.wrapping_add(1);
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update(self.counter.to_be_bytes());
        let d = h.finalize();
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }

    /// The first candidate port and how many there are (candidates are `step` apart).
    fn candidates(&self, parity: Parity) -> (u32, u32, u32) {
        let (lo, hi) = (u32::from(self.lo), u32::from(self.hi));
        match parity {
            Parity::Any => (lo, hi - lo + 1, 1),
            Parity::Even | Parity::EvenPair => {
                let first = lo + (lo & 1);
                // EvenPair needs first + 1 <= hi as well.
                let last = if parity == Parity::EvenPair {
                    hi.checked_sub(1)
                } else {
                    Some(hi)
                };
                match last {
                    Some(last) if first <= last => (first, (last - first) / 2 + 1, 2),
                    _ => (first, 0, 2),
                }
            }
        }
    }

    /// Picks a port of `parity` and binds it with `bind`, which returns `None` when the port is
    /// taken. With [`Parity::EvenPair`] the next port is bound too and returned third (the first
    /// socket is dropped when the second cannot be had). `None`: no port of the range could be
    /// bound.
    pub fn pick<S>(
        &mut self,
        parity: Parity,
        mut bind: impl FnMut(u16) -> Option<S>,
    ) -> Option<(u16, S, Option<S>)> {
        let (first, count, step) = self.candidates(parity);
        if count == 0 {
            return None;
        }
        let mut attempt = |i: u32| -> Option<(u16, S, Option<S>)> {
            let port = u16::try_from(first + i * step).ok()?;
            let sock = bind(port)?;
            if parity != Parity::EvenPair {
                return Some((port, sock, None));
            }
            let next = bind(port.checked_add(1)?)?;
            Some((port, sock, Some(next)))
        };
        for _ in 0..RANDOM_TRIES.min(count) {
            let i = self.random() % count;
            if let Some(found) = attempt(i) {
                return Some(found);
            }
        }
        let start = self.random() % count;
        (0..count).find_map(|k| attempt((start + k) % count))
    }
}
