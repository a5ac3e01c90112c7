//! The broker contract (the module docs of `switchboard_hub::broker`) as checks any `Broker`
//! must pass, run against the `MemoryBroker` (tests/broker_contract.rs, fake time) and the
//! `RedisBroker` (tests/redis.rs, two nodes on one redis-server, real time).
//!
//! An [`Env`] holds one or more nodes sharing the broker's state (the memory broker is one
//! node) and a way to let time pass for the broker. Every wait is bounded.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use switchboard_hub::{
    codes, proto, BoxFuture, Broker, BrokerHandler, Control, HistoryQuery, HistoryRetention,
    PublishOptions,
};

/// Longest wait for an asynchronous delivery.
pub const WAIT: Duration = Duration::from_secs(10);

/// What a node's handler was given.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `on_publication`.
    Publication(String, proto::Publication),
    /// `on_join`: channel, client id.
    Join(String, String),
    /// `on_leave`: channel, client id.
    Leave(String, String),
    /// `on_control`.
    Control(Control),
}

/// A `BrokerHandler` that records everything.
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<Event>>,
    notify: tokio::sync::Notify,
}

impl Recorder {
    fn push(&self, e: Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(e);
        self.notify.notify_waiters();
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits (at most [`WAIT`]) until `f` finds what it looks for in the events.
    pub async fn wait_for<T>(&self, what: &str, f: impl Fn(&[Event]) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(t) = f(&self.events()) {
                return t;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for {what}; events: {:#?}", self.events());
            }
        }
    }

    /// Offsets of the publications recorded for `channel`, in delivery order.
    pub fn offsets(&self, channel: &str) -> Vec<u64> {
        offsets(&self.events(), channel)
    }

    /// Waits until `channel` has `n` publications and returns their offsets.
    pub async fn wait_offsets(&self, channel: &str, n: usize) -> Vec<u64> {
        self.wait_for(&format!("{n} publications in {channel}"), |e| {
            let o = offsets(e, channel);
            (o.len() >= n).then_some(o)
        })
        .await
    }
}

/// Offsets of the publications of `channel` among `events`.
pub fn offsets(events: &[Event], channel: &str) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Publication(c, p) if c == channel => Some(p.offset),
            _ => None,
        })
        .collect()
}

impl BrokerHandler for Recorder {
    fn on_publication(&self, channel: &str, publication: proto::Publication) {
        self.push(Event::Publication(channel.to_owned(), publication));
    }
    fn on_join(&self, channel: &str, info: proto::ClientInfo) {
        self.push(Event::Join(channel.to_owned(), info.client_id));
    }
    fn on_leave(&self, channel: &str, info: proto::ClientInfo) {
        self.push(Event::Leave(channel.to_owned(), info.client_id));
    }
    fn on_control(&self, control: Control) -> BoxFuture<'_, ()> {
        self.push(Event::Control(control));
        Box::pin(async {})
    }
}

type Pass = Box<dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync>;

/// Nodes over one shared broker state, their recorders, and the passing of time.
pub struct Env {
    pub nodes: Vec<Arc<dyn Broker>>,
    pub recorders: Vec<Arc<Recorder>>,
    pass: Pass,
    keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl Env {
    /// Registers a recorder as each node's handler.
    pub fn new(
        nodes: Vec<Arc<dyn Broker>>,
        pass: impl Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> Self {
        let recorders: Vec<Arc<Recorder>> = nodes
            .iter()
            .map(|n| {
                let r = Arc::new(Recorder::default());
                let weak: Weak<Recorder> = Arc::downgrade(&r);
                let handler: Weak<dyn BrokerHandler> = weak;
                n.set_handler(handler);
                r
            })
            .collect();
        Self {
            nodes,
            recorders,
            pass: Box::new(pass),
            keep: Vec::new(),
        }
    }

    /// Keeps `x` alive as long as the environment (e.g. the redis-server).
    pub fn keep(mut self, x: impl std::any::Any + Send + Sync) -> Self {
        self.keep.push(Box::new(x));
        self
    }

    /// Lets `d` pass for the broker.
    pub async fn pass(&self, d: Duration) {
        (self.pass)(d).await
    }

    /// Node `i` (round robin).
    pub fn node(&self, i: usize) -> &dyn Broker {
        self.nodes[i % self.nodes.len()].as_ref()
    }

    pub fn first(&self) -> &dyn Broker {
        self.node(0)
    }

    /// The last node: the one that receives when another publishes (the same one when there
    /// is only one).
    pub fn last(&self) -> &dyn Broker {
        self.node(self.nodes.len() - 1)
    }

    pub fn last_recorder(&self) -> &Recorder {
        &self.recorders[self.recorders.len() - 1]
    }
}

pub fn retention(size: usize, ttl: Duration, meta_ttl: Duration) -> HistoryRetention {
    HistoryRetention {
        size,
        ttl,
        meta_ttl,
    }
}

/// History 10 for a minute.
pub fn long() -> HistoryRetention {
    retention(10, Duration::from_secs(60), Duration::from_secs(600))
}

pub fn options(history: HistoryRetention) -> PublishOptions {
    PublishOptions {
        history,
        idempotency_key: None,
        idempotency_window: Duration::ZERO,
    }
}

pub fn with_key(history: HistoryRetention, key: &str, window: Duration) -> PublishOptions {
    PublishOptions {
        history,
        idempotency_key: Some(key.to_owned()),
        idempotency_window: window,
    }
}

pub fn info(user: &str, client_id: &str) -> proto::ClientInfo {
    proto::ClientInfo {
        user: user.to_owned(),
        client_id: client_id.to_owned(),
        conn_info: format!("{{\"name\":\"{user}\"}}").into_bytes(),
    }
}

/// A publication of `channel` with every field set (offset and epoch are the broker's to set).
pub fn publication(channel: &str, data: &str) -> proto::Publication {
    proto::Publication {
        channel: channel.to_owned(),
        offset: 99,
        epoch: "ignored".into(),
        data: data.as_bytes().to_vec(),
        info: Some(info("ann", "c1")),
        tags: HashMap::from([("k".to_owned(), "v v".to_owned())]),
    }
}

fn page_offsets(page: &switchboard_hub::HistoryPage) -> Vec<u64> {
    page.publications.iter().map(|p| p.offset).collect()
}

fn query(since: Option<(u64, &str)>, limit: Option<usize>, reverse: bool) -> HistoryQuery {
    HistoryQuery {
        since: since.map(|(offset, epoch)| proto::StreamPosition {
            offset,
            epoch: epoch.to_owned(),
        }),
        limit,
        reverse,
    }
}

/// Contract point 1: Offsets 1, 2, 3... per channel within one random epoch, on every node; without
/// history offset 0 and epoch ""; stored publications keep data, info and tags.
pub async fn numbering_and_epochs(env: &Env) {
    let o = options(long());
    let mut results = Vec::new();
    for i in 0..4 {
        let out = env
            .node(i)
            .publish("chat:n", publication("chat:n", &format!("m{i}")), &o)
            .await
            .expect("publish");
        assert!(!out.suppressed);
        results.push(out.position);
    }
    let epoch = results[0].epoch.clone();
    assert!(!epoch.is_empty(), "a stream has an epoch");
    for (i, p) in results.iter().enumerate() {
        assert_eq!((p.offset, &p.epoch), (i as u64 + 1, &epoch));
    }
    let other = env
        .last()
        .publish("chat:n2", publication("chat:n2", "x"), &o)
        .await
        .expect("publish");
    assert_eq!(other.position.offset, 1, "each channel numbers on its own");
    assert_ne!(other.position.epoch, epoch, "epochs are random");

    let none = env
        .first()
        .publish(
            "chat:n0",
            publication("chat:n0", "x"),
            &options(HistoryRetention::NONE),
        )
        .await
        .expect("publish");
    assert_eq!(none.position, proto::StreamPosition::default());

    let page = env
        .last()
        .history("chat:n", HistoryQuery::default(), &long())
        .await
        .expect("history");
    assert_eq!(page_offsets(&page), [1, 2, 3, 4]);
    assert_eq!((page.position.offset, &page.position.epoch), (4, &epoch));
    for (i, p) in page.publications.iter().enumerate() {
        let mut want = publication("chat:n", &format!("m{i}"));
        want.offset = i as u64 + 1;
        want.epoch = epoch.clone();
        assert_eq!(p, &want);
    }
}

/// Contract points 2 and 4: Retention by size (oldest evicted), and history reads: order, `since`
/// (exclusive), `limit` (0 = position only), `reverse`.
pub async fn history_reads(env: &Env) {
    let o = options(long());
    for i in 0..15 {
        env.node(i)
            .publish("chat:h", publication("chat:h", &i.to_string()), &o)
            .await
            .expect("publish");
    }
    let r = long();
    let h = |q| env.last().history("chat:h", q, &r);
    let all = h(query(None, None, false)).await.expect("history");
    assert_eq!(page_offsets(&all), (6..=15).collect::<Vec<_>>());
    let e = all.position.epoch.clone();
    assert_eq!(all.position.offset, 15);
    let zero = h(query(None, Some(0), false)).await.expect("history");
    assert!(zero.publications.is_empty());
    assert_eq!(zero.position, all.position);
    let first3 = h(query(None, Some(3), false)).await.expect("history");
    assert_eq!(page_offsets(&first3), [6, 7, 8]);
    let last3 = h(query(None, Some(3), true)).await.expect("history");
    assert_eq!(page_offsets(&last3), [15, 14, 13]);
    let since = h(query(Some((12, &e)), Some(10), false))
        .await
        .expect("history");
    assert_eq!(page_offsets(&since), [13, 14, 15]);
    let since_all = h(query(Some((12, &e)), None, false))
        .await
        .expect("history");
    assert_eq!(page_offsets(&since_all), [13, 14, 15]);
    let before = h(query(Some((9, &e)), Some(2), true))
        .await
        .expect("history");
    assert_eq!(page_offsets(&before), [8, 7]);
    let before_all = h(query(Some((9, &e)), None, true)).await.expect("history");
    assert_eq!(page_offsets(&before_all), [8, 7, 6]);
    let nothing_before_1 = h(query(Some((0, &e)), None, true)).await.expect("history");
    assert!(nothing_before_1.publications.is_empty());
    assert_eq!(nothing_before_1.position, all.position);
    let beyond = h(query(Some((u64::MAX, &e)), None, false))
        .await
        .expect("history");
    assert!(beyond.publications.is_empty());
    let up_to_date = h(query(Some((15, &e)), None, false))
        .await
        .expect("history");
    assert!(up_to_date.publications.is_empty());
    // The broker does not check the epoch of `since`: the hub compares positions.
    let other_epoch = h(query(Some((13, "other")), None, false))
        .await
        .expect("history");
    assert_eq!(page_offsets(&other_epoch), [14, 15]);
    assert_eq!(other_epoch.position.epoch, e);
}

/// Contract point 2: Reading a channel without a stream creates it (an epoch to recover from);
/// without history nothing is read.
pub async fn reading_creates_the_stream(env: &Env) {
    let r = long();
    let first = env
        .first()
        .history("chat:e", query(None, Some(0), false), &r)
        .await
        .expect("history");
    assert_eq!(first.position.offset, 0);
    assert!(!first.position.epoch.is_empty());
    let again = env
        .last()
        .history("chat:e", query(None, None, false), &r)
        .await
        .expect("history");
    assert_eq!(again.position, first.position);
    let p = env
        .last()
        .publish("chat:e", publication("chat:e", "x"), &options(r))
        .await
        .expect("publish");
    assert_eq!(
        (p.position.offset, &p.position.epoch),
        (1, &first.position.epoch)
    );
    let none = env
        .first()
        .history(
            "chat:none",
            query(None, None, false),
            &HistoryRetention::NONE,
        )
        .await
        .expect("history");
    assert_eq!(none, switchboard_hub::HistoryPage::default());
}

/// Contract point 1: `remove_history` drops the publications and keeps the position.
pub async fn remove_history_keeps_the_position(env: &Env) {
    let o = options(long());
    for i in 0..3 {
        env.node(i)
            .publish("chat:r", publication("chat:r", "x"), &o)
            .await
            .expect("publish");
    }
    env.first().remove_history("chat:r").await.expect("remove");
    env.first()
        .remove_history("chat:never")
        .await
        .expect("remove of nothing");
    let page = env
        .last()
        .history("chat:r", query(None, None, false), &long())
        .await
        .expect("history");
    assert!(page.publications.is_empty());
    assert_eq!(page.position.offset, 3);
    let next = env
        .last()
        .publish("chat:r", publication("chat:r", "y"), &o)
        .await
        .expect("publish");
    assert_eq!(
        next.position,
        proto::StreamPosition {
            offset: 4,
            epoch: page.position.epoch.clone()
        }
    );
    let page = env
        .first()
        .history("chat:r", query(None, None, false), &long())
        .await
        .expect("history");
    assert_eq!(page_offsets(&page), [4]);
}

/// Contract points 2 and 1: Each publication is kept `ttl`; the position survives `meta_ttl` after
/// the last publication, then the next stream has a new epoch and starts at 1.
pub async fn retention_ttl_and_meta_ttl(env: &Env) {
    let r = retention(10, Duration::from_secs(3), Duration::from_secs(6));
    let o = options(r);
    let step = Duration::from_millis(1600);
    let first = env
        .first()
        .publish("chat:t", publication("chat:t", "1"), &o)
        .await
        .expect("publish");
    env.last()
        .publish("chat:t", publication("chat:t", "2"), &o)
        .await
        .expect("publish");
    env.pass(step).await;
    env.first()
        .publish("chat:t", publication("chat:t", "3"), &o)
        .await
        .expect("publish");
    env.pass(step).await; // 1 and 2 are 3.2 s old, 3 is 1.6 s
    let page = env
        .last()
        .history("chat:t", query(None, None, false), &r)
        .await
        .expect("history");
    assert_eq!(page_offsets(&page), [3]);
    env.pass(step).await; // 3 is 3.2 s old, the position 3.2 s
    let page = env
        .last()
        .history("chat:t", query(None, None, false), &r)
        .await
        .expect("history");
    assert!(page.publications.is_empty());
    assert_eq!(
        (page.position.offset, &page.position.epoch),
        (3, &first.position.epoch),
        "the position outlives the publications"
    );
    env.pass(Duration::from_secs(3)).await; // the position is 6.2 s old
    let page = env
        .first()
        .history("chat:t", query(None, None, false), &r)
        .await
        .expect("history");
    assert_eq!(page.position.offset, 0);
    assert_ne!(
        page.position.epoch, first.position.epoch,
        "a lost stream gets a new epoch"
    );
    let next = env
        .last()
        .publish("chat:t", publication("chat:t", "4"), &o)
        .await
        .expect("publish");
    assert_eq!(
        next.position,
        proto::StreamPosition {
            offset: 1,
            epoch: page.position.epoch
        }
    );
}

/// Contract point 5: A key seen in the channel within the window returns the first result,
/// suppressed, storing and delivering nothing, whichever node is asked.
pub async fn idempotency(env: &Env) {
    let window = Duration::from_secs(1);
    env.last().subscribe("chat:i").await.expect("subscribe");
    let keyed = with_key(long(), "k", window);
    let first = env
        .first()
        .publish("chat:i", publication("chat:i", "1"), &keyed)
        .await
        .expect("publish");
    assert!(!first.suppressed);
    let again = env
        .last()
        .publish("chat:i", publication("chat:i", "1 again"), &keyed)
        .await
        .expect("publish");
    assert!(again.suppressed);
    assert_eq!(again.position, first.position);
    let plain = env
        .first()
        .publish("chat:i", publication("chat:i", "2"), &options(long()))
        .await
        .expect("publish");
    assert_eq!(plain.position.offset, 2);
    assert_eq!(env.last_recorder().wait_offsets("chat:i", 2).await, [1, 2]);
    let page = env
        .last()
        .history("chat:i", query(None, None, false), &long())
        .await
        .expect("history");
    assert_eq!(
        page_offsets(&page),
        [1, 2],
        "the suppressed publish stored nothing"
    );

    let elsewhere = env
        .last()
        .publish("chat:i2", publication("chat:i2", "x"), &keyed)
        .await
        .expect("publish");
    assert!(!elsewhere.suppressed, "keys are per channel");

    let no_history = with_key(HistoryRetention::NONE, "k", window);
    let a = env
        .first()
        .publish("plain:i", publication("plain:i", "x"), &no_history)
        .await
        .expect("publish");
    let b = env
        .last()
        .publish("plain:i", publication("plain:i", "x"), &no_history)
        .await
        .expect("publish");
    assert!(!a.suppressed && b.suppressed);
    assert_eq!(b.position, proto::StreamPosition::default());

    env.pass(Duration::from_millis(1500)).await;
    let later = env
        .last()
        .publish("chat:i", publication("chat:i", "3"), &keyed)
        .await
        .expect("publish");
    assert!(!later.suppressed, "the window has passed");
    assert_eq!(later.position.offset, 3);
    assert_eq!(
        env.last_recorder().wait_offsets("chat:i", 3).await,
        [1, 2, 3]
    );
}

/// Contract point 3: After `subscribe` resolves, every later publication (from any node) is
/// delivered in offset order; join/leave go to subscribed nodes; control messages to every node.
pub async fn delivery(env: &Env) {
    let rec = env.last_recorder();
    env.last().subscribe("chat:d").await.expect("subscribe");
    env.last()
        .subscribe("chat:d")
        .await
        .expect("subscribe is idempotent");
    env.last().subscribe("plain:d").await.expect("subscribe");
    let o = options(long());
    for i in 0..5 {
        env.node(i)
            .publish("chat:d", publication("chat:d", &i.to_string()), &o)
            .await
            .expect("publish");
    }
    assert_eq!(rec.wait_offsets("chat:d", 5).await, [1, 2, 3, 4, 5]);
    let epoch = rec
        .events()
        .iter()
        .find_map(|e| match e {
            Event::Publication(c, p) if c == "chat:d" => Some(p.epoch.clone()),
            _ => None,
        })
        .unwrap_or_default();
    for e in rec.events() {
        if let Event::Publication(c, p) = e {
            assert_eq!(
                (p.channel.as_str(), p.epoch.as_str()),
                (c.as_str(), epoch.as_str())
            );
            assert_eq!(p.tags.get("k").map(String::as_str), Some("v v"));
        }
    }
    env.first()
        .publish(
            "plain:d",
            publication("plain:d", "no history"),
            &options(HistoryRetention::NONE),
        )
        .await
        .expect("publish");
    assert_eq!(rec.wait_offsets("plain:d", 1).await, [0]);

    env.first()
        .publish_join("chat:d", info("bob", "c2"))
        .await
        .expect("join");
    env.first()
        .publish_leave("chat:d", info("bob", "c2"))
        .await
        .expect("leave");
    rec.wait_for("join and leave", |e| {
        let j = e
            .iter()
            .position(|e| *e == Event::Join("chat:d".into(), "c2".into()))?;
        let l = e
            .iter()
            .position(|e| *e == Event::Leave("chat:d".into(), "c2".into()))?;
        (j < l).then_some(())
    })
    .await;

    // Unsubscribed: nothing more from chat:d (a marker in plain:d shows the later messages
    // had their chance).
    env.last().unsubscribe("chat:d").await.expect("unsubscribe");
    env.last()
        .unsubscribe("chat:d")
        .await
        .expect("unsubscribe is idempotent");
    env.last()
        .unsubscribe("chat:never")
        .await
        .expect("unsubscribe of nothing");
    env.first()
        .publish("chat:d", publication("chat:d", "6"), &o)
        .await
        .expect("publish");
    env.first()
        .publish_join("chat:d", info("carl", "c3"))
        .await
        .expect("join");
    env.first()
        .publish(
            "plain:d",
            publication("plain:d", "marker"),
            &options(HistoryRetention::NONE),
        )
        .await
        .expect("publish");
    rec.wait_offsets("plain:d", 2).await;
    assert_eq!(rec.offsets("chat:d"), [1, 2, 3, 4, 5]);
    assert!(!rec
        .events()
        .contains(&Event::Join("chat:d".into(), "c3".into())));

    let control = Control::DisconnectUser {
        user: "ann".into(),
        client_id: Some("c1".into()),
        disconnect: codes::disconnect_message(codes::disconnect::FORCE_DISCONNECT),
    };
    env.first()
        .publish_control(control.clone())
        .await
        .expect("control");
    let unsub = Control::UnsubscribeUser {
        user: "bob".into(),
        channel: "chat:d".into(),
        client_id: None,
    };
    env.last()
        .publish_control(unsub.clone())
        .await
        .expect("control");
    for r in &env.recorders {
        r.wait_for("both control messages on every node", |e| {
            (e.contains(&Event::Control(control.clone()))
                && e.contains(&Event::Control(unsub.clone())))
            .then_some(())
        })
        .await;
    }
}

/// Contract point 6: Presence: every node sees the same entries; stats count clients and distinct
/// users (anonymous counts as user ""); entries expire `ttl` after their last refresh.
pub async fn presence(env: &Env) {
    let ttl = Duration::from_secs(60);
    env.first()
        .add_presence("chat:p", info("ann", "c1"), ttl)
        .await
        .expect("add");
    env.last()
        .add_presence("chat:p", info("bob", "c2"), ttl)
        .await
        .expect("add");
    env.first()
        .add_presence("chat:p", info("", "c3"), ttl)
        .await
        .expect("add");
    env.last()
        .add_presence("chat:p", info("ann", "c4"), ttl)
        .await
        .expect("add");
    for n in &env.nodes {
        let p = n.presence("chat:p").await.expect("presence");
        assert_eq!(p.len(), 4);
        assert_eq!(p.get("c2"), Some(&info("bob", "c2")));
        let s = n.presence_stats("chat:p").await.expect("stats");
        assert_eq!((s.clients, s.users), (4, 3));
    }
    env.first()
        .remove_presence("chat:p", "c4")
        .await
        .expect("remove");
    env.first()
        .remove_presence("chat:p", "nobody")
        .await
        .expect("remove of nothing");
    let s = env.last().presence_stats("chat:p").await.expect("stats");
    assert_eq!((s.clients, s.users), (3, 3));
    let empty = env.last().presence("chat:empty").await.expect("presence");
    assert!(empty.is_empty());

    // Expiry, and refresh.
    let short = Duration::from_secs(2);
    env.first()
        .add_presence("chat:p", info("dan", "c5"), Duration::from_secs(1))
        .await
        .expect("add");
    env.first()
        .add_presence("chat:p", info("eve", "c6"), short)
        .await
        .expect("add");
    assert!(env
        .last()
        .presence("chat:p")
        .await
        .expect("presence")
        .contains_key("c5"));
    env.pass(Duration::from_millis(1200)).await;
    env.last()
        .add_presence("chat:p", info("eve", "c6"), short)
        .await
        .expect("refresh");
    let p = env.last().presence("chat:p").await.expect("presence");
    assert!(!p.contains_key("c5"), "expired without refresh");
    env.pass(Duration::from_millis(1200)).await;
    let p = env.first().presence("chat:p").await.expect("presence");
    assert!(p.contains_key("c6"), "refreshed 1.2 s ago with a 2 s TTL");
    assert!(p.contains_key("c1"));
    env.pass(Duration::from_millis(1000)).await;
    let p = env.first().presence("chat:p").await.expect("presence");
    assert!(!p.contains_key("c6"));
    let s = env.last().presence_stats("chat:p").await.expect("stats");
    assert_eq!((s.clients, s.users), (3, 3));
}

/// A stream that was only read goes `ttl` after its last read unless a node subscribed to
/// the channel keeps it (its maintain), so made-up channel names do not pile up while a
/// watched quiet channel keeps its epoch; published streams live `meta_ttl`.
pub async fn read_only_streams_expire_unless_watched(env: &Env) {
    let r = retention(10, Duration::from_secs(2), Duration::from_secs(60));
    let position_only = || query(None, Some(0), false);
    let junk = env
        .first()
        .history("chat:junk", position_only(), &r)
        .await
        .expect("history");
    env.last()
        .subscribe("chat:watched")
        .await
        .expect("subscribe");
    let watched = env
        .last()
        .history("chat:watched", position_only(), &r)
        .await
        .expect("history");
    env.first()
        .publish("chat:used", publication("chat:used", "x"), &options(r))
        .await
        .expect("publish");
    let used = env
        .first()
        .history("chat:used", position_only(), &r)
        .await
        .expect("history");
    for _ in 0..2 {
        env.pass(Duration::from_millis(1200)).await;
        for n in &env.nodes {
            n.maintain().await;
        }
    }
    let h = |c: &'static str| env.first().history(c, position_only(), &r);
    assert_ne!(
        h("chat:junk").await.expect("history").position.epoch,
        junk.position.epoch,
        "a read-only stream nobody watches is dropped after the history TTL"
    );
    assert_eq!(
        h("chat:watched").await.expect("history").position,
        watched.position,
        "a watched stream keeps its epoch"
    );
    assert_eq!(
        h("chat:used").await.expect("history").position,
        used.position
    );
}

/// Cluster-wide counts: the change that takes the total over every node from 0, and the one
/// that takes it back to 0, are the only ones that report a crossing.
pub async fn cluster_counts(env: &Env) {
    let a = env.first();
    let b = env.node(env.nodes.len() - 1);
    let c = |r: Result<bool, _>| r.expect("count");
    assert!(c(a.count("c|x", "n1", 1).await), "0 -> 1 crosses");
    assert!(!c(b.count("c|x", "n2", 1).await), "1 -> 2 does not");
    assert!(!c(a.count("c|x", "n1", -1).await), "2 -> 1 does not");
    assert!(c(b.count("c|x", "n2", -1).await), "1 -> 0 crosses");
    assert!(!c(b.count("c|x", "n2", -1).await), "below 0 stays 0");
    assert!(c(a.count("c|x", "n1", 1).await), "and 0 -> 1 again");
    assert!(!a.count("c|other", "n1", -1).await.expect("count"));
}

/// One `#[tokio::test]` per contract check, each on a fresh environment made by `$env` (an
/// expression evaluated inside the async test, so it may `.await`). The one list of checks for
/// every broker.
macro_rules! contract_tests {
    ($env:expr) => {
        contract_tests!(@each $env;
            numbering_and_epochs,
            history_reads,
            reading_creates_the_stream,
            remove_history_keeps_the_position,
            retention_ttl_and_meta_ttl,
            idempotency,
            delivery,
            presence,
            read_only_streams_expire_unless_watched,
            cluster_counts,
        );
    };
    (@each $env:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                contract::$name(&$env).await;
            }
        )*
    };
}
