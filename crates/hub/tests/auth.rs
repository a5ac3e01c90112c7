//! Connection tokens: HS256, RS256, ES256 (PEM and JWKS) accepted; expired, badly signed,
//! wrong-algorithm and malformed tokens refused with the right code; channel permissions from
//! the `channels` claim; anonymous access on and off.

mod common;

use std::time::Duration;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use switchboard_hub::{codes, proto, AuthFailure, HubConfig, HubError};

const RSA_PRIVATE: &str = include_str!("keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("keys/rsa_public.pem");
const RSA_OTHER_PRIVATE: &str = include_str!("keys/rsa_other_private.pem");
const EC_PRIVATE: &str = include_str!("keys/ec_private.pem");
const EC_PUBLIC: &str = include_str!("keys/ec_public.pem");
const JWKS: &str = include_str!("keys/jwks.json");

fn claims(user: &str) -> serde_json::Value {
    serde_json::json!({ "sub": user, "exp": T0 / 1000 + 60 })
}

fn rs256(claims: &serde_json::Value, pem: &str, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn es256(claims: &serde_json::Value, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn all_keys() -> HubConfig {
    let mut c = config();
    c.jwt.rsa_public_key_pem = Some(RSA_PUBLIC.into());
    c.jwt.ecdsa_public_key_pem = Some(EC_PUBLIC.into());
    c
}

fn connect(t: &TestHub, token: String) -> Result<switchboard_hub::Session, HubError> {
    t.hub.connect(
        &proto::ConnectRequest {
            token,
            name: "js".into(),
            version: "1.0".into(),
        },
        "test",
    )
}

#[tokio::test]
async fn hs256_rs256_es256_tokens_are_accepted() {
    let t = hub_with(all_keys());
    for token in [
        hs256(claims("ann")),
        rs256(&claims("ann"), RSA_PRIVATE, None),
        es256(&claims("ann"), None),
    ] {
        let s = connect(&t, token).unwrap();
        assert_eq!(s.user(), "ann");
        let r = s.connect_result();
        assert!(r.expires && r.ttl == 60 && r.client_id == s.client_id());
        assert_eq!(s.client_name_version(), ("js", "1.0"));
    }
    // No exp: never expires.
    let s = connect(&t, hs256(serde_json::json!({"sub": "ann"}))).unwrap();
    assert!(!s.connect_result().expires);
}

#[tokio::test]
async fn key_files_and_jwks_are_loaded() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
    let mut c = config();
    c.jwt.hmac_secret = None;
    c.jwt.rsa_public_key_file = Some(format!("{dir}/rsa_public.pem").into());
    c.jwt.ecdsa_public_key_file = Some(format!("{dir}/ec_public.pem").into());
    let t = hub_with(c);
    assert!(connect(&t, rs256(&claims("ann"), RSA_PRIVATE, None)).is_ok());
    assert!(connect(&t, es256(&claims("ann"), None)).is_ok());
    let e = connect(&t, hs256(claims("ann"))).unwrap_err();
    assert!(
        matches!(e, HubError::Unauthorized(AuthFailure::UnsupportedAlgorithm)),
        "{e:?}"
    );

    let mut c = config();
    c.jwt.hmac_secret = None;
    c.jwt.jwks_file = Some(format!("{dir}/jwks.json").into());
    let t = hub_with(c);
    assert!(connect(&t, rs256(&claims("ann"), RSA_PRIVATE, Some("rsa-1"))).is_ok());
    assert!(connect(&t, rs256(&claims("ann"), RSA_PRIVATE, None)).is_ok());
    assert!(connect(&t, es256(&claims("ann"), Some("ec-1"))).is_ok());
    let e = connect(&t, rs256(&claims("ann"), RSA_PRIVATE, Some("nope"))).unwrap_err();
    assert!(
        matches!(e, HubError::Unauthorized(AuthFailure::UnknownKey)),
        "{e:?}"
    );
    let e = connect(&t, rs256(&claims("ann"), RSA_OTHER_PRIVATE, Some("rsa-1"))).unwrap_err();
    assert!(
        matches!(e, HubError::Unauthorized(AuthFailure::BadSignature)),
        "{e:?}"
    );

    let mut c = config();
    c.jwt.jwks_json = Some(JWKS.into());
    assert!(switchboard_hub::Hub::with_memory_broker(c).is_ok());
    let mut c = config();
    c.jwt.jwks_json = Some(r#"{"keys":[]}"#.into());
    assert!(switchboard_hub::Hub::with_memory_broker(c).is_err());
    let mut c = config();
    c.jwt.rsa_public_key_file = Some("/nonexistent.pem".into());
    assert!(switchboard_hub::Hub::with_memory_broker(c).is_err());
    let mut c = config();
    c.jwt.rsa_public_key_pem = Some("not a pem".into());
    assert!(switchboard_hub::Hub::with_memory_broker(c).is_err());
}

#[tokio::test]
async fn bad_tokens_are_refused_with_their_code() {
    let t = hub_with(all_keys());
    let expired = hs256(serde_json::json!({"sub": "ann", "exp": T0 / 1000 - 1}));
    let e = connect(&t, expired).unwrap_err();
    assert!(matches!(e, HubError::TokenExpired));
    assert_eq!(e.code(), codes::error::TOKEN_EXPIRED);
    assert!(
        e.connect_disconnect().is_none(),
        "109: refresh and retry, no disconnect"
    );

    // Becomes expired on fake time.
    let token = hs256(claims("ann"));
    assert!(connect(&t, token.clone()).is_ok());
    t.advance(Duration::from_secs(61));
    assert_eq!(
        connect(&t, token).unwrap_err().code(),
        codes::error::TOKEN_EXPIRED
    );

    let other = encode(
        &Header::new(Algorithm::HS256),
        &claims("ann"),
        &EncodingKey::from_secret(b"other"),
    )
    .unwrap();
    let e = connect(&t, other).unwrap_err();
    assert!(
        matches!(e, HubError::Unauthorized(AuthFailure::BadSignature)),
        "{e:?}"
    );
    assert_eq!(e.code(), codes::error::UNAUTHORIZED);
    let d = e.connect_disconnect().unwrap();
    assert_eq!(
        (d.code, d.reconnect),
        (codes::disconnect::INVALID_TOKEN, false)
    );

    let claims_now = serde_json::json!({"sub": "ann", "exp": T0 / 1000 + 600});
    let e = connect(&t, rs256(&claims_now, RSA_OTHER_PRIVATE, None)).unwrap_err();
    assert!(
        matches!(e, HubError::Unauthorized(AuthFailure::BadSignature)),
        "{e:?}"
    );

    // Wrong algorithm: HS384 has no key; alg confusion (HS256 signed with the RSA public key
    // as secret) must not verify.
    let hs384 = encode(
        &Header::new(Algorithm::HS384),
        &claims_now,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let e = connect(&t, hs384).unwrap_err();
    assert!(
        matches!(e, HubError::Unauthorized(AuthFailure::UnsupportedAlgorithm)),
        "{e:?}"
    );
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims_now,
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        connect(&t, confused).unwrap_err().code(),
        codes::error::UNAUTHORIZED
    );
    // ES256 token while only HMAC is configured.
    let hmac_only = hub();
    let e = connect(&hmac_only, es256(&claims_now, None)).unwrap_err();
    assert!(
        matches!(e, HubError::Unauthorized(AuthFailure::UnsupportedAlgorithm)),
        "{e:?}"
    );

    // Garbage and alg=none.
    for junk in ["", "x", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbm4ifQ."] {
        if junk.is_empty() {
            continue; // empty = anonymous, tested below
        }
        let e = connect(&t, junk.to_owned()).unwrap_err();
        assert_eq!(e.code(), codes::error::UNAUTHORIZED, "{junk}");
    }
    // Bad claim types.
    let e = connect(&t, hs256(serde_json::json!({"sub": 5}))).unwrap_err();
    assert!(
        matches!(e, HubError::Unauthorized(AuthFailure::InvalidClaims)),
        "{e:?}"
    );
    let e = connect(
        &t,
        hs256(serde_json::json!({"sub": "a", "channels": ["bad channel"]})),
    )
    .unwrap_err();
    assert!(
        matches!(e, HubError::Unauthorized(AuthFailure::InvalidClaims)),
        "{e:?}"
    );
}

#[tokio::test]
async fn audience_and_issuer_are_checked_when_configured() {
    let mut c = config();
    c.jwt.audience = Some("switchboard".into());
    c.jwt.issuer = Some("https://auth.example".into());
    let t = hub_with(c);
    let good = hs256(
        serde_json::json!({"sub": "ann", "aud": "switchboard", "iss": "https://auth.example"}),
    );
    assert!(connect(&t, good).is_ok());
    for bad in [
        serde_json::json!({"sub": "ann", "aud": "other", "iss": "https://auth.example"}),
        serde_json::json!({"sub": "ann", "aud": "switchboard", "iss": "https://evil"}),
        serde_json::json!({"sub": "ann"}),
    ] {
        let e = connect(&t, hs256(bad)).unwrap_err();
        assert!(
            matches!(e, HubError::Unauthorized(AuthFailure::InvalidClaims)),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn channels_claim_restricts_and_grants_subscriptions() {
    let mut c = config();
    c.namespaces
        .get_mut("chat")
        .unwrap()
        .allow_subscribe_for_client = false;
    let t = hub_with(c);
    let token = hs256(serde_json::json!({"sub": "ann", "channels": ["chat:*", "news"]}));
    let s = connect(&t, token).unwrap();
    // Granted by the claim although the namespace does not allow clients.
    s.subscribe("chat:room", None).await.unwrap();
    s.subscribe("news", None).await.unwrap();
    // Restricted by the claim although the namespace allows clients.
    let e = s.subscribe("plain:x", None).await.unwrap_err();
    assert_eq!(e.code(), codes::error::PERMISSION_DENIED);
    assert_eq!(
        s.subscribe("newsroom", None).await.unwrap_err().code(),
        codes::error::PERMISSION_DENIED
    );
    assert_eq!(
        s.publish("plain:x", b"1".to_vec(), "")
            .await
            .unwrap_err()
            .code(),
        codes::error::PERMISSION_DENIED
    );
    // Without a claim the namespace decides.
    let bob = t.connect("bob");
    assert_eq!(
        bob.subscribe("chat:room", None).await.unwrap_err().code(),
        codes::error::PERMISSION_DENIED
    );
    bob.subscribe("plain:x", None).await.unwrap();
}

#[tokio::test]
async fn anonymous_access_only_when_allowed() {
    let t = hub();
    let e = connect(&t, String::new()).unwrap_err();
    assert!(matches!(
        e,
        HubError::Unauthorized(AuthFailure::AnonymousNotAllowed)
    ));
    let e = connect(&t, hs256(serde_json::json!({"sub": ""}))).unwrap_err();
    assert!(matches!(
        e,
        HubError::Unauthorized(AuthFailure::AnonymousNotAllowed)
    ));

    let mut c = config();
    c.allow_anonymous = true;
    c.namespaces
        .get_mut("plain")
        .unwrap()
        .allow_subscribe_for_anonymous = true;
    let t = hub_with(c);
    let anon = connect(&t, String::new()).unwrap();
    assert_eq!(anon.user(), "");
    // The namespace decides what anonymous connections may do.
    anon.subscribe("plain:x", None).await.unwrap();
    assert_eq!(
        anon.subscribe("chat:x", None).await.unwrap_err().code(),
        codes::error::PERMISSION_DENIED
    );
    assert_eq!(
        anon.publish("plain:x", b"1".to_vec(), "")
            .await
            .unwrap_err()
            .code(),
        codes::error::PERMISSION_DENIED
    );
    let anon2 = connect(&t, hs256(serde_json::json!({"sub": ""}))).unwrap();
    assert_eq!(anon2.user(), "");
}

#[tokio::test]
async fn not_before_is_checked_on_hub_time_with_the_exp_leeway() {
    let now = T0 / 1000;
    let t = hub();
    let early = hs256(serde_json::json!({"sub": "ann", "nbf": now + 30, "exp": now + 600}));
    let e = connect(&t, early.clone()).unwrap_err();
    assert!(
        matches!(e, HubError::Unauthorized(AuthFailure::NotYetValid)),
        "{e:?}"
    );
    assert_eq!(e.code(), codes::error::UNAUTHORIZED);
    assert_eq!(
        e.connect_disconnect().map(|d| d.code),
        Some(codes::disconnect::INVALID_TOKEN)
    );
    t.advance(Duration::from_secs(29));
    assert!(connect(&t, early.clone()).is_err(), "one second early");
    t.advance(Duration::from_secs(1));
    assert!(connect(&t, early).is_ok(), "valid from nbf on");
    // Fractional NumericDate, and a non-number.
    let t = hub();
    let fractional = hs256(serde_json::json!({"sub": "ann", "nbf": (now + 5) as f64 + 0.5}));
    assert!(connect(&t, fractional).is_err());
    let e = connect(&t, hs256(serde_json::json!({"sub": "ann", "nbf": "soon"}))).unwrap_err();
    assert!(
        matches!(e, HubError::Unauthorized(AuthFailure::InvalidClaims)),
        "{e:?}"
    );

    // The leeway that applies to `exp` applies to `nbf`.
    let mut c = config();
    c.jwt.leeway_secs = 10;
    let t = hub_with(c);
    let within = hs256(serde_json::json!({"sub": "ann", "nbf": now + 10}));
    assert!(connect(&t, within).is_ok());
    let beyond = hs256(serde_json::json!({"sub": "ann", "nbf": now + 11}));
    assert!(matches!(
        connect(&t, beyond).unwrap_err(),
        HubError::Unauthorized(AuthFailure::NotYetValid)
    ));
}

/// Signs `header_json` + `claims` with the test HMAC secret, bypassing jsonwebtoken's `Header`
/// (so any header can be forged).
fn forge_hs256(header_json: &str, claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!(
        "{}.{}",
        b64.encode(header_json),
        b64.encode(claims.to_string())
    );
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{signing_input}.{signature}")
}

#[tokio::test]
async fn critical_header_extensions_are_refused() {
    let t = hub();
    let good = claims("ann");
    // Correctly signed: only the header differs.
    assert!(connect(&t, forge_hs256(r#"{"alg":"HS256","typ":"JWT"}"#, &good)).is_ok());
    for header in [
        // RFC 7797 unencoded payload: not understood here.
        r#"{"alg":"HS256","b64":false,"crit":["b64"]}"#,
        r#"{"alg":"HS256","crit":["exp"],"exp":1}"#,
        r#"{"alg":"HS256","crit":["urn:example:must-understand"]}"#,
        // Invalid per RFC 7515 (empty list), refused as well.
        r#"{"alg":"HS256","crit":[]}"#,
    ] {
        let e = connect(&t, forge_hs256(header, &good)).unwrap_err();
        assert!(
            matches!(e, HubError::Unauthorized(AuthFailure::CriticalHeader)),
            "{header}: {e:?}"
        );
        assert_eq!(e.code(), codes::error::UNAUTHORIZED);
    }
    // `crit` of the wrong type: the header does not parse.
    let e = connect(&t, forge_hs256(r#"{"alg":"HS256","crit":"b64"}"#, &good)).unwrap_err();
    assert!(
        matches!(e, HubError::Unauthorized(AuthFailure::Malformed)),
        "{e:?}"
    );
    // Through jsonwebtoken's own header type too.
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["b64".into()]);
    let token = encode(&header, &good, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
    assert!(connect(&t, token).is_err());
}

#[tokio::test]
async fn the_wire_does_not_say_why_a_token_failed() {
    let t = hub_with(config());
    let forged = rs256(&claims("ann"), RSA_OTHER_PRIVATE, None);
    let bad_signature = format!("{}x", token_for("ann"));
    let not_yet =
        hs256(serde_json::json!({ "sub": "ann", "exp": T0 / 1000 + 600, "nbf": T0 / 1000 + 300 }));
    for token in ["not a jwt".to_owned(), bad_signature, forged, not_yet] {
        let e = t
            .hub
            .connect(
                &proto::ConnectRequest {
                    token: token.clone(),
                    ..Default::default()
                },
                "websocket",
            )
            .unwrap_err();
        assert!(matches!(e, HubError::Unauthorized(_)), "{token}: {e:?}");
        let wire = e.to_proto();
        assert_eq!(wire.code, codes::error::UNAUTHORIZED);
        assert_eq!(wire.message, "unauthorized: invalid token", "{token}");
    }
}
