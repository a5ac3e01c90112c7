//! Bounds keyed by client address, shared by the listeners and endpoints: connection caps
//! (global and per address), per-address token buckets, and per-address failure counters that
//! slow a guessing client down. Maps keyed by peer-chosen data use a randomly seeded hasher and
//! hold a bounded number of entries.
//!
//! IPv6 clients are keyed by their /64: one host usually owns a whole /64, so keying on the full
//! address would hand an attacker 2^64 separate budgets.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Metric names of this module.
pub(crate) mod names {
    /// Connections refused by a cap, labels `listener`, `reason` (`per_ip`, `global`).
    pub const CONNECTIONS_REFUSED: &str = "switchboard_connections_refused_total";
    /// Open connections counted by a cap, label `listener`.
    pub const CONNECTIONS_OPEN: &str = "switchboard_connections_open";
    /// Failed `accept` calls (out of descriptors and the like), labels `listener`, `kind`.
    pub const ACCEPT_ERRORS: &str = "switchboard_accept_errors_total";
    /// Requests refused by a per-address rate limit, label `endpoint`.
    pub const RATE_LIMITED: &str = "switchboard_rate_limited_total";
}

/// The key of a client address: IPv4 as is, IPv6 by its /64 (IPv4-mapped IPv6 as IPv4).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The address holds its share already.
    PerIp,
    /// The listener group is full.
    Global,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::PerIp => "per_ip",
            Refusal::Global => "global",
        }
    }
}

/// Open connections of a group of listeners, capped globally and per client address.
pub(crate) struct ConnLimiter {
    listener: &'static str,
    global_max: usize,
    per_ip_max: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize, RandomState>>,
}

impl ConnLimiter {
    /// A limiter for `listener` (the metric label); 0 for a cap means none.
    pub(crate) fn new(listener: &'static str, global_max: usize, per_ip_max: usize) -> Arc<Self> {
        Arc::new(ConnLimiter {
            listener,
            global_max: if global_max == 0 {
                usize::MAX
            } else {
                global_max
            },
            per_ip_max: if per_ip_max == 0 {
                usize::MAX
            } else {
                per_ip_max
            },
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::default()),
        })
    }

    /// Takes a slot for a connection from `ip`; the slot is freed when the guard drops. A
    /// refusal is counted in the `switchboard_connections_refused_total` metric.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, Refusal> {
        let key = client_key(ip);
        let refused = |r: Refusal| {
            metrics::counter!(names::CONNECTIONS_REFUSED, "listener" => self.listener, "reason" => r.as_str())
                .increment(1);
            r
        };
        let mut map = lock(&self.per_ip);
        if self.total.load(Ordering::Relaxed) >= self.global_max {
            return Err(refused(Refusal::Global));
        }
        let n = map.entry(key).or_insert(0);
        if *n >= self.per_ip_max {
            return Err(refused(Refusal::PerIp));
        }
        *n += 1;
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        drop(map);
        metrics::gauge!(names::CONNECTIONS_OPEN, "listener" => self.listener).set(total as f64);
        Ok(ConnGuard {
            limiter: self.clone(),
            key,
        })
    }

    /// Open connections counted.
    pub(crate) fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// A connection's slot in a [`ConnLimiter`].
pub(crate) struct ConnGuard {
    limiter: Arc<ConnLimiter>,
    key: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let l = &self.limiter;
        let mut map = lock(&l.per_ip);
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
        let total = l.total.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        drop(map);
        metrics::gauge!(names::CONNECTIONS_OPEN, "listener" => l.listener).set(total as f64);
    }
}

/// Most addresses a per-address table tracks; when full, entries that carry no state worth
/// keeping (full buckets, expired windows) are dropped first, then the oldest.
const MAX_TRACKED: usize = 65_536;

/// A token bucket per client address: `rate` per second, `burst` at most.
pub(crate) struct RateLimiter {
    endpoint: &'static str,
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant), RandomState>>,
}

impl RateLimiter {
    /// A limiter for `endpoint` (the metric label).
    pub(crate) fn new(endpoint: &'static str, rate: f64, burst: f64) -> Self {
        RateLimiter {
            endpoint,
            rate: rate.max(f64::MIN_POSITIVE),
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::default()),
        }
    }

    /// Takes one token for `ip` at `now`; false (and counted) when none is left.
    pub(crate) fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let key = client_key(ip);
        let mut map = lock(&self.buckets);
        if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let (tokens, at) = map.entry(key).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            drop(map);
            metrics::counter!(names::RATE_LIMITED, "endpoint" => self.endpoint).increment(1);
            false
        }
    }
}

/// Failed attempts per client address in fixed windows: after `max_failures` in one window
/// the address is refused until the window ends.
pub(crate) struct FailureTracker {
    max_failures: u32,
    window: Duration,
    entries: Mutex<HashMap<IpAddr, (u32, Instant), RandomState>>,
}

impl FailureTracker {
    pub(crate) fn new(max_failures: u32, window: Duration) -> Self {
        FailureTracker {
            max_failures: max_failures.max(1),
            window,
            entries: Mutex::new(HashMap::default()),
        }
    }

    /// When `ip` is blocked at `now`, how long it stays blocked.
    pub(crate) fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let map = lock(&self.entries);
        let (n, start) = map.get(&client_key(ip))?;
        let end = *start + self.window;
        (*n >= self.max_failures && now < end).then(|| end - now)
    }

    /// Records a failure of `ip` at `now`; returns the failures counted in its window.
    pub(crate) fn fail(&self, ip: IpAddr, now: Instant) -> u32 {
        let key = client_key(ip);
        let window = self.window;
        let mut map = lock(&self.entries);
        if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
            map.retain(|_, (_, start)| now < *start + window);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let (n, start) = map.entry(key).or_insert((0, now));
        if now >= *start + window {
            *n = 0;
            *start = now;
        }
        *n = n.saturating_add(1);
        *n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));

    #[test]
    fn connection_caps_hold_per_address_and_globally_and_free_on_drop() {
        let l = ConnLimiter::new("test", 3, 2);
        let a1 = l.try_acquire(A).unwrap();
        let _a2 = l.try_acquire(A).unwrap();
        assert_eq!(l.try_acquire(A).err(), Some(Refusal::PerIp));
        let _b1 = l.try_acquire(B).unwrap();
        assert_eq!(l.try_acquire(B).err(), Some(Refusal::Global));
        drop(a1);
        assert_eq!(l.open(), 2);
        let _a3 = l.try_acquire(A).unwrap();
        assert_eq!(l.open(), 3);
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_budget() {
        let l = ConnLimiter::new("test", 0, 1);
        let x: IpAddr = "2001:db8:1:2::1".parse::<Ipv6Addr>().unwrap().into();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse::<Ipv6Addr>().unwrap().into();
        let z: IpAddr = "2001:db8:1:3::1".parse::<Ipv6Addr>().unwrap().into();
        let _g = l.try_acquire(x).unwrap();
        assert_eq!(l.try_acquire(y).err(), Some(Refusal::PerIp));
        assert!(l.try_acquire(z).is_ok());
        // IPv4-mapped addresses count as the IPv4 address.
        let l = ConnLimiter::new("test", 0, 1);
        let _g = l.try_acquire(A).unwrap();
        let mapped: IpAddr = "::ffff:198.51.100.1".parse::<Ipv6Addr>().unwrap().into();
        assert_eq!(l.try_acquire(mapped).err(), Some(Refusal::PerIp));
    }

    #[test]
    fn token_bucket_refuses_past_the_burst_and_refills() {
        let r = RateLimiter::new("test", 2.0, 3.0);
        let t0 = Instant::now();
        assert!((0..3).all(|_| r.allow(A, t0)));
        assert!(!r.allow(A, t0));
        assert!(r.allow(B, t0), "another address has its own bucket");
        assert!(r.allow(A, t0 + Duration::from_millis(500)));
        assert!(!r.allow(A, t0 + Duration::from_millis(500)));
    }

    #[test]
    fn failures_block_an_address_for_the_rest_of_its_window() {
        let f = FailureTracker::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..2 {
            f.fail(A, t0);
        }
        assert_eq!(f.blocked(A, t0), None);
        f.fail(A, t0 + Duration::from_secs(1));
        assert_eq!(
            f.blocked(A, t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(f.blocked(B, t0), None);
        assert_eq!(f.blocked(A, t0 + Duration::from_secs(60)), None);
        assert_eq!(f.fail(A, t0 + Duration::from_secs(61)), 1, "a new window");
    }
}
