//! pkv on its embedded store, through real clients: started with nothing configured at
//! all, Pub/Sub, WATCH, tenant isolation, and the ledger kept in the store.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{credited, encode, pkv_balance, Issuer, PkvConfig, Resp, RespConn, Server};

/// pkv's default listen address (`PKV_LISTEN` in `src/config.rs`).
const DEFAULT_LISTEN: &str = "127.0.0.1:6380";

/// Kills the child when dropped, whatever the test did.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `redis-cli`, if it is on PATH.
fn redis_cli_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-cli"))
        .find(|candidate| candidate.is_file())
}

fn bulk(text: &str) -> Resp {
    Resp::Bulk(text.as_bytes().to_vec())
}

fn ok() -> Resp {
    Resp::Simple("OK".into())
}

#[test]
fn empty_environment_runs_and_prints_a_working_line() {
    // The default port must be free, or pkv cannot start with nothing configured.
    if let Err(e) = TcpListener::bind(DEFAULT_LISTEN) {
        panic!(
            "{DEFAULT_LISTEN}, pkv's default listen address, is busy ({e}): \
             this test starts pkv with an empty environment, so it needs that port free"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pkv"))
        .env_clear()
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let child = KillOnDrop(child);

    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let (err_tx, err_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = err_tx.send(text);
    });

    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let cli_line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with("redis-cli -p ") => break line,
            Ok(line) => printed.push(line),
            Err(_) => {
                drop(child);
                let stderr = err_rx
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap_or_default();
                let busy = if stderr.contains("in use") {
                    format!("\n{DEFAULT_LISTEN} (pkv's default listen address) is busy")
                } else {
                    String::new()
                };
                panic!(
                    "pkv printed no `redis-cli -p` line within 30 s{busy}\nstdout:\n{}\nstderr:\n{stderr}",
                    printed.join("\n")
                );
            }
        }
    };
    assert!(
        printed.iter().any(|l| l.contains("embedded store")),
        "the banner does not say the data is in the embedded store: {printed:?}"
    );

    // `redis-cli -p PORT -a TOKEN`
    let words: Vec<&str> = cli_line.split_whitespace().collect();
    let (port, token) = match words.as_slice() {
        ["redis-cli", "-p", port, "-a", token] => (port.parse::<u16>().unwrap(), *token),
        _ => panic!("unexpected line {cli_line:?}"),
    };
    let default_port: u16 = DEFAULT_LISTEN.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(port, default_port, "{cli_line}");
    // pkv prints the line once it listens; allow a moment all the same.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }

    let client = redis::Client::open(format!("redis://:{token}@127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_connection().expect("the printed token works");
    let _: () = redis::cmd("SET")
        .arg("greeting")
        .arg(b"hello \x00 world")
        .query(&mut conn)
        .unwrap();
    let got: Vec<u8> = redis::cmd("GET").arg("greeting").query(&mut conn).unwrap();
    assert_eq!(got, b"hello \x00 world");
    let balance = pkv_balance(&mut conn);
    assert_eq!(credited(&balance), "1000.000000000", "{balance:?}");
    assert!(balance.contains_key("account"), "{balance:?}");

    if let Some(cli) = redis_cli_on_path() {
        let run = |args: &[&str]| -> String {
            let out = Command::new(&cli)
                .args(["-p", &port.to_string(), "-a", token, "--no-auth-warning"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(run(&["SET", "from-cli", "yes"]).trim(), "OK");
        assert_eq!(run(&["GET", "from-cli"]).trim(), "yes");
        // The same account as the client above: it sees that client's value.
        assert_eq!(run(&["GET", "greeting"]).trim(), "hello \0 world");
        let shown = run(&["PKV.BALANCE"]);
        assert!(
            shown.contains("balance") && shown.contains("spent"),
            "{shown}"
        );
    } else {
        println!("redis-cli is not on PATH: checked with the redis crate only");
    }
    drop(child);
}

/// A connection authenticated with `token`, in RESP3 when `resp3`.
fn connect(pkv: &Server, token: &str, resp3: bool) -> RespConn {
    let mut conn = pkv.resp_authed(token);
    if resp3 {
        let hello = conn.value(&[b"HELLO", b"3"]);
        assert!(matches!(hello, Resp::Map(_)), "HELLO 3 answered {hello}");
    }
    conn
}

/// Reads the next frame, which must be `expected`.
fn expect_frame(conn: &mut RespConn, expected: &Resp, what: &str) {
    let got = conn
        .try_value(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(&got, expected, "{what}: got {got}, expected {expected}");
}

fn pubsub_on_the_embedded_store(resp3: bool) {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer).start();
    let token_a = issuer.token(10);
    let token_b = issuer.token(10);
    // Subscription replies and messages: arrays in RESP2, pushes in RESP3.
    let frame = |items: Vec<Resp>| {
        if resp3 {
            Resp::Push(items)
        } else {
            Resp::Array(items)
        }
    };

    let mut sub = connect(&pkv, &token_a, resp3);
    sub.send(&encode(&[b"SUBSCRIBE", b"news"]));
    expect_frame(
        &mut sub,
        &frame(vec![bulk("subscribe"), bulk("news"), Resp::Int(1)]),
        "SUBSCRIBE",
    );
    sub.send(&encode(&[b"PSUBSCRIBE", b"n*"]));
    expect_frame(
        &mut sub,
        &frame(vec![bulk("psubscribe"), bulk("n*"), Resp::Int(2)]),
        "PSUBSCRIBE",
    );

    // Another account subscribes to the same names: its own namespace.
    let mut other_sub = connect(&pkv, &token_b, resp3);
    other_sub.send(&encode(&[b"SUBSCRIBE", b"news"]));
    expect_frame(
        &mut other_sub,
        &frame(vec![bulk("subscribe"), bulk("news"), Resp::Int(1)]),
        "B SUBSCRIBE",
    );
    other_sub.send(&encode(&[b"PSUBSCRIBE", b"*"]));
    expect_frame(
        &mut other_sub,
        &frame(vec![bulk("psubscribe"), bulk("*"), Resp::Int(2)]),
        "B PSUBSCRIBE",
    );

    // The same account publishes from another connection: the channel and the pattern
    // subscription both receive it, and only those count.
    let mut publisher = connect(&pkv, &token_a, resp3);
    assert_eq!(
        publisher.value(&[b"PUBLISH", b"news", b"hello"]),
        Resp::Int(2)
    );
    let mut got = vec![
        sub.try_value(Duration::from_secs(10)).unwrap(),
        sub.try_value(Duration::from_secs(10)).unwrap(),
    ];
    got.sort();
    let mut expected = vec![
        frame(vec![bulk("message"), bulk("news"), bulk("hello")]),
        frame(vec![
            bulk("pmessage"),
            bulk("n*"),
            bulk("news"),
            bulk("hello"),
        ]),
    ];
    expected.sort();
    assert_eq!(got, expected);
    assert_eq!(
        other_sub.quiet_for(Duration::from_millis(300)),
        Ok(()),
        "another account's subscriber received A's message"
    );

    // What A sees of the channels: its own, without B's.
    let channels = publisher.value(&[b"PUBSUB", b"CHANNELS"]);
    assert_eq!(channels, Resp::Array(vec![bulk("news")]));
    assert_eq!(
        publisher.value(&[b"PUBSUB", b"NUMSUB", b"news"]),
        Resp::Array(vec![bulk("news"), Resp::Int(1)])
    );

    // Another account publishes on the same name: its own subscriber hears it, A's does
    // not.
    let mut other_publisher = connect(&pkv, &token_b, resp3);
    assert_eq!(
        other_publisher.value(&[b"PUBLISH", b"news", b"from b"]),
        Resp::Int(2),
        "B's channel and pattern subscriptions, not A's"
    );
    for _ in 0..2 {
        let got = other_sub.try_value(Duration::from_secs(10)).unwrap();
        assert!(format!("{got}").contains("from b"), "{got}");
    }
    assert_eq!(sub.quiet_for(Duration::from_millis(300)), Ok(()));

    // An account with no subscribers: nobody hears it.
    let mut third = connect(&pkv, &issuer.token(10), resp3);
    assert_eq!(
        third.value(&[b"PUBLISH", b"news", b"from a third account"]),
        Resp::Int(0)
    );
    assert_eq!(sub.quiet_for(Duration::from_millis(300)), Ok(()));
    assert_eq!(other_sub.quiet_for(Duration::from_millis(100)), Ok(()));

    // Unsubscribing: the pattern still hears, then nothing does.
    sub.send(&encode(&[b"UNSUBSCRIBE", b"news"]));
    expect_frame(
        &mut sub,
        &frame(vec![bulk("unsubscribe"), bulk("news"), Resp::Int(1)]),
        "UNSUBSCRIBE",
    );
    assert_eq!(
        publisher.value(&[b"PUBLISH", b"news", b"again"]),
        Resp::Int(1)
    );
    expect_frame(
        &mut sub,
        &frame(vec![
            bulk("pmessage"),
            bulk("n*"),
            bulk("news"),
            bulk("again"),
        ]),
        "pattern message after UNSUBSCRIBE",
    );
    sub.send(&encode(&[b"PUNSUBSCRIBE"]));
    expect_frame(
        &mut sub,
        &frame(vec![bulk("punsubscribe"), bulk("n*"), Resp::Int(0)]),
        "PUNSUBSCRIBE",
    );
    assert_eq!(
        publisher.value(&[b"PUBLISH", b"news", b"gone"]),
        Resp::Int(0)
    );
    assert_eq!(sub.quiet_for(Duration::from_millis(300)), Ok(()));
    // Out of subscribed mode, the connection runs commands again.
    assert_eq!(sub.value(&[b"PING"]), Resp::Simple("PONG".into()));
}

#[test]
fn pubsub_is_per_account_on_the_embedded_store() {
    pubsub_on_the_embedded_store(false);
}

#[test]
fn pubsub_is_per_account_on_the_embedded_store_in_resp3() {
    pubsub_on_the_embedded_store(true);
}

#[test]
fn watch_aborts_exec_when_another_client_writes_the_key() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer).start();
    for resp3 in [false, true] {
        let token = issuer.token(10);
        let mut a = connect(&pkv, &token, resp3);
        let mut b = connect(&pkv, &token, resp3);
        let aborted = if resp3 { Resp::Null } else { Resp::NullArray };

        // B writes the watched key: A's transaction does not run.
        assert_eq!(a.value(&[b"WATCH", b"k"]), ok());
        assert_eq!(b.value(&[b"SET", b"k", b"from b"]), ok());
        assert_eq!(a.value(&[b"MULTI"]), ok());
        assert_eq!(
            a.value(&[b"SET", b"k", b"from a"]),
            Resp::Simple("QUEUED".into())
        );
        assert_eq!(a.value(&[b"EXEC"]), aborted, "resp3={resp3}");
        assert_eq!(a.value(&[b"GET", b"k"]), bulk("from b"));

        // Without B's write it runs (EXEC ended the previous WATCH).
        assert_eq!(a.value(&[b"WATCH", b"k"]), ok());
        assert_eq!(a.value(&[b"MULTI"]), ok());
        a.value(&[b"SET", b"k", b"from a"]);
        assert_eq!(a.value(&[b"EXEC"]), Resp::Array(vec![ok()]));
        assert_eq!(b.value(&[b"GET", b"k"]), bulk("from a"));

        // A write of the same value is still a write.
        assert_eq!(a.value(&[b"WATCH", b"k"]), ok());
        assert_eq!(b.value(&[b"SET", b"k", b"from a"]), ok());
        assert_eq!(a.value(&[b"MULTI"]), ok());
        a.value(&[b"SET", b"k", b"again"]);
        assert_eq!(a.value(&[b"EXEC"]), aborted, "resp3={resp3}");

        // Another account writing its own `k` does not touch A's.
        let mut other = connect(&pkv, &issuer.token(10), resp3);
        assert_eq!(a.value(&[b"WATCH", b"k"]), ok());
        assert_eq!(other.value(&[b"SET", b"k", b"elsewhere"]), ok());
        assert_eq!(a.value(&[b"MULTI"]), ok());
        a.value(&[b"SET", b"k", b"last"]);
        assert_eq!(a.value(&[b"EXEC"]), Resp::Array(vec![ok()]));
        assert_eq!(a.value(&[b"GET", b"k"]), bulk("last"));
        assert_eq!(other.value(&[b"GET", b"k"]), bulk("elsewhere"));

        // UNWATCH forgets the key.
        assert_eq!(a.value(&[b"WATCH", b"k"]), ok());
        assert_eq!(a.value(&[b"UNWATCH"]), ok());
        assert_eq!(b.value(&[b"SET", b"k", b"b again"]), ok());
        assert_eq!(a.value(&[b"MULTI"]), ok());
        a.value(&[b"GET", b"k"]);
        assert_eq!(a.value(&[b"EXEC"]), Resp::Array(vec![bulk("b again")]));
    }
}

/// Every key a full SCAN returns (with `MATCH pattern`), sorted, each once.
fn scan_all(conn: &mut redis::Connection, pattern: Option<&str>) -> Vec<String> {
    let mut cursor = "0".to_owned();
    let mut keys = Vec::new();
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(&cursor).arg("COUNT").arg(2);
        if let Some(pattern) = pattern {
            cmd.arg("MATCH").arg(pattern);
        }
        let (next, page): (String, Vec<String>) = cmd.query(conn).unwrap();
        keys.extend(page);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    keys
}

#[test]
fn tenants_are_isolated_on_the_embedded_store() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer).start();
    let mut a = pkv.client(&issuer.token(10));
    let mut b = pkv.client(&issuer.token(10));

    let _: () = redis::cmd("SET")
        .arg("secret")
        .arg("a's")
        .query(&mut a)
        .unwrap();
    let seen: Option<String> = redis::cmd("GET").arg("secret").query(&mut b).unwrap();
    assert_eq!(seen, None, "B read A's key");

    let _: () = redis::cmd("SET")
        .arg("secret")
        .arg("b's")
        .query(&mut b)
        .unwrap();
    let mine: String = redis::cmd("GET").arg("secret").query(&mut a).unwrap();
    assert_eq!(mine, "a's", "B's write reached A's key");
    let theirs: String = redis::cmd("GET").arg("secret").query(&mut b).unwrap();
    assert_eq!(theirs, "b's");

    // Keys only A has: no walk or lookup of B's shows them.
    for key in ["only-a", "only-a:1", "only-a:2"] {
        let _: () = redis::cmd("SET").arg(key).arg("x").query(&mut a).unwrap();
    }
    let exists: i64 = redis::cmd("EXISTS")
        .arg("only-a")
        .arg("only-a:1")
        .query(&mut b)
        .unwrap();
    assert_eq!(exists, 0, "EXISTS shows A's keys to B");
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut b).unwrap();
    keys.sort();
    assert_eq!(keys, ["secret"], "KEYS * for B");
    let keys: Vec<String> = redis::cmd("KEYS").arg("only-a*").query(&mut b).unwrap();
    assert!(keys.is_empty(), "KEYS only-a* for B: {keys:?}");
    assert_eq!(scan_all(&mut b, None), ["secret"], "SCAN for B");
    assert!(scan_all(&mut b, Some("only-a*")).is_empty());
    let ty: String = redis::cmd("TYPE").arg("only-a").query(&mut b).unwrap();
    assert_eq!(ty, "none");
    // A sees its own, and only its own.
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut a).unwrap();
    keys.sort();
    assert_eq!(keys, ["only-a", "only-a:1", "only-a:2", "secret"]);
    assert_eq!(
        scan_all(&mut a, None),
        ["only-a", "only-a:1", "only-a:2", "secret"]
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg("only-a")
        .arg("only-a:1")
        .query(&mut a)
        .unwrap();
    assert_eq!(exists, 2);
    // B deleting the name deletes nothing of A's.
    let deleted: i64 = redis::cmd("DEL").arg("only-a").query(&mut b).unwrap();
    assert_eq!(deleted, 0);
    let still: Option<String> = redis::cmd("GET").arg("only-a").query(&mut a).unwrap();
    assert_eq!(still.as_deref(), Some("x"));

    // The same account through another token (`sub`) shares the keys; a token of another
    // account does not.
    let c1 = issuer.mint(10, 3600, Some("tenant-c"));
    let c2 = issuer.mint(10, 3600, Some("tenant-c"));
    let mut c = pkv.client(&c1);
    let _: () = redis::cmd("SET")
        .arg("shared")
        .arg("c")
        .query(&mut c)
        .unwrap();
    let mut c_again = pkv.client(&c2);
    let shared: Option<String> = redis::cmd("GET").arg("shared").query(&mut c_again).unwrap();
    assert_eq!(shared.as_deref(), Some("c"));
    let leaked: Option<String> = redis::cmd("GET").arg("shared").query(&mut a).unwrap();
    assert_eq!(leaked, None);

    // Inside a transaction too.
    let (sees,): (Option<String>,) = redis::pipe()
        .atomic()
        .cmd("GET")
        .arg("shared")
        .query(&mut b)
        .unwrap();
    assert_eq!(sees, None);
}

#[test]
fn a_token_is_credited_once_by_the_ledger_in_the_store() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer).start();
    let token = issuer.token(7);

    let mut first = pkv.client(&token);
    let mut second = pkv.client(&token);
    let one = pkv_balance(&mut first);
    let two = pkv_balance(&mut second);
    assert_eq!(credited(&one), "7.000000000", "{one:?}");
    assert_eq!(credited(&two), "7.000000000", "{two:?}");
    assert_eq!(one.get("account"), two.get("account"));

    // A raw AUTH on a third connection, after the others: still once.
    let mut third = pkv.resp_authed(&token);
    drop(first);
    drop(second);
    let mut again = pkv.client(&token);
    assert_eq!(credited(&pkv_balance(&mut again)), "7.000000000");
    assert_eq!(third.value(&[b"PING"]), Resp::Simple("PONG".into()));

    // Two different tokens of one account add up, each once.
    let t1 = issuer.mint(3, 3600, Some("ledger-acct"));
    let t2 = issuer.mint(4, 3600, Some("ledger-acct"));
    let mut c1 = pkv.client(&t1);
    let mut c2 = pkv.client(&t2);
    let _ = pkv.client(&t1);
    let _ = pkv.client(&t2);
    assert_eq!(credited(&pkv_balance(&mut c1)), "7.000000000");
    let both = pkv_balance(&mut c2);
    assert_eq!(credited(&both), "7.000000000", "{both:?}");
    assert_eq!(both.get("account").map(String::as_str), Some("ledger-acct"));
}

/// The account a connection is authenticated as, from `PKV.BALANCE`.
fn account_of(conn: &mut redis::Connection) -> String {
    let reply: redis::Value = redis::cmd("PKV.BALANCE").query(conn).unwrap();
    let flat: Vec<redis::Value> = match reply {
        redis::Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        redis::Value::Array(items) => items,
        other => panic!("PKV.BALANCE: {other:?}"),
    };
    let at = flat
        .iter()
        .position(|v| matches!(v, redis::Value::BulkString(b) if b == b"account"))
        .expect("PKV.BALANCE names the account");
    match &flat[at + 1] {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("account id: {other:?}"),
    }
}

#[test]
fn sort_patterns_read_only_the_tenants_own_keys_on_the_embedded_store() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer).start();
    let mut a = pkv.client(&issuer.token(10));
    let mut b = pkv.client(&issuer.token(10));
    let run = |conn: &mut redis::Connection, line: &str| -> redis::Value {
        let mut words = line.split(' ');
        let mut cmd = redis::cmd(words.next().unwrap());
        for w in words {
            cmd.arg(w);
        }
        cmd.query(conn).unwrap()
    };
    // A's weights, objects and hashes, under the names B's patterns will form.
    for line in [
        "SET w_1 30",
        "SET w_2 20",
        "SET w_3 10",
        "SET o_1 a-one",
        "SET o_2 a-two",
        "HSET h_1 f a-field",
        "SET secret a-secret",
    ] {
        run(&mut a, line);
    }
    // B has the list to sort and a weight of its own for one element only.
    run(&mut b, "RPUSH nums 1 2 3");
    run(&mut b, "SET w_2 99");
    let sorted: Vec<Option<String>> = redis::cmd("SORT")
        .arg("nums")
        .arg("BY")
        .arg("w_*")
        .arg("GET")
        .arg("#")
        .arg("GET")
        .arg("o_*")
        .arg("GET")
        .arg("h_*->f")
        .arg("GET")
        .arg("w_*")
        .query(&mut b)
        .unwrap();
    // Missing weights sort as 0 (ties by element), B's w_2 = 99 last; no A value appears.
    let none = None;
    assert_eq!(
        sorted,
        [
            Some("1".to_owned()),
            none.clone(),
            none.clone(),
            none.clone(),
            Some("3".to_owned()),
            none.clone(),
            none.clone(),
            none.clone(),
            Some("2".to_owned()),
            none.clone(),
            none.clone(),
            Some("99".to_owned()),
        ],
        "B's SORT read another tenant's keys"
    );
    // An element naming A's key in full (its prefix included) still lands in B's
    // namespace: the prefix goes in front of the pattern, before the element.
    let a_secret = format!(
        "{}secret",
        String::from_utf8(
            pkv::namespace::Namespace::new(&account_of(&mut a))
                .prefix()
                .to_vec()
        )
        .unwrap()
    );
    let _: i64 = redis::cmd("RPUSH")
        .arg("names")
        .arg(&a_secret)
        .arg("secret")
        .query(&mut b)
        .unwrap();
    let got: Vec<Option<String>> = redis::cmd("SORT")
        .arg("names")
        .arg("BY")
        .arg("nosort")
        .arg("GET")
        .arg("*")
        .arg("GET")
        .arg("*->f")
        .query(&mut b)
        .unwrap();
    assert_eq!(got, [None, None, None, None], "B reached A's secret");
    // A's own SORT of the same shape sees A's values: the patterns do resolve.
    run(&mut a, "RPUSH nums 1 2 3");
    let mine: Vec<Option<String>> = redis::cmd("SORT")
        .arg("nums")
        .arg("BY")
        .arg("w_*")
        .arg("GET")
        .arg("o_*")
        .query(&mut a)
        .unwrap();
    assert_eq!(
        mine,
        [None, Some("a-two".to_owned()), Some("a-one".to_owned())]
    );
    // STORE writes B's key, not A's.
    let stored: i64 = redis::cmd("SORT")
        .arg("nums")
        .arg("STORE")
        .arg("secret")
        .query(&mut b)
        .unwrap();
    assert_eq!(stored, 3);
    let still: String = redis::cmd("GET").arg("secret").query(&mut a).unwrap();
    assert_eq!(still, "a-secret");
}

/// PFCOUNT writes the cardinality it computes into the value (Redis's cache), and Redis
/// counts that as a change of the key: a transaction watching it does not run. A PFCOUNT
/// answered from the cache changes nothing. Both backends must agree.
#[test]
fn a_pfcount_that_caches_its_count_aborts_a_watching_transaction_on_both_backends() {
    let issuer = Issuer::new();
    let redis = common::Redis::start();
    let upstream = PkvConfig::new(&redis, &issuer).start();
    let embedded = PkvConfig::embedded(&issuer).start();
    for (name, pkv) in [("upstream", &upstream), ("embedded", &embedded)] {
        let token = issuer.token(10);
        let mut a = connect(pkv, &token, false);
        let mut b = connect(pkv, &token, false);
        assert_eq!(a.value(&[b"PFADD", b"h", b"x", b"y"]), Resp::Int(1));
        // The count is stale after PFADD: B's PFCOUNT computes and caches it.
        assert_eq!(a.value(&[b"WATCH", b"h"]), ok());
        assert_eq!(b.value(&[b"PFCOUNT", b"h"]), Resp::Int(2));
        assert_eq!(a.value(&[b"MULTI"]), ok());
        assert_eq!(a.value(&[b"PING"]), Resp::Simple("QUEUED".into()));
        assert_eq!(a.value(&[b"EXEC"]), Resp::NullArray, "{name}");
        // Now cached: another PFCOUNT changes nothing, and the transaction runs.
        assert_eq!(a.value(&[b"WATCH", b"h"]), ok());
        assert_eq!(b.value(&[b"PFCOUNT", b"h"]), Resp::Int(2));
        assert_eq!(a.value(&[b"MULTI"]), ok());
        assert_eq!(a.value(&[b"PING"]), Resp::Simple("QUEUED".into()));
        assert_eq!(
            a.value(&[b"EXEC"]),
            Resp::Array(vec![Resp::Simple("PONG".into())]),
            "{name}"
        );
    }
}
