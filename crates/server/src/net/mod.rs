//! Sockets and the bounds around them, shared by every listener: binding TCP and UDP sockets
//! with their options, the quinn-udp socket wrapper, the descriptor budget, backing off a failing
//! `accept`, per-address caps and rates ([`limits`]), and the host's interface addresses
//! ([`interfaces`]).

pub(crate) mod interfaces;
pub(crate) mod limits;
pub(crate) mod sendmmsg;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use quinn_udp::{Transmit, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::{TcpListener, UdpSocket};

use limits::names;

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`), as Redis and
/// MongoDB advise: the allocator's arenas are madvised for huge pages, so with THP on each
/// thread's heap grew its resident memory in 2 MiB steps — about 20 MiB more at start-up and
/// 1.5–2.5 KiB more per idle TURN allocation or WebSocket. Returns whether it took effect
/// (it fails harmlessly on kernels without THP).
pub(crate) fn disable_transparent_huge_pages() -> bool {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes integer arguments only and changes a flag of
    // this process's memory map.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
}

/// Raises the process's soft open-file limit to the hard one; returns `(soft before, soft now,
/// hard)`.
pub(crate) fn raise_descriptor_limit() -> (u64, u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return (1024, 1024, 1024);
    }
    let before: u64 = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    (before, lim.rlim_cur, lim.rlim_max)
}

/// Descriptors kept out of every connection cap: listeners, relay sockets, files, Redis, QUIC.
pub(crate) const DESCRIPTOR_RESERVE: u64 = 512;

/// Connection caps that fit in `limit` descriptors: the HTTP listeners may take half of what
/// is left after [`DESCRIPTOR_RESERVE`], STUN over TCP/TLS a quarter (the last quarter is for
/// TURN relay sockets and everything else), so one group running out never starves the others.
/// A group with no listener (`Groups`) leaves its share to the other. Returns the caps to use,
/// each at most what was configured.
pub(crate) fn fit_caps(limit: u64, http: usize, stun: usize, groups: Groups) -> (usize, usize) {
    let budget = limit.saturating_sub(DESCRIPTOR_RESERVE).max(8);
    let cap = |configured: usize, share: u64| {
        let share = usize::try_from(share).unwrap_or(usize::MAX).max(1);
        if configured == 0 {
            share
        } else {
            configured.min(share)
        }
    };
    let (http_share, stun_share) = match groups {
        Groups::Both => (budget / 2, budget / 4),
        Groups::HttpOnly => (budget / 4 * 3, 1),
        Groups::StunOnly => (1, budget / 4 * 3),
    };
    (cap(http, http_share), cap(stun, stun_share))
}

/// Which connection-capped listener groups a server has (the one-port listener is both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Groups {
    Both,
    HttpOnly,
    StunOnly,
}

impl Groups {
    pub(crate) fn of(http: bool, stun: bool) -> Self {
        match (http, stun) {
            (true, false) => Groups::HttpOnly,
            (false, true) => Groups::StunOnly,
            _ => Groups::Both,
        }
    }
}

/// Backs off a failing accept loop: 10 ms doubling to 1 s, counted per listener and kind,
/// logged at most once a second.
#[derive(Default)]
pub(crate) struct AcceptBackoff {
    delay: Duration,
    last_log: Option<Instant>,
}

impl AcceptBackoff {
    /// A successful accept: back to no delay.
    pub(crate) fn reset(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// Counts `e`, logs it (rate-limited) and sleeps the next backoff step.
    pub(crate) async fn failed(&mut self, listener: &'static str, addr: SocketAddr, e: &io::Error) {
        let kind = match e.raw_os_error() {
            Some(libc::EMFILE) | Some(libc::ENFILE) => "descriptors",
            Some(libc::ENOBUFS) | Some(libc::ENOMEM) => "memory",
            _ => "other",
        };
        metrics::counter!(names::ACCEPT_ERRORS, "listener" => listener, "kind" => kind)
            .increment(1);
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.last_log = Some(Instant::now());
            tracing::warn!(listener, %addr, error = %e, kind, "accept failed; backing off");
        }
        self.delay = (self.delay * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::time::sleep(self.delay).await;
    }
}

/// A TCP listener on `addr` (IPv6 v6-only, SO_REUSEADDR, backlog 1024).
pub(crate) fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
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

/// A non-blocking UDP socket bound to `addr` (IPv6 sockets v6-only), with `buffer` bytes of
/// kernel send and receive buffer (capped by rmem_max/wmem_max); `reuse_port` lets several
/// worker sockets share the address. Listener and relay sockets are both made here.
pub(crate) fn bind_udp(
    addr: SocketAddr,
    reuse_port: bool,
    buffer: usize,
) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    sock.set_nonblocking(true)?;
    let _ = sock.set_recv_buffer_size(buffer);
    let _ = sock.set_send_buffer_size(buffer);
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Checks that no socket — of this process or another — holds UDP `addr`, and returns it with
/// the port the kernel would give (for port 0). SO_REUSEPORT lets any socket of the same user
/// join a group, so a second server on the same port would silently split the clients with
/// the first (fatal for TURN allocations): a plain bind without SO_REUSEPORT conflicts with
/// every existing socket, and is dropped just before the worker group binds.
pub(crate) fn claim_udp(addr: SocketAddr) -> io::Result<SocketAddr> {
    let probe = bind_udp(addr, false, 0)?;
    probe.local_addr()
}

/// Binds the TCP listener and the UDP socket of one HTTPS address on the same port. With port
/// 0 the TCP port is picked first and UDP takes the same number (retried if it is taken).
pub(crate) fn bind_pair(addr: SocketAddr) -> std::io::Result<(TcpListener, std::net::UdpSocket)> {
    let mut last = None;
    for _ in 0..if addr.port() == 0 { 20 } else { 1 } {
        let tcp = bind_tcp(addr)?;
        let port = tcp.local_addr()?.port();
        // Room for bursts of QUIC Initial packets; the kernel caps it at rmem_max.
        match bind_udp(SocketAddr::new(addr.ip(), port), false, 2 << 20) {
            Ok(udp) => return Ok((tcp, udp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port")))
}

/// A listener socket with its quinn-udp state.
pub(crate) struct Sock {
    pub(crate) io: UdpSocket,
    pub(crate) state: UdpSocketState,
    pub(crate) local: SocketAddr,
}

impl Sock {
    /// Sends one datagram now if the socket can take it; false when it was dropped.
    pub(crate) fn try_send(&self, to: SocketAddr, data: &[u8], src_ip: Option<IpAddr>) -> bool {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents: data,
            segment_size: None,
            src_ip,
        };
        self.io
            .try_io(Interest::WRITABLE, || {
                self.state.try_send(UdpSockRef::from(&self.io), &transmit)
            })
            .is_ok()
    }
}

/// Turns off the per-datagram ancillary data quinn-udp asks the kernel for (destination address,
/// TOS/traffic class) on a socket whose reader needs only the source address and GRO's segment
/// size, such as a TURN relay socket bound to one address: the kernel then builds no control
/// messages for those datagrams. Best effort: an option the kernel refuses is left as it was.
pub(crate) fn no_receive_ancillary(sock: &impl std::os::fd::AsRawFd) {
    let off: libc::c_int = 0;
    for (level, name) in [
        (libc::IPPROTO_IP, libc::IP_PKTINFO),
        (libc::IPPROTO_IP, libc::IP_RECVTOS),
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
        (libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS),
    ] {
        // SAFETY: a valid descriptor, an int option value of the right size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                level,
                name,
                (&off as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Registers a bound socket with the current runtime's reactor.
pub(crate) fn make_sock(std_sock: std::net::UdpSocket) -> io::Result<Sock> {
    let io = UdpSocket::from_std(std_sock)?;
    let state = UdpSocketState::new(UdpSockRef::from(&io))?;
    let local = io.local_addr()?;
    Ok(Sock { io, state, local })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_the_descriptor_limit_and_never_exceed_the_configured_ones() {
        let both = Groups::Both;
        assert_eq!(fit_caps(1_048_576, 20_000, 10_000, both), (20_000, 10_000));
        assert_eq!(fit_caps(1024, 20_000, 10_000, both), (256, 128));
        assert_eq!(fit_caps(100, 20_000, 10_000, both), (4, 2));
        assert_eq!(fit_caps(4096, 0, 0, both), (1792, 896));
    }

    #[test]
    fn a_group_without_listeners_leaves_its_share_to_the_other() {
        // 20,000 descriptors: 14,616 for HTTP alone (10,000 WebSockets fit), not 9,744.
        assert_eq!(fit_caps(20_000, 0, 0, Groups::of(true, false)), (14_616, 1));
        assert_eq!(fit_caps(20_000, 0, 0, Groups::of(false, true)), (1, 14_616));
        assert_eq!(
            fit_caps(20_000, 0, 0, Groups::of(true, true)),
            (9_744, 4_872)
        );
        assert_eq!(
            fit_caps(20_000, 0, 0, Groups::of(false, false)),
            (9_744, 4_872)
        );
    }
}
