//! Per-account bounds in this process (SPEC 10): connections, dedicated upstream
//! connections, bytes of unfinished requests and bytes of replies waiting for a client to
//! read them, counted across all of an account's connections; and the bound on
//! connections that have not authenticated yet ([`Strangers`]).
//!
//! Each count is held by a [`Held`] guard that gives it back when dropped, so a connection
//! that ends in any way (QUIT, an error, shutdown) frees what it held. The counts are per
//! pkv process: with several processes in front of one upstream, an account may hold up to
//! the limit in each.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::backend::{BackendError, BoxFuture, Dedicated, SubscriptionSink};
use crate::commands::Call;
use crate::config::Settings;
use crate::protocol::frame::Frame;

/// What one account holds in this process.
#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    dedicated: AtomicUsize,
    /// Bytes of unfinished requests buffered by the account's connections.
    buffered: AtomicUsize,
    /// Bytes of replies held while pkv waits for the account's clients to read.
    output: AtomicUsize,
}

impl Counts {
    fn is_zero(&self) -> bool {
        self.connections.load(Ordering::Acquire) == 0
            && self.dedicated.load(Ordering::Acquire) == 0
            && self.buffered.load(Ordering::Acquire) == 0
            && self.output.load(Ordering::Acquire) == 0
    }
}

/// An account reached one of its limits (each carries the limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitError {
    Connections(usize),
    Dedicated(usize),
    Buffered(usize),
    Output(usize),
}

/// Which count a guard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connection,
    Dedicated,
}

type Accounts = DashMap<Arc<str>, Arc<Counts>>;

/// Every account's counts, and the limits they are held to (a settings reload may change
/// them; a connection keeps the buffered and output limits it started with).
pub struct AccountLimits {
    accounts: Arc<Accounts>,
    max_connections: AtomicUsize,
    max_dedicated: AtomicUsize,
    max_buffered: AtomicUsize,
    max_output: AtomicUsize,
}

impl AccountLimits {
    pub fn new(settings: &Settings) -> Self {
        AccountLimits {
            accounts: Arc::new(DashMap::new()),
            max_connections: AtomicUsize::new(settings.max_connections_per_account),
            max_dedicated: AtomicUsize::new(settings.max_dedicated_per_account),
            max_buffered: AtomicUsize::new(settings.max_buffered_per_account),
            max_output: AtomicUsize::new(settings.max_output_per_account),
        }
    }

    /// Takes up the limits of reloaded settings; counts already held stay held.
    pub fn set_limits(&self, settings: &Settings) {
        let set = |limit: &AtomicUsize, value| limit.store(value, Ordering::Relaxed);
        set(&self.max_connections, settings.max_connections_per_account);
        set(&self.max_dedicated, settings.max_dedicated_per_account);
        set(&self.max_buffered, settings.max_buffered_per_account);
        set(&self.max_output, settings.max_output_per_account);
    }

    /// One more connection of `account`, or the limit it would pass.
    pub fn connect(&self, account: &Arc<str>) -> Result<Held, LimitError> {
        self.take(account, Kind::Connection)
    }

    /// One more dedicated (or Pub/Sub) upstream connection of `account`.
    pub fn dedicated(&self, account: &Arc<str>) -> Result<Held, LimitError> {
        self.take(account, Kind::Dedicated)
    }

    fn take(&self, account: &Arc<str>, kind: Kind) -> Result<Held, LimitError> {
        // The count moves while the map entry is locked, so an entry is never removed
        // (see `Held::drop`) between finding it and counting on it.
        let entry = self.accounts.entry(account.clone()).or_default();
        let (count, max, error) = match kind {
            Kind::Connection => (
                &entry.connections,
                self.max_connections.load(Ordering::Relaxed),
                LimitError::Connections as fn(usize) -> LimitError,
            ),
            Kind::Dedicated => (
                &entry.dedicated,
                self.max_dedicated.load(Ordering::Relaxed),
                LimitError::Dedicated as fn(usize) -> LimitError,
            ),
        };
        if count.load(Ordering::Acquire) >= max {
            return Err(error(max));
        }
        count.fetch_add(1, Ordering::AcqRel);
        Ok(Held {
            accounts: self.accounts.clone(),
            account: account.clone(),
            counts: Arc::clone(&entry),
            kind,
            buffered: 0,
            output: 0,
            max_buffered: self.max_buffered.load(Ordering::Relaxed),
            max_output: self.max_output.load(Ordering::Relaxed),
        })
    }
}

/// One connection or dedicated connection of an account, counted until dropped.
pub struct Held {
    accounts: Arc<Accounts>,
    account: Arc<str>,
    counts: Arc<Counts>,
    kind: Kind,
    /// This connection's shares of the account's buffered and output bytes.
    buffered: usize,
    output: usize,
    max_buffered: usize,
    max_output: usize,
}

/// Moves an account's total from this connection's old share `mine` to `bytes`; returns
/// the new total.
fn reshare(total: &AtomicUsize, mine: &mut usize, bytes: usize) -> usize {
    let now = if bytes >= *mine {
        total.fetch_add(bytes - *mine, Ordering::AcqRel) + (bytes - *mine)
    } else {
        total.fetch_sub(*mine - bytes, Ordering::AcqRel) - (*mine - bytes)
    };
    *mine = bytes;
    now
}

impl Held {
    /// Records that this connection now buffers `bytes` of an unfinished request; an error
    /// when the account's connections together pass their limit (the caller closes this
    /// connection, which gives its share back).
    pub fn set_buffered(&mut self, bytes: usize) -> Result<(), LimitError> {
        if reshare(&self.counts.buffered, &mut self.buffered, bytes) > self.max_buffered {
            return Err(LimitError::Buffered(self.max_buffered));
        }
        Ok(())
    }

    /// Records that this connection now holds `bytes` of replies its client has not read
    /// (pkv is waiting to write them); an error when the account's connections together
    /// pass their limit (the caller closes this connection).
    pub fn set_output(&mut self, bytes: usize) -> Result<(), LimitError> {
        if reshare(&self.counts.output, &mut self.output, bytes) > self.max_output {
            return Err(LimitError::Output(self.max_output));
        }
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let count = match self.kind {
            Kind::Connection => &self.counts.connections,
            Kind::Dedicated => &self.counts.dedicated,
        };
        count.fetch_sub(1, Ordering::AcqRel);
        reshare(&self.counts.buffered, &mut self.buffered, 0);
        reshare(&self.counts.output, &mut self.output, 0);
        if self.counts.is_zero() {
            self.accounts.remove_if(&self.account, |_, c| c.is_zero());
        }
    }
}

/// Connections that have not authenticated yet, oldest first, at most
/// `PKV_MAX_UNAUTHENTICATED` of them. A new connection is always let in: when the bound is
/// reached, the oldest stranger is closed to make room. Silent or slow strangers then hold
/// a bounded share of the connection slots, for a bounded time (`PKV_AUTH_TIMEOUT`), and a
/// client that authenticates promptly gets in however many strangers keep arriving.
pub struct Strangers {
    max: AtomicUsize,
    queue: Mutex<VecDeque<(u64, Arc<Notify>)>>,
}

impl Strangers {
    pub fn new(max: usize) -> Self {
        Strangers {
            max: AtomicUsize::new(max.max(1)),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    /// Takes up a reloaded `PKV_MAX_UNAUTHENTICATED`; strangers beyond it leave as new
    /// ones arrive.
    pub fn set_max(&self, max: usize) {
        self.max.store(max.max(1), Ordering::Relaxed);
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Arc<Notify>)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connection `id` is (again) unauthenticated; the oldest stranger is told to leave if
    /// there are too many.
    pub fn arrive(self: &Arc<Self>, id: u64) -> Stranger {
        let evicted = Arc::new(Notify::new());
        let mut queue = self.queue();
        let max = self.max.load(Ordering::Relaxed);
        while queue.len() >= max {
            if let Some((_, oldest)) = queue.pop_front() {
                oldest.notify_one();
            }
        }
        queue.push_back((id, evicted.clone()));
        Stranger {
            strangers: self.clone(),
            id,
            evicted,
        }
    }
}

/// A connection's place among the [`Strangers`], until it authenticates or ends.
pub struct Stranger {
    strangers: Arc<Strangers>,
    id: u64,
    evicted: Arc<Notify>,
}

impl Stranger {
    /// Resolves when this connection must leave to make room for a newer one.
    pub fn evicted(&self) -> impl Future<Output = ()> + Send + 'static {
        let evicted = self.evicted.clone();
        async move { evicted.notified().await }
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        self.strangers.queue().retain(|(id, _)| *id != self.id);
    }
}

/// A dedicated connection that counts against its account while it is open.
pub struct CountedDedicated {
    pub conn: Box<dyn Dedicated>,
    /// The account's count, given back when this is dropped.
    pub _held: Held,
}

impl Dedicated for CountedDedicated {
    fn pipeline<'a>(
        &'a mut self,
        calls: &'a [Call],
    ) -> BoxFuture<'a, Result<Vec<Frame>, BackendError>> {
        self.conn.pipeline(calls)
    }

    fn queue_script(&mut self, script: crate::embedded::script::Queued) -> Option<Frame> {
        self.conn.queue_script(script)
    }
}

/// A Pub/Sub connection that counts against its account while it is open.
pub struct CountedSink {
    pub sink: Box<dyn SubscriptionSink>,
    /// The account's count, given back when this is dropped.
    pub _held: Held,
    /// Counted among the subscribed connections while it lives.
    pub _subscribed: crate::metrics::process::Subscribed,
}

impl SubscriptionSink for CountedSink {
    fn subscribe<'a>(
        &'a mut self,
        name: &'a [u8],
        pattern: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        self.sink.subscribe(name, pattern)
    }

    fn unsubscribe<'a>(
        &'a mut self,
        name: &'a [u8],
        pattern: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        self.sink.unsubscribe(name, pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn limits() -> AccountLimits {
        let mut raw = BTreeMap::new();
        raw.insert("PKV_MAX_CONNECTIONS_PER_ACCOUNT".into(), "2".into());
        raw.insert("PKV_MAX_DEDICATED_PER_ACCOUNT".into(), "1".into());
        raw.insert("PKV_MAX_REQUEST_BYTES".into(), "1024".into());
        raw.insert("PKV_MAX_BUFFERED_PER_ACCOUNT".into(), "1500".into());
        raw.insert("PKV_MAX_OUTPUT_BYTES".into(), "65536".into());
        raw.insert("PKV_MAX_OUTPUT_PER_ACCOUNT".into(), "100000".into());
        AccountLimits::new(&Settings::from_map(&raw).unwrap())
    }

    #[test]
    fn counts_are_per_account_and_given_back() {
        let limits = limits();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let first = limits.connect(&a).unwrap();
        let _second = limits.connect(&a).unwrap();
        assert_eq!(limits.connect(&a).err(), Some(LimitError::Connections(2)));
        let _other = limits.connect(&b).unwrap();
        drop(first);
        let _again = limits.connect(&a).unwrap();
        let d = limits.dedicated(&a).unwrap();
        assert_eq!(limits.dedicated(&a).err(), Some(LimitError::Dedicated(1)));
        drop(d);
        assert!(limits.dedicated(&a).is_ok());
    }

    #[tokio::test]
    async fn the_oldest_stranger_makes_room() {
        let strangers = Arc::new(Strangers::new(2));
        let first = strangers.arrive(1);
        let second = strangers.arrive(2);
        let _third = strangers.arrive(3);
        first.evicted().await;
        drop(second);
        let _fourth = strangers.arrive(4);
        assert_eq!(strangers.queue().len(), 2, "room was made without evicting");
    }

    #[test]
    fn buffered_bytes_add_up_across_connections() {
        let limits = limits();
        let a: Arc<str> = "a".into();
        let mut one = limits.connect(&a).unwrap();
        let mut two = limits.connect(&a).unwrap();
        one.set_buffered(1000).unwrap();
        assert_eq!(two.set_buffered(600), Err(LimitError::Buffered(1500)));
        drop(two);
        one.set_buffered(10).unwrap();
        let mut three = limits.connect(&a).unwrap();
        three.set_buffered(1024).unwrap();
        one.set_output(60_000).unwrap();
        assert_eq!(three.set_output(60_000), Err(LimitError::Output(100_000)));
        three.set_output(0).unwrap();
        drop((one, three));
        assert!(
            limits.accounts.is_empty(),
            "an account with nothing held is forgotten"
        );
    }
}
