//! [`Hub`]: the one API every transport calls (its state is [`HubInner`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use switchboard_proto::v1 as proto;

use crate::auth::{Identity, JwtVerifier};
use crate::broker::{Broker, BrokerHandler, Control};
use crate::budget::PublishRates;
use crate::bus::{Bus, BusHandler};
use crate::channel::validate_channel;
use crate::clock::{Clock, SystemClock};
use crate::codes;
use crate::config::HubConfig;
use crate::error::{AuthFailure, ConfigError, HubError};
use crate::inner::HubInner;
use crate::memory::MemoryBroker;
use crate::queue::PushQueue;
use crate::rooms::SignalHub;
use crate::session::Session;
use crate::state::{ChannelShard, Registry, SessionShared, SubState};
use crate::util::{lock, random_hex};

const CHANNEL_SHARDS: usize = 32;

/// The transport-free real-time hub. Cheap to clone (shared state).
///
/// Transports call [`Hub::connect`] to get a [`Session`], then feed it commands and forward
/// its pushes. Application servers use the server API methods (`publish`, `broadcast`,
/// `presence`, `history`, `disconnect_user`, ...), which bypass client permissions. Call
/// [`Hub::maintain`] periodically (every [`Hub::maintenance_interval`]).
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("uid", &self.inner.uid)
            .finish_non_exhaustive()
    }
}

/// Options of a server-API publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerPublish {
    /// Deduplication key (empty = none).
    pub idempotency_key: String,
    /// Tags copied into the publication.
    pub tags: HashMap<String, String>,
}

impl Hub {
    /// A hub over `broker`, reading time from `clock`. Validates `config` and loads JWT keys.
    ///
    /// A [`MemoryBroker`] takes its memory bounds when it is built: use
    /// [`MemoryBroker::with_limits`] with [`crate::MemoryLimits::from_config`] (as
    /// [`Hub::with_memory_broker`] does) so `history_memory_mib` and `limits.max_channels`
    /// apply; [`MemoryBroker::new`] uses the defaults.
    pub fn new(
        config: HubConfig,
        broker: Arc<dyn Broker>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let verifier = JwtVerifier::from_config(&config.jwt)?;
        let started_ms = clock.now_millis();
        let signal = SignalHub::new(
            started_ms,
            &config.rooms,
            Arc::clone(&broker),
            Arc::clone(&clock),
            config.presence_ttl(),
        );
        let publish_rates = PublishRates::new(&config.limits);
        let inner = Arc::new_cyclic(|me| HubInner {
            me: me.clone(),
            config,
            verifier,
            broker: Arc::clone(&broker),
            clock,
            uid: random_hex(8),
            started_ms,
            registry: Mutex::new(Registry::default()),
            shards: (0..CHANNEL_SHARDS)
                .map(|_| ChannelShard {
                    interest: tokio::sync::Mutex::new(()),
                    channels: Mutex::new(HashMap::new()),
                })
                .collect(),
            pending: Mutex::new(Vec::new()),
            signal,
            bus: Bus::default(),
            publish_rates,
            channel_count: AtomicUsize::new(0),
            observer: std::sync::OnceLock::new(),
        });
        let weak: Weak<HubInner> = Arc::downgrade(&inner);
        let handler: Weak<dyn BrokerHandler> = weak;
        broker.set_handler(handler);
        Ok(Self { inner })
    }

    /// A hub with the embedded [`MemoryBroker`] (bounded by `config`'s `history_memory_mib`
    /// and `limits.max_channels`) and the system clock.
    pub fn with_memory_broker(config: HubConfig) -> Result<Self, ConfigError> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let limits = crate::memory::MemoryLimits::from_config(&config);
        let broker = Arc::new(MemoryBroker::with_limits(Arc::clone(&clock), limits));
        Self::new(config, broker, clock)
    }

    /// The configuration in force.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// How often to call [`Hub::maintain`]: a third of the presence TTL.
    pub fn maintenance_interval(&self) -> std::time::Duration {
        self.inner.config.presence_ttl() / 3
    }

    /// Authenticates a connection and registers its session. `request.token` is the JWT
    /// (empty = anonymous); `transport` names the transport for info and metrics.
    ///
    /// Errors: 101 unauthorized, 109 token expired, 114/115 connection limits. On error,
    /// [`HubError::connect_disconnect`] says whether to close the connection and with what.
    pub fn connect(
        &self,
        request: &proto::ConnectRequest,
        transport: &str,
    ) -> Result<Session, HubError> {
        self.connect_from(request, transport, None)
    }

    /// The user a token names (empty for an anonymous client), checked as [`Hub::connect`]
    /// checks it, without registering a session: for requests that only need to know who asks
    /// (ICE credentials), so they are not counted as hub connections.
    ///
    /// Errors: 101 unauthorized (anonymous clients too when they are not allowed), 109 token
    /// expired.
    pub fn authenticate(&self, token: &str) -> Result<String, HubError> {
        let inner = &self.inner;
        if token.is_empty() {
            return if inner.config.allow_anonymous {
                Ok(String::new())
            } else {
                Err(HubError::Unauthorized(AuthFailure::AnonymousNotAllowed))
            };
        }
        let now_secs = inner.clock.now_millis() / 1000;
        let identity = inner.verifier.verify(token, now_secs).inspect_err(|e| {
            if let HubError::Unauthorized(f) = e {
                metrics::counter!(crate::metric::AUTH_FAILURES_TOTAL, "reason" => f.as_str())
                    .increment(1);
            }
        })?;
        if identity.user.is_empty() && !inner.config.allow_anonymous {
            return Err(HubError::Unauthorized(AuthFailure::AnonymousNotAllowed));
        }
        Ok(identity.user)
    }

    /// [`Hub::connect`] for a client at `peer`: anonymous sessions then share a publish budget
    /// per client address (IPv6: per /64) instead of one budget for every anonymous session of
    /// the node, so one anonymous abuser cannot starve the others.
    pub fn connect_from(
        &self,
        request: &proto::ConnectRequest,
        transport: &str,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Session, HubError> {
        let inner = &self.inner;
        let now_secs = inner.clock.now_millis() / 1000;
        let identity = if request.token.is_empty() {
            Identity::anonymous()
        } else {
            inner
                .verifier
                .verify(&request.token, now_secs)
                .inspect_err(|e| {
                    if let HubError::Unauthorized(f) = e {
                        metrics::counter!(crate::metric::AUTH_FAILURES_TOTAL, "reason" => f.as_str())
                            .increment(1);
                    }
                })?
        };
        if identity.user.is_empty() && !inner.config.allow_anonymous {
            return Err(HubError::Unauthorized(AuthFailure::AnonymousNotAllowed));
        }
        self.connect_identity(identity, &request.name, &request.version, transport, peer)
    }

    /// Registers a session for an identity the caller established itself (another protocol's
    /// authentication, such as Pusher's signed channel subscriptions): no token is checked and
    /// an empty user is accepted whatever `allow_anonymous` says. The connection limits apply.
    pub fn connect_identity(
        &self,
        identity: Identity,
        name: &str,
        version: &str,
        transport: &str,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Session, HubError> {
        let inner = &self.inner;
        let anonymous = identity.user.is_empty();
        let limits = &inner.config.limits;
        let now_ms = inner.clock.now_millis();
        let publisher = match peer {
            Some(ip) if anonymous => anonymous_publisher(ip),
            _ => identity.user.clone(),
        };
        let publish_budget = Arc::clone(
            lock(&inner.registry)
                .publishers
                .entry(publisher)
                .or_insert_with(|| Arc::new(Mutex::new(inner.publish_rates.budget(now_ms)))),
        );
        let shared = Arc::new(SessionShared {
            info: proto::ClientInfo {
                user: identity.user.clone(),
                client_id: random_hex(16),
                conn_info: identity.info,
            },
            anonymous,
            channels: identity.channels,
            expires_at: identity.expires_at,
            transport: transport.to_owned(),
            client_name: name.to_owned(),
            client_version: version.to_owned(),
            queue: PushQueue::new(limits.queue_max_messages, limits.queue_max_bytes),
            subscriptions: Mutex::new(HashSet::new()),
            rooms: Mutex::new(HashMap::new()),
            signal_budget: Mutex::new(inner.signal.budget(now_ms)),
            publish_budget,
        });
        {
            let mut reg = lock(&inner.registry);
            if reg.sessions.len() >= limits.max_connections {
                return Err(HubError::ConnectionLimit);
            }
            if !anonymous
                && limits.max_connections_per_user > 0
                && reg.users.get(&identity.user).map_or(0, HashSet::len)
                    >= limits.max_connections_per_user
            {
                return Err(HubError::UserConnectionLimit);
            }
            reg.sessions
                .insert(shared.client_id().to_owned(), Arc::clone(&shared));
            if !anonymous {
                reg.users
                    .entry(identity.user)
                    .or_default()
                    .insert(shared.client_id().to_owned());
            }
            metrics::gauge!(crate::metric::CONNECTIONS).set(reg.sessions.len() as f64);
        }
        metrics::counter!(crate::metric::CONNECTS_TOTAL, "transport" => transport.to_owned())
            .increment(1);
        Ok(Session {
            shared,
            hub: Arc::clone(inner),
            released: AtomicBool::new(false),
        })
    }

    // ---- server API (bypasses client permissions) ----

    /// Publishes into a channel as the server.
    pub async fn publish(
        &self,
        channel: &str,
        data: Vec<u8>,
        options: ServerPublish,
    ) -> Result<proto::PublishResult, HubError> {
        let ns = self.inner.namespace(channel)?;
        self.inner
            .publish(
                channel,
                ns,
                data,
                None,
                &options.idempotency_key,
                options.tags,
            )
            .await
    }

    /// Publishes the same data into several channels; one result per channel, in order.
    pub async fn broadcast(
        &self,
        channels: &[String],
        data: &[u8],
        options: ServerPublish,
    ) -> Vec<Result<proto::PublishResult, HubError>> {
        let mut results = Vec::with_capacity(channels.len());
        for channel in channels {
            results.push(self.publish(channel, data.to_vec(), options.clone()).await);
        }
        results
    }

    /// Presence of a channel (108 when the namespace has presence off).
    pub async fn presence(&self, channel: &str) -> Result<proto::PresenceResult, HubError> {
        let ns = self.inner.namespace(channel)?;
        self.inner.presence(channel, ns).await
    }

    /// Presence counts of a channel.
    pub async fn presence_stats(
        &self,
        channel: &str,
    ) -> Result<proto::PresenceStatsResult, HubError> {
        let ns = self.inner.namespace(channel)?;
        self.inner.presence_stats(channel, ns).await
    }

    /// Reads channel history (108 when the namespace keeps none).
    pub async fn history(
        &self,
        request: &proto::HistoryRequest,
    ) -> Result<proto::HistoryResult, HubError> {
        let ns = self.inner.namespace(&request.channel)?;
        self.inner.history(request, ns).await
    }

    /// Drops a channel's stored publications (the position is kept).
    pub async fn history_remove(&self, channel: &str) -> Result<(), HubError> {
        let ns = self.inner.namespace(channel)?;
        if !ns.history_enabled() {
            return Err(HubError::NotAvailable);
        }
        Ok(self.inner.broker.remove_history(channel).await?)
    }

    /// Disconnects every connection of `user` (or just `client_id`) on every node. Default
    /// disconnect: 3503 "force disconnect", no reconnect.
    pub async fn disconnect_user(
        &self,
        user: &str,
        client_id: Option<&str>,
        disconnect: Option<proto::Disconnect>,
    ) -> Result<(), HubError> {
        let disconnect = disconnect
            .filter(|d| d.code != 0)
            .unwrap_or_else(|| codes::disconnect_message(codes::disconnect::FORCE_DISCONNECT));
        let control = Control::DisconnectUser {
            user: user.to_owned(),
            client_id: client_id.map(str::to_owned),
            disconnect,
        };
        Ok(self.inner.broker.publish_control(control).await?)
    }

    /// Unsubscribes every connection of `user` (or just `client_id`) from `channel` on every
    /// node; they get an unsubscribe push with code 2000.
    pub async fn unsubscribe_user(
        &self,
        user: &str,
        channel: &str,
        client_id: Option<&str>,
    ) -> Result<(), HubError> {
        validate_channel(channel, self.inner.config.limits.max_channel_length)?;
        let control = Control::UnsubscribeUser {
            user: user.to_owned(),
            channel: channel.to_owned(),
            client_id: client_id.map(str::to_owned),
        };
        Ok(self.inner.broker.publish_control(control).await?)
    }

    /// Changes this node's cluster-wide count of `key` by `delta`; true when the cluster total
    /// crossed zero with it (see [`crate::Broker::count`]): report the event then.
    pub async fn cluster_count(&self, key: &str, delta: i64) -> Result<bool, HubError> {
        Ok(self.inner.broker.count(key, &self.inner.uid, delta).await?)
    }

    /// Keeps this node's cluster-wide counts alive for `ttl`.
    pub async fn cluster_heartbeat(&self, ttl: std::time::Duration) -> Result<(), HubError> {
        Ok(self.inner.broker.heartbeat(&self.inner.uid, ttl).await?)
    }

    /// Drops the counts of nodes that stopped heartbeating; the keys that fell to zero that
    /// way (each handed to one node of the cluster).
    pub async fn cluster_sweep(&self) -> Result<Vec<String>, HubError> {
        Ok(self.inner.broker.sweep_counts().await?)
    }

    /// Sets the observer of this node's channel and session events (once; later calls are
    /// ignored). It is called under the hub's locks: it must only queue the event.
    pub fn observe(&self, observer: crate::NodeObserver) {
        let _ = self.inner.observer.set(observer);
    }

    /// The channels with subscribers on this node whose name matches `pattern` (`*` matches
    /// any run of characters; empty matches all), with their subscriber counts, by name.
    /// Internal channels (`$…`) are never listed.
    pub fn channels(&self, pattern: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            let chans = lock(&shard.channels);
            for (name, cs) in chans.iter() {
                if cs.subs.is_empty() || name.starts_with('$') || !glob(pattern, name) {
                    continue;
                }
                out.push((
                    name.clone(),
                    u32::try_from(cs.subs.len()).unwrap_or(u32::MAX),
                ));
            }
        }
        out.sort();
        out
    }

    /// This node's counters.
    pub fn info(&self) -> proto::NodeInfo {
        let inner = &self.inner;
        let (num_clients, num_users) = {
            let reg = lock(&inner.registry);
            (reg.sessions.len(), reg.users.len())
        };
        let (mut num_channels, mut num_subs) = (0usize, 0usize);
        for shard in inner.shards.iter() {
            let chans = lock(&shard.channels);
            for cs in chans.values().filter(|cs| !cs.subs.is_empty()) {
                num_channels += 1;
                num_subs += cs.subs.len();
            }
        }
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        proto::NodeInfo {
            uid: inner.uid.clone(),
            name: inner.config.node_name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            num_clients: count(num_clients),
            num_users: count(num_users),
            num_channels: count(num_channels),
            num_subs: count(num_subs),
            uptime: inner.clock.now_millis().saturating_sub(inner.started_ms) / 1000,
        }
    }

    /// Housekeeping, to call every [`Hub::maintenance_interval`]: refreshes presence of live
    /// subscriptions, finishes cleanups that could not be spawned (no runtime at drop time),
    /// drops node interest in channels left without subscribers, removes signaling-room peers
    /// silent longer than the room timeout, and lets the broker sweep expired entries.
    pub async fn maintain(&self) {
        let inner = &self.inner;
        inner.forget_idle_publishers();
        inner.signal.room_maintain().await;
        let pending = std::mem::take(&mut *lock(&inner.pending));
        for cleanup in pending {
            inner.run_cleanup(cleanup).await;
        }
        let mut refresh = Vec::new();
        let mut idle = Vec::new();
        for shard in inner.shards.iter() {
            let chans = lock(&shard.channels);
            for (channel, cs) in chans.iter() {
                if cs.subs.is_empty() {
                    idle.push(channel.clone());
                }
                for sub in cs.subs.values() {
                    if sub.presence && matches!(sub.state, SubState::Live(_)) {
                        refresh.push((channel.clone(), sub.session.info.clone()));
                    }
                }
            }
        }
        let ttl = inner.config.presence_ttl();
        for (channel, info) in refresh {
            if inner
                .broker
                .add_presence(&channel, info, ttl)
                .await
                .is_err()
            {
                metrics::counter!(crate::metric::BROKER_ERRORS_TOTAL).increment(1);
            }
        }
        for channel in idle {
            inner.release_interest(&channel).await;
        }
        inner.broker.maintain().await;
    }

    /// Whether the broker's backend is reachable (always true with the [`MemoryBroker`]; with
    /// a [`crate::RedisBroker`], false while Redis is unreachable). For health checks.
    pub fn broker_healthy(&self) -> bool {
        self.inner.broker.is_healthy()
    }

    /// Number of WebRTC signaling rooms on this node.
    pub fn room_count(&self) -> usize {
        self.inner.signal.room_count()
    }

    /// Number of connections on this node.
    pub fn connection_count(&self) -> usize {
        lock(&self.inner.registry).sessions.len()
    }

    /// Sends `data` to every node subscribed to `topic` (this one included), and keeps it for
    /// `keep` so nodes subscribing later get it from [`Hub::bus_subscribe`].
    pub async fn bus_publish(
        &self,
        topic: &str,
        data: Vec<u8>,
        keep: Duration,
    ) -> Result<(), HubError> {
        self.inner
            .bus
            .publish(&*self.inner.broker, topic, data, keep)
            .await
    }

    /// Subscribes this node to `topic`: `handler` gets every message published from now on
    /// (on any node); the messages still kept (oldest first) are returned. A message published
    /// while this call runs may be both returned and handled: handlers must be idempotent.
    pub async fn bus_subscribe(
        &self,
        topic: &str,
        keep: Duration,
        handler: BusHandler,
    ) -> Result<Vec<Vec<u8>>, HubError> {
        self.inner
            .bus
            .subscribe(&*self.inner.broker, topic, keep, handler)
            .await
    }
}

/// The publish-budget key of anonymous clients at `ip`: a NUL prefix no user id carries, and
/// the address (IPv6 by its /64, IPv4-mapped as IPv4).
fn anonymous_publisher(ip: std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V4(a) => format!("\0anonymous {a}"),
        std::net::IpAddr::V6(a) => {
            let s = a.segments();
            format!(
                "\0anonymous {:x}:{:x}:{:x}:{:x}::/64",
                s[0], s[1], s[2], s[3]
            )
        }
    }
}

/// `*`-only glob matching (no other metacharacters), empty pattern = everything.
fn glob(pattern: &str, name: &str) -> bool {
    if pattern.is_empty() {
        return true;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod glob_tests {
    #[test]
    fn star_globs() {
        use super::glob;
        assert!(glob("", "x"));
        assert!(glob("news", "news"));
        assert!(!glob("news", "news2"));
        assert!(glob("chat:*", "chat:room"));
        assert!(glob("*room*", "chat:room:1"));
        assert!(!glob("a*b*c", "acb"));
    }
}
