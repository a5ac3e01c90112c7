//! Bounded history, TTL and epoch lifetimes on fake time, the history API, and subscription
//! recovery: exactly the missed publications in order, no loss or duplicate across the
//! recovery boundary (even with publications racing the subscribe), or an explicit
//! `recovered = false`.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use switchboard_hub::{codes, proto, Broker};

fn history_req(channel: &str, limit: u32) -> proto::HistoryRequest {
    proto::HistoryRequest {
        channel: channel.into(),
        limit,
        ..Default::default()
    }
}

fn offsets(pubs: &[proto::Publication]) -> Vec<u64> {
    pubs.iter().map(|p| p.offset).collect()
}

#[tokio::test]
async fn history_is_bounded_and_evicts_oldest() {
    let t = hub();
    publish_n(&t.hub, "chat:a", 15).await;
    let h = t.hub.history(&history_req("chat:a", 100)).await.unwrap();
    assert_eq!(offsets(&h.publications), (6..=15).collect::<Vec<_>>());
    assert_eq!(h.offset, 15);
    // limit 0 = position only; limits are capped by history_size.
    let h0 = t.hub.history(&history_req("chat:a", 0)).await.unwrap();
    assert!(h0.publications.is_empty() && h0.offset == 15 && h0.epoch == h.epoch);
    let h3 = t.hub.history(&history_req("chat:a", 3)).await.unwrap();
    assert_eq!(offsets(&h3.publications), [6, 7, 8]);
    let rev = t
        .hub
        .history(&proto::HistoryRequest {
            reverse: true,
            ..history_req("chat:a", 3)
        })
        .await
        .unwrap();
    assert_eq!(offsets(&rev.publications), [15, 14, 13]);
    let since = t
        .hub
        .history(&proto::HistoryRequest {
            since: Some(pos(12, &h.epoch)),
            ..history_req("chat:a", 10)
        })
        .await
        .unwrap();
    assert_eq!(offsets(&since.publications), [13, 14, 15]);
    let since_rev = t
        .hub
        .history(&proto::HistoryRequest {
            since: Some(pos(9, &h.epoch)),
            reverse: true,
            ..history_req("chat:a", 2)
        })
        .await
        .unwrap();
    assert_eq!(offsets(&since_rev.publications), [8, 7]);
    let err = t
        .hub
        .history(&proto::HistoryRequest {
            since: Some(pos(3, "other")),
            ..history_req("chat:a", 10)
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), codes::error::UNRECOVERABLE_POSITION);
}

#[tokio::test]
async fn history_ttl_expires_on_fake_time_and_meta_ttl_changes_epoch() {
    let t = hub();
    let first = publish_n(&t.hub, "chat:a", 3).await;
    t.advance(Duration::from_secs(30));
    publish_n(&t.hub, "chat:a", 2).await;
    t.advance(Duration::from_secs(31)); // first three are 61 s old, the others 31 s
    let h = t.hub.history(&history_req("chat:a", 10)).await.unwrap();
    assert_eq!(offsets(&h.publications), [4, 5]);
    t.advance(Duration::from_secs(30));
    let h = t.hub.history(&history_req("chat:a", 10)).await.unwrap();
    assert!(h.publications.is_empty());
    assert_eq!(
        (h.offset, &h.epoch),
        (5, &first[0].epoch),
        "position outlives publications"
    );
    t.advance(Duration::from_secs(30 * 24 * 3600));
    let h = t.hub.history(&history_req("chat:a", 10)).await.unwrap();
    assert_ne!(h.epoch, first[0].epoch, "a lost stream gets a new epoch");
    assert_eq!(h.offset, 0);
    let r = publish_n(&t.hub, "chat:a", 1).await;
    assert_eq!((r[0].offset, &r[0].epoch), (1, &h.epoch));
}

#[tokio::test]
async fn maintain_sweeps_expired_history() {
    let t = hub();
    let first = publish_n(&t.hub, "chat:a", 1).await;
    t.advance(Duration::from_secs(31 * 24 * 3600));
    t.hub.maintain().await;
    let h = t.hub.history(&history_req("chat:a", 10)).await.unwrap();
    assert_ne!(h.epoch, first[0].epoch);
}

#[tokio::test]
async fn recovery_returns_exactly_the_missed_publications_in_order() {
    let t = hub();
    let s = t.connect("ann");
    let sub = s.subscribe("chat:a", None).await.unwrap();
    publish_n(&t.hub, "chat:a", 3).await;
    let seen = drain_offsets(&s);
    assert_eq!(seen, [1, 2, 3]);
    drop(s); // the client goes away...
    publish_n(&t.hub, "chat:a", 4).await; // ...and misses 4..=7
    let s = t.connect("ann");
    let r = s
        .subscribe("chat:a", Some(pos(3, &sub.epoch)))
        .await
        .unwrap();
    assert!(r.was_recovering && r.recovered && r.recoverable);
    assert_eq!(offsets(&r.publications), [4, 5, 6, 7]);
    assert_eq!((r.offset, r.epoch.as_str()), (7, sub.epoch.as_str()));
    assert!(
        drain_offsets(&s).is_empty(),
        "nothing duplicated into the queue"
    );
    publish_n(&t.hub, "chat:a", 1).await;
    assert_eq!(drain_offsets(&s), [8]);
}

#[tokio::test]
async fn recovery_with_nothing_missed_and_from_an_empty_channel() {
    let t = hub();
    let s = t.connect("ann");
    let first = s.subscribe("chat:empty", None).await.unwrap();
    assert_eq!(first.offset, 0);
    s.unsubscribe("chat:empty").await.unwrap();
    let r = s
        .subscribe("chat:empty", Some(pos(0, &first.epoch)))
        .await
        .unwrap();
    assert!(r.recovered && r.publications.is_empty());
    s.unsubscribe("chat:empty").await.unwrap();
    publish_n(&t.hub, "chat:empty", 2).await;
    let r = s
        .subscribe("chat:empty", Some(pos(0, &first.epoch)))
        .await
        .unwrap();
    assert!(r.recovered);
    assert_eq!(offsets(&r.publications), [1, 2]);
}

#[tokio::test]
async fn recovery_impossible_is_explicit() {
    let t = hub();
    let results = publish_n(&t.hub, "chat:a", 15).await;
    let epoch = results[0].epoch.clone();
    let s = t.connect("ann");
    // Offset too old: 4 was evicted (history keeps 6..=15).
    let r = s.subscribe("chat:a", Some(pos(3, &epoch))).await.unwrap();
    assert!(r.was_recovering && !r.recovered && r.publications.is_empty());
    assert_eq!(
        (r.offset, r.epoch.as_str()),
        (15, epoch.as_str()),
        "the current position is still given"
    );
    s.unsubscribe("chat:a").await.unwrap();
    // Epoch mismatch.
    let r = s
        .subscribe("chat:a", Some(pos(14, "not-the-epoch")))
        .await
        .unwrap();
    assert!(!r.recovered && r.publications.is_empty());
    s.unsubscribe("chat:a").await.unwrap();
    // A position from the future.
    let r = s.subscribe("chat:a", Some(pos(99, &epoch))).await.unwrap();
    assert!(!r.recovered);
    s.unsubscribe("chat:a").await.unwrap();
    // Expired by TTL.
    t.advance(Duration::from_secs(61));
    let r = s.subscribe("chat:a", Some(pos(14, &epoch))).await.unwrap();
    assert!(!r.recovered);
    s.unsubscribe("chat:a").await.unwrap();
    // The boundary: exactly the oldest kept one is recoverable.
    publish_n(&t.hub, "chat:a", 12).await; // 16..=27, history 18..=27
    let r = s.subscribe("chat:a", Some(pos(17, &epoch))).await.unwrap();
    assert!(r.recovered);
    assert_eq!(offsets(&r.publications), (18..=27).collect::<Vec<_>>());
    s.unsubscribe("chat:a").await.unwrap();
    let r = s.subscribe("chat:a", Some(pos(16, &epoch))).await.unwrap();
    assert!(!r.recovered);
}

#[tokio::test]
async fn no_history_means_no_recovery() {
    let t = hub();
    let s = t.connect("ann");
    let r = s.subscribe("plain:a", Some(pos(1, "e"))).await.unwrap();
    assert!(r.was_recovering && !r.recovered && !r.recoverable);
}

#[tokio::test]
async fn publications_racing_a_recovering_subscribe_are_neither_lost_nor_duplicated() {
    for (before, after) in [(0, 0), (2, 0), (0, 2), (3, 4), (5, 30)] {
        let (hub, broker) = racy_hub();
        let results = publish_n(&hub, "chat:a", 5).await;
        let epoch = results[0].epoch.clone();
        broker.before.store(before, Ordering::SeqCst);
        broker.after.store(after, Ordering::SeqCst);
        let req = proto::ConnectRequest {
            token: token_for("ann"),
            ..Default::default()
        };
        let s = hub.connect(&req, "test").unwrap();
        let r = s.subscribe("chat:a", Some(pos(2, &epoch))).await.unwrap();
        assert!(r.recovered, "before={before} after={after}");
        let mut seen = offsets(&r.publications);
        assert!(
            seen.iter().all(|o| *o <= r.offset),
            "the reply covers up to its position"
        );
        seen.extend(drain_offsets(&s));
        publish_n(&hub, "chat:a", 1).await;
        seen.extend(drain_offsets(&s));
        let total = 5 + before + after + 1;
        assert_eq!(
            seen,
            (3..=total as u64).collect::<Vec<_>>(),
            "before={before} after={after}"
        );
    }
}

#[tokio::test]
async fn publications_racing_a_plain_subscribe_start_right_after_the_position() {
    let (hub, broker) = racy_hub();
    publish_n(&hub, "chat:a", 2).await;
    broker.before.store(2, Ordering::SeqCst);
    broker.after.store(3, Ordering::SeqCst);
    let req = proto::ConnectRequest {
        token: token_for("ann"),
        ..Default::default()
    };
    let s = hub.connect(&req, "test").unwrap();
    let r = s.subscribe("chat:a", None).await.unwrap();
    assert_eq!(r.offset, 4, "position read after the 2 racing publications");
    assert!(r.publications.is_empty());
    assert_eq!(drain_offsets(&s), [5, 6, 7]);
}

/// A broker handler sees a gap in offsets (e.g. lost pub/sub message): the subscription ends
/// with 2500 insufficient state so the client resubscribes with recovery.
#[tokio::test]
async fn gap_in_delivered_offsets_unsubscribes_with_insufficient_state() {
    let t = hub();
    let s = t.connect("ann");
    let sub = s.subscribe("chat:a", None).await.unwrap();
    drain(&s); // own join
               // Publish into the stream without delivery by unsubscribing the node-level interest.
    t.broker.unsubscribe("chat:a").await.unwrap();
    publish_n(&t.hub, "chat:a", 1).await; // offset 1: lost for this node
    t.broker.subscribe("chat:a").await.unwrap();
    publish_n(&t.hub, "chat:a", 1).await; // offset 2 arrives: gap
    let pushes = drain(&s);
    assert!(
        matches!(&pushes[..], [p] if matches!(&p.push, Some(proto::push::Push::Unsubscribe(u)) if u.code == codes::unsubscribe::INSUFFICIENT_STATE)),
        "{pushes:?}"
    );
    assert!(s.channels().is_empty());
    // Resubscribing with recovery gets both.
    let r = s
        .subscribe("chat:a", Some(pos(0, &sub.epoch)))
        .await
        .unwrap();
    assert!(r.recovered);
    assert_eq!(offsets(&r.publications), [1, 2]);
}

mod window {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// History keeps the newest min(n, size) publications; recovery from offset k works
        /// exactly when every publication after k is still kept.
        #[test]
        fn history_window_and_recoverability(size in 1usize..8, n in 0usize..20, k in 0u64..22) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut c = config();
                c.namespaces.get_mut("chat").unwrap().history_size = size;
                let t = hub_with(c);
                let results = publish_n(&t.hub, "chat:w", n).await;
                let h = t.hub.history(&history_req("chat:w", 100)).await.unwrap();
                let n64 = n as u64;
                let kept = (n.min(size)) as u64;
                prop_assert_eq!(offsets(&h.publications), ((n64 - kept + 1)..=n64).collect::<Vec<_>>());
                let epoch = results.first().map(|r| r.epoch.clone()).unwrap_or(h.epoch.clone());
                let s = t.connect("ann");
                let r = s.subscribe("chat:w", Some(pos(k, &epoch))).await.unwrap();
                let expected = k <= n64 && n64 - k <= kept;
                prop_assert_eq!(r.recovered, expected, "size={} n={} k={}", size, n, k);
                if expected {
                    prop_assert_eq!(offsets(&r.publications), ((k + 1)..=n64).collect::<Vec<_>>());
                }
                Ok(())
            })?;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_and_recovering_subscribers_see_every_offset_once() {
    let t = std::sync::Arc::new(hub());
    let first = publish_n(&t.hub, "chat:s", 1).await;
    let epoch = first[0].epoch.clone();
    let rt_hub = t.hub.clone();
    let publishers: Vec<_> = (0..3)
        .map(|_| {
            let hub = rt_hub.clone();
            tokio::spawn(async move {
                for _ in 0..3 {
                    publish_n(&hub, "chat:s", 1).await;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let s = t.connect("ann");
    let r = s.subscribe("chat:s", Some(pos(1, &epoch))).await.unwrap();
    assert!(r.recovered);
    let mut seen = offsets(&r.publications);
    for p in publishers {
        p.await.unwrap();
    }
    seen.extend(drain_offsets(&s));
    assert_eq!(seen, (2..=10).collect::<Vec<_>>());
}
