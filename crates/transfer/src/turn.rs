//! A sans-IO TURN client (RFC 8656), enough for one relay candidate: Allocate with
//! long-term credentials (the 401 challenge, 438 stale nonces), Refresh before the allocation
//! expires, ChannelBind per peer (which also installs its permission, refreshed before either
//! lapses), Send indications until a channel is bound, ChannelData after.
//!
//! Time comes in as an argument; datagrams for the server come out of [`TurnClient::poll_transmit`].
//! Over UDP they go to the server itself; over TCP or TLS ([`TurnTransport`]) they go to a
//! local bridge that frames them onto the connection ([`crate::turn_stream`]), and the client
//! does not retransmit (the connection is reliable; an unanswered request still fails after
//! the same time).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard_stun::{
    long_term_key_md5, ChannelData, Class, Message, MessageBuilder, Method, TransactionId,
};

/// Retransmit an unanswered request this often...
const RTO: Duration = Duration::from_millis(500);
/// ...this many times.
const TRIES: u32 = 6;
/// Bind channels again this often (they live 10 minutes, permissions 5).
const REBIND: Duration = Duration::from_secs(240);

/// How the client reaches its TURN server (RFC 8656 §3.1). The relayed address is UDP
/// whichever it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TurnTransport {
    /// `turn:…?transport=udp` (or no transport).
    Udp,
    /// `turn:…?transport=tcp`.
    Tcp,
    /// `turns:…?transport=tcp`.
    Tls,
}

impl TurnTransport {
    /// `udp`, `tcp` or `tls`.
    pub fn as_str(self) -> &'static str {
        match self {
            TurnTransport::Udp => "udp",
            TurnTransport::Tcp => "tcp",
            TurnTransport::Tls => "tls",
        }
    }
}

/// What the client tells its owner.
#[derive(Debug, PartialEq, Eq)]
pub enum TurnEvent {
    /// The allocation stands: `relayed` is the relay candidate's address.
    Allocated {
        /// XOR-RELAYED-ADDRESS.
        relayed: SocketAddr,
        /// XOR-MAPPED-ADDRESS (a server-reflexive address), when given.
        mapped: Option<SocketAddr>,
    },
    /// Data from `peer` through the relay.
    Data {
        /// The peer's address as the relay sees it.
        peer: SocketAddr,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The allocation failed or was lost.
    Failed(String),
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Allocate,
    Refresh,
    Bind(SocketAddr, u16),
}

struct Pending {
    kind: Kind,
    bytes: Vec<u8>,
    next: Instant,
    tries: u32,
}

struct Auth {
    realm: String,
    nonce: String,
    key: [u8; 16],
}

struct Peer {
    channel: u16,
    bound: bool,
    rebind_at: Instant,
}

/// One allocation on one TURN server.
pub struct TurnClient {
    server: SocketAddr,
    /// Where its datagrams go: `server` over UDP, the local bridge over TCP/TLS.
    destination: SocketAddr,
    transport: TurnTransport,
    user: String,
    password: String,
    auth: Option<Auth>,
    relayed: Option<SocketAddr>,
    refresh_at: Option<Instant>,
    failed: bool,
    pending: HashMap<TransactionId, Pending>,
    peers: HashMap<SocketAddr, Peer>,
    channels: HashMap<u16, SocketAddr>,
    next_channel: u16,
    out: VecDeque<Vec<u8>>,
}

fn tid() -> TransactionId {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    TransactionId(b)
}

impl TurnClient {
    /// Starts allocating on `server` with a TURN REST (or static) user and password.
    pub fn new(server: SocketAddr, user: &str, password: &str, now: Instant) -> TurnClient {
        TurnClient::via(server, TurnTransport::Udp, server, user, password, now)
    }

    /// Starts allocating on `server` reached over `transport`, its datagrams going to
    /// `destination` (for TCP/TLS the local bridge to the connection).
    pub fn via(
        server: SocketAddr,
        transport: TurnTransport,
        destination: SocketAddr,
        user: &str,
        password: &str,
        now: Instant,
    ) -> TurnClient {
        let mut c = TurnClient {
            server,
            destination,
            transport,
            user: user.to_owned(),
            password: password.to_owned(),
            auth: None,
            relayed: None,
            refresh_at: None,
            failed: false,
            pending: HashMap::new(),
            peers: HashMap::new(),
            channels: HashMap::new(),
            next_channel: 0x4000,
            out: VecDeque::new(),
        };
        c.request(Kind::Allocate, now);
        c
    }

    /// The TURN server's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Where the datagrams of [`TurnClient::poll_transmit`] go: the server over UDP, the local
    /// bridge to the connection over TCP/TLS.
    pub fn destination(&self) -> SocketAddr {
        self.destination
    }

    /// How the server is reached.
    pub fn transport(&self) -> TurnTransport {
        self.transport
    }

    /// The relayed address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relayed
    }

    fn build(&self, kind: Kind, id: TransactionId) -> Option<Vec<u8>> {
        let method = match kind {
            Kind::Allocate => Method::ALLOCATE,
            Kind::Refresh => Method::REFRESH,
            Kind::Bind(..) => Method::CHANNEL_BIND,
        };
        let mut buf = [0u8; 512];
        let mut m = MessageBuilder::new(&mut buf, Class::Request, method, id).ok()?;
        match kind {
            Kind::Allocate => {
                m.requested_transport(17).ok()?;
            }
            Kind::Refresh => {
                m.lifetime(600).ok()?;
            }
            Kind::Bind(peer, channel) => {
                m.channel_number(channel)
                    .ok()?
                    .xor_peer_address(peer)
                    .ok()?;
            }
        }
        if let Some(a) = &self.auth {
            m.username(&self.user)
                .ok()?
                .realm(&a.realm)
                .ok()?
                .nonce(&a.nonce)
                .ok()?
                .message_integrity(&a.key)
                .ok()?;
        }
        m.fingerprint().ok()?;
        let n = m.finish();
        Some(buf[..n].to_vec())
    }

    fn request(&mut self, kind: Kind, now: Instant) {
        let id = tid();
        let Some(bytes) = self.build(kind, id) else {
            return;
        };
        self.out.push_back(bytes.clone());
        self.pending.insert(
            id,
            Pending {
                kind,
                bytes,
                next: now + RTO,
                tries: 1,
            },
        );
    }

    fn fail(&mut self, why: String) -> Option<TurnEvent> {
        if self.failed {
            return None;
        }
        self.failed = true;
        self.pending.clear();
        Some(TurnEvent::Failed(why))
    }

    /// A datagram from the server.
    pub fn handle_input(&mut self, b: &[u8], now: Instant) -> Option<TurnEvent> {
        if let Some(&first) = b.first() {
            if (0x40..=0x7f).contains(&first) {
                let cd = ChannelData::parse(b).ok()?;
                let peer = *self.channels.get(&cd.channel)?;
                return Some(TurnEvent::Data {
                    peer,
                    data: cd.data.to_vec(),
                });
            }
        }
        let m = Message::parse(b).ok()?;
        if m.class() == Class::Indication && m.method() == Method::DATA {
            let peer = m.xor_peer_address().ok().flatten()?;
            let data = m.data().ok().flatten()?;
            return Some(TurnEvent::Data {
                peer,
                data: data.to_vec(),
            });
        }
        let p = self.pending.remove(&m.transaction_id())?;
        tracing::debug!(kind = ?p.kind, class = ?m.class(), error = ?m.error_code().ok().flatten(), "TURN response");
        if m.class() == Class::Error {
            let (code, reason) = m.error_code().ok().flatten().unwrap_or((0, ""));
            // The challenge (401 on the first try) and stale nonces: answer with credentials.
            if code == 401 && self.auth.is_none() || code == 438 {
                let realm = m
                    .realm()
                    .ok()
                    .flatten()
                    .map(str::to_owned)
                    .or_else(|| self.auth.as_ref().map(|a| a.realm.clone()))
                    .unwrap_or_default();
                let nonce = m.nonce().ok().flatten().unwrap_or_default().to_owned();
                let key = long_term_key_md5(&self.user, &realm, &self.password);
                self.auth = Some(Auth { realm, nonce, key });
                self.request(p.kind, now);
                return None;
            }
            return match p.kind {
                Kind::Bind(peer, _) => {
                    tracing::debug!(%peer, code, reason, "TURN channel bind refused");
                    None
                }
                _ => self.fail(format!("TURN server {}: {code} {reason}", self.server)),
            };
        }
        if m.class() != Class::Success {
            return None;
        }
        match p.kind {
            Kind::Allocate => {
                let relayed = m.xor_relayed_address().ok().flatten()?;
                let lifetime = m.lifetime().ok().flatten().unwrap_or(600).max(60);
                self.relayed = Some(relayed);
                self.refresh_at = Some(now + Duration::from_secs(u64::from(lifetime) / 2));
                Some(TurnEvent::Allocated {
                    relayed,
                    mapped: m.xor_mapped_address().ok().flatten(),
                })
            }
            Kind::Refresh => {
                let lifetime = m.lifetime().ok().flatten().unwrap_or(600).max(60);
                self.refresh_at = Some(now + Duration::from_secs(u64::from(lifetime) / 2));
                None
            }
            Kind::Bind(peer, _) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.bound = true;
                }
                None
            }
        }
    }

    /// Sends `data` to `peer` through the relay (binding a channel to it the first time).
    pub fn send_to(&mut self, peer: SocketAddr, data: &[u8], now: Instant) {
        if self.relayed.is_none() || self.failed {
            return;
        }
        let channel = match self.peers.get(&peer) {
            Some(p) => p.bound.then_some(p.channel),
            None => {
                let channel = self.next_channel;
                if channel > 0x4FFF {
                    return;
                }
                self.next_channel += 1;
                self.peers.insert(
                    peer,
                    Peer {
                        channel,
                        bound: false,
                        rebind_at: now + REBIND,
                    },
                );
                self.channels.insert(channel, peer);
                self.request(Kind::Bind(peer, channel), now);
                None
            }
        };
        let mut buf = vec![0u8; data.len() + 64];
        let n = match channel {
            // Padded to 4 bytes over a stream (RFC 8656 §12.5).
            Some(c) => {
                ChannelData::encode(c, data, &mut buf, self.transport != TurnTransport::Udp).ok()
            }
            None => MessageBuilder::new(&mut buf, Class::Indication, Method::SEND, tid())
                .ok()
                .and_then(|mut m| {
                    m.xor_peer_address(peer).ok()?.data(data).ok()?;
                    Some(m.finish())
                }),
        };
        if let Some(n) = n {
            buf.truncate(n);
            self.out.push_back(buf);
        }
    }

    /// Retransmits, refreshes and rebinds due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<TurnEvent> {
        let mut lost = None;
        for p in self.pending.values_mut() {
            if p.next <= now {
                if p.tries >= TRIES {
                    lost = Some(p.kind);
                    continue;
                }
                p.tries += 1;
                p.next = now + RTO * p.tries;
                // A stream delivers or breaks: nothing is sent again, only the time counted.
                if self.transport == TurnTransport::Udp {
                    self.out.push_back(p.bytes.clone());
                }
            }
        }
        if let Some(kind) = lost {
            self.pending.retain(|_, p| p.tries < TRIES || p.next > now);
            if !matches!(kind, Kind::Bind(..)) {
                return self.fail(format!("TURN server {} does not answer", self.server));
            }
        }
        if self.refresh_at.is_some_and(|t| t <= now) {
            self.refresh_at = Some(now + Duration::from_secs(60));
            self.request(Kind::Refresh, now);
        }
        let due: Vec<(SocketAddr, u16)> = self
            .peers
            .iter_mut()
            .filter(|(_, p)| p.rebind_at <= now)
            .map(|(a, p)| {
                p.rebind_at = now + REBIND;
                (*a, p.channel)
            })
            .collect();
        for (peer, channel) in due {
            self.request(Kind::Bind(peer, channel), now);
        }
        None
    }

    /// When [`TurnClient::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.pending.values().map(|p| p.next);
        let rebind = self.peers.values().map(|p| p.rebind_at);
        pending.chain(rebind).chain(self.refresh_at).min()
    }

    /// The next datagram for the server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// Releases the allocation (a Refresh with lifetime 0), best effort.
    pub fn release(&mut self) -> Option<Vec<u8>> {
        self.relayed?;
        let id = tid();
        let a = self.auth.as_ref()?;
        let mut buf = [0u8; 512];
        let mut m = MessageBuilder::new(&mut buf, Class::Request, Method::REFRESH, id).ok()?;
        m.lifetime(0)
            .ok()?
            .username(&self.user)
            .ok()?
            .realm(&a.realm)
            .ok()?
            .nonce(&a.nonce)
            .ok()?
            .message_integrity(&a.key)
            .ok()?;
        let n = m.finish();
        Some(buf[..n].to_vec())
    }
}

/// A Binding request (for a server-reflexive address) and its transaction id.
pub fn binding_request() -> (TransactionId, Vec<u8>) {
    let id = tid();
    let mut buf = [0u8; 64];
    let n = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, id)
        .ok()
        .and_then(|mut m| {
            m.fingerprint().ok()?;
            Some(m.finish())
        })
        .unwrap_or(0);
    (id, buf[..n].to_vec())
}

/// The mapped address of a Binding success response to `id`.
pub fn binding_response(b: &[u8], id: TransactionId) -> Option<SocketAddr> {
    let m = Message::parse(b).ok()?;
    if m.transaction_id() != id || m.class() != Class::Success || m.method() != Method::BINDING {
        return None;
    }
    m.xor_mapped_address()
        .ok()
        .flatten()
        .or_else(|| m.mapped_address().ok().flatten())
}
