//! Stream commands, as Redis 7.0 answers them: XADD, XLEN, XRANGE, XREVRANGE, XDEL, XTRIM,
//! XSETID, XREAD, and consumer groups (XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM,
//! XAUTOCLAIM, XINFO) on [`crate::embedded::stream::Stream`].
//!
//! XREAD and XREADGROUP block through the store's machinery ([`Error::Block`]): they are
//! run again after each write to one of their keys. A blocked XREAD's `$` is pinned to the
//! stream's last ID when it first blocks ([`pin_last_ids`]), as Redis does.

use super::{arity_error, bulk, int, is, ok, wrongtype, Command, Cx, Error, Reply, StoreError};
use crate::embedded::data::{Data, Entry};
use crate::embedded::error::StreamError as X;
use crate::embedded::stream::{Consumer, Fields, Group, Pending, Stream, StreamId, Trim};
use crate::protocol::frame::Frame;

pub const COMMANDS: &[Command] = &[
    Command {
        name: "XADD",
        run: xadd,
    },
    Command {
        name: "XLEN",
        run: xlen,
    },
    Command {
        name: "XRANGE",
        run: xrange,
    },
    Command {
        name: "XREVRANGE",
        run: xrevrange,
    },
    Command {
        name: "XDEL",
        run: xdel,
    },
    Command {
        name: "XTRIM",
        run: xtrim,
    },
    Command {
        name: "XSETID",
        run: xsetid,
    },
    Command {
        name: "XREAD",
        run: xread,
    },
    Command {
        name: "XREADGROUP",
        run: xreadgroup,
    },
    Command {
        name: "XGROUP",
        run: xgroup,
    },
    Command {
        name: "XACK",
        run: xack,
    },
    Command {
        name: "XPENDING",
        run: xpending,
    },
    Command {
        name: "XCLAIM",
        run: xclaim,
    },
    Command {
        name: "XAUTOCLAIM",
        run: xautoclaim,
    },
    Command {
        name: "XINFO",
        run: xinfo,
    },
];

/// The most a reply preallocates, whatever count the client asks for.
const PREALLOC: usize = 1024;

impl From<X> for Error {
    fn from(err: X) -> Self {
        Error::Store(StoreError::Stream(err))
    }
}

// === parsing ===

/// An unsigned number as Redis's `string2ull` reads it.
fn parse_u64(raw: &[u8]) -> Option<u64> {
    if let Some(n) = crate::redis_num::parse_int(raw) {
        return u64::try_from(n).ok();
    }
    // Then as `strtoull` reads it: leading white space and a `+` are fine.
    let start = raw.iter().position(|b| !b" \t\n\r\x0b\x0c".contains(b))?;
    let raw = &raw[start..];
    let digits = raw.strip_prefix(b"+").unwrap_or(raw);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// An ID as Redis's `streamGenericParseIDOrReply` reads it. `strict` refuses `-` and `+`;
/// a missing sequence is `missing_seq`; `star` accepts `ms-*` (XADD), which returns
/// `seq_given` false.
fn parse_id(
    raw: &[u8],
    strict: bool,
    missing_seq: u64,
    star: bool,
) -> Result<(StreamId, bool), Error> {
    if raw.len() > 127 {
        return Err(X::InvalidId.into());
    }
    match raw {
        b"-" | b"+" if strict => return Err(X::InvalidId.into()),
        b"-" => return Ok((StreamId::MIN, true)),
        b"+" => return Ok((StreamId::MAX, true)),
        _ => {}
    }
    let (ms, seq) = match raw.iter().position(|&b| b == b'-') {
        Some(dash) => (&raw[..dash], Some(&raw[dash + 1..])),
        None => (raw, None),
    };
    let ms = parse_u64(ms).ok_or(X::InvalidId)?;
    match seq {
        Some(b"*") if star => Ok((StreamId::new(ms, 0), false)),
        Some(seq) => Ok((StreamId::new(ms, parse_u64(seq).ok_or(X::InvalidId)?), true)),
        None => Ok((StreamId::new(ms, missing_seq), true)),
    }
}

fn strict_id(raw: &[u8]) -> Result<StreamId, Error> {
    parse_id(raw, true, 0, false).map(|(id, _)| id)
}

/// A range end: `(` makes it exclusive (then strict); `None` when the range is empty.
fn interval(raw: &[u8], missing_seq: u64, start: bool) -> Result<StreamId, Error> {
    if raw.len() > 1 && raw[0] == b'(' {
        let id = strict_id_with(&raw[1..], missing_seq)?;
        let moved = if start { id.next() } else { id.prev() };
        return moved.ok_or_else(|| {
            if start {
                X::InvalidStart.into()
            } else {
                X::InvalidEnd.into()
            }
        });
    }
    parse_id(raw, false, missing_seq, false).map(|(id, _)| id)
}

fn strict_id_with(raw: &[u8], missing_seq: u64) -> Result<StreamId, Error> {
    parse_id(raw, true, missing_seq, false).map(|(id, _)| id)
}

/// A signed whole number, or Redis's integer error.
fn long(raw: &[u8]) -> Result<i64, Error> {
    super::int_arg(raw)
}

/// A signed whole number, or `what`'s error (XCLAIM's words).
fn long_or(raw: &[u8], what: &'static str) -> Result<i64, Error> {
    crate::redis_num::parse_int(raw).ok_or_else(|| X::InvalidNumber { what }.into())
}

fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

// === replies ===

fn id_frame(id: StreamId) -> Frame {
    bulk(id.text())
}

fn entry_frame(id: StreamId, fields: &Fields) -> Frame {
    let mut flat = Vec::with_capacity(fields.len() * 2);
    for (f, v) in fields {
        flat.push(bulk(f.clone()));
        flat.push(bulk(v.clone()));
    }
    Frame::Array(vec![id_frame(id), Frame::Array(flat)])
}

/// A map in RESP3, a flat array of pairs in RESP2.
fn map(cx: &Cx, pairs: Vec<(&'static str, Frame)>) -> Frame {
    if cx.resp3() {
        Frame::Map(pairs.into_iter().map(|(k, v)| (bulk(k), v)).collect())
    } else {
        Frame::Array(pairs.into_iter().flat_map(|(k, v)| [bulk(k), v]).collect())
    }
}

fn opt_int(n: Option<u64>) -> Frame {
    n.map_or(Frame::Null, |n| Frame::Integer(n as i64))
}

/// The stream in an entry, or the wrong-type error.
fn stream_of(entry: &Entry) -> Result<&Stream, Error> {
    match &entry.data {
        Data::Stream(s) => Ok(s),
        _ => wrongtype(),
    }
}

fn stream_of_mut(entry: &mut Entry) -> Result<&mut Stream, Error> {
    match &mut entry.data {
        Data::Stream(s) => Ok(s),
        _ => wrongtype(),
    }
}

// === XADD, XTRIM ===

/// What XADD and XTRIM share: the trimming options.
struct TrimArgs {
    strategy: Option<Trim>,
    approx: bool,
    limit: u64,
    nomkstream: bool,
    /// XADD's ID, and whether its sequence was given; `None` for `*`.
    id: Option<(StreamId, bool)>,
    /// Where XADD's fields start.
    next: usize,
}

/// Where an `XADD`'s ID argument is (`*` or an ID), when its options parse: the
/// append-only log replaces it with the ID the stream took.
pub fn xadd_id_position(args: &[&[u8]]) -> Option<usize> {
    let next = trim_args(args, true).ok()?.next;
    (next > 2 && next <= args.len()).then(|| next - 1)
}

/// Redis's `streamParseAddOrTrimArgsOrReply`.
fn trim_args(args: &[&[u8]], xadd: bool) -> Result<TrimArgs, Error> {
    let mut out = TrimArgs {
        strategy: None,
        approx: false,
        limit: 0,
        nomkstream: false,
        id: None,
        next: args.len(),
    };
    let mut limit_given = false;
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let opt = args[i];
        if xadd && opt == b"*" {
            out.next = i + 1;
            break;
        } else if (is(opt, "MAXLEN") || is(opt, "MINID")) && more > 0 {
            if out.strategy.is_some() {
                return Err(X::MaxlenAndMinid.into());
            }
            out.approx = false;
            let next = args[i + 1];
            if more >= 2 && next == b"~" {
                out.approx = true;
                i += 1;
            } else if more >= 2 && next == b"=" {
                i += 1;
            }
            let value = args[i + 1];
            out.strategy = Some(if is(opt, "MAXLEN") {
                let n = long(value)?;
                if n < 0 {
                    return Err(X::MaxlenNegative.into());
                }
                Trim::MaxLen(n as u64)
            } else {
                Trim::MinId(strict_id(value)?)
            });
            i += 2;
        } else if is(opt, "LIMIT") && more > 0 {
            let n = long(args[i + 1])?;
            if n < 0 {
                return Err(X::LimitNegative.into());
            }
            out.limit = n as u64;
            limit_given = true;
            i += 2;
        } else if xadd && is(opt, "NOMKSTREAM") {
            out.nomkstream = true;
            i += 1;
        } else if xadd {
            out.id = Some(parse_id(opt, true, 0, true)?);
            out.next = i + 1;
            break;
        } else {
            return Err(StoreError::Syntax.into());
        }
    }
    if out.limit > 0 && out.strategy.is_none() {
        return Err(X::LimitWithoutStrategy.into());
    }
    if !xadd && out.strategy.is_none() {
        return Err(X::TrimWithoutStrategy.into());
    }
    if limit_given {
        if !out.approx {
            return Err(X::LimitWithoutApprox.into());
        }
    } else if out.approx {
        // 100 × stream-node-max-entries, as Redis sets it.
        out.limit = 10_000;
    } else {
        out.limit = 0;
    }
    Ok(out)
}

/// `XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]] *|id field value
/// [field value ...]`
fn xadd(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let parsed = trim_args(args, true)?;
    let fields_at = parsed.next;
    let rest = args.len().saturating_sub(fields_at);
    if fields_at > args.len() || rest < 2 || rest % 2 == 1 {
        return Err(arity_error("xadd"));
    }
    if let Some((id, true)) = parsed.id {
        if id.is_zero() {
            return Err(X::AddIdZero.into());
        }
    }
    let now = cx.now;
    cx.write(args[1], |slot| {
        if slot.is_none() {
            if parsed.nomkstream {
                return Ok(Frame::Null);
            }
            *slot = Some(Entry::new(Data::Stream(Box::default())));
        }
        let Some(entry) = slot.as_mut() else {
            return Ok(Frame::Null);
        };
        let s = stream_of_mut(entry)?;
        if s.last_id == StreamId::MAX {
            return Err(X::Exhausted.into());
        }
        let id = match parsed.id {
            Some((id, true)) => id,
            Some((id, false)) if id.ms == s.last_id.ms => s
                .last_id
                .next()
                .filter(|n| n.ms == id.ms)
                .ok_or(X::AddIdTooSmall)?,
            Some((id, false)) => id,
            None => {
                let ms = u64::try_from(now).unwrap_or(0);
                if ms > s.last_id.ms {
                    StreamId::new(ms, 0)
                } else {
                    s.last_id.next().ok_or(X::Exhausted)?
                }
            }
        };
        if id <= s.last_id {
            return Err(X::AddIdTooSmall.into());
        }
        let fields = args[fields_at..]
            .chunks_exact(2)
            .map(|p| (p[0].to_vec(), p[1].to_vec()))
            .collect();
        s.append(id, fields);
        if let Some(strategy) = parsed.strategy {
            s.trim(strategy, parsed.approx, parsed.limit);
        }
        Ok(id_frame(id))
    })
}

/// `XTRIM key MAXLEN|MINID [=|~] threshold [LIMIT count]`
fn xtrim(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let parsed = trim_args(args, false)?;
    let Some(strategy) = parsed.strategy else {
        return Err(X::TrimWithoutStrategy.into());
    };
    cx.write(args[1], |slot| {
        let Some(entry) = slot.as_mut() else {
            return int(0);
        };
        let s = stream_of_mut(entry)?;
        int(s.trim(strategy, parsed.approx, parsed.limit) as i64)
    })
}

/// `XLEN key`
fn xlen(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.read(args[1], |entry| match entry {
        None => int(0),
        Some(e) => int(stream_of(e)?.len() as i64),
    })
}

/// Every argument as an exact entry ID.
fn strict_ids(raw: &[&[u8]]) -> Result<Vec<StreamId>, Error> {
    raw.iter().map(|r| strict_id(r)).collect()
}

/// `XDEL key id [id ...]`
fn xdel(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let ids = strict_ids(&args[2..])?;
    cx.write(args[1], |slot| {
        let Some(entry) = slot.as_mut() else {
            return int(0);
        };
        let s = stream_of_mut(entry)?;
        int(ids.iter().filter(|id| s.delete(**id)).count() as i64)
    })
}

// === XRANGE ===

fn xrange(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    range(cx, args, false)
}

fn xrevrange(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    range(cx, args, true)
}

/// `XRANGE key start end [COUNT count]`, and XREVRANGE with the ends swapped.
fn range(cx: &mut Cx, args: &[&[u8]], rev: bool) -> Reply {
    let (start_raw, end_raw) = if rev {
        (args[3], args[2])
    } else {
        (args[2], args[3])
    };
    let start = interval(start_raw, 0, true)?;
    let end = interval(end_raw, u64::MAX, false)?;
    let mut count = None;
    let mut i = 4;
    while i < args.len() {
        if is(args[i], "COUNT") && i + 1 < args.len() {
            count = Some(long(args[i + 1])?.max(0) as usize);
            i += 2;
        } else {
            return Err(StoreError::Syntax.into());
        }
    }
    cx.read(args[1], |entry| {
        let Some(entry) = entry else {
            return Ok(Frame::Array(Vec::new()));
        };
        let s = stream_of(entry)?;
        // COUNT 0 answers the null array, once the key is known to be a stream.
        if count == Some(0) {
            return Ok(Frame::NullArray);
        }
        let count = count.unwrap_or(usize::MAX);
        if start > end {
            return Ok(Frame::Array(Vec::new()));
        }
        let items = s.entries.range(start..=end);
        let out: Vec<Frame> = if rev {
            items
                .rev()
                .take(count)
                .map(|(id, f)| entry_frame(*id, f))
                .collect()
        } else {
            items
                .take(count)
                .map(|(id, f)| entry_frame(*id, f))
                .collect()
        };
        Ok(Frame::Array(out))
    })
}

// === XSETID ===

/// `XSETID key last-id [ENTRIESADDED entries-added] [MAXDELETEDID max-deleted-id]`
fn xsetid(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let id = strict_id(args[2])?;
    let mut entries_added = None;
    let mut max_deleted = StreamId::MIN;
    let mut i = 3;
    while i < args.len() {
        let more = i + 1 < args.len();
        if is(args[i], "ENTRIESADDED") && more {
            let n = long(args[i + 1])?;
            if n < 0 {
                return Err(X::EntriesAddedNegative.into());
            }
            entries_added = Some(n as u64);
        } else if is(args[i], "MAXDELETEDID") && more {
            max_deleted = strict_id(args[i + 1])?;
            if id < max_deleted {
                return Err(X::SetIdBelowGivenMaxDeleted.into());
            }
        } else {
            return Err(StoreError::Syntax.into());
        }
        i += 2;
    }
    cx.write(args[1], |slot| {
        let Some(entry) = slot.as_mut() else {
            return Err(StoreError::NoSuchKey.into());
        };
        let s = stream_of_mut(entry)?;
        if let Some(top) = s.entries.keys().next_back() {
            if id < *top {
                return Err(X::SetIdBelowTop.into());
            }
            if entries_added.is_some_and(|n| n < s.len() as u64) {
                return Err(X::EntriesAddedBelowLength.into());
            }
        }
        s.last_id = id;
        if let Some(n) = entries_added {
            s.entries_added = n;
        }
        if !max_deleted.is_zero() {
            s.max_deleted = max_deleted;
        }
        ok()
    })
}

// === XREAD, XREADGROUP ===

/// XREAD's and XREADGROUP's options.
struct ReadArgs<'a> {
    count: usize,
    block: Option<u64>,
    group: Option<(&'a [u8], &'a [u8])>,
    noack: bool,
    keys: &'a [&'a [u8]],
    ids: &'a [&'a [u8]],
}

fn read_args<'a>(args: &'a [&'a [u8]], xreadgroup: bool) -> Result<ReadArgs<'a>, Error> {
    let mut out = ReadArgs {
        count: 0,
        block: None,
        group: None,
        noack: false,
        keys: &[],
        ids: &[],
    };
    let mut streams = None;
    let mut i = 1;
    while i < args.len() {
        let more = args.len() - i - 1;
        let o = args[i];
        if is(o, "BLOCK") && more > 0 {
            let t = crate::redis_num::parse_timeout(
                args[i + 1],
                crate::redis_num::TimeoutUnit::Millis,
            )?;
            out.block = Some(t.millis());
            i += 2;
        } else if is(o, "COUNT") && more > 0 {
            out.count = long(args[i + 1])?.max(0) as usize;
            i += 2;
        } else if is(o, "STREAMS") && more > 0 {
            let rest = &args[i + 1..];
            if !rest.len().is_multiple_of(2) {
                return Err(StoreError::Syntax.into());
            }
            streams = Some(rest.split_at(rest.len() / 2));
            break;
        } else if is(o, "GROUP") && more >= 2 {
            if !xreadgroup {
                return Err(X::GroupInXread.into());
            }
            out.group = Some((args[i + 1], args[i + 2]));
            i += 3;
        } else if is(o, "NOACK") {
            if !xreadgroup {
                return Err(X::NoackInXread.into());
            }
            out.noack = true;
            i += 1;
        } else {
            return Err(StoreError::Syntax.into());
        }
    }
    let Some((keys, ids)) = streams else {
        return Err(StoreError::Syntax.into());
    };
    if xreadgroup && out.group.is_none() {
        return Err(X::MissingGroup.into());
    }
    out.keys = keys;
    out.ids = ids;
    Ok(out)
}

/// What a read asks of one stream.
#[derive(Clone, Copy)]
enum Start {
    /// Entries after this ID.
    After(StreamId),
    /// New entries for the group (`>`).
    New,
}

fn xread(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read(cx, args, false)
}

fn xreadgroup(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read(cx, args, true)
}

fn read(cx: &mut Cx, args: &[&[u8]], xreadgroup: bool) -> Reply {
    let a = read_args(args, xreadgroup)?;
    // Resolve every ID first, as Redis does, so that errors come before any effect.
    let mut from = Vec::with_capacity(a.keys.len());
    for (key, raw) in a.keys.iter().zip(a.ids) {
        let last = cx.read(key, |entry| -> Result<Option<StreamId>, Error> {
            match entry {
                None => Ok(None),
                Some(e) => {
                    let s = stream_of(e)?;
                    if let Some((group, _)) = a.group {
                        if !s.groups.contains_key(group) {
                            return Ok(None);
                        }
                    }
                    Ok(Some(s.last_id))
                }
            }
        })?;
        if let Some((group, _)) = a.group {
            if last.is_none() {
                return Err(X::NoKeyOrGroup {
                    key: lossy(key),
                    group: lossy(group),
                    suffix: " in XREADGROUP with GROUP option",
                }
                .into());
            }
        }
        from.push(match *raw {
            b"$" if xreadgroup => return Err(X::DollarInXreadgroup.into()),
            b"$" => Start::After(last.unwrap_or_default()),
            b">" if !xreadgroup => return Err(X::GreaterInXread.into()),
            b">" => Start::New,
            raw => Start::After(strict_id(raw)?),
        });
    }
    let count = if a.count == 0 { usize::MAX } else { a.count };
    let mut served = Vec::new();
    for (key, from) in a.keys.iter().zip(from) {
        let reply = match a.group {
            None => cx.read(key, |entry| -> Result<Option<Frame>, Error> {
                let Some(entry) = entry else { return Ok(None) };
                let s = stream_of(entry)?;
                let Start::After(after) = from else {
                    return Ok(None);
                };
                let Some(start) = after.next() else {
                    return Ok(None);
                };
                let items: Vec<Frame> = s
                    .entries
                    .range(start..)
                    .take(count)
                    .map(|(id, f)| entry_frame(*id, f))
                    .collect();
                Ok((!items.is_empty()).then_some(Frame::Array(items)))
            })?,
            Some((group, consumer)) => {
                let now = cx.now;
                cx.write(key, |slot| -> Result<Option<Frame>, Error> {
                    let Some(entry) = slot.as_mut() else {
                        return Ok(None);
                    };
                    let s = stream_of_mut(entry)?;
                    Ok(group_read(s, group, consumer, from, count, a.noack, now))
                })?
            }
        };
        if let Some(items) = reply {
            served.push((bulk(key.to_vec()), items));
        }
    }
    if !served.is_empty() {
        return Ok(if cx.resp3() {
            Frame::Map(served)
        } else {
            Frame::Array(
                served
                    .into_iter()
                    .map(|(k, v)| Frame::Array(vec![k, v]))
                    .collect(),
            )
        });
    }
    match a.block {
        Some(timeout_ms) => Err(Error::Block { timeout_ms }),
        None => Ok(Frame::NullArray),
    }
}

/// One stream's part of XREADGROUP: the consumer's history from an ID, or new entries
/// (which the group then delivers to the consumer). `None`: nothing to serve now.
fn group_read(
    s: &mut Stream,
    group: &[u8],
    consumer: &[u8],
    from: Start,
    count: usize,
    noack: bool,
    now: i64,
) -> Option<Frame> {
    let entries_added = s.entries_added;
    let stream_last = s.entries.keys().next_back().copied();
    let g_last = s.groups.get(group)?.last_id;
    let start = match from {
        Start::After(id) => Some(id),
        Start::New => match stream_last {
            Some(max) if max > g_last => Some(g_last),
            _ => None,
        },
    };
    let history = matches!(from, Start::After(_));
    let start = start?;
    // The consumer exists from its first served read on (Redis 7.0 creates it there).
    let g = s.groups.get_mut(group)?;
    let c = g
        .consumers
        .entry(consumer.to_vec())
        .or_insert_with(Consumer::default);
    c.seen_at = now;
    let start = start.next()?;
    if history {
        let ids: Vec<StreamId> = c.pel.range(start..).take(count).copied().collect();
        let mut out = Vec::with_capacity(ids.len().min(PREALLOC));
        for id in ids {
            if let Some(p) = g.pel.get_mut(&id) {
                p.delivered_at = now;
                p.deliveries += 1;
            }
            out.push(match s.entries.get(&id) {
                Some(f) => entry_frame(id, f),
                None => Frame::Array(vec![id_frame(id), Frame::NullArray]),
            });
        }
        return Some(Frame::Array(out));
    }
    let ids: Vec<StreamId> = s
        .entries
        .range(start..)
        .take(count)
        .map(|(id, _)| *id)
        .collect();
    let mut out = Vec::with_capacity(ids.len().min(PREALLOC));
    for id in ids {
        let tombs = s.has_tombstones_from(id);
        let estimate = s.entries_up_to(id);
        let g = s.groups.get_mut(group)?;
        if id > g.last_id {
            match g.entries_read {
                Some(read) if !tombs => g.entries_read = Some(read + 1),
                _ if entries_added > 0 => g.entries_read = estimate,
                _ => {}
            }
            g.last_id = id;
        }
        if !noack {
            if let Some(old) = g.pel.get(&id).map(|p| p.consumer.clone()) {
                if let Some(oc) = g.consumers.get_mut(&old) {
                    oc.pel.remove(&id);
                }
            }
            g.pel.insert(
                id,
                Pending {
                    consumer: consumer.to_vec(),
                    delivered_at: now,
                    deliveries: 1,
                },
            );
            if let Some(c) = g.consumers.get_mut(consumer) {
                c.pel.insert(id);
            }
        }
        if let Some(f) = s.entries.get(&id) {
            out.push(entry_frame(id, f));
        }
    }
    Some(Frame::Array(out))
}

/// A blocking XREAD's arguments with each `$` replaced by its stream's last ID now, so
/// that running it again after a write serves what came after the command, not after the
/// write; `None` when there is nothing to replace.
pub fn pin_last_ids(cx: &Cx, args: &[&[u8]]) -> Option<Vec<Vec<u8>>> {
    if !args.first().is_some_and(|n| is(n, "XREAD")) {
        return None;
    }
    let a = read_args(args, false).ok()?;
    if a.block.is_none() || !a.ids.iter().any(|id| *id == b"$") {
        return None;
    }
    let head = args.len() - a.ids.len();
    let mut out: Vec<Vec<u8>> = args[..head].iter().map(|a| a.to_vec()).collect();
    for (key, raw) in a.keys.iter().zip(a.ids) {
        if *raw != b"$" {
            out.push(raw.to_vec());
            continue;
        }
        let last = cx.read(key, |entry| match entry.map(|e| &e.data) {
            None => Some(StreamId::MIN),
            Some(Data::Stream(s)) => Some(s.last_id),
            // Left as is, so that the command answers the type error.
            Some(_) => None,
        });
        out.push(last.map_or_else(|| raw.to_vec(), |id| id.text().into_bytes()));
    }
    Some(out)
}

/// What a blocked XREAD or XREADGROUP does when a write to one of its keys wakes it.
pub enum Wake {
    /// Run the command again.
    Run,
    /// Keep waiting (XREAD whose key now holds another type: Redis serves only streams).
    Wait,
    /// Answer this error (XREADGROUP whose stream was deleted or replaced).
    Fail(Error),
}

/// What Redis 7.0 does with a blocked stream read whose key was written: XREADGROUP ends
/// with `-UNBLOCKED` once a key no longer holds a stream; XREAD waits on.
pub fn on_wake(cx: &Cx, args: &[&[u8]]) -> Wake {
    let Some(name) = args.first() else {
        return Wake::Run;
    };
    let group = is(name, "XREADGROUP");
    if !group && !is(name, "XREAD") {
        return Wake::Run;
    }
    let Ok(a) = read_args(args, group) else {
        return Wake::Run;
    };
    for key in a.keys {
        let stream = cx.read(key, |entry| {
            entry.map(|e| matches!(e.data, Data::Stream(_)))
        });
        match stream {
            Some(true) => {}
            _ if group => return Wake::Fail(X::Unblocked.into()),
            None => {}
            Some(false) => return Wake::Wait,
        }
    }
    Wake::Run
}

// === groups ===

/// `XGROUP CREATE|SETID|DESTROY|CREATECONSUMER|DELCONSUMER key group ...`
fn xgroup(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let sub = args.get(1).copied().unwrap_or_default();
    let known = [
        "CREATE",
        "SETID",
        "DESTROY",
        "CREATECONSUMER",
        "DELCONSUMER",
    ];
    if !known.iter().any(|k| is(sub, k)) || args.len() < 4 {
        return Err(StoreError::UnknownSubcommand {
            container: "xgroup",
            sub: lossy(sub),
        }
        .into());
    }
    let (key, group) = (args[2], args[3]);
    let create = is(sub, "CREATE");
    let mut mkstream = false;
    let mut entries_read: Option<u64> = None;
    if create || is(sub, "SETID") {
        let mut i = 5;
        while i < args.len() {
            if create && is(args[i], "MKSTREAM") {
                mkstream = true;
                i += 1;
            } else if is(args[i], "ENTRIESREAD") && i + 1 < args.len() {
                let n = long(args[i + 1])?;
                if n < -1 {
                    return Err(X::EntriesReadNegative.into());
                }
                entries_read = u64::try_from(n).ok();
                i += 2;
            } else {
                return Err(StoreError::UnknownSubcommand {
                    container: "xgroup",
                    sub: lossy(sub),
                }
                .into());
            }
        }
    }
    let no_group = || -> Error {
        X::NoGroup {
            key: lossy(key),
            group: lossy(group),
        }
        .into()
    };
    cx.write(key, |slot| {
        if slot.is_none() && !(create && mkstream) {
            return Err(X::XgroupNoKey.into());
        }
        if let Some(entry) = slot.as_ref() {
            stream_of(entry)?;
        }
        let needs_group = !(create || is(sub, "DESTROY"));
        if needs_group {
            let exists = slot
                .as_ref()
                .and_then(|e| stream_of(e).ok())
                .is_some_and(|s| s.groups.contains_key(group));
            if !exists {
                return Err(no_group());
            }
        }
        let id_arg = |s: &Stream, raw: &[u8]| -> Result<StreamId, Error> {
            if raw == b"$" {
                Ok(s.last_id)
            } else {
                strict_id(raw)
            }
        };
        if create {
            let id_raw = args.get(4).copied().unwrap_or_default();
            // Parse before creating the key, so that a bad ID creates nothing.
            let id = match slot.as_ref() {
                Some(entry) => id_arg(stream_of(entry)?, id_raw)?,
                None => id_arg(&Stream::default(), id_raw)?,
            };
            let entry = slot.get_or_insert_with(|| Entry::new(Data::Stream(Box::default())));
            let s = stream_of_mut(entry)?;
            if s.groups.contains_key(group) {
                return Err(X::BusyGroup.into());
            }
            s.groups.insert(
                group.to_vec(),
                Group {
                    last_id: id,
                    entries_read,
                    ..Group::default()
                },
            );
            return ok();
        }
        let Some(entry) = slot.as_mut() else {
            return Err(X::XgroupNoKey.into());
        };
        let s = stream_of_mut(entry)?;
        if is(sub, "DESTROY") {
            return int(i64::from(s.groups.remove(group).is_some()));
        }
        if is(sub, "SETID") {
            let id = id_arg(s, args.get(4).copied().unwrap_or_default())?;
            let g = s.groups.get_mut(group).ok_or_else(no_group)?;
            g.last_id = id;
            g.entries_read = entries_read;
            return ok();
        }
        let Some(consumer) = args.get(4).copied() else {
            return Err(arity_error("xgroup|createconsumer"));
        };
        let now = cx.now;
        let g = s.groups.get_mut(group).ok_or_else(no_group)?;
        if is(sub, "CREATECONSUMER") {
            if g.consumers.contains_key(consumer) {
                return int(0);
            }
            g.consumers.insert(
                consumer.to_vec(),
                Consumer {
                    seen_at: now,
                    ..Consumer::default()
                },
            );
            return int(1);
        }
        // DELCONSUMER: the consumer's pending entries go with it.
        let Some(c) = g.consumers.remove(consumer) else {
            return int(0);
        };
        for id in &c.pel {
            g.pel.remove(id);
        }
        int(c.pel.len() as i64)
    })
}

/// `XACK key group id [id ...]`
fn xack(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    if !has_group(cx, args)? {
        return int(0);
    }
    let ids = strict_ids(&args[3..])?;
    cx.write(args[1], |slot| {
        let Some(entry) = slot.as_mut() else {
            return int(0);
        };
        let s = stream_of_mut(entry)?;
        let Some(g) = s.groups.get_mut(args[2]) else {
            return int(0);
        };
        let mut acked = 0;
        for id in ids {
            if let Some(p) = g.pel.remove(&id) {
                if let Some(c) = g.consumers.get_mut(&p.consumer) {
                    c.pel.remove(&id);
                }
                acked += 1;
            }
        }
        int(acked)
    })
}

fn no_key_or_group(args: &[&[u8]]) -> Error {
    X::NoKeyOrGroup {
        key: lossy(args[1]),
        group: lossy(args[2]),
        suffix: "",
    }
    .into()
}

/// `XPENDING key group [[IDLE min-idle-time] start end count [consumer]]`
fn xpending(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let summary = args.len() == 3;
    if !summary && !(6..=9).contains(&args.len()) {
        return Err(StoreError::Syntax.into());
    }
    let mut min_idle = 0i64;
    let mut range = None;
    let mut consumer = None;
    if !summary {
        let mut at = 3;
        if is(args[3], "IDLE") {
            min_idle = long(args[4])?;
            if args.len() < 8 {
                return Err(StoreError::Syntax.into());
            }
            at += 2;
        }
        let count = long(args[at + 2])?.max(0) as usize;
        let start = interval(args[at], 0, true)?;
        let end = interval(args[at + 1], u64::MAX, false)?;
        consumer = args.get(at + 3).copied();
        range = Some((start, end, count));
    }
    let now = cx.now;
    cx.read(args[1], |entry| {
        let Some(entry) = entry else {
            return Err(no_key_or_group(args));
        };
        let s = stream_of(entry)?;
        let Some(g) = s.groups.get(args[2]) else {
            return Err(no_key_or_group(args));
        };
        let Some((start, end, count)) = range else {
            let (Some(first), Some(last)) = (g.pel.keys().next(), g.pel.keys().next_back()) else {
                return Ok(Frame::Array(vec![
                    Frame::Integer(0),
                    Frame::Null,
                    Frame::Null,
                    Frame::NullArray,
                ]));
            };
            let per: Vec<Frame> = g
                .consumers
                .iter()
                .filter(|(_, c)| !c.pel.is_empty())
                .map(|(n, c)| Frame::Array(vec![bulk(n.clone()), bulk(c.pel.len().to_string())]))
                .collect();
            return Ok(Frame::Array(vec![
                Frame::Integer(g.pel.len() as i64),
                id_frame(*first),
                id_frame(*last),
                Frame::Array(per),
            ]));
        };
        if start > end {
            return Ok(Frame::Array(Vec::new()));
        }
        let ids: Box<dyn Iterator<Item = &StreamId>> = match consumer {
            Some(name) => match g.consumers.get(name) {
                None => return Ok(Frame::Array(Vec::new())),
                Some(c) => Box::new(c.pel.range(start..=end)),
            },
            None => Box::new(g.pel.range(start..=end).map(|(id, _)| id)),
        };
        let mut out = Vec::new();
        for id in ids {
            if out.len() >= count {
                break;
            }
            let Some(p) = g.pel.get(id) else { continue };
            let idle = (now - p.delivered_at).max(0);
            if min_idle > 0 && idle < min_idle {
                continue;
            }
            out.push(Frame::Array(vec![
                id_frame(*id),
                bulk(p.consumer.clone()),
                Frame::Integer(idle),
                Frame::Integer(p.deliveries as i64),
            ]));
        }
        Ok(Frame::Array(out))
    })
}

/// Moves pending entry `id` to `consumer` (creating it), as XCLAIM and XAUTOCLAIM do.
fn hand_over(g: &mut Group, id: StreamId, consumer: &[u8], now: i64) {
    let old = g.pel.get(&id).map(|p| p.consumer.clone());
    if let Some(old) = old.as_ref().filter(|o| o.as_slice() != consumer) {
        if let Some(oc) = g.consumers.get_mut(old) {
            oc.pel.remove(&id);
        }
    }
    let c = g.consumers.entry(consumer.to_vec()).or_default();
    c.seen_at = now;
    c.pel.insert(id);
    if let Some(p) = g.pel.get_mut(&id) {
        p.consumer = consumer.to_vec();
    }
}

/// Drops pending entry `id` (its entry is gone).
fn forget(g: &mut Group, id: StreamId) {
    if let Some(p) = g.pel.remove(&id) {
        if let Some(c) = g.consumers.get_mut(&p.consumer) {
            c.pel.remove(&id);
        }
    }
}

/// Whether stream `args[1]` exists and has group `args[2]`.
fn has_group(cx: &mut Cx, args: &[&[u8]]) -> Result<bool, Error> {
    cx.read(args[1], |entry| -> Result<bool, Error> {
        Ok(match entry {
            None => false,
            Some(e) => stream_of(e)?.groups.contains_key(args[2]),
        })
    })
}

/// The `NOGROUP` error of XCLAIM and XAUTOCLAIM unless stream `args[1]` has group `args[2]`.
fn group_must_exist(cx: &mut Cx, args: &[&[u8]]) -> Result<(), Error> {
    if has_group(cx, args)? {
        Ok(())
    } else {
        Err(no_key_or_group(args))
    }
}

/// `XCLAIM key group consumer min-idle-time id [id ...] [IDLE ms] [TIME ms] [RETRYCOUNT
/// count] [FORCE] [JUSTID] [LASTID id]`
fn xclaim(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    group_must_exist(cx, args)?;
    let min_idle = long_or(args[4], "min-idle-time argument for XCLAIM")?.max(0);
    let mut j = 5;
    let mut ids = Vec::new();
    while j < args.len() {
        match strict_id(args[j]) {
            Ok(id) => ids.push(id),
            Err(_) => break,
        }
        j += 1;
    }
    let now = cx.now;
    let (mut force, mut justid) = (false, false);
    let mut retry: Option<u64> = None;
    let mut delivery: Option<i64> = None;
    let mut last_id = StreamId::MIN;
    while j < args.len() {
        let more = j + 1 < args.len();
        let opt = args[j];
        if is(opt, "FORCE") {
            force = true;
        } else if is(opt, "JUSTID") {
            justid = true;
        } else if is(opt, "IDLE") && more {
            j += 1;
            delivery = Some(now - long_or(args[j], "IDLE option argument for XCLAIM")?);
        } else if is(opt, "TIME") && more {
            j += 1;
            delivery = Some(long_or(args[j], "TIME option argument for XCLAIM")?);
        } else if is(opt, "RETRYCOUNT") && more {
            j += 1;
            let n = long_or(args[j], "RETRYCOUNT option argument for XCLAIM")?;
            retry = u64::try_from(n).ok();
        } else if is(opt, "LASTID") && more {
            j += 1;
            last_id = strict_id(args[j])?;
        } else {
            return Err(X::UnknownXclaimOption { option: lossy(opt) }.into());
        }
        j += 1;
    }
    let delivered_at = match delivery {
        Some(t) if (0..=now).contains(&t) => t,
        _ => now,
    };
    let consumer = args[3];
    cx.write(args[1], |slot| {
        let Some(entry) = slot.as_mut() else {
            return Err(no_key_or_group(args));
        };
        let s = stream_of_mut(entry)?;
        let mut out = Vec::new();
        let Some(g) = s.groups.get_mut(args[2]) else {
            return Err(no_key_or_group(args));
        };
        if last_id > g.last_id {
            g.last_id = last_id;
        }
        for id in ids {
            if !s.entries.contains_key(&id) {
                forget(g, id);
                continue;
            }
            let mut fresh = false;
            if force && !g.pel.contains_key(&id) {
                g.pel.insert(
                    id,
                    Pending {
                        consumer: Vec::new(),
                        delivered_at: now,
                        deliveries: 1,
                    },
                );
                fresh = true;
            }
            let Some(p) = g.pel.get_mut(&id) else {
                continue;
            };
            if !fresh && min_idle > 0 && now - p.delivered_at < min_idle {
                continue;
            }
            p.delivered_at = delivered_at;
            match retry {
                Some(n) => p.deliveries = n,
                None if !justid => p.deliveries += 1,
                None => {}
            }
            hand_over(g, id, consumer, now);
            if justid {
                out.push(id_frame(id));
            } else if let Some(f) = s.entries.get(&id) {
                out.push(entry_frame(id, f));
            }
        }
        Ok(Frame::Array(out))
    })
}

/// `XAUTOCLAIM key group consumer min-idle-time start [COUNT count] [JUSTID]`: the next
/// cursor, the claimed entries, and the IDs dropped because their entries are gone.
fn xautoclaim(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    group_must_exist(cx, args)?;
    let min_idle = long_or(args[4], "min-idle-time argument for XAUTOCLAIM")?.max(0);
    let start = interval(args[5], 0, true)?;
    let mut count: u64 = 100;
    let mut justid = false;
    let mut j = 6;
    while j < args.len() {
        if is(args[j], "COUNT") && j + 1 < args.len() {
            let n = crate::redis_num::parse_int(args[j + 1]).ok_or(X::CountNotPositive)?;
            if !(1..=i64::MAX / 16).contains(&n) {
                return Err(X::CountNotPositive.into());
            }
            count = n as u64;
            j += 2;
        } else if is(args[j], "JUSTID") {
            justid = true;
            j += 1;
        } else {
            return Err(StoreError::Syntax.into());
        }
    }
    let now = cx.now;
    let consumer = args[3];
    cx.write(args[1], |slot| {
        let Some(entry) = slot.as_mut() else {
            return Err(no_key_or_group(args));
        };
        let s = stream_of_mut(entry)?;
        let Some(g) = s.groups.get_mut(args[2]) else {
            return Err(no_key_or_group(args));
        };
        let mut attempts = count.saturating_mul(10);
        let mut claimed = Vec::new();
        let mut deleted = Vec::new();
        let mut cursor = Some(start);
        while attempts > 0 && count > 0 {
            attempts -= 1;
            let Some(at) = cursor else { break };
            let Some(id) = g.pel.range(at..).next().map(|(id, _)| *id) else {
                cursor = None;
                break;
            };
            cursor = id.next();
            if !s.entries.contains_key(&id) {
                forget(g, id);
                deleted.push(id_frame(id));
                count -= 1;
                continue;
            }
            let Some(p) = g.pel.get_mut(&id) else {
                continue;
            };
            if min_idle > 0 && now - p.delivered_at < min_idle {
                continue;
            }
            p.delivered_at = now;
            if !justid {
                p.deliveries += 1;
            }
            hand_over(g, id, consumer, now);
            claimed.push(if justid {
                id_frame(id)
            } else {
                s.entries
                    .get(&id)
                    .map_or(Frame::Null, |f| entry_frame(id, f))
            });
            count -= 1;
        }
        let next = cursor
            .and_then(|at| g.pel.range(at..).next().map(|(id, _)| *id))
            .unwrap_or(StreamId::MIN);
        Ok(Frame::Array(vec![
            id_frame(next),
            Frame::Array(claimed),
            Frame::Array(deleted),
        ]))
    })
}

// === XINFO ===

/// `XINFO STREAM key [FULL [COUNT count]]`, `XINFO GROUPS key`, `XINFO CONSUMERS key group`
fn xinfo(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let sub = args.get(1).copied().unwrap_or_default();
    let known = ["STREAM", "GROUPS", "CONSUMERS"];
    if !known.iter().any(|k| is(sub, k)) || args.len() < 3 {
        return Err(StoreError::UnknownSubcommand {
            container: "xinfo",
            sub: lossy(sub),
        }
        .into());
    }
    let now = cx.now;
    cx.read(args[2], |entry| {
        let Some(entry) = entry else {
            return Err(X::NoSuchKey.into());
        };
        let s = stream_of(entry)?;
        if is(sub, "CONSUMERS") && args.len() == 4 {
            let Some(g) = s.groups.get(args[3]) else {
                return Err(X::NoGroup {
                    key: lossy(args[2]),
                    group: lossy(args[3]),
                }
                .into());
            };
            let out = g
                .consumers
                .iter()
                .map(|(name, c)| {
                    map(
                        cx,
                        vec![
                            ("name", bulk(name.clone())),
                            ("pending", Frame::Integer(c.pel.len() as i64)),
                            ("idle", Frame::Integer((now - c.seen_at).max(0))),
                        ],
                    )
                })
                .collect();
            return Ok(Frame::Array(out));
        }
        if is(sub, "GROUPS") && args.len() == 3 {
            let out = s
                .groups
                .iter()
                .map(|(name, g)| {
                    map(
                        cx,
                        vec![
                            ("name", bulk(name.clone())),
                            ("consumers", Frame::Integer(g.consumers.len() as i64)),
                            ("pending", Frame::Integer(g.pel.len() as i64)),
                            ("last-delivered-id", id_frame(g.last_id)),
                            ("entries-read", opt_int(g.entries_read)),
                            ("lag", s.lag(g).map_or(Frame::Null, Frame::Integer)),
                        ],
                    )
                })
                .collect();
            return Ok(Frame::Array(out));
        }
        if is(sub, "STREAM") {
            return stream_info(cx, s, &args[3..]);
        }
        Err(StoreError::UnknownSubcommand {
            container: "xinfo",
            sub: lossy(sub),
        }
        .into())
    })
}

fn stream_info(cx: &Cx, s: &Stream, opts: &[&[u8]]) -> Reply {
    let mut count = 10usize;
    let full = match opts {
        [] => false,
        [full] if is(full, "FULL") => true,
        [full, c, n] if is(full, "FULL") && is(c, "COUNT") => {
            count = long(n)?.max(0) as usize;
            true
        }
        _ => return Err(StoreError::Syntax.into()),
    };
    let count = if count == 0 { usize::MAX } else { count };
    let mut pairs = vec![
        ("length", Frame::Integer(s.len() as i64)),
        ("radix-tree-keys", Frame::Integer(s.nodes.len() as i64)),
        // Redis's radix tree has inner nodes too; the store has none, so this is the
        // count of its (leaf) nodes plus one.
        ("radix-tree-nodes", Frame::Integer(s.nodes.len() as i64 + 1)),
        ("last-generated-id", id_frame(s.last_id)),
        ("max-deleted-entry-id", id_frame(s.max_deleted)),
        ("entries-added", Frame::Integer(s.entries_added as i64)),
        ("recorded-first-entry-id", id_frame(s.first_id)),
    ];
    if !full {
        let edge =
            |e: Option<(&StreamId, &Fields)>| e.map_or(Frame::Null, |(id, f)| entry_frame(*id, f));
        pairs.push(("groups", Frame::Integer(s.groups.len() as i64)));
        pairs.push(("first-entry", edge(s.entries.iter().next())));
        pairs.push(("last-entry", edge(s.entries.iter().next_back())));
        return Ok(map(cx, pairs));
    }
    let entries = s
        .entries
        .iter()
        .take(count)
        .map(|(id, f)| entry_frame(*id, f))
        .collect();
    pairs.push(("entries", Frame::Array(entries)));
    let groups = s
        .groups
        .iter()
        .map(|(name, g)| {
            let pending = g
                .pel
                .iter()
                .take(count)
                .map(|(id, p)| {
                    Frame::Array(vec![
                        id_frame(*id),
                        bulk(p.consumer.clone()),
                        Frame::Integer(p.delivered_at),
                        Frame::Integer(p.deliveries as i64),
                    ])
                })
                .collect();
            let consumers = g
                .consumers
                .iter()
                .map(|(cname, c)| {
                    let pending = c
                        .pel
                        .iter()
                        .take(count)
                        .filter_map(|id| g.pel.get(id).map(|p| (id, p)))
                        .map(|(id, p)| {
                            Frame::Array(vec![
                                id_frame(*id),
                                Frame::Integer(p.delivered_at),
                                Frame::Integer(p.deliveries as i64),
                            ])
                        })
                        .collect();
                    map(
                        cx,
                        vec![
                            ("name", bulk(cname.clone())),
                            ("seen-time", Frame::Integer(c.seen_at)),
                            ("pel-count", Frame::Integer(c.pel.len() as i64)),
                            ("pending", Frame::Array(pending)),
                        ],
                    )
                })
                .collect();
            map(
                cx,
                vec![
                    ("name", bulk(name.clone())),
                    ("last-delivered-id", id_frame(g.last_id)),
                    ("entries-read", opt_int(g.entries_read)),
                    ("lag", s.lag(g).map_or(Frame::Null, Frame::Integer)),
                    ("pel-count", Frame::Integer(g.pel.len() as i64)),
                    ("pending", Frame::Array(pending)),
                    ("consumers", Frame::Array(consumers)),
                ],
            )
        })
        .collect();
    pairs.push(("groups", Frame::Array(groups)));
    Ok(map(cx, pairs))
}
