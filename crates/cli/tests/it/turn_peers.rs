//! TURN against clients nobody here wrote: coturn's turnutils_uclient (with turnutils_peer as
//! the echo peer) over UDP, TCP and TLS, with channels and with Send indications, with static and
//! REST credentials; aioice gathering a relay candidate; the loopback-peer refusal; hot reload.
//! And with a raw client built on crates/stun, what only the real sockets show: relay ports
//! drawn at random, EVEN-PORT reservations counted as relay sockets, and a wildcard listener
//! refusing the host's own interface addresses as peers.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    peer_script, run, text, uclient_cmd, venv_python, Server, TestServer, TurnPeer,
};
use switchboard_stun::{long_term_key_md5, Class, Message, MessageBuilder, Method, TransactionId};

fn turn_server(extra: &[&str]) -> Server {
    TestServer::new()
        .stun_all()
        .http()
        .turn_user("switchboard.test", "alice:wonderland")
        .flag("--turn-secret", "rest-secret-1")
        .args(extra)
        .start()
}

/// Runs turnutils_uclient and returns its output; `flags` select transport and mode.
fn uclient(server: &Server, peer: &TurnPeer, flags: &[&str], transport: &str) -> String {
    let addr = server.addr("stun", transport);
    let mut cmd = uclient_cmd(peer, addr.port(), 4, 100, 5, flags);
    text(&run(&mut cmd, Duration::from_secs(60)))
}

/// The final (sent, received) message totals a uclient run reports.
fn totals(out: &str) -> Option<(u64, u64)> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.contains("start_mclient: tot_send_msgs="))?;
    let num = |key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((num("tot_send_msgs=")?, num("tot_recv_msgs=")?))
}

/// Asserts a complete, loss-free uclient run.
fn assert_zero_loss(out: &str) {
    assert!(
        out.contains("Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)"),
        "not a loss-free run:\n{out}"
    );
    assert!(
        out.contains("tot_send_msgs=400, tot_recv_msgs=400"),
        "not every message came back:\n{out}"
    );
}

#[test]
fn uclient_udp_channels_and_send_indications() {
    let peer = TurnPeer::start();
    let server = turn_server(&["--allow-peer", "127.0.0.0/8"]);
    assert!(
        server
            .lines
            .iter()
            .any(|l| l.starts_with("turn  relay 127.0.0.1")),
        "{:?}",
        server.lines
    );
    assert_zero_loss(&uclient(
        &server,
        &peer,
        &["-c", "-u", "alice", "-w", "wonderland"],
        "udp",
    ));
    assert_zero_loss(&uclient(
        &server,
        &peer,
        &["-s", "-u", "alice", "-w", "wonderland"],
        "udp",
    ));
    // Counters are exported once a second.
    std::thread::sleep(Duration::from_millis(1200));
    let (_, body) = crate::common::http_get(server.addr("http", "tcp"), "/metrics");
    let m = |series: &str| crate::common::metric(&body, series);
    assert!(
        m("switchboard_turn_relayed_packets_total{direction=\"to_peer\"}") >= 800.0,
        "{body}"
    );
    assert!(
        m("switchboard_turn_relayed_packets_total{direction=\"to_client\"}") >= 800.0,
        "{body}"
    );
    assert!(
        m("switchboard_turn_allocations_created_total") >= 8.0,
        "{body}"
    );
}

#[test]
fn uclient_tcp_channels_and_send_indications() {
    let peer = TurnPeer::start();
    let server = turn_server(&["--allow-peer", "127.0.0.0/8"]);
    assert_zero_loss(&uclient(
        &server,
        &peer,
        &["-t", "-c", "-u", "alice", "-w", "wonderland"],
        "tcp",
    ));
    assert_zero_loss(&uclient(
        &server,
        &peer,
        &["-t", "-s", "-u", "alice", "-w", "wonderland"],
        "tcp",
    ));
}

#[test]
fn uclient_tls_channels_and_send_indications() {
    let peer = TurnPeer::start();
    let server = turn_server(&["--allow-peer", "127.0.0.0/8"]);
    let port = server.addr("stun", "tls").port();
    for mode in ["-c", "-s"] {
        assert_uclient_tls_zero_loss(&peer, port, mode);
    }
}

/// Clients and messages of [`assert_uclient_tls_zero_loss`]: 4 × 250 echoes sent 1 ms apart
/// (4,000 a second each way), a few seconds.
const TLS_CLIENTS: u32 = 4;
const TLS_MESSAGES: u32 = 250;

/// Runs turnutils_uclient over TLS (`-t -S`, `mode` `-c` for channels or `-s` for Send
/// indications) against `port` and asserts that every echo came back.
///
/// uclient reads one TLS record per `SSL_read` and counts it as one message, so this holds only
/// when the server sends each frame in a record of its own; paced 1 ms apart, uclient's timer
/// sends in bursts and the echoes come back close together (a server that coalesced them lost
/// 40 % here, coturn 4.6 12–35 %).
///
/// uclient picks a random OpenSSL method per TLS handshake, TLS 1.0 and 1.1 included, which
/// switchboard refuses by design (TLS 1.2+ only); it retries a refused handshake itself, but a
/// run in which a client never got through ends early. Such runs are retried (a bounded number
/// of times); a run in which every message was sent must be loss-free at once.
pub(crate) fn assert_uclient_tls_zero_loss(peer: &TurnPeer, port: u16, mode: &str) {
    let flags = ["-t", "-S", mode, "-u", "alice", "-w", "wonderland"];
    let total = u64::from(TLS_CLIENTS * TLS_MESSAGES);
    let mut outputs = Vec::new();
    for _ in 0..5 {
        let mut cmd = uclient_cmd(peer, port, TLS_CLIENTS, TLS_MESSAGES, 1, &flags);
        let out = text(&run(&mut cmd, Duration::from_secs(60)));
        if matches!(totals(&out), Some((sent, _)) if sent == total) {
            assert!(
                out.contains("Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)")
                    && totals(&out) == Some((total, total)),
                "TURN over TLS ({mode}) lost messages:\n{out}"
            );
            return;
        }
        assert!(
            out.contains("handshake failure") || out.contains("alert"),
            "a TLS run ({mode}) failed for another reason than an old TLS version:\n{out}"
        );
        outputs.push(out);
    }
    panic!(
        "no complete TLS run in 5 tries ({mode}):\n{}",
        outputs.join("\n----\n")
    );
}

#[test]
fn uclient_rest_credentials_udp_and_tcp() {
    let peer = TurnPeer::start();
    let server = turn_server(&[
        "--allow-peer",
        "127.0.0.0/8",
        "--turn-secret",
        "rest-secret-2",
    ]);
    // -W: TURN REST (coturn use-auth-secret); uclient makes the time-limited username itself.
    assert_zero_loss(&uclient(
        &server,
        &peer,
        &["-c", "-u", "bob", "-W", "rest-secret-1"],
        "udp",
    ));
    // The second secret (rotation) works too.
    assert_zero_loss(&uclient(
        &server,
        &peer,
        &["-t", "-c", "-u", "bob", "-W", "rest-secret-2"],
        "tcp",
    ));
    // A wrong secret does not.
    let out = uclient(
        &server,
        &peer,
        &["-c", "-u", "bob", "-W", "not-the-secret"],
        "udp",
    );
    assert!(
        !out.contains("Total lost packets 0"),
        "wrong REST secret relayed data:\n{out}"
    );
    assert!(out.contains("Cannot complete Allocation"), "{out}");
}

#[test]
fn loopback_peer_refused_without_allow_peer() {
    let peer = TurnPeer::start();
    let server = turn_server(&[]);
    let out = uclient(
        &server,
        &peer,
        &["-c", "-u", "alice", "-w", "wonderland"],
        "udp",
    );
    assert!(
        out.contains("403"),
        "a loopback peer was not refused with 403:\n{out}"
    );
    assert!(!out.contains("Total lost packets 0 (0.000000%)"), "{out}");
    std::thread::sleep(Duration::from_millis(1200));
    let (_, body) = crate::common::http_get(server.addr("http", "tcp"), "/metrics");
    assert!(
        crate::common::metric(&body, "switchboard_turn_refusals_total{code=\"403\"}") >= 1.0,
        "{body}"
    );
}

#[test]
fn aioice_gathers_a_relay_candidate() {
    let server = turn_server(&[]);
    let script = peer_script("aioice_relay.py");
    for (transport, listener) in [("udp", "udp"), ("tcp", "tcp")] {
        let addr = server.addr("stun", listener);
        let out = run(
            Command::new(venv_python()).arg(&script).args([
                "127.0.0.1",
                &addr.port().to_string(),
                "alice",
                "wonderland",
                transport,
            ]),
            Duration::from_secs(60),
        );
        let t = text(&out);
        assert!(
            out.status.success() && t.contains("candidate relay 127.0.0.1:"),
            "{transport}: {t}"
        );
    }
}

#[test]
fn sighup_reloads_users_without_dropping_allocations() {
    let peer = TurnPeer::start();
    let dir = std::env::temp_dir().join(format!("sb-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("sb.toml");
    let write = |users: &str| {
        std::fs::write(
            &cfg,
            format!("[turn]\nrealm = \"switchboard.test\"\nusers = [{users}]\nallow_peers = [\"127.0.0.0/8\"]\n"),
        )
        .unwrap()
    };
    write("\"alice:one\"");
    let mut server = TestServer::new()
        .flag("--config", cfg.to_str().unwrap())
        .stun_udp()
        .start();
    let port = server.addr("stun", "udp").port();
    // A long-running session for alice: 1 client, 600 messages 10 ms apart (about 6 s).
    let long = uclient_cmd(&peer, port, 1, 600, 10, &["-c", "-u", "alice", "-w", "one"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // Replace alice by bob and reload.
    write("\"bob:two\"");
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(500));

    let short = |user: &str, pass: &str| {
        let mut cmd = uclient_cmd(&peer, port, 1, 20, 5, &["-c", "-u", user, "-w", pass]);
        text(&run(&mut cmd, Duration::from_secs(60)))
    };
    let bob = short("bob", "two");
    assert!(
        bob.contains("Total lost packets 0 (0.000000%)"),
        "new user after reload:\n{bob}"
    );
    let alice_new = short("alice", "one");
    assert!(
        alice_new.contains("Cannot complete Allocation")
            && !alice_new.contains("Total lost packets 0"),
        "removed user still accepted after reload:\n{alice_new}"
    );

    let out = long.wait_with_output().unwrap();
    let t = text(&out);
    assert!(
        t.contains("Total lost packets 0 (0.000000%)")
            && t.contains("tot_send_msgs=600, tot_recv_msgs=600"),
        "the allocation made before the reload lost data:\n{t}"
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "server exited on SIGHUP"
    );
    std::fs::remove_dir_all(&dir).ok();
}

// ----- a raw long-term-credential client (alice on realm switchboard.test) over UDP -----

struct Raw {
    sock: UdpSocket,
    to: SocketAddr,
    key: [u8; 16],
    nonce: Option<String>,
    serial: u32,
}

impl Raw {
    fn new(to: SocketAddr) -> Raw {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind client");
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        Raw {
            sock,
            to,
            key: long_term_key_md5("alice", "switchboard.test", "wonderland"),
            nonce: None,
            serial: 0,
        }
    }

    /// Sends a request (retransmitting) and returns the response bytes.
    fn transact(&mut self, method: Method, f: &dyn Fn(&mut MessageBuilder<'_>)) -> Vec<u8> {
        self.serial += 1;
        let mut tid = [0x6Bu8; 12];
        tid[..4].copy_from_slice(&self.serial.to_be_bytes());
        tid[4..8].copy_from_slice(&std::process::id().to_be_bytes());
        let tid = TransactionId(tid);
        let mut buf = vec![0u8; 1024];
        let n = {
            let mut b = MessageBuilder::new(&mut buf, Class::Request, method, tid).expect("header");
            f(&mut b);
            if let Some(nonce) = &self.nonce {
                b.username("alice").expect("USERNAME");
                b.realm("switchboard.test").expect("REALM");
                b.nonce(nonce).expect("NONCE");
                b.message_integrity(&self.key).expect("MESSAGE-INTEGRITY");
            }
            b.fingerprint().expect("FINGERPRINT");
            b.finish()
        };
        let mut rx = vec![0u8; 2048];
        for _ in 0..6 {
            self.sock.send_to(&buf[..n], self.to).expect("send");
            let deadline = Instant::now() + Duration::from_millis(500);
            while Instant::now() < deadline {
                let Ok((len, from)) = self.sock.recv_from(&mut rx) else {
                    break;
                };
                let same = Message::parse(&rx[..len]).is_ok_and(|m| m.transaction_id() == tid);
                if from == self.to && same {
                    return rx[..len].to_vec();
                }
            }
        }
        panic!("no answer from {}", self.to);
    }

    /// A signed request (after the 401 challenge the first time); the response, which is
    /// checked to be signed with alice's key.
    fn request(&mut self, method: Method, f: &dyn Fn(&mut MessageBuilder<'_>)) -> Vec<u8> {
        if self.nonce.is_none() {
            let reply = self.transact(method, f);
            let m = Message::parse(&reply).expect("STUN");
            assert_eq!(m.error_code().expect("ERROR-CODE").map(|e| e.0), Some(401));
            self.nonce = Some(m.nonce().expect("NONCE").expect("a nonce").to_string());
        }
        let reply = self.transact(method, f);
        let m = Message::parse(&reply).expect("STUN");
        assert_eq!(
            m.verify_integrity(&self.key),
            Ok(()),
            "{:?}",
            m.error_code()
        );
        reply
    }

    /// Allocates a UDP relay (with `even`: EVEN-PORT and its R bit); the relay address and
    /// RESERVATION-TOKEN.
    fn allocate(&mut self, even: Option<bool>) -> (SocketAddr, Option<[u8; 8]>) {
        let reply = self.request(Method::ALLOCATE, &|b| {
            b.requested_transport(17).expect("REQUESTED-TRANSPORT");
            if let Some(r) = even {
                b.even_port(r).expect("EVEN-PORT");
            }
        });
        let m = Message::parse(&reply).expect("STUN");
        assert_eq!(m.class(), Class::Success, "{:?}", m.error_code());
        (
            m.xor_relayed_address()
                .expect("XOR-RELAYED-ADDRESS")
                .expect("a relay"),
            m.reservation_token().expect("RESERVATION-TOKEN"),
        )
    }
}

/// Waits until `series` reads `want` on the server's /metrics (exported once a second).
fn wait_metric(server: &Server, series: &str, want: f64) {
    let http = server.addr("http", "tcp");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = crate::common::http_get(http, "/metrics");
        if crate::common::metric(&body, series) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {want}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn relay_ports_are_random_and_reservations_are_relay_sockets() {
    let server = turn_server(&["--relay-ports", "40000-59999"]);
    let udp = server.addr("stun", "udp");
    // EVEN-PORT with R: an even port, and the next one held for 30 s.
    let mut first = Raw::new(udp);
    let (relay, token) = first.allocate(Some(true));
    assert_eq!(relay.port() % 2, 0, "{relay}");
    assert!(token.is_some());
    // Two sockets: the relay and the reserved port (the gauge used to say 1).
    wait_metric(&server, "switchboard_turn_relay_sockets", 2.0);
    wait_metric(&server, "switchboard_turn_allocations", 1.0);
    // Plain allocations: ports drawn at random from the range, not one after the other.
    let mut ports = vec![relay.port()];
    for _ in 0..6 {
        ports.push(Raw::new(udp).allocate(None).0.port());
    }
    assert!(
        ports.iter().all(|p| (40000..=59999).contains(p)),
        "{ports:?}"
    );
    let neighbours = ports
        .windows(2)
        .filter(|w| w[1].abs_diff(w[0]) <= 2)
        .count();
    assert!(neighbours <= 1, "sequential relay ports: {ports:?}");
    wait_metric(&server, "switchboard_turn_relay_sockets", 8.0);
    // Deleting the first allocation closes its relay; the reservation stays until it expires.
    first.request(Method::REFRESH, &|b| {
        b.lifetime(0).expect("LIFETIME");
    });
    wait_metric(&server, "switchboard_turn_relay_sockets", 7.0);
}

/// The address this host would send from to reach the outside (no packet is sent): an interface
/// address other than loopback, when the host has one.
fn outbound_address() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

#[test]
fn wildcard_listener_refuses_the_hosts_own_addresses_as_peers() {
    let server = TestServer::new()
        .listen("--stun-udp", "0.0.0.0:0")
        .http()
        .flag("--relay-ip", "127.0.0.1")
        .flag("--turn-realm", "switchboard.test")
        .flag("--turn-user", "alice:wonderland")
        .start();
    let port = server.addr("stun", "udp").port();
    let mut c = Raw::new(SocketAddr::from(([127, 0, 0, 1], port)));
    c.allocate(None);
    let mut own: Vec<IpAddr> = vec![[127, 0, 0, 1].into()];
    own.extend(outbound_address());
    for ip in own {
        // The server's own STUN listener is one of the places such a relay would reach.
        let peer = SocketAddr::new(ip, port);
        let reply = c.request(Method::CREATE_PERMISSION, &|b| {
            b.xor_peer_address(peer).expect("XOR-PEER-ADDRESS");
        });
        let m = Message::parse(&reply).expect("STUN");
        let (code, reason) = m.error_code().expect("ERROR-CODE").expect("an error");
        // Refused as the server itself, not merely as a non-public address.
        assert_eq!(
            (code, reason),
            (403, "Forbidden: peer is this server"),
            "{ip}"
        );
    }
}
