//! Three switchboard nodes on loopback sharing one `redis-server` act as one: publications,
//! recovery on another node, presence and join/leave, a WebRTC signaling exchange across nodes,
//! TURN credentials and revocations valid on every node, and Redis faults (stop/restart, cut
//! pub/sub connections). The clients are third-party (tests/peers/cluster_checks.py); a fourth
//! node started afterwards still knows the revocation. See docs/scaling.md.

use std::process::Command;
use std::time::Duration;

use crate::common::{
    assert_checks, http_get, metric, peer_script, repo_root, run, text, venv_python, Redis, Server,
    TestServer,
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
    TestServer::new()
        .stun_udp()
        .http()
        .flag("--redis", &redis.url())
        .flag("--node-name", name)
        .config(config)
        .flag("--turn-realm", "cluster.test")
        .flag("--turn-secret", "shared-turn-secret")
        .flag("--allow-anonymous", "false")
        .jwt(SECRET)
        .api_key(API_KEY)
        .start()
}

#[test]
fn three_nodes_on_one_redis_act_as_one() {
    let _heavy = crate::common::heavy();
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

/// Runs a shell command, asserting success.
fn sh(cmd: &str) {
    let out = run(
        Command::new("sh").args(["-c", cmd]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{cmd}: {}", text(&out));
}

/// A POST with a JSON body over HTTP/1.0 (curl); returns the response body.
fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> String {
    let out = run(
        Command::new("curl").args([
            "-s",
            "-H",
            &format!("Authorization: apikey {API_KEY}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            &format!("http://{addr}{path}"),
        ]),
        Duration::from_secs(10),
    );
    text(&out)
}

#[test]
fn nodes_share_a_redis_over_tls_with_a_private_ca() {
    let _heavy = crate::common::heavy();
    crate::common::need("openssl");
    crate::common::need("redis-server");
    let dir = std::env::temp_dir().join(format!("sb-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    // A private CA and a certificate for 127.0.0.1 signed by it.
    sh(&format!(
        "cd {d} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
         -days 1 -subj /CN=test-ca -keyout ca.key -out ca.pem && \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
         -keyout server.key -out server.csr && \
         printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > ext.cnf && \
         openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
         -extfile ext.cnf -out server.pem"
    ));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    sh(&format!(
        "redis-server --port 0 --tls-port {port} --bind 127.0.0.1 --tls-cert-file {d}/server.pem \
         --tls-key-file {d}/server.key --tls-ca-cert-file {d}/ca.pem --tls-auth-clients no \
         --save '' --daemonize yes --pidfile {d}/redis.pid --logfile {d}/redis.log"
    ));
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Ok(pid) = std::fs::read_to_string(self.0.join("redis.pid")) {
                let _ = Command::new("kill").args(["-9", pid.trim()]).status();
            }
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let url = format!("rediss://127.0.0.1:{port}/0");
    let ca = format!("{d}/ca.pem");
    let mut ready = false;
    for _ in 0..50 {
        if dir.join("redis.pid").is_file() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready, "redis-server with TLS did not start");
    let node = |name: &str| {
        TestServer::new()
            .flag("--redis", &url)
            .flag("--redis-ca", &ca)
            .flag("--node-name", name)
            .http()
            .flag("--api-key", API_KEY)
            .start()
    };
    let a = node("tls-a");
    let b = node("tls-b");
    for s in [&a, &b] {
        let (_, body) = http_get(s.addr("http", "tcp"), "/healthz");
        assert!(body.contains("\"broker_status\":\"up\""), "{body}");
    }
    // Published through node a, read back from node b: one Redis, over TLS.
    let r = post(
        a.addr("http", "tcp"),
        "/v1/api/publish",
        r#"{"channel":"news","data":{"n":7}}"#,
    );
    assert!(r.contains("\"offset\":\"1\""), "{r}");
    let r = post(
        b.addr("http", "tcp"),
        "/v1/api/history",
        r#"{"channel":"news","limit":10}"#,
    );
    assert!(r.contains("\"n\":7"), "{r}");
    // Without the private CA the certificate is refused, and the node says so.
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_switchboard")).args([
            "serve",
            "--redis",
            &url,
            "--http",
            "127.0.0.1:0",
            "--https",
            "off",
            "--stun-udp",
            "off",
            "--stun-tcp",
            "off",
            "--stun-tls",
            "off",
        ]),
        Duration::from_secs(20),
    );
    let t = text(&out);
    assert!(
        !out.status.success() && t.contains("Redis") && t.contains("UnknownIssuer"),
        "{t}"
    );
}
