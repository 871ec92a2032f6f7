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
