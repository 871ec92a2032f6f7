//! The ledger against hostile timing and hostile clients, with real redis-server and pkv
//! processes: ledger updates applied exactly once when the upstream answers after pkv gave
//! up waiting, no overspend by many replies in flight, what a crash can lose, no false
//! NOQUOTA for a funded account, and no bill for commands the upstream refused to run.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{encode, Issuer, PkvConfig, Redis, Resp, RespConn, Server};
use pkv::namespace::escape_account;

const NANOS: i64 = 1_000_000_000;

// === helpers ===

/// The upstream redis-server's process id, as it reports it.
fn redis_pid(redis: &Redis) -> u32 {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut redis.direct())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO server has process_id")
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// A redis-server frozen with SIGSTOP; it resumes (SIGCONT) when this drops, so a failed
/// assertion never leaves it stopped.
struct Frozen(u32);

impl Frozen {
    fn new(redis: &Redis) -> Frozen {
        let pid = redis_pid(redis);
        signal(pid, "-STOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

/// Every field of an account's ledger record, read directly from the upstream.
fn ledger_hash(redis: &Redis, account: &str) -> BTreeMap<String, i64> {
    let mut conn = redis.direct();
    let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("pkv:ledger:acct:{}", escape_account(account)))
        .query(&mut conn)
        .unwrap();
    fields
        .into_iter()
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect()
}

/// Waits until `f` holds, for at most `limit`.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// `PKV.BALANCE` on `c`, as field → text (which also gives this process's lease back).
fn balance(c: &mut RespConn) -> BTreeMap<String, String> {
    let reply = c.value(&[b"PKV.BALANCE"]);
    let Resp::Array(items) = reply else {
        panic!("PKV.BALANCE answered {reply}");
    };
    let as_text = |r: &Resp| match r {
        Resp::Bulk(b) => text(b),
        Resp::Int(n) => n.to_string(),
        other => other.to_string(),
    };
    items
        .chunks(2)
        .map(|kv| (as_text(&kv[0]), as_text(&kv[1])))
        .collect()
}

/// The account a connection is authenticated as.
fn account_of(c: &mut RespConn) -> String {
    balance(c)["account"].clone()
}

/// Connects every pooled upstream connection of `pkv` (they connect on first use, and a
/// connect to a frozen upstream never sends anything), using an account of its own.
fn warm_up(pkv: &Server, issuer: &Issuer) {
    let mut c = pkv.resp_authed(&issuer.token(1));
    for _ in 0..16 {
        let reply = c.call(&[b"GET", b"warm"]);
        assert_eq!(reply, b"$-1\r\n", "{}", text(&reply));
    }
}

/// Nano-units as PKV.BALANCE writes them.
fn format_units(nanos: i64) -> String {
    format!("{}.{:09}", nanos / NANOS, nanos % NANOS)
}

fn is_noquota(reply: &[u8]) -> bool {
    reply.starts_with(b"-NOQUOTA ")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What this test knows the account used: exact, from the bytes on the wire.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Used {
    ops: i64,
    bytes_in: i64,
    bytes_out: i64,
}

/// Prices with whole nano-unit costs and no time or storage component, so that every cost
/// is known exactly from the bytes alone.
const OP: i64 = 1_000_000; // 0.001
const BYTE: i64 = 1_000; // 0.000001 in and out

fn exact_prices(config: PkvConfig) -> PkvConfig {
    config
        .set("PKV_PRICE_OP", "0.001")
        .set("PKV_PRICE_BYTE_IN", "0.000001")
        .set("PKV_PRICE_BYTE_OUT", "0.000001")
        .set("PKV_PRICE_BYTE_SECOND", "0")
        .set("PKV_PRICE_TIME_MS", "0")
}

impl Used {
    fn cost(&self) -> i64 {
        self.ops * OP + (self.bytes_in + self.bytes_out) * BYTE
    }

    /// Runs `INCR key` `n` times on `c`, one at a time, recording what each used.
    fn incr(&mut self, c: &mut RespConn, key: &str, n: usize) {
        for _ in 0..n {
            let request = encode(&[b"INCR", key.as_bytes()]);
            c.send(&request);
            let reply = c.reply();
            assert!(reply.starts_with(b":"), "INCR answered {:?}", text(&reply));
            self.ops += 1;
            self.bytes_in += request.len() as i64;
            self.bytes_out += reply.len() as i64;
        }
    }
}

// === 1. ledger updates applied exactly once (item 3) ===

/// A lease given back and spending settled while the upstream is frozen past
/// `PKV_UPSTREAM_TIMEOUT_MS`: Redis applies the updates when it resumes, after pkv gave up
/// on them. pkv's retries must not apply them a second time.
#[test]
fn a_stalled_settlement_is_applied_exactly_once() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = exact_prices(PkvConfig::new(&redis, &issuer))
        .set("PKV_UPSTREAM_TIMEOUT_MS", "300")
        .set("PKV_LEASE", "1")
        .start();
    // Enough for 1.3 s of INCRs however fast pkv runs them (about 1,000 units' worth).
    let token = issuer.token(1000);
    warm_up(&pkv, &issuer);
    let mut used = Used::default();
    let mut c = pkv.resp_authed(&token);
    // Spend across a periodic settlement, then a little more right before the freeze, so
    // that both settled and unsettled spending exist when the upstream stops.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1300) {
        used.incr(&mut c, "n", 10);
    }
    used.incr(&mut c, "n", 7);
    {
        let _frozen = Frozen::new(&redis);
        // The last connection leaves: its lease goes back, and times out.
        drop(c);
        // Periodic settlements time out too (the freeze lasting is the test).
        std::thread::sleep(Duration::from_millis(2500));
    }
    // Redis resumes and applies what it had queued; pkv retries what it saw fail. A wait
    // of fixed length, not until the ledger matches: a second application would come
    // after the first match.
    std::thread::sleep(Duration::from_millis(2500));
    let mut c = pkv.resp_authed(&token);
    let account = account_of(&mut c);
    let record = ledger_hash(&redis, &account);
    let get = |f: &str| record.get(f).copied().unwrap_or(0);
    let truth = BTreeMap::from([
        ("credited", 1000 * NANOS),
        ("debited", used.cost()),
        ("spent", used.cost()),
        ("ops", used.ops),
        ("bytes_in", used.bytes_in),
        ("bytes_out", used.bytes_out),
    ]);
    let seen: BTreeMap<&str, i64> = truth.keys().map(|f| (*f, get(f))).collect();
    assert_eq!(
        seen, truth,
        "the ledger differs from what was used ({used:?})"
    );
}

/// A lease request that times out may still be applied by Redis later: the account's
/// credit must not be lost to it.
#[test]
fn a_stalled_lease_is_neither_lost_nor_granted_twice() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = exact_prices(PkvConfig::new(&redis, &issuer))
        .set("PKV_UPSTREAM_TIMEOUT_MS", "300")
        .set("PKV_LEASE", "1")
        .start();
    let token = issuer.token(10);
    warm_up(&pkv, &issuer);
    let mut c = pkv.resp_authed(&token);
    let account = account_of(&mut c);
    let mut used = Used::default();
    {
        let _frozen = Frozen::new(&redis);
        // The first command needs a lease; its request times out.
        let reply = c.call(&[b"INCR", b"n"]);
        assert!(reply.starts_with(b"-"), "{}", text(&reply));
        // Frozen past the timeout a while longer (pacing, not a wait for pkv).
        std::thread::sleep(Duration::from_millis(400));
    }
    // Redis resumes and grants the lease nobody waits for any more.
    assert!(
        wait_until(Duration::from_secs(3), || ledger_hash(&redis, &account)
            .get("debited")
            .is_some_and(|d| *d > 0)),
        "the stalled lease was never applied"
    );
    used.incr(&mut c, "n", 25);
    let _ = balance(&mut c);
    drop(c);
    let record = ledger_hash(&redis, &account);
    let get = |f: &str| record.get(f).copied().unwrap_or(0);
    assert_eq!(
        (get("credited"), get("debited"), get("spent"), get("ops")),
        (10 * NANOS, used.cost(), used.cost(), used.ops),
        "credited, debited, spent, ops: the lease was lost or granted twice ({record:?})"
    );
}

/// The lease script compares amounts exactly however large the balance (Lua numbers are
/// doubles, exact only below 2^53 nano-units, about 9 million units).
#[test]
fn a_huge_balance_is_leased_exactly() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = exact_prices(PkvConfig::new(&redis, &issuer)).start();
    let units: i64 = 9_000_000_000;
    let token = issuer.token(units);
    let mut c = pkv.resp_authed(&token);
    let mut used = Used::default();
    used.incr(&mut c, "n", 30);
    let b = balance(&mut c);
    assert_eq!(b["spent"], format_units(used.cost()), "{b:?}");
    assert_eq!(
        b["balance"],
        format_units(units * NANOS - used.cost()),
        "{b:?}"
    );
    let r = ledger_hash(&redis, &b["account"]);
    assert_eq!(
        (r["debited"], r["spent"]),
        (used.cost(), used.cost()),
        "{r:?}"
    );

    // Now only 5000123 nano-units are left (as if spent elsewhere): the next lease must
    // grant exactly that, though 9 * 10^18 - 5000123 is not a double.
    let left: i64 = 5_000_123;
    let key = format!("pkv:ledger:acct:{}", escape_account(&b["account"]));
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("debited")
        .arg(units * NANOS - left)
        .query(&mut redis.direct())
        .unwrap();
    let mut more = Used::default();
    more.incr(&mut c, "n", 1);
    let r = ledger_hash(&redis, &b["account"]);
    assert_eq!(
        r["debited"], r["credited"],
        "the lease granted more or less than the {left} left"
    );
    let b = balance(&mut c);
    assert_eq!(b["balance"], format_units(left - more.cost()), "{b:?}");
}

// === 2. what a crash can lose, and no false NOQUOTA (item 19) ===

/// kill -9 loses the unspent lease the process held: at most `PKV_LEASE` per account. A
/// top-up taken in the background while the lease was still above zero must not raise
/// what the process holds above one lease.
#[test]
fn a_crash_loses_at_most_one_lease() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    // Each INCR costs exactly 0.1 (its op; nothing else is priced); a lease is 1.
    let mut pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_PRICE_OP", "0.1")
        .set("PKV_PRICE_BYTE_IN", "0")
        .set("PKV_PRICE_BYTE_OUT", "0")
        .set("PKV_PRICE_BYTE_SECOND", "0")
        .set("PKV_PRICE_TIME_MS", "0")
        .set("PKV_LEASE", "1")
        .start_process();
    let lease = NANOS;
    let token = issuer.token(10);
    let mut c = pkv.resp_authed(&token);
    let account = account_of(&mut c);
    let mut truth = 10 * NANOS;
    // Six INCRs take the first lease to 0.4, below half a lease: a top-up follows.
    for _ in 0..6 {
        let reply = c.call(&[b"INCR", b"n"]);
        assert!(reply.starts_with(b":"), "{}", text(&reply));
        truth -= NANOS / 10;
    }
    // Until the top-up is in the ledger (more than the first lease debited).
    wait_until(Duration::from_secs(3), || {
        ledger_hash(&redis, &account)
            .get("debited")
            .is_some_and(|d| *d > lease)
    });
    pkv.child.kill().unwrap();
    pkv.child.wait().unwrap();
    let record = ledger_hash(&redis, &account);
    let balance = record["credited"] - record["debited"];
    assert!(
        balance <= truth,
        "balance {balance} above the truth {truth}"
    );
    assert!(
        truth - balance <= lease,
        "the crash lost {} nano-units, more than one lease ({lease}): {record:?}",
        truth - balance
    );
}

/// A command whose reservation alone is larger than a lease (a write reserves its storage
/// for the longest TTL it could buy) gets what it needs, and what is left of it beyond one
/// lease goes back at the next settlement: a crash after that loses at most one lease.
#[test]
fn a_reservation_above_the_lease_is_not_kept() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    // An RPUSH of 1000 bytes reserves 1001 bytes for PKV_MAX_TTL (a year: the key's TTL is
    // not known before it runs) at 10^-12 per byte-second: 0.0316, more than 30 leases of
    // 0.001. It pays for a day.
    let mut pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_PRICE_BYTE_SECOND", "0.000000000001")
        .set("PKV_LEASE", "0.001")
        .start_process();
    let lease = NANOS / 1000;
    let token = issuer.token(10);
    let mut c = pkv.resp_authed(&token);
    let account = account_of(&mut c);
    let value = vec![b'v'; 1000];
    assert_eq!(c.call(&[b"RPUSH", b"l", &value]), b":1\r\n");
    // Settled within a second: the spending, and the lease beyond one lease.
    assert!(
        wait_until(Duration::from_secs(3), || {
            let r = ledger_hash(&redis, &account);
            r.get("spent").is_some_and(|s| *s > 0) && r["debited"] - r["spent"] <= lease
        }),
        "the process still holds more than one lease: {:?}",
        ledger_hash(&redis, &account)
    );
    pkv.child.kill().unwrap();
    pkv.child.wait().unwrap();
    let r = ledger_hash(&redis, &account);
    // Everything the RPUSH cost is settled; what the crash lost is what was debited beyond.
    let lost = r["debited"] - r["spent"];
    assert!(
        (0..=lease).contains(&lost),
        "the crash lost {lost} nano-units, more than one lease ({lease}): {r:?}"
    );
}

/// A funded account whose process lease is small, with many connections racing for it:
/// a command is refused only when the ledger has no credit left, never because other
/// connections used a lease before this one could.
#[test]
fn a_funded_account_is_not_refused_while_leases_race() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    // A lease of 0.00001: about three INCRs at the default prices.
    let pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_LEASE", "0.00001")
        .start();
    let token = issuer.token(100);
    const THREADS: usize = 16;
    const EACH: usize = 150;
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let (barrier, token, port) = (barrier.clone(), token.clone(), pkv.port);
            std::thread::spawn(move || {
                let mut c = RespConn::connect(port);
                assert_eq!(c.call_text(&["AUTH", &token]), "+OK\r\n");
                barrier.wait();
                let key = format!("k{i}");
                let mut refused = Vec::new();
                for _ in 0..EACH {
                    let reply = c.call(&[b"INCR", key.as_bytes()]);
                    if !reply.starts_with(b":") {
                        refused.push(text(&reply));
                    }
                }
                refused
            })
        })
        .collect();
    let refused: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        refused.is_empty(),
        "{} of {} INCRs refused on a funded account, e.g. {:?}",
        refused.len(),
        THREADS * EACH,
        refused.first()
    );
}

// === 3. many replies in flight cannot overdraw an account (item 8) ===

/// Nano-units of a decimal amount of units (`-0.024560000`), as PKV.BALANCE shows it.
fn nanos_of(text: &str) -> i64 {
    let negative = text.starts_with('-');
    let (whole, frac) = text.trim_start_matches('-').split_once('.').unwrap();
    let value =
        whole.parse::<i64>().unwrap() * NANOS + format!("{frac:0<9}").parse::<i64>().unwrap();
    if negative {
        -value
    } else {
        value
    }
}

/// 60 GETs of a 100 KB value pipelined in one write, on a 1-unit account where one such
/// reply costs about a unit: the balance ends at most one reply below zero.
fn pipelined_big_replies(config: PkvConfig, issuer: &Issuer) {
    // 0.00001 per byte out: a 100 KB reply costs 1.024 units.
    let pkv = config
        .set("PKV_PRICE_BYTE_OUT", "0.00001")
        .set("PKV_PRICE_TIME_MS", "0")
        .start();
    let token = issuer.token(1);
    let mut c = pkv.resp_authed(&token);
    let value = vec![b'v'; 100 * 1024];
    assert_eq!(c.call(&[b"SET", b"big", &value]), b"+OK\r\n");
    let mut pipeline = Vec::new();
    for _ in 0..60 {
        pipeline.extend(encode(&[b"GET", b"big"]));
    }
    c.send(&pipeline);
    let mut served = 0;
    let mut reply_len = 0;
    for _ in 0..60 {
        let reply = c.reply();
        if reply.starts_with(b"$") {
            served += 1;
            reply_len = reply.len() as i64;
        } else {
            assert!(is_noquota(&reply), "GET answered {:?}", text(&reply));
        }
    }
    assert!(served >= 1, "no GET was served");
    let one_reply = reply_len * 10_000;
    let b = balance(&mut c);
    let left = nanos_of(&b["balance"]);
    assert!(
        left >= -one_reply,
        "{served} GETs served: balance {} is more than one reply ({one_reply} nano-units) below zero",
        b["balance"]
    );
}

#[test]
fn pipelined_big_replies_overdraw_by_one_reply_at_most() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    pipelined_big_replies(PkvConfig::new(&redis, &issuer), &issuer);
}

#[test]
fn pipelined_big_replies_overdraw_by_one_reply_at_most_on_the_embedded_store() {
    let issuer = Issuer::new();
    pipelined_big_replies(PkvConfig::embedded(&issuer), &issuer);
}

/// 20 connections of one 1-unit account each pipeline 3 GETs of a 100 KB value at once:
/// the balance ends at most one reply below zero, however the connections race.
fn racing_big_replies(config: PkvConfig, issuer: &Issuer) {
    let pkv = config
        .set("PKV_PRICE_BYTE_OUT", "0.00001")
        .set("PKV_PRICE_TIME_MS", "0")
        .start();
    let token = issuer.token(1);
    let mut c = pkv.resp_authed(&token);
    let value = vec![b'v'; 100 * 1024];
    assert_eq!(c.call(&[b"SET", b"big", &value]), b"+OK\r\n");
    const THREADS: usize = 20;
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (barrier, token, port) = (barrier.clone(), token.clone(), pkv.port);
            std::thread::spawn(move || {
                let mut c = RespConn::connect(port);
                assert_eq!(c.call_text(&["AUTH", &token]), "+OK\r\n");
                let mut pipeline = Vec::new();
                for _ in 0..3 {
                    pipeline.extend(encode(&[b"GET", b"big"]));
                }
                barrier.wait();
                c.send(&pipeline);
                let mut longest = 0;
                for _ in 0..3 {
                    let reply = c.reply_within(Duration::from_secs(30));
                    if reply.starts_with(b"$") {
                        longest = reply.len() as i64;
                    } else {
                        assert!(is_noquota(&reply), "GET answered {:?}", text(&reply));
                    }
                }
                longest
            })
        })
        .collect();
    let replies: Vec<i64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let served = replies.iter().filter(|n| **n > 0).count();
    let one_reply = replies.iter().max().copied().unwrap_or(0) * 10_000;
    let b = balance(&mut c);
    let left = nanos_of(&b["balance"]);
    assert!(
        left >= -one_reply,
        "{served} connections got a reply: balance {} is more than one reply ({one_reply} nano-units) below zero",
        b["balance"]
    );
}

#[test]
fn racing_big_replies_overdraw_by_one_reply_at_most() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    racing_big_replies(PkvConfig::new(&redis, &issuer), &issuer);
}

#[test]
fn racing_big_replies_overdraw_by_one_reply_at_most_on_the_embedded_store() {
    let issuer = Issuer::new();
    racing_big_replies(PkvConfig::embedded(&issuer), &issuer);
}

/// 20 connections of one 1-unit account each wait in `BLPOP x 3`, with time priced so that
/// one such wait costs more than the balance: the balance ends at most one wait below
/// zero.
fn concurrent_blocking_waits(config: PkvConfig, issuer: &Issuer) {
    // 0.0004 per ms: a 3 s wait costs 1.2 units.
    let pkv = config.set("PKV_PRICE_TIME_MS", "0.0004").start();
    let token = issuer.token(1);
    const THREADS: usize = 20;
    let barrier = Arc::new(Barrier::new(THREADS));
    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (barrier, token, port) = (barrier.clone(), token.clone(), pkv.port);
            std::thread::spawn(move || {
                let mut c = RespConn::connect(port);
                assert_eq!(c.call_text(&["AUTH", &token]), "+OK\r\n");
                barrier.wait();
                c.send(&encode(&[b"BLPOP", b"x", b"3"]));
                let reply = c.reply_within(Duration::from_secs(60));
                assert!(
                    reply == b"*-1\r\n" || is_noquota(&reply),
                    "BLPOP answered {:?}",
                    text(&reply)
                );
                reply == b"*-1\r\n"
            })
        })
        .collect();
    let waited = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|w| *w)
        .count();
    let elapsed = started.elapsed();
    let mut c = pkv.resp_authed(&token);
    let b = balance(&mut c);
    let left = nanos_of(&b["balance"]);
    // One wait: 3 s and what it took beyond, at 0.0004 per ms, plus its bytes.
    let one_wait: i64 = 3_500 * 400_000;
    assert!(
        left >= -one_wait,
        "{waited} BLPOPs waited ({elapsed:?}): balance {} is more than one wait below zero",
        b["balance"]
    );
}

#[test]
fn concurrent_blocking_waits_overdraw_by_one_wait_at_most() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    concurrent_blocking_waits(PkvConfig::new(&redis, &issuer), &issuer);
}

#[test]
fn concurrent_blocking_waits_overdraw_by_one_wait_at_most_on_the_embedded_store() {
    let issuer = Issuer::new();
    concurrent_blocking_waits(PkvConfig::embedded(&issuer), &issuer);
}

// === 4. commands the upstream refused to run are not charged (item 21) ===

/// While Redis loads its dataset, it answers `-LOADING` and runs nothing: such commands
/// cost nothing.
#[test]
fn commands_refused_while_loading_are_not_charged() {
    let redis = Redis::start_with(&["--enable-debug-command", "yes"]);
    let issuer = Issuer::new();
    let mut config = exact_prices(PkvConfig::embedded(&issuer)).set("PKV_LEASE", "1");
    config.upstream = Some(redis.url());
    let pkv = config.start();
    warm_up(&pkv, &issuer);
    let token = issuer.token(10);
    let mut c = pkv.resp_authed(&token);
    let mut used = Used::default();
    used.incr(&mut c, "n", 3);
    let before = balance(&mut c);
    // A lease in hand, so that the commands below need nothing from the ledger.
    let mut later = Used::default();
    later.incr(&mut c, "n", 1);

    // 1500 keys loaded at 1 ms each, answering clients every KB: 1.5 s of LOADING.
    let mut direct = redis.direct();
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(1500)
        .query(&mut direct)
        .unwrap();
    for (name, value) in [
        ("key-load-delay", "1000"),
        ("loading-process-events-interval-bytes", "1024"),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query(&mut direct)
            .unwrap();
    }
    let reload = std::thread::spawn(move || {
        let _: redis::RedisResult<()> = redis::cmd("DEBUG").arg("RELOAD").query(&mut direct);
    });
    let mut probe = redis.direct();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let info: String = redis::cmd("INFO")
                .arg("persistence")
                .query(&mut probe)
                .unwrap();
            info.contains("loading:1")
        }),
        "Redis never started loading"
    );
    let mut refused = 0;
    for _ in 0..20 {
        let reply = c.call(&[b"INCR", b"n"]);
        if reply.starts_with(b"-LOADING") {
            refused += 1;
        } else {
            panic!("INCR while loading answered {:?}", text(&reply));
        }
    }
    reload.join().unwrap();
    later.incr(&mut c, "m", 2);
    let after = balance(&mut c);
    let spent = nanos_of(&after["spent"]) - nanos_of(&before["spent"]);
    let ops: i64 = after["ops"].parse::<i64>().unwrap() - before["ops"].parse::<i64>().unwrap();
    assert_eq!(refused, 20);
    assert_eq!(
        (spent, ops),
        (later.cost(), later.ops),
        "the {refused} INCRs answered LOADING were charged"
    );
}
