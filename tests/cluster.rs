//! A Redis Cluster upstream (SPEC 6), end to end: a real cluster of six redis-server
//! processes (three masters with a replica each, made by `redis-cli --cluster create`), pkv
//! in front of it with `PKV_UPSTREAM_URL=redis+cluster://...` and its ledger on a plain
//! Redis of its own (`PKV_LEDGER_URL`). Each master is read directly to see where keys went.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::{wait_until, Issuer, PkvConfig, Redis, Server};
use pkv::upstream::cluster::slot::key_slot;

struct Env {
    // Field order is drop order: pkv goes before the servers it talks to.
    pkv: Server,
    issuer: Issuer,
    ledger: Redis,
    cluster: TestCluster,
}

fn start() -> Env {
    let cluster = TestCluster::start();
    let ledger = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&ledger, &issuer)
        .set("PKV_UPSTREAM_URL", &cluster.url())
        .set("PKV_LEDGER_URL", &ledger.url())
        .start();
    Env {
        pkv,
        issuer,
        ledger,
        cluster,
    }
}

/// A small random generator, so that the keys differ from run to run.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next() % 256) as u8).collect()
    }
}

#[test]
fn key_slots_match_cluster_keyslot() {
    let cluster = TestCluster::start();
    let mut node = cluster.nodes[0].direct();
    let mut rng = Rng::new();
    for i in 0..400 {
        let len = 1 + (rng.next() % 24) as usize;
        let mut key = rng.bytes(len);
        match i % 4 {
            // A tag somewhere in the key.
            1 => {
                let tag_len = 1 + (rng.next() % 6) as usize;
                let tag = rng.bytes(tag_len);
                let mut tagged = b"x{".to_vec();
                tagged.extend(tag.iter().filter(|&&b| b != b'}'));
                tagged.extend(b"}");
                tagged.extend(&key);
                key = tagged;
            }
            // An empty tag, which does not count.
            2 => key.splice(0..0, b"{}".iter().copied()).for_each(drop),
            // Braces that open and never close.
            3 => key.push(b'{'),
            _ => {}
        }
        let expected: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&key)
            .query(&mut node)
            .unwrap();
        assert_eq!(i64::from(key_slot(&key)), expected, "key {key:?}");
    }
}

#[test]
fn commands_are_routed_by_slot_and_answered_in_order() {
    let env = start();
    let token = env.issuer.token(100);
    let mut c = env.pkv.client(&token);

    // Plain commands, one at a time, across every master.
    for i in 0..60 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    for i in 0..60 {
        let v: i64 = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut c)
            .unwrap();
        assert_eq!(v, i);
    }

    // A pipeline across nodes, answered in the client's order.
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.cmd("INCRBY").arg(format!("n{}", i % 50)).arg(1);
        pipe.cmd("GET").arg(format!("k{}", i % 60));
    }
    let replies: Vec<redis::Value> = pipe.query(&mut c).unwrap();
    for i in 0..200 {
        let want = (i / 50 + 1) as i64;
        assert_eq!(replies[2 * i], redis::Value::Int(want), "INCRBY #{i}");
        let got: i64 = redis::from_redis_value(replies[2 * i + 1].clone()).unwrap();
        assert_eq!(got, (i % 60) as i64, "GET #{i}");
    }

    // The tenant's keys are on every master, each under the tenant's prefix.
    let masters = env.cluster.masters();
    assert_eq!(masters.len(), 3);
    let mut seen = BTreeSet::new();
    let mut prefix = None;
    for master in &masters {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("pkv:t:*")
            .query(&mut master.direct())
            .unwrap();
        assert!(!keys.is_empty(), "master {} holds none", master.port);
        for key in keys {
            let (p, name) = key.rsplit_once(':').unwrap();
            assert!(prefix.get_or_insert(p.to_owned()) == p, "{key}");
            assert_eq!(
                redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(&key)
                    .query::<i64>(&mut master.direct())
                    .unwrap(),
                i64::from(key_slot(key.as_bytes()))
            );
            seen.insert(name.to_owned());
        }
    }
    assert_eq!(seen.len(), 110);

    // KEYS asks every master.
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("k*").query(&mut c).unwrap();
    keys.sort();
    let mut want: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    want.sort();
    assert_eq!(keys, want);

    // Hash tags keep one tenant's keys in one slot: multi-key commands on them work.
    let _: () = redis::cmd("MSET")
        .arg("{user}:a")
        .arg("1")
        .arg("{user}:b")
        .arg("2")
        .query(&mut c)
        .unwrap();
    let both: Vec<String> = redis::cmd("MGET")
        .arg("{user}:a")
        .arg("{user}:b")
        .query(&mut c)
        .unwrap();
    assert_eq!(both, vec!["1", "2"]);
    let n: i64 = redis::cmd("SUNIONSTORE")
        .arg("{user}:s")
        .arg("{user}:x")
        .arg("{user}:y")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 0);

    // Keys in two slots: Redis Cluster's CROSSSLOT, and nothing written.
    let err = redis::cmd("MSET")
        .arg("x1")
        .arg("1")
        .arg("x2")
        .arg("2")
        .arg("x3")
        .arg("3")
        .query::<()>(&mut c)
        .unwrap_err();
    assert_eq!(err.code(), Some("CROSSSLOT"), "{err}");
    assert!(err
        .to_string()
        .contains("Keys in request don't hash to the same slot"));
    let x1: Option<String> = redis::cmd("GET").arg("x1").query(&mut c).unwrap();
    assert_eq!(x1, None);

    // A transaction in one slot runs on that slot's master.
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("SET")
        .arg("{t}:a")
        .arg("1")
        .cmd("INCR")
        .arg("{t}:b")
        .cmd("MGET")
        .arg("{t}:a")
        .arg("{t}:b");
    let (set, incr, got): (String, i64, Vec<String>) = pipe.query(&mut c).unwrap();
    assert_eq!(
        (set.as_str(), incr, got),
        ("OK", 1, vec!["1".into(), "1".into()])
    );
    // ... and one that leaves its slot is refused, nothing of it run.
    let mut raw = env.pkv.resp_authed(&token);
    assert_eq!(raw.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"SET", b"{t}:c", b"1"]), b"+QUEUED\r\n");
    let refused = raw.call(&[b"SET", b"{u}:c", b"1"]);
    assert!(refused.starts_with(b"-CROSSSLOT"), "{refused:?}");
    let exec = raw.call(&[b"EXEC"]);
    assert!(exec.starts_with(b"-EXECABORT"), "{exec:?}");
    let c_val: Option<String> = redis::cmd("GET").arg("{t}:c").query(&mut c).unwrap();
    assert_eq!(c_val, None);

    // A blocking command waits on the master of its key.
    let _: () = redis::cmd("RPUSH")
        .arg("{q}list")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let popped: (String, String) = redis::cmd("BLPOP")
        .arg("{q}list")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(popped.1, "v");

    // Pub/Sub: Redis Cluster carries a PUBLISH to the subscribers of every node.
    let mut sub = env.pkv.resp_authed(&token);
    let confirmed = sub.call(&[b"SUBSCRIBE", b"news"]);
    assert!(
        confirmed.windows(9).any(|w| w == b"subscribe"),
        "{}",
        String::from_utf8_lossy(&confirmed)
    );
    for _ in 0..3 {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("news")
            .arg("hello")
            .query(&mut c)
            .unwrap();
        let message = sub.reply();
        let text = String::from_utf8_lossy(&message);
        assert!(text.contains("news") && text.contains("hello"), "{text}");
    }

    // SCAN walks every master, one cursor across them; DBSIZE, RANDOMKEY and FLUSHDB walk
    // with it.
    let mut scanned = BTreeSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(7)
            .query(&mut c)
            .unwrap();
        scanned.extend(keys);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let all: BTreeSet<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert_eq!(scanned, all);
    assert!(all.len() > 110, "{}", all.len());
    let dbsize: usize = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(dbsize, all.len());
    let random: String = redis::cmd("RANDOMKEY").query(&mut c).unwrap();
    assert!(all.contains(&random), "{random}");
    let bad = raw.call(&[b"SCAN", b"99999999999"]);
    assert!(bad.starts_with(b"-ERR invalid cursor"), "{bad:?}");
    // Inside a transaction they cannot walk the other masters: refused, clearly.
    assert_eq!(raw.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"SET", b"{t}:d", b"1"]), b"+QUEUED\r\n");
    let keys = raw.call(&[b"KEYS", b"*"]);
    assert!(
        keys.starts_with(b"-ERR KEYS and SCAN cannot run in a transaction"),
        "{}",
        String::from_utf8_lossy(&keys)
    );
    assert!(raw.call(&[b"EXEC"]).starts_with(b"-EXECABORT"));
    // Another tenant's keys, which FLUSHDB must leave alone.
    let other = env.issuer.token(10);
    let mut o = env.pkv.client(&other);
    for i in 0..20 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut o)
            .unwrap();
    }
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    let dbsize: usize = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(dbsize, 0);
    let theirs: usize = redis::cmd("DBSIZE").query(&mut o).unwrap();
    assert_eq!(theirs, 20);
    let left: usize = masters
        .iter()
        .map(|m| {
            redis::cmd("KEYS")
                .arg("pkv:t:*")
                .query::<Vec<String>>(&mut m.direct())
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(left, 20, "only the other tenant's keys are left");

    // The ledger is on its own Redis, nothing of it in the cluster.
    for master in &masters {
        let ledger: Vec<String> = redis::cmd("KEYS")
            .arg("pkv:ledger:*")
            .query(&mut master.direct())
            .unwrap();
        assert!(ledger.is_empty(), "{ledger:?}");
    }
    let ledger: Vec<String> = redis::cmd("KEYS")
        .arg("pkv:ledger:*")
        .query(&mut env.ledger.direct())
        .unwrap();
    assert!(!ledger.is_empty());
}

/// The balance as `PKV.BALANCE` gives it, in units.
fn balance(c: &mut redis::Connection) -> f64 {
    let fields: Vec<String> = redis::cmd("PKV.BALANCE").query(c).unwrap();
    let at = fields.iter().position(|f| f == "balance").unwrap();
    fields[at + 1].parse().unwrap()
}

#[test]
fn metering_works_on_a_cluster() {
    let env = start();
    let token = env.issuer.token(100);
    let mut c = env.pkv.client(&token);
    let before = balance(&mut c);
    assert!(before > 99.0, "{before}");
    for i in 0..30 {
        let _: () = redis::cmd("SET")
            .arg(format!("m{i}"))
            .arg("x".repeat(1000))
            .query(&mut c)
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("EX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    // Every key bought storage: each has a TTL on its own master.
    for master in env.cluster.masters() {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("pkv:t:*")
            .query(&mut master.direct())
            .unwrap();
        for key in keys {
            let ttl: i64 = redis::cmd("TTL")
                .arg(&key)
                .query(&mut master.direct())
                .unwrap();
            assert!(ttl > 0, "{key} has TTL {ttl}");
            if key.ends_with(":short") {
                assert!(ttl <= 100, "{key} has TTL {ttl}");
            }
        }
    }
    wait_until("the balance goes down", || balance(&mut c) < before);
}

#[test]
fn a_slot_moves_while_a_client_writes() {
    let env = start();
    let token = env.issuer.token(1000);
    // The tag whose slot moves; the prefix has no braces, so the tag alone decides it.
    let slot = key_slot(b"moving");
    let source = env.cluster.owner_of(slot);
    let target = env
        .cluster
        .masters()
        .into_iter()
        .find(|m| m.port != source.port)
        .unwrap();
    let (source_id, target_id) = (TestCluster::node_id(source), TestCluster::node_id(target));

    let written = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let url = env.pkv.url(&token);
        let (written, errors, stop) = (written.clone(), errors.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                // One key of the moving slot and one elsewhere, in one pipeline.
                let mut pipe = redis::pipe();
                pipe.cmd("SET").arg(format!("{{moving}}:{i}")).arg(i);
                pipe.cmd("SET").arg(format!("still:{i}")).arg(i);
                match pipe.query::<()>(&mut c) {
                    Ok(()) => {
                        i += 1;
                        written.store(i, Ordering::Release);
                    }
                    Err(e) => errors.lock().unwrap().push(e.to_string()),
                }
            }
            i
        })
    };
    let progress = |n: u64| {
        let from = written.load(Ordering::Acquire);
        wait_until("the writer goes on", || {
            written.load(Ordering::Acquire) >= from + n
        });
    };
    progress(50);

    // The slot migrated by hand, as redis-cli --cluster reshard does it.
    let call = |node: &Redis, args: &[&str]| -> redis::Value {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut node.direct()).unwrap()
    };
    let s = slot.to_string();
    let moving = Instant::now();
    call(target, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &source_id]);
    call(source, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &target_id]);
    // Writes go on while the slot is half moved: new keys are asked for on the target.
    progress(50);
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(20)
            .query(&mut source.direct())
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let mut migrate = redis::cmd("MIGRATE");
        migrate
            .arg("127.0.0.1")
            .arg(target.port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys);
        let _: redis::Value = migrate.query(&mut source.direct()).unwrap();
        progress(5);
    }
    for node in &env.cluster.nodes {
        let _: redis::Value = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&target_id)
            .query(&mut node.direct())
            .unwrap_or(redis::Value::Nil);
    }
    let moved_in = moving.elapsed();
    // And after the move, pkv's map is out of date until a MOVED tells it.
    progress(50);
    stop.store(true, Ordering::Release);
    let total = writer.join().unwrap();

    let errors = errors.lock().unwrap().clone();
    eprintln!(
        "reshard: slot {slot} moved in {:?} under {total} pipelined writes, {} errors",
        moved_in,
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    // Every write is there, read back through pkv and on the master that now owns the slot.
    let mut c = env.pkv.client(&token);
    for i in 0..total {
        let (a, b): (Option<u64>, Option<u64>) = redis::pipe()
            .cmd("GET")
            .arg(format!("{{moving}}:{i}"))
            .cmd("GET")
            .arg(format!("still:{i}"))
            .query(&mut c)
            .unwrap();
        assert_eq!((a, b), (Some(i), Some(i)), "write {i} of {total}");
    }
    let on_target: Vec<String> = redis::cmd("KEYS")
        .arg("*{moving}*")
        .query(&mut target.direct())
        .unwrap();
    assert_eq!(on_target.len() as u64, total);
    let on_source: Vec<String> = redis::cmd("KEYS")
        .arg("*{moving}*")
        .query(&mut source.direct())
        .unwrap();
    assert!(on_source.is_empty(), "{on_source:?}");
}

#[test]
fn a_cluster_ledger_url_is_refused_a_plain_one_taken() {
    let issuer = Issuer::new();
    let ledger = Redis::start();
    // No PKV_LEDGER_URL: the ledger lives in the cluster (tests/cluster_ledger.rs).
    let config =
        PkvConfig::new(&ledger, &issuer).set("PKV_UPSTREAM_URL", "redis+cluster://127.0.0.1:1");
    assert!(pkv::config::Settings::from_map(&config.settings()).is_ok());
    let config = config.set("PKV_LEDGER_URL", "redis+cluster://127.0.0.1:2");
    let err = pkv::config::Settings::from_map(&config.settings()).unwrap_err();
    assert!(
        err.to_string()
            .contains("the ledger cannot be on a Redis Cluster"),
        "{err}"
    );
    let config = PkvConfig::new(&ledger, &issuer)
        .set("PKV_UPSTREAM_URL", "redis+cluster://127.0.0.1:1")
        .set("PKV_LEDGER_URL", &ledger.url());
    assert!(pkv::config::Settings::from_map(&config.settings()).is_ok());
    for bad in [
        "redis+cluster://",
        "redis+cluster://h:1/3",
        "redis+cluster://h",
    ] {
        let config = PkvConfig::new(&ledger, &issuer)
            .set("PKV_UPSTREAM_URL", bad)
            .set("PKV_LEDGER_URL", &ledger.url());
        let err = pkv::config::Settings::from_map(&config.settings()).unwrap_err();
        assert!(err.to_string().contains("PKV_UPSTREAM_URL"), "{bad}: {err}");
    }
}

/// A master killed while clients write: its replica is promoted, pkv reads the new map and
/// the clients go on. Errors are allowed only in the failover window (Redis Cluster's own
/// window: the master's slots are served by nobody until its replica takes over); every
/// write that was acknowledged is there afterwards.
#[test]
fn a_master_killed_while_clients_write_is_replaced_by_its_replica() {
    let mut cluster = TestCluster::start_with(
        1000,
        // Acknowledged writes are on disk before the reply.
        &["--appendonly", "yes", "--appendfsync", "always"],
    );
    let ledger = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&ledger, &issuer)
        .set("PKV_UPSTREAM_URL", &cluster.url())
        .set("PKV_LEDGER_URL", &ledger.url())
        .start();
    let token = issuer.token(1000);

    const CLIENTS: usize = 4;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let url = pkv.url(&token);
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url.as_str())
                    .unwrap()
                    .get_connection()
                    .unwrap();
                let mut acked = Vec::new();
                let mut errors = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let key = format!("w{w}:{i}");
                    match redis::cmd("SET").arg(&key).arg(i).query::<()>(&mut c) {
                        Ok(()) => {
                            acked.push(key);
                            acknowledged.fetch_add(1, Ordering::AcqRel);
                        }
                        Err(e) => {
                            errors.push((Instant::now(), e.to_string()));
                            // A connection the error closed is opened again.
                            if e.is_io_error() || e.is_connection_dropped() {
                                c = redis::Client::open(url.as_str())
                                    .unwrap()
                                    .get_connection()
                                    .unwrap();
                            }
                        }
                    }
                    i += 1;
                }
                (acked, errors)
            })
        })
        .collect();
    let progress = |n: u64| {
        let from = acknowledged.load(Ordering::Acquire);
        wait_until("the writers go on", || {
            acknowledged.load(Ordering::Acquire) >= from + n
        });
    };
    progress(200);

    // Kill the master of slot 0 (a third of all keys).
    let victim = cluster.owner_of(0).port;
    let killed_at = Instant::now();
    cluster
        .nodes
        .iter_mut()
        .find(|n| n.port == victim)
        .unwrap()
        .kill();
    // Writes to every slot succeed again once the replica took over.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut c = pkv.client(&token);
    // When the cluster itself serves slot 0 again, on the promoted replica.
    let mut promoted_at = None;
    loop {
        if promoted_at.is_none() && cluster.promoted(0, victim) {
            promoted_at = Some(Instant::now());
        }
        let ok = (0..30).all(|i| {
            redis::cmd("SET")
                .arg(format!("after{i}"))
                .arg(i)
                .query::<()>(&mut c)
                .is_ok()
        });
        if ok {
            break;
        }
        if Instant::now() >= deadline {
            let why: Vec<String> = (0..30)
                .filter_map(|i| {
                    redis::cmd("SET")
                        .arg(format!("after{i}"))
                        .arg(i)
                        .query::<()>(&mut c)
                        .err()
                        .map(|e| e.to_string())
                })
                .collect();
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(
                    &mut cluster
                        .nodes
                        .iter()
                        .find(|n| n.port != victim)
                        .unwrap()
                        .direct(),
                )
                .unwrap();
            panic!("writes never resumed: {why:?}\n{nodes}");
        }
        c = pkv.client(&token);
        std::thread::sleep(Duration::from_millis(20));
    }
    let recovered = killed_at.elapsed();
    // pkv reads the new map as soon as a send fails, not at its next periodic read (10 s).
    let behind = promoted_at.map_or(Duration::ZERO, |at| at.elapsed());
    assert!(
        behind < Duration::from_secs(3),
        "pkv served again {behind:?} after the cluster did"
    );
    progress(200);
    stop.store(true, Ordering::Release);
    let mut total_errors = 0;
    let mut acked_all = Vec::new();
    for writer in writers {
        let (acked, errors) = writer.join().unwrap();
        for (at, e) in &errors {
            assert!(
                *at >= killed_at && at.duration_since(killed_at) <= recovered,
                "an error outside the failover window: {e}"
            );
        }
        total_errors += errors.len();
        acked_all.extend(acked);
    }
    let mut lost = 0;
    for chunk in acked_all.chunks(100) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("GET").arg(key);
        }
        let values: Vec<Option<u64>> = pipe.query(&mut c).unwrap();
        lost += values.iter().filter(|v| v.is_none()).count();
    }
    eprintln!(
        "failover: {} acknowledged writes, {total_errors} errors, recovered in {:?}, {lost} lost",
        acked_all.len(),
        recovered
    );
    assert_eq!(lost, 0, "acknowledged writes lost");
}

/// Two pkv processes in front of one cluster, sharing one ledger: a token is credited once
/// whichever of them sees it, an account's keys are the same through either, and WATCH
/// sees a write made through the other.
#[test]
fn two_pkvs_share_the_cluster_and_the_ledger() {
    let cluster = TestCluster::start();
    let ledger = Redis::start();
    let issuer = Issuer::new();
    let config = PkvConfig::new(&ledger, &issuer)
        .set("PKV_UPSTREAM_URL", &cluster.url())
        .set("PKV_LEDGER_URL", &ledger.url());
    let (one, two) = (config.start(), config.start());
    let token = issuer.token(100);
    let mut a = one.client(&token);
    let mut b = two.client(&token);
    for i in 0..20 {
        let _: () = redis::cmd("SET")
            .arg(format!("{{w}}:{i}"))
            .arg(i)
            .query(&mut a)
            .unwrap();
    }
    let seen: Vec<u64> = redis::cmd("MGET")
        .arg((0..20).map(|i| format!("{{w}}:{i}")).collect::<Vec<_>>())
        .query(&mut b)
        .unwrap();
    assert_eq!(seen, (0..20).collect::<Vec<u64>>());
    // Credited once: both see at most the token's 100 units.
    for c in [&mut a, &mut b] {
        let left = balance(c);
        assert!(left <= 100.0 && left > 99.0, "{left}");
    }

    // WATCH on one pkv, a write through the other: the transaction does not run.
    let mut raw = one.resp_authed(&token);
    assert_eq!(raw.call(&[b"WATCH", b"{w}:0"]), b"+OK\r\n");
    let _: () = redis::cmd("SET")
        .arg("{w}:0")
        .arg("changed")
        .query(&mut b)
        .unwrap();
    assert_eq!(raw.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"SET", b"{w}:1", b"x"]), b"+QUEUED\r\n");
    let exec = raw.call(&[b"EXEC"]);
    assert!(exec == b"*-1\r\n", "{}", String::from_utf8_lossy(&exec));
    let one_still: u64 = redis::cmd("GET").arg("{w}:1").query(&mut a).unwrap();
    assert_eq!(one_still, 1);
    // And unwatched, it runs.
    assert_eq!(raw.call(&[b"WATCH", b"{w}:0"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"SET", b"{w}:1", b"x"]), b"+QUEUED\r\n");
    let exec = raw.call(&[b"EXEC"]);
    assert_eq!(exec, b"*1\r\n+OK\r\n", "{}", String::from_utf8_lossy(&exec));
}

/// Runs pkv with `config` as a process until it exits (or `within` passes: then `None`,
/// after killing it); its exit code and stderr.
fn run_until_exit(config: &PkvConfig, within: Duration) -> Option<(Option<i32>, String)> {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut child = config
        .command(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    status.map(|s| (s.code(), stderr))
}

/// A plain `redis://` URL naming a cluster node: pkv refuses to start (exit 2) with a line
/// that names `redis+cluster://`, rather than serve keys of other masters' slots `-MOVED`;
/// and so when the node was down at start-up and is a cluster node once it answers. A
/// plain Redis on the same kind of URL is served.
#[test]
fn a_plain_url_naming_a_cluster_node_is_refused() {
    let issuer = Issuer::new();
    let ledger = Redis::start();
    // The bus port is named: the default, port + 10000, may be past 65535.
    let bus = common::free_port().to_string();
    let node = Redis::start_with(&["--cluster-enabled", "yes", "--cluster-port", &bus]);
    let config = PkvConfig::new(&node, &issuer).set("PKV_LEDGER_URL", &ledger.url());
    let (code, stderr) = run_until_exit(&config, Duration::from_secs(10))
        .expect("pkv served a cluster node named by a plain URL");
    assert_eq!(code, Some(2), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("pkv: PKV_UPSTREAM_URL:"))
        .unwrap_or_else(|| panic!("no PKV_UPSTREAM_URL line in {stderr:?}"));
    assert!(
        line.contains("Redis Cluster node")
            && line.contains(&format!("redis+cluster://127.0.0.1:{}", node.port)),
        "{line}"
    );

    // Down at start-up, a cluster node once it answers: pkv stops then, with the same line.
    let down = common::ClosedPort::new();
    let port = down.port;
    let config = PkvConfig::new(&ledger, &issuer)
        .set("PKV_UPSTREAM_URL", &format!("redis://127.0.0.1:{port}"))
        .set("PKV_LEDGER_URL", &ledger.url());
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = config.command(dir.path());
    cmd.stderr(std::process::Stdio::piped());
    // Returns once pkv listens: it started while the node was down.
    let mut pkv = common::Pkv::spawn(cmd, dir);
    drop(down);
    let late_bus = common::free_port().to_string();
    let _late = Redis::start_with_on(
        port,
        &["--cluster-enabled", "yes", "--cluster-port", &late_bus],
    );
    wait_until("pkv stops", || !pkv.is_running());
    let code = pkv.child.wait().unwrap().code();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut pkv.child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("redis+cluster://127.0.0.1:{port}")),
        "{stderr}"
    );

    // A plain Redis is served: asked before pkv listens, and answered cluster_enabled:0.
    let plain = PkvConfig::new(&ledger, &issuer).start_process();
    let token = issuer.token(10);
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut plain.client(&token))
        .unwrap();
}

/// The node whose Pub/Sub connections include a subscriber of a channel ending `suffix`.
fn subscribed_node(cluster: &TestCluster, suffix: &str) -> Option<u16> {
    cluster.nodes.iter().find_map(|n| {
        // A killed node is skipped.
        let mut conn = redis::Client::open(n.url()).ok()?.get_connection().ok()?;
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(format!("*{suffix}"))
            .query(&mut conn)
            .ok()?;
        (!channels.is_empty()).then_some(n.port)
    })
}

/// The node pkv's Pub/Sub connection is on dies while a client is subscribed: pkv
/// subscribes again on another live node (Redis Cluster carries a PUBLISH to every node),
/// and the client, still on its one connection, receives what is published after that.
#[test]
fn a_subscriber_keeps_receiving_when_its_node_dies() {
    let mut cluster = TestCluster::start_with(1000, &[]);
    let ledger = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&ledger, &issuer)
        .set("PKV_UPSTREAM_URL", &cluster.url())
        .set("PKV_LEDGER_URL", &ledger.url())
        .start();
    let token = issuer.token(100);
    let mut sub_conn = pkv.client(&token);
    let mut sub = sub_conn.as_pubsub();
    sub.subscribe("news").unwrap();
    sub.psubscribe("alerts.*").unwrap();
    sub.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut c = pkv.client(&token);
    for channel in ["news", "alerts.fire"] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg("before")
            .query(&mut c)
            .unwrap();
        let msg = sub.get_message().unwrap();
        assert_eq!(msg.get_payload::<String>().unwrap(), "before");
    }

    let victim = subscribed_node(&cluster, ":news").expect("a node holds the subscription");
    let killed_at = Instant::now();
    cluster
        .nodes
        .iter_mut()
        .find(|n| n.port == victim)
        .unwrap()
        .kill();
    // Publish through pkv until the subscriber hears it on the channel and on the pattern;
    // a PUBLISH sent before the subscription moved is not heard, and is sent again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut publish_errors = 0;
    let mut heard = BTreeSet::new();
    while heard.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "heard {heard:?} 30 s after the node died ({publish_errors} publish errors)"
        );
        for channel in ["news", "alerts.fire"] {
            if let Err(e) = redis::cmd("PUBLISH")
                .arg(channel)
                .arg("after")
                .query::<i64>(&mut c)
            {
                publish_errors += 1;
                if e.is_io_error() || e.is_connection_dropped() {
                    c = pkv.client(&token);
                }
            }
        }
        loop {
            match sub.get_message() {
                Ok(msg) => {
                    assert_eq!(msg.get_payload::<String>().unwrap(), "after");
                    let pattern: Option<String> = msg.get_pattern().ok();
                    heard.insert((msg.get_channel_name().to_owned(), pattern));
                }
                Err(e) if e.is_timeout() => break,
                Err(e) => panic!("the subscriber's connection failed: {e}"),
            }
        }
    }
    assert_eq!(
        heard,
        BTreeSet::from([
            ("alerts.fire".to_owned(), Some("alerts.*".to_owned())),
            ("news".to_owned(), None),
        ])
    );
    // A PUBLISH names no key: pkv sends it to a live master, as any node would carry it.
    assert_eq!(publish_errors, 0);
    let moved_to = subscribed_node(&cluster, ":news");
    assert!(
        moved_to.is_some_and(|p| p != victim),
        "subscription on {moved_to:?}"
    );
    eprintln!(
        "pubsub: subscriber heard again {:?} after its node died ({publish_errors} publish errors)",
        killed_at.elapsed()
    );
    // The client leaves: its subscription on the new node goes with it.
    drop(sub);
    drop(sub_conn);
    wait_until("the moved subscription is dropped", || {
        subscribed_node(&cluster, ":news").is_none()
    });
}

/// `redis-cli --cluster reshard` (the real tool) moves a thousand slots from one master to
/// another while fifteen clients write through pkv: no client sees an error, every
/// acknowledged write reads back afterwards, and the keys of the moved slots are on the
/// master they moved to.
#[test]
fn redis_cli_reshard_while_clients_write() {
    let env = start();
    let token = env.issuer.token(1000);
    let masters = env.cluster.masters();
    let source = env.cluster.owner_of(0);
    let target = masters.iter().find(|m| m.port != source.port).unwrap();
    let (source_id, target_id) = (TestCluster::node_id(source), TestCluster::node_id(target));

    const CLIENTS: usize = 15;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let url = env.pkv.url(&token);
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                let mut acked = Vec::new();
                let mut errors = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Acquire) {
                    // Every third request a pipeline of three, the rest single SETs.
                    let keys: Vec<String> = (0..if i.is_multiple_of(3) { 3 } else { 1 })
                        .map(|j| format!("r{w}:{i}:{j}"))
                        .collect();
                    let mut pipe = redis::pipe();
                    for key in &keys {
                        pipe.cmd("SET").arg(key).arg(i);
                    }
                    match pipe.query::<()>(&mut c) {
                        Ok(()) => {
                            acknowledged.fetch_add(keys.len() as u64, Ordering::AcqRel);
                            acked.extend(keys.into_iter().map(|k| (k, i)));
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                    i += 1;
                }
                (acked, errors)
            })
        })
        .collect();
    let progress = |n: u64| {
        let from = acknowledged.load(Ordering::Acquire);
        wait_until("the writers go on", || {
            acknowledged.load(Ordering::Acquire) >= from + n
        });
    };
    progress(2000);
    let started = Instant::now();
    let before = acknowledged.load(Ordering::Acquire);
    let out = Command::new("redis-cli")
        .args([
            "--cluster",
            "reshard",
            &format!("127.0.0.1:{}", source.port),
        ])
        .args(["--cluster-from", &source_id, "--cluster-to", &target_id])
        .args(["--cluster-slots", "1000", "--cluster-yes"])
        .args(["--cluster-pipeline", "100"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let during = acknowledged.load(Ordering::Acquire) - before;
    assert!(
        out.status.success(),
        "reshard: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    progress(500);
    stop.store(true, Ordering::Release);
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    for writer in writers {
        let (a, e) = writer.join().unwrap();
        acked.extend(a);
        errors.extend(e);
    }
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    // The source's first thousand slots (0-999) are the target's now.
    assert_eq!(env.cluster.owner_of(0).port, target.port);
    assert_eq!(env.cluster.owner_of(999).port, target.port);
    let mut c = env.pkv.client(&token);
    let mut lost = 0;
    for chunk in acked.chunks(200) {
        let mut pipe = redis::pipe();
        for (key, _) in chunk {
            pipe.cmd("GET").arg(key);
        }
        let values: Vec<Option<u64>> = pipe.query(&mut c).unwrap();
        for ((key, i), v) in chunk.iter().zip(values) {
            if v != Some(*i) {
                lost += 1;
                eprintln!("{key}: {v:?}, want {i}");
            }
        }
    }
    let moved_keys = |node: &Redis| -> usize {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("pkv:t:*")
            .query(&mut node.direct())
            .unwrap();
        keys.iter()
            .filter(|k| key_slot(k.as_bytes()) < 1000)
            .count()
    };
    let on_target = moved_keys(target);
    assert_eq!(
        moved_keys(source),
        0,
        "keys of moved slots left on the source"
    );
    eprintln!(
        "reshard: 1000 slots moved by redis-cli in {took:?}, {during} writes acknowledged \
         meanwhile, {} in all, {} errors, {lost} lost, {on_target} keys of the moved slots \
         on the target",
        acked.len(),
        errors.len()
    );
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert!(during > 0, "no write went on during the reshard");
    assert!(on_target > 0, "no key in the moved slots");
}
