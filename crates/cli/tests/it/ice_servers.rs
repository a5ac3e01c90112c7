//! `GET /v1/ice-servers` hands out STUN/TURN URLs and TURN REST credentials that a real ICE
//! agent (aioice) uses to get a relay candidate; `POST /v1/ice-servers/revoke` makes them stop
//! working before they expire, and the revoked user gets no new ones.

use std::process::Command;
use std::time::Duration;

use crate::common::{repo_root, run, text, venv_python, TestServer};

#[test]
fn ice_servers_credentials_work_until_revoked() {
    let server = TestServer::new()
        .stun_udp()
        .stun_tcp()
        .stun_tls()
        .http()
        .flag("--turn-realm", "ice.test")
        .flag("--turn-secret", "ice-secret")
        .flag("--api-key", "ice-key")
        .flag("--jwt-hmac-secret", "ice-jwt")
        .start();
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
