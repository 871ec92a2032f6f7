//! Prepaid storage: the byte-seconds a write buys, following the command's storage rule in
//! the table.
//!
//! Every key written through pkv has a TTL. What a write stores and for how long is found
//! without an extra round trip: [`plan`] looks at the arguments (refusing expiries above the
//! maximum, adding the default TTL to `SET`, bounding what the write can buy so admission
//! can reserve it), and adds small bookkeeping commands to the same pipeline (`PEXPIRE key
//! <default> NX` gives a key created without a TTL the default one and says whether it
//! did; `PTTL`, `STRLEN`, `LINDEX`, `HSTRLEN` and `MEMORY USAGE ... SAMPLES 0` say how long
//! and how large, before and after the write). [`byte_seconds`] reads their replies once
//! the pipeline returns: a write pays for what the key really holds afterwards, never for
//! the length of its arguments alone.

use crate::commands::Call;
use crate::protocol::frame::Frame;
use bytes::Bytes;

use crate::commands::set_options::{self, Expiry, OptionsOf};
use crate::commands::{
    threshold_len, ArgRole, CommandSpec, DataArgs, Dest, Element, Most, Opt, Step, Storage, Takes,
    TtlUnit, Written,
};
use crate::namespace::Namespace;
use crate::redis_num::parse_int;

/// The longest string Redis stores (`proto-max-bulk-len`, 512 MiB): no offset write grows a
/// key beyond it, so it caps what admission reserves for one.
pub const MAX_STRING: u64 = 512 << 20;
/// The most bytes a 64-bit integer takes in decimal, sign included.
const INTEGER_DIGITS: u64 = 20;
/// The most bytes Redis formats a long double into (`MAX_LONG_DOUBLE_CHARS`).
const FLOAT_DIGITS: u64 = 5 * 1024;
/// A HyperLogLog in its dense representation (`HLL_DENSE_SIZE`).
const HLL_DENSE: u64 = 12_304;

/// TTL limits and the clock, for planning.
#[derive(Debug, Clone, Copy)]
pub struct TtlPolicy {
    pub default_secs: u64,
    pub max_secs: u64,
    /// Milliseconds since the epoch.
    pub now_ms: i64,
}

/// What a write needs for its storage to be paid.
#[derive(Debug, Default)]
pub struct Plan {
    /// `EX <default TTL>` is appended to the command (`SET` without an expiry).
    pub append_default_ttl: bool,
    /// Bookkeeping commands sent right before the command.
    pub before: Vec<Call>,
    /// Bookkeeping commands sent right after the command.
    pub after: Vec<Call>,
    /// The most byte-seconds the write can be charged, for admission; 0 when only the
    /// upstream knows the size (stores, expiry changes).
    pub bound: u64,
    pub rule: After,
}

/// When a `SET` wrote, as its reply tells.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum SetReply {
    /// No `GET`: `OK` when it wrote, nil when `NX`/`XX` kept it from writing (and 0 for
    /// `MSETNX` that wrote nothing).
    #[default]
    Status,
    /// `GET` alone: it always writes; the reply is the old value.
    Get,
    /// `NX GET`: it wrote only when there was no old value (nil).
    NxGet,
    /// `XX GET`: it wrote only when there was an old value.
    XxGet,
}

/// How the byte-seconds are read from the replies.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum After {
    /// Nothing stored.
    #[default]
    None,
    /// A known amount, paid when the write happened.
    Fixed { byte_seconds: u64, reply: SetReply },
    /// Replies before: `[STRLEN]`; after: `[PEXPIRE NX, PTTL, STRLEN]`. A new key pays
    /// name + length for the default TTL, an existing one what it grew by for what is left
    /// of its TTL.
    Strlen { key_len: u64 },
    /// Replies after: `[PEXPIRE NX, PTTL]`; the reply is the counter's new value, `step`
    /// what it moved by (`None` when the argument is not a number: Redis refuses it).
    Counter { key_len: u64, step: Option<i64> },
    /// Replies after: `[PEXPIRE NX, PTTL]`. A new key pays name + data for the default TTL,
    /// an existing one pays data for what is left of its TTL. `units` are the sizes of the
    /// data's elements, largest first, for replies that count what was added.
    Grow {
        key_len: u64,
        units: Vec<u64>,
        written: Written,
    },
    /// Like `Grow`, with the element taken from the command's reply when `element` is None.
    Move { key_len: u64, element: Option<u64> },
    /// Replies before: `[LINDEX]`; after: `[PTTL]`.
    Replace { element: u64 },
    /// Replies before: `[HSTRLEN]`; after: `[PEXPIRE NX, PTTL]`.
    HashIncr { key_len: u64, field_len: u64 },
    /// Replies after: `[PEXPIRE NX, PTTL, MEMORY USAGE]`.
    Store,
    /// Replies before: `[PTTL]`; after: `[PTTL, MEMORY USAGE]`.
    Expire,
    /// Replies after: `[PTTL]` of the new name.
    Rename { growth: u64 },
    /// Replies before: `[XGROUP CREATECONSUMER]`, after: `[PTTL]`, for every stream key.
    Consumer { name_len: u64 },
}

/// Why a write is refused before it runs: the storage it would buy cannot be sold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanError {
    /// An expiry beyond `PKV_MAX_TTL` (`max` seconds).
    TtlTooLong { max: u64 },
    /// An expiry that is not a whole number.
    NotInteger,
    /// Options SET or GETEX does not take.
    Syntax,
}

fn cmd(name: &'static str, key: &[u8]) -> Call {
    Call::named(name).arg_copy(key)
}

fn pexpire_nx(key: &[u8], policy: &TtlPolicy) -> Call {
    cmd("PEXPIRE", key)
        .arg(policy.default_secs.saturating_mul(1000).to_string())
        .arg("NX")
}

/// `MEMORY USAGE key SAMPLES 0`: every element counted. Redis's default samples 5
/// elements of an aggregate and extrapolates, which a tenant can steer (5 tiny members
/// priced for 20 huge ones); counting all is O(n) upstream time, which the tenant pays.
fn memory_usage(key: &[u8]) -> Call {
    cmd("MEMORY", b"USAGE")
        .arg_copy(key)
        .arg("SAMPLES")
        .arg("0")
}

/// Seconds until an expiry given as `value` in `unit`, rounded up; `Err` when unparsable.
fn ttl_secs(unit: TtlUnit, raw: &[u8], now_ms: i64) -> Result<i64, PlanError> {
    let n = parse_int(raw).ok_or(PlanError::NotInteger)?;
    let ms = match unit {
        TtlUnit::Seconds => n.saturating_mul(1000),
        TtlUnit::Millis => n,
        TtlUnit::UnixSeconds => n.saturating_mul(1000).saturating_sub(now_ms),
        TtlUnit::UnixMillis => n.saturating_sub(now_ms),
    };
    Ok(if ms <= 0 {
        0
    } else {
        ms / 1000 + i64::from(ms % 1000 != 0)
    })
}

fn check_max(secs: i64, policy: &TtlPolicy) -> Result<u64, PlanError> {
    let secs = secs.max(0) as u64;
    if secs > policy.max_secs {
        Err(PlanError::TtlTooLong {
            max: policy.max_secs,
        })
    } else {
        Ok(secs)
    }
}

fn len(arg: Option<&Bytes>) -> u64 {
    arg.map_or(0, |a| a.len() as u64)
}

/// A non-negative integer argument, `None` when it is not one (Redis then refuses the
/// command, so nothing is written).
fn offset(arg: Option<&[u8]>) -> Option<u64> {
    arg.and_then(parse_int).and_then(|n| u64::try_from(n).ok())
}

/// The most bytes a string write can grow its key by.
fn most_growth(most: Most, args: &[Bytes]) -> u64 {
    let growth = match most {
        Most::Arg(at) => len(args.get(usize::from(at))),
        Most::Integer => INTEGER_DIGITS,
        Most::Float => FLOAT_DIGITS,
        Most::Range => match (offset(args.get(2).map(|a| a.as_ref())), len(args.get(3))) {
            (_, 0) => 0,
            (Some(at), value) => at.saturating_add(value),
            (None, _) => 0,
        },
        Most::Bit => offset(args.get(2).map(|a| a.as_ref())).map_or(0, |bit| bit / 8 + 1),
        Most::Bitfield => bitfield_end(args),
        Most::Hll => HLL_DENSE,
    };
    growth.min(MAX_STRING)
}

/// The byte after the last bit a `BITFIELD` writes (`SET`/`INCRBY type offset value`, a
/// `#n` offset counting in units of the type's width); the longest string when a
/// subcommand cannot be read, so that admission never reserves less than Redis may write.
fn bitfield_end(args: &[Bytes]) -> u64 {
    let mut end = 0u64;
    let mut i = 2;
    while i < args.len() {
        let word = &args[i];
        if word.eq_ignore_ascii_case(b"GET") {
            i += 3;
        } else if word.eq_ignore_ascii_case(b"OVERFLOW") {
            i += 2;
        } else if word.eq_ignore_ascii_case(b"SET") || word.eq_ignore_ascii_case(b"INCRBY") {
            let width = args
                .get(i + 1)
                .filter(|t| matches!(t.first(), Some(b'i' | b'I' | b'u' | b'U')))
                .and_then(|t| t.get(1..))
                .and_then(parse_int)
                .and_then(|w| u64::try_from(w).ok());
            let at = args.get(i + 2).and_then(|o| match o.strip_prefix(b"#") {
                Some(n) => offset(Some(n)).zip(width).map(|(n, w)| n.saturating_mul(w)),
                None => offset(Some(o)),
            });
            match (width, at) {
                (Some(w), Some(at)) => end = end.max(at.saturating_add(w).div_ceil(8)),
                _ => return MAX_STRING,
            }
            i += 4;
        } else {
            return MAX_STRING;
        }
    }
    end
}

/// Index of the first data argument from `at`, past the option words that lead it.
fn after_options(args: &[Bytes], at: usize, options: &[Opt]) -> usize {
    let mut i = at;
    while let Some(opt) = args.get(i).and_then(|a| {
        options
            .iter()
            .find(|o| a.eq_ignore_ascii_case(o.word.as_bytes()))
    }) {
        i += match opt.takes {
            Takes::Plain(n) => 1 + usize::from(n),
            Takes::Threshold => threshold_len(args, i + 1).unwrap_or(1),
            _ => 2,
        };
    }
    i
}

/// The sizes of a write's data elements (`per` arguments each), largest first.
fn units(data: &[Bytes], per: usize) -> Vec<u64> {
    let mut units: Vec<u64> = data
        .chunks(per.max(1))
        .map(|c| c.iter().map(|a| a.len() as u64).sum())
        .collect();
    units.sort_unstable_by(|a, b| b.cmp(a));
    units
}

/// Plans the storage of one command. `keys` are its located keys (as `key_args` gives
/// them); upstream names are made with `ns`.
pub fn plan(
    spec: &CommandSpec,
    args: &[Bytes],
    keys: &[(usize, ArgRole)],
    ns: &Namespace,
    policy: &TtlPolicy,
) -> Result<Plan, PlanError> {
    if spec.storage == Storage::None {
        // Reads, deletions: nothing to plan, and nothing to allocate on their way.
        return Ok(Plan::default());
    }
    let key_indices: Vec<usize> = keys
        .iter()
        .filter(|(_, r)| *r == ArgRole::Key)
        .map(|(i, _)| *i)
        .collect();
    let upstream = |i: usize| ns.wrap(&args[i]);
    let mut plan = Plan::default();
    match spec.storage {
        Storage::None => {}
        Storage::Set => {
            let options =
                set_options::parse(args, OptionsOf::Set).map_err(|_| PlanError::Syntax)?;
            let (get, nx, xx) = (options.get, options.nx, options.xx);
            let keepttl = options.expiry == Some(Expiry::Keep);
            let ttl = match options.expiry {
                Some(Expiry::In(unit, value)) => {
                    Some(check_max(ttl_secs(unit, value, policy.now_ms)?, policy)?)
                }
                _ => None,
            };
            let (key_len, value_len) = (len(args.get(1)), len(args.get(2)));
            if keepttl {
                strlen_plan(&mut plan, &upstream(1), key_len, value_len, policy);
            } else {
                let secs = match ttl {
                    Some(secs) => secs,
                    None => {
                        plan.append_default_ttl = true;
                        policy.default_secs
                    }
                };
                let byte_seconds = (key_len + value_len).saturating_mul(secs);
                plan.bound = byte_seconds;
                plan.rule = After::Fixed {
                    byte_seconds,
                    reply: match (get, nx, xx) {
                        (false, ..) => SetReply::Status,
                        (true, true, _) => SetReply::NxGet,
                        (true, _, true) => SetReply::XxGet,
                        (true, false, false) => SetReply::Get,
                    },
                };
            }
        }
        Storage::SetEx { millis } => {
            let unit = if millis {
                TtlUnit::Millis
            } else {
                TtlUnit::Seconds
            };
            let secs = check_max(ttl_secs(unit, &args[2], policy.now_ms)?, policy)?;
            let byte_seconds = (len(args.get(1)) + len(args.get(3))).saturating_mul(secs);
            plan.bound = byte_seconds;
            plan.rule = After::Fixed {
                byte_seconds,
                reply: SetReply::Status,
            };
        }
        Storage::Pairs => {
            let bytes: u64 = args[1..].iter().map(|a| a.len() as u64).sum();
            plan.after = key_indices
                .iter()
                .map(|&i| pexpire_nx(&upstream(i), policy))
                .collect();
            let byte_seconds = bytes.saturating_mul(policy.default_secs);
            plan.bound = byte_seconds;
            plan.rule = After::Fixed {
                byte_seconds,
                reply: SetReply::Status,
            };
        }
        Storage::Strlen { most } => {
            let Some(&key) = key_indices.first() else {
                return Ok(plan);
            };
            let growth = most_growth(most, args);
            strlen_plan(
                &mut plan,
                &upstream(key),
                len(args.get(key)),
                growth,
                policy,
            );
        }
        Storage::Counter { step } => {
            let Some(&key) = key_indices.first() else {
                return Ok(plan);
            };
            let by = || args.get(2).and_then(|a| parse_int(a));
            let step = match step {
                Step::Up => Some(1),
                Step::Down => Some(-1),
                Step::UpByArg => by(),
                Step::DownByArg => by().and_then(i64::checked_neg),
            };
            let key_len = len(args.get(key));
            plan.after = vec![
                pexpire_nx(&upstream(key), policy),
                cmd("PTTL", &upstream(key)),
            ];
            plan.bound = (key_len + INTEGER_DIGITS).saturating_mul(policy.max_secs);
            plan.rule = After::Counter { key_len, step };
        }
        Storage::Grow { data, written } => {
            let Some(&key) = key_indices.first() else {
                return Ok(plan);
            };
            let data: &[Bytes] = match data {
                DataArgs::From(at) => args.get(usize::from(at)..).unwrap_or_default(),
                DataArgs::AfterOptions { at, options } => args
                    .get(after_options(args, usize::from(at), options)..)
                    .unwrap_or_default(),
                DataArgs::Only(at) => {
                    let at = usize::from(at);
                    args.get(at..=at).unwrap_or_default()
                }
            };
            let per = match written {
                Written::Counted { per } => usize::from(per),
                Written::All | Written::IfPositive => data.len(),
            };
            let units = units(data, per);
            let key_len = len(args.get(key));
            plan.after = vec![
                pexpire_nx(&upstream(key), policy),
                cmd("PTTL", &upstream(key)),
            ];
            let data_len: u64 = units.iter().sum();
            plan.bound = (key_len + data_len).saturating_mul(policy.max_secs);
            plan.rule = After::Grow {
                key_len,
                units,
                written,
            };
        }
        Storage::Replace => {
            let Some(&key) = key_indices.first() else {
                return Ok(plan);
            };
            let lindex = cmd("LINDEX", &upstream(key)).arg(args[2].clone());
            plan.before = vec![lindex];
            plan.after = vec![cmd("PTTL", &upstream(key))];
            let element = len(args.get(3));
            plan.bound = element.saturating_mul(policy.max_secs);
            plan.rule = After::Replace { element };
        }
        Storage::HashIncr { most } => {
            let Some(&key) = key_indices.first() else {
                return Ok(plan);
            };
            let hstrlen = cmd("HSTRLEN", &upstream(key)).arg(args[2].clone());
            plan.before = vec![hstrlen];
            plan.after = vec![
                pexpire_nx(&upstream(key), policy),
                cmd("PTTL", &upstream(key)),
            ];
            let (key_len, field_len) = (len(args.get(key)), len(args.get(2)));
            plan.bound =
                (key_len + field_len + most_growth(most, args)).saturating_mul(policy.max_secs);
            plan.rule = After::HashIncr { key_len, field_len };
        }
        Storage::Store { dest } => {
            let dest = match dest {
                Dest::First => key_indices.first(),
                Dest::Second => key_indices.get(1),
                Dest::LastStoreOption if key_indices.len() > 1 => key_indices.last(),
                Dest::LastStoreOption => None,
            };
            let Some(&dest) = dest else { return Ok(plan) };
            let d = upstream(dest);
            plan.after = vec![pexpire_nx(&d, policy), cmd("PTTL", &d), memory_usage(&d)];
            plan.rule = After::Store;
        }
        Storage::Move { element } => {
            let Some(&dest) = key_indices.get(1) else {
                return Ok(plan);
            };
            let d = upstream(dest);
            let element = match element {
                Element::Arg3 => Some(len(args.get(3))),
                Element::Reply => None,
            };
            plan.after = vec![pexpire_nx(&d, policy), cmd("PTTL", &d)];
            let key_len = len(args.get(dest));
            plan.bound = element.map_or(0, |e| (key_len + e).saturating_mul(policy.max_secs));
            plan.rule = After::Move { key_len, element };
        }
        Storage::Expire { unit } => {
            check_max(ttl_secs(unit, &args[2], policy.now_ms)?, policy)?;
            expire_plan(&mut plan, &upstream(1));
        }
        Storage::GetEx => {
            match set_options::parse(args, OptionsOf::GetEx)
                .map_err(|_| PlanError::Syntax)?
                .expiry
            {
                // Served as the longest expiry (commands::persist) before it gets here.
                Some(Expiry::Persist) => expire_plan(&mut plan, &upstream(1)),
                Some(Expiry::In(unit, value)) => {
                    check_max(ttl_secs(unit, value, policy.now_ms)?, policy)?;
                    expire_plan(&mut plan, &upstream(1));
                }
                Some(Expiry::Keep) | None => {}
            }
        }
        Storage::Persist => expire_plan(&mut plan, &upstream(1)),
        Storage::Rename => {
            let (Some(&from), Some(&to)) = (key_indices.first(), key_indices.get(1)) else {
                return Ok(plan);
            };
            let growth = len(args.get(to)).saturating_sub(len(args.get(from)));
            plan.after = vec![cmd("PTTL", &upstream(to))];
            plan.bound = growth.saturating_mul(policy.max_secs);
            plan.rule = After::Rename { growth };
        }
        Storage::Consumer { group_option } => {
            let at = if group_option {
                group_consumer(args)
            } else {
                Some(3)
            };
            let (Some(group), Some(consumer)) = (
                at.and_then(|at| args.get(at.checked_sub(1)?)),
                at.and_then(|at| args.get(at)),
            ) else {
                return Ok(plan);
            };
            let name_len = consumer.len() as u64;
            // `XGROUP CREATECONSUMER` answers 1 only when the consumer is new: it is made
            // right before the command, which then finds it, and only a new one is paid
            // (a consumer polling with XREADGROUP pays its name once).
            plan.before = key_indices
                .iter()
                .map(|&k| {
                    cmd("XGROUP", b"CREATECONSUMER")
                        .arg(upstream(k))
                        .arg(group.clone())
                        .arg(consumer.clone())
                })
                .collect();
            plan.after = key_indices
                .iter()
                .map(|&k| cmd("PTTL", &upstream(k)))
                .collect();
            plan.bound = name_len
                .saturating_mul(key_indices.len() as u64)
                .saturating_mul(policy.max_secs);
            plan.rule = After::Consumer { name_len };
        }
    }
    Ok(plan)
}

/// Where `XREADGROUP`'s consumer is: after `GROUP group`, which may come after `COUNT n`,
/// `BLOCK ms` or `NOACK`, as Redis's `xreadCommand` reads its options.
fn group_consumer(args: &[Bytes]) -> Option<usize> {
    let mut i = 1;
    while let Some(word) = args.get(i) {
        if word.eq_ignore_ascii_case(b"GROUP") {
            return Some(i + 2);
        }
        if word.eq_ignore_ascii_case(b"STREAMS") {
            return None;
        }
        i += if word.eq_ignore_ascii_case(b"NOACK") {
            1
        } else {
            2
        };
    }
    None
}

/// A string write measured by `STRLEN` before and after; `growth` is the most it can add.
fn strlen_plan(plan: &mut Plan, key: &[u8], key_len: u64, growth: u64, policy: &TtlPolicy) {
    plan.before = vec![cmd("STRLEN", key)];
    plan.after = vec![
        pexpire_nx(key, policy),
        cmd("PTTL", key),
        cmd("STRLEN", key),
    ];
    plan.bound = (key_len + growth).saturating_mul(policy.max_secs);
    plan.rule = After::Strlen { key_len };
}

fn expire_plan(plan: &mut Plan, key: &[u8]) {
    plan.before = vec![cmd("PTTL", key)];
    plan.after = vec![cmd("PTTL", key), memory_usage(key)];
    plan.rule = After::Expire;
}

fn int(value: Option<&Frame>) -> i64 {
    match value {
        Some(Frame::Integer(n)) => *n,
        _ => 0,
    }
}

/// Whole seconds left of a `PTTL` reply, rounded up; 0 for no key or no TTL.
fn secs_left(pttl: Option<&Frame>) -> u64 {
    let ms = int(pttl);
    if ms <= 0 {
        0
    } else {
        (ms as u64).div_ceil(1000)
    }
}

/// The length of a reply that carries a value: a bulk string's bytes, an integer's digits.
fn reply_len(reply: &Frame) -> u64 {
    match reply {
        Frame::Bulk(b) => b.len() as u64,
        Frame::Integer(n) => n.to_string().len() as u64,
        Frame::Simple(s) => s.len() as u64,
        _ => 0,
    }
}

/// The byte-seconds a write bought, from its reply and its bookkeeping replies.
pub fn byte_seconds(
    rule: &After,
    reply: &Frame,
    before: &[Frame],
    after: &[Frame],
    default_secs: u64,
) -> u64 {
    if let After::Consumer { name_len } = *rule {
        // Made by the bookkeeping before the command, so paid even when the command fails.
        return before
            .iter()
            .zip(after)
            .filter(|(created, _)| matches!(created, Frame::Integer(1)))
            .map(|(_, pttl)| name_len.saturating_mul(secs_left(Some(pttl))))
            .fold(0, u64::saturating_add);
    }
    if matches!(reply, Frame::Error(_)) {
        return 0;
    }
    // `PEXPIRE NX` answers 1 when it gave the key its first TTL: the write created it.
    let created = int(after.first()) == 1;
    match *rule {
        After::None => 0,
        After::Fixed {
            byte_seconds,
            reply: when,
        } => {
            let written = match (when, reply) {
                (SetReply::Status, Frame::Null | Frame::Integer(0)) => false,
                (SetReply::Status | SetReply::Get, _) => true,
                (SetReply::NxGet, Frame::Null) => true,
                (SetReply::NxGet, _) => false,
                (SetReply::XxGet, Frame::Null) => false,
                (SetReply::XxGet, _) => true,
            };
            if written {
                byte_seconds
            } else {
                0
            }
        }
        After::Strlen { key_len } => {
            let (old, new) = (int(before.first()).max(0), int(after.get(2)).max(0));
            if created {
                (key_len + new as u64).saturating_mul(default_secs)
            } else {
                ((new - old).max(0) as u64).saturating_mul(secs_left(after.get(1)))
            }
        }
        After::Counter { key_len, step } => {
            let Frame::Integer(new) = *reply else {
                return 0;
            };
            let digits = |n: i64| n.to_string().len() as u64;
            if created {
                (key_len + digits(new)).saturating_mul(default_secs)
            } else {
                // Redis keeps a counter as canonical decimal, so the old value's length is
                // the length of the reply less the step.
                let old = step.and_then(|s| new.checked_sub(s)).map_or(0, digits);
                digits(new)
                    .saturating_sub(old)
                    .saturating_mul(secs_left(after.get(1)))
            }
        }
        After::Grow {
            key_len,
            ref units,
            written,
        } => {
            let count = match (written, reply) {
                (_, Frame::Null) => 0,
                (Written::All, _) => units.len(),
                (Written::IfPositive, Frame::Integer(n)) if *n > 0 => units.len(),
                (Written::IfPositive, _) => 0,
                (Written::Counted { .. }, Frame::Integer(n)) => (*n).max(0) as usize,
                // `ZADD ... INCR` answers the new score: its one element was written.
                (Written::Counted { .. }, _) => units.len(),
            };
            let data: u64 = units.iter().take(count).sum();
            if count == 0 {
                0
            } else {
                grown(created, key_len, data, after.get(1), default_secs)
            }
        }
        After::Move { key_len, element } => {
            // An empty element moved still makes the destination, whose name is paid.
            let moved = match (element, reply) {
                (Some(e), Frame::Integer(1)) => Some(e),
                (None, Frame::Bulk(b)) => Some(b.len() as u64),
                _ => None,
            };
            moved.map_or(0, |e| {
                grown(created, key_len, e, after.get(1), default_secs)
            })
        }
        After::Replace { element } => {
            let old = match before.first() {
                Some(Frame::Bulk(b)) => b.len() as u64,
                _ => 0,
            };
            element
                .saturating_sub(old)
                .saturating_mul(secs_left(after.first()))
        }
        After::HashIncr { key_len, field_len } => {
            let (old, new) = (int(before.first()).max(0) as u64, reply_len(reply));
            if created {
                (key_len + field_len + new).saturating_mul(default_secs)
            } else if old == 0 {
                // An empty value is not a number, so the increment created the field.
                (field_len + new).saturating_mul(secs_left(after.get(1)))
            } else {
                new.saturating_sub(old)
                    .saturating_mul(secs_left(after.get(1)))
            }
        }
        After::Store => {
            if matches!(reply, Frame::Integer(0)) {
                // Nothing copied or stored (`COPY` onto an existing key, an empty result,
                // which deletes the destination).
                return 0;
            }
            let size = int(after.get(2)).max(0) as u64;
            let secs = if created {
                default_secs
            } else {
                secs_left(after.get(1))
            };
            size.saturating_mul(secs)
        }
        After::Expire => {
            let before_ms = int(before.first()).max(0);
            let after_ms = int(after.first()).max(0);
            let added = (after_ms - before_ms).max(0) as u64;
            let size = int(after.get(1)).max(0) as u64;
            size.saturating_mul(added.div_ceil(1000))
        }
        After::Rename { growth } => {
            if matches!(reply, Frame::Integer(0)) {
                return 0;
            }
            growth.saturating_mul(secs_left(after.first()))
        }
        After::Consumer { .. } => 0,
    }
}

fn grown(
    created: bool,
    key_len: u64,
    data_len: u64,
    pttl: Option<&Frame>,
    default_secs: u64,
) -> u64 {
    if created {
        (key_len + data_len).saturating_mul(default_secs)
    } else {
        data_len.saturating_mul(secs_left(pttl))
    }
}

/// One line per storage rule, for `docs/metering.md`.
pub fn describe(storage: Storage) -> &'static str {
    match storage {
        Storage::None => "stores nothing new",
        Storage::Set => "key + value for the TTL of its EX/PX/EXAT/PXAT option, else the default TTL (added as EX); nothing when NX/XX kept it from setting; with KEEPTTL as a string write",
        Storage::SetEx { .. } => "key + value for the TTL given",
        Storage::Pairs => "every key + value for the default TTL (given with PEXPIRE NX); MSETNX that sets nothing pays nothing",
        Storage::Strlen { most } => match most {
            Most::Arg(_) => "string write (STRLEN before and after): a new key, or one the write left without a TTL (GETSET), pays key + length for the default TTL; an existing key pays what it grew by for its remaining TTL",
            Most::Integer | Most::Float => "string write (STRLEN before and after): a new key pays key + the stored number for the default TTL; an existing key pays what the number grew by for its remaining TTL",
            Most::Range | Most::Bit | Most::Bitfield => "string write at an offset (STRLEN before and after): pays the bytes the key grows by, up to the offset written (key + length for the default TTL when new, growth for the remaining TTL otherwise); admission reserves offset + width for the maximum TTL",
            Most::Hll => "string write (STRLEN before and after): pays what the HyperLogLog grows by (up to its 12,304-byte dense form)",
        },
        Storage::Counter { .. } => "a new key pays key + the digits of the reply for the default TTL; an existing key pays what the digits grew by (reply less the step) for its remaining TTL",
        Storage::Grow { written, .. } => match written {
            Written::All => "grow: a new key pays key + data for the default TTL; an existing key pays the data for its remaining TTL",
            Written::IfPositive => "grow, when the reply is positive (nothing otherwise): a new key pays key + data for the default TTL; an existing key pays the data for its remaining TTL",
            Written::Counted { .. } => "grow by the new elements the reply counts (the largest that many): a new key pays key + data for the default TTL; an existing key pays them for its remaining TTL",
        },
        Storage::Replace => "what the element is longer than the one it replaces (LINDEX before), for the key's remaining TTL",
        Storage::HashIncr { .. } => "the field + the number stored (a new field), or what the number grew by, for the key's remaining TTL (key + field + number for the default TTL when new)",
        Storage::Store { .. } => "the stored size (MEMORY USAGE ... SAMPLES 0) for the default TTL, or the TTL the destination kept; nothing when the reply is 0",
        Storage::Move { .. } => "grow of the destination by the moved element",
        Storage::Expire { .. } => "the key's size (MEMORY USAGE ... SAMPLES 0) for the seconds added; refused above the maximum TTL",
        Storage::GetEx => "with an expiry option, as EXPIRE; PERSIST as PERSIST does",
        Storage::Persist => "as PEXPIRE to the maximum TTL: the key's size for the seconds added",
        Storage::Rename => "what the new name is longer than the old one, for the key's remaining TTL",
        Storage::Consumer { .. } => "a new consumer's name (XGROUP CREATECONSUMER before it says whether it is new), for the remaining TTL of each stream key",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_secs(TtlUnit::Millis, b"1", 0), Ok(1));
        assert_eq!(ttl_secs(TtlUnit::Millis, b"1000", 0), Ok(1));
        assert_eq!(ttl_secs(TtlUnit::Millis, b"1001", 0), Ok(2));
        assert_eq!(ttl_secs(TtlUnit::UnixSeconds, b"100", 40_000), Ok(60));
        assert_eq!(ttl_secs(TtlUnit::Seconds, b"-5", 0), Ok(0));
        assert!(ttl_secs(TtlUnit::Seconds, b"x", 0).is_err());
    }

    #[test]
    fn grow_pays_new_keys_in_full_and_old_keys_for_what_is_left() {
        let rule = After::Grow {
            key_len: 3,
            units: vec![10],
            written: Written::All,
        };
        let ok = Frame::Integer(1);
        assert_eq!(
            byte_seconds(
                &rule,
                &ok,
                &[],
                &[Frame::Integer(1), Frame::Integer(86_400_000)],
                86_400
            ),
            13 * 86_400
        );
        assert_eq!(
            byte_seconds(
                &rule,
                &ok,
                &[],
                &[Frame::Integer(0), Frame::Integer(1_500)],
                86_400
            ),
            10 * 2
        );
        assert_eq!(
            byte_seconds(
                &rule,
                &ok,
                &[],
                &[Frame::Integer(0), Frame::Integer(-2)],
                86_400
            ),
            0
        );
    }

    #[test]
    fn set_nx_that_did_not_set_pays_nothing() {
        let rule = After::Fixed {
            byte_seconds: 100,
            reply: SetReply::Status,
        };
        assert_eq!(byte_seconds(&rule, &Frame::Null, &[], &[], 1), 0);
        assert_eq!(byte_seconds(&rule, &Frame::OK, &[], &[], 1), 100);
        let with_get = After::Fixed {
            byte_seconds: 100,
            reply: SetReply::Get,
        };
        assert_eq!(byte_seconds(&with_get, &Frame::Null, &[], &[], 1), 100);
        let nx_get = After::Fixed {
            byte_seconds: 100,
            reply: SetReply::NxGet,
        };
        let old = Frame::bulk(&b"old"[..]);
        assert_eq!(byte_seconds(&nx_get, &old, &[], &[], 1), 0);
        assert_eq!(byte_seconds(&nx_get, &Frame::Null, &[], &[], 1), 100);
        let xx_get = After::Fixed {
            byte_seconds: 100,
            reply: SetReply::XxGet,
        };
        assert_eq!(byte_seconds(&xx_get, &Frame::Null, &[], &[], 1), 0);
        assert_eq!(byte_seconds(&xx_get, &old, &[], &[], 1), 100);
    }

    #[test]
    fn extending_a_ttl_pays_the_added_seconds() {
        let before = [Frame::Integer(10_000)];
        let after = [Frame::Integer(70_000), Frame::Integer(50)];
        assert_eq!(
            byte_seconds(&After::Expire, &Frame::Integer(1), &before, &after, 1),
            50 * 60
        );
        let shorter = [Frame::Integer(5_000), Frame::Integer(50)];
        assert_eq!(
            byte_seconds(&After::Expire, &Frame::Integer(1), &before, &shorter, 1),
            0
        );
    }

    #[test]
    fn offset_writes_are_bounded_by_what_they_can_reach() {
        let args = |line: &str| -> Vec<Bytes> {
            line.split(' ')
                .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                .collect()
        };
        let most = |m, line| most_growth(m, &args(line));
        assert_eq!(most(Most::Range, "SETRANGE k 100 xyz"), 103);
        assert_eq!(most(Most::Range, "SETRANGE k -1 xyz"), 0);
        assert_eq!(most(Most::Bit, "SETBIT k 80 1"), 11);
        assert_eq!(most(Most::Bit, "SETBIT k 99999999999 1"), MAX_STRING);
        assert_eq!(
            most(
                Most::Bitfield,
                "BITFIELD k GET u8 0 SET u8 #10 1 INCRBY i5 100 1"
            ),
            14
        );
        assert_eq!(most(Most::Bitfield, "BITFIELD k GET u8 0"), 0);
        assert_eq!(most(Most::Bitfield, "BITFIELD k SET x8 0 1"), MAX_STRING);
        assert_eq!(
            most(Most::Bitfield, "BITFIELD k OVERFLOW SAT SET u8 #1 1"),
            2
        );
    }

    #[test]
    fn option_words_are_not_data() {
        let args: Vec<Bytes> = [
            "XADD", "k", "MAXLEN", "~", "10", "LIMIT", "5", "*", "f", "v",
        ]
        .iter()
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect();
        let opts = [
            Opt {
                word: "MAXLEN",
                takes: Takes::Threshold,
            },
            Opt {
                word: "LIMIT",
                takes: Takes::Plain(1),
            },
        ];
        assert_eq!(after_options(&args, 2, &opts), 7);
        assert_eq!(units(&args[7..], 1), vec![1, 1, 1]);
        assert_eq!(units(&args[5..], 2), vec![6, 2, 1]);
    }

    #[test]
    fn counters_pay_the_digits_they_grow_by() {
        let rule = After::Counter {
            key_len: 1,
            step: Some(1),
        };
        let existing = [Frame::Integer(0), Frame::Integer(10_000)];
        assert_eq!(
            byte_seconds(&rule, &Frame::Integer(100), &[], &existing, 7),
            10
        );
        assert_eq!(
            byte_seconds(&rule, &Frame::Integer(99), &[], &existing, 7),
            0
        );
        let created = [Frame::Integer(1), Frame::Integer(7_000)];
        assert_eq!(
            byte_seconds(&rule, &Frame::Integer(1), &[], &created, 7),
            14
        );
        let down = After::Counter {
            key_len: 1,
            step: Some(-5),
        };
        assert_eq!(
            byte_seconds(&down, &Frame::Integer(-1), &[], &existing, 7),
            10
        );
    }

    #[test]
    fn counted_replies_pay_the_largest_elements() {
        let rule = After::Grow {
            key_len: 1,
            units: vec![5, 3, 1],
            written: Written::Counted { per: 1 },
        };
        let after = [Frame::Integer(0), Frame::Integer(10_000)];
        assert_eq!(byte_seconds(&rule, &Frame::Integer(0), &[], &after, 1), 0);
        assert_eq!(byte_seconds(&rule, &Frame::Integer(2), &[], &after, 1), 80);
    }
}
