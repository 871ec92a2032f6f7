//! Fuzz target `keys`: command lookup, key location and the namespace rewrite, over the
//! whole command table.
//!
//! The input is an argument vector. Its first two bytes pick the command: most values pick
//! a row of [`pkv::commands::table::TABLE`] (a `NAME|SUB` row gives two arguments), the
//! rest leave the name to the input. The third byte picks the account. The remaining
//! bytes are the other arguments, separated by `0x00`; an argument `0xFE k` stands for the
//! `k`-th option keyword of the table's grammars (`STORE`, `BY`, `STREAMS`, ...), so the
//! option parsers are reached without guessing words. Checked on every input:
//!
//! - nothing panics;
//! - every located argument is in range and is never the command name (nor, for a
//!   subcommand, its name);
//! - an argument located twice is located with the same role;
//! - rewritten the way the session rewrites (the first role of each index), every key,
//!   pattern and channel starts with the account's prefix and strips back to what the
//!   client sent (a `SORT` pattern `#` stays `#`), and no other account's namespace claims it.

#![no_main]

use std::sync::LazyLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pkv::commands::{self, table::TABLE, ArgRole, KeyRule};
use pkv::namespace::Namespace;

/// Accounts as tokens may name them, including ones that need escaping.
const ACCOUNTS: &[&str] = &["alice", "a:b", "a", "*?[\\]^", "j0123abcd", "ü:%41 x"];

static NAMESPACES: LazyLock<Vec<Namespace>> =
    LazyLock::new(|| ACCOUNTS.iter().map(|a| Namespace::new(a)).collect());

/// Every option keyword of every grammar in the table.
static WORDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut words: Vec<&str> = TABLE
        .iter()
        .flat_map(|spec| spec.keys.iter())
        .filter_map(|rule| match rule {
            KeyRule::Options { grammar, .. } => Some(grammar.iter().map(|o| o.word)),
            _ => None,
        })
        .flatten()
        .collect();
    words.sort_unstable();
    words.dedup();
    words
});

/// Builds the argument vector the input describes; returns it and the account's index.
fn arguments(data: &[u8]) -> Option<(Vec<Bytes>, usize)> {
    let (head, rest) = data.split_at_checked(3)?;
    let pick = usize::from(u16::from_le_bytes([head[0], head[1]]));
    let account = usize::from(head[2]) % ACCOUNTS.len();
    let mut args = Vec::new();
    // About nine inputs in ten name a real row; the others name whatever the input says.
    if pick % 10 != 0 {
        let name = TABLE[pick % TABLE.len()].name;
        // Case does not matter to lookup; vary it.
        let name = if pick & 0x8000 != 0 {
            name.to_ascii_lowercase()
        } else {
            name.to_owned()
        };
        args.extend(
            name.split('|')
                .map(|w| Bytes::copy_from_slice(w.as_bytes())),
        );
    }
    if !rest.is_empty() {
        for arg in rest.split(|&b| b == 0) {
            match arg {
                [0xFE, k] => {
                    args.push(Bytes::from_static(
                        WORDS[usize::from(*k) % WORDS.len()].as_bytes(),
                    ));
                }
                _ => args.push(Bytes::copy_from_slice(arg)),
            }
        }
    }
    Some((args, account))
}

fuzz_target!(|data: &[u8]| {
    let Some((args, account)) = arguments(data) else {
        return;
    };
    let Ok(spec) = commands::lookup(&args) else {
        return;
    };
    let Ok(mut located) = commands::key_args(spec, &args) else {
        return;
    };
    let first_arg = if spec.name.contains('|') { 2 } else { 1 };
    for &(i, _) in &located {
        assert!(
            i < args.len(),
            "{}: key index {i} out of range ({} args)",
            spec.name,
            args.len()
        );
        assert!(
            i >= first_arg,
            "{}: the command name at {i} located as a key",
            spec.name
        );
    }
    // The session's order: by index; the first role of an index is the one applied.
    located.sort_by_key(|&(i, _)| i);
    for pair in located.windows(2) {
        if pair[0].0 == pair[1].0 {
            assert_eq!(
                pair[0].1, pair[1].1,
                "{}: argument {} located with two roles",
                spec.name, pair[0].0
            );
        }
    }
    located.dedup_by_key(|&mut (i, _)| i);
    let ns = &NAMESPACES[account];
    for (i, role) in located {
        let original = &args[i];
        let rewritten = ns.rewrite(original, role);
        if role == ArgRole::SortPattern && original.as_ref() == b"#" {
            assert_eq!(rewritten.as_ref(), b"#");
            continue;
        }
        assert!(
            rewritten.starts_with(ns.prefix()),
            "{}: argument {i} ({role:?}) left the namespace",
            spec.name
        );
        assert_eq!(
            ns.strip(&rewritten),
            Some(original.as_ref()),
            "{}: argument {i} does not strip back",
            spec.name
        );
        for (other, other_ns) in NAMESPACES.iter().enumerate() {
            if other != account {
                assert_eq!(
                    other_ns.strip(&rewritten),
                    None,
                    "{}: account {:?}'s key is also in {:?}'s namespace",
                    spec.name,
                    ACCOUNTS[account],
                    ACCOUNTS[other]
                );
            }
        }
    }
});
