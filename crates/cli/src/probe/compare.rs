//! `--compare`: the same GET over HTTP/1.1, h2 and h3 on warm connections, `--repeat` rounds of
//! `--parallel` requests each (a page of many resources), with medians and spread. HTTP/1.1
//! gets up to six connections (what browsers open per origin) and queues the rest on them; h2
//! and h3 multiplex every request on one connection — on h2 all of them share one TCP stream
//! (a lost segment stalls them all), on h3 each is its own QUIC stream.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::http::{h3_session, ua, H3Send, Parsed};
use super::report::{median, ms, Compare};
use super::{tls, Ctx};

/// Connections HTTP/1.1 may use (browsers: 6 per origin).
const H1_CONNECTIONS: usize = 6;

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls_conn(p: &Parsed, addr: SocketAddr, alpn: &[u8], ctx: &Ctx) -> anyhow::Result<Tls> {
    let cfg = tls::client_config(ctx.verifier.clone(), &[alpn], false)?;
    let tcp = tokio::time::timeout(ctx.timeout, tokio::net::TcpStream::connect(addr)).await??;
    tcp.set_nodelay(true)?;
    let s = tokio::time::timeout(
        ctx.timeout,
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(tls::server_name(&p.host)?, tcp),
    )
    .await??;
    let _ = ctx.verifier.take();
    if s.get_ref().1.alpn_protocol() != Some(alpn) {
        anyhow::bail!(
            "the server did not agree to {}",
            String::from_utf8_lossy(alpn)
        );
    }
    Ok(s)
}

fn request(p: &Parsed, absolute: bool) -> http::Request<Empty<Bytes>> {
    let mut b = if absolute {
        http::Request::get(p.uri.clone())
    } else {
        http::Request::get(p.uri.path_and_query().map(|x| x.as_str()).unwrap_or("/")).header(
            http::header::HOST,
            p.uri.authority().map(|a| a.as_str()).unwrap_or(""),
        )
    };
    b = b.header(http::header::USER_AGENT, ua());
    b.body(Empty::new()).unwrap_or_default()
}

fn quantile(v: &[f64], q: f64) -> Option<f64> {
    let mut sorted = v.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * q).round() as usize])
}

fn summarize(
    protocol: &str,
    connections: usize,
    parallel: usize,
    samples: Vec<f64>,
    requests: Vec<f64>,
    errors: u32,
    error: Option<String>,
) -> Compare {
    let pick = |q: f64| quantile(&samples, q);
    Compare {
        protocol: protocol.to_string(),
        connections,
        parallel,
        rounds: samples.len() as u32,
        median_ms: median(&samples),
        min_ms: pick(0.0),
        p90_ms: pick(0.9),
        max_ms: pick(1.0),
        samples_ms: samples,
        request_median_ms: quantile(&requests, 0.5),
        request_p90_ms: quantile(&requests, 0.9),
        errors,
        error,
    }
}

async fn h1(p: &Parsed, addr: SocketAddr, ctx: &Ctx, repeat: u32, parallel: usize) -> Compare {
    let n = parallel.min(H1_CONNECTIONS);
    let mut senders = Vec::new();
    for _ in 0..n {
        let io = match tls_conn(p, addr, b"http/1.1", ctx).await {
            Ok(s) => s,
            Err(e) => {
                return summarize(
                    "http/1.1",
                    n,
                    parallel,
                    vec![],
                    vec![],
                    0,
                    Some(format!("{e:#}")),
                )
            }
        };
        match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io)).await {
            Ok((send, conn)) => {
                tokio::spawn(conn);
                senders.push(send);
            }
            Err(e) => {
                return summarize(
                    "http/1.1",
                    n,
                    parallel,
                    vec![],
                    vec![],
                    0,
                    Some(e.to_string()),
                )
            }
        }
    }
    let mut samples = Vec::new();
    let mut requests: Vec<f64> = Vec::new();
    let mut errors = 0;
    for _ in 0..repeat {
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for (i, mut send) in senders.drain(..).enumerate() {
            // Connection i carries requests i, i+n, i+2n, ... one after the other.
            let share = (parallel + n - 1 - i) / n;
            let reqs: Vec<_> = (0..share).map(|_| request(p, false)).collect();
            tasks.push(tokio::spawn(async move {
                let mut ok = true;
                let mut done = Vec::new();
                for r in reqs {
                    match send.send_request(r).await {
                        Ok(resp) => ok &= resp.into_body().collect().await.is_ok(),
                        Err(_) => ok = false,
                    }
                    done.push(ms(t0.elapsed()));
                }
                (send, ok, done)
            }));
        }
        let mut all = true;
        for t in tasks {
            match tokio::time::timeout(ctx.timeout, t).await {
                Ok(Ok((send, ok, done))) => {
                    all &= ok;
                    requests.extend(done);
                    senders.push(send);
                }
                _ => all = false,
            }
        }
        if all && senders.len() == n {
            samples.push(ms(t0.elapsed()));
        } else {
            errors += 1;
            if senders.len() < n {
                break;
            }
        }
    }
    summarize("http/1.1", n, parallel, samples, requests, errors, None)
}

async fn h2(p: &Parsed, addr: SocketAddr, ctx: &Ctx, repeat: u32, parallel: usize) -> Compare {
    let io = match tls_conn(p, addr, b"h2", ctx).await {
        Ok(s) => s,
        Err(e) => return summarize("h2", 1, parallel, vec![], vec![], 0, Some(format!("{e:#}"))),
    };
    let send = match hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(io),
    )
    .await
    {
        Ok((send, conn)) => {
            tokio::spawn(conn);
            send
        }
        Err(e) => return summarize("h2", 1, parallel, vec![], vec![], 0, Some(e.to_string())),
    };
    let mut samples = Vec::new();
    let mut requests: Vec<f64> = Vec::new();
    let mut errors = 0;
    for _ in 0..repeat {
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..parallel)
            .map(|_| {
                let mut s = send.clone();
                let r = request(p, true);
                tokio::spawn(async move {
                    let ok = match s.send_request(r).await {
                        Ok(resp) => resp.into_body().collect().await.is_ok(),
                        Err(_) => false,
                    };
                    ok.then(|| ms(t0.elapsed()))
                })
            })
            .collect();
        let mut all = true;
        for t in tasks {
            match tokio::time::timeout(ctx.timeout, t).await {
                Ok(Ok(Some(d))) => requests.push(d),
                _ => all = false,
            }
        }
        if all {
            samples.push(ms(t0.elapsed()));
        } else {
            errors += 1;
        }
    }
    summarize("h2", 1, parallel, samples, requests, errors, None)
}

async fn h3(p: &Parsed, addr: SocketAddr, ctx: &Ctx, repeat: u32, parallel: usize) -> Compare {
    let fail = |e: String| summarize("h3", 1, parallel, vec![], vec![], 0, Some(e));
    let cfg = match tls::client_config(ctx.verifier.clone(), &[b"h3"], true)
        .map_err(|e| e.to_string())
        .and_then(|c| {
            quinn::crypto::rustls::QuicClientConfig::try_from(c).map_err(|e| e.to_string())
        }) {
        Ok(c) => quinn::ClientConfig::new(Arc::new(c)),
        Err(e) => return fail(e),
    };
    let any: IpAddr = if addr.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let endpoint = match quinn::Endpoint::client(SocketAddr::new(any, 0)) {
        Ok(e) => e,
        Err(e) => return fail(e.to_string()),
    };
    let name = p
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let conn = match endpoint.connect_with(cfg, addr, &name) {
        Ok(c) => match tokio::time::timeout(ctx.timeout, c).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return fail(e.to_string()),
            Err(_) => return fail("no QUIC handshake in time".into()),
        },
        Err(e) => return fail(e.to_string()),
    };
    let _ = ctx.verifier.take();
    let (send, drive): (H3Send, _) = match h3_session(conn.clone(), ctx.timeout).await {
        Ok(s) => s,
        Err(e) => return fail(e.message),
    };
    let mut samples = Vec::new();
    let mut requests: Vec<f64> = Vec::new();
    let mut errors = 0;
    for _ in 0..repeat {
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..parallel)
            .map(|_| {
                let mut s = send.clone();
                let uri = p.uri.clone();
                tokio::spawn(async move {
                    let req = http::Request::get(uri)
                        .header(http::header::USER_AGENT, ua())
                        .body(())
                        .ok()?;
                    let mut st = s.send_request(req).await.ok()?;
                    st.finish().await.ok()?;
                    st.recv_response().await.ok()?;
                    while let Some(mut c) = st.recv_data().await.ok()? {
                        c.advance(c.remaining());
                    }
                    Some(ms(t0.elapsed()))
                })
            })
            .collect();
        let mut all = true;
        for t in tasks {
            match tokio::time::timeout(ctx.timeout, t).await {
                Ok(Ok(Some(d))) => requests.push(d),
                _ => all = false,
            }
        }
        if all {
            samples.push(ms(t0.elapsed()));
        } else {
            errors += 1;
        }
    }
    drive.abort();
    conn.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_millis(300), endpoint.wait_idle()).await;
    summarize("h3", 1, parallel, samples, requests, errors, None)
}

/// The three protocols in turn; h3 only when `h3_addr` is known (advertised or forced).
pub async fn run(
    p: &Parsed,
    addr: SocketAddr,
    h3_addr: Option<SocketAddr>,
    ctx: &Ctx,
) -> Vec<Compare> {
    let (repeat, parallel) = (ctx.repeat, ctx.parallel);
    let mut out = vec![
        h1(p, addr, ctx, repeat, parallel).await,
        h2(p, addr, ctx, repeat, parallel).await,
    ];
    if let Some(a) = h3_addr {
        out.push(h3(p, a, ctx, repeat, parallel).await);
    }
    out
}
