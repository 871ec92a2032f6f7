//! Property: the embedded store's streams answer as Redis 7.0's do. Random sequences of
//! XADD (explicit IDs, some at or below the last, every trimming option), XDEL, XTRIM,
//! XSETID, XRANGE and XREVRANGE (inclusive and exclusive ends, COUNT), XLEN and XINFO STREAM
//! run on a real redis-server and on the store; every reply must be the same, so the
//! entries, the counters XINFO reports (first ID, max deleted ID, entries added) and the
//! nodes approximate trimming removes (`radix-tree-keys`) agree. Consumer-group commands
//! whose replies hold no time (XGROUP, XREADGROUP, XACK, XPENDING's summary, XCLAIM and
//! XAUTOCLAIM with JUSTID, XINFO GROUPS) are mixed in, so that pending entries, the groups'
//! `entries-read` and their lag agree too.
//!
//! Values are short so that Redis's nodes fill by entry count (100), not by bytes. A seeded
//! generator: a failure prints the seed, and `PKV_PROPERTY_SEED` replays it.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use common::parity::{property_seed, redis_text, store_text, Rng};
use common::Redis;
use pkv::embedded::Store;
use pkv::protocol::Proto;

/// XINFO STREAM without `radix-tree-nodes` (the count of a radix tree's inner nodes, which
/// the store does not have).
fn without_tree_nodes(args: &[String], text: String) -> String {
    if args[0] != "XINFO" {
        return text;
    }
    match text.find("\"radix-tree-nodes\", ") {
        Some(at) => {
            let rest = &text[at..];
            let end = rest.find(", \"last-generated-id\"").unwrap_or(rest.len());
            format!("{}{}", &text[..at], &rest[end + 2..])
        }
        None => text,
    }
}

/// One random command on stream `s`; `ms` is the time part IDs grow from.
fn command(r: &mut Rng, ms: &mut u64) -> Vec<String> {
    let id = |r: &mut Rng, ms: u64| format!("{}-{}", r.below(ms + 2), r.below(3));
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match r.below(20) {
        0..=9 => {
            let mut c = s(&["XADD", "s"]);
            if r.chance(25) {
                let strategy = if r.chance(60) { "MAXLEN" } else { "MINID" };
                c.push(strategy.into());
                let approx = r.chance(50);
                if approx {
                    c.push("~".into());
                } else if r.chance(30) {
                    c.push("=".into());
                }
                c.push(if strategy == "MAXLEN" {
                    r.below(300).to_string()
                } else {
                    id(r, *ms)
                });
                if approx && r.chance(30) {
                    c.extend(s(&["LIMIT", &r.below(250).to_string()]));
                }
            }
            // Mostly a new ID; now and then one at or below the last, or `ms-*`.
            *ms += r.below(3);
            c.push(match r.below(10) {
                0 => id(r, *ms),
                1 => format!("{ms}-*"),
                _ => format!("{ms}-{}", r.below(2) + 1),
            });
            for _ in 0..1 + r.below(2) {
                c.push(if r.chance(90) { "f" } else { "g" }.into());
                c.push(r.below(1000).to_string());
            }
            c
        }
        10..=11 => {
            let mut c = s(&["XDEL", "s"]);
            for _ in 0..1 + r.below(3) {
                c.push(id(r, *ms));
            }
            c
        }
        12 => {
            let strategy = if r.chance(60) { "MAXLEN" } else { "MINID" };
            let mut c = s(&["XTRIM", "s", strategy]);
            let approx = r.chance(50);
            if approx {
                c.push("~".into());
            }
            c.push(if strategy == "MAXLEN" {
                r.below(300).to_string()
            } else {
                id(r, *ms)
            });
            if approx && r.chance(30) {
                c.extend(s(&["LIMIT", &r.below(250).to_string()]));
            }
            c
        }
        13 => {
            let mut c = s(&["XSETID", "s", &format!("{}-0", *ms + r.below(2))]);
            if r.chance(30) {
                c.extend(s(&["ENTRIESADDED", &r.below(500).to_string()]));
            }
            c
        }
        14..=16 => {
            let end = |r: &mut Rng, ms: u64, ends: [&str; 2]| match r.below(4) {
                0 => ends[0].to_owned(),
                1 => format!("({}", id(r, ms)),
                _ => id(r, ms),
            };
            let rev = r.chance(30);
            let mut c = if rev {
                let hi = end(r, *ms, ["+", ""]);
                let lo = end(r, *ms, ["-", ""]);
                s(&["XREVRANGE", "s", &hi, &lo])
            } else {
                let lo = end(r, *ms, ["-", ""]);
                let hi = end(r, *ms, ["+", ""]);
                s(&["XRANGE", "s", &lo, &hi])
            };
            if r.chance(50) {
                c.extend(s(&["COUNT", &r.below(20).to_string()]));
            }
            c
        }
        17 => s(&["XLEN", "s"]),
        _ => s(&["XINFO", "STREAM", "s"]),
    }
}

/// One random consumer-group command on stream `s`: none whose reply holds a time.
fn group_command(r: &mut Rng, ms: &mut u64) -> Vec<String> {
    let id = |r: &mut Rng, ms: u64| format!("{}-{}", r.below(ms + 2), r.below(3));
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let group = if r.chance(80) { "g" } else { "h" };
    let consumer = ["alice", "bob", "carol"][r.below(3) as usize];
    match r.below(12) {
        0 => {
            let start = if r.chance(50) {
                "$".to_owned()
            } else {
                id(r, *ms)
            };
            let mut c = s(&["XGROUP", "CREATE", "s", group, &start]);
            if r.chance(50) {
                c.push("MKSTREAM".into());
            }
            if r.chance(30) {
                c.extend(s(&["ENTRIESREAD", &r.below(20).to_string()]));
            }
            c
        }
        1 => {
            let mut c = s(&["XGROUP", "SETID", "s", group, &id(r, *ms)]);
            if r.chance(30) {
                c.extend(s(&["ENTRIESREAD", &r.below(20).to_string()]));
            }
            c
        }
        2 => {
            if r.chance(30) {
                s(&["XGROUP", "DESTROY", "s", group])
            } else {
                s(&["XGROUP", "DELCONSUMER", "s", group, consumer])
            }
        }
        3..=5 => {
            let mut c = s(&["XREADGROUP", "GROUP", group, consumer]);
            if r.chance(50) {
                c.extend(s(&["COUNT", &r.below(4).to_string()]));
            }
            if r.chance(20) {
                c.push("NOACK".into());
            }
            let from = if r.chance(70) {
                ">".to_owned()
            } else {
                id(r, *ms)
            };
            c.extend(s(&["STREAMS", "s", &from]));
            c
        }
        6 => {
            let mut c = s(&["XACK", "s", group]);
            for _ in 0..1 + r.below(3) {
                c.push(id(r, *ms));
            }
            c
        }
        7 => s(&["XPENDING", "s", group]),
        8 => {
            let mut c = s(&["XCLAIM", "s", group, consumer, "0"]);
            for _ in 0..1 + r.below(3) {
                c.push(id(r, *ms));
            }
            c.push("JUSTID".into());
            if r.chance(20) {
                c.push("FORCE".into());
            }
            c
        }
        9 => {
            let mut c = s(&["XAUTOCLAIM", "s", group, consumer, "0", &id(r, *ms)]);
            c.extend(s(&["COUNT", &(1 + r.below(4)).to_string(), "JUSTID"]));
            c
        }
        _ => s(&["XINFO", "GROUPS", "s"]),
    }
}

#[test]
fn streams_match_redis() {
    let redis = Redis::start();
    let mut direct = redis.direct();
    let seed = property_seed();
    let mut r = Rng(seed);
    for round in 0..12 {
        let _: redis::Value = redis::cmd("DEL").arg("s").query(&mut direct).unwrap();
        let store = Store::default();
        let mut ms = 1;
        let mut history = Vec::new();
        for _ in 0..400 {
            let args = if r.chance(40) {
                group_command(&mut r, &mut ms)
            } else {
                command(&mut r, &mut ms)
            };
            let mut cmd = redis::cmd(&args[0]);
            for a in &args[1..] {
                cmd.arg(a.as_str());
            }
            let want = without_tree_nodes(&args, redis_text(cmd.query(&mut direct)));
            let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            let got = without_tree_nodes(&args, store_text(store.run(Proto::Resp2, &bytes)));
            history.push(args.join(" "));
            assert_eq!(
                got,
                want,
                "seed {seed}, round {round}: `{}` differs (store left, redis right); \
                 the sequence:\n{}",
                args.join(" "),
                history.join("\n")
            );
        }
    }
}
