//! HTTP/3: QUIC (quinn) on the UDP side of every HTTPS port, h3 on top, and each request fed to
//! the same axum [`Router`] the TCP listeners serve, so every endpoint (health, metrics, SSE,
//! long-poll, publish, server API) answers over HTTP/3 too. WebSocket stays on HTTP/1.1 and h2.
//!
//! WebTransport: an extended CONNECT with `:protocol = webtransport` to `/v1/wt` turns the
//! connection into one WebTransport session (h3-webtransport). Each bidirectional stream the
//! client opens on it is a hub connection ([`crate::hub::webtransport`]); ordinary requests on
//! the same connection keep going to the router.
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
use h3_webtransport::server::{AcceptedBi, WebTransportSession};
use http_body_util::BodyExt;
use switchboard_hub::codes::error as code;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tower::Service;

use crate::config::Http3Settings;
use crate::hub;
use crate::quic_tls::PreferringConfig;
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

/// Binds the TCP listener and the UDP socket of one HTTPS address on the same port. With port
/// 0 the TCP port is picked first and UDP takes the same number (retried if it is taken).
pub(crate) fn bind_pair(addr: SocketAddr) -> std::io::Result<(TcpListener, std::net::UdpSocket)> {
    let mut last = None;
    for _ in 0..if addr.port() == 0 { 20 } else { 1 } {
        let tcp = crate::stun_stream::bind(addr)?;
        let port = tcp.local_addr()?.port();
        match bind_udp(SocketAddr::new(addr.ip(), port)) {
            Ok(udp) => return Ok((tcp, udp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port")))
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    // Room for bursts of Initial packets; the kernel caps it at rmem_max.
    let _ = sock.set_recv_buffer_size(2 << 20);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

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

/// Serves HTTP/3 on `udp` until shutdown.
pub(crate) fn spawn(
    udp: std::net::UdpSocket,
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
    let idle = quinn::IdleTimeout::try_from(Duration::from_secs(settings.idle_timeout.max(1)))
        .map_err(|e| TlsError::Config(format!("[http3] idle_timeout: {e}")))?;
    transport
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(settings.max_bidi_streams))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(settings.max_uni_streams))
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(
            (settings.keep_alive > 0).then(|| Duration::from_secs(settings.keep_alive)),
        )
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_BUFFER);
    server
        .transport_config(Arc::new(transport))
        .migration(true)
        .max_incoming(settings.max_connections.clamp(1, 1 << 16));
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        udp,
        Arc::new(quinn::TokioRuntime),
    )
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
    if let Some((req, stream)) = upgrade {
        let session = match WebTransportSession::accept(req, stream, h3c).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "WebTransport session not accepted");
                return;
            }
        };
        metrics::counter!("switchboard_webtransport_sessions_total").increment(1);
        tracing::trace!(%peer, "WebTransport session");
        webtransport(&session, &conn, router, hub, early, &mut requests, stop).await;
        // Dropping the session closes the connection: requests in flight finish first.
        let drain = async { while requests.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
        return;
    }
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
type Session = WebTransportSession<EarlyAware, Bytes>;
/// Where a WebTransport CONNECT goes; closed once the connection has its session.
type WtConnect = mpsc::Sender<(Request, Stream)>;

/// Runs the WebTransport session that took over the connection: client-opened bidirectional
/// streams become hub connections, requests go to the router, until the connection ends or the
/// server stops.
async fn webtransport(
    session: &Session,
    conn: &quinn::Connection,
    router: Router,
    hub: hub::Ctx,
    early: EarlyStreams,
    requests: &mut JoinSet<()>,
    mut stop: watch::Receiver<bool>,
) {
    let id = session.session_id();
    let peer = conn.remote_address();
    // `accept_bi` is not cancel-safe (it reads the first frame of the stream), so it runs in
    // one future polled across the loop's iterations, never dropped mid-way.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let accept = async move {
        loop {
            match session.accept_bi().await {
                Ok(Some(accepted)) => {
                    if tx.send(accepted).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "WebTransport session ended");
                    return;
                }
            }
        }
    };
    tokio::pin!(accept);
    let mut streams = JoinSet::new();
    let stopping = loop {
        tokio::select! {
            _ = crate::stopped(&mut stop) => break true,
            () = &mut accept => break false,
            Some(accepted) = rx.recv() => match accepted {
                AcceptedBi::Request(req, stream) => {
                    let (closed, _) = mpsc::channel(1);
                    let peer = conn.remote_address();
                    requests.spawn(serve(req, stream, router.clone(), peer, early.clone(), closed));
                }
                AcceptedBi::BidiStream(sid, mut stream) => {
                    if sid == id {
                        streams.spawn(hub::webtransport::serve(
                            hub.clone(),
                            stream,
                            conn.remote_address(),
                        ));
                    } else {
                        // Only one session per connection: a stream for another is refused.
                        use h3::quic::{RecvStream, SendStream};
                        stream.stop_sending(WT_SESSION_GONE);
                        stream.reset(WT_SESSION_GONE);
                    }
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
        }
    };
    // On shutdown every hub connection writes its disconnect (3001) and finishes its stream.
    let drain = async { while streams.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    if stopping {
        // Closing the connection discards stream data not yet sent or acknowledged: give the
        // final frames a few round trips (or until the client closes).
        let linger = (conn.rtt() * 4 + Duration::from_millis(50)).min(Duration::from_secs(1));
        let _ = tokio::time::timeout(linger, conn.closed()).await;
    }
}

/// WT_SESSION_GONE (draft-ietf-webtrans-http3): the stream names no session of ours.
const WT_SESSION_GONE: u64 = 0x170d_7b68;

/// Resolves one request stream and serves it.
async fn request(
    resolver: Resolver,
    router: Router,
    peer: SocketAddr,
    early: EarlyStreams,
    wt: WtConnect,
) {
    let (req, stream) = match resolver.resolve_request().await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "bad HTTP/3 request");
            return;
        }
    };
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
