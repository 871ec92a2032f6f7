//! Test support: real redis-server and pkv processes on free ports, real tokens.
//!
//! Every test starts its own processes; they are killed when the handles drop.
#![allow(dead_code)]

pub mod examples;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use pkv::auth::keys::IssuerKey;
use pkv::auth::token::{mint_quota, MintRequest};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("process exited before listening on {port}: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listening on {port} after 20 s");
}

/// A private redis-server.
pub struct Redis {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        wait_for_port(port, &mut child);
        Redis {
            port,
            child,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A direct connection to the upstream, bypassing pkv, for checking what it holds.
    pub fn direct(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Prex-style issuer, signing real EdDSA quota tokens.
pub struct Issuer {
    pub key: IssuerKey,
    pub seed: [u8; 32],
}

impl Issuer {
    pub fn new() -> Issuer {
        let (seed, key) = IssuerKey::generate();
        Issuer { key, seed }
    }

    pub fn did(&self) -> String {
        self.key.did()
    }

    /// A token for `quantity` units, for the `pkv` audience, valid for an hour.
    pub fn token(&self, quantity: i64) -> String {
        self.mint(quantity, 3600, None)
    }

    pub fn mint(&self, quantity: i64, lifetime_secs: i64, sub: Option<&str>) -> String {
        let request = MintRequest {
            audience: "pkv".into(),
            quantity,
            lifetime_secs,
            sub: sub.map(str::to_owned),
        };
        mint_quota(&self.key, &request, now())
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A fresh base64 secret seed.
pub fn secret_seed() -> String {
    let (seed, _) = IssuerKey::generate();
    base64::engine::general_purpose::STANDARD.encode(seed)
}

/// Settings for a pkv process.
pub struct PkvConfig {
    pub upstream: String,
    pub issuers: Vec<String>,
    pub secret_seed: String,
    pub extra: Vec<(String, String)>,
}

impl PkvConfig {
    /// pkv in front of `redis`, trusting `issuer`, with a fresh secret seed.
    pub fn new(redis: &Redis, issuer: &Issuer) -> PkvConfig {
        PkvConfig {
            upstream: redis.url(),
            issuers: vec![issuer.did()],
            secret_seed: secret_seed(),
            extra: Vec::new(),
        }
    }

    pub fn set(mut self, name: &str, value: &str) -> PkvConfig {
        self.extra.push((name.into(), value.into()));
        self
    }

    pub fn start(&self) -> Pkv {
        Pkv::start(self)
    }
}

/// A running pkv binary.
pub struct Pkv {
    pub port: u16,
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Pkv {
    pub fn start(config: &PkvConfig) -> Pkv {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pkv"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PKV_LISTEN", format!("127.0.0.1:{port}"))
            .env("PKV_UPSTREAM_URL", &config.upstream)
            .env("PKV_QUOTA_ISSUERS", config.issuers.join(","))
            .env("PKV_SECRET_SEED", &config.secret_seed)
            .env("PKV_LOG", "warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in &config.extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        wait_for_port(port, &mut child);
        Pkv { port, child, dir }
    }

    pub fn url(&self, token: &str) -> String {
        format!("redis://:{token}@127.0.0.1:{}", self.port)
    }

    pub fn url_resp3(&self, token: &str) -> String {
        format!("redis://:{token}@127.0.0.1:{}/?protocol=resp3", self.port)
    }

    /// A `redis` crate connection authenticated with `token`.
    pub fn client(&self, token: &str) -> redis::Connection {
        redis::Client::open(self.url(token))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// A raw TCP connection for speaking RESP by hand.
    pub fn raw(&self) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Raw { stream }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the pkv process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Pkv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw client: write bytes, read what comes back.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends one command as a RESP array of bulk strings.
    pub fn command(&mut self, args: &[&[u8]]) {
        self.send(&encode(args));
    }

    /// Reads until `n` bytes or the peer closes or the timeout passes.
    pub fn read_some(&mut self, timeout: Duration) -> Vec<u8> {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        out
    }

    /// Reads until the output ends with `suffix`.
    pub fn read_until(&mut self, suffix: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while !out.ends_with(suffix) {
            assert!(
                Instant::now() < deadline,
                "timed out; got {:?}",
                String::from_utf8_lossy(&out)
            );
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("closed; got {:?}", String::from_utf8_lossy(&out)),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
        out
    }

    /// True when the peer has closed the connection (reads EOF within the timeout).
    pub fn is_closed(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
        false
    }
}

/// RESP encoding of a command.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Runs `redis-cli` with `args`, returning stdout (stderr appended).
pub fn redis_cli(args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(args)
        .output()
        .expect("redis-cli is installed (apt-get install redis-tools)");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

/// Records every command the upstream receives, via MONITOR on a direct connection.
pub struct Monitor {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stream: TcpStream,
}

impl Monitor {
    pub fn start(redis: &Redis) -> Monitor {
        let mut stream = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
        stream.write_all(b"MONITOR\r\n").unwrap();
        let mut ok = [0u8; 5];
        stream.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"+OK\r\n");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let reader = stream.try_clone().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let reader = std::io::BufReader::new(reader);
            for line in reader.lines() {
                match line {
                    Ok(l) => sink.lock().unwrap().push(l),
                    Err(_) => break,
                }
            }
        });
        Monitor { lines, stream }
    }

    /// Waits until a line containing `marker` arrives, then returns every line so far.
    pub fn until(&self, marker: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            {
                let lines = self.lines.lock().unwrap();
                if lines.iter().any(|l| l.contains(marker)) {
                    return lines.clone();
                }
            }
            assert!(Instant::now() < deadline, "MONITOR never showed {marker:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn clear(&self) {
        self.lines.lock().unwrap().clear();
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Parses a MONITOR line (`1700000000.123456 [0 127.0.0.1:1234] "SET" "k" "v"`) into its
/// arguments, undoing Redis's quoting.
pub fn monitor_args(line: &str) -> Vec<Vec<u8>> {
    let Some(start) = line.find("] ") else {
        return Vec::new();
    };
    let bytes = &line.as_bytes()[start + 2..];
    let mut args = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        i += 1;
        let mut arg = Vec::new();
        while i < bytes.len() && bytes[i] != b'"' {
            if bytes[i] == b'\\' && i + 1 < bytes.len() {
                i += 1;
                match bytes[i] {
                    b'n' => arg.push(b'\n'),
                    b'r' => arg.push(b'\r'),
                    b't' => arg.push(b'\t'),
                    b'a' => arg.push(7),
                    b'b' => arg.push(8),
                    b'x' if i + 2 < bytes.len() => {
                        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                        arg.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                        i += 2;
                    }
                    c => arg.push(c),
                }
            } else {
                arg.push(bytes[i]);
            }
            i += 1;
        }
        args.push(arg);
        i += 1;
    }
    args
}
