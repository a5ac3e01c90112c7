//! The hub's errors: one enum for what a command can fail with (each variant has a protocol code
//! from [`crate::codes`]), one for the broker seam, one for configuration.

use switchboard_proto::v1 as proto;

use crate::codes::{self, error as code};

/// Why a token or an anonymous connection was refused (all map to code 101).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// No token and anonymous connections are not allowed (or the token's `sub` is empty).
    #[error("anonymous access not allowed")]
    AnonymousNotAllowed,
    /// Not a JWT (bad structure, base64 or JSON).
    #[error("malformed token")]
    Malformed,
    /// The signature does not verify.
    #[error("invalid token signature")]
    BadSignature,
    /// The `alg` header names an algorithm with no configured key (or `none`).
    #[error("unsupported token algorithm")]
    UnsupportedAlgorithm,
    /// The `kid` header matches no JWKS key.
    #[error("unknown token key")]
    UnknownKey,
    /// The claims are invalid: wrong audience or issuer, bad `channels`, bad types.
    #[error("invalid token claims")]
    InvalidClaims,
    /// The `nbf` (not before) claim is still in the future, beyond the leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// The header has a `crit` parameter: it names extensions this server does not
    /// understand (RFC 7515 §4.1.11), so the token must be refused.
    #[error("token header has unsupported critical extensions")]
    CriticalHeader,
}

impl AuthFailure {
    /// A short name for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthFailure::AnonymousNotAllowed => "anonymous_not_allowed",
            AuthFailure::Malformed => "malformed",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::UnsupportedAlgorithm => "unsupported_algorithm",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::InvalidClaims => "invalid_claims",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::CriticalHeader => "critical_header",
        }
    }
}

/// What a hub operation can fail with. [`HubError::code`] is the protocol error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// 101: credentials refused.
    #[error("unauthorized: {0}")]
    Unauthorized(AuthFailure),
    /// 109: the token's `exp` has passed.
    #[error("token expired")]
    TokenExpired,
    /// 102: the channel's namespace is not configured.
    #[error("unknown channel")]
    UnknownChannel,
    /// 103: not allowed by namespace options or token claims.
    #[error("permission denied")]
    PermissionDenied,
    /// 104: the command carries no known method.
    #[error("method not found")]
    MethodNotFound,
    /// 105: already subscribed on this connection.
    #[error("already subscribed")]
    AlreadySubscribed,
    /// 106: `limits.max_channels_per_connection` reached.
    #[error("limit exceeded: too many channels for connection")]
    LimitExceeded,
    /// 107: malformed request.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// 108: history or presence is disabled in the channel's namespace.
    #[error("not available")]
    NotAvailable,
    /// 112: `since` is from another epoch.
    #[error("unrecoverable position")]
    UnrecoverablePosition,
    /// 113: data larger than `limits.max_message_size`.
    #[error("message too large: {size} bytes, limit {max}")]
    MessageTooLarge {
        /// Size of the data.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// 114: `limits.max_connections_per_user` reached.
    #[error("too many connections for user")]
    UserConnectionLimit,
    /// 115: `limits.max_connections` reached.
    #[error("too many connections")]
    ConnectionLimit,
    /// 116: the session was disconnected.
    #[error("connection closed")]
    SessionClosed,
    /// 111: the connection sends signaling commands faster than `rooms.max_commands_per_second`
    /// (beyond the burst). Temporary: slow down and retry.
    #[error("too many requests")]
    TooManyRequests,
    /// A refused signaling-room command: 107 for invalid input (SDP, candidate, bye, room name,
    /// peer id, self-addressed), 113 for an over-large SDP or join metadata, 106 for a full room
    /// or too many rooms, 105 for a peer id already in the room, 102 for an unknown room, a
    /// sender not in the room or an unknown recipient (one code and text for the three, so a
    /// client cannot probe other rooms).
    #[error("{}", signal_text(.0))]
    Signal(switchboard_signal::Error),
    /// A node or per-client bound refused the request: 106 or 111, see [`Limit`].
    #[error("{0}")]
    Limit(Limit),
    /// 100: the broker failed.
    #[error("internal error: {0}")]
    Broker(BrokerError),
}

impl From<BrokerError> for HubError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::ChannelLimit => Self::Limit(Limit::NodeChannels),
            other => Self::Broker(other),
        }
    }
}

/// Which bound refused a request ([`HubError::Limit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// 106, temporary: the node holds `limits.max_channels` channels (subscribed channels, or
    /// channel streams of the memory broker) and this request needs a new one.
    NodeChannels,
    /// 111, temporary: the publisher exceeded `limits.max_publications_per_second` (beyond
    /// `limits.publication_burst`).
    PublishRate,
    /// 111, temporary: the publisher exceeded `limits.max_publish_bytes_per_second`.
    PublishBytes,
    /// 106: the connection is in `rooms.max_rooms_per_connection` rooms.
    RoomsPerConnection,
    /// 106: the user's connections on this node are in `rooms.max_rooms_per_user` rooms.
    RoomsPerUser,
}

impl Limit {
    /// The protocol error code.
    pub fn code(self) -> u32 {
        match self {
            Self::PublishRate | Self::PublishBytes => code::TOO_MANY_REQUESTS,
            Self::NodeChannels | Self::RoomsPerConnection | Self::RoomsPerUser => {
                code::LIMIT_EXCEEDED
            }
        }
    }

    /// Whether retrying later (without doing anything else first) may succeed.
    pub fn temporary(self) -> bool {
        matches!(
            self,
            Self::NodeChannels | Self::PublishRate | Self::PublishBytes
        )
    }

    /// The metric label value of this refusal (see [`crate::metric`]).
    pub fn reason(self) -> &'static str {
        use crate::metric::reason;
        match self {
            Self::NodeChannels => reason::NODE_CHANNELS,
            Self::PublishRate => reason::PUBLISH_RATE,
            Self::PublishBytes => reason::PUBLISH_BYTES,
            Self::RoomsPerConnection => "rooms_per_connection",
            Self::RoomsPerUser => "rooms_per_user",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NodeChannels => {
                "limit exceeded: too many channels on this node (limits.max_channels), retry later"
            }
            Self::PublishRate => {
                "too many requests: publication rate limit (limits.max_publications_per_second)"
            }
            Self::PublishBytes => {
                "too many requests: publication byte rate limit \
                 (limits.max_publish_bytes_per_second)"
            }
            Self::RoomsPerConnection => {
                "limit exceeded: too many rooms for connection (rooms.max_rooms_per_connection)"
            }
            Self::RoomsPerUser => {
                "limit exceeded: too many rooms for user (rooms.max_rooms_per_user)"
            }
        })
    }
}

impl HubError {
    /// The protocol error code (see [`crate::codes::error`]).
    pub fn code(&self) -> u32 {
        match self {
            Self::Unauthorized(_) => code::UNAUTHORIZED,
            Self::TokenExpired => code::TOKEN_EXPIRED,
            Self::UnknownChannel => code::UNKNOWN_CHANNEL,
            Self::PermissionDenied => code::PERMISSION_DENIED,
            Self::MethodNotFound => code::METHOD_NOT_FOUND,
            Self::AlreadySubscribed => code::ALREADY_SUBSCRIBED,
            Self::LimitExceeded => code::LIMIT_EXCEEDED,
            Self::BadRequest(_) => code::BAD_REQUEST,
            Self::NotAvailable => code::NOT_AVAILABLE,
            Self::UnrecoverablePosition => code::UNRECOVERABLE_POSITION,
            Self::MessageTooLarge { .. } => code::MESSAGE_TOO_LARGE,
            Self::UserConnectionLimit => code::USER_CONNECTION_LIMIT,
            Self::ConnectionLimit => code::CONNECTION_LIMIT,
            Self::SessionClosed => code::SESSION_CLOSED,
            Self::TooManyRequests => code::TOO_MANY_REQUESTS,
            Self::Limit(l) => l.code(),
            Self::Broker(_) => code::INTERNAL,
            Self::Signal(e) => signal_code(e),
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn temporary(&self) -> bool {
        match self {
            Self::Broker(_) | Self::ConnectionLimit | Self::TooManyRequests => true,
            Self::Limit(l) => l.temporary(),
            _ => false,
        }
    }

    /// The protocol `Error` message.
    pub fn to_proto(&self) -> proto::Error {
        // Why a token failed helps only someone forging one: the wire says "invalid token",
        // the reason goes to `switchboard_hub_auth_failures_total` and the server's log.
        let message = match self {
            Self::Unauthorized(f) if *f != AuthFailure::AnonymousNotAllowed => {
                "unauthorized: invalid token".to_owned()
            }
            other => other.to_string(),
        };
        proto::Error {
            code: self.code(),
            message,
            temporary: self.temporary(),
        }
    }

    /// For a failed `connect`: the disconnect the transport should send before closing, when
    /// the failure is terminal for the connection. `None` means: answer the connect command
    /// with [`HubError::to_proto`] and let the client decide (e.g. 109 token expired: refresh
    /// the token and retry).
    pub fn connect_disconnect(&self) -> Option<proto::Disconnect> {
        let code = match self {
            Self::Unauthorized(_) => codes::disconnect::INVALID_TOKEN,
            Self::UserConnectionLimit | Self::ConnectionLimit => {
                codes::disconnect::CONNECTION_LIMIT
            }
            Self::BadRequest(_) => codes::disconnect::BAD_REQUEST,
            Self::PermissionDenied => codes::disconnect::PERMISSION_DENIED,
            Self::Broker(_) => codes::disconnect::SERVER_ERROR,
            _ => return None,
        };
        Some(codes::disconnect_message(code))
    }
}

/// The protocol code of a signaling failure (docs/signaling.md).
fn signal_code(e: &switchboard_signal::Error) -> u32 {
    use switchboard_signal::{Error as E, RoomError, SdpError};
    match e {
        E::Sdp(SdpError::TooLarge { .. }) | E::Room(RoomError::MetadataTooLarge) => {
            code::MESSAGE_TOO_LARGE
        }
        E::Room(RoomError::RoomFull | RoomError::TooManyRooms) => code::LIMIT_EXCEEDED,
        E::Room(RoomError::DuplicatePeer) => code::ALREADY_SUBSCRIBED,
        E::Room(RoomError::UnknownRoom | RoomError::NotInRoom | RoomError::UnknownRecipient) => {
            code::UNKNOWN_CHANNEL
        }
        _ => code::BAD_REQUEST,
    }
}

/// The error text of a signaling failure: the unknown-room family shares one text.
fn signal_text(e: &switchboard_signal::Error) -> String {
    if signal_code(e) == code::UNKNOWN_CHANNEL {
        "unknown room or peer".to_owned()
    } else {
        e.to_string()
    }
}

/// A broker failure (network, backend error). Always reported as 100 internal, temporary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The backend failed.
    #[error("broker backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend cannot be reached right now (e.g. Redis is down, or did not answer within
    /// its timeout): nothing was done, or the outcome is unknown. Clients see
    /// `100 "internal error: broker unavailable: ..."` with `temporary = true`: retry later (a
    /// publish with an idempotency key can be retried safely).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker was shut down.
    #[error("broker closed")]
    Closed,
    /// The broker holds as many channels as it may (the memory broker's `max_streams`) and the
    /// request needs a new one. Clients see 106 with `temporary = true`.
    #[error("too many channels")]
    ChannelLimit,
}

/// A configuration problem found at start-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A namespace name is empty or uses characters other than `[A-Za-z0-9_-]`.
    #[error("invalid namespace name {0:?}")]
    NamespaceName(String),
    /// History needs both `history_size` and `history_ttl_secs` (or neither).
    #[error("namespace {0:?}: history_size and history_ttl_secs must both be set or both be 0")]
    HistoryOptions(String),
    /// A limit is zero where zero makes no sense.
    #[error("limits.{0} must be greater than 0")]
    Limit(&'static str),
    /// A hub setting is zero where zero makes no sense.
    #[error("hub.{0} must be greater than 0")]
    Positive(&'static str),
    /// A key file could not be read.
    #[error("reading {path}: {source}")]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key or JWKS could not be parsed.
    #[error("jwt.{field}: {message}")]
    Key {
        /// The config field.
        field: &'static str,
        /// What was wrong.
        message: String,
    },
}
