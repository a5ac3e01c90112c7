//! Shared helpers for the integration tests: start the real binary, find free loopback ports,
//! require third-party tools, and clean up even when a test fails (Drop kills the server).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A running `switchboard serve`; killed on drop.
pub struct Server {
    pub child: Child,
    /// Lines printed on stdout at start-up (one per listener, then the certificate line).
    pub lines: Vec<String>,
    /// What it logged on stderr so far (the first [`LOG_KEEP`] bytes).
    logs: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Bytes of a server's stderr kept for [`Server::logs`] (the rest is read and dropped).
pub const LOG_KEEP: usize = 8 << 20;

/// A `switchboard serve` to start, every listener off unless asked for (each asked one on an
/// ephemeral loopback port): the one place the tests spell out a server's flags.
///
/// ```ignore
/// let server = TestServer::new().http().https().api_key("k").start();
/// ```
#[derive(Clone, Debug, Default)]
pub struct TestServer {
    /// Addresses per listener flag, in [`LISTENERS`] order; none = `off`.
    listen: [Vec<String>; 5],
    args: Vec<String>,
}

/// The listener flags, each given once (`off` when the test asks for none).
const LISTENERS: [&str; 5] = [
    "--stun-udp",
    "--stun-tcp",
    "--stun-tls",
    "--http",
    "--https",
];

const EPHEMERAL: &str = "127.0.0.1:0";

impl TestServer {
    /// No listener at all yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Listener `flag` (one of [`LISTENERS`]) on `addr` too.
    pub fn listen(mut self, flag: &str, addr: &str) -> Self {
        let i = LISTENERS
            .iter()
            .position(|l| *l == flag)
            .unwrap_or_else(|| panic!("{flag} is not a listener flag"));
        self.listen[i].push(addr.to_owned());
        self
    }
    /// STUN/TURN over UDP.
    pub fn stun_udp(self) -> Self {
        self.listen("--stun-udp", EPHEMERAL)
    }
    /// STUN/TURN over TCP.
    pub fn stun_tcp(self) -> Self {
        self.listen("--stun-tcp", EPHEMERAL)
    }
    /// STUN/TURN over TLS.
    pub fn stun_tls(self) -> Self {
        self.listen("--stun-tls", EPHEMERAL)
    }
    /// STUN/TURN over UDP, TCP and TLS.
    pub fn stun_all(self) -> Self {
        self.stun_udp().stun_tcp().stun_tls()
    }
    /// Plain HTTP (h1, h2c).
    pub fn http(self) -> Self {
        self.listen("--http", EPHEMERAL)
    }
    /// HTTPS, with HTTP/3 on the same port.
    pub fn https(self) -> Self {
        self.listen("--https", EPHEMERAL)
    }
    /// TURN with `realm` and `--turn-user USER` (NAME:PASSWORD).
    pub fn turn_user(self, realm: &str, user: &str) -> Self {
        self.flag("--turn-realm", realm).flag("--turn-user", user)
    }
    /// `--api-key KEY`.
    pub fn api_key(self, key: &str) -> Self {
        self.flag("--api-key", key)
    }
    /// `--jwt-hmac-secret SECRET`.
    pub fn jwt(self, secret: &str) -> Self {
        self.flag("--jwt-hmac-secret", secret)
    }
    /// `--config FILE`.
    pub fn config(self, file: &Path) -> Self {
        self.flag("--config", file.to_str().expect("UTF-8 path"))
    }
    /// One more flag with its value.
    pub fn flag(mut self, name: &str, value: &str) -> Self {
        self.args.push(name.to_owned());
        self.args.push(value.to_owned());
        self
    }
    /// More arguments, as given.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }
    /// The `serve` arguments.
    pub fn argv(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (flag, addrs) in LISTENERS.iter().zip(&self.listen) {
            if addrs.is_empty() {
                v.extend([flag.to_string(), "off".to_owned()]);
            }
            for a in addrs {
                v.extend([flag.to_string(), a.clone()]);
            }
        }
        v.extend(self.args.iter().cloned());
        v
    }
    /// Starts it and waits for its listeners.
    pub fn start(&self) -> Server {
        let argv = self.argv();
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        Server::start(&args)
    }
}

impl Server {
    /// Starts `switchboard serve ARGS` with the HTTP listener off unless ARGS set it.
    pub fn start(args: &[&str]) -> Server {
        Self::start_env(args, &[])
    }

    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The HTTPS listener (default 127.0.0.1:8443) stays off unless a test asks for it
        // (flags override the environment), so tests running in parallel do not collide.
        cmd.env("SWITCHBOARD_HTTPS", "off");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::start_command(cmd)
    }

    /// Starts a prepared `switchboard serve` command (for example inside a network namespace)
    /// and waits for its start-up lines.
    pub fn start_command(mut cmd: Command) -> Server {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn switchboard");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        // Keep stderr drained so logging never blocks the server; keep the start for logs().
        let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = logs.clone();
        std::thread::spawn(move || {
            let echo = std::env::var_os("SB_TEST_LOGS").is_some();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if echo {
                    eprintln!("{line}");
                }
                let mut k = kept.lock().unwrap_or_else(|e| e.into_inner());
                if k.len() + line.len() < LOG_KEEP {
                    k.push_str(&line);
                    k.push('\n');
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            lines: Vec::new(),
            logs,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let done = line == "ready";
                    server.lines.push(line);
                    if done {
                        return server;
                    }
                }
                Err(_) => {
                    let status = server.child.try_wait().ok().flatten();
                    panic!(
                        "switchboard did not start (exit {status:?}); printed {:?}",
                        server.lines
                    );
                }
            }
        }
    }

    /// The address printed for `protocol transport`, first match.
    pub fn addr(&self, protocol: &str, transport: &str) -> SocketAddr {
        self.lines
            .iter()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(protocol) && f.next() == Some(transport))
                    .then(|| f.next().and_then(|a| a.parse().ok()))
                    .flatten()
            })
            .unwrap_or_else(|| panic!("no {protocol} {transport} listener in {:?}", self.lines))
    }

    /// What the server logged on stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "switchboard did not stop within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port P such that P and P+1 are free for UDP and TCP on 127.0.0.1 and 127.0.0.2.
pub fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let probe = UdpSocket::bind("127.0.0.1:0").expect("bind probe");
        let p = probe.local_addr().expect("addr").port();
        drop(probe);
        if p >= 65_000 {
            continue;
        }
        let ok = [p, p + 1].iter().all(|&port| {
            ["127.0.0.1", "127.0.0.2"].iter().all(|ip| {
                UdpSocket::bind((*ip, port)).is_ok() && TcpListener::bind((*ip, port)).is_ok()
            })
        });
        if ok {
            return p;
        }
    }
    panic!("no free port pair on loopback");
}

/// Fails with a clear message when a third-party tool is missing.
pub fn need(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: run scripts/test, which installs the test peers"
    );
}

/// Runs a command with a time limit, returning its output (stdout and stderr). Both are read
/// while it runs, so a command printing more than a pipe holds does not block on it.
pub fn run(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break (status, false);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break (child.wait().expect("wait"), true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if timed_out {
        panic!(
            "{cmd:?} did not finish within {limit:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// GET over HTTP/1.0 on loopback; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of a Prometheus sample line starting with `series` (exact labels).
pub fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// The repository root.
/// Debian's Chromium (or `SB_CHROMIUM`) and `tests/browser` with playwright-core installed, or
/// a message saying how to get them; node is needed too.
pub fn chromium_and_playwright() -> (String, PathBuf) {
    let chromium = std::env::var("SB_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "{chromium} is missing: run scripts/test (scripts/test-deps installs Debian's chromium)"
    );
    need("node");
    let dir = repo_root().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core/package.json").is_file(),
        "{}/node_modules/playwright-core is missing: run scripts/test (scripts/test-deps runs npm ci there)",
        dir.display()
    );
    (chromium, dir)
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python of the test venv (`.venv`, created by scripts/test-deps) with the third-party
/// Python peers installed.
pub fn venv_python() -> PathBuf {
    let p = repo_root().join(".venv/bin/python");
    assert!(
        p.is_file(),
        "{} missing: run scripts/test (scripts/test-deps creates the venv)",
        p.display()
    );
    p
}

/// A peer script under tests/peers/.
pub fn peer_script(name: &str) -> PathBuf {
    repo_root().join("tests/peers").join(name)
}

/// A turnutils_peer UDP echo peer on 127.0.0.1; killed on drop.
pub struct TurnPeer {
    pub child: Child,
    pub port: u16,
}

impl TurnPeer {
    pub fn start() -> TurnPeer {
        need("turnutils_peer");
        let port = free_port_pair();
        let child = Command::new("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn turnutils_peer");
        std::thread::sleep(Duration::from_millis(200));
        TurnPeer { child, port }
    }
}

impl Drop for TurnPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A turnutils_uclient run of `m` clients sending `n` 170-byte messages `z` ms apart to `peer`
/// through the TURN server on 127.0.0.1:`port`, with extra `flags` (transport, mode, user).
pub fn uclient_cmd(peer: &TurnPeer, port: u16, m: u32, n: u32, z: u32, flags: &[&str]) -> Command {
    need("turnutils_uclient");
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args(["-m", &m.to_string(), "-n", &n.to_string(), "-l", "170"])
        .args([
            "-z",
            &z.to_string(),
            "-e",
            "127.0.0.1",
            "-r",
            &peer.port.to_string(),
            "-g",
        ])
        .args(["-p", &port.to_string()])
        .args(flags)
        .arg("127.0.0.1");
    cmd
}

/// A `redis-server` on a free loopback port with an append-only file in a temp dir (so its
/// data survives a restart), daemonized with a pid file; stopped and removed in `Drop`, also
/// when a test restarted it meanwhile (`start_command` restarts it the same way).
#[allow(dead_code)]
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
}

#[allow(dead_code)]
impl Redis {
    pub fn start() -> Redis {
        need("redis-server");
        need("redis-cli");
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("bind probe");
            probe.local_addr().expect("addr").port()
        };
        let dir = std::env::temp_dir().join(format!("sb-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let redis = Redis { port, dir };
        let status = Command::new("sh")
            .args(["-c", &redis.start_command()])
            .status()
            .expect("run redis-server");
        assert!(status.success(), "redis-server did not start");
        redis.wait_ready();
        redis
    }

    /// The shell command that (re)starts this Redis.
    pub fn start_command(&self) -> String {
        let d = self.dir.display();
        format!(
            "redis-server --port {} --bind 127.0.0.1 --daemonize yes --pidfile {d}/redis.pid \
             --dir {d} --logfile {d}/redis.log --appendonly yes --appendfsync always --save ''",
            self.port
        )
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn wait_ready(&self) {
        for _ in 0..100 {
            let out = Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "ping"])
                .output();
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("redis.pid")) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Asserts that a peer script printed `OK name` for every named check, no `FAIL`, and its
/// `DONE 0 failed` summary.
#[allow(dead_code)]
pub fn assert_checks(output: &str, names: &[&str]) {
    for name in names {
        assert!(
            output.lines().any(|l| l == format!("OK {name}")),
            "check {name} did not pass:\n{output}"
        );
    }
    assert!(!output.contains("FAIL "), "{output}");
    assert!(output.contains("DONE 0 failed"), "{output}");
}

/// Raises this test process's soft open-file limit to the hard one: the tests of one binary run
/// in parallel, and some hold thousands of client sockets.
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Serializes the heaviest tests (several servers, a browser, Redis): the tests of this one
/// binary run in parallel, and two of these at once on two cores make timings flaky. Hold the
/// guard for the whole test.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A self-signed P-256 certificate for `localhost` (valid one day) made by openssl in `dir` as
/// `NAME.crt` and `NAME.key`; returns both paths and the certificate's SHA-256 fingerprint as
/// openssl prints it (`AA:BB:...`).
pub fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    need("openssl");
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let out = run(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ])
            .args(["-days", "1", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out));
    let fp = run(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&cert),
        Duration::from_secs(30),
    );
    let fp = text(&fp).trim().rsplit('=').next().unwrap().to_string();
    (cert, key, fp)
}

/// Moves the calling test's thread — and so every process it starts — into a new network
/// namespace with only a loopback interface (up); the namespace goes away with them. Needs
/// root, as CI has.
pub fn isolate_network() {
    // SAFETY: unshare(2) takes no pointers; CLONE_NEWNET changes only the calling thread's
    // network namespace (other tests run on other threads and are not affected).
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {} — this test runs in a loopback-only network namespace of \
         its own and needs root (CI runs as root)",
        std::io::Error::last_os_error()
    );
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    assert!(
        up.is_ok_and(|s| s.success()),
        "ip link set lo up failed in the test's namespace"
    );
}

/// Deterministic bytes for test files (no two seeds alike).
pub fn bytes(n: usize, seed: u32) -> Vec<u8> {
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

/// Lower-case hex SHA-256 of `data`, as the transfer tools report it.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
