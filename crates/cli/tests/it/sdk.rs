//! The JavaScript SDK (`clients/js`, npm package `switchboard-client`) against the real server,
//! driven by its Node scripts (`clients/js/test/*.mjs`, each printing `OK check` / `FAIL check`
//! lines and `DONE N failed`): pub/sub, exact recovery after a server disconnect and a cut
//! connection, a server restart, token refresh on 109, the SSE fallback when WebSocket upgrades
//! are refused, and permanent refusals that must not loop. The scripts use the `ws` package
//! pinned in `clients/js/package-lock.json` (scripts/test-deps runs `npm ci` there).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{assert_checks, need, repo_root, run, text, Server, TestServer};

const API_KEY: &str = "sdk-test-key";
const JWT_SECRET: &str = "sdk-test-secret";

/// The SDK's directory, checked to have its dev dependencies installed.
fn sdk_dir() -> PathBuf {
    need("node");
    let dir = repo_root().join("clients/js");
    assert!(
        dir.join("node_modules/ws/package.json").is_file(),
        "{}/node_modules/ws is missing: run scripts/test (scripts/test-deps runs npm ci there)",
        dir.display()
    );
    dir
}

/// A `chat` namespace with history, presence and join/leave for tokens' users, and a `locked`
/// one nobody may use.
fn config() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-sdk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("sdk.toml");
    std::fs::write(
        &file,
        "[hub.namespaces.chat]\nhistory_size = 1000\nhistory_ttl_secs = 300\npresence = true\n\
         join_leave = true\nallow_subscribe_for_client = true\nallow_publish_for_client = true\n\
         allow_presence_for_client = true\nallow_history_for_client = true\n\
         [hub.namespaces.locked]\n",
    )
    .expect("write config");
    file
}

/// The server, its HTTP listener on an ephemeral port (or on `addr`).
fn server_builder_on(addr: Option<&str>) -> TestServer {
    let t = match addr {
        Some(a) => TestServer::new().listen("--http", a),
        None => TestServer::new().http(),
    };
    t.api_key(API_KEY).jwt(JWT_SECRET).config(&config())
}

fn server_builder() -> TestServer {
    server_builder_on(None)
}

fn base(server: &Server) -> String {
    format!("http://{}", server.addr("http", "tcp"))
}

/// `node test/NAME BASE --api-key K --jwt-secret S` in clients/js.
fn node(script: &str, base: &str) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(format!("test/{script}"))
        .arg(base)
        .args(["--api-key", API_KEY, "--jwt-secret", JWT_SECRET])
        .current_dir(sdk_dir());
    cmd
}

/// Runs a script to the end against a fresh server and checks every named check passed.
fn run_script(script: &str, checks: &[&str]) -> String {
    let server = server_builder().start();
    let out = run(&mut node(script, &base(&server)), Duration::from_secs(90));
    let t = text(&out);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{t}",
        out.status
    );
    assert_checks(&t, checks);
    t
}

#[test]
fn sdk_pubsub() {
    run_script(
        "pubsub.mjs",
        &[
            "connect",
            "subscribe",
            "join-leave",
            "publish-receive",
            "binary-payload",
            "history",
            "presence",
            "unsubscribe-and-leave",
            "refused-channel",
            "disconnect",
        ],
    );
}

#[test]
fn sdk_recovery_after_server_disconnect_and_cuts() {
    let t = run_script(
        "recovery.mjs",
        &[
            "subscribe-and-receive",
            "server-disconnect-3011-recovers-exactly",
            "tcp-cut-recovers-exactly",
            "cut-while-publishing-no-duplicates",
            "unsubscribe-resubscribe-recovers",
        ],
    );
    eprintln!("{t}");
}

#[test]
fn sdk_token_refresh_on_109() {
    run_script(
        "token.mjs",
        &[
            "expired-first-token-refreshed",
            "expiry-then-reconnect-refreshes-and-recovers",
            "expired-without-getToken-stops",
            "getToken-unauthorized-stops",
        ],
    );
}

#[test]
fn sdk_sse_fallback_when_websocket_refused() {
    run_script(
        "sse.mjs",
        &[
            "falls-back-to-sse",
            "receives-over-sse",
            "publishes-over-http",
            "history-not-available-over-sse",
            "add-subscription-reopens-stream-without-loss",
            "cut-recovers-exactly",
            "remove-subscription",
            "sse-only-transport",
        ],
    );
}

#[test]
fn sdk_permanent_refusal_does_not_loop() {
    run_script(
        "refusal.mjs",
        &[
            "bad-token-101-no-loop",
            "server-disconnect-3503-no-reconnect",
            "unreachable-server-retried-with-backoff",
            "forbidden-channel-103-only-that-subscription",
        ],
    );
}

/// A server restart: the script prints `RESTART`, the test stops the server and starts a new
/// one on the same port, then tells the script on stdin. With the in-memory broker the epoch is
/// new, so the SDK must report recovery as impossible (once), then deliver what follows.
#[test]
fn sdk_server_restart_reports_recovery_impossible() {
    let server = server_builder().start();
    let addr = server.addr("http", "tcp");
    let base = format!("http://{addr}");
    let mut child = node("restart.mjs", &base)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = child.stderr.take().expect("stderr");
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            s.push_str(&line);
            s.push('\n');
        }
        s
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let restart = line == "RESTART";
                lines.push(line);
                if restart {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("no RESTART line from restart.mjs: {lines:?}");
            }
        }
    }
    assert!(server.stop().success(), "switchboard did not exit cleanly");
    let again = server_builder_on(Some(&addr.to_string()));
    let _server = again.start();
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "restarted").expect("tell the script");
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("restart.mjs did not finish: {lines:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    lines.extend(rx.try_iter());
    let out = format!("{}\n{}", lines.join("\n"), err.join().unwrap_or_default());
    assert!(status.success(), "restart.mjs failed ({status}):\n{out}");
    assert_checks(
        &out,
        &[
            "before-restart",
            "reconnects-after-restart",
            "publications-after-restart",
        ],
    );
    assert!(
        lines.iter().any(|l| l == "RECOVERY-IMPOSSIBLE"),
        "the in-memory broker lost the stream: recovery must be reported impossible\n{out}"
    );
}
