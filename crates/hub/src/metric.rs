//! Every metric the hub records, by name, in one place (recorded with the `metrics` crate; the
//! server exports them for Prometheus on `/metrics`).
//!
//! Counters end in `_total`; labels are given with each name.

/// Counter, label `reason` ([`crate::AuthFailure::as_str`]): connects refused for their
/// credentials. The client is told only "invalid token" (or that anonymous access is off); the
/// reason is here and in the server's log.
pub const AUTH_FAILURES_TOTAL: &str = "switchboard_hub_auth_failures_total";
/// Gauge: connections on this node.
pub const CONNECTIONS: &str = "switchboard_hub_connections";
/// Counter, label `transport`: accepted connects.
pub const CONNECTS_TOTAL: &str = "switchboard_hub_connects_total";
/// Counter: publications stored and fanned out (idempotent repeats not counted).
pub const PUBLICATIONS_TOTAL: &str = "switchboard_hub_publications_total";
/// Counter: failed background broker calls (presence refresh, leave, unsubscribe); the Redis
/// broker adds the labels `broker="redis"` and `op` for its own failures.
pub const BROKER_ERRORS_TOTAL: &str = "switchboard_hub_broker_errors_total";
/// Gauge: 1 while the Redis broker reaches Redis, else 0.
pub const BROKER_UP: &str = "switchboard_hub_broker_up";
/// Counter: sessions disconnected with 3008 because their push queue overflowed.
pub const SLOW_CONSUMER_DISCONNECTS_TOTAL: &str = "switchboard_hub_slow_consumer_disconnects_total";
/// Counter: subscriptions ended with 2500 (a gap or an epoch change in the stream).
pub const INSUFFICIENT_STATE_TOTAL: &str = "switchboard_hub_insufficient_state_total";
/// Counter, label `reason`: client requests refused by a node or publish bound
/// (see [`reason`]).
pub const REFUSED_TOTAL: &str = "switchboard_hub_refused_total";
/// Gauge: bytes of history the memory broker holds (payloads plus per-publication overhead),
/// bounded by `[hub] history_memory_mib`.
pub const HISTORY_BYTES: &str = "switchboard_hub_history_bytes";
/// Gauge: channel streams (positions, with or without history) the memory broker holds, bounded
/// by `[hub.limits] max_channels`.
pub const HISTORY_STREAMS: &str = "switchboard_hub_history_streams";
/// Counter, label `what`: `publication` — evicted from history (oldest first) to stay within
/// `history_memory_mib`; `stream` — an idle stream without publications dropped to make room
/// under `max_channels`.
pub const HISTORY_EVICTED_TOTAL: &str = "switchboard_hub_history_evicted_total";
/// Gauge: signaling rooms with a peer on this node.
pub const ROOMS: &str = "switchboard_hub_rooms";
/// Counter: signaling-room joins.
pub const ROOM_JOINS_TOTAL: &str = "switchboard_hub_room_joins_total";
/// Counter: room peers that timed out (silent on this node, or their node died).
pub const ROOM_TIMEOUTS_TOTAL: &str = "switchboard_hub_room_timeouts_total";
/// Counter, label `kind` (join, leave, offer, answer, candidate, bye): signaling commands
/// handled.
pub const SIGNAL_MESSAGES_TOTAL: &str = "switchboard_hub_signal_messages_total";
/// Counter, label `reason` (invalid, too_large, unknown_room, limit, duplicate_peer,
/// permission, rate_limited, rooms_per_connection, rooms_per_user, other): refused signaling
/// commands.
pub const SIGNAL_REFUSED_TOTAL: &str = "switchboard_hub_signal_refused_total";

/// Values of the `reason` label of [`REFUSED_TOTAL`].
pub mod reason {
    /// A client publish over `limits.max_publications_per_second` (beyond the burst).
    pub const PUBLISH_RATE: &str = "publish_rate";
    /// A client publish over `limits.max_publish_bytes_per_second`.
    pub const PUBLISH_BYTES: &str = "publish_bytes";
    /// A new channel while the node holds `limits.max_channels` (subscriptions, or memory
    /// broker streams).
    pub const NODE_CHANNELS: &str = "node_channels";
}
