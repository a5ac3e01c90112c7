//! Every error, disconnect and unsubscribe code of the hub protocol, in one place.
//!
//! The numbering follows Centrifugo's so users find familiar values: reply errors are 100..=199,
//! unsubscribe pushes 2000..=2999, disconnects 3000..=3999 where 3000..=3499 ask the client to
//! reconnect and 3500..=3999 tell it not to.

/// Error codes carried by `Reply.error.code` (and the `error` of server API responses).
pub mod error {
    /// Internal server error, e.g. the broker is unreachable (temporary).
    pub const INTERNAL: u32 = 100;
    /// Bad or missing credentials: malformed token, bad signature, unsupported algorithm,
    /// unknown key, invalid claims, or anonymous access while it is not allowed.
    pub const UNAUTHORIZED: u32 = 101;
    /// The channel's namespace is not configured.
    pub const UNKNOWN_CHANNEL: u32 = 102;
    /// The connection may not do this on this channel.
    pub const PERMISSION_DENIED: u32 = 103;
    /// The command has no (known) method.
    pub const METHOD_NOT_FOUND: u32 = 104;
    /// Already subscribed to the channel on this connection.
    pub const ALREADY_SUBSCRIBED: u32 = 105;
    /// A count limit: channels on this connection, rooms on this connection or of this user,
    /// or (with `temporary`) channels on this node.
    pub const LIMIT_EXCEEDED: u32 = 106;
    /// Malformed request: invalid channel name, over-long idempotency key, connect twice, ...
    pub const BAD_REQUEST: u32 = 107;
    /// The feature is off for this namespace (history or presence disabled).
    pub const NOT_AVAILABLE: u32 = 108;
    /// The connection token has expired: get a new one and connect again.
    pub const TOKEN_EXPIRED: u32 = 109;
    /// Too many requests: a rate limit (the connection's signaling commands, the publisher's
    /// publications or publication bytes). Temporary.
    pub const TOO_MANY_REQUESTS: u32 = 111;
    /// A history `since` position from another epoch.
    pub const UNRECOVERABLE_POSITION: u32 = 112;
    /// Publication data larger than `limits.max_message_size`.
    pub const MESSAGE_TOO_LARGE: u32 = 113;
    /// The user already has `limits.max_connections_per_user` connections.
    pub const USER_CONNECTION_LIMIT: u32 = 114;
    /// The node already has `limits.max_connections` connections (temporary).
    pub const CONNECTION_LIMIT: u32 = 115;
    /// The session has been disconnected.
    pub const SESSION_CLOSED: u32 = 116;
}

/// Codes of `Push.disconnect`.
pub mod disconnect {
    /// The connection ended normally (client went away). Reconnect.
    pub const CONNECTION_CLOSED: u32 = 3000;
    /// The server is shutting down. Reconnect.
    pub const SHUTDOWN: u32 = 3001;
    /// Internal server error. Reconnect.
    pub const SERVER_ERROR: u32 = 3004;
    /// The connection's token expired. Reconnect with a fresh token.
    pub const EXPIRED: u32 = 3005;
    /// The client did not read its pushes fast enough and its bounded queue overflowed.
    /// Reconnect (and recover).
    pub const SLOW_CONSUMER: u32 = 3008;
    /// Writing to the transport failed. Reconnect.
    pub const WRITE_ERROR: u32 = 3009;
    /// The server lost track of the stream position. Reconnect and recover.
    pub const INSUFFICIENT_STATE: u32 = 3010;
    /// The server API asked the client to reconnect.
    pub const FORCE_RECONNECT: u32 = 3011;
    /// Nothing (no frame, no pong) arrived within the transport's idle timeout, or no
    /// `connect` in time. Reconnect.
    pub const STALE: u32 = 3012;
    /// The token is invalid (unauthorized). Do not reconnect with it.
    pub const INVALID_TOKEN: u32 = 3500;
    /// The client sent something the server cannot parse. Do not reconnect.
    pub const BAD_REQUEST: u32 = 3501;
    /// The server API disconnected the user. Do not reconnect.
    pub const FORCE_DISCONNECT: u32 = 3503;
    /// A connection limit was reached. Do not reconnect right away.
    pub const CONNECTION_LIMIT: u32 = 3504;
    /// Permission denied at connection level. Do not reconnect.
    pub const PERMISSION_DENIED: u32 = 3507;

    /// Whether a client should reconnect after a disconnect with `code`.
    pub fn reconnect(code: u32) -> bool {
        code < 3500
    }
}

/// Codes of `Push.unsubscribe`.
pub mod unsubscribe {
    /// The server API unsubscribed the connection from the channel.
    pub const SERVER: u32 = 2000;
    /// The hub saw a gap or an epoch change in the channel stream: resubscribe with recovery.
    pub const INSUFFICIENT_STATE: u32 = 2500;
}

use switchboard_proto::v1 as proto;

/// The canonical disconnect message for `code`.
pub fn disconnect_message(code: u32) -> proto::Disconnect {
    let reason = match code {
        disconnect::CONNECTION_CLOSED => "connection closed",
        disconnect::SHUTDOWN => "shutdown",
        disconnect::SERVER_ERROR => "internal server error",
        disconnect::EXPIRED => "expired",
        disconnect::SLOW_CONSUMER => "slow consumer",
        disconnect::WRITE_ERROR => "write error",
        disconnect::INSUFFICIENT_STATE => "insufficient state",
        disconnect::FORCE_RECONNECT => "force reconnect",
        disconnect::STALE => "stale",
        disconnect::INVALID_TOKEN => "invalid token",
        disconnect::BAD_REQUEST => "bad request",
        disconnect::FORCE_DISCONNECT => "force disconnect",
        disconnect::CONNECTION_LIMIT => "connection limit",
        disconnect::PERMISSION_DENIED => "permission denied",
        _ => "disconnect",
    };
    proto::Disconnect {
        code,
        reason: reason.to_owned(),
        reconnect: disconnect::reconnect(code),
    }
}
