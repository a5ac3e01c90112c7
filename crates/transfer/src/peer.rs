//! The WebRTC peer: str0m (sans-IO) driven by one tokio task that owns the UDP sockets and the
//! clock.
//!
//! 1. [`gather`] binds one UDP socket per local address (host candidates), asks each STUN
//!    server for this socket's mapping (server-reflexive candidates) and allocates on each TURN
//!    server (relay candidates, [`crate::turn`]), all at once and bounded by a deadline.
//! 2. The receiver makes the offer ([`Agent::offer`], one data channel), the sender answers
//!    ([`Agent::accept_offer`]); candidates travel inside the SDP (no trickle needed).
//! 3. [`Agent::start`] spawns the run loop: datagrams in, read straight off the sockets by the
//!    loop itself (a relay's unwrapped), str0m's transmits out (through the relay when their
//!    source is the relayed address), timeouts, and the application's messages onto the data
//!    channel while its buffered amount is below [`HIGH_WATER`]. ICE picks the pair; nothing
//!    here prefers direct or relayed paths.
//!
//! Throughput: the loop handles what is ready (timers due, messages to write, datagrams to
//! read) one after the other, draining str0m after each, and goes back to the scheduler only
//! when nothing is. Datagrams come in several to a `recvmmsg` (and with UDP GRO several to a
//! buffer); str0m's transmits to one destination leave together in one `sendmsg` with UDP
//! GSO (quinn-udp; one by one where the system has no GSO), and what the datagrams of one read
//! bring out (SACKs) leaves after the read. The sockets get large kernel buffers, SCTP a 4 MiB
//! receive window, and the buffered amount may exceed it. An earlier version read each socket
//! in a task of its own and handed datagrams over a channel (a task switch per datagram) and
//! sent one datagram per system call; with sctp-proto's per-poll walks (vendor/sctp-proto)
//! it moved 15 MB/s on loopback where this moves about 140 (2 cores, release; docs/send.md).

use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use crate::turn::{binding_request, binding_response, TurnClient, TurnEvent, TurnTransport};
use crate::turn_stream::{self, Bridge};

/// The data channel's buffered amount above which no more messages are taken. The buffered
/// amount counts what is in flight until it is acknowledged, so this must exceed the peer's
/// receive window ([`RECEIVE_WINDOW`]) for the window to fill.
pub const HIGH_WATER: usize = 6 << 20;
/// str0m refuses writes beyond this much buffered.
const MAX_BUFFERED: usize = 8 << 20;
/// SCTP's receive window. str0m sizes it to hold one message of the largest size accepted
/// (at least 1 MiB), so this is also the largest message the peer may send. str0m's 1 MiB caps a
/// transfer at 1 MiB per round trip (20 MB/s at 50 ms); on loopback (2 cores, release) 4 MiB
/// moved about 5 % more directly but about 15 % less through a TURN relay on the same cores,
/// whose sockets dropped the larger bursts.
const RECEIVE_WINDOW: usize = 4 << 20;
/// Messages from the peer waiting for the application: at most this many times
/// [`RECEIVE_WINDOW`] bytes (256 MiB) even from a peer sending the largest messages (4 MiB of
/// the 64 KiB chunks it does send; 16 cost about 15 % of the loopback throughput).
const EVENTS: usize = 64;
/// How long ICE and DTLS may take once both descriptions are applied.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long ICE may stay disconnected once the data channel is open before the link ends.
pub const LOST_AFTER: Duration = Duration::from_secs(15);

/// Datagrams the run loop reads in a row before it waits on the scheduler again.
const READ_BATCH: usize = 256;
/// Receive buffers per read (one `recvmmsg`).
const RECV_SLOTS: usize = 8;
/// Room per receive buffer and GRO segment (str0m's datagrams are about 1,200 bytes).
const SEGMENT_ROOM: usize = 2048;
/// At most this many bytes in one GSO send.
const GSO_BYTES: usize = 64_000;

/// One entry of `RTCConfiguration.iceServers` (what `GET /v1/ice-servers` returns).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct IceServer {
    /// `stun:HOST:PORT`, `turn:HOST:PORT?transport=udp`, ...
    pub urls: Vec<String>,
    /// TURN user.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default)]
    pub credential: Option<String>,
}

/// How to gather.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// STUN and TURN servers.
    pub ice_servers: Vec<IceServer>,
    /// Offer only relay candidates (the connection then goes through TURN).
    pub relay_only: bool,
    /// Local addresses for host candidates; empty: the addresses of the default routes.
    pub host_ips: Vec<IpAddr>,
    /// How long STUN and TURN may take.
    pub gather_timeout: Duration,
    /// TLS for `turns:` servers (TURN over TLS); none: `turns:` URLs are skipped.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            ice_servers: Vec::new(),
            relay_only: false,
            host_ips: Vec::new(),
            gather_timeout: Duration::from_secs(3),
            tls: None,
        }
    }
}

/// What can go wrong with the peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// A socket could not be bound or used.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// No candidate to offer.
    #[error("no ICE candidate: {0}")]
    NoCandidates(String),
    /// The peer's description was refused.
    #[error("the peer's session description: {0}")]
    Sdp(String),
    /// str0m failed.
    #[error("WebRTC: {0}")]
    Rtc(#[from] str0m::RtcError),
}

/// Which socket a datagram came in on.
#[derive(Clone, Copy, Debug)]
enum Via {
    Host(usize),
    Turn(usize),
}

/// A datagram read while gathering.
struct Datagram {
    via: Via,
    from: SocketAddr,
    data: Vec<u8>,
}

struct Host {
    sock: Arc<UdpSocket>,
    local: SocketAddr,
}

struct Relay {
    sock: Arc<UdpSocket>,
    client: TurnClient,
    ok: bool,
    /// Its TURN server and user ([`TurnPlan::group`]).
    group: usize,
    /// Over TCP/TLS: the bridge to the connection.
    _bridge: Option<Bridge>,
}

/// A TURN server to allocate on over one transport. The URLs of one server (one address, one
/// user) form a group; a group is tried UDP first, then TCP, then TLS, each next one when the
/// last failed or has not allocated within [`FALLBACK_AFTER`], and keeps the first that
/// allocates (UDP when two do at once).
struct TurnPlan {
    group: usize,
    transport: TurnTransport,
    server: SocketAddr,
    /// The host of the URL (the TLS server name).
    host: String,
    user: String,
    password: String,
}

/// How long one transport to a TURN server may take before the next is tried as well.
const FALLBACK_AFTER: Duration = Duration::from_millis(750);

/// A gathered peer, before the descriptions are exchanged.
pub struct Agent {
    rtc: Rtc,
    hosts: Vec<Host>,
    relays: Vec<Relay>,
    /// The gathering phase's socket readers, aborted: the run loop waits for them to be gone
    /// before it reads the sockets itself.
    readers: Vec<tokio::task::JoinHandle<()>>,
    /// The sockets as the run loop uses them (hosts first, then relays), from its start.
    udp: Vec<Sock>,
    /// Transmits waiting to leave together.
    batch: Batch,
    pending: Option<SdpPendingOffer>,
    /// The candidates offered, as `typ address` strings (for logs and `--json`).
    pub candidates: Vec<String>,
    /// The peer's candidates (from its description), to name the type of the one ICE picks.
    remote: Vec<(SocketAddr, CandidateType)>,
    /// The route the data takes, as it changes ([`Agent::routes`]).
    routes: watch::Sender<Route>,
}

/// The addresses of the default routes (no packet is sent), else loopback.
pub fn default_ips() -> Vec<IpAddr> {
    let mut v = Vec::new();
    let probe = |bind: SocketAddr, to: SocketAddr| -> Option<IpAddr> {
        let s = std::net::UdpSocket::bind(bind).ok()?;
        s.connect(to).ok()?;
        let ip = s.local_addr().ok()?.ip();
        (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
    };
    if let Some(ip) = probe(
        (Ipv4Addr::UNSPECIFIED, 0).into(),
        (Ipv4Addr::new(192, 0, 2, 1), 9).into(),
    ) {
        v.push(ip);
    }
    if let Some(ip) = probe(
        (Ipv6Addr::UNSPECIFIED, 0).into(),
        "[2001:db8::1]:9".parse().expect("address"),
    ) {
        v.push(ip);
    }
    if v.is_empty() {
        v.push(Ipv4Addr::LOCALHOST.into());
    }
    v
}

/// `stun:`/`turn:`/`turns:` URL → (TURN transport, none for STUN; host; port). `turns:` is
/// TLS over TCP (`transport=udp`, DTLS, is not supported); `stuns:` is not supported.
fn parse_url(url: &str) -> Option<(Option<TurnTransport>, String, u16)> {
    let (scheme, rest) = url.split_once(':')?;
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    let transport = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("transport="))
        .unwrap_or(if scheme == "turns" { "tcp" } else { "udp" });
    let (turn, default_port) = match (scheme, transport) {
        ("stun", _) => (None, "3478"),
        ("turn", "udp") => (Some(TurnTransport::Udp), "3478"),
        ("turn", "tcp") => (Some(TurnTransport::Tcp), "3478"),
        ("turns", "tcp") => (Some(TurnTransport::Tls), "5349"),
        _ => return None,
    };
    let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
        let (h, p) = r.split_once(']')?;
        (h.to_string(), p.strip_prefix(':').unwrap_or(default_port))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (hostport.to_string(), default_port),
        }
    };
    Some((turn, host, port.parse().ok()?))
}

/// Kernel buffers for the data channel's bursts: a window of SCTP packets arrives faster
/// than one loop turn reads them, and the default (about 200 KiB) drops some on a fast path.
/// The kernel caps the size at `net.core.rmem_max`/`wmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

fn widen(sock: &UdpSocket) {
    let s = socket2::SockRef::from(sock);
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
}

async fn resolve(host: &str, port: u16) -> Vec<SocketAddr> {
    tokio::net::lookup_host((host, port))
        .await
        .map(|a| a.collect())
        .unwrap_or_default()
}

fn spawn_reader(
    sock: Arc<UdpSocket>,
    via: Via,
    tx: mpsc::Sender<Datagram>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            match sock.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    let d = Datagram {
                        via,
                        from,
                        data: buf[..n].to_vec(),
                    };
                    if tx.send(d).await.is_err() {
                        return;
                    }
                }
                // ICMP errors surface as recv errors on some systems: not fatal.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(_) => return,
            }
        }
    })
}

/// Starts allocating on one TURN server over one transport: over UDP from a socket of its
/// own, over TCP/TLS from a loopback socket through a bridge to the connection.
async fn start_relay(
    plan: &TurnPlan,
    hosts: &[Host],
    cfg: &PeerConfig,
    now: Instant,
) -> std::io::Result<Relay> {
    let server = plan.server;
    if plan.transport != TurnTransport::Udp {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        widen(&sock);
        let (bridge, b) = turn_stream::open(
            server,
            plan.transport,
            &plan.host,
            cfg.tls.clone(),
            sock.local_addr()?,
        )
        .await?;
        return Ok(Relay {
            sock: Arc::new(sock),
            client: TurnClient::via(
                server,
                plan.transport,
                bridge,
                &plan.user,
                &plan.password,
                now,
            ),
            ok: false,
            group: plan.group,
            _bridge: Some(b),
        });
    }
    // From a host address of the server's family (else any).
    let bind_ip = hosts
        .iter()
        .map(|h| h.local.ip())
        .find(|ip| {
            ip.is_ipv4() == server.is_ipv4() && !ip.is_loopback()
                || server.ip().is_loopback() && ip.is_ipv4() == server.is_ipv4()
        })
        .unwrap_or(if server.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        });
    let sock = UdpSocket::bind((bind_ip, 0)).await?;
    widen(&sock);
    Ok(Relay {
        sock: Arc::new(sock),
        client: TurnClient::new(server, &plan.user, &plan.password, now),
        ok: false,
        group: plan.group,
        _bridge: None,
    })
}

/// Of TURN group `g`'s relays started so far (`done[i]`: relay `i` answered or failed): whether
/// one allocated, and whether none is still waiting.
fn group_state(relays: &[Relay], done: &[bool], g: usize) -> (bool, bool) {
    let mut mine = relays.iter().zip(done).filter(|(r, _)| r.group == g);
    (mine.clone().any(|(r, _)| r.ok), mine.all(|(_, d)| *d))
}

/// Binds the sockets and gathers host, server-reflexive and relay candidates.
pub async fn gather(cfg: &PeerConfig) -> Result<Agent, PeerError> {
    let ips = if cfg.host_ips.is_empty() {
        default_ips()
    } else {
        cfg.host_ips.clone()
    };
    let (tx, mut rx) = mpsc::channel(4096);
    let mut hosts = Vec::new();
    let mut readers = Vec::new();
    for ip in ips {
        let sock = Arc::new(UdpSocket::bind((ip, 0)).await?);
        widen(&sock);
        let local = sock.local_addr()?;
        readers.push(spawn_reader(
            sock.clone(),
            Via::Host(hosts.len()),
            tx.clone(),
        ));
        hosts.push(Host { sock, local });
    }
    let now = Instant::now();
    // STUN: (host index, server, transaction, request, answered mapping).
    let mut stuns = Vec::new();
    let mut relays: Vec<Relay> = Vec::new();
    let mut plans: Vec<TurnPlan> = Vec::new();
    // (server address, user) per group.
    let mut groups: Vec<(IpAddr, String)> = Vec::new();
    for s in &cfg.ice_servers {
        for url in &s.urls {
            let Some((turn, host, port)) = parse_url(url) else {
                continue;
            };
            if turn == Some(TurnTransport::Tls) && cfg.tls.is_none() {
                continue;
            }
            for server in resolve(&host, port).await {
                if let Some(transport) = turn {
                    let (Some(user), Some(pass)) = (&s.username, &s.credential) else {
                        continue;
                    };
                    if plans
                        .iter()
                        .any(|p| p.server == server && p.transport == transport)
                    {
                        continue;
                    }
                    let key = (server.ip(), user.clone());
                    let group = groups.iter().position(|g| *g == key).unwrap_or_else(|| {
                        groups.push(key);
                        groups.len() - 1
                    });
                    plans.push(TurnPlan {
                        group,
                        transport,
                        server,
                        host: host.clone(),
                        user: user.clone(),
                        password: pass.clone(),
                    });
                } else if !cfg.relay_only {
                    for (i, h) in hosts.iter().enumerate() {
                        if h.local.is_ipv4() == server.is_ipv4() {
                            let (id, req) = binding_request();
                            stuns.push((i, server, id, req, None::<SocketAddr>));
                        }
                    }
                }
            }
        }
    }
    // Each group's transports in order of preference: UDP, TCP, TLS.
    plans.sort_by_key(|p| (p.group, p.transport));
    let mut plans: Vec<Option<TurnPlan>> = plans.into_iter().map(Some).collect();
    // When each group last started a transport.
    let mut started: Vec<Option<Instant>> = vec![None; groups.len()];
    // Run STUN and TURN until every answer is in or the deadline passes.
    let deadline = now + cfg.gather_timeout;
    let mut done_relays: Vec<bool> = Vec::new();
    let mut next_stun = now;
    loop {
        let now = Instant::now();
        // Each group without an allocation tries its next transport when the last one failed
        // or has not allocated within FALLBACK_AFTER.
        for (g, started_at) in started.iter_mut().enumerate() {
            let (allocated, settled) = group_state(&relays, &done_relays, g);
            if allocated {
                continue;
            }
            if !settled && started_at.is_some_and(|t| now < t + FALLBACK_AFTER) {
                continue;
            }
            let Some(plan) = plans
                .iter_mut()
                .find(|p| p.as_ref().is_some_and(|p| p.group == g))
                .and_then(Option::take)
            else {
                continue;
            };
            *started_at = Some(now);
            match start_relay(&plan, &hosts, cfg, now).await {
                Ok(r) => {
                    readers.push(spawn_reader(
                        r.sock.clone(),
                        Via::Turn(relays.len()),
                        tx.clone(),
                    ));
                    relays.push(r);
                    done_relays.push(false);
                }
                Err(e) => {
                    tracing::debug!(server = %plan.server, transport = plan.transport.as_str(), "TURN: {e}")
                }
            }
        }
        if now >= next_stun {
            for (i, server, _, req, got) in &stuns {
                if got.is_none() {
                    let _ = hosts[*i].sock.send_to(req, *server).await;
                }
            }
            next_stun = now + Duration::from_millis(400);
        }
        for (r, done) in relays.iter_mut().zip(done_relays.iter_mut()) {
            if let Some(TurnEvent::Failed(why)) = r.client.handle_timeout(now) {
                tracing::warn!(transport = r.client.transport().as_str(), "{why}");
                *done = true;
            }
            while let Some(b) = r.client.poll_transmit() {
                let _ = r.sock.send_to(&b, r.client.destination()).await;
            }
        }
        let stun_done = stuns.iter().all(|s| s.4.is_some());
        // A group is done once it allocated, or failed on every transport.
        let turn_done = (0..groups.len()).all(|g| {
            let (allocated, settled) = group_state(&relays, &done_relays, g);
            allocated || settled && !plans.iter().flatten().any(|p| p.group == g)
        });
        if stun_done && turn_done || now >= deadline {
            break;
        }
        let mut wake = next_stun.min(deadline);
        for t in started.iter().flatten() {
            if *t + FALLBACK_AFTER > now {
                wake = wake.min(*t + FALLBACK_AFTER);
            }
        }
        let d = tokio::select! {
            d = rx.recv() => d,
            _ = tokio::time::sleep_until(wake.into()) => continue,
        };
        let Some(d) = d else { break };
        match d.via {
            Via::Host(i) => {
                for s in stuns.iter_mut().filter(|s| s.0 == i && s.1 == d.from) {
                    if let Some(a) = binding_response(&d.data, s.2) {
                        s.4 = Some(a);
                    }
                }
            }
            Via::Turn(j) => match relays[j].client.handle_input(&d.data, Instant::now()) {
                Some(TurnEvent::Allocated { .. }) => {
                    relays[j].ok = true;
                    done_relays[j] = true;
                }
                Some(TurnEvent::Failed(why)) => {
                    tracing::warn!(transport = relays[j].client.transport().as_str(), "{why}");
                    done_relays[j] = true;
                }
                _ => {}
            },
        }
        for r in relays.iter_mut() {
            while let Some(b) = r.client.poll_transmit() {
                let _ = r.sock.send_to(&b, r.client.destination()).await;
            }
        }
    }
    drop(tx);
    let mut rtc = Rtc::builder()
        .set_sctp_max_buffered_amount(MAX_BUFFERED)
        .set_sctp_max_message_size(RECEIVE_WINDOW as u32)
        .build(Instant::now());
    let mut candidates = Vec::new();
    if !cfg.relay_only {
        for h in &hosts {
            if let Ok(c) = Candidate::host(h.local, "udp") {
                rtc.add_local_candidate(c);
                candidates.push(format!("host {}", h.local));
            }
        }
        let mut seen = Vec::new();
        for (i, _, _, _, got) in &stuns {
            if let Some(mapped) = got {
                if *mapped != hosts[*i].local && !seen.contains(mapped) {
                    seen.push(*mapped);
                    if let Ok(c) = Candidate::server_reflexive(*mapped, hosts[*i].local, "udp") {
                        rtc.add_local_candidate(c);
                        candidates.push(format!("srflx {mapped}"));
                    }
                }
            }
        }
    }
    let mut kept: Vec<Relay> = Vec::new();
    for mut r in relays {
        // One relay per group: the most preferred transport that allocated (they are in
        // order); another allocation on the same server is released.
        if kept.iter().any(|k| k.group == r.group) {
            if let Some(b) = r.client.release() {
                let _ = r.sock.send_to(&b, r.client.destination()).await;
            }
            continue;
        }
        if let (true, Some(relayed)) = (r.ok, r.client.relayed()) {
            let local = r.sock.local_addr()?;
            if let Ok(c) = Candidate::relayed(relayed, local, "udp") {
                rtc.add_local_candidate(c);
                candidates.push(format!("relay {relayed}"));
                kept.push(r);
            }
        }
    }
    if candidates.is_empty() {
        return Err(PeerError::NoCandidates(if cfg.relay_only {
            "no relay candidate: the server handed out no TURN server, or allocating failed \
             (is TURN on, with --turn-realm and --turn-secret?)"
                .into()
        } else {
            "no usable local address".into()
        }));
    }
    // The run loop reads the sockets itself; the gathering readers stop here (what they held
    // was STUN and TURN traffic, answered already).
    for r in &readers {
        r.abort();
    }
    drop(rx);
    Ok(Agent {
        rtc,
        hosts,
        relays: kept,
        readers,
        udp: Vec::new(),
        batch: Batch::default(),
        pending: None,
        candidates,
        remote: Vec::new(),
        routes: watch::channel(Route::Unknown).0,
    })
}

/// The label of the one data channel.
pub const LABEL: &str = "switchboard-send";

impl Agent {
    /// The offer (with one data channel and every candidate).
    pub fn offer(&mut self) -> Result<String, PeerError> {
        let mut change = self.rtc.sdp_api();
        change.add_channel(LABEL.to_string());
        let (offer, pending) = change
            .apply()
            .ok_or_else(|| PeerError::Sdp("nothing to offer".into()))?;
        self.pending = Some(pending);
        Ok(offer.to_sdp_string())
    }

    /// Applies the peer's answer to [`Agent::offer`].
    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), PeerError> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| PeerError::Sdp(e.to_string()))?;
        let pending = self
            .pending
            .take()
            .ok_or_else(|| PeerError::Sdp("an answer without an offer".into()))?;
        self.catch_up()?;
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        self.remote = remote_candidates(sdp);
        Ok(())
    }

    /// Applies the peer's offer; the answer.
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, PeerError> {
        tracing::debug!(%sdp, "offer");
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| PeerError::Sdp(e.to_string()))?;
        self.catch_up()?;
        let answer = self.rtc.sdp_api().accept_offer(offer)?;
        self.remote = remote_candidates(sdp);
        tracing::debug!(sdp = %answer.to_sdp_string(), "answer");
        Ok(answer.to_sdp_string())
    }

    /// Brings str0m's clock to now. It has not been driven since gathering, and applying the
    /// peer's description starts DTLS from its last known time: 40 s or more after gathering
    /// (`--manual`, where the offer and answer travel by hand) the DTLS handshake deadline
    /// was already past, and the handshake failed at once.
    fn catch_up(&mut self) -> Result<(), PeerError> {
        self.rtc.handle_input(Input::Timeout(Instant::now()))?;
        Ok(())
    }

    /// The type of the peer's candidate at `addr`: as its description named it, else
    /// peer-reflexive (learned from its checks, as behind a symmetric NAT).
    fn remote_type(&self, addr: SocketAddr) -> CandidateType {
        self.remote
            .iter()
            .find(|(a, _)| *a == addr)
            .map_or(CandidateType::Prflx, |(_, t)| *t)
    }

    /// The path the data takes, as it changes: [`Route::Unknown`] until the first message
    /// leaves, then each pair it moves to. ICE (str0m) nominates the first pair whose check
    /// succeeds and moves to a better one when that one's check succeeds, also after the data
    /// channel opened: a relayed pair that answered first gives way to a direct one a moment
    /// later, so the route [`LinkEvent::Open`] carries need not be the one the data ends on.
    pub fn routes(&self) -> watch::Receiver<Route> {
        self.routes.subscribe()
    }

    /// Spawns the run loop; talk to it through the [`Link`].
    pub fn start(self) -> Link {
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        let (ev_tx, ev_rx) = mpsc::channel(EVENTS);
        tokio::spawn(self.run(cmd_rx, ev_tx));
        Link {
            tx: cmd_tx,
            rx: ev_rx,
        }
    }

    /// Queues one of str0m's transmits in the send batch (through the relay when its source
    /// is the relayed address).
    async fn transmit(&mut self, t: str0m::net::Transmit, route: &mut Option<Route>) {
        let stun = t.contents.first().is_some_and(|b| *b < 2);
        if let Some(i) = self.hosts.iter().position(|h| h.local == t.source) {
            push(&self.udp, &mut self.batch, i, t.destination, &t.contents).await;
            if !stun && !route.is_some_and(|r| r.is(t.source, t.destination)) {
                let r = Route::Direct {
                    local: t.source,
                    remote: t.destination,
                    remote_type: self.remote_type(t.destination),
                };
                *route = Some(r);
                self.routes.send_replace(r);
            }
            return;
        }
        let now = Instant::now();
        let nhosts = self.hosts.len();
        if let Some(j) = self
            .relays
            .iter()
            .position(|r| r.client.relayed() == Some(t.source))
        {
            let r = &mut self.relays[j];
            r.client.send_to(t.destination, &t.contents, now);
            let (server, transport, to) = (
                r.client.server(),
                r.client.transport(),
                r.client.destination(),
            );
            while let Some(b) = r.client.poll_transmit() {
                push(&self.udp, &mut self.batch, nhosts + j, to, &b).await;
            }
            if !stun && !route.is_some_and(|r| r.is(t.source, t.destination)) {
                let r = Route::Relay {
                    relayed: t.source,
                    server,
                    transport,
                    remote: t.destination,
                    remote_type: self.remote_type(t.destination),
                };
                *route = Some(r);
                self.routes.send_replace(r);
            }
        }
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>, events: mpsc::Sender<LinkEvent>) {
        // The gathering readers were aborted; none may still take a datagram from a socket.
        for r in self.readers.drain(..) {
            let _ = r.await;
        }
        let why = self.drive(&mut cmds, &events).await;
        let _ = events.send(LinkEvent::Closed(why)).await;
        for r in &mut self.relays {
            if let Some(b) = r.client.release() {
                send(&r.sock, &b, r.client.destination()).await;
            }
        }
    }

    /// Ready when any socket may have a datagram to read.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut ready = false;
        for s in self.udp.iter().filter(|s| !s.dead) {
            // An error is readiness too: the read reports it.
            ready |= s.io.poll_recv_ready(cx).is_ready();
        }
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Reads what one socket holds (several datagrams in one call, and with GRO several
    /// datagrams in one buffer) and feeds each to str0m, draining after each; the number of
    /// datagrams, 0 when no socket had any.
    async fn read(
        &mut self,
        pool: &mut RecvPool,
        st: &mut LoopState,
        events: &mpsc::Sender<LinkEvent>,
    ) -> Result<usize, String> {
        let Some((k, n)) = recv(&mut self.udp, pool) else {
            return Ok(0);
        };
        let via = self.udp[k].via;
        let mut count = 0;
        for (m, meta) in pool.meta[..n].iter().enumerate() {
            let start = m * pool.slot;
            let Some(buf) = pool.buf.get(start..start + meta.len.min(pool.slot)) else {
                continue;
            };
            let stride = if meta.stride == 0 {
                buf.len()
            } else {
                meta.stride
            };
            for d in buf.chunks(stride.max(1)) {
                self.input(via, meta.addr, d).await;
                // What the datagrams bring out (SACKs, mostly) leaves together, below.
                self.drain_then(st, events, false).await?;
                count += 1;
            }
        }
        flush(&self.udp, &mut self.batch).await;
        Ok(count)
    }

    /// Feeds one datagram to str0m (a relay's unwrapped first).
    async fn input(&mut self, via: Via, from: SocketAddr, data: &[u8]) {
        let now = Instant::now();
        match via {
            Via::Host(i) => {
                let local = self.hosts[i].local;
                if let Ok(r) = Receive::new(Protocol::Udp, from, local, data) {
                    if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
                        tracing::debug!("input refused: {e}");
                    }
                }
            }
            Via::Turn(j) => {
                let relay = &mut self.relays[j];
                let ev = relay.client.handle_input(data, now);
                while let Some(b) = relay.client.poll_transmit() {
                    send(&relay.sock, &b, relay.client.destination()).await;
                }
                match ev {
                    Some(TurnEvent::Data { peer, data }) => {
                        tracing::trace!(%peer, len = data.len(), "from the relay");
                        let Some(relayed) = self.relays[j].client.relayed() else {
                            return;
                        };
                        if let Ok(r) = Receive::new(Protocol::Udp, peer, relayed, &data) {
                            if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
                                tracing::debug!("input refused: {e}");
                            }
                        }
                    }
                    Some(TurnEvent::Failed(why)) => tracing::warn!("{why}"),
                    _ => {}
                }
            }
        }
    }

    /// Timers due: the relays' and str0m's.
    async fn timeout(&mut self, now: Instant) -> Result<(), String> {
        for r in &mut self.relays {
            if let Some(TurnEvent::Failed(why)) = r.client.handle_timeout(now) {
                tracing::warn!("{why}");
            }
            while let Some(b) = r.client.poll_transmit() {
                send(&r.sock, &b, r.client.destination()).await;
            }
        }
        self.rtc
            .handle_input(Input::Timeout(now))
            .map_err(|e| format!("WebRTC error: {e}"))
    }

    /// Drains str0m after a mutation: transmits go out, events to the application; str0m's
    /// next timeout.
    async fn drain(
        &mut self,
        st: &mut LoopState,
        events: &mpsc::Sender<LinkEvent>,
    ) -> Result<Instant, String> {
        self.drain_then(st, events, true).await
    }

    /// [`Agent::drain`], sending the batched transmits at the end or leaving them to the caller.
    async fn drain_then(
        &mut self,
        st: &mut LoopState,
        events: &mpsc::Sender<LinkEvent>,
        send_batch: bool,
    ) -> Result<Instant, String> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    if send_batch {
                        flush(&self.udp, &mut self.batch).await;
                    }
                    return Ok(t);
                }
                Ok(Output::Transmit(t)) => self.transmit(t, &mut st.route).await,
                Ok(Output::Event(e)) => match e {
                    Event::ChannelOpen(id, _) => {
                        st.channel = Some(id);
                        if let Some(mut ch) = self.rtc.channel(id) {
                            ch.set_buffered_amount_low_threshold(HIGH_WATER / 2);
                        }
                        let r = st.route.unwrap_or(Route::Unknown);
                        flush(&self.udp, &mut self.batch).await;
                        if events.send(LinkEvent::Open(r)).await.is_err() {
                            return Err("closed".into());
                        }
                    }
                    // (Not a match guard: the send awaits.)
                    #[allow(clippy::collapsible_match)]
                    Event::ChannelData(d) => {
                        // What is batched goes first: the application may take its time.
                        flush(&self.udp, &mut self.batch).await;
                        if events.send(LinkEvent::Data(d.data)).await.is_err() {
                            return Err("closed".into());
                        }
                    }
                    Event::ChannelClose(_) => {
                        return Err("the peer closed the connection".into());
                    }
                    // Disconnected is transient in str0m (checks may still succeed, a lost
                    // path may come back): only a lasting one ends the link.
                    Event::IceConnectionStateChange(s) => {
                        tracing::debug!(state = ?s, "ICE");
                        if s == IceConnectionState::Disconnected {
                            st.disconnected.get_or_insert_with(Instant::now);
                        } else {
                            st.disconnected = None;
                        }
                    }
                    _ => {}
                },
                Err(e) => return Err(format!("WebRTC error: {e}")),
            }
        }
    }

    /// The run loop. Every mutation of str0m (a datagram, a timeout, a write) is followed by a
    /// full drain. Between waits it works through what is ready without going back to the
    /// scheduler: timers due, then messages while the buffered amount is below
    /// [`HIGH_WATER`], then datagrams read straight off the sockets (up to [`READ_BATCH`] in a
    /// row); it waits (sockets, commands, the next timer) only when none is left.
    async fn drive(
        &mut self,
        cmds: &mut mpsc::Receiver<Cmd>,
        events: &mpsc::Sender<LinkEvent>,
    ) -> String {
        let started = Instant::now();
        let mut st = LoopState::default();
        let mut outgoing: Option<Vec<u8>> = None;
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        let mut closing = false;
        let socks: Vec<(Arc<UdpSocket>, Via)> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.sock.clone(), Via::Host(i)))
            .chain(
                self.relays
                    .iter()
                    .enumerate()
                    .map(|(j, r)| (r.sock.clone(), Via::Turn(j))),
            )
            .collect();
        for (io, via) in socks {
            // GRO on, the don't-fragment bit set, source addresses reported (quinn-udp).
            let state = match UdpSocketState::new(UdpSockRef::from(&*io)) {
                Ok(s) => s,
                Err(e) => return format!("network: {e}"),
            };
            self.udp.push(Sock {
                io,
                state,
                via,
                dead: false,
            });
        }
        let mut pool = RecvPool::new(&self.udp);
        let mut reads = 0usize;
        let sleep = tokio::time::sleep_until(started.into());
        tokio::pin!(sleep);
        // str0m starts its ICE checks from a timeout input; without one it would wait for the
        // peer's first packet (which a relay drops until our own permission exists).
        let mut mutated = self.timeout(Instant::now()).await;
        loop {
            if let Err(why) = mutated {
                return why;
            }
            let timeout = match self.drain(&mut st, events).await {
                Ok(t) => t,
                Err(why) => return why,
            };
            if !self.rtc.is_alive() {
                return "the connection ended".into();
            }
            if closing {
                return "closed".into();
            }
            if st.channel.is_some() && st.disconnected.is_some_and(|t| t.elapsed() > LOST_AFTER) {
                return "the peer is gone (the connection was lost)".into();
            }
            if st.channel.is_none() && started.elapsed() > CONNECT_TIMEOUT {
                return "could not connect to the peer: no candidate pair worked within 30 s \
                        (a firewall? try a server with TURN)"
                    .into();
            }
            let mut wake = timeout;
            for r in &self.relays {
                if let Some(t) = r.client.poll_timeout() {
                    wake = wake.min(t);
                }
            }
            if st.channel.is_none() {
                wake = wake.min(started + CONNECT_TIMEOUT + Duration::from_millis(10));
            }
            if let Some(t) = st.disconnected {
                wake = wake.min(t + LOST_AFTER + Duration::from_millis(10));
            }
            let now = Instant::now();
            if wake <= now {
                mutated = self.timeout(now).await;
                continue;
            }
            let buffered = match st.channel.and_then(|id| self.rtc.channel(id)) {
                Some(mut ch) => ch.buffered_amount(),
                None => 0,
            };
            if buffered == 0 {
                for f in flushes.drain(..) {
                    let _ = f.send(());
                }
            }
            // One message onto the channel, then drain again.
            if let Some(id) = st.channel.filter(|_| buffered < HIGH_WATER) {
                if outgoing.is_none() {
                    match cmds.try_recv() {
                        Ok(Cmd::Send(b)) => outgoing = Some(b),
                        Ok(Cmd::Flush(f)) => {
                            flushes.push(f);
                            continue;
                        }
                        Ok(Cmd::Close) | Err(mpsc::error::TryRecvError::Disconnected) => {
                            // SCTP shutdown and DTLS close_notify go out with the next drain.
                            let _ = self.rtc.close();
                            closing = true;
                            mutated = Ok(());
                            continue;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => {}
                    }
                }
                if let (Some(b), Some(mut ch)) = (outgoing.as_ref(), self.rtc.channel(id)) {
                    match ch.write(true, b) {
                        Ok(true) => {
                            outgoing = None;
                            mutated = Ok(());
                            continue;
                        }
                        Ok(false) => {}
                        Err(e) => return format!("data channel: {e}"),
                    }
                }
            }
            // Datagrams straight off a socket, if one has some.
            if reads < READ_BATCH {
                match self.read(&mut pool, &mut st, events).await {
                    Ok(0) => {
                        if self.udp.iter().all(|s| s.dead) {
                            return "sockets closed".into();
                        }
                    }
                    Ok(n) => {
                        reads += n;
                        mutated = Ok(());
                        continue;
                    }
                    Err(why) => return why,
                }
            }
            reads = 0;
            if sleep.deadline() != wake.into() {
                sleep.as_mut().reset(wake.into());
            }
            let take = st.channel.is_some() && outgoing.is_none() && buffered < HIGH_WATER;
            tokio::select! {
                () = std::future::poll_fn(|cx| self.poll_readable(cx)) => {
                    mutated = Ok(());
                }
                c = cmds.recv(), if take => match c {
                    Some(Cmd::Send(b)) => {
                        outgoing = Some(b);
                        mutated = Ok(());
                    }
                    Some(Cmd::Flush(f)) => {
                        flushes.push(f);
                        mutated = Ok(());
                    }
                    None | Some(Cmd::Close) => {
                        let _ = self.rtc.close();
                        closing = true;
                        mutated = Ok(());
                    }
                },
                () = &mut sleep => {
                    mutated = self.timeout(Instant::now()).await;
                }
            }
        }
    }
}

/// What the run loop keeps between drains.
#[derive(Default)]
struct LoopState {
    channel: Option<ChannelId>,
    route: Option<Route>,
    disconnected: Option<Instant>,
}

/// Sends one datagram; errors are like losses (ICE notices a path that stays dead).
async fn send(sock: &UdpSocket, data: &[u8], to: SocketAddr) {
    match sock.try_send_to(data, to) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            let _ = sock.send_to(data, to).await;
        }
        _ => {}
    }
}

/// A socket as the run loop uses it.
struct Sock {
    io: Arc<UdpSocket>,
    state: UdpSocketState,
    via: Via,
    /// It failed for good: no longer read.
    dead: bool,
}

/// Receive buffers: [`RECV_SLOTS`] slots, each room for a GRO batch.
struct RecvPool {
    buf: Vec<u8>,
    slot: usize,
    meta: [RecvMeta; RECV_SLOTS],
}

impl RecvPool {
    fn new(socks: &[Sock]) -> RecvPool {
        let gro = socks
            .iter()
            .map(|s| s.state.gro_segments())
            .max()
            .unwrap_or(1);
        let slot = (gro.max(1) * SEGMENT_ROOM).max(1 << 16);
        RecvPool {
            buf: vec![0u8; slot * RECV_SLOTS],
            slot,
            meta: [RecvMeta::default(); RECV_SLOTS],
        }
    }
}

/// Reads from the first socket that has datagrams: (its index, buffers filled). Sockets that
/// fail for good are marked dead.
fn recv(socks: &mut [Sock], pool: &mut RecvPool) -> Option<(usize, usize)> {
    for (k, s) in socks.iter_mut().enumerate() {
        if s.dead {
            continue;
        }
        loop {
            let mut slots = pool.buf.chunks_mut(pool.slot);
            let mut iovs: [IoSliceMut<'_>; RECV_SLOTS] =
                std::array::from_fn(|_| IoSliceMut::new(slots.next().expect("RECV_SLOTS slots")));
            let r = s.io.try_io(Interest::READABLE, || {
                s.state
                    .recv(UdpSockRef::from(&*s.io), &mut iovs, &mut pool.meta)
            });
            match r {
                Ok(0) => break,
                Ok(n) => return Some((k, n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors surface as read errors on some systems: not fatal.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    tracing::debug!(via = ?s.via, "socket read failed: {e}");
                    s.dead = true;
                    break;
                }
            }
        }
    }
    None
}

/// Transmits to one destination from one socket, of one size (the last may be shorter), sent
/// in one `sendmsg` with UDP GSO where the system has it.
#[derive(Default)]
struct Batch {
    sock: usize,
    to: Option<SocketAddr>,
    seg: usize,
    n: usize,
    short: bool,
    buf: Vec<u8>,
}

/// Adds a datagram to the batch, sending the batch first when this one cannot join it.
async fn push(socks: &[Sock], b: &mut Batch, sock: usize, to: SocketAddr, data: &[u8]) {
    let Some(s) = socks.get(sock) else { return };
    let joins = b.n > 0
        && b.sock == sock
        && b.to == Some(to)
        && !b.short
        && data.len() <= b.seg
        && b.n < s.state.max_gso_segments()
        && b.buf.len() + data.len() <= GSO_BYTES;
    if !joins {
        flush(socks, b).await;
        b.sock = sock;
        b.to = Some(to);
        b.seg = data.len();
    }
    b.buf.extend_from_slice(data);
    b.n += 1;
    b.short = data.len() < b.seg;
}

/// Sends the batch; errors are like losses (ICE notices a path that stays dead).
async fn flush(socks: &[Sock], b: &mut Batch) {
    if let (Some(s), Some(to), true) = (socks.get(b.sock), b.to, b.n > 0) {
        let t = Transmit {
            destination: to,
            ecn: None,
            contents: &b.buf,
            segment_size: (b.n > 1).then_some(b.seg),
            src_ip: None,
        };
        loop {
            let r = s.io.try_io(Interest::WRITABLE, || {
                s.state.try_send(UdpSockRef::from(&*s.io), &t)
            });
            match r {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if s.io.writable().await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    // A device without segmentation offload refuses GSO (quinn-udp then stops
                    // using it on this socket): these go one by one.
                    if b.n > 1 {
                        for d in b.buf.chunks(b.seg.max(1)) {
                            send(&s.io, d, to).await;
                        }
                    }
                    tracing::trace!("send failed: {e}");
                    break;
                }
            }
        }
    }
    b.buf.clear();
    b.n = 0;
    b.short = false;
}

/// The type of an ICE candidate (RFC 8445 §5.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandidateType {
    /// A local interface's address.
    Host,
    /// The address a NAT maps it to, as a STUN server saw it.
    Srflx,
    /// An address learned from connectivity checks (not in the description).
    Prflx,
    /// A TURN server's relayed address.
    Relay,
}

impl CandidateType {
    /// `host`, `srflx`, `prflx` or `relay`, as SDP names them.
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateType::Host => "host",
            CandidateType::Srflx => "srflx",
            CandidateType::Prflx => "prflx",
            CandidateType::Relay => "relay",
        }
    }
}

/// The `a=candidate` lines of a description: (address, type).
fn remote_candidates(sdp: &str) -> Vec<(SocketAddr, CandidateType)> {
    sdp.lines()
        .filter_map(|l| {
            // a=candidate:FOUNDATION COMPONENT TRANSPORT PRIORITY ADDRESS PORT typ TYPE ...
            let f: Vec<&str> = l
                .trim()
                .strip_prefix("a=candidate:")?
                .split_whitespace()
                .collect();
            let ip: IpAddr = f.get(4)?.parse().ok()?;
            let port: u16 = f.get(5)?.parse().ok()?;
            let kind = match (*f.get(6)?, *f.get(7)?) {
                ("typ", "host") => CandidateType::Host,
                ("typ", "srflx") => CandidateType::Srflx,
                ("typ", "prflx") => CandidateType::Prflx,
                ("typ", "relay") => CandidateType::Relay,
                _ => return None,
            };
            Some((SocketAddr::new(ip, port), kind))
        })
        .collect()
}

/// The path the data channel took: the pair ICE selected, as the data leaves this side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// From this side's own socket (a host candidate, or the server-reflexive one the peer
    /// knows it by) to the peer's address — the peer's relayed address when `remote_type` is
    /// [`CandidateType::Relay`]: then the data passes the peer's TURN relay.
    Direct {
        /// This side's socket.
        local: SocketAddr,
        /// The peer's address.
        remote: SocketAddr,
        /// The type of the peer's candidate.
        remote_type: CandidateType,
    },
    /// Through this side's TURN relay.
    Relay {
        /// The relayed address.
        relayed: SocketAddr,
        /// The TURN server.
        server: SocketAddr,
        /// How this side reaches it (the relayed address is UDP whichever it is).
        transport: TurnTransport,
        /// The peer's address as the relay sees it.
        remote: SocketAddr,
        /// The type of the peer's candidate.
        remote_type: CandidateType,
    },
    /// Not seen yet.
    Unknown,
}

impl Route {
    /// Whether the data passes a TURN relay, this side's or the peer's.
    pub fn relayed(&self) -> bool {
        match self {
            Route::Direct { remote_type, .. } => *remote_type == CandidateType::Relay,
            Route::Relay { .. } => true,
            Route::Unknown => false,
        }
    }

    /// This side's candidate type: [`CandidateType::Relay`] through its relay, else
    /// [`CandidateType::Host`] (the socket the data leaves from, whatever address the NAT
    /// gives it on the way).
    pub fn local_type(&self) -> Option<CandidateType> {
        match self {
            Route::Direct { .. } => Some(CandidateType::Host),
            Route::Relay { .. } => Some(CandidateType::Relay),
            Route::Unknown => None,
        }
    }

    /// The peer's candidate type.
    pub fn remote_type(&self) -> Option<CandidateType> {
        match self {
            Route::Direct { remote_type, .. } | Route::Relay { remote_type, .. } => {
                Some(*remote_type)
            }
            Route::Unknown => None,
        }
    }

    /// Whether this is the pair from `source` (a socket or relayed address) to `destination`.
    fn is(&self, source: SocketAddr, destination: SocketAddr) -> bool {
        match self {
            Route::Direct { local, remote, .. } => *local == source && *remote == destination,
            Route::Relay {
                relayed, remote, ..
            } => *relayed == source && *remote == destination,
            Route::Unknown => false,
        }
    }
}

/// Commands for the run loop.
pub enum Cmd {
    /// A message for the data channel (taken only below the high-water mark).
    Send(Vec<u8>),
    /// Answer when nothing is buffered any more.
    Flush(oneshot::Sender<()>),
    /// Close the data channel and stop.
    Close,
}

/// What the run loop reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// The data channel is open.
    Open(Route),
    /// A message from the peer.
    Data(Vec<u8>),
    /// The connection ended (why).
    Closed(String),
}

/// The application's end of a running peer.
pub struct Link {
    /// Commands.
    pub tx: mpsc::Sender<Cmd>,
    /// Events.
    pub rx: mpsc::Receiver<LinkEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_candidate_types() {
        let sdp = "v=0\r\n\
                   a=candidate:1 1 udp 2130706431 10.0.1.2 40000 typ host\r\n\
                   a=candidate:2 1 udp 1694498815 203.0.113.10 40000 typ srflx raddr 0.0.0.0 rport 0\r\n\
                   a=candidate:3 1 udp 16777215 203.0.113.1 50000 typ relay raddr 0.0.0.0 rport 0\r\n\
                   a=candidate:4 1 udp 1 fe80::1 9 typ host\r\n\
                   a=candidate:5 1 udp 1 host.local 9 typ host\r\n\
                   a=end-of-candidates\r\n";
        let c = remote_candidates(sdp);
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            c,
            vec![
                (addr("10.0.1.2:40000"), CandidateType::Host),
                (addr("203.0.113.10:40000"), CandidateType::Srflx),
                (addr("203.0.113.1:50000"), CandidateType::Relay),
                (addr("[fe80::1]:9"), CandidateType::Host),
            ]
        );
        let route = Route::Direct {
            local: addr("10.0.2.2:5000"),
            remote: addr("203.0.113.1:50000"),
            remote_type: CandidateType::Relay,
        };
        assert!(route.relayed());
        assert_eq!(route.local_type(), Some(CandidateType::Host));
        assert!(route.is(addr("10.0.2.2:5000"), addr("203.0.113.1:50000")));
        assert!(!route.is(addr("10.0.2.2:5000"), addr("203.0.113.10:40000")));
    }

    #[test]
    fn ice_urls() {
        assert_eq!(
            parse_url("stun:127.0.0.1:3478"),
            Some((None, "127.0.0.1".into(), 3478))
        );
        assert_eq!(
            parse_url("turn:example.org:3479?transport=udp"),
            Some((Some(TurnTransport::Udp), "example.org".into(), 3479))
        );
        assert_eq!(
            parse_url("turn:example.org:3479?transport=tcp"),
            Some((Some(TurnTransport::Tcp), "example.org".into(), 3479))
        );
        assert_eq!(
            parse_url("turns:example.org?transport=tcp"),
            Some((Some(TurnTransport::Tls), "example.org".into(), 5349))
        );
        assert_eq!(
            parse_url("turns:[::1]:443"),
            Some((Some(TurnTransport::Tls), "::1".into(), 443))
        );
        // DTLS and stuns: are not supported; nor is an unknown transport.
        assert_eq!(parse_url("turns:example.org:5349?transport=udp"), None);
        assert_eq!(parse_url("stuns:example.org:5349"), None);
        assert_eq!(parse_url("turn:example.org?transport=sctp"), None);
        assert_eq!(parse_url("stun:[::1]:9"), Some((None, "::1".into(), 9)));
    }

    /// A TURN server listed over UDP and TCP whose UDP side never answers: UDP is tried first
    /// (its Allocate arrives), TCP [`FALLBACK_AFTER`] later, and the TCP relay is the one kept.
    #[tokio::test]
    async fn falls_back_to_tcp_when_udp_is_silent() {
        use switchboard_stun::{Class, Message, MessageBuilder, Method};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_addr = tcp.local_addr().unwrap();
        let relayed: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        // A TURN server over TCP that grants any Allocate at once.
        tokio::spawn(async move {
            let (mut c, _) = tcp.accept().await.unwrap();
            let mut head = [0u8; 20];
            c.read_exact(&mut head).await.unwrap();
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let mut req = head.to_vec();
            req.resize(20 + len, 0);
            c.read_exact(&mut req[20..]).await.unwrap();
            let m = Message::parse(&req).unwrap();
            assert_eq!(m.method(), Method::ALLOCATE);
            let mut buf = [0u8; 256];
            let mut b = MessageBuilder::new(
                &mut buf,
                Class::Success,
                Method::ALLOCATE,
                m.transaction_id(),
            )
            .unwrap();
            b.xor_relayed_address(relayed)
                .unwrap()
                .lifetime(600)
                .unwrap();
            let n = b.finish();
            c.write_all(&buf[..n]).await.unwrap();
            // Hold the connection (the allocation lives with it).
            let _ = c.read(&mut buf).await;
        });
        let cfg = PeerConfig {
            ice_servers: vec![IceServer {
                urls: vec![
                    format!("turn:{}?transport=udp", silent.local_addr().unwrap()),
                    format!("turn:{tcp_addr}?transport=tcp"),
                ],
                username: Some("u".into()),
                credential: Some("p".into()),
            }],
            relay_only: true,
            host_ips: vec![Ipv4Addr::LOCALHOST.into()],
            ..PeerConfig::default()
        };
        let started = Instant::now();
        let agent = gather(&cfg).await.unwrap();
        let took = started.elapsed();
        let mut buf = [0u8; 512];
        let (n, _) = silent.try_recv_from(&mut buf).expect("UDP was tried first");
        assert_eq!(
            Message::parse(&buf[..n]).unwrap().method(),
            Method::ALLOCATE
        );
        assert_eq!(agent.candidates, vec![format!("relay {relayed}")]);
        assert_eq!(agent.relays.len(), 1);
        assert_eq!(agent.relays[0].client.transport(), TurnTransport::Tcp);
        // TCP started FALLBACK_AFTER after UDP, and gathering ended once it allocated.
        assert!(took >= FALLBACK_AFTER, "{took:?}");
        assert!(took < cfg.gather_timeout, "{took:?}");
    }

    async fn sock(via: Via) -> Sock {
        let io = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        widen(&io);
        let state = UdpSocketState::new(UdpSockRef::from(&*io)).unwrap();
        Sock {
            io,
            state,
            via,
            dead: false,
        }
    }

    /// Every datagram pushed arrives whole and in order, whether it left in a GSO batch (runs
    /// of one size to one destination, a shorter one closing a run) or alone, and whether it
    /// came in a GRO buffer or not.
    #[tokio::test]
    async fn batched_datagrams_arrive_whole_and_in_order() {
        let socks = vec![sock(Via::Host(0)).await];
        let mut rx = vec![sock(Via::Host(0)).await, sock(Via::Host(1)).await];
        let to = [
            rx[0].io.local_addr().unwrap(),
            rx[1].io.local_addr().unwrap(),
        ];
        let mut sent: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        let mut batch = Batch::default();
        let sizes = [
            1200, 1200, 1200, 1200, 700, 1200, 1200, 1300, 1300, 50, 1200,
        ];
        for (n, size) in sizes.iter().enumerate() {
            // Mostly to the first receiver, now and then to the second (which ends a batch).
            let k = usize::from(n % 4 == 3);
            let d: Vec<u8> = (0..*size).map(|i| (i * 7 + n) as u8).collect();
            push(&socks, &mut batch, 0, to[k], &d).await;
            sent[k].push(d);
        }
        // More than one GSO batch holds.
        for _ in 0..200 {
            let d = vec![9u8; 1000];
            push(&socks, &mut batch, 0, to[0], &d).await;
            sent[0].push(d);
        }
        flush(&socks, &mut batch).await;
        let mut pool = RecvPool::new(&rx);
        let mut got: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut coalesced = false;
        while got[0].len() + got[1].len() < sent[0].len() + sent[1].len() {
            assert!(Instant::now() < deadline, "datagrams missing");
            let Some((k, n)) = recv(&mut rx, &mut pool) else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            for (m, meta) in pool.meta[..n].iter().enumerate() {
                let buf = &pool.buf[m * pool.slot..m * pool.slot + meta.len];
                let stride = if meta.stride == 0 {
                    buf.len()
                } else {
                    meta.stride
                };
                coalesced |= stride < buf.len();
                got[k].extend(buf.chunks(stride).map(<[u8]>::to_vec));
            }
        }
        assert_eq!(got, sent);
        // Where the system has both, the runs went out as GSO batches and came in as one.
        if socks[0].state.max_gso_segments() > 1 && rx[0].state.gro_segments() > 1 {
            assert!(coalesced, "no GRO buffer came in");
        }
    }
}
