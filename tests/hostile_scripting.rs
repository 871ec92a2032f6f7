//! Hostile scripts on the embedded store: every way out of the sandbox and out of the
//! account's namespace that a script can try, loops and allocation bombs, and what the
//! client sees for each. The boundary is not the sandbox: every `redis.call` is Rust that
//! runs the command through the request path's key location and namespacing, so whatever
//! a script does to its globals, names it builds or reads from ARGV land in its own
//! namespace.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{credited, pkv_balance, Issuer, PkvConfig, RespConn};
use pkv::namespace::Namespace;

fn call(conn: &mut RespConn, args: &[&str]) -> String {
    conn.call_text(args)
}

fn eval(conn: &mut RespConn, script: &str, argv: &[&str]) -> String {
    let mut args = vec!["EVAL", script, "0"];
    args.extend_from_slice(argv);
    conn.call_text(&args)
}

/// Runs `script` for the account `token` opens, on a connection of its own in a thread of its
/// own; its reply and how long it took arrive on the receiver.
fn eval_apart(port: u16, token: &str, script: &str) -> mpsc::Receiver<(String, Duration)> {
    let (token, script) = (token.to_owned(), script.to_owned());
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let mut conn = RespConn::connect(port);
        conn.call(&[b"AUTH", token.as_bytes()]);
        let started = Instant::now();
        let reply = eval(&mut conn, &script, &[]);
        let _ = done.send((reply, started.elapsed()));
    });
    result
}

/// pkv on its embedded store with `PKV_SCRIPT_TIME_LIMIT` at 500 ms, tenant A's token, and
/// tenant B's connection, B holding the key `k` (`v`): for scripts of A that must not stall B.
fn a_tenant_and_another_holding_k() -> (common::Server, String, RespConn) {
    let issuer = Issuer::new();
    let server = PkvConfig::embedded(&issuer)
        .set("PKV_SCRIPT_TIME_LIMIT", "500")
        .start();
    let (token_a, token_b) = (issuer.token(1000), issuer.token(1000));
    let mut b = server.resp_authed(&token_b);
    call(&mut b, &["SET", "k", "v"]);
    (server, token_a, b)
}

/// The key prefix of the account `token` opens, as the store holds its keys.
fn prefix_of(server: &common::Server, token: &str) -> String {
    let mut con = server.client(token);
    let account = pkv_balance(&mut con)["account"].clone();
    String::from_utf8(Namespace::new(&account).prefix().to_vec()).unwrap()
}

#[test]
fn the_sandbox_has_no_way_to_the_process() {
    let issuer = Issuer::new();
    let server = PkvConfig::embedded(&issuer).start();
    let mut a = server.resp_authed(&issuer.token(1000));
    for name in [
        "io", "os", "debug", "package", "require", "dofile", "loadfile", "module", "setfenv",
        "getfenv", "newproxy", "print", "load",
    ] {
        let reply = eval(&mut a, &format!("return type({name})"), &[]);
        assert!(
            reply.starts_with(&format!(
                "-ERR user_script:1: Script attempted to access nonexistent global variable '{name}'"
            )),
            "{name}: {reply:?}"
        );
    }
    // Reaching for them through the globals table, raw, finds nothing either.
    assert_eq!(eval(&mut a, "return rawget(_G, 'os')", &[]), "$-1\r\n");
    assert_eq!(eval(&mut a, "return rawget(_G, 'io')", &[]), "$-1\r\n");
    // No bytecode: string.dump is gone and loadstring takes source text only.
    assert_eq!(eval(&mut a, "return string.dump", &[]), "$-1\r\n");
    assert_eq!(
        eval(&mut a, "return loadstring(string.char(27) .. 'LuaQ')", &[]),
        "$-1\r\n"
    );
    assert_eq!(
        eval(&mut a, "return loadstring('return 7')()", &[]),
        ":7\r\n"
    );
    // The globals' metatable is protected: it cannot be read or taken away.
    assert_eq!(eval(&mut a, "return getmetatable(_G)", &[]), "$-1\r\n");
    let reply = eval(&mut a, "setmetatable(_G, nil)", &[]);
    assert!(
        reply.contains("cannot change a protected metatable"),
        "{reply:?}"
    );
    let reply = eval(&mut a, "x = 1", &[]);
    assert!(
        reply.contains("Attempt to modify a readonly table"),
        "{reply:?}"
    );
}

#[test]
fn nothing_a_script_leaves_reaches_another_run() {
    let issuer = Issuer::new();
    let server = PkvConfig::embedded(&issuer).start();
    let mut a = server.resp_authed(&issuer.token(1000));
    let mut b = server.resp_authed(&issuer.token(1000));
    let planted = "rawset(_G, 'leak', 'secret') string.upper = function() return 'pwned' end \
                   redis.call = function() return 'hijacked' end return 1";
    assert_eq!(eval(&mut a, planted, &[]), ":1\r\n");
    assert_eq!(eval(&mut b, "return rawget(_G, 'leak')", &[]), "$-1\r\n");
    assert_eq!(eval(&mut b, "return string.upper('x')", &[]), "$1\r\nX\r\n");
    assert_eq!(
        eval(&mut b, "return redis.call('set', 'k', 'v')", &[]),
        "+OK\r\n"
    );
    assert_eq!(eval(&mut a, "return rawget(_G, 'leak')", &[]), "$-1\r\n");
}

#[test]
fn names_a_script_builds_land_in_its_own_namespace() {
    let issuer = Issuer::new();
    let server = PkvConfig::embedded(&issuer).start();
    let (token_a, token_b) = (issuer.token(1000), issuer.token(1000));
    let mut a = server.resp_authed(&token_a);
    let mut b = server.resp_authed(&token_b);
    let prefix_b = prefix_of(&server, &token_b);
    let account_b = prefix_b
        .trim_start_matches("pkv:t:")
        .trim_end_matches(':')
        .to_owned();
    assert_eq!(call(&mut b, &["SET", "k", "original"]), "+OK\r\n");
    let credited_before = credited(&pkv_balance(&mut server.client(&token_b)));

    // From ARGV, built inside Lua, through a wrapped or stashed redis.call, and with the
    // ledger's own prefix: every one writes A's key of that name.
    let attempts: &[(&str, &[&str])] = &[
        ("return redis.call('set', ARGV[1], 'stolen')", &[&format!("{prefix_b}k")]),
        (
            "return redis.call('set', 'pkv:t:' .. ARGV[1] .. ':k', 'stolen')",
            &[&account_b],
        ),
        (
            "local c = redis.call redis.call = function(...) return c(...) end \
             return redis.call('set', ARGV[1], 'stolen')",
            &[&format!("{prefix_b}k")],
        ),
        (
            "local ok, r = pcall(redis.call, 'set', ARGV[1], 'stolen') return r",
            &[&format!("{prefix_b}k")],
        ),
        (
            "return redis.call('mset', ARGV[1], 'stolen', 'pkv:ledger:balance:' .. ARGV[2], '999999')",
            &[&format!("{prefix_b}k"), &account_b],
        ),
        (
            "return redis.call('rename', 'mine', ARGV[1])",
            &[&format!("{prefix_b}k")],
        ),
    ];
    assert_eq!(call(&mut a, &["SET", "mine", "x"]), "+OK\r\n");
    for (script, argv) in attempts {
        let reply = eval(&mut a, script, argv);
        assert_eq!(reply, "+OK\r\n", "{script}");
    }
    assert_eq!(call(&mut b, &["GET", "k"]), "$8\r\noriginal\r\n");
    assert_eq!(call(&mut b, &["DBSIZE"]), ":1\r\n");
    assert_eq!(
        credited(&pkv_balance(&mut server.client(&token_b))),
        credited_before,
        "B's credit did not move"
    );
    assert_eq!(credited_before, "1000.000000000");
    // A sees what it wrote under the names it gave (the last attempt renamed its `mine`
    // there).
    assert_eq!(
        call(&mut a, &["GET", &format!("{prefix_b}k")]),
        "$1\r\nx\r\n"
    );
    let keys = eval(&mut a, "return redis.call('keys', '*')", &[]);
    assert!(keys.contains("pkv:ledger:balance:"), "{keys:?}");
    assert!(!keys.contains(&format!("pkv:t:{}", "pkv:t:")), "{keys:?}");
}

#[test]
fn a_script_reads_only_its_own_keys_and_names() {
    let issuer = Issuer::new();
    let server = PkvConfig::embedded(&issuer).start();
    let (token_a, token_b) = (issuer.token(1000), issuer.token(1000));
    let mut a = server.resp_authed(&token_a);
    let mut b = server.resp_authed(&token_b);
    let prefix_b = prefix_of(&server, &token_b);
    call(&mut b, &["SET", "secret", "b's"]);
    call(&mut a, &["SET", "a1", "1"]);
    call(&mut a, &["SET", "a2", "2"]);
    // Other tenants' names read as the caller's own (absent) keys.
    let read = format!("return redis.call('get', '{prefix_b}secret')");
    assert_eq!(eval(&mut a, &read, &[]), "$-1\r\n");
    // Replies carrying key names carry the caller's names, unprefixed.
    let keys = eval(
        &mut a,
        "local k = redis.call('keys', '*') table.sort(k) return k",
        &[],
    );
    assert_eq!(keys, "*2\r\n$2\r\na1\r\n$2\r\na2\r\n");
    // The namespace walks and anything pkv answers itself are not for scripts.
    for (script, name) in [
        ("return redis.call('scan', 0)", "scan"),
        ("return redis.call('randomkey')", "randomkey"),
        ("return redis.call('flushdb')", "flushdb"),
        ("return redis.call('pkv.balance')", "pkv.balance"),
        ("return redis.call('subscribe', 'ch')", "subscribe"),
        ("return redis.call('multi')", "multi"),
        (
            "return redis.call('evalsha', 'ffffffffffffffffffffffffffffffffffffffff', 0)",
            "evalsha",
        ),
    ] {
        let reply = eval(&mut a, script, &[]);
        assert!(
            reply.starts_with("-ERR This Redis command is not allowed from script"),
            "{name}: {reply:?}"
        );
    }
    for name in ["config", "debug", "monitor", "flushall"] {
        let reply = eval(&mut a, &format!("return redis.call('{name}', 'x')"), &[]);
        assert!(
            reply.starts_with("-ERR command '")
                || reply.starts_with("-ERR This Redis command")
                || reply.starts_with("-ERR Unknown Redis command called from script"),
            "{name}: {reply:?}"
        );
        assert!(!reply.starts_with("+OK"), "{name}");
    }
    assert_eq!(call(&mut b, &["GET", "secret"]), "$3\r\nb's\r\n");
    // Blocking commands are refused, as Redis refuses them in scripts.
    let reply = eval(&mut a, "return redis.call('blpop', 'q', 0)", &[]);
    assert!(
        reply.starts_with("-ERR This Redis command is not allowed from script"),
        "{reply:?}"
    );
}

#[test]
fn loops_are_stopped_and_other_tenants_are_served_during_and_after() {
    let (server, token_a, mut b) = a_tenant_and_another_holding_k();
    for script in [
        "while true do end",
        "while true do pcall(function() while true do end end) end",
        "local i = 0 while true do i = i + 1 local ok = pcall(error, 'x') end",
    ] {
        let looping = eval_apart(server.port, &token_a, script);
        // While it loops: B's PING is answered at once, its GET as soon as the script
        // is stopped.
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        assert_eq!(call(&mut b, &["PING"]), "+PONG\r\n");
        assert!(started.elapsed() < Duration::from_millis(300));
        assert_eq!(call(&mut b, &["GET", "k"]), "$1\r\nv\r\n");
        assert!(started.elapsed() < Duration::from_secs(3));
        let (reply, took) = looping.recv().unwrap();
        assert_eq!(
            reply, "-ERR script stopped: it ran past PKV_SCRIPT_TIME_LIMIT (500 ms)\r\n",
            "{script}"
        );
        assert!(took < Duration::from_secs(3), "{script}: {took:?}");
        assert_eq!(call(&mut b, &["GET", "k"]), "$1\r\nv\r\n");
    }
    // A script that wrote before looping is stopped too; what it wrote stays (see
    // docs/security.md: pkv gives up the script's atomicity rather than the store).
    let mut a = server.resp_authed(&token_a);
    let reply = eval(&mut a, "redis.call('set', 'w', '1') while true do end", &[]);
    assert!(reply.starts_with("-ERR script stopped"), "{reply:?}");
    assert_eq!(call(&mut a, &["GET", "w"]), "$1\r\n1\r\n");
}

#[test]
fn allocation_bombs_are_stopped() {
    let issuer = Issuer::new();
    let server = PkvConfig::embedded(&issuer)
        .set("PKV_SCRIPT_TIME_LIMIT", "60000")
        // Each bomb runs seconds in a debug build: A's share of the store's time would
        // make each next one wait longer than a reply is waited for (script_fairness.rs).
        .set("PKV_SCRIPT_BUDGET_MS", "0")
        .start();
    let mut a = server.resp_authed(&issuer.token(1000));
    let mut b = server.resp_authed(&issuer.token(1000));
    for bomb in [
        "return string.rep('x', 2^30)",
        "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1048576) .. i end",
        "local s = 'x' while true do s = s .. s end",
        "local t = {} while true do t[#t + 1] = {} end",
        "return string.gsub(string.rep('x', 512), 'x', string.rep('y', 1048576))",
        "return string.gsub(string.rep('x', 512), 'x', {x = string.rep('y', 1048576)})",
        "return string.gsub(string.rep('x', 1048576), 'x*', string.rep('%0', 1048576))",
    ] {
        let reply = eval(&mut a, bomb, &[]);
        assert!(
            reply.starts_with("-ERR script stopped: it used more than 67108864 bytes"),
            "{bomb}: {reply:?}"
        );
        assert_eq!(call(&mut b, &["PING"]), "+PONG\r\n");
    }
    assert_eq!(eval(&mut a, "return 1", &[]), ":1\r\n");
}

#[test]
fn script_kill_stops_the_accounts_own_script_before_it_writes() {
    let issuer = Issuer::new();
    let server = PkvConfig::embedded(&issuer)
        .set("PKV_SCRIPT_TIME_LIMIT", "3000")
        .start();
    let (token_a, token_b) = (issuer.token(1000), issuer.token(1000));
    let mut a = server.resp_authed(&token_a);
    let mut b = server.resp_authed(&token_b);
    assert_eq!(
        call(&mut a, &["SCRIPT", "KILL"]),
        "-NOTBUSY No scripts in execution right now.\r\n"
    );
    // Runs `script` on a connection of its own and sends A's SCRIPT KILL until the script
    // runs; returns the KILL's answer and the script's reply and run time.
    let kill_while_running = |a: &mut RespConn, script: &str| {
        let (port, token, owned) = (server.port, token_a.clone(), script.to_owned());
        let looping = std::thread::spawn(move || {
            let mut conn = RespConn::connect(port);
            conn.call(&[b"AUTH", token.as_bytes()]);
            let started = Instant::now();
            (eval(&mut conn, &owned, &[]), started.elapsed())
        });
        let mut answer = String::new();
        common::wait_until("the script runs", || {
            answer = call(a, &["SCRIPT", "KILL"]);
            answer != "-NOTBUSY No scripts in execution right now.\r\n" || looping.is_finished()
        });
        (answer, looping)
    };
    // A script that has not written is stopped at once.
    let (answer, looping) = kill_while_running(&mut a, "while true do end");
    assert_eq!(answer, "+OK\r\n");
    let (reply, took) = looping.join().unwrap();
    assert_eq!(reply, "-ERR Script killed by user with SCRIPT KILL...\r\n");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    // One that has written is UNKILLABLE, and another tenant cannot touch it. A KILL can
    // reach it before its first write (then it is stopped and wrote nothing): try again.
    for attempt in 0.. {
        assert!(attempt < 5, "every KILL came before the script's write");
        let (answer, looping) =
            kill_while_running(&mut a, "redis.call('set', 'x', '1') while true do end");
        if answer == "+OK\r\n" {
            let (reply, _) = looping.join().unwrap();
            assert_eq!(reply, "-ERR Script killed by user with SCRIPT KILL...\r\n");
            assert_eq!(
                call(&mut a, &["GET", "x"]),
                "$-1\r\n",
                "killed after its write"
            );
            continue;
        }
        assert!(
            answer.starts_with("-UNKILLABLE Sorry the script already executed write commands"),
            "{answer:?}"
        );
        assert_eq!(
            call(&mut b, &["SCRIPT", "KILL"]),
            "-NOTBUSY No scripts in execution right now.\r\n"
        );
        let (reply, _) = looping.join().unwrap();
        assert!(
            reply.starts_with("-ERR script stopped: it ran past"),
            "{reply:?}"
        );
        break;
    }
}

#[test]
fn recursion_and_cycles_end_in_an_error_not_a_crash() {
    let issuer = Issuer::new();
    let server = PkvConfig::embedded(&issuer).start();
    let mut a = server.resp_authed(&issuer.token(1000));
    for script in [
        "local function f(n) return f(n + 1) + 1 end return f(1)",
        "local t = setmetatable({}, {__index = function(t, k) return t[k .. 'x'] end}) return t.a",
        "local t = {} t[1] = t return cjson.encode(t)",
        "return cjson.decode(string.rep('[', 100000))",
        "local t = {} t[1] = t return cmsgpack.unpack(string.rep(string.char(0x91), 100000))",
        "local s = '' for i = 1, 200 do s = 'loadstring(\"' .. s .. '\")' end return loadstring(s)",
        "return string.find(string.rep('a', 300000), string.rep('a?', 150000) .. string.rep('a', 150000))",
        "return ('x'):rep(100000):match(('.-'):rep(100000))",
        "return string.gsub(string.rep('a', 100000), string.rep('(a)', 30) .. string.rep('a*', 100000), '%1')",
    ] {
        let reply = eval(&mut a, script, &[]);
        assert!(
            reply.starts_with('-') || reply.starts_with('$') || reply.starts_with('*'),
            "{script}: {reply:?}"
        );
        assert_eq!(eval(&mut a, "return 1", &[]), ":1\r\n", "{script}");
    }
    // Patterns nest up to 200 deep (Lua 5.2's bound on its matcher's recursion); deeper
    // ends in Lua's own error. Long patterns that do not nest have no bound.
    let reply = eval(
        &mut a,
        "return {string.find(string.rep('a', 5000), string.rep('a?', 190))}",
        &[],
    );
    assert_eq!(reply, "*2\r\n:1\r\n:190\r\n");
    let reply = eval(
        &mut a,
        "return {string.find(string.rep('a', 5000), string.rep('a?', 512))}",
        &[],
    );
    assert!(reply.contains("pattern too complex"), "{reply:?}");
    let reply = eval(
        &mut a,
        "return ('x'):rep(10):match(('.-'):rep(190) .. 'x')",
        &[],
    );
    assert_eq!(reply, "$1\r\nx\r\n");
    let reply = eval(&mut a, "return ('x'):rep(1025):find(('.'):rep(1025))", &[]);
    assert_eq!(reply, ":1\r\n");
    // A cycle in a reply is cut off, as pkv converts only so deep.
    let reply = eval(&mut a, "local t = {} t[1] = t return t", &[]);
    assert!(reply.starts_with("*1\r\n*1\r\n"), "{reply:?}");
    assert!(server.is_running());
}

#[test]
fn backtracking_patterns_are_stopped_and_other_tenants_are_served() {
    let (server, token_a, mut b) = a_tenant_and_another_holding_k();
    // Each of these backtracks for hours inside one call of the pattern matcher.
    for script in [
        "return (('x'):rep(5000)):match(('.-'):rep(150) .. 'y')",
        "return (('x'):rep(5000)):find(('x*'):rep(150) .. 'y')",
        "return (('x'):rep(5000)):gsub(('.-'):rep(100) .. 'y', '')",
        "for a in (('x'):rep(5000)):gmatch(('.-'):rep(100) .. 'y') do end",
        "return pcall(string.match, ('x'):rep(5000), ('(.-)'):rep(30) .. 'y')",
    ] {
        let (reply, took) = eval_apart(server.port, &token_a, script)
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{script}: still running after 10 s"));
        assert_eq!(
            reply, "-ERR script stopped: it ran past PKV_SCRIPT_TIME_LIMIT (500 ms)\r\n",
            "{script}"
        );
        assert!(took < Duration::from_secs(3), "{script}: {took:?}");
        let started = Instant::now();
        assert_eq!(call(&mut b, &["GET", "k"]), "$1\r\nv\r\n");
        assert!(started.elapsed() < Duration::from_millis(300));
    }
    // A plain search is linear: Lua's own compares the text at every place its first
    // byte occurs, here 2,000,000 times 2,000,000 bytes.
    let plain = "return string.find(string.rep('a', 4000000), \
                 string.rep('a', 2000000) .. 'b', 1, true)";
    let (reply, _) = eval_apart(server.port, &token_a, plain)
        .recv_timeout(Duration::from_secs(10))
        .expect("a plain find still running after 10 s");
    assert_eq!(reply, "$-1\r\n");
    // Long patterns are not refused; ones that nest too deep end in Lua's own error, at
    // once.
    let mut a = server.resp_authed(&token_a);
    assert_eq!(
        eval(
            &mut a,
            "return #(('a'):rep(3000)):match(('a'):rep(3000))",
            &[]
        ),
        ":3000\r\n"
    );
    let reply = eval(
        &mut a,
        "return (('x'):rep(5000)):match(('.-'):rep(500) .. 'y')",
        &[],
    );
    assert!(reply.contains("pattern too complex"), "{reply:?}");
    let reply = eval(&mut a, "return ('x'):match(('('):rep(40))", &[]);
    assert!(reply.contains("too many captures"), "{reply:?}");
    assert_eq!(
        eval(
            &mut a,
            "local ok, e = pcall(string.find, 'a', '%') return type(e) .. ' ' .. tostring(e)",
            &[]
        ),
        "$40\r\nstring malformed pattern (ends with '%')\r\n"
    );
}

/// Scripts queued in one transaction share one time limit: EXEC runs them under one hold of
/// the whole store, so ten looping scripts must not hold it ten times the limit while the
/// other tenants wait.
#[test]
fn the_scripts_of_one_transaction_share_the_time_limit() {
    const SCRIPTS: usize = 10;
    let (server, token_a, mut b) = a_tenant_and_another_holding_k();
    let port = server.port;
    let exec = std::thread::spawn(move || {
        let mut a = RespConn::connect(port);
        a.call(&[b"AUTH", token_a.as_bytes()]);
        call(&mut a, &["MULTI"]);
        for _ in 0..SCRIPTS {
            assert_eq!(eval(&mut a, "while true do end", &[]), "+QUEUED\r\n");
        }
        let started = Instant::now();
        let reply = call(&mut a, &["EXEC"]);
        (reply, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(call(&mut b, &["GET", "k"]), "$1\r\nv\r\n");
    let waited = started.elapsed();
    let (reply, took) = exec.join().unwrap();
    assert!(reply.starts_with("*10\r\n-ERR script stopped"), "{reply:?}");
    assert!(
        took < Duration::from_millis(2500),
        "EXEC held the store {took:?} for {SCRIPTS} scripts of a 500 ms limit"
    );
    assert!(waited < Duration::from_millis(2500), "B waited {waited:?}");
}
