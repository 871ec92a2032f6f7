//! `pkv healthcheck`: whether the pkv of these settings answers, for a container's
//! `HEALTHCHECK` (the image carries no redis-cli, curl or shell tools to ask it with).
//!
//! It connects to the listener, sends `PING` (a command served before AUTH, so no token is
//! needed) and expects `+PONG`. Exit code 0 means healthy and 1 unhealthy, as Docker reads
//! them; an unhealthy check prints one line saying why.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The exit code Docker reads as unhealthy (2 is reserved).
const UNHEALTHY: i32 = 1;

/// `PING` as a RESP array, the way clients send it.
const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// Checks the pkv at `addr`, or at `PKV_LISTEN` (read like `pkv serve` reads it) when
/// `addr` is `None`, giving it `timeout` in all; returns the exit code.
pub fn run(addr: Option<&str>, timeout: Duration) -> i32 {
    let target = match addr {
        Some(text) => match text.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => addr,
            Ok(None) | Err(_) => {
                eprintln!("pkv healthcheck: --addr {text}: not an address (HOST:PORT)");
                return UNHEALTHY;
            }
        },
        None => match crate::config::Settings::load() {
            Ok(settings) => reachable(settings.listen),
            Err(errors) => {
                eprintln!("pkv healthcheck: {}", errors.0.join("; "));
                return UNHEALTHY;
            }
        },
    };
    match ping(target, timeout) {
        Ok(()) => {
            println!("pkv at {target} answers");
            0
        }
        Err(why) => {
            eprintln!("pkv healthcheck: {target}: {why}");
            UNHEALTHY
        }
    }
}

/// The address to connect to for a listener bound to `listen`: a wildcard address (pkv in
/// a container listens on 0.0.0.0) is reached on the loopback address of its family.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Sends PING to `addr` and reads the first reply line, all within `timeout`.
fn ping(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("timed out after {} s", timeout.as_secs_f64()))
    };
    let mut conn =
        TcpStream::connect_timeout(&addr, left()?).map_err(|e| format!("cannot connect: {e}"))?;
    conn.set_write_timeout(Some(left()?))
        .and_then(|()| conn.write_all(PING))
        .map_err(|e| format!("cannot send PING: {e}"))?;
    // The reply line is short: read until its CRLF, at most 64 bytes.
    let mut reply = Vec::with_capacity(64);
    let mut chunk = [0u8; 64];
    while !reply.ends_with(b"\r\n") && reply.len() < 64 {
        conn.set_read_timeout(Some(left()?))
            .map_err(|e| format!("cannot wait for the reply: {e}"))?;
        match conn.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "timed out after {} s waiting for PONG",
                    timeout.as_secs_f64()
                ));
            }
            Err(e) => return Err(format!("cannot read the reply: {e}")),
        }
    }
    if reply.starts_with(b"+PONG\r\n") {
        Ok(())
    } else if reply.is_empty() {
        Err("closed the connection without answering PING".to_owned())
    } else {
        Err(format!(
            "answered PING with {:?}, not +PONG",
            String::from_utf8_lossy(&reply).trim_end()
        ))
    }
}
