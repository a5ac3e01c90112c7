//! `switchboard send` → `switchboard receive`, both CLIs on loopback paired through a real
//! server: directly, forced through the server's TURN relay (`--relay-only` on both sides),
//! standard input to standard output, a wrong code failing cleanly on both sides, and a code
//! nobody is waiting under failing within seconds. Contents are compared byte for byte and the
//! SHA-256 the receiver reports is checked.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{Server, TestServer, BIN};

fn server() -> (Server, String) {
    let s = TestServer::new()
        .stun_udp()
        .http()
        .flag("--turn-realm", "send.test")
        .flag("--turn-secret", "send-secret")
        // The relayed peers are loopback addresses here.
        .flag("--allow-peer", "127.0.0.0/8")
        .start();
    let url = format!("http://{}", s.addr("http", "tcp"));
    (s, url)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sb-send-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Deterministic bytes (no two files alike).
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A running `switchboard send --json`, its stdout lines on a channel.
struct Sender {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Sender {
    fn start(url: &str, args: &[&str], stdin: Option<Vec<u8>>) -> Sender {
        let mut child = Command::new(BIN)
            .arg("send")
            .args(args)
            .args(["--server", url, "--json"])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn send");
        if let Some(data) = stdin {
            let mut w = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                let _ = w.write_all(&data);
            });
        }
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Sender {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The code from the first status line.
    fn code(&mut self) -> String {
        let l = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the sender prints a code");
        self.seen.push(l.clone());
        let v: serde_json::Value = serde_json::from_str(&l).expect("JSON line");
        assert_eq!(v["event"], "code", "{l}");
        v["code"].as_str().unwrap().to_string()
    }

    /// Waits for the exit: (status, stdout lines, stderr).
    fn finish(mut self) -> (std::process::ExitStatus, Vec<String>, String) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the sender did not finish");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(100));
        self.seen.extend(self.lines.try_iter());
        let mut err = String::new();
        use std::io::Read;
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        (status, self.seen, err)
    }
}

fn receive(url: &str, code: &str, args: &[&str]) -> std::process::Output {
    crate::common::run(
        Command::new(BIN)
            .args(["receive", code])
            .args(args)
            .args(["--server", url])
            .stdin(Stdio::null()),
        Duration::from_secs(90),
    )
}

fn events(lines: &[String], event: &str) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == event)
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn transfer(relay_only: bool) {
    let (_server, url) = server();
    let dir = tmp(if relay_only { "relay" } else { "direct" });
    let big = bytes(1_500_000, 1);
    std::fs::write(dir.join("big.bin"), &big).unwrap();
    std::fs::create_dir_all(dir.join("tree/sub")).unwrap();
    std::fs::write(dir.join("tree/a.txt"), b"alpha\n").unwrap();
    std::fs::write(dir.join("tree/sub/b.bin"), bytes(70_000, 2)).unwrap();
    std::fs::write(dir.join("tree/sub/empty"), b"").unwrap();
    let out = dir.join("out");
    let big_path = dir.join("big.bin");
    let tree_path = dir.join("tree");
    let mut sargs = vec![big_path.to_str().unwrap(), tree_path.to_str().unwrap()];
    let mut rargs = vec!["--output", out.to_str().unwrap(), "--json"];
    if relay_only {
        sargs.push("--relay-only");
        rargs.push("--relay-only");
    }
    let mut sender = Sender::start(&url, &sargs, None);
    let code = sender.code();
    let r = receive(&url, &code, &rargs);
    let rout = String::from_utf8_lossy(&r.stdout).to_string();
    let rerr = String::from_utf8_lossy(&r.stderr).to_string();
    let (status, slines, serr) = sender.finish();
    assert!(
        r.status.success(),
        "receive: {rout}\n{rerr}\nsend: {slines:?}\n{serr}"
    );
    assert!(status.success(), "send: {slines:?}\n{serr}");
    let rlines: Vec<String> = rout.lines().map(str::to_owned).collect();
    let want = if relay_only { "relay" } else { "direct" };
    for lines in [&rlines, &slines] {
        let c = events(lines, "connected");
        assert_eq!(c.len(), 1, "{lines:?}");
        assert_eq!(c[0]["route"], want, "{lines:?}");
    }
    // Everything arrived, byte for byte, with the hashes the receiver reported.
    assert_eq!(std::fs::read(out.join("big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(out.join("tree/a.txt")).unwrap(), b"alpha\n");
    assert_eq!(
        std::fs::read(out.join("tree/sub/b.bin")).unwrap(),
        bytes(70_000, 2)
    );
    assert_eq!(std::fs::read(out.join("tree/sub/empty")).unwrap(), b"");
    let files = events(&rlines, "file");
    assert_eq!(files.len(), 4, "{rlines:?}");
    let big_event = files.iter().find(|f| f["path"] == "big.bin").unwrap();
    assert_eq!(big_event["sha256"], sha256_hex(&big));
    assert_eq!(events(&rlines, "done")[0]["bytes"], 1_500_000 + 6 + 70_000);
    // No partial files left behind.
    let leftovers: Vec<_> = walk(&out)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("switchboard-part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(d).unwrap().map_while(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            v.extend(walk(&p));
        }
        v.push(p);
    }
    v
}

#[test]
fn send_receive_direct_on_loopback() {
    transfer(false);
}

#[test]
fn send_receive_forced_through_turn() {
    transfer(true);
}

#[test]
fn stdin_to_stdout() {
    let (_server, url) = server();
    let data = bytes(300_000, 3);
    let mut sender = Sender::start(&url, &["-"], Some(data.clone()));
    let code = sender.code();
    let r = receive(&url, &code, &["-"]);
    let (status, slines, serr) = sender.finish();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(status.success(), "{slines:?}\n{serr}");
    assert_eq!(r.stdout.len(), data.len());
    assert!(r.stdout == data, "stdout differs from what was sent");
}

#[test]
fn wrong_code_fails_on_both_sides() {
    let (_server, url) = server();
    let dir = tmp("wrong");
    std::fs::write(dir.join("secret.txt"), b"not for you").unwrap();
    let p = dir.join("secret.txt");
    let mut sender = Sender::start(&url, &[p.to_str().unwrap()], None);
    let code = sender.code();
    let number = code.split('-').next().unwrap();
    // Right number, wrong words.
    let wrong = if code.ends_with("-acid") {
        format!("{number}-acorn-acorn-acorn")
    } else {
        format!("{number}-acid-acid-acid")
    };
    let out = dir.join("out");
    let r = receive(&url, &wrong, &["--output", out.to_str().unwrap()]);
    let rerr = String::from_utf8_lossy(&r.stderr).to_string();
    assert_eq!(r.status.code(), Some(4), "{rerr}");
    assert!(rerr.contains("wrong code"), "{rerr}");
    let (status, slines, serr) = sender.finish();
    assert_eq!(status.code(), Some(4), "{slines:?}\n{serr}");
    assert!(serr.contains("wrong code"), "{serr}");
    assert_eq!(events(&slines, "error")[0]["kind"], "wrong_code");
    assert!(!out.join("secret.txt").exists());
    // The code is used up: the right code now finds nobody.
    let again = receive(&url, &code, &["--output", out.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no sender is waiting"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_code_nobody_waits_under_fails_within_seconds() {
    let (_server, url) = server();
    let t = Instant::now();
    let r = receive(&url, "999-amber-crane-otter", &[]);
    assert_eq!(r.status.code(), Some(4));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("no sender is waiting under code 999"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}
