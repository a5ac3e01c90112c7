//! The memory broker's history is bounded node-wide (`[hub] history_memory_mib`): one client
//! publishing large payloads to thousands of new channels used to grow the node without
//! bound. Beyond the budget the node's oldest publications go first, whatever their channel;
//! recovering past an evicted publication reports `recovered = false`, exactly like a size or
//! TTL trim (never a silent gap). Channel streams are bounded too (`limits.max_channels`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use switchboard_hub::{
    codes, proto, Hub, HubConfig, HubError, Limit, ManualClock, MemoryBroker, MemoryLimits,
    NamespaceOptions, HISTORY_ITEM_OVERHEAD,
};

const PAYLOAD: usize = 60_000;

fn budget_config(mib: usize) -> HubConfig {
    let mut c = config();
    c.history_memory_mib = mib;
    c.namespaces.insert(
        "pub".into(),
        NamespaceOptions {
            history_size: 100,
            history_ttl_secs: 300,
            ..open_namespace()
        },
    );
    c
}

/// A hub whose memory broker takes its limits from `config`, as `Hub::with_memory_broker`
/// does, on fake time.
fn bounded_hub(config: HubConfig) -> TestHub {
    let clock = Arc::new(ManualClock::new(T0));
    let limits = MemoryLimits::from_config(&config);
    let broker = Arc::new(MemoryBroker::with_limits(clock.clone(), limits));
    let hub = Hub::new(config, broker.clone(), clock.clone()).expect("valid config");
    TestHub { hub, clock, broker }
}

async fn history_len(hub: &Hub, channel: &str) -> usize {
    let h = hub
        .history(&proto::HistoryRequest {
            channel: channel.into(),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("history");
    h.publications.len()
}

#[tokio::test]
async fn history_is_bounded_node_wide_oldest_publications_first() {
    let t = bounded_hub(budget_config(1));
    let budget = 1 << 20;
    // The report's attack, scaled: large payloads to many new channels (server API, so no
    // publish budget interferes).
    for i in 0..200 {
        t.hub
            .publish(
                &format!("pub:c{i}"),
                vec![b'x'; PAYLOAD],
                Default::default(),
            )
            .await
            .unwrap();
        assert!(t.broker.history_bytes() <= budget, "after {i}");
    }
    let per_item = PAYLOAD + HISTORY_ITEM_OVERHEAD;
    let kept = budget / (PAYLOAD + 64 + HISTORY_ITEM_OVERHEAD);
    assert!(
        t.broker.history_bytes() > budget - 2 * per_item,
        "the budget is used"
    );
    // Exactly the newest channels (spread over every shard) still have their publication.
    let mut with_history = Vec::new();
    for i in 0..200 {
        if history_len(&t.hub, &format!("pub:c{i}")).await == 1 {
            with_history.push(i);
        }
    }
    assert!(with_history.len() >= kept, "{with_history:?}");
    let first = 200 - with_history.len();
    assert_eq!(with_history, (first..200).collect::<Vec<_>>());
    // Every stream keeps its position: evicted channels still number on from where they were.
    let r = t
        .hub
        .publish("pub:c0", b"{}".to_vec(), Default::default())
        .await
        .unwrap();
    assert_eq!(r.offset, 2);
}

#[tokio::test]
async fn recovery_past_an_evicted_publication_is_impossible() {
    let t = bounded_hub(budget_config(1));
    let mut epoch = String::new();
    for _ in 0..5 {
        let r = t.hub.publish("pub:a", vec![b'a'; 4000], Default::default());
        epoch = r.await.unwrap().epoch;
    }
    let first_kept = |t: &TestHub| {
        let hub = t.hub.clone();
        async move {
            let request = proto::HistoryRequest {
                channel: "pub:a".into(),
                limit: 100,
                ..Default::default()
            };
            let h = hub.history(&request).await.unwrap();
            assert_eq!(h.offset, 5, "the position is kept");
            h.publications.first().map(|p| p.offset)
        }
    };
    // Others publish (same size) until the oldest publication of `pub:a` is evicted.
    let mut i = 0;
    let first = loop {
        match first_kept(&t).await {
            Some(1) => {}
            other => break other,
        }
        t.hub
            .publish(&format!("pub:o{i}"), vec![b'o'; 4000], Default::default())
            .await
            .unwrap();
        i += 1;
    };
    let Some(first) = first else {
        panic!("all of pub:a evicted at once");
    };
    assert!((2..=5).contains(&first), "{first}");
    let s = t.connect("ann");
    // Publication `first - 1` is gone: recovering from before it is impossible.
    let r = s
        .subscribe("pub:a", Some(pos(first - 2, &epoch)))
        .await
        .unwrap();
    assert!(r.was_recovering && !r.recovered, "{r:?}");
    assert!(r.publications.is_empty());
    assert_eq!((r.offset, r.epoch.as_str()), (5, epoch.as_str()));
    s.unsubscribe("pub:a").await.unwrap();
    // From just before the first one kept: recovered.
    let r = s
        .subscribe("pub:a", Some(pos(first - 1, &epoch)))
        .await
        .unwrap();
    assert!(r.recovered, "{r:?}");
    let offsets: Vec<u64> = r.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, (first..=5).collect::<Vec<_>>());
}

#[tokio::test]
async fn internal_channels_are_not_evicted_by_client_traffic() {
    let t = bounded_hub(budget_config(1));
    let keep = Duration::from_secs(3600);
    t.hub
        .bus_publish("revocations", b"r1".to_vec(), keep)
        .await
        .unwrap();
    for i in 0..100 {
        t.hub
            .publish(
                &format!("pub:c{i}"),
                vec![b'x'; PAYLOAD],
                Default::default(),
            )
            .await
            .unwrap();
    }
    let handler: switchboard_hub::BusHandler = Arc::new(|_: &[u8]| {});
    let kept = t
        .hub
        .bus_subscribe("revocations", keep, handler)
        .await
        .unwrap();
    assert_eq!(kept, [b"r1".to_vec()]);
}

#[tokio::test]
async fn channel_streams_are_bounded_and_idle_ones_make_room() {
    let mut c = budget_config(16);
    c.limits.max_channels = 8;
    let t = bounded_hub(c);
    let s = t.connect("ann");
    // A watched stream without publications, and seven with publications (one a second).
    s.subscribe("pub:watched", None).await.unwrap();
    for i in 0..7 {
        t.hub
            .publish(&format!("pub:{i}"), b"{}".to_vec(), Default::default())
            .await
            .unwrap();
        t.advance(Duration::from_secs(1));
    }
    assert_eq!(t.broker.stream_count(), 8);
    let e = t
        .hub
        .publish("pub:new", b"{}".to_vec(), Default::default())
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::Limit(Limit::NodeChannels)), "{e:?}");
    assert_eq!(e.code(), codes::error::LIMIT_EXCEEDED);
    assert!(e.temporary());
    // A history read of a new channel needs a stream too.
    let other = t.connect("bob");
    let e = other.subscribe("pub:new", None).await.unwrap_err();
    assert_eq!(e.code(), codes::error::LIMIT_EXCEEDED);
    // Maintenance makes no room while every stream has publications or a subscriber...
    t.hub.maintain().await;
    assert_eq!(t.broker.stream_count(), 8);
    // ... and does once publications expired: least recently used first, never the watched
    // one, down to 3/4 of the cap.
    t.advance(Duration::from_secs(301));
    t.hub
        .publish("pub:6", b"{}".to_vec(), Default::default())
        .await
        .unwrap();
    t.hub.maintain().await;
    assert_eq!(t.broker.stream_count(), 6);
    t.hub
        .publish("pub:new", b"{}".to_vec(), Default::default())
        .await
        .unwrap();
    let watched = proto::HistoryRequest {
        channel: "pub:watched".into(),
        ..Default::default()
    };
    assert!(s.history(&watched).await.is_ok());
    // The two least recently used went: pub:0 starts a new stream (taking the last slot),
    // pub:2 kept its position, pub:1 finds the node full again.
    let publish = |channel: &'static str| {
        let hub = t.hub.clone();
        async move {
            hub.publish(channel, b"{}".to_vec(), Default::default())
                .await
        }
    };
    assert_eq!(publish("pub:0").await.unwrap().offset, 1);
    assert_eq!(publish("pub:2").await.unwrap().offset, 2);
    assert_eq!(publish("pub:6").await.unwrap().offset, 3);
    assert_eq!(
        publish("pub:1").await.unwrap_err().code(),
        codes::error::LIMIT_EXCEEDED
    );
}

#[test]
fn history_memory_must_be_positive() {
    let mut c = budget_config(0);
    assert!(Hub::with_memory_broker(c.clone()).is_err());
    c.history_memory_mib = 1;
    assert!(Hub::with_memory_broker(c).is_ok());
}
