//! `switchboard`: one binary for STUN/TURN, the real-time hub and WebRTC signaling.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use switchboard_server::config::{default_toml, table, LogFormat, Settings, Spec};
use switchboard_server::Server;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod credentials;
mod hubcli;
mod nat_check;
mod probe;
mod send;

/// `0.1.0 (commit abcdef012345, built 2026-12-06)`.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SB_BUILD_COMMIT"),
    ", built ",
    env!("SB_BUILD_DATE"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "switchboard",
    version = LONG_VERSION,
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
    /// Measure what happens on the wire for URLs: DNS, TCP, TLS, HTTP/1.1, h2, h3, STUN, TURN.
    Probe(probe::ProbeArgs),
    /// Print a channel's publications as JSON lines, recovering across reconnects.
    Sub(hubcli::SubArgs),
    /// Publish to a channel (DATA, or each line of standard input).
    Pub(hubcli::PubArgs),
    /// Print a channel's history as JSON lines.
    History(hubcli::HistoryArgs),
    /// Print who is subscribed to a channel.
    Presence(hubcli::PresenceArgs),
    /// Send files, directories or stdin to another machine over WebRTC; prints a code.
    Send(send::SendArgs),
    /// Receive what `switchboard send` offers under CODE.
    Receive(send::ReceiveArgs),
    /// Mint a hub connection token (JWT) with the configured key or a private key file.
    Token(credentials::TokenArgs),
    /// Mint a TURN REST credential (username EXPIRY:USER and its password) from a shared secret.
    TurnCredential(credentials::TurnCredentialArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into DIR.
    Man {
        /// Write switchboard.1 and switchboard-COMMAND.1 here instead of printing switchboard.1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the version, the commit and the build date.
    Version,
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the commented default configuration file.
    Default,
    /// Print the effective settings after the file, environment and flags are applied.
    Show(ShowArgs),
    /// Print the settings reference (Markdown, as in docs/configuration.md).
    Reference,
}

/// `config show` flags: the serve flags, and whether to print secrets.
#[derive(Args)]
struct ShowArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Print API keys, TURN passwords and secrets, JWT secrets and the Redis password in clear
    /// (redacted by default).
    #[arg(long)]
    reveal_secrets: bool,
}

/// The serve flags, one per setting of the table (`switchboard_server::config::table`); each
/// overrides the config file and the SWITCHBOARD_* environment.
#[derive(Default)]
struct ServeArgs {
    /// `--config FILE`.
    config: Option<PathBuf>,
    /// The settings given as flags, in table order: (name, values).
    overrides: Vec<(&'static str, Vec<String>)>,
}

/// The help line of a setting: what it does, its default and its environment variable.
fn flag_help(spec: &Spec) -> String {
    let mut help = spec.short_help().to_string();
    match spec.default {
        Some(d) if !d.is_empty() => help.push_str(&format!(" [default: {d}]")),
        _ => {}
    }
    help.push_str(&format!(" [env: {}]", spec.env()));
    help
}

impl clap::FromArgMatches for ServeArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut args = ServeArgs {
            config: m.get_one::<PathBuf>("config").cloned(),
            overrides: Vec::new(),
        };
        for spec in table().iter().filter(|s| s.cli) {
            if let Some(values) = m.get_many::<String>(spec.name) {
                args.overrides.push((spec.name, values.cloned().collect()));
            }
        }
        Ok(args)
    }
    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for ServeArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        use clap::{Arg, ArgAction};
        let mut cmd = cmd.arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML configuration file [default: /etc/switchboard/switchboard.toml if it exists] [env: SWITCHBOARD_CONFIG]"),
        );
        // Grouped under their headings, in the headings' order.
        let mut specs: Vec<&Spec> = table().iter().filter(|s| s.cli).collect();
        specs.sort_by_key(|s| s.group);
        for spec in specs {
            let repeat = if spec.list { " Repeatable." } else { "" };
            let mut arg = Arg::new(spec.name)
                .long(spec.name)
                .value_name(spec.value_name)
                .help(flag_help(spec))
                .long_help(format!(
                    "{}{repeat}\n{}",
                    spec.help,
                    flag_help(spec).trim_start_matches(spec.short_help()).trim()
                ))
                .help_heading(spec.group.heading())
                .action(if spec.list {
                    ArgAction::Append
                } else {
                    ArgAction::Set
                });
            if let Some(bare) = spec.bare {
                arg = arg.num_args(0..=1).default_missing_value(bare);
            }
            cmd = cmd.arg(arg);
        }
        cmd
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl ServeArgs {
    /// The config file: `--config`, else `SWITCHBOARD_CONFIG`, else [`SYSTEM_CONFIG`] when it
    /// exists.
    fn config_file(&self) -> Option<PathBuf> {
        self.config
            .clone()
            .or_else(|| std::env::var_os("SWITCHBOARD_CONFIG").map(PathBuf::from))
            .or_else(|| {
                let system = PathBuf::from(SYSTEM_CONFIG);
                system.is_file().then_some(system)
            })
    }

    /// Defaults < file < environment < flags; `SWITCHBOARD_*` variables that are not settings
    /// are warned about (through the log once it is set up, else on stderr).
    fn settings(&self) -> anyhow::Result<Settings> {
        let (settings, unknown) = self.load()?;
        if !unknown.is_empty() {
            let names = unknown.join(", ");
            if tracing::dispatcher::has_been_set() {
                tracing::warn!(variables = %names, "ignoring SWITCHBOARD_* environment variables that are not settings");
            } else {
                eprintln!(
                    "switchboard: warning: ignoring environment variables that are not settings: {names}"
                );
            }
        }
        Ok(settings)
    }

    fn load(&self) -> anyhow::Result<(Settings, Vec<String>)> {
        let mut settings = match self.config_file() {
            Some(path) => Settings::from_file(&path)?,
            None => Settings::default(),
        };
        let unknown = settings.apply_env(std::env::vars())?;
        for (key, values) in &self.overrides {
            settings.set(key, values, &format!("--{key}"))?;
        }
        settings.validate()?;
        Ok((settings, unknown))
    }
}

/// The man pages: `switchboard.1`, and `switchboard-COMMAND.1` for every command when `dir` is
/// given (written there).
fn man(dir: Option<PathBuf>) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let Some(dir) = dir else {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout().lock())?;
        return Ok(());
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let write = |name: &str, cmd: clap::Command| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        std::fs::write(&path, out)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        println!("{}", path.display());
        Ok(())
    };
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("switchboard-{}", sub.get_name());
        write(&name, sub.clone().name(name.clone()))?;
    }
    write("switchboard", cmd)
}

/// The config file read when neither `--config` nor `SWITCHBOARD_CONFIG` names one.
pub(crate) const SYSTEM_CONFIG: &str = "/etc/switchboard/switchboard.toml";

/// The base URL of the pages on the first TCP listener of the first of `protocols` that has
/// one (`admin` is plain HTTP; a wildcard address shown as loopback, which it also answers on).
fn web_base(listeners: &[switchboard_server::ListenerInfo], protocols: &[&str]) -> Option<String> {
    let l = protocols.iter().find_map(|p| {
        listeners
            .iter()
            .find(|l| l.protocol == *p && l.transport == "tcp")
    })?;
    let scheme = if l.protocol == "https" {
        "https"
    } else {
        "http"
    };
    let mut addr = l.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Some(format!("{scheme}://{addr}"))
}

fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&settings.log_level)
        .map_err(|e| anyhow::anyhow!("bad value for --log-level {:?}: {e}", settings.log_level))?;
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
    let (settings, unknown) = args.load()?;
    init_logging(&settings)?;
    if !unknown.is_empty() {
        tracing::warn!(
            variables = %unknown.join(", "),
            "ignoring SWITCHBOARD_* environment variables that are not settings"
        );
    }
    // Handlers first: a signal that arrives once the listeners are printed (a supervisor or a
    // script may send it at once) must find them installed, not kill the process outright.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let server = Server::start(&settings).await?;
    {
        let mut out = std::io::stdout().lock();
        if let Some(file) = args.config_file() {
            writeln!(out, "config {}", file.display())?;
        }
        for l in server.listeners() {
            writeln!(out, "{l}")?;
        }
        if let Some(turn) = server.turn_summary() {
            writeln!(out, "{turn}")?;
        }
        if let Some(cluster) = server.cluster_summary() {
            writeln!(out, "{cluster}")?;
        }
        let tls_on = server
            .listeners()
            .iter()
            .any(|l| l.transport == "tls" || l.protocol == "https" || l.protocol == "listen");
        if tls_on {
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
        }
        let admin = web_base(server.listeners(), &["admin"]);
        if let Some(base) = web_base(server.listeners(), &["http", "https"]) {
            // The console lives on the admin listener when there is one.
            let console = admin.as_deref().unwrap_or(&base);
            writeln!(
                out,
                "web   console {console}/  call {base}/call  ice-servers {base}/v1/ice-servers"
            )?;
        } else if let Some(admin) = admin {
            writeln!(out, "web   console {admin}/")?;
        }
        writeln!(out, "ready")?;
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
        Command::Probe(args) => return probe::run(args),
        Command::Sub(args) => return hubcli::sub(args),
        Command::Pub(args) => return hubcli::publish(args),
        Command::History(args) => return hubcli::history(args),
        Command::Presence(args) => return hubcli::presence(args),
        Command::Send(args) => return send::send(args),
        Command::Receive(args) => return send::receive(args),
        Command::Version => {
            println!("switchboard {LONG_VERSION}");
            Ok(())
        }
        Command::Token(args) => credentials::token(args),
        Command::TurnCredential(args) => credentials::turn_credential(args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "switchboard", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => man(dir),
        Command::Config(ConfigCommand::Default) => {
            print!("{}", default_toml());
            Ok(())
        }
        Command::Config(ConfigCommand::Reference) => {
            print!("{}", switchboard_server::config::reference_markdown());
            Ok(())
        }
        Command::Config(ConfigCommand::Show(args)) => args
            .serve
            .settings()
            .map(|s| print!("{}", s.to_toml(args.reveal_secrets))),
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(serve(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`switchboard man | head`) is not an error worth a message.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchboard: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
