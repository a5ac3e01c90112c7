//! `switchboard send PATH...` and `switchboard receive CODE`: peer-to-peer file transfer over a
//! WebRTC data channel (crates/transfer), paired through a room on the server with a PAKE code
//! (docs/send.md), or with `--manual` through an offer and an answer carried by hand
//! ([`manual`]: no server at all).
//!
//! Exit codes: 0 done, 1 the transfer failed (the peer left or aborted), 2 bad arguments or a
//! malformed code, offer or answer, 3 the server could not be reached or refused, 4 wrong code or no sender waiting, 5 the peers
//! could not connect, 6 an integrity check failed (nothing of that file was kept), 7 a local
//! file could not be read or written (disk full, exists already).

mod ice;
mod manual;

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use switchboard_client::{ClientError, Config};
use switchboard_transfer::files::{self, Output, Status, TransferError};
use switchboard_transfer::peer::{gather, Cmd, IceServer, Link, PeerConfig, PeerError, Route};
use switchboard_transfer::signal::{self, SignalError};
use switchboard_transfer::turn::TurnTransport;
use switchboard_transfer::Code;

/// Flags both commands take.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The switchboard server that pairs the two sides: http://HOST:PORT or https://HOST:PORT.
    #[arg(
        long,
        value_name = "URL",
        env = "SWITCHBOARD_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// A connection token (JWT); without one the client is anonymous.
    #[arg(
        long,
        value_name = "JWT",
        env = "SWITCHBOARD_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Offer only relay (TURN) candidates: the data goes through the server's TURN relay.
    #[arg(long)]
    relay_only: bool,
    /// A STUN server (stun:HOST:PORT) besides those the server hands out. Repeatable.
    #[arg(long, value_name = "URL")]
    stun: Vec<String>,
    /// Local address for host candidates (default: the addresses of the default routes).
    /// Repeatable.
    #[arg(long, value_name = "IP")]
    host_ip: Vec<IpAddr>,
    /// Print JSON status lines on stdout (code or offer/answer, connected, progress, file, done,
    /// error).
    #[arg(long)]
    json: bool,
    /// Serverless: no switchboard server. The offer and the answer are printed as text (and a QR
    /// code on a terminal) and carried to the other side by hand; only --stun servers are used.
    #[arg(long)]
    manual: bool,
    /// Trust this CA certificate (PEM) for https, besides the system's.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Accept any certificate (a self-signed development server).
    #[arg(long)]
    insecure: bool,
}

/// `switchboard send`.
#[derive(Args, Debug)]
pub struct SendArgs {
    /// Files and directories to send; `-` reads standard input.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Words in the code after its number (2 or 3).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=3))]
    words: u8,
    /// The file name the receiver gets for standard input.
    #[arg(long, value_name = "NAME", default_value = "stdin")]
    name: String,
    /// With --manual: also write the offer to FILE.
    #[arg(long, value_name = "FILE", requires = "manual")]
    offer_file: Option<PathBuf>,
    /// With --manual: read the answer from FILE (waiting until it is written) instead of
    /// standard input.
    #[arg(long, value_name = "FILE", requires = "manual")]
    answer_file: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

/// `switchboard receive`.
#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// The code the sender printed (like 7-amber-crane-otter). With --manual: the sender's
    /// offer (sb1:...); `-` or none reads it from standard input.
    code: Option<String>,
    /// `-`: write the (single) file to standard output.
    #[arg(value_name = "-")]
    stdout: Option<String>,
    /// Where to put what is received.
    #[arg(long, short, value_name = "DIR", default_value = ".")]
    output: PathBuf,
    /// Replace files that exist.
    #[arg(long)]
    overwrite: bool,
    /// Start every file from zero: discard the parts an interrupted transfer kept (by default
    /// a file whose part matches the sender's path, size and mtime resumes after its last
    /// verified chunk).
    #[arg(long)]
    no_resume: bool,
    /// With --manual: read the offer from FILE (waiting until it is written; `-`: standard input).
    #[arg(long, value_name = "FILE", requires = "manual")]
    offer_file: Option<PathBuf>,
    /// With --manual: also write the answer to FILE.
    #[arg(long, value_name = "FILE", requires = "manual")]
    answer_file: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

/// A failure with its exit code and `--json` kind.
struct Failure {
    exit: u8,
    kind: &'static str,
    message: String,
}

impl Failure {
    fn new(exit: u8, kind: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            kind,
            message: message.into(),
        }
    }
}

impl From<SignalError> for Failure {
    fn from(e: SignalError) -> Failure {
        let (exit, kind) = match &e {
            SignalError::Server(ClientError::Server { .. })
            | SignalError::Server(ClientError::Connect { .. })
            | SignalError::Server(ClientError::Url { .. })
            | SignalError::Server(ClientError::Tls(_))
            | SignalError::Server(ClientError::Disconnected { .. })
            | SignalError::NoRoom => (3, "server"),
            SignalError::Server(_) => (3, "server"),
            SignalError::NoSender(_) => (4, "no_sender"),
            SignalError::WrongCode => (4, "wrong_code"),
            _ => (1, "peer"),
        };
        Failure::new(exit, kind, e.to_string())
    }
}

impl From<PeerError> for Failure {
    fn from(e: PeerError) -> Failure {
        Failure::new(5, "connect", e.to_string())
    }
}

impl From<TransferError> for Failure {
    fn from(e: TransferError) -> Failure {
        let (exit, kind) = match &e {
            TransferError::Integrity(_) => (6, "integrity"),
            TransferError::Io(_) | TransferError::Exists(_) => (7, "file"),
            _ => (1, "peer"),
        };
        Failure::new(exit, kind, e.to_string())
    }
}

/// Progress and status output: a bar on a terminal, plain lines otherwise, or JSON lines.
struct Reporter {
    json: bool,
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    last_line: Instant,
    verb: &'static str,
    /// Bytes kept from an interrupted transfer and not moved again.
    resumed: u64,
    /// The path the data takes, as the peer task sees it change ([`Reporter::route_changed`]).
    routes: Option<tokio::sync::watch::Receiver<Route>>,
    /// The path last reported.
    route: Route,
}

fn emit(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn route_json(r: &Route) -> serde_json::Value {
    let mut v = match r {
        Route::Direct { local, remote, .. } => {
            serde_json::json!({"local": local.to_string(), "remote": remote.to_string()})
        }
        Route::Relay {
            relayed,
            server,
            transport,
            remote,
            ..
        } => serde_json::json!({"relayed": relayed.to_string(),
            "turn_server": server.to_string(), "turn_transport": transport.as_str(),
            "remote": remote.to_string()}),
        Route::Unknown => return serde_json::json!({"route": "unknown"}),
    };
    v["route"] = if r.relayed() { "relay" } else { "direct" }.into();
    if let (Some(l), Some(p)) = (r.local_type(), r.remote_type()) {
        v["local_type"] = l.as_str().into();
        v["remote_type"] = p.as_str().into();
    }
    v
}

/// The route for a person: `directly (ADDRESS)`, `through the TURN relay SERVER`, ...
fn how(r: &Route) -> String {
    match r {
        Route::Direct { remote, .. } if r.relayed() => {
            format!("through the peer's TURN relay ({remote})")
        }
        Route::Direct { remote, .. } => format!("directly ({remote})"),
        Route::Relay {
            server, transport, ..
        } => match transport {
            TurnTransport::Udp => format!("through the TURN relay {server}"),
            t => format!("through the TURN relay {server} (over {})", t.as_str()),
        },
        Route::Unknown => "".into(),
    }
}

impl Reporter {
    fn new(json: bool, verb: &'static str) -> Reporter {
        Reporter {
            json,
            bar: None,
            started: Instant::now(),
            last_line: Instant::now(),
            verb,
            resumed: 0,
            routes: None,
            route: Route::Unknown,
        }
    }

    /// Reports a move of the data to another pair after `connected` (ICE moves to a better
    /// pair when its check succeeds: a relay that answered first, then a direct pair): a
    /// `route` event, or a line.
    fn route_changed(&mut self) {
        let Some(now) = self.routes.as_ref().map(|rx| *rx.borrow()) else {
            return;
        };
        if now == Route::Unknown || now == self.route || self.route == Route::Unknown {
            return;
        }
        self.route = now;
        if self.json {
            let mut v = route_json(&now);
            v["event"] = "route".into();
            emit(v);
            return;
        }
        let line = format!("now connected {}", how(&now));
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn note(&self, text: &str) {
        if !self.json {
            eprintln!("{text}");
        }
    }

    fn status(&mut self, s: Status) {
        self.route_changed();
        match s {
            Status::Connected(r) => {
                self.route = r;
                if self.json {
                    let mut v = route_json(&r);
                    v["event"] = "connected".into();
                    emit(v);
                } else {
                    eprintln!("connected {}", how(&r));
                }
                self.route_changed();
            }
            Status::Manifest { files, bytes } => {
                self.started = Instant::now();
                if self.json {
                    emit(serde_json::json!({"event": "manifest", "files": files, "bytes": bytes}));
                    return;
                }
                eprintln!("{} {files} file(s), {}", self.verb, mib(bytes));
                if std::io::stderr().is_terminal() {
                    let bar = indicatif::ProgressBar::new(bytes);
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    self.bar = Some(bar);
                }
            }
            Status::Resume { path, offset, size } => {
                self.resumed += offset;
                if self.json {
                    emit(
                        serde_json::json!({"event": "resume", "path": path, "offset": offset,
                        "size": size}),
                    );
                    return;
                }
                let line = format!("resuming {path} from {} (of {})", mib(offset), mib(size));
                match &self.bar {
                    Some(bar) => {
                        bar.println(line);
                        // What was kept counts as done, but not towards the rate.
                        bar.inc(offset);
                        bar.reset_eta();
                    }
                    None => eprintln!("{line}"),
                }
            }
            Status::Progress { done, total } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(total);
                    bar.set_position(done);
                } else if self.last_line.elapsed() >= Duration::from_secs(1) {
                    self.last_line = Instant::now();
                    let moved = done.saturating_sub(self.resumed);
                    let rate = moved as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
                    if self.json {
                        emit(
                            serde_json::json!({"event": "progress", "done": done, "total": total,
                            "bytes_per_sec": rate.round()}),
                        );
                    } else {
                        eprintln!(
                            "{} of {} ({:.0}%), {}/s",
                            mib(done),
                            mib(total),
                            100.0 * done as f64 / total.max(1) as f64,
                            mib(rate as u64)
                        );
                    }
                }
            }
            Status::File { path, size, sha256 } => {
                if self.json {
                    emit(
                        serde_json::json!({"event": "file", "path": path, "size": size, "sha256": sha256}),
                    );
                } else if let Some(bar) = &self.bar {
                    bar.println(format!("{path} {size} bytes sha256 {sha256}"));
                } else {
                    eprintln!("{path} {size} bytes sha256 {sha256}");
                }
            }
        }
    }

    fn done(&mut self, bytes: u64) {
        self.route_changed();
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let secs = self.started.elapsed().as_secs_f64();
        let rate = bytes as f64 / secs.max(1e-3);
        if self.json {
            let mut v = serde_json::json!({"event": "done", "bytes": bytes, "seconds": secs,
                "bytes_per_sec": rate.round()});
            if self.resumed > 0 {
                v["resumed"] = self.resumed.into();
            }
            emit(v);
        } else {
            let resumed = if self.resumed > 0 {
                format!(", {} resumed", mib(self.resumed))
            } else {
                String::new()
            };
            eprintln!(
                "done: {} in {secs:.1} s ({}/s){resumed}",
                mib(bytes),
                mib(rate as u64)
            );
        }
    }

    fn fail(&mut self, f: &Failure) -> ExitCode {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
        if self.json {
            emit(
                serde_json::json!({"event": "error", "kind": f.kind, "message": f.message,
                "exit": f.exit}),
            );
        }
        eprintln!("switchboard: error: {}", f.message);
        ExitCode::from(f.exit)
    }
}

/// Warnings (and more with `SWITCHBOARD_LOG=debug`) on stderr. Not sctp-proto's by default: it
/// logs a peer's ABORT at the end of a transfer (aiortc closes that way) as an error.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sctp_proto=off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn runtime() -> tokio::runtime::Runtime {
    init_logging();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

impl Common {
    fn config(&self) -> Config {
        let mut c = Config::new(self.server.clone());
        c.token = self.token.clone().filter(|t| !t.is_empty());
        c.name = "switchboard-send".into();
        c.ca_file = self.ca.clone();
        c.insecure = self.insecure;
        c.request_timeout = Duration::from_secs(15);
        c
    }

    async fn peer_config(&self, r: &Reporter) -> PeerConfig {
        // One TLS configuration (--ca, --insecure) for the server's https URL and its turns:
        // servers.
        let tls = ice::client_config(self.ca.as_deref(), self.insecure).map(std::sync::Arc::new);
        let mut servers = match ice::fetch(&self.server, self.token.as_deref(), tls.as_ref()).await
        {
            Ok(s) => s,
            Err(e) => {
                r.note(&format!(
                    "switchboard: warning: no STUN/TURN servers from {}: {e:#}",
                    self.server
                ));
                Vec::new()
            }
        };
        if !self.stun.is_empty() {
            servers.push(IceServer {
                urls: self.stun.clone(),
                ..IceServer::default()
            });
        }
        let tls = match tls {
            Ok(c) => Some(c),
            Err(e) => {
                r.note(&format!("switchboard: warning: no TURN over TLS: {e:#}"));
                None
            }
        };
        PeerConfig {
            ice_servers: servers,
            relay_only: self.relay_only,
            host_ips: self.host_ip.clone(),
            tls,
            ..PeerConfig::default()
        }
    }
}

/// `switchboard send`.
pub fn send(args: SendArgs) -> ExitCode {
    let mut r = Reporter::new(args.common.json, "sending");
    let sources = match files::collect(&args.paths, &args.name) {
        Ok(s) => s,
        Err(e) => return r.fail(&e.into()),
    };
    if args.common.manual {
        return match runtime().block_on(manual::send(&args, sources, &mut r)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => r.fail(&f),
        };
    }
    match runtime().block_on(send_inner(&args, sources, &mut r)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => r.fail(&f),
    }
}

async fn send_inner(
    args: &SendArgs,
    sources: Vec<files::Source>,
    r: &mut Reporter,
) -> Result<(), Failure> {
    let c = &args.common;
    let cfg = c.peer_config(r).await;
    let json = c.json;
    let (session, offer) = signal::sender(c.config(), args.words as usize, |code| {
        if json {
            emit(serde_json::json!({"event": "code", "code": code.to_string()}));
        } else {
            println!("code {code}");
            let _ = std::io::stdout().flush();
            eprintln!("on the other machine: switchboard receive {code}");
        }
    })
    .await?;
    let mut session = session;
    let mut agent = gather(&cfg).await?;
    let answer = agent.accept_offer(&offer)?;
    session.send_answer(&answer).await?;
    r.routes = Some(agent.routes());
    let mut link = agent.start();
    let route = files::opened(&mut link)
        .await
        .map_err(|e| Failure::new(5, "connect", e.to_string()));
    // One pairing per code: the room is left either way.
    session.close().await;
    r.status(Status::Connected(route?));
    send_files(link, sources, r).await
}

/// Once connected: the files go, and the receiver's `K` ends it.
async fn send_files(
    mut link: Link,
    sources: Vec<files::Source>,
    r: &mut Reporter,
) -> Result<(), Failure> {
    let bytes = files::send(&mut link, sources, &mut |s| r.status(s)).await?;
    let _ = link.tx.send(Cmd::Close).await;
    r.done(bytes);
    Ok(())
}

/// `switchboard receive`.
pub fn receive(args: ReceiveArgs) -> ExitCode {
    let mut r = Reporter::new(args.common.json, "receiving");
    if args.common.manual {
        return match manual::receive(&args, &mut r) {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => r.fail(&f),
        };
    }
    let Some(code) = args.code.as_deref() else {
        return r.fail(&Failure::new(
            2,
            "usage",
            "a code is required (or --manual with an offer)",
        ));
    };
    let code = match Code::parse(code) {
        Ok(c) => c,
        Err(e) => return r.fail(&Failure::new(2, "usage", format!("bad code: {e}"))),
    };
    let out = match output(&args, args.stdout.as_deref()) {
        Ok(o) => o,
        Err(f) => return r.fail(&f),
    };
    match runtime().block_on(receive_inner(&args, &code, &out, &mut r)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => r.fail(&f),
    }
}

/// Where to put what is received: `-` is standard output, else `--output`.
fn output(args: &ReceiveArgs, stdout: Option<&str>) -> Result<Output, Failure> {
    Ok(match stdout {
        Some("-") => Output::Stdout,
        Some(other) => {
            return Err(Failure::new(
                2,
                "usage",
                format!("unexpected argument {other:?} (use --output DIR, or - for stdout)"),
            ))
        }
        None => Output::Dir {
            dir: args.output.clone(),
            overwrite: args.overwrite,
            resume: !args.no_resume,
        },
    })
}

async fn receive_inner(
    args: &ReceiveArgs,
    code: &Code,
    out: &Output,
    r: &mut Reporter,
) -> Result<(), Failure> {
    let c = &args.common;
    let cfg = c.peer_config(r).await;
    let mut session = signal::receiver(c.config(), code).await?;
    let mut agent = gather(&cfg).await?;
    let offer = agent.offer()?;
    session.send_offer(&offer).await?;
    let answer = session.answer(Duration::from_secs(60)).await;
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            session.close().await;
            return Err(e.into());
        }
    };
    agent.accept_answer(&answer)?;
    r.routes = Some(agent.routes());
    let mut link = agent.start();
    let route = files::opened(&mut link)
        .await
        .map_err(|e| Failure::new(5, "connect", e.to_string()));
    session.close().await;
    r.status(Status::Connected(route?));
    receive_files(link, out, r).await
}

/// Once connected: the files come in, each kept only when its hashes match.
async fn receive_files(mut link: Link, out: &Output, r: &mut Reporter) -> Result<(), Failure> {
    let bytes = files::receive(&mut link, out, &mut |s| r.status(s)).await?;
    let _ = link.tx.send(Cmd::Close).await;
    r.done(bytes);
    Ok(())
}
