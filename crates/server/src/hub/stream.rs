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

/// Pushes written per flush when more are already queued (or arrive within the write delay): a
/// burst of publications leaves in a few large writes instead of one system call per message.
const PUSH_BATCH: usize = 256;

/// Serves one connection until either side ends it.
pub(crate) async fn drive<C: FrameConn>(
    ctx: Arc<HubCtx>,
    mut conn: C,
    transport: &'static str,
    peer: Option<SocketAddr>,
    metadata_token: Option<String>,
) {
    let mut stop = ctx.stop.clone();
    if *stop.borrow() {
        finish(conn, &codes::disconnect_message(disconnect::SHUTDOWN)).await;
        return;
    }

    // 1. Wait for `connect` (a refused connect with a retryable code, such as 109 token
    //    expired, may be followed by another).
    let connect_deadline = sleep(ctx.idle);
    tokio::pin!(connect_deadline);
    let session: Session = loop {
        let inbound = tokio::select! {
            _ = &mut connect_deadline => {
                finish(conn, &codes::disconnect_message(disconnect::STALE)).await;
                return;
            }
            _ = crate::stopped(&mut stop) => {
                finish(conn, &codes::disconnect_message(disconnect::SHUTDOWN)).await;
                return;
            }
            inbound = conn.recv() => inbound,
        };
        let command = match inbound {
            Inbound::Command(c) => c,
            Inbound::Alive => continue,
            Inbound::Answer(_) => {
                tracing::debug!(transport, "a command before connect");
                finish(conn, &codes::disconnect_message(disconnect::BAD_REQUEST)).await;
                return;
            }
            Inbound::Closed => return,
            Inbound::TooBig => {
                conn.close(1009, "message too big").await;
                return;
            }
            Inbound::Flood => {
                conn.close(1008, "control frame flood").await;
                return;
            }
            Inbound::NotReading => return,
            Inbound::Bad(why) => {
                tracing::debug!(transport, %why, "bad frame before connect");
                finish(conn, &codes::disconnect_message(disconnect::BAD_REQUEST)).await;
                return;
            }
        };
        let Some(proto::command::Method::Connect(mut request)) = command.method else {
            tracing::debug!(transport, "first command is not connect");
            finish(conn, &codes::disconnect_message(disconnect::BAD_REQUEST)).await;
            return;
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
                    return;
                }
                break session;
            }
            Err(e) => {
                let ends = e.connect_disconnect();
                if ends.is_none() || conn.replies_to_refused_connect() {
                    let reply = proto::Reply {
                        id: command.id,
                        result: Some(proto::reply::Result::Error(e.to_proto())),
                    };
                    if !conn.send(Out::Reply(&reply)).await {
                        return;
                    }
                }
                if let Some(d) = ends {
                    finish(conn, &d).await;
                    return;
                }
            }
        }
    };

    // 2. Commands in, replies and pushes out.
    let mut ping = tokio::time::interval_at(Instant::now() + ctx.ping, ctx.ping);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    let ending: Option<proto::Disconnect> = loop {
        tokio::select! {
            _ = crate::stopped(&mut stop) => {
                break Some(codes::disconnect_message(disconnect::SHUTDOWN));
            }
            inbound = conn.recv() => {
                last_seen = Instant::now();
                match inbound {
                    Inbound::Command(command) => {
                        let reply = session.handle(command).await;
                        if !conn.send(Out::Reply(&reply)).await {
                            break None;
                        }
                    }
                    Inbound::Answer(reply) => {
                        if !conn.send(Out::Reply(&reply)).await {
                            break None;
                        }
                    }
                    Inbound::Alive => {}
                    Inbound::Closed => break None,
                    Inbound::TooBig => {
                        session.disconnect(codes::disconnect_message(disconnect::BAD_REQUEST));
                        conn.close(1009, "message too big").await;
                        session.close().await;
                        return;
                    }
                    Inbound::Flood => {
                        tracing::debug!(transport, client = session.client_id(), "control frame flood");
                        session.disconnect(codes::disconnect_message(disconnect::BAD_REQUEST));
                        conn.close(1008, "control frame flood").await;
                        session.close().await;
                        return;
                    }
                    Inbound::NotReading => {
                        // Nothing more can be written to it: end without a close handshake.
                        tracing::debug!(transport, client = session.client_id(), "client does not read");
                        session.disconnect(codes::disconnect_message(disconnect::SLOW_CONSUMER));
                        session.close().await;
                        return;
                    }
                    Inbound::Bad(why) => {
                        tracing::debug!(transport, client = session.client_id(), %why, "bad frame");
                        break Some(codes::disconnect_message(disconnect::BAD_REQUEST));
                    }
                }
            }
            push = session.recv() => match push {
                Some(push) => {
                    if let Some(proto::push::Push::Disconnect(d)) = &push.push {
                        // The hub ended the session (slow consumer, server API, ...).
                        let d = d.clone();
                        finish(conn, &d).await;
                        session.close().await;
                        return;
                    }
                    if !conn.feed(Out::Push(&push)).await {
                        break None;
                    }
                    // Drain what is already queued (waiting up to the write delay for more),
                    // then flush once.
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
                        break None;
                    }
                    if let Some(d) = ended {
                        finish(conn, &d).await;
                        session.close().await;
                        return;
                    }
                }
                None => break None,
            },
            _ = ping.tick(), if conn.pings() => {
                if last_seen.elapsed() >= ctx.idle {
                    break Some(codes::disconnect_message(disconnect::STALE));
                }
                if !conn.ping().await {
                    break None;
                }
            }
        }
    };
    if let Some(d) = ending {
        session.disconnect(d.clone());
        finish(conn, &d).await;
    }
    session.close().await;
}
