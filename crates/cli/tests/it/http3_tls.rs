//! The TLS policy of every TLS listener (HTTPS, STUN over TLS, QUIC), seen from clients:
//! OpenSSL's `s_client` (static-RSA key exchange refused, TLS 1.2 with ECDHE accepted, TLS 1.1
//! refused, the server's group order winning over the client's, session resumption on TLS 1.2
//! and 1.3, no early data on TCP) and rustls/quinn clients (X25519MLKEM768 chosen whenever a
//! client supports it, even one that lists it last, on TCP and on QUIC).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{http_get, metric, need, run, text, Server, TestServer};

fn rsa_cert(dir: &Path) -> (PathBuf, PathBuf) {
    need("openssl");
    let cert = dir.join("rsa.crt");
    let key = dir.join("rsa.key");
    let out = run(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out));
    (cert, key)
}

/// HTTPS and STUN over TLS on ephemeral ports, plain HTTP for /metrics.
fn tls_server(extra: &[&str]) -> Server {
    TestServer::new()
        .stun_tls()
        .http()
        .https()
        .args(extra)
        .start()
}

/// `openssl s_client` with `args`; stdin closes after `linger` (time to read tickets).
fn s_client(addr: std::net::SocketAddr, args: &[&str], linger: Duration) -> String {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openssl");
    std::thread::sleep(linger);
    drop(child.stdin.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    text(&child.wait_with_output().expect("output"))
}

fn handshake_ok(out: &str) -> bool {
    out.contains("New, TLSv1") || out.contains("Reused, TLSv1")
}

#[test]
fn tls_policy_seen_by_openssl() {
    let dir = std::env::temp_dir().join(format!("sb-tls-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = rsa_cert(&dir);
    let server = tls_server(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let quick = Duration::from_millis(200);
    for (name, addr, alpn) in [
        ("https", server.addr("https", "tcp"), "h2"),
        ("stun", server.addr("stun", "tls"), "stun.turn"),
    ] {
        // Static RSA key exchange (no forward secrecy) is refused, with GCM or CBC.
        for suite in ["AES256-GCM-SHA384", "AES128-GCM-SHA256", "AES128-SHA"] {
            let out = s_client(addr, &["-tls1_2", "-cipher", suite], quick);
            assert!(
                !handshake_ok(&out) && out.contains("alert handshake failure"),
                "{name}: {suite} was accepted:\n{out}"
            );
        }
        // TLS 1.2 with ECDHE works.
        let out = s_client(
            addr,
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
            quick,
        );
        assert!(
            out.contains("New, TLSv1.2, Cipher is ECDHE-RSA-AES128-GCM-SHA256"),
            "{name}: TLS 1.2 ECDHE:\n{out}"
        );
        // TLS 1.1 is refused.
        let out = s_client(addr, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], quick);
        assert!(!handshake_ok(&out), "{name}: TLS 1.1 accepted:\n{out}");
        // TLS 1.3: the client prefers P-256 (its only key share) but also offers X25519; the
        // server's order wins (a HelloRetryRequest asks for an X25519 share).
        let out = s_client(
            addr,
            &["-tls1_3", "-groups", "P-256:X25519", "-alpn", alpn],
            quick,
        );
        assert!(
            out.contains("New, TLSv1.3") && out.contains("Server Temp Key: X25519"),
            "{name}: TLS 1.3 group:\n{out}"
        );
        assert!(
            out.contains(&format!("ALPN protocol: {alpn}")),
            "{name}: ALPN:\n{out}"
        );
        // A client without X25519 still gets P-256; TLS 1.2 too.
        let out = s_client(addr, &["-tls1_3", "-groups", "P-256"], quick);
        assert!(
            out.contains("Server Temp Key: ECDH, prime256v1"),
            "{name}:\n{out}"
        );
        let out = s_client(addr, &["-tls1_2", "-groups", "P-256:X25519"], quick);
        assert!(
            out.contains("New, TLSv1.2") && out.contains("Server Temp Key: X25519"),
            "{name}: TLS 1.2 group:\n{out}"
        );
        // Session resumption, TLS 1.2 (session id / ticket) and TLS 1.3 (ticket).
        for v in ["-tls1_2", "-tls1_3"] {
            let sess = dir.join(format!("{name}{v}.sess"));
            let s = sess.to_str().unwrap();
            let first = s_client(addr, &[v, "-sess_out", s], Duration::from_millis(700));
            assert!(handshake_ok(&first), "{name} {v}:\n{first}");
            let again = s_client(addr, &[v, "-sess_in", s], quick);
            assert!(
                again.contains("Reused, TLSv1"),
                "{name} {v}: not resumed:\n{again}"
            );
        }
        // No TLS 1.3 early data on TCP: tickets allow none, so the client sends none.
        let sess = dir.join(format!("{name}-early.sess"));
        let early = dir.join("early.txt");
        std::fs::write(&early, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let first = s_client(
            addr,
            &["-tls1_3", "-sess_out", sess.to_str().unwrap()],
            Duration::from_millis(700),
        );
        assert!(first.contains("Max Early Data: 0"), "{name}:\n{first}");
        let out = s_client(
            addr,
            &[
                "-tls1_3",
                "-sess_in",
                sess.to_str().unwrap(),
                "-early_data",
                early.to_str().unwrap(),
            ],
            quick,
        );
        assert!(
            out.contains("Reused, TLSv1.3") && !out.contains("Early data was accepted"),
            "{name}: early data:\n{out}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Accepts any certificate (the server's is self-signed); signatures are still checked.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A rustls client: aws-lc-rs with its default group order (X25519 first, X25519MLKEM768
/// last, key share for X25519 only) unless `groups` is given.
fn client_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
    groups: Option<Vec<&'static dyn rustls::crypto::SupportedKxGroup>>,
    alpn: &[u8],
) -> rustls::ClientConfig {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(g) = groups {
        provider.kx_groups = g;
    }
    let provider = Arc::new(provider);
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    cfg
}

async fn tcp_handshake(
    addr: std::net::SocketAddr,
    cfg: rustls::ClientConfig,
) -> (
    rustls::ProtocolVersion,
    rustls::NamedGroup,
    rustls::CipherSuite,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let c = tls.get_ref().1;
    (
        c.protocol_version().unwrap(),
        c.negotiated_key_exchange_group().unwrap().name(),
        c.negotiated_cipher_suite().unwrap().suite(),
    )
}

#[tokio::test]
async fn mlkem_preferred_for_rustls_and_quinn_clients() {
    use rustls::crypto::aws_lc_rs::kx_group;
    use rustls::version::{TLS12, TLS13};
    use rustls::NamedGroup;

    let server = tls_server(&[]);
    let http = server.addr("http", "tcp");
    let default = rustls::crypto::aws_lc_rs::default_provider();
    assert_eq!(
        default.kx_groups.last().map(|g| g.name()),
        Some(NamedGroup::X25519MLKEM768),
        "this client is meant to list ML-KEM last"
    );
    for (addr, alpn) in [
        (server.addr("https", "tcp"), &b"h2"[..]),
        (server.addr("stun", "tls"), &b"stun.turn"[..]),
    ] {
        // Listed last, sent without a key share: chosen anyway (after a HelloRetryRequest).
        let (v, g, _) = tcp_handshake(addr, client_config(&[&TLS13, &TLS12], None, alpn)).await;
        assert_eq!(
            (v, g),
            (rustls::ProtocolVersion::TLSv1_3, NamedGroup::X25519MLKEM768)
        );
        // A client without ML-KEM: X25519 before secp256r1, whatever the client's order.
        let groups = vec![kx_group::SECP256R1, kx_group::X25519];
        let (_, g, _) = tcp_handshake(addr, client_config(&[&TLS13], Some(groups), alpn)).await;
        assert_eq!(g, NamedGroup::X25519);
        // TLS 1.2: ECDHE with X25519 (ML-KEM does not exist there).
        let (v, g, suite) = tcp_handshake(addr, client_config(&[&TLS12], None, alpn)).await;
        assert_eq!(
            (v, g),
            (rustls::ProtocolVersion::TLSv1_2, NamedGroup::X25519)
        );
        assert!(format!("{suite:?}").starts_with("TLS_ECDHE_"), "{suite:?}");
    }

    // QUIC: quinn with the same client TLS settings; the server counts the group it chose.
    let (_, before) = http_get(http, "/metrics");
    let series = r#"switchboard_tls_key_exchange_total{listener="quic",group="X25519MLKEM768"}"#;
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(client_config(&[&TLS13], None, b"h3"))
            .unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint
        .connect(server.addr("https", "udp"), "localhost")
        .unwrap()
        .await
        .expect("QUIC handshake");
    let hd = conn
        .handshake_data()
        .unwrap()
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .unwrap();
    assert_eq!(hd.protocol.as_deref(), Some(&b"h3"[..]));
    // HTTP/3 works on it: the HelloRetryRequest path delays the client's transport parameters
    // (regression: the server's control streams once waited forever for them).
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
        .await
        .unwrap();
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let get = async {
        let req = http::Request::get("https://localhost/healthz")
            .body(())
            .unwrap();
        let mut stream = send.send_request(req).await.unwrap();
        stream.finish().await.unwrap();
        let resp = stream.recv_response().await.unwrap();
        let mut body = Vec::new();
        while let Some(chunk) = stream.recv_data().await.unwrap() {
            body.extend_from_slice(bytes::Buf::chunk(&chunk));
        }
        (resp.status(), String::from_utf8_lossy(&body).into_owned())
    };
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .expect("HTTP/3 request after HelloRetryRequest");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    drive.abort();
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    let (_, after) = http_get(http, "/metrics");
    assert_eq!(
        metric(&after, series),
        metric(&before, series) + 1.0,
        "{after}"
    );
    // And the TCP handshakes above were counted by listener.
    assert!(
        metric(
            &after,
            r#"switchboard_tls_key_exchange_total{listener="https",group="X25519MLKEM768"}"#
        ) >= 1.0,
        "{after}"
    );
}
