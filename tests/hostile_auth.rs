//! Hostile clients against tokens, accounts and what one tenant can see of another: a
//! top-up voucher that must never open the account it paid into, commands billed to the
//! account that ran them, free commands that must not carry free work, oversized and
//! crafted tokens, subscribers whose token expired, and `INFO` confined to the account.
//! Real redis-server and pkv processes, real signed tokens.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::Algorithm;
use pkv::auth::token::{Audience, Claims, USAGE_CREATE_SESSION};

use common::{encode, now, pkv_balance, value_text, Issuer, Monitor, PkvConfig, Redis, Server};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
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

/// A JWS with exactly this header, signed by `issuer` (jsonwebtoken's own `Header` cannot
/// carry `crit`).
fn signed_with_header(issuer: &Issuer, header: &serde_json::Value, claims: &Claims) -> String {
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(&serde_json::to_vec(claims).unwrap())
    );
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &issuer.key.encoding_key(),
        Algorithm::EdDSA,
    )
    .unwrap();
    format!("{signing_input}.{signature}")
}

fn eddsa(issuer: &Issuer, claims: &Claims) -> String {
    signed_with_header(
        issuer,
        &serde_json::json!({"alg": "EdDSA", "typ": "JWT"}),
        claims,
    )
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

fn int(balance: &BTreeMap<String, String>, field: &str) -> i64 {
    balance[field].parse().unwrap()
}

/// `PKV.BALANCE` on a raw connection (which, unlike a client library, sends nothing of
/// its own on connect), as field -> text.
fn raw_balance(conn: &mut common::RespConn) -> BTreeMap<String, String> {
    let as_text = |v: &common::Resp| match v {
        common::Resp::Bulk(b) => text(b),
        common::Resp::Int(n) => n.to_string(),
        other => panic!("PKV.BALANCE field {other}"),
    };
    match conn.value(&[b"PKV.BALANCE"]) {
        common::Resp::Array(items) => items
            .chunks(2)
            .map(|pair| (as_text(&pair[0]), as_text(&pair[1])))
            .collect(),
        other => panic!("PKV.BALANCE answered {other}"),
    }
}

/// Runs `test` once against pkv on a real Redis and once on the embedded store.
fn on_both_backends(test: impl Fn(&Server, &Issuer, &str)) {
    let redis = Redis::start();
    let issuer = Issuer::new();
    test(
        &PkvConfig::new(&redis, &issuer).start(),
        &issuer,
        "upstream",
    );
    let issuer = Issuer::new();
    test(&PkvConfig::embedded(&issuer).start(), &issuer, "embedded");
}

// === item 1: a top-up voucher never opens the account it paid into ===

#[test]
fn a_token_spent_on_a_top_up_never_opens_the_account_it_paid_into() {
    on_both_backends(|pkv, issuer, backend| {
        let own = issuer.token(5);
        let mut victim = pkv.client(&own);
        let _: () = redis::cmd("SET")
            .arg("secret")
            .arg("victim-data")
            .query(&mut victim)
            .unwrap();
        let voucher = issuer.token(7);
        let credited = query(&mut victim, &["PKV.TOPUP", &voucher]).unwrap();
        assert_eq!(value_text(&credited), "7", "{backend}");

        // Anyone holding a copy of the voucher tries every way in, twice (the second time
        // the process has the redemption in memory).
        for _ in 0..2 {
            let mut thief = pkv.resp();
            assert_eq!(
                thief.call_text(&["AUTH", &voucher]),
                "-WRONGPASS token already spent on a top-up\r\n",
                "{backend}: AUTH with a spent voucher"
            );
            assert_eq!(
                thief.call_text(&["AUTH", "default", &voucher]),
                "-WRONGPASS token already spent on a top-up\r\n",
                "{backend}"
            );
            assert_eq!(
                thief.call_text(&["HELLO", "3", "AUTH", "default", &voucher]),
                "-WRONGPASS token already spent on a top-up\r\n",
                "{backend}"
            );
            assert_eq!(
                thief.call_text(&["GET", "secret"]),
                "-NOAUTH Authentication required.\r\n",
                "{backend}"
            );
            assert_eq!(
                thief.call_text(&["PKV.SESSION"]),
                "-NOAUTH Authentication required.\r\n",
                "{backend}"
            );
        }
        // The victim keeps both credits and its data.
        assert_eq!(
            common::credited(&pkv_balance(&mut victim)),
            "12.000000000",
            "{backend}"
        );
        let secret: String = redis::cmd("GET").arg("secret").query(&mut victim).unwrap();
        assert_eq!(secret, "victim-data", "{backend}");
        // The token redeemed by AUTH still attaches (connection pools send it again).
        let mut again = pkv.resp();
        assert_eq!(again.call_text(&["AUTH", &own]), "+OK\r\n", "{backend}");
        assert_eq!(
            again.call_text(&["GET", "secret"]),
            "$11\r\nvictim-data\r\n",
            "{backend}"
        );
    });
}

#[test]
fn a_voucher_topped_up_on_one_process_cannot_authenticate_on_another() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let config_a = PkvConfig::new(&redis, &issuer);
    let mut config_b = PkvConfig::new(&redis, &issuer);
    config_b.secret_seed = config_a.secret_seed.clone();
    let (a, b) = (config_a.start(), config_b.start());

    let mut victim = a.client(&issuer.token(5));
    let voucher = issuer.token(7);
    let credited = query(&mut victim, &["PKV.TOPUP", &voucher]).unwrap();
    assert_eq!(value_text(&credited), "7");

    for _ in 0..2 {
        let mut thief = b.resp();
        assert_eq!(
            thief.call_text(&["AUTH", &voucher]),
            "-WRONGPASS token already spent on a top-up\r\n",
            "AUTH on process B with a voucher topped up on process A"
        );
        assert_eq!(
            thief.call_text(&["PKV.BALANCE"]),
            "-NOAUTH Authentication required.\r\n"
        );
    }
    // Nor on A itself.
    assert_eq!(
        a.resp().call_text(&["AUTH", &voucher]),
        "-WRONGPASS token already spent on a top-up\r\n"
    );
    assert_eq!(common::credited(&pkv_balance(&mut victim)), "12.000000000");
}

#[test]
fn a_top_up_with_someone_elses_auth_token_credits_nothing_and_names_no_one() {
    on_both_backends(|pkv, issuer, backend| {
        let theirs = issuer.token(9);
        let mut owner = pkv.client(&theirs);
        let owner_account = pkv_balance(&mut owner)["account"].clone();

        let mut intruder = pkv.client(&issuer.token(5));
        let reply = query(&mut intruder, &["PKV.TOPUP", &theirs]).unwrap_err();
        assert!(
            !reply.contains(&owner_account),
            "{backend}: the refusal names the owner: {reply}"
        );
        // The same refusal as for a token spent on a top-up: no oracle on who used it.
        let voucher = issuer.token(3);
        query(&mut owner, &["PKV.TOPUP", &voucher]).unwrap();
        let spent = query(&mut intruder, &["PKV.TOPUP", &voucher]).unwrap_err();
        assert_eq!(reply, spent, "{backend}");

        assert_eq!(
            common::credited(&pkv_balance(&mut intruder)),
            "5.000000000",
            "{backend}"
        );
        assert_eq!(
            common::credited(&pkv_balance(&mut owner)),
            "12.000000000",
            "{backend}"
        );
    });
}

// === item 17: commands are paid by the account that ran them ===

#[test]
fn commands_pipelined_before_auth_to_another_account_are_paid_by_the_first() {
    on_both_backends(|pkv, issuer, backend| {
        let (a, b) = (issuer.token(5), issuer.token(5));
        let mut conn = pkv.resp_authed(&a);
        // One write: small enough to arrive in one read, so the commands and the AUTH are
        // handled together.
        let value = [b'v'; 100];
        let mut batch = Vec::new();
        for i in 0..20 {
            batch.extend(encode(&[b"SET", format!("k{i}").as_bytes(), &value]));
        }
        batch.extend(encode(&[b"AUTH", b.as_bytes()]));
        assert!(batch.len() < 4000, "{}", batch.len());
        conn.send(&batch);
        for _ in 0..21 {
            assert_eq!(text(&conn.reply()), "+OK\r\n", "{backend}");
        }

        // The connection is now B's.
        let b_balance = raw_balance(&mut conn);
        assert_eq!(
            (int(&b_balance, "ops"), b_balance["spent"].as_str()),
            (0, "0.000000000"),
            "{backend}: B paid for A's commands: {b_balance:?}"
        );
        let a_balance = raw_balance(&mut pkv.resp_authed(&a));
        assert_eq!(int(&a_balance, "ops"), 20, "{backend}: {a_balance:?}");
        assert!(
            int(&a_balance, "bytes_in") >= 20 * 100,
            "{backend}: {a_balance:?}"
        );
    });
}

// === item 18: free commands carry no free work ===

#[test]
fn ping_with_a_message_pays_its_bytes_and_bare_ping_stays_free() {
    on_both_backends(|pkv, issuer, backend| {
        let mut conn = pkv.client(&issuer.token(5));
        let before = pkv_balance(&mut conn);
        let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
        assert_eq!(pong, "PONG");
        let bare = pkv_balance(&mut conn);
        assert_eq!(
            (int(&bare, "ops"), &bare["spent"]),
            (int(&before, "ops"), &before["spent"]),
            "{backend}: bare PING was charged"
        );

        let message = vec![b'p'; 100_000];
        let echoed: Vec<u8> = redis::cmd("PING").arg(&message).query(&mut conn).unwrap();
        assert_eq!(echoed.len(), message.len());
        let after = pkv_balance(&mut conn);
        assert_eq!(
            int(&after, "ops"),
            int(&bare, "ops") + 1,
            "{backend}: PING <message> was free: {after:?}"
        );
        assert!(
            int(&after, "bytes_in") - int(&bare, "bytes_in") >= 100_000
                && int(&after, "bytes_out") - int(&bare, "bytes_out") >= 100_000,
            "{backend}: {bare:?} -> {after:?}"
        );
    });
}

#[test]
fn ping_with_a_message_is_refused_when_the_balance_cannot_pay_it() {
    let issuer = Issuer::new();
    // One unit buys 1000 request bytes.
    let pkv = PkvConfig::embedded(&issuer)
        .set("PKV_PRICE_BYTE_IN", "0.001")
        .start();
    let mut conn = pkv.resp_authed(&issuer.token(1));
    let message = vec![b'p'; 100_000];
    let reply = text(&conn.call(&[b"PING", &message]));
    assert!(reply.starts_with("-NOQUOTA"), "{reply:.80}");
    assert_eq!(conn.call_text(&["PING"]), "+PONG\r\n");
}

#[test]
fn pkv_balance_reads_the_ledger_at_most_once_per_interval_per_connection() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer).start();
    let mut conn = pkv.resp_authed(&issuer.token(5));
    let monitor = Monitor::start(&redis);

    let started = Instant::now();
    let mut batch = Vec::new();
    for _ in 0..10 {
        batch.extend(encode(&[b"PKV.BALANCE"]));
    }
    conn.send(&batch);
    for _ in 0..10 {
        let reply = conn.try_value(Duration::from_secs(10)).unwrap();
        assert_eq!(reply.type_name(), "array", "{reply}");
    }
    let elapsed = started.elapsed();
    assert_eq!(conn.call_text(&["SET", "done-marker", "1"]), "+OK\r\n");
    let lines = monitor.until("done-marker");
    let reads = lines
        .iter()
        .filter(|l| l.contains("\"HMGET\"") && l.contains("pkv:ledger:acct:"))
        .count();
    assert!(
        reads as u128 <= 1 + elapsed.as_millis() / 100,
        "{reads} ledger reads in {elapsed:?}"
    );
    // Every answer is exact: a write right before PKV.BALANCE shows in it.
    let mut client = pkv.client(&issuer.token(5));
    let first = pkv_balance(&mut client);
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut client)
        .unwrap();
    let second = pkv_balance(&mut client);
    assert_eq!(int(&second, "ops"), int(&first, "ops") + 1);
}

#[test]
fn an_oversized_token_is_refused_as_too_long_before_and_after_auth() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    // Requests as large as the token below are allowed, so that AUTH itself must refuse it.
    let pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_MAX_REQUEST_BYTES", "67108864")
        .set("PKV_MAX_BUFFERED_PER_ACCOUNT", "134217728")
        .start();

    // Before AUTH the request limits refuse a 53 MB AUTH at its header.
    let mut stranger = pkv.resp();
    stranger.send(b"*2\r\n$4\r\nAUTH\r\n$53000000\r\n");
    let (out, closed) = stranger.read_to_close(Duration::from_secs(5));
    assert!(
        text(&out).starts_with("-ERR Protocol error: request exceeds the maximum size") && closed,
        "{:?} closed={closed}",
        text(&out)
    );

    // After AUTH the request limits are the paying ones: a forged 53 MB token shaped like a
    // JWS reaches AUTH, and must be refused without being decoded.
    let header = b64(br#"{"alg":"EdDSA","typ":"JWT"}"#);
    let huge = format!("{header}.{}.AAAA", "e".repeat(53_000_000));
    let mut conn = pkv.resp_authed(&issuer.token(5));
    let reply = conn.value(&[b"AUTH", huge.as_bytes()]);
    assert_eq!(
        reply.to_string(),
        "-WRONGPASS token too long",
        "re-AUTH with a 53 MB token"
    );
    let long = format!("{header}.{}.AAAA", "e".repeat(9000));
    for args in [
        vec!["AUTH", long.as_str()],
        vec!["HELLO", "3", "AUTH", "default", long.as_str()],
        vec!["PKV.TOPUP", long.as_str()],
    ] {
        assert_eq!(
            conn.call_text(&args),
            "-WRONGPASS token too long\r\n",
            "{}",
            args[0]
        );
    }
    // Still authenticated as before.
    assert_eq!(conn.call_text(&["SET", "k", "v"]), "+OK\r\n");
}

// === item 22: crafted headers, claims and names ===

#[test]
fn a_token_with_a_crit_header_is_refused() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer).start();
    let plain = eddsa(&issuer, &quota_claims(&issuer));
    assert_eq!(pkv.resp().call_text(&["AUTH", &plain]), "+OK\r\n");

    let crit = signed_with_header(
        &issuer,
        &serde_json::json!({"alg": "EdDSA", "typ": "JWT", "crit": ["x-pkv-must-know"], "x-pkv-must-know": "yes"}),
        &quota_claims(&issuer),
    );
    let reply = pkv.resp().call_text(&["AUTH", &crit]);
    assert!(
        reply.starts_with("-WRONGPASS") && reply.contains("crit"),
        "{reply:?}"
    );
    let mut conn = pkv.resp_authed(&issuer.token(5));
    let reply = conn.call_text(&["PKV.TOPUP", &crit]);
    assert!(reply.starts_with("-WRONGPASS"), "{reply:?}");
}

#[test]
fn a_sub_with_control_characters_is_refused() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer).start();
    for sub in [
        "mallory\r\n2026-01-01T00:00:00Z INFO forged log line",
        "nul\0inside",
        "escape\x1b[2J",
        "tab\tinside",
        "del\x7f",
    ] {
        let mut claims = quota_claims(&issuer);
        claims.sub = Some(sub.into());
        let reply = pkv.resp().call_text(&["AUTH", &eddsa(&issuer, &claims)]);
        assert!(reply.starts_with("-WRONGPASS"), "sub {sub:?}: {reply:?}");
    }
    let mut claims = quota_claims(&issuer);
    claims.sub = Some("alice@example.com".into());
    assert_eq!(
        pkv.resp().call_text(&["AUTH", &eddsa(&issuer, &claims)]),
        "+OK\r\n"
    );
}

#[test]
fn hello_setname_checks_the_name_like_client_setname() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer).start();
    let token = issuer.token(5);
    const BAD_NAME: &str =
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n";

    let mut conn = pkv.resp();
    assert_eq!(
        conn.call_text(&[
            "HELLO",
            "3",
            "AUTH",
            "default",
            &token,
            "SETNAME",
            "two words"
        ]),
        BAD_NAME
    );
    // A refused HELLO changes nothing.
    assert_eq!(
        conn.call_text(&["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(conn.call_text(&["AUTH", &token]), "+OK\r\n");
    for name in ["line\nbreak", "cr\rname", "nul\0name", "caf\u{e9}"] {
        assert_eq!(
            conn.call_text(&["HELLO", "2", "SETNAME", name]),
            BAD_NAME,
            "{name:?}"
        );
        assert_eq!(
            conn.call_text(&["CLIENT", "SETNAME", name]),
            BAD_NAME,
            "{name:?}"
        );
    }
    assert_eq!(conn.call_text(&["CLIENT", "GETNAME"]), "$-1\r\n");
    let hello = conn.call_text(&["HELLO", "2", "SETNAME", "worker-1"]);
    assert!(hello.starts_with("*14\r\n"), "{hello:?}");
    assert_eq!(conn.call_text(&["CLIENT", "GETNAME"]), "$8\r\nworker-1\r\n");
}

// === item 23: a subscriber's token expires ===

/// Subscribes with a token that lives about 3 s (no leeway), sees a message delivered, then
/// sees the connection told and closed at expiry, with no message after it.
fn subscriber_stops_at_expiry(pkv: &Server, issuer: &Issuer) {
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_millis()
        > 100
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let token = issuer.mint(5, 3, None);
    let exp = pkv::auth::token::peek(&token).unwrap().1.exp.unwrap();
    let mut sub = pkv.resp_authed(&token);
    // A long-lived session token of the same account, for the publisher.
    let session = match sub.value(&[b"PKV.SESSION", b"600"]) {
        common::Resp::Bulk(b) => String::from_utf8(b).unwrap(),
        other => panic!("PKV.SESSION answered {other}"),
    };
    let mut publisher = pkv.resp_authed(&session);
    assert_eq!(
        sub.call_text(&["SUBSCRIBE", "news"]),
        "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    assert_eq!(
        publisher.call_text(&["PUBLISH", "news", "before"]),
        ":1\r\n"
    );
    assert_eq!(
        text(&sub.reply()),
        "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$6\r\nbefore\r\n"
    );
    assert!(now() < exp, "the set-up took longer than the token's life");

    while now() <= exp {
        std::thread::sleep(Duration::from_millis(50));
    }
    publisher.call_text(&["PUBLISH", "news", "after-expiry"]);
    let (out, closed) = sub.read_to_close(Duration::from_secs(3));
    let out = text(&out);
    assert!(
        out.contains("-NOAUTH token expired; AUTH again\r\n")
            && !out.contains("after-expiry")
            && closed,
        "after expiry the subscriber got {out:?}, closed={closed}"
    );
}

#[test]
fn a_subscriber_stops_receiving_when_its_token_expires_upstream() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_TOKEN_LEEWAY", "0")
        .start();
    subscriber_stops_at_expiry(&pkv, &issuer);
}

#[test]
fn a_subscriber_stops_receiving_when_its_token_expires_embedded() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer)
        .set("PKV_TOKEN_LEEWAY", "0")
        .start();
    subscriber_stops_at_expiry(&pkv, &issuer);
}

// === item 24: INFO shows the account's own figures ===

fn info_field(info: &str, field: &str) -> i64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {info:?}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn info_shows_the_accounts_own_clients_and_commands_only() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer).start();
    let mut a = pkv.client(&issuer.token(5));
    let info = |conn: &mut redis::Connection| -> String { redis::cmd("INFO").query(conn).unwrap() };
    let before = info(&mut a);
    assert_eq!(info_field(&before, "connected_clients"), 1, "{before}");

    let b_token = issuer.token(5);
    let mut others: Vec<redis::Connection> = (0..3).map(|_| pkv.client(&b_token)).collect();
    for conn in &mut others {
        for i in 0..50 {
            let _: () = redis::cmd("SET").arg(i).arg(i).query(conn).unwrap();
        }
    }
    let b_info = info(&mut others[0]);
    assert_eq!(info_field(&b_info, "connected_clients"), 3, "{b_info}");
    assert!(
        info_field(&b_info, "total_commands_processed") >= 150,
        "{b_info}"
    );

    let after = info(&mut a);
    assert_eq!(
        info_field(&after, "connected_clients"),
        1,
        "A sees B's connections: {after}"
    );
    assert_eq!(
        info_field(&after, "total_commands_processed"),
        info_field(&before, "total_commands_processed") + 1,
        "A sees B's commands: {before} -> {after}"
    );
    assert_eq!(
        info_field(&after, "total_connections_received"),
        info_field(&before, "total_connections_received"),
        "A sees B's connections: {after}"
    );
}
