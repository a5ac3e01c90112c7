//! Server-sent events: `GET /v1/sse?channel=A&channel=B` (token as `?token=` or
//! `Authorization: Bearer`). The connection is authenticated and every channel subscribed
//! before the response starts, so refusals are plain HTTP errors (401, 403, 404, ...).
//!
//! Each event's `data` is one `ServerFrame` in the JSON mapping: first the connect reply, then
//! one subscribe reply per channel, then pushes. Publications on channels with history carry an
//! event `id`: the positions of all channels of the stream (see [`super::cursor`]); so does a
//! subscribe reply that no missed publications follow. A reconnecting `EventSource` sends the
//! last one back as `Last-Event-ID` (or `?last_event_id=`) and gets exactly the missed
//! publications (recovery), as publication events. A comment line (`: ping`) is sent every ping
//! interval. The session's `Disconnect` push is the final event; after an unsubscribe 2500
//! ("insufficient state") the stream ends too, so the client reconnects and recovers.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use switchboard_hub::codes::{self, disconnect, unsubscribe};
use switchboard_hub::proto;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::ctx::Ctx;
use super::error::ApiError;
use super::params::{channels_param, param, query_pairs};
use super::{cursor, frame};

/// One SSE event. Raw newlines in the JSON can only be insignificant whitespace (inside
/// strings they are escaped), so they become spaces and each event has one `data` line.
fn event(id: Option<&str>, data: &str) -> Bytes {
    let mut s = String::with_capacity(data.len() + 16 + id.map_or(0, str::len));
    if let Some(id) = id {
        s.push_str("id: ");
        s.push_str(id);
        s.push('\n');
    }
    s.push_str("data: ");
    s.extend(
        data.chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c }),
    );
    s.push_str("\n\n");
    Bytes::from(s)
}

pub(crate) async fn handler(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match start(ctx, Some(peer), query, headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn start(
    ctx: Ctx,
    peer: Option<SocketAddr>,
    query: Option<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query.as_deref());
    let channels = channels_param(&pairs, ctx.hub.config().limits.max_channels_per_connection)?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or_else(|| param(&pairs, "last_event_id"))
        .filter(|v| !v.trim().is_empty());
    let mut positions = match resume {
        Some(text) => cursor::decode(text.trim(), channels.len())
            .map_err(|e| ApiError::bad_request(format!("Last-Event-ID: {e}")))?,
        None => vec![None; channels.len()],
    };
    let session = ctx.connect_http(&headers, &pairs, "sse", peer)?;

    let mut initial = vec![event(
        None,
        &frame::reply_json(&proto::Reply {
            id: 0,
            result: Some(proto::reply::Result::Connect(session.connect_result())),
        }),
    )];
    for (i, channel) in channels.iter().enumerate() {
        let mut result = match session.subscribe(channel, positions[i].clone()).await {
            Ok(r) => r,
            Err(e) => {
                session.close().await;
                return Err(e.into());
            }
        };
        let recovered = std::mem::take(&mut result.publications);
        let top = result.recoverable.then(|| proto::StreamPosition {
            offset: result.offset,
            epoch: result.epoch.clone(),
        });
        // The subscribe reply first, then the missed publications with their ids. Without
        // missed publications the reply itself carries the stream's position as its id, so a
        // stream cut before its first publication still resumes from here.
        let reply_id = if recovered.is_empty() {
            positions[i].clone_from(&top);
            positions
                .iter()
                .any(Option::is_some)
                .then(|| cursor::encode(&positions))
        } else {
            None
        };
        initial.push(event(
            reply_id.as_deref(),
            &frame::reply_json(&proto::Reply {
                id: u32::try_from(i + 1).unwrap_or(u32::MAX),
                result: Some(proto::reply::Result::Subscribe(result)),
            }),
        ));
        for p in recovered {
            positions[i] = Some(proto::StreamPosition {
                offset: p.offset,
                epoch: p.epoch.clone(),
            });
            let id = cursor::encode(&positions);
            initial.push(event(Some(&id), &frame::push_json(&frame::publication(p))));
        }
        positions[i] = top;
    }

    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    let write_timeout = ctx.idle;
    let send = move |bytes: Bytes| {
        let tx = tx.clone();
        async move {
            matches!(
                tokio::time::timeout(write_timeout, tx.send(Ok(bytes))).await,
                Ok(Ok(()))
            )
        }
    };
    let mut stop = ctx.stop.clone();
    let ping = ctx.ping;
    tokio::spawn(async move {
        let mut ok = true;
        for e in initial {
            if !send(e).await {
                ok = false;
                break;
            }
        }
        let mut heartbeat = tokio::time::interval_at(Instant::now() + ping, ping);
        while ok {
            tokio::select! {
                _ = crate::stopped(&mut stop) => {
                    let d = codes::disconnect_message(disconnect::SHUTDOWN);
                    session.disconnect(d.clone());
                    let push = proto::Push { push: Some(proto::push::Push::Disconnect(d)) };
                    send(event(None, &frame::push_json(&push))).await;
                    break;
                }
                _ = heartbeat.tick() => ok = send(Bytes::from_static(b": ping\n\n")).await,
                push = session.recv() => {
                    let Some(push) = push else { break };
                    let mut id = None;
                    let mut last = false;
                    match &push.push {
                        Some(proto::push::Push::Publication(p)) if p.offset > 0 => {
                            if let Some(i) = channels.iter().position(|c| *c == p.channel) {
                                positions[i] = Some(proto::StreamPosition {
                                    offset: p.offset,
                                    epoch: p.epoch.clone(),
                                });
                                id = Some(cursor::encode(&positions));
                            }
                        }
                        Some(proto::push::Push::Disconnect(_)) => last = true,
                        Some(proto::push::Push::Unsubscribe(u)) => {
                            last = u.code == unsubscribe::INSUFFICIENT_STATE;
                        }
                        _ => {}
                    }
                    ok = send(event(id.as_deref(), &frame::push_json(&push))).await && !last;
                }
            }
        }
        session.close().await;
    });

    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}
