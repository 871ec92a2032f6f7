//! Storage is charged on what a write really holds (SPEC 7): writes at an offset pay for
//! the bytes the key grows by, stores and TTL extensions pay the key's real size, writes
//! that write nothing pay nothing, and names Redis stores (stream groups and consumers, a
//! longer name after RENAME) are paid like any data. Each case is an attack that worked
//! on an earlier pkv: it is run through pkv on both backends where the backend serves the
//! command, and the byte-seconds `PKV.BALANCE` reports are compared with the exact figure,
//! worked out from what the key holds (STRLEN, MEMORY USAGE ... SAMPLES 0, PTTL).
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::time::Duration;

use common::*;
use redis::Value;

/// The default TTL every test runs with, in seconds.
const DAY: i64 = 86_400;
/// The maximum TTL (the default setting), in seconds.
const YEAR: i64 = 31_536_000;

/// A pkv on one backend, an account on it, and a connection of that account.
struct Setup {
    pkv: Server,
    redis: Option<Redis>,
    c: redis::Connection,
}

fn upstream() -> Setup {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer)
        // Every step reads PKV.BALANCE: no pacing of ledger reads here.
        .set("PKV_BALANCE_INTERVAL_MS", "0")
        .start();
    let c = pkv.client(&issuer.token(10));
    Setup {
        pkv,
        redis: Some(redis),
        c,
    }
}

fn embedded() -> Setup {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer)
        // Every step reads PKV.BALANCE: no pacing of ledger reads here.
        .set("PKV_BALANCE_INTERVAL_MS", "0")
        .start();
    let c = pkv.client(&issuer.token(10));
    Setup {
        pkv,
        redis: None,
        c,
    }
}

/// Runs one command through pkv.
fn call(c: &mut redis::Connection, args: &[&str]) -> Result<Value, String> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<Value>(c).map_err(|e| e.to_string())
}

/// Runs one command that must succeed.
fn ok(c: &mut redis::Connection, args: &[&str]) -> Value {
    call(c, args).unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

fn int(c: &mut redis::Connection, args: &[&str]) -> i64 {
    match ok(c, args) {
        Value::Int(n) => n,
        other => panic!("{args:?} answered {other:?}"),
    }
}

/// Whole seconds left on `key`, rounded up, as metering counts them.
fn secs_left(c: &mut redis::Connection, key: &str) -> i64 {
    let ms = int(c, &["PTTL", key]);
    assert!(ms > 0, "{key} has no TTL: {ms}");
    (ms + 999) / 1000
}

/// Asserts that `charged` is `size` bytes for the key's remaining TTL, `secs` as the test
/// read it after the command: pkv read it earlier, so it may count a second or two more
/// on a loaded machine (the balance is read in between).
fn assert_pays_ttl(charged: i64, size: i64, secs: i64, what: &str) {
    assert!(
        (secs..=secs + 2).any(|s| charged == size * s),
        "{what}: charged {charged}, expected {size} bytes × {secs} s (or up to 2 s more) = {}",
        size * secs
    );
}

/// The account's byte-seconds, once two readings a moment apart agree.
fn byte_seconds(c: &mut redis::Connection) -> i64 {
    common::settled_byte_seconds(c, Duration::from_millis(10))
}

/// The byte-seconds one command was charged.
fn paid(c: &mut redis::Connection, args: &[&str]) -> i64 {
    let before = byte_seconds(c);
    ok(c, args);
    byte_seconds(c) - before
}

// === item 4: writes at an offset pay for what the key grows by ===

/// `SETRANGE`, `SETBIT` and `BITFIELD` at a large offset store megabytes from a one-byte
/// argument; `SETRANGE`/`APPEND` into an existing key and `LSET` pay the growth only.
fn offset_writes_pay_for_the_growth(s: &mut Setup) {
    let c = &mut s.c;
    let grown = 10_000_001;
    assert_eq!(
        paid(c, &["SETRANGE", "sr", "10000000", "x"]),
        (2 + grown) * DAY,
        "SETRANGE sr 10000000 x"
    );
    assert_eq!(int(c, &["STRLEN", "sr"]), grown);
    assert_eq!(
        paid(c, &["SETBIT", "sb", "80000000", "1"]),
        (2 + grown) * DAY,
        "SETBIT sb 80000000 1"
    );
    assert_eq!(int(c, &["STRLEN", "sb"]), grown);
    assert_eq!(
        paid(c, &["BITFIELD", "bf", "SET", "u8", "#10000000", "255"]),
        (2 + grown) * DAY,
        "BITFIELD bf SET u8 #10000000 255"
    );
    assert_eq!(int(c, &["STRLEN", "bf"]), grown);

    // Into an existing key: the growth, for the key's remaining TTL.
    ok(c, &["SET", "e", "abc", "EX", "1000"]);
    let charged = paid(c, &["SETRANGE", "e", "1000", "x"]);
    assert_pays_ttl(charged, 1001 - 3, secs_left(c, "e"), "SETRANGE e 1000 x");
    assert_eq!(
        paid(c, &["SETRANGE", "e", "0", "zz"]),
        0,
        "overwrite in place"
    );
    let charged = paid(c, &["APPEND", "e", "yyy"]);
    assert_pays_ttl(charged, 3, secs_left(c, "e"), "APPEND e yyy");
    let charged = paid(c, &["SETBIT", "e", "8", "1"]);
    assert_eq!(charged, 0, "SETBIT inside the string");

    ok(c, &["RPUSH", "l", "a", "b"]);
    ok(c, &["EXPIRE", "l", "1000"]);
    let charged = paid(c, &["LSET", "l", "0", "abcdef"]);
    assert_pays_ttl(charged, 5, secs_left(c, "l"), "LSET l 0 abcdef over a");
    assert_eq!(paid(c, &["LSET", "l", "-1", "c"]), 0, "LSET same length");
}

#[test]
fn offset_writes_pay_for_the_growth_upstream() {
    offset_writes_pay_for_the_growth(&mut upstream());
}

#[test]
fn offset_writes_pay_for_the_growth_embedded() {
    offset_writes_pay_for_the_growth(&mut embedded());
}

/// Admission reserves what an offset write can buy: a write whose growth the balance
/// cannot cover at the maximum TTL is refused before it runs, and nothing is written.
fn offset_writes_reserve_their_bound(s: &mut Setup) {
    let c = &mut s.c;
    // 500 MB for a year at the default price is 15.8 units; the balance is 10.
    for args in [
        &["SETRANGE", "big", "500000000", "x"][..],
        &["SETBIT", "big", "4000000000", "1"],
        &["BITFIELD", "big", "SET", "u8", "#500000000", "1"],
    ] {
        let err = call(c, args).expect_err("refused");
        assert!(err.contains("NOQUOTA"), "{args:?}: {err}");
        assert_eq!(int(c, &["EXISTS", "big"]), 0, "{args:?} wrote");
    }
}

#[test]
fn offset_writes_reserve_their_bound_upstream() {
    offset_writes_reserve_their_bound(&mut upstream());
}

#[test]
fn offset_writes_reserve_their_bound_embedded() {
    offset_writes_reserve_their_bound(&mut embedded());
}

// === item 7: stores and TTL extensions pay the real size, not a sample ===

/// A sorted set of 5 tiny low-score members and 20 one-megabyte members: Redis's default
/// `MEMORY USAGE` samples the first 5 and prices it at a few kilobytes.
fn stores_pay_the_real_size(s: &mut Setup) {
    let c = &mut s.c;
    ok(
        c,
        &[
            "ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e",
        ],
    );
    for i in 0..20 {
        let member = format!("{i:02}{}", "m".repeat(1 << 20));
        ok(c, &["ZADD", "z", &(100 + i).to_string(), &member]);
    }
    let size =
        |c: &mut redis::Connection, key: &str| int(c, &["MEMORY", "USAGE", key, "SAMPLES", "0"]);
    let charged = paid(c, &["ZUNIONSTORE", "zu", "1", "z"]);
    let real = size(c, "zu");
    assert!(real > 20 << 20, "MEMORY USAGE zu SAMPLES 0 = {real}");
    assert_eq!(charged, real * DAY, "ZUNIONSTORE zu 1 z");

    // A copy keeps the source's TTL: it pays the real size for what is left of it (read
    // a moment later, so it may have lost a second since).
    let charged = paid(c, &["COPY", "z", "cz"]);
    let (copied, secs) = (size(c, "cz"), secs_left(c, "cz"));
    assert_pays_ttl(charged, copied, secs, "COPY z cz");

    // A one-year EXPIRE pays the real size for the seconds it adds: the TTL it had is read
    // just before (so the seconds added may round up to one more).
    let before_ms = int(c, &["PTTL", "zu"]);
    let charged = paid(c, &["EXPIRE", "zu", &YEAR.to_string()]);
    let added = (YEAR * 1000 - before_ms) / 1000;
    assert_pays_ttl(charged, real, added, &format!("EXPIRE zu {YEAR}"));
}

#[test]
fn stores_pay_the_real_size_upstream() {
    stores_pay_the_real_size(&mut upstream());
}

#[test]
fn stores_pay_the_real_size_embedded() {
    stores_pay_the_real_size(&mut embedded());
}

// === item 10: COPY into another database ===

fn copy_to_another_database_is_refused(s: &mut Setup) {
    let c = &mut s.c;
    ok(c, &["SET", "src", "value"]);
    for db in ["1", "15", "-1"] {
        let err = call(c, &["COPY", "src", "dst", "DB", db]).expect_err("refused");
        assert!(err.contains("DB"), "COPY ... DB {db}: {err}");
    }
    assert_eq!(int(c, &["COPY", "src", "dst", "DB", "0"]), 1);
    assert_eq!(int(c, &["EXISTS", "dst"]), 1);
    if let Some(redis) = &s.redis {
        let mut direct = redis.direct();
        for db in 1..16 {
            let _: () = redis::cmd("SELECT").arg(db).query(&mut direct).unwrap();
            let n: i64 = redis::cmd("DBSIZE").query(&mut direct).unwrap();
            assert_eq!(n, 0, "database {db} holds {n} keys");
        }
    }
}

#[test]
fn copy_to_another_database_is_refused_upstream() {
    copy_to_another_database_is_refused(&mut upstream());
}

#[test]
fn copy_to_another_database_is_refused_embedded() {
    copy_to_another_database_is_refused(&mut embedded());
}

// === items 16 and 25: a write that writes nothing pays nothing ===

fn writes_that_write_nothing_pay_nothing(s: &mut Setup) {
    let c = &mut s.c;
    ok(c, &["SET", "s", "v"]);
    let hundred = "x".repeat(100);
    let nothing: &[&[&str]] = &[
        &["SET", "s", "vvvv", "NX", "GET"],
        &["SET", "missing", "vvvv", "XX", "GET"],
        &["SET", "missing", "vvvv", "XX"],
        &["SET", "s", "vvvv", "NX"],
        &["SETNX", "s", &hundred],
        &["COPY", "nosuch", "dst"],
        &["MSETNX", "s", "a", "other", "b"],
    ];
    for args in nothing {
        assert_eq!(paid(c, args), 0, "{args:?}");
    }
    ok(c, &["SET", "dst", "x"]);
    assert_eq!(
        paid(c, &["COPY", "s", "dst"]),
        0,
        "COPY onto an existing key"
    );

    ok(c, &["HSET", "h", "f", "v"]);
    assert_eq!(
        paid(c, &["HSETNX", "h", "f", &hundred]),
        0,
        "HSETNX existing"
    );
    ok(c, &["SADD", "st", "a", "b"]);
    assert_eq!(
        paid(c, &["SADD", "st", "a", "b"]),
        0,
        "SADD existing members"
    );
    let charged = paid(c, &["SADD", "st", "a", "ccc"]);
    assert_pays_ttl(charged, 3, secs_left(c, "st"), "SADD one new member");
    ok(c, &["RPUSH", "l", "a"]);
    let charged = paid(c, &["LINSERT", "l", "BEFORE", "nosuch", &hundred]);
    assert_eq!(charged, 0, "LINSERT with a missing pivot");
    assert_eq!(
        paid(c, &["BITFIELD", "s", "GET", "u8", "0"]),
        0,
        "BITFIELD GET"
    );
    assert_eq!(
        paid(c, &["LPUSHX", "nolist", &hundred]),
        0,
        "LPUSHX missing"
    );
    ok(c, &["ZADD", "z", "1", "m"]);
    assert_eq!(
        paid(c, &["ZADD", "z", "NX", "2", "m"]),
        0,
        "ZADD NX existing"
    );
    assert_eq!(paid(c, &["ZADD", "z", "3", "m"]), 0, "ZADD new score");

    // The charges that remain are for what was written: a SET NX GET that sets pays.
    let charged = paid(c, &["SET", "n", "vvvv", "NX", "GET"]);
    assert_eq!(charged, (1 + 4) * DAY, "SET n vvvv NX GET on a missing key");
    let charged = paid(c, &["SET", "n", "ww", "XX", "GET"]);
    assert_eq!(charged, (1 + 2) * DAY, "SET n ww XX GET on an existing key");
    // Option words are not data: ZADD NX CH pays the member and its score only.
    let charged = paid(c, &["ZADD", "z2", "NX", "CH", "1", "m"]);
    assert_eq!(charged, (2 + 1 + 1) * DAY, "ZADD z2 NX CH 1 m");
}

#[test]
fn writes_that_write_nothing_pay_nothing_upstream() {
    writes_that_write_nothing_pay_nothing(&mut upstream());
}

#[test]
fn writes_that_write_nothing_pay_nothing_embedded() {
    writes_that_write_nothing_pay_nothing(&mut embedded());
}

// === SET's options, read the way Redis reads them ===

/// The meter and the store read SET's options with one parser that follows Redis: an
/// option word ends at a NUL byte, so `ex\0junk` is `EX`. The meter once missed it and
/// appended the default TTL, which Redis took over the client's 100 s (the key lived, and
/// was paid for, a day); it appended `EX <default>` to `keepttl\0` too, which Redis refuses
/// beside KEEPTTL. Options Redis refuses are refused with its syntax error before anything
/// is priced (`PX 1 EX <above the maximum>` used to get pkv's TTL error instead).
fn set_options_are_read_as_redis_reads_them(s: &mut Setup) {
    let c = &mut s.c;
    let charged = paid(c, &["SET", "k", "v", "ex\0junk", "100"]);
    let secs = secs_left(c, "k");
    assert!(secs <= 100, "SET k v ex\\0junk 100 left {secs} s");
    assert_pays_ttl(charged, 2, secs, "SET k v ex\\0junk 100");
    assert_eq!(ok(c, &["SET", "k", "w", "keepttl\0"]), Value::Okay);
    assert!(secs_left(c, "k") <= 100, "SET KEEPTTL kept the TTL");
    let above_max = (YEAR + 1).to_string();
    let refused = ["SET", "k", "v", "PX", "1", "EX", above_max.as_str()];
    let pkv_says = call(c, &refused).expect_err("Redis refuses two expiries");
    assert!(pkv_says.contains("syntax error"), "{pkv_says}");
    if let Some(redis) = &s.redis {
        let mut direct = redis.direct();
        let redis_says = call(&mut direct, &refused).expect_err("Redis refuses two expiries");
        assert_eq!(pkv_says, redis_says);
        // Redis itself reads the options as pkv does.
        assert_eq!(
            call(&mut direct, &["SET", "d", "v", "ex\0junk", "100"]),
            Ok(Value::Okay)
        );
        let ttl = int(&mut direct, &["TTL", "d"]);
        assert!((1..=100).contains(&ttl), "direct TTL {ttl}");
    }
}

#[test]
fn set_options_are_read_as_redis_reads_them_upstream() {
    set_options_are_read_as_redis_reads_them(&mut upstream());
}

#[test]
fn set_options_are_read_as_redis_reads_them_embedded() {
    set_options_are_read_as_redis_reads_them(&mut embedded());
}

// === item 15: names and numbers Redis stores ===

fn stored_names_and_numbers_are_paid(s: &mut Setup) {
    let c = &mut s.c;
    ok(c, &["SET", "r", "v", "EX", "1000"]);
    let charged = paid(c, &["RENAME", "r", "a-much-longer-name"]);
    let secs = secs_left(c, "a-much-longer-name");
    assert_pays_ttl(charged, 17, secs, "RENAME r a-much-longer-name");
    ok(c, &["SET", "r2", "v", "EX", "1000"]);
    let charged = paid(c, &["RENAMENX", "r2", "r2-longer"]);
    assert_pays_ttl(
        charged,
        7,
        secs_left(c, "r2-longer"),
        "RENAMENX r2 r2-longer",
    );

    let charged = paid(c, &["INCRBYFLOAT", "fl", "1e4000"]);
    let stored = int(c, &["STRLEN", "fl"]);
    assert!(stored >= 4000, "STRLEN fl = {stored}");
    assert_eq!(charged, (2 + stored) * DAY, "INCRBYFLOAT fl 1e4000");
    let charged = paid(c, &["HINCRBYFLOAT", "hf", "f", "1e4000"]);
    let stored = int(c, &["HSTRLEN", "hf", "f"]);
    assert_eq!(charged, (2 + 1 + stored) * DAY, "HINCRBYFLOAT hf f 1e4000");
    let charged = paid(c, &["HINCRBY", "hf", "n", "-1234567"]);
    assert_pays_ttl(charged, 1 + 8, secs_left(c, "hf"), "HINCRBY a new field");
    let charged = paid(c, &["INCRBY", "i", "-1234567"]);
    assert_eq!(charged, (1 + 8) * DAY, "INCRBY i -1234567");
    ok(c, &["SET", "n", "99", "EX", "1000"]);
    let charged = paid(c, &["INCR", "n"]);
    assert_pays_ttl(charged, 1, secs_left(c, "n"), "INCR 99 to 100");
    assert_eq!(paid(c, &["DECR", "n"]), 0, "DECR 100 to 99");
    let charged = paid(c, &["DECRBY", "n", "200"]);
    assert_pays_ttl(charged, 2, secs_left(c, "n"), "DECRBY 99 to -101");
}

#[test]
fn stored_names_and_numbers_are_paid_upstream() {
    stored_names_and_numbers_are_paid(&mut upstream());
}

#[test]
fn stored_names_and_numbers_are_paid_embedded() {
    stored_names_and_numbers_are_paid(&mut embedded());
}

/// Stream group and consumer names.
fn stream_group_and_consumer_names_are_paid(s: &mut Setup) {
    let c = &mut s.c;
    let charged = paid(c, &["XGROUP", "CREATE", "x", "grp", "$", "MKSTREAM"]);
    assert_eq!(charged, (1 + 3) * DAY, "XGROUP CREATE x grp $ MKSTREAM");
    let charged = paid(c, &["XGROUP", "CREATECONSUMER", "x", "grp", "consumer-one"]);
    assert_pays_ttl(charged, 12, secs_left(c, "x"), "XGROUP CREATECONSUMER");
    let charged = paid(c, &["XGROUP", "CREATECONSUMER", "x", "grp", "consumer-one"]);
    assert_eq!(charged, 0, "XGROUP CREATECONSUMER of an existing consumer");
    let charged = paid(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "grp",
            "consumer-two",
            "STREAMS",
            "x",
            ">",
        ],
    );
    assert_pays_ttl(
        charged,
        12,
        secs_left(c, "x"),
        "XREADGROUP by a new consumer",
    );
    // A consumer that polls pays its name once.
    let charged = paid(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "grp",
            "consumer-two",
            "STREAMS",
            "x",
            ">",
        ],
    );
    assert_eq!(charged, 0, "XREADGROUP by an existing consumer");
    let charged = paid(c, &["XCLAIM", "x", "grp", "consumer-4", "0", "0-1"]);
    assert_pays_ttl(charged, 10, secs_left(c, "x"), "XCLAIM by a new consumer");
    let charged = paid(c, &["XAUTOCLAIM", "x", "grp", "consumer-4", "0", "0-0"]);
    assert_eq!(charged, 0, "XAUTOCLAIM by an existing consumer");
    // The same on the blocking path (a dedicated connection), options in another order.
    let charged = paid(
        c,
        &[
            "XREADGROUP",
            "COUNT",
            "1",
            "BLOCK",
            "10",
            "GROUP",
            "grp",
            "consumer-3",
            "STREAMS",
            "x",
            ">",
        ],
    );
    assert_pays_ttl(
        charged,
        10,
        secs_left(c, "x"),
        "XREADGROUP BLOCK by a new consumer",
    );
    let charged = paid(c, &["XADD", "x", "MAXLEN", "~", "1000", "*", "f", "v"]);
    assert_pays_ttl(
        charged,
        1 + 1 + 1,
        secs_left(c, "x"),
        "XADD options are not data",
    );
}

#[test]
fn stream_group_and_consumer_names_are_paid_upstream() {
    let mut s = upstream();
    stream_group_and_consumer_names_are_paid(&mut s);
    drop(s.pkv);
}

#[test]
fn stream_group_and_consumer_names_are_paid_embedded() {
    let mut s = embedded();
    stream_group_and_consumer_names_are_paid(&mut s);
    drop(s.pkv);
}
