//! List commands: pushes and pops at both ends, ranges and indexes, LINSERT, LREM, LTRIM,
//! LPOS, moves between lists (LMOVE, RPOPLPUSH), LMPOP, and the blocking pops and moves
//! (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP).
//!
//! A list is a `VecDeque` of elements, head first. A blocking command that finds nothing
//! to take answers [`Error::Block`]; the store runs it again after a write to its keys.

use std::collections::VecDeque;

use crate::protocol::frame::Frame;

use super::{arity_error, bulk, bulks, int, int_arg, is, ok, wrongtype, Command, Cx, Error};
use super::{timeout_arg, Reply, StoreError};
use crate::embedded::data::{Data, Entry};

type List = VecDeque<Vec<u8>>;

pub const COMMANDS: &[Command] = &[
    Command {
        name: "LPUSH",
        run: lpush,
    },
    Command {
        name: "RPUSH",
        run: rpush,
    },
    Command {
        name: "LPUSHX",
        run: lpushx,
    },
    Command {
        name: "RPUSHX",
        run: rpushx,
    },
    Command {
        name: "LPOP",
        run: lpop,
    },
    Command {
        name: "RPOP",
        run: rpop,
    },
    Command {
        name: "LLEN",
        run: llen,
    },
    Command {
        name: "LRANGE",
        run: lrange,
    },
    Command {
        name: "LINDEX",
        run: lindex,
    },
    Command {
        name: "LSET",
        run: lset,
    },
    Command {
        name: "LINSERT",
        run: linsert,
    },
    Command {
        name: "LREM",
        run: lrem,
    },
    Command {
        name: "LTRIM",
        run: ltrim,
    },
    Command {
        name: "LPOS",
        run: lpos,
    },
    Command {
        name: "LMOVE",
        run: lmove,
    },
    Command {
        name: "RPOPLPUSH",
        run: rpoplpush,
    },
    Command {
        name: "LMPOP",
        run: lmpop,
    },
    Command {
        name: "BLPOP",
        run: blpop,
    },
    Command {
        name: "BRPOP",
        run: brpop,
    },
    Command {
        name: "BLMOVE",
        run: blmove,
    },
    Command {
        name: "BRPOPLPUSH",
        run: brpoplpush,
    },
    Command {
        name: "BLMPOP",
        run: blmpop,
    },
];

/// An end of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Left,
    Right,
}

/// `LEFT` or `RIGHT`, any case.
fn end_arg(raw: &[u8]) -> Result<End, Error> {
    if is(raw, "LEFT") {
        Ok(End::Left)
    } else if is(raw, "RIGHT") {
        Ok(End::Right)
    } else {
        Err(StoreError::Syntax.into())
    }
}

fn pop(list: &mut List, end: End) -> Option<Vec<u8>> {
    match end {
        End::Left => list.pop_front(),
        End::Right => list.pop_back(),
    }
}

fn push(list: &mut List, end: End, element: Vec<u8>) {
    match end {
        End::Left => list.push_front(element),
        End::Right => list.push_back(element),
    }
}

/// The list in a live entry: `None` when there is no key, an error for another type.
fn list_of(entry: Option<&Entry>) -> Result<Option<&List>, Error> {
    match entry.map(|e| &e.data) {
        None => Ok(None),
        Some(Data::List(list)) => Ok(Some(list)),
        Some(_) => wrongtype(),
    }
}

/// Like [`list_of`], for changing the list in place.
fn list_mut(entry: &mut Option<Entry>) -> Result<Option<&mut List>, Error> {
    match entry.as_mut().map(|e| &mut e.data) {
        None => Ok(None),
        Some(Data::List(list)) => Ok(Some(list)),
        Some(_) => wrongtype(),
    }
}

/// Whether `key` holds something other than a list (a missing key is fine).
fn check_list(cx: &Cx, key: &[u8]) -> Result<(), Error> {
    cx.read(key, |e| list_of(e).map(|_| ()))
}

/// A whole number in `min..`, or `error` (Redis words these per option).
fn at_least(raw: &[u8], min: i64, error: StoreError) -> Result<i64, Error> {
    match crate::redis_num::parse_int(raw) {
        Some(n) if n >= min => Ok(n),
        _ => Err(error.into()),
    }
}

// === pushes ===

/// Pushes `args[2..]` one by one at `end`; creates the list unless `existing_only`.
fn push_generic(cx: &mut Cx, args: &[&[u8]], end: End, existing_only: bool) -> Reply {
    cx.write(args[1], |entry| {
        if entry.is_none() {
            if existing_only {
                return int(0);
            }
            *entry = Some(Entry::new(Data::List(List::new())));
        }
        let Some(list) = list_mut(entry)? else {
            return int(0);
        };
        for element in &args[2..] {
            push(list, end, element.to_vec());
        }
        int(list.len() as i64)
    })
}

fn lpush(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    push_generic(cx, args, End::Left, false)
}

fn rpush(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    push_generic(cx, args, End::Right, false)
}

fn lpushx(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    push_generic(cx, args, End::Left, true)
}

fn rpushx(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    push_generic(cx, args, End::Right, true)
}

// === pops ===

/// `LPOP key [count]` and `RPOP key [count]`: one element (or nil), or with a count an
/// array of up to `count` elements (the null array when there is no key).
fn pop_generic(cx: &mut Cx, args: &[&[u8]], end: End) -> Reply {
    if args.len() > 3 {
        return Err(arity_error(if end == End::Left { "lpop" } else { "rpop" }));
    }
    let count = match args.get(2) {
        Some(raw) => Some(at_least(raw, 0, StoreError::NotPositive)?),
        None => None,
    };
    cx.write(args[1], |entry| {
        let Some(list) = list_mut(entry)? else {
            // Redis answers a count with an array, so its "no key" is the null array.
            return Ok(if count.is_some() {
                Frame::NullArray
            } else {
                Frame::Null
            });
        };
        match count {
            None => Ok(pop(list, end).map_or(Frame::Null, bulk)),
            Some(count) => {
                let n = usize::try_from(count).unwrap_or(usize::MAX).min(list.len());
                Ok(bulks((0..n).filter_map(|_| pop(list, end))))
            }
        }
    })
}

fn lpop(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    pop_generic(cx, args, End::Left)
}

fn rpop(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    pop_generic(cx, args, End::Right)
}

// === reads ===

fn llen(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.read(args[1], |e| int(list_of(e)?.map_or(0, |l| l.len() as i64)))
}

/// The positions `start..=stop` of a list of `len` elements, as Redis reads a range
/// (negative counts from the end; clamped to the list), or `None` when it is empty.
fn range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        len + stop
    } else {
        stop.min(len - 1)
    };
    (start <= stop && start < len).then_some((start as usize, stop as usize))
}

fn lrange(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let start = int_arg(args[2])?;
    let stop = int_arg(args[3])?;
    cx.read(args[1], |e| {
        let Some(list) = list_of(e)? else {
            return Ok(Frame::Array(Vec::new()));
        };
        Ok(match range(start, stop, list.len()) {
            Some((first, last)) => bulks(list.range(first..=last).cloned()),
            None => Frame::Array(Vec::new()),
        })
    })
}

/// The position of `index` (negative counts from the end) in a list of `len`, if inside.
fn position(index: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let index = if index < 0 { len + index } else { index };
    (0..len).contains(&index).then_some(index as usize)
}

fn lindex(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.read(args[1], |e| {
        let Some(list) = list_of(e)? else {
            return Ok(Frame::Null);
        };
        let index = int_arg(args[2])?;
        Ok(position(index, list.len())
            .and_then(|i| list.get(i))
            .map_or(Frame::Null, |el| bulk(el.clone())))
    })
}

/// `LPOS key element [RANK rank] [COUNT num-matches] [MAXLEN len]`.
fn lpos(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let mut rank: i64 = 1;
    let mut count: Option<i64> = None;
    let mut maxlen: i64 = 0;
    let mut i = 3;
    while i < args.len() {
        let (option, value) = (args[i], args.get(i + 1).copied());
        match value {
            Some(raw) if is(option, "RANK") => {
                rank = crate::redis_num::parse_int(raw).ok_or(StoreError::NotInteger)?;
                if rank == 0 {
                    return Err(StoreError::RankZero.into());
                }
            }
            Some(raw) if is(option, "COUNT") => {
                count = Some(at_least(raw, 0, StoreError::NegativeCount)?);
            }
            Some(raw) if is(option, "MAXLEN") => {
                maxlen = at_least(raw, 0, StoreError::NegativeMaxlen)?;
            }
            _ => return Err(StoreError::Syntax.into()),
        }
        i += 2;
    }
    let element = args[2];
    cx.read(args[1], |e| {
        let Some(list) = list_of(e)? else {
            return Ok(match count {
                Some(_) => Frame::Array(Vec::new()),
                None => Frame::Null,
            });
        };
        // Matches to skip before the first reported one; i64::MIN reads as -1, as in Redis.
        let skip = rank.unsigned_abs().saturating_sub(1);
        let skip = if rank == i64::MIN { 0 } else { skip };
        let limit = match maxlen {
            0 => list.len(),
            n => usize::try_from(n).unwrap_or(usize::MAX).min(list.len()),
        };
        let wanted = match count {
            None => 1,
            Some(0) => usize::MAX,
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let indexes: Box<dyn Iterator<Item = usize>> = if rank > 0 {
            Box::new(0..limit)
        } else {
            Box::new((list.len() - limit..list.len()).rev())
        };
        let found: Vec<Frame> = indexes
            .filter(|&i| list[i] == element)
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take(wanted)
            .map(|i| Frame::Integer(i as i64))
            .collect();
        Ok(match count {
            Some(_) => Frame::Array(found),
            None => found.into_iter().next().unwrap_or(Frame::Null),
        })
    })
}

// === changes in place ===

fn lset(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.write(args[1], |entry| {
        let Some(list) = list_mut(entry)? else {
            return Err(StoreError::NoSuchKey.into());
        };
        let index = int_arg(args[2])?;
        let Some(slot) = position(index, list.len()).and_then(|i| list.get_mut(i)) else {
            return Err(StoreError::IndexOutOfRange.into());
        };
        *slot = args[3].to_vec();
        ok()
    })
}

/// `LINSERT key BEFORE|AFTER pivot element`: the new length, -1 without the pivot, 0
/// without the key.
fn linsert(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let after = if is(args[2], "AFTER") {
        true
    } else if is(args[2], "BEFORE") {
        false
    } else {
        return Err(StoreError::Syntax.into());
    };
    cx.write(args[1], |entry| {
        let Some(list) = list_mut(entry)? else {
            return int(0);
        };
        let Some(at) = list.iter().position(|el| el == args[3]) else {
            return int(-1);
        };
        list.insert(at + usize::from(after), args[4].to_vec());
        int(list.len() as i64)
    })
}

/// `LREM key count element`: removes up to `count` matches from the head (from the tail
/// when negative; all of them for 0).
fn lrem(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let count = int_arg(args[2])?;
    let element = args[3];
    cx.write(args[1], |entry| {
        let Some(list) = list_mut(entry)? else {
            return int(0);
        };
        let limit = match count {
            0 => usize::MAX,
            n => usize::try_from(n.unsigned_abs()).unwrap_or(usize::MAX),
        };
        let mut removed = 0;
        let kept: List = if count >= 0 {
            list.drain(..)
                .filter(|el| {
                    let drop = removed < limit && el == element;
                    removed += usize::from(drop);
                    !drop
                })
                .collect()
        } else {
            let mut kept: List = list
                .drain(..)
                .rev()
                .filter(|el| {
                    let drop = removed < limit && el == element;
                    removed += usize::from(drop);
                    !drop
                })
                .collect();
            kept.make_contiguous().reverse();
            kept
        };
        *list = kept;
        int(removed as i64)
    })
}

fn ltrim(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let start = int_arg(args[2])?;
    let stop = int_arg(args[3])?;
    cx.write(args[1], |entry| {
        let Some(list) = list_mut(entry)? else {
            return ok();
        };
        match range(start, stop, list.len()) {
            Some((first, last)) => {
                list.truncate(last + 1);
                list.drain(..first);
            }
            None => list.clear(),
        }
        ok()
    })
}

// === moves between lists ===

/// Moves one element from `from`'s `take` end to `to`'s `put` end. `None` when there is
/// no source list; errors when either key holds another type. Runs alone (Kind::Multi).
fn move_one(cx: &Cx, from: &[u8], to: &[u8], take: End, put: End) -> Result<Option<Frame>, Error> {
    if cx.read(from, |e| list_of(e).map(|l| l.is_none()))? {
        return Ok(None);
    }
    if from == to {
        // A rotation: the list never empties, so the key (and its TTL) stays.
        return cx.write(from, |entry| {
            let Some(list) = list_mut(entry)? else {
                return Ok(None);
            };
            let Some(element) = pop(list, take) else {
                return Ok(None);
            };
            push(list, put, element.clone());
            Ok(Some(bulk(element)))
        });
    }
    check_list(cx, to)?;
    let taken = cx.write(from, |entry| -> Result<_, Error> {
        Ok(list_mut(entry)?.and_then(|list| pop(list, take)))
    })?;
    let Some(element) = taken else {
        return Ok(None);
    };
    cx.write(to, |entry| {
        let entry = entry.get_or_insert_with(|| Entry::new(Data::List(List::new())));
        if let Data::List(list) = &mut entry.data {
            push(list, put, element.clone());
        }
    });
    Ok(Some(bulk(element)))
}

/// `LMOVE source destination LEFT|RIGHT LEFT|RIGHT`.
fn lmove(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let take = end_arg(args[3])?;
    let put = end_arg(args[4])?;
    Ok(move_one(cx, args[1], args[2], take, put)?.unwrap_or(Frame::Null))
}

fn rpoplpush(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    Ok(move_one(cx, args[1], args[2], End::Right, End::Left)?.unwrap_or(Frame::Null))
}

/// `BLMOVE source destination LEFT|RIGHT LEFT|RIGHT timeout`.
fn blmove(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let take = end_arg(args[3])?;
    let put = end_arg(args[4])?;
    let timeout_ms = timeout_arg(args[5])?;
    move_one(cx, args[1], args[2], take, put)?.ok_or(Error::Block { timeout_ms })
}

/// `BRPOPLPUSH source destination timeout`.
fn brpoplpush(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let timeout_ms = timeout_arg(args[3])?;
    move_one(cx, args[1], args[2], End::Right, End::Left)?.ok_or(Error::Block { timeout_ms })
}

// === pops from the first non-empty of several lists ===

/// Pops up to `count` elements (one, without a count) from the first of `keys` that holds
/// a list: `[key, element]`, or with a count `[key, [elements]]`. `None` when none does;
/// a key of another type met before that is an error.
fn pop_first(
    cx: &Cx,
    keys: &[&[u8]],
    end: End,
    count: Option<i64>,
) -> Result<Option<Frame>, Error> {
    for key in keys {
        let popped = cx.write(key, |entry| -> Result<_, Error> {
            let Some(list) = list_mut(entry)? else {
                return Ok(None);
            };
            let n = match count {
                None => 1,
                Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(list.len()),
            };
            let elements: Vec<Vec<u8>> = (0..n).filter_map(|_| pop(list, end)).collect();
            Ok((!elements.is_empty()).then_some(elements))
        })?;
        let Some(mut elements) = popped else {
            continue;
        };
        let value = match count {
            Some(_) => bulks(elements),
            None => bulk(elements.pop().unwrap_or_default()),
        };
        return Ok(Some(Frame::Array(vec![bulk(*key), value])));
    }
    Ok(None)
}

/// `BLPOP key [key ...] timeout` and `BRPOP`.
fn blocking_pop(cx: &mut Cx, args: &[&[u8]], end: End) -> Reply {
    let Some((timeout, keys)) = args[1..].split_last() else {
        return Err(StoreError::Syntax.into());
    };
    let timeout_ms = timeout_arg(timeout)?;
    pop_first(cx, keys, end, None)?.ok_or(Error::Block { timeout_ms })
}

fn blpop(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    blocking_pop(cx, args, End::Left)
}

fn brpop(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    blocking_pop(cx, args, End::Right)
}

/// The keys, end and count of `LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count]`
/// (`BLMPOP` has its timeout first: `numkeys_at` is where numkeys is).
fn mpop_args<'a>(args: &[&'a [u8]], numkeys_at: usize) -> Result<(Vec<&'a [u8]>, End, i64), Error> {
    let raw = args.get(numkeys_at).copied().unwrap_or_default();
    let numkeys = at_least(raw, 1, StoreError::NumKeysNotPositive)?;
    let first = numkeys_at + 1;
    let end_at = usize::try_from(numkeys)
        .ok()
        .and_then(|n| first.checked_add(n))
        .filter(|&at| at < args.len())
        .ok_or(StoreError::Syntax)?;
    let end = end_arg(args[end_at])?;
    let mut count = None;
    let mut i = end_at + 1;
    while i < args.len() {
        match args.get(i + 1) {
            Some(raw) if count.is_none() && is(args[i], "COUNT") => {
                count = Some(at_least(raw, 1, StoreError::CountNotPositive)?);
            }
            _ => return Err(StoreError::Syntax.into()),
        }
        i += 2;
    }
    Ok((args[first..end_at].to_vec(), end, count.unwrap_or(1)))
}

/// `LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count]`.
fn lmpop(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let (keys, end, count) = mpop_args(args, 1)?;
    Ok(pop_first(cx, &keys, end, Some(count))?.unwrap_or(Frame::NullArray))
}

/// `BLMPOP timeout numkeys key [key ...] LEFT|RIGHT [COUNT count]`.
fn blmpop(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let (keys, end, count) = mpop_args(args, 2)?;
    let timeout_ms = timeout_arg(args[1])?;
    pop_first(cx, &keys, end, Some(count))?.ok_or(Error::Block { timeout_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_like_redis() {
        assert_eq!(range(0, -1, 3), Some((0, 2)));
        assert_eq!(range(-100, 100, 3), Some((0, 2)));
        assert_eq!(range(2, 1, 3), None);
        assert_eq!(range(3, 5, 3), None);
        assert_eq!(range(-1, -1, 3), Some((2, 2)));
        assert_eq!(range(0, -4, 3), None);
        assert_eq!(range(i64::MIN, i64::MAX, 3), Some((0, 2)));
        assert_eq!(range(0, 0, 0), None);
    }

    #[test]
    fn positions_count_from_either_end() {
        assert_eq!(position(0, 3), Some(0));
        assert_eq!(position(-1, 3), Some(2));
        assert_eq!(position(3, 3), None);
        assert_eq!(position(-4, 3), None);
        assert_eq!(position(i64::MIN, 3), None);
    }
}
