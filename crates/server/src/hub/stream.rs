//! The run loop of a framed bidirectional connection (WebSocket, gRPC `Connect`, WebTransport
//! streams): the first command must be `connect`; then commands go to [`Session::handle`] and
//! their replies out, pushes go out as they come, pings keep the connection alive, and the
//! session's final `Disconnect` push is written (and becomes the WebSocket close code) before
//! closing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use switchboard_hub::codes::{self, disconnect};
use switchboard_hub::{proto, Session, SharedPush};
use tokio::time::{sleep, Instant};

use super::ctx::HubCtx;

/// What arrived from the client.
pub(crate) enum Inbound {
    /// One decoded command.
    Command(proto::Command),
    /// A reply the transport adapter made itself (a method it answers without the hub, such as
    /// a feature another protocol has and switchboard has not): sent as it is.
    Answer(proto::Reply),
    /// A control frame (ping, pong): the peer is alive.
    Alive,
    /// A frame that does not decode (or of the wrong kind for the subprotocol).
    Bad(String),
    /// A message over the size limit (WebSocket: close 1009).
    TooBig,
    /// Control frames (pings, pongs) past their budget (WebSocket: close 1008).
    Flood,
    /// The client does not read what it is sent (its pongs): a slow consumer (3008).
    NotReading,
    /// The peer closed or the connection failed.
    Closed,
}

/// One outgoing frame.
pub(crate) enum Out<'a> {
    Reply(&'a proto::Reply),
    Push(&'a SharedPush),
}

/// A framed bidirectional connection.
pub(crate) trait FrameConn: Send {
    /// The next inbound frame. Must be cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Inbound> + Send;
    /// Writes a frame; false when the connection is gone.
    fn send(&mut self, frame: Out<'_>) -> impl Future<Output = bool> + Send;
    /// Queues a frame without flushing it, so a burst of pushes leaves in one write; false when
    /// the connection is gone. Transports without write buffering just send.
    fn feed(&mut self, frame: Out<'_>) -> impl Future<Output = bool> + Send {
        self.send(frame)
    }
    /// Flushes frames queued by [`FrameConn::feed`]; false when the connection is gone.
    fn flush(&mut self) -> impl Future<Output = bool> + Send {
        async { true }
    }
    /// Whether a refused `connect` that ends the connection gets its error reply before the
    /// disconnect (switchboard's protocol), or only the disconnect (Centrifugo's: an invalid
    /// token is close code 3500, which its SDKs read as "do not reconnect").
    fn replies_to_refused_connect(&self) -> bool {
        true
    }
    /// Whether the transport pings (and so can detect silence); gRPC relies on HTTP/2 pings.
    fn pings(&self) -> bool;
    /// Sends a ping; false when the connection is gone.
    fn ping(&mut self) -> impl Future<Output = bool> + Send;
    /// Closes with a code and reason (WebSocket close frame; gRPC ends the stream).
    fn close(self, code: u16, reason: &str) -> impl Future<Output = ()> + Send;
}

/// How a connection ends.
enum End {
    /// Nothing more is written (the peer is gone, or does not read).
    Quiet,
    /// The disconnect push, then the close with its code.
    Finish(proto::Disconnect),
    /// A close with this code and reason only.
    Close(u16, &'static str),
}

impl End {
    fn finish(code: u32) -> Self {
        End::Finish(codes::disconnect_message(code))
    }
}

/// Writes `d` as the last push and closes the connection with its code.
async fn finish<C: FrameConn>(mut conn: C, d: &proto::Disconnect) {
    let push = SharedPush::new(proto::Push {
        push: Some(proto::push::Push::Disconnect(d.clone())),
    });
    if conn.send(Out::Push(&push)).await {
        conn.close(u16::try_from(d.code).unwrap_or(1011), &d.reason)
            .await;
    }
}

/// Ends the connection as `end` says, then the session if there is one. Boxed by the callers:
/// an idle connection's task keeps only the run loop's state, not the closing handshake's.
async fn end<C: FrameConn>(conn: C, end: End, session: Option<Session>) {
    match end {
        End::Quiet => drop(conn),
        End::Finish(d) => finish(conn, &d).await,
        End::Close(code, reason) => conn.close(code, reason).await,
    }
    if let Some(session) = session {
        session.close().await;
    }
}

/// Pushes written per flush when more are already queued (or arrive within the write delay): a
/// burst of publications leaves in a few large writes instead of one system call per message.
const PUSH_BATCH: usize = 256;

/// Serves one connection until either side ends it.
///
/// Memory: an idle connection is this future, so what it holds across its waits is kept small
/// (docs/hub.md, "Memory per connection"). The `connect` phase, command handling and the
/// closing handshake run in futures of their own, boxed for as long as they run; the run loop
/// keeps the connection, the session, the ping timer and the four futures it waits on. (It is a
/// function returning an `async move` block rather than an `async fn`, whose arguments would
/// be stored twice.)
#[allow(clippy::manual_async_fn)]
pub(crate) fn drive<C: FrameConn>(
    ctx: Arc<HubCtx>,
    mut conn: C,
    transport: &'static str,
    peer: Option<SocketAddr>,
    metadata_token: Option<String>,
) -> impl Future<Output = ()> + Send {
    async move {
        let mut stop = ctx.stop.clone();
        let accepted = Box::pin(accept(
            &ctx,
            &mut conn,
            &mut stop,
            transport,
            peer,
            metadata_token,
        ))
        .await;
        let session = match accepted {
            Ok(session) => session,
            Err(ending) => return Box::pin(end(conn, ending, None)).await,
        };
        let ending = run(&ctx, &mut conn, &session, &mut stop, transport).await;
        Box::pin(end(conn, ending, Some(session))).await;
    }
}

/// 1. Waits for `connect` (a refused connect with a retryable code, such as 109 token expired,
///    may be followed by another); the session, or how the connection ends without one.
async fn accept<C: FrameConn>(
    ctx: &HubCtx,
    conn: &mut C,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    transport: &'static str,
    peer: Option<SocketAddr>,
    metadata_token: Option<String>,
) -> Result<Session, End> {
    if *stop.borrow() {
        return Err(End::finish(disconnect::SHUTDOWN));
    }
    let connect_deadline = sleep(ctx.idle);
    tokio::pin!(connect_deadline);
    loop {
        let inbound = tokio::select! {
            _ = &mut connect_deadline => return Err(End::finish(disconnect::STALE)),
            _ = crate::stopped(stop) => return Err(End::finish(disconnect::SHUTDOWN)),
            inbound = conn.recv() => inbound,
        };
        let command = match inbound {
            Inbound::Command(c) => c,
            Inbound::Alive => continue,
            Inbound::Answer(_) => {
                tracing::debug!(transport, "a command before connect");
                return Err(End::finish(disconnect::BAD_REQUEST));
            }
            Inbound::Closed | Inbound::NotReading => return Err(End::Quiet),
            Inbound::TooBig => return Err(End::Close(1009, "message too big")),
            Inbound::Flood => return Err(End::Close(1008, "control frame flood")),
            Inbound::Bad(why) => {
                tracing::debug!(transport, %why, "bad frame before connect");
                return Err(End::finish(disconnect::BAD_REQUEST));
            }
        };
        let Some(proto::command::Method::Connect(mut request)) = command.method else {
            tracing::debug!(transport, "first command is not connect");
            return Err(End::finish(disconnect::BAD_REQUEST));
        };
        if request.token.is_empty() {
            if let Some(t) = &metadata_token {
                request.token.clone_from(t);
            }
        }
        match ctx.connect(&request, transport, peer) {
            Ok(session) => {
                let reply = proto::Reply {
                    id: command.id,
                    result: Some(proto::reply::Result::Connect(session.connect_result())),
                };
                if !conn.send(Out::Reply(&reply)).await {
                    // Dropping the session releases it.
                    return Err(End::Quiet);
                }
                return Ok(session);
            }
            Err(e) => {
                let ends = e.connect_disconnect();
                if ends.is_none() || conn.replies_to_refused_connect() {
                    let reply = proto::Reply {
                        id: command.id,
                        result: Some(proto::reply::Result::Error(e.to_proto())),
                    };
                    if !conn.send(Out::Reply(&reply)).await {
                        return Err(End::Quiet);
                    }
                }
                if let Some(d) = ends {
                    return Err(End::Finish(d));
                }
            }
        }
    }
}

/// 2. Commands in, replies and pushes out, until either side ends; how the connection ends
///    (the session is disconnected already when it should be).
///
/// The loop's state while it waits is what an idle connection costs, and a future is as large
/// as its largest state: so the loop only waits and hands what woke it to a function of its
/// own, boxed unless it is the hot path (pushes).
async fn run<C: FrameConn>(
    ctx: &HubCtx,
    conn: &mut C,
    session: &Session,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    transport: &'static str,
) -> End {
    let mut ping = tokio::time::interval_at(Instant::now() + ctx.ping, ctx.ping);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    // What the hub is told (`Some`: the transport ends the session) and how the connection ends.
    let (disconnect, ending) = loop {
        tokio::select! {
            _ = crate::stopped(stop) => {
                let d = codes::disconnect_message(disconnect::SHUTDOWN);
                break (Some(d.clone()), End::Finish(d));
            }
            inbound = conn.recv() => {
                last_seen = Instant::now();
                if let Some(ends) = Box::pin(on_inbound(conn, session, inbound, transport)).await {
                    break ends;
                }
            }
            push = session.recv() => {
                let Some(push) = push else { break (None, End::Quiet) };
                if let Some(ending) = pushes(ctx, conn, session, push).await {
                    break (None, ending);
                }
            }
            _ = ping.tick(), if conn.pings() => {
                if last_seen.elapsed() >= ctx.idle {
                    let d = codes::disconnect_message(disconnect::STALE);
                    break (Some(d.clone()), End::Finish(d));
                }
                if !Box::pin(conn.ping()).await {
                    break (None, End::Quiet);
                }
            }
        }
    };
    if let Some(d) = disconnect {
        session.disconnect(d);
    }
    ending
}

/// What a frame from the client does; `Some` ends the connection (see [`run`]).
async fn on_inbound<C: FrameConn>(
    conn: &mut C,
    session: &Session,
    inbound: Inbound,
    transport: &'static str,
) -> Option<(Option<proto::Disconnect>, End)> {
    let reply = match inbound {
        Inbound::Command(command) => session.handle(command).await,
        Inbound::Answer(reply) => reply,
        Inbound::Alive => return None,
        Inbound::Closed => return Some((None, End::Quiet)),
        Inbound::TooBig => {
            let d = codes::disconnect_message(disconnect::BAD_REQUEST);
            return Some((Some(d), End::Close(1009, "message too big")));
        }
        Inbound::Flood => {
            tracing::debug!(
                transport,
                client = session.client_id(),
                "control frame flood"
            );
            let d = codes::disconnect_message(disconnect::BAD_REQUEST);
            return Some((Some(d), End::Close(1008, "control frame flood")));
        }
        Inbound::NotReading => {
            // Nothing more can be written to it: end without a close handshake.
            tracing::debug!(
                transport,
                client = session.client_id(),
                "client does not read"
            );
            let d = codes::disconnect_message(disconnect::SLOW_CONSUMER);
            return Some((Some(d), End::Quiet));
        }
        Inbound::Bad(why) => {
            tracing::debug!(transport, client = session.client_id(), %why, "bad frame");
            let d = codes::disconnect_message(disconnect::BAD_REQUEST);
            return Some((Some(d.clone()), End::Finish(d)));
        }
    };
    (!conn.send(Out::Reply(&reply)).await).then_some((None, End::Quiet))
}

/// Writes `push` and what is already queued after it (waiting up to the write delay for more),
/// then flushes once; `Some` ends the connection.
async fn pushes<C: FrameConn>(
    ctx: &HubCtx,
    conn: &mut C,
    session: &Session,
    push: Arc<SharedPush>,
) -> Option<End> {
    if let Some(proto::push::Push::Disconnect(d)) = &push.push {
        // The hub ended the session (slow consumer, server API, ...).
        return Some(End::Finish(d.clone()));
    }
    if !conn.feed(Out::Push(&push)).await {
        return Some(End::Quiet);
    }
    drop(push);
    let mut ended = None;
    let deadline = Instant::now() + ctx.write_delay;
    for _ in 1..PUSH_BATCH {
        let next = match session.try_recv() {
            Some(next) => next,
            None if ctx.write_delay.is_zero() => break,
            None => match tokio::time::timeout_at(deadline, session.recv()).await {
                Ok(Some(next)) => next,
                _ => break,
            },
        };
        if let Some(proto::push::Push::Disconnect(d)) = &next.push {
            ended = Some(d.clone());
            break;
        }
        if !conn.feed(Out::Push(&next)).await {
            break;
        }
    }
    if !conn.flush().await {
        return Some(End::Quiet);
    }
    ended.map(End::Finish)
}
