//! TLS both ways, with real peers: `redis-cli --tls`, redis-py with `ssl=True` and the
//! `redis` crate as clients of pkv's TLS listener; a redis-server with `--tls-port` as a
//! `rediss://` upstream. The certificates are made here (a CA, server certificates for
//! 127.0.0.1 and localhost, a client certificate, an expired one). pkv runs as a process,
//! its log in a file, so that each failure can be seen to be one line and nothing else.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_port, secret_seed, wait_until, Issuer};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for 127.0.0.1 and localhost; `expired` makes one whose
    /// validity ended in 2020.
    fn server(&self, serial: u64, expired: bool) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "pkv test");
        params.serial_number = Some(serial.into());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate, for mutual TLS.
    fn client(&self) -> (String, String) {
        let mut params = CertificateParams::new(vec!["client.test".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "a client");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `dir/name` and returns the path, as a string for settings and flags.
fn put(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A pkv process with a TLS listener, its log (stderr) in a file.
struct TlsPkv {
    child: Child,
    tls_port: u16,
    plain_port: Option<u16>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsPkv {
    /// Starts pkv with `settings` on top of an embedded store, a fresh secret seed, the
    /// issuer's key and the TLS listener on port 0; waits until it listens.
    fn start(issuer: &Issuer, settings: &[(&str, &str)]) -> TlsPkv {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("pkv.log");
        let mut child = command(issuer, settings, dir.path())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let plain = !settings
            .iter()
            .any(|(k, v)| *k == "PKV_LISTEN" && v.is_empty());
        let (tls_port, plain_port) = listening(&mut child, plain);
        TlsPkv {
            child,
            tls_port,
            plain_port,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has `n` lines containing `what`.
    fn wait_log(&self, what: &str, n: usize) {
        wait_until(&format!("{n} log lines with {what:?}"), || {
            self.log().lines().filter(|l| l.contains(what)).count() >= n
        });
    }

    fn lines_with(&self, what: &str) -> usize {
        self.log().lines().filter(|l| l.contains(what)).count()
    }

    /// Each failed handshake was logged in one line: as many lines as peers, and nothing
    /// logged at warning level or above.
    fn assert_one_line_per_failure(&self) {
        let log = self.log();
        let failed: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("TLS handshake failed"))
            .collect();
        let mut peers: Vec<&str> = failed
            .iter()
            .filter_map(|l| l.rsplit("127.0.0.1:").next())
            .collect();
        peers.sort_unstable();
        peers.dedup();
        assert_eq!(peers.len(), failed.len(), "{log}");
        assert!(
            !log.lines()
                .any(|l| l.contains("WARN") || l.contains("ERROR")),
            "{log}"
        );
    }

    fn assert_running(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "pkv stopped; log:\n{}",
            self.log()
        );
        let log = self.log();
        assert!(!log.contains("panicked"), "pkv panicked:\n{log}");
    }
}

impl Drop for TlsPkv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(issuer: &Issuer, settings: &[(&str, &str)], dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pkv"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PKV_LISTEN", "127.0.0.1:0")
        .env("PKV_TLS_LISTEN", "127.0.0.1:0")
        .env("PKV_QUOTA_ISSUERS", issuer.did())
        .env("PKV_SECRET_SEED", secret_seed())
        .env("PKV_LOG", "info")
        .envs(settings.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null());
    cmd
}

/// Reads pkv's stdout until it has printed its listeners; returns the TLS port and the
/// plain one (when `plain`).
fn listening(child: &mut Child, plain: bool) -> (u16, Option<u16>) {
    let stdout = child.stdout.take().unwrap();
    let (lines, heard) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = lines.send(line);
        }
    });
    let port_of = |line: &str, prefix: &str| -> Option<u16> {
        let addr: std::net::SocketAddr = line.strip_prefix(prefix)?.trim().parse().ok()?;
        Some(addr.port())
    };
    let (mut tls, mut plain_port) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let (Some(tls), true) = (tls, plain_port.is_some() || !plain) {
            return (tls, plain_port);
        }
        match heard.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                tls = tls.or_else(|| port_of(&line, "pkv tls listening on "));
                plain_port = plain_port.or_else(|| port_of(&line, "pkv listening on "));
            }
            Err(_) => {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("pkv exited before listening ({status})");
                }
            }
        }
        assert!(Instant::now() < deadline, "pkv not listening after 20 s");
    }
}

/// Runs redis-cli with `args`; its output.
fn redis_cli(args: &[&str]) -> Output {
    Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli is installed (apt-get install redis-tools)")
}

/// redis-cli over TLS to `port`, trusting `ca_file`, authenticated with `token` when given.
fn tls_cli(ca_file: &str, port: u16, token: Option<&str>, args: &[&str]) -> Output {
    let port = port.to_string();
    let mut all = vec!["--tls", "--cacert", ca_file, "-h", "127.0.0.1", "-p", &port];
    if let Some(token) = token {
        all.extend(["-a", token, "--no-auth-warning"]);
    }
    all.extend_from_slice(args);
    redis_cli(&all)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A server certificate from `ca` written to `dir` as `name.pem` and `name.key`.
fn server_files(dir: &Path, ca: &Ca, name: &str, serial: u64, expired: bool) -> (String, String) {
    let (cert, key) = ca.server(serial, expired);
    (
        put(dir, &format!("{name}.pem"), &cert),
        put(dir, &format!("{name}.key"), &key),
    )
}

/// A `redis` crate client of pkv's TLS port trusting `ca_pem` only.
fn tls_client(port: u16, token: &str, ca_pem: &str) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::build_with_tls(
        format!("rediss://:{token}@127.0.0.1:{port}"),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.as_bytes().to_vec()),
        },
    )?;
    client.get_connection_with_timeout(Duration::from_secs(5))
}

#[test]
fn redis_cli_and_redis_py_work_over_tls_only() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_file = put(certs.path(), "ca.pem", &ca.pem());
    let (cert, key) = server_files(certs.path(), &ca, "server", 1, false);
    let issuer = Issuer::new();
    let pkv = TlsPkv::start(
        &issuer,
        &[
            ("PKV_LISTEN", ""),
            ("PKV_TLS_CERT", &cert),
            ("PKV_TLS_KEY", &key),
        ],
    );
    assert_eq!(pkv.plain_port, None);
    let token = issuer.token(1000);
    let cli = |args: &[&str]| tls_cli(&ca_file, pkv.tls_port, Some(&token), args);
    let set = cli(&["SET", "greeting", "hello"]);
    assert_eq!(text(&set).trim(), "OK", "{}", text(&set));
    let get = cli(&["GET", "greeting"]);
    assert_eq!(text(&get).trim(), "hello", "{}", text(&get));

    // redis-py, as an application would connect.
    let script = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), password=sys.argv[2],
                ssl=True, ssl_ca_certs=sys.argv[3])
assert r.get("greeting") == b"hello", r.get("greeting")
r.set("py", "yes")
print(r.incr("counter", 5))
"#;
    let py = Command::new("python3")
        .args(["-c", script, &pkv.tls_port.to_string(), &token, &ca_file])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "redis-py over TLS (python3 -m pip install redis, or apt-get install python3-redis): {}",
        text(&py)
    );
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), "5");
    let back = cli(&["GET", "py"]);
    assert_eq!(text(&back).trim(), "yes");
}

#[test]
fn plain_text_on_the_tls_port_gets_one_clear_line_and_is_closed() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, key) = server_files(certs.path(), &ca, "server", 1, false);
    let issuer = Issuer::new();
    let mut pkv = TlsPkv::start(&issuer, &[("PKV_TLS_CERT", &cert), ("PKV_TLS_KEY", &key)]);
    let mut plain = TcpStream::connect(("127.0.0.1", pkv.tls_port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain.write_all(b"PING\r\n").unwrap();
    let mut said = Vec::new();
    plain.read_to_end(&mut said).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&said),
        "-ERR this port speaks TLS only; connect with TLS (redis-cli --tls)\r\n"
    );
    pkv.wait_log("plain text on the TLS port", 1);
    // redis-cli without --tls sees the same line.
    let cli = redis_cli(&["-h", "127.0.0.1", "-p", &pkv.tls_port.to_string(), "PING"]);
    assert!(
        text(&cli).contains("this port speaks TLS only"),
        "{}",
        text(&cli)
    );
    // The plain listener beside it is unaffected.
    let token = issuer.token(100);
    let mut conn = redis::Client::open(format!(
        "redis://:{token}@127.0.0.1:{}",
        pkv.plain_port.unwrap()
    ))
    .unwrap()
    .get_connection()
    .unwrap();
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");
    pkv.assert_running();
}

#[test]
fn a_client_that_does_not_trust_the_ca_is_refused_and_others_are_not() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, stranger_ca) = (Ca::new("test CA"), Ca::new("someone else"));
    let other_file = put(certs.path(), "other.pem", &stranger_ca.pem());
    let ca_file = put(certs.path(), "ca.pem", &ca.pem());
    let (cert, key) = server_files(certs.path(), &ca, "server", 1, false);
    let issuer = Issuer::new();
    let mut pkv = TlsPkv::start(&issuer, &[("PKV_TLS_CERT", &cert), ("PKV_TLS_KEY", &key)]);
    let token = issuer.token(100);
    // A client already in, trusting the right CA.
    let mut good = tls_client(pkv.tls_port, &token, &ca.pem()).unwrap();
    let refused = tls_cli(&other_file, pkv.tls_port, Some(&token), &["PING"]);
    assert!(
        text(&refused).contains("certificate verify failed"),
        "{}",
        text(&refused)
    );
    let err = tls_client(pkv.tls_port, &token, &stranger_ca.pem()).err();
    assert!(err.is_some(), "a client trusting another CA connected");
    pkv.wait_log("TLS handshake failed", 2);
    let pong: String = redis::cmd("PING").query(&mut good).unwrap();
    assert_eq!(pong, "PONG");
    let ok = tls_cli(&ca_file, pkv.tls_port, Some(&token), &["PING"]);
    assert_eq!(text(&ok).trim(), "PONG");
    assert!(
        pkv.log()
            .lines()
            .filter(|l| l.contains("TLS handshake failed"))
            .all(|l| l.contains("UnknownCA")),
        "{}",
        pkv.log()
    );
    pkv.assert_one_line_per_failure();
    pkv.assert_running();
}

#[test]
fn an_expired_certificate_is_refused_by_the_client() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_file = put(certs.path(), "ca.pem", &ca.pem());
    let (cert, key) = server_files(certs.path(), &ca, "expired", 1, true);
    let issuer = Issuer::new();
    let mut pkv = TlsPkv::start(&issuer, &[("PKV_TLS_CERT", &cert), ("PKV_TLS_KEY", &key)]);
    let token = issuer.token(100);
    let out = tls_cli(&ca_file, pkv.tls_port, Some(&token), &["PING"]);
    assert!(
        text(&out).contains("certificate verify failed"),
        "{}",
        text(&out)
    );
    let err = tls_client(pkv.tls_port, &token, &ca.pem()).err().unwrap();
    assert!(err.to_string().contains("xpired"), "{err}");
    pkv.wait_log("TLS handshake failed", 2);
    pkv.assert_one_line_per_failure();
    pkv.assert_running();
}

#[test]
fn mutual_tls_wants_a_client_certificate_from_the_ca() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let clients = Ca::new("client CA");
    let ca_file = put(certs.path(), "ca.pem", &ca.pem());
    let client_ca = put(certs.path(), "clients.pem", &clients.pem());
    let (cert, key) = server_files(certs.path(), &ca, "server", 1, false);
    let (client_cert, client_key) = clients.client();
    let client_cert = put(certs.path(), "client.pem", &client_cert);
    let client_key = put(certs.path(), "client.key", &client_key);
    let issuer = Issuer::new();
    let mut pkv = TlsPkv::start(
        &issuer,
        &[
            ("PKV_TLS_CERT", &cert),
            ("PKV_TLS_KEY", &key),
            ("PKV_TLS_CLIENT_CA", &client_ca),
        ],
    );
    let token = issuer.token(100);
    let without = tls_cli(&ca_file, pkv.tls_port, Some(&token), &["PING"]);
    assert_ne!(text(&without).trim(), "PONG", "{}", text(&without));
    pkv.wait_log("TLS handshake failed", 1);
    let with = tls_cli(
        &ca_file,
        pkv.tls_port,
        Some(&token),
        &["--cert", &client_cert, "--key", &client_key, "PING"],
    );
    assert_eq!(text(&with).trim(), "PONG", "{}", text(&with));
    assert!(
        pkv.log().contains("peer sent no certificates"),
        "{}",
        pkv.log()
    );
    pkv.assert_one_line_per_failure();
    pkv.assert_running();
}

#[test]
fn a_silent_client_is_dropped_and_handshakes_count_as_strangers() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, key) = server_files(certs.path(), &ca, "server", 1, false);
    let issuer = Issuer::new();
    let mut pkv = TlsPkv::start(
        &issuer,
        &[
            ("PKV_TLS_CERT", &cert),
            ("PKV_TLS_KEY", &key),
            ("PKV_AUTH_TIMEOUT", "1"),
            ("PKV_MAX_UNAUTHENTICATED", "2"),
        ],
    );
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", pkv.tls_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    // Three silent strangers where two may wait: the oldest is closed at once.
    let started = Instant::now();
    let mut first = connect();
    let mut second = connect();
    let _third = connect();
    let mut buf = [0u8; 16];
    assert_eq!(
        first.read(&mut buf).unwrap_or(0),
        0,
        "closed, without a word"
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "evicted before the timeout, in {:?}",
        started.elapsed()
    );
    // The others within PKV_AUTH_TIMEOUT.
    assert_eq!(second.read(&mut buf).unwrap_or(0), 0);
    assert!(started.elapsed() < Duration::from_secs(3));
    pkv.wait_log("closed to make room", 1);
    pkv.wait_log("TLS handshake not finished in time", 1);
    pkv.assert_running();
}

#[test]
fn a_new_certificate_is_used_by_new_connections_and_old_ones_stay() {
    let certs = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let (cert, key) = server_files(certs.path(), &old_ca, "server", 1, false);
    let issuer = Issuer::new();
    let mut pkv = TlsPkv::start(&issuer, &[("PKV_TLS_CERT", &cert), ("PKV_TLS_KEY", &key)]);
    let token = issuer.token(1000);
    let mut before = tls_client(pkv.tls_port, &token, &old_ca.pem()).unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("1")
        .query(&mut before)
        .unwrap();
    assert!(tls_client(pkv.tls_port, &token, &new_ca.pem()).is_err());

    // A bad pair keeps the certificate in use, with one line.
    std::fs::write(&cert, "not a certificate").unwrap();
    pkv.wait_log("TLS certificate not reloaded", 1);
    assert!(tls_client(pkv.tls_port, &token, &old_ca.pem()).is_ok());

    // The new pair, written as a deploy tool would (new files renamed over the old).
    let (new_cert, new_key) = new_ca.server(2, false);
    let staged = certs.path().join("staged");
    std::fs::create_dir(&staged).unwrap();
    let (c, k) = (put(&staged, "c", &new_cert), put(&staged, "k", &new_key));
    std::fs::rename(k, &key).unwrap();
    std::fs::rename(c, &cert).unwrap();
    pkv.wait_log("TLS certificate reloaded", 1);
    let mut after = tls_client(pkv.tls_port, &token, &new_ca.pem()).unwrap();
    let n: i64 = redis::cmd("INCR").arg("k").query(&mut after).unwrap();
    assert_eq!(n, 2);
    // Larger than the TLS buffers, both ways.
    let big = vec![b'y'; 8 << 20];
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut after)
        .unwrap();
    let back: Vec<u8> = redis::cmd("GET").arg("big").query(&mut after).unwrap();
    assert!(back == big, "{} bytes back", back.len());
    assert!(tls_client(pkv.tls_port, &token, &old_ca.pem()).is_err());
    // The connection made before the change goes on with its session.
    let n: i64 = redis::cmd("INCR").arg("k").query(&mut before).unwrap();
    assert_eq!(n, 3);
    assert_eq!(
        pkv.lines_with("TLS certificate not reloaded"),
        1,
        "{}",
        pkv.log()
    );
    pkv.assert_running();
}

#[test]
fn a_certificate_that_does_not_load_stops_start_up_with_one_line() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, _) = server_files(certs.path(), &ca, "server", 1, false);
    let (_, other_key) = server_files(certs.path(), &ca, "other", 2, false);
    let issuer = Issuer::new();
    let out = command(
        &issuer,
        &[("PKV_TLS_CERT", &cert), ("PKV_TLS_KEY", &other_key)],
        certs.path(),
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PKV_TLS_KEY") && err.contains("does not go with the certificate"),
        "{err}"
    );
}

/// A redis-server speaking TLS only, with a certificate from `ca`.
struct TlsRedis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
    ca_file: String,
}

impl TlsRedis {
    fn start(ca: &Ca) -> TlsRedis {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = put(dir.path(), "ca.pem", &ca.pem());
        let (cert, key) = server_files(dir.path(), ca, "redis", 7, false);
        let log = dir.path().join("redis.log");
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &cert, "--tls-key-file", &key])
            .args(["--tls-ca-cert-file", &ca_file, "--tls-auth-clients", "no"])
            .arg("--logfile")
            .arg(&log)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until("redis-server with TLS ready", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "redis-server exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("Ready to accept connections")
        });
        TlsRedis {
            port,
            child,
            _dir: dir,
            ca_file,
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        text(&tls_cli(&self.ca_file, self.port, None, args))
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_rediss_upstream_serves_commands_the_ledger_and_pub_sub() {
    let ca = Ca::new("upstream CA");
    let redis = TlsRedis::start(&ca);
    let issuer = Issuer::new();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = server_files(certs.path(), &ca, "server", 1, false);
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let mut pkv = TlsPkv::start(
        &issuer,
        &[
            ("PKV_UPSTREAM_URL", &url),
            ("PKV_UPSTREAM_TLS_CA", &redis.ca_file),
            ("PKV_TLS_CERT", &cert),
            ("PKV_TLS_KEY", &key),
        ],
    );
    let token = issuer.token(1000);
    let plain = format!("redis://:{token}@127.0.0.1:{}", pkv.plain_port.unwrap());
    let client = redis::Client::open(plain.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg("tls-key")
        .arg("v")
        .query(&mut conn)
        .unwrap();
    let got: String = redis::cmd("GET").arg("tls-key").query(&mut conn).unwrap();
    assert_eq!(got, "v");
    // The data and the ledger landed in the TLS upstream.
    let keys = redis.cli(&["--scan"]);
    assert!(
        keys.lines().any(|k| k.ends_with("tls-key")),
        "tenant key upstream: {keys}"
    );
    assert!(
        keys.lines().any(|k| !k.ends_with("tls-key")),
        "ledger records upstream: {keys}"
    );
    // Values larger than the TLS buffers cross both ways whole.
    let big = vec![b'x'; 8 << 20];
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut conn)
        .unwrap();
    let back: Vec<u8> = redis::cmd("GET").arg("big").query(&mut conn).unwrap();
    assert!(back == big, "{} bytes back", back.len());
    let balance: redis::Value = redis::cmd("PKV.BALANCE").query(&mut conn).unwrap();
    assert!(
        !matches!(balance, redis::Value::ServerError(_)),
        "{balance:?}"
    );

    // Pub/Sub through the redis crate's own TLS connection upstream.
    let mut sub = client.get_connection().unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("news").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("hello")
        .query(&mut conn)
        .unwrap();
    assert_eq!(receivers, 1);
    let message = pubsub.get_message().unwrap();
    assert_eq!(message.get_payload::<String>().unwrap(), "hello");
    pkv.assert_running();
}

#[test]
fn a_rediss_upstream_with_an_untrusted_certificate_is_a_clear_error() {
    let redis = TlsRedis::start(&Ca::new("upstream CA"));
    let stranger = Ca::new("not the upstream's CA");
    let issuer = Issuer::new();
    let certs = tempfile::tempdir().unwrap();
    let wrong_ca = put(certs.path(), "wrong.pem", &stranger.pem());
    let (cert, key) = server_files(certs.path(), &stranger, "server", 1, false);
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let mut pkv = TlsPkv::start(
        &issuer,
        &[
            ("PKV_UPSTREAM_URL", &url),
            ("PKV_UPSTREAM_TLS_CA", &wrong_ca),
            ("PKV_TLS_CERT", &cert),
            ("PKV_TLS_KEY", &key),
        ],
    );
    // Like an upstream that is down: pkv starts, says why, and answers clients so.
    pkv.wait_log("UnknownIssuer", 1);
    let mut raw = TcpStream::connect(("127.0.0.1", pkv.plain_port.unwrap())).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let token = issuer.token(100);
    let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{token}\r\n", token.len());
    raw.write_all(auth.as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = raw.read(&mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        reply.starts_with("-ERR upstream unavailable") && reply.contains("UnknownIssuer"),
        "{reply}"
    );
    pkv.assert_running();
}
