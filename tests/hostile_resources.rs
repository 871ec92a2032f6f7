//! Hostile clients against the resource bounds of SPEC 10, end to end with real redis-server
//! and pkv processes: strangers that never authenticate, tenants that hoard connections or
//! upstream connections, clients and subscribers that never read, and requests that never
//! finish. Each bound is per connection or per account, and hitting it affects only the
//! client or account that hit it.
//!
//! The `measure_*` tests are ignored by default: they print the RSS and CPU figures quoted
//! in `docs/security.md` (`cargo test --test hostile_resources measure -- --ignored
//! --nocapture`); they assert nothing about timings.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{encode, pkv_balance, Issuer, Pkv, PkvConfig, Redis, RespConn};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Which store pkv runs on.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Upstream,
    Embedded,
}

/// pkv on `backend` (with its redis-server, kept alive by the returned handle).
fn config(backend: Backend, issuer: &Issuer) -> (Option<Redis>, PkvConfig) {
    match backend {
        Backend::Upstream => {
            let redis = Redis::start();
            let cfg = PkvConfig::new(&redis, issuer);
            (Some(redis), cfg)
        }
        Backend::Embedded => (None, PkvConfig::embedded(issuer)),
    }
}

/// Peak resident memory of a process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Waits until pkv's RSS stops moving (no change above 1 MiB for 600 ms, at most 15 s);
/// returns it in KiB.
fn settled_rss(pkv: &Pkv) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = pkv.rss_kib();
    let mut stable_since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = pkv.rss_kib();
        if now.abs_diff(last) > 1024 {
            stable_since = Instant::now();
            last = now;
        } else if stable_since.elapsed() > Duration::from_millis(600) {
            break;
        }
    }
    last
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Stores `len` bytes under `key` through pkv, in chunks that fit one request.
fn store_big(conn: &mut redis::Connection, key: &str, len: usize) {
    let _: () = redis::cmd("DEL").arg(key).query(conn).unwrap();
    let chunk = vec![b'v'; 4 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        let _: i64 = redis::cmd("APPEND")
            .arg(key)
            .arg(&chunk[..n])
            .query(conn)
            .unwrap();
        left -= n;
    }
}

/// True when the peer has closed `stream` (EOF or reset) within `timeout`; reads and drops
/// whatever arrives before that.
fn closes_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 1 << 16];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

// === Item 11: time to authenticate, strangers, connections per account ===

/// Strangers that connect and say nothing cannot take every connection slot: a paying
/// client still gets in (at once, or on a retry within a second, as the strangers that
/// made room for it leave), and one that was in stays in.
#[test]
fn silent_strangers_cannot_take_every_slot() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer)
        .set("PKV_MAX_CONNECTIONS", "20")
        .start();
    let token = issuer.token(1);
    let mut regular = pkv.resp_authed(&token);
    let strangers: Vec<TcpStream> = (0..25)
        .map(|_| TcpStream::connect(("127.0.0.1", pkv.port)).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut paying = loop {
        let mut conn = pkv.resp();
        match conn.try_value(Duration::from_millis(100)) {
            Err(_) => break conn,
            Ok(refusal) => assert!(
                Instant::now() < deadline,
                "25 silent strangers locked out a paying client: {refusal}"
            ),
        }
    };
    let auth = paying
        .send_and_reply(&["AUTH", &token], Duration::from_secs(5))
        .clone();
    assert_eq!(text(&auth), "+OK\r\n");
    assert_eq!(paying.call_text(&["PING"]), "+PONG\r\n");
    assert_eq!(regular.call_text(&["PING"]), "+PONG\r\n");
    // Some strangers were turned away with a reason, not all of them kept.
    let mut refused = 0;
    for mut s in strangers {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 256];
        if let Ok(n) = s.read(&mut buf) {
            if n > 0 {
                let line = text(&buf[..n]);
                assert!(line.starts_with("-ERR"), "{line:?}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "every stranger kept a slot");
}

/// A connection that does not authenticate within PKV_AUTH_TIMEOUT is closed, whether it
/// says nothing, trickles a partial request, or sends commands that do not authenticate;
/// authenticated connections are not affected.
#[test]
fn connections_that_do_not_authenticate_in_time_are_closed() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer)
        .set("PKV_AUTH_TIMEOUT", "1")
        .set("PKV_IDLE_TIMEOUT", "1")
        .start();
    let mut authed = pkv.resp_authed(&issuer.token(1));
    let mut silent = TcpStream::connect(("127.0.0.1", pkv.port)).unwrap();
    let mut trickler = TcpStream::connect(("127.0.0.1", pkv.port)).unwrap();
    let mut pinger = TcpStream::connect(("127.0.0.1", pkv.port)).unwrap();
    let partial = b"*2\r\n$4\r\nECHO\r\n$100\r\n";
    let started = Instant::now();
    let mut closed = [None, None, None];
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(5) && closed.iter().any(Option::is_none) {
        // The trickler sends a byte every 250 ms, the pinger a PING: both beat the idle
        // timeout, neither authenticates.
        if sent < partial.len() {
            let _ = trickler.write_all(&partial[sent..sent + 1]);
            sent += 1;
        }
        let _ = pinger.write_all(b"PING\r\n");
        for (i, s) in [&mut silent, &mut trickler, &mut pinger]
            .into_iter()
            .enumerate()
        {
            if closed[i].is_none() && closes_within(s, Duration::from_millis(80)) {
                closed[i] = Some(started.elapsed());
            }
        }
        // The authenticated client keeps working before, at and past the auth timeout
        // (it keeps itself busy to stay within the idle timeout).
        assert_eq!(authed.call_text(&["PING"]), "+PONG\r\n");
    }
    for (name, at) in ["silent", "trickling", "pinging"].iter().zip(closed) {
        let at = at.unwrap_or_else(|| {
            panic!("the {name} stranger is still connected after 5 s (PKV_AUTH_TIMEOUT=1)")
        });
        assert!(at >= Duration::from_millis(700), "{name} closed at {at:?}");
    }
}

/// An account holds at most PKV_MAX_CONNECTIONS_PER_ACCOUNT connections: AUTH past it is
/// refused with an error, other accounts are not affected, and a slot frees on close.
#[test]
fn an_account_cannot_open_more_than_its_connections() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer)
        .set("PKV_MAX_CONNECTIONS_PER_ACCOUNT", "3")
        .start();
    let token = issuer.token(10);
    let mut held: Vec<RespConn> = (0..3).map(|_| pkv.resp_authed(&token)).collect();
    let mut fourth = pkv.resp();
    let reply = fourth.call_text(&["AUTH", &token]);
    assert!(
        reply.starts_with("-ERR") && reply.contains("connections for this account"),
        "a 4th connection of one account was let in: {reply:?}"
    );
    assert_eq!(
        fourth.call_text(&["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    // Another account is not affected.
    let mut other = pkv.resp_authed(&issuer.token(10));
    assert_eq!(other.call_text(&["SET", "k", "v"]), "+OK\r\n");
    // A slot frees when a connection closes.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = fourth.call_text(&["AUTH", &token]);
        if reply == "+OK\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed: {reply:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// === Item 12: dedicated upstream connections per account ===

/// One tenant's MULTI/WATCH, subscriptions and blocking commands cannot use up the
/// upstream's maxclients: past its cap the tenant gets a clear error, and another tenant's
/// GET, MULTI and BLPOP still work.
#[test]
fn one_tenant_cannot_use_up_the_upstreams_connections() {
    let redis = Redis::start_with(&["--maxclients", "40"]);
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_MAX_DEDICATED_PER_ACCOUNT", "4")
        .start();
    let hog_token = issuer.token(100);
    let mut hogs = Vec::new();
    let mut refused = Vec::new();
    for i in 0..45 {
        let mut c = pkv.resp_authed(&hog_token);
        let reply = match i % 3 {
            0 => c.call_text(&["WATCH", "k"]),
            1 => c.call_text(&["SUBSCRIBE", "ch"]),
            _ => {
                // A blocking pop waits on its dedicated connection; the refusal is
                // immediate.
                c.send(&encode(&[b"BLPOP", b"q", b"0"]));
                match c.try_value(Duration::from_millis(300)) {
                    Ok(v) => format!("{v}\r\n"),
                    Err(_) => "blocked".into(),
                }
            }
        };
        if reply.starts_with('-') {
            refused.push(reply);
        }
        hogs.push(c);
    }
    let mut other = pkv.resp_authed(&issuer.token(100));
    assert_eq!(other.call_text(&["SET", "x", "1"]), "+OK\r\n");
    assert_eq!(other.call_text(&["GET", "x"]), "$1\r\n1\r\n");
    assert_eq!(
        other.call_text(&["MULTI"]),
        "+OK\r\n",
        "another tenant's MULTI failed (refused hog commands: {:?})",
        refused.first()
    );
    assert_eq!(other.call_text(&["INCR", "x"]), "+QUEUED\r\n");
    assert_eq!(other.call_text(&["EXEC"]), "*1\r\n:2\r\n");
    assert_eq!(other.call_text(&["BLPOP", "q2", "0.1"]), "*-1\r\n");
    assert_eq!(refused.len(), 41, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|r| r.contains("too many dedicated") && r.contains("for this account (limit 4")),
        "{refused:?}"
    );
}

// === Item 14: unfinished requests ===

/// The bytes of a request that never completes count as received: they are paid when the
/// connection ends.
fn unfinished_request_is_paid(backend: Backend) {
    let issuer = Issuer::new();
    let (_redis, cfg) = config(backend, &issuer);
    let pkv = cfg.start();
    let token = issuer.token(10);
    let mut watcher = pkv.client(&token);
    let before: u64 = pkv_balance(&mut watcher)["bytes_in"].parse().unwrap();
    let mut conn = pkv.resp_authed(&token);
    conn.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\n");
    conn.send(&vec![b'x'; 600_000]);
    conn.stream.flush().unwrap();
    // Closing sends what the socket holds first; pkv reads it all before the end.
    drop(conn);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let after: u64 = pkv_balance(&mut watcher)["bytes_in"].parse().unwrap();
        if after - before >= 600_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{backend:?}: 600 kB of an unfinished request were not paid (bytes_in grew by {})",
            after - before
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_unfinished_request_is_paid_when_the_connection_ends_upstream() {
    unfinished_request_is_paid(Backend::Upstream);
}

#[test]
fn an_unfinished_request_is_paid_when_the_connection_ends_embedded() {
    unfinished_request_is_paid(Backend::Embedded);
}

/// An account's connections together buffer at most PKV_MAX_BUFFERED_PER_ACCOUNT bytes of
/// unfinished requests; the connection that passes it is closed with an error, and other
/// accounts are not affected.
#[test]
fn an_account_cannot_buffer_unbounded_unfinished_requests() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer)
        .set("PKV_MAX_REQUEST_BYTES", "1048576")
        .set("PKV_MAX_BUFFERED_PER_ACCOUNT", "2097152")
        .start();
    let token = issuer.token(10);
    let mut conns: Vec<RespConn> = (0..4).map(|_| pkv.resp_authed(&token)).collect();
    for c in &mut conns {
        c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\n");
        c.send(&vec![b'x'; 700_000]);
    }
    let mut closed = Vec::new();
    for c in &mut conns {
        let (bytes, was_closed) = c.read_to_close(Duration::from_millis(1500));
        if was_closed {
            closed.push(text(&bytes));
        }
    }
    assert!(
        closed.len() >= 2,
        "4 connections of one account buffered 2.8 MB with a 2 MiB account limit; closed: {closed:?}"
    );
    assert!(
        closed
            .iter()
            .all(|r| r.starts_with("-ERR") && r.contains("this account")),
        "{closed:?}"
    );
    let mut other = pkv.resp_authed(&issuer.token(10));
    assert_eq!(other.call_text(&["SET", "k", "v"]), "+OK\r\n");
}

/// A request must finish within PKV_REQUEST_TIMEOUT of its first byte.
#[test]
fn a_request_that_does_not_finish_in_time_is_dropped() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer)
        .set("PKV_REQUEST_TIMEOUT", "1")
        .start();
    let mut conn = pkv.resp_authed(&issuer.token(10));
    let started = Instant::now();
    conn.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000\r\nabc");
    let (bytes, closed) = conn.read_to_close(Duration::from_secs(4));
    assert!(
        closed,
        "an unfinished request held its connection for 4 s (PKV_REQUEST_TIMEOUT=1)"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    let reply = text(&bytes);
    assert!(
        reply.starts_with("-ERR") && reply.contains("seconds"),
        "{reply:?}"
    );
}

// === Item 5: replies held for a client ===

/// A client that pipelines GETs of a 1 MiB value and never reads holds a bounded amount of
/// replies in pkv: pkv stops reading its requests instead of buffering their replies.
fn never_reading_client_is_bounded(backend: Backend) {
    let issuer = Issuer::new();
    let (_redis, cfg) = config(backend, &issuer);
    let pkv = cfg.start_process();
    let token = issuer.token(100);
    let mut c = pkv.client(&token);
    store_big(&mut c, "big", 1 << 20);
    let base = settled_rss(&pkv);
    let mut raw = pkv.resp_authed(&token);
    let mut pipeline = Vec::new();
    for _ in 0..1000 {
        pipeline.extend_from_slice(&encode(&[b"GET", b"big"]));
    }
    let mut writer = raw.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = writer.write_all(&pipeline);
    });
    let held = settled_rss(&pkv).saturating_sub(base);
    assert!(
        held < 40 * 1024,
        "{backend:?}: pkv holds {:.1} MiB for one client that does not read",
        mib(held)
    );
    // The client is still served when it reads.
    let mut first = [0u8; 16];
    raw.stream.read_exact(&mut first).unwrap();
    assert!(text(&first).starts_with("$1048576"), "{:?}", text(&first));
}

#[test]
fn a_client_that_never_reads_holds_bounded_replies_upstream() {
    never_reading_client_is_bounded(Backend::Upstream);
}

#[test]
fn a_client_that_never_reads_holds_bounded_replies_embedded() {
    never_reading_client_is_bounded(Backend::Embedded);
}

/// Replies past PKV_MAX_OUTPUT_BYTES disconnect the client that asked for them; pkv keeps
/// running and serves everyone else.
fn output_limit_disconnects(backend: Backend) {
    let issuer = Issuer::new();
    let (_redis, cfg) = config(backend, &issuer);
    let pkv = cfg.set("PKV_MAX_OUTPUT_BYTES", "4194304").start_process();
    let token = issuer.token(100);
    let mut c = pkv.client(&token);
    store_big(&mut c, "big", 5 << 20);
    let mut raw = pkv.resp_authed(&token);
    let mut pipeline = Vec::new();
    for _ in 0..16 {
        pipeline.extend_from_slice(&encode(&[b"GET", b"big"]));
    }
    raw.send(&pipeline);
    let (bytes, closed) = raw.read_to_close(Duration::from_secs(10));
    assert!(
        closed,
        "{backend:?}: 16 replies of 5 MiB with a 4 MiB output limit: connection kept, {} bytes sent",
        bytes.len()
    );
    assert!(bytes.len() < 5 << 20, "{} bytes sent", bytes.len());
    let mut pkv = pkv;
    assert!(pkv.is_running());
    let mut other = pkv.resp_authed(&issuer.token(10));
    assert_eq!(other.call_text(&["SET", "small", "v"]), "+OK\r\n");
    assert_eq!(other.call_text(&["GET", "small"]), "$1\r\nv\r\n");
}

#[test]
fn replies_past_the_output_limit_disconnect_the_client_upstream() {
    output_limit_disconnects(Backend::Upstream);
}

#[test]
fn replies_past_the_output_limit_disconnect_the_client_embedded() {
    output_limit_disconnects(Backend::Embedded);
}

/// The replies an account's clients leave unread are bounded together by
/// PKV_MAX_OUTPUT_PER_ACCOUNT: many connections that each stay within PKV_MAX_OUTPUT_BYTES
/// cannot add up to more; the connections that pass it are disconnected, and other
/// accounts are served.
#[test]
fn an_account_cannot_hold_unbounded_unread_replies() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer)
        .set("PKV_MAX_OUTPUT_BYTES", "4194304")
        .set("PKV_MAX_OUTPUT_PER_ACCOUNT", "4194304")
        .start_process();
    let token = issuer.token(1000);
    let mut c = pkv.client(&token);
    store_big(&mut c, "big", 1 << 20);
    let mut pipeline = Vec::new();
    for _ in 0..300 {
        pipeline.extend_from_slice(&encode(&[b"GET", b"big"]));
    }
    let mut conns: Vec<RespConn> = (0..20).map(|_| pkv.resp_authed(&token)).collect();
    for conn in &conns {
        let mut writer = conn.stream.try_clone().unwrap();
        let pipeline = pipeline.clone();
        std::thread::spawn(move || {
            let _ = writer.write_all(&pipeline);
        });
    }
    // Each connection fills its socket buffers, then pkv waits with about a reply held
    // for it.
    settled_rss(&pkv);
    // Until pkv has closed one (or 10 s have passed).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut closed = 0;
    while closed == 0 && Instant::now() < deadline {
        closed = conns
            .iter_mut()
            .filter_map(|c| c.read_to_close(Duration::from_millis(250)).1.then_some(()))
            .count();
    }
    assert!(
        closed >= 1,
        "20 connections of one account each held replies unread, none was disconnected with a 4 MiB account limit"
    );
    let mut other = pkv.resp_authed(&issuer.token(10));
    assert_eq!(other.call_text(&["SET", "k", "v"]), "+OK\r\n");
}

// === Item 6: subscribers that never read ===

/// A subscriber that never reads is disconnected once the messages queued for it pass
/// PKV_MAX_SUBSCRIBER_BYTES; pkv's memory stays bounded, and on an upstream the Pub/Sub
/// connection is closed so that Redis stops sending.
fn subscriber_that_never_reads(backend: Backend) -> (Option<Redis>, Pkv) {
    let issuer = Issuer::new();
    let (redis, cfg) = config(backend, &issuer);
    let pkv = cfg
        .set("PKV_MAX_SUBSCRIBER_BYTES", "4194304")
        .start_process();
    let token = issuer.token(100);
    let mut sub = pkv.resp_authed(&token);
    let confirm = sub.call_text(&["SUBSCRIBE", "ch"]);
    assert!(confirm.contains("subscribe"), "{confirm:?}");
    let mut publisher = pkv.client(&token);
    let base = settled_rss(&pkv);
    let payload = vec![b'm'; 1 << 20];
    for _ in 0..100 {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("ch")
            .arg(&payload)
            .query(&mut publisher)
            .unwrap();
    }
    let held = settled_rss(&pkv).saturating_sub(base);
    assert!(
        held < 40 * 1024,
        "{backend:?}: pkv holds {:.1} MiB after 100 MiB published to a subscriber that does not read",
        mib(held)
    );
    assert!(
        closes_within(&mut sub.stream, Duration::from_secs(5)),
        "{backend:?}: the subscriber that does not read is still connected"
    );
    (redis, pkv)
}

#[test]
fn a_subscriber_that_never_reads_is_disconnected_upstream() {
    let (redis, _pkv) = subscriber_that_never_reads(Backend::Upstream);
    let redis = redis.unwrap();
    let mut direct = redis.direct();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("pubsub")
            .query(&mut direct)
            .unwrap();
        if list.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the upstream Pub/Sub connection is still open: {list}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_subscriber_that_never_reads_is_disconnected_embedded() {
    subscriber_that_never_reads(Backend::Embedded);
}

// === Measurements for docs/security.md (ignored; they print figures) ===

/// 16 pipelined GETs of a 100 MB value, read by the client; with `output_limit`, the
/// reply limit raised so that the client may have them.
fn measure_big_gets(backend: Backend, output_limit: Option<&str>) {
    let issuer = Issuer::new();
    let (_redis, mut cfg) = config(backend, &issuer);
    if let Some(limit) = output_limit {
        cfg = cfg.set("PKV_MAX_OUTPUT_BYTES", limit);
    }
    let mut pkv = cfg.start_process();
    let token = issuer.token(1000);
    let mut c = pkv.client(&token);
    store_big(&mut c, "big", 100_000_000);
    let base = pkv.rss_kib();
    let mut raw = pkv.resp_authed(&token);
    let mut pipeline = Vec::new();
    for _ in 0..16 {
        pipeline.extend_from_slice(&encode(&[b"GET", b"big"]));
    }
    raw.send(&pipeline);
    let (bytes, closed) = raw.read_to_close(Duration::from_secs(60));
    println!(
        "{backend:?}, output limit {output_limit:?}: 16 x GET of 100 MB: base RSS {:.0} MiB, peak {:.0} MiB; client got {} bytes, closed={closed}, pkv running={}",
        mib(base),
        mib(peak_kib(pkv.pid())),
        bytes.len(),
        pkv.is_running()
    );
}

#[test]
#[ignore]
fn measure_big_gets_upstream() {
    measure_big_gets(Backend::Upstream, None);
    measure_big_gets(Backend::Upstream, Some("268435456"));
}

#[test]
#[ignore]
fn measure_big_gets_embedded() {
    measure_big_gets(Backend::Embedded, None);
    measure_big_gets(Backend::Embedded, Some("268435456"));
}

/// 100k pipelined GETs of a 1 MB value, never read.
fn measure_never_reading(backend: Backend) {
    let issuer = Issuer::new();
    let (_redis, cfg) = config(backend, &issuer);
    let pkv = cfg.start_process();
    let token = issuer.token(1000);
    let mut c = pkv.client(&token);
    store_big(&mut c, "big", 1_000_000);
    let base = settled_rss(&pkv);
    let raw = pkv.resp_authed(&token);
    let mut pipeline = Vec::new();
    for _ in 0..100_000 {
        pipeline.extend_from_slice(&encode(&[b"GET", b"big"]));
    }
    let mut writer = raw.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = writer.write_all(&pipeline);
    });
    let held = settled_rss(&pkv);
    println!(
        "{backend:?}: 100k GETs of 1 MB, never read: RSS {:.0} -> {:.0} MiB (peak {:.0} MiB)",
        mib(base),
        mib(held),
        mib(peak_kib(pkv.pid()))
    );
}

#[test]
#[ignore]
fn measure_never_reading_upstream() {
    measure_never_reading(Backend::Upstream);
}

#[test]
#[ignore]
fn measure_never_reading_embedded() {
    measure_never_reading(Backend::Embedded);
}

/// 100 MB published to a subscriber that never reads.
fn measure_subscriber(backend: Backend) {
    let issuer = Issuer::new();
    let (_redis, cfg) = config(backend, &issuer);
    let pkv = cfg.start_process();
    let token = issuer.token(1000);
    let mut sub = pkv.resp_authed(&token);
    sub.call_text(&["SUBSCRIBE", "ch"]);
    let mut publisher = pkv.client(&token);
    let base = settled_rss(&pkv);
    let payload = vec![b'm'; 1_000_000];
    for _ in 0..100 {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("ch")
            .arg(&payload)
            .query(&mut publisher)
            .unwrap();
    }
    let held = settled_rss(&pkv);
    let closed = closes_within(&mut sub.stream, Duration::from_secs(2));
    println!(
        "{backend:?}: 100 MB published to a subscriber that never reads: RSS {:.0} -> {:.0} MiB; subscriber closed={closed}",
        mib(base),
        mib(held)
    );
}

#[test]
#[ignore]
fn measure_subscriber_upstream() {
    measure_subscriber(Backend::Upstream);
}

#[test]
#[ignore]
fn measure_subscriber_embedded() {
    measure_subscriber(Backend::Embedded);
}

/// 10 connections of one account, each with an unfinished request of `size` bytes.
fn measure_unfinished(size: usize) {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer).start_process();
    let token = issuer.token(1000);
    let base = settled_rss(&pkv);
    let mut conns = Vec::new();
    let body = vec![b'x'; size - 1000];
    for _ in 0..10 {
        let mut c = pkv.resp_authed(&token);
        c.send(format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${size}\r\n").as_bytes());
        c.stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = c.stream.write_all(&body);
        conns.push(c);
    }
    let held = settled_rss(&pkv);
    let open = conns
        .iter_mut()
        .filter_map(|c| (!closes_within(&mut c.stream, Duration::from_millis(100))).then_some(()))
        .count();
    println!(
        "10 unfinished requests of {:.0} MB: RSS {:.0} -> {:.0} MiB; {open} connections still open",
        size as f64 / 1e6,
        mib(base),
        mib(held)
    );
}

#[test]
#[ignore]
fn measure_unfinished_requests() {
    measure_unfinished(60_000_000);
    measure_unfinished(16_000_000);
}

/// An authenticated request of 65,536 one-byte arguments: most of it at once, then 5,000
/// bytes one per millisecond (each its own read), then the rest. Prints pkv's CPU time
/// during the trickle.
#[test]
#[ignore]
fn measure_trickled_request_cpu() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer).start_process();
    let mut conn = pkv.resp_authed(&issuer.token(10));
    let mut request = b"*65536\r\n$5\r\nRPUSH\r\n$1\r\nk\r\n".to_vec();
    for _ in 0..65534 {
        request.extend_from_slice(b"$1\r\na\r\n");
    }
    let (head, rest) = request.split_at(request.len() - 10_000);
    let (trickled, tail) = rest.split_at(5_000);
    conn.send(head);
    // Pacing: the head read and parsed before the trickle is measured.
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_secs(pkv.pid());
    let started = Instant::now();
    for byte in trickled {
        conn.send(std::slice::from_ref(byte));
        std::thread::sleep(Duration::from_millis(1));
    }
    let cpu = cpu_secs(pkv.pid()) - before;
    let wall = started.elapsed().as_secs_f64();
    conn.send(tail);
    let reply = conn.reply_within(Duration::from_secs(60));
    println!(
        "65,536-argument request ({} bytes), 5,000 bytes of it trickled 1 per ms: pkv CPU {cpu:.2} s over {wall:.1} s ({:.0}% of a core); reply {:?}",
        request.len(),
        100.0 * cpu / wall,
        text(&reply)
    );
}
