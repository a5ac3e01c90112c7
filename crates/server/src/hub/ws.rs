//! WebSocket `/v1/ws`: subprotocol `switchboard.json` (text frames, JSON mapping) or
//! `switchboard.proto` (binary frames, protobuf); one `Command` / `ServerFrame` per frame.
//! Without a subprotocol the JSON mapping is used; any other requested subprotocol is refused
//! with 400 before the upgrade.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use switchboard_hub::codes::error as code;
use switchboard_hub::proto;
use switchboard_proto::json;
use switchboard_proto::prost::Message as _;

use super::ctx::Ctx;
use super::error::ApiError;
use super::frame;
use super::stream::{drive, FrameConn, Inbound, Out};

pub(crate) const JSON: &str = "switchboard.json";
pub(crate) const PROTO: &str = "switchboard.proto";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Codec {
    Json,
    Proto,
    /// Centrifugo's client protocol, JSON (`/connection/websocket`).
    CentrifugoJson,
    /// Centrifugo's client protocol, protobuf (subprotocol `centrifuge-protobuf`).
    CentrifugoProto,
}

impl Codec {
    fn centrifugo(self) -> bool {
        matches!(self, Codec::CentrifugoJson | Codec::CentrifugoProto)
    }
}

/// `/connection/websocket`: Centrifugo's client protocol (JSON, or protobuf with the
/// `centrifuge-protobuf` subprotocol) onto the same hub (docs/compat.md).
pub(crate) async fn centrifugo_handler(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match checked(upgrade) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let proto = upgrade
        .requested_protocols()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == switchboard_proto::centrifugo::PROTOBUF);
    let codec = if proto {
        Codec::CentrifugoProto
    } else {
        Codec::CentrifugoJson
    };
    let mut upgrade = limits(upgrade, &ctx);
    if proto {
        upgrade.set_selected_protocol(HeaderValue::from_static(
            switchboard_proto::centrifugo::PROTOBUF,
        ));
    }
    serve(upgrade, ctx, codec, peer, "centrifugo")
}

/// The upgrade, or the answer to a request that is not one.
#[allow(clippy::result_large_err)]
fn checked(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, Response> {
    upgrade.map_err(|rejection| {
        let status = match rejection {
            WebSocketUpgradeRejection::MethodNotGet(_)
            | WebSocketUpgradeRejection::MethodNotConnect(_) => StatusCode::METHOD_NOT_ALLOWED,
            // A plain request (no `Connection: upgrade` / `Upgrade: websocket`).
            WebSocketUpgradeRejection::ConnectionNotUpgradable(_)
            | WebSocketUpgradeRejection::InvalidConnectionHeader(_)
            | WebSocketUpgradeRejection::InvalidUpgradeHeader(_) => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(
            status,
            code::BAD_REQUEST,
            format!("WebSocket upgrade required: {rejection}"),
        )
        .into_response()
    })
}

/// The size, buffer and write bounds of every hub WebSocket.
fn limits(upgrade: WebSocketUpgrade, ctx: &Ctx) -> WebSocketUpgrade {
    upgrade
        .max_message_size(ctx.max_frame)
        .max_frame_size(ctx.max_frame)
        // tungstenite zero-fills up to this much of its read buffer on *every* read attempt,
        // including the ones that find nothing (each wake-up of a connection's task polls for
        // input): at the default 128 KiB that memset was half the server's CPU under fan-out.
        // Clients send small commands; a larger frame just takes a few more reads.
        .read_buffer_size(READ_BUFFER)
        // Frames gather up to WRITE_BUFFER before a write; past MAX_WRITE_BUFFER (a client that
        // does not read) a send fails and the connection ends. tungstenite's default is
        // unbounded: each ping of a client that stopped reading queued another pong.
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + 2 * ctx.max_frame)
}

fn serve(
    upgrade: WebSocketUpgrade,
    ctx: Ctx,
    codec: Codec,
    peer: SocketAddr,
    transport: &'static str,
) -> Response {
    let peer = Some(peer);
    upgrade
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "WebSocket upgrade failed"))
        // The connection's task is `drive`'s future itself (no `async` block around it that
        // would keep another copy of the socket).
        .on_upgrade(move |socket| {
            let conn = WsConn {
                socket,
                codec,
                write_timeout: ctx.idle,
                control: ControlBudget::new(tokio::time::Instant::now()),
                queued: std::collections::VecDeque::new(),
                position_only: std::collections::HashSet::new(),
                extras: switchboard_proto::centrifugo::ConnectExtras {
                    ping_secs: u32::try_from(ctx.ping.as_secs()).unwrap_or(u32::MAX),
                },
            };
            drive(ctx, conn, transport, peer, None)
        })
}

pub(crate) async fn handler(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            let status = match rejection {
                WebSocketUpgradeRejection::MethodNotGet(_)
                | WebSocketUpgradeRejection::MethodNotConnect(_) => StatusCode::METHOD_NOT_ALLOWED,
                // A plain request (no `Connection: upgrade` / `Upgrade: websocket`).
                WebSocketUpgradeRejection::ConnectionNotUpgradable(_)
                | WebSocketUpgradeRejection::InvalidConnectionHeader(_)
                | WebSocketUpgradeRejection::InvalidUpgradeHeader(_) => {
                    StatusCode::UPGRADE_REQUIRED
                }
                _ => StatusCode::BAD_REQUEST,
            };
            return ApiError::new(
                status,
                code::BAD_REQUEST,
                format!("WebSocket upgrade required: {rejection}"),
            )
            .into_response();
        }
    };
    let requested: Vec<String> = upgrade
        .requested_protocols()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let chosen = requested.iter().find_map(|p| match p.as_str() {
        JSON => Some(Codec::Json),
        PROTO => Some(Codec::Proto),
        _ => None,
    });
    let codec = match (chosen, requested.is_empty()) {
        (Some(c), _) => c,
        (None, true) => Codec::Json,
        (None, false) => {
            return ApiError::bad_request(format!(
                "unsupported WebSocket subprotocol {:?}: use {JSON} or {PROTO}",
                requested.join(", ")
            ))
            .into_response()
        }
    };
    let mut upgrade = limits(upgrade, &ctx);
    if chosen.is_some() {
        let name = if codec == Codec::Json { JSON } else { PROTO };
        upgrade.set_selected_protocol(HeaderValue::from_static(name));
    }
    serve(upgrade, ctx, codec, peer, "websocket")
}

struct WsConn {
    socket: WebSocket,
    codec: Codec,
    /// A write blocked longer than this (the client stopped reading) ends the connection.
    write_timeout: Duration,
    /// Pings and pongs the client may send.
    control: ControlBudget,
    /// Commands decoded from a frame that carried several (Centrifugo), not yet handed out.
    queued: std::collections::VecDeque<Inbound>,
    /// Ids of Centrifugo history calls that asked for the stream position only.
    position_only: std::collections::HashSet<u32>,
    /// What a Centrifugo connect reply announces.
    extras: switchboard_proto::centrifugo::ConnectExtras,
}

/// Control frames (ping, pong) a client may send: a burst of [`CONTROL_BURST`], then
/// [`CONTROL_PER_SEC`] a second. Clients ping every few seconds at most; browsers never do.
struct ControlBudget {
    tokens: f64,
    at: tokio::time::Instant,
}

const CONTROL_BURST: f64 = 32.0;
const CONTROL_PER_SEC: f64 = 4.0;

impl ControlBudget {
    fn new(now: tokio::time::Instant) -> Self {
        ControlBudget {
            tokens: CONTROL_BURST,
            at: now,
        }
    }

    /// Takes one control frame's token at `now`; false when the client floods.
    fn take(&mut self, now: tokio::time::Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * CONTROL_PER_SEC;
        self.tokens = (self.tokens + refill).min(CONTROL_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Metric: WebSocket connections ended for flooding control frames or for not reading.
const WS_ABUSE: &str = "switchboard_hub_ws_closed_total";

impl WsConn {
    /// The frame of `out`; `None` for what this protocol does not carry (Centrifugo clients get
    /// no room signaling, and their disconnect travels as the close frame).
    fn encode(&mut self, out: Out<'_>) -> Option<Message> {
        use switchboard_proto::centrifugo as cf;
        Some(match (self.codec, out) {
            (Codec::CentrifugoJson, Out::Reply(r)) => {
                let position_only = self.position_only.remove(&r.id);
                Message::text(cf::reply_json(r, self.extras, position_only))
            }
            (Codec::CentrifugoProto, Out::Reply(r)) => {
                let position_only = self.position_only.remove(&r.id);
                Message::binary(cf::reply_proto(r, self.extras, position_only))
            }
            // Encoded once per publication for every Centrifugo subscriber (empty: not for
            // Centrifugo clients).
            (Codec::CentrifugoJson, Out::Push(p)) => {
                let bytes = p.encoded(switchboard_hub::Codec::CentrifugoJson, |p| {
                    cf::push_json(p).map(bytes::Bytes::from).unwrap_or_default()
                });
                if bytes.is_empty() {
                    return None;
                }
                Message::Text(Utf8Bytes::try_from(bytes).ok()?)
            }
            (Codec::CentrifugoProto, Out::Push(p)) => {
                let bytes = p.encoded(switchboard_hub::Codec::CentrifugoProto, |p| {
                    cf::push_proto(p)
                        .map(bytes::Bytes::from)
                        .unwrap_or_default()
                });
                if bytes.is_empty() {
                    return None;
                }
                Message::Binary(bytes)
            }
            (codec, out) => self.encode_native(codec, out),
        })
    }

    fn encode_native(&self, codec: Codec, out: Out<'_>) -> Message {
        match (codec, out) {
            (Codec::Json, Out::Reply(r)) => Message::text(frame::reply_json(r)),
            // Encoded once per publication for every subscriber on this codec.
            (Codec::Json, Out::Push(p)) => match Utf8Bytes::try_from(frame::shared_json(p)) {
                Ok(text) => Message::Text(text),
                Err(_) => Message::text(frame::push_json(p)),
            },
            (_, Out::Reply(r)) => Message::binary(frame::reply_proto(r)),
            (_, Out::Push(p)) => Message::Binary(frame::shared_proto(p)),
        }
    }

    /// A Centrifugo frame: its commands queued, the first returned.
    fn decode_centrifugo(&mut self, msg: Message) -> Inbound {
        use switchboard_proto::centrifugo::{self as cf, Decoded};
        let decoded = match (self.codec, msg) {
            (Codec::CentrifugoJson, Message::Text(text)) => cf::decode_json(text.as_str()),
            (Codec::CentrifugoProto, Message::Binary(bytes)) => cf::decode_proto(&bytes),
            (_, Message::Ping(_) | Message::Pong(_)) => return Inbound::Alive,
            (_, Message::Close(_)) => return Inbound::Closed,
            (_, _) => Err("frame of the wrong type for the subprotocol".to_owned()),
        };
        match decoded {
            Err(why) => Inbound::Bad(why),
            Ok(list) => {
                for d in list {
                    let inbound = match d {
                        Decoded::Command(c) => Inbound::Command(c),
                        Decoded::PositionOnly(c) => {
                            self.position_only.insert(c.id);
                            Inbound::Command(c)
                        }
                        Decoded::Answer(r) => Inbound::Answer(r),
                        Decoded::Nothing => Inbound::Alive,
                    };
                    self.queued.push_back(inbound);
                }
                self.queued.pop_front().unwrap_or(Inbound::Alive)
            }
        }
    }

    fn decode(&mut self, msg: Message) -> Inbound {
        if self.codec.centrifugo() {
            return self.decode_centrifugo(msg);
        }
        let decoded = match (self.codec, msg) {
            (Codec::Json, Message::Text(text)) => {
                json::from_str::<proto::Command>(text.as_str()).map_err(|e| e.to_string())
            }
            (Codec::Proto, Message::Binary(bytes)) => {
                proto::Command::decode(bytes).map_err(|e| format!("invalid protobuf: {e}"))
            }
            (_, Message::Binary(_)) => {
                Err("binary frame on the switchboard.json subprotocol".to_owned())
            }
            (_, Message::Text(_)) => {
                Err("text frame on the switchboard.proto subprotocol".to_owned())
            }
            (_, Message::Ping(_) | Message::Pong(_)) => return Inbound::Alive,
            (_, Message::Close(_)) => return Inbound::Closed,
        };
        match decoded {
            Ok(command) => Inbound::Command(command),
            Err(why) => Inbound::Bad(why),
        }
    }
}

/// Bytes tungstenite reads at most per read call (see the upgrade). Its read buffer is this
/// big from the upgrade on and stays allocated (and zero-filled) for the connection's life: at
/// 4 KiB it was a third of an idle connection's memory. A command up to 1 KiB is one read; a
/// larger frame takes one read per KiB.
const READ_BUFFER: usize = 1024;
/// Bytes of outgoing frames gathered before tungstenite writes them.
const WRITE_BUFFER: usize = 64 * 1024;

impl WsConn {
    /// Flushes within the write timeout; false when that fails. Boxed: it runs on a client's
    /// ping or close only, so [`FrameConn::recv`]'s future, which every idle connection holds,
    /// does not keep room for a timer.
    fn flush_within(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            matches!(
                tokio::time::timeout(self.write_timeout, self.socket.flush()).await,
                Ok(Ok(()))
            )
        })
    }
}

impl FrameConn for WsConn {
    async fn recv(&mut self) -> Inbound {
        if let Some(next) = self.queued.pop_front() {
            return next;
        }
        match self.socket.recv().await {
            Some(Ok(Message::Close(_))) => {
                // tungstenite queued the close reply; flush it so the handshake completes.
                let _ = self.flush_within().await;
                Inbound::Closed
            }
            Some(Ok(msg @ (Message::Ping(_) | Message::Pong(_)))) => {
                if !self.control.take(tokio::time::Instant::now()) {
                    metrics::counter!(WS_ABUSE, "reason" => "control_flood").increment(1);
                    return Inbound::Flood;
                }
                if matches!(msg, Message::Ping(_)) {
                    // tungstenite queued the pong (only the latest is kept); a client that does
                    // not read its pongs is a slow consumer like any other.
                    if !self.flush_within().await {
                        metrics::counter!(WS_ABUSE, "reason" => "not_reading").increment(1);
                        return Inbound::NotReading;
                    }
                }
                Inbound::Alive
            }
            Some(Ok(msg)) => self.decode(msg),
            Some(Err(e)) => {
                // tungstenite's `Error::Capacity` ("Space limit exceeded: Message too long").
                if e.to_string().contains("Space limit exceeded") {
                    Inbound::TooBig
                } else {
                    tracing::debug!(error = %e, "WebSocket read error");
                    Inbound::Closed
                }
            }
            None => Inbound::Closed,
        }
    }

    async fn send(&mut self, out: Out<'_>) -> bool {
        let Some(msg) = self.encode(out) else {
            return true;
        };
        matches!(
            tokio::time::timeout(self.write_timeout, self.socket.send(msg)).await,
            Ok(Ok(()))
        )
    }

    async fn feed(&mut self, out: Out<'_>) -> bool {
        let Some(msg) = self.encode(out) else {
            return true;
        };
        let mut feed = self.socket.feed(msg);
        // Almost every feed only appends to the write buffer and is ready at once: no timer
        // (a clock read and a timer entry per delivered message) unless it has to wait.
        if let Some(r) = futures_util::FutureExt::now_or_never(&mut feed) {
            return r.is_ok();
        }
        matches!(
            tokio::time::timeout(self.write_timeout, feed).await,
            Ok(Ok(()))
        )
    }

    async fn flush(&mut self) -> bool {
        matches!(
            tokio::time::timeout(self.write_timeout, self.socket.flush()).await,
            Ok(Ok(()))
        )
    }

    fn replies_to_refused_connect(&self) -> bool {
        !self.codec.centrifugo()
    }

    fn pings(&self) -> bool {
        true
    }

    async fn ping(&mut self) -> bool {
        // Centrifugo clients expect the protocol's own ping (an empty reply) and answer it.
        let msg = match self.codec {
            Codec::CentrifugoJson => Message::text(switchboard_proto::centrifugo::PING_JSON),
            Codec::CentrifugoProto => Message::binary(switchboard_proto::centrifugo::ping_proto()),
            _ => Message::Ping(bytes::Bytes::new()),
        };
        let ping = self.socket.send(msg);
        matches!(
            tokio::time::timeout(self.write_timeout, ping).await,
            Ok(Ok(()))
        )
    }

    async fn close(mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let close = self.socket.send(Message::Close(Some(frame)));
        let _ = tokio::time::timeout(self.write_timeout, close).await;
        // Wait briefly for the client's close frame so the close handshake completes.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            while let Some(Ok(msg)) = self.socket.recv().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}
