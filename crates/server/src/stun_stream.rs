//! STUN over TCP and TLS (RFC 8489 §6.2): frames are delimited by the STUN length field (or the
//! ChannelData length, padded to 4 bytes, once TURN is on).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_stun::stream_frame_len;
use switchboard_turn::{Action, Arrival, BindingService, Transport, Via, MAX_REPLY};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::stats::StunStats;

/// Largest frame accepted: a STUN header plus the 16-bit length field's maximum.
const MAX_FRAME: usize = 20 + 65_535;
/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection of one listener shares.
pub(crate) struct StreamCtx {
    pub service: Arc<BindingService>,
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
            Ok(Ok(tls)) => serve(tls, arrival, ctx).await,
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
        None => serve(tcp, arrival, ctx).await,
    };
    if let Err(reason) = result {
        ctx.stats.closed_fault.increment(1);
        tracing::debug!(peer = %arrival.peer, transport = ctx.transport.as_str(), reason, "closing STUN connection");
    }
}

/// Reads frames and answers them until EOF (Ok) or a fault (Err with the reason).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    arrival: Arrival,
    ctx: &StreamCtx,
) -> Result<(), &'static str> {
    let mut buf = vec![0u8; 4096];
    let mut filled = 0usize;
    let mut out = [0u8; MAX_REPLY];
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
            match ctx.service.handle(&arrival, frame, &mut out) {
                Action::Reply {
                    via: Via::Same,
                    len: n,
                    error,
                    ..
                } => {
                    ctx.stats.count_reply(error);
                    io.write_all(&out[..n]).await.map_err(|_| "write failed")?;
                }
                Action::Reply { .. } => {
                    return Err("reply from another address is impossible on a stream")
                }
                Action::Drop(reason) => {
                    ctx.stats.count_drop(reason);
                    if reason.is_fault() {
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
        let read = tokio::time::timeout(ctx.idle, io.read(&mut buf[filled..])).await;
        match read {
            Ok(Ok(0)) => {
                let _ = io.shutdown().await;
                return if filled == 0 {
                    Ok(())
                } else {
                    Err("truncated frame at EOF")
                };
            }
            Ok(Ok(n)) => filled += n,
            Ok(Err(_)) => return Err("read failed"),
            Err(_) => return Err("idle timeout"),
        }
    }
}
