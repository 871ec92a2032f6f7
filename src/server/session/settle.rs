//! Admission and settlement: a command's known cost reserved before it runs ([`Bill`]),
//! and, once its replies are known, its reply written and its bill settled in one place
//! ([`Session::complete`], or [`Session::fail`] when the replies never came).

use bytes::BytesMut;

use super::Session;
use crate::backend::BackendError;
use crate::commands::{Call, ReplyRewrite};
use crate::error::ClientError;
use crate::meter::storage::{self, After};
use crate::meter::{self, Admitted, Charges, Flight, Usage};
use crate::protocol::frame::Frame;
use crate::protocol::reply::ReplyWriter;

/// How many times pkv asks what a store whose reply was lost stored, one upstream timeout
/// apart, before it gives up.
pub(super) const LATE_MEASURE_ATTEMPTS: usize = 3;

/// What a metered command owes: reserved at admission, settled once its reply is known.
#[derive(Debug)]
pub struct Bill {
    pub admitted: Admitted,
    /// Usage so far (one op and the request bytes at first; reply bytes and upstream time
    /// are added as they become known).
    pub usage: Usage,
    /// How to read the storage it bought from its bookkeeping replies.
    pub rule: After,
    /// The most byte-seconds it can buy, as reserved at admission: what it pays for
    /// storage when its reply never comes.
    pub storage_bound: u64,
    /// The default TTL its keys get when it creates them, in seconds.
    pub default_secs: u64,
}

/// A command in an upstream pipeline: the client's reply, plus `before` and `after`
/// bookkeeping replies around it that the client never sees.
#[derive(Debug)]
pub struct Pending {
    pub rewrite: ReplyRewrite,
    pub before: usize,
    pub after: usize,
    pub bill: Option<Bill>,
    /// Counted in its family when it completes; `None` for a call a local command makes,
    /// counted as that command.
    pub family: Option<crate::metrics::Family>,
    /// The client's command, counted in its account's `INFO commandstats` when it
    /// completes; `None` for a call a local command makes, counted as that command.
    pub row: Option<&'static crate::commands::CommandSpec>,
}

impl Pending {
    /// How many calls it sent: its bookkeeping and itself.
    pub fn calls(&self) -> usize {
        self.before + 1 + self.after
    }

    /// Takes this command's replies off a pipeline's replies: the bookkeeping before it,
    /// its own, and the bookkeeping after it.
    pub fn take_replies(&self, values: &mut impl Iterator<Item = Frame>) -> Replies {
        let before = values.by_ref().take(self.before).collect();
        let reply = values.next().unwrap_or_default();
        let after = values.by_ref().take(self.after).collect();
        Replies {
            before,
            reply,
            after,
        }
    }
}

/// A command's replies: the client's, and the bookkeeping around it that only the meter
/// reads.
pub struct Replies {
    pub before: Vec<Frame>,
    pub reply: Frame,
    pub after: Vec<Frame>,
}

/// What a completed command pays for its reply bytes and upstream time.
#[derive(Debug, Clone, Copy)]
pub enum Share {
    /// Its own reply bytes, and this share of the upstream's time.
    Own { time_us: u64 },
    /// Nothing more: it ran in a transaction, and EXEC's bill holds the bytes and time.
    InExec,
}

/// Splits a round trip's time evenly over the commands that shared it (the first takes
/// the remainder), so the parts add up to the whole.
pub(super) struct TimeShares {
    each: u64,
    remainder: u64,
}

impl TimeShares {
    pub(super) fn new(total_us: u64, commands: u64) -> Self {
        let commands = commands.max(1);
        TimeShares {
            each: total_us / commands,
            remainder: total_us % commands,
        }
    }

    pub(super) fn next(&mut self) -> u64 {
        self.each + std::mem::take(&mut self.remainder)
    }
}

impl Session {
    /// Reserves a command's known cost (one op, `wire_len` request bytes, up to
    /// `storage_bound` byte-seconds) from the account, or says why it cannot run. When
    /// the lease in memory cannot admit it (it ran short, or the balance is low), the
    /// session's earlier commands are sent and paid first (their replies go to `out`), so
    /// that the meter sees what they cost and holds back only for other sessions.
    pub(in crate::server) async fn admit(
        &mut self,
        wire_len: usize,
        storage_bound: u64,
        rule: After,
        blocking: bool,
        out: &mut BytesMut,
    ) -> Result<Option<Bill>, ClientError> {
        let meter = self.shared.meter.clone();
        let Some(account) = self.auth.as_ref().map(|a| a.meter.clone()) else {
            return Ok(None);
        };
        if !meter.enabled() {
            return Ok(None);
        }
        let usage = Usage {
            ops: 1,
            bytes_in: wire_len as u64,
            ..Usage::default()
        };
        let need = meter.need(&usage, storage_bound);
        let flight = if self.txn.multi.is_some() {
            Flight::Queued
        } else if blocking {
            Flight::Blocking
        } else {
            Flight::Plain
        };
        if let Some(admitted) = meter.try_admit(&account, need, flight) {
            self.charges.opened(&admitted);
            return Ok(Some(Bill {
                admitted,
                usage,
                rule,
                storage_bound,
                default_secs: self.default_ttl(),
            }));
        }
        // The lease ran short or the balance is low: this session's own commands are paid
        // first, then the meter waits for others and asks the ledger.
        self.flush(out).await;
        self.apply_charges();
        match meter
            .admit(&account, need, flight, self.charges.open())
            .await
        {
            Ok(admitted) => {
                self.charges.opened(&admitted);
                Ok(Some(Bill {
                    admitted,
                    usage,
                    rule,
                    storage_bound,
                    default_secs: self.default_ttl(),
                }))
            }
            Err(refusal) => Err(ClientError::Refused(refusal)),
        }
    }

    /// The byte-seconds a command bought, read from its reply and bookkeeping replies.
    pub(in crate::server) fn stored(
        &self,
        bill: Option<&Bill>,
        reply: &Frame,
        before: &[Frame],
        after: &[Frame],
    ) -> u64 {
        bill.map_or(0, |b| {
            storage::byte_seconds(&b.rule, reply, before, after, b.default_secs)
        })
    }

    /// A bill with nothing reserved, for commands that run whatever the balance.
    pub(in crate::server) fn unreserved_bill(&self, wire_len: usize) -> Option<Bill> {
        (self.auth.is_some() && self.shared.meter.enabled()).then(|| Bill {
            admitted: Admitted::default(),
            usage: Usage {
                ops: 1,
                bytes_in: wire_len as u64,
                ..Usage::default()
            },
            rule: After::None,
            storage_bound: 0,
            default_secs: self.default_ttl(),
        })
    }

    /// Pays a bill: its usage plus the reply bytes, upstream time and storage.
    pub(in crate::server) fn pay(
        &mut self,
        bill: Bill,
        byte_seconds: u64,
        bytes_out: usize,
        time_us: u64,
    ) {
        let mut usage = bill.usage;
        usage.bytes_out += bytes_out as u64;
        usage.time_us += time_us;
        usage.byte_seconds += byte_seconds;
        self.shared
            .meter
            .charge(&mut self.charges, bill.admitted, &usage);
    }

    /// Settles a bill whose reply never came because of `err`: a command that may have run
    /// pays what it is known to cost (its op, request bytes, the storage bound it reserved,
    /// and the time waited); one that certainly did not run gets its reservation back.
    pub(in crate::server) fn pay_lost(
        &mut self,
        bill: Option<Bill>,
        err: &BackendError,
        time_us: u64,
    ) {
        match bill {
            Some(bill) if err.may_have_run() => {
                let bound = bill.storage_bound;
                self.pay(bill, bound, 0, time_us);
            }
            bill => self.cancel(bill),
        }
    }

    /// A store (`SUNIONSTORE`, `COPY`, ...) whose reply was lost: its size is known only
    /// upstream, so its bookkeeping commands (`after`: PEXPIRE NX, PTTL, MEMORY USAGE of
    /// the destination) are sent again once the upstream has had time to run it, and the
    /// account pays the storage they show. Runs in the background; the session may be gone
    /// by then, so it attaches to the account for the while.
    pub(super) fn measure_store_later(&self, after: Vec<Call>, default_secs: u64) {
        let Some(auth) = &self.auth else { return };
        let (shared, account, proto) = (self.shared.clone(), auth.account.clone(), self.proto);
        tokio::spawn(async move {
            let meter = shared.meter.attach(&account);
            for _attempt in 0..LATE_MEASURE_ATTEMPTS {
                // Let the upstream run what it was sent before asking what it stored.
                tokio::time::sleep(shared.settings.upstream_timeout).await;
                let Ok(values) = shared.backend.pipeline(proto, &after).await else {
                    continue;
                };
                let stored =
                    storage::byte_seconds(&After::Store, &Frame::OK, &[], &values, default_secs);
                if stored > 0 {
                    let usage = Usage {
                        byte_seconds: stored,
                        ..Usage::default()
                    };
                    let mut charges = Charges::default();
                    shared
                        .meter
                        .charge(&mut charges, Admitted::default(), &usage);
                    shared.meter.apply(&meter, &mut charges);
                }
                break;
            }
            shared.meter.detach(&meter).await;
        });
    }

    /// Gives back a bill's reservation for a command that never ran.
    pub(in crate::server) fn cancel(&mut self, bill: Option<Bill>) {
        if let Some(bill) = bill {
            self.shared.meter.cancel(&mut self.charges, bill.admitted);
        }
    }

    /// Completes a command whose replies came back, whichever way it ran (in a batch, on
    /// the dedicated connection, in a transaction): writes its reply as the client names
    /// things, and settles its bill with the storage its bookkeeping replies show and what
    /// `share` says of its reply bytes and upstream time. A command the upstream says it
    /// did not run ([`meter::did_not_run`]) gets its reservation back. Returns the bytes
    /// written.
    pub(in crate::server) fn complete(
        &mut self,
        pending: Pending,
        replies: Replies,
        share: Share,
        out: &mut BytesMut,
    ) -> usize {
        let Replies {
            before,
            reply,
            after,
        } = replies;
        let start = out.len();
        crate::metrics::completed(pending.family, &reply);
        if let (Some(spec), Some(auth)) = (pending.row, &self.auth) {
            // As Redis: a blocking command's wait is not its running time.
            let usec = match share {
                Share::Own { time_us } if !spec.has(crate::commands::flags::BLOCKING) => time_us,
                _ => 0,
            };
            auth.tenant.commands.ran(spec, usec, reply.is_error());
        }
        let stored = self.stored(pending.bill.as_ref(), &reply, &before, &after);
        let ran = !meter::did_not_run(&reply);
        self.write_upstream(out, pending.rewrite, reply);
        let written = out.len() - start;
        let (bytes_out, time_us) = match share {
            Share::Own { time_us } => (written, time_us),
            Share::InExec => (0, 0),
        };
        match pending.bill {
            Some(bill) if ran => self.pay(bill, stored, bytes_out, time_us),
            bill => self.cancel(bill),
        }
        written
    }

    /// Settles a command whose replies never came (`err`); the client gets the error. A
    /// command only being queued in a transaction never runs (Redis drops the transaction
    /// with its connection) and gets its reservation back; one that may have run pays its
    /// known cost, and a store's size (`sent` are its calls) is measured later.
    pub(super) fn fail(
        &mut self,
        pending: Pending,
        sent: &[&Call],
        err: &BackendError,
        time_us: u64,
        queuing: bool,
        out: &mut BytesMut,
    ) {
        ReplyWriter::new(out, self.proto).error(&ClientError::from(err.clone()).line());
        crate::metrics::failed(pending.family);
        if let (Some(spec), Some(auth)) = (pending.row, &self.auth) {
            if queuing {
                auth.tenant.commands.rejected(spec);
            } else {
                auth.tenant.commands.ran(spec, time_us, true);
            }
        }
        if queuing {
            return self.cancel(pending.bill);
        }
        if err.may_have_run()
            && pending
                .bill
                .as_ref()
                .is_some_and(|b| b.rule == After::Store)
        {
            let after = sent.iter().skip(pending.before + 1);
            let default_secs = pending.bill.as_ref().map_or(0, |b| b.default_secs);
            self.measure_store_later(after.map(|c| (*c).clone()).collect(), default_secs);
        }
        self.pay_lost(pending.bill, err, time_us);
    }

    /// A command sent inside MULTI: the client sees its `QUEUED` (or the error that aborts
    /// the transaction) now; its bill, with these bytes and time, waits for EXEC.
    pub(super) fn queue_in_multi(
        &mut self,
        mut pending: Pending,
        replies: Replies,
        time_us: u64,
        out: &mut BytesMut,
    ) {
        let Replies {
            before,
            reply,
            after,
        } = replies;
        let queued = reply == Frame::QUEUED && before.iter().chain(&after).all(|v| !v.is_error());
        let start = out.len();
        self.write_upstream(out, ReplyRewrite::Plain, reply);
        if queued {
            if let Some(bill) = pending.bill.as_mut() {
                bill.usage.bytes_out += (out.len() - start) as u64;
                bill.usage.time_us += time_us;
            }
        } else {
            self.cancel(pending.bill.take());
            if let (Some(spec), Some(auth)) = (pending.row, &self.auth) {
                auth.tenant.commands.rejected(spec);
            }
        }
        if let Some(multi) = self.txn.multi.as_mut() {
            multi.aborted |= !queued;
            if queued {
                multi.queued.push(pending);
            }
        }
    }
}
