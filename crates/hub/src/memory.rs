//! [`MemoryBroker`]: the embedded, single-node broker.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use switchboard_proto::v1 as proto;

use crate::broker::{
    BoxFuture, Broker, BrokerHandler, Control, HandlerSlot, HistoryPage, HistoryQuery,
    HistoryRetention, PresenceStats, PublishOptions, PublishOutcome,
};
use crate::clock::Clock;
use crate::error::BrokerError;
use crate::util::{lock, millis, random_hex, shard_of};

const SHARDS: usize = 16;
/// Idempotency keys remembered per shard at most (oldest forgotten first).
const MAX_IDEMPOTENCY_KEYS_PER_SHARD: usize = 8192;

/// An in-process broker: history in bounded ring buffers, presence in maps, delivery by direct
/// call. Time comes from the injected [`Clock`]; expired entries are dropped lazily on access
/// and swept by [`Broker::maintain`], which also drops streams never published to once the node
/// is not subscribed to them and their history TTL has passed since their last read. All
/// futures it returns are ready immediately.
pub struct MemoryBroker {
    clock: Arc<dyn Clock>,
    handler: HandlerSlot,
    shards: Box<[Mutex<Shard>]>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Shard {
    streams: HashMap<String, Stream>,
    presence: HashMap<String, HashMap<String, (proto::ClientInfo, u64)>>,
    idempotency: HashMap<(String, String), (proto::StreamPosition, u64)>,
    idempotency_order: VecDeque<((String, String), u64)>,
    interest: HashSet<String>,
}

struct Stream {
    epoch: String,
    top: u64,
    /// (publication, expires at ms), oldest first.
    items: VecDeque<(proto::Publication, u64)>,
    meta_expires: u64,
    /// Until when a stream nobody published to is kept without node interest: the history
    /// TTL after its last read (ms).
    unused_until: u64,
}

impl Stream {
    fn new(now: u64, retention: &HistoryRetention) -> Self {
        Self {
            epoch: random_hex(6),
            top: 0,
            items: VecDeque::new(),
            meta_expires: now.saturating_add(millis(retention.meta_ttl)),
            unused_until: now.saturating_add(millis(retention.ttl)),
        }
    }

    fn prune(&mut self, now: u64, size: usize) {
        self.items.retain(|(_, exp)| *exp > now);
        while self.items.len() > size {
            self.items.pop_front();
        }
    }

    fn position(&self) -> proto::StreamPosition {
        proto::StreamPosition {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }
}

impl Shard {
    /// The live stream of `channel`, created (or recreated after meta expiry) as needed.
    fn stream(&mut self, channel: &str, now: u64, retention: &HistoryRetention) -> &mut Stream {
        let stream = self
            .streams
            .entry(channel.to_owned())
            .or_insert_with(|| Stream::new(now, retention));
        if stream.meta_expires <= now {
            *stream = Stream::new(now, retention);
        }
        stream.prune(now, retention.size);
        stream
    }

    fn remember_key(
        &mut self,
        key: (String, String),
        position: proto::StreamPosition,
        expires: u64,
    ) {
        self.idempotency.insert(key.clone(), (position, expires));
        self.idempotency_order.push_back((key, expires));
        while self.idempotency_order.len() > MAX_IDEMPOTENCY_KEYS_PER_SHARD {
            if let Some((old, exp)) = self.idempotency_order.pop_front() {
                if self.idempotency.get(&old).is_some_and(|(_, e)| *e == exp) {
                    self.idempotency.remove(&old);
                }
            }
        }
    }

    fn sweep(&mut self, now: u64) {
        let interest = &self.interest;
        self.streams.retain(|channel, s| {
            s.items.retain(|(_, exp)| *exp > now);
            // A stream only ever read (a subscribe or history call on a channel nobody
            // publishes to) goes once nobody here is subscribed and its history TTL has
            // passed since the last read, not after the (long) meta TTL: else made-up channel
            // names pile up.
            // Recovering from its position later reports `recovered = false`: never a loss.
            let unused = s.top == 0 && s.unused_until <= now && !interest.contains(channel);
            s.meta_expires > now && !unused
        });
        self.presence.retain(|_, clients| {
            clients.retain(|_, (_, exp)| *exp > now);
            !clients.is_empty()
        });
        self.idempotency.retain(|_, (_, exp)| *exp > now);
        self.idempotency_order.retain(|(_, exp)| *exp > now);
    }

    fn live_presence(
        &mut self,
        channel: &str,
        now: u64,
    ) -> Option<&HashMap<String, (proto::ClientInfo, u64)>> {
        let clients = self.presence.get_mut(channel)?;
        clients.retain(|_, (_, exp)| *exp > now);
        Some(clients)
    }
}

impl MemoryBroker {
    /// A broker reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            handler: HandlerSlot::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    fn shard(&self, channel: &str) -> &Mutex<Shard> {
        &self.shards[shard_of(channel, self.shards.len())]
    }

    fn handler(&self) -> Option<Arc<dyn BrokerHandler>> {
        self.handler.get()
    }

    fn publish_now(
        &self,
        channel: &str,
        mut publication: proto::Publication,
        options: &PublishOptions,
    ) -> PublishOutcome {
        let now = self.clock.now_millis();
        let mut shard = lock(self.shard(channel));
        let key = options
            .idempotency_key
            .as_ref()
            .map(|k| (channel.to_owned(), k.clone()));
        if let Some(key) = &key {
            if let Some((position, exp)) = shard.idempotency.get(key) {
                if *exp > now {
                    return PublishOutcome {
                        position: position.clone(),
                        suppressed: true,
                    };
                }
            }
        }
        let retention = &options.history;
        let position = if retention.enabled() {
            let stream = shard.stream(channel, now, retention);
            stream.top += 1;
            publication.offset = stream.top;
            publication.epoch = stream.epoch.clone();
            let expires = now.saturating_add(millis(retention.ttl));
            stream.items.push_back((publication.clone(), expires));
            stream.prune(now, retention.size);
            stream.meta_expires = now.saturating_add(millis(retention.meta_ttl));
            stream.position()
        } else {
            publication.offset = 0;
            publication.epoch.clear();
            proto::StreamPosition::default()
        };
        if let Some(key) = key {
            let expires = now.saturating_add(millis(options.idempotency_window));
            shard.remember_key(key, position.clone(), expires);
        }
        // Delivered under the shard lock so deliveries of one channel keep offset order.
        if shard.interest.contains(channel) {
            if let Some(handler) = self.handler() {
                handler.on_publication(channel, publication);
            }
        }
        PublishOutcome {
            position,
            suppressed: false,
        }
    }

    fn history_now(
        &self,
        channel: &str,
        query: &HistoryQuery,
        retention: &HistoryRetention,
    ) -> HistoryPage {
        if !retention.enabled() {
            return HistoryPage::default();
        }
        let now = self.clock.now_millis();
        let mut shard = lock(self.shard(channel));
        let stream = shard.stream(channel, now, retention);
        // Someone holds this position (e.g. a long-poll cursor): keep it a while longer.
        stream.unused_until = now.saturating_add(millis(retention.ttl));
        let limit = query.limit.unwrap_or(usize::MAX);
        let publications: Vec<proto::Publication> = if query.reverse {
            stream
                .items
                .iter()
                .rev()
                .filter(|(p, _)| query.since.as_ref().is_none_or(|s| p.offset < s.offset))
                .take(limit)
                .map(|(p, _)| p.clone())
                .collect()
        } else {
            stream
                .items
                .iter()
                .filter(|(p, _)| query.since.as_ref().is_none_or(|s| p.offset > s.offset))
                .take(limit)
                .map(|(p, _)| p.clone())
                .collect()
        };
        HistoryPage {
            publications,
            position: stream.position(),
        }
    }
}

impl Broker for MemoryBroker {
    fn set_handler(&self, handler: Weak<dyn BrokerHandler>) {
        self.handler.set(handler);
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        lock(self.shard(channel))
            .interest
            .insert(channel.to_owned());
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        lock(self.shard(channel)).interest.remove(channel);
        Box::pin(async { Ok(()) })
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: proto::Publication,
        options: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<PublishOutcome, BrokerError>> {
        let outcome = self.publish_now(channel, publication, options);
        Box::pin(async move { Ok(outcome) })
    }

    fn publish_join<'a>(
        &'a self,
        channel: &'a str,
        info: proto::ClientInfo,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let shard = lock(self.shard(channel));
        if shard.interest.contains(channel) {
            if let Some(h) = self.handler() {
                h.on_join(channel, info);
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn publish_leave<'a>(
        &'a self,
        channel: &'a str,
        info: proto::ClientInfo,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let shard = lock(self.shard(channel));
        if shard.interest.contains(channel) {
            if let Some(h) = self.handler() {
                h.on_leave(channel, info);
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn publish_control(&self, control: Control) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some(h) = self.handler() {
                h.on_control(control).await;
            }
            Ok(())
        })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
        retention: &'a HistoryRetention,
    ) -> BoxFuture<'a, Result<HistoryPage, BrokerError>> {
        let page = self.history_now(channel, &query, retention);
        Box::pin(async move { Ok(page) })
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        if let Some(stream) = lock(self.shard(channel)).streams.get_mut(channel) {
            stream.items.clear();
        }
        Box::pin(async { Ok(()) })
    }

    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: proto::ClientInfo,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let expires = self.clock.now_millis().saturating_add(millis(ttl));
        lock(self.shard(channel))
            .presence
            .entry(channel.to_owned())
            .or_default()
            .insert(info.client_id.clone(), (info, expires));
        Box::pin(async { Ok(()) })
    }

    fn remove_presence<'a>(
        &'a self,
        channel: &'a str,
        client_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let mut shard = lock(self.shard(channel));
        if let Some(clients) = shard.presence.get_mut(channel) {
            clients.remove(client_id);
            if clients.is_empty() {
                shard.presence.remove(channel);
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, proto::ClientInfo>, BrokerError>> {
        let now = self.clock.now_millis();
        let map = lock(self.shard(channel))
            .live_presence(channel, now)
            .map(|c| {
                c.iter()
                    .map(|(id, (info, _))| (id.clone(), info.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Box::pin(async move { Ok(map) })
    }

    fn presence_stats<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<PresenceStats, BrokerError>> {
        let now = self.clock.now_millis();
        let stats = lock(self.shard(channel))
            .live_presence(channel, now)
            .map(|c| {
                let users: HashSet<&str> = c.values().map(|(i, _)| i.user.as_str()).collect();
                PresenceStats {
                    clients: u32::try_from(c.len()).unwrap_or(u32::MAX),
                    users: u32::try_from(users.len()).unwrap_or(u32::MAX),
                }
            })
            .unwrap_or_default();
        Box::pin(async move { Ok(stats) })
    }

    fn maintain(&self) -> BoxFuture<'_, ()> {
        let now = self.clock.now_millis();
        for shard in self.shards.iter() {
            lock(shard).sweep(now);
        }
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn retention() -> HistoryRetention {
        HistoryRetention {
            size: 10,
            ttl: Duration::from_secs(60),
            meta_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }

    fn streams(broker: &MemoryBroker) -> usize {
        broker.shards.iter().map(|s| lock(s).streams.len()).sum()
    }

    #[tokio::test]
    async fn streams_only_read_do_not_outlive_their_subscribers() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let broker = MemoryBroker::new(clock.clone());
        let r = retention();
        let position_only = HistoryQuery {
            limit: Some(0),
            ..Default::default()
        };
        // A client subscribing to (or reading) many made-up channels, one after the other.
        for i in 0..1000 {
            let channel = format!("junk{i}");
            broker.subscribe(&channel).await.unwrap();
            broker
                .history(&channel, position_only.clone(), &r)
                .await
                .unwrap();
            broker.unsubscribe(&channel).await.unwrap();
        }
        // Kept: a stream with publications, and an empty one someone is subscribed to.
        let options = PublishOptions {
            history: r,
            idempotency_key: None,
            idempotency_window: Duration::ZERO,
        };
        let p = proto::Publication::default();
        broker.publish("used", p, &options).await.unwrap();
        broker.subscribe("watched").await.unwrap();
        let watched = broker
            .history("watched", position_only.clone(), &r)
            .await
            .unwrap();
        // Read now and then without a subscription (a long-poll client between requests).
        let polled = broker
            .history("polled", position_only.clone(), &r)
            .await
            .unwrap();
        broker.maintain().await;
        assert_eq!(
            streams(&broker),
            1003,
            "kept for the history TTL (short reconnects)"
        );
        clock.advance(Duration::from_secs(50));
        let again = broker
            .history("polled", position_only.clone(), &r)
            .await
            .unwrap();
        assert_eq!(again.position, polled.position);
        clock.advance(Duration::from_secs(11));
        broker.maintain().await;
        assert_eq!(
            streams(&broker),
            3,
            "made-up channels dropped, the polled one kept"
        );
        clock.advance(Duration::from_secs(50));
        broker.maintain().await;
        assert_eq!(streams(&broker), 2);
        let again = broker.history("watched", position_only, &r).await.unwrap();
        assert_eq!(
            again.position, watched.position,
            "a watched stream keeps its epoch"
        );
    }
}
