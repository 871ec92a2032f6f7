//! The store's gate, in stripes: what makes multi-key commands atomic without one lock
//! that every command of every tenant takes.
//!
//! Each key belongs to one stripe (a function of its keyspace shard, [`stripe_of_shard`]).
//! A command holds the stripes of the keys it touches, before it takes any shard lock:
//! shared to run alongside others (every single-key command, and multi-key reads such as
//! MGET), exclusively to run alone on those keys (multi-key writes, EXEC). A reader of a
//! key holds that key's stripe, so it can never see a multi-key write half done; commands
//! on keys of other stripes do not wait for it. What cannot name its keys up front (a
//! script, KEYS, SORT with BY/GET) holds every stripe, and so does a snapshot's walk.
//!
//! Stripes are always taken in ascending order and never while a stripe or a shard lock
//! is already held, so no two holders wait for each other in a cycle. Each stripe is a
//! `RwLock<()>` alone on its cache line: the reader count a command changes is shared
//! only with the commands on the same stripe, not with every command on every core.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};

/// Stripes in the gate: one bit each in a [`Stripes`] set. The keyspace's shard count is
/// a multiple of it, so a stripe is a fixed group of shards.
pub const STRIPES: usize = 64;

/// The stripe of the keys in keyspace shard `shard`.
pub fn stripe_of_shard(shard: usize) -> usize {
    shard % STRIPES
}

/// A set of stripes; iterated in ascending order, each once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stripes(u64);

impl Stripes {
    /// No stripe: a command that touches no key.
    pub const NONE: Stripes = Stripes(0);
    /// Every stripe.
    pub const ALL: Stripes = Stripes(u64::MAX);

    /// The set holding `stripe` alone.
    pub fn one(stripe: usize) -> Stripes {
        Stripes(1 << (stripe % STRIPES))
    }

    /// This set and `stripe`.
    pub fn with(self, stripe: usize) -> Stripes {
        Stripes(self.0 | Stripes::one(stripe).0)
    }

    /// Both sets.
    pub fn union(self, other: Stripes) -> Stripes {
        Stripes(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The stripes, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let stripe = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            Some(stripe)
        })
    }
}

/// How a set of stripes is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Alongside other shared holders: the command only reads the keys of these
    /// stripes, or changes one key under its shard lock.
    Shared,
    /// Alone: nothing else touches a key of these stripes meanwhile.
    Exclusive,
}

/// One stripe's lock, alone on its cache line (128 bytes: adjacent lines are fetched in
/// pairs on common x86 parts).
#[derive(Default)]
#[repr(align(128))]
struct Stripe(RwLock<()>);

/// The stripes.
pub struct Gate {
    stripes: Box<[Stripe]>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
        }
    }
}

enum Guard<'a> {
    Read(#[allow(dead_code)] RwLockReadGuard<'a, ()>),
    Write(#[allow(dead_code)] RwLockWriteGuard<'a, ()>),
}

/// Stripes held; released when dropped. The first guard is kept inline: a single-key
/// command allocates nothing.
#[must_use = "the stripes are released when this is dropped"]
pub struct Held<'a> {
    first: Option<Guard<'a>>,
    more: Vec<Guard<'a>>,
}

impl<'a> Held<'a> {
    fn new(capacity: usize) -> Self {
        Held {
            first: None,
            more: Vec::with_capacity(capacity.saturating_sub(1)),
        }
    }

    fn push(&mut self, guard: Guard<'a>) {
        if self.first.is_none() {
            self.first = Some(guard);
        } else {
            self.more.push(guard);
        }
    }

    /// How many stripes are held.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Whether a stripe is held exclusively (for tests).
    #[cfg(test)]
    fn exclusive(&self) -> bool {
        self.first
            .iter()
            .chain(&self.more)
            .any(|g| matches!(g, Guard::Write(_)))
    }
}

impl Gate {
    /// Holds `stripes` in `mode`, waiting for them: never on a runtime worker thread.
    pub fn hold(&self, stripes: Stripes, mode: Mode) -> Held<'_> {
        let mut held = Held::new(stripes.len());
        for stripe in stripes.iter() {
            let lock = &self.stripes[stripe].0;
            held.push(match mode {
                Mode::Shared => Guard::Read(lock.read().unwrap_or_else(|p| p.into_inner())),
                Mode::Exclusive => Guard::Write(lock.write().unwrap_or_else(|p| p.into_inner())),
            });
        }
        held
    }

    /// Holds `stripes` shared if each is free for readers right now (no exclusive holder,
    /// none waiting); `None`, holding nothing, otherwise. Never waits.
    pub fn try_shared(&self, stripes: Stripes) -> Option<Held<'_>> {
        let mut held = Held::new(stripes.len());
        for stripe in stripes.iter() {
            match self.stripes[stripe].0.try_read() {
                Ok(guard) => held.push(Guard::Read(guard)),
                Err(TryLockError::Poisoned(p)) => held.push(Guard::Read(p.into_inner())),
                Err(TryLockError::WouldBlock) => return None,
            }
        }
        Some(held)
    }

    /// Every stripe shared: nothing runs alone on any key meanwhile.
    pub fn all_shared(&self) -> Held<'_> {
        self.hold(Stripes::ALL, Mode::Shared)
    }

    /// Every stripe exclusively: nothing else touches the store meanwhile.
    pub fn all_exclusive(&self) -> Held<'_> {
        self.hold(Stripes::ALL, Mode::Exclusive)
    }

    /// [`Gate::all_shared`] if no stripe has an exclusive holder or one waiting now.
    pub fn try_all_shared(&self) -> Option<Held<'_>> {
        self.try_shared(Stripes::ALL)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    #[test]
    fn a_set_lists_its_stripes_once_lowest_first() {
        let set = Stripes::NONE.with(9).with(3).with(63).with(3).with(0);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 3, 9, 63]);
        assert_eq!(set.len(), 4);
        assert_eq!(Stripes::ALL.iter().count(), STRIPES);
        assert_eq!(Stripes::one(STRIPES + 2), Stripes::one(2));
        assert!(Stripes::NONE.is_empty() && Stripes::NONE.iter().next().is_none());
        assert_eq!(
            Stripes::one(1).union(Stripes::one(5)),
            Stripes::NONE.with(5).with(1)
        );
    }

    #[test]
    fn the_stripes_are_on_separate_cache_lines() {
        assert!(std::mem::align_of::<Stripe>() >= 128);
        assert!(std::mem::size_of::<Stripe>() >= 128);
    }

    #[test]
    fn an_exclusive_holder_keeps_out_only_its_own_stripes() {
        let gate = Gate::default();
        let alone = gate.hold(Stripes::NONE.with(1).with(2), Mode::Exclusive);
        assert!(alone.exclusive() && alone.len() == 2);
        assert!(gate.try_shared(Stripes::one(1)).is_none());
        assert!(gate.try_shared(Stripes::one(0).with(2)).is_none());
        assert!(gate.try_all_shared().is_none());
        let other = gate.try_shared(Stripes::one(0).with(3)).unwrap();
        assert_eq!(other.len(), 2);
        drop(alone);
        assert!(gate.try_shared(Stripes::one(1).with(2)).is_some());
        assert!(gate.try_all_shared().is_some());
    }

    #[test]
    fn shared_holders_share_and_an_empty_set_holds_nothing() {
        let gate = Gate::default();
        let a = gate.all_shared();
        let b = gate.try_shared(Stripes::one(7)).unwrap();
        assert!(!a.exclusive() && !b.exclusive());
        assert_eq!(a.len(), STRIPES);
        assert!(gate.hold(Stripes::NONE, Mode::Exclusive).is_empty());
    }

    #[test]
    fn all_exclusive_waits_for_every_shared_holder() {
        let gate = Arc::new(Gate::default());
        let reading = gate.try_shared(Stripes::one(40)).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let (gate, done) = (gate.clone(), done.clone());
            std::thread::spawn(move || {
                let _alone = gate.all_exclusive();
                done.store(1, Ordering::SeqCst);
            })
        };
        // The waiter takes the stripes lowest first: it holds those below 40 and waits.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(done.load(Ordering::SeqCst), 0);
        assert!(gate.try_shared(Stripes::one(3)).is_none());
        drop(reading);
        waiter.join().unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    /// Threads taking overlapping sets exclusively, each listed in its own order, never
    /// deadlock (the gate takes them lowest first) and never overlap.
    #[test]
    fn overlapping_exclusive_sets_neither_deadlock_nor_overlap() {
        let gate = Arc::new(Gate::default());
        let inside: Arc<Vec<AtomicUsize>> =
            Arc::new((0..STRIPES).map(|_| AtomicUsize::new(0)).collect());
        let threads = 6;
        let start = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (gate, inside, start) = (gate.clone(), inside.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for round in 0..2000usize {
                        let picks = [(t * 7 + round) % STRIPES, (round * 13 + 5) % STRIPES, t];
                        let set = picks.iter().fold(Stripes::NONE, |s, &p| s.with(p));
                        let _alone = gate.hold(set, Mode::Exclusive);
                        for s in set.iter() {
                            assert_eq!(inside[s].fetch_add(1, Ordering::SeqCst), 0);
                        }
                        for s in set.iter() {
                            inside[s].fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
