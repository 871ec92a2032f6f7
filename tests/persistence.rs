//! The embedded store keeps its data across restarts with `PKV_DATA_FILE`: a snapshot at
//! graceful shutdown and every `PKV_SNAPSHOT_SECONDS`, loaded at start-up. A crash loses at
//! most what was written since the last snapshot and never leaves a file that does not
//! load; a damaged file stops start-up and is left as it is.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{pkv_balance, Issuer, Pkv, PkvConfig};
use pkv::embedded::snapshot;

/// pkv on the embedded store (no upstream), saving to `data_file`.
fn embedded(issuer: &Issuer, data_file: &Path) -> PkvConfig {
    PkvConfig::embedded(issuer).set("PKV_DATA_FILE", data_file.to_str().unwrap())
}

/// Sends SIGTERM and waits for pkv to exit; it must exit cleanly.
fn stop(mut pkv: Pkv) {
    pkv.terminate();
    let status = wait_exit(&mut pkv.child, Duration::from_secs(20));
    assert!(status.success(), "pkv exited with {status}");
}

/// kill -9.
fn crash(mut pkv: Pkv) {
    pkv.child.kill().unwrap();
    pkv.child.wait().unwrap();
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pkv still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The keys (namespaced) the data file holds, expired ones included.
fn keys_in_file(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let snapshot = snapshot::decode(&bytes, 0).expect("the data file loads");
    snapshot.entries.into_iter().map(|(k, _)| k).collect()
}

fn holds(path: &Path, suffix: &[u8]) -> bool {
    path.exists() && keys_in_file(path).iter().any(|k| k.ends_with(suffix))
}

fn get(conn: &mut redis::Connection, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query(conn).unwrap()
}

fn pttl(conn: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(conn).unwrap()
}

fn set_all(conn: &mut redis::Connection, prefix: &str, range: std::ops::Range<usize>) {
    let mut pipe = redis::pipe();
    for i in range {
        pipe.cmd("SET")
            .arg(format!("{prefix}{i}"))
            .arg(format!("{prefix}{i}:{}", "x".repeat(200)))
            .ignore();
    }
    let () = pipe.query(conn).unwrap();
}

fn check_all(conn: &mut redis::Connection, prefix: &str, range: std::ops::Range<usize>) {
    for i in range {
        let key = format!("{prefix}{i}");
        let want = format!("{prefix}{i}:{}", "x".repeat(200));
        assert_eq!(
            get(conn, &key).as_deref(),
            Some(want.as_bytes()),
            "{key} is back"
        );
    }
}

#[test]
fn data_deadlines_and_the_ledger_survive_a_restart() {
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pkv.data");
    let config = embedded(&issuer, &data);
    let token = issuer.token(100);

    let pkv = config.start_process();
    let mut conn = pkv.client(&token);
    let binary: Vec<u8> = vec![0, b'\r', b'\n', 255, 0];
    let _: () = redis::cmd("SET")
        .arg("plain")
        .arg("v1")
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&binary[..])
        .arg(&binary[..])
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("empty")
        .arg("")
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("long")
        .arg("v2")
        .arg("EX")
        .arg(3600)
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("short")
        .arg("v3")
        .arg("PX")
        .arg(1500)
        .query(&mut conn)
        .unwrap();
    let short_set = Instant::now();
    let long_before = pttl(&mut conn, "long");
    let long_read = Instant::now();
    assert!(pttl(&mut conn, "short") > 0);
    let credited_before = common::credited(&pkv_balance(&mut conn));
    drop(conn);
    // The account's record, read last, on a connection that sends nothing else.
    let balance_before = pkv.resp_authed(&token).call(&[b"PKV.BALANCE"]);
    stop(pkv);
    assert!(
        holds(&data, b":short"),
        "the short key was still live at shutdown and is in the file"
    );

    // Let the short key's deadline pass while pkv is down.
    let downtime = Duration::from_millis(2000).saturating_sub(short_set.elapsed());
    std::thread::sleep(downtime);

    let pkv = config.start_process();
    let balance_after = pkv.resp_authed(&token).call(&[b"PKV.BALANCE"]);
    assert_eq!(
        String::from_utf8_lossy(&balance_after),
        String::from_utf8_lossy(&balance_before),
        "the ledger is back"
    );
    let mut conn = pkv.client(&token);
    assert_eq!(get(&mut conn, "plain").as_deref(), Some(&b"v1"[..]));
    let back: Option<Vec<u8>> = redis::cmd("GET").arg(&binary[..]).query(&mut conn).unwrap();
    assert_eq!(back, Some(binary));
    assert_eq!(get(&mut conn, "empty").as_deref(), Some(&b""[..]));
    assert_eq!(get(&mut conn, "long").as_deref(), Some(&b"v2"[..]));
    assert_eq!(get(&mut conn, "short"), None, "expired during the downtime");
    assert_eq!(pttl(&mut conn, "short"), -2);
    // Deadlines are absolute: the TTL went down by the time that passed, downtime included.
    let long_after = pttl(&mut conn, "long");
    let passed = long_read.elapsed().as_millis() as i64;
    assert!(passed > 1500, "{passed}");
    let decrease = long_before - long_after;
    assert!(
        (passed - 250..=passed + 50).contains(&decrease),
        "PTTL went from {long_before} to {long_after} in {passed} ms"
    );
    // The token's redemption is remembered: presenting it again (each connection does)
    // credited nothing.
    assert_eq!(common::credited(&pkv_balance(&mut conn)), credited_before);
    drop(conn);
    stop(pkv);
}

#[test]
fn a_crash_loses_at_most_what_came_after_the_last_snapshot() {
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pkv.data");
    let config = embedded(&issuer, &data).set("PKV_SNAPSHOT_SECONDS", "1");
    let token = issuer.token(100);

    let pkv = config.start_process();
    let mut conn = pkv.client(&token);
    set_all(&mut conn, "first:", 0..500);
    // Wait for a snapshot that has the whole first batch.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !holds(&data, b":first:499") {
        assert!(Instant::now() < deadline, "no snapshot after 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    set_all(&mut conn, "second:", 0..500);
    crash(pkv);

    let pkv = config.start_process();
    let mut conn = pkv.client(&token);
    check_all(&mut conn, "first:", 0..500);
    drop(conn);

    // Crash at random moments while a client overwrites keys without pause: the file
    // always loads, and the store comes back holding what the file holds or newer (from
    // the append-only log), with snapshots and the log's cuts under way.
    let mut seed = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos(),
    );
    let mut pkv = pkv;
    for round in 0..5 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let wait = Duration::from_millis(300 + (seed >> 33) % 2000);
        let url = pkv.url(&token);
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
                let mut written = 0usize;
                while !done.load(Ordering::Relaxed) {
                    let mut pipe = redis::pipe();
                    for i in written..written + 50 {
                        pipe.cmd("SET")
                            .arg(format!("w:{}", i % 2000))
                            .arg(format!("{round}:{i}:{}", "y".repeat(500)))
                            .ignore();
                    }
                    if pipe.query::<()>(&mut conn).is_err() {
                        break;
                    }
                    written += 50;
                }
                written
            })
        };
        std::thread::sleep(wait);
        crash(pkv);
        done.store(true, Ordering::Relaxed);
        let written = writer.join().unwrap();
        assert!(written > 0, "round {round}: nothing written");

        let bytes = std::fs::read(&data).unwrap();
        let saved = snapshot::decode(&bytes, 0)
            .unwrap_or_else(|e| panic!("round {round}: the file does not load: {e}"));
        pkv = config.start_process();
        let mut conn = pkv.client(&token);
        check_all(&mut conn, "first:", 0..500);
        let mut compared = 0;
        for (key, entry) in &saved.entries {
            let text = String::from_utf8_lossy(key);
            let Some(at) = text.find(":w:") else {
                continue;
            };
            let pkv::embedded::data::Data::Str(value) = &entry.data else {
                panic!("{text} is not a string");
            };
            // The append-only log may bring back writes newer than the file's.
            let order = |v: &[u8]| -> (u64, u64) {
                let text = String::from_utf8_lossy(v);
                let mut parts = text.split(':').map(|p| p.parse().unwrap_or(0));
                (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
            };
            let back = get(&mut conn, &text[at + 1..]);
            assert!(
                back.as_deref().is_some_and(|b| order(b) >= order(value)),
                "round {round}: {text} came back older than the file's"
            );
            compared += 1;
        }
        eprintln!(
            "round {round}: crashed after {wait:?}; {written} writes; {compared} keys in the file, all back"
        );
    }
    stop(pkv);
}

/// Starts pkv expecting it to refuse to start; returns its exit status and stderr.
fn start_failing(config: &PkvConfig) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = config.command(dir.path());
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

/// Every file in `dir`, by name.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
}

#[test]
fn a_damaged_file_stops_start_up_and_is_left_as_it_is() {
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pkv.data");
    let config = embedded(&issuer, &data);
    let token = issuer.token(100);
    let pkv = config.start_process();
    let mut conn = pkv.client(&token);
    set_all(&mut conn, "k", 0..20);
    drop(conn);
    stop(pkv);
    let good = std::fs::read(&data).unwrap();
    let files = listing(dir.path());

    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x20;
    let mut version = good.clone();
    version[8] = 7;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("a flipped byte", flipped, "checksum"),
        (
            "truncated",
            good[..good.len() * 2 / 3].to_vec(),
            "truncated",
        ),
        ("cut in the header", good[..10].to_vec(), "truncated"),
        ("garbage", b"*1\r\n$4\r\nPING\r\n garbage".to_vec(), "magic"),
        ("empty", Vec::new(), "magic"),
        ("a newer version", version, "version 7"),
    ];
    for (what, bytes, problem) in cases {
        std::fs::write(&data, &bytes).unwrap();
        let (status, stderr) = start_failing(&config);
        assert!(!status.success(), "{what}: pkv started");
        assert!(
            stderr.contains(data.to_str().unwrap()) && stderr.contains(problem),
            "{what}: the message names the file and the problem: {stderr}"
        );
        assert!(stderr.contains("left as it is"), "{what}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{what}: one line: {stderr}"
        );
        assert_eq!(
            std::fs::read(&data).unwrap(),
            bytes,
            "{what}: the file is unchanged"
        );
        assert_eq!(listing(dir.path()), files, "{what}: nothing else written");
    }

    // The good file still loads, next to a half-written snapshot left by a crash.
    std::fs::write(&data, &good).unwrap();
    let tmp = dir.path().join("pkv.data.tmp");
    std::fs::write(&tmp, &good[..good.len() / 2]).unwrap();
    let pkv = config.start_process();
    assert!(!tmp.exists(), "the leftover is cleared");
    let mut conn = pkv.client(&token);
    check_all(&mut conn, "k", 0..20);
    drop(conn);
    stop(pkv);
}

/// A stream comes back from the data file whole: its entries, the counters XINFO reports,
/// its groups with their consumers and pending entries.
#[test]
fn streams_and_their_groups_survive_a_restart() {
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pkv.data");
    let config = embedded(&issuer, &data);
    let token = issuer.token(100);
    let run = |conn: &mut redis::Connection, args: &[&str]| -> redis::Value {
        let mut cmd = redis::cmd(args[0]);
        args[1..].iter().for_each(|a| {
            cmd.arg(*a);
        });
        cmd.query(conn).unwrap()
    };
    let script: &[&[&str]] = &[
        &["XADD", "s", "1-0", "a", "1"],
        &["XADD", "s", "2-0", "b", "2", "c", "3"],
        &["XADD", "s", "3-0", "d", "4"],
        &["XDEL", "s", "2-0"],
        &["XGROUP", "CREATE", "s", "g", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "alice",
            "COUNT",
            "1",
            "STREAMS",
            "s",
            ">",
        ],
        &["XGROUP", "CREATE", "empty", "g2", "$", "MKSTREAM"],
    ];
    let reads: &[&[&str]] = &[
        &["XRANGE", "s", "-", "+"],
        &["XINFO", "STREAM", "s"],
        &["XINFO", "GROUPS", "s"],
        &["XPENDING", "s", "g", "-", "+", "10"],
        &["XINFO", "GROUPS", "empty"],
        &["XLEN", "empty"],
    ];
    let pkv = config.start_process();
    let mut conn = pkv.client(&token);
    for args in script {
        run(&mut conn, args);
    }
    // Idle times move; everything else must come back as it was.
    let mut before: Vec<redis::Value> = reads.iter().map(|a| run(&mut conn, a)).collect();
    drop(conn);
    stop(pkv);

    let pkv = config.start_process();
    let mut conn = pkv.client(&token);
    let mut after: Vec<redis::Value> = reads.iter().map(|a| run(&mut conn, a)).collect();
    for pending in [&mut before[3], &mut after[3]] {
        if let redis::Value::Array(items) = pending {
            for item in items {
                if let redis::Value::Array(fields) = item {
                    fields[2] = redis::Value::Nil;
                }
            }
        }
    }
    assert_eq!(after, before);
    let entry = run(&mut conn, &["XRANGE", "s", "3-0", "3-0"]);
    assert_eq!(
        run(
            &mut conn,
            &["XREADGROUP", "GROUP", "g", "bob", "STREAMS", "s", ">"]
        ),
        redis::Value::Array(vec![redis::Value::Array(vec![
            redis::Value::BulkString(b"s".to_vec()),
            entry
        ])]),
        "the group goes on from where it was"
    );
    drop(conn);
    stop(pkv);
}
