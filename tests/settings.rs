//! Settings come in layers: built-in defaults < `pkv.toml` < `.env` < the environment.
//! Each layer is observed through its effect on a running pkv: the longest TTL it lets a
//! write buy (`PKV_MAX_TTL`) and the default TTL it gives a write without one.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use common::{Issuer, PkvConfig, Redis};

/// The answer to `SET k v EX <secs>` through a pkv: "OK" or the error text.
fn set_ex(conn: &mut redis::Connection, secs: u64) -> String {
    let reply = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .arg("EX")
        .arg(secs)
        .query::<redis::Value>(conn);
    match reply {
        Ok(redis::Value::Okay) => "OK".to_string(),
        Ok(other) => format!("unexpected {other:?}"),
        Err(e) => e.to_string(),
    }
}

/// The TTL a `SET` without an expiry was given.
fn default_ttl(conn: &mut redis::Connection) -> i64 {
    let _: () = redis::cmd("SET").arg("d").arg("v").query(conn).unwrap();
    redis::cmd("TTL").arg("d").query(conn).unwrap()
}

#[test]
fn each_layer_overrides_the_one_below() {
    let redis = Redis::start();
    let issuer = Issuer::new();

    // Built-in defaults: a day by default, a year at most.
    let pkv = PkvConfig::new(&redis, &issuer).start();
    let mut conn = pkv.client(&issuer.token(100));
    assert!((86_390..=86_400).contains(&default_ttl(&mut conn)));
    let year = set_ex(&mut conn, 31_536_000);
    assert!(year.starts_with("OK"), "{year}");
    assert!(set_ex(&mut conn, 31_536_001).contains("maximum TTL"));
    drop(pkv);

    // pkv.toml over the defaults.
    let toml = "max_ttl = 1000\ndefault_ttl = 500\n";
    let pkv = PkvConfig::new(&redis, &issuer)
        .file("pkv.toml", toml)
        .start_process();
    let mut conn = pkv.client(&issuer.token(100));
    assert!((490..=500).contains(&default_ttl(&mut conn)));
    assert!(set_ex(&mut conn, 1000).starts_with("OK"));
    assert!(set_ex(&mut conn, 1001).contains("maximum TTL"));
    drop(pkv);

    // .env over pkv.toml.
    let pkv = PkvConfig::new(&redis, &issuer)
        .file("pkv.toml", toml)
        .file(".env", "PKV_MAX_TTL=2000\n")
        .start_process();
    let mut conn = pkv.client(&issuer.token(100));
    assert!(
        (490..=500).contains(&default_ttl(&mut conn)),
        "pkv.toml still gives the default TTL"
    );
    assert!(set_ex(&mut conn, 2000).starts_with("OK"));
    assert!(set_ex(&mut conn, 2001).contains("maximum TTL"));
    drop(pkv);

    // The environment over .env.
    let pkv = PkvConfig::new(&redis, &issuer)
        .file("pkv.toml", toml)
        .file(".env", "PKV_MAX_TTL=2000\n")
        .set("PKV_MAX_TTL", "3000")
        .start_process();
    let mut conn = pkv.client(&issuer.token(100));
    assert!(set_ex(&mut conn, 3000).starts_with("OK"));
    assert!(set_ex(&mut conn, 3001).contains("maximum TTL"));
}

#[test]
fn a_bad_setting_in_any_layer_stops_start_up_naming_it() {
    for (file, contents, name) in [
        ("pkv.toml", "max_ttl = \"soon\"\n", "PKV_MAX_TTL"),
        (".env", "PKV_DEFAULT_TTL=-1\n", "PKV_DEFAULT_TTL"),
        ("pkv.toml", "no_such_setting = 1\n", "PKV_NO_SUCH_SETTING"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(file), contents).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_pkv"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PKV_UPSTREAM_URL", "redis://127.0.0.1:1")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "{file}: {contents:?} was accepted"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&format!("pkv: {name}:"))),
            "{file}: {contents:?} gave {stderr}"
        );
    }
}
