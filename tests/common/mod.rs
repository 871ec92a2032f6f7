//! Test support: pkv served in-process or as a process, real redis-server processes, real
//! tokens.
//!
//! Nothing here chooses a port and hopes it stays free. An in-process pkv ([`Server`])
//! serves on a listener this process bound to port 0; a pkv process ([`Pkv`]) binds port 0
//! itself and the test reads the address it prints; a redis-server, which cannot be given
//! port 0, is started again on another port when the one it was given was taken. Servers
//! and processes stop when their handles drop.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // a helper that unwraps fails its test with the error

pub mod cluster;
pub mod examples;
pub mod parity;

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use pkv::auth::keys::IssuerKey;
use pkv::auth::token::{mint_quota, MintRequest};

/// A port nobody listens on right now. Only for servers that cannot bind port 0
/// themselves (redis-server) or for a port that must stay closed; whoever binds it must
/// cope with losing it to another process first (see [`Redis::start`]).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port held closed: bound but not listening, so a connection to it is refused as by a
/// server that is down, and no other process can take it until this drops. For a server
/// that a test starts on the port later, after telling pkv where it will be.
pub struct ClosedPort {
    pub port: u16,
    _socket: tokio::net::TcpSocket,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        ClosedPort {
            port,
            _socket: socket,
        }
    }
}

/// Polls `ready` every 10 ms until it holds, for up to 10 s; panics with `what` if it
/// never does. For tests that wait for a state pkv reaches a moment after a reply (a
/// connection counted, a charge settled, a client blocked).
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "waited 10 s: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A private redis-server.
pub struct Redis {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

/// Why a redis-server did not come up.
enum RedisStart {
    /// Another process holds the port: try another.
    PortTaken,
    Failed(String),
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// A private redis-server started with `extra` options as well (e.g. `--maxclients 30`).
    /// Its port is picked free and, when another process takes it first, picked again.
    pub fn start_with(extra: &[&str]) -> Redis {
        for _ in 0..20 {
            match Redis::try_start(free_port(), extra) {
                Ok(redis) => return redis,
                Err(RedisStart::PortTaken) => continue,
                Err(RedisStart::Failed(why)) => panic!("{why}"),
            }
        }
        panic!("redis-server found its port taken 20 times");
    }

    /// A redis-server on `port`, which a client is already configured to reach (an
    /// upstream started again after it died). Nothing else binds ports that were never
    /// handed out, so a port held briefly by someone else is waited out.
    pub fn start_on(port: u16) -> Redis {
        Redis::start_with_on(port, &[])
    }

    pub fn start_with_on(port: u16, extra: &[&str]) -> Redis {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Redis::try_start(port, extra) {
                Ok(redis) => return redis,
                Err(RedisStart::PortTaken) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(RedisStart::PortTaken) => panic!("port {port} stayed taken for 10 s"),
                Err(RedisStart::Failed(why)) => panic!("{why}"),
            }
        }
    }

    /// Starts redis-server on `port` and waits until its log says it accepts connections
    /// (connecting would not tell it apart from another process on the same port).
    fn try_start(port: u16, extra: &[&str]) -> Result<Redis, RedisStart> {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("redis.log");
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--logfile")
            .arg(&log)
            .args(extra)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Ready to accept connections") {
                return Ok(Redis { port, child, dir });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("Address already in use") {
                    return Err(RedisStart::PortTaken);
                }
                return Err(RedisStart::Failed(format!(
                    "redis-server on {port} exited ({status}):\n{text}"
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RedisStart::Failed(format!(
                    "redis-server on {port} not ready after 20 s:\n{text}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
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

    /// A field of the server's own `INFO` (e.g. `blocked_clients`), as a number.
    pub fn info_field(&self, field: &str) -> i64 {
        let info: String = redis::cmd("INFO").query(&mut self.direct()).unwrap();
        info_field(&info, field)
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

/// The number after `field:` in an `INFO` text.
pub fn info_field(info: &str, field: &str) -> i64 {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {info:?}"))
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

/// Settings for a pkv, in-process or as a process.
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

    /// Writes `contents` to `name` in pkv's working directory before it starts (a pkv
    /// process only: an in-process server reads no files).
    pub fn file(mut self, name: &str, contents: &str) -> PkvConfig {
        self.files.push((name.into(), contents.into()));
        self
    }

    pub fn set(mut self, name: &str, value: &str) -> PkvConfig {
        self.extra.push((name.into(), value.into()));
        self
    }

    /// pkv served in this process, on a listener bound to port 0.
    pub fn start(&self) -> Server {
        Server::start(self)
    }

    /// pkv as a process of its own, for what needs one: signals, kill -9, a restart
    /// over a data file, its memory or CPU, its output, settings files.
    pub fn start_process(&self) -> Pkv {
        Pkv::start(self)
    }

    /// These settings as `PKV_*` names and values, listening on port 0.
    pub fn settings(&self) -> BTreeMap<String, String> {
        let mut raw = BTreeMap::new();
        raw.insert("PKV_LISTEN".to_owned(), "127.0.0.1:0".to_owned());
        raw.insert("PKV_QUOTA_ISSUERS".to_owned(), self.issuers.join(","));
        raw.insert("PKV_SECRET_SEED".to_owned(), self.secret_seed.clone());
        raw.insert("PKV_LOG".to_owned(), "warn".to_owned());
        if let Some(upstream) = &self.upstream {
            raw.insert("PKV_UPSTREAM_URL".to_owned(), upstream.clone());
        }
        for (k, v) in &self.extra {
            raw.insert(k.clone(), v.clone());
        }
        raw
    }

    /// The pkv command for these settings, listening on port 0, run in `dir` (with the
    /// configured files written there); stdout is piped (see [`Pkv::spawn`]), stderr
    /// inherited.
    pub fn command(&self, dir: &std::path::Path) -> Command {
        for (name, contents) in &self.files {
            std::fs::write(dir.join(name), contents).unwrap();
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pkv"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.settings())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd
    }
}

/// What a client of pkv needs: its port, and connections of every kind to it.
macro_rules! client_side {
    () => {
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

        /// Waits until `n` connections of `token`'s account are blocked in a blocking
        /// command (its INFO's `blocked_clients`), so that a write now wakes them.
        pub fn wait_blocked(&self, token: &str, n: i64) {
            let mut probe = self.resp_authed(token);
            let mut now = -1;
            wait_until(&format!("{n} blocked clients"), || {
                let info = probe.call(&[b"INFO"]);
                now = info_field(&String::from_utf8_lossy(&info), "blocked_clients");
                now == n
            });
        }
    };
}

/// pkv served in this process on a tokio runtime of its own, in a thread, from a listener
/// bound to port 0 before it starts: no other process can take the port in between.
/// Dropping it shuts pkv down as SIGTERM would and waits for it to finish.
pub struct Server {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<i32>>,
}

impl Server {
    pub fn start(config: &PkvConfig) -> Server {
        assert!(
            config.files.is_empty(),
            "settings files are read by a pkv process: use start_process"
        );
        let settings = pkv::config::Settings::from_map(&config.settings())
            .unwrap_or_else(|e| panic!("pkv settings: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("pkv-{port}"))
            .spawn(move || {
                let runtime = pkv::cli::runtime(settings.threads).unwrap();
                let code = runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    pkv::cli::run(settings, listener, async {
                        let _ = stopped.await;
                    })
                    .await
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
                code
            })
            .unwrap();
        Server {
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    client_side!();

    /// True while pkv is still serving (it has not stopped on its own).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Shuts pkv down and returns its exit code.
    pub fn stop(mut self) -> i32 {
        self.shut_down().unwrap_or(-1)
    }

    fn shut_down(&mut self) -> Option<i32> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let thread = self.thread.take()?;
        // The grace period bounds how long connections hold shutdown up.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !thread.is_finished() {
            if Instant::now() > deadline {
                eprintln!(
                    "pkv on {} still stopping after 30 s; left behind",
                    self.port
                );
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        thread.join().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// A running pkv process.
pub struct Pkv {
    pub port: u16,
    /// The metrics endpoint's port, when `PKV_METRICS_LISTEN` is set.
    pub metrics_port: Option<u16>,
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Pkv {
    pub fn start(config: &PkvConfig) -> Pkv {
        let dir = tempfile::tempdir().unwrap();
        let cmd = config.command(dir.path());
        Pkv::spawn(cmd, dir)
    }

    /// Runs `cmd` (a [`PkvConfig::command`], perhaps changed) and waits until pkv prints
    /// the address it bound. Its stdout is read to the end in the background.
    pub fn spawn(mut cmd: Command, dir: tempfile::TempDir) -> Pkv {
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let (port, metrics_port) = listening(&mut child);
        Pkv {
            port,
            metrics_port,
            child,
            dir,
        }
    }

    client_side!();

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the pkv process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The most resident memory the pkv process has had, in KiB: catches memory a
    /// request held only for a moment.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
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

    /// True while the pkv process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Reads a starting pkv's stdout until `pkv listening on ADDR`; returns that port and the
/// metrics endpoint's, if it printed one. Panics if pkv exits first or says nothing for
/// 20 s.
fn listening(child: &mut Child) -> (u16, Option<u16>) {
    let stdout = child.stdout.take().expect("pkv's stdout is piped");
    let (lines, heard) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The test stops listening once pkv is up; the rest is read and dropped.
            let _ = lines.send(line);
        }
    });
    let port_of = |line: &str, prefix: &str| -> Option<u16> {
        let addr: std::net::SocketAddr = line.strip_prefix(prefix)?.trim().parse().ok()?;
        Some(addr.port())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut metrics = None;
    let mut said = Vec::new();
    loop {
        match heard.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                if let Some(port) = port_of(&line, "pkv listening on ") {
                    return (port, metrics);
                }
                if let Some(port) = port_of(&line, "pkv metrics listening on ") {
                    metrics = Some(port);
                }
                said.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("pkv exited before listening ({status}); stdout: {said:?}");
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                panic!("pkv exited before listening ({status}); stdout: {said:?}");
            }
        }
        if Instant::now() > deadline {
            panic!("pkv not listening after 20 s; stdout: {said:?}");
        }
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

/// Runs the redis-py app `tests/apps/<app>` with `args` (scripts/test.sh installs
/// python3-redis) and returns what it printed, trimmed; fails the test when the app fails.
pub fn run_python_app(app: &str, args: &[&str]) -> String {
    let path = format!("{}/tests/apps/{app}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3")
        .arg(path)
        .args(args)
        .output()
        .expect("python3 runs (scripts/test.sh installs python3-redis)");
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
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

// === RESP values, parsed exactly (every RESP2 and RESP3 type kept apart) ===

/// One RESP2/RESP3 value, as it was on the wire: nulls, doubles, maps, sets and pushes are
/// distinct from strings and arrays.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resp {
    /// `+text`
    Simple(String),
    /// `-CODE text`
    Error(String),
    /// `:n`
    Int(i64),
    /// `$n` bulk string
    Bulk(Vec<u8>),
    /// `$-1`: RESP2's null bulk string
    NullBulk,
    /// `*-1`: RESP2's null array
    NullArray,
    /// `_`: RESP3's null
    Null,
    /// `#t` / `#f`
    Bool(bool),
    /// `,text`, kept as written
    Double(String),
    /// `(digits`
    BigNumber(String),
    /// `!n` bulk error
    BulkError(Vec<u8>),
    /// `=n` verbatim string: its three-letter format and its text
    Verbatim(String, Vec<u8>),
    /// `*n`
    Array(Vec<Resp>),
    /// `~n`
    Set(Vec<Resp>),
    /// `%n`
    Map(Vec<(Resp, Resp)>),
    /// `>n`
    Push(Vec<Resp>),
    /// `|n` attributes, then the value they describe
    Attribute(Vec<(Resp, Resp)>, Box<Resp>),
}

impl Resp {
    /// Parses the one complete value `frame` holds (see [`resp_frame_len`]).
    pub fn parse(frame: &[u8]) -> Result<Resp, String> {
        let (value, used) = Resp::parse_at(frame, 0)?;
        if used != frame.len() {
            return Err(format!(
                "{} bytes after the value: {:?}",
                frame.len() - used,
                String::from_utf8_lossy(&frame[used..])
            ));
        }
        Ok(value)
    }

    fn parse_at(buf: &[u8], pos: usize) -> Result<(Resp, usize), String> {
        let kind = *buf.get(pos).ok_or("truncated value")?;
        let end = buf[pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| pos + i)
            .ok_or("no CRLF")?;
        let line = std::str::from_utf8(&buf[pos + 1..end])
            .map_err(|_| format!("line of {:?} is not UTF-8", kind as char))?;
        let after = end + 2;
        let count = || -> Result<i64, String> {
            line.parse::<i64>()
                .map_err(|_| format!("bad length {line:?} after {:?}", kind as char))
        };
        let blob = |n: i64| -> Result<(Vec<u8>, usize), String> {
            let stop = after + n as usize;
            if buf.get(stop..stop + 2) != Some(b"\r\n".as_slice()) {
                return Err(format!("{:?} blob of {n} bytes not closed", kind as char));
            }
            Ok((buf[after..stop].to_vec(), stop + 2))
        };
        let items = |n: i64| -> Result<(Vec<Resp>, usize), String> {
            let mut at = after;
            let mut out = Vec::new();
            for _ in 0..n {
                let (v, next) = Resp::parse_at(buf, at)?;
                out.push(v);
                at = next;
            }
            Ok((out, at))
        };
        let pairs = |n: i64| -> Result<(Vec<(Resp, Resp)>, usize), String> {
            let (flat, at) = items(2 * n)?;
            let mut it = flat.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            Ok((out, at))
        };
        Ok(match kind {
            b'+' => (Resp::Simple(line.to_owned()), after),
            b'-' => (Resp::Error(line.to_owned()), after),
            b':' => (
                Resp::Int(line.parse().map_err(|_| format!("bad integer {line:?}"))?),
                after,
            ),
            b'_' => (Resp::Null, after),
            b'#' => match line {
                "t" => (Resp::Bool(true), after),
                "f" => (Resp::Bool(false), after),
                _ => return Err(format!("bad boolean {line:?}")),
            },
            b',' => (Resp::Double(line.to_owned()), after),
            b'(' => (Resp::BigNumber(line.to_owned()), after),
            b'$' => match count()? {
                -1 => (Resp::NullBulk, after),
                n if n < 0 => return Err(format!("bad bulk length {n}")),
                n => {
                    let (b, at) = blob(n)?;
                    (Resp::Bulk(b), at)
                }
            },
            b'!' => {
                let (b, at) = blob(count()?.max(0))?;
                (Resp::BulkError(b), at)
            }
            b'=' => {
                let (b, at) = blob(count()?.max(0))?;
                if b.len() < 4 || b[3] != b':' {
                    return Err("verbatim string without its format".into());
                }
                let format = String::from_utf8_lossy(&b[..3]).into_owned();
                (Resp::Verbatim(format, b[4..].to_vec()), at)
            }
            b'*' => match count()? {
                -1 => (Resp::NullArray, after),
                n if n < 0 => return Err(format!("bad array length {n}")),
                n => {
                    let (v, at) = items(n)?;
                    (Resp::Array(v), at)
                }
            },
            b'~' => {
                let (v, at) = items(count()?.max(0))?;
                (Resp::Set(v), at)
            }
            b'>' => {
                let (v, at) = items(count()?.max(0))?;
                (Resp::Push(v), at)
            }
            b'%' => {
                let (v, at) = pairs(count()?.max(0))?;
                (Resp::Map(v), at)
            }
            b'|' => {
                let (attrs, at) = pairs(count()?.max(0))?;
                let (value, at) = Resp::parse_at(buf, at)?;
                (Resp::Attribute(attrs, Box::new(value)), at)
            }
            other => return Err(format!("unknown RESP type byte {:?}", other as char)),
        })
    }

    /// The error's code (its first word), for errors.
    pub fn error_code(&self) -> Option<String> {
        match self {
            Resp::Error(line) => Some(line.split(' ').next().unwrap_or_default().to_owned()),
            Resp::BulkError(b) => Some(
                String::from_utf8_lossy(b)
                    .split(' ')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            _ => None,
        }
    }

    /// The type's name, for messages and type-only comparisons.
    pub fn type_name(&self) -> &'static str {
        match self {
            Resp::Simple(_) => "simple string",
            Resp::Error(_) => "error",
            Resp::Int(_) => "integer",
            Resp::Bulk(_) => "bulk string",
            Resp::NullBulk => "null bulk string",
            Resp::NullArray => "null array",
            Resp::Null => "null",
            Resp::Bool(_) => "boolean",
            Resp::Double(_) => "double",
            Resp::BigNumber(_) => "big number",
            Resp::BulkError(_) => "bulk error",
            Resp::Verbatim(..) => "verbatim string",
            Resp::Array(_) => "array",
            Resp::Set(_) => "set",
            Resp::Map(_) => "map",
            Resp::Push(_) => "push",
            Resp::Attribute(..) => "attribute",
        }
    }

    /// The number of elements of an aggregate (pairs for maps).
    pub fn len(&self) -> Option<usize> {
        match self {
            Resp::Array(v) | Resp::Set(v) | Resp::Push(v) => Some(v.len()),
            Resp::Map(v) => Some(v.len()),
            Resp::Attribute(_, value) => value.len(),
            _ => None,
        }
    }

    /// Calls `f` on this value and on every value inside it.
    pub fn visit(&self, f: &mut dyn FnMut(&Resp)) {
        f(self);
        match self {
            Resp::Array(v) | Resp::Set(v) | Resp::Push(v) => v.iter().for_each(|x| x.visit(f)),
            Resp::Map(v) => v.iter().for_each(|(k, x)| {
                k.visit(f);
                x.visit(f);
            }),
            Resp::Attribute(a, value) => {
                a.iter().for_each(|(k, x)| {
                    k.visit(f);
                    x.visit(f);
                });
                value.visit(f);
            }
            _ => {}
        }
    }
}

/// Bytes as a double-quoted string, escaping what is not printable ASCII.
pub fn quoted(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

/// A compact one-line rendering that keeps every type visible: `+OK`, `-ERR ..`, `:1`,
/// `"bulk"`, `$-1`, `*-1`, `_`, `#t`, `,1.5`, `(123`, `*[..]`, `~{..}`, `%{k => v}`, `>[..]`.
impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn list(f: &mut std::fmt::Formatter<'_>, items: &[Resp]) -> std::fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "{item}")?;
            }
            Ok(())
        }
        fn pairs(f: &mut std::fmt::Formatter<'_>, items: &[(Resp, Resp)]) -> std::fmt::Result {
            for (i, (k, v)) in items.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "{k} => {v}")?;
            }
            Ok(())
        }
        match self {
            Resp::Simple(s) => write!(f, "+{s}"),
            Resp::Error(s) => write!(f, "-{s}"),
            Resp::Int(n) => write!(f, ":{n}"),
            Resp::Bulk(b) => write!(f, "{}", quoted(b)),
            Resp::NullBulk => write!(f, "$-1"),
            Resp::NullArray => write!(f, "*-1"),
            Resp::Null => write!(f, "_"),
            Resp::Bool(b) => write!(f, "#{}", if *b { 't' } else { 'f' }),
            Resp::Double(d) => write!(f, ",{d}"),
            Resp::BigNumber(n) => write!(f, "({n}"),
            Resp::BulkError(b) => write!(f, "!{}", quoted(b)),
            Resp::Verbatim(format, b) => write!(f, "={format}:{}", quoted(b)),
            Resp::Array(v) => {
                write!(f, "*[")?;
                list(f, v)?;
                write!(f, "]")
            }
            Resp::Set(v) => {
                write!(f, "~{{")?;
                list(f, v)?;
                write!(f, "}}")
            }
            Resp::Push(v) => {
                write!(f, ">[")?;
                list(f, v)?;
                write!(f, "]")
            }
            Resp::Map(v) => {
                write!(f, "%{{")?;
                pairs(f, v)?;
                write!(f, "}}")
            }
            Resp::Attribute(a, value) => {
                write!(f, "|{{")?;
                pairs(f, a)?;
                write!(f, "}} {value}")
            }
        }
    }
}

impl RespConn {
    /// Reads one complete reply within `timeout`, or says why it could not (timeout, the
    /// peer closed, a read error); never panics, so a caller can report and go on.
    pub fn try_frame(&mut self, timeout: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            if let Some(n) = resp_frame_len(&self.pending) {
                return Ok(self.pending.drain(..n).collect());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no complete reply within {timeout:?} (have {:?})",
                    String::from_utf8_lossy(&self.pending)
                ));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(format!(
                        "connection closed (have {:?})",
                        String::from_utf8_lossy(&self.pending)
                    ))
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// Reads and parses one reply within `timeout`.
    pub fn try_value(&mut self, timeout: Duration) -> Result<Resp, String> {
        let frame = self.try_frame(timeout)?;
        Resp::parse(&frame).map_err(|e| format!("{e} in {:?}", String::from_utf8_lossy(&frame)))
    }

    /// Sends one command and reads its parsed reply (panics on a timeout or a bad frame).
    pub fn value(&mut self, args: &[&[u8]]) -> Resp {
        self.send(&encode(args));
        self.try_value(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(args[0])))
    }

    /// Whether nothing arrives within `wait` (bytes already buffered count as arrived).
    pub fn quiet_for(&mut self, wait: Duration) -> Result<(), Vec<u8>> {
        if !self.pending.is_empty() {
            return Err(std::mem::take(&mut self.pending));
        }
        match self.try_frame(wait) {
            Ok(frame) => Err(frame),
            Err(_) if self.pending.is_empty() => Ok(()),
            Err(_) => Err(std::mem::take(&mut self.pending)),
        }
    }
}

/// The account's byte-seconds from `PKV.BALANCE`, once two readings `pause` apart agree
/// (charges reach the balance a moment after the reply).
pub fn settled_byte_seconds(c: &mut redis::Connection, pause: Duration) -> i64 {
    let read = |c: &mut redis::Connection| -> i64 {
        pkv_balance(c)["byte_seconds"]
            .parse()
            .expect("byte_seconds is an integer")
    };
    let mut last = read(c);
    for _ in 0..50 {
        std::thread::sleep(pause);
        let now = read(c);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("byte_seconds never settled");
}

/// An HTTP GET to `127.0.0.1:port` (pkv's metrics endpoint): the status code and the body.
#[allow(dead_code)] // not every test binary reads the endpoint
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: pkv\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}
