//! The hub routes (HTTP, WebSocket, SSE, long-poll, gRPC, ICE servers) and the maintenance task.

use std::time::Duration;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use axum::Router;
use switchboard_hub::Hub;
use tokio::sync::watch;

use super::ctx::Ctx;
use super::{centrifugo_api, grpc, ice, poll, rest, sse, ws};

/// The hub routes (HTTP, WebSocket, SSE, long-poll, gRPC) to merge into the HTTP router.
pub(crate) fn routes(ctx: Ctx, ice: Option<ice::Ice>) -> Router {
    let http = Router::new()
        // `any`: WebSocket over HTTP/1.1 (GET + Upgrade) and over HTTP/2 (RFC 8441 CONNECT).
        .route("/v1/ws", any(ws::handler))
        // Centrifugo's client protocol, for the apps of its SDKs (docs/compat.md).
        .route("/connection/websocket", any(ws::centrifugo_handler))
        .route("/v1/sse", get(sse::handler))
        .route("/v1/poll", get(poll::handler))
        // A client publish is one message: the WebSocket message limit applies (not axum's
        // 2 MB default).
        .route(
            "/v1/publish",
            post(rest::publish).layer(DefaultBodyLimit::max(ctx.max_frame)),
        )
        .route("/v1/api/{method}", post(rest::api))
        // Centrifugo's server API, for `cent` and the other Centrifugo API clients.
        .route("/api/{method}", post(centrifugo_api::api))
        .with_state(ctx.clone());
    let ice = Router::new()
        .route("/v1/ice-servers", get(ice::ice_servers))
        .route(
            "/v1/ice-servers/revoke",
            post(ice::revoke).layer(DefaultBodyLimit::max(4096)),
        )
        .with_state(Arc::new(ice::IceCtx {
            hub: ctx.clone(),
            ice,
        }));
    grpc::routes(ctx).merge(http).merge(ice)
}

/// Runs [`Hub::maintain`] every [`Hub::maintenance_interval`] until shutdown.
pub(crate) async fn maintenance(hub: Hub, mut stop: watch::Receiver<bool>) {
    let period = hub.maintenance_interval().max(Duration::from_secs(1));
    let mut every = tokio::time::interval(period);
    every.tick().await;
    loop {
        tokio::select! {
            _ = crate::stopped(&mut stop) => return,
            _ = every.tick() => hub.maintain().await,
        }
    }
}
