//! HTTP(S) targets: DNS, TCP, TLS, HTTP/1.1 and h2 (hyper), h3 (quinn + h3), session
//! resumption, 0-RTT and QUIC connection migration, each step under the probe's timeout.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::Uri;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::report::{
    ms, Connection, Dns, EarlyData, HttpReport, Level, Migration, Request, StepError, Target, Tls,
    H3,
};
use super::tls::{self, Verifier};
use super::Ctx;

/// Runs `f` under the probe's timeout; a timeout becomes a [`StepError`] for `stage`.
pub async fn step<T, E: std::fmt::Display>(
    stage: &'static str,
    limit: Duration,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, StepError> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StepError {
            stage,
            message: format!("{e:#}"),
            timeout: false,
        }),
        Err(_) => Err(StepError {
            stage,
            message: format!("no answer within {:.1} s", limit.as_secs_f64()),
            timeout: true,
        }),
    }
}

/// `host` as given (brackets stripped), with its port: resolved (timed) unless a literal.
pub async fn resolve(
    host: &str,
    port: u16,
    limit: Duration,
) -> Result<(Dns, Vec<SocketAddr>), StepError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        let a = SocketAddr::new(ip, port);
        return Ok((
            Dns {
                host: bare.to_string(),
                ms: 0.0,
                addresses: vec![ip.to_string()],
                literal: true,
            },
            vec![a],
        ));
    }
    let t = Instant::now();
    let addrs: Vec<SocketAddr> = step(
        "dns",
        limit,
        tokio::net::lookup_host((bare.to_string(), port)),
    )
    .await
    .map_err(|mut e| {
        e.message = format!("cannot resolve {bare:?}: {}", e.message);
        e
    })?
    .collect();
    let mut seen = Vec::new();
    for a in &addrs {
        if !seen.contains(&a.ip().to_string()) {
            seen.push(a.ip().to_string());
        }
    }
    let mut unique = Vec::new();
    for a in addrs {
        if !unique.contains(&a) {
            unique.push(a);
        }
    }
    Ok((
        Dns {
            host: bare.to_string(),
            ms: ms(t.elapsed()),
            addresses: seen,
            literal: false,
        },
        unique,
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    H1,
    H2,
}

pub(super) struct Parsed {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub uri: Uri,
}

pub(super) fn parse(url: &str) -> anyhow::Result<Parsed> {
    let uri: Uri = url.parse()?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => anyhow::bail!("not an http:// or https:// URL"),
    };
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("no host in the URL"))?
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let uri = if uri.path_and_query().is_none() {
        format!("{url}/").parse()?
    } else {
        uri
    };
    Ok(Parsed {
        tls,
        host,
        port,
        uri,
    })
}

fn header(h: &http::HeaderMap, name: http::header::HeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// One GET over hyper (HTTP/1.1 or h2) on an established stream; phases appended to `c`.
async fn get<S>(
    io: S,
    proto: Proto,
    uri: &Uri,
    ctx: &Ctx,
    origin: Instant,
    c: &mut Connection,
) -> Result<(), StepError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let limit = ctx.timeout;
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let t0 = Instant::now();
    let resp = match proto {
        Proto::H1 => {
            let (mut send, conn) = step(
                "request",
                limit,
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io),
            )
            .await?;
            tokio::spawn(conn);
            let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let req = http::Request::get(path)
                .header(http::header::HOST, authority)
                .header(http::header::USER_AGENT, ua())
                .body(Empty::new())
                .map_err(|e| StepError {
                    stage: "request",
                    message: e.to_string(),
                    timeout: false,
                })?;
            step("request", limit, send.send_request(req)).await?
        }
        Proto::H2 => {
            let (mut send, conn) = step(
                "request",
                limit,
                hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
                    TokioExecutor::new(),
                    io,
                ),
            )
            .await?;
            tokio::spawn(conn);
            let req = http::Request::get(uri.clone())
                .header(http::header::USER_AGENT, ua())
                .body(Empty::new())
                .map_err(|e| StepError {
                    stage: "request",
                    message: e.to_string(),
                    timeout: false,
                })?;
            step("request", limit, send.send_request(req)).await?
        }
    };
    let ttfb = t0.elapsed();
    let mut r = Request {
        protocol: match proto {
            Proto::H1 => "http/1.1",
            Proto::H2 => "h2",
        }
        .into(),
        status: Some(resp.status().as_u16()),
        ttfb_ms: Some(ms(ttfb)),
        server: header(resp.headers(), http::header::SERVER),
        alt_svc: header(resp.headers(), http::header::ALT_SVC),
        ..Default::default()
    };
    let body = step("response body", limit, resp.into_body().collect()).await;
    let total = t0.elapsed();
    let start = t0 - origin;
    c.phases.push(("wait", start, ttfb));
    c.phases.push(("body", start + ttfb, total - ttfb));
    match body {
        Ok(b) => {
            r.body_bytes = Some(b.to_bytes().len() as u64);
            r.total_ms = Some(ms(total));
            c.request = Some(r);
            Ok(())
        }
        Err(e) => {
            c.request = Some(r);
            Err(e)
        }
    }
}

pub(super) fn ua() -> &'static str {
    concat!("switchboard-probe/", env!("CARGO_PKG_VERSION"))
}

/// TCP to the first address that answers; the failures are kept for the report.
pub(super) async fn connect(
    addrs: &[SocketAddr],
    limit: Duration,
) -> Result<(TcpStream, SocketAddr, Duration), StepError> {
    let mut last = None;
    for &a in addrs {
        let t = Instant::now();
        match step("connect", limit, TcpStream::connect(a)).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok((s, a, t.elapsed()));
            }
            Err(mut e) => {
                e.message = format!("{a}: {}", e.message);
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(StepError {
        stage: "connect",
        message: "no address to connect to".into(),
        timeout: false,
    }))
}

/// One TCP (+ TLS) connection with one GET. `proto` None: from ALPN (h2 or http/1.1).
#[allow(clippy::too_many_arguments)]
async fn tcp_connection(
    purpose: &str,
    p: &Parsed,
    addrs: &[SocketAddr],
    tls_cfg: Option<Arc<rustls::ClientConfig>>,
    proto: Option<Proto>,
    ctx: &Ctx,
    origin: Instant,
    verifier: &Verifier,
    cert_out: Option<&mut Option<super::report::Certificate>>,
) -> Connection {
    let mut c = Connection::new(
        purpose,
        "tcp",
        addrs.first().map(|a| a.to_string()).unwrap_or_default(),
    );
    let t0 = Instant::now();
    let (tcp, addr, d) = match connect(addrs, ctx.timeout).await {
        Ok(v) => v,
        Err(e) => {
            c.error = Some(e);
            return c;
        }
    };
    c.remote = addr.to_string();
    c.local = tcp.local_addr().ok().map(|a| a.to_string());
    c.connect_ms = Some(ms(d));
    c.phases.push(("tcp", t0 - origin, d));
    let Some(cfg) = tls_cfg else {
        let r = get(tcp, proto.unwrap_or(Proto::H1), &p.uri, ctx, origin, &mut c).await;
        c.error = r.err();
        return c;
    };
    let name = match tls::server_name(&p.host) {
        Ok(n) => n,
        Err(e) => {
            c.error = Some(StepError {
                stage: "tls",
                message: e.to_string(),
                timeout: false,
            });
            return c;
        }
    };
    let _ = verifier.take();
    let mut offered = false;
    let t1 = Instant::now();
    let hs = step(
        "tls",
        ctx.timeout,
        tokio_rustls::TlsConnector::from(cfg).connect_with(name, tcp, |conn| {
            offered = conn.early_data().is_some();
        }),
    )
    .await;
    let stream = match hs {
        Ok(s) => s,
        Err(mut e) => {
            e.message = tls_failure(&e.message);
            c.error = Some(e);
            return c;
        }
    };
    let d = t1.elapsed();
    c.phases.push(("tls", t1 - origin, d));
    let conn = stream.get_ref().1;
    let t: Tls = tls::tls_of(conn, ms(d));
    let resumed = t.handshake_kind.as_deref() == Some("resumed");
    let alpn = t.alpn.clone();
    c.tls = Some(t);
    if purpose == "resumption" {
        c.early_data = Some(EarlyData {
            offered,
            attempted: false,
            accepted: false,
        });
    }
    let verdict = verifier.take();
    if let Some(out) = cert_out {
        let chain = conn.peer_certificates().unwrap_or_default();
        *out = Some(tls::certificate(chain, verdict.clone(), &verifier.roots));
    }
    if let Some(Err(e)) = verdict {
        if !ctx.insecure && !resumed {
            c.error = Some(StepError {
                stage: "tls",
                message: format!("certificate not trusted: {e} (--insecure to go on anyway)"),
                timeout: false,
            });
            return c;
        }
    }
    let proto = proto.unwrap_or(match alpn.as_deref() {
        Some("h2") => Proto::H2,
        _ => Proto::H1,
    });
    let r = get(stream, proto, &p.uri, ctx, origin, &mut c).await;
    c.error = r.err();
    c
}

fn tls_failure(msg: &str) -> String {
    if msg.contains("HandshakeFailure") || msg.contains("handshake failure") {
        format!(
            "{msg}: no common protocol version, cipher suite or group (this client offers TLS \
             1.3 and 1.2 with ECDHE only; static-RSA and finite-field DHE key exchanges are not \
             offered)"
        )
    } else {
        msg.to_string()
    }
}

/// Probes `url`; with `--compare` on a TLS URL that answered, also what the comparison needs
/// (run by the caller, see `compare`).
pub(super) async fn probe(url: &str, ctx: &Ctx) -> (Target, Option<CompareWith>) {
    let mut target = Target::new(url, "http");
    let p = match parse(url) {
        Ok(p) => p,
        Err(e) => {
            target.error = Some(StepError {
                stage: "url",
                message: format!("{url:?}: {e}"),
                timeout: false,
            });
            target.verdict(Level::Broken, format!("bad URL: {e}"));
            return (target, None);
        }
    };
    let mut report = HttpReport::default();
    let origin = Instant::now();
    let (addrs, dns_time) = match resolve(&p.host, p.port, ctx.timeout).await {
        Ok((dns, addrs)) => {
            let d = Duration::from_secs_f64(dns.ms / 1e3);
            report.dns = Some(dns);
            (addrs, d)
        }
        Err(e) => {
            target.verdict(Level::Broken, e.message.clone());
            target.error = Some(e);
            target.http = Some(report);
            return (target, None);
        }
    };
    let verifier = ctx.verifier.clone();
    let mut cert = None;
    let tls_cfg = if p.tls {
        match tls::client_config(verifier.clone(), &[b"h2", b"http/1.1"], false) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                target.verdict(Level::Broken, format!("TLS configuration: {e}"));
                return (target, None);
            }
        }
    } else {
        None
    };
    let primary = tcp_connection(
        "primary",
        &p,
        &addrs,
        tls_cfg.clone(),
        None,
        ctx,
        origin,
        &verifier,
        Some(&mut cert),
    )
    .await;
    let mut primary = primary;
    if !dns_time.is_zero() {
        primary.phases.insert(0, ("dns", Duration::ZERO, dns_time));
    }
    report.certificate = cert;
    let primary_ok = primary.error.is_none();
    let primary_proto = primary.request.as_ref().map(|r| r.protocol.clone());
    let alt_svc = primary.request.as_ref().and_then(|r| r.alt_svc.clone());
    let remote: Option<SocketAddr> = primary.remote.parse().ok();
    report.connections.push(primary);
    if primary_ok {
        let addrs1: Vec<SocketAddr> = remote.into_iter().collect();
        if p.tls {
            // The other of h2 and HTTP/1.1, on a fresh session (a full handshake).
            let other = if primary_proto.as_deref() == Some("h2") {
                Some((Proto::H1, &b"http/1.1"[..], "http/1.1"))
            } else {
                None
            };
            if let Some((proto, alpn, purpose)) = other {
                if let Ok(cfg) = tls::client_config(verifier.clone(), &[alpn], false) {
                    let c = tcp_connection(
                        purpose,
                        &p,
                        &addrs1,
                        Some(Arc::new(cfg)),
                        Some(proto),
                        ctx,
                        origin,
                        &verifier,
                        None,
                    )
                    .await;
                    report.connections.push(c);
                }
            }
            // Resumption: the first configuration again, holding the primary's ticket.
            let c = tcp_connection(
                "resumption",
                &p,
                &addrs1,
                tls_cfg.clone(),
                None,
                ctx,
                origin,
                &verifier,
                None,
            )
            .await;
            report.connections.push(c);
        } else {
            // h2 with prior knowledge (h2c).
            let c = tcp_connection(
                "h2c",
                &p,
                &addrs1,
                None,
                Some(Proto::H2),
                ctx,
                origin,
                &verifier,
                None,
            )
            .await;
            report.connections.push(c);
        }
    }
    // h3: advertised in Alt-Svc (or forced), over UDP.
    if p.tls {
        let adv = alt_svc.as_deref().and_then(alt_svc_h3);
        let (host, port) = match &adv {
            Some((_, h, port)) => (h.clone(), *port),
            None => (None, p.port),
        };
        if adv.is_some() || ctx.force_h3 {
            let addr = match host {
                Some(h) if !h.is_empty() => match resolve(&h, port, ctx.timeout).await {
                    Ok((_, a)) => a.first().copied(),
                    Err(_) => None,
                },
                _ => remote
                    .map(|r| SocketAddr::new(r.ip(), port))
                    .or_else(|| addrs.first().map(|a| SocketAddr::new(a.ip(), port))),
            };
            if let Some(addr) = addr {
                report.h3 = Some(H3 {
                    advertised: adv.as_ref().map(|a| a.0.clone()),
                    forced: adv.is_none(),
                    address: addr.to_string(),
                });
                let need_cert = report.certificate.is_none();
                let (conns, cert) = h3_probe(&p, addr, ctx, origin, &verifier, need_cert).await;
                if need_cert {
                    report.certificate = cert;
                }
                report.connections.extend(conns);
            }
        }
    }
    let compare = match remote {
        Some(addr) if ctx.compare && p.tls && primary_ok => {
            let h3 = report
                .connections
                .iter()
                .find(|c| c.purpose == "h3" && c.error.is_none())
                .and_then(|c| c.remote.parse().ok());
            Some(CompareWith {
                parsed: p,
                addr,
                h3,
            })
        }
        _ => None,
    };
    verdicts(&mut target, &report, ctx);
    target.http = Some(report);
    (target, compare)
}

/// What `--compare` needs of a probed URL: the URL, the address that answered it, and the
/// HTTP/3 address that did.
pub(super) struct CompareWith {
    pub parsed: Parsed,
    pub addr: SocketAddr,
    pub h3: Option<SocketAddr>,
}

/// The first `h3="host:port"` of an Alt-Svc value: (the entry, host if any, port).
pub fn alt_svc_h3(v: &str) -> Option<(String, Option<String>, u16)> {
    for entry in v.split(',') {
        let entry = entry.trim();
        let Some(rest) = entry.strip_prefix("h3=") else {
            continue;
        };
        let auth = rest.split(';').next()?.trim().trim_matches('"');
        let (h, port) = auth.rsplit_once(':')?;
        let port = port.parse().ok()?;
        return Some((
            entry.to_string(),
            (!h.is_empty()).then(|| h.to_string()),
            port,
        ));
    }
    None
}

pub(super) type H3Send = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

pub(super) async fn h3_get(
    send: &mut H3Send,
    uri: &Uri,
    limit: Duration,
) -> Result<(Request, Duration, Duration), StepError> {
    let t0 = Instant::now();
    let req = http::Request::get(uri.clone())
        .header(http::header::USER_AGENT, ua())
        .body(())
        .map_err(|e| StepError {
            stage: "request",
            message: e.to_string(),
            timeout: false,
        })?;
    let fut = async {
        let mut stream = send.send_request(req).await?;
        stream.finish().await?;
        let resp = stream.recv_response().await?;
        let ttfb = t0.elapsed();
        let mut n = 0u64;
        while let Some(chunk) = stream.recv_data().await? {
            n += chunk.remaining() as u64;
        }
        Ok::<_, h3::error::StreamError>((resp, ttfb, n))
    };
    let (resp, ttfb, n) = step("request", limit, fut).await?;
    let total = t0.elapsed();
    Ok((
        Request {
            protocol: "h3".into(),
            status: Some(resp.status().as_u16()),
            ttfb_ms: Some(ms(ttfb)),
            total_ms: Some(ms(total)),
            body_bytes: Some(n),
            server: header(resp.headers(), http::header::SERVER),
            alt_svc: header(resp.headers(), http::header::ALT_SVC),
        },
        ttfb,
        total,
    ))
}

pub(super) async fn h3_session(
    conn: quinn::Connection,
    limit: Duration,
) -> Result<(H3Send, tokio::task::JoinHandle<()>), StepError> {
    let (mut driver, send) = step(
        "h3",
        limit,
        h3::client::new(h3_quinn::Connection::new(conn)),
    )
    .await?;
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    Ok((send, drive))
}

fn quic_tls(conn: &quinn::Connection, d: Duration) -> Tls {
    let alpn = conn
        .handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol.map(|p| String::from_utf8_lossy(&p).into_owned()));
    Tls {
        handshake_ms: ms(d),
        version: Some("TLSv1.3".into()),
        cipher_suite: None,
        key_exchange_group: tls::take_group().map(tls::group_name),
        alpn,
        handshake_kind: None,
    }
}

/// A QUIC connection with an h3 GET, then a rebinding of the client's UDP socket and another
/// GET on the same connection (migration), then a second connection trying 0-RTT.
async fn h3_probe(
    p: &Parsed,
    addr: SocketAddr,
    ctx: &Ctx,
    origin: Instant,
    verifier: &Arc<Verifier>,
    need_cert: bool,
) -> (Vec<Connection>, Option<super::report::Certificate>) {
    let mut out = Vec::new();
    let mut cert = None;
    let mut c = Connection::new("h3", "quic", addr.to_string());
    let fail = |c: &mut Connection, stage, message: String| {
        c.error = Some(StepError {
            stage,
            message,
            timeout: false,
        });
    };
    let unspecified: IpAddr = if addr.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let cfg = match tls::client_config(verifier.clone(), &[b"h3"], true)
        .map_err(|e| e.to_string())
        .and_then(|c| {
            quinn::crypto::rustls::QuicClientConfig::try_from(c).map_err(|e| e.to_string())
        }) {
        Ok(c) => {
            let mut qc = quinn::ClientConfig::new(Arc::new(c));
            let mut transport = quinn::TransportConfig::default();
            transport.max_idle_timeout(quinn::IdleTimeout::try_from(ctx.timeout * 2).ok());
            qc.transport_config(Arc::new(transport));
            qc
        }
        Err(e) => {
            fail(&mut c, "quic", e);
            return (vec![c], None);
        }
    };
    let endpoint = match quinn::Endpoint::client(SocketAddr::new(unspecified, 0)) {
        Ok(e) => e,
        Err(e) => {
            fail(&mut c, "quic", format!("bind a UDP socket: {e}"));
            return (vec![c], None);
        }
    };
    let server_name = p
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    c.local = endpoint.local_addr().ok().map(|a| a.to_string());
    let _ = verifier.take();
    let _ = tls::take_group();
    let t0 = Instant::now();
    let connecting = match endpoint.connect_with(cfg.clone(), addr, &server_name) {
        Ok(c) => c,
        Err(e) => {
            fail(&mut c, "quic", e.to_string());
            return (vec![c], None);
        }
    };
    let conn = match step("quic", ctx.timeout, connecting).await {
        Ok(conn) => conn,
        Err(mut e) => {
            if e.timeout {
                e.message = format!(
                    "no QUIC handshake within {:.1} s (UDP blocked, or no HTTP/3 listener)",
                    ctx.timeout.as_secs_f64()
                );
            }
            c.error = Some(e);
            c.phases.push(("quic", t0 - origin, t0.elapsed()));
            return (vec![c], None);
        }
    };
    let d = t0.elapsed();
    c.phases.push(("quic", t0 - origin, d));
    c.tls = Some(quic_tls(&conn, d));
    let verdict = verifier.take();
    if need_cert {
        let chain = conn
            .peer_identity()
            .and_then(|i| {
                i.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .map(|b| *b)
            .unwrap_or_default();
        cert = Some(tls::certificate(&chain, verdict.clone(), &verifier.roots));
    }
    if let Some(Err(e)) = &verdict {
        if !ctx.insecure {
            fail(&mut c, "tls", format!("certificate not trusted: {e}"));
            conn.close(0u32.into(), b"untrusted");
            out.push(c);
            return (out, cert);
        }
    }
    let (mut send, drive) = match h3_session(conn.clone(), ctx.timeout).await {
        Ok(s) => s,
        Err(e) => {
            c.error = Some(e);
            out.push(c);
            return (out, cert);
        }
    };
    let tr = Instant::now();
    match h3_get(&mut send, &p.uri, ctx.timeout).await {
        Ok((r, ttfb, total)) => {
            c.phases.push(("wait", tr - origin, ttfb));
            c.phases.push(("body", tr - origin + ttfb, total - ttfb));
            c.request = Some(r);
        }
        Err(e) => c.error = Some(e),
    }
    c.quic_rtt_ms = Some(ms(conn.rtt()));
    // Migration: a new UDP socket (new local port) under the same connection.
    if c.error.is_none() {
        let from = endpoint
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let rebound = std::net::UdpSocket::bind(SocketAddr::new(unspecified, 0))
            .and_then(|s| endpoint.rebind(s));
        let to = endpoint
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut m = Migration {
            from,
            to,
            ok: false,
            status: None,
            ms: None,
            error: None,
        };
        match rebound {
            Err(e) => m.error = Some(format!("rebind: {e}")),
            Ok(()) => {
                let tm = Instant::now();
                match h3_get(&mut send, &p.uri, ctx.timeout).await {
                    Ok((r, _, total)) => {
                        c.phases.push(("migrated", tm - origin, total));
                        m.ok = true;
                        m.status = r.status;
                        m.ms = r.total_ms;
                    }
                    Err(e) => m.error = Some(e.message),
                }
            }
        }
        c.migration = Some(m);
    }
    drop(send);
    conn.close(0u32.into(), b"done");
    drive.abort();
    let failed = c.error.is_some();
    out.push(c);
    if failed {
        endpoint.close(0u32.into(), b"");
        return (out, cert);
    }
    // 0-RTT on a second connection, with the first one's ticket.
    let mut z = Connection::new("h3-0rtt", "quic", addr.to_string());
    z.local = endpoint.local_addr().ok().map(|a| a.to_string());
    let t0 = Instant::now();
    let connecting = match endpoint.connect_with(cfg, addr, &server_name) {
        Ok(c) => c,
        Err(e) => {
            fail(&mut z, "quic", e.to_string());
            out.push(z);
            return (out, cert);
        }
    };
    let _ = tls::take_group();
    match connecting.into_0rtt() {
        Ok((conn, accepted)) => {
            let res = async {
                let (mut send, drive) = h3_session(conn.clone(), ctx.timeout).await?;
                let r = h3_get(&mut send, &p.uri, ctx.timeout).await;
                let acc = step("quic", ctx.timeout, async {
                    Ok::<_, String>(accepted.await)
                })
                .await;
                drive.abort();
                Ok::<_, StepError>((r?, acc?))
            }
            .await;
            match res {
                Ok(((r, ttfb, total), acc)) => {
                    z.phases.push(("0-rtt GET", t0 - origin, total));
                    let _ = ttfb;
                    z.request = Some(r);
                    z.early_data = Some(EarlyData {
                        offered: true,
                        attempted: true,
                        accepted: acc,
                    });
                    z.tls = Some(quic_tls(&conn, t0.elapsed()));
                    if let Some(t) = z.tls.as_mut() {
                        t.handshake_kind = Some("resumed".into());
                        t.handshake_ms = ms(total);
                    }
                }
                Err(e) => z.error = Some(e),
            }
            z.quic_rtt_ms = Some(ms(conn.rtt()));
            conn.close(0u32.into(), b"done");
        }
        Err(connecting) => {
            z.early_data = Some(EarlyData {
                offered: false,
                attempted: false,
                accepted: false,
            });
            match step("quic", ctx.timeout, connecting).await {
                Ok(conn) => {
                    let d = t0.elapsed();
                    z.phases.push(("quic", t0 - origin, d));
                    z.tls = Some(quic_tls(&conn, d));
                    conn.close(0u32.into(), b"done");
                }
                Err(e) => z.error = Some(e),
            }
        }
    }
    out.push(z);
    let _ = tokio::time::timeout(Duration::from_millis(300), endpoint.wait_idle()).await;
    (out, cert)
}

fn verdicts(t: &mut Target, r: &HttpReport, ctx: &Ctx) {
    let primary = r.connections.iter().find(|c| c.purpose == "primary");
    let Some(primary) = primary else { return };
    if let Some(e) = &primary.error {
        let what = match e.stage {
            "connect" if e.timeout => format!("TCP connect timed out: {}", e.message),
            "connect" => format!("TCP connect failed: {}", e.message),
            "tls" if e.timeout => format!("TLS handshake timed out ({}): the server accepted TCP but never answered the ClientHello", e.message),
            "tls" => format!("TLS failed: {}", e.message),
            "request" | "response body" if e.timeout => {
                format!("no HTTP response: {} (the server accepted the connection but never answered)", e.message)
            }
            _ => format!("{} failed: {}", e.stage, e.message),
        };
        t.verdict(Level::Broken, what);
    }
    if let Some(cert) = &r.certificate {
        if let Some(e) = &cert.verify_error {
            if ctx.insecure {
                t.verdict(
                    Level::Warning,
                    format!("certificate not verified ({e}); going on because of --insecure"),
                );
            }
        }
        if let Some(leaf) = cert.chain.first() {
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
    }
    if primary.error.is_some() {
        return;
    }
    let mut summary = Vec::new();
    if let Some(req) = &primary.request {
        let s = req.status.unwrap_or(0);
        if s >= 500 {
            t.verdict(Level::Broken, format!("the server answered {s}"));
        }
        summary.push(format!(
            "{} {} in {:.1} ms",
            req.protocol,
            s,
            req.total_ms.unwrap_or(0.0)
                + primary.connect_ms.unwrap_or(0.0)
                + primary.tls.as_ref().map_or(0.0, |t| t.handshake_ms)
        ));
    }
    if let Some(tls) = &primary.tls {
        let g = tls.key_exchange_group.clone().unwrap_or_default();
        let pq = g.contains("MLKEM");
        summary.push(format!(
            "{} with {}{}",
            tls.version.as_deref().unwrap_or("?"),
            g,
            if pq { " (post-quantum)" } else { "" }
        ));
        if tls.version.as_deref() == Some("TLSv1.2") {
            t.verdict(
                Level::Warning,
                "the server negotiated TLS 1.2 although TLS 1.3 was offered: a two-round-trip handshake, no 0-RTT, no post-quantum key exchange",
            );
        }
    }
    for c in &r.connections {
        if c.purpose == "primary" {
            continue;
        }
        if let Some(e) = &c.error {
            if c.purpose == "h3" {
                let why = match &r.h3 {
                    Some(h) if h.forced => format!(
                        "h3 forced but not reachable over UDP at {}: {}",
                        h.address, e.message
                    ),
                    Some(h) => format!(
                        "h3 advertised ({}) but not reachable over UDP at {}: {}",
                        h.advertised.as_deref().unwrap_or(""),
                        h.address,
                        e.message
                    ),
                    None => e.message.clone(),
                };
                t.verdict(Level::Warning, why);
            } else if c.purpose != "h2c" {
                t.verdict(
                    Level::Warning,
                    format!("{} connection: {}: {}", c.purpose, e.stage, e.message),
                );
            }
        }
        if let Some(m) = &c.migration {
            if !m.ok {
                t.verdict(
                    Level::Warning,
                    format!(
                        "QUIC connection migration failed: {}",
                        m.error.as_deref().unwrap_or("?")
                    ),
                );
            }
        }
    }
    if let Some(h3) = r
        .connections
        .iter()
        .find(|c| c.purpose == "h3" && c.error.is_none())
    {
        let zero = r
            .connections
            .iter()
            .find(|c| c.purpose == "h3-0rtt")
            .and_then(|c| c.early_data.as_ref())
            .map(|e| {
                if e.accepted {
                    ", 0-RTT accepted"
                } else if e.offered {
                    ", 0-RTT rejected"
                } else {
                    ", no 0-RTT"
                }
            })
            .unwrap_or("");
        summary.push(format!(
            "h3 reachable ({:.1} ms{zero}{})",
            h3.request.as_ref().and_then(|r| r.total_ms).unwrap_or(0.0)
                + h3.tls.as_ref().map_or(0.0, |t| t.handshake_ms),
            if h3.migration.as_ref().is_some_and(|m| m.ok) {
                ", migration ok"
            } else {
                ""
            }
        ));
    }
    if let Some(res) = r.connections.iter().find(|c| c.purpose == "resumption") {
        if let Some(t) = &res.tls {
            summary.push(if t.handshake_kind.as_deref() == Some("resumed") {
                "session resumed".to_string()
            } else {
                "session not resumed".to_string()
            });
        }
    }
    t.verdict(Level::Ok, summary.join("; "));
}

/// A plain GET of `url` (HTTP/1.1, TLS for https), for `--ice`: the body of a 200.
pub async fn fetch(url: &str, ctx: &Ctx) -> anyhow::Result<Vec<u8>> {
    let p = parse(url)?;
    let (_, addrs) = resolve(&p.host, p.port, ctx.timeout)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let (tcp, _, _) = connect(&addrs, ctx.timeout)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let origin = Instant::now();
    let mut c = Connection::new("ice", "tcp", String::new());
    if p.tls {
        let cfg = tls::client_config(ctx.verifier.clone(), &[b"http/1.1"], false)?;
        let _ = ctx.verifier.take();
        let s = step(
            "tls",
            ctx.timeout,
            tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(tls::server_name(&p.host)?, tcp),
        )
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
        if let Some(Err(e)) = ctx.verifier.take() {
            if !ctx.insecure {
                anyhow::bail!("certificate not trusted: {e} (--insecure to go on anyway)");
            }
        }
        return fetch_on(s, &p.uri, ctx, origin, &mut c).await;
    }
    fetch_on(tcp, &p.uri, ctx, origin, &mut c).await
}

async fn fetch_on<S>(
    io: S,
    uri: &Uri,
    ctx: &Ctx,
    _origin: Instant,
    _c: &mut Connection,
) -> anyhow::Result<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = http::Request::get(path)
        .header(
            http::header::HOST,
            uri.authority().map(|a| a.as_str()).unwrap_or(""),
        )
        .header(http::header::USER_AGENT, ua())
        .body(Empty::new())?;
    let resp = tokio::time::timeout(ctx.timeout, send.send_request(req))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {:.1} s", ctx.timeout.as_secs_f64()))??;
    let status = resp.status();
    let body = tokio::time::timeout(ctx.timeout, resp.into_body().collect())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "body not complete within {:.1} s",
                ctx.timeout.as_secs_f64()
            )
        })??
        .to_bytes();
    if !status.is_success() {
        anyhow::bail!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body),
            url = uri
        );
    }
    Ok(body.to_vec())
}
