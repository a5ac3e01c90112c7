//! Settings ([`RedisConfig`]) and connection state ([`RedisHealth`]) of the Redis broker.

use std::time::Duration;

/// Settings of a [`RedisBroker`](super::RedisBroker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Where Redis is: `redis://[user:password@]host:port[/db]` or `redis+unix:///path`.
    pub url: String,
    /// Prefix of every key and pub/sub channel, so several hubs can share one Redis.
    pub prefix: String,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How long one command may take before it fails as unavailable.
    pub command_timeout: Duration,
    /// How often the pub/sub connection is pinged, to notice a silent outage.
    pub ping_interval: Duration,
    /// Longest wait between reconnection attempts (the wait doubles from 100 ms up to this).
    pub reconnect_max_delay: Duration,
    /// For `rediss://` URLs: PEM certificates of the CA(s) that signed Redis's certificate,
    /// trusted instead of the system's roots (managed Redis services and private CAs).
    pub ca_pem: Option<Vec<u8>>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".to_owned(),
            prefix: "switchboard".to_owned(),
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(1),
            reconnect_max_delay: Duration::from_secs(2),
            ca_pem: None,
        }
    }
}

impl RedisConfig {
    /// The defaults with Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

/// The connection state of a [`RedisBroker`](super::RedisBroker) (see
/// [`RedisBroker::health`](super::RedisBroker::health)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisHealth {
    /// Both connections work (`pubsub && commands`).
    pub up: bool,
    /// The pub/sub connection is up with every channel of the node subscribed.
    pub pubsub: bool,
    /// The last command did not fail for want of Redis.
    pub commands: bool,
    /// The last connection failure, with details for logs (clients only see "unavailable").
    pub last_error: Option<String>,
    /// How many times `up` went from true to false.
    pub outages: u64,
}
