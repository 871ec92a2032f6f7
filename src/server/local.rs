//! Commands pkv answers or emulates itself: the handshake, connection housekeeping,
//! transactions, Pub/Sub, keyspace commands confined to the namespace, and `PKV.*`.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use redis::Value;

use super::connection::ClientIo;
use super::limits::CountedSink;
use super::session::{Authed, Multi, Session, Subscriber, Txn};
use crate::auth::{now_secs, TokenKind};
use crate::commands::{self, flags, CommandSpec, Local, ReplyRewrite};
use crate::ledger::{format_nanos, RedeemedBy, Redemption};
use crate::meter::storage;
use crate::metrics::Metrics;
use crate::namespace::Namespace;
use crate::protocol::reply::ReplyWriter;
use crate::protocol::Proto;

/// The Redis version pkv reports; the command set follows Redis 7.0.
const REDIS_VERSION: &str = "7.0.0";
/// Keys asked for per SCAN step when pkv walks a namespace.
const SCAN_STEP: usize = 1000;
/// Redis's answer to a client name it will not take.
const BAD_CLIENT_NAME: &str =
    "ERR Client names cannot contain spaces, newlines or special characters.";

/// Longest client name (`CLIENT SETNAME`, `HELLO ... SETNAME`) or library name or version
/// (`CLIENT SETINFO`) pkv takes. Redis sets no limit; pkv answers these commands for free
/// and keeps the name for the life of the connection, so a free command must not carry
/// (or let `CLIENT GETNAME` and `CLIENT INFO` answer) an unbounded string.
const MAX_CLIENT_NAME: usize = 128;

/// Redis's rule for client names (`CLIENT SETNAME`, `HELLO ... SETNAME`): printable ASCII
/// without spaces, so that `CLIENT LIST` and logs stay one line per client.
fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// Checks a client name: Redis's characters, and at most [`MAX_CLIENT_NAME`] bytes.
fn check_client_name(name: &[u8]) -> Result<(), String> {
    if name.len() > MAX_CLIENT_NAME {
        return Err(format!(
            "ERR client name longer than {MAX_CLIENT_NAME} bytes"
        ));
    }
    if !valid_client_name(name) {
        return Err(BAD_CLIENT_NAME.to_owned());
    }
    Ok(())
}

/// Checks `CLIENT SETINFO <attr> <value>` as Redis 7.2 does (only `LIB-NAME` and
/// `LIB-VER`, printable ASCII without spaces), and bounds the value like a client name.
fn check_client_info(attr: &[u8], value: &[u8]) -> Result<(), String> {
    let what = if attr.eq_ignore_ascii_case(b"LIB-NAME") {
        "lib-name"
    } else if attr.eq_ignore_ascii_case(b"LIB-VER") {
        "lib-ver"
    } else {
        return Err(format!(
            "ERR Unrecognized option '{}'",
            String::from_utf8_lossy(attr)
        ));
    };
    if value.len() > MAX_CLIENT_NAME {
        return Err(format!("ERR {what} longer than {MAX_CLIENT_NAME} bytes"));
    }
    if !valid_client_name(value) {
        return Err(format!(
            "ERR {what} cannot contain spaces, newlines or special characters."
        ));
    }
    Ok(())
}

impl Session {
    pub(super) async fn local(
        &mut self,
        local: Local,
        spec: &'static CommandSpec,
        args: &[Bytes],
        out: &mut BytesMut,
        io: &mut ClientIo,
    ) {
        let _ = io;
        if self.txn.multi.is_some() {
            return self.local_in_multi(local, spec, args, out).await;
        }
        match local {
            Local::Auth => {
                let token = match args.len() {
                    2 => &args[1],
                    3 => &args[2],
                    _ => return self.reject("ERR syntax error", out),
                };
                self.flush(out).await;
                match self.authenticate(token).await {
                    Ok(()) => self.reply(out, |w| w.ok()),
                    Err(msg) => self.reject(&msg, out),
                }
            }
            Local::Hello => self.hello(args, out).await,
            Local::Ping => {
                if self.proto == Proto::Resp2 && self.is_waiting_for_messages() {
                    let msg = args.get(1).cloned().unwrap_or_default();
                    self.reply(out, |w| {
                        w.array(2);
                        w.bulk(b"pong");
                        w.bulk(&msg);
                    });
                } else {
                    match args.get(1) {
                        Some(msg) => self.reply(out, |w| w.bulk(msg)),
                        None => self.reply(out, |w| w.simple("PONG")),
                    }
                }
            }
            Local::Echo => self.reply(out, |w| w.bulk(&args[1])),
            Local::Quit => {
                self.reply(out, |w| w.ok());
                self.closing = true;
            }
            Local::Reset => {
                self.flush(out).await;
                self.end().await;
                self.txn = Txn::default();
                self.dedicated = None;
                self.pubsub = None;
                self.auth = None;
                self.name = None;
                self.proto = Proto::Resp2;
                self.reply(out, |w| w.simple("RESET"));
            }
            Local::Select => {
                if &args[1][..] == b"0" {
                    self.reply(out, |w| w.ok());
                } else {
                    self.reject("ERR pkv serves database 0 only", out);
                }
            }
            Local::ClientSetName => {
                if let Err(msg) = check_client_name(&args[2]) {
                    return self.reject(&msg, out);
                }
                self.name = (!args[2].is_empty()).then(|| args[2].clone());
                self.reply(out, |w| w.ok());
            }
            Local::ClientGetName => {
                let name = self.name.clone();
                self.reply(out, |w| match name {
                    Some(n) => w.bulk(&n),
                    None => w.null(),
                });
            }
            Local::ClientSetInfo => match check_client_info(&args[2], &args[3]) {
                Ok(()) => self.reply(out, |w| w.ok()),
                Err(msg) => self.reject(&msg, out),
            },
            Local::ClientNoTouch | Local::ClientNoEvict | Local::ReadOnly | Local::ReadWrite => {
                self.reply(out, |w| w.ok())
            }
            Local::ClientReply => {
                if args[2].eq_ignore_ascii_case(b"ON") {
                    self.reply(out, |w| w.ok());
                } else {
                    self.reject("ERR pkv supports CLIENT REPLY ON only", out);
                }
            }
            Local::ClientId => {
                let id = self.id as i64;
                self.reply(out, |w| w.int(id));
            }
            Local::ClientInfo => {
                let line = self.client_info_line();
                self.reply(out, |w| w.bulk(line.as_bytes()));
            }
            Local::Info => {
                let text = self.info_text();
                self.reply(out, |w| w.bulk(text.as_bytes()));
            }
            Local::Command | Local::CommandInfo => {
                let names: Vec<Bytes> = if local == Local::Command {
                    Vec::new()
                } else {
                    args[2..].to_vec()
                };
                self.reply(out, |w| command_info(w, &names));
            }
            Local::CommandCount => {
                let n = commands::served_names()
                    .filter(|n| !n.contains('|'))
                    .count() as i64;
                self.reply(out, |w| w.int(n));
            }
            Local::CommandDocs => self.reply(out, |w| w.map(0)),
            Local::CommandList => self.reply(out, |w| {
                let names: Vec<_> = commands::served_names()
                    .filter(|n| !n.contains('|'))
                    .collect();
                w.array(names.len());
                for n in names {
                    w.bulk(n.to_ascii_lowercase().as_bytes());
                }
            }),
            Local::Time => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                self.reply(out, |w| {
                    w.array(2);
                    w.bulk(now.as_secs().to_string().as_bytes());
                    w.bulk(now.subsec_micros().to_string().as_bytes());
                });
            }
            Local::Multi => {
                self.flush(out).await;
                match self.run_dedicated(redis::cmd("MULTI")).await {
                    Ok(Value::Okay) => {
                        self.txn.multi = Some(Multi::default());
                        self.reply(out, |w| w.ok());
                    }
                    Ok(other) => self.write_upstream(out, ReplyRewrite::Plain, other),
                    Err(e) => self.reply(out, |w| w.error(&e.to_string())),
                }
            }
            Local::Exec => self.reject("ERR EXEC without MULTI", out),
            Local::Discard => self.reject("ERR DISCARD without MULTI", out),
            Local::Watch => {
                self.flush(out).await;
                let cmd = match self.rewrite(spec, args) {
                    Ok(cmd) => cmd,
                    Err(msg) => return self.reject(&msg, out),
                };
                match self.run_dedicated(cmd).await {
                    Ok(value) => {
                        self.txn.watching = !matches!(value, Value::ServerError(_));
                        self.write_upstream(out, ReplyRewrite::Plain, value);
                    }
                    Err(e) => self.reply(out, |w| w.error(&e.to_string())),
                }
            }
            Local::Unwatch => {
                self.flush(out).await;
                if self.txn.watching {
                    let result = self.run_dedicated(redis::cmd("UNWATCH")).await;
                    self.txn.watching = false;
                    if let Err(e) = result {
                        return self.reply(out, |w| w.error(&e.to_string()));
                    }
                }
                self.reply(out, |w| w.ok());
            }
            Local::Subscribe | Local::PSubscribe => {
                self.subscribe(spec, args, local == Local::PSubscribe, out)
                    .await
            }
            Local::Unsubscribe | Local::PUnsubscribe => {
                self.unsubscribe(args, local == Local::PUnsubscribe, out)
                    .await
            }
            Local::Scan => self.scan(args, out).await,
            Local::RandomKey | Local::DbSize | Local::FlushDb => {
                self.flush(out).await;
                self.walk_namespace(local, out).await;
            }
            Local::PkvSession => {
                let max = self.shared.settings.max_ttl as i64;
                let lifetime = match args.get(1) {
                    None => max,
                    Some(raw) => match crate::redis_num::parse_int(raw) {
                        Some(n) if n > 0 && n <= max => n,
                        _ => {
                            return self
                                .reject(&format!("ERR lifetime must be 1 to {max} seconds"), out)
                        }
                    },
                };
                let Some(auth) = &self.auth else { return };
                let token = self
                    .shared
                    .auth
                    .session_token(&auth.account, lifetime, now_secs());
                self.reply(out, |w| w.bulk(token.as_bytes()));
            }
            Local::PkvTopup => {
                self.flush(out).await;
                match self.topup(&args[1]).await {
                    Ok(quantity) => self.reply(out, |w| w.int(quantity)),
                    Err(msg) => self.reject(&msg, out),
                }
            }
            Local::PkvBalance => {
                self.flush(out).await;
                self.balance(out).await;
            }
            Local::PkvPrices => {
                let p = *self.shared.meter.prices();
                let enabled = self.shared.meter.enabled();
                self.reply(out, |w| {
                    w.map(6);
                    for (name, price) in [
                        ("op", p.op),
                        ("byte_in", p.byte_in),
                        ("byte_out", p.byte_out),
                        ("byte_second", p.byte_second),
                        ("time_ms", p.time_ms),
                    ] {
                        w.bulk(name.as_bytes());
                        w.bulk(price.to_string().as_bytes());
                    }
                    w.bulk(b"metering");
                    w.bulk(if enabled { b"on" } else { b"off" });
                });
            }
        }
    }

    /// Inside MULTI, keyless commands Redis can queue are forwarded to be queued; commands
    /// pkv emulates or that change the connection cannot be, and abort the transaction.
    async fn local_in_multi(
        &mut self,
        local: Local,
        spec: &'static CommandSpec,
        args: &[Bytes],
        out: &mut BytesMut,
    ) {
        match local {
            Local::Exec => self.exec(out).await,
            Local::Discard => {
                self.flush(out).await;
                let result = self.run_dedicated(redis::cmd("DISCARD")).await;
                if let Some(multi) = self.txn.multi.take() {
                    self.pay_unexecuted(multi);
                }
                self.txn = Txn::default();
                match result {
                    Ok(value) => self.write_upstream(out, ReplyRewrite::Plain, value),
                    Err(e) => self.reply(out, |w| w.error(&e.to_string())),
                }
            }
            Local::Multi => self.reject("ERR MULTI calls can not be nested", out),
            Local::Watch => self.reject("ERR WATCH inside MULTI is not allowed", out),
            Local::Ping | Local::Echo | Local::Time => {
                let mut cmd = redis::Cmd::new();
                args.iter().for_each(|a| {
                    cmd.arg(a.as_ref());
                });
                self.enqueue_plain(cmd, ReplyRewrite::Plain, out).await;
            }
            Local::Quit => {
                self.reply(out, |w| w.ok());
                self.closing = true;
            }
            _ => {
                let name = spec.name.to_ascii_lowercase();
                self.reject(
                    &format!("ERR '{name}' cannot be used inside MULTI through pkv"),
                    out,
                );
            }
        }
    }

    async fn exec(&mut self, out: &mut BytesMut) {
        self.flush(out).await;
        let Some(multi) = self.txn.multi.take() else {
            return;
        };
        if multi.aborted {
            let _ = self.run_dedicated(redis::cmd("DISCARD")).await;
            self.txn = Txn::default();
            self.pay_unexecuted(multi);
            return self.reply(out, |w| {
                w.error("EXECABORT Transaction discarded because of previous errors.")
            });
        }
        let result = self.run_dedicated(redis::cmd("EXEC")).await;
        self.txn = Txn::default();
        match result {
            Ok(Value::Array(results)) => {
                // One result per client command; bookkeeping results are read, not shown.
                // The reply's bytes are EXEC's own; each queued command pays its storage.
                ReplyWriter::new(out, self.proto).array(multi.queued.len());
                let mut results = results.into_iter();
                for pending in multi.queued {
                    let (before, reply, after) = pending.take_replies(&mut results);
                    let stored = self.stored(pending.bill.as_ref(), &reply, &before, &after);
                    self.write_upstream(out, pending.rewrite, reply);
                    if let Some(bill) = pending.bill {
                        self.pay(bill, stored, 0, 0);
                    }
                }
            }
            Err(e) if e.may_have_run() => {
                // EXEC was sent and its reply lost: the transaction may have run, so each
                // queued command pays its known cost, storage bound included.
                for pending in multi.queued {
                    self.pay_lost(pending.bill, &e, 0);
                }
                ReplyWriter::new(out, self.proto).error(&e.to_string());
            }
            other => {
                self.pay_unexecuted(multi);
                match other {
                    Ok(Value::Nil) => ReplyWriter::new(out, self.proto).null_array(),
                    Ok(other) => self.write_upstream(out, ReplyRewrite::Plain, other),
                    Err(e) => ReplyWriter::new(out, self.proto).error(&e.to_string()),
                }
            }
        }
    }

    /// Queued commands that never ran pay what they used (their op, request and QUEUED
    /// reply), and no storage.
    pub(super) fn pay_unexecuted(&mut self, multi: Multi) {
        for pending in multi.queued {
            if let Some(bill) = pending.bill {
                self.pay(bill, 0, 0, 0);
            }
        }
    }

    /// Runs a local command, metered: it pays one op, its request and reply bytes, and the
    /// time it spent upstream. Free commands (AUTH, HELLO, bare PING, QUIT, RESET, PKV.*,
    /// the connection set-up: see [`flags::FREE`]) and commands before authentication are
    /// not metered.
    pub(super) async fn metered_local(
        &mut self,
        local: Local,
        spec: &'static CommandSpec,
        args: &[Bytes],
        wire_len: usize,
        out: &mut BytesMut,
        io: &mut ClientIo,
    ) {
        if spec.is_free(args.len()) || self.auth.is_none() || !self.shared.meter.enabled() {
            return self.local(local, spec, args, out, io).await;
        }
        // Alone in the output, so the reply bytes counted are this command's.
        self.flush(out).await;
        // EXEC and DISCARD end a transaction whatever the balance (a transaction that ran
        // out while queuing is already aborted); they pay afterwards.
        let bill = if matches!(local, Local::Exec | Local::Discard) && self.txn.multi.is_some() {
            self.unreserved_bill(wire_len)
        } else {
            match self
                .admit(wire_len, 0, storage::After::None, false, out)
                .await
            {
                Ok(bill) => bill,
                Err(msg) => return self.reject(&msg, out),
            }
        };
        let start = out.len();
        let started = std::time::Instant::now();
        self.local(local, spec, args, out, io).await;
        if local == Local::Scan {
            self.flush(out).await;
        }
        let upstream_time = if spec.has(flags::UPSTREAM_TIME) {
            started.elapsed().as_micros() as u64
        } else {
            0
        };
        if let Some(bill) = bill {
            self.pay(bill, 0, out.len().saturating_sub(start), upstream_time);
        }
    }

    /// Verifies a token and attaches the session to its account, redeeming a quota token
    /// the first time it is seen. Returns the error line on refusal.
    async fn authenticate(&mut self, token: &[u8]) -> Result<(), String> {
        let shared = self.shared.clone();
        let refuse = |reason: String| {
            Metrics::inc(&shared.metrics.auth_failures_total);
            format!("WRONGPASS {reason}")
        };
        let token = crate::auth::token_text(token).map_err(|e| refuse(e.to_string()))?;
        let now = now_secs();
        let verified = shared
            .auth
            .verify(token, now)
            .map_err(|e| refuse(e.to_string()))?;
        // The session attaches to the account the token itself names, never to whoever
        // redeemed it first; a token spent on a top-up opens nothing.
        if let TokenKind::Quota { jti, quantity, exp } = &verified.kind {
            let keep_until = exp
                .saturating_add(shared.settings.token_leeway as i64)
                .saturating_add(60);
            match shared
                .ledger
                .redeem(
                    jti,
                    &verified.account,
                    *quantity,
                    keep_until,
                    RedeemedBy::Auth,
                )
                .await
            {
                Ok(Redemption::Credited) => {
                    tracing::info!(account = %verified.account, quantity, "quota token redeemed");
                }
                Ok(Redemption::AlreadyRedeemed {
                    by: RedeemedBy::Auth,
                }) => {}
                Ok(Redemption::AlreadyRedeemed {
                    by: RedeemedBy::Topup,
                }) => return Err(refuse("token already spent on a top-up".into())),
                Err(e) => return Err(e.to_string()),
            }
        }
        let account = verified.account.clone();
        // What this session ran so far is paid by the account it ran as, before the session
        // may move to another.
        self.apply_charges();
        let (meter, tenant, slot) = match self.auth.take() {
            Some(old) if old.account == account => (old.meter, old.tenant, old.slot),
            old => {
                // A new account for this connection: it must have a connection to spare.
                let slot = match self.shared.limits.connect(&account) {
                    Ok(slot) => slot,
                    Err(e) => {
                        self.auth = old;
                        return Err(e.to_string());
                    }
                };
                if let Some(old) = old {
                    // A different account: nothing of the old one carries over.
                    self.shared.meter.forget(&old.meter, &mut self.charges);
                    self.shared.tenants.detach(&old.account, &old.tenant);
                    self.txn = Txn::default();
                    self.dedicated = None;
                    self.pubsub = None;
                    self.shared.meter.detach(&old.meter).await;
                }
                (
                    self.shared.meter.attach(&account),
                    self.shared.tenants.attach(&account),
                    slot,
                )
            }
        };
        self.auth = Some(Authed {
            ns: Namespace::new(&account),
            account,
            valid_until: verified.valid_until,
            meter,
            tenant,
            slot,
        });
        Ok(())
    }

    /// `HELLO [protover [AUTH username password] [SETNAME name]]`
    async fn hello(&mut self, args: &[Bytes], out: &mut BytesMut) {
        let mut proto = self.proto;
        let mut i = 1;
        if let Some(ver) = args.get(1) {
            proto = match &ver[..] {
                b"2" => Proto::Resp2,
                b"3" => Proto::Resp3,
                _ => return self.reject("NOPROTO unsupported protocol version", out),
            };
            i = 2;
        }
        let mut token = None;
        let mut name = None;
        while i < args.len() {
            if args[i].eq_ignore_ascii_case(b"AUTH") && i + 2 < args.len() {
                token = Some(args[i + 2].clone());
                i += 3;
            } else if args[i].eq_ignore_ascii_case(b"SETNAME") && i + 1 < args.len() {
                name = Some(args[i + 1].clone());
                i += 2;
            } else {
                let opt = String::from_utf8_lossy(&args[i]).into_owned();
                return self.reject(&format!("ERR Syntax error in HELLO option '{opt}'"), out);
            }
        }
        // Checked before anything changes: a refused HELLO leaves the session as it was.
        if let Some(Err(msg)) = name.as_deref().map(check_client_name) {
            return self.reject(&msg, out);
        }
        self.flush(out).await;
        if let Some(token) = token {
            if let Err(msg) = self.authenticate(&token).await {
                return self.reject(&msg, out);
            }
        }
        if self.auth.is_none() {
            return self.reject("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time", out);
        }
        if let Some(name) = name {
            self.name = (!name.is_empty()).then_some(name);
        }
        self.proto = proto;
        let id = self.id as i64;
        let ver: i64 = if proto == Proto::Resp3 { 3 } else { 2 };
        self.reply(out, |w| {
            w.map(7);
            w.bulk(b"server");
            w.bulk(b"redis");
            w.bulk(b"version");
            w.bulk(REDIS_VERSION.as_bytes());
            w.bulk(b"proto");
            w.int(ver);
            w.bulk(b"id");
            w.int(id);
            w.bulk(b"mode");
            w.bulk(b"standalone");
            w.bulk(b"role");
            w.bulk(b"master");
            w.bulk(b"modules");
            w.array(0);
        });
    }

    async fn subscribe(
        &mut self,
        spec: &CommandSpec,
        args: &[Bytes],
        pattern: bool,
        out: &mut BytesMut,
    ) {
        self.flush(out).await;
        let Some(ns) = self.ns().cloned() else { return };
        let Some(account) = self.auth.as_ref().map(|a| a.account.clone()) else {
            return;
        };
        if self.pubsub.is_none() {
            // A subscribed connection holds an upstream connection of its own: it counts
            // against the account's dedicated connections.
            let held = match self.shared.limits.dedicated(&account) {
                Ok(held) => held,
                Err(e) => return self.reply(out, |w| w.error(&e.to_string())),
            };
            let max_queued = self.shared.settings.max_subscriber_bytes;
            match self.shared.backend.subscription(max_queued).await {
                Ok(sub) => {
                    self.pubsub = Some(Subscriber {
                        sink: Box::new(CountedSink {
                            sink: sub.sink,
                            _held: held,
                        }),
                        messages: sub.messages,
                        channels: BTreeSet::new(),
                        patterns: BTreeSet::new(),
                    });
                }
                Err(e) => return self.reply(out, |w| w.error(&e.to_string())),
            }
        }
        let _ = spec;
        let kind: &[u8] = if pattern { b"psubscribe" } else { b"subscribe" };
        for name in &args[1..] {
            let Some(sub) = self.pubsub.as_mut() else {
                return;
            };
            let upstream_name = ns.wrap(name);
            if let Err(e) = sub.sink.subscribe(upstream_name.as_ref(), pattern).await {
                let msg = e.to_string();
                self.pubsub = None;
                return self.reply(out, |w| w.error(&msg));
            }
            if pattern {
                sub.patterns.insert(name.clone());
            } else {
                sub.channels.insert(name.clone());
            }
            let count = sub.count() as i64;
            self.reply(out, |w| {
                w.push(3);
                w.bulk(kind);
                w.bulk(name);
                w.int(count);
            });
        }
    }

    async fn unsubscribe(&mut self, args: &[Bytes], pattern: bool, out: &mut BytesMut) {
        self.flush(out).await;
        let kind: &[u8] = if pattern {
            b"punsubscribe"
        } else {
            b"unsubscribe"
        };
        let Some(ns) = self.ns().cloned() else { return };
        let names: Vec<Bytes> = match (&self.pubsub, args.len()) {
            (_, n) if n > 1 => args[1..].to_vec(),
            (Some(sub), _) => (if pattern {
                &sub.patterns
            } else {
                &sub.channels
            })
            .iter()
            .cloned()
            .collect(),
            (None, _) => Vec::new(),
        };
        if names.is_empty() {
            let count = self.pubsub.as_ref().map_or(0, |s| s.count()) as i64;
            return self.reply(out, |w| {
                w.push(3);
                w.bulk(kind);
                w.null();
                w.int(count);
            });
        }
        for name in names {
            let mut count = 0;
            if let Some(sub) = self.pubsub.as_mut() {
                let upstream_name = ns.wrap(&name);
                let _ = sub.sink.unsubscribe(upstream_name.as_ref(), pattern).await;
                if pattern {
                    sub.patterns.remove(&name);
                } else {
                    sub.channels.remove(&name);
                }
                count = sub.count() as i64;
            }
            self.reply(out, |w| {
                w.push(3);
                w.bulk(kind);
                w.bulk(&name);
                w.int(count);
            });
        }
        if self.pubsub.as_ref().is_some_and(|s| s.count() == 0) {
            self.pubsub = None;
        }
    }

    /// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`, confined to the namespace: the
    /// pattern (or `*`) is put behind the prefix, and the prefix is taken off the keys.
    async fn scan(&mut self, args: &[Bytes], out: &mut BytesMut) {
        let Some(ns) = self.ns().cloned() else { return };
        let mut pattern: &[u8] = b"*";
        let mut rest = Vec::new();
        let mut i = 2;
        while i < args.len() {
            if i + 1 >= args.len() {
                return self.reject("ERR syntax error", out);
            }
            if args[i].eq_ignore_ascii_case(b"MATCH") {
                pattern = &args[i + 1];
            } else if args[i].eq_ignore_ascii_case(b"COUNT")
                || args[i].eq_ignore_ascii_case(b"TYPE")
            {
                rest.push(args[i].clone());
                rest.push(args[i + 1].clone());
            } else {
                return self.reject("ERR syntax error", out);
            }
            i += 2;
        }
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(args[1].as_ref())
            .arg("MATCH")
            .arg(ns.wrap_glob(pattern).as_ref());
        rest.iter().for_each(|a| {
            cmd.arg(a.as_ref());
        });
        self.enqueue_plain(cmd, ReplyRewrite::Scan, out).await;
    }

    /// RANDOMKEY, DBSIZE and FLUSHDB/FLUSHALL, emulated by walking the namespace with SCAN:
    /// Redis's own versions would see every tenant's keys.
    async fn walk_namespace(&mut self, local: Local, out: &mut BytesMut) {
        let Some(ns) = self.ns().cloned() else { return };
        let glob = ns.wrap_glob(b"*");
        let mut cursor = b"0".to_vec();
        let mut count: i64 = 0;
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("SCAN")
                .arg(&cursor)
                .arg("MATCH")
                .arg(glob.as_ref())
                .arg("COUNT")
                .arg(SCAN_STEP);
            let page = match self.shared.backend.pipeline(self.proto, &pipe, 1).await {
                Ok(mut v) => v.pop(),
                Err(e) => return self.reply(out, |w| w.error(&e.to_string())),
            };
            let Some(Value::Array(mut parts)) = page else {
                return self.reply(out, |w| w.error("ERR unexpected SCAN reply from upstream"));
            };
            let keys = match parts.pop() {
                Some(Value::Array(keys)) => keys,
                _ => Vec::new(),
            };
            cursor = match parts.pop() {
                Some(Value::BulkString(c)) => c,
                _ => b"0".to_vec(),
            };
            match local {
                Local::RandomKey if !keys.is_empty() => {
                    let mut pick = [0u8; 8];
                    let _ = getrandom::fill(&mut pick);
                    let key = &keys[(u64::from_le_bytes(pick) % keys.len() as u64) as usize];
                    let value =
                        ns.rewrite_reply(ReplyRewrite::Keys, Value::Array(vec![key.clone()]));
                    let name = match value {
                        Value::Array(mut v) => v.pop().unwrap_or(Value::Nil),
                        _ => Value::Nil,
                    };
                    return self.write_upstream(out, ReplyRewrite::Plain, name);
                }
                Local::FlushDb if !keys.is_empty() => {
                    let mut pipe = redis::pipe();
                    let unlink = pipe.cmd("UNLINK");
                    for key in &keys {
                        if let Value::BulkString(k) = key {
                            unlink.arg(k);
                        }
                    }
                    if let Err(e) = self.shared.backend.pipeline(self.proto, &pipe, 1).await {
                        return self.reply(out, |w| w.error(&e.to_string()));
                    }
                }
                _ => {}
            }
            count += keys.len() as i64;
            if cursor == b"0" {
                break;
            }
        }
        match local {
            Local::DbSize => self.reply(out, |w| w.int(count)),
            Local::FlushDb => self.reply(out, |w| w.ok()),
            _ => self.reply(out, |w| w.null()),
        }
    }

    /// Redeems a quota token into the current account; returns the units credited.
    async fn topup(&mut self, token: &[u8]) -> Result<i64, String> {
        let Some(account) = self.auth.as_ref().map(|a| a.account.clone()) else {
            return Err("NOAUTH Authentication required.".into());
        };
        let token = crate::auth::token_text(token).map_err(|e| format!("WRONGPASS {e}"))?;
        let verified = self
            .shared
            .auth
            .verify(token, now_secs())
            .map_err(|e| format!("WRONGPASS {e}"))?;
        let TokenKind::Quota { jti, quantity, exp } = verified.kind else {
            return Err("ERR PKV.TOPUP takes a quota token, not a session token".into());
        };
        let keep_until = exp
            .saturating_add(self.shared.settings.token_leeway as i64)
            .saturating_add(60);
        match self
            .shared
            .ledger
            .redeem(&jti, &account, quantity, keep_until, RedeemedBy::Topup)
            .await
        {
            Ok(Redemption::Credited) => {
                tracing::info!(account = %account, quantity, "quota token topped up");
                Ok(quantity)
            }
            // The same answer however the token was used, naming no one.
            Ok(Redemption::AlreadyRedeemed { .. }) => Err("ERR token already redeemed".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// `PKV.BALANCE`: settles this process's lease for the account first, so the figures
    /// include everything this connection did.
    ///
    /// It is free but costs the ledger a settlement and a read, so a connection reads at
    /// most once per `PKV_BALANCE_INTERVAL_MS`: a call sooner waits out the rest of the
    /// interval, and every answer is still exact (as a client expects right after a write).
    async fn balance(&mut self, out: &mut BytesMut) {
        let Some((account, meter)) = self
            .auth
            .as_ref()
            .map(|a| (a.account.clone(), a.meter.clone()))
        else {
            return;
        };
        if let Some(last) = self.balance_read_at {
            tokio::time::sleep_until(last + self.shared.settings.balance_interval).await;
        }
        self.balance_read_at = Some(tokio::time::Instant::now());
        self.apply_charges();
        if let Err(e) = self.shared.meter.release(&meter).await {
            return self.reply(out, |w| w.error(&e.to_string()));
        }
        match self.shared.ledger.account(&account).await {
            Ok(record) => self.reply(out, |w| {
                let u = record.usage;
                w.map(8);
                w.bulk(b"account");
                w.bulk(account.as_bytes());
                w.bulk(b"balance");
                w.bulk(format_nanos(record.credited - record.debited).as_bytes());
                w.bulk(b"spent");
                w.bulk(format_nanos(record.spent).as_bytes());
                for (name, n) in [
                    ("ops", u.ops),
                    ("bytes_in", u.bytes_in),
                    ("bytes_out", u.bytes_out),
                    ("byte_seconds", u.byte_seconds),
                ] {
                    w.bulk(name.as_bytes());
                    w.int(i64::try_from(n).unwrap_or(i64::MAX));
                }
                w.bulk(b"time_ms");
                w.bulk(format!("{}.{:03}", u.time_us / 1000, u.time_us % 1000).as_bytes());
            }),
            Err(e) => self.reply(out, |w| w.error(&e.to_string())),
        }
    }

    fn client_info_line(&self) -> String {
        let name = self
            .name
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        let resp = if self.proto == Proto::Resp3 { 3 } else { 2 };
        let (sub, psub) = self
            .pubsub
            .as_ref()
            .map_or((0, 0), |s| (s.channels.len(), s.patterns.len()));
        format!(
            "id={} addr={} laddr={} fd=0 name={name} db=0 sub={sub} psub={psub} multi={} resp={resp}\n",
            self.id,
            self.peer,
            self.shared.settings.listen,
            self.txn.multi.as_ref().map_or(-1, |m| m.queued.len() as i64),
        )
    }

    /// `INFO`: the account's own figures in this process (its connections, its
    /// commands), never the process's, which would show other tenants' traffic.
    fn info_text(&self) -> String {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let (clients, received, commands) = self.auth.as_ref().map_or((0, 0, 0), |a| {
            (
                load(&a.tenant.connections),
                load(&a.tenant.connections_total),
                // Those run before this INFO in the same read count too. This INFO is
                // counted once, in one of the two (an admission that had to wait for the
                // ledger moves the pending count to the account's), and Redis leaves the
                // running command out.
                (load(&a.tenant.commands_total) + self.commands_pending()).saturating_sub(1),
            )
        });
        format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nserver_name:pkv\r\npkv_version:{}\r\n\r\n# Clients\r\nconnected_clients:{clients}\r\n\r\n# Stats\r\ntotal_connections_received:{received}\r\ntotal_commands_processed:{commands}\r\n",
            env!("CARGO_PKG_VERSION"),
        )
    }
}

/// `COMMAND` / `COMMAND INFO name...`: Redis's reply shape, from the table.
fn command_info(w: &mut ReplyWriter, names: &[Bytes]) {
    let specs: Vec<Option<&CommandSpec>> = if names.is_empty() {
        commands::table::TABLE
            .iter()
            .filter(|s| !s.name.contains('|'))
            .map(Some)
            .collect()
    } else {
        names
            .iter()
            .map(|n| {
                commands::lookup(std::slice::from_ref(n))
                    .ok()
                    .or_else(|| find_spec(n))
            })
            .collect()
    };
    w.array(specs.len());
    for spec in specs {
        let Some(spec) = spec else {
            w.null();
            continue;
        };
        let (first, last, step) = match spec.keys.first() {
            Some(commands::KeyRule::Range { first, last, step }) => {
                (i64::from(*first), i64::from(*last), i64::from(*step))
            }
            _ => (0, 0, 0),
        };
        w.array(10);
        w.bulk(spec.name.to_ascii_lowercase().as_bytes());
        w.int(i64::from(spec.arity));
        let mut words: Vec<&[u8]> = Vec::new();
        if spec.has(flags::WRITE) {
            words.push(b"write");
        }
        if spec.has(flags::READONLY) {
            words.push(b"readonly");
        }
        if spec.has(flags::BLOCKING) {
            words.push(b"blocking");
        }
        if spec.has(flags::PUBSUB) {
            words.push(b"pubsub");
        }
        w.array(words.len());
        words.iter().for_each(|f| w.bulk(f));
        w.int(first);
        w.int(last);
        w.int(step);
        for _ in 0..4 {
            w.array(0);
        }
    }
}

fn find_spec(name: &[u8]) -> Option<&'static CommandSpec> {
    let upper = String::from_utf8_lossy(name).to_ascii_uppercase();
    commands::table::TABLE.iter().find(|s| s.name == upper)
}
