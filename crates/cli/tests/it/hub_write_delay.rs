//! `[hub] write_delay_ms` gathers pushes into fewer, larger WebSocket writes; it must never drop,
//! reorder or duplicate a publication. Checked with Python `websockets` on both subprotocols.

use std::process::Command;
use std::time::Duration;

use crate::common::{repo_root, run, text, venv_python, TestServer};

#[test]
fn write_delay_keeps_every_publication_in_order() {
    let dir = std::env::temp_dir().join(format!("sb-wd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("wd.toml");
    std::fs::write(&cfg, "[hub]\nwrite_delay_ms = 25\n").unwrap();
    let server = TestServer::new()
        .flag("--config", cfg.to_str().unwrap())
        .http()
        .flag("--api-key", "wd-key")
        .start();
    let addr = server.addr("http", "tcp").to_string();
    let root = repo_root();
    let out = run(
        Command::new(venv_python())
            .arg(root.join("tests/peers/hub_write_delay.py"))
            .args([addr.as_str(), "wd-key", "300", "25"])
            .current_dir(root.join("tests/peers")),
        Duration::from_secs(60),
    );
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("ok 300 publications"),
        "{t}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
