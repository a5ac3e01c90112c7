//! The hub's transports: thin adapters from HTTP, WebSocket, SSE, long-poll and gRPC onto
//! [`switchboard_hub::Hub`] and [`switchboard_hub::Session`]. Semantics (auth, permissions,
//! recovery, limits, codes) live in the hub; this module only moves frames.
//!
//! | file | endpoint |
//! | --- | --- |
//! | `ws.rs` | `GET /v1/ws` (subprotocols `switchboard.json`, `switchboard.proto`) |
//! | `sse.rs` | `GET /v1/sse?channel=...` |
//! | `poll.rs` | `GET /v1/poll?channel=...&since=...` |
//! | `rest.rs` | `POST /v1/publish`, `POST /v1/api/<method>` |
//! | `grpc.rs` | gRPC `switchboard.v1.Hub` and `switchboard.v1.HubApi` |
//! | `webtransport.rs` | WebTransport `/v1/wt` over HTTP/3 (session in `crate::http::h3`) |
//!
//! `stream.rs` holds the run loop shared by the framed, bidirectional transports (WebSocket,
//! the gRPC `Connect` stream, WebTransport streams).

mod centrifugo_api;
mod ctx;
mod cursor;
pub(crate) mod error;
mod frame;
mod grpc;
pub(crate) mod ice;
mod params;
mod poll;
pub(crate) mod pusher;
mod rest;
mod routes;
mod sse;
mod stream;
#[cfg(test)]
mod tests;
pub(crate) mod webtransport;
mod ws;

pub(crate) use ctx::{Ctx, HubCtx};
pub(crate) use routes::{maintenance, routes};
