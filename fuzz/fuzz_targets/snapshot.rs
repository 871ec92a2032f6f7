//! Fuzz target `snapshot`: the embedded store's snapshot decoder
//! ([`pkv::embedded::snapshot::decode`]).
//!
//! Each input is decoded twice: as it is, which mostly tests the header, size and checksum
//! checks, and sealed (its size field and checksum set to match, as a file written by a
//! buggy or hostile writer would be), which takes the fuzzer past the checksum into the
//! body parser. The seed corpus holds a snapshot written by a real pkv. Checked on every
//! input:
//!
//! - nothing panics, and memory stays bounded (run with `-rss_limit_mb=2048
//!   -malloc_limit_mb=512`: no declared length makes the decoder allocate more than the
//!   input's size);
//! - a snapshot that decodes holds what it says (`live` counts its entries), and encoding
//!   those entries again gives a snapshot that decodes to the same entries.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pkv::embedded::snapshot::{decode, Encoder};

/// When the snapshot is loaded (2023): before every deadline in the seed.
const NOW: i64 = 1_700_000_000_000;
/// Where the size field and the checksum are (see the format in `snapshot.rs`).
const SIZE_FIELD: std::ops::Range<usize> = 12..20;
const HEADER: usize = 28;

/// FNV-1a 64, the snapshot checksum.
fn checksum(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// `bytes` with the size field and the trailing checksum made to match.
fn sealed(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < HEADER + 8 {
        return None;
    }
    let mut out = bytes.to_vec();
    let size = out.len() as u64;
    out[SIZE_FIELD].copy_from_slice(&size.to_le_bytes());
    let body_end = out.len() - 8;
    let sum = checksum(&out[..body_end]);
    out[body_end..].copy_from_slice(&sum.to_le_bytes());
    Some(out)
}

/// Checks once that sealing matches what the encoder writes, so a change of format cannot
/// quietly leave the fuzzer outside the body parser.
static SEALING_MATCHES: LazyLock<()> = LazyLock::new(|| {
    let written = Encoder::new(NOW).finish();
    assert_eq!(sealed(&written).as_deref(), Some(&written[..]));
});

fn check(bytes: &[u8]) {
    let Ok(snapshot) = decode(bytes, NOW) else {
        return;
    };
    assert_eq!(snapshot.loaded.live, snapshot.entries.len());
    let mut encoder = Encoder::new(snapshot.loaded.saved_at);
    for (key, entry) in &snapshot.entries {
        encoder.entry(key, entry);
    }
    let again = decode(&encoder.finish(), NOW).expect("a re-encoded snapshot decodes");
    assert_eq!(again.loaded.live, snapshot.loaded.live);
    assert_eq!(again.loaded.saved_at, snapshot.loaded.saved_at);
    assert_eq!(
        again.entries, snapshot.entries,
        "entries changed on the way round"
    );
}

fuzz_target!(|data: &[u8]| {
    LazyLock::force(&SEALING_MATCHES);
    check(data);
    if let Some(sealed) = sealed(data) {
        check(&sealed);
    }
});
