//! Sans-IO NAT behaviour discovery ([RFC 5780](https://www.rfc-editor.org/rfc/rfc5780)).
//!
//! [`NatDiscovery`] runs the mapping tests (§4.3), the filtering tests (§4.4) and the
//! hairpinning test (§4.5) against a STUN server that has a second IP address and port, and
//! names the result the RFC 4787 way ([`Mapping`], [`Filtering`]) and the classic RFC 3489 way
//! ([`NatType`]: full cone, address-restricted cone, port-restricted cone, symmetric, or open
//! internet and its firewall variants). [`NatType::path_with`] says whether two peers can punch
//! a hole or need a relay.
//!
//! Like `quinn-proto` and `str0m`, the client has no sockets and no clock. It uses two local UDP
//! sockets ([`Socket::Primary`] for the mapping tests, [`Socket::Secondary`] — a fresh mapping —
//! for the filtering tests and the hairpinning probe), emits [`Transmit`]s naming the socket
//! and destination, and takes received datagrams and [`Instant`](std::time::Instant)s.
//! Retransmissions follow RFC 8489 §6.2.1: an initial RTO, doubled after each request, Rc
//! requests, then `Rm × RTO` of waiting ([`Config`]).
//!
//! # The run loop
//!
//! ```no_run
//! use std::net::UdpSocket;
//! use std::time::{Duration, Instant};
//! use switchboard_nat::{Config, NatDiscovery, Outcome, Socket};
//!
//! let primary = UdpSocket::bind("192.0.2.10:0")?;
//! let secondary = UdpSocket::bind("192.0.2.10:0")?;
//! let config = Config::new("203.0.113.1:3478".parse()?, primary.local_addr()?, secondary.local_addr()?);
//! let mut nat = NatDiscovery::new(config, Instant::now(), 0x5eed);
//! primary.set_nonblocking(true)?;
//! secondary.set_nonblocking(true)?;
//! let mut buf = [0u8; 1500];
//! while !nat.is_done() {
//!     while let Some(t) = nat.poll_transmit() {
//!         let socket = match t.socket { Socket::Primary => &primary, Socket::Secondary => &secondary };
//!         let _ = socket.send_to(t.payload(), t.destination); // a failed send is a lost packet
//!     }
//!     for (which, socket) in [(Socket::Primary, &primary), (Socket::Secondary, &secondary)] {
//!         while let Ok((n, from)) = socket.recv_from(&mut buf) {
//!             nat.handle_receive(Instant::now(), which, from, &buf[..n]);
//!         }
//!     }
//!     std::thread::sleep(Duration::from_millis(5)); // a real shell waits on both sockets
//!     nat.handle_timeout(Instant::now());
//! }
//! match nat.outcome() {
//!     Some(Outcome::Complete(r)) => println!("{} behind {}", r.mapped, r.nat_type().describe()),
//!     other => println!("{other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod behaviour;
mod discovery;

pub use behaviour::{Filtering, Mapping, NatType, Path};
pub use discovery::{
    Config, NatDiscovery, Outcome, Report, Socket, Test, TestResult, Transmit, DEFAULT_LAST_WAIT,
    DEFAULT_MAX_REQUESTS, DEFAULT_RTO, MAX_REQUEST_LEN,
};
