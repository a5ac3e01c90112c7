//! The Rust client of switchboard's hub.
//!
//! [`state`] holds the protocol state without I/O or clock (what each subscription has seen,
//! the reconnect backoff).
pub mod state;
