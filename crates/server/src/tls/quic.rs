//! TLS for QUIC with the server's key exchange preference.
//!
//! quinn drives the TLS handshake itself, so the [`super::Acceptor`] trick (read the
//! ClientHello, then pick a configuration) is done one layer down: [`PreferringConfig`] is a
//! `quinn::crypto::ServerConfig` whose sessions buffer the CRYPTO bytes of the ClientHello
//! (it may span two Initial packets with a post-quantum key share), read its supported_groups,
//! and only then start the rustls session with the configuration that holds our most preferred
//! group among the client's ([`super::preferred_group`]). Anything unexpected falls back to
//! the configuration with every group, where rustls reports the problem as usual.

use std::any::Any;
use std::sync::Arc;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::crypto::{
    self, ExportKeyingMaterialError, HeaderKey, KeyPair, Keys, PacketKey, ServerConfig as _,
};
use quinn::{ConnectionId, Side};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::TransportError;
use rustls::NamedGroup;

use super::{group_name, preferred_group, KX_PREFERENCE};

/// A ClientHello larger than this is not buffered; the fallback configuration judges it.
const MAX_HELLO: usize = 16 * 1024;

/// QUIC server crypto: one rustls configuration per preferred group, plus a fallback.
pub(crate) struct PreferringConfig {
    by_group: Vec<Arc<QuicServerConfig>>,
    fallback: Arc<QuicServerConfig>,
}

impl PreferringConfig {
    /// `configs` as made by [`super::CertStore::quic_configs`]: one per group of
    /// [`KX_PREFERENCE`], then the one with every group.
    pub(crate) fn new(mut configs: Vec<Arc<rustls::ServerConfig>>) -> Result<Self, String> {
        let all = configs.pop().ok_or("no QUIC TLS configuration")?;
        if configs.len() != KX_PREFERENCE.len() {
            return Err("one QUIC TLS configuration per key exchange group expected".into());
        }
        let quic = |c: Arc<rustls::ServerConfig>| {
            QuicServerConfig::try_from(c)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        };
        Ok(PreferringConfig {
            by_group: configs.into_iter().map(quic).collect::<Result<_, _>>()?,
            fallback: quic(all)?,
        })
    }
}

impl crypto::ServerConfig for PreferringConfig {
    fn initial_keys(
        &self,
        version: u32,
        dst_cid: &ConnectionId,
    ) -> Result<Keys, crypto::UnsupportedVersion> {
        self.fallback.initial_keys(version, dst_cid)
    }

    fn retry_tag(&self, version: u32, orig_dst_cid: &ConnectionId, packet: &[u8]) -> [u8; 16] {
        self.fallback.retry_tag(version, orig_dst_cid, packet)
    }

    fn start_session(
        self: Arc<Self>,
        version: u32,
        params: &TransportParameters,
    ) -> Box<dyn crypto::Session> {
        // The fallback session answers `initial_keys` (needed before any CRYPTO data) and is
        // used as is when the ClientHello picks no other configuration.
        let probe = self.fallback.clone().start_session(version, params);
        Box::new(PreferringSession {
            config: self,
            version,
            params: *params,
            hello: Vec::new(),
            probe: Some(probe),
            inner: None,
        })
    }
}

struct PreferringSession {
    config: Arc<PreferringConfig>,
    version: u32,
    params: TransportParameters,
    hello: Vec<u8>,
    probe: Option<Box<dyn crypto::Session>>,
    inner: Option<Box<dyn crypto::Session>>,
}

impl PreferringSession {
    /// The session that answers questions: the real one once started, else the probe.
    fn current(&self) -> Option<&dyn crypto::Session> {
        self.inner.as_deref().or(self.probe.as_deref())
    }

    /// Starts the real session for the buffered ClientHello and feeds it.
    fn start(&mut self) -> Result<bool, TransportError> {
        let pick = client_hello_groups(&self.hello)
            .and_then(|groups| preferred_group(&groups, true))
            .and_then(|i| self.config.by_group.get(i).cloned().map(|c| (i, c)));
        let mut session = match pick {
            Some((i, cfg)) => {
                let name = KX_PREFERENCE
                    .get(i)
                    .map(|g| group_name(g.name()))
                    .unwrap_or("other");
                metrics::counter!("switchboard_tls_key_exchange_total", "listener" => "quic", "group" => name)
                    .increment(1);
                self.probe = None;
                cfg.start_session(self.version, &self.params)
            }
            None => match self.probe.take() {
                Some(p) => p,
                None => self
                    .config
                    .fallback
                    .clone()
                    .start_session(self.version, &self.params),
            },
        };
        let hello = std::mem::take(&mut self.hello);
        let r = session.read_handshake(&hello);
        self.inner = Some(session);
        r
    }
}

impl crypto::Session for PreferringSession {
    fn initial_keys(&self, dst_cid: &ConnectionId, side: Side) -> Keys {
        match self.current() {
            Some(s) => s.initial_keys(dst_cid, side),
            // Unreachable: the probe lives until the real session exists.
            None => self
                .config
                .fallback
                .clone()
                .start_session(self.version, &self.params)
                .initial_keys(dst_cid, side),
        }
    }

    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        self.inner.as_ref()?.handshake_data()
    }

    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        self.inner.as_ref()?.peer_identity()
    }

    fn early_crypto(&self) -> Option<(Box<dyn HeaderKey>, Box<dyn PacketKey>)> {
        self.inner.as_ref()?.early_crypto()
    }

    fn early_data_accepted(&self) -> Option<bool> {
        self.inner.as_ref()?.early_data_accepted()
    }

    fn is_handshaking(&self) -> bool {
        self.inner.as_ref().is_none_or(|s| s.is_handshaking())
    }

    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, TransportError> {
        if let Some(s) = self.inner.as_mut() {
            return s.read_handshake(buf);
        }
        self.hello.extend_from_slice(buf);
        match hello_len(&self.hello) {
            // Not a ClientHello, or one too big to buffer: the fallback session decides.
            None => self.start(),
            Some(n) if n > MAX_HELLO => self.start(),
            Some(n) if self.hello.len() < n => Ok(false),
            Some(_) => self.start(),
        }
    }

    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        match self.inner.as_ref() {
            Some(s) => s.transport_parameters(),
            None => Ok(None),
        }
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<Keys> {
        self.inner.as_mut()?.write_handshake(buf)
    }

    fn next_1rtt_keys(&mut self) -> Option<KeyPair<Box<dyn PacketKey>>> {
        self.inner.as_mut()?.next_1rtt_keys()
    }

    fn is_valid_retry(&self, orig_dst_cid: &ConnectionId, header: &[u8], payload: &[u8]) -> bool {
        self.current()
            .is_some_and(|s| s.is_valid_retry(orig_dst_cid, header, payload))
    }

    fn export_keying_material(
        &self,
        output: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), ExportKeyingMaterialError> {
        match self.inner.as_ref() {
            Some(s) => s.export_keying_material(output, label, context),
            None => Err(ExportKeyingMaterialError),
        }
    }
}

/// Total length of the handshake message starting `buf` if it is a ClientHello whose header
/// is complete; `None` when it is not a ClientHello. With fewer than 4 bytes, asks for more.
fn hello_len(buf: &[u8]) -> Option<usize> {
    match buf {
        [1, a, b, c, ..] => {
            Some(4 + (usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c)))
        }
        [1, ..] | [] => Some(MAX_HELLO),
        _ => None,
    }
}

/// The supported_groups of a complete ClientHello handshake message.
pub(crate) fn client_hello_groups(msg: &[u8]) -> Option<Vec<NamedGroup>> {
    let mut r = Reader(msg);
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()?;
    let body = r.take(len)?;
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    let n = usize::from(r.u8()?);
    r.take(n)?; // legacy_session_id
    let n = r.u16()?;
    r.take(n)?; // cipher_suites
    let n = usize::from(r.u8()?);
    r.take(n)?; // legacy_compression_methods
    let n = r.u16()?;
    let mut exts = Reader(r.take(n)?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let n = exts.u16()?;
        let data = exts.take(n)?;
        if kind == 10 {
            let mut g = Reader(data);
            let n = g.u16()?;
            let mut list = Reader(g.take(n)?);
            let mut out = Vec::with_capacity(n / 2);
            while !list.0.is_empty() {
                out.push(NamedGroup::from(list.u16()? as u16));
            }
            return Some(out);
        }
    }
    Some(Vec::new())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(b[0]) << 8 | usize::from(b[1]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as a rustls client (default group order: X25519 first) writes it.
    fn rustls_client_hello() -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h3".to_vec()];
        let mut conn = rustls::quic::ClientConnection::new(
            Arc::new(cfg),
            rustls::quic::Version::V1,
            "localhost".try_into().unwrap(),
            vec![0, 1, 2, 3],
        )
        .unwrap();
        let mut out = Vec::new();
        conn.write_hs(&mut out);
        out
    }

    #[test]
    fn reads_the_groups_of_a_client_hello() {
        let hello = rustls_client_hello();
        assert_eq!(hello_len(&hello), Some(hello.len()));
        let groups = client_hello_groups(&hello).unwrap();
        assert_eq!(groups.first(), Some(&NamedGroup::X25519), "{groups:?}");
        assert!(groups.contains(&NamedGroup::X25519MLKEM768), "{groups:?}");
        // Our preference wins over the client's order.
        assert_eq!(preferred_group(&groups, true), Some(0));
        // Truncated: no answer rather than a wrong one.
        assert!(client_hello_groups(&hello[..hello.len() / 2]).is_none());
        assert_eq!(hello_len(&[22, 3, 1]), None);
    }
}
