//! WebRTC signaling rooms on the hub: the sans-IO [`switchboard_signal::Rooms`] state behind a
//! mutex, a registry from (room, peer) to the session whose push queue delivers to that peer,
//! and the conversions between protocol messages and validated signaling messages.
//!
//! Every hub transport reaches this through [`crate::Session::handle`]: commands come in on the
//! sender's session, deliveries and room events go out as pushes on the recipients' sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_proto::v1 as proto;
use switchboard_signal::{Event, LeaveReason, Message, RoomError, Rooms, Target, Validator};

use crate::config::RoomSettings;
use crate::error::HubError;
use crate::hub::{HubInner, SessionShared};
use crate::queue::Offer;
use crate::util::lock;

/// The hub's signaling state. Lock order: `state` before a session's `rooms`.
pub(crate) struct SignalHub {
    state: Mutex<SignalState>,
    validator: Validator,
    /// Signaling commands per second per connection, and the burst above it.
    rate: u32,
    burst: u32,
    /// `Rooms` runs on `Instant`s; the hub clock (milliseconds) is mapped onto them from here.
    epoch: Instant,
    epoch_ms: u64,
}

struct SignalState {
    rooms: Rooms,
    /// (room, peer id) → the session that joined as that peer.
    peers: HashMap<(String, String), Arc<SessionShared>>,
}

fn signal_error(e: impl Into<switchboard_signal::Error>) -> HubError {
    HubError::Signal(e.into())
}

fn offer_push(session: &SessionShared, push: Arc<proto::Push>) {
    if session.queue.offer(push) == Offer::Overflow {
        metrics::counter!("switchboard_hub_slow_consumer_disconnects_total").increment(1);
    }
}

fn leave_push(room: &str, peer: &str, timed_out: bool) -> Arc<proto::Push> {
    Arc::new(proto::Push {
        push: Some(proto::push::Push::RoomLeave(proto::RoomLeave {
            room: room.to_owned(),
            peer_id: peer.to_owned(),
            timed_out,
        })),
    })
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
    pub(crate) fn new(epoch_ms: u64, settings: &RoomSettings) -> Self {
        Self {
            state: Mutex::new(SignalState {
                rooms: Rooms::new(settings.rooms_config()),
                peers: HashMap::new(),
            }),
            validator: Validator::new(settings.message_limits()),
            rate: settings.max_commands_per_second,
            burst: settings.command_burst,
            epoch: Instant::now(),
            epoch_ms,
        }
    }

    fn instant(&self, now_ms: u64) -> Instant {
        self.epoch + Duration::from_millis(now_ms.saturating_sub(self.epoch_ms))
    }

    /// Number of rooms (tests, info).
    pub(crate) fn room_count(&self) -> usize {
        lock(&self.state).rooms.room_count()
    }

    /// A full command budget for a new session.
    pub(crate) fn budget(&self, now_ms: u64) -> Budget {
        Budget {
            tokens: f64::from(self.burst),
            at_ms: now_ms,
        }
    }
}

/// A token bucket of signaling commands: refilled at `rate` per second up to `burst`.
#[derive(Debug)]
pub(crate) struct Budget {
    tokens: f64,
    at_ms: u64,
}

impl Budget {
    /// Takes one token at `now_ms`; false when the bucket is empty.
    fn take(&mut self, now_ms: u64, rate: u32, burst: u32) -> bool {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.at_ms = self.at_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn rooms_gauge(state: &SignalState) {
    metrics::gauge!("switchboard_hub_rooms").set(state.rooms.room_count() as f64);
}

impl SignalState {
    /// Pushes `event` to the sessions it names, and (for a timeout) to the expired peer too.
    fn deliver_event(&self, event: &Event, expired: Option<&SessionShared>) {
        match event {
            Event::Joined {
                room,
                peer,
                metadata,
                notify,
            } => {
                let info = self
                    .peers
                    .get(&(room.clone(), peer.clone()))
                    .map(|s| s.info.clone());
                let push = Arc::new(proto::Push {
                    push: Some(proto::push::Push::RoomJoin(proto::RoomJoin {
                        room: room.clone(),
                        peer: Some(proto::RoomMember {
                            peer_id: peer.clone(),
                            data: metadata.clone(),
                            info,
                        }),
                    })),
                });
                self.push_to(room, notify, &push);
            }
            Event::Left {
                room,
                peer,
                reason,
                notify,
            } => {
                let timed_out = *reason == LeaveReason::TimedOut;
                let push = leave_push(room, peer, timed_out);
                self.push_to(room, notify, &push);
                if let Some(s) = expired {
                    offer_push(s, push);
                }
            }
        }
    }

    fn push_to(&self, room: &str, peers: &[String], push: &Arc<proto::Push>) {
        for peer in peers {
            if let Some(s) = self.peers.get(&(room.to_owned(), peer.clone())) {
                offer_push(s, Arc::clone(push));
            }
        }
    }
}

impl HubInner {
    fn signal_now(&self) -> Instant {
        self.signal.instant(self.clock.now_millis())
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
        let (rate, burst) = (self.signal.rate, self.signal.burst);
        if lock(&session.signal_budget).take(now, rate, burst) {
            Ok(())
        } else {
            Err(HubError::TooManyRequests)
        }
    }

    pub(crate) fn room_join(
        &self,
        session: &Arc<SessionShared>,
        request: proto::RoomJoinRequest,
    ) -> Result<proto::RoomJoinResult, HubError> {
        // Joining room `ns:x` needs subscribe permission on channel `ns:x`.
        let ns = self.namespace(&request.room)?;
        if !session.may_subscribe(ns, &request.room) {
            return Err(HubError::PermissionDenied);
        }
        let now = self.signal_now();
        let mut state = lock(&self.signal.state);
        // Checked under the state lock: a session releasing its rooms closes its queue first.
        session.ensure_open()?;
        if lock(&session.rooms).contains_key(&request.room) {
            return Err(signal_error(RoomError::DuplicatePeer));
        }
        let joined = state
            .rooms
            .join(&request.room, &request.peer_id, &request.data, now)
            .map_err(signal_error)?;
        state.peers.insert(
            (request.room.clone(), request.peer_id.clone()),
            Arc::clone(session),
        );
        lock(&session.rooms).insert(request.room.clone(), request.peer_id.clone());
        let members = joined
            .members
            .into_iter()
            .map(|m| proto::RoomMember {
                info: state
                    .peers
                    .get(&(request.room.clone(), m.peer.clone()))
                    .map(|s| s.info.clone()),
                peer_id: m.peer,
                data: m.metadata,
            })
            .collect();
        state.deliver_event(&joined.event, None);
        rooms_gauge(&state);
        metrics::counter!("switchboard_hub_room_joins_total").increment(1);
        Ok(proto::RoomJoinResult {
            members,
            polite: joined.polite,
        })
    }

    pub(crate) fn room_leave(
        &self,
        session: &SessionShared,
        room: &str,
    ) -> Result<proto::RoomLeaveResult, HubError> {
        session.ensure_open()?;
        let mut state = lock(&self.signal.state);
        let peer = Self::peer_of(session, room)?;
        let event = state.rooms.leave(room, &peer).map_err(signal_error)?;
        state.peers.remove(&(room.to_owned(), peer));
        lock(&session.rooms).remove(room);
        state.deliver_event(&event, None);
        rooms_gauge(&state);
        Ok(proto::RoomLeaveResult {})
    }

    /// Validates one signaling command and relays it within the sender's room.
    pub(crate) fn room_signal(
        &self,
        session: &SessionShared,
        room: &str,
        to: &str,
        message: impl FnOnce(&Validator) -> Result<Message, HubError>,
    ) -> Result<proto::SignalResult, HubError> {
        session.ensure_open()?;
        let message = message(&self.signal.validator)?;
        let Some(payload) = signal_message(&message) else {
            return Err(HubError::BadRequest("unsupported signaling message"));
        };
        let state = lock(&self.signal.state);
        let from = Self::peer_of(session, room)?;
        let target = if to.is_empty() {
            Target::Others
        } else {
            Target::Peer(to)
        };
        let deliveries = state
            .rooms
            .relay(room, &from, target, message)
            .map_err(signal_error)?;
        let push = Arc::new(proto::Push {
            push: Some(proto::push::Push::Signal(proto::Signal {
                room: room.to_owned(),
                from,
                message: Some(payload),
            })),
        });
        let mut delivered = 0u32;
        for d in &deliveries {
            if let Some(s) = state.peers.get(&(d.room.clone(), d.to.clone())) {
                offer_push(s, Arc::clone(&push));
                delivered += 1;
            }
        }
        Ok(proto::SignalResult { delivered })
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
        let mut state = lock(&self.signal.state);
        for (room, peer) in rooms {
            // A peer that timed out meanwhile is simply gone.
            let _ = state.rooms.touch(&room, &peer, now);
        }
    }

    /// The session ended: its peers leave their rooms (the others get leave events).
    pub(crate) fn room_release(&self, session: &SessionShared) {
        let mut state = lock(&self.signal.state);
        let rooms: Vec<(String, String)> = lock(&session.rooms).drain().collect();
        for (room, peer) in rooms {
            state.peers.remove(&(room.clone(), peer.clone()));
            if let Ok(event) = state.rooms.leave(&room, &peer) {
                state.deliver_event(&event, None);
            }
        }
        rooms_gauge(&state);
    }

    /// Removes peers silent longer than the room timeout; they and their rooms are told.
    pub(crate) fn room_expire(&self) {
        let now = self.signal_now();
        let mut state = lock(&self.signal.state);
        for event in state.rooms.expire(now) {
            let Event::Left { room, peer, .. } = &event else {
                continue;
            };
            let session = state.peers.remove(&(room.clone(), peer.clone()));
            if let Some(s) = &session {
                lock(&s.rooms).remove(room);
            }
            metrics::counter!("switchboard_hub_room_timeouts_total").increment(1);
            state.deliver_event(&event, session.as_deref());
        }
        rooms_gauge(&state);
    }
}
