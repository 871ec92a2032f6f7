//! Scripting on an upstream Redis: the script runs inside the real redis-server, wrapped
//! so that its keys land in the caller's namespace, on a connection authenticated as the
//! account's own ACL user. What a hostile script tries, what the client sees, and what the
//! redis-server holds afterwards (read on it directly); TTLs, payment, NOSCRIPT across
//! tenants, redis-py's Lock, and the time limit.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::time::{Duration, Instant};

use common::{pkv_balance, run_python_app, Issuer, PkvConfig, Redis, RespConn, Server};
use pkv::namespace::Namespace;

fn upstream(extra: &[&str]) -> (Redis, Server, Issuer) {
    let issuer = Issuer::new();
    let redis = Redis::start_with(extra);
    let server = PkvConfig::new(&redis, &issuer)
        .set("PKV_BALANCE_INTERVAL_MS", "0")
        .start();
    (redis, server, issuer)
}

fn eval(conn: &mut RespConn, script: &str, keys: &[&str], argv: &[&str]) -> String {
    let n = keys.len().to_string();
    let mut args = vec!["EVAL", script, n.as_str()];
    args.extend_from_slice(keys);
    args.extend_from_slice(argv);
    conn.call_text(&args)
}

/// The key prefix of the account `token` opens.
fn prefix_of(server: &Server, token: &str) -> String {
    let mut con = server.client(token);
    let account = pkv_balance(&mut con)["account"].clone();
    String::from_utf8(Namespace::new(&account).prefix().to_vec()).unwrap()
}

/// Every key on the redis-server with its PTTL.
fn all_keys(redis: &Redis) -> Vec<(Vec<u8>, i64)> {
    let mut direct = redis.direct();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut direct).unwrap();
    keys.into_iter()
        .map(|k| {
            let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut direct).unwrap();
            (k, ttl)
        })
        .collect()
}

#[test]
fn scripts_run_inside_redis_in_the_callers_namespace() {
    let (redis, server, issuer) = upstream(&[]);
    let token = issuer.token(1000);
    let prefix = prefix_of(&server, &token);
    let mut a = server.resp_authed(&token);
    assert_eq!(
        eval(
            &mut a,
            "return redis.call('set', KEYS[1], ARGV[1])",
            &["k"],
            &["v"]
        ),
        "+OK\r\n"
    );
    assert_eq!(
        eval(
            &mut a,
            "return {KEYS[1], ARGV[1], #KEYS, #ARGV}",
            &["k"],
            &["x"]
        ),
        "*4\r\n$1\r\nk\r\n$1\r\nx\r\n:1\r\n:1\r\n"
    );
    assert_eq!(a.call_text(&["GET", "k"]), "$1\r\nv\r\n");
    let mut direct = redis.direct();
    let held: Option<String> = redis::cmd("GET")
        .arg(format!("{prefix}k"))
        .query(&mut direct)
        .unwrap();
    assert_eq!(held.as_deref(), Some("v"));
    // Names from ARGV or built in Lua are the caller's too; replies carry them bare.
    eval(
        &mut a,
        "redis.call('rpush', 'q:' .. ARGV[1], 'job') return 1",
        &[],
        &["7"],
    );
    assert_eq!(
        eval(
            &mut a,
            "return redis.call('lmpop', 2, 'q:6', 'q:7', 'LEFT')",
            &[],
            &[]
        ),
        "*2\r\n$3\r\nq:7\r\n*1\r\n$3\r\njob\r\n"
    );
    // BullMQ's way: redis.call kept in a local, names built from a prefix in ARGV,
    // cmsgpack and cjson from Redis's own Lua.
    let bull = "local rcall = redis.call \
        local jobKey = ARGV[1] .. 'job:' .. ARGV[2] \
        rcall('hset', jobKey, 'data', cmsgpack.pack({ARGV[3]})) \
        rcall('zadd', ARGV[1] .. 'delayed', 5, ARGV[2]) \
        return {cmsgpack.unpack(rcall('hget', jobKey, 'data'))[1], cjson.encode(rcall('zrange', ARGV[1] .. 'delayed', 0, -1))}";
    assert_eq!(
        eval(&mut a, bull, &[], &["bull:q:", "7", "payload"]),
        "*2\r\n$7\r\npayload\r\n$5\r\n[\"7\"]\r\n"
    );
    let mut direct = redis.direct();
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("{prefix}bull:q:job:7"))
        .arg(format!("{prefix}bull:q:delayed"))
        .query(&mut direct)
        .unwrap();
    assert_eq!(exists, 2);
    // A read-only script reads, and cannot write.
    assert_eq!(
        a.call_text(&["EVAL_RO", "return redis.call('get', KEYS[1])", "1", "k"]),
        "$1\r\nv\r\n"
    );
    assert!(a
        .call_text(&["EVAL_RO", "return redis.call('del', KEYS[1])", "1", "k"])
        .starts_with("-ERR Write commands are not allowed from read-only scripts."));
    // Errors name the caller's script and its line, as Redis does.
    let script = "local x = 1\nreturn redis.call('nosuch')";
    let sha = pkv::scripting::sha1hex(script.as_bytes());
    assert_eq!(
        eval(&mut a, script, &[], &[]),
        format!(
            "-ERR Unknown Redis command called from script script: {sha}, on @user_script:2.\r\n"
        )
    );
}

#[test]
fn evalsha_uses_the_accounts_own_scripts_and_survives_a_flushed_upstream() {
    let (redis, server, issuer) = upstream(&[]);
    let mut a = server.resp_authed(&issuer.token(1000));
    let mut b = server.resp_authed(&issuer.token(1000));
    let loaded = a.call_text(&["SCRIPT", "LOAD", "return redis.call('incr', KEYS[1])"]);
    let sha = loaded.lines().nth(1).unwrap().to_owned();
    assert_eq!(a.call_text(&["EVALSHA", &sha, "1", "n"]), ":1\r\n");
    // B never loaded it: NOSCRIPT, though the upstream holds the wrapped script.
    assert_eq!(
        b.call_text(&["EVALSHA", &sha, "1", "n"]),
        "-NOSCRIPT No matching script. Please use EVAL.\r\n"
    );
    assert_eq!(b.call_text(&["SCRIPT", "EXISTS", &sha]), "*1\r\n:0\r\n");
    // The upstream forgets its scripts: pkv sends the wrapped text again.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut redis.direct())
        .unwrap();
    assert_eq!(a.call_text(&["EVALSHA", &sha, "1", "n"]), ":2\r\n");
    assert_eq!(a.call_text(&["SCRIPT", "FLUSH"]), "+OK\r\n");
    assert!(a
        .call_text(&["EVALSHA", &sha, "1", "n"])
        .starts_with("-NOSCRIPT"));
}

#[test]
fn hostile_scripts_stay_in_their_namespace() {
    let (redis, server, issuer) = upstream(&[]);
    let (ta, tb) = (issuer.token(1000), issuer.token(1000));
    let (pa, pb) = (prefix_of(&server, &ta), prefix_of(&server, &tb));
    let mut a = server.resp_authed(&ta);
    let mut b = server.resp_authed(&tb);
    assert_eq!(b.call_text(&["SET", "secret", "b's"]), "+OK\r\n");
    let other = format!("{pb}secret");
    let attempts: &[(&str, &[&str])] = &[
        ("return redis.call('set', ARGV[1], 'stolen')", &[other.as_str()]),
        ("return _G.redis.call('set', ARGV[1], 'stolen')", &[other.as_str()]),
        ("return rawget(_G, 'redis').call('set', ARGV[1], 'stolen')", &[other.as_str()]),
        ("local r = _G['red' .. 'is'] return r.call('set', ARGV[1], 'stolen')", &[other.as_str()]),
        ("local mt = getmetatable(_G) return tostring(mt)", &[]),
        ("return loadstring('return redis')().call('set', ARGV[1], 'stolen')", &[other.as_str()]),
        ("return load(function() return nil end)", &[]),
        ("local p = string.sub(ARGV[1], 1, 6) return redis.call('set', p .. ARGV[2] .. ':secret', 'stolen')", &[other.as_str(), "x"]),
        ("return redis.call('set', 'pkv:ledger:credit', '999999')", &[]),
        ("return redis.pcall('eval', 'return 1', 0)", &[]),
        ("return redis.call('keys', '*')", &[]),
        ("return redis.call('scan', 0)", &[]),
        ("return redis.call('flushall')", &[]),
        ("return redis.call('config', 'set', 'maxmemory', '1')", &[]),
        ("return redis.call('acl', 'setuser', 'x')", &[]),
        ("return redis.call('select', 1)", &[]),
        ("return redis.call('move', 'k', 1)", &[]),
        ("return redis.call('copy', 'k', ARGV[1])", &[other.as_str()]),
        ("return redis.call('sort', ARGV[1])", &[other.as_str()]),
        ("local c = redis.call c('set', ARGV[1], 'stolen') return 1", &[other.as_str()]),
        ("local t = {} for k in pairs(_G) do t[#t+1] = k end return t", &[]),
        ("redis.call = nil return _G.redis.call('get', ARGV[1])", &[other.as_str()]),
        ("setmetatable(_G, {}) return 1", &[]),
        ("rawset(_G, 'redis', 1) return 1", &[]),
        ("return redis.call('set', KEYS[1], 'x')", &[]),
    ];
    let mut seen = Vec::new();
    for (script, argv) in attempts {
        seen.push(format!(
            "{script}\n  -> {:?}",
            eval(&mut a, script, &[], argv)
        ));
    }
    // B's key is as B left it, on the redis-server itself.
    let held: Option<String> = redis::cmd("GET")
        .arg(&other)
        .query(&mut redis.direct())
        .unwrap();
    assert_eq!(held.as_deref(), Some("b's"), "{}", seen.join("\n"));
    assert_eq!(b.call_text(&["GET", "secret"]), "$3\r\nb's\r\n");
    // Every key on the server is one of the two tenants' or pkv's ledger, and the ledger
    // holds no key the script named.
    for (key, _) in all_keys(&redis) {
        let key = String::from_utf8_lossy(&key).into_owned();
        assert!(
            key.starts_with(&pa) || key.starts_with(&pb) || key.starts_with("pkv:ledger:"),
            "{key}\n{}",
            seen.join("\n")
        );
        assert_ne!(key, "pkv:ledger:credit");
    }
    // What A's scripts wrote has a TTL, and no run's record of its writes is left.
    for (key, ttl) in all_keys(&redis) {
        if key.starts_with(pa.as_bytes()) {
            assert!(ttl > 0, "{}: {ttl}", String::from_utf8_lossy(&key));
            assert!(!key.windows(18).any(|w| w == b"pkv-script-writes:"));
        }
    }
    // The names A aimed at B exist only inside A's namespace.
    let mut direct = redis.direct();
    let inside: Option<String> = redis::cmd("GET")
        .arg(format!("{pa}{other}"))
        .query(&mut direct)
        .unwrap();
    assert_eq!(inside.as_deref(), Some("stolen"), "{}", seen.join("\n"));
    println!("{}", seen.join("\n"));
}

#[test]
fn the_acl_user_confines_a_script_that_escapes_the_wrapper() {
    let (redis, server, issuer) = upstream(&[]);
    let (ta, tb) = (issuer.token(1000), issuer.token(1000));
    let (pa, pb) = (prefix_of(&server, &ta), prefix_of(&server, &tb));
    let mut a = server.resp_authed(&ta);
    assert_eq!(
        eval(&mut a, "return redis.call('set', 'k', 'v')", &[], &[]),
        "+OK\r\n"
    );
    let id = pa.trim_start_matches("pkv:t:").trim_end_matches(':');
    let user = format!("pkv-{id}");
    let mut direct = redis.direct();
    // The script ran on a connection authenticated as A's user (it is kept idle).
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut direct).unwrap();
    assert!(clients.contains(&format!("user={user} ")), "{clients}");
    // What Redis itself would let that user do, whatever Lua runs.
    let dry = |args: &[&str]| -> String {
        let reply: redis::RedisResult<String> = redis::cmd("ACL")
            .arg("DRYRUN")
            .arg(&user)
            .arg(args)
            .query(&mut redis.direct());
        match reply {
            Ok(ok) => ok,
            Err(e) => format!("{e}"),
        }
    };
    assert_eq!(dry(&["SET", &format!("{pa}x"), "v"]), "OK");
    let other = format!("{pb}secret");
    for attempt in [
        vec!["SET", other.as_str(), "v"],
        vec!["GET", "pkv:ledger:credit"],
        vec!["EVAL", "return 1", "1", other.as_str()],
        vec!["SCAN", "0"],
        vec!["KEYS", "*"],
        vec!["RANDOMKEY"],
        vec!["DBSIZE"],
        vec!["SELECT", "1"],
        vec!["FLUSHALL"],
        vec!["CONFIG", "SET", "maxmemory", "1"],
        vec!["SCRIPT", "FLUSH"],
        vec!["PUBLISH", "c", "m"],
        vec!["ACL", "SETUSER", "x"],
    ] {
        let reply = dry(&attempt);
        assert!(reply.contains("no permissions"), "{attempt:?} -> {reply}");
    }
}

#[test]
fn every_key_a_script_writes_has_a_ttl() {
    let (redis, server, issuer) = upstream(&[]);
    let token = issuer.token(1000);
    let prefix = prefix_of(&server, &token);
    let mut a = server.resp_authed(&token);
    let script = "redis.call('set', KEYS[1], 'v') \
        redis.call('hset', 'undeclared', 'f', 'v') \
        redis.call('incr', 'n') \
        redis.call('set', 'kept', 'v') redis.call('persist', 'kept') \
        redis.call('set', 'long', 'v') redis.call('expire', 'long', 999999999) \
        redis.call('rpush', 'q:' .. ARGV[1], 'x') \
        redis.call('zadd', 'z', 1, 'm') redis.call('zunionstore', 'zu', 1, 'z') \
        return 1";
    assert_eq!(eval(&mut a, script, &["declared"], &["9"]), ":1\r\n");
    let max_ms = 365 * 86_400 * 1000; // PKV_MAX_TTL's default
    let mine: Vec<_> = all_keys(&redis)
        .into_iter()
        .filter(|(k, _)| k.starts_with(prefix.as_bytes()))
        .collect();
    assert_eq!(mine.len(), 8, "{mine:?}");
    for (key, ttl) in mine {
        assert!(
            ttl > 0 && ttl <= max_ms,
            "{}: {ttl}",
            String::from_utf8_lossy(&key)
        );
    }
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
fn a_script_pays_for_the_storage_it_writes() {
    let (_redis, server, issuer) = upstream(&[]);
    let mut plain = server.client(&issuer.token(1000));
    let mut scripted = server.client(&issuer.token(1000));
    let value = "v".repeat(1024 * 1024);
    let before = byte_seconds(&mut plain);
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query(&mut plain)
        .unwrap();
    let plain_paid = byte_seconds(&mut plain) - before;
    let before = byte_seconds(&mut scripted);
    let _: () = redis::cmd("EVAL")
        .arg("return redis.call('set', 'built', string.rep('v', 1024 * 1024))")
        .arg(0)
        .query(&mut scripted)
        .unwrap();
    let scripted_paid = byte_seconds(&mut scripted) - before;
    println!("plain SET paid {plain_paid}, the same write in a script {scripted_paid}");
    assert!(plain_paid >= 1024 * 1024 * 86_000, "{plain_paid}");
    assert_eq!(
        scripted_paid,
        plain_paid + 2 * 86_400,
        "'built' is 2 bytes longer than 'big', for a day"
    );
    // Writing the same key again with the same size buys nothing more.
    let before = byte_seconds(&mut scripted);
    let _: () = redis::cmd("EVAL")
        .arg("return redis.call('set', 'built', string.rep('w', 1024 * 1024), 'KEEPTTL')")
        .arg(0)
        .query(&mut scripted)
        .unwrap();
    assert_eq!(byte_seconds(&mut scripted) - before, 0);
    // A script that raises after writing pays all the same.
    let before = byte_seconds(&mut scripted);
    let reply: redis::RedisResult<()> = redis::cmd("EVAL")
        .arg("redis.call('set', 'then', string.rep('v', 1024 * 1024)) error('after')")
        .arg(0)
        .query(&mut scripted);
    assert!(reply.is_err());
    assert!(byte_seconds(&mut scripted) - before >= plain_paid);
}

#[test]
fn redis_py_lock_excludes_under_contention_on_the_upstream() {
    let (_redis, server, issuer) = upstream(&[]);
    let token = issuer.token(1000);
    let printed = run_python_app("redis_py_lock.py", &[&server.url(&token), "4", "25"]);
    assert_eq!(printed, "100");
}

#[test]
fn a_script_past_the_time_limit_is_killed_before_it_writes() {
    let issuer = Issuer::new();
    let redis = Redis::start_with(&["--busy-reply-threshold", "100"]);
    let server = PkvConfig::new(&redis, &issuer)
        .set("PKV_SCRIPT_TIME_LIMIT", "300")
        .start();
    let mut a = server.resp_authed(&issuer.token(1000));
    let started = Instant::now();
    let reply = eval(&mut a, "while true do end", &[], &[]);
    assert!(
        reply.starts_with("-ERR Script killed by user with SCRIPT KILL"),
        "{reply}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The upstream serves everyone again.
    let mut b = server.resp_authed(&issuer.token(1000));
    assert_eq!(b.call_text(&["SET", "k", "v"]), "+OK\r\n");
}

/// Reads `pkv`'s stderr until a line holds every one of `words`; the lines read so far.
fn stderr_until(pkv: &mut common::Pkv, words: &[&str]) -> Vec<String> {
    use std::io::BufRead;
    let stderr = pkv.child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut said = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
            let found = words.iter().all(|w| line.contains(w));
            said.push(line);
            if found {
                return said;
            }
        }
    }
    panic!("no line with {words:?} in 10 s: {said:?}");
}

#[test]
fn an_upstream_that_refuses_acl_users_refuses_scripts_and_says_so_at_start_up() {
    let issuer = Issuer::new();
    let redis = Redis::start();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-@admin",
        ])
        .query(&mut redis.direct())
        .unwrap();
    let mut config = PkvConfig::new(&redis, &issuer);
    config.upstream = Some(format!("redis://app:pw@127.0.0.1:{}", redis.port));
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = config.command(dir.path());
    cmd.stderr(std::process::Stdio::piped());
    let mut pkv = common::Pkv::spawn(cmd, dir);
    // The redis-server here is 7.0.15: older than the Lua fixes, and it refuses ACL to
    // pkv's user. One line for each.
    let said = stderr_until(&mut pkv, &["scripts will be refused", "NOPERM"]);
    let version = redis_server_version();
    if pkv::scripting::upstream::predates_lua_fixes(&version) {
        assert!(
            said.iter()
                .any(|l| l.contains(&format!("Redis {version}, older than the releases"))),
            "{said:?}"
        );
    }
    let mut a = pkv.resp_authed(&issuer.token(1000));
    let reply = eval(&mut a, "return 1", &[], &[]);
    assert!(
        reply.starts_with("-ERR scripts run on this upstream only as an ACL user of the account's own, and the upstream refused it: NOPERM"),
        "{reply}"
    );
    // Everything else still works.
    assert_eq!(a.call_text(&["SET", "k", "v"]), "+OK\r\n");
}

/// The installed redis-server's version (`redis-server --version`).
fn redis_server_version() -> String {
    let out = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or_default()
        .to_owned()
}

/// EVALSHA through pkv against the same EVALSHA sent to Redis directly, one client, one
/// call at a time (`cargo nextest run --test upstream_scripting evalsha_throughput
/// --run-ignored only --no-capture`).
#[test]
#[ignore]
fn evalsha_throughput() {
    let (redis, server, issuer) = upstream(&[]);
    let mut through = server.client(&issuer.token(1_000_000));
    let mut direct = redis.direct();
    let script = redis::Script::new(
        "local n = redis.call('incr', KEYS[1]) redis.call('expire', KEYS[1], 60) return n",
    );
    let rounds = 3000;
    let rate = |con: &mut redis::Connection| -> f64 {
        let _: i64 = script.key("bench").invoke(con).unwrap();
        let started = Instant::now();
        for _ in 0..rounds {
            let _: i64 = script.key("bench").invoke(con).unwrap();
        }
        f64::from(rounds) / started.elapsed().as_secs_f64()
    };
    let (pkv, redis_direct) = (rate(&mut through), rate(&mut direct));
    let plain = |con: &mut redis::Connection| -> f64 {
        let started = Instant::now();
        for _ in 0..rounds {
            let _: i64 = redis::cmd("INCR").arg("plain").query(con).unwrap();
        }
        f64::from(rounds) / started.elapsed().as_secs_f64()
    };
    let (pkv_incr, direct_incr) = (plain(&mut through), plain(&mut direct));
    println!(
        "EVALSHA: pkv {pkv:.0}/s, redis direct {redis_direct:.0}/s; INCR: pkv {pkv_incr:.0}/s, redis direct {direct_incr:.0}/s"
    );
}

#[test]
fn script_kill_stops_the_accounts_own_script_and_no_other_accounts_kill_does() {
    let issuer = Issuer::new();
    let redis = Redis::start_with(&["--busy-reply-threshold", "100"]);
    let server = PkvConfig::new(&redis, &issuer)
        .set("PKV_SCRIPT_TIME_LIMIT", "60000")
        .start();
    let (ta, tb) = (issuer.token(1000), issuer.token(1000));
    // Every connection authenticates first: while a script runs, Redis answers BUSY to
    // everything else, pkv's ledger included.
    let mut looping = server.resp_authed(&ta);
    let mut b = server.resp_authed(&tb);
    let mut a = server.resp_authed(&ta);
    let runner = std::thread::spawn(move || eval(&mut looping, "while true do end", &[], &[]));
    // Until A's script has started, A's SCRIPT KILL finds nothing to stop.
    let started = Instant::now();
    loop {
        assert_eq!(
            b.call_text(&["SCRIPT", "KILL"]),
            "-NOTBUSY No scripts in execution right now.\r\n"
        );
        if a.call_text(&["SCRIPT", "KILL"]) == "+OK\r\n" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never running");
        std::thread::sleep(Duration::from_millis(10));
    }
    let reply = runner.join().unwrap();
    assert!(
        reply.starts_with("-ERR Script killed by user with SCRIPT KILL"),
        "{reply}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(b.call_text(&["SET", "k", "v"]), "+OK\r\n");
}

/// A script on an upstream holds a connection of its own for as long as it runs, so it
/// counts as one of the account's dedicated connections (`PKV_MAX_DEDICATED_PER_ACCOUNT`),
/// as MULTI and blocking commands do: a tenant running scripts from many connections at once
/// holds at most that many upstream connections, not one per client connection.
#[test]
fn running_scripts_count_against_the_accounts_dedicated_connections() {
    const LIMIT: usize = 3;
    const CLIENTS: usize = 10;
    let issuer = Issuer::new();
    let redis = Redis::start();
    let server = PkvConfig::new(&redis, &issuer)
        .set("PKV_BALANCE_INTERVAL_MS", "0")
        .set("PKV_MAX_DEDICATED_PER_ACCOUNT", &LIMIT.to_string())
        .start();
    let token = issuer.token(1000);
    // Busy for a while inside Redis, which runs one script at a time.
    let busy = "local n = 0 for i = 1, 20000000 do n = n + 1 end return n";
    let mut clients: Vec<RespConn> = (0..CLIENTS).map(|_| server.resp_authed(&token)).collect();
    let eval = format!(
        "*3\r\n$4\r\nEVAL\r\n${}\r\n{busy}\r\n$1\r\n0\r\n",
        busy.len()
    );
    for client in &mut clients {
        client.send(eval.as_bytes());
    }
    // While the scripts run or wait their turn in Redis: the account's script connections.
    let mut direct = redis.direct();
    let mut most = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(500) {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut direct).unwrap();
        most = most.max(list.lines().filter(|l| l.contains(" user=pkv-")).count());
        std::thread::sleep(Duration::from_millis(20));
    }
    let replies: Vec<String> = clients
        .iter_mut()
        .map(|c| String::from_utf8_lossy(&c.reply_within(Duration::from_secs(60))).into_owned())
        .collect();
    let refused = replies
        .iter()
        .filter(|r| r.contains("too many dedicated upstream connections"))
        .count();
    let ran = replies.iter().filter(|r| r.starts_with(':')).count();
    assert!(
        most <= LIMIT,
        "{most} script connections held upstream at once, limit {LIMIT}: {replies:?}"
    );
    assert_eq!(ran + refused, CLIENTS, "{replies:?}");
    assert!(ran >= 1 && refused >= 1, "{replies:?}");
}
