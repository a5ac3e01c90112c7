//! Settings, layered: built-in defaults < TOML file (`--config`) < `SWITCHBOARD_*` environment <
//! command-line flags.
//!
//! Every setting has one name, the flag name (`stun-udp`); the environment variable is the same
//! name upper-cased with `_` (`SWITCHBOARD_STUN_UDP`), and the TOML key is given in
//! [`DEFAULT_TOML`]. An unknown key or a bad value anywhere stops start-up with an error naming it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
pub use switchboard_hub::HubConfig;

/// A configuration error; the message always names the offending key or file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys or bad values.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key).
        message: String,
    },
    /// An unknown setting name in the environment or on the command line.
    #[error("unknown setting {origin}")]
    UnknownKey {
        /// Where it came from (`SWITCHBOARD_FOO` or `--foo`).
        origin: String,
    },
    /// A value that does not parse.
    #[error("bad value for {origin}: {value:?}: {reason}")]
    BadValue {
        /// Where it came from.
        origin: String,
        /// The value given.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// Settings that are fine one by one but not together.
    #[error("invalid settings: {0}")]
    Invalid(String),
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// A list of listen addresses; empty means the listener is off.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Listen(pub Vec<SocketAddr>);

impl Listen {
    fn one(addr: &str) -> Self {
        Listen(vec![addr.parse().expect("built-in address")])
    }

    /// Parses a list of `IP:PORT` values; a lone `off` (or an empty list) disables the listener.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, String> {
        let mut out = Vec::new();
        let values: Vec<&str> = values
            .iter()
            .flat_map(|v| v.as_ref().split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        if values.iter().any(|v| v.eq_ignore_ascii_case("off")) {
            if values.len() > 1 {
                return Err("`off` cannot be combined with addresses".into());
            }
            return Ok(Listen(out));
        }
        for v in values {
            let addr: SocketAddr = v.parse().map_err(|_| {
                format!("expected IP:PORT (e.g. 127.0.0.1:3478, [::1]:3478) or off, got {v:?}")
            })?;
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        Ok(Listen(out))
    }

    /// Whether the listener is off.
    pub fn is_off(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Listen {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<String> = self.0.iter().map(|a| a.to_string()).collect();
        v.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let values = match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        Listen::parse(&values).map_err(serde::de::Error::custom)
    }
}

/// All settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `pretty` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `switchboard=debug,info`.
    pub log_level: String,
    /// STUN/TURN listeners.
    pub stun: StunSettings,
    /// Certificates for every TLS listener.
    pub tls: TlsSettings,
    /// The HTTP stack: listeners, hub transports, server API keys.
    pub http: HttpSettings,
    /// TURN relays (on the STUN listeners).
    pub turn: TurnSettings,
    /// HTTP/3 over QUIC on the HTTPS ports.
    pub http3: Http3Settings,
    /// The real-time hub (`switchboard_hub::HubConfig`): namespaces, limits, JWT keys.
    #[serde(default = "default_hub")]
    pub hub: HubConfig,
    /// Several nodes acting as one through Redis.
    pub cluster: ClusterSettings,
}

/// Cluster settings: without `redis` the node is alone (in-memory broker).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// Redis (or Valkey) URL shared by every node, e.g. `redis://127.0.0.1:6379/0`
    /// `rediss://...` for TLS, or `redis+unix:///path`. Publications, history,
    /// presence, rooms and TURN revocations then
    /// span every node using the same Redis and key prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// Prefix of every Redis key and pub/sub channel (several clusters can share one Redis).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_prefix: Option<String>,
    /// For `rediss://`: a PEM file with the CA certificate(s) that signed Redis's certificate
    /// (default: the system's trusted roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_ca: Option<PathBuf>,
}

/// The hub settings of a server started without configuration: anonymous clients allowed
/// (from loopback only, see [`HttpSettings::anonymous_loopback_only`]) and a default namespace
/// where every connection may subscribe, publish, and read presence and history (100
/// publications kept for 5 minutes, so recovery works).
pub fn default_hub() -> HubConfig {
    let mut hub = HubConfig {
        allow_anonymous: true,
        ..HubConfig::default()
    };
    let ns = &mut hub.default_namespace;
    ns.history_size = 100;
    ns.history_ttl_secs = 300;
    ns.presence = true;
    ns.allow_subscribe_for_client = true;
    ns.allow_subscribe_for_anonymous = true;
    ns.allow_publish_for_client = true;
    ns.allow_publish_for_anonymous = true;
    ns.allow_presence_for_subscriber = true;
    ns.allow_history_for_subscriber = true;
    hub
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            log_format: LogFormat::Pretty,
            log_level: "info".into(),
            stun: StunSettings::default(),
            tls: TlsSettings::default(),
            http: HttpSettings::default(),
            turn: TurnSettings::default(),
            http3: Http3Settings::default(),
            hub: default_hub(),
            cluster: ClusterSettings::default(),
        }
    }
}

/// STUN/TURN listener settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StunSettings {
    /// UDP listen addresses.
    pub udp: Listen,
    /// TCP listen addresses.
    pub tcp: Listen,
    /// TLS listen addresses.
    pub tls: Listen,
    /// RFC 5780 alternate IP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alt_address: Option<IpAddr>,
    /// RFC 5780 alternate port (default: primary port + 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alt_port: Option<u16>,
    /// SOFTWARE attribute value (empty: none).
    pub software: String,
    /// Maximum open TCP+TLS connections (lowered at start-up to fit the descriptor limit).
    pub max_connections: usize,
    /// Open TCP+TLS connections per client address (IPv6: per /64), 0 = no per-address cap.
    pub max_connections_per_ip: usize,
    /// Seconds a TCP/TLS connection may stay idle.
    pub idle_timeout: u64,
    /// UDP worker sockets per address (0: one per CPU core).
    pub workers: usize,
}

impl Default for StunSettings {
    fn default() -> Self {
        StunSettings {
            udp: Listen::one("127.0.0.1:3478"),
            tcp: Listen::one("127.0.0.1:3478"),
            tls: Listen::one("127.0.0.1:5349"),
            alt_address: None,
            alt_port: None,
            software: concat!("switchboard ", env!("CARGO_PKG_VERSION")).into(),
            max_connections: 10_000,
            max_connections_per_ip: 1024,
            idle_timeout: 300,
            workers: 0,
        }
    }
}

/// Certificate settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain; without it a self-signed certificate is generated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// HTTP settings: the listeners every HTTP transport shares (REST, WebSocket, SSE, long-poll,
/// gRPC) and the hub transports' liveness and access settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Plain HTTP listen addresses (HTTP/1.1 and h2c).
    pub listen: Listen,
    /// HTTPS listen addresses (TLS, ALPN h2 and http/1.1), flag `--https`.
    pub tls_listen: Listen,
    /// Keys accepted by the server API (`Authorization: apikey KEY`); none = API disabled.
    pub api_keys: Vec<String>,
    /// Anonymous hub connections (when `hub.allow_anonymous`) only from loopback peers.
    pub anonymous_loopback_only: bool,
    /// Seconds between WebSocket pings, SSE heartbeat comments and HTTP/2 keep-alive pings.
    pub ping_interval_secs: u64,
    /// Seconds a WebSocket may stay silent (no frame, no pong) before it is closed; also the
    /// time allowed for the first (connect) command.
    pub idle_timeout_secs: u64,
    /// Longest wait of a long-poll request, seconds.
    pub poll_timeout_secs: u64,
    /// Seconds a new connection (after its TLS handshake) may take to send its first request
    /// before it is closed.
    pub first_request_timeout_secs: u64,
    /// Open connections of all HTTP and HTTPS listeners together (TCP; HTTP/3 has its own
    /// `[http3] max_connections`). Lowered at start-up to fit the descriptor limit.
    pub max_connections: usize,
    /// Open HTTP connections per client address (IPv6: per /64), 0 = no per-address cap.
    pub max_connections_per_ip: usize,
    /// A request body must arrive at this average rate, bytes per second, once
    /// `body_grace_secs` have passed; slower ones are cut off with 408. 0 = no minimum.
    pub body_min_rate: u64,
    /// Seconds a request body may take before `body_min_rate` applies.
    pub body_grace_secs: u64,
    /// Origins (`https://app.example.com`) whose pages may use the hub endpoints: WebSocket
    /// upgrades and state-changing requests carrying another `Origin` are refused with 403,
    /// and CORS is answered for these. The server's own origin is always allowed; `*` allows
    /// every origin. Flag `--allow-origin` (repeatable).
    pub allowed_origins: Vec<String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: Listen::one("127.0.0.1:8080"),
            tls_listen: Listen::one("127.0.0.1:8443"),
            api_keys: Vec::new(),
            anonymous_loopback_only: true,
            ping_interval_secs: 25,
            idle_timeout_secs: 60,
            poll_timeout_secs: 25,
            first_request_timeout_secs: 10,
            max_connections: 20_000,
            max_connections_per_ip: 1024,
            body_min_rate: 1024,
            body_grace_secs: 10,
            allowed_origins: Vec::new(),
        }
    }
}

/// TURN settings. TURN is on once a realm and at least one user or secret are configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnSettings {
    /// The realm (REALM attribute).
    pub realm: String,
    /// Static users, `NAME:PASSWORD` or `NAME:0xHA1` (MD5 of NAME:REALM:PASSWORD, 32 hex digits).
    pub users: Vec<String>,
    /// TURN REST shared secrets (coturn's use-auth-secret); several allow rotation.
    pub secrets: Vec<String>,
    /// Peer prefixes relays may reach even though they are not public (e.g. 127.0.0.0/8).
    pub allow_peers: Vec<String>,
    /// Extra peer prefixes relays may not reach.
    pub deny_peers: Vec<String>,
    /// Relay port range `LOW-HIGH`.
    pub relay_ports: String,
    /// Address relay sockets bind to (default: the first STUN UDP listener's address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_ip: Option<IpAddr>,
    /// Address advertised in XOR-RELAYED-ADDRESS when behind a 1:1 NAT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_ip: Option<IpAddr>,
    /// Allocations per user (0: unlimited).
    pub user_quota: usize,
    /// Allocations in total (0: unlimited).
    pub total_quota: usize,
    /// Load shedding: once `total_quota` is reached, an Allocate is answered 300 Try Alternate
    /// with ALTERNATE-SERVER, round robin over these addresses (client's family first), instead
    /// of 508. Flag `--alternate-server` (repeatable).
    pub alternate_servers: Vec<SocketAddr>,
    /// ALTERNATE-DOMAIN sent with redirects of TLS clients: the name on the alternates'
    /// certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alternate_domain: Option<String>,
    /// Relayed bytes per second per allocation (0: unlimited).
    pub max_bps: u64,
    /// Longest allocation lifetime granted, seconds.
    pub max_lifetime: u32,
    /// Lifetime of the TURN REST credentials `GET /v1/ice-servers` issues, seconds.
    pub credential_ttl: u64,
    /// Host name put in the `stun:`/`turn:`/`turns:` URLs of `GET /v1/ice-servers`; empty: the
    /// host the client used to reach this server (its `Host` header).
    pub ice_host: String,
}

impl Default for TurnSettings {
    fn default() -> Self {
        TurnSettings {
            realm: String::new(),
            users: Vec::new(),
            secrets: Vec::new(),
            allow_peers: Vec::new(),
            deny_peers: Vec::new(),
            relay_ports: "49152-65535".into(),
            relay_ip: None,
            external_ip: None,
            user_quota: 0,
            total_quota: 0,
            alternate_servers: Vec::new(),
            alternate_domain: None,
            max_bps: 0,
            max_lifetime: 3600,
            credential_ttl: 86_400,
            ice_host: String::new(),
        }
    }
}

impl TurnSettings {
    /// The relay port range.
    pub fn port_range(&self) -> Result<(u16, u16), String> {
        let (lo, hi) = self
            .relay_ports
            .split_once('-')
            .ok_or_else(|| format!("expected LOW-HIGH, got {:?}", self.relay_ports))?;
        let lo: u16 = lo
            .trim()
            .parse()
            .map_err(|_| format!("bad low port {lo:?}"))?;
        let hi: u16 = hi
            .trim()
            .parse()
            .map_err(|_| format!("bad high port {hi:?}"))?;
        if lo == 0 || lo > hi {
            return Err(format!("need 1 <= LOW <= HIGH, got {lo}-{hi}"));
        }
        Ok((lo, hi))
    }
}

/// HTTP/3 settings: QUIC on the UDP side of every `--https` address (same port number).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http3Settings {
    /// HTTP/3 on (`--http3 on|off`).
    pub enabled: bool,
    /// Seconds without a packet before a QUIC connection is closed.
    pub idle_timeout: u64,
    /// Seconds between keep-alive PINGs on an otherwise quiet connection; 0: none.
    pub keep_alive: u64,
    /// Concurrent request streams (bidirectional) per connection.
    pub max_bidi_streams: u32,
    /// Concurrent unidirectional streams per connection (HTTP/3 needs 3: control, QPACK).
    pub max_uni_streams: u32,
    /// Open QUIC connections; more are refused.
    pub max_connections: usize,
    /// Validate every client address with a Retry round trip (`--quic-retry`).
    pub retry: bool,
    /// Without `retry`: send Retry while at least this many handshakes are in progress.
    pub retry_above_handshakes: usize,
}

impl Default for Http3Settings {
    fn default() -> Self {
        Http3Settings {
            enabled: true,
            idle_timeout: 30,
            keep_alive: 10,
            max_bidi_streams: 100,
            max_uni_streams: 8,
            max_connections: 10_000,
            retry: false,
            retry_above_handshakes: 64,
        }
    }
}

/// The commented default configuration file printed by `switchboard config default`.
/// A test checks that it parses to exactly [`Settings::default`].
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Every setting name: flag `--NAME`, environment `SWITCHBOARD_NAME` (upper-case, `_`).
pub const KEYS: &[&str] = &[
    "log-format",
    "log-level",
    "stun-udp",
    "stun-tcp",
    "stun-tls",
    "alt-address",
    "alt-port",
    "software",
    "stun-max-connections",
    "stun-idle-timeout",
    "stun-workers",
    "tls-cert",
    "tls-key",
    "http",
    "turn-realm",
    "turn-user",
    "turn-secret",
    "allow-peer",
    "deny-peer",
    "relay-ports",
    "relay-ip",
    "external-ip",
    "user-quota",
    "total-quota",
    "alternate-server",
    "alternate-domain",
    "max-bps",
    "max-lifetime",
    "credential-ttl",
    "ice-host",
    "https",
    "api-key",
    "allow-anonymous",
    "jwt-hmac-secret",
    "jwt-rsa-public-key",
    "jwt-ecdsa-public-key",
    "jwks-file",
    "hub-ping-interval",
    "hub-idle-timeout",
    "poll-timeout",
    "allow-origin",
    "hub-history-memory",
    "http3",
    "quic-retry",
    "http3-idle-timeout",
    "http3-keep-alive",
    "redis",
    "redis-prefix",
    "redis-ca",
    "node-name",
];

/// Merges `over` into `base`: tables key by key (recursively), other values replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Values of a list setting: repeated flags, or comma-separated in one value (environment).
fn split_list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Environment variables that are not settings themselves.
const ENV_NON_KEYS: &[&str] = &["SWITCHBOARD_CONFIG"];

fn bad(origin: &str, value: &str, reason: impl fmt::Display) -> ConfigError {
    ConfigError::BadValue {
        origin: origin.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_one<T: std::str::FromStr>(
    origin: &str,
    values: &[String],
    what: &str,
) -> Result<T, ConfigError> {
    let [v] = values else {
        return Err(bad(origin, &values.join(","), "expected exactly one value"));
    };
    v.trim()
        .parse()
        .map_err(|_| bad(origin, v, format!("expected {what}")))
}

fn parse_opt<T: std::str::FromStr>(
    origin: &str,
    values: &[String],
    what: &str,
) -> Result<Option<T>, ConfigError> {
    match values {
        [v] if v.trim().is_empty() || v.trim().eq_ignore_ascii_case("off") => Ok(None),
        _ => parse_one(origin, values, what).map(Some),
    }
}

/// `on`/`off` (also true/false, yes/no, 1/0).
fn parse_switch(origin: &str, values: &[String]) -> Result<bool, ConfigError> {
    let v = parse_one::<String>(origin, values, "on or off")?;
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(bad(origin, &v, "expected on or off")),
    }
}

impl Settings {
    /// Reads a TOML file onto the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::File {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text onto the defaults. Tables merge key by key onto the defaults, so a
    /// partial `[hub.default_namespace]` keeps the other default options.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let msg = |e: &dyn fmt::Display| e.to_string().trim().replace('\n', " ");
        // First pass: the checks (unknown keys, bad values) with the parser's positions.
        let _: Settings = toml::from_str(text).map_err(|e| msg(&e))?;
        let file: toml::Table = toml::from_str(text).map_err(|e| msg(&e))?;
        let mut merged = toml::Table::try_from(Settings::default()).map_err(|e| msg(&e))?;
        merge(&mut merged, file);
        toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| msg(&e))
    }

    /// Sets one setting by name; `origin` names the source in errors (`--stun-udp`).
    pub fn set(&mut self, key: &str, values: &[String], origin: &str) -> Result<(), ConfigError> {
        let listen = |values: &[String]| {
            Listen::parse(values).map_err(|r| bad(origin, &values.join(","), r))
        };
        match key {
            "log-format" => {
                self.log_format =
                    match parse_one::<String>(origin, values, "json or pretty")?.as_str() {
                        "json" => LogFormat::Json,
                        "pretty" => LogFormat::Pretty,
                        other => return Err(bad(origin, other, "expected json or pretty")),
                    }
            }
            "log-level" => self.log_level = parse_one(origin, values, "a log filter")?,
            "stun-udp" => self.stun.udp = listen(values)?,
            "stun-tcp" => self.stun.tcp = listen(values)?,
            "stun-tls" => self.stun.tls = listen(values)?,
            "alt-address" => {
                self.stun.alt_address = parse_opt(origin, values, "an IP address or off")?
            }
            "alt-port" => {
                self.stun.alt_port = parse_opt(origin, values, "a port number 1-65535 or off")?
            }
            "software" => self.stun.software = values.join(","),
            "stun-max-connections" => {
                self.stun.max_connections = parse_one(origin, values, "a count")?
            }
            "stun-idle-timeout" => self.stun.idle_timeout = parse_one(origin, values, "seconds")?,
            "stun-workers" => {
                self.stun.workers = parse_one(origin, values, "a count (0: one per core)")?
            }
            "tls-cert" => self.tls.cert = parse_opt(origin, values, "a file path")?,
            "tls-key" => self.tls.key = parse_opt(origin, values, "a file path")?,
            "http" => self.http.listen = listen(values)?,
            "turn-realm" => self.turn.realm = parse_one(origin, values, "a realm")?,
            "turn-user" => self.turn.users = split_list(values),
            "turn-secret" => self.turn.secrets = split_list(values),
            "allow-peer" => self.turn.allow_peers = split_list(values),
            "deny-peer" => self.turn.deny_peers = split_list(values),
            "relay-ports" => self.turn.relay_ports = parse_one(origin, values, "LOW-HIGH")?,
            "relay-ip" => self.turn.relay_ip = parse_opt(origin, values, "an IP address")?,
            "external-ip" => self.turn.external_ip = parse_opt(origin, values, "an IP address")?,
            "user-quota" => {
                self.turn.user_quota = parse_one(origin, values, "a count (0: unlimited)")?
            }
            "total-quota" => {
                self.turn.total_quota = parse_one(origin, values, "a count (0: unlimited)")?
            }
            "alternate-server" => self.turn.alternate_servers = listen(values)?.0,
            "alternate-domain" => {
                self.turn.alternate_domain = parse_opt(origin, values, "a DNS name or off")?
            }
            "max-bps" => {
                self.turn.max_bps = parse_one(origin, values, "bytes per second (0: unlimited)")?
            }
            "max-lifetime" => self.turn.max_lifetime = parse_one(origin, values, "seconds")?,
            "credential-ttl" => self.turn.credential_ttl = parse_one(origin, values, "seconds")?,
            "ice-host" => self.turn.ice_host = parse_one(origin, values, "a host name")?,
            "redis" => self.cluster.redis = parse_opt(origin, values, "a redis:// URL or off")?,
            "redis-prefix" => {
                self.cluster.redis_prefix = parse_opt(origin, values, "a key prefix")?
            }
            "redis-ca" => self.cluster.redis_ca = parse_opt(origin, values, "a PEM file path")?,
            "node-name" => self.hub.node_name = parse_one(origin, values, "a node name")?,
            "https" => self.http.tls_listen = listen(values)?,
            "api-key" => self.http.api_keys = split_list(values),
            "allow-anonymous" => {
                let v = parse_one::<String>(origin, values, "true, false or loopback")?;
                let (allow, loopback_only) = match v.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "on" | "1" | "any" => (true, false),
                    "loopback" => (true, true),
                    "false" | "no" | "off" | "0" => (false, self.http.anonymous_loopback_only),
                    _ => return Err(bad(origin, &v, "expected true, false or loopback")),
                };
                self.hub.allow_anonymous = allow;
                self.http.anonymous_loopback_only = loopback_only;
            }
            "jwt-hmac-secret" => {
                self.hub.jwt.hmac_secret = parse_opt(origin, values, "a shared secret")?
            }
            "jwt-rsa-public-key" => {
                self.hub.jwt.rsa_public_key_file = parse_opt(origin, values, "a PEM file path")?
            }
            "jwt-ecdsa-public-key" => {
                self.hub.jwt.ecdsa_public_key_file = parse_opt(origin, values, "a PEM file path")?
            }
            "jwks-file" => self.hub.jwt.jwks_file = parse_opt(origin, values, "a JWKS file path")?,
            "hub-ping-interval" => {
                self.http.ping_interval_secs = parse_one(origin, values, "seconds")?
            }
            "hub-idle-timeout" => {
                self.http.idle_timeout_secs = parse_one(origin, values, "seconds")?
            }
            "poll-timeout" => self.http.poll_timeout_secs = parse_one(origin, values, "seconds")?,
            "allow-origin" => self.http.allowed_origins = split_list(values),
            "hub-history-memory" => {
                self.hub.history_memory_mib = parse_one(origin, values, "a size in MiB")?
            }

            "http3" => self.http3.enabled = parse_switch(origin, values)?,
            "quic-retry" => self.http3.retry = parse_switch(origin, values)?,
            "http3-idle-timeout" => self.http3.idle_timeout = parse_one(origin, values, "seconds")?,
            "http3-keep-alive" => {
                self.http3.keep_alive = parse_one(origin, values, "seconds (0: none)")?
            }
            _ => {
                return Err(ConfigError::UnknownKey {
                    origin: origin.to_string(),
                })
            }
        }
        Ok(())
    }

    /// Applies `SWITCHBOARD_*` variables. Lists are comma-separated. Any other `SWITCHBOARD_`
    /// variable is an error, so a typo cannot silently do nothing.
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(
        &mut self,
        vars: I,
    ) -> Result<(), ConfigError> {
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("SWITCHBOARD_") && !ENV_NON_KEYS.contains(&k.as_str()))
            .collect();
        vars.sort();
        for (name, value) in vars {
            let key = name["SWITCHBOARD_".len()..]
                .to_ascii_lowercase()
                .replace('_', "-");
            if !KEYS.contains(&key.as_str()) {
                return Err(ConfigError::UnknownKey { origin: name });
            }
            self.set(&key, &[value], &name)?;
        }
        Ok(())
    }

    /// Checks settings that depend on each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.hub
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("[hub]: {e}")))?;
        if let Some(url) = &self.cluster.redis {
            let scheme_ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|s| url.starts_with(s));
            if !scheme_ok {
                return Err(ConfigError::Invalid(
                    "--redis: expected redis://[USER:PASSWORD@]HOST:PORT[/DB], rediss://... (TLS) \
                     or redis+unix:///PATH"
                        .into(),
                ));
            }
        }
        let h = &self.http;
        if h.api_keys.iter().any(|k| k.is_empty()) {
            return Err(ConfigError::Invalid("--api-key must not be empty".into()));
        }
        if h.ping_interval_secs == 0 || h.idle_timeout_secs == 0 || h.poll_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "--hub-ping-interval, --hub-idle-timeout and --poll-timeout must be at least 1 second"
                    .into(),
            ));
        }
        if h.first_request_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "[http] first_request_timeout_secs must be at least 1 second".into(),
            ));
        }
        for o in &h.allowed_origins {
            if o != "*" && crate::http::origin_authority(o).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "--allow-origin {o:?}: expected SCHEME://HOST[:PORT] (such as \
                     https://app.example.com) or *"
                )));
            }
        }
        if h.idle_timeout_secs <= h.ping_interval_secs {
            return Err(ConfigError::Invalid(format!(
                "--hub-idle-timeout ({}) must exceed --hub-ping-interval ({})",
                h.idle_timeout_secs, h.ping_interval_secs
            )));
        }
        let t = &self.turn;
        t.port_range()
            .map_err(|e| ConfigError::Invalid(format!("--relay-ports: {e}")))?;
        for (flag, list) in [
            ("--allow-peer", &t.allow_peers),
            ("--deny-peer", &t.deny_peers),
        ] {
            for c in list {
                c.parse::<switchboard_turn::peer_filter::Cidr>()
                    .map_err(|e| ConfigError::Invalid(format!("{flag}: {e}")))?;
            }
        }
        let mut creds = switchboard_turn::auth::Credentials::new(&t.realm);
        for u in &t.users {
            let name = u.split(':').next().unwrap_or_default();
            creds
                .add_user_entry(u)
                .map_err(|e| ConfigError::Invalid(format!("--turn-user {name}:…: {e}")))?;
        }
        if (!t.users.is_empty() || !t.secrets.is_empty()) && t.realm.is_empty() {
            return Err(ConfigError::Invalid(
                "TURN users or secrets need --turn-realm".into(),
            ));
        }
        let turn_on = !t.realm.is_empty() && (!t.users.is_empty() || !t.secrets.is_empty());
        let relay_unspecified = match t.relay_ip {
            Some(ip) => ip.is_unspecified(),
            None => self
                .stun
                .udp
                .0
                .first()
                .is_some_and(|a| a.ip().is_unspecified()),
        };
        if turn_on && relay_unspecified && t.external_ip.is_none() {
            return Err(ConfigError::Invalid(
                "TURN relays would advertise an unspecified address: set --relay-ip or --external-ip".into(),
            ));
        }
        if t.secrets.iter().any(|s| s.is_empty()) {
            return Err(ConfigError::Invalid(
                "--turn-secret must not be empty".into(),
            ));
        }
        for a in &t.alternate_servers {
            if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
                return Err(ConfigError::Invalid(format!(
                    "--alternate-server {a}: needs a unicast address and a port"
                )));
            }
        }
        if !t.alternate_servers.is_empty() && t.total_quota == 0 {
            return Err(ConfigError::Invalid(
                "--alternate-server redirects once --total-quota is reached: set --total-quota"
                    .into(),
            ));
        }
        if let Some(d) = &t.alternate_domain {
            let name_ok = !d.is_empty()
                && d.len() <= switchboard_stun::MAX_DOMAIN_LEN
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !name_ok {
                return Err(ConfigError::Invalid(format!(
                    "--alternate-domain {d:?}: expected a DNS name of at most {} bytes",
                    switchboard_stun::MAX_DOMAIN_LEN
                )));
            }
            if t.alternate_servers.is_empty() {
                return Err(ConfigError::Invalid(
                    "--alternate-domain needs --alternate-server".into(),
                ));
            }
        }
        let q = &self.http3;
        if q.idle_timeout == 0 || (q.keep_alive > 0 && q.keep_alive >= q.idle_timeout) {
            return Err(ConfigError::Invalid(format!(
                "[http3]: idle_timeout ({}) must be at least 1 and exceed keep_alive ({})",
                q.idle_timeout, q.keep_alive
            )));
        }
        if q.max_bidi_streams == 0 || q.max_uni_streams < 3 || q.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "[http3]: max_bidi_streams and max_connections must be at least 1, max_uni_streams at least 3".into(),
            ));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid(
                "--tls-cert and --tls-key must be given together".into(),
            ));
        }
        if let Some(alt) = self.stun.alt_address {
            let all = self
                .stun
                .udp
                .0
                .iter()
                .chain(&self.stun.tcp.0)
                .chain(&self.stun.tls.0);
            for addr in all {
                if addr.ip().is_unspecified() {
                    return Err(ConfigError::Invalid(format!(
                        "--alt-address needs specific STUN listen addresses, not {addr}"
                    )));
                }
                if addr.is_ipv4() != alt.is_ipv4() {
                    return Err(ConfigError::Invalid(format!(
                        "--alt-address {alt} and listener {addr} are of different IP families"
                    )));
                }
                if addr.ip() == alt {
                    return Err(ConfigError::Invalid(format!(
                        "--alt-address {alt} must differ from the listener address {addr}"
                    )));
                }
                let alt_port = self.alt_port_for(addr.port());
                if alt_port.is_none() || alt_port == Some(addr.port()) || addr.port() == 0 {
                    return Err(ConfigError::Invalid(format!(
                        "listener {addr} has no usable alternate port (set --alt-port)"
                    )));
                }
            }
        } else if self.stun.alt_port.is_some() {
            return Err(ConfigError::Invalid(
                "--alt-port needs --alt-address".into(),
            ));
        }
        Ok(())
    }

    /// RFC 5780 alternate port for a listener on `port`.
    pub fn alt_port_for(&self, port: u16) -> Option<u16> {
        self.stun.alt_port.or_else(|| port.checked_add(1))
    }

    /// The effective settings as TOML (for `switchboard config show`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn default_file_is_the_defaults() {
        assert_eq!(
            Settings::from_toml(DEFAULT_TOML).unwrap(),
            Settings::default()
        );
    }

    #[test]
    fn every_key_is_settable() {
        for key in KEYS {
            let mut st = Settings::default();
            let value = match *key {
                "log-format" => "json",
                "stun-udp" | "stun-tcp" | "stun-tls" | "http" | "https" => "127.0.0.1:1",
                "allow-anonymous" => "false",
                "hub-ping-interval" | "hub-idle-timeout" | "poll-timeout" => "7",
                "allow-origin" => "https://app.example.com",
                "hub-history-memory" => "7",
                "alt-address" => "127.0.0.2",
                "alt-port" | "stun-max-connections" | "stun-idle-timeout" | "stun-workers" => "7",
                "user-quota" | "total-quota" | "max-bps" | "max-lifetime" | "credential-ttl" => "7",
                "alternate-server" => "203.0.113.2:3478",
                "relay-ports" => "50000-50100",
                "relay-ip" | "external-ip" => "203.0.113.9",
                "turn-user" => "alice:pw",
                "http3" => "off",
                "quic-retry" => "on",
                "http3-idle-timeout" | "http3-keep-alive" => "7",
                _ => "x",
            };
            st.set(key, &s(&[value]), key).unwrap();
            assert_ne!(st, Settings::default(), "{key} changed nothing");
        }
    }

    #[test]
    fn file_then_env_then_flags() {
        let mut st =
            Settings::from_toml("[stun]\nudp = [\"127.0.0.1:4000\"]\ntcp = \"off\"\n").unwrap();
        assert_eq!(st.stun.udp.0, vec!["127.0.0.1:4000".parse().unwrap()]);
        assert!(st.stun.tcp.is_off());
        st.apply_env([
            (
                "SWITCHBOARD_STUN_UDP".to_string(),
                "127.0.0.1:5000,127.0.0.1:5002".to_string(),
            ),
            ("HOME".to_string(), "/root".to_string()),
            ("SWITCHBOARD_CONFIG".to_string(), "/x.toml".to_string()),
        ])
        .unwrap();
        assert_eq!(st.stun.udp.0.len(), 2);
        st.set("stun-udp", &s(&["off"]), "--stun-udp").unwrap();
        assert!(st.stun.udp.is_off());
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Settings::from_toml("[stun]\nupd = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(e.contains("upd"), "{e}");
        let e = Settings::from_toml("colour = 1\n").unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e = Settings::default()
            .apply_env([("SWITCHBOARD_STUN_UPD".to_string(), "x".to_string())])
            .unwrap_err();
        assert!(e.to_string().contains("SWITCHBOARD_STUN_UPD"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Settings::from_toml("[stun]\nudp = \"localhost\"\n").unwrap_err();
        assert!(e.contains("localhost"), "{e}");
        let e = Settings::default()
            .set("alt-port", &s(&["70000"]), "--alt-port")
            .unwrap_err();
        assert!(
            e.to_string().contains("--alt-port") && e.to_string().contains("70000"),
            "{e}"
        );
        let e = Settings::default()
            .set("stun-udp", &s(&["off", "127.0.0.1:1"]), "--stun-udp")
            .unwrap_err();
        assert!(e.to_string().contains("--stun-udp"), "{e}");
        let e = Settings::default()
            .set("log-format", &s(&["xml"]), "--log-format")
            .unwrap_err();
        assert!(e.to_string().contains("xml"), "{e}");
    }

    #[test]
    fn hub_tables_merge_onto_the_defaults() {
        let st = Settings::from_toml(
            "[hub]\nallow_anonymous = false\n[hub.default_namespace]\nallow_publish_for_anonymous = false\n[hub.namespaces.chat]\npresence = true\n",
        )
        .unwrap();
        assert!(!st.hub.allow_anonymous);
        let ns = &st.hub.default_namespace;
        assert!(!ns.allow_publish_for_anonymous);
        assert!(ns.allow_subscribe_for_anonymous && ns.history_size == 100);
        assert!(st.hub.namespaces["chat"].presence);
        assert!(!st.hub.namespaces["chat"].allow_subscribe_for_client);
        let e = Settings::from_toml("[hub.limits]\nmax_mesage_size = 1\n").unwrap_err();
        assert!(e.contains("max_mesage_size"), "{e}");
        let e = Settings::from_toml("[hub.default_namespace]\nhistory_size = 0\n").unwrap();
        assert!(e.validate().is_err());
    }

    #[test]
    fn allow_anonymous_values() {
        let mut st = Settings::default();
        assert!(st.hub.allow_anonymous && st.http.anonymous_loopback_only);
        st.set("allow-anonymous", &s(&["true"]), "--allow-anonymous")
            .unwrap();
        assert!(st.hub.allow_anonymous && !st.http.anonymous_loopback_only);
        st.set("allow-anonymous", &s(&["false"]), "--allow-anonymous")
            .unwrap();
        assert!(!st.hub.allow_anonymous);
        assert!(st
            .set("allow-anonymous", &s(&["maybe"]), "--allow-anonymous")
            .is_err());
    }

    #[test]
    fn validation() {
        let mut st = Settings::default();
        st.validate().unwrap();
        st.stun.alt_address = Some("127.0.0.2".parse().unwrap());
        st.validate().unwrap();
        st.stun.alt_address = Some("::1".parse().unwrap());
        assert!(st.validate().is_err());
        st.stun.alt_address = Some("127.0.0.1".parse().unwrap());
        assert!(st.validate().is_err());
        st.stun.alt_address = None;
        st.stun.alt_port = Some(4000);
        assert!(st.validate().is_err());
        let mut st = Settings::default();
        st.tls.cert = Some("/c.pem".into());
        assert!(st.validate().is_err());
    }

    #[test]
    fn alternate_servers() {
        let mut st = Settings::default();
        st.set(
            "alternate-server",
            &s(&["203.0.113.2:3478", "[2001:db8::2]:3478"]),
            "--alternate-server",
        )
        .unwrap();
        assert_eq!(st.turn.alternate_servers.len(), 2);
        // Redirects need a limit to trigger them.
        let e = st.validate().unwrap_err().to_string();
        assert!(e.contains("--total-quota"), "{e}");
        st.turn.total_quota = 100;
        st.validate().unwrap();
        st.set(
            "alternate-domain",
            &s(&["turn.example.org"]),
            "--alternate-domain",
        )
        .unwrap();
        st.validate().unwrap();
        st.set("alternate-domain", &s(&["bad name"]), "--alternate-domain")
            .unwrap();
        assert!(st.validate().is_err());
        // The environment uses commas; `off` clears a list from the file.
        st.apply_env([(
            "SWITCHBOARD_ALTERNATE_SERVER".to_string(),
            "203.0.113.3:3478,203.0.113.4:3478".to_string(),
        )])
        .unwrap();
        assert_eq!(st.turn.alternate_servers[1].to_string(), "203.0.113.4:3478");
        st.set("alternate-server", &s(&["off"]), "--alternate-server")
            .unwrap();
        assert!(st.turn.alternate_servers.is_empty());
        let e = st
            .set(
                "alternate-server",
                &s(&["turn.example.org"]),
                "--alternate-server",
            )
            .unwrap_err();
        assert!(e.to_string().contains("--alternate-server"), "{e}");
        let mut st = Settings::from_toml(
            "[turn]\ntotal_quota = 1\nalternate_servers = [\"203.0.113.2:3478\"]\n",
        )
        .unwrap();
        st.validate().unwrap();
        st.turn.alternate_servers = vec!["0.0.0.0:3478".parse().unwrap()];
        assert!(st.validate().is_err());
    }
}
