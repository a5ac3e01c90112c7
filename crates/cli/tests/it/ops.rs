//! What an operator reaches for: `version` with its commit, shell completions and man pages,
//! `token` and `turn-credential` accepted by the server and by coturn's client, the access log,
//! and the admin surface (metrics and console not public, server API on the admin listener).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{need, run, text, uclient_cmd, Server, TestServer, TurnPeer, BIN};

fn sb(args: &[&str]) -> std::process::Output {
    run(Command::new(BIN).args(args), Duration::from_secs(20))
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", text(out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let line = stdout(&sb(&["version"]));
    let rest = line
        .strip_prefix(&format!(
            "switchboard {} (commit ",
            env!("CARGO_PKG_VERSION")
        ))
        .unwrap_or_else(|| panic!("{line:?}"));
    let (commit, date) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", built "))
        .unwrap_or_else(|| panic!("{line:?}"));
    // The checkout's commit when git can tell (a clean clone in CI can).
    let head = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match head {
        Some(h) => assert_eq!(commit, h, "{line:?}"),
        None => assert_eq!(commit, "unknown"),
    }
    let d: Vec<&str> = date.split('-').collect();
    assert!(
        d.len() == 3 && d[0].len() == 4 && d.iter().all(|p| p.parse::<u32>().is_ok()),
        "{date:?}"
    );
    assert_eq!(stdout(&sb(&["--version"])), line);
}

#[test]
fn completions_and_man_pages_come_from_the_same_definitions() {
    let bash = stdout(&sb(&["completions", "bash"]));
    for word in ["serve", "turn-credential", "--turn-secret", "--admin"] {
        assert!(
            bash.contains(word),
            "{word} missing from the bash completions"
        );
    }
    // The script is valid bash.
    let dir = tempdir("man");
    let script = dir.join("switchboard.bash");
    std::fs::write(&script, &bash).unwrap();
    let check = run(
        Command::new("bash").arg("-n").arg(&script),
        Duration::from_secs(10),
    );
    assert!(check.status.success(), "{}", text(&check));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(stdout(&sb(&["completions", shell])).contains("turn-credential"));
    }
    let bad = sb(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));

    let page = stdout(&sb(&["man"]));
    assert!(
        page.starts_with(".ie") || page.contains(".TH switchboard 1"),
        "{page:.200}"
    );
    let written = stdout(&sb(&["man", "--dir", dir.to_str().unwrap()]));
    assert!(written.lines().count() >= 8, "{written}");
    let serve = std::fs::read_to_string(dir.join("switchboard-serve.1")).unwrap();
    assert!(serve.contains(".TH switchboard-serve 1"), "{serve:.300}");
    // Every setting's flag, with its help, is in the serve page (roff escapes dashes).
    for flag in [
        "turn\\-secret",
        "hub\\-history\\-memory",
        "access\\-log",
        "admin",
    ] {
        assert!(
            serve.contains(flag),
            "{flag} missing from switchboard-serve.1"
        );
    }
    if which("groff") {
        let out = run(
            Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-z"])
                .arg(dir.join("switchboard-serve.1")),
            Duration::from_secs(20),
        );
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            text(&out)
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-ops-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One GET; (status, body). The body of an SSE stream is what arrived within `wait`.
fn get(addr: SocketAddr, path: &str, wait: Duration) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(wait)).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = Instant::now() + wait;
    while Instant::now() < end {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let resp = String::from_utf8_lossy(&buf).into_owned();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn tokens_minted_by_the_cli_are_what_the_hub_accepts() {
    let server = TestServer::new().http().jwt("k3y").start();
    let http = server.addr("http", "tcp");
    let token = |extra: &[&str]| {
        let mut args = vec!["token", "--user", "alice", "--jwt-hmac-secret", "k3y"];
        args.extend_from_slice(extra);
        stdout(&sb(&args))
    };
    let sse = |channel: &str, token: &str| {
        get(
            http,
            &format!("/v1/sse?channel={channel}&token={token}"),
            Duration::from_millis(600),
        )
    };
    let news = token(&["--channels", "news,live*"]);
    let (status, body) = sse("news", &news);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""user":"alice""#) && body.contains(r#""subscribe""#),
        "{body}"
    );
    assert_eq!(sse("live42", &news).0, 200);
    // The channels claim scopes it: another channel is 103.
    let (status, body) = sse("other", &news);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(r#""code":103"#), "{body}");
    // --rooms lands in the same claim.
    assert_eq!(sse("demo", &token(&["--rooms", "demo"])).0, 200);
    // Expiry: 109 once it passed.
    let short = token(&["--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let (status, body) = sse("news", &short);
    assert!(
        status == 401 && body.contains(r#""code":109"#),
        "{status} {body}"
    );
    // Another key: 101.
    let forged = stdout(&sb(&[
        "token",
        "--user",
        "mallory",
        "--jwt-hmac-secret",
        "other",
    ]));
    let (status, body) = sse("news", &forged);
    assert!(
        status == 401 && body.contains(r#""code":101"#),
        "{status} {body}"
    );
    // No key at all: a clear error, exit 2.
    let none = sb(&["token", "--user", "alice"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(text(&none).contains("no signing key"), "{}", text(&none));
    let bad = sb(&[
        "token",
        "--user",
        "a",
        "--jwt-hmac-secret",
        "k",
        "--expires",
        "soon",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).contains("--expires"), "{}", text(&bad));
}

#[test]
fn es256_and_rs256_tokens_from_private_key_files() {
    need("openssl");
    let dir = tempdir("keys");
    let sh = |args: &[&str]| {
        let out = run(
            Command::new("openssl").args(args).current_dir(&dir),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    };
    sh(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "ec.pem",
    ]);
    sh(&["pkey", "-in", "ec.pem", "-pubout", "-out", "ec.pub"]);
    sh(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "rsa.pem",
    ]);
    sh(&["pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub"]);
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let server = TestServer::new()
        .http()
        .flag("--jwt-ecdsa-public-key", &p("ec.pub"))
        .flag("--jwt-rsa-public-key", &p("rsa.pub"))
        .start();
    let http = server.addr("http", "tcp");
    for (flag, key) in [
        ("--ecdsa-private-key", "ec.pem"),
        ("--rsa-private-key", "rsa.pem"),
    ] {
        let token = stdout(&sb(&["token", "--user", "bob", flag, &p(key)]));
        let (status, body) = get(
            http,
            &format!("/v1/sse?channel=news&token={token}"),
            Duration::from_millis(500),
        );
        assert_eq!(status, 200, "{flag}: {body}");
        assert!(body.contains(r#""user":"bob""#), "{body}");
    }
    // A public key is not a private key.
    let out = sb(&[
        "token",
        "--user",
        "bob",
        "--ecdsa-private-key",
        &p("ec.pub"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn turn_credentials_minted_by_the_cli_relay_coturns_client() {
    let peer = TurnPeer::start();
    let server = TestServer::new()
        .stun_udp()
        .flag("--turn-realm", "example.org")
        .flag("--turn-secret", "shared")
        .flag("--allow-peer", "127.0.0.0/8")
        .start();
    let port = server.addr("stun", "udp").port();
    for sha256 in [false, true] {
        let mut args = vec![
            "turn-credential",
            "--user",
            "carol",
            "--turn-secret",
            "shared",
            "--ttl",
            "10m",
            "--json",
        ];
        if sha256 {
            args.push("--sha256");
        }
        let json: serde_json::Value = serde_json::from_str(&stdout(&sb(&args))).unwrap();
        let username = json["username"].as_str().unwrap().to_owned();
        let password = json["password"].as_str().unwrap().to_owned();
        assert!(username.ends_with(":carol"), "{username}");
        assert_eq!(json["ttl"], 600);
        if sha256 {
            // switchboard accepts the SHA-256 variant; coturn's client cannot say which, so
            // only the SHA-1 one goes through uclient.
            assert_eq!(password.len(), 44, "{password}");
            continue;
        }
        let out = run(
            &mut uclient_cmd(
                &peer,
                port,
                1,
                20,
                5,
                &["-c", "-u", &username, "-w", &password],
            ),
            Duration::from_secs(60),
        );
        let t = text(&out);
        assert!(t.contains("Total lost packets 0 (0.000000%)"), "{t}");
        // A wrong secret is refused.
        let wrong = stdout(&sb(&[
            "turn-credential",
            "--user",
            "carol",
            "--turn-secret",
            "nope",
            "--json",
        ]));
        let wrong: serde_json::Value = serde_json::from_str(&wrong).unwrap();
        let out = run(
            &mut uclient_cmd(
                &peer,
                port,
                1,
                5,
                5,
                &[
                    "-c",
                    "-u",
                    wrong["username"].as_str().unwrap(),
                    "-w",
                    wrong["password"].as_str().unwrap(),
                ],
            ),
            Duration::from_secs(60),
        );
        assert!(
            !text(&out).contains("Total lost packets 0 (0.000000%)"),
            "{}",
            text(&out)
        );
    }
    let none = sb(&["turn-credential", "--user", "carol"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(text(&none).contains("no TURN secret"), "{}", text(&none));
    let colon = sb(&["turn-credential", "--user", "a:b", "--turn-secret", "s"]);
    assert_eq!(colon.status.code(), Some(2));
}

/// The access lines (target switchboard::access) of a JSON log.
fn access_lines(server: &Server) -> Vec<serde_json::Value> {
    server
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "switchboard::access")
        .collect()
}

#[test]
fn access_log_has_a_line_per_http_request_and_per_turn_allocation() {
    let peer = TurnPeer::start();
    let server = TestServer::new()
        .http()
        .stun_udp()
        .stun_tcp()
        .turn_user("example.org", "alice:secret")
        .flag("--allow-peer", "127.0.0.0/8")
        .flag("--log-format", "json")
        .start();
    let http = server.addr("http", "tcp");
    let (status, body) = get(http, "/healthz?secret=not-logged", Duration::from_secs(2));
    assert_eq!(status, 200);
    let (status, _) = get(http, "/nothing-here", Duration::from_secs(2));
    assert_eq!(status, 404);
    let port = server.addr("stun", "tcp").port();
    let out = run(
        &mut uclient_cmd(
            &peer,
            port,
            1,
            10,
            5,
            &["-t", "-c", "-u", "alice", "-w", "secret"],
        ),
        Duration::from_secs(60),
    );
    assert!(
        text(&out).contains("Total lost packets 0"),
        "{}",
        text(&out)
    );
    // Lines are written when a response is done and within a second of an allocation's end.
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines = access_lines(&server);
        // (uclient opens a short test allocation first; the relaying one ends after it.)
        let turn = lines.iter().any(|l| {
            l["fields"]["message"] == "turn allocation" && l["fields"]["bytes_to_peer"] != 0
        });
        if turn || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let health = lines
        .iter()
        .find(|l| l["fields"]["path"] == "/healthz")
        .unwrap_or_else(|| panic!("no /healthz line in {lines:?}"));
    let f = &health["fields"];
    assert_eq!(health["level"], "INFO");
    assert_eq!(f["method"], "GET");
    assert_eq!(f["status"], 200);
    assert_eq!(f["bytes"], body.len() as u64, "{f}");
    assert!(f["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{f}");
    assert!(
        f["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{f}"
    );
    // The query string (tokens travel there) is not logged.
    assert!(!server.logs().contains("not-logged"));
    assert!(lines
        .iter()
        .any(|l| l["fields"]["path"] == "/nothing-here" && l["fields"]["status"] == 404));
    let turn = lines
        .iter()
        .find(|l| l["fields"]["message"] == "turn allocation" && l["fields"]["bytes_to_peer"] != 0)
        .unwrap_or_else(|| panic!("no turn allocation line in {lines:?}"));
    let f = &turn["fields"];
    assert_eq!(f["transport"], "tcp", "{f}");
    assert_eq!(f["user"], "alice", "{f}");
    // uclient deletes its allocation (Refresh 0) before it closes the connection.
    assert!(
        ["deleted", "connection_closed"].contains(&f["reason"].as_str().unwrap_or("")),
        "{f}"
    );
    assert_eq!(f["bytes_to_peer"], 10 * 170, "{f}");
    assert_eq!(f["bytes_to_client"], 10 * 170, "{f}");
    assert!(f["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{f}");

    // --access-log false: none.
    let quiet = TestServer::new()
        .http()
        .flag("--log-format", "json")
        .flag("--access-log", "false")
        .start();
    let (status, _) = get(
        quiet.addr("http", "tcp"),
        "/healthz",
        Duration::from_secs(2),
    );
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert!(access_lines(&quiet).is_empty(), "{}", quiet.logs());
}

#[test]
fn admin_listener_serves_metrics_and_the_api_when_asked() {
    let server = TestServer::new()
        .http()
        .api_key("k")
        .flag("--admin", "127.0.0.1:0")
        .flag("--api-admin-only", "true")
        .start();
    let http = server.addr("http", "tcp");
    let admin = server.addr("admin", "tcp");
    let line = server
        .lines
        .iter()
        .find(|l| l.starts_with("admin"))
        .unwrap();
    assert!(line.contains("/metrics"), "{line}");
    // Loopback main listener: metrics and the console as before.
    assert_eq!(get(http, "/metrics", Duration::from_secs(2)).0, 200);
    assert_eq!(get(admin, "/metrics", Duration::from_secs(2)).0, 200);
    assert_eq!(get(admin, "/", Duration::from_secs(2)).0, 200);
    // The server API only on the admin listener.
    let api = |addr: SocketAddr| {
        let out = run(
            Command::new("curl").args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Authorization: apikey k",
                "-H",
                "Content-Type: application/json",
                "-d",
                "{}",
                &format!("http://{addr}/v1/api/info"),
            ]),
            Duration::from_secs(10),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(api(admin), "200");
    assert_eq!(api(http), "404");
    // The banner points the console at the admin listener.
    let web = server.lines.iter().find(|l| l.starts_with("web")).unwrap();
    assert!(web.contains(&format!("console http://{admin}/")), "{web}");
    // Without an admin listener --api-admin-only is refused, naming both.
    let out = run(
        Command::new(BIN).args([
            "serve",
            "--api-admin-only",
            "true",
            "--http",
            "off",
            "--https",
            "off",
        ]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--admin"), "{}", text(&out));
}

#[test]
fn metrics_and_console_are_not_served_to_other_hosts() {
    use crate::lab::{ns_command, Lab};
    let _heavy = crate::common::heavy();
    need("curl");
    let mut lab = Lab::new();
    let outside = lab.add_open();
    let public_ip = "203.0.113.1";
    // The server listens on every address of its namespace; a client on the public segment
    // reaches it through 203.0.113.1, the server's own host through loopback.
    let start = |extra: &[&str]| {
        let mut cmd = ns_command(&lab.public_ns, BIN);
        cmd.arg("serve")
            .args([
                "--stun-udp",
                "off",
                "--stun-tcp",
                "off",
                "--stun-tls",
                "off",
                "--https",
                "off",
            ])
            .args([
                "--http",
                "0.0.0.0:8080",
                "--admin",
                "127.0.0.1:9090",
                "--api-key",
                "k",
            ])
            .args(extra);
        Server::start_command(cmd)
    };
    let status = |ns: &str, url: &str| {
        let out = run(
            ns_command(ns, "curl").args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-m",
                "5",
                url,
            ]),
            Duration::from_secs(10),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let public = format!("http://{public_ip}:8080");
    {
        let _server = start(&[]);
        assert_eq!(status(&outside.ns, &format!("{public}/healthz")), "200");
        assert_eq!(status(&outside.ns, &format!("{public}/call")), "200");
        assert_eq!(status(&outside.ns, &format!("{public}/metrics")), "404");
        assert_eq!(status(&outside.ns, &format!("{public}/")), "404");
        assert_eq!(
            status(&outside.ns, &format!("{public}/assets/console.js")),
            "404"
        );
        // The host itself, through loopback on the same listener, and the admin listener.
        assert_eq!(
            status(&lab.public_ns, "http://127.0.0.1:8080/metrics"),
            "200"
        );
        assert_eq!(
            status(&lab.public_ns, "http://127.0.0.1:9090/metrics"),
            "200"
        );
        assert_eq!(status(&lab.public_ns, "http://127.0.0.1:9090/"), "200");
    }
    {
        // Asked for: served publicly too.
        let _server = start(&["--public-admin", "true"]);
        assert_eq!(status(&outside.ns, &format!("{public}/metrics")), "200");
        assert_eq!(status(&outside.ns, &format!("{public}/")), "200");
    }
}

#[test]
fn the_javascript_sdk_is_served_by_the_binary() {
    use std::io::{Read, Write};
    let server = TestServer::new().http().start();
    let http = server.addr("http", "tcp");
    let root = crate::common::repo_root();
    for (path, file) in [
        ("/sdk/switchboard.js", "clients/js/switchboard.js"),
        ("/sdk/switchboard.d.ts", "clients/js/switchboard.d.ts"),
    ] {
        let mut s = std::net::TcpStream::connect(http).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: x\r\nOrigin: https://app.example.com\r\n\r\n"
        )
        .unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let text = String::from_utf8_lossy(&resp);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        // Any page may import it as a module.
        assert!(
            head.to_ascii_lowercase()
                .contains("access-control-allow-origin: "),
            "{head}"
        );
        assert_eq!(
            body,
            std::fs::read_to_string(root.join(file)).unwrap(),
            "{path}"
        );
    }
}
