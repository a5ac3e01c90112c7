//! Settings, layered: built-in defaults < TOML file (`--config`) < `SWITCHBOARD_*` environment <
//! command-line flags.
//!
//! Every setting is declared once, in [`table`]: its flag `--NAME`, its environment variable
//! `SWITCHBOARD_NAME` (upper-case, `_`), its TOML key, help, type, default and bounds. Values are
//! parsed and bounded once, into the typed [`Settings`]; consumers never re-parse. An unknown
//! key or a bad value anywhere stops start-up with an error naming it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use switchboard_hub::HubConfig;
use switchboard_turn::auth::UserEntry;
use switchboard_turn::peer_filter::Cidr;

mod spec;
mod table;
mod value;

pub use spec::{Group, Spec};
pub use table::{find, table, SECTIONS};
pub use value::{Listen, LogFormat, PortRange};

/// A configuration error; the message always names the offending key or file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}")]
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
    #[error("bad value for {origin}: {reason}")]
    BadValue {
        /// Where it came from.
        origin: String,
        /// What was wrong (quotes the value where it helps).
        reason: String,
    },
    /// Settings that are fine one by one but not together.
    #[error("invalid settings: {0}")]
    Invalid(String),
}

/// All settings, typed. [`Settings::default`] holds the table's defaults.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Settings {
    /// `pretty` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `switchboard=debug,info`.
    pub log_level: String,
    /// Access log lines (HTTP requests, ended TURN allocations).
    pub access_log: bool,
    /// One-port listen addresses (TCP and UDP on each): every protocol, told apart per
    /// connection and per datagram (docs/one-port.md).
    pub listen: Listen,
    /// Time a one-port connection has to show what it is.
    pub listen_timeout: Duration,
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
    pub hub: HubConfig,
    /// Several nodes acting as one through Redis.
    pub cluster: ClusterSettings,
    /// Pusher Channels apps (`[[pusher.apps]]`, file only).
    pub pusher: PusherSettings,
    /// switchboard's own webhooks.
    pub webhooks: WebhookSettings,
}

/// switchboard's own webhooks (docs/webhooks.md).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct WebhookSettings {
    /// Receivers.
    pub urls: Vec<String>,
    /// Signs the bodies.
    pub secret: Option<String>,
}

/// The Pusher Channels protocol (docs/compat.md): its apps.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PusherSettings {
    /// One per application; each app's clients see only its channels.
    pub apps: Vec<PusherApp>,
}

/// One Pusher app: `[[pusher.apps]]`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PusherApp {
    /// The app id (in the HTTP API's paths, `/apps/ID/...`).
    pub id: String,
    /// The app key (in the WebSocket path, `/app/KEY`; public).
    pub key: String,
    /// The app secret (signs channel authorizations, API requests and webhooks).
    pub secret: String,
    /// Whether clients may send `client-*` events on private and presence channels.
    pub client_events: bool,
    /// URLs that receive the app's webhooks (signed with the secret).
    pub webhooks: Vec<String>,
}

impl PusherApp {
    /// The hub namespace that holds this app's channels: Pusher channel `C` of app `ID` is hub
    /// channel `pusher-ID:C`.
    pub fn namespace(&self) -> String {
        format!("pusher-{}", self.id)
    }
}

/// Cluster settings: without `redis` the node is alone (in-memory broker).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ClusterSettings {
    /// Redis (or Valkey) URL shared by every node.
    pub redis: Option<String>,
    /// Prefix of every Redis key and pub/sub channel.
    pub redis_prefix: Option<String>,
    /// For `rediss://`: the CA certificate(s) of Redis's certificate.
    pub redis_ca: Option<PathBuf>,
}

/// The channel options of a server started without configuration: a default namespace where
/// every connection may subscribe, publish, and read presence and history (100 publications
/// kept for 5 minutes, so recovery works).
fn default_namespace() -> switchboard_hub::NamespaceOptions {
    switchboard_hub::NamespaceOptions {
        history_size: 100,
        history_ttl_secs: 300,
        presence: true,
        allow_subscribe_for_client: true,
        allow_subscribe_for_anonymous: true,
        allow_publish_for_client: true,
        allow_publish_for_anonymous: true,
        allow_presence_for_subscriber: true,
        allow_history_for_subscriber: true,
        ..Default::default()
    }
}

impl Default for Settings {
    fn default() -> Self {
        let mut s = Settings {
            log_format: LogFormat::Pretty,
            log_level: String::new(),
            access_log: true,
            listen: Listen::default(),
            listen_timeout: Duration::from_secs(10),
            stun: StunSettings::default(),
            tls: TlsSettings::default(),
            http: HttpSettings::default(),
            turn: TurnSettings::default(),
            http3: Http3Settings::default(),
            hub: HubConfig::default(),
            cluster: ClusterSettings::default(),
            pusher: PusherSettings::default(),
            webhooks: WebhookSettings::default(),
        };
        s.hub.default_namespace = default_namespace();
        for spec in table() {
            if let Some(d) = spec.default {
                let values = if spec.list {
                    split_list(d)
                } else {
                    vec![d.to_string()]
                };
                if let Err(e) = spec.set(&mut s, &values) {
                    unreachable!("built-in default of {}: {e}", spec.name);
                }
            }
        }
        s
    }
}

/// STUN/TURN listener settings.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct StunSettings {
    /// UDP listen addresses.
    pub udp: Listen,
    /// TCP listen addresses.
    pub tcp: Listen,
    /// TLS listen addresses.
    pub tls: Listen,
    /// RFC 5780 alternate IP address.
    pub alt_address: Option<IpAddr>,
    /// RFC 5780 alternate port (default: primary port + 1).
    pub alt_port: Option<u16>,
    /// SOFTWARE attribute value (empty: none).
    pub software: String,
    /// Maximum open TCP+TLS connections (lowered at start-up to fit the descriptor limit).
    pub max_connections: usize,
    /// Open TCP+TLS connections per client address (IPv6: per /64), 0 = no per-address cap.
    pub max_connections_per_ip: usize,
    /// How long a TCP/TLS connection may stay idle (at least 1 s).
    pub idle_timeout: Duration,
    /// UDP worker sockets per address (0: one per CPU core).
    pub workers: usize,
}

/// Certificate settings.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TlsSettings {
    /// PEM certificate chain; without it a self-signed certificate is generated.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// HTTP settings: the listeners every HTTP transport shares (REST, WebSocket, SSE, long-poll,
/// gRPC) and the hub transports' liveness and access settings.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct HttpSettings {
    /// Plain HTTP listen addresses (HTTP/1.1 and h2c).
    pub listen: Listen,
    /// HTTPS listen addresses (TLS, ALPN h2 and http/1.1).
    pub tls_listen: Listen,
    /// Keys accepted by the server API; none = API disabled.
    pub api_keys: Vec<String>,
    /// Anonymous hub connections (when `hub.allow_anonymous`) only from loopback peers.
    pub anonymous_loopback_only: bool,
    /// Between WebSocket pings, SSE heartbeat comments and HTTP/2 keep-alive pings.
    pub ping_interval: Duration,
    /// How long a WebSocket may stay silent before it is closed; also the time allowed for
    /// the first (connect) command.
    pub idle_timeout: Duration,
    /// Longest wait of a long-poll request.
    pub poll_timeout: Duration,
    /// How long a new connection (after its TLS handshake) may take to send its first request.
    pub first_request_timeout: Duration,
    /// Open connections of all HTTP and HTTPS listeners together.
    pub max_connections: usize,
    /// Open HTTP connections per client address (IPv6: per /64), 0 = no per-address cap.
    pub max_connections_per_ip: usize,
    /// Minimum average request-body rate, bytes per second, after `body_grace`; 0 = none.
    pub body_min_rate: u64,
    /// How long a request body may take before `body_min_rate` applies.
    pub body_grace: Duration,
    /// Origins whose pages may use the hub endpoints (`*`: every origin).
    pub allowed_origins: Vec<String>,
    /// Pages served from this machine (loopback origins) may use the hub endpoints too.
    pub allow_loopback_origins: bool,
    /// Admin listen addresses (plain HTTP): metrics, health, the console, the server API.
    pub admin: Listen,
    /// Serve `/metrics` and the console on non-loopback connections of the main listeners too.
    pub public_admin: bool,
    /// The server API only on the admin listener.
    pub api_admin_only: bool,
}

/// TURN settings. TURN is on once a realm and at least one user or secret are configured.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct TurnSettings {
    /// The realm (REALM attribute).
    pub realm: String,
    /// Static users.
    pub users: Vec<UserEntry>,
    /// TURN REST shared secrets (coturn's use-auth-secret); several allow rotation.
    pub secrets: Vec<String>,
    /// Peer prefixes relays may reach even though they are not public.
    pub allow_peers: Vec<Cidr>,
    /// Extra peer prefixes relays may not reach.
    pub deny_peers: Vec<Cidr>,
    /// Relay port range.
    pub relay_ports: PortRange,
    /// Address relay sockets bind to (default: the first STUN UDP listener's address).
    pub relay_ip: Option<IpAddr>,
    /// Address advertised in XOR-RELAYED-ADDRESS when behind a 1:1 NAT.
    pub external_ip: Option<IpAddr>,
    /// Allocations per user (0: unlimited).
    pub user_quota: usize,
    /// Allocations in total (0: unlimited).
    pub total_quota: usize,
    /// Where to redirect Allocate requests once `total_quota` is reached.
    pub alternate_servers: Vec<SocketAddr>,
    /// ALTERNATE-DOMAIN sent with redirects of TLS clients.
    pub alternate_domain: Option<String>,
    /// Relayed bytes per second per allocation (0: unlimited).
    pub max_bps: u64,
    /// Longest allocation lifetime granted (at least 600 s).
    pub max_lifetime: Duration,
    /// Lifetime of the TURN REST credentials `GET /v1/ice-servers` issues (at least 60 s).
    pub credential_ttl: Duration,
    /// Host name put in the URLs of `GET /v1/ice-servers`; empty: the client's `Host`.
    pub ice_host: String,
}

/// HTTP/3 settings: QUIC on the UDP side of every `--https` address (same port number).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Http3Settings {
    /// HTTP/3 on.
    pub enabled: bool,
    /// Without a packet this long a QUIC connection is closed.
    pub idle_timeout: Duration,
    /// Between keep-alive PINGs on an otherwise quiet connection; zero: none.
    pub keep_alive: Duration,
    /// Concurrent request streams (bidirectional) per connection.
    pub max_bidi_streams: u32,
    /// Concurrent unidirectional streams per connection (HTTP/3 needs 3: control, QPACK).
    pub max_uni_streams: u32,
    /// Open QUIC connections; more are refused.
    pub max_connections: usize,
    /// Validate every client address with a Retry round trip.
    pub retry: bool,
    /// Without `retry`: send Retry while at least this many handshakes are in progress.
    pub retry_above_handshakes: usize,
}

/// Values of a list setting given in one string (environment, defaults): comma-separated.
fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Environment variables that are not settings themselves.
const ENV_NON_KEYS: &[&str] = &[
    "SWITCHBOARD_CONFIG",
    // The client commands' (`sub`, `pub`, `history`, `presence`).
    "SWITCHBOARD_SERVER",
    "SWITCHBOARD_TOKEN",
];

/// The strings a TOML value stands for: a scalar's text, an array's elements.
fn toml_strings(v: &toml::Value) -> Result<Vec<String>, String> {
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            Err("expected a value, not a nested array or table".to_string())
        }
    };
    match v {
        toml::Value::Array(items) => items.iter().map(scalar).collect(),
        toml::Value::Table(_) => Err("expected a value, not a table".into()),
        v => scalar(v).map(|s| vec![s]),
    }
}

/// Removes and returns the value at a dotted path.
fn take(table: &mut toml::Table, path: &str) -> Option<toml::Value> {
    match path.split_once('.') {
        None => table.remove(path),
        Some((head, rest)) => match table.get_mut(head)? {
            toml::Value::Table(t) => take(t, rest),
            _ => None,
        },
    }
}

/// The dotted path of a leaf left in `table` (an unknown key), if any.
fn leftover(table: &toml::Table, prefix: &str) -> Option<String> {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => {
                if let Some(p) = leftover(t, &path) {
                    return Some(p);
                }
            }
            _ => return Some(path),
        }
    }
    None
}

/// Inserts `value` at a dotted path, creating tables.
fn insert(table: &mut toml::Table, path: &str, value: toml::Value) {
    match path.split_once('.') {
        None => {
            table.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let entry = table
                .entry(head.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = entry {
                insert(t, rest, value);
            }
        }
    }
}

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

/// The shown form of a secret value.
const REDACTED: &str = "<redacted>";

/// A Redis URL with its password (if any) replaced.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return REDACTED.into();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:{REDACTED}@{host}")
            } else {
                format!("{scheme}://{REDACTED}@{host}")
            }
        }
        None => url.to_string(),
    }
}

fn redact(spec: &Spec, v: toml::Value) -> toml::Value {
    match v {
        toml::Value::String(s) if spec.name == "redis" => toml::Value::String(redact_url(&s)),
        toml::Value::Array(items) => toml::Value::Array(
            items
                .into_iter()
                .map(|i| match i {
                    toml::Value::String(s) if spec.name == "turn-user" => {
                        let name = s.split(':').next().unwrap_or_default();
                        toml::Value::String(format!("{name}:{REDACTED}"))
                    }
                    _ => toml::Value::String(REDACTED.into()),
                })
                .collect(),
        ),
        _ => toml::Value::String(REDACTED.into()),
    }
}

/// Wraps `text` into `# `-comment lines of at most `width` columns.
fn comment(out: &mut String, text: &str, width: usize) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > width && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    if line.len() > 1 {
        out.push_str(&line);
        out.push('\n');
    }
}

/// The comment and TOML text of the per-namespace channel options (not in the table).
const NAMESPACES_TOML: &str = include_str!("namespaces.toml");

/// The commented default configuration file printed by `switchboard config default`,
/// generated from the table. A test checks that it parses to exactly [`Settings::default`].
pub fn default_toml() -> String {
    let mut out = String::new();
    comment(
        &mut out,
        "switchboard configuration (TOML). Every key is optional; the values below are the \
         defaults. Precedence: built-in defaults < this file (--config FILE, else \
         /etc/switchboard/switchboard.toml) < SWITCHBOARD_* environment < flags. Each key's \
         flag and environment variable are given above it (lists: the flag repeats, the \
         variable is comma-separated); the only keys without them are marked \"file only\", \
         and the channel options per namespace ([hub.default_namespace], \
         [hub.namespaces.NAME]). Lists and optional values accept \"off\".",
        96,
    );
    let defaults = Settings::default();
    for (section, intro) in SECTIONS {
        if !section.is_empty() {
            out.push_str(&format!("\n[{section}]\n"));
        }
        if !intro.is_empty() {
            comment(&mut out, intro, 96);
        }
        for spec in table().iter().filter(|s| s.section_and_key().0 == *section) {
            let (_, key) = spec.section_and_key();
            out.push('\n');
            comment(&mut out, spec.help, 96);
            if spec.cli {
                let repeat = if spec.list { " (repeatable)" } else { "" };
                out.push_str(&format!(
                    "# --{} {}{repeat} · {}\n",
                    spec.name,
                    spec.value_name,
                    spec.env()
                ));
            } else {
                out.push_str("# (file only)\n");
            }
            match spec.get(&defaults) {
                Some(v) => out.push_str(&format!("{key} = {v}\n")),
                None => out.push_str(&format!("# {key} = {}\n", spec.example.unwrap_or("\"\""))),
            }
        }
        if *section == "hub.jwt" {
            out.push('\n');
            out.push_str(NAMESPACES_TOML);
        }
    }
    out
}

/// The settings reference (Markdown) for `docs/configuration.md`, generated from the table:
/// one section per heading, each setting with its flag, variable, TOML key and default.
pub fn reference_markdown() -> String {
    let defaults = Settings::default();
    let mut out = String::new();
    for group in Group::ALL {
        let specs: Vec<&Spec> = table().iter().filter(|s| s.group == group).collect();
        if specs.is_empty() {
            continue;
        }
        out.push_str(&format!("\n### {}\n\n", group.heading()));
        out.push_str("| Flag / environment | TOML key | Default | |\n|---|---|---|---|\n");
        for spec in specs {
            let flag = if spec.cli {
                let repeat = if spec.list { " (repeatable)" } else { "" };
                format!(
                    "`--{} {}`{repeat}<br>`{}`",
                    spec.name,
                    spec.value_name,
                    spec.env()
                )
            } else {
                "(file only)".to_string()
            };
            let default = match spec.get(&defaults) {
                Some(toml::Value::Array(a)) if a.is_empty() => "none".to_string(),
                Some(toml::Value::String(s)) if s.is_empty() => "empty".to_string(),
                Some(v) => format!("`{v}`"),
                None => "unset".to_string(),
            };
            let mut help = spec.help.replace('|', "\\|");
            if spec.secret {
                help.push_str(" Secret: `config show` redacts it.");
            }
            out.push_str(&format!(
                "| {flag} | `{}` | {default} | {help} |\n",
                spec.toml
            ));
        }
    }
    out
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

    /// Parses TOML text onto the defaults. A partial `[hub.default_namespace]` keeps the other
    /// default options.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let mut file: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        let mut s = Settings::default();
        for spec in table() {
            if let Some(v) = take(&mut file, spec.toml) {
                let values = toml_strings(&v).map_err(|e| format!("key {}: {e}", spec.toml))?;
                spec.access
                    .set(&mut s, &values, spec, true)
                    .map_err(|e| format!("key {}: {e}", spec.toml))?;
            }
        }
        if let Some(v) = take(&mut file, "hub.default_namespace") {
            let toml::Value::Table(over) = v else {
                return Err("key hub.default_namespace: expected a table".into());
            };
            let mut base = toml::Table::try_from(&s.hub.default_namespace)
                .map_err(|e| format!("key hub.default_namespace: {e}"))?;
            merge(&mut base, over);
            s.hub.default_namespace = toml::Value::Table(base)
                .try_into()
                .map_err(|e: toml::de::Error| format!("key hub.default_namespace: {e}"))?;
        }
        if let Some(v) = take(&mut file, "hub.namespaces") {
            s.hub.namespaces = v
                .try_into()
                .map_err(|e: toml::de::Error| format!("key hub.namespaces: {e}"))?;
        }
        if let Some(v) = take(&mut file, "pusher.apps") {
            s.pusher.apps = v
                .try_into()
                .map_err(|e: toml::de::Error| format!("key pusher.apps: {e}"))?;
        }
        if let Some(key) = leftover(&file, "") {
            return Err(format!("unknown key {key}"));
        }
        Ok(s)
    }

    /// Sets one setting by name; `origin` names the source in errors (`--stun-udp`). List
    /// values may also be comma-separated.
    pub fn set(&mut self, name: &str, values: &[String], origin: &str) -> Result<(), ConfigError> {
        let spec = find(name)
            .filter(|s| s.cli)
            .ok_or_else(|| ConfigError::UnknownKey {
                origin: origin.to_string(),
            })?;
        let values: Vec<String> = if spec.list {
            values.iter().flat_map(|v| split_list(v)).collect()
        } else {
            values.to_vec()
        };
        spec.set(self, &values)
            .map_err(|reason| ConfigError::BadValue {
                origin: origin.to_string(),
                reason,
            })
    }

    /// Applies `SWITCHBOARD_*` variables (lists comma-separated) and returns the names of the
    /// `SWITCHBOARD_*` variables that are not settings, for the caller to warn about: an
    /// orchestrator may set some of its own (Kubernetes adds `SWITCHBOARD_PORT`,
    /// `SWITCHBOARD_SERVICE_HOST`, ... for a Service named switchboard), so they cannot be
    /// errors, but a typo must not pass silently either.
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(
        &mut self,
        vars: I,
    ) -> Result<Vec<String>, ConfigError> {
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("SWITCHBOARD_") && !ENV_NON_KEYS.contains(&k.as_str()))
            .collect();
        vars.sort();
        let mut unknown = Vec::new();
        for (name, value) in vars {
            match table().iter().find(|s| s.cli && s.env() == name) {
                Some(spec) => self.set(spec.name, &[value], &name)?,
                None => unknown.push(name),
            }
        }
        Ok(unknown)
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
        for o in &h.allowed_origins {
            if o != "*" && crate::http::origin_authority(o).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "--allow-origin {o:?}: expected SCHEME://HOST[:PORT] (such as \
                     https://app.example.com) or *"
                )));
            }
        }
        for url in &self.webhooks.urls {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(ConfigError::Invalid(format!(
                    "--webhook {url:?}: expected an http:// or https:// URL"
                )));
            }
        }
        if !self.webhooks.urls.is_empty()
            && self.webhooks.secret.as_deref().unwrap_or("").is_empty()
        {
            return Err(ConfigError::Invalid(
                "--webhook needs --webhook-secret (receivers check the signature)".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, app) in self.pusher.apps.iter().enumerate() {
            let bad =
                |why: &str| ConfigError::Invalid(format!("[[pusher.apps]] entry {}: {why}", i + 1));
            if app.id.is_empty() || app.key.is_empty() || app.secret.is_empty() {
                return Err(bad("id, key and secret are required"));
            }
            let name_ok = |v: &str| {
                v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            };
            if !name_ok(&app.id) || !name_ok(&app.key) {
                return Err(bad(
                    "id and key may hold letters, digits, '-', '_' and '.' only",
                ));
            }
            if !seen.insert(format!("id:{}", app.id)) || !seen.insert(format!("key:{}", app.key)) {
                return Err(bad("another app has the same id or key"));
            }
            for url in &app.webhooks {
                if !url.starts_with("http://") && !url.starts_with("https://") {
                    return Err(bad(&format!("webhook {url:?}: expected an http(s):// URL")));
                }
            }
        }
        if h.api_admin_only && h.admin.is_off() {
            return Err(ConfigError::Invalid(
                "--api-admin-only needs an admin listener (--admin ADDR)".into(),
            ));
        }
        if h.idle_timeout <= h.ping_interval {
            return Err(ConfigError::Invalid(format!(
                "--hub-idle-timeout ({}) must exceed --hub-ping-interval ({})",
                h.idle_timeout.as_secs(),
                h.ping_interval.as_secs()
            )));
        }
        let t = &self.turn;
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
                .iter()
                .chain(&self.listen.0)
                .next()
                .is_some_and(|a| a.ip().is_unspecified()),
        };
        if turn_on && relay_unspecified && t.external_ip.is_none() {
            return Err(ConfigError::Invalid(
                "TURN relays would advertise an unspecified address: set --relay-ip or --external-ip".into(),
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
        if !q.keep_alive.is_zero() && q.keep_alive >= q.idle_timeout {
            return Err(ConfigError::Invalid(format!(
                "--http3-idle-timeout ({}) must exceed --http3-keep-alive ({})",
                q.idle_timeout.as_secs(),
                q.keep_alive.as_secs()
            )));
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

    /// The effective settings as TOML (for `switchboard config show`); secrets are redacted
    /// unless `reveal`.
    pub fn to_toml(&self, reveal: bool) -> String {
        let mut t = toml::Table::new();
        for spec in table() {
            if let Some(v) = spec.get(self) {
                let v = if spec.secret && !reveal {
                    redact(spec, v)
                } else {
                    v
                };
                insert(&mut t, spec.toml, v);
            }
        }
        for (path, v) in [
            (
                "hub.default_namespace",
                toml::Value::try_from(&self.hub.default_namespace),
            ),
            (
                "hub.namespaces",
                toml::Value::try_from(&self.hub.namespaces),
            ),
            ("pusher.apps", {
                let mut apps = self.pusher.apps.clone();
                if !reveal {
                    for a in &mut apps {
                        if !a.secret.is_empty() {
                            a.secret = "(redacted)".into();
                        }
                    }
                }
                toml::Value::try_from(&apps)
            }),
        ] {
            match v {
                Ok(v) => insert(&mut t, path, v),
                Err(e) => return format!("# cannot render {path}: {e}\n"),
            }
        }
        toml::to_string(&t).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
