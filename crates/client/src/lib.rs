//! The Rust client of switchboard's hub: one WebSocket (`/v1/ws`, subprotocol
//! `switchboard.proto`) that reconnects with exponential backoff and full jitter, subscriptions
//! that recover across reconnects from their last offset (exactly the missed publications, or
//! an event saying recovery was impossible), publish (idempotent, so a publish caught by a cut
//! is sent again without being stored twice), history, presence and room signaling.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_client::ClientError> {
//! use switchboard_client::{Client, Config, Event};
//! let (client, mut events) = Client::connect(Config::new("http://127.0.0.1:8080")).await?;
//! client.subscribe("news", None).await?;
//! client.publish("news", br#"{"text":"hi"}"#.to_vec()).await?;
//! while let Some(event) = events.recv().await {
//!     if let Event::Publication(p) = event {
//!         println!("{} {}", p.offset, String::from_utf8_lossy(&p.data));
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! [`state`] holds the protocol state without I/O or clock; `conn` is the one task that owns
//! the socket.

mod api;
mod conn;
pub mod state;
mod target;
mod tls;

pub use api::Api;

use std::path::PathBuf;
use std::time::Duration;

pub use state::Position;
pub use switchboard_proto::json as proto_json;
pub use switchboard_proto::v1 as proto;
use tokio::sync::{mpsc, oneshot};

/// How to reach the server and behave.
#[derive(Clone, Debug)]
pub struct Config {
    /// `http://HOST:PORT`, `https://…`, or the WebSocket URL itself (`ws://…/v1/ws`, `wss://…`).
    pub url: String,
    /// A connection token (JWT); none = anonymous.
    pub token: Option<String>,
    /// Client name and version sent in `connect`.
    pub name: String,
    /// The version sent in `connect`.
    pub version: String,
    /// Extra CA certificates (PEM) to trust for `https`/`wss`, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (a self-signed development server). Never in production.
    pub insecure: bool,
    /// The first reconnect waits up to this long (full jitter), doubling per attempt...
    pub min_backoff: Duration,
    /// ...up to this.
    pub max_backoff: Duration,
    /// How long a request waits for its reply (across reconnects) before failing.
    pub request_timeout: Duration,
    /// Time to open the WebSocket and get the connect reply.
    pub connect_timeout: Duration,
}

impl Config {
    /// Defaults for `url`: anonymous, 0.5 s → 20 s backoff, 30 s requests.
    pub fn new(url: impl Into<String>) -> Self {
        Config {
            url: url.into(),
            token: None,
            name: "switchboard-client".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ca_file: None,
            insecure: false,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not one the client can use.
    #[error("bad server URL {url:?}: {why}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The TLS settings do not load (a CA file).
    #[error("TLS: {0}")]
    Tls(String),
    /// The server could not be reached or the WebSocket not opened.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The WebSocket URL.
        url: String,
        /// Why.
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// Nothing useful arrived in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The server answered with an error (its code and message, docs/hub.md).
    #[error("server error {code}: {message}")]
    Server {
        /// The hub's error code (101 unauthorized, 102 unknown channel, 103 permission denied…).
        code: u32,
        /// Its message.
        message: String,
        /// Whether trying again may succeed.
        temporary: bool,
    },
    /// The server ended the connection for good (a disconnect code without reconnect).
    #[error("disconnected by the server: {code} {reason}")]
    Disconnected {
        /// The disconnect code (3000–4999).
        code: u32,
        /// Its reason.
        reason: String,
    },
    /// The client was closed.
    #[error("client closed")]
    Closed,
    /// The server sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The hub error code, when the server gave one.
    pub fn code(&self) -> Option<u32> {
        match self {
            ClientError::Server { code, .. } | ClientError::Disconnected { code, .. } => {
                Some(*code)
            }
            _ => None,
        }
    }
}

/// What happens on the connection, in order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Connected (the first time and after every reconnect).
    Connected {
        /// The server's id of this connection.
        client_id: String,
        /// The token's user; empty when anonymous.
        user: String,
    },
    /// The connection was lost; `reconnect` says whether the client tries again.
    Disconnected {
        /// The disconnect code, or 0 when the transport just broke.
        code: u32,
        /// Why.
        reason: String,
        /// False: this was the last event (a permanent refusal or disconnect).
        reconnect: bool,
    },
    /// A subscription is live (again). With `was_recovering` and not `recovered`, publications
    /// were missed that the server no longer has: the application must catch up another way.
    Subscribed {
        /// The channel.
        channel: String,
        /// The subscribe asked to recover.
        was_recovering: bool,
        /// Everything missed was delivered (as [`Event::Publication`]s before this event).
        recovered: bool,
        /// Where the subscription stands now.
        position: Position,
    },
    /// The server refused a subscription (after a reconnect) or ended it.
    Unsubscribed {
        /// The channel.
        channel: String,
        /// The error or unsubscribe code.
        code: u32,
        /// Why.
        reason: String,
    },
    /// A publication, in order, never twice.
    Publication(proto::Publication),
    /// Someone subscribed to a channel with join/leave on.
    Join(proto::Join),
    /// Someone left it.
    Leave(proto::Leave),
    /// A peer joined a room this client is in.
    RoomJoin(proto::RoomJoin),
    /// A peer left it.
    RoomLeave(proto::RoomLeave),
    /// An offer, answer, candidate or bye addressed to this client.
    Signal(proto::Signal),
}

/// A request for the connection task.
pub(crate) enum Op {
    /// Send `method` (re-sent after a reconnect until answered) and answer `reply`.
    Request {
        method: proto::command::Method,
        reply: oneshot::Sender<Result<proto::reply::Result, ClientError>>,
    },
    /// Keep `channel` subscribed across reconnects, recovering from `since`.
    Subscribe {
        channel: String,
        since: Option<Position>,
        reply: oneshot::Sender<Result<proto::SubscribeResult, ClientError>>,
    },
    /// Stop.
    Close,
}

/// A connected client. Cloning shares the connection.
#[derive(Clone)]
pub struct Client {
    ops: mpsc::UnboundedSender<Op>,
    timeout: Duration,
}

/// The events of a [`Client`]; ends after a final [`Event::Disconnected`].
pub type Events = mpsc::UnboundedReceiver<Event>;

impl Client {
    /// Connects (the first attempt must succeed: a bad URL, an unreachable server or a refused
    /// token is an error here) and keeps the connection up in a background task from then on.
    pub async fn connect(config: Config) -> Result<(Client, Events), ClientError> {
        let timeout = config.request_timeout;
        let (ops, events) = conn::start(config).await?;
        Ok((Client { ops, timeout }, events))
    }

    /// Subscribes to `channel` (from `since` when given: the publications after it are
    /// delivered first) and keeps it subscribed across reconnects.
    pub async fn subscribe(
        &self,
        channel: &str,
        since: Option<Position>,
    ) -> Result<proto::SubscribeResult, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Subscribe {
            channel: channel.to_owned(),
            since,
            reply,
        })?;
        self.wait(rx, "subscribe").await
    }

    /// Unsubscribes.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), ClientError> {
        self.request(
            proto::command::Method::Unsubscribe(proto::UnsubscribeRequest {
                channel: channel.to_owned(),
            }),
            "unsubscribe",
        )
        .await
        .map(|_| ())
    }

    /// Publishes `data` (its bytes as they are: JSON text for JSON subscribers to read) with an
    /// idempotency key, so a retry after a cut is stored once.
    pub async fn publish(
        &self,
        channel: &str,
        data: Vec<u8>,
    ) -> Result<proto::PublishResult, ClientError> {
        let request = proto::PublishRequest {
            channel: channel.to_owned(),
            data,
            idempotency_key: random_key(),
        };
        match self
            .request(proto::command::Method::Publish(request), "publish")
            .await?
        {
            proto::reply::Result::Publish(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Reads history.
    pub async fn history(
        &self,
        request: proto::HistoryRequest,
    ) -> Result<proto::HistoryResult, ClientError> {
        match self
            .request(proto::command::Method::History(request), "history")
            .await?
        {
            proto::reply::Result::History(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Who is subscribed to `channel`.
    pub async fn presence(&self, channel: &str) -> Result<proto::PresenceResult, ClientError> {
        let request = proto::PresenceRequest {
            channel: channel.to_owned(),
        };
        match self
            .request(proto::command::Method::Presence(request), "presence")
            .await?
        {
            proto::reply::Result::Presence(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// How many clients and users are subscribed to `channel`.
    pub async fn presence_stats(
        &self,
        channel: &str,
    ) -> Result<proto::PresenceStatsResult, ClientError> {
        let request = proto::PresenceStatsRequest {
            channel: channel.to_owned(),
        };
        match self
            .request(
                proto::command::Method::PresenceStats(request),
                "presence stats",
            )
            .await?
        {
            proto::reply::Result::PresenceStats(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Any other command (room signaling: `RoomJoin`, `Offer`, `Answer`, `Candidate`, `Bye`,
    /// `RoomLeave`), answered with its result.
    pub async fn request(
        &self,
        method: proto::command::Method,
        what: &'static str,
    ) -> Result<proto::reply::Result, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Request { method, reply })?;
        self.wait(rx, what).await
    }

    /// Closes the connection; the events end.
    pub fn close(&self) {
        let _ = self.ops.send(Op::Close);
    }

    fn send(&self, op: Op) -> Result<(), ClientError> {
        self.ops.send(op).map_err(|_| ClientError::Closed)
    }

    async fn wait<T>(
        &self,
        rx: oneshot::Receiver<Result<T, ClientError>>,
        what: &'static str,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout(what)),
        }
    }
}

fn unexpected(result: proto::reply::Result) -> ClientError {
    ClientError::Protocol(format!("unexpected reply {result:?}"))
}

/// 16 random bytes as hex.
pub(crate) fn random_key() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A uniform random value in `[0, 1)`.
pub(crate) fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}
