//! Three switchboard nodes on loopback sharing one `redis-server` act as one: publications,
//! recovery on another node, presence and join/leave, a WebRTC signaling exchange across nodes,
//! TURN credentials and revocations valid on every node, and Redis faults (stop/restart, cut
//! pub/sub connections). The clients are third-party (tests/peers/cluster_checks.py); a fourth
//! node started afterwards still knows the revocation. See docs/scaling.md.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    assert_checks, http_get, metric, peer_script, repo_root, run, text, venv_python, Redis, Server,
};

const SECRET: &str = "cluster-jwt";
const API_KEY: &str = "cluster-key";

fn config_file() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.toml");
    std::fs::write(
        &file,
        "[hub]\npresence_ttl_secs = 3\n[hub.namespaces.chat]\npresence = true\njoin_leave = true\nhistory_size = 10\n\
         history_ttl_secs = 60\nallow_subscribe_for_client = true\nallow_publish_for_client = true\n\
         allow_presence_for_subscriber = true\n\
         [hub.namespaces.call]\nallow_subscribe_for_client = true\n",
    )
    .unwrap();
    file
}

fn node(redis: &Redis, name: &str, config: &std::path::Path) -> Server {
    let url = redis.url();
    Server::start(&[
        "--redis",
        &url,
        "--node-name",
        name,
        "--config",
        config.to_str().unwrap(),
        "--stun-udp",
        "127.0.0.1:0",
        "--stun-tcp",
        "off",
        "--stun-tls",
        "off",
        "--http",
        "127.0.0.1:0",
        "--https",
        "off",
        "--turn-realm",
        "cluster.test",
        "--turn-secret",
        "shared-turn-secret",
        "--allow-anonymous",
        "false",
        "--jwt-hmac-secret",
        SECRET,
        "--api-key",
        API_KEY,
    ])
}

#[test]
fn three_nodes_on_one_redis_act_as_one() {
    let redis = Redis::start();
    let config = config_file();
    let nodes: Vec<Server> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| node(&redis, n, &config))
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|s| s.addr("http", "tcp").to_string())
        .collect();
    for s in &nodes {
        let (status, body) = http_get(s.addr("http", "tcp"), "/healthz");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"broker\":\"redis\""), "{body}");
        assert!(body.contains("\"broker_status\":\"up\""), "{body}");
    }
    // A fourth node that the checks kill (SIGKILL) to see its entries expire cluster-wide.
    let victim = node(&redis, "victim", &config);
    let victim_addr = victim.addr("http", "tcp").to_string();
    let victim_pid = victim.child.id().to_string();
    let out = run(
        Command::new(venv_python())
            .arg(peer_script("cluster_checks.py"))
            .args([
                addrs.join(",").as_str(),
                SECRET,
                API_KEY,
                &redis.port.to_string(),
                &redis.start_command(),
                &victim_addr,
                &victim_pid,
            ])
            .current_dir(repo_root().join("tests/peers")),
        Duration::from_secs(400),
    );
    let t = text(&out);
    assert_checks(
        &t,
        &[
            "cross-node-fanout",
            "recover-on-another-node",
            "cluster-presence-join-leave",
            "cross-node-signaling",
            "simultaneous-joins-one-initiator",
            "turn-credentials-and-revocation-across-nodes",
            "dead-node-peers-time-out",
            "redis-stop-and-restart",
            "pubsub-cut-no-loss",
        ],
    );
    assert!(out.status.success(), "{t}");

    // The outage was counted and every node saw it end.
    for s in &nodes {
        let (_, m) = http_get(s.addr("http", "tcp"), "/metrics");
        assert_eq!(metric(&m, "switchboard_hub_broker_up"), 1.0, "{m}");
    }

    // A node started after the revocation still refuses the revoked user.
    let late = node(&redis, "n4", &config);
    let token = hs256_token("carol");
    let out = run(
        Command::new("curl").args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("http://{}/v1/ice-servers", late.addr("http", "tcp")),
        ]),
        Duration::from_secs(10),
    );
    assert_eq!(
        text(&out).trim(),
        "403",
        "late node issued credentials to a revoked user"
    );
}

/// An HS256 token for `sub` (valid one hour), signed with [`SECRET`].
fn hs256_token(sub: &str) -> String {
    let out = run(
        Command::new(venv_python()).args([
            "-c",
            &format!(
                "import sys; sys.path.insert(0, {dir:?}); from hub_lib import jwt; print(jwt({SECRET:?}, {sub:?}))",
                dir = repo_root().join("tests/peers").display().to_string()
            ),
        ]),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
