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
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::core::Core;
use super::outq::OutQueue;
use crate::stats::StunStats;

/// Largest frame accepted: a STUN header plus the 16-bit length field's maximum.
const MAX_FRAME: usize = 20 + 65_535;
/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection of one listener shares.
pub(crate) struct StreamCtx {
    pub core: Arc<Core>,
    pub stats: Arc<StunStats>,
    pub limit: Arc<crate::net::limits::ConnLimiter>,
    pub idle: Duration,
    pub tls: Option<TlsAcceptor>,
    pub transport: Transport,
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
        let mut backoff = crate::net::AcceptBackoff::default();
        let name = if ctx.tls.is_some() { "stun-tls" } else { "stun-tcp" };
        let local_addr = listener.local_addr().ok();
        loop {
            tokio::select! {
                _ = crate::stopped(&mut stop) => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(x) => {
                            backoff.reset();
                            x
                        }
                        Err(e) => {
                            let at = local_addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                            backoff.failed(name, at, &e).await;
                            continue;
                        }
                    };
                    let permit = match ctx.limit.try_acquire(peer.ip()) {
                        Ok(p) => p,
                        Err(why) => {
                            tracing::debug!(%peer, reason = why.as_str(), "STUN connection refused by a cap");
                            ctx.stats.closed_fault.increment(1);
                            continue;
                        }
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
        // Boxed: the TLS state is large and would otherwise sit in every plain TCP connection's
        // task too.
        Some(acceptor) => Box::pin(serve_tls(tcp, acceptor, arrival, ctx)).await,
        None => serve_tcp(tcp, arrival, ctx).await,
    };
    if let Err(reason) = result {
        ctx.stats.closed_fault.increment(1);
        tracing::debug!(peer = %arrival.peer, transport = ctx.transport.as_str(), reason, "closing STUN connection");
    }
}

/// Serves a connection the one-port listener (`crate::mux`) classified as STUN/TURN: plain TCP
/// (`tcp`, its first bytes still unread in the kernel) or a finished TLS stream (`tls`, with the
/// bytes read to classify it put back in front). Holds `permit` until the connection ends.
pub(crate) async fn serve_classified<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    conn: Classified<S>,
    arrival: Arrival,
    ctx: Arc<StreamCtx>,
    permit: crate::net::limits::ConnGuard,
    mut stop: watch::Receiver<bool>,
) {
    let _permit = permit;
    ctx.stats.connections.increment(1);
    let served = async {
        let result = match conn {
            Classified::Tcp(tcp) => serve_tcp(tcp, arrival, &ctx).await,
            Classified::Stream(io) => Box::pin(serve_stream(io, arrival, &ctx)).await,
        };
        if let Err(reason) = result {
            ctx.stats.closed_fault.increment(1);
            tracing::debug!(peer = %arrival.peer, transport = ctx.transport.as_str(), reason, "closing STUN connection");
        }
    };
    tokio::select! {
        _ = crate::stopped(&mut stop) => {}
        _ = served => {}
    }
}

/// A connection handed to [`serve_classified`].
pub(crate) enum Classified<S> {
    /// Plain TCP: relayed data is written to the socket directly.
    Tcp(tokio::net::TcpStream),
    /// Anything else (TLS).
    Stream(S),
}

/// TLS: the handshake (bounded by [`HANDSHAKE_TIMEOUT`]), then frames as on any stream.
async fn serve_tls(
    tcp: tokio::net::TcpStream,
    acceptor: &TlsAcceptor,
    arrival: Arrival,
    ctx: &StreamCtx,
) -> Result<(), &'static str> {
    let failed = |e: &std::io::Error| {
        ctx.stats.handshake_failures.increment(1);
        tracing::debug!(peer = %arrival.peer, error = %e, "TLS handshake failed");
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp, failed)).await {
        Ok(Ok(tls)) => serve_stream(tls, arrival, ctx).await,
        Ok(Err(_)) => Ok(()),
        Err(_) => {
            ctx.stats.handshake_failures.increment(1);
            tracing::debug!(peer = %arrival.peer, "TLS handshake timed out");
            Ok(())
        }
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
    let (rd, wr) = tcp.into_split();
    let mut rd = TcpReady(rd);
    let clock = WriteClock::new();
    let writer_clock = clock.clone();
    let writer = Writer::Pending(Box::new(move || {
        let wr = Arc::new(wr);
        let direct = TcpDirect {
            wr: wr.clone(),
            clock: writer_clock.clone(),
        };
        let queue = Arc::new(OutQueue::with_direct(Some(Box::new(direct))));
        let task = tokio::spawn(write_tcp(wr, queue.clone(), writer_clock));
        (queue, task)
    }));
    run(&mut rd, arrival, ctx, writer, &clock).await
}

/// Any other stream (TLS): one writer task owns the write half.
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    arrival: Arrival,
    ctx: &StreamCtx,
) -> Result<(), &'static str> {
    let (rd, wr) = tokio::io::split(io);
    let mut rd = NoReady(rd);
    let clock = WriteClock::new();
    let writer_clock = clock.clone();
    let writer = Writer::Pending(Box::new(move || {
        let queue = Arc::new(OutQueue::new());
        let task = tokio::spawn(write_frames(wr, queue.clone(), writer_clock));
        (queue, task)
    }));
    run(&mut rd, arrival, ctx, writer, &clock).await
}

/// Writes what the queue holds to a TLS stream, each frame with writes of its own, so a frame
/// of up to 16 KiB is exactly one TLS record; then flushes, so no record is left behind in the
/// TLS buffer when the socket was full.
///
/// TLS is a byte stream and RFC 8489 §6.2 frames STUN over it by the length fields, but clients
/// exist that take one record for one message: coturn's `turnutils_uclient` reads one record
/// per `SSL_read` and counts it as one message, so a record carrying three echoes counted as one
/// and two lost (40 % "loss" at 1,000 echoes a second, coturn's own server 12–35 %). Writing the
/// batch as one buffer also cut frames across the 16 KiB record boundary.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut wr: W,
    queue: Arc<OutQueue>,
    clock: Arc<WriteClock>,
) {
    // Grown on demand (idle connections hold no buffers); may carry the start of a frame whose
    // rest did not fit in the previous batch.
    let mut chunk = Vec::new();
    'batches: while queue.pop_append(&mut chunk, 64 * 1024).await {
        let mut off = 0;
        while off < chunk.len() {
            let rest = &chunk[off..];
            let len = match stream_frame_len(rest) {
                Ok(Some(len)) if len <= rest.len() => len,
                // The rest of this frame is still queued.
                Ok(_) => break,
                // Never: the queue holds only the server's own STUN and ChannelData frames.
                // Written as they are rather than held back.
                Err(_) => rest.len(),
            };
            if wr.write_all(&rest[..len]).await.is_err() {
                break 'batches;
            }
            off += len;
        }
        chunk.drain(..off);
        if wr.flush().await.is_err() {
            break;
        }
        clock.touch();
        queue.written();
    }
    queue.close();
    let _ = wr.shutdown().await;
}

/// A connection's writer: its queue and task start with the first frame the client sends, so a
/// connection that never sends holds neither.
enum Writer {
    Pending(Box<dyn FnOnce() -> (Arc<OutQueue>, tokio::task::JoinHandle<()>) + Send>),
    Started(Arc<OutQueue>, tokio::task::JoinHandle<()>),
    Taken,
}

impl Writer {
    /// The queue, starting the writer (and registering the stream for relayed data) if needed.
    fn queue(&mut self, ctx: &StreamCtx, five: FiveTuple) -> &Arc<OutQueue> {
        if let Writer::Pending(_) = self {
            if let Writer::Pending(start) = std::mem::replace(self, Writer::Taken) {
                let (queue, task) = start();
                ctx.core.register_stream(five, queue.clone());
                *self = Writer::Started(queue, task);
            }
        }
        match self {
            Writer::Started(queue, _) => queue,
            // Unreachable: Pending became Started above and nothing else makes Taken.
            _ => unreachable!("writer started above"),
        }
    }
}

/// A TCP write half shared by the writer task and the producers' direct writes.
struct TcpDirect {
    wr: Arc<tokio::net::tcp::OwnedWriteHalf>,
    clock: Arc<WriteClock>,
}

impl super::outq::Direct for TcpDirect {
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
    // Grown on demand (idle connections hold no buffers).
    let mut chunk = Vec::new();
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

/// A read half that can wait for input without a buffer, so a connection holds no receive
/// buffer until its client sends something.
trait FrameSource: AsyncRead + Unpin + Send {
    /// Waits until a read would find data (or EOF, or an error); may return at once.
    fn ready(&mut self) -> impl std::future::Future<Output = io::Result<()>> + Send;
}

/// Plain TCP: waits for readability.
struct TcpReady(tokio::net::tcp::OwnedReadHalf);

/// Anything else (TLS, which buffers inside rustls anyway): ready at once.
struct NoReady<R>(R);

impl AsyncRead for TcpReady {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl FrameSource for TcpReady {
    async fn ready(&mut self) -> io::Result<()> {
        // A peek, not `readable()`: a newly accepted socket reads as ready before anything has
        // arrived, so every idle connection took (and held) a receive buffer at once.
        let mut byte = [0u8; 1];
        self.0.peek(&mut byte).await.map(|_| ())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for NoReady<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<R: AsyncRead + Unpin + Send> FrameSource for NoReady<R> {
    async fn ready(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How long one frame may take to arrive whole once its first byte has (the first frame: from
/// the connection's start). The idle timeout alone restarted on every byte, so one byte every
/// few seconds held a connection forever.
pub(crate) const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection quiet this long between frames gives its buffers back.
const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// A wait for input ran out: an error when the frame under way is past its deadline or the
/// connection has been idle both ways for the idle timeout; `Ok` to keep waiting.
fn ready_timed_out(
    frame_started: Option<tokio::time::Instant>,
    clock: &WriteClock,
    ctx: &StreamCtx,
) -> Result<(), &'static str> {
    if frame_started.is_some_and(|t| t.elapsed() >= FRAME_TIMEOUT) {
        return Err("frame timeout");
    }
    // Idle means idle both ways: relayed data flowing to the client keeps it open.
    if clock.idle_for(ctx.idle) {
        return Err("idle timeout");
    }
    Ok(())
}

/// The receive buffer of a connection that has sent something (grown once to the size a
/// larger frame announces, bounded by [`MAX_FRAME`], and given back when it drains).
const READ_CHUNK: usize = 4096;

/// Reads frames and answers them until EOF (Ok) or a fault (Err with the reason). Replies and
/// relayed data share one bounded writer queue, so they reach the client in order.
async fn run<R: FrameSource>(
    rd: &mut R,
    arrival: Arrival,
    ctx: &StreamCtx,
    mut writer: Writer,
    clock: &WriteClock,
) -> Result<(), &'static str> {
    let five = FiveTuple {
        client: arrival.peer,
        server: arrival.local,
        transport: arrival.transport,
    };
    let result = read_loop(rd, &arrival, ctx, &mut writer, five, clock).await;
    if let Writer::Started(queue, task) = writer {
        // The allocation ends with the connection; then let the writer flush what is queued.
        ctx.core.stream_closed(&five);
        queue.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    result
}

async fn read_loop<R: FrameSource>(
    rd: &mut R,
    arrival: &Arrival,
    ctx: &StreamCtx,
    writer: &mut Writer,
    five: FiveTuple,
    clock: &WriteClock,
) -> Result<(), &'static str> {
    // Both buffers are allocated once the client sends something.
    let mut buf: Vec<u8> = Vec::new();
    let mut filled = 0usize;
    let mut out: Vec<u8> = Vec::new();
    // When the frame being received started; the first one starts with the connection.
    let mut frame_started = Some(tokio::time::Instant::now());
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
                    buf.resize(len.max(READ_CHUNK), 0);
                }
                break;
            }
            ctx.stats.received.increment(1);
            let frame = &buf[start..start + len];
            start += len;
            if out.is_empty() {
                out.resize(MAX_REPLY, 0);
            }
            let queue = writer.queue(ctx, five);
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
            // The next frame starts now if part of it is here, else with its first byte.
            frame_started = (filled > 0).then(tokio::time::Instant::now);
        }
        if filled == 0 && buf.len() > READ_CHUNK {
            // Drained after a large frame: give the memory back.
            buf = Vec::new();
        }
        if filled == buf.len() && !buf.is_empty() {
            return Err("receive buffer full");
        }
        // The frame under way must be complete by its deadline; between frames, the idle timeout.
        let wait = match frame_started {
            Some(t) => (t + FRAME_TIMEOUT)
                .saturating_duration_since(tokio::time::Instant::now())
                .min(ctx.idle),
            None => ctx.idle,
        };
        if filled == 0 {
            // Between frames: wait for input without a buffer; a connection quiet for
            // IDLE_RELEASE gives its buffers back.
            let mut ready = tokio::time::timeout(wait.min(IDLE_RELEASE), rd.ready()).await;
            if ready.is_err() && !buf.is_empty() {
                buf = Vec::new();
                out = Vec::new();
                let rest = wait.saturating_sub(IDLE_RELEASE);
                ready = tokio::time::timeout(rest, rd.ready()).await;
            }
            match ready {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("read failed"),
                Err(_) => {
                    ready_timed_out(frame_started, clock, ctx)?;
                    continue;
                }
            }
        }
        if buf.is_empty() {
            buf.resize(READ_CHUNK, 0);
        }
        match tokio::time::timeout(wait, rd.read(&mut buf[filled..])).await {
            Ok(Ok(0)) => {
                return if filled == 0 {
                    Ok(())
                } else {
                    Err("truncated frame at EOF")
                }
            }
            Ok(Ok(n)) => {
                if filled == 0 && frame_started.is_none() {
                    frame_started = Some(tokio::time::Instant::now());
                }
                filled += n;
            }
            Ok(Err(_)) => return Err("read failed"),
            Err(_) => {
                ready_timed_out(frame_started, clock, ctx)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::Mutex;
    use std::task::{Context, Poll};

    /// Records each write call; takes at most `take` bytes per call.
    struct Calls {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        flushes: Arc<AtomicU64>,
        take: usize,
    }

    impl AsyncWrite for Calls {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.take);
            self.writes.lock().unwrap().push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes.fetch_add(1, Ordering::Relaxed);
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A ChannelData frame of `len` payload bytes (padded, as on streams) numbered `n`.
    fn channel_data(n: u16, len: u16) -> Vec<u8> {
        let mut f = vec![0x40, 0x00];
        f.extend(len.to_be_bytes());
        f.extend(std::iter::repeat_n((n % 251) as u8, usize::from(len)));
        f.resize(f.len().next_multiple_of(4), 0);
        f
    }

    #[tokio::test]
    async fn each_frame_is_written_on_its_own_and_flushed() {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let flushes = Arc::new(AtomicU64::new(0));
        let sink = Calls {
            writes: writes.clone(),
            flushes: flushes.clone(),
            take: usize::MAX,
        };
        let queue = Arc::new(OutQueue::new());
        // More than one 64 KiB batch, so a frame is cut at the batch's end and carried over;
        // a STUN message and a large ChannelData frame among them.
        let mut frames: Vec<Vec<u8>> = (0..400).map(|n| channel_data(n, 170)).collect();
        let mut stun = vec![0x01, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
        stun.extend([7u8; 12 + 8]);
        frames.insert(10, stun);
        frames.insert(200, channel_data(9999, 20_001));
        for f in &frames {
            assert!(queue.try_push(f));
        }
        queue.close();
        write_frames(sink, queue, WriteClock::new()).await;
        assert_eq!(
            *writes.lock().unwrap(),
            frames,
            "one write per frame, in order"
        );
        assert!(
            flushes.load(Ordering::Relaxed) >= 2,
            "flushed after each batch"
        );
    }

    #[tokio::test]
    async fn a_frame_the_stream_takes_in_parts_is_finished_before_the_next() {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let sink = Calls {
            writes: writes.clone(),
            flushes: Arc::new(AtomicU64::new(0)),
            take: 100,
        };
        let queue = Arc::new(OutQueue::new());
        let frames: Vec<Vec<u8>> = (0..3).map(|n| channel_data(n, 170)).collect();
        for f in &frames {
            assert!(queue.try_push(f));
        }
        queue.close();
        write_frames(sink, queue, WriteClock::new()).await;
        let got = writes.lock().unwrap().concat();
        assert_eq!(got, frames.concat());
        // 176-byte frames in 100-byte writes: 100 + 76 per frame, never 24 + 76 across two.
        let sizes: Vec<usize> = writes.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, [100, 76, 100, 76, 100, 76]);
    }
}
