//! `switchboard-bench hub`: WebSocket fan-out load on the real-time hub.
//!
//! Opens `--subscribers` WebSocket connections (subprotocol `switchboard.proto`), subscribes
//! subscriber `i` to channel `bench-{i % channels}`, then publishes `--messages` publications
//! through the HTTP server API (`POST /v1/api/publish`, keep-alive connections) at no more than
//! `--rate` per second, round-robin over the channels. Each publication carries its send time;
//! subscribers record publish-to-receive latency. Prints published and delivered counts,
//! delivered messages per second, and p50/p99/max latency. Bounded by `--messages` and
//! `--duration`; loopback only unless `--allow-remote`.
//!
//! `--protocol` picks the subscribers' wire protocol; the publishing side is the same for all:
//! - `native` (default): `/v1/ws`, subprotocol `switchboard.proto`, binary `ServerFrame`s;
//! - `native-json`: `/v1/ws`, subprotocol `switchboard.json`, text `ServerFrame`s;
//! - `centrifugo`: Centrifugo's client protocol (JSON) at `/connection/websocket`: connect
//!   `{"id":1,"connect":{}}`, subscribe `{"id":2,"subscribe":{"channel":C}}`, counts
//!   `{"push":{"channel":…,"pub":{…}}}` and answers the server's `{}` pings with `{}`, as
//!   centrifuge-js does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use switchboard_proto::prost::Message as _;
use switchboard_proto::v1 as proto;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// The subscribers' wire protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// switchboard's own WebSocket, protobuf (`/v1/ws`, `switchboard.proto`).
    Native,
    /// switchboard's own WebSocket, JSON (`/v1/ws`, `switchboard.json`).
    NativeJson,
    /// Centrifugo's client protocol, JSON (`/connection/websocket`).
    Centrifugo,
}

impl Protocol {
    fn path(self) -> &'static str {
        match self {
            Protocol::Native | Protocol::NativeJson => "/v1/ws",
            Protocol::Centrifugo => "/connection/websocket",
        }
    }
}

/// Options of one run.
pub struct HubOptions {
    pub protocol: Protocol,
    pub server: SocketAddr,
    /// Other nodes: subscriber i connects to node i % (1 + also.len()).
    pub also: Vec<SocketAddr>,
    pub api_key: String,
    pub subscribers: usize,
    pub channels: usize,
    pub messages: u64,
    pub rate: f64,
    pub payload: usize,
    pub publishers: usize,
    pub duration: f64,
}

#[derive(Default)]
struct Stats {
    delivered: AtomicU64,
    published: AtomicU64,
    publish_errors: AtomicU64,
}

/// Latencies (microseconds) recorded per subscriber, at most this many each.
const SAMPLE_MAX_PER_SUBSCRIBER: usize = 100_000;

pub fn run(o: HubOptions) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(o))
}

async fn bench(o: HubOptions) -> anyhow::Result<()> {
    let epoch = Instant::now();
    let stats = Arc::new(Stats::default());
    let urls: Vec<String> = std::iter::once(&o.server)
        .chain(&o.also)
        .map(|a| format!("ws://{a}{}", o.protocol.path()))
        .collect();

    // 1. Subscribers, a few connection attempts at a time.
    let connect_start = Instant::now();
    let mut subs = Vec::with_capacity(o.subscribers);
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut ready_rx = Vec::with_capacity(o.subscribers);
    // One latency vector per subscriber (its lock is uncontended until the end).
    let mut samples: Vec<Arc<Mutex<Vec<u32>>>> = Vec::with_capacity(o.subscribers);
    for i in 0..o.subscribers {
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        ready_rx.push(ready);
        let url = urls[i % urls.len()].clone();
        let channel = format!("bench-{}", i % o.channels);
        let stats = stats.clone();
        let sem = sem.clone();
        let local = Arc::new(Mutex::new(Vec::new()));
        samples.push(local.clone());
        let protocol = o.protocol;
        subs.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await;
            let ws = subscribe(protocol, &url, &channel).await;
            drop(permit);
            let mut ws = match ws {
                Ok(ws) => {
                    let _ = ready_tx.send(Ok(()));
                    ws
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let delivered = |sent: Option<u64>| {
                let now = epoch.elapsed().as_micros() as u64;
                if let Some(sent) = sent {
                    let mut l = local.lock().unwrap_or_else(|e| e.into_inner());
                    if l.len() < SAMPLE_MAX_PER_SUBSCRIBER {
                        l.push(now.saturating_sub(sent).min(u32::MAX as u64) as u32);
                    }
                }
                stats.delivered.fetch_add(1, Ordering::Relaxed);
            };
            while let Some(Ok(msg)) = ws.next().await {
                let event = match (protocol, msg) {
                    (Protocol::Native, Message::Binary(bytes)) => native_proto_event(&bytes),
                    (Protocol::NativeJson, Message::Text(text)) => native_json_event(&text),
                    (Protocol::Centrifugo, Message::Text(text)) => {
                        // One or more objects, one per line.
                        let mut pings = 0;
                        for line in text.lines() {
                            match centrifugo_event(line) {
                                Event::Publication(sent) => delivered(sent),
                                Event::Ping => pings += 1,
                                Event::Disconnect(why) => {
                                    eprintln!("subscriber disconnected: {why}");
                                    return;
                                }
                                Event::Other => {}
                            }
                        }
                        for _ in 0..pings {
                            if ws.send(Message::text("{}")).await.is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                    (_, Message::Close(c)) => Event::Disconnect(format!("{c:?}")),
                    _ => Event::Other,
                };
                match event {
                    Event::Publication(sent) => delivered(sent),
                    Event::Disconnect(why) => {
                        eprintln!("subscriber disconnected: {why}");
                        break;
                    }
                    Event::Ping | Event::Other => {}
                }
            }
        }));
    }
    for r in ready_rx {
        r.await.context("subscriber task")??;
    }
    let connect_secs = connect_start.elapsed().as_secs_f64();

    // 2. Publishers through the server API, paced to `rate` in total.
    let deadline = Instant::now() + Duration::from_secs_f64(o.duration);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let per_msg = Duration::from_secs_f64(1.0 / o.rate);
    let mut pubs = Vec::new();
    for _ in 0..o.publishers {
        let o2 = (
            o.server,
            o.api_key.clone(),
            o.channels,
            o.messages,
            o.payload,
        );
        let next = next.clone();
        let stats = stats.clone();
        pubs.push(tokio::spawn(async move {
            let (server, key, channels, messages, payload) = o2;
            let mut sender = http_conn(server).await?;
            let pad = "x".repeat(payload);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= messages || Instant::now() >= deadline {
                    return anyhow::Ok(());
                }
                let due = start + per_msg.mul_f64(n as f64);
                tokio::time::sleep_until(due.into()).await;
                let sent = epoch.elapsed().as_micros() as u64;
                let body = format!(
                    r#"{{"channel":"bench-{}","data":{{"t":{sent},"pad":"{pad}"}}}}"#,
                    n % channels as u64
                );
                let req = hyper::Request::post("/v1/api/publish")
                    .header("host", server.to_string())
                    .header("authorization", format!("apikey {key}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))?;
                if sender.ready().await.is_err() {
                    sender = http_conn(server).await?;
                }
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        if ok {
                            stats.published.fetch_add(1, Ordering::Relaxed);
                        } else {
                            stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                        sender = http_conn(server).await?;
                    }
                }
            }
        }));
    }
    for p in pubs {
        p.await.context("publisher task")??;
    }
    let publish_secs = start.elapsed().as_secs_f64();
    let published = stats.published.load(Ordering::Relaxed);
    let per_channel = o.subscribers.div_ceil(o.channels) as u64;
    let expected = expected_deliveries(o.subscribers, o.channels, published);

    // 3. Wait for the deliveries (at most 10 s after the last publish).
    let drain = Instant::now() + Duration::from_secs(10);
    while stats.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_secs = start.elapsed().as_secs_f64();
    for s in &subs {
        s.abort();
    }
    for s in subs {
        let _ = s.await;
    }
    let delivered = stats.delivered.load(Ordering::Relaxed);
    let mut lat: Vec<u32> = Vec::new();
    for s in &samples {
        lat.extend(s.lock().unwrap_or_else(|e| e.into_inner()).iter());
    }
    lat.sort_unstable();
    let pct = |q: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() - 1) as f64 * q).round() as usize;
        lat[i] as f64 / 1000.0
    };
    println!(
        "subscribers={} channels={} subs_per_channel={} connect_s={:.2} published={} publish_errors={} publish_rate={:.0}/s delivered={} expected={} delivered_rate={:.0}/s p50_ms={:.2} p99_ms={:.2} max_ms={:.2} seconds={:.2}",
        o.subscribers,
        o.channels,
        per_channel,
        connect_secs,
        published,
        stats.publish_errors.load(Ordering::Relaxed),
        published as f64 / publish_secs,
        delivered,
        expected,
        delivered as f64 / total_secs,
        pct(0.5),
        pct(0.99),
        pct(1.0),
        total_secs,
    );
    if published == 0 {
        bail!("nothing was published");
    }
    Ok(())
}

/// Deliveries expected when `published` publications went round-robin over the channels.
fn expected_deliveries(subscribers: usize, channels: usize, published: u64) -> u64 {
    (0..published)
        .map(|n| {
            let c = (n % channels as u64) as usize;
            // Subscribers i with i % channels == c.
            ((subscribers + channels - 1 - c) / channels) as u64
        })
        .sum()
}

/// What one server frame (or line) meant to a subscriber.
#[derive(Debug, PartialEq)]
enum Event {
    /// A publication, with the send time of its data (`t`) when present.
    Publication(Option<u64>),
    /// Centrifugo's server ping (`{}`), to answer with `{}`.
    Ping,
    /// The server ended the session.
    Disconnect(String),
    Other,
}

fn native_proto_event(bytes: &[u8]) -> Event {
    let Ok(frame) = proto::ServerFrame::decode(bytes) else {
        return Event::Other;
    };
    let Some(proto::server_frame::Frame::Push(push)) = frame.frame else {
        return Event::Other;
    };
    match push.push {
        Some(proto::push::Push::Publication(p)) => Event::Publication(sent_at(&p.data)),
        Some(proto::push::Push::Disconnect(d)) => {
            Event::Disconnect(format!("{} {}", d.code, d.reason))
        }
        _ => Event::Other,
    }
}

/// A `switchboard.json` frame: `{"push":{"publication":{…,"data":{…}}}}`.
fn native_json_event(text: &str) -> Event {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Event::Other;
    };
    let Some(push) = v.get("push") else {
        return Event::Other;
    };
    if let Some(p) = push.get("publication") {
        return Event::Publication(p.get("data").and_then(json_sent_at));
    }
    if let Some(d) = push.get("disconnect") {
        return Event::Disconnect(d.to_string());
    }
    Event::Other
}

/// A Centrifugo JSON object: `{}` (ping), `{"push":{"channel":…,"pub":{…,"data":{…}}}}`.
fn centrifugo_event(line: &str) -> Event {
    let line = line.trim();
    if line.is_empty() {
        return Event::Other;
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return Event::Other;
    };
    let Some(o) = v.as_object() else {
        return Event::Other;
    };
    if o.is_empty() {
        return Event::Ping;
    }
    let Some(push) = o.get("push") else {
        return Event::Other;
    };
    if let Some(p) = push.get("pub") {
        return Event::Publication(p.get("data").and_then(json_sent_at));
    }
    if let Some(d) = push.get("disconnect") {
        return Event::Disconnect(d.to_string());
    }
    Event::Other
}

fn json_sent_at(data: &serde_json::Value) -> Option<u64> {
    data.get("t")?.as_u64()
}

/// The `t` field (microseconds since the bench started) of a publication's JSON data.
fn sent_at(data: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    json_sent_at(&v)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn subscribe(protocol: Protocol, url: &str, channel: &str) -> anyhow::Result<Ws> {
    let mut req = url.into_client_request()?;
    let subprotocol = match protocol {
        Protocol::Native => Some("switchboard.proto"),
        Protocol::NativeJson => Some("switchboard.json"),
        // centrifuge-js offers no subprotocol for JSON.
        Protocol::Centrifugo => None,
    };
    if let Some(sp) = subprotocol {
        req.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static(sp));
    }
    // A small read buffer: tungstenite zero-fills up to this much on every read attempt, and
    // the default 128 KiB would make the load client (on the same cores) burn CPU on memset.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(16 * 1024);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false)
        .await
        .with_context(|| format!("WebSocket {url}"))?;
    if protocol == Protocol::Native {
        let commands = [
            proto::Command {
                id: 1,
                method: Some(proto::command::Method::Connect(Default::default())),
            },
            proto::Command {
                id: 2,
                method: Some(proto::command::Method::Subscribe(proto::SubscribeRequest {
                    channel: channel.to_owned(),
                    recover: None,
                })),
            },
        ];
        for cmd in commands {
            ws.send(Message::binary(cmd.encode_to_vec())).await?;
            loop {
                let msg = ws.next().await.context("closed during subscribe")??;
                let Message::Binary(bytes) = msg else {
                    continue;
                };
                let frame = proto::ServerFrame::decode(bytes)?;
                if let Some(proto::server_frame::Frame::Reply(r)) = frame.frame {
                    if let Some(proto::reply::Result::Error(e)) = r.result {
                        bail!("command {} refused: {} {}", r.id, e.code, e.message);
                    }
                    break;
                }
            }
        }
        return Ok(ws);
    }
    // JSON: the same two commands; native replies are `{"reply":{"id":N,…}}`, Centrifugo's
    // `{"id":N,…}`; either may carry `error`.
    let channel = serde_json::Value::from(channel);
    let commands = [
        (1, r#"{"id":1,"connect":{}}"#.to_owned()),
        (
            2,
            format!(r#"{{"id":2,"subscribe":{{"channel":{channel}}}}}"#),
        ),
    ];
    for (id, cmd) in commands {
        ws.send(Message::text(cmd)).await?;
        'reply: loop {
            let msg = ws.next().await.context("closed during subscribe")??;
            let text = match msg {
                Message::Text(t) => t,
                Message::Close(c) => bail!("closed during subscribe: {c:?}"),
                _ => continue,
            };
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let reply = match protocol {
                    Protocol::NativeJson => v.get("reply").cloned().unwrap_or_default(),
                    _ => v,
                };
                if reply.get("id").and_then(|i| i.as_u64()) == Some(id) {
                    if let Some(e) = reply.get("error") {
                        bail!("command {id} refused: {e}");
                    }
                    break 'reply;
                }
            }
        }
    }
    Ok(ws)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn http_conn(server: SocketAddr) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(server).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_counts() {
        assert_eq!(expected_deliveries(1000, 1, 5), 5000);
        assert_eq!(expected_deliveries(1000, 1000, 2000), 2000);
        assert_eq!(expected_deliveries(10, 3, 3), 10);
        assert_eq!(sent_at(br#"{"t":42,"pad":"x"}"#), Some(42));
    }

    #[test]
    fn json_frames() {
        assert_eq!(centrifugo_event("{}"), Event::Ping);
        assert_eq!(
            centrifugo_event(
                r#"{"push":{"channel":"bench-0","pub":{"data":{"t":7,"pad":"x"},"offset":3}}}"#
            ),
            Event::Publication(Some(7))
        );
        assert_eq!(centrifugo_event(r#"{"id":2,"subscribe":{}}"#), Event::Other);
        assert_eq!(
            native_json_event(r#"{"push":{"publication":{"channel":"bench-0","data":{"t":9}}}}"#),
            Event::Publication(Some(9))
        );
    }
}
