//! The one-port listener (`--listen ADDR`, docs/one-port.md): every protocol on one port.
//!
//! On TCP each connection is told apart by its first bytes, read with `MSG_PEEK` (at most
//! [`PEEK`] bytes, so nothing is consumed and the socket goes to the existing code path as it
//! came): a TLS record header (`16 03 0x`) is a ClientHello, an RFC 8489 header (first byte
//! 0..=3 as RFC 7983 has it, the magic cookie at bytes 4..8) is STUN/TURN over TCP, an HTTP method token and a space
//! is plain HTTP (h1, h2c), anything else is closed at once. ChannelData cannot open a TCP
//! connection (a channel belongs to an allocation, which belongs to its connection), so first
//! bytes 0x40..0x7F are HTTP method letters here. After the TLS handshake (the server's
//! certificate, the same policy and reload as every TLS listener), ALPN decides: `h2` and
//! `http/1.1` go to the HTTP stack, `stun.turn` and `stun.nat-discovery` to TURN over TLS; a
//! client that offers no ALPN (browsers' `turns:`) is decided by its first decrypted bytes,
//! which are put back in front of the stream once ([`Prefixed`]).
//!
//! A connection has `--listen-timeout` to show what it is (first bytes, handshake, first bytes
//! inside TLS); slow, silent or unknown ones are closed and counted in
//! `switchboard_listen_unclassified_total{reason}`. Until then it holds a slot of its own cap
//! (`listener="listen"`), not one of the HTTP or STUN caps, so a flood of silent connections
//! cannot take the places of classified ones; once classified it takes a slot of the HTTP or
//! STUN group like a connection to their own listeners.
//!
//! On UDP ([`udp`]) each datagram is told apart as RFC 9443 describes: STUN/TURN, or QUIC for
//! HTTP/3 and WebTransport. With HTTP/3 off the port's UDP side is plain STUN/TURN (the UDP
//! workers of `turn::udp`).

pub(crate) mod udp;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use switchboard_stun::MAGIC_COOKIE;
use switchboard_turn::Arrival;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use crate::http::Conns;
use crate::net::limits::{ConnGuard, ConnLimiter};
use crate::tls::Acceptor as TlsAcceptor;
use crate::turn::stream::{serve_classified, Classified, StreamCtx};

/// ALPN protocols of the one-port listener's TLS, most preferred first (rustls picks the first
/// of these the client offers). STUN's come first: TURN clients such as coturn's offer
/// `http/1.1` too, browsers never offer `stun.turn`.
pub(crate) const ALPN: &[&[u8]] = &[b"stun.turn", b"stun.nat-discovery", b"h2", b"http/1.1"];

/// Bytes looked at to classify a connection (plain, or inside TLS without ALPN).
const PEEK: usize = 16;

/// Metric: connections classified, label `protocol` (`http`, `https`, `stun-tcp`, `stun-tls`).
const CLASSIFIED: &str = "switchboard_listen_connections_total";
/// Metric: connections closed unclassified, label `reason` (`timeout`, `unknown`, `eof`,
/// `tls`, `refused`).
const UNCLASSIFIED: &str = "switchboard_listen_unclassified_total";

/// What the first bytes of a connection say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A TLS record carrying a handshake message.
    Tls,
    /// An RFC 8489 STUN header with the magic cookie.
    Stun,
    /// An HTTP method token and a space (also h2c's `PRI * HTTP/2.0` preface).
    Http,
    /// Neither: closed.
    Unknown,
    /// Too few bytes to tell yet.
    More,
}

/// Whether `b`, whose first byte is 0..=3 (RFC 7983: STUN methods below 0x100, all the
/// registered ones), starts like a STUN message: the magic cookie at bytes 4..8 (RFC 8489 §6).
fn stun(b: &[u8]) -> Kind {
    match b.get(4..8) {
        None => Kind::More,
        Some(c) if c == MAGIC_COOKIE.to_be_bytes() => Kind::Stun,
        Some(_) => Kind::Unknown,
    }
}

/// Whether `b` starts with an HTTP method token (upper-case letters, at most 15) and a space.
fn http(b: &[u8]) -> Kind {
    for (i, &c) in b.iter().enumerate() {
        match c {
            b' ' if i > 0 => return Kind::Http,
            b'A'..=b'Z' if i < PEEK - 1 => {}
            _ => return Kind::Unknown,
        }
    }
    Kind::More
}

/// The first bytes of a plain connection.
fn classify(b: &[u8]) -> Kind {
    match b {
        [] => Kind::More,
        [0x16] | [0x16, 0x03] => Kind::More,
        // A handshake record, record-layer version 3.0 to 3.4 (ClientHellos say 3.1).
        [0x16, 0x03, v, ..] if *v <= 0x04 => Kind::Tls,
        [0x16, ..] => Kind::Unknown,
        [0..=3, ..] => stun(b),
        _ => http(b),
    }
}

/// The first decrypted bytes of a TLS connection that offered no ALPN.
fn classify_inner(b: &[u8]) -> Kind {
    match b {
        [] => Kind::More,
        [0..=3, ..] => stun(b),
        _ => http(b),
    }
}

/// Everything the one-port TCP listener hands connections to.
pub(crate) struct TcpMux {
    /// Plain HTTP.
    pub http: Conns,
    /// HTTP after TLS (with `Alt-Svc` naming the port when HTTP/3 is on).
    pub https: Conns,
    /// STUN/TURN over TCP and over TLS.
    pub stun_tcp: Arc<StreamCtx>,
    pub stun_tls: Arc<StreamCtx>,
    /// TLS with [`ALPN`].
    pub tls: TlsAcceptor,
    /// Caps of connections not classified yet.
    pub pending: Arc<ConnLimiter>,
    /// Time to classify a connection.
    pub timeout: Duration,
}

/// Why a connection was closed before it was classified.
#[derive(Clone, Copy, Debug)]
enum Unclassified {
    Timeout,
    Unknown,
    Eof,
    Tls,
}

impl Unclassified {
    fn as_str(self) -> &'static str {
        match self {
            Unclassified::Timeout => "timeout",
            Unclassified::Unknown => "unknown",
            Unclassified::Eof => "eof",
            Unclassified::Tls => "tls",
        }
    }
}

fn count_unclassified(reason: &'static str) {
    metrics::counter!(UNCLASSIFIED, "reason" => reason).increment(1);
}

/// Registers the metrics (so they read 0 before the first connection).
fn register_metrics() {
    for p in ["http", "https", "stun-tcp", "stun-tls"] {
        metrics::counter!(CLASSIFIED, "protocol" => p).increment(0);
    }
    for r in ["timeout", "unknown", "eof", "tls", "refused"] {
        metrics::counter!(UNCLASSIFIED, "reason" => r).increment(0);
    }
}

/// Accepts connections on `listener` until shutdown; each is classified on a task of its own.
pub(crate) fn spawn(
    listener: TcpListener,
    addr: SocketAddr,
    mux: Arc<TcpMux>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) {
    register_metrics();
    let mut stop = shutdown.clone();
    let conn_stop = shutdown.clone();
    tasks.spawn(async move {
        let mut backoff = crate::net::AcceptBackoff::default();
        loop {
            let accepted = tokio::select! {
                _ = crate::stopped(&mut stop) => return,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => {
                    backoff.reset();
                    a
                }
                Err(e) => {
                    backoff.failed("listen", addr, &e).await;
                    continue;
                }
            };
            let pending = match mux.pending.try_acquire(peer.ip()) {
                Ok(g) => g,
                Err(why) => {
                    tracing::debug!(%peer, reason = why.as_str(), "connection refused by a cap");
                    count_unclassified("refused");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let mux = mux.clone();
            let stop = conn_stop.clone();
            tokio::spawn(connection(tcp, peer, mux, pending, stop));
        }
    });
}

/// A connection once classified.
enum Conn {
    Http(TcpStream),
    Stun(TcpStream),
    Https(Prefixed<TlsStream<TcpStream>>),
    StunTls(Prefixed<TlsStream<TcpStream>>),
}

/// Classifies one connection (until shutdown at most) and hands it over; the code it goes to
/// sees the shutdown signal itself (HTTP lets requests in flight finish).
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    mux: Arc<TcpMux>,
    pending: ConnGuard,
    stop: watch::Receiver<bool>,
) {
    let Ok(local) = tcp.local_addr() else { return };
    let deadline = Instant::now() + mux.timeout;
    let mut stopping = stop.clone();
    let conn = tokio::select! {
        _ = crate::stopped(&mut stopping) => return,
        c = Box::pin(classify_conn(tcp, peer, &mux, deadline)) => c,
    };
    // Counted where it failed, while the socket was still open (a client that sees the close
    // finds the metric already counted).
    let Ok(conn) = conn else { return };
    match conn {
        Conn::Http(tcp) => {
            let Some(guard) = take_slot(mux.http.limiter(), peer, pending) else {
                return;
            };
            classified("http");
            mux.http.serve(tcp, guard, peer, Some(local)).await
        }
        Conn::Https(io) => {
            let Some(guard) = take_slot(mux.https.limiter(), peer, pending) else {
                return;
            };
            classified("https");
            mux.https.serve(io, guard, peer, Some(local)).await
        }
        Conn::Stun(tcp) => {
            let Some(guard) = take_slot(&mux.stun_tcp.limit, peer, pending) else {
                return;
            };
            classified("stun-tcp");
            let arrival = arrival(peer, local, &mux.stun_tcp);
            let ctx = mux.stun_tcp.clone();
            serve_classified::<TcpStream>(Classified::Tcp(tcp), arrival, ctx, guard, stop).await
        }
        Conn::StunTls(io) => {
            let Some(guard) = take_slot(&mux.stun_tls.limit, peer, pending) else {
                return;
            };
            classified("stun-tls");
            let arrival = arrival(peer, local, &mux.stun_tls);
            let ctx = mux.stun_tls.clone();
            serve_classified(Classified::Stream(io), arrival, ctx, guard, stop).await
        }
    }
}

/// Reads what a connection is, by `deadline`.
async fn classify_conn(
    tcp: TcpStream,
    peer: SocketAddr,
    mux: &TcpMux,
    deadline: Instant,
) -> Result<Conn, Unclassified> {
    let kind = match tokio::time::timeout_at(deadline, peek_kind(&tcp)).await {
        Ok(Ok(k)) => k,
        Ok(Err(why)) => return Err(unclassified(peer, why)),
        Err(_) => return Err(unclassified(peer, Unclassified::Timeout)),
    };
    match kind {
        Kind::Http => Ok(Conn::Http(tcp)),
        Kind::Stun => Ok(Conn::Stun(tcp)),
        Kind::Tls => tls(tcp, peer, mux, deadline).await,
        Kind::Unknown | Kind::More => Err(unclassified(peer, Unclassified::Unknown)),
    }
}

fn arrival(peer: SocketAddr, local: SocketAddr, ctx: &StreamCtx) -> Arrival {
    Arrival {
        peer,
        local,
        other: None,
        transport: ctx.transport,
    }
}

fn classified(protocol: &'static str) {
    metrics::counter!(CLASSIFIED, "protocol" => protocol).increment(1);
}

/// Counts and logs a connection that is about to be closed unclassified; returns `why`.
fn unclassified(peer: SocketAddr, why: Unclassified) -> Unclassified {
    count_unclassified(why.as_str());
    tracing::debug!(%peer, reason = why.as_str(), "one-port connection closed unclassified");
    why
}

/// Trades the pending slot for one of the group the connection belongs to.
fn take_slot(
    limiter: &Arc<ConnLimiter>,
    peer: SocketAddr,
    pending: ConnGuard,
) -> Option<ConnGuard> {
    let slot = limiter.try_acquire(peer.ip());
    drop(pending);
    match slot {
        Ok(g) => Some(g),
        Err(why) => {
            tracing::debug!(%peer, reason = why.as_str(), "classified connection refused by a cap");
            count_unclassified("refused");
            None
        }
    }
}

/// Peeks at the first bytes until they say what the connection is. Bytes stay in the kernel's
/// buffer; when too few have arrived to tell, waits a little (5 ms doubling to 100 ms) and
/// looks again (the caller bounds the whole).
async fn peek_kind(tcp: &TcpStream) -> Result<Kind, Unclassified> {
    let mut buf = [0u8; PEEK];
    let mut pause = Duration::from_millis(5);
    loop {
        let n = tcp.peek(&mut buf).await.map_err(|_| Unclassified::Eof)?;
        if n == 0 {
            return Err(Unclassified::Eof);
        }
        match classify(&buf[..n]) {
            Kind::More => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Kind::Unknown => return Err(Unclassified::Unknown),
            k => return Ok(k),
        }
    }
}

/// A TLS connection: the handshake, then ALPN or the first decrypted bytes.
async fn tls(
    tcp: TcpStream,
    peer: SocketAddr,
    mux: &TcpMux,
    deadline: Instant,
) -> Result<Conn, Unclassified> {
    let failed = || {
        metrics::counter!("switchboard_tls_handshake_failures_total", "listener" => "listen")
            .increment(1);
    };
    let failed_open = |e: &std::io::Error| {
        failed();
        tracing::debug!(%peer, error = %e, "TLS handshake failed");
    };
    let mut stream = match tokio::time::timeout_at(deadline, mux.tls.accept(tcp, failed_open)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return Err(unclassified(peer, Unclassified::Tls)),
        Err(_) => {
            failed();
            return Err(unclassified(peer, Unclassified::Timeout));
        }
    };
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let mut head = Head::default();
    let stun = match alpn.as_deref() {
        Some(b"h2") | Some(b"http/1.1") => false,
        // stun.turn or stun.nat-discovery: nothing else is offered.
        Some(_) => true,
        None => loop {
            let read = stream.read(&mut head.buf[head.len..]);
            match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(unclassified(peer, Unclassified::Eof)),
                Ok(Ok(n)) => head.len += n,
                Err(_) => return Err(unclassified(peer, Unclassified::Timeout)),
            }
            match classify_inner(&head.buf[..head.len]) {
                Kind::More => continue,
                Kind::Stun => break true,
                Kind::Http => break false,
                _ => return Err(unclassified(peer, Unclassified::Unknown)),
            }
        },
    };
    let io = Prefixed { head, io: stream };
    Ok(if stun {
        Conn::StunTls(io)
    } else {
        Conn::Https(io)
    })
}

/// Bytes read from a stream to classify it, to be read again.
#[derive(Default)]
struct Head {
    buf: [u8; PEEK],
    pos: usize,
    len: usize,
}

/// A stream whose first bytes were read to classify it: they are served first, once; then
/// reads and writes go straight to the stream.
pub(crate) struct Prefixed<S> {
    head: Head,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let h = &mut self.head;
        if h.pos < h.len {
            let n = (h.len - h.pos).min(buf.remaining());
            buf.put_slice(&h.buf[h.pos..h.pos + n]);
            h.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

forward_async_write!(S, Prefixed<S>, io);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes() {
        assert_eq!(classify(b""), Kind::More);
        assert_eq!(classify(&[0x16]), Kind::More);
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02, 0x00]), Kind::Tls);
        assert_eq!(classify(&[0x16, 0x03, 0x09]), Kind::Unknown);
        assert_eq!(classify(&[0x16, 0x02]), Kind::Unknown);
        let mut binding = [0u8; 20];
        binding[1] = 1;
        binding[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert_eq!(classify(&binding), Kind::Stun);
        assert_eq!(classify(&binding[..7]), Kind::More);
        assert_eq!(classify(&[0, 1, 0, 0, 1, 2, 3, 4]), Kind::Unknown);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Kind::Http);
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Kind::Http);
        assert_eq!(classify(b"OPTIONS * HTTP/1"), Kind::Http);
        assert_eq!(classify(b"GE"), Kind::More);
        assert_eq!(classify(b"get / "), Kind::Unknown);
        assert_eq!(classify(b" GET"), Kind::Unknown);
        assert_eq!(classify(b"AAAAAAAAAAAAAAAA"), Kind::Unknown);
        assert_eq!(classify(&[0x80, 0, 0]), Kind::Unknown);
        assert_eq!(classify(b"\xff\xfe"), Kind::Unknown);
        // ChannelData cannot open a connection: 0x40 is not a method letter.
        assert_eq!(classify(&[0x40, 0x00, 0x00, 0x04]), Kind::Unknown);
    }

    #[test]
    fn first_bytes_inside_tls() {
        let mut binding = [0u8; 20];
        binding[1] = 3;
        binding[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert_eq!(classify_inner(&binding), Kind::Stun);
        assert_eq!(classify_inner(&binding[..3]), Kind::More);
        assert_eq!(classify_inner(b"GET /v1/ws HTTP/1.1"), Kind::Http);
        assert_eq!(classify_inner(&[0x16, 0x03, 0x01]), Kind::Unknown);
    }

    #[tokio::test]
    async fn prefixed_replays_the_head_once() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut head = Head::default();
        head.buf[..3].copy_from_slice(b"abc");
        head.len = 3;
        let mut p = Prefixed { head, io: b };
        tokio::io::AsyncWriteExt::write_all(&mut a, b"def")
            .await
            .unwrap();
        drop(a);
        let mut out = Vec::new();
        p.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"abcdef");
    }
}
