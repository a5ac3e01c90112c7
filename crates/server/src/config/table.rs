//! The settings table: every setting declared once — flag name, TOML key, heading, help,
//! value type, default and bounds. The command-line flags (in `crates/cli`), the
//! `SWITCHBOARD_*` environment, TOML parsing, `config default`, `config show` and the settings
//! reference in `docs/configuration.md` are all generated from it.
//!
//! The environment variable of a setting is `SWITCHBOARD_` and its name upper-cased with `_`
//! for `-` ([`Spec::env`]). Only the per-namespace channel options (`[hub.default_namespace]`,
//! `[hub.namespaces.NAME]`) are not in the table: they are records, one per namespace, declared
//! once in `switchboard_hub::NamespaceOptions` and set in the TOML file only.

use std::sync::LazyLock;

use super::spec::{Access, Group, Spec};
use super::value::{switch, Field};
use super::Settings;

/// A plain field of [`Settings`] of a [`Field`] type.
struct At<T> {
    get: fn(&Settings) -> &T,
    get_mut: fn(&mut Settings) -> &mut T,
}

impl<T: Field + 'static> Access for At<T> {
    fn set(&self, s: &mut Settings, values: &[String], spec: &Spec, _: bool) -> Result<(), String> {
        *(self.get_mut)(s) = T::parse(values, spec)?;
        Ok(())
    }
    fn get(&self, s: &Settings) -> Option<toml::Value> {
        (self.get)(s).to_toml()
    }
}

macro_rules! at {
    ($($f:ident).+) => {
        Box::new(At {
            get: |s: &Settings| &s.$($f).+,
            get_mut: |s: &mut Settings| &mut s.$($f).+,
        })
    };
}

/// `--allow-anonymous true|loopback|false` sets both `[hub] allow_anonymous` and `[http]
/// anonymous_loopback_only`; in the TOML file `allow_anonymous` is a boolean (the loopback
/// restriction is its own key there), or one of the flag's words.
struct Anonymous;

impl Access for Anonymous {
    fn set(
        &self,
        s: &mut Settings,
        values: &[String],
        _: &Spec,
        from_toml: bool,
    ) -> Result<(), String> {
        let [v] = values else {
            return Err("expected true, false or loopback".into());
        };
        let v = v.trim().to_ascii_lowercase();
        let (allow, loopback_only) = match v.as_str() {
            "loopback" => (true, Some(true)),
            "any" => (true, Some(false)),
            _ => match switch(&v) {
                Some(true) if from_toml => (true, None),
                Some(true) => (true, Some(false)),
                Some(false) => (false, None),
                None => return Err(format!("expected true, false or loopback, got {v:?}")),
            },
        };
        s.hub.allow_anonymous = allow;
        if let Some(l) = loopback_only {
            s.http.anonymous_loopback_only = l;
        }
        Ok(())
    }
    fn get(&self, s: &Settings) -> Option<toml::Value> {
        Some(toml::Value::Boolean(s.hub.allow_anonymous))
    }
}

/// Every setting.
pub fn table() -> &'static [Spec] {
    &TABLE
}

/// The setting of a name (`stun-udp`).
pub fn find(name: &str) -> Option<&'static Spec> {
    TABLE.iter().find(|s| s.name == name)
}

/// The sections of the TOML file in order, with the comment printed above each.
pub const SECTIONS: &[(&str, &str)] = &[
    ("", ""),
    (
        "stun",
        "STUN listeners and behaviour. TURN (RFC 8656) runs on the same listeners once [turn] has \
         a realm and a user or secret.",
    ),
    (
        "tls",
        "Certificates for every TLS listener (STUN over TLS, HTTPS, HTTP/3). Without them a \
         self-signed certificate for localhost is generated at start-up and its SHA-256 \
         fingerprint printed. SIGHUP reloads them.",
    ),
    (
        "http",
        "One HTTP stack per listener: /healthz, /metrics (Prometheus) and the hub transports \
         (WebSocket /v1/ws, SSE /v1/sse, long-poll /v1/poll, client publish /v1/publish, server \
         API /v1/api/METHOD, gRPC services switchboard.v1.Hub and HubApi), all on the same port.",
    ),
    (
        "http3",
        "HTTP/3 over QUIC on the UDP side of every https address (same port number; \
         docs/http3.md). HTTPS responses on TCP advertise it with Alt-Svc. Same endpoints as \
         HTTPS, except WebSocket; 0-RTT serves only GET and HEAD (others get 425 Too Early).",
    ),
    (
        "turn",
        "TURN (RFC 8656) runs on the STUN listeners once a realm and a user or secret are set.",
    ),
    (
        "hub",
        "The real-time hub (docs/hub.md). Channel options per namespace are further below.",
    ),
    (
        "hub.limits",
        "Hub limits; each refusal has its own error code (in parentheses).",
    ),
    (
        "hub.rooms",
        "WebRTC signaling rooms (docs/signaling.md). Joining room \"ns:name\" needs subscribe \
         permission on the channel \"ns:name\" (namespace options, token \"channels\" claim); \
         plain names use the default namespace.",
    ),
    (
        "hub.jwt",
        "Connection token keys; a token's \"alg\" picks the key (HS256, RS256, ES256); no key, no \
         tokens.",
    ),
    (
        "webhooks",
        "switchboard's own webhooks (docs/webhooks.md): channels occupied and vacated, \
         connections closed and TURN allocations ended, POSTed in batches, signed with the \
         secret, retried with backoff. Pusher apps' webhooks are set per app ([[pusher.apps]]).",
    ),
    (
        "cluster",
        "Several nodes behind a load balancer act as one through Redis (or Valkey): \
         publications, history and recovery, presence, signaling rooms and TURN revocations span \
         every node with the same URL and prefix (docs/scaling.md). Without it the node keeps \
         everything in memory.",
    ),
];

static TABLE: LazyLock<Vec<Spec>> = LazyLock::new(build);

fn build() -> Vec<Spec> {
    use Group::*;
    let s = Spec::new;
    vec![
        // Logging
        s(
            "log-format",
            "log_format",
            Logging,
            "FORMAT",
            "Log format: pretty or json.",
            at!(log_format),
        )
        .default("pretty")
        .expects("json or pretty"),
        s(
            "log-level",
            "log_level",
            Logging,
            "FILTER",
            "Log filter (tracing EnvFilter syntax), such as info, debug or switchboard=debug,info.",
            at!(log_level),
        )
        .default("info")
        .expects("a log filter"),
        s(
            "access-log",
            "access_log",
            Logging,
            "BOOL",
            "One structured line per HTTP request and per ended TURN allocation (target \
             switchboard::access, at info level).",
            at!(access_log),
        )
        .default("true")
        .bare("true")
        .expects("true or false"),
        // STUN listeners and behaviour
        s(
            "stun-udp",
            "stun.udp",
            Listeners,
            "ADDR",
            "STUN (and TURN) over UDP listen address; off disables.",
            at!(stun.udp),
        )
        .list()
        .default("127.0.0.1:3478"),
        s(
            "stun-tcp",
            "stun.tcp",
            Listeners,
            "ADDR",
            "STUN (and TURN) over TCP listen address, RFC 8489 framing; off disables.",
            at!(stun.tcp),
        )
        .list()
        .default("127.0.0.1:3478"),
        s(
            "stun-tls",
            "stun.tls",
            Listeners,
            "ADDR",
            "STUN (and TURN) over TLS listen address; off disables.",
            at!(stun.tls),
        )
        .list()
        .default("127.0.0.1:5349"),
        s(
            "alt-address",
            "stun.alt_address",
            Stun,
            "IP",
            "Second IP address of this host for RFC 5780 NAT behaviour discovery. With it, UDP \
             listens on {primary, alternate} x {port, alternate port}, responses carry \
             OTHER-ADDRESS and RESPONSE-ORIGIN, and CHANGE-REQUEST is honoured.",
            at!(stun.alt_address),
        )
        .expects("an IP address or off")
        .example("\"127.0.0.2\""),
        s(
            "alt-port",
            "stun.alt_port",
            Stun,
            "PORT",
            "Alternate port for RFC 5780 (default: the primary port + 1).",
            at!(stun.alt_port),
        )
        .expects("a port number 1-65535 or off")
        .range(1, 65535)
        .example("3479"),
        s(
            "software",
            "stun.software",
            Stun,
            "TEXT",
            "SOFTWARE attribute in responses (\"\" sends none).",
            at!(stun.software),
        )
        .default(concat!("switchboard ", env!("CARGO_PKG_VERSION")))
        .expects("a text"),
        s(
            "stun-max-connections",
            "stun.max_connections",
            Stun,
            "N",
            "Open STUN TCP + TLS connections at once (lowered at start-up to fit the open-file \
             limit, docs/security.md).",
            at!(stun.max_connections),
        )
        .default("10000")
        .count(),
        s(
            "stun-max-connections-per-ip",
            "stun.max_connections_per_ip",
            Stun,
            "N",
            "Open STUN TCP + TLS connections per client address (IPv6: per /64), 0 = no \
             per-address cap.",
            at!(stun.max_connections_per_ip),
        )
        .default("1024")
        .count(),
        s(
            "stun-idle-timeout",
            "stun.idle_timeout",
            Stun,
            "SECS",
            "Seconds a STUN TCP/TLS connection may stay idle before it is closed; a frame (the \
             first one included) must arrive whole within 10 s of its first byte.",
            at!(stun.idle_timeout),
        )
        .default("300")
        .secs()
        .min(1),
        s(
            "stun-workers",
            "stun.workers",
            Stun,
            "N",
            "UDP sockets per STUN address (SO_REUSEPORT), 0 = one per CPU core.",
            at!(stun.workers),
        )
        .default("0")
        .count(),
        // TLS
        s(
            "tls-cert",
            "tls.cert",
            Tls,
            "PATH",
            "PEM certificate chain for every TLS listener (with --tls-key).",
            at!(tls.cert),
        )
        .expects("a file path")
        .example("\"/etc/switchboard/cert.pem\""),
        s(
            "tls-key",
            "tls.key",
            Tls,
            "PATH",
            "PEM private key for every TLS listener (with --tls-cert).",
            at!(tls.key),
        )
        .expects("a file path")
        .example("\"/etc/switchboard/key.pem\""),
        // HTTP
        s(
            "http",
            "http.listen",
            Listeners,
            "ADDR",
            "HTTP listen address (HTTP/1.1 and h2c: health, metrics, hub transports, gRPC); \
             off disables.",
            at!(http.listen),
        )
        .list()
        .default("127.0.0.1:8080"),
        s(
            "https",
            "http.tls_listen",
            Listeners,
            "ADDR",
            "HTTPS listen address (TLS with ALPN h2 and http/1.1, same endpoints; HTTP/3 on the \
             same UDP port); off disables.",
            at!(http.tls_listen),
        )
        .list()
        .default("127.0.0.1:8443"),
        s(
            "admin",
            "http.admin",
            Listeners,
            "ADDR",
            "Admin listener (plain HTTP): /metrics, /healthz, the console, and the server API; \
             off disables. Keep it on loopback or a private network.",
            at!(http.admin),
        )
        .list()
        .default("off"),
        s(
            "listen",
            "listen",
            Listeners,
            "ADDR",
            "One port for everything (such as 0.0.0.0:443): on TCP each connection is told apart \
             by its first bytes (TLS: HTTPS, or TURN over TLS by ALPN stun.turn or its first \
             bytes; plain STUN/TURN; plain HTTP), on UDP each datagram (STUN/TURN, or QUIC for \
             HTTP/3 and WebTransport when [http3] is on); docs/one-port.md. Mixes with the \
             other listeners.",
            at!(listen),
        )
        .list()
        .default("off"),
        s(
            "listen-timeout",
            "listen_timeout",
            Listeners,
            "SECS",
            "Seconds a --listen connection has to show what it is (its first bytes, the TLS \
             handshake and, without ALPN, its first bytes inside TLS); then it is closed and \
             counted in switchboard_listen_unclassified_total.",
            at!(listen_timeout),
        )
        .default("10")
        .secs()
        .range(1, 300),
        s(
            "api-key",
            "http.api_keys",
            Http,
            "KEY",
            "Server API key (header \"Authorization: apikey KEY\", gRPC metadata \
             \"authorization\"). With none, the server API answers 401 to everything.",
            at!(http.api_keys),
        )
        .list()
        .secret(),
        s(
            "allow-anonymous",
            "hub.allow_anonymous",
            Hub,
            "WHO",
            "Hub connections without a token (or with an empty \"sub\"): true (from anywhere), \
             loopback, or false. In the file a boolean, restricted by \
             [http] anonymous_loopback_only.",
            Box::new(Anonymous),
        )
        .default("loopback")
        .bare("true")
        .expects("true, false or loopback"),
        s(
            "anonymous-loopback-only",
            "http.anonymous_loopback_only",
            Hub,
            "BOOL",
            "With [hub] allow_anonymous, accept anonymous connections from loopback peers only \
             (--allow-anonymous loopback|true sets it too).",
            at!(http.anonymous_loopback_only),
        )
        .default("true")
        .expects("true or false")
        .toml_only(),
        s(
            "hub-ping-interval",
            "http.ping_interval_secs",
            Http,
            "SECS",
            "Seconds between WebSocket pings, SSE heartbeat comments and HTTP/2 keep-alive pings.",
            at!(http.ping_interval),
        )
        .default("25")
        .secs()
        .min(1),
        s(
            "hub-idle-timeout",
            "http.idle_timeout_secs",
            Http,
            "SECS",
            "Seconds a WebSocket may be silent (no frame, no pong) before it is closed; also the \
             time allowed for its first (connect) command.",
            at!(http.idle_timeout),
        )
        .default("60")
        .secs()
        .min(1),
        s(
            "poll-timeout",
            "http.poll_timeout_secs",
            Http,
            "SECS",
            "Longest wait of a long-poll request, seconds.",
            at!(http.poll_timeout),
        )
        .default("25")
        .secs()
        .min(1),
        s(
            "first-request-timeout",
            "http.first_request_timeout_secs",
            Http,
            "SECS",
            "Seconds a new HTTP connection (after TLS) may take to send its first request.",
            at!(http.first_request_timeout),
        )
        .default("10")
        .secs()
        .min(1),
        s(
            "http-max-connections",
            "http.max_connections",
            Http,
            "N",
            "Open connections of all HTTP and HTTPS listeners together (HTTP/3 has its own \
             limit); lowered at start-up to fit the descriptor limit (docs/security.md).",
            at!(http.max_connections),
        )
        .default("20000")
        .count(),
        s(
            "http-max-connections-per-ip",
            "http.max_connections_per_ip",
            Http,
            "N",
            "Open HTTP connections per client address (IPv6: per /64), 0 = no per-address cap.",
            at!(http.max_connections_per_ip),
        )
        .default("1024")
        .count(),
        s(
            "body-min-rate",
            "http.body_min_rate",
            Http,
            "BYTES",
            "Request bodies must arrive at least this fast, bytes per second, once \
             body_grace_secs have passed (0 = no minimum); slower ones get 408.",
            at!(http.body_min_rate),
        )
        .default("1024")
        .count(),
        s(
            "body-grace",
            "http.body_grace_secs",
            Http,
            "SECS",
            "Seconds a request body may take before body_min_rate applies.",
            at!(http.body_grace),
        )
        .default("10")
        .secs(),
        s(
            "allow-origin",
            "http.allowed_origins",
            Http,
            "ORIGIN",
            "Origin whose pages may use the hub (WebSocket upgrades and state-changing requests \
             from any other Origin get 403; CORS is answered for these), such as \
             https://app.example.com, or * for any. The server's own origin is always allowed.",
            at!(http.allowed_origins),
        )
        .list(),
        s(
            "allow-loopback-origins",
            "http.allow_loopback_origins",
            Http,
            "BOOL",
            "Pages served from this machine (Origin http://localhost, 127.0.0.0/8 or [::1], any \
             port, such as a development server) may use the hub like the listed origins.",
            at!(http.allow_loopback_origins),
        )
        .default("true")
        .bare("true")
        .expects("true or false"),
        s(
            "public-admin",
            "http.public_admin",
            Http,
            "BOOL",
            "Also serve /metrics and the console on --http/--https connections to an address that \
             is not loopback (they are always served on loopback and on --admin).",
            at!(http.public_admin),
        )
        .default("false")
        .bare("true")
        .expects("true or false"),
        s(
            "api-admin-only",
            "http.api_admin_only",
            Http,
            "BOOL",
            "Serve the server API (/v1/api/*, gRPC HubApi, /v1/ice-servers/revoke) on the --admin \
             listener only.",
            at!(http.api_admin_only),
        )
        .default("false")
        .bare("true")
        .expects("true or false"),
        // HTTP/3
        s(
            "http3",
            "http3.enabled",
            Http,
            "on|off",
            "HTTP/3 over QUIC on the UDP side of every --https address.",
            at!(http3.enabled),
        )
        .default("on")
        .expects("on or off"),
        s(
            "http3-idle-timeout",
            "http3.idle_timeout",
            Http,
            "SECS",
            "Seconds without a packet before a QUIC connection is closed.",
            at!(http3.idle_timeout),
        )
        .default("30")
        .secs()
        .min(1),
        s(
            "http3-keep-alive",
            "http3.keep_alive",
            Http,
            "SECS",
            "Seconds between keep-alive PINGs on a quiet QUIC connection, 0 = none.",
            at!(http3.keep_alive),
        )
        .default("10")
        .secs(),
        s(
            "http3-max-bidi-streams",
            "http3.max_bidi_streams",
            Http,
            "N",
            "Concurrent request streams per QUIC connection.",
            at!(http3.max_bidi_streams),
        )
        .default("100")
        .count()
        .min(1),
        s(
            "http3-max-uni-streams",
            "http3.max_uni_streams",
            Http,
            "N",
            "Concurrent unidirectional streams per QUIC connection (HTTP/3 needs 3).",
            at!(http3.max_uni_streams),
        )
        .default("8")
        .count()
        .min(3),
        s(
            "http3-max-connections",
            "http3.max_connections",
            Http,
            "N",
            "Open QUIC connections at most; more are refused.",
            at!(http3.max_connections),
        )
        .default("10000")
        .count()
        .min(1),
        s(
            "quic-retry",
            "http3.retry",
            Http,
            "on|off",
            "QUIC address validation: a Retry round trip for every new connection (otherwise \
             only under load).",
            at!(http3.retry),
        )
        .default("off")
        .bare("on")
        .expects("on or off"),
        s(
            "quic-retry-above-handshakes",
            "http3.retry_above_handshakes",
            Http,
            "N",
            "Without --quic-retry: send Retry while at least this many handshakes are in \
             progress.",
            at!(http3.retry_above_handshakes),
        )
        .default("64")
        .count(),
        // TURN
        s(
            "turn-realm",
            "turn.realm",
            Turn,
            "REALM",
            "TURN realm; TURN is on once a realm and a user or secret are set.",
            at!(turn.realm),
        )
        .default("")
        .expects("a realm"),
        s(
            "turn-user",
            "turn.users",
            Turn,
            "NAME:PASSWORD",
            "Static TURN user: NAME:PASSWORD, or NAME:0x and 32 hex digits of \
             MD5(NAME:REALM:PASSWORD).",
            at!(turn.users),
        )
        .list()
        .secret(),
        s(
            "turn-secret",
            "turn.secrets",
            Turn,
            "SECRET",
            "TURN REST shared secret (coturn's use-auth-secret: username \"EXPIRY[:USER]\", \
             password base64(HMAC-SHA1(secret, username)), HMAC-SHA256 accepted too). Several \
             allow rotation.",
            at!(turn.secrets),
        )
        .list()
        .secret(),
        s(
            "allow-peer",
            "turn.allow_peers",
            Turn,
            "CIDR",
            "Let relays reach this prefix although it is not public (such as 127.0.0.0/8). \
             Relays never reach loopback, private, link-local, multicast, reserved or this \
             server's own addresses unless allowed here; allow wins over every refusal.",
            at!(turn.allow_peers),
        )
        .list(),
        s(
            "deny-peer",
            "turn.deny_peers",
            Turn,
            "CIDR",
            "Refuse relaying to this prefix too.",
            at!(turn.deny_peers),
        )
        .list(),
        s(
            "relay-ports",
            "turn.relay_ports",
            Turn,
            "LOW-HIGH",
            "Relay port range.",
            at!(turn.relay_ports),
        )
        .default("49152-65535")
        .expects("LOW-HIGH"),
        s(
            "relay-ip",
            "turn.relay_ip",
            Turn,
            "IP",
            "Address relay sockets bind to (default: the first STUN UDP address).",
            at!(turn.relay_ip),
        )
        .expects("an IP address or off")
        .example("\"203.0.113.10\""),
        s(
            "external-ip",
            "turn.external_ip",
            Turn,
            "IP",
            "Relay address advertised in XOR-RELAYED-ADDRESS behind a 1:1 NAT.",
            at!(turn.external_ip),
        )
        .expects("an IP address or off")
        .example("\"198.51.100.10\""),
        s(
            "user-quota",
            "turn.user_quota",
            Turn,
            "N",
            "TURN allocations per user (0: unlimited).",
            at!(turn.user_quota),
        )
        .default("0")
        .count(),
        s(
            "total-quota",
            "turn.total_quota",
            Turn,
            "N",
            "TURN allocations in total (0: unlimited).",
            at!(turn.total_quota),
        )
        .default("0")
        .count(),
        s(
            "alternate-server",
            "turn.alternate_servers",
            Turn,
            "ADDR",
            "Load shedding (docs/turn.md): once --total-quota is reached, an authenticated \
             Allocate gets 300 Try Alternate with ALTERNATE-SERVER, round robin over these \
             IP:PORT addresses (client's family first; this node's own address skipped), instead \
             of 508.",
            at!(turn.alternate_servers),
        )
        .list(),
        s(
            "alternate-domain",
            "turn.alternate_domain",
            Turn,
            "NAME",
            "ALTERNATE-DOMAIN sent with redirects of TLS clients: the name on the alternates' \
             certificates.",
            at!(turn.alternate_domain),
        )
        .expects("a DNS name or off")
        .example("\"turn.example.org\""),
        s(
            "max-bps",
            "turn.max_bps",
            Turn,
            "BYTES",
            "Relayed bytes per second per allocation (0: unlimited).",
            at!(turn.max_bps),
        )
        .default("0")
        .count(),
        s(
            "max-lifetime",
            "turn.max_lifetime",
            Turn,
            "SECS",
            "Longest TURN allocation lifetime granted, seconds (at least 600, the RFC default).",
            at!(turn.max_lifetime),
        )
        .default("3600")
        .secs()
        .clamp_min(600),
        s(
            "credential-ttl",
            "turn.credential_ttl",
            Turn,
            "SECS",
            "Lifetime of the TURN REST credentials GET /v1/ice-servers issues (from the first \
             secret), seconds (at least 60).",
            at!(turn.credential_ttl),
        )
        .default("86400")
        .secs()
        .clamp_min(60),
        s(
            "ice-host",
            "turn.ice_host",
            Turn,
            "HOST",
            "Host in the stun:/turn:/turns: URLs of GET /v1/ice-servers; empty: the Host the \
             client used.",
            at!(turn.ice_host),
        )
        .default("")
        .expects("a host name"),
        // Hub
        s(
            "node-name",
            "hub.node_name",
            Hub,
            "NAME",
            "This node's name, reported by the server API info and /healthz.",
            at!(hub.node_name),
        )
        .default("switchboard")
        .expects("a node name"),
        s(
            "hub-idempotency-window",
            "hub.idempotency_window_secs",
            Hub,
            "SECS",
            "Seconds a publish idempotency key is remembered.",
            at!(hub.idempotency_window_secs),
        )
        .default("300")
        .secs(),
        s(
            "hub-presence-ttl",
            "hub.presence_ttl_secs",
            Hub,
            "SECS",
            "Seconds a presence entry lives without refresh.",
            at!(hub.presence_ttl_secs),
        )
        .default("60")
        .secs()
        .min(1),
        s(
            "hub-write-delay",
            "hub.write_delay_ms",
            Hub,
            "MS",
            "WebSocket write coalescing: after a push, wait up to this many milliseconds for \
             more and write them together (fewer system calls under heavy fan-out, that much \
             more latency).",
            at!(hub.write_delay_ms),
        )
        .default("0")
        .expects("milliseconds"),
        s(
            "hub-history-memory",
            "hub.history_memory_mib",
            Hub,
            "MIB",
            "Memory for history of the in-memory broker, MiB, all channels together (payloads \
             plus ~384 B per publication); the oldest publications node-wide are evicted first, \
             and recovering past them reports recovered=false. Redis keeps history in Redis.",
            at!(hub.history_memory_mib),
        )
        .default("256")
        .expects("a size in MiB"),
        s(
            "hub-max-message-size",
            "hub.limits.max_message_size",
            Hub,
            "BYTES",
            "Largest publication data in bytes (113); WebSocket frames may be a little larger.",
            at!(hub.limits.max_message_size),
        )
        .default("65536")
        .count()
        .min(1),
        s(
            "hub-max-channels-per-connection",
            "hub.limits.max_channels_per_connection",
            Hub,
            "N",
            "Channels per connection (106).",
            at!(hub.limits.max_channels_per_connection),
        )
        .default("128")
        .count()
        .min(1),
        s(
            "hub-max-connections-per-user",
            "hub.limits.max_connections_per_user",
            Hub,
            "N",
            "Connections per user on this node, 0 = unlimited (114).",
            at!(hub.limits.max_connections_per_user),
        )
        .default("0")
        .count(),
        s(
            "hub-max-connections",
            "hub.limits.max_connections",
            Hub,
            "N",
            "Hub connections on this node (115).",
            at!(hub.limits.max_connections),
        )
        .default("100000")
        .count()
        .min(1),
        s(
            "hub-max-channel-length",
            "hub.limits.max_channel_length",
            Hub,
            "BYTES",
            "Longest channel name, bytes (107).",
            at!(hub.limits.max_channel_length),
        )
        .default("255")
        .count()
        .min(1),
        s(
            "hub-max-idempotency-key-length",
            "hub.limits.max_idempotency_key_length",
            Hub,
            "BYTES",
            "Longest idempotency key, bytes (107).",
            at!(hub.limits.max_idempotency_key_length),
        )
        .default("128")
        .count(),
        s(
            "hub-queue-max-messages",
            "hub.limits.queue_max_messages",
            Hub,
            "N",
            "A client whose queue of undelivered messages exceeds this many, or \
             queue_max_bytes, is disconnected with 3008 \"slow consumer\".",
            at!(hub.limits.queue_max_messages),
        )
        .default("1024")
        .count()
        .min(1),
        s(
            "hub-queue-max-bytes",
            "hub.limits.queue_max_bytes",
            Hub,
            "BYTES",
            "Bytes of undelivered messages (encoded) a client may have queued before it is \
             disconnected as a slow consumer (3008).",
            at!(hub.limits.queue_max_bytes),
        )
        .default("4194304")
        .count()
        .min(1),
        s(
            "hub-max-channels",
            "hub.limits.max_channels",
            Hub,
            "N",
            "Channels this node holds at once (history streams and subscribed channels); a new \
             one beyond it is refused with 106 (temporary).",
            at!(hub.limits.max_channels),
        )
        .default("100000")
        .count()
        .min(1),
        s(
            "hub-max-publications-per-second",
            "hub.limits.max_publications_per_second",
            Hub,
            "N",
            "Client publications per second per publisher (a user, or the anonymous clients of \
             one address) on this node (111, temporary; 0 = unlimited). The server API is not \
             limited.",
            at!(hub.limits.max_publications_per_second),
        )
        .default("50")
        .count(),
        s(
            "hub-publication-burst",
            "hub.limits.publication_burst",
            Hub,
            "N",
            "Publications a publisher may send at once above that rate.",
            at!(hub.limits.publication_burst),
        )
        .default("100")
        .count(),
        s(
            "hub-max-publish-bytes-per-second",
            "hub.limits.max_publish_bytes_per_second",
            Hub,
            "BYTES",
            "Publication data bytes per second per publisher (111, temporary; 0 = unlimited).",
            at!(hub.limits.max_publish_bytes_per_second),
        )
        .default("1048576")
        .count(),
        s(
            "rooms-max-peers-per-room",
            "hub.rooms.max_peers_per_room",
            Hub,
            "N",
            "Most peers in one signaling room (106).",
            at!(hub.rooms.max_peers_per_room),
        )
        .default("8")
        .count()
        .min(1),
        s(
            "rooms-max-rooms",
            "hub.rooms.max_rooms",
            Hub,
            "N",
            "Most signaling rooms on this node (106).",
            at!(hub.rooms.max_rooms),
        )
        .default("100000")
        .count()
        .min(1),
        s(
            "rooms-peer-timeout",
            "hub.rooms.peer_timeout_secs",
            Hub,
            "SECS",
            "Seconds a peer may stay silent (no command on its connection) before it leaves its \
             rooms.",
            at!(hub.rooms.peer_timeout_secs),
        )
        .default("30")
        .secs()
        .min(1),
        s(
            "rooms-max-metadata-bytes",
            "hub.rooms.max_metadata_bytes",
            Hub,
            "BYTES",
            "Largest join metadata, bytes (113).",
            at!(hub.rooms.max_metadata_bytes),
        )
        .default("4096")
        .count(),
        s(
            "rooms-max-sdp-bytes",
            "hub.rooms.max_sdp_bytes",
            Hub,
            "BYTES",
            "Largest SDP offer or answer, bytes (113).",
            at!(hub.rooms.max_sdp_bytes),
        )
        .default("65536")
        .count()
        .min(1),
        s(
            "rooms-max-commands-per-second",
            "hub.rooms.max_commands_per_second",
            Hub,
            "N",
            "Signaling commands per second per connection on average (111 beyond it).",
            at!(hub.rooms.max_commands_per_second),
        )
        .default("50")
        .count()
        .min(1),
        s(
            "rooms-command-burst",
            "hub.rooms.command_burst",
            Hub,
            "N",
            "Signaling commands a connection may send at once above that rate.",
            at!(hub.rooms.command_burst),
        )
        .default("200")
        .count()
        .min(1),
        s(
            "rooms-max-rooms-per-connection",
            "hub.rooms.max_rooms_per_connection",
            Hub,
            "N",
            "Rooms one connection may be in at once (106).",
            at!(hub.rooms.max_rooms_per_connection),
        )
        .default("16")
        .count()
        .min(1),
        s(
            "rooms-max-rooms-per-user",
            "hub.rooms.max_rooms_per_user",
            Hub,
            "N",
            "Rooms the connections of one user on this node may be in at once, together (106).",
            at!(hub.rooms.max_rooms_per_user),
        )
        .default("64")
        .count()
        .min(1),
        s(
            "jwt-hmac-secret",
            "hub.jwt.hmac_secret",
            Hub,
            "SECRET",
            "HS256 secret for connection tokens (JWT).",
            at!(hub.jwt.hmac_secret),
        )
        .expects("a shared secret")
        .secret()
        .example("\"change-me\""),
        s(
            "jwt-rsa-public-key",
            "hub.jwt.rsa_public_key_file",
            Hub,
            "FILE",
            "RS256 public key (PEM file) for connection tokens.",
            at!(hub.jwt.rsa_public_key_file),
        )
        .expects("a PEM file path")
        .example("\"/etc/switchboard/jwt_rsa.pem\""),
        s(
            "jwt-rsa-public-key-pem",
            "hub.jwt.rsa_public_key_pem",
            Hub,
            "PEM",
            "RS256 public key, PEM text inline.",
            at!(hub.jwt.rsa_public_key_pem),
        )
        .expects("PEM text"),
        s(
            "jwt-ecdsa-public-key",
            "hub.jwt.ecdsa_public_key_file",
            Hub,
            "FILE",
            "ES256 (P-256) public key (PEM file) for connection tokens.",
            at!(hub.jwt.ecdsa_public_key_file),
        )
        .expects("a PEM file path")
        .example("\"/etc/switchboard/jwt_ec.pem\""),
        s(
            "jwt-ecdsa-public-key-pem",
            "hub.jwt.ecdsa_public_key_pem",
            Hub,
            "PEM",
            "ES256 (P-256) public key, PEM text inline.",
            at!(hub.jwt.ecdsa_public_key_pem),
        )
        .expects("PEM text"),
        s(
            "jwks-file",
            "hub.jwt.jwks_file",
            Hub,
            "FILE",
            "JWKS file with RSA / P-256 keys for connection tokens (selected by kid).",
            at!(hub.jwt.jwks_file),
        )
        .expects("a JWKS file path")
        .example("\"/etc/switchboard/jwks.json\""),
        s(
            "jwks-json",
            "hub.jwt.jwks_json",
            Hub,
            "JSON",
            "A JWKS document ({\"keys\":[...]}) inline.",
            at!(hub.jwt.jwks_json),
        )
        .expects("a JWKS document"),
        s(
            "jwt-audience",
            "hub.jwt.audience",
            Hub,
            "AUD",
            "Required \"aud\" claim of connection tokens, when set.",
            at!(hub.jwt.audience),
        )
        .expects("an audience")
        .example("\"switchboard\""),
        s(
            "jwt-issuer",
            "hub.jwt.issuer",
            Hub,
            "ISS",
            "Required \"iss\" claim of connection tokens, when set.",
            at!(hub.jwt.issuer),
        )
        .expects("an issuer")
        .example("\"https://auth.example.com\""),
        s(
            "jwt-leeway",
            "hub.jwt.leeway_secs",
            Hub,
            "SECS",
            "Clock skew tolerated on the exp and nbf claims, seconds.",
            at!(hub.jwt.leeway_secs),
        )
        .default("0")
        .secs(),
        // Cluster
        s(
            "redis",
            "cluster.redis",
            Cluster,
            "URL",
            "Redis (or Valkey) URL shared by the nodes of a cluster: \
             redis://[USER:PASSWORD@]HOST:PORT[/DB], rediss://... for TLS, or \
             redis+unix:///PATH; off: this node alone, in memory.",
            at!(cluster.redis),
        )
        .expects("a redis:// URL or off")
        .secret()
        .example("\"redis://127.0.0.1:6379/0\""),
        s(
            "webhook",
            "webhooks.urls",
            Hub,
            "URL",
            "URL (http or https) that receives switchboard's webhooks.",
            at!(webhooks.urls),
        )
        .list()
        .example("[\"https://app.example.com/switchboard/events\"]"),
        s(
            "webhook-secret",
            "webhooks.secret",
            Hub,
            "SECRET",
            "Signs webhook bodies: X-Switchboard-Signature: sha256=HEX(HMAC-SHA256(secret, body)).",
            at!(webhooks.secret),
        )
        .expects("a shared secret")
        .secret()
        .example("\"change-me\""),
        s(
            "redis-prefix",
            "cluster.redis_prefix",
            Cluster,
            "PREFIX",
            "Prefix of every Redis key and pub/sub channel (default switchboard); several \
             clusters can share one Redis.",
            at!(cluster.redis_prefix),
        )
        .expects("a key prefix")
        .example("\"switchboard\""),
        s(
            "redis-ca",
            "cluster.redis_ca",
            Cluster,
            "FILE",
            "For rediss://: PEM file with the CA certificate(s) of Redis's certificate \
             (default: the system's trusted roots).",
            at!(cluster.redis_ca),
        )
        .expects("a PEM file path")
        .example("\"/etc/switchboard/redis-ca.pem\""),
    ]
}
