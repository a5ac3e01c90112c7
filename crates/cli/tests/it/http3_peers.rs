//! HTTP/3 over QUIC, driven by aioquic (tests/peers/http3_checks.py): the hub endpoints over h3
//! (GET, POST bodies, SSE fed by the server API, long-poll), connection migration to a new UDP
//! port, 0-RTT with 425 for anything but GET/HEAD, the server's key exchange preference, Alt-Svc
//! on HTTP/1.1 and h2 (httpx), Retry, the connection limit, idle timeout and keep-alive,
//! certificate reload reaching new QUIC connections, and h2load over HTTP/1.1 and h2 as a smoke
//! test of the TLS listener.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::{
    assert_checks, make_cert, need, peer_script, run, text, venv_python, Server, TestServer,
};

const API_KEY: &str = "h3-test-key";

fn script() -> PathBuf {
    peer_script("http3_checks.py")
}

/// A server with only the HTTP stack, plain and TLS (+ QUIC), on ephemeral loopback ports.
fn h3_server(extra: &[&str]) -> Server {
    TestServer::new()
        .http()
        .https()
        .api_key(API_KEY)
        .args(extra)
        .start()
}

/// Runs http3_checks.py against `server`; asserts every named check passed.
fn checks(server: &Server, names: &[&str]) -> String {
    let https = server.addr("https", "udp").to_string();
    let http = server.addr("http", "tcp").to_string();
    let out = run(
        Command::new(venv_python())
            .arg(script())
            .args([&https, &http, API_KEY])
            .args(names),
        Duration::from_secs(120),
    );
    let t = text(&out);
    assert_checks(&t, names);
    assert!(out.status.success(), "{t}");
    t
}

#[test]
fn hub_endpoints_migration_and_0rtt_over_http3() {
    let server = h3_server(&[]);
    let tcp = server.addr("https", "tcp");
    let udp = server.addr("https", "udp");
    assert_eq!(
        tcp, udp,
        "HTTP/3 must share the HTTPS port: {:?}",
        server.lines
    );
    assert!(
        server
            .lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["https", "udp", &udp.to_string(), "(HTTP/3)"]),
        "{:?}",
        server.lines
    );
    checks(
        &server,
        &[
            "healthz",
            "publish",
            "sse",
            "poll",
            "big_body",
            "migration",
            "zero_rtt",
            "key_exchange",
            "alt_svc",
        ],
    );
}

#[test]
fn retry_when_asked() {
    let server = h3_server(&["--quic-retry"]);
    checks(&server, &["retry", "healthz"]);
}

#[test]
fn connection_limit_refuses_the_excess() {
    let dir = std::env::temp_dir().join(format!("sb-h3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("limit.toml");
    std::fs::write(&file, "[http3]\nmax_connections = 1\n").unwrap();
    let server = h3_server(&["--config", file.to_str().unwrap()]);
    checks(&server, &["limit"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn idle_timeout_and_keep_alive() {
    let quiet = h3_server(&["--http3-idle-timeout", "2", "--http3-keep-alive", "0"]);
    checks(&quiet, &["idle"]);
    let kept = h3_server(&["--http3-idle-timeout", "2", "--http3-keep-alive", "1"]);
    checks(&kept, &["keep_alive"]);
}

#[test]
fn http3_off_means_no_udp_and_no_alt_svc() {
    let server = h3_server(&["--http3", "off"]);
    assert!(
        !server.lines.iter().any(|l| l.starts_with("https udp")),
        "{:?}",
        server.lines
    );
    let https = server.addr("https", "tcp");
    need("curl");
    let out = run(
        Command::new("curl")
            .args(["-sk", "-D", "-", "-o", "/dev/null"])
            .arg(format!("https://{https}/healthz")),
        Duration::from_secs(20),
    );
    let t = text(&out).to_ascii_lowercase();
    assert!(t.contains(" 200") && !t.contains("alt-svc"), "{t}");
}

#[test]
fn certificate_reload_reaches_new_quic_connections() {
    let dir = std::env::temp_dir().join(format!("sb-h3-cert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key, fp_a) = make_cert(&dir, "a");
    let live_cert = dir.join("live.crt");
    let live_key = dir.join("live.key");
    std::fs::copy(&cert, &live_cert).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let server = h3_server(&[
        "--tls-cert",
        live_cert.to_str().unwrap(),
        "--tls-key",
        live_key.to_str().unwrap(),
    ]);
    let seen = |server: &Server| {
        checks(server, &["cert"])
            .lines()
            .find_map(|l| l.strip_prefix("CERT ").map(str::to_owned))
            .expect("CERT line")
    };
    assert_eq!(seen(&server), fp_a);
    let (cert_b, key_b, fp_b) = make_cert(&dir, "b");
    std::fs::copy(&key_b, &live_key).unwrap();
    std::fs::copy(&cert_b, &live_cert).unwrap();
    // The file watcher polls every 2 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let fp = seen(&server);
        if fp == fp_b {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "QUIC still serves {fp}, want {fp_b}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// h2load (nghttp2) over HTTP/1.1 and h2 on the TLS listener: every request succeeds.
#[test]
fn h2load_smoke_over_h1_and_h2() {
    need("h2load");
    let server = h3_server(&[]);
    let https = server.addr("https", "tcp");
    let url = format!("https://{https}/healthz");
    for h1 in [true, false] {
        let mut cmd = Command::new("h2load");
        cmd.args(["-n", "2000", "-c", "8", "-m", "4"]);
        if h1 {
            cmd.arg("--h1");
        }
        let out = run(cmd.arg(&url), Duration::from_secs(60));
        let t = text(&out);
        assert!(
            t.contains("2000 succeeded, 0 failed, 0 errored"),
            "h1={h1}:\n{t}"
        );
        let proto = if h1 { "http/1.1" } else { "h2" };
        assert!(
            t.contains(&format!("Application protocol: {proto}")),
            "h1={h1}:\n{t}"
        );
    }
}
