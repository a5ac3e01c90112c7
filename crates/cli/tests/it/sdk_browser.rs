//! The JavaScript SDK in a real browser: Debian's Chromium, driven by playwright-core
//! (`tests/browser/sdk_e2e.mjs`), runs pages built on nothing but the module the binary serves
//! at `/sdk/switchboard.js`, served from a second loopback origin (`http://localhost:PORT`).
//!
//! What it proves, against a `switchboard serve` with TURN (`--turn-realm`, `--turn-secret`): two
//! pages (tokens for alice and bob) chat on a channel — each receives both publications in
//! order with the publisher, history holds both, presence names both users, join and leave are
//! seen; two pages call each other with `client.joinRoom()` and exchange data-channel messages
//! both ways, directly (the selected pair is not relay) and with `relayOnly` (both selected pairs
//! are relay, and `/metrics` counts the allocations and relayed bytes); with Chromium's fake
//! camera and microphone, track events arrive and the remote video decodes frames; and an SDK
//! `Room` meets Python's aiortc both ways round — aiortc the newcomer and offerer
//! (`tests/peers/aiortc_call.py`), then the page the newcomer and offerer, trickling, with aiortc
//! answering (`tests/peers/aiortc_room.py`) — and exchanges messages both ways. Then, against `switchboard serve` with no flags at all (its
//! defaults, 127.0.0.1:8080), the two recipes of `docs/clients.md` — read from the file,
//! verbatim — work in two tabs each: live updates (both lists grow) and a video call (each tab
//! plays the other's camera).
//!
//! Each test runs in a network namespace of its own with only loopback (its thread unshares, so
//! the server, Chromium and aiortc it starts are all inside; the no-flags server can take its
//! default ports). Needs root, as CI has.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{
    heavy, isolate_network, metric, peer_script, repo_root, run, text, venv_python, Server,
    TestServer, BIN,
};

const JWT_SECRET: &str = "sdk-browser-secret";

/// Chromium and the browser script, or a message saying how to get them.
fn prerequisites() -> (String, PathBuf) {
    let (chromium, dir) = crate::common::chromium_and_playwright();
    (chromium, dir.join("sdk_e2e.mjs"))
}

/// A `chat` namespace with history, presence and join/leave, open to every token's user.
fn config() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-sdk-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("sdk-browser.toml");
    std::fs::write(
        &file,
        "[hub.namespaces.chat]\nhistory_size = 100\nhistory_ttl_secs = 300\npresence = true\n\
         join_leave = true\nallow_subscribe_for_client = true\nallow_publish_for_client = true\n\
         allow_presence_for_client = true\nallow_history_for_client = true\n",
    )
    .expect("write config");
    file
}

fn node(chromium: &str, script: &Path, base: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .args(["--base", base, "--chromium", chromium])
        .args(extra)
        .current_dir(repo_root().join("tests/browser"));
    cmd
}

/// A running script (the browser's, a Python peer): stdout lines through a channel, stderr
/// collected; killed on drop.
struct Running {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn spawn(name: &'static str, cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        Running {
            name,
            child,
            lines: rx,
            stdout: Vec::new(),
            stderr,
        }
    }

    fn output(&self) -> String {
        let err = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        format!("stdout:\n{}\nstderr:\n{err}", self.stdout.join("\n"))
    }

    /// The next stdout line starting with `prefix`, within `limit`.
    fn wait_line(&mut self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no {prefix:?} line from {} within {limit:?}\n{}",
                    self.name,
                    self.output()
                ),
            }
        }
    }

    /// Waits for the exit (the whole stdout read) within `limit`; returns whether it succeeded.
    fn finish(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(300)) {
                    self.stdout.push(line);
                }
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "{} did not finish within {limit:?}\n{}",
                self.name,
                self.output()
            );
            while let Ok(line) = self.lines.try_recv() {
                self.stdout.push(line);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `SCENARIO name {json}` line of each passed scenario, and the final `RESULT` JSON.
    fn results(&self) -> (Value, Value) {
        let mut scenarios = serde_json::Map::new();
        let mut result = Value::Null;
        for line in &self.stdout {
            if let Some(rest) = line.strip_prefix("SCENARIO ") {
                if let Some((name, json)) = rest.split_once(' ') {
                    let v = serde_json::from_str(json).unwrap_or_else(|e| {
                        panic!("SCENARIO {name}: not JSON ({e})\n{}", self.output())
                    });
                    scenarios.insert(name.to_string(), v);
                }
            } else if let Some(json) = line.strip_prefix("RESULT ") {
                result = serde_json::from_str(json).unwrap_or(Value::Null);
            }
        }
        (Value::Object(scenarios), result)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn local_type(side: &Value) -> &str {
    side["selectedPair"]["local"]["candidateType"]
        .as_str()
        .unwrap_or("")
}

/// Both pages of a call scenario: roles, one message each way, the peer seen joining.
fn check_call(name: &str, s: &Value) {
    let (a, b) = (&s["a"], &s["b"]);
    assert_eq!(
        a["polite"], false,
        "{name}: the first page is impolite: {s}"
    );
    assert_eq!(b["polite"], true, "{name}: the newcomer is polite: {s}");
    for (side, other) in [(a, "b"), (b, "a")] {
        let got = strings(&side["received"]);
        assert!(
            got.len() == 1 && got[0].starts_with(&format!("hello from {name}-{other} ")),
            "{name}: {} received {got:?}",
            side["peer"]
        );
        assert_eq!(side["sawJoin"], true, "{name}: {side}");
        assert!(
            strings(&side["states"]).contains(&"connected"),
            "{name}: {side}"
        );
    }
    assert_eq!(a["sawLeave"], true, "{name}: the leave was not seen: {s}");
}

#[test]
fn sdk_pages_in_chromium_chat_calls_media_and_aiortc_both_ways() {
    let _heavy = heavy();
    let started = Instant::now();
    let (chromium, script) = prerequisites();
    isolate_network();
    let python = venv_python();
    let server = TestServer::new()
        .stun_udp()
        .stun_tcp()
        .http()
        .flag("--turn-realm", "sdk-browser.test")
        .flag("--turn-secret", "sdk-browser-turn")
        // Relays may reach the pages' loopback candidates.
        .flag("--allow-peer", "127.0.0.0/8")
        .jwt(JWT_SECRET)
        .config(&config())
        .start();
    let http = server.addr("http", "tcp");
    let base = format!("http://{http}");

    // Everything in one browser; the aiortc scenario last: it says READY, then the Python peer
    // joins its room.
    let mut browser = Running::spawn(
        "sdk_e2e.mjs",
        &mut node(
            &chromium,
            &script,
            &base,
            &[
                "--jwt-secret",
                JWT_SECRET,
                "--scenarios",
                "chat,direct,relay,media,aiortc",
                "--deadline-ms",
                "120000",
            ],
        ),
    );
    let ready = browser.wait_line("READY ", Duration::from_secs(90));
    let ready: Value = serde_json::from_str(ready.trim_start_matches("READY "))
        .unwrap_or_else(|e| panic!("READY is not JSON ({e}): {ready}"));
    let room = ready["room"].as_str().unwrap_or_default().to_string();
    let py = run(
        Command::new(&python)
            .arg(peer_script("aiortc_call.py"))
            .args(["--base", &base, "--room", &room, "--peer", "aiortc"])
            .args(["--expect", "browser"]),
        Duration::from_secs(75),
    );
    let py_text = text(&py);
    assert!(
        py.status.success(),
        "aiortc peer failed:\n{py_text}\nbrowser:\n{}",
        browser.output()
    );
    let ok = browser.finish(Duration::from_secs(60));
    let (s, result) = browser.results();
    assert!(
        ok && result["ok"] == true,
        "sdk_e2e.mjs failed:\n{}",
        browser.output()
    );

    // (a) chat
    let chat = &s["chat"];
    let want = ["alice: hi from alice @1", "bob: hi from bob @2"];
    for who in ["alice", "bob"] {
        assert_eq!(
            strings(&chat["received"][who]),
            want,
            "chat: what {who} received: {chat}"
        );
    }
    assert_eq!(
        strings(&chat["history"]),
        ["1 hi from alice", "2 hi from bob"],
        "{chat}"
    );
    assert_eq!(
        strings(&chat["presence"]["users"]),
        ["alice", "bob"],
        "{chat}"
    );
    assert_eq!(chat["presence"]["stats"]["numUsers"], 2, "{chat}");
    assert!(strings(&chat["joins"]).contains(&"bob"), "{chat}");
    assert_eq!(strings(&chat["leaves"]), ["bob"], "{chat}");

    // (b) calls: direct, then relay only.
    let direct = &s["direct"];
    check_call("direct", direct);
    for side in [&direct["a"], &direct["b"]] {
        let ty = local_type(side);
        assert!(
            ["host", "srflx", "prflx"].contains(&ty),
            "direct call went through {ty:?}: {side}"
        );
    }
    let relay = &s["relay"];
    check_call("relay", relay);
    for side in [&relay["a"], &relay["b"]] {
        assert_eq!(local_type(side), "relay", "relayOnly call: {side}");
        let via = side["selectedPair"]["local"]["relayProtocol"].as_str();
        assert!(matches!(via, Some("udp" | "tcp")), "{side}");
    }
    assert!(
        strings(&relay["turnUrls"])
            .iter()
            .any(|u| u.starts_with("turn:")),
        "{relay}"
    );
    let (_, metrics) = crate::common::http_get(http, "/metrics");
    let created = metric(&metrics, "switchboard_turn_allocations_created_total");
    let to_peer = metric(
        &metrics,
        "switchboard_turn_relayed_bytes_total{direction=\"to_peer\"}",
    );
    let to_client = metric(
        &metrics,
        "switchboard_turn_relayed_bytes_total{direction=\"to_client\"}",
    );
    assert!(
        created >= 2.0,
        "{created} TURN allocations created, expected one per relayOnly page at least"
    );
    assert!(
        to_peer > 1000.0 && to_client > 1000.0,
        "relayed {to_peer} bytes to peers and {to_client} to clients"
    );

    // (b') media: track events and decoded remote video on both pages.
    let media = &s["media"];
    check_call("media", media);
    for side in [&media["a"], &media["b"]] {
        assert_eq!(strings(&side["tracks"]), ["audio", "video"], "{side}");
        let frames = side["video"]["framesDecoded"].as_u64().unwrap_or(0);
        let width = side["video"]["videoWidth"].as_u64().unwrap_or(0);
        assert!(
            frames > 0 && width > 0,
            "media call, no remote video: {side}"
        );
    }

    // (c) interop with aiortc: both directions, seen from both ends.
    let aiortc = &s["aiortc"];
    assert_eq!(
        strings(&aiortc["received"]),
        ["hello from aiortc"],
        "{aiortc}"
    );
    let py_json = String::from_utf8_lossy(&py.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(Value::Null);
    let py_received = strings(&py_json["received"]);
    assert!(
        py_received.len() == 2
            && py_received[0].starts_with("hello from browser ")
            && py_received[1] == "ack",
        "aiortc did not get the page's messages: {py_json}"
    );
    assert!(
        !aiortc["selectedPair"]["local"]["candidateType"].is_null(),
        "{aiortc}"
    );

    // (c') the other way round: aiortc waits in the room (tests/peers/aiortc_room.py), a page
    // joins as the newcomer, offers with the SDK's default data channel and trickles; aiortc
    // answers.
    let room = "sdk-aiortc-answers";
    let mut py = Running::spawn(
        "aiortc_room.py",
        Command::new(&python)
            .arg(peer_script("aiortc_room.py"))
            .args(["--base", &base, "--room", room, "--peer", "aiortc"])
            .args(["--expect", "browser", "--label", "data"]),
    );
    py.wait_line("JOINED ", Duration::from_secs(30));
    let mut browser = Running::spawn(
        "sdk_e2e.mjs",
        &mut node(
            &chromium,
            &script,
            &base,
            &["--scenarios", "aiortc-answers", "--room", room],
        ),
    );
    let ok = browser.finish(Duration::from_secs(75));
    let (s2, result) = browser.results();
    assert!(
        ok && result["ok"] == true,
        "sdk_e2e.mjs (aiortc-answers) failed:\n{}\naiortc:\n{}",
        browser.output(),
        py.output()
    );
    assert!(
        py.finish(Duration::from_secs(30)),
        "aiortc_room.py failed:\n{}",
        py.output()
    );
    let answers = &s2["aiortc-answers"];
    assert_eq!(answers["polite"], true, "{answers}");
    assert_eq!(
        strings(&answers["received"]),
        ["hello from aiortc"],
        "{answers}"
    );
    let py_json = py
        .stdout
        .iter()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(Value::Null);
    let py_received = strings(&py_json["received"]);
    assert!(
        py_received.len() == 2
            && py_received[0].starts_with("hello from browser ")
            && py_received[1] == "ack",
        "aiortc (answering) did not get the page's messages: {py_json}"
    );
    assert_eq!(strings(&py_json["channels"]), ["data"], "{py_json}");
    // The page trickled its candidates and then end-of-candidates.
    assert_eq!(
        strings(&py_json["remoteCandidates"]).last(),
        Some(&"end-of-candidates"),
        "{py_json}"
    );

    eprintln!(
        "chat ok; direct {} / {}; relay {} / {} ({created} allocations); media {} frames; \
         aiortc pair {}; aiortc answering, pair {}; {:?} in all",
        local_type(&direct["a"]),
        local_type(&direct["b"]),
        local_type(&relay["a"]),
        local_type(&relay["b"]),
        media["a"]["video"]["framesDecoded"],
        aiortc["selectedPair"],
        answers["selectedPair"],
        started.elapsed()
    );
    assert!(server.stop().success(), "switchboard did not exit cleanly");
}

/// `switchboard serve` with no flags (nor SWITCHBOARD_* settings): its defaults, HTTP on
/// 127.0.0.1:8080 as the recipes say — the namespace has those ports to itself.
fn serve_with_no_flags() -> Server {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SWITCHBOARD_") {
            cmd.env_remove(k);
        }
    }
    // Nothing it might read or write lands in the repository.
    cmd.current_dir(std::env::temp_dir());
    Server::start_command(cmd)
}

#[test]
fn sdk_recipes_in_docs_work_verbatim_against_serve_with_no_flags() {
    let _heavy = heavy();
    let (chromium, script) = prerequisites();
    isolate_network();
    let server = serve_with_no_flags();
    let http = server.addr("http", "tcp");
    assert_eq!(
        http.to_string(),
        "127.0.0.1:8080",
        "the recipes use http://127.0.0.1:8080: {:?}",
        server.lines
    );
    let docs = repo_root().join("docs/clients.md");
    let out = run(
        &mut node(
            &chromium,
            &script,
            "http://127.0.0.1:8080",
            &[
                "--scenarios",
                "recipes",
                "--docs",
                docs.to_str().expect("UTF-8 path"),
                "--deadline-ms",
                "60000",
            ],
        ),
        Duration::from_secs(75),
    );
    let t = text(&out);
    let result = t
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|j| serde_json::from_str::<Value>(j).ok())
        .unwrap_or(Value::Null);
    assert!(
        out.status.success() && result["ok"] == true,
        "the recipes failed:\n{t}"
    );
    let r = &result["scenarios"]["recipes"];
    assert!(
        r["origin"]
            .as_str()
            .is_some_and(|o| o.starts_with("http://localhost:") && !o.ends_with(":8080")),
        "the recipe pages must come from another loopback origin: {r}"
    );
    let want = ["{\"text\":\"hi\"}", "{\"text\":\"hello back\"}"];
    let lists = r["live"]["lists"].as_array().cloned().unwrap_or_default();
    assert_eq!(lists.len(), 2, "{r}");
    for list in &lists {
        assert_eq!(strings(list), want, "live updates: {r}");
    }
    let video = r["video"].as_array().cloned().unwrap_or_default();
    assert_eq!(video.len(), 2, "{r}");
    for tab in &video {
        let remote = &tab["remote"];
        assert!(
            remote["videoWidth"].as_u64().unwrap_or(0) > 0
                && remote["framesDecoded"].as_u64().unwrap_or(0) > 0
                && remote["paused"] == false,
            "video call: a tab does not play the other's camera: {r}"
        );
        assert_eq!(strings(&remote["tracks"]), ["audio", "video"], "{r}");
        assert_eq!(tab["local"], 1, "video call: {r}");
        // Read without a user gesture: the remote <video> played under Chromium's own autoplay
        // policy, as it would for a visitor who has not clicked anything.
        assert_eq!(tab["activated"], false, "video call: {r}");
    }
    assert!(server.stop().success(), "switchboard did not exit cleanly");
}
