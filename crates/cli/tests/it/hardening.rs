//! What one hostile client can do to a node, and the bounds that stop it (docs/security.md).
//! Each test reproduces an attack against the real binary on loopback — bounded in count and
//! time — and checks the bound holds and honest clients are still served.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{http_get, metric, raise_nofile, Server, TestServer, BIN};

/// A server with only plain HTTP, on an ephemeral loopback port, plus `extra` flags.
fn http_server(extra: &[&str]) -> Server {
    TestServer::new().http().args(extra).start()
}

/// A TOML file with `text` in a temporary folder of this test.
fn config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-hardening-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

/// Resident memory of a process, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    let sock = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let IpAddr::V4(from) = from else {
        panic!("IPv4 only")
    };
    let bind = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(from.octets()),
        },
        sin_zero: [0; 8],
    };
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let dest = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(to.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    unsafe {
        if libc::bind(fd, (&bind as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::connect(fd, (&dest as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(sock)
}

/// One HTTP/1.1 request (with `Connection: close`); returns the status and the whole response.
fn request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("{head}\r\nConnection: close\r\n");
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, resp)
}

fn metrics(server: &Server) -> String {
    http_get(server.addr("http", "tcp"), "/metrics").1
}

/// Whether the peer closed `s` within `limit` (EOF or reset; data read is ignored).
fn closed_within(mut s: &TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = left.clamp(Duration::from_millis(1), Duration::from_millis(200));
        s.set_read_timeout(Some(wait)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A client WebSocket frame (masked with a zero key, which is allowed).
fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Opens `/v1/ws` with a raw upgrade; returns the stream after the 101.
fn ws_open(addr: SocketAddr, origin: Option<&str>) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    write!(
        s,
        "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).map_err(|e| e.to_string())? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.starts_with("HTTP/1.1 101") {
        Ok(s)
    } else {
        Err(head)
    }
}

#[test]
fn websocket_ping_flood_from_a_client_that_does_not_read_is_cut_off() {
    let _heavy = crate::common::heavy();
    let server = http_server(&[]);
    let addr = server.addr("http", "tcp");
    let pid = server.child.id();
    let before = rss(pid);
    let mut ws = ws_open(addr, None).expect("upgrade");
    ws.write_all(&ws_frame(0x1, br#"{"id":1,"connect":{}}"#))
        .unwrap();
    // Flood pings with the largest control payload and never read (the attack grew the
    // server by ~1.3 GB in 7 s: one queued pong per ping).
    let ping = ws_frame(0x9, &[b'p'; 125]);
    let burst: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 512)
        .collect();
    ws.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut sent = 0usize;
    let mut cut = false;
    while Instant::now() < deadline {
        match ws.write(&burst) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    let grown = rss(pid).saturating_sub(before);
    assert!(
        cut || closed_within(&ws, Duration::from_secs(3)),
        "the server kept a ping-flooding client ({sent} bytes of pings sent)"
    );
    assert!(
        grown < 64 << 20,
        "the server grew by {} MiB under the ping flood",
        grown >> 20
    );
    let m = metrics(&server);
    assert!(
        metric(
            &m,
            "switchboard_hub_ws_closed_total{reason=\"control_flood\"}"
        ) >= 1.0,
        "{m}"
    );
    // An honest client still connects.
    let mut ws = ws_open(addr, None).expect("upgrade after the flood");
    ws.write_all(&ws_frame(0x1, br#"{"id":1,"connect":{}}"#))
        .unwrap();
    let mut buf = [0u8; 512];
    let n = ws.read(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("clientId"),
        "no connect reply"
    );
}

#[test]
fn silent_http_connections_are_closed_and_capped_per_address_and_globally() {
    let file = config(
        "caps.toml",
        "[http]\nfirst_request_timeout_secs = 2\nmax_connections = 40\nmax_connections_per_ip = 25\n",
    );
    let server = http_server(&["--config", file.to_str().unwrap()]);
    let addr = server.addr("http", "tcp");
    let a: IpAddr = "127.0.0.1".parse().unwrap();
    let b: IpAddr = "127.0.0.2".parse().unwrap();
    let c: IpAddr = "127.0.0.3".parse().unwrap();
    // 30 silent connections from one address: 25 held, the rest closed at once.
    let mut from_a: Vec<TcpStream> = (0..30).map(|_| connect_from(a, addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let refused_a = from_a
        .iter_mut()
        .filter(|s| closed_within(s, Duration::from_millis(10)))
        .count();
    assert_eq!(refused_a, 5, "per-address cap of 25 out of 30");
    // Another address gets the global rest (40 - 25 = 15), then the global cap bites.
    let mut from_b: Vec<TcpStream> = (0..20).map(|_| connect_from(b, addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let refused_b = from_b
        .iter_mut()
        .filter(|s| closed_within(s, Duration::from_millis(10)))
        .count();
    assert_eq!(refused_b, 5, "global cap of 40");
    // Silent connections are closed once the first-request timeout passes...
    let t = Instant::now();
    for s in from_a.iter_mut().chain(from_b.iter_mut()) {
        assert!(
            closed_within(s, Duration::from_secs(5)),
            "a silent connection outlived the first-request timeout"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(5));
    // ... and the slots are free again for honest clients from anywhere.
    let mut s = connect_from(c, addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let m = metrics(&server);
    let per_ip = metric(
        &m,
        "switchboard_connections_refused_total{listener=\"http\",reason=\"per_ip\"}",
    );
    let global = metric(
        &m,
        "switchboard_connections_refused_total{listener=\"http\",reason=\"global\"}",
    );
    assert!(per_ip >= 5.0 && global >= 5.0, "{m}");
    assert!(
        metric(&m, "switchboard_http_first_request_timeouts_total") >= 40.0,
        "{m}"
    );
}

#[test]
fn descriptors_used_up_by_http_clients_leave_stun_and_turn_their_share() {
    let _heavy = crate::common::heavy();
    raise_nofile();
    // With 1024 descriptors at most, the HTTP listeners get 256 connections and STUN over TCP
    // 128; the rest stays for relay sockets and everything else.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=1024:1024", BIN, "serve"]).args([
        "--stun-udp",
        "127.0.0.1:0",
        "--stun-tcp",
        "127.0.0.1:0",
        "--stun-tls",
        "off",
        "--http",
        "127.0.0.1:0",
        "--https",
        "off",
        "--turn-realm",
        "example.org",
        "--turn-user",
        "alice:secret",
    ]);
    let server = Server::start_command(cmd);
    let http = server.addr("http", "tcp");
    let stun_tcp = server.addr("stun", "tcp");
    let hosts: Vec<IpAddr> = (1..=4)
        .map(|i| format!("127.0.0.{i}").parse().unwrap())
        .collect();
    let mut held: Vec<TcpStream> = (0..400)
        .filter_map(|i| connect_from(hosts[i % hosts.len()], http).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let open = held
        .iter_mut()
        .filter(|s| !closed_within(s, Duration::from_millis(5)))
        .count();
    assert!(
        (200..=256).contains(&open),
        "{open} of 400 HTTP connections held with 1024 descriptors (cap 256)"
    );
    // STUN over TCP answers while HTTP is full.
    let mut s = TcpStream::connect(stun_tcp).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(&[7u8; 12]);
    s.write_all(&req).unwrap();
    let mut resp = [0u8; 20];
    s.read_exact(&mut resp).unwrap();
    assert_eq!(&resp[..2], &[0x01, 0x01], "a Binding success response");
    drop(held);
}

#[test]
fn request_bodies_must_keep_a_minimum_rate() {
    let file = config(
        "body.toml",
        "[http]\nbody_min_rate = 100\nbody_grace_secs = 1\n",
    );
    let server = http_server(&["--config", file.to_str().unwrap()]);
    let addr = server.addr("http", "tcp");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{\"channel\":"
    )
    .unwrap();
    let t = Instant::now();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("too slowly"), "{resp}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // A body at a normal pace is served.
    let body = br#"{"channel":"news","data":{"a":1}}"#;
    let (status, resp) = request(
        addr,
        "POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json",
        body,
    );
    assert_eq!(status, 200, "{resp}");
    assert!(metric(&metrics(&server), "switchboard_http_slow_bodies_total") >= 1.0);
}

/// Server RSS per idle connection: 500 opened by `open` to warm the allocator up, then 4,000
/// more (so the allocator's 2 MiB growth steps weigh at most ~0.5 KiB each). Measured once the
/// connections are idle: the server sets them up and then lets their start-up memory go over a
/// second or so, later still on a loaded machine (the other tests of this binary), so the lowest
/// of several readings from 1.5 s to 4.5 s counts. Returns the cost and the open connections.
fn idle_cost<T>(pid: u32, open: impl Fn(std::ops::Range<usize>) -> Vec<T>) -> (u64, Vec<T>) {
    let mut idle = open(0..500);
    std::thread::sleep(Duration::from_millis(700));
    let before = rss(pid);
    idle.extend(open(500..4500));
    let mut low = u64::MAX;
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..4 {
        low = low.min(rss(pid));
        std::thread::sleep(Duration::from_millis(1000));
    }
    (low.saturating_sub(before) / 4000, idle)
}

#[test]
fn stun_over_tcp_bounds_each_frame_and_idle_connections_cost_little() {
    let _heavy = crate::common::heavy();
    raise_nofile();
    let server = TestServer::new().stun_tcp().http().start();
    let stun = server.addr("stun", "tcp");
    let pid = server.child.id();
    // Connections that send nothing: each costs a few KiB at most (it held ~90 KiB of
    // buffers). Measured at the margin, after 500 have warmed the allocator up.
    let open = |range: std::ops::Range<usize>| -> Vec<TcpStream> {
        range
            .map(|i| {
                let host: IpAddr = format!("127.0.{}.{}", i / 250, 1 + i % 250)
                    .parse()
                    .unwrap();
                connect_from(host, stun).unwrap()
            })
            .collect()
    };
    let (per_conn, mut idle) = idle_cost(pid, open);
    eprintln!("an idle STUN/TCP connection costs {per_conn} bytes");
    assert!(
        per_conn <= 8 * 1024,
        "an idle STUN/TCP connection costs {per_conn} bytes"
    );
    // One byte of a Binding request every 2 s used to hold a connection forever (the idle
    // timer restarted on every byte): the frame deadline (10 s) ends it.
    let mut drip = TcpStream::connect(stun).unwrap();
    let t = Instant::now();
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(&[9u8; 12]);
    let mut cut = false;
    for b in &req[..19] {
        if drip.write_all(&[*b]).is_err() || closed_within(&drip, Duration::from_secs(2)) {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "a dribbling client held its connection for {:?}",
        t.elapsed()
    );
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(14)).contains(&t.elapsed()),
        "{:?}",
        t.elapsed()
    );
    // The silent connections are gone by now too (their first frame never came).
    let still_open = idle
        .iter_mut()
        .take(50)
        .filter(|s| !closed_within(s, Duration::from_millis(20)))
        .count();
    assert_eq!(still_open, 0);
}

/// One server WebSocket frame's payload (unmasked, no extension), read from `s`.
fn ws_read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head)?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            s.read_exact(&mut n)?;
            u64::from(u16::from_be_bytes(n))
        }
        127 => {
            let mut n = [0u8; 8];
            s.read_exact(&mut n)?;
            u64::from_be_bytes(n)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload)?;
    Ok(payload)
}

#[test]
fn idle_websockets_cost_little() {
    let _heavy = crate::common::heavy();
    raise_nofile();
    let server = http_server(&["--http-max-connections-per-ip", "0"]);
    let addr = server.addr("http", "tcp");
    let pid = server.child.id();
    // Connected and subscribed to one channel, then silent, like bench/idle.sh's: the upgrade,
    // `connect` and `subscribe` go in one write (hyper hands the bytes after the request to the
    // WebSocket), every connection is opened before any answer is read.
    let open = |range: std::ops::Range<usize>| -> Vec<TcpStream> {
        let mut request = format!(
            "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: switchboard.json\r\n\r\n"
        )
        .into_bytes();
        request.extend(ws_frame(0x1, br#"{"id":1,"connect":{}}"#));
        request.extend(ws_frame(0x1, br#"{"id":2,"subscribe":{"channel":"idle"}}"#));
        let mut conns: Vec<TcpStream> = range
            .map(|i| {
                let host: IpAddr = format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250)
                    .parse()
                    .unwrap();
                let mut s = connect_from(host, addr).unwrap();
                s.write_all(&request).unwrap();
                s
            })
            .collect();
        for s in &mut conns {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut byte).expect("the upgrade answer");
                head.push(byte[0]);
            }
            assert!(
                head.starts_with(b"HTTP/1.1 101"),
                "{}",
                String::from_utf8_lossy(&head)
            );
            for method in ["\"connect\"", "\"subscribe\""] {
                let reply = String::from_utf8(ws_read_frame(s).expect("a reply")).unwrap();
                assert!(reply.contains(method), "{reply}");
            }
        }
        conns
    };
    let (per_conn, idle) = idle_cost(pid, open);
    eprintln!("an idle WebSocket costs {per_conn} bytes");
    // The bound is issue 21's goal for a release build, 8 KiB (bench/idle.sh: ~5.7 KB there).
    // The debug build the tests run measures about the same here, ~5.1-5.3 KB, so the goal
    // itself is the bound; before issue 21's changes it measured ~12.8-13.1 KB (a 5.8 KB task
    // per connection, a 4 KiB read buffer).
    assert!(
        per_conn <= 8 * 1024,
        "an idle WebSocket costs {per_conn} bytes"
    );
    drop(idle);
}

#[test]
fn pages_of_other_origins_cannot_use_the_hub() {
    let server = http_server(&["--allow-origin", "https://app.example.com"]);
    let addr = server.addr("http", "tcp");
    // WebSocket: another site's page is refused; our own origin and the allowed one pass.
    let refused = ws_open(addr, Some("https://evil.example")).unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    ws_open(addr, Some(&format!("http://{addr}"))).expect("same origin");
    ws_open(addr, Some("https://app.example.com")).expect("allowed origin");
    ws_open(addr, None).expect("no Origin: not a browser page");
    let body = br#"{"channel":"news","data":{"text":"hi"}}"#;
    // A "simple" cross-site POST (text/plain needs no preflight) is refused twice over.
    let (status, resp) = request(
        addr,
        "POST /v1/publish HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nContent-Type: text/plain",
        body,
    );
    assert_eq!(status, 403, "{resp}");
    let (status, resp) = request(
        addr,
        "POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain",
        body,
    );
    assert_eq!(status, 415, "{resp}");
    let (status, resp) = request(
        addr,
        "POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json",
        body,
    );
    assert_eq!(status, 200, "{resp}");
    // SSE from another site's page.
    let (status, _) = request(
        addr,
        "GET /v1/sse?channel=news HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example",
        b"",
    );
    assert_eq!(status, 403);
    // CORS for the allowed origin: preflight answered, actual response labelled.
    let (status, resp) = request(
        addr,
        "OPTIONS /v1/publish HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example.com\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type",
        b"",
    );
    assert_eq!(status, 204, "{resp}");
    let lower = resp.to_ascii_lowercase();
    assert!(
        lower.contains("access-control-allow-origin: https://app.example.com"),
        "{resp}"
    );
    assert!(lower.contains("access-control-allow-headers:"), "{resp}");
    let (status, _) = request(
        addr,
        "OPTIONS /v1/publish HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n\
         Access-Control-Request-Method: POST",
        b"",
    );
    assert_eq!(status, 403);
    let (status, resp) = request(
        addr,
        "POST /v1/publish HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example.com\r\nContent-Type: application/json",
        body,
    );
    assert_eq!(status, 200, "{resp}");
    assert!(resp
        .to_ascii_lowercase()
        .contains("access-control-allow-origin: https://app.example.com"));
    assert!(metric(&metrics(&server), "switchboard_http_origin_refused_total") >= 3.0);
}

#[test]
fn ice_servers_are_rate_limited_and_anonymous_clients_keep_one_user() {
    let server = TestServer::new()
        .stun_udp()
        .http()
        .flag("--turn-realm", "example.org")
        .flag("--turn-secret", "s3cret")
        .start();
    let addr = server.addr("http", "tcp");
    let user = |body: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(body).expect(body);
        v["iceServers"][1]["username"]
            .as_str()
            .expect(body)
            .to_owned()
    };
    let (status, first) = http_get(addr, "/v1/ice-servers");
    assert_eq!(status, 200, "{first}");
    let (_, second) = http_get(addr, "/v1/ice-servers");
    assert_eq!(
        user(&first),
        user(&second),
        "one user per address and window"
    );
    assert!(user(&first).contains(":anonymous-"), "{first}");
    let statuses: Vec<u16> = (0..40)
        .map(|_| http_get(addr, "/v1/ice-servers").0)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 200).count() <= 20);
    assert!(
        metric(
            &metrics(&server),
            "switchboard_rate_limited_total{endpoint=\"ice-servers\"}"
        ) >= 1.0
    );
}

#[test]
fn guessing_the_api_key_gets_an_address_blocked_and_counted() {
    let server = http_server(&["--api-key", "right-key"]);
    let addr = server.addr("http", "tcp");
    let call = |key: &str| {
        request(
            addr,
            &format!(
                "POST /v1/api/info HTTP/1.1\r\nHost: x\r\nAuthorization: apikey {key}\r\nContent-Type: application/json"
            ),
            b"{}",
        )
        .0
    };
    assert_eq!(call("right-key"), 200);
    let wrong: Vec<u16> = (0..12).map(|i| call(&format!("guess-{i}"))).collect();
    assert_eq!(&wrong[..10], &[401; 10], "{wrong:?}");
    assert_eq!(&wrong[10..], &[429; 2], "{wrong:?}");
    // Blocked for the rest of the window, even with the right key...
    assert_eq!(call("right-key"), 429);
    // ... but only this address.
    let mut s = connect_from("127.0.0.9".parse().unwrap(), addr).unwrap();
    s.write_all(
        b"POST /v1/api/info HTTP/1.1\r\nHost: x\r\nAuthorization: apikey right-key\r\n\
          Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .unwrap();
    let mut resp = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let m = metrics(&server);
    assert!(
        metric(
            &m,
            "switchboard_api_auth_failures_total{result=\"refused\"}"
        ) >= 10.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "switchboard_api_auth_failures_total{result=\"blocked\"}"
        ) >= 3.0,
        "{m}"
    );
}

/// Pages served from this machine (a development server on localhost) may use the hub by
/// default — what docs/clients.md's recipes need against `switchboard serve` with no flags —
/// while other sites' pages stay refused; `--allow-loopback-origins false` refuses them too.
#[test]
fn pages_served_from_this_machine_may_use_the_hub_unless_refused() {
    let dev_pages = [
        "http://localhost:3000",
        "http://127.0.0.1:5173",
        "http://[::1]:8000",
        "http://app.localhost:8080",
    ];
    let server = http_server(&[]);
    let addr = server.addr("http", "tcp");
    for origin in dev_pages {
        ws_open(addr, Some(origin)).unwrap_or_else(|e| panic!("{origin}: {e}"));
        let (status, resp) = request(
            addr,
            &format!("OPTIONS /v1/publish HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST"),
            b"",
        );
        assert_eq!(status, 204, "{origin}: {resp}");
        assert!(
            resp.to_ascii_lowercase()
                .contains(&format!("access-control-allow-origin: {origin}")),
            "{resp}"
        );
    }
    for origin in [
        "https://evil.example",
        "http://localhost.evil.example",
        "null",
    ] {
        let refused = ws_open(addr, Some(origin)).unwrap_err();
        assert!(refused.starts_with("HTTP/1.1 403"), "{origin}: {refused}");
    }
    drop(server);
    let strict = http_server(&["--allow-loopback-origins", "false"]);
    let addr = strict.addr("http", "tcp");
    for origin in dev_pages {
        let refused = ws_open(addr, Some(origin)).unwrap_err();
        assert!(refused.starts_with("HTTP/1.1 403"), "{origin}: {refused}");
    }
    ws_open(addr, Some(&format!("http://{addr}"))).expect("same origin");
}
