//! Authentication end to end, against real redis-server and pkv processes: refused tokens,
//! the handshake before AUTH, redeeming a quota token once however many connections or
//! processes present it, session tokens, top-ups, expiry on a live connection, and the
//! `pkv` command line for keys and tokens.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use pkv::auth::token::{sign, Audience, Claims, USAGE_CREATE_SESSION, USAGE_MANAGE_SESSION};

use common::{now, pkv_balance, value_text, Issuer, LedgerView, PkvConfig, Redis};

const NANOS: i64 = 1_000_000_000;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

/// Claims of a valid quota token from `issuer` for 5 units, valid for an hour.
fn quota_claims(issuer: &Issuer) -> Claims {
    let now = now();
    Claims {
        iss: Some(issuer.did()),
        aud: Some(Audience::One("pkv".into())),
        sub: None,
        exp: Some(now + 3600),
        nbf: Some(now),
        iat: Some(now),
        jti: Some(uuid::Uuid::new_v4().to_string()),
        quantity: Some(5),
        usage: Some(USAGE_CREATE_SESSION),
    }
}

fn eddsa(issuer: &Issuer, claims: &Claims) -> String {
    sign(claims, Algorithm::EdDSA, &issuer.key.encoding_key())
}

/// A redis crate command on `conn`, with server errors as `Err(text)`.
fn query(conn: &mut redis::Connection, args: &[&str]) -> Result<redis::Value, String> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<redis::Value>(conn) {
        Ok(redis::Value::ServerError(e)) => Err(format!("{e:?}")),
        Ok(v) => Ok(v),
        Err(e) => Err(e.to_string()),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// === 1. refused tokens ===

#[test]
fn refused_tokens_get_wrongpass_with_a_reason_and_credit_nothing() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_TOKEN_LEEWAY", "0")
        .start();
    let now = now();

    let mut cases: Vec<(&str, String, &[&str])> = Vec::new();

    let mut c = quota_claims(&issuer);
    c.exp = Some(now - 5);
    c.nbf = Some(now - 100);
    c.iat = Some(now - 100);
    cases.push(("expired", eddsa(&issuer, &c), &["expired"]));

    let mut c = quota_claims(&issuer);
    c.nbf = Some(now + 600);
    cases.push(("nbf in the future", eddsa(&issuer, &c), &["not yet valid"]));

    let mut c = quota_claims(&issuer);
    c.aud = Some(Audience::One("some-other-service".into()));
    cases.push(("wrong audience", eddsa(&issuer, &c), &["audience"]));

    let mut c = quota_claims(&issuer);
    c.aud = Some(Audience::Many(vec!["a".into(), "b".into()]));
    cases.push((
        "audience list without pkv",
        eddsa(&issuer, &c),
        &["audience"],
    ));

    let stranger = Issuer::new();
    cases.push(("unknown issuer", stranger.token(5), &["issuer"]));

    // The stranger signs but claims to be the trusted issuer.
    let c = quota_claims(&issuer);
    cases.push((
        "trusted iss, signed by another key",
        eddsa(&stranger, &c),
        &["signature"],
    ));

    let c = quota_claims(&issuer);
    let payload = b64(&serde_json::to_vec(&c).unwrap());
    let none = format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#));
    cases.push(("alg none", none, &["algorithm", "signature"]));

    let public = issuer.key.public_key();
    let c = quota_claims(&issuer);
    let hs_public = sign(&c, Algorithm::HS256, &EncodingKey::from_secret(&public));
    cases.push((
        "HS256 keyed with the issuer's public key",
        hs_public,
        &["algorithm", "signature"],
    ));

    let c = quota_claims(&issuer);
    let hs_did = sign(
        &c,
        Algorithm::HS256,
        &EncodingKey::from_secret(issuer.did().as_bytes()),
    );
    cases.push((
        "HS256 keyed with the issuer's DID",
        hs_did,
        &["algorithm", "signature"],
    ));

    // The same confusion dressed up as a session token (usage 2).
    let mut c = quota_claims(&issuer);
    c.usage = Some(USAGE_MANAGE_SESSION);
    c.sub = Some("victim".into());
    let hs_session = sign(&c, Algorithm::HS256, &EncodingKey::from_secret(&public));
    cases.push((
        "HS256 usage 2 keyed with the public key",
        hs_session,
        &["algorithm", "signature", "issuer"],
    ));

    let c = quota_claims(&issuer);
    let good = eddsa(&issuer, &c);
    let parts: Vec<&str> = good.split('.').collect();
    let mut payload: serde_json::Value = serde_json::from_slice(&unb64(parts[1])).unwrap();
    payload["quantity"] = serde_json::json!(1_000_000);
    let altered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_vec(&payload).unwrap()),
        parts[2]
    );
    cases.push(("payload altered after signing", altered, &["signature"]));

    let mut c = quota_claims(&issuer);
    c.usage = Some(USAGE_MANAGE_SESSION);
    cases.push(("usage 2 on an EdDSA token", eddsa(&issuer, &c), &["usage"]));

    let mut c = quota_claims(&issuer);
    c.usage = None;
    cases.push(("usage missing", eddsa(&issuer, &c), &["usage"]));

    let mut c = quota_claims(&issuer);
    c.quantity = Some(0);
    cases.push(("quantity 0", eddsa(&issuer, &c), &["quantity"]));

    let mut c = quota_claims(&issuer);
    c.quantity = Some(-3);
    cases.push(("negative quantity", eddsa(&issuer, &c), &["quantity"]));

    let mut c = quota_claims(&issuer);
    c.jti = None;
    cases.push(("missing jti", eddsa(&issuer, &c), &["jti"]));

    cases.push(("garbage: hello", "hello".into(), &["malformed"]));
    cases.push(("garbage: a.b.c", "a.b.c".into(), &["malformed"]));
    cases.push(("garbage: empty", String::new(), &["malformed"]));
    // Past MAX_TOKEN_LEN (8 KiB) a token is refused without being decoded (SPEC 3).
    cases.push(("garbage: very long", "x".repeat(10_000), &["too long"]));
    cases.push((
        "garbage: long with dots",
        format!(
            "{}.{}.{}",
            "A".repeat(3000),
            "B".repeat(3000),
            "C".repeat(3000)
        ),
        &["too long"],
    ));

    let mut failures = Vec::new();
    for (name, token, words) in &cases {
        let mut conn = pkv.resp();
        let reply = text(&conn.call(&[b"AUTH", token.as_bytes()]));
        let reason = reply.strip_prefix("-WRONGPASS ");
        match reason {
            None => failures.push(format!("{name}: expected -WRONGPASS, got {reply:?}")),
            Some(reason) => {
                let lower = reason.to_lowercase();
                if !words.iter().any(|w| lower.contains(w)) {
                    failures.push(format!("{name}: reason {reason:?} names none of {words:?}"));
                }
            }
        }
        // The refusal leaves the connection unauthenticated.
        let after = conn.call_text(&["GET", "k"]);
        if after != "-NOAUTH Authentication required.\r\n" {
            failures.push(format!("{name}: GET after refusal answered {after:?}"));
        }
        // The two-argument form is refused the same way.
        let reply = text(&conn.call(&[b"AUTH", b"someone", token.as_bytes()]));
        if !reply.starts_with("-WRONGPASS ") {
            failures.push(format!("{name}: AUTH user token answered {reply:?}"));
        }
    }

    let ledger = LedgerView::read(&redis);
    for (key, credited) in &ledger.credited {
        if *credited > 0 {
            failures.push(format!("{key} was credited {credited}"));
        }
    }
    if !ledger.jtis.is_empty() {
        failures.push(format!("token ids were redeemed: {:?}", ledger.jtis));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The same pkv accepts a good token, so the refusals above were about the tokens.
    let mut conn = pkv.resp_authed(&issuer.token(3));
    assert_eq!(conn.call_text(&["SET", "k", "v"]), "+OK\r\n");
}

// === 2. the handshake before AUTH ===

#[test]
fn before_auth_only_the_handshake_is_served() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer).start();
    let mut conn = pkv.resp();
    let noauth = "-NOAUTH Authentication required.\r\n";
    let refused: &[&[&str]] = &[
        &["GET", "k"],
        &["SET", "k", "stolen"],
        &["KEYS", "*"],
        &["CONFIG", "GET", "*"],
        &["NOSUCHCOMMAND", "x"],
        &["PKV.BALANCE"],
        &["PKV.SESSION"],
        &["PKV.TOPUP", "x"],
        &["SUBSCRIBE", "ch"],
        &["MULTI"],
        &["EXEC"],
        &["SELECT", "0"],
        &["FLUSHALL"],
        &["EVAL", "return 1", "0"],
        &["CLIENT", "LIST"],
        &["GET"],
    ];
    let mut failures = Vec::new();
    for args in refused {
        let reply = conn.call_text(args);
        if reply != noauth {
            failures.push(format!("{args:?} answered {reply:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    assert_eq!(conn.call_text(&["PING"]), "+PONG\r\n");
    assert_eq!(conn.call_text(&["PING", "hi"]), "$2\r\nhi\r\n");
    assert_eq!(conn.call_text(&["ECHO", "x"]), "$1\r\nx\r\n");
    assert_eq!(conn.call_text(&["RESET"]), "+RESET\r\n");
    let hello = conn.call_text(&["HELLO", "3"]);
    assert!(hello.starts_with("-NOAUTH"), "HELLO 3 answered {hello:?}");
    let hello = conn.call_text(&["HELLO", "3", "AUTH", "u", "not-a-token"]);
    assert!(hello.starts_with("-WRONGPASS"), "{hello:?}");
    // Still RESP2 and unauthenticated after the refused HELLO.
    assert_eq!(conn.call_text(&["GET", "k"]), noauth);

    let token = issuer.token(5);
    let hello = conn.call_text(&["HELLO", "3", "AUTH", "u", &token]);
    assert!(
        hello.starts_with('%'),
        "HELLO 3 AUTH should answer a RESP3 map, got {hello:?}"
    );
    assert!(hello.contains("proto\r\n:3\r\n"), "{hello:?}");
    // RESP3 now: the SET refused before AUTH never happened, so GET is a RESP3 null.
    assert_eq!(conn.call_text(&["GET", "k"]), "_\r\n");
    assert_eq!(conn.call_text(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(conn.call_text(&["GET", "k"]), "$1\r\nv\r\n");
    // RESET forgets the token (and goes back to RESP2).
    assert_eq!(conn.call_text(&["RESET"]), "+RESET\r\n");
    assert_eq!(conn.call_text(&["GET", "k"]), noauth);

    // QUIT before AUTH answers and closes.
    let mut other = pkv.resp();
    assert_eq!(other.call_text(&["QUIT"]), "+OK\r\n");
    let (_, closed) = other.read_to_close(Duration::from_secs(3));
    assert!(closed, "QUIT did not close the connection");
}

// === 3. one token, many connections ===

#[test]
fn the_same_token_on_many_connections_credits_once() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer).start();
    let token = issuer.token(42);

    // 20 connections at once, before any other has redeemed the token, so they race
    // in the ledger rather than meeting a cached redemption.
    let barrier = Arc::new(Barrier::new(20));
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let barrier = barrier.clone();
            let token = token.clone();
            let port = pkv.port;
            std::thread::spawn(move || {
                let mut conn = common::RespConn::connect(port);
                barrier.wait();
                let reply = conn.call(&[b"AUTH", token.as_bytes()]);
                let incr = conn.call_text(&["INCR", "hits"]);
                (text(&reply), incr)
            })
        })
        .collect();
    for t in threads {
        let (auth, incr) = t.join().unwrap();
        assert_eq!(auth, "+OK\r\n");
        assert!(incr.starts_with(':'), "{incr:?}");
    }

    // Two more, one after the other.
    let mut a = pkv.client(&token);
    let mut b = pkv.client(&token);
    let _: () = redis::cmd("SET")
        .arg("shared")
        .arg("1")
        .query(&mut a)
        .unwrap();
    let got: String = redis::cmd("GET").arg("shared").query(&mut b).unwrap();
    assert_eq!(got, "1", "both connections are the same account");

    let balance = pkv_balance(&mut a);
    assert_eq!(common::credited(&balance), "42.000000000", "{balance:?}");
    let hits: i64 = redis::cmd("GET").arg("hits").query(&mut b).unwrap();
    assert_eq!(hits, 20);

    let ledger = LedgerView::read(&redis);
    assert_eq!(ledger.credited.len(), 1, "{:?}", ledger.credited);
    assert_eq!(ledger.total(), 42 * NANOS, "{:?}", ledger.credited);
    assert_eq!(ledger.jtis.len(), 1, "{:?}", ledger.jtis);
    let account_key = format!(
        "pkv:ledger:acct:{}",
        pkv::namespace::escape_account(&balance["account"])
    );
    assert_eq!(ledger.credited.get(&account_key), Some(&(42 * NANOS)));
}

// === 4. one token, two pkv processes ===

#[test]
fn the_same_token_on_two_pkv_processes_credits_once() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let first = PkvConfig::new(&redis, &issuer);
    let second = PkvConfig {
        upstream: first.upstream.clone(),
        issuers: first.issuers.clone(),
        secret_seed: first.secret_seed.clone(),
        files: Vec::new(),
        extra: Vec::new(),
    };
    let (p1, p2) = (first.start(), second.start());
    let token = issuer.token(9);

    // Both at once, so neither process can lean on what it saw before.
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = [p1.port, p2.port]
        .into_iter()
        .map(|port| {
            let barrier = barrier.clone();
            let token = token.clone();
            std::thread::spawn(move || {
                let mut conn = common::RespConn::connect(port);
                barrier.wait();
                text(&conn.call(&[b"AUTH", token.as_bytes()]))
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), "+OK\r\n");
    }

    let mut c1 = p1.client(&token);
    let mut c2 = p2.client(&token);
    let _: () = redis::cmd("SET")
        .arg("from-one")
        .arg("hello")
        .query(&mut c1)
        .unwrap();
    let got: Option<String> = redis::cmd("GET").arg("from-one").query(&mut c2).unwrap();
    assert_eq!(got.as_deref(), Some("hello"), "pkv 2 sees pkv 1's write");
    let _: () = redis::cmd("SET")
        .arg("from-two")
        .arg("world")
        .query(&mut c2)
        .unwrap();
    let got: Option<String> = redis::cmd("GET").arg("from-two").query(&mut c1).unwrap();
    assert_eq!(got.as_deref(), Some("world"), "pkv 1 sees pkv 2's write");

    // Each PKV.BALANCE gives its process's lease back; once both have, both see the
    // whole credit (a lease still held by the other process counts as debited).
    let _ = pkv_balance(&mut c1);
    let b2 = pkv_balance(&mut c2);
    let b1 = pkv_balance(&mut c1);
    assert_eq!(b1["account"], b2["account"]);
    assert_eq!(common::credited(&b1), "9.000000000", "{b1:?}");
    assert_eq!(common::credited(&b2), "9.000000000", "{b2:?}");
    let ledger = LedgerView::read(&redis);
    assert_eq!(ledger.total(), 9 * NANOS, "{:?}", ledger.credited);
    assert_eq!(ledger.jtis.len(), 1);
}

// === 5. session tokens ===

#[test]
fn session_tokens_resume_the_account_and_credit_nothing() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer).start();
    let mut first = pkv.client(&issuer.token(11));
    let _: () = redis::cmd("SET")
        .arg("mine")
        .arg("data")
        .query(&mut first)
        .unwrap();
    let before = pkv_balance(&mut first);
    assert_eq!(common::credited(&before), "11.000000000");

    let session: String = redis::cmd("PKV.SESSION").query(&mut first).unwrap();
    let (header, claims) = pkv::auth::token::peek(&session).expect("a JWT");
    assert_eq!(header.alg, Algorithm::HS256);
    assert_eq!(claims.usage, Some(USAGE_MANAGE_SESSION));
    assert_eq!(claims.sub.as_deref(), Some(before["account"].as_str()));
    assert!(claims.jti.is_some(), "{claims:?}");
    // Default lifetime: the maximum storage TTL (a year by default).
    let lifetime = claims.exp.unwrap() - now();
    assert!(
        (31_536_000 - 60..=31_536_000).contains(&lifetime),
        "default lifetime {lifetime}"
    );

    let mut resumed = pkv.client(&session);
    let got: Option<String> = redis::cmd("GET").arg("mine").query(&mut resumed).unwrap();
    assert_eq!(got.as_deref(), Some("data"));
    let after = pkv_balance(&mut resumed);
    assert_eq!(after["account"], before["account"]);
    assert_eq!(common::credited(&after), common::credited(&before));

    let short: String = redis::cmd("PKV.SESSION")
        .arg(10)
        .query(&mut resumed)
        .unwrap();
    let (_, claims) = pkv::auth::token::peek(&short).unwrap();
    let lifetime = claims.exp.unwrap() - now();
    assert!(
        (8..=10).contains(&lifetime),
        "PKV.SESSION 10 gave {lifetime}"
    );
    let mut again = pkv.resp_authed(&short);
    assert_eq!(again.call_text(&["GET", "mine"]), "$4\r\ndata\r\n");

    for bad in [
        &["PKV.SESSION", "0"][..],
        &["PKV.SESSION", "-5"],
        &["PKV.SESSION", "abc"],
    ] {
        let reply = query(&mut resumed, bad);
        assert!(reply.is_err(), "{bad:?} answered {reply:?}");
    }

    // A session token from a pkv with another secret seed is not ours.
    let other = PkvConfig::new(&redis, &issuer).start();
    let mut foreign = other.client(&issuer.token(1));
    let foreign_session: String = redis::cmd("PKV.SESSION").query(&mut foreign).unwrap();
    let mut conn = pkv.resp();
    let reply = text(&conn.call(&[b"AUTH", foreign_session.as_bytes()]));
    assert!(reply.starts_with("-WRONGPASS "), "{reply:?}");

    let ledger = LedgerView::read(&redis);
    assert_eq!(ledger.total(), 12 * NANOS, "{:?}", ledger.credited);
}

// === 6. top-ups ===

#[test]
fn topup_credits_the_current_account_once() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer).start();
    let first = issuer.token(5);
    let mut conn = pkv.client(&first);
    assert_eq!(common::credited(&pkv_balance(&mut conn)), "5.000000000");

    let more = issuer.token(7);
    let credited = query(&mut conn, &["PKV.TOPUP", &more]).unwrap();
    assert_eq!(value_text(&credited), "7");
    let balance = pkv_balance(&mut conn);
    assert_eq!(common::credited(&balance), "12.000000000");

    let again = query(&mut conn, &["PKV.TOPUP", &more]);
    assert!(again.is_err(), "second top-up answered {again:?}");
    let reused = query(&mut conn, &["PKV.TOPUP", &first]);
    assert!(
        reused.is_err(),
        "top-up with the AUTH token answered {reused:?}"
    );
    let session: String = redis::cmd("PKV.SESSION").query(&mut conn).unwrap();
    let with_session = query(&mut conn, &["PKV.TOPUP", &session]);
    assert!(
        with_session.is_err(),
        "top-up with a session token answered {with_session:?}"
    );
    let garbage = query(&mut conn, &["PKV.TOPUP", "garbage"]);
    assert!(garbage.is_err(), "{garbage:?}");
    assert_eq!(common::credited(&pkv_balance(&mut conn)), "12.000000000");

    // Ten connections topping up the same new token at once: exactly one is credited.
    let contested = issuer.token(100);
    let barrier = Arc::new(Barrier::new(10));
    let threads: Vec<_> = (0..10)
        .map(|_| {
            let barrier = barrier.clone();
            let (first, contested) = (first.clone(), contested.clone());
            let port = pkv.port;
            std::thread::spawn(move || {
                let mut conn = common::RespConn::connect(port);
                assert_eq!(conn.call_text(&["AUTH", &first]), "+OK\r\n");
                barrier.wait();
                conn.call_text(&["PKV.TOPUP", &contested])
            })
        })
        .collect();
    let replies: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let credited = replies.iter().filter(|r| *r == ":100\r\n").count();
    let refused = replies.iter().filter(|r| r.starts_with('-')).count();
    assert_eq!((credited, refused), (1, 9), "{replies:?}");
    assert_eq!(common::credited(&pkv_balance(&mut conn)), "112.000000000");

    // The topped-up token is spent: presented to AUTH, it opens nothing (SPEC 3).
    let mut other = common::RespConn::connect(pkv.port);
    assert_eq!(
        other.call_text(&["AUTH", &more]),
        "-WRONGPASS token already spent on a top-up\r\n"
    );

    let ledger = LedgerView::read(&redis);
    assert_eq!(ledger.total(), 112 * NANOS, "{:?}", ledger.credited);
    assert_eq!(ledger.credited.len(), 1, "{:?}", ledger.credited);
}

// === 7. expiry on a live connection ===

#[test]
fn an_expired_token_stops_a_live_connection_until_auth_again() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_TOKEN_LEEWAY", "0")
        .start();
    // Mint at the start of a second, so the token really has about 2 s to live.
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_millis()
        > 100
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let token = issuer.mint(5, 2, None);
    let exp = pkv::auth::token::peek(&token).unwrap().1.exp.unwrap();
    let mut conn = pkv.resp_authed(&token);
    assert_eq!(conn.call_text(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(conn.call_text(&["GET", "k"]), "$1\r\nv\r\n");

    while now() <= exp {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        conn.call_text(&["GET", "k"]),
        "-NOAUTH token expired; AUTH again\r\n"
    );
    assert_eq!(
        conn.call_text(&["SET", "k", "w"]),
        "-NOAUTH token expired; AUTH again\r\n"
    );
    // An expired connection cannot mint a long-lived session token either.
    assert_eq!(
        conn.call_text(&["PKV.SESSION"]),
        "-NOAUTH token expired; AUTH again\r\n"
    );
    // The expired token itself is now refused.
    let reply = conn.call_text(&["AUTH", &token]);
    assert!(
        reply.starts_with("-WRONGPASS") && reply.contains("expired"),
        "{reply:?}"
    );
    assert_eq!(
        conn.call_text(&["GET", "k"]),
        "-NOAUTH token expired; AUTH again\r\n"
    );

    let fresh = issuer.token(5);
    assert_eq!(conn.call_text(&["AUTH", &fresh]), "+OK\r\n");
    assert_eq!(conn.call_text(&["PING"]), "+PONG\r\n");
    // A fresh token without `sub` is a fresh account: a different namespace.
    assert_eq!(conn.call_text(&["SET", "k2", "x"]), "+OK\r\n");
    assert_eq!(conn.call_text(&["GET", "k2"]), "$1\r\nx\r\n");
}

// === 8. a pool of connections ===

#[test]
fn a_pool_of_100_connections_with_the_same_auth_all_work() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer).start();
    let token = issuer.token(3);
    let mut conns: Vec<_> = (0..100).map(|_| pkv.resp()).collect();
    let auth = common::encode(&[b"AUTH", token.as_bytes()]);
    for c in &mut conns {
        c.send(&auth);
    }
    for (i, c) in conns.iter_mut().enumerate() {
        assert_eq!(text(&c.reply()), "+OK\r\n", "connection {i}");
    }
    for c in &mut conns {
        c.send(&common::encode(&[b"INCR", b"n"]));
    }
    let mut seen: Vec<i64> = conns
        .iter_mut()
        .map(|c| {
            let r = text(&c.reply());
            r.trim_start_matches(':').trim().parse().unwrap_or(-1)
        })
        .collect();
    seen.sort();
    assert_eq!(seen, (1..=100).collect::<Vec<_>>());
    let ledger = LedgerView::read(&redis);
    assert_eq!(ledger.total(), 3 * NANOS, "{:?}", ledger.credited);
    assert_eq!(ledger.jtis.len(), 1);
}

// === quantities too large for the ledger ===

#[test]
fn a_quantity_too_large_to_count_is_refused_as_wrongpass() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer).start();
    // 10^10 units are 10^19 nano-units: more than an i64 holds.
    let huge = issuer.mint(10_000_000_000, 3600, None);
    let mut conn = pkv.resp();
    let reply = conn.call_text(&["AUTH", &huge]);
    let ledger = LedgerView::read(&redis);
    assert_eq!(ledger.total(), 0, "{:?}", ledger.credited);
    assert!(ledger.jtis.is_empty(), "{:?}", ledger.jtis);
    assert_eq!(
        conn.call_text(&["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert!(
        reply.starts_with("-WRONGPASS ") && reply.contains("quantity"),
        "a refused token gets -WRONGPASS <reason> (SPEC 4); got {reply:?}"
    );
}

#[test]
fn a_top_up_that_would_overflow_the_balance_burns_nothing() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer).start();
    // 9 * 10^9 units fit (9 * 10^18 nano-units); another 10^9 units would not.
    let whale = issuer.mint(9_000_000_000, 3600, Some("whale"));
    let mut conn = pkv.resp_authed(&whale);
    let more = issuer.mint(1_000_000_000, 3600, None);
    let jti = pkv::auth::token::peek(&more).unwrap().1.jti.unwrap();
    let reply = conn.call_text(&["PKV.TOPUP", &more]);
    assert!(
        reply.starts_with('-'),
        "the overflowing top-up answered {reply:?}"
    );

    // Refused means nothing happened: the token is not marked redeemed, so it can still
    // be redeemed on its own.
    let ledger = LedgerView::read(&redis);
    assert_eq!(
        ledger.credited.get("pkv:ledger:acct:whale"),
        Some(&9_000_000_000_000_000_000)
    );
    let burned = ledger.jtis.contains(&format!("pkv:ledger:jti:{jti}"));
    let mut fresh = pkv.resp();
    let auth = fresh.call_text(&["AUTH", &more]);
    let balance = fresh.call_text(&["PKV.BALANCE"]);
    assert!(
        !burned,
        "the failed top-up still marked token {jti} redeemed and credited nothing; \
         AUTH with it then answered {auth:?} and PKV.BALANCE {balance:?}"
    );
    assert_eq!(auth, "+OK\r\n");
    assert!(balance.contains("1000000000.000000000"), "{balance:?}");
}

// === 9. the command line ===

fn pkv_cli(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pkv"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn keygen_mint_and_inspect_make_tokens_pkv_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = pkv_cli(&["keygen"], dir.path());
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let seed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("seed:"))
        .unwrap_or_else(|| panic!("no seed line in {stdout:?}"))
        .trim()
        .to_owned();
    let did = stdout
        .split_whitespace()
        .find(|w| w.starts_with("did:key:z6Mk"))
        .unwrap_or_else(|| panic!("no did:key:z6Mk... in {stdout:?}"))
        .to_owned();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&seed)
        .unwrap();
    assert_eq!(decoded.len(), 32, "seed {seed:?}");
    let key = pkv::auth::keys::IssuerKey::from_seed(&decoded.try_into().unwrap());
    assert_eq!(
        key.did(),
        did,
        "the printed DID belongs to the printed seed"
    );

    let out = pkv_cli(
        &[
            "token",
            "mint",
            "--issuer-seed",
            &seed,
            "--quantity",
            "7",
            "--audience",
            "pkv",
            "--sub",
            "bob",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token:?}");

    let out = pkv_cli(&["token", "inspect", &token], dir.path());
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "\"quantity\": 7",
        "\"sub\": \"bob\"",
        "\"usage\": 1",
        "EdDSA",
        did.as_str(),
    ] {
        assert!(shown.contains(needle), "inspect lacks {needle:?}:\n{shown}");
    }
    let out = pkv_cli(&["token", "inspect", "not-a-token"], dir.path());
    assert!(
        !out.status.success(),
        "inspect of garbage succeeded: {out:?}"
    );

    let redis = Redis::start();
    let config = PkvConfig {
        upstream: Some(redis.url()),
        issuers: vec![did],
        secret_seed: common::secret_seed(),
        files: Vec::new(),
        extra: Vec::new(),
    };
    let pkv = config.start();
    let mut conn = pkv.client(&token);
    let balance = pkv_balance(&mut conn);
    assert_eq!(balance["account"], "bob");
    assert_eq!(common::credited(&balance), "7.000000000");
}

// === 10. bad settings ===

fn start_with_env(vars: &[(&str, &str)]) -> (std::process::ExitStatus, String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pkv"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PKV_LISTEN", "127.0.0.1:0")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pkv with {vars:?} still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read as _;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr, started.elapsed())
}

#[test]
fn bad_settings_stop_start_up_with_one_clear_line() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("PKV_UPSTREAM_URL", "redis://127.0.0.1:1"),
                ("PKV_MAX_TTL", "abc"),
            ],
            "pkv: PKV_MAX_TTL:",
        ),
        (
            &[
                ("PKV_UPSTREAM_URL", "redis://127.0.0.1:1"),
                ("PKV_LISTEN", "nowhere"),
            ],
            "pkv: PKV_LISTEN:",
        ),
        (
            &[
                ("PKV_UPSTREAM_URL", "redis://127.0.0.1:1"),
                ("PKV_QUOTA_ISSUERS", "did:key:zNotAKey"),
            ],
            "pkv: PKV_QUOTA_ISSUERS:",
        ),
    ];
    for (vars, prefix) in cases {
        let (status, stderr, took) = start_with_env(vars);
        assert!(!status.success(), "{vars:?}: exited {status}");
        assert!(took < Duration::from_secs(5), "{vars:?}: took {took:?}");
        assert!(
            stderr.lines().any(|l| l.starts_with(prefix)),
            "{vars:?}: no line starting with {prefix:?} in {stderr:?}"
        );
    }
}
