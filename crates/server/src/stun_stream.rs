//! STUN over TCP and TLS (RFC 8489 §6.2): frames are delimited by the STUN length field (or the
//! ChannelData length, padded to 4 bytes, once TURN is on).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use switchboard_stun::stream_frame_len;

use crate::tls::Acceptor as TlsAcceptor;
use switchboard_turn::{Arrival, FiveTuple, Output, Transport, Via, MAX_REPLY};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::outq::OutQueue;
use crate::stats::StunStats;
use crate::turn_io::Core;

/// Largest frame accepted: a STUN header plus the 16-bit length field's maximum.
const MAX_FRAME: usize = 20 + 65_535;
/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection of one listener shares.
pub(crate) struct StreamCtx {
    pub core: Arc<Core>,
    pub stats: Arc<StunStats>,
    pub limit: Arc<Semaphore>,
    pub idle: Duration,
    pub tls: Option<TlsAcceptor>,
    pub transport: Transport,
}

pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

/// Accepts connections on `listener` until shutdown. `other` is the RFC 5780 OTHER-ADDRESS for
/// connections to this listener.
pub(crate) fn spawn(
    listener: TcpListener,
    other: Option<SocketAddr>,
    ctx: Arc<StreamCtx>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) {
    let mut stop = shutdown.clone();
    let conn_shutdown = shutdown.clone();
    tasks.spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                _ = crate::stopped(&mut stop) => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = ctx.limit.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "connection limit reached; closing new connection");
                        ctx.stats.closed_fault.increment(1);
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let local = match tcp.local_addr() {
                        Ok(a) => a,
                        Err(_) => continue,
                    };
                    let ctx = ctx.clone();
                    let mut stop = conn_shutdown.clone();
                    ctx.stats.connections.increment(1);
                    conns.spawn(async move {
                        let _permit = permit;
                        let arrival = Arrival { peer, local, other, transport: ctx.transport };
                        tokio::select! {
                            _ = crate::stopped(&mut stop) => {}
                            _ = connection(tcp, arrival, &ctx) => {}
                        }
                    });
                }
            }
        }
        conns.shutdown().await;
    });
}

async fn connection(tcp: tokio::net::TcpStream, arrival: Arrival, ctx: &StreamCtx) {
    let result = match &ctx.tls {
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
        {
            Ok(Ok(tls)) => serve_stream(tls, arrival, ctx).await,
            Ok(Err(e)) => {
                ctx.stats.handshake_failures.increment(1);
                tracing::debug!(peer = %arrival.peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                ctx.stats.handshake_failures.increment(1);
                tracing::debug!(peer = %arrival.peer, "TLS handshake timed out");
                return;
            }
        },
        None => serve_tcp(tcp, arrival, ctx).await,
    };
    if let Err(reason) = result {
        ctx.stats.closed_fault.increment(1);
        tracing::debug!(peer = %arrival.peer, transport = ctx.transport.as_str(), reason, "closing STUN connection");
    }
}

/// When the connection last wrote (for the idle timeout, which counts both directions).
struct WriteClock {
    started: Instant,
    /// Milliseconds since `started` of the last write; 0 = never.
    last: AtomicU64,
}

impl WriteClock {
    fn new() -> Arc<Self> {
        Arc::new(WriteClock {
            started: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last.store(now.max(1), Ordering::Relaxed);
    }

    /// Whether nothing was written for `idle` (or ever).
    fn idle_for(&self, idle: Duration) -> bool {
        // The writer may store a newer time between the two reads: saturate.
        let last = self.last.load(Ordering::Relaxed);
        let since = (self.started.elapsed().as_millis() as u64).saturating_sub(last);
        last == 0 || since >= idle.as_millis() as u64
    }
}

/// Plain TCP: producers (replies, relayed data from any thread) write to the socket directly
/// while nothing is queued, so relaying to a TCP client costs no writer wake-up.
async fn serve_tcp(
    tcp: tokio::net::TcpStream,
    arrival: Arrival,
    ctx: &StreamCtx,
) -> Result<(), &'static str> {
    let (mut rd, wr) = tcp.into_split();
    let wr = Arc::new(wr);
    let clock = WriteClock::new();
    let direct = TcpDirect {
        wr: wr.clone(),
        clock: clock.clone(),
    };
    let queue = Arc::new(OutQueue::with_direct(Some(Box::new(direct))));
    let writer = tokio::spawn(write_tcp(wr, queue.clone(), clock.clone()));
    run(&mut rd, arrival, ctx, queue, writer, &clock).await
}

/// Any other stream (TLS): one writer task owns the write half.
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    arrival: Arrival,
    ctx: &StreamCtx,
) -> Result<(), &'static str> {
    let (mut rd, mut wr) = tokio::io::split(io);
    let clock = WriteClock::new();
    let queue = Arc::new(OutQueue::new());
    let writer_queue = queue.clone();
    let writer_clock = clock.clone();
    let writer = tokio::spawn(async move {
        let mut chunk = Vec::with_capacity(64 * 1024);
        loop {
            writer_queue.pop_into(&mut chunk, 64 * 1024).await;
            if chunk.is_empty() || wr.write_all(&chunk).await.is_err() {
                break;
            }
            writer_clock.touch();
            writer_queue.written();
        }
        writer_queue.close();
        let _ = wr.shutdown().await;
    });
    run(&mut rd, arrival, ctx, queue, writer, &clock).await
}

/// A TCP write half shared by the writer task and the producers' direct writes.
struct TcpDirect {
    wr: Arc<tokio::net::tcp::OwnedWriteHalf>,
    clock: Arc<WriteClock>,
}

impl crate::outq::Direct for TcpDirect {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let n = self.wr.try_write(buf)?;
        self.clock.touch();
        Ok(n)
    }
}

/// Writes what the queue holds until it closes; the socket's write side shuts down when the
/// last reference (this task's or the queue's direct sink) goes.
async fn write_tcp(
    wr: Arc<tokio::net::tcp::OwnedWriteHalf>,
    queue: Arc<OutQueue>,
    clock: Arc<WriteClock>,
) {
    let mut chunk = Vec::with_capacity(64 * 1024);
    'chunks: loop {
        queue.pop_into(&mut chunk, 64 * 1024).await;
        if chunk.is_empty() {
            break;
        }
        let mut off = 0;
        while off < chunk.len() {
            if wr.writable().await.is_err() {
                break 'chunks;
            }
            match wr.try_write(&chunk[off..]) {
                Ok(0) => break 'chunks,
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break 'chunks,
            }
        }
        clock.touch();
        queue.written();
    }
    queue.close();
}

/// Reads frames and answers them until EOF (Ok) or a fault (Err with the reason). Replies and
/// relayed data share one bounded writer queue, so they reach the client in order.
async fn run<R: AsyncRead + Unpin>(
    rd: &mut R,
    arrival: Arrival,
    ctx: &StreamCtx,
    queue: Arc<OutQueue>,
    writer: tokio::task::JoinHandle<()>,
    clock: &WriteClock,
) -> Result<(), &'static str> {
    let five = FiveTuple {
        client: arrival.peer,
        server: arrival.local,
        transport: arrival.transport,
    };
    ctx.core.register_stream(five, queue.clone());
    let result = read_loop(rd, &arrival, ctx, &queue, clock).await;
    // The allocation ends with the connection; then let the writer flush what is queued.
    ctx.core.stream_closed(&five);
    queue.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    result
}

async fn read_loop<R: AsyncRead + Unpin>(
    rd: &mut R,
    arrival: &Arrival,
    ctx: &StreamCtx,
    queue: &OutQueue,
    clock: &WriteClock,
) -> Result<(), &'static str> {
    let mut buf = vec![0u8; 4096];
    let mut filled = 0usize;
    let mut out = vec![0u8; MAX_REPLY];
    loop {
        // Answer every whole frame already buffered.
        let mut start = 0usize;
        loop {
            let len = match stream_frame_len(&buf[start..filled]) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(_) => {
                    ctx.stats.count_drop(switchboard_turn::DropReason::NotStun);
                    return Err("not a STUN or ChannelData frame");
                }
            };
            if len > MAX_FRAME {
                return Err("frame too large");
            }
            if filled - start < len {
                if buf.len() < len {
                    // Grow once to the announced size (bounded by MAX_FRAME).
                    buf.copy_within(start..filled, 0);
                    filled -= start;
                    start = 0;
                    buf.resize(len.max(4096), 0);
                }
                break;
            }
            ctx.stats.received.increment(1);
            let frame = &buf[start..start + len];
            start += len;
            match ctx.core.client_input(arrival, frame, &mut out) {
                Output::Reply {
                    via: Via::Same,
                    len: n,
                    error,
                    ..
                } => {
                    ctx.stats.count_reply(error);
                    if !queue.push(&out[..n]).await {
                        return Err("writer closed");
                    }
                }
                Output::Reply { .. } => {
                    return Err("reply from another address is impossible on a stream")
                }
                Output::Relay { relay, peer, data } => ctx.core.send_to_peer(relay, peer, data),
                Output::Drop(reason) => {
                    ctx.stats.count_drop(reason);
                    if reason.is_fault() && reason != switchboard_turn::DropReason::ChannelData {
                        return Err(reason.as_str());
                    }
                }
            }
        }
        if start > 0 {
            buf.copy_within(start..filled, 0);
            filled -= start;
        }
        if filled == buf.len() {
            return Err("receive buffer full");
        }
        match tokio::time::timeout(ctx.idle, rd.read(&mut buf[filled..])).await {
            Ok(Ok(0)) => {
                return if filled == 0 {
                    Ok(())
                } else {
                    Err("truncated frame at EOF")
                }
            }
            Ok(Ok(n)) => filled += n,
            Ok(Err(_)) => return Err("read failed"),
            Err(_) => {
                // Idle means idle both ways: relayed data flowing to the client keeps it open.
                if clock.idle_for(ctx.idle) {
                    return Err("idle timeout");
                }
            }
        }
    }
}
