//! What a probe found, as plain data: serialized as-is for `--json` (the schema in
//! docs/probe.md) and rendered as text lines and a waterfall for the terminal.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;

/// `ok`, `warning` (works, with something worth knowing) or `broken`.
#[derive(Serialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Broken,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Broken => "BROKEN",
        }
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct Verdict {
    pub level: Level,
    pub message: String,
}

/// One failed step: which one and why.
#[derive(Serialize, Clone, Debug)]
pub struct StepError {
    /// `dns`, `connect`, `tls`, `request`, `binding`, `allocate`, `permission`, `echo`, ...
    pub stage: &'static str,
    pub message: String,
    /// True when the step ran out of time (rather than being refused or failing).
    pub timeout: bool,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Dns {
    pub host: String,
    /// Resolution time; 0 for an IP literal.
    pub ms: f64,
    /// Every address, in the resolver's order.
    pub addresses: Vec<String>,
    /// True when the host was an IP literal (nothing resolved).
    pub literal: bool,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Tls {
    pub handshake_ms: f64,
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: Option<String>,
    /// IANA name, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: Option<String>,
    /// e.g. `X25519MLKEM768`, `X25519`, `secp256r1`.
    pub key_exchange_group: Option<String>,
    /// Negotiated ALPN protocol (`h2`, `http/1.1`, `h3`, `stun.turn`).
    pub alpn: Option<String>,
    /// `full`, `full-with-hello-retry` or `resumed`; null where the TLS stack does not tell
    /// (QUIC).
    pub handshake_kind: Option<String>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Request {
    /// `http/1.1`, `h2` or `h3`.
    pub protocol: String,
    pub status: Option<u16>,
    /// Request sent to response headers received.
    pub ttfb_ms: Option<f64>,
    /// Request sent to the last body byte.
    pub total_ms: Option<f64>,
    pub body_bytes: Option<u64>,
    pub server: Option<String>,
    pub alt_svc: Option<String>,
}

#[derive(Serialize, Clone, Debug)]
pub struct EarlyData {
    /// The session ticket allowed early data (TLS 1.3 max_early_data_size > 0, or a QUIC
    /// ticket usable for 0-RTT).
    pub offered: bool,
    /// The request went out as early data (h3 only: the probe sends no TLS early data over
    /// TCP).
    pub attempted: bool,
    /// The server accepted it.
    pub accepted: bool,
}

#[derive(Serialize, Clone, Debug)]
pub struct Migration {
    pub from: String,
    pub to: String,
    /// A request on the same connection succeeded after the client's UDP port changed.
    pub ok: bool,
    pub status: Option<u16>,
    pub ms: Option<f64>,
    pub error: Option<String>,
}

/// One connection to an HTTP target.
#[derive(Serialize, Clone, Debug)]
pub struct Connection {
    /// `primary`, `http/1.1`, `h2c`, `resumption`, `h3`, `h3-0rtt`.
    pub purpose: String,
    /// `tcp` or `quic`.
    pub transport: &'static str,
    pub remote: String,
    pub local: Option<String>,
    /// TCP connect time (null for QUIC).
    pub connect_ms: Option<f64>,
    pub tls: Option<Tls>,
    /// QUIC's own smoothed RTT estimate after the exchange.
    pub quic_rtt_ms: Option<f64>,
    pub early_data: Option<EarlyData>,
    pub request: Option<Request>,
    pub migration: Option<Migration>,
    pub error: Option<StepError>,
    /// Offsets from the start of this connection (for the waterfall; not in the JSON).
    #[serde(skip)]
    pub phases: Vec<(&'static str, Duration, Duration)>,
}

impl Connection {
    pub fn new(purpose: &str, transport: &'static str, remote: String) -> Self {
        Connection {
            purpose: purpose.to_string(),
            transport,
            remote,
            local: None,
            connect_ms: None,
            tls: None,
            quic_rtt_ms: None,
            early_data: None,
            request: None,
            migration: None,
            error: None,
            phases: Vec::new(),
        }
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct Cert {
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    /// Whole days until `not_after` (negative once expired).
    pub days_left: i64,
    pub sans: Vec<String>,
    pub key: String,
    pub signature: String,
}

#[derive(Serialize, Clone, Debug)]
pub struct Certificate {
    /// Verified against `roots` for the URL's host.
    pub verified: bool,
    pub verify_error: Option<String>,
    /// `system` or the `--ca` file.
    pub roots: String,
    /// Leaf first, as the server sent it.
    pub chain: Vec<Cert>,
}

#[derive(Serialize, Clone, Debug)]
pub struct H3 {
    /// The `Alt-Svc` value that advertised h3, if any.
    pub advertised: Option<String>,
    /// `--h3` asked for it without an advertisement.
    pub forced: bool,
    pub address: String,
}

/// One protocol of `--compare`.
#[derive(Serialize, Clone, Debug)]
pub struct Compare {
    /// `http/1.1`, `h2` or `h3`.
    pub protocol: String,
    /// Connections used (HTTP/1.1: up to 6; h2, h3: 1).
    pub connections: usize,
    /// Requests per round, all started at once.
    pub parallel: usize,
    /// Rounds that completed without an error.
    pub rounds: u32,
    /// Round times (first request sent to last response complete), in completion order.
    pub samples_ms: Vec<f64>,
    pub median_ms: Option<f64>,
    pub min_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Each request's own time (round start to its last byte), over every round: what
    /// head-of-line blocking delays.
    pub request_median_ms: Option<f64>,
    pub request_p90_ms: Option<f64>,
    /// Rounds with a failed or timed-out request.
    pub errors: u32,
    /// The protocol could not be used at all.
    pub error: Option<String>,
}

/// An HTTP(S) target's findings.
#[derive(Serialize, Clone, Debug, Default)]
pub struct HttpReport {
    pub dns: Option<Dns>,
    pub certificate: Option<Certificate>,
    pub connections: Vec<Connection>,
    pub h3: Option<H3>,
    /// `--compare` results (absent without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<Vec<Compare>>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Binding {
    /// Median round-trip time over the answered requests.
    pub rtt_ms: f64,
    pub rtts_ms: Vec<f64>,
    /// Requests sent, including retransmissions.
    pub requests: u32,
    pub mapped_address: Option<String>,
    /// RFC 5780 OTHER-ADDRESS (the server's second address and port).
    pub other_address: Option<String>,
    pub response_origin: Option<String>,
    /// The server gave an OTHER-ADDRESS: it supports RFC 5780 behaviour discovery.
    pub rfc5780: bool,
    pub software: Option<String>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Echo {
    pub sent: u32,
    pub received: u32,
    /// Median client → relay → peer → relay → client time.
    pub rtt_ms: Option<f64>,
    pub rtts_ms: Vec<f64>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Turn {
    pub realm: Option<String>,
    /// Both Allocate transactions (the 401 challenge and the authenticated one).
    pub allocate_ms: Option<f64>,
    pub relayed_address: Option<String>,
    pub mapped_address: Option<String>,
    pub lifetime_s: Option<u32>,
    /// The probe's own UDP peer, as the relay sees it.
    pub peer_address: Option<String>,
    pub permission_ms: Option<f64>,
    pub echo: Option<Echo>,
}

/// One transport of a STUN/TURN target.
#[derive(Serialize, Clone, Debug)]
pub struct StunTransport {
    /// `udp`, `tcp` or `tls`.
    pub transport: &'static str,
    pub server: String,
    pub local: Option<String>,
    pub connect_ms: Option<f64>,
    pub tls: Option<Tls>,
    pub binding: Option<Binding>,
    pub turn: Option<Turn>,
    pub error: Option<StepError>,
    /// The URL named this transport (a failure is then broken, not a warning).
    #[serde(skip)]
    pub explicit: bool,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct StunReport {
    pub dns: Option<Dns>,
    pub certificate: Option<Certificate>,
    pub transports: Vec<StunTransport>,
    /// `switchboard nat-check`'s JSON object, with `--nat`.
    pub nat: Option<serde_json::Value>,
}

#[derive(Serialize, Clone, Debug)]
pub struct Target {
    pub url: String,
    /// `http`, `stun` or `turn`.
    pub kind: &'static str,
    pub status: Level,
    pub verdicts: Vec<Verdict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stun: Option<StunReport>,
    /// The whole target failed before any step (bad URL, ...).
    pub error: Option<StepError>,
}

impl Target {
    pub fn new(url: &str, kind: &'static str) -> Self {
        Target {
            url: url.to_string(),
            kind,
            status: Level::Ok,
            verdicts: Vec::new(),
            http: None,
            stun: None,
            error: None,
        }
    }

    pub fn verdict(&mut self, level: Level, message: impl Into<String>) {
        self.status = self.status.max(level);
        self.verdicts.push(Verdict {
            level,
            message: message.into(),
        });
    }
}

pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    Some(s[s.len() / 2])
}

fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

fn fmt_ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0} ms"),
        Some(v) if v < 1.0 => format!("{v:.2} ms"),
        Some(v) => format!("{v:.1} ms"),
        None => "-".into(),
    }
}

const W: usize = 12;

/// The terminal view of one target.
pub fn write_text(out: &mut impl Write, t: &Target) -> std::io::Result<()> {
    writeln!(out, "{}", t.url)?;
    if let Some(e) = &t.error {
        writeln!(out, "  {:<W$} {}", "error", e.message)?;
    }
    if let Some(h) = &t.http {
        write_http(out, h)?;
    }
    if let Some(s) = &t.stun {
        write_stun(out, s)?;
    }
    for v in &t.verdicts {
        writeln!(
            out,
            "  {:<W$} {}: {}",
            "verdict",
            v.level.as_str(),
            v.message
        )?;
    }
    Ok(())
}

fn write_dns(out: &mut impl Write, d: &Dns) -> std::io::Result<()> {
    if d.literal {
        writeln!(out, "  {:<W$} {} (IP literal, no lookup)", "dns", d.host)
    } else {
        writeln!(
            out,
            "  {:<W$} {} -> {} in {}",
            "dns",
            d.host,
            if d.addresses.is_empty() {
                "nothing".to_string()
            } else {
                d.addresses.join(", ")
            },
            fmt_ms(Some(d.ms))
        )
    }?;
    Ok(())
}

fn tls_line(t: &Tls) -> String {
    let mut s = format!(
        "{} {} {} alpn {} in {}",
        opt(&t.version),
        opt(&t.cipher_suite),
        opt(&t.key_exchange_group),
        opt(&t.alpn),
        fmt_ms(Some(t.handshake_ms))
    );
    if let Some(k) = &t.handshake_kind {
        s.push_str(&format!(" ({k})"));
    }
    s
}

fn write_cert(out: &mut impl Write, c: &Certificate) -> std::io::Result<()> {
    for (i, cert) in c.chain.iter().enumerate() {
        writeln!(
            out,
            "  {:<W$} [{i}] {} (issuer {}; {}; {})",
            "certificate", cert.subject, cert.issuer, cert.key, cert.signature
        )?;
        writeln!(
            out,
            "  {:<W$}     valid {} .. {} ({} days left){}",
            "",
            cert.not_before,
            cert.not_after,
            cert.days_left,
            if cert.sans.is_empty() {
                String::new()
            } else {
                format!("; SANs {}", cert.sans.join(", "))
            }
        )?;
    }
    match &c.verify_error {
        None => writeln!(out, "  {:<W$} ok (roots: {})", "verified", c.roots),
        Some(e) => writeln!(out, "  {:<W$} no: {e} (roots: {})", "verified", c.roots),
    }
}

fn write_http(out: &mut impl Write, h: &HttpReport) -> std::io::Result<()> {
    if let Some(d) = &h.dns {
        write_dns(out, d)?;
    }
    for (i, c) in h.connections.iter().enumerate() {
        writeln!(
            out,
            "  {:<W$} {} over {} to {}{}",
            "connection",
            c.purpose,
            c.transport,
            c.remote,
            c.local
                .as_ref()
                .map(|l| format!(" from {l}"))
                .unwrap_or_default()
        )?;
        if let Some(v) = c.connect_ms {
            writeln!(out, "  {:<W$} {}", "  tcp", fmt_ms(Some(v)))?;
        }
        if let Some(t) = &c.tls {
            writeln!(
                out,
                "  {:<W$} {}",
                if c.transport == "quic" {
                    "  quic"
                } else {
                    "  tls"
                },
                tls_line(t)
            )?;
        }
        if i == 0 {
            if let Some(cert) = &h.certificate {
                write_cert(out, cert)?;
            }
        }
        if let Some(e) = &c.early_data {
            writeln!(
                out,
                "  {:<W$} {}",
                "  early data",
                match (e.offered, e.accepted) {
                    (false, _) => "not offered by the server's ticket",
                    (true, true) => "offered and accepted",
                    (true, false) => "offered, but rejected",
                }
            )?;
        }
        if let Some(r) = &c.request {
            writeln!(
                out,
                "  {:<W$} GET status {} ttfb {} total {} ({} bytes){}",
                format!("  {}", r.protocol),
                r.status.map(|s| s.to_string()).unwrap_or("-".into()),
                fmt_ms(r.ttfb_ms),
                fmt_ms(r.total_ms),
                r.body_bytes.unwrap_or(0),
                r.alt_svc
                    .as_ref()
                    .map(|a| format!("; alt-svc {a}"))
                    .unwrap_or_default()
            )?;
        }
        if let Some(rtt) = c.quic_rtt_ms {
            writeln!(out, "  {:<W$} {}", "  quic rtt", fmt_ms(Some(rtt)))?;
        }
        if let Some(m) = &c.migration {
            writeln!(
                out,
                "  {:<W$} {} -> {}: {}",
                "  migration",
                m.from,
                m.to,
                if m.ok {
                    format!(
                        "status {} in {} on the same connection",
                        m.status.unwrap_or(0),
                        fmt_ms(m.ms)
                    )
                } else {
                    format!("failed: {}", m.error.as_deref().unwrap_or("?"))
                }
            )?;
        }
        if let Some(e) = &c.error {
            writeln!(out, "  {:<W$} {}: {}", "  error", e.stage, e.message)?;
        }
    }
    write_waterfall(out, &h.connections)?;
    if let Some(rows) = &h.compare {
        writeln!(
            out,
            "  {:<W$} {:<9} {:>5} {:>8} {:>6} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12}",
            "compare",
            "protocol",
            "conns",
            "parallel",
            "rounds",
            "median",
            "min",
            "p90",
            "max",
            "req median",
            "req p90"
        )?;
        for r in rows {
            match &r.error {
                Some(e) => writeln!(out, "  {:<W$} {:<9} not usable: {e}", "", r.protocol)?,
                None => writeln!(
                    out,
                    "  {:<W$} {:<9} {:>5} {:>8} {:>6} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12}{}",
                    "",
                    r.protocol,
                    r.connections,
                    r.parallel,
                    r.rounds,
                    fmt_ms(r.median_ms),
                    fmt_ms(r.min_ms),
                    fmt_ms(r.p90_ms),
                    fmt_ms(r.max_ms),
                    fmt_ms(r.request_median_ms),
                    fmt_ms(r.request_p90_ms),
                    if r.errors > 0 {
                        format!(" ({} rounds failed)", r.errors)
                    } else {
                        String::new()
                    }
                )?,
            }
        }
    }
    Ok(())
}

/// One bar per phase of every connection, on one time scale.
fn write_waterfall(out: &mut impl Write, conns: &[Connection]) -> std::io::Result<()> {
    let end = conns
        .iter()
        .flat_map(|c| c.phases.iter().map(|(_, s, d)| *s + *d))
        .max()
        .unwrap_or_default();
    if end.is_zero() {
        return Ok(());
    }
    const COLS: usize = 50;
    let scale = end.as_secs_f64() / COLS as f64;
    writeln!(
        out,
        "  {:<W$} {:<24} 0{:>width$}",
        "waterfall",
        "",
        format!("{:.1} ms", ms(end)),
        width = COLS
    )?;
    for c in conns {
        for (name, start, dur) in &c.phases {
            let a = (start.as_secs_f64() / scale).floor() as usize;
            let b = (((*start + *dur).as_secs_f64() / scale).ceil() as usize).max(a + 1);
            let bar: String = (0..COLS.max(b))
                .map(|i| if i >= a && i < b { '#' } else { ' ' })
                .collect();
            writeln!(
                out,
                "  {:<W$} {:<24}|{}| {}",
                "",
                format!("{} {}", c.purpose, name),
                bar.trim_end(),
                fmt_ms(Some(ms(*dur)))
            )?;
        }
    }
    Ok(())
}

fn write_stun(out: &mut impl Write, s: &StunReport) -> std::io::Result<()> {
    if let Some(d) = &s.dns {
        write_dns(out, d)?;
    }
    if let Some(c) = &s.certificate {
        write_cert(out, c)?;
    }
    for t in &s.transports {
        writeln!(
            out,
            "  {:<W$} {} to {}{}",
            "transport",
            t.transport,
            t.server,
            t.local
                .as_ref()
                .map(|l| format!(" from {l}"))
                .unwrap_or_default()
        )?;
        if let Some(v) = t.connect_ms {
            writeln!(out, "  {:<W$} {}", "  tcp", fmt_ms(Some(v)))?;
        }
        if let Some(tls) = &t.tls {
            writeln!(out, "  {:<W$} {}", "  tls", tls_line(tls))?;
        }
        if let Some(b) = &t.binding {
            writeln!(
                out,
                "  {:<W$} rtt {} (of {:?} ms); mapped {}; RFC 5780 {}{}",
                "  binding",
                fmt_ms(Some(b.rtt_ms)),
                b.rtts_ms,
                opt(&b.mapped_address),
                if b.rfc5780 {
                    format!("yes (other address {})", opt(&b.other_address))
                } else {
                    "no".to_string()
                },
                b.software
                    .as_ref()
                    .map(|s| format!("; software {s}"))
                    .unwrap_or_default()
            )?;
        }
        if let Some(turn) = &t.turn {
            if turn.relayed_address.is_some() {
                writeln!(
                    out,
                    "  {:<W$} relayed {} (mapped {}; lifetime {} s; realm {}) in {}",
                    "  allocate",
                    opt(&turn.relayed_address),
                    opt(&turn.mapped_address),
                    turn.lifetime_s.unwrap_or(0),
                    opt(&turn.realm),
                    fmt_ms(turn.allocate_ms)
                )?;
            }
            if turn.permission_ms.is_some() {
                writeln!(
                    out,
                    "  {:<W$} for peer {} in {}",
                    "  permission",
                    opt(&turn.peer_address),
                    fmt_ms(turn.permission_ms)
                )?;
            }
            if let Some(e) = &turn.echo {
                writeln!(
                    out,
                    "  {:<W$} {}/{} echoed through the relay; rtt {} (of {:?} ms)",
                    "  relay echo",
                    e.received,
                    e.sent,
                    fmt_ms(e.rtt_ms),
                    e.rtts_ms
                )?;
            }
        }
        if let Some(e) = &t.error {
            writeln!(out, "  {:<W$} {}: {}", "  error", e.stage, e.message)?;
        }
    }
    if let Some(n) = &s.nat {
        let line = match n.get("status").and_then(|s| s.as_str()) {
            Some("ok") => format!(
                "{} ({}; public address {})",
                n["nat_type"].as_str().unwrap_or("?"),
                n["verdict"].as_str().unwrap_or(""),
                n["public_address"].as_str().unwrap_or("?")
            ),
            _ => n["error"].as_str().unwrap_or("unknown").to_string(),
        };
        writeln!(out, "  {:<W$} {line}", "nat type")?;
    }
    Ok(())
}
