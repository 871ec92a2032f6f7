//! The ledger: which quota tokens were redeemed, and each account's credit.
//!
//! It lives in the backend under `pkv:ledger:`, a prefix no tenant key can have: in the
//! upstream Redis ([`RedisBook`]), where every pkv process sharing the upstream shares it
//! (or in a Redis of its own, `PKV_LEDGER_URL`, out of reach of the data's eviction: see
//! [`crate::upstream::eviction`]), or in the embedded store ([`crate::embedded`]), where
//! snapshots keep it with the data.
//! Redemption is one atomic step: the token id is claimed and the credit added together, so
//! a token is credited exactly once however many connections or processes present it at
//! once. The claim records how the token was redeemed ([`RedeemedBy`]): a token spent on a
//! top-up must never authenticate afterwards, on any process sharing the ledger.
//!
//! Amounts are integers in nano-units (10^-9 of a unit).
//!
//! Leases and settlements are applied exactly once, even when the upstream answers after
//! pkv stopped waiting: each carries an update number ([`LeaseRequest::seq`],
//! [`Settlement::seq`]) from one counter of the process, a retry carries the same number,
//! and the upstream keeps, per process and account, the last number it applied (see
//! [`RedisBook`]). A process sends an account's next update of a kind only once the last
//! one was answered, so the numbers arrive in order and "at most the last applied" is all
//! the upstream needs to remember.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::commands::Call;
use crate::protocol::frame::Frame;
use dashmap::DashMap;

use crate::backend::{BackendError, BoxFuture};
use crate::namespace::escape_account;
use crate::protocol::Proto;
use crate::upstream::Upstream;

/// Nano-units in one unit.
pub const NANOS_PER_UNIT: i64 = 1_000_000_000;

/// Credits an account and claims a token id, or returns the record of the first claim.
/// KEYS[1] = token record, KEYS[2] = account record; ARGV = token record value (see
/// [`RedeemedBy::record`]), nanos, expire-at.
/// The credit comes first: if it fails (the balance would overflow), the script stops
/// before anything is written, and the token stays unredeemed.
const REDEEM_SCRIPT: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner then
  return owner
end
redis.call('HINCRBY', KEYS[2], 'credited', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[3])
return 1
"#;

/// How long the upstream remembers the last update a process applied to an account, in
/// seconds: a retry later than this after its first attempt would be applied again. Retries
/// come every second while the upstream is unreachable, so this only matters when an
/// update's first attempt reaches the upstream a day before any answer comes back.
pub const UPDATES_KEPT_SECS: u64 = 86_400;

/// The largest lease asked for at once (2^53 - 1 nano-units, about 9 million units): the
/// lease script compares amounts as Lua numbers, which are exact below 2^53.
pub const MAX_LEASE: i64 = (1 << 53) - 1;

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
  return 0
end
redis.call('HSET', KEYS[2], 'settle', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"#;

/// A request for a lease: how much, and its update number. A request whose answer was lost
/// is sent again as it is, and is granted what it was granted the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRequest {
    pub seq: u64,
    pub want: i64,
}

/// What a lease request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Nano-units granted: `want`, or less when the account's credit ran out.
    pub granted: i64,
    /// The account's credit left in the ledger after the grant (credited - debited), when
    /// known (not for a repeated request).
    pub available: Option<i64>,
}

/// What a process settles into an account record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settlement {
    /// The update number; a settlement is retried with the same number and contents.
    pub seq: u64,
    /// Nano-units actually spent since the last settlement.
    pub spent: i64,
    /// Lease given back (negative when the process overspent its lease).
    pub returned: i64,
    pub usage: crate::meter::price::Usage,
}

impl Settlement {
    /// What the settlement adds to each field of the account record, zeros left out.
    pub fn deltas(&self) -> impl Iterator<Item = (&'static str, i64)> {
        [
            ("spent", self.spent),
            ("debited", -self.returned),
            ("ops", self.usage.ops as i64),
            ("bytes_in", self.usage.bytes_in as i64),
            ("bytes_out", self.usage.bytes_out as i64),
            ("byte_seconds", self.usage.byte_seconds as i64),
            ("time_us", self.usage.time_us as i64),
        ]
        .into_iter()
        .filter(|(_, delta)| *delta != 0)
    }

    /// True when it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.deltas().next().is_none()
    }
}

/// How a quota token was redeemed, which decides what it can do afterwards (SPEC 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemedBy {
    /// By `AUTH`: later `AUTH`s with the token attach to its own account.
    Auth,
    /// By `PKV.TOPUP`: the token is spent; it never authenticates again, so a copy of a
    /// voucher cannot open the account it was given to.
    Topup,
}

impl RedeemedBy {
    /// The token record's value: the kind, then the account credited (for operators; pkv
    /// never attaches a session to it).
    pub(crate) fn record(self, account: &str) -> String {
        match self {
            RedeemedBy::Auth => format!("auth:{account}"),
            RedeemedBy::Topup => format!("topup:{account}"),
        }
    }

    /// The kind of a token record. A record written before kinds were recorded holds only
    /// an account id and counts as `Auth`: that can only let the token open its own
    /// account, which `AUTH` would have done anyway.
    pub(crate) fn of_record(value: &[u8]) -> RedeemedBy {
        if value.starts_with(b"topup:") {
            RedeemedBy::Topup
        } else {
            RedeemedBy::Auth
        }
    }
}

/// The outcome of presenting a quota token. It names no account: a session attaches to
/// the account its own token names, never to whoever redeemed the token first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redemption {
    /// First use: the quantity was credited.
    Credited,
    /// Used before: nothing credited.
    AlreadyRedeemed { by: RedeemedBy },
}

/// Why the ledger could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    #[error("{0}")]
    Backend(#[from] BackendError),
    #[error("ERR ledger: {0}")]
    Bad(String),
    #[error("ERR quantity too large")]
    Overflow,
}

/// An account's totals, as the ledger holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountRecord {
    /// Everything credited, in nano-units.
    pub credited: i64,
    /// Everything taken by leases, net of what was given back, in nano-units.
    pub debited: i64,
    /// Everything spent (settled), in nano-units.
    pub spent: i64,
    pub usage: crate::meter::price::Usage,
}

/// The fields of an account record, in the order [`Ledger::account`] reads them.
pub(crate) const ACCOUNT_FIELDS: [&str; 8] = [
    "credited",
    "debited",
    "spent",
    "ops",
    "bytes_in",
    "bytes_out",
    "byte_seconds",
    "time_us",
];

/// Where the ledger's records are kept, and the atomic steps on them.
pub trait Book: Send + Sync {
    /// Credits `nanos` to `account` and claims token `jti` for redemption `by`, in one
    /// step, unless the token was claimed before. The claim is kept until `expire_at`
    /// (seconds since the epoch).
    fn redeem<'a>(
        &'a self,
        jti: &'a str,
        account: &'a str,
        nanos: i64,
        expire_at: i64,
        by: RedeemedBy,
    ) -> BoxFuture<'a, Result<Redemption, LedgerError>>;

    /// An account's totals.
    fn account<'a>(&'a self, account: &'a str)
        -> BoxFuture<'a, Result<AccountRecord, LedgerError>>;

    /// Takes a lease of up to `req.want` nano-units from the account's available credit
    /// (credited - debited). The sum of grants never exceeds the credit. A request is
    /// granted once: sent again with the same `seq`, it gets its first grant back.
    fn lease<'a>(
        &'a self,
        account: &'a str,
        req: &'a LeaseRequest,
    ) -> BoxFuture<'a, Result<Grant, LedgerError>>;

    /// Adds spending and usage to an account and gives back lease, in one atomic step,
    /// once: sent again with the same `seq`, it changes nothing.
    fn settle<'a>(
        &'a self,
        account: &'a str,
        s: &'a Settlement,
    ) -> BoxFuture<'a, Result<(), LedgerError>>;
}

/// Token ids remembered before expired ones are swept from [`Ledger`]'s memory.
const REMEMBERED_TOKENS: usize = 100_000;

/// The shared ledger: a [`Book`], and the token ids this process has seen redeemed.
pub struct Ledger {
    book: Arc<dyn Book>,
    /// Token ids this process has seen redeemed, how, and until when the ledger keeps the
    /// record, so repeated AUTHs cost no round trip. A redemption never changes once made.
    redeemed: DashMap<String, (RedeemedBy, i64)>,
    /// The last update number given out; numbers grow for every account.
    updates: AtomicU64,
}

/// The record of a redeemed token id.
pub(crate) fn token_key(jti: &str) -> String {
    format!("pkv:ledger:jti:{jti}")
}

/// The record of an account.
pub(crate) fn account_key(account: &str) -> String {
    format!("pkv:ledger:acct:{}", escape_account(account))
}

impl Ledger {
    pub fn new(book: Arc<dyn Book>) -> Self {
        Ledger {
            book,
            redeemed: DashMap::new(),
            updates: AtomicU64::new(0),
        }
    }

    /// Redeems token `jti` worth `quantity` units into `account` by `by`, once. The token
    /// record is kept until `expire_at` (seconds since the epoch), after which the token is
    /// expired anyway and cannot be presented again.
    pub async fn redeem(
        &self,
        jti: &str,
        account: &str,
        quantity: i64,
        expire_at: i64,
        by: RedeemedBy,
    ) -> Result<Redemption, LedgerError> {
        if let Some(first) = self.redeemed.get(jti) {
            return Ok(Redemption::AlreadyRedeemed { by: first.0 });
        }
        let nanos = quantity
            .checked_mul(NANOS_PER_UNIT)
            .ok_or(LedgerError::Overflow)?;
        let outcome = self.book.redeem(jti, account, nanos, expire_at, by).await?;
        let first = match outcome {
            Redemption::Credited => by,
            Redemption::AlreadyRedeemed { by } => by,
        };
        if self.redeemed.len() >= REMEMBERED_TOKENS {
            let now = crate::auth::now_secs();
            self.redeemed.retain(|_, (_, until)| *until > now);
        }
        self.redeemed.insert(jti.to_owned(), (first, expire_at));
        Ok(outcome)
    }

    /// An account's totals.
    pub async fn account(&self, account: &str) -> Result<AccountRecord, LedgerError> {
        self.book.account(account).await
    }

    /// A new update number, above every one given out before by this process.
    pub fn next_seq(&self) -> u64 {
        self.updates.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// See [`Book::lease`].
    pub async fn lease(&self, account: &str, req: &LeaseRequest) -> Result<Grant, LedgerError> {
        self.book.lease(account, req).await
    }

    /// See [`Book::settle`].
    pub async fn settle(&self, account: &str, s: &Settlement) -> Result<(), LedgerError> {
        self.book.settle(account, s).await
    }
}

/// The ledger in a Redis (the upstream, or the ledger's own): redemption, leases and
/// settlements are Lua scripts.
///
/// Leases and settlements record their update number in `pkv:ledger:upd:<writer>:<account>`,
/// where `writer` is a random id of this process: one small hash per process and account,
/// kept [`UPDATES_KEPT_SECS`] after its last update.
pub struct RedisBook {
    upstream: Arc<Upstream>,
    /// This process among all that share the upstream.
    writer: String,
}

impl RedisBook {
    pub fn new(upstream: Arc<Upstream>) -> Self {
        RedisBook {
            upstream,
            writer: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// Where this process's last update numbers for `account` are kept.
    fn updates_key(&self, account: &str) -> String {
        format!("pkv:ledger:upd:{}:{}", self.writer, escape_account(account))
    }

    async fn one(&self, cmd: Call) -> Result<Frame, LedgerError> {
        let mut values = self.upstream.send(Proto::Resp2, &[cmd]).await?;
        match values.pop() {
            Some(Frame::Error(line)) => Err(LedgerError::Bad(
                String::from_utf8_lossy(&line).into_owned(),
            )),
            Some(v) => Ok(v),
            None => Err(LedgerError::Bad("no reply".into())),
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
        let cmd = Call::named("EVAL")
            .arg(REDEEM_SCRIPT)
            .arg("2")
            .arg(token_key(jti))
            .arg(account_key(account))
            .arg(by.record(account))
            .arg(nanos.to_string())
            .arg(expire_at.to_string());
        match self.one(cmd).await? {
            Frame::Integer(1) => Ok(Redemption::Credited),
            Frame::Bulk(record) => Ok(Redemption::AlreadyRedeemed {
                by: RedeemedBy::of_record(&record),
            }),
            other => Err(LedgerError::Bad(format!(
                "unexpected redeem reply {other:?}"
            ))),
        }
    }

    async fn read_account(&self, account: &str) -> Result<AccountRecord, LedgerError> {
        let mut cmd = Call::named("HMGET").arg(account_key(account));
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
            .arg(account_key(account))
            .arg(self.updates_key(account))
            .arg(req.seq.to_string())
            .arg(req.want.clamp(0, MAX_LEASE).to_string())
            .arg(UPDATES_KEPT_SECS.to_string());
        match self.one(cmd).await? {
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
            .arg(account_key(account))
            .arg(self.updates_key(account))
            .arg(s.seq.to_string())
            .arg(UPDATES_KEPT_SECS.to_string());
        for (field, delta) in s.deltas() {
            cmd = cmd.arg(field).arg(delta.to_string());
        }
        // 1: applied now; 0: applied by an earlier attempt whose answer was lost.
        match self.one(cmd).await? {
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
}

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

/// Formats nano-units as a decimal with 9 fractional digits: `1500000000` → `"1.500000000"`.
pub fn format_nanos(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let abs = nanos.unsigned_abs();
    format!(
        "{sign}{}.{:09}",
        abs / NANOS_PER_UNIT as u64,
        abs % NANOS_PER_UNIT as u64
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_record_says_how_the_token_was_redeemed() {
        for by in [RedeemedBy::Auth, RedeemedBy::Topup] {
            assert_eq!(RedeemedBy::of_record(by.record("acct").as_bytes()), by);
        }
        // An account id that looks like a kind cannot pass for a top-up record's kind.
        assert_eq!(
            RedeemedBy::of_record(RedeemedBy::Auth.record("topup:x").as_bytes()),
            RedeemedBy::Auth
        );
        // Records from before kinds were kept hold just the account.
        assert_eq!(RedeemedBy::of_record(b"j0123abcd"), RedeemedBy::Auth);
    }

    #[test]
    fn nanos_format_exactly() {
        assert_eq!(format_nanos(1_500_000_000), "1.500000000");
        assert_eq!(format_nanos(-1), "-0.000000001");
        assert_eq!(format_nanos(0), "0.000000000");
        assert_eq!(format_nanos(i64::MIN), "-9223372036.854775808");
    }
}
