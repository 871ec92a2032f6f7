//! Set commands: SADD and friends, random members, SMOVE, the set algebra (SINTER, SUNION,
//! SDIFF, their STORE forms, SINTERCARD) and SSCAN.
//!
//! A set is a `HashSet` of members. Single-key commands change a set in place (it keeps its
//! expiry); a set left empty is deleted by the keyspace. Commands on several keys are
//! [`Kind::Multi`]: they run alone, read their sources one at a time, then write.
//!
//! Also here, for the hash commands too: random picks (HRANDFIELD, SRANDMEMBER) and the
//! cursor and options of HSCAN/SSCAN.

use std::cell::Cell;
use std::collections::HashSet;

use crate::protocol::frame::Frame;

use super::{bulk, int, int_arg, is, wrongtype, Command, Cx, Error, Reply, StoreError};
use crate::embedded::data::{Data, Entry};
use crate::embedded::glob;
use crate::redis_num::parse_int;

pub const COMMANDS: &[Command] = &[
    Command {
        name: "SADD",
        run: sadd,
    },
    Command {
        name: "SREM",
        run: srem,
    },
    Command {
        name: "SMEMBERS",
        run: smembers,
    },
    Command {
        name: "SISMEMBER",
        run: sismember,
    },
    Command {
        name: "SMISMEMBER",
        run: smismember,
    },
    Command {
        name: "SCARD",
        run: scard,
    },
    Command {
        name: "SPOP",
        run: spop,
    },
    Command {
        name: "SRANDMEMBER",
        run: srandmember,
    },
    Command {
        name: "SMOVE",
        run: smove,
    },
    Command {
        name: "SINTER",
        run: sinter,
    },
    Command {
        name: "SINTERCARD",
        run: sintercard,
    },
    Command {
        name: "SINTERSTORE",
        run: sinterstore,
    },
    Command {
        name: "SUNION",
        run: sunion,
    },
    Command {
        name: "SUNIONSTORE",
        run: sunionstore,
    },
    Command {
        name: "SDIFF",
        run: sdiff,
    },
    Command {
        name: "SDIFFSTORE",
        run: sdiffstore,
    },
    Command {
        name: "SSCAN",
        run: sscan,
    },
];

type Set = HashSet<Vec<u8>>;

/// Runs `f` on the set under `key` (`None` when there is no key); WRONGTYPE for another
/// type.
fn read_set<R>(cx: &Cx, key: &[u8], f: impl FnOnce(Option<&Set>) -> R) -> Result<R, Error> {
    cx.read(key, |entry| match entry.map(|e| &e.data) {
        None => Ok(f(None)),
        Some(Data::Set(set)) => Ok(f(Some(set))),
        Some(_) => wrongtype(),
    })
}

/// Members as a RESP3 set (an array in RESP2).
fn members<'a>(items: impl IntoIterator<Item = &'a Vec<u8>>) -> Frame {
    Frame::Set(items.into_iter().map(|m| bulk(m.clone())).collect())
}

/// `SADD key member [member ...]`: how many were new.
fn sadd(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.write(args[1], |entry| {
        let entry = entry.get_or_insert_with(|| Entry::new(Data::Set(HashSet::new())));
        let Data::Set(set) = &mut entry.data else {
            return wrongtype();
        };
        let added = args[2..].iter().filter(|m| set.insert(m.to_vec())).count();
        int(added as i64)
    })
}

/// `SREM key member [member ...]`: how many were removed.
fn srem(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.write(args[1], |entry| match entry.as_mut().map(|e| &mut e.data) {
        None => int(0),
        Some(Data::Set(set)) => {
            let removed = args[2..].iter().filter(|m| set.remove(**m)).count();
            int(removed as i64)
        }
        Some(_) => wrongtype(),
    })
}

fn smembers(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_set(cx, args[1], |set| members(set.into_iter().flatten()))
}

fn sismember(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_set(cx, args[1], |set| {
        Frame::Integer(i64::from(set.is_some_and(|s| s.contains(args[2]))))
    })
}

fn smismember(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_set(cx, args[1], |set| {
        let flags = args[2..]
            .iter()
            .map(|m| Frame::Integer(i64::from(set.is_some_and(|s| s.contains(*m)))));
        Frame::Array(flags.collect())
    })
}

fn scard(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_set(cx, args[1], |set| {
        Frame::Integer(set.map_or(0, |s| s.len() as i64))
    })
}

/// `SPOP key [count]`: one random member (or nil), or up to `count` distinct ones as a set.
fn spop(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    if args.len() > 3 {
        return Err(StoreError::Syntax.into());
    }
    let count = match args.get(2) {
        None => None,
        Some(raw) => match parse_int(raw) {
            Some(n) if n >= 0 => Some(n as u64),
            _ => return Err(StoreError::NotPositive.into()),
        },
    };
    cx.write(args[1], |entry| {
        let set = match entry.as_mut().map(|e| &mut e.data) {
            None => None,
            Some(Data::Set(set)) => Some(set),
            Some(_) => return wrongtype(),
        };
        let Some(count) = count else {
            let Some(set) = set.filter(|s| !s.is_empty()) else {
                return Ok(Frame::Null);
            };
            let Some(member) = set.iter().nth(random_below(set.len())).cloned() else {
                return Ok(Frame::Null);
            };
            set.remove(&member);
            return Ok(bulk(member));
        };
        let Some(set) = set.filter(|_| count > 0) else {
            return Ok(Frame::Set(Vec::new()));
        };
        if count >= set.len() as u64 {
            let all = std::mem::take(set);
            return Ok(Frame::Set(all.into_iter().map(bulk).collect()));
        }
        let all: Vec<&Vec<u8>> = set.iter().collect();
        let chosen: Vec<Vec<u8>> = pick(&all, count as i64)?.into_iter().cloned().collect();
        for member in &chosen {
            set.remove(member);
        }
        Ok(Frame::Set(chosen.into_iter().map(bulk).collect()))
    })
}

/// `SRANDMEMBER key [count]`: one random member (or nil); with a count, an array: distinct
/// members for a positive count, `-count` members that may repeat for a negative one.
fn srandmember(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let Some(raw_count) = args.get(2) else {
        return read_set(cx, args[1], |set| match set.filter(|s| !s.is_empty()) {
            None => Frame::Null,
            Some(s) => s
                .iter()
                .nth(random_below(s.len()))
                .map_or(Frame::Null, |m| bulk(m.clone())),
        });
    };
    if args.len() > 3 {
        return Err(StoreError::Syntax.into());
    }
    let count = rand_count(raw_count)?;
    read_set(cx, args[1], |set| {
        let Some(set) = set.filter(|_| count != 0) else {
            return Ok(Frame::Array(Vec::new()));
        };
        let all: Vec<&Vec<u8>> = set.iter().collect();
        let picked = pick(&all, count)?;
        Ok(Frame::Array(
            picked.into_iter().map(|m| bulk(m.clone())).collect(),
        ))
    })?
}

/// `SMOVE source destination member`.
fn smove(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let (source, destination, member) = (args[1], args[2], args[3]);
    let Some(in_source) = read_set(cx, source, |set| set.map(|s| s.contains(member)))? else {
        return int(0);
    };
    read_set(cx, destination, |_| ())?;
    if source == destination || !in_source {
        return int(i64::from(in_source));
    }
    cx.write(source, |entry| {
        if let Some(Data::Set(set)) = entry.as_mut().map(|e| &mut e.data) {
            set.remove(member);
        }
    });
    cx.write(destination, |entry| {
        let entry = entry.get_or_insert_with(|| Entry::new(Data::Set(HashSet::new())));
        if let Data::Set(set) = &mut entry.data {
            set.insert(member.to_vec());
        }
    });
    int(1)
}

/// The sizes of the sets under `keys` (`None` for a missing key); WRONGTYPE if any key
/// holds another type, as Redis checks every key before it computes.
fn sizes(cx: &Cx, keys: &[&[u8]]) -> Result<Vec<Option<usize>>, Error> {
    keys.iter()
        .map(|key| read_set(cx, key, |set| set.map(HashSet::len)))
        .collect()
}

/// The intersection of the sets under `keys`.
fn intersect(cx: &Cx, keys: &[&[u8]]) -> Result<Set, Error> {
    let sizes = sizes(cx, keys)?;
    if sizes.iter().any(|s| s.is_none_or(|n| n == 0)) {
        return Ok(Set::new());
    }
    // Start from the smallest set and keep what every other one holds.
    let smallest = (0..keys.len())
        .min_by_key(|&i| sizes[i])
        .unwrap_or_default();
    let mut result = read_set(cx, keys[smallest], |set| set.cloned().unwrap_or_default())?;
    for (i, key) in keys.iter().enumerate() {
        if i == smallest || result.is_empty() {
            continue;
        }
        read_set(cx, key, |set| match set {
            Some(set) => result.retain(|m| set.contains(m)),
            None => result.clear(),
        })?;
    }
    Ok(result)
}

/// The union of the sets under `keys`.
fn union(cx: &Cx, keys: &[&[u8]]) -> Result<Set, Error> {
    sizes(cx, keys)?;
    let mut result = Set::new();
    for key in keys {
        read_set(cx, key, |set| {
            if let Some(set) = set {
                result.extend(set.iter().cloned());
            }
        })?;
    }
    Ok(result)
}

/// The members of the first set that no other set under `keys` holds.
fn difference(cx: &Cx, keys: &[&[u8]]) -> Result<Set, Error> {
    sizes(cx, keys)?;
    let Some((first, others)) = keys.split_first() else {
        return Ok(Set::new());
    };
    let mut result = read_set(cx, first, |set| set.cloned().unwrap_or_default())?;
    for key in others {
        if result.is_empty() {
            break;
        }
        read_set(cx, key, |set| {
            if let Some(set) = set {
                result.retain(|m| !set.contains(m));
            }
        })?;
    }
    Ok(result)
}

/// Replaces `destination` with `result` (no expiry), or deletes it when `result` is
/// empty; answers the size.
fn store(cx: &Cx, destination: &[u8], result: Set) -> Reply {
    let size = result.len() as i64;
    if result.is_empty() {
        cx.remove(destination);
    } else {
        cx.insert(destination, Entry::new(Data::Set(result)));
    }
    int(size)
}

fn sinter(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    Ok(members(&intersect(cx, &args[1..])?))
}

fn sunion(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    Ok(members(&union(cx, &args[1..])?))
}

fn sdiff(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    Ok(members(&difference(cx, &args[1..])?))
}

fn sinterstore(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let result = intersect(cx, &args[2..])?;
    store(cx, args[1], result)
}

fn sunionstore(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let result = union(cx, &args[2..])?;
    store(cx, args[1], result)
}

fn sdiffstore(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let result = difference(cx, &args[2..])?;
    store(cx, args[1], result)
}

/// `SINTERCARD numkeys key [key ...] [LIMIT limit]`: the size of the intersection, at most
/// `limit` (0: no limit).
fn sintercard(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let numkeys = match parse_int(args[1]) {
        Some(n) if n > 0 => n as u64,
        _ => return Err(StoreError::NumKeysNotPositive.into()),
    };
    let rest = args.len() as u64 - 2;
    if numkeys > rest {
        return Err(StoreError::NumKeysTooLarge.into());
    }
    let keys = &args[2..2 + numkeys as usize];
    let mut options = &args[2 + numkeys as usize..];
    let mut limit = 0u64;
    while let Some((word, tail)) = options.split_first() {
        match tail.first() {
            Some(raw) if is(word, "LIMIT") => {
                limit = match parse_int(raw) {
                    Some(n) if n >= 0 => n as u64,
                    _ => return Err(StoreError::NegativeLimit.into()),
                };
                options = &tail[1..];
            }
            _ => return Err(StoreError::Syntax.into()),
        }
    }
    let size = intersect(cx, keys)?.len() as u64;
    let size = if limit > 0 { size.min(limit) } else { size };
    int(size as i64)
}

/// `SSCAN key cursor [MATCH pattern] [COUNT count]`: the whole set in one page, cursor `0`.
fn sscan(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    scan_cursor(args[2])?;
    // Redis reads the options only once it has found the set.
    let options = scan_options(&args[3..]);
    let items = read_set(cx, args[1], |set| {
        let Some(set) = set else {
            return Ok::<_, Error>(Vec::new());
        };
        let pattern = options?;
        Ok(set
            .iter()
            .filter(|m| pattern.is_none_or(|p| glob::matches(p, m)))
            .map(|m| bulk(m.clone()))
            .collect())
    })??;
    Ok(Frame::Array(vec![bulk("0"), Frame::Array(items)]))
}

// === shared with the hash commands ===

/// A scan cursor as Redis reads it (see [`crate::redis_num::parse_cursor`]).
pub(super) fn scan_cursor(raw: &[u8]) -> Result<u64, Error> {
    crate::redis_num::parse_cursor(raw).ok_or_else(|| StoreError::InvalidCursor.into())
}

/// Reads a scan's options (`MATCH pattern`, `COUNT count`, the last of each wins); returns
/// the pattern, `None` when every element matches.
pub(super) fn scan_options<'a>(mut options: &[&'a [u8]]) -> Result<Option<&'a [u8]>, Error> {
    let mut pattern = None;
    while let Some((word, tail)) = options.split_first() {
        match tail.first() {
            Some(value) if is(word, "COUNT") => {
                if int_arg(value)? < 1 {
                    return Err(StoreError::Syntax.into());
                }
            }
            Some(value) if is(word, "MATCH") => pattern = Some(*value),
            _ => return Err(StoreError::Syntax.into()),
        }
        options = &tail[1..];
    }
    Ok(pattern.filter(|p| *p != b"*"))
}

/// A count for HRANDFIELD and SRANDMEMBER: any integer but `i64::MIN`.
pub(super) fn rand_count(raw: &[u8]) -> Result<i64, Error> {
    match int_arg(raw)? {
        i64::MIN => Err(StoreError::CountBelowMin.into()),
        n => Ok(n),
    }
}

/// The most elements a negative count may ask for. Redis has no such limit, but answering
/// `SRANDMEMBER key -9223372036854775807` would exhaust memory.
const MAX_REPEATED_PICKS: u64 = 1 << 20;

/// Random picks from `items` (not empty), as HRANDFIELD and SRANDMEMBER count them: a
/// positive `count` gives that many distinct items (all of them when there are fewer), a
/// negative one gives `-count` items, each drawn independently.
pub(super) fn pick<T: Copy>(items: &[T], count: i64) -> Result<Vec<T>, Error> {
    if items.is_empty() || count == 0 {
        return Ok(Vec::new());
    }
    if count < 0 {
        let n = count.unsigned_abs();
        if n > MAX_REPEATED_PICKS {
            return Err(StoreError::TooManyPicks {
                max: MAX_REPEATED_PICKS,
            }
            .into());
        }
        return Ok((0..n).map(|_| items[random_below(items.len())]).collect());
    }
    let count = count as u64;
    if count >= items.len() as u64 {
        return Ok(items.to_vec());
    }
    // A partial Fisher-Yates shuffle: the first `count` places get distinct random items.
    let mut order: Vec<T> = items.to_vec();
    let count = count as usize;
    for i in 0..count {
        let j = i + random_below(order.len() - i);
        order.swap(i, j);
    }
    order.truncate(count);
    Ok(order)
}

/// A random number below `n` (0 when `n` is 0).
pub(super) fn random_below(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    ((u128::from(random_u64()) * n as u128) >> 64) as usize
}

/// A fast per-thread generator (SplitMix64), seeded from the operating system.
fn random_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(getrandom::u64().unwrap_or_else(|_| {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now())
        }));
    }
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::{now_ms, Store};
    use crate::protocol::Proto;

    fn run(store: &Store, proto: Proto, line: &str) -> Reply {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        store.run(proto, &args)
    }

    fn expiry(store: &Store, key: &str) -> Option<Option<i64>> {
        store
            .keys
            .read(key.as_bytes(), now_ms(), |e| e.map(|e| e.expires_at))
    }

    fn set_expiry(store: &Store, key: &str, at: i64) {
        store.keys.write(key.as_bytes(), now_ms(), |e| {
            if let Some(e) = e {
                e.expires_at = Some(at);
            }
        });
    }

    #[test]
    fn in_place_changes_keep_the_expiry_and_stores_drop_it() {
        let store = Store::default();
        let later = now_ms() + 100_000;
        run(&store, Proto::Resp2, "SADD s a b c").unwrap();
        run(&store, Proto::Resp2, "SADD d x y").unwrap();
        set_expiry(&store, "s", later);
        set_expiry(&store, "d", later);
        run(&store, Proto::Resp2, "SADD s e").unwrap();
        run(&store, Proto::Resp2, "SREM s e").unwrap();
        run(&store, Proto::Resp2, "SPOP s").unwrap();
        run(&store, Proto::Resp2, "SMOVE s d a").unwrap();
        run(&store, Proto::Resp2, "SMOVE d s x").unwrap();
        assert_eq!(expiry(&store, "s"), Some(Some(later)));
        assert_eq!(expiry(&store, "d"), Some(Some(later)));
        for command in ["SINTERSTORE d s", "SUNIONSTORE d s", "SDIFFSTORE d s"] {
            set_expiry(&store, "d", later);
            assert!(matches!(run(&store, Proto::Resp2, command), Ok(Frame::Integer(n)) if n > 0));
            assert_eq!(expiry(&store, "d"), Some(None), "{command}");
        }
        assert_eq!(
            run(&store, Proto::Resp2, "SINTERSTORE d s nokey"),
            Ok(Frame::Integer(0))
        );
        assert_eq!(expiry(&store, "d"), None);
    }

    #[test]
    fn reply_shapes_follow_redis() {
        let store = Store::default();
        run(&store, Proto::Resp3, "SADD s a b c").unwrap();
        assert!(
            matches!(run(&store, Proto::Resp3, "SMEMBERS s"), Ok(Frame::Set(m)) if m.len() == 3)
        );
        assert!(matches!(
            run(&store, Proto::Resp3, "SINTER s"),
            Ok(Frame::Set(_))
        ));
        assert!(
            matches!(run(&store, Proto::Resp3, "SRANDMEMBER s 5"), Ok(Frame::Array(m)) if m.len() == 3)
        );
        assert!(
            matches!(run(&store, Proto::Resp3, "SRANDMEMBER s -5"), Ok(Frame::Array(m)) if m.len() == 5)
        );
        assert!(matches!(run(&store, Proto::Resp3, "SPOP s 2"), Ok(Frame::Set(m)) if m.len() == 2));
        assert!(matches!(run(&store, Proto::Resp3, "SPOP s 5"), Ok(Frame::Set(m)) if m.len() == 1));
        assert_eq!(run(&store, Proto::Resp3, "SCARD s"), Ok(Frame::Integer(0)));
        assert_eq!(run(&store, Proto::Resp3, "SPOP s"), Ok(Frame::Null));
        assert_eq!(
            run(&store, Proto::Resp3, "SSCAN s 0"),
            Ok(Frame::Array(vec![bulk("0"), Frame::Array(Vec::new())]))
        );
    }

    #[test]
    fn smove_checks_both_types_first() {
        let store = Store::default();
        run(&store, Proto::Resp2, "SADD s a").unwrap();
        run(&store, Proto::Resp2, "SET str v").unwrap();
        assert_eq!(
            run(&store, Proto::Resp2, "SMOVE nokey str a"),
            Ok(Frame::Integer(0))
        );
        assert!(run(&store, Proto::Resp2, "SMOVE s str zz").is_err());
        assert!(run(&store, Proto::Resp2, "SMOVE str s a").is_err());
        assert_eq!(
            run(&store, Proto::Resp2, "SMOVE s s a"),
            Ok(Frame::Integer(1))
        );
        assert_eq!(
            run(&store, Proto::Resp2, "SMOVE s t a"),
            Ok(Frame::Integer(1))
        );
        assert_eq!(run(&store, Proto::Resp2, "SCARD s"), Ok(Frame::Integer(0)));
        assert_eq!(expiry(&store, "s"), None);
    }

    #[test]
    fn scan_options_parse() {
        assert_eq!(scan_options(&[]), Ok(None));
        assert_eq!(scan_options(&[b"match", b"a*"]), Ok(Some(&b"a*"[..])));
        assert_eq!(scan_options(&[b"MATCH", b"*"]), Ok(None));
        assert_eq!(
            scan_options(&[b"match", b"a*", b"count", b"5", b"match", b"b"]),
            Ok(Some(&b"b"[..]))
        );
        assert!(scan_options(&[b"count", b"0"]).is_err());
        assert!(scan_options(&[b"count", b"x"]).is_err());
        assert!(scan_options(&[b"match"]).is_err());
        assert!(scan_options(&[b"type", b"string"]).is_err());
    }

    #[test]
    fn picks_follow_the_count() {
        let items = [1, 2, 3, 4, 5];
        for _ in 0..100 {
            let mut distinct = pick(&items, 3).unwrap();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 3);
        }
        assert_eq!(pick(&items, 10).unwrap().len(), 5);
        assert_eq!(pick(&items, -12).unwrap().len(), 12);
        assert!(pick(&items, 0).unwrap().is_empty());
        assert!(pick(&items, i64::MIN + 1).is_err());
        assert!((0..1000).all(|_| random_below(7) < 7));
    }
}
