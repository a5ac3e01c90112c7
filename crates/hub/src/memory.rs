//! [`MemoryBroker`]: the embedded, single-node broker.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use switchboard_proto::prost::Message as _;
use switchboard_proto::v1 as proto;

use crate::broker::{
    BoxFuture, Broker, BrokerHandler, Control, HandlerSlot, HistoryPage, HistoryQuery,
    HistoryRetention, PresenceStats, PublishOptions, PublishOutcome,
};
use crate::clock::Clock;
use crate::config::HubConfig;
use crate::error::{BrokerError, Limit};
use crate::metric;
use crate::util::{lock, millis, random_hex, shard_of};

const SHARDS: usize = 16;
/// Idempotency keys remembered per shard at most (oldest forgotten first).
const MAX_IDEMPOTENCY_KEYS_PER_SHARD: usize = 8192;
/// Bytes counted per stored publication on top of its encoded size: the in-memory
/// `Publication` with its allocations, its ring-buffer slot and its eviction-order entry.
pub const HISTORY_ITEM_OVERHEAD: usize = 384;

/// Memory bounds of a [`MemoryBroker`] (see [`MemoryLimits::from_config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// History bytes held in all channels together: each publication counts its encoded size
    /// plus [`HISTORY_ITEM_OVERHEAD`]. Beyond it the node's oldest publications are evicted
    /// first (recovering past one reports `recovered = false`). Default 256 MiB.
    pub history_bytes: usize,
    /// Channel streams (positions, with or without publications) held at most. A new one
    /// beyond it is refused ([`BrokerError::ChannelLimit`], 106 temporary for clients);
    /// [`Broker::maintain`] makes room near the cap by dropping idle streams (no publication
    /// left, no subscriber on this node), least recently used first. Default 100000.
    pub max_streams: usize,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        Self {
            history_bytes: 256 << 20,
            max_streams: 100_000,
        }
    }
}

impl MemoryLimits {
    /// `[hub] history_memory_mib` and `[hub.limits] max_channels`.
    pub fn from_config(config: &HubConfig) -> Self {
        Self {
            history_bytes: config.history_memory_bytes(),
            max_streams: config.limits.max_channels,
        }
    }
}

/// Hub-internal channels (`$room:…`, `$bus:…`; a namespace starting with `$` can never be
/// configured, so no client reaches them) are outside the memory limits: the hub bounds what it
/// keeps there itself, and a node-bus message (e.g. a TURN revocation) must not be evicted by
/// client traffic.
fn is_internal(channel: &str) -> bool {
    channel
        .split_once(':')
        .is_some_and(|(ns, _)| ns.starts_with('$'))
}

/// An in-process broker: history in bounded ring buffers, presence in maps, delivery by direct
/// call. Time comes from the injected [`Clock`]; expired entries are dropped lazily on access
/// and swept by [`Broker::maintain`], which also drops streams never published to once the node
/// is not subscribed to them and their history TTL has passed since their last read. All
/// futures it returns are ready immediately.
///
/// Memory is bounded by [`MemoryLimits`]: history bytes node-wide (oldest publications evicted
/// first, across all channels) and the number of channel streams.
pub struct MemoryBroker {
    clock: Arc<dyn Clock>,
    handler: HandlerSlot,
    shards: Box<[Mutex<Shard>]>,
    /// Per shard, the store order of the front of its eviction order (`u64::MAX`: empty), so
    /// finding the node's oldest publication takes no lock. Updated under the shard's lock
    /// whenever that front changes.
    fronts: Box<[AtomicU64]>,
    totals: Totals,
    /// Serializes evictions. Lock order: `evicting`, then one shard at a time.
    evicting: Mutex<()>,
    /// [`Broker::count`]'s totals (one node: no per-node split).
    counts: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("limits", &self.totals.limits)
            .field("history_bytes", &self.history_bytes())
            .field("streams", &self.stream_count())
            .finish_non_exhaustive()
    }
}

/// Node-wide accounting, shared by the shards.
struct Totals {
    limits: MemoryLimits,
    /// Cost of the (non-internal) publications held.
    bytes: AtomicUsize,
    /// (Non-internal) streams held.
    streams: AtomicUsize,
    /// Stream identities (a stream recreated under the same name is another stream).
    next_id: AtomicU64,
    /// Store order of publications, node-wide (the eviction order).
    next_seq: AtomicU64,
}

impl Totals {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Shard {
    streams: HashMap<Arc<str>, Stream>,
    /// Stored publications in the order they were stored (for eviction): the front is the
    /// shard's oldest. Entries of publications already gone (trimmed, expired, removed) are
    /// skipped when met and compacted away when they pile up.
    order: VecDeque<Entry>,
    /// `order` length that triggers the next compaction.
    compact_at: usize,
    presence: HashMap<String, HashMap<String, (proto::ClientInfo, u64)>>,
    idempotency: HashMap<(String, String), (proto::StreamPosition, u64)>,
    idempotency_order: VecDeque<((String, String), u64)>,
    interest: HashSet<String>,
}

/// Where a stored publication is, and when it was stored (node-wide store order).
struct Entry {
    channel: Arc<str>,
    stream: u64,
    offset: u64,
    seq: u64,
}

struct Item {
    publication: proto::Publication,
    /// Expiry (ms).
    expires: u64,
    /// Bytes counted in [`Totals::bytes`] (0 in internal streams).
    cost: usize,
}

/// A channel's stream: its publications oldest first. Trims and evictions take the front; so
/// does expiry in client channels (their TTL is their namespace's, fixed), which therefore
/// always hold consecutive offsets.
struct Stream {
    id: u64,
    epoch: String,
    top: u64,
    items: VecDeque<Item>,
    meta_expires: u64,
    /// Until when a stream nobody published to is kept without node interest: the history
    /// TTL after its last read (ms).
    unused_until: u64,
    /// Last publish or read (ms).
    touched: u64,
    /// A hub-internal channel: not counted against the limits.
    internal: bool,
}

impl Stream {
    fn new(id: u64, now: u64, retention: &HistoryRetention, internal: bool) -> Self {
        Self {
            id,
            epoch: random_hex(6),
            top: 0,
            items: VecDeque::new(),
            meta_expires: now.saturating_add(millis(retention.meta_ttl)),
            unused_until: now.saturating_add(millis(retention.ttl)),
            touched: now,
            internal,
        }
    }

    fn push(&mut self, item: Item, totals: &Totals) {
        totals.bytes.fetch_add(item.cost, Ordering::Relaxed);
        self.items.push_back(item);
    }

    fn pop_front(&mut self, totals: &Totals) -> Option<Item> {
        let item = self.items.pop_front()?;
        totals.bytes.fetch_sub(item.cost, Ordering::Relaxed);
        Some(item)
    }

    /// Drops expired publications (wherever they are: node-bus topics mix retentions).
    fn expire(&mut self, now: u64, totals: &Totals) {
        self.items.retain(|i| {
            let keep = i.expires > now;
            if !keep {
                totals.bytes.fetch_sub(i.cost, Ordering::Relaxed);
            }
            keep
        });
    }

    fn prune(&mut self, now: u64, size: usize, totals: &Totals) {
        self.expire(now, totals);
        while self.items.len() > size {
            self.pop_front(totals);
        }
    }

    fn clear(&mut self, totals: &Totals) {
        while self.pop_front(totals).is_some() {}
    }

    /// Whether it holds no publication that has not expired.
    fn is_empty(&self, now: u64) -> bool {
        self.items.iter().all(|i| i.expires <= now)
    }

    fn position(&self) -> proto::StreamPosition {
        proto::StreamPosition {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }
}

impl Shard {
    /// The live stream of `channel`, created (or recreated after meta expiry) as needed; a new
    /// stream must fit under `max_streams`.
    fn stream(
        &mut self,
        channel: &str,
        now: u64,
        retention: &HistoryRetention,
        totals: &Totals,
    ) -> Result<&mut Stream, BrokerError> {
        if !self.streams.contains_key(channel) {
            let internal = is_internal(channel);
            if !internal && !Self::reserve_stream(totals) {
                return Err(BrokerError::ChannelLimit);
            }
            let stream = Stream::new(totals.next_id(), now, retention, internal);
            self.streams.insert(Arc::from(channel), stream);
        }
        let stream = self
            .streams
            .get_mut(channel)
            .ok_or(BrokerError::ChannelLimit)?;
        if stream.meta_expires <= now {
            stream.clear(totals);
            *stream = Stream::new(totals.next_id(), now, retention, stream.internal);
        }
        stream.prune(now, retention.size, totals);
        stream.touched = now;
        Ok(stream)
    }

    /// Counts one more stream; false (nothing counted) at `max_streams`.
    fn reserve_stream(totals: &Totals) -> bool {
        let max = totals.limits.max_streams;
        if totals.streams.fetch_add(1, Ordering::Relaxed) < max {
            return true;
        }
        totals.streams.fetch_sub(1, Ordering::Relaxed);
        metrics::counter!(metric::REFUSED_TOTAL, "reason" => Limit::NodeChannels.reason())
            .increment(1);
        false
    }

    /// Streams that could go to make room: no publication left, no subscriber on this node,
    /// not internal; with when they were last used.
    fn idle_streams(&self, now: u64) -> impl Iterator<Item = (u64, &Arc<str>)> + '_ {
        self.streams
            .iter()
            .filter(move |(name, s)| {
                !s.internal && s.is_empty(now) && !self.interest.contains(&***name)
            })
            .map(|(name, s)| (s.touched, name))
    }

    /// Drops `channel`'s stream if it is still idle and last used at `touched`.
    fn drop_idle(&mut self, channel: &str, touched: u64, now: u64, totals: &Totals) -> bool {
        let idle = self.streams.get(channel).is_some_and(|s| {
            !s.internal
                && s.is_empty(now)
                && s.touched == touched
                && !self.interest.contains(channel)
        });
        if !idle {
            return false;
        }
        if let Some(mut gone) = self.streams.remove(channel) {
            gone.clear(totals);
            totals.streams.fetch_sub(1, Ordering::Relaxed);
        }
        true
    }

    /// Notes a stored publication for eviction.
    fn record(&mut self, channel: &str, stream: u64, offset: u64, totals: &Totals) {
        let Some((name, _)) = self.streams.get_key_value(channel) else {
            return;
        };
        let channel = Arc::clone(name);
        let seq = totals.next_seq.fetch_add(1, Ordering::Relaxed);
        self.order.push_back(Entry {
            channel,
            stream,
            offset,
            seq,
        });
        if self.order.len() >= self.compact_at {
            self.compact();
        }
    }

    /// Whether `entry`'s publication is still held.
    fn holds(&self, entry: &Entry) -> bool {
        self.streams.get(&*entry.channel).is_some_and(|s| {
            s.id == entry.stream
                && s.items
                    .front()
                    .is_some_and(|i| i.publication.offset <= entry.offset)
                && s.items
                    .back()
                    .is_some_and(|i| i.publication.offset >= entry.offset)
        })
    }

    /// Drops the entries of publications already gone.
    fn compact(&mut self) {
        let order = std::mem::take(&mut self.order);
        self.order = order.into_iter().filter(|e| self.holds(e)).collect();
        self.compact_at = (self.order.len() * 2).max(1024);
    }

    /// When (store order) the shard's oldest publication was stored.
    fn oldest(&mut self) -> Option<u64> {
        while let Some(entry) = self.order.front() {
            if self.holds(entry) {
                return Some(entry.seq);
            }
            self.order.pop_front();
        }
        None
    }

    /// The store order of the front entry of the eviction order (`u64::MAX`: none).
    fn front_seq(&self) -> u64 {
        self.order.front().map_or(u64::MAX, |e| e.seq)
    }

    /// Evicts the shard's oldest publications while the node is over its history budget and
    /// they were stored no later than `until` (store order). Returns how many.
    fn evict(&mut self, until: u64, totals: &Totals) -> u64 {
        let mut evicted = 0;
        while totals.bytes.load(Ordering::Relaxed) > totals.limits.history_bytes {
            match self.oldest() {
                Some(seq) if seq <= until => {}
                _ => break,
            }
            let Some(entry) = self.order.pop_front() else {
                break;
            };
            // `oldest` checked that it is held, so it is its stream's front publication (the
            // check below is for safety).
            if let Some(stream) = self.streams.get_mut(&*entry.channel) {
                let front = stream.items.front().map(|i| i.publication.offset);
                if stream.id == entry.stream && front == Some(entry.offset) {
                    stream.pop_front(totals);
                    evicted += 1;
                }
            }
        }
        evicted
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

    fn sweep(&mut self, now: u64, totals: &Totals) {
        let interest = &self.interest;
        self.streams.retain(|channel, s| {
            s.expire(now, totals);
            // A stream only ever read (a subscribe or history call on a channel nobody
            // publishes to) goes once nobody here is subscribed and its history TTL has
            // passed since the last read, not after the (long) meta TTL: else made-up channel
            // names pile up.
            // Recovering from its position later reports `recovered = false`: never a loss.
            let unused = s.top == 0 && s.unused_until <= now && !interest.contains(&**channel);
            let keep = s.meta_expires > now && !unused;
            if !keep {
                s.clear(totals);
                if !s.internal {
                    totals.streams.fetch_sub(1, Ordering::Relaxed);
                }
            }
            keep
        });
        self.compact();
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
    /// A broker reading time from `clock`, with the default [`MemoryLimits`].
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_limits(clock, MemoryLimits::default())
    }

    /// A broker reading time from `clock`, bounded by `limits` (for a hub's configuration:
    /// [`MemoryLimits::from_config`]; [`crate::Hub::with_memory_broker`] does this).
    pub fn with_limits(clock: Arc<dyn Clock>, limits: MemoryLimits) -> Self {
        Self {
            clock,
            handler: HandlerSlot::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            fronts: (0..SHARDS).map(|_| AtomicU64::new(u64::MAX)).collect(),
            totals: Totals {
                limits,
                bytes: AtomicUsize::new(0),
                streams: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                next_seq: AtomicU64::new(0),
            },
            evicting: Mutex::new(()),
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> MemoryLimits {
        self.totals.limits
    }

    /// History bytes held (publication sizes plus [`HISTORY_ITEM_OVERHEAD`] each, internal
    /// channels not counted).
    pub fn history_bytes(&self) -> usize {
        self.totals.bytes.load(Ordering::Relaxed)
    }

    /// Channel streams held (internal channels not counted).
    pub fn stream_count(&self) -> usize {
        self.totals.streams.load(Ordering::Relaxed)
    }

    fn shard(&self, channel: &str) -> &Mutex<Shard> {
        &self.shards[shard_of(channel, self.shards.len())]
    }

    /// Publishes `shard`'s (the `index`th) eviction front to [`MemoryBroker::fronts`] when it
    /// changed (a store only then: the array is shared by every shard's publishers).
    fn note_front(&self, index: usize, shard: &Shard) {
        let seq = shard.front_seq();
        if self.fronts[index].load(Ordering::Relaxed) != seq {
            self.fronts[index].store(seq, Ordering::Relaxed);
        }
    }

    fn handler(&self) -> Option<Arc<dyn BrokerHandler>> {
        self.handler.get()
    }

    /// Evicts the node's oldest publications (across shards) until history fits its budget.
    fn enforce_history_budget(&self) {
        let totals = &self.totals;
        if totals.bytes.load(Ordering::Relaxed) <= totals.limits.history_bytes {
            return;
        }
        let _evicting = lock(&self.evicting);
        let mut evicted = 0;
        while totals.bytes.load(Ordering::Relaxed) > totals.limits.history_bytes {
            // The shard holding the oldest publication, and when (store order) the oldest
            // elsewhere was stored: evict from that shard up to there. Each round evicts or
            // drops at least one entry of an evicted publication already gone, so it ends.
            let (mut oldest, mut runner_up) = ((u64::MAX, 0), u64::MAX);
            for (i, front) in self.fronts.iter().enumerate() {
                let seq = front.load(Ordering::Relaxed);
                if seq < oldest.0 {
                    runner_up = oldest.0;
                    oldest = (seq, i);
                } else {
                    runner_up = runner_up.min(seq);
                }
            }
            if oldest.0 == u64::MAX {
                break;
            }
            let mut shard = lock(&self.shards[oldest.1]);
            evicted += shard.evict(runner_up, totals);
            self.fronts[oldest.1].store(shard.front_seq(), Ordering::Relaxed);
        }
        if evicted > 0 {
            metrics::counter!(metric::HISTORY_EVICTED_TOTAL, "what" => "publication")
                .increment(evicted);
        }
    }

    /// Near `max_streams` (7/8 of it), drops idle streams (no publication left, no local
    /// subscriber), least recently used first, down to 3/4 of it: positions nobody here watches
    /// and that have no history to recover anyway (recovering from one later reports
    /// `recovered = false`, never a silent gap). Runs from [`Broker::maintain`], so a node at
    /// the cap refuses new channels (temporarily) only until the next maintenance.
    fn reclaim_streams(&self, now: u64) {
        let max = self.totals.limits.max_streams;
        let (high, low) = (max - max / 8, max - max / 4);
        let count = self.stream_count();
        if count < high {
            return;
        }
        let mut idle: Vec<(u64, usize, Arc<str>)> = Vec::new();
        for (i, shard) in self.shards.iter().enumerate() {
            let shard = lock(shard);
            idle.extend(
                shard
                    .idle_streams(now)
                    .map(|(t, name)| (t, i, Arc::clone(name))),
            );
        }
        idle.sort_unstable_by_key(|(touched, ..)| *touched);
        let mut dropped = 0u64;
        for (touched, i, name) in idle.into_iter().take(count.saturating_sub(low)) {
            if lock(&self.shards[i]).drop_idle(&name, touched, now, &self.totals) {
                dropped += 1;
            }
        }
        if dropped > 0 {
            metrics::counter!(metric::HISTORY_EVICTED_TOTAL, "what" => "stream").increment(dropped);
        }
    }

    fn publish_now(
        &self,
        channel: &str,
        mut publication: proto::Publication,
        options: &PublishOptions,
    ) -> Result<PublishOutcome, BrokerError> {
        let now = self.clock.now_millis();
        let index = shard_of(channel, self.shards.len());
        let mut shard = lock(&self.shards[index]);
        let key = options
            .idempotency_key
            .as_ref()
            .map(|k| (channel.to_owned(), k.clone()));
        if let Some(key) = &key {
            if let Some((position, exp)) = shard.idempotency.get(key) {
                if *exp > now {
                    return Ok(PublishOutcome {
                        position: position.clone(),
                        suppressed: true,
                    });
                }
            }
        }
        let retention = &options.history;
        let position = if retention.enabled() {
            let stream = shard.stream(channel, now, retention, &self.totals)?;
            stream.top += 1;
            publication.offset = stream.top;
            publication.epoch = stream.epoch.clone();
            let expires = now.saturating_add(millis(retention.ttl));
            let cost = if stream.internal {
                0
            } else {
                publication.encoded_len() + HISTORY_ITEM_OVERHEAD
            };
            let item = Item {
                publication: publication.clone(),
                expires,
                cost,
            };
            stream.push(item, &self.totals);
            stream.prune(now, retention.size, &self.totals);
            stream.meta_expires = now.saturating_add(millis(retention.meta_ttl));
            let (id, internal, position) = (stream.id, stream.internal, stream.position());
            if !internal {
                shard.record(channel, id, position.offset, &self.totals);
                self.note_front(index, &shard);
            }
            position
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
        drop(shard);
        self.enforce_history_budget();
        Ok(PublishOutcome {
            position,
            suppressed: false,
        })
    }

    fn history_now(
        &self,
        channel: &str,
        query: &HistoryQuery,
        retention: &HistoryRetention,
    ) -> Result<HistoryPage, BrokerError> {
        if !retention.enabled() {
            return Ok(HistoryPage::default());
        }
        let now = self.clock.now_millis();
        let mut shard = lock(self.shard(channel));
        let stream = shard.stream(channel, now, retention, &self.totals)?;
        // Someone holds this position (e.g. a long-poll cursor): keep it a while longer.
        stream.unused_until = now.saturating_add(millis(retention.ttl));
        let limit = query.limit.unwrap_or(usize::MAX);
        let publications: Vec<proto::Publication> = if query.reverse {
            stream
                .items
                .iter()
                .rev()
                .filter(|i| {
                    query
                        .since
                        .as_ref()
                        .is_none_or(|s| i.publication.offset < s.offset)
                })
                .take(limit)
                .map(|i| i.publication.clone())
                .collect()
        } else {
            stream
                .items
                .iter()
                .filter(|i| {
                    query
                        .since
                        .as_ref()
                        .is_none_or(|s| i.publication.offset > s.offset)
                })
                .take(limit)
                .map(|i| i.publication.clone())
                .collect()
        };
        Ok(HistoryPage {
            publications,
            position: stream.position(),
        })
    }
}

impl Broker for MemoryBroker {
    fn set_handler(&self, handler: Weak<dyn BrokerHandler>) {
        self.handler.set(handler);
    }

    fn count<'a>(
        &'a self,
        key: &'a str,
        _node: &'a str,
        delta: i64,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        Box::pin(async move {
            let mut counts = lock(&self.counts);
            let before = counts.get(key).copied().unwrap_or(0);
            let after = (before + delta).max(0);
            if after == 0 {
                counts.remove(key);
            } else {
                counts.insert(key.to_owned(), after);
            }
            Ok((before == 0 && after > 0) || (before > 0 && after == 0))
        })
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
        Box::pin(async move { outcome })
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
        Box::pin(async move { page })
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        if let Some(stream) = lock(self.shard(channel)).streams.get_mut(channel) {
            stream.clear(&self.totals);
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
        for (i, shard) in self.shards.iter().enumerate() {
            let mut shard = lock(shard);
            shard.sweep(now, &self.totals);
            self.note_front(i, &shard);
        }
        self.reclaim_streams(now);
        metrics::gauge!(metric::HISTORY_BYTES).set(self.history_bytes() as f64);
        metrics::gauge!(metric::HISTORY_STREAMS).set(self.stream_count() as f64);
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
    async fn eviction_order_does_not_grow_with_trimmed_publications() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let broker = MemoryBroker::new(clock.clone());
        let options = PublishOptions {
            history: retention(),
            idempotency_key: None,
            idempotency_window: Duration::ZERO,
        };
        for _ in 0..20_000 {
            let p = proto::Publication::default();
            broker.publish("busy", p, &options).await.unwrap();
        }
        let entries: usize = broker.shards.iter().map(|s| lock(s).order.len()).sum();
        assert!(
            entries <= 1024,
            "{entries} entries for 10 publications held"
        );
        // Each: offset, epoch and the overhead.
        let held = 10 * (32 + HISTORY_ITEM_OVERHEAD);
        assert!(broker.history_bytes() <= held, "{}", broker.history_bytes());
        broker.remove_history("busy").await.unwrap();
        assert_eq!(broker.history_bytes(), 0);
        broker.maintain().await;
        let entries: usize = broker.shards.iter().map(|s| lock(s).order.len()).sum();
        assert_eq!(entries, 0);
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
