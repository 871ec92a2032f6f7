//! What the append-only log records for a single-key write: the change, when that is
//! smaller than the key, else the key's state.
//!
//! A write to a big aggregate used to log the aggregate's whole state: one `HSET` of a few
//! bytes into a 100 MB hash appended 100 MB (and, with `always`, every other write waited
//! behind that write and its fsync). Now each state a logged change leaves gets a fresh
//! *change counter* ([`fresh`]: one counter for the process, so a key's counters only
//! grow, and a counter names one state of one key), kept in the entry and in the snapshot;
//! and a write logs one of:
//! - `PUT <entry>` (the whole state with its counter), as before: when the key is new,
//!   when the command is not one of [`CHANGES`], when the key is a string of at most
//!   [`SMALL_STRING`] bytes (cheaper to write whole than to run again), and for a second
//!   change by the same command;
//! - `DELTA <base> <counter> <command...>`: the command itself, to be run again at replay
//!   against the state whose counter is `base`, and only against it (then the key takes
//!   `counter`); against any other state it is skipped: the state was taken by a snapshot
//!   after the change, or replay has not reached it. The commands of [`CHANGES`] are the
//!   single-key writes whose effect depends only on the key's state and their arguments:
//!   no clock (an `XADD` with an ID to choose is logged with the ID it chose), no
//!   randomness;
//! - `DEL <key>`: the key is gone.
//!
//! The record is appended under the key's shard lock, in the same hold as the change
//! ([`changed`], called by the keyspace), so a snapshot, which reads each shard under its
//! lock, holds each key either before a record or after it; its counter says which. That
//! keeps what made the log safe: replay needs no clock or randomness, and replaying a log
//! over a snapshot taken while writes went on (or again over a later one, after a crash
//! between a snapshot and the cut of the log) gives the live state: a `PUT` sets its
//! state, a `DELTA` applies once, to its own state.
//!
//! Multi-key commands run alone on their keys (the gate stripes of their keys, held
//! exclusively: [`super::gate`]) and still log the whole state of each
//! key they changed, afterwards ([`Touched`]: a key they only read, such as a
//! `SUNIONSTORE`'s sources, is not logged); see `docs/security.md` for what that costs.
//! They are not logged as themselves: replay can set one of their keys back to an older
//! state (a `PUT` before the snapshot read it) while another is already past them, and a
//! command over several keys cannot be run against some of them only.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::aof::Aof;
use super::data::{Data, Entry};

/// A string up to this many bytes is logged whole: replay only sets it, and the record
/// costs the disk no more than a change record would (with `always`, each fsync writes
/// whole 4 KiB pages; the log bytes per write are measured by
/// `scripts/bench-log-growth.py`). Aggregates are never logged whole for a change: their
/// size is not known without walking them.
pub const SMALL_STRING: usize = 4096;

/// The single-key writes logged as themselves when the key already was (see the module
/// doc). Each changes its key once, in one hold of its shard, deterministically.
pub const CHANGES: &[&str] = &[
    "HSET",
    "HMSET",
    "HSETNX",
    "HDEL",
    "HINCRBY",
    "HINCRBYFLOAT",
    "SADD",
    "SREM",
    "ZADD",
    "ZREM",
    "ZINCRBY",
    "ZREMRANGEBYSCORE",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYLEX",
    "ZPOPMIN",
    "ZPOPMAX",
    "LPUSH",
    "RPUSH",
    "LPUSHX",
    "RPUSHX",
    "LSET",
    "LINSERT",
    "LREM",
    "LTRIM",
    "LPOP",
    "RPOP",
    "XADD",
    "XDEL",
    "XTRIM",
    "XACK",
    "XSETID",
    "APPEND",
    "SETRANGE",
    "SETBIT",
    "INCR",
    "DECR",
    "INCRBY",
    "DECRBY",
    "INCRBYFLOAT",
    "PFADD",
];

/// Commands that only move a deadline: when the deadline did not move (`PEXPIRE ... NX`
/// on a key that has one, which pkv sends after every write), nothing changed and
/// nothing is logged.
const DEADLINE_ONLY: &[&str] = &[
    "EXPIRE",
    "PEXPIRE",
    "EXPIREAT",
    "PEXPIREAT",
    "PERSIST",
    "GETEX",
];

/// Commands that set their key to their value, `args[2]`, or leave it as it was (`SET ...
/// NX` on a key that exists): when the key does not hold that value, nothing changed and
/// nothing is logged (else a tenant could log a big string whole for every `SETNX`).
const SET_VALUE: &[&str] = &["SET", "SETNX"];

/// The last change counter given out; 0 is "none".
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A change counter no state has had.
pub fn fresh() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed) + 1
}

/// The largest change counter a snapshot or a log may hold. pkv takes one per write, so it
/// never gets near; a file with a larger one is damaged, and believed, it would make
/// [`fresh`] wrap to 0 ("none") and then give out counters that states already have.
pub const MAX_COUNTER: u64 = 1 << 62;

/// Notes a counter read from a snapshot or the log, so that [`fresh`] never gives it again;
/// an error for one past [`MAX_COUNTER`].
pub fn seen(version: u64) -> Result<(), String> {
    if version > MAX_COUNTER {
        return Err(format!("a change counter past {MAX_COUNTER} ({version})"));
    }
    COUNTER.fetch_max(version, Ordering::Relaxed);
    Ok(())
}

/// The single-key write running on this thread, while it runs.
struct Running {
    aof: Arc<Aof>,
    /// `args[0]`, upper case.
    name: &'static str,
    /// Its key, then, for [`SET_VALUE`], its value: one copy, on every write's path.
    head: Vec<u8>,
    key_len: usize,
    /// The command's arguments when it is one of [`CHANGES`] (else empty).
    args: Vec<Vec<u8>>,
    /// It is one of [`CHANGES`].
    change: bool,
    /// Records this command appended.
    logged: u32,
}

impl Running {
    fn key(&self) -> &[u8] {
        &self.head[..self.key_len]
    }

    /// A [`SET_VALUE`] command's value.
    fn value(&self) -> Option<&[u8]> {
        SET_VALUE
            .contains(&self.name)
            .then(|| &self.head[self.key_len..])
    }
}

thread_local! {
    static RUNNING: RefCell<Option<Running>> = const { RefCell::new(None) };
    /// The keys a multi-key write running on this thread changed, while it runs.
    static TOUCHED: RefCell<Option<Vec<Vec<u8>>>> = const { RefCell::new(None) };
}

/// While alive, the keyspace notes which keys the multi-key write running on this thread
/// changes, so that only those are logged ([`Touched::keys`]).
pub struct Touched {
    before: Option<Vec<Vec<u8>>>,
}

impl Touched {
    pub fn begin() -> Touched {
        Touched {
            before: TOUCHED.with(|t| t.borrow_mut().replace(Vec::new())),
        }
    }

    /// The keys changed so far, each once, in the order of their first change.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        TOUCHED.with(|t| t.borrow().clone().unwrap_or_default())
    }
}

impl Drop for Touched {
    fn drop(&mut self) {
        let before = self.before.take();
        TOUCHED.with(|t| *t.borrow_mut() = before);
    }
}

/// While alive, the keyspace logs the changes the command makes to its key. Puts back
/// whatever ran before on this thread when dropped.
pub struct Logging {
    before: Option<Running>,
}

impl Logging {
    /// Starts logging for single-key write `name` with `args` (`args[1]` is its key).
    pub fn begin(aof: Arc<Aof>, name: &'static str, args: &[&[u8]]) -> Logging {
        let change = CHANGES.contains(&name);
        let key = args.get(1).copied().unwrap_or_default();
        let value = if SET_VALUE.contains(&name) {
            args.get(2).copied().unwrap_or_default()
        } else {
            &[]
        };
        let mut head = Vec::with_capacity(key.len() + value.len());
        head.extend_from_slice(key);
        head.extend_from_slice(value);
        let args = if change {
            args.iter().map(|a| a.to_vec()).collect()
        } else {
            Vec::new()
        };
        let running = Running {
            aof,
            name,
            head,
            key_len: key.len(),
            args,
            change,
            logged: 0,
        };
        Logging {
            before: RUNNING.with(|r| r.borrow_mut().replace(running)),
        }
    }
}

impl Drop for Logging {
    fn drop(&mut self) {
        let before = self.before.take();
        RUNNING.with(|r| *r.borrow_mut() = before);
    }
}

/// Called by the keyspace, under `key`'s shard lock, after a change: `before` is the
/// counter and deadline of the state it started from (`None`: there was no key), `after`
/// the state it leaves. Appends the record of the change when a single-key write is
/// running on this thread for `key`, and gives the new state its counter.
pub fn changed(key: &[u8], before: Option<(u64, Option<i64>)>, after: Option<&mut Entry>) {
    TOUCHED.with(|t| {
        if let Some(keys) = t.borrow_mut().as_mut() {
            if !keys.iter().any(|k| k == key) {
                keys.push(key.to_vec());
            }
        }
    });
    RUNNING.with(|r| {
        let mut slot = r.borrow_mut();
        let Some(running) = slot.as_mut() else {
            return;
        };
        if running.key() != key {
            return;
        }
        match (before, after) {
            (None, None) => return,
            (Some(_), None) => running.aof.record(key, None),
            (before, Some(entry)) => {
                let unmoved = before == Some((entry.version, entry.expires_at));
                if unmoved && DEADLINE_ONLY.contains(&running.name) {
                    return;
                }
                if let (true, Some(value)) = (unmoved, running.value()) {
                    if !matches!(&entry.data, Data::Str(s) if s == value) {
                        return;
                    }
                }
                let small = matches!(&entry.data, Data::Str(s) if s.len() <= SMALL_STRING);
                let base = before.map(|(version, _)| version);
                entry.version = fresh();
                match base {
                    Some(base) if running.change && !small && running.logged == 0 => {
                        let chosen = chosen_id(running.name, &running.args, entry);
                        running
                            .aof
                            .record_change(base, entry.version, &running.args, chosen);
                    }
                    _ => running.aof.record(key, Some(entry)),
                }
            }
        }
        running.logged += 1;
    });
}

/// For an `XADD`: where its ID argument is and the ID the stream took, which replay must
/// use instead of choosing again (by the clock, or after the last ID).
fn chosen_id(name: &str, args: &[Vec<u8>], entry: &Entry) -> Option<(usize, Vec<u8>)> {
    if name != "XADD" {
        return None;
    }
    let Data::Stream(stream) = &entry.data else {
        return None;
    };
    let slices: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    let at = super::cmd::streams::xadd_id_position(&slices)?;
    Some((at, stream.last_id.text().into_bytes()))
}
