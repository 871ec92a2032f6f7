//! Quota tokens (EdDSA, issued by a Prex exchange) and session tokens (HS256, issued by
//! pkv): their claims, how they are minted, and the checks a token must pass.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// `usage` of a quota token: create a session.
pub const USAGE_CREATE_SESSION: i64 = 1;
/// `usage` of a session token: manage a session.
pub const USAGE_MANAGE_SESSION: i64 = 2;

/// The audience claim: a string or an array of strings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, id: &str) -> bool {
        match self {
            Audience::One(a) => a == id,
            Audience::Many(list) => list.iter().any(|a| a == id),
        }
    }
}

/// Claims of either kind of token. Fields are optional so that a missing claim is reported
/// as what it is rather than as a parse failure.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Claims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<i64>,
}

/// Why a token is refused. The text follows `-WRONGPASS ` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("bad algorithm: {0}")]
    BadAlgorithm(&'static str),
    #[error("unknown issuer")]
    UnknownIssuer,
    #[error("bad signature")]
    BadSignature,
    #[error("wrong audience")]
    WrongAudience,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong usage: {0}")]
    WrongUsage(&'static str),
    #[error("bad quantity: must be a whole number above 0")]
    BadQuantity,
    #[error("bad quantity: too large to count")]
    QuantityTooLarge,
    #[error("missing jti")]
    MissingJti,
    #[error("token too long")]
    TooLong,
    #[error("malformed token: critical header parameters (crit) are not supported")]
    CriticalHeader,
}

/// Header and claims read without checking anything, to decide how to check the token.
pub fn peek(token: &str) -> Result<(Header, Claims), TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not a JWS compact token"));
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64
        .decode(header)
        .map_err(|_| TokenError::Malformed("header is not base64url"))?;
    let payload = b64
        .decode(payload)
        .map_err(|_| TokenError::Malformed("payload is not base64url"))?;
    // An unknown `alg` (such as "none") does not parse as a jsonwebtoken Header.
    let raw: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| TokenError::Malformed("header is not JSON"))?;
    // jsonwebtoken reads `crit` but acts on none of it; pkv understands no extension, so a
    // token that names one the receiver must understand is refused (RFC 7515, 4.1.11).
    if raw.get("crit").is_some() {
        return Err(TokenError::CriticalHeader);
    }
    let header: Header = serde_json::from_value(raw).map_err(|_| {
        TokenError::BadAlgorithm("only EdDSA quota tokens and pkv session tokens are accepted")
    })?;
    let claims = serde_json::from_slice(&payload)
        .map_err(|_| TokenError::Malformed("claims are not JSON"))?;
    Ok((header, claims))
}

/// Checks the signature with exactly one algorithm and key. Time and audience are checked
/// by [`check_window`] and the callers, so that cached tokens get the same checks.
pub fn verify_signature(
    token: &str,
    alg: Algorithm,
    key: &DecodingKey,
) -> Result<Claims, TokenError> {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    match jsonwebtoken::decode::<Claims>(token, key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
            | jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => {
                TokenError::BadAlgorithm("unexpected algorithm")
            }
            _ => TokenError::Malformed("could not be decoded"),
        }),
    }
}

/// `nbf <= now < exp`, each widened by `leeway` seconds. `exp` is required.
pub fn check_window(claims: &Claims, now: i64, leeway: i64) -> Result<(), TokenError> {
    let exp = claims.exp.ok_or(TokenError::Malformed("missing exp"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = claims.nbf {
        if nbf > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
    }
    Ok(())
}

/// What `pkv token mint` puts in a quota token.
#[derive(Debug, Clone)]
pub struct MintRequest {
    pub audience: String,
    pub quantity: i64,
    pub lifetime_secs: i64,
    pub sub: Option<String>,
}

/// Signs a Prex-format quota token with an issuer key.
pub fn mint_quota(issuer: &super::keys::IssuerKey, req: &MintRequest, now: i64) -> String {
    let claims = Claims {
        iss: Some(issuer.did()),
        aud: Some(Audience::One(req.audience.clone())),
        sub: req.sub.clone(),
        exp: Some(now + req.lifetime_secs),
        nbf: Some(now),
        iat: Some(now),
        jti: Some(uuid::Uuid::new_v4().to_string()),
        quantity: Some(req.quantity),
        usage: Some(USAGE_CREATE_SESSION),
    };
    sign(&claims, Algorithm::EdDSA, &issuer.encoding_key())
}

/// Signs claims with a header of `alg`; used for both kinds of token.
pub fn sign(claims: &Claims, alg: Algorithm, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(&header, claims, key)
        .expect("claims serialize and the key matches its algorithm")
}

/// Signs a session token for `account`, valid for `lifetime_secs`.
pub fn mint_session(
    session_key: &[u8; 32],
    service_id: &str,
    account: &str,
    lifetime_secs: i64,
    now: i64,
) -> String {
    let claims = Claims {
        iss: Some(service_id.to_owned()),
        aud: Some(Audience::One(service_id.to_owned())),
        sub: Some(account.to_owned()),
        exp: Some(now + lifetime_secs),
        nbf: Some(now),
        iat: Some(now),
        jti: Some(uuid::Uuid::new_v4().to_string()),
        quantity: None,
        usage: Some(USAGE_MANAGE_SESSION),
    };
    sign(
        &claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(session_key),
    )
}
