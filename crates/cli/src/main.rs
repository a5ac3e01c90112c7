//! `switchboard`: one binary for STUN/TURN, the real-time hub and WebRTC signaling.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use switchboard_server::config::{LogFormat, Settings, DEFAULT_TOML};
use switchboard_server::Server;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod nat_check;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "STUN/TURN, real-time hub and WebRTC signaling in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up; the size of the flag struct does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the server (with no flags: every listener on loopback, in memory, self-signed cert).
    Serve(ServeArgs),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Classify the NAT in front of this host (RFC 5780: mapping, filtering, hairpinning).
    NatCheck(nat_check::NatCheckArgs),
    /// Print the version.
    Version,
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the commented default configuration file.
    Default,
    /// Print the effective settings after the file, environment and flags are applied.
    Show(ServeArgs),
}

/// Flags; each overrides the config file and the SWITCHBOARD_* environment.
#[derive(Args, Default)]
struct ServeArgs {
    /// TOML configuration file (also SWITCHBOARD_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// STUN over UDP listen address; repeatable; `off` disables.
    #[arg(long, value_name = "ADDR")]
    stun_udp: Vec<String>,
    /// STUN over TCP listen address; repeatable; `off` disables.
    #[arg(long, value_name = "ADDR")]
    stun_tcp: Vec<String>,
    /// STUN over TLS listen address; repeatable; `off` disables.
    #[arg(long, value_name = "ADDR")]
    stun_tls: Vec<String>,
    /// Second IP address for RFC 5780 NAT behaviour discovery.
    #[arg(long, value_name = "IP")]
    alt_address: Option<String>,
    /// Alternate port for RFC 5780 (default: primary port + 1).
    #[arg(long, value_name = "PORT")]
    alt_port: Option<String>,
    /// SOFTWARE attribute value ("" for none).
    #[arg(long, value_name = "TEXT")]
    software: Option<String>,
    /// Maximum open STUN TCP+TLS connections.
    #[arg(long, value_name = "N")]
    stun_max_connections: Option<String>,
    /// Seconds before an idle STUN TCP/TLS connection is closed.
    #[arg(long, value_name = "SECS")]
    stun_idle_timeout: Option<String>,
    /// UDP sockets per STUN address (0: one per core).
    #[arg(long, value_name = "N")]
    stun_workers: Option<String>,
    /// PEM certificate chain for TLS listeners.
    #[arg(long, value_name = "PATH")]
    tls_cert: Option<String>,
    /// PEM private key for TLS listeners.
    #[arg(long, value_name = "PATH")]
    tls_key: Option<String>,
    /// HTTP listen address (HTTP/1.1 + h2c: health, metrics, hub transports, gRPC);
    /// repeatable; `off` disables.
    #[arg(long, value_name = "ADDR")]
    http: Vec<String>,
    /// HTTPS listen address (TLS with ALPN h2 + http/1.1, same endpoints); repeatable; `off`
    /// disables.
    #[arg(long, value_name = "ADDR")]
    https: Vec<String>,
    /// Server API key (`Authorization: apikey KEY`); repeatable.
    #[arg(long, value_name = "KEY")]
    api_key: Vec<String>,
    /// Anonymous hub connections: `true` (from anywhere), `loopback` (default), `false`.
    #[arg(long, value_name = "WHO", num_args = 0..=1, default_missing_value = "true")]
    allow_anonymous: Option<String>,
    /// HS256 secret for connection tokens (JWT).
    #[arg(long, value_name = "SECRET")]
    jwt_hmac_secret: Option<String>,
    /// RS256 public key (PEM file) for connection tokens.
    #[arg(long, value_name = "FILE")]
    jwt_rsa_public_key: Option<String>,
    /// ES256 (P-256) public key (PEM file) for connection tokens.
    #[arg(long, value_name = "FILE")]
    jwt_ecdsa_public_key: Option<String>,
    /// JWKS file with RSA / P-256 keys for connection tokens (selected by `kid`).
    #[arg(long, value_name = "FILE")]
    jwks_file: Option<String>,
    /// Seconds between WebSocket pings / SSE heartbeats / HTTP/2 keep-alive pings.
    #[arg(long, value_name = "SECS")]
    hub_ping_interval: Option<String>,
    /// Seconds of WebSocket silence (no frame, no pong) before closing.
    #[arg(long, value_name = "SECS")]
    hub_idle_timeout: Option<String>,
    /// Longest long-poll wait, seconds.
    #[arg(long, value_name = "SECS")]
    poll_timeout: Option<String>,
    /// Node-wide budget for history held in memory, MiB (oldest evicted first; default 256).
    #[arg(long, value_name = "MIB")]
    hub_history_memory: Option<String>,
    /// Origin whose pages may use the hub (WebSocket, publish, API) besides the server's own,
    /// such as `https://app.example.com`, or `*` for any; repeatable.
    #[arg(long, value_name = "ORIGIN")]
    allow_origin: Vec<String>,
    /// TURN realm; TURN is on once a realm and a user or secret are set.
    #[arg(long, value_name = "REALM")]
    turn_realm: Option<String>,
    /// TURN user NAME:PASSWORD (or NAME:0xHA1); repeatable.
    #[arg(long, value_name = "NAME:PASSWORD")]
    turn_user: Vec<String>,
    /// TURN REST shared secret (coturn use-auth-secret); repeatable for rotation.
    #[arg(long, value_name = "SECRET")]
    turn_secret: Vec<String>,
    /// Let relays reach this otherwise refused prefix (e.g. 127.0.0.0/8); repeatable.
    #[arg(long, value_name = "CIDR")]
    allow_peer: Vec<String>,
    /// Refuse relaying to this prefix too; repeatable.
    #[arg(long, value_name = "CIDR")]
    deny_peer: Vec<String>,
    /// Relay port range.
    #[arg(long, value_name = "LOW-HIGH")]
    relay_ports: Option<String>,
    /// Address relay sockets bind to.
    #[arg(long, value_name = "IP")]
    relay_ip: Option<String>,
    /// Relay address advertised behind a 1:1 NAT.
    #[arg(long, value_name = "IP")]
    external_ip: Option<String>,
    /// TURN allocations per user (0: unlimited).
    #[arg(long, value_name = "N")]
    user_quota: Option<String>,
    /// TURN allocations in total (0: unlimited).
    #[arg(long, value_name = "N")]
    total_quota: Option<String>,
    /// Over --total-quota, redirect Allocate requests here (300 Try Alternate, round robin);
    /// repeatable.
    #[arg(long, value_name = "ADDR")]
    alternate_server: Vec<String>,
    /// ALTERNATE-DOMAIN sent with redirects of TLS clients (the alternates' certificate name).
    #[arg(long, value_name = "NAME")]
    alternate_domain: Option<String>,
    /// Relayed bytes per second per allocation (0: unlimited).
    #[arg(long, value_name = "BYTES")]
    max_bps: Option<String>,
    /// Longest TURN allocation lifetime, seconds.
    #[arg(long, value_name = "SECS")]
    max_lifetime: Option<String>,
    /// Lifetime of the TURN credentials GET /v1/ice-servers issues, seconds.
    #[arg(long, value_name = "SECS")]
    credential_ttl: Option<String>,
    /// Host name in the URLs of GET /v1/ice-servers (default: the Host the client used).
    #[arg(long, value_name = "HOST")]
    ice_host: Option<String>,
    /// HTTP/3 over QUIC on the UDP side of every --https address: on (default) or off.
    #[arg(long, value_name = "on|off")]
    http3: Option<String>,
    /// QUIC address validation: Retry on every new connection (otherwise only under load).
    #[arg(long, value_name = "on|off", num_args = 0..=1, default_missing_value = "on")]
    quic_retry: Option<String>,
    /// Seconds without a packet before a QUIC connection is closed.
    #[arg(long, value_name = "SECS")]
    http3_idle_timeout: Option<String>,
    /// Seconds between QUIC keep-alive PINGs (0: none).
    #[arg(long, value_name = "SECS")]
    http3_keep_alive: Option<String>,
    /// Redis (or Valkey) URL shared by the nodes of a cluster, e.g. redis://10.0.0.5:6379/0
    /// (off: this node alone, in memory).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Prefix of every Redis key and channel (default switchboard).
    #[arg(long, value_name = "PREFIX")]
    redis_prefix: Option<String>,
    /// For rediss://: PEM file with the CA certificate(s) of Redis's certificate.
    #[arg(long, value_name = "FILE")]
    redis_ca: Option<String>,
    /// This node's name (server API info, /healthz).
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// Log format: json or pretty.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log filter, e.g. info, debug, switchboard=debug.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

impl ServeArgs {
    /// The flags given, as (setting name, values).
    fn overrides(&self) -> Vec<(&'static str, Vec<String>)> {
        let mut v: Vec<(&'static str, Vec<String>)> = Vec::new();
        let lists = [
            ("stun-udp", &self.stun_udp),
            ("stun-tcp", &self.stun_tcp),
            ("stun-tls", &self.stun_tls),
            ("http", &self.http),
            ("https", &self.https),
            ("api-key", &self.api_key),
            ("allow-origin", &self.allow_origin),
            ("turn-user", &self.turn_user),
            ("turn-secret", &self.turn_secret),
            ("allow-peer", &self.allow_peer),
            ("deny-peer", &self.deny_peer),
            ("alternate-server", &self.alternate_server),
        ];
        for (k, list) in lists {
            if !list.is_empty() {
                v.push((k, list.clone()));
            }
        }
        let singles = [
            ("alt-address", &self.alt_address),
            ("alt-port", &self.alt_port),
            ("software", &self.software),
            ("stun-max-connections", &self.stun_max_connections),
            ("stun-idle-timeout", &self.stun_idle_timeout),
            ("stun-workers", &self.stun_workers),
            ("tls-cert", &self.tls_cert),
            ("tls-key", &self.tls_key),
            ("turn-realm", &self.turn_realm),
            ("relay-ports", &self.relay_ports),
            ("relay-ip", &self.relay_ip),
            ("external-ip", &self.external_ip),
            ("user-quota", &self.user_quota),
            ("total-quota", &self.total_quota),
            ("alternate-domain", &self.alternate_domain),
            ("max-bps", &self.max_bps),
            ("max-lifetime", &self.max_lifetime),
            ("credential-ttl", &self.credential_ttl),
            ("ice-host", &self.ice_host),
            ("allow-anonymous", &self.allow_anonymous),
            ("jwt-hmac-secret", &self.jwt_hmac_secret),
            ("jwt-rsa-public-key", &self.jwt_rsa_public_key),
            ("jwt-ecdsa-public-key", &self.jwt_ecdsa_public_key),
            ("jwks-file", &self.jwks_file),
            ("hub-ping-interval", &self.hub_ping_interval),
            ("hub-idle-timeout", &self.hub_idle_timeout),
            ("poll-timeout", &self.poll_timeout),
            ("hub-history-memory", &self.hub_history_memory),
            ("http3", &self.http3),
            ("quic-retry", &self.quic_retry),
            ("http3-idle-timeout", &self.http3_idle_timeout),
            ("http3-keep-alive", &self.http3_keep_alive),
            ("redis", &self.redis),
            ("redis-prefix", &self.redis_prefix),
            ("redis-ca", &self.redis_ca),
            ("node-name", &self.node_name),
            ("log-format", &self.log_format),
            ("log-level", &self.log_level),
        ];
        for (k, val) in singles {
            if let Some(val) = val {
                v.push((k, vec![val.clone()]));
            }
        }
        v
    }

    /// Defaults < file < environment < flags.
    fn settings(&self) -> anyhow::Result<Settings> {
        let file = self
            .config
            .clone()
            .or_else(|| std::env::var_os("SWITCHBOARD_CONFIG").map(PathBuf::from));
        let mut settings = match file {
            Some(path) => Settings::from_file(&path)?,
            None => Settings::default(),
        };
        settings.apply_env(std::env::vars())?;
        for (key, values) in self.overrides() {
            settings.set(key, &values, &format!("--{key}"))?;
        }
        settings.validate()?;
        Ok(settings)
    }
}

fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&settings.log_level)
        .map_err(|e| anyhow::anyhow!("bad value for log-level {:?}: {e}", settings.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    init_logging(&settings)?;
    // Handlers first: a signal that arrives once the listeners are printed (a supervisor or a
    // script may send it at once) must find them installed, not kill the process outright.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let server = Server::start(&settings).await?;
    {
        let mut out = std::io::stdout().lock();
        for l in server.listeners() {
            writeln!(out, "{l}")?;
        }
        if let Some(turn) = server.turn_summary() {
            writeln!(out, "{turn}")?;
        }
        if let Some(cluster) = server.cluster_summary() {
            writeln!(out, "{cluster}")?;
        }
        match server.certs().source() {
            switchboard_server::tls::CertSource::SelfSigned => writeln!(
                out,
                "tls   cert self-signed for localhost, sha256 {}",
                server.certs().fingerprint()
            )?,
            switchboard_server::tls::CertSource::Files { cert, .. } => writeln!(
                out,
                "tls   cert {}, sha256 {}",
                cert.display(),
                server.certs().fingerprint()
            )?,
        }
        out.flush()?;
    }
    tracing::info!(listeners = server.listeners().len(), "switchboard started");

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match args.settings().and_then(|s| server.reload(&s).map_err(anyhow::Error::from)) {
                Ok(()) => tracing::info!(fingerprint = %server.certs().fingerprint(), "reloaded configuration and certificates"),
                Err(e) => tracing::error!(error = %e, "reload failed; keeping the previous configuration"),
            },
        }
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::NatCheck(args) => return nat_check::run(args),
        Command::Version => {
            println!("switchboard {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Config(ConfigCommand::Default) => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
        Command::Config(ConfigCommand::Show(args)) => {
            args.settings().map(|s| print!("{}", s.to_toml()))
        }
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(serve(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
