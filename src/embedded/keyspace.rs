//! The keyspace: a fixed number of shards, each a hash map behind a read-write lock.
//!
//! Reads take a shard's read lock, so reads never wait for other reads; a write locks one
//! shard. The shards are numbered, which gives `SCAN` stable cursors (a cursor is the next
//! shard to visit: a key present for the whole scan is in one shard and is seen when that
//! shard is visited) and lets expiry and snapshots work one shard at a time.
//!
//! A shard lock is never held while another is taken.
//!
//! Each shard counts the memory its entries hold ([`super::memory`]), adjusted under its
//! write lock by every change: the store's memory in use is the sum of the shards' counts.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::data::Entry;
use super::memory;

/// Shards in the keyspace; a power of two.
pub const SHARDS: usize = 256;

pub type Shard = HashMap<Box<[u8]>, Entry>;

/// Told of each key removed because its time passed (keyspace notifications).
pub type ExpiredHook = Box<dyn Fn(&[u8]) + Send + Sync>;

pub struct Keyspace {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
    /// Bytes each shard's entries hold, changed only under that shard's write lock (by the
    /// methods below; a caller of [`Keyspace::write_shard`] that changes a shard calls
    /// [`Keyspace::recount`] after).
    used: Box<[AtomicI64]>,
    /// When set, an expired key is removed as soon as it is seen (a read included) and
    /// reported to it; otherwise reads only skip it until a write or the sweep removes it.
    expired: OnceLock<ExpiredHook>,
}

impl Default for Keyspace {
    fn default() -> Self {
        Keyspace {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            used: (0..SHARDS).map(|_| AtomicI64::new(0)).collect(),
            expired: OnceLock::new(),
        }
    }
}

impl Keyspace {
    /// The shard `key` lives in.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        (self.hasher.hash_one(key) as usize) & (SHARDS - 1)
    }

    pub fn read_shard(&self, index: usize) -> RwLockReadGuard<'_, Shard> {
        self.shards[index]
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn write_shard(&self, index: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shards[index]
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reports each key removed because it expired to `hook` from now on.
    pub fn on_expired(&self, hook: ExpiredHook) {
        let _ = self.expired.set(hook);
    }

    fn report_expired(&self, key: &[u8]) {
        if let Some(hook) = self.expired.get() {
            hook(key);
        }
    }

    /// Runs `f` on the live entry under `key` (`None` if absent or expired at `now`).
    pub fn read<R>(&self, key: &[u8], now: i64, f: impl FnOnce(Option<&Entry>) -> R) -> R {
        let shard = self.read_shard(self.shard_of(key));
        let entry = shard.get(key);
        if self.expired.get().is_some() && entry.is_some_and(|e| e.expired(now)) {
            drop(shard);
            self.remove_expired(key, now);
            return f(None);
        }
        f(entry.filter(|e| !e.expired(now)))
    }

    /// Whether `key` holds a live entry that `f` accepts; `None` when its shard is locked
    /// for writing now. For runtime worker threads, which must not wait for it.
    pub fn try_check(&self, key: &[u8], now: i64, f: impl FnOnce(&Entry) -> bool) -> Option<bool> {
        let shard = match self.shards[self.shard_of(key)].try_read() {
            Ok(shard) => shard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(shard.get(key).is_some_and(|e| !e.expired(now) && f(e)))
    }

    /// Removes `key` if it is expired at `now`, and reports it.
    fn remove_expired(&self, key: &[u8], now: i64) {
        let index = self.shard_of(key);
        let mut shard = self.write_shard(index);
        if shard.get(key).is_some_and(|e| e.expired(now)) {
            if let Some(removed) = shard.remove(key) {
                self.count(index, 0, memory::charge(key.len(), &removed));
            }
            self.report_expired(key);
        }
    }

    /// Runs `f` on the entry under `key`, which it may create, change or remove (by
    /// leaving `None`). An expired entry is gone before `f` sees it; an aggregate left
    /// empty is deleted, as Redis does. The change is logged in the same hold of the
    /// shard ([`super::delta::changed`]).
    pub fn write<R>(&self, key: &[u8], now: i64, f: impl FnOnce(&mut Option<Entry>) -> R) -> R {
        let index = self.shard_of(key);
        let mut shard = self.write_shard(index);
        let mut freed = 0;
        let (stored_key, mut entry) = match shard.remove_entry(key) {
            Some((k, e)) => {
                freed = memory::charge(key.len(), &e);
                if e.expired(now) {
                    self.report_expired(&k);
                    (Some(k), None)
                } else {
                    (Some(k), Some(e))
                }
            }
            None => (None, None),
        };
        let before = entry.as_ref().map(|e| (e.version, e.expires_at));
        let result = f(&mut entry);
        let mut taken = 0;
        let mut entry = entry.filter(|e| !e.data.is_empty_aggregate());
        super::delta::changed(key, before, entry.as_mut());
        if let Some(mut entry) = entry {
            taken = memory::settle(key.len(), &mut entry);
            let key = stored_key.unwrap_or_else(|| key.into());
            shard.insert(key, entry);
        }
        self.count(index, taken, freed);
        result
    }

    /// Adds `taken` and takes `freed` from shard `index`'s count; under its write lock.
    fn count(&self, index: usize, taken: usize, freed: usize) {
        let delta = taken as i64 - freed as i64;
        if delta != 0 {
            self.used[index].fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Bytes the entries hold, as counted ([`memory`]).
    pub fn memory_used(&self) -> u64 {
        let sum: i64 = self.used.iter().map(|u| u.load(Ordering::Relaxed)).sum();
        sum.max(0) as u64
    }

    /// Counts every shard again from its entries: after a load that filled the shards
    /// directly (snapshot, log replay).
    pub fn recount(&self) {
        for index in 0..SHARDS {
            let mut shard = self.write_shard(index);
            let total: usize = shard
                .iter_mut()
                .map(|(key, entry)| {
                    entry.counted = Default::default();
                    memory::settle(key.len(), entry)
                })
                .sum();
            self.used[index].store(total as i64, Ordering::Relaxed);
        }
    }

    /// Removes and returns the live entry under `key`.
    pub fn remove(&self, key: &[u8], now: i64) -> Option<Entry> {
        let index = self.shard_of(key);
        let mut shard = self.write_shard(index);
        let removed = shard.remove(key);
        if let Some(removed) = &removed {
            self.count(index, 0, memory::charge(key.len(), removed));
            if removed.expired(now) {
                self.report_expired(key);
            }
        }
        let removed = removed.filter(|e| !e.expired(now));
        let before = removed.as_ref().map(|e| (e.version, e.expires_at));
        super::delta::changed(key, before, None);
        removed
    }

    /// Stores `entry` under `key`, replacing whatever was there.
    pub fn insert(&self, key: &[u8], mut entry: Entry) {
        let index = self.shard_of(key);
        let mut shard = self.write_shard(index);
        if entry.data.is_empty_aggregate() {
            let old = shard.remove(key);
            let before = old.as_ref().map(|e| (e.version, e.expires_at));
            super::delta::changed(key, before, None);
            let freed = old.map_or(0, |e| memory::charge(key.len(), &e));
            self.count(index, 0, freed);
        } else {
            // What was there is replaced, not changed: the log records the new state whole.
            super::delta::changed(key, None, Some(&mut entry));
            let taken = memory::settle(key.len(), &mut entry);
            let old = shard.insert(key.into(), entry);
            let freed = old.map_or(0, |e| memory::charge(key.len(), &e));
            self.count(index, taken, freed);
        }
    }

    /// Deletes the expired entries of one shard; returns how many. The background sweep
    /// runs on a runtime worker thread, which must never wait for a lock a long command
    /// holds (a union reading a big set holds its shard): a busy shard is left for the
    /// next round.
    pub fn expire_shard(&self, index: usize, now: i64) -> usize {
        let mut shard = match self.shards[index].try_write() {
            Ok(shard) => shard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return 0,
        };
        let before = shard.len();
        let mut freed = 0;
        shard.retain(|key, e| {
            let expired = e.expired(now);
            if expired {
                freed += memory::charge(key.len(), e);
                self.report_expired(key);
            }
            !expired
        });
        self.count(index, 0, freed);
        before - shard.len()
    }

    /// Live keys in all shards.
    pub fn len(&self, now: i64) -> usize {
        (0..SHARDS)
            .map(|i| {
                self.read_shard(i)
                    .values()
                    .filter(|e| !e.expired(now))
                    .count()
            })
            .sum()
    }

    pub fn is_empty(&self, now: i64) -> bool {
        self.len(now) == 0
    }
}
