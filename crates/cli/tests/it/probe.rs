//! `switchboard probe` against real servers, its `--json` checked field by field: switchboard
//! itself (HTTPS with h2 and h3, plain HTTP with h2c, STUN over UDP/TCP/TLS, TURN with a static
//! user and through `--ice`), Debian's nginx (TLS 1.3 and a TLS-1.2-only ECDHE server, ALPN h2),
//! coturn's `turnserver` (STUN with RFC 5780, TURN), and failures: a closed port and a listener
//! that accepts TCP and never answers (reported as timeouts, never a hang); and `--compare` in
//! the NAT lab with loss on the router (h2's head-of-line stalls against h3).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{free_port_pair, need, run, text, TestServer, BIN};

/// Runs `switchboard probe ARGS --json`; returns the exit code and the parsed output.
fn probe_json(args: &[&str]) -> (i32, Value) {
    let out = run(
        Command::new(BIN).arg("probe").args(args).arg("--json"),
        Duration::from_secs(90),
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("probe --json output is not JSON ({e}):\n{}", text(&out)));
    (out.status.code().unwrap_or(-1), v)
}

fn probe_text(args: &[&str]) -> (i32, String) {
    let out = run(
        Command::new(BIN).arg("probe").args(args),
        Duration::from_secs(90),
    );
    (out.status.code().unwrap_or(-1), text(&out))
}

fn target<'a>(v: &'a Value, url: &str) -> &'a Value {
    v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["url"] == url)
        .unwrap_or_else(|| panic!("no target {url} in {v:#}"))
}

fn conn<'a>(t: &'a Value, purpose: &str) -> &'a Value {
    t["http"]["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["purpose"] == purpose)
        .unwrap_or_else(|| panic!("no {purpose} connection in {t:#}"))
}

fn transport<'a>(t: &'a Value, name: &str) -> &'a Value {
    t["stun"]["transports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["transport"] == name)
        .unwrap_or_else(|| panic!("no {name} transport in {t:#}"))
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn verdicts(t: &Value) -> String {
    t["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("{}: {}", v["level"], v["message"]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sb-probe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn openssl(args: &[&str]) {
    need("openssl");
    let out = run(Command::new("openssl").args(args), Duration::from_secs(60));
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
}

/// A CA (`ca.pem`) and a P-256 leaf for localhost and 127.0.0.1 signed by it, valid `days`:
/// (ca, cert, key).
fn ca_and_leaf(dir: &Path, name: &str, days: u32) -> (PathBuf, PathBuf, PathBuf) {
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let ca = dir.join("ca.pem");
    if !ca.exists() {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=probe test CA",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
        ]);
    }
    let (key, csr, cert) = (
        p(&format!("{name}.key")),
        p(&format!("{name}.csr")),
        p(&format!("{name}.pem")),
    );
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &key,
        "-out",
        &csr,
    ]);
    let ext = p(&format!("{name}.ext"));
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        &days.to_string(),
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    (ca, cert.into(), key.into())
}

/// A child process killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_tcp(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn switchboard_https_h2_h3_and_plain_http() {
    let dir = tmpdir("sb-https");
    let (ca, cert, key) = ca_and_leaf(&dir, "leaf", 30);
    let server = TestServer::new()
        .http()
        .https()
        .flag("--tls-cert", cert.to_str().unwrap())
        .flag("--tls-key", key.to_str().unwrap())
        .start();
    let port = server.addr("https", "tcp").port();
    let url = format!("https://localhost:{port}/healthz");
    let http = format!("http://{}/healthz", server.addr("http", "tcp"));
    let (code, v) = probe_json(&[&url, &http, "--ca", ca.to_str().unwrap()]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["version"], 1);
    assert_eq!(v["status"], "ok", "{v:#}");
    let t = target(&v, &url);
    assert_eq!(t["kind"], "http");
    assert_eq!(t["status"], "ok", "{}", verdicts(t));
    let dns = &t["http"]["dns"];
    assert_eq!(dns["host"], "localhost");
    assert_eq!(dns["literal"], false);
    assert!(
        dns["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "127.0.0.1"),
        "{dns}"
    );
    // The first connection: TCP, TLS 1.3 with the post-quantum hybrid in one round trip (the
    // probe sends an X25519MLKEM768 key share first), ALPN h2, a GET over h2.
    let p = conn(t, "primary");
    assert_eq!(p["transport"], "tcp");
    assert_eq!(p["remote"], format!("127.0.0.1:{port}"));
    assert!(num(&p["connect_ms"]) >= 0.0);
    let tls = &p["tls"];
    assert_eq!(tls["version"], "TLSv1.3");
    assert_eq!(tls["key_exchange_group"], "X25519MLKEM768");
    assert_eq!(tls["alpn"], "h2");
    assert_eq!(tls["handshake_kind"], "full");
    assert!(
        tls["cipher_suite"].as_str().unwrap().starts_with("TLS13_"),
        "{tls}"
    );
    assert!(num(&tls["handshake_ms"]) > 0.0);
    let req = &p["request"];
    assert_eq!(req["protocol"], "h2");
    assert_eq!(req["status"], 200);
    assert!(num(&req["ttfb_ms"]) > 0.0 && num(&req["total_ms"]) >= num(&req["ttfb_ms"]));
    assert!(req["body_bytes"].as_u64().unwrap() > 0);
    let alt = req["alt_svc"].as_str().unwrap();
    assert!(alt.contains(&format!("h3=\":{port}\"")), "{alt}");
    assert!(p["error"].is_null());
    // The certificate: verified against --ca, leaf details.
    let c = &t["http"]["certificate"];
    assert_eq!(c["verified"], true, "{c}");
    assert!(c["verify_error"].is_null());
    assert_eq!(c["roots"], ca.to_str().unwrap());
    let leaf = &c["chain"][0];
    assert_eq!(leaf["subject"], "CN=localhost");
    assert_eq!(leaf["issuer"], "CN=probe test CA");
    assert_eq!(leaf["sans"], serde_json::json!(["localhost", "127.0.0.1"]));
    assert!(
        (28..=30).contains(&leaf["days_left"].as_i64().unwrap()),
        "{leaf}"
    );
    assert!(
        leaf["key"].as_str().unwrap().starts_with("EC P-256"),
        "{leaf}"
    );
    assert!(leaf["not_after"].as_str().unwrap().ends_with('Z'), "{leaf}");
    // HTTP/1.1 on its own connection, and a resumed session (no early data on TCP).
    let h1 = conn(t, "http/1.1");
    assert_eq!(h1["tls"]["alpn"], "http/1.1");
    assert_eq!(h1["request"]["protocol"], "http/1.1");
    assert_eq!(h1["request"]["status"], 200);
    let res = conn(t, "resumption");
    assert_eq!(res["tls"]["handshake_kind"], "resumed");
    assert_eq!(res["early_data"]["offered"], false);
    assert_eq!(res["request"]["status"], 200);
    // h3 from Alt-Svc: QUIC with the same group, migration to a new UDP port, then 0-RTT.
    assert_eq!(t["http"]["h3"]["forced"], false);
    assert_eq!(t["http"]["h3"]["address"], format!("127.0.0.1:{port}"));
    assert!(t["http"]["h3"]["advertised"]
        .as_str()
        .unwrap()
        .starts_with("h3="));
    let h3 = conn(t, "h3");
    assert_eq!(h3["transport"], "quic");
    assert_eq!(h3["tls"]["alpn"], "h3");
    assert_eq!(h3["tls"]["version"], "TLSv1.3");
    assert_eq!(h3["tls"]["key_exchange_group"], "X25519MLKEM768");
    assert!(h3["connect_ms"].is_null());
    assert_eq!(h3["request"]["protocol"], "h3");
    assert_eq!(h3["request"]["status"], 200);
    assert!(num(&h3["quic_rtt_ms"]) > 0.0);
    let m = &h3["migration"];
    assert_eq!(m["ok"], true, "{m}");
    assert_eq!(m["status"], 200);
    assert_ne!(m["from"], m["to"]);
    let z = conn(t, "h3-0rtt");
    assert_eq!(z["early_data"]["offered"], true, "{z}");
    assert_eq!(z["early_data"]["attempted"], true);
    assert_eq!(z["early_data"]["accepted"], true);
    assert_eq!(z["request"]["status"], 200);
    assert_eq!(z["tls"]["handshake_kind"], "resumed");
    let ok = verdicts(t);
    assert!(
        ok.contains("TLSv1.3 with X25519MLKEM768 (post-quantum)"),
        "{ok}"
    );
    assert!(
        ok.contains("h3 reachable") && ok.contains("0-RTT accepted"),
        "{ok}"
    );

    // Plain HTTP: HTTP/1.1, then h2 with prior knowledge (h2c); no TLS, no h3.
    let t = target(&v, &http);
    assert_eq!(t["status"], "ok", "{}", verdicts(t));
    assert_eq!(t["http"]["dns"]["literal"], true);
    let p = conn(t, "primary");
    assert!(p["tls"].is_null());
    assert_eq!(p["request"]["protocol"], "http/1.1");
    assert_eq!(p["request"]["status"], 200);
    let h2c = conn(t, "h2c");
    assert_eq!(h2c["request"]["protocol"], "h2");
    assert_eq!(h2c["request"]["status"], 200);
    assert!(t["http"]["h3"].is_null());

    // The terminal view: every connection, the waterfall and the verdict.
    let (code, out) = probe_text(&[&url, "--ca", ca.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    for want in [
        "TLSv1.3 TLS13_",
        "X25519MLKEM768 alpn h2",
        "(resumed)",
        "migration",
        "early data offered and accepted",
        "waterfall",
        "primary tls",
        "h3 quic",
        "verdict      OK: h2 200",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }

    // Without --ca the same server is not trusted: reported, broken, exit 1, no request.
    let (code, v) = probe_json(&[&url]);
    assert_eq!(code, 1, "{v:#}");
    let t = target(&v, &url);
    assert_eq!(t["status"], "broken");
    assert_eq!(t["http"]["certificate"]["verified"], false);
    assert_eq!(t["http"]["certificate"]["roots"], "system");
    let p = conn(t, "primary");
    assert_eq!(p["error"]["stage"], "tls");
    assert!(p["request"].is_null());
    assert_eq!(p["tls"]["key_exchange_group"], "X25519MLKEM768");
    // --insecure: the same failure as a warning, and everything else measured.
    let (code, v) = probe_json(&[&url, "--insecure"]);
    assert_eq!(code, 0, "{v:#}");
    let t = target(&v, &url);
    assert_eq!(t["status"], "warning");
    assert!(
        verdicts(t).contains("certificate not verified"),
        "{}",
        verdicts(t)
    );
    assert_eq!(conn(t, "h3")["request"]["status"], 200);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn switchboard_stun_and_turn() {
    let dir = tmpdir("sb-turn");
    let (ca, cert, key) = ca_and_leaf(&dir, "leaf", 30);
    // UDP and TCP on one port, as stun: URLs without a transport expect.
    let port = free_port_pair();
    let both = format!("127.0.0.1:{port}");
    let server = TestServer::new()
        .listen("--stun-udp", &both)
        .listen("--stun-tcp", &both)
        .stun_tls()
        .http()
        .turn_user("probe.test", "alice:secret")
        .flag("--turn-secret", "probe-secret")
        .flag("--allow-peer", "127.0.0.0/8")
        .flag("--tls-cert", cert.to_str().unwrap())
        .flag("--tls-key", key.to_str().unwrap())
        .start();
    let udp = server.addr("stun", "udp");
    let tcp = server.addr("stun", "tcp");
    let tls = server.addr("stun", "tls");
    let stun = format!("stun:{udp}");
    let turn_udp = format!("turn:{udp}?transport=udp");
    let turn_tcp = format!("turn:{tcp}?transport=tcp");
    let turns = format!("turns:localhost:{}", tls.port());
    let (code, v) = probe_json(&[
        &stun,
        &turn_udp,
        &turn_tcp,
        &turns,
        "--user",
        "alice",
        "--password",
        "secret",
        "--ca",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["status"], "ok", "{v:#}");
    // stun: without a transport: UDP and TCP, each with its own mapped address.
    let t = target(&v, &stun);
    assert_eq!(t["kind"], "stun");
    for name in ["udp", "tcp"] {
        let tr = transport(t, name);
        let b = &tr["binding"];
        assert_eq!(b["mapped_address"], tr["local"], "{tr}");
        assert_eq!(b["rtts_ms"].as_array().unwrap().len(), 3);
        assert!(num(&b["rtt_ms"]) > 0.0);
        assert_eq!(b["rfc5780"], false);
        assert!(b["other_address"].is_null());
        assert!(
            b["software"].as_str().unwrap().starts_with("switchboard"),
            "{b}"
        );
        assert!(tr["turn"].is_null());
        assert!(tr["error"].is_null());
    }
    assert!(transport(t, "udp")["connect_ms"].is_null());
    assert!(num(&transport(t, "tcp")["connect_ms"]) >= 0.0);
    // TURN over UDP, TCP and TLS: allocation, permission, five echoes through the relay.
    for (url, name) in [(&turn_udp, "udp"), (&turn_tcp, "tcp"), (&turns, "tls")] {
        let t = target(&v, url);
        assert_eq!(t["kind"], "turn");
        assert_eq!(t["status"], "ok", "{}", verdicts(t));
        let trs = t["stun"]["transports"].as_array().unwrap();
        assert_eq!(trs.len(), 1, "{t:#}");
        let tr = transport(t, name);
        let turn = &tr["turn"];
        assert_eq!(turn["realm"], "probe.test");
        let relayed: SocketAddr = turn["relayed_address"].as_str().unwrap().parse().unwrap();
        assert_eq!(relayed.ip().to_string(), "127.0.0.1");
        assert_eq!(turn["mapped_address"], tr["local"]);
        assert!(turn["lifetime_s"].as_u64().unwrap() > 0);
        assert!(num(&turn["allocate_ms"]) > 0.0 && num(&turn["permission_ms"]) > 0.0);
        assert!(turn["peer_address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"));
        let echo = &turn["echo"];
        assert_eq!(
            (echo["sent"].as_u64(), echo["received"].as_u64()),
            (Some(5), Some(5)),
            "{echo}"
        );
        assert!(num(&echo["rtt_ms"]) > 0.0);
        assert!(
            verdicts(t).contains(&format!("TURN relay over {name} works")),
            "{}",
            verdicts(t)
        );
    }
    let t = target(&v, &turns);
    let tr = transport(t, "tls");
    assert_eq!(tr["tls"]["alpn"], "stun.turn");
    assert_eq!(tr["tls"]["key_exchange_group"], "X25519MLKEM768");
    assert_eq!(t["stun"]["certificate"]["verified"], true);

    // A wrong password: broken, the 401 named.
    let (code, v) = probe_json(&[&turn_udp, "--user", "alice", "--password", "nope"]);
    assert_eq!(code, 1, "{v:#}");
    let t = target(&v, &turn_udp);
    let e = &transport(t, "udp")["error"];
    assert_eq!(e["stage"], "allocate");
    assert!(e["message"].as_str().unwrap().contains("401"), "{e}");

    // --ice: the servers and credentials /v1/ice-servers hands out (TURN REST).
    let base = format!("http://{}", server.addr("http", "tcp"));
    let (code, v) = probe_json(&["--ice", &base, "--ca", ca.to_str().unwrap()]);
    assert_eq!(code, 0, "{v:#}");
    let urls: Vec<&str> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["url"].as_str().unwrap())
        .collect();
    let port = udp.port();
    for want in [
        format!("stun:127.0.0.1:{port}"),
        format!("turn:127.0.0.1:{port}?transport=udp"),
        format!("turn:127.0.0.1:{}?transport=tcp", tcp.port()),
    ] {
        assert!(urls.contains(&want.as_str()), "{want} not in {urls:?}");
    }
    let t = target(&v, &format!("turn:127.0.0.1:{port}?transport=udp"));
    assert_eq!(t["status"], "ok", "{}", verdicts(t));
    assert_eq!(transport(t, "udp")["turn"]["echo"]["received"], 5);
    std::fs::remove_dir_all(&dir).ok();
}

/// Debian's nginx in the foreground with its own configuration.
fn nginx(dir: &Path, servers: &str) -> Daemon {
    need("nginx");
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/nginx-error.log warn;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             {servers}\n}}\n"
        ),
    )
    .unwrap();
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nginx");
    Daemon(child)
}

#[test]
fn nginx_tls13_and_tls12_only() {
    let dir = tmpdir("nginx");
    let (ca, cert, key) = ca_and_leaf(&dir, "leaf", 30);
    let (_, short, short_key) = ca_and_leaf(&dir, "short", 5);
    let (p13, p12) = (free_tcp_port(), free_tcp_port());
    // The TLS 1.2 server advertises h3 on a UDP port nothing listens on.
    let udp_closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let servers = format!(
        "server {{ listen 127.0.0.1:{p13} ssl http2; ssl_certificate {}; ssl_certificate_key {};\n\
           ssl_protocols TLSv1.2 TLSv1.3; ssl_ecdh_curve X25519:prime256v1;\n\
           location / {{ default_type text/plain; return 200 'hello from nginx\\n'; }} }}\n\
         server {{ listen 127.0.0.1:{p12} ssl http2; ssl_certificate {}; ssl_certificate_key {};\n\
           ssl_protocols TLSv1.2; ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256; ssl_ecdh_curve X25519:prime256v1;\n\
           add_header Alt-Svc 'h3=\":{udp_closed}\"; ma=60' always;\n\
           location / {{ default_type text/plain; return 200 'hello\\n'; }} }}",
        cert.display(),
        key.display(),
        short.display(),
        short_key.display()
    );
    let _nginx = nginx(&dir, &servers);
    wait_tcp(format!("127.0.0.1:{p13}").parse().unwrap());
    wait_tcp(format!("127.0.0.1:{p12}").parse().unwrap());
    let u13 = format!("https://localhost:{p13}/");
    let u12 = format!("https://127.0.0.1:{p12}/x");
    let (code, v) = probe_json(&[&u13, &u12, "--ca", ca.to_str().unwrap(), "--timeout", "2"]);
    assert_eq!(code, 0, "{v:#}");
    // TLS 1.3: OpenSSL 3.0 has no ML-KEM, so X25519 (from the probe's second key share, no
    // HelloRetryRequest); ALPN h2; tickets resume.
    let t = target(&v, &u13);
    assert_eq!(t["status"], "ok", "{}", verdicts(t));
    let p = conn(t, "primary");
    assert_eq!(p["tls"]["version"], "TLSv1.3");
    assert_eq!(p["tls"]["key_exchange_group"], "X25519");
    assert_eq!(p["tls"]["alpn"], "h2");
    assert_eq!(p["tls"]["handshake_kind"], "full");
    assert_eq!(p["request"]["protocol"], "h2");
    assert_eq!(p["request"]["status"], 200);
    assert_eq!(p["request"]["body_bytes"], 17);
    assert!(p["request"]["server"]
        .as_str()
        .unwrap()
        .starts_with("nginx"));
    assert!(p["request"]["alt_svc"].is_null());
    assert_eq!(conn(t, "http/1.1")["request"]["status"], 200);
    assert_eq!(conn(t, "resumption")["tls"]["handshake_kind"], "resumed");
    assert!(t["http"]["h3"].is_null(), "no Alt-Svc, no h3");
    assert_eq!(t["http"]["certificate"]["verified"], true);
    // TLS 1.2 only, ECDHE: the suite, the group and ALPN as negotiated; a warning, not broken;
    // and a certificate about to expire.
    let t = target(&v, &u12);
    assert_eq!(t["status"], "warning", "{}", verdicts(t));
    let p = conn(t, "primary");
    assert_eq!(p["tls"]["version"], "TLSv1.2");
    assert_eq!(
        p["tls"]["cipher_suite"],
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
    );
    assert_eq!(p["tls"]["key_exchange_group"], "X25519");
    assert_eq!(p["tls"]["alpn"], "h2");
    assert_eq!(p["request"]["status"], 200);
    assert_eq!(conn(t, "resumption")["tls"]["handshake_kind"], "resumed");
    let all = verdicts(t);
    assert!(all.contains("negotiated TLS 1.2"), "{all}");
    // 5 days from signing: 4 once a second has passed, or 5 if openssl rounded up.
    let days = t["http"]["certificate"]["chain"][0]["days_left"]
        .as_i64()
        .unwrap();
    assert!((4..=5).contains(&days), "{days}");
    assert!(
        all.contains(&format!("certificate expires in {days} days")),
        "{all}"
    );
    // h3 advertised but unreachable over UDP: a warning naming both.
    assert_eq!(t["http"]["h3"]["forced"], false);
    assert_eq!(
        t["http"]["h3"]["address"],
        format!("127.0.0.1:{udp_closed}")
    );
    let h3 = conn(t, "h3");
    assert_eq!(
        (
            h3["error"]["stage"].as_str(),
            h3["error"]["timeout"].as_bool()
        ),
        (Some("quic"), Some(true)),
        "{h3}"
    );
    assert!(all.contains("h3 advertised (h3="), "{all}");
    assert!(all.contains("but not reachable over UDP"), "{all}");

    // --h3 against a server without HTTP/3: reported, never a hang.
    let (code, v) = probe_json(&[&u13, "--ca", ca.to_str().unwrap(), "--h3", "--timeout", "1"]);
    assert_eq!(code, 0, "{v:#}");
    let t = target(&v, &u13);
    assert_eq!(t["http"]["h3"]["forced"], true);
    let h3 = conn(t, "h3");
    assert_eq!(h3["error"]["stage"], "quic");
    assert!(
        verdicts(t).contains("h3 forced but not reachable over UDP"),
        "{}",
        verdicts(t)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn coturn_stun_rfc5780_and_turn() {
    need("turnserver");
    let dir = tmpdir("coturn");
    let port = free_port_pair();
    let conf = dir.join("coturn.conf");
    std::fs::write(
        &conf,
        format!(
            "listening-ip=127.0.0.1\nlistening-ip=127.0.0.2\nrelay-ip=127.0.0.1\n\
             listening-port={port}\nalt-listening-port={}\nmin-port=45000\nmax-port=45999\n\
             realm=probe.test\nlt-cred-mech\nuser=bob:pass\nfingerprint\nno-tls\nno-dtls\n\
             allow-loopback-peers\nno-cli\nno-multicast-peers\npidfile={d}/coturn.pid\n\
             log-file={d}/coturn.log\n",
            port + 1,
            d = dir.display()
        ),
    )
    .unwrap();
    let _coturn = Daemon(
        Command::new("turnserver")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn turnserver"),
    );
    wait_tcp(format!("127.0.0.1:{port}").parse().unwrap());
    let stun = format!("stun:127.0.0.1:{port}");
    let turn = format!("turn:127.0.0.1:{port}");
    let (code, v) = probe_json(&[&stun, &turn, "--user", "bob", "--password", "pass", "--nat"]);
    assert_eq!(code, 0, "{v:#}");
    let t = target(&v, &stun);
    assert_eq!(t["status"], "ok", "{}", verdicts(t));
    for name in ["udp", "tcp"] {
        let b = &transport(t, name)["binding"];
        assert_eq!(b["rfc5780"], true, "{b}");
        assert_eq!(b["other_address"], format!("127.0.0.2:{}", port + 1));
        assert!(b["software"].as_str().unwrap().starts_with("Coturn"), "{b}");
    }
    let nat = &t["stun"]["nat"];
    assert_eq!(nat["status"], "ok", "{nat}");
    assert_eq!(nat["nat_type"], "open-internet");
    assert!(verdicts(t).contains("NAT type open-internet"));
    // turn: without a transport: UDP and TCP, each relaying the echoes.
    let t = target(&v, &turn);
    assert_eq!(t["status"], "ok", "{}", verdicts(t));
    for name in ["udp", "tcp"] {
        let turn = &transport(t, name)["turn"];
        assert_eq!(turn["realm"], "probe.test");
        assert!(turn["relayed_address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"));
        assert_eq!(turn["echo"]["received"], 5, "{turn}");
    }
    // Wrong password and no credentials: broken, with the reason.
    let (code, v) = probe_json(&[
        &format!("{turn}?transport=udp"),
        "--user",
        "bob",
        "--password",
        "x",
    ]);
    assert_eq!(code, 1);
    let msg = verdicts(&v["targets"][0]);
    assert!(msg.contains("401"), "{msg}");
    let (code, v) = probe_json(&[&format!("{turn}?transport=udp")]);
    assert_eq!(code, 1);
    let msg = verdicts(&v["targets"][0]);
    assert!(msg.contains("TURN needs credentials"), "{msg}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn closed_ports_and_silent_servers_time_out() {
    // A listener that accepts and never answers (the backlog accepts for it; this thread holds
    // the accepted sockets open).
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_addr = hung.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hung.incoming() {
            held.push(s);
        }
    });
    // Closed: TCP and UDP ports nothing listens on.
    let closed = free_tcp_port();
    let udp_closed = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let urls = [
        format!("https://{hung_addr}/"),
        format!("http://{hung_addr}/"),
        format!("http://127.0.0.1:{closed}/"),
        format!("stun:127.0.0.1:{udp_closed}?transport=udp"),
        format!("turn:{hung_addr}?transport=tcp"),
        format!("stuns:{hung_addr}"),
    ];
    let mut args: Vec<&str> = urls.iter().map(String::as_str).collect();
    args.extend(["--timeout", "1", "--user", "a", "--password", "b"]);
    let t0 = Instant::now();
    let (code, v) = probe_json(&args);
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["status"], "broken");
    for t in v["targets"].as_array().unwrap() {
        assert_eq!(t["status"], "broken", "{t:#}");
    }
    let e = &conn(target(&v, &urls[0]), "primary")["error"];
    assert_eq!(
        (e["stage"].as_str(), e["timeout"].as_bool()),
        (Some("tls"), Some(true)),
        "{e}"
    );
    assert!(verdicts(target(&v, &urls[0])).contains("never answered the ClientHello"));
    let e = &conn(target(&v, &urls[1]), "primary")["error"];
    assert_eq!(
        (e["stage"].as_str(), e["timeout"].as_bool()),
        (Some("request"), Some(true)),
        "{e}"
    );
    let e = &conn(target(&v, &urls[2]), "primary")["error"];
    assert_eq!(
        (e["stage"].as_str(), e["timeout"].as_bool()),
        (Some("connect"), Some(false)),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("refused"), "{e}");
    let e = &transport(target(&v, &urls[3]), "udp")["error"];
    assert_eq!(e["stage"], "binding");
    assert!(
        e["message"].as_str().unwrap().contains("unreachable"),
        "{e}"
    );
    let e = &transport(target(&v, &urls[4]), "tcp")["error"];
    assert_eq!(
        (e["stage"].as_str(), e["timeout"].as_bool()),
        (Some("binding"), Some(true)),
        "{e}"
    );
    let e = &transport(target(&v, &urls[5]), "tls")["error"];
    assert_eq!(
        (e["stage"].as_str(), e["timeout"].as_bool()),
        (Some("tls"), Some(true)),
        "{e}"
    );

    // A name that does not resolve, and a bad URL: broken, exit 1; no target at all: usage (2).
    let (code, v) = probe_json(&["https://nonexistent.invalid/", "ftp://x/", "--timeout", "2"]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(
        target(&v, "https://nonexistent.invalid/")["error"]["stage"],
        "dns"
    );
    assert_eq!(target(&v, "ftp://x/")["error"]["stage"], "url");
    let (code, out) = probe_text(&[]);
    assert_eq!(code, 2, "{out}");
}

/// `--compare` in the NAT lab with 5 % loss on the router (nftables `numgen random`): a page of
/// 20 parallel requests, repeated. On h2 every request shares one TCP byte stream, so one lost
/// segment holds back the responses behind it (head-of-line blocking); on h3 each request is its
/// own QUIC stream and a loss delays only the stream it hit.
#[test]
fn compare_h2_head_of_line_blocking_vs_h3_under_loss() {
    use crate::lab::{Lab, NatKind, SERVER_IP};
    let _heavy = crate::common::heavy();
    let mut lab = Lab::new();
    let site = lab.add_nat(NatKind::PortRestrictedCone);
    let https = format!("{SERVER_IP}:8443");
    let _server = lab.start_switchboard(&["--https", &https, "--http", "off"]);
    let path = std::env::var("SB_PROBE_PATH").unwrap_or("/healthz".into());
    let url = format!("https://{https}{path}");
    let loss = std::env::var("SB_PROBE_LOSS").unwrap_or("5".into());
    let compare = |label: &str| {
        let out = run(
            site.command(BIN).args([
                "probe",
                &url,
                "--insecure",
                "--compare",
                "--repeat",
                "60",
                "--parallel",
                "20",
                "--json",
            ]),
            Duration::from_secs(300),
        );
        let v: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        let rows = v["targets"][0]["http"]["compare"]
            .as_array()
            .unwrap()
            .clone();
        for r in &rows {
            eprintln!(
                "{label}: {} rounds {} median {} p90 {} max {} req median {} req p90 {} errors {} {}",
                r["protocol"], r["rounds"], r["median_ms"], r["p90_ms"], r["max_ms"],
                r["request_median_ms"], r["request_p90_ms"], r["errors"], r["error"]
            );
        }
        rows
    };
    let clean = compare("no loss");
    let router = site.router.clone().unwrap();
    let rules = format!(
        "table inet sbloss {{\n  chain dropper {{\n    type filter hook forward priority 10;\n    \
         numgen random mod 100 < {loss} drop\n  }}\n}}\n"
    );
    let mut nft = crate::lab::ns_command(&router, "nft");
    nft.args(["-f", "-"]).stdin(Stdio::piped());
    let mut child = nft.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let lossy = compare("loss");
    let get = |rows: &[Value], p: &str| rows.iter().find(|r| r["protocol"] == p).unwrap().clone();
    // Rounds held back by a loss for 100 ms or more (a TCP retransmission timeout is 200 ms).
    let stalls = |r: &Value| {
        r["samples_ms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| num(s) >= 100.0)
            .count()
    };
    for p in ["http/1.1", "h2", "h3"] {
        let r = get(&clean, p);
        assert_eq!(
            (r["rounds"].as_u64(), r["errors"].as_u64()),
            (Some(60), Some(0)),
            "{r}"
        );
        assert_eq!(stalls(&r), 0, "stalls without loss: {r}");
    }
    let (h2, h3) = (get(&lossy, "h2"), get(&lossy, "h3"));
    eprintln!(
        "stalled rounds under loss: h2 {}, h3 {}",
        stalls(&h2),
        stalls(&h3)
    );
    // Head-of-line blocking shows as rounds stalled for a TCP retransmission timeout (over
    // 100 ms) and as the worst round; QUIC recovers each stream on its own (its rounds may be a
    // little slower on average — a p90 comparison flips with a handful of stalls in 60 rounds).
    assert!(
        stalls(&h2) > stalls(&h3) && num(&h2["max_ms"]) > num(&h3["max_ms"]),
        "h2 should stall more than h3 under loss:\nh2 {h2}\nh3 {h3}"
    );
}
