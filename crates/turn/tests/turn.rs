//! TURN state machine tests on fake time with a fake relay provider, through the public API only.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use switchboard_stun::{
    attr, long_term_key_md5, long_term_key_sha256, password_algorithm, userhash, ChannelData,
    Class, Message, MessageBuilder, Method, TransactionId,
};
use switchboard_turn::auth::Credentials;
use switchboard_turn::peer_filter::{Cidr, PeerFilter};
use switchboard_turn::{
    Arrival, DropReason, Family, FiveTuple, Now, Output, Parity, PeerDrop, PeerOutput, PortPicker,
    RelayBinding, RelayError, RelayProvider, RelayRequest, Transport, TurnConfig, TurnService, Via,
    ERROR_CODES, MAX_REPLY, PEER_OVERHEAD, RANDOM_TRIES,
};

const REALM: &str = "example.org";
const SERVER: &str = "203.0.113.1:3478";
const CLIENT: &str = "198.51.100.7:40000";
const PEER: &str = "198.51.100.20:5000";
const PEER2: &str = "198.51.100.21:6000";
const RELAY0: &str = "192.0.2.1:49152";
const UNIX0: u64 = 1_700_000_000;
const REST_SECRET: &str = "rest-secret-1";
const REST_SECRET2: &str = "rest-secret-2";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn at(s: &str, transport: Transport) -> Arrival {
    Arrival {
        peer: addr(s),
        local: addr(SERVER),
        other: None,
        transport,
    }
}

fn udp(s: &str) -> Arrival {
    at(s, Transport::Udp)
}

fn five(a: &Arrival) -> FiveTuple {
    FiveTuple {
        client: a.peer,
        server: a.local,
        transport: a.transport,
    }
}

// ----- fake relay provider -----

/// Hands out 192.0.2.1:49152.. (IPv6: [2001:db8::1]:49152..), can be told to fail, supports
/// even ports and reservations, records every request and release.
#[derive(Debug)]
struct FakeRelays {
    next: u16,
    fail: Option<RelayError>,
    requests: Vec<RelayRequest>,
    live: BTreeSet<SocketAddr>,
    reserved: BTreeSet<SocketAddr>,
    released: Vec<SocketAddr>,
}

impl Default for FakeRelays {
    fn default() -> Self {
        FakeRelays {
            next: 49152,
            fail: None,
            requests: Vec::new(),
            live: BTreeSet::new(),
            reserved: BTreeSet::new(),
            released: Vec::new(),
        }
    }
}

impl RelayProvider for FakeRelays {
    fn bind(&mut self, req: RelayRequest) -> Result<RelayBinding, RelayError> {
        self.requests.push(req);
        if let Some(e) = self.fail {
            return Err(e);
        }
        if let Some(r) = req.reserved {
            if !self.reserved.remove(&r) {
                return Err(RelayError::NoCapacity);
            }
            self.live.insert(r);
            return Ok(RelayBinding {
                addr: r,
                reserved: None,
            });
        }
        let ip: IpAddr = match req.family {
            Family::V4 => "192.0.2.1".parse().unwrap(),
            Family::V6 => "2001:db8::1".parse().unwrap(),
        };
        let mut port = self.next;
        if req.even.is_some() && port % 2 == 1 {
            port += 1;
        }
        let a = SocketAddr::new(ip, port);
        let reserved = (req.even == Some(true)).then(|| SocketAddr::new(ip, port + 1));
        if let Some(r) = reserved {
            self.reserved.insert(r);
            port += 1;
        }
        self.next = port + 1;
        self.live.insert(a);
        Ok(RelayBinding { addr: a, reserved })
    }

    fn release(&mut self, a: SocketAddr) {
        assert!(
            self.live.remove(&a) || self.reserved.remove(&a),
            "released {a}, which is neither bound nor reserved"
        );
        self.released.push(a);
    }
}

// ----- harness -----

/// What one input produced, owned.
#[derive(Debug)]
enum Out {
    Reply {
        via: Via,
        error: bool,
        bytes: Vec<u8>,
    },
    Relay {
        relay: SocketAddr,
        peer: SocketAddr,
        data: Vec<u8>,
    },
    Drop(DropReason),
}

impl Out {
    fn bytes(&self) -> &[u8] {
        match self {
            Out::Reply { bytes, .. } => bytes,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn msg(&self) -> Message<'_> {
        Message::parse(self.bytes()).unwrap()
    }

    fn code(&self) -> Option<u16> {
        self.msg().error_code().unwrap().map(|(c, _)| c)
    }

    /// Asserts an error reply with `code`; returns the message. (Unauthenticated errors carry
    /// FINGERPRINT only when the request did; every request of the harness client does.)
    fn error(&self, code: u16) -> Message<'_> {
        let m = self.msg();
        assert_eq!(m.class(), Class::Error, "{:?}", m.error_code());
        assert_eq!(self.code(), Some(code), "{:?}", m.error_code());
        assert!(matches!(self, Out::Reply { error: true, .. }));
        assert_ne!(m.check_fingerprint(), Some(false));
        m
    }

    /// Asserts a success reply; returns the message.
    fn success(&self) -> Message<'_> {
        let m = self.msg();
        assert_eq!(m.class(), Class::Success, "{:?}", m.error_code());
        assert!(matches!(self, Out::Reply { error: false, .. }));
        assert_eq!(m.check_fingerprint(), Some(true));
        m
    }
}

struct Harness {
    svc: TurnService,
    relays: FakeRelays,
    now: Now,
}

fn users() -> Credentials {
    let mut c = Credentials::new(REALM);
    c.add_user_entry("alice:alice-pw").unwrap();
    c.add_user_entry("bob:bob-pw").unwrap();
    c
}

impl Harness {
    fn new(cfg: TurnConfig, creds: Credentials) -> Self {
        Harness {
            svc: TurnService::new(cfg, Arc::new(creds), [42; 32]),
            relays: FakeRelays::default(),
            now: Now {
                mono: Instant::now(),
                unix: UNIX0,
            },
        }
    }

    fn default() -> Self {
        Self::new(TurnConfig::default(), users())
    }

    fn advance(&mut self, secs: u64) {
        self.now.mono += Duration::from_secs(secs);
        self.now.unix += secs;
    }

    fn handle(&mut self, arrival: &Arrival, input: &[u8]) -> Out {
        let mut out = vec![0u8; MAX_REPLY];
        match self
            .svc
            .handle(self.now, arrival, input, &mut out, &mut self.relays)
        {
            Output::Reply {
                via,
                to,
                len,
                error,
            } => {
                assert_eq!(to, arrival.peer);
                out.truncate(len);
                Out::Reply {
                    via,
                    error,
                    bytes: out,
                }
            }
            Output::Relay { relay, peer, data } => Out::Relay {
                relay,
                peer,
                data: data.to_vec(),
            },
            Output::Drop(r) => Out::Drop(r),
        }
    }

    fn peer(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        payload: &[u8],
    ) -> Result<Vec<u8>, PeerDrop> {
        let mut out = vec![0u8; payload.len() + PEER_OVERHEAD];
        match self
            .svc
            .handle_peer(self.now, relay, peer, payload, &mut out)
        {
            PeerOutput::ToClient { len, .. } => {
                out.truncate(len);
                Ok(out)
            }
            PeerOutput::Drop(d) => Err(d),
        }
    }

    fn peer_five(&mut self, relay: SocketAddr, peer: SocketAddr, payload: &[u8]) -> FiveTuple {
        let mut out = vec![0u8; payload.len() + PEER_OVERHEAD];
        match self
            .svc
            .handle_peer(self.now, relay, peer, payload, &mut out)
        {
            PeerOutput::ToClient { five, .. } => five,
            other => panic!("{other:?}"),
        }
    }

    fn expire(&mut self) {
        self.svc.expire(self.now, &mut self.relays);
    }

    fn refusals(&self, code: u16) -> u64 {
        let i = ERROR_CODES.iter().position(|c| *c == code).unwrap();
        self.svc.stats().refusals[i]
    }

    fn total_refusals(&self) -> u64 {
        self.svc.stats().refusals.iter().sum()
    }

    /// Gets a nonce: an unauthenticated Allocate, answered with 401.
    fn login(&mut self, c: &mut Client) {
        let req = c.unauth(Method::ALLOCATE, |b| {
            b.requested_transport(17).unwrap();
        });
        let out = self.handle(&c.at, &req);
        let m = out.error(401);
        c.nonce = m.nonce().unwrap().unwrap().to_string();
    }

    /// Logs in if needed, allocates with `f` adding attributes, asserts success; the relay.
    fn allocate_with(
        &mut self,
        c: &mut Client,
        f: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> SocketAddr {
        if c.nonce.is_empty() {
            self.login(c);
        }
        let req = c.request(Method::ALLOCATE, |b| {
            b.requested_transport(17).unwrap();
            f(b);
        });
        let out = self.handle(&c.at, &req);
        let m = out.success();
        c.check_integrity(&m);
        m.xor_relayed_address().unwrap().unwrap()
    }

    fn allocate(&mut self, c: &mut Client) -> SocketAddr {
        self.allocate_with(c, |_| {})
    }

    /// Sends an authenticated request with `f` adding attributes.
    fn request(
        &mut self,
        c: &mut Client,
        method: Method,
        f: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> Out {
        if c.nonce.is_empty() {
            self.login(c);
        }
        let req = c.request(method, f);
        self.handle(&c.at, &req)
    }

    fn permit(&mut self, c: &mut Client, peer: &str) {
        let out = self.request(c, Method::CREATE_PERMISSION, |b| {
            b.xor_peer_address(addr(peer)).unwrap();
        });
        c.check_integrity(&out.success());
    }

    fn bind(&mut self, c: &mut Client, channel: u16, peer: &str) -> Out {
        self.request(c, Method::CHANNEL_BIND, |b| {
            b.channel_number(channel).unwrap();
            b.xor_peer_address(addr(peer)).unwrap();
        })
    }

    fn refresh(&mut self, c: &mut Client, lifetime: Option<u32>) -> Out {
        self.request(c, Method::REFRESH, |b| {
            if let Some(l) = lifetime {
                b.lifetime(l).unwrap();
            }
        })
    }

    fn send(&mut self, c: &Client, peer: &str, data: &[u8]) -> Out {
        let ind = send_indication(peer, data, |_| {});
        self.handle(&c.at, &ind)
    }

    fn channel(&mut self, c: &Client, channel: u16, data: &[u8]) -> Out {
        let mut buf = vec![0u8; data.len() + 8];
        let pad = c.at.transport != Transport::Udp;
        let n = ChannelData::encode(channel, data, &mut buf, pad).unwrap();
        buf.truncate(n);
        self.handle(&c.at, &buf)
    }
}

fn send_indication(peer: &str, data: &[u8], f: impl FnOnce(&mut MessageBuilder<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; data.len() + 256];
    let n = {
        let mut b = MessageBuilder::new(
            &mut buf,
            Class::Indication,
            Method::SEND,
            TransactionId([3; 12]),
        )
        .unwrap();
        b.xor_peer_address(addr(peer)).unwrap();
        b.data(data).unwrap();
        f(&mut b);
        b.finish()
    };
    buf.truncate(n);
    buf
}

// ----- client -----

/// A TURN client's credentials and the way it signs requests.
#[derive(Clone, Debug)]
struct Client {
    at: Arrival,
    user: String,
    key_md5: Vec<u8>,
    key_sha256: Vec<u8>,
    realm: String,
    nonce: String,
    /// PASSWORD-ALGORITHM to send (the key follows it).
    alg: Option<u16>,
    /// PASSWORD-ALGORITHMS to send.
    echo: Option<Algs>,
    /// MESSAGE-INTEGRITY-SHA256 instead of MESSAGE-INTEGRITY.
    mi256: bool,
    /// USERHASH instead of USERNAME.
    userhash: bool,
    tid: u32,
}

impl Client {
    fn new(at: Arrival, user: &str, password: &str) -> Self {
        Client {
            at,
            user: user.to_string(),
            key_md5: long_term_key_md5(user, REALM, password).to_vec(),
            key_sha256: long_term_key_sha256(user, REALM, password).to_vec(),
            realm: REALM.to_string(),
            nonce: String::new(),
            alg: None,
            echo: None,
            mi256: false,
            userhash: false,
            tid: 0,
        }
    }

    fn alice(at: Arrival) -> Self {
        Self::new(at, "alice", "alice-pw")
    }

    fn bob(at: Arrival) -> Self {
        Self::new(at, "bob", "bob-pw")
    }

    /// PASSWORD-ALGORITHM SHA-256 with the offer echoed, and MESSAGE-INTEGRITY-SHA256.
    fn sha256(mut self) -> Self {
        self.alg = Some(password_algorithm::SHA256);
        self.echo = Some(offer());
        self.mi256 = true;
        self
    }

    fn key(&self) -> &[u8] {
        match self.alg {
            Some(password_algorithm::SHA256) => &self.key_sha256,
            _ => &self.key_md5,
        }
    }

    fn next_tid(&mut self) -> TransactionId {
        self.tid += 1;
        let mut t = [0xC1u8; 12];
        t[..4].copy_from_slice(&self.tid.to_be_bytes());
        t[4..8].copy_from_slice(&self.at.peer.port().to_be_bytes().repeat(2));
        TransactionId(t)
    }

    fn unauth(&mut self, method: Method, f: impl FnOnce(&mut MessageBuilder<'_>)) -> Vec<u8> {
        let tid = self.next_tid();
        build(Class::Request, method, tid, |b| {
            f(b);
            b.fingerprint().unwrap();
        })
    }

    fn request(&mut self, method: Method, f: impl FnOnce(&mut MessageBuilder<'_>)) -> Vec<u8> {
        let tid = self.next_tid();
        self.request_tid(tid, method, f)
    }

    fn request_tid(
        &self,
        tid: TransactionId,
        method: Method,
        f: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> Vec<u8> {
        build(Class::Request, method, tid, |b| {
            f(b);
            if self.userhash {
                b.userhash(&userhash(&self.user, &self.realm)).unwrap();
            } else {
                b.username(&self.user).unwrap();
            }
            b.realm(&self.realm).unwrap();
            b.nonce(&self.nonce).unwrap();
            if let Some(echo) = &self.echo {
                let list: Vec<(u16, &[u8])> = echo.iter().map(|(a, p)| (*a, &p[..])).collect();
                b.password_algorithms(&list).unwrap();
            }
            if let Some(alg) = self.alg {
                b.password_algorithm(alg, &[]).unwrap();
            }
            if self.mi256 {
                b.message_integrity_sha256(self.key()).unwrap();
            } else {
                b.message_integrity(self.key()).unwrap();
            }
            b.fingerprint().unwrap();
        })
    }

    /// The response is signed with this client's key, and with the attribute RFC 8489 §9.2.4
    /// asks for: MESSAGE-INTEGRITY-SHA256 when the request carried PASSWORD-ALGORITHM (and
    /// PASSWORD-ALGORITHMS), MESSAGE-INTEGRITY when it had neither and was processed as MD5 —
    /// whichever attribute the request was signed with.
    fn check_integrity(&self, m: &Message<'_>) {
        if self.alg.is_some() {
            assert!(m.has_integrity_sha256());
            assert!(!m.has_integrity());
            assert_eq!(m.verify_integrity_sha256(self.key()), Ok(()));
        } else {
            assert!(m.has_integrity());
            assert!(!m.has_integrity_sha256());
            assert_eq!(m.verify_integrity(self.key()), Ok(()));
        }
    }
}

/// PASSWORD-ALGORITHMS entries: (algorithm, parameters).
type Algs = Vec<(u16, Vec<u8>)>;

fn offer() -> Algs {
    vec![
        (password_algorithm::SHA256, vec![]),
        (password_algorithm::MD5, vec![]),
    ]
}

fn build(
    class: Class,
    method: Method,
    tid: TransactionId,
    f: impl FnOnce(&mut MessageBuilder<'_>),
) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = {
        let mut b = MessageBuilder::new(&mut buf, class, method, tid).unwrap();
        f(&mut b);
        b.finish()
    };
    buf.truncate(n);
    buf
}

/// The 24 STUN Security Feature bits of a nonce cookie, decoded by hand from its four base64
/// characters (RFC 4648 alphabet, 6 bits each, first character first), as a 24-bit number whose
/// most significant bit is the first bit on the wire.
fn security_features(nonce: &str) -> u32 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    assert!(nonce.starts_with("obMatJos2"), "no nonce cookie: {nonce}");
    nonce.as_bytes()[9..13].iter().fold(0u32, |set, c| {
        let sextet = ALPHABET.iter().position(|a| a == c).unwrap() as u32;
        (set << 6) | sextet
    })
}

/// Whether STUN Security Feature `bit` is set, numbered as RFC 8489 §9.2 says: "The 24-bit
/// Security Feature set is encoded as 3 bytes, with bit 0 as the most significant bit of the
/// first byte and bit 23 as the least significant bit of the third byte" (§18.1: "Bit 0 is the
/// leftmost bit and Bit 23 is the rightmost bit"). So bit n is 1 << (23 - n) of the number.
fn feature_bit(nonce: &str, bit: u32) -> bool {
    security_features(nonce) >> (23 - bit) & 1 == 1
}

/// RFC 8489 §18.1: Bit 0, "Password algorithms".
const PASSWORD_ALGORITHMS_BIT: u32 = 0;

/// A challenge (401/438) carries REALM, a fresh nonce-cookie NONCE and PASSWORD-ALGORITHMS, and no
/// integrity.
fn assert_challenge(m: &Message<'_>) {
    assert_eq!(m.realm().unwrap(), Some(REALM));
    let nonce = m.nonce().unwrap().unwrap();
    // The cookie sets "Password algorithms", because the response has PASSWORD-ALGORITHMS
    // (RFC 8489 §9.2.4: "it MUST set the STUN Security Feature 'Password algorithms' bit to
    // 1"), and nothing else: no other feature is offered.
    assert!(feature_bit(nonce, PASSWORD_ALGORITHMS_BIT), "{nonce}");
    assert_eq!(security_features(nonce), 1 << 23, "{nonce}");
    let algs: Algs = m
        .password_algorithms()
        .unwrap()
        .unwrap()
        .map(|(a, p)| (a, p.to_vec()))
        .collect();
    assert_eq!(algs, offer());
    assert!(!m.has_integrity() && !m.has_integrity_sha256());
}

fn rest_sha1(secret: &str, user: &str) -> String {
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(user.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn rest_sha256(secret: &str, user: &str) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(user.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn rest_creds() -> Credentials {
    let mut c = Credentials::new(REALM);
    c.add_secret(REST_SECRET).unwrap();
    c.add_secret(REST_SECRET2).unwrap();
    c
}

// ===== challenge and Allocate =====

#[test]
fn challenge_then_allocate_md5() {
    let mut h = Harness::new(
        TurnConfig {
            software: "sb-test".into(),
            ..TurnConfig::default()
        },
        users(),
    );
    let mut c = Client::alice(udp(CLIENT));
    let req = c.unauth(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    let out = h.handle(&c.at, &req);
    assert!(matches!(out, Out::Reply { via: Via::Same, .. }));
    let m = out.error(401);
    assert_challenge(&m);
    // An unauthenticated answer carries nothing it need not (no SOFTWARE).
    assert_eq!(m.software().unwrap(), None);
    assert_eq!(h.refusals(401), 1);
    // A challenge is not an authentication failure.
    assert_eq!(h.svc.stats().auth_failures, 0);
    assert_eq!(h.svc.allocation_count(), 0);
    c.nonce = m.nonce().unwrap().unwrap().to_string();

    let req = c.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    let out = h.handle(&c.at, &req);
    let m = out.success();
    assert_eq!(m.method(), Method::ALLOCATE);
    assert_eq!(
        m.transaction_id(),
        Message::parse(&req).unwrap().transaction_id()
    );
    assert_eq!(m.xor_relayed_address().unwrap(), Some(addr(RELAY0)));
    assert_eq!(m.lifetime().unwrap(), Some(600));
    assert_eq!(m.xor_mapped_address().unwrap(), Some(addr(CLIENT)));
    assert_eq!(m.reservation_token().unwrap(), None);
    assert_eq!(m.software().unwrap(), Some("sb-test"));
    c.check_integrity(&m);
    assert!(m.verify_integrity(&[0u8; 16]).is_err());

    assert_eq!(h.svc.allocation_count(), 1);
    assert_eq!(h.svc.stats().allocations_created, 1);
    assert_eq!(h.total_refusals(), 1);
    let a = h.svc.allocation(&five(&c.at)).unwrap();
    assert_eq!(a.relay, addr(RELAY0));
    assert_eq!(a.advertised, addr(RELAY0));
    assert_eq!(a.username, "alice");
    assert_eq!(a.expires, h.now.mono + Duration::from_secs(600));
    assert_eq!(h.relays.requests.len(), 1);
    let r = h.relays.requests[0];
    assert_eq!(r.family, Family::V4);
    assert_eq!(r.five, five(&c.at));
    assert_eq!((r.even, r.reserved, r.dont_fragment), (None, None, false));
}

#[test]
fn allocate_with_sha256_password_algorithm() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT)).sha256();
    let relay = h.allocate(&mut c);
    assert_eq!(relay, addr(RELAY0));
    // The allocation is bound to the SHA-256 key; later requests use it too.
    let out = h.refresh(&mut c, Some(1200));
    let m = out.success();
    c.check_integrity(&m);
    assert!(m.verify_integrity_sha256(&c.key_md5).is_err());
    assert_eq!(m.lifetime().unwrap(), Some(1200));
}

/// RFC 8489 §9.2.4: a request with neither PASSWORD-ALGORITHM nor PASSWORD-ALGORITHMS "is
/// processed as though PASSWORD-ALGORITHM were MD5", and then "the MESSAGE-INTEGRITY attribute
/// MUST be used instead of the MESSAGE-INTEGRITY-SHA256 attribute" in the response, even when
/// the request itself was signed with MESSAGE-INTEGRITY-SHA256.
#[test]
fn mi_sha256_without_password_algorithm_gets_mi() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    h.login(&mut c);
    let tid = c.next_tid();
    let req = build(Class::Request, Method::ALLOCATE, tid, |b| {
        b.requested_transport(17).unwrap();
        b.username("alice").unwrap();
        b.realm(REALM).unwrap();
        b.nonce(&c.nonce).unwrap();
        b.message_integrity_sha256(&c.key_md5).unwrap();
        b.fingerprint().unwrap();
    });
    let out = h.handle(&c.at, &req);
    let m = out.success();
    assert!(m.has_integrity() && !m.has_integrity_sha256());
    assert_eq!(m.verify_integrity(&c.key_md5), Ok(()));
    // Later requests of that allocation get the same.
    c.mi256 = true;
    let m = h.refresh(&mut c, None);
    let m = m.success();
    assert!(m.has_integrity() && !m.has_integrity_sha256());
    assert_eq!(m.verify_integrity(&c.key_md5), Ok(()));
    assert_eq!(h.svc.allocation_count(), 1);
}

/// RFC 8489 §9.2.4: once PASSWORD-ALGORITHM(S) are used, "Any response generated by the server
/// MUST include the MESSAGE-INTEGRITY-SHA256 attribute" — with PASSWORD-ALGORITHM MD5 too (the
/// MD5 key), and even when the request was signed with MESSAGE-INTEGRITY only.
#[test]
fn password_algorithm_md5_gets_mi_sha256() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    c.alg = Some(password_algorithm::MD5);
    c.echo = Some(offer());
    h.login(&mut c);
    let tid = c.next_tid();
    let req = build(Class::Request, Method::ALLOCATE, tid, |b| {
        b.requested_transport(17).unwrap();
        b.username("alice").unwrap();
        b.realm(REALM).unwrap();
        b.nonce(&c.nonce).unwrap();
        b.password_algorithms(&[
            (password_algorithm::SHA256, &[][..]),
            (password_algorithm::MD5, &[][..]),
        ])
        .unwrap();
        b.password_algorithm(password_algorithm::MD5, &[]).unwrap();
        b.message_integrity(&c.key_md5).unwrap();
        b.fingerprint().unwrap();
    });
    let m = h.handle(&c.at, &req);
    let m = m.success();
    assert!(m.has_integrity_sha256() && !m.has_integrity());
    assert_eq!(m.verify_integrity_sha256(&c.key_md5), Ok(()));
    // The same with MESSAGE-INTEGRITY-SHA256 in the request (the harness client's refresh).
    c.mi256 = true;
    let m = h.refresh(&mut c, None);
    let m = m.success();
    assert!(m.has_integrity_sha256() && !m.has_integrity());
    assert_eq!(m.verify_integrity_sha256(&c.key_md5), Ok(()));
    // And on error responses after authentication (437 for another 5-tuple is before; a 400).
    let out = h.request(&mut c, Method::CREATE_PERMISSION, |_| {});
    let m = out.error(400);
    assert!(m.has_integrity_sha256() && !m.has_integrity());
    assert_eq!(m.verify_integrity_sha256(&c.key_md5), Ok(()));
}

#[test]
fn userhash_identifies_a_static_user() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT)).sha256();
    c.userhash = true;
    h.allocate(&mut c);
    assert_eq!(h.svc.allocation(&five(&c.at)).unwrap().username, "alice");
    // Mixing USERHASH and USERNAME for one allocation is the same user.
    c.userhash = false;
    let out = h.refresh(&mut c, None);
    c.check_integrity(&out.success());
}

#[test]
fn binding_still_works_on_the_turn_service() {
    let mut h = Harness::default();
    let c = Client::alice(udp(CLIENT));
    let req = build(
        Class::Request,
        Method::BINDING,
        TransactionId([5; 12]),
        |b| {
            b.fingerprint().unwrap();
        },
    );
    let out = h.handle(&c.at, &req);
    let m = out.success();
    assert_eq!(m.xor_mapped_address().unwrap(), Some(addr(CLIENT)));
    assert_eq!(h.total_refusals(), 0);
}

// ===== 400 =====

#[test]
fn e400_missing_requested_transport() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    let out = h.request(&mut c, Method::ALLOCATE, |_| {});
    let m = out.error(400);
    c.check_integrity(&m);
    assert_eq!(h.svc.allocation_count(), 0);
    assert_eq!(h.refusals(400), 1);
    assert!(h.relays.requests.is_empty());
}

#[test]
fn e400_integrity_without_nonce() {
    let mut h = Harness::default();
    let c = Client::alice(udp(CLIENT));
    let req = build(
        Class::Request,
        Method::ALLOCATE,
        TransactionId([1; 12]),
        |b| {
            b.requested_transport(17).unwrap();
            b.username("alice").unwrap();
            b.realm(REALM).unwrap();
            b.message_integrity(&c.key_md5).unwrap();
            b.fingerprint().unwrap();
        },
    );
    let out = h.handle(&c.at, &req);
    let m = out.error(400);
    assert!(!m.has_integrity());
    assert_eq!(m.nonce().unwrap(), None);
    assert_eq!(h.refusals(400), 1);
    assert_eq!(h.svc.stats().auth_failures, 1);
    // Without USERNAME or USERHASH too.
    let req = build(
        Class::Request,
        Method::ALLOCATE,
        TransactionId([2; 12]),
        |b| {
            b.requested_transport(17).unwrap();
            b.realm(REALM).unwrap();
            b.nonce("obMatJos2AAABx").unwrap();
            b.message_integrity(&c.key_md5).unwrap();
        },
    );
    h.handle(&c.at, &req).error(400);
    assert_eq!(h.svc.allocation_count(), 0);
}

#[test]
fn e400_bad_channel_number() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    h.allocate(&mut c);
    // 0x4000..=0x7FFF is accepted (RFC 8656 narrowed it to 0x4FFF; RFC 5766 clients use more).
    for bad in [0x0000u16, 0x3FFF, 0x8000, 0xFFFF] {
        let out = h.request(&mut c, Method::CHANNEL_BIND, |b| {
            b.add(attr::CHANNEL_NUMBER, &[(bad >> 8) as u8, bad as u8, 0, 0])
                .unwrap();
            b.xor_peer_address(addr(PEER)).unwrap();
        });
        assert_eq!(out.code(), Some(400), "channel {bad:#x}");
        c.check_integrity(&out.msg());
    }
    // Missing CHANNEL-NUMBER or XOR-PEER-ADDRESS.
    let out = h.request(&mut c, Method::CHANNEL_BIND, |b| {
        b.xor_peer_address(addr(PEER)).unwrap();
    });
    out.error(400);
    let out = h.request(&mut c, Method::CHANNEL_BIND, |b| {
        b.channel_number(0x4000).unwrap();
    });
    out.error(400);
    assert_eq!(h.refusals(400), 6);
    assert_eq!(h.svc.stats().channel_binds, 0);
    // No permission was installed either.
    assert!(matches!(
        h.send(&c, PEER, b"x"),
        Out::Drop(DropReason::Indication)
    ));
    // The top of the RFC 5766 range works both ways.
    let relay = h.svc.allocation(&five(&c.at)).unwrap().relay;
    h.bind(&mut c, 0x7FFE, PEER).success();
    assert!(matches!(h.channel(&c, 0x7FFE, b"x"), Out::Relay { .. }));
    assert_eq!(
        h.peer(relay, addr(PEER), b"y").unwrap(),
        b"\x7f\xfe\x00\x01y"
    );
}

#[test]
fn e400_channel_conflicts() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    h.allocate(&mut c);
    h.bind(&mut c, 0x4000, PEER).success();
    // The number is bound to another peer.
    h.bind(&mut c, 0x4000, PEER2).error(400);
    // The peer is bound to another number.
    h.bind(&mut c, 0x4001, PEER).error(400);
    // Same peer, other port: another transport address, so another channel is fine.
    h.bind(&mut c, 0x4001, "198.51.100.20:5001").success();
    // Rebinding the same pair is a refresh.
    h.bind(&mut c, 0x4000, PEER).success();
    assert_eq!(h.svc.stats().channel_binds, 3);
    assert_eq!(h.refusals(400), 2);
    let (perms, chans) = h.svc.allocation(&five(&c.at)).unwrap().counts(h.now.mono);
    assert_eq!((perms, chans), (1, 2));
}

#[test]
fn allocate_lifetime_zero_gets_the_default() {
    // RFC 8656 §7.2: the granted lifetime is max(min(requested, max), default); zero is not
    // special in an Allocate (only in a Refresh).
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    h.login(&mut c);
    let req = c.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
        b.lifetime(0).unwrap();
    });
    let out = h.handle(&c.at, &req);
    let m = out.success();
    assert_eq!(m.lifetime().unwrap(), Some(600));
    assert_eq!(h.svc.allocation_count(), 1);
    assert_eq!(
        h.svc.allocation(&five(&c.at)).unwrap().expires,
        h.now.mono + Duration::from_secs(600)
    );
}

#[test]
fn e400_reservation_token_with_even_port_or_family() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    h.login(&mut c);
    for f in [
        (|b: &mut MessageBuilder<'_>| {
            b.even_port(false).unwrap();
        }) as fn(&mut MessageBuilder<'_>),
        |b| {
            b.requested_address_family(1).unwrap();
        },
    ] {
        let req = c.request(Method::ALLOCATE, |b| {
            b.requested_transport(17).unwrap();
            b.reservation_token([1; 8]).unwrap();
            f(b);
        });
        let out = h.handle(&c.at, &req);
        c.check_integrity(&out.error(400));
    }
    // ADDITIONAL-ADDRESS-FAMILY with REQUESTED-ADDRESS-FAMILY, or with IPv4.
    for (req_family, additional) in [(Some(1u8), 2u8), (None, 1)] {
        let req = c.request(Method::ALLOCATE, |b| {
            b.requested_transport(17).unwrap();
            if let Some(f) = req_family {
                b.requested_address_family(f).unwrap();
            }
            b.additional_address_family(additional).unwrap();
        });
        h.handle(&c.at, &req).error(400);
    }
    assert_eq!(h.refusals(400), 4);
    assert_eq!(h.svc.allocation_count(), 0);
    assert!(h.relays.requests.is_empty());
}

#[test]
fn e400_password_algorithms_mismatch() {
    let mut h = Harness::default();
    let base = Client::alice(udp(CLIENT)).sha256();
    let mut c = base.clone();
    h.login(&mut c);
    let nonce = c.nonce.clone();
    let cases: Vec<(Option<u16>, Option<Algs>)> = vec![
        // A shortened offer (a bid-down).
        (
            Some(password_algorithm::MD5),
            Some(vec![(password_algorithm::MD5, vec![])]),
        ),
        // Reordered.
        (
            Some(password_algorithm::SHA256),
            Some(vec![
                (password_algorithm::MD5, vec![]),
                (password_algorithm::SHA256, vec![]),
            ]),
        ),
        // PASSWORD-ALGORITHM without PASSWORD-ALGORITHMS.
        (Some(password_algorithm::SHA256), None),
        // PASSWORD-ALGORITHMS without PASSWORD-ALGORITHM.
        (None, Some(offer())),
        // An algorithm that was not offered.
        (Some(3), Some(offer())),
    ];
    for (i, (alg, echo)) in cases.into_iter().enumerate() {
        let mut c = base.clone();
        c.nonce = nonce.clone();
        c.alg = alg;
        c.echo = echo;
        let req = c.request(Method::ALLOCATE, |b| {
            b.requested_transport(17).unwrap();
        });
        let out = h.handle(&c.at, &req);
        assert_eq!(out.code(), Some(400), "case {i}");
        assert!(!out.msg().has_integrity_sha256());
    }
    assert_eq!(h.refusals(400), 5);
    assert_eq!(h.svc.stats().auth_failures, 5);
    assert_eq!(h.svc.allocation_count(), 0);
}

#[test]
fn e400_create_permission_without_peer() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    h.allocate(&mut c);
    h.request(&mut c, Method::CREATE_PERMISSION, |_| {})
        .error(400);
    assert_eq!(h.svc.stats().permissions, 0);
}

// ===== 401 =====

#[test]
fn e401_wrong_password_and_unknown_user() {
    let mut h = Harness::default();
    let mut c = Client::new(udp(CLIENT), "alice", "wrong");
    h.login(&mut c);
    let req = c.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    let out = h.handle(&c.at, &req);
    assert_challenge(&out.error(401));
    assert_eq!(h.svc.stats().auth_failures, 1);

    let mut c = Client::new(udp(CLIENT), "mallory", "alice-pw");
    h.login(&mut c);
    let req = c.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    assert_challenge(&h.handle(&c.at, &req).error(401));
    // An unknown USERHASH too.
    c.userhash = true;
    let req = c.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    assert_challenge(&h.handle(&c.at, &req).error(401));
    // A wrong realm.
    let mut c = Client::alice(udp(CLIENT));
    h.login(&mut c);
    c.realm = "other.example".into();
    let req = c.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    assert_challenge(&h.handle(&c.at, &req).error(401));

    assert_eq!(h.svc.stats().auth_failures, 4);
    // 3 challenges + 4 failures.
    assert_eq!(h.refusals(401), 7);
    assert_eq!(h.svc.allocation_count(), 0);
}

#[test]
fn e401_expired_and_revoked_rest_credentials() {
    let mut creds = rest_creds();
    creds.revoke("carol");
    creds.revoke(&format!("{}:dave", UNIX0 + 100));
    let mut h = Harness::new(TurnConfig::default(), creds);
    let mut port = 40000;
    let mut try_user = |h: &mut Harness, user: &str| {
        port += 1;
        let at = udp(&format!("198.51.100.7:{port}"));
        let mut c = Client::new(at, user, &rest_sha1(REST_SECRET, user));
        h.login(&mut c);
        let req = c.request(Method::ALLOCATE, |b| {
            b.requested_transport(17).unwrap();
        });
        h.handle(&c.at, &req).code()
    };
    assert_eq!(try_user(&mut h, &format!("{}:alice", UNIX0 - 1)), Some(401));
    assert_eq!(
        try_user(&mut h, &format!("{}:carol", UNIX0 + 100)),
        Some(401)
    );
    assert_eq!(
        try_user(&mut h, &format!("{}:dave", UNIX0 + 100)),
        Some(401)
    );
    assert_eq!(h.svc.stats().auth_failures, 3);
    // Not revoked: another expiry for dave, and erin.
    assert_eq!(try_user(&mut h, &format!("{}:dave", UNIX0 + 101)), None);
    assert_eq!(try_user(&mut h, &format!("{}:erin", UNIX0)), None);
    // A name that is not EXPIRY[:USER] is an unknown user.
    assert_eq!(try_user(&mut h, "alice"), Some(401));
}

// ===== 403 =====

#[test]
fn e403_peer_policy() {
    let filter = PeerFilter::new(
        vec!["10.9.0.0/16".parse::<Cidr>().unwrap()],
        vec!["198.51.100.128/25".parse::<Cidr>().unwrap()],
        vec!["203.0.113.1".parse().unwrap()],
    );
    let mut h = Harness::new(
        TurnConfig {
            peer_filter: filter,
            ..TurnConfig::default()
        },
        users(),
    );
    let mut c = Client::alice(udp(CLIENT));
    h.allocate(&mut c);
    for bad in [
        "127.0.0.1:9",
        "10.0.0.1:9",
        "192.168.1.1:9",
        "169.254.0.1:9",
        "198.51.100.200:9",
        "203.0.113.1:9",
        "0.0.0.0:9",
    ] {
        let out = h.request(&mut c, Method::CREATE_PERMISSION, |b| {
            b.xor_peer_address(addr(bad)).unwrap();
        });
        c.check_integrity(&out.error(403));
        h.bind(&mut c, 0x4000, bad).error(403);
    }
    assert_eq!(h.refusals(403), 14);
    assert_eq!(h.svc.stats().permissions, 0);
    // The allow list wins over the defaults.
    h.permit(&mut c, "10.9.1.2:9");
    assert!(matches!(h.send(&c, "10.9.1.2:9", b"x"), Out::Relay { .. }));
    h.bind(&mut c, 0x4000, "10.9.3.4:9").success();
    // One refused peer refuses the whole CreatePermission.
    let out = h.request(&mut c, Method::CREATE_PERMISSION, |b| {
        b.xor_peer_address(addr(PEER)).unwrap();
        b.xor_peer_address(addr("127.0.0.1:1")).unwrap();
    });
    out.error(403);
    assert!(matches!(h.send(&c, PEER, b"x"), Out::Drop(_)));
    // Hot reload of the policy.
    h.svc.set_peer_filter(PeerFilter::default());
    let out = h.request(&mut c, Method::CREATE_PERMISSION, |b| {
        b.xor_peer_address(addr("10.9.1.2:9")).unwrap();
    });
    out.error(403);
}

// ===== 420 =====

#[test]
fn e420_unknown_comprehension_required_attribute() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    // Authentication comes first: unauthenticated, it is a challenge.
    let req = c.unauth(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
        b.add(0x7F01, &[1, 2, 3, 4]).unwrap();
    });
    h.handle(&c.at, &req).error(401);
    h.login(&mut c);
    let req = c.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
        b.add(0x7F01, &[1, 2, 3, 4]).unwrap();
        b.add(0x0031, &[]).unwrap();
        // Comprehension-optional: ignored.
        b.add(0xC0DE, &[0; 4]).unwrap();
    });
    let out = h.handle(&c.at, &req);
    let m = out.error(420);
    c.check_integrity(&m);
    let unknown: Vec<u16> = m.unknown_attributes().unwrap().unwrap().collect();
    assert_eq!(unknown, vec![0x7F01, 0x0031]);
    assert_eq!(h.refusals(420), 1);
    assert_eq!(h.svc.allocation_count(), 0);
    // The same with MI-SHA256.
    let mut c2 = Client::alice(udp(CLIENT)).sha256();
    c2.nonce = c.nonce.clone();
    let req = c2.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
        b.add(0x7F01, &[]).unwrap();
    });
    let out = h.handle(&c2.at, &req);
    c2.check_integrity(&out.error(420));
}

// ===== 437 =====

#[test]
fn e437_allocation_mismatch() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    // Nothing allocated yet.
    let out = h.refresh(&mut c, None);
    c.check_integrity(&out.error(437));
    h.request(&mut c, Method::CREATE_PERMISSION, |b| {
        b.xor_peer_address(addr(PEER)).unwrap();
    })
    .error(437);
    h.bind(&mut c, 0x4000, PEER).error(437);
    assert_eq!(h.refusals(437), 3);
    h.allocate(&mut c);
    // A second Allocate, new transaction.
    let req = c.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    let out = h.handle(&c.at, &req);
    c.check_integrity(&out.error(437));
    assert_eq!(h.refusals(437), 4);
    assert_eq!(h.svc.allocation_count(), 1);
    assert_eq!(h.relays.requests.len(), 1);
}

#[test]
fn retransmitted_allocate_gets_the_same_answer() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    h.login(&mut c);
    let req = c.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
        b.lifetime(1200).unwrap();
    });
    let first = h.handle(&c.at, &req);
    first.success();
    h.advance(2);
    let again = h.handle(&c.at, &req);
    let m = again.success();
    assert_eq!(m.xor_relayed_address().unwrap(), Some(addr(RELAY0)));
    assert_eq!(m.lifetime().unwrap(), Some(1200));
    c.check_integrity(&m);
    assert_eq!(h.svc.allocation_count(), 1);
    assert_eq!(h.svc.stats().allocations_created, 1);
    assert_eq!(h.relays.requests.len(), 1);
    assert_eq!(h.total_refusals(), 1); // the challenge

    // The same transaction id from another user on that 5-tuple is not a retransmission.
    let mut b = Client::bob(udp(CLIENT));
    b.nonce = c.nonce.clone();
    let tid = Message::parse(&req).unwrap().transaction_id();
    let req = b.request_tid(tid, Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    h.handle(&b.at, &req).error(437);
}

// ===== 438 =====

#[test]
fn e438_stale_nonce_then_retry() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT)).sha256();
    h.allocate_with(&mut c, |b| {
        b.lifetime(3600).unwrap();
    });
    // Unix time moves past the nonce lifetime (1 h); the allocation is still alive.
    h.now.unix += 3601;
    let out = h.refresh(&mut c, Some(3600));
    let m = out.error(438);
    assert_challenge(&m);
    let fresh = m.nonce().unwrap().unwrap().to_string();
    assert_ne!(fresh, c.nonce);
    assert_eq!(h.refusals(438), 1);
    assert_eq!(h.svc.stats().auth_failures, 0);
    c.nonce = fresh;
    let out = h.refresh(&mut c, Some(3600));
    c.check_integrity(&out.success());
    // At exactly its expiry a nonce is still good.
    h.now.unix += 3600;
    h.refresh(&mut c, Some(3600)).success();
    h.now.unix += 1;
    h.refresh(&mut c, Some(3600)).error(438);
}

#[test]
fn e438_nonce_of_another_client_ip_or_forged() {
    let mut h = Harness::default();
    let mut a = Client::alice(udp(CLIENT));
    h.login(&mut a);
    let mut b = Client::alice(udp("198.51.100.8:40000"));
    b.nonce = a.nonce.clone();
    let req = b.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    assert_challenge(&h.handle(&b.at, &req).error(438));
    // A forged nonce (the expiry pushed out) is not ours.
    let mut forged = a.clone();
    let (head, tail) = a.nonce.split_at(13);
    let mut body = base64::engine::general_purpose::STANDARD
        .decode(tail)
        .unwrap();
    body[..4].copy_from_slice(&[0xFF; 4]);
    forged.nonce = format!(
        "{head}{}",
        base64::engine::general_purpose::STANDARD.encode(&body)
    );
    let req = forged.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    h.handle(&forged.at, &req).error(438);
    // Nonces from the old "AAAB" cookie, or none at all, are stale too.
    forged.nonce = a.nonce.replacen("gAAA", "AAAB", 1);
    let req = forged.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    h.handle(&forged.at, &req).error(438);
    assert_eq!(h.refusals(438), 3);
    // The owner's nonce works.
    h.allocate(&mut a);
    assert_eq!(h.svc.allocation_count(), 1);
}

// ===== 440 =====

#[test]
fn e440_address_family() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    h.login(&mut c);
    let req = c.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
        b.requested_address_family(3).unwrap();
    });
    let out = h.handle(&c.at, &req);
    c.check_integrity(&out.error(440));
    assert!(h.relays.requests.is_empty());
    h.relays.fail = Some(RelayError::FamilyUnsupported);
    let req = c.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
        b.requested_address_family(2).unwrap();
    });
    h.handle(&c.at, &req).error(440);
    assert_eq!(h.relays.requests[0].family, Family::V6);
    assert_eq!(h.refusals(440), 2);
    assert_eq!(h.svc.allocation_count(), 0);
}

#[test]
fn ipv6_allocation() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    let relay = h.allocate_with(&mut c, |b| {
        b.requested_address_family(2).unwrap();
    });
    assert_eq!(relay, addr("[2001:db8::1]:49152"));
    // An IPv4 peer on an IPv6 relay.
    h.request(&mut c, Method::CREATE_PERMISSION, |b| {
        b.xor_peer_address(addr(PEER)).unwrap();
    })
    .error(443);
    h.permit(&mut c, "[2001:db8:1::5]:7000");
    match h.send(&c, "[2001:db8:1::5]:7000", b"v6") {
        Out::Relay {
            relay: r,
            peer,
            data,
        } => {
            assert_eq!(
                (r, peer, &data[..]),
                (relay, addr("[2001:db8:1::5]:7000"), &b"v6"[..])
            );
        }
        other => panic!("{other:?}"),
    }
    // Refresh naming the allocation's family is fine; IPv4 is a 443.
    h.request(&mut c, Method::REFRESH, |b| {
        b.requested_address_family(2).unwrap();
    })
    .success();
    h.request(&mut c, Method::REFRESH, |b| {
        b.requested_address_family(1).unwrap();
    })
    .error(443);
}

#[test]
fn additional_address_family_is_refused_politely() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    h.login(&mut c);
    let req = c.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
        b.additional_address_family(2).unwrap();
    });
    let out = h.handle(&c.at, &req);
    let m = out.success();
    assert_eq!(m.xor_relayed_address().unwrap(), Some(addr(RELAY0)));
    let e = m.address_error_code().unwrap().unwrap();
    assert_eq!((e.family, e.code), (2, 440));
}

#[test]
fn dont_fragment_reaches_the_provider() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    h.allocate_with(&mut c, |b| {
        b.dont_fragment().unwrap();
    });
    assert!(h.relays.requests[0].dont_fragment);
}

// ===== 441 =====

#[test]
fn e441_other_user_on_the_same_five_tuple() {
    let mut h = Harness::default();
    let mut a = Client::alice(udp(CLIENT));
    h.allocate(&mut a);
    let mut b = Client::bob(udp(CLIENT));
    b.nonce = a.nonce.clone();
    let out = h.refresh(&mut b, Some(0));
    b.check_integrity(&out.error(441));
    h.request(&mut b, Method::CREATE_PERMISSION, |x| {
        x.xor_peer_address(addr(PEER)).unwrap();
    })
    .error(441);
    h.bind(&mut b, 0x4000, PEER).error(441);
    assert_eq!(h.refusals(441), 3);
    assert_eq!(h.svc.allocation_count(), 1);
    assert!(h.relays.released.is_empty());
}

// ===== 442, 443 =====

#[test]
fn e442_tcp_relay() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    h.login(&mut c);
    let req = c.request(Method::ALLOCATE, |b| {
        b.requested_transport(6).unwrap();
    });
    let out = h.handle(&c.at, &req);
    c.check_integrity(&out.error(442));
    assert_eq!(h.refusals(442), 1);
    assert_eq!(h.svc.allocation_count(), 0);
}

#[test]
fn e443_peer_family_mismatch() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    h.allocate(&mut c);
    let v6 = "[2001:db8:1::5]:7000";
    h.request(&mut c, Method::CREATE_PERMISSION, |b| {
        b.xor_peer_address(addr(v6)).unwrap();
    })
    .error(443);
    let out = h.bind(&mut c, 0x4000, v6);
    c.check_integrity(&out.error(443));
    // Refresh with another family, or one that is neither (RFC 8656 §7.3).
    for fam in [2u8, 3, 0] {
        h.request(&mut c, Method::REFRESH, |b| {
            b.requested_address_family(fam).unwrap();
        })
        .error(443);
    }
    h.request(&mut c, Method::REFRESH, |b| {
        b.requested_address_family(1).unwrap();
    })
    .success();
    assert_eq!(h.refusals(443), 5);
    // Send indications to an IPv6 peer are dropped silently.
    assert!(matches!(
        h.send(&c, v6, b"x"),
        Out::Drop(DropReason::Indication)
    ));
}

// ===== 486, 508 =====

#[test]
fn e486_user_quota() {
    let mut h = Harness::new(
        TurnConfig {
            user_quota: 1,
            ..TurnConfig::default()
        },
        users(),
    );
    let mut a1 = Client::alice(udp(CLIENT));
    h.allocate(&mut a1);
    let mut a2 = Client::alice(udp("198.51.100.7:40001"));
    h.login(&mut a2);
    let req = a2.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    let out = h.handle(&a2.at, &req);
    a2.check_integrity(&out.error(486));
    assert_eq!(h.refusals(486), 1);
    // Another user is not affected.
    let mut b = Client::bob(udp("198.51.100.9:40000"));
    h.allocate(&mut b);
    assert_eq!(h.svc.allocation_count(), 2);
    // Once alice's first allocation ends, she may allocate again.
    h.refresh(&mut a1, Some(0)).success();
    h.allocate(&mut a2);
    assert_eq!(h.svc.allocation_count(), 2);
}

#[test]
fn e508_total_quota_no_capacity_and_unknown_token() {
    let mut h = Harness::new(
        TurnConfig {
            total_quota: 1,
            ..TurnConfig::default()
        },
        users(),
    );
    let mut a = Client::alice(udp(CLIENT));
    h.allocate(&mut a);
    let mut b = Client::bob(udp("198.51.100.9:40000"));
    h.login(&mut b);
    let req = b.request(Method::ALLOCATE, |x| {
        x.requested_transport(17).unwrap();
    });
    let out = h.handle(&b.at, &req);
    b.check_integrity(&out.error(508));
    h.refresh(&mut a, Some(0)).success();
    assert_eq!(h.svc.allocation_count(), 0);

    h.relays.fail = Some(RelayError::NoCapacity);
    let req = b.request(Method::ALLOCATE, |x| {
        x.requested_transport(17).unwrap();
    });
    h.handle(&b.at, &req).error(508);
    h.relays.fail = None;

    let req = b.request(Method::ALLOCATE, |x| {
        x.requested_transport(17).unwrap();
        x.reservation_token([9; 8]).unwrap();
    });
    h.handle(&b.at, &req).error(508);
    assert_eq!(h.refusals(508), 3);
    assert_eq!(h.svc.allocation_count(), 0);
    h.allocate(&mut b);
}

// ===== 300 Try Alternate (load shedding) =====

const ALT1: &str = "192.0.2.50:3478";
const ALT2: &str = "192.0.2.51:3478";
const ALT6: &str = "[2001:db8::50]:3478";

/// Every ALTERNATE-SERVER of a response, in order (plain address encoding, RFC 8489 §14.15).
fn alternates(m: &Message<'_>) -> Vec<SocketAddr> {
    m.get_all(attr::ALTERNATE_SERVER)
        .map(|a| {
            let v = a.value;
            let port = u16::from_be_bytes([v[2], v[3]]);
            let ip: IpAddr = match v[1] {
                1 => <[u8; 4]>::try_from(&v[4..8]).unwrap().into(),
                2 => <[u8; 16]>::try_from(&v[4..20]).unwrap().into(),
                f => panic!("family {f}"),
            };
            SocketAddr::new(ip, port)
        })
        .collect()
}

fn shedding(alternates: &[&str]) -> Harness {
    Harness::new(
        TurnConfig {
            total_quota: 1,
            software: "sb-test".into(),
            alternate_servers: alternates.iter().map(|a| addr(a)).collect(),
            alternate_domain: Some("turn.example.org".into()),
            ..TurnConfig::default()
        },
        users(),
    )
}

/// An authenticated Allocate from `c` (logging in first if needed); the reply.
fn try_allocate(h: &mut Harness, c: &mut Client) -> Out {
    h.request(c, Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    })
}

#[test]
fn e300_redirect_after_auth_when_over_total_quota() {
    let mut h = shedding(&[ALT1, ALT6]);
    let mut a = Client::alice(udp(CLIENT));
    h.allocate(&mut a);
    let binds = h.relays.requests.len();

    // Unauthenticated: the challenge, never a redirect (RFC 8489 §14.8: a 300 only answers a
    // request with USERNAME/USERHASH and valid integrity).
    let mut b = Client::bob(udp("198.51.100.9:40000"));
    let req = b.unauth(Method::ALLOCATE, |x| {
        x.requested_transport(17).unwrap();
    });
    let out = h.handle(&b.at, &req);
    let m = out.error(401);
    assert_challenge(&m);
    assert!(alternates(&m).is_empty());
    b.nonce = m.nonce().unwrap().unwrap().to_string();

    // A wrong password is a 401 too: the redirect comes after the credential check.
    let mut mallory = Client::new(udp("198.51.100.9:40001"), "bob", "guess");
    h.login(&mut mallory);
    let req = mallory.request(Method::ALLOCATE, |x| {
        x.requested_transport(17).unwrap();
    });
    let out = h.handle(&mallory.at, &req);
    assert!(alternates(&out.error(401)).is_empty());

    // Authenticated: 300 with ALTERNATE-SERVER (client's family first, then the other family),
    // signed with the client's key, FINGERPRINT last; no ALTERNATE-DOMAIN over UDP.
    let out = try_allocate(&mut h, &mut b);
    let m = out.error(300);
    assert_eq!(m.error_code().unwrap(), Some((300, "Try Alternate")));
    assert_eq!(m.alternate_server().unwrap(), Some(addr(ALT1)));
    assert_eq!(alternates(&m), vec![addr(ALT1), addr(ALT6)]);
    assert_eq!(m.alternate_domain().unwrap(), None);
    assert_eq!(m.software().unwrap(), Some("sb-test"));
    b.check_integrity(&m);
    assert_eq!(m.check_fingerprint(), Some(true));

    // Nothing was allocated or bound; the redirect is counted apart from the refusals.
    assert_eq!(h.svc.allocation_count(), 1);
    assert_eq!(h.relays.requests.len(), binds);
    assert_eq!(h.svc.stats().redirects, 1);
    assert_eq!(h.refusals(508), 0);
    assert_eq!(h.svc.stats().auth_failures, 1);

    // A SHA-256 client gets a 300 signed with MESSAGE-INTEGRITY-SHA256.
    let mut b256 = Client::bob(udp("198.51.100.9:40002")).sha256();
    let out = try_allocate(&mut h, &mut b256);
    b256.check_integrity(&out.error(300));
    assert_eq!(h.svc.stats().redirects, 2);

    // Below the limit again, the node allocates itself.
    h.refresh(&mut a, Some(0)).success();
    h.allocate(&mut b);
    assert_eq!(h.svc.stats().redirects, 2);
}

#[test]
fn no_alternate_of_the_family_means_508() {
    // No alternate configured: the usual 508 (total_quota is a capacity limit; 486 is the
    // per-user quota).
    let mut h = shedding(&[]);
    let mut a = Client::alice(udp(CLIENT));
    h.allocate(&mut a);
    let mut b = Client::bob(udp("198.51.100.9:40000"));
    let m = try_allocate(&mut h, &mut b);
    assert!(alternates(&m.error(508)).is_empty());
    assert_eq!((h.refusals(508), h.svc.stats().redirects), (1, 0));

    // Only an IPv6 alternate for an IPv4 client: RFC 8489 §10 says the first ALTERNATE-SERVER
    // MUST be of the request's family, so no redirect.
    let mut h = shedding(&[ALT6]);
    let mut a = Client::alice(udp(CLIENT));
    h.allocate(&mut a);
    let mut b = Client::bob(udp("198.51.100.9:40000"));
    try_allocate(&mut h, &mut b).error(508);
    assert_eq!(h.svc.stats().redirects, 0);

    // A node listed as its own alternate never redirects to itself.
    let mut h = shedding(&[SERVER]);
    let mut a = Client::alice(udp(CLIENT));
    h.allocate(&mut a);
    let mut b = Client::bob(udp("198.51.100.9:40000"));
    try_allocate(&mut h, &mut b).error(508);

    // The per-user quota stays a 486 even when alternates exist.
    let mut h = Harness::new(
        TurnConfig {
            user_quota: 1,
            total_quota: 1,
            alternate_servers: vec![addr(ALT1)],
            ..TurnConfig::default()
        },
        users(),
    );
    let mut a1 = Client::alice(udp(CLIENT));
    h.allocate(&mut a1);
    let mut a2 = Client::alice(udp("198.51.100.7:40001"));
    try_allocate(&mut h, &mut a2).error(486);
    assert_eq!(h.svc.stats().redirects, 0);
}

#[test]
fn redirects_round_robin_per_family() {
    // SERVER is this node: skipped.
    let mut h = shedding(&[ALT1, SERVER, ALT6, ALT2]);
    let mut a = Client::alice(udp(CLIENT));
    h.allocate(&mut a);
    let mut seen = Vec::new();
    for port in 0..4u16 {
        let mut b = Client::bob(udp(&format!("198.51.100.9:{}", 41000 + port)));
        let out = try_allocate(&mut h, &mut b);
        let m = out.error(300);
        b.check_integrity(&m);
        let alts = alternates(&m);
        assert_eq!(alts.len(), 2, "{alts:?}");
        assert_eq!(alts[1], addr(ALT6), "the other family comes second");
        seen.push(alts[0]);
    }
    assert_eq!(seen, [ALT1, ALT2, ALT1, ALT2].map(addr));

    // An IPv6 client gets the IPv6 alternate first and the next IPv4 one second.
    let v6 = Arrival {
        peer: addr("[2001:db8::7]:40000"),
        local: addr("[2001:db8::1]:3478"),
        other: None,
        transport: Transport::Udp,
    };
    let mut c = Client::bob(v6);
    let m = try_allocate(&mut h, &mut c);
    assert_eq!(alternates(&m.error(300)), vec![addr(ALT6), addr(ALT1)]);

    // An IPv4-mapped IPv6 client (dual-stack socket) counts as IPv4, and this node's own
    // address is recognised in its mapped form too.
    let mapped = Arrival {
        peer: addr("[::ffff:198.51.100.9]:40000"),
        local: addr("[::ffff:203.0.113.1]:3478"),
        other: None,
        transport: Transport::Udp,
    };
    let mut c = Client::bob(mapped);
    let m = try_allocate(&mut h, &mut c);
    assert_eq!(alternates(&m.error(300)), vec![addr(ALT2), addr(ALT6)]);
    assert_eq!(h.svc.stats().redirects, 6);
}

#[test]
fn redirect_over_tls_carries_alternate_domain_and_reloads() {
    let mut h = shedding(&[ALT1]);
    let mut a = Client::alice(udp(CLIENT));
    h.allocate(&mut a);
    let mut t = Client::bob(at("198.51.100.9:40000", Transport::Tls));
    let out = try_allocate(&mut h, &mut t);
    let m = out.error(300);
    assert_eq!(alternates(&m), vec![addr(ALT1)]);
    assert_eq!(m.alternate_domain().unwrap(), Some("turn.example.org"));
    t.check_integrity(&m);
    // TCP is not TLS: no certificate to check, no ALTERNATE-DOMAIN.
    let mut tcp = Client::bob(at("198.51.100.9:40001", Transport::Tcp));
    let m = try_allocate(&mut h, &mut tcp);
    assert_eq!(m.error(300).alternate_domain().unwrap(), None);

    // Hot reload: a new list takes effect at once; an empty one means 508 again.
    h.svc.set_alternates(vec![addr(ALT2)], None);
    let m = try_allocate(&mut h, &mut t);
    let m = m.error(300);
    assert_eq!(alternates(&m), vec![addr(ALT2)]);
    assert_eq!(m.alternate_domain().unwrap(), None);
    h.svc.set_alternates(Vec::new(), None);
    try_allocate(&mut h, &mut t).error(508);
}

// ===== lifetimes =====

#[test]
fn allocate_lifetime_clamping() {
    let mut h = Harness::default();
    let cases: [(Option<u32>, u32); 6] = [
        (None, 600),
        (Some(1), 600),
        (Some(599), 600),
        (Some(1200), 1200),
        (Some(3600), 3600),
        (Some(u32::MAX), 3600),
    ];
    for (i, (asked, granted)) in cases.into_iter().enumerate() {
        let mut c = Client::alice(udp(&format!("198.51.100.7:{}", 41000 + i)));
        h.login(&mut c);
        let req = c.request(Method::ALLOCATE, |b| {
            b.requested_transport(17).unwrap();
            if let Some(l) = asked {
                b.lifetime(l).unwrap();
            }
        });
        let out = h.handle(&c.at, &req);
        let m = out.success();
        assert_eq!(m.lifetime().unwrap(), Some(granted), "asked {asked:?}");
        assert_eq!(
            h.svc.allocation(&five(&c.at)).unwrap().expires,
            h.now.mono + Duration::from_secs(granted.into())
        );
    }
    // Refresh follows the same rule.
    let mut c = Client::alice(udp("198.51.100.7:41000"));
    h.login(&mut c);
    for (asked, granted) in [
        (Some(10), 600),
        (None, 600),
        (Some(7200), 3600),
        (Some(900), 900),
    ] {
        let out = h.refresh(&mut c, asked);
        let m = out.success();
        assert_eq!(m.lifetime().unwrap(), Some(granted));
    }
}

#[test]
fn refresh_extends_and_expire_removes() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    let relay = h.allocate(&mut c);
    h.advance(500);
    h.expire();
    assert_eq!(h.svc.allocation_count(), 1);
    let out = h.refresh(&mut c, Some(1000));
    let m = out.success();
    assert_eq!(m.lifetime().unwrap(), Some(1000));
    h.advance(999);
    h.expire();
    assert_eq!(h.svc.allocation_count(), 1);
    assert!(h.relays.released.is_empty());
    h.advance(1);
    h.expire();
    assert_eq!(h.svc.allocation_count(), 0);
    assert_eq!(h.relays.released, vec![relay]);
    assert_eq!(h.svc.stats().allocations_ended, 1);
    // Gone: data to and from the relay is dropped, the client may allocate anew.
    assert_eq!(h.peer(relay, addr(PEER), b"x"), Err(PeerDrop::NoAllocation));
    h.refresh(&mut c, None).error(437);
    h.allocate(&mut c);
}

#[test]
fn refresh_zero_deletes_and_releases() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    let relay = h.allocate(&mut c);
    h.permit(&mut c, PEER);
    let out = h.refresh(&mut c, Some(0));
    let m = out.success();
    assert_eq!(m.lifetime().unwrap(), Some(0));
    c.check_integrity(&m);
    assert_eq!(h.svc.allocation_count(), 0);
    assert_eq!(h.relays.released, vec![relay]);
    assert!(h.relays.live.is_empty());
    assert_eq!(h.svc.stats().allocations_ended, 1);
    assert!(matches!(
        h.send(&c, PEER, b"x"),
        Out::Drop(DropReason::Indication)
    ));
    assert_eq!(h.peer(relay, addr(PEER), b"x"), Err(PeerDrop::NoAllocation));
    // A retransmitted delete finds nothing: 437.
    h.refresh(&mut c, Some(0)).error(437);
    h.expire();
    assert_eq!(h.relays.released.len(), 1);
}

#[test]
fn connection_closed_releases() {
    let mut h = Harness::default();
    let mut c = Client::alice(at(CLIENT, Transport::Tcp));
    let relay = h.allocate(&mut c);
    h.svc.connection_closed(&five(&c.at), &mut h.relays, h.now);
    assert_eq!(h.svc.allocation_count(), 0);
    assert_eq!(h.relays.released, vec![relay]);
}

#[test]
fn permissions_expire_after_300s() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    let relay = h.allocate_with(&mut c, |b| {
        b.lifetime(3600).unwrap();
    });
    h.permit(&mut c, PEER);
    assert_eq!(h.svc.stats().permissions, 1);
    h.advance(299);
    assert!(matches!(h.send(&c, PEER, b"a"), Out::Relay { .. }));
    assert!(h.peer(relay, addr(PEER), b"b").is_ok());
    // The permission covers the IP, any port.
    assert!(matches!(
        h.send(&c, "198.51.100.20:1", b"a"),
        Out::Relay { .. }
    ));
    h.advance(1);
    assert!(matches!(
        h.send(&c, PEER, b"a"),
        Out::Drop(DropReason::Indication)
    ));
    assert_eq!(h.peer(relay, addr(PEER), b"b"), Err(PeerDrop::NoPermission));
    // A refresh before expiry extends it.
    h.permit(&mut c, PEER);
    h.advance(200);
    h.permit(&mut c, PEER);
    h.advance(299);
    assert!(matches!(h.send(&c, PEER, b"a"), Out::Relay { .. }));
    h.advance(1);
    assert!(matches!(h.send(&c, PEER, b"a"), Out::Drop(_)));
    assert_eq!(h.svc.stats().permissions, 3);
    assert_eq!(h.svc.stats().dropped_to_peer, 2);
    assert_eq!(h.svc.stats().dropped_to_client, 1);
}

#[test]
fn channels_expire_after_600s() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    let relay = h.allocate_with(&mut c, |b| {
        b.lifetime(3600).unwrap();
    });
    h.bind(&mut c, 0x4000, PEER).success();
    // ChannelBind installed the permission too.
    assert!(matches!(h.send(&c, PEER, b"a"), Out::Relay { .. }));
    // Keep the permission alive; the channel is not refreshed.
    h.advance(290);
    h.permit(&mut c, PEER);
    h.advance(290);
    h.permit(&mut c, PEER);
    h.advance(19); // t = 599
    assert!(matches!(h.channel(&c, 0x4000, b"cd"), Out::Relay { .. }));
    assert_eq!(
        h.peer(relay, addr(PEER), b"hello").unwrap()[..2],
        [0x40, 0x00]
    );
    h.advance(1); // t = 600
    assert!(matches!(
        h.channel(&c, 0x4000, b"cd"),
        Out::Drop(DropReason::ChannelData)
    ));
    // The permission is still there: peer data comes as a Data indication now.
    let ind = h.peer(relay, addr(PEER), b"hello").unwrap();
    let m = Message::parse(&ind).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Indication, Method::DATA));
    // After expiry the number may be bound to another peer.
    h.bind(&mut c, 0x4000, PEER2).success();
    // A ChannelBind refresh extends the channel (and the permission).
    h.advance(500);
    h.bind(&mut c, 0x4000, PEER2).success();
    h.advance(599);
    h.permit(&mut c, PEER2);
    assert!(matches!(h.channel(&c, 0x4000, b"x"), Out::Relay { .. }));
    h.advance(1);
    assert!(matches!(h.channel(&c, 0x4000, b"x"), Out::Drop(_)));
}

// ===== data path =====

#[test]
fn send_indication_and_data_indication() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    let relay = h.allocate(&mut c);
    // No permission yet: silently dropped.
    assert!(matches!(
        h.send(&c, PEER, b"early"),
        Out::Drop(DropReason::Indication)
    ));
    assert_eq!(
        h.peer(relay, addr(PEER), b"early"),
        Err(PeerDrop::NoPermission)
    );
    h.permit(&mut c, PEER);
    match h.send(&c, PEER, b"hello peer") {
        Out::Relay {
            relay: r,
            peer,
            data,
        } => {
            assert_eq!(r, relay);
            assert_eq!(peer, addr(PEER));
            assert_eq!(data, b"hello peer");
        }
        other => panic!("{other:?}"),
    }
    // Peer → client: a Data indication with XOR-PEER-ADDRESS and DATA.
    let five_out = h.peer_five(relay, addr(PEER), b"hi client");
    assert_eq!(five_out, five(&c.at));
    let ind = h.peer(relay, addr(PEER), b"hi client").unwrap();
    let m = Message::parse(&ind).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Indication, Method::DATA));
    assert_eq!(m.xor_peer_address().unwrap(), Some(addr(PEER)));
    assert_eq!(m.data().unwrap(), Some(&b"hi client"[..]));
    assert_eq!(ind.len() % 4, 0);
    // Data indications get distinct transaction ids.
    let ind2 = h.peer(relay, addr(PEER), b"again").unwrap();
    assert_ne!(
        Message::parse(&ind2).unwrap().transaction_id(),
        m.transaction_id()
    );
    // A peer without permission is dropped.
    assert_eq!(
        h.peer(relay, addr(PEER2), b"x"),
        Err(PeerDrop::NoPermission)
    );
    // Malformed Send indications are dropped.
    let no_data = build(
        Class::Indication,
        Method::SEND,
        TransactionId([4; 12]),
        |b| {
            b.xor_peer_address(addr(PEER)).unwrap();
        },
    );
    assert!(matches!(
        h.handle(&c.at, &no_data),
        Out::Drop(DropReason::Indication)
    ));
    let s = h.svc.stats().clone();
    assert_eq!((s.packets_to_peer, s.bytes_to_peer), (1, 10));
    assert_eq!((s.packets_to_client, s.bytes_to_client), (3, 9 + 9 + 5));
    assert_eq!((s.dropped_to_peer, s.dropped_to_client), (2, 2));
}

#[test]
fn send_indication_with_unknown_required_attribute_is_dropped() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    h.allocate(&mut c);
    h.permit(&mut c, PEER);
    let ind = send_indication(PEER, b"x", |b| {
        b.add(0x7F02, &[]).unwrap();
    });
    assert!(matches!(
        h.handle(&c.at, &ind),
        Out::Drop(DropReason::Indication)
    ));
    // DONT-FRAGMENT and optional attributes are fine.
    let ind = send_indication(PEER, b"x", |b| {
        b.dont_fragment().unwrap();
        b.add(0xC0DE, &[]).unwrap();
    });
    assert!(matches!(h.handle(&c.at, &ind), Out::Relay { .. }));
}

#[test]
fn channel_data_both_ways_and_padding() {
    for transport in [Transport::Udp, Transport::Tcp, Transport::Tls] {
        let mut h = Harness::default();
        let mut c = Client::alice(at(CLIENT, transport));
        let relay = h.allocate(&mut c);
        // Unbound channel: dropped.
        assert!(matches!(
            h.channel(&c, 0x4001, b"x"),
            Out::Drop(DropReason::ChannelData)
        ));
        h.bind(&mut c, 0x4001, PEER).success();
        match h.channel(&c, 0x4001, b"hello") {
            Out::Relay {
                relay: r,
                peer,
                data,
            } => {
                assert_eq!((r, peer, &data[..]), (relay, addr(PEER), &b"hello"[..]));
            }
            other => panic!("{other:?}"),
        }
        let cd = h.peer(relay, addr(PEER), b"hello").unwrap();
        if transport == Transport::Udp {
            assert_eq!(cd, b"\x40\x01\x00\x05hello");
        } else {
            assert_eq!(cd, b"\x40\x01\x00\x05hello\0\0\0");
            assert_eq!(cd.len() % 4, 0);
        }
        // Another port of the peer has permission but no channel: a Data indication.
        let ind = h.peer(relay, addr("198.51.100.20:5001"), b"x").unwrap();
        assert_eq!(Message::parse(&ind).unwrap().method(), Method::DATA);
        // Padded ChannelData from the client is accepted over UDP too.
        let padded = b"\x40\x01\x00\x01z\0\0\0";
        assert!(matches!(h.handle(&c.at, padded), Out::Relay { data, .. } if data == b"z"));
        // Truncated ChannelData is malformed.
        assert!(matches!(
            h.handle(&c.at, b"\x40\x01\x00\x09abc"),
            Out::Drop(DropReason::Malformed)
        ));
        let s = h.svc.stats();
        assert_eq!((s.packets_to_peer, s.bytes_to_peer), (2, 6));
        assert_eq!((s.packets_to_client, s.bytes_to_client), (2, 6));
        assert_eq!(s.dropped_to_peer, 1);
    }
}

#[test]
fn five_tuple_isolation() {
    let mut h = Harness::default();
    let mut a = Client::alice(udp(CLIENT));
    let relay = h.allocate(&mut a);
    h.bind(&mut a, 0x4000, PEER).success();
    // Same user, same IP, other port: another 5-tuple.
    let mut other = Client::alice(udp("198.51.100.7:40001"));
    h.refresh(&mut other, Some(0)).error(437);
    h.request(&mut other, Method::CREATE_PERMISSION, |b| {
        b.xor_peer_address(addr(PEER2)).unwrap();
    })
    .error(437);
    h.bind(&mut other, 0x4001, PEER2).error(437);
    assert!(matches!(
        h.send(&other, PEER, b"x"),
        Out::Drop(DropReason::Indication)
    ));
    assert!(matches!(
        h.channel(&other, 0x4000, b"x"),
        Out::Drop(DropReason::ChannelData)
    ));
    // Same address over TCP, or to another server address: other 5-tuples too.
    let tcp = Client::alice(at(CLIENT, Transport::Tcp));
    assert!(matches!(
        h.channel(&tcp, 0x4000, b"x"),
        Out::Drop(DropReason::ChannelData)
    ));
    let mut other_server = a.clone();
    other_server.at.local = addr("203.0.113.2:3478");
    assert!(matches!(h.send(&other_server, PEER, b"x"), Out::Drop(_)));
    // The owner is unaffected.
    assert_eq!(h.svc.allocation_count(), 1);
    assert!(matches!(h.channel(&a, 0x4000, b"x"), Out::Relay { .. }));
    assert_eq!(h.peer_five(relay, addr(PEER), b"y"), five(&a.at));
    assert_eq!(h.svc.stats().dropped_to_peer, 4);
    assert_eq!(h.svc.stats().packets_to_peer, 1);
}

// ===== credentials =====

#[test]
fn rest_credentials() {
    let mut h = Harness::new(TurnConfig::default(), rest_creds());
    let names = [
        format!("{}:alice", UNIX0 + 3600),
        format!("{}", UNIX0 + 60),
        format!("{}:bob", UNIX0),
        format!("{}:carol", UNIX0 + 1),
    ];
    let passwords = [
        rest_sha1(REST_SECRET, &names[0]),
        rest_sha1(REST_SECRET, &names[1]),
        rest_sha1(REST_SECRET2, &names[2]), // the second (rotated) secret
        rest_sha256(REST_SECRET, &names[3]), // the SHA-256 variant
    ];
    for (i, (name, pw)) in names.iter().zip(&passwords).enumerate() {
        let mut c = Client::new(udp(&format!("198.51.100.7:{}", 42000 + i)), name, pw);
        if i == 3 {
            c = c.sha256();
        }
        h.allocate(&mut c);
        assert_eq!(h.svc.allocation(&five(&c.at)).unwrap().username, *name);
    }
    assert_eq!(h.svc.allocation_count(), 4);
    assert_eq!(h.svc.stats().auth_failures, 0);
    // A wrong secret fails.
    let name = format!("{}:alice", UNIX0 + 10);
    let mut c = Client::new(udp(CLIENT), &name, &rest_sha1("nope", &name));
    h.login(&mut c);
    let req = c.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    h.handle(&c.at, &req).error(401);
    // USERHASH cannot name a REST user.
    let mut c = Client::new(udp(CLIENT), &names[0], &passwords[0]);
    h.login(&mut c);
    c.userhash = true;
    let req = c.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    h.handle(&c.at, &req).error(401);
    // An allocation outlives its credential's expiry; its refreshes do not.
    let mut c = Client::new(udp("198.51.100.7:42002"), &names[2], &passwords[2]);
    h.login(&mut c);
    h.refresh(&mut c, None).success();
    h.now.unix += 1;
    h.refresh(&mut c, None).error(401);
    assert_eq!(h.svc.allocation_count(), 4);
}

#[test]
fn ha1_user_md5_only() {
    let ha1: String = long_term_key_md5("carol", REALM, "carol-pw")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut creds = Credentials::new(REALM);
    creds.add_user_entry(&format!("carol:0x{ha1}")).unwrap();
    let mut h = Harness::new(TurnConfig::default(), creds);
    let mut c = Client::new(udp(CLIENT), "carol", "carol-pw");
    h.allocate(&mut c);
    let mut s = Client::new(udp("198.51.100.7:40001"), "carol", "carol-pw").sha256();
    h.login(&mut s);
    let req = s.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    assert_challenge(&h.handle(&s.at, &req).error(401));
    assert_eq!(h.svc.allocation_count(), 1);
}

#[test]
fn set_credentials_hot_reload() {
    let mut h = Harness::default();
    let mut a = Client::alice(udp(CLIENT));
    h.allocate(&mut a);
    let mut only_bob = Credentials::new(REALM);
    only_bob.add_user_entry("bob:bob-pw").unwrap();
    h.svc.set_credentials(Arc::new(only_bob));
    assert!(h.svc.turn_enabled());
    h.refresh(&mut a, None).error(401);
    assert_eq!(h.svc.allocation_count(), 1);
}

// ===== EVEN-PORT and reservations =====

#[test]
fn even_port_reservation() {
    let mut h = Harness::default();
    h.relays.next = 49153;
    let mut a = Client::alice(udp(CLIENT));
    h.login(&mut a);
    let req = a.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
        b.even_port(true).unwrap();
    });
    let out = h.handle(&a.at, &req);
    let m = out.success();
    let relay = m.xor_relayed_address().unwrap().unwrap();
    assert_eq!(relay, addr("192.0.2.1:49154"));
    let token = m.reservation_token().unwrap().expect("RESERVATION-TOKEN");
    assert_eq!(h.relays.requests[0].even, Some(true));
    // A retransmission repeats the token.
    let out = h.handle(&a.at, &req);
    let m = out.success();
    assert_eq!(m.reservation_token().unwrap(), Some(token));

    // Another client takes the reserved port with the token.
    let mut b = Client::bob(udp("198.51.100.9:40000"));
    let reserved = h.allocate_with(&mut b, |x| {
        x.reservation_token(token).unwrap();
    });
    assert_eq!(reserved, addr("192.0.2.1:49155"));
    assert_eq!(h.relays.requests[1].reserved, Some(reserved));
    // A retransmission of the first Allocate no longer carries the used token.
    let out = h.handle(&a.at, &req);
    let m = out.success();
    assert_eq!(m.reservation_token().unwrap(), None);
    // A token is good once.
    let mut c = Client::alice(udp("198.51.100.7:40001"));
    h.login(&mut c);
    let req = c.request(Method::ALLOCATE, |x| {
        x.requested_transport(17).unwrap();
        x.reservation_token(token).unwrap();
    });
    h.handle(&c.at, &req).error(508);
    assert_eq!(h.svc.allocation_count(), 2);
    // Ending the first allocation does not touch the second.
    h.refresh(&mut a, Some(0)).success();
    assert_eq!(h.relays.released, vec![relay]);
    assert!(matches!(
        h.send(&b, PEER, b"x"),
        Out::Drop(DropReason::Indication)
    ));
    assert_eq!(h.svc.allocation_count(), 1);
}

#[test]
fn even_port_without_reservation() {
    let mut h = Harness::default();
    h.relays.next = 49153;
    let mut a = Client::alice(udp(CLIENT));
    h.login(&mut a);
    let req = a.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
        b.even_port(false).unwrap();
    });
    let out = h.handle(&a.at, &req);
    let m = out.success();
    assert_eq!(
        m.xor_relayed_address().unwrap(),
        Some(addr("192.0.2.1:49154"))
    );
    assert_eq!(m.reservation_token().unwrap(), None);
    assert_eq!(h.relays.requests[0].even, Some(false));
    assert!(h.relays.reserved.is_empty());
}

#[test]
fn reservations_expire_after_30s() {
    let mut h = Harness::default();
    let mut a = Client::alice(udp(CLIENT));
    h.login(&mut a);
    let req = a.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
        b.even_port(true).unwrap();
    });
    let out = h.handle(&a.at, &req);
    let m = out.success();
    let token = m.reservation_token().unwrap().unwrap();
    let reserved = addr("192.0.2.1:49153");
    assert!(h.relays.reserved.contains(&reserved));
    h.advance(29);
    h.expire();
    assert!(h.relays.released.is_empty());
    h.advance(1);
    h.expire();
    assert_eq!(h.relays.released, vec![reserved]);
    assert!(h.relays.reserved.is_empty());
    assert_eq!(h.svc.allocation_count(), 1);
    let mut b = Client::bob(udp("198.51.100.9:40000"));
    h.login(&mut b);
    let req = b.request(Method::ALLOCATE, |x| {
        x.requested_transport(17).unwrap();
        x.reservation_token(token).unwrap();
    });
    h.handle(&b.at, &req).error(508);
    // Released once only.
    h.advance(60);
    h.expire();
    assert_eq!(h.relays.released, vec![reserved]);
}

#[test]
fn reservation_survives_a_failed_bind() {
    let mut h = Harness::default();
    let mut a = Client::alice(udp(CLIENT));
    h.login(&mut a);
    let req = a.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
        b.even_port(true).unwrap();
    });
    let out = h.handle(&a.at, &req);
    let m = out.success();
    let token = m.reservation_token().unwrap().unwrap();
    let mut b = Client::bob(udp("198.51.100.9:40000"));
    h.login(&mut b);
    h.relays.fail = Some(RelayError::NoCapacity);
    let req = b.request(Method::ALLOCATE, |x| {
        x.requested_transport(17).unwrap();
        x.reservation_token(token).unwrap();
    });
    h.handle(&b.at, &req).error(508);
    h.relays.fail = None;
    let relay = h.allocate_with(&mut b, |x| {
        x.reservation_token(token).unwrap();
    });
    assert_eq!(relay, addr("192.0.2.1:49153"));
    // And when never used, it is still released on time.
    let mut h = Harness::default();
    let mut a = Client::alice(udp(CLIENT));
    h.login(&mut a);
    let req = req_even(&mut a);
    let out = h.handle(&a.at, &req);
    let m = out.success();
    let token = m.reservation_token().unwrap().unwrap();
    h.relays.fail = Some(RelayError::NoCapacity);
    let mut b = Client::bob(udp("198.51.100.9:40000"));
    h.login(&mut b);
    let req = b.request(Method::ALLOCATE, |x| {
        x.requested_transport(17).unwrap();
        x.reservation_token(token).unwrap();
    });
    h.handle(&b.at, &req).error(508);
    h.advance(30);
    h.expire();
    assert_eq!(h.relays.released, vec![addr("192.0.2.1:49153")]);
}

fn req_even(c: &mut Client) -> Vec<u8> {
    c.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
        b.even_port(true).unwrap();
    })
}

// ===== configuration =====

#[test]
fn bandwidth_cap() {
    let mut h = Harness::new(
        TurnConfig {
            bandwidth: 1000,
            ..TurnConfig::default()
        },
        users(),
    );
    let mut c = Client::alice(udp(CLIENT));
    let relay = h.allocate(&mut c);
    h.bind(&mut c, 0x4000, PEER).success();
    let big = [0u8; 600];
    assert!(matches!(h.send(&c, PEER, &big), Out::Relay { .. }));
    assert!(matches!(
        h.send(&c, PEER, &big),
        Out::Drop(DropReason::Indication)
    ));
    assert!(matches!(
        h.channel(&c, 0x4000, &big),
        Out::Drop(DropReason::ChannelData)
    ));
    // 400 bytes left, shared by both directions.
    assert!(h.peer(relay, addr(PEER), &[0u8; 300]).is_ok());
    assert_eq!(
        h.peer(relay, addr(PEER), &[0u8; 300]),
        Err(PeerDrop::Bandwidth)
    );
    h.now.mono += Duration::from_millis(500);
    assert!(h.peer(relay, addr(PEER), &[0u8; 550]).is_ok());
    h.now.mono += Duration::from_secs(10);
    // The burst is one second's worth.
    assert!(matches!(
        h.channel(&c, 0x4000, &[0u8; 1000]),
        Out::Relay { .. }
    ));
    assert!(matches!(h.channel(&c, 0x4000, &[0u8; 1]), Out::Drop(_)));
    let s = h.svc.stats();
    assert_eq!((s.packets_to_peer, s.bytes_to_peer), (2, 1600));
    assert_eq!((s.packets_to_client, s.bytes_to_client), (2, 850));
    assert_eq!((s.dropped_to_peer, s.dropped_to_client), (3, 1));
}

#[test]
fn external_ip_is_advertised() {
    let mut h = Harness::new(
        TurnConfig {
            external_ip: Some("198.51.100.200".parse().unwrap()),
            ..TurnConfig::default()
        },
        users(),
    );
    let mut c = Client::alice(udp(CLIENT));
    let advertised = h.allocate(&mut c);
    assert_eq!(advertised, addr("198.51.100.200:49152"));
    let a = h.svc.allocation(&five(&c.at)).unwrap();
    assert_eq!((a.relay, a.advertised), (addr(RELAY0), advertised));
    h.permit(&mut c, PEER);
    // The data path uses the bound address.
    assert!(matches!(h.send(&c, PEER, b"x"), Out::Relay { relay, .. } if relay == addr(RELAY0)));
    assert!(h.peer(addr(RELAY0), addr(PEER), b"x").is_ok());
    assert_eq!(
        h.peer(advertised, addr(PEER), b"x"),
        Err(PeerDrop::NoAllocation)
    );
    // An IPv4 external address does not apply to an IPv6 relay.
    let mut c6 = Client::alice(udp("198.51.100.7:40001"));
    let relay6 = h.allocate_with(&mut c6, |b| {
        b.requested_address_family(2).unwrap();
    });
    assert!(relay6.is_ipv6());
    // A retransmission repeats the advertised address.
    assert_eq!(
        h.svc.allocation(&five(&c.at)).unwrap().advertised,
        advertised
    );
}

#[test]
fn turn_disabled_refuses_turn_but_answers_binding() {
    let mut h = Harness::new(TurnConfig::default(), Credentials::new(REALM));
    assert!(!h.svc.turn_enabled());
    let mut c = Client::alice(udp(CLIENT));
    for method in [
        Method::ALLOCATE,
        Method::REFRESH,
        Method::CREATE_PERMISSION,
        Method::CHANNEL_BIND,
    ] {
        let req = c.unauth(method, |b| {
            b.requested_transport(17).unwrap();
        });
        let out = h.handle(&c.at, &req);
        let m = out.error(400);
        assert_eq!(m.nonce().unwrap(), None);
        assert_eq!(m.realm().unwrap(), None);
    }
    assert_eq!(h.refusals(400), 4);
    let req = build(
        Class::Request,
        Method::BINDING,
        TransactionId([5; 12]),
        |_| {},
    );
    let out = h.handle(&c.at, &req);
    let m = out.success();
    assert_eq!(m.xor_mapped_address().unwrap(), Some(addr(CLIENT)));
    // Indications and ChannelData go nowhere.
    assert!(matches!(h.send(&c, PEER, b"x"), Out::Drop(_)));
    assert!(matches!(h.channel(&c, 0x4000, b"x"), Out::Drop(_)));
    assert_eq!(h.svc.allocation_count(), 0);
}

#[test]
fn responses_and_junk_are_dropped() {
    let mut h = Harness::default();
    let c = Client::alice(udp(CLIENT));
    let resp = build(
        Class::Success,
        Method::ALLOCATE,
        TransactionId([1; 12]),
        |_| {},
    );
    assert!(matches!(
        h.handle(&c.at, &resp),
        Out::Drop(DropReason::Response)
    ));
    let ind = build(
        Class::Indication,
        Method::DATA,
        TransactionId([1; 12]),
        |_| {},
    );
    assert!(matches!(
        h.handle(&c.at, &ind),
        Out::Drop(DropReason::Indication)
    ));
    assert!(matches!(
        h.handle(&c.at, &[]),
        Out::Drop(DropReason::NotStun)
    ));
    assert!(matches!(
        h.handle(&c.at, &[0xFF; 30]),
        Out::Drop(DropReason::NotStun)
    ));
    assert!(matches!(
        h.handle(&c.at, &[0; 10]),
        Out::Drop(DropReason::Malformed)
    ));
    // A bad FINGERPRINT.
    let mut req = build(
        Class::Request,
        Method::ALLOCATE,
        TransactionId([1; 12]),
        |b| {
            b.fingerprint().unwrap();
        },
    );
    let n = req.len();
    req[n - 1] ^= 1;
    assert!(matches!(
        h.handle(&c.at, &req),
        Out::Drop(DropReason::BadFingerprint)
    ));
    assert_eq!(h.total_refusals(), 0);
}

#[test]
fn small_output_buffers_are_not_a_panic() {
    let mut h = Harness::default();
    let mut c = Client::alice(udp(CLIENT));
    let relay = h.allocate(&mut c);
    h.permit(&mut c, PEER);
    h.bind(&mut c, 0x4000, PEER).success();
    let reqs = [
        c.unauth(Method::ALLOCATE, |_| {}),
        c.request(Method::REFRESH, |_| {}),
        c.request(Method::ALLOCATE, |b| {
            b.requested_transport(17).unwrap();
        }),
        c.request(Method::CREATE_PERMISSION, |b| {
            b.xor_peer_address(addr(PEER)).unwrap();
        }),
    ];
    for req in &reqs {
        for size in 0..200 {
            let mut out = vec![0u8; size];
            let r = h.svc.handle(h.now, &c.at, req, &mut out, &mut h.relays);
            if let Output::Reply { len, .. } = r {
                assert!(len <= size);
            }
        }
    }
    for size in 0..20 {
        let mut out = vec![0u8; size];
        let r = h
            .svc
            .handle_peer(h.now, relay, addr(PEER), b"hello", &mut out);
        assert!(matches!(
            r,
            PeerOutput::Drop(PeerDrop::OutputTooSmall) | PeerOutput::ToClient { .. }
        ));
    }
    assert_eq!(h.svc.allocation_count(), 1);
}

// ===== robustness =====

/// A harness with one allocation (permission, channel) and a set of valid client inputs.
fn fuzz_setup() -> (Harness, Client, SocketAddr, Vec<Vec<u8>>) {
    let mut h = Harness::new(
        TurnConfig {
            bandwidth: 100_000,
            user_quota: 3,
            ..TurnConfig::default()
        },
        users(),
    );
    let mut c = Client::alice(udp(CLIENT)).sha256();
    let relay = h.allocate_with(&mut c, |b| {
        b.even_port(true).unwrap();
    });
    h.bind(&mut c, 0x4000, PEER).success();
    let mut seeds = vec![
        c.request(Method::ALLOCATE, |b| {
            b.requested_transport(17).unwrap();
            b.requested_address_family(2).unwrap();
            b.lifetime(100).unwrap();
        }),
        c.request(Method::REFRESH, |b| {
            b.lifetime(0).unwrap();
        }),
        c.request(Method::CREATE_PERMISSION, |b| {
            b.xor_peer_address(addr(PEER2)).unwrap();
            b.xor_peer_address(addr("[2001:db8::9]:1")).unwrap();
        }),
        c.request(Method::CHANNEL_BIND, |b| {
            b.channel_number(0x4001).unwrap();
            b.xor_peer_address(addr(PEER2)).unwrap();
        }),
        c.request(Method::ALLOCATE, |b| {
            b.requested_transport(17).unwrap();
            b.reservation_token([1; 8]).unwrap();
            b.additional_address_family(2).unwrap();
            b.dont_fragment().unwrap();
        }),
        send_indication(PEER, b"fuzz", |_| {}),
        b"\x40\x00\x00\x04fuzz".to_vec(),
    ];
    let mut md5 = Client::alice(udp(CLIENT));
    md5.nonce = c.nonce.clone();
    md5.userhash = true;
    seeds.push(md5.request(Method::REFRESH, |_| {}));
    (h, c, relay, seeds)
}

#[test]
fn deterministic_mutation_sweep() {
    let (mut h, c, relay, seeds) = fuzz_setup();
    let mut out = vec![0u8; MAX_REPLY];
    for seed in &seeds {
        for pos in 0..seed.len() {
            for x in [0x01u8, 0x80, 0xFF] {
                let mut m = seed.clone();
                m[pos] ^= x;
                let r = h.svc.handle(h.now, &c.at, &m, &mut out, &mut h.relays);
                if let Output::Reply { len, .. } = r {
                    Message::parse(&out[..len]).expect("replies parse");
                }
            }
            // Truncations.
            let _ = h
                .svc
                .handle(h.now, &c.at, &seed[..pos], &mut out, &mut h.relays);
        }
        let mut pout = vec![0u8; seed.len() + PEER_OVERHEAD];
        let _ = h.svc.handle_peer(h.now, relay, addr(PEER), seed, &mut pout);
    }
    h.advance(4000);
    h.expire();
    assert_eq!(h.svc.allocation_count(), 0);
    // Every relay bound was released exactly once (the fake asserts on double releases).
    assert!(h.relays.live.is_empty(), "{:?}", h.relays.live);
    assert!(h.relays.reserved.is_empty(), "{:?}", h.relays.reserved);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bytes_never_panic(
            input in proptest::collection::vec(any::<u8>(), 0..300),
            first in prop_oneof![Just(None), (0u8..=0x7F).prop_map(Some)],
            peer_port in any::<u16>(),
        ) {
            let (mut h, c, relay, _) = fuzz_setup();
            let mut input = input;
            if let (Some(b), Some(slot)) = (first, input.first_mut()) {
                *slot = b;
            }
            let mut out = vec![0u8; MAX_REPLY];
            let r = h.svc.handle(h.now, &c.at, &input, &mut out, &mut h.relays);
            if let Output::Reply { len, .. } = r {
                prop_assert!(Message::parse(&out[..len]).is_ok());
            }
            let mut pout = vec![0u8; input.len() + PEER_OVERHEAD];
            let peer = SocketAddr::new(addr(PEER).ip(), peer_port);
            let _ = h.svc.handle_peer(h.now, relay, peer, &input, &mut pout);
            let _ = h.svc.handle_peer(h.now, addr(RELAY0), peer, &input, &mut pout);
        }

        #[test]
        fn mutated_requests_never_panic(
            which in any::<prop::sample::Index>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            advance in 0u64..5000,
        ) {
            let (mut h, c, relay, seeds) = fuzz_setup();
            let mut m = which.get(&seeds).clone();
            for (i, v) in edits {
                let n = m.len();
                m[i.index(n)] = v;
            }
            let keep = m.len() - cut.index(m.len() / 4 + 1);
            m.truncate(keep);
            h.advance(advance);
            let mut out = vec![0u8; MAX_REPLY];
            let r = h.svc.handle(h.now, &c.at, &m, &mut out, &mut h.relays);
            if let Output::Reply { len, .. } = r {
                prop_assert!(Message::parse(&out[..len]).is_ok());
            }
            let mut pout = vec![0u8; m.len() + PEER_OVERHEAD];
            let _ = h.svc.handle_peer(h.now, relay, addr(PEER), &m, &mut pout);
            h.expire();
        }
    }
}

// ===== issue 12: RFC 8489 conformance (nonce cookie, nonce per 5-tuple, response integrity) =====

/// The exact bytes of a first Allocate (RFC 8489 §9.2.3.1: no credentials): header (Allocate
/// request, length 8, magic cookie, transaction id) and REQUESTED-TRANSPORT UDP.
fn first_allocate(tid: u8) -> Vec<u8> {
    let mut req = vec![0x00, 0x03, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42];
    req.extend_from_slice(&[tid; 12]);
    req.extend_from_slice(&[0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0]);
    req
}

/// RFC 8489 §9.2.4: a server that adds PASSWORD-ALGORITHMS "MUST set the STUN Security Feature
/// 'Password algorithms' bit to 1", and §9.2 numbers the 24 bits from the most significant bit
/// of the first byte. Checked on the exact 401 to the exact first request, decoding the four
/// base64 characters by hand (not against the server's constant).
#[test]
fn nonce_cookie_sets_the_password_algorithms_bit_as_rfc8489_numbers_it() {
    let mut h = Harness::default();
    let out = h.handle(&udp(CLIENT), &first_allocate(1));
    let m = out.error(401);
    let nonce = m.nonce().unwrap().unwrap();
    assert!(m.password_algorithms().unwrap().is_some());
    // The first base64 character carries bits 0-5: bit 0 is the top bit of the first sextet.
    // 100000 is index 32 of the RFC 4648 alphabet, 'g'; the other 18 bits are zero: "AAA".
    assert_eq!(&nonce[..13], "obMatJos2gAAA");
    assert!(feature_bit(nonce, PASSWORD_ALGORITHMS_BIT));
    // Not bit 23, which is unassigned (the old "AAAB" cookie).
    assert!(!feature_bit(nonce, 23));
    // Nor bit 1, "Username anonymity", which is not offered.
    assert!(!feature_bit(nonce, 1));
}

/// RFC 8489 §9.2.4: "The server MUST NOT choose the same NONCE for two requests unless they have
/// the same source IP address and port." Nonces are bound to the whole 5-tuple (client address and
/// port, server address, transport), and a nonce is accepted only from the 5-tuple it was issued
/// to.
#[test]
fn nonces_are_bound_to_the_five_tuple() {
    let mut h = Harness::default();
    let nonce_for = |h: &mut Harness, at: &Arrival, tid: u8| {
        let out = h.handle(at, &first_allocate(tid));
        out.error(401).nonce().unwrap().unwrap().to_string()
    };
    // Within one second (fake time does not move): the same 5-tuple gets the same nonce...
    let a = nonce_for(&mut h, &udp(CLIENT), 1);
    assert_eq!(nonce_for(&mut h, &udp(CLIENT), 2), a);
    // ...other source ports of that IP, other transports and other server addresses do not.
    let mut others = vec![
        nonce_for(&mut h, &udp("198.51.100.7:40001"), 3),
        nonce_for(&mut h, &udp("198.51.100.7:40002"), 4),
        nonce_for(&mut h, &at(CLIENT, Transport::Tcp), 5),
        nonce_for(&mut h, &at(CLIENT, Transport::Tls), 6),
    ];
    let mut other_server = udp(CLIENT);
    other_server.local = addr("203.0.113.2:3478");
    others.push(nonce_for(&mut h, &other_server, 7));
    others.push(a.clone());
    let n = others.len();
    others.sort();
    others.dedup();
    assert_eq!(others.len(), n, "a nonce was shared: {others:?}");

    // A nonce from one port is refused from another (438 with that port's own nonce), which
    // then works.
    let mut c = Client::alice(udp("198.51.100.7:40001"));
    c.nonce = a.clone();
    let req = c.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    let m = h.handle(&c.at, &req);
    let m = m.error(438);
    assert_challenge(&m);
    let fresh = m.nonce().unwrap().unwrap().to_string();
    assert_ne!(fresh, a);
    c.nonce = fresh;
    h.allocate(&mut c);
    // And the same over TCP from the client's own address and port.
    let mut t = Client::alice(at(CLIENT, Transport::Tcp));
    t.nonce = a;
    let req = t.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    h.handle(&t.at, &req).error(438);
    assert_eq!(h.refusals(438), 2);
}

// ===== issue 12 item 6: 401s that do not leak, and do not amplify =====

/// The attribute types of a message, in order.
fn attribute_types(m: &Message<'_>) -> Vec<u16> {
    m.attributes().map(|a| a.typ).collect()
}

/// Every 401 — no credentials, unknown user, unknown USERHASH, wrong realm, wrong password, a
/// wrong REST password, a REST name that is not `EXPIRY:USER`, and an expired or a revoked REST
/// credential that is correctly signed — has the same reason phrase, the same attributes and
/// the same length: nothing tells a wrong password from an expired credential. The causes are
/// counted (auth failures, 401 refusals) and logged, never sent.
#[test]
fn every_401_looks_the_same_on_the_wire() {
    let mut creds = rest_creds();
    creds.add_user_entry("alice:alice-pw").unwrap();
    creds.revoke("carol");
    let mut h = Harness::new(
        TurnConfig {
            software: "sb-test".into(),
            ..TurnConfig::default()
        },
        creds,
    );
    let mut port = 41000;
    let mut answer = |h: &mut Harness, user: &str, password: &str, f: &dyn Fn(&mut Client)| {
        port += 1;
        let mut c = Client::new(udp(&format!("198.51.100.7:{port}")), user, password);
        h.login(&mut c);
        f(&mut c);
        let req = c.request(Method::ALLOCATE, |b| {
            b.requested_transport(17).unwrap();
        });
        let out = h.handle(&c.at, &req);
        let m = out.error(401);
        assert_challenge(&m);
        (
            m.error_code().unwrap().unwrap().1.to_string(),
            attribute_types(&m),
            out.bytes().len(),
        )
    };
    let none = |_: &mut Client| {};
    let expired = format!("{}:bob", UNIX0 - 1);
    let revoked = format!("{}:carol", UNIX0 + 100);
    let answers = vec![
        answer(&mut h, "alice", "wrong", &none),
        answer(&mut h, "mallory", "alice-pw", &none),
        answer(&mut h, "mallory", "alice-pw", &|c| c.userhash = true),
        answer(&mut h, "alice", "alice-pw", &|c| {
            c.realm = "other.example".into()
        }),
        answer(&mut h, &format!("{}:bob", UNIX0 + 100), "wrong", &none),
        answer(&mut h, "no-expiry", "whatever", &none),
        answer(&mut h, &expired, &rest_sha1(REST_SECRET, &expired), &none),
        answer(&mut h, &expired, "wrong", &none),
        answer(&mut h, &revoked, &rest_sha1(REST_SECRET, &revoked), &none),
        answer(&mut h, &revoked, "wrong", &none),
    ];
    // The unauthenticated challenge itself looks the same too.
    let challenge = {
        let mut c = Client::alice(udp("198.51.100.7:42000"));
        let req = c.unauth(Method::ALLOCATE, |b| {
            b.requested_transport(17).unwrap();
        });
        let out = h.handle(&c.at, &req);
        let m = out.error(401);
        (
            m.error_code().unwrap().unwrap().1.to_string(),
            attribute_types(&m),
            out.bytes().len(),
        )
    };
    for a in &answers {
        assert_eq!(a, &challenge);
    }
    assert_eq!(challenge.0, "Unauthenticated");
    assert_eq!(
        challenge.1,
        vec![
            attr::ERROR_CODE,
            attr::REALM,
            attr::NONCE,
            attr::PASSWORD_ALGORITHMS,
            attr::FINGERPRINT
        ]
    );
    // Counted apart from the challenges: 10 failures, 11 challenges (logins) + 1.
    assert_eq!(h.svc.stats().auth_failures, 10);
    assert_eq!(h.refusals(401), 10 + 10 + 1);
    assert_eq!(h.svc.allocation_count(), 0);
    // The same credentials, unexpired and unrevoked, work.
    let fine = format!("{}:bob", UNIX0 + 100);
    let mut c = Client::new(udp(CLIENT), &fine, &rest_sha1(REST_SECRET, &fine));
    h.allocate(&mut c);
}

/// An unauthenticated request is answered with a 401 of REALM, NONCE and PASSWORD-ALGORITHMS,
/// which RFC 8489 §9.2.4 requires, and nothing else: no SOFTWARE, FINGERPRINT only when the
/// request had one. A 20-byte request (a bare header, the smallest that is answered) gets 108
/// bytes with the 11-character realm: 5.4 times its size (docs/turn.md, docs/security.md).
#[test]
fn unauthenticated_401_size_is_bounded_by_the_request() {
    let mut h = Harness::new(
        TurnConfig {
            software: "switchboard 0.1 with a long SOFTWARE string".into(),
            ..TurnConfig::default()
        },
        users(),
    );
    // The smallest request: a header alone.
    let mut bare = first_allocate(1);
    bare.truncate(20);
    bare[3] = 0;
    // Realm of 11 characters: 20 + ERROR-CODE 24 + REALM 16 + NONCE 36 + PASSWORD-ALGORITHMS 12.
    for (req, with_fingerprint) in [
        (bare.clone(), false),
        (first_allocate(2), false),
        (
            build(
                Class::Request,
                Method::ALLOCATE,
                TransactionId([3; 12]),
                |b| {
                    b.requested_transport(17).unwrap();
                    b.fingerprint().unwrap();
                },
            ),
            true,
        ),
    ] {
        let out = h.handle(&udp(CLIENT), &req);
        let m = out.error(401);
        assert_challenge(&m);
        assert_eq!(m.software().unwrap(), None);
        assert_eq!(m.has_fingerprint(), with_fingerprint);
        let len = out.bytes().len();
        assert_eq!(len, 108 + if with_fingerprint { 8 } else { 0 });
        // Never more than 5.4 times the request (the bare header is the worst case).
        assert!(len * 10 <= req.len() * 54, "{len} for {}", req.len());
    }
    // Refresh, CreatePermission and ChannelBind answer the same way.
    for method in [
        Method::REFRESH,
        Method::CREATE_PERMISSION,
        Method::CHANNEL_BIND,
    ] {
        let mut req = bare.clone();
        req[1] = method.0 as u8;
        let out = h.handle(&udp(CLIENT), &req);
        assert_eq!(out.error(401).method(), method);
        assert_eq!(out.bytes().len(), 108);
    }
}

// ===== issue 12 item 5: quotas count reservations and users =====

/// An EVEN-PORT R=1 Allocate holds two relay sockets (the allocation and the reserved next
/// port): both count against the user's quota until the reservation ends.
#[test]
fn even_port_reservations_count_against_the_user_quota() {
    let mut h = Harness::new(
        TurnConfig {
            user_quota: 2,
            ..TurnConfig::default()
        },
        users(),
    );
    let mut a1 = Client::alice(udp(CLIENT));
    h.login(&mut a1);
    let req = req_even(&mut a1);
    let out = h.handle(&a1.at, &req);
    let token = out.success().reservation_token().unwrap().unwrap();
    assert_eq!(h.svc.held_by("alice"), 2);
    assert_eq!(h.svc.reservation_count(), 1);
    // Quota 2 is used up: a plain Allocate is refused.
    let mut a2 = Client::alice(udp("198.51.100.7:40001"));
    h.login(&mut a2);
    let req = a2.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    let out = h.handle(&a2.at, &req);
    a2.check_integrity(&out.error(486));
    // Taking her own reservation needs no new socket: it is allowed.
    let req = a2.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
        b.reservation_token(token).unwrap();
    });
    h.handle(&a2.at, &req).success();
    assert_eq!(h.svc.held_by("alice"), 2);
    assert_eq!(h.svc.reservation_count(), 0);
    // With one slot left, R=1 (two sockets) is refused, R=0 is not.
    h.refresh(&mut a2, Some(0)).success();
    assert_eq!(h.svc.held_by("alice"), 1);
    let mut a3 = Client::alice(udp("198.51.100.7:40002"));
    h.login(&mut a3);
    let req = req_even(&mut a3);
    h.handle(&a3.at, &req).error(486);
    h.allocate_with(&mut a3, |b| {
        b.even_port(false).unwrap();
    });
    assert_eq!(h.svc.held_by("alice"), 2);
    // A reservation that expires gives its slot back.
    h.refresh(&mut a3, Some(0)).success();
    h.refresh(&mut a1, Some(0)).success();
    let mut a4 = Client::alice(udp("198.51.100.7:40003"));
    h.login(&mut a4);
    let req = req_even(&mut a4);
    h.handle(&a4.at, &req).success();
    assert_eq!(h.svc.held_by("alice"), 2);
    h.advance(31);
    h.expire();
    assert_eq!(h.svc.reservation_count(), 0);
    assert_eq!(h.svc.held_by("alice"), 1);
    assert_eq!(h.refusals(486), 2);
}

/// Reserved ports count against the total quota too (508 over it).
#[test]
fn even_port_reservations_count_against_the_total_quota() {
    let mut h = Harness::new(
        TurnConfig {
            total_quota: 2,
            ..TurnConfig::default()
        },
        users(),
    );
    let mut a = Client::alice(udp(CLIENT));
    h.login(&mut a);
    let req = req_even(&mut a);
    let token = h
        .handle(&a.at, &req)
        .success()
        .reservation_token()
        .unwrap()
        .unwrap();
    let mut b = Client::bob(udp("198.51.100.9:40000"));
    h.login(&mut b);
    let req = b.request(Method::ALLOCATE, |x| {
        x.requested_transport(17).unwrap();
    });
    b.check_integrity(&h.handle(&b.at, &req).error(508));
    // Taking the reservation turns a counted socket into an allocation: allowed, even for
    // another user, and the slot moves to bob.
    let req = b.request(Method::ALLOCATE, |x| {
        x.requested_transport(17).unwrap();
        x.reservation_token(token).unwrap();
    });
    h.handle(&b.at, &req).success();
    assert_eq!((h.svc.held_by("alice"), h.svc.held_by("bob")), (1, 1));
    assert_eq!(h.svc.allocation_count(), 2);
    assert_eq!(h.refusals(508), 1);
}

/// The per-user quota counts the USER of TURN REST names `EXPIRY:USER`, so a fresh expiry is
/// still the same user (as revocation already did).
#[test]
fn user_quota_counts_rest_users_not_rest_usernames() {
    let mut h = Harness::new(
        TurnConfig {
            user_quota: 1,
            ..TurnConfig::default()
        },
        rest_creds(),
    );
    let first = format!("{}:alice", UNIX0 + 3600);
    let mut c1 = Client::new(udp(CLIENT), &first, &rest_sha1(REST_SECRET, &first));
    h.allocate(&mut c1);
    assert_eq!(h.svc.held_by("alice"), 1);
    assert_eq!(h.svc.allocation(&five(&c1.at)).unwrap().user, "alice");
    let second = format!("{}:alice", UNIX0 + 3601);
    let mut c2 = Client::new(
        udp("198.51.100.7:40001"),
        &second,
        &rest_sha256(REST_SECRET2, &second),
    );
    h.login(&mut c2);
    let req = c2.request(Method::ALLOCATE, |b| {
        b.requested_transport(17).unwrap();
    });
    c2.check_integrity(&h.handle(&c2.at, &req).error(486));
    // Another user is not affected.
    let other = format!("{}:bob", UNIX0 + 3600);
    let mut c3 = Client::new(
        udp("198.51.100.7:40002"),
        &other,
        &rest_sha1(REST_SECRET, &other),
    );
    h.allocate(&mut c3);
    // Once alice's first allocation ends, her new credential works.
    h.refresh(&mut c1, Some(0)).success();
    h.allocate(&mut c2);
    assert_eq!(h.svc.held_by("alice"), 1);
}

// ===== issue 12 item 5: random relay ports (RFC 6056) =====

#[test]
fn relay_ports_are_drawn_at_random_from_the_range() {
    let mut p = PortPicker::new(49152, 65535, [1; 32]);
    let ports: Vec<u16> = (0..200)
        .map(|_| p.pick(Parity::Any, Some).unwrap().0)
        .collect();
    assert!(ports.iter().all(|x| (49152..=65535).contains(x)));
    // Not sequential: successive ports are rarely neighbours, and they spread over the range.
    let neighbours = ports
        .windows(2)
        .filter(|w| w[1].abs_diff(w[0]) <= 1)
        .count();
    assert!(neighbours <= 2, "{neighbours} neighbours: {ports:?}");
    let low = ports.iter().filter(|x| **x < 57344).count();
    assert!((60..=140).contains(&low), "{low} of 200 in the lower half");
    let mut distinct = ports.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() >= 195);
    // Another seed, another sequence; the same seed, the same one.
    let mut q = PortPicker::new(49152, 65535, [2; 32]);
    assert_ne!(q.pick(Parity::Any, Some).unwrap().0, ports[0]);
    let mut r = PortPicker::new(49152, 65535, [1; 32]);
    assert_eq!(r.pick(Parity::Any, Some).unwrap().0, ports[0]);
}

#[test]
fn relay_port_collisions_retry_then_scan_then_give_up() {
    // A collision is retried at another random port.
    let mut p = PortPicker::new(40000, 40999, [3; 32]);
    let mut tried = Vec::new();
    let (port, _, _) = p
        .pick(Parity::Any, |x| {
            tried.push(x);
            (tried.len() == 3).then_some(())
        })
        .unwrap();
    assert_eq!(tried.len(), 3);
    assert_eq!(port, tried[2]);
    // One free port left: the random draws miss it, the scan finds it; each port is tried
    // at most once by the scan.
    let mut p = PortPicker::new(40000, 40999, [4; 32]);
    let mut tried = Vec::new();
    let (port, _, _) = p
        .pick(Parity::Any, |x| {
            tried.push(x);
            (x == 40500).then_some(())
        })
        .unwrap();
    assert_eq!(port, 40500);
    assert!(tried.len() <= RANDOM_TRIES as usize + 1000);
    // None free: bounded work, then nothing (the I/O layer answers 508).
    let mut calls = 0;
    assert!(p
        .pick(Parity::Any, |_| -> Option<()> {
            calls += 1;
            None
        })
        .is_none());
    assert_eq!(calls, RANDOM_TRIES as usize + 1000);
}

#[test]
fn relay_ports_even_and_even_pairs() {
    let mut p = PortPicker::new(50001, 50100, [5; 32]);
    for _ in 0..50 {
        let (port, _, next) = p.pick(Parity::Even, Some).unwrap();
        assert!(port % 2 == 0 && (50002..=50100).contains(&port) && next.is_none());
        let (port, _, next) = p.pick(Parity::EvenPair, Some).unwrap();
        assert!(port % 2 == 0 && (50002..=50098).contains(&port));
        assert_eq!(next, Some(port + 1));
    }
    // A pair whose second port is taken is not a pair: the first is given back (dropped) and
    // another tried.
    let taken_odd = |x: u16| (x != 50011).then_some(x);
    for _ in 0..50 {
        let (port, _, _) = p.pick(Parity::EvenPair, taken_odd).unwrap();
        assert_ne!(port, 50010);
    }
    // Ranges too small for the parity.
    assert!(PortPicker::new(50001, 50001, [5; 32])
        .pick(Parity::Even, Some)
        .is_none());
    assert!(PortPicker::new(50000, 50000, [5; 32])
        .pick(Parity::EvenPair, Some)
        .is_none());
    assert_eq!(
        PortPicker::new(65534, 65535, [5; 32])
            .pick(Parity::EvenPair, Some)
            .map(|x| (x.0, x.2)),
        Some((65534, Some(65535)))
    );
    assert_eq!(
        PortPicker::new(65535, 65535, [5; 32])
            .pick(Parity::Any, Some)
            .map(|x| x.0),
        Some(65535)
    );
}

#[test]
fn ended_allocations_are_reported_with_their_reason_lifetime_and_traffic() {
    use switchboard_turn::EndReason;
    let mut h = Harness::default();
    // Deleted by the client after relaying both ways.
    let mut c = Client::alice(udp(CLIENT));
    let relay = h.allocate(&mut c);
    h.permit(&mut c, PEER);
    h.advance(7);
    assert!(matches!(h.send(&c, PEER, b"hello"), Out::Relay { .. }));
    assert!(h.peer(relay, addr(PEER), b"hi!").is_ok());
    assert!(h.svc.take_ended().is_empty(), "nothing ended yet");
    h.refresh(&mut c, Some(0)).success();
    let ended = h.svc.take_ended();
    assert_eq!(ended.len(), 1);
    let e = &ended[0];
    assert_eq!(e.reason, EndReason::Deleted);
    assert_eq!(e.relay, relay);
    assert_eq!(e.username, "alice");
    assert_eq!(e.five, five(&c.at));
    assert_eq!(e.duration, Duration::from_secs(7));
    assert_eq!((e.traffic.packets_to_peer, e.traffic.bytes_to_peer), (1, 5));
    assert_eq!(
        (e.traffic.packets_to_client, e.traffic.bytes_to_client),
        (1, 3)
    );
    assert!(h.svc.take_ended().is_empty(), "taken once");

    // Expired: its lifetime (the default 600 s) ran out.
    let mut c = Client::alice(udp(CLIENT));
    h.allocate(&mut c);
    h.advance(600);
    h.expire();
    let ended = h.svc.take_ended();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].reason, EndReason::Expired);
    assert_eq!(ended[0].duration, Duration::from_secs(600));
    assert_eq!(ended[0].traffic, Default::default());

    // Its TCP connection closed.
    let mut c = Client::alice(at(CLIENT, Transport::Tcp));
    h.allocate(&mut c);
    h.advance(3);
    h.svc.connection_closed(&five(&c.at), &mut h.relays, h.now);
    let ended = h.svc.take_ended();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].reason, EndReason::ConnectionClosed);
    assert_eq!(ended[0].duration, Duration::from_secs(3));
}
