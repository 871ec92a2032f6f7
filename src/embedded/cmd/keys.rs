//! Commands on keys whatever their type: deletion, existence, expiry, renaming, copying,
//! walking the keyspace (KEYS, SCAN) and looking inside (TYPE, OBJECT, MEMORY USAGE).

use crate::protocol::frame::Frame;

use super::strings::invalid_expire;
use super::{bulk, int, int_arg, is, ok, Command, Cx, Error, Reply, StoreError};
use crate::embedded::data::Data;
use crate::embedded::glob;
use crate::embedded::keyspace::SHARDS;

pub const COMMANDS: &[Command] = &[
    Command {
        name: "DEL",
        run: del,
    },
    Command {
        name: "UNLINK",
        run: del,
    },
    Command {
        name: "EXISTS",
        run: exists,
    },
    Command {
        name: "TOUCH",
        run: exists,
    },
    Command {
        name: "TYPE",
        run: type_of,
    },
    Command {
        name: "TTL",
        run: ttl,
    },
    Command {
        name: "PTTL",
        run: pttl,
    },
    Command {
        name: "EXPIRETIME",
        run: expiretime,
    },
    Command {
        name: "PEXPIRETIME",
        run: pexpiretime,
    },
    Command {
        name: "EXPIRE",
        run: expire,
    },
    Command {
        name: "PEXPIRE",
        run: pexpire,
    },
    Command {
        name: "PERSIST",
        run: persist,
    },
    Command {
        name: "EXPIREAT",
        run: expireat,
    },
    Command {
        name: "PEXPIREAT",
        run: pexpireat,
    },
    Command {
        name: "RENAME",
        run: rename,
    },
    Command {
        name: "RENAMENX",
        run: renamenx,
    },
    Command {
        name: "COPY",
        run: copy,
    },
    Command {
        name: "KEYS",
        run: keys,
    },
    Command {
        name: "SCAN",
        run: scan,
    },
    Command {
        name: "OBJECT",
        run: object,
    },
    Command {
        name: "MEMORY",
        run: memory,
    },
];

/// What `MEMORY USAGE` adds to the key and the value: the entry's own bookkeeping.
const ENTRY_OVERHEAD: usize = 48;

// === DEL, EXISTS ===

/// `DEL key...`: how many of the keys existed.
fn del(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let removed = args[1..].iter().filter(|k| cx.remove(k).is_some()).count();
    int(removed as i64)
}

/// `EXISTS key...`: how many of the keys exist (a key named twice counts twice).
fn exists(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let found = args[1..]
        .iter()
        .filter(|k| cx.read(k, |e| e.is_some()))
        .count();
    int(found as i64)
}

// === TTL, PTTL ===

/// Milliseconds left: -2 without the key, -1 without a deadline.
fn ms_left(cx: &Cx, key: &[u8]) -> i64 {
    cx.read(key, |e| match e {
        None => -2,
        Some(e) => e.expires_at.map_or(-1, |at| (at - cx.now).max(0)),
    })
}

fn ttl(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let ms = ms_left(cx, args[1]);
    int(if ms < 0 { ms } else { (ms + 500) / 1000 })
}

fn pttl(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    int(ms_left(cx, args[1]))
}

/// The deadline in ms since the epoch: -2 without the key, -1 without a deadline.
fn deadline_of(cx: &Cx, key: &[u8]) -> i64 {
    cx.read(key, |e| match e {
        None => -2,
        Some(e) => e.expires_at.unwrap_or(-1),
    })
}

fn expiretime(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let at = deadline_of(cx, args[1]);
    int(if at < 0 { at } else { (at + 500) / 1000 })
}

fn pexpiretime(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    int(deadline_of(cx, args[1]))
}

/// `TYPE key`: the type's name, "none" without the key.
fn type_of(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let name = cx.read(args[1], |e| e.map_or("none", |e| e.data.type_name()));
    Ok(Frame::simple(name))
}

// === EXPIRE and friends ===

fn expire(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_expiry(cx, args, true, cx.now, "expire")
}

fn pexpire(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_expiry(cx, args, false, cx.now, "pexpire")
}

fn expireat(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_expiry(cx, args, true, 0, "expireat")
}

fn pexpireat(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_expiry(cx, args, false, 0, "pexpireat")
}

/// `PERSIST key`: 1 when the key had a deadline and lost it. Metered, the request path
/// serves PERSIST as the longest paid expiry instead (`commands::persist`); this runs only
/// with metering off.
fn persist(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.write(args[1], |slot| {
        let had = slot.as_mut().and_then(|entry| entry.expires_at.take());
        int(i64::from(had.is_some()))
    })
}

/// `EXPIRE key n [NX | XX | GT | LT]` and friends: `n` is in seconds or milliseconds,
/// counted from `base` (now, or the epoch). A deadline already past deletes the key. GT and
/// LT take a key without a deadline as one that never expires.
fn set_expiry(cx: &mut Cx, args: &[&[u8]], seconds: bool, base: i64, name: &'static str) -> Reply {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for word in &args[3..] {
        if is(word, "NX") {
            nx = true;
        } else if is(word, "XX") {
            xx = true;
        } else if is(word, "GT") {
            gt = true;
        } else if is(word, "LT") {
            lt = true;
        } else {
            let option = String::from_utf8_lossy(word).into_owned();
            return Err(StoreError::UnsupportedOption { option }.into());
        }
    }
    if nx && (xx || gt || lt) {
        return Err(StoreError::ExpireNxAndOthers.into());
    }
    if gt && lt {
        return Err(StoreError::ExpireGtAndLt.into());
    }
    let n = int_arg(args[2])?;
    let ms = if seconds {
        n.checked_mul(1000).ok_or_else(|| invalid_expire(name))?
    } else {
        n
    };
    let at = ms.checked_add(base).ok_or_else(|| invalid_expire(name))?;
    let now = cx.now;
    cx.write(args[1], |slot| {
        let Some(entry) = slot.as_mut() else {
            return int(0);
        };
        let current = entry.expires_at;
        let refused = (nx && current.is_some())
            || (xx && current.is_none())
            || (gt && current.is_none_or(|c| at <= c))
            || (lt && current.is_some_and(|c| at >= c));
        if refused {
            return int(0);
        }
        if at <= now {
            *slot = None;
        } else {
            entry.expires_at = Some(at);
        }
        int(1)
    })
}

// === MEMORY USAGE ===

/// `MEMORY USAGE key [SAMPLES n]`: an estimate of the bytes the key takes; nil without it.
fn memory(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let sub = args.get(1).copied().unwrap_or_default();
    if !is(sub, "USAGE") {
        return Err(StoreError::UnknownSubcommand {
            container: "MEMORY",
            sub: String::from_utf8_lossy(sub).into_owned(),
        }
        .into());
    }
    let Some(key) = args.get(2) else {
        return Err(super::arity_error("memory|usage"));
    };
    let mut i = 3;
    while i < args.len() {
        match args.get(i + 1) {
            Some(n) if is(args[i], "SAMPLES") => {
                if int_arg(n)? < 0 {
                    return Err(StoreError::Syntax.into());
                }
                i += 2;
            }
            _ => return Err(StoreError::Syntax.into()),
        }
    }
    cx.read(key, |e| {
        Ok(e.map_or(Frame::Null, |e| {
            Frame::Integer((key.len() + e.data.size() + ENTRY_OVERHEAD) as i64)
        }))
    })
}

// === RENAME, RENAMENX, COPY ===

fn rename(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    move_key(cx, args, false)
}

fn renamenx(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    move_key(cx, args, true)
}

/// `RENAME key newkey` / `RENAMENX key newkey`: the value moves with its deadline and
/// replaces whatever `newkey` held (RENAMENX leaves an existing `newkey` alone: 0).
fn move_key(cx: &Cx, args: &[&[u8]], nx: bool) -> Reply {
    let (from, to) = (args[1], args[2]);
    let done = || if nx { int(1) } else { ok() };
    if !cx.read(from, |e| e.is_some()) {
        return Err(StoreError::NoSuchKey.into());
    }
    if from == to {
        return if nx { int(0) } else { ok() };
    }
    if nx && cx.read(to, |e| e.is_some()) {
        return int(0);
    }
    if let Some(entry) = cx.remove(from) {
        cx.insert(to, entry);
    }
    done()
}

/// `COPY source destination [DB 0] [REPLACE]`: 1 if copied (with the deadline), 0 if the
/// source is missing or the destination exists without REPLACE. The store has one
/// database, so only `DB 0` is accepted.
fn copy(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let mut replace = false;
    let mut i = 3;
    while i < args.len() {
        if is(args[i], "REPLACE") {
            replace = true;
        } else if let (true, Some(db)) = (is(args[i], "DB"), args.get(i + 1)) {
            let db = int_arg(db)?;
            if db != 0 {
                return Err(StoreError::CopyOtherDatabase.into());
            }
            i += 1;
        } else {
            return Err(StoreError::Syntax.into());
        }
        i += 1;
    }
    let (from, to) = (args[1], args[2]);
    if from == to {
        return Err(StoreError::SameObject.into());
    }
    let Some(entry) = cx.read(from, |e| e.cloned()) else {
        return int(0);
    };
    if !replace && cx.read(to, |e| e.is_some()) {
        return int(0);
    }
    cx.insert(to, entry);
    int(1)
}

// === KEYS, SCAN ===

/// Live keys matching `pattern` in one shard, appended to `out` (optionally only those of
/// type `type_name`); returns how many entries the shard holds.
fn collect_shard(
    cx: &Cx,
    shard: usize,
    pattern: &[u8],
    type_name: Option<&[u8]>,
    out: &mut Vec<Frame>,
) -> usize {
    let prefix = glob::literal_prefix(pattern);
    let everything = pattern == b"*";
    let entries = cx.store.keys.read_shard(shard);
    for (key, entry) in entries.iter() {
        if !key.starts_with(prefix) || entry.expired(cx.now) {
            continue;
        }
        if type_name.is_some_and(|t| !is(t, entry.data.type_name())) {
            continue;
        }
        if everything || glob::matches(pattern, key) {
            out.push(bulk(key.to_vec()));
        }
    }
    entries.len()
}

/// `KEYS pattern`
fn keys(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let mut found = Vec::new();
    for shard in 0..SHARDS {
        collect_shard(cx, shard, args[1], None, &mut found);
    }
    Ok(Frame::Array(found))
}

/// A SCAN cursor as Redis reads one (see [`crate::redis_num::parse_cursor`]).
fn scan_cursor(raw: &[u8]) -> Result<u64, Error> {
    crate::redis_num::parse_cursor(raw).ok_or_else(|| StoreError::InvalidCursor.into())
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`. The cursor is the next shard to
/// visit: shards are visited in order until COUNT entries have been looked at, so a key
/// present during the whole iteration is returned exactly once.
fn scan(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let cursor = scan_cursor(args[1])?;
    let (mut pattern, mut count, mut type_name): (&[u8], i64, Option<&[u8]>) = (b"*", 10, None);
    let mut i = 2;
    while i < args.len() {
        let (word, value) = (args[i], args.get(i + 1));
        match value {
            Some(v) if is(word, "COUNT") => {
                count = int_arg(v)?;
                if count < 1 {
                    return Err(StoreError::Syntax.into());
                }
            }
            Some(v) if is(word, "MATCH") => pattern = v,
            Some(v) if is(word, "TYPE") => type_name = Some(v),
            _ => return Err(StoreError::Syntax.into()),
        }
        i += 2;
    }
    let mut found = Vec::new();
    let mut shard = usize::try_from(cursor).unwrap_or(SHARDS).min(SHARDS);
    let mut visited = 0usize;
    while shard < SHARDS && visited < count as usize {
        visited += collect_shard(cx, shard, pattern, type_name, &mut found);
        shard += 1;
    }
    let next = if shard >= SHARDS { 0 } else { shard };
    Ok(Frame::Array(vec![
        bulk(next.to_string()),
        Frame::Array(found),
    ]))
}

// === OBJECT ===

/// Redis 7.0's built-in limits for its compact encodings.
const HASH_LISTPACK_ENTRIES: usize = 512;
const ZSET_LISTPACK_ENTRIES: usize = 128;
const LISTPACK_VALUE: usize = 64;
const INTSET_ENTRIES: usize = 512;
/// Integers Redis shares between keys (their reference count reads as `i32::MAX`).
const SHARED_INTEGERS: i64 = 10_000;
/// The longest string Redis keeps in one allocation with its header.
const EMBSTR_MAX: usize = 44;

/// A string holding an integer Redis would store as one.
fn as_integer(s: &[u8]) -> Option<i64> {
    (s.len() <= 20)
        .then(|| crate::redis_num::parse_int(s))
        .flatten()
}

/// The encoding Redis 7.0 would most likely use for `data` (the store keeps one
/// representation per type, so this follows the contents and Redis's default limits).
fn encoding(data: &Data) -> &'static str {
    match data {
        Data::Str(s) if as_integer(s).is_some() => "int",
        Data::Str(s) if s.len() <= EMBSTR_MAX => "embstr",
        Data::Str(_) => "raw",
        Data::List(_) => "quicklist",
        Data::Hash(h) => {
            let small = h.len() <= HASH_LISTPACK_ENTRIES
                && h.iter()
                    .all(|(f, v)| f.len() <= LISTPACK_VALUE && v.len() <= LISTPACK_VALUE);
            if small {
                "listpack"
            } else {
                "hashtable"
            }
        }
        Data::Set(s) => {
            let integers = s.len() <= INTSET_ENTRIES && s.iter().all(|m| as_integer(m).is_some());
            if integers {
                "intset"
            } else {
                "hashtable"
            }
        }
        Data::ZSet(z) => {
            let small = z.len() <= ZSET_LISTPACK_ENTRIES
                && z.iter().all(|(m, _)| m.len() <= LISTPACK_VALUE);
            if small {
                "listpack"
            } else {
                "skiplist"
            }
        }
        Data::Stream(_) => "stream",
    }
}

/// `OBJECT ENCODING|IDLETIME|REFCOUNT key`: nil without the key.
fn object(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let sub = args.get(1).copied().unwrap_or_default();
    let known = ["ENCODING", "IDLETIME", "REFCOUNT"]
        .iter()
        .any(|w| is(sub, w));
    let Some(key) = args.get(2).filter(|_| known && args.len() == 3) else {
        return Err(StoreError::ObjectUsage {
            sub: String::from_utf8_lossy(sub).into_owned(),
        }
        .into());
    };
    cx.read(key, |e| {
        let Some(e) = e else {
            return Ok(Frame::Null);
        };
        Ok(if is(sub, "ENCODING") {
            bulk(encoding(&e.data))
        } else if is(sub, "IDLETIME") {
            Frame::Integer(0)
        } else {
            let shared = matches!(&e.data, Data::Str(s)
                if as_integer(s).is_some_and(|n| (0..SHARED_INTEGERS).contains(&n)));
            Frame::Integer(if shared { i64::from(i32::MAX) } else { 1 })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::data::Entry;
    use crate::embedded::Store;
    use crate::protocol::Proto;

    fn keys_of(reply: &Frame) -> (Vec<u8>, Vec<Vec<u8>>) {
        let Frame::Array(parts) = reply else {
            panic!("not an array: {reply:?}");
        };
        let (Frame::Bulk(cursor), Frame::Array(keys)) = (&parts[0], &parts[1]) else {
            panic!("not a SCAN reply: {reply:?}");
        };
        let keys = keys
            .iter()
            .map(|k| match k {
                Frame::Bulk(k) => k.to_vec(),
                other => panic!("not a key: {other:?}"),
            })
            .collect();
        (cursor.to_vec(), keys)
    }

    #[test]
    fn scan_returns_every_key_once_whatever_the_count() {
        let store = Store::default();
        let mut cx = Cx {
            store: &store,
            proto: Proto::Resp2,
            now: 1_000,
        };
        for i in 0..300 {
            let key = format!("ns:{i}");
            cx.insert(key.as_bytes(), Entry::new(Data::Str(b"v".to_vec())));
            cx.insert(
                format!("other:{i}").as_bytes(),
                Entry::new(Data::Str(vec![])),
            );
        }
        // Expired keys are never returned.
        let mut dead = Entry::new(Data::Str(vec![]));
        dead.expires_at = Some(999);
        cx.insert(b"ns:dead", dead);
        for count in ["1", "7", "10", "1000"] {
            let mut cursor = b"0".to_vec();
            let mut seen = Vec::new();
            let mut calls = 0;
            loop {
                let args: [&[u8]; 6] = [
                    b"SCAN",
                    &cursor,
                    b"MATCH",
                    b"ns:*",
                    b"COUNT",
                    count.as_bytes(),
                ];
                let (next, keys) = keys_of(&scan(&mut cx, &args).unwrap());
                seen.extend(keys);
                calls += 1;
                if next == b"0" {
                    break;
                }
                cursor = next;
            }
            seen.sort();
            let before = seen.len();
            seen.dedup();
            assert_eq!(before, seen.len(), "COUNT {count}: a key came twice");
            assert_eq!(seen.len(), 300, "COUNT {count}");
            assert!(calls <= SHARDS, "COUNT {count}: {calls} calls");
        }
        let args: [&[u8]; 2] = [b"SCAN", b"999999"];
        assert_eq!(
            keys_of(&scan(&mut cx, &args).unwrap()),
            (b"0".to_vec(), vec![])
        );
        let args: [&[u8]; 2] = [b"SCAN", b"x1"];
        assert!(scan(&mut cx, &args).is_err());
    }
}
