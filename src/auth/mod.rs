//! Who a client is: quota tokens from trusted Prex exchanges, session tokens from pkv.
//!
//! [`Authenticator::verify`] turns a token into a [`Verified`] identity or a refusal. A token
//! that passed every check once is remembered (by its whole text), so a pool of connections
//! sending the same `AUTH` costs one signature check; the time window is re-checked on every
//! use, so the cache never makes a check weaker.

pub mod did;
pub mod keys;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::Sha256;

pub use token::TokenError;
use token::{Claims, USAGE_CREATE_SESSION, USAGE_MANAGE_SESSION};

/// Remembered verifications; past this many the cache starts afresh.
const CACHE_CAPACITY: usize = 10_000;
/// Longest account id accepted from a token's `sub`.
const MAX_ACCOUNT_LEN: usize = 256;
/// Longest token pkv decodes. Real tokens are well under 1 KiB; anything longer is refused
/// before it is hashed, base64-decoded or parsed, so a forged multi-megabyte token costs
/// no more than a short one.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The token a client sent, as text, once it is known to be short enough to decode.
pub fn token_text(raw: &[u8]) -> Result<&str, TokenError> {
    if raw.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    std::str::from_utf8(raw).map_err(|_| TokenError::Malformed("not text"))
}

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The account the token belongs to.
    pub account: Arc<str>,
    /// When the token stops being valid (seconds since the epoch, leeway included).
    pub valid_until: i64,
    pub kind: TokenKind,
    claims: Claims,
}

/// Which kind of token was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// A Prex quota token: redeemable once per `jti`.
    Quota {
        jti: String,
        quantity: i64,
        exp: i64,
    },
    /// A pkv session token: resumes an account, credits nothing.
    Session,
}

/// Verifies tokens against the configured issuers and pkv's own session key.
pub struct Authenticator {
    service_id: String,
    leeway: i64,
    issuers: HashMap<String, DecodingKey>,
    session_key: [u8; 32],
    session_decoding: DecodingKey,
    account_key: [u8; 32],
    cache: DashMap<Box<str>, Verified>,
}

/// What the authenticator is made from: the settings that concern tokens
/// ([`crate::config::Settings::auth`] gives them).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// This service's id: quota tokens must name it as their audience.
    pub service_id: String,
    /// The exchanges whose quota tokens are accepted, as `did:key`s.
    pub quota_issuers: Vec<String>,
    /// The seed session tokens and account ids are derived from.
    pub secret_seed: [u8; 32],
    /// Development mode: the issuer derived from the seed is trusted too.
    pub dev_mode: bool,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub token_leeway: u64,
}

impl Authenticator {
    pub fn new(settings: &AuthConfig) -> Self {
        let mut issuers = HashMap::new();
        for did in &settings.quota_issuers {
            if let Ok(public) = did::public_key_from_did(did) {
                issuers.insert(did.clone(), keys::decoding_key(&public));
            }
        }
        if settings.dev_mode {
            let dev = keys::IssuerKey::from_seed(&keys::dev_issuer_seed(&settings.secret_seed));
            issuers.insert(dev.did(), keys::decoding_key(&dev.public_key()));
        }
        let session_key = keys::session_key(&settings.secret_seed);
        Authenticator {
            service_id: settings.service_id.clone(),
            leeway: settings.token_leeway as i64,
            issuers,
            session_decoding: DecodingKey::from_secret(&session_key),
            session_key,
            account_key: keys::account_key(&settings.secret_seed),
            cache: DashMap::new(),
        }
    }

    pub fn service_id(&self) -> &str {
        &self.service_id
    }

    /// Signs a session token for `account`.
    pub fn session_token(&self, account: &str, lifetime_secs: i64, now: i64) -> String {
        token::mint_session(
            &self.session_key,
            &self.service_id,
            account,
            lifetime_secs,
            now,
        )
    }

    /// Verifies a quota or session token at time `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: i64) -> Result<Verified, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        if let Some(hit) = self.cache.get(token) {
            token::check_window(&hit.claims, now, self.leeway)?;
            return Ok(hit.clone());
        }
        let verified = self.verify_uncached(token, now)?;
        if self.cache.len() >= CACHE_CAPACITY {
            self.cache.clear();
        }
        self.cache.insert(token.into(), verified.clone());
        Ok(verified)
    }

    /// Every check, with no cache.
    pub fn verify_uncached(&self, token: &str, now: i64) -> Result<Verified, TokenError> {
        let (header, unverified) = token::peek(token)?;
        match header.alg {
            Algorithm::EdDSA => self.verify_quota(token, &unverified, now),
            Algorithm::HS256 if unverified.usage == Some(USAGE_MANAGE_SESSION) => {
                self.verify_session(token, now)
            }
            _ => Err(TokenError::BadAlgorithm(
                "quota tokens must be signed with EdDSA",
            )),
        }
    }

    fn verify_quota(
        &self,
        token: &str,
        unverified: &Claims,
        now: i64,
    ) -> Result<Verified, TokenError> {
        let iss = unverified.iss.as_deref().ok_or(TokenError::UnknownIssuer)?;
        let key = self.issuers.get(iss).ok_or(TokenError::UnknownIssuer)?;
        let claims = token::verify_signature(token, Algorithm::EdDSA, key)?;
        self.check_audience_and_window(&claims, now)?;
        if claims.usage != Some(USAGE_CREATE_SESSION) {
            return Err(TokenError::WrongUsage("a quota token must have usage 1"));
        }
        let quantity = claims
            .quantity
            .filter(|q| *q > 0)
            .ok_or(TokenError::BadQuantity)?;
        if quantity
            .checked_mul(crate::meter::ledger::NANOS_PER_UNIT)
            .is_none()
        {
            return Err(TokenError::QuantityTooLarge);
        }
        let jti = claims
            .jti
            .clone()
            .filter(|j| !j.is_empty())
            .ok_or(TokenError::MissingJti)?;
        let account = match claims.sub.as_deref() {
            Some(sub) => checked_account(sub)?,
            None => self.account_from_jti(&jti),
        };
        let exp = claims.exp.unwrap_or_default();
        Ok(Verified {
            account: account.into(),
            valid_until: exp.saturating_add(self.leeway),
            kind: TokenKind::Quota { jti, quantity, exp },
            claims,
        })
    }

    fn verify_session(&self, token: &str, now: i64) -> Result<Verified, TokenError> {
        let claims = token::verify_signature(token, Algorithm::HS256, &self.session_decoding)?;
        if claims.iss.as_deref() != Some(self.service_id.as_str()) {
            return Err(TokenError::UnknownIssuer);
        }
        self.check_audience_and_window(&claims, now)?;
        let account = checked_account(
            claims
                .sub
                .as_deref()
                .ok_or(TokenError::Malformed("missing sub"))?,
        )?;
        Ok(Verified {
            account: account.into(),
            valid_until: claims.exp.unwrap_or_default().saturating_add(self.leeway),
            kind: TokenKind::Session,
            claims,
        })
    }

    /// Checks that `aud` names this service and that the token is valid at `now`.
    fn check_audience_and_window(&self, claims: &Claims, now: i64) -> Result<(), TokenError> {
        if !claims
            .aud
            .as_ref()
            .is_some_and(|aud| aud.contains(&self.service_id))
        {
            return Err(TokenError::WrongAudience);
        }
        token::check_window(claims, now, self.leeway)
    }

    /// The account of a quota token without `sub`: a keyed hash of its `jti`, the same in
    /// every pkv process that shares the secret seed.
    pub fn account_from_jti(&self, jti: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.account_key)
            .expect("HMAC takes keys of any length");
        mac.update(jti.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("j{hex}")
    }
}

/// An account id from a token's `sub`. Control characters (NUL, CR, LF, ESC, ...) are
/// refused: the id is written to logs and shown in replies, where they could forge lines.
fn checked_account(sub: &str) -> Result<String, TokenError> {
    if sub.is_empty() || sub.len() > MAX_ACCOUNT_LEN {
        return Err(TokenError::Malformed("sub must be 1 to 256 bytes"));
    }
    if sub.chars().any(char::is_control) {
        return Err(TokenError::Malformed("sub contains control characters"));
    }
    Ok(sub.to_owned())
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use base64::Engine as _;

    use super::keys::IssuerKey;
    use super::token::{mint_quota, MintRequest};
    use super::*;

    fn setup() -> (IssuerKey, Authenticator) {
        let issuer = IssuerKey::from_seed(&[9; 32]);
        let raw: BTreeMap<String, String> = [
            ("PKV_QUOTA_ISSUERS".to_string(), issuer.did()),
            (
                "PKV_SECRET_SEED".to_string(),
                "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".to_string(),
            ),
        ]
        .into();
        let settings = crate::config::Settings::from_map(&raw).unwrap();
        (issuer, Authenticator::new(&settings.auth()))
    }

    fn request() -> MintRequest {
        MintRequest {
            audience: "pkv".into(),
            quantity: 5,
            lifetime_secs: 600,
            sub: None,
        }
    }

    #[test]
    fn a_minted_token_verifies_and_derives_a_stable_account() {
        let (issuer, auth) = setup();
        let token = mint_quota(&issuer, &request(), 1_000_000);
        let v = auth.verify(&token, 1_000_001).unwrap();
        assert!(matches!(v.kind, TokenKind::Quota { quantity: 5, .. }));
        assert_eq!(v.account, auth.verify(&token, 1_000_002).unwrap().account);
        assert!(v.account.starts_with('j'));
    }

    #[test]
    fn the_cache_still_checks_expiry() {
        let (issuer, auth) = setup();
        let token = mint_quota(&issuer, &request(), 1_000_000);
        auth.verify(&token, 1_000_001).unwrap();
        assert_eq!(
            auth.verify(&token, 1_000_000 + 600 + 60).unwrap_err(),
            TokenError::Expired
        );
    }

    #[test]
    fn long_tokens_crit_headers_and_control_characters_in_sub_are_refused() {
        let (issuer, auth) = setup();
        let long = "e".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(token_text(long.as_bytes()), Err(TokenError::TooLong));
        assert_eq!(
            auth.verify(&long, 1_000_000).unwrap_err(),
            TokenError::TooLong
        );

        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = mint_quota(&issuer, &request(), 1_000_000);
        let (_, rest) = token.split_once('.').unwrap();
        let crit = format!("{}.{rest}", b64(br#"{"alg":"EdDSA","crit":["exp"]}"#));
        assert_eq!(
            auth.verify(&crit, 1_000_001).unwrap_err(),
            TokenError::CriticalHeader
        );

        for sub in ["a\nb", "nul\0", "esc\x1b[0m", "c1\u{85}"] {
            assert!(checked_account(sub).is_err(), "{sub:?}");
        }
        assert_eq!(
            checked_account("alice@example.com").unwrap(),
            "alice@example.com"
        );
    }

    #[test]
    fn session_tokens_round_trip() {
        let (_, auth) = setup();
        let token = auth.session_token("alice", 60, 1_000_000);
        let v = auth.verify(&token, 1_000_010).unwrap();
        assert_eq!((&*v.account, v.kind), ("alice", TokenKind::Session));
    }
}
