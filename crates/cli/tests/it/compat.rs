//! Other servers' SDKs, unchanged, against switchboard: Centrifugo's client protocol at
//! `/connection/websocket` and its server API at `/api` (docs/compat.md), checked with
//! centrifuge-js (Node), centrifuge-python (JSON and protobuf) and cent; and the Pusher Channels
//! protocol at `/app/KEY` with its HTTP API at `/apps/ID`, checked with pusher-js and Pusher's
//! Node server library.

use std::process::Command;
use std::time::Duration;

use crate::common::{
    assert_checks, need, peer_script, repo_root, run, text, venv_python, Redis, TestServer,
};

const API_KEY: &str = "compat-key";
const SECRET: &str = "compat-jwt";

fn server() -> crate::common::Server {
    TestServer::new()
        .http()
        .api_key(API_KEY)
        .jwt(SECRET)
        .start()
}

#[test]
fn centrifuge_python_and_cent() {
    let server = server();
    let addr = server.addr("http", "tcp").to_string();
    let out = run(
        Command::new(venv_python())
            .arg(peer_script("centrifugo_checks.py"))
            .args([addr.as_str(), API_KEY, SECRET])
            .current_dir(repo_root().join("tests/peers")),
        Duration::from_secs(120),
    );
    assert_checks(
        &text(&out),
        &[
            "python-json-pubsub",
            "python-protobuf-pubsub",
            "python-token-user-and-channels-claim",
            "python-refused-token-3500",
            "python-json-recovery-after-cut",
            "python-protobuf-recovery-after-cut",
            "python-server-disconnect-3503",
            "python-rpc-not-available-108",
            "raw-batched-unknown-malformed",
            "cent-api-methods",
            "cent-channels",
        ],
    );
}

fn centrifuge_js(addr: &str) -> String {
    need("node");
    let dir = repo_root().join("tests/compat");
    assert!(
        dir.join("node_modules/centrifuge").is_dir(),
        "tests/compat/node_modules missing: run scripts/test (scripts/test-deps runs npm ci there)"
    );
    let out = run(
        Command::new("node")
            .arg("centrifuge_js.mjs")
            .args([addr, API_KEY, SECRET])
            .current_dir(&dir),
        Duration::from_secs(120),
    );
    text(&out)
}

#[test]
fn centrifuge_js_in_node() {
    let server = server();
    let out = centrifuge_js(&server.addr("http", "tcp").to_string());
    assert_checks(
        &out,
        &[
            "js-anonymous-pubsub-presence-history",
            "js-token-user-join-leave",
            "js-refused-token-no-reconnect",
            "js-recovery-after-cut",
            "js-server-disconnect",
            "js-unsupported-rpc-and-subscription-token",
        ],
    );
}

/// Two nodes on one Redis: a centrifuge-js subscriber on node 1 gets what cent publishes on
/// node 2, and switchboard's own WebSocket clients and Centrifugo's see the same offsets.
#[test]
fn centrifugo_clients_across_a_cluster() {
    let _heavy = crate::common::heavy();
    let redis = Redis::start();
    let nodes: Vec<_> = ["c1", "c2"]
        .iter()
        .map(|name| {
            TestServer::new()
                .http()
                .api_key(API_KEY)
                .jwt(SECRET)
                .flag("--redis", &redis.url())
                .flag("--node-name", name)
                .start()
        })
        .collect();
    let a = nodes[0].addr("http", "tcp").to_string();
    let b = nodes[1].addr("http", "tcp").to_string();
    let dir = repo_root().join("tests/compat");
    let out = run(
        Command::new("node")
            .arg("cluster.mjs")
            .args([a.as_str(), b.as_str(), API_KEY])
            .current_dir(&dir),
        Duration::from_secs(60),
    );
    assert_checks(
        &text(&out),
        &[
            "cluster-publish-on-other-node",
            "cluster-history-same-offsets",
        ],
    );
}

/// Two Pusher apps (the first with client events) in a config file.
const PUSHER_APPS: &str = r#"
[[pusher.apps]]
id = "100"
key = "app-key"
secret = "app-secret"
client_events = true

[[pusher.apps]]
id = "200"
key = "other-key"
secret = "other-secret"
"#;

fn pusher_config(name: &str, extra: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("sb-pusher-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, format!("{PUSHER_APPS}{extra}")).unwrap();
    path
}

/// pusher-js and Pusher's Node server library, unchanged: public, private (signed, and a forged
/// signature refused) and presence channels, client events on and off, socket exclusion, batch
/// events, channel info, app isolation, a publication through switchboard's own API reaching a
/// Pusher client, request signing (bad signature, stale timestamp, tampered body refused),
/// terminate_connections, and an unknown app key.
#[test]
fn pusher_js_and_the_pusher_server_library() {
    let config = pusher_config("js", "");
    let server = TestServer::new()
        .http()
        .api_key(API_KEY)
        .config(&config)
        .start();
    let addr = server.addr("http", "tcp").to_string();
    let out = run(
        Command::new("node")
            .arg("pusher_js.mjs")
            .args([addr.as_str(), API_KEY])
            .current_dir(repo_root().join("tests/compat")),
        Duration::from_secs(120),
    );
    assert_checks(
        &text(&out),
        &[
            "public-channel-trigger",
            "private-channel-auth-and-refusal",
            "presence-members-added-removed",
            "client-events-and-exclusion",
            "client-events-off-for-other-app",
            "apps-are-isolated",
            "batch-events-and-channel-info",
            "switchboard-api-reaches-pusher-clients",
            "bad-signature-and-stale-timestamp-refused",
            "terminate-user-connections",
            "unknown-app-key-4001",
        ],
    );
    std::fs::remove_file(config).ok();
}

/// Webhooks, checked by a receiver that verifies Pusher's signatures with Pusher's own server
/// library (PyPI `pusher`) and switchboard's with HMAC-SHA256: the Pusher app hears channels
/// occupied and vacated, members added and removed, and client events, each once; switchboard's
/// own webhooks hear a hub channel occupied and vacated, the connection closing and a TURN
/// allocation ending. The receiver refuses the first POST (503): the batch is retried.
#[test]
fn webhooks_for_pusher_apps_and_the_hub() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};
    let port_file = std::env::temp_dir().join(format!("sb-webhook-port-{}", std::process::id()));
    let _ = std::fs::remove_file(&port_file);
    let mut receiver = Command::new(venv_python())
        .arg(peer_script("webhook_receiver.py"))
        .arg(&port_file)
        .args(["100", "app-key", "app-secret", "hub-hook-secret"])
        .env("FAIL_FIRST", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("webhook receiver");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let out = receiver.stdout.take().unwrap();
    let keep = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            keep.lock().unwrap().push(line);
        }
    });
    let _receiver = Kill(receiver);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !lines.lock().unwrap().iter().any(|l| l == "READY") {
        assert!(
            std::time::Instant::now() < deadline,
            "receiver did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let port = std::fs::read_to_string(&port_file).unwrap();
    let config = pusher_config("hooks", "");
    // The first app sends its webhooks to the receiver.
    let toml = std::fs::read_to_string(&config).unwrap().replacen(
        "client_events = true",
        &format!("client_events = true\nwebhooks = [\"http://127.0.0.1:{port}/pusher\"]"),
        1,
    );
    std::fs::write(&config, toml).unwrap();
    let peer = crate::common::TurnPeer::start();
    let server = TestServer::new()
        .http()
        .stun_udp()
        .turn_user("example.org", "alice:secret")
        .flag("--allow-peer", "127.0.0.0/8")
        .flag("--webhook", &format!("http://127.0.0.1:{port}/hub"))
        .flag("--webhook-secret", "hub-hook-secret")
        .config(&config)
        .start();
    let http = server.addr("http", "tcp");
    // Pusher: members, a client event.
    let out = run(
        Command::new("node")
            .arg("pusher_webhooks.mjs")
            .arg(http.to_string())
            .current_dir(repo_root().join("tests/compat")),
        Duration::from_secs(60),
    );
    assert!(text(&out).contains("DONE"), "{}", text(&out));
    // The hub: a WebSocket subscriber (`switchboard sub`) comes, gets one publication, goes.
    {
        let url = format!("http://{http}");
        let mut sub = Command::new(crate::common::BIN)
            .args(["sub", "news", "--count", "1", "--server", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(700));
        let out = run(
            Command::new(crate::common::BIN).args(["pub", "news", "1", "--server", &url]),
            Duration::from_secs(20),
        );
        assert!(out.status.success(), "{}", text(&out));
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while sub.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < end, "sub did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // TURN: an allocation that ends.
    let out = run(
        &mut crate::common::uclient_cmd(
            &peer,
            server.addr("stun", "udp").port(),
            1,
            5,
            5,
            &["-c", "-u", "alice", "-w", "secret"],
        ),
        Duration::from_secs(60),
    );
    assert!(
        text(&out).contains("Total lost packets 0"),
        "{}",
        text(&out)
    );
    let want_pusher = [
        r#""channel": "presence-room", "name": "channel_occupied""#,
        r#""channel": "private-chat", "name": "channel_occupied""#,
        r#""channel": "private-chat", "data": "{\"from\":\"ann\"}", "event": "client-hello", "name": "client_event""#,
        r#""channel": "presence-room", "name": "channel_vacated""#,
        r#""channel": "private-chat", "name": "channel_vacated""#,
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let events = loop {
        let all = lines.lock().unwrap().clone();
        let pusher: Vec<&String> = all
            .iter()
            .filter(|l| l.starts_with("EVENT pusher "))
            .collect();
        let hub: Vec<&String> = all.iter().filter(|l| l.starts_with("EVENT hub ")).collect();
        let done = want_pusher
            .iter()
            .all(|w| pusher.iter().any(|l| l.contains(w)))
            && pusher
                .iter()
                .filter(|l| l.contains("member_removed"))
                .count()
                == 2
            && hub
                .iter()
                .any(|l| l.contains(r#""name": "turn_allocation_ended""#))
            && hub
                .iter()
                .any(|l| l.contains(r#""channel": "news", "name": "channel_vacated""#));
        if done || std::time::Instant::now() > deadline {
            break all;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dump = events.join("\n");
    assert!(!dump.contains("BADSIG"), "{dump}");
    assert!(
        dump.contains("REFUSED 1"),
        "the first POST was refused: {dump}"
    );
    for w in want_pusher {
        let n = events
            .iter()
            .filter(|l| l.starts_with("EVENT pusher ") && l.contains(w))
            .count();
        assert_eq!(n, 1, "{w} once in:\n{dump}");
    }
    for user in ["ann", "bob"] {
        for name in ["member_added", "member_removed"] {
            let n = events
                .iter()
                .filter(|l| l.contains(name) && l.contains(&format!(r#""user_id": "{user}""#)))
                .count();
            assert_eq!(n, 1, "{name} {user} once in:\n{dump}");
        }
    }
    for w in [
        r#""channel": "news", "name": "channel_occupied""#,
        r#""channel": "news", "name": "channel_vacated""#,
        r#""name": "connection_closed""#,
        r#""name": "turn_allocation_ended""#,
        r#""user": "alice""#,
    ] {
        assert!(
            events
                .iter()
                .any(|l| l.starts_with("EVENT hub ") && l.contains(w)),
            "{w} in:\n{dump}"
        );
    }
    // Every event carries its node's sequence number and time.
    assert!(events
        .iter()
        .filter(|l| l.starts_with("EVENT hub "))
        .all(|l| l.contains(r#""seq": "#) && l.contains(r#""time_ms": "#)));
    std::fs::remove_file(config).ok();
    std::fs::remove_file(port_file).ok();
}

/// Three nodes on one Redis: every webhook event is sent once for the cluster, not once per
/// node — a user connected through two nodes is added and removed once, channels are occupied
/// and vacated once — and when a node dies (SIGKILL) its members are reported removed, once,
/// by a surviving node after its heartbeat runs out.
#[test]
fn webhooks_once_per_cluster_even_when_a_node_dies() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};
    let _heavy = crate::common::heavy();
    let redis = Redis::start();
    let port_file = std::env::temp_dir().join(format!("sb-webhook-cluster-{}", std::process::id()));
    let _ = std::fs::remove_file(&port_file);
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let collect = |child: &mut std::process::Child| {
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let keep = lines.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line);
            }
        });
        lines
    };
    let wait_line = |lines: &Arc<Mutex<Vec<String>>>, want: &str, secs: u64| {
        let end = std::time::Instant::now() + Duration::from_secs(secs);
        while !lines.lock().unwrap().iter().any(|l| l == want) {
            assert!(
                std::time::Instant::now() < end,
                "no {want} in {:?}",
                lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut receiver = Command::new(venv_python())
        .arg(peer_script("webhook_receiver.py"))
        .arg(&port_file)
        .args(["100", "app-key", "app-secret", "unused"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("webhook receiver");
    let events = collect(&mut receiver);
    let _receiver = Kill(receiver);
    wait_line(&events, "READY", 20);
    let port = std::fs::read_to_string(&port_file).unwrap();
    let config =
        std::env::temp_dir().join(format!("sb-pusher-cluster-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[[pusher.apps]]\nid = \"100\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n\
             webhooks = [\"http://127.0.0.1:{port}/pusher\"]\n"
        ),
    )
    .unwrap();
    let nodes: Vec<_> = ["w1", "w2", "w3"]
        .iter()
        .map(|name| {
            TestServer::new()
                .http()
                .flag("--redis", &redis.url())
                .flag("--node-name", name)
                .config(&config)
                .start()
        })
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| n.addr("http", "tcp").to_string())
        .collect();
    let mut script = Command::new("node")
        .arg("pusher_cluster.mjs")
        .args(&addrs)
        .current_dir(repo_root().join("tests/compat"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let out = collect(&mut script);
    let mut stdin = script.stdin.take().unwrap();
    let _script = Kill(script);
    wait_line(&out, "READY", 60);
    std::thread::sleep(Duration::from_millis(1500));
    // Node 3 dies without a word.
    let pid = nodes[2].child.id().to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    let count = |w: &str| {
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("EVENT pusher ") && l.contains(w))
            .count()
    };
    let carl_removed = r#""name": "member_removed", "seq": "#;
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !events
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains(carl_removed) && l.contains(r#""user_id": "carl""#))
    {
        assert!(
            std::time::Instant::now() < end,
            "carl was not reported removed: {:?}",
            events.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    writeln!(stdin, "leave").unwrap();
    wait_line(&out, "DONE", 30);
    let end = std::time::Instant::now() + Duration::from_secs(15);
    while count(r#""channel": "news", "name": "channel_vacated""#) == 0 {
        assert!(
            std::time::Instant::now() < end,
            "news never vacated: {:?}",
            events.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(4));
    let dump = events.lock().unwrap().join("\n");
    assert!(!dump.contains("BADSIG"), "{dump}");
    for w in [
        r#""channel": "presence-room", "name": "channel_occupied""#,
        r#""channel": "news", "name": "channel_occupied""#,
        r#""channel": "presence-room", "name": "channel_vacated""#,
        r#""channel": "news", "name": "channel_vacated""#,
    ] {
        assert_eq!(count(w), 1, "{w} once in:\n{dump}");
    }
    for user in ["ann", "bob", "carl"] {
        for name in ["member_added", "member_removed"] {
            let n = events
                .lock()
                .unwrap()
                .iter()
                .filter(|l| {
                    l.contains(&format!(r#""name": "{name}""#))
                        && l.contains(&format!(r#""user_id": "{user}""#))
                })
                .count();
            assert_eq!(n, 1, "{name} {user} once in:\n{dump}");
        }
    }
    std::fs::remove_file(config).ok();
    std::fs::remove_file(port_file).ok();
}
