//! The keyspace: a fixed number of shards, each a hash map behind a read-write lock.
//!
//! Reads take a shard's read lock, so reads never wait for other reads; a write locks one
//! shard. The shards are numbered, which gives `SCAN` stable cursors (a cursor is the next
//! shard to visit: a key present for the whole scan is in one shard and is seen when that
//! shard is visited) and lets expiry and snapshots work one shard at a time.
//!
//! A shard lock is never held while another is taken.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::data::Entry;

/// Shards in the keyspace; a power of two.
pub const SHARDS: usize = 256;

pub type Shard = HashMap<Box<[u8]>, Entry>;

pub struct Keyspace {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
}

impl Default for Keyspace {
    fn default() -> Self {
        Keyspace {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
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

    /// Runs `f` on the live entry under `key` (`None` if absent or expired at `now`).
    pub fn read<R>(&self, key: &[u8], now: i64, f: impl FnOnce(Option<&Entry>) -> R) -> R {
        let shard = self.read_shard(self.shard_of(key));
        f(shard.get(key).filter(|e| !e.expired(now)))
    }

    /// Runs `f` on the entry under `key`, which it may create, change or remove (by
    /// leaving `None`). An expired entry is gone before `f` sees it; an aggregate left
    /// empty is deleted, as Redis does. The change is logged in the same hold of the
    /// shard ([`super::delta::changed`]).
    pub fn write<R>(&self, key: &[u8], now: i64, f: impl FnOnce(&mut Option<Entry>) -> R) -> R {
        let mut shard = self.write_shard(self.shard_of(key));
        let (stored_key, mut entry) = match shard.remove_entry(key) {
            Some((k, e)) if !e.expired(now) => (Some(k), Some(e)),
            Some((k, _)) => (Some(k), None),
            None => (None, None),
        };
        let before = entry.as_ref().map(|e| (e.version, e.expires_at));
        let result = f(&mut entry);
        let mut entry = entry.filter(|e| !e.data.is_empty_aggregate());
        super::delta::changed(key, before, entry.as_mut());
        if let Some(entry) = entry {
            let key = stored_key.unwrap_or_else(|| key.into());
            shard.insert(key, entry);
        }
        result
    }

    /// Removes and returns the live entry under `key`.
    pub fn remove(&self, key: &[u8], now: i64) -> Option<Entry> {
        let mut shard = self.write_shard(self.shard_of(key));
        let removed = shard.remove(key).filter(|e| !e.expired(now));
        let before = removed.as_ref().map(|e| (e.version, e.expires_at));
        super::delta::changed(key, before, None);
        removed
    }

    /// Stores `entry` under `key`, replacing whatever was there.
    pub fn insert(&self, key: &[u8], mut entry: Entry) {
        let mut shard = self.write_shard(self.shard_of(key));
        if entry.data.is_empty_aggregate() {
            let before = shard.remove(key).map(|e| (e.version, e.expires_at));
            super::delta::changed(key, before, None);
        } else {
            // What was there is replaced, not changed: the log records the new state whole.
            super::delta::changed(key, None, Some(&mut entry));
            shard.insert(key.into(), entry);
        }
    }

    /// Deletes the expired entries of one shard; returns how many.
    pub fn expire_shard(&self, index: usize, now: i64) -> usize {
        let mut shard = self.write_shard(index);
        let before = shard.len();
        shard.retain(|_, e| !e.expired(now));
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
