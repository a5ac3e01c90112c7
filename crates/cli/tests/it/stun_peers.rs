//! Third-party STUN clients against switchboard: coturn's turnutils_stunclient and
//! turnutils_natdiscovery (RFC 5780), Debian's classic `stun` (RFC 3489), and Python's standard
//! library over TCP and TLS (tests/peers/stun_stream.py).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{free_port_pair, need, run, text, Server, TestServer};
use switchboard_stun::{attr, Class, Message, MessageBuilder, Method, TransactionId};

/// A server on 127.0.0.1:P with the RFC 5780 alternate 127.0.0.2:P+1, UDP, TCP and TLS.
fn rfc5780_server() -> (Server, u16) {
    let p = free_port_pair();
    let tls = free_port_pair();
    let server = TestServer::new()
        .listen("--stun-udp", &format!("127.0.0.1:{p}"))
        .listen("--stun-tcp", &format!("127.0.0.1:{p}"))
        .listen("--stun-tls", &format!("127.0.0.1:{tls}"))
        .flag("--alt-address", "127.0.0.2")
        .start();
    (server, p)
}

#[test]
fn turnutils_stunclient_gets_all_three_rfc5780_answers() {
    need("turnutils_stunclient");
    let (_server, p) = rfc5780_server();
    let out = run(
        Command::new("turnutils_stunclient").args(["-p", &p.to_string(), "127.0.0.1"]),
        Duration::from_secs(30),
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for want in [
        "RFC 5780 response 1",
        "RFC 5780 response 2",
        "RFC 5780 response 3",
        &format!("Response origin: : 127.0.0.1:{p}"),
        &format!("Response origin: : 127.0.0.2:{}", p + 1),
        &format!("Other addr: : 127.0.0.2:{}", p + 1),
        "UDP reflexive addr: 127.0.0.1:",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    assert!(!t.contains("error"), "{t}");
}

#[test]
fn turnutils_stunclient_without_alternate_sees_plain_binding() {
    need("turnutils_stunclient");
    let p = free_port_pair();
    let _server = TestServer::new()
        .listen("--stun-udp", &format!("127.0.0.1:{p}"))
        .start();
    let out = run(
        Command::new("turnutils_stunclient").args(["-p", &p.to_string(), "127.0.0.1"]),
        Duration::from_secs(30),
    );
    let t = text(&out);
    assert!(t.contains("UDP reflexive addr: 127.0.0.1:"), "{t}");
    // Without an alternate address a CHANGE-REQUEST is refused with 420 (RFC 5780 §6.1), which
    // turnutils_stunclient -f does not report (it waits forever, against coturn too), so check it
    // on the wire.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut req = [0u8; 64];
    let n = {
        let mut b = MessageBuilder::new(
            &mut req,
            Class::Request,
            Method::BINDING,
            TransactionId([1; 12]),
        )
        .unwrap();
        b.change_request(true, true).unwrap();
        b.fingerprint().unwrap();
        b.finish()
    };
    sock.send_to(&req[..n], ("127.0.0.1", p)).unwrap();
    let mut buf = [0u8; 512];
    let (len, _) = sock
        .recv_from(&mut buf)
        .expect("no answer to CHANGE-REQUEST");
    let m = Message::parse(&buf[..len]).unwrap();
    assert_eq!(m.error_code().unwrap().map(|e| e.0), Some(420));
    assert_eq!(
        m.unknown_attributes().unwrap().unwrap().collect::<Vec<_>>(),
        vec![attr::CHANGE_REQUEST]
    );
}

#[test]
fn natdiscovery_reports_endpoint_independent_mapping_and_filtering() {
    need("turnutils_natdiscovery");
    let (_server, p) = rfc5780_server();
    let port = p.to_string();
    let mapping = run(
        Command::new("turnutils_natdiscovery").args(["-m", "-p", &port, "127.0.0.1"]),
        Duration::from_secs(60),
    );
    let t = text(&mapping);
    assert!(t.contains("Endpoint Independent Mapping"), "{t}");
    let filtering = run(
        Command::new("turnutils_natdiscovery").args(["-f", "-p", &port, "127.0.0.1"]),
        Duration::from_secs(60),
    );
    let t = text(&filtering);
    assert!(t.contains("Endpoint Independent Filtering"), "{t}");
    // With 1500 bytes of PADDING (RFC 5780 §7.6) the answers are the same.
    let padded = run(
        Command::new("turnutils_natdiscovery").args(["-m", "-P", "-p", &port, "127.0.0.1"]),
        Duration::from_secs(60),
    );
    let t = text(&padded);
    assert!(t.contains("Endpoint Independent Mapping"), "{t}");
}

#[test]
fn classic_stun_client_reports_open_internet() {
    need("stun");
    let (_server, p) = rfc5780_server();
    let out = run(
        Command::new("stun").args([&format!("127.0.0.1:{p}"), "-v"]),
        Duration::from_secs(60),
    );
    let t = text(&out);
    assert!(t.contains("Primary: Open"), "{t}");
    assert!(
        !t.contains("Bad length") && !t.contains("problem parsing"),
        "classic client failed to parse a reply:\n{t}"
    );
}

#[test]
fn python_binding_over_tcp_and_tls() {
    need("python3");
    let (server, _) = rfc5780_server();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/stun_stream.py");
    for transport in ["tcp", "tls"] {
        let addr = server.addr("stun", transport);
        let out = run(
            Command::new("python3").arg(&script).args([
                transport,
                &addr.ip().to_string(),
                &addr.port().to_string(),
            ]),
            Duration::from_secs(30),
        );
        let t = text(&out);
        assert!(out.status.success(), "{transport}: {t}");
        assert!(t.contains("ok"), "{transport}: {t}");
    }
}
