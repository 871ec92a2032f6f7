//! What the embedded store's data costs in memory, counted as it is written, and the limit
//! on it (`PKV_MAXMEMORY`, Redis's `maxmemory` with `maxmemory-policy noeviction`).
//!
//! Every key's charge is an estimate of the heap its key, its entry and its value take under
//! the system allocator (chunk headers and rounding included), kept in per-shard counters
//! that each write adjusts under its shard's lock ([`super::keyspace`]). A string is measured
//! exactly on every write (its length is at hand). An aggregate is measured by walking it,
//! which a write to a big one must not do: so an aggregate carries its last figure
//! ([`Counted`]), and a write to one of more than [`EXACT_ELEMENTS`] elements adjusts it
//! instead, by the change in its element count at its average element cost, plus the
//! request's own bytes when it did not shrink (what a one-key write can add is in its
//! arguments). When the adjusted figure has moved by half of the last measured one, the value
//! is walked again; so the walks cost O(1) per byte written, amortized, and the figure of a
//! big aggregate stays within half of its last measurement. Additions are over-counted
//! (their whole request); a removal counts an average element, so removing a big
//! aggregate's smallest elements under-counts it, by at most about its size at the last
//! walk, until the next one.
//!
//! The limit: a command Redis flags `denyoom` is refused with Redis's `OOM` error when the
//! memory in use plus the request's size would pass it, before it runs ([`refuses`]); every
//! other command (reads, deletions, expiry, FLUSHDB) and every ledger step runs whatever
//! the memory in use, so a tenant can always free memory and money is always settled.

use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::mem::size_of;

use super::data::{Data, Entry, ZSet};
use super::stream::Stream;

/// Aggregates with at most this many elements are walked on every write.
pub const EXACT_ELEMENTS: usize = 128;

/// The commands Redis 7.0 flags `denyoom` (`COMMAND INFO`), among those the store runs:
/// the ones refused over the limit. `XGROUP` stands for its CREATE and CREATECONSUMER.
pub const DENYOOM: &[&str] = &[
    "APPEND",
    "BITFIELD",
    "BITOP",
    "BLMOVE",
    "BRPOPLPUSH",
    "COPY",
    "DECR",
    "DECRBY",
    "GEOADD",
    "GEORADIUS",
    "GEORADIUSBYMEMBER",
    "GEOSEARCHSTORE",
    "GETSET",
    "HINCRBY",
    "HINCRBYFLOAT",
    "HMSET",
    "HSET",
    "HSETNX",
    "INCR",
    "INCRBY",
    "INCRBYFLOAT",
    "LINSERT",
    "LMOVE",
    "LPUSH",
    "LPUSHX",
    "LSET",
    "MSET",
    "MSETNX",
    "PFADD",
    "PFMERGE",
    "PSETEX",
    "RPOPLPUSH",
    "RPUSH",
    "RPUSHX",
    "SADD",
    "SDIFFSTORE",
    "SET",
    "SETBIT",
    "SETEX",
    "SETNX",
    "SETRANGE",
    "SINTERSTORE",
    "SORT",
    "SUNIONSTORE",
    "XADD",
    "XGROUP",
    "XSETID",
    "ZADD",
    "ZDIFFSTORE",
    "ZINCRBY",
    "ZINTERSTORE",
    "ZRANGESTORE",
    "ZUNIONSTORE",
];

/// True when Redis refuses `args` (a command line) over `maxmemory`.
pub fn denies_oom(args: &[&[u8]]) -> bool {
    let Some(name) = args.first() else {
        return false;
    };
    if name.eq_ignore_ascii_case(b"XGROUP") {
        return args.get(1).is_some_and(|sub| {
            sub.eq_ignore_ascii_case(b"CREATE") || sub.eq_ignore_ascii_case(b"CREATECONSUMER")
        });
    }
    DENYOOM
        .iter()
        .any(|denied| name.eq_ignore_ascii_case(denied.as_bytes()))
}

/// The request's size as the limit sees it: its arguments' bytes, and for the writes at an
/// offset (SETRANGE, SETBIT) the offset too, which the string may grow to.
pub fn request_bytes(args: &[&[u8]]) -> usize {
    let sent: usize = args.iter().map(|a| a.len()).sum();
    let offset = |divisor: u64| {
        args.get(2)
            .and_then(|o| std::str::from_utf8(o).ok()?.parse::<u64>().ok())
            .map_or(0, |o| usize::try_from(o / divisor).unwrap_or(usize::MAX))
    };
    let reach = match args.first() {
        Some(name) if name.eq_ignore_ascii_case(b"SETRANGE") => offset(1),
        Some(name) if name.eq_ignore_ascii_case(b"SETBIT") => offset(8),
        _ => 0,
    };
    sent.saturating_add(reach)
}

/// True when a command (`args`) must be refused: a limit is set (`limit` > 0), the command
/// is `denyoom`, and the memory in use plus the request would pass the limit. A request
/// bigger than the room left is refused even under the limit, so one command cannot pass it
/// by more than what it adds beyond its own size (see `docs/security.md`).
pub fn refuses(used: u64, limit: u64, args: &[&[u8]]) -> bool {
    limit > 0
        && denies_oom(args)
        && used.saturating_add(request_bytes(args) as u64) > limit
        && !admitted()
}

thread_local! {
    /// The bytes of the request running on this thread, for [`settle`].
    static REQUEST: Cell<usize> = const { Cell::new(0) };
    /// Set while a transaction admitted as a whole runs: its commands are not checked again.
    static ADMITTED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (one command) with its request's size known to the accounting.
pub fn with_request<R>(bytes: usize, f: impl FnOnce() -> R) -> R {
    let before = REQUEST.with(|r| r.replace(bytes));
    let result = f();
    REQUEST.with(|r| r.set(before));
    result
}

/// Runs `f` (an admitted transaction) without checking its commands one by one: EXEC is
/// refused or run whole, as Redis does.
pub fn admitted_while<R>(f: impl FnOnce() -> R) -> R {
    let before = ADMITTED.with(|a| a.replace(true));
    let result = f();
    ADMITTED.with(|a| a.set(before));
    result
}

fn admitted() -> bool {
    ADMITTED.with(Cell::get)
}

/// An aggregate's last counted figure, carried with the value (cloned and moved with it,
/// so RENAME and COPY need not walk it). Empty on a value no write has counted yet.
#[derive(Debug, Clone, Default)]
pub struct Counted(Option<Box<Tally>>);

#[derive(Debug, Clone, Copy)]
struct Tally {
    /// The value's charge now.
    bytes: usize,
    /// The charge when the value was last walked.
    measured: usize,
    /// Its elements when `bytes` was set.
    elements: usize,
}

/// What one key costs besides its value: the map's slot (at hashbrown's average load), the
/// key's own allocation, and the control byte.
fn base(key_len: usize) -> usize {
    (size_of::<(Box<[u8]>, Entry)>() + 1) * 3 / 2 + alloc(key_len)
}

/// What the system allocator (glibc's) takes for `n` requested bytes: an 8-byte header,
/// rounded up to 16, 32 at least.
pub fn alloc(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 8 + 15) & !15).max(32)
    }
}

/// A hash table of `len` elements: its buckets (a power of two, at most 7/8 full) of `slot`
/// bytes each, with their control bytes.
fn table(len: usize, slot: usize) -> usize {
    if len == 0 {
        0
    } else {
        alloc((len * 8 / 7 + 1).next_power_of_two().max(4) * (slot + 1))
    }
}

/// A B-tree's share per element of `element` bytes: leaves hold up to 11 elements, about
/// two thirds full, each leaf with a parent pointer, lengths and its allocation header.
fn btree(element: usize) -> usize {
    element * 3 / 2 + 8
}

/// The element count a write's adjustment is based on.
fn elements(data: &Data) -> usize {
    match data {
        Data::Str(_) => 0,
        Data::List(l) => l.len(),
        Data::Hash(h) => h.len(),
        Data::Set(s) => s.len(),
        Data::ZSet(z) => z.len(),
        Data::Stream(s) => s.entries.len() + s.groups.values().map(|g| g.pel.len()).sum::<usize>(),
    }
}

/// The value's heap, walked. Everything is reckoned from the value's contents, not from the
/// spare capacity its history left it (which a load from the snapshot would not have): the
/// same data counts the same before and after a restart, whichever way it was written.
fn measure(data: &Data) -> usize {
    match data {
        Data::Str(s) => alloc(s.len()),
        Data::List(l) => list(l),
        Data::Hash(h) => hash(h),
        Data::Set(s) => set(s),
        Data::ZSet(z) => zset(z),
        Data::Stream(s) => size_of::<Stream>() + 16 + stream(s),
    }
}

fn list(l: &VecDeque<Vec<u8>>) -> usize {
    // A ring buffer grown by doubling: a third spare on average.
    alloc(l.len() * size_of::<Vec<u8>>() * 4 / 3) + l.iter().map(|e| alloc(e.len())).sum::<usize>()
}

fn hash(h: &HashMap<Vec<u8>, Vec<u8>>) -> usize {
    table(h.len(), 2 * size_of::<Vec<u8>>())
        + h.iter()
            .map(|(f, v)| alloc(f.len()) + alloc(v.len()))
            .sum::<usize>()
}

fn set(s: &HashSet<Vec<u8>>) -> usize {
    table(s.len(), size_of::<Vec<u8>>()) + s.iter().map(|e| alloc(e.len())).sum::<usize>()
}

fn zset(z: &ZSet) -> usize {
    // Each member is held twice (the score map and the order), its score map slot is a
    // `Vec` and an `f64`, its order element a score and a `Vec`.
    let slot = size_of::<Vec<u8>>() + 8;
    z.iter()
        .map(|(m, _)| 2 * alloc(m.len()) + (slot + 1) * 3 / 2 + btree(slot))
        .sum()
}

fn stream(s: &Stream) -> usize {
    let pair = size_of::<(Vec<u8>, Vec<u8>)>();
    let entries: usize = s
        .entries
        .values()
        .map(|f| {
            btree(16 + size_of::<Vec<u8>>())
                + alloc(f.len() * pair)
                + f.iter()
                    .map(|(k, v)| alloc(k.len()) + alloc(v.len()))
                    .sum::<usize>()
        })
        .sum();
    let groups: usize = s
        .groups
        .iter()
        .map(|(name, g)| {
            alloc(name.len())
                + btree(size_of::<Vec<u8>>() + 64)
                + g.pel
                    .values()
                    .map(|p| {
                        btree(16 + size_of::<super::stream::Pending>()) + alloc(p.consumer.len())
                    })
                    .sum::<usize>()
                + g.consumers
                    .iter()
                    .map(|(n, c)| alloc(n.len()) + btree(64) + c.pel.len() * btree(16))
                    .sum::<usize>()
        })
        .sum();
    entries + groups + s.nodes.len() * btree(32)
}

/// `key`'s charge as it stands, without changing it: what a removal gives back. An
/// aggregate no write has counted (a value just loaded) is walked.
pub fn charge(key_len: usize, entry: &Entry) -> usize {
    let value = match (&entry.data, &entry.counted.0) {
        (Data::Str(s), _) => alloc(s.len()),
        (_, Some(tally)) => tally.bytes,
        (data, None) => measure(data),
    };
    base(key_len) + value
}

/// Counts `entry` after a write (or as it is stored) and returns its charge: walked when it
/// is a string, small, new, or its adjusted figure has drifted by half since its last walk;
/// otherwise adjusted (see the module's documentation).
pub fn settle(key_len: usize, entry: &mut Entry) -> usize {
    if let Data::Str(s) = &entry.data {
        entry.counted.0 = None;
        return base(key_len) + alloc(s.len());
    }
    let n = elements(&entry.data);
    let adjusted = match entry.counted.0.as_deref() {
        Some(t) if n > EXACT_ELEMENTS => {
            let per = t.bytes / t.elements.max(1);
            let bytes = if n >= t.elements {
                t.bytes
                    .saturating_add((n - t.elements).saturating_mul(per))
                    .saturating_add(REQUEST.with(Cell::get))
            } else {
                t.bytes.saturating_sub((t.elements - n).saturating_mul(per))
            };
            (bytes.abs_diff(t.measured) <= t.measured / 2).then_some(Tally {
                bytes,
                measured: t.measured,
                elements: n,
            })
        }
        _ => None,
    };
    let tally = adjusted.unwrap_or_else(|| {
        let bytes = measure(&entry.data);
        Tally {
            bytes,
            measured: bytes,
            elements: n,
        }
    });
    match &mut entry.counted.0 {
        Some(t) => **t = tally,
        slot => *slot = Some(Box::new(tally)),
    }
    base(key_len) + tally.bytes
}

/// Parses a memory size as redis.conf writes it: bytes, or a number with `k`, `kb`, `m`,
/// `mb`, `g`, `gb` (any case; `k` is 1000, `kb` 1024, and so on).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let units: [(&str, u64); 6] = [
        ("kb", 1 << 10),
        ("mb", 1 << 20),
        ("gb", 1 << 30),
        ("k", 1_000),
        ("m", 1_000_000),
        ("g", 1_000_000_000),
    ];
    let (digits, unit) = units
        .iter()
        .find_map(|(suffix, unit)| lower.strip_suffix(suffix).map(|d| (d, *unit)))
        .unwrap_or((lower.as_str(), 1));
    let bad = || format!("expected bytes or a size such as 100mb or 1gb, got {text:?}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_as_redis_conf_reads_them() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert_eq!(parse_size("100mb"), Ok(100 << 20));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("2k"), Ok(2000));
        assert_eq!(parse_size("3kb"), Ok(3072));
        assert_eq!(parse_size("1m"), Ok(1_000_000));
        for bad in [
            "",
            "mb",
            "-1",
            "1.5gb",
            "1tb",
            "12 mb x",
            "99999999999999999999gb",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn denyoom_follows_redis() {
        assert!(denies_oom(&[b"set", b"k", b"v"]));
        assert!(denies_oom(&[b"XGROUP", b"create", b"s", b"g", b"$"]));
        assert!(!denies_oom(&[b"XGROUP", b"DESTROY", b"s", b"g"]));
        for free in [
            "DEL", "UNLINK", "EXPIRE", "FLUSHDB", "GET", "LPOP", "HDEL", "GETEX",
        ] {
            assert!(!denies_oom(&[free.as_bytes(), b"k"]), "{free}");
        }
        assert!(refuses(90, 100, &[b"SET", b"k", b"0123456789"]));
        assert!(!refuses(80, 100, &[b"SET", b"k", b"0123456789"]));
        assert!(!refuses(1000, 0, &[b"SET", b"k", b"v"]));
        assert!(!refuses(1000, 100, &[b"DEL", b"k"]));
        // A write at an offset counts the offset it reaches.
        assert!(refuses(0, 1 << 20, &[b"SETRANGE", b"k", b"2000000", b"x"]));
        assert!(refuses(0, 1 << 20, &[b"setbit", b"k", b"16000000", b"1"]));
        assert!(!refuses(0, 1 << 20, &[b"SETBIT", b"k", b"8000", b"1"]));
        assert!(!admitted_while(|| refuses(
            1000,
            100,
            &[b"SET", b"k", b"v"]
        )));
    }

    fn big_hash(n: usize) -> Entry {
        Entry::new(Data::Hash(
            (0..n)
                .map(|i| (format!("field:{i}").into_bytes(), vec![b'v'; 20]))
                .collect(),
        ))
    }

    #[test]
    fn a_big_aggregate_is_adjusted_and_walked_again_when_it_drifts() {
        let mut entry = big_hash(1000);
        let first = settle(3, &mut entry);
        assert_eq!(first, base(3) + measure(&entry.data));
        // One more field: adjusted, not walked, and never below the truth for growth.
        if let Data::Hash(h) = &mut entry.data {
            h.insert(b"new".to_vec(), vec![b'x'; 100]);
        }
        let grown = with_request(120, || settle(3, &mut entry));
        assert!(grown > first);
        assert!(grown >= base(3) + measure(&entry.data) - 64 * 1024 / 1000);
        // Adding half again as many elements forces a walk: exact again.
        if let Data::Hash(h) = &mut entry.data {
            h.extend((0..600).map(|i| (format!("more:{i}").into_bytes(), vec![b'w'; 20])));
        }
        let walked = settle(3, &mut entry);
        assert_eq!(walked, base(3) + measure(&entry.data));
        // A removal gives back what was counted.
        assert_eq!(charge(3, &entry), walked);
    }

    /// After any sequence of writes to values too small to be adjusted, the count the
    /// writes kept equals a count made from scratch.
    #[test]
    fn the_count_kept_by_writes_equals_a_recount() {
        use crate::embedded::Store;
        use crate::protocol::Proto;
        let store = Store::default();
        let run = |args: &[&str]| {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            let _ = store.run(Proto::Resp2, &args);
        };
        for i in 0..50 {
            let (k, n) = (format!("k{}", i % 7), i.to_string());
            run(&["SET", &format!("s{i}"), &"x".repeat(i * 13)]);
            run(&["APPEND", &k, &n]);
            run(&["SETRANGE", &format!("r{i}"), &(i * 100).to_string(), "y"]);
            run(&["HSET", &format!("h{}", i % 5), &n, &"v".repeat(i)]);
            run(&["RPUSH", &format!("l{}", i % 3), &n, "a", "bb"]);
            run(&["SADD", &format!("set{}", i % 4), &n]);
            run(&["ZADD", &format!("z{}", i % 4), &n, &n]);
            run(&["XADD", "x", "*", "f", &n]);
            run(&["PFADD", "hll", &n]);
            run(&["GEOADD", "geo", "13.4", "52.5", &n]);
            if i % 3 == 0 {
                run(&["LPOP", &format!("l{}", i % 3)]);
                run(&["HDEL", &format!("h{}", i % 5), &(i / 2).to_string()]);
                run(&["DEL", &format!("s{}", i / 2)]);
                run(&["XTRIM", "x", "MAXLEN", "5"]);
            }
            if i % 5 == 0 {
                run(&["RENAME", &format!("set{}", i % 4), &format!("moved{i}")]);
                run(&["COPY", "geo", &format!("geo{i}")]);
                run(&["SUNIONSTORE", "union", "set1", "set2", "set3"]);
                run(&["PEXPIRE", &format!("s{i}"), "1"]);
            }
        }
        run(&["XGROUP", "CREATE", "x", "g", "0"]);
        run(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "x", ">"]);
        std::thread::sleep(std::time::Duration::from_millis(5));
        for index in 0..crate::embedded::keyspace::SHARDS {
            store.keys.expire_shard(index, crate::embedded::now_ms());
        }
        let kept = store.memory_used();
        assert!(kept > 0);
        store.keys.recount();
        assert_eq!(kept, store.memory_used());
        // Deleting every key gives back everything counted.
        let keys: Vec<Vec<u8>> = (0..crate::embedded::keyspace::SHARDS)
            .flat_map(|i| {
                store
                    .keys
                    .read_shard(i)
                    .keys()
                    .map(|k| k.to_vec())
                    .collect::<Vec<_>>()
            })
            .collect();
        for key in keys {
            let _ = store.run(Proto::Resp2, &[b"DEL", &key]);
        }
        assert_eq!(store.memory_used(), 0);
    }

    #[test]
    fn strings_are_exact() {
        let mut entry = Entry::new(Data::Str(vec![0; 1000]));
        assert_eq!(settle(1, &mut entry), base(1) + 1008);
    }
}
