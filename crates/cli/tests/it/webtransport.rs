//! WebTransport over HTTP/3 as a hub transport, driven by aioquic
//! (tests/peers/webtransport_check.py): extended CONNECT to `/v1/wt`, bidirectional streams
//! carrying length-prefixed protobuf frames, a publication made through the server API over
//! HTTP/3 on the session's own connection, independent hub connections per stream, disconnect
//! 3501 for a malformed frame, 404 / 409 for a wrong path / a second session, JWT auth in the
//! connect command, and disconnect 3001 on every stream when the server stops.
//!
//! How sessions end (tests/peers/webtransport_close.py): a client's CLOSE_WEBTRANSPORT_SESSION
//! capsule, a bare FIN or a reset of the CONNECT stream ends every hub connection of the session
//! at once (presence empty within 2 s, streams reset with WT_SESSION_GONE), and a server
//! shutdown ends the session with the capsule (code 3001) and FIN after the streams' 3001.
//! Chromium's side of the same is in browser.rs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::{assert_checks, peer_script, run, text, venv_python, Server, TestServer};

const API_KEY: &str = "wt-test-key";
const JWT_SECRET: &str = "wt-test-secret";

fn server() -> Server {
    TestServer::new()
        .http()
        .https()
        .api_key(API_KEY)
        .jwt(JWT_SECRET)
        .start()
}

#[test]
fn hub_over_webtransport() {
    let server = server();
    let https = server.addr("https", "udp").to_string();
    let out = run(
        Command::new(venv_python())
            .arg(peer_script("webtransport_check.py"))
            .args([&https, API_KEY, JWT_SECRET]),
        Duration::from_secs(120),
    );
    let t = text(&out);
    assert_checks(
        &t,
        &[
            "subscribe",
            "streams",
            "bad_frame",
            "wrong_path",
            "second_session",
            "auth",
        ],
    );
    assert!(out.status.success(), "{t}");
}

#[test]
fn client_closing_the_session_ends_its_hub_connections() {
    let server = server();
    let https = server.addr("https", "udp").to_string();
    let http = server.addr("http", "tcp").to_string();
    let out = run(
        Command::new(venv_python())
            .arg(peer_script("webtransport_close.py"))
            .args([&https, &http, API_KEY]),
        Duration::from_secs(120),
    );
    let t = text(&out);
    assert_checks(&t, &["capsule", "fin", "reset"]);
    assert!(out.status.success(), "{t}");
}

#[test]
fn shutdown_disconnects_webtransport_streams_with_3001() {
    let server = server();
    let https = server.addr("https", "udp").to_string();
    let mut peer = Command::new(venv_python());
    peer.arg(peer_script("webtransport_check.py"))
        .args([&https, API_KEY, "shutdown"]);
    stop_under(server, &mut peer);
}

#[test]
fn shutdown_closes_webtransport_sessions_with_the_close_capsule() {
    let server = server();
    let https = server.addr("https", "udp").to_string();
    let http = server.addr("http", "tcp").to_string();
    let mut peer = Command::new(venv_python());
    peer.arg(peer_script("webtransport_close.py"))
        .args([&https, &http, API_KEY, "shutdown"]);
    stop_under(server, &mut peer);
}

/// Runs a peer's `shutdown` check: waits for its "READY shutdown", stops the server (SIGTERM,
/// clean exit required), then expects "OK shutdown" and a successful exit.
fn stop_under(server: Server, peer: &mut Command) {
    let mut peer = peer
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the peer");
    let stdout = peer.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let ready = line == "READY shutdown";
                lines.push(line);
                if ready {
                    break;
                }
            }
            Err(_) => {
                let _ = peer.kill();
                panic!("peer never became ready: {lines:?}");
            }
        }
    }
    let status = server.stop();
    assert!(status.success(), "server exit {status:?}");
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        lines.push(line);
    }
    let exit = peer.wait().expect("peer exit");
    assert!(
        lines.iter().any(|l| l == "OK shutdown") && exit.success(),
        "{lines:?}"
    );
}
