//! HTTP/3: QUIC (quinn) on the UDP side of every HTTPS port, h3 on top, and each request fed to
//! the same axum [`Router`] the TCP listeners serve, so every endpoint (health, metrics, SSE,
//! long-poll, publish, server API) answers over HTTP/3 too. WebSocket stays on HTTP/1.1 and h2.
//!
//! WebTransport: an extended CONNECT with `:protocol = webtransport` to `/v1/wt` turns the
//! connection into one WebTransport session ([`webtransport`]). Each bidirectional stream the
//! client opens on it is a hub connection ([`crate::hub::webtransport`]); ordinary requests on
//! the same connection keep going to the router. The session watches its CONNECT stream: the
//! client's CLOSE_WEBTRANSPORT_SESSION capsule, FIN or reset ends every hub connection of the
//! session at once; a server shutdown closes the session with the capsule (draft-ietf-webtrans-
//! http3, "Session Termination").
//!
//! QUIC behaviour (docs/http3.md): connection migration on, idle timeout and keep-alive from
//! `[http3]`, limits on streams and connections, address validation with Retry when asked
//! (`--quic-retry`) or when many handshakes are in progress, certificates from the
//! [`CertStore`] resolver (a reload applies to new connections), the server's key exchange
//! preference ([`crate::quic_tls`]), and 0-RTT with one rule: a request that arrived before the
//! handshake completed is served only if it is a GET or HEAD; anything else gets
//! `425 Too Early` (RFC 8470) and the client retries it after the handshake.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Method, Response, StatusCode};
use axum::Router;
use bytes::{Buf, Bytes};
use h3::ext::Protocol;
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming};
use h3_webtransport::SessionId;
use http_body_util::BodyExt;
use switchboard_hub::codes::error as code;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tower::Service;

use crate::config::Http3Settings;
use crate::hub;
use crate::tls::quic::PreferringConfig;
use crate::tls::{CertStore, TlsError};
use crate::ServerError;

/// ALPN of the QUIC listeners.
pub(crate) const H3_ALPN: &[&[u8]] = &[b"h3"];

/// Time allowed for a QUIC handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request header section accepted, bytes.
const MAX_FIELD_SECTION: u64 = 16 * 1024;

/// QUIC datagram buffers (HTTP/3 datagrams are required by WebTransport; the hub sends none and
/// reads none, so received ones are dropped once this fills).
const DATAGRAM_BUFFER: usize = 64 * 1024;

/// `Alt-Svc` advertising HTTP/3 on `port`, added to every response of `router`.
pub(crate) fn with_alt_svc(router: Router, port: u16) -> Router {
    let Ok(value) = HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")) else {
        return router;
    };
    router.layer(axum::middleware::map_response(
        move |mut res: axum::response::Response| {
            let value = value.clone();
            async move {
                res.headers_mut().insert(header::ALT_SVC, value);
                res
            }
        },
    ))
}

/// Shared by the accept loop and the connections of one endpoint.
struct Shared {
    settings: Http3Settings,
    open: AtomicUsize,
    handshaking: AtomicUsize,
}

/// What an HTTP/3 connection serves: requests go to `router`, WebTransport streams to the hub.
pub(crate) struct Endpoints {
    pub router: Router,
    pub hub: hub::Ctx,
}

/// The UDP socket of an HTTP/3 endpoint.
pub(crate) enum H3Socket {
    /// A socket of its own (the UDP side of an `--https` port).
    Own(std::net::UdpSocket),
    /// The one-port socket, shared with STUN/TURN (`crate::mux::udp`).
    Shared(Arc<dyn quinn::AsyncUdpSocket>),
}

/// Serves HTTP/3 on `udp` until shutdown.
pub(crate) fn spawn(
    udp: H3Socket,
    addr: SocketAddr,
    certs: &Arc<CertStore>,
    endpoints: Endpoints,
    settings: &Http3Settings,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Result<(), ServerError> {
    let crypto = PreferringConfig::new(certs.quic_configs(H3_ALPN)?).map_err(TlsError::Config)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(settings.idle_timeout)
        .map_err(|e| TlsError::Config(format!("[http3] idle_timeout: {e}")))?;
    transport
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(settings.max_bidi_streams))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(settings.max_uni_streams))
        .max_idle_timeout(Some(idle))
        .keep_alive_interval((!settings.keep_alive.is_zero()).then_some(settings.keep_alive))
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_BUFFER);
    server
        .transport_config(Arc::new(transport))
        .migration(true)
        .max_incoming(settings.max_connections.clamp(1, 1 << 16));
    let endpoint = match udp {
        H3Socket::Own(udp) => quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            udp,
            Arc::new(quinn::TokioRuntime),
        ),
        H3Socket::Shared(socket) => {
            // Clients may clear the QUIC bit only when told they may (RFC 9287): they must
            // not here, or their packets could look like STUN (RFC 9443).
            let mut config = quinn::EndpointConfig::default();
            config.grease_quic_bit(false);
            quinn::Endpoint::new_with_abstract_socket(
                config,
                Some(server),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
        }
    }
    .map_err(|source| ServerError::Bind {
        protocol: "https",
        transport: "udp",
        addr,
        source,
    })?;
    let shared = Arc::new(Shared {
        settings: settings.clone(),
        open: AtomicUsize::new(0),
        handshaking: AtomicUsize::new(0),
    });
    let mut stop = shutdown.clone();
    let conn_stop = shutdown.clone();
    let Endpoints { router, hub } = endpoints;
    tasks.spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let incoming = tokio::select! {
                _ = crate::stopped(&mut stop) => break,
                i = endpoint.accept() => match i {
                    Some(i) => i,
                    None => break,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            };
            let s = &shared.settings;
            if shared.open.load(Ordering::Relaxed) >= s.max_connections {
                metrics::counter!("switchboard_http3_connections_refused_total", "reason" => "limit")
                    .increment(1);
                incoming.refuse();
                continue;
            }
            let busy = shared.handshaking.load(Ordering::Relaxed) >= s.retry_above_handshakes;
            if (s.retry || busy) && !incoming.remote_address_validated() && incoming.may_retry() {
                metrics::counter!("switchboard_http3_retries_total").increment(1);
                let _ = incoming.retry();
                continue;
            }
            conns.spawn(connection(
                incoming,
                shared.clone(),
                router.clone(),
                hub.clone(),
                conn_stop.clone(),
            ));
        }
        // Connections saw the same signal: GOAWAY, then in-flight requests get a moment.
        let drain = async { while conns.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(3), drain).await;
        conns.abort_all();
        endpoint.close(quinn::VarInt::from_u32(0x100), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    });
    Ok(())
}

/// Decrements a counter when dropped.
struct Count(Arc<Shared>, fn(&Shared) -> &AtomicUsize);

impl Count {
    fn new(shared: &Arc<Shared>, which: fn(&Shared) -> &AtomicUsize) -> Count {
        which(shared).fetch_add(1, Ordering::Relaxed);
        Count(shared.clone(), which)
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::Relaxed);
    }
}

/// Client-initiated request streams opened before the handshake completed (0-RTT).
type EarlyStreams = Arc<Mutex<HashSet<quic::StreamId>>>;

async fn connection(
    incoming: quinn::Incoming,
    shared: Arc<Shared>,
    router: Router,
    hub: hub::Ctx,
    mut stop: watch::Receiver<bool>,
) {
    let _open = Count::new(&shared, |s| &s.open);
    let handshaking = Count::new(&shared, |s| &s.handshaking);
    let peer = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "QUIC connection not accepted");
            return;
        }
    };
    // On a server, `into_0rtt` always succeeds: streams the client opened in 0-RTT are
    // accepted at once, and the returned future resolves when the handshake completes.
    let (conn, handshake) = match connecting.into_0rtt() {
        Ok((conn, accepted)) => (conn, Some(Box::pin(accepted))),
        Err(connecting) => match connecting.await {
            Ok(conn) => (conn, None),
            Err(e) => {
                tls_failure(&e);
                tracing::debug!(%peer, error = %e, "QUIC handshake failed");
                return;
            }
        },
    };
    metrics::counter!("switchboard_http3_connections_total").increment(1);
    tracing::trace!(%peer, "QUIC connection");
    let early: EarlyStreams = Arc::default();
    let done = Arc::new(AtomicBool::new(handshake.is_none()));
    let quic = EarlyAware {
        inner: h3_quinn::Connection::new(conn.clone()),
        handshake,
        handshaking: Some(handshaking),
        done: done.clone(),
        early: early.clone(),
    };
    let mut h3c = match h3::server::builder()
        .max_field_section_size(MAX_FIELD_SECTION)
        .enable_webtransport(true)
        .enable_extended_connect(true)
        .enable_datagram(true)
        .max_webtransport_sessions(1)
        .build::<_, Bytes>(quic)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "HTTP/3 connection set-up failed");
            return;
        }
    };
    tracing::trace!(%peer, "HTTP/3 connection ready");
    let deadline = tokio::time::sleep(HANDSHAKE_TIMEOUT);
    tokio::pin!(deadline);
    let mut path = conn.remote_address();
    let mut requests = JoinSet::new();
    // A request task that finds a WebTransport CONNECT hands it here: the session takes over
    // the connection.
    let (wt_tx, mut wt_rx) = mpsc::channel::<(Request, Stream)>(1);
    let upgrade = loop {
        tokio::select! {
            _ = crate::stopped(&mut stop) => {
                // GOAWAY: no new requests; those in flight get a moment to finish.
                let _ = tokio::time::timeout(Duration::from_millis(500), h3c.shutdown(0)).await;
                let drain = async { while requests.join_next().await.is_some() {} };
                let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
                return;
            }
            Some(connect) = wt_rx.recv() => break Some(connect),
            _ = &mut deadline, if !done.load(Ordering::Relaxed) => {
                // The condition was read when this select! started; the handshake may have
                // completed since.
                if !done.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "QUIC handshake timed out");
                    conn.close(quinn::VarInt::from_u32(0x100), b"handshake timeout");
                    return;
                }
            }
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
            r = h3c.accept() => match r {
                Ok(Some(resolver)) => {
                    tracing::trace!(%peer, "HTTP/3 request stream");
                    let now = conn.remote_address();
                    if now != path {
                        // The client moved (NAT rebinding or a deliberate migration); quinn
                        // validated the new path and the connection carries on.
                        metrics::counter!("switchboard_http3_migrations_total").increment(1);
                        tracing::debug!(from = %path, to = %now, "QUIC connection migrated");
                        path = now;
                    }
                    requests.spawn(request(
                        resolver,
                        router.clone(),
                        now,
                        super::Surface::of_local(conn.local_ip()),
                        early.clone(),
                        wt_tx.clone(),
                    ));
                }
                Ok(None) => break None,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "HTTP/3 connection ended");
                    break None;
                }
            },
        }
    };
    // Later CONNECTs find the channel closed and are refused.
    drop(wt_rx);
    drop(wt_tx);
    if let Some((_, stream)) = upgrade {
        webtransport(
            stream,
            &mut h3c,
            &conn,
            router,
            hub,
            early,
            &mut requests,
            stop,
        )
        .await;
    }
    // Dropping the connection closes it: requests in flight finish first.
    let drain = async { while requests.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

fn tls_failure(e: &quinn::ConnectionError) {
    if matches!(
        e,
        quinn::ConnectionError::TransportError(_) | quinn::ConnectionError::ConnectionClosed(_)
    ) {
        metrics::counter!("switchboard_tls_handshake_failures_total", "listener" => "quic")
            .increment(1);
    }
}

type Resolver = h3::server::RequestResolver<EarlyAware, Bytes>;
type Stream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;
type Request = axum::http::Request<()>;
/// The HTTP/3 side of one QUIC connection.
type H3Conn = h3::server::Connection<EarlyAware, Bytes>;
/// Where a WebTransport CONNECT goes; closed once the connection has its session.
type WtConnect = mpsc::Sender<(Request, Stream)>;
/// Where the tasks reading the first frame of the session's streams send its WebTransport
/// streams.
type WtStreams = mpsc::UnboundedSender<(SessionId, hub::webtransport::Stream)>;

/// Why a WebTransport session ended.
#[derive(Debug)]
enum SessionEnd {
    /// The client's CLOSE_WEBTRANSPORT_SESSION capsule.
    Closed { code: u32, reason: String },
    /// The client finished the CONNECT stream without a capsule (a close with code 0).
    Finished,
    /// The client reset the CONNECT stream (or reading it failed).
    Reset,
    /// The CONNECT stream carried a close capsule that is not one.
    Malformed(capsule::Error),
    /// The server stops.
    Shutdown,
    /// The connection ended (closed, timed out, or HTTP/3 failed on it).
    Connection,
}

impl SessionEnd {
    /// The `reason` label of `switchboard_webtransport_sessions_ended_total`.
    fn label(&self) -> &'static str {
        match self {
            SessionEnd::Closed { .. } => "close",
            SessionEnd::Finished => "fin",
            SessionEnd::Reset => "reset",
            SessionEnd::Malformed(_) => "malformed",
            SessionEnd::Shutdown => "shutdown",
            SessionEnd::Connection => "connection",
        }
    }
}

/// Runs the WebTransport session that took over the connection (draft-ietf-webtrans-http3):
/// answers the CONNECT and watches it, makes client-opened bidirectional streams hub
/// connections, sends requests to the router, until the client ends the session, the
/// connection ends, or the server stops.
///
/// How it ends: the client's CLOSE_WEBTRANSPORT_SESSION capsule, FIN or reset of the CONNECT
/// stream ends every hub connection of the session at once (each resets its stream with
/// WT_SESSION_GONE and stops reading it), then the server finishes (or resets) its side of the
/// CONNECT stream. On shutdown every hub connection writes disconnect 3001 and finishes its
/// stream first, then the session is closed with the capsule (3001 "shutdown") and FIN. Either
/// way the connection is closed after a few round trips (at most 1 s), when the caller drops it.
///
/// The session is run here rather than by h3-webtransport's `WebTransportSession`, which keeps
/// the CONNECT stream but never reads it (a client's close went unseen until the QUIC idle
/// timeout). Streams are accepted with the h3 calls that crate makes: h3's
/// `i-implement-a-third-party-backend-and-opt-into-breaking-changes` API, which h3-webtransport
/// turns on (its dependency on h3 enables the feature; both are 0.0.x/0.1.x releases, pinned).
#[allow(clippy::too_many_arguments)]
async fn webtransport(
    mut connect: Stream,
    h3c: &mut H3Conn,
    conn: &quinn::Connection,
    router: Router,
    hub: hub::Ctx,
    early: EarlyStreams,
    requests: &mut JoinSet<()>,
    mut stop: watch::Receiver<bool>,
) {
    use h3::ConnectionState as _;

    let peer = conn.remote_address();
    let capable = {
        // The client's settings.
        let settings = h3c.settings();
        settings.enable_webtransport() && settings.enable_datagram()
    };
    if !capable {
        let message = "WebTransport needs SETTINGS_ENABLE_WEBTRANSPORT and SETTINGS_H3_DATAGRAM";
        refuse(
            &mut connect,
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            message,
        )
        .await;
        return;
    }
    let response = Response::builder()
        .status(StatusCode::OK)
        // What Chromium looks for.
        .header("sec-webtransport-http3-draft", "draft02")
        .body(());
    let sent = match response {
        Ok(r) => connect.send_response(r).await,
        Err(_) => return,
    };
    if let Err(e) = sent {
        tracing::debug!(%peer, error = %e, "WebTransport session not accepted");
        return;
    }
    let id = SessionId::from(connect.send_id());
    metrics::counter!("switchboard_webtransport_sessions_total").increment(1);
    tracing::trace!(%peer, "WebTransport session");

    let (mut send, recv) = connect.split();
    let client_end = client_end(recv);
    tokio::pin!(client_end);
    // Turns true when the client ended the session: its hub connections end and abort their
    // streams.
    let (gone, gone_rx) = watch::channel(false);
    let (wt_tx, mut wt_rx) = mpsc::unbounded_channel();
    let mut streams = JoinSet::new();
    let end = loop {
        tokio::select! {
            _ = crate::stopped(&mut stop) => break SessionEnd::Shutdown,
            end = &mut client_end => break end,
            r = std::future::poll_fn(|cx| h3c.poll_accept_request_stream(cx)) => match r {
                Ok(Some(s)) => {
                    let stream = h3::frame::FrameStream::new(h3::stream::BufRecvStream::new(s));
                    let resolver = h3c.create_resolver(stream);
                    let peer = conn.remote_address();
                    let (router, early, wt) = (router.clone(), early.clone(), wt_tx.clone());
                    requests.spawn(session_stream(resolver, router, peer, early, wt));
                }
                Ok(None) => break SessionEnd::Connection,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "HTTP/3 connection ended");
                    break SessionEnd::Connection;
                }
            },
            Some((sid, mut stream)) = wt_rx.recv() => {
                if sid == id {
                    let peer = conn.remote_address();
                    let gone = gone_rx.clone();
                    streams.spawn(hub::webtransport::serve(hub.clone(), stream, peer, gone));
                } else {
                    // Only one session per connection: a stream for another is refused. (Its
                    // first frame was read, no read is pending: h3-quinn can stop it.)
                    use h3::quic::{RecvStream, SendStream};
                    stream.stop_sending(hub::webtransport::WT_SESSION_GONE);
                    SendStream::<Bytes>::reset(&mut stream, hub::webtransport::WT_SESSION_GONE);
                }
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
        }
    };
    metrics::counter!("switchboard_webtransport_sessions_ended_total", "reason" => end.label())
        .increment(1);
    match &end {
        // The reason is the client's text: Debug-quoted.
        SessionEnd::Closed { code, reason } => {
            tracing::debug!(%peer, code, ?reason, "WebTransport session closed by the client");
        }
        SessionEnd::Malformed(e) => {
            tracing::debug!(%peer, error = %e, "WebTransport session ended by a bad capsule");
        }
        other => tracing::debug!(%peer, how = other.label(), "WebTransport session ended"),
    }
    let drain = |limit| async move {
        let all = async { while streams.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(limit, all).await;
    };
    match end {
        SessionEnd::Connection => drain(Duration::from_secs(2)).await,
        SessionEnd::Shutdown => {
            // Every hub connection writes its disconnect (3001) and finishes its stream; the
            // frames get a round trip or so before the close, after which a browser drops what
            // the page has not read yet.
            drain(Duration::from_secs(2)).await;
            let pause =
                (conn.rtt() * 2 + Duration::from_millis(25)).min(Duration::from_millis(250));
            tokio::time::sleep(pause).await;
            let d = switchboard_hub::codes::disconnect_message(
                switchboard_hub::codes::disconnect::SHUTDOWN,
            );
            let close = async {
                send.send_data(capsule::close(d.code, &d.reason)).await?;
                send.finish().await
            };
            match tokio::time::timeout(Duration::from_secs(1), close).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "WebTransport close not sent"),
                Err(_) => tracing::debug!(%peer, "WebTransport close not sent in time"),
            }
            linger(conn).await;
        }
        client => {
            let _ = gone.send(true);
            drain(Duration::from_millis(500)).await;
            match client {
                SessionEnd::Closed { .. } | SessionEnd::Finished => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), send.finish()).await;
                }
                SessionEnd::Malformed(_) => send.stop_stream(h3::error::Code::H3_MESSAGE_ERROR),
                _ => send.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED),
            }
            linger(conn).await;
        }
    }
}

/// Closing the connection discards stream data not yet sent or acknowledged: the last frames
/// get a few round trips (or until the client closes).
async fn linger(conn: &quinn::Connection) {
    let linger = (conn.rtt() * 4 + Duration::from_millis(50)).min(Duration::from_secs(1));
    let _ = tokio::time::timeout(linger, conn.closed()).await;
}

/// Reads the client's half of the CONNECT stream until the client ends the session. Data on it
/// is a sequence of capsules (RFC 9297) inside DATA frames; only the close matters.
async fn client_end<R: quic::RecvStream>(
    mut recv: h3::server::RequestStream<R, Bytes>,
) -> SessionEnd {
    let mut capsules = capsule::Reader::default();
    loop {
        match recv.recv_data().await {
            Ok(Some(mut data)) => {
                while data.has_remaining() {
                    let chunk = data.chunk();
                    let n = chunk.len();
                    capsules.push(chunk);
                    data.advance(n);
                }
                while let Some(c) = capsules.next() {
                    match c {
                        Ok(capsule::Capsule::Close { code, reason }) => {
                            return SessionEnd::Closed { code, reason };
                        }
                        // The client asks us to wrap up: it will close the session itself.
                        Ok(capsule::Capsule::Drain) => {}
                        Err(e) => return SessionEnd::Malformed(e),
                    }
                }
            }
            Ok(None) => return SessionEnd::Finished,
            Err(h3::error::StreamError::ConnectionError { .. }) => return SessionEnd::Connection,
            Err(e) => {
                tracing::debug!(error = %e, "WebTransport CONNECT stream ended");
                return SessionEnd::Reset;
            }
        }
    }
}

/// Reads the first frame of a bidirectional stream opened during a WebTransport session: a
/// WEBTRANSPORT_STREAM header hands the stream to the session, anything else is a request,
/// served here (a second CONNECT gets 409: `wt` for requests is closed).
async fn session_stream(
    mut resolver: Resolver,
    router: Router,
    peer: SocketAddr,
    early: EarlyStreams,
    wt: WtStreams,
) {
    use h3::proto::frame::Frame;
    let frame = std::future::poll_fn(|cx| resolver.frame_stream.poll_next(cx)).await;
    let frame = match frame {
        Ok(Some(Frame::WebTransportStream(sid))) => {
            let _ = wt.send((sid, resolver.frame_stream.into_inner()));
            return;
        }
        other => other,
    };
    let resolved = match resolver.accept_with_frame(frame) {
        Ok(r) => r.resolve().await,
        Err(e) => Err(e),
    };
    match resolved {
        Ok((req, stream)) => {
            let (closed, _) = mpsc::channel(1);
            serve(req, stream, router, peer, early, closed).await;
        }
        Err(e) => tracing::debug!(%peer, error = %e, "bad HTTP/3 request"),
    }
}

/// Capsules on a WebTransport CONNECT stream (RFC 9297; draft-ietf-webtrans-http3 defines the
/// two read here). Pure: bytes in, capsules out.
mod capsule {
    use bytes::{Buf, BufMut, Bytes, BytesMut};

    /// CLOSE_WEBTRANSPORT_SESSION: a 32-bit error code, then a UTF-8 message.
    pub(super) const CLOSE_WEBTRANSPORT_SESSION: u64 = 0x2843;
    /// DRAIN_WEBTRANSPORT_SESSION: no payload.
    pub(super) const DRAIN_WEBTRANSPORT_SESSION: u64 = 0x78ae;
    /// Longest close message, bytes.
    pub(super) const MAX_MESSAGE: usize = 1024;

    /// A capsule that means something to the session; others are skipped.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) enum Capsule {
        Close { code: u32, reason: String },
        Drain,
    }

    /// A capsule that breaks the rules.
    #[derive(Debug, PartialEq, Eq, thiserror::Error)]
    pub(super) enum Error {
        /// A close capsule shorter than its code or longer than code and message may be.
        #[error("CLOSE_WEBTRANSPORT_SESSION of {0} bytes")]
        CloseLength(u64),
    }

    /// Collects capsules from the stream's bytes. Skipped capsules are not buffered; what is
    /// buffered is at most one read plus one close capsule.
    #[derive(Default)]
    pub(super) struct Reader {
        buf: BytesMut,
        /// Bytes of a skipped capsule still to come.
        skip: u64,
        /// An error was returned: nothing more is read.
        failed: bool,
    }

    impl Reader {
        pub(super) fn push(&mut self, mut data: &[u8]) {
            if self.failed {
                return;
            }
            let n = data
                .len()
                .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
            data = &data[n..];
            self.skip -= n as u64;
            self.buf.extend_from_slice(data);
        }

        /// The next complete capsule of interest, or `None` until more bytes arrive (or for good,
        /// after an error).
        pub(super) fn next(&mut self) -> Option<Result<Capsule, Error>> {
            if self.failed {
                return None;
            }
            loop {
                let n = self
                    .buf
                    .len()
                    .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                self.buf.advance(n);
                self.skip -= n as u64;
                if self.skip > 0 {
                    return None;
                }
                let (ty, a) = varint(&self.buf)?;
                let (len, b) = varint(&self.buf[a..])?;
                let head = a + b;
                match ty {
                    CLOSE_WEBTRANSPORT_SESSION => {
                        if !(4..=(4 + MAX_MESSAGE) as u64).contains(&len) {
                            self.failed = true;
                            self.buf.clear();
                            return Some(Err(Error::CloseLength(len)));
                        }
                        let len = len as usize;
                        if self.buf.len() < head + len {
                            return None;
                        }
                        self.buf.advance(head);
                        let mut value = self.buf.split_to(len);
                        let code = value.get_u32();
                        let reason = String::from_utf8_lossy(&value).into_owned();
                        return Some(Ok(Capsule::Close { code, reason }));
                    }
                    _ => {
                        self.buf.advance(head);
                        self.skip = len;
                        if ty == DRAIN_WEBTRANSPORT_SESSION {
                            return Some(Ok(Capsule::Drain));
                        }
                    }
                }
            }
        }
    }

    /// A QUIC variable-length integer at the start of `b` and its length, if complete.
    fn varint(b: &[u8]) -> Option<(u64, usize)> {
        let first = *b.first()?;
        let len = 1usize << (first >> 6);
        let bytes = b.get(..len)?;
        let v = bytes[1..]
            .iter()
            .fold(u64::from(first & 0x3f), |v, &x| (v << 8) | u64::from(x));
        Some((v, len))
    }

    fn put_varint(out: &mut BytesMut, v: u64) {
        match v {
            0..=0x3f => out.put_u8(v as u8),
            0x40..=0x3fff => out.put_u16(0x4000 | v as u16),
            0x4000..=0x3fff_ffff => out.put_u32(0x8000_0000 | v as u32),
            _ => out.put_u64(0xc000_0000_0000_0000 | v),
        }
    }

    /// A CLOSE_WEBTRANSPORT_SESSION capsule (the message cut to [`MAX_MESSAGE`] bytes, at a
    /// character boundary).
    pub(super) fn close(code: u32, message: &str) -> Bytes {
        let mut end = message.len().min(MAX_MESSAGE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = &message.as_bytes()[..end];
        let mut out = BytesMut::with_capacity(16 + message.len());
        put_varint(&mut out, CLOSE_WEBTRANSPORT_SESSION);
        put_varint(&mut out, 4 + message.len() as u64);
        out.put_u32(code);
        out.put_slice(message);
        out.freeze()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn read_all(chunks: &[&[u8]]) -> Vec<Result<Capsule, Error>> {
            let mut r = Reader::default();
            let mut out = Vec::new();
            for c in chunks {
                r.push(c);
                while let Some(x) = r.next() {
                    out.push(x);
                }
            }
            out
        }

        #[test]
        fn close_round_trips_byte_by_byte() {
            let bytes = close(4001, "bye");
            // type 0x2843 is a two-byte varint, the length (7) one byte.
            assert_eq!(&bytes[..], b"\x68\x43\x07\x00\x00\x0f\xa1bye");
            let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
            let got = read_all(&chunks);
            let want = Capsule::Close {
                code: 4001,
                reason: "bye".into(),
            };
            assert_eq!(got, vec![Ok(want)]);
        }

        #[test]
        fn unknown_capsules_are_skipped_unbuffered() {
            // A DATAGRAM capsule (type 0) of 100,000 bytes, a drain, then the close.
            let mut head = BytesMut::new();
            put_varint(&mut head, 0);
            put_varint(&mut head, 100_000);
            let payload = vec![7u8; 100_000];
            let mut tail = BytesMut::new();
            put_varint(&mut tail, DRAIN_WEBTRANSPORT_SESSION);
            put_varint(&mut tail, 0);
            tail.extend_from_slice(&close(0, ""));
            let mut r = Reader::default();
            r.push(&head);
            assert_eq!(r.next(), None);
            for c in payload.chunks(1000) {
                r.push(c);
                assert_eq!(r.next(), None);
                assert!(r.buf.is_empty());
            }
            r.push(&tail);
            assert_eq!(r.next(), Some(Ok(Capsule::Drain)));
            let closed = Capsule::Close {
                code: 0,
                reason: String::new(),
            };
            assert_eq!(r.next(), Some(Ok(closed)));
        }

        #[test]
        fn oversized_or_short_close_is_an_error() {
            let mut b = BytesMut::new();
            put_varint(&mut b, CLOSE_WEBTRANSPORT_SESSION);
            put_varint(&mut b, 4 + MAX_MESSAGE as u64 + 1);
            assert_eq!(read_all(&[&b]), vec![Err(Error::CloseLength(1029))]);
            let mut b = BytesMut::new();
            put_varint(&mut b, CLOSE_WEBTRANSPORT_SESSION);
            put_varint(&mut b, 3);
            assert_eq!(read_all(&[&b]), vec![Err(Error::CloseLength(3))]);
        }

        #[test]
        fn long_messages_are_cut_at_a_character() {
            let message = "é".repeat(600);
            let bytes = close(1, &message);
            let got = read_all(&[&bytes]);
            let Some(Ok(Capsule::Close { reason, .. })) = got.first() else {
                panic!("{got:?}");
            };
            assert_eq!(reason.len(), 1024);
        }

        #[test]
        fn varints() {
            for v in [0, 63, 64, 16_383, 16_384, 1 << 30, (1 << 62) - 1] {
                let mut b = BytesMut::new();
                put_varint(&mut b, v);
                assert_eq!(varint(&b), Some((v, b.len())), "{v}");
                assert_eq!(varint(&b[..b.len() - 1]), None);
            }
        }
    }
}

/// Resolves one request stream and serves it.
async fn request(
    resolver: Resolver,
    router: Router,
    peer: SocketAddr,
    surface: super::Surface,
    early: EarlyStreams,
    wt: WtConnect,
) {
    let (mut req, stream) = match resolver.resolve_request().await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "bad HTTP/3 request");
            return;
        }
    };
    req.extensions_mut().insert(surface);
    serve(req, stream, router, peer, early, wt).await;
}

/// Serves one request: HTTP/3 in, the router's response out (streamed frame by frame, so SSE
/// and long-poll behave as on TCP). A WebTransport CONNECT to `/v1/wt` is handed to the
/// connection through `wt`.
async fn serve(
    req: Request,
    mut stream: Stream,
    mut router: Router,
    peer: SocketAddr,
    early: EarlyStreams,
    wt: WtConnect,
) {
    metrics::counter!("switchboard_http3_requests_total").increment(1);
    tracing::trace!(%peer, method = %req.method(), uri = %req.uri(), "HTTP/3 request");
    let was_early = early
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&stream.id());
    let head = req.method() == Method::HEAD;
    if was_early && !(req.method() == Method::GET || head) {
        metrics::counter!("switchboard_http3_too_early_total").increment(1);
        too_early(&mut stream).await;
        return;
    }
    if req.method() == Method::CONNECT
        && req.extensions().get::<Protocol>() == Some(&Protocol::WEB_TRANSPORT)
    {
        if req.uri().path() != hub::webtransport::PATH {
            let message = format!("no WebTransport endpoint at {}", req.uri().path());
            refuse(
                &mut stream,
                StatusCode::NOT_FOUND,
                code::METHOD_NOT_FOUND,
                &message,
            )
            .await;
            return;
        }
        if let Err(e) = wt.try_send((req, stream)) {
            let (_, mut stream) = e.into_inner();
            let message = "one WebTransport session per connection";
            refuse(
                &mut stream,
                StatusCode::CONFLICT,
                code::BAD_REQUEST,
                message,
            )
            .await;
        }
        return;
    }
    let (mut send, recv) = stream.split();
    let body = Body::from_stream(futures_util::stream::unfold(
        Some(recv),
        |recv| async move {
            let mut recv = recv?;
            match recv.recv_data().await {
                Ok(Some(mut buf)) => Some((Ok(buf.copy_to_bytes(buf.remaining())), Some(recv))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        },
    ));
    let mut req = req.map(|()| body);
    req.extensions_mut().insert(ConnectInfo(peer));
    let response = match router.call(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let (mut parts, mut body) = response.into_parts();
    for h in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::HeaderName::from_static("keep-alive"),
        header::HeaderName::from_static("proxy-connection"),
    ] {
        parts.headers.remove(h);
    }
    if let Err(e) = send.send_response(Response::from_parts(parts, ())).await {
        tracing::debug!(%peer, error = %e, "HTTP/3 response not sent");
        return;
    }
    if !head {
        while let Some(frame) = body.frame().await {
            let sent = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) if data.is_empty() => Ok(()),
                    Ok(data) => send.send_data(data).await,
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => send.send_trailers(trailers).await,
                        Err(_) => Ok(()),
                    },
                },
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "response body failed");
                    send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                    return;
                }
            };
            if let Err(e) = sent {
                // The client went away (or stopped the stream): drop the body, which ends an
                // SSE subscription or a long-poll.
                tracing::debug!(%peer, error = %e, "HTTP/3 client stopped reading");
                return;
            }
        }
    }
    let _ = send.finish().await;
}

/// `425 Too Early` (RFC 8470): the request may be replayed, so it is not processed.
async fn too_early(stream: &mut Stream) {
    let body = Bytes::from_static(
        br#"{"error":{"code":425,"message":"too early: only GET and HEAD are served in 0-RTT; retry after the handshake"}}"#,
    );
    respond(stream, StatusCode::TOO_EARLY, body).await;
}

/// An error response in the hub's JSON shape, `{"error":{"code","message"}}`.
async fn refuse(stream: &mut Stream, status: StatusCode, code: u32, message: &str) {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    respond(stream, status, Bytes::from(body)).await;
}

async fn respond(stream: &mut Stream, status: StatusCode, body: Bytes) {
    let Ok(resp) = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(())
    else {
        return;
    };
    if stream.send_response(resp).await.is_ok() && stream.send_data(body).await.is_ok() {
        let _ = stream.finish().await;
    }
}

/// h3-quinn's connection, plus one fact h3 cannot see: which request streams the client opened
/// before the handshake completed, i.e. in 0-RTT. A stream counts as early when the handshake
/// had not completed at the moment it was accepted (the same test as quinn's
/// `RecvStream::is_0rtt`, and never later than it, so a race errs on the side of 425).
struct EarlyAware {
    inner: h3_quinn::Connection,
    handshake: Option<Pin<Box<quinn::ZeroRttAccepted>>>,
    handshaking: Option<Count>,
    done: Arc<AtomicBool>,
    early: EarlyStreams,
}

impl EarlyAware {
    /// Whether the handshake has completed; the pending future registers this task's waker.
    fn confirmed(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(f) = self.handshake.as_mut() {
            if f.as_mut().poll(cx).is_ready() {
                self.handshake = None;
            }
        }
        if self.handshake.is_none() && self.handshaking.is_some() {
            self.handshaking = None;
            self.done.store(true, Ordering::Relaxed);
        }
        self.handshake.is_none()
    }
}

impl quic::Connection<Bytes> for EarlyAware {
    type RecvStream = h3_quinn::RecvStream;
    type OpenStreams = h3_quinn::OpenStreams;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::RecvStream, ConnectionErrorIncoming>> {
        self.confirmed(cx);
        quic::Connection::<Bytes>::poll_accept_recv(&mut self.inner, cx)
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, ConnectionErrorIncoming>> {
        // Checked before accepting: a stream accepted after this saw "not yet" is early.
        let confirmed = self.confirmed(cx);
        let stream = ready!(quic::Connection::<Bytes>::poll_accept_bidi(
            &mut self.inner,
            cx
        ))?;
        if !confirmed {
            use h3::quic::RecvStream;
            self.early
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(stream.recv_id());
        }
        Poll::Ready(Ok(stream))
    }

    fn opener(&self) -> Self::OpenStreams {
        quic::Connection::<Bytes>::opener(&self.inner)
    }
}

impl h3_datagram::quic_traits::DatagramConnectionExt<Bytes> for EarlyAware {
    type SendDatagramHandler = h3_quinn::datagram::SendDatagramHandler;
    type RecvDatagramHandler = h3_quinn::datagram::RecvDatagramHandler;

    fn send_datagram_handler(&self) -> Self::SendDatagramHandler {
        h3_datagram::quic_traits::DatagramConnectionExt::<Bytes>::send_datagram_handler(&self.inner)
    }

    fn recv_datagram_handler(&self) -> Self::RecvDatagramHandler {
        h3_datagram::quic_traits::DatagramConnectionExt::<Bytes>::recv_datagram_handler(&self.inner)
    }
}

impl quic::OpenStreams<Bytes> for EarlyAware {
    type BidiStream = h3_quinn::BidiStream<Bytes>;
    type SendStream = h3_quinn::SendStream<Bytes>;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        self.confirmed(cx);
        quic::OpenStreams::<Bytes>::poll_open_bidi(&mut self.inner, cx)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        // After a HelloRetryRequest (our key exchange preference asks for one when the client
        // sent no share for it) the client's transport parameters, and with them the stream
        // limits, arrive after quinn handed out the connection, and quinn wakes no one waiting
        // to open a stream when they do. Waiting on the handshake as well gets this task polled
        // again once it completes, when the budget is there.
        self.confirmed(cx);
        quic::OpenStreams::<Bytes>::poll_open_send(&mut self.inner, cx)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        quic::OpenStreams::<Bytes>::close(&mut self.inner, code, reason)
    }
}
