//! Dispatch: a forwarded command's keys rewritten into the namespace, then sent in the
//! session's batch (one pipeline per flush), on its dedicated connection (transactions,
//! blocking commands), and its replies handed to [`Session::complete`] in request order.

use bytes::{Bytes, BytesMut};

use super::settle::TimeShares;

use super::{Pending, Session, Share, Txn};
use crate::backend::{BackendError, Dedicated};
use crate::commands::{self, ArgRole, Call, CommandSpec, ReplyRewrite};
use crate::error::ClientError;
use crate::meter::storage::{self, Plan, TtlPolicy};
use crate::metrics::Metrics;
use crate::protocol::frame::Frame;
use crate::protocol::reply::ReplyWriter;
use crate::server::client_io::ClientIo;
use crate::server::limits::CountedDedicated;

/// A batch is sent upstream once it holds this many commands, even mid-read. Replies of a
/// batch are held in memory together (a batch's replies are handed over together), so
/// this also bounds what one connection holds: about this many replies.
pub(super) const MAX_BATCH: usize = 64;

/// A session's batches start with one command and at most double after each flush, and
/// are made smaller when their replies are big: a batch is sized so that, at the size of
/// the largest reply of the last batch, its replies stay within this share of
/// `PKV_MAX_OUTPUT_BYTES`. A pipeline of big replies is then sent in small batches rather
/// than held whole; a connection's first batch holds one reply.
pub(super) const BATCH_SHARE_OF_OUTPUT: usize = 8;

/// Replies pkv wrote itself while a batch was open wait in the batch, each in a buffer of
/// its own, so that replies keep their order. A tiny request (an unknown command, a bare
/// PING) buys a reply and a slot many times its size, so past this many of them, or
/// [`MAX_WAITING_BYTES`] of them, the batch is sent at once and they join the output, where
/// the output bounds apply.
pub(super) const MAX_WAITING_REPLIES: usize = 4 * MAX_BATCH;

/// See [`MAX_WAITING_REPLIES`].
pub(super) const MAX_WAITING_BYTES: usize = 64 * 1024;

/// How a blocking command's wait ended.
pub(super) enum Waited {
    Answered(Vec<Frame>),
    Failed(BackendError),
    ClientGone,
    ShuttingDown,
}

/// A reply waiting for its turn.
pub(super) enum Slot {
    /// The next replies of the batch's upstream pipeline.
    Upstream(Pending),
    /// A reply pkv already wrote.
    Ready(Bytes),
}

/// Commands waiting to be sent upstream together, and the replies around them.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) calls: Vec<Call>,
    pub(super) slots: Vec<Slot>,
    /// Bytes of the `Ready` slots.
    pub(super) waiting_bytes: usize,
}

impl Batch {
    /// True when the replies waiting for the batch should not wait longer (see
    /// [`MAX_WAITING_REPLIES`]).
    pub(super) fn holds_too_much(&self) -> bool {
        self.slots.len() >= MAX_WAITING_REPLIES || self.waiting_bytes >= MAX_WAITING_BYTES
    }
}

impl Session {
    /// Builds the upstream command: every key, pattern and channel rewritten into the
    /// namespace, every other argument as the client sent it.
    pub(in crate::server) fn rewrite(
        &self,
        spec: &'static CommandSpec,
        args: &[Bytes],
    ) -> Result<Call, ClientError> {
        let keys = commands::key_args(spec, args)?;
        self.rewrite_with(spec, args, keys)
    }

    /// [`Session::rewrite`] with the keys already located.
    pub(super) fn rewrite_with(
        &self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        keys: Vec<(usize, ArgRole)>,
    ) -> Result<Call, ClientError> {
        let ns = self.ns().ok_or(ClientError::NoAuth)?;
        Ok(ns.rewrite_call(spec, args, keys))
    }

    pub(super) async fn forward(
        &mut self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        wire_len: usize,
        out: &mut BytesMut,
        io: &mut ClientIo,
    ) {
        let located = match commands::locate(spec, args) {
            Ok(located) => located,
            Err(err) => return self.reject(err, out),
        };
        let Some(ns) = self.ns() else {
            return self.reject(ClientError::NoAuth, out);
        };
        let (blocks, wait_limit) = (located.blocks, located.wait_limit(args));
        let keys = located.keys;
        let plan = if self.shared.meter.enabled() {
            match storage::plan(spec, args, &keys, ns, &self.ttl_policy()) {
                Ok(plan) => plan,
                Err(err) => return self.reject(err, out),
            }
        } else {
            Plan::default()
        };
        if spec.has(commands::flags::WRITE) && self.txn.multi.is_some() {
            let written: Vec<Bytes> = match self.ns() {
                Some(ns) => keys
                    .iter()
                    .filter(|(_, role)| *role == ArgRole::Key)
                    .map(|(i, _)| ns.wrap(&args[*i]))
                    .collect(),
                None => Vec::new(),
            };
            if let Some(multi) = self.txn.multi.as_mut() {
                multi.written.extend(written);
            }
        }
        let mut cmd = match self.rewrite_with(spec, args, keys) {
            Ok(cmd) => cmd,
            Err(err) => return self.reject(err, out),
        };
        if plan.append_default_ttl {
            let secs = self.default_ttl();
            let arg = if secs == self.current.default_ttl {
                self.current.default_ttl_arg.clone()
            } else {
                Bytes::from(secs.to_string())
            };
            cmd = cmd.arg("EX").arg(arg);
        }
        let blocks = blocks && self.txn.multi.is_none();
        let bill = match self
            .admit(wire_len, plan.bound, plan.rule, blocks, out)
            .await
        {
            Ok(bill) => bill,
            Err(err) => {
                crate::metrics::process::refused(spec);
                return self.reject(err, out);
            }
        };
        let pending = Pending {
            rewrite: spec.reply,
            before: plan.before.len(),
            after: plan.after.len(),
            bill,
            family: Some(crate::metrics::Family::of(spec)),
            row: Some(spec),
        };
        if blocks {
            // In pipeline order: bookkeeping before, the command, bookkeeping after.
            let mut cmds = plan.before;
            cmds.push(cmd);
            cmds.extend(plan.after);
            return self.run_blocking(cmds, pending, wait_limit, out, io).await;
        }
        self.enqueue(plan.before, cmd, plan.after, pending, out)
            .await;
    }

    /// The default TTL of this session's account, in seconds: its own (`PKV.DEFAULTTTL`),
    /// or `PKV_DEFAULT_TTL`.
    pub(in crate::server) fn default_ttl(&self) -> u64 {
        self.auth
            .as_ref()
            .and_then(|a| a.meter.default_ttl())
            .filter(|&secs| secs > 0)
            .unwrap_or(self.current.default_ttl)
    }

    /// The TTL policy now.
    pub(in crate::server) fn ttl_policy(&self) -> TtlPolicy {
        TtlPolicy {
            default_secs: self.default_ttl(),
            max_secs: self.current.max_ttl,
            now_ms: self.now_ms,
        }
    }

    /// Adds a command, with its bookkeeping commands around it (as `pending` counts them),
    /// to the batch. Inside MULTI the client's reply is `QUEUED`; the command waits in the
    /// transaction for EXEC.
    pub(in crate::server) async fn enqueue(
        &mut self,
        before: Vec<Call>,
        cmd: Call,
        after: Vec<Call>,
        pending: Pending,
        out: &mut BytesMut,
    ) {
        self.batch.calls.extend(before);
        self.batch.calls.push(cmd);
        self.batch.calls.extend(after);
        self.batch.slots.push(Slot::Upstream(pending));
        if self.batch.calls.len() >= self.batch_cap {
            self.flush(out).await;
        }
    }

    /// A command with no bookkeeping and no bill of its own.
    pub(in crate::server) async fn enqueue_plain(
        &mut self,
        cmd: Call,
        rewrite: ReplyRewrite,
        out: &mut BytesMut,
    ) {
        let pending = Pending {
            rewrite,
            before: 0,
            after: 0,
            bill: None,
            family: None,
            row: None,
        };
        self.enqueue(Vec::new(), cmd, Vec::new(), pending, out)
            .await;
    }

    /// Sends the batch upstream and writes every owed reply, in order.
    pub async fn flush(&mut self, out: &mut BytesMut) {
        if self.batch.slots.is_empty() {
            return;
        }
        // The batch's vectors are kept for the next one, so that a connection's steady
        // traffic allocates none.
        let mut batch = std::mem::take(&mut self.batch);
        let started = std::time::Instant::now();
        let replies = if batch.calls.is_empty() {
            Ok(Vec::new())
        } else if self.txn.active() {
            match self.dedicated.as_mut() {
                Some(conn) => conn.pipeline(&batch.calls).await,
                None => Err(BackendError::Unavailable(
                    "transaction connection lost".into(),
                )),
            }
        } else {
            self.shared.backend.pipeline(self.proto, &batch.calls).await
        };
        if !batch.calls.is_empty() {
            crate::metrics::figures()
                .backend_latency
                .observe(started.elapsed());
        }
        // Each command of the batch held the upstream for an equal share of the round trip.
        let commands = batch
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Upstream(_)))
            .count() as u64;
        let mut shares = TimeShares::new(started.elapsed().as_micros() as u64, commands);
        // The largest reply of this batch sizes the next one.
        let mut largest = 0;
        // Commands only queued inside MULTI never run when the transaction's connection
        // fails (Redis discards the transaction with the connection).
        let queuing = self.txn.multi.is_some();
        let mut replies = match replies {
            Ok(values) => Ok(values.into_iter()),
            Err(err) => {
                Metrics::inc(&self.shared.metrics.upstream_errors_total);
                if self.txn.active() {
                    // The transaction lived on the connection that failed.
                    self.txn = Txn::default();
                    self.dedicated = None;
                }
                Err(err)
            }
        };
        // What was sent, in order: read only when the replies were lost (then every
        // command of the batch goes through that path).
        let mut sent = batch.calls.iter();
        for slot in batch.slots.drain(..) {
            let pending = match slot {
                Slot::Ready(bytes) => {
                    out.extend_from_slice(&bytes);
                    continue;
                }
                Slot::Upstream(pending) => pending,
            };
            let time_us = shares.next();
            match &mut replies {
                Ok(values) => {
                    let replies = pending.take_replies(values);
                    if self.txn.multi.is_some() {
                        self.queue_in_multi(pending, replies, time_us, out);
                    } else {
                        let written = self.complete(pending, replies, Share::Own { time_us }, out);
                        largest = largest.max(written);
                    }
                }
                Err(err) => {
                    let err = err.clone();
                    let mine: Vec<&Call> = sent.by_ref().take(pending.calls()).collect();
                    self.fail(pending, &mine, &err, time_us, queuing, out);
                }
            }
        }
        batch.calls.clear();
        batch.waiting_bytes = 0;
        if self.batch.slots.is_empty() {
            self.batch = batch;
        }
        let budget = self.current.max_output_bytes / BATCH_SHARE_OF_OUTPUT;
        self.batch_cap = (self.batch_cap * 2)
            .min(MAX_BATCH)
            .min((budget / largest.max(1)).max(1));
    }

    /// Step 6: rewrites an upstream reply and writes it.
    pub(in crate::server) fn write_upstream(
        &self,
        out: &mut BytesMut,
        rewrite: ReplyRewrite,
        value: Frame,
    ) {
        let mut w = ReplyWriter::new(out, self.proto);
        match (&value, rewrite) {
            (Frame::Null, ReplyRewrite::FirstKey | ReplyRewrite::Streams) => w.null_array(),
            // Some Redis errors quote the key ("No such key '...'"): show the client's name.
            (Frame::Error(line), _) => match self.ns() {
                Some(ns) if line.windows(ns.prefix().len()).any(|w| w == ns.prefix()) => {
                    w.error(&ns.strip_all(&String::from_utf8_lossy(line)))
                }
                _ => w.frame(&value),
            },
            _ => match self.ns() {
                Some(ns) => w.frame(&ns.rewrite_reply(rewrite, value)),
                None => w.frame(&value),
            },
        }
    }

    /// The session's own upstream connection, opened on first need; counted against the
    /// account's dedicated connections (`PKV_MAX_DEDICATED_PER_ACCOUNT`) while it is open.
    pub(in crate::server) async fn dedicated(
        &mut self,
    ) -> Result<&mut Box<dyn Dedicated>, BackendError> {
        if self.dedicated.is_none() {
            let account = self.auth.as_ref().map(|a| a.account.clone());
            let held = match account {
                Some(account) => Some(
                    self.shared
                        .limits
                        .dedicated(&account)
                        .map_err(BackendError::Limit)?,
                ),
                None => None,
            };
            let conn = self.shared.backend.dedicated(self.proto).await?;
            self.dedicated = Some(match held {
                Some(held) => Box::new(CountedDedicated { conn, _held: held }),
                None => conn,
            });
        }
        Ok(self.dedicated.as_mut().expect("set above"))
    }

    /// Runs one command on the dedicated connection, answering at once.
    pub(in crate::server) async fn run_dedicated(
        &mut self,
        cmd: Call,
    ) -> Result<Frame, BackendError> {
        let result = match self.dedicated().await {
            Ok(conn) => conn.pipeline(std::slice::from_ref(&cmd)).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(mut values) => Ok(values.pop().unwrap_or_default()),
            Err(e) => {
                self.dedicated = None;
                self.txn = Txn::default();
                Err(e)
            }
        }
    }

    /// A blocking command waits on the dedicated connection. If the client leaves while it
    /// waits, the connection is closed so that Redis unblocks it and hands no data to a
    /// client that is gone. If pkv shuts down while it waits, a wait that ends by itself
    /// within the grace (`wait_limit`, as the client asked) is let finish like any command
    /// in flight; a longer one is answered [`ClientError::ShuttingDown`] at once and the session
    /// ends, so shutdown does not wait its grace for a wait that may never end. Either way
    /// it pays for the time it waited.
    pub(super) async fn run_blocking(
        &mut self,
        cmds: Vec<Call>,
        pending: Pending,
        wait_limit: Option<std::time::Duration>,
        out: &mut BytesMut,
        io: &mut ClientIo,
    ) {
        self.flush(out).await;
        let (cap, grace) = (self.current.max_request_bytes, self.current.shutdown_grace);
        let stopping = self.shared.stopping();
        tokio::pin!(stopping);
        let started = std::time::Instant::now();
        let ends_by = wait_limit.and_then(|limit| started.checked_add(limit));
        let mut let_finish = false;
        let tenant = self.auth.as_ref().map(|a| a.tenant.clone());
        let outcome = match self.dedicated().await {
            Err(e) => Waited::Failed(e),
            Ok(conn) => {
                let wait = crate::metrics::while_blocked(tenant, conn.pipeline(&cmds));
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        result = &mut wait => break match result {
                            Ok(values) => Waited::Answered(values),
                            Err(e) => Waited::Failed(e),
                        },
                        () = io.closed(cap) => break Waited::ClientGone,
                        () = &mut stopping, if !let_finish => {
                            let now = std::time::Instant::now();
                            if ends_by.is_some_and(|at| at <= now + grace) {
                                let_finish = true;
                            } else {
                                break Waited::ShuttingDown;
                            }
                        }
                    }
                }
            }
        };
        let waited = started.elapsed().as_micros() as u64;
        match outcome {
            Waited::ClientGone => {
                self.dedicated = None;
                self.closing = true;
                if let Some(bill) = pending.bill {
                    self.pay(bill, 0, 0, waited);
                }
            }
            Waited::ShuttingDown => {
                // Closing the connection ends the wait upstream.
                self.dedicated = None;
                self.closing = true;
                let start = out.len();
                ReplyWriter::new(out, self.proto).error(&ClientError::ShuttingDown.line());
                if let Some(bill) = pending.bill {
                    self.pay(bill, 0, out.len() - start, waited);
                }
            }
            Waited::Answered(values) => {
                let replies = pending.take_replies(&mut values.into_iter());
                self.complete(pending, replies, Share::Own { time_us: waited }, out);
            }
            Waited::Failed(err) => {
                self.dedicated = None;
                self.txn = Txn::default();
                Metrics::inc(&self.shared.metrics.upstream_errors_total);
                let sent: Vec<&Call> = cmds.iter().collect();
                self.fail(pending, &sent, &err, waited, false, out);
            }
        }
    }
}
