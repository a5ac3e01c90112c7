//! STUN and TURN targets with switchboard's own codec (`switchboard-stun`): Binding per
//! transport (RTT, mapped address, RFC 5780 OTHER-ADDRESS), then for TURN an authenticated
//! Allocate, a CreatePermission for a UDP peer this probe runs itself, and echoes from the
//! client through the relay to that peer and back (the relay RTT). With `--nat`, the RFC 5780
//! NAT type (the `nat-check` state machine from `switchboard-nat`).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_stun::{long_term_key_md5, Class, Message, MessageBuilder, Method, TransactionId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::http::{resolve, step};
use super::report::{
    median, ms, Binding, Echo, Level, StepError, StunReport, StunTransport, Target, Turn,
};
use super::{tls, Ctx};

const BINDINGS: usize = 3;
const ECHOES: u32 = 5;
const INITIAL_RTO: Duration = Duration::from_millis(250);

fn tid() -> TransactionId {
    static N: AtomicU64 = AtomicU64::new(0);
    let s = RandomState::new();
    let a = s.hash_one((N.fetch_add(1, Ordering::Relaxed), Instant::now()));
    let b = s.hash_one(a);
    let mut t = [0u8; 12];
    t[..8].copy_from_slice(&a.to_le_bytes());
    t[8..].copy_from_slice(&b.to_le_bytes()[..4]);
    TransactionId(t)
}

fn err(stage: &'static str, message: impl Into<String>) -> StepError {
    StepError {
        stage,
        message: message.into(),
        timeout: false,
    }
}

pub struct Url {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub transport: Option<String>,
}

pub fn parse_url(url: &str) -> anyhow::Result<Url> {
    let (scheme, rest) = url
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("no scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "stun" | "stuns" | "turn" | "turns") {
        anyhow::bail!("scheme {scheme:?} is not stun, stuns, turn or turns");
    }
    let rest = rest.trim_start_matches("//");
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut transport = None;
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some(("transport", t)) if t == "udp" || t == "tcp" => transport = Some(t.to_string()),
            _ => anyhow::bail!("unknown query {kv:?} (only transport=udp|tcp)"),
        }
    }
    let default_port = if scheme.ends_with('s') { 5349 } else { 3478 };
    let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
        let (h, p) = r
            .split_once(']')
            .ok_or_else(|| anyhow::anyhow!("unclosed ["))?;
        let port = match p.strip_prefix(':') {
            Some(p) => p.parse()?,
            None => default_port,
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse()?),
            None => (hostport.to_string(), default_port),
        }
    };
    if host.is_empty() {
        anyhow::bail!("empty host");
    }
    if scheme.ends_with('s') && transport.as_deref() == Some("udp") {
        anyhow::bail!("{scheme}: runs over TLS (TCP); transport=udp (DTLS) is not supported");
    }
    Ok(Url {
        scheme,
        host,
        port,
        transport,
    })
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The client's connection to the server: one UDP socket (connected) or a TCP/TLS stream.
enum Link {
    Udp(UdpSocket),
    Stream(Box<dyn Stream>, Vec<u8>),
}

impl Link {
    async fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Link::Udp(s) => s.send(b).await.map(|_| ()),
            Link::Stream(s, _) => {
                s.write_all(b).await?;
                s.flush().await
            }
        }
    }

    /// One datagram or one framed message.
    async fn recv(&mut self) -> std::io::Result<Vec<u8>> {
        match self {
            Link::Udp(s) => {
                let mut b = vec![0u8; 2048];
                let n = s.recv(&mut b).await?;
                b.truncate(n);
                Ok(b)
            }
            Link::Stream(s, buf) => loop {
                if let Ok(Some(n)) = switchboard_stun::stream_frame_len(buf) {
                    if buf.len() >= n {
                        let rest = buf.split_off(n);
                        return Ok(std::mem::replace(buf, rest));
                    }
                } else if switchboard_stun::stream_frame_len(buf).is_err() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the server sent something that is not STUN",
                    ));
                }
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ));
                }
                buf.extend_from_slice(&chunk[..n]);
            },
        }
    }

    fn is_udp(&self) -> bool {
        matches!(self, Link::Udp(_))
    }
}

/// One request/response exchange; UDP retransmits (RTO doubling) until `limit`. Returns the
/// response, the RTT since the last transmission, and the number of transmissions.
async fn transact(
    link: &mut Link,
    req: &[u8],
    id: TransactionId,
    stage: &'static str,
    limit: Duration,
) -> Result<(Vec<u8>, Duration, u32), StepError> {
    let deadline = Instant::now() + limit;
    let mut rto = INITIAL_RTO;
    let mut sent = 0u32;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(StepError {
                stage,
                message: format!(
                    "no answer within {:.1} s ({sent} request{})",
                    limit.as_secs_f64(),
                    if sent == 1 { "" } else { "s" }
                ),
                timeout: true,
            });
        }
        link.send(req)
            .await
            .map_err(|e| err(stage, format!("send: {e}")))?;
        sent += 1;
        let t = Instant::now();
        let wait = if link.is_udp() {
            rto.min(deadline - t)
        } else {
            deadline - t
        };
        rto *= 2;
        let until = t + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, link.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    let m = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        "port unreachable (ICMP): nothing listens there".to_string()
                    } else {
                        e.to_string()
                    };
                    return Err(err(stage, m));
                }
                Ok(Ok(b)) => {
                    let Ok(m) = Message::parse(&b) else { continue };
                    if m.transaction_id() == id && m.class().is_response() {
                        return Ok((b, t.elapsed(), sent));
                    }
                }
            }
        }
    }
}

fn error_text(m: &Message<'_>) -> String {
    match m.error_code() {
        Ok(Some((code, reason))) => format!("{code} {reason}"),
        _ => "an error response".to_string(),
    }
}

async fn binding(link: &mut Link, limit: Duration) -> Result<Binding, StepError> {
    let mut b = Binding::default();
    for _ in 0..BINDINGS {
        let id = tid();
        let mut buf = [0u8; 64];
        let mut mb = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, id)
            .map_err(|e| err("binding", e.to_string()))?;
        mb.fingerprint()
            .map_err(|e| err("binding", e.to_string()))?;
        let n = mb.finish();
        let (resp, rtt, sent) = transact(link, &buf[..n], id, "binding", limit).await?;
        b.requests += sent;
        let m = Message::parse(&resp).map_err(|e| err("binding", e.to_string()))?;
        if m.class() == Class::Error {
            return Err(err(
                "binding",
                format!("the server answered {}", error_text(&m)),
            ));
        }
        b.rtts_ms.push(ms(rtt));
        let mapped = m
            .xor_mapped_address()
            .ok()
            .flatten()
            .or_else(|| m.mapped_address().ok().flatten());
        b.mapped_address = mapped.map(|a| a.to_string());
        b.other_address = m.other_address().ok().flatten().map(|a| a.to_string());
        b.response_origin = m.response_origin().ok().flatten().map(|a| a.to_string());
        b.software = m.software().ok().flatten().map(str::to_string);
    }
    b.rfc5780 = b.other_address.is_some();
    b.rtt_ms = median(&b.rtts_ms).unwrap_or(0.0);
    Ok(b)
}

struct Auth {
    user: String,
    realm: String,
    nonce: String,
    key: [u8; 16],
}

/// An authenticated TURN request (USERNAME, REALM, NONCE, MESSAGE-INTEGRITY, FINGERPRINT).
fn turn_request(
    method: Method,
    auth: Option<&Auth>,
    fill: impl FnOnce(&mut MessageBuilder<'_>) -> Result<(), switchboard_stun::BuildError>,
) -> Result<(Vec<u8>, TransactionId), StepError> {
    let id = tid();
    let mut buf = vec![0u8; 1024];
    let stage = "turn";
    let mut mb = MessageBuilder::new(&mut buf, Class::Request, method, id)
        .map_err(|e| err(stage, e.to_string()))?;
    fill(&mut mb).map_err(|e| err(stage, e.to_string()))?;
    if let Some(a) = auth {
        mb.username(&a.user)
            .and_then(|m| m.realm(&a.realm))
            .and_then(|m| m.nonce(&a.nonce))
            .and_then(|m| m.message_integrity(&a.key))
            .map_err(|e| err(stage, e.to_string()))?;
    }
    mb.fingerprint().map_err(|e| err(stage, e.to_string()))?;
    let n = mb.finish();
    buf.truncate(n);
    Ok((buf, id))
}

/// Sends an authenticated request, once more with the new nonce after 438 Stale Nonce.
async fn authed(
    link: &mut Link,
    method: Method,
    auth: &mut Auth,
    stage: &'static str,
    limit: Duration,
    fill: impl Fn(&mut MessageBuilder<'_>) -> Result<(), switchboard_stun::BuildError>,
) -> Result<Vec<u8>, StepError> {
    for _ in 0..2 {
        let (req, id) = turn_request(method, Some(auth), &fill)?;
        let (resp, _, _) = transact(link, &req, id, stage, limit).await?;
        let m = Message::parse(&resp).map_err(|e| err(stage, e.to_string()))?;
        if m.class() == Class::Error {
            if let Ok(Some((438, _))) = m.error_code() {
                if let Ok(Some(n)) = m.nonce() {
                    auth.nonce = n.to_string();
                    continue;
                }
            }
            let hint = match m.error_code() {
                Ok(Some((401, _))) => " (wrong user or password?)",
                Ok(Some((403, _))) => " (the server refuses this peer address: loopback and private peers need --allow-peer on switchboard, allow-loopback-peers on coturn)",
                _ => "",
            };
            return Err(err(stage, format!("{}{hint}", error_text(&m))));
        }
        return Ok(resp);
    }
    Err(err(stage, "438 Stale Nonce twice"))
}

async fn turn(
    link: &mut Link,
    local_ip: IpAddr,
    creds: Option<&(String, String)>,
    limit: Duration,
    server_udp: Option<SocketAddr>,
    t: &mut Turn,
) -> Result<(), StepError> {
    let Some((user, password)) = creds else {
        return Err(err(
            "allocate",
            "TURN needs credentials: --user NAME --password PW, or --ice BASE_URL",
        ));
    };
    let ta = Instant::now();
    // The unauthenticated Allocate: the server's 401 names the realm and a nonce.
    let (req, id) = turn_request(Method::ALLOCATE, None, |m| {
        m.requested_transport(17).map(|_| ())
    })?;
    let (resp, _, _) = transact(link, &req, id, "allocate", limit).await?;
    let m = Message::parse(&resp).map_err(|e| err("allocate", e.to_string()))?;
    if m.class() != Class::Error || !matches!(m.error_code(), Ok(Some((401, _)))) {
        return Err(err(
            "allocate",
            format!(
                "expected 401 with a realm and nonce, got {}",
                match m.class() {
                    Class::Success => "a success without authentication".to_string(),
                    _ => error_text(&m),
                }
            ),
        ));
    }
    let realm = m.realm().ok().flatten().unwrap_or_default().to_string();
    let nonce = m.nonce().ok().flatten().unwrap_or_default().to_string();
    t.realm = Some(realm.clone());
    let mut auth = Auth {
        key: long_term_key_md5(user, &realm, password),
        user: user.clone(),
        realm,
        nonce,
    };
    let resp = authed(link, Method::ALLOCATE, &mut auth, "allocate", limit, |m| {
        m.requested_transport(17).map(|_| ())
    })
    .await?;
    t.allocate_ms = Some(ms(ta.elapsed()));
    let m = Message::parse(&resp).map_err(|e| err("allocate", e.to_string()))?;
    let relayed = m
        .xor_relayed_address()
        .ok()
        .flatten()
        .ok_or_else(|| err("allocate", "no XOR-RELAYED-ADDRESS in the success response"))?;
    let mapped = m.xor_mapped_address().ok().flatten();
    t.relayed_address = Some(relayed.to_string());
    t.mapped_address = mapped.map(|a| a.to_string());
    t.lifetime_s = m.lifetime().ok().flatten();

    // The peer: a UDP socket of this probe, on the same local address as the client.
    let peer = UdpSocket::bind(SocketAddr::new(local_ip, 0))
        .await
        .map_err(|e| err("permission", format!("bind the peer socket: {e}")))?;
    let peer_local = peer
        .local_addr()
        .map_err(|e| err("permission", e.to_string()))?;
    // Its address as the relay will see it: its own server-reflexive address when the server
    // answers Binding over UDP there, else the client's public IP with the peer's port.
    let mut peer_addr = SocketAddr::new(mapped.map_or(local_ip, |a| a.ip()), peer_local.port());
    if let Some(server) = server_udp {
        let id = tid();
        let mut buf = [0u8; 64];
        if let Ok(mb) = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, id) {
            let n = mb.finish();
            let _ = peer.send_to(&buf[..n], server).await;
            let mut rb = [0u8; 1024];
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(limit.min(Duration::from_secs(1)), peer.recv_from(&mut rb))
                    .await
            {
                if let Ok(m) = Message::parse(&rb[..n]) {
                    if let Ok(Some(a)) = m.xor_mapped_address() {
                        peer_addr = a;
                    }
                }
            }
        }
    }
    if relayed.is_ipv6() != peer_addr.is_ipv6() {
        return Err(err(
            "permission",
            format!("relayed address {relayed} and peer {peer_addr} are of different families"),
        ));
    }
    t.peer_address = Some(peer_addr.to_string());
    let tp = Instant::now();
    authed(
        link,
        Method::CREATE_PERMISSION,
        &mut auth,
        "permission",
        limit,
        |m| m.xor_peer_address(peer_addr).map(|_| ()),
    )
    .await?;
    t.permission_ms = Some(ms(tp.elapsed()));

    // The peer echoes whatever reaches it back to where it came from (the relayed address).
    let peer = Arc::new(peer);
    let echo_peer = peer.clone();
    let echo = tokio::spawn(async move {
        let mut b = [0u8; 2048];
        while let Ok((n, from)) = echo_peer.recv_from(&mut b).await {
            if b[..n].starts_with(b"sb-probe-echo") {
                let _ = echo_peer.send_to(&b[..n], from).await;
            }
        }
    });
    // Open the peer's side (a NAT in front of it) toward the relay; the relay forwards this to
    // the client as a Data indication, which the echo loop below skips.
    let _ = peer.send_to(b"sb-probe-punch", relayed).await;
    let mut e = Echo::default();
    let round = (limit / 2).max(Duration::from_millis(500));
    for i in 0..ECHOES {
        let payload = format!("sb-probe-echo {i}");
        let id = tid();
        let mut buf = [0u8; 256];
        let mut mb = MessageBuilder::new(&mut buf, Class::Indication, Method::SEND, id)
            .map_err(|x| err("echo", x.to_string()))?;
        mb.xor_peer_address(peer_addr)
            .and_then(|m| m.data(payload.as_bytes()))
            .map_err(|x| err("echo", x.to_string()))?;
        let n = mb.finish();
        let t0 = Instant::now();
        link.send(&buf[..n])
            .await
            .map_err(|x| err("echo", x.to_string()))?;
        e.sent += 1;
        let until = t0 + round;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let Ok(r) = tokio::time::timeout(left, link.recv()).await else {
                break;
            };
            let b = r.map_err(|x| err("echo", x.to_string()))?;
            let Ok(m) = Message::parse(&b) else { continue };
            if m.class() == Class::Indication
                && m.method() == Method::DATA
                && m.data().ok().flatten() == Some(payload.as_bytes())
            {
                e.received += 1;
                e.rtts_ms.push(ms(t0.elapsed()));
                break;
            }
        }
    }
    echo.abort();
    e.rtt_ms = median(&e.rtts_ms);
    let got = e.received;
    t.echo = Some(e);
    // Release the allocation (best effort).
    if let Ok((req, id)) = turn_request(Method::REFRESH, Some(&auth), |m| m.lifetime(0).map(|_| ()))
    {
        let _ = transact(link, &req, id, "refresh", Duration::from_millis(500)).await;
    }
    if got == 0 {
        return Err(err(
            "echo",
            format!(
                "nothing came back through the relay {relayed} from the peer {peer_addr} \
                 (the server may not relay to that address)"
            ),
        ));
    }
    Ok(())
}

async fn open(
    transport: &'static str,
    server: SocketAddr,
    host: &str,
    ctx: &Ctx,
    st: &mut StunTransport,
    cert: &mut Option<super::report::Certificate>,
) -> Result<Link, StepError> {
    match transport {
        "udp" => {
            let any: IpAddr = if server.is_ipv6() {
                Ipv6Addr::UNSPECIFIED.into()
            } else {
                Ipv4Addr::UNSPECIFIED.into()
            };
            let s = UdpSocket::bind((any, 0))
                .await
                .map_err(|e| err("connect", e.to_string()))?;
            s.connect(server)
                .await
                .map_err(|e| err("connect", format!("no route to {server}: {e}")))?;
            st.local = s.local_addr().ok().map(|a| a.to_string());
            Ok(Link::Udp(s))
        }
        _ => {
            let t = Instant::now();
            let tcp = step("connect", ctx.timeout, TcpStream::connect(server)).await?;
            let _ = tcp.set_nodelay(true);
            st.connect_ms = Some(ms(t.elapsed()));
            st.local = tcp.local_addr().ok().map(|a| a.to_string());
            if transport == "tcp" {
                return Ok(Link::Stream(Box::new(tcp), Vec::new()));
            }
            let cfg = tls::client_config(
                ctx.verifier.clone(),
                &[b"stun.turn", b"stun.nat-discovery"],
                false,
            )
            .map_err(|e| err("tls", e.to_string()))?;
            let name = tls::server_name(host).map_err(|e| err("tls", e.to_string()))?;
            let _ = ctx.verifier.take();
            let t = Instant::now();
            let s = step(
                "tls",
                ctx.timeout,
                tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
            )
            .await?;
            let conn = s.get_ref().1;
            st.tls = Some(tls::tls_of(conn, ms(t.elapsed())));
            let verdict = ctx.verifier.take();
            *cert = Some(tls::certificate(
                conn.peer_certificates().unwrap_or_default(),
                verdict.clone(),
                &ctx.verifier.roots,
            ));
            if let Some(Err(e)) = verdict {
                if !ctx.insecure {
                    return Err(err(
                        "tls",
                        format!("certificate not trusted: {e} (--insecure to go on anyway)"),
                    ));
                }
            }
            Ok(Link::Stream(Box::new(s), Vec::new()))
        }
    }
}

pub async fn probe(url: &str, ctx: &Ctx, creds: Option<&(String, String)>) -> Target {
    let parsed = parse_url(url);
    let kind = if url.to_ascii_lowercase().starts_with("turn") {
        "turn"
    } else {
        "stun"
    };
    let mut target = Target::new(url, kind);
    let u = match parsed {
        Ok(u) => u,
        Err(e) => {
            target.error = Some(err("url", format!("{url:?}: {e}")));
            target.verdict(Level::Broken, format!("bad URL: {e}"));
            return target;
        }
    };
    let mut report = StunReport::default();
    let addrs = match resolve(&u.host, u.port, ctx.timeout).await {
        Ok((dns, addrs)) => {
            report.dns = Some(dns);
            addrs
        }
        Err(e) => {
            target.verdict(Level::Broken, e.message.clone());
            target.error = Some(e);
            target.stun = Some(report);
            return target;
        }
    };
    let server = addrs[0];
    let transports: Vec<(&'static str, bool)> =
        match (u.scheme.ends_with('s'), u.transport.as_deref()) {
            (true, _) => vec![("tls", true)],
            (false, Some("udp")) => vec![("udp", true)],
            (false, Some(_)) => vec![("tcp", true)],
            (false, None) => vec![("udp", true), ("tcp", false)],
        };
    let is_turn = kind == "turn";
    let mut cert = None;
    for (transport, explicit) in transports {
        let mut st = StunTransport {
            transport,
            server: server.to_string(),
            local: None,
            connect_ms: None,
            tls: None,
            binding: None,
            turn: None,
            error: None,
            explicit,
        };
        match open(transport, server, &u.host, ctx, &mut st, &mut cert).await {
            Err(e) => st.error = Some(e),
            Ok(mut link) => {
                match binding(&mut link, ctx.timeout).await {
                    Ok(b) => st.binding = Some(b),
                    Err(e) => st.error = Some(e),
                }
                if is_turn && st.error.is_none() {
                    let local_ip = st
                        .local
                        .as_deref()
                        .and_then(|l| l.parse::<SocketAddr>().ok())
                        .map(|a| a.ip())
                        .unwrap_or(Ipv4Addr::LOCALHOST.into());
                    let local_ip = if local_ip.is_unspecified() {
                        route_ip(server).unwrap_or(local_ip)
                    } else {
                        local_ip
                    };
                    let mut t = Turn::default();
                    let server_udp = (transport == "udp").then_some(server);
                    if let Err(e) =
                        turn(&mut link, local_ip, creds, ctx.timeout, server_udp, &mut t).await
                    {
                        st.error = Some(e);
                    }
                    st.turn = Some(t);
                }
            }
        }
        report.transports.push(st);
    }
    report.certificate = cert;
    if ctx.nat
        && report
            .transports
            .iter()
            .any(|t| t.transport == "udp" && t.binding.is_some())
    {
        report.nat = Some(nat_type(server, ctx).await);
    }
    verdicts(&mut target, &report, &u, ctx);
    target.stun = Some(report);
    target
}

fn route_ip(server: SocketAddr) -> Option<IpAddr> {
    let any: IpAddr = if server.is_ipv6() {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let s = std::net::UdpSocket::bind((any, 0)).ok()?;
    s.connect(server).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// The `nat-check` classification against this server (needs RFC 5780 there).
async fn nat_type(server: SocketAddr, ctx: &Ctx) -> serde_json::Value {
    use switchboard_nat::{Config, NatDiscovery, Outcome, Socket};
    let run = async {
        let ip = route_ip(server).ok_or_else(|| anyhow::anyhow!("no route to {server}"))?;
        let primary = UdpSocket::bind((ip, 0)).await?;
        let secondary = UdpSocket::bind((ip, 0)).await?;
        let config = Config::new(server, primary.local_addr()?, secondary.local_addr()?);
        let seed = RandomState::new().hash_one(Instant::now());
        let mut nat = NatDiscovery::new(config, Instant::now(), seed);
        let (mut b0, mut b1) = (vec![0u8; 2048], vec![0u8; 2048]);
        loop {
            while let Some(t) = nat.poll_transmit() {
                let s = match t.socket {
                    Socket::Primary => &primary,
                    Socket::Secondary => &secondary,
                };
                let _ = s.send_to(t.payload(), t.destination).await;
            }
            if let Some(o) = nat.outcome() {
                return Ok::<_, anyhow::Error>(*o);
            }
            let deadline = nat
                .poll_timeout()
                .ok_or_else(|| anyhow::anyhow!("discovery stalled"))?;
            tokio::select! {
                r = primary.recv_from(&mut b0) => if let Ok((n, from)) = r {
                    nat.handle_receive(Instant::now(), Socket::Primary, from, &b0[..n]);
                },
                r = secondary.recv_from(&mut b1) => if let Ok((n, from)) = r {
                    nat.handle_receive(Instant::now(), Socket::Secondary, from, &b1[..n]);
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            }
            nat.handle_timeout(Instant::now());
        }
    };
    match tokio::time::timeout(ctx.timeout * 4, run).await {
        Err(_) => json!({"status": "no-answer", "error": "NAT discovery timed out"}),
        Ok(Err(e)) => json!({"status": "error", "error": e.to_string()}),
        Ok(Ok(Outcome::Complete(r))) => {
            let t = r.nat_type();
            json!({
                "status": "ok",
                "nat_type": t.as_str(),
                "description": t.describe(),
                "mapping": r.mapping.as_str(),
                "filtering": r.filtering.as_str(),
                "hairpinning": r.hairpinning,
                "public_address": r.mapped.to_string(),
                "local_address": r.local.to_string(),
                "verdict": t.verdict(),
            })
        }
        Ok(Ok(Outcome::NotRfc5780 { mapped, .. })) => json!({
            "status": "no-rfc5780",
            "public_address": mapped.to_string(),
            "error": "the server does not support RFC 5780 (no OTHER-ADDRESS): NAT type unknown",
        }),
        Ok(Ok(Outcome::NoAnswer { .. })) => {
            json!({"status": "no-answer", "error": "no answer to the NAT tests"})
        }
        Ok(Ok(Outcome::ServerError { code, .. })) => {
            json!({"status": "server-error", "error": format!("the server answered {code}")})
        }
    }
}

fn verdicts(t: &mut Target, r: &StunReport, u: &Url, ctx: &Ctx) {
    let _ = ctx;
    let mut summary = Vec::new();
    let is_turn = t.kind == "turn";
    for st in &r.transports {
        if let Some(e) = &st.error {
            let what = match e.stage {
                "connect" if e.timeout => format!("TCP connect timed out: {}", e.message),
                "tls" if e.timeout => format!("TLS handshake timed out: {}", e.message),
                "binding" if e.timeout => format!("no STUN answer: {}", e.message),
                _ => format!("{} failed: {}", e.stage, e.message),
            };
            let level = if st.explicit {
                Level::Broken
            } else {
                Level::Warning
            };
            t.verdict(
                level,
                format!(
                    "{} over {}: {what}",
                    if is_turn { "TURN" } else { "STUN" },
                    st.transport
                ),
            );
            continue;
        }
        if let Some(b) = &st.binding {
            summary.push(format!(
                "STUN over {} answers in {:.2} ms (mapped {}; RFC 5780 {})",
                st.transport,
                b.rtt_ms,
                b.mapped_address.as_deref().unwrap_or("?"),
                if b.rfc5780 { "yes" } else { "no" }
            ));
        }
        if let Some(turn) = &st.turn {
            let rtt = turn.echo.as_ref().and_then(|e| e.rtt_ms).unwrap_or(0.0);
            summary.push(format!(
                "TURN relay over {} works (relayed {}, relay rtt {:.2} ms)",
                st.transport,
                turn.relayed_address.as_deref().unwrap_or("?"),
                rtt
            ));
            if st.transport != "udp" && u.port == 443 {
                summary.push(format!(
                    "WebRTC clients on restrictive networks can use {}:{}:443",
                    if st.transport == "tls" {
                        "turns"
                    } else {
                        "turn"
                    },
                    u.host
                ));
            }
        }
    }
    if let Some(c) = &r.certificate {
        if let Some(leaf) = c.chain.first() {
            if leaf.days_left < 0 {
                t.verdict(
                    Level::Broken,
                    format!("certificate expired {} days ago", -leaf.days_left),
                );
            } else if leaf.days_left < 14 {
                t.verdict(
                    Level::Warning,
                    format!("certificate expires in {} days", leaf.days_left),
                );
            }
        }
        if let (Some(e), true) = (&c.verify_error, ctx.insecure) {
            t.verdict(
                Level::Warning,
                format!("certificate not verified ({e}); going on because of --insecure"),
            );
        }
    }
    if let Some(n) = &r.nat {
        if n["status"] == "ok" {
            summary.push(format!(
                "NAT type {}",
                n["nat_type"].as_str().unwrap_or("?")
            ));
        }
    }
    if !summary.is_empty() {
        t.verdict(Level::Ok, summary.join("; "));
    }
}
