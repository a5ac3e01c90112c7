//! The UDP side of the one-port listener: one socket carrying QUIC (HTTP/3, WebTransport) and
//! STUN/TURN, told apart per datagram as RFC 9443 describes.
//!
//! quinn owns the receive loop: its endpoint is built over [`Demux`], an [`AsyncUdpSocket`]
//! that wraps quinn's own tokio socket and, in `poll_recv`, takes the STUN/TURN datagrams out of
//! each batch before quinn sees it. They are answered right there (the TURN core is sans-IO and
//! synchronous) through a second handle on the same socket ([`Sock`], a `dup` of its
//! descriptor), which also carries relayed data to UDP clients. The rest of the batch goes to
//! quinn unchanged: slots are reordered by swapping their buffer handles, not copied (only the
//! rare GRO batch that mixes both kinds has its QUIC segments moved together).
//!
//! Which datagram is which (RFC 9443 §2–3):
//! - first byte 0..=3 and the magic cookie at bytes 4..8: STUN. A QUIC packet never has a first
//!   byte below 0x40 here, because the endpoint does not offer to grease the QUIC bit (RFC 9287),
//!   so clients keep the fixed bit set;
//! - first byte 0x40..=0x7F from a 5-tuple that holds an allocation: TURN ChannelData (a QUIC
//!   short header has the same first bits, which is why the 5-tuple decides);
//! - everything else: QUIC.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use switchboard_stun::MAGIC_COOKIE;
use switchboard_turn::{Arrival, FiveTuple, Output, Transport, Via, MAX_REPLY};

use crate::net::Sock;
use crate::stats::StunStats;
use crate::turn::Core;

/// What the TURN side of the socket needs.
pub(crate) struct TurnSide {
    pub core: Arc<Core>,
    pub stats: Arc<StunStats>,
    /// The same socket, for replies and relayed data.
    pub sock: Arc<Sock>,
}

/// The socket quinn sees: every datagram but STUN/TURN.
pub(crate) struct Demux {
    inner: Arc<dyn AsyncUdpSocket>,
    turn: TurnSide,
    port: u16,
    local: SocketAddr,
    /// The reply buffer (quinn polls from one task at a time: never contended).
    out: Mutex<Vec<u8>>,
}

impl fmt::Debug for Demux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Demux").field("local", &self.local).finish()
    }
}

impl Demux {
    /// Wraps `udp` (quinn's tokio socket over it) and registers its `dup` with the TURN core
    /// for relayed data. Must run inside the tokio runtime.
    pub(crate) fn new(
        udp: std::net::UdpSocket,
        core: Arc<Core>,
        stats: Arc<StunStats>,
    ) -> io::Result<Arc<Demux>> {
        let local = udp.local_addr()?;
        let sock = Arc::new(crate::net::make_sock(udp.try_clone()?)?);
        core.register_udp(sock.clone());
        let inner = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, udp)?;
        Ok(Arc::new(Demux {
            inner,
            turn: TurnSide { core, stats, sock },
            port: local.port(),
            local,
            out: Mutex::new(vec![0u8; MAX_REPLY]),
        }))
    }

    /// Whether a datagram from `five` is STUN/TURN rather than QUIC.
    fn is_turn(&self, d: &[u8], five: &FiveTuple) -> bool {
        match d.first() {
            Some(0..=3) => d.get(4..8) == Some(&MAGIC_COOKIE.to_be_bytes()[..]),
            Some(0x40..=0x7F) => self.turn.core.has_udp_allocation(five),
            _ => false,
        }
    }

    /// Answers one STUN/TURN datagram.
    fn handle(&self, arrival: &Arrival, d: &[u8], src_ip: Option<std::net::IpAddr>) {
        let t = &self.turn;
        t.stats.received.increment(1);
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        match t.core.client_input(arrival, d, &mut out) {
            Output::Relay { relay, peer, data } => t.core.send_to_peer(relay, peer, data),
            Output::Reply {
                via: Via::Same,
                to,
                len,
                error,
            } => {
                t.stats.count_reply(error);
                // A reply that cannot go now is lost like any datagram; the client retransmits.
                let _ = t.sock.try_send(to, &out[..len], src_ip);
            }
            // No RFC 5780 alternates on the one port.
            Output::Reply { .. } => {}
            Output::Drop(reason) => t.stats.count_drop(reason),
        }
    }

    /// Takes the STUN/TURN datagrams out of the first `n` slots, answering them; returns how
    /// many slots are left for quinn (moved to the front).
    fn filter(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta], n: usize) -> usize {
        let mut kept = 0;
        for i in 0..n {
            let m = meta[i];
            let local = match m.dst_ip {
                Some(ip) => SocketAddr::new(ip, self.port),
                None => self.local,
            };
            let five = FiveTuple {
                client: m.addr,
                server: local,
                transport: Transport::Udp,
            };
            let arrival = Arrival {
                peer: m.addr,
                local,
                other: None,
                transport: Transport::Udp,
            };
            let stride = m.stride.max(1);
            let len = m.len.min(bufs[i].len());
            // Segments of a GRO batch come from one 5-tuple; compact the QUIC ones to the front.
            let buf = &mut bufs[i][..len];
            let mut quic_len = 0;
            let mut start = 0;
            while start < len {
                let end = (start + stride).min(len);
                if self.is_turn(&buf[start..end], &five) {
                    self.handle(&arrival, &buf[start..end], m.dst_ip);
                } else {
                    if quic_len != start {
                        buf.copy_within(start..end, quic_len);
                    }
                    quic_len += end - start;
                }
                start = end;
            }
            if quic_len == 0 {
                continue;
            }
            meta[i].len = quic_len;
            if kept != i {
                bufs.swap(kept, i);
                meta.swap(kept, i);
            }
            kept += 1;
        }
        kept
    }
}

impl AsyncUdpSocket for Demux {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        // Only STUN/TURN in a batch: receive again (which registers the waker once the socket
        // is drained), a bounded number of times before yielding to other tasks.
        for _ in 0..16 {
            let n = ready!(self.inner.poll_recv(cx, bufs, meta))?;
            let kept = self.filter(bufs, meta, n);
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
