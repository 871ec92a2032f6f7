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
//! Ledger updates are exactly-once (see [`ledger`]): a lease request or settlement
//! whose answer is lost (the upstream stalled past its timeout) is kept as it is, with its
//! update number, and sent again before anything newer of its kind; it is never merged into
//! newer amounts nor put back into the lease, since the upstream may have applied it.
//!
//! Holding back: what a command costs after it runs (its reply's bytes, its upstream time)
//! is not known when it is admitted. While an account has much left, its commands run
//! concurrently; once what is left (the lease in hand plus the ledger's credit as last
//! seen) falls below [`MeterConfig::low_balance`], or below what the commands in flight
//! have been seen to cost beyond their reservations, a command is admitted only when no
//! other command of the account is in flight in this process ([`Meter::admit`] waits for
//! them). Then the balance goes below zero by at most one command's after-cost.
//!
//! Bounds (see `docs/metering.md`): across processes nothing is spent that was not leased.
//! A process holds at most one lease per account (the lease in hand plus the reservations
//! of commands in flight, topped up to [`MeterConfig::lease`], never beyond it but for one
//! command whose reservation alone is larger), so a process killed with -9 loses at most
//! that, and its unsettled counters (what it spent in the last [`SETTLE_EVERY`] is then
//! missing from the counters, though not from the balance).

pub mod ledger;
mod live;
pub mod price;
pub mod storage;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::meter::ledger::{Grant, LeaseRequest, Ledger, LedgerError, Settlement};
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
    /// Nano-units a process leases at a time per account; the most it holds.
    pub lease: i64,
    /// Below this many nano-units left, an account's commands run one at a time per process.
    pub low_balance: i64,
    /// The longest a command waits for the account's other commands in flight before it is
    /// admitted anyway (a blocking command may hold its connection for minutes).
    pub hold_back: Duration,
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
    /// Reservations of the commands in flight, nano-units: with `lease`, what this process
    /// holds of the account's credit.
    reserved: AtomicI64,
    /// Commands admitted and not yet paid, other than blocking ones.
    in_flight: AtomicI64,
    /// Blocking commands admitted and not yet paid.
    blocking: AtomicI64,
    /// The account's credit left in the ledger (beyond this process's lease) when a lease
    /// was last granted.
    ledger_left: AtomicI64,
    /// The most a command of this account (other than a blocking one) has cost beyond its
    /// reservation: what each command in flight is expected to cost beyond it.
    excess: AtomicI64,
    /// Commands waiting for the account's commands in flight ([`Meter::admit`]).
    waiting: AtomicUsize,
    /// Signalled when commands in flight are paid and someone is waiting.
    paid: tokio::sync::Notify,
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
    /// The account's own default TTL in seconds (`PKV.DEFAULTTTL`), 0 for none, or
    /// [`DEFAULT_TTL_UNREAD`] until read from the ledger.
    default_ttl: AtomicU64,
}

/// [`AccountMeter::default_ttl`] before the ledger was read: the account's first session in
/// the process reads it when it authenticates.
const DEFAULT_TTL_UNREAD: u64 = u64::MAX;

impl AccountMeter {
    /// The account's own default TTL, in seconds (0 for none); `None` until read from the
    /// ledger.
    pub fn default_ttl(&self) -> Option<u64> {
        match self.default_ttl.load(Ordering::Acquire) {
            DEFAULT_TTL_UNREAD => None,
            secs => Some(secs),
        }
    }

    /// Records the account's own default TTL as the ledger holds it (0 for none).
    pub fn set_default_ttl(&self, secs: u64) {
        self.default_ttl
            .store(secs.min(DEFAULT_TTL_UNREAD - 1), Ordering::Release);
    }

    fn new(id: Arc<str>) -> Self {
        AccountMeter {
            id,
            default_ttl: AtomicU64::new(DEFAULT_TTL_UNREAD),
            lease: AtomicI64::new(0),
            spent: AtomicI64::new(0),
            ops: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            byte_seconds: AtomicU64::new(0),
            time_us: AtomicU64::new(0),
            sessions: AtomicUsize::new(0),
            reserved: AtomicI64::new(0),
            in_flight: AtomicI64::new(0),
            blocking: AtomicI64::new(0),
            ledger_left: AtomicI64::new(0),
            excess: AtomicI64::new(0),
            waiting: AtomicUsize::new(0),
            paid: tokio::sync::Notify::new(),
            leasing: tokio::sync::Mutex::new(None),
            settling: tokio::sync::Mutex::new(None),
            topping_up: AtomicBool::new(false),
            dry_since: Mutex::new(None),
        }
    }

    /// Takes `need` from the lease if it covers it (and is above zero), as the reservation
    /// of a command in flight of kind `flight` (already counted by the caller).
    fn take(&self, need: i64, flight: Flight) -> Option<Admitted> {
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
                Ok(_) => {
                    self.reserved.fetch_add(need, Ordering::AcqRel);
                    return Some(Admitted {
                        reserved: need,
                        flight,
                    });
                }
                Err(now) => current = now,
            }
        }
    }

    /// Adds a grant to the lease and takes `need` from it in one step, so that no other
    /// command sees the grant whole before this one has its share: one that did could
    /// find the balance not low and skip waiting for a blocking command in flight.
    fn add_and_take(&self, granted: i64, need: i64, flight: Flight) -> Option<Admitted> {
        let mut taken = false;
        let _ = self
            .lease
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                let total = current.saturating_add(granted);
                taken = total > 0 && total >= need;
                Some(if taken { total - need } else { total })
            });
        taken.then(|| {
            self.reserved.fetch_add(need, Ordering::AcqRel);
            Admitted {
                reserved: need,
                flight,
            }
        })
    }

    /// The counter of commands in flight of a kind.
    fn counter(&self, flight: Flight) -> Option<&AtomicI64> {
        match flight {
            Flight::None | Flight::Queued => None,
            Flight::Plain => Some(&self.in_flight),
            Flight::Blocking => Some(&self.blocking),
        }
    }

    /// What is left to the account as this process sees it: the lease in hand and the
    /// ledger's credit beyond it.
    fn room(&self) -> i64 {
        self.lease
            .load(Ordering::Acquire)
            .saturating_add(self.ledger_left.load(Ordering::Acquire).max(0))
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

    /// Takes everything unsettled (and the lease, with `release`; without, what the
    /// process holds beyond `keep`, left by a command that reserved more than a lease), as
    /// update `seq`.
    fn take_settlement(&self, seq: u64, release: bool, keep: i64) -> Settlement {
        let take = |counter: &AtomicU64| counter.swap(0, Ordering::AcqRel);
        let returned = if release {
            self.lease.swap(0, Ordering::AcqRel)
        } else {
            let keep = keep
                .saturating_sub(self.reserved.load(Ordering::Acquire))
                .max(0);
            let mut returned = 0;
            let mut current = self.lease.load(Ordering::Acquire);
            while current > keep {
                match self.lease.compare_exchange_weak(
                    current,
                    keep,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        returned = current - keep;
                        break;
                    }
                    Err(now) => current = now,
                }
            }
            returned
        };
        Settlement {
            seq,
            spent: self.spent.swap(0, Ordering::AcqRel),
            returned,
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
        let nothing_in_flight = self.in_flight.load(Ordering::Acquire) == 0
            && self.blocking.load(Ordering::Acquire) == 0;
        let nothing_unanswered = self.leasing.try_lock().is_ok_and(|lost| lost.is_none())
            && self
                .settling
                .try_lock()
                .is_ok_and(|unsent| unsent.is_none());
        self.sessions.load(Ordering::Acquire) == 0
            && self.lease.load(Ordering::Acquire) == 0
            && self.spent.load(Ordering::Acquire) == 0
            && self.ops.load(Ordering::Acquire) == 0
            && nothing_in_flight
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
    /// Commands paid (or cancelled) since the last [`Meter::apply`], by kind, and what
    /// they had reserved.
    paid: i64,
    paid_blocking: i64,
    released: i64,
    /// The most one of them (other than blocking ones) cost beyond its reservation.
    excess: i64,
    /// The session's commands in flight (admitted, not yet paid or cancelled), other than
    /// blocking and queued ones.
    open: i64,
    /// The reservations of all its admitted commands not yet paid or cancelled: what it
    /// gives back if it ends without paying them (a transaction dropped with its
    /// connection).
    open_reserved: i64,
}

impl Charges {
    pub fn is_empty(&self) -> bool {
        Charges {
            open: 0,
            open_reserved: 0,
            ..*self
        } == Charges::default()
    }

    /// The session's own commands in flight (admitted, not yet paid).
    pub fn open(&self) -> i64 {
        self.open
    }

    /// Counts a command just admitted as the session's.
    pub fn opened(&mut self, admitted: &Admitted) {
        if admitted.flight == Flight::Plain {
            self.open += 1;
        }
        if admitted.flight != Flight::None {
            self.open_reserved += admitted.reserved;
        }
    }

    fn close(&mut self, admitted: &Admitted, cost: Option<i64>) {
        match admitted.flight {
            Flight::None => return,
            Flight::Plain => {
                self.paid += 1;
                self.open -= 1;
                if let Some(cost) = cost {
                    self.excess = self.excess.max(cost.saturating_sub(admitted.reserved));
                }
            }
            Flight::Blocking => self.paid_blocking += 1,
            Flight::Queued => {}
        }
        self.open_reserved -= admitted.reserved;
        self.released += admitted.reserved;
    }
}

/// A session's handle on its account's meter.
pub type AccountHandle = Arc<AccountMeter>;

/// Why a command was not admitted.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The balance cannot pay; carries what is left, in nano-units.
    NoQuota { balance: i64 },
    /// The ledger could not be reached to extend the lease.
    Ledger(LedgerError),
}

/// A reservation made by [`Meter::admit`], replaced by the real cost in [`Meter::charge`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admitted {
    reserved: i64,
    flight: Flight,
}

/// How an admitted command counts among the account's commands in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Flight {
    /// Not counted: runs whatever the balance (deliveries, EXEC).
    #[default]
    None,
    /// A command answered within the upstream timeout.
    Plain,
    /// A blocking command, which may wait as long as it asked: it does not hold back the
    /// account's other commands (one of them may be what it waits for), but it is only
    /// admitted alone when the balance is low.
    Blocking,
    /// A command queued in a transaction: it runs only with EXEC, so it neither holds
    /// back nor is held back, but its reservation is the session's until EXEC pays it.
    Queued,
}

/// Error replies by which the upstream says it ran nothing: it is loading its dataset,
/// busy with a script, without its master, the keys are moving, or its memory is full
/// (`OOM`, the embedded store's `PKV_MAXMEMORY` too). Such a command is not charged.
pub fn did_not_run(reply: &crate::protocol::frame::Frame) -> bool {
    matches!(
        reply.error_code(),
        Some(b"LOADING" | b"BUSY" | b"MASTERDOWN" | b"TRYAGAIN" | b"OOM")
    )
}

/// The process's meter.
pub struct Meter {
    /// As at start-up: whether metering is on, and the hold-back wait.
    config: MeterConfig,
    /// As after the last reload: prices, lease size, low-balance bound.
    live: live::Live,
    ledger: Arc<Ledger>,
    accounts: DashMap<Arc<str>, AccountHandle>,
}

impl Meter {
    pub fn new(config: MeterConfig, ledger: Arc<Ledger>) -> Self {
        Meter {
            live: live::Live::new(&config),
            config,
            ledger,
            accounts: DashMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The prices in force.
    pub fn prices(&self) -> Prices {
        self.live.read().prices
    }

    /// Takes up new prices, lease size and low-balance bound (a settings reload); each
    /// command is priced when it is paid, at the prices in force then. Whether metering is
    /// on and the hold-back wait stay as they were at start-up.
    pub fn reconfigure(&self, config: MeterConfig) {
        self.live.store(&config);
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

    /// Accounts this process holds credit for (a lease, or reservations of commands in
    /// flight), and that credit in nano-units, for `/metrics`.
    pub fn leases(&self) -> (u64, i64) {
        self.accounts
            .iter()
            .fold((0, 0), |(accounts, nanos), entry| {
                let a = entry.value();
                let held = a
                    .lease
                    .load(Ordering::Relaxed)
                    .saturating_add(a.reserved.load(Ordering::Relaxed));
                if held > 0 {
                    (accounts + 1, nanos.saturating_add(held))
                } else {
                    (accounts, nanos)
                }
            })
    }

    /// A session of `account` opened; returns the handle it meters through.
    pub fn attach(&self, account: &Arc<str>) -> AccountHandle {
        let handle = self.account(account);
        if handle.sessions.fetch_add(1, Ordering::AcqRel) == 0 {
            // Another process may have changed it since this one last had a session.
            handle
                .default_ttl
                .store(DEFAULT_TTL_UNREAD, Ordering::Release);
        }
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
        i64::try_from(self.live.read().prices.cost(&need_usage)).unwrap_or(i64::MAX)
    }

    /// True when what is left to the account could not pay for the after-costs of its
    /// commands in flight: then commands are admitted one at a time.
    fn low(&self, acct: &AccountMeter) -> bool {
        let exposure = acct
            .in_flight
            .load(Ordering::Acquire)
            .saturating_mul(acct.excess.load(Ordering::Acquire));
        acct.room() < self.live.read().low_balance.max(exposure)
    }

    /// Admits from the lease in memory when it covers `need` and the balance is not low;
    /// the command path. `None` sends the command to [`Meter::admit`].
    pub fn try_admit(
        self: &Arc<Self>,
        acct: &AccountHandle,
        need: i64,
        flight: Flight,
    ) -> Option<Admitted> {
        if !self.config.enabled {
            return Some(Admitted::default());
        }
        let counter = acct.counter(flight);
        if counter.is_some() && self.low(acct) {
            return None;
        }
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::AcqRel);
        }
        let Some(admitted) = acct.take(need, flight) else {
            self.leave(acct, flight);
            return None;
        };
        self.top_up_if_low(acct);
        Some(admitted)
    }

    /// Counts a command in flight, unless the balance is low and other commands of the
    /// account are: then it must wait. `own` is how many of the account's commands in
    /// flight are the caller's and cannot be waited for (see [`Charges::open`]; none once
    /// the caller has paid for what it sent).
    fn enter(&self, acct: &AccountMeter, flight: Flight, own: i64) -> bool {
        let Some(counter) = acct.counter(flight) else {
            return true;
        };
        if !self.low(acct) {
            counter.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        match flight {
            Flight::Plain => acct
                .in_flight
                .compare_exchange(own, own + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
            Flight::Blocking => {
                if acct
                    .blocking
                    .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    return false;
                }
                if acct.in_flight.load(Ordering::Acquire) > own {
                    self.leave(acct, flight);
                    return false;
                }
                true
            }
            Flight::None | Flight::Queued => true,
        }
    }

    /// Uncounts a command that was counted in flight but not admitted.
    fn leave(&self, acct: &AccountMeter, flight: Flight) {
        if let Some(counter) = acct.counter(flight) {
            counter.fetch_sub(1, Ordering::AcqRel);
            if acct.waiting.load(Ordering::Acquire) > 0 {
                acct.paid.notify_waiters();
            }
        }
    }

    /// Admits when the lease in memory cannot: waits while the balance is low and other
    /// commands of the account are in flight (at most [`MeterConfig::hold_back`]), then
    /// takes from the lease, extending it from the ledger. `own` counts the caller's
    /// commands in flight (see [`Charges::open`]); the caller has paid every other one.
    pub async fn admit(
        self: &Arc<Self>,
        acct: &AccountHandle,
        need: i64,
        flight: Flight,
        own: i64,
    ) -> Result<Admitted, Refusal> {
        if !self.config.enabled {
            return Ok(Admitted::default());
        }
        let until = tokio::time::Instant::now() + self.config.hold_back;
        loop {
            let paid = acct.paid.notified();
            tokio::pin!(paid);
            paid.as_mut().enable();
            if self.enter(acct, flight, own) {
                break;
            }
            if tokio::time::Instant::now() >= until {
                // Held back long enough (a blocking command may be what it waits for).
                if let Some(counter) = acct.counter(flight) {
                    counter.fetch_add(1, Ordering::AcqRel);
                }
                break;
            }
            acct.waiting.fetch_add(1, Ordering::AcqRel);
            let _ = tokio::time::timeout_at(until, paid).await;
            acct.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        let admitted = self.take_or_lease(acct, need, flight).await;
        if admitted.is_err() {
            self.leave(acct, flight);
        }
        admitted
    }

    /// Takes `need` from the lease, extending it from the ledger as needed; refuses only
    /// when the ledger itself has too little left.
    async fn take_or_lease(
        &self,
        acct: &AccountHandle,
        need: i64,
        flight: Flight,
    ) -> Result<Admitted, Refusal> {
        if let Some(ok) = acct.take(need, flight) {
            return Ok(ok);
        }
        let mut lost = acct.leasing.lock().await;
        loop {
            if let Some(ok) = acct.take(need, flight) {
                return Ok(ok);
            }
            // A request answered now after its answer was lost: what it got may be enough.
            let retry = lost.is_some();
            // Ask for what is missing: the lease in hand can be below zero when commands
            // cost more than they reserved (a slow round trip), and a grant of `need` alone
            // would then still fall short of it. Beyond that, fill up to one lease.
            let have = acct.lease.load(Ordering::Acquire);
            let want = self
                .lease_wanted(acct)
                .max(need.saturating_sub(have))
                .max(1);
            let (grant, admitted) = self
                .lease_more(acct, &mut lost, want, Some((need, flight)))
                .await
                .map_err(Refusal::Ledger)?;
            if let Some(ok) = admitted {
                return Ok(ok);
            }
            if !retry && grant.granted < want {
                // The ledger gave all it had: refuse only now, when the account's credit
                // cannot cover the command, not because another connection used the
                // grant first.
                return acct.take(need, flight).ok_or_else(|| Refusal::NoQuota {
                    balance: acct.lease.load(Ordering::Acquire),
                });
            }
        }
    }

    /// What tops the account's holding in this process (lease in hand and reservations
    /// in flight) up to one lease.
    fn lease_wanted(&self, acct: &AccountMeter) -> i64 {
        self.live
            .read()
            .lease
            .saturating_sub(acct.lease.load(Ordering::Acquire))
            .saturating_sub(acct.reserved.load(Ordering::Acquire))
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
        take: Option<(i64, Flight)>,
    ) -> Result<(Grant, Option<Admitted>), LedgerError> {
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
        // With `take`, the caller's command is admitted from the grant as it is added.
        let admitted = match take {
            Some((need, flight)) => acct.add_and_take(grant.granted, need, flight),
            None => {
                acct.lease.fetch_add(grant.granted, Ordering::AcqRel);
                None
            }
        };
        if let Some(left) = grant.available {
            acct.ledger_left.store(left, Ordering::Release);
        }
        // What is left is known now: commands held back while it was not (an account's
        // first commands in this process) look again instead of waiting for one to finish.
        if acct.waiting.load(Ordering::Acquire) > 0 {
            acct.paid.notify_waiters();
        }
        Ok((grant, admitted))
    }

    /// Below half a lease, tops the lease up in the background (to one lease with what is
    /// reserved, no more: that is what a crash can lose), so that admissions do not wait
    /// for the ledger while the balance lasts.
    fn top_up_if_low(self: &Arc<Self>, acct: &AccountHandle) {
        let low = acct.lease.load(Ordering::Relaxed) < self.live.read().lease / 2;
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
            let want = meter.lease_wanted(&acct);
            if acct.lease.load(Ordering::Acquire) < meter.live.read().lease / 2 && want > 0 {
                match meter.lease_more(&acct, &mut lost, want, None).await {
                    Ok((Grant { granted: 0, .. }, _)) => {
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
        let cost = self.live.read().prices.cost(usage);
        let cost = i64::try_from(cost).unwrap_or(i64::MAX);
        charges.lease = charges.lease.saturating_add(admitted.reserved - cost);
        charges.spent = charges.spent.saturating_add(cost);
        charges.usage.add(usage);
        charges.close(&admitted, Some(cost));
        cost as u64
    }

    /// Gives back, into `charges`, the reservation of a command that did not run.
    pub fn cancel(&self, charges: &mut Charges, admitted: Admitted) {
        charges.lease = charges.lease.saturating_add(admitted.reserved);
        charges.close(&admitted, None);
    }

    /// Adds accumulated charges to the account and clears them (but for the session's
    /// commands still open). The lease is updated before the commands stop counting as in
    /// flight, so that a command admitted when they do sees what they cost.
    pub fn apply(&self, acct: &AccountHandle, charges: &mut Charges) {
        let c = std::mem::replace(
            charges,
            Charges {
                open: charges.open,
                open_reserved: charges.open_reserved,
                ..Charges::default()
            },
        );
        if c.lease != 0 {
            acct.lease.fetch_add(c.lease, Ordering::AcqRel);
        }
        if c.spent != 0 {
            acct.spent.fetch_add(c.spent, Ordering::AcqRel);
            crate::metrics::process::charged(&self.config.prices, &c.usage, c.spent);
        }
        acct.record(&c.usage);
        if c.released != 0 {
            acct.reserved.fetch_sub(c.released, Ordering::AcqRel);
        }
        if c.excess > 0 {
            acct.excess.fetch_max(c.excess, Ordering::AcqRel);
        }
        if c.paid != 0 || c.paid_blocking != 0 {
            acct.in_flight.fetch_sub(c.paid, Ordering::AcqRel);
            acct.blocking.fetch_sub(c.paid_blocking, Ordering::AcqRel);
            if acct.waiting.load(Ordering::Acquire) > 0 {
                acct.paid.notify_waiters();
            }
        }
    }

    /// A session ends with commands it admitted and never paid nor cancelled (a
    /// transaction dropped with its connection): their reservations go back to the lease
    /// and they stop counting as in flight.
    pub fn forget(&self, acct: &AccountHandle, charges: &mut Charges) {
        let open = std::mem::take(&mut charges.open);
        let reserved = std::mem::take(&mut charges.open_reserved);
        if open == 0 && reserved == 0 {
            return;
        }
        acct.lease.fetch_add(reserved, Ordering::AcqRel);
        acct.reserved.fetch_sub(reserved, Ordering::AcqRel);
        // Blocking commands are always paid before their session goes on; queued ones
        // are not counted in flight.
        acct.in_flight.fetch_sub(open, Ordering::AcqRel);
        if acct.waiting.load(Ordering::Acquire) > 0 {
            acct.paid.notify_waiters();
        }
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
                self.lease_more(acct, &mut lost, 0, None).await?;
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
        let settlement =
            acct.take_settlement(self.ledger.next_seq(), release, self.live.read().lease);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(wire: &[u8]) -> crate::protocol::frame::Frame {
        let mut buf = bytes::BytesMut::from(wire);
        crate::protocol::frame::Decoder::default()
            .decode(&mut buf)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    #[test]
    fn replies_that_say_nothing_ran_are_told_apart() {
        for wire in [
            &b"-LOADING Redis is loading the dataset in memory\r\n"[..],
            b"-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n",
            b"-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
            b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
            b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
        ] {
            assert!(did_not_run(&reply(wire)), "{}", String::from_utf8_lossy(wire));
        }
        for wire in [
            &b"-ERR value is not an integer or out of range\r\n"[..],
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            b"-BUSYKEY Target key name already exists.\r\n",
            b"-NOSCRIPT No matching script.\r\n",
            b"+OK\r\n",
            b"$7\r\nLOADING\r\n",
        ] {
            assert!(
                !did_not_run(&reply(wire)),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
    }
}
