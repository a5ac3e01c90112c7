//! [`Hub`]: the one API every transport calls, and its shared state.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use switchboard_proto::v1 as proto;

use crate::auth::{Identity, JwtVerifier};
use crate::broker::{BoxFuture, Broker, BrokerHandler, Control, HistoryQuery, PublishOptions};
use crate::budget::{PublishBudget, PublishRates};
use crate::channel::{namespace_of, validate_channel, ChannelPattern};
use crate::clock::{Clock, SystemClock};
use crate::codes;
use crate::config::{HubConfig, NamespaceOptions};
use crate::error::{AuthFailure, ConfigError, HubError, Limit};
use crate::memory::MemoryBroker;
use crate::queue::{Offer, PushQueue};
use crate::rooms::{SignalHub, ROOM_PREFIX};
use crate::session::Session;
use crate::util::{lock, random_hex, shard_of};

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

pub(crate) struct HubInner {
    pub(crate) me: Weak<HubInner>,
    pub(crate) config: HubConfig,
    verifier: JwtVerifier,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) clock: Arc<dyn Clock>,
    uid: String,
    started_ms: u64,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) shards: Box<[ChannelShard]>,
    pending: Mutex<Vec<Cleanup>>,
    /// WebRTC signaling rooms.
    pub(crate) signal: SignalHub,
    /// Internal node-to-node topics.
    pub(crate) bus: crate::bus::Bus,
    /// The client publish budgets' rates.
    pub(crate) publish_rates: PublishRates,
    /// Entries of every shard's `channels` (bounded by `limits.max_channels`).
    channel_count: AtomicUsize,
}

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) sessions: HashMap<String, Arc<SessionShared>>,
    /// Non-anonymous user → client ids.
    pub(crate) users: HashMap<String, HashSet<String>>,
    /// Publish budgets: per user, `""` for all anonymous connections together. Shared by the
    /// publisher's sessions; kept after the last one ends until the budget is full again, so
    /// reconnecting (or one-request HTTP publishes) does not refill it.
    pub(crate) publishers: HashMap<String, Arc<Mutex<PublishBudget>>>,
}

pub(crate) struct ChannelShard {
    /// Serializes broker subscribe/unsubscribe of this shard's channels with the
    /// "first subscriber / last subscriber" decisions.
    pub(crate) interest: tokio::sync::Mutex<()>,
    pub(crate) channels: Mutex<HashMap<String, ChannelSubs>>,
}

#[derive(Default)]
pub(crate) struct ChannelSubs {
    pub(crate) broker_subscribed: bool,
    pub(crate) subs: HashMap<String, Subscriber>,
}

pub(crate) struct Subscriber {
    pub(crate) session: Arc<SessionShared>,
    pub(crate) state: SubState,
    /// A presence entry was (or is being) added.
    pub(crate) presence: bool,
    /// A join was (or is being) published.
    pub(crate) joined: bool,
}

pub(crate) enum SubState {
    /// Subscribing: deliveries are buffered until the history position is known.
    Pending(Vec<Arc<proto::Push>>),
    /// Delivering; with history, the last delivered position (for dedupe and gap detection).
    Live(Option<proto::StreamPosition>),
}

/// What is left to do (on the broker) after a subscription ended.
pub(crate) enum Cleanup {
    Unsubscribed {
        channel: String,
        info: proto::ClientInfo,
        presence: bool,
        leave: bool,
    },
    /// A peer of a closed session left its signaling room.
    RoomLeft {
        room: String,
        peer: String,
        user: String,
    },
}

/// Per-connection state shared between the [`Session`] handle and the hub's indexes.
pub(crate) struct SessionShared {
    pub(crate) info: proto::ClientInfo,
    pub(crate) anonymous: bool,
    pub(crate) channels: Option<Vec<ChannelPattern>>,
    pub(crate) expires_at: Option<u64>,
    pub(crate) transport: String,
    pub(crate) client_name: String,
    pub(crate) client_version: String,
    pub(crate) queue: PushQueue,
    /// Channels subscribed or being subscribed.
    pub(crate) subscriptions: Mutex<HashSet<String>>,
    /// Signaling rooms joined: room → peer id.
    pub(crate) rooms: Mutex<HashMap<String, String>>,
    /// Rate limit of the session's signaling commands.
    pub(crate) signal_budget: Mutex<crate::budget::TokenBucket>,
    /// The publish budget of the session's publisher (its user, or every anonymous session).
    pub(crate) publish_budget: Arc<Mutex<PublishBudget>>,
}

impl SessionShared {
    pub(crate) fn client_id(&self) -> &str {
        &self.info.client_id
    }

    pub(crate) fn ensure_open(&self) -> Result<(), HubError> {
        if self.queue.is_closed() {
            return Err(HubError::SessionClosed);
        }
        Ok(())
    }

    pub(crate) fn token_allows(&self, channel: &str) -> bool {
        self.channels
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| p.matches(channel)))
    }

    /// Whether namespace options and token claims let this session subscribe to `channel`
    /// (also the permission to join the signaling room of that name).
    pub(crate) fn may_subscribe(&self, ns: &NamespaceOptions, channel: &str) -> bool {
        if self.anonymous && !ns.allow_subscribe_for_anonymous {
            return false;
        }
        match &self.channels {
            Some(patterns) => patterns.iter().any(|p| p.matches(channel)),
            None => ns.allow_subscribe_for_client,
        }
    }

    pub(crate) fn is_subscribed(&self, channel: &str) -> bool {
        lock(&self.subscriptions).contains(channel)
    }
}

/// Outcome of handing one push to one subscriber.
#[derive(PartialEq, Eq)]
pub(crate) enum Delivery {
    Done,
    /// A gap or epoch change: the subscription must end with "insufficient state".
    Gap,
}

pub(crate) fn publication_push(p: proto::Publication) -> Arc<proto::Push> {
    Arc::new(proto::Push {
        push: Some(proto::push::Push::Publication(p)),
    })
}

pub(crate) fn unsubscribe_push(channel: &str, code: u32, reason: &str) -> Arc<proto::Push> {
    Arc::new(proto::Push {
        push: Some(proto::push::Push::Unsubscribe(proto::Unsubscribe {
            channel: channel.to_owned(),
            code,
            reason: reason.to_owned(),
        })),
    })
}

impl Subscriber {
    pub(crate) fn pending(session: Arc<SessionShared>) -> Self {
        Self {
            session,
            state: SubState::Pending(Vec::new()),
            presence: false,
            joined: false,
        }
    }

    /// Buffers (while pending) or queues `push`, deduping and gap-checking publications.
    pub(crate) fn deliver(&mut self, push: &Arc<proto::Push>) -> Delivery {
        match &mut self.state {
            SubState::Pending(buffer) => {
                if buffer.len() >= self.session.queue.max_messages() {
                    buffer.clear();
                    if self.session.queue.close(
                        codes::disconnect_message(codes::disconnect::SLOW_CONSUMER),
                        true,
                    ) {
                        metrics::counter!(crate::metric::SLOW_CONSUMER_DISCONNECTS_TOTAL)
                            .increment(1);
                    }
                } else {
                    buffer.push(Arc::clone(push));
                }
                Delivery::Done
            }
            SubState::Live(track) => {
                if let (Some(proto::push::Push::Publication(p)), Some(last)) = (&push.push, track) {
                    if p.offset > 0 {
                        if p.epoch != last.epoch || p.offset > last.offset.saturating_add(1) {
                            return Delivery::Gap;
                        }
                        if p.offset <= last.offset {
                            return Delivery::Done; // duplicate
                        }
                        last.offset = p.offset;
                    }
                }
                if self.session.queue.offer(Arc::clone(push)) == Offer::Overflow {
                    metrics::counter!(crate::metric::SLOW_CONSUMER_DISCONNECTS_TOTAL).increment(1);
                }
                Delivery::Done
            }
        }
    }
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
        let signal = SignalHub::new(started_ms, &config.rooms);
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
            bus: crate::bus::Bus::default(),
            publish_rates,
            channel_count: AtomicUsize::new(0),
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
        let anonymous = identity.user.is_empty();
        if anonymous && !inner.config.allow_anonymous {
            return Err(HubError::Unauthorized(AuthFailure::AnonymousNotAllowed));
        }
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
            client_name: request.name.clone(),
            client_version: request.version.clone(),
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
        inner.room_maintain().await;
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

impl HubInner {
    /// Drops the publish budgets no session holds that are full again.
    fn forget_idle_publishers(&self) {
        let now = self.clock.now_millis();
        let rates = &self.publish_rates;
        lock(&self.registry)
            .publishers
            .retain(|_, b| Arc::strong_count(b) > 1 || !rates.is_full(b, now));
    }

    /// Counts one more channel in the shards' `channels` maps; false (nothing counted) when
    /// the node holds `limits.max_channels` already.
    pub(crate) fn reserve_channel(&self) -> bool {
        let max = self.config.limits.max_channels;
        if self.channel_count.fetch_add(1, Ordering::Relaxed) >= max {
            self.channel_count.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!(crate::metric::REFUSED_TOTAL, "reason" => Limit::NodeChannels.reason())
                .increment(1);
            return false;
        }
        true
    }

    /// Checks what every publish must satisfy (size, idempotency key), before anything is
    /// spent on it.
    pub(crate) fn check_publication(
        &self,
        data: &[u8],
        idempotency_key: &str,
    ) -> Result<(), HubError> {
        let limits = &self.config.limits;
        if data.len() > limits.max_message_size {
            return Err(HubError::MessageTooLarge {
                size: data.len(),
                max: limits.max_message_size,
            });
        }
        if idempotency_key.len() > limits.max_idempotency_key_length {
            return Err(HubError::BadRequest("idempotency key too long"));
        }
        Ok(())
    }

    /// Spends one client publication of `size` bytes from `session`'s publisher budget (111
    /// when it is short, counted by reason).
    pub(crate) fn spend_publish_budget(
        &self,
        session: &SessionShared,
        size: usize,
    ) -> Result<(), HubError> {
        let now = self.clock.now_millis();
        self.publish_rates
            .spend(&session.publish_budget, now, size)
            .inspect_err(|e| {
                if let HubError::Limit(limit) = e {
                    metrics::counter!(crate::metric::REFUSED_TOTAL, "reason" => limit.reason())
                        .increment(1);
                }
            })
    }

    pub(crate) fn shard(&self, channel: &str) -> &ChannelShard {
        &self.shards[shard_of(channel, self.shards.len())]
    }

    /// Validates `channel` and returns its namespace options.
    pub(crate) fn namespace(&self, channel: &str) -> Result<&NamespaceOptions, HubError> {
        validate_channel(channel, self.config.limits.max_channel_length)?;
        match namespace_of(channel) {
            None => Ok(&self.config.default_namespace),
            Some(ns) => self
                .config
                .namespaces
                .get(ns)
                .ok_or(HubError::UnknownChannel),
        }
    }

    pub(crate) async fn publish(
        &self,
        channel: &str,
        ns: &NamespaceOptions,
        data: Vec<u8>,
        info: Option<proto::ClientInfo>,
        idempotency_key: &str,
        tags: HashMap<String, String>,
    ) -> Result<proto::PublishResult, HubError> {
        self.check_publication(&data, idempotency_key)?;
        let publication = proto::Publication {
            channel: channel.to_owned(),
            offset: 0,
            epoch: String::new(),
            data,
            info,
            tags,
        };
        let options = PublishOptions {
            history: ns.retention(),
            idempotency_key: (!idempotency_key.is_empty()).then(|| idempotency_key.to_owned()),
            idempotency_window: self.config.idempotency_window(),
        };
        let outcome = self.broker.publish(channel, publication, &options).await?;
        if !outcome.suppressed {
            metrics::counter!(crate::metric::PUBLICATIONS_TOTAL).increment(1);
        }
        Ok(proto::PublishResult {
            offset: outcome.position.offset,
            epoch: outcome.position.epoch,
        })
    }

    pub(crate) async fn presence(
        &self,
        channel: &str,
        ns: &NamespaceOptions,
    ) -> Result<proto::PresenceResult, HubError> {
        if !ns.presence {
            return Err(HubError::NotAvailable);
        }
        Ok(proto::PresenceResult {
            presence: self.broker.presence(channel).await?,
        })
    }

    pub(crate) async fn presence_stats(
        &self,
        channel: &str,
        ns: &NamespaceOptions,
    ) -> Result<proto::PresenceStatsResult, HubError> {
        if !ns.presence {
            return Err(HubError::NotAvailable);
        }
        let stats = self.broker.presence_stats(channel).await?;
        Ok(proto::PresenceStatsResult {
            num_clients: stats.clients,
            num_users: stats.users,
        })
    }

    pub(crate) async fn history(
        &self,
        request: &proto::HistoryRequest,
        ns: &NamespaceOptions,
    ) -> Result<proto::HistoryResult, HubError> {
        if !ns.history_enabled() {
            return Err(HubError::NotAvailable);
        }
        let retention = ns.retention();
        let limit = usize::try_from(request.limit)
            .unwrap_or(usize::MAX)
            .min(ns.history_size);
        let query = HistoryQuery {
            since: request.since.clone(),
            limit: Some(limit),
            reverse: request.reverse,
        };
        let page = self
            .broker
            .history(&request.channel, query, &retention)
            .await?;
        if let Some(since) = &request.since {
            if since.epoch != page.position.epoch {
                return Err(HubError::UnrecoverablePosition);
            }
        }
        Ok(proto::HistoryResult {
            publications: page.publications,
            offset: page.position.offset,
            epoch: page.position.epoch,
        })
    }

    /// Runs `cleanup` in the background when a tokio runtime is available, else queues it for
    /// [`Hub::maintain`].
    pub(crate) fn schedule(&self, cleanup: Cleanup) {
        match (tokio::runtime::Handle::try_current(), self.me.upgrade()) {
            (Ok(handle), Some(me)) => {
                handle.spawn(async move { me.run_cleanup(cleanup).await });
            }
            _ => lock(&self.pending).push(cleanup),
        }
    }

    pub(crate) async fn run_cleanup(&self, cleanup: Cleanup) {
        let (channel, info, presence, leave) = match cleanup {
            Cleanup::Unsubscribed {
                channel,
                info,
                presence,
                leave,
            } => (channel, info, presence, leave),
            Cleanup::RoomLeft { room, peer, user } => {
                self.room_left(&room, &peer, &user, false).await;
                return;
            }
        };
        if presence
            && self
                .broker
                .remove_presence(&channel, &info.client_id)
                .await
                .is_err()
        {
            metrics::counter!(crate::metric::BROKER_ERRORS_TOTAL).increment(1);
        }
        if leave && self.broker.publish_leave(&channel, info).await.is_err() {
            metrics::counter!(crate::metric::BROKER_ERRORS_TOTAL).increment(1);
        }
        self.release_interest(&channel).await;
    }

    /// Drops the node's broker subscription to `channel` if it has no subscribers left.
    pub(crate) async fn release_interest(&self, channel: &str) {
        let shard = self.shard(channel);
        let _guard = shard.interest.lock().await;
        let subscribed = {
            let mut chans = lock(&shard.channels);
            match chans.get(channel) {
                Some(cs) if cs.subs.is_empty() => {
                    let was = cs.broker_subscribed;
                    chans.remove(channel);
                    self.channel_count.fetch_sub(1, Ordering::Relaxed);
                    was
                }
                _ => false,
            }
        };
        if subscribed && self.broker.unsubscribe(channel).await.is_err() {
            metrics::counter!(crate::metric::BROKER_ERRORS_TOTAL).increment(1);
        }
    }

    /// Ends a subscription from inside a channel lock: the session is told with an unsubscribe
    /// push and the broker-side cleanup is scheduled.
    pub(crate) fn kick(&self, channel: &str, sub: Subscriber, code: u32, reason: &str) {
        lock(&sub.session.subscriptions).remove(channel);
        sub.session
            .queue
            .offer(unsubscribe_push(channel, code, reason));
        self.schedule(Cleanup::Unsubscribed {
            channel: channel.to_owned(),
            info: sub.session.info.clone(),
            presence: sub.presence,
            leave: sub.joined,
        });
    }

    /// Hands `push` to every subscriber of `channel` on this node.
    fn fan_out(&self, channel: &str, push: &Arc<proto::Push>) {
        let shard = self.shard(channel);
        let mut chans = lock(&shard.channels);
        let Some(cs) = chans.get_mut(channel) else {
            return;
        };
        let gaps: Vec<String> = cs
            .subs
            .iter_mut()
            .filter_map(|(id, sub)| (sub.deliver(push) == Delivery::Gap).then(|| id.clone()))
            .collect();
        for id in gaps {
            if let Some(sub) = cs.subs.remove(&id) {
                metrics::counter!(crate::metric::INSUFFICIENT_STATE_TOTAL).increment(1);
                self.kick(
                    channel,
                    sub,
                    codes::unsubscribe::INSUFFICIENT_STATE,
                    "insufficient state",
                );
            }
        }
    }

    /// Local sessions of `user` (only `client_id` when set).
    fn user_sessions(&self, user: &str, client_id: Option<&str>) -> Vec<Arc<SessionShared>> {
        let reg = lock(&self.registry);
        let Some(ids) = reg.users.get(user) else {
            return Vec::new();
        };
        ids.iter()
            .filter(|id| client_id.is_none_or(|c| c == id.as_str()))
            .filter_map(|id| reg.sessions.get(id).cloned())
            .collect()
    }

    async fn handle_control(&self, control: Control) {
        match control {
            Control::DisconnectUser {
                user,
                client_id,
                disconnect,
            } => {
                for s in self.user_sessions(&user, client_id.as_deref()) {
                    s.queue.close(disconnect.clone(), true);
                }
            }
            Control::UnsubscribeUser {
                user,
                channel,
                client_id,
            } => {
                for s in self.user_sessions(&user, client_id.as_deref()) {
                    if !lock(&s.subscriptions).remove(&channel) {
                        continue;
                    }
                    let removed = {
                        let mut chans = lock(&self.shard(&channel).channels);
                        chans
                            .get_mut(&channel)
                            .and_then(|cs| cs.subs.remove(s.client_id()))
                    };
                    s.queue.offer(unsubscribe_push(
                        &channel,
                        codes::unsubscribe::SERVER,
                        "server unsubscribe",
                    ));
                    if let Some(sub) = removed {
                        self.run_cleanup(Cleanup::Unsubscribed {
                            channel: channel.clone(),
                            info: s.info.clone(),
                            presence: sub.presence,
                            leave: sub.joined,
                        })
                        .await;
                    }
                }
            }
        }
    }
}

impl BrokerHandler for HubInner {
    fn on_publication(&self, channel: &str, publication: proto::Publication) {
        if let Some(room) = channel.strip_prefix(ROOM_PREFIX) {
            return self.on_room_signal(room, &publication);
        }
        if let Some(topic) = channel.strip_prefix(crate::bus::BUS_PREFIX) {
            return self.on_bus_message(topic, &publication);
        }
        self.fan_out(channel, &publication_push(publication));
    }

    fn on_join(&self, channel: &str, info: proto::ClientInfo) {
        if let Some(room) = channel.strip_prefix(ROOM_PREFIX) {
            return self.on_room_join(room, &info);
        }
        let push = proto::Push {
            push: Some(proto::push::Push::Join(proto::Join {
                channel: channel.to_owned(),
                info: Some(info),
            })),
        };
        self.fan_out(channel, &Arc::new(push));
    }

    fn on_leave(&self, channel: &str, info: proto::ClientInfo) {
        if let Some(room) = channel.strip_prefix(ROOM_PREFIX) {
            return self.on_room_leave(room, &info);
        }
        let push = proto::Push {
            push: Some(proto::push::Push::Leave(proto::Leave {
                channel: channel.to_owned(),
                info: Some(info),
            })),
        };
        self.fan_out(channel, &Arc::new(push));
    }

    fn on_control(&self, control: Control) -> BoxFuture<'_, ()> {
        Box::pin(self.handle_control(control))
    }
}
