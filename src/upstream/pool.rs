//! A fixed set of shared connections, each reconnected on demand after it fails.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::conn::Conn;
use crate::backend::BackendError;

/// After a failed connect, requests fail fast for this long instead of each trying again.
const RETRY_AFTER: Duration = Duration::from_millis(250);

struct Slot {
    conn: Mutex<Option<Conn>>,
    connecting: tokio::sync::Mutex<Option<Instant>>,
}

/// Round-robin over `size` connections.
pub struct Pool {
    slots: Vec<Slot>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(size: usize) -> Self {
        let slots = (0..size.max(1))
            .map(|_| Slot {
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(None),
            })
            .collect();
        Pool {
            slots,
            next: AtomicUsize::new(0),
        }
    }

    fn cached(&self, index: usize) -> Option<Conn> {
        self.slots[index]
            .conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A connection from the next slot, connecting it first if it has none.
    pub async fn get<F, Fut>(&self, connect: F) -> Result<(usize, Conn), BackendError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Conn, BackendError>>,
    {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        if let Some(conn) = self.cached(index).filter(|c| !c.is_broken()) {
            return Ok((index, conn));
        }
        let slot = &self.slots[index];
        let mut last_failure = slot.connecting.lock().await;
        if let Some(conn) = self.cached(index).filter(|c| !c.is_broken()) {
            return Ok((index, conn));
        }
        if last_failure.is_some_and(|t| t.elapsed() < RETRY_AFTER) {
            return Err(BackendError::Unavailable("reconnecting".into()));
        }
        match connect().await {
            Ok(conn) => {
                crate::metrics::figures()
                    .upstream_connects
                    .fetch_add(1, Ordering::Relaxed);
                *last_failure = None;
                *slot.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
                tracing::info!(slot = index, "upstream connected");
                Ok((index, conn))
            }
            Err(err) => {
                crate::metrics::figures()
                    .upstream_connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                *last_failure = Some(Instant::now());
                tracing::warn!(slot = index, error = %err, "upstream connect failed");
                Err(err)
            }
        }
    }

    /// The slots by state, for `/metrics`.
    pub fn figures(&self) -> crate::metrics::PoolFigures {
        let mut figures = crate::metrics::PoolFigures::default();
        for index in 0..self.slots.len() {
            match self.cached(index) {
                Some(conn) if conn.is_broken() => figures.broken += 1,
                Some(_) => figures.open += 1,
                None => figures.unconnected += 1,
            }
        }
        figures
    }

    /// Forgets a slot's connection after it failed; the next use reconnects.
    pub fn invalidate(&self, index: usize) {
        *self.slots[index]
            .conn
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }
}
