//! The one task that owns the WebSocket: connects, re-subscribes and re-sends what was not
//! answered after every reconnect, and turns server frames into [`Event`]s.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use switchboard_proto::prost;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::WebSocketStream;

use crate::proto::{self, command::Method};
use crate::state::{backoff, Subscriptions};
use crate::target::Target;
use crate::{ClientError, Config, Event, Op};

/// The WebSocket subprotocol: binary frames, one protobuf `Command`/`ServerFrame` each.
const SUBPROTOCOL: &str = "switchboard.proto";

/// Silence (no frame, no ping) after which the connection is taken for dead: the server pings
/// every 25 s by default.
const IDLE: Duration = Duration::from_secs(75);

/// A temporarily refused subscription is tried again this much later.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(2);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

/// A request waiting for its reply.
enum Pending {
    Request {
        method: Method,
        reply: oneshot::Sender<Result<proto::reply::Result, ClientError>>,
    },
    Subscribe {
        channel: String,
        reply: Option<oneshot::Sender<Result<proto::SubscribeResult, ClientError>>>,
    },
}

impl Pending {
    fn method(&self, subs: &Subscriptions) -> Option<Method> {
        match self {
            Pending::Request { method, .. } => Some(method.clone()),
            Pending::Subscribe { channel, .. } => subs.request(channel).map(Method::Subscribe),
        }
    }

    fn fail(self, error: impl Fn() -> ClientError) {
        match self {
            Pending::Request { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            Pending::Subscribe { reply, .. } => {
                if let Some(r) = reply {
                    let _ = r.send(Err(error()));
                }
            }
        }
    }
}

/// Why a connection ended.
enum End {
    /// [`Op::Close`], or every [`crate::Client`] dropped.
    Closed,
    /// Lost or ended by the server.
    Lost {
        code: u32,
        reason: String,
        reconnect: bool,
    },
}

struct Task {
    config: Config,
    target: Target,
    tls: Option<tokio_rustls::TlsConnector>,
    subs: Subscriptions,
    /// Sent on this connection, by command id.
    sent: BTreeMap<u32, Pending>,
    /// To send once connected (in order).
    queued: Vec<Pending>,
    /// Subscriptions to try again, and when.
    retry: Vec<(tokio::time::Instant, String)>,
    next_id: u32,
    events: mpsc::UnboundedSender<Event>,
}

/// Opens the first connection (errors are the caller's) and leaves the rest to a task.
pub(crate) async fn start(
    config: Config,
) -> Result<(mpsc::UnboundedSender<Op>, mpsc::UnboundedReceiver<Event>), ClientError> {
    let target = Target::parse(&config.url)?;
    let tls = if target.tls {
        Some(crate::tls::connector(&config)?)
    } else {
        None
    };
    let (ops, ops_rx) = mpsc::unbounded_channel();
    let (events, events_rx) = mpsc::unbounded_channel();
    let mut task = Task {
        config,
        target,
        tls,
        subs: Subscriptions::default(),
        sent: BTreeMap::new(),
        queued: Vec::new(),
        retry: Vec::new(),
        next_id: 1,
        events,
    };
    let (ws, connected) = task.open().await?;
    tokio::spawn(task.run(ws, connected, ops_rx));
    Ok((ops, events_rx))
}

impl Task {
    fn id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// TCP (+ TLS), the WebSocket handshake and the connect command, within the connect timeout.
    async fn open(&mut self) -> Result<(Ws, proto::ConnectResult), ClientError> {
        let limit = self.config.connect_timeout;
        match tokio::time::timeout(limit, self.open_inner()).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout("connecting")),
        }
    }

    async fn open_inner(&mut self) -> Result<(Ws, proto::ConnectResult), ClientError> {
        let url = self.target.url.clone();
        let connect_err = |e: tokio_tungstenite::tungstenite::Error| ClientError::Connect {
            url: url.clone(),
            source: Box::new(e),
        };
        let tcp = tokio::net::TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|e| connect_err(e.into()))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(connector) => {
                let name = rustls_pki_types::ServerName::try_from(self.target.host.clone())
                    .map_err(|_| ClientError::Url {
                        url: self.config.url.clone(),
                        why: "not a valid TLS server name",
                    })?;
                Box::new(
                    connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| connect_err(e.into()))?,
                )
            }
        };
        let mut request = self
            .target
            .url
            .as_str()
            .into_client_request()
            .map_err(connect_err)?;
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let (mut ws, response) = tokio_tungstenite::client_async(request, io)
            .await
            .map_err(connect_err)?;
        let chosen = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok());
        if chosen != Some(SUBPROTOCOL) {
            return Err(ClientError::Protocol(format!(
                "the server did not accept the {SUBPROTOCOL} subprotocol"
            )));
        }
        let id = self.id();
        let connect = proto::ConnectRequest {
            token: self.config.token.clone().unwrap_or_default(),
            name: self.config.name.clone(),
            version: self.config.version.clone(),
        };
        send(&mut ws, id, Method::Connect(connect))
            .await
            .map_err(connect_err)?;
        loop {
            let frame = match ws.next().await {
                Some(Ok(Message::Binary(b))) => proto::ServerFrame::decode(b)
                    .map_err(|e| ClientError::Protocol(format!("bad frame: {e}")))?,
                Some(Ok(Message::Close(c))) => {
                    return Err(ClientError::Disconnected {
                        code: c.as_ref().map_or(0, |c| u16::from(c.code).into()),
                        reason: c.map(|c| c.reason.to_string()).unwrap_or_default(),
                    })
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(connect_err(e)),
                None => {
                    return Err(connect_err(
                        tokio_tungstenite::tungstenite::Error::ConnectionClosed,
                    ))
                }
            };
            if let Some(proto::server_frame::Frame::Reply(r)) = frame.frame {
                if r.id != id {
                    continue;
                }
                return match r.result {
                    Some(proto::reply::Result::Connect(c)) => Ok((ws, c)),
                    Some(proto::reply::Result::Error(e)) => Err(ClientError::Server {
                        code: e.code,
                        message: e.message,
                        temporary: e.temporary,
                    }),
                    other => Err(ClientError::Protocol(format!(
                        "unexpected connect reply {other:?}"
                    ))),
                };
            }
        }
    }

    async fn run(
        mut self,
        mut ws: Ws,
        mut connected: proto::ConnectResult,
        mut ops: mpsc::UnboundedReceiver<Op>,
    ) {
        loop {
            self.emit(Event::Connected {
                client_id: connected.client_id.clone(),
                user: connected.user.clone(),
            });
            let end = match self.resume(&mut ws).await {
                Ok(()) => self.serve(&mut ws, &mut ops).await,
                Err(e) => End::Lost {
                    code: 0,
                    reason: e.to_string(),
                    reconnect: true,
                },
            };
            // Whatever was sent and not answered goes again on the next connection.
            let unanswered: Vec<Pending> = std::mem::take(&mut self.sent).into_values().collect();
            let queued = std::mem::take(&mut self.queued);
            self.queued = unanswered.into_iter().chain(queued).collect();
            match end {
                End::Closed => {
                    let _ = ws.close(None).await;
                    self.fail_all(|| ClientError::Closed);
                    return;
                }
                End::Lost {
                    code,
                    reason,
                    reconnect: false,
                } => {
                    self.emit(Event::Disconnected {
                        code,
                        reason: reason.clone(),
                        reconnect: false,
                    });
                    self.fail_all(|| ClientError::Disconnected {
                        code,
                        reason: reason.clone(),
                    });
                    return;
                }
                End::Lost { code, reason, .. } => {
                    tracing::debug!(code, %reason, "connection lost; reconnecting");
                    self.emit(Event::Disconnected {
                        code,
                        reason,
                        reconnect: true,
                    });
                }
            }
            match self.reconnect(&mut ops).await {
                Some((w, c)) => {
                    ws = w;
                    connected = c;
                }
                None => return,
            }
        }
    }

    /// Reconnects with backoff; `None` when closed meanwhile or refused for good.
    async fn reconnect(
        &mut self,
        ops: &mut mpsc::UnboundedReceiver<Op>,
    ) -> Option<(Ws, proto::ConnectResult)> {
        let mut attempt = 0u32;
        loop {
            let wait = backoff(
                attempt,
                self.config.min_backoff,
                self.config.max_backoff,
                crate::random_unit(),
            );
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    op = ops.recv() => match op {
                        None | Some(Op::Close) => {
                            self.fail_all(|| ClientError::Closed);
                            return None;
                        }
                        Some(op) => self.take(op),
                    },
                }
            }
            match self.open().await {
                Ok(c) => return Some(c),
                Err(ClientError::Server {
                    code,
                    message,
                    temporary: false,
                }) => {
                    self.emit(Event::Disconnected {
                        code,
                        reason: message.clone(),
                        reconnect: false,
                    });
                    self.fail_all(|| ClientError::Server {
                        code,
                        message: message.clone(),
                        temporary: false,
                    });
                    return None;
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "reconnect failed");
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Fails every request (the client is done).
    fn fail_all(&mut self, error: impl Fn() -> ClientError) {
        for p in std::mem::take(&mut self.sent).into_values() {
            p.fail(&error);
        }
        for p in std::mem::take(&mut self.queued) {
            p.fail(&error);
        }
    }

    /// An op while there is no connection: queued.
    fn take(&mut self, op: Op) {
        match op {
            Op::Request { method, reply } => self.queued.push(Pending::Request { method, reply }),
            Op::Subscribe {
                channel,
                since,
                reply,
            } => {
                if self.subs.add(&channel, since) {
                    self.queued.push(Pending::Subscribe {
                        channel,
                        reply: Some(reply),
                    });
                } else {
                    let _ = reply.send(Err(already_subscribed(&channel)));
                }
            }
            Op::Close => {}
        }
    }

    /// After a (re)connect: every subscription again (recovering), then what was queued.
    async fn resume(&mut self, ws: &mut Ws) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let queued = std::mem::take(&mut self.queued);
        let mut waiting: BTreeMap<String, Pending> = BTreeMap::new();
        let mut rest = Vec::new();
        for p in queued {
            match p {
                Pending::Subscribe { ref channel, .. } => {
                    waiting.insert(channel.clone(), p);
                }
                p => rest.push(p),
            }
        }
        self.retry.clear();
        for channel in self.subs.channels() {
            let p = waiting.remove(&channel).unwrap_or(Pending::Subscribe {
                channel: channel.clone(),
                reply: None,
            });
            self.send_pending(ws, p).await?;
        }
        for p in rest {
            self.send_pending(ws, p).await?;
        }
        Ok(())
    }

    async fn send_pending(
        &mut self,
        ws: &mut Ws,
        p: Pending,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let Some(method) = p.method(&self.subs) else {
            // A subscription dropped meanwhile.
            p.fail(|| ClientError::Closed);
            return Ok(());
        };
        let id = self.id();
        self.sent.insert(id, p);
        send(ws, id, method).await
    }

    async fn serve(&mut self, ws: &mut Ws, ops: &mut mpsc::UnboundedReceiver<Op>) -> End {
        let mut disconnect: Option<proto::Disconnect> = None;
        loop {
            let next_retry = self.retry.iter().map(|(at, _)| *at).min();
            tokio::select! {
                op = ops.recv() => {
                    let result = match op {
                        None | Some(Op::Close) => return End::Closed,
                        Some(Op::Request { method, reply }) => {
                            self.send_pending(ws, Pending::Request { method, reply }).await
                        }
                        Some(Op::Subscribe { channel, since, reply }) => {
                            if self.subs.add(&channel, since) {
                                self.send_pending(ws, Pending::Subscribe { channel, reply: Some(reply) }).await
                            } else {
                                let _ = reply.send(Err(already_subscribed(&channel)));
                                Ok(())
                            }
                        }
                    };
                    if let Err(e) = result {
                        return lost(disconnect, e.to_string());
                    }
                }
                () = sleep_until(next_retry) => {
                    let now = tokio::time::Instant::now();
                    let (due, later): (Vec<_>, Vec<_>) =
                        self.retry.drain(..).partition(|(at, _)| *at <= now);
                    self.retry = later;
                    for (_, channel) in due {
                        if self.subs.contains(&channel) {
                            if let Err(e) = self.send_pending(ws, Pending::Subscribe { channel, reply: None }).await {
                                return lost(disconnect, e.to_string());
                            }
                        }
                    }
                }
                msg = tokio::time::timeout(IDLE, ws.next()) => match msg {
                    Err(_) => return lost(disconnect, format!("nothing from the server in {} s", IDLE.as_secs())),
                    Ok(None) => return lost(disconnect, "connection closed".into()),
                    Ok(Some(Err(e))) => return lost(disconnect, e.to_string()),
                    Ok(Some(Ok(Message::Binary(b)))) => match proto::ServerFrame::decode(b) {
                        Ok(frame) => {
                            if let Some(d) = self.frame(frame) {
                                disconnect = Some(d);
                            }
                        }
                        Err(e) => return End::Lost {
                            code: 0,
                            reason: format!("bad frame from the server: {e}"),
                            reconnect: true,
                        },
                    },
                    Ok(Some(Ok(Message::Close(c)))) => {
                        return match disconnect {
                            Some(d) => End::Lost { code: d.code, reason: d.reason, reconnect: d.reconnect },
                            None => {
                                let code: u32 = c.as_ref().map_or(0, |c| u16::from(c.code).into());
                                End::Lost {
                                    code,
                                    reason: c.map(|c| c.reason.to_string()).unwrap_or_default(),
                                    // 3500–3999 and 4500–4999 mean "do not come back".
                                    reconnect: matches!(code, 0..=3499 | 4000..=4499),
                                }
                            }
                        };
                    }
                    Ok(Some(Ok(_))) => {}
                },
            }
        }
    }

    /// One server frame; a `Disconnect` push is returned (the close follows it).
    fn frame(&mut self, frame: proto::ServerFrame) -> Option<proto::Disconnect> {
        use proto::push::Push as P;
        match frame.frame? {
            proto::server_frame::Frame::Reply(r) => {
                let pending = self.sent.remove(&r.id)?;
                let result = r.result?;
                match pending {
                    Pending::Request { reply, .. } => {
                        let answer = match result {
                            proto::reply::Result::Error(e) => Err(server_error(e)),
                            ok => Ok(ok),
                        };
                        let _ = reply.send(answer);
                    }
                    Pending::Subscribe { channel, reply } => match result {
                        proto::reply::Result::Subscribe(s) => {
                            let sub = self.subs.subscribed(&channel, &s);
                            for p in sub.publications {
                                self.emit(Event::Publication(p));
                            }
                            self.emit(Event::Subscribed {
                                channel,
                                was_recovering: sub.was_recovering,
                                recovered: sub.recovered,
                                position: sub.position,
                            });
                            if let Some(r) = reply {
                                let _ = r.send(Ok(s));
                            }
                        }
                        proto::reply::Result::Error(e) if e.temporary => {
                            tracing::debug!(%channel, code = e.code, "subscription refused for now; retrying");
                            self.retry
                                .push((tokio::time::Instant::now() + RESUBSCRIBE_DELAY, channel));
                            if let Some(r) = reply {
                                let _ = r.send(Err(server_error(e)));
                            }
                        }
                        proto::reply::Result::Error(e) => {
                            self.subs.remove(&channel);
                            self.emit(Event::Unsubscribed {
                                channel,
                                code: e.code,
                                reason: e.message.clone(),
                            });
                            if let Some(r) = reply {
                                let _ = r.send(Err(server_error(e)));
                            }
                        }
                        other => {
                            if let Some(r) = reply {
                                let _ = r.send(Err(crate::unexpected(other)));
                            }
                        }
                    },
                }
                None
            }
            proto::server_frame::Frame::Push(push) => {
                match push.push? {
                    P::Publication(p) => {
                        if self.subs.publication(&p) {
                            self.emit(Event::Publication(p));
                        }
                    }
                    P::Join(j) => self.emit(Event::Join(j)),
                    P::Leave(l) => self.emit(Event::Leave(l)),
                    P::Unsubscribe(u) => {
                        self.subs.remove(&u.channel);
                        self.emit(Event::Unsubscribed {
                            channel: u.channel,
                            code: u.code,
                            reason: u.reason,
                        });
                    }
                    P::Disconnect(d) => return Some(d),
                    P::RoomJoin(j) => self.emit(Event::RoomJoin(j)),
                    P::RoomLeave(l) => self.emit(Event::RoomLeave(l)),
                    P::Signal(s) => self.emit(Event::Signal(s)),
                }
                None
            }
        }
    }
}

fn lost(disconnect: Option<proto::Disconnect>, reason: String) -> End {
    match disconnect {
        Some(d) => End::Lost {
            code: d.code,
            reason: d.reason,
            reconnect: d.reconnect,
        },
        None => End::Lost {
            code: 0,
            reason,
            reconnect: true,
        },
    }
}

fn server_error(e: proto::Error) -> ClientError {
    ClientError::Server {
        code: e.code,
        message: e.message,
        temporary: e.temporary,
    }
}

fn already_subscribed(channel: &str) -> ClientError {
    ClientError::Server {
        code: 105,
        message: format!("already subscribed to {channel:?}"),
        temporary: false,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn send(
    ws: &mut Ws,
    id: u32,
    method: Method,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let command = proto::Command {
        id,
        method: Some(method),
    };
    ws.send(Message::Binary(command.encode_to_vec().into()))
        .await
}
