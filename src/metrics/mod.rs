//! Metrics, and the optional HTTP endpoint that serves them (`/metrics`, `/healthz`,
//! `/readyz`): the process's counters ([`process`]), what the backends report
//! ([`health`]), their Prometheus exposition ([`exposition`], by prometheus-client) and
//! the endpoint ([`http`], by hyper). Also each account's own figures for its `INFO`
//! ([`TenantStats`]).

pub mod commandstats;
pub mod exposition;
pub mod health;
pub mod http;
pub mod process;

pub use health::{BackendFigures, PoolFigures, SnapshotFigures, SnapshotHealth};
pub use process::{process as figures, Family, Outcome};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

/// A forwarded command of `family` got `reply`.
pub fn completed(family: Option<Family>, reply: &crate::protocol::frame::Frame) {
    if let Some(family) = family {
        let outcome = if reply.is_error() {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        process::command(family, outcome);
    }
}

/// The replies to a read's requests were written (`answered`: the read held requests,
/// rather than only Pub/Sub messages going out), taken up at `taken_at`.
pub fn served(answered: bool, taken_at: std::time::Instant) {
    if answered {
        process::process()
            .client_latency
            .observe(taken_at.elapsed());
    }
}

/// A forwarded command of `family` got no reply from the backend.
pub fn failed(family: Option<Family>) {
    if let Some(family) = family {
        process::command(family, Outcome::Error);
    }
}

/// The server's own counters: connections, requests, refused AUTHs, lost pipelines.
#[derive(Default)]
pub struct Metrics {
    /// Open client connections.
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub commands_total: AtomicU64,
    pub auth_failures_total: AtomicU64,
    pub upstream_errors_total: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One account's own figures in this process, which its `INFO` shows: a tenant sees its
/// connections and commands, never the process's (other tenants' traffic).
#[derive(Debug, Default)]
pub struct TenantStats {
    /// Connections authenticated as the account now.
    pub connections: AtomicU64,
    /// Connections that authenticated as the account.
    pub connections_total: AtomicU64,
    /// Commands its connections ran.
    pub commands_total: AtomicU64,
    /// Its connections waiting in a blocking command now (`blocked_clients` in its INFO),
    /// which clients and tests watch to know that a push will find the waiter.
    pub blocked: AtomicU64,
    /// Its commands by name (`INFO commandstats`).
    pub commands: commandstats::CommandStats,
}

/// Runs `wait`, a blocking command handed to the backend, counting the connection in
/// `tenant`'s [`TenantStats::blocked`] from the first time it is left waiting until it
/// ends or is dropped (the client left, shutdown). The backend has taken the command by
/// then: the embedded store has registered the waiter, so a write that follows wakes it.
pub async fn while_blocked<F: std::future::Future>(
    tenant: Option<Arc<TenantStats>>,
    wait: F,
) -> F::Output {
    /// Takes the connection off the count however the wait ends.
    struct Blocked(Arc<TenantStats>);
    impl Drop for Blocked {
        fn drop(&mut self) {
            self.0.blocked.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let mut tenant = tenant;
    let mut counted: Option<Blocked> = None;
    let mut wait = std::pin::pin!(wait);
    let output = std::future::poll_fn(|cx| {
        let polled = wait.as_mut().poll(cx);
        if polled.is_pending() && counted.is_none() {
            counted = tenant.take().map(|t| {
                t.blocked.fetch_add(1, Ordering::Relaxed);
                Blocked(t)
            });
        }
        polled
    })
    .await;
    drop(counted);
    output
}

/// Every account's [`TenantStats`], kept while the account has connections in this
/// process (so the map is bounded by the connections, not by every account ever seen).
#[derive(Default)]
pub struct Tenants {
    map: DashMap<Arc<str>, Arc<TenantStats>>,
}

impl Tenants {
    /// A connection authenticated as `account`.
    pub fn attach(&self, account: &Arc<str>) -> Arc<TenantStats> {
        // Counted under the map's lock, so a concurrent last detach cannot remove the
        // entry between finding it and counting on it.
        let stats = self.map.entry(account.clone()).or_default();
        stats.connections.fetch_add(1, Ordering::Relaxed);
        stats.connections_total.fetch_add(1, Ordering::Relaxed);
        stats.clone()
    }

    /// Authenticated connections, and those of them waiting in a blocking command.
    pub fn totals(&self) -> (u64, u64) {
        self.map.iter().fold((0, 0), |(authed, blocked), entry| {
            let s = entry.value();
            (
                authed + s.connections.load(Ordering::Relaxed),
                blocked + s.blocked.load(Ordering::Relaxed),
            )
        })
    }

    /// A connection of `account` closed or moved to another account.
    pub fn detach(&self, account: &str, stats: &TenantStats) {
        if stats.connections.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.map
                .remove_if(account, |_, s| s.connections.load(Ordering::Relaxed) == 0);
        }
    }
}
