//! The command line: config default/show, settings precedence and errors, serve/stop.

use std::process::Command;
use std::time::Duration;

use crate::common::{run, text, Server, TestServer, BIN};

fn sb(args: &[&str]) -> std::process::Output {
    run(Command::new(BIN).args(args), Duration::from_secs(20))
}

#[test]
fn config_default_is_commented_and_loads_back() {
    let out = sb(&["config", "default"]);
    assert!(out.status.success());
    let default = String::from_utf8(out.stdout).unwrap();
    assert!(
        default.lines().filter(|l| l.starts_with('#')).count() > 10,
        "not commented:\n{default}"
    );
    for key in [
        "udp",
        "tcp",
        "tls",
        "alt_address",
        "alt_port",
        "cert",
        "key",
        "log_format",
        "listen",
    ] {
        assert!(default.contains(key), "default config lacks {key}");
    }
    // Loading the printed file gives the same effective settings as no file at all.
    let dir = std::env::temp_dir().join(format!("sb-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("default.toml");
    std::fs::write(&file, &default).unwrap();
    let with_file = sb(&["config", "show", "--config", file.to_str().unwrap()]);
    let without = sb(&["config", "show"]);
    assert!(with_file.status.success(), "{}", text(&with_file));
    assert_eq!(with_file.stdout, without.stdout);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn precedence_file_env_flags() {
    let dir = std::env::temp_dir().join(format!("sb-prec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        "[stun]\nudp = \"127.0.0.1:4001\"\ntcp = \"127.0.0.1:4002\"\nsoftware = \"file\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();

    let show = |env: &[(&str, &str)], flags: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["config", "show", "--config", f]).args(flags);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run(&mut cmd, Duration::from_secs(20));
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let s = show(&[], &[]);
    assert!(
        s.contains("127.0.0.1:4001") && s.contains("\"file\""),
        "{s}"
    );
    let s = show(
        &[
            ("SWITCHBOARD_STUN_UDP", "127.0.0.1:5001"),
            ("SWITCHBOARD_SOFTWARE", "env"),
        ],
        &[],
    );
    assert!(
        s.contains("127.0.0.1:5001") && !s.contains("4001") && s.contains("\"env\""),
        "{s}"
    );
    let s = show(
        &[("SWITCHBOARD_STUN_UDP", "127.0.0.1:5001")],
        &[
            "--stun-udp",
            "127.0.0.1:6001",
            "--stun-udp",
            "127.0.0.1:6002",
        ],
    );
    assert!(
        s.contains("127.0.0.1:6001") && s.contains("127.0.0.1:6002") && !s.contains("5001"),
        "{s}"
    );
    assert!(
        s.contains("127.0.0.1:4002"),
        "file value kept where nothing overrides it: {s}"
    );
    // SWITCHBOARD_CONFIG names the file when --config is absent.
    let out = run(
        Command::new(BIN)
            .args(["config", "show"])
            .env("SWITCHBOARD_CONFIG", f),
        Duration::from_secs(20),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:4001"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_settings_stop_start_up_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("sb-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "[stun]\nupd = \"127.0.0.1:1\"\n").unwrap();
    let bad_value = dir.join("bad.toml");
    std::fs::write(&bad_value, "[stun]\nudp = \"nowhere\"\n").unwrap();

    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["serve", "--config", unknown.to_str().unwrap()],
            vec![],
            "upd",
        ),
        (
            vec!["serve", "--config", bad_value.to_str().unwrap()],
            vec![],
            "nowhere",
        ),
        (
            vec!["serve", "--config", "/nonexistent/sb.toml"],
            vec![],
            "/nonexistent/sb.toml",
        ),
        (
            vec!["serve", "--stun-udp", "127.0.0.1"],
            vec![],
            "--stun-udp",
        ),
        (
            vec!["serve", "--alt-address", "not-an-ip"],
            vec![],
            "--alt-address",
        ),
        (vec!["serve", "--log-format", "xml"], vec![], "xml"),
        (
            vec!["serve"],
            vec![("SWITCHBOARD_ALT_PORT", "99999")],
            "SWITCHBOARD_ALT_PORT",
        ),
        (
            vec!["serve", "--tls-cert", "/tmp/x.pem"],
            vec![],
            "--tls-key",
        ),
        (
            vec![
                "serve",
                "--tls-cert",
                "/nonexistent/c.pem",
                "--tls-key",
                "/nonexistent/k.pem",
                "--stun-udp",
                "off",
                "--stun-tcp",
                "off",
                "--http",
                "off",
            ],
            vec![],
            "/nonexistent/c.pem",
        ),
    ];
    for (args, env, needle) in cases {
        let mut cmd = Command::new(BIN);
        cmd.args(&args);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = run(&mut cmd, Duration::from_secs(20));
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {t}");
        assert!(
            t.contains(needle),
            "{args:?} {env:?}: message does not name {needle}: {t}"
        );
        assert!(!t.contains("panicked"), "{t}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn serve_prints_listeners_and_stops_on_sigterm() {
    let server = TestServer::new()
        .stun_udp()
        .stun_tcp()
        .stun_tls()
        .http()
        .start();
    for (p, t) in [
        ("stun", "udp"),
        ("stun", "tcp"),
        ("stun", "tls"),
        ("http", "tcp"),
    ] {
        let a = server.addr(p, t);
        assert_ne!(a.port(), 0, "real port printed for {p} {t}");
    }
    assert_eq!(server.lines.last().map(String::as_str), Some("ready"));
    let cert = server
        .lines
        .iter()
        .find(|l| l.starts_with("tls"))
        .expect("a tls line with a TLS listener on");
    assert!(
        cert.contains("self-signed") && cert.contains("sha256"),
        "{cert}"
    );
    let (status, body) = crate::common::http_get(server.addr("http", "tcp"), "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let status = server.stop();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

#[test]
fn off_disables_listeners() {
    let server = TestServer::new().stun_udp().start();
    // No TLS listener: no certificate line; no HTTP listener: no pages line.
    assert_eq!(server.lines.len(), 2, "{:?}", server.lines);
    assert!(server.lines[0].starts_with("stun  udp"));
    assert_eq!(server.lines[1], "ready");
}

#[test]
fn default_listeners_match_the_brief() {
    let out = sb(&["config", "show"]);
    let s = String::from_utf8(out.stdout).unwrap();
    for want in ["127.0.0.1:3478", "127.0.0.1:5349"] {
        assert!(s.contains(want), "{s}");
    }
}

#[test]
fn configuration_reference_is_generated_from_the_table() {
    let out = sb(&["config", "reference"]);
    assert!(out.status.success(), "{}", text(&out));
    let generated = String::from_utf8(out.stdout).unwrap();
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ))
    .unwrap();
    let marker = "<!-- Generated by `switchboard config reference`; a test keeps it equal. -->\n";
    let (_, committed) = doc
        .split_once(marker)
        .expect("marker in docs/configuration.md");
    assert!(
        committed == generated,
        "docs/configuration.md is stale: regenerate its reference with \
         `switchboard config reference`"
    );
    // Every flag of `serve --help` is in the reference, under its heading.
    let help = text(&sb(&["serve", "--help"]));
    for heading in [
        "Listeners:",
        "TLS:",
        "STUN:",
        "TURN:",
        "Hub:",
        "HTTP:",
        "Cluster:",
        "Logging:",
    ] {
        assert!(
            help.contains(heading),
            "{heading} missing from serve --help"
        );
    }
    // An option line is `--NAME <VALUE>` at the start (continuation lines have spaces before).
    let flags: Vec<&str> = help
        .lines()
        .map(str::trim)
        .filter_map(|l| l.split_once(" <").map(|(flag, _)| flag))
        .filter(|f| f.starts_with("--") && !f.contains(' ') && *f != "--config")
        .collect();
    assert!(flags.len() > 80, "{flags:?}");
    for flag in flags {
        assert!(
            generated.contains(&format!("`{flag} ")),
            "{flag} not in the reference"
        );
    }
}

#[test]
fn config_show_redacts_secrets() {
    let args = [
        "config",
        "show",
        "--turn-realm",
        "r",
        "--turn-user",
        "alice:hunter2",
        "--turn-secret",
        "s3cret",
        "--api-key",
        "k3y",
        "--jwt-hmac-secret",
        "jwts3cret",
    ];
    let shown = text(&sb(&args));
    for secret in ["hunter2", "s3cret", "k3y", "jwts3cret"] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    assert!(shown.contains("alice:<redacted>"), "{shown}");
    let mut reveal = args.to_vec();
    reveal.push("--reveal-secrets");
    let revealed = text(&sb(&reveal));
    for secret in ["hunter2", "s3cret", "k3y", "jwts3cret"] {
        assert!(
            revealed.contains(secret),
            "{secret} not revealed: {revealed}"
        );
    }
}

#[test]
fn unknown_environment_variables_are_warnings() {
    // What Kubernetes injects for a Service named switchboard, and a typo.
    let out = run(
        Command::new(BIN)
            .args(["config", "show"])
            .env("SWITCHBOARD_PORT", "tcp://10.0.0.1:8080")
            .env("SWITCHBOARD_SERVICE_HOST", "10.0.0.1")
            .env("SWITCHBOARD_STUN_UPD", "127.0.0.1:1")
            .env("SWITCHBOARD_SOFTWARE", "from-env"),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in [
        "SWITCHBOARD_PORT",
        "SWITCHBOARD_SERVICE_HOST",
        "SWITCHBOARD_STUN_UPD",
    ] {
        assert!(
            stderr.contains(name),
            "warning does not name {name}: {stderr}"
        );
    }
    assert!(stderr.contains("warning"), "{stderr}");
    assert!(!stderr.contains("SWITCHBOARD_SOFTWARE"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"from-env\""));
    // serve starts with them too, and says so in its log.
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--stun-udp",
        "127.0.0.1:0",
        "--stun-tcp",
        "off",
        "--stun-tls",
        "off",
        "--http",
        "off",
        "--https",
        "off",
    ])
    .env("SWITCHBOARD_PORT", "tcp://10.0.0.1:8080");
    let server = Server::start_command(cmd);
    assert_ne!(server.addr("stun", "udp").port(), 0);
    assert!(server.stop().success());
}

#[test]
fn error_messages_say_it_once_and_keep_the_toml_snippet() {
    // An OS error once, not twice.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = sb(&[
        "serve",
        "--stun-udp",
        "off",
        "--stun-tcp",
        "off",
        "--stun-tls",
        "off",
        "--https",
        "off",
        "--http",
        &addr,
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert_eq!(t.matches("in use").count(), 1, "{t}");
    assert!(t.contains(&addr), "{t}");
    let out = sb(&["serve", "--config", "/nonexistent/sb.toml"]);
    let t = text(&out);
    assert_eq!(t.matches("No such file").count(), 1, "{t}");
    // The TOML parser's snippet (line, caret) is kept, over several lines.
    let dir = std::env::temp_dir().join(format!("sb-msg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broken.toml");
    std::fs::write(&file, "[stun]\nudp = [\"127.0.0.1:1\"\n").unwrap();
    let out = sb(&["config", "show", "--config", file.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.lines().count() >= 3 && t.contains('^'), "{t}");
    std::fs::remove_dir_all(&dir).ok();
    // A port out of range says so; the value is quoted once.
    for (flag, value) in [("--alt-port", "99999"), ("--stun-udp", "127.0.0.1:99999")] {
        let out = sb(&["config", "show", flag, value]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(t.contains("out of range") && t.contains(flag), "{t}");
        assert_eq!(t.matches("99999").count(), 1, "{t}");
    }
    let out = sb(&["serve", "--log-level", "=bad=", "--stun-udp", "off"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("--log-level"), "{t}");
}

#[test]
fn listen_addresses_as_operators_write_them() {
    let out = sb(&[
        "config",
        "show",
        "--http",
        "localhost:8081",
        "--stun-udp",
        ":3479",
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("\"127.0.0.1:8081\"") && t.contains("\"0.0.0.0:3479\""),
        "{t}"
    );
    let out = sb(&["config", "show", "--http", "example.com:80"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn a_second_server_on_the_same_udp_port_fails_to_start() {
    // The per-core sockets share the port with SO_REUSEPORT; another process must not join
    // their group and split the clients (TURN allocations would break without an error).
    let first = TestServer::new().stun_udp().start();
    let addr = first.addr("stun", "udp").to_string();
    let second = TestServer::new().listen("--stun-udp", &addr).argv();
    let mut args = vec!["serve"];
    args.extend(second.iter().map(String::as_str));
    let out = sb(&args);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("in use") && t.contains(&addr), "{t}");
    assert!(first.stop().success());
}

#[test]
fn cargo_run_from_the_root_has_one_binary_to_run() {
    // The README's first command, `cargo run --release -- serve`, needs exactly one binary
    // among the workspace's default members (cargo refuses to guess otherwise).
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = run(
        Command::new(cargo)
            .args([
                "metadata",
                "--no-deps",
                "--format-version",
                "1",
                "--offline",
            ])
            .current_dir(root),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let defaults: Vec<&str> = meta["workspace_default_members"]
        .as_array()
        .expect("cargo reports the default members")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let bins: Vec<&str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| defaults.contains(&p["id"].as_str().unwrap_or("")))
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(bins, ["switchboard"]);
}
