//! A client's session and the request path every command takes.
//!
//! The steps, in order, all in [`Session::submit`]:
//! 1. look up the command's row in the table (unknown, refused and wrong-arity commands
//!    are answered here);
//! 2. authenticate: before AUTH only handshake commands pass; an expired token stops the
//!    rest;
//! 3. run local commands ([`super::local`]) or
//! 4. locate the keys and rewrite them into the account's namespace, then
//! 5. forward: plain commands join the current batch, sent upstream as one pipeline when
//!    the batch is flushed; blocking commands and commands inside MULTI/WATCH use the
//!    session's dedicated connection;
//! 6. rewrite each reply (strip prefixes from key names) and write it in request order.
//!
//! Metering sits between steps 4 and 5 and after step 6: before a command is forwarded its
//! known cost (one op, the request bytes, the storage it may buy) is reserved from the
//! account's lease, or it is refused with `NOQUOTA` and nothing runs; once its reply is
//! written, the exact cost replaces the reservation ([`Bill`]).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use redis::Value;

use super::connection::ClientIo;
use super::limits::{CountedDedicated, Held, LimitError};
use super::Shared;
use crate::backend::{BackendError, Dedicated, Message, Messages, SubscriptionSink};
use crate::commands::{
    self, flags, ArgRole, CommandSpec, Exec, KeyRule, LookupError, ReplyRewrite,
};
use crate::ledger::format_nanos;
use crate::meter::storage::{self, After, Plan, TtlPolicy};
use crate::meter::{self, AccountHandle, Admitted, Charges, Flight, Refusal, Usage};
use crate::metrics::{Metrics, TenantStats};
use crate::namespace::Namespace;
use crate::protocol::reply::ReplyWriter;
use crate::protocol::request::{Limits, Request};
use crate::protocol::Proto;

/// How many times pkv asks what a store whose reply was lost stored, one upstream timeout
/// apart, before it gives up.
const LATE_MEASURE_ATTEMPTS: usize = 3;

/// A batch is sent upstream once it holds this many commands, even mid-read. Replies of a
/// batch are held in memory together (the redis crate reads a pipeline's replies whole), so
/// this also bounds what one connection holds: about this many replies.
const MAX_BATCH: usize = 64;

/// A session's batches start with one command and at most double after each flush, and
/// are made smaller when their replies are big: a batch is sized so that, at the size of
/// the largest reply of the last batch, its replies stay within this share of
/// `PKV_MAX_OUTPUT_BYTES`. A pipeline of big replies is then sent in small batches rather
/// than held whole; a connection's first batch holds one reply.
const BATCH_SHARE_OF_OUTPUT: usize = 8;

/// The authenticated side of a session.
pub struct Authed {
    pub account: Arc<str>,
    pub ns: Namespace,
    /// The token stops being valid at this time (seconds since the epoch).
    pub valid_until: i64,
    /// The account's meter in this process.
    pub meter: AccountHandle,
    /// The account's own figures, for its `INFO`.
    pub tenant: Arc<TenantStats>,
    /// This connection, counted against the account's connections and buffered bytes.
    pub slot: Held,
}

/// MULTI/WATCH state. While either is active the session's commands use its dedicated
/// connection, where Redis keeps the transaction.
#[derive(Default)]
pub struct Txn {
    pub watching: bool,
    /// `Some` between MULTI and EXEC/DISCARD.
    pub multi: Option<Multi>,
}

/// A transaction being queued.
#[derive(Default)]
pub struct Multi {
    /// Each queued command, in order; EXEC's results are matched to them.
    pub queued: Vec<Pending>,
    /// A command was refused while queuing; EXEC will answer EXECABORT.
    pub aborted: bool,
}

impl Txn {
    fn active(&self) -> bool {
        self.watching || self.multi.is_some()
    }
}

/// A Pub/Sub subscription: the upstream sink, the messages, and the names subscribed to.
pub struct Subscriber {
    pub sink: Box<dyn SubscriptionSink>,
    pub messages: Messages,
    pub channels: std::collections::BTreeSet<Bytes>,
    pub patterns: std::collections::BTreeSet<Bytes>,
}

impl Subscriber {
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

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
}

/// A command in an upstream pipeline: the client's reply, plus `before` and `after`
/// bookkeeping replies around it that the client never sees.
#[derive(Debug)]
pub struct Pending {
    pub rewrite: ReplyRewrite,
    pub before: usize,
    pub after: usize,
    pub bill: Option<Bill>,
}

impl Pending {
    /// Takes this command's replies off a pipeline's replies: the bookkeeping before it,
    /// its own, and the bookkeeping after it.
    pub fn take_replies(
        &self,
        values: &mut impl Iterator<Item = Value>,
    ) -> (Vec<Value>, Value, Vec<Value>) {
        let before = values.by_ref().take(self.before).collect();
        let reply = values.next().unwrap_or(Value::Nil);
        let after = values.by_ref().take(self.after).collect();
        (before, reply, after)
    }
}

/// The reply to a client blocked in a command when pkv shuts down. Redis answers a wait it
/// must end for a reason other than data or the timeout (its instance changing role, a
/// slot moving) with an `UNBLOCKED` error; a null reply would tell the client its timeout
/// passed, which never happens for a timeout of 0.
pub const SHUTDOWN_UNBLOCKED: &str = "UNBLOCKED server shutting down; reconnect and retry";

/// How a blocking command's wait ended.
enum Waited {
    Answered(Vec<Value>),
    Failed(BackendError),
    ClientGone,
    ShuttingDown,
}

/// A reply waiting for its turn.
enum Slot {
    /// The next replies of the batch's upstream pipeline.
    Upstream(Pending),
    /// A reply pkv already wrote.
    Ready(Bytes),
}

/// Commands waiting to be sent upstream together, and the replies around them.
#[derive(Default)]
struct Batch {
    pipe: redis::Pipeline,
    count: usize,
    slots: Vec<Slot>,
}

/// One client's state.
pub struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) id: u64,
    pub(super) peer: SocketAddr,
    pub proto: Proto,
    pub(super) name: Option<Bytes>,
    pub(super) auth: Option<Authed>,
    pub(super) txn: Txn,
    pub(super) dedicated: Option<Box<dyn Dedicated>>,
    pub(super) pubsub: Option<Subscriber>,
    batch: Batch,
    /// Commands the next batch may hold (see [`BATCH_SHARE_OF_OUTPUT`]).
    batch_cap: usize,
    /// Set by QUIT: close after the replies are written.
    pub closing: bool,
    /// Costs not yet added to the account's meter.
    pub(super) charges: Charges,
    /// Commands not yet added to the process's counter.
    commands: u64,
    /// The clock for the current read (milliseconds since the epoch).
    now_ms: i64,
    /// When `PKV.BALANCE` last read the ledger on this connection (it is paced).
    pub(super) balance_read_at: Option<tokio::time::Instant>,
}

impl Session {
    pub fn new(shared: Arc<Shared>, peer: SocketAddr) -> Self {
        Session {
            id: shared.client_id(),
            shared,
            peer,
            proto: Proto::Resp2,
            name: None,
            auth: None,
            txn: Txn::default(),
            dedicated: None,
            pubsub: None,
            batch: Batch::default(),
            batch_cap: 1,
            closing: false,
            charges: Charges::default(),
            commands: 0,
            now_ms: 0,
            balance_read_at: None,
        }
    }

    /// Request limits: small until the client authenticates.
    pub fn limits(&self) -> Limits {
        match self.auth {
            None => Limits::UNAUTHENTICATED,
            Some(_) => Limits {
                max_args: self.shared.settings.max_args,
                max_bytes: self.shared.settings.max_request_bytes,
            },
        }
    }

    /// True once the connection has authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.auth.is_some()
    }

    /// Records the bytes of the unfinished request this connection buffers, against the
    /// account's limit; an error when the account's connections together pass it.
    /// Connections not yet authenticated are bounded by their smaller request limits.
    pub fn hold_unfinished(&mut self, bytes: usize) -> Result<(), LimitError> {
        match &mut self.auth {
            Some(auth) => auth.slot.set_buffered(bytes),
            None => Ok(()),
        }
    }

    /// Records the reply bytes this connection holds while its client does not read,
    /// against the account's limit; an error when the account's connections together
    /// pass it.
    pub fn hold_output(&mut self, bytes: usize) -> Result<(), LimitError> {
        match &mut self.auth {
            Some(auth) => auth.slot.set_output(bytes),
            None => Ok(()),
        }
    }

    /// Pays for the bytes of a request that never completed (the connection ends with it
    /// partly received): they count as received (bytes_in), as SPEC 10 says.
    pub fn pay_unfinished(&mut self, bytes: usize) {
        if bytes == 0 || self.auth.is_none() || !self.shared.meter.enabled() {
            return;
        }
        let usage = Usage {
            bytes_in: bytes as u64,
            ..Usage::default()
        };
        self.shared
            .meter
            .charge(&mut self.charges, Admitted::default(), &usage);
    }

    /// True while subscribed: Pub/Sub messages may arrive at any time.
    pub fn is_waiting_for_messages(&self) -> bool {
        self.pubsub.as_ref().is_some_and(|s| s.count() > 0)
    }

    /// Runs one request: answers it, queues it, or forwards it.
    pub async fn submit(&mut self, req: Request, out: &mut BytesMut, io: &mut ClientIo) {
        let (args, wire_len) = (req.args, req.wire_len);
        if args.is_empty() {
            return;
        }
        self.commands += 1;
        // Step 1: the command's row. Before AUTH, anything but the handshake (known or
        // not) is answered NOAUTH, so strangers learn nothing about what is served.
        let spec = match commands::lookup(&args) {
            Ok(spec) => spec,
            Err(_) if self.auth.is_none() => {
                return self.reject("NOAUTH Authentication required.", out)
            }
            Err(err) => return self.reject(&lookup_error(err, &args), out),
        };
        // Step 2: authentication.
        if !spec.has(flags::NO_AUTH) {
            match &self.auth {
                None => return self.reject("NOAUTH Authentication required.", out),
                Some(a) if self.now_ms / 1000 >= a.valid_until => {
                    return self.reject("NOAUTH token expired; AUTH again", out)
                }
                Some(_) => {}
            }
        }
        if self.proto == Proto::Resp2
            && self.is_waiting_for_messages()
            && !spec.has(flags::SUBSCRIBED_OK)
        {
            let name = String::from_utf8_lossy(&args[0]).to_lowercase();
            let msg = format!("ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context");
            return self.reject(&msg, out);
        }
        match spec.exec {
            // Step 3: pkv's own commands.
            Exec::Local(local) => {
                self.metered_local(local, spec, &args, wire_len, out, io)
                    .await
            }
            // Steps 4 and 5.
            Exec::Forward => self.forward(spec, &args, wire_len, out, io).await,
        }
    }

    /// Answers with an error; inside MULTI the transaction is then aborted, as Redis does
    /// for commands refused while queuing.
    pub(super) fn reject(&mut self, message: &str, out: &mut BytesMut) {
        if let Some(multi) = &mut self.txn.multi {
            multi.aborted = true;
        }
        self.reply(out, |w| w.error(message));
    }

    /// Writes a reply pkv produced itself, after every reply still owed before it.
    pub(super) fn reply(&mut self, out: &mut BytesMut, write: impl FnOnce(&mut ReplyWriter)) {
        if self.batch.slots.is_empty() {
            write(&mut ReplyWriter::new(out, self.proto));
        } else {
            let mut buf = BytesMut::new();
            write(&mut ReplyWriter::new(&mut buf, self.proto));
            self.batch.slots.push(Slot::Ready(buf.freeze()));
        }
    }

    pub(super) fn ns(&self) -> Option<&Namespace> {
        self.auth.as_ref().map(|a| &a.ns)
    }

    /// Builds the upstream command: every key, pattern and channel rewritten into the
    /// namespace, every other argument as the client sent it.
    pub(super) fn rewrite(&self, spec: &CommandSpec, args: &[Bytes]) -> Result<redis::Cmd, String> {
        let keys = commands::key_args(spec, args).map_err(|e| e.to_string())?;
        self.rewrite_with(spec, args, keys)
    }

    /// [`Session::rewrite`] with the keys already located.
    fn rewrite_with(
        &self,
        spec: &CommandSpec,
        args: &[Bytes],
        mut keys: Vec<(usize, ArgRole)>,
    ) -> Result<redis::Cmd, String> {
        let ns = self.ns().ok_or("NOAUTH Authentication required.")?;
        keys.sort_unstable_by_key(|(i, _)| *i);
        let mut keys = keys.into_iter().peekable();
        let mut cmd = redis::Cmd::new();
        for (i, arg) in args.iter().enumerate() {
            let mut role = None;
            while let Some(&(k, r)) = keys.peek() {
                if k > i {
                    break;
                }
                if k == i {
                    role = Some(r);
                }
                keys.next();
            }
            match role {
                Some(role) => cmd.arg(ns.rewrite(arg, role).as_ref()),
                None => cmd.arg(arg.as_ref()),
            };
        }
        for rule in spec.keys {
            if let KeyRule::OptionalChannelPattern { at } = rule {
                if args.len() <= usize::from(*at) {
                    cmd.arg(ns.wrap_glob(b"*").as_ref());
                }
            }
        }
        Ok(cmd)
    }

    async fn forward(
        &mut self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        wire_len: usize,
        out: &mut BytesMut,
        io: &mut ClientIo,
    ) {
        let located = match commands::locate(spec, args) {
            Ok(located) => located,
            Err(e) => return self.reject(&e.to_string(), out),
        };
        let Some(ns) = self.ns() else {
            return self.reject("NOAUTH Authentication required.", out);
        };
        let (blocks, wait_limit) = (located.blocks, located.wait_limit(args));
        let keys = located.keys;
        let plan = if self.shared.meter.enabled() {
            match storage::plan(spec, args, &keys, ns, &self.ttl_policy()) {
                Ok(plan) => plan,
                Err(msg) => return self.reject(&msg, out),
            }
        } else {
            Plan::default()
        };
        let mut cmd = match self.rewrite_with(spec, args, keys) {
            Ok(cmd) => cmd,
            Err(msg) => return self.reject(&msg, out),
        };
        if plan.append_default_ttl {
            cmd.arg("EX").arg(self.shared.default_ttl_arg.as_ref());
        }
        let blocks = blocks && self.txn.multi.is_none();
        let bill = match self
            .admit(wire_len, plan.bound, plan.rule, blocks, out)
            .await
        {
            Ok(bill) => bill,
            Err(msg) => return self.reject(&msg, out),
        };
        let pending = Pending {
            rewrite: spec.reply,
            before: plan.before.len(),
            after: plan.after.len(),
            bill,
        };
        // In pipeline order: bookkeeping before, the command, bookkeeping after.
        let mut cmds = plan.before;
        cmds.push(cmd);
        cmds.extend(plan.after);
        if blocks {
            return self.run_blocking(cmds, pending, wait_limit, out, io).await;
        }
        self.enqueue(cmds, pending, out).await;
    }

    /// The TTL policy now.
    fn ttl_policy(&self) -> TtlPolicy {
        TtlPolicy {
            default_secs: self.shared.settings.default_ttl,
            max_secs: self.shared.settings.max_ttl,
            now_ms: self.now_ms,
        }
    }

    /// Reserves a command's known cost (one op, `wire_len` request bytes, up to
    /// `storage_bound` byte-seconds) from the account, or says why it cannot run. When
    /// the lease in memory cannot admit it (it ran short, or the balance is low), the
    /// session's earlier commands are sent and paid first (their replies go to `out`), so
    /// that the meter sees what they cost and holds back only for other sessions.
    pub(super) async fn admit(
        &mut self,
        wire_len: usize,
        storage_bound: u64,
        rule: After,
        blocking: bool,
        out: &mut BytesMut,
    ) -> Result<Option<Bill>, String> {
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
                }))
            }
            Err(Refusal::NoQuota { balance }) => Err(format!(
                "NOQUOTA balance exhausted: {} left; top up with PKV.TOPUP <token>",
                format_nanos(balance.max(0))
            )),
            Err(Refusal::Ledger(msg)) => Err(msg),
        }
    }

    /// The byte-seconds a command bought, read from its reply and bookkeeping replies.
    pub(super) fn stored(
        &self,
        bill: Option<&Bill>,
        reply: &Value,
        before: &[Value],
        after: &[Value],
    ) -> u64 {
        bill.map_or(0, |b| {
            storage::byte_seconds(
                &b.rule,
                reply,
                before,
                after,
                self.shared.settings.default_ttl,
            )
        })
    }

    /// A bill with nothing reserved, for commands that run whatever the balance.
    pub(super) fn unreserved_bill(&self, wire_len: usize) -> Option<Bill> {
        (self.auth.is_some() && self.shared.meter.enabled()).then(|| Bill {
            admitted: Admitted::default(),
            usage: Usage {
                ops: 1,
                bytes_in: wire_len as u64,
                ..Usage::default()
            },
            rule: After::None,
            storage_bound: 0,
        })
    }

    /// Pays a bill: its usage plus the reply bytes, upstream time and storage.
    pub(super) fn pay(&mut self, bill: Bill, byte_seconds: u64, bytes_out: usize, time_us: u64) {
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
    pub(super) fn pay_lost(&mut self, bill: Option<Bill>, err: &BackendError, time_us: u64) {
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
    fn measure_store_later(&self, after: Vec<redis::Cmd>) {
        let Some(auth) = &self.auth else { return };
        let (shared, account, proto) = (self.shared.clone(), auth.account.clone(), self.proto);
        tokio::spawn(async move {
            let meter = shared.meter.attach(&account);
            let mut pipe = redis::pipe();
            for cmd in after {
                pipe.add_command(cmd);
            }
            let count = pipe.cmd_iter().count();
            for _attempt in 0..LATE_MEASURE_ATTEMPTS {
                // Let the upstream run what it was sent before asking what it stored.
                tokio::time::sleep(shared.settings.upstream_timeout).await;
                let Ok(values) = shared.backend.pipeline(proto, &pipe, count).await else {
                    continue;
                };
                let stored = storage::byte_seconds(
                    &After::Store,
                    &Value::Okay,
                    &[],
                    &values,
                    shared.settings.default_ttl,
                );
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
    pub(super) fn cancel(&mut self, bill: Option<Bill>) {
        if let Some(bill) = bill {
            self.shared.meter.cancel(&mut self.charges, bill.admitted);
        }
    }

    /// Adds what this session's commands cost to the account, and their number to the
    /// process's and the account's counters (once per read, not per command: they are
    /// shared by every connection).
    pub fn apply_charges(&mut self) {
        let commands = std::mem::take(&mut self.commands);
        if commands > 0 {
            self.shared
                .metrics
                .commands_total
                .fetch_add(commands, std::sync::atomic::Ordering::Relaxed);
            if let Some(auth) = &self.auth {
                auth.tenant
                    .commands_total
                    .fetch_add(commands, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if let Some(auth) = &self.auth {
            if !self.charges.is_empty() {
                self.shared.meter.apply(&auth.meter, &mut self.charges);
            }
        }
    }

    /// Reads the clock for the requests of one read: token expiry and TTLs use it.
    pub fn tick(&mut self) {
        self.now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
    }

    /// Adds a command, with its bookkeeping commands around it (`cmds`, in pipeline order,
    /// as `pending` counts them), to the batch. Inside MULTI
    /// the client's reply is `QUEUED`; the command waits in the transaction for EXEC.
    pub(super) async fn enqueue(
        &mut self,
        cmds: Vec<redis::Cmd>,
        pending: Pending,
        out: &mut BytesMut,
    ) {
        for c in cmds {
            self.batch.pipe.add_command(c);
            self.batch.count += 1;
        }
        self.batch.slots.push(Slot::Upstream(pending));
        if self.batch.count >= self.batch_cap {
            self.flush(out).await;
        }
    }

    /// A command with no bookkeeping and no bill of its own.
    pub(super) async fn enqueue_plain(
        &mut self,
        cmd: redis::Cmd,
        rewrite: ReplyRewrite,
        out: &mut BytesMut,
    ) {
        let pending = Pending {
            rewrite,
            before: 0,
            after: 0,
            bill: None,
        };
        self.enqueue(vec![cmd], pending, out).await;
    }

    /// Sends the batch upstream and writes every owed reply, in order.
    pub async fn flush(&mut self, out: &mut BytesMut) {
        if self.batch.slots.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let started = std::time::Instant::now();
        let replies = if batch.count == 0 {
            Ok(Vec::new())
        } else if self.txn.active() {
            match self.dedicated.as_mut() {
                Some(conn) => conn.pipeline(&batch.pipe, batch.count).await,
                None => Err(BackendError::Unavailable(
                    "transaction connection lost".into(),
                )),
            }
        } else {
            self.shared
                .backend
                .pipeline(self.proto, &batch.pipe, batch.count)
                .await
        };
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
        let mut sent = batch.pipe.cmd_iter();
        for slot in batch.slots {
            let pending = match slot {
                Slot::Ready(bytes) => {
                    out.extend_from_slice(&bytes);
                    continue;
                }
                Slot::Upstream(pending) => pending,
            };
            let values = match &mut replies {
                Ok(values) => values,
                Err(err) => {
                    let err = err.clone();
                    let mine: Vec<&redis::Cmd> = sent
                        .by_ref()
                        .take(pending.before + 1 + pending.after)
                        .collect();
                    ReplyWriter::new(out, self.proto).error(&err.to_string());
                    if queuing {
                        self.cancel(pending.bill);
                        continue;
                    }
                    if err.may_have_run()
                        && pending
                            .bill
                            .as_ref()
                            .is_some_and(|b| b.rule == After::Store)
                    {
                        let after = mine.iter().skip(pending.before + 1);
                        self.measure_store_later(after.map(|c| (*c).clone()).collect());
                    }
                    self.pay_lost(pending.bill, &err, shares.next());
                    continue;
                }
            };
            let (before, reply, after) = pending.take_replies(values);
            let time_us = shares.next();
            let start = out.len();
            if self.txn.multi.is_some() {
                // Queued: the client sees QUEUED now; the bill waits for EXEC.
                let queued = matches!(&reply, Value::SimpleString(s) if s == "QUEUED")
                    && before
                        .iter()
                        .chain(&after)
                        .all(|v| !matches!(v, Value::ServerError(_)));
                let mut pending = pending;
                self.write_upstream(out, ReplyRewrite::Plain, reply);
                if queued {
                    if let Some(bill) = pending.bill.as_mut() {
                        bill.usage.bytes_out += (out.len() - start) as u64;
                        bill.usage.time_us += time_us;
                    }
                } else {
                    self.cancel(pending.bill.take());
                }
                if let Some(multi) = self.txn.multi.as_mut() {
                    multi.aborted |= !queued;
                    if queued {
                        multi.queued.push(pending);
                    }
                }
                continue;
            }
            let stored = self.stored(pending.bill.as_ref(), &reply, &before, &after);
            let ran = !meter::did_not_run(&reply);
            self.write_upstream(out, pending.rewrite, reply);
            largest = largest.max(out.len() - start);
            match pending.bill {
                Some(bill) if ran => self.pay(bill, stored, out.len() - start, time_us),
                bill => self.cancel(bill),
            }
        }
        let budget = self.shared.settings.max_output_bytes / BATCH_SHARE_OF_OUTPUT;
        self.batch_cap = (self.batch_cap * 2)
            .min(MAX_BATCH)
            .min((budget / largest.max(1)).max(1));
    }

    /// Step 6: rewrites an upstream reply and writes it.
    pub(super) fn write_upstream(&self, out: &mut BytesMut, rewrite: ReplyRewrite, value: Value) {
        let mut w = ReplyWriter::new(out, self.proto);
        match (&value, rewrite) {
            (Value::Nil, ReplyRewrite::FirstKey | ReplyRewrite::Streams) => w.null_array(),
            // Some Redis errors quote the key ("No such key '...'"): show the client's name.
            (Value::ServerError(err), _) => {
                let mut text = err.code().to_owned();
                if let Some(details) = err.details() {
                    text.push(' ');
                    text.push_str(details);
                }
                match self.ns() {
                    Some(ns) => w.error(&ns.strip_all(&text)),
                    None => w.error(&text),
                }
            }
            _ => match self.ns() {
                Some(ns) => w.value(&ns.rewrite_reply(rewrite, value)),
                None => w.value(&value),
            },
        }
    }

    /// The session's own upstream connection, opened on first need; counted against the
    /// account's dedicated connections (`PKV_MAX_DEDICATED_PER_ACCOUNT`) while it is open.
    pub(super) async fn dedicated(&mut self) -> Result<&mut Box<dyn Dedicated>, BackendError> {
        if self.dedicated.is_none() {
            let account = self.auth.as_ref().map(|a| a.account.clone());
            let held = match account {
                Some(account) => Some(
                    self.shared
                        .limits
                        .dedicated(&account)
                        .map_err(|e| BackendError::Limit(e.to_string()))?,
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
    pub(super) async fn run_dedicated(&mut self, cmd: redis::Cmd) -> Result<Value, BackendError> {
        let mut pipe = redis::pipe();
        pipe.add_command(cmd);
        let result = match self.dedicated().await {
            Ok(conn) => conn.pipeline(&pipe, 1).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(mut values) => Ok(values.pop().unwrap_or(Value::Nil)),
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
    /// in flight; a longer one is answered [`SHUTDOWN_UNBLOCKED`] at once and the session
    /// ends, so shutdown does not wait its grace for a wait that may never end. Either way
    /// it pays for the time it waited.
    async fn run_blocking(
        &mut self,
        cmds: Vec<redis::Cmd>,
        pending: Pending,
        wait_limit: Option<std::time::Duration>,
        out: &mut BytesMut,
        io: &mut ClientIo,
    ) {
        self.flush(out).await;
        let mut pipe = redis::pipe();
        let count = cmds.len();
        for c in cmds {
            pipe.add_command(c);
        }
        let cap = self.shared.settings.max_request_bytes;
        let grace = self.shared.settings.shutdown_grace;
        let stopping = self.shared.stopping();
        tokio::pin!(stopping);
        let started = std::time::Instant::now();
        let ends_by = wait_limit.and_then(|limit| started.checked_add(limit));
        let mut let_finish = false;
        let outcome = match self.dedicated().await {
            Err(e) => Waited::Failed(e),
            Ok(conn) => {
                let wait = conn.pipeline(&pipe, count);
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
                ReplyWriter::new(out, self.proto).error(SHUTDOWN_UNBLOCKED);
                if let Some(bill) = pending.bill {
                    self.pay(bill, 0, out.len() - start, waited);
                }
            }
            Waited::Answered(values) => {
                let mut values = values.into_iter();
                let (before, reply, after) = pending.take_replies(&mut values);
                let start = out.len();
                let stored = self.stored(pending.bill.as_ref(), &reply, &before, &after);
                let ran = !meter::did_not_run(&reply);
                self.write_upstream(out, pending.rewrite, reply);
                match pending.bill {
                    Some(bill) if ran => self.pay(bill, stored, out.len() - start, waited),
                    bill => self.cancel(bill),
                }
            }
            Waited::Failed(err) => {
                self.dedicated = None;
                self.txn = Txn::default();
                Metrics::inc(&self.shared.metrics.upstream_errors_total);
                ReplyWriter::new(out, self.proto).error(&err.to_string());
                self.pay_lost(pending.bill, &err, waited);
            }
        }
    }

    /// Ends the session: the meter learns that one session of the account is gone (the
    /// last one gives the account's lease back).
    pub async fn end(&mut self) {
        // A transaction left open never runs; its queued commands pay what they used.
        if let Some(multi) = self.txn.multi.take() {
            self.pay_unexecuted(multi);
        }
        self.apply_charges();
        if let Some(auth) = self.auth.take() {
            self.shared.tenants.detach(&auth.account, &auth.tenant);
            self.shared.meter.forget(&auth.meter, &mut self.charges);
            self.shared.meter.detach(&auth.meter).await;
        }
    }

    /// Commands this session ran that its account's counter does not hold yet.
    pub(super) fn commands_pending(&self) -> u64 {
        self.commands
    }

    /// How long the connection's token stays valid, while it is subscribed: a subscriber
    /// sends no commands, so the expiry check on each command would never stop it.
    pub fn subscription_expires_in(&self) -> Option<std::time::Duration> {
        let auth = self
            .auth
            .as_ref()
            .filter(|_| self.is_waiting_for_messages())?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let left = auth.valid_until.saturating_mul(1000).saturating_sub(now_ms);
        Some(std::time::Duration::from_millis(left.max(0) as u64))
    }

    /// The next Pub/Sub message; never resolves while not subscribed.
    pub async fn next_message(&mut self) -> Option<Message> {
        match &mut self.pubsub {
            Some(sub) => sub.messages.recv().await,
            None => std::future::pending().await,
        }
    }

    /// True when the subscription was cut off because its messages waited past
    /// `PKV_MAX_SUBSCRIBER_BYTES`.
    pub fn subscriber_cut_off(&self) -> bool {
        self.pubsub
            .as_ref()
            .is_some_and(|sub| sub.messages.is_cut_off())
    }

    /// Resolves when the subscription is cut off; never while not subscribed.
    pub fn until_cut_off(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let signal = self.pubsub.as_ref().map(|s| s.messages.cut_off_signal());
        async move {
            match signal {
                Some(signal) => signal.wait().await,
                None => std::future::pending().await,
            }
        }
    }

    /// Delivers a Pub/Sub message; the subscriber pays its bytes (bytes_out), as for any
    /// reply.
    pub fn deliver(&mut self, msg: Message, out: &mut BytesMut) {
        let start = out.len();
        self.write_message(msg, out);
        let bytes_out = (out.len() - start) as u64;
        if bytes_out > 0 && self.shared.meter.enabled() {
            let usage = Usage {
                bytes_out,
                ..Usage::default()
            };
            self.shared
                .meter
                .charge(&mut self.charges, Admitted::default(), &usage);
        }
    }

    /// Writes a Pub/Sub message with the channel (and pattern) as the client named them.
    fn write_message(&self, msg: Message, out: &mut BytesMut) {
        let Some(ns) = self.ns() else { return };
        let Some(channel) = ns.strip(&msg.channel) else {
            return;
        };
        let mut w = ReplyWriter::new(out, self.proto);
        match &msg.pattern {
            Some(pattern) => {
                let Some(pattern) = ns.strip(pattern) else {
                    return;
                };
                w.push(4);
                w.bulk(b"pmessage");
                w.bulk(pattern);
            }
            None => {
                w.push(3);
                w.bulk(b"message");
            }
        }
        w.bulk(channel);
        w.bulk(&msg.payload);
    }
}

/// Splits a round trip's time evenly over the commands that shared it (the first takes
/// the remainder), so the parts add up to the whole.
struct TimeShares {
    each: u64,
    remainder: u64,
}

impl TimeShares {
    fn new(total_us: u64, commands: u64) -> Self {
        let commands = commands.max(1);
        TimeShares {
            each: total_us / commands,
            remainder: total_us % commands,
        }
    }

    fn next(&mut self) -> u64 {
        self.each + std::mem::take(&mut self.remainder)
    }
}

/// The Redis-style error for a request the table does not serve.
fn lookup_error(err: LookupError, args: &[Bytes]) -> String {
    let name = String::from_utf8_lossy(&args[0]);
    match err {
        LookupError::Unknown => {
            let mut msg = format!(
                "ERR unknown command '{}', with args beginning with: ",
                truncate(&name)
            );
            for arg in args.iter().skip(1).take(8) {
                msg.push_str(&format!("'{}' ", truncate(&String::from_utf8_lossy(arg))));
            }
            msg
        }
        LookupError::Denied(what) => format!("ERR command '{what}' is not allowed through pkv"),
        LookupError::UnknownSubcommand => {
            let sub = args
                .get(1)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .unwrap_or_default();
            format!(
                "ERR unknown subcommand '{}'. Try {} HELP.",
                truncate(&sub),
                name.to_uppercase()
            )
        }
        LookupError::Arity => format!(
            "ERR wrong number of arguments for '{}' command",
            name.to_lowercase()
        ),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(128).collect()
}
