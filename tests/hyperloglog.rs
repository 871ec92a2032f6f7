//! Property: the embedded store's HyperLogLogs are Redis's, bit for bit. Random elements
//! (binary, of random lengths) are added in random batches to a real redis-server and to
//! the store; after every batch PFCOUNT must answer the same and GET must return the same
//! bytes (so the registers, the sparse opcodes, the sparse→dense promotion and the cached
//! cardinality all agree), and so must PFCOUNT of several keys and PFMERGE.
//!
//! Cardinalities run from 0 to 10^5. A seeded generator: a failure prints the seed, and
//! `PKV_PROPERTY_SEED` replays it.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use common::parity::{property_seed, Rng};
use common::Redis;
use pkv::embedded::Store;
use pkv::protocol::frame::Frame;
use pkv::protocol::Proto;

fn same(redis: &mut redis::Connection, store: &Store, args: &[&[u8]], seed: u64) -> Frame {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let theirs: redis::Value = cmd.query(redis).unwrap();
    let ours = store.run(Proto::Resp2, args).unwrap();
    let agree = match (&theirs, &ours) {
        (redis::Value::Int(a), Frame::Integer(b)) => a == b,
        (redis::Value::BulkString(a), Frame::Bulk(b)) => a[..] == b[..],
        (redis::Value::Okay, f) => *f == Frame::OK,
        (redis::Value::Nil, Frame::Null) => true,
        _ => false,
    };
    assert!(
        agree,
        "seed {seed}: {:?} answered {theirs:?} on redis, {ours:?} on the store",
        String::from_utf8_lossy(&args.concat())
    );
    ours
}

#[test]
fn hyperloglogs_match_redis_bit_for_bit() {
    let redis = Redis::start();
    let mut direct = redis.direct();
    let seed = property_seed();
    let mut rng = Rng(seed);
    let store = Store::default();
    // Target cardinalities from empty to 10^5, a few per order of magnitude.
    let targets = [
        0u64, 1, 2, 50, 100, 700, 1_000, 3_000, 10_000, 30_000, 100_000,
    ];
    for (round, &target) in targets.iter().enumerate() {
        let key = format!("h{round}");
        let mut added = 0;
        same(&mut direct, &store, &[b"PFADD", key.as_bytes()], seed);
        while added < target {
            let batch =
                (1 + rng.below(if target > 5_000 { 2_000 } else { 40 })).min(target - added);
            let elements: Vec<Vec<u8>> = (0..batch).map(|_| rng.element()).collect();
            let mut args: Vec<&[u8]> = vec![b"PFADD", key.as_bytes()];
            args.extend(elements.iter().map(Vec::as_slice));
            same(&mut direct, &store, &args, seed);
            added += batch;
            // Counting after every batch is slow for the large ones: now and then.
            if target <= 5_000 || rng.below(10) == 0 {
                same(&mut direct, &store, &[b"PFCOUNT", key.as_bytes()], seed);
                same(&mut direct, &store, &[b"GET", key.as_bytes()], seed);
            }
        }
        same(&mut direct, &store, &[b"PFCOUNT", key.as_bytes()], seed);
        same(&mut direct, &store, &[b"GET", key.as_bytes()], seed);
        if round > 0 {
            let other = format!("h{}", rng.below(round as u64));
            let (a, b) = (key.as_bytes(), other.as_bytes());
            same(&mut direct, &store, &[b"PFCOUNT", a, b], seed);
            let dest = format!("m{round}");
            same(
                &mut direct,
                &store,
                &[b"PFMERGE", dest.as_bytes(), a, b],
                seed,
            );
            same(&mut direct, &store, &[b"GET", dest.as_bytes()], seed);
            same(&mut direct, &store, &[b"PFCOUNT", dest.as_bytes()], seed);
            // Merging into an existing sparse value raises its registers in place.
            same(&mut direct, &store, &[b"PFMERGE", b, a], seed);
            same(&mut direct, &store, &[b"GET", b], seed);
        }
    }
}
