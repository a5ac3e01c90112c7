//! The probe's TLS client: rustls with aws-lc-rs, X25519MLKEM768 offered first (as browsers
//! do), a verifier that records its verdict instead of aborting the handshake (so a probe of a
//! server with a bad certificate still shows everything else), key-exchange groups that record
//! which one the server picked (quinn does not expose the rustls connection), and certificate
//! details from x509-parser.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ActiveKeyExchange, CryptoProvider, SharedSecret, SupportedKxGroup};
use rustls::{DigitallySignedStruct, NamedGroup, ProtocolVersion, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::report::{Cert, Certificate, Tls};

/// The group the last handshake completed with (probes run one connection at a time).
static LAST_GROUP: Mutex<Option<NamedGroup>> = Mutex::new(None);

pub fn take_group() -> Option<NamedGroup> {
    LAST_GROUP.lock().unwrap_or_else(|e| e.into_inner()).take()
}

fn record(g: NamedGroup) {
    *LAST_GROUP.lock().unwrap_or_else(|e| e.into_inner()) = Some(g);
}

#[derive(Debug)]
struct RecordingGroup(&'static dyn SupportedKxGroup);

impl SupportedKxGroup for RecordingGroup {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        Ok(Box::new(RecordingActive(self.0.start()?)))
    }
    fn ffdhe_group(&self) -> Option<rustls::ffdhe_groups::FfdheGroup<'static>> {
        self.0.ffdhe_group()
    }
    fn name(&self) -> NamedGroup {
        self.0.name()
    }
    fn fips(&self) -> bool {
        self.0.fips()
    }
    fn usable_for_version(&self, v: ProtocolVersion) -> bool {
        self.0.usable_for_version(v)
    }
}

struct RecordingActive(Box<dyn ActiveKeyExchange>);

impl ActiveKeyExchange for RecordingActive {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        record(self.0.group());
        self.0.complete(peer)
    }
    fn complete_for_tls_version(
        self: Box<Self>,
        peer: &[u8],
        v: &rustls::SupportedProtocolVersion,
    ) -> Result<SharedSecret, rustls::Error> {
        record(self.0.group());
        self.0.complete_for_tls_version(peer, v)
    }
    fn hybrid_component(&self) -> Option<(NamedGroup, &[u8])> {
        self.0.hybrid_component()
    }
    fn complete_hybrid_component(
        self: Box<Self>,
        peer: &[u8],
    ) -> Result<SharedSecret, rustls::Error> {
        if let Some((g, _)) = self.0.hybrid_component() {
            record(g);
        }
        self.0.complete_hybrid_component(peer)
    }
    fn pub_key(&self) -> &[u8] {
        self.0.pub_key()
    }
    fn ffdhe_group(&self) -> Option<rustls::ffdhe_groups::FfdheGroup<'static>> {
        self.0.ffdhe_group()
    }
    fn group(&self) -> NamedGroup {
        self.0.group()
    }
}

/// aws-lc-rs with X25519MLKEM768 first, then the provider's order; every group recording.
pub fn provider() -> Arc<CryptoProvider> {
    static GROUPS: std::sync::OnceLock<Vec<&'static dyn SupportedKxGroup>> =
        std::sync::OnceLock::new();
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    let groups = GROUPS.get_or_init(|| {
        let mut g = p.kx_groups.clone();
        g.sort_by_key(|g| g.name() != NamedGroup::X25519MLKEM768);
        g.into_iter()
            .map(|g| &*Box::leak(Box::new(RecordingGroup(g))) as &'static dyn SupportedKxGroup)
            .collect()
    });
    p.kx_groups = groups.clone();
    Arc::new(p)
}

/// Checks the chain like a browser would, remembers the answer, and lets the handshake go on
/// (signatures are still checked: a server without the key cannot finish it).
#[derive(Debug)]
pub struct Verifier {
    inner: Result<Arc<WebPkiServerVerifier>, String>,
    provider: Arc<CryptoProvider>,
    pub roots: String,
    last: Mutex<Option<Result<(), String>>>,
}

impl Verifier {
    pub fn new(ca: Option<&Path>, provider: Arc<CryptoProvider>) -> anyhow::Result<Arc<Self>> {
        let mut store = rustls::RootCertStore::empty();
        let roots = match ca {
            Some(path) => {
                use rustls_pki_types::pem::PemObject;
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .with_context(|| format!("read --ca {}", path.display()))?
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("parse --ca {}", path.display()))?;
                if certs.is_empty() {
                    return Err(anyhow!("--ca {}: no certificate in it", path.display()));
                }
                for c in certs {
                    store.add(c).with_context(|| {
                        format!("--ca {}: unusable certificate", path.display())
                    })?;
                }
                path.display().to_string()
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    let _ = store.add(c);
                }
                "system".to_string()
            }
        };
        let inner = if store.is_empty() {
            Err("no trusted root certificates (use --ca FILE)".to_string())
        } else {
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| e.to_string())
        };
        Ok(Arc::new(Verifier {
            inner,
            provider,
            roots,
            last: Mutex::new(None),
        }))
    }

    /// The verdict on the last certificate seen (None: no certificate was checked, as on a
    /// resumed TLS 1.3 handshake).
    pub fn take(&self) -> Option<Result<(), String>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let r = match &self.inner {
            Ok(v) => v
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                .map(|_| ())
                .map_err(|e| describe_error(&e)),
            Err(e) => Err(e.clone()),
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn describe_error(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "unknown issuer (not signed by a trusted root)".into(),
            C::Expired | C::ExpiredContext { .. } => "expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "not valid yet".into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "not valid for this host name".into()
            }
            C::BadSignature => "bad signature".into(),
            C::Revoked => "revoked".into(),
            other if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                "a CA certificate (basicConstraints CA:TRUE) used as the server's own".into()
            }
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}

/// A client configuration: TLS 1.3 and 1.2 (1.3 only for QUIC), these ALPN protocols, the
/// recording verifier, session tickets kept for resumption, early data allowed.
pub fn client_config(
    verifier: Arc<Verifier>,
    alpn: &[&[u8]],
    tls13_only: bool,
) -> anyhow::Result<rustls::ClientConfig> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = if tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    cfg.enable_early_data = true;
    Ok(cfg)
}

pub fn server_name(host: &str) -> anyhow::Result<ServerName<'static>> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(h.to_string()).map_err(|_| anyhow!("{host:?} is not a valid server name"))
}

pub fn version_name(v: ProtocolVersion) -> String {
    match v {
        ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        other => format!("{other:?}"),
    }
}

pub fn group_name(g: NamedGroup) -> String {
    format!("{g:?}")
}

/// Version, suite, group, ALPN and kind of a finished TCP handshake.
pub fn tls_of(c: &rustls::ClientConnection, handshake_ms: f64) -> Tls {
    let _ = take_group();
    Tls {
        handshake_ms,
        version: c.protocol_version().map(version_name),
        cipher_suite: c.negotiated_cipher_suite().map(|s| {
            s.suite()
                .as_str()
                .map_or_else(|| format!("{:?}", s.suite()), str::to_string)
        }),
        key_exchange_group: c
            .negotiated_key_exchange_group()
            .map(|g| group_name(g.name())),
        alpn: c
            .alpn_protocol()
            .map(|a| String::from_utf8_lossy(a).into_owned()),
        handshake_kind: c.handshake_kind().map(|k| {
            match k {
                rustls::HandshakeKind::Full => "full",
                rustls::HandshakeKind::FullWithHelloRetryRequest => "full-with-hello-retry",
                rustls::HandshakeKind::Resumed => "resumed",
            }
            .to_string()
        }),
    }
}

/// The certificate section: the chain's details and the verifier's verdict.
pub fn certificate(
    chain: &[CertificateDer<'_>],
    verdict: Option<Result<(), String>>,
    roots: &str,
) -> Certificate {
    let verdict = verdict.unwrap_or_else(|| Err("no certificate checked".into()));
    Certificate {
        verified: verdict.is_ok(),
        verify_error: verdict.err(),
        roots: roots.to_string(),
        chain: chain.iter().map(|c| cert(c)).collect(),
    }
}

fn cert(der: &CertificateDer<'_>) -> Cert {
    use x509_parser::prelude::*;
    let Ok((_, x)) = X509Certificate::from_der(der.as_ref()) else {
        return Cert {
            subject: "(unparsable certificate)".into(),
            issuer: String::new(),
            not_before: String::new(),
            not_after: String::new(),
            days_left: 0,
            sans: Vec::new(),
            key: String::new(),
            signature: String::new(),
        };
    };
    let iso = |t: &ASN1Time| {
        t.to_datetime()
            .format(&::time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let not_after = x.validity().not_after;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = x.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => sans.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => sans.push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())
                            .to_string(),
                    ),
                    16 => sans.push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())
                            .to_string(),
                    ),
                    _ => {}
                },
                other => sans.push(other.to_string()),
            }
        }
    }
    let key = match x.public_key().parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(r)) => format!("RSA {}", r.key_size()),
        Ok(x509_parser::public_key::PublicKey::EC(e)) => {
            let curve = x
                .public_key()
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| match o.to_id_string().as_str() {
                    "1.2.840.10045.3.1.7" => "P-256".to_string(),
                    "1.3.132.0.34" => "P-384".to_string(),
                    "1.3.132.0.35" => "P-521".to_string(),
                    s => s.to_string(),
                })
                .unwrap_or_default();
            format!("EC {curve} ({} bits)", e.key_size())
        }
        Ok(other) => format!("{other:?}")
            .split(['(', ' '])
            .next()
            .unwrap_or("")
            .to_string(),
        Err(_) => "unknown key".into(),
    };
    let sig_oid = x.signature_algorithm.algorithm.to_id_string();
    let signature = match sig_oid.as_str() {
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassaPss",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.3.101.112" => "ed25519",
        s => s,
    }
    .to_string();
    Cert {
        subject: x.subject().to_string(),
        issuer: x.issuer().to_string(),
        not_before: iso(&x.validity().not_before),
        not_after: iso(&not_after),
        days_left: (not_after.timestamp() - now).div_euclid(86_400),
        sans,
        key,
        signature,
    }
}
