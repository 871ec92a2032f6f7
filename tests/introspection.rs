//! Tenant-scoped introspection, on both backends: `INFO` sections with the account's own
//! keys, memory and commands (never another tenant's), `CONFIG GET` of a fixed subset, and
//! Redis's tools (`redis-cli --stat`, `redis-benchmark`) reading real figures through pkv.
//! What must match Redis is checked against a real redis-server 7.0.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Issuer, PkvConfig, Redis, Server};

/// pkv in front of a fresh redis-server, and pkv on its embedded store.
fn both_backends() -> Vec<(&'static str, Option<Redis>, Issuer, Server)> {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let upstream = PkvConfig::new(&redis, &issuer).start();
    let issuer2 = Issuer::new();
    let embedded = PkvConfig::embedded(&issuer2).start();
    vec![
        ("upstream", Some(redis), issuer, upstream),
        ("embedded", None, issuer2, embedded),
    ]
}

fn info(conn: &mut redis::Connection, sections: &[&str]) -> String {
    let mut cmd = redis::cmd("INFO");
    for s in sections {
        cmd.arg(*s);
    }
    cmd.query(conn).unwrap()
}

/// The `# Name` headers of an INFO text, in order.
fn headers(info: &str) -> Vec<String> {
    info.lines()
        .filter_map(|l| l.strip_prefix("# "))
        .map(str::to_owned)
        .collect()
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn number(info: &str, name: &str) -> i64 {
    field(info, name)
        .unwrap_or_else(|| panic!("no {name} in {info:?}"))
        .parse()
        .unwrap()
}

/// `keys=N,expires=N,avg_ttl=N` of the `db0` line, or `None` without one.
fn db0(info: &str) -> Option<(i64, i64, i64)> {
    let line = field(info, "db0")?;
    let get = |k: &str| -> i64 {
        line.split(',')
            .find_map(|p| p.strip_prefix(k)?.strip_prefix('='))
            .unwrap()
            .parse()
            .unwrap()
    };
    Some((get("keys"), get("expires"), get("avg_ttl")))
}

/// `calls` of `cmdstat_<name>`, or 0 without the line.
fn calls(info: &str, name: &str) -> i64 {
    field(info, &format!("cmdstat_{name}")).map_or(0, |line| {
        line.split(',')
            .find_map(|p| p.strip_prefix("calls="))
            .unwrap()
            .parse()
            .unwrap()
    })
}

#[test]
fn two_tenants_see_their_own_keys_memory_and_commands() {
    for (name, _redis, issuer, pkv) in both_backends() {
        let mut a = pkv.client(&issuer.token(1000));
        let mut b = pkv.client(&issuer.token(1000));
        let empty = info(&mut a, &["keyspace"]);
        assert_eq!(headers(&empty), ["Keyspace"], "{name}: {empty:?}");
        assert_eq!(
            db0(&empty),
            None,
            "{name}: no db0 line without keys: {empty:?}"
        );

        for i in 0..3 {
            let _: () = redis::cmd("SET")
                .arg(format!("a{i}"))
                .arg("x")
                .query(&mut a)
                .unwrap();
        }
        let big = "y".repeat(10_000);
        for i in 0..5 {
            let _: () = redis::cmd("SET")
                .arg(format!("b{i}"))
                .arg(&big)
                .query(&mut b)
                .unwrap();
        }
        for _ in 0..7 {
            let _: Option<String> = redis::cmd("GET").arg("b0").query(&mut b).unwrap();
        }

        let a_info = info(&mut a, &["keyspace", "memory", "commandstats"]);
        let b_info = info(&mut b, &["keyspace", "memory", "commandstats"]);
        assert_eq!(
            headers(&a_info),
            ["Memory", "Commandstats", "Keyspace"],
            "{name}: {a_info}"
        );
        // Every key written through pkv has a TTL (the default one).
        let (keys, expires, avg_ttl) = db0(&a_info).unwrap();
        assert_eq!((keys, expires), (3, 3), "{name}: {a_info}");
        assert!(avg_ttl > 0, "{name}: {a_info}");
        assert_eq!(
            db0(&b_info).map(|d| (d.0, d.1)),
            Some((5, 5)),
            "{name}: {b_info}"
        );

        let (a_mem, b_mem) = (
            number(&a_info, "used_memory"),
            number(&b_info, "used_memory"),
        );
        assert!(
            a_mem > 0 && a_mem < 3_000,
            "{name}: A holds 3 tiny keys: {a_info}"
        );
        assert!(b_mem >= 50_000, "{name}: B holds 5 x 10 kB: {b_info}");

        assert_eq!(calls(&a_info, "set"), 3, "{name}: {a_info}");
        assert_eq!(
            calls(&a_info, "get"),
            0,
            "{name}: A sees B's GETs: {a_info}"
        );
        assert_eq!(calls(&b_info, "set"), 5, "{name}: {b_info}");
        assert_eq!(calls(&b_info, "get"), 7, "{name}: {b_info}");
        assert!(
            b_info.contains("cmdstat_get:calls=7,usec=")
                && b_info.contains(",rejected_calls=0,failed_calls=0"),
            "{name}: {b_info}"
        );

        // A blocking command's wait is not its running time (as Redis counts it).
        let _: Option<Vec<String>> = redis::cmd("BLPOP")
            .arg("none")
            .arg("0.3")
            .query(&mut a)
            .unwrap();
        let blpop = info(&mut a, &["commandstats"]);
        let usec: i64 = field(&blpop, "cmdstat_blpop")
            .and_then(|l| l.split(',').find_map(|p| p.strip_prefix("usec=")))
            .unwrap_or_else(|| panic!("{name}: {blpop}"))
            .parse()
            .unwrap();
        assert!(usec < 100_000, "{name}: BLPOP counted its wait: {blpop}");

        // A command that fails counts in failed_calls.
        let _ = redis::cmd("INCR")
            .arg("a0")
            .query::<i64>(&mut a)
            .unwrap_err();
        let a_after = info(&mut a, &["commandstats"]);
        assert!(
            a_after.contains("cmdstat_incr:calls=1,") && a_after.contains("failed_calls=1"),
            "{name}: {a_after}"
        );
    }
}

#[test]
fn info_returns_the_sections_asked_for_as_redis() {
    let redis = Redis::start();
    let mut direct = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let default = headers(&info(&mut direct, &[]));
    let all = headers(&info(&mut direct, &["all"]));
    let two = headers(&info(&mut direct, &["keyspace", "CLIENTS"]));
    let version = field(&info(&mut direct, &["server"]), "redis_version")
        .unwrap()
        .to_owned();
    drop(redis);

    for (name, _redis, issuer, pkv) in both_backends() {
        let mut conn = pkv.client(&issuer.token(100));
        assert_eq!(headers(&info(&mut conn, &[])), default, "{name}: INFO");
        assert_eq!(headers(&info(&mut conn, &["default"])), default, "{name}");
        assert_eq!(headers(&info(&mut conn, &["all"])), all, "{name}: INFO all");
        assert_eq!(headers(&info(&mut conn, &["everything"])), all, "{name}");
        assert_eq!(
            headers(&info(&mut conn, &["keyspace", "CLIENTS"])),
            two,
            "{name}"
        );
        let server = info(&mut conn, &["server"]);
        assert_eq!(headers(&server), ["Server"], "{name}: {server}");
        assert_eq!(
            field(&server, "redis_version"),
            Some(version.as_str()),
            "{name}"
        );
        assert_eq!(info(&mut conn, &["nosuchsection"]), "", "{name}");
        // HELLO reports the same version.
        let hello: redis::Value = redis::cmd("HELLO").arg("2").query(&mut conn).unwrap();
        let text = format!("{hello:?}");
        assert!(text.contains(&version), "{name}: {text}");
    }
}

#[test]
fn config_get_answers_a_fixed_subset_as_redis_shapes_it() {
    for (name, _redis, issuer, pkv) in both_backends() {
        let mut conn = pkv.client(&issuer.token(100));
        let pairs: Vec<(String, String)> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("save")
            .arg("appendonly")
            .query(&mut conn)
            .unwrap();
        pairs
            .iter()
            .for_each(|p| assert!(p.0 == "save" || p.0 == "appendonly"));
        assert_eq!(pairs.len(), 2, "{name}: {pairs:?}");
        let everything: Vec<(String, String)> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("*")
            .query(&mut conn)
            .unwrap();
        let names: Vec<&str> = everything.iter().map(|p| p.0.as_str()).collect();
        for want in [
            "maxmemory",
            "maxmemory-policy",
            "databases",
            "notify-keyspace-events",
        ] {
            assert!(names.contains(&want), "{name}: {names:?}");
        }
        let globbed: Vec<(String, String)> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("MAXMEMORY*")
            .query(&mut conn)
            .unwrap();
        let mut got: Vec<&str> = globbed.iter().map(|p| p.0.as_str()).collect();
        got.sort_unstable();
        assert_eq!(got, ["maxmemory", "maxmemory-policy"], "{name}");
        let err = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg("1")
            .query::<()>(&mut conn)
            .unwrap_err();
        assert!(
            err.to_string().contains("not allowed through pkv"),
            "{name}: {err}"
        );

        // RESP3: a map.
        let mut raw = pkv.resp_authed(&issuer.token(100));
        let _ = raw.call(&[b"HELLO", b"3"]);
        let reply = raw.call(&[b"CONFIG", b"GET", b"databases"]);
        assert_eq!(reply, b"%1\r\n$9\r\ndatabases\r\n$1\r\n1\r\n", "{name}");
        // INFO in RESP3 is a verbatim string, as Redis 7.0 sends it.
        let reply = raw.call(&[b"INFO", b"cluster"]);
        assert_eq!(
            String::from_utf8_lossy(&reply),
            "=34\r\ntxt:# Cluster\r\ncluster_enabled:0\r\n\r\n",
            "{name}"
        );
    }
}

/// The embedded store's own settings show as Redis would show its: the memory limit in
/// CONFIG GET and INFO memory, the notification classes, the log's fsync policy.
#[test]
fn config_get_and_info_show_the_embedded_stores_settings() {
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pkv.data");
    let pkv = PkvConfig::embedded(&issuer)
        .set("PKV_MAXMEMORY", "10mb")
        .set("PKV_KEYSPACE_EVENTS", "KEA")
        .set("PKV_DATA_FILE", data.to_str().unwrap())
        .set("PKV_APPENDFSYNC", "always")
        .start();
    let mut conn = pkv.client(&issuer.token(100));
    let pairs: std::collections::BTreeMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .arg("notify-keyspace-events")
        .arg("append*")
        .query(&mut conn)
        .unwrap();
    let want = [
        ("appendfsync", "always"),
        ("appendonly", "yes"),
        ("maxmemory", "10485760"),
        ("notify-keyspace-events", "AKE"),
    ];
    let want: std::collections::BTreeMap<String, String> = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(pairs, want);
    let memory = info(&mut conn, &["memory"]);
    assert_eq!(field(&memory, "maxmemory"), Some("10485760"), "{memory}");
}

/// Runs `program args` for `run_for`, then stops it (it was started here), and returns
/// what it wrote to stdout and stderr.
fn run_briefly(program: &str, args: &[&str], run_for: Duration) -> (String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + run_for;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (out, err)
}

#[test]
fn redis_cli_stat_prints_the_accounts_keys_and_memory() {
    for (name, _redis, issuer, pkv) in both_backends() {
        let token = issuer.token(1000);
        let mut conn = pkv.client(&token);
        for i in 0..42 {
            let _: () = redis::cmd("SET").arg(i).arg("v").query(&mut conn).unwrap();
        }
        let port = pkv.port.to_string();
        // Unbuffered: redis-cli is stopped, not left to flush its output.
        let (out, err) = run_briefly(
            "stdbuf",
            &[
                "-o0",
                "redis-cli",
                "-p",
                &port,
                "-a",
                &token,
                "--no-auth-warning",
                "--stat",
                "-i",
                "0.1",
            ],
            Duration::from_millis(1500),
        );
        // The line after the header: keys, mem, clients, blocked, requests, connections.
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("42 "))
            .unwrap_or_else(|| panic!("{name}: no line with 42 keys in {out:?} {err:?}"));
        println!("{name}: redis-cli --stat: {line}");
        let mem = line.split_whitespace().nth(1).unwrap();
        assert!(
            !mem.starts_with('-') && mem.ends_with(['B', 'K', 'M']),
            "{name}: memory figure {mem:?} in {line:?}"
        );
    }
}

#[test]
fn redis_benchmark_fetches_config_without_warning() {
    for (name, _redis, issuer, pkv) in both_backends() {
        let token = issuer.token(100_000);
        let port = pkv.port.to_string();
        let (out, err) = run_briefly(
            "redis-benchmark",
            &[
                "-p", &port, "-a", &token, "-n", "20", "-c", "1", "-t", "ping", "-q",
            ],
            Duration::from_secs(20),
        );
        assert!(out.contains("PING"), "{name}: {out:?} {err:?}");
        assert!(
            !out.contains("WARNING") && !err.contains("WARNING"),
            "{name}: {out:?} {err:?}"
        );
    }
}

/// Sends `commands` on a fresh authenticated connection to pkv and on one to redis-server
/// directly, and returns both replies, raw.
fn beside_redis(
    redis: &Redis,
    pkv: &Server,
    token: &str,
    commands: &[&[&str]],
) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut mine = pkv.resp_authed(token);
    let mut theirs = common::RespConn::connect(redis.port);
    commands
        .iter()
        .map(|args| {
            let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            (args.join(" "), mine.call(&bytes), theirs.call(&bytes))
        })
        .collect()
}

#[test]
fn help_numpat_and_no_multi_commands_answer_as_redis() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let upstream = PkvConfig::new(&redis, &issuer).start();
    let embedded = PkvConfig::embedded(&issuer).start();
    let commands: &[&[&str]] = &[
        &["OBJECT", "HELP"],
        &["XINFO", "HELP"],
        &["XGROUP", "HELP"],
        &["PUBSUB", "NUMPAT"],
        &["PUBSUB", "NUMPAT", "extra"],
        &["CONFIG", "GET", "save"],
        &["CONFIG", "GET", "appendonly"],
        &["CONFIG", "GET", "maxmemory-policy"],
        &["CONFIG", "GET", "nosuchsetting"],
        &["CONFIG", "GET"],
        &["INFO", "nosuchsection"],
        &["MULTI"],
        &["SET", "k", "v"],
        &["SAVE"],
        &["SHUTDOWN"],
        &["EXEC"],
    ];
    let mut differ = Vec::new();
    for (name, pkv) in [("upstream", &upstream), ("embedded", &embedded)] {
        for (cmd, mine, theirs) in beside_redis(&redis, pkv, &issuer.token(100), commands) {
            if mine != theirs {
                differ.push(format!(
                    "{name} {cmd}:\n  pkv:   {:?}\n  redis: {:?}",
                    String::from_utf8_lossy(&mine),
                    String::from_utf8_lossy(&theirs)
                ));
            }
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

#[test]
fn numpat_counts_the_connections_own_patterns() {
    for (name, _redis, issuer, pkv) in both_backends() {
        let token = issuer.token(100);
        let mut sub = pkv.resp_authed(&token);
        let _ = sub.call(&[b"HELLO", b"3"]);
        let _ = sub.call(&[b"PSUBSCRIBE", b"a*", b"b*"]);
        let _ = sub.reply();
        let reply = sub.call(&[b"PUBSUB", b"NUMPAT"]);
        assert_eq!(
            reply,
            b":2\r\n",
            "{name}: {}",
            String::from_utf8_lossy(&reply)
        );
        // Another tenant's patterns are not counted.
        let mut other = pkv.resp_authed(&issuer.token(100));
        assert_eq!(other.call(&[b"PUBSUB", b"NUMPAT"]), b":0\r\n", "{name}");
    }
}

#[test]
fn flushdb_in_multi_runs_at_exec_as_redis_and_only_in_the_namespace() {
    let direct = Redis::start();
    let sequence: &[&[&str]] = &[
        &["SET", "a", "1"],
        &["SET", "b", "2"],
        &["MULTI"],
        &["SET", "c", "3"],
        &["FLUSHDB"],
        &["SET", "d", "4"],
        &["GET", "a"],
        &["EXEC"],
        &["EXISTS", "a", "b", "c"],
        &["GET", "d"],
        &["DBSIZE"],
        &["MULTI"],
        &["FLUSHALL"],
        &["EXEC"],
        &["DBSIZE"],
    ];
    for (name, _redis, issuer, pkv) in both_backends() {
        // Another tenant's keys, which neither flush may touch.
        let mut other = pkv.client(&issuer.token(100));
        for i in 0..20 {
            let _: () = redis::cmd("SET").arg(i).arg(i).query(&mut other).unwrap();
        }
        let _: () = redis::cmd("FLUSHALL").query(&mut direct.direct()).unwrap();
        let mut differ = Vec::new();
        for (cmd, mine, theirs) in beside_redis(&direct, &pkv, &issuer.token(100), sequence) {
            if mine != theirs {
                differ.push(format!(
                    "{name} {cmd}:\n  pkv:   {:?}\n  redis: {:?}",
                    String::from_utf8_lossy(&mine),
                    String::from_utf8_lossy(&theirs)
                ));
            }
        }
        assert!(differ.is_empty(), "{}", differ.join("\n"));
        let left: i64 = redis::cmd("DBSIZE").query(&mut other).unwrap();
        assert_eq!(left, 20, "{name}: another tenant's keys were flushed");
    }
}

/// Measures what INFO's keyspace and memory sections cost on an account with 100k keys
/// (`cargo nextest run --test introspection --run-ignored only info_cost -- --nocapture`).
#[test]
#[ignore = "a measurement: run by hand"]
fn info_cost_with_100k_keys() {
    const KEYS: usize = 100_000;
    for (name, _redis, issuer, pkv) in both_backends() {
        let mut conn = pkv.client(&issuer.token(100_000_000));
        for chunk in 0..KEYS / 1000 {
            let mut pipe = redis::pipe();
            for i in 0..1000 {
                pipe.cmd("SET").arg(chunk * 1000 + i).arg("value").ignore();
            }
            let _: () = pipe.query(&mut conn).unwrap();
        }
        let time = |conn: &mut redis::Connection, args: &[&str]| -> (Duration, String) {
            let mut runs: Vec<(Duration, String)> = (0..5)
                .map(|_| {
                    let mut cmd = redis::cmd(args[0]);
                    for a in &args[1..] {
                        cmd.arg(*a);
                    }
                    let started = Instant::now();
                    let v: redis::Value = cmd.query(conn).unwrap();
                    (started.elapsed(), common::value_text(&v))
                })
                .collect();
            runs.sort_by_key(|r| r.0);
            runs.swap_remove(2)
        };
        for args in [
            &["INFO", "server"][..],
            &["DBSIZE"],
            &["INFO", "keyspace"],
            &["INFO", "memory"],
            &["INFO"],
        ] {
            let (took, text) = time(&mut conn, args);
            let shown: String = text
                .lines()
                .filter(|l| {
                    l.starts_with("db0") || l.starts_with("used_memory:") || !l.contains(':')
                })
                .collect::<Vec<_>>()
                .join(" ");
            println!(
                "{name}: {:<14} median of 5: {took:?}  {shown}",
                args.join(" ")
            );
        }
        let info = info(&mut conn, &["keyspace"]);
        assert_eq!(db0(&info).map(|d| d.0), Some(KEYS as i64), "{name}: {info}");
    }
}

#[test]
fn flushdb_in_multi_is_bounded_and_refused_past_the_bound() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer).start();
    let mut conn = pkv.client(&issuer.token(100_000_000));
    // One key more than a transaction's FLUSHDB removes.
    for chunk in 0..=100 {
        let mut mset = redis::cmd("MSET");
        for i in 0..1000 {
            mset.arg(chunk * 1000 + i).arg("v");
        }
        let _: () = mset.query(&mut conn).unwrap();
    }
    let _: () = redis::cmd("MULTI").query(&mut conn).unwrap();
    let refused = redis::cmd("FLUSHDB").query::<()>(&mut conn).unwrap_err();
    assert!(
        refused.to_string().contains("at most 100000 keys"),
        "{refused}"
    );
    let exec = redis::cmd("EXEC")
        .query::<redis::Value>(&mut conn)
        .unwrap_err();
    assert_eq!(exec.code(), Some("EXECABORT"), "{exec}");
    // Outside a transaction it flushes.
    let _: () = redis::cmd("FLUSHDB").query(&mut conn).unwrap();
    let left: i64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    assert_eq!(left, 0);
}

/// `CLIENT LIST` answers the caller's own connection, as `CLIENT INFO` does, and never
/// another tenant's: RQ's worker names its connection with `CLIENT SETNAME` and then
/// finds its address in `CLIENT LIST` (and exits when that is refused).
#[test]
fn client_list_shows_only_the_callers_own_connection() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let upstream = PkvConfig::new(&redis, &issuer).start();
    let embedded = PkvConfig::embedded(&issuer).start();
    for (name, pkv) in [("upstream", &upstream), ("embedded", &embedded)] {
        let mut mine = pkv.resp_authed(&issuer.token(100));
        let mut other = pkv.resp_authed(&issuer.token(100));
        assert_eq!(
            mine.call_text(&["CLIENT", "SETNAME", "rq:worker:1"]),
            "+OK\r\n"
        );
        assert_eq!(
            other.call_text(&["CLIENT", "SETNAME", "other-tenant"]),
            "+OK\r\n"
        );
        let id = mine.call_text(&["CLIENT", "ID"]);
        let id = id.trim().trim_start_matches(':');
        let info = mine.call_text(&["CLIENT", "INFO"]);
        let list = mine.call_text(&["CLIENT", "LIST"]);
        assert_eq!(list, info, "{name}");
        assert!(list.contains(&format!("id={id} ")), "{name}: {list:?}");
        assert!(list.contains(" name=rq:worker:1 "), "{name}: {list:?}");
        assert!(!list.contains("other-tenant"), "{name}: {list:?}");
        assert_eq!(
            mine.call_text(&["CLIENT", "LIST", "TYPE", "normal"]),
            info,
            "{name}"
        );
        assert_eq!(
            mine.call_text(&["CLIENT", "LIST", "type", "PUBSUB"]),
            "$0\r\n\r\n",
            "{name}"
        );
        assert_eq!(
            mine.call_text(&["CLIENT", "LIST", "ID", "999999", id]),
            info,
            "{name}"
        );
        assert_eq!(
            mine.call_text(&["CLIENT", "LIST", "ID", "999999"]),
            "$0\r\n\r\n",
            "{name}"
        );
    }
    // Malformed ones are refused as Redis refuses them.
    let commands: &[&[&str]] = &[
        &["CLIENT", "LIST", "TYPE", "nosuchtype"],
        &["CLIENT", "LIST", "ID", "x"],
        &["CLIENT", "LIST", "ID"],
        &["CLIENT", "LIST", "TYPE"],
        &["CLIENT", "LIST", "extra"],
        &["CLIENT", "LIST", "TYPE", "normal", "extra"],
    ];
    let mut differ = Vec::new();
    for (name, pkv) in [("upstream", &upstream), ("embedded", &embedded)] {
        for (cmd, mine, theirs) in beside_redis(&redis, pkv, &issuer.token(100), commands) {
            if mine != theirs {
                differ.push(format!(
                    "{name} {cmd}:\n  pkv:   {:?}\n  redis: {:?}",
                    String::from_utf8_lossy(&mine),
                    String::from_utf8_lossy(&theirs)
                ));
            }
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
