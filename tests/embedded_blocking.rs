//! Blocking commands on the embedded store, through pkv and real clients: a blocked client
//! is woken by another connection's push (lists) or ZADD/ZUNIONSTORE (sorted sets), times out
//! with nil, and a client that leaves while blocked takes nothing with it.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Issuer, PkvConfig, Server};

/// How long a check that something does not happen waits for it.
const SETTLE: Duration = Duration::from_millis(300);

struct Setup {
    pkv: Server,
    issuer: Issuer,
    token: String,
}

impl Setup {
    fn start() -> Setup {
        let issuer = Issuer::new();
        let pkv = PkvConfig::embedded(&issuer).start();
        let token = issuer.token(1000);
        Setup { pkv, issuer, token }
    }

    fn client(&self) -> redis::Connection {
        self.pkv.client(&self.token)
    }

    /// Waits until `n` of the account's connections are blocked (its INFO's
    /// `blocked_clients`): a write after this wakes them.
    fn blocked(&self, n: i64) {
        self.pkv.wait_blocked(&self.token, n);
    }

    /// Runs `f` on a new connection in a thread; the receiver gets its result and how long
    /// it took.
    fn in_background<T, F>(&self, f: F) -> mpsc::Receiver<(T, Duration)>
    where
        T: Send + 'static,
        F: FnOnce(&mut redis::Connection) -> T + Send + 'static,
    {
        let mut conn = self.client();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let started = Instant::now();
            let result = f(&mut conn);
            let _ = tx.send((result, started.elapsed()));
        });
        rx
    }

    /// Runs the command `args` on a new connection in a thread.
    fn command_in_background(&self, args: &[&str]) -> mpsc::Receiver<(redis::Value, Duration)> {
        let cmd = command(args);
        self.in_background(move |c| cmd.query::<redis::Value>(c).unwrap())
    }

    /// Runs the command `args` on a new connection.
    fn run(&self, args: &[&str]) -> redis::Value {
        command(args).query(&mut self.client()).unwrap()
    }
}

fn command(args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd
}

fn wait<T>(rx: &mpsc::Receiver<(T, Duration)>) -> (T, Duration) {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the blocked client answered within 10 s")
}

/// INFO's `blocked_clients` is the account's own: it counts a connection while it waits,
/// not once it is answered, and another account sees none of it.
#[test]
fn info_counts_the_accounts_own_blocked_clients() {
    let s = Setup::start();
    let blocked = s.command_in_background(&["BLPOP", "q", "10"]);
    s.blocked(1);
    s.pkv.wait_blocked(&s.issuer.token(10), 0);
    s.run(&["RPUSH", "q", "x"]);
    let (reply, _) = wait(&blocked);
    assert_eq!(
        reply,
        redis::Value::Array(vec![bulk("q"), bulk("x")]),
        "the waiter got the element"
    );
    s.blocked(0);
}

#[test]
fn a_push_wakes_a_blocked_blpop_with_the_element() {
    let s = Setup::start();
    let blocked = s.in_background(|c| {
        redis::cmd("BLPOP")
            .arg("q")
            .arg(10)
            .query::<Option<(String, String)>>(c)
    });
    s.blocked(1);
    let pushed = Instant::now();
    let len: i64 = redis::cmd("RPUSH")
        .arg("q")
        .arg("x")
        .query(&mut s.client())
        .unwrap();
    assert_eq!(len, 1);
    let (reply, _) = wait(&blocked);
    assert!(
        pushed.elapsed() < Duration::from_secs(3),
        "woken {:?} after the push",
        pushed.elapsed()
    );
    assert_eq!(reply.unwrap(), Some(("q".into(), "x".into())));
    let left: i64 = redis::cmd("LLEN").arg("q").query(&mut s.client()).unwrap();
    assert_eq!(left, 0, "the element was taken, not copied");
}

#[test]
fn brpop_on_several_keys_wakes_on_any_of_them() {
    let s = Setup::start();
    let blocked = s.in_background(|c| {
        redis::cmd("BRPOP")
            .arg("a")
            .arg("b")
            .arg(10)
            .query::<Option<(String, String)>>(c)
    });
    s.blocked(1);
    let _: i64 = redis::cmd("RPUSH")
        .arg("b")
        .arg("1")
        .arg("2")
        .query(&mut s.client())
        .unwrap();
    let (reply, waited) = wait(&blocked);
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert_eq!(reply.unwrap(), Some(("b".into(), "2".into())));
    let rest: Vec<String> = redis::cmd("LRANGE")
        .arg("b")
        .arg(0)
        .arg(-1)
        .query(&mut s.client())
        .unwrap();
    assert_eq!(rest, ["1"]);
}

/// The longest timeout Redis 7.0 takes, 2^63 - 1 ms (`9223372036854775.807` seconds, read as
/// a long double), is a wait like any other: woken by a push, no error, no overflow.
#[test]
fn the_longest_timeout_waits_like_any_other() {
    let s = Setup::start();
    let blocked = s.command_in_background(&["BLPOP", "q", "9223372036854775.807"]);
    thread::sleep(SETTLE);
    s.run(&["RPUSH", "q", "x"]);
    let (reply, _) = wait(&blocked);
    let pair = |a: &str, b: &str| {
        redis::Value::Array(vec![
            redis::Value::BulkString(a.into()),
            redis::Value::BulkString(b.into()),
        ])
    };
    assert_eq!(reply, pair("q", "x"));
}

#[test]
fn blpop_times_out_with_nil() {
    let s = Setup::start();
    let mut c = s.client();
    let started = Instant::now();
    let reply: Option<(String, String)> =
        redis::cmd("BLPOP").arg("q").arg(0.2).query(&mut c).unwrap();
    let waited = started.elapsed();
    assert_eq!(reply, None);
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_secs(3),
        "timed out after {waited:?}"
    );
    // The connection is still usable, and a later push stays in the list.
    let len: i64 = redis::cmd("RPUSH").arg("q").arg("x").query(&mut c).unwrap();
    assert_eq!(len, 1);
    let len: i64 = redis::cmd("LLEN").arg("q").query(&mut c).unwrap();
    assert_eq!(len, 1);
}

#[test]
fn a_client_that_leaves_while_blocked_takes_nothing() {
    let s = Setup::start();
    let mut leaving = s.pkv.resp_authed(&s.token);
    leaving.send(&common::encode(&[b"BLPOP", b"q", b"0"]));
    s.blocked(1);
    leaving.stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(leaving);
    s.blocked(0);

    let mut c = s.client();
    let len: i64 = redis::cmd("RPUSH").arg("q").arg("x").query(&mut c).unwrap();
    assert_eq!(len, 1);
    // Time for a waiter that should be gone to take the element, were it still there.
    thread::sleep(SETTLE);
    let kept: Vec<String> = redis::cmd("LRANGE")
        .arg("q")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(kept, ["x"], "the element stays for the next client");

    // A client that blocks afterwards is served as usual.
    let _: Option<String> = redis::cmd("LPOP").arg("q").query(&mut c).unwrap();
    let blocked = s.in_background(|c| {
        redis::cmd("BLPOP")
            .arg("q")
            .arg(10)
            .query::<Option<(String, String)>>(c)
    });
    s.blocked(1);
    let _: i64 = redis::cmd("RPUSH").arg("q").arg("y").query(&mut c).unwrap();
    let (reply, _) = wait(&blocked);
    assert_eq!(reply.unwrap(), Some(("q".into(), "y".into())));
}

#[test]
fn two_blocked_clients_get_one_element_each() {
    let s = Setup::start();
    let pop = |c: &mut redis::Connection| {
        redis::cmd("BLPOP")
            .arg("q")
            .arg(10)
            .query::<Option<(String, String)>>(c)
    };
    let first = s.in_background(pop);
    let second = s.in_background(pop);
    s.blocked(2);
    let _: i64 = redis::cmd("RPUSH")
        .arg("q")
        .arg("x")
        .arg("y")
        .query(&mut s.client())
        .unwrap();
    let (a, _) = wait(&first);
    let (b, _) = wait(&second);
    let mut got: Vec<String> = [a, b]
        .into_iter()
        .map(|r| r.unwrap().expect("an element").1)
        .collect();
    got.sort();
    assert_eq!(got, ["x", "y"]);
}

#[test]
fn blmpop_wakes_up_with_the_popped_elements() {
    let s = Setup::start();
    let blocked = s.in_background(|c| {
        redis::cmd("BLMPOP")
            .arg(10)
            .arg(2)
            .arg("a")
            .arg("b")
            .arg("RIGHT")
            .arg("COUNT")
            .arg(2)
            .query::<Option<(String, Vec<String>)>>(c)
    });
    s.blocked(1);
    let _: i64 = redis::cmd("RPUSH")
        .arg("b")
        .arg("1")
        .arg("2")
        .arg("3")
        .query(&mut s.client())
        .unwrap();
    let (reply, waited) = wait(&blocked);
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert_eq!(
        reply.unwrap(),
        Some(("b".into(), vec!["3".into(), "2".into()]))
    );
}

#[test]
fn brpoplpush_and_blmove_wake_up_and_move_the_element() {
    let s = Setup::start();
    let blocked = s.in_background(|c| {
        redis::cmd("BRPOPLPUSH")
            .arg("src")
            .arg("dst")
            .arg(10)
            .query::<Option<String>>(c)
    });
    s.blocked(1);
    let mut c = s.client();
    let _: i64 = redis::cmd("LPUSH")
        .arg("src")
        .arg("x")
        .query(&mut c)
        .unwrap();
    let (reply, waited) = wait(&blocked);
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert_eq!(reply.unwrap(), Some("x".into()));

    let blocked = s.in_background(|c| {
        redis::cmd("BLMOVE")
            .arg("src")
            .arg("dst")
            .arg("LEFT")
            .arg("RIGHT")
            .arg(10)
            .query::<Option<String>>(c)
    });
    s.blocked(1);
    let _: i64 = redis::cmd("RPUSH")
        .arg("src")
        .arg("y")
        .query(&mut c)
        .unwrap();
    let (reply, _) = wait(&blocked);
    assert_eq!(reply.unwrap(), Some("y".into()));

    let moved: Vec<String> = redis::cmd("LRANGE")
        .arg("dst")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(moved, ["x", "y"]);
    let left: i64 = redis::cmd("LLEN").arg("src").query(&mut c).unwrap();
    assert_eq!(left, 0);

    // And the timeout: nil after the wait, nothing moved.
    let started = Instant::now();
    let reply: Option<String> = redis::cmd("BLMOVE")
        .arg("src")
        .arg("dst")
        .arg("LEFT")
        .arg("RIGHT")
        .arg(0.2)
        .query(&mut c)
        .unwrap();
    assert_eq!(reply, None);
    assert!(started.elapsed() >= Duration::from_millis(190));
}

// === sorted sets ===

fn bulk(text: &str) -> redis::Value {
    redis::Value::BulkString(text.as_bytes().to_vec())
}

#[test]
fn zadd_wakes_a_blocked_bzpopmin_with_the_lowest_member() {
    let s = Setup::start();
    let blocked = s.command_in_background(&["BZPOPMIN", "a", "b", "10"]);
    s.blocked(1);
    let added = Instant::now();
    assert_eq!(
        s.run(&["ZADD", "b", "2", "y", "1", "x"]),
        redis::Value::Int(2)
    );
    let (reply, _) = wait(&blocked);
    assert!(
        added.elapsed() < Duration::from_secs(3),
        "woken {:?} after the ZADD",
        added.elapsed()
    );
    assert_eq!(
        reply,
        redis::Value::Array(vec![bulk("b"), bulk("x"), bulk("1")])
    );
    assert_eq!(
        s.run(&["ZRANGE", "b", "0", "-1"]),
        redis::Value::Array(vec![bulk("y")])
    );
}

#[test]
fn a_store_wakes_a_blocked_bzpopmax() {
    let s = Setup::start();
    s.run(&["ZADD", "src", "1", "a", "5", "b"]);
    let blocked = s.command_in_background(&["BZPOPMAX", "dst", "10"]);
    s.blocked(1);
    assert_eq!(
        s.run(&["ZUNIONSTORE", "dst", "1", "src"]),
        redis::Value::Int(2)
    );
    let (reply, waited) = wait(&blocked);
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert_eq!(
        reply,
        redis::Value::Array(vec![bulk("dst"), bulk("b"), bulk("5")])
    );
}

#[test]
fn bzmpop_wakes_up_with_the_popped_members() {
    let s = Setup::start();
    let blocked = s.command_in_background(&["BZMPOP", "10", "2", "a", "b", "MAX", "COUNT", "2"]);
    s.blocked(1);
    s.run(&["ZADD", "a", "1", "x", "2", "y", "3", "z"]);
    let (reply, _) = wait(&blocked);
    let pair = |m: &str, d: &str| redis::Value::Array(vec![bulk(m), bulk(d)]);
    assert_eq!(
        reply,
        redis::Value::Array(vec![
            bulk("a"),
            redis::Value::Array(vec![pair("z", "3"), pair("y", "2")])
        ])
    );
}

#[test]
fn two_blocked_clients_get_one_member_each() {
    let s = Setup::start();
    let first = s.command_in_background(&["BZPOPMIN", "z", "10"]);
    let second = s.command_in_background(&["BZPOPMIN", "z", "10"]);
    s.blocked(2);
    s.run(&["ZADD", "z", "1", "x", "2", "y"]);
    let mut got: Vec<redis::Value> = [wait(&first).0, wait(&second).0]
        .into_iter()
        .map(|reply| match reply {
            redis::Value::Array(items) => items[1].clone(),
            other => panic!("not a pop: {other:?}"),
        })
        .collect();
    got.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(got, [bulk("x"), bulk("y")]);
}

#[test]
fn a_blocked_pop_times_out_with_nil() {
    let s = Setup::start();
    let started = Instant::now();
    let reply = s.run(&["BZPOPMIN", "z", "0.2"]);
    let waited = started.elapsed();
    assert_eq!(reply, redis::Value::Nil);
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_secs(3),
        "timed out after {waited:?}"
    );
    assert_eq!(
        s.run(&["BZMPOP", "0.1", "1", "z", "MIN"]),
        redis::Value::Nil
    );
}

/// An entry `[id, [field, value]]` of a stream reply.
fn stream_entry(id: &str, field: &str, value: &str) -> redis::Value {
    redis::Value::Array(vec![
        bulk(id),
        redis::Value::Array(vec![bulk(field), bulk(value)]),
    ])
}

/// XREAD's reply for one stream with one entry.
fn one_stream(key: &str, entry: redis::Value) -> redis::Value {
    redis::Value::Array(vec![redis::Value::Array(vec![
        bulk(key),
        redis::Value::Array(vec![entry]),
    ])])
}

/// `$` is the last ID when XREAD came: the client gets the entry added while it waited,
/// not an empty wait for the one after it.
#[test]
fn xadd_wakes_a_blocked_xread_with_the_new_entry() {
    let s = Setup::start();
    s.run(&["XADD", "s", "1-0", "old", "1"]);
    let blocked = s.command_in_background(&["XREAD", "BLOCK", "10000", "STREAMS", "s", "$"]);
    s.blocked(1);
    let added = Instant::now();
    assert_eq!(s.run(&["XADD", "s", "2-0", "f", "v"]), bulk("2-0"));
    let (reply, _) = wait(&blocked);
    assert!(
        added.elapsed() < Duration::from_secs(3),
        "woken {:?} after the XADD",
        added.elapsed()
    );
    assert_eq!(reply, one_stream("s", stream_entry("2-0", "f", "v")));
}

/// Another account's stream of the same name is another key: its XADD wakes nobody here,
/// and this account's own XADD still does.
#[test]
fn another_accounts_xadd_does_not_wake_a_blocked_xread() {
    let s = Setup::start();
    let blocked = s.command_in_background(&["XREAD", "BLOCK", "10000", "STREAMS", "s", "$"]);
    s.blocked(1);
    let mut other = s.pkv.client(&s.issuer.token(1000));
    let id: String = command(&["XADD", "s", "5-0", "theirs", "1"])
        .query(&mut other)
        .unwrap();
    assert_eq!(id, "5-0");
    thread::sleep(SETTLE);
    assert!(
        blocked.try_recv().is_err(),
        "the other account's XADD answered the blocked XREAD"
    );
    s.run(&["XADD", "s", "1-0", "mine", "1"]);
    let (reply, _) = wait(&blocked);
    assert_eq!(reply, one_stream("s", stream_entry("1-0", "mine", "1")));
}

/// A blocked XREADGROUP `>` gets the new entry, which is then pending for that consumer.
#[test]
fn xadd_wakes_a_blocked_xreadgroup_and_the_entry_is_pending() {
    let s = Setup::start();
    s.run(&["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"]);
    let blocked = s.command_in_background(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "alice",
        "BLOCK",
        "10000",
        "STREAMS",
        "s",
        ">",
    ]);
    s.blocked(1);
    s.run(&["XADD", "s", "3-0", "f", "v"]);
    let (reply, _) = wait(&blocked);
    assert_eq!(reply, one_stream("s", stream_entry("3-0", "f", "v")));
    assert_eq!(
        s.run(&["XPENDING", "s", "g"]),
        redis::Value::Array(vec![
            redis::Value::Int(1),
            bulk("3-0"),
            bulk("3-0"),
            redis::Value::Array(vec![redis::Value::Array(vec![bulk("alice"), bulk("1")])]),
        ])
    );
}

/// A blocked XREAD that times out answers Redis 7.0's null: `*-1` in RESP2, `_` in RESP3.
#[test]
fn xread_times_out_with_the_null_array() {
    let s = Setup::start();
    let mut conn = s.pkv.resp_authed(&s.token);
    let started = Instant::now();
    let reply = conn.send_and_reply(
        &["XREAD", "BLOCK", "200", "STREAMS", "s", "$"],
        Duration::from_secs(5),
    );
    assert_eq!(reply, b"*-1\r\n");
    assert!(started.elapsed() >= Duration::from_millis(190));
    conn.send_and_reply(&["HELLO", "3"], Duration::from_secs(5));
    let reply = conn.send_and_reply(
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "BLOCK",
            "100",
            "STREAMS",
            "s",
            ">",
        ],
        Duration::from_secs(5),
    );
    assert!(
        reply.starts_with(b"-NOGROUP"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    let reply = conn.send_and_reply(
        &["XREAD", "BLOCK", "100", "STREAMS", "s", "$"],
        Duration::from_secs(5),
    );
    assert_eq!(reply, b"_\r\n");
}

/// A blocked XREADGROUP whose stream is deleted ends with Redis 7.0's `-UNBLOCKED` error;
/// a blocked XREAD whose key becomes a string waits on, as Redis serves only streams.
#[test]
fn deleting_the_stream_unblocks_xreadgroup_with_an_error() {
    let s = Setup::start();
    s.run(&["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"]);
    let mut conn = s.pkv.resp_authed(&s.token);
    conn.send(&common::encode(&[
        b"XREADGROUP",
        b"GROUP",
        b"g",
        b"c",
        b"BLOCK",
        b"10000",
        b"STREAMS",
        b"s",
        b">",
    ]));
    s.blocked(1);
    s.run(&["DEL", "s"]);
    let reply = conn.reply_within(Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "-UNBLOCKED the stream key no longer exists\r\n"
    );

    let blocked = s.command_in_background(&["XREAD", "BLOCK", "10000", "STREAMS", "t", "$"]);
    s.blocked(1);
    s.run(&["SET", "t", "x"]);
    thread::sleep(SETTLE);
    assert!(blocked.try_recv().is_err(), "XREAD answered a string key");
    s.run(&["DEL", "t"]);
    s.run(&["XADD", "t", "1-0", "f", "v"]);
    let (reply, _) = wait(&blocked);
    assert_eq!(reply, one_stream("t", stream_entry("1-0", "f", "v")));
}
