//! The real-time hub's transports, driven by third-party clients (Python `websockets`, `httpx`
//! over HTTP/1.1 and HTTP/2, `grpcio` with stubs generated from proto/): every transport to every
//! transport, recovery after a cut, bad input and limits with their codes, liveness, shutdown.
//! The clients live in tests/peers/hub_*.py; each test starts its own server.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{
    assert_checks, http_get, peer_script, run, text, venv_python, Server, TestServer,
};

const JWT_SECRET: &str = "hub-test-secret";
const API_KEY: &str = "hub-test-key";

fn script(name: &str) -> PathBuf {
    peer_script(name)
}

/// A server with only the HTTP stack (plain and TLS) on ephemeral loopback ports.
fn hub_server(extra: &[&str]) -> Server {
    TestServer::new()
        .http()
        .https()
        .api_key(API_KEY)
        .jwt(JWT_SECRET)
        .args(extra)
        .start()
}

/// Runs a Python peer script; returns its output after checking it exited 0.
fn peer(args: &[&str], limit: Duration) -> String {
    let out = run(
        Command::new(venv_python())
            .arg(script(args[0]))
            .args(&args[1..]),
        limit,
    );
    let t = text(&out);
    assert!(out.status.success(), "{args:?} failed:\n{t}");
    t
}

fn limits_config() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-hub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("limits.toml");
    std::fs::write(
        &file,
        "[hub.limits]\nmax_message_size = 4096\nmax_channels_per_connection = 3\n\
         max_connections_per_user = 2\nmax_connections = 8\nqueue_max_messages = 32\n\
         queue_max_bytes = 65536\n[hub.namespaces.call]\nallow_subscribe_for_client = true\n\
         [hub.namespaces.locked]\n[hub.rooms]\nmax_commands_per_second = 5\ncommand_burst = 10\n",
    )
    .unwrap();
    file
}

#[test]
fn every_transport_publishes_to_every_transport() {
    let server = hub_server(&[]);
    let http = server.addr("http", "tcp").to_string();
    let https = server.addr("https", "tcp").to_string();
    let out = peer(
        &["hub_matrix.py", &http, &https, JWT_SECRET, API_KEY],
        Duration::from_secs(60),
    );
    let field = |prefix: &str| -> Vec<String> {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line:\n{out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let receivers = field("RECEIVERS ");
    let publishers = field("PUBLISHERS ");
    assert!(receivers.len() >= 8 && publishers.len() >= 9, "{out}");
    for p in &publishers {
        for r in &receivers {
            let cell = format!("CELL {p} {r} ");
            let line = out
                .lines()
                .find(|l| l.starts_with(&cell))
                .unwrap_or_else(|| panic!("no cell {p} -> {r}:\n{out}"));
            assert!(
                line.ends_with(" ok 1"),
                "{p} -> {r}: {line}\n(full output)\n{out}"
            );
        }
    }
    // The httpx clients really used the HTTP version their name says.
    for l in out.lines().filter_map(|l| l.strip_prefix("VERSION ")) {
        let (name, version) = l.split_once(' ').unwrap();
        let want = if name.ends_with("-h2") {
            "HTTP/2"
        } else {
            "HTTP/1.1"
        };
        assert_eq!(version, want, "{name}");
    }
    assert!(!out.contains("-ERROR"), "{out}");
}

#[test]
fn websocket_cut_mid_stream_recovers_exactly_the_missed_messages() {
    let server = hub_server(&[]);
    let http = server.addr("http", "tcp").to_string();
    let out = peer(
        &["hub_checks.py", "recovery", &http, API_KEY],
        Duration::from_secs(60),
    );
    assert_checks(
        &out,
        &[
            "ws-json-cut-and-recover",
            "ws-proto-cut-and-recover",
            "ws-recovery-impossible",
            "sse-last-event-id-resume",
            "sse-resume-before-first-publication",
        ],
    );
}

#[test]
fn bad_input_gets_its_code() {
    let config = limits_config();
    let server = hub_server(&[
        "--config",
        config.to_str().unwrap(),
        "--allow-anonymous",
        "false",
    ]);
    let http = server.addr("http", "tcp").to_string();
    let https = server.addr("https", "tcp").to_string();
    let out = peer(
        &[
            "hub_checks.py",
            "errors",
            &http,
            &https,
            JWT_SECRET,
            API_KEY,
        ],
        Duration::from_secs(60),
    );
    assert_checks(
        &out,
        &[
            "unknown-subprotocol-400",
            "malformed-json-frame-3501",
            "malformed-proto-frame-3501",
            "binary-frame-on-json-3501",
            "command-before-connect-3501",
            "oversized-data-113",
            "oversized-ws-frame-1009",
            "oversized-http-publish-413",
            "bad-jwt-ws-101-3500",
            "garbage-jwt-ws-101-3500",
            "expired-jwt-ws-109-retry",
            "anonymous-refused-ws-101-3500",
            "bad-jwt-sse-401",
            "expired-jwt-publish-h2-401",
            "anonymous-poll-401",
            "unknown-namespace-sse-404",
            "token-channels-claim-103",
            "api-key-required-401",
            "grpc-bad-jwt-101-3500",
            "grpc-oversized-113-out-of-range",
            "ws-signaling-room",
            "ws-room-permission-102-103",
            "ws-close-handshake-1000",
            "ws-signaling-flood-111",
        ],
    );
    // Still serving, and nothing panicked.
    let (status, _) = http_get(server.addr("http", "tcp"), "/healthz");
    assert_eq!(status, 200);
}

#[test]
fn limits_are_enforced_per_connection_user_node_and_queue() {
    let config = limits_config();
    let server = hub_server(&[
        "--config",
        config.to_str().unwrap(),
        "--allow-anonymous",
        "false",
    ]);
    let http = server.addr("http", "tcp").to_string();
    let out = peer(
        &["hub_checks.py", "limits", &http, JWT_SECRET, API_KEY],
        Duration::from_secs(60),
    );
    assert_checks(
        &out,
        &[
            "max-channels-per-connection-106",
            "max-connections-per-user-114-3504",
            "max-connections-115-3504-503",
            "slow-consumer-3008",
        ],
    );
    let (_, metrics) = http_get(server.addr("http", "tcp"), "/metrics");
    assert!(
        crate::common::metric(&metrics, "switchboard_hub_slow_consumer_disconnects_total") >= 1.0,
        "{metrics}"
    );
}

#[test]
fn pings_heartbeats_and_idle_timeout() {
    let server = hub_server(&["--hub-ping-interval", "1", "--hub-idle-timeout", "2"]);
    let http = server.addr("http", "tcp").to_string();
    let out = peer(
        &["hub_checks.py", "liveness", &http],
        Duration::from_secs(60),
    );
    assert_checks(
        &out,
        &[
            "ws-ping-then-stale-3012",
            "ws-no-connect-stale-3012",
            "ws-pong-keeps-alive",
            "sse-heartbeat-comment",
        ],
    );
}

#[test]
fn shutdown_disconnects_clients_with_3001() {
    let server = hub_server(&[]);
    let http = server.addr("http", "tcp").to_string();
    let mut child = Command::new(venv_python())
        .arg(script("hub_checks.py"))
        .args(["shutdown", &http])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(30));
    assert_eq!(ready.as_deref(), Ok("READY"), "client did not get ready");
    let status = server.stop();
    assert!(status.success(), "{status:?}");
    let closed = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        closed.as_deref(),
        Ok("CLOSED 3001 shutdown 3001"),
        "WebSocket close code/reason and disconnect push on shutdown"
    );
}

#[test]
fn healthz_lists_https_and_the_hub() {
    let server = hub_server(&[]);
    let https = server.addr("https", "tcp");
    assert_ne!(https.port(), 0);
    let (status, body) = http_get(server.addr("http", "tcp"), "/healthz");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["components"]["hub"]["status"], "ok", "{body}");
    let protocols: Vec<&str> = v["components"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["protocol"].as_str())
        .collect();
    // https twice: TCP (h2, http/1.1) and UDP (HTTP/3) on the same port.
    assert_eq!(protocols, ["http", "https", "https"], "{body}");
    let (status, body) = http_get(server.addr("http", "tcp"), "/v1/nope");
    assert_eq!(status, 404);
    assert!(body.contains("\"code\":104"), "{body}");
    let (status, body) = http_get(server.addr("http", "tcp"), "/v1/publish");
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, body) = http_get(server.addr("http", "tcp"), "/v1/sse");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("channel"), "{body}");
    let (status, body) = http_get(server.addr("http", "tcp"), "/v1/ws");
    assert_eq!(status, 426, "plain GET on the WebSocket endpoint: {body}");
    assert!(body.contains("\"code\":107"), "{body}");
}
