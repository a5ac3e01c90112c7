//! Signaling rooms: membership, relay between members of one room, liveness and
//! perfect-negotiation roles. No sockets, no clock: every call that needs time takes `now`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::message::Message;

/// Room settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomsConfig {
    /// Most peers in one room (default 8).
    pub max_peers_per_room: usize,
    /// Most rooms at once (default 100 000).
    pub max_rooms: usize,
    /// Longest room name in bytes (default 255, as hub channel names).
    pub max_room_name_len: usize,
    /// Largest join metadata in bytes (default 4096).
    pub max_metadata_bytes: usize,
    /// A peer silent for longer than this is expired (default 30 s).
    pub peer_timeout: Duration,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            max_peers_per_room: 8,
            max_rooms: 100_000,
            max_room_name_len: 255,
            max_metadata_bytes: 4096,
            peer_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a room operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RoomError {
    /// The room name breaks the hub channel-name rules.
    #[error("invalid room name")]
    BadRoomName,
    /// The peer id is not 1..=64 characters of `[A-Za-z0-9_-]`.
    #[error("invalid peer id")]
    BadPeerId,
    /// Join metadata over [`RoomsConfig::max_metadata_bytes`].
    #[error("join metadata too large")]
    MetadataTooLarge,
    /// The room holds [`RoomsConfig::max_peers_per_room`] peers.
    #[error("room is full")]
    RoomFull,
    /// [`RoomsConfig::max_rooms`] rooms exist.
    #[error("too many rooms")]
    TooManyRooms,
    /// A peer with this id is already in the room.
    #[error("peer id already in the room")]
    DuplicatePeer,
    /// No such room (rooms vanish when their last peer leaves).
    #[error("unknown room")]
    UnknownRoom,
    /// The sender (or the peer leaving or touching) is not in the room.
    #[error("peer not in the room")]
    NotInRoom,
    /// The recipient is not in the sender's room.
    #[error("recipient not in the room")]
    UnknownRecipient,
    /// A peer addressed itself.
    #[error("a peer cannot address itself")]
    SelfAddressed,
}

/// Whether `b` may appear in a room name. Rooms ride on hub channels, so this is the one
/// definition of the name alphabet `[A-Za-z0-9_-.:@/=+#$!~;,|]`; the hub's channel names use it.
pub fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'_' | b'-'
                | b'.'
                | b':'
                | b'@'
                | b'/'
                | b'='
                | b'+'
                | b'#'
                | b'$'
                | b'!'
                | b'~'
                | b';'
                | b','
                | b'|'
        )
}

/// Checks a room name with the hub's channel-name rules: 1..=`max_len` bytes of
/// `[A-Za-z0-9_-.:@/=+#$!~;,|]`, and neither side of the first `:` empty.
pub fn validate_room_name(name: &str, max_len: usize) -> Result<(), RoomError> {
    if name.is_empty() || name.len() > max_len || !name.bytes().all(is_name_byte) {
        return Err(RoomError::BadRoomName);
    }
    if let Some((ns, rest)) = name.split_once(':') {
        if ns.is_empty() || rest.is_empty() {
            return Err(RoomError::BadRoomName);
        }
    }
    Ok(())
}

/// Checks a peer id: 1..=64 characters of `[A-Za-z0-9_-]`.
pub fn validate_peer_id(id: &str) -> Result<(), RoomError> {
    if (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(RoomError::BadPeerId)
    }
}

/// A member of a room as others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its peer id.
    pub peer: String,
    /// The opaque metadata it joined with.
    pub metadata: Vec<u8>,
}

/// The answer to a successful [`Rooms::join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The members already in the room, oldest first (the joiner not included).
    pub members: Vec<Member>,
    /// Whether the joiner is the polite peer towards them: always `true` when `members` is
    /// non-empty (the later joiner of any pair is polite), `false` for the first peer.
    pub polite: bool,
    /// The event to tell `members` about (each of them is impolite towards the joiner).
    pub event: Event,
}

/// Why a peer left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaveReason {
    /// It called [`Rooms::leave`].
    Left,
    /// It was silent longer than [`RoomsConfig::peer_timeout`] ([`Rooms::expire`]).
    TimedOut,
}

/// Something the members of a room must be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `peer` joined `room`; it is polite towards every peer in `notify`.
    Joined {
        /// The room.
        room: String,
        /// The newcomer.
        peer: String,
        /// Its metadata.
        metadata: Vec<u8>,
        /// Who to tell: the members before the join.
        notify: Vec<String>,
    },
    /// `peer` left `room`.
    Left {
        /// The room.
        room: String,
        /// The peer that left.
        peer: String,
        /// Why.
        reason: LeaveReason,
        /// Who to tell: the members that remain (empty when the room vanished).
        notify: Vec<String>,
    },
}

/// Whom a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// One peer of the sender's room.
    Peer(&'a str),
    /// Every other peer of the sender's room.
    Others,
}

/// One message to hand to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The room.
    pub room: String,
    /// The sender.
    pub from: String,
    /// The recipient.
    pub to: String,
    /// The validated message.
    pub message: Message,
}

#[derive(Debug)]
struct Peer {
    metadata: Vec<u8>,
    /// Join order within the room; the larger of two is the polite one.
    seq: u64,
    last_seen: Instant,
}

#[derive(Debug, Default)]
struct Room {
    peers: HashMap<String, Peer>,
}

impl Room {
    /// Peer ids by join order.
    fn ordered(&self) -> Vec<(&String, &Peer)> {
        let mut v: Vec<_> = self.peers.iter().collect();
        v.sort_by_key(|(_, p)| p.seq);
        v
    }
}

/// All signaling rooms of a node. Maps keyed by client-chosen names use std's randomly seeded
/// hasher.
#[derive(Debug, Default)]
pub struct Rooms {
    config: RoomsConfig,
    rooms: HashMap<String, Room>,
    next_seq: u64,
}

impl Rooms {
    /// Empty rooms with this configuration.
    pub fn new(config: RoomsConfig) -> Self {
        Rooms {
            config,
            rooms: HashMap::new(),
            next_seq: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RoomsConfig {
        &self.config
    }

    /// Number of rooms (each has at least one peer).
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The peers of `room`, oldest first; empty when the room does not exist.
    pub fn members(&self, room: &str) -> Vec<String> {
        self.rooms
            .get(room)
            .map(|r| r.ordered().into_iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default()
    }

    /// Perfect negotiation: whether `peer` is polite towards `other` (it joined later).
    /// `None` unless both are in `room` and distinct.
    pub fn is_polite(&self, room: &str, peer: &str, other: &str) -> Option<bool> {
        let r = self.rooms.get(room)?;
        if peer == other {
            return None;
        }
        Some(r.peers.get(peer)?.seq > r.peers.get(other)?.seq)
    }

    /// `peer` joins `room` at `now`.
    pub fn join(
        &mut self,
        room: &str,
        peer: &str,
        metadata: &[u8],
        now: Instant,
    ) -> Result<Joined, RoomError> {
        validate_room_name(room, self.config.max_room_name_len)?;
        validate_peer_id(peer)?;
        if metadata.len() > self.config.max_metadata_bytes {
            return Err(RoomError::MetadataTooLarge);
        }
        if let Some(r) = self.rooms.get(room) {
            if r.peers.contains_key(peer) {
                return Err(RoomError::DuplicatePeer);
            }
            if r.peers.len() >= self.config.max_peers_per_room {
                return Err(RoomError::RoomFull);
            }
        } else if self.rooms.len() >= self.config.max_rooms {
            return Err(RoomError::TooManyRooms);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let r = self.rooms.entry(room.to_owned()).or_default();
        let members: Vec<Member> = r
            .ordered()
            .into_iter()
            .map(|(id, p)| Member {
                peer: id.clone(),
                metadata: p.metadata.clone(),
            })
            .collect();
        r.peers.insert(
            peer.to_owned(),
            Peer {
                metadata: metadata.to_vec(),
                seq,
                last_seen: now,
            },
        );
        let notify = members.iter().map(|m| m.peer.clone()).collect();
        Ok(Joined {
            polite: !members.is_empty(),
            members,
            event: Event::Joined {
                room: room.to_owned(),
                peer: peer.to_owned(),
                metadata: metadata.to_vec(),
                notify,
            },
        })
    }

    fn remove(&mut self, room: &str, peer: &str, reason: LeaveReason) -> Result<Event, RoomError> {
        let r = self.rooms.get_mut(room).ok_or(RoomError::UnknownRoom)?;
        r.peers.remove(peer).ok_or(RoomError::NotInRoom)?;
        let notify: Vec<String> = r.ordered().into_iter().map(|(id, _)| id.clone()).collect();
        if notify.is_empty() {
            self.rooms.remove(room);
        }
        Ok(Event::Left {
            room: room.to_owned(),
            peer: peer.to_owned(),
            reason,
            notify,
        })
    }

    /// `peer` leaves `room`; the room vanishes when it was the last one.
    pub fn leave(&mut self, room: &str, peer: &str) -> Result<Event, RoomError> {
        self.remove(room, peer, LeaveReason::Left)
    }

    /// Records that `peer` was heard from at `now`.
    pub fn touch(&mut self, room: &str, peer: &str, now: Instant) -> Result<(), RoomError> {
        let r = self.rooms.get_mut(room).ok_or(RoomError::UnknownRoom)?;
        let p = r.peers.get_mut(peer).ok_or(RoomError::NotInRoom)?;
        p.last_seen = p.last_seen.max(now);
        Ok(())
    }

    /// Removes every peer silent for longer than [`RoomsConfig::peer_timeout`] at `now` and
    /// returns their leave events (rooms in no particular order, peers by join order).
    pub fn expire(&mut self, now: Instant) -> Vec<Event> {
        let timeout = self.config.peer_timeout;
        let mut stale: Vec<(String, String)> = Vec::new();
        for (name, r) in &self.rooms {
            for (id, p) in r.ordered() {
                if now.saturating_duration_since(p.last_seen) > timeout {
                    stale.push((name.clone(), id.clone()));
                }
            }
        }
        stale
            .into_iter()
            .filter_map(|(room, peer)| self.remove(&room, &peer, LeaveReason::TimedOut).ok())
            .collect()
    }

    /// The earliest instant at which [`Rooms::expire`] may have work, if any peer exists.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.rooms
            .values()
            .flat_map(|r| r.peers.values())
            .map(|p| p.last_seen + self.config.peer_timeout)
            .min()
    }

    /// Relays `message` from `from` in `room` to `to`. A recipient is only ever looked up in the
    /// sender's own room.
    pub fn relay(
        &self,
        room: &str,
        from: &str,
        to: Target<'_>,
        message: Message,
    ) -> Result<Vec<Delivery>, RoomError> {
        let r = self.rooms.get(room).ok_or(RoomError::UnknownRoom)?;
        if !r.peers.contains_key(from) {
            return Err(RoomError::NotInRoom);
        }
        let recipients: Vec<String> = match to {
            Target::Peer(p) if p == from => return Err(RoomError::SelfAddressed),
            Target::Peer(p) => {
                if !r.peers.contains_key(p) {
                    return Err(RoomError::UnknownRecipient);
                }
                vec![p.to_owned()]
            }
            Target::Others => r
                .ordered()
                .into_iter()
                .filter(|(id, _)| id.as_str() != from)
                .map(|(id, _)| id.clone())
                .collect(),
        };
        Ok(recipients
            .into_iter()
            .map(|to| Delivery {
                room: room.to_owned(),
                from: from.to_owned(),
                to,
                message: message.clone(),
            })
            .collect())
    }
}
