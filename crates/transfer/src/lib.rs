//! `switchboard send` / `receive`: peer-to-peer file transfer over a WebRTC data channel.
//!
//! * [`code`]: the transfer code (`7-amber-crane-otter`): a room number and secret words.
//! * [`seal`]: SPAKE2 keyed by the code, and AES-256-GCM sealing of what is signaled.
//! * [`signal`]: pairing in a switchboard room (the server relays sealed envelopes only).
//! * [`manual`]: serverless signaling: an offer or answer as one line of text (`sb1:…`).
//! * [`turn`]: a sans-IO TURN client (relay candidates), over UDP, or over TCP or TLS through
//!   a local bridge (`turn_stream`) when UDP to the TURN server is blocked.
//! * [`peer`]: the str0m peer and the tokio task that drives it (sockets, clock).
//! * [`wire`] and [`files`]: the file protocol on the data channel.
//!
//! ```text
//! receiver                                                sender
//! peer::gather -> Agent::offer -> Session::send_offer ->  signal::sender -> Agent::accept_offer
//! Session::answer <- Session::send_answer <-------------- (answer)
//! Agent::start -> files::receive  <== data channel ==>    Agent::start -> files::send
//! ```
#![deny(missing_docs)]

pub mod code;
pub mod files;
pub mod manual;
pub mod peer;
pub mod seal;
pub mod signal;
pub mod turn;
mod turn_stream;
pub mod wire;

pub use code::Code;
