//! The ledger in a Redis: the upstream, or a Redis of its own (`PKV_LEDGER_URL`), or the
//! Redis Cluster upstream itself. Redemption, leases and settlements are Lua scripts, each
//! one atomic step.
//!
//! # Two layouts
//!
//! On one Redis ([`Layout::Plain`]) the records are `pkv:ledger:acct:<account>`,
//! `pkv:ledger:upd:<writer>:<account>` and `pkv:ledger:jti:<jti>`, and a redemption is one
//! script over the token's record and the account's. A Redis Cluster runs a script only
//! when all its keys share a slot, so there ([`Layout::Cluster`]) each account's records
//! carry the account as a hash tag and live in its slot:
//!
//! - `pkv:ledger:{<account>}:acct`: the account record;
//! - `pkv:ledger:{<account>}:upd:<writer>`: a process's last update numbers for it;
//! - `pkv:ledger:{<account>}:jti:<jti>`: the mark that token `jti`'s credit was added;
//!
//! and a token's claim, which must be unique across every account, lives in the slot of
//! the token id: `pkv:ledger:jti:{<jti>}`, holding the same record as the plain layout's
//! (`auth:<account>` or `topup:<account>`). Leases and settlements are the same scripts on
//! the account's keys, so their guarantees are unchanged. The account is escaped
//! ([`escape_account`]): it holds no `{` or `}`, and it is never empty (a token's `sub`
//! has 1 to 256 bytes), so the tag is exactly the account. Tenant keys all start with
//! `pkv:t:` ([`crate::namespace`]): they may share a slot with ledger records, never a name.
//!
//! A plain Redis keeps the plain layout (existing ledgers are read as they are, nothing is
//! migrated); the cluster layout is used only with a cluster upstream that holds the ledger.
//!
//! # Redemption in a cluster: a state machine in two slots
//!
//! A token id's claim and an account's credit are in different slots, so no one script can
//! write both. A redemption of token `jti` worth `nanos` into account `A` by kind `k` goes:
//!
//! 1. **claim** (jti's slot, [`CLAIM_SCRIPT`]): `pkv:ledger:jti:{jti}` is set to `k:A`
//!    unless it exists; either way the script answers the claim's record, `k':B`.
//! 2. **credit** (B's slot, [`CREDIT_SCRIPT`]): unless the mark `pkv:ledger:{B}:jti:<jti>`
//!    exists, add `nanos` to B's `credited` and set the mark, in one script. The mark says
//!    whether the claim's owner was told: `owner` when the presenter is the owner (it
//!    presented `k:B`), `other` when another presenter completed B's credit; an owner that
//!    finds `other` turns it into `owner` and is the one told.
//!
//! States of one token: *unclaimed* → (claim) → *claimed* → (credit by the owner) →
//! *credited, owner told*; or *claimed* → (credit by another) → *credited, owner not told*
//! → (the owner presents) → *credited, owner told*. Step 2 is applied to the claim's owner
//! B whoever runs it, so a process that dies or times out between the steps leaves
//! *claimed*, and the next presentation of the token, through any process and for any
//! account, completes B's credit; the mark makes that credit happen once however many
//! presentations race. A presenter is told `Credited` only when it is the owner and its
//! step 3 moved the mark to `owner` (so exactly one presentation by the owner is told);
//! every other presentation gets `AlreadyRedeemed` with the claim's kind. A token id names
//! one token, so every presenter knows the same `nanos` and expiry. Both records expire
//! with the token.
//!
//! Step 2 always leaves the mark `other` ([`CREDIT_SCRIPT`]); the owner then turns it into
//! `owner` in a step of its own ([`TELL_SCRIPT`]), after step 2 is on the replicas (see
//! below). So an owner whose step 2 was not known to be replicated, and was answered an
//! error, is told `Credited` when it presents the token again.
//!
//! A credit that Redis refuses because the balance would overflow writes nothing in B's
//! slot, and the claim is then taken back if it is still `k:A` ([`RELEASE_SCRIPT`]), so the
//! token stays unredeemed, as on one Redis.
//!
//! # Writes on replicas: `WAIT`
//!
//! Redis replicates asynchronously: a write a master acknowledged and lost in a failover
//! before a replica had it is gone. A lost claim would let another account claim the
//! token and be credited too; a lost credit or settlement loses money told or owed. So each
//! ledger write (claim, credit, lease, settlement, plain redemption) is sent with
//! `WAIT <replicas> <`[`WAIT_MS`]`>` right after it, in one batch on one connection (`WAIT`
//! counts the replicas that acknowledged that connection's writes; in a cluster it goes
//! with the write to its master, [`crate::upstream::cluster`]). Fewer replicas than asked
//! within [`WAIT_MS`] answer [`not_replicated`]: the caller is told of an error, not of a
//! credit, and tries again; a redemption is completed by the next presentation (the state
//! machine above), a lease or settlement is sent again with its update number. Every
//! script writes something even when it finds its work done (the record is rewritten as
//! it is), so that the `WAIT` of a retry, on any connection, covers the first attempt's
//! write too (Redis remembers each connection's replication offset after its last write,
//! and `WAIT` counts the replicas that acknowledged that offset or a later one:
//! <https://redis.io/commands/wait>, "Implementation details"). The same page says `WAIT`
//! does not make Redis strongly consistent: a failover makes a best-effort attempt to
//! promote the best replica, one that received the write, but may not. So a write a
//! replica acknowledged survives the usual failover, not every one. The owner's step 3
//! (the mark becoming `owner`) is not waited for: lost, it lets the owner be told
//! `Credited` once more, with nothing credited twice. On one Redis (`PKV_LEDGER_REPLICAS`
//! set), a redemption is one script that credits and records the token: when its `WAIT`
//! fails, the credit stands (or is lost with the master) and a retry is answered that the
//! token was redeemed, without the owner ever being told `Credited`.
//!
//! How many replicas are asked for: `PKV_LEDGER_REPLICAS` when set; else, for a ledger in
//! a cluster, 1 while every master has a replica (as the last slot-map read says) and 0
//! otherwise, and 0 for a plain Redis (pkv cannot see replicas a plain Redis may lack, and a
//! `WAIT` no replica answers would fail every write). 0 sends no `WAIT`. While a `WAIT` is
//! pending it holds the pooled connection it was sent on, for at most [`WAIT_MS`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::backend::{Backend, BackendError, BoxFuture};
use crate::commands::Call;
use crate::meter::ledger::{
    account_key, token_key, AccountRecord, Book, Grant, LeaseRequest, LedgerError, RedeemedBy,
    Redemption, Settlement, ACCOUNT_FIELDS, DEFAULT_TTL_FIELD, MAX_LEASE, UPDATES_KEPT_SECS,
};
use crate::namespace::escape_account;
use crate::protocol::frame::Frame;
use crate::protocol::Proto;

/// Credits an account and claims a token id, or returns the record of the first claim.
/// KEYS[1] = token record, KEYS[2] = account record; ARGV = token record value (see
/// [`RedeemedBy::record`]), nanos, expire-at.
/// The credit comes first: if it fails (the balance would overflow), the script stops
/// before anything is written, and the token stays unredeemed.
const REDEEM_SCRIPT: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner then
  redis.call('SET', KEYS[1], owner, 'KEEPTTL')
  return owner
end
redis.call('HINCRBY', KEYS[2], 'credited', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[3])
return 1
"#;

/// Takes a lease of up to `want`, once per update number.
/// KEYS[1] = account record, KEYS[2] = this process's updates record for the account;
/// ARGV = seq, want, seconds to keep the updates record.
/// Returns {granted, available after the grant}; a repeated seq returns what it was granted
/// the first time and an empty available amount (not known then).
/// Amounts are decimal strings split into two exact halves (above and below 10^9), so the
/// comparison is exact for any int64 balance; `want` is below 2^53 ([`MAX_LEASE`]).
const LEASE_SCRIPT: &str = r#"
local last = redis.call('HGET', KEYS[2], 'lease')
if last and tonumber(last) >= tonumber(ARGV[1]) then
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  if tonumber(last) == tonumber(ARGV[1]) then
    return {redis.call('HGET', KEYS[2], 'granted') or '0', ''}
  end
  return {'0', ''}
end
local function split(s)
  s = s or '0'
  local sign = 1
  if string.sub(s, 1, 1) == '-' then
    sign = -1
    s = string.sub(s, 2)
  end
  return sign * (tonumber(string.sub(s, 1, -10)) or 0), sign * (tonumber(string.sub(s, -9)) or 0)
end
local ch, cl = split(redis.call('HGET', KEYS[1], 'credited'))
local dh, dl = split(redis.call('HGET', KEYS[1], 'debited'))
local available = (ch - dh) * 1000000000 + (cl - dl)
local want = tonumber(ARGV[2])
local granted = '0'
if available >= want then
  granted = ARGV[2]
elseif available > 0 then
  granted = string.format('%d', available)
end
if granted ~= '0' then
  redis.call('HINCRBY', KEYS[1], 'debited', granted)
end
redis.call('HSET', KEYS[2], 'lease', ARGV[1], 'granted', granted)
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {granted, string.format('%.0f', available - tonumber(granted))}
"#;

/// Applies a settlement's deltas, once per update number.
/// KEYS[1] = account record, KEYS[2] = this process's updates record for the account;
/// ARGV = seq, seconds to keep the updates record, then field, delta pairs.
/// Returns 1 when applied now, 0 when that number (or a later one) was applied before.
const SETTLE_SCRIPT: &str = r#"
local last = redis.call('HGET', KEYS[2], 'settle')
if last and tonumber(last) >= tonumber(ARGV[1]) then
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return 0
end
redis.call('HSET', KEYS[2], 'settle', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"#;

/// Claims a token id in a cluster (step 1 of a redemption: see the module documentation).
/// KEYS[1] = the claim; ARGV = the claim's record, expire-at. Returns the claim's record:
/// the one given when claimed now, else the first one.
const CLAIM_SCRIPT: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner then
  redis.call('SET', KEYS[1], owner, 'KEEPTTL')
  return owner
end
redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2])
return ARGV[1]
"#;

/// Adds a claimed token's credit to its account, once (step 2).
/// KEYS[1] = account record, KEYS[2] = the account's mark for the token;
/// ARGV = nanos, expire-at. Returns the mark: `other` (credited, the owner not told yet)
/// or `owner` (the owner was told).
/// The credit comes before the mark: a credit refused (overflow) writes nothing.
const CREDIT_SCRIPT: &str = r#"
local mark = redis.call('GET', KEYS[2])
if not mark then
  redis.call('HINCRBY', KEYS[1], 'credited', ARGV[1])
  redis.call('SET', KEYS[2], 'other', 'EXAT', ARGV[2])
  return 'other'
end
redis.call('SET', KEYS[2], mark, 'KEEPTTL')
return mark
"#;

/// Tells the owner of a credited token, once (step 3): the mark becomes `owner`.
/// KEYS[1] = the account's mark for the token. Returns 1 when the owner is told now.
const TELL_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == 'other' then
  redis.call('SET', KEYS[1], 'owner', 'KEEPTTL')
  return 1
end
return 0
"#;

/// The longest a ledger write waits for its replicas (see the module documentation).
pub const WAIT_MS: u64 = 1000;

/// The error of a ledger write that `got` of `want` replicas acknowledged in [`WAIT_MS`]:
/// it may have run, so it is retried as a write whose answer was lost.
pub fn not_replicated(got: i64, want: usize) -> LedgerError {
    LedgerError::Backend(BackendError::Lost(format!(
        "ledger write acknowledged by {got} of {want} replicas in {WAIT_MS} ms; try again"
    )))
}

/// Takes back a claim whose credit Redis refused, if it is still the one given.
/// KEYS[1] = the claim; ARGV[1] = the claim's record.
const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"#;

/// How the ledger's records are named: see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One Redis: the upstream or `PKV_LEDGER_URL`.
    Plain,
    /// A Redis Cluster: each account's records in its slot, each claim in its token's.
    Cluster,
}

impl Layout {
    /// The record of an account.
    pub fn account_key(self, account: &str) -> String {
        match self {
            Layout::Plain => account_key(account),
            Layout::Cluster => format!("pkv:ledger:{{{}}}:acct", escape_account(account)),
        }
    }

    /// Where process `writer`'s last update numbers for `account` are kept.
    fn updates_key(self, writer: &str, account: &str) -> String {
        match self {
            Layout::Plain => format!("pkv:ledger:upd:{writer}:{}", escape_account(account)),
            Layout::Cluster => format!("pkv:ledger:{{{}}}:upd:{writer}", escape_account(account)),
        }
    }

    /// The claim of a token id.
    pub fn token_key(self, jti: &str) -> String {
        match self {
            Layout::Plain => token_key(jti),
            Layout::Cluster => format!("pkv:ledger:jti:{{{jti}}}"),
        }
    }

    /// In a cluster, the mark in `account`'s slot that token `jti`'s credit was added.
    pub fn credit_key(self, account: &str, jti: &str) -> String {
        format!("pkv:ledger:{{{}}}:jti:{jti}", escape_account(account))
    }

    /// The SCAN pattern of account records.
    pub fn accounts_pattern(self) -> &'static str {
        match self {
            Layout::Plain => "pkv:ledger:acct:*",
            Layout::Cluster => "pkv:ledger:{*}:acct",
        }
    }
}

/// The ledger in a Redis (the upstream, or the ledger's own): redemption, leases and
/// settlements are Lua scripts.
///
/// Leases and settlements record their update number in `pkv:ledger:upd:<writer>:<account>`,
/// where `writer` is a random id of this process: one small hash per process and account,
/// kept [`UPDATES_KEPT_SECS`] after its last update.
pub struct RedisBook {
    upstream: Arc<dyn Backend>,
    layout: Layout,
    /// This process among all that share the upstream.
    writer: String,
    /// How many replicas each write waits for (0: none).
    replicas: Arc<AtomicUsize>,
}

impl RedisBook {
    /// The ledger on one Redis ([`Layout::Plain`]).
    pub fn new(upstream: Arc<dyn Backend>) -> Self {
        Self::with_layout(upstream, Layout::Plain)
    }

    /// The ledger in a Redis Cluster ([`Layout::Cluster`]).
    pub fn in_cluster(cluster: Arc<dyn Backend>) -> Self {
        Self::with_layout(cluster, Layout::Cluster)
    }

    fn with_layout(upstream: Arc<dyn Backend>, layout: Layout) -> Self {
        RedisBook {
            upstream,
            layout,
            writer: uuid::Uuid::new_v4().simple().to_string(),
            replicas: Arc::default(),
        }
    }

    /// Each write waits for as many replicas as `replicas` holds when it is sent.
    pub fn waiting_for(mut self, replicas: Arc<AtomicUsize>) -> Self {
        self.replicas = replicas;
        self
    }

    /// Where this process's last update numbers for `account` are kept.
    fn updates_key(&self, account: &str) -> String {
        self.layout.updates_key(&self.writer, account)
    }

    fn account_key(&self, account: &str) -> String {
        self.layout.account_key(account)
    }

    async fn one(&self, cmd: Call) -> Result<Frame, LedgerError> {
        let mut values = self.upstream.pipeline(Proto::Resp2, &[cmd]).await?;
        match values.pop() {
            Some(Frame::Error(line)) => Err(LedgerError::Bad(
                String::from_utf8_lossy(&line).into_owned(),
            )),
            Some(v) => Ok(v),
            None => Err(LedgerError::Bad("no reply".into())),
        }
    }

    /// Runs a ledger write, then `WAIT`s for the replicas on the same connection; the
    /// write's reply, or [`not_replicated`].
    async fn durable(&self, cmd: Call) -> Result<Frame, LedgerError> {
        let want = self.replicas.load(Ordering::Relaxed);
        if want == 0 {
            return self.one(cmd).await;
        }
        let wait = Call::named("WAIT")
            .arg(want.to_string())
            .arg(WAIT_MS.to_string());
        let mut values = self.upstream.pipeline(Proto::Resp2, &[cmd, wait]).await?;
        let acked = values.pop();
        let reply = match values.pop() {
            Some(Frame::Error(line)) => {
                return Err(LedgerError::Bad(
                    String::from_utf8_lossy(&line).into_owned(),
                ))
            }
            Some(v) => v,
            None => return Err(LedgerError::Bad("no reply".into())),
        };
        match acked {
            Some(Frame::Integer(got)) if got >= 0 && got as usize >= want => Ok(reply),
            Some(Frame::Integer(got)) => Err(not_replicated(got, want)),
            _ => Err(not_replicated(0, want)),
        }
    }

    async fn redeem_script(
        &self,
        jti: &str,
        account: &str,
        nanos: i64,
        expire_at: i64,
        by: RedeemedBy,
    ) -> Result<Redemption, LedgerError> {
        if self.layout == Layout::Cluster {
            return self
                .redeem_in_cluster(jti, account, nanos, expire_at, by)
                .await;
        }
        let cmd = Call::named("EVAL")
            .arg(REDEEM_SCRIPT)
            .arg("2")
            .arg(token_key(jti))
            .arg(account_key(account))
            .arg(by.record(account))
            .arg(nanos.to_string())
            .arg(expire_at.to_string());
        match self.durable(cmd).await? {
            Frame::Integer(1) => Ok(Redemption::Credited),
            Frame::Bulk(record) => Ok(Redemption::AlreadyRedeemed {
                by: RedeemedBy::of_record(&record),
            }),
            other => Err(LedgerError::Bad(format!(
                "unexpected redeem reply {other:?}"
            ))),
        }
    }

    /// A redemption in a cluster: the claim, then the credit (see the module documentation).
    async fn redeem_in_cluster(
        &self,
        jti: &str,
        account: &str,
        nanos: i64,
        expire_at: i64,
        by: RedeemedBy,
    ) -> Result<Redemption, LedgerError> {
        let mine = by.record(account);
        let claim_key = self.layout.token_key(jti);
        let claim = Call::named("EVAL")
            .arg(CLAIM_SCRIPT)
            .arg("1")
            .arg(claim_key.clone())
            .arg(mine.clone())
            .arg(expire_at.to_string());
        let record = match self.durable(claim).await? {
            Frame::Bulk(record) => record,
            other => {
                return Err(LedgerError::Bad(format!(
                    "unexpected claim reply {other:?}"
                )))
            }
        };
        let first = RedeemedBy::of_record(&record);
        // The account the claim credits: after the kind (kinds hold no `:`).
        let owner = match record.iter().position(|&b| b == b':') {
            Some(at) => String::from_utf8_lossy(&record[at + 1..]).into_owned(),
            None => return Err(LedgerError::Bad("a token claim names no account".into())),
        };
        let is_owner = record[..] == *mine.as_bytes();
        let mark_key = self.layout.credit_key(&owner, jti);
        let credit = Call::named("EVAL")
            .arg(CREDIT_SCRIPT)
            .arg("2")
            .arg(self.account_key(&owner))
            .arg(mark_key.clone())
            .arg(nanos.to_string())
            .arg(expire_at.to_string());
        let told = match self.durable(credit).await {
            // Credited, and on the replicas: the owner is told, once.
            Ok(Frame::Bulk(mark)) if is_owner && &mark[..] == b"other" => {
                let tell = Call::named("EVAL").arg(TELL_SCRIPT).arg("1").arg(mark_key);
                matches!(self.one(tell).await?, Frame::Integer(1))
            }
            Ok(Frame::Bulk(_)) => false,
            Ok(other) => {
                return Err(LedgerError::Bad(format!(
                    "unexpected credit reply {other:?}"
                )))
            }
            Err(LedgerError::Bad(line)) if is_owner && line.contains("overflow") => {
                // Refused: nothing was credited, and never will be (`credited` only grows),
                // so no other presenter can have completed it; the token stays unredeemed.
                // Any other refusal (the cluster failing over) keeps the claim, for a retry
                // to complete.
                let release = Call::named("EVAL")
                    .arg(RELEASE_SCRIPT)
                    .arg("1")
                    .arg(claim_key)
                    .arg(mine);
                self.one(release).await?;
                return Err(LedgerError::Bad(line));
            }
            Err(e) => return Err(e),
        };
        if told {
            Ok(Redemption::Credited)
        } else {
            Ok(Redemption::AlreadyRedeemed { by: first })
        }
    }

    async fn read_account(&self, account: &str) -> Result<AccountRecord, LedgerError> {
        let mut cmd = Call::named("HMGET").arg(self.account_key(account));
        for field in ACCOUNT_FIELDS {
            cmd = cmd.arg(field);
        }
        let field = |v: Option<&Frame>| -> i64 {
            match v {
                Some(Frame::Bulk(b)) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                _ => 0,
            }
        };
        match self.one(cmd).await? {
            Frame::Array(items) => {
                let f = |i: usize| field(items.get(i));
                let u = |i: usize| f(i).max(0) as u64;
                Ok(AccountRecord {
                    credited: f(0),
                    debited: f(1),
                    spent: f(2),
                    usage: crate::meter::price::Usage {
                        ops: u(3),
                        bytes_in: u(4),
                        bytes_out: u(5),
                        byte_seconds: u(6),
                        time_us: u(7),
                    },
                    default_ttl: u(8),
                })
            }
            other => Err(LedgerError::Bad(format!(
                "unexpected account reply {other:?}"
            ))),
        }
    }

    async fn lease_script(&self, account: &str, req: &LeaseRequest) -> Result<Grant, LedgerError> {
        let cmd = Call::named("EVAL")
            .arg(LEASE_SCRIPT)
            .arg("2")
            .arg(self.account_key(account))
            .arg(self.updates_key(account))
            .arg(req.seq.to_string())
            .arg(req.want.clamp(0, MAX_LEASE).to_string())
            .arg(UPDATES_KEPT_SECS.to_string());
        match self.durable(cmd).await? {
            Frame::Array(items) => {
                let available = match items.get(1) {
                    Some(Frame::Bulk(b)) => {
                        std::str::from_utf8(b).ok().and_then(|s| s.parse().ok())
                    }
                    _ => None,
                };
                Ok(Grant {
                    granted: int_of(items.first()),
                    available,
                })
            }
            other => Err(LedgerError::Bad(format!(
                "unexpected lease reply {other:?}"
            ))),
        }
    }

    async fn settle_script(&self, account: &str, s: &Settlement) -> Result<(), LedgerError> {
        if s.is_empty() {
            return Ok(());
        }
        let mut cmd = Call::named("EVAL")
            .arg(SETTLE_SCRIPT)
            .arg("2")
            .arg(self.account_key(account))
            .arg(self.updates_key(account))
            .arg(s.seq.to_string())
            .arg(UPDATES_KEPT_SECS.to_string());
        for (field, delta) in s.deltas() {
            cmd = cmd.arg(field).arg(delta.to_string());
        }
        // 1: applied now; 0: applied by an earlier attempt whose answer was lost.
        match self.durable(cmd).await? {
            Frame::Integer(0 | 1) => Ok(()),
            other => Err(LedgerError::Bad(format!(
                "unexpected settlement reply {other:?}"
            ))),
        }
    }
}

impl Book for RedisBook {
    fn redeem<'a>(
        &'a self,
        jti: &'a str,
        account: &'a str,
        nanos: i64,
        expire_at: i64,
        by: RedeemedBy,
    ) -> BoxFuture<'a, Result<Redemption, LedgerError>> {
        Box::pin(self.redeem_script(jti, account, nanos, expire_at, by))
    }

    fn account<'a>(
        &'a self,
        account: &'a str,
    ) -> BoxFuture<'a, Result<AccountRecord, LedgerError>> {
        Box::pin(self.read_account(account))
    }

    fn lease<'a>(
        &'a self,
        account: &'a str,
        req: &'a LeaseRequest,
    ) -> BoxFuture<'a, Result<Grant, LedgerError>> {
        Box::pin(self.lease_script(account, req))
    }

    fn settle<'a>(
        &'a self,
        account: &'a str,
        s: &'a Settlement,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(self.settle_script(account, s))
    }

    fn set_default_ttl<'a>(
        &'a self,
        account: &'a str,
        secs: u64,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        let key = self.account_key(account);
        let cmd = if secs == 0 {
            Call::named("HDEL").arg(key).arg(DEFAULT_TTL_FIELD)
        } else {
            Call::named("HSET")
                .arg(key)
                .arg(DEFAULT_TTL_FIELD)
                .arg(secs.to_string())
        };
        Box::pin(async move { self.one(cmd).await.map(drop) })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), LedgerError>> {
        Box::pin(async move {
            // A key of the ledger's own, under its prefix, that expires by itself.
            let cmd = Call::named("SET")
                .arg(HEALTH_KEY)
                .arg(crate::auth::now_secs().to_string())
                .arg("EX")
                .arg("60");
            self.one(cmd).await.map(|_| ())
        })
    }

    fn top(&self, limit: usize) -> BoxFuture<'_, Result<Vec<crate::accounts::Spender>, String>> {
        Box::pin(crate::accounts::top_in(
            self.upstream.as_ref(),
            self.layout,
            limit,
        ))
    }
}

/// The key `/readyz` writes to check that the ledger takes writes.
pub const HEALTH_KEY: &str = "pkv:ledger:health";

/// An integer reply (or a bulk string holding one); 0 for nil.
fn int_of(value: Option<&Frame>) -> i64 {
    match value {
        Some(Frame::Integer(n)) => *n,
        Some(Frame::Bulk(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::cluster::slot::key_slot;

    /// Every record of one account is in one slot, the slot of its escaped id, whatever
    /// the id holds (braces included); a claim is in its token id's slot; and no ledger
    /// key is a tenant key.
    #[test]
    fn an_accounts_cluster_records_share_its_slot() {
        let layout = Layout::Cluster;
        for account in [
            "alice",
            "a{b}c",
            "}{",
            "did:key:z6M",
            "é ü",
            "x".repeat(256).as_str(),
        ] {
            let slot = key_slot(escape_account(account).as_bytes());
            let keys = [
                layout.account_key(account),
                layout.updates_key("0123abcd", account),
                layout.credit_key(account, "jti-1"),
                layout.credit_key(account, "j}{ti"),
            ];
            for key in &keys {
                assert_eq!(key_slot(key.as_bytes()), slot, "{key}");
                assert!(key.starts_with("pkv:ledger:"), "{key}");
                assert!(!key.starts_with(crate::namespace::TENANT_ROOT), "{key}");
            }
        }
        for jti in ["0f9c2a", "with:colon"] {
            let key = layout.token_key(jti);
            assert_eq!(key_slot(key.as_bytes()), key_slot(jti.as_bytes()), "{key}");
        }
        // The one-Redis layout is the one existing ledgers have.
        assert_eq!(Layout::Plain.account_key("alice"), "pkv:ledger:acct:alice");
        assert_eq!(Layout::Plain.token_key("j"), "pkv:ledger:jti:j");
        assert_eq!(
            Layout::Plain.updates_key("w", "alice"),
            "pkv:ledger:upd:w:alice"
        );
    }
}
