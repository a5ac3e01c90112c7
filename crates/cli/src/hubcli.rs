//! The hub from the command line, through the Rust client (`switchboard_client`):
//! `sub` (publications as JSON lines, recovering across reconnects), `pub` (an argument or stdin
//! lines), `history` and `presence`; with `--api-key` the last three go through the server API.
//!
//! Exit codes: 0 done (for `sub`: stopped by SIGINT/SIGTERM), 1 the server refused or ended the
//! connection for good (its code and reason are printed), 2 bad arguments, 3 the server could
//! not be reached.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use switchboard_client::{proto, Api, Client, ClientError, Config, Event, Position};

/// Flags every hub command takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The server: http://HOST:PORT or https://HOST:PORT (or a ws:// / wss:// URL).
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
    /// Use the server API with this key instead of a client connection (pub, history,
    /// presence).
    #[arg(
        long,
        value_name = "KEY",
        env = "SWITCHBOARD_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// Print JSON (one value per line).
    #[arg(long)]
    json: bool,
    /// Trust this CA certificate (PEM) for https, besides the system's.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Accept any certificate (a self-signed development server).
    #[arg(long)]
    insecure: bool,
}

impl Common {
    fn config(&self) -> Config {
        let mut c = Config::new(self.server.clone());
        c.token = self.token.clone().filter(|t| !t.is_empty());
        c.name = "switchboard-cli".into();
        c.ca_file = self.ca.clone();
        c.insecure = self.insecure;
        c
    }
}

/// `switchboard sub`.
#[derive(Args, Debug)]
pub struct SubArgs {
    /// Channels to subscribe to.
    #[arg(required = true, value_name = "CHANNEL")]
    channels: Vec<String>,
    /// Start after this position (EPOCH:OFFSET, as printed with each publication): the
    /// publications since are printed first.
    #[arg(long, value_name = "EPOCH:OFFSET")]
    since: Option<String>,
    /// Stop after this many publications.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    #[command(flatten)]
    common: Common,
}

/// `switchboard pub`.
#[derive(Args, Debug)]
pub struct PubArgs {
    /// The channel.
    channel: String,
    /// The publication: JSON, or any text (published as a JSON string). Without it, each line
    /// of standard input is one publication.
    data: Option<String>,
    /// Publish the text's bytes as they are, even when they are not JSON.
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    common: Common,
}

/// `switchboard history`.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The channel.
    channel: String,
    /// At most this many publications (0: as many as the server gives).
    #[arg(long, value_name = "N", default_value = "0")]
    limit: u32,
    /// Only those after this position (EPOCH:OFFSET).
    #[arg(long, value_name = "EPOCH:OFFSET")]
    since: Option<String>,
    /// Newest first.
    #[arg(long)]
    reverse: bool,
    #[command(flatten)]
    common: Common,
}

/// `switchboard presence`.
#[derive(Args, Debug)]
pub struct PresenceArgs {
    /// The channel.
    channel: String,
    /// Only the numbers of clients and users.
    #[arg(long)]
    stats: bool,
    #[command(flatten)]
    common: Common,
}

/// Exit codes of the hub commands.
const REFUSED: u8 = 1;
const USAGE: u8 = 2;
const UNREACHABLE: u8 = 3;

fn fail(e: &ClientError) -> ExitCode {
    eprintln!("switchboard: error: {e}");
    if e.code() == Some(103) {
        eprintln!(
            "switchboard: the channel's namespace decides who may read history and presence \
             (often subscribers only); the server API (--api-key) may read them all"
        );
    }
    ExitCode::from(match e {
        ClientError::Url { .. } | ClientError::Tls(_) => USAGE,
        ClientError::Connect { .. } | ClientError::Timeout(_) => UNREACHABLE,
        _ => REFUSED,
    })
}

fn usage(message: String) -> ExitCode {
    eprintln!("switchboard: error: {message}");
    ExitCode::from(USAGE)
}

fn position(flag: &str, value: Option<&str>) -> Result<Option<Position>, ExitCode> {
    match value {
        None => Ok(None),
        Some(v) => Position::parse(v).map(Some).ok_or_else(|| {
            usage(format!(
                "bad value for {flag} {v:?}: expected EPOCH:OFFSET, as printed with each publication"
            ))
        }),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("switchboard: error: cannot start the runtime: {e}");
            std::process::exit(USAGE.into())
        })
}

/// One publication as a JSON line: the protocol's JSON mapping (data as JSON), plus
/// `position` (EPOCH:OFFSET) for `--since`.
fn publication_line(p: &proto::Publication) -> String {
    let mut v: serde_json::Value = switchboard_server_json(p);
    if p.offset > 0 {
        v["position"] = format!("{}:{}", p.epoch, p.offset).into();
    }
    v.to_string()
}

fn switchboard_server_json(p: &proto::Publication) -> serde_json::Value {
    switchboard_client::proto_json::to_string(p)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// `switchboard sub`: prints publications until stopped, recovering after every reconnect.
pub fn sub(args: SubArgs) -> ExitCode {
    let since = match position("--since", args.since.as_deref()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if since.is_some() && args.channels.len() > 1 {
        return usage("--since needs exactly one channel".into());
    }
    runtime().block_on(async move {
        let (client, mut events) = match Client::connect(args.common.config()).await {
            Ok(c) => c,
            Err(e) => return fail(&e),
        };
        for channel in &args.channels {
            if let Err(e) = client.subscribe(channel, since.clone()).await {
                eprintln!("switchboard: error: subscribing to {channel:?}: {e}");
                return fail_code(&e);
            }
        }
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return ExitCode::from(USAGE);
        };
        let mut printed = 0u64;
        let mut out = std::io::stdout();
        loop {
            let event = tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                e = events.recv() => e,
            };
            let Some(event) = event else { break };
            match event {
                Event::Publication(p) => {
                    if writeln!(out, "{}", publication_line(&p))
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        // The reader went away (a closed pipe).
                        break;
                    }
                    printed += 1;
                    if args.count.is_some_and(|n| printed >= n) {
                        break;
                    }
                }
                Event::Disconnected {
                    code,
                    reason,
                    reconnect: true,
                } => eprintln!("switchboard: connection lost ({code} {reason}); reconnecting"),
                Event::Disconnected {
                    code,
                    reason,
                    reconnect: false,
                } => {
                    eprintln!("switchboard: error: disconnected by the server: {code} {reason}");
                    return ExitCode::from(REFUSED);
                }
                Event::Subscribed {
                    channel,
                    was_recovering: true,
                    recovered: false,
                    position,
                } => eprintln!(
                    "switchboard: warning: {channel}: publications were missed that the server no \
                     longer has; continuing from {position}"
                ),
                Event::Unsubscribed {
                    channel,
                    code,
                    reason,
                } => {
                    eprintln!("switchboard: error: unsubscribed from {channel:?}: {code} {reason}");
                    return ExitCode::from(REFUSED);
                }
                _ => {}
            }
        }
        client.close();
        ExitCode::SUCCESS
    })
}

fn fail_code(e: &ClientError) -> ExitCode {
    ExitCode::from(match e {
        ClientError::Connect { .. } | ClientError::Timeout(_) => UNREACHABLE,
        _ => REFUSED,
    })
}

/// The bytes of one publication given on the command line.
fn payload(text: &str, raw: bool) -> Vec<u8> {
    if raw || serde_json::from_str::<serde_json::Value>(text).is_ok() {
        text.as_bytes().to_vec()
    } else {
        serde_json::Value::from(text).to_string().into_bytes()
    }
}

/// `switchboard pub`: one publication, or one per line of standard input.
pub fn publish(args: PubArgs) -> ExitCode {
    let common = args.common.clone();
    runtime().block_on(async move {
        let mut target = match Target::new(&common).await {
            Ok(t) => t,
            Err(e) => return fail(&e),
        };
        let lines: Box<dyn Iterator<Item = std::io::Result<String>>> = match &args.data {
            Some(d) => Box::new(std::iter::once(Ok(d.clone()))),
            None => Box::new(std::io::stdin().lock().lines()),
        };
        for line in lines {
            let line = match line {
                Ok(l) => l,
                Err(e) => return usage(format!("reading standard input: {e}")),
            };
            if args.data.is_none() && line.trim().is_empty() {
                continue;
            }
            let data = payload(&line, args.raw);
            match target.publish(&args.channel, data).await {
                Ok((epoch, offset)) => {
                    if common.json {
                        println!(
                            "{}",
                            serde_json::json!({"channel": args.channel, "epoch": epoch, "offset": offset.to_string()})
                        );
                    } else if offset > 0 {
                        println!("published to {} at {epoch}:{offset}", args.channel);
                    } else {
                        println!("published to {}", args.channel);
                    }
                }
                Err(e) => return fail(&e),
            }
        }
        target.close();
        ExitCode::SUCCESS
    })
}

/// `switchboard history`.
pub fn history(args: HistoryArgs) -> ExitCode {
    let since = match position("--since", args.since.as_deref()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let common = args.common.clone();
    runtime().block_on(async move {
        let mut target = match Target::new(&common).await {
            Ok(t) => t,
            Err(e) => return fail(&e),
        };
        let request = proto::HistoryRequest {
            channel: args.channel.clone(),
            limit: args.limit,
            since: since.map(|p| proto::StreamPosition {
                offset: p.offset,
                epoch: p.epoch,
            }),
            reverse: args.reverse,
        };
        match target.history(request).await {
            Ok(result) => {
                for p in &result.publications {
                    println!("{}", publication_line(p));
                }
                if !common.json {
                    eprintln!(
                        "{} publications; stream at {}:{}",
                        result.publications.len(),
                        result.epoch,
                        result.offset
                    );
                }
                target.close();
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        }
    })
}

/// `switchboard presence`.
pub fn presence(args: PresenceArgs) -> ExitCode {
    let common = args.common.clone();
    runtime().block_on(async move {
        let mut target = match Target::new(&common).await {
            Ok(t) => t,
            Err(e) => return fail(&e),
        };
        let result = if args.stats {
            target.presence_stats(&args.channel).await.map(|s| {
                if common.json {
                    serde_json::json!({"numClients": s.num_clients, "numUsers": s.num_users})
                        .to_string()
                } else {
                    format!("{} clients, {} users", s.num_clients, s.num_users)
                }
            })
        } else {
            target.presence(&args.channel).await.map(|p| {
                if common.json {
                    switchboard_client::proto_json::to_string(&p).unwrap_or_default()
                } else {
                    let mut lines: Vec<String> = p
                        .presence
                        .values()
                        .map(|c| {
                            let user = if c.user.is_empty() {
                                "(anonymous)"
                            } else {
                                &c.user
                            };
                            format!("{} {user}", c.client_id)
                        })
                        .collect();
                    lines.sort();
                    lines.join("\n")
                }
            })
        };
        match result {
            Ok(text) => {
                if !text.is_empty() {
                    println!("{text}");
                }
                target.close();
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        }
    })
}

/// Where `pub`, `history` and `presence` go: a client connection, or the server API.
enum Target {
    Client(Client),
    Api(Api),
}

impl Target {
    async fn new(common: &Common) -> Result<Target, ClientError> {
        let config = common.config();
        match common.api_key.as_deref().filter(|k| !k.is_empty()) {
            Some(key) => Ok(Target::Api(Api::new(&config, key)?)),
            None => Ok(Target::Client(Client::connect(config).await?.0)),
        }
    }

    fn close(&mut self) {
        if let Target::Client(c) = self {
            c.close();
        }
    }

    async fn publish(
        &mut self,
        channel: &str,
        data: Vec<u8>,
    ) -> Result<(String, u64), ClientError> {
        match self {
            Target::Client(c) => c.publish(channel, data).await.map(|r| (r.epoch, r.offset)),
            Target::Api(api) => {
                let data: serde_json::Value = serde_json::from_slice(&data).map_err(|_| {
                    ClientError::Protocol("the server API publishes JSON only (drop --raw)".into())
                })?;
                let r = api
                    .call(
                        "publish",
                        &serde_json::json!({"channel": channel, "data": data}),
                    )
                    .await?;
                let offset = r["offset"]
                    .as_str()
                    .and_then(|o| o.parse().ok())
                    .or_else(|| r["offset"].as_u64())
                    .unwrap_or(0);
                Ok((r["epoch"].as_str().unwrap_or("").to_owned(), offset))
            }
        }
    }

    async fn history(
        &mut self,
        request: proto::HistoryRequest,
    ) -> Result<proto::HistoryResult, ClientError> {
        match self {
            Target::Client(c) => c.history(request).await,
            Target::Api(api) => {
                let body = switchboard_client::proto_json::to_string(&request)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                let body: serde_json::Value = serde_json::from_str(&body)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                let r = api.call("history", &body).await?;
                switchboard_client::proto_json::from_str(&r.to_string())
                    .map_err(|e| ClientError::Protocol(format!("history answer: {e}")))
            }
        }
    }

    async fn presence(&mut self, channel: &str) -> Result<proto::PresenceResult, ClientError> {
        match self {
            Target::Client(c) => c.presence(channel).await,
            Target::Api(api) => {
                let r = api
                    .call("presence", &serde_json::json!({"channel": channel}))
                    .await?;
                switchboard_client::proto_json::from_str(&r.to_string())
                    .map_err(|e| ClientError::Protocol(format!("presence answer: {e}")))
            }
        }
    }

    async fn presence_stats(
        &mut self,
        channel: &str,
    ) -> Result<proto::PresenceStatsResult, ClientError> {
        match self {
            Target::Client(c) => c.presence_stats(channel).await,
            Target::Api(api) => {
                let r = api
                    .call("presence_stats", &serde_json::json!({"channel": channel}))
                    .await?;
                switchboard_client::proto_json::from_str(&r.to_string())
                    .map_err(|e| ClientError::Protocol(format!("presence stats answer: {e}")))
            }
        }
    }
}
