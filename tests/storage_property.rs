//! Property: whatever sequence of writes a tenant sends, the storage its keys hold never
//! grows by more than it paid for (SPEC 7: storage is prepaid, on what a write holds).
//!
//! Random sequences of served write commands, with random arguments (offsets, sizes,
//! options, existing and missing keys, keys of the wrong type), run through pkv on both
//! backends, each sequence on a fresh account. After every command the storage the
//! account's keys hold is measured, and its growth is compared with the byte-seconds
//! `PKV.BALANCE` says the command was charged:
//!
//!     held = Σ over the account's keys of bytes(key) × whole seconds left on it (rounded up)
//!     held after − held before ≤ byte_seconds after − byte_seconds before
//!
//! `bytes(key)` is what `docs/metering.md` calls a key's bytes: the client-visible name
//! plus the data stored, read through pkv:
//!
//! - string (HyperLogLogs included): `STRLEN`;
//! - hash: every field and value; list, set: every element;
//! - sorted set (geo sets included): every member (a score is a fixed-size number, not
//!   client data: ZADD pays for the score text it is given, so counting it would only
//!   loosen the check);
//! - stream: every field and value of every entry (IDs are fixed-size), every group name
//!   and every consumer name.
//!
//! A seeded deterministic generator is used rather than proptest: every case drives real
//! processes and carries state from command to command, which proptest's shrinking cannot
//! replay. A failure prints the seed, the sequence so far and the command that broke the
//! property; `PKV_PROPERTY_SEED` replays a seed, `PKV_PROPERTY_SEQUENCES` sets how many
//! sequences run (160 by default, 20 steps each: about 30 s upstream, 20 s embedded), and
//! `PKV_PROPERTY_DEBUG` prints every error reply.
//!
//! Sets and hashes get letter-only members and values: Redis keeps integer-like ones in
//! compact encodings (intset, listpack integers) in fewer bytes than their text, and a
//! store (SINTERSTORE, COPY, ...) is paid on the real size (`MEMORY USAGE ... SAMPLES 0`),
//! which would then be below the text length this test counts.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::time::Duration;

use common::*;
use redis::Value;

/// xorshift64*: small, deterministic, good enough to pick commands.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn int(&mut self, lo: i64, hi: i64) -> String {
        (lo + self.below((hi - lo + 1) as u64) as i64).to_string()
    }

    /// A letter-only value: usually short, sometimes empty, now and then long.
    fn text(&mut self) -> String {
        let len = match self.below(10) {
            0 => 0,
            1 => 50 + self.below(200),
            _ => 1 + self.below(12),
        };
        (0..len)
            .map(|_| (b'a' + self.below(26) as u8) as char)
            .collect()
    }
}

/// The keys a sequence writes, by family.
const STRINGS: &[&str] = &["s0", "s1", "a-longer-string-key"];
const HASHES: &[&str] = &["h0", "h1"];
const LISTS: &[&str] = &["l0", "l1"];
const SETS: &[&str] = &["t0", "t1"];
const ZSETS: &[&str] = &["z0", "z1"];
const STREAMS: &[&str] = &["x0", "x1"];
const HLLS: &[&str] = &["p0", "p1"];
const GEOS: &[&str] = &["g0", "g1"];
const GROUPS: &[&str] = &["g", "group-with-a-long-name"];
const CONSUMERS: &[&str] = &["c", "consumer", "a-consumer-with-a-long-name"];

fn all_keys(upstream: bool) -> Vec<&'static str> {
    let mut keys: Vec<&str> = [STRINGS, HASHES, LISTS, SETS, ZSETS, STREAMS].concat();
    if upstream {
        keys.extend([HLLS, GEOS].concat());
    }
    keys
}

/// The families the generator covers, and which backend serves each.
#[derive(Clone, Copy, Debug)]
enum Family {
    String,
    Bit,
    Hash,
    List,
    Set,
    ZSet,
    Stream,
    Hll,
    Geo,
    Key,
}

const EVERYWHERE: &[Family] = &[
    Family::String,
    Family::Bit,
    Family::Hash,
    Family::List,
    Family::Set,
    Family::ZSet,
    Family::Key,
];
const UPSTREAM_ONLY: &[Family] = &[Family::Stream, Family::Hll, Family::Geo];

/// A key of `family` most of the time, any key of the sequence now and then (wrong types,
/// cross-family stores).
fn key(r: &mut Rng, family: &[&'static str], upstream: bool) -> String {
    if r.chance(10) {
        let keys = all_keys(upstream);
        keys[r.below(keys.len() as u64) as usize].to_owned()
    } else {
        r.pick(family).to_owned()
    }
}

/// The keys of a family, for the key commands to aim at.
fn keys_of(family: Family) -> &'static [&'static str] {
    match family {
        Family::String | Family::Bit => STRINGS,
        Family::Hash => HASHES,
        Family::List => LISTS,
        Family::Set => SETS,
        Family::ZSet => ZSETS,
        Family::Stream => STREAMS,
        Family::Hll => HLLS,
        Family::Geo => GEOS,
        Family::Key => &[],
    }
}

/// One random write command of `family`; key commands mostly aim at the `focus` keys.
fn command(r: &mut Rng, family: Family, upstream: bool, focus: &[&str]) -> Vec<String> {
    let s = |items: &[&str]| -> Vec<String> { items.iter().map(|i| (*i).to_owned()).collect() };
    let k = |r: &mut Rng, f: &[&'static str]| key(r, f, upstream);
    match family {
        Family::String => {
            let key = k(r, STRINGS);
            match r.below(16) {
                0 | 1 => {
                    let mut c = vec!["SET".into(), key, r.text()];
                    if r.chance(30) {
                        c.push(r.pick(&["NX", "XX"]).into());
                    }
                    if r.chance(30) {
                        c.push("GET".into());
                    }
                    match r.below(4) {
                        0 => c.extend(["EX".into(), r.int(1, 100_000)]),
                        1 => c.extend(["PX".into(), r.int(1, 100_000_000)]),
                        2 => c.push("KEEPTTL".into()),
                        _ => {}
                    }
                    c
                }
                2 => vec!["SETNX".into(), key, r.text()],
                3 => vec!["SETEX".into(), key, r.int(1, 100_000), r.text()],
                4 => vec!["PSETEX".into(), key, r.int(1, 100_000_000), r.text()],
                5 => vec!["GETSET".into(), key, r.text()],
                6 => {
                    let mut c = vec!["GETEX".into(), key];
                    if r.chance(70) {
                        c.extend([r.pick(&["EX", "PX"]).into(), r.int(1, 1_000_000)]);
                    }
                    c
                }
                7 => {
                    let name = r.pick(&["MSET", "MSETNX"]).to_owned();
                    vec![name, key, r.text(), k(r, STRINGS), r.text()]
                }
                8 => vec!["APPEND".into(), key, r.text()],
                9 => vec![r.pick(&["INCR", "DECR"]).into(), key],
                10 => vec![
                    r.pick(&["INCRBY", "DECRBY"]).into(),
                    key,
                    r.int(-1_000_000_000_000, 1_000_000_000_000),
                ],
                11 => {
                    let by = r.pick(&["1.5", "-0.25", "1e10", "3e100", "1e300", "-7"]);
                    vec!["INCRBYFLOAT".into(), key, by.into()]
                }
                12 | 13 => vec!["SETRANGE".into(), key, r.int(0, 3000), r.text()],
                14 => vec!["GETDEL".into(), key],
                _ => vec!["SET".into(), key, r.int(-99_999, 99_999)],
            }
        }
        Family::Bit => {
            let key = k(r, STRINGS);
            match r.below(4) {
                0 | 1 => vec!["SETBIT".into(), key, r.int(0, 30_000), r.int(0, 1)],
                2 => {
                    let mut c = vec!["BITFIELD".into(), key];
                    for _ in 0..1 + r.below(3) {
                        match r.below(4) {
                            0 => c.extend(s(&["GET", "u8"]).into_iter().chain([r.int(0, 100)])),
                            1 => c.extend(s(&["OVERFLOW", r.pick(&["SAT", "WRAP", "FAIL"])])),
                            2 => {
                                let width = r.int(1, 32);
                                c.extend([
                                    "SET".into(),
                                    format!("u{width}"),
                                    format!("#{}", r.below(500)),
                                    r.int(0, 255),
                                ]);
                            }
                            _ => c.extend([
                                "INCRBY".into(),
                                "i16".into(),
                                r.int(0, 20_000),
                                r.int(-100, 100),
                            ]),
                        }
                    }
                    c
                }
                _ => {
                    let op = r.pick(&["AND", "OR", "XOR", "NOT"]).to_owned();
                    let mut c = vec!["BITOP".into(), op.clone(), key, k(r, STRINGS)];
                    if op != "NOT" {
                        c.push(k(r, STRINGS));
                    }
                    c
                }
            }
        }
        Family::Hash => {
            let key = k(r, HASHES);
            let field = |r: &mut Rng| r.pick(&["f", "field", "a-long-field-name"]).to_owned();
            match r.below(6) {
                0 | 1 => {
                    let mut c = vec![r.pick(&["HSET", "HMSET"]).into(), key];
                    for _ in 0..1 + r.below(3) {
                        c.extend([field(r), r.text()]);
                    }
                    c
                }
                2 => vec!["HSETNX".into(), key, field(r), r.text()],
                3 => vec!["HDEL".into(), key, field(r)],
                4 => vec![
                    "HINCRBY".into(),
                    key,
                    r.pick(&["n", "count"]).into(),
                    r.int(-1_000_000, 1_000_000),
                ],
                _ => vec![
                    "HINCRBYFLOAT".into(),
                    key,
                    r.pick(&["n", "x"]).into(),
                    r.pick(&["0.5", "1e20", "-3", "2.5e200"]).into(),
                ],
            }
        }
        Family::List => {
            let key = k(r, LISTS);
            let end = |r: &mut Rng| r.pick(&["LEFT", "RIGHT"]).to_owned();
            match r.below(12) {
                0 | 1 => {
                    let mut c = vec![r.pick(&["LPUSH", "RPUSH"]).into(), key];
                    for _ in 0..1 + r.below(4) {
                        c.push(r.text());
                    }
                    c
                }
                2 => vec![r.pick(&["LPUSHX", "RPUSHX"]).into(), key, r.text()],
                3 => vec![r.pick(&["LPOP", "RPOP"]).into(), key],
                4 => vec!["LSET".into(), key, r.int(-3, 3), r.text()],
                5 => vec![
                    "LINSERT".into(),
                    key,
                    r.pick(&["BEFORE", "AFTER"]).into(),
                    r.text(),
                    r.text(),
                ],
                6 if r.chance(50) => vec!["LREM".into(), key, "0".into(), r.text()],
                6 => vec![
                    "LMPOP".into(),
                    "2".into(),
                    key,
                    k(r, LISTS),
                    end(r),
                    "COUNT".into(),
                    r.int(1, 3),
                ],
                7 => vec!["LTRIM".into(), key, "0".into(), r.int(0, 5)],
                8 => vec!["LMOVE".into(), key, k(r, LISTS), end(r), end(r)],
                9 => vec!["RPOPLPUSH".into(), key, k(r, LISTS)],
                10 => vec![
                    "BLMOVE".into(),
                    key,
                    k(r, LISTS),
                    end(r),
                    end(r),
                    "0.01".into(),
                ],
                _ if upstream => {
                    let mut c = vec!["SORT".into(), key];
                    if r.chance(40) {
                        c.extend(s(&["BY", "nosort", "GET", "#", "GET", "#"]));
                    }
                    c.extend(["ALPHA".into(), "STORE".into(), k(r, LISTS)]);
                    c
                }
                _ => vec!["RPUSH".into(), key, r.text()],
            }
        }
        Family::Set => {
            let key = k(r, SETS);
            let member = |r: &mut Rng| {
                if r.chance(50) {
                    r.pick(&["a", "b", "member", "a-long-member-name"])
                        .to_owned()
                } else {
                    r.text()
                }
            };
            match r.below(6) {
                0 | 1 => {
                    let mut c = vec!["SADD".into(), key];
                    for _ in 0..1 + r.below(4) {
                        c.push(member(r));
                    }
                    c
                }
                2 => vec!["SREM".into(), key, member(r)],
                3 => vec!["SPOP".into(), key],
                4 => vec!["SMOVE".into(), key, k(r, SETS), member(r)],
                _ => vec![
                    r.pick(&["SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE"]).into(),
                    key,
                    k(r, SETS),
                    k(r, SETS),
                ],
            }
        }
        Family::ZSet => {
            let key = k(r, ZSETS);
            let member = |r: &mut Rng| {
                if r.chance(50) {
                    r.pick(&["a", "b", "m", "a-long-member-name"]).to_owned()
                } else {
                    r.text()
                }
            };
            let score = |r: &mut Rng| r.pick(&["1", "2.5", "-3", "1e10", "100"]).to_owned();
            match r.below(7) {
                0..=2 => {
                    let mut c = vec!["ZADD".into(), key];
                    for word in ["NX", "XX", "GT", "CH"] {
                        if r.chance(15) {
                            c.push(word.into());
                        }
                    }
                    if r.chance(10) {
                        c.extend(["INCR".into(), score(r), member(r)]);
                    } else {
                        for _ in 0..1 + r.below(3) {
                            c.extend([score(r), member(r)]);
                        }
                    }
                    c
                }
                3 if r.chance(60) => vec!["ZINCRBY".into(), key, score(r), member(r)],
                3 if r.chance(50) => vec![
                    "ZMPOP".into(),
                    "1".into(),
                    key,
                    r.pick(&["MIN", "MAX"]).into(),
                ],
                3 => vec![
                    "ZREMRANGEBYSCORE".into(),
                    key,
                    "-inf".into(),
                    r.pick(&["0", "2"]).into(),
                ],
                4 if r.chance(50) => vec!["ZREM".into(), key, member(r)],
                4 => vec!["ZPOPMIN".into(), key, r.int(1, 3)],
                5 => vec![
                    "ZRANGESTORE".into(),
                    key,
                    k(r, ZSETS),
                    "0".into(),
                    "-1".into(),
                ],
                _ => vec![
                    r.pick(&["ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE"]).into(),
                    key,
                    "2".into(),
                    k(r, ZSETS),
                    k(r, ZSETS),
                ],
            }
        }
        Family::Stream => {
            let key = if r.chance(70) {
                STREAMS[0].to_owned()
            } else {
                k(r, STREAMS)
            };
            // Mostly one group, so that consumer commands find it.
            let group = if r.chance(75) { GROUPS[0] } else { GROUPS[1] }.to_owned();
            let consumer = r.pick(CONSUMERS).to_owned();
            match r.below(14) {
                10 => vec!["XDEL".into(), key, "0-1".into()],
                11 => vec!["XACK".into(), key, group, "0-1".into()],
                12 => vec![
                    "XGROUP".into(),
                    r.pick(&["DESTROY", "SETID"]).into(),
                    key,
                    group,
                    "$".into(),
                ]
                .into_iter()
                .take(if r.chance(50) { 4 } else { 5 })
                .collect(),
                13 => vec!["XSETID".into(), key, "999999999999-0".into()],
                0..=2 => {
                    let mut c = vec!["XADD".into(), key];
                    if r.chance(20) {
                        c.push("NOMKSTREAM".into());
                    }
                    if r.chance(30) {
                        c.extend(s(&["MAXLEN", r.pick(&["~", "="])]));
                        c.push(r.int(1, 5));
                    }
                    c.push("*".into());
                    for _ in 0..1 + r.below(2) {
                        c.extend([r.pick(&["f", "field"]).into(), r.text()]);
                    }
                    c
                }
                3 => {
                    let mut c = vec![
                        "XGROUP".into(),
                        "CREATE".into(),
                        key,
                        group,
                        r.pick(&["$", "0"]).into(),
                    ];
                    if r.chance(80) {
                        c.push("MKSTREAM".into());
                    }
                    c
                }
                4 => vec![
                    "XGROUP".into(),
                    "CREATECONSUMER".into(),
                    key,
                    group,
                    consumer,
                ],
                5 => vec![
                    "XREADGROUP".into(),
                    "GROUP".into(),
                    group,
                    consumer,
                    "COUNT".into(),
                    "2".into(),
                    "STREAMS".into(),
                    key,
                    ">".into(),
                ],
                6 => vec![
                    "XAUTOCLAIM".into(),
                    key,
                    group,
                    consumer,
                    "0".into(),
                    "0-0".into(),
                    "COUNT".into(),
                    "3".into(),
                ],
                7 => vec![
                    "XCLAIM".into(),
                    key,
                    group,
                    consumer,
                    "0".into(),
                    "0-1".into(),
                ],
                8 => vec!["XTRIM".into(), key, "MAXLEN".into(), r.int(0, 3)],
                _ => vec!["XGROUP".into(), "DELCONSUMER".into(), key, group, consumer],
            }
        }
        Family::Hll => {
            let key = k(r, HLLS);
            if r.chance(75) {
                let mut c = vec!["PFADD".into(), key];
                // Now and then enough elements to turn the sparse form dense.
                let n = if r.chance(10) { 1500 } else { r.below(5) };
                for _ in 0..n {
                    c.push(format!("e{}", r.next()));
                }
                c
            } else {
                vec!["PFMERGE".into(), key, k(r, HLLS), k(r, HLLS)]
            }
        }
        Family::Geo => {
            let key = k(r, GEOS);
            match r.below(5) {
                4 => vec![
                    "GEORADIUSBYMEMBER".into(),
                    k(r, GEOS),
                    r.pick(&["Palermo", "Catania"]).into(),
                    "500".into(),
                    "km".into(),
                    r.pick(&["STORE", "STOREDIST"]).into(),
                    key,
                ],
                0 | 1 => {
                    let mut c = vec!["GEOADD".into(), key];
                    if r.chance(20) {
                        c.push(r.pick(&["NX", "XX", "CH"]).into());
                    }
                    for _ in 0..1 + r.below(3) {
                        c.extend([
                            format!("13.{}", r.below(999)),
                            format!("38.{}", r.below(999)),
                            r.pick(&["Palermo", "Catania", "a-long-place-name"]).into(),
                        ]);
                    }
                    c
                }
                2 => vec![
                    "GEOSEARCHSTORE".into(),
                    key,
                    k(r, GEOS),
                    "FROMLONLAT".into(),
                    "13.5".into(),
                    "38.5".into(),
                    "BYRADIUS".into(),
                    "500".into(),
                    "km".into(),
                ],
                _ => vec![
                    "GEORADIUS".into(),
                    k(r, GEOS),
                    "13.5".into(),
                    "38.5".into(),
                    "500".into(),
                    "km".into(),
                    "STORE".into(),
                    key,
                ],
            }
        }
        Family::Key => {
            let keys = all_keys(upstream);
            let any = |r: &mut Rng| {
                if r.chance(80) && !focus.is_empty() {
                    focus[r.below(focus.len() as u64) as usize].to_owned()
                } else {
                    keys[r.below(keys.len() as u64) as usize].to_owned()
                }
            };
            let key = any(r);
            match r.below(9) {
                0 => vec![r.pick(&["DEL", "UNLINK"]).into(), key],
                1 | 2 => {
                    let mut c = vec!["EXPIRE".into(), key, r.int(1, 2_000_000)];
                    if r.chance(30) {
                        c.push(r.pick(&["NX", "XX", "GT", "LT"]).into());
                    }
                    c
                }
                3 => vec!["PEXPIRE".into(), key, r.int(1, 2_000_000_000)],
                4 => vec![
                    "EXPIREAT".into(),
                    key,
                    (now() + 1 + r.below(2_000_000) as i64).to_string(),
                ],
                5 => vec![
                    "PEXPIREAT".into(),
                    key,
                    ((now() + 1) * 1000 + r.below(2_000_000_000) as i64).to_string(),
                ],
                6 | 7 => vec![r.pick(&["RENAME", "RENAMENX"]).into(), key, any(r)],
                _ => {
                    let mut c = vec!["COPY".into(), key, any(r)];
                    if r.chance(50) {
                        c.push("REPLACE".into());
                    }
                    c
                }
            }
        }
    }
}

// === measuring ===

fn query(c: &mut redis::Connection, args: &[&str]) -> Value {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<Value>(c)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

fn items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        Value::Nil => Vec::new(),
        other => panic!("not a collection: {other:?}"),
    }
}

fn bulk_len(value: &Value) -> i64 {
    match value {
        Value::BulkString(b) => b.len() as i64,
        Value::SimpleString(s) => s.len() as i64,
        Value::Int(n) => n.to_string().len() as i64,
        other => panic!("not a string: {other:?}"),
    }
}

fn int(value: Value) -> i64 {
    match value {
        Value::Int(n) => n,
        other => panic!("not an integer: {other:?}"),
    }
}

/// The data bytes of a stream: its entries' fields and values, its group and consumer names.
fn stream_bytes(c: &mut redis::Connection, key: &str) -> i64 {
    let mut bytes = 0;
    for entry in items(query(c, &["XRANGE", key, "-", "+"])) {
        let mut parts = items(entry).into_iter();
        let _id = parts.next();
        for fv in parts.flat_map(items) {
            bytes += bulk_len(&fv);
        }
    }
    for group in items(query(c, &["XINFO", "GROUPS", key])) {
        let fields = items(group);
        let name = fields
            .chunks(2)
            .find(|p| matches!(&p[0], Value::BulkString(b) if b == b"name"))
            .map(|p| p[1].clone())
            .expect("a group has a name");
        bytes += bulk_len(&name);
        let name = String::from_utf8(match name {
            Value::BulkString(b) => b,
            _ => unreachable!(),
        })
        .unwrap();
        for consumer in items(query(c, &["XINFO", "CONSUMERS", key, &name])) {
            let fields = items(consumer);
            let name = fields
                .chunks(2)
                .find(|p| matches!(&p[0], Value::BulkString(b) if b == b"name"))
                .map(|p| p[1].clone())
                .expect("a consumer has a name");
            bytes += bulk_len(&name);
        }
    }
    bytes
}

/// `bytes(key) × seconds left`, as the module documentation defines it; 0 when the key
/// does not exist. A key without a TTL breaks the first promise of metering.
fn held(c: &mut redis::Connection, key: &str) -> i64 {
    let pttl = int(query(c, &["PTTL", key]));
    if pttl == -2 {
        return 0;
    }
    assert!(pttl > 0, "{key} has no TTL ({pttl})");
    let kind = match query(c, &["TYPE", key]) {
        Value::SimpleString(s) => s,
        Value::Okay => "OK".into(),
        other => panic!("TYPE {key}: {other:?}"),
    };
    let sum = |values: Vec<Value>| values.iter().map(bulk_len).sum::<i64>();
    let data = match kind.as_str() {
        "string" => int(query(c, &["STRLEN", key])),
        "hash" => sum(items(query(c, &["HGETALL", key]))),
        "list" => sum(items(query(c, &["LRANGE", key, "0", "-1"]))),
        "set" => sum(items(query(c, &["SMEMBERS", key]))),
        "zset" => sum(items(query(c, &["ZRANGE", key, "0", "-1"]))),
        "stream" => stream_bytes(c, key),
        "none" => return 0,
        other => panic!("TYPE {key} is {other}"),
    };
    (key.len() as i64 + data) * ((pttl + 999) / 1000)
}

fn held_all(c: &mut redis::Connection, keys: &[&str]) -> i64 {
    keys.iter().map(|k| held(c, k)).sum()
}

/// The account's byte-seconds, once two readings agree.
fn paid(c: &mut redis::Connection) -> i64 {
    common::settled_byte_seconds(c, Duration::from_millis(2))
}

fn seed() -> u64 {
    std::env::var("PKV_PROPERTY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_2026_0001)
}

fn sequences() -> usize {
    std::env::var("PKV_PROPERTY_SEQUENCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(160)
}

/// Runs the sequences on `pkv`, one fresh account each.
fn storage_never_outgrows_what_was_paid(pkv: &Server, issuer: &Issuer, upstream: bool) {
    let seed = seed();
    let mut r = Rng(seed | 1);
    let families: Vec<Family> = if upstream {
        [EVERYWHERE, UPSTREAM_ONLY].concat()
    } else {
        [EVERYWHERE, &[Family::Stream]].concat()
    };
    let keys = all_keys(upstream);
    let (mut commands, mut errors) = (0, 0);
    let mut ran: std::collections::BTreeMap<String, (u32, u32)> = Default::default();
    for sequence in 0..sequences() {
        // Two families and the key commands per sequence, so that keys build up and later
        // commands find them.
        let first = r.below(families.len() as u64) as usize;
        let second = r.below(families.len() as u64) as usize;
        let mix = [families[first], families[second], Family::Key];
        let focus = [keys_of(mix[0]), keys_of(mix[1])].concat();
        let mut c = pkv.client(&issuer.token(10));
        let mut history: Vec<String> = Vec::new();
        let mut held_before = 0;
        let mut paid_before = paid(&mut c);
        // A stream family starts with a stream and a group, so that consumers can be made.
        let mut warmup: Vec<Vec<String>> = Vec::new();
        if mix.iter().any(|f| matches!(f, Family::Stream)) {
            for line in ["XADD x0 * f v", "XGROUP CREATE x0 g 0", "XADD x0 * f w"] {
                warmup.push(line.split(' ').map(str::to_owned).collect());
            }
        }
        warmup.reverse();
        for _ in 0..20 + warmup.len() {
            // One command, or now and then a transaction of a few: the bookkeeping pkv adds
            // around each write is queued with it and read back from EXEC's reply.
            let step: Vec<Vec<String>> = if let Some(args) = warmup.pop() {
                vec![args]
            } else if r.chance(10) {
                let mut block = vec![vec!["MULTI".to_owned()]];
                for _ in 0..2 + r.below(2) {
                    let family = mix[r.below(mix.len() as u64) as usize];
                    block.push(command(&mut r, family, upstream, &focus));
                }
                block.push(vec!["EXEC".to_owned()]);
                block
            } else {
                let family = mix[r.below(mix.len() as u64) as usize];
                vec![command(&mut r, family, upstream, &focus)]
            };
            for args in &step {
                let mut cmd = redis::cmd(&args[0]);
                for a in &args[1..] {
                    cmd.arg(a.as_str());
                }
                let outcome = cmd.query::<Value>(&mut c);
                commands += 1;
                let name = match args[0].as_str() {
                    "XGROUP" => format!("XGROUP {}", args[1]),
                    name => name.to_owned(),
                };
                let tally = ran.entry(name).or_default();
                tally.0 += 1;
                tally.1 += u32::from(outcome.is_err());
                if let Err(e) = &outcome {
                    assert!(
                        !e.to_string().contains("NOQUOTA"),
                        "seed {seed}: {args:?} refused: {e}"
                    );
                    errors += 1;
                    if std::env::var("PKV_PROPERTY_DEBUG").is_ok() {
                        eprintln!("{args:?}: {e}");
                    }
                }
                history.push(format!("{} -> {:?}", args.join(" "), outcome));
            }
            let paid_after = paid(&mut c);
            let held_after = held_all(&mut c, &keys);
            let (grew, charged) = (held_after - held_before, paid_after - paid_before);
            assert!(
                grew <= charged,
                "seed {seed}, sequence {sequence}: storage grew by {grew} byte-seconds \
                 but {charged} were paid for\n{}",
                history.join("\n")
            );
            (held_before, paid_before) = (held_after, paid_after);
        }
    }
    eprintln!("{commands} commands, {errors} answered with an error; (run, errors) by command:");
    eprintln!("{ran:?}");
    assert!(
        errors * 2 < commands,
        "too many errors: the generator is off"
    );
}

#[test]
fn storage_never_outgrows_what_was_paid_upstream() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer)
        // Every step reads PKV.BALANCE: no pacing of ledger reads here.
        .set("PKV_BALANCE_INTERVAL_MS", "0")
        .start();
    storage_never_outgrows_what_was_paid(&pkv, &issuer, true);
}

#[test]
fn storage_never_outgrows_what_was_paid_embedded() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer)
        // Every step reads PKV.BALANCE: no pacing of ledger reads here.
        .set("PKV_BALANCE_INTERVAL_MS", "0")
        .start();
    storage_never_outgrows_what_was_paid(&pkv, &issuer, false);
}
