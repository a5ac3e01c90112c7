//! The broker seam: where publications are numbered, stored and fanned out between nodes, and
//! where presence lives.
//!
//! The hub never assumes that publishing delivers: [`Broker::publish`] stores and numbers a
//! publication, and delivery to subscribers happens separately, when the broker hands it to the
//! node's [`BrokerHandler`] (right away for [`crate::MemoryBroker`], through pub/sub for a
//! networked broker). The hub dedupes and gap-checks deliveries by offset, so at-least-once
//! delivery is fine; reordering or loss inside one channel is detected and turned into an
//! "insufficient state" unsubscribe (2500) so clients recover.
//!
//! # Contract (what every implementation, e.g. a Redis one, must guarantee)
//!
//! 1. **Numbering.** With history enabled ([`HistoryRetention::enabled`]), `publish` assigns
//!    the next offset of the channel's stream atomically with storing it: offsets start at 1
//!    and increase by exactly one per publication within an epoch. The epoch is a random string
//!    chosen when the stream is created. Whenever the stream is lost (meta TTL expiry, eviction
//!    of the broker's data, restart of a non-persistent broker) the next stream gets a new
//!    epoch and restarts at offset 1. `remove_history` drops publications but keeps the
//!    position. Without history, offset 0 and epoch "" are returned and delivered.
//! 2. **Retention.** History keeps at most `size` publications (oldest evicted first), each for
//!    at most `ttl`; the stream position (top offset, epoch) survives `meta_ttl` after the last
//!    publication. Reading history of a channel without a stream creates the stream (so an
//!    empty channel already has an epoch to recover from). A broker may evict publications
//!    earlier to bound its memory (the memory broker evicts the node's oldest first; Redis
//!    within its `maxmemory`), always from the front of a stream and keeping its position, so
//!    a recovery that would need an evicted publication reports `recovered = false`. A broker
//!    that cannot hold one more stream fails with [`BrokerError::ChannelLimit`].
//! 3. **Delivery.** After `subscribe(channel)` has resolved, every publication made later in
//!    that channel, on any node, is passed to [`BrokerHandler::on_publication`], in offset
//!    order per channel. Join/leave messages are passed to `on_join`/`on_leave`, control
//!    messages to `on_control` on every node (including the sender).
//! 4. **History reads** return publications in offset order (descending with `reverse`) and
//!    the current position, read atomically with respect to publishing.
//! 5. **Idempotency.** A publish carrying an idempotency key already seen for the same channel
//!    within `idempotency_window` returns the first result with `suppressed = true` and neither
//!    stores nor delivers anything.
//! 6. **Presence** entries expire `ttl` after their last `add_presence` (the hub refreshes live
//!    ones from [`crate::Hub::maintain`]).
//! 7. The handler's `on_*` publication methods are synchronous and never block; call them from
//!    the broker's reader task. They may be called concurrently for different channels.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use switchboard_proto::v1 as proto;

use crate::error::BrokerError;

/// A boxed, sendable future (the broker trait is object-safe: `Arc<dyn Broker>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// History settings of a channel, passed with every publish and history read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRetention {
    /// Most publications kept (0 = no history).
    pub size: usize,
    /// How long each publication is kept.
    pub ttl: Duration,
    /// How long the stream position survives without publications.
    pub meta_ttl: Duration,
}

impl HistoryRetention {
    /// No history.
    pub const NONE: Self = Self {
        size: 0,
        ttl: Duration::ZERO,
        meta_ttl: Duration::ZERO,
    };

    /// Whether history is kept.
    pub fn enabled(&self) -> bool {
        self.size > 0 && !self.ttl.is_zero()
    }
}

/// Options of one publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOptions {
    /// The channel's history settings.
    pub history: HistoryRetention,
    /// Deduplication key (see the contract, point 5).
    pub idempotency_key: Option<String>,
    /// How long an idempotency key is remembered.
    pub idempotency_window: Duration,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    /// Offset and epoch of the publication (0 and "" without history).
    pub position: proto::StreamPosition,
    /// True when an earlier publish with the same idempotency key is being returned.
    pub suppressed: bool,
}

/// Which part of a channel's history to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only publications after this offset (before it with `reverse`). The epoch is not checked
    /// by the broker: the hub compares it with the returned position.
    pub since: Option<proto::StreamPosition>,
    /// Most publications to return; `Some(0)` = position only; `None` = all.
    pub limit: Option<usize>,
    /// Newest first.
    pub reverse: bool,
}

/// A history read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryPage {
    /// The publications.
    pub publications: Vec<proto::Publication>,
    /// The stream's current top offset and epoch.
    pub position: proto::StreamPosition,
}

/// Presence counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresenceStats {
    /// Connections present.
    pub clients: u32,
    /// Distinct user ids among them (anonymous connections count as one user "").
    pub users: u32,
}

/// A node-wide command sent through the broker to every node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Control {
    /// Disconnect the user's connections (only `client_id` when set).
    DisconnectUser {
        /// User id.
        user: String,
        /// Restrict to one connection.
        client_id: Option<String>,
        /// What to tell the client.
        disconnect: proto::Disconnect,
    },
    /// Unsubscribe the user's connections (only `client_id` when set) from a channel.
    UnsubscribeUser {
        /// User id.
        user: String,
        /// The channel.
        channel: String,
        /// Restrict to one connection.
        client_id: Option<String>,
    },
}

/// The node's receiver of broker events (implemented by the hub).
pub trait BrokerHandler: Send + Sync + 'static {
    /// A publication for a channel this node subscribed to. Must not block.
    fn on_publication(&self, channel: &str, publication: proto::Publication);
    /// Someone joined a channel this node subscribed to. Must not block.
    fn on_join(&self, channel: &str, info: proto::ClientInfo);
    /// Someone left a channel this node subscribed to. Must not block.
    fn on_leave(&self, channel: &str, info: proto::ClientInfo);
    /// A control command for every node.
    fn on_control(&self, control: Control) -> BoxFuture<'_, ()>;
}

/// Where a broker keeps its node's handler: a weak reference, set once by the hub.
#[derive(Default)]
pub(crate) struct HandlerSlot(RwLock<Option<Weak<dyn BrokerHandler>>>);

impl HandlerSlot {
    /// Stores the handler ([`Broker::set_handler`]).
    pub(crate) fn set(&self, handler: Weak<dyn BrokerHandler>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handler);
    }

    /// The handler, while the hub is alive.
    pub(crate) fn get(&self) -> Option<Arc<dyn BrokerHandler>> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(Weak::upgrade)
    }
}

/// Storage and inter-node fan-out behind the hub. See the module docs for the contract.
pub trait Broker: Send + Sync + 'static {
    /// Registers the node's handler (called once by [`crate::Hub::new`]). The broker keeps a
    /// weak reference: the hub owns the broker, not the other way round.
    fn set_handler(&self, handler: Weak<dyn BrokerHandler>);

    /// Starts delivering `channel`'s publications and join/leave messages to this node. Must
    /// be in effect when the future resolves. Idempotent.
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Stops delivering `channel` to this node. Idempotent.
    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Numbers, stores (per `options.history`) and fans out a publication. `publication.offset`
    /// and `epoch` are set by the broker.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: proto::Publication,
        options: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<PublishOutcome, BrokerError>>;

    /// Fans out a join message.
    fn publish_join<'a>(
        &'a self,
        channel: &'a str,
        info: proto::ClientInfo,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Fans out a leave message.
    fn publish_leave<'a>(
        &'a self,
        channel: &'a str,
        info: proto::ClientInfo,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Sends a control command to every node (including this one).
    fn publish_control(&self, control: Control) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Reads history (creating the stream if absent, see the contract).
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
        retention: &'a HistoryRetention,
    ) -> BoxFuture<'a, Result<HistoryPage, BrokerError>>;

    /// Drops the stored publications of a channel, keeping its position.
    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Adds or refreshes a presence entry for `ttl`.
    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: proto::ClientInfo,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Removes a presence entry.
    fn remove_presence<'a>(
        &'a self,
        channel: &'a str,
        client_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Current presence of a channel: client id → info.
    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, proto::ClientInfo>, BrokerError>>;

    /// Presence counts of a channel.
    fn presence_stats<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<PresenceStats, BrokerError>>;

    /// Cluster-wide counts, for what must be reported once for the whole cluster (webhooks:
    /// a channel occupied or vacated, a member added or removed). `node` changes its count of
    /// `key` by `delta`; the answer is whether the cluster-wide total crossed zero with this
    /// change (from 0 for a positive delta, to 0 for a negative one): the one caller that gets
    /// `true` reports the event.
    fn count<'a>(
        &'a self,
        key: &'a str,
        node: &'a str,
        delta: i64,
    ) -> BoxFuture<'a, Result<bool, BrokerError>>;

    /// Declares `node` alive for `ttl` (its counts survive only while it keeps doing so).
    fn heartbeat<'a>(
        &'a self,
        node: &'a str,
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let _ = (node, ttl);
        Box::pin(async { Ok(()) })
    }

    /// Drops the counts of nodes whose heartbeat ran out; the keys whose totals fell to zero
    /// that way, each returned to exactly one caller in the cluster.
    fn sweep_counts(&self) -> BoxFuture<'_, Result<Vec<String>, BrokerError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Periodic housekeeping (expiry sweeps), called from [`crate::Hub::maintain`].
    fn maintain(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Whether the backend is reachable right now (an embedded broker always is). A networked
    /// broker reports its outages here (see [`crate::RedisBroker::health`]); the hub exposes it
    /// as [`crate::Hub::broker_healthy`] for health checks.
    fn is_healthy(&self) -> bool {
        true
    }
}
