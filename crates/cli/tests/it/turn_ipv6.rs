//! IPv6 relays through REQUESTED-ADDRESS-FAMILY (RFC 8656 §7.1), end to end over real sockets:
//! a client on 127.0.0.1 asks for an IPv6 relay, permits an IPv6 peer on ::1, and data flows
//! both ways (Send indication out, Data indication back). Also checks that an IPv4 peer on an
//! IPv6 relay is refused with 443.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::common::TestServer;
use switchboard_stun::{long_term_key_md5, Class, Message, MessageBuilder, Method, TransactionId};

struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    key: [u8; 16],
    nonce: String,
    serial: u8,
}

impl Client {
    fn new(server: SocketAddr) -> Client {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        Client {
            sock,
            server,
            key: long_term_key_md5("alice", "v6.test", "pw"),
            nonce: String::new(),
            serial: 0,
        }
    }

    /// Sends a request built by `f` (auth added when a nonce is known) and returns the reply.
    fn request(&mut self, method: Method, f: &dyn Fn(&mut MessageBuilder<'_>)) -> Vec<u8> {
        self.serial += 1;
        let mut buf = [0u8; 512];
        let n = {
            let mut b = MessageBuilder::new(
                &mut buf,
                Class::Request,
                method,
                TransactionId([self.serial; 12]),
            )
            .unwrap();
            f(&mut b);
            if !self.nonce.is_empty() {
                b.username("alice").unwrap();
                b.realm("v6.test").unwrap();
                b.nonce(&self.nonce).unwrap();
                b.message_integrity(&self.key).unwrap();
            }
            b.fingerprint().unwrap();
            b.finish()
        };
        self.sock.send_to(&buf[..n], self.server).unwrap();
        let mut inb = [0u8; 2048];
        let (len, _) = self.sock.recv_from(&mut inb).expect("no reply");
        inb[..len].to_vec()
    }
}

#[test]
fn ipv6_relay_via_requested_address_family() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this host; nothing to test");
        return;
    }
    let server = TestServer::new()
        .stun_udp()
        .listen("--stun-udp", "[::1]:0")
        .flag("--turn-realm", "v6.test")
        .flag("--turn-user", "alice:pw")
        .flag("--allow-peer", "::1/128")
        .flag("--allow-peer", "127.0.0.1/32")
        .start();
    let mut c = Client::new(server.addr("stun", "udp"));
    // 401 challenge first.
    let r = c.request(Method::ALLOCATE, &|b| {
        b.requested_transport(17).unwrap();
        b.requested_address_family(2).unwrap();
    });
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.error_code().unwrap().map(|e| e.0), Some(401));
    c.nonce = m.nonce().unwrap().unwrap().to_string();

    let r = c.request(Method::ALLOCATE, &|b| {
        b.requested_transport(17).unwrap();
        b.requested_address_family(2).unwrap();
    });
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class(), Class::Success, "{:?}", m.error_code());
    assert!(m.verify_integrity(&c.key).is_ok());
    let relay = m.xor_relayed_address().unwrap().unwrap();
    assert!(relay.is_ipv6(), "relay {relay} is not IPv6");

    let peer = UdpSocket::bind("[::1]:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let peer_addr = peer.local_addr().unwrap();

    // An IPv4 peer on an IPv6 relay: 443.
    let r = c.request(Method::CREATE_PERMISSION, &|b| {
        b.xor_peer_address("127.0.0.1:9".parse().unwrap()).unwrap();
    });
    assert_eq!(
        Message::parse(&r)
            .unwrap()
            .error_code()
            .unwrap()
            .map(|e| e.0),
        Some(443)
    );

    let r = c.request(Method::CREATE_PERMISSION, &|b| {
        b.xor_peer_address(peer_addr).unwrap();
    });
    assert_eq!(Message::parse(&r).unwrap().class(), Class::Success);

    // Client -> peer through a Send indication.
    let mut buf = [0u8; 256];
    let n = {
        let mut b = MessageBuilder::new(
            &mut buf,
            Class::Indication,
            Method::SEND,
            TransactionId([0xEE; 12]),
        )
        .unwrap();
        b.xor_peer_address(peer_addr).unwrap();
        b.data(b"hello over v6").unwrap();
        b.finish()
    };
    c.sock.send_to(&buf[..n], c.server).unwrap();
    let mut got = [0u8; 256];
    let (len, from) = peer.recv_from(&mut got).expect("peer got nothing");
    assert_eq!(&got[..len], b"hello over v6");
    assert_eq!(from, relay, "data must come from the relay address");

    // Peer -> client as a Data indication.
    peer.send_to(b"and back", relay).unwrap();
    let mut inb = [0u8; 512];
    let (len, _) = c.sock.recv_from(&mut inb).expect("client got nothing");
    let m = Message::parse(&inb[..len]).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Indication, Method::DATA));
    assert_eq!(m.xor_peer_address().unwrap(), Some(peer_addr));
    assert_eq!(m.data().unwrap(), Some(&b"and back"[..]));
}
