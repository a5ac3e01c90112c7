//! WebRTC signaling rooms on the hub, spanning every node that shares the broker.
//!
//! Two layers:
//! * **This node's peers** live in the sans-IO [`switchboard_signal::Rooms`] (names, metadata
//!   size, the node's room limit, liveness) plus a registry from (room, peer) to the session
//!   whose push queue delivers to that peer.
//! * **The room as a whole** lives in the broker, on the internal channel `$room:NAME` (no
//!   client can subscribe to it: `$room` can never be a configured namespace): its presence
//!   is the member list (entry key = peer id, refreshed by [`crate::Hub::maintain`], so a dead
//!   node's peers expire), join/leave messages announce members, and signals addressed to
//!   peers on other nodes are publications (no history) with the recipient in the `to` tag.
//!   Every node with a peer in a room subscribes to its channel.
//!
//! With the in-memory broker this is one node; with Redis the same code spans nodes.
//! A signal to a peer on the sender's own node is delivered directly, without the broker.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_proto::prost::Message as _;
use switchboard_proto::v1 as proto;
use switchboard_signal::{Event, Message, RoomError, Rooms, Validator};

use crate::broker::{Broker, HistoryRetention, PublishOptions};
use crate::budget::TokenBucket;
use crate::clock::Clock;
use crate::config::{NamespaceOptions, RoomSettings};
use crate::error::{HubError, Limit};
use crate::push::SharedPush;
use crate::queue::Offer;
use crate::state::{Cleanup, SessionShared};
use crate::util::lock;

/// Prefix of the broker channel of a room.
pub(crate) const ROOM_PREFIX: &str = "$room:";

/// `conn_info` of a leave message for a peer that timed out.
const TIMED_OUT: &[u8] = b"timeout";

fn room_channel(room: &str) -> String {
    format!("{ROOM_PREFIX}{room}")
}

/// The hub's signaling state. Lock order: `state` before a session's `rooms`.
pub(crate) struct SignalHub {
    state: Mutex<SignalState>,
    validator: Validator,
    /// Most peers in a room, cluster-wide.
    max_peers: usize,
    /// Signaling commands per second per connection, and the burst above it.
    rate: u32,
    burst: u32,
    /// Rooms one connection, and the connections of one user, may be in.
    max_per_connection: usize,
    max_per_user: usize,
    /// Serializes joins and leaves with the broker subscribe/unsubscribe decisions.
    interest: tokio::sync::Mutex<()>,
    /// `Rooms` runs on `Instant`s; the hub clock (milliseconds) is mapped onto them from here.
    epoch: Instant,
    epoch_ms: u64,
    /// The hub's broker (the rooms as a whole live there) and clock.
    broker: Arc<dyn Broker>,
    clock: Arc<dyn Clock>,
    /// How long a member's presence entry lives without a refresh.
    presence_ttl: Duration,
}

struct SignalState {
    /// This node's peers.
    rooms: Rooms,
    /// (room, peer id) → the local peer.
    peers: HashMap<(String, String), LocalPeer>,
    /// Rooms whose broker channel this node subscribes to.
    subscribed: HashSet<String>,
    /// Per room with local peers: the members on other nodes this node's peers were told
    /// about. A node that dies publishes no leave; when its peers' presence entries expire,
    /// `room_maintain` notices here and tells the local peers (`timed_out`).
    remote: HashMap<String, HashSet<String>>,
    /// Rooms joined per (non-anonymous) user on this node, for `max_rooms_per_user`.
    user_rooms: HashMap<String, usize>,
}

struct LocalPeer {
    session: Arc<SessionShared>,
    /// How the room sees it (also its presence entry).
    member: proto::RoomMember,
    /// The peers its join result listed (it is polite towards them and offered to them).
    saw: HashSet<String>,
}

/// How `me` (a local peer) is told about `other`, which just joined: `None` when `me` already
/// knows it (its join result listed `other`: it is the newcomer of the pair and offered);
/// otherwise `Some(polite)`: `false` in the normal case (`other`'s join listed `me`, so `other`
/// is the polite newcomer), and in a race — two joins on different nodes, neither listing the
/// other — a tie-break both sides compute alike: the later `(joined_at, peer id)` is polite.
fn join_role(
    me: &proto::RoomMember,
    i_saw_other: bool,
    other: &proto::RoomMember,
    other_saw_me: bool,
) -> Option<bool> {
    if i_saw_other {
        return None;
    }
    if other_saw_me {
        return Some(false);
    }
    Some((me.joined_at, &me.peer_id) > (other.joined_at, &other.peer_id))
}

fn signal_error(e: impl Into<switchboard_signal::Error>) -> HubError {
    HubError::Signal(e.into())
}

fn count_broker_error() {
    metrics::counter!(crate::metric::BROKER_ERRORS_TOTAL).increment(1);
}

fn offer_push(session: &SessionShared, push: Arc<SharedPush>) {
    if session.queue.offer(push) == Offer::Overflow {
        metrics::counter!(crate::metric::SLOW_CONSUMER_DISCONNECTS_TOTAL).increment(1);
    }
}

fn leave_push(room: &str, peer: &str, timed_out: bool) -> Arc<SharedPush> {
    Arc::new(SharedPush::new(proto::Push {
        push: Some(proto::push::Push::RoomLeave(proto::RoomLeave {
            room: room.to_owned(),
            peer_id: peer.to_owned(),
            timed_out,
        })),
    }))
}

/// The presence entry and join message of a member: keyed by peer id, the member inside.
fn member_info(member: &proto::RoomMember) -> proto::ClientInfo {
    proto::ClientInfo {
        user: member
            .info
            .as_ref()
            .map(|i| i.user.clone())
            .unwrap_or_default(),
        client_id: member.peer_id.clone(),
        conn_info: member.encode_to_vec(),
    }
}

fn decode_member(info: &proto::ClientInfo) -> Option<proto::RoomMember> {
    proto::RoomMember::decode(info.conn_info.as_slice())
        .ok()
        .filter(|m| m.peer_id == info.client_id)
}

/// The join message of a member: the member and whom its join saw.
fn announce_info(member: &proto::RoomMember, saw: Vec<String>) -> proto::ClientInfo {
    let announce = proto::RoomAnnounce {
        member: Some(member.clone()),
        saw,
    };
    proto::ClientInfo {
        conn_info: announce.encode_to_vec(),
        ..member_info(member)
    }
}

fn decode_announce(info: &proto::ClientInfo) -> Option<(proto::RoomMember, HashSet<String>)> {
    let a = proto::RoomAnnounce::decode(info.conn_info.as_slice()).ok()?;
    let member = a.member.filter(|m| m.peer_id == info.client_id)?;
    Some((member, a.saw.into_iter().collect()))
}

/// The protocol form of a validated message (`None` for kinds this protocol cannot carry).
fn signal_message(message: &Message) -> Option<proto::signal::Message> {
    use proto::signal::Message as M;
    let description = |kind: &str, sdp: &str| proto::SessionDescription {
        r#type: kind.to_owned(),
        sdp: sdp.to_owned(),
    };
    Some(match message {
        Message::Offer(d) => M::Offer(description("offer", d.sdp())),
        Message::Answer(d) => M::Answer(description("answer", d.sdp())),
        Message::Candidate(c) => M::Candidate(proto::IceCandidate {
            candidate: c.candidate.to_string(),
            sdp_mid: c.media.mid.clone(),
            sdp_m_line_index: c.media.m_line_index.map(u32::from),
            username_fragment: c.username_fragment.clone(),
        }),
        Message::EndOfCandidates(media) => M::Candidate(proto::IceCandidate {
            candidate: String::new(),
            sdp_mid: media.mid.clone(),
            sdp_m_line_index: media.m_line_index.map(u32::from),
            username_fragment: None,
        }),
        Message::Bye { reason } => M::Bye(reason.clone()),
        _ => return None,
    })
}

impl SignalHub {
    pub(crate) fn new(
        epoch_ms: u64,
        settings: &RoomSettings,
        broker: Arc<dyn Broker>,
        clock: Arc<dyn Clock>,
        presence_ttl: Duration,
    ) -> Self {
        Self {
            state: Mutex::new(SignalState {
                rooms: Rooms::new(settings.rooms_config()),
                peers: HashMap::new(),
                subscribed: HashSet::new(),
                remote: HashMap::new(),
                user_rooms: HashMap::new(),
            }),
            validator: Validator::new(settings.message_limits()),
            max_peers: settings.max_peers_per_room,
            rate: settings.max_commands_per_second,
            burst: settings.command_burst,
            max_per_connection: settings.max_rooms_per_connection,
            max_per_user: settings.max_rooms_per_user,
            interest: tokio::sync::Mutex::new(()),
            epoch: Instant::now(),
            epoch_ms,
            broker,
            clock,
            presence_ttl,
        }
    }

    fn instant(&self, now_ms: u64) -> Instant {
        self.epoch + Duration::from_millis(now_ms.saturating_sub(self.epoch_ms))
    }

    /// Number of rooms with a peer on this node.
    pub(crate) fn room_count(&self) -> usize {
        lock(&self.state).rooms.room_count()
    }

    /// A full command budget for a new session.
    pub(crate) fn budget(&self, now_ms: u64) -> TokenBucket {
        TokenBucket::full(f64::from(self.burst), now_ms)
    }
}

impl SignalState {
    fn gauge(&self) {
        metrics::gauge!(crate::metric::ROOMS).set(self.rooms.room_count() as f64);
    }

    /// Pushes to every local peer of `room` except `except`.
    fn push_room(&self, room: &str, except: &str, push: &Arc<SharedPush>) {
        for peer in self.rooms.members(room) {
            if peer == except {
                continue;
            }
            if let Some(p) = self.peers.get(&(room.to_owned(), peer)) {
                offer_push(&p.session, Arc::clone(push));
            }
        }
    }

    /// When `room` has no local peer left: forgets what this node knew of it, and says whether
    /// the node should unsubscribe from its broker channel.
    fn release_room(&mut self, room: &str) -> bool {
        if !self.rooms.members(room).is_empty() {
            return false;
        }
        self.remote.remove(room);
        self.subscribed.remove(room)
    }

    /// Forgets a local peer (after `Rooms` let it go).
    fn forget(&mut self, room: &str, peer: &str) -> Option<LocalPeer> {
        let local = self.peers.remove(&(room.to_owned(), peer.to_owned()));
        if let Some(p) = &local {
            lock(&p.session.rooms).remove(room);
            self.uncount(&p.session);
        }
        local
    }

    /// One room fewer for the user of `session` (see `user_rooms`).
    fn uncount(&mut self, session: &SessionShared) {
        if session.anonymous {
            return;
        }
        if let Some(n) = self.user_rooms.get_mut(&session.info.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.user_rooms.remove(&session.info.user);
            }
        }
    }
}

impl SignalHub {
    // ---- commands of local sessions ----

    fn signal_now(&self) -> Instant {
        self.instant(self.clock.now_millis())
    }

    /// The peer id `session` has in `room`.
    fn peer_of(session: &SessionShared, room: &str) -> Result<String, HubError> {
        lock(&session.rooms)
            .get(room)
            .cloned()
            .ok_or_else(|| signal_error(RoomError::NotInRoom))
    }

    /// Spends one signaling command of `session`'s budget: 111 when it is exhausted.
    pub(crate) fn room_admit(&self, session: &SessionShared) -> Result<(), HubError> {
        let now = self.clock.now_millis();
        let (rate, burst) = (f64::from(self.rate), f64::from(self.burst));
        if lock(&session.signal_budget).take(now, rate, burst, 1.0) {
            Ok(())
        } else {
            Err(HubError::TooManyRequests)
        }
    }

    pub(crate) async fn room_join(
        &self,
        session: &Arc<SessionShared>,
        ns: &NamespaceOptions,
        request: proto::RoomJoinRequest,
    ) -> Result<proto::RoomJoinResult, HubError> {
        // Joining room `ns:x` needs subscribe permission on channel `ns:x` (`ns` is that
        // channel's namespace, validated by the caller).
        if !session.may_subscribe(ns, &request.room) {
            return Err(HubError::PermissionDenied);
        }
        let room = request.room;
        let peer = request.peer_id;
        let member = proto::RoomMember {
            peer_id: peer.clone(),
            data: request.data,
            info: Some(session.info.clone()),
            joined_at: self.clock.now_millis(),
        };
        let _interest = self.interest.lock().await;
        let subscribe = {
            let mut state = lock(&self.state);
            // Checked under the state lock: a session releasing its rooms closes its queue first.
            session.ensure_open()?;
            let joined = {
                let rooms = lock(&session.rooms);
                if rooms.contains_key(&room) {
                    return Err(signal_error(RoomError::DuplicatePeer));
                }
                rooms.len()
            };
            if joined >= self.max_per_connection {
                return Err(HubError::Limit(Limit::RoomsPerConnection));
            }
            let user = &session.info.user;
            if !session.anonymous
                && state.user_rooms.get(user).copied().unwrap_or(0) >= self.max_per_user
            {
                return Err(HubError::Limit(Limit::RoomsPerUser));
            }
            // Validates names and metadata, and this node's own limits.
            state
                .rooms
                .join(&room, &peer, &member.data, self.signal_now())
                .map_err(signal_error)?;
            state.peers.insert(
                (room.clone(), peer.clone()),
                LocalPeer {
                    session: Arc::clone(session),
                    member: member.clone(),
                    saw: HashSet::new(),
                },
            );
            lock(&session.rooms).insert(room.clone(), peer.clone());
            if !session.anonymous {
                *state.user_rooms.entry(user.clone()).or_default() += 1;
            }
            state.gauge();
            !state.subscribed.contains(&room)
        };
        match self.room_join_cluster(&room, &member, subscribe).await {
            Ok(members) => {
                metrics::counter!(crate::metric::ROOM_JOINS_TOTAL).increment(1);
                Ok(proto::RoomJoinResult {
                    polite: !members.is_empty(),
                    members,
                })
            }
            Err(e) => {
                let unsubscribe = {
                    let mut state = lock(&self.state);
                    let _ = state.rooms.leave(&room, &peer);
                    state.forget(&room, &peer);
                    state.gauge();
                    state.release_room(&room)
                };
                if unsubscribe && self.broker.unsubscribe(&room_channel(&room)).await.is_err() {
                    count_broker_error();
                }
                Err(e)
            }
        }
    }

    /// The broker part of a join: subscribe the node, check the room as a whole, announce.
    async fn room_join_cluster(
        &self,
        room: &str,
        member: &proto::RoomMember,
        subscribe: bool,
    ) -> Result<Vec<proto::RoomMember>, HubError> {
        let channel = room_channel(room);
        if subscribe {
            self.broker.subscribe(&channel).await?;
            lock(&self.state).subscribed.insert(room.to_owned());
        }
        let present = self.broker.presence(&channel).await?;
        if present.contains_key(&member.peer_id) {
            return Err(signal_error(RoomError::DuplicatePeer));
        }
        if present.len() >= self.max_peers {
            return Err(signal_error(RoomError::RoomFull));
        }
        let mut members: Vec<proto::RoomMember> =
            present.values().filter_map(decode_member).collect();
        members.sort_by(|a, b| (a.joined_at, &a.peer_id).cmp(&(b.joined_at, &b.peer_id)));
        let saw: Vec<String> = members.iter().map(|m| m.peer_id.clone()).collect();
        {
            let mut state = lock(&self.state);
            let state = &mut *state;
            if let Some(p) = state
                .peers
                .get_mut(&(room.to_owned(), member.peer_id.clone()))
            {
                p.saw = saw.iter().cloned().collect();
            }
            let remote = state.remote.entry(room.to_owned()).or_default();
            for id in &saw {
                if !state.peers.contains_key(&(room.to_owned(), id.clone())) {
                    remote.insert(id.clone());
                }
            }
        }
        self.broker
            .add_presence(&channel, member_info(member), self.presence_ttl)
            .await?;
        self.broker
            .publish_join(&channel, announce_info(member, saw))
            .await?;
        Ok(members)
    }

    pub(crate) async fn room_leave(
        &self,
        session: &SessionShared,
        room: &str,
    ) -> Result<proto::RoomLeaveResult, HubError> {
        session.ensure_open()?;
        let peer = {
            let mut state = lock(&self.state);
            let peer = Self::peer_of(session, room)?;
            state.rooms.leave(room, &peer).map_err(signal_error)?;
            state.forget(room, &peer);
            state.gauge();
            peer
        };
        self.room_left(room, &peer, &session.info.user, false).await;
        Ok(proto::RoomLeaveResult {})
    }

    /// Tells the room (through the broker) that a local peer has gone, and drops the node's
    /// subscription to the room when it was the last local peer.
    pub(crate) async fn room_left(&self, room: &str, peer: &str, user: &str, timed_out: bool) {
        let channel = room_channel(room);
        if self.broker.remove_presence(&channel, peer).await.is_err() {
            count_broker_error();
        }
        let info = proto::ClientInfo {
            user: user.to_owned(),
            client_id: peer.to_owned(),
            conn_info: if timed_out {
                TIMED_OUT.to_vec()
            } else {
                Vec::new()
            },
        };
        if self.broker.publish_leave(&channel, info).await.is_err() {
            count_broker_error();
        }
        let _interest = self.interest.lock().await;
        let unsubscribe = { lock(&self.state).release_room(room) };
        if unsubscribe && self.broker.unsubscribe(&channel).await.is_err() {
            count_broker_error();
        }
    }

    /// Validates one signaling command and relays it within the sender's room.
    pub(crate) async fn room_signal(
        &self,
        session: &SessionShared,
        room: &str,
        to: &str,
        message: impl FnOnce(&Validator) -> Result<Message, HubError>,
    ) -> Result<proto::SignalResult, HubError> {
        session.ensure_open()?;
        let message = message(&self.validator)?;
        let Some(payload) = signal_message(&message) else {
            return Err(HubError::BadRequest("unsupported signaling message"));
        };
        let from = Self::peer_of(session, room)?;
        if to == from {
            return Err(signal_error(RoomError::SelfAddressed));
        }
        let signal = proto::Signal {
            room: room.to_owned(),
            from: from.clone(),
            message: Some(payload),
        };
        if !to.is_empty() {
            // A peer on this node: straight to its queue.
            let state = lock(&self.state);
            if let Some(p) = state.peers.get(&(room.to_owned(), to.to_owned())) {
                offer_push(&p.session, signal_push(signal));
                return Ok(proto::SignalResult { delivered: 1 });
            }
        }
        let channel = room_channel(room);
        let present = self.broker.presence(&channel).await?;
        let delivered = if to.is_empty() {
            present.keys().filter(|p| **p != from).count()
        } else if present.contains_key(to) {
            1
        } else {
            return Err(signal_error(RoomError::UnknownRecipient));
        };
        if delivered > 0 {
            let publication = proto::Publication {
                data: signal.encode_to_vec(),
                tags: HashMap::from([("to".to_owned(), to.to_owned())]),
                ..Default::default()
            };
            let options = PublishOptions {
                history: HistoryRetention::NONE,
                idempotency_key: None,
                idempotency_window: Duration::ZERO,
            };
            self.broker.publish(&channel, publication, &options).await?;
        }
        Ok(proto::SignalResult {
            delivered: u32::try_from(delivered).unwrap_or(u32::MAX),
        })
    }

    /// A sign of life of every peer of `session`.
    pub(crate) fn room_touch(&self, session: &SessionShared) {
        let rooms: Vec<(String, String)> = {
            let rooms = lock(&session.rooms);
            if rooms.is_empty() {
                return;
            }
            rooms.iter().map(|(r, p)| (r.clone(), p.clone())).collect()
        };
        let now = self.signal_now();
        let mut state = lock(&self.state);
        for (room, peer) in rooms {
            // A peer that timed out meanwhile is simply gone.
            let _ = state.rooms.touch(&room, &peer, now);
        }
    }

    /// The session ended: its peers leave their rooms here at once; the rest of the room is
    /// told by the returned cleanups.
    pub(crate) fn room_release(&self, session: &SessionShared) -> Vec<Cleanup> {
        let mut state = lock(&self.state);
        let rooms: Vec<(String, String)> = lock(&session.rooms).drain().collect();
        let mut cleanups = Vec::with_capacity(rooms.len());
        for (room, peer) in rooms {
            if state.peers.remove(&(room.clone(), peer.clone())).is_some() {
                state.uncount(session);
            }
            if state.rooms.leave(&room, &peer).is_ok() {
                cleanups.push(Cleanup::RoomLeft {
                    room,
                    peer,
                    user: session.info.user.clone(),
                });
            }
        }
        state.gauge();
        cleanups
    }

    /// Removes local peers silent longer than the room timeout (they are told, and so are
    /// their rooms), and refreshes the presence entries of the others.
    pub(crate) async fn room_maintain(&self) {
        let now = self.signal_now();
        let (expired, live) = {
            let mut state = lock(&self.state);
            let mut expired = Vec::new();
            for event in state.rooms.expire(now) {
                let Event::Left { room, peer, .. } = event else {
                    continue;
                };
                if let Some(p) = state.forget(&room, &peer) {
                    offer_push(&p.session, leave_push(&room, &peer, true));
                    expired.push((room, peer, p.session.info.user.clone()));
                }
                metrics::counter!(crate::metric::ROOM_TIMEOUTS_TOTAL).increment(1);
            }
            state.gauge();
            let live: Vec<(String, proto::ClientInfo)> = state
                .peers
                .iter()
                .map(|((room, _), p)| (room_channel(room), member_info(&p.member)))
                .collect();
            (expired, live)
        };
        for (room, peer, user) in expired {
            self.room_left(&room, &peer, &user, true).await;
        }
        self.room_expire_remote().await;
        let ttl = self.presence_ttl;
        for (channel, info) in live {
            if self.broker.add_presence(&channel, info, ttl).await.is_err() {
                count_broker_error();
            }
        }
    }

    /// Members on other nodes whose presence entry expired (their node died or lost Redis for
    /// longer than the presence TTL, so nobody published their leave): tell this node's peers,
    /// as a timeout.
    async fn room_expire_remote(&self) {
        let rooms: Vec<String> = {
            let state = lock(&self.state);
            state
                .remote
                .iter()
                .filter(|(_, ids)| !ids.is_empty())
                .map(|(room, _)| room.clone())
                .collect()
        };
        for room in rooms {
            let Ok(present) = self.broker.presence(&room_channel(&room)).await else {
                // Redis unreachable: nothing can be concluded about anyone.
                count_broker_error();
                continue;
            };
            let mut state = lock(&self.state);
            let gone: Vec<String> = match state.remote.get_mut(&room) {
                Some(ids) => {
                    let gone: Vec<String> = ids
                        .iter()
                        .filter(|id| !present.contains_key(*id))
                        .cloned()
                        .collect();
                    for id in &gone {
                        ids.remove(id);
                    }
                    gone
                }
                None => Vec::new(),
            };
            for id in gone {
                metrics::counter!(crate::metric::ROOM_TIMEOUTS_TOTAL).increment(1);
                state.push_room(&room, &id, &leave_push(&room, &id, true));
            }
        }
    }

    // ---- broker deliveries on `$room:` channels (synchronous, never blocking) ----

    /// A member joined (on any node): tell this node's other peers of the room, each with its
    /// role towards the newcomer (see [`join_role`]).
    pub(crate) fn on_room_join(&self, room: &str, info: &proto::ClientInfo) {
        let Some((member, saw)) = decode_announce(info) else {
            count_broker_error();
            return;
        };
        let mut state = lock(&self.state);
        let local = state
            .peers
            .contains_key(&(room.to_owned(), member.peer_id.clone()));
        if !local {
            if let Some(remote) = state.remote.get_mut(room) {
                remote.insert(member.peer_id.clone());
            }
        }
        for peer in state.rooms.members(room) {
            if peer == member.peer_id {
                continue;
            }
            let Some(p) = state.peers.get(&(room.to_owned(), peer)) else {
                continue;
            };
            let role = join_role(
                &p.member,
                p.saw.contains(&member.peer_id),
                &member,
                saw.contains(&p.member.peer_id),
            );
            if let Some(polite) = role {
                let push = Arc::new(SharedPush::new(proto::Push {
                    push: Some(proto::push::Push::RoomJoin(proto::RoomJoin {
                        room: room.to_owned(),
                        peer: Some(member.clone()),
                        polite,
                    })),
                }));
                offer_push(&p.session, push);
            }
        }
    }

    /// A member left or timed out (on any node): tell this node's peers of the room.
    pub(crate) fn on_room_leave(&self, room: &str, info: &proto::ClientInfo) {
        let timed_out = info.conn_info == TIMED_OUT;
        let mut state = lock(&self.state);
        if let Some(remote) = state.remote.get_mut(room) {
            remote.remove(&info.client_id);
        }
        state.push_room(
            room,
            &info.client_id,
            &leave_push(room, &info.client_id, timed_out),
        );
    }

    /// A signal relayed through the broker: deliver it to its recipients on this node.
    pub(crate) fn on_room_signal(&self, room: &str, publication: &proto::Publication) {
        let Ok(signal) = proto::Signal::decode(publication.data.as_slice()) else {
            count_broker_error();
            return;
        };
        if signal.room != room {
            count_broker_error();
            return;
        }
        let to = publication.tags.get("to").map(String::as_str).unwrap_or("");
        let from = signal.from.clone();
        let push = signal_push(signal);
        let state = lock(&self.state);
        if to.is_empty() {
            state.push_room(room, &from, &push);
        } else if let Some(p) = state.peers.get(&(room.to_owned(), to.to_owned())) {
            offer_push(&p.session, push);
        }
    }
}

fn signal_push(signal: proto::Signal) -> Arc<SharedPush> {
    Arc::new(SharedPush::new(proto::Push {
        push: Some(proto::push::Push::Signal(signal)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, at: u64) -> proto::RoomMember {
        proto::RoomMember {
            peer_id: id.into(),
            joined_at: at,
            ..Default::default()
        }
    }

    #[test]
    fn join_roles_are_consistent_on_both_sides() {
        let (a, b) = (m("a", 10), m("b", 20));
        // Normal: b joined later and listed a. a is told (impolite); b is not told again.
        assert_eq!(join_role(&a, false, &b, true), Some(false));
        assert_eq!(join_role(&b, true, &a, false), None);
        // Race: neither listed the other. The later joiner is polite, on both sides alike.
        assert_eq!(join_role(&a, false, &b, false), Some(false));
        assert_eq!(join_role(&b, false, &a, false), Some(true));
        // Same millisecond: the greater peer id is polite.
        let (c, d) = (m("c", 5), m("d", 5));
        assert_eq!(join_role(&c, false, &d, false), Some(false));
        assert_eq!(join_role(&d, false, &c, false), Some(true));
    }

    #[test]
    fn announcements_round_trip_and_refuse_mismatched_ids() {
        let a = m("a", 1);
        let info = announce_info(&a, vec!["x".into()]);
        let (back, saw) = decode_announce(&info).expect("decodes");
        assert_eq!(back, a);
        assert!(saw.contains("x"));
        let forged = proto::ClientInfo {
            client_id: "b".into(),
            ..info
        };
        assert!(decode_announce(&forged).is_none());
    }
}
