//! Long-term credentials (RFC 8489 §9.2) for TURN: static users (password or HA1 key), TURN REST
//! ephemeral credentials (coturn's `use-auth-secret`: username `EXPIRY[:USER]`, password
//! base64(HMAC(secret, username)) with SHA-1, or SHA-256 as a variant), stateless nonces with the
//! RFC 8489 nonce cookie, PASSWORD-ALGORITHMS negotiation, and a revocation list.
//!
//! What a failed check tells the client is deliberately the same for every cause (one 401 with
//! REALM, a fresh NONCE and PASSWORD-ALGORITHMS): the cause ([`Reject::Unauthorized`]'s text)
//! is for the server's log only. Expiry and revocation of a REST credential are looked at only
//! once its MAC is valid, so they cannot be told apart from a wrong password either.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use switchboard_stun::{
    long_term_key_md5, long_term_key_sha256, password_algorithm, userhash, Message,
};

use crate::seam::{FiveTuple, Transport};

/// A long-term key in one or both algorithms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserKey {
    /// MD5(username:realm:password), also known as HA1.
    pub md5: [u8; 16],
    /// SHA-256(username:realm:password); unknown when only an HA1 hash was configured.
    pub sha256: Option<[u8; 32]>,
}

/// A configuration error in the credential set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialError {
    /// `NAME:PASSWORD` without a colon or with an empty name.
    #[error("user entry must be NAME:PASSWORD (or NAME:0xHA1) with a non-empty name")]
    BadUser,
    /// HA1 not 32 hex digits.
    #[error("HA1 key must be 32 hex digits after 0x")]
    BadHa1,
    /// Empty REST secret.
    #[error("TURN secret must not be empty")]
    EmptySecret,
}

/// A static TURN user as configured: `NAME:PASSWORD`, or `NAME:0x` and 32 hex digits of the
/// MD5 key (HA1 = MD5(NAME:REALM:PASSWORD), coturn's form). Parsed once, at configuration time.
#[derive(Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// The user name.
    pub name: String,
    /// Its password or precomputed key.
    pub secret: UserSecret,
}

/// The secret half of a [`UserEntry`].
#[derive(Clone, PartialEq, Eq)]
pub enum UserSecret {
    /// A password (both MD5 and SHA-256 keys are derived from it).
    Password(String),
    /// A precomputed MD5 key (HA1); SHA-256 is then unavailable for this user.
    Ha1([u8; 16]),
}

impl FromStr for UserEntry {
    type Err = CredentialError;
    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let (name, secret) = entry.split_once(':').ok_or(CredentialError::BadUser)?;
        if name.is_empty() {
            return Err(CredentialError::BadUser);
        }
        let secret = match secret.strip_prefix("0x") {
            Some(hex) => UserSecret::Ha1(parse_hex16(hex).ok_or(CredentialError::BadHa1)?),
            None => UserSecret::Password(secret.to_string()),
        };
        Ok(UserEntry {
            name: name.to_string(),
            secret,
        })
    }
}

impl fmt::Display for UserEntry {
    /// The configuration form, `NAME:PASSWORD` or `NAME:0xHA1` (it contains the secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.secret {
            UserSecret::Password(p) => write!(f, "{}:{p}", self.name),
            UserSecret::Ha1(md5) => {
                write!(f, "{}:0x", self.name)?;
                md5.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

impl fmt::Debug for UserEntry {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserEntry({}:…)", self.name)
    }
}

/// The credential set one realm accepts. Immutable: a reload builds a new one.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    realm: String,
    users: HashMap<String, UserKey>,
    by_userhash: HashMap<[u8; 32], String>,
    secrets: Vec<Vec<u8>>,
    revoked: HashSet<String>,
}

/// Which hash the key was derived with (PASSWORD-ALGORITHM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// MD5 (the RFC 5389 default).
    Md5,
    /// SHA-256 (RFC 8489).
    Sha256,
}

/// An integrity attribute kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Integrity {
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256.
    Sha256,
}

/// A verified request's identity and the key to sign the response with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The USERNAME (or the name USERHASH resolved to).
    pub username: String,
    /// Whom quotas count against (and revocations name): USER of a TURN REST username
    /// `EXPIRY:USER`, so that a fresh expiry is still the same user; the whole name otherwise.
    pub user: String,
    /// The key, 16 (MD5) or 32 (SHA-256) bytes.
    pub key: Vec<u8>,
    /// The integrity attribute responses carry (RFC 8489 §9.2.4): MESSAGE-INTEGRITY-SHA256 when
    /// the request used PASSWORD-ALGORITHM(S), MESSAGE-INTEGRITY when it was processed as MD5
    /// because it had neither — whichever attribute the request itself was signed with.
    pub integrity: Integrity,
    /// Whether the request used USERHASH instead of USERNAME.
    pub userhash: bool,
}

/// Why a request failed authentication; the service turns it into an error response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// 401: no integrity at all — a challenge, not a failure.
    Challenge,
    /// 400: integrity present but USERNAME/USERHASH, REALM or NONCE missing, or a bad
    /// PASSWORD-ALGORITHM(S).
    BadRequest(&'static str),
    /// 438: nonce expired or not ours.
    StaleNonce,
    /// 401: unknown user, wrong realm, wrong key, expired or revoked REST credential. The text
    /// says which, for the server's log; on the wire every 401 looks the same.
    Unauthorized(&'static str),
}

/// Algorithms the server offers in PASSWORD-ALGORITHMS, in order of preference.
pub const OFFERED_ALGORITHMS: [(u16, &[u8]); 2] = [
    (password_algorithm::SHA256, &[]),
    (password_algorithm::MD5, &[]),
];

/// The encoded PASSWORD-ALGORITHMS value for [`OFFERED_ALGORITHMS`] (each: alg u16, len u16 = 0).
const OFFERED_ALGORITHMS_WIRE: [u8; 8] = [0, 2, 0, 0, 0, 1, 0, 0];

impl Credentials {
    /// An empty set for `realm`.
    pub fn new(realm: &str) -> Self {
        Credentials {
            realm: realm.to_string(),
            ..Default::default()
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// True when TURN can authenticate anyone: a realm and at least one user or secret.
    pub fn is_enabled(&self) -> bool {
        !self.realm.is_empty() && (!self.users.is_empty() || !self.secrets.is_empty())
    }

    /// Adds a user from `NAME:PASSWORD`, or `NAME:0xHA1HEX` for a precomputed MD5 key.
    pub fn add_user_entry(&mut self, entry: &str) -> Result<(), CredentialError> {
        let entry: UserEntry = entry.parse()?;
        self.add_user(&entry);
        Ok(())
    }

    /// Adds a parsed user entry (its keys are derived for this set's realm).
    pub fn add_user(&mut self, entry: &UserEntry) {
        let key = match &entry.secret {
            UserSecret::Ha1(md5) => UserKey {
                md5: *md5,
                sha256: None,
            },
            UserSecret::Password(password) => UserKey {
                md5: long_term_key_md5(&entry.name, &self.realm, password),
                sha256: Some(long_term_key_sha256(&entry.name, &self.realm, password)),
            },
        };
        self.insert_user(&entry.name, key);
    }

    fn insert_user(&mut self, name: &str, key: UserKey) {
        self.by_userhash
            .insert(userhash(name, &self.realm), name.to_string());
        self.users.insert(name.to_string(), key);
    }

    /// Adds a TURN REST shared secret (the first added is tried first).
    pub fn add_secret(&mut self, secret: &str) -> Result<(), CredentialError> {
        if secret.is_empty() {
            return Err(CredentialError::EmptySecret);
        }
        self.secrets.push(secret.as_bytes().to_vec());
        Ok(())
    }

    /// Revokes REST credentials: a full username (`1700000000:alice`) or a user part (`alice`)
    /// revokes every credential naming that user, whatever its expiry.
    pub fn revoke(&mut self, who: &str) {
        self.revoked.insert(who.to_string());
    }

    /// Number of static users and REST secrets.
    pub fn counts(&self) -> (usize, usize) {
        (self.users.len(), self.secrets.len())
    }

    fn is_revoked(&self, username: &str) -> bool {
        if self.revoked.is_empty() {
            return false;
        }
        self.revoked.contains(username) || self.revoked.contains(rest_user(username))
    }

    /// Verifies a request's long-term credentials at `unix` seconds. `nonces` checks NONCE, which
    /// must have been issued to the request's 5-tuple `five`.
    pub fn verify(
        &self,
        msg: &Message<'_>,
        nonces: &NonceIssuer,
        five: &FiveTuple,
        unix: u64,
    ) -> Result<Verified, Reject> {
        let signed_sha256 = if msg.has_integrity_sha256() {
            true
        } else if msg.has_integrity() {
            false
        } else {
            return Err(Reject::Challenge);
        };
        let realm = msg.realm().ok().flatten();
        let nonce = msg.nonce().ok().flatten();
        let username = msg.username().ok().flatten();
        let hashed = msg.userhash().ok().flatten();
        let (Some(realm), Some(nonce)) = (realm, nonce) else {
            return Err(Reject::BadRequest(
                "REALM and NONCE are required with MESSAGE-INTEGRITY",
            ));
        };
        if username.is_none() && hashed.is_none() {
            return Err(Reject::BadRequest(
                "USERNAME or USERHASH is required with MESSAGE-INTEGRITY",
            ));
        }
        if !nonces.check(nonce, five, unix) {
            return Err(Reject::StaleNonce);
        }
        if realm != self.realm {
            return Err(Reject::Unauthorized("wrong realm"));
        }
        // RFC 8489 §9.2.4: the response is signed with MESSAGE-INTEGRITY-SHA256 unless the
        // request was processed as MD5 because it had neither PASSWORD-ALGORITHM nor
        // PASSWORD-ALGORITHMS; then with MESSAGE-INTEGRITY.
        let (algorithm, integrity) = match msg.password_algorithm() {
            // RFC 8489 §9.2.4: PASSWORD-ALGORITHMS without PASSWORD-ALGORITHM is a 400 too.
            Ok(None)
                if msg
                    .get(switchboard_stun::attr::PASSWORD_ALGORITHMS)
                    .is_some() =>
            {
                return Err(Reject::BadRequest(
                    "PASSWORD-ALGORITHMS without PASSWORD-ALGORITHM",
                ))
            }
            Ok(None) => (KeyAlgorithm::Md5, Integrity::Sha1),
            Ok(Some((alg, _))) => {
                // RFC 8489 §9.2.4: PASSWORD-ALGORITHMS must echo exactly what we offered.
                let echoed = msg
                    .get(switchboard_stun::attr::PASSWORD_ALGORITHMS)
                    .map(|a| a.value);
                if echoed != Some(&OFFERED_ALGORITHMS_WIRE[..]) {
                    return Err(Reject::BadRequest(
                        "PASSWORD-ALGORITHMS does not match the offer",
                    ));
                }
                match alg {
                    password_algorithm::MD5 => (KeyAlgorithm::Md5, Integrity::Sha256),
                    password_algorithm::SHA256 => (KeyAlgorithm::Sha256, Integrity::Sha256),
                    _ => return Err(Reject::BadRequest("unsupported PASSWORD-ALGORITHM")),
                }
            }
            Err(_) => return Err(Reject::BadRequest("malformed PASSWORD-ALGORITHM")),
        };
        let (name, from_hash) = match (username, hashed) {
            (Some(u), _) => (u.to_string(), false),
            (None, Some(h)) => match self.by_userhash.get(h) {
                Some(n) => (n.clone(), true),
                None => return Err(Reject::Unauthorized("unknown USERHASH")),
            },
            (None, None) => return Err(Reject::BadRequest("USERNAME or USERHASH is required")),
        };
        let check = |key: &[u8]| {
            if signed_sha256 {
                msg.verify_integrity_sha256(key).is_ok()
            } else {
                msg.verify_integrity(key).is_ok()
            }
        };

        if let Some(user) = self.users.get(&name) {
            let key: Vec<u8> = match algorithm {
                KeyAlgorithm::Md5 => user.md5.to_vec(),
                KeyAlgorithm::Sha256 => match user.sha256 {
                    Some(k) => k.to_vec(),
                    None => return Err(Reject::Unauthorized("no SHA-256 key for this user")),
                },
            };
            if !check(&key) {
                return Err(Reject::Unauthorized("wrong password"));
            }
            return Ok(Verified {
                user: name.clone(),
                username: name,
                key,
                integrity,
                userhash: from_hash,
            });
        }

        if self.secrets.is_empty() || from_hash {
            return Err(Reject::Unauthorized("unknown user"));
        }
        let Ok(expiry) = name
            .split_once(':')
            .map(|x| x.0)
            .unwrap_or(&name)
            .parse::<u64>()
        else {
            return Err(Reject::Unauthorized("unknown user (not EXPIRY[:USER])"));
        };
        let key = self.secrets.iter().find_map(|secret| {
            [
                rest_password_sha1(secret, &name),
                rest_password_sha256(secret, &name),
            ]
            .into_iter()
            .map(|password| match algorithm {
                KeyAlgorithm::Md5 => long_term_key_md5(&name, &self.realm, &password).to_vec(),
                KeyAlgorithm::Sha256 => {
                    long_term_key_sha256(&name, &self.realm, &password).to_vec()
                }
            })
            .find(|key| check(key))
        });
        let Some(key) = key else {
            return Err(Reject::Unauthorized("wrong REST password"));
        };
        // Only a correctly signed credential learns nothing more than a wrong one would: expiry
        // and revocation are checked after the MAC, and answered with the same 401.
        if expiry < unix {
            return Err(Reject::Unauthorized("expired REST credential"));
        }
        if self.is_revoked(&name) {
            return Err(Reject::Unauthorized("revoked credential"));
        }
        Ok(Verified {
            user: rest_user(&name).to_string(),
            username: name,
            key,
            integrity,
            userhash: from_hash,
        })
    }
}

/// The USER of a TURN REST username `EXPIRY:USER` (the whole name when it has no colon): what
/// revocations name and quotas count.
pub fn rest_user(username: &str) -> &str {
    username.split_once(':').map(|x| x.1).unwrap_or(username)
}

/// The TURN REST password for `username`: base64(HMAC-SHA1(secret, username)) (coturn's
/// `use-auth-secret`).
pub fn rest_password_sha1(secret: &[u8], username: &str) -> String {
    let mut mac =
        <Hmac<Sha1> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The SHA-256 variant: base64(HMAC-SHA256(secret, username)).
pub fn rest_password_sha256(secret: &[u8], username: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn unreachable_hmac<T>() -> T {
    // HMAC accepts keys of any length; new_from_slice cannot fail.
    unreachable!("HMAC accepts any key length")
}

fn parse_hex16(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Issues and checks stateless nonces: the nonce cookie ([`NONCE_COOKIE`]) then base64 of
/// expiry (u32, Unix seconds) ‖ HMAC-SHA256(secret, expiry ‖ 5-tuple)[..8], 29 characters in
/// all. The 5-tuple is the client's address and port, the server address it reached and the
/// transport, so no two clients share a nonce (RFC 8489 §9.2.4: the server "MUST NOT choose the
/// same NONCE for two requests unless they have the same source IP address and port") and a
/// nonce is only accepted from the 5-tuple it was issued to. Nothing is stored per client, so a
/// flood of unauthenticated requests costs no memory.
#[derive(Clone)]
pub struct NonceIssuer {
    secret: [u8; 32],
    lifetime: u64,
}

impl std::fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceIssuer")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// STUN Security Feature "Password algorithms" (RFC 8489 §18.1): bit 0.
pub const FEATURE_PASSWORD_ALGORITHMS: u32 = 0;

/// The three bytes of a STUN Security Feature set with the given bit numbers set. RFC 8489 §9.2:
/// "The 24-bit Security Feature set is encoded as 3 bytes, with bit 0 as the most significant
/// bit of the first byte and bit 23 as the least significant bit of the third byte" (so also
/// §18.1: "Bit 0 is the leftmost bit").
pub const fn security_features(bits: &[u32]) -> [u8; 3] {
    let mut set = 0u32;
    let mut i = 0;
    while i < bits.len() {
        set |= 1 << (23 - bits[i]);
        i += 1;
    }
    [(set >> 16) as u8, (set >> 8) as u8, set as u8]
}

/// The RFC 8489 §9.2 nonce cookie every NONCE starts with: "obMatJos2" and the base64 of the
/// security features, here only "Password algorithms" (bit 0, [`security_features`]:
/// 0x80 0x00 0x00 = "gAAA"; a unit test recomputes it). Username anonymity is not advertised:
/// USERHASH is accepted for static users but cannot work for TURN REST names, which are not
/// known in advance.
pub const NONCE_COOKIE: &str = "obMatJos2gAAA";

/// Bytes after the cookie, before base64: expiry (4) and tag (8).
const NONCE_BODY: usize = 12;

impl NonceIssuer {
    /// A nonce issuer with a random `secret` and nonces valid for `lifetime` seconds.
    pub fn new(secret: [u8; 32], lifetime: u64) -> Self {
        NonceIssuer {
            secret,
            lifetime: lifetime.max(1),
        }
    }

    fn tag(&self, expiry: u32, five: &FiveTuple) -> [u8; 8] {
        fn addr(mac: &mut Hmac<Sha256>, a: std::net::SocketAddr) {
            match a.ip() {
                IpAddr::V4(v4) => {
                    mac.update(&[4]);
                    mac.update(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    mac.update(&[6]);
                    mac.update(&v6.octets());
                }
            }
            mac.update(&a.port().to_be_bytes());
        }
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable_hmac());
        mac.update(b"nonce");
        mac.update(&expiry.to_be_bytes());
        addr(&mut mac, five.client);
        addr(&mut mac, five.server);
        mac.update(&[match five.transport {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
        }]);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&full[..8]);
        tag
    }

    /// A fresh nonce for the client of `five` at `unix` seconds.
    pub fn issue(&self, five: &FiveTuple, unix: u64) -> String {
        let expiry = u32::try_from(unix.saturating_add(self.lifetime)).unwrap_or(u32::MAX);
        let mut body = [0u8; NONCE_BODY];
        body[..4].copy_from_slice(&expiry.to_be_bytes());
        body[4..].copy_from_slice(&self.tag(expiry, five));
        let mut s = String::with_capacity(NONCE_COOKIE.len() + 16);
        s.push_str(NONCE_COOKIE);
        base64::engine::general_purpose::STANDARD.encode_string(body, &mut s);
        s
    }

    /// Whether `nonce` is one of ours, issued to this 5-tuple, and not expired.
    pub fn check(&self, nonce: &str, five: &FiveTuple, unix: u64) -> bool {
        let Some(rest) = nonce.strip_prefix(NONCE_COOKIE) else {
            return false;
        };
        let mut body = [0u8; NONCE_BODY];
        match base64::engine::general_purpose::STANDARD.decode_slice(rest, &mut body) {
            Ok(NONCE_BODY) => {}
            _ => return false,
        }
        let mut expiry = [0u8; 4];
        expiry.copy_from_slice(&body[..4]);
        let expiry = u32::from_be_bytes(expiry);
        let want = self.tag(expiry, five);
        // Constant time: both are 8-byte MACs.
        let same = want
            .iter()
            .zip(&body[4..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        same && unix <= u64::from(expiry)
    }
}

/// The wire value of PASSWORD-ALGORITHMS the server offers.
pub fn offered_algorithms() -> &'static [(u16, &'static [u8])] {
    &OFFERED_ALGORITHMS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_cookie_is_the_password_algorithms_feature() {
        let mut want = String::from("obMatJos2");
        base64::engine::general_purpose::STANDARD
            .encode_string(security_features(&[FEATURE_PASSWORD_ALGORITHMS]), &mut want);
        assert_eq!(NONCE_COOKIE, want);
        assert_eq!(security_features(&[0]), [0x80, 0, 0]);
        assert_eq!(security_features(&[23]), [0, 0, 1]);
    }
}
