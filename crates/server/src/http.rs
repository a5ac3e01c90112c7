//! The HTTP server: `/healthz` and `/metrics` now; the hub's transports join it later.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::ListenerInfo;

/// State the HTTP handlers read.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub metrics: PrometheusHandle,
    pub listeners: Arc<Vec<ListenerInfo>>,
}

pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

async fn healthz(State(st): State<HttpState>) -> Response {
    let listeners: Vec<_> = st
        .listeners
        .iter()
        .map(|l| {
            serde_json::json!({
                "protocol": l.protocol,
                "transport": l.transport,
                "address": l.addr.to_string(),
                "status": "ok",
            })
        })
        .collect();
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "components": { "stun": { "status": "ok" }, "listeners": listeners },
    }))
    .into_response()
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

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": "not found"})),
    )
        .into_response()
}

pub(crate) fn spawn(
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) {
    let mut stop = shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                crate::stopped(&mut stop).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(%addr, error = %e, "HTTP server stopped");
        }
    });
}
