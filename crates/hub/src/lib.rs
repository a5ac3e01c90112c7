//! The transport-free real-time hub: one API that every transport (WebSocket, SSE, long-poll,
//! gRPC, HTTP) adapts onto, with Centrifugo-style channel semantics.
//!
//! * [`Hub`] authenticates connections ([`Hub::connect`] with a JWT, see [`auth`]) and offers
//!   the server API (publish, broadcast, presence, history, disconnect/unsubscribe a user).
//! * [`Session`] is one connection: subscribe (with recovery), unsubscribe, publish, presence,
//!   history, ping — or [`Session::handle`] for a protocol `Command` — and a bounded queue of
//!   pushes read with [`Session::recv`]. A slow reader is disconnected (3008), never buffered
//!   without bound.
//! * Channels `ns:name` take their options from namespace `ns` ([`NamespaceOptions`]): history
//!   size/TTL with offsets and epochs, presence, join/leave, permissions.
//! * [`Broker`] is the storage and fan-out seam; [`MemoryBroker`] is the embedded one,
//!   [`RedisBroker`] lets several nodes share channels, history and presence through Redis.
//!   Time is injected ([`Clock`]) so expiry is testable.
//!
//! No sockets here, except the [`RedisBroker`]'s connections to Redis: tokio is otherwise used
//! only for its sync primitives (and to spawn cleanup tasks when a runtime is current).
//!
//! # A transport's run loop
//!
//! ```
//! # use switchboard_hub::{Hub, HubConfig, proto};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = HubConfig::default();
//! config.allow_anonymous = true;
//! config.default_namespace.allow_subscribe_for_client = true;
//! config.default_namespace.allow_subscribe_for_anonymous = true;
//! let hub = Hub::with_memory_broker(config)?;
//!
//! // The first frame from the client is a connect command.
//! let session = hub.connect(&proto::ConnectRequest::default(), "websocket")?;
//! let _reply = proto::Reply { id: 1, result: Some(proto::reply::Result::Connect(session.connect_result())) };
//!
//! // Then: commands in, replies out; pushes out as they come.
//! let sub = proto::Command {
//!     id: 2,
//!     method: Some(proto::command::Method::Subscribe(proto::SubscribeRequest {
//!         channel: "news".into(),
//!         recover: None,
//!     })),
//! };
//! let reply = session.handle(sub).await;
//! assert!(matches!(reply.result, Some(proto::reply::Result::Subscribe(_))));
//!
//! hub.publish("news", br#"{"title":"hi"}"#.to_vec(), Default::default()).await?;
//! let push = session.recv().await.expect("a publication");
//! assert!(matches!(push.push, Some(proto::push::Push::Publication(_))));
//! session.close().await; // or drop it
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
//! ```
#![deny(missing_docs)]

mod api;
pub mod auth;
pub mod broker;
mod budget;
mod bus;
pub mod channel;
pub mod clock;
pub mod codes;
pub mod config;
mod error;
mod hub;
mod inner;
mod memory;
pub mod metric;
mod push;
mod queue;
mod redis;
mod rooms;
mod session;
mod state;
mod util;

pub use crate::redis::{RedisBroker, RedisConfig, RedisHealth};
pub use auth::{Identity, JwtVerifier};
pub use broker::{
    BoxFuture, Broker, BrokerHandler, Control, HistoryPage, HistoryQuery, HistoryRetention,
    PresenceStats, PublishOptions, PublishOutcome,
};
pub use bus::BusHandler;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{HubConfig, JwtConfig, Limits, NamespaceOptions, RoomSettings};
pub use error::{AuthFailure, BrokerError, ConfigError, HubError, Limit};
pub use hub::{Hub, ServerPublish};
pub use memory::{MemoryBroker, MemoryLimits, HISTORY_ITEM_OVERHEAD};
pub use push::{Codec, SharedPush};
pub use session::Session;
/// The protocol messages (`switchboard_proto::v1`).
pub use switchboard_proto::v1 as proto;

/// Something that happened on this node, for an observer (webhooks): see [`Hub::observe`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// The first subscriber of a channel on this node.
    ChannelOccupied {
        /// The channel.
        channel: String,
    },
    /// The last subscriber of a channel on this node left.
    ChannelVacated {
        /// The channel.
        channel: String,
    },
    /// A session ended.
    SessionClosed {
        /// Its client id.
        client_id: String,
        /// Its user (empty: anonymous).
        user: String,
        /// Its transport.
        transport: String,
    },
}

/// The observer [`Hub::observe`] takes.
pub type NodeObserver = std::sync::Arc<dyn Fn(NodeEvent) + Send + Sync>;
