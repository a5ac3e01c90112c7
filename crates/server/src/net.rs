//! Socket-level helpers every listener shares: the descriptor budget and backing off a failing
//! `accept`.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::limits::names;

/// Raises the process's soft open-file limit to the hard one; returns `(soft before, soft now,
/// hard)`.
pub(crate) fn raise_descriptor_limit() -> (u64, u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return (1024, 1024, 1024);
    }
    let before: u64 = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    (before, lim.rlim_cur, lim.rlim_max)
}

/// Descriptors kept out of every connection cap: listeners, relay sockets, files, Redis, QUIC.
pub(crate) const DESCRIPTOR_RESERVE: u64 = 512;

/// Connection caps that fit in `limit` descriptors: the HTTP listeners may take half of what
/// is left after [`DESCRIPTOR_RESERVE`], STUN over TCP/TLS a quarter (the last quarter is for
/// TURN relay sockets and everything else), so one group running out never starves the others.
/// Returns the caps to use, each at most what was configured.
pub(crate) fn fit_caps(limit: u64, http: usize, stun: usize) -> (usize, usize) {
    let budget = limit.saturating_sub(DESCRIPTOR_RESERVE).max(8);
    let cap = |configured: usize, share: u64| {
        let share = usize::try_from(share).unwrap_or(usize::MAX).max(1);
        if configured == 0 {
            share
        } else {
            configured.min(share)
        }
    };
    (cap(http, budget / 2), cap(stun, budget / 4))
}

/// Backs off a failing accept loop: 10 ms doubling to 1 s, counted per listener and kind,
/// logged at most once a second.
#[derive(Default)]
pub(crate) struct AcceptBackoff {
    delay: Duration,
    last_log: Option<Instant>,
}

impl AcceptBackoff {
    /// A successful accept: back to no delay.
    pub(crate) fn reset(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// Counts `e`, logs it (rate-limited) and sleeps the next backoff step.
    pub(crate) async fn failed(&mut self, listener: &'static str, addr: SocketAddr, e: &io::Error) {
        let kind = match e.raw_os_error() {
            Some(libc::EMFILE) | Some(libc::ENFILE) => "descriptors",
            Some(libc::ENOBUFS) | Some(libc::ENOMEM) => "memory",
            _ => "other",
        };
        metrics::counter!(names::ACCEPT_ERRORS, "listener" => listener, "kind" => kind)
            .increment(1);
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.last_log = Some(Instant::now());
            tracing::warn!(listener, %addr, error = %e, kind, "accept failed; backing off");
        }
        self.delay = (self.delay * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::time::sleep(self.delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_the_descriptor_limit_and_never_exceed_the_configured_ones() {
        assert_eq!(fit_caps(1_048_576, 20_000, 10_000), (20_000, 10_000));
        assert_eq!(fit_caps(1024, 20_000, 10_000), (256, 128));
        assert_eq!(fit_caps(100, 20_000, 10_000), (4, 2));
        assert_eq!(fit_caps(4096, 0, 0), (1792, 896));
    }
}
