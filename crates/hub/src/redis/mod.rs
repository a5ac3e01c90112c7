//! [`RedisBroker`]: the broker for several nodes sharing one Redis (or Valkey) server.
//!
//! * `config.rs`: [`RedisConfig`] and [`RedisHealth`];
//! * `keys.rs`: key and pub/sub channel names;
//! * `scripts.rs` and `lua/*.lua`: the Lua scripts;
//! * `wire.rs`: message encodings and script-reply parsing;
//! * `conn.rs`: the connection driver (command connection, pub/sub reader task, health);
//! * here: the [`Broker`] operations.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use switchboard_proto::prost::Message;
use switchboard_proto::v1 as proto;
use tokio::sync::watch;

use crate::broker::{
    BoxFuture, Broker, BrokerHandler, Control, HandlerSlot, HistoryPage, HistoryQuery,
    HistoryRetention, PresenceStats, PublishOptions, PublishOutcome,
};
use crate::error::BrokerError;
use crate::util::{lock, millis, random_hex};

mod config;
mod conn;
mod keys;
mod scripts;
mod wire;

pub use config::{RedisConfig, RedisHealth};

use conn::{count_error, reader, Live, Shared};
use keys::Keys;
use scripts::Scripts;
use wire::{encode_control, malformed, parse_u64, tagged, ttl_ms, MAX_TTL_MS};

/// A [`Broker`] over Redis: nodes sharing one Redis share channels, history, presence and
/// control messages. Needs a tokio runtime (it spawns its pub/sub reader task, which ends when
/// the broker is dropped).
///
/// Everything the [`Broker`] contract asks for lives in Redis, so any node can serve any client:
/// a publication is numbered, stored and published by one Lua script (one round trip, atomic),
/// history and presence reads are scripts too (atomic with publishing), and one dedicated
/// pub/sub connection per node hands publications, join/leave and control messages to the
/// node's [`BrokerHandler`] from a reader task. Scripts run with `EVALSHA` and are loaded again
/// when Redis lost its script cache (`NOSCRIPT`, e.g. after a restart).
///
/// # Key layout
///
/// With prefix `P` ([`RedisConfig::prefix`], default `switchboard`) and channel `C`; the `{C}`
/// hash tag keeps a channel's keys in one Redis Cluster slot:
///
/// * `P:meta:{C}`, hash: `top` (the last offset) and `epoch`. Lives `meta_ttl` after the last
///   publication; a stream only ever read lives `ttl` after its last read (refreshed by
///   [`Broker::maintain`] while this node is subscribed).
/// * `P:hist:{C}`, stream: one entry per publication, id `<offset>-0`, fields `x` (expiry, Unix
///   ms) and `d` (the publication). `MAXLEN size`; expired entries are dropped by reads; the key
///   goes `ttl` after the last publication.
/// * `P:idem:{C}:<key>`, string: `"<offset> <epoch>"` of the first publish with that
///   idempotency key, for the idempotency window.
/// * `P:pres:{C}`, hash: client id → `ClientInfo`; `P:pexp:{C}`, sorted set: client id →
///   expiry (Unix ms). Reads drop expired entries; both keys expire with their latest entry.
///
/// Pub/sub channels: `P:ch:C` carries `p<offset> <epoch> <Publication>`, `j<ClientInfo>` and
/// `l<ClientInfo>`; `P:control` carries `d<DisconnectRequest>` and `u<ApiUnsubscribeRequest>`.
/// Messages are the protocol's own protobuf messages (a stored or published `Publication` has
/// its channel, offset and epoch stripped: they are known from the key, the entry id and the
/// meta hash). Times are the Redis server's (`TIME`), so nodes agree on expiry whatever their
/// clocks say. A new epoch is 12 random hex digits, chosen by the node that creates the stream.
///
/// Requires Redis 6.2 or later (exclusive stream ranges), or Valkey.
///
/// # Faults
///
/// * **Redis unreachable at start:** [`RedisBroker::connect`] fails with
///   [`BrokerError::Unavailable`] naming the address.
/// * **Redis goes away:** local sessions stay connected. Commands fail fast with
///   [`BrokerError::Unavailable`] ("Redis is unreachable"), which clients see as error 100
///   "internal error: broker unavailable: ...", `temporary = true`: publishes are refused,
///   never silently dropped. The command that meets the outage fails within one connection
///   attempt ([`RedisConfig::connect_timeout`]) plus [`RedisConfig::command_timeout`]; the
///   following ones fail at once until the reader task's probe (every
///   [`RedisConfig::ping_interval`]) finds Redis again. The outage shows in [`RedisBroker::health`] /
///   [`Broker::is_healthy`] (and [`RedisBroker::health_changes`] for logging), in the gauge
///   `switchboard_hub_broker_up` (1/0) and in the counter
///   `switchboard_hub_broker_errors_total{broker="redis",op=...}`.
/// * **Redis comes back:** the reader task, retrying with a doubling delay up to
///   [`RedisConfig::reconnect_max_delay`], reconnects and subscribes every channel the node
///   holds again. Then, for each channel whose position it knows, it reads the history after the
///   last delivered offset and hands those publications over first, so publications made by
///   other nodes meanwhile are delivered (the hub drops duplicates by offset). What cannot be
///   delivered that way (history evicted, or the stream lost and restarted with a new epoch) is
///   a gap or an epoch change the hub turns into unsubscribe 2500, so clients recover; a stream
///   that was lost and has no publication yet is noticed at its next publication.
pub struct RedisBroker {
    shared: Arc<Shared>,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("prefix", &self.shared.config.prefix)
            .field("health", &*self.shared.health.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl RedisBroker {
    /// Connects to Redis (commands and pub/sub) and starts the reader task. Fails with
    /// [`BrokerError::Unavailable`] when Redis cannot be reached, and with
    /// [`BrokerError::Backend`] for a bad URL or a Redis older than 6.2.
    pub async fn connect(config: RedisConfig) -> Result<Arc<Self>, BrokerError> {
        let client = match &config.ca_pem {
            None => ::redis::Client::open(config.url.as_str()),
            Some(ca) => ::redis::Client::build_with_tls(
                config.url.as_str(),
                ::redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            ),
        }
        .map_err(|e| BrokerError::Backend(Box::new(e)))?;
        let addr = client.get_connection_info().addr().to_string();
        let failed =
            |e: String| BrokerError::Unavailable(format!("cannot connect to Redis at {addr}: {e}"));
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            // Fail fast while Redis is down: one attempt per command, no retry loop.
            .set_number_of_retries(0);
        let commands = match tokio::time::timeout(
            config.connect_timeout + config.command_timeout,
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(failed(e.to_string())),
            Err(_) => return Err(failed("timed out".to_owned())),
        };
        let (health, _) = watch::channel(RedisHealth {
            up: true,
            pubsub: true,
            commands: true,
            last_error: None,
            outages: 0,
        });
        let shared = Arc::new(Shared {
            keys: Keys::new(&config.prefix),
            config,
            client,
            commands,
            scripts: Scripts::new(),
            handler: HandlerSlot::default(),
            sink: tokio::sync::Mutex::new(None),
            tracked: Mutex::new(HashMap::new()),
            kick: tokio::sync::Notify::new(),
            commands_up: AtomicBool::new(true),
            health,
            last_maintain: Mutex::new(None),
        });
        shared.check_version().await?;
        let (sink, stream) = shared.open_pubsub().await.map_err(failed)?;
        shared.install(sink.clone()).await.map_err(failed)?;
        metrics::gauge!(crate::metric::BROKER_UP).set(1.0);
        let reader = tokio::spawn(reader(Arc::clone(&shared), Some(Live { sink, stream })));
        Ok(Arc::new(Self { shared, reader }))
    }

    /// Whether Redis is reachable: the pub/sub connection is up with every channel
    /// subscribed and the last command did not fail for want of Redis.
    pub fn is_healthy(&self) -> bool {
        self.shared.health.borrow().up
    }

    /// The connection state, with the last failure for logs.
    pub fn health(&self) -> RedisHealth {
        self.shared.health.borrow().clone()
    }

    /// Changes of [`RedisBroker::health`]: notified when `up` flips (e.g. to log outages).
    pub fn health_changes(&self) -> watch::Receiver<RedisHealth> {
        self.shared.health.subscribe()
    }

    /// The configuration in force.
    pub fn config(&self) -> &RedisConfig {
        &self.shared.config
    }
}

/// The [`Broker`] operations on Redis.
impl RedisBroker {
    async fn publish_publication(
        &self,
        channel: &str,
        mut publication: proto::Publication,
        options: &PublishOptions,
    ) -> Result<PublishOutcome, BrokerError> {
        publication.channel.clear();
        publication.offset = 0;
        publication.epoch.clear();
        let data = publication.encode_to_vec();
        let retention = &options.history;
        let mut con = self.shared.con();
        if !retention.enabled() && options.idempotency_key.is_none() {
            // Neither history nor idempotency: a plain PUBLISH does it.
            let mut message = Vec::with_capacity(data.len() + 4);
            message.extend_from_slice(b"p0  ");
            message.extend_from_slice(&data);
            let mut cmd = ::redis::cmd("PUBLISH");
            cmd.arg(self.shared.keys.pubsub(channel)).arg(message);
            self.shared
                .run("publish", cmd.query_async::<i64>(&mut con))
                .await?;
            return Ok(PublishOutcome {
                position: proto::StreamPosition::default(),
                suppressed: false,
            });
        }
        let (size, ttl, meta_ttl) = if retention.enabled() {
            let ttl = ttl_ms(retention.ttl);
            (
                u64::try_from(retention.size)
                    .unwrap_or(u64::MAX)
                    .min(i64::MAX as u64),
                ttl,
                ttl_ms(retention.meta_ttl).max(ttl),
            )
        } else {
            (0, 0, 0)
        };
        let window = if options.idempotency_key.is_some() {
            millis(options.idempotency_window).min(MAX_TTL_MS)
        } else {
            0
        };
        let mut invocation = self.shared.scripts.publish.prepare_invoke();
        invocation
            .key(self.shared.keys.meta(channel))
            .key(self.shared.keys.hist(channel));
        if let Some(key) = &options.idempotency_key {
            invocation.key(self.shared.keys.idem(channel, key));
        }
        invocation
            .arg(self.shared.keys.pubsub(channel))
            .arg(data)
            .arg(size)
            .arg(ttl)
            .arg(meta_ttl)
            .arg(random_hex(6))
            .arg(window);
        let reply: Vec<Vec<u8>> = self
            .shared
            .run("publish", invocation.invoke_async(&mut con))
            .await?;
        let [suppressed, offset, epoch] =
            <[Vec<u8>; 3]>::try_from(reply).map_err(|_| malformed("publish"))?;
        Ok(PublishOutcome {
            position: proto::StreamPosition {
                offset: parse_u64(&offset).ok_or_else(|| malformed("publish offset"))?,
                epoch: String::from_utf8(epoch).map_err(|_| malformed("publish epoch"))?,
            },
            suppressed: suppressed == b"1",
        })
    }

    async fn history_page(
        &self,
        channel: &str,
        query: HistoryQuery,
        retention: &HistoryRetention,
    ) -> Result<HistoryPage, BrokerError> {
        if !retention.enabled() {
            return Ok(HistoryPage::default());
        }
        let page = self
            .shared
            .read_history(channel, &query, Some(retention))
            .await?;
        if let Some(t) = lock(&self.shared.tracked).get_mut(channel) {
            t.retention = Some(*retention);
            if t.last.is_none() {
                t.last = Some(page.position.clone());
            }
        }
        Ok(page)
    }

    async fn publish_raw(
        &self,
        op: &'static str,
        name: String,
        message: Vec<u8>,
    ) -> Result<(), BrokerError> {
        let mut con = self.shared.con();
        let mut cmd = ::redis::cmd("PUBLISH");
        cmd.arg(name).arg(message);
        self.shared
            .run(op, cmd.query_async::<i64>(&mut con))
            .await?;
        Ok(())
    }

    async fn presence_add(
        &self,
        channel: &str,
        info: proto::ClientInfo,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let mut invocation = self.shared.scripts.presence_add.prepare_invoke();
        invocation
            .key(self.shared.keys.pres(channel))
            .key(self.shared.keys.pexp(channel))
            .arg(info.client_id.as_str())
            .arg(info.encode_to_vec())
            .arg(ttl_ms(ttl));
        let mut con = self.shared.con();
        self.shared
            .run("presence", invocation.invoke_async::<i64>(&mut con))
            .await?;
        Ok(())
    }

    async fn presence_remove(&self, channel: &str, client_id: &str) -> Result<(), BrokerError> {
        let mut invocation = self.shared.scripts.presence_remove.prepare_invoke();
        invocation
            .key(self.shared.keys.pres(channel))
            .key(self.shared.keys.pexp(channel))
            .arg(client_id);
        let mut con = self.shared.con();
        self.shared
            .run("presence", invocation.invoke_async::<i64>(&mut con))
            .await?;
        Ok(())
    }

    async fn presence_map(
        &self,
        channel: &str,
    ) -> Result<HashMap<String, proto::ClientInfo>, BrokerError> {
        let mut invocation = self.shared.scripts.presence_get.prepare_invoke();
        invocation
            .key(self.shared.keys.pres(channel))
            .key(self.shared.keys.pexp(channel));
        let mut con = self.shared.con();
        let reply: Vec<Vec<u8>> = self
            .shared
            .run("presence", invocation.invoke_async(&mut con))
            .await?;
        let mut map = HashMap::with_capacity(reply.len() / 2);
        for pair in reply.chunks_exact(2) {
            let (Ok(id), Ok(info)) = (
                std::str::from_utf8(&pair[0]),
                proto::ClientInfo::decode(pair[1].as_slice()),
            ) else {
                count_error("decode");
                continue;
            };
            map.insert(id.to_owned(), info);
        }
        Ok(map)
    }

    /// Keeps the never-published streams of subscribed channels alive (a stream only read
    /// lives `ttl` after its last read), so a quiet channel keeps its epoch while watched.
    async fn touch_quiet_streams(&self) {
        let now = Instant::now();
        let since_last = lock(&self.shared.last_maintain)
            .replace(now)
            .map_or(Duration::ZERO, |t| now.duration_since(t));
        if !self.shared.health.borrow().up {
            return;
        }
        let quiet: Vec<(String, u64)> = lock(&self.shared.tracked)
            .iter()
            .filter(|(_, t)| t.last.as_ref().is_none_or(|p| p.offset == 0))
            .filter_map(|(c, t)| {
                let r = t.retention?;
                let ttl = r.ttl.max(since_last * 2).min(r.meta_ttl.max(r.ttl));
                Some((c.clone(), ttl_ms(ttl)))
            })
            .collect();
        for (channel, ttl) in quiet {
            let mut invocation = self.shared.scripts.touch.prepare_invoke();
            invocation.key(self.shared.keys.meta(&channel)).arg(ttl);
            let mut con = self.shared.con();
            if self
                .shared
                .run("touch", invocation.invoke_async::<i64>(&mut con))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

impl Broker for RedisBroker {
    fn set_handler(&self, handler: Weak<dyn BrokerHandler>) {
        self.shared.handler.set(handler);
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.shared.subscribe(channel))
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.shared.unsubscribe(channel))
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: proto::Publication,
        options: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<PublishOutcome, BrokerError>> {
        Box::pin(self.publish_publication(channel, publication, options))
    }

    fn publish_join<'a>(
        &'a self,
        channel: &'a str,
        info: proto::ClientInfo,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let message = tagged(b'j', &info)?;
            let name = self.shared.keys.pubsub(channel);
            self.publish_raw("join", name, message).await
        })
    }

    fn publish_leave<'a>(
        &'a self,
        channel: &'a str,
        info: proto::ClientInfo,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let message = tagged(b'l', &info)?;
            let name = self.shared.keys.pubsub(channel);
            self.publish_raw("leave", name, message).await
        })
    }

    fn publish_control(&self, control: Control) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let message = encode_control(&control)?;
            let name = self.shared.keys.control.clone();
            self.publish_raw("control", name, message).await
        })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
        retention: &'a HistoryRetention,
    ) -> BoxFuture<'a, Result<HistoryPage, BrokerError>> {
        Box::pin(self.history_page(channel, query, retention))
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut con = self.shared.con();
            let mut cmd = ::redis::cmd("DEL");
            cmd.arg(self.shared.keys.hist(channel));
            self.shared
                .run("remove_history", cmd.query_async::<i64>(&mut con))
                .await?;
            Ok(())
        })
    }

    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: proto::ClientInfo,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.presence_add(channel, info, ttl))
    }

    fn remove_presence<'a>(
        &'a self,
        channel: &'a str,
        client_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.presence_remove(channel, client_id))
    }

    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, proto::ClientInfo>, BrokerError>> {
        Box::pin(self.presence_map(channel))
    }

    fn presence_stats<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<PresenceStats, BrokerError>> {
        Box::pin(async move {
            let presence = self.presence_map(channel).await?;
            let users: HashSet<&str> = presence.values().map(|i| i.user.as_str()).collect();
            Ok(PresenceStats {
                clients: u32::try_from(presence.len()).unwrap_or(u32::MAX),
                users: u32::try_from(users.len()).unwrap_or(u32::MAX),
            })
        })
    }

    fn count<'a>(
        &'a self,
        key: &'a str,
        node: &'a str,
        delta: i64,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        Box::pin(async move {
            let keys = &self.shared.keys;
            let mut invocation = self.shared.scripts.count.prepare_invoke();
            invocation
                .key(keys.count(key))
                .key(keys.count_nodes())
                .key(keys.count_node(node))
                .arg(node)
                .arg(delta)
                .arg(key);
            let mut con = self.shared.con();
            let crossed: i64 = self
                .shared
                .run("count", invocation.invoke_async(&mut con))
                .await?;
            Ok(crossed == 1)
        })
    }

    fn heartbeat<'a>(
        &'a self,
        node: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut cmd = ::redis::cmd("SET");
            cmd.arg(self.shared.keys.alive(node))
                .arg(1)
                .arg("PX")
                .arg(ttl_ms(ttl));
            let mut con = self.shared.con();
            let _: () = self
                .shared
                .run("heartbeat", cmd.query_async(&mut con))
                .await?;
            Ok(())
        })
    }

    fn sweep_counts(&self) -> BoxFuture<'_, Result<Vec<String>, BrokerError>> {
        Box::pin(async move {
            let keys = &self.shared.keys;
            let mut invocation = self.shared.scripts.count_sweep.prepare_invoke();
            invocation
                .key(keys.count_nodes())
                .arg(keys.count(""))
                .arg(keys.count_node(""))
                .arg(keys.alive(""));
            let mut con = self.shared.con();
            self.shared
                .run("count", invocation.invoke_async(&mut con))
                .await
        })
    }

    fn maintain(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.touch_quiet_streams())
    }

    fn is_healthy(&self) -> bool {
        self.shared.health.borrow().up
    }
}
