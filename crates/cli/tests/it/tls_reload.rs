//! Certificates given with --tls-cert/--tls-key are reloaded when the files change (and on
//! SIGHUP) without dropping live TLS connections; a broken replacement keeps the old certificate;
//! a mismatched or missing key stops start-up with a message naming the file.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{make_cert, run, text, TestServer, BIN};

fn fingerprint_now(addr: std::net::SocketAddr, script: &Path) -> String {
    let out = run(
        Command::new("python3")
            .arg(script)
            .args([&addr.ip().to_string(), &addr.port().to_string()]),
        Duration::from_secs(30),
    );
    text(&out)
        .trim()
        .strip_prefix("fingerprint ")
        .unwrap_or_default()
        .to_string()
}

#[test]
fn certificate_files_reload_without_dropping_connections() {
    let dir = std::env::temp_dir().join(format!("sb-tlsreload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a_cert, a_key, a_fp) = make_cert(&dir, "a");
    let (b_cert, b_key, b_fp) = make_cert(&dir, "b");
    let live_cert = dir.join("live.crt");
    let live_key = dir.join("live.key");
    std::fs::copy(&a_cert, &live_cert).unwrap();
    std::fs::copy(&a_key, &live_key).unwrap();

    let mut server = TestServer::new()
        .stun_tls()
        .flag("--tls-cert", live_cert.to_str().unwrap())
        .flag("--tls-key", live_key.to_str().unwrap())
        .start();
    let cert_line = server
        .lines
        .iter()
        .find(|l| l.starts_with("tls"))
        .expect("a tls line")
        .clone();
    assert!(
        cert_line.contains(&a_fp),
        "printed fingerprint is not the file's: {cert_line} vs {a_fp}"
    );
    let addr = server.addr("stun", "tls");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/tls_reload.py");

    // 1. Change the files: the watcher reloads; the old connection keeps working.
    let go = dir.join("go");
    let mut client = Command::new("python3")
        .arg(&script)
        .args([
            &addr.ip().to_string(),
            &addr.port().to_string(),
            go.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let before = lines.next().unwrap().unwrap();
    assert_eq!(before, format!("before {a_fp}"));
    // Write the key first, then the certificate (as a renewal tool would).
    std::fs::copy(&b_key, &live_key).unwrap();
    std::fs::copy(&b_cert, &live_cert).unwrap();
    std::fs::write(&go, b"go").unwrap();
    let after = lines.next().unwrap().unwrap();
    assert_eq!(
        after,
        format!("after {b_fp}"),
        "new connections did not get the new certificate"
    );
    let ok = lines.next().unwrap().unwrap();
    assert_eq!(ok, "old connection ok");
    assert!(client.wait().unwrap().success());

    // 2. A broken replacement is refused and the current certificate stays.
    std::fs::write(
        &live_cert,
        b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(fingerprint_now(addr, &script), b_fp);

    // 3. SIGHUP also reloads (here back to certificate A).
    std::fs::copy(&a_cert, &live_cert).unwrap();
    std::fs::copy(&a_key, &live_key).unwrap();
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let mut seen = String::new();
    for _ in 0..30 {
        seen = fingerprint_now(addr, &script);
        if seen == a_fp {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(seen, a_fp);
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "server exited during reloads"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mismatched_or_missing_key_stops_start_up() {
    let dir = std::env::temp_dir().join(format!("sb-tlsbad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a_cert, _a_key, _) = make_cert(&dir, "a");
    let (_b_cert, b_key, _) = make_cert(&dir, "b");
    let cases = [
        (a_cert.clone(), b_key.clone(), "does not match"),
        (a_cert.clone(), dir.join("missing.key"), "missing.key"),
        (b_key.clone(), b_key.clone(), "b.key"),
    ];
    for (cert, key, needle) in cases {
        let out = run(
            Command::new(BIN)
                .args([
                    "serve",
                    "--stun-udp",
                    "off",
                    "--stun-tcp",
                    "off",
                    "--http",
                    "off",
                    "--stun-tls",
                    "127.0.0.1:0",
                ])
                .arg("--tls-cert")
                .arg(&cert)
                .arg("--tls-key")
                .arg(&key),
            Duration::from_secs(20),
        );
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(t.contains(needle), "error does not say {needle:?}: {t}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
