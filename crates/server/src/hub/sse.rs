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

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Frame;
use switchboard_hub::codes::{self, disconnect, unsubscribe};
use switchboard_hub::{proto, Session, SharedPush};
use tokio::sync::watch;
use tokio::time::Instant;

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

    // The events go to hyper through a pipe of PIPE_EVENTS: a client that stops reading blocks
    // the task, which ends the stream after the write timeout. The first events (replies,
    // recovered publications) are in it from the start.
    let pipe = Arc::new(Pipe::new(initial));
    let stream = Stream {
        session,
        channels,
        positions,
        tx: Sender(pipe.clone()),
        write_timeout: ctx.idle,
    };
    tokio::spawn(pump(stream, ctx.stop.clone(), ctx.ping));

    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::new(Events(pipe)),
    )
        .into_response())
}

/// One stream's state in its task.
struct Stream {
    session: Session,
    channels: Vec<String>,
    /// Each channel's position, for event ids.
    positions: Vec<Option<proto::StreamPosition>>,
    tx: Sender,
    /// A client that does not take an event within this long ends the stream.
    write_timeout: Duration,
}

impl Stream {
    async fn send(&self, bytes: Bytes) -> bool {
        matches!(
            tokio::time::timeout(self.write_timeout, self.tx.send(bytes)).await,
            Ok(true)
        )
    }

    /// Writes a push as an event; false ends the stream.
    async fn push(&mut self, push: Arc<SharedPush>) -> bool {
        let mut id = None;
        let mut last = false;
        match &push.push {
            Some(proto::push::Push::Publication(p)) if p.offset > 0 => {
                if let Some(i) = self.channels.iter().position(|c| *c == p.channel) {
                    self.positions[i] = Some(proto::StreamPosition {
                        offset: p.offset,
                        epoch: p.epoch.clone(),
                    });
                    id = Some(cursor::encode(&self.positions));
                }
            }
            Some(proto::push::Push::Disconnect(_)) => last = true,
            Some(proto::push::Push::Unsubscribe(u)) => {
                last = u.code == unsubscribe::INSUFFICIENT_STATE;
            }
            _ => {}
        }
        let bytes = event(id.as_deref(), &frame::push_json(&push));
        drop(push);
        self.send(bytes).await && !last
    }

    /// Shutdown: the disconnect event, the last.
    async fn shut_down(&self) {
        let d = codes::disconnect_message(disconnect::SHUTDOWN);
        self.session.disconnect(d.clone());
        let push = proto::Push {
            push: Some(proto::push::Push::Disconnect(d)),
        };
        self.send(event(None, &frame::push_json(&push))).await;
    }
}

/// What woke a stream's task.
enum Wake {
    Stop,
    Gone,
    Heartbeat,
    Push(Option<Arc<SharedPush>>),
}

/// A stream's task: the session's pushes and the heartbeats into the pipe, until the session or
/// the connection ends (a connection that closes ends it at once), or the server stops. What
/// it holds while it waits is what an idle stream costs: the handling of what woke it is a
/// future of its own.
async fn pump(mut st: Stream, mut stop: watch::Receiver<bool>, ping: Duration) {
    let mut heartbeat = tokio::time::interval_at(Instant::now() + ping, ping);
    loop {
        let wake = tokio::select! {
            _ = crate::stopped(&mut stop) => Wake::Stop,
            () = st.tx.gone() => Wake::Gone,
            _ = heartbeat.tick() => Wake::Heartbeat,
            push = st.session.recv() => Wake::Push(push),
        };
        let go_on = match wake {
            Wake::Stop => {
                Box::pin(st.shut_down()).await;
                false
            }
            Wake::Gone | Wake::Push(None) => false,
            Wake::Heartbeat => st.send(Bytes::from_static(b": ping\n\n")).await,
            Wake::Push(Some(push)) => st.push(push).await,
        };
        if !go_on {
            break;
        }
    }
    let Stream { session, tx, .. } = st;
    // The body ends once hyper has taken what is queued.
    drop(tx);
    Box::pin(session.close()).await;
}

/// Events queued between a stream's task and hyper at most.
const PIPE_EVENTS: usize = 16;

/// The events of one stream, from its task ([`Sender`]) to hyper ([`Events`], the body). Lighter
/// than a tokio channel (whose first block alone, 32 slots, is 1 KiB).
struct Pipe(std::sync::Mutex<PipeState>);

struct PipeState {
    events: VecDeque<Bytes>,
    /// The task is done: the body ends once `events` is empty.
    ended: bool,
    /// hyper dropped the body: the connection is gone.
    gone: bool,
    /// The body, waiting for an event.
    reader: Option<Waker>,
    /// The task, waiting for room or for the body to go.
    writer: Option<Waker>,
}

impl Pipe {
    fn new(first: Vec<Bytes>) -> Self {
        Pipe(std::sync::Mutex::new(PipeState {
            events: VecDeque::from(first),
            ended: false,
            gone: false,
            reader: None,
            writer: None,
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sets `slot` to `cx`'s waker (unless it is that already).
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// The task's end of a [`Pipe`]; dropping it ends the body.
struct Sender(Arc<Pipe>);

impl Sender {
    /// Queues an event once there is room; false when the body is gone.
    async fn send(&self, bytes: Bytes) -> bool {
        let mut bytes = Some(bytes);
        std::future::poll_fn(|cx| {
            let mut st = self.0.state();
            if st.gone {
                return Poll::Ready(false);
            }
            if st.events.len() >= PIPE_EVENTS {
                register(&mut st.writer, cx);
                return Poll::Pending;
            }
            st.events.extend(bytes.take());
            if let Some(w) = st.reader.take() {
                w.wake();
            }
            Poll::Ready(true)
        })
        .await
    }

    /// Resolves once the body is gone (the connection closed).
    async fn gone(&self) {
        std::future::poll_fn(|cx| {
            let mut st = self.0.state();
            if st.gone {
                return Poll::Ready(());
            }
            register(&mut st.writer, cx);
            Poll::Pending
        })
        .await
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let mut st = self.0.state();
        st.ended = true;
        if let Some(w) = st.reader.take() {
            w.wake();
        }
    }
}

/// The response body: the [`Pipe`]'s events.
struct Events(Arc<Pipe>);

impl hyper::body::Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let mut st = self.0.state();
        let was_full = st.events.len() >= PIPE_EVENTS;
        let Some(bytes) = st.events.pop_front() else {
            if st.ended {
                return Poll::Ready(None);
            }
            register(&mut st.reader, cx);
            return Poll::Pending;
        };
        if st.events.is_empty() && st.events.capacity() > PIPE_EVENTS {
            // Many recovered publications were queued at the start: let their room go.
            st.events = VecDeque::new();
        }
        if was_full {
            // The task may be waiting for room (else it is woken for nothing, once).
            if let Some(w) = st.writer.take() {
                w.wake();
            }
        }
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let mut st = self.0.state();
        st.gone = true;
        st.events.clear();
        if let Some(w) = st.writer.take() {
            w.wake();
        }
    }
}
