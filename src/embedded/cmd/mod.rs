//! The commands the embedded store runs, one module per family, and what they share: the
//! registry, the context a command runs in, argument parsing and reply helpers.
//!
//! A family declares each command as a [`Command`]: its name and its handler. How it
//! touches the keyspace ([`Kind`], which decides the lock it runs under, see
//! [`super::Store::run`]) is not declared again here: the registry derives it once, at
//! start-up, from the command's row in the command table (its key positions and WRITE
//! flag). Handlers get the arguments as the request path sent them (keys already in the
//! namespace) and return a [`Reply`]; their errors are [`StoreError`]s, which answer with
//! Redis's words.

mod geo;
mod hashes;
mod hyperloglog;
mod keys;
mod lists;
mod server;
mod sets;
pub(super) mod sort;
pub mod streams;
mod strings;
mod zsets;

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::protocol::frame::Frame;

use super::data::Entry;
pub use super::error::StoreError;
use super::Store;
use crate::commands::set_options::SyntaxError;
use crate::protocol::Proto;
use crate::redis_num::TimeoutError;

/// How a command touches the keyspace, as the command table states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reads at most one key, or walks the keyspace (KEYS, SCAN), or touches none: runs
    /// alongside other commands.
    Read,
    /// Writes one key, `args[1]`: runs alongside other commands; signals WATCH and
    /// blocked clients for that key.
    Write,
    /// May touch several keys (MSET, MGET, SINTERSTORE, BLPOP, ...): runs alone, so it is
    /// atomic.
    Multi,
}

impl Kind {
    /// The kind of the command table's row `name` (a command without a row of its own,
    /// such as `MEMORY` for `MEMORY USAGE`, only reads). A container with a subcommand
    /// that writes (`XGROUP CREATE`) is resolved per call, like a multi-key command: its
    /// key is not `args[1]`, and the log and WATCH must see its writes.
    fn of(name: &str) -> Kind {
        use crate::commands::{flags, table::TABLE, KeyRule};
        let Some(spec) = TABLE.iter().find(|s| s.name == name) else {
            return Kind::Read;
        };
        if spec.has(flags::CONTAINER) {
            let writes = TABLE.iter().any(|sub| {
                sub.name
                    .split_once('|')
                    .is_some_and(|(parent, _)| parent == name)
                    && sub.has(flags::WRITE)
            });
            return if writes { Kind::Multi } else { Kind::Read };
        }
        match spec.keys {
            [] | [KeyRule::KeyPattern { .. }] => Kind::Read,
            [KeyRule::Range { first, last, .. }] if i16::from(*first) == i16::from(*last) => {
                if spec.has(flags::WRITE) && *first == 1 {
                    Kind::Write
                } else {
                    Kind::Read
                }
            }
            _ => Kind::Multi,
        }
    }
}

/// Where a command's keys are, for the gate stripes it holds ([`super::gate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysAt {
    /// `args[1]`, its only key.
    First,
    /// It touches no key (PING, PUBLISH).
    Nowhere,
    /// Any key: it walks the keyspace (KEYS, SCAN).
    Anywhere,
    /// Where the command table locates them, per call (MSET, XINFO STREAM, SORT).
    Located,
}

impl KeysAt {
    /// Where the keys of the command table's row `name` are.
    fn of(name: &str) -> KeysAt {
        use crate::commands::{flags, table::TABLE, KeyRule};
        let Some(spec) = TABLE.iter().find(|s| s.name == name) else {
            return KeysAt::Located;
        };
        if spec.has(flags::WALKS_KEYSPACE) {
            return KeysAt::Anywhere;
        }
        if spec.has(flags::CONTAINER) {
            return KeysAt::Located;
        }
        match spec.keys {
            [] => KeysAt::Nowhere,
            [KeyRule::Range {
                first: 1, last: 1, ..
            }] => KeysAt::First,
            _ => KeysAt::Located,
        }
    }
}

/// The outcome of a handler.
pub type Reply = Result<Frame, Error>;

/// Why a handler did not answer with a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// An error reply, as Redis would answer.
    Store(StoreError),
    /// A blocking command found nothing to take: wait for a write to its keys, at most
    /// `timeout_ms` (0 = for ever), and run it again. Outside a dedicated connection, and
    /// inside MULTI, the client gets the command's null reply instead.
    Block { timeout_ms: u64 },
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        Error::Store(err)
    }
}

impl From<TimeoutError> for Error {
    fn from(err: TimeoutError) -> Self {
        Error::Store(err.into())
    }
}

impl From<SyntaxError> for Error {
    fn from(err: SyntaxError) -> Self {
        Error::Store(err.into())
    }
}

pub type Handler = fn(&mut Cx, &[&[u8]]) -> Reply;

/// One command of the embedded store, as its family declares it.
pub struct Command {
    /// Upper case, as in the command table.
    pub name: &'static str,
    pub run: Handler,
}

/// A command as the store runs it: the family's declaration and the kind the table gives.
pub struct Runnable {
    pub name: &'static str,
    pub kind: Kind,
    pub keys_at: KeysAt,
    /// Its work can grow with one big value without bound (a search over every point of a
    /// geo set, a stream's whole pending list): it shares the store like any read, but on
    /// the blocking pool, never in place on a runtime worker, whose other clients would
    /// wait for it ([`LONG_READS`]).
    pub long: bool,
    /// Its work grows with the value of its key (`LRANGE`, `HGETALL`, ...): in place while
    /// that value is small, on the blocking pool when it is big ([`SCANS_ITS_VALUE`]).
    pub scans: bool,
    pub run: Handler,
}

/// The commands run on the blocking pool even when they could run in place (see
/// [`Runnable::long`]). The everyday reads (GET, LRANGE, ZRANGE, ...) stay in place: the
/// pool's hand-off would cost more than most of them.
const LONG_READS: &[&str] = &[
    "GEOSEARCH",
    "GEORADIUS",
    "GEORADIUS_RO",
    "GEORADIUSBYMEMBER",
    "GEORADIUSBYMEMBER_RO",
    "XINFO",
    "XPENDING",
    "XAUTOCLAIM",
    "XCLAIM",
];

/// The single-key commands whose work can grow with their key's value: when it holds many
/// elements ([`crate::embedded::data::Data::is_big`]) they run on the blocking pool like
/// [`LONG_READS`], so a `LRANGE` over a million elements does not hold a runtime worker and
/// every other client it serves. Checking the size costs a lookup, so only these pay it.
const SCANS_ITS_VALUE: &[&str] = &[
    "GETRANGE",
    "SUBSTR",
    "BITCOUNT",
    "BITPOS",
    "HGETALL",
    "HKEYS",
    "HVALS",
    "HRANDFIELD",
    "HSCAN",
    "LRANGE",
    "LPOS",
    "LREM",
    "LINSERT",
    "LTRIM",
    "SMEMBERS",
    "SRANDMEMBER",
    "SPOP",
    "SSCAN",
    "ZRANGE",
    "ZRANGEBYSCORE",
    "ZREVRANGEBYSCORE",
    "ZRANGEBYLEX",
    "ZREVRANGEBYLEX",
    "ZREVRANGE",
    "ZCOUNT",
    "ZLEXCOUNT",
    "ZRANK",
    "ZREVRANK",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE",
    "ZREMRANGEBYLEX",
    "ZRANDMEMBER",
    "ZSCAN",
    "XRANGE",
    "XREVRANGE",
    "XTRIM",
    "MEMORY|USAGE",
    "MEMORY",
];

/// What a handler runs with.
pub struct Cx<'a> {
    pub store: &'a Store,
    /// The client's protocol: a few replies are shaped differently in RESP3.
    pub proto: Proto,
    /// The time of the command, in milliseconds since the epoch.
    pub now: i64,
}

impl Cx<'_> {
    /// Runs `f` on the live entry under `key`.
    pub fn read<R>(&self, key: &[u8], f: impl FnOnce(Option<&Entry>) -> R) -> R {
        self.store.keys.read(key, self.now, f)
    }

    /// Runs `f` on the entry under `key`, which it may create, change or remove.
    pub fn write<R>(&self, key: &[u8], f: impl FnOnce(&mut Option<Entry>) -> R) -> R {
        self.store.keys.write(key, self.now, f)
    }

    /// Removes and returns the live entry under `key`.
    pub fn remove(&self, key: &[u8]) -> Option<Entry> {
        self.store.keys.remove(key, self.now)
    }

    /// Stores `entry` under `key`, replacing whatever was there.
    pub fn insert(&self, key: &[u8], entry: Entry) {
        self.store.keys.insert(key, entry)
    }

    /// Whether the client speaks RESP3.
    pub fn resp3(&self) -> bool {
        self.proto == Proto::Resp3
    }
}

/// Every family's commands.
fn families() -> [&'static [Command]; 11] {
    [
        strings::COMMANDS,
        keys::COMMANDS,
        hashes::COMMANDS,
        lists::COMMANDS,
        sets::COMMANDS,
        zsets::COMMANDS,
        server::COMMANDS,
        hyperloglog::COMMANDS,
        geo::COMMANDS,
        sort::COMMANDS,
        streams::COMMANDS,
    ]
}

/// The command named `name` (any case), if the store runs it.
pub fn find(name: &[u8]) -> Option<&'static Runnable> {
    static REGISTRY: OnceLock<HashMap<&'static str, Runnable>> = OnceLock::new();
    let registry = REGISTRY.get_or_init(|| {
        families()
            .into_iter()
            .flatten()
            .map(|c| {
                let runnable = Runnable {
                    name: c.name,
                    kind: Kind::of(c.name),
                    keys_at: KeysAt::of(c.name),
                    long: LONG_READS.contains(&c.name),
                    scans: SCANS_ITS_VALUE.contains(&c.name),
                    run: c.run,
                };
                (c.name, runnable)
            })
            .collect()
    });
    let mut upper = [0u8; 32];
    let upper = upper.get_mut(..name.len())?;
    upper.copy_from_slice(name);
    upper.make_ascii_uppercase();
    registry.get(std::str::from_utf8(upper).ok()?)
}

/// The handler for a row of the command table, found from the row's position: one
/// lookup per request, no search by name. A subcommand's row (`MEMORY|USAGE`) has its
/// container's handler.
pub fn for_spec(spec: &crate::commands::CommandSpec) -> Option<&'static Runnable> {
    static BY_ROW: OnceLock<Vec<Option<&'static Runnable>>> = OnceLock::new();
    let rows = BY_ROW.get_or_init(|| {
        crate::commands::table::TABLE
            .iter()
            .map(|row| find(row.name.split('|').next().unwrap_or(row.name).as_bytes()))
            .collect()
    });
    rows.get(crate::commands::position(spec)?)
        .copied()
        .flatten()
}

/// Every command the store runs, for the README's list and its tests.
pub fn names() -> impl Iterator<Item = &'static str> {
    families().into_iter().flatten().map(|c| c.name)
}

// Reply helpers.

pub fn ok() -> Reply {
    Ok(Frame::OK)
}

pub fn int(n: i64) -> Reply {
    Ok(Frame::Integer(n))
}

pub fn bulk(bytes: impl Into<Vec<u8>>) -> Frame {
    Frame::Bulk(bytes::Bytes::from(bytes.into()))
}

/// A list of bulk strings.
pub fn bulks<I, B>(items: I) -> Frame
where
    I: IntoIterator<Item = B>,
    B: Into<Vec<u8>>,
{
    Frame::Array(items.into_iter().map(bulk).collect())
}

/// A score: a RESP3 double, or its text in RESP2.
pub fn score(cx: &Cx, d: f64) -> Frame {
    if cx.resp3() {
        Frame::Double(crate::redis_num::format_double(d).into())
    } else {
        bulk(crate::redis_num::format_double(d))
    }
}

/// The wrong-type error, as a handler result.
pub fn wrongtype<T>() -> Result<T, Error> {
    Err(StoreError::WrongType.into())
}

/// A whole number argument, as Redis parses them (no spaces, no `+`, no leading zeros).
pub fn int_arg(raw: &[u8]) -> Result<i64, Error> {
    crate::redis_num::parse_int(raw).ok_or(Error::Store(StoreError::NotInteger))
}

/// A blocking command's timeout in seconds, as milliseconds to wait (0: for ever).
pub fn timeout_arg(raw: &[u8]) -> Result<u64, Error> {
    crate::redis_num::parse_timeout(raw, crate::redis_num::TimeoutUnit::Seconds)
        .map(crate::redis_num::BlockTimeout::millis)
        .map_err(Error::from)
}

/// True when `raw` equals `word`, ignoring ASCII case.
pub fn is(raw: &[u8], word: &str) -> bool {
    raw.eq_ignore_ascii_case(word.as_bytes())
}

/// The error for a wrong number of arguments to `name`.
pub fn arity_error(name: &str) -> Error {
    StoreError::Arity {
        command: name.to_owned(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_table() {
        let kind = |name: &str| find(name.as_bytes()).map(|c| c.kind);
        assert_eq!(kind("GET"), Some(Kind::Read));
        assert_eq!(kind("SET"), Some(Kind::Write));
        assert_eq!(kind("HSET"), Some(Kind::Write));
        for multi in [
            "MGET",
            "MSET",
            "RENAME",
            "SINTERSTORE",
            "LMOVE",
            "BLPOP",
            "ZUNION",
        ] {
            assert_eq!(kind(multi), Some(Kind::Multi), "{multi}");
        }
        for shared in ["KEYS", "SCAN", "MEMORY", "PUBLISH", "PING"] {
            assert_eq!(kind(shared), Some(Kind::Read), "{shared}");
        }
    }

    /// Where a command's keys are decides the gate stripes it holds: a single key at
    /// `args[1]` is read without a table lookup; a key elsewhere (XINFO STREAM), several,
    /// or a writing container's are located per call.
    #[test]
    fn where_the_keys_are_comes_from_the_table() {
        let at = |name: &str| find(name.as_bytes()).map(|c| c.keys_at);
        for first in ["GET", "SET", "HSET", "LRANGE", "XADD", "PFADD"] {
            assert_eq!(at(first), Some(KeysAt::First), "{first}");
        }
        for located in [
            "MGET", "MSET", "RENAME", "XINFO", "XGROUP", "OBJECT", "SORT", "BLPOP",
        ] {
            assert_eq!(at(located), Some(KeysAt::Located), "{located}");
        }
        for anywhere in ["KEYS", "SCAN"] {
            assert_eq!(at(anywhere), Some(KeysAt::Anywhere), "{anywhere}");
        }
        for nowhere in ["PING", "ECHO", "TIME"] {
            assert_eq!(at(nowhere), Some(KeysAt::Nowhere), "{nowhere}");
        }
        let sort = |args: &[&str]| {
            let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            sort::names_other_keys(args[0], &bytes)
        };
        assert!(sort(&["SORT", "l", "BY", "w_*"]));
        assert!(sort(&["SORT_RO", "l", "get", "#"]));
        assert!(!sort(&["SORT", "l", "ALPHA", "STORE", "d"]));
        assert!(!sort(&["RENAME", "by", "get"]));
    }

    #[test]
    fn every_command_is_in_the_table() {
        for name in names() {
            let served = crate::commands::table::TABLE.iter().any(|s| {
                s.name == name
                    || s.name
                        .strip_prefix(name)
                        .is_some_and(|r| r.starts_with('|'))
            });
            assert!(served, "{name} is run by the store but not in the table");
        }
    }
}
