//! Query parameters of the one-request HTTP transports.

use axum::http::StatusCode;
use switchboard_hub::codes::error as code;

use super::error::ApiError;

/// Query parameters in order (repeated keys kept).
pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
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
