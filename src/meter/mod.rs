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
//! Bounds (see `docs/metering.md`): across processes nothing is spent that was not leased,
//! so the overspend is at most the after-costs of commands in flight beyond their
//! allowance. A process killed with -9 loses its unspent leases (at most the lease size per
//! account) and its unsettled counters (what it spent in the last [`SETTLE_EVERY`] is then
//! missing from the counters, though not from the balance).

pub mod price;
pub mod storage;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;

use crate::ledger::{Ledger, LedgerError, Settlement};
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

/// One account's metering state in this process.
#[derive(Default)]
struct AccountState {
    /// Lease left to spend (may be negative after after-costs).
    lease: i64,
    /// Spent since the last settlement, nano-units.
    spent: i64,
    /// Usage since the last settlement.
    usage: Usage,
}

struct Account {
    state: Mutex<AccountState>,
    /// Sessions of this account open in this process.
    sessions: AtomicUsize,
    /// One lease request at a time.
    leasing: tokio::sync::Mutex<()>,
    /// One settlement at a time, so a reader who settles sees every earlier settlement
    /// written.
    settling: tokio::sync::Mutex<()>,
}

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
    accounts: DashMap<Arc<str>, Arc<Account>>,
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

    fn account(&self, id: &Arc<str>) -> Arc<Account> {
        if let Some(a) = self.accounts.get(id) {
            return a.clone();
        }
        self.accounts
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Account {
                    state: Mutex::new(AccountState::default()),
                    sessions: AtomicUsize::new(0),
                    leasing: tokio::sync::Mutex::new(()),
                    settling: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// A session of `account` opened.
    pub fn attach(&self, account: &Arc<str>) {
        self.account(account)
            .sessions
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A session of `account` closed; the last one gives the lease back.
    pub async fn detach(&self, account: &Arc<str>) {
        let acct = self.account(account);
        if acct.sessions.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.release(account).await;
        }
    }

    /// Reserves `known` usage plus the reply allowance from the lease, extending the lease
    /// from the ledger when it runs short.
    pub async fn admit(
        &self,
        account: &Arc<str>,
        known: &Usage,
        storage_bound: u64,
    ) -> Result<Admitted, Refusal> {
        if !self.config.enabled {
            return Ok(Admitted::default());
        }
        let mut need_usage = *known;
        need_usage.add(&REPLY_ALLOWANCE);
        need_usage.byte_seconds = need_usage.byte_seconds.saturating_add(storage_bound);
        let need = i64::try_from(self.config.prices.cost(&need_usage)).unwrap_or(i64::MAX);
        let acct = self.account(account);
        if let Some(ok) = Self::take(&acct, need) {
            return Ok(ok);
        }
        let _one_at_a_time = acct.leasing.lock().await;
        if let Some(ok) = Self::take(&acct, need) {
            return Ok(ok);
        }
        let want = self.config.lease.max(need);
        let granted = self
            .ledger
            .lease(account, want)
            .await
            .map_err(|e: LedgerError| Refusal::Ledger(e.to_string()))?;
        let mut state = acct.state.lock().unwrap_or_else(|e| e.into_inner());
        state.lease += granted;
        if state.lease > 0 && state.lease >= need {
            state.lease -= need;
            Ok(Admitted { reserved: need })
        } else {
            Err(Refusal::NoQuota {
                balance: state.lease,
            })
        }
    }

    fn take(acct: &Account, need: i64) -> Option<Admitted> {
        let mut state = acct.state.lock().unwrap_or_else(|e| e.into_inner());
        (state.lease > 0 && state.lease >= need).then(|| {
            state.lease -= need;
            Admitted { reserved: need }
        })
    }

    /// Pays for a command that ran: `usage` is everything it used. Returns its cost.
    pub fn charge(&self, account: &Arc<str>, admitted: Admitted, usage: &Usage) -> u64 {
        if !self.config.enabled {
            return 0;
        }
        let cost = self.config.prices.cost(usage);
        let acct = self.account(account);
        let mut state = acct.state.lock().unwrap_or_else(|e| e.into_inner());
        state.lease += admitted.reserved;
        state.lease -= i64::try_from(cost).unwrap_or(i64::MAX);
        state.spent = state
            .spent
            .saturating_add(i64::try_from(cost).unwrap_or(i64::MAX));
        state.usage.add(usage);
        cost
    }

    /// Gives back a reservation for a command that did not run.
    pub fn cancel(&self, account: &Arc<str>, admitted: Admitted) {
        if admitted.reserved != 0 {
            let acct = self.account(account);
            acct.state.lock().unwrap_or_else(|e| e.into_inner()).lease += admitted.reserved;
        }
    }

    /// Moves spending and counters into the ledger, keeping the lease (or giving it back
    /// with `release`).
    async fn settle_one(&self, account: &Arc<str>, release: bool) -> Result<(), LedgerError> {
        let acct = self.account(account);
        let _one_at_a_time = acct.settling.lock().await;
        let settlement = {
            let mut state = acct.state.lock().unwrap_or_else(|e| e.into_inner());
            let returned = if release {
                std::mem::take(&mut state.lease)
            } else {
                0
            };
            Settlement {
                spent: std::mem::take(&mut state.spent),
                returned,
                usage: std::mem::take(&mut state.usage),
            }
        };
        if settlement == Settlement::default() {
            return Ok(());
        }
        let result = self.ledger.settle(account, &settlement).await;
        if result.is_err() {
            // Keep it for the next attempt.
            let mut state = acct.state.lock().unwrap_or_else(|e| e.into_inner());
            state.lease += settlement.returned;
            state.spent += settlement.spent;
            state.usage.add(&settlement.usage);
        }
        result
    }

    /// Settles an account and gives its lease back (`PKV.BALANCE`, disconnects).
    pub async fn release(&self, account: &Arc<str>) -> Result<(), LedgerError> {
        self.settle_one(account, true).await
    }

    /// Settles every account; with `release`, gives every lease back (shutdown).
    pub async fn settle_all(&self, release: bool) {
        let ids: Vec<Arc<str>> = self.accounts.iter().map(|e| e.key().clone()).collect();
        for id in ids {
            if let Err(e) = self.settle_one(&id, release).await {
                tracing::warn!(account = %id, error = %e, "settlement failed; will retry");
            }
        }
        // Forget idle accounts with nothing left to settle.
        self.accounts.retain(|_, a| {
            let state = a.state.lock().unwrap_or_else(|e| e.into_inner());
            a.sessions.load(Ordering::Relaxed) > 0 || state.lease != 0 || state.spent != 0
        });
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
