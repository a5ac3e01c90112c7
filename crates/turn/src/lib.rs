//! Sans-IO STUN/TURN server logic: Binding with RFC 5780, and TURN (RFC 8656) allocations,
//! permissions, channels and long-term/REST authentication.
//!
//! Nothing here owns a socket or reads a clock. What crosses to the I/O side is defined in one
//! place and re-exported here: the server crate receives a datagram or a framed stream chunk,
//! describes where it arrived ([`Arrival`]) and, for TURN, the time ([`Now`]), and asks
//! [`BindingService::handle`] (Binding alone, no state) or [`TurnService::handle`] what to do.
//! Both answer with one [`Output`]: write `len` bytes of the caller's output buffer to an
//! address from one of the listener's sockets ([`Via`]), send a payload from a relay socket
//! ([`Output::Relay`]), or drop the input (UDP) / close the connection (TCP, TLS) for a stated
//! [`DropReason`] the caller counts. Relay sockets are bound through [`RelayProvider`]; what
//! peers send to them goes to [`TurnService::handle_peer`], which answers with a [`PeerOutput`].
//!
//! ```
//! use std::net::SocketAddr;
//! use switchboard_stun::{Class, Message, MessageBuilder, Method, TransactionId};
//! use switchboard_turn::{Arrival, BindingService, Output, Transport, Via};
//!
//! let service = BindingService::new("switchboard");
//! let mut req = [0u8; 64];
//! let n = {
//!     let mut b = MessageBuilder::new(&mut req, Class::Request, Method::BINDING, TransactionId([7; 12])).unwrap();
//!     b.fingerprint().unwrap();
//!     b.finish()
//! };
//! let client: SocketAddr = "192.0.2.1:40000".parse().unwrap();
//! let local: SocketAddr = "203.0.113.5:3478".parse().unwrap();
//! let arrival = Arrival { peer: client, local, other: None, transport: Transport::Udp };
//! let mut out = [0u8; 512];
//! match service.handle(&arrival, &req[..n], &mut out) {
//!     Output::Reply { via: Via::Same, to, len, error: false } => {
//!         assert_eq!(to, client);
//!         let resp = Message::parse(&out[..len]).unwrap();
//!         assert_eq!(resp.class(), Class::Success);
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```
#![deny(missing_docs)]

mod allocation;
pub mod auth;
mod binding;
pub mod peer_filter;
mod ports;
mod seam;
mod service;

pub use allocation::{Allocation, Traffic};
pub use binding::BindingService;
pub use ports::{Parity, PortPicker, RANDOM_TRIES};
pub use seam::{
    Arrival, DropReason, Family, FiveTuple, Now, Output, PeerDrop, PeerOutput, RelayBinding,
    RelayError, RelayProvider, RelayRequest, Transport, Via, MAX_REPLY, PEER_OVERHEAD,
};
pub use service::{
    AllocationEnded, EndReason, TurnConfig, TurnService, TurnStats, ERROR_CODES, MAX_ENDED_RECORDS,
};
