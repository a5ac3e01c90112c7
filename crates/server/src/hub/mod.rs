//! The hub's transports: thin adapters from HTTP, WebSocket, SSE, long-poll and gRPC onto
//! [`switchboard_hub::Hub`] and [`switchboard_hub::Session`]. Semantics (auth, permissions,
//! recovery, limits, codes) live in the hub; this module only moves frames.
//!
//! | file | endpoint |
//! | --- | --- |
//! | `ws.rs` | `GET /v1/ws` (subprotocols `switchboard.json`, `switchboard.proto`) |
//! | `sse.rs` | `GET /v1/sse?channel=...` |
//! | `poll.rs` | `GET /v1/poll?channel=...&since=...` |
//! | `rest.rs` | `POST /v1/publish`, `POST /v1/api/<method>` |
//! | `grpc.rs` | gRPC `switchboard.v1.Hub` and `switchboard.v1.HubApi` |
//! | `webtransport.rs` | WebTransport `/v1/wt` over HTTP/3 (session in `crate::h3`) |
//!
//! `stream.rs` holds the run loop shared by the framed, bidirectional transports (WebSocket,
//! the gRPC `Connect` stream, WebTransport streams).

mod grpc;
pub(crate) mod ice;
mod poll;
mod rest;
mod sse;
mod stream;
#[cfg(test)]
mod tests;
pub(crate) mod webtransport;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use switchboard_hub::codes::error as code;
use switchboard_hub::{proto, AuthFailure, Hub, HubError, Session};
use tokio::sync::watch;

use crate::config::Settings;
use crate::limits::FailureTracker;

/// What every hub transport needs: the hub and the transport settings.
pub(crate) struct HubCtx {
    pub hub: Hub,
    pub api_keys: Vec<String>,
    pub anonymous_loopback_only: bool,
    /// WebSocket ping / SSE heartbeat period.
    pub ping: Duration,
    /// Silence allowed on a WebSocket (and time to send `connect`).
    pub idle: Duration,
    /// Longest long-poll wait.
    pub poll_timeout: Duration,
    /// Largest WebSocket message / gRPC message accepted (derived from the hub's
    /// `max_message_size`: twice it plus 16 KiB of envelope, for base64 and JSON overhead).
    pub max_frame: usize,
    /// Becomes true when the server stops: live connections send disconnect 3001.
    pub stop: watch::Receiver<bool>,
    /// How long a framed connection gathers pushes before writing them (`[hub] write_delay_ms`).
    pub write_delay: Duration,
    /// ICE servers and TURN credential revocation (absent when STUN/TURN is not served).
    pub ice: Option<ice::Ice>,
    /// Failed server-API authentications per client address.
    pub api_failures: FailureTracker,
    /// When a failed authentication was last logged (failures are logged at most once a second).
    api_failure_logged: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Failed server-API authentications one address may make per [`API_FAILURE_WINDOW`] before
/// every server-API call from it is refused (429) for the rest of the window.
pub(crate) const API_MAX_FAILURES: u32 = 10;
/// See [`API_MAX_FAILURES`].
pub(crate) const API_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Metric: failed server-API authentications, label `result` (`refused`: wrong or missing
/// key; `blocked`: the address is blocked after too many).
const API_AUTH_FAILURES: &str = "switchboard_api_auth_failures_total";

pub(crate) type Ctx = Arc<HubCtx>;

impl HubCtx {
    pub(crate) fn new(
        hub: Hub,
        settings: &Settings,
        stop: watch::Receiver<bool>,
        ice: Option<ice::Ice>,
    ) -> Ctx {
        let h = &settings.http;
        let max_frame = hub
            .config()
            .limits
            .max_message_size
            .saturating_mul(2)
            .saturating_add(16 * 1024);
        let write_delay = Duration::from_millis(hub.config().write_delay_ms.min(1000));
        Arc::new(HubCtx {
            ice,
            write_delay,
            hub,
            api_keys: h.api_keys.clone(),
            anonymous_loopback_only: h.anonymous_loopback_only,
            ping: Duration::from_secs(h.ping_interval_secs.max(1)),
            idle: Duration::from_secs(h.idle_timeout_secs.max(1)),
            poll_timeout: Duration::from_secs(h.poll_timeout_secs.max(1)),
            max_frame,
            stop,
            api_failures: FailureTracker::new(API_MAX_FAILURES, API_FAILURE_WINDOW),
            api_failure_logged: std::sync::Mutex::new(None),
        })
    }

    /// Authenticates a connection: the hub checks the token; anonymous sessions are refused
    /// here when they come from a non-loopback peer and `anonymous_loopback_only` is set.
    pub(crate) fn connect(
        &self,
        request: &proto::ConnectRequest,
        transport: &str,
        peer: Option<SocketAddr>,
    ) -> Result<Session, HubError> {
        let session = self
            .hub
            .connect_from(request, transport, peer.map(|p| p.ip()))?;
        let loopback = peer.is_some_and(|p| p.ip().to_canonical().is_loopback());
        if session.user().is_empty() && self.anonymous_loopback_only && !loopback {
            drop(session);
            return Err(HubError::Unauthorized(AuthFailure::AnonymousNotAllowed));
        }
        Ok(session)
    }

    /// The session of a one-request HTTP transport (SSE, long-poll, client publish), with the
    /// token of [`bearer_token`].
    pub(crate) fn connect_http(
        &self,
        headers: &HeaderMap,
        pairs: &[(String, String)],
        transport: &str,
        peer: Option<SocketAddr>,
    ) -> Result<Session, ApiError> {
        let request = proto::ConnectRequest {
            token: bearer_token(headers, param(pairs, "token")),
            ..Default::default()
        };
        Ok(self.connect(&request, transport, peer)?)
    }

    /// Whether `authorization` is `apikey KEY` with a configured key.
    fn api_key_ok(&self, authorization: Option<&str>) -> bool {
        let Some(key) = authorization.and_then(|v| auth_param(v, "apikey")) else {
            return false;
        };
        self.api_keys
            .iter()
            .any(|k| constant_time_eq(k.as_bytes(), key.as_bytes()))
    }

    /// Checks a server-API call's `authorization` (`apikey KEY`) from `peer`. Failures are
    /// counted and logged (at most once a second); an address with [`API_MAX_FAILURES`] in
    /// [`API_FAILURE_WINDOW`] is refused — even with the right key — until the window ends.
    pub(crate) fn api_auth(
        &self,
        authorization: Option<&str>,
        peer: Option<SocketAddr>,
    ) -> Result<(), ApiAuthError> {
        let now = std::time::Instant::now();
        let ip = peer.map(|p| p.ip());
        if let Some(left) = ip.and_then(|ip| self.api_failures.blocked(ip, now)) {
            metrics::counter!(API_AUTH_FAILURES, "result" => "blocked").increment(1);
            return Err(ApiAuthError::Blocked(left));
        }
        if self.api_key_ok(authorization) {
            return Ok(());
        }
        metrics::counter!(API_AUTH_FAILURES, "result" => "refused").increment(1);
        let failures = ip.map_or(0, |ip| self.api_failures.fail(ip, now));
        let mut logged = self
            .api_failure_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if logged.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            *logged = Some(now);
            tracing::warn!(
                peer = ?peer,
                failures_in_window = failures,
                presented = authorization.is_some(),
                "server API: authentication failed (logged at most once a second; see switchboard_api_auth_failures_total)"
            );
        }
        Err(ApiAuthError::Refused)
    }
}

/// A refused server-API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiAuthError {
    /// Missing or wrong key.
    Refused,
    /// Too many failures from this address; blocked for this long.
    Blocked(Duration),
}

impl ApiAuthError {
    /// The HTTP answer; `how` says where the key goes (`header Authorization: apikey KEY`).
    pub(crate) fn response(self, how: &str) -> Response {
        match self {
            ApiAuthError::Refused => ApiError::new(
                StatusCode::UNAUTHORIZED,
                code::UNAUTHORIZED,
                format!("server API: missing or invalid API key ({how})"),
            )
            .into_response(),
            ApiAuthError::Blocked(left) => {
                let secs = left.as_secs().max(1);
                let mut r = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    code::TOO_MANY_REQUESTS,
                    format!(
                        "server API: too many failed authentications from this address; retry in {secs} s"
                    ),
                )
                .into_response();
                if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
        }
    }
}

/// The credentials of an `Authorization` header (or gRPC metadata) value `SCHEME CREDENTIALS`
/// when its scheme is `scheme` (case-insensitive): `Bearer` tokens, `apikey` keys.
pub(crate) fn auth_param<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    value
        .trim()
        .split_once(' ')
        .filter(|(s, _)| s.eq_ignore_ascii_case(scheme))
        .map(|(_, credentials)| credentials.trim())
}

/// Refuses a JSON POST body sent as anything but `application/json` (415): a page of another
/// site can send `text/plain` or a form without asking first (a CORS "simple request"), but
/// not `application/json`. An empty body needs no type.
pub(crate) fn require_json(headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim());
    match essence {
        Some(t) if t.eq_ignore_ascii_case("application/json") => Ok(()),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::BAD_REQUEST,
            format!(
                "request body must be sent as Content-Type: application/json (got {})",
                other.map_or("none".to_owned(), |t| format!("{t:?}"))
            ),
        )),
    }
}

/// A hub result as the `(error, result)` pair of a `*Response` message.
pub(crate) fn split<T>(r: Result<T, HubError>) -> (Option<proto::Error>, Option<T>) {
    match r {
        Ok(v) => (None, Some(v)),
        Err(e) => (Some(e.to_proto()), None),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The hub routes (HTTP, WebSocket, SSE, long-poll, gRPC) to merge into the HTTP router.
pub(crate) fn routes(ctx: Ctx) -> Router {
    let http = Router::new()
        // `any`: WebSocket over HTTP/1.1 (GET + Upgrade) and over HTTP/2 (RFC 8441 CONNECT).
        .route("/v1/ws", any(ws::handler))
        .route("/v1/sse", get(sse::handler))
        .route("/v1/poll", get(poll::handler))
        // A client publish is one message: the WebSocket message limit applies (not axum's
        // 2 MB default).
        .route(
            "/v1/publish",
            post(rest::publish).layer(DefaultBodyLimit::max(ctx.max_frame)),
        )
        .route("/v1/api/{method}", post(rest::api))
        .route("/v1/ice-servers", get(ice::ice_servers))
        .route(
            "/v1/ice-servers/revoke",
            post(ice::revoke).layer(DefaultBodyLimit::max(4096)),
        )
        .with_state(ctx.clone());
    grpc::routes(ctx).merge(http)
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

/// The HTTP status for a hub error code.
pub(crate) fn http_status(error_code: u32) -> StatusCode {
    match error_code {
        code::INTERNAL => StatusCode::INTERNAL_SERVER_ERROR,
        code::UNAUTHORIZED | code::TOKEN_EXPIRED => StatusCode::UNAUTHORIZED,
        code::UNKNOWN_CHANNEL | code::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        code::PERMISSION_DENIED => StatusCode::FORBIDDEN,
        code::ALREADY_SUBSCRIBED | code::NOT_AVAILABLE | code::UNRECOVERABLE_POSITION => {
            StatusCode::CONFLICT
        }
        code::LIMIT_EXCEEDED | code::USER_CONNECTION_LIMIT | code::TOO_MANY_REQUESTS => {
            StatusCode::TOO_MANY_REQUESTS
        }
        code::MESSAGE_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
        code::CONNECTION_LIMIT => StatusCode::SERVICE_UNAVAILABLE,
        code::SESSION_CLOSED => StatusCode::GONE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// An HTTP error answer: `{"error": {"code", "message"}}` with a matching status.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub error: proto::Error,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error: proto::Error {
                code,
                message: message.into(),
                temporary: false,
            },
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::BAD_REQUEST, message)
    }

    pub(crate) fn from_proto(error: proto::Error) -> Self {
        let status = match error.code {
            // The broker (Redis) is unreachable: temporary, retry later.
            code::INTERNAL if error.temporary => StatusCode::SERVICE_UNAVAILABLE,
            c => http_status(c),
        };
        ApiError { status, error }
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        Self::from_proto(e.to_proto())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = &self.error;
        let mut body = serde_json::json!({"error": {"code": e.code, "message": e.message}});
        if e.temporary {
            body["error"]["temporary"] = serde_json::Value::Bool(true);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

/// A JSON body (already serialized) with a status.
pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The connection token: `Authorization: Bearer JWT` or the `token` query parameter.
pub(crate) fn bearer_token(headers: &HeaderMap, query_token: Option<&str>) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| auth_param(v, "bearer"))
        .or(query_token)
        .unwrap_or_default()
        .to_owned()
}

/// Query parameters in order (repeated keys kept).
pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// Channel positions of a multi-channel stream (SSE event ids, long-poll cursors): one
/// `OFFSET.EPOCH` per channel, in the order of the `channel` parameters, joined with `,`.
/// `0.` (offset 0, empty epoch) stands for a channel without history or position.
pub(crate) mod cursor {
    use switchboard_hub::proto::StreamPosition;

    pub(crate) fn encode(positions: &[Option<StreamPosition>]) -> String {
        let mut out = String::new();
        for (i, p) in positions.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match p {
                Some(p) => {
                    out.push_str(&p.offset.to_string());
                    out.push('.');
                    out.push_str(&p.epoch);
                }
                None => out.push_str("0."),
            }
        }
        out
    }

    /// Parses a cursor for `channels` channels.
    pub(crate) fn decode(
        text: &str,
        channels: usize,
    ) -> Result<Vec<Option<StreamPosition>>, String> {
        let parts: Vec<&str> = text.split(',').collect();
        if parts.len() != channels {
            return Err(format!(
                "position {text:?} has {} entries for {channels} channels",
                parts.len()
            ));
        }
        parts
            .into_iter()
            .map(|part| {
                let (offset, epoch) = part
                    .split_once('.')
                    .ok_or_else(|| format!("bad position {part:?}: expected OFFSET.EPOCH"))?;
                let offset: u64 = offset
                    .parse()
                    .map_err(|_| format!("bad position {part:?}: offset is not a number"))?;
                let valid = epoch
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid || epoch.len() > 64 {
                    return Err(format!("bad position {part:?}: bad epoch"));
                }
                Ok((offset > 0 || !epoch.is_empty()).then(|| StreamPosition {
                    offset,
                    epoch: epoch.to_owned(),
                }))
            })
            .collect()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trip() {
            let ps = vec![
                Some(StreamPosition {
                    offset: 7,
                    epoch: "ab12".into(),
                }),
                None,
            ];
            let text = encode(&ps);
            assert_eq!(text, "7.ab12,0.");
            assert_eq!(decode(&text, 2).unwrap(), ps);
            assert!(decode(&text, 1).is_err());
            assert!(decode("x.ab", 1).is_err());
            assert!(decode("7", 1).is_err());
            assert!(decode("7.a\"b", 1).is_err());
        }
    }
}

/// Parses the `channel` parameters: at least one, each unique, at most `max` (the hub's
/// `max_channels_per_connection`, checked before any work per channel).
pub(crate) fn channels_param(
    pairs: &[(String, String)],
    max: usize,
) -> Result<Vec<String>, ApiError> {
    let mut channels: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in pairs {
        if k == "channel" {
            if channels.len() == max {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    code::LIMIT_EXCEEDED,
                    format!("too many channel parameters: at most {max} per connection"),
                ));
            }
            if !seen.insert(v.as_str()) {
                return Err(ApiError::bad_request(format!("channel {v:?} given twice")));
            }
            channels.push(v.clone());
        }
    }
    if channels.is_empty() {
        return Err(ApiError::bad_request(
            "at least one channel parameter is required",
        ));
    }
    Ok(channels)
}

/// The first value of query parameter `key`.
pub(crate) fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `ServerFrame` encoders shared by the transports, without cloning a shared push.
pub(crate) mod frame {
    use switchboard_hub::proto;
    use switchboard_proto::json;
    use switchboard_proto::prost::Message;

    /// The protobuf `ServerFrame { push }` bytes.
    pub(crate) fn push_proto(push: &proto::Push) -> Vec<u8> {
        let len = push.encoded_len();
        let mut buf = Vec::with_capacity(len + 6);
        switchboard_proto::prost::encoding::message::encode(2, push, &mut buf);
        buf
    }

    /// The protobuf `ServerFrame { reply }` bytes.
    pub(crate) fn reply_proto(reply: &proto::Reply) -> Vec<u8> {
        let mut buf = Vec::with_capacity(reply.encoded_len() + 6);
        switchboard_proto::prost::encoding::message::encode(1, reply, &mut buf);
        buf
    }

    /// The JSON `ServerFrame { push }`.
    pub(crate) fn push_json(push: &proto::Push) -> String {
        wrap("push", json::to_string(push))
    }

    /// The JSON `ServerFrame { reply }`.
    pub(crate) fn reply_json(reply: &proto::Reply) -> String {
        wrap("reply", json::to_string(reply))
    }

    fn wrap(key: &str, inner: Result<String, json::JsonError>) -> String {
        match inner {
            Ok(inner) => format!("{{\"{key}\":{inner}}}"),
            // Our own messages always serialize; keep the stream well-formed regardless.
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize a frame");
                "{}".to_owned()
            }
        }
    }

    /// A publication push.
    pub(crate) fn publication(p: proto::Publication) -> proto::Push {
        proto::Push {
            push: Some(proto::push::Push::Publication(p)),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn wrapped_frames_decode_as_server_frames() {
            let push = publication(proto::Publication {
                channel: "a".into(),
                offset: 3,
                data: br#"{"x":1}"#.to_vec(),
                ..Default::default()
            });
            let f = proto::ServerFrame::decode(push_proto(&push).as_slice()).unwrap();
            assert_eq!(
                f.frame,
                Some(proto::server_frame::Frame::Push(push.clone()))
            );
            let j: proto::ServerFrame = json::from_str(&push_json(&push)).unwrap();
            assert_eq!(j, f);
            let reply = proto::Reply {
                id: 4,
                result: Some(proto::reply::Result::Ping(proto::PingResult {})),
            };
            let f = proto::ServerFrame::decode(reply_proto(&reply).as_slice()).unwrap();
            assert_eq!(
                f.frame,
                Some(proto::server_frame::Frame::Reply(reply.clone()))
            );
            let j: proto::ServerFrame = json::from_str(&reply_json(&reply)).unwrap();
            assert_eq!(j, f);
        }
    }
}
