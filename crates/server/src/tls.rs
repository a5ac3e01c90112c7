//! TLS material: loaded from PEM files or generated (self-signed), served through a resolver that
//! can be swapped at run time so a reload never drops a live connection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
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

/// The process-wide crypto provider (aws-lc-rs everywhere, so rustls, quinn and rcgen agree).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Installs [`provider`] as the process default; harmless when called twice.
pub fn install_default_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
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

    /// A rustls server config using this store, TLS 1.3 and 1.2 (ECDHE suites only: the
    /// provider has no static-RSA key exchange), with the given ALPN protocols.
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_has_fingerprint() {
        let store = CertStore::new(CertSource::SelfSigned).unwrap();
        let fp = store.fingerprint();
        assert_eq!(fp.len(), 95, "{fp}");
        assert!(store.server_config(&[b"stun.turn"]).is_ok());
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
