//! The command table and what is derived from it: lookup, arity checks and key location.
//!
//! [`table`] states every served command once; [`lookup`] finds a request's row and checks
//! its arity; [`key_args`] lists which arguments are keys, channels or key patterns, parsing
//! options exactly the way Redis parses them so that pkv and Redis always agree on which
//! argument is a key; [`set_options`] reads the options of SET and GETEX once, for the meter
//! and the embedded store.

mod call;
pub mod persist;
pub mod set_options;
pub mod spec;
pub mod table;

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;

use crate::redis_num::{parse_int, parse_timeout, TimeoutUnit};
pub use call::Call;

pub use spec::{
    flags, CommandSpec, DataArgs, Dest, Element, Exec, KeyRule, Local, Most, Opt, ReplyRewrite,
    Step, Storage, Takes, Timeout, TtlUnit, Written,
};

/// Commands refused with `-ERR command 'X' is not allowed through pkv`: administration,
/// scripting that reaches undeclared keys, and commands whose effect cannot be confined to
/// one tenant or paid for. Anything neither here nor in the table is an unknown command.
pub const DENIED: &[&str] = &[
    "ACL",
    "BGREWRITEAOF",
    "BGSAVE",
    "CLUSTER",
    "CONFIG|SET",
    "CONFIG|REWRITE",
    "CONFIG|RESETSTAT",
    "DEBUG",
    "FAILOVER",
    "FCALL",
    "FCALL_RO",
    "FUNCTION",
    "LASTSAVE",
    "LATENCY",
    "MIGRATE",
    "MODULE",
    "MONITOR",
    "MOVE",
    "OBJECT|FREQ",
    "PSYNC",
    "REPLCONF",
    "REPLICAOF",
    "RESTORE",
    "RESTORE-ASKING",
    "ROLE",
    "SAVE",
    "SHUTDOWN",
    "SLAVEOF",
    "SLOWLOG",
    "SWAPDB",
    "SYNC",
    "CLIENT|KILL",
    "CLIENT|PAUSE",
    "CLIENT|UNPAUSE",
    "CLIENT|TRACKING",
    "CLIENT|CACHING",
    "CLIENT|GETREDIR",
    "CLIENT|TRACKINGINFO",
    "CLIENT|UNBLOCK",
    "CLIENT|NO-EVICT",
    "MEMORY|DOCTOR",
    "MEMORY|MALLOC-STATS",
    "MEMORY|PURGE",
    "MEMORY|STATS",
    "PUBSUB|SHARDCHANNELS",
    "PUBSUB|SHARDNUMSUB",
    "SPUBLISH",
    "SSUBSCRIBE",
    "SUNSUBSCRIBE",
    "DUMP",
    "WAIT",
    "WAITAOF",
    "LOLWUT",
];

/// Denied commands Redis flags `no-multi`: inside MULTI they get Redis's own refusal
/// ("Command not allowed inside a transaction"), as Redis checks that first.
pub const NO_MULTI: &[&str] = &["PSYNC", "SAVE", "SHUTDOWN", "SYNC"];

/// Why a request could not be matched to a served command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// Not a command Redis or pkv knows.
    Unknown,
    /// A known command that pkv refuses; carries the name as the client wrote it.
    Denied(String),
    /// A container command with an unknown subcommand.
    UnknownSubcommand,
    /// Served, but with the wrong number of arguments.
    Arity,
}

/// The row named `name` exactly (upper case, `CONTAINER|SUB` for a subcommand).
pub fn row(name: &str) -> Option<&'static CommandSpec> {
    index().get(name).copied()
}

/// The position of `spec` in [`table::TABLE`], for tables kept beside it (such as the
/// embedded store's handlers), found from the row's address without a search.
pub fn position(spec: &CommandSpec) -> Option<usize> {
    let size = std::mem::size_of::<CommandSpec>();
    let offset =
        (spec as *const CommandSpec as usize).checked_sub(table::TABLE.as_ptr() as usize)?;
    let at = offset / size;
    (offset % size == 0
        && table::TABLE
            .get(at)
            .is_some_and(|row| std::ptr::eq(row, spec)))
    .then_some(at)
}

/// FNV-1a, for the table's index. The index is built once from the table and never grows,
/// so a name a client picks cannot make it slower; what matters is that hashing a short
/// name is cheap on every request.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type Index = HashMap<&'static str, &'static CommandSpec, std::hash::BuildHasherDefault<Fnv>>;

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| table::TABLE.iter().map(|spec| (spec.name, spec)).collect())
}

/// Upper-cases `name` into `buf` when it fits; command names are short ASCII words.
fn upper<'a>(name: &[u8], buf: &'a mut [u8; 48]) -> Option<&'a str> {
    if name.len() > buf.len() {
        return None;
    }
    let out = &mut buf[..name.len()];
    for (o, b) in out.iter_mut().zip(name) {
        *o = b.to_ascii_uppercase();
    }
    std::str::from_utf8(out).ok()
}

/// Finds the table row for a request (`args[0]` is the command name) and checks its arity.
pub fn lookup(args: &[Bytes]) -> Result<&'static CommandSpec, LookupError> {
    let Some(first) = args.first() else {
        return Err(LookupError::Unknown);
    };
    let mut buf = [0u8; 48];
    let name = upper(first, &mut buf).ok_or(LookupError::Unknown)?;
    let spec = match index().get(name) {
        Some(spec) => *spec,
        None if DENIED.contains(&name) => return Err(LookupError::Denied(name.to_owned())),
        None => return Err(LookupError::Unknown),
    };
    let spec = if spec.flags & flags::CONTAINER != 0 && args.len() >= 2 {
        let mut sub_buf = [0u8; 48];
        let sub = upper(&args[1], &mut sub_buf).ok_or(LookupError::UnknownSubcommand)?;
        let full = format!("{name}|{sub}");
        match index().get(full.as_str()) {
            Some(spec) => *spec,
            None if DENIED.contains(&full.as_str()) => {
                return Err(LookupError::Denied(format!("{name} {sub}")))
            }
            None => return Err(LookupError::UnknownSubcommand),
        }
    } else {
        spec
    };
    if arity_ok(spec.arity, args.len()) {
        Ok(spec)
    } else {
        Err(LookupError::Arity)
    }
}

fn arity_ok(arity: i32, argc: usize) -> bool {
    let argc = argc as i64;
    let arity = i64::from(arity);
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}

/// What a located argument names, which decides how it is rewritten into the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgRole {
    /// A key: prefixed.
    Key,
    /// A glob pattern over keys: prefixed with the glob-escaped prefix.
    KeyGlob,
    /// A `SORT BY/GET` pattern: prefixed unless it is `#`.
    SortPattern,
    /// A Pub/Sub channel: prefixed.
    Channel,
    /// A Pub/Sub channel pattern: prefixed with the glob-escaped prefix.
    ChannelGlob,
}

/// Why pkv could not locate the keys of a request; the request is answered with the error
/// and never forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    NotInteger,
    NumKeysNotPositive,
    NumKeysTooLarge,
    Syntax,
    UnbalancedStreams,
    OtherDatabase,
}

/// Where a request's keys are, and whether it waits for data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// `(index, role)` of every argument that names a key, key pattern or channel.
    pub keys: Vec<(usize, ArgRole)>,
    /// The request may wait for data (a `BLOCKING` command, or a `BLOCK` option its
    /// grammar found): it must run on a connection of its own, never a shared one.
    pub blocks: bool,
    /// Where a blocking request says how long it waits: `(index, in milliseconds)`.
    pub timeout: Option<(usize, bool)>,
}

impl Located {
    /// How long a blocking request may wait, as it asked; `None` for ever (a timeout of 0)
    /// or when it cannot be read (Redis will refuse the request then).
    pub fn wait_limit(&self, args: &[Bytes]) -> Option<std::time::Duration> {
        let (at, millis) = self.timeout?;
        let unit = if millis {
            TimeoutUnit::Millis
        } else {
            TimeoutUnit::Seconds
        };
        parse_timeout(args.get(at)?, unit).ok()?.limit()
    }
}

/// Lists `(index, role)` for every argument of `args` that names a key, key pattern or
/// channel, according to the command's key rules.
pub fn key_args(spec: &CommandSpec, args: &[Bytes]) -> Result<Vec<(usize, ArgRole)>, KeyError> {
    locate(spec, args).map(|located| located.keys)
}

/// Locates a request's keys, and says whether it blocks, with one walk of its arguments
/// the way Redis parses them (SPEC 6: an option name used as a group or consumer name is
/// not an option).
pub fn locate(spec: &CommandSpec, args: &[Bytes]) -> Result<Located, KeyError> {
    let mut out = Vec::new();
    let mut blocks = spec.has(flags::BLOCKING);
    let argc = args.len();
    let mut timeout = match spec.timeout {
        Some(Timeout::Last) => argc.checked_sub(1).map(|at| (at, false)),
        Some(Timeout::At(at)) => Some((usize::from(at), false)),
        None => None,
    };
    for rule in spec.keys {
        match *rule {
            KeyRule::Range { first, last, step } => {
                let first = usize::from(first);
                let last = if last < 0 {
                    match argc.checked_sub(last.unsigned_abs() as usize) {
                        Some(last) => last,
                        None => continue,
                    }
                } else {
                    usize::from(last as u8).min(argc.saturating_sub(1))
                };
                let mut i = first;
                while i <= last && i < argc {
                    out.push((i, ArgRole::Key));
                    i += usize::from(step.max(1));
                }
            }
            KeyRule::NumKeys { at } => {
                let at = usize::from(at);
                let raw = args.get(at).ok_or(KeyError::Syntax)?;
                let n = parse_int(raw).ok_or(KeyError::NotInteger)?;
                if n <= 0 {
                    return Err(KeyError::NumKeysNotPositive);
                }
                let n = n as u64;
                if n > (argc - at - 1) as u64 {
                    return Err(KeyError::NumKeysTooLarge);
                }
                out.extend((at + 1..=at + n as usize).map(|i| (i, ArgRole::Key)));
            }
            KeyRule::Options { start, grammar } => {
                if let Some(at) = options(args, usize::from(start), grammar, &mut out)? {
                    blocks = true;
                    timeout = Some((at, true));
                }
            }
            KeyRule::Channels { first } => {
                out.extend((usize::from(first)..argc).map(|i| (i, ArgRole::Channel)))
            }
            KeyRule::ChannelPatterns { first } => {
                out.extend((usize::from(first)..argc).map(|i| (i, ArgRole::ChannelGlob)))
            }
            KeyRule::OptionalChannelPattern { at } => {
                if usize::from(at) < argc {
                    out.push((usize::from(at), ArgRole::ChannelGlob));
                }
            }
            KeyRule::KeyPattern { at } => {
                if usize::from(at) < argc {
                    out.push((usize::from(at), ArgRole::KeyGlob));
                }
            }
        }
    }
    Ok(Located {
        keys: out,
        blocks,
        timeout,
    })
}

/// Walks an option list the way Redis's own option loops do: a keyword, then what it takes.
/// An unknown word is a syntax error, as it is for Redis, so nothing unrecognised is ever
/// forwarded. Returns where the timeout of a [`Takes::Block`] option is, when one was given
/// (the last one, as Redis reads it).
fn options(
    args: &[Bytes],
    start: usize,
    grammar: &[Opt],
    out: &mut Vec<(usize, ArgRole)>,
) -> Result<Option<usize>, KeyError> {
    let mut blocks = None;
    let mut i = start;
    while i < args.len() {
        let opt = grammar
            .iter()
            .find(|opt| args[i].eq_ignore_ascii_case(opt.word.as_bytes()))
            .ok_or(KeyError::Syntax)?;
        let rest = args.len() - i - 1;
        match opt.takes {
            Takes::Plain(n) => {
                if rest < usize::from(n) {
                    return Err(KeyError::Syntax);
                }
                i += 1 + usize::from(n);
            }
            Takes::Block => {
                if rest < 1 {
                    return Err(KeyError::Syntax);
                }
                blocks = Some(i + 1);
                i += 2;
            }
            Takes::Threshold => {
                i += threshold_len(args, i + 1).ok_or(KeyError::Syntax)?;
            }
            Takes::Database => {
                let db = args.get(i + 1).ok_or(KeyError::Syntax)?;
                if parse_int(db).ok_or(KeyError::NotInteger)? != 0 {
                    return Err(KeyError::OtherDatabase);
                }
                i += 2;
            }
            Takes::Key | Takes::KeyPattern => {
                if rest < 1 {
                    return Err(KeyError::Syntax);
                }
                let role = if matches!(opt.takes, Takes::Key) {
                    ArgRole::Key
                } else {
                    ArgRole::SortPattern
                };
                out.push((i + 1, role));
                i += 2;
            }
            Takes::StreamsRest => {
                if rest == 0 || !rest.is_multiple_of(2) {
                    return Err(KeyError::UnbalancedStreams);
                }
                out.extend((i + 1..i + 1 + rest / 2).map(|k| (k, ArgRole::Key)));
                return Ok(blocks);
            }
        }
    }
    Ok(blocks)
}

/// How many arguments a `Takes::Threshold` option spans, its keyword included, when its
/// value starts at `at` (an optional `=` or `~` first); `None` when the value is missing.
pub fn threshold_len(args: &[Bytes], at: usize) -> Option<usize> {
    let approx = args
        .get(at)
        .is_some_and(|a| a.as_ref() == b"=" || a.as_ref() == b"~");
    let value = at + usize::from(approx);
    (value < args.len()).then_some(value + 1 - (at - 1))
}

/// Every name the table serves, for `COMMAND COUNT` and the README.
pub fn served_names() -> impl Iterator<Item = &'static str> {
    table::TABLE.iter().map(|spec| spec.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split_whitespace()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    #[test]
    fn lookup_checks_arity_and_subcommands() {
        assert!(lookup(&args("get k")).is_ok());
        assert_eq!(lookup(&args("get")).unwrap_err(), LookupError::Arity);
        assert_eq!(
            lookup(&args("nosuchcmd")).unwrap_err(),
            LookupError::Unknown
        );
        assert!(lookup(&args("config get x")).is_ok());
        assert!(matches!(
            lookup(&args("config set x 1")),
            Err(LookupError::Denied(_))
        ));
        assert!(matches!(
            lookup(&args("object freq k")),
            Err(LookupError::Denied(_))
        ));
        assert!(lookup(&args("object encoding k")).is_ok());
    }

    #[test]
    fn keys_are_found_where_redis_looks() {
        let find = |line: &str| {
            let a = args(line);
            let spec = lookup(&a).unwrap();
            key_args(spec, &a).map(|v| v.into_iter().map(|(i, _)| i).collect::<Vec<_>>())
        };
        assert_eq!(find("mset a 1 b 2"), Ok(vec![1, 3]));
        assert_eq!(find("zunionstore d 2 a b weights 1 2"), Ok(vec![1, 3, 4]));
        assert_eq!(find("zunionstore d 3 a b"), Err(KeyError::NumKeysTooLarge));
        assert_eq!(find("zunionstore d 01 a b"), Err(KeyError::NotInteger));
        assert_eq!(find("xread count 2 streams a b 0 0"), Ok(vec![4, 5]));
        assert_eq!(
            find("xread streams a b 0"),
            Err(KeyError::UnbalancedStreams)
        );
        assert_eq!(find("xreadgroup group streams c streams k >"), Ok(vec![5]));
        assert_eq!(
            find("sort k by w_* get # get o_* store d"),
            Ok(vec![1, 3, 5, 7, 9])
        );
        assert_eq!(find("sort k bogus"), Err(KeyError::Syntax));
        assert_eq!(find("blmpop 0 2 a b left"), Ok(vec![3, 4]));
    }

    #[test]
    fn blocking_is_read_with_the_grammar_that_finds_the_keys() {
        let blocks = |line: &str| {
            let a = args(line);
            locate(lookup(&a).unwrap(), &a).map(|l| l.blocks)
        };
        assert_eq!(blocks("xread block 0 streams s $"), Ok(true));
        assert_eq!(blocks("xread count 1 streams block 0"), Ok(false));
        assert_eq!(
            blocks("xreadgroup group streams c block 0 streams s >"),
            Ok(true)
        );
        assert_eq!(
            blocks("xreadgroup group g streams block 0 streams s >"),
            Ok(true)
        );
        assert_eq!(blocks("xreadgroup group block c streams s >"), Ok(false));
        assert_eq!(blocks("xreadgroup group g c streams block >"), Ok(false));
        assert_eq!(blocks("blpop q 0"), Ok(true));
        assert_eq!(blocks("lpop q"), Ok(false));
        let limit = |line: &str| {
            let a = args(line);
            locate(lookup(&a).unwrap(), &a).unwrap().wait_limit(&a)
        };
        let ms = std::time::Duration::from_millis;
        assert_eq!(limit("blpop a b 1.5"), Some(ms(1500)));
        assert_eq!(limit("blpop a 0"), None);
        assert_eq!(limit("blmpop 0.001 2 a b left"), Some(ms(1)));
        // Seconds are a long double, as Redis reads them: 1e-400 is not 0 (for ever).
        assert_eq!(limit("blpop a 1e-400"), Some(ms(1)));
        assert_eq!(limit("blpop a 0x10"), Some(ms(16_000)));
        assert_eq!(limit("blpop a -1"), None);
        assert_eq!(limit("xread block 250 streams s $"), Some(ms(250)));
        assert_eq!(limit("xread block 0 streams s $"), None);
        assert_eq!(limit("xread streams s $"), None);
        // Every blocking row says where its timeout is.
        for spec in table::TABLE {
            assert_eq!(
                spec.has(flags::BLOCKING),
                spec.timeout.is_some(),
                "{}",
                spec.name
            );
        }
        // Every row with a BLOCK option says so with its flag (the flag mirrors Redis's).
        for spec in table::TABLE {
            let has_block_opt = spec.keys.iter().any(|rule| {
                matches!(rule, KeyRule::Options { grammar, .. }
                    if grammar.iter().any(|o| matches!(o.takes, Takes::Block)))
            });
            assert_eq!(has_block_opt, spec.has(flags::MAY_BLOCK), "{}", spec.name);
        }
    }
}
