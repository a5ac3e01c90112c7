//! Long-poll: `GET /v1/poll?channel=A[&channel=B]&since=CURSOR[&timeout=SECS]` (token as
//! `?token=` or `Authorization: Bearer`).
//!
//! Stateless: each request is a short session that subscribes with recovery from `since`.
//! The answer is `{"cursor": "...", "recovered": true|false, "publications": [...]}` in the
//! JSON mapping:
//!
//! * publications after `since` (the missed ones, from history) are returned at once;
//! * when there are none, the request waits up to `timeout` seconds (default and maximum
//!   `--poll-timeout`; `0` answers at once) for new ones (join/leave pushes do not end the
//!   wait; a lost position is answered at once);
//! * `cursor` is the position after the returned publications — pass it as the next `since`;
//!   without `since` the wait starts from the current position (use `timeout=0` to just get
//!   the cursor);
//! * `recovered: false` means the channel history no longer holds every publication after
//!   `since` (or its epoch changed): messages were lost, reload state and continue from
//!   `cursor`.
//!
//! The cursor has one `OFFSET.EPOCH` per channel, in the order of the `channel` parameters
//! (see [`super::cursor`]). Only channels with history can be polled without loss; on other
//! channels only publications made while a request waits are seen.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use switchboard_hub::proto;
use switchboard_proto::json;

use super::ctx::Ctx;
use super::cursor;
use super::error::{json_response, ApiError};
use super::params::{channels_param, param, query_pairs};

/// Live publications gathered by one poll, at most (recovered ones are bounded by the
/// channel's history size).
const MAX_BATCH: usize = 1000;

pub(crate) async fn handler(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match poll(ctx, Some(peer), query, headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn poll(
    ctx: Ctx,
    peer: Option<SocketAddr>,
    query: Option<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query.as_deref());
    let channels = channels_param(&pairs, ctx.hub.config().limits.max_channels_per_connection)?;
    let mut since = match param(&pairs, "since").filter(|s| !s.is_empty()) {
        Some(text) => cursor::decode(text, channels.len())
            .map_err(|e| ApiError::bad_request(format!("since: {e}")))?,
        None => vec![None; channels.len()],
    };
    let wait = match param(&pairs, "timeout") {
        Some(t) => parse_timeout(t, ctx.poll_timeout)?,
        None => ctx.poll_timeout,
    };
    let session = ctx.connect_http(&headers, &pairs, "long-poll", peer)?;

    let mut positions: Vec<Option<proto::StreamPosition>> = vec![None; channels.len()];
    let mut publications: Vec<proto::Publication> = Vec::new();
    let mut recovered = true;
    for (i, channel) in channels.iter().enumerate() {
        let recover = since[i].take();
        let asked = recover.is_some();
        let result = match session.subscribe(channel, recover).await {
            Ok(r) => r,
            Err(e) => {
                session.close().await;
                return Err(e.into());
            }
        };
        if asked && !result.recovered {
            recovered = false;
        }
        if result.recoverable {
            positions[i] = Some(proto::StreamPosition {
                offset: result.offset,
                epoch: result.epoch,
            });
        }
        publications.extend(result.publications);
    }

    // Publications newer than the subscribe positions (queued meanwhile, or awaited). `take`
    // adds one and moves the cursor; it returns false for a push that means a lost position.
    let mut take = |push: &proto::Push, publications: &mut Vec<proto::Publication>| match &push.push
    {
        Some(proto::push::Push::Publication(p)) => {
            if let Some(i) = channels.iter().position(|c| *c == p.channel) {
                if p.offset > 0 {
                    positions[i] = Some(proto::StreamPosition {
                        offset: p.offset,
                        epoch: p.epoch.clone(),
                    });
                }
            }
            publications.push(p.clone());
            true
        }
        Some(proto::push::Push::Unsubscribe(_)) => false,
        _ => true,
    };
    while let Some(push) = session.try_recv() {
        recovered &= take(&push, &mut publications);
    }
    // Wait only when there is nothing to report: a lost position (`recovered: false`) is
    // answered at once so the client reloads its state without delay.
    if publications.is_empty() && recovered && !wait.is_zero() {
        let mut stop = ctx.stop.clone();
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            let push = tokio::select! {
                push = session.recv() => push,
                _ = &mut deadline => break,
                _ = crate::stopped(&mut stop) => break,
            };
            let Some(push) = push else { break };
            if matches!(
                push.push,
                Some(proto::push::Push::Join(_) | proto::push::Push::Leave(_))
            ) {
                // Others joining or leaving (every long-poll request does) is no reason to
                // answer: keep waiting for a publication.
                continue;
            }
            recovered &= take(&push, &mut publications);
            // Whatever else is already queued goes in the same answer.
            while publications.len() < MAX_BATCH {
                match session.try_recv() {
                    Some(push) => recovered &= take(&push, &mut publications),
                    None => break,
                }
            }
            break;
        }
    }
    session.close().await;

    let mut body = String::with_capacity(64 + publications.len() * 128);
    body.push_str("{\"cursor\":");
    body.push_str(&serde_json::Value::String(cursor::encode(&positions)).to_string());
    body.push_str(",\"recovered\":");
    body.push_str(if recovered { "true" } else { "false" });
    body.push_str(",\"publications\":[");
    for (i, p) in publications.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let text = json::to_string(p).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                switchboard_hub::codes::error::INTERNAL,
                e.to_string(),
            )
        })?;
        body.push_str(&text);
    }
    body.push_str("]}");
    Ok(json_response(StatusCode::OK, body))
}

/// The `timeout` parameter: seconds (fractions allowed), capped at `max`.
fn parse_timeout(text: &str, max: Duration) -> Result<Duration, ApiError> {
    let secs = text
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "timeout: expected seconds between 0 and {}, got {text:?}",
                max.as_secs()
            ))
        })?;
    // Capped before the conversion: `Duration::from_secs_f64` panics beyond its range.
    Ok(Duration::from_secs_f64(secs.min(max.as_secs_f64())))
}
