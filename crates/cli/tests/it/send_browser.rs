//! `switchboard send` / `receive` with a browser on the other side: the `/send` page in Chromium.
//!
//! * `send_page_is_served_like_the_other_pages`: `/send`, `send.js`, `spake2.js` with the
//!   pages' CSP and caching; the console links to `/send`.
//! * `spake2_js_matches_the_rust_vectors`: `web/spake2.js` (the page's SPAKE2, sealing, codes and
//!   SHA-256) against `crates/transfer/src/seal_vectors.json`, which `seal.rs` computes with the
//!   `spake2` crate from fixed randomness (`tests/browser/spake2_vectors.mjs`, in Node).
//! * `send_page_in_chromium_both_ways_and_wrong_codes`, in a loopback-only network namespace of
//!   its own (like the other browser tests; Chromium driven by `tests/browser/send_e2e.mjs`):
//!   (a) CLI `send` of three files (one of several chunks, one small, one empty) → the page
//!   receiving from its `#code=` link: every download byte-identical (size and SHA-256 of what
//!   Chromium saved), the CLI exits 0 after the page acknowledged everything;
//!   (b) the page sending two files (`setInputFiles`) → CLI `receive CODE --output DIR`: both
//!   arrive byte-identical, the page ends "done";
//!   (c) the page receiving with a wrong code (right number, other words) fails with
//!   `wrong_code` and shows it, the CLI sender exits 4 with a `wrong_code` error event;
//!   (d) the CLI receiving from the page with a wrong code exits 4, the page fails `wrong_code`.
//!   The live pairings prove the JavaScript SPAKE2 and AES-GCM agree with the Rust side; (a)
//!   saves `test-output/screenshots/send.png`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::browser::{get, header, node, prerequisites, tagged_json, Script};
use crate::common::{bytes, isolate_network, repo_root, run, sha256_hex, text, TestServer, BIN};

/// `/send` and its scripts come with the pages' headers (CSP, type, ETag and 304), and the
/// console links to it.
#[test]
fn send_page_is_served_like_the_other_pages() {
    let server = TestServer::new().http().start();
    let http = server.addr("http", "tcp");
    for (path, ty, marker) in [
        ("/send", "text/html; charset=utf-8", "/assets/send.js"),
        (
            "/assets/send.js",
            "text/javascript; charset=utf-8",
            "from \"/sdk/switchboard.js\"",
        ),
        (
            "/assets/spake2.js",
            "text/javascript; charset=utf-8",
            "export class Pake",
        ),
        ("/", "text/html; charset=utf-8", "href=\"/send\""),
    ] {
        let (status, headers, body) = get(http, path, "");
        assert_eq!(status, 200, "GET {path}");
        assert_eq!(header(&headers, "content-type"), ty, "GET {path}");
        assert!(body.contains(marker), "GET {path}: no {marker:?}");
        let csp = header(&headers, "content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-"),
            "GET {path}: {csp}"
        );
        let etag = header(&headers, "etag").to_string();
        let (status, _, _) = get(http, path, &format!("If-None-Match: {etag}\r\n"));
        assert_eq!(status, 304, "GET {path} with If-None-Match {etag}");
    }
}

#[test]
fn spake2_js_matches_the_rust_vectors() {
    crate::common::need("node");
    let out = run(
        Command::new("node").arg(repo_root().join("tests/browser/spake2_vectors.mjs")),
        Duration::from_secs(60),
    );
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("ok ") && t.contains(" checks"),
        "spake2_vectors.mjs failed:\n{t}"
    );
}

fn tmp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sb-send-browser-{}-{name}", std::process::id()))
}

fn tmp(name: &str) -> PathBuf {
    let d = tmp_path(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A running CLI (`send` or `receive` with `--json`): its stdout events on a channel.
struct Cli {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Cli {
    fn start(args: &[&str]) -> Cli {
        let mut child = Command::new(BIN)
            .args(args)
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchboard");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Cli {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next JSON event named `event`, within `limit`.
    fn event(&mut self, event: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if let Ok(v) = serde_json::from_str::<Value>(&l) {
                        if v["event"] == event {
                            return v;
                        }
                    }
                }
                Err(_) => panic!("no {event:?} event within {limit:?}: {:?}", self.seen),
            }
        }
    }

    /// Waits for the exit; the exit code and every stdout line.
    fn finish(mut self, limit: Duration) -> (Option<i32>, Vec<String>, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(300)) {
            self.seen.push(l);
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        (status.and_then(|s| s.code()), self.seen, err)
    }
}

fn result(out: &Output) -> (Value, String) {
    let t = text(out);
    (tagged_json(&t, "RESULT ").unwrap_or(Value::Null), t)
}

/// The code with its last word replaced by another list word.
fn wrong(code: &str) -> String {
    let (head, last) = code.rsplit_once('-').expect("a code has words");
    let other = if last == "otter" { "tulip" } else { "otter" };
    format!("{head}-{other}")
}

fn events(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

#[test]
fn send_page_in_chromium_both_ways_and_wrong_codes() {
    let _heavy = crate::common::heavy();
    let started = Instant::now();
    let (chromium, _) = prerequisites();
    let script = repo_root().join("tests/browser/send_e2e.mjs");
    isolate_network();
    let server = TestServer::new().stun_udp().http().start();
    let base = format!("http://{}", server.addr("http", "tcp"));
    let page = |extra: &[&str]| node(&chromium, &script, &base, extra);

    // (a) CLI -> page.
    let src = tmp("a");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("big.bin", bytes(3 * 1024 * 1024 + 1234, 1)),
        ("notes.txt", b"hello from the command line\n".to_vec()),
        ("empty.bin", Vec::new()),
    ];
    let mut paths = Vec::new();
    for (name, data) in &files {
        let p = src.join(name);
        std::fs::write(&p, data).expect("write source");
        paths.push(p);
    }
    let mut args = vec!["send".to_string()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    args.extend(["--server".into(), base.clone()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut sender = Cli::start(&argv);
    let code = sender.event("code", Duration::from_secs(10))["code"]
        .as_str()
        .expect("code")
        .to_string();
    let out = run(
        &mut page(&[
            "--mode",
            "receive",
            "--code",
            &code,
            "--screenshot",
            "send.png",
            "--deadline-ms",
            "25000",
        ]),
        Duration::from_secs(40),
    );
    let (r, t) = result(&out);
    let (exit, lines, err) = sender.finish(Duration::from_secs(15));
    assert!(
        out.status.success() && r["ok"] == true,
        "(a) the page did not receive:\n{t}\nCLI: {lines:?}\n{err}"
    );
    assert_eq!(exit, Some(0), "(a) CLI send: {lines:?}\n{err}");
    let downloads = r["downloads"].as_array().cloned().unwrap_or_default();
    assert_eq!(downloads.len(), files.len(), "(a) downloads: {r}");
    for (name, data) in &files {
        let d = downloads
            .iter()
            .find(|d| d["path"] == *name)
            .unwrap_or_else(|| panic!("(a) no download of {name}: {r}"));
        assert_eq!(d["size"], data.len(), "(a) {name}: {d}");
        assert_eq!(d["sha256"], sha256_hex(data), "(a) {name}: {d}");
        assert_eq!(d["name"], *name, "(a) {name}: {d}");
        // The hash the page verified is the one the CLI reported for it.
        let page_file = r["state"]["files"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["path"] == *name))
            .unwrap_or_else(|| panic!("(a) {name} not in the page's state: {r}"));
        assert_eq!(page_file["sha256"], sha256_hex(data), "(a) {name}");
        assert!(
            events(&lines).iter().any(|e| e["event"] == "file"
                && e["path"] == *name
                && e["sha256"] == sha256_hex(data)),
            "(a) the CLI did not report {name}: {lines:?}"
        );
    }
    assert!(
        repo_root()
            .join("test-output/screenshots/send.png")
            .is_file(),
        "(a) no screenshot"
    );

    // (b) page -> CLI.
    let src = tmp("b");
    let page_files: Vec<(&str, Vec<u8>)> = vec![
        ("photo.jpg", bytes(1024 * 1024 + 77, 2)),
        ("readme.md", b"# sent from Chromium\n".to_vec()),
    ];
    let mut args = vec![
        "--mode".to_string(),
        "send".into(),
        "--deadline-ms".into(),
        "25000".into(),
    ];
    for (name, data) in &page_files {
        let p = src.join(name);
        std::fs::write(&p, data).expect("write source");
        args.extend(["--file".into(), p.display().to_string()]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut browser = Script::spawn(&mut page(&argv));
    let line = browser.wait_line("CODE ", Duration::from_secs(20));
    let shown: Value = serde_json::from_str(line.trim_start_matches("CODE ")).expect("CODE json");
    let code = shown["code"].as_str().expect("code").to_string();
    assert!(
        shown["link"]
            .as_str()
            .is_some_and(|l| l.ends_with(&format!("/send#code={code}"))),
        "(b) the link carries the code in the fragment: {shown}"
    );
    let dest = tmp("b-out");
    let dest_s = dest.display().to_string();
    let receiver = Cli::start(&["receive", &code, "--output", &dest_s, "--server", &base]);
    let (exit, lines, err) = receiver.finish(Duration::from_secs(20));
    let status = browser.finish(Duration::from_secs(20));
    let out = browser.output();
    let r = tagged_json(&out, "RESULT ").unwrap_or(Value::Null);
    assert_eq!(
        exit,
        Some(0),
        "(b) CLI receive: {lines:?}\n{err}\npage:\n{out}"
    );
    assert!(status.success() && r["ok"] == true, "(b) page:\n{out}");
    for (name, data) in &page_files {
        let got = std::fs::read(dest.join(name)).unwrap_or_default();
        assert!(
            got == *data,
            "(b) {name}: {} bytes arrived, {} sent",
            got.len(),
            data.len()
        );
    }

    // (c) the page receiving with a wrong code.
    let mut sender = Cli::start(&["send", &paths[1].display().to_string(), "--server", &base]);
    let code = sender.event("code", Duration::from_secs(10))["code"]
        .as_str()
        .expect("code")
        .to_string();
    let out = run(
        &mut page(&[
            "--mode",
            "receive",
            "--code",
            &wrong(&code),
            "--expect-error",
            "wrong_code",
            "--deadline-ms",
            "20000",
        ]),
        Duration::from_secs(30),
    );
    let (r, t) = result(&out);
    let (exit, lines, err) = sender.finish(Duration::from_secs(10));
    assert!(out.status.success() && r["ok"] == true, "(c) page:\n{t}");
    assert_eq!(exit, Some(4), "(c) CLI send: {lines:?}\n{err}");
    assert!(
        events(&lines)
            .iter()
            .any(|e| e["event"] == "error" && e["kind"] == "wrong_code"),
        "(c) {lines:?}"
    );

    // (d) the CLI receiving from the page with a wrong code.
    let mut browser = Script::spawn(&mut page(&[
        "--mode",
        "send",
        "--file",
        &paths[1].display().to_string(),
        "--expect-error",
        "wrong_code",
        "--deadline-ms",
        "20000",
    ]));
    let line = browser.wait_line("CODE ", Duration::from_secs(20));
    let shown: Value = serde_json::from_str(line.trim_start_matches("CODE ")).expect("CODE json");
    let code = wrong(shown["code"].as_str().expect("code"));
    let dest = tmp("d-out");
    let dest_s = dest.display().to_string();
    let receiver = Cli::start(&["receive", &code, "--output", &dest_s, "--server", &base]);
    let (exit, lines, err) = receiver.finish(Duration::from_secs(20));
    let status = browser.finish(Duration::from_secs(20));
    let out = browser.output();
    let r = tagged_json(&out, "RESULT ").unwrap_or(Value::Null);
    assert_eq!(
        exit,
        Some(4),
        "(d) CLI receive: {lines:?}\n{err}\npage:\n{out}"
    );
    assert!(status.success() && r["ok"] == true, "(d) page:\n{out}");
    assert!(
        std::fs::read_dir(&dest).map(|d| d.count()).unwrap_or(1) == 0,
        "(d) something was written"
    );
    eprintln!("send_browser: {:?}", started.elapsed());
    for d in ["a", "b", "b-out", "d-out"] {
        let _ = std::fs::remove_dir_all(tmp_path(d));
    }
}
