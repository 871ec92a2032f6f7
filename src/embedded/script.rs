//! Scripts on the embedded store: a script runs with every stripe of the store's gate held
//! exclusively (its keys are known only as it runs), as one transaction (as `EXEC` runs; a
//! script queued in MULTI runs inside its EXEC, under the same hold: [`Queued`]), and each of
//! its `redis.call`s takes the request path's
//! own steps: `PERSIST`-like requests for no expiry served as the longest one, keys located
//! by the command table's grammar ([`crate::commands::locate`]), the write's storage
//! planned as for a client's command ([`crate::meter::storage::plan`]), keys rewritten into
//! the caller's namespace ([`crate::namespace::Namespace::rewrite_call`]), the
//! bookkeeping run around it, and the reply's key names taken back out of the namespace.
//! A script therefore reaches exactly what its client's own commands reach, and pays the
//! same storage for the same writes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{arg_slices, handler, into_frame, now_ms, Store};
use crate::commands::{self, flags, persist, Call, CommandSpec};
use crate::error::ClientError;
use crate::meter::storage::{self, TtlPolicy};
use crate::namespace::Namespace;
use crate::protocol::frame::Frame;
use crate::protocol::Proto;
use crate::scripting::lua::Host;

/// Whose script runs, and how its writes are metered.
#[derive(Debug, Clone)]
pub struct Caller {
    pub ns: Namespace,
    /// The account's default TTL and `PKV_MAX_TTL` (`now_ms` is set when the script runs).
    pub policy: TtlPolicy,
    /// `PKV_METERING`: with it off, writes get no TTL and buy nothing.
    pub metering: bool,
}

/// What a script's calls used, to be paid as the same commands outside a script would be.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    /// `redis.call`s that ran.
    pub calls: u64,
    /// Storage its writes bought.
    pub byte_seconds: u64,
    /// True once a call wrote.
    pub wrote: bool,
    /// Microseconds it held the store exclusively ([`crate::scripting::fair`]).
    pub held_us: u64,
}

impl Spent {
    /// Adds what another script used.
    pub fn add(&mut self, other: Spent) {
        self.calls += other.calls;
        self.byte_seconds += other.byte_seconds;
        self.wrote |= other.wrote;
        self.held_us += other.held_us;
    }
}

/// A script to run, its calls going through [`Host::call`]: its reply, or its error as a
/// [`Frame::Error`].
/// A queued script's run: given the time the transaction's scripts before it took, since
/// the scripts of one EXEC share one time limit (they run under one hold of the store).
pub type QueuedRun = Box<dyn FnOnce(&mut dyn Host, Duration) -> Frame + Send>;

/// A script queued in a transaction: EXEC runs it in its turn, with the transaction's
/// other commands, under the same exclusive hold ([`Store::run_all`]).
pub struct Queued {
    pub caller: Caller,
    pub run: QueuedRun,
    /// What it used, for the session to pay once EXEC has run (untouched if it never ran).
    pub spent: Arc<Mutex<Spent>>,
}

impl Store {
    /// Runs `script` with every other command of the store held back, the caller's calls
    /// going through [`Host::call`]. Waits for the gate: call it on the blocking pool.
    pub fn run_script<R>(
        &self,
        caller: &Caller,
        script: impl FnOnce(&mut dyn Host) -> R,
    ) -> (R, Spent) {
        let _alone = self.gate.all_exclusive();
        self.script_held(caller, now_ms(), script)
    }

    /// Runs a script as of `now` with every stripe of the gate held exclusively by the
    /// caller.
    fn script_held<R>(
        &self,
        caller: &Caller,
        now: i64,
        script: impl FnOnce(&mut dyn Host) -> R,
    ) -> (R, Spent) {
        let started = Instant::now();
        let mut policy = caller.policy;
        policy.now_ms = now;
        let mut host = StoreHost {
            store: self,
            caller,
            policy,
            now,
            spent: Spent::default(),
            proto: Proto::Resp2,
        };
        let result = script(&mut host);
        host.spent.held_us = started.elapsed().as_micros() as u64;
        (result, host.spent)
    }

    /// Runs a script queued in a transaction, at EXEC's instant, with the gate held
    /// exclusively by EXEC; leaves what it used in its `spent`.
    /// Runs a queued script; `before` is what the transaction's scripts before it took.
    pub(super) fn run_queued(&self, queued: Queued, now: i64, before: Duration) -> Frame {
        let Queued { caller, run, spent } = queued;
        let (reply, used) = self.script_held(&caller, now, |host| run(host, before));
        spent.lock().unwrap_or_else(|p| p.into_inner()).add(used);
        reply
    }

    /// With `PKV_APPENDFSYNC=always`, waits until a script's writes are on disk.
    pub async fn script_committed(&self) -> Result<(), String> {
        self.commit().await
    }
}

/// The store, as a running script's calls see it.
struct StoreHost<'a> {
    store: &'a Store,
    caller: &'a Caller,
    policy: TtlPolicy,
    /// One instant for the whole script, as Redis freezes time in scripts.
    now: i64,
    spent: Spent,
    /// What the script's commands answer in (`redis.setresp`); bookkeeping stays RESP2.
    proto: Proto,
}

impl StoreHost<'_> {
    fn run(&self, call: &Call) -> Frame {
        self.run_in(Proto::Resp2, call)
    }

    fn run_in(&self, proto: Proto, call: &Call) -> Frame {
        into_frame(
            self.store
                .run_held(proto, handler(call), &arg_slices(call), self.now),
        )
    }
}

impl Host for StoreHost<'_> {
    fn resp3(&mut self, on: bool) {
        self.proto = if on { Proto::Resp3 } else { Proto::Resp2 };
    }

    fn call(&mut self, spec: &'static CommandSpec, args: Vec<Bytes>) -> Frame {
        let ns = &self.caller.ns;
        let (spec, args) = match spec.has(flags::WRITE) && self.caller.metering {
            true => persist::as_longest_expiry(spec, &args, self.policy.max_secs)
                .unwrap_or((spec, args)),
            false => (spec, args),
        };
        let located = match commands::locate(spec, &args) {
            Ok(located) => located,
            Err(err) => return Frame::error(ClientError::Key(err).line()),
        };
        let plan = if self.caller.metering {
            match storage::plan(spec, &args, &located.keys, ns, &self.policy) {
                Ok(plan) => plan,
                Err(err) => return Frame::error(ClientError::from(err).line()),
            }
        } else {
            storage::Plan::default()
        };
        let mut cmd = ns.rewrite_call(spec, &args, located.keys);
        if plan.append_default_ttl {
            cmd = cmd.arg("EX").arg(self.policy.default_secs.to_string());
        }
        let before: Vec<Frame> = plan.before.iter().map(|c| self.run(c)).collect();
        let reply = self.run_in(self.proto, &cmd);
        let after: Vec<Frame> = plan.after.iter().map(|c| self.run(c)).collect();
        self.spent.calls += 1;
        self.spent.byte_seconds += storage::byte_seconds(
            &plan.rule,
            &reply,
            &before,
            &after,
            self.policy.default_secs,
        );
        self.spent.wrote |= spec.has(flags::WRITE) && !reply.is_error();
        match reply {
            Frame::Error(line) if line.windows(ns.prefix().len()).any(|w| w == ns.prefix()) => {
                Frame::error(ns.strip_all(&String::from_utf8_lossy(&line)))
            }
            reply => ns.rewrite_reply(spec.reply, reply),
        }
    }
}
