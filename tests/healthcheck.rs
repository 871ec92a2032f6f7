//! `pkv healthcheck`, the container's HEALTHCHECK: it exits 0 only when a pkv answers PING
//! on the address it checks, and 1 (with one line saying why) when nothing listens there,
//! when the listener never answers, or when what answers is not pkv.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ClosedPort, Issuer, PkvConfig};

/// Runs `pkv healthcheck ARGS` with only `env` in its environment, in an empty directory
/// (no `pkv.toml` or `.env` to read).
fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_pkv"))
        .arg("healthcheck")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_serving_pkv_is_healthy() {
    let pkv = PkvConfig::embedded(&Issuer::new()).start();
    let out = healthcheck(&["--addr", &format!("127.0.0.1:{}", pkv.port)], &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
}

/// In a container pkv listens on 0.0.0.0 (PKV_LISTEN); the check reads the same setting
/// and connects to the loopback address on that port.
#[test]
fn the_address_comes_from_pkv_listen_with_a_wildcard_made_loopback() {
    let pkv = PkvConfig::embedded(&Issuer::new()).start();
    let listen = format!("0.0.0.0:{}", pkv.port);
    let out = healthcheck(&[], &[("PKV_LISTEN", &listen)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));

    // The same setting naming a port where nothing listens is unhealthy.
    let closed = ClosedPort::new();
    let listen = format!("0.0.0.0:{}", closed.port);
    let out = healthcheck(&[], &[("PKV_LISTEN", &listen)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{}", closed.port)),
        "stderr: {}",
        stderr(&out)
    );
}

#[test]
fn nothing_listening_is_unhealthy() {
    let closed = ClosedPort::new();
    let addr = format!("127.0.0.1:{}", closed.port);
    let out = healthcheck(&["--addr", &addr], &[]);
    assert_eq!(out.status.code(), Some(1));
    let line = stderr(&out);
    assert!(line.contains(&addr), "stderr: {line}");
    assert_eq!(line.lines().count(), 1, "stderr: {line}");
}

/// A listener that accepts and never answers (a hung process) fails the check once its
/// timeout has passed, not later.
#[test]
fn a_listener_that_never_answers_is_unhealthy_within_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let started = Instant::now();
    let out = healthcheck(&["--addr", &addr, "--timeout", "1"], &[]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert!(took >= Duration::from_secs(1), "gave up after {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        stderr(&out).contains("timed out"),
        "stderr: {}",
        stderr(&out)
    );
    drop(listener);
}

/// Something else on the port (here a server that answers every request with an error)
/// is not a healthy pkv.
#[test]
fn a_listener_that_answers_something_else_is_unhealthy() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = [0u8; 64];
        let _ = conn.read(&mut request).unwrap();
        conn.write_all(b"-ERR unknown command\r\n").unwrap();
        request
    });
    let out = healthcheck(&["--addr", &addr], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("-ERR unknown command"),
        "stderr: {}",
        stderr(&out)
    );
    let request = server.join().unwrap();
    assert!(request.starts_with(b"*1\r\n$4\r\nPING\r\n"));
}
