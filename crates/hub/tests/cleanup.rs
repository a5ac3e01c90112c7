//! Failed, cancelled and dropped subscriptions leave no state behind.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use switchboard_hub::{codes, proto, Broker};

#[tokio::test]
async fn broker_failure_on_subscribe_is_a_temporary_internal_error_and_rolls_back() {
    let (hub, broker) = racy_hub();
    let s = hub
        .connect(
            &proto::ConnectRequest {
                token: token_for("ann"),
                ..Default::default()
            },
            "t",
        )
        .unwrap();
    broker.fail.store(true, Ordering::SeqCst);
    let e = s.subscribe("chat:a", None).await.unwrap_err();
    assert_eq!(e.code(), codes::error::INTERNAL);
    assert!(e.temporary() && e.to_proto().temporary);
    assert!(s.channels().is_empty());
    assert_eq!(hub.info().num_subs, 0);
    broker.fail.store(false, Ordering::SeqCst);
    s.subscribe("chat:a", None).await.unwrap();
}

#[tokio::test]
async fn cancelled_subscribe_is_undone() {
    let (hub, broker) = racy_hub();
    let s = hub
        .connect(
            &proto::ConnectRequest {
                token: token_for("ann"),
                ..Default::default()
            },
            "t",
        )
        .unwrap();
    broker.stall.store(true, Ordering::SeqCst);
    let r = tokio::time::timeout(Duration::from_millis(20), s.subscribe("chat:a", None)).await;
    assert!(r.is_err(), "the stalled subscribe timed out");
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(s.channels().is_empty());
    assert_eq!(hub.info().num_subs, 0);
    // Nothing is buffered for the abandoned subscription.
    publish_n(&hub, "chat:a", 3).await;
    assert_eq!(s.queued(), (0, 0));
    broker.stall.store(false, Ordering::SeqCst);
    s.subscribe("chat:a", None).await.unwrap();
}

#[test]
fn dropped_outside_a_runtime_is_cleaned_up_by_maintain() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = hub();
    let ann = t.connect("ann");
    let bob = t.connect("bob");
    rt.block_on(async {
        ann.subscribe("chat:a", None).await.unwrap();
        bob.subscribe("chat:a", None).await.unwrap();
    });
    drain(&ann);
    drop(bob); // no runtime current here: cleanup is queued
    assert_eq!(t.hub.connection_count(), 1);
    rt.block_on(async {
        assert_eq!(t.hub.presence("chat:a").await.unwrap().presence.len(), 2);
        t.hub.maintain().await;
        assert_eq!(t.hub.presence("chat:a").await.unwrap().presence.len(), 1);
    });
    let leaves = drain(&ann)
        .iter()
        .filter(|p| matches!(p.push, Some(proto::push::Push::Leave(_))))
        .count();
    assert_eq!(leaves, 1);
}

#[tokio::test]
async fn last_unsubscribe_drops_node_interest() {
    let t = hub();
    let s = t.connect("ann");
    s.subscribe("chat:a", None).await.unwrap();
    s.unsubscribe("chat:a").await.unwrap();
    // The broker no longer delivers chat:a to this node: resubscribing works from scratch.
    t.broker.unsubscribe("chat:a").await.unwrap();
    s.subscribe("chat:a", None).await.unwrap();
    publish_n(&t.hub, "chat:a", 1).await;
    assert_eq!(drain_offsets(&s), [1]);
}
