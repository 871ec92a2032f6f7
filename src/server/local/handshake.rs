//! The handshake and connection housekeeping: AUTH, HELLO, RESET, SELECT, CLIENT, PING,
//! TIME. Free (not metered), and the only commands served before authentication.

use bytes::{Bytes, BytesMut};

use crate::auth::{now_secs, TokenKind};
use crate::commands::{Local, LookupError};
use crate::error::{ClientError, NameError};
use crate::meter::ledger::{RedeemedBy, Redemption};
use crate::metrics::process::{token_refused, AuthResult};
use crate::metrics::{self, Metrics};
use crate::namespace::Namespace;
use crate::protocol::Proto;
use crate::server::session::{Authed, Session, Txn};

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
fn check_client_name(name: &[u8]) -> Result<(), NameError> {
    check_name("client name", name)
}

fn check_name(what: &'static str, name: &[u8]) -> Result<(), NameError> {
    if name.len() > MAX_CLIENT_NAME {
        return Err(NameError::TooLong {
            what,
            max: MAX_CLIENT_NAME,
        });
    }
    if !valid_client_name(name) {
        return Err(NameError::Characters { what });
    }
    Ok(())
}

/// Checks `CLIENT SETINFO <attr> <value>` as Redis 7.2 does (only `LIB-NAME` and
/// `LIB-VER`, printable ASCII without spaces), and bounds the value like a client name.
fn check_client_info(attr: &[u8], value: &[u8]) -> Result<(), ClientError> {
    let what = if attr.eq_ignore_ascii_case(b"LIB-NAME") {
        "lib-name"
    } else if attr.eq_ignore_ascii_case(b"LIB-VER") {
        "lib-ver"
    } else {
        let attr = String::from_utf8_lossy(attr).into_owned();
        return Err(ClientError::UnknownClientInfo(attr));
    };
    Ok(check_name(what, value)?)
}

impl Session {
    /// `AUTH [username] token`
    pub(super) async fn auth(&mut self, args: &[Bytes], out: &mut BytesMut) {
        let token = match args.len() {
            2 => &args[1],
            3 => &args[2],
            _ => return self.reject(ClientError::Syntax, out),
        };
        self.flush(out).await;
        match self.authenticate(token).await {
            Ok(()) => self.reply(out, |w| w.ok()),
            Err(err) => self.reject(err, out),
        }
    }

    /// Verifies a token and attaches the session to its account, redeeming a quota token
    /// the first time it is seen. Returns the error line on refusal.
    async fn authenticate(&mut self, token: &[u8]) -> Result<(), ClientError> {
        let shared = self.shared.clone();
        let refuse = |reason: String| {
            Metrics::inc(&shared.metrics.auth_failures_total);
            ClientError::WrongPass(reason)
        };
        let token = crate::auth::token_text(token).map_err(|e| refuse(token_refused(&e)))?;
        let now = now_secs();
        let verified = shared
            .current()
            .auth
            .verify(token, now)
            .map_err(|e| refuse(token_refused(&e)))?;
        // The session attaches to the account the token itself names, never to whoever
        // redeemed it first; a token spent on a top-up opens nothing.
        if let TokenKind::Quota { jti, quantity, exp } = &verified.kind {
            let keep_until = exp
                .saturating_add(shared.current().token_leeway as i64)
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
                }) => {
                    metrics::process::auth(AuthResult::SpentOnTopup);
                    return Err(refuse("token already spent on a top-up".into()));
                }
                Err(e) => return Err(e.into()),
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
                        return Err(e.into());
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
        if meter.default_ttl().is_none() && self.shared.meter.enabled() {
            // The account's own default TTL, once per process while it has sessions. Until
            // it could be read, the process's default applies.
            match self.shared.ledger.account(&account).await {
                Ok(record) => meter.set_default_ttl(record.default_ttl),
                Err(err) => tracing::warn!(%account, error = %err, "default TTL not read"),
            }
        }
        self.auth = Some(Authed {
            ns: Namespace::new(&account),
            account,
            valid_until: verified.valid_until,
            meter,
            tenant,
            slot,
        });
        metrics::process::auth(AuthResult::Ok);
        Ok(())
    }

    /// `HELLO [protover [AUTH username password] [SETNAME name]]`
    pub(super) async fn hello(&mut self, args: &[Bytes], out: &mut BytesMut) {
        let mut proto = self.proto;
        let mut i = 1;
        if let Some(ver) = args.get(1) {
            proto = match &ver[..] {
                b"2" => Proto::Resp2,
                b"3" => Proto::Resp3,
                _ => return self.reject(ClientError::NoProto, out),
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
                return self.reject(ClientError::HelloOption(opt), out);
            }
        }
        // Checked before anything changes: a refused HELLO leaves the session as it was.
        if let Some(Err(err)) = name.as_deref().map(check_client_name) {
            return self.reject(err, out);
        }
        self.flush(out).await;
        if let Some(token) = token {
            if let Err(err) = self.authenticate(&token).await {
                return self.reject(err, out);
            }
        }
        if self.auth.is_none() {
            return self.reject(ClientError::HelloNeedsAuth, out);
        }
        if let Some(name) = name {
            self.name = (!name.is_empty()).then_some(name);
        }
        self.proto = proto;
        let id = self.id as i64;
        let ver: i64 = if proto == Proto::Resp3 { 3 } else { 2 };
        let version = crate::server::Shared::redis_version(self.shared.clone()).await;
        self.reply(out, |w| {
            w.map(7);
            w.bulk(b"server");
            w.bulk(b"redis");
            w.bulk(b"version");
            w.bulk(version.as_bytes());
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

    /// `PING [message]`; a subscribed RESP2 client gets Redis's `pong` array.
    pub(super) fn ping(&mut self, args: &[Bytes], out: &mut BytesMut) {
        if args.len() > 2 {
            let args = args.iter().take(9).cloned().collect();
            let err = LookupError::Arity;
            return self.reject(ClientError::Lookup { err, args }, out);
        }
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

    /// `RESET`: the connection as it was when it opened.
    pub(super) async fn reset(&mut self, out: &mut BytesMut) {
        self.flush(out).await;
        self.end().await;
        self.txn = Txn::default();
        self.dedicated = None;
        self.pubsub = None;
        self.auth = None;
        self.name = None;
        (self.replies_off, self.skip_next) = (false, false);
        self.proto = Proto::Resp2;
        self.reply(out, |w| w.simple("RESET"));
    }

    /// `SELECT 0`: pkv serves database 0 only.
    pub(super) fn select(&mut self, args: &[Bytes], out: &mut BytesMut) {
        if &args[1][..] == b"0" {
            self.reply(out, |w| w.ok());
        } else {
            self.reject(ClientError::OtherDatabase, out);
        }
    }

    /// `TIME`
    pub(super) fn time(&mut self, out: &mut BytesMut) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.reply(out, |w| {
            w.array(2);
            w.bulk(now.as_secs().to_string().as_bytes());
            w.bulk(now.subsec_micros().to_string().as_bytes());
        });
    }

    /// `CLIENT SETNAME|GETNAME|SETINFO|NO-TOUCH|NO-EVICT|REPLY|ID|INFO|LIST`, and
    /// `READONLY`/`READWRITE`.
    pub(super) fn client(&mut self, local: Local, args: &[Bytes], out: &mut BytesMut) {
        match local {
            Local::ClientSetName => {
                if let Err(err) = check_client_name(&args[2]) {
                    return self.reject(err, out);
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
                Err(err) => self.reject(err, out),
            },
            Local::ClientNoTouch | Local::ClientNoEvict | Local::ReadOnly | Local::ReadWrite => {
                self.reply(out, |w| w.ok())
            }
            // As Redis: OFF and SKIP answer nothing, ON answers even when replies were off.
            Local::ClientReply => {
                let mode = &args[2];
                if mode.eq_ignore_ascii_case(b"ON") {
                    (self.replies_off, self.skip_next, self.skipping) = (false, false, false);
                    self.reply(out, |w| w.ok());
                } else if mode.eq_ignore_ascii_case(b"OFF") {
                    self.replies_off = true;
                } else if mode.eq_ignore_ascii_case(b"SKIP") {
                    self.skip_next = !self.replies_off;
                } else {
                    self.reject(ClientError::Syntax, out);
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
            // Redis's `CLIENT LIST [TYPE type | ID id...]` over the one connection a tenant
            // may see: its own (another connection of the same account is not listed).
            Local::ClientList => match self.client_list_shows_own(&args[2..]) {
                Ok(shown) => {
                    let line = if shown {
                        self.client_info_line()
                    } else {
                        String::new()
                    };
                    self.reply(out, |w| w.bulk(line.as_bytes()));
                }
                Err(err) => self.reject(err, out),
            },
            _ => {}
        }
    }

    /// Whether `CLIENT LIST`'s filter (the arguments after `LIST`) keeps this connection,
    /// with Redis 7.0's errors for a malformed one.
    fn client_list_shows_own(&self, filter: &[Bytes]) -> Result<bool, ClientError> {
        match filter {
            [] => Ok(true),
            [word, kind] if word.eq_ignore_ascii_case(b"TYPE") => {
                let subscribed = self
                    .pubsub
                    .as_ref()
                    .is_some_and(|s| !s.channels.is_empty() || !s.patterns.is_empty());
                let kind_lower = kind.to_ascii_lowercase();
                match kind_lower.as_slice() {
                    b"normal" => Ok(!subscribed),
                    b"pubsub" => Ok(subscribed),
                    b"master" | b"replica" | b"slave" => Ok(false),
                    _ => Err(ClientError::UnknownClientType(
                        String::from_utf8_lossy(kind).into_owned(),
                    )),
                }
            }
            [word, ids @ ..] if word.eq_ignore_ascii_case(b"ID") && !ids.is_empty() => {
                let mut shown = false;
                for id in ids {
                    let id: i64 = std::str::from_utf8(id)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or(ClientError::InvalidClientId)?;
                    shown |= id == self.id as i64;
                }
                Ok(shown)
            }
            _ => Err(ClientError::Syntax),
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
}
