//! Blocking sorted-set pops on the embedded store, through pkv and real clients: a blocked
//! BZPOPMIN, BZPOPMAX or BZMPOP is woken by another connection's ZADD or ZUNIONSTORE, two
//! blocked clients share the members, and a timeout answers nil.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Issuer, Pkv, PkvConfig};

/// How long a blocked client waits before another one writes.
const SETTLE: Duration = Duration::from_millis(300);

struct Setup {
    pkv: Pkv,
    token: String,
}

impl Setup {
    fn start() -> Setup {
        let issuer = Issuer::new();
        let pkv = PkvConfig::embedded(&issuer).start();
        let token = issuer.token(1000);
        Setup { pkv, token }
    }

    fn client(&self) -> redis::Connection {
        self.pkv.client(&self.token)
    }

    /// Runs `args` on a new connection in a thread; the receiver gets the reply and how
    /// long it took.
    fn in_background(&self, args: &[&str]) -> mpsc::Receiver<(redis::Value, Duration)> {
        let mut conn = self.client();
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let started = Instant::now();
            let reply = cmd.query::<redis::Value>(&mut conn).unwrap();
            let _ = tx.send((reply, started.elapsed()));
        });
        rx
    }

    fn run(&self, args: &[&str]) -> redis::Value {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut self.client()).unwrap()
    }
}

fn wait(rx: &mpsc::Receiver<(redis::Value, Duration)>) -> (redis::Value, Duration) {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the blocked client answered within 10 s")
}

fn bulk(text: &str) -> redis::Value {
    redis::Value::BulkString(text.as_bytes().to_vec())
}

#[test]
fn zadd_wakes_a_blocked_bzpopmin_with_the_lowest_member() {
    let s = Setup::start();
    let blocked = s.in_background(&["BZPOPMIN", "a", "b", "10"]);
    thread::sleep(SETTLE);
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
    let blocked = s.in_background(&["BZPOPMAX", "dst", "10"]);
    thread::sleep(SETTLE);
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
    let blocked = s.in_background(&["BZMPOP", "10", "2", "a", "b", "MAX", "COUNT", "2"]);
    thread::sleep(SETTLE);
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
    let first = s.in_background(&["BZPOPMIN", "z", "10"]);
    let second = s.in_background(&["BZPOPMIN", "z", "10"]);
    thread::sleep(SETTLE);
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
