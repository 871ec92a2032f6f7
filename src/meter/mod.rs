//! Metering: what each command costs, and paying for it from the account's balance without
//! an upstream round trip per command.
//!
//! Each pkv process holds, per account it serves, a *lease*: nano-units reserved from the
//! shared ledger (`debited` there). Commands are admitted and paid from the lease in
//! memory. A background task settles spending and usage counters into the ledger every
//! [`SETTLE_EVERY`]; when an account's last connection closes, and at shutdown, the unspent
//! lease is given back.
//!
//! Admission ([`Meter::admit`]) reserves what is known before the command runs (one op,
//! the request bytes, the storage bound) plus an allowance for its reply, and refuses when
//! the lease and the ledger together cannot cover it. After the command, [`Meter::charge`]
//! replaces that reservation with the exact cost.
//!
//! Ledger updates are exactly-once (see [`crate::ledger`]): a lease request or settlement
//! whose answer is lost (the upstream stalled past its timeout) is kept as it is, with its
//! update number, and sent again before anything newer of its kind; it is never merged into
//! newer amounts nor put back into the lease, since the upstream may have applied it.
//!
//! Bounds (see `docs/metering.md`): across processes nothing is spent that was not leased,
//! so the overspend is at most the after-costs of commands in flight beyond their
//! allowance. A process killed with -9 loses its unspent leases (at most the lease size per
//! account) and its unsettled counters (what it spent in the last [`SETTLE_EVERY`] is then
//! missing from the counters, though not from the balance).

pub mod price;
pub mod storage;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::ledger::{Grant, LeaseRequest, Ledger, LedgerError, Settlement};
pub use price::{Price, Prices, Usage};

/// How often usage is settled into the ledger.
pub const SETTLE_EVERY: Duration = Duration::from_secs(1);

/// Reply bytes and upstream time every admission sets aside for the command's reply, so
/// that concurrent commands cannot together drive the balance far below zero.
pub const REPLY_ALLOWANCE: Usage = Usage {
    ops: 0,
    bytes_in: 0,
    bytes_out: 256,
    byte_seconds: 0,
    time_us: 2_000,
};

/// Metering settings.
#[derive(Debug, Clone)]
pub struct MeterConfig {
    pub enabled: bool,
    pub prices: Prices,
    /// Nano-units a process leases at a time per account.
    pub lease: i64,
}

/// One account's metering state in this process. Sessions hold it directly (see
/// [`Meter::attach`]), and every field on the command path is an atomic: admitting and
/// paying for a command takes no lock and no map lookup.
pub struct AccountMeter {
    id: Arc<str>,
    /// Lease left to spend, nano-units (may be negative after after-costs).
    lease: AtomicI64,
    /// Spent since the last settlement, nano-units.
    spent: AtomicI64,
    /// Usage since the last settlement.
    ops: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    byte_seconds: AtomicU64,
    time_us: AtomicU64,
    /// Sessions of this account open in this process.
    sessions: AtomicUsize,
    /// One lease request at a time; holds a request whose answer was lost, to be sent
    /// again before any new one.
    leasing: tokio::sync::Mutex<Option<LeaseRequest>>,
    /// One settlement at a time, so a reader who settles sees every earlier settlement
    /// written; holds a settlement whose answer was lost, to be sent again, as it is,
    /// before any newer spending.
    settling: tokio::sync::Mutex<Option<Settlement>>,
    /// A background top-up of the lease is under way.
    topping_up: AtomicBool,
    /// The ledger had nothing left to lease at this time; no background top-ups for a while.
    dry_since: Mutex<Option<Instant>>,
}

impl AccountMeter {
    fn new(id: Arc<str>) -> Self {
        AccountMeter {
            id,
            lease: AtomicI64::new(0),
            spent: AtomicI64::new(0),
            ops: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            byte_seconds: AtomicU64::new(0),
            time_us: AtomicU64::new(0),
            sessions: AtomicUsize::new(0),
            leasing: tokio::sync::Mutex::new(None),
            settling: tokio::sync::Mutex::new(None),
            topping_up: AtomicBool::new(false),
            dry_since: Mutex::new(None),
        }
    }

    /// Takes `need` from the lease if it covers it (and is above zero).
    fn take(&self, need: i64) -> Option<Admitted> {
        let mut current = self.lease.load(Ordering::Acquire);
        loop {
            if current <= 0 || current < need {
                return None;
            }
            match self.lease.compare_exchange_weak(
                current,
                current - need,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Admitted { reserved: need }),
                Err(now) => current = now,
            }
        }
    }

    fn record(&self, usage: &Usage) {
        let add = |counter: &AtomicU64, n: u64| {
            if n != 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&self.ops, usage.ops);
        add(&self.bytes_in, usage.bytes_in);
        add(&self.bytes_out, usage.bytes_out);
        add(&self.byte_seconds, usage.byte_seconds);
        add(&self.time_us, usage.time_us);
    }

    /// Takes everything unsettled (and the lease, with `release`), as update `seq`.
    fn take_settlement(&self, seq: u64, release: bool) -> Settlement {
        let take = |counter: &AtomicU64| counter.swap(0, Ordering::AcqRel);
        Settlement {
            seq,
            spent: self.spent.swap(0, Ordering::AcqRel),
            returned: if release {
                self.lease.swap(0, Ordering::AcqRel)
            } else {
                0
            },
            usage: Usage {
                ops: take(&self.ops),
                bytes_in: take(&self.bytes_in),
                bytes_out: take(&self.bytes_out),
                byte_seconds: take(&self.byte_seconds),
                time_us: take(&self.time_us),
            },
        }
    }

    /// Nothing to settle, nothing owed by the ledger, no session: safe to forget.
    fn is_idle(&self) -> bool {
        let nothing_unanswered = self.leasing.try_lock().is_ok_and(|lost| lost.is_none())
            && self
                .settling
                .try_lock()
                .is_ok_and(|unsent| unsent.is_none());
        self.sessions.load(Ordering::Acquire) == 0
            && self.lease.load(Ordering::Acquire) == 0
            && self.spent.load(Ordering::Acquire) == 0
            && self.ops.load(Ordering::Acquire) == 0
            && nothing_unanswered
    }
}

/// Charges a session has accumulated but not yet added to its account.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Charges {
    /// Reservations given back minus costs, nano-units.
    lease: i64,
    spent: i64,
    usage: Usage,
}

impl Charges {
    pub fn is_empty(&self) -> bool {
        *self == Charges::default()
    }
}

/// A session's handle on its account's meter.
pub type AccountHandle = Arc<AccountMeter>;

/// Why a command was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The balance cannot pay; carries what is left, in nano-units.
    NoQuota { balance: i64 },
    /// The ledger could not be reached to extend the lease.
    Ledger(String),
}

/// A reservation made by [`Meter::admit`], replaced by the real cost in [`Meter::charge`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admitted {
    reserved: i64,
}

/// The process's meter.
pub struct Meter {
    config: MeterConfig,
    ledger: Arc<Ledger>,
    accounts: DashMap<Arc<str>, AccountHandle>,
}

impl Meter {
    pub fn new(config: MeterConfig, ledger: Arc<Ledger>) -> Self {
        Meter {
            config,
            ledger,
            accounts: DashMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    pub fn prices(&self) -> &Prices {
        &self.config.prices
    }

    fn account(&self, id: &Arc<str>) -> AccountHandle {
        if let Some(a) = self.accounts.get(id) {
            return a.clone();
        }
        self.accounts
            .entry(id.clone())
            .or_insert_with(|| Arc::new(AccountMeter::new(id.clone())))
            .clone()
    }

    /// A session of `account` opened; returns the handle it meters through.
    pub fn attach(&self, account: &Arc<str>) -> AccountHandle {
        let handle = self.account(account);
        handle.sessions.fetch_add(1, Ordering::AcqRel);
        handle
    }

    /// A session closed; the account's last session gives the lease back.
    pub async fn detach(&self, handle: &AccountHandle) {
        if handle.sessions.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.release(handle).await;
        }
    }

    /// What admitting a command reserves: its known usage, its storage bound and the reply
    /// allowance, priced.
    pub fn need(&self, known: &Usage, storage_bound: u64) -> i64 {
        let mut need_usage = *known;
        need_usage.add(&REPLY_ALLOWANCE);
        need_usage.byte_seconds = need_usage.byte_seconds.saturating_add(storage_bound);
        i64::try_from(self.config.prices.cost(&need_usage)).unwrap_or(i64::MAX)
    }

    /// Admits from the lease in memory when it covers `need`; the command path.
    pub fn try_admit(self: &Arc<Self>, acct: &AccountHandle, need: i64) -> Option<Admitted> {
        if !self.config.enabled {
            return Some(Admitted::default());
        }
        let admitted = acct.take(need)?;
        self.top_up_if_low(acct);
        Some(admitted)
    }

    /// Admits after extending the lease from the ledger: the path when the lease ran short.
    pub async fn admit(
        self: &Arc<Self>,
        acct: &AccountHandle,
        need: i64,
    ) -> Result<Admitted, Refusal> {
        if let Some(ok) = self.try_admit(acct, need) {
            return Ok(ok);
        }
        let mut lost = acct.leasing.lock().await;
        loop {
            if let Some(ok) = acct.take(need) {
                return Ok(ok);
            }
            // A request answered now after its answer was lost: what it got may be enough.
            let retry = lost.is_some();
            // Ask for what is missing: the lease in hand can be below zero when commands
            // cost more than they reserved (a slow round trip), and a grant of `need` alone
            // would then still fall short of it.
            let have = acct.lease.load(Ordering::Acquire);
            let want = self.config.lease.max(need.saturating_sub(have));
            self.lease_more(acct, &mut lost, want)
                .await
                .map_err(|e: LedgerError| Refusal::Ledger(e.to_string()))?;
            if !retry {
                return acct.take(need).ok_or_else(|| Refusal::NoQuota {
                    balance: acct.lease.load(Ordering::Acquire),
                });
            }
        }
    }

    /// Adds a lease of `want` to the account, the caller holding `acct.leasing` (whose
    /// contents are `lost`). A request whose answer was lost before is sent again first,
    /// as it was, and its grant is what this returns: the caller then decides again what
    /// it needs. Until a request is answered it stays in `lost`, also when this future is
    /// dropped.
    async fn lease_more(
        &self,
        acct: &AccountMeter,
        lost: &mut Option<LeaseRequest>,
        want: i64,
    ) -> Result<Grant, LedgerError> {
        let req = match *lost {
            Some(req) => req,
            None => {
                let req = LeaseRequest {
                    seq: self.ledger.next_seq(),
                    want,
                };
                *lost = Some(req);
                req
            }
        };
        let grant = self.ledger.lease(&acct.id, &req).await?;
        *lost = None;
        acct.lease.fetch_add(grant.granted, Ordering::AcqRel);
        Ok(grant)
    }

    /// Below half a lease, takes the next one in the background, so that admissions do not
    /// wait for the ledger while the balance lasts.
    fn top_up_if_low(self: &Arc<Self>, acct: &AccountHandle) {
        let low = acct.lease.load(Ordering::Relaxed) < self.config.lease / 2;
        if !low || acct.topping_up.swap(true, Ordering::AcqRel) {
            return;
        }
        let dry = acct
            .dry_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < SETTLE_EVERY);
        if dry {
            acct.topping_up.store(false, Ordering::Release);
            return;
        }
        let (meter, acct) = (self.clone(), acct.clone());
        tokio::spawn(async move {
            let mut lost = acct.leasing.lock().await;
            if acct.lease.load(Ordering::Acquire) < meter.config.lease / 2 {
                match meter.lease_more(&acct, &mut lost, meter.config.lease).await {
                    Ok(Grant { granted: 0, .. }) => {
                        *acct.dry_since.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(Instant::now())
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(account = %acct.id, error = %e, "lease top-up failed"),
                }
            }
            acct.topping_up.store(false, Ordering::Release);
        });
    }

    /// Pays for a command that ran (`usage` is everything it used), into `charges`, which
    /// [`Meter::apply`] later adds to the account: one update per batch rather than per
    /// command. Returns the command's cost.
    pub fn charge(&self, charges: &mut Charges, admitted: Admitted, usage: &Usage) -> u64 {
        if !self.config.enabled {
            return 0;
        }
        let cost = self.config.prices.cost(usage);
        let cost = i64::try_from(cost).unwrap_or(i64::MAX);
        charges.lease = charges.lease.saturating_add(admitted.reserved - cost);
        charges.spent = charges.spent.saturating_add(cost);
        charges.usage.add(usage);
        cost as u64
    }

    /// Gives back, into `charges`, the reservation of a command that did not run.
    pub fn cancel(&self, charges: &mut Charges, admitted: Admitted) {
        charges.lease = charges.lease.saturating_add(admitted.reserved);
    }

    /// Adds accumulated charges to the account and clears them.
    pub fn apply(&self, acct: &AccountHandle, charges: &mut Charges) {
        let c = std::mem::take(charges);
        if c.lease != 0 {
            acct.lease.fetch_add(c.lease, Ordering::AcqRel);
        }
        if c.spent != 0 {
            acct.spent.fetch_add(c.spent, Ordering::AcqRel);
        }
        acct.record(&c.usage);
    }

    /// Moves spending and counters into the ledger, keeping the lease (or giving it back
    /// with `release`). A settlement whose answer was lost goes first, as it was.
    async fn settle_one(&self, acct: &AccountHandle, release: bool) -> Result<(), LedgerError> {
        // Giving the lease back waits for a top-up in flight, so none lands after it, and
        // first learns what a lease request whose answer was lost was granted, so that it
        // goes back too.
        let _no_top_up = if release {
            let mut lost = acct.leasing.lock().await;
            if lost.is_some() {
                self.lease_more(acct, &mut lost, 0).await?;
            }
            Some(lost)
        } else {
            None
        };
        let mut unsent = acct.settling.lock().await;
        if let Some(earlier) = unsent.as_ref() {
            self.ledger.settle(&acct.id, earlier).await?;
            *unsent = None;
        }
        let settlement = acct.take_settlement(self.ledger.next_seq(), release);
        if settlement.is_empty() {
            return Ok(());
        }
        // Kept until answered, also if this future is dropped: the upstream may apply it
        // even when pkv stops waiting, so it is sent again as it is, never merged or undone.
        let settlement = unsent.insert(settlement);
        self.ledger.settle(&acct.id, settlement).await?;
        *unsent = None;
        Ok(())
    }

    /// Settles an account and gives its lease back (`PKV.BALANCE`, last disconnect).
    pub async fn release(&self, acct: &AccountHandle) -> Result<(), LedgerError> {
        self.settle_one(acct, true).await
    }

    /// Settles every account; with `release`, gives every lease back (shutdown). An account
    /// with no session left gives its lease back anyway: its last session's attempt may
    /// have failed.
    pub async fn settle_all(&self, release: bool) {
        let accounts: Vec<AccountHandle> =
            self.accounts.iter().map(|e| e.value().clone()).collect();
        for acct in accounts {
            let release = release || acct.sessions.load(Ordering::Acquire) == 0;
            if let Err(e) = self.settle_one(&acct, release).await {
                tracing::warn!(account = %acct.id, error = %e, "settlement failed; will retry");
            }
        }
        // Forget idle accounts with nothing left to settle.
        self.accounts.retain(|_, a| !a.is_idle());
    }

    /// Settles every [`SETTLE_EVERY`] until dropped.
    pub async fn settle_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SETTLE_EVERY);
        loop {
            tick.tick().await;
            self.settle_all(false).await;
        }
    }
}
