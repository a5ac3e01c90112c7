//! pusher-js in a real browser against switchboard's Pusher Channels protocol (`/app/KEY`,
//! docs/compat.md): Debian's Chromium, driven by playwright-core (`tests/browser/pusher_e2e.mjs`),
//! loads the library's own browser build (npm `pusher-js` 8.6.0, `dist/web/pusher.js`, pinned in
//! `tests/compat/package-lock.json`), unchanged, on pages served from a second loopback origin
//! (`http://localhost:PORT`), while the application's side runs in the Node driver with Pusher's
//! own server library (npm `pusher` 5.3.4): it triggers events through `/apps/ID/events` and
//! signs channel authorizations with `authorizeChannel` behind the pages' `channelAuthorization`
//! endpoint (an HTTP route of the static server). Checks: a public channel receiving events the
//! server library triggers; a private channel authorized through the endpoint, and a second page
//! whose endpoint signs with a wrong secret refused (`pusher:subscription_error`, 401, no events);
//! a presence channel on two pages (members, `member_added`, a client event carrying `user_id`,
//! the server's user list, `member_removed` when a tab closes); client events between two pages
//! on a private channel, never echoed to the sender.
//!
//! Runs in a network namespace of its own with only loopback (its thread unshares, so the
//! server and Chromium it starts are inside). Needs root, as CI has.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::{assert_checks, heavy, isolate_network, repo_root, run, text, TestServer};

const APP_ID: &str = "300";
const KEY: &str = "browser-key";
const SECRET: &str = "browser-secret";

/// One Pusher app with client events on.
fn config() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-pusher-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("pusher-browser.toml");
    std::fs::write(
        &file,
        format!(
            "[[pusher.apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n\
             client_events = true\n"
        ),
    )
    .expect("write config");
    file
}

#[test]
fn pusher_js_in_chromium_with_the_pusher_server_library() {
    let _heavy = heavy();
    let (chromium, browser_dir) = crate::common::chromium_and_playwright();
    let compat = repo_root().join("tests/compat/node_modules");
    assert!(
        compat.join("pusher-js/dist/web/pusher.js").is_file()
            && compat.join("pusher/package.json").is_file(),
        "tests/compat/node_modules/pusher-js or pusher missing: run scripts/test (scripts/test-deps runs npm ci there)"
    );
    isolate_network();
    let config = config();
    let server = TestServer::new().http().config(&config).start();
    let _ = std::fs::remove_dir_all(config.parent().expect("config dir"));
    let addr = server.addr("http", "tcp").to_string();
    let out = run(
        Command::new("node")
            .arg(browser_dir.join("pusher_e2e.mjs"))
            .args([
                "--addr", &addr, "--app-id", APP_ID, "--key", KEY, "--secret", SECRET,
            ])
            .args(["--chromium", &chromium, "--deadline-ms", "150000"])
            .current_dir(&browser_dir),
        Duration::from_secs(180),
    );
    let t = text(&out);
    assert!(
        out.status.success(),
        "pusher_e2e.mjs failed ({}):\n{t}\nserver log:\n{}",
        out.status,
        server.logs()
    );
    assert_checks(
        &t,
        &[
            "browser-public-channel-server-trigger",
            "browser-private-channel-auth-endpoint",
            "browser-private-channel-wrong-secret",
            "browser-presence-two-pages",
            "browser-client-events-between-pages",
        ],
    );
}
