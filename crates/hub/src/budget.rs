//! Token buckets: the rate limits of signaling commands and of client publishes.

use std::sync::Mutex;

use crate::config::Limits;
use crate::error::{HubError, Limit};
use crate::util::lock;

/// A token bucket refilled at `rate` tokens per second up to `capacity`, on the hub clock (ms).
#[derive(Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    at_ms: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn full(capacity: f64, now_ms: u64) -> Self {
        Self {
            tokens: capacity,
            at_ms: now_ms,
        }
    }

    /// The tokens at `now_ms` (refills; the clock never runs backwards here).
    fn refill(&mut self, now_ms: u64, rate: f64, capacity: f64) -> f64 {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.at_ms = self.at_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        self.tokens
    }

    /// Takes `n` tokens at `now_ms`; false (nothing taken) when fewer are left.
    pub(crate) fn take(&mut self, now_ms: u64, rate: f64, capacity: f64, n: f64) -> bool {
        if self.refill(now_ms, rate, capacity) >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full at `now_ms` (nothing is owed: it can be forgotten).
    fn is_full(&self, now_ms: u64, rate: f64, capacity: f64) -> bool {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens + elapsed * rate >= capacity
    }
}

/// The publish budget of one publisher (a user, or all anonymous connections of the node):
/// publications per second and bytes per second, as two token buckets.
#[derive(Debug)]
pub(crate) struct PublishBudget {
    messages: TokenBucket,
    bytes: TokenBucket,
}

/// The rates and capacities of [`PublishBudget`]s, from [`Limits`] (0 = unlimited).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublishRates {
    messages_per_sec: f64,
    message_burst: f64,
    bytes_per_sec: f64,
    byte_burst: f64,
}

impl PublishRates {
    pub(crate) fn new(limits: &Limits) -> Self {
        let bytes_per_sec = limits.max_publish_bytes_per_second as f64;
        Self {
            messages_per_sec: f64::from(limits.max_publications_per_second),
            message_burst: f64::from(limits.publication_burst),
            bytes_per_sec,
            // One second's worth, and never less than one message of the largest size.
            byte_burst: bytes_per_sec.max(limits.max_message_size as f64),
        }
    }

    fn messages_limited(&self) -> bool {
        self.messages_per_sec > 0.0
    }

    fn bytes_limited(&self) -> bool {
        self.bytes_per_sec > 0.0
    }

    /// A full budget.
    pub(crate) fn budget(&self, now_ms: u64) -> PublishBudget {
        PublishBudget {
            messages: TokenBucket::full(self.message_burst, now_ms),
            bytes: TokenBucket::full(self.byte_burst, now_ms),
        }
    }

    /// Spends one publication of `size` bytes from `budget`: 111 when either bucket is short
    /// (then nothing is spent).
    pub(crate) fn spend(
        &self,
        budget: &Mutex<PublishBudget>,
        now_ms: u64,
        size: usize,
    ) -> Result<(), HubError> {
        let mut b = lock(budget);
        let size = size as f64;
        if self.messages_limited()
            && b.messages
                .refill(now_ms, self.messages_per_sec, self.message_burst)
                < 1.0
        {
            return Err(HubError::Limit(Limit::PublishRate));
        }
        if self.bytes_limited()
            && !b
                .bytes
                .take(now_ms, self.bytes_per_sec, self.byte_burst, size)
        {
            return Err(HubError::Limit(Limit::PublishBytes));
        }
        if self.messages_limited() {
            b.messages.tokens -= 1.0;
        }
        Ok(())
    }

    /// Whether `budget` is back to full at `now_ms` (so a publisher without connections can be
    /// forgotten without handing it a fresh budget early).
    pub(crate) fn is_full(&self, budget: &Mutex<PublishBudget>, now_ms: u64) -> bool {
        let b = lock(budget);
        (!self.messages_limited()
            || b.messages
                .is_full(now_ms, self.messages_per_sec, self.message_burst))
            && (!self.bytes_limited()
                || b.bytes.is_full(now_ms, self.bytes_per_sec, self.byte_burst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate_up_to_its_capacity() {
        let mut b = TokenBucket::full(3.0, 0);
        assert!(b.take(0, 2.0, 3.0, 3.0));
        assert!(!b.take(0, 2.0, 3.0, 1.0));
        assert!(!b.take(499, 2.0, 3.0, 1.0));
        assert!(b.take(500, 2.0, 3.0, 1.0));
        assert!(b.is_full(10_000, 2.0, 3.0));
        assert!(b.take(10_000, 2.0, 3.0, 3.0), "capped at the capacity");
        assert!(!b.take(10_000, 2.0, 3.0, 1.0));
    }

    #[test]
    fn a_short_byte_bucket_spends_no_message_token() {
        let limits = Limits {
            max_publications_per_second: 1,
            publication_burst: 2,
            max_publish_bytes_per_second: 100,
            max_message_size: 100,
            ..Limits::default()
        };
        let rates = PublishRates::new(&limits);
        let budget = Mutex::new(rates.budget(0));
        assert!(rates.spend(&budget, 0, 100).is_ok());
        assert!(matches!(
            rates.spend(&budget, 0, 1),
            Err(HubError::Limit(Limit::PublishBytes))
        ));
        assert!(
            rates.spend(&budget, 10, 0).is_ok(),
            "the second message token is left"
        );
        assert!(matches!(
            rates.spend(&budget, 10, 0),
            Err(HubError::Limit(Limit::PublishRate))
        ));
    }
}
