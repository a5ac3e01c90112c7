//! `switchboard nat-check`: RFC 5780 NAT behaviour discovery over real UDP sockets.
//!
//! The protocol lives in the sans-IO `switchboard-nat` crate; this module only resolves the
//! server, binds two sockets, shuttles datagrams and timeouts, and prints the report.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::json;
use switchboard_nat::{Config, NatDiscovery, NatType, Outcome, Path, Report, Socket};

/// Exit code when the server does not answer.
pub const EXIT_NO_ANSWER: u8 = 3;
/// Exit code when the server answers without OTHER-ADDRESS (no RFC 5780).
pub const EXIT_NOT_RFC5780: u8 = 4;
/// Exit code when the server answers test I with an error response.
pub const EXIT_SERVER_ERROR: u8 = 5;

const DEFAULT_PORT: u16 = 3478;

/// Flags of `switchboard nat-check`.
#[derive(Args, Debug)]
pub struct NatCheckArgs {
    /// STUN server with RFC 5780 support (started with --alt-address): HOST or HOST:PORT;
    /// HOST may be a name. Default port 3478.
    #[arg(long, value_name = "HOST[:PORT]", default_value = "127.0.0.1:3478")]
    server: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Local IP or IP:PORT to send from (default: the source address of the route to the server).
    #[arg(long, value_name = "ADDR")]
    local: Option<String>,
    /// Initial retransmission timeout in milliseconds (doubles after each retransmission).
    #[arg(long, value_name = "N", default_value_t = 250)]
    rto_ms: u64,
    /// Retransmissions per request before a test counts as unanswered (RFC 8489 Rc − 1).
    #[arg(long, value_name = "N", default_value_t = 4)]
    retries: u32,
}

/// Runs the subcommand; the exit code says how it went (0 classified, 2 usage or local error,
/// 3 no answer, 4 server without RFC 5780, 5 error response).
pub fn run(args: NatCheckArgs) -> ExitCode {
    match check(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn check(args: &NatCheckArgs) -> anyhow::Result<ExitCode> {
    if args.rto_ms == 0 {
        bail!("--rto-ms must be at least 1");
    }
    if args.retries > 15 {
        bail!("--retries must be at most 15");
    }
    let local = args.local.as_deref().map(parse_local).transpose()?;
    let server = resolve_server(&args.server, local.map(|l| l.ip()))?;
    let (primary, secondary) = bind(server, local)?;
    let mut config = Config::new(server, primary.local_addr()?, secondary.local_addr()?);
    config.rto = Duration::from_millis(args.rto_ms);
    config.max_requests = args.retries + 1;

    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(drive(config.clone(), primary, secondary))?;

    let mut out = std::io::stdout().lock();
    let code = match outcome {
        Outcome::Complete(report) => {
            if args.json {
                writeln!(out, "{}", report_json(&report))?;
            } else {
                write_report(&mut out, &report)?;
            }
            ExitCode::SUCCESS
        }
        Outcome::NoAnswer { server } => {
            let msg = format!(
                "no answer from {server} (tried {} times over {:.1} s): the server is down, the \
                 address is wrong, or UDP is blocked",
                config.max_requests,
                config.transaction_timeout().as_secs_f64()
            );
            if args.json {
                let v = json!({
                    "status": "no-answer",
                    "server": server.to_string(),
                    "local_address": config.primary.to_string(),
                    "error": msg,
                });
                writeln!(out, "{v}")?;
            } else {
                eprintln!("switchboard: {msg}");
            }
            ExitCode::from(EXIT_NO_ANSWER)
        }
        Outcome::NotRfc5780 {
            server,
            local,
            mapped,
        } => {
            let msg = format!(
                "{server} answered without OTHER-ADDRESS: it does not support RFC 5780 NAT \
                 behaviour discovery (a switchboard server needs --alt-address); only the public \
                 address is known"
            );
            if args.json {
                let v = json!({
                    "status": "no-rfc5780",
                    "server": server.to_string(),
                    "local_address": local.to_string(),
                    "public_address": mapped.to_string(),
                    "nat": local != mapped,
                    "error": msg,
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "{:<15} {mapped}", "public address")?;
                writeln!(
                    out,
                    "{:<15} {}",
                    "NAT",
                    if local == mapped { "none" } else { "yes" }
                )?;
                eprintln!("switchboard: {msg}");
            }
            ExitCode::from(EXIT_NOT_RFC5780)
        }
        Outcome::ServerError { server, code } => {
            let msg = format!("{server} answered the Binding request with error {code}");
            if args.json {
                let v = json!({
                    "status": "server-error",
                    "server": server.to_string(),
                    "code": code,
                    "error": msg,
                });
                writeln!(out, "{v}")?;
            } else {
                eprintln!("switchboard: {msg}");
            }
            ExitCode::from(EXIT_SERVER_ERROR)
        }
    };
    out.flush()?;
    Ok(code)
}

/// The I/O shell around the state machine: two sockets, one timer.
async fn drive(
    config: Config,
    primary: UdpSocket,
    secondary: UdpSocket,
) -> anyhow::Result<Outcome> {
    let primary = tokio::net::UdpSocket::from_std(primary)?;
    let secondary = tokio::net::UdpSocket::from_std(secondary)?;
    let seed = RandomState::new().hash_one((std::process::id(), Instant::now()));
    let mut nat = NatDiscovery::new(config, Instant::now(), seed);
    let mut b0 = vec![0u8; 2048];
    let mut b1 = vec![0u8; 2048];
    loop {
        while let Some(t) = nat.poll_transmit() {
            let socket = match t.socket {
                Socket::Primary => &primary,
                Socket::Secondary => &secondary,
            };
            // A failed send (no route, ICMP error reported late) is a lost packet: the
            // retransmission timer handles it.
            let _ = socket.send_to(t.payload(), t.destination).await;
        }
        if let Some(outcome) = nat.outcome() {
            return Ok(*outcome);
        }
        let deadline = nat
            .poll_timeout()
            .ok_or_else(|| anyhow!("discovery stalled without a timer"))?;
        tokio::select! {
            r = primary.recv_from(&mut b0) => {
                if let Ok((n, from)) = r {
                    nat.handle_receive(Instant::now(), Socket::Primary, from, &b0[..n]);
                }
            }
            r = secondary.recv_from(&mut b1) => {
                if let Ok((n, from)) = r {
                    nat.handle_receive(Instant::now(), Socket::Secondary, from, &b1[..n]);
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
        }
        nat.handle_timeout(Instant::now());
    }
}

fn parse_local(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 0))
        .map_err(|_| anyhow!("bad value for --local {s:?}: expected IP or IP:PORT"))
}

/// `HOST`, `HOST:PORT`, `IPv6`, `[IPv6]:PORT`; names are resolved, preferring the local
/// address's family (IPv4 when none is given).
fn resolve_server(s: &str, local: Option<IpAddr>) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse::<u16>()
                .map_err(|_| anyhow!("bad port in --server {s:?}"))?,
        ),
        _ => (s, DEFAULT_PORT),
    };
    if host.is_empty() {
        bail!("bad value for --server {s:?}: empty host");
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host:?}"))?
        .collect();
    let want_v6 = local.is_some_and(|ip| ip.is_ipv6());
    addrs
        .iter()
        .find(|a| a.is_ipv6() == want_v6)
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| anyhow!("{host:?} resolved to no address"))
}

/// Two sockets on the same specific local IP (the wildcard would make "no NAT" undecidable).
fn bind(server: SocketAddr, local: Option<SocketAddr>) -> anyhow::Result<(UdpSocket, UdpSocket)> {
    let local = match local {
        Some(l) => l,
        None => {
            let any: IpAddr = if server.is_ipv6() {
                Ipv6Addr::UNSPECIFIED.into()
            } else {
                Ipv4Addr::UNSPECIFIED.into()
            };
            let probe = UdpSocket::bind((any, 0)).context("bind a UDP socket")?;
            probe
                .connect(server)
                .with_context(|| format!("no route to {server}"))?;
            SocketAddr::new(probe.local_addr()?.ip(), 0)
        }
    };
    let primary = UdpSocket::bind(local).with_context(|| format!("bind {local}"))?;
    let secondary = UdpSocket::bind(SocketAddr::new(local.ip(), 0))
        .with_context(|| format!("bind {}", local.ip()))?;
    primary.set_nonblocking(true)?;
    secondary.set_nonblocking(true)?;
    Ok((primary, secondary))
}

/// Peer types this one connects with directly, and those that need a relay.
fn peers(t: NatType) -> (Vec<&'static str>, Vec<&'static str>) {
    let four = [
        NatType::OpenInternet,
        NatType::FullCone,
        NatType::AddressRestrictedCone,
        NatType::PortRestrictedCone,
        NatType::Symmetric,
    ];
    let mut direct = Vec::new();
    let mut relay = Vec::new();
    for p in four {
        match t.path_with(p) {
            Path::Direct => direct.push(p.as_str()),
            Path::Relay | Path::Unknown => relay.push(p.as_str()),
        }
    }
    (direct, relay)
}

fn report_json(r: &Report) -> serde_json::Value {
    let t = r.nat_type();
    let (direct, relay) = peers(t);
    json!({
        "status": "ok",
        "server": r.server.to_string(),
        "other_address": r.other_address.to_string(),
        "local_address": r.local.to_string(),
        "public_address": r.mapped.to_string(),
        "port_preserved": r.port_preserved(),
        "nat": r.mapping != switchboard_nat::Mapping::NoNat,
        "mapping": r.mapping.as_str(),
        "filtering": r.filtering.as_str(),
        "hairpinning": r.hairpinning,
        "nat_type": t.as_str(),
        "direct_with": direct,
        "relay_with": relay,
        "verdict": t.verdict(),
    })
}

fn write_report(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    let t = r.nat_type();
    let nat = r.mapping != switchboard_nat::Mapping::NoNat;
    writeln!(
        out,
        "{:<15} {} (other address {})",
        "server", r.server, r.other_address
    )?;
    writeln!(out, "{:<15} {}", "local address", r.local)?;
    writeln!(
        out,
        "{:<15} {}{}",
        "public address",
        r.mapped,
        match (nat, r.port_preserved()) {
            (false, _) => " (same as local: no NAT)",
            (true, true) => " (port preserved)",
            (true, false) => " (port changed)",
        }
    )?;
    writeln!(out, "{:<15} {}", "mapping", r.mapping)?;
    writeln!(out, "{:<15} {}", "filtering", r.filtering)?;
    let hairpin = match r.hairpinning {
        Some(true) => "yes",
        Some(false) => "no",
        None if nat => "not tested",
        None => "not applicable (no NAT)",
    };
    writeln!(out, "{:<15} {hairpin}", "hairpinning")?;
    writeln!(out, "{:<15} {}", "NAT type", t.describe())?;
    writeln!(out, "{:<15} {}", "verdict", t.verdict())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_forms() {
        let r = |s| resolve_server(s, None).unwrap();
        assert_eq!(r("192.0.2.1"), "192.0.2.1:3478".parse().unwrap());
        assert_eq!(r("192.0.2.1:5000"), "192.0.2.1:5000".parse().unwrap());
        assert_eq!(r("::1"), "[::1]:3478".parse().unwrap());
        assert_eq!(r("[::1]:9"), "[::1]:9".parse().unwrap());
        assert_eq!(r("localhost:7").port(), 7);
        assert!(r("localhost").ip().is_loopback());
        assert!(resolve_server("localhost:x", None).is_err());
        assert!(resolve_server(":1", None).is_err());
    }

    #[test]
    fn local_forms() {
        assert_eq!(
            parse_local("10.0.0.1").unwrap(),
            "10.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            parse_local("10.0.0.1:9").unwrap(),
            "10.0.0.1:9".parse().unwrap()
        );
        assert!(parse_local("nope").is_err());
    }

    #[test]
    fn peer_lists_follow_the_matrix() {
        let (direct, relay) = peers(NatType::Symmetric);
        assert_eq!(
            direct,
            ["open-internet", "full-cone", "address-restricted-cone"]
        );
        assert_eq!(relay, ["port-restricted-cone", "symmetric"]);
        let (_, relay) = peers(NatType::PortRestrictedCone);
        assert_eq!(relay, ["symmetric"]);
        let (_, relay) = peers(NatType::FullCone);
        assert!(relay.is_empty());
    }
}
