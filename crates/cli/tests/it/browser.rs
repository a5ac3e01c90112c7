//! The pages served by the binary, in a real browser: Debian's Chromium, driven by
//! playwright-core (`tests/browser/call_e2e.mjs`), calls through switchboard's signaling rooms
//! and STUN/TURN; Python's aiortc (`tests/peers/aiortc_call.py`) calls a page too.
//!
//! What it proves: two `/call` pages exchange data-channel messages both ways (a) through
//! switchboard's TURN relay only (`relay=1`: both selected pairs are `relay`, and `/metrics`
//! counts the allocations and relayed bytes), (b) directly (selected pairs host/srflx/prflx; a
//! taken peer id is refused on the page with 105; Leave removes the peer on the other side and
//! returns the page to its join form, and joining again works), (c) with fake camera and
//! microphone (remote video decodes frames), (d) over the HTTPS listener (wss:, fetch over TLS,
//! self-signed); (e) an independent WebRTC stack (aiortc) offers to a page and exchanges
//! messages; (f) a Chromium that hides its host addresses behind mDNS names (its default) calls a
//! page, and its stats panel reads "mDNS host, port N udp"; and the console page polls `/healthz`
//! and `/metrics` without error.
//! Screenshots of `/call` and `/` land in `test-output/screenshots/`. The headers of the pages
//! (CSP, types, caching) are checked without a browser.
//!
//! The call test runs in a network namespace of its own with only loopback (its thread
//! unshares, so the server, Chromium and aiortc it starts are all inside): nothing can reach
//! beyond the machine, and "direct" means loopback host candidates. Only for (f), last, the
//! namespace gets a second interface with a documentation-range address (`add_lan`), still
//! leading nowhere. Needs root, as CI has.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{isolate_network, metric, repo_root, run, text, venv_python, TestServer};
use serde_json::Value;

/// GET over HTTP/1.0; returns (status, lower-cased headers, body).
pub(crate) fn get(
    addr: SocketAddr,
    path: &str,
    extra: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{extra}\r\n").expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp.as_str(), ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

#[test]
fn pages_are_served_with_types_csp_and_caching() {
    let server = TestServer::new().stun_udp().http().start();
    let http = server.addr("http", "tcp");
    for (path, ty, marker) in [
        ("/", "text/html; charset=utf-8", "switchboard · console"),
        ("/call", "text/html; charset=utf-8", "switchboard · call"),
        (
            "/call?room=demo&join=1",
            "text/html; charset=utf-8",
            "call.js",
        ),
        (
            "/assets/call.js",
            "text/javascript; charset=utf-8",
            "switchboardCall",
        ),
        // The call page is built on the SDK the binary serves (same origin: `script-src 'self'`).
        (
            "/assets/call.js",
            "text/javascript; charset=utf-8",
            "from \"/sdk/switchboard.js\"",
        ),
        (
            "/assets/console.js",
            "text/javascript; charset=utf-8",
            "parseMetrics",
        ),
        (
            "/assets/common.js",
            "text/javascript; charset=utf-8",
            "export function el",
        ),
        ("/assets/style.css", "text/css; charset=utf-8", ":root"),
        ("/assets/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let (status, headers, body) = get(http, path, "");
        assert_eq!(status, 200, "GET {path}: {headers:?}");
        assert_eq!(header(&headers, "content-type"), ty, "GET {path}");
        assert!(
            body.contains(marker),
            "GET {path}: no {marker:?} in the body"
        );
        let csp = header(&headers, "content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self' ws: wss:",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "GET {path}: CSP {csp:?}");
        }
        assert!(!csp.contains("unsafe-"), "GET {path}: CSP {csp:?}");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        assert_eq!(header(&headers, "cache-control"), "no-cache");
        let etag = header(&headers, "etag").to_string();
        assert!(
            etag.starts_with('"') && etag.len() > 2,
            "GET {path}: ETag {etag:?}"
        );
        let (status, headers, body) = get(http, path, &format!("If-None-Match: {etag}\r\n"));
        assert_eq!(status, 304, "GET {path} with If-None-Match");
        assert!(body.is_empty());
        assert_eq!(header(&headers, "etag"), etag);
    }
    let (status, _, body) = get(http, "/assets/../Cargo.toml", "");
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = get(http, "/assets/nope.js", "");
    assert_eq!(status, 404);
    assert!(body.contains("\"code\":104"), "{body}");
    // The pages sit beside the API: these still answer as before.
    let (status, _, body) = get(http, "/healthz", "");
    assert!(status == 200 && body.contains("listeners"), "{body}");
    let (status, _, _) = get(http, "/nope", "");
    assert_eq!(status, 404);
}

/// Everything the browser test needs, or a message saying how to get it.
pub(crate) fn prerequisites() -> (String, PathBuf) {
    let (chromium, browser) = crate::common::chromium_and_playwright();
    (chromium, browser.join("call_e2e.mjs"))
}

/// The JSON after `prefix` on the last line that starts with it.
pub(crate) fn tagged_json(out: &str, prefix: &str) -> Option<Value> {
    out.lines()
        .rev()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|j| serde_json::from_str(j.trim()).ok())
}

/// A running node script: stdout lines through a channel, stderr collected; killed on drop.
pub(crate) struct Script {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Script {
    pub(crate) fn spawn(cmd: &mut Command) -> Script {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
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
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        Script {
            child,
            lines: rx,
            stdout: Vec::new(),
            stderr,
        }
    }

    pub(crate) fn output(&self) -> String {
        let err = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        format!("stdout:\n{}\nstderr:\n{err}", self.stdout.join("\n"))
    }

    /// The next stdout line starting with `prefix`, within `limit`.
    pub(crate) fn wait_line(&mut self, prefix: &str, limit: Duration) -> String {
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
                    "no {prefix:?} line from the browser script within {limit:?}\n{}",
                    self.output()
                ),
            }
        }
    }

    /// Waits for the exit (and the rest of stdout) within `limit`.
    pub(crate) fn finish(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Drain what is left.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.stdout.push(line);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the browser script did not finish within {limit:?}\n{}",
                self.output()
            );
            while let Ok(line) = self.lines.try_recv() {
                self.stdout.push(line);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn node(chromium: &str, script: &Path, base: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .args(["--base", base, "--chromium", chromium])
        .arg("--out")
        .arg(repo_root().join("test-output/screenshots"))
        .args(extra)
        .current_dir(repo_root().join("tests/browser"));
    cmd
}

fn local_type(side: &Value) -> &str {
    side["selectedPair"]["local"]["candidateType"]
        .as_str()
        .unwrap_or("")
}

fn received(side: &Value) -> Vec<&str> {
    side["received"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The documentation-range address (RFC 5737) of [`add_lan`]'s interface.
const LAN_ADDR: &str = "198.51.100.7";

/// Gives the test's namespace (see [`isolate_network`]) a second network beside loopback:
/// interface `sb0` with [`LAN_ADDR`]/24, multicast on, and the default route through it (via
/// 198.51.100.1, which nothing answers), so that a Chromium without loopback candidates (its
/// default) gathers a host candidate to hide behind an mDNS name. `sb0` is one end of a veth pair
/// whose other end (`sb0p`, no address) is in the namespace too, or a dummy interface where the
/// kernel has no veth: either way a packet for any other address goes nowhere, so nothing
/// leaves the namespace still. Call it after [`isolate_network`], from the same thread.
fn add_lan() {
    let ip = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let made = (ip(&["link", "add", "sb0", "type", "veth", "peer", "name", "sb0p"])
        && ip(&["link", "set", "sb0p", "up"]))
        || ip(&["link", "add", "sb0", "type", "dummy"]);
    assert!(
        made,
        "ip link add sb0 (type veth, or dummy) failed in the test's namespace"
    );
    let addr = format!("{LAN_ADDR}/24");
    let gateway = [
        "route",
        "add",
        "default",
        "via",
        "198.51.100.1",
        "dev",
        "sb0",
    ];
    for args in [
        &["addr", "add", addr.as_str(), "dev", "sb0"][..],
        &["link", "set", "sb0", "multicast", "on", "up"],
        &gateway,
    ] {
        assert!(
            ip(args),
            "ip {} failed in the test's namespace",
            args.join(" ")
        );
    }
}

#[test]
fn call_page_in_chromium_relay_direct_media_https_and_aiortc() {
    let _heavy = crate::common::heavy();
    let started = Instant::now();
    let (chromium, script) = prerequisites();
    isolate_network();
    let python = venv_python();
    let server = TestServer::new()
        .stun_udp()
        .stun_tcp()
        // No TURN over TLS: the self-signed certificate would only make Chromium try and fail.
        .http()
        .https()
        .flag("--turn-realm", "browser.test")
        .flag("--turn-secret", "browser-secret")
        // Relays may reach the pages' loopback candidates.
        .flag("--allow-peer", "127.0.0.0/8")
        .start();
    let http = server.addr("http", "tcp");
    let base = format!("http://{http}");
    let https_base = format!("https://{}", server.addr("https", "tcp"));

    // (a) relay only, first and alone, so /metrics tells what the relay run did.
    let out = run(
        &mut node(
            &chromium,
            &script,
            &base,
            &["--scenarios", "relay", "--deadline-ms", "45000"],
        ),
        Duration::from_secs(60),
    );
    let t = text(&out);
    let result = tagged_json(&t, "RESULT ").unwrap_or(Value::Null);
    assert!(
        out.status.success() && result["ok"] == true,
        "relay run failed:\n{t}"
    );
    let relay = &result["scenarios"]["relay"];
    for side in [&relay["a"], &relay["b"]] {
        assert_eq!(local_type(side), "relay", "relay run: {side}");
        // Chromium allocates over both TURN URLs it is given (UDP and TCP) and may pick either.
        let via = side["selectedPair"]["local"]["relayProtocol"].as_str();
        assert!(matches!(via, Some("udp" | "tcp")), "{side}");
        assert_eq!(received(side).len(), 1, "relay run: {side}");
    }
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
        "relay run: {created} TURN allocations created, expected one per page at least"
    );
    // DTLS handshake + SCTP + the messages went through the relay both ways.
    assert!(
        to_peer > 1000.0 && to_client > 1000.0,
        "relay run relayed {to_peer} bytes to peers and {to_client} to clients"
    );

    // (b)-(e): direct, media, HTTPS, aiortc, then the console screenshot, in one browser.
    let mut browser = Script::spawn(&mut node(
        &chromium,
        &script,
        &base,
        &[
            "--https-base",
            &https_base,
            "--scenarios",
            "direct,media,https,aiortc,console",
            "--deadline-ms",
            "90000",
        ],
    ));
    let ready = browser.wait_line("READY ", Duration::from_secs(60));
    let ready: Value =
        serde_json::from_str(ready.trim_start_matches("READY ")).unwrap_or_else(|e| {
            panic!(
                "READY line is not JSON ({e}): {ready}\n{}",
                browser.output()
            )
        });
    let room = ready["room"].as_str().unwrap_or_default().to_string();
    let py = run(
        Command::new(&python)
            .arg(crate::common::peer_script("aiortc_call.py"))
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
    let status = browser.finish(Duration::from_secs(100));
    let all = browser.stdout.join("\n");
    let result = tagged_json(&all, "RESULT ").unwrap_or(Value::Null);
    assert!(
        status.success() && result["ok"] == true,
        "browser run failed ({status}):\n{}",
        browser.output()
    );
    let s = &result["scenarios"];

    for side in [&s["direct"]["a"], &s["direct"]["b"]] {
        let ty = local_type(side);
        assert!(
            ["host", "srflx", "prflx"].contains(&ty),
            "direct run went through {ty:?}: {side}"
        );
        assert_eq!(received(side).len(), 1, "direct run: {side}");
    }
    assert_eq!(
        s["direct"]["duplicate"]["code"], 105,
        "a taken peer id must be refused on the page: {}",
        s["direct"]
    );
    // Leave: back to the join form (Join enabled; no call card, no chat card, no peer panel);
    // joining again: the call card, the chat and one peer panel.
    let after = &s["direct"]["afterLeave"];
    for (key, want) in [
        ("formHidden", false),
        ("joinDisabled", false),
        ("callHidden", true),
        ("chatHidden", true),
        ("chatVisible", false),
    ] {
        assert_eq!(after[key], want, "after Leave, {key}: {after}");
    }
    assert_eq!(after["panels"], 0, "after Leave: {after}");
    let rejoined = &s["direct"]["rejoined"];
    assert!(
        rejoined["formHidden"] == true
            && rejoined["chatVisible"] == true
            && rejoined["callHidden"] == false
            && rejoined["panels"] == 1,
        "after joining again: {rejoined}"
    );
    // The page's own candidate text for Chromium's mDNS-hidden host candidate (address "").
    assert_eq!(
        s["direct"]["candidateText"][1], "mDNS host, port 39392 udp",
        "{}",
        s["direct"]["candidateText"]
    );
    for side in [&s["media"]["a"], &s["media"]["b"]] {
        let frames = side["video"]["framesDecoded"].as_u64().unwrap_or(0);
        let width = side["video"]["videoWidth"].as_u64().unwrap_or(0);
        assert!(
            frames > 0 && width > 0,
            "media run, no remote video: {side}"
        );
    }
    for side in [&s["https"]["a"], &s["https"]["b"]] {
        assert_eq!(received(side).len(), 1, "https run: {side}");
    }
    assert!(
        s["https"]["origin"]
            .as_str()
            .is_some_and(|o| o.starts_with("https://")),
        "{}",
        s["https"]
    );

    // aiortc: both directions, seen from both ends.
    let py_json = String::from_utf8_lossy(&py.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(Value::Null);
    let py_received: Vec<&str> = received(&py_json);
    assert!(
        py_received
            .iter()
            .any(|m| m.starts_with("hello from browser"))
            && py_received.contains(&"ack"),
        "aiortc did not get the page's messages: {py_json}"
    );
    assert!(
        received(&s["aiortc"]).contains(&"hello from aiortc"),
        "the page did not get aiortc's message: {}",
        s["aiortc"]
    );
    assert!(
        !s["aiortc"]["selectedPair"]["local"]["candidateType"].is_null(),
        "{}",
        s["aiortc"]
    );

    let console = &s["console"];
    assert!(
        console["listeners"]
            .as_array()
            .is_some_and(|l| l.len() >= 4),
        "console: {console}"
    );
    for shot in result["screenshots"].as_array().into_iter().flatten() {
        let path = shot.as_str().unwrap_or_default();
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "screenshot {path} is missing or tiny");
        eprintln!("screenshot: {path}");
    }
    assert_eq!(
        result["screenshots"].as_array().map(Vec::len),
        Some(2),
        "{result}"
    );

    // (f) mdns: a Chromium with its default mDNS hiding calls a normal page. Only now a second
    // network: the runs above keep to loopback as asserted (direct pairs on 127.0.0.1, aiortc
    // through the relay); this Chromium, without loopback candidates, needs it to gather any.
    add_lan();
    let out = run(
        &mut node(
            &chromium,
            &script,
            &base,
            &["--scenarios", "mdns", "--deadline-ms", "45000"],
        ),
        Duration::from_secs(60),
    );
    let t = text(&out);
    let mdns_result = tagged_json(&t, "RESULT ").unwrap_or(Value::Null);
    assert!(
        out.status.success() && mdns_result["ok"] == true,
        "mdns run failed:\n{t}"
    );
    let mdns = &mdns_result["scenarios"]["mdns"];
    assert!(
        mdns["skipped"].is_null(),
        "mdns run skipped although the namespace has {LAN_ADDR}: {mdns}"
    );
    assert!(
        mdns["gathered"].as_array().is_some_and(|g| !g.is_empty()
            && g.iter()
                .all(|l| l.as_str().is_some_and(|l| l.contains(".local ")))),
        "mdns run: no mDNS host candidate gathered: {mdns}"
    );
    let local = &mdns["local"];
    assert_eq!(local["candidateType"], "host", "mdns run: {mdns}");
    assert!(
        local["address"].is_null(),
        "the hook's address of an mDNS-hidden host candidate must be null: {mdns}"
    );
    let port = local["port"].as_u64().unwrap_or(0);
    let protocol = local["protocol"].as_str().unwrap_or("?");
    assert!(port > 0, "mdns run: {mdns}");
    assert_eq!(
        mdns["panel"]["local"].as_str().unwrap_or(""),
        format!("mDNS host, port {port} {protocol}"),
        "mdns run, the hidden page's panel: {mdns}"
    );

    eprintln!(
        "relay: {created} allocations, {to_peer} B to peers, {to_client} B to clients; \
         direct: {} / {}; aiortc pair: {}; mdns: {}; {:?} in all",
        local_type(&s["direct"]["a"]),
        local_type(&s["direct"]["b"]),
        s["aiortc"]["selectedPair"],
        mdns["panel"]["local"],
        started.elapsed()
    );
    assert!(server.stop().success(), "switchboard did not exit cleanly");
}

/// WebTransport sessions ending, with Chromium as the client
/// (`tests/browser/webtransport_close.mjs`), in a loopback-only namespace like the call test. (1) A page that calls `transport.close()`
/// (CLOSE_WEBTRANSPORT_SESSION and FIN on the CONNECT stream, its QUIC connection left open)
/// loses its hub connection at once: out of presence and of `switchboard_hub_connections`
/// within 2 s, not at the QUIC idle timeout. (2) A server shutdown while a page holds a session
/// resolves the page's `closed` promise (a clean close with code 3001) instead of rejecting it
/// with "connection lost", after the stream's disconnect 3001. The certificate is made here with
/// openssl: `serverCertificateHashes` accepts only an ECDSA certificate valid for at most 14 days.
#[test]
fn webtransport_session_end_in_chromium_close_and_shutdown() {
    let _heavy = crate::common::heavy();
    const KEY: &str = "wt-browser-key";
    fn presence_clients(http: SocketAddr, channel: &str) -> u64 {
        let body = format!("{{\"channel\":\"{channel}\"}}");
        let mut s = TcpStream::connect(http).expect("connect http");
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        write!(
            s,
            "POST /v1/api/presence_stats HTTP/1.0\r\nHost: 127.0.0.1\r\n\
             Authorization: apikey {KEY}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        let json = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {resp}"));
        v["result"]["numClients"].as_u64().unwrap_or(0)
    }
    fn json_after(line: &str, prefix: &str) -> Value {
        serde_json::from_str(line.trim_start_matches(prefix))
            .unwrap_or_else(|e| panic!("not JSON after {prefix:?} ({e}): {line}"))
    }

    let (chromium, call_script) = prerequisites();
    let script = call_script.with_file_name("webtransport_close.mjs");
    crate::common::need("openssl");
    isolate_network();
    let dir = std::env::temp_dir().join(format!("sb-wt-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "10", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status();
    assert!(
        made.is_ok_and(|s| s.success()),
        "openssl could not make an ECDSA certificate"
    );
    let server = TestServer::new()
        .http()
        .https()
        .flag("--api-key", KEY)
        .flag("--tls-cert", cert.to_str().expect("utf-8 path"))
        .flag("--tls-key", key.to_str().expect("utf-8 path"))
        .start();
    let _ = std::fs::remove_dir_all(&dir);
    let http = server.addr("http", "tcp");
    let base = format!("http://{http}");
    let url = format!("https://{}/v1/wt", server.addr("https", "udp"));
    let hash = server
        .lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("tls   cert")
                .and_then(|r| r.split("sha256 ").nth(1))
        })
        .unwrap_or_else(|| panic!("no certificate fingerprint in {:?}", server.lines))
        .trim()
        .to_string();
    let page = format!("{base}/healthz");
    let page_args = |channel: &'static str, mode: &'static str| {
        let mut cmd = node(
            &chromium,
            &script,
            &base,
            &["--page", &page, "--url", &url, "--hash", &hash],
        );
        cmd.args(["--channel", channel, "--mode", mode]);
        cmd
    };
    let connections = || {
        let (_, m) = crate::common::http_get(http, "/metrics");
        metric(&m, "switchboard_hub_connections")
    };

    // (1) The page closes its session; the hub connection must go with it.
    let mut cmd = page_args("wt-browser-close", "close");
    cmd.stdin(Stdio::piped());
    let mut browser = Script::spawn(&mut cmd);
    let mut stdin = browser.child.stdin.take().expect("stdin");
    let ready = json_after(
        &browser.wait_line("READY ", Duration::from_secs(60)),
        "READY ",
    );
    assert_eq!(ready["subscribed"], true, "{ready}");
    assert_eq!(presence_clients(http, "wt-browser-close"), 1, "{ready}");
    assert_eq!(connections(), 1.0);
    writeln!(stdin, "close").expect("tell the page to close");
    let closed = json_after(
        &browser.wait_line("CLOSED ", Duration::from_secs(30)),
        "CLOSED ",
    );
    assert_eq!(
        closed["closed"]["resolved"], true,
        "the page's own close: {closed}"
    );
    let started = Instant::now();
    let mut left = (u64::MAX, f64::MAX);
    while started.elapsed() < Duration::from_secs(2) {
        left = (presence_clients(http, "wt-browser-close"), connections());
        if left == (0, 0.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        left,
        (0, 0.0),
        "(presence, hub connections) {:?} after the page closed its WebTransport session\n{}",
        started.elapsed(),
        browser.output()
    );
    eprintln!(
        "hub connection gone {:?} after the page's close()",
        started.elapsed()
    );
    drop(stdin);
    assert!(
        browser.finish(Duration::from_secs(30)).success(),
        "{}",
        browser.output()
    );

    // (2) The server stops while a page holds a session: a clean close for the page.
    let mut browser = Script::spawn(&mut page_args("wt-browser-hold", "hold"));
    let ready = json_after(
        &browser.wait_line("READY ", Duration::from_secs(60)),
        "READY ",
    );
    assert_eq!(ready["subscribed"], true, "{ready}");
    assert!(server.stop().success(), "switchboard did not exit cleanly");
    let result = json_after(
        &browser.wait_line("RESULT ", Duration::from_secs(30)),
        "RESULT ",
    );
    let closed = &result["closed"];
    assert!(
        closed["resolved"] == true && closed["closeCode"] == 3001,
        "the page's `closed` after a server shutdown: {result}\n{}",
        browser.output()
    );
    let last = result["frames"].as_array().and_then(|f| f.last());
    assert_eq!(
        last.map(|f| &f["disconnect"]),
        Some(&Value::from(3001)),
        "the stream's last frame before the close: {result}"
    );
    assert!(
        browser.finish(Duration::from_secs(30)).success(),
        "{}",
        browser.output()
    );
}
