//! The ledger protected from the data it meters, free connection set-up that stays small,
//! and settings an orchestrator injects.
//!
//! An upstream whose `maxmemory-policy` may evict keys without a TTL (`allkeys-*`) would
//! evict balances under memory pressure: pkv refuses it unless the ledger has its own Redis
//! (`PKV_LEDGER_URL`), which must not evict at all. The commands client libraries send on
//! connect are free, and the names they carry are bounded. An unknown `PKV_*` variable in
//! the environment is a warning; in `.env` it still stops start-up. Real redis-server and
//! pkv processes, real signed tokens.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ClosedPort, Issuer, Pkv, PkvConfig, Redis, Resp, RespConn};

/// A redis-server started with extra arguments (an eviction policy, a renamed command),
/// so the setting is in force before anyone can connect.
struct ConfiguredRedis(Redis);

impl ConfiguredRedis {
    fn start(args: &[&str]) -> ConfiguredRedis {
        ConfiguredRedis(Redis::start_with(args))
    }

    /// On `port`, which pkv was already told to reach.
    fn start_on(port: u16, args: &[&str]) -> ConfiguredRedis {
        ConfiguredRedis(Redis::start_with_on(port, args))
    }

    fn url(&self) -> String {
        self.0.url()
    }

    fn keys(&self, pattern: &str) -> Vec<String> {
        let mut conn = redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let mut keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut conn).unwrap();
        keys.sort();
        keys
    }
}

/// pkv settings in front of `upstream` (any redis-server URL), trusting `issuer`.
fn config_for(upstream: &str, issuer: &Issuer) -> PkvConfig {
    let mut config = PkvConfig::embedded(issuer);
    config.upstream = Some(upstream.to_owned());
    config
}

/// Runs pkv with `config` and waits up to `within` for it to exit; returns its exit code
/// and stderr, or `None` (after killing it) if it is still running.
fn run_until_exit(config: &PkvConfig, within: Duration) -> Option<(Option<i32>, String)> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = config
        .command(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
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

/// Asserts pkv with `config` exits non-zero within a few seconds, with a line starting
/// `pkv: {setting}:` that contains every one of `words`.
fn assert_refused(config: &PkvConfig, setting: &str, words: &[&str]) {
    let Some((code, stderr)) = run_until_exit(config, Duration::from_secs(5)) else {
        panic!("pkv started and kept running; expected it to refuse {setting}");
    };
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {stderr}");
    let prefix = format!("pkv: {setting}:");
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in {stderr:?}"));
    for word in words {
        assert!(line.contains(word), "{word:?} not in {line:?}");
    }
}

/// `PKV.BALANCE` on a raw connection, as field → text.
fn balance(conn: &mut RespConn) -> BTreeMap<String, String> {
    let text = |v: &Resp| match v {
        Resp::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        Resp::Int(n) => n.to_string(),
        other => panic!("unexpected {other} in PKV.BALANCE"),
    };
    match conn.value(&[b"PKV.BALANCE"]) {
        Resp::Array(items) => items
            .chunks(2)
            .map(|pair| (text(&pair[0]), text(&pair[1])))
            .collect(),
        Resp::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), text(v))).collect(),
        other => panic!("PKV.BALANCE answered {other}"),
    }
}

// === 1. the ledger and the upstream's eviction policy ===

#[test]
fn an_upstream_that_evicts_keys_without_ttl_stops_start_up() {
    let redis = ConfiguredRedis::start(&["--maxmemory-policy", "allkeys-lru"]);
    let issuer = Issuer::new();
    assert_refused(
        &config_for(&redis.url(), &issuer),
        "PKV_UPSTREAM_URL",
        &["allkeys-lru", "noeviction", "volatile-", "PKV_LEDGER_URL"],
    );
}

#[test]
fn an_upstream_that_evicts_only_keys_with_ttl_is_served() {
    let redis = ConfiguredRedis::start(&["--maxmemory-policy", "volatile-lru"]);
    let issuer = Issuer::new();
    let pkv = config_for(&redis.url(), &issuer).start();
    let mut c = pkv.resp_authed(&issuer.token(5));
    assert_eq!(c.call_text(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(c.call_text(&["GET", "k"]), "$1\r\nv\r\n");
}

/// With its own Redis, the ledger is out of reach of the data's eviction: pkv serves an
/// `allkeys-*` upstream, and every ledger record is in the ledger's Redis, none upstream.
#[test]
fn a_ledger_of_its_own_lets_the_data_upstream_evict() {
    let data = ConfiguredRedis::start(&["--maxmemory-policy", "allkeys-lru"]);
    let ledger = Redis::start();
    let issuer = Issuer::new();
    let pkv = config_for(&data.url(), &issuer)
        .set("PKV_LEDGER_URL", &ledger.url())
        .set("PKV_BALANCE_INTERVAL_MS", "0")
        .start();
    let mut c = pkv.resp_authed(&issuer.token(5));
    for i in 0..3 {
        let key = format!("k{i}");
        assert_eq!(c.call_text(&["SET", &key, "v"]), "+OK\r\n");
    }
    assert_eq!(c.call_text(&["GET", "k0"]), "$1\r\nv\r\n");
    let paid = balance(&mut c);
    assert_eq!(paid.get("ops").map(String::as_str), Some("4"), "{paid:?}");

    let in_ledger = ConfiguredRedis::keys_of(&ledger, "pkv:ledger:*");
    assert!(
        in_ledger.iter().any(|k| k.starts_with("pkv:ledger:acct:"))
            && in_ledger.iter().any(|k| k.starts_with("pkv:ledger:jti:")),
        "ledger Redis holds {in_ledger:?}"
    );
    assert_eq!(data.keys("pkv:ledger:*"), Vec::<String>::new());
    let tenant = data.keys("*");
    assert_eq!(tenant.len(), 3, "data upstream holds {tenant:?}");
    assert!(ConfiguredRedis::keys_of(&ledger, "*")
        .iter()
        .all(|k| k.starts_with("pkv:ledger:")));
}

impl ConfiguredRedis {
    fn keys_of(redis: &Redis, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut redis.direct())
            .unwrap();
        keys.sort();
        keys
    }
}

/// The ledger's own Redis holds nothing but ledger records: any eviction there loses
/// balances (`allkeys-*`) or forgets redeemed tokens, which could then be credited again
/// (`volatile-*`, token records carry a TTL).
#[test]
fn the_ledgers_own_redis_must_not_evict() {
    let data = Redis::start();
    let issuer = Issuer::new();
    for policy in ["volatile-lru", "allkeys-lfu"] {
        let ledger = ConfiguredRedis::start(&["--maxmemory-policy", policy]);
        let config = PkvConfig::new(&data, &issuer).set("PKV_LEDGER_URL", &ledger.url());
        assert_refused(&config, "PKV_LEDGER_URL", &[policy, "noeviction"]);
    }
}

#[test]
fn a_ledger_url_needs_an_upstream() {
    let ledger = Redis::start();
    let issuer = Issuer::new();
    let config = PkvConfig::embedded(&issuer).set("PKV_LEDGER_URL", &ledger.url());
    assert_refused(&config, "PKV_LEDGER_URL", &["embedded", "PKV_UPSTREAM_URL"]);
}

/// pkv starts while its upstream is down; the policy is checked when the upstream first
/// answers, and an evicting one stops pkv with the same line.
#[test]
fn an_upstream_down_at_start_up_is_checked_when_it_comes_up() {
    let down = ClosedPort::new();
    let port = down.port;
    let issuer = Issuer::new();
    let config = config_for(&format!("redis://127.0.0.1:{port}"), &issuer);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = config.command(dir.path());
    cmd.stderr(Stdio::piped());
    let mut pkv = Pkv::spawn(cmd, dir);
    let child = &mut pkv.child;
    drop(down);
    let _redis = ConfiguredRedis::start_on(port, &["--maxmemory-policy", "allkeys-random"]);
    let deadline = Instant::now() + Duration::from_secs(5);
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
    let status =
        status.unwrap_or_else(|| panic!("pkv kept serving an allkeys-random upstream: {stderr}"));
    assert!(!status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("allkeys-random") && stderr.contains("PKV_LEDGER_URL"),
        "{stderr}"
    );
}

/// A managed Redis that renames or denies CONFIG: pkv cannot read the policy, says so, and
/// serves.
#[test]
fn an_upstream_that_hides_its_config_is_a_warning() {
    let redis = ConfiguredRedis::start(&["--rename-command", "CONFIG", ""]);
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = config_for(&redis.url(), &issuer).command(dir.path());
    cmd.stderr(Stdio::piped());
    let mut pkv = Pkv::spawn(cmd, dir);
    let mut c = pkv.resp_authed(&issuer.token(5));
    assert_eq!(c.call_text(&["SET", "k", "v"]), "+OK\r\n");
    let _ = pkv.child.kill();
    let _ = pkv.child.wait();
    let mut stderr = String::new();
    if let Some(mut pipe) = pkv.child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(
        stderr.contains("WARN") && stderr.contains("maxmemory-policy"),
        "{stderr}"
    );
}

// === 2. free connection set-up, bounded ===

/// What client libraries send by themselves on connect costs nothing.
#[test]
fn connection_set_up_is_free() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer)
        .set("PKV_BALANCE_INTERVAL_MS", "0")
        .start();
    let mut c = pkv.resp_authed(&issuer.token(5));
    let before = balance(&mut c);
    let set_up: &[&[&str]] = &[
        &["CLIENT", "SETNAME", "worker-1"],
        &["CLIENT", "SETINFO", "LIB-NAME", "redis-py"],
        &["CLIENT", "SETINFO", "LIB-VER", "5.0.1"],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "ID"],
        &["SELECT", "0"],
        &["READONLY"],
        &["READWRITE"],
        &["HELLO", "2"],
        &["PING"],
    ];
    for command in set_up {
        let reply = c.call_text(command);
        assert!(!reply.starts_with('-'), "{command:?}: {reply}");
        let after = balance(&mut c);
        assert_eq!(after, before, "{command:?} was charged");
    }
}

/// A free command carries no free work: the names a client sets are small.
#[test]
fn client_names_and_library_info_are_bounded() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer).start();
    let mut c = pkv.resp_authed(&issuer.token(5));
    let most = "n".repeat(128);
    let over = "n".repeat(129);
    assert_eq!(c.call_text(&["CLIENT", "SETNAME", &most]), "+OK\r\n");
    let refused = c.call_text(&["CLIENT", "SETNAME", &over]);
    assert!(
        refused.starts_with("-ERR") && refused.contains("128"),
        "{refused}"
    );
    let refused = c.call_text(&["HELLO", "2", "SETNAME", &over]);
    assert!(
        refused.starts_with("-ERR") && refused.contains("128"),
        "{refused}"
    );
    // Refusals left the name as it was.
    assert_eq!(
        c.call_text(&["CLIENT", "GETNAME"]),
        format!("$128\r\n{most}\r\n")
    );
    for attr in ["LIB-NAME", "LIB-VER"] {
        assert_eq!(c.call_text(&["CLIENT", "SETINFO", attr, &most]), "+OK\r\n");
        let refused = c.call_text(&["CLIENT", "SETINFO", attr, &over]);
        assert!(
            refused.starts_with("-ERR") && refused.contains("128"),
            "{attr}: {refused}"
        );
    }
    let refused = c.call_text(&["CLIENT", "SETINFO", "LIB-COLOUR", "red"]);
    assert!(refused.starts_with("-ERR"), "{refused}");
}

// === 3. unknown settings ===

/// Orchestrators inject `PKV_PORT` and friends for a service named pkv: pkv warns and
/// starts. The same name in `.env` is the operator's own typo and stops start-up.
#[test]
fn an_unknown_variable_in_the_environment_is_a_warning_but_not_in_dot_env() {
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = PkvConfig::embedded(&issuer)
        .set("PKV_PORT", "tcp://10.0.0.7:6380")
        .command(dir.path());
    cmd.stderr(Stdio::piped());
    let mut pkv = Pkv::spawn(cmd, dir);
    let child = &mut pkv.child;
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains("PKV_PORT")),
        "{stderr}"
    );

    let config = PkvConfig::embedded(&issuer).file(".env", "PKV_PORT=6380\n");
    assert_refused(&config, "PKV_PORT", &["unknown setting"]);
}
