//! Fairness between tenants: a bound on how much of the embedded store's time one
//! account's scripts hold it exclusively (`PKV_SCRIPT_BUDGET_MS`).
//!
//! A script holds the store exclusively for up to `PKV_SCRIPT_TIME_LIMIT`, and the time
//! limit bounds one script, not how many an account runs back to back from several
//! connections: without more, every other tenant would wait for each of them in turn. So
//! each account has a token bucket of exclusive time: it fills at the budget's rate (so
//! many ms of holding per second, up to one second's worth), each script (or EXEC that runs
//! scripts) takes what it held past its first millisecond ([`FREE_HOLD_US`]), and an account's next script starts only when the bucket
//! is no longer in debt. An account's scripts also run one at a time (they hold the store
//! exclusively, so nothing is lost), so several connections cannot start many at once on
//! one second's credit. The wait is a timer in the account's own session, never a thread,
//! and the store is free meanwhile: other tenants are served between an account's scripts.
//! Over any stretch, an account's scripts hold the store at most the budget's share of it,
//! plus one script.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What of each hold is not counted: a script this short delays others no more than one
/// multi-key command does, and an account's scripts run one at a time, so others are
/// served between them. Only longer holds are what can keep others waiting, and the
/// throughput of short scripts (a queue's or a lock's) is not held to the budget.
const FREE_HOLD_US: u64 = 1_000;

/// Accounts past this many buckets have those no one uses and that owe nothing dropped.
const PRUNE_ABOVE: usize = 1024;

/// Each account's bucket of exclusive time.
#[derive(Default)]
pub struct Budgets {
    accounts: Mutex<HashMap<Arc<str>, Arc<tokio::sync::Mutex<Bucket>>>>,
}

/// Microseconds of exclusive time an account may take now (negative: it owes them),
/// as of `at`.
struct Bucket {
    tokens_us: i64,
    at: Instant,
}

impl Bucket {
    /// Refills for the time since it was last looked at, at `budget` per second.
    fn refill(&mut self, budget: Duration, now: Instant) {
        let per_second = budget.as_micros() as i64;
        let elapsed = now.saturating_duration_since(self.at).as_micros() as i64;
        let earned = elapsed.saturating_mul(per_second) / 1_000_000;
        self.tokens_us = self.tokens_us.saturating_add(earned).min(per_second);
        self.at = now;
    }
}

/// An account's turn to run scripts: the others of the account wait until it drops; what
/// it held the store for is taken from the account's bucket with [`Turn::held`].
pub struct Turn {
    bucket: tokio::sync::OwnedMutexGuard<Bucket>,
}

impl Turn {
    /// Takes `us` microseconds of exclusive time off the account's bucket, but for the
    /// first [`FREE_HOLD_US`] (`runs` scripts held the store that long, together).
    pub fn held(mut self, us: u64, runs: u64) {
        let us = us.saturating_sub(runs.saturating_mul(FREE_HOLD_US));
        let us = i64::try_from(us).unwrap_or(i64::MAX);
        self.bucket.tokens_us = self.bucket.tokens_us.saturating_sub(us);
    }
}

impl Budgets {
    /// Waits for `account`'s turn: until no other script of the account runs and its
    /// bucket owes nothing (at `budget` per second). `None` when there is no budget
    /// (`PKV_SCRIPT_BUDGET_MS=0`): scripts then run as they come.
    pub async fn turn(&self, account: &Arc<str>, budget: Duration) -> Option<Turn> {
        if budget.is_zero() {
            return None;
        }
        let bucket = self.bucket(account, budget);
        let mut bucket = bucket.lock_owned().await;
        loop {
            bucket.refill(budget, Instant::now());
            if bucket.tokens_us >= 0 {
                return Some(Turn { bucket });
            }
            let owed = bucket.tokens_us.unsigned_abs();
            let per_second = budget.as_micros().max(1) as u64;
            let wait_us = owed.saturating_mul(1_000_000) / per_second + 1;
            tokio::time::sleep(Duration::from_micros(wait_us)).await;
        }
    }

    fn bucket(&self, account: &Arc<str>, budget: Duration) -> Arc<tokio::sync::Mutex<Bucket>> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if accounts.len() > PRUNE_ABOVE {
            let now = Instant::now();
            accounts.retain(|_, bucket| {
                Arc::strong_count(bucket) > 1
                    || bucket.try_lock().map_or(true, |mut b| {
                        b.refill(budget, now);
                        b.tokens_us < budget.as_micros() as i64
                    })
            });
        }
        accounts
            .entry(account.clone())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(Bucket {
                    tokens_us: budget.as_micros() as i64,
                    at: Instant::now(),
                }))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An account that held the store past its budget waits until it has earned the
    /// time back; another account does not wait for it.
    #[tokio::test]
    async fn debt_is_paid_in_waiting_and_only_by_its_account() {
        let budgets = Budgets::default();
        let budget = Duration::from_millis(100);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let turn = budgets.turn(&a, budget).await.unwrap();
        turn.held(151_000, 1);
        let started = Instant::now();
        let turn = budgets.turn(&b, budget).await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(50));
        drop(turn);
        let turn = budgets.turn(&a, budget).await.unwrap();
        // 50 ms owed, earned back at 100 ms a second.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(490) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        drop(turn);
        assert!(budgets.turn(&a, Duration::ZERO).await.is_none());
    }
}
