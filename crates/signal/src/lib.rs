//! Sans-IO WebRTC signaling for switchboard: validation of what peers send each other and the
//! rooms they meet in.
//!
//! * [`Validator`] turns untrusted client input (`RTCSessionDescriptionInit`,
//!   `RTCIceCandidateInit`, a bye reason) into a [`Message`]: SDP parsed by `webrtc-sdp` and
//!   checked against its declared type and a size limit; ICE candidates parsed by our own RFC
//!   8839 parser ([`Candidate`]). A `Message` cannot be built any other way, so nothing
//!   unparsed is ever relayed, and what is relayed is the normalized form.
//! * [`Rooms`] is the membership state machine: [`Rooms::join`], [`Rooms::leave`],
//!   [`Rooms::relay`] (only ever within the sender's room), liveness with [`Rooms::touch`] and
//!   [`Rooms::expire`], and the perfect-negotiation role of each peer (the later joiner of a
//!   pair is polite).
//!
//! Like the rest of switchboard's protocol crates it has no sockets and no clock: time comes in
//! as an [`Instant`](std::time::Instant), and output goes out as values ([`Delivery`],
//! [`Event`]). See `docs/signaling.md`.
//!
//! # The run loop
//!
//! ```
//! use std::time::Instant;
//! use switchboard_signal::{Rooms, RoomsConfig, Target, Validator};
//!
//! let mut rooms = Rooms::new(RoomsConfig::default());
//! let validator = Validator::default();
//! let now = Instant::now();
//! let alice = rooms.join("call:42", "alice", b"{}", now)?;
//! assert!(!alice.polite);
//! let bob = rooms.join("call:42", "bob", b"{}", now)?;
//! assert!(bob.polite); // bob joined later: polite towards alice
//! // bob trickles a candidate to alice
//! let msg = validator.candidate(
//!     "candidate:1 1 UDP 2122260223 192.0.2.7 54400 typ host",
//!     Some("0"), Some(0), None)?;
//! for d in rooms.relay("call:42", "bob", Target::Peer("alice"), msg)? {
//!     assert_eq!(d.to, "alice"); // hand d.message to alice's connection
//! }
//! rooms.touch("call:42", "alice", now)?;        // on any frame from alice
//! for _event in rooms.expire(Instant::now()) {} // on a timer: tell `notify` who timed out
//! # Ok::<(), switchboard_signal::Error>(())
//! ```

#![deny(missing_docs)]

pub mod candidate;
pub mod message;
pub mod rooms;

pub use candidate::{Address, Candidate, CandidateError, CandidateType, TcpType, Transport};
pub use message::{
    ByeError, CandidateMessageError, IceCandidate, Limits, MediaRef, Message, SdpError, SdpKind,
    SessionDescription, Validator,
};
pub use rooms::{
    validate_peer_id, validate_room_name, Delivery, Event, Joined, LeaveReason, Member, RoomError,
    Rooms, RoomsConfig, Target,
};

/// Any signaling failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A refused offer or answer.
    #[error(transparent)]
    Sdp(#[from] SdpError),
    /// A refused candidate message.
    #[error(transparent)]
    Candidate(#[from] CandidateMessageError),
    /// A refused bye.
    #[error(transparent)]
    Bye(#[from] ByeError),
    /// A refused room operation.
    #[error(transparent)]
    Room(#[from] RoomError),
}
