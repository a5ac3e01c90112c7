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
