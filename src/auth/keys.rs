//! Key material: issuer signing keys and the keys pkv derives from its secret seed.

use ed25519_dalek::SigningKey;
use hkdf::Hkdf;
use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::Sha256;

use super::did;

/// What each derived key is for; the HKDF `info` string.
const SESSION_INFO: &[u8] = b"pkv session-token key";
const ACCOUNT_INFO: &[u8] = b"pkv account-id key";
const DEV_ISSUER_INFO: &[u8] = b"pkv development issuer seed";

/// Derives 32 bytes for `info` from the operator's secret seed (HKDF-SHA256).
fn derive(secret_seed: &[u8; 32], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(Some(b"pkv"), secret_seed)
        .expand(info, &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

/// The HS256 key that signs and checks session tokens.
pub fn session_key(secret_seed: &[u8; 32]) -> [u8; 32] {
    derive(secret_seed, SESSION_INFO)
}

/// The key of the keyed hash that turns a token id into an account id.
pub fn account_key(secret_seed: &[u8; 32]) -> [u8; 32] {
    derive(secret_seed, ACCOUNT_INFO)
}

/// The development issuer's seed, used only when no issuer is configured.
pub fn dev_issuer_seed(secret_seed: &[u8; 32]) -> [u8; 32] {
    derive(secret_seed, DEV_ISSUER_INFO)
}

/// An Ed25519 issuer key, as a Prex exchange holds it.
pub struct IssuerKey {
    signing: SigningKey,
}

impl IssuerKey {
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        IssuerKey {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// A fresh random key.
    pub fn generate() -> ([u8; 32], Self) {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the operating system's random source is available");
        (seed, IssuerKey::from_seed(&seed))
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    pub fn did(&self) -> String {
        did::did_from_public_key(&self.public_key())
    }

    /// The key in the PKCS#8 form jsonwebtoken signs with.
    pub fn encoding_key(&self) -> EncodingKey {
        // PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410): a fixed 16-byte header + seed.
        const HEADER: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut der = HEADER.to_vec();
        der.extend_from_slice(self.signing.as_bytes());
        EncodingKey::from_ed_der(&der)
    }
}

/// The key that checks signatures of an issuer given by its public key.
pub fn decoding_key(public: &[u8; 32]) -> DecodingKey {
    DecodingKey::from_ed_der(public)
}
