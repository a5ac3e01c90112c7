//! Connection tokens: JWTs signed with HS256, RS256 or ES256.
//!
//! Claims read: `sub` (user id; empty = anonymous), `exp` and `nbf` (seconds since the epoch,
//! optional), `channels` (optional list of channels or `prefix*` patterns the connection may
//! subscribe to), `info` (optional JSON, delivered to others as `ClientInfo.conn_info`), plus
//! `aud`/`iss` when configured. `exp` and `nbf` are checked against the hub's
//! [`Clock`](crate::Clock), not the system time (so it is testable), with the same leeway.
//!
//! A header `crit` (RFC 7515 §4.1.11: extensions the recipient must understand) is refused
//! whatever it lists: this verifier implements no JWS extension, and jsonwebtoken parses `crit`
//! without enforcing it.

use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::channel::ChannelPattern;
use crate::config::JwtConfig;
use crate::error::{AuthFailure, ConfigError, HubError};

/// Who a verified token says the connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim; empty for anonymous.
    pub user: String,
    /// The `channels` claim: when present, the only channels the connection may subscribe to.
    pub channels: Option<Vec<ChannelPattern>>,
    /// The `info` claim as JSON text.
    pub info: Vec<u8>,
    /// The `exp` claim, seconds since the epoch.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// An anonymous identity (no token).
    pub fn anonymous() -> Self {
        Self {
            user: String::new(),
            channels: None,
            info: Vec::new(),
            expires_at: None,
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    exp: Option<serde_json::Number>,
    #[serde(default)]
    nbf: Option<serde_json::Number>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    info: Option<Box<RawValue>>,
}

struct JwksKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Verifies connection tokens against the configured keys.
pub struct JwtVerifier {
    hmac: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
    ec: Option<DecodingKey>,
    jwks: Vec<JwksKey>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: u64,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("hmac", &self.hmac.is_some())
            .field("rsa", &self.rsa.is_some())
            .field("ec", &self.ec.is_some())
            .field("jwks_keys", &self.jwks.len())
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::KeyFile {
        path: path.to_owned(),
        source,
    })
}

fn pem_source(
    inline: Option<&String>,
    file: Option<&std::path::PathBuf>,
) -> Result<Option<String>, ConfigError> {
    match (inline, file) {
        (Some(text), _) => Ok(Some(text.clone())),
        (None, Some(path)) => read(path).map(Some),
        (None, None) => Ok(None),
    }
}

fn key_error(field: &'static str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Key {
        field,
        message: e.to_string(),
    }
}

impl JwtVerifier {
    /// Loads the keys (reading key files).
    pub fn from_config(config: &JwtConfig) -> Result<Self, ConfigError> {
        let hmac = config
            .hmac_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.as_bytes()));
        let rsa = pem_source(
            config.rsa_public_key_pem.as_ref(),
            config.rsa_public_key_file.as_ref(),
        )?
        .map(|pem| DecodingKey::from_rsa_pem(pem.as_bytes()))
        .transpose()
        .map_err(|e| key_error("rsa_public_key", e))?;
        let ec = pem_source(
            config.ecdsa_public_key_pem.as_ref(),
            config.ecdsa_public_key_file.as_ref(),
        )?
        .map(|pem| DecodingKey::from_ec_pem(pem.as_bytes()))
        .transpose()
        .map_err(|e| key_error("ecdsa_public_key", e))?;
        let jwks = match pem_source(config.jwks_json.as_ref(), config.jwks_file.as_ref())? {
            Some(text) => parse_jwks(&text)?,
            None => Vec::new(),
        };
        Ok(Self {
            hmac,
            rsa,
            ec,
            jwks,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
            leeway: config.leeway_secs,
        })
    }

    /// Whether any key is configured (without keys every token is refused).
    pub fn has_keys(&self) -> bool {
        self.hmac.is_some() || self.rsa.is_some() || self.ec.is_some() || !self.jwks.is_empty()
    }

    /// Verifies `token` at `now_secs` (seconds since the epoch).
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Identity, HubError> {
        let unauthorized = HubError::Unauthorized;
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| unauthorized(AuthFailure::Malformed))?;
        // RFC 7515 §4.1.11: a recipient must refuse a JWS whose `crit` lists an extension it does
        // not understand. No extension is understood here (an empty list is invalid too).
        if header.crit.is_some() {
            return Err(unauthorized(AuthFailure::CriticalHeader));
        }
        let key = self.key_for(header.alg, header.kid.as_deref())?;
        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        // `exp` and `nbf` are checked below on the hub clock, not jsonwebtoken's system time.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = self.leeway;
        validation.validate_aud = self.audience.is_some();
        if let Some(aud) = &self.audience {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
            unauthorized(match e.kind() {
                ErrorKind::InvalidSignature => AuthFailure::BadSignature,
                ErrorKind::InvalidAlgorithm
                | ErrorKind::UnsupportedAlgorithm
                | ErrorKind::InvalidAlgorithmName
                | ErrorKind::MissingAlgorithm => AuthFailure::UnsupportedAlgorithm,
                ErrorKind::InvalidAudience
                | ErrorKind::InvalidIssuer
                | ErrorKind::InvalidSubject
                | ErrorKind::MissingRequiredClaim(_)
                | ErrorKind::InvalidClaimFormat(_)
                | ErrorKind::Json(_) => AuthFailure::InvalidClaims,
                _ => AuthFailure::Malformed,
            })
        })?;
        let claims = data.claims;
        let expires_at = claims.exp.as_ref().map(seconds).transpose()?;
        if let Some(exp) = expires_at {
            if now_secs >= exp.saturating_add(self.leeway) {
                return Err(HubError::TokenExpired);
            }
        }
        if let Some(nbf) = claims.nbf.as_ref().map(seconds).transpose()? {
            if now_secs.saturating_add(self.leeway) < nbf {
                return Err(unauthorized(AuthFailure::NotYetValid));
            }
        }
        let channels = match claims.channels {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|p| ChannelPattern::parse(p, 1024))
                    .collect::<Option<Vec<_>>>()
                    .ok_or(unauthorized(AuthFailure::InvalidClaims))?,
            ),
        };
        let info = claims
            .info
            .map(|raw| raw.get().as_bytes().to_vec())
            .unwrap_or_default();
        Ok(Identity {
            user: claims.sub,
            channels,
            info,
            expires_at,
        })
    }

    fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<&DecodingKey, HubError> {
        let unsupported = HubError::Unauthorized(AuthFailure::UnsupportedAlgorithm);
        let direct = match alg {
            Algorithm::HS256 => self.hmac.as_ref(),
            Algorithm::RS256 => self.rsa.as_ref(),
            Algorithm::ES256 => self.ec.as_ref(),
            _ => return Err(unsupported),
        };
        let from_jwks = |kid: Option<&str>| {
            self.jwks
                .iter()
                .find(|k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid))
                .map(|k| &k.key)
        };
        match (kid, direct) {
            // A kid names a JWKS key; fall back to the single configured key if none matches.
            (Some(kid), _) if !self.jwks.is_empty() => from_jwks(Some(kid))
                .or(direct)
                .ok_or(HubError::Unauthorized(AuthFailure::UnknownKey)),
            (_, Some(key)) => Ok(key),
            (_, None) => from_jwks(None).ok_or(unsupported),
        }
    }
}

/// A NumericDate claim (`exp`, `nbf`): whole or fractional non-negative seconds.
fn seconds(n: &serde_json::Number) -> Result<u64, HubError> {
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        })
        .ok_or(HubError::Unauthorized(AuthFailure::InvalidClaims))
}

/// Parses a JWKS, keeping its RSA (RS256) and P-256 EC (ES256) keys.
fn parse_jwks(text: &str) -> Result<Vec<JwksKey>, ConfigError> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| key_error("jwks", e))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                if p.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            _ => continue,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| key_error("jwks", e))?;
        keys.push(JwksKey {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    if keys.is_empty() {
        return Err(key_error("jwks", "no RS256 or ES256 key in the set"));
    }
    Ok(keys)
}
