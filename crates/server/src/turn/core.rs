//! The I/O side of STUN/TURN: one [`Core`] shared by every listener. It runs Binding requests
//! lock-free, feeds everything else to the sans-IO [`TurnService`], binds relay sockets when the
//! service asks ([`RelayProvider`]), and routes relayed data: client → peer from the relay
//! socket, peer → client from the listener socket (UDP) or the connection's writer (TCP/TLS).
//!
//! Relay sockets are read by one task each; the task waits for readiness, then drains the socket
//! synchronously into a per-thread buffer, so an idle allocation costs a socket and a parked
//! task, not a buffer. Relay ports are drawn at random from `--relay-ports`
//! ([`PortPicker`]); the peer policy refuses the host's interface addresses, refreshed every
//! [`INTERFACE_REFRESH`].

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge, Counter, Gauge};
use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use switchboard_stun::is_binding_request;
use switchboard_turn::auth::Credentials;
use switchboard_turn::peer_filter::PeerFilter;
use switchboard_turn::{
    Arrival, BindingService, Family, FiveTuple, Now, Output, Parity, PeerOutput, PortPicker,
    RelayBinding, RelayError, RelayProvider, RelayRequest, TurnConfig, TurnService, TurnStats,
    ERROR_CODES, PEER_OVERHEAD,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

use super::outq::OutQueue;
use crate::config::{Settings, TurnSettings};
use crate::net::Sock;

/// How often the host's interface addresses are re-read for the peer policy.
pub(crate) const INTERFACE_REFRESH: Duration = Duration::from_secs(30);

/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams drained from one relay socket per wake-up before yielding.
const RELAY_BUDGET: usize = 64;

fn now() -> Now {
    Now {
        mono: Instant::now(),
        unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }
}

/// Datagrams (or GRO-coalesced runs) received from a relay socket per recvmmsg.
const RELAY_BATCH: usize = 4;
/// Bytes per receive slot (a GRO run can fill 64 KiB).
const RELAY_SLOT: usize = 65_536;

/// One receive batch's buffers, its metadata and the reply buffer, per worker thread: kept out
/// of the relay tasks, so an idle allocation's task holds none of them.
type RelayBufs = (Vec<u8>, Vec<u8>, [RecvMeta; RELAY_BATCH]);

thread_local! {
    static RELAY_BUFS: RefCell<RelayBufs> = RefCell::new((
        vec![0u8; RELAY_BATCH * RELAY_SLOT],
        vec![0u8; MAX_DATAGRAM + PEER_OVERHEAD],
        [RecvMeta::default(); RELAY_BATCH],
    ));
}

struct Relay {
    sock: Arc<UdpSocket>,
    task: Option<AbortHandle>,
}

/// Counters for the TURN data path that the I/O layer sees itself.
struct IoStats {
    relay_send_errors: Counter,
    client_send_drops: Counter,
    relays_open: Gauge,
}

/// The UDP clients holding allocations: the owner of each relay, and each owner's relay count
/// (an allocation may hold an IPv4 and an IPv6 relay).
#[derive(Default)]
struct UdpClients {
    owner: HashMap<SocketAddr, FiveTuple>,
    count: HashMap<FiveTuple, u32>,
}

impl UdpClients {
    fn add(&mut self, relay: SocketAddr, five: FiveTuple) {
        if self.owner.insert(relay, five).is_none() {
            *self.count.entry(five).or_insert(0) += 1;
        }
    }

    fn remove(&mut self, relay: SocketAddr) {
        let Some(five) = self.owner.remove(&relay) else {
            return;
        };
        if let Some(n) = self.count.get_mut(&five) {
            *n -= 1;
            if *n == 0 {
                self.count.remove(&five);
            }
        }
    }
}

/// The node-bus topic of TURN revocations (one user name per message).
pub(crate) const REVOCATIONS_TOPIC: &str = "turn.revoked";

/// Shared by every STUN listener.
pub(crate) struct Core {
    binding: BindingService,
    turn: Mutex<TurnService>,
    relays: RwLock<HashMap<SocketAddr, Relay>>,
    reserved: Mutex<HashMap<SocketAddr, std::net::UdpSocket>>,
    ports: Mutex<PortPicker>,
    /// The host's interface addresses last read (refused as peers unless allowed).
    local_addrs: Mutex<Vec<IpAddr>>,
    relay_ip: Option<IpAddr>,
    relay_ip6: Option<IpAddr>,
    udp_out: RwLock<HashMap<SocketAddr, Arc<Sock>>>,
    stream_out: RwLock<HashMap<FiveTuple, Arc<OutQueue>>>,
    /// UDP 5-tuples holding an allocation (the one-port socket tells their ChannelData from QUIC
    /// by it, RFC 9443), with the relays that made them so.
    udp_clients: RwLock<UdpClients>,
    io_stats: IoStats,
    /// The TURN settings credentials are built from (replaced on reload).
    turn_settings: Mutex<TurnSettings>,
    /// Revoked REST users or usernames; kept across reloads (until restart).
    revoked: Mutex<BTreeSet<String>>,
    /// Write a line per ended allocation (`--access-log`).
    access_log: bool,
    /// Where ended allocations are reported (`--webhook`).
    webhooks: std::sync::OnceLock<Arc<crate::webhooks::Webhooks>>,
}

/// Builds the credential set from TURN settings and the revocation list.
fn credentials(t: &TurnSettings, revoked: &BTreeSet<String>) -> Arc<Credentials> {
    let mut creds = Credentials::new(&t.realm);
    for who in revoked {
        creds.revoke(who);
    }
    for u in &t.users {
        creds.add_user(u);
    }
    for s in &t.secrets {
        let _ = creds.add_secret(s);
    }
    Arc::new(creds)
}

/// Builds the peer policy; the server's own addresses are always refused: those configured here,
/// and the interface addresses `local` (which the caller keeps current).
pub(crate) fn peer_filter(
    settings: &Settings,
    relay_ip: Option<IpAddr>,
    local: &[IpAddr],
) -> PeerFilter {
    let t = &settings.turn;
    let s = &settings.stun;
    let mut own: Vec<IpAddr> = s
        .udp
        .0
        .iter()
        .chain(&s.tcp.0)
        .chain(&s.tls.0)
        .chain(&settings.listen.0)
        .map(|a| a.ip())
        .collect();
    own.extend(s.alt_address);
    own.extend(relay_ip);
    own.extend(t.external_ip);
    own.retain(|ip| !ip.is_unspecified());
    own.sort();
    own.dedup();
    let mut filter = PeerFilter::new(t.allow_peers.clone(), t.deny_peers.clone(), own);
    filter.set_local(local.to_vec());
    filter
}

/// The host's interface addresses, or none (logged) when they cannot be read.
fn read_interfaces() -> Option<Vec<IpAddr>> {
    match crate::net::interfaces::local_addresses() {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the interface addresses (getifaddrs); the TURN peer policy keeps the last list");
            None
        }
    }
}

impl Core {
    pub(crate) fn new(settings: &Settings, secret: [u8; 32]) -> Arc<Core> {
        let t = &settings.turn;
        // Relays bind to --relay-ip, else to the first STUN UDP (or one-port) address of each
        // family.
        let udp_ip = |v4: bool| {
            settings
                .stun
                .udp
                .0
                .iter()
                .chain(&settings.listen.0)
                .map(|a| a.ip())
                .find(|ip| ip.is_ipv4() == v4)
        };
        let relay_ip = t
            .relay_ip
            .filter(|ip| ip.is_ipv4())
            .or_else(|| udp_ip(true));
        let relay_ip6 = t
            .relay_ip
            .filter(|ip| ip.is_ipv6())
            .or_else(|| udp_ip(false));
        let local = read_interfaces().unwrap_or_default();
        let cfg = TurnConfig {
            software: settings.stun.software.clone(),
            max_lifetime: u32::try_from(t.max_lifetime.as_secs()).unwrap_or(u32::MAX),
            user_quota: t.user_quota,
            total_quota: t.total_quota,
            bandwidth: t.max_bps,
            external_ip: t.external_ip,
            peer_filter: peer_filter(settings, relay_ip.or(relay_ip6), &local),
            alternate_servers: t.alternate_servers.clone(),
            alternate_domain: t.alternate_domain.clone(),
            ..TurnConfig::default()
        };
        log_alternates(t);
        let (lo, hi) = (t.relay_ports.low, t.relay_ports.high);
        // The port draws get their own key, derived from the node secret.
        let port_seed: [u8; 32] = {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(b"switchboard relay ports");
            h.update(secret);
            h.finalize().into()
        };
        Arc::new(Core {
            binding: BindingService::new(&settings.stun.software),
            turn: Mutex::new(TurnService::new(
                cfg,
                credentials(&settings.turn, &BTreeSet::new()),
                secret,
            )),
            turn_settings: Mutex::new(settings.turn.clone()),
            revoked: Mutex::new(BTreeSet::new()),
            access_log: settings.access_log,
            webhooks: std::sync::OnceLock::new(),
            relays: RwLock::new(HashMap::new()),
            reserved: Mutex::new(HashMap::new()),
            ports: Mutex::new(PortPicker::new(lo, hi, port_seed)),
            local_addrs: Mutex::new(local),
            relay_ip,
            relay_ip6,
            udp_out: RwLock::new(HashMap::new()),
            udp_clients: RwLock::new(UdpClients::default()),
            stream_out: RwLock::new(HashMap::new()),
            io_stats: IoStats {
                relay_send_errors: counter!("switchboard_turn_relay_send_errors_total"),
                client_send_drops: counter!("switchboard_turn_client_send_drops_total"),
                relays_open: gauge!("switchboard_turn_relay_sockets"),
            },
        })
    }

    fn turn(&self) -> std::sync::MutexGuard<'_, TurnService> {
        self.turn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The relay addresses, for the start-up line.
    pub(crate) fn relay_ips(&self) -> String {
        let ips: Vec<String> = self
            .relay_ip
            .iter()
            .chain(&self.relay_ip6)
            .map(|ip| ip.to_string())
            .collect();
        if ips.is_empty() {
            "none".into()
        } else {
            ips.join(",")
        }
    }

    /// Whether TURN is configured.
    pub(crate) fn turn_enabled(&self) -> bool {
        self.turn().turn_enabled()
    }

    /// Hot reload: new users, secrets, peer policy and alternate servers; live allocations
    /// stay.
    pub(crate) fn reload(&self, settings: &Settings) {
        let filter = {
            let local = self.local_addrs.lock().unwrap_or_else(|e| e.into_inner());
            peer_filter(settings, self.relay_ip.or(self.relay_ip6), &local)
        };
        *self.turn_settings.lock().unwrap_or_else(|e| e.into_inner()) = settings.turn.clone();
        let creds = {
            let revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            credentials(&settings.turn, &revoked)
        };
        let mut t = self.turn();
        t.set_credentials(creds);
        t.set_peer_filter(filter);
        t.set_alternates(
            settings.turn.alternate_servers.clone(),
            settings.turn.alternate_domain.clone(),
        );
        drop(t);
        log_alternates(&settings.turn);
    }

    /// Revokes TURN REST credentials before they expire: `who` is a user (every credential
    /// naming it) or one full REST username. Live allocations keep running until their next
    /// authenticated request (Refresh, CreatePermission, ChannelBind), which is refused.
    pub(crate) fn revoke(&self, who: &str) {
        let creds = {
            let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            if !revoked.insert(who.to_string()) {
                return;
            }
            let t = self.turn_settings.lock().unwrap_or_else(|e| e.into_inner());
            credentials(&t, &revoked)
        };
        self.turn().set_credentials(creds);
        tracing::info!(who, "TURN credentials revoked");
    }

    /// Re-reads the host's interface addresses; a change reaches the peer policy at once.
    pub(crate) fn refresh_interfaces(&self) {
        let Some(now) = read_interfaces() else { return };
        {
            let mut local = self.local_addrs.lock().unwrap_or_else(|e| e.into_inner());
            if *local == now {
                return;
            }
            local.clone_from(&now);
        }
        let list: Vec<String> = now.iter().map(|ip| ip.to_string()).collect();
        tracing::info!(addresses = %list.join(","), "TURN peer policy: interface addresses changed; relays refuse them");
        self.turn().set_local_addresses(now);
    }

    /// Relay sockets open: allocations' and EVEN-PORT reservations'.
    fn relay_sockets(&self) -> usize {
        let relays = self.relays.read().map(|r| r.len()).unwrap_or(0);
        let reserved = self.reserved.lock().map(|r| r.len()).unwrap_or(0);
        relays + reserved
    }

    /// Whether `user` (or the REST username) is revoked.
    pub(crate) fn is_revoked(&self, user: &str) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(user)
    }

    /// Reports ended allocations to `webhooks` too.
    pub(crate) fn set_webhooks(&self, webhooks: Arc<crate::webhooks::Webhooks>) {
        let _ = self.webhooks.set(webhooks);
    }

    /// Registers a UDP listener socket for sending relayed data to clients.
    pub(crate) fn register_udp(&self, sock: Arc<Sock>) {
        let mut m = self.udp_out.write().unwrap_or_else(|e| e.into_inner());
        m.entry(sock.local).or_insert(sock);
    }

    /// Whether the UDP 5-tuple `five` holds an allocation.
    pub(crate) fn has_udp_allocation(&self, five: &FiveTuple) -> bool {
        self.udp_clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .count
            .contains_key(five)
    }

    /// Registers a stream client's writer.
    pub(crate) fn register_stream(&self, five: FiveTuple, tx: Arc<OutQueue>) {
        self.stream_out
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(five, tx);
    }

    /// A stream client went away: its allocation ends with it (RFC 8656 §3.1).
    pub(crate) fn stream_closed(self: &Arc<Self>, five: &FiveTuple) {
        self.stream_out
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(five);
        let mut binder = Binder { core: self };
        self.turn().connection_closed(five, &mut binder, now());
    }

    /// Handles one datagram or frame from a client.
    pub(crate) fn client_input<'a>(
        self: &Arc<Self>,
        arrival: &Arrival,
        input: &'a [u8],
        out: &mut [u8],
    ) -> Output<'a> {
        // Binding requests never touch TURN state: answer them without the lock.
        if is_binding_request(input) {
            return self.binding.handle(arrival, input, out);
        }
        let mut binder = Binder { core: self };
        self.turn().handle(now(), arrival, input, out, &mut binder)
    }

    /// Sends client data out of a relay socket.
    pub(crate) fn send_to_peer(&self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) {
        let relays = self.relays.read().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = relays.get(&relay) {
            if r.sock.try_send_to(data, peer).is_err() {
                self.io_stats.relay_send_errors.increment(1);
            }
        }
    }

    /// Sends relayed data or a reply to a client, by its 5-tuple.
    fn send_to_client(&self, five: &FiveTuple, data: &[u8]) {
        match five.transport {
            switchboard_turn::Transport::Udp => {
                let socks = self.udp_out.read().unwrap_or_else(|e| e.into_inner());
                let sock = socks.get(&five.server).map(|s| (s, None)).or_else(|| {
                    let wildcard =
                        SocketAddr::new(unspecified(five.server.ip()), five.server.port());
                    socks.get(&wildcard).map(|s| (s, Some(five.server.ip())))
                });
                match sock {
                    Some((s, src_ip)) => {
                        let drops = &self.io_stats.client_send_drops;
                        if !super::gather::queue(s, five.client, src_ip, data, drops)
                            && !s.try_send(five.client, data, src_ip)
                        {
                            drops.increment(1);
                        }
                    }
                    None => self.io_stats.client_send_drops.increment(1),
                }
            }
            _ => {
                let outs = self.stream_out.read().unwrap_or_else(|e| e.into_inner());
                let sent = outs.get(five).map(|q| q.try_push(data)).unwrap_or(false);
                if !sent {
                    self.io_stats.client_send_drops.increment(1);
                }
            }
        }
    }

    /// Expires allocations and exports counters. Called once a second.
    pub(crate) fn tick(self: &Arc<Self>, exported: &mut TurnStats, counters: &TurnCounters) {
        let mut binder = Binder { core: self };
        let (stats, active, ended) = {
            let mut t = self.turn();
            t.expire(now(), &mut binder);
            (t.stats().clone(), t.allocation_count(), t.take_ended())
        };
        if self.access_log {
            for e in &ended {
                log_ended(e);
            }
        }
        if let Some(w) = self.webhooks.get() {
            for e in &ended {
                w.emit(
                    &crate::webhooks::Audience::Hub,
                    serde_json::json!({
                        "name": "turn_allocation_ended",
                        "transport": e.five.transport.as_str(),
                        "client": e.five.client.to_string(),
                        "relay": e.relay.to_string(),
                        "user": e.username,
                        "reason": e.reason.as_str(),
                        "duration_ms": e.duration.as_millis() as u64,
                        "bytes_to_peer": e.traffic.bytes_to_peer,
                        "bytes_to_client": e.traffic.bytes_to_client,
                    }),
                );
            }
        }
        counters.export(exported, &stats, active);
        self.io_stats.relays_open.set(self.relay_sockets() as f64);
        *exported = stats;
    }

    /// Binds a relay socket of `parity` on a random free port of the range (with
    /// [`Parity::EvenPair`] also the next port, returned second).
    #[allow(clippy::type_complexity)]
    fn pick_port(
        &self,
        family: Family,
        parity: Parity,
    ) -> Result<
        (
            std::net::UdpSocket,
            SocketAddr,
            Option<(std::net::UdpSocket, SocketAddr)>,
        ),
        RelayError,
    > {
        let ip = match family {
            Family::V4 => self.relay_ip,
            Family::V6 => self.relay_ip6,
        }
        .ok_or(RelayError::FamilyUnsupported)?;
        // Ports this node already holds are known to be taken without a bind.
        let ours = |a: &SocketAddr| {
            self.relays
                .read()
                .map(|r| r.contains_key(a))
                .unwrap_or(false)
                || self
                    .reserved
                    .lock()
                    .map(|r| r.contains_key(a))
                    .unwrap_or(false)
        };
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let (_, (sock, addr), next) = ports
            .pick(parity, |port| {
                let a = SocketAddr::new(ip, port);
                if ours(&a) {
                    return None;
                }
                bind_relay(a).ok().map(|s| (s, a))
            })
            .ok_or(RelayError::NoCapacity)?;
        Ok((sock, addr, next))
    }

    fn start_relay(
        self: &Arc<Self>,
        std_sock: std::net::UdpSocket,
        addr: SocketAddr,
    ) -> Result<(), RelayError> {
        let sock = Arc::new(UdpSocket::from_std(std_sock).map_err(|_| RelayError::NoCapacity)?);
        let state =
            UdpSocketState::new(UdpSockRef::from(&*sock)).map_err(|_| RelayError::NoCapacity)?;
        // The relay loop reads only the peer's address and GRO's segment size.
        crate::net::no_receive_ancillary(&*sock);
        let core = Arc::downgrade(self);
        let task_sock = sock.clone();
        let task = tokio::spawn(async move { relay_loop(core, task_sock, state, addr).await });
        self.relays
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                addr,
                Relay {
                    sock,
                    task: Some(task.abort_handle()),
                },
            );
        Ok(())
    }
}

/// Logs the load-shedding redirect targets, if any.
fn log_alternates(t: &TurnSettings) {
    if !t.alternate_servers.is_empty() {
        let list: Vec<String> = t.alternate_servers.iter().map(|a| a.to_string()).collect();
        tracing::info!(
            total_quota = t.total_quota,
            alternates = %list.join(","),
            domain = t.alternate_domain.as_deref().unwrap_or(""),
            "TURN load shedding: over the allocation limit, Allocate is redirected (300 Try Alternate)"
        );
    }
}

fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// A relay socket: one per allocation, 1 MiB buffers.
fn bind_relay(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    crate::net::bind_udp(addr, false, 1 << 20)
}

/// Sets the DF bit on everything a relay socket sends (DONT-FRAGMENT, RFC 8656 §14.8).
fn set_dont_fragment(sock: &std::net::UdpSocket, v6: bool) {
    use std::os::fd::AsRawFd;
    let (level, name, value) = if v6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    };
    // SAFETY: setsockopt on a valid fd with a pointer to a live c_int of the stated size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The [`RelayProvider`] the service calls while the core's TURN lock is held.
struct Binder<'a> {
    core: &'a Arc<Core>,
}

impl RelayProvider for Binder<'_> {
    fn bind(&mut self, req: RelayRequest) -> Result<RelayBinding, RelayError> {
        let core = self.core;
        let (sock, addr, reserved) = match req.reserved {
            Some(addr) => {
                let sock = core
                    .reserved
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&addr)
                    .ok_or(RelayError::NoCapacity)?;
                (sock, addr, None)
            }
            None => {
                // EVEN-PORT R=1: an even port whose successor is free too; the successor is kept
                // as the reservation.
                let parity = match req.even {
                    Some(true) => Parity::EvenPair,
                    Some(false) => Parity::Even,
                    None => Parity::Any,
                };
                core.pick_port(req.family, parity)?
            }
        };
        if req.dont_fragment {
            set_dont_fragment(&sock, addr.is_ipv6());
        }
        core.start_relay(sock, addr)?;
        let reserved_addr = reserved.map(|(s, a)| {
            core.reserved
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(a, s);
            a
        });
        if req.five.transport == switchboard_turn::Transport::Udp {
            core.udp_clients
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .add(addr, req.five);
        }
        tracing::debug!(relay = %addr, client = %req.five.client, "relay bound");
        Ok(RelayBinding {
            addr,
            reserved: reserved_addr,
        })
    }

    fn release(&mut self, addr: SocketAddr) {
        self.core
            .udp_clients
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(addr);
        let removed = self
            .core
            .relays
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr);
        match removed {
            Some(mut r) => {
                if let Some(t) = r.task.take() {
                    t.abort();
                }
                tracing::debug!(relay = %addr, "relay released");
            }
            None => {
                self.core
                    .reserved
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&addr);
            }
        }
    }
}

async fn relay_loop(
    core: std::sync::Weak<Core>,
    sock: Arc<UdpSocket>,
    state: UdpSocketState,
    relay: SocketAddr,
) {
    let mut rounds = 0usize;
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        let Some(core) = core.upgrade() else { return };
        let drained = RELAY_BUFS.with(|bufs| {
            let (storage, out, metas) = &mut *bufs.borrow_mut();
            let (a, rest) = storage.split_at_mut(RELAY_SLOT);
            let (b, rest) = rest.split_at_mut(RELAY_SLOT);
            let (c, d) = rest.split_at_mut(RELAY_SLOT);
            let mut slots = [
                IoSliceMut::new(a),
                IoSliceMut::new(b),
                IoSliceMut::new(c),
                IoSliceMut::new(d),
            ];
            // A short batch means the socket is drained: tell tokio (WouldBlock) so readiness is
            // cleared without another recvmmsg that would only return EAGAIN.
            let mut got = 0usize;
            let r = sock.try_io(Interest::READABLE, || {
                got = state.recv(UdpSockRef::from(&*sock), &mut slots, metas)?;
                if got < RELAY_BATCH {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(())
                }
            });
            let now = now();
            for (meta, slot) in metas.iter().zip(slots.iter()).take(got) {
                let stride = meta.stride.max(1);
                for payload in slot[..meta.len.min(RELAY_SLOT)].chunks(stride) {
                    let action = core.turn().handle_peer(now, relay, meta.addr, payload, out);
                    if let PeerOutput::ToClient { five, len } = action {
                        core.send_to_client(&five, &out[..len]);
                    }
                }
            }
            r.is_err()
        });
        // Fairness: a relay flooded by its peer yields to the others now and then.
        rounds = if drained { 0 } else { rounds + 1 };
        if rounds >= RELAY_BUDGET / RELAY_BATCH {
            rounds = 0;
            tokio::task::yield_now().await;
        }
    }
}

/// Prometheus counters mirroring [`TurnStats`].
pub(crate) struct TurnCounters {
    allocations_created: Counter,
    allocations_ended: Counter,
    allocations: Gauge,
    permissions: Counter,
    channel_binds: Counter,
    packets_to_peer: Counter,
    bytes_to_peer: Counter,
    packets_to_client: Counter,
    bytes_to_client: Counter,
    auth_failures: Counter,
    dropped_to_peer: Counter,
    dropped_to_client: Counter,
    redirects: Counter,
    refusals: Vec<Counter>,
}

impl TurnCounters {
    pub(crate) fn new() -> Self {
        TurnCounters {
            allocations_created: counter!("switchboard_turn_allocations_created_total"),
            allocations_ended: counter!("switchboard_turn_allocations_ended_total"),
            allocations: gauge!("switchboard_turn_allocations"),
            permissions: counter!("switchboard_turn_permissions_total"),
            channel_binds: counter!("switchboard_turn_channel_binds_total"),
            packets_to_peer: counter!("switchboard_turn_relayed_packets_total", "direction" => "to_peer"),
            bytes_to_peer: counter!("switchboard_turn_relayed_bytes_total", "direction" => "to_peer"),
            packets_to_client: counter!("switchboard_turn_relayed_packets_total", "direction" => "to_client"),
            bytes_to_client: counter!("switchboard_turn_relayed_bytes_total", "direction" => "to_client"),
            auth_failures: counter!("switchboard_turn_auth_failures_total"),
            dropped_to_peer: counter!("switchboard_turn_dropped_total", "direction" => "to_peer"),
            dropped_to_client: counter!("switchboard_turn_dropped_total", "direction" => "to_client"),
            redirects: counter!("switchboard_turn_redirects_total"),
            refusals: ERROR_CODES
                .iter()
                .map(|c| counter!("switchboard_turn_refusals_total", "code" => c.to_string()))
                .collect(),
        }
    }

    fn export(&self, before: &TurnStats, now: &TurnStats, active: usize) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        self.allocations_created
            .increment(d(before.allocations_created, now.allocations_created));
        self.allocations_ended
            .increment(d(before.allocations_ended, now.allocations_ended));
        self.allocations.set(active as f64);
        self.permissions
            .increment(d(before.permissions, now.permissions));
        self.channel_binds
            .increment(d(before.channel_binds, now.channel_binds));
        self.packets_to_peer
            .increment(d(before.packets_to_peer, now.packets_to_peer));
        self.bytes_to_peer
            .increment(d(before.bytes_to_peer, now.bytes_to_peer));
        self.packets_to_client
            .increment(d(before.packets_to_client, now.packets_to_client));
        self.bytes_to_client
            .increment(d(before.bytes_to_client, now.bytes_to_client));
        self.auth_failures
            .increment(d(before.auth_failures, now.auth_failures));
        self.dropped_to_peer
            .increment(d(before.dropped_to_peer, now.dropped_to_peer));
        self.dropped_to_client
            .increment(d(before.dropped_to_client, now.dropped_to_client));
        self.redirects.increment(d(before.redirects, now.redirects));
        for (i, c) in self.refusals.iter().enumerate() {
            c.increment(d(before.refusals[i], now.refusals[i]));
        }
    }
}

/// Runs [`Core::tick`] every second until shutdown.
pub(crate) async fn ticker(core: Arc<Core>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let counters = TurnCounters::new();
    let mut exported = TurnStats::default();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut interfaces = tokio::time::interval(INTERFACE_REFRESH);
    interfaces.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The first tick is immediate; Core::new has just read the list.
    interfaces.tick().await;
    loop {
        tokio::select! {
            _ = crate::stopped(&mut stop) => return,
            _ = every.tick() => core.tick(&mut exported, &counters),
            _ = interfaces.tick() => core.refresh_interfaces(),
        }
    }
}

/// The access line of an allocation that ended (target `switchboard::access`, as HTTP
/// requests).
fn log_ended(e: &switchboard_turn::AllocationEnded) {
    tracing::info!(
        target: "switchboard::access",
        transport = e.five.transport.as_str(),
        peer = %e.five.client,
        listener = %e.five.server,
        relay = %e.relay,
        // Authenticated (its MESSAGE-INTEGRITY checked), so not arbitrary client text.
        user = %e.username,
        reason = e.reason.as_str(),
        duration_ms = (e.duration.as_secs_f64() * 1e6).round() / 1e3,
        bytes_to_peer = e.traffic.bytes_to_peer,
        bytes_to_client = e.traffic.bytes_to_client,
        packets_to_peer = e.traffic.packets_to_peer,
        packets_to_client = e.traffic.packets_to_client,
        "turn allocation"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Listen;
    use switchboard_turn::peer_filter::Refusal;
    use switchboard_turn::Transport;

    /// TURN on wildcard listeners (0.0.0.0 and ::), relays on loopback.
    fn wildcard() -> Settings {
        let mut s = Settings::default();
        s.stun.udp = Listen(vec!["0.0.0.0:3478".parse().unwrap()]);
        s.stun.tcp = Listen(vec!["[::]:3478".parse().unwrap()]);
        s.stun.tls = Listen(vec![]);
        s.turn.realm = "t".into();
        s.turn.users = vec!["u:p".parse().unwrap()];
        s.turn.relay_ip = Some("127.0.0.1".parse().unwrap());
        s
    }

    #[test]
    fn a_wildcard_listener_refuses_every_interface_address() {
        let core = Core::new(&wildcard(), [7; 32]);
        let local = crate::net::interfaces::local_addresses().unwrap();
        assert!(local.contains(&"127.0.0.1".parse().unwrap()), "{local:?}");
        let t = core.turn();
        for ip in &local {
            assert_eq!(t.peer_filter().check(*ip), Err(Refusal::OwnAddress), "{ip}");
        }
    }

    #[test]
    fn allow_peer_wins_over_interface_addresses_and_reload_keeps_them() {
        let mut s = wildcard();
        s.turn.allow_peers = vec!["127.0.0.0/8".parse().unwrap()];
        let core = Core::new(&s, [7; 32]);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(core.turn().peer_filter().check(lo), Ok(()));
        core.reload(&wildcard());
        assert_eq!(
            core.turn().peer_filter().check(lo),
            Err(Refusal::OwnAddress)
        );
        // A refresh that finds the same interfaces changes nothing.
        core.refresh_interfaces();
        assert_eq!(
            core.turn().peer_filter().check(lo),
            Err(Refusal::OwnAddress)
        );
    }

    fn request(even: Option<bool>, reserved: Option<SocketAddr>) -> RelayRequest {
        let a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        RelayRequest {
            five: FiveTuple {
                client: a,
                server: a,
                transport: Transport::Udp,
            },
            family: Family::V4,
            even,
            reserved,
            dont_fragment: false,
        }
    }

    #[tokio::test]
    async fn reserved_ports_count_as_relay_sockets() {
        let core = Core::new(&wildcard(), [7; 32]);
        let mut b = Binder { core: &core };
        let first = b.bind(request(Some(true), None)).unwrap();
        let next = first.reserved.unwrap();
        assert_eq!(first.addr.port() % 2, 0);
        assert_eq!(next.port(), first.addr.port() + 1);
        // The allocation's socket and the reserved one.
        assert_eq!(core.relay_sockets(), 2);
        // Taking the reservation moves its socket to a relay: still two.
        let taken = b.bind(request(None, Some(next))).unwrap();
        assert_eq!(taken.addr, next);
        assert_eq!(core.relay_sockets(), 2);
        b.release(first.addr);
        b.release(taken.addr);
        assert_eq!(core.relay_sockets(), 0);
        // A reservation that is released unused (expired) closes its socket too.
        let again = b.bind(request(Some(true), None)).unwrap();
        b.release(again.reserved.unwrap());
        assert_eq!(core.relay_sockets(), 1);
        b.release(again.addr);
        assert_eq!(core.relay_sockets(), 0);
    }

    #[tokio::test]
    async fn relay_ports_are_random_within_the_range() {
        let mut s = wildcard();
        s.turn.relay_ports = "40000-59999".parse().unwrap();
        let core = Core::new(&s, [9; 32]);
        let mut b = Binder { core: &core };
        let ports: Vec<u16> = (0..16)
            .map(|_| b.bind(request(None, None)).unwrap().addr.port())
            .collect();
        assert!(
            ports.iter().all(|p| (40000..=59999).contains(p)),
            "{ports:?}"
        );
        let neighbours = ports
            .windows(2)
            .filter(|w| w[1].abs_diff(w[0]) <= 1)
            .count();
        assert!(neighbours <= 1, "sequential relay ports: {ports:?}");
        assert_eq!(core.relay_sockets(), 16);
    }
}
