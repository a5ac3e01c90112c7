//! Plain HTTP calls: client publish `POST /v1/publish` (a `PublishRequest` in the JSON mapping,
//! connection token as `Authorization: Bearer` or `?token=`) and the server API
//! `POST /v1/api/<method>` (`Authorization: apikey KEY`; body and answer are the `HubApi`
//! request and response messages in the JSON mapping). A response holding an `error` gets the
//! HTTP status of its code (401, 403, 404, 413, ...).

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchboard_hub::codes::error as code;
use switchboard_hub::proto;
use switchboard_proto::json;

use super::ctx::{split, Ctx};
use super::error::{json_response, require_json, ApiError};
use super::params::query_pairs;

/// A body that could not be read (too large, broken connection) as a JSON error.
fn body_error(e: BytesRejection) -> Response {
    if crate::http::is_slow_body(&e) {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            code::BAD_REQUEST,
            format!("request body: {}", crate::http::SLOW_BODY_MESSAGE),
        )
        .into_response();
    }
    let status = e.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        code::MESSAGE_TOO_LARGE
    } else {
        code::BAD_REQUEST
    };
    ApiError::new(status, code, format!("request body: {}", e.body_text())).into_response()
}

/// Parses a JSON-mapping body sent as `application/json`; an empty body is the default message.
fn parse<T: DeserializeOwned + Default>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    require_json(headers, body)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    json::from_slice(body).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
}

/// A response message with an `error` field, serialized with the status of that error.
fn answer<T: Serialize>(error: Option<&proto::Error>, message: &T) -> Response {
    let status = error.map_or(StatusCode::OK, |e| ApiError::from_proto(e.clone()).status);
    match json::to_string(message) {
        Ok(body) => json_response(status, body),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::INTERNAL,
            e.to_string(),
        )
        .into_response(),
    }
}

pub(crate) async fn publish(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return body_error(e),
    };
    let request: proto::PublishRequest = match parse(&headers, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let pairs = query_pairs(query.as_deref());
    let session = match ctx.connect_http(&headers, &pairs, "http", Some(peer)) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let outcome = session
        .publish(&request.channel, request.data, &request.idempotency_key)
        .await;
    session.close().await;
    let (error, result) = split(outcome);
    let response = proto::PublishResponse { error, result };
    answer(response.error.as_ref(), &response)
}

macro_rules! call {
    ($ctx:expr, $headers:expr, $body:expr, $method:ident) => {{
        match parse($headers, $body) {
            Ok(request) => {
                let response = $ctx.hub.$method(request).await;
                answer(response.error.as_ref(), &response)
            }
            Err(e) => e.into_response(),
        }
    }};
}

pub(crate) async fn api(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return body_error(e),
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = ctx.api_auth(authorization, Some(peer)) {
        return e.response("header Authorization: apikey KEY");
    }
    match method.as_str() {
        "publish" => call!(ctx, &headers, &body, api_publish),
        "broadcast" => call!(ctx, &headers, &body, api_broadcast),
        "presence" => call!(ctx, &headers, &body, api_presence),
        "presence_stats" => call!(ctx, &headers, &body, api_presence_stats),
        "history" => call!(ctx, &headers, &body, api_history),
        "history_remove" => call!(ctx, &headers, &body, api_history_remove),
        "disconnect" => call!(ctx, &headers, &body, api_disconnect),
        "unsubscribe" => call!(ctx, &headers, &body, api_unsubscribe),
        "info" => match parse::<proto::InfoRequest>(&headers, &body) {
            Ok(request) => {
                let response = ctx.hub.api_info(request);
                answer(response.error.as_ref(), &response)
            }
            Err(e) => e.into_response(),
        },
        other => ApiError::new(
            StatusCode::NOT_FOUND,
            code::METHOD_NOT_FOUND,
            format!(
                "unknown server API method {other:?}; methods: publish, broadcast, presence, \
                 presence_stats, history, history_remove, disconnect, unsubscribe, info"
            ),
        )
        .into_response(),
    }
}
