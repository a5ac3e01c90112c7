//! `switchboard sub/pub/history/presence` (the Rust client, crates/client) against the real
//! server: a subscriber that survives cut connections with no gap and no duplicate, `pub` from
//! standard input through both the client protocol and the server API, and clear errors with
//! documented exit codes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{run, text, TestServer, BIN};

/// A TCP proxy to `to` whose connections can all be cut at once.
struct Proxy {
    addr: SocketAddr,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(to: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let list = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                let mut l = list.lock().unwrap();
                l.push(client.try_clone().unwrap());
                l.push(server.try_clone().unwrap());
                drop(l);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, open }
    }

    /// Cuts every connection through it (both directions, both sides).
    fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// `switchboard sub` with its stdout lines arriving on a channel; killed on drop.
struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Sub {
    fn start(args: &[&str]) -> Sub {
        let mut child = Command::new(BIN)
            .arg("sub")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchboard sub");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr: Arc<Mutex<String>> = Arc::default();
        let err = child.stderr.take().unwrap();
        let keep = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                keep.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Sub {
            child,
            lines,
            stderr,
        }
    }

    /// The next `n` publications' `data.n`.
    fn take(&self, n: usize) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "sub printed {got:?}, then nothing within 20 s; stderr: {}",
                    self.stderr.lock().unwrap()
                )
            });
            let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            assert!(
                v["position"].as_str().is_some_and(|p| p.contains(':')),
                "{line}"
            );
            got.push(v["data"]["n"].as_u64().unwrap_or_else(|| panic!("{line}")));
        }
        got
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `switchboard pub CHANNEL` with `lines` on standard input; its stdout.
fn pub_stdin(server: &str, extra: &[&str], lines: &str) -> String {
    let mut child = Command::new(BIN)
        .args(["pub", "news", "--server", server])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn numbered(range: std::ops::RangeInclusive<u64>) -> String {
    range.map(|n| format!("{{\"n\":{n}}}\n")).collect()
}

#[test]
fn sub_survives_cut_connections_with_no_gap_and_no_duplicate() {
    let server = TestServer::new().http().api_key("k").start();
    let direct = format!("http://{}", server.addr("http", "tcp"));
    let proxy = Proxy::start(server.addr("http", "tcp"));
    let through = format!("http://{}", proxy.addr);
    let sub = Sub::start(&["news", "--server", &through, "--count", "60"]);
    // Subscribed once a publication arrives.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    let first = loop {
        n += 1;
        pub_stdin(&direct, &["--api-key", "k"], &format!("{{\"n\":{n}}}\n"));
        if let Ok(line) = sub.lines.recv_timeout(Duration::from_millis(300)) {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "sub never received a publication"
        );
    };
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    let start = v["data"]["n"].as_u64().unwrap();
    assert_eq!(start, n, "the first line is the publication that arrived");
    let mut expected: Vec<u64> = Vec::new();
    let mut next = n + 1;
    for round in 0..3 {
        // Cut, then publish while the subscriber is away (it reconnects after a jittered
        // backoff), through the client protocol and through the server API in turn.
        proxy.cut();
        let api: &[&str] = if round % 2 == 0 {
            &["--api-key", "k"]
        } else {
            &[]
        };
        pub_stdin(&direct, api, &numbered(next..=next + 9));
        expected.extend(next..=next + 9);
        next += 10;
        let got = sub.take(10);
        assert_eq!(got, expected[expected.len() - 10..], "round {round}");
    }
    // Live again, after the last cut.
    pub_stdin(&direct, &[], &numbered(next..=next + 4));
    assert_eq!(sub.take(5), (next..=next + 4).collect::<Vec<_>>());
    let err = sub.stderr.lock().unwrap().clone();
    assert!(err.matches("reconnecting").count() >= 3, "{err}");
    assert!(!err.contains("missed"), "{err}");
}

#[test]
fn sub_since_a_position_prints_what_followed_it() {
    let server = TestServer::new().http().api_key("k").start();
    let url = format!("http://{}", server.addr("http", "tcp"));
    let out = pub_stdin(&url, &["--json"], &numbered(1..=5));
    let results: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 5, "{out}");
    assert_eq!(results[4]["offset"], "5");
    let epoch = results[0]["epoch"].as_str().unwrap().to_owned();
    let sub = Sub::start(&[
        "news",
        "--server",
        &url,
        "--since",
        &format!("{epoch}:2"),
        "--count",
        "3",
    ]);
    assert_eq!(sub.take(3), vec![3, 4, 5]);
    // history through both paths.
    let history = |extra: &[&str]| {
        let out = run(
            Command::new(BIN)
                .args([
                    "history",
                    "news",
                    "--server",
                    &url,
                    "--limit",
                    "2",
                    "--reverse",
                ])
                .args(extra),
            Duration::from_secs(20),
        );
        (out.status.code(), text(&out))
    };
    let (code, t) = history(&["--api-key", "k"]);
    assert_eq!(code, Some(0), "{t}");
    let ns: Vec<u64> = t
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["data"]["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, vec![5, 4], "{t}");
    // A client that is not subscribed may not read history in the default namespace: 103,
    // said clearly, exit 1.
    let (code, t) = history(&[]);
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("server error 103: permission denied"), "{t}");
}

#[test]
fn errors_name_the_servers_code_and_exit_with_documented_codes() {
    let server = TestServer::new()
        .http()
        .jwt("jwt-secret")
        .flag("--allow-anonymous", "false")
        .start();
    let url = format!("http://{}", server.addr("http", "tcp"));
    let sb = |args: &[&str]| {
        let out = run(Command::new(BIN).args(args), Duration::from_secs(30));
        (out.status.code(), text(&out))
    };
    // Refused token: 101, exit 1 (no endless reconnecting).
    let (code, t) = sb(&["sub", "news", "--server", &url, "--token", "not.a.jwt"]);
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("server error 101"), "{t}");
    // Anonymous, not allowed: the same code.
    let (code, t) = sb(&["pub", "news", "x", "--server", &url]);
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("101"), "{t}");
    // A good token but an unknown namespace: 102.
    let token = {
        let out = run(
            Command::new(BIN).args(["token", "--user", "u", "--jwt-hmac-secret", "jwt-secret"]),
            Duration::from_secs(10),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let (code, t) = sb(&["pub", "nowhere:x", "1", "--server", &url, "--token", &token]);
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("server error 102: unknown channel"), "{t}");
    let (code, t) = sb(&["sub", "nowhere:x", "--server", &url, "--token", &token]);
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("102"), "{t}");
    // The token works (SWITCHBOARD_TOKEN too).
    let out = run(
        Command::new(BIN)
            .args(["pub", "news", "{\"ok\":true}", "--server", &url])
            .env("SWITCHBOARD_TOKEN", &token),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("published to news at "),
        "{}",
        text(&out)
    );
    // Bad URL: 2; nobody listening: 3; bad --since: 2.
    let (code, t) = sb(&["sub", "news", "--server", "localhost:8080"]);
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("bad server URL"), "{t}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, t) = sb(&["pub", "news", "1", "--server", &format!("http://{closed}")]);
    assert_eq!(code, Some(3), "{t}");
    assert!(t.contains("cannot connect"), "{t}");
    let (code, t) = sb(&["sub", "news", "--since", "nope", "--server", &url]);
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("--since"), "{t}");
}
