//! Forwarding behaviour: pipelines, transactions, blocking commands, Pub/Sub, RESP3, and
//! graceful shutdown, through a real pkv in front of a real redis-server.

mod common;

use std::time::{Duration, Instant};

use common::{Issuer, PkvConfig, Redis, RespConn};
use redis::Value;

fn setup() -> (Redis, Issuer, common::Server) {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer).start();
    (redis, issuer, pkv)
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[test]
fn a_pipeline_of_1000_mixed_commands_is_answered_in_order() {
    let (_redis, issuer, pkv) = setup();
    let mut conn = pkv.client(&issuer.token(10));
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        match i % 3 {
            0 => pipe.cmd("SET").arg(format!("k{i}")).arg(i),
            1 => pipe.cmd("GET").arg(format!("k{}", i - 1)),
            _ => pipe.cmd("INCR").arg("counter"),
        };
    }
    let replies: Vec<Value> = pipe.query(&mut conn).unwrap();
    assert_eq!(replies.len(), 1000);
    let mut incrs = 0;
    for (i, reply) in replies.iter().enumerate() {
        match i % 3 {
            0 => assert_eq!(reply, &Value::Okay, "reply {i}"),
            1 => assert_eq!(reply, &bulk(&(i - 1).to_string()), "reply {i}"),
            _ => {
                incrs += 1;
                assert_eq!(reply, &Value::Int(incrs), "reply {i}");
            }
        }
    }
}

#[test]
fn multi_exec_runs_atomically_and_rewrites_results() {
    let (_redis, issuer, pkv) = setup();
    let mut conn = pkv.client(&issuer.token(10));
    let _: () = redis::cmd("RPUSH")
        .arg("q")
        .arg("job")
        .query(&mut conn)
        .unwrap();
    let (set, incr, keys, pop): (String, i64, Vec<String>, Vec<String>) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("a")
        .arg("1")
        .cmd("INCR")
        .arg("a")
        .cmd("KEYS")
        .arg("a*")
        .cmd("BLPOP")
        .arg("q")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    assert_eq!((set.as_str(), incr), ("OK", 2));
    assert_eq!(keys, vec!["a".to_string()]);
    assert_eq!(pop, vec!["q".to_string(), "job".to_string()]);
}

#[test]
fn a_command_refused_while_queuing_aborts_the_transaction() {
    let (_redis, issuer, pkv) = setup();
    let mut conn = pkv.client(&issuer.token(10));
    let _: () = redis::cmd("MULTI").query(&mut conn).unwrap();
    let queued: String = redis::cmd("SET")
        .arg("x")
        .arg("1")
        .query(&mut conn)
        .unwrap();
    assert_eq!(queued, "QUEUED");
    let refused = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query::<Value>(&mut conn)
        .unwrap_err();
    assert!(
        refused.to_string().contains("not allowed through pkv"),
        "{refused}"
    );
    let exec = redis::cmd("EXEC").query::<Value>(&mut conn).unwrap_err();
    assert_eq!(exec.code(), Some("EXECABORT"), "{exec}");
    let x: Option<String> = redis::cmd("GET").arg("x").query(&mut conn).unwrap();
    assert_eq!(x, None, "nothing of an aborted transaction runs");
    // The connection is usable again afterwards.
    let _: () = redis::cmd("SET")
        .arg("y")
        .arg("2")
        .query(&mut conn)
        .unwrap();
}

#[test]
fn watch_aborts_exec_when_the_key_changes() {
    let (_redis, issuer, pkv) = setup();
    let token = issuer.token(10);
    let mut a = pkv.client(&token);
    let mut other = pkv.client(&token);
    let _: () = redis::cmd("SET").arg("w").arg("0").query(&mut a).unwrap();
    let _: () = redis::cmd("WATCH").arg("w").query(&mut a).unwrap();
    let _: () = redis::cmd("SET")
        .arg("w")
        .arg("changed")
        .query(&mut other)
        .unwrap();
    let _: () = redis::cmd("MULTI").query(&mut a).unwrap();
    let _: String = redis::cmd("SET")
        .arg("w")
        .arg("mine")
        .query(&mut a)
        .unwrap();
    let exec: Value = redis::cmd("EXEC").query(&mut a).unwrap();
    assert_eq!(exec, Value::Nil);
    let w: String = redis::cmd("GET").arg("w").query(&mut a).unwrap();
    assert_eq!(w, "changed");

    // Unchanged, the same sequence commits.
    let _: () = redis::cmd("WATCH").arg("w").query(&mut a).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut a).unwrap();
    let _: String = redis::cmd("SET")
        .arg("w")
        .arg("mine")
        .query(&mut a)
        .unwrap();
    let exec: Vec<Value> = redis::cmd("EXEC").query(&mut a).unwrap();
    assert_eq!(exec, vec![Value::Okay]);
}

#[test]
fn discard_drops_the_queue() {
    let (_redis, issuer, pkv) = setup();
    let mut conn = pkv.client(&issuer.token(10));
    let _: () = redis::cmd("MULTI").query(&mut conn).unwrap();
    let _: String = redis::cmd("SET")
        .arg("d")
        .arg("1")
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("DISCARD").query(&mut conn).unwrap();
    let d: Option<String> = redis::cmd("GET").arg("d").query(&mut conn).unwrap();
    assert_eq!(d, None);
    let err = redis::cmd("EXEC").query::<Value>(&mut conn).unwrap_err();
    assert!(err.to_string().contains("EXEC without MULTI"), "{err}");
}

#[test]
fn blpop_is_woken_by_another_client() {
    let (redis, issuer, pkv) = setup();
    let token = issuer.token(10);
    let mut waiter = pkv.client(&token);
    let mut pusher = pkv.client(&token);
    let started = Instant::now();
    let handle = std::thread::spawn(move || -> Vec<String> {
        redis::cmd("BLPOP")
            .arg("jobs")
            .arg(10)
            .query(&mut waiter)
            .unwrap()
    });
    common::wait_until("BLPOP blocks upstream", || {
        redis.info_field("blocked_clients") == 1
    });
    // Plain commands keep flowing while another connection blocks.
    let _: () = redis::cmd("SET")
        .arg("unrelated")
        .arg("1")
        .query(&mut pusher)
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg("jobs")
        .arg("job-1")
        .query(&mut pusher)
        .unwrap();
    let popped = handle.join().unwrap();
    assert_eq!(popped, vec!["jobs".to_string(), "job-1".to_string()]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by the push, not the timeout"
    );
}

#[test]
fn blpop_timeout_is_a_null_array() {
    let (_redis, issuer, pkv) = setup();
    let mut raw = pkv.raw();
    let token = issuer.token(10);
    raw.command(&[b"AUTH", token.as_bytes()]);
    raw.read_until(b"+OK\r\n");
    raw.command(&[b"BLPOP", b"nothing", b"0.1"]);
    assert_eq!(raw.read_until(b"\r\n"), b"*-1\r\n");
}

#[test]
fn pubsub_delivers_messages_with_the_clients_channel_names() {
    let (_redis, issuer, pkv) = setup();
    let token = issuer.token(10);
    let mut sub = pkv.raw();
    sub.command(&[b"AUTH", token.as_bytes()]);
    sub.read_until(b"+OK\r\n");
    sub.command(&[b"SUBSCRIBE", b"news", b"alerts"]);
    let confirm = sub.read_until(b"$6\r\nalerts\r\n:2\r\n");
    assert_eq!(confirm, b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$6\r\nalerts\r\n:2\r\n");
    sub.command(&[b"PSUBSCRIBE", b"ne*"]);
    sub.read_until(b"$3\r\nne*\r\n:3\r\n");
    // In RESP2 subscribed mode, other commands are refused as Redis refuses them.
    sub.command(&[b"GET", b"x"]);
    let refused = sub.read_until(b"\r\n");
    assert!(
        refused.starts_with(b"-ERR Can't execute 'get'"),
        "{}",
        String::from_utf8_lossy(&refused)
    );

    let mut publisher = pkv.client(&token);
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("hello")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(receivers, 2, "one channel and one pattern subscription");
    let got = sub.read_until(
        b"$5\r\nhello\r\n*4\r\n$8\r\npmessage\r\n$3\r\nne*\r\n$4\r\nnews\r\n$5\r\nhello\r\n",
    );
    assert!(
        got.starts_with(b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );

    sub.command(&[b"UNSUBSCRIBE"]);
    let bye = sub.read_until(b":1\r\n");
    assert!(
        bye.windows(6).any(|w| w == b"alerts"),
        "{}",
        String::from_utf8_lossy(&bye)
    );
    sub.command(&[b"PUNSUBSCRIBE"]);
    sub.read_until(b":0\r\n");
    // Out of subscribed mode, commands work again.
    sub.command(&[b"PING"]);
    assert_eq!(sub.read_until(b"\r\n"), b"+PONG\r\n");
}

/// Replies whose keys need no rewriting reach the client byte for byte as Redis wrote them,
/// in both protocol versions: RESP2's null array stays `*-1` (not the null bulk string),
/// a negative zero stays `-0`, RESP3's doubles keep Redis's digits.
#[test]
fn replies_are_relayed_byte_for_byte() {
    let (redis, issuer, pkv) = setup();
    let token = issuer.token(10);
    let mut direct = common::RespConn::connect(redis.port);
    let mut proxied = pkv.resp_authed(&token);
    let script: &[&[&str]] = &[
        &["RPUSH", "l", "a"],
        &["LPOP", "nokey", "2"],
        &["RPOP", "l", "5"],
        &["RPOP", "l", "5"],
        &["BLMOVE", "nokey", "dst", "LEFT", "RIGHT", "0.01"],
        &["ZADD", "z", "-0", "m", "0.1", "n", "1e300", "o"],
        &["ZSCORE", "z", "m"],
        &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        &["ZINCRBY", "z", "0.2", "n"],
        &["HELLO", "3"],
        &["ZSCORE", "z", "m"],
        &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        &["ZINCRBY", "z", "0.2", "n"],
        &["LPOP", "nokey", "2"],
        &["HGETALL", "nokey"],
        &["SMEMBERS", "nokey"],
        &["GET", "nokey"],
    ];
    for args in script {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        if args[0] == b"HELLO" {
            // The handshake's reply names the server; only the switch matters here.
            direct.call(&args);
            proxied.call(&args);
            continue;
        }
        let expected = direct.call(&args);
        let got = proxied.call(&args);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected),
            "{:?}",
            String::from_utf8_lossy(&args.join(&b' '))
        );
    }
}

#[test]
fn resp3_clients_get_resp3_replies() {
    let (_redis, issuer, pkv) = setup();
    let token = issuer.token(10);
    let client = redis::Client::open(pkv.url_resp3(&token)).unwrap();
    let mut conn = client.get_connection().unwrap();
    let _: () = redis::cmd("HSET")
        .arg("h")
        .arg("f")
        .arg("v")
        .query(&mut conn)
        .unwrap();
    let all: Value = redis::cmd("HGETALL").arg("h").query(&mut conn).unwrap();
    assert_eq!(all, Value::Map(vec![(bulk("f"), bulk("v"))]));
    let _: () = redis::cmd("XADD")
        .arg("s")
        .arg("1-1")
        .arg("f")
        .arg("v")
        .query(&mut conn)
        .unwrap();
    let read: Value = redis::cmd("XREAD")
        .arg("STREAMS")
        .arg("s")
        .arg("0")
        .query(&mut conn)
        .unwrap();
    match read {
        Value::Map(pairs) => assert_eq!(pairs[0].0, bulk("s")),
        other => panic!("XREAD over RESP3 should be a map, got {other:?}"),
    }

    // And RESP2 clients get the flat form of the same data.
    let mut conn2 = pkv.client(&token);
    let flat: Value = redis::cmd("HGETALL").arg("h").query(&mut conn2).unwrap();
    assert_eq!(flat, Value::Array(vec![bulk("f"), bulk("v")]));
}

#[test]
fn sigterm_lets_in_flight_commands_finish_then_exits() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let mut pkv = PkvConfig::new(&redis, &issuer).start_process();
    let token = issuer.token(10);
    let mut busy = pkv.raw();
    busy.command(&[b"AUTH", token.as_bytes()]);
    busy.read_until(b"+OK\r\n");
    // A command that takes a second upstream.
    busy.command(&[b"BLPOP", b"never", b"1"]);
    common::wait_until("BLPOP blocks upstream", || {
        redis.info_field("blocked_clients") == 1
    });
    pkv.terminate();
    common::wait_until("no new connections once shutting down", || {
        std::net::TcpStream::connect(("127.0.0.1", pkv.port)).is_err()
    });
    assert_eq!(
        busy.read_until(b"\r\n"),
        b"*-1\r\n",
        "the in-flight command still got its reply"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = pkv.child.try_wait().unwrap() {
            assert!(status.success(), "clean exit, got {status}");
            break;
        }
        assert!(Instant::now() < deadline, "pkv did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lines where pkv once answered differently from Redis, run on redis-server directly and
/// through pkv: the replies must be the same bytes.
#[test]
fn transaction_misuse_and_ping_answer_as_redis() {
    let (redis, issuer, pkv) = setup();
    let mut direct = RespConn::connect(redis.port);
    let mut through = pkv.resp_authed(&issuer.token(10));
    let lines: &[&[&str]] = &[
        &["PING", "a", "b"],
        // A nested MULTI and a WATCH inside MULTI are errors that leave the transaction
        // as it was: EXEC runs it.
        &["MULTI"],
        &["MULTI"],
        &["WATCH", "k"],
        &["SET", "k", "v"],
        &["EXEC"],
        &["GET", "k"],
        // Blocking moves that time out: RESP2's null array in Redis 7.0.
        &["BLMOVE", "from", "to", "LEFT", "RIGHT", "0.01"],
        &["BRPOPLPUSH", "from", "to", "0.01"],
    ];
    for line in lines {
        let want = direct.call_text(line);
        let got = through.call_text(line);
        assert_eq!(got, want, "{line:?}");
    }
}

/// `CLIENT REPLY OFF`, `SKIP` and `ON`, pipelined, on redis-server directly and through pkv:
/// the same replies are left out (the commands still run).
#[test]
fn client_reply_off_and_skip_answer_as_redis() {
    let (redis, issuer, pkv) = setup();
    let mut direct = RespConn::connect(redis.port);
    let mut through = pkv.resp_authed(&issuer.token(10));
    let lines: &[&[&[u8]]] = &[
        &[b"CLIENT", b"REPLY", b"OFF"],
        &[b"SET", b"a", b"1"],
        &[b"GET", b"a"],
        &[b"CLIENT", b"REPLY", b"SKIP"],
        &[b"CLIENT", b"REPLY", b"ON"],
        &[b"CLIENT", b"REPLY", b"SKIP"],
        &[b"INCR", b"a"],
        &[b"GET", b"a"],
        &[b"CLIENT", b"REPLY", b"SKIP"],
        &[b"CLIENT", b"REPLY", b"SKIP"],
        &[b"GET", b"a"],
        &[b"CLIENT", b"REPLY", b"MAYBE"],
        &[b"PING"],
    ];
    let mut pipeline = Vec::new();
    for line in lines {
        pipeline.extend(common::encode(line));
    }
    let mut answers = Vec::new();
    for conn in [&mut direct, &mut through] {
        conn.send(&pipeline);
        let mut got = Vec::new();
        loop {
            let reply = conn.reply();
            got.extend_from_slice(&reply);
            if reply == b"+PONG\r\n" {
                break;
            }
        }
        answers.push(String::from_utf8_lossy(&got).into_owned());
    }
    assert_eq!(answers[1], answers[0]);
    assert!(
        answers[0].starts_with("+OK\r\n$1\r\n2\r\n-ERR"),
        "{:?}",
        answers[0]
    );
}
