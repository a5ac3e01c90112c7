//! `switchboard probe URL...`: what happens on the wire, from DNS to HTTP/3 and TURN, measured.
//!
//! * `https://` and `http://`: DNS (time, every address), TCP connect, TLS (version, cipher
//!   suite, key-exchange group, ALPN, certificate chain and its verification), a GET over
//!   HTTP/1.1 and h2 (time to first byte, total), session resumption on a second connection,
//!   h3 over QUIC when `Alt-Svc` advertises it (or `--h3`), with 0-RTT on a second connection
//!   and a connection migration (a new client UDP port mid-connection); a waterfall.
//! * `stun:`/`stuns:`: Binding RTT per transport, mapped address, RFC 5780 support; `--nat`:
//!   the `nat-check` NAT type.
//! * `turn:`/`turns:`: the same, then Allocate, CreatePermission and echoes through the relay to
//!   a UDP peer the probe runs itself (the relay RTT).
//! * `--ice BASE_URL`: every server of BASE_URL's `/v1/ice-servers`, with its credentials.
//! * `--compare`: the same GET over HTTP/1.1, h2 and h3 on warm connections, repeated, with
//!   medians and spread (head-of-line blocking under loss shows there).
//!
//! Every step runs under `--timeout`. One verdict per target; exit 1 when something is broken.
//! The `--json` schema is in docs/probe.md.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;

mod compare;
mod http;
mod report;
mod stun;
mod tls;

use report::{Level, Target};

/// Exit code when at least one target is broken.
pub const EXIT_BROKEN: u8 = 1;

/// Flags of `switchboard probe`.
#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// Targets: https://HOST[:PORT]/PATH, http://..., stun:HOST[:PORT][?transport=udp|tcp],
    /// stuns:HOST[:PORT], turn:HOST[:PORT][?transport=udp|tcp], turns:HOST[:PORT].
    #[arg(value_name = "URL")]
    urls: Vec<String>,
    /// Print one JSON object (schema: docs/probe.md) instead of text.
    #[arg(long)]
    json: bool,
    /// Seconds each step may take (DNS, connect, handshake, response, STUN transaction).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    timeout: f64,
    /// Trust these PEM certificates instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Go on when the certificate does not verify (the failure is still reported).
    #[arg(long)]
    insecure: bool,
    /// Try h3 (QUIC on the URL's port) even without an Alt-Svc advertisement.
    #[arg(long)]
    h3: bool,
    /// TURN user name (with --password) for turn:/turns: URLs.
    #[arg(long, value_name = "NAME", requires = "password")]
    user: Option<String>,
    /// TURN password.
    #[arg(long, value_name = "PW", requires = "user")]
    password: Option<String>,
    /// A switchboard base URL: probe every server of its /v1/ice-servers, with the
    /// credentials it hands out.
    #[arg(long, value_name = "BASE_URL")]
    ice: Option<String>,
    /// Hub token for --ice (when the server requires one).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Also classify the NAT in front of this host against stun:/turn: UDP servers (RFC 5780,
    /// as `switchboard nat-check`).
    #[arg(long)]
    nat: bool,
    /// For https:// URLs: the same GET over HTTP/1.1, h2 and h3 on warm connections, --repeat
    /// rounds of --parallel requests, with median, min, p90 and max.
    #[arg(long)]
    compare: bool,
    /// Rounds for --compare.
    #[arg(long, value_name = "N", default_value_t = 10, requires = "compare")]
    repeat: u32,
    /// Requests per round for --compare, all started at once (a page of many resources).
    #[arg(long, value_name = "K", default_value_t = 1, requires = "compare")]
    parallel: usize,
}

/// What every probe needs.
pub struct Ctx {
    pub timeout: Duration,
    pub verifier: Arc<tls::Verifier>,
    pub insecure: bool,
    pub force_h3: bool,
    pub nat: bool,
    pub compare: bool,
    pub repeat: u32,
    pub parallel: usize,
}

/// Runs the subcommand: 0 all fine (warnings allowed), 1 something broken, 2 usage or local
/// error.
pub fn run(args: ProbeArgs) -> ExitCode {
    match probe_all(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn probe_all(args: &ProbeArgs) -> anyhow::Result<ExitCode> {
    if args.urls.is_empty() && args.ice.is_none() {
        bail!("nothing to probe: give URLs or --ice BASE_URL");
    }
    if args.repeat == 0 || args.repeat > 10_000 || args.parallel == 0 || args.parallel > 1000 {
        bail!("--repeat must be 1..=10000 and --parallel 1..=1000");
    }
    if !(args.timeout > 0.0 && args.timeout <= 600.0) {
        bail!("--timeout must be between 0 and 600 seconds");
    }
    let provider = tls::provider();
    let ctx = Ctx {
        timeout: Duration::from_secs_f64(args.timeout),
        verifier: tls::Verifier::new(args.ca.as_deref(), provider)?,
        insecure: args.insecure,
        force_h3: args.h3,
        nat: args.nat,
        compare: args.compare,
        repeat: args.repeat,
        parallel: args.parallel,
    };
    let creds = args.user.clone().zip(args.password.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let targets = rt.block_on(async {
        let mut jobs: Vec<(String, Option<(String, String)>)> = args
            .urls
            .iter()
            .map(|u| (u.clone(), creds.clone()))
            .collect();
        let mut targets = Vec::new();
        if let Some(base) = &args.ice {
            match ice_servers(base, args.token.as_deref(), &ctx).await {
                Ok(list) => jobs.extend(list),
                Err(e) => {
                    let mut t = Target::new(base, "ice");
                    t.error = Some(report::StepError {
                        stage: "ice-servers",
                        message: format!("{e:#}"),
                        timeout: false,
                    });
                    t.verdict(Level::Broken, format!("cannot get /v1/ice-servers: {e:#}"));
                    targets.push(t);
                }
            }
        }
        for (url, creds) in jobs {
            let lower = url.to_ascii_lowercase();
            let t = if lower.starts_with("http://") || lower.starts_with("https://") {
                let (mut t, compare) = http::probe(&url, &ctx).await;
                if let (Some(c), Some(report)) = (compare, t.http.as_mut()) {
                    report.compare = Some(compare::run(&c.parsed, c.addr, c.h3, &ctx).await);
                }
                t
            } else {
                stun::probe(&url, &ctx, creds.as_ref()).await
            };
            targets.push(t);
        }
        targets
    });
    // DNS lookups that timed out may still sit in blocking threads: do not wait for them.
    rt.shutdown_timeout(Duration::from_millis(100));

    let broken = targets.iter().any(|t| t.status == Level::Broken);
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({
            "version": 1,
            "status": targets.iter().map(|t| t.status).max().unwrap_or(Level::Ok),
            "targets": targets,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        for (i, t) in targets.iter().enumerate() {
            if i > 0 {
                writeln!(out)?;
            }
            report::write_text(&mut out, t)?;
        }
    }
    out.flush()?;
    Ok(if broken {
        ExitCode::from(EXIT_BROKEN)
    } else {
        ExitCode::SUCCESS
    })
}

/// GET BASE_URL/v1/ice-servers: every URL with the credentials of its entry.
async fn ice_servers(
    base: &str,
    token: Option<&str>,
    ctx: &Ctx,
) -> anyhow::Result<Vec<(String, Option<(String, String)>)>> {
    let mut url = format!("{}/v1/ice-servers", base.trim_end_matches('/'));
    if let Some(t) = token {
        url.push_str("?token=");
        url.push_str(t);
    }
    let body = http::fetch(&url, ctx).await?;
    let v: serde_json::Value =
        serde_json::from_slice(&body).context("/v1/ice-servers is not JSON")?;
    let servers = v["iceServers"]
        .as_array()
        .ok_or_else(|| anyhow!("no iceServers in the answer"))?;
    let mut out = Vec::new();
    for s in servers {
        let creds = s["username"]
            .as_str()
            .zip(s["credential"].as_str())
            .map(|(u, p)| (u.to_string(), p.to_string()));
        let urls: Vec<String> = match &s["urls"] {
            serde_json::Value::String(u) => vec![u.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        for u in urls {
            out.push((u, creds.clone()));
        }
    }
    if out.is_empty() {
        bail!("/v1/ice-servers lists no server");
    }
    Ok(out)
}
