//! ICE servers for WebRTC clients (the shape of `RTCConfiguration.iceServers`, as Twilio's and
//! Cloudflare's TURN APIs return it): `GET /v1/ice-servers` lists this server's `stun:`,
//! `turn:` (UDP and TCP) and `turns:` URLs (all on the port of the first `--listen` when there
//! is one, docs/one-port.md) with TURN REST credentials made from the first
//! `--turn-secret` and valid for `--credential-ttl`; authentication is the hub's (token, or
//! anonymous where allowed). `POST /v1/ice-servers/revoke` (server API key) revokes a user's
//! credentials before they expire — the TURN listeners consult the list.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use switchboard_hub::codes::error as code;
use switchboard_turn::auth::rest_password_sha1;

use super::ctx::Ctx;
use super::error::{require_json, ApiError};
use super::params::query_pairs;
use crate::config::Settings;
use crate::net::limits::{client_key, RateLimiter};
use crate::turn::Core;
use crate::ListenerInfo;

/// `GET /v1/ice-servers` calls per client address: a burst of [`ICE_BURST`], then
/// [`ICE_PER_SEC`] a second (429 past that). A page asks once per call it sets up.
pub(crate) const ICE_PER_SEC: f64 = 2.0;
/// See [`ICE_PER_SEC`].
pub(crate) const ICE_BURST: f64 = 20.0;

/// The state of the ICE endpoints: the hub transports' context (authentication) and the ICE
/// servers (absent when STUN/TURN is not served).
pub(crate) struct IceCtx {
    pub hub: Ctx,
    pub ice: Option<Ice>,
}

/// What the ICE endpoints need, fixed at start-up.
pub(crate) struct Ice {
    core: Arc<Core>,
    secret: Option<Vec<u8>>,
    /// Per-address budget of `GET /v1/ice-servers`.
    rate: RateLimiter,
    ttl: u64,
    host: String,
    udp: Option<u16>,
    tcp: Option<u16>,
    tls: Option<u16>,
}

impl Ice {
    /// From the settings and the bound listeners (their real ports, also when 0 was asked for).
    pub(crate) fn new(settings: &Settings, core: Arc<Core>, listeners: &[ListenerInfo]) -> Self {
        let port = |transport: &str| {
            listeners
                .iter()
                .find(|l| l.protocol == "stun" && l.transport == transport && l.note.is_empty())
                .map(|l| l.addr.port())
        };
        // A one-port listener (`--listen`) serves every transport on one port: its URLs are the
        // ones handed out (they pass firewalls that only let 443 out).
        let one_port = |transport: &str| {
            listeners
                .iter()
                .find(|l| l.protocol == "listen" && l.transport == transport)
                .map(|l| l.addr.port())
        };
        let (udp, tcp, tls) = match one_port("tcp") {
            Some(p) => (one_port("udp"), Some(p), Some(p)),
            None => (port("udp"), port("tcp"), port("tls")),
        };
        let turn_on = !settings.turn.realm.is_empty();
        Ice {
            core,
            secret: settings
                .turn
                .secrets
                .first()
                .filter(|_| turn_on)
                .map(|s| s.as_bytes().to_vec()),
            rate: RateLimiter::new("ice-servers", ICE_PER_SEC, ICE_BURST),
            ttl: settings.turn.credential_ttl.as_secs(),
            host: settings.turn.ice_host.clone(),
            udp,
            tcp,
            tls,
        }
    }
}

/// The host part of a `Host` header (`example.org:8080`, `[::1]:8080`), for URLs.
fn host_of(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        format!("[{}]", rest.split(']').next()?)
    } else {
        host.rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(host)
            .to_string()
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c));
    valid.then_some(name)
}

pub(crate) async fn ice_servers(
    State(st): State<Arc<IceCtx>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let (ctx, Some(ice)) = (&st.hub, st.ice.as_ref()) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            code::NOT_AVAILABLE,
            "no STUN/TURN here",
        )
        .into_response();
    };
    if !ice.rate.allow(peer.ip(), std::time::Instant::now()) {
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            code::TOO_MANY_REQUESTS,
            "too many ICE server requests from this address; retry later",
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    }
    let pairs = query_pairs(query.as_deref());
    // Authenticated like a hub connection, but not one: no session, not counted as one.
    let user = match ctx.identify_http(&headers, &pairs, Some(peer)) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // A named user's credential lives --credential-ttl from now. An anonymous client gets one
    // stable user and credential per client address and window of --credential-ttl (valid
    // until the next window ends), so asking again mints nothing new.
    let (user, expiry) = if user.is_empty() {
        let window = now / ice.ttl;
        (
            anonymous_user(ice.secret.as_deref(), peer, window),
            (window + 2) * ice.ttl,
        )
    } else {
        (user, now + ice.ttl)
    };
    if ice.core.is_revoked(&user) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            code::PERMISSION_DENIED,
            "TURN credentials of this user are revoked",
        )
        .into_response();
    }
    let host = if ice.host.is_empty() {
        host_of(&headers).unwrap_or_else(|| "localhost".to_string())
    } else {
        ice.host.clone()
    };
    let mut servers = Vec::new();
    if let Some(p) = ice.udp {
        servers.push(serde_json::json!({ "urls": [format!("stun:{host}:{p}")] }));
    }
    if let Some(secret) = &ice.secret {
        let username = format!("{expiry}:{user}");
        let credential = rest_password_sha1(secret, &username);
        let mut turn = Vec::new();
        if let Some(p) = ice.udp {
            turn.push(format!("turn:{host}:{p}?transport=udp"));
        }
        if let Some(p) = ice.tcp {
            turn.push(format!("turn:{host}:{p}?transport=tcp"));
        }
        if !turn.is_empty() {
            servers.push(
                serde_json::json!({ "urls": turn, "username": username, "credential": credential }),
            );
        }
        if let Some(p) = ice.tls {
            servers.push(serde_json::json!({
                "urls": [format!("turns:{host}:{p}?transport=tcp")],
                "username": username,
                "credential": credential,
            }));
        }
    }
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "iceServers": servers, "ttl": ice.ttl })),
    )
        .into_response()
}

/// The TURN user of an anonymous client: `anonymous-` and 16 hex digits derived from the TURN
/// secret, the client's address (IPv6: its /64) and the window, so it is the same on every node
/// sharing the secret and says nothing about the address.
fn anonymous_user(secret: Option<&[u8]>, peer: SocketAddr, window: u64) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"switchboard anonymous TURN user\0");
    h.update(secret.unwrap_or_default());
    h.update([0]);
    match client_key(peer.ip()) {
        std::net::IpAddr::V4(a) => h.update(a.octets()),
        std::net::IpAddr::V6(a) => h.update(a.octets()),
    }
    h.update(window.to_be_bytes());
    let digest = h.finalize();
    let mut name = String::from("anonymous-");
    for b in &digest[..8] {
        name.push_str(&format!("{b:02x}"));
    }
    name
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeRequest {
    user: String,
}

pub(crate) async fn revoke(
    State(st): State<Arc<IceCtx>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = require_json(&headers, &body) {
        return e.into_response();
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = st.hub.api_auth(auth, Some(peer)) {
        return e.response("server API key required: Authorization: apikey KEY");
    }
    let (ctx, Some(ice)) = (&st.hub, st.ice.as_ref()) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            code::NOT_AVAILABLE,
            "no STUN/TURN here",
        )
        .into_response();
    };
    let request: RevokeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::bad_request(format!("expected {{\"user\": \"...\"}}: {e}"))
                .into_response()
        }
    };
    if request.user.is_empty() || request.user.len() > 512 {
        return ApiError::bad_request("user must be 1 to 512 bytes").into_response();
    }
    // At once here, then on every node (and for nodes starting later) through the hub's bus.
    ice.core.revoke(&request.user);
    let keep = Duration::from_secs(ice.ttl.max(60));
    let shared = ctx
        .hub
        .bus_publish(
            crate::turn::REVOCATIONS_TOPIC,
            request.user.clone().into_bytes(),
            keep,
        )
        .await;
    if let Err(e) = shared {
        tracing::warn!(user = %request.user, error = %e, "TURN revocation not shared with other nodes");
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::INTERNAL,
            format!("revoked on this node only, not shared with the cluster: {e}"),
        )
        .into_response();
    }
    Json(serde_json::json!({ "revoked": request.user })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_forms() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, v.parse().unwrap());
            host_of(&m)
        };
        assert_eq!(h("example.org:8080").as_deref(), Some("example.org"));
        assert_eq!(h("example.org").as_deref(), Some("example.org"));
        assert_eq!(h("[::1]:8443").as_deref(), Some("[::1]"));
        assert_eq!(h("127.0.0.1:80").as_deref(), Some("127.0.0.1"));
        assert_eq!(h("bad host\"><:1"), None);
    }
}
