//! HTTP error answers of the hub endpoints: `{"error": {"code", "message"}}` with the
//! status of the hub code, and the JSON body checks.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use switchboard_hub::codes::error as code;
use switchboard_hub::{proto, HubError};

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
