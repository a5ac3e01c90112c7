//! Centrifugo's server HTTP API: `POST /api/METHOD` with `X-API-Key: KEY` (or
//! `Authorization: apikey KEY`), Centrifugo's JSON request and response shapes (`{"result":…}`
//! or `{"error":{"code","message"}}` with HTTP 200), onto the same hub API as `/v1/api/*`, so
//! `cent` and the other Centrifugo API clients work unchanged (docs/compat.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use switchboard_hub::codes::error as code;
use switchboard_hub::proto;

use super::ctx::Ctx;
use super::error::ApiError;

/// `POST /api/{method}`.
pub(crate) async fn api(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("apikey {}", k.trim()));
    let authorization = key.or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    if let Err(e) = ctx.api_auth(authorization.as_deref(), Some(peer)) {
        return e.response("header X-API-Key: KEY");
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(e.status(), code::BAD_REQUEST, e.body_text()).into_response()
        }
    };
    let request: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return error(code::BAD_REQUEST, "bad request: expected a JSON object"),
            Err(e) => return error(code::BAD_REQUEST, &format!("bad request: {e}")),
        }
    };
    match call(&ctx, &method, &request).await {
        Ok(result) => json_200(json!({ "result": result })),
        Err(Failure::Error(e)) => error(e.code, &e.message),
        Err(Failure::NotFound) => ApiError::new(
            StatusCode::NOT_FOUND,
            code::METHOD_NOT_FOUND,
            format!(
                "unknown method {method:?}; methods: publish, broadcast, presence, \
                 presence_stats, history, history_remove, channels, disconnect, unsubscribe, info"
            ),
        )
        .into_response(),
    }
}

enum Failure {
    Error(proto::Error),
    NotFound,
}

impl From<proto::Error> for Failure {
    fn from(e: proto::Error) -> Self {
        Failure::Error(e)
    }
}

fn bad(message: &str) -> Failure {
    Failure::Error(proto::Error {
        code: code::BAD_REQUEST,
        message: format!("bad request: {message}"),
        temporary: false,
    })
}

fn json_200(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn error(code: u32, message: &str) -> Response {
    json_200(json!({"error": {"code": code, "message": message}}))
}

fn string(m: &Map<String, Value>, key: &str) -> String {
    m.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn required(m: &Map<String, Value>, key: &str) -> Result<String, Failure> {
    match m.get(key).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(bad(&format!("{key} required"))),
    }
}

/// `data` (JSON) or `b64data` (base64 bytes).
fn payload(m: &Map<String, Value>) -> Result<Vec<u8>, Failure> {
    if let Some(b64) = m.get("b64data").and_then(Value::as_str) {
        use base64::Engine as _;
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| bad("b64data is not base64"));
    }
    match m.get("data") {
        Some(v) => Ok(v.to_string().into_bytes()),
        None => Err(bad("data required")),
    }
}

fn tags(m: &Map<String, Value>) -> std::collections::HashMap<String, String> {
    m.get("tags")
        .and_then(Value::as_object)
        .map(|t| {
            t.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Embedded JSON for a payload (base64 string when it is not JSON).
fn data_value(data: &[u8]) -> Value {
    match serde_json::from_slice(data) {
        Ok(v) => v,
        Err(_) => {
            use base64::Engine as _;
            Value::from(base64::engine::general_purpose::STANDARD.encode(data))
        }
    }
}

fn client_info(i: &proto::ClientInfo) -> Value {
    let mut v = json!({"client": i.client_id, "user": i.user});
    if !i.conn_info.is_empty() {
        v["conn_info"] = data_value(&i.conn_info);
    }
    v
}

fn publication(p: &proto::Publication) -> Value {
    let mut v = json!({"data": data_value(&p.data)});
    if let Some(info) = &p.info {
        v["info"] = client_info(info);
    }
    if p.offset > 0 {
        v["offset"] = p.offset.into();
    }
    if !p.tags.is_empty() {
        v["tags"] = json!(p.tags);
    }
    v
}

fn publish_result(r: &proto::PublishResult) -> Value {
    let mut v = Map::new();
    if r.offset > 0 {
        v.insert("offset".into(), r.offset.into());
    }
    if !r.epoch.is_empty() {
        v.insert("epoch".into(), r.epoch.clone().into());
    }
    Value::Object(v)
}

fn outcome<T>(error: Option<proto::Error>, result: Option<T>) -> Result<T, Failure> {
    match (error, result) {
        (Some(e), _) => Err(e.into()),
        (None, Some(r)) => Ok(r),
        (None, None) => Err(Failure::Error(proto::Error {
            code: code::INTERNAL,
            message: "internal server error".into(),
            temporary: true,
        })),
    }
}

async fn call(ctx: &Ctx, method: &str, m: &Map<String, Value>) -> Result<Value, Failure> {
    let hub = &ctx.hub;
    Ok(match method {
        "publish" => {
            let r = hub
                .api_publish(proto::ApiPublishRequest {
                    channel: required(m, "channel")?,
                    data: payload(m)?,
                    idempotency_key: string(m, "idempotency_key"),
                    tags: tags(m),
                })
                .await;
            publish_result(&outcome(r.error, r.result)?)
        }
        "broadcast" => {
            let channels: Vec<String> = m
                .get("channels")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if channels.is_empty() {
                return Err(bad("channels required"));
            }
            let r = hub
                .api_broadcast(proto::BroadcastRequest {
                    channels,
                    data: payload(m)?,
                    idempotency_key: string(m, "idempotency_key"),
                    tags: tags(m),
                })
                .await;
            let result = outcome(r.error, r.result)?;
            let responses: Vec<Value> = result
                .responses
                .iter()
                .map(|p| match (&p.error, &p.result) {
                    (Some(e), _) => json!({"error": {"code": e.code, "message": e.message}}),
                    (None, Some(r)) => json!({ "result": publish_result(r) }),
                    (None, None) => json!({ "result": {} }),
                })
                .collect();
            json!({ "responses": responses })
        }
        "presence" => {
            let r = hub
                .api_presence(proto::PresenceRequest {
                    channel: required(m, "channel")?,
                })
                .await;
            let result = outcome(r.error, r.result)?;
            let presence: BTreeMap<&str, Value> = result
                .presence
                .iter()
                .map(|(k, v)| (k.as_str(), client_info(v)))
                .collect();
            json!({ "presence": presence })
        }
        "presence_stats" => {
            let r = hub
                .api_presence_stats(proto::PresenceStatsRequest {
                    channel: required(m, "channel")?,
                })
                .await;
            let s = outcome(r.error, r.result)?;
            json!({"num_clients": s.num_clients, "num_users": s.num_users})
        }
        "history" => {
            // Centrifugo: no limit (or 0) = the stream position only; negative = everything.
            let limit = m.get("limit").and_then(Value::as_i64).unwrap_or(0);
            let since = m
                .get("since")
                .and_then(Value::as_object)
                .map(|s| proto::StreamPosition {
                    offset: s.get("offset").and_then(Value::as_u64).unwrap_or(0),
                    epoch: string(s, "epoch"),
                });
            let r = hub
                .api_history(proto::HistoryRequest {
                    channel: required(m, "channel")?,
                    limit: match limit {
                        0 => 1,
                        l if l < 0 => 0,
                        l => u32::try_from(l).unwrap_or(u32::MAX),
                    },
                    since,
                    reverse: m.get("reverse").and_then(Value::as_bool).unwrap_or(false),
                })
                .await;
            let h = outcome(r.error, r.result)?;
            let publications: Vec<Value> = if limit == 0 {
                Vec::new()
            } else {
                h.publications.iter().map(publication).collect()
            };
            let mut v = json!({ "publications": publications });
            if !h.epoch.is_empty() {
                v["epoch"] = h.epoch.into();
            }
            if h.offset > 0 {
                v["offset"] = h.offset.into();
            }
            v
        }
        "history_remove" => {
            let r = hub
                .api_history_remove(proto::HistoryRemoveRequest {
                    channel: required(m, "channel")?,
                })
                .await;
            outcome(r.error, r.result)?;
            json!({})
        }
        "channels" => {
            let channels: Map<String, Value> = hub
                .channels(&string(m, "pattern"))
                .into_iter()
                .map(|(name, n)| (name, json!({ "num_clients": n })))
                .collect();
            json!({ "channels": channels })
        }
        "disconnect" => {
            let d = m.get("disconnect").and_then(Value::as_object);
            let r = hub
                .api_disconnect(proto::DisconnectRequest {
                    user: string(m, "user"),
                    client_id: string(m, "client"),
                    disconnect: d.map(|d| proto::Disconnect {
                        code: d
                            .get("code")
                            .and_then(Value::as_u64)
                            .and_then(|c| u32::try_from(c).ok())
                            .unwrap_or(0),
                        reason: string(d, "reason"),
                        reconnect: false,
                    }),
                })
                .await;
            outcome(r.error, r.result)?;
            json!({})
        }
        "unsubscribe" => {
            let r = hub
                .api_unsubscribe(proto::ApiUnsubscribeRequest {
                    user: string(m, "user"),
                    channel: required(m, "channel")?,
                    client_id: string(m, "client"),
                })
                .await;
            outcome(r.error, r.result)?;
            json!({})
        }
        "info" => {
            let r = hub.api_info(proto::InfoRequest {});
            let info = outcome(r.error, r.result)?;
            let nodes: Vec<Value> = info
                .nodes
                .iter()
                .map(|n| {
                    json!({
                        "uid": n.uid,
                        "name": n.name,
                        "version": n.version,
                        "num_clients": n.num_clients,
                        "num_users": n.num_users,
                        "num_channels": n.num_channels,
                        "num_subs": n.num_subs,
                        "uptime": n.uptime,
                    })
                })
                .collect();
            json!({ "nodes": nodes })
        }
        _ => return Err(Failure::NotFound),
    })
}
