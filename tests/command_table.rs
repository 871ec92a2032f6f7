//! The command table checked against a real redis-server: arity and flags against
//! `COMMAND INFO`, key positions against `COMMAND GETKEYS`, and the shared example list
//! against Redis itself.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use pkv::commands::{flags, key_args, lookup, table::TABLE, ArgRole, CommandSpec, DENIED};
use redis::aio::MultiplexedConnection;
use redis::Value;

use common::examples::EXAMPLES;

/// Served rows that Redis 7.0 does not have (both arrived in 7.2). pkv answers them itself
/// because client libraries send them on connect.
const NEWER_THAN_REDIS_7_0: &[&str] = &["CLIENT|SETINFO", "CLIENT|NO-TOUCH"];

/// Examples where pkv's keys and `COMMAND GETKEYS` are known to differ, and why. Each entry
/// must still differ: a case that starts to agree fails the test until it is removed here.
const KNOWN_MISMATCHES: &[(&str, &str)] = &[];

// === a redis-server of our own ===

/// A redis-server child (the harness's), killed when dropped.
struct RedisServer {
    /// Kept for its lifetime: the server stops when it drops.
    _redis: common::Redis,
    port: u16,
}

impl RedisServer {
    fn start() -> RedisServer {
        let redis = common::Redis::start();
        RedisServer {
            port: redis.port,
            _redis: redis,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn connect(&self) -> MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis-server")
    }

    /// Sends one command on a fresh connection and returns the first line of the reply, so
    /// that commands which change the connection's mode (SUBSCRIBE) leave nothing behind.
    fn raw(&self, words: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("*{}\r\n", words.len());
        for word in words {
            request.push_str(&format!("${}\r\n{}\r\n", word.len(), word));
        }
        stream.write_all(request.as_bytes())?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    }
}

// === reading replies ===

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

fn items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn args(line: &str) -> Vec<Bytes> {
    words(line)
        .into_iter()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

/// `COMMAND INFO` of a top-level command: `None` when Redis does not know it.
async fn command_info(con: &mut MultiplexedConnection, name: &str) -> Option<Value> {
    let reply: Value = redis::cmd("COMMAND")
        .arg("INFO")
        .arg(name)
        .query_async(con)
        .await
        .expect("COMMAND INFO");
    match items(&reply).first() {
        Some(Value::Nil) | None => None,
        Some(info) => Some(info.clone()),
    }
}

/// The info array of the row's command, looking `A|B` up among `A`'s subcommands
/// (element 9 of the info array in Redis 7).
async fn row_info(con: &mut MultiplexedConnection, spec: &CommandSpec) -> Option<Value> {
    let top = spec.name.split('|').next().unwrap_or(spec.name);
    let info = command_info(con, top).await?;
    if !spec.name.contains('|') {
        return Some(info);
    }
    items(&info).get(9).and_then(|subs| {
        items(subs)
            .iter()
            .find(|sub| {
                items(sub)
                    .first()
                    .and_then(text)
                    .is_some_and(|n| n.eq_ignore_ascii_case(spec.name))
            })
            .cloned()
    })
}

/// The flags pkv states that mirror a Redis flag, as `(pkv has it, redis flag)`.
fn mirrored_flags(spec: &CommandSpec) -> [(bool, &'static str); 4] {
    [
        (spec.has(flags::WRITE), "write"),
        (spec.has(flags::READONLY), "readonly"),
        (
            spec.has(flags::BLOCKING) || spec.has(flags::MAY_BLOCK),
            "blocking",
        ),
        (spec.has(flags::PUBSUB), "pubsub"),
    ]
}

// === the table's own shape ===

#[test]
fn rows_are_unique_not_denied_and_have_containers() {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for spec in TABLE {
        if !seen.insert(spec.name) {
            problems.push(format!("{}: listed twice", spec.name));
        }
        if DENIED.contains(&spec.name) {
            problems.push(format!("{}: served but also denied", spec.name));
        }
        if let Some((container, _)) = spec.name.split_once('|') {
            let parent = TABLE.iter().find(|row| row.name == container);
            if !parent.is_some_and(|row| row.has(flags::CONTAINER)) {
                problems.push(format!("{}: no CONTAINER row `{container}`", spec.name));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// === arity and flags ===

#[tokio::test]
async fn arity_and_flags_match_redis() {
    let server = RedisServer::start();
    let mut con = server.connect().await;
    let mut mismatches = Vec::new();
    for spec in TABLE {
        if spec.name.starts_with("PKV.") {
            continue;
        }
        let newer = NEWER_THAN_REDIS_7_0.contains(&spec.name);
        let Some(info) = row_info(&mut con, spec).await else {
            if !newer {
                mismatches.push(format!("{}: not a Redis command", spec.name));
            }
            continue;
        };
        let info = items(&info);
        let arity = info.get(1).and_then(int);
        if arity != Some(i64::from(spec.arity)) {
            mismatches.push(format!(
                "{}: arity {} in the table, {:?} in Redis",
                spec.name, spec.arity, arity
            ));
        }
        let redis_flags: BTreeSet<String> = info
            .get(2)
            .map(|f| items(f).iter().filter_map(text).collect())
            .unwrap_or_default();
        for (ours, theirs) in mirrored_flags(spec) {
            if ours != redis_flags.contains(theirs) {
                mismatches.push(format!(
                    "{}: Redis flag `{theirs}` is {}, the table says {}",
                    spec.name,
                    redis_flags.contains(theirs),
                    ours
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} disagreement(s) with Redis's COMMAND INFO:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

// === key positions ===

/// The key names pkv locates in an example, sorted; channels, key globs and SORT patterns
/// are left out because Redis does not report them as keys. Rows of Pub/Sub commands name
/// channels only (PUBLISH locates its channel with a plain range, see the table).
fn pkv_keys(line: &str) -> Result<(&'static CommandSpec, Vec<String>), String> {
    let a = args(line);
    let spec = lookup(&a).map_err(|e| format!("lookup failed: {e:?}"))?;
    let located = key_args(spec, &a).map_err(|e| format!("key_args failed: {e}"))?;
    let mut keys: Vec<String> = if spec.has(flags::PUBSUB) {
        Vec::new()
    } else {
        located
            .into_iter()
            .filter(|(_, role)| *role == ArgRole::Key)
            .map(|(i, _)| String::from_utf8_lossy(&a[i]).into_owned())
            .collect()
    };
    keys.sort();
    Ok((spec, keys))
}

/// `COMMAND GETKEYS` for an example, sorted; an error (a command without keys) is empty.
async fn redis_keys(con: &mut MultiplexedConnection, line: &str) -> Vec<String> {
    let mut cmd = redis::cmd("COMMAND");
    cmd.arg("GETKEYS");
    for word in words(line) {
        cmd.arg(word);
    }
    let mut keys: Vec<String> = match cmd.query_async::<Value>(con).await {
        Ok(reply) => items(&reply).iter().filter_map(text).collect(),
        Err(_) => Vec::new(),
    };
    keys.sort();
    keys
}

#[test]
fn every_row_with_keys_has_an_example() {
    let covered: BTreeSet<&str> = EXAMPLES
        .iter()
        .filter_map(|line| lookup(&args(line)).ok())
        .map(|spec| spec.name)
        .collect();
    let missing: Vec<&str> = TABLE
        .iter()
        .filter(|spec| !spec.keys.is_empty() && !covered.contains(spec.name))
        .map(|spec| spec.name)
        .collect();
    assert!(
        missing.is_empty(),
        "rows that name keys or channels but have no entry in tests/common/examples.rs: {}",
        missing.join(", ")
    );
}

#[tokio::test]
async fn keys_match_redis_getkeys() {
    let server = RedisServer::start();
    let mut con = server.connect().await;
    let known: HashMap<&str, &str> = KNOWN_MISMATCHES.iter().copied().collect();
    let mut mismatches = Vec::new();
    for line in EXAMPLES {
        let theirs = redis_keys(&mut con, line).await;
        let ours = match pkv_keys(line) {
            Ok((_, keys)) => keys,
            Err(e) => {
                mismatches.push(format!("{line}: {e}"));
                continue;
            }
        };
        match (ours == theirs, known.contains_key(line)) {
            (true, false) | (false, true) => {}
            (false, false) => {
                mismatches.push(format!("{line}: pkv {ours:?}, Redis {theirs:?}"));
            }
            (true, true) => mismatches.push(format!(
                "{line}: listed in KNOWN_MISMATCHES but now agrees ({ours:?}); remove it"
            )),
        }
    }
    for (line, _) in KNOWN_MISMATCHES {
        if !EXAMPLES.contains(line) {
            mismatches.push(format!("{line}: in KNOWN_MISMATCHES but not an example"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} key disagreement(s) with Redis's COMMAND GETKEYS:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

// === the examples themselves ===

#[test]
fn examples_run_cleanly_on_an_empty_redis() {
    let server = RedisServer::start();
    let mut failures = Vec::new();
    for line in EXAMPLES {
        match server.raw(&words(line)) {
            Ok(reply) if reply.starts_with('-') => failures.push(format!("{line}: {reply}")),
            Ok(_) => {}
            Err(e) => failures.push(format!("{line}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} example(s) refused by Redis when run in order:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
