//! Fairness between tenants on the embedded store when one of them runs scripts back to
//! back: a script holds the store exclusively (up to `PKV_SCRIPT_TIME_LIMIT`), so without
//! a bound on how much of the store's time one account's scripts take, a tenant running
//! them from several connections keeps every other tenant waiting for as long as it likes.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::time::{Duration, Instant};

use common::{Issuer, PkvConfig, RespConn};

/// Tenant A runs 1 s scripts back to back from three connections for 10 s; tenant B
/// reads a key in a loop all the while. B is served every second or so, and many times
/// a second overall, not once per script of A's.
#[test]
fn a_tenants_back_to_back_scripts_leave_the_store_to_others() {
    const RUN: Duration = Duration::from_secs(10);
    let issuer = Issuer::new();
    let server = PkvConfig::embedded(&issuer)
        .set("PKV_SCRIPT_TIME_LIMIT", "1000")
        .start();
    let (token_a, token_b) = (issuer.token(1000), issuer.token(1000));
    let mut b = server.resp_authed(&token_b);
    assert_eq!(b.call_text(&["SET", "k", "v"]), "+OK\r\n");
    let started = Instant::now();
    let hogs: Vec<_> = (0..3)
        .map(|_| {
            let (port, token) = (server.port, token_a.clone());
            std::thread::spawn(move || {
                let mut a = RespConn::connect(port);
                a.call(&[b"AUTH", token.as_bytes()]);
                let mut ran = 0;
                while started.elapsed() < RUN {
                    // A's scripts now wait their turn: far longer than one script.
                    let args = ["EVAL", "while true do end", "0"];
                    let reply = a.send_and_reply(&args, Duration::from_secs(60));
                    let reply = String::from_utf8_lossy(&reply);
                    assert!(reply.starts_with("-ERR script stopped"), "{reply:?}");
                    ran += 1;
                }
                ran
            })
        })
        .collect();
    // Let A's scripts start.
    std::thread::sleep(Duration::from_millis(200));
    let mut answers = Vec::new();
    while started.elapsed() < RUN {
        assert_eq!(b.call_text(&["GET", "k"]), "$1\r\nv\r\n");
        answers.push(started.elapsed());
    }
    let scripts: u32 = hogs.into_iter().map(|h| h.join().unwrap()).sum();
    let mut longest = Duration::ZERO;
    let mut last = Duration::from_millis(200);
    for at in &answers {
        longest = longest.max(*at - last);
        last = *at;
    }
    let seconds_served = (1..10)
        .filter(|s| {
            let window = Duration::from_secs(*s)..Duration::from_secs(s + 1);
            answers.iter().any(|at| window.contains(at))
        })
        .count();
    eprintln!(
        "A ran {scripts} scripts; B got {} answers, longest wait {longest:?}, served in {seconds_served} of 9 seconds",
        answers.len()
    );
    assert!(
        longest < Duration::from_millis(2500),
        "B waited {longest:?}"
    );
    assert!(
        seconds_served >= 6,
        "B served in {seconds_served} of 9 seconds"
    );
    assert!(answers.len() >= 100, "B got {} answers", answers.len());
}
