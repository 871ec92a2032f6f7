//! The embedded store: what pkv serves from when no upstream Redis is configured.
//!
//! An in-process key-value store with Redis semantics for the commands it runs
//! ([`cmd`]): binary keys and values, strings, hashes, lists, sets and sorted sets (with
//! HyperLogLog in Redis's own string form, [`hll`], geo and SORT on top of them), streams
//! with consumer groups ([`stream`]), expiry (lazy on access and active in the
//! background), blocking pops and stream reads, Pub/Sub, MULTI/EXEC with WATCH, and the
//! ledger ([`ledger`]). Served commands it does not run are answered with an
//! error that names them and points at `PKV_UPSTREAM_URL`.
//!
//! Concurrency: the keyspace is sharded ([`keyspace`]); a command on one key locks one
//! shard, reads only for reading. Above the shards, the store's gate is a set of stripes
//! ([`gate`]), each key in one (a function of its shard); there is no lock every command
//! takes. A single-key command holds its key's stripe shared. A command that touches
//! several keys (MSET, MGET, RENAME, SINTERSTORE, XGROUP, ...) holds the stripes of its keys,
//! as the command table locates them, exclusively, and a transaction's EXEC those of every
//! key its commands touch: so each is atomic (a reader of any of its keys holds that key's
//! stripe and waits), and commands on keys of other stripes run meanwhile. What cannot name
//! its keys before it runs holds every stripe: a script and SORT with BY or GET
//! exclusively, KEYS and SCAN shared, as does a snapshot's walk ([`snapshot`]). Stripes are
//! taken lowest first and before any shard lock ([`Store::stripes_for`]).
//!
//! No runtime worker thread ever waits for a stripe (SPEC 10: a long command never blocks
//! the threads that serve other tenants' connections). Multi-key commands, which may be
//! long (SUNIONSTORE over sets of millions), always run on the runtime's blocking pool
//! ([`off_thread`]); the others run in place when their stripes are free for readers and
//! move to the blocking pool when they are not, and so do the reads whose work grows without
//! bound with one big value (a whole-globe GEOSEARCH: [`cmd::Runnable::long`]; an LRANGE or
//! HGETALL when the value is big: [`cmd::Runnable::scans`]). Ledger steps hold the stripes
//! of their own keys shared, and a lock of their own: holding every stripe, a tenant's lease
//! would wait for any other tenant's long multi-key command. Commands that do not touch the store
//! (PING, ECHO, the handshake) never reach it, so they are answered while a multi-key
//! command runs; commands on its keys' stripes wait for it there, as they must.

pub mod aof;
pub mod cmd;
pub mod data;
pub mod delta;
pub mod error;
mod events;
pub mod gate;
pub mod glob;
pub mod hll;
pub mod keyspace;
mod ledger;
pub mod memory;
pub mod pubsub;
pub mod script;
pub mod snapshot;
pub mod stream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use crate::protocol::frame::Frame;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::backend::{Backend, BackendError, BoxFuture, Dedicated, Subscription};
use crate::commands::{Call, CommandSpec};
use crate::config::Settings;
use crate::error::ClientError;
use crate::protocol::Proto;
use cmd::{Cx, Error, KeysAt, Kind, Reply, Runnable};
use error::StoreError;
use gate::{Gate, Mode, Stripes};
use keyspace::{Keyspace, SHARDS};

/// How often the active expiry runs, and how many shards it cleans each time.
const EXPIRY_TICK: Duration = Duration::from_millis(100);
const EXPIRY_SHARDS_PER_TICK: usize = SHARDS / 8;

/// The store. Cloning it is cheap; clones share everything.
#[derive(Clone, Default)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Default)]
pub struct Inner {
    pub keys: Keyspace,
    /// Its stripes are held shared by single-key commands and exclusively by multi-key
    /// ones, each command only those of its keys ([`gate`]).
    gate: Gate,
    /// Held by each ledger step, with the gate stripes of its keys shared ([`ledger`]).
    ledger: Mutex<()>,
    watches: Watches,
    waiters: Waiters,
    pub channels: Arc<pubsub::Registry>,
    /// The data file and how often it is saved (`PKV_DATA_FILE`); `None` keeps the store
    /// in memory only.
    persistence: Option<snapshot::Persistence>,
    /// The append-only log beside the data file, once replayed ([`aof`]).
    aof: OnceLock<Arc<aof::Aof>>,
    /// Why the last snapshot failed, until one succeeds.
    snapshot_error: Mutex<Option<String>>,
    /// `PKV_MAXMEMORY`: bytes the data may hold before `denyoom` writes are refused; 0 for
    /// no limit ([`memory`]).
    memory_limit: AtomicU64,
    /// The key events it publishes (`PKV_KEYSPACE_EVENTS`), see [`events`].
    notify: Option<crate::notify::Flags>,
}

impl std::ops::Deref for Store {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Served commands the store does not run, in table order: pkv answers them with an error
/// that points at `PKV_UPSTREAM_URL`. The README lists them.
pub fn needs_upstream() -> Vec<&'static str> {
    use crate::commands::{flags, table::TABLE, Exec};
    TABLE
        .iter()
        .filter(|spec| matches!(spec.exec, Exec::Forward) && !spec.has(flags::CONTAINER))
        .map(|spec| spec.name)
        .filter(|name| {
            let base = name.split('|').next().unwrap_or(name);
            cmd::find(base.as_bytes()).is_none()
        })
        .collect()
}

/// The error for a served command the store does not run.
fn not_here(name: &[u8]) -> Error {
    StoreError::NeedsUpstream {
        command: String::from_utf8_lossy(name).into_owned(),
    }
    .into()
}

impl Store {
    /// The store for `settings`: loaded from `PKV_DATA_FILE` when there is one.
    pub fn open(settings: &Settings) -> Result<Self, String> {
        let store = Store {
            inner: Arc::new(Inner {
                persistence: snapshot::Persistence::from_settings(settings),
                notify: settings.keyspace_events.map(crate::notify::Flags::backend),
                ..Inner::default()
            }),
        };
        store.publish_expired();
        store.load()?;
        if let Some(data_file) = &settings.data_file {
            let log = aof::Aof::open(aof::path_for(data_file), settings.append_fsync, &store)?;
            let _ = store.aof.set(log);
        }
        // The load and the replay fill the shards directly: count what they hold.
        store.keys.recount();
        store.set_memory_limit(settings.maxmemory);
        Ok(store)
    }

    /// Bytes the store's data holds, keys, values and the ledger's records, as counted
    /// ([`memory`]); what `PKV_MAXMEMORY` is held against.
    pub fn memory_used(&self) -> u64 {
        self.keys.memory_used()
    }

    /// `PKV_MAXMEMORY` in force, in bytes; 0 when there is no limit.
    pub fn memory_limit(&self) -> u64 {
        self.memory_limit.load(Ordering::Relaxed)
    }

    /// Sets the limit (at start-up and on a settings reload); 0 removes it.
    pub fn set_memory_limit(&self, bytes: u64) {
        self.memory_limit.store(bytes, Ordering::Relaxed);
    }

    /// Refuses a `denyoom` command when the data and the request would pass the limit,
    /// before it runs, as Redis does ([`memory::refuses`]).
    fn admit(&self, args: &[&[u8]]) -> Result<(), Error> {
        let limit = self.memory_limit();
        if limit > 0 && memory::refuses(self.memory_used(), limit, args) {
            return Err(StoreError::OutOfMemory.into());
        }
        Ok(())
    }

    /// A command queued in a transaction is refused, as Redis 7.0 refuses it, when the
    /// memory in use is over the limit whatever the command (queuing holds memory too), or
    /// when it would be refused alone; the session then answers EXEC with EXECABORT.
    fn admit_queued(&self, args: &[&[u8]]) -> Result<(), Error> {
        let limit = self.memory_limit();
        if limit > 0 && self.memory_used() > limit {
            return Err(StoreError::OutOfMemory.into());
        }
        self.admit(args)
    }

    /// A transaction is refused whole at EXEC when one of its commands would be refused
    /// alone (as Redis refuses EXEC over `maxmemory` when it queued a `denyoom` command):
    /// its requests count together.
    fn admit_transaction(&self, queued: &[Call]) -> Result<(), Error> {
        let limit = self.memory_limit();
        if limit == 0 {
            return Ok(());
        }
        let calls: Vec<Vec<&[u8]>> = queued.iter().map(arg_slices).collect();
        if !calls.iter().any(|args| memory::denies_oom(args)) {
            return Ok(());
        }
        let bytes: u64 = calls
            .iter()
            .map(|args| memory::request_bytes(args) as u64)
            .sum();
        if self.memory_used().saturating_add(bytes) > limit {
            return Err(StoreError::OutOfMemory.into());
        }
        Ok(())
    }

    /// The append-only log, when there is a data file.
    pub fn aof(&self) -> Option<&aof::Aof> {
        self.aof.get().map(|a| &**a)
    }

    /// Whether persistence works: `Err` says why not (the log cannot be written, so writes
    /// are refused; or the last snapshot failed). For a readiness check.
    pub fn health(&self) -> Result<(), String> {
        if let Some(why) = self.aof().and_then(aof::Aof::failure) {
            return Err(format!("the append-only log cannot be written: {why}"));
        }
        let snapshot = self
            .snapshot_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match &*snapshot {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    /// Remembers how the last snapshot went, for [`Store::health`].
    fn snapshot_outcome(&self, error: Option<&String>) {
        *self
            .snapshot_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = error.cloned();
    }

    /// True when `command` may change the store.
    fn writes(command: &Runnable, args: &[&[u8]]) -> bool {
        match command.kind {
            Kind::Read => false,
            Kind::Write => true,
            Kind::Multi => {
                table_keys(args).is_some_and(|(spec, _)| spec.has(crate::commands::flags::WRITE))
            }
        }
    }

    /// Appends the state of every key a multi-key write changed to the log. A single-key
    /// write logged its change as it made it ([`delta`]).
    fn log_effects(&self, touched: Option<&delta::Touched>, now: i64) {
        let (Some(aof), Some(touched)) = (self.aof(), touched) else {
            return;
        };
        for key in touched.keys() {
            self.log_state(aof, &key, now);
        }
    }

    /// Logs `key`'s whole state, under its shard's lock, with a fresh change counter.
    fn log_state(&self, aof: &aof::Aof, key: &[u8], now: i64) {
        let mut shard = self.keys.write_shard(self.keys.shard_of(key));
        match shard.get_mut(key).filter(|e| !e.expired(now)) {
            Some(entry) => {
                entry.version = delta::fresh();
                aof.record(key, Some(entry));
            }
            None => aof.record(key, None),
        }
    }

    /// Logs `key`'s state now (a ledger step's effect).
    fn log_key(&self, key: &[u8]) {
        if let Some(aof) = self.aof() {
            self.log_state(aof, key, now_ms());
        }
    }

    /// Logs the states of `keys` now as one record, replayed whole or not at all (a ledger
    /// step that changes several keys; it holds the ledger lock, so none of them changes meanwhile).
    fn log_keys_together(&self, keys: &[&[u8]]) {
        if let Some(aof) = self.aof() {
            let mut states = Vec::new();
            for key in keys {
                self.keys.read(key, now_ms(), |entry| {
                    aof::encode_state(&mut states, key, entry)
                });
            }
            aof.record_together(&states);
        }
    }

    /// With `PKV_APPENDFSYNC=always`, waits until every write so far is fsynced: a reply
    /// that says a write is done goes out after this.
    async fn commit(&self) -> Result<(), String> {
        match self.aof() {
            Some(aof) if aof.policy() == aof::Policy::Always => aof.wait_synced().await,
            _ => Ok(()),
        }
    }

    /// [`Store::commit`] for a batch: on failure, the replies of its writes become the
    /// error (they are in memory, but not known to be on disk).
    async fn commit_replies(&self, writes: &[bool], mut replies: Vec<Frame>) -> Vec<Frame> {
        if !writes.iter().any(|w| *w) {
            return replies;
        }
        if let Err(why) = self.commit().await {
            let line = ClientError::from(StoreError::Misconf(why)).line();
            for (reply, _) in replies.iter_mut().zip(writes).filter(|(_, w)| **w) {
                *reply = Frame::error(line.clone());
            }
        }
        replies
    }

    /// Runs one command (keys already in the namespace) with the right lock, now. It may
    /// wait for the gate: for tests and the blocking pool, never a runtime worker thread.
    pub fn run(&self, proto: Proto, args: &[&[u8]]) -> Reply {
        let command = args.first().and_then(|name| cmd::find(name));
        self.run_at(proto, command, args, now_ms(), || false)
    }

    /// One attempt of a blocking command, run now without making the calling worker thread
    /// wait for the gate: in place when it can ([`Store::try_shared`]), else on the blocking
    /// pool (which may fail to run it). On the pool, it does not run when `abandoned` is set
    /// before it gets the gate: the pool's task outlives the future that spawned it, so
    /// without this a pop retried for a client that left could still take an element, for
    /// no one.
    async fn attempt(
        &self,
        proto: Proto,
        call: &Call,
        abandoned: Arc<AtomicBool>,
    ) -> Result<Reply, BackendError> {
        let now = now_ms();
        let args = arg_slices(call);
        let job = [(handler(call), &args[..])];
        if let Some(mut replies) = self.try_shared(proto, &job, now) {
            if let Some(reply) = replies.pop() {
                return Ok(reply);
            }
        }
        let (store, call) = (self.clone(), call.clone());
        off_thread(move || {
            let is_abandoned = || abandoned.load(Ordering::Acquire);
            store.run_at(proto, handler(&call), &arg_slices(&call), now, is_abandoned)
        })
        .await
    }

    /// Runs a batch in place, in order, when none of its commands is a multi-key one (they
    /// hold stripes exclusively) or a long read ([`cmd::Runnable::long`]) and the stripes of
    /// its keys are free for readers right now (no exclusive holder runs or waits on them);
    /// `None` otherwise, and nothing ran. The batch holds the union of its stripes shared,
    /// once.
    fn try_shared(&self, proto: Proto, batch: &[Job<'_>], now: i64) -> Option<Vec<Reply>> {
        let exclusive_or_long = batch.iter().any(|(command, args)| {
            command.is_some_and(|c| {
                c.kind == Kind::Multi
                    || c.long
                    || (c.scans && args.get(1).is_some_and(|key| self.holds_big(key, now)))
            })
        });
        if exclusive_or_long {
            return None;
        }
        let stripes = batch.iter().fold(Stripes::NONE, |all, (command, args)| {
            all.union(self.stripes_for(*command, args).0)
        });
        let _shared = self.gate.try_shared(stripes)?;
        Some(
            batch
                .iter()
                .map(|(command, args)| self.run_held(proto, *command, args, now))
                .collect(),
        )
    }

    /// True when `key` holds a big value ([`data::Data::is_big`]), or when its shard is
    /// being written now (the command then waits on the blocking pool, not here).
    fn holds_big(&self, key: &[u8], now: i64) -> bool {
        self.keys
            .try_check(key, now, |e| e.data.is_big())
            .unwrap_or(true)
    }

    /// Runs a command whose lock the caller holds.
    fn run_held(
        &self,
        proto: Proto,
        command: Option<&'static Runnable>,
        args: &[&[u8]],
        now: i64,
    ) -> Reply {
        let Some(command) = command else {
            return Err(not_here(args.first().copied().unwrap_or_default()));
        };
        if let Some(why) = self.aof().and_then(aof::Aof::failure) {
            if Store::writes(command, args) {
                return Err(StoreError::Misconf(why).into());
            }
        }
        self.admit(args)?;
        let watched = self.before_write(command, args, now);
        let logging = match (command.kind, self.aof.get()) {
            (Kind::Write, Some(aof)) => {
                Some(delta::Logging::begin(aof.clone(), command.name, args))
            }
            _ => None,
        };
        let touched =
            (command.kind == Kind::Multi && self.aof.get().is_some()).then(delta::Touched::begin);
        let reply = memory::with_request(memory::request_bytes(args), || {
            self.execute(command, proto, args, now)
        });
        drop(logging);
        // Whatever the reply: a change made is a change logged.
        self.log_effects(touched.as_ref(), now);
        if let Ok(frame) = &reply {
            self.written(command, args);
            if let Some(watched) = watched {
                self.publish_events(command, args, frame, watched, now);
            }
        }
        reply
    }

    /// Runs one command as of `now` (ms since the epoch) under the lock its kind needs: the
    /// commands of one batch share one clock reading.
    /// Nothing runs when `abandoned()` answers true once the lock is held.
    fn run_at(
        &self,
        proto: Proto,
        command: Option<&'static Runnable>,
        args: &[&[u8]],
        now: i64,
        abandoned: impl Fn() -> bool,
    ) -> Reply {
        let (stripes, mode) = self.stripes_for(command, args);
        let _held = self.gate.hold(stripes, mode);
        if abandoned() {
            return Err(Error::from(StoreError::Abandoned));
        }
        self.run_held(proto, command, args, now)
    }

    /// The gate stripes a command holds, and how ([`gate`]): a single-key command its
    /// key's, shared; a multi-key command its keys', exclusively, so that it runs alone
    /// on them, reads included (an MGET sees its keys at one instant, as in Redis); a
    /// command that walks the keyspace every stripe, shared; one whose keys cannot be
    /// located (SORT's BY and GET patterns name keys by the elements) every stripe,
    /// exclusively.
    fn stripes_for(&self, command: Option<&Runnable>, args: &[&[u8]]) -> (Stripes, Mode) {
        let Some(command) = command else {
            // Not run here: it touches nothing.
            return (Stripes::NONE, Mode::Shared);
        };
        let mode = match command.kind {
            Kind::Multi => Mode::Exclusive,
            Kind::Read | Kind::Write => Mode::Shared,
        };
        match command.keys_at {
            KeysAt::First => match args.get(1) {
                Some(key) => (Stripes::one(self.stripe_of(key)), mode),
                None => (Stripes::NONE, mode),
            },
            KeysAt::Nowhere => (Stripes::NONE, mode),
            KeysAt::Anywhere => (Stripes::ALL, mode),
            KeysAt::Located => match table_keys(args) {
                _ if cmd::sort::names_other_keys(command.name, args) => (Stripes::ALL, mode),
                Some((_, keys)) => (
                    keys.iter()
                        .fold(Stripes::NONE, |set, key| set.with(self.stripe_of(key))),
                    mode,
                ),
                // Keys that cannot be located (a malformed call, which fails anyway).
                None => (Stripes::ALL, Mode::Exclusive),
            },
        }
    }

    /// The gate stripe of `key`: a function of its keyspace shard.
    fn stripe_of(&self, key: &[u8]) -> usize {
        gate::stripe_of_shard(self.keys.shard_of(key))
    }

    /// Runs a command under whatever lock the caller holds.
    fn execute(&self, command: &Runnable, proto: Proto, args: &[&[u8]], now: i64) -> Reply {
        let mut cx = Cx {
            store: self,
            proto,
            now,
        };
        (command.run)(&mut cx, args)
    }

    /// Runs a transaction's commands alone, in order, at one instant (as Redis does);
    /// blocking commands do not block. Holds the stripes of every key they touch
    /// exclusively, so nothing sees the transaction half done and nothing it reads changes
    /// under it. Waits for them: call it off the worker threads. (Clients' transactions
    /// go through [`Store::run_unless_written`], which also checks their watched keys.)
    #[cfg(test)]
    fn run_all(&self, proto: Proto, queued: &[Call]) -> Vec<Frame> {
        self.run_unless_written(proto, queued, Vec::new(), &[], &AtomicBool::new(false))
            .unwrap_or_default()
    }

    /// [`Store::run_all`] for a transaction that may hold scripts and watches `watched`:
    /// `None`, and nothing run, when `dirty` says one of them was written. It decides while
    /// it holds their stripes too, so a write to a watched key is either seen (it flagged
    /// `dirty` before releasing its stripe) or comes after the whole transaction. Each
    /// script runs before the queued command its position names (at the end for
    /// `queued.len()`); with scripts it holds every stripe (their keys are known only as
    /// they run).
    fn run_unless_written(
        &self,
        proto: Proto,
        queued: &[Call],
        scripts: Vec<(usize, script::Queued)>,
        watched: &[Vec<u8>],
        dirty: &AtomicBool,
    ) -> Option<Vec<Frame>> {
        let stripes = if scripts.is_empty() {
            queued.iter().fold(Stripes::NONE, |all, call| {
                all.union(self.stripes_for(handler(call), &arg_slices(call)).0)
            })
        } else {
            Stripes::ALL
        };
        let stripes = watched
            .iter()
            .fold(stripes, |all, key| all.with(self.stripe_of(key)));
        let _alone = self.gate.hold(stripes, Mode::Exclusive);
        if dirty.load(Ordering::Acquire) {
            return None;
        }
        let now = now_ms();
        let held_since = std::time::Instant::now();
        let mut scripts = scripts.into_iter().peekable();
        Some(memory::admitted_while(|| {
            let mut replies = Vec::with_capacity(queued.len() + scripts.len());
            for at in 0..=queued.len() {
                while let Some((_, script)) = scripts.next_if(|(i, _)| *i <= at) {
                    replies.push(self.run_queued(script, now, held_since.elapsed()));
                }
                if let Some(call) = queued.get(at) {
                    replies.push(into_frame(self.run_held(
                        proto,
                        handler(call),
                        &arg_slices(call),
                        now,
                    )));
                }
            }
            replies
        }))
    }

    /// After a write: flags the transactions watching the keys it wrote and wakes the
    /// clients blocked on them. Costs nothing while no one watches or waits. Multi-key
    /// commands signal only when the command table says they write (MGET does not).
    fn written(&self, command: &Runnable, args: &[&[u8]]) {
        if !matches!(command.kind, Kind::Write | Kind::Multi) {
            return;
        }
        if self.watches.active.load(Ordering::Acquire) == 0
            && self.waiters.active.load(Ordering::Acquire) == 0
        {
            return;
        }
        let keys = match command.kind {
            Kind::Multi => match table_keys(args) {
                Some((spec, keys)) if spec.has(crate::commands::flags::WRITE) => keys,
                _ => return,
            },
            _ => keys_of(command, args),
        };
        for key in keys {
            self.watches.touch(&key);
            self.waiters.wake(&key);
        }
    }

    /// Deletes expired keys in a few shards, starting at `first`; returns the next shard.
    fn expire_some(&self, first: usize) -> usize {
        let now = now_ms();
        let mut expired = 0;
        for i in 0..EXPIRY_SHARDS_PER_TICK {
            expired += self.keys.expire_shard((first + i) % SHARDS, now);
        }
        crate::metrics::figures()
            .expired_keys
            .fetch_add(expired as u64, std::sync::atomic::Ordering::Relaxed);
        (first + EXPIRY_SHARDS_PER_TICK) % SHARDS
    }

    /// Runs a blocking command: when it finds nothing, waits for a write to its keys and
    /// tries again, until its timeout.
    async fn run_blocking(&self, proto: Proto, call: &Call) -> Frame {
        let args = arg_slices(call);
        let Some(command) = handler(call) else {
            return into_frame(Err(not_here(args.first().copied().unwrap_or_default())));
        };
        let keys = keys_of(command, &args);
        // XREAD's `$` means the last ID when the command came, not when it runs again.
        let cx = Cx {
            store: self,
            proto,
            now: now_ms(),
        };
        let pinned = cmd::streams::pin_last_ids(&cx, &args).and_then(|a| {
            Some(Call::new(
                call.spec()?,
                a.into_iter().map(Bytes::from).collect(),
            ))
        });
        let call = pinned.as_ref().unwrap_or(call);
        let mut deadline = None;
        // Set when this future is dropped: its client left.
        let abandoned = Abandoned::default();
        let mut again = false;
        loop {
            let registration = self.waiters.register(&keys);
            let mut woken: Vec<_> = registration
                .notifies
                .iter()
                .map(|n| Box::pin(n.notified()))
                .collect();
            woken.iter_mut().for_each(|w| {
                w.as_mut().enable();
            });
            // Woken streams commands first check what Redis checks when it wakes them.
            let wake = if again {
                let cx = Cx {
                    store: self,
                    proto,
                    now: now_ms(),
                };
                cmd::streams::on_wake(&cx, &args)
            } else {
                cmd::streams::Wake::Run
            };
            again = true;
            let outcome = match wake {
                cmd::streams::Wake::Run => self.attempt(proto, call, abandoned.0.clone()).await,
                cmd::streams::Wake::Wait => Ok(Err(Error::Block { timeout_ms: 0 })),
                cmd::streams::Wake::Fail(err) => Ok(Err(err)),
            };
            let timeout_ms = match outcome {
                Ok(Err(Error::Block { timeout_ms })) => timeout_ms,
                other => return other.map_or_else(|e| error_frame(e.into()), into_frame),
            };
            let deadline = *deadline.get_or_insert_with(|| {
                // A deadline past what the clock can hold is no deadline: it waits for ever.
                (timeout_ms > 0)
                    .then(|| {
                        tokio::time::Instant::now().checked_add(Duration::from_millis(timeout_ms))
                    })
                    .flatten()
            });
            let expired = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let timed_out = tokio::select! {
                _ = futures_util::future::select_all(woken) => false,
                () = expired => true,
            };
            if timed_out {
                // Redis 7 answers every blocking command that timed out with the null
                // array (`*-1` in RESP2).
                return Frame::NullArray;
            }
        }
    }
}

/// Runs `f` on the runtime's blocking pool, so that neither a wait for the gate nor a long
/// command holds a worker thread that serves connections.
async fn off_thread<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, BackendError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::Lost(format!("embedded store: {e}")))
}

/// The keys of a command: `args[1]` for single-key commands, the command table's key
/// positions for the others.
fn keys_of(command: &Runnable, args: &[&[u8]]) -> Vec<Vec<u8>> {
    if command.kind != Kind::Multi {
        return args.get(1).map(|k| k.to_vec()).into_iter().collect();
    }
    table_keys(args).map(|(_, keys)| keys).unwrap_or_default()
}

/// A command's row in the table and its keys, located the way the request path does.
fn table_keys(args: &[&[u8]]) -> Option<(&'static CommandSpec, Vec<Vec<u8>>)> {
    let owned: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
    let spec = crate::commands::lookup(&owned).ok()?;
    let keys = crate::commands::key_args(spec, &owned).ok()?;
    Some((
        spec,
        keys.into_iter().map(|(i, _)| owned[i].to_vec()).collect(),
    ))
}

/// A command resolved to its handler (`None`: the store does not run it), and its
/// arguments.
type Job<'a> = (Option<&'static Runnable>, &'a [&'a [u8]]);

/// The handler of a call, from its row of the command table.
fn handler(call: &Call) -> Option<&'static Runnable> {
    call.spec().and_then(cmd::for_spec)
}

/// A call's arguments as the handlers take them.
fn arg_slices(call: &Call) -> Vec<&[u8]> {
    call.args().iter().map(|a| a.as_ref()).collect()
}

/// A handler's outcome as the frame the request path relays. A blocking command that
/// cannot block answers with its null reply.
fn into_frame(reply: Reply) -> Frame {
    match reply {
        Ok(frame) => frame,
        Err(Error::Store(err)) => error_frame(err.into()),
        Err(Error::Block { .. }) => Frame::Null,
    }
}

/// The error reply for `err`.
fn error_frame(err: ClientError) -> Frame {
    Frame::error(err.line())
}

impl Backend for Store {
    fn pipeline<'a>(
        &'a self,
        proto: Proto,
        calls: &'a [Call],
    ) -> BoxFuture<'a, Result<Vec<Frame>, BackendError>> {
        let now = now_ms();
        let args: Vec<Vec<&[u8]>> = calls.iter().map(arg_slices).collect();
        let batch: Vec<Job<'_>> = calls
            .iter()
            .zip(&args)
            .map(|(call, args)| (handler(call), &args[..]))
            .collect();
        let writes: Vec<bool> = batch
            .iter()
            .map(|(command, args)| command.is_some_and(|c| Store::writes(c, args)))
            .collect();
        if let Some(replies) = self.try_shared(proto, &batch, now) {
            let replies: Vec<Frame> = replies.into_iter().map(into_frame).collect();
            let waits = self
                .aof()
                .is_some_and(|a| a.policy() == aof::Policy::Always);
            if !waits || !writes.contains(&true) {
                return Box::pin(std::future::ready(Ok(replies)));
            }
            return Box::pin(async move { Ok(self.commit_replies(&writes, replies).await) });
        }
        let (store, calls) = (self.clone(), calls.to_vec());
        Box::pin(async move {
            let replies = off_thread(move || {
                calls
                    .iter()
                    .map(|call| {
                        into_frame(store.run_at(
                            proto,
                            handler(call),
                            &arg_slices(call),
                            now,
                            || false,
                        ))
                    })
                    .collect()
            })
            .await?;
            Ok(self.commit_replies(&writes, replies).await)
        })
    }

    fn dedicated(&self, proto: Proto) -> BoxFuture<'_, Result<Box<dyn Dedicated>, BackendError>> {
        let conn = Connection {
            store: self.clone(),
            proto,
            queued: None,
            scripts: Vec::new(),
            watched: Vec::new(),
            dirty: Arc::new(AtomicBool::new(false)),
        };
        Box::pin(std::future::ready(Ok(Box::new(conn) as Box<dyn Dedicated>)))
    }

    fn subscription(&self, max_queued: usize) -> BoxFuture<'_, Result<Subscription, BackendError>> {
        let sub = pubsub::subscription(self.channels.clone(), max_queued);
        Box::pin(std::future::ready(Ok(sub)))
    }

    fn housekeeping(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let expiry = async {
                let mut next = 0;
                let mut tick = tokio::time::interval(EXPIRY_TICK);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    next = self.expire_some(next);
                }
            };
            tokio::join!(expiry, self.save_forever());
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            // Everything written is on disk in the log before the last snapshot is tried:
            // if the snapshot fails (a full disk), nothing acknowledged is lost.
            let logged = match self.aof() {
                Some(aof) => aof.wait_synced().await.is_ok(),
                None => false,
            };
            match self.save_at_shutdown().await {
                Err(e) if logged => {
                    tracing::error!(error = %e,
                        "the snapshot at shutdown failed; the append-only log holds every write");
                    Ok(())
                }
                other => other,
            }
        })
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        // The log first; then the snapshots: the last one's outcome and their age.
        let log = match self.aof().and_then(aof::Aof::failure) {
            Some(why) => Err(format!(
                "persistence: the append-only log cannot be written: {why}"
            )),
            None => Ok(()),
        };
        let health = log.and_then(|()| {
            self.persistence
                .as_ref()
                .map_or(Ok(()), |p| p.health.check(p.every))
        });
        Box::pin(std::future::ready(health))
    }

    fn reconfigure(&self, settings: &Settings) {
        self.set_memory_limit(settings.maxmemory);
    }

    fn embedded(&self) -> Option<&Store> {
        Some(self)
    }

    fn figures(&self) -> crate::metrics::BackendFigures {
        crate::metrics::BackendFigures {
            keys: Some(
                (0..SHARDS)
                    .map(|i| self.keys.read_shard(i).len() as u64)
                    .sum(),
            ),
            snapshot: self.persistence.as_ref().map(|p| p.health.figures()),
            memory: Some((self.memory_used(), self.memory_limit())),
            ..Default::default()
        }
    }
}

/// One client's connection to the store: its transaction and its watched keys.
struct Connection {
    store: Store,
    proto: Proto,
    /// Commands queued since MULTI.
    queued: Option<Vec<Call>>,
    /// Scripts queued since MULTI, each with the number of commands queued before it.
    scripts: Vec<(usize, script::Queued)>,
    watched: Vec<Vec<u8>>,
    /// Set when a watched key is written.
    dirty: Arc<AtomicBool>,
}

impl Connection {
    async fn one(&mut self, call: &Call) -> Frame {
        let args = call.args();
        let name = args
            .first()
            .map(|n| n.to_ascii_uppercase())
            .unwrap_or_default();
        match name.as_slice() {
            b"MULTI" if self.queued.is_some() => error_frame(ClientError::NestedMulti),
            b"MULTI" => {
                self.queued = Some(Vec::new());
                Frame::OK
            }
            b"EXEC" => match self.queued.take() {
                None => error_frame(ClientError::ExecWithoutMulti),
                Some(queued) => {
                    let scripts = std::mem::take(&mut self.scripts);
                    let dirty = self.dirty.load(Ordering::Acquire);
                    let reply = if dirty {
                        Frame::NullArray
                    } else if let Err(oom) = self.store.admit_transaction(&queued) {
                        into_frame(Err(oom))
                    } else {
                        let (store, proto) = (self.store.clone(), self.proto);
                        let (watched, dirty) = (self.watched.clone(), self.dirty.clone());
                        let run = move || {
                            store.run_unless_written(proto, &queued, scripts, &watched, &dirty)
                        };
                        match off_thread(run).await {
                            Ok(Some(results)) => Frame::Array(results),
                            Ok(None) => Frame::NullArray,
                            Err(e) => error_frame(e.into()),
                        }
                    };
                    self.unwatch();
                    reply
                }
            },
            b"DISCARD" => match self.queued.take() {
                None => error_frame(ClientError::DiscardWithoutMulti),
                Some(_) => {
                    self.scripts.clear();
                    self.unwatch();
                    Frame::OK
                }
            },
            b"WATCH" if self.queued.is_some() => error_frame(ClientError::WatchInMulti),
            b"WATCH" => {
                for key in &args[1..] {
                    self.store.watches.add(key, &self.dirty);
                    self.watched.push(key.to_vec());
                }
                Frame::OK
            }
            b"UNWATCH" => {
                self.unwatch();
                Frame::OK
            }
            _ => match &mut self.queued {
                Some(queued) => {
                    if handler(call).is_none() {
                        return into_frame(Err(not_here(&name)));
                    }
                    if let Err(oom) = self.store.admit_queued(&arg_slices(call)) {
                        return into_frame(Err(oom));
                    }
                    queued.push(call.clone());
                    Frame::QUEUED
                }
                None => self.store.run_blocking(self.proto, call).await,
            },
        }
    }

    fn unwatch(&mut self) {
        for key in self.watched.drain(..) {
            self.store.watches.remove(&key, &self.dirty);
        }
        self.dirty.store(false, Ordering::Release);
    }
}

impl Dedicated for Connection {
    fn pipeline<'a>(
        &'a mut self,
        calls: &'a [Call],
    ) -> BoxFuture<'a, Result<Vec<Frame>, BackendError>> {
        Box::pin(async move {
            let mut replies = Vec::with_capacity(calls.len());
            for call in calls {
                let reply = self.one(call).await;
                let name = call.args().first().map(|n| n.to_ascii_uppercase());
                let wrote = match handler(call) {
                    _ if name.as_deref() == Some(b"EXEC") => true,
                    Some(c) if self.queued.is_none() => Store::writes(c, &arg_slices(call)),
                    _ => false,
                };
                let mut reply = self.store.commit_replies(&[wrote], vec![reply]).await;
                replies.append(&mut reply);
            }
            Ok(replies)
        })
    }

    fn queue_script(&mut self, script: script::Queued) -> Option<Frame> {
        let queued = self.queued.as_ref()?;
        self.scripts.push((queued.len(), script));
        Some(Frame::QUEUED)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.unwatch();
    }
}

/// Which transactions watch which keys.
#[derive(Default)]
struct Watches {
    /// Watched (key, transaction) pairs, so that writes skip the lock when there are none.
    active: AtomicUsize,
    by_key: Mutex<HashMap<Vec<u8>, Vec<Weak<AtomicBool>>>>,
}

impl Watches {
    fn add(&self, key: &[u8], dirty: &Arc<AtomicBool>) {
        let mut map = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_vec())
            .or_default()
            .push(Arc::downgrade(dirty));
        self.active.fetch_add(1, Ordering::Release);
    }

    fn remove(&self, key: &[u8], dirty: &Arc<AtomicBool>) {
        let mut map = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = map.get_mut(key) {
            let target = Arc::downgrade(dirty);
            if let Some(i) = list.iter().position(|w| w.ptr_eq(&target)) {
                list.swap_remove(i);
                self.active.fetch_sub(1, Ordering::Release);
            }
            if list.is_empty() {
                map.remove(key);
            }
        }
    }

    fn touch(&self, key: &[u8]) {
        let map = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = map.get(key) {
            for dirty in list.iter().filter_map(Weak::upgrade) {
                dirty.store(true, Ordering::Release);
            }
        }
    }
}

/// Clients blocked on keys.
#[derive(Default)]
struct Waiters {
    /// Blocked clients, so that writes skip the lock when there are none.
    active: AtomicUsize,
    by_key: Mutex<HashMap<Vec<u8>, Arc<Notify>>>,
}

/// A blocked client's place among the [`Waiters`], given back when dropped, however the
/// wait ends (its client may leave at any await).
struct Registration<'a> {
    waiters: &'a Waiters,
    keys: &'a [Vec<u8>],
    notifies: Vec<Arc<Notify>>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.notifies.clear();
        let mut map = self
            .waiters
            .by_key
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for key in self.keys {
            if map.get(key).is_some_and(|n| Arc::strong_count(n) == 1) {
                map.remove(key);
            }
        }
        self.waiters.active.fetch_sub(1, Ordering::Release);
    }
}

/// Set when a blocking command's future is dropped ([`Store::attempt`]).
#[derive(Default)]
struct Abandoned(Arc<AtomicBool>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Waiters {
    fn register<'a>(&'a self, keys: &'a [Vec<u8>]) -> Registration<'a> {
        let mut map = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        self.active.fetch_add(1, Ordering::Release);
        let notifies = keys
            .iter()
            .map(|k| map.entry(k.clone()).or_default().clone())
            .collect();
        Registration {
            waiters: self,
            keys,
            notifies,
        }
    }

    fn wake(&self, key: &[u8]) {
        let map = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(notify) = map.get(key) {
            notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn call(words: &[&'static str]) -> Call {
        let mut call = Call::named(words[0]);
        for word in &words[1..] {
            call = call.arg(*word);
        }
        call
    }

    fn len(store: &Store, key: &'static str) -> Frame {
        let c = call(&["LLEN", key]);
        into_frame(
            store.run_at(Proto::Resp2, handler(&c), &arg_slices(&c), now_ms(), || {
                false
            }),
        )
    }

    /// Two keys of different gate stripes, for tests that must span stripes.
    fn keys_in_two_stripes(store: &Store, prefix: &str) -> (String, String) {
        let first = format!("{prefix}0");
        let stripe = store.stripe_of(first.as_bytes());
        let second = (1..)
            .map(|i| format!("{prefix}{i}"))
            .find(|k| store.stripe_of(k.as_bytes()) != stripe)
            .unwrap();
        (first, second)
    }

    fn owned_call(words: &[&str]) -> Call {
        let name: &'static str = Box::leak(words[0].to_owned().into_boxed_str());
        words[1..]
            .iter()
            .fold(Call::named(name), |c, w| c.arg(w.as_bytes().to_vec()))
    }

    fn run_words(store: &Store, words: &[&str]) -> Frame {
        let args: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        into_frame(store.run(Proto::Resp2, &args))
    }

    /// Multi-key writes (MSET, a transaction, RENAME) on keys of different stripes are never
    /// seen half done by multi-key reads (MGET, EXISTS, a transaction of GETs), while
    /// single-key writes to other keys of the same stripes run alongside.
    #[test]
    fn multi_key_commands_across_stripes_are_never_seen_half_done() {
        const ROUNDS: usize = 10_000;
        let store = Store::default();
        let (a, b) = keys_in_two_stripes(&store, "a");
        let (c, d) = keys_in_two_stripes(&store, "c");
        let (a, b, c, d) = (a.as_str(), b.as_str(), c.as_str(), d.as_str());
        run_words(&store, &["MSET", a, "0", b, "0"]);
        run_words(&store, &["SET", c, "x"]);
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let writers = vec![
                // MSET and a transaction write a and b together.
                scope.spawn(|| {
                    for i in 0..ROUNDS {
                        let v = format!("m{i}");
                        run_words(&store, &["MSET", a, &v, b, &v]);
                    }
                }),
                scope.spawn(|| {
                    for i in 0..ROUNDS {
                        let v = format!("x{i}");
                        let queued = [owned_call(&["SET", a, &v]), owned_call(&["SET", b, &v])];
                        store.run_all(Proto::Resp2, &queued);
                    }
                }),
                // RENAME moves the one value between c and d: exactly one of them exists.
                scope.spawn(|| {
                    for i in 0..ROUNDS {
                        let (from, to) = if i % 2 == 0 { (c, d) } else { (d, c) };
                        assert_eq!(run_words(&store, &["RENAME", from, to]), Frame::OK);
                    }
                }),
                // Single-key writes to other keys, of the same stripes among others.
                scope.spawn(|| {
                    for i in 0..ROUNDS {
                        run_words(&store, &["SET", &format!("a{}", 1000 + i % 50), "other"]);
                    }
                }),
            ];
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        let mut reads = 0;
                        while !stop.load(Ordering::Acquire) || reads == 0 {
                            match run_words(&store, &["MGET", a, b]) {
                                Frame::Array(v) => assert_eq!(v[0], v[1], "MGET saw {v:?}"),
                                other => panic!("{other:?}"),
                            }
                            let gets = [owned_call(&["GET", a]), owned_call(&["GET", b])];
                            let got = store.run_all(Proto::Resp2, &gets);
                            assert_eq!(got[0], got[1], "a transaction saw {got:?}");
                            assert_eq!(
                                run_words(&store, &["EXISTS", c, d]),
                                Frame::Integer(1),
                                "EXISTS saw a RENAME half done"
                            );
                            reads += 1;
                        }
                        reads
                    })
                })
                .collect();
            for writer in writers {
                writer.join().unwrap();
            }
            stop.store(true, Ordering::Release);
            for reader in readers {
                assert!(reader.join().unwrap() > 0);
            }
        });
    }

    /// A client that leaves while blocked gives its place back: nothing is left among the
    /// waiters, however many clients came and went.
    #[tokio::test]
    async fn a_blocked_client_that_leaves_leaves_no_waiter_behind() {
        let store = Store::default();
        for i in 0..100 {
            let key: &'static str = Box::leak(format!("q{i}").into_boxed_str());
            let blpop = call(&["BLPOP", key, "0"]);
            let wait = store.run_blocking(Proto::Resp2, &blpop);
            // Polled until it waits, then dropped, as when its client goes.
            assert!(tokio::time::timeout(Duration::from_millis(20), wait)
                .await
                .is_err());
        }
        assert_eq!(store.waiters.active.load(Ordering::Acquire), 0);
        assert!(store.waiters.by_key.lock().unwrap().is_empty());
    }

    /// A ledger step (a lease, every second per active account) while a long read holds
    /// the gate shared: it does not wait for the read, so readers do not queue behind it.
    // The test holds the gate across the await on purpose: that is the read it stands for.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn a_ledger_step_does_not_wait_for_a_long_read() {
        use crate::meter::ledger::{Book, LeaseRequest};
        let store = Store::default();
        let held = store.clone();
        let reading = held.gate.all_shared();
        let lease = store.lease("acct", &LeaseRequest { seq: 1, want: 5 });
        let granted = tokio::time::timeout(Duration::from_secs(5), lease).await;
        assert!(
            matches!(granted, Ok(Ok(_))),
            "the lease waited for the read: {granted:?}"
        );
        drop(reading);
    }

    /// A ledger step holds only the stripes of the ledger keys it changes: a tenant's lease
    /// does not wait for another tenant's long multi-key command on keys of other stripes.
    // The test holds the stripes across the await on purpose: that is the command it stands for.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn a_ledger_step_does_not_wait_for_a_multi_key_command_on_other_stripes() {
        use crate::meter::ledger::{account_key, Book, LeaseRequest};
        let store = Store::default();
        let own = store.stripe_of(account_key("acct").as_bytes());
        let others = (0..gate::STRIPES)
            .filter(|&s| s != own)
            .fold(Stripes::NONE, Stripes::with);
        let held = store.clone();
        let alone = held.gate.hold(others, Mode::Exclusive);
        let lease = store.lease("acct", &LeaseRequest { seq: 1, want: 5 });
        let granted = tokio::time::timeout(Duration::from_secs(5), lease).await;
        assert!(
            matches!(granted, Ok(Ok(_))),
            "the lease waited for the multi-key command: {granted:?}"
        );
        drop(alone);
    }

    /// EXEC decides on its watched keys while it holds them: a write to a watched key that
    /// is under way when EXEC comes (it holds the key's stripe, has changed the value, and
    /// has not yet flagged the watchers) makes the transaction fail, even when no queued
    /// command touches that key. Checked before it took its stripes, EXEC ran in between.
    // The test holds a stripe across awaits on purpose: that is the write it stands for.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exec_checks_its_watched_keys_while_it_holds_them() {
        let store = Store::default();
        let (watched, written) = keys_in_two_stripes(&store, "w");
        let mut conn = Connection {
            store: store.clone(),
            proto: Proto::Resp2,
            queued: None,
            scripts: Vec::new(),
            watched: Vec::new(),
            dirty: Arc::new(AtomicBool::new(false)),
        };
        for words in [
            &["WATCH", watched.as_str()][..],
            &["MULTI"],
            &["SET", written.as_str(), "1"],
        ] {
            conn.one(&owned_call(words)).await;
        }
        let held = store.clone();
        let writing = held.gate.hold(
            Stripes::one(store.stripe_of(watched.as_bytes())),
            Mode::Shared,
        );
        let exec = tokio::spawn(async move { conn.one(&owned_call(&["EXEC"])).await });
        // Time for an EXEC that does not wait for the watched key's stripe to finish.
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.watches.touch(watched.as_bytes());
        drop(writing);
        assert_eq!(exec.await.unwrap(), Frame::NullArray);
        assert_eq!(
            run_words(&store, &["EXISTS", written.as_str()]),
            Frame::Integer(0)
        );
    }

    /// A blocking pop whose attempt waits for the gate on the blocking pool, and whose
    /// client leaves meanwhile, takes nothing once it gets the gate.
    #[tokio::test]
    // The test holds the gate across awaits on purpose: that is the situation it sets up
    // (the pool's task waits for it on another thread).
    #[allow(clippy::await_holding_lock, clippy::readonly_write_lock)]
    async fn an_attempt_for_a_client_that_left_does_not_run() {
        let store = Store::default();
        let held = store.clone();
        let alone = held.gate.all_exclusive();
        let blpop = call(&["BLPOP", "q", "0"]);
        let wait = store.run_blocking(Proto::Resp2, &blpop);
        // The attempt cannot run in place (the gate is taken): it waits on the pool.
        assert!(tokio::time::timeout(Duration::from_millis(50), wait)
            .await
            .is_err());
        // An element arrives while the gate is still taken, after the client left.
        let rpush = call(&["RPUSH", "q", "x"]);
        let pushed = store.run_held(Proto::Resp2, handler(&rpush), &arg_slices(&rpush), now_ms());
        assert_eq!(into_frame(pushed), Frame::Integer(1));
        drop(alone);
        // Let the pool's task have the gate.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            len(&store, "q"),
            Frame::Integer(1),
            "the element is still there"
        );
    }
}
