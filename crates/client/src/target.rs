//! A server URL as the client uses it: `http://HOST:PORT[/prefix]`, `https://…`, or a
//! WebSocket URL.

use crate::ClientError;

/// Where to connect.
pub(crate) struct Target {
    /// `ws://…/v1/ws` or `wss://…`.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// `HOST[:PORT]` as given.
    pub authority: String,
    /// The path before `/v1/...` (empty, or `/prefix`); for http(s) URLs.
    pub base: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, ClientError> {
        let bad = |why| ClientError::Url {
            url: url.to_owned(),
            why,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected http://, https://, ws:// or wss://"))?;
        let (tls, ws_scheme, default_port, explicit_ws) = match scheme.to_ascii_lowercase().as_str()
        {
            "http" => (false, "ws", 80, false),
            "https" => (true, "wss", 443, false),
            "ws" => (false, "ws", 80, true),
            "wss" => (true, "wss", 443, true),
            _ => return Err(bad("expected http://, https://, ws:// or wss://")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("expected a host (and port), without user info"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') && (!h.contains(':') || h.ends_with(']')) => {
                (h, p.parse().map_err(|_| bad("bad port"))?)
            }
            _ => (authority, default_port),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let base = path.trim_end_matches('/').to_owned();
        let path = if explicit_ws {
            if path.is_empty() { "/v1/ws" } else { path }.to_owned()
        } else {
            format!("{base}/v1/ws")
        };
        Ok(Target {
            url: format!("{ws_scheme}://{authority}{path}"),
            host,
            port,
            tls,
            authority: authority.to_owned(),
            base,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn server_urls_become_websocket_urls() {
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (t.url.as_str(), t.port, t.tls),
            ("ws://127.0.0.1:8080/v1/ws", 8080, false)
        );
        let t = Target::parse("https://example.org/").unwrap();
        assert_eq!(
            (t.url.as_str(), t.host.as_str(), t.port, t.tls),
            ("wss://example.org/v1/ws", "example.org", 443, true)
        );
        let t = Target::parse("http://[::1]:9000/base").unwrap();
        assert_eq!(
            (t.url.as_str(), t.host.as_str()),
            ("ws://[::1]:9000/base/v1/ws", "::1")
        );
        let t = Target::parse("ws://h:1/custom").unwrap();
        assert_eq!(t.url, "ws://h:1/custom");
        for bad in [
            "127.0.0.1:8080",
            "ftp://x",
            "http://",
            "http://u@h",
            "http://h:99999",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
