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

pub mod config;
mod http;
pub mod stats;
mod stun_stream;
mod stun_udp;
pub mod tls;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use switchboard_turn::{BindingService, Transport};
use tokio::sync::{watch, Semaphore};
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
    /// Certificate problems.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener could not bind.
    #[error("cannot listen on {protocol}/{transport} {addr}: {source}")]
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
    /// `stun` or `http`.
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
    certs: Arc<CertStore>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
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
        let service = Arc::new(BindingService::new(&settings.stun.software));
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
            let addrs = stun_udp::spawn(
                addr,
                alt,
                workers,
                service.clone(),
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

        let limit = Arc::new(Semaphore::new(settings.stun.max_connections));
        let idle = Duration::from_secs(settings.stun.idle_timeout.max(1));
        let stream_lists = [
            (Transport::Tcp, &settings.stun.tcp),
            (Transport::Tls, &settings.stun.tls),
        ];
        for (transport, list) in stream_lists {
            if list.is_off() {
                continue;
            }
            let tls = match transport {
                Transport::Tls => Some(tokio_rustls::TlsAcceptor::from(
                    certs.server_config(STUN_ALPN)?,
                )),
                _ => None,
            };
            let ctx = Arc::new(stun_stream::StreamCtx {
                service: service.clone(),
                stats: Arc::new(StunStats::new(transport)),
                limit: limit.clone(),
                idle,
                tls,
                transport,
            });
            for &addr in &list.0 {
                let t = transport.as_str();
                let primary = stun_stream::bind(addr).map_err(bind_err("stun", t, addr))?;
                let primary_addr = primary.local_addr().map_err(bind_err("stun", t, addr))?;
                // With RFC 5780 on, also listen on the alternate address and port so the
                // OTHER-ADDRESS we advertise is reachable.
                let alt = alt_ip.and_then(|ip| {
                    settings
                        .alt_port_for(primary_addr.port())
                        .map(|p| SocketAddr::new(ip, p))
                });
                let alt_listener = match alt {
                    Some(a) => Some(stun_stream::bind(a).map_err(bind_err("stun", t, a))?),
                    None => None,
                };
                stun_stream::spawn(primary, alt, ctx.clone(), &rx, &mut tasks);
                listeners.push(ListenerInfo {
                    protocol: "stun",
                    transport: t,
                    addr: primary_addr,
                    note: "",
                });
                if let (Some(l), Some(a)) = (alt_listener, alt) {
                    stun_stream::spawn(l, Some(primary_addr), ctx.clone(), &rx, &mut tasks);
                    listeners.push(ListenerInfo {
                        protocol: "stun",
                        transport: t,
                        addr: a,
                        note: ROLE_NOTES[3],
                    });
                }
            }
        }

        let mut http_listeners = Vec::new();
        for &addr in &settings.http.listen.0 {
            let l = stun_stream::bind(addr).map_err(bind_err("http", "tcp", addr))?;
            let bound = l.local_addr().map_err(bind_err("http", "tcp", addr))?;
            listeners.push(ListenerInfo {
                protocol: "http",
                transport: "tcp",
                addr: bound,
                note: "HTTP/1.1, h2c: /healthz /metrics",
            });
            http_listeners.push((l, bound));
        }
        let router = http::router(http::HttpState {
            metrics,
            listeners: Arc::new(listeners.clone()),
        });
        for (l, addr) in http_listeners {
            http::spawn(l, addr, router.clone(), &rx, &mut tasks);
        }

        Ok(Server {
            listeners,
            certs,
            shutdown,
            tasks,
        })
    }

    /// The bound listeners.
    pub fn listeners(&self) -> &[ListenerInfo] {
        &self.listeners
    }

    /// The certificate store (fingerprint, reload).
    pub fn certs(&self) -> &Arc<CertStore> {
        &self.certs
    }

    /// Re-reads certificate files; live connections keep their session.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.certs.reload()
    }

    /// Stops every listener and connection, waiting up to five seconds for them to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not stop within 5 s; aborting them");
            self.tasks.abort_all();
        }
    }
}

/// Resolves once shutdown has been signalled (or the sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
