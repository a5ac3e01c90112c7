//! switchboard's real-time hub protocol, defined once in `proto/switchboard/v1/*.proto`.
//!
//! * [`v1`]: the prost messages (`Command`, `Reply`, `Push`, `ServerFrame`, ...), the tonic
//!   server and client stubs for the `Hub` and `HubApi` services ([`v1::hub_server`],
//!   [`v1::hub_api_server`], [`v1::hub_client`], [`v1::hub_api_client`]), and serde
//!   implementations producing proto3 canonical JSON.
//! * [`json`]: the switchboard JSON mapping used by JSON transports — canonical JSON except that
//!   payload fields (`data`, `connInfo`) carry embedded raw JSON (`b64data` for binary).
//!
//! ```
//! use switchboard_proto::{json, v1};
//!
//! let cmd: v1::Command =
//!     json::from_str(r#"{"id":1,"publish":{"channel":"chat:lobby","data":{"text":"hi"}}}"#).unwrap();
//! let Some(v1::command::Method::Publish(p)) = &cmd.method else { panic!() };
//! assert_eq!(p.data, br#"{"text":"hi"}"#);
//! assert_eq!(
//!     json::to_string(&cmd).unwrap(),
//!     r#"{"id":1,"publish":{"channel":"chat:lobby","data":{"text":"hi"}}}"#
//! );
//! ```
#![deny(missing_docs)]

/// Generated protobuf messages and gRPC stubs of package `switchboard.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/switchboard.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/switchboard.v1.serde.rs"));
}

pub mod centrifugo;
pub mod json;

/// The prost version the messages are generated with (for `Message::encode`/`decode`).
pub use prost;

/// The encoded `FileDescriptorSet` of the switchboard protos (for gRPC reflection or dynamic
/// decoding).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/switchboard_descriptor.bin"));
