//! The embedded store's append-only log against a tenant who builds one big key and then
//! writes to it a little at a time: each small write must cost the log about what it
//! carries, not the size of the key it lands in (else one paid-for write of a few bytes
//! turns into tens of megabytes of disk writes and fsyncs that every other tenant's
//! `always` write waits behind).
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::path::{Path, PathBuf};

use common::{Issuer, Pkv, PkvConfig};

/// Bytes in each big key.
const BIG: usize = 20 << 20;
/// Commands that build it.
const CHUNKS: usize = 5;
/// Small writes measured per key.
const WRITES: usize = 100;

fn embedded(issuer: &Issuer, data: &Path) -> PkvConfig {
    PkvConfig::embedded(issuer)
        .set("PKV_DATA_FILE", data.to_str().unwrap())
        .set("PKV_SNAPSHOT_SECONDS", "3600")
        .set("PKV_APPENDFSYNC", "always")
}

fn log_len(data: &Path) -> u64 {
    let mut name = data.as_os_str().to_owned();
    name.push(".aof");
    std::fs::metadata(PathBuf::from(name)).map_or(0, |m| m.len())
}

fn crash(mut pkv: Pkv) {
    pkv.child.kill().unwrap();
    pkv.child.wait().unwrap();
}

/// 200-byte elements, numbered from `from`.
fn elements(from: usize, n: usize) -> impl Iterator<Item = String> {
    (from..from + n).map(|i| format!("{i:0>200}"))
}

/// One kind of big key: the commands that build it, a small write, and the command
/// that counts what it holds.
struct Case {
    key: &'static str,
    build: fn(chunk: usize, per: usize) -> redis::Cmd,
    write: fn(i: usize) -> redis::Cmd,
    count: &'static str,
    /// What `count` answers after the build and the small writes.
    expect: i64,
}

fn cases() -> Vec<Case> {
    // 200-byte elements (or field/value pairs: 400 bytes) per chunk.
    let per = BIG / CHUNKS / 200;
    let pairs = BIG / CHUNKS / 400;
    let (n, writes) = ((per * CHUNKS) as i64, WRITES as i64);
    vec![
        Case {
            key: "big:hash",
            build: |chunk, per| {
                let mut cmd = redis::cmd("HSET");
                cmd.arg("big:hash");
                for e in elements(chunk * per, per / 2) {
                    cmd.arg(&e).arg(&e);
                }
                cmd
            },
            write: |i| {
                redis::cmd("HSET")
                    .arg("big:hash")
                    .arg(format!("f{i}"))
                    .arg("v")
                    .clone()
            },
            count: "HLEN",
            expect: (pairs * CHUNKS) as i64 + writes,
        },
        Case {
            key: "big:list",
            build: |chunk, per| {
                let mut cmd = redis::cmd("RPUSH");
                cmd.arg("big:list")
                    .arg(elements(chunk * per, per).collect::<Vec<_>>());
                cmd
            },
            write: |i| {
                redis::cmd("LPUSH")
                    .arg("big:list")
                    .arg(format!("e{i}"))
                    .clone()
            },
            count: "LLEN",
            expect: n + writes,
        },
        Case {
            key: "big:set",
            build: |chunk, per| {
                let mut cmd = redis::cmd("SADD");
                cmd.arg("big:set")
                    .arg(elements(chunk * per, per).collect::<Vec<_>>());
                cmd
            },
            write: |i| {
                redis::cmd("SADD")
                    .arg("big:set")
                    .arg(format!("m{i}"))
                    .clone()
            },
            count: "SCARD",
            expect: n + writes,
        },
        Case {
            key: "big:zset",
            build: |chunk, per| {
                let mut cmd = redis::cmd("ZADD");
                cmd.arg("big:zset");
                for (i, e) in elements(chunk * per, per).enumerate() {
                    cmd.arg(i).arg(&e);
                }
                cmd
            },
            write: |i| {
                redis::cmd("ZADD")
                    .arg("big:zset")
                    .arg(i)
                    .arg(format!("m{i}"))
                    .clone()
            },
            count: "ZCARD",
            expect: n + writes,
        },
        Case {
            key: "big:stream",
            build: |chunk, per| {
                let mut cmd = redis::cmd("XADD");
                cmd.arg("big:stream").arg("*");
                for e in elements(chunk * per, per / 2) {
                    cmd.arg(&e).arg(&e);
                }
                cmd
            },
            write: |i| {
                redis::cmd("XADD")
                    .arg("big:stream")
                    .arg("*")
                    .arg("f")
                    .arg(i)
                    .clone()
            },
            count: "XLEN",
            expect: CHUNKS as i64 + writes,
        },
        Case {
            key: "big:string",
            build: |_, per| {
                redis::cmd("APPEND")
                    .arg("big:string")
                    .arg(vec![b'x'; per * 200])
                    .clone()
            },
            write: |_| {
                redis::cmd("APPEND")
                    .arg("big:string")
                    .arg("0123456789")
                    .clone()
            },
            count: "STRLEN",
            expect: n * 200 + writes * 10,
        },
        // Writes that write nothing (or only a deadline that is already there) log nothing.
        Case {
            key: "big:kept",
            build: |_, per| {
                redis::cmd("APPEND")
                    .arg("big:kept")
                    .arg(vec![b'x'; per * 200])
                    .clone()
            },
            write: |i| match i % 3 {
                0 => redis::cmd("SETNX").arg("big:kept").arg("v").clone(),
                1 => redis::cmd("SET").arg("big:kept").arg("v").arg("NX").clone(),
                _ => redis::cmd("GETEX").arg("big:kept").clone(),
            },
            count: "STRLEN",
            expect: n * 200,
        },
    ]
}

/// A hundred one-element writes into a 20 MB hash, list, set, sorted set, stream and
/// string (and writes that write nothing into another): the log grows by a small multiple of the bytes they carry, not by the keys'
/// size; kill -9 then loses none of them.
#[test]
fn a_small_write_into_a_big_key_logs_the_change_not_the_key() {
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pkv.data");
    let config = embedded(&issuer, &data);
    let token = issuer.token(1_000_000);
    let pkv = config.start_process();
    let mut conn = pkv.client(&token);
    let per = BIG / CHUNKS / 200;
    for case in cases() {
        for chunk in 0..CHUNKS {
            let _: redis::Value = (case.build)(chunk, per).query(&mut conn).unwrap();
        }
        let before = log_len(&data);
        let mut carried = 0;
        for i in 0..WRITES {
            let cmd = (case.write)(i);
            carried += cmd.get_packed_command().len() as u64;
            let _: redis::Value = cmd.query(&mut conn).unwrap();
            let grown = log_len(&data) - before;
            // A record frames the command's arguments with its key's namespace and two
            // versions: a few dozen bytes more than the command.
            let bound = 4 * carried + 128 * (i as u64 + 1);
            assert!(
                grown <= bound,
                "{}: {} small writes ({carried} bytes) grew the log by {grown} bytes",
                case.key,
                i + 1
            );
        }
    }
    drop(conn);
    crash(pkv);
    let pkv = config.start_process();
    let mut conn = pkv.client(&token);
    for case in cases() {
        let count: i64 = redis::cmd(case.count)
            .arg(case.key)
            .query(&mut conn)
            .unwrap();
        assert_eq!(count, case.expect, "{} after kill -9", case.key);
    }
    let last: Option<String> = redis::cmd("HGET")
        .arg("big:hash")
        .arg(format!("f{}", WRITES - 1))
        .query(&mut conn)
        .unwrap();
    assert_eq!(last.as_deref(), Some("v"));
    let head: Vec<String> = redis::cmd("LRANGE")
        .arg("big:list")
        .arg(0)
        .arg(1)
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        head,
        [format!("e{}", WRITES - 1), format!("e{}", WRITES - 2)]
    );
    crash(pkv);
}
