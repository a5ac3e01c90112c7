//! `switchboard token` (a hub connection JWT) and `switchboard turn-credential` (a TURN REST
//! credential): what an application backend mints for its clients, from the same keys the
//! server is configured with (`--config`, `SWITCHBOARD_*`, or flags given here).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use switchboard_server::config::Settings;

/// `switchboard token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The user id (`sub` claim); empty for an anonymous token.
    #[arg(long, value_name = "ID")]
    user: String,
    /// Channels the token may use (`channels` claim): names or `prefix*` patterns, comma
    /// separated or repeated. Without it the namespace options decide.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    channels: Vec<String>,
    /// Signaling rooms the token may join (added to the `channels` claim: joining room `R`
    /// needs permission on channel `R`).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    rooms: Vec<String>,
    /// Lifetime (`exp` = now + this): seconds, or with a unit (`90s`, `15m`, `12h`, `7d`);
    /// `0` or `never` for a token without `exp`.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    expires: String,
    /// `info` claim: JSON delivered to other clients as the connection's info.
    #[arg(long, value_name = "JSON")]
    info: Option<String>,
    /// Sign with this HS256 secret instead of the configured `[hub.jwt] hmac_secret`.
    #[arg(long, value_name = "SECRET")]
    jwt_hmac_secret: Option<String>,
    /// Sign RS256 with this RSA private key (PEM file).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["jwt_hmac_secret", "ecdsa_private_key"])]
    rsa_private_key: Option<PathBuf>,
    /// Sign ES256 with this P-256 private key (PEM file).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["jwt_hmac_secret", "rsa_private_key"])]
    ecdsa_private_key: Option<PathBuf>,
    /// Key id (`kid` header), to pick a key of a JWKS.
    #[arg(long, value_name = "KID")]
    kid: Option<String>,
    /// `aud` claim (default: the configured `[hub.jwt] audience`).
    #[arg(long, value_name = "AUD")]
    audience: Option<String>,
    /// `iss` claim (default: the configured `[hub.jwt] issuer`).
    #[arg(long, value_name = "ISS")]
    issuer: Option<String>,
    /// The server's configuration file, read for the keys and claims above.
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
}

/// `switchboard turn-credential`.
#[derive(Args, Debug)]
pub struct TurnCredentialArgs {
    /// The user the credential is for (the part after `EXPIRY:` in the username).
    #[arg(long, value_name = "NAME")]
    user: String,
    /// Lifetime: seconds, or with a unit (`90s`, `15m`, `12h`, `7d`) [default: the configured
    /// `[turn] credential_ttl`, 24 h].
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// The TURN REST shared secret [default: the first configured `[turn] secrets`].
    #[arg(long, value_name = "SECRET")]
    turn_secret: Option<String>,
    /// HMAC-SHA256 instead of coturn's HMAC-SHA1 (both are accepted by switchboard).
    #[arg(long)]
    sha256: bool,
    /// Print `{"username":…,"password":…,"ttl":…}` instead of two lines.
    #[arg(long)]
    json: bool,
    /// The server's configuration file, read for the secret and lifetime.
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
}

/// The configured settings, layered as for `serve`: defaults < `config` (else the system file
/// when it exists) < `SWITCHBOARD_*` variables; the flags of these commands come on top.
fn settings(config: Option<&PathBuf>) -> anyhow::Result<Settings> {
    let system = PathBuf::from(crate::SYSTEM_CONFIG);
    let mut settings = match config {
        Some(path) => Settings::from_file(path)?,
        None if system.is_file() => Settings::from_file(&system)?,
        None => Settings::default(),
    };
    // Variables that are not settings were warned about by `serve`; not repeated here.
    let _unknown = settings.apply_env(std::env::vars())?;
    Ok(settings)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `90`, `90s`, `15m`, `12h`, `7d`.
fn parse_duration(value: &str) -> anyhow::Result<Duration> {
    let v = value.trim();
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| anyhow::anyhow!("expected a number with an optional unit s, m, h or d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("unknown unit {unit:?} (s, m, h or d)"),
    };
    n.checked_mul(scale)
        .filter(|s| *s <= 10 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| anyhow::anyhow!("longer than ten years"))
}

/// A lifetime flag: `never`/`0` is none.
fn lifetime(flag: &str, value: &str) -> anyhow::Result<Option<Duration>> {
    if value == "never" {
        return Ok(None);
    }
    let d = parse_duration(value).with_context(|| format!("bad value for {flag} {value:?}"))?;
    Ok((!d.is_zero()).then_some(d))
}

/// Mints the token and prints it on one line.
pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let settings = settings(args.config.as_ref())?;
    let jwt = &settings.hub.jwt;
    let (alg, key) = if let Some(path) = &args.rsa_private_key {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let key = EncodingKey::from_rsa_pem(&pem)
            .with_context(|| format!("{}: not an RSA private key (PEM)", path.display()))?;
        (Algorithm::RS256, key)
    } else if let Some(path) = &args.ecdsa_private_key {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let key = EncodingKey::from_ec_pem(&pem).with_context(|| {
            format!("{}: not a P-256 private key (PEM, PKCS#8)", path.display())
        })?;
        (Algorithm::ES256, key)
    } else {
        match args.jwt_hmac_secret.as_ref().or(jwt.hmac_secret.as_ref()) {
            Some(secret) if !secret.is_empty() => (
                Algorithm::HS256,
                EncodingKey::from_secret(secret.as_bytes()),
            ),
            _ => bail!(
                "no signing key: give --jwt-hmac-secret (or [hub.jwt] hmac_secret in --config), \
                 --rsa-private-key or --ecdsa-private-key"
            ),
        }
    };
    let mut channels = args.channels.clone();
    channels.extend(args.rooms.iter().cloned());
    channels.retain(|c| !c.trim().is_empty());
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), args.user.clone().into());
    let iat = now();
    claims.insert("iat".into(), iat.into());
    if let Some(d) = lifetime("--expires", &args.expires)? {
        claims.insert("exp".into(), (iat + d.as_secs()).into());
    }
    if !channels.is_empty() {
        claims.insert("channels".into(), channels.into());
    }
    if let Some(info) = &args.info {
        let value: serde_json::Value =
            serde_json::from_str(info).context("bad value for --info: not JSON")?;
        claims.insert("info".into(), value);
    }
    if let Some(aud) = args.audience.as_ref().or(jwt.audience.as_ref()) {
        claims.insert("aud".into(), aud.clone().into());
    }
    if let Some(iss) = args.issuer.as_ref().or(jwt.issuer.as_ref()) {
        claims.insert("iss".into(), iss.clone().into());
    }
    let mut header = Header::new(alg);
    header.kid = args.kid.clone();
    let token = jsonwebtoken::encode(&header, &claims, &key).context("signing the token")?;
    println!("{token}");
    Ok(())
}

/// Mints a TURN REST credential (coturn's `use-auth-secret` scheme: username `EXPIRY:USER`,
/// password base64(HMAC(secret, username))).
pub fn turn_credential(args: TurnCredentialArgs) -> anyhow::Result<()> {
    use switchboard_turn::auth::{rest_password_sha1, rest_password_sha256};
    if args.user.is_empty() || args.user.contains(':') {
        bail!(
            "bad value for --user {:?}: a non-empty name without ':'",
            args.user
        );
    }
    let settings = settings(args.config.as_ref())?;
    let secret = match args.turn_secret.as_ref().or(settings.turn.secrets.first()) {
        Some(s) if !s.is_empty() => s.clone(),
        _ => bail!("no TURN secret: give --turn-secret (or [turn] secrets in --config)"),
    };
    let ttl = match &args.ttl {
        Some(v) => lifetime("--ttl", v)?
            .with_context(|| format!("bad value for --ttl {v:?}: a credential must expire"))?,
        None => settings.turn.credential_ttl,
    };
    let username = format!("{}:{}", now() + ttl.as_secs(), args.user);
    let password = if args.sha256 {
        rest_password_sha256(secret.as_bytes(), &username)
    } else {
        rest_password_sha1(secret.as_bytes(), &username)
    };
    if args.json {
        let v = serde_json::json!({
            "username": username,
            "password": password,
            "ttl": ttl.as_secs(),
        });
        println!("{v}");
    } else {
        println!("username {username}");
        println!("password {password}");
    }
    Ok(())
}
