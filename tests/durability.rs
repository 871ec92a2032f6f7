//! The embedded store's append-only log (`<PKV_DATA_FILE>.aof`, `PKV_APPENDFSYNC`): what a
//! client was told is done survives kill -9. With `always`, no acknowledged write is lost;
//! whatever the policy, a redeemed token stays redeemed; a log that cannot be written
//! turns writes into errors instead of acknowledging what would be lost.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{pkv_balance, Issuer, Pkv, PkvConfig};

/// pkv on the embedded store saving to `data` with `policy`, and no snapshot during the
/// test: only the log can bring back what was written.
fn embedded(issuer: &Issuer, data: &Path, policy: &str) -> PkvConfig {
    PkvConfig::embedded(issuer)
        .set("PKV_DATA_FILE", data.to_str().unwrap())
        .set("PKV_SNAPSHOT_SECONDS", "3600")
        .set("PKV_APPENDFSYNC", policy)
}

/// A data directory, pkv on the embedded store saving there with `policy`, and a token.
struct Fixture {
    _dir: tempfile::TempDir,
    log: PathBuf,
    config: PkvConfig,
    token: String,
}

fn fixture(policy: &str) -> Fixture {
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pkv.data");
    Fixture {
        log: dir.path().join("pkv.data.aof"),
        config: embedded(&issuer, &data, policy),
        token: issuer.token(1_000_000),
        _dir: dir,
    }
}

/// kill -9.
fn crash(mut pkv: Pkv) {
    pkv.child.kill().unwrap();
    pkv.child.wait().unwrap();
}

/// Writers SET their own keys, one at a time, until pkv dies under them after `load`;
/// returns every key that was acknowledged with OK.
fn acked_until_killed(pkv: Pkv, token: &str, round: usize, load: Duration) -> Vec<String> {
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut conn = pkv.client(token);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("r{round}:w{w}:{i}");
                    let reply: redis::RedisResult<String> =
                        redis::cmd("SET").arg(&key).arg(i).query(&mut conn);
                    match reply {
                        Ok(ok) if ok == "OK" => acked.push(key),
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(load);
    crash(pkv);
    stop.store(true, Ordering::Relaxed);
    writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect()
}

/// The keys of `keys` that are not in the store.
fn missing(conn: &mut redis::Connection, keys: &[String]) -> Vec<String> {
    let mut lost = Vec::new();
    for chunk in keys.chunks(500) {
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(conn).unwrap();
        lost.extend(
            chunk
                .iter()
                .zip(values)
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| k.clone()),
        );
    }
    lost
}

/// `rounds` kill -9 under a write load with `policy`: (acknowledged, lost).
fn kill_loop(policy: &str, rounds: usize) -> (usize, usize) {
    let f = fixture(policy);
    let (config, token) = (&f.config, &f.token);
    let (mut acked, mut lost) = (0, 0);
    let mut all = Vec::new();
    for round in 0..rounds {
        let pkv = config.start_process();
        let mut conn = pkv.client(token);
        // What earlier rounds were told is done is still there.
        lost += missing(&mut conn, &all).len();
        drop(conn);
        let keys = acked_until_killed(pkv, token, round, Duration::from_millis(700));
        acked += keys.len();
        all = keys;
    }
    let pkv = config.start_process();
    let mut conn = pkv.client(token);
    lost += missing(&mut conn, &all).len();
    crash(pkv);
    (acked, lost)
}

#[test]
fn with_appendfsync_always_kill_9_loses_no_acknowledged_write() {
    let (acked, lost) = kill_loop("always", 3);
    assert!(acked > 100, "only {acked} writes acknowledged");
    assert_eq!(lost, 0, "{lost} of {acked} acknowledged writes lost");
}

/// The figures for the README: acknowledged writes lost per kill -9 under each policy.
/// `cargo nextest run --test durability --run-ignored only kill_loop_figures --no-capture`
#[test]
#[ignore = "a measurement, not a check: prints the figures"]
fn kill_loop_figures() {
    for policy in ["always", "everysec", "no"] {
        let (acked, lost) = kill_loop(policy, 10);
        println!("PKV_APPENDFSYNC={policy}: 10 kill -9, {acked} acknowledged, {lost} lost");
    }
}

#[test]
fn a_redeemed_token_stays_redeemed_after_kill_9() {
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pkv.data");
    // The default policy: the ledger does not depend on it.
    let config = PkvConfig::embedded(&issuer)
        .set("PKV_DATA_FILE", data.to_str().unwrap())
        .set("PKV_SNAPSHOT_SECONDS", "3600");
    let first = issuer.mint(100, 3600, Some("payer"));
    let topup = issuer.mint(50, 3600, None);

    let pkv = config.start_process();
    let mut conn = pkv.resp_authed(&first);
    let reply = conn.call_text(&["PKV.TOPUP", &topup]);
    // kill -9 right after the answer: nothing had time to be saved in the background.
    crash(pkv);
    assert!(!reply.starts_with('-'), "PKV.TOPUP answered {reply:?}");

    let pkv = config.start_process();
    let mut conn = pkv.resp_authed(&first);
    let again = conn.call_text(&["PKV.TOPUP", &topup]);
    assert!(
        again.starts_with("-ERR token already redeemed"),
        "the top-up token was credited again after kill -9: {again:?}"
    );
    let mut client = pkv.client(&first);
    assert_eq!(
        common::credited(&pkv_balance(&mut client)),
        "150.000000000",
        "the account holds both credits, once each"
    );
    crash(pkv);
}

/// pkv under a file size limit of `bytes` (as a full disk: writes past it fail with
/// EFBIG, and the signal that would kill it is ignored).
fn start_with_file_limit(config: &PkvConfig, bytes: u64) -> Pkv {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "trap '' XFSZ; exec prlimit --fsize={bytes}:unlimited -- \"$0\""
        ))
        .arg(env!("CARGO_BIN_EXE_pkv"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(config.settings())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    Pkv::spawn(cmd, dir)
}

#[test]
fn a_log_that_cannot_be_written_refuses_writes_and_loses_nothing_acknowledged() {
    let f = fixture("always");
    let (config, token) = (&f.config, &f.token);

    let pkv = start_with_file_limit(config, 64 * 1024);
    let mut conn = pkv.client(token);
    let mut acked = Vec::new();
    let value = "v".repeat(500);
    let refusal = loop {
        let key = format!("k{}", acked.len());
        let reply: redis::RedisResult<String> =
            redis::cmd("SET").arg(&key).arg(&value).query(&mut conn);
        match reply {
            Ok(_) => acked.push(key),
            Err(e) => break e.to_string(),
        }
        assert!(
            acked.len() < 10_000,
            "64 KiB of log took {} writes",
            acked.len()
        );
    };
    assert!(refusal.contains("MISCONF"), "the refusal: {refusal}");
    // Still refused, and reads still served.
    let again: redis::RedisResult<String> = redis::cmd("SET").arg("late").arg("x").query(&mut conn);
    assert!(again.is_err(), "a later write answered {again:?}");
    let first: Option<String> = redis::cmd("GET").arg("k0").query(&mut conn).unwrap();
    assert_eq!(first.as_deref(), Some(value.as_str()));
    // A graceful stop, whose last snapshot cannot be written either.
    let mut pkv = pkv;
    pkv.terminate();
    pkv.child.wait().unwrap();

    // With room again, everything acknowledged is back.
    let pkv = config.start_process();
    let mut conn = pkv.client(token);
    let lost = missing(&mut conn, &acked);
    assert!(
        lost.is_empty(),
        "{} of {} lost: {lost:?}",
        lost.len(),
        acked.len()
    );
    crash(pkv);
}

#[test]
fn a_snapshot_cuts_the_log_and_both_together_bring_everything_back() {
    let mut f = fixture("always");
    f.config = f.config.set("PKV_SNAPSHOT_SECONDS", "1");
    let (config, token, log) = (&f.config, &f.token, &f.log);

    let pkv = config.start_process();
    let mut conn = pkv.client(token);
    let keys: Vec<String> = (0..2000).map(|i| format!("k{i}")).collect();
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.cmd("SET").arg(key).arg("x".repeat(100)).ignore();
    }
    let () = pipe.query(&mut conn).unwrap();
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let written = size(log);
    assert!(written > 2000 * 100, "the log holds {written} bytes");
    // A snapshot taken after the writes cuts them from the log.
    common::wait_until("the log cut by a snapshot", || size(log) < 2000 * 100);
    let () = redis::cmd("SET")
        .arg("after")
        .arg("1")
        .query(&mut conn)
        .unwrap();
    crash(pkv);

    let pkv = config.start_process();
    let mut conn = pkv.client(token);
    let mut all = keys.clone();
    all.push("after".into());
    let lost = missing(&mut conn, &all);
    assert!(lost.is_empty(), "lost {lost:?}");
    crash(pkv);
}

#[test]
fn a_torn_last_record_is_dropped_at_start_up_and_the_log_goes_on_after_it() {
    let f = fixture("always");
    let (config, token, log) = (&f.config, &f.token, &f.log);

    let pkv = config.start_process();
    let mut conn = pkv.client(token);
    let () = redis::cmd("SET")
        .arg("a")
        .arg("1")
        .query(&mut conn)
        .unwrap();
    crash(pkv);
    // A crash in the middle of appending the next record.
    let mut bytes = std::fs::read(log).unwrap();
    bytes.extend_from_slice(b"*2\r\n$3\r\nPUT\r\n$900\r\nhalf");
    std::fs::write(log, &bytes).unwrap();

    let pkv = config.start_process();
    let mut conn = pkv.client(token);
    let a: Option<String> = redis::cmd("GET").arg("a").query(&mut conn).unwrap();
    assert_eq!(a.as_deref(), Some("1"));
    let () = redis::cmd("SET")
        .arg("b")
        .arg("2")
        .query(&mut conn)
        .unwrap();
    crash(pkv);

    // The torn bytes were cut before new records were appended: both come back.
    let pkv = config.start_process();
    let mut conn = pkv.client(token);
    assert!(missing(&mut conn, &["a".into(), "b".into()]).is_empty());
    crash(pkv);
}

/// Nano-units from PKV.BALANCE's decimal text (`12.000000345`).
fn nanos(text: &str) -> i64 {
    text.replace('.', "").parse().unwrap()
}

/// The account's balance plus what it spent: the credit, whatever was spent, once every
/// ledger step was applied exactly once.
fn balance_plus_spent(conn: &mut redis::Connection) -> i64 {
    let b = common::pkv_balance(conn);
    nanos(&b["balance"]) + nanos(&b["spent"])
}

/// A ledger step that reached the store but not the disk when the log failed: the meter
/// must not apply it a second time once the log can be written again.
#[test]
fn a_ledger_step_caught_by_a_failing_log_is_applied_once() {
    let f = fixture("always");
    let (config, token, log) = (&f.config, &f.token, &f.log);
    let limit: u64 = 64 * 1024;
    let size = || std::fs::metadata(log).map_or(0, |m| m.len());
    let settled = || loop {
        // Every settlement is in the log once its size stays put past a settling period.
        let before = size();
        std::thread::sleep(Duration::from_millis(1300));
        if size() == before {
            return before;
        }
    };

    let pkv = start_with_file_limit(config, limit);
    let mut conn = pkv.client(token);
    let credit = balance_plus_spent(&mut conn);
    // Fill the log with writes of one record size, to within two records of the limit.
    let value = "v".repeat(1000);
    let mut record = 0;
    for i in 0.. {
        let before = size();
        let _: () = redis::cmd("SET")
            .arg(format!("p{i:04}"))
            .arg(&value)
            .query(&mut conn)
            .unwrap();
        record = size() - before;
        if limit - size() < 3 * record {
            break;
        }
    }
    // One last write leaves 30 bytes: the settlement of its cost cannot fit.
    let at = settled();
    let last = 1000 + (limit - at - 30 - record) as usize;
    let _: () = redis::cmd("SET")
        .arg("p9999")
        .arg("v".repeat(last))
        .query(&mut conn)
        .unwrap();
    assert_eq!(size(), limit - 30, "the last write's record");
    // The settlement fails to reach the disk; then the disk has room again.
    std::thread::sleep(Duration::from_millis(2500));
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", pkv.child.id()))
        .arg("--fsize=unlimited")
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ok: redis::RedisResult<()> = redis::cmd("SET").arg("after").arg("x").query(&mut conn);
        if ok.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "writes still refused: {ok:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(balance_plus_spent(&mut conn), credit);
    crash(pkv);
}

/// XGROUP's subcommands write (a group, its position, its consumers): each is in the log.
/// Metering off: with it on, the TTL pkv sets after each write logged the key again.
#[test]
fn a_consumer_group_created_before_kill_9_is_back() {
    let mut f = fixture("always");
    f.config = f.config.set("PKV_METERING", "off");
    let pkv = f.config.start_process();
    let mut conn = pkv.client(&f.token);
    let _: String = redis::cmd("XADD")
        .arg("s")
        .arg("*")
        .arg("f")
        .arg("v")
        .query(&mut conn)
        .unwrap();
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("s")
        .arg("g")
        .arg("0")
        .query(&mut conn)
        .unwrap();
    let added: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg("s")
        .arg("g")
        .arg("c")
        .query(&mut conn)
        .unwrap();
    assert_eq!(added, 1);
    crash(pkv);

    let pkv = f.config.start_process();
    let mut conn = pkv.client(&f.token);
    let consumers: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg("s")
        .arg("g")
        .query(&mut conn)
        .unwrap();
    assert_eq!(consumers.len(), 1, "{consumers:?}");
    crash(pkv);
}
