//! One account's commands by name, for its `INFO commandstats`: one slot per row of the
//! command table, so what is kept per account is bounded by the table's size whatever
//! names its clients send (an unknown name has no row and is not counted).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::commands::{self, table::TABLE, CommandSpec};

/// Redis's `cmdstat_<name>` figures for one command.
#[derive(Debug, Default)]
struct Slot {
    /// Times it ran (failed runs included, as Redis counts them).
    calls: AtomicU64,
    /// Microseconds it ran: pkv's share of the backend's round trip for a forwarded
    /// command, the whole time for one pkv answers itself.
    usec: AtomicU64,
    /// Times it was refused before it ran (quota, key checks, a refused queuing).
    rejected: AtomicU64,
    /// Times it ran and answered an error.
    failed: AtomicU64,
}

/// An account's commands, by row of [`TABLE`].
pub struct CommandStats {
    slots: Box<[Slot]>,
}

impl Default for CommandStats {
    fn default() -> Self {
        CommandStats {
            slots: TABLE.iter().map(|_| Slot::default()).collect(),
        }
    }
}

impl std::fmt::Debug for CommandStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandStats")
            .field("rows", &self.slots.len())
            .finish()
    }
}

/// One line of `INFO commandstats`.
#[derive(Debug, Clone, Copy)]
pub struct CommandFigures {
    pub spec: &'static CommandSpec,
    pub calls: u64,
    pub usec: u64,
    pub rejected: u64,
    pub failed: u64,
}

impl CommandStats {
    fn slot(&self, spec: &CommandSpec) -> Option<&Slot> {
        self.slots.get(commands::position(spec)?)
    }

    /// `spec` ran for `usec` microseconds; `failed` when it answered an error.
    pub fn ran(&self, spec: &CommandSpec, usec: u64, failed: bool) {
        if let Some(slot) = self.slot(spec) {
            slot.calls.fetch_add(1, Ordering::Relaxed);
            slot.usec.fetch_add(usec, Ordering::Relaxed);
            if failed {
                slot.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `spec` was refused before it ran.
    pub fn rejected(&self, spec: &CommandSpec) {
        if let Some(slot) = self.slot(spec) {
            slot.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The commands that ran or were refused at least once, in the table's order.
    pub fn figures(&self) -> Vec<CommandFigures> {
        TABLE
            .iter()
            .zip(self.slots.iter())
            .map(|(spec, slot)| CommandFigures {
                spec,
                calls: slot.calls.load(Ordering::Relaxed),
                usec: slot.usec.load(Ordering::Relaxed),
                rejected: slot.rejected.load(Ordering::Relaxed),
                failed: slot.failed.load(Ordering::Relaxed),
            })
            .filter(|f| f.calls > 0 || f.rejected > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_row_and_lists_only_what_ran() {
        let stats = CommandStats::default();
        let get = commands::row("GET").unwrap();
        let set = commands::row("SET").unwrap();
        stats.ran(get, 5, false);
        stats.ran(get, 7, true);
        stats.rejected(set);
        let figures = stats.figures();
        assert_eq!(figures.len(), 2);
        let g = figures.iter().find(|f| f.spec.name == "GET").unwrap();
        assert_eq!((g.calls, g.usec, g.rejected, g.failed), (2, 12, 0, 1));
        let s = figures.iter().find(|f| f.spec.name == "SET").unwrap();
        assert_eq!((s.calls, s.rejected), (0, 1));
    }
}
