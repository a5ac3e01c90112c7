//! The server API (`POST /v1/api/METHOD` with `Authorization: apikey KEY`, JSON in and out):
//! publishing, history and presence as the application backend, without a client connection.
//! One HTTP/1.1 request per call on a fresh connection (TLS for `https`).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::target::Target;
use crate::{ClientError, Config};

/// A server API client.
pub struct Api {
    target: Target,
    key: String,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: std::time::Duration,
}

/// The largest answer read (a history of many large publications fits).
const MAX_RESPONSE: usize = 64 << 20;

impl Api {
    /// For the server at `config.url` (http or https), with the API key `key`.
    pub fn new(config: &Config, key: &str) -> Result<Api, ClientError> {
        let target = Target::parse(&config.url)?;
        if target.url.ends_with("/v1/ws") && config.url.starts_with("ws") {
            return Err(ClientError::Url {
                url: config.url.clone(),
                why: "the server API needs an http:// or https:// URL",
            });
        }
        let tls = if target.tls {
            Some(crate::tls::connector(config)?)
        } else {
            None
        };
        Ok(Api {
            target,
            key: key.to_owned(),
            tls,
            timeout: config.request_timeout,
        })
    }

    /// Calls `method` with `body`; the `result` of the answer, or its error (code and message).
    pub async fn call(
        &self,
        method: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        match tokio::time::timeout(self.timeout, self.call_inner(method, body)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout("server API call")),
        }
    }

    async fn call_inner(
        &self,
        method: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!(
            "{}://{}{}/v1/api/{method}",
            if self.target.tls { "https" } else { "http" },
            self.target.authority,
            self.target.base
        );
        let io_err = |e: std::io::Error| ClientError::Connect {
            url: url.clone(),
            source: Box::new(e.into()),
        };
        let tcp = tokio::net::TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(io_err)?;
        let body = body.to_string();
        let request = format!(
            "POST {}/v1/api/{method} HTTP/1.1\r\nHost: {}\r\nAuthorization: apikey {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\
             User-Agent: switchboard-client/{}\r\n\r\n{body}",
            self.target.base,
            self.target.authority,
            self.key,
            body.len(),
            env!("CARGO_PKG_VERSION"),
        );
        let mut raw = Vec::new();
        match &self.tls {
            None => exchange(tcp, request.as_bytes(), &mut raw).await,
            Some(connector) => {
                let name = rustls_pki_types::ServerName::try_from(self.target.host.clone())
                    .map_err(|_| ClientError::Url {
                        url: url.clone(),
                        why: "not a valid TLS server name",
                    })?;
                let tls = connector.connect(name, tcp).await.map_err(io_err)?;
                exchange(tls, request.as_bytes(), &mut raw).await
            }
        }
        .map_err(io_err)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, rest) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| ClientError::Protocol("no HTTP response head".into()))?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ClientError::Protocol("no HTTP status".into()))?;
        let chunked = head.lines().any(|l| {
            l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_owned()
        };
        let value: serde_json::Value = serde_json::from_str(&body).map_err(|_| {
            ClientError::Protocol(format!(
                "HTTP {status} with a body that is not JSON: {body:.200}"
            ))
        })?;
        if let Some(e) = value.get("error") {
            return Err(ClientError::Server {
                code: e.get("code").and_then(|c| c.as_u64()).unwrap_or(0) as u32,
                message: e
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("")
                    .to_owned(),
                temporary: e
                    .get("temporary")
                    .and_then(|t| t.as_bool())
                    .unwrap_or(false),
            });
        }
        if !(200..300).contains(&status) {
            return Err(ClientError::Protocol(format!("HTTP {status}: {body:.200}")));
        }
        Ok(value
            .get("result")
            .cloned()
            .unwrap_or(serde_json::Value::Null))
    }
}

async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    request: &[u8],
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    s.write_all(request).await?;
    s.flush().await?;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > MAX_RESPONSE {
            return Err(std::io::Error::other("server API answer too large"));
        }
    }
}

/// A chunked body's data.
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
