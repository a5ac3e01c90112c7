//! Webhooks: what happened on this node, POSTed to the application, signed, batched, retried
//! with backoff, from a bounded queue (docs/webhooks.md).
//!
//! Two formats: switchboard's own (`--webhook URL`, signed with `--webhook-secret` in
//! `X-Switchboard-Signature: sha256=HEX`) for the hub and TURN, and Pusher's (each
//! `[[pusher.apps]]` `webhooks` URL, signed with the app secret in `X-Pusher-Signature`, key in
//! `X-Pusher-Key`). Every event carries the node's monotonic sequence number and its time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Events waiting per target; past this, new events are dropped and counted.
const QUEUE: usize = 10_000;
/// Events per POST at most.
const BATCH: usize = 50;
/// How long a batch waits for more events.
const GATHER: Duration = Duration::from_millis(200);
/// Attempts per batch (the first, then retries after 0.5, 1, 2, 4 s).
const ATTEMPTS: u32 = 5;

/// Metrics.
const DELIVERED: &str = "switchboard_webhook_events_delivered_total";
const DROPPED: &str = "switchboard_webhook_events_dropped_total";
const FAILED_POSTS: &str = "switchboard_webhook_post_failures_total";

/// Who an event is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Audience {
    /// switchboard's own webhooks (hub channels, sessions, TURN).
    Hub,
    /// A Pusher app's webhooks, by app id.
    Pusher(String),
}

/// How a target signs and shapes its POSTs.
#[derive(Clone)]
enum Format {
    Hub { secret: String },
    Pusher { key: String, secret: String },
}

struct Target {
    audience: Audience,
    tx: mpsc::Sender<Value>,
}

/// The webhook targets of this node.
pub(crate) struct Webhooks {
    targets: Vec<Target>,
    seq: AtomicU64,
    node: String,
    /// Occupancy and membership changes, counted cluster-wide before they are reported.
    reports: mpsc::UnboundedSender<Report>,
    /// Each Pusher app's channel prefix (`pusher-ID:`) and audience.
    prefixes: Vec<(String, Audience)>,
}

/// A change whose webhook depends on the rest of the cluster.
enum Report {
    /// This node's first subscriber (+1) or last (-1) of a hub channel.
    Channel { channel: String, delta: i64 },
    /// A Pusher member's connection joined (+1) or left (-1) a presence channel (hub name).
    Member {
        channel: String,
        user: String,
        delta: i64,
    },
}

/// A node refreshes its liveness this often, and is taken for dead (its counts swept, so its
/// channels and members are reported gone by another node) after [`DEAD_AFTER`] without.
const HEARTBEAT: Duration = Duration::from_secs(2);
const DEAD_AFTER: Duration = Duration::from_secs(10);
/// How often a node looks for dead nodes' counts.
const SWEEP: Duration = Duration::from_secs(3);

impl Webhooks {
    /// Starts a sender task per URL; `None` when no webhook is configured.
    pub(crate) fn start(
        settings: &crate::config::Settings,
        hub: &switchboard_hub::Hub,
        stop: &watch::Receiver<bool>,
        tasks: &mut JoinSet<()>,
    ) -> Option<Arc<Webhooks>> {
        let node = hub.info().uid;
        let mut targets = Vec::new();
        let mut spawn = |url: &str, audience: Audience, format: Format| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tasks.spawn(sender(url.to_owned(), format, rx, stop.clone()));
            targets.push(Target { audience, tx });
        };
        for url in &settings.webhooks.urls {
            spawn(
                url,
                Audience::Hub,
                Format::Hub {
                    secret: settings.webhooks.secret.clone().unwrap_or_default(),
                },
            );
        }
        for app in &settings.pusher.apps {
            for url in &app.webhooks {
                spawn(
                    url,
                    Audience::Pusher(app.id.clone()),
                    Format::Pusher {
                        key: app.key.clone(),
                        secret: app.secret.clone(),
                    },
                );
            }
        }
        if targets.is_empty() {
            return None;
        }
        let (reports, rx) = mpsc::unbounded_channel();
        let webhooks = Arc::new(Webhooks {
            targets,
            seq: AtomicU64::new(0),
            node,
            reports,
            prefixes: settings
                .pusher
                .apps
                .iter()
                .map(|a| {
                    (
                        format!("{}:", a.namespace()),
                        Audience::Pusher(a.id.clone()),
                    )
                })
                .collect(),
        });
        tasks.spawn(reporter(
            Arc::downgrade(&webhooks),
            hub.clone(),
            rx,
            stop.clone(),
        ));
        Some(webhooks)
    }

    /// Who hears about `channel`, and by which name: a Pusher app (its own channel name) or
    /// switchboard's webhooks; none for internal channels.
    fn audience<'a>(&self, channel: &'a str) -> Option<(Audience, &'a str)> {
        if channel.starts_with('$') {
            return None;
        }
        for (prefix, audience) in &self.prefixes {
            if let Some(c) = channel.strip_prefix(prefix.as_str()) {
                return Some((audience.clone(), c));
            }
        }
        Some((Audience::Hub, channel))
    }

    /// A Pusher member's connection to a presence channel (hub name) came (+1) or went (-1):
    /// reported as `member_added`/`member_removed` when it is the user's first or last
    /// connection there in the whole cluster.
    pub(crate) fn member(&self, hub_channel: &str, user: &str, delta: i64) {
        let _ = self.reports.send(Report::Member {
            channel: hub_channel.to_owned(),
            user: user.to_owned(),
            delta,
        });
    }

    /// Queues `event` (its `name` and fields) for every target of `audience`; never waits.
    pub(crate) fn emit(&self, audience: &Audience, mut event: Value) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        event["seq"] = seq.into();
        event["time_ms"] = now_ms().into();
        event["node"] = self.node.clone().into();
        for t in self.targets.iter().filter(|t| t.audience == *audience) {
            if t.tx.try_send(event.clone()).is_err() {
                metrics::counter!(DROPPED, "reason" => "queue_full").increment(1);
            }
        }
    }

    /// Whether anything listens for `audience`.
    pub(crate) fn wants(&self, audience: &Audience) -> bool {
        self.targets.iter().any(|t| t.audience == *audience)
    }
}

/// The hub observer: channel occupancy goes through the cluster-wide counts (reporter),
/// closed sessions (but Pusher's own) straight to switchboard's webhooks.
pub(crate) fn observer(webhooks: Arc<Webhooks>) -> switchboard_hub::NodeObserver {
    Arc::new(move |event| {
        use switchboard_hub::NodeEvent as E;
        match event {
            E::ChannelOccupied { channel } => {
                let _ = webhooks.reports.send(Report::Channel { channel, delta: 1 });
            }
            E::ChannelVacated { channel } => {
                let _ = webhooks
                    .reports
                    .send(Report::Channel { channel, delta: -1 });
            }
            E::SessionClosed {
                client_id,
                user,
                transport,
            } if transport != "pusher" && webhooks.wants(&Audience::Hub) => {
                webhooks.emit(
                    &Audience::Hub,
                    json!({"name": "connection_closed", "client_id": client_id, "user": user, "transport": transport}),
                );
            }
            _ => {}
        }
    })
}

/// Counts occupancy and membership changes cluster-wide (one report per cluster-wide change),
/// keeps this node's counts alive, and reports the channels and members of nodes that died.
async fn reporter(
    webhooks: std::sync::Weak<Webhooks>,
    hub: switchboard_hub::Hub,
    mut rx: mpsc::UnboundedReceiver<Report>,
    mut stop: watch::Receiver<bool>,
) {
    let alive = |hub: switchboard_hub::Hub| async move {
        if let Err(e) = hub.cluster_heartbeat(DEAD_AFTER).await {
            tracing::debug!(error = %e, "webhook heartbeat failed");
        }
    };
    alive(hub.clone()).await;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            _ = crate::stopped(&mut stop) => return,
            _ = heartbeat.tick() => alive(hub.clone()).await,
            _ = sweep.tick() => {
                let Some(w) = webhooks.upgrade() else { return };
                match hub.cluster_sweep().await {
                    Ok(keys) => {
                        for key in keys {
                            w.report_zero(&key);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "webhook sweep failed"),
                }
            }
            report = rx.recv() => {
                let Some(report) = report else { return };
                let Some(w) = webhooks.upgrade() else { return };
                let (key, delta) = match &report {
                    Report::Channel { channel, delta } => (format!("c|{channel}"), *delta),
                    Report::Member { channel, user, delta } => {
                        (format!("m|{channel}|{user}"), *delta)
                    }
                };
                match hub.cluster_count(&key, delta).await {
                    Ok(true) if delta > 0 => w.report_first(&key),
                    Ok(true) => w.report_zero(&key),
                    Ok(false) => {}
                    Err(e) => {
                        metrics::counter!(DROPPED, "reason" => "broker").increment(1);
                        tracing::warn!(error = %e, %key, "webhook event lost: the broker did not count it");
                    }
                }
            }
        }
    }
}

impl Webhooks {
    /// A count key's first holder in the cluster: occupied, or a member added.
    fn report_first(&self, key: &str) {
        self.report(key, "channel_occupied", "member_added");
    }

    /// A count key nobody holds any more: vacated, or a member removed.
    fn report_zero(&self, key: &str) {
        self.report(key, "channel_vacated", "member_removed");
    }

    fn report(&self, key: &str, channel_event: &str, member_event: &str) {
        if let Some(channel) = key.strip_prefix("c|") {
            if let Some((audience, name)) = self.audience(channel) {
                self.emit(&audience, json!({"name": channel_event, "channel": name}));
            }
        } else if let Some(rest) = key.strip_prefix("m|") {
            let Some((channel, user)) = rest.rsplit_once('|') else {
                return;
            };
            if let Some((audience, name)) = self.audience(channel) {
                self.emit(
                    &audience,
                    json!({"name": member_event, "channel": name, "user_id": user}),
                );
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Gathers batches and POSTs them until shutdown (then sends what is queued, once).
async fn sender(
    url: String,
    format: Format,
    mut rx: mpsc::Receiver<Value>,
    mut stop: watch::Receiver<bool>,
) {
    let client = match Client::new(&url) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%url, error = %e, "webhook URL unusable; its events are dropped");
            return;
        }
    };
    loop {
        let first = tokio::select! {
            e = rx.recv() => e,
            _ = crate::stopped(&mut stop) => None,
        };
        let Some(first) = first else {
            // Shutdown: whatever is queued still goes, in one try per batch.
            let mut rest = Vec::new();
            while let Ok(e) = rx.try_recv() {
                rest.push(e);
            }
            for batch in rest.chunks(BATCH) {
                let _ = deliver(&client, &format, batch, 1).await;
            }
            return;
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + GATHER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => batch.push(e),
                _ => break,
            }
        }
        let _ = deliver(&client, &format, &batch, ATTEMPTS).await;
    }
}

/// POSTs one batch, retrying with backoff; false when every attempt failed.
async fn deliver(client: &Client, format: &Format, batch: &[Value], attempts: u32) -> bool {
    let body = match format {
        Format::Hub { .. } => json!({"time_ms": now_ms(), "events": batch}),
        Format::Pusher { .. } => {
            // Pusher's shape: only its own fields (name, channel, user_id, event, data,
            // socket_id) per event.
            let events: Vec<Value> = batch
                .iter()
                .map(|e| {
                    let mut o = serde_json::Map::new();
                    for k in [
                        "name",
                        "channel",
                        "user_id",
                        "event",
                        "data",
                        "socket_id",
                        "seq",
                    ] {
                        if let Some(v) = e.get(k) {
                            o.insert(k.into(), v.clone());
                        }
                    }
                    Value::Object(o)
                })
                .collect();
            json!({"time_ms": now_ms(), "events": events})
        }
    }
    .to_string();
    let headers: Vec<(&str, String)> = match format {
        Format::Hub { secret } => vec![(
            "X-Switchboard-Signature",
            format!(
                "sha256={}",
                crate::sign::hex_hmac(secret.as_bytes(), body.as_bytes())
            ),
        )],
        Format::Pusher { key, secret } => vec![
            ("X-Pusher-Key", key.clone()),
            (
                "X-Pusher-Signature",
                crate::sign::hex_hmac(secret.as_bytes(), body.as_bytes()),
            ),
        ],
    };
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=attempts {
        match client.post(&body, &headers).await {
            Ok(status) if (200..300).contains(&status) => {
                metrics::counter!(DELIVERED).increment(batch.len() as u64);
                return true;
            }
            Ok(status) => {
                tracing::debug!(url = %client.url, status, attempt, "webhook refused");
            }
            Err(e) => tracing::debug!(url = %client.url, error = %e, attempt, "webhook failed"),
        }
        metrics::counter!(FAILED_POSTS).increment(1);
        if attempt < attempts {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(8));
        }
    }
    tracing::warn!(url = %client.url, events = batch.len(), "webhook batch dropped after retries");
    metrics::counter!(DROPPED, "reason" => "undeliverable").increment(batch.len() as u64);
    false
}

/// A minimal HTTP/1.1 client for one URL: a fresh connection per POST (TLS for https with the
/// system's roots), 10 s for the whole exchange.
struct Client {
    url: String,
    host: String,
    port: u16,
    authority: String,
    path: String,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Client {
    fn new(url: &str) -> Result<Client, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("expected http:// or https://".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h, p.parse().map_err(|_| "bad port")?),
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = if tls {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        Ok(Client {
            url: url.to_owned(),
            host,
            port,
            authority: authority.to_owned(),
            path: path.to_owned(),
            tls,
        })
    }

    /// POSTs `body`; the response status.
    async fn post(&self, body: &str, headers: &[(&str, String)]) -> std::io::Result<u16> {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            let mut request = format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\nUser-Agent: switchboard/{}\r\n",
                self.path,
                self.authority,
                body.len(),
                env!("CARGO_PKG_VERSION")
            );
            for (k, v) in headers {
                request.push_str(&format!("{k}: {v}\r\n"));
            }
            request.push_str("\r\n");
            request.push_str(body);
            match &self.tls {
                None => exchange(tcp, request.as_bytes()).await,
                Some(c) => {
                    let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    exchange(c.connect(name, tcp).await?, request.as_bytes()).await
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| std::io::Error::other("timed out"))?
    }
}

async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    request: &[u8],
) -> std::io::Result<u16> {
    s.write_all(request).await?;
    s.flush().await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = Client::new("http://127.0.0.1:9000/hooks").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.path.as_str()),
            ("127.0.0.1", 9000, "/hooks")
        );
        let c = Client::new("https://example.org").unwrap();
        assert_eq!((c.port, c.path.as_str(), c.tls.is_some()), (443, "/", true));
        assert!(Client::new("ftp://x").is_err());
    }
}
