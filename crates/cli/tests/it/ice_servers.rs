//! `GET /v1/ice-servers` hands out STUN/TURN URLs and TURN REST credentials that a real ICE
//! agent (aioice) uses to get a relay candidate; `POST /v1/ice-servers/revoke` makes them stop
//! working before they expire, and the revoked user gets no new ones.

use std::process::Command;
use std::time::Duration;

use crate::common::{repo_root, run, text, venv_python, Server};

#[test]
fn ice_servers_credentials_work_until_revoked() {
    let server = Server::start(&[
        "--stun-udp",
        "127.0.0.1:0",
        "--stun-tcp",
        "127.0.0.1:0",
        "--stun-tls",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--turn-realm",
        "ice.test",
        "--turn-secret",
        "ice-secret",
        "--api-key",
        "ice-key",
        "--jwt-hmac-secret",
        "ice-jwt",
    ]);
    let root = repo_root();
    let addr = server.addr("http", "tcp").to_string();
    let out = run(
        Command::new(venv_python())
            .arg(root.join("tests/peers/ice_servers.py"))
            .args([addr.as_str(), "ice-key", "ice-jwt"])
            .current_dir(root.join("tests/peers")),
        Duration::from_secs(120),
    );
    let t = text(&out);
    assert!(out.status.success() && t.trim_end().ends_with("ok"), "{t}");
}
