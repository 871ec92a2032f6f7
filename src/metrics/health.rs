//! What the backends report when `/metrics` is scraped or `/readyz` asked: the upstream
//! pool's connections, the embedded store's keys, and how its snapshots are going.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Why a backend could not answer, in words for `/readyz`.
pub fn why(e: &crate::backend::BackendError) -> String {
    use crate::backend::BackendError;
    match e {
        BackendError::Unavailable(why) => format!("unavailable ({why})"),
        BackendError::Lost(why) => format!("no answer ({why})"),
        BackendError::Limit(_) => "no connection to spare".to_owned(),
    }
}

/// A backend's figures, read at scrape time. A part the backend does not have is `None`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BackendFigures {
    pub pool: Option<PoolFigures>,
    /// Keys the embedded store holds, including expired ones its sweep has not reached.
    pub keys: Option<u64>,
    pub snapshot: Option<SnapshotFigures>,
    /// Bytes the embedded store's data holds, and its limit (0: none).
    pub memory: Option<(u64, u64)>,
}

/// The upstream pool's connection slots, by state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolFigures {
    /// Connected and usable.
    pub open: u64,
    /// Connected but failed (timed out, lost); the next use connects again.
    pub broken: u64,
    /// Never connected, or forgotten after a failure.
    pub unconnected: u64,
}

impl PoolFigures {
    pub fn add(&mut self, other: PoolFigures) {
        self.open += other.open;
        self.broken += other.broken;
        self.unconnected += other.unconnected;
    }
}

/// The embedded store's snapshots.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotFigures {
    /// Seconds since the last snapshot that succeeded (or since the file was loaded).
    pub age_secs: u64,
    /// Snapshots that failed since start-up.
    pub failures: u64,
    /// The size of the last snapshot written, in bytes.
    pub bytes: u64,
    /// The last snapshot failed.
    pub failing: bool,
}

/// How the embedded store's snapshots are going: kept by the store's persistence, read by
/// `/metrics` and `/readyz`.
#[derive(Debug)]
pub struct SnapshotHealth {
    /// When the data was last known to be on disk: the last good snapshot, or start-up
    /// (the file was just read, or there was none yet), in milliseconds since the epoch.
    last_ok_ms: AtomicI64,
    failures: AtomicU64,
    bytes: AtomicU64,
    /// Why the last snapshot failed; `None` once one succeeds again.
    failing: Mutex<Option<String>>,
}

impl Default for SnapshotHealth {
    fn default() -> Self {
        SnapshotHealth {
            last_ok_ms: AtomicI64::new(crate::embedded::now_ms()),
            failures: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failing: Mutex::new(None),
        }
    }
}

impl SnapshotHealth {
    /// A snapshot of `bytes` was written.
    pub fn saved(&self, bytes: usize) {
        self.last_ok_ms
            .store(crate::embedded::now_ms(), Ordering::Relaxed);
        self.bytes.store(bytes as u64, Ordering::Relaxed);
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A snapshot failed with `error`.
    pub fn failed(&self, error: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_owned());
    }

    /// Records how a snapshot went.
    pub fn record(&self, saved: &Result<Option<crate::embedded::snapshot::Saved>, String>) {
        match saved {
            Ok(Some(saved)) => self.saved(saved.bytes),
            Ok(None) => {}
            Err(e) => self.failed(e),
        }
    }

    pub fn figures(&self) -> SnapshotFigures {
        let age_ms = crate::embedded::now_ms() - self.last_ok_ms.load(Ordering::Relaxed);
        SnapshotFigures {
            age_secs: u64::try_from(age_ms / 1000).unwrap_or(0),
            failures: self.failures.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            failing: self
                .failing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some(),
        }
    }

    /// Healthy when the last snapshot succeeded and the data on disk is not older than two
    /// intervals (`every`); otherwise why not.
    pub fn check(&self, every: Duration) -> Result<(), String> {
        if let Some(error) = &*self.failing.lock().unwrap_or_else(|p| p.into_inner()) {
            return Err(format!("persistence: the last snapshot failed: {error}"));
        }
        let age_ms = crate::embedded::now_ms() - self.last_ok_ms.load(Ordering::Relaxed);
        let limit = every.saturating_mul(2);
        if u128::try_from(age_ms).unwrap_or(0) > limit.as_millis() {
            return Err(format!(
                "persistence: the last good snapshot is {} s old (more than twice PKV_SNAPSHOT_SECONDS)",
                age_ms / 1000
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_snapshot_is_unhealthy_until_one_succeeds() {
        let health = SnapshotHealth::default();
        assert_eq!(health.check(Duration::from_secs(60)), Ok(()));
        health.failed("disk full");
        let why = health.check(Duration::from_secs(60)).unwrap_err();
        assert!(why.contains("disk full"), "{why}");
        assert!(health.figures().failing);
        health.saved(10);
        assert_eq!(health.check(Duration::from_secs(60)), Ok(()));
        assert_eq!(health.figures().failures, 1);
        assert_eq!(health.figures().bytes, 10);
    }

    #[test]
    fn an_old_snapshot_is_unhealthy() {
        let health = SnapshotHealth::default();
        health
            .last_ok_ms
            .store(crate::embedded::now_ms() - 5_000, Ordering::Relaxed);
        assert_eq!(health.check(Duration::from_secs(10)), Ok(()));
        let why = health.check(Duration::from_secs(2)).unwrap_err();
        assert!(why.contains("5 s old"), "{why}");
    }
}
