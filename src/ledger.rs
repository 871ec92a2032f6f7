//! The ledger: which quota tokens were redeemed, and each account's credit.
//!
//! It lives in the backend under `pkv:ledger:`, a prefix no tenant key can have: in the
//! upstream Redis ([`RedisBook`]), where every pkv process sharing the upstream shares it, or
//! in the embedded store ([`crate::embedded`]), where snapshots keep it with the data.
//! Redemption is one atomic step: the token id is claimed and the credit added together, so
//! a token is credited exactly once however many connections or processes present it at
//! once.
//!
//! Amounts are integers in nano-units (10^-9 of a unit).

use std::sync::Arc;

use dashmap::DashMap;
use redis::Value;

use crate::backend::{BackendError, BoxFuture};
use crate::namespace::escape_account;
use crate::protocol::Proto;
use crate::upstream::Upstream;

/// Nano-units in one unit.
pub const NANOS_PER_UNIT: i64 = 1_000_000_000;

/// Credits an account and claims a token id, or reports who claimed it first.
/// KEYS[1] = token record, KEYS[2] = account record; ARGV = account, nanos, expire-at.
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

/// What a process settles into an account record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settlement {
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
}

/// The outcome of presenting a quota token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// First use: the quantity was credited to `account`.
    Credited { account: Arc<str> },
    /// Used before: nothing credited; the token belongs to `account`.
    AlreadyRedeemed { account: Arc<str> },
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
    /// Credits `nanos` to `account` and claims token `jti` in one step, unless the token
    /// was claimed before. The claim is kept until `expire_at` (seconds since the epoch).
    fn redeem<'a>(
        &'a self,
        jti: &'a str,
        account: &'a str,
        nanos: i64,
        expire_at: i64,
    ) -> BoxFuture<'a, Result<Redemption, LedgerError>>;

    /// An account's totals.
    fn account<'a>(&'a self, account: &'a str)
        -> BoxFuture<'a, Result<AccountRecord, LedgerError>>;

    /// Takes a lease of up to `want` nano-units from the account's available credit
    /// (credited - debited); returns what was granted. The sum of grants never exceeds
    /// the credit.
    fn lease<'a>(&'a self, account: &'a str, want: i64) -> BoxFuture<'a, Result<i64, LedgerError>>;

    /// Adds spending and usage to an account and gives back lease, in one atomic step.
    fn settle<'a>(
        &'a self,
        account: &'a str,
        s: &'a Settlement,
    ) -> BoxFuture<'a, Result<(), LedgerError>>;
}

/// The shared ledger: a [`Book`], and the token ids this process has seen redeemed.
pub struct Ledger {
    book: Arc<dyn Book>,
    /// Token ids this process has seen redeemed, so repeated AUTHs cost no round trip.
    redeemed: DashMap<String, Arc<str>>,
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
        }
    }

    /// Redeems token `jti` worth `quantity` units into `account`, once. The token record is
    /// kept until `expire_at` (seconds since the epoch), after which the token is expired
    /// anyway and cannot be presented again.
    pub async fn redeem(
        &self,
        jti: &str,
        account: &str,
        quantity: i64,
        expire_at: i64,
    ) -> Result<Redemption, LedgerError> {
        if let Some(owner) = self.redeemed.get(jti) {
            return Ok(Redemption::AlreadyRedeemed {
                account: owner.clone(),
            });
        }
        let nanos = quantity
            .checked_mul(NANOS_PER_UNIT)
            .ok_or(LedgerError::Overflow)?;
        let outcome = self.book.redeem(jti, account, nanos, expire_at).await?;
        let owner = match &outcome {
            Redemption::Credited { account } | Redemption::AlreadyRedeemed { account } => {
                account.clone()
            }
        };
        self.redeemed.insert(jti.to_owned(), owner);
        Ok(outcome)
    }

    /// An account's totals.
    pub async fn account(&self, account: &str) -> Result<AccountRecord, LedgerError> {
        self.book.account(account).await
    }

    /// See [`Book::lease`].
    pub async fn lease(&self, account: &str, want: i64) -> Result<i64, LedgerError> {
        self.book.lease(account, want).await
    }

    /// See [`Book::settle`].
    pub async fn settle(&self, account: &str, s: &Settlement) -> Result<(), LedgerError> {
        self.book.settle(account, s).await
    }
}

/// The ledger in the upstream Redis: redemption is a Lua script, leases and settlements
/// are MULTI blocks.
pub struct RedisBook {
    upstream: Arc<Upstream>,
}

impl RedisBook {
    pub fn new(upstream: Arc<Upstream>) -> Self {
        RedisBook { upstream }
    }

    async fn one(&self, cmd: redis::Cmd) -> Result<Value, LedgerError> {
        let mut pipe = redis::pipe();
        pipe.add_command(cmd);
        let mut values = self.upstream.send(Proto::Resp2, &pipe, 1).await?;
        match values.pop() {
            Some(Value::ServerError(e)) => Err(LedgerError::Bad(format!(
                "{} {}",
                e.code(),
                e.details().unwrap_or("")
            ))),
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
    ) -> Result<Redemption, LedgerError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(REDEEM_SCRIPT)
            .arg(2)
            .arg(token_key(jti))
            .arg(account_key(account));
        cmd.arg(account).arg(nanos).arg(expire_at);
        match self.one(cmd).await? {
            Value::Int(1) => Ok(Redemption::Credited {
                account: account.into(),
            }),
            Value::BulkString(owner) => Ok(Redemption::AlreadyRedeemed {
                account: String::from_utf8_lossy(&owner).into_owned().into(),
            }),
            other => Err(LedgerError::Bad(format!(
                "unexpected redeem reply {other:?}"
            ))),
        }
    }

    async fn read_account(&self, account: &str) -> Result<AccountRecord, LedgerError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(account_key(account)).arg(&ACCOUNT_FIELDS[..]);
        let field = |v: Option<&Value>| -> i64 {
            match v {
                Some(Value::BulkString(b)) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                _ => 0,
            }
        };
        match self.one(cmd).await? {
            Value::Array(items) => {
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

    /// The lease is taken optimistically, in integers: `debited` grows by `want` and, in
    /// the same transaction, `credited` is read. Whatever took `debited` past `credited` is
    /// given back. Concurrent leases from several processes can each see the others'
    /// optimistic part, so under contention a grant may come out smaller than it could
    /// have been, never larger: the sum of grants never exceeds the credit.
    async fn take_lease(&self, account: &str, want: i64) -> Result<i64, LedgerError> {
        let key = account_key(account);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HINCRBY")
            .arg(&key)
            .arg("debited")
            .arg(want)
            .cmd("HGET")
            .arg(&key)
            .arg("credited");
        let values = self.upstream.send(Proto::Resp2, &pipe, 4).await?;
        let (debited, credited) = match values.last() {
            Some(Value::Array(items)) => (int_of(items.first()), int_of(items.get(1))),
            other => {
                return Err(LedgerError::Bad(format!(
                    "unexpected lease reply {other:?}"
                )))
            }
        };
        let excess = debited.saturating_sub(credited).clamp(0, want);
        if excess > 0 {
            let mut back = redis::cmd("HINCRBY");
            back.arg(&key).arg("debited").arg(-excess);
            self.one(back).await?;
        }
        Ok(want - excess)
    }

    async fn settle_multi(&self, account: &str, s: &Settlement) -> Result<(), LedgerError> {
        let key = account_key(account);
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut count = 0;
        for (field, delta) in s.deltas() {
            pipe.cmd("HINCRBY").arg(&key).arg(field).arg(delta);
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        // MULTI + commands + EXEC: one reply per command, the last being EXEC's array.
        let values = self.upstream.send(Proto::Resp2, &pipe, count + 2).await?;
        match values.last() {
            Some(Value::Array(_)) => Ok(()),
            other => Err(LedgerError::Bad(format!(
                "settlement not applied: {other:?}"
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
    ) -> BoxFuture<'a, Result<Redemption, LedgerError>> {
        Box::pin(self.redeem_script(jti, account, nanos, expire_at))
    }

    fn account<'a>(
        &'a self,
        account: &'a str,
    ) -> BoxFuture<'a, Result<AccountRecord, LedgerError>> {
        Box::pin(self.read_account(account))
    }

    fn lease<'a>(&'a self, account: &'a str, want: i64) -> BoxFuture<'a, Result<i64, LedgerError>> {
        Box::pin(self.take_lease(account, want))
    }

    fn settle<'a>(
        &'a self,
        account: &'a str,
        s: &'a Settlement,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(self.settle_multi(account, s))
    }
}

/// An integer reply (or a bulk string holding one); 0 for nil.
fn int_of(value: Option<&Value>) -> i64 {
    match value {
        Some(Value::Int(n)) => *n,
        Some(Value::BulkString(b)) => std::str::from_utf8(b)
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
    fn nanos_format_exactly() {
        assert_eq!(format_nanos(1_500_000_000), "1.500000000");
        assert_eq!(format_nanos(-1), "-0.000000001");
        assert_eq!(format_nanos(0), "0.000000000");
        assert_eq!(format_nanos(i64::MIN), "-9223372036.854775808");
    }
}
