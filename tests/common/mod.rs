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
    /// The upstream Redis URL; `None` runs pkv on its embedded store.
    pub upstream: Option<String>,
    pub issuers: Vec<String>,
    pub secret_seed: String,
    pub extra: Vec<(String, String)>,
    /// Files written into pkv's working directory before it starts (`pkv.toml`, `.env`).
    pub files: Vec<(String, String)>,
}

impl PkvConfig {
    /// pkv in front of `redis`, trusting `issuer`, with a fresh secret seed.
    pub fn new(redis: &Redis, issuer: &Issuer) -> PkvConfig {
        PkvConfig {
            upstream: Some(redis.url()),
            issuers: vec![issuer.did()],
            secret_seed: secret_seed(),
            extra: Vec::new(),
            files: Vec::new(),
        }
    }

    /// pkv on its embedded store (no upstream), trusting `issuer`, with a fresh secret seed.
    pub fn embedded(issuer: &Issuer) -> PkvConfig {
        PkvConfig {
            upstream: None,
            issuers: vec![issuer.did()],
            secret_seed: secret_seed(),
            extra: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Writes `contents` to `name` in pkv's working directory before it starts.
    pub fn file(mut self, name: &str, contents: &str) -> PkvConfig {
        self.files.push((name.into(), contents.into()));
        self
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
        for (name, contents) in &config.files {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pkv"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PKV_LISTEN", format!("127.0.0.1:{port}"))
            .env("PKV_QUOTA_ISSUERS", config.issuers.join(","))
            .env("PKV_SECRET_SEED", &config.secret_seed)
            .env("PKV_LOG", "warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(upstream) = &config.upstream {
            cmd.env("PKV_UPSTREAM_URL", upstream);
        }
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

// === RESP replies one at a time, and the ledger as the upstream holds it ===

/// Length of the first complete RESP2/RESP3 value at the start of `buf`, or `None` while
/// more bytes are needed.
pub fn resp_frame_len(buf: &[u8]) -> Option<usize> {
    fn line_end(buf: &[u8], from: usize) -> Option<usize> {
        buf.get(from..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| from + i)
    }
    fn value_end(buf: &[u8], pos: usize) -> Option<usize> {
        let kind = *buf.get(pos)?;
        let end = line_end(buf, pos + 1)?;
        let after = end + 2;
        let n = || -> i64 {
            std::str::from_utf8(&buf[pos + 1..end])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(-1)
        };
        match kind {
            b'$' | b'=' | b'!' => {
                let n = n();
                if n < 0 {
                    return Some(after);
                }
                let stop = after + n as usize + 2;
                (buf.len() >= stop).then_some(stop)
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = n();
                let items = if matches!(kind, b'%' | b'|') {
                    2 * n
                } else {
                    n
                };
                let mut at = after;
                for _ in 0..items.max(0) {
                    at = value_end(buf, at)?;
                }
                if kind == b'|' {
                    // An attribute comes before the value it describes.
                    return value_end(buf, at);
                }
                Some(at)
            }
            _ => Some(after),
        }
    }
    value_end(buf, 0)
}

/// A raw client that reads one RESP reply at a time.
pub struct RespConn {
    pub stream: TcpStream,
    pending: Vec<u8>,
}

impl RespConn {
    pub fn connect(port: u16) -> RespConn {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        RespConn {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one complete reply (any RESP2/RESP3 type), waiting up to 10 s.
    pub fn reply(&mut self) -> Vec<u8> {
        self.reply_within(Duration::from_secs(10))
    }

    pub fn reply_within(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            if let Some(n) = resp_frame_len(&self.pending) {
                return self.pending.drain(..n).collect();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no complete reply within {timeout:?}; got {:?}",
                String::from_utf8_lossy(&self.pending)
            );
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => panic!(
                    "connection closed; got {:?}",
                    String::from_utf8_lossy(&self.pending)
                ),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Sends one command as RESP and reads its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(&encode(args));
        self.reply()
    }

    /// Sends one command given as text and reads its reply, waiting up to `timeout`.
    pub fn send_and_reply(&mut self, args: &[&str], timeout: Duration) -> Vec<u8> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&encode(&args));
        self.reply_within(timeout)
    }

    /// `call` with the reply as text, for assertions.
    pub fn call_text(&mut self, args: &[&str]) -> String {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        String::from_utf8_lossy(&self.call(&args)).into_owned()
    }

    /// Reads everything until the peer closes or `timeout` passes; returns what was read
    /// and whether the peer closed (EOF or reset).
    pub fn read_to_close(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let deadline = Instant::now() + timeout;
        let mut out = std::mem::take(&mut self.pending);
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (out, false);
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => return (out, true),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionReset
                        || e.kind() == std::io::ErrorKind::ConnectionAborted =>
                {
                    return (out, true)
                }
                Err(_) => {}
            }
        }
    }
}

impl Pkv {
    /// A [`RespConn`] to this pkv, not authenticated.
    pub fn resp(&self) -> RespConn {
        RespConn::connect(self.port)
    }

    /// A [`RespConn`] to this pkv after `AUTH token` succeeded.
    pub fn resp_authed(&self, token: &str) -> RespConn {
        let mut conn = self.resp();
        let reply = conn.call(&[b"AUTH", token.as_bytes()]);
        assert_eq!(reply, b"+OK\r\n", "{}", String::from_utf8_lossy(&reply));
        conn
    }

    /// True while the pkv process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A reply as text: bulk and simple strings, numbers, and errors (as `Err`).
pub fn value_text(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Okay => "OK".into(),
        redis::Value::Int(n) => n.to_string(),
        redis::Value::Nil => "(nil)".into(),
        other => format!("{other:?}"),
    }
}

/// `PKV.BALANCE` on `conn`, as field → text.
pub fn pkv_balance(conn: &mut redis::Connection) -> std::collections::BTreeMap<String, String> {
    let value: redis::Value = redis::cmd("PKV.BALANCE")
        .query(conn)
        .expect("PKV.BALANCE answers");
    let pairs: Vec<(redis::Value, redis::Value)> = match value {
        redis::Value::Map(pairs) => pairs,
        redis::Value::Array(items) => {
            let mut it = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        other => panic!("PKV.BALANCE answered {other:?}"),
    };
    pairs
        .iter()
        .map(|(k, v)| (value_text(k), value_text(v)))
        .collect()
}

/// What the upstream's ledger holds: each account record's `credited` (nano-units), and
/// every redeemed token id.
pub struct LedgerView {
    pub credited: std::collections::BTreeMap<String, i64>,
    pub jtis: Vec<String>,
}

impl LedgerView {
    pub fn read(redis: &Redis) -> LedgerView {
        let mut conn = redis.direct();
        let accounts: Vec<String> = redis::cmd("KEYS")
            .arg("pkv:ledger:acct:*")
            .query(&mut conn)
            .unwrap();
        let mut credited = std::collections::BTreeMap::new();
        for key in accounts {
            let value: Option<i64> = redis::cmd("HGET")
                .arg(&key)
                .arg("credited")
                .query(&mut conn)
                .unwrap();
            credited.insert(key, value.unwrap_or(0));
        }
        let mut jtis: Vec<String> = redis::cmd("KEYS")
            .arg("pkv:ledger:jti:*")
            .query(&mut conn)
            .unwrap();
        jtis.sort();
        LedgerView { credited, jtis }
    }

    /// Everything credited, over all accounts.
    pub fn total(&self) -> i64 {
        self.credited.values().sum()
    }
}

/// Everything credited to the account, from a `PKV.BALANCE` reply: `balance + spent`,
/// which metering does not change (spending moves nano-units from one to the other).
pub fn credited(balance: &std::collections::BTreeMap<String, String>) -> String {
    let nanos = |field: &str| -> i128 {
        let text = balance
            .get(field)
            .unwrap_or_else(|| panic!("no {field} in {balance:?}"));
        let (whole, frac) = text.split_once('.').unwrap_or((text, "0"));
        let negative = whole.starts_with('-');
        let whole: i128 = whole.trim_start_matches('-').parse().unwrap();
        let frac: i128 = format!("{frac:0<9}").parse().unwrap();
        let value = whole * 1_000_000_000 + frac;
        if negative {
            -value
        } else {
            value
        }
    };
    let total = nanos("balance") + nanos("spent");
    format!("{}.{:09}", total / 1_000_000_000, total % 1_000_000_000)
}
