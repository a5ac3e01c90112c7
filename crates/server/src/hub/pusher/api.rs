//! Pusher's HTTP API (`/apps/{app_id}/...`), signed as Pusher signs it: query parameters
//! `auth_key`, `auth_timestamp` (within 600 s of the server's clock), `auth_version=1.0`,
//! `body_md5` (of a non-empty body) and `auth_signature` = HMAC-SHA256(secret,
//! "METHOD\nPATH\nQUERY"), QUERY being the other parameters sorted by name, `name=value` joined
//! with `&`, values decoded.

// Handlers answer early with the response itself (axum's `Response` is large).
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, RawPathParams, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use md5::Digest;
use serde_json::{json, Value};
use switchboard_hub::{proto, ServerPublish};

use super::{hex, same, valid_channel, App, PusherCtx};

/// Timestamps further than this from the server's clock are refused.
const WINDOW_SECS: i64 = 600;
/// Channels one event may go to, and events one batch may hold (Pusher's limits).
const MAX_CHANNELS: usize = 100;
const MAX_BATCH: usize = 10;
/// Largest event data (Pusher's limit).
const MAX_DATA: usize = 10 * 1024;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

fn ok(v: Value) -> Response {
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// The decoded query parameters.
fn params(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Checks a request's signature; the app it is for.
#[allow(clippy::result_large_err)]
fn authenticate(
    ctx: &PusherCtx,
    id: &str,
    method: &Method,
    uri: &Uri,
    query: Option<&str>,
    body: &[u8],
) -> Result<Arc<App>, Response> {
    let Some(app) = ctx.by_id.get(id).cloned() else {
        return Err(error(StatusCode::NOT_FOUND, format!("Unknown app {id}")));
    };
    let params = params(query);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let refused = |why: &str| {
        metrics::counter!("switchboard_pusher_auth_failures_total").increment(1);
        Err(error(StatusCode::UNAUTHORIZED, why.to_owned()))
    };
    if get("auth_key") != Some(app.config.key.as_str()) {
        return refused("Unknown auth_key");
    }
    if get("auth_version").is_some_and(|v| v != "1.0") {
        return refused("Unsupported auth_version (1.0 expected)");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match get("auth_timestamp").and_then(|t| t.parse::<i64>().ok()) {
        Some(t) if (now - t).abs() <= WINDOW_SECS => {}
        Some(_) => {
            return refused("Timestamp expired: it must be within 600 s of the server's time")
        }
        None => return refused("auth_timestamp required"),
    }
    if !body.is_empty() {
        let md5 = hex(&md5::Md5::digest(body));
        if get("body_md5").is_none_or(|m| !same(m, &md5)) {
            return refused("body_md5 does not match the body");
        }
    }
    let mut signed: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| k != "auth_signature")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    signed.sort();
    let query = signed
        .iter()
        .map(|(k, v)| format!("{}={v}", k.to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join("&");
    let expected = app.sign(&format!("{method}\n{}\n{query}", uri.path()));
    match get("auth_signature") {
        Some(sig) if same(sig, &expected) => Ok(app),
        _ => refused("Invalid signature"),
    }
}

/// A request to the HTTP API whose signature checked (see [`authenticate`]): the app it is for
/// (the `{id}` of its path), its raw query and its body. Rejected with the answer to give.
pub(crate) struct Signed {
    app: Arc<App>,
    query: Option<String>,
    body: Bytes,
}

impl FromRequest<Arc<PusherCtx>> for Signed {
    type Rejection = Response;

    async fn from_request(request: Request, ctx: &Arc<PusherCtx>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let path = RawPathParams::from_request_parts(&mut parts, ctx)
            .await
            .map_err(IntoResponse::into_response)?;
        let id = path
            .iter()
            .find(|(k, _)| *k == "id")
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default();
        let (method, uri) = (parts.method.clone(), parts.uri.clone());
        let body = Bytes::from_request(Request::from_parts(parts, body), ctx)
            .await
            .map_err(IntoResponse::into_response)?;
        let query = uri.query().map(str::to_owned);
        let app = authenticate(ctx, &id, &method, &uri, query.as_deref(), &body)?;
        Ok(Signed { app, query, body })
    }
}

/// One event into `channels` (socket `exclude` does not get it back).
async fn trigger(
    ctx: &PusherCtx,
    app: &App,
    name: &str,
    channels: &[String],
    data: &str,
    exclude: Option<&str>,
) -> Result<(), Response> {
    if name.is_empty() || name.len() > 200 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Event name required (at most 200 characters)",
        ));
    }
    if channels.is_empty() || channels.len() > MAX_CHANNELS {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Between 1 and 100 channels required",
        ));
    }
    if data.len() > MAX_DATA {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Event data too large (10 KiB at most)",
        ));
    }
    if let Some(c) = channels.iter().find(|c| !valid_channel(c)) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("Invalid channel name {c:?}"),
        ));
    }
    for channel in channels {
        let mut tags = HashMap::new();
        tags.insert("event".to_owned(), name.to_owned());
        if let Some(s) = exclude.filter(|s| !s.is_empty()) {
            tags.insert("socket_id".to_owned(), s.to_owned());
        }
        let options = ServerPublish {
            idempotency_key: String::new(),
            tags,
        };
        if let Err(e) = ctx
            .hub
            .hub
            .publish(&app.hub_channel(channel), data.as_bytes().to_vec(), options)
            .await
        {
            let status = if e.to_proto().temporary {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_REQUEST
            };
            return Err(error(status, e.to_string()));
        }
    }
    Ok(())
}

/// `data` as Pusher sends it: a string (a JSON value is accepted and serialized).
fn data_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Response> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(error(StatusCode::BAD_REQUEST, "Body must be a JSON object")),
    }
}

/// `POST /apps/{id}/events`: `{name, data, channels | channel, socket_id}`.
pub(crate) async fn events(
    State(ctx): State<Arc<PusherCtx>>,
    Signed { app, body, .. }: Signed,
) -> Response {
    let m = match object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut channels: Vec<String> = m
        .get("channels")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(c) = m.get("channel").and_then(Value::as_str) {
        channels.push(c.to_owned());
    }
    let name = m.get("name").and_then(Value::as_str).unwrap_or("");
    let socket = m.get("socket_id").and_then(Value::as_str);
    match trigger(
        &ctx,
        &app,
        name,
        &channels,
        &data_string(m.get("data")),
        socket,
    )
    .await
    {
        Ok(()) => ok(json!({})),
        Err(r) => r,
    }
}

/// `POST /apps/{id}/batch_events`: `{batch: [{channel, name, data, socket_id}]}`.
pub(crate) async fn batch_events(
    State(ctx): State<Arc<PusherCtx>>,
    Signed { app, body, .. }: Signed,
) -> Response {
    let m = match object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Some(batch) = m.get("batch").and_then(Value::as_array) else {
        return error(StatusCode::BAD_REQUEST, "batch required");
    };
    if batch.is_empty() || batch.len() > MAX_BATCH {
        return error(StatusCode::BAD_REQUEST, "Between 1 and 10 events per batch");
    }
    for e in batch {
        let channel = e
            .get("channel")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let name = e.get("name").and_then(Value::as_str).unwrap_or("");
        let socket = e.get("socket_id").and_then(Value::as_str);
        if let Err(r) = trigger(
            &ctx,
            &app,
            name,
            &[channel],
            &data_string(e.get("data")),
            socket,
        )
        .await
        {
            return r;
        }
    }
    ok(json!({ "batch": batch.iter().map(|_| json!({})).collect::<Vec<_>>() }))
}

/// The `info` attributes asked for.
fn info(query: Option<&str>) -> Vec<String> {
    params(query)
        .into_iter()
        .filter(|(k, _)| k == "info")
        .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

async fn stats(ctx: &PusherCtx, app: &App, channel: &str) -> Result<(u32, u32), Response> {
    let r = ctx
        .hub
        .hub
        .api_presence_stats(proto::PresenceStatsRequest {
            channel: app.hub_channel(channel),
        })
        .await;
    match (r.error, r.result) {
        (None, Some(s)) => Ok((s.num_clients, s.num_users)),
        (Some(e), _) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.message)),
        _ => Ok((0, 0)),
    }
}

/// `GET /apps/{id}/channels?filter_by_prefix=P&info=user_count`: the occupied channels.
pub(crate) async fn channels(
    State(ctx): State<Arc<PusherCtx>>,
    Signed { app, query, .. }: Signed,
) -> Response {
    let prefix = params(query.as_deref())
        .into_iter()
        .find(|(k, _)| k == "filter_by_prefix")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let wants_users = info(query.as_deref()).iter().any(|i| i == "user_count");
    if wants_users && !prefix.starts_with("presence-") {
        return error(
            StatusCode::BAD_REQUEST,
            "user_count is only available with filter_by_prefix=presence-",
        );
    }
    let mut out = serde_json::Map::new();
    for (hub_channel, _) in ctx
        .hub
        .hub
        .channels(&format!("{}:{prefix}*", app.namespace))
    {
        let Some(channel) = app.pusher_channel(&hub_channel).map(str::to_owned) else {
            continue;
        };
        let mut v = json!({});
        if wants_users {
            match stats(&ctx, &app, &channel).await {
                Ok((_, users)) => v["user_count"] = users.into(),
                Err(r) => return r,
            }
        }
        out.insert(channel, v);
    }
    ok(json!({ "channels": out }))
}

/// `GET /apps/{id}/channels/{name}?info=user_count,subscription_count`.
pub(crate) async fn channel(
    State(ctx): State<Arc<PusherCtx>>,
    Path((_, name)): Path<(String, String)>,
    Signed { app, query, .. }: Signed,
) -> Response {
    if !valid_channel(&name) {
        return error(StatusCode::BAD_REQUEST, "Invalid channel name");
    }
    let asked = info(query.as_deref());
    if asked.iter().any(|i| i == "user_count") && !name.starts_with("presence-") {
        return error(
            StatusCode::BAD_REQUEST,
            "user_count is only available for presence channels",
        );
    }
    let (subscriptions, users) = match stats(&ctx, &app, &name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut v = json!({ "occupied": subscriptions > 0 });
    if asked.iter().any(|i| i == "subscription_count") {
        v["subscription_count"] = subscriptions.into();
    }
    if asked.iter().any(|i| i == "user_count") {
        v["user_count"] = users.into();
    }
    ok(v)
}

/// `GET /apps/{id}/channels/{name}/users`: a presence channel's members.
pub(crate) async fn users(
    State(ctx): State<Arc<PusherCtx>>,
    Path((_, name)): Path<(String, String)>,
    Signed { app, .. }: Signed,
) -> Response {
    if !name.starts_with("presence-") || !valid_channel(&name) {
        return error(StatusCode::BAD_REQUEST, "Only presence channels have users");
    }
    let r = ctx
        .hub
        .hub
        .api_presence(proto::PresenceRequest {
            channel: app.hub_channel(&name),
        })
        .await;
    let Some(p) = r.result else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            r.error.map(|e| e.message).unwrap_or_default(),
        );
    };
    let mut ids: Vec<String> = p
        .presence
        .values()
        .filter_map(|c| app.pusher_user(&c.user).map(str::to_owned))
        .collect();
    ids.sort();
    ids.dedup();
    ok(json!({ "users": ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>() }))
}

/// `POST /apps/{id}/users/{user}/terminate_connections`: every connection that signed in as
/// the user (and its presence memberships), on every node.
pub(crate) async fn terminate(
    State(ctx): State<Arc<PusherCtx>>,
    Path((_, user)): Path<(String, String)>,
    Signed { app, .. }: Signed,
) -> Response {
    let r = ctx
        .hub
        .hub
        .api_disconnect(proto::DisconnectRequest {
            user: app.hub_user(&user),
            client_id: String::new(),
            disconnect: None,
        })
        .await;
    match r.error {
        None => ok(json!({})),
        Some(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.message),
    }
}
