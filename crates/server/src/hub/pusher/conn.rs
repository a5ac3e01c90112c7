//! One Pusher client connection (`/app/{key}?protocol=7`): events in and out as Pusher's JSON
//! messages, channels as hub subscriptions of the connection's session, and each presence
//! channel as a session of its own carrying the member's `user_id` and `user_info` (so the
//! hub's presence, cluster-wide, is the member list).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::response::Response;
use serde_json::{json, Value};
use switchboard_hub::channel::ChannelPattern;
use switchboard_hub::{proto, Identity, ServerPublish, Session, SharedPush};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{is_private, same, valid_channel, App, PusherCtx};

/// Seconds of client silence after which the server pings (announced to the client, which
/// pings the server itself after the same time).
const ACTIVITY_TIMEOUT: u64 = 120;
/// Time a client has to answer the server's ping.
const PONG_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest client message (Pusher's limit for client events).
const MAX_CLIENT_MESSAGE: usize = 10 * 1024;
/// Client events a connection may send per second (Pusher's limit).
const CLIENT_EVENTS_PER_SEC: f64 = 10.0;

/// Metric: Pusher connections opened.
const CONNECTIONS: &str = "switchboard_pusher_connections_total";

pub(crate) async fn handler(
    State(ctx): State<Arc<PusherCtx>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let app = ctx.by_key.get(&key).cloned();
    let protocol: u32 = query
        .get("protocol")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let client = query.get("client").cloned().unwrap_or_default();
    let version = query.get("version").cloned().unwrap_or_default();
    upgrade
        .max_message_size(MAX_CLIENT_MESSAGE * 2)
        .max_frame_size(MAX_CLIENT_MESSAGE * 2)
        .read_buffer_size(4096)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(64 * 1024 + 4 * MAX_CLIENT_MESSAGE)
        .on_upgrade(move |mut socket| async move {
            // Errors before the connection is established are Pusher errors then a close with
            // the same code (4000–4099: the client does not reconnect).
            let Some(app) = app else {
                refuse(
                    &mut socket,
                    4001,
                    &format!("App key {key} not in this cluster"),
                )
                .await;
                return;
            };
            if !(5..=7).contains(&protocol) {
                refuse(&mut socket, 4007, "Unsupported protocol version").await;
                return;
            }
            metrics::counter!(CONNECTIONS).increment(1);
            Conn::new(ctx, app, socket, peer, client, version)
                .run()
                .await;
        })
}

async fn refuse(socket: &mut WebSocket, code: u16, message: &str) {
    let _ = socket
        .send(Message::text(error_message(Some(code), message)))
        .await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: message.into(),
        })))
        .await;
}

fn error_message(code: Option<u16>, message: &str) -> String {
    json!({"event": "pusher:error", "data": {"code": code, "message": message}}).to_string()
}

/// A random socket id, `N.N` as Pusher's clients expect.
fn socket_id() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    let a = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) % 1_000_000_000;
    let c = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) % 1_000_000_000;
    format!("{a}.{c}")
}

/// A push from one of the connection's sessions.
enum FromHub {
    Push(Arc<SharedPush>),
    /// That session ended (disconnected by the hub, or the node shuts down).
    Ended(Option<proto::Disconnect>),
}

/// A presence channel this connection is a member of.
struct PresenceSub {
    session: Arc<Session>,
    user_id: String,
    /// Who is there: user id → their connections (client ids), to announce a member only when
    /// their first connection joins and their last one leaves.
    members: BTreeMap<String, HashSet<String>>,
}

struct Conn {
    ctx: Arc<PusherCtx>,
    app: Arc<App>,
    socket: WebSocket,
    peer: SocketAddr,
    socket_id: String,
    client: String,
    version: String,
    /// The connection's session, for public and private channels.
    main: Option<Arc<Session>>,
    /// Channels subscribed through `main`.
    channels: HashSet<String>,
    presence: HashMap<String, PresenceSub>,
    /// The user signed in with `pusher:signin` (its own session, so the HTTP API's
    /// terminate_connections reaches it).
    signed_in: Option<Arc<Session>>,
    tx: mpsc::UnboundedSender<(String, FromHub)>,
    rx: mpsc::UnboundedReceiver<(String, FromHub)>,
    /// The task forwarding each session's pushes, by key.
    forwards: HashMap<String, tokio::task::JoinHandle<()>>,
    /// Client events budget.
    tokens: f64,
    refilled: Instant,
}

impl Conn {
    fn new(
        ctx: Arc<PusherCtx>,
        app: Arc<App>,
        socket: WebSocket,
        peer: SocketAddr,
        client: String,
        version: String,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Conn {
            ctx,
            app,
            socket,
            peer,
            socket_id: socket_id(),
            client,
            version,
            main: None,
            channels: HashSet::new(),
            presence: HashMap::new(),
            signed_in: None,
            tx,
            rx,
            forwards: HashMap::new(),
            tokens: CLIENT_EVENTS_PER_SEC,
            refilled: Instant::now(),
        }
    }

    /// A hub session for this connection with `user`, `info`, allowed only `patterns`.
    fn session(
        &self,
        user: String,
        info: Vec<u8>,
        patterns: &[String],
    ) -> Result<Arc<Session>, switchboard_hub::HubError> {
        let max = self.ctx.hub.hub.config().limits.max_channel_length + 1;
        let channels = patterns
            .iter()
            .filter_map(|p| ChannelPattern::parse(p, max))
            .collect();
        let identity = Identity {
            user,
            channels: Some(channels),
            info,
            expires_at: None,
        };
        let name = if self.client.is_empty() {
            "pusher".to_owned()
        } else {
            format!("pusher-{}", self.client)
        };
        let session = self.ctx.hub.hub.connect_identity(
            identity,
            &name,
            &self.version,
            "pusher",
            Some(self.peer.ip()),
        )?;
        Ok(Arc::new(session))
    }

    /// Forwards a session's pushes to this connection's loop, tagged with `key`.
    fn forward(&mut self, key: String, session: Arc<Session>) {
        let tx = self.tx.clone();
        let name = key.clone();
        let task = tokio::spawn(async move {
            loop {
                match session.recv().await {
                    Some(push) => {
                        if let Some(proto::push::Push::Disconnect(d)) = &push.push {
                            let _ = tx.send((key, FromHub::Ended(Some(d.clone()))));
                            return;
                        }
                        if tx.send((key.clone(), FromHub::Push(push))).is_err() {
                            return;
                        }
                    }
                    None => {
                        let _ = tx.send((key, FromHub::Ended(session.disconnected())));
                        return;
                    }
                }
            }
        });
        if let Some(old) = self.forwards.insert(name, task) {
            old.abort();
        }
    }

    /// Ends a session of this connection on purpose: its forwarding stops first (so its end is
    /// not taken for the hub's), then it is closed (leaving its channels and presence).
    async fn release(&mut self, key: &str, session: Arc<Session>) {
        if let Some(task) = self.forwards.remove(key) {
            task.abort();
            let _ = task.await;
        }
        match Arc::try_unwrap(session) {
            Ok(s) => s.close().await,
            Err(s) => s.disconnect(switchboard_hub::codes::disconnect_message(
                switchboard_hub::codes::disconnect::CONNECTION_CLOSED,
            )),
        }
    }

    async fn send(&mut self, v: Value) -> bool {
        let send = self.socket.send(Message::text(v.to_string()));
        matches!(
            tokio::time::timeout(Duration::from_secs(10), send).await,
            Ok(Ok(()))
        )
    }

    async fn send_error(&mut self, code: Option<u16>, message: &str) -> bool {
        let send = self
            .socket
            .send(Message::text(error_message(code, message)));
        matches!(
            tokio::time::timeout(Duration::from_secs(10), send).await,
            Ok(Ok(()))
        )
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let _ = self.send_error(Some(code), reason).await;
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.socket.send(Message::Close(Some(frame))),
        )
        .await;
    }

    async fn run(mut self) {
        let pattern = format!("{}:*", self.app.namespace);
        let main = match self.session(
            self.app.hub_user(&format!("$socket.{}", self.socket_id)),
            Vec::new(),
            &[pattern],
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "pusher connection refused by the hub");
                self.close(4100, "Over capacity").await;
                return;
            }
        };
        self.forward(String::new(), main.clone());
        self.main = Some(main);
        let established = json!({
            "event": "pusher:connection_established",
            "data": json!({"socket_id": self.socket_id, "activity_timeout": ACTIVITY_TIMEOUT}).to_string(),
        });
        if !self.send(established).await {
            self.end().await;
            return;
        }
        let mut stop = self.ctx.hub.stop.clone();
        let activity = Duration::from_secs(ACTIVITY_TIMEOUT);
        let mut last_seen = Instant::now();
        let mut pinged: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = crate::stopped(&mut stop) => {
                    // 4200: reconnect at once (another node, or this one after a restart).
                    self.close(4200, "Server shutting down").await;
                    break;
                }
                msg = self.socket.recv() => {
                    last_seen = Instant::now();
                    pinged = None;
                    match msg {
                        Some(Ok(Message::Text(text))) => {
                            if !self.message(text.as_str()).await {
                                break;
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            if !self.send_error(None, "Binary messages are not supported").await {
                                break;
                            }
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) | None => break,
                        Some(Err(e)) => {
                            if e.to_string().contains("Space limit exceeded") {
                                self.close(4009, "Message too large").await;
                            }
                            break;
                        }
                    }
                }
                from = self.rx.recv() => {
                    let Some((key, from)) = from else { break };
                    match from {
                        FromHub::Push(push) => {
                            if !self.push(&key, &push).await {
                                break;
                            }
                        }
                        FromHub::Ended(d) => {
                            // Disconnected through the HTTP API (terminate_connections) or by
                            // the hub (slow consumer: 4100-range, reconnect after a while).
                            let (code, reason) = match d {
                                Some(d) if d.code == 3503 => (4009, "Connection terminated by the app".to_owned()),
                                Some(d) if d.code == 3001 => (4200, "Server shutting down".to_owned()),
                                Some(d) => (4100, d.reason),
                                None => (4200, "Reconnect".to_owned()),
                            };
                            self.close(code, &reason).await;
                            break;
                        }
                    }
                }
                _ = tick.tick() => {
                    match pinged {
                        Some(at) if at.elapsed() >= PONG_TIMEOUT => {
                            self.close(4201, "Pong reply not received").await;
                            break;
                        }
                        None if last_seen.elapsed() >= activity => {
                            if !self.send(json!({"event": "pusher:ping", "data": "{}"})).await {
                                break;
                            }
                            pinged = Some(Instant::now());
                        }
                        _ => {}
                    }
                }
            }
        }
        self.end().await;
    }

    /// Leaves a presence channel: its session ends; when that was the user's last connection
    /// there in the cluster, the app's webhooks hear `member_removed`.
    async fn leave_presence(&mut self, channel: &str, p: PresenceSub) {
        let hub_channel = self.app.hub_channel(channel);
        self.release(channel, p.session).await;
        if let Some(w) = &self.ctx.webhooks {
            w.member(&hub_channel, &p.user_id, -1);
        }
    }

    /// Ends every session of the connection.
    async fn end(&mut self) {
        let presence: Vec<(String, PresenceSub)> = self.presence.drain().collect();
        for (channel, p) in presence {
            self.leave_presence(&channel, p).await;
        }
        let mut sessions: Vec<(String, Arc<Session>)> = Vec::new();
        sessions.extend(self.main.take().map(|s| (String::new(), s)));
        sessions.extend(self.signed_in.take().map(|s| ("$signin".to_owned(), s)));
        for (key, s) in sessions {
            self.release(&key, s).await;
        }
    }

    /// One message from the client; false when the connection must end.
    async fn message(&mut self, text: &str) -> bool {
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text) else {
            return self.send_error(None, "Invalid JSON").await;
        };
        let event = m.get("event").and_then(Value::as_str).unwrap_or("");
        // `data` is an object for pusher:* events; some clients send it JSON-encoded.
        let data = match m.get("data") {
            Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
            Some(v) => v.clone(),
            None => Value::Null,
        };
        match event {
            "pusher:ping" => {
                self.send(json!({"event": "pusher:pong", "data": "{}"}))
                    .await
            }
            "pusher:pong" => true,
            "pusher:subscribe" => self.subscribe(&data).await,
            "pusher:unsubscribe" => {
                let channel = data.get("channel").and_then(Value::as_str).unwrap_or("");
                self.unsubscribe(channel).await;
                true
            }
            "pusher:signin" => self.signin(&data).await,
            e if e.starts_with("client-") => {
                let channel = m
                    .get("channel")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let raw = match m.get("data") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => String::new(),
                };
                self.client_event(e, &channel, raw).await
            }
            // Unknown events are ignored, as Pusher does.
            _ => true,
        }
    }

    async fn subscription_error(
        &mut self,
        channel: &str,
        kind: &str,
        error: &str,
        status: u16,
    ) -> bool {
        self.send(json!({
            "event": "pusher:subscription_error",
            "channel": channel,
            "data": {"type": kind, "error": error, "status": status},
        }))
        .await
    }

    async fn subscribe(&mut self, data: &Value) -> bool {
        let channel = data
            .get("channel")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if !valid_channel(&channel) {
            return self
                .subscription_error(&channel, "InvalidChannel", "Invalid channel name", 400)
                .await;
        }
        if self.channels.contains(&channel) || self.presence.contains_key(&channel) {
            return true;
        }
        let channel_data = data
            .get("channel_data")
            .and_then(Value::as_str)
            .unwrap_or("");
        if is_private(&channel) {
            let auth = data.get("auth").and_then(Value::as_str).unwrap_or("");
            let signed = if channel.starts_with("presence-") {
                format!("{}:{channel}:{channel_data}", self.socket_id)
            } else {
                format!("{}:{channel}", self.socket_id)
            };
            let expected = format!("{}:{}", self.app.config.key, self.app.sign(&signed));
            if !same(auth, &expected) {
                metrics::counter!("switchboard_pusher_auth_failures_total").increment(1);
                return self
                    .subscription_error(
                        &channel,
                        "AuthError",
                        &format!("Invalid signature for channel {channel}"),
                        401,
                    )
                    .await;
            }
        }
        let hub_channel = self.app.hub_channel(&channel);
        if channel.starts_with("presence-") {
            return self
                .subscribe_presence(channel, hub_channel, channel_data)
                .await;
        }
        let Some(main) = self.main.clone() else {
            return false;
        };
        match main.subscribe(&hub_channel, None).await {
            Ok(_) => {
                self.channels.insert(channel.clone());
                self.send(json!({
                    "event": "pusher_internal:subscription_succeeded",
                    "channel": channel,
                    "data": "{}",
                }))
                .await
            }
            Err(e) => {
                let status = if e.to_proto().temporary { 503 } else { 403 };
                self.subscription_error(&channel, "SubscriptionError", &e.to_string(), status)
                    .await
            }
        }
    }

    async fn subscribe_presence(
        &mut self,
        channel: String,
        hub_channel: String,
        channel_data: &str,
    ) -> bool {
        let member: Value = serde_json::from_str(channel_data).unwrap_or(Value::Null);
        let user_id = match member.get("user_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return self
                    .subscription_error(
                        &channel,
                        "AuthError",
                        "channel_data must name a user_id",
                        400,
                    )
                    .await
            }
        };
        let info = member
            .get("user_info")
            .map(|v| v.to_string().into_bytes())
            .unwrap_or_default();
        let hub_user = self.app.hub_user(&user_id);
        let session = match self.session(hub_user, info, std::slice::from_ref(&hub_channel)) {
            Ok(s) => s,
            Err(e) => {
                return self
                    .subscription_error(&channel, "SubscriptionError", &e.to_string(), 503)
                    .await
            }
        };
        if let Err(e) = session.subscribe(&hub_channel, None).await {
            return self
                .subscription_error(&channel, "SubscriptionError", &e.to_string(), 403)
                .await;
        }
        // The member list: the hub's presence of the channel, by user.
        let mut members: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        let mut hash = serde_json::Map::new();
        if let Ok(p) = session.presence(&hub_channel).await {
            for (client, info) in p.presence {
                let Some(user) = self.app.pusher_user(&info.user).map(str::to_owned) else {
                    continue;
                };
                hash.insert(user.clone(), user_info(&info.conn_info));
                members.entry(user).or_default().insert(client);
            }
        }
        members
            .entry(user_id.clone())
            .or_default()
            .insert(session.client_id().to_owned());
        if let Some(w) = &self.ctx.webhooks {
            // Counted cluster-wide: reported when it is the user's first connection there.
            w.member(&hub_channel, &user_id, 1);
        }
        hash.entry(user_id.clone())
            .or_insert_with(|| member.get("user_info").cloned().unwrap_or(Value::Null));
        let ids: Vec<&String> = members.keys().collect();
        let data = json!({"presence": {"ids": ids, "hash": hash, "count": members.len()}});
        self.forward(channel.clone(), session.clone());
        self.presence.insert(
            channel.clone(),
            PresenceSub {
                session,
                user_id,
                members,
            },
        );
        self.send(json!({
            "event": "pusher_internal:subscription_succeeded",
            "channel": channel,
            "data": data.to_string(),
        }))
        .await
    }

    async fn unsubscribe(&mut self, channel: &str) {
        if self.channels.remove(channel) {
            if let Some(main) = &self.main {
                let _ = main.unsubscribe(&self.app.hub_channel(channel)).await;
            }
        }
        if let Some(p) = self.presence.remove(channel) {
            self.leave_presence(channel, p).await;
        }
    }

    /// `pusher:signin` (user authentication): `auth` = KEY:HMAC(secret, "SOCKET::user::DATA").
    async fn signin(&mut self, data: &Value) -> bool {
        let auth = data.get("auth").and_then(Value::as_str).unwrap_or("");
        let user_data = data.get("user_data").and_then(Value::as_str).unwrap_or("");
        let expected = format!(
            "{}:{}",
            self.app.config.key,
            self.app
                .sign(&format!("{}::user::{user_data}", self.socket_id))
        );
        let user: Value = serde_json::from_str(user_data).unwrap_or(Value::Null);
        let id = match user.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        if !same(auth, &expected) || id.is_empty() {
            self.close(4009, "Invalid signin").await;
            return false;
        }
        let session = match self.session(self.app.hub_user(&id), user_data.as_bytes().to_vec(), &[])
        {
            Ok(s) => s,
            Err(_) => {
                self.close(4100, "Over capacity").await;
                return false;
            }
        };
        if let Some(old) = self.signed_in.take() {
            self.release("$signin", old).await;
        }
        self.forward("$signin".into(), session.clone());
        self.signed_in = Some(session);
        self.send(json!({"event": "pusher:signin_success", "data": {"user_data": user_data}}))
            .await
    }

    async fn client_event(&mut self, event: &str, channel: &str, data: String) -> bool {
        if !self.app.config.client_events {
            return self
                .send_error(None, "Client events are not enabled for this application")
                .await;
        }
        if !is_private(channel) {
            return self
                .send_error(
                    None,
                    "Client events are only allowed on private and presence channels",
                )
                .await;
        }
        if !self.channels.contains(channel) && !self.presence.contains_key(channel) {
            return self
                .send_error(None, &format!("Not subscribed to channel {channel}"))
                .await;
        }
        if data.len() > MAX_CLIENT_MESSAGE {
            return self
                .send_error(Some(4301), "Client event rejected - too large")
                .await;
        }
        let now = Instant::now();
        self.tokens = (self.tokens
            + now.saturating_duration_since(self.refilled).as_secs_f64() * CLIENT_EVENTS_PER_SEC)
            .min(CLIENT_EVENTS_PER_SEC);
        self.refilled = now;
        if self.tokens < 1.0 {
            return self
                .send_error(Some(4301), "Client event rejected - rate limit exceeded")
                .await;
        }
        self.tokens -= 1.0;
        let mut tags = std::collections::HashMap::new();
        tags.insert("event".to_owned(), event.to_owned());
        tags.insert("socket_id".to_owned(), self.socket_id.clone());
        if let Some(p) = self.presence.get(channel) {
            tags.insert("user_id".to_owned(), p.user_id.clone());
        }
        let options = ServerPublish {
            idempotency_key: String::new(),
            tags,
        };
        let hub_channel = self.app.hub_channel(channel);
        let mut hook = json!({
            "name": "client_event",
            "channel": channel,
            "event": event,
            "data": data,
            "socket_id": self.socket_id,
        });
        if let Some(p) = self.presence.get(channel) {
            hook["user_id"] = p.user_id.clone().into();
        }
        if let Err(e) = self
            .ctx
            .hub
            .hub
            .publish(&hub_channel, data.into_bytes(), options)
            .await
        {
            return self
                .send_error(None, &format!("Client event rejected: {e}"))
                .await;
        }
        self.ctx.webhook(&self.app, hook);
        true
    }

    /// A push from session `key` (empty: the main session; a presence channel's name).
    async fn push(&mut self, key: &str, push: &SharedPush) -> bool {
        use proto::push::Push as P;
        match &push.push {
            Some(P::Publication(p)) => {
                let Some(channel) = self.app.pusher_channel(&p.channel) else {
                    return true;
                };
                if p.tags
                    .get("socket_id")
                    .is_some_and(|s| *s == self.socket_id)
                {
                    // The sender (a client event, or the HTTP API's socket_id exclusion).
                    return true;
                }
                let event = p.tags.get("event").map(String::as_str).unwrap_or("message");
                let mut v = json!({
                    "event": event,
                    "channel": channel,
                    "data": String::from_utf8_lossy(&p.data),
                });
                if let Some(user) = p.tags.get("user_id") {
                    v["user_id"] = user.clone().into();
                }
                self.send(v).await
            }
            Some(P::Join(j)) if !key.is_empty() => {
                let info = j.info.clone().unwrap_or_default();
                let Some(user) = self.app.pusher_user(&info.user).map(str::to_owned) else {
                    return true;
                };
                let Some(sub) = self.presence.get_mut(key) else {
                    return true;
                };
                if info.client_id == sub.session.client_id() {
                    return true;
                }
                let set = sub.members.entry(user.clone()).or_default();
                let first = set.is_empty();
                set.insert(info.client_id.clone());
                if !first {
                    return true;
                }
                let data = json!({"user_id": user, "user_info": user_info(&info.conn_info)});
                let msg = json!({
                    "event": "pusher_internal:member_added",
                    "channel": key,
                    "data": data.to_string(),
                });
                self.send(msg).await
            }
            Some(P::Leave(l)) if !key.is_empty() => {
                let info = l.info.clone().unwrap_or_default();
                let Some(user) = self.app.pusher_user(&info.user).map(str::to_owned) else {
                    return true;
                };
                let Some(sub) = self.presence.get_mut(key) else {
                    return true;
                };
                let Some(set) = sub.members.get_mut(&user) else {
                    return true;
                };
                set.remove(&info.client_id);
                if !set.is_empty() || user == sub.user_id {
                    return true;
                }
                sub.members.remove(&user);
                let msg = json!({
                    "event": "pusher_internal:member_removed",
                    "channel": key,
                    "data": json!({"user_id": user}).to_string(),
                });
                self.send(msg).await
            }
            _ => true,
        }
    }
}

/// A member's `user_info` (the JSON its presence session carries), `null` when none.
fn user_info(conn_info: &[u8]) -> Value {
    if conn_info.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(conn_info).unwrap_or(Value::Null)
}
