//! `did:key` identifiers for Ed25519 keys, as Prex exchanges name their issuer keys:
//! `did:key:z` + base58btc(`0xed 0x01` ++ 32-byte public key).

/// The multicodec prefix of an Ed25519 public key.
const ED25519_MULTICODEC: [u8; 2] = [0xed, 0x01];

/// Why a string is not an Ed25519 `did:key`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DidError {
    #[error("not a did:key (expected did:key:z...)")]
    NotDidKey,
    #[error("not valid base58btc")]
    Base58,
    #[error("not an Ed25519 key (wrong multicodec prefix or length)")]
    NotEd25519,
}

/// The `did:key` of an Ed25519 public key.
pub fn did_from_public_key(public: &[u8; 32]) -> String {
    let mut bytes = Vec::with_capacity(34);
    bytes.extend_from_slice(&ED25519_MULTICODEC);
    bytes.extend_from_slice(public);
    format!("did:key:z{}", bs58::encode(bytes).into_string())
}

/// The Ed25519 public key named by a `did:key`.
pub fn public_key_from_did(did: &str) -> Result<[u8; 32], DidError> {
    let encoded = did.strip_prefix("did:key:z").ok_or(DidError::NotDidKey)?;
    let bytes = bs58::decode(encoded)
        .into_vec()
        .map_err(|_| DidError::Base58)?;
    match bytes.split_at_checked(2) {
        Some((prefix, key)) if prefix == ED25519_MULTICODEC => {
            key.try_into().map_err(|_| DidError::NotEd25519)
        }
        _ => Err(DidError::NotEd25519),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_the_published_form() {
        // The did:key specification's Ed25519 example starts with "z6Mk" for every key.
        let did = did_from_public_key(&[1; 32]);
        assert!(did.starts_with("did:key:z6Mk"), "{did}");
        assert_eq!(public_key_from_did(&did), Ok([1; 32]));
        assert_eq!(
            public_key_from_did("did:web:example.com"),
            Err(DidError::NotDidKey)
        );
        assert_eq!(public_key_from_did("did:key:z0OIl"), Err(DidError::Base58));
    }
}
