//! The HTTP stack: one axum router (health, metrics, the pages of `web.rs`, the hub's
//! HTTP/WebSocket/SSE/long-poll endpoints and its gRPC services) served on every `--http`
//! (HTTP/1.1 + h2c) and `--https` (TLS, ALPN h2 + http/1.1) listener by hyper, HTTP/1 with
//! upgrades or HTTP/2 as the connection's first bytes say, so REST, WebSocket upgrades and gRPC
//! share each port.

mod access;
mod cork;
pub(crate) mod h3;
mod web;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::tls::Acceptor as TlsAcceptor;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use switchboard_hub::codes::error as code;
use switchboard_hub::Hub;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::Service;

use crate::hub::error::ApiError;
use crate::net::limits::{ConnGuard, ConnLimiter};
use crate::ListenerInfo;

/// ALPN protocols of the HTTPS listeners.
pub(crate) const HTTPS_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// State the health and metrics handlers read.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub metrics: PrometheusHandle,
    pub listeners_json: Arc<str>,
    pub hub: Hub,
    /// "memory" or "redis".
    pub broker: &'static str,
    /// The last `/healthz` body (see [`HEALTH_FRESH`]).
    pub health: Arc<std::sync::RwLock<Option<Health>>>,
}

/// How long a `/healthz` body is served again: its hub counts walk every channel of the hub
/// (32 locked shards), which a load balancer polling many times a second should not pay per
/// request. The status is never stale: a body is reused only while the broker's state matches.
pub(crate) const HEALTH_FRESH: Duration = Duration::from_millis(100);

/// A `/healthz` body and when it was made.
pub(crate) struct Health {
    at: std::time::Instant,
    broker_up: bool,
    body: bytes::Bytes,
}

/// The whole application: health, metrics, pages, hub transports, gRPC; JSON 404 for the rest.
/// Every request passes the `Origin` check of [`Origins`], then the [`Gate`] of its
/// connection's [`Surface`], and is written to the access log when `access_log` is on.
pub(crate) fn router(
    state: HttpState,
    hub_routes: Router,
    origins: Arc<Origins>,
    gate: Gate,
    access_log: bool,
) -> Router {
    let base = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(web::routes());
    // The gRPC routes carry tonic's "unimplemented" fallback; ours replaces it.
    let router = hub_routes
        .merge(base)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(gate, check_surface))
        .layer(axum::middleware::from_fn_with_state(origins, check_origin));
    if access_log {
        router.layer(axum::middleware::from_fn(access::log))
    } else {
        router
    }
}

/// Which side of the server a connection reached, as a request extension: it decides whether
/// the admin endpoints (`/metrics`, the console) and the server API are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Surface {
    /// A main listener, through a loopback address (the machine itself).
    Loopback,
    /// A main listener, through any other address.
    Public,
    /// The `--admin` listener.
    Admin,
}

impl Surface {
    /// The surface of a main-listener connection whose local (server-side) address is `ip`;
    /// unknown is public.
    pub(crate) fn of_local(ip: Option<std::net::IpAddr>) -> Self {
        match ip {
            Some(ip) if ip.to_canonical().is_loopback() => Surface::Loopback,
            _ => Surface::Public,
        }
    }
}

/// What the main listeners serve beyond the public endpoints.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gate {
    /// `/metrics` and the console on public connections too (`[http] public_admin`).
    pub public_admin: bool,
    /// The server API on the admin listener only (`[http] api_admin_only`).
    pub api_admin_only: bool,
}

/// The operator's endpoints: metrics and the console page with its script.
fn is_admin_path(path: &str) -> bool {
    matches!(path, "/metrics" | "/" | "/assets/console.js")
}

/// The server API: REST, gRPC `HubApi`, and ICE credential revocation.
fn is_api_path(path: &str) -> bool {
    path.starts_with("/v1/api/")
        || path.starts_with("/api/")
        || path.starts_with("/switchboard.v1.HubApi/")
        || path == "/v1/ice-servers/revoke"
}

/// Answers 404 (as for any unknown path: nothing to learn) for admin endpoints on public
/// connections unless `public_admin`, and for the server API off the admin listener when
/// `api_admin_only`. A request without a [`Surface`] is public.
async fn check_surface(
    State(gate): State<Gate>,
    request: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> Response {
    let surface = request
        .extensions()
        .get::<Surface>()
        .copied()
        .unwrap_or(Surface::Public);
    let path = request.uri().path();
    let hidden = match surface {
        Surface::Admin => false,
        Surface::Loopback => gate.api_admin_only && is_api_path(path),
        Surface::Public => {
            (!gate.public_admin && is_admin_path(path))
                || (gate.api_admin_only && is_api_path(path))
        }
    };
    if hidden {
        return not_found(request.headers().clone()).await;
    }
    next.run(request).await
}

/// `SCHEME://HOST[:PORT]` as `(scheme, host, port)`, lower-cased, with the scheme's default
/// port filled in (80 for http and ws, 443 for https and wss); `None` for anything else
/// (`null`, paths, user info).
pub(crate) fn origin_authority(origin: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = origin.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => return None,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '@', '?', '#']) {
        return None;
    }
    let (host, port) = split_host_port(rest, default)?;
    Some((scheme, host, port))
}

/// `host[:port]` (IPv6 in brackets) as a lower-cased host and a port.
fn split_host_port(authority: &str, default: u16) -> Option<(String, u16)> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') && (!h.contains(':') || h.ends_with(']')) => {
            (h, p.parse().ok()?)
        }
        _ => (authority, default),
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// The origins allowed to use the hub from a browser: the server's own (the request's
/// authority), those listed in `[http] allowed_origins`, or any with `*`.
pub(crate) struct Origins {
    any: bool,
    listed: Vec<(String, String, u16)>,
    /// Pages served from this machine (`localhost`, 127.0.0.0/8, `[::1]`, any port).
    loopback: bool,
}

/// Whether an origin's host names this machine's loopback.
fn is_loopback_host(host: &str) -> bool {
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

impl Origins {
    pub(crate) fn new(allowed: &[String], loopback: bool) -> Arc<Self> {
        Arc::new(Origins {
            any: allowed.iter().any(|o| o.trim() == "*"),
            listed: allowed.iter().filter_map(|o| origin_authority(o)).collect(),
            loopback,
        })
    }

    /// Whether `origin` may use the endpoints of a request to `authority` (its `Host`), and
    /// whether that use is cross-origin (so CORS headers are due).
    fn judge(&self, origin: &str, authority: Option<&str>) -> Verdict {
        let Some(o) = origin_authority(origin) else {
            return if self.any {
                Verdict::CrossOrigin
            } else {
                Verdict::Refused
            };
        };
        let same = authority
            .and_then(|a| split_host_port(a, o.2))
            .is_some_and(|(host, port)| host == o.1 && port == o.2);
        if same {
            Verdict::SameOrigin
        } else if self.any || self.listed.contains(&o) || (self.loopback && is_loopback_host(&o.1))
        {
            Verdict::CrossOrigin
        } else {
            Verdict::Refused
        }
    }
}

enum Verdict {
    SameOrigin,
    CrossOrigin,
    Refused,
}

/// Metric: requests refused for their `Origin`.
const ORIGIN_REFUSED: &str = "switchboard_http_origin_refused_total";

/// The `Origin` check. A request without `Origin` (not from a browser page) passes. A page of
/// another origin that is not allowed gets 403 for the hub endpoints (`/v1/...`, WebSocket
/// upgrades included) and for every state-changing method; allowed cross-origin pages get CORS
/// headers and their preflights answered.
async fn check_origin(
    State(origins): State<Arc<Origins>>,
    request: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> Response {
    let Some(origin) = request
        .headers()
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("null").to_owned())
    else {
        return next.run(request).await;
    };
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
    let method = request.method().clone();
    let guarded = request.uri().path().starts_with("/v1/")
        || !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    match origins.judge(&origin, authority.as_deref()) {
        Verdict::SameOrigin => next.run(request).await,
        Verdict::Refused if guarded || method == Method::OPTIONS => {
            metrics::counter!(ORIGIN_REFUSED).increment(1);
            tracing::debug!(%origin, path = request.uri().path(), "request from a page of a refused origin");
            ApiError::new(
                StatusCode::FORBIDDEN,
                code::PERMISSION_DENIED,
                "origin not allowed (server setting [http] allowed_origins, flag --allow-origin)",
            )
            .into_response()
        }
        Verdict::Refused => next.run(request).await,
        Verdict::CrossOrigin => {
            let value = HeaderValue::from_str(&origin).ok();
            let preflight = method == Method::OPTIONS
                && request
                    .headers()
                    .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
            let mut response = if preflight {
                let mut r = StatusCode::NO_CONTENT.into_response();
                let h = r.headers_mut();
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, POST, OPTIONS"),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("authorization, content-type, last-event-id"),
                );
                h.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("600"),
                );
                r
            } else {
                next.run(request).await
            };
            let h = response.headers_mut();
            if let Some(v) = value {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            }
            h.append(header::VARY, HeaderValue::from_static("Origin"));
            response
        }
    }
}

/// The `listeners` array of `/healthz` (fixed once the server is up, so serialized once).
pub(crate) fn listeners_json(listeners: &[ListenerInfo]) -> Arc<str> {
    let list: Vec<_> = listeners
        .iter()
        .map(|l| {
            let mut v = serde_json::json!({
                "protocol": l.protocol,
                "transport": l.transport,
                "address": l.addr.to_string(),
                "status": "ok",
            });
            if !l.note.is_empty() {
                v["note"] = l.note.into();
            }
            v
        })
        .collect();
    serde_json::Value::from(list).to_string().into()
}

async fn healthz(State(st): State<HttpState>) -> Response {
    // A Redis outage degrades the hub (publishes refused, local clients kept) but not STUN/TURN:
    // still 200, so a load balancer keeps sending relay and local traffic here.
    let broker_up = st.hub.broker_healthy();
    let now = std::time::Instant::now();
    let cached = st.health.read().ok().and_then(|h| {
        h.as_ref()
            .filter(|h| h.broker_up == broker_up && now.duration_since(h.at) < HEALTH_FRESH)
            .map(|h| h.body.clone())
    });
    let body = match cached {
        Some(body) => body,
        None => {
            let body = bytes::Bytes::from(health_body(&st, broker_up));
            if let Ok(mut h) = st.health.write() {
                *h = Some(Health {
                    at: now,
                    broker_up,
                    body: body.clone(),
                });
            }
            body
        }
    };
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The `/healthz` JSON, written directly (no intermediate JSON tree).
fn health_body(st: &HttpState, broker_up: bool) -> String {
    let info = st.hub.info();
    let status = if broker_up { "ok" } else { "degraded" };
    let node = serde_json::Value::from(info.name).to_string();
    let uid = serde_json::Value::from(info.uid).to_string();
    format!(
        concat!(
            r#"{{"status":"{status}","version":"{version}","components":{{"#,
            r#""stun":{{"status":"ok"}},"#,
            r#""hub":{{"status":"{status}","node":{node},"uid":{uid},"broker":"{broker}","#,
            r#""broker_status":"{broker_status}","connections":{connections},"users":{users},"#,
            r#""channels":{channels},"subscriptions":{subscriptions},"uptime_secs":{uptime}}},"#,
            r#""listeners":{listeners}}}}}"#
        ),
        status = status,
        version = env!("CARGO_PKG_VERSION"),
        node = node,
        uid = uid,
        broker = st.broker,
        broker_status = if broker_up { "up" } else { "down" },
        connections = info.num_clients,
        users = info.num_users,
        channels = info.num_channels,
        subscriptions = info.num_subs,
        uptime = info.uptime,
        listeners = st.listeners_json,
    )
}

async fn metrics(State(st): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}

async fn not_found(headers: axum::http::HeaderMap) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        // A gRPC client asked for a service or method we do not have: UNIMPLEMENTED.
        return (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/grpc"),
                (header::HeaderName::from_static("grpc-status"), "12"),
                (
                    header::HeaderName::from_static("grpc-message"),
                    "unknown service or method",
                ),
            ],
        )
            .into_response();
    }
    ApiError::new(StatusCode::NOT_FOUND, code::METHOD_NOT_FOUND, "not found").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        code::METHOD_NOT_FOUND,
        "method not allowed",
    )
    .into_response()
}

/// Connection-level options.
#[derive(Clone)]
pub(crate) struct ConnOptions {
    /// HTTP/2 keep-alive ping period.
    pub ping: Duration,
    /// Time a connection (after TLS) has to send its first request.
    pub first_request: Duration,
    /// Caps shared by every HTTP and HTTPS listener.
    pub limiter: Arc<ConnLimiter>,
    /// The least request body rate, once its grace period is over.
    pub body_rate: Option<BodyRate>,
    /// The admin listener (every endpoint served), not a main one.
    pub admin: bool,
}

/// Serves the connections a listener (or the one-port classifier, `crate::mux`) hands over:
/// the HTTP builder, the router, the connection options and the shutdown signal they share.
#[derive(Clone)]
pub(crate) struct Conns {
    builders: Arc<Builders>,
    router: Router,
    options: ConnOptions,
    stop: watch::Receiver<bool>,
}

impl Conns {
    pub(crate) fn new(
        router: Router,
        options: ConnOptions,
        shutdown: &watch::Receiver<bool>,
    ) -> Self {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.timer(TokioTimer::new())
            // Also the idle time allowed between keep-alive requests.
            .header_read_timeout(Duration::from_secs(30));
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .keep_alive_interval(options.ping)
            .keep_alive_timeout(options.ping.max(Duration::from_secs(10)))
            .enable_connect_protocol();
        Conns {
            builders: Arc::new(Builders { h1, h2 }),
            router,
            options,
            stop: shutdown.clone(),
        }
    }

    /// The same with another router (one with `Alt-Svc`, say).
    pub(crate) fn with_router(&self, router: Router) -> Self {
        Conns {
            router,
            ..self.clone()
        }
    }

    /// The caps of these connections.
    pub(crate) fn limiter(&self) -> &Arc<ConnLimiter> {
        &self.options.limiter
    }

    /// Serves one connection (plain, or after its TLS handshake) holding its slot `guard`, which
    /// is freed when the socket goes, wherever it went (an upgraded WebSocket too). `local` is
    /// the server side's address (the [`Surface`] of a main listener depends on it).
    pub(crate) fn serve<I>(
        &self,
        io: I,
        guard: ConnGuard,
        peer: SocketAddr,
        local: Option<SocketAddr>,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let surface = if self.options.admin {
            Surface::Admin
        } else {
            Surface::of_local(local.map(|a| a.ip()))
        };
        let io = Guarded { io, _guard: guard };
        let service = ConnService {
            router: self.router.clone(),
            peer,
            surface,
            body_rate: self.options.body_rate,
            requested: Arc::new(AtomicBool::new(false)),
        };
        serve(
            self.builders.clone(),
            io,
            service,
            peer,
            self.options.first_request,
            self.stop.clone(),
        )
    }
}

/// Serves `router` on `listener` (TLS when `tls` is set) until shutdown.
pub(crate) fn spawn(
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: Router,
    options: ConnOptions,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) {
    let mut stop = shutdown.clone();
    let listener_name = match (&tls, options.admin) {
        (_, true) => "admin",
        (Some(_), false) => "https",
        (None, false) => "http",
    };
    let conns = Conns::new(router, options, shutdown);
    tasks.spawn(async move {
        let mut backoff = crate::net::AcceptBackoff::default();
        loop {
            let accepted = tokio::select! {
                _ = crate::stopped(&mut stop) => return,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => {
                    backoff.reset();
                    a
                }
                Err(e) => {
                    // Out of descriptors and similar: count, back off instead of spinning
                    // (the other listeners keep their share, see `net::fit_descriptor_limit`).
                    backoff.failed(listener_name, addr, &e).await;
                    continue;
                }
            };
            let guard = match conns.limiter().try_acquire(peer.ip()) {
                Ok(g) => g,
                Err(why) => {
                    tracing::debug!(%peer, reason = why.as_str(), "HTTP connection refused by a cap");
                    drop(tcp);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let local = tcp.local_addr().ok();
            let conns = conns.clone();
            // The slot goes with the socket, into a WebSocket or other upgrade too, so an
            // upgraded connection still counts until it closes. Plain and TLS connections are
            // tasks of their own types: a task is as large as its largest state, and a plain
            // connection's (an idle SSE stream's, say) was the TLS one's, three times its own.
            match tls.clone() {
                None => {
                    tokio::spawn(conns.serve(tcp, guard, peer, local));
                }
                Some(acceptor) => {
                    tokio::spawn(async move {
                        // The handshake boxed (its state is gone once it is done), the stream
                        // boxed too: it is large, and would be stored in each future it passes
                        // through.
                        let stream = {
                            let failed = |e: &std::io::Error| {
                                metrics::counter!("switchboard_tls_handshake_failures_total", "listener" => "https").increment(1);
                                tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
                            };
                            let handshake = Box::pin(tokio::time::timeout(
                                Duration::from_secs(10),
                                acceptor.accept(tcp, failed),
                            ))
                            .await;
                            match handshake {
                                Ok(Ok(stream)) => Box::new(stream),
                                Ok(Err(_)) => return,
                                Err(_) => {
                                    metrics::counter!("switchboard_tls_handshake_failures_total", "listener" => "https").increment(1);
                                    tracing::debug!(%peer, "HTTPS handshake timed out");
                                    return;
                                }
                            }
                        };
                        conns.serve(stream, guard, peer, local).await
                    });
                }
            }
        }
    });
}

/// A socket with its connection slot: the slot is freed when the socket is dropped, wherever it
/// went (hyper, a TLS stream, an upgraded WebSocket).
struct Guarded<I> {
    io: I,
    _guard: ConnGuard,
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

forward_async_write!(I, Guarded<I>, io);

/// Metric: HTTP connections closed because no request arrived in time.
const FIRST_REQUEST_TIMEOUTS: &str = "switchboard_http_first_request_timeouts_total";

/// The router as the hyper service of one connection, which notes that a request came.
#[derive(Clone)]
struct ConnService {
    router: Router,
    peer: SocketAddr,
    surface: Surface,
    body_rate: Option<BodyRate>,
    requested: Arc<AtomicBool>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    // Boxed: hyper keeps room for this future for the connection's life (a kept-alive
    // connection's, an SSE stream's), and the router's is large and lives for one request.
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.requested.store(true, Ordering::Relaxed);
        // gRPC streams are long-lived and may stay quiet: no minimum rate for them.
        let grpc = request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let rate = if grpc { None } else { self.body_rate };
        let mut request = request.map(|body| MinRateBody::new(body, rate));
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(self.surface);
        let response = self.router.clone().call(request);
        Box::pin(async move { Ok(response.await.into_response()) })
    }
}

/// hyper's HTTP/1 and HTTP/2 connection settings.
struct Builders {
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

/// The HTTP/2 connection preface (RFC 9113 §3.4): how an HTTP/2 connection begins.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the first bytes of a connection, up to the length of the HTTP/2 preface: whether it is
/// HTTP/2 and how many bytes `head` holds. Stops at the first byte that is not the preface's
/// (HTTP/1) or at the end of the stream.
async fn sniff<I: AsyncRead + Unpin>(
    io: &mut I,
    head: &mut [u8; 24],
) -> std::io::Result<(bool, usize)> {
    use tokio::io::AsyncReadExt;
    let mut filled = 0;
    while filled < head.len() {
        let n = io.read(&mut head[filled..]).await?;
        if n == 0 || head[filled..filled + n] != H2_PREFACE[filled..filled + n] {
            return Ok((false, filled + n));
        }
        filled += n;
    }
    Ok((true, filled))
}

/// A connection with the bytes [`sniff`] read from it put back in front.
struct Sniffed<I> {
    io: I,
    head: [u8; 24],
    pos: u8,
    len: u8,
}

impl<I: AsyncRead + Unpin> AsyncRead for Sniffed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pos == this.len {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let (pos, len) = (usize::from(this.pos), usize::from(this.len));
        let n = (len - pos).min(buf.remaining());
        buf.put_slice(&this.head[pos..pos + n]);
        this.pos += n as u8;
        // The rest of what has arrived comes in the same read: hyper, given only the sniffed
        // bytes, reads again into a buffer twice as large (16 KiB, kept for the connection's
        // life). A failure or the end of the stream shows at the next read.
        if buf.remaining() > 0 {
            let _ = Pin::new(&mut this.io).poll_read(cx, buf);
        }
        Poll::Ready(Ok(()))
    }
}

forward_async_write!(I, Sniffed<I>, io);

/// An HTTP/1 or HTTP/2 connection of hyper's.
trait HttpConn: Future<Output = Result<(), hyper::Error>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> HttpConn for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self)
    }
}

impl<I, S, B> HttpConn for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self)
    }
}

/// Serves one connection; on shutdown, lets in-flight requests finish (5 s at most). A
/// connection that sends no request within `first_request` is closed.
///
/// Its first bytes tell HTTP/2 (the preface) from HTTP/1, served by hyper's connection of that
/// version (hyper-util's auto connection holds room for both, twice an HTTP/1 connection's size,
/// and handed hyper the sniffed bytes alone, which doubled its read buffer). The HTTP/2
/// connection is boxed: a task is as large as its largest state.
#[allow(clippy::manual_async_fn)] // an async fn would store its arguments twice
fn serve<I>(
    builders: Arc<Builders>,
    mut io: I,
    service: ConnService,
    peer: SocketAddr,
    first_request: Duration,
    mut stop: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'static
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        // Boxed, and dropped once it has done its work: an idle connection keeps no timer.
        let mut first = Some(Box::pin(tokio::time::sleep(first_request)));
        let mut head = [0u8; 24];
        let sniffed = tokio::select! {
            r = sniff(&mut io, &mut head) => r,
            () = first.as_mut().expect("set above") => {
                metrics::counter!(FIRST_REQUEST_TIMEOUTS).increment(1);
                tracing::debug!(%peer, "HTTP connection sent no request in time: closed");
                return;
            }
            _ = crate::stopped(&mut stop) => return,
        };
        let (h2, len) = match sniffed {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                return;
            }
        };
        let requested = service.requested.clone();
        let (io, cork) = cork::Cork::new(Sniffed {
            io,
            head,
            pos: 0,
            len: len as u8,
        });
        let io = TokioIo::new(io);
        if h2 {
            let mut conn = Box::pin(builders.h2.serve_connection(io, service));
            let corked = (cork, cork::Hold::NextPoll);
            run_conn(conn.as_mut(), corked, first, &requested, peer, stop).await
        } else {
            let conn = builders.h1.serve_connection(io, service).with_upgrades();
            let corked = (cork, cork::Hold::Poll);
            run_conn(std::pin::pin!(conn), corked, first, &requested, peer, stop).await
        }
    }
}

/// Runs `conn` until it ends, the first request is late or the server stops (see [`serve`]),
/// corked: what it writes in a poll leaves together (see [`cork`]).
async fn run_conn<C: HttpConn + ?Sized>(
    mut conn: Pin<&mut C>,
    (cork, hold): (cork::CorkHandle, cork::Hold),
    mut first: Option<Pin<Box<tokio::time::Sleep>>>,
    requested: &AtomicBool,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            // Corked: the responses of one poll leave in one write (see `cork`).
            r = cork::Corked::new(conn.as_mut(), cork.clone(), hold) => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = async { first.as_mut().expect("waiting").await }, if first.is_some() => {
                if !requested.load(Ordering::Relaxed) {
                    metrics::counter!(FIRST_REQUEST_TIMEOUTS).increment(1);
                    tracing::debug!(%peer, "HTTP connection sent no request in time: closed");
                    return;
                }
                first = None;
            }
            _ = crate::stopped(&mut stop) => {
                conn.as_mut().graceful_shutdown();
                let conn = cork::Corked::new(conn.as_mut(), cork, cork::Hold::Poll);
                let _ = Box::pin(tokio::time::timeout(Duration::from_secs(5), conn)).await;
                return;
            }
        }
    }
}

/// The least rate of a request body: after `grace`, `bytes_per_sec` on average.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyRate {
    pub bytes_per_sec: u64,
    pub grace: Duration,
}

/// A request body cut off (with an error the handlers answer as 408) when it arrives slower
/// than its [`BodyRate`].
pub(crate) struct MinRateBody {
    inner: Incoming,
    rate: Option<BodyRate>,
    start: tokio::time::Instant,
    received: u64,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl MinRateBody {
    fn new(inner: Incoming, rate: Option<BodyRate>) -> Self {
        MinRateBody {
            inner,
            rate,
            start: tokio::time::Instant::now(),
            received: 0,
            timer: None,
        }
    }

    /// When the bytes received so far stop being enough.
    fn deadline(&self, rate: BodyRate) -> tokio::time::Instant {
        let earned = Duration::from_secs_f64(self.received as f64 / rate.bytes_per_sec as f64);
        self.start + rate.grace + earned.min(Duration::from_secs(86_400))
    }
}

/// The error of a body that arrived too slowly.
#[derive(Debug, thiserror::Error)]
#[error("{SLOW_BODY_MESSAGE} (less than {0} bytes/s)")]
pub(crate) struct SlowBody(u64);

/// What a client whose body was cut off is told.
pub(crate) const SLOW_BODY_MESSAGE: &str = "arrived too slowly";

/// Whether `e` (or what caused it) is a [`SlowBody`].
pub(crate) fn is_slow_body(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<SlowBody>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Metric: request bodies cut off for arriving too slowly.
const SLOW_BODIES: &str = "switchboard_http_slow_bodies_total";

impl hyper::body::Body for MinRateBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let Some(rate) = this.rate else {
                    return Poll::Pending;
                };
                let deadline = this.deadline(rate);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        metrics::counter!(SLOW_BODIES).increment(1);
                        this.rate = None;
                        Poll::Ready(Some(Err(SlowBody(rate.bytes_per_sec).into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
