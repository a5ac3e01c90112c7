//! [`Session`]: one connected client.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use switchboard_proto::v1 as proto;

use crate::broker::HistoryQuery;
use crate::codes;
use crate::config::NamespaceOptions;
use crate::error::{HubError, Limit};
use crate::inner::HubInner;
use crate::push::SharedPush;
use crate::state::{Cleanup, Delivery, SessionShared, SubState, Subscriber};
use crate::util::lock;

fn signal_error(e: impl Into<switchboard_signal::Error>) -> HubError {
    HubError::Signal(e.into())
}

/// One connected client, returned by [`crate::Hub::connect`].
///
/// Commands are methods (`subscribe`, `publish`, ... or [`Session::handle`] for a protocol
/// `Command`); pushes (publications, join/leave, unsubscribe, disconnect) come out of
/// [`Session::recv`] from a bounded queue. When the hub ends the session (slow consumer,
/// server API disconnect, ...) `recv` yields a `Disconnect` push, then `None`: the transport
/// then closes the connection and drops the session.
///
/// Dropping the session disconnects it: subscriptions end, presence entries are removed and
/// leave messages published (in a spawned task when a tokio runtime is current, else at the
/// next [`crate::Hub::maintain`]). [`Session::close`] does the same and waits for it.
///
/// Ordering rule for transports: write a command's reply before writing pushes received after
/// the command returned. Pushes that follow a subscribe (publications newer than the returned
/// position) are queued before `subscribe` returns.
pub struct Session {
    pub(crate) shared: Arc<SessionShared>,
    pub(crate) hub: Arc<HubInner>,
    pub(crate) released: AtomicBool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client_id", &self.shared.info.client_id)
            .field("user", &self.shared.info.user)
            .field("transport", &self.shared.transport)
            .finish_non_exhaustive()
    }
}

/// Undoes a half-done subscribe if the subscribe future fails or is dropped.
struct SubscribeGuard<'a> {
    session: &'a Session,
    channel: &'a str,
    armed: bool,
}

impl SubscribeGuard<'_> {
    /// Removes the subscriber and the reservation; returns the broker cleanup to run.
    fn undo(&mut self) -> Option<Cleanup> {
        self.armed = false;
        let s = &self.session.shared;
        lock(&s.subscriptions).remove(self.channel);
        let removed = {
            let mut chans = lock(&self.session.hub.shard(self.channel).channels);
            chans
                .get_mut(self.channel)
                .and_then(|cs| cs.subs.remove(s.client_id()))
        };
        Some(Cleanup::Unsubscribed {
            channel: self.channel.to_owned(),
            info: s.info.clone(),
            presence: removed.as_ref().is_some_and(|r| r.presence),
            leave: removed.as_ref().is_some_and(|r| r.joined),
        })
    }

    async fn fail(mut self, error: HubError) -> HubError {
        if let Some(cleanup) = self.undo() {
            self.session.hub.run_cleanup(cleanup).await;
        }
        error
    }
}

impl Drop for SubscribeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Some(cleanup) = self.undo() {
                self.session.hub.schedule(cleanup);
            }
        }
    }
}

impl Session {
    /// The server-assigned connection id.
    pub fn client_id(&self) -> &str {
        &self.shared.info.client_id
    }

    /// The user id (`sub` claim); empty for anonymous.
    pub fn user(&self) -> &str {
        &self.shared.info.user
    }

    /// Who this connection is, as others see it in presence and publications.
    pub fn info(&self) -> &proto::ClientInfo {
        &self.shared.info
    }

    /// The transport name given to `connect`.
    pub fn transport(&self) -> &str {
        &self.shared.transport
    }

    /// Client library name and version from the connect request.
    pub fn client_name_version(&self) -> (&str, &str) {
        (&self.shared.client_name, &self.shared.client_version)
    }

    /// The result to answer the connect command with.
    pub fn connect_result(&self) -> proto::ConnectResult {
        let now = self.hub.clock.now_millis() / 1000;
        let ttl = self.shared.expires_at.map(|exp| exp.saturating_sub(now));
        proto::ConnectResult {
            client_id: self.client_id().to_owned(),
            user: self.user().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            expires: ttl.is_some(),
            ttl: ttl.map_or(0, |t| u32::try_from(t).unwrap_or(u32::MAX)),
        }
    }

    /// Channels currently subscribed (or being subscribed).
    pub fn channels(&self) -> Vec<String> {
        lock(&self.shared.subscriptions).iter().cloned().collect()
    }

    /// The next push; after the session ends, its `Disconnect` push once, then `None`.
    /// Cancel-safe (use it in `select!`).
    pub async fn recv(&self) -> Option<Arc<SharedPush>> {
        self.shared.queue.recv().await
    }

    /// The next push if one is ready (long-poll), like [`Session::recv`] without waiting.
    pub fn try_recv(&self) -> Option<Arc<SharedPush>> {
        self.shared.queue.try_pop().ok().flatten()
    }

    /// The disconnect that ended the session, if it has ended.
    pub fn disconnected(&self) -> Option<proto::Disconnect> {
        self.shared.queue.closed()
    }

    /// Queued pushes and their accounted bytes.
    pub fn queued(&self) -> (usize, usize) {
        self.shared.queue.usage()
    }

    /// Ends the session from the transport side (e.g. write error, missed pongs): pending
    /// pushes are dropped and `recv` yields `disconnect` next. Drop or [`Session::close`] the
    /// session afterwards.
    pub fn disconnect(&self, disconnect: proto::Disconnect) {
        self.shared.queue.close(disconnect, true);
    }

    /// Disconnects and waits until subscriptions, presence and leave messages are cleaned up.
    pub async fn close(self) {
        for cleanup in self.release() {
            self.hub.run_cleanup(cleanup).await;
        }
    }

    fn release(&self) -> Vec<Cleanup> {
        if self.released.swap(true, Ordering::SeqCst) {
            return Vec::new();
        }
        let s = &self.shared;
        s.queue.close(
            codes::disconnect_message(codes::disconnect::CONNECTION_CLOSED),
            true,
        );
        {
            let mut reg = lock(&self.hub.registry);
            reg.sessions.remove(s.client_id());
            if !s.anonymous {
                if let Some(ids) = reg.users.get_mut(&s.info.user) {
                    ids.remove(s.client_id());
                    if ids.is_empty() {
                        reg.users.remove(&s.info.user);
                    }
                }
            }
            metrics::gauge!(crate::metric::CONNECTIONS).set(reg.sessions.len() as f64);
        }
        self.hub.observe(crate::NodeEvent::SessionClosed {
            client_id: s.client_id().to_owned(),
            user: s.info.user.clone(),
            transport: s.transport.clone(),
        });
        let mut cleanups = self.hub.signal.room_release(s);
        let channels: Vec<String> = lock(&s.subscriptions).drain().collect();
        for channel in channels {
            let removed = {
                let mut chans = lock(&self.hub.shard(&channel).channels);
                chans
                    .get_mut(&channel)
                    .and_then(|cs| cs.subs.remove(s.client_id()))
            };
            if let Some(sub) = removed {
                cleanups.push(Cleanup::Unsubscribed {
                    channel,
                    info: s.info.clone(),
                    presence: sub.presence,
                    leave: sub.joined,
                });
            }
        }
        cleanups
    }

    fn namespace(&self, channel: &str) -> Result<&NamespaceOptions, HubError> {
        self.shared.ensure_open()?;
        self.hub.namespace(channel)
    }

    fn can_subscribe(&self, ns: &NamespaceOptions, channel: &str) -> bool {
        self.shared.may_subscribe(ns, channel)
    }

    /// Subscribes to `channel`. With `recover` (the last position the client saw), the result
    /// holds exactly the publications it missed, in order, when the channel history still has
    /// all of them in the same epoch (`recovered = true`); otherwise `recovered = false`.
    /// Publications after the returned position are queued, none lost or duplicated.
    ///
    /// Errors: 107 bad channel, 102 unknown namespace, 103 permission denied, 105 already
    /// subscribed, 106 too many channels (on the connection; or on the node, temporary), 100
    /// broker failure.
    pub async fn subscribe(
        &self,
        channel: &str,
        recover: Option<proto::StreamPosition>,
    ) -> Result<proto::SubscribeResult, HubError> {
        let ns = self.namespace(channel)?;
        if !self.can_subscribe(ns, channel) {
            return Err(HubError::PermissionDenied);
        }
        let s = &self.shared;
        {
            let mut subs = lock(&s.subscriptions);
            if subs.contains(channel) {
                return Err(HubError::AlreadySubscribed);
            }
            if subs.len() >= self.hub.config.limits.max_channels_per_connection {
                return Err(HubError::LimitExceeded);
            }
            subs.insert(channel.to_owned());
        }
        let guard = SubscribeGuard {
            session: self,
            channel,
            armed: true,
        };
        let hub = &self.hub;
        let shard = hub.shard(channel);

        // 1. Take the subscription first: from here on deliveries are buffered.
        let taken: Result<(), HubError> = async {
            let _interest = shard.interest.lock().await;
            let need_broker = {
                let mut chans = lock(&shard.channels);
                if s.queue.is_closed() {
                    return Err(HubError::SessionClosed);
                }
                if !chans.contains_key(channel) && !hub.reserve_channel() {
                    return Err(HubError::Limit(Limit::NodeChannels));
                }
                let new = !chans.contains_key(channel);
                let cs = chans.entry(channel.to_owned()).or_default();
                cs.subs
                    .insert(s.client_id().to_owned(), Subscriber::pending(Arc::clone(s)));
                if new {
                    hub.observe(crate::NodeEvent::ChannelOccupied {
                        channel: channel.to_owned(),
                    });
                }
                !cs.broker_subscribed
            };
            if need_broker {
                hub.broker.subscribe(channel).await?;
                if let Some(cs) = lock(&shard.channels).get_mut(channel) {
                    cs.broker_subscribed = true;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = taken {
            return Err(guard.fail(e).await);
        }

        // 2. Then read the position (and the missed publications).
        let mut result = proto::SubscribeResult {
            was_recovering: recover.is_some(),
            ..Default::default()
        };
        let retention = ns.retention();
        let mut position = None;
        if retention.enabled() {
            let query = HistoryQuery {
                since: recover.clone(),
                limit: if recover.is_some() { None } else { Some(0) },
                reverse: false,
            };
            let page = match hub.broker.history(channel, query, &retention).await {
                Ok(page) => page,
                Err(e) => return Err(guard.fail(e.into()).await),
            };
            if let Some(since) = &recover {
                let top = &page.position;
                let missed = top.offset.checked_sub(since.offset);
                result.recovered = since.epoch == top.epoch
                    && missed == Some(page.publications.len() as u64)
                    && page
                        .publications
                        .first()
                        .is_none_or(|p| p.offset == since.offset + 1);
                if result.recovered {
                    result.publications = page.publications;
                }
            }
            result.recoverable = true;
            result.offset = page.position.offset;
            result.epoch = page.position.epoch.clone();
            position = Some(page.position);
        }

        // 3. Presence and join.
        let info = s.info.clone();
        if ns.presence && self.mark(channel, |sub| sub.presence = true) {
            if let Err(e) = hub
                .broker
                .add_presence(channel, info.clone(), hub.config.presence_ttl())
                .await
            {
                return Err(guard.fail(e.into()).await);
            }
        }
        if ns.join_leave && self.mark(channel, |sub| sub.joined = true) {
            if let Err(e) = hub.broker.publish_join(channel, info).await {
                return Err(guard.fail(e.into()).await);
            }
        }

        // 4. Go live: flush what arrived meanwhile, dropping what the position already covers.
        let mut guard = guard;
        guard.armed = false;
        let mut chans = lock(&shard.channels);
        let Some(cs) = chans.get_mut(channel) else {
            return Ok(result);
        };
        let Some(sub) = cs.subs.get_mut(s.client_id()) else {
            return Ok(result);
        };
        let SubState::Pending(buffered) =
            std::mem::replace(&mut sub.state, SubState::Live(position))
        else {
            return Ok(result);
        };
        let mut gap = false;
        for push in &buffered {
            if sub.deliver(push) == Delivery::Gap {
                gap = true;
                break;
            }
        }
        if gap {
            if let Some(sub) = cs.subs.remove(s.client_id()) {
                metrics::counter!(crate::metric::INSUFFICIENT_STATE_TOTAL).increment(1);
                hub.kick(
                    channel,
                    sub,
                    codes::unsubscribe::INSUFFICIENT_STATE,
                    "insufficient state",
                );
            }
        }
        Ok(result)
    }

    /// Applies `f` to this session's subscriber entry of `channel`; false if it is gone.
    fn mark(&self, channel: &str, f: impl FnOnce(&mut Subscriber)) -> bool {
        let mut chans = lock(&self.hub.shard(channel).channels);
        match chans
            .get_mut(channel)
            .and_then(|cs| cs.subs.get_mut(self.client_id()))
        {
            Some(sub) => {
                f(sub);
                true
            }
            None => false,
        }
    }

    /// Unsubscribes from `channel` (a no-op when not subscribed).
    pub async fn unsubscribe(&self, channel: &str) -> Result<proto::UnsubscribeResult, HubError> {
        self.shared.ensure_open()?;
        crate::channel::validate_channel(channel, self.hub.config.limits.max_channel_length)?;
        if !lock(&self.shared.subscriptions).remove(channel) {
            return Ok(proto::UnsubscribeResult {});
        }
        let removed = {
            let mut chans = lock(&self.hub.shard(channel).channels);
            chans
                .get_mut(channel)
                .and_then(|cs| cs.subs.remove(self.client_id()))
        };
        // Nothing of this subscription may follow the reply (a resubscribe would see it twice).
        self.shared.queue.discard_channel(channel);
        if let Some(sub) = removed {
            self.hub
                .run_cleanup(Cleanup::Unsubscribed {
                    channel: channel.to_owned(),
                    info: self.shared.info.clone(),
                    presence: sub.presence,
                    leave: sub.joined,
                })
                .await;
        }
        Ok(proto::UnsubscribeResult {})
    }

    /// Publishes `data` into `channel` as this client. A non-empty `idempotency_key` seen
    /// within the idempotency window returns the first result without publishing again.
    ///
    /// Errors: 103 permission denied, 113 message too large, 111 over the publisher's rate or
    /// byte budget (temporary), 106 (temporary) no room for a new channel on the node, 107,
    /// 102, 100.
    pub async fn publish(
        &self,
        channel: &str,
        data: Vec<u8>,
        idempotency_key: &str,
    ) -> Result<proto::PublishResult, HubError> {
        let ns = self.namespace(channel)?;
        let s = &self.shared;
        let allowed = s.token_allows(channel)
            && (!s.anonymous || ns.allow_publish_for_anonymous)
            && (ns.allow_publish_for_client
                || (ns.allow_publish_for_subscriber && s.is_subscribed(channel)));
        if !allowed {
            return Err(HubError::PermissionDenied);
        }
        self.hub.check_publication(&data, idempotency_key)?;
        self.hub.spend_publish_budget(s, data.len())?;
        let info = Some(s.info.clone());
        self.hub
            .publish(channel, ns, data, info, idempotency_key, Default::default())
            .await
    }

    fn may_read(
        &self,
        channel: &str,
        for_client: bool,
        for_subscriber: bool,
    ) -> Result<(), HubError> {
        let s = &self.shared;
        let allowed =
            s.token_allows(channel) && (for_client || (for_subscriber && s.is_subscribed(channel)));
        if allowed {
            Ok(())
        } else {
            Err(HubError::PermissionDenied)
        }
    }

    /// Presence of `channel` (108 when off in the namespace, 103 when not allowed).
    pub async fn presence(&self, channel: &str) -> Result<proto::PresenceResult, HubError> {
        let ns = self.namespace(channel)?;
        if !ns.presence {
            return Err(HubError::NotAvailable);
        }
        self.may_read(
            channel,
            ns.allow_presence_for_client,
            ns.allow_presence_for_subscriber,
        )?;
        self.hub.presence(channel, ns).await
    }

    /// Presence counts of `channel` (same rules as [`Session::presence`]).
    pub async fn presence_stats(
        &self,
        channel: &str,
    ) -> Result<proto::PresenceStatsResult, HubError> {
        let ns = self.namespace(channel)?;
        if !ns.presence {
            return Err(HubError::NotAvailable);
        }
        self.may_read(
            channel,
            ns.allow_presence_for_client,
            ns.allow_presence_for_subscriber,
        )?;
        self.hub.presence_stats(channel, ns).await
    }

    /// Reads history (108 when the namespace keeps none, 103 when not allowed, 112 when
    /// `since` is from another epoch).
    pub async fn history(
        &self,
        request: &proto::HistoryRequest,
    ) -> Result<proto::HistoryResult, HubError> {
        let ns = self.namespace(&request.channel)?;
        if !ns.history_enabled() {
            return Err(HubError::NotAvailable);
        }
        self.may_read(
            &request.channel,
            ns.allow_history_for_client,
            ns.allow_history_for_subscriber,
        )?;
        self.hub.history(request, ns).await
    }

    /// Answers a ping.
    pub fn ping(&self) -> Result<proto::PingResult, HubError> {
        self.shared.ensure_open()?;
        Ok(proto::PingResult {})
    }

    /// Executes a protocol command and returns its reply (same `id`). A second `connect`
    /// is a 107 bad request; a command without a known method is 104.
    ///
    /// Signaling-room commands (`room_join`, `room_leave`, `offer`, `answer`, `candidate`,
    /// `bye`) are validated and relayed to the peers of the sender's room as `signal` pushes;
    /// every command counts as a sign of life of this session's room peers.
    pub async fn handle(&self, command: proto::Command) -> proto::Reply {
        use proto::command::Method;
        use proto::reply::Result as R;
        let rooms = &self.hub.signal;
        rooms.room_touch(&self.shared);
        let kind = command.method.as_ref().and_then(signal_kind);
        if kind.is_some() {
            if let Err(e) = rooms.room_admit(&self.shared) {
                count_signal_refusal(&e);
                return proto::Reply {
                    id: command.id,
                    result: Some(R::Error(e.to_proto())),
                };
            }
        }
        let result = match command.method {
            None => Err(HubError::MethodNotFound),
            Some(Method::Connect(_)) => Err(HubError::BadRequest("already connected")),
            Some(Method::Subscribe(r)) => self
                .subscribe(&r.channel, r.recover)
                .await
                .map(R::Subscribe),
            Some(Method::Unsubscribe(r)) => self.unsubscribe(&r.channel).await.map(R::Unsubscribe),
            Some(Method::Publish(r)) => self
                .publish(&r.channel, r.data, &r.idempotency_key)
                .await
                .map(R::Publish),
            Some(Method::Presence(r)) => self.presence(&r.channel).await.map(R::Presence),
            Some(Method::PresenceStats(r)) => {
                self.presence_stats(&r.channel).await.map(R::PresenceStats)
            }
            Some(Method::History(r)) => self.history(&r).await.map(R::History),
            Some(Method::Ping(_)) => self.ping().map(R::Ping),
            Some(Method::RoomJoin(r)) => self.room_join(r).await.map(R::RoomJoin),
            Some(Method::RoomLeave(r)) => rooms
                .room_leave(&self.shared, &r.room)
                .await
                .map(R::RoomLeave),
            Some(Method::Offer(r)) => {
                let d = r.description.unwrap_or_default();
                rooms
                    .room_signal(&self.shared, &r.room, &r.to, |v| {
                        v.offer(&d.r#type, &d.sdp).map_err(signal_error)
                    })
                    .await
                    .map(R::Offer)
            }
            Some(Method::Answer(r)) => {
                let d = r.description.unwrap_or_default();
                rooms
                    .room_signal(&self.shared, &r.room, &r.to, |v| {
                        v.answer(&d.r#type, &d.sdp).map_err(signal_error)
                    })
                    .await
                    .map(R::Answer)
            }
            Some(Method::Candidate(r)) => {
                let c = r.candidate.unwrap_or_default();
                rooms
                    .room_signal(&self.shared, &r.room, &r.to, |v| {
                        v.candidate(
                            &c.candidate,
                            c.sdp_mid.as_deref(),
                            c.sdp_m_line_index,
                            c.username_fragment.as_deref(),
                        )
                        .map_err(signal_error)
                    })
                    .await
                    .map(R::Candidate)
            }
            Some(Method::Bye(r)) => rooms
                .room_signal(&self.shared, &r.room, &r.to, |v| {
                    v.bye(&r.reason).map_err(signal_error)
                })
                .await
                .map(R::Bye),
        };
        if let Some(kind) = kind {
            match &result {
                Ok(_) => metrics::counter!(crate::metric::SIGNAL_MESSAGES_TOTAL, "kind" => kind)
                    .increment(1),
                Err(e) => count_signal_refusal(e),
            }
        }
        proto::Reply {
            id: command.id,
            result: Some(result.unwrap_or_else(|e| R::Error(e.to_proto()))),
        }
    }

    /// Joins a signaling room: needs subscribe permission on the channel of the room's name.
    async fn room_join(
        &self,
        request: proto::RoomJoinRequest,
    ) -> Result<proto::RoomJoinResult, HubError> {
        let ns = self.hub.namespace(&request.room)?;
        self.hub.signal.room_join(&self.shared, ns, request).await
    }
}

/// The metric label of a signaling-room command, `None` for other commands.
fn signal_kind(method: &proto::command::Method) -> Option<&'static str> {
    use proto::command::Method;
    Some(match method {
        Method::RoomJoin(_) => "join",
        Method::RoomLeave(_) => "leave",
        Method::Offer(_) => "offer",
        Method::Answer(_) => "answer",
        Method::Candidate(_) => "candidate",
        Method::Bye(_) => "bye",
        _ => return None,
    })
}

/// Counts a refused signaling command by the class of its error code.
fn count_signal_refusal(e: &HubError) {
    use crate::codes::error as code;
    if let HubError::Limit(limit) = e {
        metrics::counter!(crate::metric::SIGNAL_REFUSED_TOTAL, "reason" => limit.reason())
            .increment(1);
        return;
    }
    let reason = match e.code() {
        code::BAD_REQUEST => "invalid",
        code::MESSAGE_TOO_LARGE => "too_large",
        code::UNKNOWN_CHANNEL => "unknown_room",
        code::LIMIT_EXCEEDED => "limit",
        code::ALREADY_SUBSCRIBED => "duplicate_peer",
        code::PERMISSION_DENIED => "permission",
        code::TOO_MANY_REQUESTS => "rate_limited",
        _ => "other",
    };
    metrics::counter!(crate::metric::SIGNAL_REFUSED_TOTAL, "reason" => reason).increment(1);
}

impl Drop for Session {
    fn drop(&mut self) {
        for cleanup in self.release() {
            self.hub.schedule(cleanup);
        }
    }
}
