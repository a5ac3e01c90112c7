//! The JavaScript SDK (`clients/js`) over WebTransport: `/v1/wt` on the `--https` port (HTTP/3),
//! one session with one bidirectional stream per hub connection, length-prefixed protobuf
//! through the SDK's own small codec (docs/http3.md, docs/clients.md).
//!
//! (1) In Chromium (Debian's, driven by playwright-core: `tests/browser/sdk_webtransport.mjs`),
//! a page loading the binary's `/sdk/switchboard.js` with `transports: ["webtransport"]`
//! connects over WebTransport — the page says so, and so does the server:
//! `switchboard_hub_connects_total{transport="webtransport"}` grows by one per connection —
//! subscribes, receives a publication made through the server API, publishes JSON and binary data
//! (a WebSocket page on the same channel gets them as JSON and as bytes, the server's history
//! holds them), reads history, presence and presence stats, sees join and leave, and after a
//! server disconnect (3011) reconnects over WebTransport and recovers what it missed, once; two
//! clients over WebTransport call each other through `joinRoom` (data channel both ways); and
//! with WebTransport refused (no certificate hash, so Chromium refuses the certificate; nothing
//! listening on the port) the clients end on the WebSocket while the webtransport counter stays
//! put. Chromium takes the self-made certificate only through `serverCertificateHashes`: an
//! ECDSA certificate valid for at most 14 days, made here with openssl. The test runs in a
//! loopback-only network namespace of its own (needs root, as CI has).
//!
//! (2) In Node (`clients/js/test/webtransport.mjs`), every message the SDK encodes or decodes
//! meets the server's protobuf: a WebTransport stand-in tunnels the stream through a WebSocket
//! with the `switchboard.proto` subprotocol, feeding the SDK the server's frames in small pieces
//! — pub/sub both ways with a JSON WebSocket client, JSON and binary payloads, history,
//! presence, errors, recovery after a server disconnect, room commands and signals, and the
//! fallback to the WebSocket.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::{
    assert_checks, heavy, isolate_network, make_cert, metric, need, repo_root, run, text,
    TestServer,
};

const API_KEY: &str = "sdk-wt-key";
const JWT_SECRET: &str = "sdk-wt-secret";

/// A `chat` namespace with history, presence and join/leave for tokens' users; `locked`, closed
/// to clients.
fn config(dir: &Path) -> PathBuf {
    let file = dir.join("sdk-wt.toml");
    std::fs::write(
        &file,
        "[hub.namespaces.chat]\nhistory_size = 100\nhistory_ttl_secs = 300\npresence = true\n\
         join_leave = true\nallow_subscribe_for_client = true\nallow_publish_for_client = true\n\
         allow_presence_for_client = true\nallow_history_for_client = true\n\
         [hub.namespaces.locked]\n",
    )
    .expect("write config");
    file
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn sdk_over_webtransport_in_chromium_and_fallback_to_websocket() {
    let _heavy = heavy();
    let (chromium, browser_dir) = crate::common::chromium_and_playwright();
    isolate_network();
    let dir = temp_dir("sdk-wt-browser");
    let (cert, key, hash) = make_cert(&dir, "wt");
    // STUN (UDP) too: with only loopback in the namespace, Chromium's peer connections need
    // the ICE servers /v1/ice-servers then hands out to find each other.
    let server = TestServer::new()
        .stun_udp()
        .http()
        .https()
        .api_key(API_KEY)
        .jwt(JWT_SECRET)
        .config(&config(&dir))
        .flag("--tls-cert", cert.to_str().expect("utf-8 path"))
        .flag("--tls-key", key.to_str().expect("utf-8 path"))
        .start();
    let _ = std::fs::remove_dir_all(&dir);
    let http = server.addr("http", "tcp");
    let base = format!("http://{http}");
    let wt = format!("https://{}/v1/wt", server.addr("https", "udp"));

    let out = run(
        Command::new("node")
            .arg(browser_dir.join("sdk_webtransport.mjs"))
            .args(["--base", &base, "--wt", &wt, "--hash", &hash])
            .args(["--api-key", API_KEY, "--jwt-secret", JWT_SECRET])
            .args(["--chromium", &chromium, "--deadline-ms", "150000"])
            .current_dir(&browser_dir),
        Duration::from_secs(180),
    );
    let t = text(&out);
    let mut scenarios = serde_json::Map::new();
    let mut result = Value::Null;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(rest) = line.strip_prefix("SCENARIO ") {
            let (name, json) = rest.split_once(' ').unwrap_or((rest, "null"));
            let v = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("SCENARIO {name}: not JSON ({e})\n{t}"));
            scenarios.insert(name.to_string(), v);
        } else if let Some(json) = line.strip_prefix("RESULT ") {
            result = serde_json::from_str(json).unwrap_or(Value::Null);
        }
    }
    assert!(
        out.status.success() && result["ok"] == true,
        "sdk_webtransport.mjs failed ({}):\n{t}",
        out.status
    );

    // (a) The SDK's own connection, over WebTransport; what the script checked, restated.
    let w = &scenarios["webtransport"];
    assert_eq!(w["transport"], "webtransport", "{w}");
    assert_eq!(w["bobTransport"], "websocket", "{w}");
    assert_eq!(w["received"], 4, "{w}");
    assert_eq!(w["history"], 3, "{w}");
    assert_eq!(strings(&w["presence"]["users"]), ["alice", "bob"], "{w}");
    let wt_connects = |v: &Value| v["webtransport"].as_f64().unwrap_or(0.0);
    let c = &w["connects"];
    assert_eq!(
        wt_connects(&c["afterConnect"]) - wt_connects(&c["before"]),
        1.0,
        "{w}"
    );
    assert_eq!(
        wt_connects(&c["afterCut"]) - wt_connects(&c["afterConnect"]),
        1.0,
        "{w}"
    );
    // (b) A call whose signaling went over WebTransport.
    let r = &scenarios["room"];
    assert_eq!(r["transport"], "webtransport", "{r}");
    assert_eq!(
        strings(&r["received"]),
        ["hello from b", "hello from a"],
        "{r}"
    );
    // (c) Refused WebTransport ends on the WebSocket.
    let f = &scenarios["fallback"];
    assert_eq!(f["noHash"], "websocket", "{f}");
    assert_eq!(f["noServer"], "websocket", "{f}");

    // The server's own account: alice twice and the two room clients over WebTransport, bob
    // and the two fallback clients over the WebSocket; four WebTransport sessions.
    let (_, m) = crate::common::http_get(http, "/metrics");
    let by = |transport: &str| {
        metric(
            &m,
            &format!("switchboard_hub_connects_total{{transport=\"{transport}\"}}"),
        )
    };
    assert_eq!(by("webtransport"), 4.0, "{m}");
    assert_eq!(by("websocket"), 3.0, "{m}");
    assert_eq!(
        metric(&m, "switchboard_webtransport_sessions_total"),
        4.0,
        "{m}"
    );
}

#[test]
fn sdk_webtransport_codec_against_the_server() {
    need("node");
    let sdk = repo_root().join("clients/js");
    assert!(
        sdk.join("node_modules/ws/package.json").is_file(),
        "{}/node_modules/ws is missing: run scripts/test (scripts/test-deps runs npm ci there)",
        sdk.display()
    );
    let dir = temp_dir("sdk-wt-node");
    let server = TestServer::new()
        .http()
        .api_key(API_KEY)
        .jwt(JWT_SECRET)
        .config(&config(&dir))
        .start();
    let _ = std::fs::remove_dir_all(&dir);
    let out = run(
        Command::new("node")
            .arg("test/webtransport.mjs")
            .arg(format!("http://{}", server.addr("http", "tcp")))
            .args(["--api-key", API_KEY, "--jwt-secret", JWT_SECRET])
            .current_dir(&sdk),
        Duration::from_secs(90),
    );
    let t = text(&out);
    assert!(out.status.success(), "webtransport.mjs failed:\n{t}");
    assert_checks(
        &t,
        &[
            "connect-over-webtransport",
            "subscribe-join-leave",
            "server-api-publication-json",
            "publish-both-ways-json-and-binary",
            "history-presence-stats",
            "errors-carry-the-servers-code",
            "server-disconnect-recovers-over-webtransport",
            "leave-seen",
            "room-commands-and-signals",
            "fallback-to-websocket-and-stay",
            "disconnect-closes-the-session",
        ],
    );
}
