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

/// Asking for ICE servers authenticates like a hub connection but is not one: the console's
/// hub connection charts (`switchboard_hub_connects_total`) do not move, while a bad token is
/// still refused.
#[test]
fn ice_server_requests_are_not_hub_connections() {
    use crate::common::{http_get, metric};
    let server = TestServer::new()
        .stun_udp()
        .http()
        .flag("--turn-realm", "ice.test")
        .flag("--turn-secret", "ice-secret")
        .start();
    let http = server.addr("http", "tcp");
    for _ in 0..5 {
        let (status, body) = http_get(http, "/v1/ice-servers");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("turn:"), "{body}");
    }
    let (status, body) = http_get(http, "/v1/ice-servers?token=not.a.token");
    assert_eq!(status, 401, "{body}");
    let (_, metrics) = http_get(http, "/metrics");
    assert_eq!(
        metric(
            &metrics,
            r#"switchboard_hub_connects_total{transport="http"}"#
        ),
        0.0,
        "{metrics}"
    );
}
