//! The metrics endpoint, end to end: `/metrics` scraped from a running pkv process and
//! parsed, the counters and histograms checked to move by exactly what the commands sent
//! should move them; `/readyz` following the upstream's life and the embedded store's
//! snapshots; `pkv accounts top` listing a real Redis ledger's biggest spenders in order.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{wait_until, Issuer, PkvConfig, Redis, RespConn};

/// An HTTP GET on the metrics endpoint: the status code and the body.
fn get(port: u16, path: &str) -> (u16, String) {
    common::http_get(port, path)
}

/// A parsed text exposition: each sample (`name{label="value",...}`, labels sorted) and its
/// value. Panics on a line that is neither a comment nor a sample.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("{line}")),
        };
        let key = match series.split_once('{') {
            None => series.to_owned(),
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let mut pairs: Vec<&str> = labels.split(',').filter(|p| !p.is_empty()).collect();
                pairs.sort_unstable();
                format!("{name}{{{}}}", pairs.join(","))
            }
        };
        assert!(samples.insert(key, value).is_none(), "sample twice: {line}");
    }
    samples
}

fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

/// A sample's value, which must be there.
fn at(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no {key} among {:#?}", samples.keys().collect::<Vec<_>>()))
}

/// How much each of `keys` moved from `before` to `after`.
fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, key: &str) -> f64 {
    at(after, key) - before.get(key).copied().unwrap_or(0.0)
}

#[test]
fn commands_refusals_auth_revenue_and_latency_are_counted_exactly() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    // One unit per op and nothing else: a 3-unit token pays for exactly three commands.
    let pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_METRICS_LISTEN", "127.0.0.1:0")
        .set("PKV_PRICE_OP", "1")
        .set("PKV_PRICE_BYTE_IN", "0")
        .set("PKV_PRICE_BYTE_OUT", "0")
        .set("PKV_PRICE_BYTE_SECOND", "0")
        .set("PKV_PRICE_TIME_MS", "0")
        .start_process();
    let port = pkv.metrics_port.expect("pkv printed its metrics address");
    let before = scrape(port);

    let mut stranger = pkv.resp();
    let reply = stranger.call(&[b"AUTH", b"garbage"]);
    assert!(reply.starts_with(b"-WRONGPASS"), "{reply:?}");
    let reply = stranger.call(&[b"AUTH", Issuer::new().token(1).as_bytes()]);
    assert!(reply.starts_with(b"-WRONGPASS"), "{reply:?}");

    let mut client = pkv.resp_authed(&issuer.token(3));
    assert_eq!(client.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    assert_eq!(client.call(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    let reply = client.call(&[b"INCR", b"k"]);
    assert!(reply.starts_with(b"-ERR"), "{reply:?}");
    let reply = client.call(&[b"HSET", b"h", b"f", b"v"]);
    assert!(reply.starts_with(b"-NOQUOTA"), "{reply:?}");

    // Seven requests, each its own read; the last observation is made once its reply is
    // written, so it may land just after the client has it.
    let latency = "pkv_request_duration_seconds_count";
    wait_until("seven request latencies observed", || {
        moved(&before, &scrape(port), latency) >= 7.0
    });
    let after = scrape(port);
    let family =
        |f: &str, r: &str| format!("pkv_commands_by_family_total{{family=\"{f}\",result=\"{r}\"}}");
    for (key, by) in [
        (family("string", "ok"), 2.0),
        (family("string", "error"), 1.0),
        (family("string", "refused"), 0.0),
        (family("hash", "refused"), 1.0),
        (family("hash", "ok"), 0.0),
        ("pkv_noquota_refusals_total".into(), 1.0),
        ("pkv_auth_results_total{result=\"ok\"}".into(), 1.0),
        ("pkv_auth_results_total{result=\"malformed\"}".into(), 1.0),
        (
            "pkv_auth_results_total{result=\"unknown_issuer\"}".into(),
            1.0,
        ),
        (
            "pkv_auth_results_total{result=\"bad_signature\"}".into(),
            0.0,
        ),
        ("pkv_auth_failures_total".into(), 2.0),
        ("pkv_tokens_redeemed_total".into(), 1.0),
        ("pkv_credits_redeemed_units_total".into(), 3.0),
        ("pkv_revenue_nanounits_total{quantity=\"ops\"}".into(), 3e9),
        (
            "pkv_revenue_nanounits_total{quantity=\"bytes_in\"}".into(),
            0.0,
        ),
        ("pkv_spent_nanounits_total".into(), 3e9),
        (latency.into(), 7.0),
        // SET, GET and INCR went upstream; HSET was refused before.
        ("pkv_upstream_duration_seconds_count".into(), 3.0),
        (
            "pkv_request_duration_seconds_bucket{le=\"+Inf\"}".into(),
            7.0,
        ),
    ] {
        assert_eq!(moved(&before, &after, &key), by, "{key}");
    }
    // The buckets are cumulative and end at the count.
    let buckets: Vec<f64> = after
        .iter()
        .filter(|(k, _)| k.starts_with("pkv_request_duration_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    assert!(buckets.len() > 10, "{buckets:?}");
    assert!(at(&after, "pkv_request_duration_seconds_sum") > 0.0);

    // One connection not authenticated, one authenticated; none blocked or subscribed.
    let state = |s: &str| format!("pkv_connections_by_state{{state=\"{s}\"}}");
    assert_eq!(at(&after, &state("pre_auth")), 1.0);
    assert_eq!(at(&after, &state("authed")), 1.0);
    assert_eq!(at(&after, &state("blocked")), 0.0);
    assert_eq!(at(&after, &state("subscribed")), 0.0);
    assert_eq!(at(&after, "pkv_connections"), 2.0);
    let mut subscriber = pkv.resp_authed(&issuer.token(1));
    subscriber.send(&common::encode(&[b"SUBSCRIBE", b"news"]));
    let _ = subscriber.reply();
    wait_until("a subscribed connection", || {
        at(&scrape(port), &state("subscribed")) == 1.0
    });
    drop(subscriber);
    wait_until("the subscriber gone", || {
        at(&scrape(port), &state("subscribed")) == 0.0
    });
    // The pool's connections to the upstream are open.
    assert!(at(&after, "pkv_upstream_pool_connections{state=\"open\"}") >= 1.0);
    assert!(at(&after, "pkv_upstream_connects_total") >= 1.0);
    // The old names are still there.
    for name in [
        "pkv_connections_total",
        "pkv_commands_total",
        "pkv_upstream_errors_total",
    ] {
        at(&after, name);
    }
    drop((client, stranger));
}

#[test]
fn readyz_follows_the_upstream_down_and_back() {
    let mut redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_METRICS_LISTEN", "127.0.0.1:0")
        .start_process();
    let port = pkv.metrics_port.unwrap();
    assert_eq!(get(port, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(port, "/readyz"), (200, "ready\n".into()));

    let redis_port = redis.port;
    redis.kill();
    let (status, why) = get(port, "/readyz");
    assert_eq!(status, 503, "{why}");
    assert!(why.starts_with("upstream: "), "{why}");
    assert!(why.contains("ledger: not writable"), "{why}");
    // Alive all the same.
    assert_eq!(get(port, "/healthz").0, 200);
    // The gauge follows within its check interval.
    wait_until("pkv_ready 0", || at(&scrape(port), "pkv_ready") == 0.0);

    let _redis = Redis::start_on(redis_port);
    wait_until("ready again", || get(port, "/readyz").0 == 200);
    wait_until("pkv_ready 1", || at(&scrape(port), "pkv_ready") == 1.0);
    let metrics = scrape(port);
    assert!(
        at(&metrics, "pkv_upstream_connects_total") >= 2.0,
        "reconnected"
    );
}

#[test]
fn readyz_on_the_embedded_store_follows_its_snapshots() {
    let issuer = Issuer::new();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("store");
    std::fs::create_dir(&dir).unwrap();
    let pkv = PkvConfig::embedded(&issuer)
        .set("PKV_METRICS_LISTEN", "127.0.0.1:0")
        .set("PKV_DATA_FILE", dir.join("pkv.data").to_str().unwrap())
        .set("PKV_SNAPSHOT_SECONDS", "1")
        .start_process();
    let port = pkv.metrics_port.unwrap();
    assert_eq!(get(port, "/readyz"), (200, "ready\n".into()));
    let mut client = pkv.resp_authed(&issuer.token(10));
    assert_eq!(client.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    wait_until("a snapshot written", || {
        at(&scrape(port), "pkv_snapshot_bytes") > 0.0
    });
    assert!(at(&scrape(port), "pkv_embedded_keys") >= 1.0);

    // The data file's directory goes away: snapshots fail, and pkv is not ready.
    std::fs::remove_dir_all(&dir).unwrap();
    wait_until("a failed snapshot", || get(port, "/readyz").0 == 503);
    let (_, why) = get(port, "/readyz");
    assert!(
        why.starts_with("persistence: the last snapshot failed"),
        "{why}"
    );
    let metrics = scrape(port);
    assert_eq!(at(&metrics, "pkv_snapshot_failing"), 1.0);
    assert!(at(&metrics, "pkv_snapshot_failures_total") >= 1.0);

    std::fs::create_dir(&dir).unwrap();
    wait_until("a good snapshot again", || get(port, "/readyz").0 == 200);
    assert_eq!(at(&scrape(port), "pkv_snapshot_failing"), 0.0);
}

/// Runs `pkv accounts top` with `env`; its stdout, which must be a success's.
fn accounts_top(env: &[(&str, String)], limit: Option<usize>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pkv"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path())
        .args(["accounts", "top"]);
    if let Some(n) = limit {
        cmd.args(["--limit", &n.to_string()]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Spends `ops` commands as `account` (one unit each), then closes the connection, which
/// settles the account's spending into the ledger.
fn spend(conn: &mut RespConn, ops: usize) {
    for i in 0..ops {
        let key = format!("k{i}");
        assert_eq!(conn.call(&[b"SET", key.as_bytes(), b"v"]), b"+OK\r\n");
    }
}

#[test]
fn accounts_top_lists_the_biggest_spenders_of_a_redis_ledger_in_order() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_PRICE_OP", "1")
        .set("PKV_PRICE_BYTE_IN", "0")
        .set("PKV_PRICE_BYTE_OUT", "0")
        .set("PKV_PRICE_BYTE_SECOND", "0")
        .set("PKV_PRICE_TIME_MS", "0")
        .start_process();
    for (account, ops) in [("alice", 3), ("bob", 1), ("carol:x y", 5), ("dave", 2)] {
        let token = issuer.mint(10, 3600, Some(account));
        let mut conn = pkv.resp_authed(&token);
        spend(&mut conn, ops);
    }
    // Connections closed: each account's last session gives its lease back and settles.
    let mut direct = redis.direct();
    wait_until("every account settled", || {
        ["alice", "bob", "carol%3Ax%20y", "dave"].iter().all(|a| {
            let spent: Option<i64> = redis::cmd("HGET")
                .arg(format!("pkv:ledger:acct:{a}"))
                .arg("spent")
                .query(&mut direct)
                .unwrap();
            let debited: Option<i64> = redis::cmd("HGET")
                .arg(format!("pkv:ledger:acct:{a}"))
                .arg("debited")
                .query(&mut direct)
                .unwrap();
            spent.is_some() && spent == debited
        })
    });
    let env = [("PKV_UPSTREAM_URL", redis.url())];
    let listed = accounts_top(&env, None);
    assert_eq!(
        listed,
        "account\tspent\tbalance\n\
         carol:x y\t5.000000000\t5.000000000\n\
         alice\t3.000000000\t7.000000000\n\
         dave\t2.000000000\t8.000000000\n\
         bob\t1.000000000\t9.000000000\n"
    );
    let top2 = accounts_top(&env, Some(2));
    assert_eq!(
        top2,
        "account\tspent\tbalance\n\
         carol:x y\t5.000000000\t5.000000000\n\
         alice\t3.000000000\t7.000000000\n"
    );
    // A ledger of its own is read when there is one.
    let env = [
        ("PKV_UPSTREAM_URL", "redis://127.0.0.1:1".to_owned()),
        ("PKV_LEDGER_URL", redis.url()),
    ];
    assert_eq!(accounts_top(&env, Some(2)), top2);
}

#[test]
fn accounts_top_asks_a_running_pkv_for_its_embedded_ledger() {
    let issuer = Issuer::new();
    let pkv = PkvConfig::embedded(&issuer)
        .set("PKV_METRICS_LISTEN", "127.0.0.1:0")
        .set("PKV_PRICE_OP", "1")
        .set("PKV_PRICE_BYTE_IN", "0")
        .set("PKV_PRICE_BYTE_OUT", "0")
        .set("PKV_PRICE_BYTE_SECOND", "0")
        .set("PKV_PRICE_TIME_MS", "0")
        .start_process();
    let port = pkv.metrics_port.unwrap();
    for (account, ops) in [("erin", 1), ("frank", 4)] {
        let mut conn = pkv.resp_authed(&issuer.mint(10, 3600, Some(account)));
        spend(&mut conn, ops);
    }
    let env = [("PKV_METRICS_LISTEN", format!("127.0.0.1:{port}"))];
    let expected = "account\tspent\tbalance\n\
                    frank\t4.000000000\t6.000000000\n\
                    erin\t1.000000000\t9.000000000\n";
    wait_until("both accounts settled", || {
        accounts_top(&env, None) == expected
    });
    assert_eq!(
        accounts_top(&env, Some(1)),
        "account\tspent\tbalance\nfrank\t4.000000000\t6.000000000\n"
    );
}

#[test]
fn every_metric_the_grafana_dashboard_queries_is_served() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let proxy = PkvConfig::new(&redis, &issuer)
        .set("PKV_METRICS_LISTEN", "127.0.0.1:0")
        .start_process();
    let data = tempfile::tempdir().unwrap();
    let embedded = PkvConfig::embedded(&issuer)
        .set("PKV_METRICS_LISTEN", "127.0.0.1:0")
        .set(
            "PKV_DATA_FILE",
            data.path().join("pkv.data").to_str().unwrap(),
        )
        .start_process();
    // Both backends between them serve every figure: the pool's on one, the store's on
    // the other.
    let mut served = std::collections::BTreeSet::new();
    for pkv in [&proxy, &embedded] {
        for key in scrape(pkv.metrics_port.unwrap()).keys() {
            let name = key.split('{').next().unwrap().to_owned();
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    served.insert(base.to_owned());
                }
            }
            served.insert(name);
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/grafana/pkv-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("pkv_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.push(name);
            }
        }
    }
    assert!(queried.len() > 20, "{queried:?}");
    let missing: Vec<_> = queried.iter().filter(|q| !served.contains(*q)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, not served"
    );
}
