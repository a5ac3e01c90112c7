//! TLS material: loaded from PEM files or generated (self-signed), served through a resolver that
//! can be swapped at run time so a reload never drops a live connection.
//!
//! The policy every TLS listener shares (HTTPS, STUN/TURN over TLS, QUIC), see docs/tls.md:
//! TLS 1.3 and 1.2, ECDHE-only suites on 1.2 (the provider has no static-RSA key exchange), key
//! exchange groups in the server's order of preference [`KX_PREFERENCE`] (X25519MLKEM768,
//! X25519, secp256r1, secp384r1) enforced by [`Acceptor`] (rustls alone follows the client's
//! order), session resumption, and no TLS 1.3 early data on TCP (0-RTT is a QUIC-only feature,
//! with the HTTP/3 rule that only GET and HEAD may arrive in it).

pub(crate) mod quic;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::{aws_lc_rs, CryptoProvider, SupportedKxGroup};
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, StoresServerSessions,
};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, NamedGroup, ProtocolVersion, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// A TLS set-up error; names the file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Certificate file unreadable or not PEM.
    #[error("cannot load certificate {path}: {reason}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Key file unreadable, not PEM, or not a supported key.
    #[error("cannot load private key {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("private key {key} does not match certificate {cert}")]
    Mismatch {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
    },
    /// Generating a self-signed certificate failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Where the certificate comes from.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// PEM files, re-read on reload.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// Generated at start-up for localhost; reload keeps it.
    SelfSigned,
}

/// Key exchange groups, most preferred first. The provider's own default order puts
/// X25519MLKEM768 last (it is first only with rustls' `prefer-post-quantum` feature), so the
/// order is set here explicitly.
pub static KX_PREFERENCE: &[&dyn SupportedKxGroup] = &[
    aws_lc_rs::kx_group::X25519MLKEM768,
    aws_lc_rs::kx_group::X25519,
    aws_lc_rs::kx_group::SECP256R1,
    aws_lc_rs::kx_group::SECP384R1,
];

/// Cipher suites, most preferred first: the TLS 1.3 AEADs, then TLS 1.2 with ECDHE key exchange
/// only (no static RSA, no CBC, no DHE).
pub static CIPHER_SUITES: &[SupportedCipherSuite] = &[
    aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
    aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
    aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    aws_lc_rs::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    aws_lc_rs::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    aws_lc_rs::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// Resumption sessions kept per listener kind (TLS 1.2 session ids, TLS 1.3 QUIC tickets).
const SESSION_CACHE: usize = 4096;

/// The process-wide crypto provider (aws-lc-rs everywhere, so rustls, quinn and rcgen agree),
/// with switchboard's suites and key exchange order.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(provider_with(KX_PREFERENCE.to_vec()))
}

fn provider_with(kx_groups: Vec<&'static dyn SupportedKxGroup>) -> CryptoProvider {
    CryptoProvider {
        cipher_suites: CIPHER_SUITES.to_vec(),
        kx_groups,
        ..aws_lc_rs::default_provider()
    }
}

/// Installs [`provider`] as the process default; harmless when called twice.
pub fn install_default_provider() {
    let _ = provider_with(KX_PREFERENCE.to_vec()).install_default();
}

/// The index in [`KX_PREFERENCE`] of the group to use with a client that lists `offered` in
/// its supported_groups extension: our most preferred group the client supports. `tls13` says
/// whether the client can do TLS 1.3 (hybrid post-quantum groups exist only there).
pub fn preferred_group(offered: &[NamedGroup], tls13: bool) -> Option<usize> {
    KX_PREFERENCE.iter().position(|g| {
        offered.contains(&g.name()) && (tls13 || g.usable_for_version(ProtocolVersion::TLSv1_2))
    })
}

/// Whether a client offering these cipher suites can do TLS 1.3.
fn offers_tls13(suites: &[CipherSuite]) -> bool {
    suites.iter().any(|s| {
        matches!(
            s,
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS13_AES_256_GCM_SHA384
                | CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        )
    })
}

/// A TLS acceptor for TCP listeners that enforces the server's key exchange preference.
///
/// rustls picks the first group of the *client's* list that it supports. This acceptor reads
/// the ClientHello first and hands rustls a configuration that holds only our most preferred
/// group among the client's (a HelloRetryRequest follows when the client sent no key share for
/// it), so X25519MLKEM768 wins whenever a client supports it. All configurations share one
/// session cache and one ticket key, so resumption works across them.
#[derive(Clone)]
pub struct Acceptor {
    by_group: Arc<[Arc<rustls::ServerConfig>]>,
    fallback: Arc<rustls::ServerConfig>,
    listener: &'static str,
}

impl Acceptor {
    /// Completes a TLS handshake on `io`. When it fails, `failed` runs before the connection is
    /// closed, so what it counts is counted by the time the client sees the close.
    pub async fn accept<IO>(
        &self,
        io: IO,
        failed: impl FnOnce(&std::io::Error),
    ) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut lazy =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
        let start = match (&mut lazy).await {
            Ok(start) => start,
            Err(e) => {
                // `lazy` still holds the connection.
                failed(&e);
                return Err(e);
            }
        };
        let config = self.config_for(&start.client_hello());
        let stream = match start.into_stream(config).into_fallible().await {
            Ok(stream) => stream,
            Err((e, io)) => {
                failed(&e);
                drop(io);
                return Err(e);
            }
        };
        let conn = stream.get_ref().1;
        let group = conn
            .negotiated_key_exchange_group()
            .map(|g| group_name(g.name()))
            .unwrap_or("none");
        let version = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "other",
        };
        metrics::counter!("switchboard_tls_key_exchange_total", "listener" => self.listener, "group" => group)
            .increment(1);
        metrics::counter!("switchboard_tls_versions_total", "listener" => self.listener, "version" => version)
            .increment(1);
        Ok(stream)
    }

    /// The configuration for a client: the one holding our preferred group of its list.
    pub fn config_for(&self, hello: &ClientHello<'_>) -> Arc<rustls::ServerConfig> {
        let offered = hello.named_groups().unwrap_or_default();
        preferred_group(offered, offers_tls13(hello.cipher_suites()))
            .and_then(|i| self.by_group.get(i))
            .unwrap_or(&self.fallback)
            .clone()
    }
}

/// A certificate that can be replaced while connections use the old one.
#[derive(Debug)]
pub struct CertStore {
    source: CertSource,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads (or generates) the certificate.
    pub fn new(source: CertSource) -> Result<Arc<Self>, TlsError> {
        let key = load(&source)?;
        Ok(Arc::new(CertStore {
            source,
            current: RwLock::new(key),
        }))
    }

    /// Re-reads the files; on error the old certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        if let CertSource::Files { .. } = self.source {
            let key = load(&self.source)?;
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
        }
        Ok(())
    }

    /// The certificate in use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// SHA-256 fingerprint of the leaf certificate, colon-separated upper-case hex.
    pub fn fingerprint(&self) -> String {
        self.current()
            .cert
            .first()
            .map(|c| fingerprint(c.as_ref()))
            .unwrap_or_default()
    }

    /// Where the certificate comes from.
    pub fn source(&self) -> &CertSource {
        &self.source
    }

    /// A rustls server config for TCP listeners using this store: TLS 1.3 and 1.2 (ECDHE suites
    /// only), every group of [`KX_PREFERENCE`], resumption by tickets (stateless, TLS 1.3 and
    /// 1.2) and session ids (TLS 1.2), no early data, the given ALPN protocols.
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let resumption = TcpResumption::new()?;
        self.tcp_config(alpn, KX_PREFERENCE.to_vec(), &resumption)
    }

    /// An [`Acceptor`] for TCP listeners with the given ALPN protocols (see
    /// [`CertStore::server_config`] for the rest of the policy); `listener` labels its metrics.
    pub fn acceptor(
        self: &Arc<Self>,
        alpn: &[&[u8]],
        listener: &'static str,
    ) -> Result<Acceptor, TlsError> {
        let resumption = TcpResumption::new()?;
        let by_group = KX_PREFERENCE
            .iter()
            .map(|g| self.tcp_config(alpn, vec![*g], &resumption))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Acceptor {
            by_group: by_group.into(),
            fallback: self.tcp_config(alpn, KX_PREFERENCE.to_vec(), &resumption)?,
            listener,
        })
    }

    fn tcp_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
        kx: Vec<&'static dyn SupportedKxGroup>,
        resumption: &TcpResumption,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider_with(kx)))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        cfg.session_storage = resumption.cache.clone();
        cfg.ticketer = resumption.ticketer.clone();
        // TLS 1.3 early data on TCP: off (see docs/tls.md; 0-RTT is offered on QUIC only).
        cfg.max_early_data_size = 0;
        Ok(Arc::new(cfg))
    }

    /// rustls server configs for QUIC (TLS 1.3 only, ALPN `alpn`), one per group of
    /// [`KX_PREFERENCE`] holding that group alone, then one with every group. Resumption is
    /// stateful (a single-use ticket per resumption, which rustls requires for 0-RTT) and 0-RTT
    /// is on: the HTTP/3 layer answers non-GET/HEAD requests that arrive in it with 425.
    pub fn quic_configs(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<Vec<Arc<rustls::ServerConfig>>, TlsError> {
        let cache: Arc<dyn StoresServerSessions> = ServerSessionMemoryCache::new(SESSION_CACHE);
        let groups = KX_PREFERENCE
            .iter()
            .map(|g| vec![*g])
            .chain(std::iter::once(KX_PREFERENCE.to_vec()));
        groups
            .map(|kx| {
                let mut cfg =
                    rustls::ServerConfig::builder_with_provider(Arc::new(provider_with(kx)))
                        .with_protocol_versions(&[&rustls::version::TLS13])
                        .map_err(|e| TlsError::Config(e.to_string()))?
                        .with_no_client_auth()
                        .with_cert_resolver(Arc::new(Resolver(self.clone())));
                cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
                cfg.session_storage = cache.clone();
                cfg.max_early_data_size = u32::MAX;
                Ok(Arc::new(cfg))
            })
            .collect()
    }
}

/// Resumption state shared by every TCP configuration of one listener kind.
struct TcpResumption {
    cache: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
}

impl TcpResumption {
    fn new() -> Result<Self, TlsError> {
        Ok(TcpResumption {
            cache: ServerSessionMemoryCache::new(SESSION_CACHE),
            // Ticket keys rotate every 6 hours; the previous key is still accepted.
            ticketer: aws_lc_rs::Ticketer::new().map_err(|e| TlsError::Config(e.to_string()))?,
        })
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// Colon-separated SHA-256 of DER bytes.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut s = String::with_capacity(95);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

fn load(source: &CertSource) -> Result<Arc<CertifiedKey>, TlsError> {
    let provider = provider();
    match source {
        CertSource::SelfSigned => {
            let names = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ];
            let ck = rcgen::generate_simple_self_signed(names)
                .map_err(|e| TlsError::Generate(e.to_string()))?;
            let cert = CertificateDer::from(ck.cert.der().to_vec());
            let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
                .map_err(|e| TlsError::Generate(e.to_string()))?;
            let signing = provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| TlsError::Generate(e.to_string()))?;
            Ok(Arc::new(CertifiedKey::new(vec![cert], signing)))
        }
        CertSource::Files { cert, key } => load_files(&provider, cert, key),
    }
}

fn load_files(
    provider: &CryptoProvider,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert_path.to_path_buf(),
        reason,
    };
    let key_err = |reason: String| TlsError::Key {
        path: key_path.to_path_buf(),
        reason,
    };
    let cert_pem = std::fs::read(cert_path).map_err(|e| cert_err(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(cert_err("no CERTIFICATE block found".into()));
    }
    let key_pem = std::fs::read(key_path).map_err(|e| key_err(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| key_err(format!("no usable PEM private key: {e}")))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_err(format!("unsupported key: {e}")))?;
    let ck = CertifiedKey::new(certs, signing);
    match ck.keys_match() {
        Ok(()) => Ok(Arc::new(ck)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(Arc::new(ck)),
        Err(_) => Err(TlsError::Mismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        }),
    }
}

/// The metric label of a key exchange group.
pub(crate) fn group_name(g: NamedGroup) -> &'static str {
    match g {
        NamedGroup::X25519MLKEM768 => "X25519MLKEM768",
        NamedGroup::X25519 => "X25519",
        NamedGroup::secp256r1 => "secp256r1",
        NamedGroup::secp384r1 => "secp384r1",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_has_fingerprint() {
        let store = CertStore::new(CertSource::SelfSigned).unwrap();
        let fp = store.fingerprint();
        assert_eq!(fp.len(), 95, "{fp}");
        assert!(store.server_config(&[b"stun.turn"]).is_ok());
        assert!(store.acceptor(&[b"h2"], "test").is_ok());
        assert_eq!(
            store.quic_configs(&[b"h3"]).unwrap().len(),
            KX_PREFERENCE.len() + 1
        );
    }

    #[test]
    fn tls12_suites_are_ecdhe_only_and_groups_in_our_order() {
        let p = provider();
        for s in &p.cipher_suites {
            if let SupportedCipherSuite::Tls12(s) = s {
                assert_eq!(
                    s.kx,
                    rustls::crypto::KeyExchangeAlgorithm::ECDHE,
                    "{:?}",
                    s.common.suite
                );
            }
        }
        // The provider's own default would put ML-KEM last.
        let names: Vec<_> = p.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            names,
            [
                NamedGroup::X25519MLKEM768,
                NamedGroup::X25519,
                NamedGroup::secp256r1,
                NamedGroup::secp384r1
            ]
        );
        let client = [
            NamedGroup::secp256r1,
            NamedGroup::X25519,
            NamedGroup::X25519MLKEM768,
        ];
        assert_eq!(preferred_group(&client, true), Some(0));
        // No hybrid groups below TLS 1.3.
        assert_eq!(preferred_group(&client, false), Some(1));
        assert_eq!(preferred_group(&[NamedGroup::secp521r1], true), None);
    }

    #[test]
    fn files_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("sb-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["a".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b".into()]).unwrap();
        let cert = dir.join("cert.pem");
        let key_a = dir.join("a.key");
        let key_b = dir.join("b.key");
        std::fs::write(&cert, a.cert.pem()).unwrap();
        std::fs::write(&key_a, a.signing_key.serialize_pem()).unwrap();
        std::fs::write(&key_b, b.signing_key.serialize_pem()).unwrap();

        let ok = CertStore::new(CertSource::Files {
            cert: cert.clone(),
            key: key_a.clone(),
        });
        assert!(ok.is_ok());
        let e = CertStore::new(CertSource::Files {
            cert: cert.clone(),
            key: key_b,
        })
        .unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        let e = CertStore::new(CertSource::Files {
            cert: dir.join("missing.pem"),
            key: key_a.clone(),
        })
        .unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let e = CertStore::new(CertSource::Files {
            cert: key_a.clone(),
            key: key_a,
        })
        .unwrap_err();
        assert!(e.to_string().contains("a.key"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
