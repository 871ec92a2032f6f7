//! Operating a running pkv: SIGHUP reloads `pkv.toml` and `.env` (prices, issuers,
//! limits), keeps the old settings when the new ones are invalid, reports settings that
//! need a restart; and `PKV_LOG_FORMAT=json` writes one JSON object per log line.
//! Each test runs the pkv binary and reads what it logs on stderr as it logs it.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{wait_until, Issuer, Pkv, PkvConfig};

/// What a pkv process has logged so far, read from its stderr by a thread.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Lines logged so far that contain `needle`.
    fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits until the `n`th line containing `needle` is logged; returns it.
    fn wait_for(&self, needle: &str, n: usize) -> String {
        wait_until(&format!("{n} log lines with {needle:?}"), || {
            self.count(needle) >= n
        });
        self.lines()
            .into_iter()
            .filter(|l| l.contains(needle))
            .nth(n - 1)
            .unwrap()
    }
}

/// Runs `cmd` as pkv with its stderr read into a [`Log`].
fn start(mut cmd: Command, dir: tempfile::TempDir) -> (Pkv, Log) {
    cmd.stderr(Stdio::piped());
    let mut pkv = Pkv::spawn(cmd, dir);
    let log = Log::default();
    let stderr = pkv.child.stderr.take().unwrap();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            lines.0.lock().unwrap().push(line);
        }
    });
    (pkv, log)
}

/// pkv on its embedded store with `toml` as its `pkv.toml`, logging at info; the
/// environment names in `from_file` are left out of the environment so that `pkv.toml`
/// gives them (the environment would win over the file).
fn start_with_toml(config: PkvConfig, toml: &str, from_file: &[&str]) -> (Pkv, Log) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = config
        .set("PKV_LOG", "info")
        .file("pkv.toml", toml)
        .command(dir.path());
    for name in from_file {
        cmd.env_remove(name);
    }
    start(cmd, dir)
}

fn hangup(pkv: &Pkv) {
    let status = Command::new("kill")
        .args(["-HUP", &pkv.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Rewrites pkv's `pkv.toml` and sends SIGHUP.
fn reload(pkv: &Pkv, toml: &str) {
    std::fs::write(pkv.dir().join("pkv.toml"), toml).unwrap();
    hangup(pkv);
}

/// Only the op is priced, at `op` units, so every command costs exactly that.
fn op_only(op: &str) -> String {
    format!(
        "price_op = \"{op}\"\nprice_byte_in = \"0\"\nprice_byte_out = \"0\"\n\
         price_byte_second = \"0\"\nprice_time_ms = \"0\"\n"
    )
}

/// The account's balance in nano-units, once two readings a moment apart agree (a
/// settlement on its way is then included).
fn balance(conn: &mut redis::Connection) -> i64 {
    let read = |conn: &mut redis::Connection| -> i64 {
        let fields = common::pkv_balance(conn);
        let text = &fields["balance"];
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let negative = whole.starts_with('-');
        let whole: i64 = whole.trim_start_matches('-').parse().unwrap();
        let frac: i64 = format!("{frac:0<9}")[..9].parse().unwrap();
        let n = whole * 1_000_000_000 + frac;
        if negative {
            -n
        } else {
            n
        }
    };
    let mut last = read(conn);
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = read(conn);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("PKV.BALANCE never settled; last {last}");
}

/// What one `GET` costs, from the balance before and after it.
fn cost_of_a_get(conn: &mut redis::Connection) -> i64 {
    let before = balance(conn);
    let _: Option<String> = redis::cmd("GET").arg("k").query(conn).unwrap();
    before - balance(conn)
}

/// `SET k v EX secs`: "OK" or the error.
fn set_ex(conn: &mut redis::Connection, secs: u64) -> String {
    match redis::cmd("SET")
        .arg("k")
        .arg("v")
        .arg("EX")
        .arg(secs)
        .query::<redis::Value>(conn)
    {
        Ok(value) => format!("{value:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn sighup_reprices_the_next_command_on_open_connections() {
    let issuer = Issuer::new();
    let ttls = |max: u64| format!("default_ttl = 500\nmax_ttl = {max}\n");
    let toml = format!("{}{}", op_only("0.001"), ttls(1000));
    let (pkv, log) = start_with_toml(PkvConfig::embedded(&issuer), &toml, &[]);
    let mut conn = pkv.client(&issuer.token(100));
    assert_eq!(cost_of_a_get(&mut conn), 1_000_000);
    assert!(set_ex(&mut conn, 1500).contains("maximum TTL"));

    reload(&pkv, &format!("{}{}", op_only("0.002"), ttls(2000)));
    let line = log.wait_for("settings reloaded", 1);
    assert!(line.contains("PKV_PRICE_OP"), "{line}");
    assert!(line.contains("PKV_MAX_TTL"), "{line}");
    // The same connection, opened before the reload, pays the new price and is held to
    // the new bounds.
    assert_eq!(cost_of_a_get(&mut conn), 2_000_000);
    let set = set_ex(&mut conn, 1500);
    assert!(set.eq_ignore_ascii_case("ok"), "{set}");
    let mut fresh = pkv.client(&issuer.token(100));
    assert_eq!(cost_of_a_get(&mut fresh), 2_000_000);
    let prices: redis::Value = redis::cmd("PKV.PRICES").query(&mut fresh).unwrap();
    assert!(
        format!("{prices:?}").contains("0.002"),
        "PKV.PRICES answers {prices:?}"
    );
}

#[test]
fn an_invalid_reload_keeps_the_old_settings_with_one_line() {
    let issuer = Issuer::new();
    let (mut pkv, log) = start_with_toml(PkvConfig::embedded(&issuer), &op_only("0.001"), &[]);
    let mut conn = pkv.client(&issuer.token(100));

    // A bad value, and a key pkv does not know: start-up would refuse either.
    let bad = [
        (
            op_only("0.002").replace("price_op = \"0.002\"", "price_op = \"cheap\""),
            "PKV_PRICE_OP",
        ),
        (
            format!("{}no_such_setting = 1\n", op_only("0.002")),
            "PKV_NO_SUCH_SETTING",
        ),
    ];
    for (n, (toml, name)) in bad.iter().enumerate() {
        let before = log.lines().len();
        reload(&pkv, toml);
        let line = log.wait_for("reload refused", n + 1);
        assert!(line.contains(name), "{line}");
        assert!(line.contains("keeping the current settings"), "{line}");
        assert!(pkv.is_running());
        assert_eq!(cost_of_a_get(&mut conn), 1_000_000, "after {toml:?}");
        let logged: Vec<String> = log.lines()[before..].to_vec();
        assert_eq!(logged.len(), 1, "one line per refused reload: {logged:?}");
    }
    assert_eq!(log.count("settings reloaded"), 0);
    // New connections are still served, at the old price.
    let mut fresh = pkv.client(&issuer.token(100));
    assert_eq!(cost_of_a_get(&mut fresh), 1_000_000);
}

/// True when pkv accepts `token` in AUTH.
fn accepts(pkv: &Pkv, token: &str) -> bool {
    redis::Client::open(pkv.url(token))
        .unwrap()
        .get_connection()
        .is_ok()
}

#[test]
fn sighup_reloads_the_trusted_issuers() {
    let (old, new) = (Issuer::new(), Issuer::new());
    let toml = |issuer: &Issuer| format!("quota_issuers = \"{}\"\n", issuer.did());
    let (pkv, log) = start_with_toml(
        PkvConfig::embedded(&old),
        &toml(&old),
        &["PKV_QUOTA_ISSUERS"],
    );
    assert!(accepts(&pkv, &old.token(10)));
    assert!(!accepts(&pkv, &new.token(10)));
    let mut open = pkv.client(&old.token(10));

    reload(&pkv, &toml(&new));
    let line = log.wait_for("settings reloaded", 1);
    assert!(line.contains("PKV_QUOTA_ISSUERS"), "{line}");
    assert!(accepts(&pkv, &new.token(10)), "the added issuer's tokens");
    assert!(
        !accepts(&pkv, &old.token(10)),
        "the removed issuer's tokens"
    );
    // A session opened with the removed issuer's token goes on: its credit is redeemed.
    let pong: String = redis::cmd("PING").query(&mut open).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn settings_a_reload_cannot_change_are_reported_and_left_alone() {
    let issuer = Issuer::new();
    let config = PkvConfig::embedded(&issuer);
    let seed = config.secret_seed.clone();
    let toml = |listen: &str, seed: &str, op: &str| {
        format!(
            "listen = \"{listen}\"\nsecret_seed = \"{seed}\"\n{}",
            op_only(op)
        )
    };
    let (pkv, log) = start_with_toml(
        config,
        &toml("127.0.0.1:0", &seed, "0.001"),
        &["PKV_LISTEN", "PKV_SECRET_SEED"],
    );
    let mut conn = pkv.client(&issuer.token(100));

    // A new address needs a restart; the price beside it changes now.
    reload(&pkv, &toml("127.0.0.1:1", &seed, "0.002"));
    let line = log.wait_for("needs a restart", 1);
    assert!(line.contains("PKV_LISTEN"), "{line}");
    let line = log.wait_for("settings reloaded", 1);
    assert!(line.contains("PKV_PRICE_OP"), "{line}");
    assert!(!line.contains("PKV_LISTEN"), "{line}");
    assert_eq!(cost_of_a_get(&mut conn), 2_000_000);
    assert!(accepts(&pkv, &issuer.token(10)), "still on its first port");

    // A new secret seed would give every account a new id: the whole reload is refused.
    reload(&pkv, &toml("127.0.0.1:0", &common::secret_seed(), "0.003"));
    let line = log.wait_for("reload refused", 1);
    assert!(line.contains("PKV_SECRET_SEED"), "{line}");
    assert_eq!(cost_of_a_get(&mut conn), 2_000_000);
}

#[test]
fn json_log_lines_parse_as_json() {
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    let cmd = PkvConfig::embedded(&issuer)
        .set("PKV_LOG", "info")
        .set("PKV_LOG_FORMAT", "json")
        .command(dir.path());
    let (pkv, log) = start(cmd, dir);
    hangup(&pkv);
    log.wait_for("settings reloaded", 1);
    let lines = log.lines();
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["fields"]["message"].is_string(), "{line}");
    }
}

#[test]
fn an_unknown_log_format_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pkv"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PKV_LOG_FORMAT", "xml")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("pkv: PKV_LOG_FORMAT:"), "{stderr}");
}
