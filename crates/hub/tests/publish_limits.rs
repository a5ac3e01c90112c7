//! Client publishes are budgeted per publisher (a user, or every anonymous connection
//! together): publications per second with a burst, and bytes per second; refusals are 111 with
//! `temporary = true`. One-request sessions (HTTP `/v1/publish`) and reconnects do not refill
//! the budget; the server API is not limited. The node holds at most `limits.max_channels`
//! subscribed channels (106, temporary).

mod common;

use std::time::Duration;

use common::*;
use switchboard_hub::{codes, proto, HubConfig, HubError, Limit, NamespaceOptions, Session};

/// Namespace `pub` open to everyone, anonymous included, with history.
fn open_config() -> HubConfig {
    let mut c = config();
    c.allow_anonymous = true;
    c.namespaces.insert(
        "pub".into(),
        NamespaceOptions {
            allow_publish_for_anonymous: true,
            allow_subscribe_for_anonymous: true,
            ..open_namespace()
        },
    );
    c
}

fn rate_config(per_second: u32, burst: u32) -> HubConfig {
    let mut c = open_config();
    c.limits.max_publications_per_second = per_second;
    c.limits.publication_burst = burst;
    c.limits.max_publish_bytes_per_second = 0;
    c
}

fn anonymous(t: &TestHub) -> Session {
    t.hub
        .connect(&proto::ConnectRequest::default(), "http")
        .expect("anonymous connect")
}

fn assert_rate_limited(e: &HubError, setting: &str) {
    assert_eq!(e.code(), codes::error::TOO_MANY_REQUESTS, "{e:?}");
    assert!(e.temporary());
    assert!(e.to_proto().message.contains(setting), "{e}");
}

#[tokio::test]
async fn a_publisher_is_held_to_its_rate_and_burst() {
    let t = hub_with(rate_config(2, 3));
    let ann = t.connect("ann");
    for i in 0..3 {
        ann.publish("pub:a", vec![b'1'], "")
            .await
            .unwrap_or_else(|e| panic!("burst publication {i}: {e}"));
    }
    let e = ann.publish("pub:a", vec![b'1'], "").await.unwrap_err();
    assert!(matches!(e, HubError::Limit(Limit::PublishRate)), "{e:?}");
    assert_rate_limited(&e, "max_publications_per_second");
    // A second connection of the same user shares the budget.
    let ann2 = t.connect("ann");
    assert!(ann2.publish("pub:a", vec![b'1'], "").await.is_err());
    // Other users and the server API are not affected.
    let bob = t.connect("bob");
    bob.publish("pub:a", vec![b'1'], "").await.unwrap();
    publish_n(&t.hub, "pub:a", 20).await;
    // Refills at the rate: one publication per 500 ms.
    t.advance(Duration::from_millis(499));
    assert!(ann.publish("pub:a", vec![b'1'], "").await.is_err());
    t.advance(Duration::from_millis(1));
    ann.publish("pub:a", vec![b'1'], "").await.unwrap();
    assert!(ann2.publish("pub:a", vec![b'1'], "").await.is_err());
    // Refused publications were neither stored nor counted against anything else.
    let history = t
        .hub
        .history(&proto::HistoryRequest {
            channel: "pub:a".into(),
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(history.offset, 3 + 1 + 20 + 1);
}

#[tokio::test]
async fn one_request_sessions_and_reconnects_do_not_refill_the_budget() {
    let t = hub_with(rate_config(1, 5));
    // Anonymous one-request sessions, as `POST /v1/publish` makes them: all anonymous
    // publishers share one budget.
    let mut accepted = 0;
    for _ in 0..50 {
        let s = anonymous(&t);
        if s.publish("pub:a", b"{}".to_vec(), "").await.is_ok() {
            accepted += 1;
        }
        s.close().await;
    }
    assert_eq!(accepted, 5);
    // A long-lived anonymous connection is in the same budget.
    let ws = anonymous(&t);
    let e = ws.publish("pub:a", b"{}".to_vec(), "").await.unwrap_err();
    assert_rate_limited(&e, "max_publications_per_second");
    drop(ws);
    // Maintenance does not forget a budget that is not full again.
    t.hub.maintain().await;
    let s = anonymous(&t);
    assert!(s.publish("pub:a", b"{}".to_vec(), "").await.is_err());
    drop(s);
    // A user reconnecting for every publication.
    let mut accepted = 0;
    for _ in 0..20 {
        let s = t.connect("ann");
        if s.publish("pub:a", b"{}".to_vec(), "").await.is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 5);
    // Once refilled and unused, the budget is forgotten (and a fresh one is full anyway).
    t.advance(Duration::from_secs(5));
    t.hub.maintain().await;
    let s = anonymous(&t);
    for _ in 0..5 {
        s.publish("pub:a", b"{}".to_vec(), "").await.unwrap();
    }
}

#[tokio::test]
async fn a_publisher_is_held_to_its_byte_rate() {
    let mut c = open_config();
    c.limits.max_message_size = 600;
    c.limits.max_publish_bytes_per_second = 1000;
    let t = hub_with(c);
    let ann = t.connect("ann");
    ann.publish("pub:a", vec![b'1'; 600], "").await.unwrap();
    let e = ann.publish("pub:a", vec![b'1'; 600], "").await.unwrap_err();
    assert!(matches!(e, HubError::Limit(Limit::PublishBytes)), "{e:?}");
    assert_rate_limited(&e, "max_publish_bytes_per_second");
    // Smaller publications still fit in what is left.
    ann.publish("pub:a", vec![b'1'; 400], "").await.unwrap();
    t.advance(Duration::from_millis(600));
    ann.publish("pub:a", vec![b'1'; 600], "").await.unwrap();
    // An oversized publication is refused for its size and costs nothing.
    t.advance(Duration::from_secs(1));
    let e = ann.publish("pub:a", vec![b'1'; 601], "").await.unwrap_err();
    assert_eq!(e.code(), codes::error::MESSAGE_TOO_LARGE);
    ann.publish("pub:a", vec![b'1'; 600], "").await.unwrap();
}

#[tokio::test]
async fn one_anonymous_connection_cannot_flood_new_channels_with_large_payloads() {
    // Default limits: the attack of the report (60 KB payloads to thousands of new channels
    // from one anonymous loopback client) gets about one second's byte budget through.
    let t = hub_with(open_config());
    let s = anonymous(&t);
    let payload = vec![b'7'; 60_000];
    let mut accepted = 0usize;
    let mut refused = 0usize;
    for i in 0..4000 {
        match s
            .publish(&format!("pub:flood{i}"), payload.clone(), "")
            .await
        {
            Ok(_) => accepted += 1,
            Err(e) => {
                assert_eq!(e.code(), codes::error::TOO_MANY_REQUESTS);
                assert!(e.temporary());
                refused += 1;
            }
        }
    }
    let per_second = switchboard_hub::Limits::default().max_publish_bytes_per_second;
    assert_eq!(
        accepted,
        per_second / payload.len(),
        "one second of byte budget"
    );
    assert_eq!(refused, 4000 - accepted);
}

#[tokio::test]
async fn the_node_holds_at_most_max_channels_subscribed_channels() {
    let mut c = open_config();
    c.limits.max_channels = 3;
    let t = hub_with(c);
    let a = t.connect("ann");
    let b = t.connect("bob");
    a.subscribe("pub:1", None).await.unwrap();
    a.subscribe("pub:2", None).await.unwrap();
    b.subscribe("pub:3", None).await.unwrap();
    let e = b.subscribe("pub:4", None).await.unwrap_err();
    assert!(matches!(e, HubError::Limit(Limit::NodeChannels)), "{e:?}");
    assert_eq!(e.code(), codes::error::LIMIT_EXCEEDED);
    assert!(e.temporary());
    assert!(e.to_string().contains("max_channels"), "{e}");
    assert!(!b.channels().contains(&"pub:4".to_owned()));
    // Channels already held take more subscribers.
    b.subscribe("pub:1", None).await.unwrap();
    // A channel is given back when its last subscriber leaves.
    a.unsubscribe("pub:2").await.unwrap();
    b.subscribe("pub:4", None).await.unwrap();
    let e = a.subscribe("pub:5", None).await.unwrap_err();
    assert_eq!(e.code(), codes::error::LIMIT_EXCEEDED);
    // ... and when its subscribers' connection closes.
    b.close().await;
    a.subscribe("pub:5", None).await.unwrap();
}

#[test]
fn publish_limits_validate() {
    let mut c = open_config();
    c.limits.publication_burst = 0;
    assert!(switchboard_hub::Hub::with_memory_broker(c.clone()).is_err());
    c.limits.max_publications_per_second = 0;
    assert!(
        switchboard_hub::Hub::with_memory_broker(c.clone()).is_ok(),
        "0 = unlimited"
    );
    c.limits.max_channels = 0;
    assert!(switchboard_hub::Hub::with_memory_broker(c).is_err());
}

#[tokio::test]
async fn anonymous_clients_at_different_addresses_have_budgets_of_their_own() {
    let t = hub_with(rate_config(1, 2));
    let at = |ip: &str| {
        t.hub
            .connect_from(
                &proto::ConnectRequest::default(),
                "http",
                Some(ip.parse().unwrap()),
            )
            .expect("anonymous connect")
    };
    let a = at("198.51.100.7");
    for _ in 0..2 {
        a.publish("pub:a", vec![b'1'], "").await.unwrap();
    }
    let e = a.publish("pub:a", vec![b'1'], "").await.unwrap_err();
    assert_rate_limited(&e, "max_publications_per_second");
    // A new session from the same address shares the spent budget; so does another address
    // of the same IPv6 /64, and an IPv4-mapped spelling of the same IPv4 address.
    assert!(at("198.51.100.7")
        .publish("pub:a", vec![b'1'], "")
        .await
        .is_err());
    assert!(at("::ffff:198.51.100.7")
        .publish("pub:a", vec![b'1'], "")
        .await
        .is_err());
    let v6 = at("2001:db8:1:2::1");
    for _ in 0..2 {
        v6.publish("pub:a", vec![b'1'], "").await.unwrap();
    }
    assert!(at("2001:db8:1:2::ffff")
        .publish("pub:a", vec![b'1'], "")
        .await
        .is_err());
    // Another address is not starved.
    at("198.51.100.8")
        .publish("pub:a", vec![b'1'], "")
        .await
        .unwrap();
    at("2001:db8:1:3::1")
        .publish("pub:a", vec![b'1'], "")
        .await
        .unwrap();
}
