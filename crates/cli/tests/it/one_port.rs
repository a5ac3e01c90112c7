//! Everything on one port (`--listen`, docs/one-port.md), against one port number with clients
//! nobody here wrote: curl over HTTP/1.1 and h2 on TLS and over plain HTTP/1.1 and h2c,
//! Python's ssl module without ALPN (HTTP and STUN, as browsers' `turns:`), coturn's
//! turnutils_uclient over TCP, TLS and UDP with zero loss, turnutils_stunclient, aioquic over
//! HTTP/3 (tests/peers/http3_checks.py), Chromium calling through `turns:` on the port (relay
//! only, tests/browser/call_e2e.mjs); and raw sockets playing clients that send nothing,
//! garbage or half a ClientHello: closed after `--listen-timeout`, counted, and no obstacle to
//! the classified ones.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{
    assert_checks, http_get, metric, need, peer_script, run, text, uclient_cmd, venv_python,
    Server, TestServer, TurnPeer,
};

const API_KEY: &str = "one-port-key";

/// A server with only the one-port listener, on an ephemeral loopback port, TURN on.
fn server(extra: &[&str]) -> Server {
    TestServer::new()
        .flag("--listen", "127.0.0.1:0")
        .turn_user("switchboard.test", "alice:wonderland")
        .flag("--turn-secret", "rest-secret-1")
        .flag("--allow-peer", "127.0.0.0/8")
        .api_key(API_KEY)
        .args(extra)
        .start()
}

fn port(server: &Server) -> SocketAddr {
    let tcp = server.addr("listen", "tcp");
    assert_eq!(
        tcp,
        server.addr("listen", "udp"),
        "TCP and UDP share the port: {:?}",
        server.lines
    );
    tcp
}

/// `curl ARGS URL` printing `CODE VERSION`.
fn curl(args: &[&str], url: &str) -> String {
    need("curl");
    let out = run(
        Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
            ])
            .args(args)
            .arg(url),
        Duration::from_secs(30),
    );
    let t = text(&out);
    assert!(out.status.success(), "curl {args:?} {url}: {t}");
    t
}

fn metrics(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// Python's ssl module, no ALPN: `GET /healthz` over TLS; returns the response.
const TLS_NO_ALPN_GET: &str = r#"
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
raw = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s = ctx.wrap_socket(raw, server_hostname="localhost")
assert s.selected_alpn_protocol() is None, s.selected_alpn_protocol()
s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode(errors="replace"))
"#;

#[test]
fn http_h1_h2_h2c_and_stun_streams_share_the_port() {
    let server = server(&[]);
    let addr = port(&server);
    let https = format!("https://{addr}/healthz");
    let http = format!("http://{addr}/healthz");
    assert_eq!(curl(&["-k", "--http1.1"], &https), "200 1.1");
    assert_eq!(curl(&["-k", "--http2"], &https), "200 2");
    assert_eq!(curl(&[], &http), "200 1.1");
    assert_eq!(curl(&["--http2-prior-knowledge"], &http), "200 2");

    // TLS without ALPN: the first decrypted bytes decide (HTTP here, STUN below).
    let out = run(
        Command::new("python3").args([
            "-c",
            TLS_NO_ALPN_GET,
            &addr.ip().to_string(),
            &addr.port().to_string(),
        ]),
        Duration::from_secs(30),
    );
    let t = text(&out);
    assert!(out.status.success() && t.starts_with("HTTP/1.1 200"), "{t}");

    // STUN Binding over TCP and over TLS without ALPN (one byte at a time, pipelined).
    for transport in ["tcp", "tls"] {
        let out = run(
            Command::new("python3")
                .arg(peer_script("stun_stream.py"))
                .args([transport, &addr.ip().to_string(), &addr.port().to_string()]),
            Duration::from_secs(30),
        );
        let t = text(&out);
        assert!(out.status.success(), "{transport}: {t}");
    }

    let body = metrics(addr);
    let m = |s: &str| metric(&body, s);
    assert!(
        m(r#"switchboard_listen_connections_total{protocol="https"}"#) >= 3.0,
        "{body}"
    );
    assert!(
        m(r#"switchboard_listen_connections_total{protocol="http"}"#) >= 2.0,
        "{body}"
    );
    assert!(
        m(r#"switchboard_listen_connections_total{protocol="stun-tcp"}"#) >= 1.0,
        "{body}"
    );
    assert!(
        m(r#"switchboard_listen_connections_total{protocol="stun-tls"}"#) >= 1.0,
        "{body}"
    );
    assert!(
        m(r#"switchboard_stun_messages_received_total{transport="tls"}"#) >= 1.0,
        "{body}"
    );
    assert_eq!(
        m(r#"switchboard_listen_unclassified_total{reason="unknown"}"#),
        0.0,
        "{body}"
    );
    // SIGTERM with the one port open: a clean exit.
    assert!(server.stop().success());
}

#[test]
fn without_http3_the_udp_side_is_plain_stun_and_turn() {
    let peer = TurnPeer::start();
    let server = server(&["--http3", "off"]);
    let addr = port(&server);
    assert!(
        server
            .lines
            .iter()
            .any(|l| l.starts_with("listen udp") && l.ends_with("(one port: STUN/TURN)")),
        "{:?}",
        server.lines
    );
    let flags = ["-c", "-u", "alice", "-w", "wonderland"];
    let out = text(&run(
        &mut uclient_cmd(&peer, addr.port(), 4, 100, 5, &flags),
        Duration::from_secs(60),
    ));
    assert_zero_loss(&out, 400);
    assert_eq!(
        curl(&["-k", "--http2"], &format!("https://{addr}/healthz")),
        "200 2"
    );
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

fn assert_zero_loss(out: &str, messages: u64) {
    assert!(
        out.contains("Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)"),
        "not a loss-free run:\n{out}"
    );
    assert_eq!(
        totals(out),
        Some((messages, messages)),
        "not every message came back:\n{out}"
    );
}

#[test]
fn turn_over_udp_tcp_and_tls_and_stunclient_on_one_port() {
    let peer = TurnPeer::start();
    let server = server(&[]);
    let p = port(&server).port();
    let user = ["-u", "alice", "-w", "wonderland"];
    for mode in ["-c", "-s"] {
        // UDP: the datagrams share the port with QUIC.
        let flags = [&[mode][..], &user].concat();
        let out = text(&run(
            &mut uclient_cmd(&peer, p, 4, 100, 5, &flags),
            Duration::from_secs(60),
        ));
        assert_zero_loss(&out, 400);
        // TCP: classified by the STUN header.
        let flags = [&["-t", mode][..], &user].concat();
        let out = text(&run(
            &mut uclient_cmd(&peer, p, 4, 100, 5, &flags),
            Duration::from_secs(60),
        ));
        assert_zero_loss(&out, 400);
        // TLS: classified by the ClientHello and ALPN `stun.turn`; each echo in a TLS record of
        // its own (uclient counts records), paced 1 ms apart.
        crate::turn_peers::assert_uclient_tls_zero_loss(&peer, p, mode);
    }

    need("turnutils_stunclient");
    let out = run(
        Command::new("turnutils_stunclient").args(["-p", &p.to_string(), "127.0.0.1"]),
        Duration::from_secs(30),
    );
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("UDP reflexive addr: 127.0.0.1:"),
        "{t}"
    );

    std::thread::sleep(Duration::from_millis(1200));
    let body = metrics(port(&server));
    let m = |s: &str| metric(&body, s);
    assert!(
        m(r#"switchboard_turn_relayed_packets_total{direction="to_client"}"#) >= 1600.0,
        "{body}"
    );
    assert!(
        m(r#"switchboard_listen_connections_total{protocol="stun-tls"}"#) >= 2.0,
        "{body}"
    );
    assert!(
        m(r#"switchboard_listen_connections_total{protocol="stun-tcp"}"#) >= 8.0,
        "{body}"
    );
}

/// Whether the server closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn silent_garbage_and_half_hello_clients_are_closed_counted_and_harmless() {
    let server = server(&["--listen-timeout", "2"]);
    let addr = port(&server);
    let connect = || TcpStream::connect(addr).expect("connect");
    let started = Instant::now();
    let mut silent: Vec<TcpStream> = (0..100).map(|_| connect()).collect();
    // Half a ClientHello: a record header announcing 512 bytes and a few of them.
    let mut half: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut s = connect();
            s.write_all(&[
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ])
            .expect("write");
            s
        })
        .collect();
    // Two bytes of something that could still become an HTTP method.
    let mut undecided: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut s = connect();
            s.write_all(b"GE").expect("write");
            s
        })
        .collect();
    // Garbage is known for what it is at once.
    for _ in 0..5 {
        let mut s = connect();
        s.write_all(b"\xff\xfe\xfd\xfc garbage\r\n").expect("write");
        assert!(
            closed_within(&mut s, Duration::from_secs(1)),
            "garbage kept open"
        );
    }
    // Meanwhile classified clients are served at once: HTTPS, plain HTTP, STUN over TCP.
    let t = Instant::now();
    assert_eq!(
        curl(&["-k", "--http2"], &format!("https://{addr}/healthz")),
        "200 2"
    );
    assert_eq!(curl(&[], &format!("http://{addr}/healthz")), "200 1.1");
    let out = run(
        Command::new("python3")
            .arg(peer_script("stun_stream.py"))
            .args(["tcp", &addr.ip().to_string(), &addr.port().to_string()]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "classified clients waited {:?} behind the silent ones",
        t.elapsed()
    );
    // The silent, half-hello and undecided ones are closed once the timeout is over.
    for s in silent.iter_mut().chain(&mut half).chain(&mut undecided) {
        let left = (started + Duration::from_secs(6)).saturating_duration_since(Instant::now());
        assert!(
            closed_within(s, left.max(Duration::from_millis(100))),
            "a connection outlived the 2 s listen timeout"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    let body = metrics(addr);
    let m = |s: &str| metric(&body, s);
    assert!(
        m(r#"switchboard_listen_unclassified_total{reason="timeout"}"#) >= 120.0,
        "{body}"
    );
    assert!(
        m(r#"switchboard_listen_unclassified_total{reason="unknown"}"#) >= 5.0,
        "{body}"
    );
    assert!(
        m(r#"switchboard_tls_handshake_failures_total{listener="listen"}"#) >= 10.0,
        "{body}"
    );
}

#[test]
fn http3_over_aioquic_shares_the_udp_port_with_turn() {
    let server = server(&[]);
    let addr = port(&server).to_string();
    // The plain-HTTP address of the checks is the same port too (server API calls, and no
    // Alt-Svc on plain HTTP).
    let names = ["healthz", "publish", "sse", "poll", "big_body", "alt_svc"];
    let out = run(
        Command::new(venv_python())
            .arg(peer_script("http3_checks.py"))
            .args([&addr, &addr, API_KEY])
            .args(names),
        Duration::from_secs(120),
    );
    let t = text(&out);
    assert_checks(&t, &names);
    assert!(out.status.success(), "{t}");
    // STUN on the same UDP port right after.
    need("turnutils_stunclient");
    let p = port(&server).port().to_string();
    let out = run(
        Command::new("turnutils_stunclient").args(["-p", &p, "127.0.0.1"]),
        Duration::from_secs(30),
    );
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("UDP reflexive addr: 127.0.0.1:"),
        "{t}"
    );
}

#[test]
fn ice_servers_hand_out_the_one_port_urls_that_aioice_uses() {
    let server = server(&[]);
    let addr = port(&server);
    let p = addr.port();
    let (status, body) = http_get(addr, "/v1/ice-servers");
    assert_eq!(status, 200, "{body}");
    for url in [
        format!("stun:localhost:{p}"),
        format!("turn:localhost:{p}?transport=udp"),
        format!("turn:localhost:{p}?transport=tcp"),
        format!("turns:localhost:{p}?transport=tcp"),
    ] {
        assert!(
            body.contains(&format!("\"{url}\"")),
            "{url} missing: {body}"
        );
    }
    // aioice gathers a relay candidate through each, `turns:` without ALPN as browsers do.
    for transport in ["udp", "tcp", "tls"] {
        let out = run(
            Command::new(venv_python())
                .arg(peer_script("aioice_relay.py"))
                .args([
                    "127.0.0.1",
                    &p.to_string(),
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

/// A Chromium call from the call page forced through `turns:` on the one port: two pages from
/// `https://localhost:PORT` (the self-signed certificate for `localhost`; the script runs
/// Chromium with `--ignore-certificate-errors`, which its TURN client honours too), relay only,
/// with their `/v1/ice-servers` cut down to the `turns:` URL, camera and microphone faked
/// (tests/browser/call_e2e.mjs, scenario `turns`). In a loopback-only network namespace.
#[test]
fn chromium_call_through_turns_on_the_one_port() {
    let _heavy = crate::common::heavy();
    let started = Instant::now();
    let (chromium, script) = crate::browser::prerequisites();
    crate::common::isolate_network();
    let server = server(&[]);
    let p = port(&server).port();
    let base = format!("https://localhost:{p}");
    let out = run(
        &mut crate::browser::node(
            &chromium,
            &script,
            &base,
            &["--scenarios", "turns", "--deadline-ms", "40000"],
        ),
        Duration::from_secs(50),
    );
    let t = text(&out);
    let result = crate::browser::tagged_json(&t, "RESULT ").unwrap_or(serde_json::Value::Null);
    assert!(
        out.status.success() && result["ok"] == true,
        "turns call failed:\n{t}"
    );
    let turns = &result["scenarios"]["turns"];
    assert_eq!(
        turns["iceServers"],
        serde_json::json!([format!("turns:localhost:{p}?transport=tcp")]),
        "{turns}"
    );
    for side in [&turns["a"], &turns["b"]] {
        let local = &side["selectedPair"]["local"];
        assert_eq!(local["candidateType"], "relay", "{side}");
        assert_eq!(local["relayProtocol"], "tls", "{side}");
        assert_eq!(
            side["selectedPair"]["remote"]["candidateType"], "relay",
            "{side}"
        );
        assert_eq!(side["received"].as_array().map(Vec::len), Some(1), "{side}");
        assert!(side["video"]["framesDecoded"].as_u64() > Some(0), "{side}");
    }

    // The server saw it as TURN over TLS on the one port, and nothing else carried STUN.
    std::thread::sleep(Duration::from_millis(1200));
    let body = metrics(port(&server));
    let m = |s: &str| metric(&body, s);
    assert!(
        m(r#"switchboard_listen_connections_total{protocol="stun-tls"}"#) >= 2.0,
        "{body}"
    );
    assert!(
        m(r#"switchboard_stun_messages_received_total{transport="tls"}"#) >= 100.0,
        "{body}"
    );
    for other in ["udp", "tcp"] {
        let series = format!(r#"switchboard_stun_messages_received_total{{transport="{other}"}}"#);
        assert_eq!(m(&series), 0.0, "{body}");
    }
    assert!(
        m("switchboard_turn_allocations_created_total") >= 2.0,
        "{body}"
    );
    for direction in ["to_peer", "to_client"] {
        let series = format!(r#"switchboard_turn_relayed_bytes_total{{direction="{direction}"}}"#);
        assert!(m(&series) > 20_000.0, "{body}");
    }
    assert!(server.stop().success());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
