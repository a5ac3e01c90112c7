//! [`HubInner`]: the state every [`crate::Hub`] clone and [`crate::Session`] share, the
//! channel logic on it (publish, fan-out, cleanup), and the broker's deliveries to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use switchboard_proto::v1 as proto;

use crate::auth::JwtVerifier;
use crate::broker::{BoxFuture, Broker, BrokerHandler, Control, HistoryQuery, PublishOptions};
use crate::budget::PublishRates;
use crate::bus::{Bus, BUS_PREFIX};
use crate::channel::{namespace_of, validate_channel};
use crate::clock::Clock;
use crate::codes;
use crate::config::{HubConfig, NamespaceOptions};
use crate::error::{HubError, Limit};
use crate::push::SharedPush;
use crate::rooms::{SignalHub, ROOM_PREFIX};
use crate::state::{
    publication_push, unsubscribe_push, ChannelShard, Cleanup, Delivery, Registry, SessionShared,
    Subscriber,
};
use crate::util::{lock, shard_of};

/// Everything a hub is: configuration, broker and clock, the session registry, the channel
/// index, signaling rooms and the node bus.
pub(crate) struct HubInner {
    pub(crate) me: Weak<HubInner>,
    pub(crate) config: HubConfig,
    pub(crate) verifier: JwtVerifier,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) uid: String,
    pub(crate) started_ms: u64,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) shards: Box<[ChannelShard]>,
    pub(crate) pending: Mutex<Vec<Cleanup>>,
    /// WebRTC signaling rooms.
    pub(crate) signal: SignalHub,
    /// Internal node-to-node topics.
    pub(crate) bus: Bus,
    /// The client publish budgets' rates.
    pub(crate) publish_rates: PublishRates,
    /// Entries of every shard's `channels` (bounded by `limits.max_channels`).
    pub(crate) channel_count: AtomicUsize,
    /// Told of channels becoming occupied or vacated on this node and of sessions ending
    /// (webhooks); called under the hub's locks, so it must only queue.
    pub(crate) observer: std::sync::OnceLock<crate::NodeObserver>,
}

impl HubInner {
    /// Tells the observer, when there is one.
    pub(crate) fn observe(&self, event: crate::NodeEvent) {
        if let Some(o) = self.observer.get() {
            o(event);
        }
    }

    /// Drops the publish budgets no session holds that are full again.
    pub(crate) fn forget_idle_publishers(&self) {
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
    /// [`crate::Hub::maintain`].
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
                self.signal.room_left(&room, &peer, &user, false).await;
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
                    self.observe(crate::NodeEvent::ChannelVacated {
                        channel: channel.to_owned(),
                    });
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
    fn fan_out(&self, channel: &str, push: &Arc<SharedPush>) {
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
            return self.signal.on_room_signal(room, &publication);
        }
        if let Some(topic) = channel.strip_prefix(BUS_PREFIX) {
            return self.bus.deliver(topic, &publication);
        }
        self.fan_out(channel, &publication_push(publication));
    }

    fn on_join(&self, channel: &str, info: proto::ClientInfo) {
        if let Some(room) = channel.strip_prefix(ROOM_PREFIX) {
            return self.signal.on_room_join(room, &info);
        }
        let push = proto::Push {
            push: Some(proto::push::Push::Join(proto::Join {
                channel: channel.to_owned(),
                info: Some(info),
            })),
        };
        self.fan_out(channel, &Arc::new(SharedPush::new(push)));
    }

    fn on_leave(&self, channel: &str, info: proto::ClientInfo) {
        if let Some(room) = channel.strip_prefix(ROOM_PREFIX) {
            return self.signal.on_room_leave(room, &info);
        }
        let push = proto::Push {
            push: Some(proto::push::Push::Leave(proto::Leave {
                channel: channel.to_owned(),
                info: Some(info),
            })),
        };
        self.fan_out(channel, &Arc::new(SharedPush::new(push)));
    }

    fn on_control(&self, control: Control) -> BoxFuture<'_, ()> {
        Box::pin(self.handle_control(control))
    }
}
