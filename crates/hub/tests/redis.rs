//! The Redis broker (issue 8), each test on its own `redis-server` (a test fails with
//! instructions when it is not installed):
//!
//! * two hub nodes on one Redis: publications, join/leave, presence, history and recovery,
//!   idempotent publish and control messages (disconnect/unsubscribe user) cross nodes; a
//!   dead node's presence expires while live entries are refreshed;
//! * faults: Redis unreachable at start is a clear error; Redis stopped → publishes refused
//!   with a clear temporary error, health false, sessions kept; Redis restarted → health back,
//!   channels resubscribed, clients told to recover (2500) because the stream was lost; one
//!   node cut off and back → the publications it missed are delivered, or the gap reported;
//! * the broker contract checks of tests/common/contract.rs (also run on the memory broker).

mod common;
#[path = "common/contract.rs"]
#[macro_use]
mod contract;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use common::{config, open_namespace, pos, token_for, T0};
use redis_server::{free_port, Proxy, RedisServer};
use switchboard_hub::proto::push::Push;
use switchboard_hub::{
    codes, proto, BoxFuture, Broker, BrokerError, Hub, HubConfig, ManualClock, NamespaceOptions,
    RedisBroker, RedisConfig, ServerPublish, Session,
};
use tokio::time::Instant;

/// Longest wait for anything asynchronous.
const WAIT: Duration = Duration::from_secs(10);

/// Short timeouts so faults show quickly.
fn redis_config(url: &str) -> RedisConfig {
    RedisConfig {
        connect_timeout: Duration::from_millis(500),
        command_timeout: Duration::from_secs(1),
        ping_interval: Duration::from_millis(200),
        reconnect_max_delay: Duration::from_millis(500),
        prefix: "test".into(),
        ..RedisConfig::new(url)
    }
}

struct Node {
    hub: Hub,
    broker: Arc<RedisBroker>,
}

async fn node(url: &str, config: HubConfig) -> Node {
    let broker = RedisBroker::connect(redis_config(url))
        .await
        .expect("connect to redis-server");
    // The hub's clock only drives token expiry here (the test tokens are valid at T0); the
    // broker takes its time from Redis.
    let hub = Hub::new(config, broker.clone(), Arc::new(ManualClock::new(T0))).expect("config");
    Node { hub, broker }
}

fn connect(hub: &Hub, user: &str) -> Session {
    let request = proto::ConnectRequest {
        token: token_for(user),
        ..Default::default()
    };
    hub.connect(&request, "test").expect("connect")
}

/// Receives pushes until `done` holds for all of them so far (at most [`WAIT`]).
async fn collect_until(
    s: &Session,
    what: &str,
    done: impl Fn(&[Arc<switchboard_hub::SharedPush>]) -> bool,
) -> Vec<Arc<switchboard_hub::SharedPush>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !done(&got) {
        match tokio::time::timeout_at(deadline, s.recv()).await {
            Ok(Some(p)) => got.push(p),
            Ok(None) => panic!("session ended while waiting for {what}; got {got:#?}"),
            Err(_) => panic!("timed out waiting for {what}; got {got:#?}"),
        }
    }
    got
}

fn publications<'a>(
    pushes: &'a [Arc<switchboard_hub::SharedPush>],
    channel: &'a str,
) -> impl Iterator<Item = &'a proto::Publication> + 'a {
    pushes.iter().filter_map(move |p| match &p.push {
        Some(Push::Publication(p)) if p.channel == channel => Some(p),
        _ => None,
    })
}

fn offsets(pushes: &[Arc<switchboard_hub::SharedPush>], channel: &str) -> Vec<u64> {
    publications(pushes, channel).map(|p| p.offset).collect()
}

fn unsubscribes(pushes: &[Arc<switchboard_hub::SharedPush>], channel: &str) -> Vec<u32> {
    pushes
        .iter()
        .filter_map(|p| match &p.push {
            Some(Push::Unsubscribe(u)) if u.channel == channel => Some(u.code),
            _ => None,
        })
        .collect()
}

/// The next `n` publications of `channel` (other pushes skipped; an unsubscribe from
/// `channel` fails the test).
async fn next_publications(s: &Session, channel: &str, n: usize) -> Vec<proto::Publication> {
    let got = collect_until(s, &format!("{n} publications in {channel}"), |got| {
        assert!(
            unsubscribes(got, channel).is_empty(),
            "unexpected unsubscribe from {channel}: {got:#?}"
        );
        publications(got, channel).count() >= n
    })
    .await;
    publications(&got, channel).cloned().collect()
}

fn is_join_of(push: &proto::Push, channel: &str, user: &str) -> bool {
    matches!(&push.push, Some(Push::Join(j))
        if j.channel == channel && j.info.as_ref().is_some_and(|i| i.user == user))
}

fn is_leave_of(push: &proto::Push, channel: &str, user: &str) -> bool {
    matches!(&push.push, Some(Push::Leave(l))
        if l.channel == channel && l.info.as_ref().is_some_and(|i| i.user == user))
}

async fn wait_health(broker: &RedisBroker, up: bool) {
    let mut changes = broker.health_changes();
    let reached = tokio::time::timeout(WAIT, changes.wait_for(|h| h.up == up)).await;
    assert!(
        matches!(reached, Ok(Ok(_))),
        "health did not become up={up}: {:?}",
        broker.health()
    );
}

fn data(n: usize) -> Vec<u8> {
    format!("{{\"n\":{n}}}").into_bytes()
}

// ---- two nodes ----

#[tokio::test]
async fn publications_presence_and_join_leave_span_nodes() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), config()).await;
    let b = node(&redis.url(), config()).await;
    let ann = connect(&b.hub, "ann");
    ann.subscribe("chat:a", None).await.expect("subscribe on B");
    let bob = connect(&a.hub, "bob");
    bob.subscribe("chat:a", None).await.expect("subscribe on A");
    collect_until(&ann, "bob's join (made on A)", |got| {
        got.iter().any(|p| is_join_of(p, "chat:a", "bob"))
    })
    .await;

    let r = a
        .hub
        .publish("chat:a", data(1), Default::default())
        .await
        .expect("publish on A");
    for s in [&ann, &bob] {
        let p = next_publications(s, "chat:a", 1).await;
        assert_eq!((p[0].offset, &p[0].epoch), (1, &r.epoch));
        assert_eq!(p[0].data, data(1));
    }
    ann.publish("chat:a", data(2), "")
        .await
        .expect("client publish on B");
    let p = next_publications(&bob, "chat:a", 1).await;
    assert_eq!(p[0].offset, 2);
    assert_eq!(p[0].info.as_ref().map(|i| i.user.as_str()), Some("ann"));

    for n in [&a, &b] {
        let presence = n.hub.presence("chat:a").await.expect("presence");
        let mut users: Vec<&str> = presence
            .presence
            .values()
            .map(|i| i.user.as_str())
            .collect();
        users.sort_unstable();
        assert_eq!(users, ["ann", "bob"]);
        let stats = n.hub.presence_stats("chat:a").await.expect("stats");
        assert_eq!((stats.num_clients, stats.num_users), (2, 2));
    }

    bob.close().await;
    collect_until(&ann, "bob's leave (made on A)", |got| {
        got.iter().any(|p| is_leave_of(p, "chat:a", "bob"))
    })
    .await;
    let presence = b.hub.presence("chat:a").await.expect("presence");
    assert_eq!(presence.presence.len(), 1);
    assert!(b.hub.broker_healthy() && a.hub.broker_healthy());
}

#[tokio::test]
async fn history_and_recovery_work_across_nodes() {
    let redis = RedisServer::start();
    let nodes = [
        node(&redis.url(), config()).await,
        node(&redis.url(), config()).await,
    ];
    let [a, b] = &nodes;
    let ann = connect(&a.hub, "ann");
    let sub = ann.subscribe("chat:h", None).await.expect("subscribe");
    assert!(sub.recoverable && !sub.epoch.is_empty());
    let mut results = Vec::new();
    for i in 0..3 {
        results.push(
            nodes[i % 2]
                .hub
                .publish("chat:h", data(i), Default::default())
                .await
                .expect("publish"),
        );
    }
    for (i, r) in results.iter().enumerate() {
        assert_eq!((r.offset, &r.epoch), (i as u64 + 1, &sub.epoch));
    }
    let seen = next_publications(&ann, "chat:h", 3).await;
    assert_eq!(seen.iter().map(|p| p.offset).collect::<Vec<_>>(), [1, 2, 3]);
    ann.close().await; // ann goes away...

    b.hub
        .publish("chat:h", data(3), Default::default())
        .await
        .expect("publish");
    a.hub
        .publish("chat:h", data(4), Default::default())
        .await
        .expect("publish");

    // ...and comes back on the other node, recovering from the position node A gave her.
    let ann = connect(&b.hub, "ann");
    let sub = ann
        .subscribe("chat:h", Some(pos(3, &sub.epoch)))
        .await
        .expect("recovering subscribe on B");
    assert!(sub.recovered, "{sub:?}");
    let recovered: Vec<u64> = sub.publications.iter().map(|p| p.offset).collect();
    assert_eq!(recovered, [4, 5]);
    assert_eq!(sub.publications[1].data, data(4));
    a.hub
        .publish("chat:h", data(5), Default::default())
        .await
        .expect("publish");
    let live = next_publications(&ann, "chat:h", 1).await;
    assert_eq!(live[0].offset, 6);

    let h = b
        .hub
        .history(&proto::HistoryRequest {
            channel: "chat:h".into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("history");
    assert_eq!(
        h.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!((h.offset, &h.epoch), (6, &sub.epoch));
}

#[tokio::test]
async fn idempotent_publish_is_deduplicated_across_nodes() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), config()).await;
    let b = node(&redis.url(), config()).await;
    let carl = connect(&b.hub, "carl");
    carl.subscribe("chat:k", None).await.expect("subscribe");
    let keyed = ServerPublish {
        idempotency_key: "order-1".into(),
        ..Default::default()
    };
    let first = a
        .hub
        .publish("chat:k", data(1), keyed.clone())
        .await
        .expect("publish");
    let retried = b
        .hub
        .publish("chat:k", data(1), keyed)
        .await
        .expect("retry on the other node");
    assert_eq!(retried, first);
    let next = b
        .hub
        .publish("chat:k", data(2), Default::default())
        .await
        .expect("publish");
    assert_eq!(next.offset, 2);
    let seen = next_publications(&carl, "chat:k", 2).await;
    assert_eq!(
        seen.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [1, 2],
        "the retry was neither stored nor delivered"
    );
}

#[tokio::test]
async fn presence_of_a_dead_node_expires_while_live_entries_are_refreshed() {
    let redis = RedisServer::start();
    let mut cfg = config();
    cfg.presence_ttl_secs = 1;
    let a = node(&redis.url(), cfg.clone()).await;
    let b = node(&redis.url(), cfg).await;
    let ann = connect(&a.hub, "ann");
    ann.subscribe("chat:p", None).await.expect("subscribe on A");
    let carl = connect(&b.hub, "carl");
    carl.subscribe("chat:p", None)
        .await
        .expect("subscribe on B");
    let users = |p: proto::PresenceResult| {
        let mut u: Vec<String> = p.presence.into_values().map(|i| i.user).collect();
        u.sort_unstable();
        u
    };
    assert_eq!(
        users(b.hub.presence("chat:p").await.expect("presence")),
        ["ann", "carl"]
    );
    // Node A is dead: it never refreshes (no maintain). Node B refreshes its own entries.
    let until = Instant::now() + Duration::from_millis(1600);
    while Instant::now() < until {
        b.hub.maintain().await;
        tokio::time::sleep(b.hub.maintenance_interval().min(Duration::from_millis(250))).await;
    }
    assert_eq!(
        users(b.hub.presence("chat:p").await.expect("presence")),
        ["carl"],
        "the dead node's entry expired after the presence TTL"
    );
    drop(ann);
}

#[tokio::test]
async fn control_messages_reach_every_node() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), config()).await;
    let b = node(&redis.url(), config()).await;
    let bob = connect(&a.hub, "bob");
    bob.subscribe("chat:u", None).await.expect("subscribe");
    b.hub
        .unsubscribe_user("bob", "chat:u", None)
        .await
        .expect("unsubscribe user from B");
    let got = collect_until(&bob, "the server unsubscribe", |got| {
        !unsubscribes(got, "chat:u").is_empty()
    })
    .await;
    assert_eq!(unsubscribes(&got, "chat:u"), [codes::unsubscribe::SERVER]);
    assert!(bob.channels().is_empty());

    let ann_a = connect(&a.hub, "ann");
    let ann_b = connect(&b.hub, "ann");
    a.hub
        .disconnect_user("ann", None, None)
        .await
        .expect("disconnect user from A");
    for s in [&ann_a, &ann_b] {
        let got = collect_until(s, "the disconnect", |got| {
            got.iter()
                .any(|p| matches!(p.push, Some(Push::Disconnect(_))))
        })
        .await;
        let code = got.iter().find_map(|p| match &p.push {
            Some(Push::Disconnect(d)) => Some(d.code),
            _ => None,
        });
        assert_eq!(code, Some(codes::disconnect::FORCE_DISCONNECT));
    }
    assert!(bob.disconnected().is_none(), "only ann was disconnected");
}

// ---- faults ----

#[tokio::test]
async fn unreachable_redis_at_start_is_a_clear_error() {
    let port = free_port();
    let started = Instant::now();
    let err = RedisBroker::connect(redis_config(&format!("redis://127.0.0.1:{port}/")))
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, BrokerError::Unavailable(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("cannot connect to Redis") && text.contains(&format!("127.0.0.1:{port}")),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = RedisBroker::connect(redis_config("http://example.org/"))
        .await
        .expect_err("not a Redis URL");
    assert!(matches!(err, BrokerError::Backend(_)), "{err:?}");
}

#[tokio::test]
async fn redis_outage_refuses_publishes_keeps_sessions_and_recovers() {
    let mut redis = RedisServer::start();
    let a = node(&redis.url(), config()).await;
    let b = node(&redis.url(), config()).await;
    let ann = connect(&b.hub, "ann");
    ann.subscribe("chat:o", None).await.expect("subscribe");
    ann.subscribe("plain:o", None).await.expect("subscribe");
    let mut epoch = String::new();
    for i in 0..2 {
        epoch = a
            .hub
            .publish("chat:o", data(i), Default::default())
            .await
            .expect("publish")
            .epoch;
    }
    assert_eq!(
        next_publications(&ann, "chat:o", 2)
            .await
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        [1, 2]
    );

    redis.stop();
    wait_health(&a.broker, false).await;
    wait_health(&b.broker, false).await;
    assert!(!a.hub.broker_healthy() && !b.hub.broker_healthy());
    for n in [&a, &b] {
        let started = Instant::now();
        let err = n
            .hub
            .publish("chat:o", data(9), Default::default())
            .await
            .expect_err("publish while Redis is down");
        assert!(started.elapsed() < Duration::from_secs(3), "fails fast");
        assert_eq!(err.code(), codes::error::INTERNAL);
        assert!(err.temporary());
        assert!(
            err.to_string().contains("broker unavailable: Redis"),
            "a clear message: {err}"
        );
    }
    let err = ann
        .publish("plain:o", data(9), "")
        .await
        .expect_err("client publish while Redis is down");
    assert_eq!(err.to_proto().code, codes::error::INTERNAL);
    assert!(err.to_proto().temporary);
    let health = b.broker.health();
    assert!(!health.up && health.outages >= 1, "{health:?}");
    assert!(health.last_error.is_some(), "{health:?}");
    // Local sessions stay connected and subscribed.
    assert!(ann.disconnected().is_none());
    assert!(ann.ping().is_ok());
    let mut channels = ann.channels();
    channels.sort_unstable();
    assert_eq!(channels, ["chat:o", "plain:o"]);

    redis.restart(); // same port, empty: the streams are lost
    wait_health(&a.broker, true).await;
    wait_health(&b.broker, true).await;
    assert!(b.hub.broker_healthy());

    // Resubscribed: publications reach the other node again.
    a.hub
        .publish("plain:o", data(10), Default::default())
        .await
        .expect("publish after the restart");
    let p = next_publications(&ann, "plain:o", 1).await;
    assert_eq!(p[0].data, data(10));

    // The history channel's stream was lost: a new epoch, which tells ann to recover.
    let r = a
        .hub
        .publish("chat:o", data(11), Default::default())
        .await
        .expect("publish after the restart");
    assert_eq!(r.offset, 1);
    assert_ne!(r.epoch, epoch);
    let got = collect_until(&ann, "insufficient state", |got| {
        !unsubscribes(got, "chat:o").is_empty()
    })
    .await;
    assert_eq!(
        unsubscribes(&got, "chat:o"),
        [codes::unsubscribe::INSUFFICIENT_STATE]
    );
    let sub = ann
        .subscribe("chat:o", Some(pos(2, &epoch)))
        .await
        .expect("resubscribe with recovery");
    assert!(!sub.recovered, "the old epoch cannot be recovered");
    assert_eq!((sub.offset, &sub.epoch), (1, &r.epoch));
    a.hub
        .publish("chat:o", data(12), Default::default())
        .await
        .expect("publish");
    let p = next_publications(&ann, "chat:o", 1).await;
    assert_eq!((p[0].offset, &p[0].epoch), (2, &r.epoch));
}

#[tokio::test]
async fn a_node_cut_off_from_redis_catches_up_or_reports_the_gap() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.port()).await;
    let mut cfg = config();
    cfg.namespaces.insert(
        "small".into(),
        NamespaceOptions {
            history_size: 2,
            ..open_namespace()
        },
    );
    let a = node(&redis.url(), cfg.clone()).await;
    let b = node(&proxy.url(), cfg).await;
    let ann = connect(&b.hub, "ann");
    ann.subscribe("chat:c", None).await.expect("subscribe");
    let small = ann.subscribe("small:c", None).await.expect("subscribe");
    for channel in ["chat:c", "small:c"] {
        a.hub
            .publish(channel, data(1), Default::default())
            .await
            .expect("publish");
        assert_eq!(next_publications(&ann, channel, 1).await[0].offset, 1);
    }

    proxy.cut();
    wait_health(&b.broker, false).await;
    assert!(a.broker.is_healthy());
    let err = b
        .hub
        .publish("chat:c", data(0), Default::default())
        .await
        .expect_err("node B cannot reach Redis");
    assert_eq!(err.code(), codes::error::INTERNAL);
    // Meanwhile node A goes on publishing.
    for i in 2..=4 {
        for channel in ["chat:c", "small:c"] {
            a.hub
                .publish(channel, data(i), Default::default())
                .await
                .expect("publish on A");
        }
    }

    proxy.restore();
    wait_health(&b.broker, true).await;
    let got = collect_until(&ann, "catch-up and the gap", |got| {
        offsets(got, "chat:c").len() >= 3 && !unsubscribes(got, "small:c").is_empty()
    })
    .await;
    // History holds every missed publication of chat:c: delivered, in order, no gap.
    assert_eq!(offsets(&got, "chat:c"), [2, 3, 4]);
    assert!(unsubscribes(&got, "chat:c").is_empty());
    assert_eq!(ann.disconnected(), None);
    // small:c keeps 2: publication 2 is gone, so the hub reports the gap.
    assert_eq!(
        unsubscribes(&got, "small:c"),
        [codes::unsubscribe::INSUFFICIENT_STATE]
    );
    let sub = ann
        .subscribe("small:c", Some(pos(1, &small.epoch)))
        .await
        .expect("resubscribe with recovery");
    assert!(!sub.recovered);
    assert_eq!((sub.offset, &sub.epoch), (4, &small.epoch));

    a.hub
        .publish("chat:c", data(5), Default::default())
        .await
        .expect("publish");
    assert_eq!(next_publications(&ann, "chat:c", 1).await[0].offset, 5);
    // Node B publishes again too.
    b.hub
        .publish("chat:c", data(6), Default::default())
        .await
        .expect("publish on B after the cut");
    assert_eq!(next_publications(&ann, "chat:c", 1).await[0].offset, 6);
}

// ---- the broker contract, on two nodes ----

async fn redis_env() -> contract::Env {
    let redis = RedisServer::start();
    let mut nodes: Vec<Arc<dyn Broker>> = Vec::new();
    for _ in 0..2 {
        nodes.push(
            RedisBroker::connect(redis_config(&redis.url()))
                .await
                .expect("connect to redis-server"),
        );
    }
    contract::Env::new(nodes, |d| -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    })
    .keep(redis)
}

mod contract_on_redis {
    use super::*;
    contract_tests!(redis_env().await);
}

/// A node that stops heartbeating loses its counts at the next sweep, and the keys that fall to
/// zero that way are handed to one sweeper only (the report of a dead node's members and
/// channels, exactly once for the cluster).
#[tokio::test]
async fn counts_of_a_node_that_stopped_heartbeating_are_swept_once() {
    let env = redis_env().await;
    let (a, b) = (env.node(0), env.node(1));
    a.heartbeat("dead", Duration::from_millis(300))
        .await
        .unwrap();
    b.heartbeat("alive", Duration::from_secs(30)).await.unwrap();
    assert!(a.count("c|only-dead", "dead", 1).await.unwrap());
    assert!(a.count("c|shared", "dead", 1).await.unwrap());
    assert!(!b.count("c|shared", "alive", 1).await.unwrap());
    assert!(b.sweep_counts().await.unwrap().is_empty(), "both alive");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (x, y) = tokio::join!(a.sweep_counts(), b.sweep_counts());
    let mut swept: Vec<String> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    swept.sort();
    assert_eq!(
        swept,
        vec!["c|only-dead".to_owned()],
        "once, and not the shared key"
    );
    assert!(a.sweep_counts().await.unwrap().is_empty());
    // The live node's count is intact: its last leave crosses to zero.
    assert!(b.count("c|shared", "alive", -1).await.unwrap());
}
