//! Fuzz target `token`: quota and session token verification ([`Authenticator::verify`]).
//!
//! The authenticator trusts one issuer (seed [`ISSUER_SEED`]) and signs sessions with the
//! key derived from [`SECRET_SEED`]; the seed corpus holds tokens minted with them
//! (`pkv token mint`, `PKV.SESSION`). An input is a token as a client sends it after
//! `AUTH`, or, when it starts with `0x00`, the parts of a token (`header JSON 0x00 claims
//! JSON 0x00 signature bytes`) that the target base64url-encodes and joins, so that the
//! fuzzer mutates the claims of a validly signed token rather than their encoding.
//! Checked on every input:
//!
//! - nothing panics;
//! - nothing forged is accepted: a token that verifies signs exactly the header and claims
//!   of a token in the seed corpus;
//! - the cached and uncached checks agree.

#![no_main]

use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use pkv::auth::keys::IssuerKey;
use pkv::auth::Authenticator;
use pkv::config::Settings;

/// The trusted issuer's seed, `[7; 32]`.
const ISSUER_SEED: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
/// pkv's secret seed, `[1; 32]`.
const SECRET_SEED: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
/// When the tokens are checked (2030): inside every seed token's window.
const NOW: i64 = 1_900_000_000;

/// The tokens minted for the seed corpus: the only ones that may verify.
const MINTED: [&str; 3] = [
    include_str!("../corpus/token/seed-minted-quota"),
    include_str!("../corpus/token/seed-minted-quota-sub"),
    include_str!("../corpus/token/seed-minted-session"),
];

static AUTH: LazyLock<Authenticator> = LazyLock::new(|| {
    let seed = pkv::config::parse_seed(ISSUER_SEED).expect("a valid seed");
    let did = IssuerKey::from_seed(&seed).did();
    let raw: BTreeMap<String, String> = [
        ("PKV_QUOTA_ISSUERS".to_string(), did),
        ("PKV_SECRET_SEED".to_string(), SECRET_SEED.to_string()),
    ]
    .into();
    let settings = Settings::from_map(&raw).expect("valid settings");
    let auth = Authenticator::new(&settings.auth());
    for token in MINTED {
        if let Err(e) = auth.verify_uncached(token.trim(), NOW) {
            panic!("a seed token does not verify ({e}): the corpus and the keys disagree");
        }
    }
    auth
});

/// What each seed token signs: `header.claims`.
static SIGNED: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    MINTED
        .iter()
        .filter_map(|t| t.trim().rsplit_once('.').map(|(signed, _)| signed))
        .collect()
});

/// The token an input stands for.
fn token(data: &[u8]) -> Option<String> {
    match data.split_first() {
        Some((0, parts)) => {
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let parts: Vec<String> = parts
                .splitn(3, |&b| b == 0)
                .map(|p| b64.encode(p))
                .collect();
            Some(parts.join("."))
        }
        _ => std::str::from_utf8(data).ok().map(str::to_owned),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(token) = token(data) else {
        return;
    };
    let cached = AUTH.verify(&token, NOW);
    let uncached = AUTH.verify_uncached(&token, NOW);
    assert_eq!(
        cached.as_ref().map(|v| (&v.account, &v.kind)),
        uncached.as_ref().map(|v| (&v.account, &v.kind)),
        "the cache changed the verdict"
    );
    if let Ok(verified) = cached {
        let signed = token.rsplit_once('.').map_or("", |(signed, _)| signed);
        assert!(
            SIGNED.contains(signed),
            "a token that no one minted was accepted: {token:?} as {verified:?}"
        );
        assert!(!verified.account.is_empty() && verified.account.len() <= 256);
    }
});
