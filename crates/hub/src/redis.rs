//! [`RedisBroker`]: the broker for several nodes sharing one Redis (or Valkey) server.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use ::redis::{ErrorKind, RedisError, RedisResult, Script, ServerErrorKind};
use futures_core::Stream;
use switchboard_proto::prost::Message;
use switchboard_proto::v1 as proto;
use tokio::sync::watch;

use crate::broker::{
    BoxFuture, Broker, BrokerHandler, Control, HandlerSlot, HistoryPage, HistoryQuery,
    HistoryRetention, PresenceStats, PublishOptions, PublishOutcome,
};
use crate::codes;
use crate::error::BrokerError;
use crate::util::{lock, millis, random_hex};

/// Longest TTL handed to Redis (100 years): larger values would overflow its expiry times.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
/// Channels per SUBSCRIBE when resubscribing after a reconnect.
const SUBSCRIBE_BATCH: usize = 512;
/// The first wait before reconnecting again (it doubles up to the configured maximum).
const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(100);
/// What clients are told while Redis cannot be reached (details go to [`RedisHealth`]).
const UNREACHABLE: &str = "Redis is unreachable";
const TIMED_OUT: &str = "Redis did not answer in time";
const PUBSUB_DOWN: &str = "Redis pub/sub connection is down";

/// Settings of a [`RedisBroker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Where Redis is: `redis://[user:password@]host:port[/db]` or `redis+unix:///path`.
    pub url: String,
    /// Prefix of every key and pub/sub channel, so several hubs can share one Redis.
    pub prefix: String,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How long one command may take before it fails as unavailable.
    pub command_timeout: Duration,
    /// How often the pub/sub connection is pinged, to notice a silent outage.
    pub ping_interval: Duration,
    /// Longest wait between reconnection attempts (the wait doubles from 100 ms up to this).
    pub reconnect_max_delay: Duration,
    /// For `rediss://` URLs: PEM certificates of the CA(s) that signed Redis's certificate,
    /// trusted instead of the system's roots (managed Redis services and private CAs).
    pub ca_pem: Option<Vec<u8>>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".to_owned(),
            prefix: "switchboard".to_owned(),
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(1),
            reconnect_max_delay: Duration::from_secs(2),
            ca_pem: None,
        }
    }
}

impl RedisConfig {
    /// The defaults with Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

/// The connection state of a [`RedisBroker`] (see [`RedisBroker::health`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisHealth {
    /// Both connections work (`pubsub && commands`).
    pub up: bool,
    /// The pub/sub connection is up with every channel of the node subscribed.
    pub pubsub: bool,
    /// The last command did not fail for want of Redis.
    pub commands: bool,
    /// The last connection failure, with details for logs (clients only see "unavailable").
    pub last_error: Option<String>,
    /// How many times `up` went from true to false.
    pub outages: u64,
}

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

/// Key and channel names.
struct Keys {
    prefix: String,
    /// `P:ch:`, the prefix of channel pub/sub names.
    pubsub_prefix: String,
    /// `P:control`.
    control: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            pubsub_prefix: format!("{prefix}:ch:"),
            control: format!("{prefix}:control"),
        }
    }

    fn meta(&self, channel: &str) -> String {
        format!("{}:meta:{{{channel}}}", self.prefix)
    }

    fn hist(&self, channel: &str) -> String {
        format!("{}:hist:{{{channel}}}", self.prefix)
    }

    fn idem(&self, channel: &str, key: &str) -> String {
        format!("{}:idem:{{{channel}}}:{key}", self.prefix)
    }

    fn pres(&self, channel: &str) -> String {
        format!("{}:pres:{{{channel}}}", self.prefix)
    }

    fn pexp(&self, channel: &str) -> String {
        format!("{}:pexp:{{{channel}}}", self.prefix)
    }

    fn pubsub(&self, channel: &str) -> String {
        format!("{}{channel}", self.pubsub_prefix)
    }
}

/// The first lines of every script: effects replication (needed before Redis 7 for `TIME`
/// ahead of writes) and `now`, the server's time in ms.
macro_rules! script {
    ($body:literal) => {
        concat!(
            "if redis.replicate_commands then redis.replicate_commands() end\n",
            "local t = redis.call('TIME')\n",
            "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n",
            $body
        )
    };
}

/// Publish: KEYS meta, hist[, idem]; ARGV pub/sub channel, data, size ('0' = no history),
/// ttl ms, meta ttl ms, new epoch, idempotency window ms. Returns {suppressed, offset, epoch}.
/// Nothing after the first write can fail (arguments are checked by the caller).
const PUBLISH: &str = script!(
    r"
local idem = KEYS[3]
if idem then
  local prev = redis.call('GET', idem)
  if prev then
    local o, e = string.match(prev, '^(%d+) (.*)$')
    return {'1', o or '0', e or ''}
  end
end
local offset, epoch = '0', ''
if ARGV[3] ~= '0' then
  epoch = redis.call('HGET', KEYS[1], 'epoch')
  if not epoch then
    epoch = ARGV[6]
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  end
  offset = string.format('%.0f', redis.call('HINCRBY', KEYS[1], 'top', 1))
  local expires = string.format('%.0f', now + tonumber(ARGV[4]))
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-0', 'x', expires, 'd', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
redis.call('PUBLISH', ARGV[1], 'p' .. offset .. ' ' .. epoch .. ' ' .. ARGV[2])
if idem and ARGV[7] ~= '0' then
  redis.call('SET', idem, offset .. ' ' .. epoch, 'PX', ARGV[7])
end
return {'0', offset, epoch}
"
);

/// History: KEYS meta, hist; ARGV create ('1'/'0'), new epoch, idle ttl ms, range start ('-',
/// '+' or '(<offset>-0'), count ('-1' = all, '0' = position only), reverse ('1'/'0').
/// Returns {top, epoch, id, data, id, data, ...}; {'0', ''} when there is no stream and
/// `create` is '0'.
const HISTORY: &str = script!(
    r"
local meta = redis.call('HMGET', KEYS[1], 'top', 'epoch')
local top, epoch = meta[1] or '0', meta[2]
if not epoch then
  if ARGV[1] ~= '1' then return {'0', ''} end
  epoch = ARGV[2]
  top = '0'
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
elseif top == '0' and ARGV[1] == '1' and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
while true do
  local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 64)
  local dead = {}
  for _, e in ipairs(head) do
    if (tonumber(e[2][2]) or 0) > now then break end
    dead[#dead + 1] = e[1]
  end
  if #dead > 0 then redis.call('XDEL', KEYS[2], unpack(dead)) end
  if #dead < 64 then break end
end
local out = {top, epoch}
if ARGV[5] == '0' then return out end
local args
if ARGV[6] == '1' then
  args = {'XREVRANGE', KEYS[2], ARGV[4], '-'}
else
  args = {'XRANGE', KEYS[2], ARGV[4], '+'}
end
if ARGV[5] ~= '-1' then
  args[#args + 1] = 'COUNT'
  args[#args + 1] = ARGV[5]
end
for _, e in ipairs(redis.call(unpack(args))) do
  out[#out + 1] = e[1]
  out[#out + 1] = e[2][4] or ''
end
return out
"
);

/// Keeps a never-published stream alive: KEYS meta; ARGV ttl ms.
const TOUCH: &str = script!(
    r"
if redis.call('HGET', KEYS[1], 'top') == '0'
    and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return now
"
);

/// Add presence: KEYS pres, pexp; ARGV client id, info, ttl ms.
const PRESENCE_ADD: &str = script!(
    r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local at = string.format('%.0f', tonumber(last[2]) or (now + tonumber(ARGV[3])))
redis.call('PEXPIREAT', KEYS[1], at)
redis.call('PEXPIREAT', KEYS[2], at)
return 1
"
);

/// Remove presence: KEYS pres, pexp; ARGV client id.
const PRESENCE_REMOVE: &str = r"
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
";

/// Read presence, dropping expired entries: KEYS pres, pexp. Returns HGETALL.
const PRESENCE_GET: &str = script!(
    r"
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #dead > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  for i = 1, #dead, 1000 do
    redis.call('HDEL', KEYS[1], unpack(dead, i, math.min(i + 999, #dead)))
  end
end
return redis.call('HGETALL', KEYS[1])
"
);

struct Scripts {
    publish: Script,
    history: Script,
    touch: Script,
    presence_add: Script,
    presence_remove: Script,
    presence_get: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            publish: Script::new(PUBLISH),
            history: Script::new(HISTORY),
            touch: Script::new(TOUCH),
            presence_add: Script::new(PRESENCE_ADD),
            presence_remove: Script::new(PRESENCE_REMOVE),
            presence_get: Script::new(PRESENCE_GET),
        }
    }
}

/// What the node knows about a channel it is subscribed to.
#[derive(Default)]
struct Track {
    /// The last position handed to the handler (or read by the hub while subscribing): where
    /// catching up after a reconnect starts.
    last: Option<proto::StreamPosition>,
    /// The channel's retention, learnt from history reads.
    retention: Option<HistoryRetention>,
}

/// A reply that does not have the shape the scripts return.
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from Redis: {0}")]
struct Malformed(&'static str);

fn malformed(what: &'static str) -> BrokerError {
    BrokerError::Backend(Box::new(Malformed(what)))
}

/// The live pub/sub connection, owned by the reader task.
struct Live {
    sink: PubSubSink,
    stream: PubSubStream,
}

struct Shared {
    config: RedisConfig,
    keys: Keys,
    client: ::redis::Client,
    /// Commands (scripts, PUBLISH): one multiplexed connection, reconnected on demand.
    commands: ConnectionManager,
    scripts: Scripts,
    handler: HandlerSlot,
    /// The pub/sub connection's command side: `None` while it is down. Held across
    /// (un)subscribe round trips so they and resubscription after a reconnect never interleave.
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    /// Channels this node is subscribed to (changed only under `sink`).
    tracked: Mutex<HashMap<String, Track>>,
    /// Wakes the reader when a (un)subscribe found the pub/sub connection broken.
    kick: tokio::sync::Notify,
    /// Mirror of `health.commands`, read on every command.
    commands_up: AtomicBool,
    health: watch::Sender<RedisHealth>,
    last_maintain: Mutex<Option<Instant>>,
}

/// Whether a Redis error means "Redis cannot be reached right now".
fn is_unavailable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
            )
        )
}

/// A duration in ms for Redis: at least 1, at most [`MAX_TTL_MS`].
fn ttl_ms(d: Duration) -> u64 {
    millis(d).clamp(1, MAX_TTL_MS)
}

/// `tag` followed by the protobuf encoding of `m`.
fn tagged(tag: u8, m: &impl Message) -> Result<Vec<u8>, BrokerError> {
    let mut v = Vec::with_capacity(1 + m.encoded_len());
    v.push(tag);
    m.encode(&mut v)
        .map_err(|e| BrokerError::Backend(Box::new(e)))?;
    Ok(v)
}

fn split_at_space(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == b' ')?;
    Some((&b[..i], &b[i + 1..]))
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// A stored or published publication with its channel, offset and epoch put back.
fn decode_publication(
    channel: &str,
    offset: u64,
    epoch: &str,
    data: &[u8],
) -> Option<proto::Publication> {
    let mut p = proto::Publication::decode(data).ok()?;
    p.channel = channel.to_owned();
    p.offset = offset;
    p.epoch = epoch.to_owned();
    Some(p)
}

/// `<offset> <epoch> <Publication>` (after the `p` tag).
fn parse_publication_message(channel: &str, body: &[u8]) -> Option<proto::Publication> {
    let (offset, rest) = split_at_space(body)?;
    let (epoch, data) = split_at_space(rest)?;
    decode_publication(
        channel,
        parse_u64(offset)?,
        std::str::from_utf8(epoch).ok()?,
        data,
    )
}

fn encode_control(control: &Control) -> Result<Vec<u8>, BrokerError> {
    match control {
        Control::DisconnectUser {
            user,
            client_id,
            disconnect,
        } => tagged(
            b'd',
            &proto::DisconnectRequest {
                user: user.clone(),
                client_id: client_id.clone().unwrap_or_default(),
                disconnect: Some(disconnect.clone()),
            },
        ),
        Control::UnsubscribeUser {
            user,
            channel,
            client_id,
        } => tagged(
            b'u',
            &proto::ApiUnsubscribeRequest {
                user: user.clone(),
                channel: channel.clone(),
                client_id: client_id.clone().unwrap_or_default(),
            },
        ),
    }
}

fn decode_control(body: &[u8]) -> Option<Control> {
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    match body.split_first()? {
        (b'd', rest) => {
            let r = proto::DisconnectRequest::decode(rest).ok()?;
            Some(Control::DisconnectUser {
                user: r.user,
                client_id: non_empty(r.client_id),
                disconnect: r.disconnect.unwrap_or_else(|| {
                    codes::disconnect_message(codes::disconnect::FORCE_DISCONNECT)
                }),
            })
        }
        (b'u', rest) => {
            let r = proto::ApiUnsubscribeRequest::decode(rest).ok()?;
            Some(Control::UnsubscribeUser {
                user: r.user,
                channel: r.channel,
                client_id: non_empty(r.client_id),
            })
        }
        _ => None,
    }
}

/// Moves `last` forward to (`offset`, `epoch`); another epoch replaces it.
fn advance(last: &mut Option<proto::StreamPosition>, offset: u64, epoch: &str) {
    match last {
        Some(l) if l.epoch == epoch => l.offset = l.offset.max(offset),
        _ => {
            *last = Some(proto::StreamPosition {
                offset,
                epoch: epoch.to_owned(),
            })
        }
    }
}

/// `d` scaled by a random factor in [0.5, 1) so nodes do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 1];
    let r = if getrandom::fill(&mut b).is_ok() {
        b[0]
    } else {
        128
    };
    d / 2 + d * u32::from(r) / 512
}

fn count_error(op: &'static str) {
    metrics::counter!(crate::metric::BROKER_ERRORS_TOTAL, "broker" => "redis", "op" => op)
        .increment(1);
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

/// The reader task: delivers pub/sub messages, and reconnects (with backoff) and resubscribes
/// when the connection is lost.
async fn reader(shared: Arc<Shared>, mut live: Option<Live>) {
    let mut delay = Duration::ZERO;
    loop {
        let current = match live.take() {
            Some(l) => l,
            None => {
                if !delay.is_zero() {
                    tokio::time::sleep(jitter(delay)).await;
                }
                delay = if delay.is_zero() {
                    MIN_RECONNECT_DELAY.min(shared.config.reconnect_max_delay)
                } else {
                    (delay * 2).min(shared.config.reconnect_max_delay)
                };
                match shared.reconnect().await {
                    Ok(l) => {
                        delay = Duration::ZERO;
                        l
                    }
                    Err(e) => {
                        shared.set_pubsub(false, Some(e));
                        continue;
                    }
                }
            }
        };
        let reason = shared.read(current).await;
        *shared.sink.lock().await = None;
        count_error("pubsub");
        shared.set_pubsub(false, Some(reason));
    }
}

impl Shared {
    fn handler(&self) -> Option<Arc<dyn BrokerHandler>> {
        self.handler.get()
    }

    // ---- health ----

    fn update_health(&self, f: impl FnOnce(&mut RedisHealth)) {
        self.health.send_if_modified(|h| {
            let was = h.up;
            f(h);
            h.up = h.pubsub && h.commands;
            if h.up == was {
                return false;
            }
            metrics::gauge!(crate::metric::BROKER_UP).set(if h.up { 1.0 } else { 0.0 });
            if !h.up {
                h.outages += 1;
            }
            true
        });
    }

    fn set_pubsub(&self, up: bool, error: Option<String>) {
        self.update_health(|h| {
            h.pubsub = up;
            if error.is_some() {
                h.last_error = error;
            }
        });
    }

    fn set_commands(&self, up: bool, error: Option<String>) {
        self.commands_up.store(up, Ordering::Relaxed);
        self.update_health(|h| {
            h.commands = up;
            if error.is_some() {
                h.last_error = error;
            }
        });
    }

    // ---- commands ----

    fn con(&self) -> ConnectionManager {
        self.commands.clone()
    }

    /// Runs one command (bounded by the timeouts), keeping the health up to date. While the
    /// command connection is known to be down, fails at once: the reader task probes Redis
    /// ([`Shared::check_commands`]) every ping interval and lets commands through again.
    async fn run<T>(
        &self,
        op: &'static str,
        command: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, BrokerError> {
        if !self.commands_up.load(Ordering::Relaxed) {
            count_error(op);
            return Err(BrokerError::Unavailable(UNREACHABLE.to_owned()));
        }
        self.attempt(op, command).await
    }

    /// Runs one command (bounded by the timeouts) whatever the health says, and updates it.
    async fn attempt<T>(
        &self,
        op: &'static str,
        command: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, BrokerError> {
        let limit = self.config.connect_timeout + self.config.command_timeout;
        match tokio::time::timeout(limit, command).await {
            Ok(Ok(v)) => {
                if !self.commands_up.load(Ordering::Relaxed) {
                    self.set_commands(true, None);
                }
                Ok(v)
            }
            Ok(Err(e)) => {
                count_error(op);
                if is_unavailable(&e) {
                    self.set_commands(false, Some(format!("{op}: {e}")));
                    Err(BrokerError::Unavailable(UNREACHABLE.to_owned()))
                } else {
                    Err(BrokerError::Backend(Box::new(e)))
                }
            }
            Err(_) => {
                count_error(op);
                self.set_commands(false, Some(format!("{op}: {TIMED_OUT}")));
                Err(BrokerError::Unavailable(TIMED_OUT.to_owned()))
            }
        }
    }

    /// Pings through the command connection (twice: the first use of a connection Redis
    /// dropped fails and reconnects it).
    async fn check_commands(&self) {
        for _ in 0..2 {
            let mut con = self.con();
            let ping = ::redis::cmd("PING");
            if self
                .attempt("ping", ping.query_async::<::redis::Value>(&mut con))
                .await
                .is_ok()
            {
                return;
            }
        }
    }

    /// Refuses Redis older than 6.2 (exclusive stream ranges) when it says its version (a
    /// server that refuses `INFO` is given the benefit of the doubt).
    async fn check_version(&self) -> Result<(), BrokerError> {
        let mut con = self.con();
        let info = self
            .attempt(
                "info",
                ::redis::cmd("INFO")
                    .arg("server")
                    .query_async::<String>(&mut con),
            )
            .await;
        let info = match info {
            Ok(info) => info,
            Err(e @ BrokerError::Unavailable(_)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| {
                let mut parts = v.trim().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
                (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
            });
        match version {
            Some(v) if v < (6, 2) => Err(BrokerError::Backend(
                format!("Redis {}.{} is too old: 6.2 or later is needed", v.0, v.1).into(),
            )),
            _ => Ok(()),
        }
    }

    async fn publish(
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
        let mut con = self.con();
        if !retention.enabled() && options.idempotency_key.is_none() {
            // Neither history nor idempotency: a plain PUBLISH does it.
            let mut message = Vec::with_capacity(data.len() + 4);
            message.extend_from_slice(b"p0  ");
            message.extend_from_slice(&data);
            let mut cmd = ::redis::cmd("PUBLISH");
            cmd.arg(self.keys.pubsub(channel)).arg(message);
            self.run("publish", cmd.query_async::<i64>(&mut con))
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
        let mut invocation = self.scripts.publish.prepare_invoke();
        invocation
            .key(self.keys.meta(channel))
            .key(self.keys.hist(channel));
        if let Some(key) = &options.idempotency_key {
            invocation.key(self.keys.idem(channel, key));
        }
        invocation
            .arg(self.keys.pubsub(channel))
            .arg(data)
            .arg(size)
            .arg(ttl)
            .arg(meta_ttl)
            .arg(random_hex(6))
            .arg(window);
        let reply: Vec<Vec<u8>> = self
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

    /// Reads history; with `create`, a missing stream is created with that retention.
    async fn read_history(
        &self,
        channel: &str,
        query: &HistoryQuery,
        create: Option<&HistoryRetention>,
    ) -> Result<HistoryPage, BrokerError> {
        let count = match query.limit {
            None => "-1".to_owned(),
            Some(n) => n.min(i64::MAX as usize).to_string(),
        };
        let (start, count) = match (&query.since, query.reverse) {
            (None, false) => ("-".to_owned(), count),
            (None, true) => ("+".to_owned(), count),
            // Nothing is before offset 1.
            (Some(s), true) if s.offset == 0 => (String::new(), "0".to_owned()),
            (Some(s), _) => (format!("({}-0", s.offset), count),
        };
        let mut invocation = self.scripts.history.prepare_invoke();
        invocation
            .key(self.keys.meta(channel))
            .key(self.keys.hist(channel))
            .arg(if create.is_some() { "1" } else { "0" })
            .arg(random_hex(6))
            .arg(create.map_or(1, |r| ttl_ms(r.ttl)))
            .arg(start)
            .arg(count)
            .arg(if query.reverse { "1" } else { "0" });
        let mut con = self.con();
        let reply: Vec<Vec<u8>> = self
            .run("history", invocation.invoke_async(&mut con))
            .await?;
        let mut items = reply.into_iter();
        let top = items
            .next()
            .and_then(|t| parse_u64(&t))
            .ok_or_else(|| malformed("history position"))?;
        let epoch = items
            .next()
            .and_then(|e| String::from_utf8(e).ok())
            .ok_or_else(|| malformed("history epoch"))?;
        let mut publications = Vec::new();
        while let (Some(id), Some(data)) = (items.next(), items.next()) {
            let offset = split_at_dash(&id)
                .and_then(parse_u64)
                .ok_or_else(|| malformed("history entry id"))?;
            match decode_publication(channel, offset, &epoch, &data) {
                Some(p) => publications.push(p),
                None => return Err(malformed("history entry")),
            }
        }
        Ok(HistoryPage {
            publications,
            position: proto::StreamPosition { offset: top, epoch },
        })
    }

    async fn history(
        &self,
        channel: &str,
        query: HistoryQuery,
        retention: &HistoryRetention,
    ) -> Result<HistoryPage, BrokerError> {
        if !retention.enabled() {
            return Ok(HistoryPage::default());
        }
        let page = self.read_history(channel, &query, Some(retention)).await?;
        if let Some(t) = lock(&self.tracked).get_mut(channel) {
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
        let mut con = self.con();
        let mut cmd = ::redis::cmd("PUBLISH");
        cmd.arg(name).arg(message);
        self.run(op, cmd.query_async::<i64>(&mut con)).await?;
        Ok(())
    }

    async fn add_presence(
        &self,
        channel: &str,
        info: proto::ClientInfo,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let mut invocation = self.scripts.presence_add.prepare_invoke();
        invocation
            .key(self.keys.pres(channel))
            .key(self.keys.pexp(channel))
            .arg(info.client_id.as_str())
            .arg(info.encode_to_vec())
            .arg(ttl_ms(ttl));
        let mut con = self.con();
        self.run("presence", invocation.invoke_async::<i64>(&mut con))
            .await?;
        Ok(())
    }

    async fn remove_presence(&self, channel: &str, client_id: &str) -> Result<(), BrokerError> {
        let mut invocation = self.scripts.presence_remove.prepare_invoke();
        invocation
            .key(self.keys.pres(channel))
            .key(self.keys.pexp(channel))
            .arg(client_id);
        let mut con = self.con();
        self.run("presence", invocation.invoke_async::<i64>(&mut con))
            .await?;
        Ok(())
    }

    async fn presence(
        &self,
        channel: &str,
    ) -> Result<HashMap<String, proto::ClientInfo>, BrokerError> {
        let mut invocation = self.scripts.presence_get.prepare_invoke();
        invocation
            .key(self.keys.pres(channel))
            .key(self.keys.pexp(channel));
        let mut con = self.con();
        let reply: Vec<Vec<u8>> = self
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

    // ---- pub/sub ----

    async fn open_pubsub(&self) -> Result<(PubSubSink, PubSubStream), String> {
        match tokio::time::timeout(self.config.connect_timeout, self.client.get_async_pubsub())
            .await
        {
            Ok(Ok(p)) => Ok(p.split()),
            Ok(Err(e)) => Err(format!("pub/sub connect: {e}")),
            Err(_) => Err("pub/sub connect: timed out".to_owned()),
        }
    }

    /// Subscribes a fresh pub/sub connection to the control channel and every tracked
    /// channel, then makes it the current one.
    async fn install(&self, mut sink: PubSubSink) -> Result<(), String> {
        let mut slot = self.sink.lock().await;
        let mut names = vec![self.keys.control.clone()];
        names.extend(lock(&self.tracked).keys().map(|c| self.keys.pubsub(c)));
        for chunk in names.chunks(SUBSCRIBE_BATCH) {
            match tokio::time::timeout(self.config.command_timeout, sink.subscribe(chunk)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("pub/sub subscribe: {e}")),
                Err(_) => return Err("pub/sub subscribe: timed out".to_owned()),
            }
        }
        *slot = Some(sink);
        Ok(())
    }

    async fn reconnect(&self) -> Result<Live, String> {
        let (sink, stream) = self.open_pubsub().await?;
        self.install(sink.clone()).await?;
        self.check_commands().await;
        self.catch_up().await;
        self.set_pubsub(true, None);
        Ok(Live { sink, stream })
    }

    /// After a reconnect: hands over what was published in each channel since its last
    /// known position (publications of other nodes made while this one was cut off).
    async fn catch_up(&self) {
        let todo: Vec<(String, proto::StreamPosition)> = lock(&self.tracked)
            .iter()
            .filter_map(|(c, t)| {
                let last = t.last.as_ref().filter(|p| !p.epoch.is_empty())?;
                Some((c.clone(), last.clone()))
            })
            .collect();
        for (channel, last) in todo {
            let since = HistoryQuery {
                since: Some(last.clone()),
                limit: None,
                reverse: false,
            };
            let Ok(mut page) = self.read_history(&channel, &since, None).await else {
                continue;
            };
            if page.position.epoch.is_empty() {
                continue; // the stream is gone: its next publication shows the new epoch
            }
            if page.position.epoch != last.epoch && page.position.offset > 0 {
                // The stream was lost and started again: its first publication tells the hub.
                let first = HistoryQuery {
                    since: None,
                    limit: Some(1),
                    reverse: false,
                };
                match self.read_history(&channel, &first, None).await {
                    Ok(p) => page = p,
                    Err(_) => continue,
                }
            }
            for p in page.publications {
                self.deliver(&channel, p);
            }
        }
    }

    /// Reads the pub/sub connection until it fails; returns why.
    async fn read(&self, live: Live) -> String {
        let Live {
            mut sink,
            mut stream,
        } = live;
        let period = self.config.ping_interval.max(Duration::from_millis(10));
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx)) => {
                    match msg {
                        Some(msg) => self.dispatch(&msg),
                        None => return "pub/sub connection closed".to_owned(),
                    }
                }
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(
                        self.config.command_timeout,
                        sink.ping::<::redis::Value>(),
                    );
                    match pong.await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return format!("pub/sub ping: {e}"),
                        Err(_) => return "pub/sub ping: timed out".to_owned(),
                    }
                    if !self.commands_up.load(Ordering::Relaxed) {
                        self.check_commands().await;
                    }
                }
                () = self.kick.notified() => {
                    if self.sink.lock().await.is_none() {
                        return "pub/sub (un)subscribe failed".to_owned();
                    }
                }
            }
        }
    }

    fn dispatch(&self, msg: &::redis::Msg) {
        let name = msg.get_channel_name();
        let body = msg.get_payload_bytes();
        if name == self.keys.control {
            self.dispatch_control(body);
            return;
        }
        let Some(channel) = name.strip_prefix(self.keys.pubsub_prefix.as_str()) else {
            return;
        };
        match body.split_first() {
            Some((b'p', rest)) => match parse_publication_message(channel, rest) {
                Some(p) => self.deliver(channel, p),
                None => count_error("decode"),
            },
            Some((&tag @ (b'j' | b'l'), rest)) => {
                let Ok(info) = proto::ClientInfo::decode(rest) else {
                    count_error("decode");
                    return;
                };
                if !lock(&self.tracked).contains_key(channel) {
                    return;
                }
                if let Some(h) = self.handler() {
                    if tag == b'j' {
                        h.on_join(channel, info);
                    } else {
                        h.on_leave(channel, info);
                    }
                }
            }
            _ => count_error("decode"),
        }
    }

    /// Hands a publication of a subscribed channel to the handler, remembering its position.
    fn deliver(&self, channel: &str, p: proto::Publication) {
        {
            let mut tracked = lock(&self.tracked);
            let Some(t) = tracked.get_mut(channel) else {
                return;
            };
            if p.offset > 0 {
                advance(&mut t.last, p.offset, &p.epoch);
            }
        }
        if let Some(h) = self.handler() {
            h.on_publication(channel, p);
        }
    }

    fn dispatch_control(&self, body: &[u8]) {
        let Some(control) = decode_control(body) else {
            count_error("decode");
            return;
        };
        if let Some(handler) = self.handler() {
            // Control handling may call the broker (cleanups): not on the reader task.
            tokio::spawn(async move { handler.on_control(control).await });
        }
    }

    fn pubsub_down(&self, op: &'static str) -> BrokerError {
        count_error(op);
        BrokerError::Unavailable(PUBSUB_DOWN.to_owned())
    }

    async fn subscribe(&self, channel: &str) -> Result<(), BrokerError> {
        let mut slot = self.sink.lock().await;
        if lock(&self.tracked).contains_key(channel) {
            return Ok(());
        }
        let Some(sink) = slot.as_mut() else {
            return Err(self.pubsub_down("subscribe"));
        };
        // Tracked first: a message arriving right after the confirmation is delivered.
        lock(&self.tracked).insert(channel.to_owned(), Track::default());
        let name = self.keys.pubsub(channel);
        match tokio::time::timeout(self.config.command_timeout, sink.subscribe(name)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if !is_unavailable(&e) => {
                lock(&self.tracked).remove(channel);
                count_error("subscribe");
                Err(BrokerError::Backend(Box::new(e)))
            }
            _ => {
                lock(&self.tracked).remove(channel);
                *slot = None;
                self.kick.notify_one();
                Err(self.pubsub_down("subscribe"))
            }
        }
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), BrokerError> {
        let mut slot = self.sink.lock().await;
        if lock(&self.tracked).remove(channel).is_none() {
            return Ok(());
        }
        if let Some(sink) = slot.as_mut() {
            let name = self.keys.pubsub(channel);
            let done = tokio::time::timeout(self.config.command_timeout, sink.unsubscribe(name));
            if !matches!(done.await, Ok(Ok(()))) {
                // A broken connection: the reader reconnects without this channel.
                count_error("unsubscribe");
                *slot = None;
                self.kick.notify_one();
            }
        }
        Ok(())
    }

    /// Keeps the never-published streams of subscribed channels alive (a stream only read
    /// lives `ttl` after its last read), so a quiet channel keeps its epoch while watched.
    async fn maintain(&self) {
        let now = Instant::now();
        let since_last = lock(&self.last_maintain)
            .replace(now)
            .map_or(Duration::ZERO, |t| now.duration_since(t));
        if !self.health.borrow().up {
            return;
        }
        let quiet: Vec<(String, u64)> = lock(&self.tracked)
            .iter()
            .filter(|(_, t)| t.last.as_ref().is_none_or(|p| p.offset == 0))
            .filter_map(|(c, t)| {
                let r = t.retention?;
                let ttl = r.ttl.max(since_last * 2).min(r.meta_ttl.max(r.ttl));
                Some((c.clone(), ttl_ms(ttl)))
            })
            .collect();
        for (channel, ttl) in quiet {
            let mut invocation = self.scripts.touch.prepare_invoke();
            invocation.key(self.keys.meta(&channel)).arg(ttl);
            let mut con = self.con();
            if self
                .run("touch", invocation.invoke_async::<i64>(&mut con))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// The offset part of a stream entry id `<offset>-<seq>`.
fn split_at_dash(id: &[u8]) -> Option<&[u8]> {
    id.split(|&c| c == b'-').next()
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
        Box::pin(self.shared.publish(channel, publication, options))
    }

    fn publish_join<'a>(
        &'a self,
        channel: &'a str,
        info: proto::ClientInfo,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let message = tagged(b'j', &info)?;
            let name = self.shared.keys.pubsub(channel);
            self.shared.publish_raw("join", name, message).await
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
            self.shared.publish_raw("leave", name, message).await
        })
    }

    fn publish_control(&self, control: Control) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let message = encode_control(&control)?;
            let name = self.shared.keys.control.clone();
            self.shared.publish_raw("control", name, message).await
        })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
        retention: &'a HistoryRetention,
    ) -> BoxFuture<'a, Result<HistoryPage, BrokerError>> {
        Box::pin(self.shared.history(channel, query, retention))
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
        Box::pin(self.shared.add_presence(channel, info, ttl))
    }

    fn remove_presence<'a>(
        &'a self,
        channel: &'a str,
        client_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.shared.remove_presence(channel, client_id))
    }

    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, proto::ClientInfo>, BrokerError>> {
        Box::pin(self.shared.presence(channel))
    }

    fn presence_stats<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<PresenceStats, BrokerError>> {
        Box::pin(async move {
            let presence = self.shared.presence(channel).await?;
            let users: HashSet<&str> = presence.values().map(|i| i.user.as_str()).collect();
            Ok(PresenceStats {
                clients: u32::try_from(presence.len()).unwrap_or(u32::MAX),
                users: u32::try_from(users.len()).unwrap_or(u32::MAX),
            })
        })
    }

    fn maintain(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.shared.maintain())
    }

    fn is_healthy(&self) -> bool {
        self.shared.health.borrow().up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publication_messages_round_trip() {
        let p = proto::Publication {
            data: b"{\"a\": 1} with spaces".to_vec(),
            info: Some(proto::ClientInfo {
                user: "ann".into(),
                client_id: "c 1".into(),
                conn_info: Vec::new(),
            }),
            ..Default::default()
        };
        let mut body = b"17 abcdef ".to_vec();
        body.extend_from_slice(&p.encode_to_vec());
        let back = parse_publication_message("chat:a", &body).expect("parses");
        assert_eq!(back.channel, "chat:a");
        assert_eq!((back.offset, back.epoch.as_str()), (17, "abcdef"));
        assert_eq!((&back.data, &back.info), (&p.data, &p.info));
        // Without history: offset 0, empty epoch.
        let mut body = b"0  ".to_vec();
        body.extend_from_slice(&p.encode_to_vec());
        let back = parse_publication_message("x", &body).expect("parses");
        assert_eq!((back.offset, back.epoch.as_str()), (0, ""));
        assert!(parse_publication_message("x", b"nonsense").is_none());
        assert!(parse_publication_message("x", b"12").is_none());
    }

    #[test]
    fn control_messages_round_trip() {
        let controls = [
            Control::DisconnectUser {
                user: "ann".into(),
                client_id: None,
                disconnect: codes::disconnect_message(codes::disconnect::FORCE_RECONNECT),
            },
            Control::DisconnectUser {
                user: "ann".into(),
                client_id: Some("c1".into()),
                disconnect: codes::disconnect_message(codes::disconnect::FORCE_DISCONNECT),
            },
            Control::UnsubscribeUser {
                user: "bob".into(),
                channel: "chat:a".into(),
                client_id: None,
            },
        ];
        for c in controls {
            let bytes = encode_control(&c).expect("encodes");
            assert_eq!(decode_control(&bytes), Some(c));
        }
        assert_eq!(decode_control(b""), None);
        assert_eq!(decode_control(b"x"), None);
    }

    #[test]
    fn positions_only_move_forward_within_an_epoch() {
        let mut last = None;
        advance(&mut last, 3, "e1");
        advance(&mut last, 2, "e1");
        assert_eq!(last.as_ref().map(|p| p.offset), Some(3));
        advance(&mut last, 1, "e2");
        assert_eq!(
            last,
            Some(proto::StreamPosition {
                offset: 1,
                epoch: "e2".into()
            })
        );
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(500) && d < Duration::from_millis(1000));
        }
    }
}
