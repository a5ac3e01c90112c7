//! STUN over UDP: batched receive (recvmmsg/GRO through quinn-udp), one group of sockets per
//! worker bound with SO_REUSEPORT so the kernel spreads clients over the cores.
//!
//! With an RFC 5780 alternate address a group is four sockets, indexed by two bits:
//! bit 0 set = alternate port, bit 1 set = alternate IP. A CHANGE-REQUEST flips the matching
//! bits to pick the socket that answers.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef};
use switchboard_turn::{Arrival, Output, Transport, Via, MAX_REPLY};
use tokio::io::Interest;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::core::Core;
use crate::net::sendmmsg::Batch;
use crate::net::{bind_udp, claim_udp, make_sock, Sock};
use crate::stats::StunStats;

/// Receive slots per batch.
const BATCH: usize = 32;
/// Bytes per receive slot: one datagram, or several of one flow coalesced by GRO.
const SLOT: usize = 65_536;

/// One worker's sockets: index 0 is the primary address, 1..=3 exist with an alternate address.
struct Group {
    socks: Vec<Arc<Sock>>,
}

impl Group {
    fn other(&self, role: usize) -> Option<SocketAddr> {
        (self.socks.len() == 4).then(|| self.socks[role ^ 3].local)
    }

    fn via_role(&self, role: usize, via: Via) -> Option<usize> {
        let flip = match via {
            Via::Same => 0,
            Via::ChangePort => 1,
            Via::ChangeIp => 2,
            Via::ChangeBoth => 3,
        };
        let r = role ^ flip;
        (r < self.socks.len()).then_some(r)
    }
}

/// A listener socket: shared by the workers (SO_REUSEPORT), 4 MiB buffers to absorb bursts.
fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    bind_udp(addr, true, 4 << 20)
}

/// The first socket on `addr`: the address must be free (see [`claim_udp`]), so the workers'
/// SO_REUSEPORT group is only ever this process's own sockets.
fn bind_first(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    bind(claim_udp(addr)?)
}

/// Binds `workers` groups for one primary address and returns the addresses of group 0.
/// `alt` is the alternate (IP, port) when RFC 5780 is on.
///
/// Each group runs on its own thread with a current-thread runtime: its sockets, and the relay
/// sockets of the allocations its clients create, are polled by that thread's own reactor, so a
/// relayed packet never crosses threads (thread per core, as coturn's relay threads).
pub(crate) fn spawn(
    primary: SocketAddr,
    alt: Option<(IpAddr, u16)>,
    workers: usize,
    core: Arc<Core>,
    stats: Arc<StunStats>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> io::Result<Vec<SocketAddr>> {
    let mut addrs = vec![primary];
    let mut bound: Vec<Vec<std::net::UdpSocket>> = Vec::new();
    for w in 0..workers.max(1) {
        let mut socks = Vec::new();
        if w == 0 {
            let first = bind_first(primary)?;
            addrs[0] = first.local_addr()?;
            socks.push(first);
            if let Some((alt_ip, alt_port)) = alt {
                let p = addrs[0];
                addrs.push(SocketAddr::new(p.ip(), alt_port));
                addrs.push(SocketAddr::new(alt_ip, p.port()));
                addrs.push(SocketAddr::new(alt_ip, alt_port));
                for a in &addrs[1..] {
                    socks.push(bind_first(*a)?);
                }
            }
        } else {
            for a in &addrs {
                socks.push(bind(*a)?);
            }
        }
        bound.push(socks);
    }
    for (w, std_socks) in bound.into_iter().enumerate() {
        let core = core.clone();
        let stats = stats.clone();
        let shutdown = shutdown.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("sb-udp-{}-{w}", addrs[0].port()))
            .spawn(move || rt.block_on(worker(w, std_socks, core, stats, shutdown)))?;
        tasks.spawn(async move {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        });
    }
    Ok(addrs)
}

/// One worker thread: registers its sockets and serves each role until shutdown.
async fn worker(
    w: usize,
    std_socks: Vec<std::net::UdpSocket>,
    core: Arc<Core>,
    stats: Arc<StunStats>,
    shutdown: watch::Receiver<bool>,
) {
    let mut socks = Vec::new();
    for s in std_socks {
        match make_sock(s) {
            Ok(s) => socks.push(Arc::new(s)),
            Err(e) => {
                tracing::error!(error = %e, "cannot register STUN UDP socket");
                return;
            }
        }
    }
    if w == 0 {
        // Relayed data to UDP clients leaves from these sockets.
        for s in &socks {
            core.register_udp(s.clone());
        }
    }
    let group = Arc::new(Group { socks });
    let mut roles = JoinSet::new();
    for role in 0..group.socks.len() {
        let group = group.clone();
        let core = core.clone();
        let stats = stats.clone();
        let mut shutdown = shutdown.clone();
        roles.spawn(async move {
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => {}
                r = run(group, role, core, stats) => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "STUN UDP worker stopped");
                    }
                }
            }
        });
    }
    while roles.join_next().await.is_some() {}
    // Relay tasks spawned on this runtime end with it.
}

async fn run(
    group: Arc<Group>,
    role: usize,
    core: Arc<Core>,
    stats: Arc<StunStats>,
) -> io::Result<()> {
    let sock = &group.socks[role];
    let mut storage = vec![0u8; BATCH * SLOT];
    let mut slots: Vec<IoSliceMut<'_>> = storage.chunks_mut(SLOT).map(IoSliceMut::new).collect();
    let mut metas = [RecvMeta::default(); BATCH];
    let mut out = [0u8; MAX_REPLY];
    // Replies from this socket to one receive batch leave together (sendmmsg).
    let mut replies = Batch::new(BATCH, MAX_REPLY);
    let other = group.other(role);
    loop {
        sock.io.readable().await?;
        // A batch that comes back short means the socket is drained: report WouldBlock to tokio
        // so it clears readiness now, saving the extra recvmmsg that would only say EAGAIN.
        // tokio only clears readiness it has not seen renewed, so a datagram that arrives
        // meanwhile still wakes us.
        let mut got = 0usize;
        let n = match sock.io.try_io(Interest::READABLE, || {
            got = sock
                .state
                .recv(UdpSockRef::from(&sock.io), &mut slots, &mut metas)?;
            if got < BATCH {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(got)
            }
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // ICMP errors surface here on Linux (e.g. port unreachable for an earlier
                // reply); they concern one peer, not the socket.
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        for (meta, slot) in metas.iter().zip(slots.iter()).take(n) {
            let local = match meta.dst_ip {
                Some(ip) => SocketAddr::new(ip, sock.local.port()),
                None => sock.local,
            };
            let stride = meta.stride.max(1);
            for datagram in slot[..meta.len.min(SLOT)].chunks(stride) {
                stats.received.increment(1);
                let arrival = Arrival {
                    peer: meta.addr,
                    local,
                    other,
                    transport: Transport::Udp,
                };
                if replies.is_full() {
                    flush(sock, &mut replies).await;
                }
                let buf = replies.next_buf();
                match core.client_input(&arrival, datagram, buf) {
                    Output::Relay { relay, peer, data } => core.send_to_peer(relay, peer, data),
                    Output::Reply {
                        via,
                        to,
                        len,
                        error,
                    } => {
                        stats.count_reply(error);
                        let Some(r) = group.via_role(role, via) else {
                            continue;
                        };
                        if r == role {
                            replies.commit(to, len, meta.dst_ip);
                        } else {
                            // RFC 5780 CHANGE-REQUEST: from another socket of the group, now.
                            let len = len.min(MAX_REPLY);
                            out[..len].copy_from_slice(&buf[..len]);
                            send(&group.socks[r], to, &out[..len], None).await;
                        }
                    }
                    Output::Drop(reason) => stats.count_drop(reason),
                }
            }
        }
        flush(sock, &mut replies).await;
    }
}

/// Sends the gathered replies (sendmmsg) and empties the batch. A reply the kernel refuses is
/// skipped; when the send buffer stays full after a few waits, the rest are dropped like any
/// lost datagram (the clients retransmit).
async fn flush(sock: &Sock, replies: &mut Batch) {
    let mut done = 0usize;
    let mut waits = 0;
    while done < replies.len() {
        let r = sock.io.try_io(Interest::WRITABLE, || {
            let (n, r) = replies.send(&sock.io, done);
            done += n;
            r
        });
        match r {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                waits += 1;
                if waits > 3 || sock.io.writable().await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "UDP send failed");
                done += 1;
            }
        }
    }
    replies.clear();
}

async fn send(sock: &Sock, to: SocketAddr, data: &[u8], src_ip: Option<IpAddr>) {
    let transmit = Transmit {
        destination: to,
        ecn: None,
        contents: data,
        segment_size: None,
        src_ip,
    };
    // A few attempts when the send buffer is full; a reply that still cannot go is dropped like
    // any lost datagram (the client retransmits).
    for _ in 0..4 {
        match sock.io.try_io(Interest::WRITABLE, || {
            sock.state.try_send(UdpSockRef::from(&sock.io), &transmit)
        }) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if sock.io.writable().await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, %to, "UDP send failed");
                return;
            }
        }
    }
}
