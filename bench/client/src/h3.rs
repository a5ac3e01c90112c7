//! `switchboard-bench h3`: small-response HTTP/3 load over quinn + h3 (Debian's h2load has no
//! HTTP/3). `--connections` QUIC connections, each with `--streams` requests in flight (one
//! worker per stream, each sending its next request when the previous response ends); stops at
//! `--requests` responses or after `--duration` seconds. Prints requests/s and errors.
//! The client's key exchange groups are rustls' defaults (X25519 first, so the server's
//! ML-KEM preference costs a HelloRetryRequest per connection); `SB_BENCH_X25519=1` offers
//! X25519 only, `SB_BENCH_PQ_FIRST=1` offers X25519MLKEM768 first.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Buf;

/// What to load.
pub struct H3Options {
    pub server: SocketAddr,
    pub path: String,
    pub connections: usize,
    pub streams: usize,
    pub requests: u64,
    pub duration: f64,
}

pub fn run(o: H3Options) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(o))
}

/// Accepts the server's self-signed certificate; signatures are still checked.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn bench(o: H3Options) -> anyhow::Result<()> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if std::env::var_os("SB_BENCH_X25519").is_some() {
        provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    }
    if std::env::var_os("SB_BENCH_PQ_FIRST").is_some() {
        provider.kx_groups = vec![
            rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768,
            rustls::crypto::aws_lc_rs::kx_group::X25519,
        ];
    }
    let provider = Arc::new(provider);
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(0u32.into());
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(transport));
    let bind: SocketAddr = if o.server.is_ipv6() {
        "[::1]:0".parse()?
    } else {
        "127.0.0.1:0".parse()?
    };
    let mut endpoint = quinn::Endpoint::client(bind)?;
    endpoint.set_default_client_config(client);

    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(o.duration);
    let uri: http::Uri = format!("https://localhost:{}{}", o.server.port(), o.path).parse()?;
    let mut workers = tokio::task::JoinSet::new();
    let mut drivers = Vec::new();
    for _ in 0..o.connections {
        let conn = endpoint
            .connect(o.server, "localhost")?
            .await
            .context("QUIC handshake")?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn)).await?;
        drivers.push(tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        }));
        for _ in 0..o.streams {
            let mut send = send.clone();
            let (done, errors, uri, limit) =
                (done.clone(), errors.clone(), uri.clone(), o.requests);
            workers.spawn(async move {
                while Instant::now() < deadline && done.load(Ordering::Relaxed) < limit {
                    let one = async {
                        let req = http::Request::get(uri.clone()).body(())?;
                        let mut stream = send.send_request(req).await?;
                        stream.finish().await?;
                        let resp = stream.recv_response().await?;
                        while let Some(mut chunk) = stream.recv_data().await? {
                            chunk.advance(chunk.remaining());
                        }
                        anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
                        Ok::<_, anyhow::Error>(())
                    };
                    match one.await {
                        Ok(()) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            if errors.fetch_add(1, Ordering::Relaxed) > 1000 {
                                return;
                            }
                        }
                    }
                }
            });
        }
    }
    while workers.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!(
        "h3 requests={n} errors={} seconds={secs:.2} req_per_s={:.0} connections={} streams={}",
        errors.load(Ordering::Relaxed),
        n as f64 / secs,
        o.connections,
        o.streams
    );
    endpoint.close(0u32.into(), b"done");
    for d in drivers {
        d.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    Ok(())
}
