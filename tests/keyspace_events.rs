//! Keyspace notifications per tenant (`PKV_KEYSPACE_EVENTS`), on both backends: a tenant
//! subscribed to `__keyspace@0__:*` and `__keyevent@0__:*` receives the events of its own
//! keys, with its own key names, exactly as a redis-server with the same
//! `notify-keyspace-events` delivers them for the same commands; another tenant receives
//! none of them; and deliveries are paid by the subscriber as Pub/Sub messages are.

#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::time::Duration;

use common::{wait_until, Issuer, PkvConfig, Redis};
use redis::Commands;

const FLAGS: &str = "KEA";

/// One delivered message: the pattern it matched (empty for a channel subscription), the
/// channel and the payload.
type Event = (String, String, String);

fn next(ps: &mut redis::PubSub<'_>) -> Event {
    let msg = ps
        .get_message()
        .expect("a notification within the read timeout");
    let pattern = if msg.from_pattern() {
        msg.get_pattern::<String>().unwrap()
    } else {
        String::new()
    };
    let payload: String = msg.get_payload().unwrap();
    (pattern, msg.get_channel_name().to_owned(), payload)
}

/// Reads messages until the keyevent of `event` on `key` arrives (included).
fn until(ps: &mut redis::PubSub<'_>, event: &str, key: &str, seen: &mut Vec<Event>) {
    loop {
        let e = next(ps);
        let done = e.1 == format!("__keyevent@0__:{event}") && e.2 == key;
        seen.push(e);
        if done {
            return;
        }
    }
}

/// Runs the script on `writer` while `ps` (subscribed to both kinds by pattern) listens;
/// returns every message `ps` got, in order.
fn script(writer: &mut redis::Connection, ps: &mut redis::PubSub<'_>) -> Vec<Event> {
    let mut seen = Vec::new();
    let run = |w: &mut redis::Connection, args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let _: redis::Value = cmd.query(w).unwrap();
    };
    run(writer, &["SET", "k1", "v"]);
    run(writer, &["SET", "k1", "v2", "EX", "100"]);
    run(writer, &["SET", "k1", "v3", "NX"]);
    run(writer, &["DEL", "k1", "nokey"]);
    run(writer, &["SET", "n", "1"]);
    run(writer, &["EXPIRE", "n", "100"]);
    run(writer, &["INCR", "n"]);
    run(writer, &["INCRBY", "n", "5"]);
    run(writer, &["LPUSH", "l", "a", "b"]);
    run(writer, &["LPOP", "l"]);
    run(writer, &["LPOP", "l"]);
    run(writer, &["LPOP", "l"]);
    run(writer, &["HSET", "h", "f", "v", "g", "w"]);
    run(writer, &["HDEL", "h", "f", "g"]);
    run(writer, &["RENAME", "n", "m"]);
    run(writer, &["SADD", "s", "x"]);
    run(writer, &["SADD", "s", "x"]);
    run(writer, &["EXPIRE", "s", "0"]);
    for args in [
        &["LPUSH", "q", "a"][..],
        &["LMOVE", "q", "q2", "LEFT", "RIGHT"],
        &["RPOPLPUSH", "q2", "q2"],
        &["ZADD", "z", "1", "a"],
        &["ZINCRBY", "z", "1", "a"],
        &["ZREM", "z", "a"],
        &["SETNX", "a", "1"],
        &["SETNX", "a", "1"],
        &["MSET", "b", "1", "c", "2"],
        &["GETDEL", "b"],
        &["APPEND", "c", "x"],
        &["EXPIRE", "c", "100"],
        &["PEXPIRE", "c", "200", "NX"],
        &["GETEX", "c", "EX", "10"],
        &["SETEX", "d", "10", "x"],
        &["COPY", "d", "e"],
        &["SADD", "s1", "x", "y"],
        &["SMOVE", "s1", "s2", "x"],
        &["SADD", "s1", "x"],
        &["SMOVE", "s1", "s2", "x"],
        &["SMOVE", "s2", "s2", "x"],
        &["SINTERSTORE", "f", "s1", "s2"],
        &["SINTERSTORE", "f", "s1", "nokey"],
        &["HINCRBY", "h2", "f", "1"],
        &["INCRBYFLOAT", "fl", "1.5"],
        &["DEL", "m", "a", "c"],
        &["RPUSH", "r", "a", "b", "c", "d"],
        &["RPUSHX", "r", "e"],
        &["LPUSHX", "nolist", "e"],
        &["LINSERT", "r", "BEFORE", "a", "z"],
        &["LINSERT", "r", "BEFORE", "nothere", "z"],
        &["LSET", "r", "0", "y"],
        &["LREM", "r", "1", "b"],
        &["LREM", "r", "1", "nothere"],
        &["LTRIM", "r", "0", "1"],
        &["RPOP", "r", "5"],
        &["LPUSH", "r2", "a", "b", "c"],
        &["LMPOP", "1", "r2", "LEFT"],
        &["BLPOP", "r2", "1"],
        &["BRPOP", "r2", "1"],
        &["SADD", "s3", "a", "b", "c"],
        &["SREM", "s3", "a", "nothere"],
        &["SPOP", "s3"],
        &["SPOP", "s3", "5"],
        &["SADD", "s4", "a"],
        &["SADD", "s5", "b"],
        &["SUNIONSTORE", "s6", "s4", "s5"],
        &["SDIFFSTORE", "s6", "s4", "s4"],
        &["HSETNX", "h3", "f", "1"],
        &["HSETNX", "h3", "f", "1"],
        &["HINCRBYFLOAT", "h3", "f", "0.5"],
        &["HMSET", "h3", "g", "1"],
        &["HDEL", "h3", "nothere"],
        &["ZADD", "z2", "1", "a", "2", "b", "3", "c"],
        &["ZADD", "z2", "INCR", "5", "a"],
        &["ZADD", "z2", "NX", "9", "a"],
        &["ZADD", "z2", "XX", "CH", "7", "b"],
        &["ZADD", "z2", "7", "b"],
        &["ZADD", "z2", "8", "b"],
        &["GEOADD", "geo0", "13.361389", "38.115556", "Palermo"],
        &["GEOADD", "geo0", "13.361389", "38.115556", "Palermo"],
        &["GEOADD", "geo0", "15.087269", "37.502669", "Palermo"],
        &["ZPOPMIN", "z2"],
        &["ZREMRANGEBYSCORE", "z2", "0", "4"],
        &["ZREMRANGEBYRANK", "z2", "0", "0"],
        &["ZADD", "z3", "1", "a"],
        &["ZUNIONSTORE", "z4", "1", "z3"],
        &["ZINTERSTORE", "z4", "2", "z3", "nothere"],
        &["ZRANGESTORE", "z5", "z3", "0", "-1"],
        &["ZMPOP", "1", "z3", "MIN"],
        &["BZPOPMAX", "z5", "1"],
        &["SETRANGE", "sr", "2", "ab"],
        &["SETRANGE", "sr", "0", ""],
        &["SETBIT", "bits", "3", "1"],
        &["BITOP", "OR", "bits2", "bits"],
        &["BITOP", "AND", "bits2", "nothere"],
        &["GETSET", "gs", "1"],
        &["DECR", "gs"],
        &["DECRBY", "gs", "2"],
        &["PFADD", "hll", "a"],
        &["PFADD", "hll", "a"],
        &["PFMERGE", "hll2", "hll"],
        &["XADD", "st", "*", "f", "v"],
        &["XADD", "st", "MAXLEN", "1", "*", "f", "v"],
        &["XTRIM", "st", "MAXLEN", "0"],
        &["XGROUP", "CREATE", "st", "g", "$"],
        &["XGROUP", "CREATECONSUMER", "st", "g", "c"],
        &["XGROUP", "DELCONSUMER", "st", "g", "c"],
        &["XGROUP", "SETID", "st", "g", "0"],
        &["XGROUP", "DESTROY", "st", "g"],
        &["XSETID", "st", "99-0"],
        &["XGROUP", "CREATE", "st2", "g", "$", "MKSTREAM"],
        &["XADD", "st2", "*", "f", "v"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "COUNT",
            "1",
            "STREAMS",
            "st2",
            ">",
        ],
        &["XCLAIM", "st2", "g", "c2", "0", "0-1"],
        &["XAUTOCLAIM", "st2", "g", "c3", "0", "0"],
        &["XADD", "st2", "*", "f", "v"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "COUNT",
            "1",
            "STREAMS",
            "st2",
            ">",
        ],
        &["DEL", "st2"],
        &["GEOADD", "geo", "13.361389", "38.115556", "Palermo"],
        &["RENAMENX", "geo", "geo2"],
        &["SORT", "z2", "ALPHA", "STORE", "sorted"],
        &["PERSIST", "sorted"],
        &["UNLINK", "st", "geo2", "sorted"],
    ] {
        run(writer, args);
    }
    run(writer, &["SET", "tmp", "x", "PX", "30"]);
    until(ps, "set", "tmp", &mut seen);
    // The key expires: a read after its deadline removes it, with its `expired` event.
    wait_until("tmp expired", || {
        let ttl: i64 = writer.pttl("tmp").unwrap();
        ttl == -2
    });
    until(ps, "expired", "tmp", &mut seen);
    run(writer, &["SET", "end", "1"]);
    until(ps, "set", "end", &mut seen);
    seen
}

/// Asserts two runs' messages are the same, showing where they part.
fn assert_same(got: &[Event], expected: &[Event], what: &str) {
    if got == expected {
        return;
    }
    let at = got
        .iter()
        .zip(expected)
        .position(|(g, e)| g != e)
        .unwrap_or(got.len().min(expected.len()));
    let from = at.saturating_sub(4);
    panic!(
        "{what}: they part at message {at}\n got: {:#?}\n expected: {:#?}",
        &got[from..got.len().min(at + 4)],
        &expected[from..expected.len().min(at + 4)]
    );
}

fn listen(conn: &mut redis::Connection) -> redis::PubSub<'_> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut ps = conn.as_pubsub();
    ps.psubscribe("__keyspace@0__:*").unwrap();
    ps.psubscribe("__keyevent@0__:*").unwrap();
    ps
}

/// What a redis-server with the same flags delivers for the script.
fn reference() -> Vec<Event> {
    let redis = Redis::start();
    let mut direct = redis.direct();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(FLAGS)
        .query(&mut direct)
        .unwrap();
    let mut sub = redis.direct();
    let mut ps = listen(&mut sub);
    script(&mut direct, &mut ps)
}

fn isolated_and_exact(config: PkvConfig, issuer: &Issuer) {
    let expected = reference();
    assert!(expected.len() > 60, "{expected:?}");
    let pkv = config
        .set("PKV_KEYSPACE_EVENTS", FLAGS)
        .set("PKV_METERING", "off")
        .start();
    let (a, b) = (issuer.token(10), issuer.token(10));
    // B listens to everything, by pattern and by channel.
    let mut b_conn = pkv.client(&b);
    let mut b_ps = listen(&mut b_conn);
    b_ps.subscribe("__keyevent@0__:del").unwrap();
    b_ps.subscribe("__keyspace@0__:k1").unwrap();

    let mut a_sub = pkv.client(&a);
    let mut a_ps = listen(&mut a_sub);
    let mut a_writer = pkv.client(&a);
    let got = script(&mut a_writer, &mut a_ps);
    assert_same(&got, &expected, "A's notifications and Redis's");

    // B got none of A's: the first thing it receives is its own write's.
    let mut b_writer = pkv.client(&b);
    let _: () = b_writer.set("b-end", "1").unwrap();
    assert_eq!(
        next(&mut b_ps),
        (
            "__keyspace@0__:*".to_owned(),
            "__keyspace@0__:b-end".to_owned(),
            "set".to_owned()
        )
    );
    assert_eq!(
        next(&mut b_ps),
        (
            "__keyevent@0__:*".to_owned(),
            "__keyevent@0__:set".to_owned(),
            "b-end".to_owned()
        )
    );
}

#[test]
fn a_tenant_gets_redis_events_of_its_own_keys_only() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    isolated_and_exact(PkvConfig::new(&redis, &issuer), &issuer);
}

#[test]
fn a_tenant_gets_redis_events_of_its_own_keys_only_on_the_embedded_store() {
    let issuer = Issuer::new();
    isolated_and_exact(PkvConfig::embedded(&issuer), &issuer);
}

/// With metering on, pkv gives each key a TTL (`EX` appended, `PEXPIRE ... NX` after a
/// write that gives none), and those have their own `expire` events: the embedded store
/// publishes the same events as Redis does for what pkv sends it.
#[test]
fn both_backends_agree_with_metering_on() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let mut got = Vec::new();
    for config in [
        PkvConfig::new(&redis, &issuer),
        PkvConfig::embedded(&issuer),
    ] {
        let pkv = config.set("PKV_KEYSPACE_EVENTS", FLAGS).start();
        let token = issuer.token(10);
        let mut sub = pkv.client(&token);
        let mut ps = listen(&mut sub);
        let mut writer = pkv.client(&token);
        got.push(script(&mut writer, &mut ps));
    }
    assert!(
        got[0]
            .iter()
            .any(|e| e.2 == "expire" && e.1 == "__keyspace@0__:l"),
        "LPUSH's key gets its TTL: {:?}",
        got[0]
    );
    assert_same(&got[1], &got[0], "the embedded store's and the upstream's");
}

/// The account's `bytes_out` in `PKV.BALANCE`.
fn bytes_out(conn: &mut redis::Connection) -> i64 {
    common::pkv_balance(conn)["bytes_out"].parse().unwrap()
}

fn deliveries_are_paid(config: PkvConfig, issuer: &Issuer) {
    let pkv = config.set("PKV_KEYSPACE_EVENTS", "E$").start();
    let token = issuer.token(10);
    let mut subscriber = pkv.resp_authed(&token);
    let confirm = subscriber.call(&[b"SUBSCRIBE", b"__keyevent@0__:set"]);
    assert!(confirm.starts_with(b"*3\r\n$9\r\nsubscribe\r\n"));
    // A RESP3 subscriber gets the same message as a push.
    let mut resp3 = pkv.resp();
    let hello = resp3.call(&[b"HELLO", b"3", b"AUTH", b"x", token.as_bytes()]);
    assert!(
        hello.starts_with(b"%"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    let confirm = resp3.call(&[b"SUBSCRIBE", b"__keyevent@0__:set"]);
    assert!(confirm.starts_with(b">3\r\n$9\r\nsubscribe\r\n"));
    let mut writer = pkv.client(&token);
    let _: () = writer.set("x", "1").unwrap();
    let first = subscriber.reply();
    assert_eq!(
        first,
        b"*3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:set\r\n$1\r\nx\r\n"
    );
    assert_eq!(
        resp3.reply(),
        b">3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:set\r\n$1\r\nx\r\n"
    );
    // It leaves before the measured write, so that only `subscriber` pays for it.
    let left = resp3.call(&[b"UNSUBSCRIBE"]);
    assert!(left.starts_with(b">3\r\n$11\r\nunsubscribe\r\n"));
    let mut before = bytes_out(&mut writer);
    wait_until("the first delivery is paid", || {
        let now = bytes_out(&mut writer);
        let settled = now == before;
        before = now;
        settled
    });
    let _: () = writer.set("paid", "1").unwrap();
    // Flags `E$` only: the set's event, and not the expire of the TTL pkv adds.
    let message = subscriber.reply();
    assert_eq!(
        message,
        b"*3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:set\r\n$4\r\npaid\r\n"
    );
    let expected = (b"+OK\r\n".len() + message.len()) as i64;
    let mut paid = 0;
    wait_until("the SET reply and the delivery are paid", || {
        paid = bytes_out(&mut writer) - before;
        paid == expected
    });
}

#[test]
fn deliveries_are_paid_by_the_subscriber() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    deliveries_are_paid(PkvConfig::new(&redis, &issuer), &issuer);
}

#[test]
fn deliveries_are_paid_by_the_subscriber_on_the_embedded_store() {
    let issuer = Issuer::new();
    deliveries_are_paid(PkvConfig::embedded(&issuer), &issuer);
}

#[test]
fn bad_flags_stop_start_up_with_a_line_naming_the_setting() {
    let issuer = Issuer::new();
    let settings = |flags: &str| {
        let config = PkvConfig::embedded(&issuer).set("PKV_KEYSPACE_EVENTS", flags);
        pkv::config::Settings::from_map(&config.settings())
    };
    let refused = |flags: &str| settings(flags).unwrap_err().to_string();
    assert!(
        refused("KEq").contains("PKV_KEYSPACE_EVENTS: unknown event class 'q'"),
        "{}",
        refused("KEq")
    );
    assert!(
        refused("K").contains("names no event class"),
        "{}",
        refused("K")
    );
    assert!(refused("g$").contains("neither K"), "{}", refused("g$"));
    // What CONFIG GET notify-keyspace-events would print.
    assert_eq!(settings("KEA").unwrap().notify_keyspace_events(), "AKE");
    assert_eq!(settings("").unwrap().notify_keyspace_events(), "");
}

#[test]
fn pkv_sets_the_upstreams_notify_keyspace_events() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let _pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_KEYSPACE_EVENTS", "Kg$")
        .start();
    let mut direct = redis.direct();
    // The classes asked for, as key events only: pkv writes the keyspace messages itself.
    wait_until("notify-keyspace-events set", || {
        let reply: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query(&mut direct)
            .unwrap();
        reply.get(1).map(String::as_str) == Some("g$E")
    });
}

/// A tenant cannot make another receive a notification by publishing to a notification
/// channel, and a pattern it left delivers nothing more.
fn no_forgery_and_unsubscribe_holds(config: PkvConfig, issuer: &Issuer) {
    let pkv = config.set("PKV_KEYSPACE_EVENTS", "KEA").start();
    let bob = issuer.mint(10, 3600, Some("bob"));
    let mallory = issuer.mint(10, 3600, Some("mallory"));
    let mut bob_sub = pkv.resp_authed(&bob);
    let confirm = bob_sub.call(&[b"PSUBSCRIBE", b"__keyevent@0__:*"]);
    assert!(confirm.starts_with(b"*3\r\n$10\r\npsubscribe\r\n"));
    let confirm = bob_sub.call(&[b"SUBSCRIBE", b"__keyevent@0__:set"]);
    assert!(confirm.starts_with(b"*3\r\n$9\r\nsubscribe\r\n"));

    // Mallory publishes what an event of Bob's key would carry, on every channel it could.
    let mut mallory_conn = pkv.resp_authed(&mallory);
    for channel in [&b"__keyevent@0__:del"[..], b"__keyevent@0__:set"] {
        let reply = mallory_conn.call(&[b"PUBLISH", channel, b"pkv:t:bob:k"]);
        assert_eq!(reply, b":0\r\n", "no subscriber of Mallory's own");
    }
    // Bob leaves the pattern; his next write reaches him through the channel only.
    let left = bob_sub.call(&[b"PUNSUBSCRIBE", b"__keyevent@0__:*"]);
    assert_eq!(
        left,
        b"*3\r\n$12\r\npunsubscribe\r\n$16\r\n__keyevent@0__:*\r\n:1\r\n"
    );
    let mut bob_writer = pkv.resp_authed(&bob);
    assert_eq!(bob_writer.call(&[b"SET", b"k", b"1"]), b"+OK\r\n");
    // The first message Bob gets is his own write's, by channel: nothing forged came before.
    assert_eq!(
        bob_sub.reply(),
        b"*3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:set\r\n$1\r\nk\r\n"
    );
    // With metering on the write is followed by its TTL's `expire`, which only the
    // pattern he left would have delivered: the next message is the next `set`.
    assert_eq!(bob_writer.call(&[b"SET", b"k2", b"1"]), b"+OK\r\n");
    assert_eq!(
        bob_sub.reply(),
        b"*3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:set\r\n$2\r\nk2\r\n"
    );
}

#[test]
fn no_forgery_and_unsubscribe_holds_upstream() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    no_forgery_and_unsubscribe_holds(PkvConfig::new(&redis, &issuer), &issuer);
}

#[test]
fn no_forgery_and_unsubscribe_holds_on_the_embedded_store() {
    let issuer = Issuer::new();
    no_forgery_and_unsubscribe_holds(PkvConfig::embedded(&issuer), &issuer);
}

/// A key whose time passes and that nobody touches is reported `expired` when the
/// background sweep removes it.
fn untouched_keys_expire_with_their_event(config: PkvConfig, issuer: &Issuer) {
    let pkv = config.set("PKV_KEYSPACE_EVENTS", "Ex").start();
    let token = issuer.token(10);
    let mut subscriber = pkv.resp_authed(&token);
    let confirm = subscriber.call(&[b"SUBSCRIBE", b"__keyevent@0__:expired"]);
    assert!(confirm.starts_with(b"*3\r\n$9\r\nsubscribe\r\n"));
    let mut writer = pkv.resp_authed(&token);
    assert_eq!(
        writer.call(&[b"SET", b"brief", b"v", b"PX", b"50"]),
        b"+OK\r\n"
    );
    assert_eq!(
        subscriber.reply(),
        b"*3\r\n$7\r\nmessage\r\n$22\r\n__keyevent@0__:expired\r\n$5\r\nbrief\r\n"
    );
}

#[test]
fn untouched_keys_expire_with_their_event_upstream() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    untouched_keys_expire_with_their_event(PkvConfig::new(&redis, &issuer), &issuer);
}

#[test]
fn untouched_keys_expire_with_their_event_on_the_embedded_store() {
    let issuer = Issuer::new();
    untouched_keys_expire_with_their_event(PkvConfig::embedded(&issuer), &issuer);
}
