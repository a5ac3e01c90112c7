//! TURN load shedding across two real nodes on loopback: node A runs with `--total-quota 1
//! --alternate-server <B>`. Once A is full, an authenticated Allocate gets 300 Try Alternate
//! with ALTERNATE-SERVER = B, signed with the client's key, and the allocation ends up on B
//! (B's `/metrics`). Shown twice: with a raw STUN client built on crates/stun, which checks every
//! attribute, and with coturn's turnutils_uclient, which follows the redirect on its own.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::{http_get, metric, run, text, uclient_cmd, Server, TestServer, TurnPeer};
use switchboard_stun::{long_term_key_md5, Class, Message, MessageBuilder, Method, TransactionId};

const REALM: &str = "switchboard.test";
const USER: &str = "alice";
const PASSWORD: &str = "wonderland";

/// A TURN node on loopback (UDP and plain HTTP for /metrics) with one user; `extra` flags.
fn node(extra: &[&str]) -> Server {
    TestServer::new()
        .stun_udp()
        .http()
        .turn_user(REALM, "alice:wonderland")
        .flag("--allow-peer", "127.0.0.0/8")
        .args(extra)
        .start()
}

/// Node B, then node A that sheds load to B once it holds one allocation.
fn pool() -> (Server, Server) {
    let b = node(&[]);
    let b_udp = b.addr("stun", "udp").to_string();
    let a = node(&["--total-quota", "1", "--alternate-server", &b_udp]);
    (a, b)
}

/// Waits until `series` on the node's /metrics reads `want` (counters are exported once a
/// second); returns the page.
fn wait_metric(server: &Server, series: &str, want: f64) -> String {
    let http = server.addr("http", "tcp");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(http, "/metrics");
        if status == 200 && metric(&body, series) == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {want} on {http}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A minimal long-term-credential TURN client over UDP: just enough to allocate and to inspect
/// the answers byte by byte.
struct Client {
    sock: UdpSocket,
    key: [u8; 16],
    serial: u32,
}

/// One response, owned.
struct Reply(Vec<u8>);

impl Reply {
    fn msg(&self) -> Message<'_> {
        Message::parse(&self.0).expect("a STUN response")
    }

    fn code(&self) -> Option<u16> {
        self.msg().error_code().expect("ERROR-CODE").map(|(c, _)| c)
    }
}

impl Client {
    fn new() -> Client {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind client");
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        Client {
            sock,
            key: long_term_key_md5(USER, REALM, PASSWORD),
            serial: 0,
        }
    }

    /// An Allocate for a UDP relay; with `nonce`, signed (USERNAME, REALM, NONCE,
    /// MESSAGE-INTEGRITY), then FINGERPRINT.
    fn allocate_request(&mut self, nonce: Option<&str>) -> (TransactionId, Vec<u8>) {
        self.serial += 1;
        let mut tid = [0x5Au8; 12];
        tid[..4].copy_from_slice(&self.serial.to_be_bytes());
        tid[4..8].copy_from_slice(&std::process::id().to_be_bytes());
        let tid = TransactionId(tid);
        let mut buf = vec![0u8; 512];
        let n = {
            let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::ALLOCATE, tid)
                .expect("header");
            b.requested_transport(17).expect("REQUESTED-TRANSPORT");
            if let Some(nonce) = nonce {
                b.username(USER).expect("USERNAME");
                b.realm(REALM).expect("REALM");
                b.nonce(nonce).expect("NONCE");
                b.message_integrity(&self.key).expect("MESSAGE-INTEGRITY");
            }
            b.fingerprint().expect("FINGERPRINT");
            b.finish()
        };
        buf.truncate(n);
        (tid, buf)
    }

    /// Sends a request to `to` (retransmitting, as UDP clients do) and returns its response.
    fn transact(&self, to: SocketAddr, tid: TransactionId, req: &[u8]) -> Reply {
        let mut buf = vec![0u8; 2048];
        for _ in 0..6 {
            self.sock.send_to(req, to).expect("send");
            let deadline = Instant::now() + Duration::from_millis(500);
            while Instant::now() < deadline {
                let Ok((n, from)) = self.sock.recv_from(&mut buf) else {
                    break;
                };
                let same = Message::parse(&buf[..n]).is_ok_and(|m| m.transaction_id() == tid);
                if from == to && same {
                    return Reply(buf[..n].to_vec());
                }
            }
        }
        panic!("no answer from {to}");
    }

    /// The unauthenticated Allocate: must be a 401 challenge (never a redirect); its NONCE.
    fn challenge(&mut self, to: SocketAddr) -> String {
        let (tid, req) = self.allocate_request(None);
        let reply = self.transact(to, tid, &req);
        let m = reply.msg();
        assert_eq!(reply.code(), Some(401), "{:?}", m.error_code());
        assert_eq!(m.realm().expect("REALM"), Some(REALM));
        assert_eq!(m.alternate_server().expect("ALTERNATE-SERVER"), None);
        assert!(!m.has_integrity(), "a challenge cannot be signed");
        m.nonce().expect("NONCE").expect("a nonce").to_string()
    }

    /// Challenge, then the signed Allocate; its answer and the nonce used.
    fn allocate(&mut self, to: SocketAddr) -> (Reply, String) {
        let nonce = self.challenge(to);
        (self.signed_allocate(to, &nonce), nonce)
    }

    /// A signed Allocate with `nonce`; its answer.
    fn signed_allocate(&mut self, to: SocketAddr, nonce: &str) -> Reply {
        let (tid, req) = self.allocate_request(Some(nonce));
        self.transact(to, tid, &req)
    }

    /// Allocates on `to` and asserts success; the relayed address.
    fn allocate_ok(&mut self, to: SocketAddr) -> SocketAddr {
        let (reply, _) = self.allocate(to);
        assert_success(&reply, &self.key)
    }
}

/// Asserts a signed Allocate success; the relayed address.
fn assert_success(reply: &Reply, key: &[u8]) -> SocketAddr {
    let m = reply.msg();
    assert_eq!(m.class(), Class::Success, "{:?}", m.error_code());
    assert_eq!(m.verify_integrity(key), Ok(()));
    m.xor_relayed_address()
        .expect("XOR-RELAYED-ADDRESS")
        .expect("a relay")
}

#[test]
fn raw_client_is_redirected_to_b_and_allocates_there() {
    let (a, b) = pool();
    let (a_udp, b_udp) = (a.addr("stun", "udp"), b.addr("stun", "udp"));

    // Fill A: one allocation is its limit.
    let mut filler = Client::new();
    filler.allocate_ok(a_udp);

    // A full A answers the authenticated Allocate with 300 and B's address, signed with the
    // client's key (an off-path attacker cannot forge that) and fingerprinted.
    let mut client = Client::new();
    let (reply, a_nonce) = client.allocate(a_udp);
    let m = reply.msg();
    assert_eq!(m.class(), Class::Error);
    assert_eq!(
        m.error_code().expect("ERROR-CODE"),
        Some((300, "Try Alternate"))
    );
    assert_eq!(m.alternate_server().expect("ALTERNATE-SERVER"), Some(b_udp));
    assert_eq!(m.alternate_domain().expect("ALTERNATE-DOMAIN"), None);
    assert!(m.has_integrity());
    assert_eq!(m.verify_integrity(&client.key), Ok(()));
    assert_eq!(m.check_fingerprint(), Some(true));

    // The client follows the redirect with the same credentials (RFC 8489 §10). A's nonce
    // means nothing to B (nonces are keyed per node): 438 with B's own nonce, then success. The
    // allocation is on B.
    let stale = client.signed_allocate(b_udp, &a_nonce);
    assert_eq!(stale.code(), Some(438));
    let b_nonce = stale.msg().nonce().expect("NONCE").expect("a fresh nonce");
    assert_ne!(b_nonce, a_nonce);
    let b_nonce = b_nonce.to_string();
    let reply = client.signed_allocate(b_udp, &b_nonce);
    let relay = assert_success(&reply, &client.key);
    assert_eq!(relay.ip(), b_udp.ip());

    wait_metric(&b, "switchboard_turn_allocations_created_total", 1.0);
    let page = wait_metric(&a, "switchboard_turn_redirects_total", 1.0);
    assert_eq!(
        metric(&page, "switchboard_turn_allocations_created_total"),
        1.0
    );
    assert_eq!(metric(&page, "switchboard_turn_allocations "), 1.0);
    assert_eq!(
        metric(&page, "switchboard_turn_refusals_total{code=\"508\"}"),
        0.0
    );
}

#[test]
fn uclient_follows_the_redirect_to_b() {
    let peer = TurnPeer::start();
    let (a, b) = pool();
    let a_udp = a.addr("stun", "udp");

    // turnutils_uclient follows a 300 only on its first ("probe") Allocate of each client; a
    // probe that succeeds on A would take A's one slot and the client's real allocation there
    // would then get the 300 and end the run. So A is full before uclient starts.
    let mut filler = Client::new();
    filler.allocate_ok(a_udp);

    let mut cmd = uclient_cmd(
        &peer,
        a_udp.port(),
        2,
        50,
        5,
        &["-c", "-u", USER, "-w", PASSWORD],
    );
    let out = text(&run(&mut cmd, Duration::from_secs(60)));
    assert!(
        out.contains("error 300"),
        "uclient did not see the redirect:\n{out}"
    );
    assert!(
        out.contains("Total lost packets 0 (0.000000%)")
            && out.contains("tot_send_msgs=100, tot_recv_msgs=100"),
        "not a complete, loss-free run through B:\n{out}"
    );

    // Both clients were redirected (uclient checks the 300's MESSAGE-INTEGRITY before it
    // follows it) and both allocations are on B; A still holds only the filler's.
    wait_metric(&b, "switchboard_turn_allocations_created_total", 2.0);
    let page = wait_metric(&a, "switchboard_turn_redirects_total", 2.0);
    assert_eq!(
        metric(&page, "switchboard_turn_allocations_created_total"),
        1.0
    );
}
