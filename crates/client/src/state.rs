//! The client's protocol state, without I/O or clock: what each subscription has seen (so a
//! reconnect recovers from there and nothing is delivered twice), and the reconnect backoff.

use std::collections::BTreeMap;
use std::time::Duration;

use switchboard_proto::v1 as proto;

/// Where a subscription stands in its channel's stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Offset of the last publication delivered (0: none yet).
    pub offset: u64,
    /// The stream's epoch; empty when the channel keeps no history.
    pub epoch: String,
}

impl Position {
    /// `EPOCH:OFFSET`, the form `switchboard sub --since` takes.
    pub fn parse(s: &str) -> Option<Position> {
        let (epoch, offset) = s.rsplit_once(':')?;
        Some(Position {
            offset: offset.parse().ok()?,
            epoch: epoch.to_owned(),
        })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

/// One subscription's bookkeeping.
#[derive(Clone, Debug, Default)]
struct Sub {
    /// The position to recover from; `None` until the channel reported one (or `--since`).
    position: Option<Position>,
    /// Whether the server keeps history for it (so recovery makes sense).
    recoverable: bool,
}

/// What a (re)subscription's result means for the application.
#[derive(Debug, PartialEq)]
pub struct Subscribed {
    /// Publications missed while away, in order, never one delivered before.
    pub publications: Vec<proto::Publication>,
    /// The subscribe asked to recover from a position.
    pub was_recovering: bool,
    /// Everything missed was recovered (false with `was_recovering`: a gap the application
    /// must fill another way, such as reading the channel's state anew).
    pub recovered: bool,
    /// The stream position after it.
    pub position: Position,
}

/// Every subscription of a client.
#[derive(Debug, Default)]
pub struct Subscriptions {
    subs: BTreeMap<String, Sub>,
}

impl Subscriptions {
    /// Adds `channel` (recovering from `since`, when given); false when it is already there.
    pub fn add(&mut self, channel: &str, since: Option<Position>) -> bool {
        if self.subs.contains_key(channel) {
            return false;
        }
        let recoverable = since.is_some();
        self.subs.insert(
            channel.to_owned(),
            Sub {
                position: since,
                recoverable,
            },
        );
        true
    }

    /// Forgets `channel`.
    pub fn remove(&mut self, channel: &str) -> bool {
        self.subs.remove(channel).is_some()
    }

    /// Whether `channel` is subscribed.
    pub fn contains(&self, channel: &str) -> bool {
        self.subs.contains_key(channel)
    }

    /// The subscribe command for `channel` after a (re)connect: with the position to recover
    /// from when there is one.
    pub fn request(&self, channel: &str) -> Option<proto::SubscribeRequest> {
        let sub = self.subs.get(channel)?;
        Some(proto::SubscribeRequest {
            channel: channel.to_owned(),
            recover: sub.position.as_ref().filter(|_| sub.recoverable).map(|p| {
                proto::StreamPosition {
                    offset: p.offset,
                    epoch: p.epoch.clone(),
                }
            }),
        })
    }

    /// Every subscribed channel, in name order.
    pub fn channels(&self) -> Vec<String> {
        self.subs.keys().cloned().collect()
    }

    /// Takes a subscribe result in: the recovered publications that are new, and where the
    /// subscription now stands.
    pub fn subscribed(&mut self, channel: &str, result: &proto::SubscribeResult) -> Subscribed {
        let sub = self.subs.entry(channel.to_owned()).or_default();
        let was_recovering = result.was_recovering;
        let mut publications = Vec::new();
        for p in &result.publications {
            if accept(sub, p) {
                publications.push(p.clone());
            }
        }
        sub.recoverable = result.recoverable;
        // The stream's current position when nothing newer was delivered (a fresh subscribe, or
        // a failed recovery that starts over from the present).
        let behind = match &sub.position {
            None => true,
            Some(p) => p.epoch != result.epoch || (!result.recovered && was_recovering),
        };
        if result.recoverable && behind {
            sub.position = Some(Position {
                offset: result.offset,
                epoch: result.epoch.clone(),
            });
        }
        Subscribed {
            publications,
            was_recovering,
            recovered: result.recovered,
            position: sub.position.clone().unwrap_or_default(),
        }
    }

    /// Whether a pushed publication is new (and records it); false for one already delivered
    /// (a recovery and the live stream overlap) or of a channel not subscribed.
    pub fn publication(&mut self, p: &proto::Publication) -> bool {
        match self.subs.get_mut(&p.channel) {
            Some(sub) => accept(sub, p),
            None => false,
        }
    }
}

/// Delivers `p` unless its offset is not past the subscription's in the same epoch.
fn accept(sub: &mut Sub, p: &proto::Publication) -> bool {
    if p.offset == 0 {
        // A channel without history: nothing to order or recover.
        return true;
    }
    match &mut sub.position {
        Some(pos) if pos.epoch == p.epoch && p.offset <= pos.offset => false,
        Some(pos) => {
            pos.offset = p.offset;
            pos.epoch.clone_from(&p.epoch);
            true
        }
        None => {
            sub.position = Some(Position {
                offset: p.offset,
                epoch: p.epoch.clone(),
            });
            true
        }
    }
}

/// Exponential backoff with full jitter: attempt `n` (0-based) waits a uniformly random time
/// in `[0, min(max, min_delay × 2^n)]`; `random` is a uniform value in `[0, 1)`.
pub fn backoff(attempt: u32, min_delay: Duration, max_delay: Duration, random: f64) -> Duration {
    let cap = min_delay
        .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
        .min(max_delay);
    cap.mul_f64(random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(channel: &str, epoch: &str, offset: u64) -> proto::Publication {
        proto::Publication {
            channel: channel.into(),
            epoch: epoch.into(),
            offset,
            data: format!("{offset}").into_bytes(),
            ..Default::default()
        }
    }

    fn result(
        epoch: &str,
        offset: u64,
        recovering: bool,
        recovered: bool,
        pubs: &[u64],
    ) -> proto::SubscribeResult {
        proto::SubscribeResult {
            recoverable: true,
            offset,
            epoch: epoch.into(),
            was_recovering: recovering,
            recovered,
            publications: pubs.iter().map(|&o| publication("c", epoch, o)).collect(),
        }
    }

    #[test]
    fn a_reconnect_recovers_from_the_last_delivered_offset_without_duplicates() {
        let mut s = Subscriptions::default();
        assert!(s.add("c", None));
        assert!(!s.add("c", None));
        assert_eq!(s.request("c").unwrap().recover, None);
        let first = s.subscribed("c", &result("e1", 3, false, false, &[]));
        assert_eq!(
            first.position,
            Position {
                offset: 3,
                epoch: "e1".into()
            }
        );
        assert!(s.publication(&publication("c", "e1", 4)));
        assert!(s.publication(&publication("c", "e1", 5)));
        assert!(!s.publication(&publication("c", "e1", 5)), "a duplicate");
        assert!(
            !s.publication(&publication("other", "e1", 6)),
            "not subscribed"
        );
        // Reconnect: recover from 5; the server sends 5..8 (5 overlaps), then 8 live again.
        let r = s.request("c").unwrap().recover.unwrap();
        assert_eq!((r.offset, r.epoch.as_str()), (5, "e1"));
        let again = s.subscribed("c", &result("e1", 8, true, true, &[5, 6, 7, 8]));
        let offsets: Vec<u64> = again.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, vec![6, 7, 8]);
        assert!(again.recovered && again.was_recovering);
        assert!(!s.publication(&publication("c", "e1", 8)));
        assert!(s.publication(&publication("c", "e1", 9)));
    }

    #[test]
    fn a_failed_recovery_is_reported_and_starts_over_at_the_present() {
        let mut s = Subscriptions::default();
        s.add(
            "c",
            Some(Position {
                offset: 2,
                epoch: "old".into(),
            }),
        );
        let r = s.request("c").unwrap().recover.unwrap();
        assert_eq!((r.offset, r.epoch.as_str()), (2, "old"));
        let sub = s.subscribed("c", &result("new", 40, true, false, &[]));
        assert!(sub.was_recovering && !sub.recovered);
        assert_eq!(
            sub.position,
            Position {
                offset: 40,
                epoch: "new".into()
            }
        );
        assert!(!s.publication(&publication("c", "new", 40)));
        assert!(s.publication(&publication("c", "new", 41)));
    }

    #[test]
    fn channels_without_history_deliver_everything() {
        let mut s = Subscriptions::default();
        s.add("c", None);
        let r = proto::SubscribeResult::default();
        let sub = s.subscribed("c", &r);
        assert!(!sub.recovered);
        assert!(s.publication(&publication("c", "", 0)));
        assert!(s.publication(&publication("c", "", 0)));
        assert_eq!(s.request("c").unwrap().recover, None);
    }

    #[test]
    fn positions_parse_as_epoch_colon_offset() {
        assert_eq!(
            Position::parse("abc:12"),
            Some(Position {
                offset: 12,
                epoch: "abc".into()
            })
        );
        assert_eq!(Position::parse("abc"), None);
        assert_eq!(Position::parse("abc:x"), None);
        assert_eq!(
            Position {
                offset: 3,
                epoch: "e".into()
            }
            .to_string(),
            "e:3"
        );
    }

    #[test]
    fn backoff_grows_to_its_cap_with_full_jitter() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(20));
        assert_eq!(backoff(0, min, max, 0.0), Duration::ZERO);
        assert_eq!(backoff(0, min, max, 0.5), Duration::from_millis(250));
        assert_eq!(backoff(3, min, max, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(10, min, max, 0.5), Duration::from_secs(10));
        assert_eq!(
            backoff(u32::MAX, min, max, 0.999_999),
            max.mul_f64(0.999_999)
        );
    }
}
