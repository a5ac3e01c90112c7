//! Shared helpers for the hub integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use switchboard_hub::{
    BoxFuture, Broker, BrokerError, BrokerHandler, Control, HistoryPage, HistoryQuery,
    HistoryRetention, PresenceStats, PublishOptions, PublishOutcome,
};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use switchboard_hub::{
    proto, Hub, HubConfig, ManualClock, MemoryBroker, NamespaceOptions, Session,
};

pub const SECRET: &str = "test-secret";
/// 2026-01-01T00:00:00Z in ms.
pub const T0: u64 = 1_767_225_600_000;

pub struct TestHub {
    pub hub: Hub,
    pub clock: Arc<ManualClock>,
    pub broker: Arc<MemoryBroker>,
}

/// A namespace where authenticated clients may do everything, history 10 for 60 s.
pub fn open_namespace() -> NamespaceOptions {
    NamespaceOptions {
        history_size: 10,
        history_ttl_secs: 60,
        presence: true,
        join_leave: true,
        allow_subscribe_for_client: true,
        allow_publish_for_client: true,
        allow_presence_for_subscriber: true,
        allow_history_for_subscriber: true,
        ..Default::default()
    }
}

/// Config with HS256 `SECRET`, namespace `chat` open, default namespace subscribe-only (no
/// history, no presence), namespace `plain` open without history/presence.
pub fn config() -> HubConfig {
    let mut c = HubConfig::default();
    c.jwt.hmac_secret = Some(SECRET.into());
    c.default_namespace.allow_subscribe_for_client = true;
    c.namespaces.insert("chat".into(), open_namespace());
    c.namespaces.insert(
        "plain".into(),
        NamespaceOptions {
            allow_subscribe_for_client: true,
            allow_publish_for_client: true,
            allow_history_for_client: true,
            allow_presence_for_client: true,
            ..Default::default()
        },
    );
    c
}

pub fn hub_with(config: HubConfig) -> TestHub {
    let clock = Arc::new(ManualClock::new(T0));
    let broker = Arc::new(MemoryBroker::new(clock.clone()));
    let hub = Hub::new(config, broker.clone(), clock.clone()).expect("valid config");
    TestHub { hub, clock, broker }
}

pub fn hub() -> TestHub {
    hub_with(config())
}

pub fn now_secs(clock: &ManualClock) -> u64 {
    use switchboard_hub::Clock;
    clock.now_millis() / 1000
}

pub fn hs256(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

pub fn token_for(user: &str) -> String {
    hs256(serde_json::json!({ "sub": user, "exp": T0 / 1000 + 3600 }))
}

impl TestHub {
    pub fn connect(&self, user: &str) -> Session {
        let req = proto::ConnectRequest {
            token: token_for(user),
            ..Default::default()
        };
        self.hub.connect(&req, "test").expect("connect")
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

/// Everything queued right now.
pub fn drain(session: &Session) -> Vec<Arc<switchboard_hub::SharedPush>> {
    std::iter::from_fn(|| session.try_recv()).collect()
}

/// Offsets of queued publications of `channel`, draining the queue.
pub fn drain_offsets(session: &Session) -> Vec<u64> {
    drain(session)
        .iter()
        .filter_map(|p| match &p.push {
            Some(proto::push::Push::Publication(p)) => Some(p.offset),
            _ => None,
        })
        .collect()
}

pub fn publication(push: &proto::Push) -> &proto::Publication {
    match &push.push {
        Some(proto::push::Push::Publication(p)) => p,
        other => panic!("expected a publication, got {other:?}"),
    }
}

pub fn pos(offset: u64, epoch: &str) -> proto::StreamPosition {
    proto::StreamPosition {
        offset,
        epoch: epoch.to_owned(),
    }
}

pub async fn publish_n(hub: &Hub, channel: &str, n: usize) -> Vec<proto::PublishResult> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(
            hub.publish(
                channel,
                format!("{{\"i\":{i}}}").into_bytes(),
                Default::default(),
            )
            .await
            .expect("publish"),
        );
    }
    out
}

/// Wraps a MemoryBroker to stage races and failures: publishes `before` publications just
/// before a history read and `after` just after it (the two halves of the recovery race);
/// with `stall`, history reads never complete; with `fail`, subscribe fails.
pub struct RacyBroker {
    pub inner: Arc<MemoryBroker>,
    pub before: AtomicUsize,
    pub after: AtomicUsize,
    pub stall: AtomicBool,
    pub fail: AtomicBool,
    pub options: PublishOptions,
}

impl RacyBroker {
    async fn race(&self, channel: &str, counter: &AtomicUsize) {
        let n = counter.swap(0, Ordering::SeqCst);
        for i in 0..n {
            let p = proto::Publication {
                channel: channel.into(),
                data: format!("{i}").into_bytes(),
                ..Default::default()
            };
            self.inner.publish(channel, p, &self.options).await.unwrap();
        }
    }
}

impl Broker for RacyBroker {
    fn set_handler(&self, handler: Weak<dyn BrokerHandler>) {
        self.inner.set_handler(handler)
    }
    fn count<'a>(
        &'a self,
        key: &'a str,
        node: &'a str,
        delta: i64,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        self.inner.count(key, node, delta)
    }
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        if self.fail.load(Ordering::SeqCst) {
            return Box::pin(async { Err(BrokerError::Closed) });
        }
        self.inner.subscribe(channel)
    }
    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.unsubscribe(channel)
    }
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        p: proto::Publication,
        o: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<PublishOutcome, BrokerError>> {
        self.inner.publish(channel, p, o)
    }
    fn publish_join<'a>(
        &'a self,
        channel: &'a str,
        info: proto::ClientInfo,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.publish_join(channel, info)
    }
    fn publish_leave<'a>(
        &'a self,
        channel: &'a str,
        info: proto::ClientInfo,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.publish_leave(channel, info)
    }
    fn publish_control(&self, control: Control) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.publish_control(control)
    }
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
        retention: &'a HistoryRetention,
    ) -> BoxFuture<'a, Result<HistoryPage, BrokerError>> {
        Box::pin(async move {
            if self.stall.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            self.race(channel, &self.before).await;
            let page = self.inner.history(channel, query, retention).await;
            self.race(channel, &self.after).await;
            page
        })
    }
    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.remove_history(channel)
    }
    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: proto::ClientInfo,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.add_presence(channel, info, ttl)
    }
    fn remove_presence<'a>(
        &'a self,
        channel: &'a str,
        client_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.remove_presence(channel, client_id)
    }
    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, proto::ClientInfo>, BrokerError>> {
        self.inner.presence(channel)
    }
    fn presence_stats<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<PresenceStats, BrokerError>> {
        self.inner.presence_stats(channel)
    }
}

pub fn racy_hub() -> (Hub, Arc<RacyBroker>) {
    let clock = Arc::new(ManualClock::new(T0));
    let options = PublishOptions {
        history: open_namespace().retention(),
        idempotency_key: None,
        idempotency_window: Duration::ZERO,
    };
    let broker = Arc::new(RacyBroker {
        inner: Arc::new(MemoryBroker::new(clock.clone())),
        before: AtomicUsize::new(0),
        after: AtomicUsize::new(0),
        stall: AtomicBool::new(false),
        fail: AtomicBool::new(false),
        options,
    });
    let hub = Hub::new(config(), broker.clone(), clock).unwrap();
    (hub, broker)
}
