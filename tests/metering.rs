//! Metering end to end, against real redis-server and pkv processes: exact costs from the
//! formula and the bytes on the wire, refused writes that change nothing upstream, racing
//! connections spending one balance, two processes sharing one balance, what a crash can
//! lose, blocking waits paying for their time, metering turned off, and prepaid storage
//! giving every written key a TTL.
//!
//! Costs are computed here independently of pkv: prices are parsed from the same decimal
//! settings into atto-units, each command's cost is rounded up to a whole nano-unit, and the
//! bytes in and out are the exact RESP bytes this test writes and reads on a raw socket.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{encode, Issuer, Monitor, PkvConfig, Redis, RespConn};
use pkv::namespace::{escape_account, Namespace};

const NANOS: i64 = 1_000_000_000;

// === amounts and prices ===

/// A decimal such as `0.000001` or `-1.5` in units of 10^-`digits`.
fn decimal(text: &str, digits: u32) -> i128 {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    assert!(frac.len() <= digits as usize, "too many digits: {text:?}");
    let whole: i128 = whole
        .parse()
        .unwrap_or_else(|_| panic!("not a decimal: {text:?}"));
    let frac_value: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse()
            .unwrap_or_else(|_| panic!("not a decimal: {text:?}"))
    };
    let value = whole * 10i128.pow(digits) + frac_value * 10i128.pow(digits - frac.len() as u32);
    if negative {
        -value
    } else {
        value
    }
}

/// A decimal amount of units in nano-units.
fn nanos(text: &str) -> i64 {
    decimal(text, 9) as i64
}

/// Nano-units as a decimal, for messages.
fn units(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let abs = nanos.unsigned_abs();
    format!("{sign}{}.{:09}", abs / NANOS as u64, abs % NANOS as u64)
}

/// What one command (or several) used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    ops: i64,
    bytes_in: i64,
    bytes_out: i64,
    byte_seconds: i64,
    time_us: i64,
}

impl Usage {
    fn add(&mut self, other: &Usage) {
        self.ops += other.ops;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.byte_seconds += other.byte_seconds;
        self.time_us += other.time_us;
    }
}

/// A price table as the decimal settings pkv is started with.
#[derive(Debug, Clone, Copy)]
struct Prices {
    op: &'static str,
    byte_in: &'static str,
    byte_out: &'static str,
    byte_second: &'static str,
    time_ms: &'static str,
}

impl Prices {
    fn named(&self) -> [(&'static str, &'static str, &'static str); 5] {
        [
            ("op", "PKV_PRICE_OP", self.op),
            ("byte_in", "PKV_PRICE_BYTE_IN", self.byte_in),
            ("byte_out", "PKV_PRICE_BYTE_OUT", self.byte_out),
            ("byte_second", "PKV_PRICE_BYTE_SECOND", self.byte_second),
            ("time_ms", "PKV_PRICE_TIME_MS", self.time_ms),
        ]
    }

    fn apply(&self, mut config: PkvConfig) -> PkvConfig {
        for (_, setting, value) in self.named() {
            config = config.set(setting, value);
        }
        config
    }

    /// One command's cost in nano-units: the exact sum of quantity × price, rounded up
    /// to a whole nano-unit once.
    fn cost(&self, u: &Usage) -> i64 {
        let atto = |p: &str| decimal(p, 18);
        // In thousandths of an atto-unit, so that microseconds of time stay whole.
        let milli_atto = (i128::from(u.ops) * atto(self.op)
            + i128::from(u.bytes_in) * atto(self.byte_in)
            + i128::from(u.bytes_out) * atto(self.byte_out)
            + i128::from(u.byte_seconds) * atto(self.byte_second))
            * 1000
            + i128::from(u.time_us) * atto(self.time_ms);
        let per_nano: i128 = 1_000_000_000 * 1000;
        ((milli_atto + per_nano - 1) / per_nano) as i64
    }
}

/// Whole-nano prices with no time component, so every cost is known from the bytes alone.
const WHOLE_NANO_PRICES: Prices = Prices {
    op: "0.000001",
    byte_in: "0.000000001",
    byte_out: "0.000000002",
    byte_second: "0.000000001",
    time_ms: "0",
};

// === RESP on a raw socket ===

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn resp(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode(&args)
}

/// The elements of a flat RESP2 array of bulk strings, simple strings and integers.
fn flat_items(reply: &[u8]) -> Vec<String> {
    let line = |at: usize| -> (String, usize) {
        let end = reply[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("incomplete reply {:?}", text(reply)))
            + at;
        (text(&reply[at..end]), end + 2)
    };
    let (head, mut at) = line(0);
    let n: usize = head
        .strip_prefix('*')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an array: {:?}", text(reply)));
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let (header, next) = line(at);
        match header.as_bytes().first() {
            Some(b'$') => {
                let len: usize = header[1..].parse().unwrap();
                items.push(text(&reply[next..next + len]));
                at = next + len + 2;
            }
            Some(b':' | b'+') => {
                items.push(header[1..].to_owned());
                at = next;
            }
            _ => panic!("unexpected element {header:?} in {:?}", text(reply)),
        }
    }
    assert_eq!(at, reply.len(), "trailing bytes in {:?}", text(reply));
    items
}

fn pairs(items: Vec<String>) -> BTreeMap<String, String> {
    assert!(items.len().is_multiple_of(2), "{items:?}");
    let mut it = items.into_iter();
    let mut map = BTreeMap::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        map.insert(k, v);
    }
    map
}

// === PKV.BALANCE ===

/// A `PKV.BALANCE` reply, amounts in nano-units and time in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Balance {
    account: String,
    balance: i64,
    spent: i64,
    usage: Usage,
}

impl Balance {
    fn from_fields(fields: &BTreeMap<String, String>) -> Balance {
        let get = |name: &str| -> &str {
            fields
                .get(name)
                .unwrap_or_else(|| panic!("no {name} in {fields:?}"))
        };
        let int = |name: &str| -> i64 {
            get(name)
                .parse()
                .unwrap_or_else(|_| panic!("{name} is not an integer in {fields:?}"))
        };
        Balance {
            account: get("account").to_owned(),
            balance: nanos(get("balance")),
            spent: nanos(get("spent")),
            usage: Usage {
                ops: int("ops"),
                bytes_in: int("bytes_in"),
                bytes_out: int("bytes_out"),
                byte_seconds: int("byte_seconds"),
                time_us: decimal(get("time_ms"), 3) as i64,
            },
        }
    }

    /// The reply's fields again, for [`common::credited`].
    fn fields(&self) -> BTreeMap<String, String> {
        [
            ("balance".to_owned(), units(self.balance)),
            ("spent".to_owned(), units(self.spent)),
        ]
        .into_iter()
        .collect()
    }

    /// Where the account's key `name` lives upstream.
    fn upstream_key(&self, name: &str) -> Vec<u8> {
        Namespace::new(&self.account).wrap(name.as_bytes()).to_vec()
    }
}

fn balance_once(c: &mut RespConn) -> Balance {
    let reply = c.call(&[b"PKV.BALANCE"]);
    Balance::from_fields(&pairs(flat_items(&reply)))
}

/// `PKV.BALANCE` until two readings a moment apart agree, so that a settlement that was
/// on its way to the ledger while the first was taken is included.
fn balance(c: &mut RespConn) -> Balance {
    let mut last = balance_once(c);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(20));
        let now = balance_once(c);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("PKV.BALANCE never settled; last {last:?}");
}

/// [`balance`] on a `redis` crate connection.
fn balance_of(conn: &mut redis::Connection) -> Balance {
    let mut last = Balance::from_fields(&common::pkv_balance(conn));
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(20));
        let now = Balance::from_fields(&common::pkv_balance(conn));
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("PKV.BALANCE never settled; last {last:?}");
}

/// The change in usage between two readings.
fn usage_between(before: &Balance, after: &Balance) -> Usage {
    Usage {
        ops: after.usage.ops - before.usage.ops,
        bytes_in: after.usage.bytes_in - before.usage.bytes_in,
        bytes_out: after.usage.bytes_out - before.usage.bytes_out,
        byte_seconds: after.usage.byte_seconds - before.usage.byte_seconds,
        time_us: after.usage.time_us - before.usage.time_us,
    }
}

/// Asserts that between two readings exactly `cost` was spent and `expected` used (time
/// is not compared).
fn assert_charged(what: &str, before: &Balance, after: &Balance, cost: i64, expected: &Usage) {
    let mut used = usage_between(before, after);
    used.time_us = 0;
    let expected = Usage {
        time_us: 0,
        ..*expected
    };
    assert_eq!(used, expected, "{what}: usage counters");
    assert_eq!(
        after.spent - before.spent,
        cost,
        "{what}: spent went from {} to {}, expected +{}",
        units(before.spent),
        units(after.spent),
        units(cost)
    );
    assert_eq!(
        before.balance - after.balance,
        cost,
        "{what}: balance went from {} to {}, expected -{}",
        units(before.balance),
        units(after.balance),
        units(cost)
    );
}

/// One metered command: the bytes sent, the reply expected, the byte-seconds it buys.
struct Step {
    request: Vec<u8>,
    reply: String,
    byte_seconds: i64,
}

fn step(args: &[&str], reply: &str, byte_seconds: i64) -> Step {
    Step {
        request: resp(args),
        reply: reply.to_owned(),
        byte_seconds,
    }
}

/// Runs `steps`, one at a time or all in one write, checking every reply; returns their
/// usage and their cost (each command rounded on its own).
fn run_steps(c: &mut RespConn, steps: &[Step], pipelined: bool, prices: &Prices) -> (Usage, i64) {
    if pipelined {
        let all: Vec<u8> = steps.iter().flat_map(|s| s.request.clone()).collect();
        c.send(&all);
    }
    let mut usage = Usage::default();
    let mut cost = 0;
    for s in steps {
        if !pipelined {
            c.send(&s.request);
        }
        let reply = c.reply();
        assert_eq!(
            text(&reply),
            s.reply,
            "reply to {:?}",
            text(&s.request).replace("\r\n", " ")
        );
        let one = Usage {
            ops: 1,
            bytes_in: s.request.len() as i64,
            bytes_out: reply.len() as i64,
            byte_seconds: s.byte_seconds,
            time_us: 0,
        };
        cost += prices.cost(&one);
        usage.add(&one);
    }
    (usage, cost)
}

// === upstream ===

fn exists(direct: &mut redis::Connection, key: &[u8]) -> bool {
    redis::cmd("EXISTS").arg(key).query::<i64>(direct).unwrap() == 1
}

fn pttl(direct: &mut redis::Connection, key: &[u8]) -> i64 {
    redis::cmd("PTTL").arg(key).query(direct).unwrap()
}

/// The ledger's record of `account`, straight from the upstream.
fn ledger_record(redis: &Redis, account: &str) -> BTreeMap<String, i64> {
    let key = format!("pkv:ledger:acct:{}", escape_account(account));
    redis::cmd("HGETALL")
        .arg(&key)
        .query(&mut redis.direct())
        .unwrap()
}

/// A second pkv on the same upstream with the same secret seed and settings.
fn same_as(config: &PkvConfig) -> PkvConfig {
    PkvConfig {
        upstream: config.upstream.clone(),
        issuers: config.issuers.clone(),
        secret_seed: config.secret_seed.clone(),
        files: Vec::new(),
        extra: config.extra.clone(),
    }
}

fn is_noquota(reply: &[u8]) -> bool {
    let t = text(reply);
    t.starts_with("-NOQUOTA balance exhausted: ")
        && t.ends_with(" left; top up with PKV.TOPUP <token>\r\n")
}

// === 1. exact costs ===

#[test]
fn exact_costs_match_the_formula() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let config = PkvConfig::new(&redis, &issuer);
    exact_costs(config, &issuer, Some(&redis));
}

/// The same request path meters the same way on the embedded store.
#[test]
fn exact_costs_match_the_formula_on_the_embedded_store() {
    let issuer = Issuer::new();
    exact_costs(PkvConfig::embedded(&issuer), &issuer, None);
}

/// Runs the exact-cost cases on pkv with `config`; with `redis`, also checks the ledger
/// the upstream holds.
fn exact_costs(config: PkvConfig, issuer: &Issuer, redis: Option<&Redis>) {
    let prices = WHOLE_NANO_PRICES;
    let pkv = prices.apply(config).set("PKV_DEFAULT_TTL", "100").start();
    let token = issuer.token(10);
    let mut c = pkv.resp_authed(&token);

    // PKV.PRICES lists the prices in force (and is free).
    let listed = pairs(flat_items(&c.call(&[b"PKV.PRICES"])));
    for (name, _, given) in prices.named() {
        let shown = listed
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {listed:?}"));
        assert_eq!(
            decimal(shown, 18),
            decimal(given, 18),
            "PKV.PRICES {name}: {shown} for {given}"
        );
    }
    assert_eq!(listed.get("metering").map(String::as_str), Some("on"));

    let start = balance(&mut c);
    assert_eq!(start.balance, 10 * NANOS, "{start:?}");
    assert_eq!(
        (start.spent, start.usage),
        (0, Usage::default()),
        "{start:?}"
    );

    // (what, steps, sent in one write): byte-seconds are (key + data) × seconds.
    let cases: Vec<(&str, Vec<Step>, bool)> = vec![
        (
            "SET with EX",
            vec![step(
                &["SET", "k1", "hello", "EX", "50"],
                "+OK\r\n",
                (2 + 5) * 50,
            )],
            false,
        ),
        (
            "GET",
            vec![step(&["GET", "k1"], "$5\r\nhello\r\n", 0)],
            false,
        ),
        (
            "GET sent inline",
            vec![Step {
                request: b"GET k1\r\n".to_vec(),
                reply: "$5\r\nhello\r\n".into(),
                byte_seconds: 0,
            }],
            false,
        ),
        (
            "SET with the default TTL",
            vec![step(&["SET", "k2", "v2"], "+OK\r\n", (2 + 2) * 100)],
            false,
        ),
        (
            "HSET creating the key",
            vec![step(
                &["HSET", "h", "f1", "v1"],
                ":1\r\n",
                (1 + 2 + 2) * 100,
            )],
            false,
        ),
        (
            // Right after: the key has 100 s left, rounded up.
            "HSET into the existing key",
            vec![step(&["HSET", "h", "f2", "v2"], ":1\r\n", (2 + 2) * 100)],
            false,
        ),
        (
            "MULTI block",
            vec![
                step(&["MULTI"], "+OK\r\n", 0),
                step(&["SET", "k3", "x"], "+QUEUED\r\n", (2 + 1) * 100),
                // INCR on a new key stores its name for the default TTL.
                // The key and the number it now holds ("1").
                step(&["INCR", "n"], "+QUEUED\r\n", (1 + 1) * 100),
                step(&["EXEC"], "*2\r\n+OK\r\n:1\r\n", 0),
            ],
            false,
        ),
        (
            "pipeline",
            vec![
                step(&["SET", "p", "abc", "EX", "7"], "+OK\r\n", (1 + 3) * 7),
                step(&["GET", "p"], "$3\r\nabc\r\n", 0),
                step(&["DEL", "p"], ":1\r\n", 0),
                step(&["GET", "p"], "$-1\r\n", 0),
            ],
            true,
        ),
    ];

    let mut total = 0;
    for (what, steps, pipelined) in &cases {
        let before = balance(&mut c);
        let (usage, cost) = run_steps(&mut c, steps, *pipelined, &prices);
        let after = balance(&mut c);
        assert_charged(what, &before, &after, cost, &usage);
        total += cost;
    }

    let end = balance(&mut c);
    assert_eq!(end.spent, total);
    assert_eq!(end.balance, 10 * NANOS - total);
    // The ledger holds the same figures.
    if let Some(redis) = redis {
        let record = ledger_record(redis, &end.account);
        assert_eq!(record.get("spent"), Some(&total), "{record:?}");
        assert_eq!(record.get("credited"), Some(&(10 * NANOS)), "{record:?}");
    }
}

/// `PKV.DEFAULTTTL`: an account's own default TTL, used (and paid) for its writes that give
/// none, on every connection of the account, kept in the ledger for other processes.
#[test]
fn an_accounts_own_default_ttl_applies_to_its_writes() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let config = PkvConfig::new(&redis, &issuer)
        .set("PKV_MAX_TTL", "1000")
        .set("PKV_DEFAULT_TTL", "100");
    let pkv = config.start();
    let mut direct = redis.direct();
    let mut c = pkv.resp_authed(&issuer.mint(100, 3600, Some("alice")));
    let account = balance(&mut c);
    assert_eq!(c.call_text(&["PKV.DEFAULTTTL"]), ":100\r\n");

    // Out of range or malformed: refused, nothing changes.
    for bad in ["1001", "-1", "abc", "1.5", ""] {
        let reply = c.call_text(&["PKV.DEFAULTTTL", bad]);
        assert_eq!(
            reply, "-ERR default TTL must be 1 to 1000 seconds, or 0 for the server's default\r\n",
            "{bad:?}"
        );
    }
    assert!(c
        .call_text(&["PKV.DEFAULTTTL", "1", "2"])
        .starts_with("-ERR syntax error"));
    assert_eq!(c.call_text(&["PKV.DEFAULTTTL"]), ":100\r\n");

    assert_eq!(c.call_text(&["PKV.DEFAULTTTL", "500"]), "+OK\r\n");
    assert_eq!(c.call_text(&["PKV.DEFAULTTTL"]), ":500\r\n");
    // A string write and a write that cannot carry an expiry both get it, and pay for it.
    let before = balance(&mut c);
    assert_eq!(c.call_text(&["SET", "k", "value"]), "+OK\r\n");
    let after = balance(&mut c);
    let ttl = pttl(&mut direct, &account.upstream_key("k"));
    assert!((499_000..=500_000).contains(&ttl), "SET: PTTL {ttl}");
    assert_eq!(
        usage_between(&before, &after).byte_seconds,
        ("k".len() + "value".len()) as i64 * 500
    );
    assert_eq!(c.call_text(&["HSET", "h", "f", "v"]), ":1\r\n");
    let ttl = pttl(&mut direct, &account.upstream_key("h"));
    assert!((499_000..=500_000).contains(&ttl), "HSET: PTTL {ttl}");
    // An expiry given is kept.
    assert_eq!(c.call_text(&["SET", "e", "v", "EX", "7"]), "+OK\r\n");
    assert!(pttl(&mut direct, &account.upstream_key("e")) <= 7000);

    // Another connection of the account uses it; another account does not.
    let mut same = pkv.resp_authed(&issuer.mint(100, 3600, Some("alice")));
    assert_eq!(same.call_text(&["PKV.DEFAULTTTL"]), ":500\r\n");
    let mut other = pkv.resp_authed(&issuer.mint(100, 3600, Some("bob")));
    assert_eq!(other.call_text(&["PKV.DEFAULTTTL"]), ":100\r\n");

    // Kept in the ledger: another process sharing it reads it.
    let second = config.start();
    let mut there = second.resp_authed(&issuer.mint(100, 3600, Some("alice")));
    assert_eq!(there.call_text(&["PKV.DEFAULTTTL"]), ":500\r\n");
    assert_eq!(there.call_text(&["SET", "k2", "v"]), "+OK\r\n");
    let ttl = pttl(&mut direct, &account.upstream_key("k2"));
    assert!(
        (499_000..=500_000).contains(&ttl),
        "second process: PTTL {ttl}"
    );

    // 0 returns to the server's default.
    assert_eq!(c.call_text(&["PKV.DEFAULTTTL", "0"]), "+OK\r\n");
    assert_eq!(c.call_text(&["PKV.DEFAULTTTL"]), ":100\r\n");
    assert_eq!(c.call_text(&["SET", "k3", "v"]), "+OK\r\n");
    assert!(pttl(&mut direct, &account.upstream_key("k3")) <= 100_000);
}

/// The same on the embedded store, whose ledger is its own.
#[test]
fn an_accounts_own_default_ttl_on_the_embedded_store() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer)
        .set("PKV_MAX_TTL", "1000")
        .set("PKV_DEFAULT_TTL", "100")
        .start();
    let mut c = pkv.resp_authed(&issuer.mint(100, 3600, Some("alice")));
    assert_eq!(c.call_text(&["PKV.DEFAULTTTL", "600"]), "+OK\r\n");
    assert_eq!(c.call_text(&["SET", "k", "v"]), "+OK\r\n");
    let ttl: i64 = c
        .call_text(&["TTL", "k"])
        .trim_start_matches(':')
        .trim()
        .parse()
        .unwrap();
    assert!((599..=600).contains(&ttl), "TTL {ttl}");
    drop(c);
    // The account's next first connection reads it back from the store's ledger.
    let mut c = pkv.resp_authed(&issuer.mint(100, 3600, Some("alice")));
    assert_eq!(c.call_text(&["PKV.DEFAULTTTL"]), ":600\r\n");
}

// === 2. refused writes ===

/// PERSIST and GETEX ... PERSIST buy the key's storage up to the maximum TTL from now, paid
/// as an extension (the key's size for the seconds added), and answer as Redis does.
#[test]
fn persist_buys_storage_up_to_the_maximum_ttl() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_MAX_TTL", "1000")
        .set("PKV_DEFAULT_TTL", "100")
        .start();
    let mut direct = redis.direct();
    let mut c = pkv.resp_authed(&issuer.token(100));
    let account = balance(&mut c);
    let size = |direct: &mut redis::Connection, key: &[u8]| -> i64 {
        redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query(direct)
            .unwrap()
    };

    for (key, persist) in [
        ("p", vec!["PERSIST", "p"]),
        ("g", vec!["GETEX", "g", "persist"]),
    ] {
        assert_eq!(c.call_text(&["SET", key, "value", "EX", "10"]), "+OK\r\n");
        let upstream = account.upstream_key(key);
        let before = balance(&mut c);
        let ttl_before = pttl(&mut direct, &upstream);
        let reply = c.call_text(&persist);
        let ttl_after = pttl(&mut direct, &upstream);
        let after = balance(&mut c);
        let expected = if key == "p" {
            ":1\r\n"
        } else {
            "$5\r\nvalue\r\n"
        };
        assert_eq!(reply, expected, "{persist:?}");
        assert!(
            (999_000..=1_000_000).contains(&ttl_after),
            "{persist:?}: PTTL {ttl_after}"
        );
        let ttl: i64 = c
            .call_text(&["TTL", key])
            .trim_start_matches(':')
            .trim()
            .parse()
            .unwrap();
        assert!((999..=1000).contains(&ttl), "{persist:?}: TTL {ttl}");
        // The seconds added (about 990), rounded up, at the key's size.
        let added = (ttl_after - ttl_before + 999) / 1000;
        let paid = usage_between(&before, &after).byte_seconds;
        let size = size(&mut direct, &upstream);
        assert!(
            (added - 1..=added + 1).contains(&(paid / size)) && paid % size == 0,
            "{persist:?}: paid {paid} byte-seconds for {size} bytes and {added} s"
        );
    }
    // A key that does not exist: 0 (and a null for GETEX), nothing written or paid.
    assert_eq!(c.call_text(&["PERSIST", "missing"]), ":0\r\n");
    assert_eq!(c.call_text(&["GETEX", "missing", "PERSIST"]), "$-1\r\n");
    assert!(!exists(&mut direct, &account.upstream_key("missing")));
    // Inside a transaction too.
    assert_eq!(c.call_text(&["SET", "t", "v", "EX", "10"]), "+OK\r\n");
    assert_eq!(c.call_text(&["MULTI"]), "+OK\r\n");
    assert_eq!(c.call_text(&["PERSIST", "t"]), "+QUEUED\r\n");
    assert_eq!(c.call_text(&["EXEC"]), "*1\r\n:1\r\n");
    assert!(pttl(&mut direct, &account.upstream_key("t")) > 999_000);
}

#[test]
fn refused_writes_change_nothing_upstream() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_MAX_TTL", "1000")
        .set("PKV_DEFAULT_TTL", "100")
        .set("PKV_PRICE_OP", "0.1")
        // A request of a megabyte costs a unit: big enough to be refused on its own.
        .set("PKV_PRICE_BYTE_IN", "0.000001")
        .start();
    let mut direct = redis.direct();

    // (a) expiries above the maximum.
    let rich = issuer.token(100);
    let mut c = pkv.resp_authed(&rich);
    let account = balance(&mut c);
    assert_eq!(c.call_text(&["SET", "e", "v", "EX", "500"]), "+OK\r\n");
    let e = account.upstream_key("e");
    let ttl_before = pttl(&mut direct, &e);
    assert!(ttl_before > 0 && ttl_before <= 500_000, "{ttl_before}");
    let later = (common::now() + 2000).to_string();
    let later_ms = ((common::now() + 2000) * 1000).to_string();
    let too_long: Vec<Vec<&str>> = vec![
        vec!["SET", "k", "v", "EX", "1001"],
        vec!["SET", "k", "v", "PX", "1000001"],
        vec!["SET", "k", "v", "EXAT", &later],
        vec!["SET", "k", "v", "PXAT", &later_ms],
        vec!["set", "k", "v", "ex", "1001"],
        vec!["SETEX", "k", "1001", "v"],
        vec!["PSETEX", "k", "1001000", "v"],
        vec!["EXPIRE", "e", "1001"],
        vec!["PEXPIRE", "e", "1000001"],
        vec!["EXPIREAT", "e", &later],
        vec!["PEXPIREAT", "e", &later_ms],
        vec!["GETEX", "e", "EX", "1001"],
        vec!["GETEX", "e", "PX", "1000001"],
        vec!["GETEX", "e", "EXAT", &later],
    ];
    for args in &too_long {
        let reply = c.call_text(args);
        assert!(
            reply.starts_with("-ERR expiry above the maximum TTL"),
            "{args:?} answered {reply:?}"
        );
    }
    assert!(
        !exists(&mut direct, &account.upstream_key("k")),
        "k written"
    );
    let ttl_after = pttl(&mut direct, &e);
    assert!(
        ttl_after > 0 && ttl_after <= ttl_before,
        "e's TTL went from {ttl_before} to {ttl_after} ms"
    );
    // At the maximum itself, writes are served.
    assert_eq!(c.call_text(&["SET", "k", "v", "EX", "1000"]), "+OK\r\n");
    assert_eq!(c.call_text(&["EXPIRE", "e", "1000"]), ":1\r\n");
    assert!(pttl(&mut direct, &e) > 500_000);
    drop(c);

    // (b) a balance that runs out: about nine commands at 0.1 each.
    let poor = issuer.token(1);
    let mut c = pkv.resp_authed(&poor);
    let who = balance(&mut c);
    let mut written = 0;
    let refused_at = loop {
        assert!(written < 20, "never refused");
        let reply = c.call_text(&["SET", &format!("s{written}"), "v"]);
        if reply == "+OK\r\n" {
            written += 1;
            continue;
        }
        assert!(is_noquota(reply.as_bytes()), "SET answered {reply:?}");
        break written;
    };
    assert!((7..=9).contains(&refused_at), "refused after {refused_at}");
    let monitor = Monitor::start(&redis);
    let refused: Vec<Vec<&str>> = vec![
        vec!["SET", "x1", "v"],
        vec!["HSET", "x2", "f", "v"],
        vec!["RPUSH", "x3", "a", "b"],
        vec!["INCR", "x4"],
        vec!["MSET", "x5", "a", "x6", "b"],
        vec!["SADD", "x7", "m"],
    ];
    for args in &refused {
        let reply = c.call(&args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>());
        assert!(is_noquota(&reply), "{args:?} answered {:?}", text(&reply));
    }
    // Pipelined, too.
    let mut pipeline = resp(&["SET", "x8", "v"]);
    pipeline.extend(resp(&["RPUSH", "x9", "v"]));
    c.send(&pipeline);
    assert!(is_noquota(&c.reply()));
    assert!(is_noquota(&c.reply()));
    let after = balance(&mut c);
    assert!(after.balance >= 0, "{after:?}");
    assert!(after.balance < nanos("0.1") + 10_000, "{after:?}");
    // A top-up makes writes possible again; the marker shows MONITOR is caught up.
    let more = issuer.token(1);
    assert_eq!(c.call_text(&["PKV.TOPUP", &more]), ":1\r\n");
    assert_eq!(c.call_text(&["SET", "marker", "v"]), "+OK\r\n");
    let lines = monitor.until("marker");
    for i in 0..written {
        assert!(exists(&mut direct, &who.upstream_key(&format!("s{i}"))));
    }
    for name in std::iter::once(format!("s{refused_at}")).chain((1..=9).map(|i| format!("x{i}"))) {
        let key = who.upstream_key(&name);
        assert!(!exists(&mut direct, &key), "{name} was written");
        let needle = format!("\"{}\"", text(&key));
        assert!(
            !lines.iter().any(|l| l.contains(&needle)),
            "{name} reached the upstream: {lines:?}"
        );
    }
    drop(c);

    // (c1) inside MULTI, a command the balance cannot pay aborts the transaction.
    let third = issuer.token(1);
    let mut c = pkv.resp_authed(&third);
    let who = balance(&mut c);
    assert_eq!(c.call_text(&["MULTI"]), "+OK\r\n");
    assert_eq!(c.call_text(&["SET", "a", "1"]), "+QUEUED\r\n");
    let big = "x".repeat(900_000);
    let reply = c.call_text(&["SET", "big", &big]);
    assert!(is_noquota(reply.as_bytes()), "big SET answered {reply:?}");
    assert_eq!(c.call_text(&["SET", "b", "2"]), "+QUEUED\r\n");
    assert_eq!(
        c.call_text(&["EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    for name in ["a", "big", "b"] {
        assert!(!exists(&mut direct, &who.upstream_key(name)), "{name}");
    }

    // (c2) the balance runs out while queuing: EXEC cannot be paid either, yet the
    // transaction must end with nothing written.
    assert_eq!(c.call_text(&["MULTI"]), "+OK\r\n");
    let mut queued = 0;
    loop {
        assert!(queued < 20, "never refused");
        let reply = c.call_text(&["SET", &format!("q{queued}"), "v"]);
        if reply == "+QUEUED\r\n" {
            queued += 1;
            continue;
        }
        assert!(
            is_noquota(reply.as_bytes()),
            "queued SET answered {reply:?}"
        );
        break;
    }
    let exec = c.call_text(&["EXEC"]);
    for i in 0..=queued {
        let name = format!("q{i}");
        assert!(!exists(&mut direct, &who.upstream_key(&name)), "{name}");
    }
    // EXEC ends the transaction whatever it answers: PKV.BALANCE (free) is served again.
    let after_exec = text(&c.call(&[b"PKV.BALANCE"]));
    assert!(
        exec == "-EXECABORT Transaction discarded because of previous errors.\r\n"
            && after_exec.starts_with('*'),
        "with the balance exhausted while queuing, EXEC answered {exec:?} \
         and PKV.BALANCE after it answered {after_exec:?}"
    );
}

// === 3. racing connections ===

#[test]
fn racing_connections_spend_only_what_was_admitted() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let prices = Prices {
        op: "0.01",
        byte_in: "0.000000001",
        byte_out: "0.000000001",
        byte_second: "0.000000000000001",
        time_ms: "0.000001",
    };
    let max_ttl: i64 = 31_536_000;
    let pkv = prices
        .apply(PkvConfig::new(&redis, &issuer))
        .set("PKV_LEASE", "0.05")
        .start();
    let token = issuer.token(1);

    const THREADS: usize = 16;
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (barrier, token, port) = (barrier.clone(), token.clone(), pkv.port);
            std::thread::spawn(move || {
                let mut c = RespConn::connect(port);
                assert_eq!(c.call_text(&["AUTH", &token]), "+OK\r\n");
                barrier.wait();
                let mut served = 0u32;
                loop {
                    let reply = c.call(&[b"INCR", b"counter"]);
                    if reply.starts_with(b":") {
                        served += 1;
                        assert!(served < 1000);
                    } else if is_noquota(&reply) {
                        return served;
                    } else {
                        panic!("INCR answered {:?}", text(&reply));
                    }
                }
            })
        })
        .collect();
    let served: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();

    let mut c = pkv.resp_authed(&token);
    let deadline = Instant::now() + Duration::from_secs(5);
    let end = loop {
        let b = balance(&mut c);
        if b.usage.ops == i64::from(served) || Instant::now() > deadline {
            break b;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let counter: Option<i64> = redis::cmd("GET")
        .arg(end.upstream_key("counter"))
        .query(&mut redis.direct())
        .unwrap();
    assert_eq!(counter, Some(i64::from(served)), "INCRs answered vs run");
    assert!((90..=100).contains(&served), "{served} INCRs for 1 unit");
    assert_eq!(end.usage.ops, i64::from(served), "{end:?}");
    assert_eq!(end.balance + end.spent, NANOS, "{end:?}");

    let request = resp(&["INCR", "counter"]).len() as i64;
    // What admission reserves for one INCR: its op, request, the most storage it can buy
    // and the reply allowance (256 bytes, 2 ms). Refusal leaves less than that.
    let admission = prices.cost(&Usage {
        ops: 1,
        bytes_in: request,
        bytes_out: 256,
        byte_seconds: ("counter".len() as i64) * max_ttl,
        time_us: 2_000,
    });
    // One INCR reply: its bytes and the time allowance.
    let one_reply = prices.cost(&Usage {
        bytes_out: ":100\r\n".len() as i64,
        time_us: 2_000,
        ..Usage::default()
    });
    assert!(
        end.balance >= -one_reply,
        "balance {} is below -{} (one reply)",
        units(end.balance),
        units(one_reply)
    );
    assert!(
        end.balance <= admission,
        "balance {} left although {} pays for one more INCR",
        units(end.balance),
        units(admission)
    );
}

// === 4. two processes ===

#[test]
fn two_processes_share_one_balance() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let prices = WHOLE_NANO_PRICES;
    let config = prices
        .apply(PkvConfig::new(&redis, &issuer))
        .set("PKV_DEFAULT_TTL", "100");
    let (p1, p2) = (config.start(), same_as(&config).start());
    let token = issuer.token(5);
    let mut c1 = p1.resp_authed(&token);
    let mut c2 = p2.resp_authed(&token);

    let work = |tag: &str| -> Vec<Step> {
        let (k, d, h) = (format!("{tag}k"), format!("{tag}d"), format!("{tag}h"));
        let len = |s: &str| s.len() as i64;
        vec![
            step(
                &["SET", &k, "value", "EX", "30"],
                "+OK\r\n",
                (len(&k) + 5) * 30,
            ),
            step(&["GET", &k], "$5\r\nvalue\r\n", 0),
            step(&["SET", &d, "v"], "+OK\r\n", (len(&d) + 1) * 100),
            step(&["RPUSH", &h, "a", "bb"], ":2\r\n", (len(&h) + 1 + 2) * 100),
            step(&["EXISTS", &k, &h, "nope"], ":2\r\n", 0),
        ]
    };
    let mut spent = [0i64; 2];
    let mut ops = [0i64; 2];
    for round in 0..3 {
        for (i, c) in [&mut c1, &mut c2].into_iter().enumerate() {
            let steps = work(&format!("p{i}r{round}"));
            let (usage, cost) = run_steps(c, &steps, round == 1, &prices);
            spent[i] += cost;
            ops[i] += usage.ops;
        }
    }

    // Each PKV.BALANCE gives its process's lease back; after both have, both agree.
    let _ = balance(&mut c1);
    let b2 = balance(&mut c2);
    let b1 = balance(&mut c1);
    assert_eq!(b1, b2, "the two processes disagree");
    assert_eq!(common::credited(&b1.fields()), "5.000000000", "{b1:?}");
    assert_eq!(b1.spent, spent[0] + spent[1], "{b1:?}");
    assert_eq!(b1.balance, 5 * NANOS - spent[0] - spent[1], "{b1:?}");
    assert_eq!(b1.usage.ops, ops[0] + ops[1], "{b1:?}");
    let record = ledger_record(&redis, &b1.account);
    assert_eq!(
        record.get("spent"),
        Some(&(spent[0] + spent[1])),
        "{record:?}"
    );
    assert_eq!(
        record.get("debited"),
        Some(&(spent[0] + spent[1])),
        "{record:?}"
    );
    assert_eq!(record.get("credited"), Some(&(5 * NANOS)), "{record:?}");
}

// === 5. kill -9 ===

#[test]
fn kill_9_loses_at_most_the_lease() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    // Prices below a nano-unit per byte: each command's cost is rounded up on its own.
    let prices = Prices {
        op: "0.000001",
        byte_in: "0.0000000015",
        byte_out: "0.0000000007",
        byte_second: "0.000000000001",
        time_ms: "0",
    };
    let lease = nanos("0.5");
    let config = prices
        .apply(PkvConfig::new(&redis, &issuer))
        .set("PKV_LEASE", "0.5")
        .set("PKV_DEFAULT_TTL", "1000");
    let mut pkv = config.start_process();
    let token = issuer.token(10);
    let mut c = pkv.resp_authed(&token);

    let work = |tag: &str| -> Vec<Step> {
        (0..10)
            .flat_map(|i| {
                let k = format!("{tag}{i}");
                let value = "v".repeat(i + 1);
                let key_len = k.len() as i64;
                vec![
                    step(
                        &["SET", &k, &value],
                        "+OK\r\n",
                        (key_len + value.len() as i64) * 1000,
                    ),
                    step(&["GET", &k], &format!("${}\r\n{value}\r\n", value.len()), 0),
                ]
            })
            .collect()
    };
    // First half, with the figures checked to the nano-unit.
    let (_, first) = run_steps(&mut c, &work("a"), false, &prices);
    let settled = balance(&mut c);
    assert_eq!(settled.spent, first, "{settled:?}");
    assert_eq!(settled.balance, 10 * NANOS - first, "{settled:?}");
    // Second half, then kill -9 before the next settlement.
    let (_, second) = run_steps(&mut c, &work("b"), true, &prices);
    let last_reply = Instant::now();
    pkv.child.kill().unwrap();
    pkv.child.wait().unwrap();
    assert!(last_reply.elapsed() < Duration::from_secs(1));
    drop(c);

    let again = same_as(&config).start();
    let mut c = again.resp_authed(&token);
    let after = balance(&mut c);
    assert_eq!(after.account, settled.account);
    let truth = 10 * NANOS - first - second;
    assert!(
        after.balance <= truth,
        "balance {} after the crash is above the truth {}",
        units(after.balance),
        units(truth)
    );
    assert!(
        after.balance >= truth - lease,
        "balance {} after the crash lost more than the lease {} (truth {})",
        units(after.balance),
        units(lease),
        units(truth)
    );
    // The counters may miss the last second, never show more than happened.
    assert!(
        after.spent >= first && after.spent <= first + second,
        "{after:?}"
    );
}

// === 6. blocking ===

#[test]
fn a_blocking_wait_pays_for_its_time() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    a_blocking_wait_pays_for_its_time_on(PkvConfig::new(&redis, &issuer), &issuer);
}

#[test]
fn a_blocking_wait_pays_for_its_time_on_the_embedded_store() {
    let issuer = Issuer::new();
    a_blocking_wait_pays_for_its_time_on(PkvConfig::embedded(&issuer), &issuer);
}

fn a_blocking_wait_pays_for_its_time_on(config: PkvConfig, issuer: &Issuer) {
    let pkv = config.start();
    let token = issuer.token(1);
    let mut c = pkv.resp_authed(&token);
    let before = balance(&mut c);
    let reply = c.send_and_reply(&["BLPOP", "nothing", "1"], Duration::from_secs(10));
    assert_eq!(text(&reply), "*-1\r\n");
    let after = balance(&mut c);
    let waited = usage_between(&before, &after).time_us;
    assert!(
        (900_000..=2_000_000).contains(&waited),
        "BLPOP nothing 1 was charged {waited} µs"
    );
    assert!(after.spent > before.spent);
}

// === 7. metering off ===

#[test]
fn metering_off_charges_nothing_and_refuses_nothing() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_METERING", "off")
        .set("PKV_PRICE_OP", "1")
        .start();
    let token = issuer.token(1);
    let mut conn = pkv.client(&token);
    for i in 0..50 {
        let reply: redis::Value = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg("v")
            .query(&mut conn)
            .unwrap();
        assert_eq!(reply, redis::Value::Okay, "SET k{i}");
    }
    let b = balance_of(&mut conn);
    assert_eq!(units(b.balance), "1.000000000", "{b:?}");
    assert_eq!((b.spent, b.usage), (0, Usage::default()), "{b:?}");
    let prices: redis::Value = redis::cmd("PKV.PRICES").query(&mut conn).unwrap();
    assert!(
        format!("{prices:?}").contains("off"),
        "PKV.PRICES does not say metering is off: {prices:?}"
    );

    // No TTL is added when storage is not sold.
    let _: () = redis::cmd("SET")
        .arg("plain")
        .arg("v")
        .query(&mut conn)
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(b.upstream_key("plain"))
        .query(&mut redis.direct())
        .unwrap();
    assert_eq!(ttl, -1);

    // Tokens are still checked.
    let mut raw = pkv.resp();
    for bad in [
        "not-a-token".to_owned(),
        Issuer::new().token(5),
        issuer.mint(5, -7200, None),
    ] {
        let reply = raw.call_text(&["AUTH", &bad]);
        assert!(reply.starts_with("-WRONGPASS "), "{reply:?}");
    }
    assert!(raw.call_text(&["GET", "k1"]).starts_with("-NOAUTH"));
}

// === 8. prepaid storage ===

#[test]
fn storage_is_prepaid_with_every_write_getting_a_ttl() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_DEFAULT_TTL", "3000")
        .start();
    let token = issuer.token(10);
    let mut c = pkv.resp_authed(&token);
    let who = balance(&mut c);
    let writes: &[&[&str]] = &[
        &["SET", "s", "v"],
        &["set", "lower", "v"],
        &["SET", "s", "v2"],
        &["SET", "nx", "v", "NX"],
        &["SET", "kt", "v", "KEEPTTL"],
        &["SET", "sg", "v", "GET"],
        &["SETNX", "snx", "v"],
        &["GETSET", "s", "v3"],
        &["GETSET", "gs", "v"],
        &["APPEND", "ap", "v"],
        &["INCR", "i"],
        &["DECRBY", "d", "3"],
        &["INCRBYFLOAT", "f", "1.5"],
        &["SETRANGE", "sr", "3", "abc"],
        &["SETBIT", "sb", "7", "1"],
        &["BITFIELD", "bf", "SET", "u8", "0", "255"],
        &["BITOP", "OR", "bo", "sb"],
        &["MSET", "m1", "a", "m2", "b", "s", "v4"],
        &["MSETNX", "mn1", "a", "mn2", "b"],
        &["HSET", "h", "f", "v"],
        &["HMSET", "hm", "f", "v"],
        &["HSETNX", "hnx", "f", "v"],
        &["HINCRBY", "hi", "f", "1"],
        &["LPUSH", "lp", "c", "b", "a"],
        &["RPUSH", "rp", "a", "b", "c", "d"],
        &["LINSERT", "lp", "BEFORE", "a", "z"],
        &["LMOVE", "rp", "lm", "LEFT", "RIGHT"],
        &["RPOPLPUSH", "rp", "rl"],
        &["BLMOVE", "rp", "blm", "LEFT", "RIGHT", "1"],
        &["SORT", "lp", "ALPHA", "STORE", "so"],
        &["SADD", "sa", "a", "b", "c"],
        &["SADD", "sb2", "b", "c", "d"],
        &["SMOVE", "sa", "smv", "a"],
        &["SINTERSTORE", "si", "sa", "sb2"],
        &["SUNIONSTORE", "su", "sa", "sb2"],
        &["SDIFFSTORE", "sd", "sb2", "sa"],
        &["ZADD", "z", "1", "a", "2", "b"],
        &["ZINCRBY", "zi", "1", "a"],
        &["ZRANGESTORE", "zr", "z", "0", "-1"],
        &["ZUNIONSTORE", "zu", "1", "z"],
        &["XADD", "x", "*", "f", "v"],
        &["XGROUP", "CREATE", "xg", "g", "$", "MKSTREAM"],
        &["PFADD", "pf", "a", "b"],
        &["PFMERGE", "pm", "pf"],
        &["GEOADD", "g", "13.361389", "38.115556", "Palermo"],
        &[
            "GEOSEARCHSTORE",
            "gss",
            "g",
            "FROMLONLAT",
            "13",
            "38",
            "BYRADIUS",
            "200",
            "km",
        ],
        &["GEORADIUS", "g", "13", "38", "200", "km", "STORE", "gr"],
        &["COPY", "s", "cp"],
        &["RENAME", "kt", "rn"],
    ];
    for args in writes {
        let reply = c.call_text(args);
        assert!(!reply.starts_with('-'), "{args:?} answered {reply:?}");
    }
    // The same inside a transaction.
    assert_eq!(c.call_text(&["MULTI"]), "+OK\r\n");
    for args in [
        &["SET", "ms", "v"][..],
        &["HSET", "mh", "f", "v"],
        &["RPUSH", "ml", "a"],
        &["INCR", "mi"],
    ] {
        assert_eq!(c.call_text(args), "+QUEUED\r\n", "{args:?}");
    }
    let exec = c.call_text(&["EXEC"]);
    assert!(exec.starts_with("*4\r\n"), "{exec:?}");

    let mut direct = redis.direct();
    let prefix = text(&who.upstream_key(""));
    let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut direct)
        .unwrap();
    keys.sort();
    let names: Vec<String> = keys.iter().map(|k| text(&k[prefix.len()..])).collect();
    for expected in [
        "s", "lower", "nx", "sg", "snx", "gs", "ap", "i", "d", "f", "sr", "sb", "bf", "bo", "m1",
        "m2", "mn1", "mn2", "h", "hm", "hnx", "hi", "lp", "lm", "rl", "blm", "so", "sa", "sb2",
        "smv", "si", "su", "sd", "z", "zi", "zr", "zu", "x", "xg", "pf", "pm", "g", "gss", "gr",
        "cp", "rn", "ms", "mh", "ml", "mi",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    let without: Vec<(String, i64)> = keys
        .iter()
        .zip(&names)
        .map(|(k, n)| (n.clone(), pttl(&mut direct, k)))
        .filter(|(_, ttl)| *ttl <= 0)
        .collect();
    assert!(without.is_empty(), "keys without a TTL: {without:?}");
}

// === 9. an abandoned transaction ===

#[test]
fn a_connection_closed_inside_multi_loses_no_quota() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_PRICE_OP", "0.01")
        .start();
    let token = issuer.token(1);
    let mut c = pkv.resp_authed(&token);
    assert_eq!(c.call_text(&["MULTI"]), "+OK\r\n");
    for i in 0..5 {
        assert_eq!(c.call_text(&["SET", &format!("k{i}"), "v"]), "+QUEUED\r\n");
    }
    drop(c);

    // Whatever the queued commands are charged, what is not spent is still the balance:
    // with no other connection holding a lease, balance + spent is everything credited.
    let mut c = pkv.resp_authed(&token);
    let deadline = Instant::now() + Duration::from_secs(3);
    let end = loop {
        let b = balance(&mut c);
        if b.balance + b.spent == NANOS || Instant::now() > deadline {
            break b;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        units(end.balance + end.spent),
        "1.000000000",
        "balance {} + spent {} after a client left inside MULTI",
        units(end.balance),
        units(end.spent)
    );
    let mut direct = redis.direct();
    for i in 0..5 {
        assert!(!exists(&mut direct, &end.upstream_key(&format!("k{i}"))));
    }
}

// === 10. Pub/Sub deliveries ===

#[test]
fn pubsub_deliveries_pay_their_bytes() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    pubsub_deliveries_pay_their_bytes_on(PkvConfig::new(&redis, &issuer), &issuer);
}

#[test]
fn pubsub_deliveries_pay_their_bytes_on_the_embedded_store() {
    let issuer = Issuer::new();
    pubsub_deliveries_pay_their_bytes_on(PkvConfig::embedded(&issuer), &issuer);
}

fn pubsub_deliveries_pay_their_bytes_on(config: PkvConfig, issuer: &Issuer) {
    let pkv = config.start();
    let token = issuer.token(10);
    let mut subscriber = pkv.resp_authed(&token);
    let confirm = subscriber.call(&[b"SUBSCRIBE", b"news"]);
    assert!(
        confirm.starts_with(b"*3\r\n$9\r\nsubscribe\r\n"),
        "{}",
        String::from_utf8_lossy(&confirm)
    );
    let mut publisher = pkv.resp_authed(&token);
    let before = balance(&mut publisher);

    let payload = vec![b'p'; 1000];
    let publish = common::encode(&[b"PUBLISH", b"news", &payload]);
    publisher.send(&publish);
    let receivers = publisher.reply();
    assert_eq!(receivers, b":1\r\n");
    let message = subscriber.reply();
    assert!(
        message.starts_with(b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$1000\r\n"),
        "{}",
        String::from_utf8_lossy(&message)
    );

    // The subscriber's delivery is charged like a reply: bytes_out, no op.
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let b = balance(&mut publisher);
        if b.usage.bytes_out != before.usage.bytes_out || Instant::now() > deadline {
            break b;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        after.usage.ops - before.usage.ops,
        1,
        "only PUBLISH is an op"
    );
    assert_eq!(
        after.usage.bytes_in - before.usage.bytes_in,
        publish.len() as i64
    );
    assert_eq!(
        after.usage.bytes_out - before.usage.bytes_out,
        (receivers.len() + message.len()) as i64,
        "the PUBLISH reply and the delivered message"
    );
    assert!(after.spent > before.spent);
}
