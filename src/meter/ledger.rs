//! The ledger: which quota tokens were redeemed, and each account's credit.
//!
//! It lives in the backend under `pkv:ledger:`, a prefix no tenant key can have: in the
//! upstream Redis ([`crate::upstream::book::RedisBook`]), where every pkv process sharing it
//! (or in a Redis of its own, `PKV_LEDGER_URL`, out of reach of the data's eviction: see
//! [`crate::upstream::eviction`]), or in the embedded store ([`crate::embedded`]), where
//! snapshots keep it with the data.
//! Redemption is one atomic step: the token id is claimed and the credit added together, so
//! a token is credited exactly once however many connections or processes present it at
//! once. In a Redis Cluster upstream, where the token's claim and the account's record are
//! in different slots, it is two steps that a later presentation completes (see
//! [`crate::upstream::book`]), with the same outcome. The claim records how the token was redeemed ([`RedeemedBy`]): a token spent on a
//! top-up must never authenticate afterwards, on any process sharing the ledger.
//!
//! Amounts are integers in nano-units (10^-9 of a unit).
//!
//! Leases and settlements are applied exactly once, even when the upstream answers after
//! pkv stopped waiting: each carries an update number ([`LeaseRequest::seq`],
//! [`Settlement::seq`]) from one counter of the process, a retry carries the same number,
//! and the upstream keeps, per process and account, the last number it applied (see
//! [`crate::upstream::book::RedisBook`]). A process sends an account's next update of a kind only once the last
//! one was answered, so the numbers arrive in order and "at most the last applied" is all
//! the upstream needs to remember.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::backend::{BackendError, BoxFuture};
use crate::namespace::escape_account;

/// Nano-units in one unit.
pub const NANOS_PER_UNIT: i64 = 1_000_000_000;

/// How long the upstream remembers the last update a process applied to an account, in
/// seconds: a retry later than this after its first attempt would be applied again. Retries
/// come every second while the upstream is unreachable, so this only matters when an
/// update's first attempt reaches the upstream a day before any answer comes back.
pub const UPDATES_KEPT_SECS: u64 = 86_400;

/// The largest lease asked for at once (2^53 - 1 nano-units, about 9 million units): the
/// lease script compares amounts as Lua numbers, which are exact below 2^53.
pub const MAX_LEASE: i64 = (1 << 53) - 1;

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
#[derive(Debug, Clone)]
pub enum LedgerError {
    /// The Redis holding the ledger could not be reached or did not answer.
    Backend(BackendError),
    /// It answered something the ledger's scripts never return.
    Bad(String),
    /// A quantity whose nano-units do not fit in 64 bits.
    Overflow,
}

impl From<BackendError> for LedgerError {
    fn from(err: BackendError) -> Self {
        LedgerError::Backend(err)
    }
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
    /// The account's own default TTL in seconds (`PKV.DEFAULTTTL`); 0 when it has none and
    /// `PKV_DEFAULT_TTL` applies.
    pub default_ttl: u64,
}

/// The record's field holding [`AccountRecord::default_ttl`].
pub(crate) const DEFAULT_TTL_FIELD: &str = "default_ttl";

/// The fields of an account record, in the order [`Ledger::account`] reads them.
pub(crate) const ACCOUNT_FIELDS: [&str; 9] = [
    "credited",
    "debited",
    "spent",
    "ops",
    "bytes_in",
    "bytes_out",
    "byte_seconds",
    "time_us",
    DEFAULT_TTL_FIELD,
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

    /// Sets the account's own default TTL (0: none).
    fn set_default_ttl<'a>(
        &'a self,
        account: &'a str,
        secs: u64,
    ) -> BoxFuture<'a, Result<(), LedgerError>>;

    /// Whether the book takes a write now (`/readyz`). A book in the process (the embedded
    /// store) always does.
    fn check(&self) -> BoxFuture<'_, Result<(), LedgerError>> {
        Box::pin(async { Ok(()) })
    }

    /// The `limit` accounts that spent the most, biggest first (`pkv accounts top`).
    fn top(&self, limit: usize) -> BoxFuture<'_, Result<Vec<crate::accounts::Spender>, String>>;
}

/// Token ids remembered before expired ones are swept from [`Ledger`]'s memory.
const REMEMBERED_TOKENS: usize = 100_000;

/// The shared ledger: a [`Book`], and the token ids this process has seen redeemed.
pub struct Ledger {
    book: Arc<dyn Book>,
    /// Token ids this process has seen redeemed, how, until when the ledger keeps the
    /// record, and for whom the answer holds, so repeated AUTHs cost no round trip. A
    /// redemption never changes once made, but in a cluster the owner of a token whose
    /// credit another presenter completed is still to be told (see
    /// [`crate::upstream::book`]): an `AlreadyRedeemed` is remembered for the account that
    /// presented the token (`Some`), and only once the owner was told (`None`) for all.
    redeemed: DashMap<String, (RedeemedBy, i64, Option<String>)>,
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
            if first
                .2
                .as_deref()
                .is_none_or(|presenter| presenter == account)
            {
                return Ok(Redemption::AlreadyRedeemed { by: first.0 });
            }
        }
        let nanos = quantity
            .checked_mul(NANOS_PER_UNIT)
            .ok_or(LedgerError::Overflow)?;
        let outcome = self.book.redeem(jti, account, nanos, expire_at, by).await?;
        let (first, presenter) = match outcome {
            Redemption::Credited => {
                crate::metrics::process::credited(quantity);
                (by, None)
            }
            Redemption::AlreadyRedeemed { by } => (by, Some(account.to_owned())),
        };
        if self.redeemed.len() >= REMEMBERED_TOKENS {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            self.redeemed.retain(|_, (_, until, _)| *until > now);
        }
        self.redeemed
            .insert(jti.to_owned(), (first, expire_at, presenter));
        Ok(outcome)
    }

    /// Whether the ledger takes a write now (`/readyz`); `Err` says why not.
    pub async fn check(&self) -> Result<(), String> {
        self.book.check().await.map_err(|e| match e {
            LedgerError::Backend(e) => {
                format!("ledger: not writable: {}", crate::metrics::health::why(&e))
            }
            LedgerError::Bad(line) => format!("ledger: not writable: {line}"),
            LedgerError::Overflow => "ledger: not writable".to_owned(),
        })
    }

    /// See [`Book::top`].
    pub async fn top(&self, limit: usize) -> Result<Vec<crate::accounts::Spender>, String> {
        self.book.top(limit).await
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

    /// See [`Book::set_default_ttl`].
    pub async fn set_default_ttl(&self, account: &str, secs: u64) -> Result<(), LedgerError> {
        self.book.set_default_ttl(account, secs).await
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
