//! The TURN server state machine (RFC 8656): everything a listener's input can do, with no
//! sockets and no clock. Relay sockets are asked for through [`RelayProvider`].

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_stun::{
    attr, ChannelData, Class, Message, MessageBuilder, Method, PacketKind, TransactionId,
};

use crate::allocation::{Allocation, BindError, Traffic};
use crate::auth::{offered_algorithms, Credentials, Integrity, NonceIssuer, Reject, Verified};
use crate::binding::BindingService;
use crate::peer_filter::{PeerFilter, Refusal};
use crate::seam::{
    Arrival, DropReason, Family, FiveTuple, Now, Output, PeerDrop, PeerOutput, RelayError,
    RelayProvider, RelayRequest, Transport, Via,
};

/// TURN settings the state machine needs.
#[derive(Clone, Debug)]
pub struct TurnConfig {
    /// SOFTWARE attribute ("" for none).
    pub software: String,
    /// Lifetime when the client asks for none or for less (RFC 8656: 600 s).
    pub default_lifetime: u32,
    /// Longest lifetime granted.
    pub max_lifetime: u32,
    /// Permission lifetime (RFC 8656: 300 s).
    pub permission_lifetime: u32,
    /// Channel binding lifetime (RFC 8656: 600 s).
    pub channel_lifetime: u32,
    /// Nonce lifetime in seconds.
    pub nonce_lifetime: u64,
    /// Allocations per user (0: unlimited).
    pub user_quota: usize,
    /// Allocations in total (0: unlimited). Over it an Allocate gets 508, or 300 (Try
    /// Alternate) when [`alternate_servers`](Self::alternate_servers) has one of the client's
    /// address family.
    pub total_quota: usize,
    /// Relayed bytes per second per allocation, each direction counted (0: unlimited).
    pub bandwidth: u64,
    /// Advertised relay IP when the server sits behind a 1:1 NAT.
    pub external_ip: Option<IpAddr>,
    /// Which peers relays may reach.
    pub peer_filter: PeerFilter,
    /// Load shedding (RFC 8489 §10, RFC 8656 §7.2): servers an authenticated Allocate is
    /// redirected to with 300 and ALTERNATE-SERVER once `total_quota` is reached, round robin
    /// per address family. This server's own address is skipped, so every node of a pool can be
    /// given the same list.
    pub alternate_servers: Vec<SocketAddr>,
    /// ALTERNATE-DOMAIN added to redirects of requests that arrived over TLS: the name the
    /// alternates' certificates are checked against (RFC 8489 §14.16).
    pub alternate_domain: Option<String>,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            software: String::new(),
            default_lifetime: 600,
            max_lifetime: 3600,
            permission_lifetime: 300,
            channel_lifetime: 600,
            nonce_lifetime: 3600,
            user_quota: 0,
            total_quota: 0,
            bandwidth: 0,
            external_ip: None,
            peer_filter: PeerFilter::default(),
            alternate_servers: Vec::new(),
            alternate_domain: None,
        }
    }
}

/// Error codes the service answers with, in the order of [`TurnStats::refusals`].
pub const ERROR_CODES: [u16; 13] = [
    400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 486, 500, 508,
];

/// Counters; the server exports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TurnStats {
    /// Allocations created.
    pub allocations_created: u64,
    /// Allocations ended (deleted, expired).
    pub allocations_ended: u64,
    /// Ended-allocation records dropped because nobody took them ([`MAX_ENDED_RECORDS`]).
    pub ended_records_dropped: u64,
    /// Permissions created or refreshed.
    pub permissions: u64,
    /// Channel binds created or refreshed.
    pub channel_binds: u64,
    /// Packets relayed client → peer.
    pub packets_to_peer: u64,
    /// Bytes relayed client → peer.
    pub bytes_to_peer: u64,
    /// Packets relayed peer → client.
    pub packets_to_client: u64,
    /// Bytes relayed peer → client.
    pub bytes_to_client: u64,
    /// Requests with integrity that failed authentication.
    pub auth_failures: u64,
    /// Error responses by code, indexed like [`ERROR_CODES`].
    pub refusals: [u64; ERROR_CODES.len()],
    /// Client data dropped: no allocation, permission or channel, or over bandwidth.
    pub dropped_to_peer: u64,
    /// Peer data dropped: no permission or over bandwidth.
    pub dropped_to_client: u64,
    /// Allocate requests redirected to an alternate server (300 Try Alternate); not counted in
    /// [`refusals`](Self::refusals).
    pub redirects: u64,
}

impl TurnStats {
    fn refuse(&mut self, code: u16) {
        if let Some(i) = ERROR_CODES.iter().position(|c| *c == code) {
            self.refusals[i] += 1;
        }
    }
}

/// Comprehension-required attributes TURN requests may carry.
fn known_in_turn(typ: u16) -> bool {
    matches!(
        typ,
        attr::USERNAME
            | attr::USERHASH
            | attr::MESSAGE_INTEGRITY
            | attr::MESSAGE_INTEGRITY_SHA256
            | attr::REALM
            | attr::NONCE
            | attr::PASSWORD_ALGORITHM
            | attr::CHANNEL_NUMBER
            | attr::LIFETIME
            | attr::XOR_PEER_ADDRESS
            | attr::DATA
            | attr::REQUESTED_ADDRESS_FAMILY
            | attr::EVEN_PORT
            | attr::REQUESTED_TRANSPORT
            | attr::DONT_FRAGMENT
            | attr::RESERVATION_TOKEN
    )
}

/// How long an EVEN-PORT reservation is held (RFC 8656 §7.2: about 30 s).
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// The reason phrase of every 401 (RFC 8489 §14.8), whatever the cause: a missing credential,
/// an unknown user, a wrong password, an expired or revoked credential all look the same on the
/// wire. The cause goes to the log.
const UNAUTHENTICATED: &str = "Unauthenticated";

/// A port reserved by an Allocate with EVEN-PORT R=1, until a RESERVATION-TOKEN takes it or it
/// expires. It holds a socket, so it counts in the quotas like an allocation.
#[derive(Clone, Debug)]
struct Reservation {
    addr: SocketAddr,
    expires: Instant,
    /// Whose quota it counts against.
    user: String,
}

/// An error response to send: code, reason, and for a 300 where to go instead.
struct Refuse {
    code: u16,
    reason: &'static str,
    redirect: Option<Redirect>,
}

fn refuse(code: u16, reason: &'static str) -> Refuse {
    Refuse {
        code,
        reason,
        redirect: None,
    }
}

/// The attributes of a 300 (Try Alternate) response (RFC 8489 §10).
#[derive(Clone, Copy, Debug)]
struct Redirect {
    /// First ALTERNATE-SERVER: the client's address family, as RFC 8489 §10 requires.
    to: SocketAddr,
    /// Second ALTERNATE-SERVER, of the other family, when one is configured (a SHOULD).
    other: Option<SocketAddr>,
    /// Add ALTERNATE-DOMAIN (the request came over TLS and a domain is configured).
    domain: bool,
}

/// Whether `addr` is IPv4, IPv4-mapped IPv6 addresses (dual-stack sockets) included.
fn is_v4(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_ipv4()
}

/// The TURN server state machine: Binding, Allocate, Refresh, CreatePermission, ChannelBind,
/// Send/Data indications and ChannelData for every allocation.
pub struct TurnService {
    cfg: TurnConfig,
    creds: Arc<Credentials>,
    nonces: NonceIssuer,
    binding: BindingService,
    allocs: HashMap<FiveTuple, Allocation>,
    by_relay: HashMap<SocketAddr, FiveTuple>,
    /// Allocations and reservations per [`Verified::user`].
    per_user: HashMap<String, usize>,
    reservations: HashMap<[u8; 8], Reservation>,
    token_seed: [u8; 32],
    token_counter: u64,
    /// Round-robin positions in the alternate servers: IPv4, IPv6.
    alternate_next: [usize; 2],
    stats: TurnStats,
    /// Allocations ended since the last [`TurnService::take_ended`].
    ended: VecDeque<AllocationEnded>,
}

/// At most this many ended allocations wait for [`TurnService::take_ended`]; older ones are
/// dropped (and counted in [`TurnStats::ended_records_dropped`]).
pub const MAX_ENDED_RECORDS: usize = 65_536;

/// Why an allocation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Its lifetime ran out without a Refresh.
    Expired,
    /// The client deleted it (Refresh with LIFETIME 0).
    Deleted,
    /// Its TCP/TLS connection closed.
    ConnectionClosed,
}

impl EndReason {
    /// `expired`, `deleted` or `connection_closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Deleted => "deleted",
            EndReason::ConnectionClosed => "connection_closed",
        }
    }
}

/// An allocation that ended: for the I/O side's access log and event hooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocationEnded {
    /// The client's 5-tuple.
    pub five: FiveTuple,
    /// The relay address it held.
    pub relay: SocketAddr,
    /// The USERNAME that allocated it.
    pub username: String,
    /// Why it ended.
    pub reason: EndReason,
    /// How long it lived.
    pub duration: Duration,
    /// What it relayed.
    pub traffic: Traffic,
}

impl std::fmt::Debug for TurnService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnService")
            .field("allocations", &self.allocs.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl TurnService {
    /// A service; `secret` seeds nonces and reservation tokens (32 random bytes).
    pub fn new(cfg: TurnConfig, creds: Arc<Credentials>, secret: [u8; 32]) -> Self {
        let binding = BindingService::new(&cfg.software);
        let nonces = NonceIssuer::new(secret, cfg.nonce_lifetime);
        let mut token_seed = secret;
        token_seed.reverse();
        TurnService {
            cfg,
            creds,
            nonces,
            binding,
            allocs: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            reservations: HashMap::new(),
            token_seed,
            token_counter: 0,
            alternate_next: [0; 2],
            ended: VecDeque::new(),
            stats: TurnStats::default(),
        }
    }

    /// Replaces users and secrets (hot reload); live allocations are kept.
    pub fn set_credentials(&mut self, creds: Arc<Credentials>) {
        self.creds = creds;
    }

    /// Replaces the peer policy (hot reload).
    pub fn set_peer_filter(&mut self, filter: PeerFilter) {
        self.cfg.peer_filter = filter;
    }

    /// Replaces the alternate servers and ALTERNATE-DOMAIN of load-shedding redirects (hot
    /// reload).
    pub fn set_alternates(&mut self, servers: Vec<SocketAddr>, domain: Option<String>) {
        self.cfg.alternate_servers = servers;
        self.cfg.alternate_domain = domain;
    }

    /// Whether TURN requests are served (a realm and a credential exist).
    pub fn turn_enabled(&self) -> bool {
        self.creds.is_enabled()
    }

    /// Counters so far.
    pub fn stats(&self) -> &TurnStats {
        &self.stats
    }

    /// Live allocations.
    pub fn allocation_count(&self) -> usize {
        self.allocs.len()
    }

    /// Ports held by EVEN-PORT reservations.
    pub fn reservation_count(&self) -> usize {
        self.reservations.len()
    }

    /// Allocations and reservations `user` holds (what the per-user quota counts).
    pub fn held_by(&self, user: &str) -> usize {
        self.per_user.get(user).copied().unwrap_or(0)
    }

    /// The peer policy in force.
    pub fn peer_filter(&self) -> &PeerFilter {
        &self.cfg.peer_filter
    }

    /// Replaces the host's interface addresses in the peer policy (refused as the server's own
    /// unless allowed); the I/O layer refreshes them as interfaces come and go.
    pub fn set_local_addresses(&mut self, local: Vec<IpAddr>) {
        self.cfg.peer_filter.set_local(local);
    }

    /// The allocation of a client 5-tuple.
    pub fn allocation(&self, five: &FiveTuple) -> Option<&Allocation> {
        self.allocs.get(five)
    }

    /// Handles one datagram or stream frame from a client.
    pub fn handle<'a>(
        &mut self,
        now: Now,
        arrival: &Arrival,
        input: &'a [u8],
        out: &mut [u8],
        relays: &mut dyn RelayProvider,
    ) -> Output<'a> {
        match PacketKind::of(input) {
            PacketKind::Stun => {}
            PacketKind::ChannelData => return self.channel_data(now, arrival, input),
            _ => return Output::Drop(DropReason::NotStun),
        }
        let msg = match Message::parse(input) {
            Ok(m) => m,
            Err(_) => return Output::Drop(DropReason::Malformed),
        };
        if msg.check_fingerprint() == Some(false) {
            return Output::Drop(DropReason::BadFingerprint);
        }
        let five = FiveTuple {
            client: arrival.peer,
            server: arrival.local,
            transport: arrival.transport,
        };
        match (msg.class(), msg.method()) {
            (Class::Request, Method::BINDING) => self.binding.answer(arrival, &msg, out),
            (Class::Indication, Method::SEND) => self.send_indication(now, &five, &msg),
            (
                Class::Request,
                Method::ALLOCATE
                | Method::REFRESH
                | Method::CREATE_PERMISSION
                | Method::CHANNEL_BIND,
            ) => {
                let len = self.turn_request(now, arrival, &five, &msg, out, relays);
                match len {
                    Some((len, error)) => Output::Reply {
                        via: Via::Same,
                        to: arrival.peer,
                        len,
                        error,
                    },
                    None => Output::Drop(DropReason::OutputTooSmall),
                }
            }
            (Class::Request, _) => self.binding.answer(arrival, &msg, out),
            (Class::Indication, _) => Output::Drop(DropReason::Indication),
            (Class::Success | Class::Error, _) => Output::Drop(DropReason::Response),
        }
    }

    fn channel_data<'a>(&mut self, now: Now, arrival: &Arrival, input: &'a [u8]) -> Output<'a> {
        let Ok(cd) = ChannelData::parse(input) else {
            return Output::Drop(DropReason::Malformed);
        };
        let five = FiveTuple {
            client: arrival.peer,
            server: arrival.local,
            transport: arrival.transport,
        };
        let Some(alloc) = self.allocs.get_mut(&five) else {
            self.stats.dropped_to_peer += 1;
            return Output::Drop(DropReason::ChannelData);
        };
        let Some(peer) = alloc.channel_peer(cd.channel, now.mono) else {
            self.stats.dropped_to_peer += 1;
            return Output::Drop(DropReason::ChannelData);
        };
        // A channel implies a permission, but the permission may have lapsed separately.
        if !alloc.permits(peer.ip(), now.mono) || !alloc.bucket.take(cd.data.len(), now.mono) {
            self.stats.dropped_to_peer += 1;
            return Output::Drop(DropReason::ChannelData);
        }
        self.stats.packets_to_peer += 1;
        self.stats.bytes_to_peer += cd.data.len() as u64;
        alloc.traffic.packets_to_peer += 1;
        alloc.traffic.bytes_to_peer += cd.data.len() as u64;
        Output::Relay {
            relay: alloc.relay,
            peer,
            data: cd.data,
        }
    }

    fn send_indication<'a>(&mut self, now: Now, five: &FiveTuple, msg: &Message<'a>) -> Output<'a> {
        let drop = |stats: &mut TurnStats| {
            stats.dropped_to_peer += 1;
            Output::Drop(DropReason::Indication)
        };
        let Some(alloc) = self.allocs.get_mut(five) else {
            return drop(&mut self.stats);
        };
        // RFC 8489 §6.3.2: an indication with unknown comprehension-required attributes is
        // silently discarded.
        if !msg
            .unknown_comprehension_required(known_in_turn)
            .as_slice()
            .is_empty()
        {
            return drop(&mut self.stats);
        }
        let (Ok(Some(peer)), Ok(Some(data))) = (msg.xor_peer_address(), msg.data()) else {
            return drop(&mut self.stats);
        };
        if !alloc.permits(peer.ip(), now.mono) || !alloc.bucket.take(data.len(), now.mono) {
            return drop(&mut self.stats);
        }
        self.stats.packets_to_peer += 1;
        self.stats.bytes_to_peer += data.len() as u64;
        alloc.traffic.packets_to_peer += 1;
        alloc.traffic.bytes_to_peer += data.len() as u64;
        Output::Relay {
            relay: alloc.relay,
            peer,
            data,
        }
    }

    /// Handles a datagram `payload` that `peer` sent to relay address `relay`, writing what goes
    /// to the client into `out` (at least `payload.len() + PEER_OVERHEAD` bytes).
    pub fn handle_peer(
        &mut self,
        now: Now,
        relay: SocketAddr,
        peer: SocketAddr,
        payload: &[u8],
        out: &mut [u8],
    ) -> PeerOutput {
        let Some(five) = self.by_relay.get(&relay).copied() else {
            return PeerOutput::Drop(PeerDrop::NoAllocation);
        };
        let Some(alloc) = self.allocs.get_mut(&five) else {
            return PeerOutput::Drop(PeerDrop::NoAllocation);
        };
        if !alloc.permits(peer.ip(), now.mono) {
            self.stats.dropped_to_client += 1;
            return PeerOutput::Drop(PeerDrop::NoPermission);
        }
        if !alloc.bucket.take(payload.len(), now.mono) {
            self.stats.dropped_to_client += 1;
            return PeerOutput::Drop(PeerDrop::Bandwidth);
        }
        let len = match alloc.peer_channel(peer, now.mono) {
            Some(channel) => {
                // Over streams ChannelData is padded to a multiple of 4 (RFC 8656 §12.5).
                let pad = five.transport != Transport::Udp;
                ChannelData::encode(channel, payload, out, pad).ok()
            }
            None => {
                self.token_counter += 1;
                data_indication(peer, payload, self.token_counter, out)
            }
        };
        match len {
            Some(len) => {
                self.stats.packets_to_client += 1;
                self.stats.bytes_to_client += payload.len() as u64;
                alloc.traffic.packets_to_client += 1;
                alloc.traffic.bytes_to_client += payload.len() as u64;
                PeerOutput::ToClient { five, len }
            }
            None => PeerOutput::Drop(PeerDrop::OutputTooSmall),
        }
    }

    /// Ends expired allocations and reservations, releasing their relays. Call about once a
    /// second.
    pub fn expire(&mut self, now: Now, relays: &mut dyn RelayProvider) {
        let expired: Vec<FiveTuple> = self
            .allocs
            .iter()
            .filter(|(_, a)| a.expires <= now.mono)
            .map(|(f, _)| *f)
            .collect();
        for five in expired {
            self.remove(&five, relays, now, EndReason::Expired);
        }
        let stale: Vec<[u8; 8]> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.expires <= now.mono)
            .map(|(t, _)| *t)
            .collect();
        for t in stale {
            if let Some(r) = self.take_reservation(&t) {
                relays.release(r.addr);
            }
        }
    }

    /// Ends every allocation of a client connection that closed (TCP/TLS).
    pub fn connection_closed(
        &mut self,
        five: &FiveTuple,
        relays: &mut dyn RelayProvider,
        now: Now,
    ) {
        self.remove(five, relays, now, EndReason::ConnectionClosed);
    }

    /// The allocations that ended since the last call, oldest first.
    pub fn take_ended(&mut self) -> Vec<AllocationEnded> {
        self.ended.drain(..).collect()
    }

    fn remove(
        &mut self,
        five: &FiveTuple,
        relays: &mut dyn RelayProvider,
        now: Now,
        reason: EndReason,
    ) {
        if let Some(a) = self.allocs.remove(five) {
            self.by_relay.remove(&a.relay);
            self.uncount(&a.user);
            relays.release(a.relay);
            self.stats.allocations_ended += 1;
            if self.ended.len() >= MAX_ENDED_RECORDS {
                self.ended.pop_front();
                self.stats.ended_records_dropped += 1;
            }
            self.ended.push_back(AllocationEnded {
                five: a.five,
                relay: a.relay,
                username: a.username,
                reason,
                duration: now.mono.saturating_duration_since(a.created),
                traffic: a.traffic,
            });
        }
    }

    /// One more allocation or reservation for `user`.
    fn count(&mut self, user: &str) {
        *self.per_user.entry(user.to_string()).or_insert(0) += 1;
    }

    /// One allocation or reservation of `user` less.
    fn uncount(&mut self, user: &str) {
        if let Some(n) = self.per_user.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(user);
            }
        }
    }

    fn hold_reservation(&mut self, token: [u8; 8], r: Reservation) {
        self.count(&r.user);
        self.reservations.insert(token, r);
    }

    fn take_reservation(&mut self, token: &[u8; 8]) -> Option<Reservation> {
        let r = self.reservations.remove(token)?;
        self.uncount(&r.user);
        Some(r)
    }

    fn next_token(&mut self) -> [u8; 8] {
        use sha2::{Digest, Sha256};
        self.token_counter += 1;
        let mut h = Sha256::new();
        h.update(self.token_seed);
        h.update(self.token_counter.to_be_bytes());
        let d = h.finalize();
        let mut t = [0u8; 8];
        t.copy_from_slice(&d[..8]);
        t
    }

    /// Authenticates and runs a TURN request; returns (length, is_error) of the reply.
    fn turn_request(
        &mut self,
        now: Now,
        arrival: &Arrival,
        five: &FiveTuple,
        msg: &Message<'_>,
        out: &mut [u8],
        relays: &mut dyn RelayProvider,
    ) -> Option<(usize, bool)> {
        if !self.creds.is_enabled() {
            self.stats.refuse(400);
            tracing::debug!(client = %arrival.peer, "TURN request while TURN is not configured");
            return self.error(
                msg,
                out,
                None,
                refuse(400, "Bad Request: TURN is not configured on this server"),
                None,
            );
        }
        let verified = match self.creds.verify(msg, &self.nonces, five, now.unix) {
            Ok(v) => v,
            Err(reject) => {
                // Every 401 has the same reason phrase; `why` is for the log only.
                let (r, why, challenge) = match reject {
                    Reject::Challenge => (refuse(401, UNAUTHENTICATED), "no credentials", true),
                    Reject::Unauthorized(why) => {
                        self.stats.auth_failures += 1;
                        (refuse(401, UNAUTHENTICATED), why, true)
                    }
                    Reject::StaleNonce => (refuse(438, "Stale Nonce"), "stale nonce", true),
                    Reject::BadRequest(why) => {
                        self.stats.auth_failures += 1;
                        (refuse(400, why), why, false)
                    }
                };
                self.stats.refuse(r.code);
                if matches!(reject, Reject::Challenge | Reject::StaleNonce) {
                    tracing::debug!(client = %arrival.peer, code = r.code, reason = why, "TURN challenge");
                } else {
                    // Debug-quoted: the name is the client's, unchecked.
                    let user = msg.username().ok().flatten().unwrap_or("");
                    tracing::info!(client = %arrival.peer, user = ?user, method = msg.method().0, code = r.code, reason = why, "TURN authentication refused");
                }
                let nonce = challenge.then(|| self.nonces.issue(five, now.unix));
                return self.error(msg, out, None, r, nonce.as_deref());
            }
        };
        let unknown = msg.unknown_comprehension_required(known_in_turn);
        if !unknown.as_slice().is_empty() {
            self.stats.refuse(420);
            tracing::info!(client = %arrival.peer, user = %verified.username, unknown = ?unknown.as_slice(), "TURN request refused: 420 unknown attributes");
            let n = {
                let mut b = MessageBuilder::response_to(out, msg, Class::Error).ok()?;
                b.error_code(420, "Unknown Attribute").ok()?;
                b.unknown_attributes(unknown.as_slice()).ok()?;
                self.finish(&mut b, msg, Some(&verified))?;
                b.finish()
            };
            return Some((n, true));
        }
        let result = match msg.method() {
            Method::ALLOCATE => self.allocate(now, five, msg, &verified, out, relays),
            Method::REFRESH => self.refresh(now, five, msg, &verified, out, relays),
            Method::CREATE_PERMISSION => self.create_permission(now, five, msg, &verified, out),
            _ => self.channel_bind(now, five, msg, &verified, out),
        };
        match result {
            Ok(n) => Some((n?, false)),
            Err(r) => {
                if let Some(to) = r.redirect {
                    self.stats.redirects += 1;
                    tracing::info!(client = %arrival.peer, user = %verified.username, alternate = %to.to, other = ?to.other, "TURN allocation redirected: allocation limit reached");
                } else {
                    self.stats.refuse(r.code);
                    tracing::info!(client = %arrival.peer, user = %verified.username, method = msg.method().0, code = r.code, reason = r.reason, "TURN request refused");
                }
                self.error(msg, out, Some(&verified), r, None)
            }
        }
    }

    /// Ends a response. Authenticated: SOFTWARE, integrity (RFC 8489 §9.2.4's kind, see
    /// [`Verified::integrity`]) and FINGERPRINT. Unauthenticated (a 401, 438 or 400 anyone can
    /// provoke with a spoofed source): nothing the RFC does not require, so the answer stays
    /// small — no SOFTWARE, and FINGERPRINT only when the request carried one.
    fn finish(
        &self,
        b: &mut MessageBuilder<'_>,
        msg: &Message<'_>,
        verified: Option<&Verified>,
    ) -> Option<()> {
        match verified {
            Some(v) => {
                if !self.cfg.software.is_empty() {
                    b.software(&self.cfg.software).ok()?;
                }
                match v.integrity {
                    Integrity::Sha1 => b.message_integrity(&v.key).ok()?,
                    Integrity::Sha256 => b.message_integrity_sha256(&v.key).ok()?,
                };
                b.fingerprint().ok()?;
            }
            None => {
                if msg.has_fingerprint() {
                    b.fingerprint().ok()?;
                }
            }
        }
        Some(())
    }

    fn error(
        &self,
        msg: &Message<'_>,
        out: &mut [u8],
        verified: Option<&Verified>,
        r: Refuse,
        nonce: Option<&str>,
    ) -> Option<(usize, bool)> {
        let mut b = MessageBuilder::response_to(out, msg, Class::Error).ok()?;
        b.error_code(r.code, r.reason).ok()?;
        if let Some(to) = r.redirect {
            b.alternate_server(to.to).ok()?;
            if let Some(other) = to.other {
                b.alternate_server(other).ok()?;
            }
            if let Some(domain) = self.cfg.alternate_domain.as_deref().filter(|_| to.domain) {
                b.alternate_domain(domain).ok()?;
            }
        }
        if let Some(nonce) = nonce {
            b.realm(self.creds.realm()).ok()?;
            b.nonce(nonce).ok()?;
            b.password_algorithms(offered_algorithms()).ok()?;
        }
        self.finish(&mut b, msg, verified)?;
        Some((b.finish(), true))
    }

    fn lifetime(&self, msg: &Message<'_>) -> Result<u32, Refuse> {
        match msg.lifetime() {
            Ok(None) => Ok(self.cfg.default_lifetime),
            Ok(Some(0)) => Ok(0),
            Ok(Some(l)) => Ok(l
                .min(self.cfg.max_lifetime)
                .max(self.cfg.default_lifetime.min(self.cfg.max_lifetime))),
            Err(_) => Err(refuse(400, "Bad Request: malformed LIFETIME")),
        }
    }

    fn allocate(
        &mut self,
        now: Now,
        five: &FiveTuple,
        msg: &Message<'_>,
        v: &Verified,
        out: &mut [u8],
        relays: &mut dyn RelayProvider,
    ) -> Result<Option<usize>, Refuse> {
        if let Some(a) = self.allocs.get(five) {
            if a.allocate_tid == msg.transaction_id() && a.key == v.key {
                // A retransmitted Allocate gets the original answer (RFC 8656 §7.2), including the
                // RESERVATION-TOKEN while the reservation is still held.
                let (advertised, granted) = (a.advertised, a.granted);
                let token = a.reserved.filter(|t| self.reservations.contains_key(t));
                return Ok(self.allocate_success(msg, five, advertised, granted, token, v, out));
            }
            return Err(refuse(437, "Allocation Mismatch"));
        }
        match msg.requested_transport() {
            Ok(Some(17)) => {}
            Ok(Some(_)) => {
                return Err(refuse(
                    442,
                    "Unsupported Transport Protocol: only UDP relays",
                ))
            }
            Ok(None) | Err(_) => {
                return Err(refuse(400, "Bad Request: REQUESTED-TRANSPORT is required"))
            }
        }
        let token = msg
            .reservation_token()
            .map_err(|_| refuse(400, "Bad Request: malformed RESERVATION-TOKEN"))?;
        let even = msg
            .even_port()
            .map_err(|_| refuse(400, "Bad Request: malformed EVEN-PORT"))?;
        let family = match msg.requested_address_family() {
            Ok(None) | Ok(Some(1)) => Family::V4,
            Ok(Some(2)) => Family::V6,
            Ok(Some(_)) | Err(_) => return Err(refuse(440, "Address Family not Supported")),
        };
        let family_given = msg.get(attr::REQUESTED_ADDRESS_FAMILY).is_some();
        if token.is_some() && (even.is_some() || family_given) {
            return Err(refuse(
                400,
                "Bad Request: RESERVATION-TOKEN with EVEN-PORT or REQUESTED-ADDRESS-FAMILY",
            ));
        }
        match msg.additional_address_family() {
            Ok(None) => {}
            Ok(Some(2)) if !family_given => {}
            _ => return Err(refuse(400, "Bad Request: bad ADDITIONAL-ADDRESS-FAMILY")),
        }
        // RFC 8656 §7.2 has no special case for zero: max(min(requested, max), default).
        let lifetime = match self.lifetime(msg)? {
            0 => self.cfg.default_lifetime.min(self.cfg.max_lifetime).max(1),
            l => l,
        };
        // Quotas count relay sockets: an allocation, and the port an EVEN-PORT R=1 reserves with
        // it. Taking a reservation (RESERVATION-TOKEN) turns a counted socket into an
        // allocation; for the user only when the reservation was theirs.
        let held = token.and_then(|t| self.reservations.get(&t));
        let sockets = 1 + usize::from(even == Some(true));
        let user_need = sockets - usize::from(held.is_some_and(|r| r.user == v.user));
        let total_need = sockets - usize::from(held.is_some());
        if self.cfg.user_quota > 0
            && user_need > 0
            && self.held_by(&v.user) + user_need > self.cfg.user_quota
        {
            return Err(refuse(486, "Allocation Quota Reached"));
        }
        let total = self.allocs.len() + self.reservations.len();
        if self.cfg.total_quota > 0 && total_need > 0 && total + total_need > self.cfg.total_quota {
            // Load shedding: an authenticated Allocate (this runs after the credential check, so
            // the 300 carries MESSAGE-INTEGRITY, RFC 8489 §14.8) is sent to another node.
            if let Some(redirect) = self.redirect(five) {
                return Err(Refuse {
                    code: 300,
                    reason: "Try Alternate",
                    redirect: Some(redirect),
                });
            }
            return Err(refuse(
                508,
                "Insufficient Capacity: server allocation limit",
            ));
        }
        let reserved = match token {
            Some(t) => match self.take_reservation(&t) {
                Some(held) => Some((t, held)),
                None => {
                    return Err(refuse(
                        508,
                        "Insufficient Capacity: unknown or expired RESERVATION-TOKEN",
                    ))
                }
            },
            None => None,
        };
        let req = RelayRequest {
            five: *five,
            family: match &reserved {
                Some((_, r)) if r.addr.is_ipv6() => Family::V6,
                Some(_) => Family::V4,
                None => family,
            },
            even,
            reserved: reserved.as_ref().map(|(_, r)| r.addr),
            dont_fragment: msg.dont_fragment(),
        };
        let bound = relays.bind(req);
        if let (Err(_), Some((t, held))) = (&bound, reserved) {
            // Keep the reservation so that expire() still releases the reserved socket.
            self.hold_reservation(t, held);
        }
        let binding = match bound {
            Ok(b) => b,
            Err(RelayError::NoCapacity) => {
                return Err(refuse(508, "Insufficient Capacity: no relay port"))
            }
            Err(RelayError::FamilyUnsupported) => {
                return Err(refuse(440, "Address Family not Supported"))
            }
        };
        let advertised = match (self.cfg.external_ip, binding.addr) {
            (Some(ip @ IpAddr::V4(_)), SocketAddr::V4(a)) => SocketAddr::new(ip, a.port()),
            (Some(ip @ IpAddr::V6(_)), SocketAddr::V6(a)) => SocketAddr::new(ip, a.port()),
            (_, a) => a,
        };
        let mut alloc = Allocation::new(
            *five,
            binding.addr,
            advertised,
            v.username.clone(),
            v.user.clone(),
            v.key.clone(),
            Duration::from_secs(lifetime.into()),
            msg.transaction_id(),
            self.cfg.bandwidth,
            now.mono,
        );
        let new_token = match binding.reserved {
            Some(addr) => {
                let t = self.next_token();
                self.hold_reservation(
                    t,
                    Reservation {
                        addr,
                        expires: now.mono + RESERVATION_LIFETIME,
                        user: v.user.clone(),
                    },
                );
                alloc.reserved = Some(t);
                Some(t)
            }
            None => None,
        };
        self.by_relay.insert(binding.addr, *five);
        self.allocs.insert(*five, alloc);
        self.count(&v.user);
        self.stats.allocations_created += 1;
        Ok(self.allocate_success(msg, five, advertised, lifetime, new_token, v, out))
    }

    /// Where to send a client this server cannot take: an alternate of the client's address
    /// family (none: no redirect, RFC 8489 §10 requires that family first), then one of the
    /// other family if configured.
    fn redirect(&mut self, five: &FiveTuple) -> Option<Redirect> {
        let v4 = is_v4(five.client);
        let to = self.next_alternate(v4, five.server)?;
        let other = self.next_alternate(!v4, five.server);
        Some(Redirect {
            to,
            other,
            domain: five.transport == Transport::Tls,
        })
    }

    /// The next alternate server of a family, round robin, skipping this server's own address.
    fn next_alternate(&mut self, v4: bool, own: SocketAddr) -> Option<SocketAddr> {
        let canonical = |a: SocketAddr| (a.ip().to_canonical(), a.port());
        let own = canonical(own);
        let usable = |a: &&SocketAddr| is_v4(**a) == v4 && canonical(**a) != own;
        let all = &self.cfg.alternate_servers;
        let n = all.iter().filter(usable).count();
        if n == 0 {
            return None;
        }
        let slot = &mut self.alternate_next[usize::from(!v4)];
        let pick = all.iter().filter(usable).nth(*slot % n).copied();
        *slot = (*slot + 1) % n;
        pick
    }

    #[allow(clippy::too_many_arguments)]
    fn allocate_success(
        &self,
        msg: &Message<'_>,
        five: &FiveTuple,
        relayed: SocketAddr,
        lifetime: u32,
        token: Option<[u8; 8]>,
        v: &Verified,
        out: &mut [u8],
    ) -> Option<usize> {
        let mut b = MessageBuilder::response_to(out, msg, Class::Success).ok()?;
        b.xor_relayed_address(relayed).ok()?;
        // Dual allocation is not offered: answer with the IPv4 relay and an ADDRESS-ERROR-CODE
        // for IPv6 (RFC 8656 §7.2).
        if msg.additional_address_family().ok().flatten() == Some(2) {
            b.address_error_code(2, 440, "Address Family not Supported")
                .ok()?;
        }
        b.lifetime(lifetime).ok()?;
        if let Some(t) = token {
            b.reservation_token(t).ok()?;
        }
        b.xor_mapped_address(five.client).ok()?;
        self.finish(&mut b, msg, Some(v))?;
        Some(b.finish())
    }

    fn owned<'s>(
        &'s mut self,
        five: &FiveTuple,
        v: &Verified,
    ) -> Result<&'s mut Allocation, Refuse> {
        let a = self
            .allocs
            .get_mut(five)
            .ok_or(refuse(437, "Allocation Mismatch: no allocation"))?;
        if a.username != v.username {
            return Err(refuse(441, "Wrong Credentials"));
        }
        Ok(a)
    }

    fn refresh(
        &mut self,
        now: Now,
        five: &FiveTuple,
        msg: &Message<'_>,
        v: &Verified,
        out: &mut [u8],
        relays: &mut dyn RelayProvider,
    ) -> Result<Option<usize>, Refuse> {
        let lifetime = self.lifetime(msg)?;
        let alloc = self.owned(five, v)?;
        // RFC 8656 §7.3: a REQUESTED-ADDRESS-FAMILY that is not the allocation's family is a 443,
        // whatever its value.
        match msg.requested_address_family() {
            Ok(None) => {}
            Ok(Some(1)) if alloc.relay.is_ipv4() => {}
            Ok(Some(2)) if alloc.relay.is_ipv6() => {}
            Ok(Some(_)) => return Err(refuse(443, "Peer Address Family Mismatch")),
            Err(_) => {
                return Err(refuse(
                    400,
                    "Bad Request: malformed REQUESTED-ADDRESS-FAMILY",
                ))
            }
        }
        if lifetime == 0 {
            self.remove(five, relays, now, EndReason::Deleted);
        } else {
            alloc.expires = now.mono + Duration::from_secs(lifetime.into());
        }
        Ok(self.simple_success(msg, v, out, Some(lifetime)))
    }

    fn check_peer(&self, alloc_relay: SocketAddr, peer: SocketAddr) -> Result<(), Refuse> {
        if peer.is_ipv4() != alloc_relay.is_ipv4() {
            return Err(refuse(443, "Peer Address Family Mismatch"));
        }
        match self.cfg.peer_filter.check(peer.ip()) {
            Ok(()) => Ok(()),
            Err(Refusal::Denied) => Err(refuse(403, "Forbidden: peer address denied by policy")),
            Err(Refusal::NotPublic) => Err(refuse(403, "Forbidden: peer address is not public")),
            Err(Refusal::OwnAddress) => Err(refuse(403, "Forbidden: peer is this server")),
        }
    }

    fn create_permission(
        &mut self,
        now: Now,
        five: &FiveTuple,
        msg: &Message<'_>,
        v: &Verified,
        out: &mut [u8],
    ) -> Result<Option<usize>, Refuse> {
        let relay = self.owned(five, v)?.relay;
        let mut peers = Vec::new();
        for p in msg.xor_peer_addresses() {
            let p = p.map_err(|_| refuse(400, "Bad Request: malformed XOR-PEER-ADDRESS"))?;
            self.check_peer(relay, p)?;
            peers.push(p.ip());
        }
        if peers.is_empty() {
            return Err(refuse(400, "Bad Request: XOR-PEER-ADDRESS is required"));
        }
        let lifetime = Duration::from_secs(self.cfg.permission_lifetime.into());
        let alloc = self.owned(five, v)?;
        for ip in &peers {
            if !alloc.permit(*ip, lifetime, now.mono) {
                return Err(refuse(508, "Insufficient Capacity: too many permissions"));
            }
        }
        self.stats.permissions += peers.len() as u64;
        Ok(self.simple_success(msg, v, out, None))
    }

    fn channel_bind(
        &mut self,
        now: Now,
        five: &FiveTuple,
        msg: &Message<'_>,
        v: &Verified,
        out: &mut [u8],
    ) -> Result<Option<usize>, Refuse> {
        let relay = self.owned(five, v)?.relay;
        let (Ok(Some(number)), Ok(Some(peer))) = (msg.channel_number(), msg.xor_peer_address())
        else {
            return Err(refuse(
                400,
                "Bad Request: CHANNEL-NUMBER and XOR-PEER-ADDRESS are required",
            ));
        };
        self.check_peer(relay, peer)?;
        let channel_life = Duration::from_secs(self.cfg.channel_lifetime.into());
        let perm_life = Duration::from_secs(self.cfg.permission_lifetime.into());
        let alloc = self.owned(five, v)?;
        match alloc.bind_channel(number, peer, channel_life, now.mono) {
            Ok(()) => {}
            Err(BindError::BadNumber) => {
                return Err(refuse(
                    400,
                    "Bad Request: channel number outside 0x4000-0x7FFF",
                ))
            }
            Err(BindError::Conflict) => {
                return Err(refuse(400, "Bad Request: channel or peer already bound"))
            }
            Err(BindError::Full) => {
                return Err(refuse(508, "Insufficient Capacity: too many channels"))
            }
        }
        if !alloc.permit(peer.ip(), perm_life, now.mono) {
            return Err(refuse(508, "Insufficient Capacity: too many permissions"));
        }
        self.stats.channel_binds += 1;
        Ok(self.simple_success(msg, v, out, None))
    }

    fn simple_success(
        &self,
        msg: &Message<'_>,
        v: &Verified,
        out: &mut [u8],
        lifetime: Option<u32>,
    ) -> Option<usize> {
        let mut b = MessageBuilder::response_to(out, msg, Class::Success).ok()?;
        if let Some(l) = lifetime {
            b.lifetime(l).ok()?;
        }
        self.finish(&mut b, msg, Some(v))?;
        Some(b.finish())
    }
}

/// A Data indication carrying `payload` from `peer` (RFC 8656 §11.4); `serial` makes its
/// transaction id unique.
fn data_indication(peer: SocketAddr, payload: &[u8], serial: u64, out: &mut [u8]) -> Option<usize> {
    let mut tid = [0x53u8; 12];
    tid[4..].copy_from_slice(&serial.to_be_bytes());
    let mut b =
        MessageBuilder::new(out, Class::Indication, Method::DATA, TransactionId(tid)).ok()?;
    b.xor_peer_address(peer).ok()?;
    b.data(payload).ok()?;
    Some(b.finish())
}
