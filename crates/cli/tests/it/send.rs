//! `switchboard send` → `switchboard receive`, both CLIs on loopback paired through a real
//! server: directly, forced through the server's TURN relay (`--relay-only` on both sides;
//! over UDP, and over TCP and TLS to a server without a UDP TURN listener),
//! standard input to standard output, a wrong code failing cleanly on both sides, and a code
//! nobody is waiting under failing within seconds. Contents are compared byte for byte and the
//! SHA-256 the receiver reports is checked.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{bytes, sha256_hex, Server, TestServer, BIN};

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
    let (rlines, slines) = send_and_receive(&url, &sargs, &rargs);
    let want = if relay_only { "relay" } else { "direct" };
    for lines in [&rlines, &slines] {
        let c = events(lines, "connected");
        assert_eq!(c.len(), 1, "{lines:?}");
        assert_eq!(c[0]["route"], want, "{lines:?}");
        if relay_only {
            // UDP first: the server lists it, and it works.
            assert_eq!(c[0]["turn_transport"], "udp", "{lines:?}");
        }
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

/// `send` with `sargs`, then `receive` of its code with `rargs`; both must succeed. Their JSON
/// lines: (receiver's, sender's).
fn send_and_receive(url: &str, sargs: &[&str], rargs: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut sender = Sender::start(url, sargs, None);
    let code = sender.code();
    let r = receive(url, &code, rargs);
    let rout = String::from_utf8_lossy(&r.stdout).to_string();
    let rerr = String::from_utf8_lossy(&r.stderr).to_string();
    let (status, slines, serr) = sender.finish();
    assert!(
        r.status.success(),
        "receive: {rout}\n{rerr}\nsend: {slines:?}\n{serr}"
    );
    assert!(status.success(), "send: {slines:?}\n{serr}");
    (lines(&rout), slines)
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

/// Both sides `--relay-only` against a server whose TURN listens on TCP (`tcp`) or TLS (`tls`)
/// only — no UDP listener, so `/v1/ice-servers` lists no UDP TURN URL — and the relay is
/// allocated over that stream (the relayed address still UDP).
fn transfer_through_turn_over(transport: &str) {
    let dir = tmp(&format!("turn-{transport}"));
    let server = TestServer::new()
        .http()
        .flag("--turn-realm", "send.test")
        .flag("--turn-secret", "send-secret")
        .flag("--allow-peer", "127.0.0.0/8")
        // Relays bind to the first UDP STUN address unless told: there is none.
        .flag("--relay-ip", "127.0.0.1");
    let (server, tls_args) = if transport == "tls" {
        let (cert, key, _) = crate::common::make_cert(&dir, "turn");
        let server = server
            .stun_tls()
            .flag("--tls-cert", cert.to_str().unwrap())
            .flag("--tls-key", key.to_str().unwrap());
        // The certificate is for localhost, the URLs name 127.0.0.1.
        (server, vec!["--insecure"])
    } else {
        (server.stun_tcp(), vec![])
    };
    let server = server.start();
    let url = format!("http://{}", server.addr("http", "tcp"));
    let (status, body) = crate::common::http_get(server.addr("http", "tcp"), "/v1/ice-servers");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("transport=udp"), "{body}");
    let scheme = if transport == "tls" {
        "turns:"
    } else {
        "turn:"
    };
    assert!(body.contains(scheme), "{body}");
    let data = bytes(600_000, 7);
    let file = dir.join("f.bin");
    std::fs::write(&file, &data).unwrap();
    let out = dir.join("out");
    let mut sargs = vec![file.to_str().unwrap(), "--relay-only"];
    sargs.extend(&tls_args);
    let mut rargs = vec!["--output", out.to_str().unwrap(), "--json", "--relay-only"];
    rargs.extend(&tls_args);
    let (rlines, slines) = send_and_receive(&url, &sargs, &rargs);
    for lines in [&rlines, &slines] {
        let c = events(lines, "connected");
        assert_eq!(c.len(), 1, "{lines:?}");
        assert_eq!(c[0]["route"], "relay", "{lines:?}");
        assert_eq!(c[0]["local_type"], "relay", "{lines:?}");
        assert_eq!(c[0]["turn_transport"], transport, "{lines:?}");
    }
    assert_eq!(std::fs::read(out.join("f.bin")).unwrap(), data);
    let files = events(&rlines, "file");
    assert_eq!(files.len(), 1, "{rlines:?}");
    assert_eq!(files[0]["sha256"], sha256_hex(&data));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn send_receive_through_turn_over_tcp() {
    transfer_through_turn_over("tcp");
}

#[test]
fn send_receive_through_turn_over_tls() {
    transfer_through_turn_over("tls");
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

// --- `--manual`: no server; the offer and answer pass through files -------------------------

/// A child process whose output is collected; killed when dropped (a failing test leaves no
/// process behind).
struct Proc {
    child: Child,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Proc {
    fn start(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let drain = |mut p: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut b = Vec::new();
                let _ = p.read_to_end(&mut b);
                b
            })
        };
        let out = child.stdout.take().map(|p| drain(Box::new(p)));
        let err = child.stderr.take().map(|p| drain(Box::new(p)));
        Proc { child, out, err }
    }

    /// Waits at most `limit`: (exit code, stdout, stderr); kills it after that.
    fn finish(mut self, limit: Duration) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let take = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
            h.and_then(|h| h.join().ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let (out, err) = (take(self.out.take()), take(self.err.take()));
        let Some(status) = status else {
            panic!("did not finish within {limit:?}\nstdout: {out}\nstderr: {err}");
        };
        (status.code(), out, err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `switchboard send|receive --manual` on loopback; nothing listens at `--server`.
fn manual_cli(verb: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args([verb, "--manual", "--host-ip", "127.0.0.1", "--json"])
        .args(["--server", "http://127.0.0.1:1"])
        .args(args);
    c
}

/// `switchboard receive --manual` through the offer and answer files, into `out`.
fn manual_receiver(offer: &Path, answer: &Path, out: &Path) -> Proc {
    let (o, a, out) = (offer.to_str(), answer.to_str(), out.to_str());
    let (o, a, out) = (o.unwrap(), a.unwrap(), out.unwrap());
    let args = ["--offer-file", o, "--answer-file", a, "--output", out];
    Proc::start(&mut manual_cli("receive", &args))
}

/// `switchboard send --manual` through the offer and answer files, sending `paths`.
fn manual_sender(offer: &Path, answer: &Path, paths: &[&Path]) -> Proc {
    let (o, a) = (offer.to_str().unwrap(), answer.to_str().unwrap());
    let mut args = vec!["--offer-file", o, "--answer-file", a];
    args.extend(paths.iter().map(|p| p.to_str().unwrap()));
    Proc::start(&mut manual_cli("send", &args))
}

/// Waits until `path` exists, at most `limit`.
fn wait_for_file(path: &Path, limit: Duration) {
    let t = Instant::now();
    while !path.exists() {
        assert!(t.elapsed() < limit, "no {}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `first` (named, up to `wait`), then for `second` (up to `then`): both must exit 0.
/// Their stdouts.
fn both_succeed(
    first: (&str, Proc),
    second: (&str, Proc),
    wait: Duration,
    then: Duration,
) -> (String, String) {
    let ((n1, p1), (n2, p2)) = (first, second);
    let (c1, out1, err1) = p1.finish(wait);
    let (c2, out2, err2) = p2.finish(then);
    assert_eq!(c1, Some(0), "{n1}: {out1}\n{err1}\n{n2}: {out2}\n{err2}");
    assert_eq!(c2, Some(0), "{n2}: {out2}\n{err2}");
    (out1, out2)
}

/// The aiortc peer (tests/peers/transfer_aiortc.py) on loopback.
fn aiortc_peer(mode: &str, offer: &Path, answer: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(crate::common::venv_python());
    c.arg(crate::common::peer_script("transfer_aiortc.py"))
        .arg(mode)
        .arg("--offer-file")
        .arg(offer)
        .arg("--answer-file")
        .arg(answer)
        .args(["--host-ip", "127.0.0.1"])
        .args(args);
    c
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_owned).collect()
}

/// A file, a tree with an empty file and one of two chunks, under `dir`; what they hold.
fn sample(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let files = vec![
        ("big.bin", bytes(1_000_000, 7)),
        ("tree/a.txt", b"alpha\n".to_vec()),
        ("tree/sub/b.bin", bytes(70_000, 8)),
        ("tree/sub/empty", Vec::new()),
    ];
    for (p, data) in &files {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    files
}

/// Everything arrived under `out`, byte for byte, and each reported hash is the content's.
fn check_received(out: &Path, files: &[(&str, Vec<u8>)], reported: &[serde_json::Value]) {
    assert_eq!(reported.len(), files.len(), "{reported:?}");
    for (p, data) in files {
        let got = std::fs::read(out.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(got == *data, "{p} differs");
        let r = reported
            .iter()
            .find(|f| f["path"] == *p)
            .unwrap_or_else(|| panic!("{p} not reported: {reported:?}"));
        assert_eq!(r["sha256"], sha256_hex(data), "{p}");
        assert_eq!(r["size"], data.len(), "{p}");
    }
}

#[test]
fn manual_cli_to_cli_through_files() {
    let t = Instant::now();
    let dir = tmp("manual-cli");
    let files = sample(&dir);
    let (offer, answer, out) = (dir.join("offer"), dir.join("answer"), dir.join("out"));
    let (big, tree) = (dir.join("big.bin"), dir.join("tree"));
    let sender = manual_sender(&offer, &answer, &[&big, &tree]);
    // Started at once: the receiver waits for the offer file.
    let receiver = manual_receiver(&offer, &answer, &out);
    let (rout, sout) = both_succeed(
        ("receive", receiver),
        ("send", sender),
        Duration::from_secs(45),
        Duration::from_secs(10),
    );
    let (slines, rlines) = (lines(&sout), lines(&rout));
    // The texts shown are the files' contents, and they are short.
    let o_event = &events(&slines, "offer")[0];
    let a_event = &events(&rlines, "answer")[0];
    let o_text = o_event["offer"].as_str().unwrap();
    let a_text = a_event["answer"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(&offer).unwrap().trim(), o_text);
    assert_eq!(std::fs::read_to_string(&answer).unwrap().trim(), a_text);
    assert!(o_text.starts_with("sb1:") && o_text.len() < 200, "{o_text}");
    assert!(a_text.starts_with("sb1:") && a_text.len() < 200, "{a_text}");
    assert_eq!(
        o_event["candidates"][0].as_str().unwrap().split(' ').next(),
        Some("host")
    );
    for l in [&slines, &rlines] {
        assert_eq!(events(l, "connected")[0]["route"], "direct", "{l:?}");
    }
    check_received(&out, &files, &events(&rlines, "file"));
    assert_eq!(events(&slines, "file").len(), 4);
    assert_eq!(events(&rlines, "done")[0]["bytes"], 1_000_000 + 6 + 70_000);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "manual CLI -> CLI in {:?} (data phase {} s)",
        t.elapsed(),
        events(&rlines, "done")[0]["seconds"]
    );
}

#[test]
fn manual_cli_to_aiortc() {
    let t = Instant::now();
    let dir = tmp("manual-to-aiortc");
    let files = sample(&dir);
    let (offer, answer, out) = (dir.join("offer"), dir.join("answer"), dir.join("out"));
    std::fs::create_dir_all(&out).unwrap();
    let (big, tree) = (dir.join("big.bin"), dir.join("tree"));
    let sender = manual_sender(&offer, &answer, &[&big, &tree]);
    let peer = Proc::start(&mut aiortc_peer(
        "receive",
        &offer,
        &answer,
        &["--output", out.to_str().unwrap()],
    ));
    let (pout, sout) = both_succeed(
        ("aiortc", peer),
        ("send", sender),
        Duration::from_secs(50),
        Duration::from_secs(10),
    );
    let result: serde_json::Value = serde_json::from_str(pout.trim()).expect("aiortc's JSON line");
    // aiortc checked every chunk and file hash against C and E; what it kept is what was sent,
    // and the hashes it computed are the sender's.
    let reported = result["files"].as_array().unwrap();
    check_received(&out, &files, reported);
    let sent = events(&lines(&sout), "file");
    for f in reported {
        assert!(
            sent.iter()
                .any(|s| s["path"] == f["path"] && s["sha256"] == f["sha256"]),
            "{f} not among the sender's {sent:?}"
        );
    }
    assert_eq!(
        result["pair"]["remote"].as_str().unwrap().split(' ').next(),
        Some("host")
    );
    assert_eq!(events(&lines(&sout), "connected")[0]["route"], "direct");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("manual CLI -> aiortc in {:?}", t.elapsed());
}

#[test]
fn manual_aiortc_to_cli() {
    let t = Instant::now();
    let dir = tmp("manual-from-aiortc");
    let files = sample(&dir);
    let (offer, answer, out) = (dir.join("offer"), dir.join("answer"), dir.join("out"));
    let big = dir.join("big.bin");
    let tree = dir.join("tree");
    let peer = Proc::start(&mut aiortc_peer(
        "send",
        &offer,
        &answer,
        &[big.to_str().unwrap(), tree.to_str().unwrap()],
    ));
    let receiver = manual_receiver(&offer, &answer, &out);
    let (rout, pout) = both_succeed(
        ("receive", receiver),
        ("aiortc", peer),
        Duration::from_secs(50),
        Duration::from_secs(10),
    );
    let rlines = lines(&rout);
    check_received(&out, &files, &events(&rlines, "file"));
    // aiortc had every file acknowledged (A) and then K.
    let result: serde_json::Value = serde_json::from_str(pout.trim()).expect("aiortc's JSON line");
    assert_eq!(result["acked"].as_array().unwrap().len(), 4, "{result}");
    assert_eq!(events(&rlines, "connected")[0]["route"], "direct");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("manual aiortc -> CLI in {:?}", t.elapsed());
}

#[test]
fn manual_aiortc_with_a_wrong_file_hash_is_refused() {
    let dir = tmp("manual-corrupt");
    let data = bytes(200_000, 9);
    std::fs::write(dir.join("c.bin"), &data).unwrap();
    let (offer, answer, out) = (dir.join("offer"), dir.join("answer"), dir.join("out"));
    let peer = Proc::start(&mut aiortc_peer(
        "send",
        &offer,
        &answer,
        &["--corrupt", dir.join("c.bin").to_str().unwrap()],
    ));
    let receiver = manual_receiver(&offer, &answer, &out);
    let (rcode, rout, rerr) = receiver.finish(Duration::from_secs(50));
    let (pcode, pout, perr) = peer.finish(Duration::from_secs(10));
    assert_eq!(
        rcode,
        Some(6),
        "receive: {rout}\n{rerr}\naiortc: {pout}\n{perr}"
    );
    assert_eq!(events(&lines(&rout), "error")[0]["kind"], "integrity");
    assert!(rerr.contains("integrity check failed: c.bin"), "{rerr}");
    // The receiver told aiortc why (X), and kept nothing.
    assert_eq!(pcode, Some(1), "aiortc: {pout}\n{perr}");
    assert!(perr.contains("integrity check failed"), "{perr}");
    let left: Vec<_> = if out.exists() { walk(&out) } else { Vec::new() };
    assert!(left.is_empty(), "{left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn manual_malformed_offer_and_answer_exit_2() {
    let dir = tmp("manual-malformed");
    std::fs::write(dir.join("f.txt"), b"x").unwrap();
    let recv = |args: &[&str]| {
        crate::common::run(
            manual_cli("receive", args).stdin(Stdio::null()),
            Duration::from_secs(20),
        )
    };
    // Not sb1: text; cut short; an answer where the offer goes; --relay-only without a server.
    let r = recv(&["hello"]);
    assert_eq!(r.status.code(), Some(2), "{}", crate::common::text(&r));
    assert!(String::from_utf8_lossy(&r.stderr).contains("malformed offer"));
    let r = recv(&["sb1:TwB8MO5k9wa01Owxvey"]);
    assert_eq!(r.status.code(), Some(2), "{}", crate::common::text(&r));
    assert!(String::from_utf8_lossy(&r.stderr).contains("cut short"));
    assert_eq!(
        events(&lines(&String::from_utf8_lossy(&r.stdout)), "error")[0]["kind"],
        "usage"
    );
    // A sender's offer, then a malformed answer in its answer file.
    let (offer, answer) = (dir.join("offer"), dir.join("answer"));
    std::fs::write(&answer, "an old answer\n").unwrap();
    let sender = manual_sender(&offer, &answer, &[&dir.join("f.txt")]);
    wait_for_file(&offer, Duration::from_secs(15));
    let offer_text = std::fs::read_to_string(&offer).unwrap();
    let r = recv(&[offer_text.trim().replacen("sb1:Tw", "sb1:QQ", 1).as_str()]);
    assert_eq!(r.status.code(), Some(2), "{}", crate::common::text(&r));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("this is an answer, not an offer"),
        "{}",
        crate::common::text(&r)
    );
    // The sender took the file's old content for stale and waits; an offer is no answer.
    std::fs::write(&answer, &offer_text).unwrap();
    let (code, out, err) = sender.finish(Duration::from_secs(15));
    assert_eq!(code, Some(2), "{out}\n{err}");
    assert!(err.contains("this is an offer, not an answer"), "{err}");
    let r = crate::common::run(
        manual_cli(
            "send",
            &["--relay-only", dir.join("f.txt").to_str().unwrap()],
        )
        .stdin(Stdio::null()),
        Duration::from_secs(20),
    );
    assert_eq!(r.status.code(), Some(2), "{}", crate::common::text(&r));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A child whose stdout lines arrive on a channel as they are printed; killed when dropped.
struct Lines {
    child: Child,
    lines: mpsc::Receiver<String>,
    err: Option<std::thread::JoinHandle<String>>,
}

impl Lines {
    fn start(cmd: &mut Command) -> Lines {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let err = Some(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        }));
        Lines { child, lines, err }
    }

    /// The first line starting with `word `, its rest.
    fn expect(&self, word: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(&format!("{word} ")) {
                        return rest.to_string();
                    }
                }
                Err(_) => panic!("no `{word} ...` line"),
            }
        }
    }

    /// Waits at most `limit`: (exit code, stderr).
    fn finish(mut self, limit: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + limit;
        let code = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let err = self.err.take().and_then(|h| h.join().ok());
                panic!("did not finish within {limit:?}: {err:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = self
            .err
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (code, err)
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The way a person uses it, without files or `--json`: the sender's offer given as the
/// receiver's argument, the receiver's whole `answer sb1:…` line pasted on the sender's stdin.
#[test]
fn manual_offer_as_argument_and_answer_on_stdin() {
    let dir = tmp("manual-stdin");
    let data = bytes(300_000, 10);
    std::fs::write(dir.join("s.bin"), &data).unwrap();
    let out = dir.join("out");
    let plain = |verb: &str| {
        let mut c = Command::new(BIN);
        c.args([verb, "--manual", "--host-ip", "127.0.0.1"]);
        c
    };
    let mut sender = Lines::start(plain("send").arg(dir.join("s.bin")));
    let offer = sender.expect("offer");
    assert!(offer.starts_with("sb1:"), "{offer}");
    let receiver = Lines::start(plain("receive").arg(&offer).arg("--output").arg(&out));
    let answer = receiver.expect("answer");
    let mut stdin = sender.child.stdin.take().unwrap();
    writeln!(stdin, "\nanswer {answer}").unwrap();
    let (rcode, rerr) = receiver.finish(Duration::from_secs(40));
    let (scode, serr) = sender.finish(Duration::from_secs(10));
    assert_eq!(rcode, Some(0), "receive: {rerr}\nsend: {serr}");
    assert_eq!(scode, Some(0), "send: {serr}");
    assert!(std::fs::read(out.join("s.bin")).unwrap() == data);
    assert!(serr.contains("connected directly"), "{serr}");
    assert!(
        rerr.contains(&format!("s.bin 300000 bytes sha256 {}", sha256_hex(&data))),
        "{rerr}"
    );
    // Not a terminal: no QR code.
    assert!(
        !serr.contains('\u{2588}') && !rerr.contains('\u{2588}'),
        "{serr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The receiver comes 42 s after the offer was printed (someone walks to the other machine):
/// the sender's DTLS starts from the time the answer arrives, not from gathering (str0m's DTLS
/// handshake deadline is 40 s). About 45 s.
#[test]
fn manual_receiver_starting_late() {
    let dir = tmp("manual-late");
    let data = bytes(200_000, 11);
    std::fs::write(dir.join("late.bin"), &data).unwrap();
    let (offer, answer, out) = (dir.join("offer"), dir.join("answer"), dir.join("out"));
    let sender = manual_sender(&offer, &answer, &[&dir.join("late.bin")]);
    wait_for_file(&offer, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(42));
    let receiver = manual_receiver(&offer, &answer, &out);
    both_succeed(
        ("receive", receiver),
        ("send", sender),
        Duration::from_secs(15),
        Duration::from_secs(5),
    );
    assert!(std::fs::read(out.join("late.bin")).unwrap() == data);
    let _ = std::fs::remove_dir_all(&dir);
}

// --- resume: a part kept from an interrupted transfer ----------------------------------------

/// The part and its record for `name` under `out`.
fn part_of(out: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        out.join(format!(".{name}.switchboard-part")),
        out.join(format!(".{name}.switchboard-part.json")),
    )
}

/// Deterministic bytes, eight a step (`bytes` takes a second for 48 MiB in a debug build).
fn many_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).max(1);
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// The sender is killed (SIGKILL) in the middle of a 48 MiB file: the receiver fails with a
/// message saying what it kept, and keeps the part with a record of its verified length. The
/// same file sent again resumes there: only the rest moves, and the file is whole. About 15 s.
#[test]
fn an_interrupted_transfer_resumes_from_the_last_verified_chunk() {
    const SIZE: usize = 48 << 20;
    let t = Instant::now();
    let (_server, url) = server();
    let dir = tmp("resume");
    let data = many_bytes(SIZE, 21);
    let src = dir.join("big.bin");
    std::fs::write(&src, &data).unwrap();
    let out = dir.join("out");
    let (part, record) = part_of(&out, "big.bin");

    // First: the sender dies between 20 % and 80 %.
    let mut sender = Sender::start(&url, &[src.to_str().unwrap()], None);
    let code = sender.code();
    let receiver = Lines::start(
        Command::new(BIN)
            .args(["receive", &code, "--json", "--server", &url, "--output"])
            .arg(&out),
    );
    let mut first = Vec::new();
    let killed_at = loop {
        let l = receiver
            .lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no progress from the receiver: {first:?}"));
        first.push(l.clone());
        let v: serde_json::Value = serde_json::from_str(&l).expect("JSON line");
        assert_ne!(
            v["event"], "file",
            "finished before it could be killed: {first:?}"
        );
        if v["event"] != "progress" {
            continue;
        }
        let done = v["done"].as_u64().unwrap();
        assert!(
            done * 5 < SIZE as u64 * 4,
            "past 80 % at the first look, too fast to interrupt: {first:?}"
        );
        if done * 5 > SIZE as u64 {
            sender.child.kill().unwrap();
            let _ = sender.child.wait();
            break done;
        }
    };
    // The receiver gives up on its own (the sender went silent) and says what it kept.
    let start = Instant::now();
    first.extend(std::iter::from_fn(|| {
        receiver.lines.recv_timeout(Duration::from_secs(30)).ok()
    }));
    let (rcode, rerr) = receiver.finish(Duration::from_secs(5));
    eprintln!("the receiver gave up {:?} after the kill", start.elapsed());
    assert_eq!(rcode, Some(1), "{first:?}\n{rerr}");
    assert!(
        rerr.contains("of big.bin kept") && rerr.contains("to resume"),
        "{rerr}"
    );
    assert_eq!(events(&first, "error")[0]["kind"], "peer", "{first:?}");
    assert!(!out.join("big.bin").exists());
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).expect("the part's record")).unwrap();
    let verified = rec["verified"].as_u64().unwrap();
    assert_eq!(rec["path"], "big.bin", "{rec}");
    assert_eq!(rec["size"], SIZE, "{rec}");
    assert!(verified > 0 && verified.is_multiple_of(65536), "{rec}");
    assert!(
        verified >= killed_at - killed_at % 65536,
        "{verified} < {killed_at}"
    );
    assert!(std::fs::metadata(&part).unwrap().len() >= verified);
    assert!(std::fs::read(&part).unwrap()[..verified as usize] == data[..verified as usize]);

    // Again: it resumes where the record says, and only the rest moves.
    let mut sender = Sender::start(&url, &[src.to_str().unwrap()], None);
    let code = sender.code();
    let r = receive(&url, &code, &["--output", out.to_str().unwrap(), "--json"]);
    let (status, slines, serr) = sender.finish();
    let rout = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(
        r.status.success(),
        "{rout}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(status.success(), "{slines:?}\n{serr}");
    let rlines = lines(&rout);
    let resume = &events(&rlines, "resume");
    assert_eq!(resume.len(), 1, "{rlines:?}");
    assert_eq!(resume[0]["path"], "big.bin");
    let offset = resume[0]["offset"].as_u64().unwrap();
    assert!(offset > 0 && offset.is_multiple_of(65536), "{offset}");
    assert_eq!(offset, verified);
    assert_eq!(events(&slines, "resume")[0]["offset"], offset, "{slines:?}");
    // Byte for byte (a SHA-256 of 48 MiB takes seconds in a debug build), and the whole-file
    // hash the receiver checked is the one the sender computed.
    let got = std::fs::read(out.join("big.bin")).unwrap();
    assert!(got == data, "the resumed file differs");
    let (rfile, sfile) = (&events(&rlines, "file")[0], &events(&slines, "file")[0]);
    assert_eq!(rfile["sha256"], sfile["sha256"]);
    assert_eq!(rfile["size"], SIZE);
    // Fewer bytes moved than the file holds: exactly what was not kept.
    for lines in [&rlines, &slines] {
        let done = &events(lines, "done")[0];
        assert_eq!(done["bytes"], SIZE as u64 - offset, "{done}");
        assert_eq!(done["resumed"], offset, "{done}");
    }
    // Progress started from what was kept.
    let progress = events(&rlines, "progress");
    assert!(
        progress[0]["done"].as_u64().unwrap() >= offset,
        "{progress:?}"
    );
    assert!(!part.exists() && !record.exists());
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("interrupted and resumed in {:?}", t.elapsed());
}

/// Parts made by hand next to where a file is received: resumed when the record matches the
/// sender's path, size and mtime; started from zero (and replaced) when the mtime differs, and
/// with `--no-resume` even when it matches.
#[test]
fn kept_parts_resume_only_when_they_match() {
    const CHUNK: usize = 65536;
    let (_server, url) = server();
    let dir = tmp("resume-match");
    let data = bytes(20 * CHUNK + 123, 22);
    let src = dir.join("f.bin");
    std::fs::write(&src, &data).unwrap();
    let mtime = std::fs::metadata(&src)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // 8 chunks verified; some bytes after them that the record does not claim.
    let kept = 8 * CHUNK;
    let setup = |out: &Path, mtime: u64| {
        std::fs::create_dir_all(out).unwrap();
        let (part, record) = part_of(out, "f.bin");
        let mut p = data[..kept].to_vec();
        p.extend_from_slice(b"not verified");
        std::fs::write(part, p).unwrap();
        let rec = serde_json::json!({"v": 1, "path": "f.bin", "size": data.len(),
            "mtime": mtime, "verified": kept});
        std::fs::write(record, rec.to_string()).unwrap();
    };
    let run = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut sender = Sender::start(&url, &[src.to_str().unwrap()], None);
        let code = sender.code();
        let mut args = vec!["--output", out.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        let r = receive(&url, &code, &args);
        let (status, slines, serr) = sender.finish();
        let rout = String::from_utf8_lossy(&r.stdout).to_string();
        assert!(
            r.status.success(),
            "{rout}\n{}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert!(status.success(), "{slines:?}\n{serr}");
        assert!(std::fs::read(out.join("f.bin")).unwrap() == data);
        let (part, record) = part_of(out, "f.bin");
        assert!(!part.exists() && !record.exists());
        lines(&rout)
    };
    let moved = |l: &[String]| events(l, "done")[0]["bytes"].as_u64().unwrap();

    let matching = dir.join("matching");
    setup(&matching, mtime);
    let l = run(&matching, &[]);
    assert_eq!(events(&l, "resume")[0]["offset"], kept, "{l:?}");
    assert_eq!(moved(&l), (data.len() - kept) as u64);

    let changed = dir.join("changed");
    setup(&changed, mtime + 1);
    let l = run(&changed, &[]);
    assert!(events(&l, "resume").is_empty(), "{l:?}");
    assert_eq!(moved(&l), data.len() as u64);

    let refused = dir.join("refused");
    setup(&refused, mtime);
    let l = run(&refused, &["--no-resume"]);
    assert!(events(&l, "resume").is_empty(), "{l:?}");
    assert_eq!(moved(&l), data.len() as u64);
    let _ = std::fs::remove_dir_all(&dir);
}
