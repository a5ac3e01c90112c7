//! The HTTP stack: one axum router (health, metrics, the pages of `web.rs`, the hub's
//! HTTP/WebSocket/SSE/long-poll endpoints and its gRPC services) served on every `--http`
//! (HTTP/1.1 + h2c) and `--https` (TLS, ALPN h2 + http/1.1) listener by hyper-util's auto builder
//! with upgrades, so REST, WebSocket upgrades and gRPC share each port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::tls::Acceptor as TlsAcceptor;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use switchboard_hub::codes::error as code;
use switchboard_hub::Hub;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::Service;

use crate::hub::ApiError;
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
}

/// The whole application: health, metrics, pages, hub transports, gRPC; JSON 404 for the rest.
pub(crate) fn router(state: HttpState, hub_routes: Router) -> Router {
    let base = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(crate::web::routes());
    // The gRPC routes carry tonic's "unimplemented" fallback; ours replaces it.
    hub_routes
        .merge(base)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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
    let info = st.hub.info();
    // A Redis outage degrades the hub (publishes refused, local clients kept) but not STUN/TURN:
    // still 200, so a load balancer keeps sending relay and local traffic here.
    let broker_up = st.hub.broker_healthy();
    let status = if broker_up { "ok" } else { "degraded" };
    // Written directly (no intermediate JSON tree): this is what load balancers poll.
    let node = serde_json::Value::from(info.name).to_string();
    let uid = serde_json::Value::from(info.uid).to_string();
    let body = format!(
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
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
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
#[derive(Clone, Copy)]
pub(crate) struct ConnOptions {
    /// HTTP/2 keep-alive ping period.
    pub ping: Duration,
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(options.ping)
        .keep_alive_timeout(options.ping.max(Duration::from_secs(10)))
        .enable_connect_protocol();
    let builder = Arc::new(builder);
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = crate::stopped(&mut stop) => return,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and similar: back off instead of spinning.
                    tracing::warn!(%addr, error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let router = router.clone();
            let builder = builder.clone();
            let stop = stop.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve(&builder, tcp, peer, router, stop).await,
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                                .await;
                        match handshake {
                            Ok(Ok(stream)) => serve(&builder, stream, peer, router, stop).await,
                            Ok(Err(e)) => {
                                metrics::counter!("switchboard_tls_handshake_failures_total", "listener" => "https").increment(1);
                                tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
                            }
                            Err(_) => {
                                metrics::counter!("switchboard_tls_handshake_failures_total", "listener" => "https").increment(1);
                                tracing::debug!(%peer, "HTTPS handshake timed out");
                            }
                        }
                    }
                }
            });
        }
    });
}

/// Serves one connection; on shutdown, lets in-flight requests finish (5 s at most).
async fn serve<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    peer: SocketAddr,
    router: Router,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move { Ok::<_, Infallible>(router.call(request).await.into_response()) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        }
        _ = crate::stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
        }
    }
}
