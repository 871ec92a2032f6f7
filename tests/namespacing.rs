//! Namespacing (SPEC section 5), end to end: every key and channel a tenant names reaches the
//! upstream under the tenant's own prefix, nothing of another tenant (or of pkv's ledger) can
//! be read, listed, watched, popped or heard, and replies name keys the way the client does.
//!
//! Each test starts its own redis-server and pkv. The upstream is checked directly: with
//! MONITOR for what pkv sent, with `COMMAND GETKEYS` for which arguments Redis treats as keys,
//! and with plain reads for what is stored.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::examples::EXAMPLES;
use common::{monitor_args, Issuer, Monitor, PkvConfig, Redis, Server};
use redis::Value;

// === processes ===

struct Env {
    // Field order is drop order: pkv goes before the redis-server it talks to.
    pkv: Server,
    issuer: Issuer,
    redis: Redis,
}

fn start() -> Env {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer).start();
    Env { pkv, issuer, redis }
}

const UNITS: i64 = 1_000_000_000;

// === commands through the redis crate ===

/// A command from a line of space-separated words.
fn cmd(line: &str) -> redis::Cmd {
    let mut c = redis::Cmd::new();
    for word in line.split(' ').filter(|w| !w.is_empty()) {
        c.arg(word);
    }
    c
}

/// Runs a line; the server's error comes back as `Err(text)`.
fn try_run(conn: &mut redis::Connection, line: &str) -> Result<Value, String> {
    cmd(line)
        .query::<Value>(conn)
        .map_err(|e| format!("{e} [{:?}]", e.detail()))
}

/// Runs a line that must succeed.
fn run(conn: &mut redis::Connection, line: &str) -> Value {
    match try_run(conn, line) {
        Ok(v) => v,
        Err(e) => panic!("{line:?} failed: {e}"),
    }
}

fn int(conn: &mut redis::Connection, line: &str) -> i64 {
    match run(conn, line) {
        Value::Int(n) => n,
        other => panic!("{line:?}: expected an integer, got {other:?}"),
    }
}

/// Every byte string in a reply, depth first (map keys included).
fn strings(value: &Value) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    collect_strings(value, &mut out);
    out
}

fn collect_strings(value: &Value, out: &mut Vec<Vec<u8>>) {
    match value {
        Value::BulkString(b) => out.push(b.clone()),
        Value::SimpleString(s) => out.push(s.clone().into_bytes()),
        Value::VerbatimString { text, .. } => out.push(text.clone().into_bytes()),
        Value::Array(items) | Value::Set(items) => {
            items.iter().for_each(|v| collect_strings(v, out))
        }
        Value::Push { data, .. } => data.iter().for_each(|v| collect_strings(v, out)),
        Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            collect_strings(k, out);
            collect_strings(v, out);
        }),
        Value::Attribute { data, attributes } => {
            collect_strings(data, out);
            attributes.iter().for_each(|(k, v)| {
                collect_strings(k, out);
                collect_strings(v, out);
            });
        }
        Value::ServerError(e) => out.push(format!("{e:?}").into_bytes()),
        _ => {}
    }
}

fn mentions_pkv(value: &Value) -> bool {
    strings(value).iter().any(|s| contains(s, b"pkv:"))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The top-level items of an array or set reply (empty for nil).
fn items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(v) | Value::Set(v) => v,
        Value::Nil => Vec::new(),
        other => panic!("expected an array, got {other:?}"),
    }
}

/// An array of bulk strings.
fn names(value: Value) -> Vec<String> {
    items(value)
        .into_iter()
        .map(|v| match v {
            Value::BulkString(b) => text(&b),
            other => panic!("expected a bulk string, got {other:?}"),
        })
        .collect()
}

/// Every key SCAN returns for `options`, following the cursor to the end.
fn scan_all(conn: &mut redis::Connection, options: &str) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let reply = run(conn, &format!("SCAN {cursor} {options}"));
        let mut parts = items(reply).into_iter();
        cursor = match parts.next() {
            Some(Value::BulkString(c)) => text(&c),
            other => panic!("SCAN cursor: {other:?}"),
        };
        out.extend(names(parts.next().expect("SCAN keys")));
        if cursor == "0" {
            return out;
        }
    }
    panic!("SCAN never finished");
}

// === the tenant's prefix ===

/// The account id, as `PKV.BALANCE` reports it after `account`.
fn account_of(conn: &mut redis::Connection) -> String {
    let reply = run(conn, "PKV.BALANCE");
    let flat: Vec<Value> = match reply {
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        Value::Array(items) => items,
        other => panic!("PKV.BALANCE: {other:?}"),
    };
    let at = flat
        .iter()
        .position(|v| matches!(v, Value::BulkString(b) if b == b"account"))
        .expect("PKV.BALANCE names the account");
    match &flat[at + 1] {
        Value::BulkString(b) => text(b),
        other => panic!("account id: {other:?}"),
    }
}

/// The balance `PKV.BALANCE` reports, as a number.
fn balance_of(conn: &mut redis::Connection) -> f64 {
    let flat = strings(&run(conn, "PKV.BALANCE"));
    let at = flat
        .iter()
        .position(|v| v == b"balance")
        .expect("PKV.BALANCE names the balance");
    text(&flat[at + 1]).parse().expect("a decimal balance")
}

/// SPEC 5: letters, digits, `-`, `_` and `.` stay; other bytes become `%XX`.
fn escape(account: &str) -> String {
    let mut out = String::new();
    for &b in account.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn prefix_for(account: &str) -> String {
    format!("pkv:t:{}:", escape(account))
}

fn prefix_of(conn: &mut redis::Connection) -> String {
    prefix_for(&account_of(conn))
}

// === raw RESP, for Pub/Sub and for looking at reply bytes ===

#[derive(Debug, Clone, PartialEq)]
enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Resp>),
    Map(Vec<(Resp, Resp)>),
    Push(Vec<Resp>),
    Other(String),
}

impl Resp {
    fn bulk(&self) -> &[u8] {
        match self {
            Resp::Bulk(b) => b,
            other => panic!("expected a bulk string, got {other:?}"),
        }
    }

    fn items(&self) -> &[Resp] {
        match self {
            Resp::Array(v) | Resp::Push(v) => v,
            other => panic!("expected an array, got {other:?}"),
        }
    }

    /// For a Pub/Sub frame (RESP2 array or RESP3 push): its words as text.
    fn words(&self) -> Vec<String> {
        self.items()
            .iter()
            .map(|v| match v {
                Resp::Bulk(b) => text(b),
                Resp::Int(n) => n.to_string(),
                Resp::Nil => "(nil)".into(),
                other => format!("{other:?}"),
            })
            .collect()
    }
}

/// Parses one value from the front of `buf`; `None` while it is incomplete.
fn parse(buf: &[u8]) -> Option<(Resp, usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[1..end]).unwrap_or("").to_string();
    let after = end + 2;
    let len = || {
        line.parse::<i64>()
            .unwrap_or_else(|_| panic!("bad length {line:?}"))
    };
    let many = |n: usize, from: usize| -> Option<(Vec<Resp>, usize)> {
        let mut at = from;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (v, used) = parse(&buf[at..])?;
            out.push(v);
            at += used;
        }
        Some((out, at))
    };
    match *buf.first()? {
        b'+' => Some((Resp::Simple(line), after)),
        b'-' => Some((Resp::Error(line), after)),
        b':' => Some((Resp::Int(len()), after)),
        b'_' => Some((Resp::Nil, after)),
        b',' | b'#' | b'(' => Some((Resp::Other(line), after)),
        b'$' | b'=' | b'!' => {
            let n = len();
            if n < 0 {
                return Some((Resp::Nil, after));
            }
            let n = n as usize;
            if buf.len() < after + n + 2 {
                return None;
            }
            let data = buf[after..after + n].to_vec();
            let v = match buf[0] {
                b'!' => Resp::Error(text(&data)),
                _ => Resp::Bulk(data),
            };
            Some((v, after + n + 2))
        }
        b'*' | b'~' | b'>' => {
            let n = len();
            if n < 0 {
                return Some((Resp::Nil, after));
            }
            let (items, used) = many(n as usize, after)?;
            let v = if buf[0] == b'>' {
                Resp::Push(items)
            } else {
                Resp::Array(items)
            };
            Some((v, used))
        }
        b'%' | b'|' => {
            let n = len() as usize;
            let (flat, used) = many(2 * n, after)?;
            let mut it = flat.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            if buf[0] == b'|' {
                // An attribute precedes the value it describes.
                let (value, more) = parse(&buf[used..])?;
                return Some((value, used + more));
            }
            Some((Resp::Map(pairs), used))
        }
        other => panic!("unexpected RESP type byte {:?}", char::from(other)),
    }
}

/// A hand-driven connection to pkv that keeps whatever it has read but not parsed.
struct RespConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RespConn {
    /// Connects and authenticates; `resp3` switches with `HELLO 3 AUTH`.
    fn open(pkv: &Server, token: &str, resp3: bool) -> RespConn {
        let stream = TcpStream::connect(("127.0.0.1", pkv.port)).unwrap();
        let mut conn = RespConn {
            stream,
            buf: Vec::new(),
        };
        let (reply, _) = if resp3 {
            conn.call(&[b"HELLO", b"3", b"AUTH", b"default", token.as_bytes()])
        } else {
            conn.call(&[b"AUTH", token.as_bytes()])
        };
        assert!(
            !matches!(reply, Resp::Error(_)),
            "authentication failed: {reply:?}"
        );
        conn
    }

    fn send(&mut self, args: &[&[u8]]) {
        self.stream.write_all(&common::encode(args)).unwrap();
    }

    fn send_line(&mut self, line: &str) {
        let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        self.send(&words);
    }

    /// The next value and its exact bytes, or `None` if nothing complete arrives in time.
    fn read(&mut self, timeout: Duration) -> Option<(Resp, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((value, used)) = parse(&self.buf) {
                let raw: Vec<u8> = self.buf.drain(..used).collect();
                return Some((value, raw));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("pkv closed the connection; have {:?}", text(&self.buf)),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    fn expect(&mut self, what: &str) -> (Resp, Vec<u8>) {
        self.read(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no reply to {what}"))
    }

    fn call(&mut self, args: &[&[u8]]) -> (Resp, Vec<u8>) {
        self.send(args);
        let what = text(args[0]);
        self.expect(&what)
    }

    fn call_line(&mut self, line: &str) -> (Resp, Vec<u8>) {
        self.send_line(line);
        self.expect(line)
    }
}

// === the upstream ===

/// Waits until the upstream has `n` clients blocked (BLPOP, XREAD BLOCK, ...).
fn wait_blocked(direct: &mut redis::Connection, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO").arg("clients").query(direct).unwrap();
        let blocked = info
            .lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if blocked >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {blocked} of {n} clients blocked upstream"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every upstream key starting with `prefix`, with its DUMP, for before/after comparisons.
fn snapshot(direct: &mut redis::Connection, prefix: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(direct)
        .unwrap();
    keys.into_iter()
        .map(|k| {
            let dump: Vec<u8> = redis::cmd("DUMP").arg(&k).query(direct).unwrap();
            (k, dump)
        })
        .collect()
}

/// Every ledger record upstream: a hash's fields and values, or a string's value.
fn ledger_state(direct: &mut redis::Connection) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("pkv:ledger:*")
        .query(direct)
        .unwrap();
    keys.into_iter()
        .map(|k| {
            let kind: String = redis::cmd("TYPE").arg(&k).query(direct).unwrap();
            let value: Vec<Vec<u8>> = match kind.as_str() {
                "hash" => redis::cmd("HGETALL").arg(&k).query(direct).unwrap(),
                "string" => vec![redis::cmd("GET").arg(&k).query(direct).unwrap()],
                other => vec![other.as_bytes().to_vec()],
            };
            (k, value)
        })
        .collect()
}

/// Runs every example that does not subscribe, as one tenant; all must succeed.
fn write_examples(conn: &mut redis::Connection) {
    for example in EXAMPLES {
        let name = example.split(' ').next().unwrap().to_ascii_uppercase();
        if SUBSCRIBE_FAMILY.contains(&name.as_str()) {
            continue;
        }
        run(conn, example);
    }
    run(conn, "UNWATCH");
}

const SUBSCRIBE_FAMILY: &[&str] = &["SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE"];

/// Keyless commands pkv or its client library may send upstream on its own behalf.
const KEYLESS: &[&str] = &[
    "PING", "HELLO", "CLIENT", "SELECT", "MULTI", "EXEC", "DISCARD", "UNWATCH", "INFO", "COMMAND",
    "ECHO", "READONLY", "QUIT", "RESET", "TIME", "AUTH",
];

/// Error texts that mean pkv, not Redis, mangled an example (they run cleanly on Redis).
const BROKEN: &[&str] = &[
    "syntax error",
    "wrong number of arguments",
    "not allowed through pkv",
    "unknown command",
    "unknown subcommand",
    "numkeys",
    "Unbalanced",
    "not an integer",
    "WRONGTYPE",
    "no such key",
    "NOGROUP",
];

/// What one upstream command names, as far as the namespace is concerned.
struct Named {
    /// Arguments that must carry the tenant's prefix (keys, channels, patterns).
    names: Vec<Vec<u8>>,
    /// A keyless command (nothing to prefix).
    keyless: bool,
}

/// Classifies one upstream command: asks Redis itself which arguments are keys, and knows
/// the channel, pattern and glob arguments GETKEYS cannot report.
fn upstream_names(direct: &mut redis::Connection, args: &[Vec<u8>]) -> Result<Named, String> {
    let upper = |i: usize| {
        args.get(i)
            .map(|a| text(a).to_ascii_uppercase())
            .unwrap_or_default()
    };
    let name = upper(0);
    let rest = |from: usize| args.get(from..).unwrap_or(&[]).to_vec();
    let named = |names: Vec<Vec<u8>>| {
        Ok(Named {
            names,
            keyless: false,
        })
    };
    match name.as_str() {
        "PUBLISH" => return named(vec![args[1].clone()]),
        "SUBSCRIBE" | "PSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE" => return named(rest(1)),
        "PUBSUB" => {
            return match upper(1).as_str() {
                "CHANNELS" if args.len() < 3 => Err(
                    "PUBSUB CHANNELS went upstream without the namespace's pattern: it lists \
                     every tenant's channels (confinement rests on the reply filter alone)"
                        .into(),
                ),
                "CHANNELS" | "NUMSUB" => named(rest(2)),
                other => Err(format!("unexpected PUBSUB {other} upstream")),
            }
        }
        "KEYS" => return named(rest(1)),
        "SCAN" => {
            let at = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"MATCH"))
                .ok_or("SCAN went upstream without MATCH")?;
            return named(vec![args[at + 1].clone()]);
        }
        _ => {}
    }
    let mut getkeys = redis::cmd("COMMAND");
    getkeys.arg("GETKEYS");
    for a in args {
        getkeys.arg(a);
    }
    let mut names = match getkeys.query::<Vec<Vec<u8>>>(direct) {
        Ok(keys) => keys,
        Err(e) => {
            if KEYLESS.contains(&name.as_str()) {
                return Ok(Named {
                    names: Vec::new(),
                    keyless: true,
                });
            }
            return Err(format!(
                "upstream reports no keys ({e}) for a command that should name some"
            ));
        }
    };
    if name == "SORT" || name == "SORT_RO" {
        // BY and GET patterns name keys too, though GETKEYS does not list them.
        for i in 2..args.len().saturating_sub(1) {
            if (args[i].eq_ignore_ascii_case(b"BY") || args[i].eq_ignore_ascii_case(b"GET"))
                && args[i + 1] != b"#"
            {
                names.push(args[i + 1].clone());
            }
        }
    }
    named(names)
}

/// Checks one upstream command against the tenant's prefix: every name prefixed, at least
/// one name unless keyless, and no argument prefixed that is not a name.
fn check_upstream(
    direct: &mut redis::Connection,
    prefix: &str,
    args: &[Vec<u8>],
) -> Result<(), String> {
    let named = upstream_names(direct, args)?;
    if named.keyless {
        return Ok(());
    }
    if named.names.is_empty() {
        return Err("names no key or channel at all".into());
    }
    if named.names.iter().all(|n| n.starts_with(b"pkv:ledger:")) {
        // pkv's own bookkeeping (no example names a ledger key).
        return Ok(());
    }
    for n in &named.names {
        if !n.starts_with(prefix.as_bytes()) {
            return Err(format!("{:?} is outside the tenant's prefix", text(n)));
        }
    }
    let mut prefixed: Vec<&Vec<u8>> = args[1..]
        .iter()
        .filter(|a| a.starts_with(prefix.as_bytes()))
        .collect();
    let mut expected: Vec<&Vec<u8>> = named.names.iter().collect();
    prefixed.sort();
    expected.sort();
    if prefixed != expected {
        return Err(format!(
            "prefixed arguments {:?} are not exactly the names {:?}",
            prefixed.iter().map(|a| text(a)).collect::<Vec<_>>(),
            expected.iter().map(|a| text(a)).collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// A MONITOR line's arguments, or `None` for lines pkv's own scripts produce.
fn upstream_command(line: &str) -> Option<Vec<Vec<u8>>> {
    if line.contains(" lua]") {
        return None;
    }
    let args = monitor_args(line);
    let name = text(args.first()?).to_ascii_uppercase();
    if matches!(name.as_str(), "EVAL" | "EVALSHA" | "SCRIPT") {
        return None;
    }
    Some(args)
}

fn show(args: &[Vec<u8>]) -> String {
    args.iter().map(|a| text(a)).collect::<Vec<_>>().join(" ")
}

// === 1 ===

#[test]
fn every_table_command_touches_only_the_tenants_keys() {
    let env = start();
    let token = env.issuer.token(UNITS);
    let mut a = env.pkv.client(&token);
    let prefix = prefix_of(&mut a);
    assert!(
        prefix.len() == "pkv:t:".len() + 33 + 1 && prefix.starts_with("pkv:t:j"),
        "a token account is j + 32 hex: {prefix}"
    );
    let mut subscriber = RespConn::open(&env.pkv, &token, false);
    let mut direct = env.redis.direct();
    let monitor = Monitor::start(&env.redis);

    let mut problems: Vec<String> = Vec::new();
    let mut errors: Vec<(String, String)> = Vec::new();
    for (n, example) in EXAMPLES.iter().enumerate() {
        let words: Vec<&str> = example.split(' ').collect();
        let name = words[0].to_ascii_uppercase();
        if SUBSCRIBE_FAMILY.contains(&name.as_str()) {
            // These switch a RESP2 connection into subscribed mode: a connection of their own.
            subscriber.send_line(example);
            for _ in 0..(words.len() - 1).max(1) {
                let (reply, raw) = subscriber.expect(example);
                if let Resp::Error(e) = &reply {
                    errors.push((example.to_string(), e.clone()));
                } else if contains(&raw, b"pkv:") {
                    problems.push(format!("{example}: reply names the upstream: {reply:?}"));
                }
            }
        } else {
            match try_run(&mut a, example) {
                Ok(v) if mentions_pkv(&v) => {
                    problems.push(format!("{example}: reply names the upstream: {v:?}"))
                }
                Ok(_) => {}
                Err(e) => errors.push((example.to_string(), e)),
            }
        }
        run(&mut a, &format!("EXISTS marker-{n}"));
    }
    for (example, error) in &errors {
        eprintln!("example error: {example:?} -> {error}");
        if BROKEN.iter().any(|b| error.contains(b)) || error.contains("pkv:") {
            problems.push(format!("{example}: pkv broke it: {error}"));
        }
    }

    // Split the MONITOR output at the markers: segment n is what example n sent upstream.
    let last = format!("marker-{}\"", EXAMPLES.len() - 1);
    let lines = monitor.until(&last);
    let mut segments: Vec<Vec<Vec<Vec<u8>>>> = vec![Vec::new(); EXAMPLES.len()];
    let mut current = 0;
    let mut seen_markers = 0;
    for line in &lines {
        let Some(args) = upstream_command(line) else {
            continue;
        };
        if let Err(e) = check_upstream(&mut direct, &prefix, &args) {
            let during = EXAMPLES.get(current).copied().unwrap_or("(after)");
            problems.push(format!(
                "upstream `{}` (during {during:?}): {e}",
                show(&args)
            ));
        }
        let marker = args.len() == 2
            && args[0].eq_ignore_ascii_case(b"EXISTS")
            && text(&args[1]).starts_with(&format!("{prefix}marker-"));
        if marker {
            let n: usize = text(&args[1])[prefix.len() + "marker-".len()..]
                .parse()
                .unwrap();
            assert_eq!(n, seen_markers, "markers arrive in order");
            seen_markers += 1;
            current = n + 1;
        } else if current < EXAMPLES.len() {
            segments[current].push(args);
        }
    }
    assert_eq!(
        seen_markers,
        EXAMPLES.len(),
        "every marker reached the upstream"
    );

    // Each example reached the upstream as itself, with its names (and only those) prefixed.
    for (example, segment) in EXAMPLES.iter().zip(&segments) {
        let words: Vec<&str> = example.split(' ').collect();
        let name = words[0].to_ascii_uppercase();
        let unprefixed = |args: &Vec<Vec<u8>>| -> Vec<String> {
            args.iter()
                .map(|a| {
                    let t = text(a);
                    t.strip_prefix(&prefix).map(str::to_owned).unwrap_or(t)
                })
                .collect()
        };
        if SUBSCRIBE_FAMILY.contains(&name.as_str()) {
            // pkv subscribes name by name on its Pub/Sub connection; a bare UNSUBSCRIBE
            // with nothing subscribed is answered locally.
            for channel in &words[1..] {
                let found = segment.iter().any(|args| {
                    args[0].eq_ignore_ascii_case(name.as_bytes())
                        && args[1..]
                            .iter()
                            .any(|a| *a == format!("{prefix}{channel}").into_bytes())
                });
                if !found {
                    problems.push(format!(
                        "{example}: no upstream {name} of {prefix}{channel}; saw {:?}",
                        segment.iter().map(|a| show(a)).collect::<Vec<_>>()
                    ));
                }
            }
            continue;
        }
        // `PUBSUB CHANNELS` without a pattern gets the namespace's own `*` added, so
        // Redis lists only the tenant's channels.
        let mut expected: Vec<&str> = words.clone();
        if expected.len() == 2
            && expected[0].eq_ignore_ascii_case("PUBSUB")
            && expected[1].eq_ignore_ascii_case("CHANNELS")
        {
            expected.push("*");
        }
        // A SET without an expiry gets the default TTL (storage is prepaid for a TTL).
        let set_without_ttl = expected[0].eq_ignore_ascii_case("SET")
            && !expected.iter().skip(3).any(|w| {
                ["EX", "PX", "EXAT", "PXAT", "KEEPTTL"]
                    .iter()
                    .any(|o| w.eq_ignore_ascii_case(o))
            });
        if set_without_ttl {
            expected.extend(["EX", "86400"]);
        }
        // PERSIST buys the longest storage: it is sent as that expiry.
        if expected[0].eq_ignore_ascii_case("PERSIST") {
            expected = vec!["PEXPIRE", expected[1], "31536000000"];
        }
        let found = segment.iter().any(|args| {
            let got = unprefixed(args);
            got.len() == expected.len()
                && got[0].eq_ignore_ascii_case(expected[0])
                && got[1..].iter().zip(&expected[1..]).all(|(g, w)| g == w)
        });
        if !found {
            problems.push(format!(
                "{example}: never reached the upstream as itself; saw {:?}",
                segment.iter().map(|a| show(a)).collect::<Vec<_>>()
            ));
        }
    }

    // Nothing outside A's namespace was created upstream.
    let all: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut direct).unwrap();
    for key in all {
        if !key.starts_with(prefix.as_bytes()) && !key.starts_with(b"pkv:ledger:") {
            problems.push(format!(
                "upstream holds {:?}, outside A's namespace",
                text(&key)
            ));
        }
    }

    assert!(
        problems.is_empty(),
        "{} namespacing problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// === 2 ===

#[test]
fn another_tenant_sees_nothing() {
    let env = start();
    let token_a = env.issuer.token(UNITS);
    let token_b = env.issuer.token(UNITS);
    let mut a = env.pkv.client(&token_a);
    let mut b = env.pkv.client(&token_b);
    let prefix_a = prefix_of(&mut a);
    let account_a = account_of(&mut a);
    let account_b = account_of(&mut b);
    assert_ne!(account_a, account_b, "two tokens, two accounts");
    let mut direct = env.redis.direct();

    write_examples(&mut a);
    let a_keys: BTreeSet<String> = names(run(&mut a, "KEYS *")).into_iter().collect();
    // (list1 ends up popped empty by the examples; list6 is the list that remains.)
    for k in [
        "str1", "hash1", "list6", "set1", "zset1", "stream1", "geo1", "hll1", "bits1", "nums1",
    ] {
        assert!(a_keys.contains(k), "A wrote {k}: {a_keys:?}");
    }
    let a_size = int(&mut a, "DBSIZE");
    assert_eq!(a_size as usize, a_keys.len());
    let before = snapshot(&mut direct, &prefix_a);
    assert_eq!(before.len(), a_keys.len(), "A's keys upstream");

    // Listing.
    assert_eq!(names(run(&mut b, "KEYS *")), Vec::<String>::new());
    assert_eq!(names(run(&mut b, "KEYS str*")), Vec::<String>::new());
    for options in [
        "",
        "MATCH *",
        "COUNT 1000",
        "MATCH str* COUNT 7",
        "TYPE string",
        "TYPE hash",
        "MATCH * COUNT 3 TYPE stream",
    ] {
        assert_eq!(
            scan_all(&mut b, options),
            Vec::<String>::new(),
            "SCAN {options}"
        );
    }
    assert_eq!(run(&mut b, "RANDOMKEY"), Value::Nil);
    assert_eq!(int(&mut b, "DBSIZE"), 0);
    let exists = format!(
        "EXISTS {}",
        a_keys.iter().cloned().collect::<Vec<_>>().join(" ")
    );
    assert_eq!(int(&mut b, &exists), 0);

    // Reading A's names finds nothing.
    assert_eq!(run(&mut b, "GET str1"), Value::Nil);
    assert_eq!(
        run(&mut b, "TYPE hash1"),
        Value::SimpleString("none".into())
    );
    assert_eq!(
        run(&mut b, "MGET str1 str5 str6"),
        Value::Array(vec![Value::Nil, Value::Nil, Value::Nil])
    );
    for (line, empty) in [
        ("SUNION set1 set2 set3", true),
        ("SINTER set1 set2", true),
        ("ZUNION 2 zset1 zset2", true),
        ("ZRANGE zset1 0 -1", true),
        ("LRANGE list6 0 -1", true),
        ("HGETALL hash1", true),
        ("XRANGE stream1 - +", true),
        ("SORT list6 BY weight_* GET str_*", true),
        ("SORT nums1 BY w_* GET # GET o_*", true),
        ("SORT_RO nums1", true),
        ("GEOSEARCH geo1 FROMLONLAT 15 37 BYRADIUS 200 km ASC", true),
    ] {
        let v = run(&mut b, line);
        assert_eq!(empty, items(v.clone()).is_empty(), "{line}: {v:?}");
    }
    for (line, zero) in [
        ("SINTERCARD 2 set1 set2", 0),
        ("ZINTERCARD 2 zset1 zset2", 0),
        ("PFCOUNT hll1 hll2", 0),
        ("BITCOUNT bits1", 0),
        ("LLEN list6", 0),
        ("XLEN stream1", 0),
        ("STRLEN str1", 0),
        ("TTL str5", -2),
        ("EXPIRETIME str7", -2),
    ] {
        assert_eq!(int(&mut b, line), zero, "{line}");
    }
    match try_run(&mut b, "OBJECT ENCODING str1") {
        Ok(v) => assert_eq!(v, Value::Nil, "OBJECT ENCODING of A's key"),
        Err(e) => assert!(!e.contains("pkv:"), "{e}"),
    }
    assert_eq!(run(&mut b, "XREAD STREAMS stream1 0"), Value::Nil);
    assert_eq!(
        run(&mut b, "XREAD COUNT 5 STREAMS stream1 stream2 0 0"),
        Value::Nil
    );
    assert_eq!(run(&mut b, "LMPOP 1 list6 LEFT"), Value::Nil);
    assert_eq!(run(&mut b, "ZMPOP 2 zset1 zset2 MIN"), Value::Nil);
    assert_eq!(run(&mut b, "BLPOP list6 list1 0.01"), Value::Nil);
    assert_eq!(run(&mut b, "LMOVE list6 mine LEFT RIGHT"), Value::Nil);
    assert_eq!(run(&mut b, "SPOP set1"), Value::Nil);
    let e = try_run(&mut b, "RENAME str1 x").unwrap_err();
    assert!(e.contains("no such key"), "RENAME of A's key: {e}");
    assert_eq!(int(&mut b, "COPY str1 copied"), 0);
    assert_eq!(int(&mut b, "SMOVE set1 set9 c"), 0);
    assert!(try_run(&mut b, "XINFO STREAM stream1").is_err());
    assert!(try_run(&mut b, "XREADGROUP GROUP g1 c1 STREAMS stream1 >").is_err());

    // SORT BY/GET patterns read B's keys, never A's weights and objects.
    run(&mut b, "RPUSH nums1 1 2 3");
    let sorted = run(&mut b, "SORT nums1 BY w_* GET # GET o_*");
    assert!(
        !strings(&sorted).iter().any(|s| s == b"one" || s == b"two"),
        "B's SORT read A's o_* keys: {sorted:?}"
    );

    // Writes to the same names land in B's own keys.
    run(&mut b, "SET str1 b-value");
    run(&mut b, "ZUNIONSTORE zset4 2 zset1 zset2");
    run(&mut b, "SINTERSTORE set4 set1 set2");
    run(&mut b, "DEL hash1 list6 stream1");
    run(&mut b, "HSET hash1 f b");
    assert_eq!(run(&mut a, "GET str1"), Value::BulkString(b"v1b".to_vec()));

    // B's FLUSHALL and FLUSHDB remove only B's keys.
    assert!(int(&mut b, "DBSIZE") > 0);
    run(&mut b, "FLUSHALL");
    run(&mut b, "FLUSHDB");
    assert_eq!(int(&mut b, "DBSIZE"), 0);
    assert_eq!(int(&mut a, "DBSIZE"), a_size);
    let after = snapshot(&mut direct, &prefix_a);
    assert!(
        before == after,
        "A's keys changed upstream: before {:?}, after {:?}",
        before.keys().map(|k| text(k)).collect::<Vec<_>>(),
        after.keys().map(|k| text(k)).collect::<Vec<_>>()
    );

    // The ledger is out of reach: its names are just B's own (empty) keys.
    let ledger: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("pkv:ledger:*")
        .query(&mut direct)
        .unwrap();
    assert!(!ledger.is_empty(), "the ledger lives upstream");
    let ledger_before: BTreeSet<Vec<u8>> = ledger.iter().cloned().collect();
    let balance_before = balance_of(&mut b);
    let a_record_before = ledger_state(&mut direct)
        .remove(format!("pkv:ledger:acct:{}", escape(&account_a)).as_bytes());
    assert!(a_record_before.is_some(), "A has a ledger record");
    for key in &ledger {
        let key = text(key);
        assert_eq!(int(&mut b, &format!("EXISTS {key}")), 0, "{key}");
        assert_eq!(run(&mut b, &format!("GET {key}")), Value::Nil, "{key}");
        assert_eq!(
            run(&mut b, &format!("TYPE {key}")),
            Value::SimpleString("none".into())
        );
        assert!(items(run(&mut b, &format!("HGETALL {key}"))).is_empty());
    }
    for guess in [
        format!("pkv:ledger:acct:{}", escape(&account_b)),
        format!("pkv:ledger:acct:{}", escape(&account_a)),
        "pkv:ledger:x".to_string(),
    ] {
        assert_eq!(run(&mut b, &format!("GET {guess}")), Value::Nil);
        // Writing there only creates a key in B's namespace.
        run(
            &mut b,
            &format!("HSET {guess} credited 999999999999999 spent 0"),
        );
        run(&mut b, &format!("DEL {guess}"));
    }
    assert_eq!(names(run(&mut b, "KEYS *ledger*")), Vec::<String>::new());
    assert_eq!(names(run(&mut b, "KEYS pkv:*")), Vec::<String>::new());
    run(&mut b, "SET own 1");
    for k in scan_all(&mut b, "MATCH *")
        .into_iter()
        .chain(scan_all(&mut b, ""))
    {
        assert!(!k.starts_with("pkv:"), "SCAN from B returned {k:?}");
    }
    let ledger_after = ledger_state(&mut direct);
    assert_eq!(
        ledger_after.keys().cloned().collect::<BTreeSet<_>>(),
        ledger_before,
        "B's writes to ledger-like names created or removed ledger records"
    );
    for (key, fields) in &ledger_after {
        assert!(
            !fields.iter().any(|f| f == b"999999999999999"),
            "B's HSET reached the ledger record {:?}",
            text(key)
        );
    }
    let a_record = format!("pkv:ledger:acct:{}", escape(&account_a)).into_bytes();
    assert_eq!(
        ledger_after.get(&a_record),
        a_record_before.as_ref(),
        "A's ledger record changed while only B acted"
    );
    let balance_after = balance_of(&mut b);
    assert!(
        balance_after <= balance_before,
        "B's balance grew from {balance_before} to {balance_after}"
    );
}

// === 3 ===

#[test]
fn blocking_pops_and_stream_reads_are_per_tenant() {
    let env = start();
    let token_a = env.issuer.token(UNITS);
    let token_b = env.issuer.token(UNITS);
    let mut a = env.pkv.client(&token_a);
    let mut direct = env.redis.direct();

    // B blocks on four names that A is about to fill; each on a connection of its own.
    let waits = [
        "BLPOP list-x 2",
        "XREAD BLOCK 2000 STREAMS s-x $",
        "BZPOPMIN z-x 2",
        "BLMPOP 2 1 l2-x LEFT",
    ];
    let threads: Vec<_> = waits
        .iter()
        .map(|line| {
            let mut b = env.pkv.client(&token_b);
            run(&mut b, "PING");
            let line = line.to_string();
            std::thread::spawn(move || {
                let started = Instant::now();
                let reply = run(&mut b, &line);
                (line, reply, started.elapsed())
            })
        })
        .collect();
    wait_blocked(&mut direct, waits.len());

    run(&mut a, "RPUSH list-x v");
    let id = run(&mut a, "XADD s-x * f v");
    run(&mut a, "ZADD z-x 1 m");
    run(&mut a, "RPUSH l2-x w");

    for t in threads {
        let (line, reply, waited) = t.join().unwrap();
        assert_eq!(reply, Value::Nil, "B's {line} got A's data");
        assert!(
            waited >= Duration::from_millis(1800),
            "B's {line} returned after {waited:?}, before its timeout"
        );
    }
    assert_eq!(int(&mut a, "LLEN list-x"), 1);
    assert_eq!(int(&mut a, "XLEN s-x"), 1);
    assert_eq!(int(&mut a, "ZCARD z-x"), 1);
    assert_eq!(int(&mut a, "LLEN l2-x"), 1);

    // A's own blocking reads get the data, with the names A wrote.
    let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
    assert_eq!(
        run(&mut a, "BLPOP list-x 0"),
        Value::Array(vec![bulk("list-x"), bulk("v")])
    );
    let read = run(&mut a, "XREAD BLOCK 0 STREAMS s-x 0");
    let Value::Array(streams) = &read else {
        panic!("XREAD: {read:?}")
    };
    assert_eq!(streams.len(), 1, "{read:?}");
    let Value::Array(pair) = &streams[0] else {
        panic!("XREAD: {read:?}")
    };
    assert_eq!(pair[0], bulk("s-x"));
    assert!(strings(&pair[1]).contains(&strings(&id)[0]), "{read:?}");
    assert!(!mentions_pkv(&read));
    let popped = run(&mut a, "BZPOPMIN z-x 0");
    assert_eq!(
        items(popped.clone())[..2],
        [bulk("z-x"), bulk("m")],
        "{popped:?}"
    );
    assert_eq!(
        run(&mut a, "BLMPOP 0 1 l2-x LEFT"),
        Value::Array(vec![bulk("l2-x"), Value::Array(vec![bulk("w")])])
    );

    // And a blocked A is woken by another connection of A (same token).
    let mut a_wait = env.pkv.client(&token_a);
    run(&mut a_wait, "PING");
    let waiter = std::thread::spawn(move || run(&mut a_wait, "BLPOP wake 10"));
    wait_blocked(&mut direct, 1);
    let mut a2 = env.pkv.client(&token_a);
    run(&mut a2, "RPUSH wake up");
    assert_eq!(
        waiter.join().unwrap(),
        Value::Array(vec![bulk("wake"), bulk("up")])
    );
}

// === 4 ===

#[test]
fn watch_sees_only_own_keys() {
    let env = start();
    let token_a = env.issuer.token(UNITS);
    let token_b = env.issuer.token(UNITS);
    let mut a = env.pkv.client(&token_a);
    let mut a2 = env.pkv.client(&token_a);
    let mut b = env.pkv.client(&token_b);

    run(&mut a, "WATCH k");
    run(&mut a, "MULTI");
    run(&mut a, "SET k 1");
    run(&mut b, "SET k 2");
    assert_eq!(
        run(&mut a, "EXEC"),
        Value::Array(vec![Value::Okay]),
        "B's write to its own k aborted A's transaction"
    );
    assert_eq!(run(&mut a, "GET k"), Value::BulkString(b"1".to_vec()));
    assert_eq!(run(&mut b, "GET k"), Value::BulkString(b"2".to_vec()));

    // A write by A itself (another connection) does abort it.
    run(&mut a, "WATCH k");
    run(&mut a2, "SET k 3");
    run(&mut a, "MULTI");
    run(&mut a, "SET k 4");
    assert_eq!(run(&mut a, "EXEC"), Value::Nil, "A's own write must abort");
    assert_eq!(run(&mut a, "GET k"), Value::BulkString(b"3".to_vec()));

    // B's writes after WATCH but before MULTI do not count either.
    run(&mut a, "WATCH k other");
    run(&mut b, "SET k 5");
    run(&mut b, "DEL other");
    run(&mut b, "FLUSHALL");
    run(&mut a, "MULTI");
    run(&mut a, "INCR k");
    assert_eq!(run(&mut a, "EXEC"), Value::Array(vec![Value::Int(4)]));
}

// === 5 ===

/// Reads Pub/Sub frames until `n` arrive (panics after 5 s).
fn frames(conn: &mut RespConn, n: usize) -> Vec<(Vec<String>, Vec<u8>)> {
    (0..n)
        .map(|_| {
            let (v, raw) = conn
                .read(Duration::from_secs(5))
                .expect("a Pub/Sub message");
            (v.words(), raw)
        })
        .collect()
}

#[test]
fn pubsub_is_per_tenant() {
    let env = start();
    let token_a = env.issuer.token(UNITS);
    let token_b = env.issuer.token(UNITS);
    let mut a = RespConn::open(&env.pkv, &token_a, false);
    let mut a3 = RespConn::open(&env.pkv, &token_a, true);
    let mut a2 = env.pkv.client(&token_a);
    let mut b = env.pkv.client(&token_b);
    let mut b_sub = RespConn::open(&env.pkv, &token_b, false);

    a.send_line("SUBSCRIBE news");
    assert_eq!(frames(&mut a, 1)[0].0, ["subscribe", "news", "1"]);
    a.send_line("PSUBSCRIBE n*");
    assert_eq!(frames(&mut a, 1)[0].0, ["psubscribe", "n*", "2"]);
    a3.send_line("SUBSCRIBE news");
    assert_eq!(frames(&mut a3, 1)[0].0, ["subscribe", "news", "1"]);
    // B listens on everything it can name.
    b_sub.send_line("PSUBSCRIBE *");
    assert_eq!(frames(&mut b_sub, 1)[0].0, ["psubscribe", "*", "1"]);
    b_sub.send_line("SUBSCRIBE news");
    assert_eq!(frames(&mut b_sub, 1)[0].0, ["subscribe", "news", "2"]);

    // B's news is B's own channel: no receiver is A's.
    assert_eq!(
        int(&mut b, "PUBLISH news from-b"),
        2,
        "B's own two subscriptions"
    );
    let b_got = frames(&mut b_sub, 2);
    assert!(b_got.iter().all(|(w, _)| w.last().unwrap() == "from-b"));
    assert!(
        b_got.iter().all(|(_, raw)| !contains(raw, b"pkv:")),
        "{b_got:?}"
    );
    assert_eq!(a.read(Duration::from_millis(300)), None, "A heard B's news");
    assert_eq!(
        a3.read(Duration::from_millis(100)),
        None,
        "A heard B's news"
    );

    // A's news reaches A's subscriptions only, with A's names.
    assert_eq!(int(&mut a2, "PUBLISH news hello"), 3);
    let mut got: Vec<Vec<String>> = frames(&mut a, 2)
        .into_iter()
        .map(|(w, raw)| {
            assert!(!contains(&raw, b"pkv:"), "{:?}", text(&raw));
            w
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            vec!["message", "news", "hello"],
            vec!["pmessage", "n*", "news", "hello"]
        ]
    );
    let (resp3, raw) = a3.read(Duration::from_secs(5)).expect("RESP3 message");
    assert!(matches!(resp3, Resp::Push(_)), "{resp3:?}");
    assert_eq!(resp3.words(), ["message", "news", "hello"]);
    assert!(!contains(&raw, b"pkv:"));
    assert_eq!(
        b_sub.read(Duration::from_millis(300)),
        None,
        "B heard A's news"
    );
    // A pattern matches only inside the namespace.
    assert_eq!(int(&mut a2, "PUBLISH other x"), 0);
    assert_eq!(int(&mut b, "PUBLISH nothing y"), 1, "B's * only");
    assert_eq!(a.read(Duration::from_millis(200)), None);
    frames(&mut b_sub, 1);

    // Introspection shows each tenant its own channels only.
    assert_eq!(names(run(&mut a2, "PUBSUB CHANNELS")), ["news"]);
    assert_eq!(names(run(&mut a2, "PUBSUB CHANNELS n*")), ["news"]);
    let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
    assert_eq!(
        run(&mut a2, "PUBSUB NUMSUB news"),
        Value::Array(vec![bulk("news"), Value::Int(2)])
    );
    assert_eq!(
        run(&mut b, "PUBSUB NUMSUB news"),
        Value::Array(vec![bulk("news"), Value::Int(1)]),
        "B counts only its own subscriber"
    );
    assert_eq!(names(run(&mut b, "PUBSUB CHANNELS")), ["news"]);
    // B has its own "news" subscriber; unsubscribe it to see nothing of A's remains.
    b_sub.send_line("UNSUBSCRIBE news");
    frames(&mut b_sub, 1);
    assert_eq!(names(run(&mut b, "PUBSUB CHANNELS")), Vec::<String>::new());
    assert_eq!(
        names(run(&mut b, "PUBSUB CHANNELS *")),
        Vec::<String>::new()
    );
    assert_eq!(
        names(run(&mut b, "PUBSUB CHANNELS n*")),
        Vec::<String>::new()
    );
    assert_eq!(
        run(&mut b, "PUBSUB NUMSUB news"),
        Value::Array(vec![bulk("news"), Value::Int(0)])
    );
}

// === 6 ===

/// Stream names of an XREAD/XREADGROUP reply (RESP2 array of pairs or RESP3 map).
fn stream_names(reply: &Resp) -> Vec<String> {
    match reply {
        Resp::Array(pairs) => pairs.iter().map(|p| text(p.items()[0].bulk())).collect(),
        Resp::Map(pairs) => pairs.iter().map(|(k, _)| text(k.bulk())).collect(),
        other => panic!("not a stream reply: {other:?}"),
    }
}

fn bulks(reply: &Resp) -> Vec<String> {
    reply.items().iter().map(|v| text(v.bulk())).collect()
}

#[test]
fn replies_carrying_key_names_are_unprefixed() {
    let env = start();
    for resp3 in [false, true] {
        let token = env.issuer.token(UNITS);
        let mut c = RespConn::open(&env.pkv, &token, resp3);
        let proto = if resp3 { "RESP3" } else { "RESP2" };
        let mut call = |line: &str| -> Resp {
            let (reply, raw) = c.call_line(line);
            assert!(
                !contains(&raw, b"pkv:"),
                "{proto} {line}: reply bytes name the upstream: {:?}",
                text(&raw)
            );
            assert!(
                !matches!(reply, Resp::Error(_)),
                "{proto} {line}: {reply:?}"
            );
            reply
        };
        for line in [
            "RPUSH l1 a b c d",
            "ZADD z1 1 m1 2 m2 3 m3 4 m4",
            "XADD s1 1-1 f v",
            "XADD s2 1-1 g w",
            "SET k1 v",
            "XGROUP CREATE s1 g 0",
            "XGROUP CREATE s2 g 0",
        ] {
            call(line);
        }
        let all: BTreeSet<String> = ["l1", "z1", "s1", "s2", "k1"].map(String::from).into();

        let keys: BTreeSet<String> = bulks(&call("KEYS *")).into_iter().collect();
        assert_eq!(keys, all, "{proto} KEYS");
        let mut some = bulks(&call("KEYS s*"));
        some.sort();
        assert_eq!(some, ["s1", "s2"], "{proto} KEYS s*");
        let mut scanned = BTreeSet::new();
        let mut cursor = "0".to_string();
        loop {
            let reply = call(&format!("SCAN {cursor} COUNT 2"));
            cursor = text(reply.items()[0].bulk());
            scanned.extend(bulks(&reply.items()[1]));
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(scanned, all, "{proto} SCAN");
        let random = text(call("RANDOMKEY").bulk());
        assert!(all.contains(&random), "{proto} RANDOMKEY {random}");

        assert_eq!(bulks(&call("BLPOP nope l1 0")), ["l1", "a"], "{proto}");
        assert_eq!(bulks(&call("BRPOP nope l1 1")), ["l1", "d"], "{proto}");
        let lmpop = call("LMPOP 2 nope l1 LEFT COUNT 1");
        assert_eq!(text(lmpop.items()[0].bulk()), "l1", "{proto}");
        assert_eq!(bulks(&lmpop.items()[1]), ["b"], "{proto}");
        let blmpop = call("BLMPOP 1 2 nope l1 RIGHT");
        assert_eq!(text(blmpop.items()[0].bulk()), "l1", "{proto}");
        let zmpop = call("ZMPOP 2 nope z1 MIN");
        assert_eq!(text(zmpop.items()[0].bulk()), "z1", "{proto} {zmpop:?}");
        let bzmpop = call("BZMPOP 1 1 z1 MIN");
        assert_eq!(text(bzmpop.items()[0].bulk()), "z1", "{proto} {bzmpop:?}");
        let bzpopmax = call("BZPOPMAX nope z1 0");
        assert_eq!(text(bzpopmax.items()[0].bulk()), "z1", "{proto}");
        assert_eq!(text(bzpopmax.items()[1].bulk()), "m4", "{proto}");
        let bzpopmin = call("BZPOPMIN z1 1");
        assert_eq!(text(bzpopmin.items()[0].bulk()), "z1", "{proto}");

        for (line, expect) in [
            ("XREAD STREAMS s1 0", vec!["s1"]),
            ("XREAD COUNT 1 STREAMS nope s2 s1 0 0 0", vec!["s2", "s1"]),
            ("XREAD BLOCK 100 STREAMS s1 s2 0 0", vec!["s1", "s2"]),
            ("XREADGROUP GROUP g c STREAMS s1 s2 > >", vec!["s1", "s2"]),
            ("XREADGROUP GROUP g c COUNT 5 STREAMS s1 0", vec!["s1"]),
            ("XREADGROUP GROUP g c BLOCK 100 STREAMS s2 0", vec!["s2"]),
        ] {
            let reply = call(line);
            let mut got = stream_names(&reply);
            let mut want: Vec<String> = expect.into_iter().map(String::from).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{proto} {line}: {reply:?}");
        }
        // Nil replies stay nil.
        assert_eq!(call("XREAD BLOCK 10 STREAMS s1 $"), Resp::Nil, "{proto}");
        assert_eq!(call("BLPOP nope 0.01"), Resp::Nil, "{proto}");
        assert_eq!(call("LMPOP 1 nope LEFT"), Resp::Nil, "{proto}");

        // Inside a transaction, EXEC's results are rewritten too.
        call("RPUSH l3 x y");
        call("MULTI");
        for line in [
            "KEYS l*",
            "LMPOP 1 l3 LEFT",
            "BLPOP l3 0",
            "XREAD STREAMS s1 0",
        ] {
            assert_eq!(call(line), Resp::Simple("QUEUED".into()), "{proto}");
        }
        let exec = call("EXEC");
        let results = exec.items();
        assert_eq!(bulks(&results[0]), ["l3"], "{proto}");
        assert_eq!(text(results[1].items()[0].bulk()), "l3", "{proto}");
        assert_eq!(bulks(&results[2]), ["l3", "y"], "{proto}");
        assert_eq!(stream_names(&results[3]), ["s1"], "{proto}");
    }
}

/// Redis puts key names into some errors (`NOGROUP No such key '...'`); through pkv those
/// must not reveal the upstream name either.
#[test]
fn error_replies_do_not_reveal_upstream_key_names() {
    let env = start();
    let token = env.issuer.token(UNITS);
    let mut c = RespConn::open(&env.pkv, &token, false);
    let (added, _) = c.call_line("XADD s1 1-1 f v");
    assert_eq!(added, Resp::Bulk(b"1-1".to_vec()));
    let mut leaks = Vec::new();
    for line in [
        "XREADGROUP GROUP nogroup c STREAMS s1 >",
        "XINFO CONSUMERS s1 nogroup",
        "XGROUP CREATECONSUMER s1 nogroup c",
        "XGROUP SETID s1 nogroup 0",
        "XPENDING s1 nogroup",
        "XCLAIM s1 nogroup c 0 1-1",
        "XAUTOCLAIM s1 nogroup c 0 0",
    ] {
        let (reply, raw) = c.call_line(line);
        assert!(matches!(reply, Resp::Error(_)), "{line}: {reply:?}");
        if contains(&raw, b"pkv:") {
            leaks.push(format!("{line} -> {}", text(&raw).trim_end()));
        }
    }
    assert!(
        leaks.is_empty(),
        "error replies name the upstream key:\n{}",
        leaks.join("\n")
    );
}

// === 7 ===

#[test]
fn keys_with_glob_characters_in_account_names_stay_confined() {
    let env = start();
    let subs = ["a*", "a", "a:b", "[x]", "a%2A", "*", "a?", "a\\"];
    let tokens: Vec<String> = subs
        .iter()
        .map(|sub| env.issuer.mint(UNITS, 3600, Some(sub)))
        .collect();
    let mut conns: Vec<(String, redis::Connection)> = subs
        .iter()
        .zip(&tokens)
        .map(|(sub, token)| {
            let mut conn = env.pkv.client(token);
            assert_eq!(account_of(&mut conn), *sub);
            (sub.to_string(), conn)
        })
        .collect();
    for (sub, conn) in &mut conns {
        cmd("SET")
            .arg("k")
            .arg(sub.as_str())
            .query::<()>(conn)
            .unwrap();
        run(conn, "SADD k2set m");
    }
    for (sub, conn) in &mut conns {
        let mut keys = names(run(conn, "KEYS *"));
        keys.sort();
        assert_eq!(keys, ["k", "k2set"], "KEYS * for {sub:?}");
        assert_eq!(names(run(conn, "KEYS k")), ["k"], "KEYS k for {sub:?}");
        let mut scanned = scan_all(conn, "MATCH *");
        scanned.sort();
        assert_eq!(scanned, ["k", "k2set"], "SCAN MATCH * for {sub:?}");
        assert_eq!(scan_all(conn, "MATCH k"), ["k"], "SCAN MATCH k for {sub:?}");
        assert_eq!(
            scan_all(conn, "TYPE set"),
            ["k2set"],
            "SCAN TYPE set for {sub:?}"
        );
        assert_eq!(int(conn, "DBSIZE"), 2, "DBSIZE for {sub:?}");
        assert_eq!(
            run(conn, "GET k"),
            Value::BulkString(sub.clone().into_bytes())
        );
    }
    // Channel patterns are confined the same way: every tenant listens on `*` and `k*`,
    // every tenant publishes on `k`, and each hears exactly its own message, twice.
    let mut listeners: Vec<RespConn> = tokens
        .iter()
        .map(|token| {
            let mut l = RespConn::open(&env.pkv, token, false);
            l.send_line("PSUBSCRIBE * k*");
            frames(&mut l, 2);
            l
        })
        .collect();
    for (sub, conn) in &mut conns {
        let receivers = cmd("PUBLISH")
            .arg("k")
            .arg(sub.as_str())
            .query::<i64>(conn)
            .unwrap();
        assert_eq!(receivers, 2, "PUBLISH k from {sub:?}");
    }
    for (sub, listener) in subs.iter().zip(&mut listeners) {
        for (words, raw) in frames(listener, 2) {
            assert_eq!(words[2..], ["k", sub], "{sub:?} heard {words:?}");
            assert!(!contains(&raw, b"pkv:"));
        }
        assert_eq!(
            listener.read(Duration::from_millis(50)),
            None,
            "{sub:?} heard another tenant"
        );
    }

    // One FLUSHALL empties one namespace.
    let (_, first) = &mut conns[0];
    run(first, "FLUSHALL");
    for (i, (sub, conn)) in conns.iter_mut().enumerate() {
        let want = if i == 0 { 0 } else { 2 };
        assert_eq!(int(conn, "DBSIZE"), want, "after a*'s FLUSHALL, {sub:?}");
    }
    let mut direct = env.redis.direct();
    let mut upstream: Vec<String> = redis::cmd("KEYS")
        .arg("pkv:t:*")
        .query::<Vec<Vec<u8>>>(&mut direct)
        .unwrap()
        .iter()
        .map(|k| text(k))
        .collect();
    upstream.sort();
    let mut want: Vec<String> = subs[1..]
        .iter()
        .flat_map(|s| {
            [
                format!("{}k", prefix_for(s)),
                format!("{}k2set", prefix_for(s)),
            ]
        })
        .collect();
    want.sort();
    assert_eq!(upstream, want);
}
