//! Bad input never gets an answer, never stops the server, and is counted on /metrics:
//! malformed and bad-FINGERPRINT datagrams are dropped; a TCP or TLS peer that sends garbage is
//! disconnected; the connection limit holds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use crate::common::{http_get, metric, Server, TestServer};
use switchboard_stun::{Class, Message, MessageBuilder, Method, TransactionId};

fn binding(tid: u8) -> Vec<u8> {
    let mut buf = vec![0u8; 64];
    let n = {
        let mut b = MessageBuilder::new(
            &mut buf,
            Class::Request,
            Method::BINDING,
            TransactionId([tid; 12]),
        )
        .unwrap();
        b.fingerprint().unwrap();
        b.finish()
    };
    buf.truncate(n);
    buf
}

fn server() -> Server {
    TestServer::new()
        .stun_all()
        .http()
        .flag("--stun-max-connections", "4")
        .start()
}

fn udp_exchange(sock: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
    sock.send_to(msg, to).unwrap();
    let mut buf = [0u8; 2048];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

#[test]
fn malformed_datagrams_are_dropped_and_counted() {
    let server = server();
    let to = server.addr("stun", "udp");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();

    let good = binding(1);
    let mut bad_fp = good.clone();
    let last = bad_fp.len() - 1;
    bad_fp[last] ^= 0x55;
    let mut bad_len = good.clone();
    bad_len[3] = 0xFF; // header length beyond the datagram
    let garbage: Vec<Vec<u8>> = vec![
        bad_fp,
        bad_len,
        vec![0x00; 7],
        vec![0x16, 0x03, 0x01, 0x00, 0x10],
        vec![0xFF; 100],
        vec![],
    ];
    for g in &garbage {
        assert_eq!(
            udp_exchange(&sock, to, g),
            None,
            "answered garbage {g:02x?}"
        );
    }
    // Still serving.
    let reply = udp_exchange(&sock, to, &good).expect("no answer to a good request after garbage");
    let m = Message::parse(&reply).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(
        m.xor_mapped_address().unwrap(),
        Some(sock.local_addr().unwrap())
    );

    let (_, body) = http_get(server.addr("http", "tcp"), "/metrics");
    let dropped = |reason: &str| {
        metric(
            &body,
            &format!("switchboard_stun_dropped_total{{transport=\"udp\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(dropped("bad_fingerprint"), 1.0, "{body}");
    assert!(dropped("malformed") >= 2.0, "{body}");
    assert!(dropped("not_stun") >= 2.0, "{body}");
    assert_eq!(
        metric(
            &body,
            "switchboard_stun_responses_total{transport=\"udp\",class=\"success\"}"
        ),
        1.0,
        "{body}"
    );
}

#[test]
fn tcp_garbage_closes_the_connection() {
    let server = server();
    let addr = server.addr("stun", "tcp");
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x02, 0x00][..],
        &[0x00, 0x01, 0x00, 0x03, 0, 0, 0, 0][..],
    ] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(garbage).unwrap();
        // Pad to a whole (bogus) frame so a length-framed reader has something to judge.
        let _ = s.write_all(&[0u8; 32]);
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "expected the server to close after {garbage:02x?}");
    }
    // A good connection still works.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&binding(2)).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(Message::parse(&buf[..n]).unwrap().class(), Class::Success);

    let (_, body) = http_get(server.addr("http", "tcp"), "/metrics");
    assert!(
        metric(
            &body,
            "switchboard_stun_connections_closed_total{transport=\"tcp\",reason=\"fault\"}"
        ) >= 3.0,
        "{body}"
    );
}

#[test]
fn tls_garbage_is_a_failed_handshake() {
    let server = server();
    let addr = server.addr("stun", "tls");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&binding(3)).unwrap(); // STUN in the clear on the TLS port
    let mut buf = [0u8; 64];
    // rustls answers with an alert or just closes; either way no STUN reply and then EOF.
    let mut got = Vec::new();
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        Message::parse(&got).is_err(),
        "answered STUN in the clear on the TLS port"
    );
    let (_, body) = http_get(server.addr("http", "tcp"), "/metrics");
    assert!(
        metric(
            &body,
            "switchboard_tls_handshake_failures_total{listener=\"stun\"}"
        ) >= 1.0,
        "{body}"
    );
}

#[test]
fn connection_limit_is_enforced() {
    let server = server();
    let addr = server.addr("stun", "tcp");
    let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Let the server accept them.
    for s in &held {
        let mut s = s;
        s.write_all(&binding(4)).unwrap();
        let mut buf = [0u8; 512];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(s.read(&mut buf).unwrap() > 0);
    }
    let mut extra = TcpStream::connect(addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = extra.write_all(&binding(5));
    let mut buf = [0u8; 64];
    assert_eq!(
        extra.read(&mut buf).unwrap_or(0),
        0,
        "the fifth connection was served"
    );
    drop(held);
    // Capacity comes back once the held connections close.
    std::thread::sleep(Duration::from_millis(300));
    let mut again = TcpStream::connect(addr).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    again.write_all(&binding(6)).unwrap();
    assert!(again.read(&mut buf).unwrap() > 0);
}
