//! Sorted-set commands: adding and scoring members, ranges by rank, score and member
//! bytes (plain, reversed, limited, stored), pops (blocking too), random members, the
//! union, intersection and difference of sorted sets and plain sets, and ZSCAN.
//!
//! Numbers are read the way Redis reads them: scores with C's `strtod` rules (decimal,
//! hexadecimal, `inf`, `-inf`; `(` marks an exclusive bound), counts and indexes as whole
//! numbers. Replies follow Redis 7.0 in both protocols: where RESP3 nests `[member, score]`
//! pairs (WITHSCORES, pops with a count), RESP2 gets one flat array.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::ops::Bound;

use crate::protocol::frame::Frame;

use super::{
    bulk, int, int_arg, is, score, timeout_arg, wrongtype, Command, Cx, Error, Reply, StoreError,
};
use crate::embedded::data::{Data, Entry, ZSet};
use crate::embedded::glob;
use crate::redis_num::{c_str, parse_double, strtod};

pub const COMMANDS: &[Command] = &[
    Command {
        name: "ZADD",
        run: zadd,
    },
    Command {
        name: "ZINCRBY",
        run: zincrby,
    },
    Command {
        name: "ZREM",
        run: zrem,
    },
    Command {
        name: "ZCARD",
        run: zcard,
    },
    Command {
        name: "ZSCORE",
        run: zscore,
    },
    Command {
        name: "ZMSCORE",
        run: zmscore,
    },
    Command {
        name: "ZRANK",
        run: zrank,
    },
    Command {
        name: "ZREVRANK",
        run: zrevrank,
    },
    Command {
        name: "ZCOUNT",
        run: zcount,
    },
    Command {
        name: "ZLEXCOUNT",
        run: zlexcount,
    },
    Command {
        name: "ZRANGE",
        run: zrange,
    },
    Command {
        name: "ZRANGEBYSCORE",
        run: zrangebyscore,
    },
    Command {
        name: "ZREVRANGEBYSCORE",
        run: zrevrangebyscore,
    },
    Command {
        name: "ZRANGEBYLEX",
        run: zrangebylex,
    },
    Command {
        name: "ZREVRANGEBYLEX",
        run: zrevrangebylex,
    },
    Command {
        name: "ZREVRANGE",
        run: zrevrange,
    },
    Command {
        name: "ZRANGESTORE",
        run: zrangestore,
    },
    Command {
        name: "ZPOPMIN",
        run: zpopmin,
    },
    Command {
        name: "ZPOPMAX",
        run: zpopmax,
    },
    Command {
        name: "ZMPOP",
        run: zmpop,
    },
    Command {
        name: "BZPOPMIN",
        run: bzpopmin,
    },
    Command {
        name: "BZPOPMAX",
        run: bzpopmax,
    },
    Command {
        name: "BZMPOP",
        run: bzmpop,
    },
    Command {
        name: "ZRANDMEMBER",
        run: zrandmember,
    },
    Command {
        name: "ZREMRANGEBYRANK",
        run: zremrangebyrank,
    },
    Command {
        name: "ZREMRANGEBYSCORE",
        run: zremrangebyscore,
    },
    Command {
        name: "ZREMRANGEBYLEX",
        run: zremrangebylex,
    },
    Command {
        name: "ZUNION",
        run: zunion,
    },
    Command {
        name: "ZINTER",
        run: zinter,
    },
    Command {
        name: "ZDIFF",
        run: zdiff,
    },
    Command {
        name: "ZUNIONSTORE",
        run: zunionstore,
    },
    Command {
        name: "ZINTERSTORE",
        run: zinterstore,
    },
    Command {
        name: "ZDIFFSTORE",
        run: zdiffstore,
    },
    Command {
        name: "ZINTERCARD",
        run: zintercard,
    },
    Command {
        name: "ZSCAN",
        run: zscan,
    },
];

/// The most elements a ZRANDMEMBER with a negative count may ask for. Redis has no such
/// bound; without one a single request could make the process run out of memory.
const MAX_RANDOM_REPEATS: u64 = 1 << 24;

// === number parsing ===

/// A score, increment or weight argument: the whole argument must be a number that fits
/// a double, without leading spaces; NaN is refused. `error` is the reply otherwise.
pub(super) fn double_arg(raw: &[u8], error: StoreError) -> Result<f64, Error> {
    parse_double(raw).ok_or(Error::Store(error))
}

/// One end of a score range, as ZRANGEBYSCORE reads it (no check for range errors).
fn range_end(raw: &[u8]) -> Option<(f64, bool)> {
    let s = c_str(raw);
    let (s, exclusive) = match s.strip_prefix(b"(") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let (value, used, _) = strtod(s);
    (used == s.len() && !value.is_nan())
        .then_some((if value == 0.0 { 0.0 } else { value }, exclusive))
}

/// A count that must not be negative (ZPOPMIN's).
fn positive_arg(raw: &[u8]) -> Result<i64, Error> {
    match crate::redis_num::parse_int(raw) {
        Some(n) if n >= 0 => Ok(n),
        _ => Err(StoreError::NotPositive.into()),
    }
}

/// A whole number that must be at least 1, with Redis's message for anything else.
fn at_least_one(raw: &[u8], error: StoreError) -> Result<i64, Error> {
    match crate::redis_num::parse_int(raw) {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(error.into()),
    }
}

// === ranges ===

/// A score interval; each end may be exclusive.
#[derive(Debug, Clone, Copy)]
struct ScoreRange {
    min: f64,
    max: f64,
    minex: bool,
    maxex: bool,
}

impl ScoreRange {
    fn parse(min: &[u8], max: &[u8]) -> Result<Self, Error> {
        match (range_end(min), range_end(max)) {
            (Some((min, minex)), Some((max, maxex))) => Ok(ScoreRange {
                min,
                max,
                minex,
                maxex,
            }),
            _ => Err(StoreError::NotFloatRange.into()),
        }
    }

    /// The members in the range, lowest score first.
    fn members<'a>(&self, z: &'a ZSet) -> impl DoubleEndedIterator<Item = (&'a [u8], f64)> + 'a {
        let none: &[u8] = b"";
        if self.minex && self.min == f64::INFINITY {
            // Above infinity: nothing.
            let nothing = Bound::Excluded((0.0, none));
            return z.range(nothing, nothing);
        }
        // Each end as a position in the (score, member) order; "" sorts first at a score.
        let lower = if self.minex {
            Bound::Included((self.min.next_up(), none))
        } else {
            Bound::Included((self.min, none))
        };
        let upper = if self.maxex {
            Bound::Excluded((self.max, none))
        } else if self.max == f64::INFINITY {
            Bound::Unbounded
        } else {
            Bound::Excluded((self.max.next_up(), none))
        };
        z.range(lower, upper)
    }
}

/// One end of a member range: `-`, `+`, `[member` or `(member`.
#[derive(Debug, Clone)]
enum LexEnd {
    Min,
    Max,
    In(Vec<u8>),
    Ex(Vec<u8>),
}

impl LexEnd {
    fn parse(raw: &[u8]) -> Option<Self> {
        // Redis checks the byte after `-`/`+` as a C string: a NUL ends it.
        let alone = raw.get(1).is_none_or(|&b| b == 0);
        match raw.first()? {
            b'-' if alone => Some(LexEnd::Min),
            b'+' if alone => Some(LexEnd::Max),
            b'[' => Some(LexEnd::In(raw[1..].to_vec())),
            b'(' => Some(LexEnd::Ex(raw[1..].to_vec())),
            _ => None,
        }
    }

    fn exclusive(&self) -> bool {
        !matches!(self, LexEnd::In(_))
    }

    fn cmp(&self, other: &LexEnd) -> Ordering {
        use LexEnd::*;
        match (self, other) {
            (Min, Min) | (Max, Max) => Ordering::Equal,
            (Min, _) | (_, Max) => Ordering::Less,
            (_, Min) | (Max, _) => Ordering::Greater,
            (In(a) | Ex(a), In(b) | Ex(b)) => a.cmp(b),
        }
    }

    /// The member bytes and how this end bounds a range, at one score.
    fn bound(&self, score: f64, upper: bool) -> Bound<(f64, &[u8])> {
        let none: &[u8] = b"";
        match self {
            LexEnd::In(m) => Bound::Included((score, m.as_slice())),
            LexEnd::Ex(m) => Bound::Excluded((score, m.as_slice())),
            LexEnd::Min if !upper => Bound::Included((score, none)),
            LexEnd::Max if upper && score == f64::INFINITY => Bound::Unbounded,
            LexEnd::Max if upper => Bound::Excluded((score.next_up(), none)),
            // `+` as a lower end or `-` as an upper one: the range is empty, never asked.
            _ => Bound::Excluded((score, none)),
        }
    }
}

/// A member interval.
#[derive(Debug, Clone)]
struct LexRange {
    min: LexEnd,
    max: LexEnd,
}

impl LexRange {
    fn parse(min: &[u8], max: &[u8]) -> Result<Self, Error> {
        match (LexEnd::parse(min), LexEnd::parse(max)) {
            (Some(min), Some(max)) => Ok(LexRange { min, max }),
            _ => Err(StoreError::NotLexRange.into()),
        }
    }

    fn is_empty(&self) -> bool {
        match self.min.cmp(&self.max) {
            Ordering::Greater => true,
            Ordering::Equal => self.min.exclusive() || self.max.exclusive(),
            Ordering::Less => false,
        }
    }

    fn above_min(&self, member: &[u8]) -> bool {
        match &self.min {
            LexEnd::Min => true,
            LexEnd::Max => false,
            LexEnd::In(m) => member >= m.as_slice(),
            LexEnd::Ex(m) => member > m.as_slice(),
        }
    }

    fn below_max(&self, member: &[u8]) -> bool {
        match &self.max {
            LexEnd::Max => true,
            LexEnd::Min => false,
            LexEnd::In(m) => member <= m.as_slice(),
            LexEnd::Ex(m) => member < m.as_slice(),
        }
    }

    /// The members in the range, in order or reversed. Member ranges assume one score for
    /// all members; with several scores this walks the set in order as Redis does for
    /// small sets: from the first member at or past one end, while members stay within
    /// the other.
    fn members<'a>(
        &'a self,
        z: &'a ZSet,
        rev: bool,
    ) -> Box<dyn Iterator<Item = (&'a [u8], f64)> + 'a> {
        let (Some(first), Some(last)) = (z.iter().next(), z.iter().next_back()) else {
            return Box::new(std::iter::empty());
        };
        if self.is_empty() || !self.above_min(last.0) || !self.below_max(first.0) {
            return Box::new(std::iter::empty());
        }
        if first.1 == last.1 {
            let score = first.1;
            let range = z.range(self.min.bound(score, false), self.max.bound(score, true));
            return if rev {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
        }
        if rev {
            Box::new(
                z.iter()
                    .rev()
                    .skip_while(|(m, _)| !self.below_max(m))
                    .take_while(|(m, _)| self.above_min(m)),
            )
        } else {
            Box::new(
                z.iter()
                    .skip_while(|(m, _)| !self.above_min(m))
                    .take_while(|(m, _)| self.below_max(m)),
            )
        }
    }
}

/// Which members a range command selects.
#[derive(Debug, Clone)]
enum Spec {
    Rank(i64, i64),
    Score(ScoreRange),
    Lex(LexRange),
}

/// A rank interval made concrete for a set of `len` members: (skip, take), or `None`
/// when it selects nothing.
fn rank_window(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 { len + start } else { start }.max(0);
    let end = if end < 0 { len + end } else { end };
    if start > end || start >= len {
        return None;
    }
    let end = end.min(len - 1);
    Some((start as usize, (end - start + 1) as usize))
}

/// The members `spec` selects, in order or reversed, after skipping `offset` and taking
/// at most `limit` (negative: all) for score and member ranges.
fn select<'a>(
    z: &'a ZSet,
    spec: &'a Spec,
    rev: bool,
    offset: i64,
    limit: i64,
) -> Vec<(&'a [u8], f64)> {
    let members: Box<dyn Iterator<Item = (&[u8], f64)>> = match spec {
        Spec::Rank(start, end) => {
            let Some((skip, take)) = rank_window(*start, *end, z.len()) else {
                return Vec::new();
            };
            return if rev {
                z.iter().rev().skip(skip).take(take).collect()
            } else {
                z.iter().skip(skip).take(take).collect()
            };
        }
        Spec::Score(range) if rev => Box::new(range.members(z).rev()),
        Spec::Score(range) => Box::new(range.members(z)),
        Spec::Lex(range) => range.members(z, rev),
    };
    // Redis skips the offset one member at a time: a negative one never ends, past all.
    if offset < 0 || (offset > 0 && offset as u64 >= z.len() as u64) {
        return Vec::new();
    }
    let members = members.skip(offset as usize);
    if limit < 0 {
        members.collect()
    } else {
        members.take(limit as usize).collect()
    }
}

// === access and replies ===

/// Runs `f` on the sorted set under `key` (`None` when there is no key).
pub(super) fn read_zset<R>(
    cx: &Cx,
    key: &[u8],
    f: impl FnOnce(Option<&ZSet>) -> R,
) -> Result<R, Error> {
    cx.read(key, |e| match e.map(|e| &e.data) {
        None => Ok(f(None)),
        Some(Data::ZSet(z)) => Ok(f(Some(z))),
        Some(_) => wrongtype(),
    })
}

/// Runs `f` on the sorted set under `key`, creating an empty one first when `create`
/// (left empty, it is deleted again). `None` when there is no key and none was created.
fn write_zset<R>(
    cx: &Cx,
    key: &[u8],
    create: bool,
    f: impl FnOnce(&mut ZSet) -> R,
) -> Result<Option<R>, Error> {
    cx.write(key, |slot| {
        if slot.is_none() && create {
            *slot = Some(Entry::new(Data::ZSet(ZSet::default())));
        }
        match slot.as_mut().map(|e| &mut e.data) {
            None => Ok(None),
            Some(Data::ZSet(z)) => Ok(Some(f(z))),
            Some(_) => wrongtype(),
        }
    })
}

/// A score as a reply. Redis writes a negative zero as "-0".
fn zscore_value(cx: &Cx, d: f64) -> Frame {
    if d == 0.0 && d.is_sign_negative() && !cx.resp3() {
        bulk("-0")
    } else {
        score(cx, d)
    }
}

/// Members, with their scores when asked: `[member, score]` pairs in RESP3, one flat
/// array in RESP2.
fn scored<M: AsRef<[u8]>>(
    cx: &Cx,
    items: impl IntoIterator<Item = (M, f64)>,
    withscores: bool,
) -> Frame {
    let mut out = Vec::new();
    for (member, d) in items {
        let member = bulk(member.as_ref());
        if !withscores {
            out.push(member);
        } else if cx.resp3() {
            out.push(Frame::Array(vec![member, zscore_value(cx, d)]));
        } else {
            out.push(member);
            out.push(zscore_value(cx, d));
        }
    }
    Frame::Array(out)
}

/// Replaces `dest` with a sorted set of `items`, or deletes it when there are none;
/// answers with the number of members stored.
fn store(cx: &Cx, dest: &[u8], items: impl IntoIterator<Item = (Vec<u8>, f64)>) -> Reply {
    let mut z = ZSet::default();
    for (member, d) in items {
        z.insert(member, d);
    }
    let len = z.len();
    if len == 0 {
        cx.remove(dest);
    } else {
        cx.insert(dest, Entry::new(Data::ZSet(z)));
    }
    int(len as i64)
}

/// Members with their scores.
type Scored = Vec<(Vec<u8>, f64)>;

/// What a pop took: the key, and the members.
type Popped = Option<(Vec<u8>, Scored)>;

/// The lowest (or highest) `count` members, removed.
fn pop(z: &mut ZSet, max: bool, count: usize) -> Scored {
    let mut out = Vec::new();
    while out.len() < count {
        let next = if max { z.pop_last() } else { z.pop_first() };
        match next {
            Some(item) => out.push(item),
            None => break,
        }
    }
    out
}

/// Pops from the first of `keys` that exists: `None` when none does. A key of another
/// type met before it is an error.
fn pop_first_key(cx: &Cx, keys: &[&[u8]], max: bool, count: usize) -> Result<Popped, Error> {
    for key in keys {
        if let Some(items) = write_zset(cx, key, false, |z| pop(z, max, count))? {
            return Ok(Some((key.to_vec(), items)));
        }
    }
    Ok(None)
}

// === commands ===

/// `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]`
pub(super) fn zadd(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, false);
    let mut i = 2;
    while let Some(arg) = args.get(i) {
        let flag = if is(arg, "NX") {
            &mut nx
        } else if is(arg, "XX") {
            &mut xx
        } else if is(arg, "GT") {
            &mut gt
        } else if is(arg, "LT") {
            &mut lt
        } else if is(arg, "CH") {
            &mut ch
        } else if is(arg, "INCR") {
            &mut incr
        } else {
            break;
        };
        *flag = true;
        i += 1;
    }
    let pairs = args.get(i..).unwrap_or_default();
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        return Err(StoreError::Syntax.into());
    }
    if nx && xx {
        return Err(StoreError::XxAndNx.into());
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return Err(StoreError::GtLtNx.into());
    }
    if incr && pairs.len() > 2 {
        return Err(StoreError::IncrPair.into());
    }
    let scores = pairs
        .chunks(2)
        .map(|pair| double_arg(pair[0], StoreError::NotFloat))
        .collect::<Result<Vec<f64>, Error>>()?;
    let outcome = write_zset(cx, args[1], true, |z| {
        let (mut added, mut updated, mut last) = (0, 0, None);
        for (pair, &given) in pairs.chunks(2).zip(&scores) {
            let member = pair[1];
            match z.score(member) {
                Some(current) => {
                    if nx {
                        continue;
                    }
                    let new = if incr { current + given } else { given };
                    if new.is_nan() {
                        return Err(Error::from(StoreError::NanScore));
                    }
                    if (lt && new >= current) || (gt && new <= current) {
                        continue;
                    }
                    last = Some(new);
                    if new != current {
                        z.insert(member.to_vec(), new);
                        updated += 1;
                    }
                }
                None if xx => {}
                None => {
                    z.insert(member.to_vec(), given);
                    added += 1;
                    last = Some(given);
                }
            }
        }
        Ok((added, updated, last))
    })?;
    let (added, updated, last) = outcome.unwrap_or(Ok((0, 0, None)))?;
    if incr {
        Ok(last.map_or(Frame::Null, |d| zscore_value(cx, d)))
    } else {
        int(if ch { added + updated } else { added })
    }
}

/// `ZINCRBY key increment member`
fn zincrby(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let by = double_arg(args[2], StoreError::NotFloat)?;
    let member = args[3];
    let new = write_zset(cx, args[1], true, |z| {
        let new = z.score(member).map_or(by, |current| current + by);
        if new.is_nan() {
            return Err(Error::from(StoreError::NanScore));
        }
        z.insert(member.to_vec(), new);
        Ok(new)
    })?;
    Ok(zscore_value(cx, new.unwrap_or(Ok(by))?))
}

/// `ZREM key member [member ...]`
fn zrem(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let members = &args[2..];
    let removed = write_zset(cx, args[1], false, |z| {
        members.iter().filter(|m| z.remove(m).is_some()).count()
    })?;
    int(removed.unwrap_or(0) as i64)
}

/// `ZCARD key`
fn zcard(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    int(read_zset(cx, args[1], |z| z.map_or(0, ZSet::len))? as i64)
}

/// `ZSCORE key member`
fn zscore(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let found = read_zset(cx, args[1], |z| z.and_then(|z| z.score(args[2])))?;
    Ok(found.map_or(Frame::Null, |d| zscore_value(cx, d)))
}

/// `ZMSCORE key member [member ...]`
fn zmscore(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let found = read_zset(cx, args[1], |z| {
        args[2..]
            .iter()
            .map(|m| z.and_then(|z| z.score(m)))
            .collect::<Vec<_>>()
    })?;
    Ok(Frame::Array(
        found
            .into_iter()
            .map(|d| d.map_or(Frame::Null, |d| zscore_value(cx, d)))
            .collect(),
    ))
}

/// ZRANK and ZREVRANK.
fn rank(cx: &Cx, args: &[&[u8]], rev: bool) -> Reply {
    let found = read_zset(cx, args[1], |z| {
        z.and_then(|z| {
            z.rank(args[2])
                .map(|r| if rev { z.len() - 1 - r } else { r })
        })
    })?;
    Ok(found.map_or(Frame::Null, |r| Frame::Integer(r as i64)))
}

/// `ZRANK key member`
fn zrank(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    rank(cx, args, false)
}

/// `ZREVRANK key member`
fn zrevrank(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    rank(cx, args, true)
}

/// `ZCOUNT key min max`
fn zcount(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let range = ScoreRange::parse(args[2], args[3])?;
    let n = read_zset(cx, args[1], |z| z.map_or(0, |z| range.members(z).count()))?;
    int(n as i64)
}

/// `ZLEXCOUNT key min max`
fn zlexcount(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let range = LexRange::parse(args[2], args[3])?;
    let n = read_zset(cx, args[1], |z| {
        z.map_or(0, |z| range.members(z, false).count())
    })?;
    int(n as i64)
}

/// How a range command reads its range, before its options say.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RangeBy {
    Auto,
    Rank,
    Score,
    Lex,
}

/// The ZRANGE family: `src min max` at `at`, then options. With `dest`, the selection is
/// stored there (ZRANGESTORE) instead of returned.
fn range_command(
    cx: &Cx,
    args: &[&[u8]],
    at: usize,
    dest: Option<&[u8]>,
    mut by: RangeBy,
    mut rev: Option<bool>,
) -> Reply {
    let (mut withscores, mut offset, mut limit) = (false, 0i64, -1i64);
    let mut j = at + 3;
    while let Some(arg) = args.get(j) {
        let left = args.len() - j - 1;
        if dest.is_none() && is(arg, "WITHSCORES") {
            withscores = true;
        } else if is(arg, "LIMIT") && left >= 2 {
            offset = int_arg(args[j + 1])?;
            limit = int_arg(args[j + 2])?;
            j += 2;
        } else if rev.is_none() && is(arg, "REV") {
            rev = Some(true);
        } else if by == RangeBy::Auto && is(arg, "BYLEX") {
            by = RangeBy::Lex;
        } else if by == RangeBy::Auto && is(arg, "BYSCORE") {
            by = RangeBy::Score;
        } else {
            return Err(StoreError::Syntax.into());
        }
        j += 1;
    }
    let rev = rev.unwrap_or(false);
    if by == RangeBy::Auto {
        by = RangeBy::Rank;
    }
    if limit != -1 && by == RangeBy::Rank {
        return Err(StoreError::LimitWithoutBy.into());
    }
    if withscores && by == RangeBy::Lex {
        return Err(StoreError::WithscoresByLex.into());
    }
    let (mut min, mut max) = (args[at + 1], args[at + 2]);
    if rev && by != RangeBy::Rank {
        std::mem::swap(&mut min, &mut max);
    }
    let spec = match by {
        RangeBy::Score => Spec::Score(ScoreRange::parse(min, max)?),
        RangeBy::Lex => Spec::Lex(LexRange::parse(min, max)?),
        _ => Spec::Rank(int_arg(min)?, int_arg(max)?),
    };
    let src = args[at];
    match dest {
        Some(dest) => {
            let items = read_zset(cx, src, |z| {
                z.map(|z| {
                    select(z, &spec, rev, offset, limit)
                        .into_iter()
                        .map(|(m, d)| (m.to_vec(), d))
                        .collect::<Vec<_>>()
                })
            })?;
            store(cx, dest, items.unwrap_or_default())
        }
        None => read_zset(cx, src, |z| match z {
            None => Frame::Array(Vec::new()),
            Some(z) => scored(cx, select(z, &spec, rev, offset, limit), withscores),
        }),
    }
}

/// `ZRANGE key start stop [BYSCORE|BYLEX] [REV] [LIMIT offset count] [WITHSCORES]`
fn zrange(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    range_command(cx, args, 1, None, RangeBy::Auto, None)
}

/// `ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count]`
fn zrangebyscore(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    range_command(cx, args, 1, None, RangeBy::Score, Some(false))
}

/// `ZREVRANGEBYSCORE key max min [WITHSCORES] [LIMIT offset count]`
fn zrevrangebyscore(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    range_command(cx, args, 1, None, RangeBy::Score, Some(true))
}

/// `ZRANGEBYLEX key min max [LIMIT offset count]`
fn zrangebylex(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    range_command(cx, args, 1, None, RangeBy::Lex, Some(false))
}

/// `ZREVRANGEBYLEX key max min [LIMIT offset count]`
fn zrevrangebylex(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    range_command(cx, args, 1, None, RangeBy::Lex, Some(true))
}

/// `ZREVRANGE key start stop [WITHSCORES]`
fn zrevrange(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    range_command(cx, args, 1, None, RangeBy::Rank, Some(true))
}

/// `ZRANGESTORE dst src min max [BYSCORE|BYLEX] [REV] [LIMIT offset count]`
fn zrangestore(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    range_command(cx, args, 2, Some(args[1]), RangeBy::Auto, None)
}

/// ZPOPMIN and ZPOPMAX: one member as a flat pair, or with a count, `[member, score]`
/// pairs in RESP3 (flat in RESP2).
fn zpop(cx: &Cx, args: &[&[u8]], max: bool) -> Reply {
    if args.len() > 3 {
        return Err(StoreError::Syntax.into());
    }
    let count = args.get(2).map(|raw| positive_arg(raw)).transpose()?;
    let popped = write_zset(cx, args[1], false, |z| {
        pop(z, max, count.unwrap_or(1) as usize)
    })?;
    let nested = count.is_some() && cx.resp3();
    let items = popped.unwrap_or_default();
    if nested {
        Ok(scored(cx, items, true))
    } else {
        let mut out = Vec::new();
        for (member, d) in items {
            out.push(bulk(member));
            out.push(zscore_value(cx, d));
        }
        Ok(Frame::Array(out))
    }
}

/// `ZPOPMIN key [count]`
fn zpopmin(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    zpop(cx, args, false)
}

/// `ZPOPMAX key [count]`
fn zpopmax(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    zpop(cx, args, true)
}

/// The arguments of ZMPOP and BZMPOP from `numkeys` (at `at`) on: the keys, MAX or MIN,
/// and the count.
fn mpop_args<'a>(args: &[&'a [u8]], at: usize) -> Result<(Vec<&'a [u8]>, bool, usize), Error> {
    let numkeys = at_least_one(args[at], StoreError::NumKeysNotPositive)? as u64;
    let where_at = (at as u64 + 1).saturating_add(numkeys);
    let Some(which) = usize::try_from(where_at).ok().and_then(|i| args.get(i)) else {
        return Err(StoreError::Syntax.into());
    };
    let where_at = where_at as usize;
    let max = if is(which, "MAX") {
        true
    } else if is(which, "MIN") {
        false
    } else {
        return Err(StoreError::Syntax.into());
    };
    let mut count = None;
    let mut j = where_at + 1;
    while let Some(arg) = args.get(j) {
        if count.is_none() && is(arg, "COUNT") && j + 1 < args.len() {
            count = Some(at_least_one(args[j + 1], StoreError::CountNotPositive)?);
            j += 2;
        } else {
            return Err(StoreError::Syntax.into());
        }
    }
    let keys = args[at + 1..where_at].to_vec();
    Ok((keys, max, count.unwrap_or(1) as usize))
}

/// The reply of ZMPOP and BZMPOP: the key, then `[member, score]` pairs.
fn mpop_reply(cx: &Cx, popped: Popped) -> Frame {
    match popped {
        None => Frame::Null,
        Some((key, items)) => {
            let pairs = items
                .into_iter()
                .map(|(m, d)| Frame::Array(vec![bulk(m), zscore_value(cx, d)]))
                .collect();
            Frame::Array(vec![bulk(key), Frame::Array(pairs)])
        }
    }
}

/// `ZMPOP numkeys key [key ...] MIN|MAX [COUNT count]`
fn zmpop(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let (keys, max, count) = mpop_args(args, 1)?;
    let popped = pop_first_key(cx, &keys, max, count)?;
    Ok(mpop_reply(cx, popped))
}

/// BZPOPMIN and BZPOPMAX: `[key, member, score]` from the first non-empty key.
fn bzpop(cx: &Cx, args: &[&[u8]], max: bool) -> Reply {
    let (timeout, keys) = match args.split_last() {
        Some((timeout, rest)) if !rest.is_empty() => (timeout, &rest[1..]),
        _ => return Err(super::arity_error(&String::from_utf8_lossy(args[0]))),
    };
    let timeout_ms = timeout_arg(timeout)?;
    match pop_first_key(cx, keys, max, 1)? {
        Some((key, items)) => {
            let mut out = vec![bulk(key)];
            for (member, d) in items {
                out.push(bulk(member));
                out.push(zscore_value(cx, d));
            }
            Ok(Frame::Array(out))
        }
        None => Err(Error::Block { timeout_ms }),
    }
}

/// `BZPOPMIN key [key ...] timeout`
fn bzpopmin(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    bzpop(cx, args, false)
}

/// `BZPOPMAX key [key ...] timeout`
fn bzpopmax(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    bzpop(cx, args, true)
}

/// `BZMPOP timeout numkeys key [key ...] MIN|MAX [COUNT count]`
fn bzmpop(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let (keys, max, count) = mpop_args(args, 2)?;
    let timeout_ms = timeout_arg(args[1])?;
    match pop_first_key(cx, &keys, max, count)? {
        Some(popped) => Ok(mpop_reply(cx, Some(popped))),
        None => Err(Error::Block { timeout_ms }),
    }
}

/// A small random number generator (SplitMix64), seeded by the operating system.
struct Rng(u64);

impl Rng {
    fn new(now: i64) -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Rng(u64::from_le_bytes(seed) ^ now as u64)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (which is not 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `ZRANDMEMBER key [count [WITHSCORES]]`
fn zrandmember(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let mut rng = Rng::new(cx.now);
    let Some(raw) = args.get(2) else {
        let picked = read_zset(cx, args[1], |z| {
            z.filter(|z| !z.is_empty())
                .and_then(|z| z.iter().nth(rng.below(z.len())))
                .map(|(m, _)| m.to_vec())
        })?;
        return Ok(picked.map_or(Frame::Null, bulk));
    };
    let count = int_arg(raw)?;
    if count == i64::MIN {
        return Err(StoreError::CountBelowMin.into());
    }
    let withscores = match args.len() {
        3 => false,
        4 if is(args[3], "WITHSCORES") => true,
        _ => return Err(StoreError::Syntax.into()),
    };
    if withscores && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&count) {
        return Err(StoreError::OutOfRange.into());
    }
    let (n, unique) = (count.unsigned_abs(), count >= 0);
    if !unique && n > MAX_RANDOM_REPEATS {
        return Err(StoreError::OutOfRange.into());
    }
    read_zset(cx, args[1], |z| {
        let Some(z) = z.filter(|_| n > 0) else {
            return Frame::Array(Vec::new());
        };
        let all: Vec<(&[u8], f64)> = z.iter().collect();
        if !unique || n == 1 {
            let picks = (0..n).map(|_| all[rng.below(all.len())]);
            return scored(cx, picks.collect::<Vec<_>>(), withscores);
        }
        if n >= all.len() as u64 {
            return scored(cx, all, withscores);
        }
        // A partial shuffle: the first `n` places get distinct random members.
        let mut all = all;
        let n = n as usize;
        for i in 0..n {
            let j = i + rng.below(all.len() - i);
            all.swap(i, j);
        }
        all.truncate(n);
        scored(cx, all, withscores)
    })
}

/// Removes the members `spec` selects; answers with how many.
fn remove_range(cx: &Cx, key: &[u8], spec: Spec) -> Reply {
    let removed = write_zset(cx, key, false, |z| {
        let members: Vec<Vec<u8>> = select(z, &spec, false, 0, -1)
            .into_iter()
            .map(|(m, _)| m.to_vec())
            .collect();
        for member in &members {
            z.remove(member);
        }
        members.len()
    })?;
    int(removed.unwrap_or(0) as i64)
}

/// `ZREMRANGEBYRANK key start stop`
fn zremrangebyrank(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let spec = Spec::Rank(int_arg(args[2])?, int_arg(args[3])?);
    remove_range(cx, args[1], spec)
}

/// `ZREMRANGEBYSCORE key min max`
fn zremrangebyscore(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let spec = Spec::Score(ScoreRange::parse(args[2], args[3])?);
    remove_range(cx, args[1], spec)
}

/// `ZREMRANGEBYLEX key min max`
fn zremrangebylex(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let spec = Spec::Lex(LexRange::parse(args[2], args[3])?);
    remove_range(cx, args[1], spec)
}

/// The set operations.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

/// How the scores of a member found in several inputs combine.
#[derive(Debug, Clone, Copy)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

impl Aggregate {
    fn apply(self, target: &mut f64, value: f64) {
        match self {
            Aggregate::Sum => {
                *target += value;
                // inf + -inf: Redis makes it 0.
                if target.is_nan() {
                    *target = 0.0;
                }
            }
            Aggregate::Min => {
                if value < *target {
                    *target = value;
                }
            }
            Aggregate::Max => {
                if value > *target {
                    *target = value;
                }
            }
        }
    }
}

/// The number of members of an input: a sorted set or a plain set (0 when missing).
fn input_len(cx: &Cx, key: &[u8]) -> Result<usize, Error> {
    cx.read(key, |e| match e.map(|e| &e.data) {
        None => Ok(0),
        Some(Data::ZSet(z)) => Ok(z.len()),
        Some(Data::Set(s)) => Ok(s.len()),
        Some(_) => wrongtype(),
    })
}

/// Calls `f` with each member of an input and its score (1 for a plain set).
fn each_input(cx: &Cx, key: &[u8], mut f: impl FnMut(&[u8], f64)) {
    cx.read(key, |e| match e.map(|e| &e.data) {
        Some(Data::ZSet(z)) => z.iter().for_each(|(m, d)| f(m, d)),
        Some(Data::Set(s)) => s.iter().for_each(|m| f(m, 1.0)),
        _ => {}
    })
}

/// Keeps the candidates found in an input, passing each its score there.
fn retain_in_input(
    cx: &Cx,
    key: &[u8],
    candidates: &mut Scored,
    mut keep: impl FnMut(&mut f64, Option<f64>) -> bool,
) {
    cx.read(key, |e| match e.map(|e| &e.data) {
        Some(Data::ZSet(z)) => candidates.retain_mut(|(m, d)| keep(d, z.score(m))),
        Some(Data::Set(s)) => {
            candidates.retain_mut(|(m, d)| keep(d, s.contains(m.as_slice()).then_some(1.0)))
        }
        _ => candidates.retain_mut(|(_, d)| keep(d, None)),
    })
}

/// ZUNION, ZINTER, ZDIFF, their STORE forms and ZINTERCARD: `numkeys` at `at`, then the
/// keys and options.
fn set_command(
    cx: &Cx,
    args: &[&[u8]],
    at: usize,
    op: SetOp,
    dest: Option<&[u8]>,
    card: bool,
) -> Reply {
    let numkeys = int_arg(args[at])?;
    if numkeys < 1 {
        return Err(StoreError::NoInputKey {
            command: String::from_utf8_lossy(args[0]).into_owned(),
        }
        .into());
    }
    if numkeys as u64 > (args.len() - at - 1) as u64 {
        return Err(StoreError::Syntax.into());
    }
    let n = numkeys as usize;
    let keys = &args[at + 1..at + 1 + n];
    let lens = keys
        .iter()
        .map(|k| input_len(cx, k))
        .collect::<Result<Vec<usize>, Error>>()?;

    let mut weights = vec![1.0; n];
    let (mut aggregate, mut withscores, mut limit) = (Aggregate::Sum, false, 0i64);
    let mut j = at + 1 + n;
    while let Some(arg) = args.get(j) {
        let left = args.len() - j;
        if op != SetOp::Diff && !card && left > n && is(arg, "WEIGHTS") {
            for (i, weight) in weights.iter_mut().enumerate() {
                *weight = double_arg(args[j + 1 + i], StoreError::WeightNotFloat)?;
            }
            j += 1 + n;
        } else if op != SetOp::Diff && !card && left >= 2 && is(arg, "AGGREGATE") {
            let how = args[j + 1];
            aggregate = if is(how, "SUM") {
                Aggregate::Sum
            } else if is(how, "MIN") {
                Aggregate::Min
            } else if is(how, "MAX") {
                Aggregate::Max
            } else {
                return Err(StoreError::Syntax.into());
            };
            j += 2;
        } else if dest.is_none() && !card && is(arg, "WITHSCORES") {
            withscores = true;
            j += 1;
        } else if card && left >= 2 && is(arg, "LIMIT") {
            limit = match crate::redis_num::parse_int(args[j + 1]) {
                Some(l) if l >= 0 => l,
                _ => return Err(StoreError::NegativeLimit.into()),
            };
            j += 2;
        } else {
            return Err(StoreError::Syntax.into());
        }
    }

    // The inputs, smallest first (but the first input of a difference stays first).
    let mut order: Vec<usize> = (0..n).collect();
    if op != SetOp::Diff {
        order.sort_by_key(|&i| lens[i]);
    }
    let weighted = |d: f64, w: f64| {
        let v = d * w;
        if v.is_nan() {
            0.0
        } else {
            v
        }
    };
    let mut result: Scored = match op {
        SetOp::Union => {
            let mut acc: HashMap<Vec<u8>, f64> = HashMap::new();
            for &i in &order {
                let w = weights[i];
                each_input(cx, keys[i], |m, d| {
                    let v = weighted(d, w);
                    match acc.get_mut(m) {
                        Some(target) => aggregate.apply(target, v),
                        None => {
                            acc.insert(m.to_vec(), v);
                        }
                    }
                });
            }
            acc.into_iter().collect()
        }
        SetOp::Inter => {
            let mut candidates = Vec::new();
            if lens[order[0]] > 0 {
                let w = weights[order[0]];
                each_input(cx, keys[order[0]], |m, d| {
                    candidates.push((m.to_vec(), weighted(d, w)))
                });
                for &i in &order[1..] {
                    let w = weights[i];
                    retain_in_input(cx, keys[i], &mut candidates, |target, found| match found {
                        Some(d) => {
                            aggregate.apply(target, d * w);
                            true
                        }
                        None => false,
                    });
                }
            }
            candidates
        }
        SetOp::Diff => {
            let mut candidates = Vec::new();
            each_input(cx, keys[0], |m, d| candidates.push((m.to_vec(), d)));
            for &i in &order[1..] {
                if candidates.is_empty() {
                    break;
                }
                retain_in_input(cx, keys[i], &mut candidates, |_, found| found.is_none());
            }
            candidates
        }
    };
    if card {
        let found = result.len() as i64;
        return int(if limit > 0 { found.min(limit) } else { found });
    }
    if let Some(dest) = dest {
        return store(cx, dest, result);
    }
    result.sort_by(|a, b| {
        a.1.partial_cmp(&b.1)
            .unwrap_or(Ordering::Equal)
            .then_with(|| a.0.cmp(&b.0))
    });
    Ok(scored(cx, result, withscores))
}

/// `ZUNION numkeys key [key ...] [WEIGHTS w ...] [AGGREGATE SUM|MIN|MAX] [WITHSCORES]`
fn zunion(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_command(cx, args, 1, SetOp::Union, None, false)
}

/// `ZINTER numkeys key [key ...] [WEIGHTS w ...] [AGGREGATE SUM|MIN|MAX] [WITHSCORES]`
fn zinter(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_command(cx, args, 1, SetOp::Inter, None, false)
}

/// `ZDIFF numkeys key [key ...] [WITHSCORES]`
fn zdiff(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_command(cx, args, 1, SetOp::Diff, None, false)
}

/// `ZUNIONSTORE dest numkeys key [key ...] [WEIGHTS w ...] [AGGREGATE SUM|MIN|MAX]`
fn zunionstore(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_command(cx, args, 2, SetOp::Union, Some(args[1]), false)
}

/// `ZINTERSTORE dest numkeys key [key ...] [WEIGHTS w ...] [AGGREGATE SUM|MIN|MAX]`
fn zinterstore(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_command(cx, args, 2, SetOp::Inter, Some(args[1]), false)
}

/// `ZDIFFSTORE dest numkeys key [key ...]`
fn zdiffstore(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_command(cx, args, 2, SetOp::Diff, Some(args[1]), false)
}

/// `ZINTERCARD numkeys key [key ...] [LIMIT limit]`
fn zintercard(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_command(cx, args, 1, SetOp::Inter, None, true)
}

/// `ZSCAN key cursor [MATCH pattern] [COUNT count]`: the whole set in one page.
fn zscan(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    if crate::redis_num::parse_cursor(args[2]).is_none() {
        return Err(StoreError::InvalidCursor.into());
    }
    let page = read_zset(cx, args[1], |z| {
        z.map(|z| z.iter().map(|(m, d)| (m.to_vec(), d)).collect::<Vec<_>>())
    })?;
    let Some(page) = page else {
        return Ok(Frame::Array(vec![bulk("0"), Frame::Array(Vec::new())]));
    };
    let mut pattern: Option<&[u8]> = None;
    let mut j = 3;
    while let Some(arg) = args.get(j) {
        let value = args.get(j + 1);
        match value {
            Some(v) if is(arg, "COUNT") => {
                if int_arg(v)? < 1 {
                    return Err(StoreError::Syntax.into());
                }
            }
            Some(v) if is(arg, "MATCH") => pattern = Some(v),
            _ => return Err(StoreError::Syntax.into()),
        }
        j += 2;
    }
    let mut out = Vec::new();
    for (member, d) in page {
        if pattern.is_none_or(|p| p == b"*" || glob::matches(p, &member)) {
            out.push(bulk(member));
            out.push(bulk(crate::redis_num::d2string(d)));
        }
    }
    Ok(Frame::Array(vec![bulk("0"), Frame::Array(out)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_like_redis() {
        assert!(double_arg(b"1e400", StoreError::NotFloat).is_err());
        assert!(double_arg(b" 1", StoreError::NotFloat).is_err());
        assert!(double_arg(b"", StoreError::NotFloat).is_err());
        assert!(double_arg(b"nan", StoreError::NotFloat).is_err());
        assert_eq!(double_arg(b"-0x10", StoreError::NotFloat), Ok(-16.0));
        assert_eq!(range_end(b"("), Some((0.0, true)));
        assert_eq!(range_end(b""), Some((0.0, false)));
        assert_eq!(range_end(b"5\0junk"), Some((5.0, false)));
        assert_eq!(range_end(b"1e400"), Some((f64::INFINITY, false)));
        assert_eq!(range_end(b"5 "), None);
    }

    fn zset(items: &[(&str, f64)]) -> ZSet {
        let mut z = ZSet::default();
        for (m, d) in items {
            z.insert(m.as_bytes().to_vec(), *d);
        }
        z
    }

    fn members(selected: Vec<(&[u8], f64)>) -> Vec<String> {
        selected
            .into_iter()
            .map(|(m, _)| String::from_utf8_lossy(m).into_owned())
            .collect()
    }

    #[test]
    fn score_ranges_select_in_order() {
        let z = zset(&[("a", 1.0), ("b", 2.0), ("c", 2.0), ("d", f64::INFINITY)]);
        let spec = |min: &str, max: &str| {
            Spec::Score(ScoreRange::parse(min.as_bytes(), max.as_bytes()).unwrap())
        };
        assert_eq!(
            members(select(&z, &spec("(1", "2"), false, 0, -1)),
            ["b", "c"]
        );
        assert_eq!(
            members(select(&z, &spec("-inf", "+inf"), true, 1, 2)),
            ["c", "b"]
        );
        assert_eq!(
            members(select(&z, &spec("(inf", "inf"), false, 0, -1)),
            Vec::<String>::new()
        );
        assert_eq!(
            members(select(&z, &spec("inf", "inf"), false, 0, -1)),
            ["d"]
        );
        assert_eq!(
            members(select(&z, &spec("3", "1"), false, 0, -1)),
            Vec::<String>::new()
        );
        assert_eq!(
            members(select(&z, &spec("0", "5"), false, -1, 5)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn lex_ranges_select_in_order() {
        let z = zset(&[("a", 0.0), ("b", 0.0), ("c", 0.0), ("d", 0.0)]);
        let spec = |min: &str, max: &str| {
            Spec::Lex(LexRange::parse(min.as_bytes(), max.as_bytes()).unwrap())
        };
        assert_eq!(
            members(select(&z, &spec("[b", "(d"), false, 0, -1)),
            ["b", "c"]
        );
        assert_eq!(members(select(&z, &spec("-", "+"), true, 1, 2)), ["c", "b"]);
        assert_eq!(
            members(select(&z, &spec("+", "-"), false, 0, -1)),
            Vec::<String>::new()
        );
        let mixed = zset(&[("b", 1.0), ("a", 2.0), ("c", 3.0), ("A", 4.0)]);
        assert_eq!(
            members(select(&mixed, &spec("-", "[b"), false, 0, -1)),
            ["b", "a"]
        );
        assert_eq!(
            members(select(&mixed, &spec("[a", "[c"), false, 0, -1)),
            Vec::<String>::new()
        );
        assert_eq!(
            members(select(&mixed, &spec("-", "[c"), true, 0, -1)),
            ["A", "c", "a", "b"]
        );
    }

    #[test]
    fn rank_windows_clamp_like_redis() {
        assert_eq!(rank_window(0, -1, 3), Some((0, 3)));
        assert_eq!(rank_window(-100, 100, 3), Some((0, 3)));
        assert_eq!(rank_window(2, 1, 3), None);
        assert_eq!(rank_window(i64::MAX, i64::MIN, 3), None);
        assert_eq!(rank_window(0, 0, 0), None);
    }
}
