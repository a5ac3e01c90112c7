//! The connection driver: the command connection (timeouts, health), the pub/sub connection
//! and its reader task (dispatch to the handler, pings, reconnect with backoff, resubscribe and
//! catch up from history).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
use ::redis::{ErrorKind, RedisError, RedisResult, ServerErrorKind};
use futures_core::Stream;
use switchboard_proto::prost::Message;
use switchboard_proto::v1 as proto;
use tokio::sync::watch;

use super::config::{RedisConfig, RedisHealth};
use super::keys::Keys;
use super::scripts::Scripts;
use super::wire::{
    decode_control, decode_publication, malformed, parse_publication_message, parse_u64,
    split_at_dash, ttl_ms,
};
use crate::broker::{BrokerHandler, HandlerSlot, HistoryPage, HistoryQuery, HistoryRetention};
use crate::error::BrokerError;
use crate::util::{lock, random_hex};

/// Channels per SUBSCRIBE when resubscribing after a reconnect.
const SUBSCRIBE_BATCH: usize = 512;
/// The first wait before reconnecting again (it doubles up to the configured maximum).
const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(100);
/// What clients are told while Redis cannot be reached (details go to [`RedisHealth`]).
const UNREACHABLE: &str = "Redis is unreachable";
const TIMED_OUT: &str = "Redis did not answer in time";
const PUBSUB_DOWN: &str = "Redis pub/sub connection is down";

/// What the node knows about a channel it is subscribed to.
#[derive(Default)]
pub(super) struct Track {
    /// The last position handed to the handler (or read by the hub while subscribing): where
    /// catching up after a reconnect starts.
    pub(super) last: Option<proto::StreamPosition>,
    /// The channel's retention, learnt from history reads.
    pub(super) retention: Option<HistoryRetention>,
}

/// The live pub/sub connection, owned by the reader task.
pub(super) struct Live {
    pub(super) sink: PubSubSink,
    pub(super) stream: PubSubStream,
}

pub(super) struct Shared {
    pub(super) config: RedisConfig,
    pub(super) keys: Keys,
    pub(super) client: ::redis::Client,
    /// Commands (scripts, PUBLISH): one multiplexed connection, reconnected on demand.
    pub(super) commands: ConnectionManager,
    pub(super) scripts: Scripts,
    pub(super) handler: HandlerSlot,
    /// The pub/sub connection's command side: `None` while it is down. Held across
    /// (un)subscribe round trips so they and resubscription after a reconnect never interleave.
    pub(super) sink: tokio::sync::Mutex<Option<PubSubSink>>,
    /// Channels this node is subscribed to (changed only under `sink`).
    pub(super) tracked: Mutex<HashMap<String, Track>>,
    /// Wakes the reader when a (un)subscribe found the pub/sub connection broken.
    pub(super) kick: tokio::sync::Notify,
    /// Mirror of `health.commands`, read on every command.
    pub(super) commands_up: AtomicBool,
    pub(super) health: watch::Sender<RedisHealth>,
    pub(super) last_maintain: Mutex<Option<Instant>>,
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

pub(super) fn count_error(op: &'static str) {
    metrics::counter!(crate::metric::BROKER_ERRORS_TOTAL, "broker" => "redis", "op" => op)
        .increment(1);
}

/// The reader task: delivers pub/sub messages, and reconnects (with backoff) and resubscribes
/// when the connection is lost.
pub(super) async fn reader(shared: Arc<Shared>, mut live: Option<Live>) {
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
    pub(super) fn handler(&self) -> Option<Arc<dyn BrokerHandler>> {
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

    pub(super) fn con(&self) -> ConnectionManager {
        self.commands.clone()
    }

    /// Runs one command (bounded by the timeouts), keeping the health up to date. While the
    /// command connection is known to be down, fails at once: the reader task probes Redis
    /// ([`Shared::check_commands`]) every ping interval and lets commands through again.
    pub(super) async fn run<T>(
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
    pub(super) async fn check_version(&self) -> Result<(), BrokerError> {
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

    /// Reads history; with `create`, a missing stream is created with that retention.
    pub(super) async fn read_history(
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

    // ---- pub/sub ----

    pub(super) async fn open_pubsub(&self) -> Result<(PubSubSink, PubSubStream), String> {
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
    pub(super) async fn install(&self, mut sink: PubSubSink) -> Result<(), String> {
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

    pub(super) async fn subscribe(&self, channel: &str) -> Result<(), BrokerError> {
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

    pub(super) async fn unsubscribe(&self, channel: &str) -> Result<(), BrokerError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
