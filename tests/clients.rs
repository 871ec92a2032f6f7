//! Real clients against pkv: redis-cli (both AUTH forms) and the `redis` crate over RESP2
//! and RESP3.

mod common;

use common::{redis_cli, Issuer, PkvConfig, Redis};

#[test]
fn redis_cli_authenticates_with_a_token() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer).start();
    let token = issuer.token(10);
    let port = pkv.port.to_string();
    let set = redis_cli(&[
        "-p",
        &port,
        "-a",
        &token,
        "--no-auth-warning",
        "SET",
        "greeting",
        "hello",
    ]);
    assert_eq!(set.trim(), "OK");
    let get = redis_cli(&[
        "-p",
        &port,
        "--user",
        "anyone",
        "--pass",
        &token,
        "--no-auth-warning",
        "GET",
        "greeting",
    ]);
    assert_eq!(get.trim(), "hello");
    let refused = redis_cli(&[
        "-p",
        &port,
        "-a",
        "not-a-token",
        "--no-auth-warning",
        "GET",
        "greeting",
    ]);
    assert!(refused.contains("WRONGPASS"), "{refused}");
}

#[test]
fn the_redis_crate_async_multiplexed_client_works_over_resp2_and_resp3() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer).start();
    let token = issuer.token(10);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for url in [pkv.url(&token), pkv.url_resp3(&token)] {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            // Many concurrent requests on one multiplexed connection, answered in order.
            let mut futures = Vec::new();
            for i in 0..200 {
                let mut c = conn.clone();
                futures.push(async move {
                    let key = format!("key-{i}");
                    let _: () = redis::cmd("SET")
                        .arg(&key)
                        .arg(i)
                        .query_async(&mut c)
                        .await
                        .unwrap();
                    let got: i64 = redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut c)
                        .await
                        .unwrap();
                    got
                });
            }
            let results = futures_util::future::join_all(futures).await;
            assert_eq!(results, (0..200).collect::<Vec<i64>>(), "{url}");
            let size: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
            assert_eq!(size, 200, "{url}");
            let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
        }
    });
}

#[test]
fn metrics_and_health_are_served_over_http() {
    let redis = Redis::start();
    let issuer = Issuer::new();
    let pkv = PkvConfig::new(&redis, &issuer)
        .set("PKV_METRICS_LISTEN", "127.0.0.1:0")
        .start_process();
    let metrics_port = pkv.metrics_port.expect("pkv printed its metrics address");
    let mut conn = pkv.client(&issuer.token(1));
    let _: () = redis::cmd("SET")
        .arg("a")
        .arg("b")
        .query(&mut conn)
        .unwrap();
    let get = |path: &str| -> String {
        use std::io::{Read, Write};
        // Bound before pkv printed its address.
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", metrics_port))
            .unwrap_or_else(|e| panic!("metrics endpoint not reachable: {e}"));
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    };
    let health = get("/healthz");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    let metrics = get("/metrics");
    let commands = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pkv_commands_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no pkv_commands_total in {metrics}"));
    assert!(commands >= 2, "AUTH and SET were counted: {metrics}");
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
}
