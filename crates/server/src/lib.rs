//! switchboard's I/O edge. This is the only crate that owns sockets: it binds the listeners named
//! in [`config::Settings`], feeds what arrives to the sans-IO protocol crates, and writes their
//! answers back.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use switchboard_server::{config::Settings, Server};
//! let server = Server::start(&Settings::default()).await?;
//! for l in server.listeners() {
//!     println!("{l}");
//! }
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

/// `AsyncWrite` for a wrapper that only changes how it reads: every write call goes to its
/// `$field` unchanged (vectored writes included, which hyper uses when the stream has them).
macro_rules! forward_async_write {
    ($gen:ident, $ty:ty, $field:ident) => {
        impl<$gen: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $ty {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.$field).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.$field).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.$field.is_write_vectored()
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.$field).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.$field).poll_shutdown(cx)
            }
        }
    };
}

mod cluster;
pub mod config;
mod http;
mod hub;
mod mux;
mod net;
mod sign;
pub mod stats;
pub mod tls;
mod turn;
mod webhooks;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use switchboard_turn::Transport;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Settings;
use crate::stats::StunStats;
use crate::tls::{CertSource, CertStore, TlsError};

/// ALPN identifiers for STUN over TLS (RFC 7443).
const STUN_ALPN: &[&[u8]] = &[b"stun.turn", b"stun.nat-discovery"];

/// A start-up error; the message names the listener or file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Settings do not fit together.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The hub settings are invalid or a JWT key file does not load.
    #[error("[hub]: {0}")]
    Hub(String),
    /// Certificate problems.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The OS random generator failed.
    #[error("no randomness from the OS: {0}")]
    Random(String),
    /// A listener could not bind.
    #[error("cannot listen on {protocol}/{transport} {addr}")]
    Bind {
        /// Protocol.
        protocol: &'static str,
        /// Transport.
        transport: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// One bound listener, as printed at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerInfo {
    /// `stun`, `http` or `https`.
    pub protocol: &'static str,
    /// `udp`, `tcp` or `tls`.
    pub transport: &'static str,
    /// The bound address (with the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// Extra facts, such as the RFC 5780 role.
    pub note: &'static str,
}

impl fmt::Display for ListenerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<5} {:<4} {}",
            self.protocol, self.transport, self.addr
        )?;
        if !self.note.is_empty() {
            write!(f, "  ({})", self.note)?;
        }
        Ok(())
    }
}

/// A running server.
pub struct Server {
    listeners: Vec<ListenerInfo>,
    core: Arc<turn::Core>,
    turn_summary: Option<String>,
    cluster_summary: Option<String>,
    certs: Arc<CertStore>,
    hub: switchboard_hub::Hub,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Open HTTP connections (upgraded ones included), waited for on shutdown.
    http_conns: Option<Arc<net::limits::ConnLimiter>>,
}

fn bind_err(
    protocol: &'static str,
    transport: &'static str,
    addr: SocketAddr,
) -> impl FnOnce(std::io::Error) -> ServerError {
    move |source| ServerError::Bind {
        protocol,
        transport,
        addr,
        source,
    }
}

const HTTP_NOTE: &str =
    "HTTP/1.1, h2c: /healthz /metrics /v1/ws /v1/sse /v1/poll /v1/publish /v1/api, gRPC";
const HTTPS_NOTE: &str = "TLS, ALPN h2 http/1.1: same endpoints";
const ADMIN_NOTE: &str = "HTTP: /metrics /healthz, console, server API";
const LISTEN_TCP_NOTE: &str = "one port: TLS (HTTPS h2 http/1.1, TURN), STUN/TURN, HTTP";
const LISTEN_UDP_NOTE: &str = "one port: STUN/TURN";
const LISTEN_QUIC_NOTE: &str = "one port: QUIC (HTTP/3, WebTransport), STUN/TURN";

/// Open connections of the admin listeners together.
const ADMIN_MAX_CONNECTIONS: usize = 256;

const ROLE_NOTES: [&str; 4] = [
    "",
    "RFC 5780 alternate port",
    "RFC 5780 alternate address",
    "RFC 5780 alternate address and port",
];

impl Server {
    /// Binds every configured listener and starts serving. Must run inside a tokio runtime.
    pub async fn start(settings: &Settings) -> Result<Server, ServerError> {
        settings.validate()?;
        tls::install_default_provider();
        let metrics = stats::prometheus();
        let source = match (&settings.tls.cert, &settings.tls.key) {
            (Some(cert), Some(key)) => CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => CertSource::SelfSigned,
        };
        let certs = CertStore::new(source)?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| ServerError::Random(e.to_string()))?;
        let core = turn::Core::new(settings, secret);
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut listeners = Vec::new();
        let workers = match settings.stun.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        };
        let alt_ip: Option<IpAddr> = settings.stun.alt_address;

        let udp_stats = Arc::new(StunStats::new(Transport::Udp));
        for &addr in &settings.stun.udp.0 {
            let alt = alt_ip.and_then(|ip| settings.alt_port_for(addr.port()).map(|p| (ip, p)));
            let addrs = turn::udp::spawn(
                addr,
                alt,
                workers,
                core.clone(),
                udp_stats.clone(),
                &rx,
                &mut tasks,
            )
            .map_err(bind_err("stun", "udp", addr))?;
            for (i, a) in addrs.into_iter().enumerate() {
                listeners.push(ListenerInfo {
                    protocol: "stun",
                    transport: "udp",
                    addr: a,
                    note: ROLE_NOTES[i],
                });
            }
        }

        // Every connection cap fits in the descriptor limit, so running out on one listener
        // group never stops the others (docs/security.md).
        let (soft_before, soft, hard) = net::raise_descriptor_limit();
        let thp_off = net::disable_transparent_huge_pages();
        tracing::debug!(thp_off, "transparent huge pages disabled for this process");
        let one_port = !settings.listen.0.is_empty();
        let groups = net::Groups::of(
            one_port
                || !settings.http.listen.0.is_empty()
                || !settings.http.tls_listen.0.is_empty(),
            one_port || !settings.stun.tcp.0.is_empty() || !settings.stun.tls.0.is_empty(),
        );
        let (http_cap, stun_cap) = net::fit_caps(
            soft,
            settings.http.max_connections,
            settings.stun.max_connections,
            groups,
        );
        tracing::info!(
            soft_before,
            soft,
            hard,
            http_cap,
            stun_cap,
            "open-file limit (soft raised to hard); connection caps fitted to it"
        );
        if http_cap < settings.http.max_connections || stun_cap < settings.stun.max_connections {
            tracing::warn!(
                limit = soft,
                http_cap,
                stun_cap,
                "connection caps lowered to fit the open-file limit (raise it with ulimit -n or LimitNOFILE=)"
            );
        }
        let limit =
            net::limits::ConnLimiter::new("stun", stun_cap, settings.stun.max_connections_per_ip);
        let idle = settings.stun.idle_timeout;
        let stream_lists = [
            (Transport::Tcp, &settings.stun.tcp),
            (Transport::Tls, &settings.stun.tls),
        ];
        for (transport, list) in stream_lists {
            if list.is_off() {
                continue;
            }
            let tls = match transport {
                Transport::Tls => Some(certs.acceptor(STUN_ALPN, "stun")?),
                _ => None,
            };
            let ctx = Arc::new(turn::stream::StreamCtx {
                core: core.clone(),
                stats: Arc::new(StunStats::new(transport)),
                limit: limit.clone(),
                idle,
                tls,
                transport,
            });
            for &addr in &list.0 {
                let t = transport.as_str();
                let primary = net::bind_tcp(addr).map_err(bind_err("stun", t, addr))?;
                let primary_addr = primary.local_addr().map_err(bind_err("stun", t, addr))?;
                // With RFC 5780 on, also listen on the alternate address and port so the
                // OTHER-ADDRESS we advertise is reachable.
                let alt = alt_ip.and_then(|ip| {
                    settings
                        .alt_port_for(primary_addr.port())
                        .map(|p| SocketAddr::new(ip, p))
                });
                let alt_listener = match alt {
                    Some(a) => Some(net::bind_tcp(a).map_err(bind_err("stun", t, a))?),
                    None => None,
                };
                turn::stream::spawn(primary, alt, ctx.clone(), &rx, &mut tasks);
                listeners.push(ListenerInfo {
                    protocol: "stun",
                    transport: t,
                    addr: primary_addr,
                    note: "",
                });
                if let (Some(l), Some(a)) = (alt_listener, alt) {
                    turn::stream::spawn(l, Some(primary_addr), ctx.clone(), &rx, &mut tasks);
                    listeners.push(ListenerInfo {
                        protocol: "stun",
                        transport: t,
                        addr: a,
                        note: ROLE_NOTES[3],
                    });
                }
            }
        }

        // The one-port listeners (mux/): TCP here, served once the HTTP router exists; UDP
        // carries STUN/TURN, and QUIC too when HTTP/3 is on (one socket, demultiplexed).
        let mut one_port = Vec::new();
        let mut one_port_quic = Vec::new();
        for &addr in &settings.listen.0 {
            let (l, udp_addr) = if settings.http3.enabled {
                let (l, u) = net::bind_pair(addr).map_err(bind_err("listen", "udp", addr))?;
                let udp_addr = u.local_addr().map_err(bind_err("listen", "udp", addr))?;
                let demux = mux::udp::Demux::new(u, core.clone(), udp_stats.clone())
                    .map_err(bind_err("listen", "udp", udp_addr))?;
                one_port_quic.push((demux, udp_addr));
                (l, udp_addr)
            } else {
                let l = net::bind_tcp(addr).map_err(bind_err("listen", "tcp", addr))?;
                let port = l
                    .local_addr()
                    .map_err(bind_err("listen", "tcp", addr))?
                    .port();
                let udp_addr = SocketAddr::new(addr.ip(), port);
                let addrs = turn::udp::spawn(
                    udp_addr,
                    None,
                    workers,
                    core.clone(),
                    udp_stats.clone(),
                    &rx,
                    &mut tasks,
                )
                .map_err(bind_err("listen", "udp", udp_addr))?;
                (l, addrs[0])
            };
            let bound = l.local_addr().map_err(bind_err("listen", "tcp", addr))?;
            listeners.push(ListenerInfo {
                protocol: "listen",
                transport: "tcp",
                addr: bound,
                note: LISTEN_TCP_NOTE,
            });
            listeners.push(ListenerInfo {
                protocol: "listen",
                transport: "udp",
                addr: udp_addr,
                note: if settings.http3.enabled {
                    LISTEN_QUIC_NOTE
                } else {
                    LISTEN_UDP_NOTE
                },
            });
            one_port.push((l, bound));
        }
        let stream_ctx = |transport| {
            Arc::new(turn::stream::StreamCtx {
                core: core.clone(),
                stats: Arc::new(StunStats::new(transport)),
                limit: limit.clone(),
                idle,
                tls: None,
                transport,
            })
        };
        let one_port_stun = (stream_ctx(Transport::Tcp), stream_ctx(Transport::Tls));

        let hub = cluster::start_hub(settings, &rx, &mut tasks).await?;
        let webhooks = webhooks::Webhooks::start(settings, &hub, &rx, &mut tasks);
        if let Some(w) = &webhooks {
            hub.observe(webhooks::observer(w.clone()));
            core.set_webhooks(w.clone());
        }
        if core.turn_enabled() {
            // TURN revocations reach every node, and nodes starting later still find them.
            let keep = settings.turn.credential_ttl;
            let c = core.clone();
            let stored = hub
                .bus_subscribe(
                    turn::REVOCATIONS_TOPIC,
                    keep,
                    Arc::new(move |m: &[u8]| apply_revocation(&c, m)),
                )
                .await
                .map_err(|e| ServerError::Hub(format!("reading TURN revocations: {e}")))?;
            for m in stored {
                apply_revocation(&core, &m);
            }
        }
        let mut http_conns: Option<Arc<net::limits::ConnLimiter>> = None;
        let mut http_listeners = Vec::new();
        let http_lists = [
            ("http", &settings.http.listen, HTTP_NOTE),
            ("https", &settings.http.tls_listen, HTTPS_NOTE),
        ];
        let mut h3_sockets = Vec::new();
        for (protocol, list, note) in http_lists {
            for &addr in &list.0 {
                // HTTP/3 (h3.rs) takes the same port number on UDP.
                let with_h3 = protocol == "https" && settings.http3.enabled;
                let (l, udp) = if with_h3 {
                    let (l, u) = net::bind_pair(addr).map_err(bind_err(protocol, "udp", addr))?;
                    (l, Some(u))
                } else {
                    let l = net::bind_tcp(addr).map_err(bind_err(protocol, "tcp", addr))?;
                    (l, None)
                };
                let bound = l.local_addr().map_err(bind_err(protocol, "tcp", addr))?;
                listeners.push(ListenerInfo {
                    protocol,
                    transport: "tcp",
                    addr: bound,
                    note,
                });
                http_listeners.push((protocol, l, bound));
                if let Some(u) = udp {
                    let udp_addr = u.local_addr().map_err(bind_err(protocol, "udp", addr))?;
                    h3_sockets.push((u, udp_addr));
                }
            }
        }
        for (_, a) in &h3_sockets {
            listeners.push(ListenerInfo {
                protocol: "https",
                transport: "udp",
                addr: *a,
                note: "HTTP/3",
            });
        }
        let mut admin_listeners = Vec::new();
        for &addr in &settings.http.admin.0 {
            let l = net::bind_tcp(addr).map_err(bind_err("admin", "tcp", addr))?;
            let bound = l.local_addr().map_err(bind_err("admin", "tcp", addr))?;
            listeners.push(ListenerInfo {
                protocol: "admin",
                transport: "tcp",
                addr: bound,
                note: ADMIN_NOTE,
            });
            admin_listeners.push((l, bound));
        }
        if !http_listeners.is_empty() || !admin_listeners.is_empty() || !one_port.is_empty() {
            let ice = hub::ice::Ice::new(settings, core.clone(), &listeners);
            let ctx = hub::HubCtx::new(hub.clone(), settings, rx.clone());
            let router = http::router(
                http::HttpState {
                    metrics,
                    listeners_json: http::listeners_json(&listeners),
                    hub: hub.clone(),
                    broker: if settings.cluster.redis.is_some() {
                        "redis"
                    } else {
                        "memory"
                    },
                    health: Default::default(),
                },
                {
                    let routes = hub::routes(ctx.clone(), Some(ice));
                    match hub::pusher::routes(ctx.clone(), &settings.pusher.apps, webhooks.clone())
                    {
                        Some(pusher) => routes.merge(pusher),
                        None => routes,
                    }
                },
                http::Origins::new(
                    &settings.http.allowed_origins,
                    settings.http.allow_loopback_origins,
                ),
                http::Gate {
                    public_admin: settings.http.public_admin,
                    api_admin_only: settings.http.api_admin_only,
                },
                settings.access_log,
            );
            let h = &settings.http;
            let options = http::ConnOptions {
                ping: ctx.ping,
                first_request: h.first_request_timeout,
                limiter: http_conns
                    .get_or_insert_with(|| {
                        net::limits::ConnLimiter::new("http", http_cap, h.max_connections_per_ip)
                    })
                    .clone(),
                body_rate: (h.body_min_rate > 0).then_some(http::BodyRate {
                    bytes_per_sec: h.body_min_rate,
                    grace: h.body_grace,
                }),
                admin: false,
            };
            // The admin listener has caps of its own: a flood of the public listeners cannot
            // lock the operator out.
            let admin_options = http::ConnOptions {
                limiter: net::limits::ConnLimiter::new("admin", ADMIN_MAX_CONNECTIONS, 0),
                admin: true,
                ..options.clone()
            };
            for (l, addr) in admin_listeners {
                http::spawn(
                    l,
                    addr,
                    None,
                    router.clone(),
                    admin_options.clone(),
                    &rx,
                    &mut tasks,
                );
            }
            let https_acceptor = certs.acceptor(http::HTTPS_ALPN, "https")?;
            for (protocol, l, addr) in http_listeners {
                let tls = (protocol == "https").then(|| https_acceptor.clone());
                let h3_port = h3_sockets
                    .iter()
                    .find(|(_, a)| a.port() == addr.port() && a.ip() == addr.ip());
                let router = match (&tls, h3_port) {
                    (Some(_), Some((_, a))) => http::h3::with_alt_svc(router.clone(), a.port()),
                    _ => router.clone(),
                };
                http::spawn(l, addr, tls, router, options.clone(), &rx, &mut tasks);
            }
            if !one_port.is_empty() {
                let tls = certs.acceptor(mux::ALPN, "listen")?;
                // Waiting to be classified holds a slot of its own group (see mux.rs).
                let pending = net::limits::ConnLimiter::new(
                    "listen",
                    stun_cap,
                    settings.http.max_connections_per_ip,
                );
                let plain = http::Conns::new(router.clone(), options.clone(), &rx);
                for (l, addr) in one_port {
                    // Alt-Svc names this port for HTTP/3 (on TLS only, as on --https).
                    let https = if settings.http3.enabled {
                        plain.with_router(http::h3::with_alt_svc(router.clone(), addr.port()))
                    } else {
                        plain.clone()
                    };
                    let mux = Arc::new(mux::TcpMux {
                        http: plain.clone(),
                        https,
                        stun_tcp: one_port_stun.0.clone(),
                        stun_tls: one_port_stun.1.clone(),
                        tls: tls.clone(),
                        pending: pending.clone(),
                        timeout: settings.listen_timeout,
                    });
                    mux::spawn(l, addr, mux, &rx, &mut tasks);
                }
            }
            let h3_sockets = h3_sockets
                .into_iter()
                .map(|(u, a)| (http::h3::H3Socket::Own(u), a))
                .chain(one_port_quic.into_iter().map(|(d, a)| {
                    let shared: Arc<dyn quinn::AsyncUdpSocket> = d;
                    (http::h3::H3Socket::Shared(shared), a)
                }));
            for (udp, addr) in h3_sockets {
                http::h3::spawn(
                    udp,
                    addr,
                    &certs,
                    http::h3::Endpoints {
                        router: router.clone(),
                        hub: ctx.clone(),
                    },
                    &settings.http3,
                    &rx,
                    &mut tasks,
                )?;
            }
            tasks.spawn(hub::maintenance(hub.clone(), rx.clone()));
        }

        tasks.spawn(turn::ticker(core.clone(), rx.clone()));
        if let CertSource::Files { cert, key } = certs.source().clone() {
            tasks.spawn(watch_cert_files(certs.clone(), cert, key, rx.clone()));
        }
        let turn_summary = core.turn_enabled().then(|| {
            let t = &settings.turn;
            format!(
                "turn  relay {} ports {}  (realm {:?}, {} users, {} secrets{})",
                core.relay_ips(),
                t.relay_ports,
                t.realm,
                t.users.len(),
                t.secrets.len(),
                if t.allow_peers.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", allowed peers {}",
                        t.allow_peers
                            .iter()
                            .map(|c| c.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                }
            )
        });
        let cluster_summary = settings.cluster.redis.as_ref().map(|url| {
            format!(
                "hub   broker redis {} (prefix {:?}, node {:?})",
                cluster::redact_url(url),
                settings
                    .cluster
                    .redis_prefix
                    .as_deref()
                    .unwrap_or("switchboard"),
                settings.hub.node_name
            )
        });
        Ok(Server {
            listeners,
            core,
            turn_summary,
            cluster_summary,
            certs,
            hub,
            shutdown,
            tasks,
            http_conns,
        })
    }

    /// The real-time hub (server API calls from the embedding program).
    pub fn hub(&self) -> &switchboard_hub::Hub {
        &self.hub
    }

    /// The bound listeners.
    pub fn listeners(&self) -> &[ListenerInfo] {
        &self.listeners
    }

    /// The certificate store (fingerprint, reload).
    pub fn certs(&self) -> &Arc<CertStore> {
        &self.certs
    }

    /// One line describing the cluster broker when `--redis` is set.
    pub fn cluster_summary(&self) -> Option<&str> {
        self.cluster_summary.as_deref()
    }

    /// One line describing the TURN relay when TURN is on.
    pub fn turn_summary(&self) -> Option<&str> {
        self.turn_summary.as_deref()
    }

    /// Hot reload: certificate files, TURN users, secrets and peer policy from `settings`.
    /// Live allocations and connections are kept; on a certificate error the old one stays.
    /// Hub and HTTP settings take effect at the next start.
    pub fn reload(&self, settings: &Settings) -> Result<(), ServerError> {
        settings.validate()?;
        self.core.reload(settings);
        self.certs.reload()?;
        Ok(())
    }

    /// Stops every listener and connection, waiting up to five seconds for them to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let conns = self.http_conns.take();
        let drain = async {
            while self.tasks.join_next().await.is_some() {}
            // Connections run on tasks of their own (WebSockets after their upgrade too):
            // let them write their goodbyes (disconnect 3001, close frames) before the
            // process exits.
            while conns.as_ref().is_some_and(|c| c.open() > 0) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            tracing::warn!("some tasks or connections did not stop within 5 s; aborting them");
            self.tasks.abort_all();
        }
    }
}

/// Reloads the certificate when its files change (checked every two seconds), so a renewal by
/// certbot or similar needs no signal. Live connections keep the certificate they started with.
async fn watch_cert_files(
    certs: Arc<CertStore>,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let stamp = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = (stamp(&cert), stamp(&key));
    let mut every = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = every.tick() => {}
        }
        let now = (stamp(&cert), stamp(&key));
        if now == last {
            continue;
        }
        last = now;
        match certs.reload() {
            Ok(()) => {
                tracing::info!(fingerprint = %certs.fingerprint(), "certificate files changed; reloaded")
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate files changed but do not load; keeping the old certificate")
            }
        }
    }
}

/// Resolves once shutdown has been signalled (or the sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// A revocation from the node bus: one user name, UTF-8.
fn apply_revocation(core: &turn::Core, message: &[u8]) {
    if let Ok(user) = std::str::from_utf8(message) {
        core.revoke(user);
    }
}
