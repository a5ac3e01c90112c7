//! What every hub transport shares: the hub, the transport settings, authentication of
//! connections and of server-API calls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use switchboard_hub::codes::error as code;
use switchboard_hub::{proto, AuthFailure, Hub, HubError, Session};
use tokio::sync::watch;

use super::error::ApiError;
use super::params::param;
use crate::config::Settings;
use crate::net::limits::FailureTracker;

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
    pub(crate) fn new(hub: Hub, settings: &Settings, stop: watch::Receiver<bool>) -> Ctx {
        let h = &settings.http;
        let max_frame = hub
            .config()
            .limits
            .max_message_size
            .saturating_mul(2)
            .saturating_add(16 * 1024);
        let write_delay = Duration::from_millis(hub.config().write_delay_ms.min(1000));
        Arc::new(HubCtx {
            write_delay,
            hub,
            api_keys: h.api_keys.clone(),
            anonymous_loopback_only: h.anonymous_loopback_only,
            ping: h.ping_interval,
            idle: h.idle_timeout,
            poll_timeout: h.poll_timeout,
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

    /// Who an HTTP request is (its user, empty when anonymous), authenticated as
    /// [`Ctx::connect_http`] would but without a hub session.
    pub(crate) fn identify_http(
        &self,
        headers: &HeaderMap,
        pairs: &[(String, String)],
        peer: Option<SocketAddr>,
    ) -> Result<String, ApiError> {
        let token = bearer_token(headers, param(pairs, "token"));
        let user = self.hub.authenticate(&token)?;
        let loopback = peer.is_some_and(|p| p.ip().to_canonical().is_loopback());
        if user.is_empty() && self.anonymous_loopback_only && !loopback {
            return Err(HubError::Unauthorized(AuthFailure::AnonymousNotAllowed).into());
        }
        Ok(user)
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
