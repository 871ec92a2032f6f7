//! Scripting on the embedded store, through real clients: Redis 7.0's replies and errors
//! (compared with a real redis-server), redis-rs's `Script`, redis-py's `Lock` under
//! contention, per-account script registries, TTLs and metering of what scripts write.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::time::Duration;

use common::{pkv_balance, run_python_app, Issuer, PkvConfig, Redis, RespConn, Server};

fn embedded() -> (Server, Issuer) {
    let issuer = Issuer::new();
    let server = PkvConfig::embedded(&issuer).start();
    (server, issuer)
}

/// pkv on its embedded store and a redis-server, with a tenant's connection to the one and a
/// direct connection to the other: the two sides a parity test compares. The first two
/// keep the processes running.
fn beside_redis() -> ((Server, Issuer), Redis, RespConn, RespConn) {
    let (server, issuer) = embedded();
    let redis = Redis::start();
    let pkv = server.resp_authed(&issuer.token(1000));
    let direct = RespConn::connect(redis.port);
    ((server, issuer), redis, pkv, direct)
}

fn words(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

fn call(conn: &mut RespConn, args: &[&str]) -> String {
    let args = words(args);
    let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    String::from_utf8_lossy(&conn.call(&refs)).into_owned()
}

/// Scripts whose replies pkv must give byte for byte as Redis 7.0 does. Key names are
/// the client's own, so the replies are the same through the namespace.
const PARITY: &[&[&str]] = &[
    &["EVAL", "return 1", "0"],
    &["EVAL", "return {1,2,3.7,'x',nil,5}", "0"],
    &["EVAL", "return {err='my err'}", "0"],
    &["EVAL", "return {ok='fine'}", "0"],
    &["EVAL", "return redis.error_reply('E2 bad')", "0"],
    &["EVAL", "return redis.status_reply('YES')", "0"],
    &["EVAL", "return {redis.REDIS_VERSION, redis.REDIS_VERSION_NUM}", "0"],
    &["EVAL", "return true", "0"],
    &["EVAL", "return false", "0"],
    &["EVAL", "return 3.99", "0"],
    &["EVAL", "return -3.99", "0"],
    &["EVAL", "return nil", "0"],
    &["EVAL", "return 'text'", "0"],
    &["EVAL", "return {1,{2,{3,'x'}},true,false}", "0"],
    &["EVAL", "retur", "0"],
    &["EVAL", "return 1", "-1"],
    &["EVAL", "return 1", "2", "a"],
    &["EVAL", "return 1", "x"],
    &["EVAL", "return {KEYS[1], KEYS[2], ARGV[1], ARGV[2], #KEYS, #ARGV}", "2", "k1", "k2", "a1", "a2"],
    &["EVAL", "return redis.call('set', KEYS[1], ARGV[1])", "1", "p:s", "abc"],
    &["EVAL", "return redis.call('get', KEYS[1])", "1", "p:s"],
    &["EVAL", "return redis.call('get', 'p:missing')", "0"],
    &["EVAL", "return redis.call('incr', KEYS[1])", "1", "p:s"],
    &["EVAL", "return redis.pcall('incr', KEYS[1])", "1", "p:s"],
    &["EVAL", "local r = redis.pcall('incr', KEYS[1]) return r.err", "1", "p:s"],
    &["EVAL", "return redis.call('incrby', KEYS[1], 5)", "1", "p:n"],
    &["EVAL", "redis.call('rpush', KEYS[1], 'a', 'b', 'c') return redis.call('lrange', KEYS[1], 0, -1)", "1", "p:l"],
    &["EVAL", "redis.call('hset', KEYS[1], 'f', 'v') return redis.call('hgetall', KEYS[1])", "1", "p:h"],
    &["EVAL", "return redis.call('type', KEYS[1])", "1", "p:h"],
    &["EVAL", "return redis.call('exists', KEYS[1], KEYS[2])", "2", "p:h", "p:nope"],
    &["EVAL", "return redis.call('blpop', KEYS[1], 0)", "1", "p:empty"],
    &["EVAL", "local ok, e = pcall(redis.call, 'incr', KEYS[1]) return {tostring(ok), type(e), e}", "1", "p:s"],
    &["EVAL", "return redis.call('xread', 'block', 0, 'streams', 'p:x', '$')", "0"],
    &["EVAL", "return redis.call('xread', 'streams', 'p:x', '0')", "0"],
    &["EVAL", "error('boom')", "0"],
    &["EVAL", "x = 1", "0"],
    &["EVAL", "return x", "0"],
    &["EVAL", "return type(os)", "0"],
    &["EVAL", "return type(loadstring)", "0"],
    &["EVAL", "return type(getmetatable)", "0"],
    &["EVAL", "return redis.call('nosuch')", "0"],
    &["EVAL", "return redis.call('eval', 'return 1', 0)", "0"],
    &["EVAL", "return redis.call()", "0"],
    &["EVAL", "return redis.call('get')", "0"],
    &["EVAL_RO", "return redis.call('set', 'p:ro', 'v')", "0"],
    &["EVAL_RO", "return redis.call('get', KEYS[1])", "1", "p:s"],
    &["EVAL", "return redis.sha1hex('')", "0"],
    &["EVAL", "return cjson.encode({1, 2, 'x'})", "0"],
    &["EVAL", "return cjson.encode({a = {b = true}})", "0"],
    &["EVAL", "local t = cjson.decode('{\"a\":[1,2,{\"b\":\"c\"}]}') return {t.a[2], t.a[3].b}", "0"],
    &["EVAL", "return {bit.band(0xff, 0x0f), bit.bor(1, 2, 4), bit.bxor(5, 3), bit.bnot(0), bit.lshift(1, 31), bit.rshift(-1, 28), bit.arshift(-16, 2), bit.tohex(255), bit.tohex(-1, -4)}", "0"],
    &["EVAL", "return cmsgpack.pack({1, 2, 'three', {a = 1}}, 300, -5, -200, 70000, 1.5, 0.1, true, false, string.rep('x', 40))", "0"],
    &["EVAL", "local a, b, c = cmsgpack.unpack(cmsgpack.pack({1, {2, 'x'}}, 'y', 5000000000)) return {a[2][2], b, c}", "0"],
    &["EVAL", "return cmsgpack.pack({})", "0"],
    &["EVAL", "return tostring(tonumber('0x10'))", "0"],
    &["EVAL", "return string.format('%d-%s', 7, 'x')", "0"],
    &["EVAL", "return table.concat({'a','b'}, ',')", "0"],
    &["EVAL", "return math.floor(7.9)", "0"],
    &["EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0"],
    &["SCRIPT", "LOAD", "return 'loaded'"],
    &["SCRIPT", "EXISTS", "4acd2d0a5ec2a1c2dd3e4cd4d7b0cc5e4b3c4c2f", "ffffffffffffffffffffffffffffffffffffffff"],
    &["EVALSHA", "4acd2d0a5ec2a1c2dd3e4cd4d7b0cc5e4b3c4c2f", "0"],
    &["SCRIPT", "FLUSH", "BOGUS"],
    &["SCRIPT", "KILL"],
];

#[test]
fn replies_and_errors_are_redis_7s() {
    let (_pkv, _redis, mut pkv, mut direct) = beside_redis();
    let mut differences = Vec::new();
    for args in PARITY {
        let ours = call(&mut pkv, args);
        let theirs = call(&mut direct, args);
        if ours != theirs {
            differences.push(format!("{args:?}\n  pkv:   {ours:?}\n  redis: {theirs:?}"));
        }
    }
    assert!(
        differences.is_empty(),
        "{} difference(s):\n{}",
        differences.len(),
        differences.join("\n")
    );
}

#[test]
fn redis_rs_script_loads_once_and_runs_by_sha() {
    let (server, issuer) = embedded();
    let mut con = server.client(&issuer.token(1000));
    let script = redis::Script::new("return redis.call('incrby', KEYS[1], ARGV[1])");
    let first: i64 = script.key("counter").arg(2).invoke(&mut con).unwrap();
    let second: i64 = script.key("counter").arg(3).invoke(&mut con).unwrap();
    assert_eq!((first, second), (2, 5));
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(script.get_hash())
        .query(&mut con)
        .unwrap();
    assert_eq!(exists, vec![1]);
}

#[test]
fn redis_py_lock_excludes_under_contention() {
    let (server, issuer) = embedded();
    let token = issuer.token(1000);
    let printed = run_python_app("redis_py_lock.py", &[&server.url(&token), "4", "25"]);
    assert_eq!(printed, "100");
}

#[test]
fn each_account_sees_only_its_own_scripts() {
    let (server, issuer) = embedded();
    let mut a = server.resp_authed(&issuer.token(1000));
    let mut b = server.resp_authed(&issuer.token(1000));
    let loaded = call(&mut a, &["SCRIPT", "LOAD", "return 'a'"]);
    let sha = loaded.lines().nth(1).unwrap().to_owned();
    assert_eq!(call(&mut a, &["EVALSHA", &sha, "0"]), "$1\r\na\r\n");
    assert_eq!(
        call(&mut b, &["EVALSHA", &sha, "0"]),
        "-NOSCRIPT No matching script. Please use EVAL.\r\n"
    );
    assert_eq!(call(&mut b, &["SCRIPT", "EXISTS", &sha]), "*1\r\n:0\r\n");
    // B flushing its scripts leaves A's.
    assert_eq!(call(&mut b, &["SCRIPT", "FLUSH"]), "+OK\r\n");
    assert_eq!(call(&mut a, &["SCRIPT", "EXISTS", &sha]), "*1\r\n:1\r\n");
    assert_eq!(call(&mut a, &["SCRIPT", "FLUSH", "ASYNC"]), "+OK\r\n");
    assert_eq!(call(&mut a, &["SCRIPT", "EXISTS", &sha]), "*1\r\n:0\r\n");
    // EVAL caches what it ran, for the same account only.
    call(&mut a, &["EVAL", "return 'a'", "0"]);
    assert_eq!(call(&mut a, &["EVALSHA", &sha, "0"]), "$1\r\na\r\n");
    assert!(call(&mut b, &["EVALSHA", &sha, "0"]).starts_with("-NOSCRIPT"));
}

#[test]
fn an_accounts_registry_is_bounded() {
    let (server, issuer) = embedded();
    let mut a = server.resp_authed(&issuer.token(1000));
    let mut refused = None;
    for i in 0..8 {
        let body = format!("return {i} --{}", "x".repeat(1024 * 1024));
        let reply = call(&mut a, &["SCRIPT", "LOAD", &body]);
        if reply.starts_with('-') {
            refused = Some((i, reply));
            break;
        }
    }
    let (at, line) = refused.expect("the registry refused a script before 8 MiB");
    assert_eq!(
        at, 3,
        "4 MiB hold three scripts of 1 MiB and their overhead"
    );
    assert!(line.contains("SCRIPT FLUSH makes room"), "{line}");
    // EVAL still runs when the registry is full; it is just not cached.
    assert_eq!(call(&mut a, &["EVAL", "return 7", "0"]), ":7\r\n");
    // Another account is not affected.
    let mut b = server.resp_authed(&issuer.token(1000));
    assert!(call(&mut b, &["SCRIPT", "LOAD", "return 1"]).starts_with("$40"));
}

#[test]
fn keys_a_script_writes_get_the_accounts_default_ttl() {
    let (server, issuer) = embedded();
    let mut a = server.resp_authed(&issuer.token(1000));
    call(
        &mut a,
        &["EVAL", "redis.call('set', KEYS[1], 'v') redis.call('hset', 'undeclared', 'f', 'v') redis.call('incr', 'n') redis.call('set', 'kept', 'v', 'KEEPTTL') return 1", "1", "declared"],
    );
    for key in ["declared", "undeclared", "n", "kept"] {
        let ttl = call(&mut a, &["TTL", key]);
        let secs: i64 = ttl.trim_start_matches(':').trim().parse().unwrap();
        assert!(secs > 86_000 && secs <= 86_400, "{key}: {ttl:?}");
    }
    // PERSIST inside a script buys the longest TTL, as outside.
    call(
        &mut a,
        &[
            "EVAL",
            "return redis.call('persist', KEYS[1])",
            "1",
            "declared",
        ],
    );
    let ttl = call(&mut a, &["TTL", "declared"]);
    let secs: i64 = ttl.trim_start_matches(':').trim().parse().unwrap();
    assert!(secs > 31_000_000, "{ttl:?}");
}

/// The byte-seconds an account has paid, once the ledger's answer settles.
fn byte_seconds(con: &mut redis::Connection) -> i64 {
    let mut last = -1;
    for _ in 0..100 {
        let now: i64 = pkv_balance(con)["byte_seconds"].parse().unwrap();
        if now == last {
            return now;
        }
        last = now;
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("PKV.BALANCE never settled");
}

#[test]
fn a_script_pays_for_its_writes_as_the_same_writes_outside() {
    let issuer = Issuer::new();
    let server = PkvConfig::embedded(&issuer)
        .set("PKV_BALANCE_INTERVAL_MS", "0")
        .start();
    let mut plain = server.client(&issuer.token(1000));
    let mut scripted = server.client(&issuer.token(1000));
    let value = "v".repeat(1024 * 1024);
    let before_plain = byte_seconds(&mut plain);
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query(&mut plain)
        .unwrap();
    let plain_paid = byte_seconds(&mut plain) - before_plain;
    let before_scripted = byte_seconds(&mut scripted);
    let _: () = redis::cmd("EVAL")
        .arg("return redis.call('set', KEYS[1], ARGV[1])")
        .arg(1)
        .arg("big")
        .arg(&value)
        .query(&mut scripted)
        .unwrap();
    let scripted_paid = byte_seconds(&mut scripted) - before_scripted;
    assert!(plain_paid >= 1024 * 1024 * 86_400, "{plain_paid}");
    assert_eq!(scripted_paid, plain_paid);
    // A script building its 1 MB inside Lua pays the same storage too.
    let before = byte_seconds(&mut scripted);
    let _: () = redis::cmd("EVAL")
        .arg("return redis.call('set', 'built', string.rep('v', 1024 * 1024))")
        .arg(0)
        .query(&mut scripted)
        .unwrap();
    let built = byte_seconds(&mut scripted) - before;
    assert_eq!(
        built,
        plain_paid + 2 * 86_400,
        "'built' is 2 bytes longer than 'big', for a day"
    );
}

#[test]
fn scripting_off_refuses_the_commands() {
    let issuer = Issuer::new();
    let server = PkvConfig::embedded(&issuer)
        .set("PKV_SCRIPTING", "off")
        .start();
    let mut a = server.resp_authed(&issuer.token(1000));
    let line = "-ERR scripting is turned off on this pkv (PKV_SCRIPTING=off)\r\n";
    assert_eq!(call(&mut a, &["EVAL", "return 1", "0"]), line);
    assert_eq!(call(&mut a, &["SCRIPT", "LOAD", "return 1"]), line);
}

/// The same cases through pkv in front of a redis-server, where the script runs inside
/// Redis (`tests/upstream_scripting.rs` has the rest). Commands whose keys a script on an
/// upstream cannot have located (`XREAD`'s `STREAMS`) are refused there with pkv's own line.
#[test]
fn replies_and_errors_are_redis_7s_on_an_upstream_too() {
    let issuer = Issuer::new();
    let upstream = Redis::start();
    let server = PkvConfig::new(&upstream, &issuer).start();
    let redis = Redis::start();
    let mut pkv = server.resp_authed(&issuer.token(1000));
    let mut direct = RespConn::connect(redis.port);
    let mut differences = Vec::new();
    let mut refused = 0;
    for args in PARITY {
        let ours = call(&mut pkv, args);
        let theirs = call(&mut direct, args);
        let refused_upstream = ours
            .starts_with("-ERR command 'XREAD' is not available to scripts through pkv on an upstream Redis script: ");
        refused += usize::from(refused_upstream);
        if ours != theirs && !refused_upstream {
            differences.push(format!("{args:?}\n  pkv:   {ours:?}\n  redis: {theirs:?}"));
        }
    }
    assert_eq!(refused, 2, "the two XREAD cases, and only them");
    assert!(
        differences.is_empty(),
        "{} difference(s):\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// Scripts queued in MULTI run at EXEC, in order with the other queued commands, and
/// answer inside EXEC's array as Redis 7.0's do (errors of the script or of its
/// arguments are that command's result, not the transaction's).
#[test]
fn scripts_queued_in_multi_run_at_exec_as_redis_runs_them() {
    let (_pkv, _redis, mut pkv, mut direct) = beside_redis();
    let transcript: &[&[&str]] = &[
        &[
            "SCRIPT",
            "LOAD",
            "return redis.call('incrby', KEYS[1], ARGV[1])",
        ],
        &["MULTI"],
        &["SET", "p:n", "10"],
        &["EVAL", "return redis.call('incr', KEYS[1])", "1", "p:n"],
        &[
            "EVALSHA",
            "2bab3b661081db58bd2341920e0ba7cf5dc77b25",
            "1",
            "p:n",
            "5",
        ],
        &["EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0"],
        &["EVAL", "return 1", "2", "a"],
        &["EVAL", "error('boom')", "0"],
        &["EVAL_RO", "return redis.call('get', KEYS[1])", "1", "p:n"],
        &[
            "EVAL",
            "return {redis.call('get', KEYS[1]), KEYS[1]}",
            "1",
            "p:n",
        ],
        &["GET", "p:n"],
        &["EXEC"],
        &["MULTI"],
        &["EVAL", "return redis.call('set', KEYS[1], 'x')", "1", "p:d"],
        &["DISCARD"],
        &["EXISTS", "p:d"],
    ];
    let mut differences = Vec::new();
    for args in transcript {
        let ours = call(&mut pkv, args);
        let theirs = call(&mut direct, args);
        if ours != theirs {
            differences.push(format!("{args:?}\n  pkv:   {ours:?}\n  redis: {theirs:?}"));
        }
    }
    assert!(
        differences.is_empty(),
        "{} difference(s):\n{}",
        differences.len(),
        differences.join("\n")
    );
    // What the scripts wrote in EXEC got the account's default TTL.
    let ttl = call(&mut pkv, &["TTL", "p:n"]);
    let secs: i64 = ttl.trim_start_matches(':').trim().parse().unwrap();
    assert!(secs > 86_000 && secs <= 86_400, "{ttl:?}");
}

/// redis-py's transactional pipeline with registered scripts (what `Queue.enqueue` in
/// RQ and BullMQ's `addBulk` do: several EVALSHA in one MULTI) runs them all atomically.
#[test]
fn redis_py_transaction_with_scripts_runs_them_at_exec() {
    let (server, issuer) = embedded();
    let token = issuer.token(1000);
    let printed = run_python_app("redis_py_multi_scripts.py", &[&server.url(&token)]);
    assert_eq!(printed, "[1, 2, 3, True, 3, 3]");
}

/// A script run by EXEC pays for its writes as the same script outside a transaction.
#[test]
fn a_script_in_exec_pays_for_its_writes() {
    let issuer = Issuer::new();
    let server = PkvConfig::embedded(&issuer)
        .set("PKV_BALANCE_INTERVAL_MS", "0")
        .start();
    let mut plain = server.client(&issuer.token(1000));
    let mut queued = server.client(&issuer.token(1000));
    let script = "return redis.call('set', KEYS[1], string.rep('v', 1024 * 1024))";
    let before = byte_seconds(&mut plain);
    let _: () = redis::cmd("EVAL")
        .arg(script)
        .arg(1)
        .arg("big")
        .query(&mut plain)
        .unwrap();
    let plain_paid = byte_seconds(&mut plain) - before;
    let before = byte_seconds(&mut queued);
    let ((),): ((),) = redis::pipe()
        .atomic()
        .cmd("EVAL")
        .arg(script)
        .arg(1)
        .arg("big")
        .query(&mut queued)
        .unwrap();
    let queued_paid = byte_seconds(&mut queued) - before;
    assert!(plain_paid >= 1024 * 1024 * 86_400, "{plain_paid}");
    assert_eq!(queued_paid, plain_paid);
}

/// A small deterministic generator, so that a failing random case can be run again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random `struct` format and Lua values for it: integers within their size's range,
/// floats, strings, padding, alignment and byte order.
fn struct_case(rng: &mut Rng) -> (String, Vec<String>) {
    let mut format = String::new();
    let mut values = Vec::new();
    for _ in 0..1 + rng.below(6) {
        match rng.below(14) {
            0 => format.push('<'),
            1 => format.push('>'),
            2 => format.push_str(["!", "!1", "!2", "!4", "!8", "!16"][rng.below(6) as usize]),
            3 => format.push('x'),
            4 => format.push(' '),
            5 => {
                format.push('s');
                values.push(format!("'s{}'", rng.below(1000)));
            }
            6 => {
                let n = rng.below(6);
                format.push_str(&format!("c{n}"));
                let len = if n == 0 {
                    rng.below(5)
                } else {
                    n + rng.below(3)
                };
                values.push(format!("'{}'", "abcdefgh".get(..len as usize).unwrap()));
            }
            7 | 8 => {
                format.push(['f', 'd'][rng.below(2) as usize]);
                let sign = if rng.below(2) == 0 { "-" } else { "" };
                values.push(format!("{sign}{}.{}", rng.below(100_000), rng.below(1000)));
            }
            _ => {
                let (option, size) = match rng.below(7) {
                    0 => ("b", 1),
                    1 => ("h", 2),
                    2 => ("l", 8),
                    3 => ("T", 8),
                    4 => ("i", 4),
                    _ => {
                        let n = 1 + rng.below(8);
                        format.push_str(&format!("i{n}"));
                        ("", n)
                    }
                };
                let signed = option.is_empty() || rng.below(2) == 0;
                let option = if signed {
                    option.to_owned()
                } else {
                    option.to_ascii_uppercase()
                };
                if option.is_empty() && !signed {
                    format.pop();
                    format.pop();
                    format.push_str(&format!("I{size}"));
                } else {
                    format.push_str(&option);
                }
                // Within what a double holds exactly, and the size's range.
                let bits = (size * 8).min(52) - u64::from(signed);
                let magnitude = rng.next() >> (64 - bits);
                let negative = signed && rng.below(2) == 0;
                values.push(if negative {
                    format!("-{magnitude}")
                } else {
                    magnitude.to_string()
                });
            }
        }
    }
    (format, values)
}

/// `struct.pack`, `unpack` and `size` give what Redis's lua_struct.c gives, byte for byte,
/// on random formats and values, and the same errors.
#[test]
fn the_struct_library_is_redis_s() {
    let (_pkv, _redis, mut pkv, mut direct) = beside_redis();
    let mut scripts: Vec<String> = [
        "return struct.pack('z', 1)",
        "return struct.pack('i33', 1)",
        "return struct.pack('!3i', 1)",
        "return struct.pack('c10', 'abc')",
        "return struct.pack('i')",
        "return struct.pack('i', 'x')",
        "return struct.pack('i', '12')",
        "return struct.pack('i99999999999', 1)",
        "return struct.unpack('i', 'ab')",
        "return struct.size('s')",
        "return struct.size('c0')",
        "return struct.size('z')",
        "return struct.size('!4bi')",
        "return struct.unpack('Bc0', struct.pack('Bc0', 5, 'hello'))",
        "return {struct.unpack('c0', 'x')}",
        "return {struct.unpack('s', 'abc')}",
        "return {struct.unpack('i', 'abcdefgh', 5)}",
        "return {struct.unpack('i', 'abcdefgh', 9)}",
        "return {struct.unpack('i', 'abcdefgh', 10)}",
        "return struct.pack('=i', 1)",
        "return struct.pack(' <i ', 1)",
        "return {struct.unpack('>!4bi', struct.pack('>!4bi', 1, 2))}",
        "return struct.pack('i', 1.5)",
        "return struct.pack('I', -1)",
        "return struct.pack('i12', -1)",
        "return {struct.unpack('i12', struct.pack('i12', -1))}",
        "return {struct.unpack('I16', string.rep('\\255', 16))}",
        "return tostring(struct.unpack('d', struct.pack('d', 0.1)))",
        "local ok, e = pcall(struct.pack, 'z') return e",
        "return struct.pack(7, 1, 2)",
        "return struct.pack(nil)",
        "return struct.pack('s', {})",
        "return struct.pack('!0i', 1)",
        "return struct.size('!0ii')",
        "return {struct.unpack('c2000000000', 'x')}",
        "return {struct.unpack('i', 'abcd', 0)}",
        "return {struct.unpack('i', 'abcd', -5)}",
        "return {struct.unpack('Bc0', '\\255x')}",
        "return struct.pack('i0', 5)",
        "return {struct.unpack('i0', 'x')}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut rng = Rng(0x5eed_0f57_12c7);
    for _ in 0..400 {
        let (format, values) = struct_case(&mut rng);
        let values = values.join(", ");
        scripts.push(format!("return struct.pack('{format}', {values})"));
        scripts.push(format!(
            "local t = {{struct.unpack('{format}', struct.pack('{format}', {values}))}} \
             for i = 1, #t do t[i] = tostring(t[i]) end return t"
        ));
        if !format.contains('s') && !format.contains("c0") {
            scripts.push(format!("return struct.size('{format}')"));
        }
    }
    let mut differences = Vec::new();
    for script in &scripts {
        let args = ["EVAL", script.as_str(), "0"];
        let (ours, theirs) = (call(&mut pkv, &args), call(&mut direct, &args));
        if ours != theirs {
            differences.push(format!("{script}\n  pkv:   {ours:?}\n  redis: {theirs:?}"));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} differ:\n{}",
        differences.len(),
        scripts.len(),
        differences.join("\n")
    );
}

/// `redis.setresp(3)`: replies reach the script as Redis 7.0 converts RESP3 (maps as
/// `{map=...}`, sets as `{set=...}`, doubles as `{double=...}`, null as nil), and what a
/// script returns (`{double=}`, `{map=}`, `{set=}`, `{big_number=}`, booleans) reaches
/// RESP2 and RESP3 clients as Redis's does.
#[test]
fn setresp_3_converts_as_redis_7_does() {
    let (_pkv, _redis, mut pkv, mut direct) = beside_redis();
    for conn in [&mut pkv, &mut direct] {
        call(conn, &["HSET", "p:h", "f", "v"]);
        call(conn, &["SADD", "p:s", "a"]);
        call(conn, &["ZADD", "p:z", "1.5", "m"]);
    }
    let scripts = [
        "redis.setresp(3) return redis.call('hgetall', 'p:h')",
        "redis.setresp(3) local r = redis.call('hgetall', 'p:h') return {type(r), type(r.map), r.map.f}",
        "redis.setresp(3) local r = redis.call('smembers', 'p:s') return {type(r.set), tostring(r.set.a)}",
        "redis.setresp(3) local r = redis.call('zscore', 'p:z', 'm') return {type(r), type(r.double), tostring(r.double)}",
        "redis.setresp(3) return type(redis.call('get', 'p:missing'))",
        "redis.setresp(3) return redis.call('zscore', 'p:z', 'm')",
        "redis.setresp(3) return redis.call('zrange', 'p:z', 0, -1, 'withscores')",
        "redis.setresp(3) return redis.call('smismember', 'p:s', 'a', 'b')",
        "redis.setresp(3) local r = redis.call('hgetall', 'p:nope') return {type(r.map), #r}",
        "redis.setresp(3) return {pcall(redis.call, 'incr', 'p:h')}",
        "redis.setresp(3) return redis.call('zincrby', 'p:z', 0, 'm')",
        "redis.setresp(3) local r = redis.call('hrandfield', 'p:h', 1, 'withvalues') return type(r[1])",
        "redis.setresp(3) return false",
        "redis.setresp(3) return true",
        "redis.setresp(3) redis.setresp(2) return {redis.call('hgetall', 'p:h'), false}",
        "redis.setresp(4)",
        "return redis.setresp('x')",
        "local ok, e = pcall(redis.setresp, 5) return e",
        "return {double=3.5}",
        "return {double=0.1}",
        "return {double=-1e300}",
        "return {map={a=1}}",
        "return {map={a={map={b=2}}}}",
        "return {set={a=true}}",
        "return {big_number='123'}",
        "return {verbatim_string={format='txt', string='hi'}}",
    ];
    let mut differences = Vec::new();
    for resp in ["2", "3"] {
        if resp == "3" {
            call(&mut pkv, &["HELLO", "3"]);
            call(&mut direct, &["HELLO", "3"]);
        }
        for script in scripts {
            let args = ["EVAL", script, "0"];
            let (ours, theirs) = (call(&mut pkv, &args), call(&mut direct, &args));
            if ours != theirs {
                differences.push(format!(
                    "RESP{resp} {script}\n  pkv:   {ours:?}\n  redis: {theirs:?}"
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} difference(s):\n{}",
        differences.len(),
        differences.join("\n")
    );
}
