//! Hub configuration, embeddable in the server's TOML settings under `[hub]`.
//!
//! ```toml
//! [hub]
//! allow_anonymous = false
//!
//! [hub.default_namespace]          # channels without a `ns:` prefix
//! allow_subscribe_for_client = true
//!
//! [hub.namespaces.chat]            # channels `chat:...`
//! history_size = 100
//! history_ttl_secs = 300
//! presence = true
//! join_leave = true
//! allow_subscribe_for_client = true
//! allow_publish_for_subscriber = true
//! allow_presence_for_subscriber = true
//! allow_history_for_subscriber = true
//!
//! [hub.limits]
//! max_message_size = 65536
//! max_connections_per_user = 10
//! max_publications_per_second = 50
//!
//! [hub.jwt]
//! hmac_secret = "change-me"
//! ```
//!
//! Every struct denies unknown fields and defaults every field, so a partial table is valid.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Top-level hub settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Node name reported by `info`.
    pub node_name: String,
    /// Accept connections without a token (or with an empty `sub`) as anonymous. Default false.
    pub allow_anonymous: bool,
    /// How long a publish idempotency key is remembered, in seconds. Default 300.
    pub idempotency_window_secs: u64,
    /// How long a presence entry lives without refresh, in seconds. [`crate::Hub::maintain`]
    /// refreshes entries of live subscriptions; call it more often than this. Default 60.
    pub presence_ttl_secs: u64,
    /// Options of channels without a namespace prefix.
    pub default_namespace: NamespaceOptions,
    /// Options per namespace: channel `chat:room1` uses `namespaces.chat`. A channel whose
    /// namespace is not listed is refused with 102 unknown channel.
    pub namespaces: BTreeMap<String, NamespaceOptions>,
    /// Size and count limits.
    pub limits: Limits,
    /// Connection token verification keys.
    pub jwt: JwtConfig,
    /// Milliseconds a framed connection (WebSocket) may wait after a push to gather more
    /// before writing them together: fewer, larger writes under heavy fan-out, at the price
    /// of up to this much extra latency. 0 (default) writes at once.
    pub write_delay_ms: u64,
    /// WebRTC signaling rooms.
    pub rooms: RoomSettings,
    /// Memory for history of the embedded (memory) broker, in MiB: payloads plus a fixed
    /// overhead per publication, all channels together. Beyond it the oldest publications
    /// (node-wide) are evicted first; recovering past an evicted publication reports
    /// `recovered = false`. The Redis broker keeps history in Redis (bounded by its
    /// `maxmemory`) and ignores this. Default 256.
    pub history_memory_mib: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            node_name: "switchboard".to_owned(),
            allow_anonymous: false,
            idempotency_window_secs: 300,
            presence_ttl_secs: 60,
            default_namespace: NamespaceOptions::default(),
            namespaces: BTreeMap::new(),
            limits: Limits::default(),
            jwt: JwtConfig::default(),
            write_delay_ms: 0,
            rooms: RoomSettings::default(),
            history_memory_mib: 256,
        }
    }
}

impl HubConfig {
    /// Checks namespace names, history options and limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.default_namespace.validate("")?;
        for (name, ns) in &self.namespaces {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Err(ConfigError::NamespaceName(name.clone()));
            }
            ns.validate(name)?;
        }
        if self.history_memory_mib == 0 {
            return Err(ConfigError::Positive("history_memory_mib"));
        }
        self.limits.validate()?;
        self.rooms.validate()
    }

    /// The history memory budget in bytes.
    pub fn history_memory_bytes(&self) -> usize {
        self.history_memory_mib.saturating_mul(1 << 20)
    }

    /// The idempotency window.
    pub fn idempotency_window(&self) -> Duration {
        Duration::from_secs(self.idempotency_window_secs)
    }

    /// The presence entry TTL.
    pub fn presence_ttl(&self) -> Duration {
        Duration::from_secs(self.presence_ttl_secs.max(1))
    }
}

/// Options of one channel namespace. Everything is off by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceOptions {
    /// Publications kept per channel (0 = no history, no offsets, no recovery).
    pub history_size: usize,
    /// How long a publication stays in history, in seconds (0 = no history).
    pub history_ttl_secs: u64,
    /// How long a channel's stream position (offset + epoch) survives without publications, in
    /// seconds; after that the stream restarts with a new epoch. Default 30 days.
    pub history_meta_ttl_secs: u64,
    /// Keep presence (who is subscribed) for channels of this namespace.
    pub presence: bool,
    /// Send join/leave pushes to subscribers.
    pub join_leave: bool,
    /// Any authenticated connection may subscribe (a token `channels` claim, when present,
    /// restricts this further and, when absent here, grants it).
    pub allow_subscribe_for_client: bool,
    /// Anonymous connections may subscribe (in addition to the rule above).
    pub allow_subscribe_for_anonymous: bool,
    /// Any connection may publish.
    pub allow_publish_for_client: bool,
    /// Connections subscribed to the channel may publish.
    pub allow_publish_for_subscriber: bool,
    /// Anonymous connections may publish (in addition to one of the two rules above).
    pub allow_publish_for_anonymous: bool,
    /// Any connection may query presence.
    pub allow_presence_for_client: bool,
    /// Subscribers may query presence.
    pub allow_presence_for_subscriber: bool,
    /// Any connection may read history.
    pub allow_history_for_client: bool,
    /// Subscribers may read history.
    pub allow_history_for_subscriber: bool,
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        Self {
            history_size: 0,
            history_ttl_secs: 0,
            history_meta_ttl_secs: 30 * 24 * 3600,
            presence: false,
            join_leave: false,
            allow_subscribe_for_client: false,
            allow_subscribe_for_anonymous: false,
            allow_publish_for_client: false,
            allow_publish_for_subscriber: false,
            allow_publish_for_anonymous: false,
            allow_presence_for_client: false,
            allow_presence_for_subscriber: false,
            allow_history_for_client: false,
            allow_history_for_subscriber: false,
        }
    }
}

impl NamespaceOptions {
    fn validate(&self, name: &str) -> Result<(), ConfigError> {
        if (self.history_size == 0) != (self.history_ttl_secs == 0) {
            return Err(ConfigError::HistoryOptions(name.to_owned()));
        }
        Ok(())
    }

    /// Whether channels of this namespace keep history (and so offsets, epochs and recovery).
    pub fn history_enabled(&self) -> bool {
        self.history_size > 0 && self.history_ttl_secs > 0
    }

    /// The retention passed to the broker.
    pub fn retention(&self) -> crate::broker::HistoryRetention {
        if !self.history_enabled() {
            return crate::broker::HistoryRetention::NONE;
        }
        crate::broker::HistoryRetention {
            size: self.history_size,
            ttl: Duration::from_secs(self.history_ttl_secs),
            meta_ttl: Duration::from_secs(self.history_meta_ttl_secs.max(self.history_ttl_secs)),
        }
    }
}

/// Limits, each enforced with its own error code (see [`crate::codes::error`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest publication `data`, in bytes (113). Default 65536.
    pub max_message_size: usize,
    /// Channels one connection may subscribe to (106). Default 128.
    pub max_channels_per_connection: usize,
    /// Connections one (non-anonymous) user may hold on this node, 0 = unlimited (114).
    /// Default 0.
    pub max_connections_per_user: usize,
    /// Connections on this node (115). Default 100000.
    pub max_connections: usize,
    /// Longest channel name in bytes (107). Default 255.
    pub max_channel_length: usize,
    /// Longest idempotency key in bytes (107). Default 128.
    pub max_idempotency_key_length: usize,
    /// Pushes queued for one session before it is disconnected as a slow consumer (3008).
    /// Default 1024.
    pub queue_max_messages: usize,
    /// Bytes (encoded size) queued for one session before it is disconnected as a slow
    /// consumer (3008). Default 4 MiB.
    pub queue_max_bytes: usize,
    /// Channels this node holds in memory at most: channels with subscribers on this node, and
    /// (memory broker) channel streams — each counted separately against this number. A
    /// request needing one more is refused with 106 and `temporary = true` (the memory broker
    /// first drops the least recently used idle stream without publications, if any).
    /// Default 100000.
    pub max_channels: usize,
    /// Client publications per second of one publisher on this node: a user (all its
    /// connections and HTTP publishes together), or the anonymous connections of one client
    /// address ([`crate::Hub::connect_from`]; all anonymous ones together without an address)
    /// (111, temporary). 0 = unlimited. The server API is not limited. Default 50.
    pub max_publications_per_second: u32,
    /// Publications a publisher may send at once above that rate. Default 100.
    pub publication_burst: u32,
    /// Publication `data` bytes per second of one publisher (same publishers as above; 111,
    /// temporary). The burst is one second's worth, at least `max_message_size`. 0 =
    /// unlimited. Default 1 MiB.
    pub max_publish_bytes_per_second: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 65536,
            max_channels_per_connection: 128,
            max_connections_per_user: 0,
            max_connections: 100_000,
            max_channel_length: 255,
            max_idempotency_key_length: 128,
            queue_max_messages: 1024,
            queue_max_bytes: 4 << 20,
            max_channels: 100_000,
            max_publications_per_second: 50,
            publication_burst: 100,
            max_publish_bytes_per_second: 1 << 20,
        }
    }
}

impl Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_message_size", self.max_message_size),
            (
                "max_channels_per_connection",
                self.max_channels_per_connection,
            ),
            ("max_connections", self.max_connections),
            ("max_channel_length", self.max_channel_length),
            ("queue_max_messages", self.queue_max_messages),
            ("queue_max_bytes", self.queue_max_bytes),
            ("max_channels", self.max_channels),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Limit(name));
            }
        }
        if self.max_publications_per_second > 0 && self.publication_burst == 0 {
            return Err(ConfigError::Limit("publication_burst"));
        }
        Ok(())
    }
}

/// Signaling-room settings (docs/signaling.md). Joining room `ns:name` needs subscribe
/// permission on the channel of the same name, so namespaces and token `channels` claims govern
/// rooms too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomSettings {
    /// Most peers in one room (106). Default 8 (a full mesh of 8 is 28 peer connections).
    pub max_peers_per_room: usize,
    /// Most rooms on this node (106). Default 100000.
    pub max_rooms: usize,
    /// A peer silent this long (no command on its connection) leaves its rooms. Default 30.
    pub peer_timeout_secs: u64,
    /// Largest join metadata in bytes (113). Default 4096.
    pub max_metadata_bytes: usize,
    /// Largest SDP offer or answer in bytes (113). Default 65536.
    pub max_sdp_bytes: usize,
    /// Signaling commands (join, leave, offer, answer, candidate, bye) one connection may send
    /// per second on average (111 beyond it). Default 50.
    pub max_commands_per_second: u32,
    /// Burst allowance above that rate. Default 200 (a browser trickles dozens of candidates
    /// at once).
    pub command_burst: u32,
    /// Rooms one connection may be in at once (106). Default 16.
    pub max_rooms_per_connection: usize,
    /// Rooms the connections of one user on this node may be in at once, together (106);
    /// anonymous connections count per connection only. Default 64.
    pub max_rooms_per_user: usize,
}

impl Default for RoomSettings {
    fn default() -> Self {
        Self {
            max_peers_per_room: 8,
            max_rooms: 100_000,
            peer_timeout_secs: 30,
            max_metadata_bytes: 4096,
            max_sdp_bytes: 65536,
            max_commands_per_second: 50,
            command_burst: 200,
            max_rooms_per_connection: 16,
            max_rooms_per_user: 64,
        }
    }
}

impl RoomSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("rooms.max_peers_per_room", self.max_peers_per_room),
            ("rooms.max_rooms", self.max_rooms),
            ("rooms.peer_timeout_secs", self.peer_timeout_secs as usize),
            ("rooms.max_sdp_bytes", self.max_sdp_bytes),
            (
                "rooms.max_commands_per_second",
                self.max_commands_per_second as usize,
            ),
            ("rooms.command_burst", self.command_burst as usize),
            (
                "rooms.max_rooms_per_connection",
                self.max_rooms_per_connection,
            ),
            ("rooms.max_rooms_per_user", self.max_rooms_per_user),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Limit(name));
            }
        }
        Ok(())
    }

    /// The sans-IO room limits.
    pub fn rooms_config(&self) -> switchboard_signal::RoomsConfig {
        switchboard_signal::RoomsConfig {
            max_peers_per_room: self.max_peers_per_room,
            max_rooms: self.max_rooms,
            max_metadata_bytes: self.max_metadata_bytes,
            peer_timeout: Duration::from_secs(self.peer_timeout_secs),
            ..switchboard_signal::RoomsConfig::default()
        }
    }

    /// The message validation limits.
    pub fn message_limits(&self) -> switchboard_signal::Limits {
        switchboard_signal::Limits {
            max_sdp_bytes: self.max_sdp_bytes,
            ..switchboard_signal::Limits::default()
        }
    }
}

/// Keys for connection tokens. A token's `alg` header picks the key: HS256 uses
/// `hmac_secret`; RS256 the RSA key or a JWKS RSA key; ES256 the P-256 key or a JWKS EC key.
/// With a JWKS, a token `kid` selects the key. Algorithms without a configured key are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// HS256 shared secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<String>,
    /// RS256 public key, PEM text (`-----BEGIN PUBLIC KEY-----`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rsa_public_key_pem: Option<String>,
    /// RS256 public key, PEM file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rsa_public_key_file: Option<PathBuf>,
    /// ES256 (P-256) public key, PEM text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecdsa_public_key_pem: Option<String>,
    /// ES256 (P-256) public key, PEM file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecdsa_public_key_file: Option<PathBuf>,
    /// A JWKS document (`{"keys":[...]}`), inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_json: Option<String>,
    /// A JWKS document, file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// Required `aud` (when set, tokens must carry it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Required `iss` (when set, tokens must carry it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds. Default 0.
    pub leeway_secs: u64,
}
