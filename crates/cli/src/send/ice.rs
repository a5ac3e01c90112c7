//! `GET /v1/ice-servers` from the signaling server: the STUN and TURN servers (with TURN REST
//! credentials) the peer gathers candidates from. HTTP/1.1 on one connection, TLS for https.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use switchboard_transfer::peer::IceServer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// `http(s)://HOST:PORT` (or `ws(s)://…/v1/ws`) → (tls, host, port, base path).
fn target(url: &str) -> anyhow::Result<(bool, String, u16, String)> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else {
        return Err(anyhow!(
            "bad server URL {url:?}: expected http:// or https://"
        ));
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = format!("/{path}");
    let base = path
        .trim_end_matches('/')
        .trim_end_matches("/v1/ws")
        .trim_end_matches('/')
        .to_string();
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let (h, p) = r
            .split_once(']')
            .ok_or_else(|| anyhow!("bad server URL {url:?}"))?;
        (h.to_string(), p.strip_prefix(':').map(str::to_owned))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.to_string())),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| anyhow!("bad port in {url:?}"))?,
        None if tls => 443,
        None => 80,
    };
    Ok((tls, host, port, base))
}

/// The ICE servers the server hands out (an empty list when it serves no STUN/TURN); `tls` is
/// the client configuration for an https URL ([`client_config`]), or why there is none.
pub async fn fetch(
    url: &str,
    token: Option<&str>,
    tls_config: Result<&Arc<rustls::ClientConfig>, &anyhow::Error>,
) -> anyhow::Result<Vec<IceServer>> {
    let (tls, host, port, base) = target(url)?;
    let mut path = format!("{base}/v1/ice-servers");
    if let Some(t) = token {
        path.push_str(&format!("?token={t}"));
    }
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\n\
         Connection: close\r\nUser-Agent: switchboard-send/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| anyhow!("connecting to {authority} timed out"))?
    .with_context(|| format!("cannot connect to {authority}"))?;
    let raw = if tls {
        let config = tls_config.map_err(|e| anyhow!("{e:#}"))?.clone();
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|_| anyhow!("{host:?} is not a valid TLS server name"))?;
        let s = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with {authority}"))?;
        exchange(s, req.as_bytes()).await?
    } else {
        exchange(tcp, req.as_bytes()).await?
    };
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP answer from {authority}"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if status == 404 {
        return Ok(Vec::new());
    }
    if status != 200 {
        return Err(anyhow!("GET {path}: HTTP {status}: {:.200}", body.trim()));
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        ice_servers: Vec<IceServer>,
    }
    let a: Answer = serde_json::from_str(&body).context("the ICE server list is not JSON")?;
    Ok(a.ice_servers)
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    req: &[u8],
) -> anyhow::Result<Vec<u8>> {
    s.write_all(req).await?;
    s.flush().await?;
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return Ok::<_, std::io::Error>(()),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                // A server closing TLS without close_notify after a complete answer.
                Err(e) if !out.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(())
                }
                Err(e) => return Err(e),
            }
            if out.len() > 1 << 20 {
                return Err(std::io::Error::other("answer too large"));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| anyhow!("the ICE server request timed out"))??;
    Ok(out)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// TLS as `--ca` and `--insecure` ask: for the server's https URL and its `turns:` servers.
pub(crate) fn client_config(
    ca: Option<&std::path::Path>,
    insecure: bool,
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    if insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(ca) = ca {
        use rustls_pki_types::pem::PemObject;
        for c in rustls_pki_types::CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("cannot read {}", ca.display()))?
        {
            roots.add(c?)?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `--insecure`: any certificate (a self-signed development server).
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
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn targets() {
        assert_eq!(
            super::target("http://127.0.0.1:8080").unwrap(),
            (false, "127.0.0.1".into(), 8080, "".into())
        );
        assert_eq!(
            super::target("wss://example.org/sb/v1/ws").unwrap(),
            (true, "example.org".into(), 443, "/sb".into())
        );
    }
}
