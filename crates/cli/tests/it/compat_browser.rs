//! centrifuge-js in a real browser against switchboard's Centrifugo client protocol
//! (`/connection/websocket`, docs/compat.md): Debian's Chromium, driven by playwright-core
//! (`tests/browser/centrifuge_e2e.mjs`), loads the SDK's own ES module builds (npm `centrifuge`
//! 5.8.0, pinned in `tests/compat/package-lock.json`; JSON and protobuf), unchanged, on a page
//! served from a second loopback origin (`http://localhost:PORT`), and checks: connect without
//! a token and with HS256 tokens, publications made through the server API (`/api/publish`,
//! `X-API-Key`) and by the page arriving in order with offsets, presence, presence stats and
//! history (limit, reverse, since), join/leave, a refused token (3500, no reconnect), a
//! server-API disconnect (3503, no reconnect), RPC answered with 108, and the protobuf build
//! (subprotocol `centrifuge-protobuf`, JSON and binary payloads, presence, history, 108).
//!
//! Runs in a network namespace of its own with only loopback (its thread unshares, so the
//! server and Chromium it starts are inside). Needs root, as CI has.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::{assert_checks, heavy, isolate_network, repo_root, run, text, TestServer};

const API_KEY: &str = "compat-browser-key";
const SECRET: &str = "compat-browser-jwt";

/// A `room` namespace with presence and join/leave for the token users; the default namespace
/// (history, presence, anonymous on loopback) is the server's own.
fn config() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-compat-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("compat-browser.toml");
    std::fs::write(
        &file,
        "[hub.namespaces.room]\npresence = true\njoin_leave = true\n\
         allow_subscribe_for_client = true\nallow_presence_for_client = true\n",
    )
    .expect("write config");
    file
}

#[test]
fn centrifuge_js_in_chromium_json_and_protobuf() {
    let _heavy = heavy();
    let (chromium, browser_dir) = crate::common::chromium_and_playwright();
    assert!(
        repo_root()
            .join("tests/compat/node_modules/centrifuge/build/protobuf/index.mjs")
            .is_file(),
        "tests/compat/node_modules/centrifuge missing: run scripts/test (scripts/test-deps runs npm ci there)"
    );
    isolate_network();
    let config = config();
    let server = TestServer::new()
        .http()
        .api_key(API_KEY)
        .jwt(SECRET)
        .config(&config)
        .start();
    let _ = std::fs::remove_dir_all(config.parent().expect("config dir"));
    let addr = server.addr("http", "tcp").to_string();
    let out = run(
        Command::new("node")
            .arg(browser_dir.join("centrifuge_e2e.mjs"))
            .args([
                "--addr",
                &addr,
                "--api-key",
                API_KEY,
                "--jwt-secret",
                SECRET,
            ])
            .args(["--chromium", &chromium, "--deadline-ms", "150000"])
            .current_dir(&browser_dir),
        Duration::from_secs(180),
    );
    let t = text(&out);
    assert!(
        out.status.success(),
        "centrifuge_e2e.mjs failed ({}):\n{t}",
        out.status
    );
    assert_checks(
        &t,
        &[
            "browser-json-anonymous-pubsub",
            "browser-json-presence-history",
            "browser-json-token-user-join",
            "browser-json-refused-token",
            "browser-json-server-disconnect",
            "browser-json-rpc-not-available",
            "browser-protobuf-pubsub-history",
        ],
    );
}
