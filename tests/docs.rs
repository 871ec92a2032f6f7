//! The documentation states what the code does: the storage table in `docs/metering.md`
//! is the command table's storage rules, row for row, and the README lists exactly the
//! commands the embedded store leaves to an upstream Redis.

use pkv::commands::{flags, table::TABLE, Storage};
use pkv::meter::storage::describe;

const BEGIN: &str =
    "<!-- storage-table: generated from the command table; checked by tests/docs.rs -->";
const END: &str = "<!-- /storage-table -->";

/// The table as it should read: every write command and its storage rule.
fn expected_table() -> String {
    let mut out = String::from("| command | storage bought |\n| --- | --- |\n");
    for spec in TABLE
        .iter()
        .filter(|s| s.has(flags::WRITE) || s.storage != Storage::None)
    {
        out.push_str(&format!(
            "| {} | {} |\n",
            spec.name.replace('|', " "),
            describe(spec.storage)
        ));
    }
    out
}

#[test]
fn the_storage_table_in_the_docs_matches_the_command_table() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metering.md")).unwrap();
    let start = doc
        .find(BEGIN)
        .expect("docs/metering.md has the storage table markers")
        + BEGIN.len();
    let end = doc.find(END).expect("docs/metering.md has the end marker");
    let expected = expected_table();
    assert_eq!(
        doc[start..end].trim(),
        expected.trim(),
        "docs/metering.md's storage table is out of date; replace it with:\n{expected}"
    );
}

#[test]
fn every_write_command_has_a_considered_storage_rule() {
    // A write with no storage is a decision, listed here; anything else must say what it buys.
    const STORES_NOTHING: &[&str] = &[
        "DEL",
        "UNLINK",
        "FLUSHDB",
        "FLUSHALL",
        "GETDEL",
        "HDEL",
        "LPOP",
        "RPOP",
        "LREM",
        "LTRIM",
        "LMPOP",
        "BLPOP",
        "BRPOP",
        "BLMPOP",
        "SREM",
        "SPOP",
        "ZREM",
        "ZREMRANGEBYRANK",
        "ZREMRANGEBYSCORE",
        "ZREMRANGEBYLEX",
        "ZPOPMIN",
        "ZPOPMAX",
        "BZPOPMIN",
        "BZPOPMAX",
        "ZMPOP",
        "BZMPOP",
        "XDEL",
        "XTRIM",
        "XSETID",
        "XACK",
        "XGROUP|DELCONSUMER",
        "XGROUP|DESTROY",
        "XGROUP|SETID",
    ];
    let mut problems = Vec::new();
    for spec in TABLE.iter().filter(|s| s.has(flags::WRITE)) {
        let listed = STORES_NOTHING.contains(&spec.name);
        match (spec.storage, listed) {
            (Storage::None, false) => {
                problems.push(format!("{}: writes but has no storage rule", spec.name))
            }
            (Storage::None, true) | (_, false) => {}
            (_, true) => problems.push(format!(
                "{}: has a storage rule but is listed as storing nothing",
                spec.name
            )),
        }
    }
    for spec in TABLE
        .iter()
        .filter(|s| !s.has(flags::WRITE) && s.storage != Storage::None)
    {
        problems.push(format!(
            "{}: has a storage rule but is not a write",
            spec.name
        ));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_readme_lists_the_commands_that_need_an_upstream() {
    const BEGIN: &str =
        "<!-- needs-upstream: generated from the embedded store; checked by tests/docs.rs -->";
    const END: &str = "<!-- /needs-upstream -->";
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find(BEGIN)
        .expect("README.md has the needs-upstream markers")
        + BEGIN.len();
    let end = readme
        .find(END)
        .expect("README.md has the needs-upstream end marker");
    let names: Vec<String> = pkv::embedded::needs_upstream()
        .iter()
        .map(|n| n.replace('|', " "))
        .collect();
    let expected = if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    };
    let found: String = readme[start..end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(
        found, expected,
        "README.md's list of commands that need PKV_UPSTREAM_URL is out of date; it should be:\n{expected}"
    );
}
