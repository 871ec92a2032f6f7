//! EVAL, EVALSHA and their `_RO` forms on an upstream Redis: the script runs inside Redis,
//! wrapped ([`crate::scripting::upstream`]), on a connection authenticated as the
//! account's own ACL user.
//!
//! - The account's registry (the embedded store's, [`crate::scripting::Registry`]) maps the
//!   caller's SHA1 to its text, so `EVALSHA` of a script the caller never loaded is
//!   `NOSCRIPT` whatever the upstream holds; pkv sends `EVALSHA` of the wrapped script and
//!   `EVAL` when the upstream does not have it (restarted, flushed).
//! - Payment: the command's bytes and its time (the rows carry `UPSTREAM_TIME`), and the
//!   storage its writes bought: the wrapper records each written key's size and TTL before
//!   its first write; pkv reads them back with their size and TTL after the script, and
//!   charges what the key holds beyond what it held (bytes × seconds left).
//! - Time: past `PKV_SCRIPT_TIME_LIMIT`, or on the account's `SCRIPT KILL`, pkv sends Redis
//!   `SCRIPT KILL`, which stops a script that has not written (Redis refuses to stop one
//!   that has: it runs to its end).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::backend::{BackendError, Dedicated};
use crate::commands::{Call, Local};
use crate::error::ClientError;
use crate::meter::{Admitted, Usage};
use crate::namespace::Namespace;
use crate::protocol::frame::Frame;
use crate::protocol::Proto;
use crate::scripting::upstream::{self as up, Wrapped};
use crate::scripting::{parse_eval, sha1hex, ScriptError};
use crate::server::session::Session;
use crate::server::Shared;

/// How often a running script's caller looks whether `SCRIPT KILL` was asked for.
const KILL_POLL: std::time::Duration = std::time::Duration::from_millis(20);

impl Session {
    /// Whether scripts run on this backend's upstream (not on a Redis Cluster, whose
    /// scripts would need their keys in one slot: refused there for now).
    pub(super) fn upstream_scripting(&self) -> bool {
        self.shared
            .settings
            .upstream_url
            .as_deref()
            .is_some_and(|url| !crate::upstream::cluster::is_cluster_url(url))
    }

    /// EVAL and its kin, on the upstream.
    pub(super) async fn upstream_eval(
        &mut self,
        local: Local,
        args: &[Bytes],
        account: Arc<str>,
        out: &mut BytesMut,
    ) {
        let parsed = match parse_eval(args) {
            Ok(parsed) => parsed,
            Err(err) => return self.reject(err, out),
        };
        let (body, sha) = match local {
            Local::Eval | Local::EvalRo => {
                // Cached as Redis caches what EVAL ran, unless the account's scripts are
                // full (then it runs all the same).
                let _ = self.shared.scripts.load(&account, &parsed.script);
                (parsed.script.clone(), sha1hex(&parsed.script))
            }
            _ => match self.shared.scripts.get(&account, &parsed.script) {
                Some(body) => {
                    let sha = String::from_utf8_lossy(&parsed.script).to_ascii_lowercase();
                    (body, sha)
                }
                None => return self.reject(ScriptError::NoScript, out),
            },
        };
        let Some(ns) = self.ns().cloned() else {
            return self.reject(ClientError::NoAuth, out);
        };
        // The commands before it in the pipeline run first.
        self.flush(out).await;
        // The script holds an upstream connection of its own while it runs (or waits for
        // Redis, which runs one script at a time): one of the account's dedicated ones.
        let _held = match self.shared.limits.dedicated(&account) {
            Ok(held) => held,
            Err(limit) => return self.reject(ClientError::from(BackendError::Limit(limit)), out),
        };
        let mut conn = match script_conn(&self.shared, &account, &ns).await {
            Ok(conn) => conn,
            Err(err) => return self.reject(err, out),
        };
        let record = match up::nonce() {
            Ok(nonce) => ns.wrap(format!("\0pkv-script-writes:{nonce}").as_bytes()),
            Err(why) => return self.reject(ClientError::from(BackendError::Unavailable(why)), out),
        };
        let policy = self.ttl_policy();
        let read_only = matches!(local, Local::EvalRo | Local::EvalShaRo);
        let wrapped = self.shared.upstream_scripts.wrapped(&sha, &body);
        let metering = self.shared.meter.enabled();
        let ms = |secs: u64| match metering {
            true => Bytes::from(secs.saturating_mul(1000).to_string()),
            false => Bytes::from_static(b"0"),
        };
        let tail = [
            Bytes::copy_from_slice(ns.prefix()),
            ms(policy.default_secs),
            ms(policy.max_secs),
            Bytes::from_static(if read_only { b"1" } else { b"0" }),
            record.clone(),
        ];
        let keys: Vec<Bytes> = parsed.keys.iter().map(|k| ns.wrap(k)).collect();
        let eval = |name: &'static str, script: Bytes| {
            let mut call = Call::named(name)
                .arg(script)
                .arg(parsed.keys.len().to_string());
            for arg in keys.iter().chain(&parsed.argv).chain(&tail) {
                call = call.arg(arg.clone());
            }
            [
                call,
                Call::named("HGETALL").arg(record.clone()),
                Call::named("DEL").arg(record.clone()),
            ]
        };
        let running = self.shared.scripts.start(&account);
        let limit = self.current.script_time_limit;
        // A read-only script is sent as one, so that Redis refuses its writes too.
        let (by_sha, by_text) = match read_only {
            true => ("EVALSHA_RO", "EVAL_RO"),
            false => ("EVALSHA", "EVAL"),
        };
        let sha_call = eval(by_sha, Bytes::from(wrapped.sha.clone()));
        let mut replies =
            run_watched(&self.shared, conn.as_mut(), &sha_call, limit, &running).await;
        if let Ok(r) = &replies {
            if matches!(r.first(), Some(Frame::Error(line)) if line.starts_with(b"NOSCRIPT")) {
                let text_call = eval(by_text, wrapped.text.clone());
                replies =
                    run_watched(&self.shared, conn.as_mut(), &text_call, limit, &running).await;
            }
        }
        drop(running);
        let mut replies = match replies {
            Ok(replies) => replies.into_iter(),
            Err(err) => return self.reject(ClientError::from(err), out),
        };
        let result = replies.next().unwrap_or_default();
        let written = replies.next().unwrap_or_default();
        let byte_seconds = match storage_bought(conn.as_mut(), &ns, written).await {
            Ok(paid) => {
                self.shared.upstream_scripts.put(&account, conn);
                paid
            }
            Err(err) => return self.reject(ClientError::from(err), out),
        };
        if self.shared.meter.enabled() && byte_seconds > 0 {
            let usage = Usage {
                byte_seconds,
                ..Usage::default()
            };
            self.shared
                .meter
                .charge(&mut self.charges, Admitted::default(), &usage);
        }
        self.script_reply(result, &wrapped, &sha, &ns, out);
    }

    /// The script's reply as the client sees it: errors name the caller's script, never
    /// the wrapped one, and no key name in them carries the prefix.
    fn script_reply(
        &mut self,
        result: Frame,
        wrapped: &Wrapped,
        sha: &str,
        ns: &Namespace,
        out: &mut BytesMut,
    ) {
        match result {
            Frame::Error(line) => {
                let line = up::fix_error(&String::from_utf8_lossy(&line), &wrapped.sha, sha);
                let line = ns.strip_all(&line);
                self.reply(out, |w| w.error(&line));
            }
            frame => self.reply(out, |w| w.frame(&frame)),
        }
    }
}

/// Runs `calls` on `conn`; past `limit`, or when the account asks `SCRIPT KILL`, sends
/// Redis `SCRIPT KILL` (once) on a pooled connection, and waits for the reply either way.
async fn run_watched(
    shared: &Shared,
    conn: &mut dyn Dedicated,
    calls: &[Call],
    limit: std::time::Duration,
    running: &crate::scripting::RunGuard<'_>,
) -> Result<Vec<Frame>, BackendError> {
    let started = std::time::Instant::now();
    let run = conn.pipeline(calls);
    tokio::pin!(run);
    let mut killed = false;
    loop {
        tokio::select! {
            result = &mut run => return result,
            () = tokio::time::sleep(KILL_POLL), if !killed => {
                let asked = running.control.kill.load(Ordering::Acquire);
                if asked || started.elapsed() >= limit {
                    killed = true;
                    let kill = [Call::named("SCRIPT").arg("KILL")];
                    let _ = shared.backend.pipeline(Proto::Resp2, &kill).await;
                }
            }
        }
    }
}

/// The byte-seconds a script's writes bought, from the record of its writes (`HGETALL`:
/// key, then `size_before ttl_ms_before`) and each key's size and TTL now. A string's size
/// is its name and length, as a `SET` outside a script pays; any other type's is its
/// `MEMORY USAGE`, as a store outside a script pays.
async fn storage_bought(
    conn: &mut dyn Dedicated,
    ns: &Namespace,
    written: Frame,
) -> Result<u64, BackendError> {
    let Frame::Array(fields) = written else {
        return Ok(0);
    };
    let mut keys = Vec::new();
    let mut before = Vec::new();
    for pair in fields.chunks(2) {
        if let [Frame::Bulk(key), Frame::Bulk(was)] = pair {
            let was = String::from_utf8_lossy(was);
            let mut parts = was.split(' ').map(|p| p.parse::<i64>().unwrap_or(0));
            let (size, ttl) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            keys.push(key.clone());
            before.push(held(size, ttl));
        }
    }
    if keys.is_empty() {
        return Ok(0);
    }
    const PER_KEY: usize = 4;
    let mut calls = Vec::with_capacity(keys.len() * PER_KEY);
    for key in &keys {
        calls.push(Call::named("TYPE").arg(key.clone()));
        calls.push(Call::named("STRLEN").arg(key.clone()));
        calls.push(
            Call::named("MEMORY")
                .arg("USAGE")
                .arg(key.clone())
                .arg("SAMPLES")
                .arg("0"),
        );
        calls.push(Call::named("PTTL").arg(key.clone()));
    }
    let now = conn.pipeline(&calls).await?;
    let mut bought = 0u64;
    for ((replies, before), key) in now.chunks(PER_KEY).zip(before).zip(&keys) {
        let size = match replies {
            [Frame::Simple(t), Frame::Integer(len), _, _] if &t[..] == b"string" => {
                let name = key.len().saturating_sub(ns.prefix().len()) as i64;
                name + len
            }
            [_, _, Frame::Integer(usage), _] => *usage,
            _ => 0,
        };
        let ttl = match replies.get(3) {
            Some(Frame::Integer(ttl)) => *ttl,
            _ => 0,
        };
        bought = bought.saturating_add(held(size, ttl).saturating_sub(before));
    }
    Ok(bought)
}

/// The byte-seconds a key of `size` bytes holds for `ttl_ms` more (0 when it is gone).
fn held(size: i64, ttl_ms: i64) -> u64 {
    let secs = u64::try_from(ttl_ms).unwrap_or(0).div_ceil(1000);
    u64::try_from(size).unwrap_or(0).saturating_mul(secs)
}

/// A connection authenticated as the account's ACL user: an idle one, or a new one (the
/// user made first if this process has not made it yet, and again if the upstream lost it).
async fn script_conn(
    shared: &Shared,
    account: &Arc<str>,
    ns: &Namespace,
) -> Result<Box<dyn Dedicated>, ClientError> {
    let accounts = &shared.upstream_scripts;
    if let Some(conn) = accounts.take(account) {
        return Ok(conn);
    }
    let user = up::acl_user(ns.prefix());
    let mut conn = shared.backend.dedicated(Proto::Resp2).await?;
    let known = accounts.password(account);
    for attempt in 0..2 {
        let password = match (&known, attempt) {
            (Some(password), 0) => password.clone(),
            _ => {
                let password = known
                    .clone()
                    .map_or_else(up::new_password, Ok)
                    .map_err(|why| ClientError::from(BackendError::Unavailable(why)))?;
                let setuser = [up::acl_setuser(&user, &password, ns.prefix())];
                let reply = shared.backend.pipeline(Proto::Resp2, &setuser).await?;
                if let Some(Frame::Error(line)) = reply.first() {
                    let why = String::from_utf8_lossy(line).into_owned();
                    return Err(ScriptError::NoAcl(why).into());
                }
                accounts.set_password(account, password.clone());
                password
            }
        };
        let auth = [Call::named("AUTH").arg(user.clone()).arg(password)];
        match conn.pipeline(&auth).await?.first() {
            Some(Frame::Error(line)) if attempt == 1 || known.is_none() => {
                let why = String::from_utf8_lossy(line).into_owned();
                return Err(ScriptError::NoAcl(why).into());
            }
            Some(Frame::Error(_)) => continue,
            _ => return Ok(conn),
        }
    }
    Err(ScriptError::NoAcl("AUTH failed".to_owned()).into())
}

/// At start-up, on an upstream with scripting on: one warning line when its Redis
/// predates the releases that fixed the known Lua sandbox escapes, and one when it refuses
/// the ACL users scripts run as (then every script is refused with that reason).
pub(in crate::server) async fn check_upstream_scripting(shared: Arc<Shared>) {
    let Some(url) = shared.settings.upstream_url.clone() else {
        return;
    };
    if !shared.current().scripting || crate::upstream::cluster::is_cluster_url(&url) {
        return;
    }
    let version = Shared::redis_version(shared.clone()).await;
    if up::predates_lua_fixes(&version) {
        tracing::warn!(
            "the upstream reports Redis {version}, older than the releases that fixed known Lua sandbox escapes (CVE-2025-49844 and others: 6.2.20, 7.2.11, 7.4.6, 8.0.4, 8.2.2); tenants' scripts run in its Lua: upgrade it, or set PKV_SCRIPTING=off (distributions may have backported the fixes without changing the version)"
        );
    }
    let probe = [Call::named("ACL").arg("USERS")];
    let refused = match shared.backend.pipeline(Proto::Resp2, &probe).await {
        Ok(reply) => match reply.first() {
            Some(Frame::Error(line)) => Some(String::from_utf8_lossy(line).into_owned()),
            _ => None,
        },
        Err(err) => Some(format!("{err:?}")),
    };
    if let Some(why) = refused {
        tracing::warn!(
            "scripts will be refused: they run on the upstream as an ACL user per account, and the upstream refused ACL ({why}); give pkv's upstream user the ACL rights or set PKV_SCRIPTING=off"
        );
    }
}
