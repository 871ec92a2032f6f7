//! A client's session and the request path every command takes, as named phases:
//!
//! 1. read: [`super::connection::serve`] parses requests off the client's bytes
//!    ([`crate::protocol::request::parse_resuming`]);
//! 2. lookup: the command's row of the table, arity checked ([`Session::submit`],
//!    [`crate::commands::lookup`]);
//! 3. authenticate: before AUTH only the handshake passes; an expired token stops the rest
//!    ([`Session::submit`]);
//! 4. local commands are answered here ([`super::local`], wrapped in
//!    [`Session::metered_local`]); the others are
//! 5. located and priced: their keys found by the key grammar ([`crate::commands::locate`]),
//!    the storage they may buy planned ([`crate::meter::storage::plan`])
//!    ([`Session::forward`] in `dispatch.rs`);
//! 6. admitted: their known cost reserved from the account's lease, or refused with
//!    `NOQUOTA` ([`Session::admit`] in `settle.rs`);
//! 7. rewritten into the account's namespace ([`Session::rewrite`] in `dispatch.rs`);
//! 8. dispatched: plain commands join the session's batch, sent as one pipeline when it
//!    is flushed ([`Session::enqueue`], [`Session::flush`]); commands of a transaction use
//!    the session's dedicated connection, blocking ones wait on it
//!    ([`Session::run_blocking`]);
//! 9. completed: each reply rewritten (prefixes taken off key names), written in request
//!    order, and its bill settled once, whichever way the command ran
//!    ([`Session::complete`], or [`Session::fail`] when no reply came; in `settle.rs`);
//! 10. written: the replies of one read go to the client in one write
//!     ([`super::connection::serve`]).
//!
//! Replies keep request order by a queue: the batch's slots hold, in order, replies pkv
//! produced itself and places for replies still upstream ([`Session::reply`] adds to it
//! while the batch is not empty).

mod dispatch;
mod messages;
mod settle;

use dispatch::{Batch, Slot};
pub use settle::{Pending, Share};

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::client_io::ClientIo;
use super::limits::{Held, LimitError};
use super::Shared;
use crate::backend::{Dedicated, Messages, SubscriptionSink};
use crate::commands::{self, flags, Exec};
use crate::error::ClientError;
use crate::meter::{AccountHandle, Admitted, Charges, Usage};
use crate::metrics::TenantStats;
use crate::namespace::Namespace;
use crate::protocol::reply::ReplyWriter;
use crate::protocol::request::{Limits, Request};
use crate::protocol::Proto;

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
    /// The keys queued writes name, as sent upstream: a FLUSHDB queued after them
    /// removes them too.
    pub written: Vec<Bytes>,
    /// What each script queued on the embedded store used, filled when EXEC runs them.
    pub scripts: Vec<std::sync::Arc<std::sync::Mutex<crate::embedded::script::Spent>>>,
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
    /// Keyspace notifications of the account's keys, when `PKV_KEYSPACE_EVENTS` is set.
    pub notify: Option<crate::notify::Listener>,
}

impl Subscriber {
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
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
    /// `CLIENT REPLY OFF`: no replies until `CLIENT REPLY ON`.
    pub(super) replies_off: bool,
    /// `CLIENT REPLY SKIP`: no reply to the next command.
    pub(super) skip_next: bool,
    /// The command running now was preceded by `CLIENT REPLY SKIP`.
    pub(super) skipping: bool,
    /// Costs not yet added to the account's meter.
    pub(super) charges: Charges,
    /// The command [`Session::run`] is running, until it is refused (counted in its
    /// account's `rejected_calls`) or handed on to be counted when it completes.
    running: Option<&'static commands::CommandSpec>,
    /// Commands not yet added to the process's counter.
    commands: u64,
    /// The clock for the current read (milliseconds since the epoch).
    now_ms: i64,
    /// When `PKV.BALANCE` last read the ledger on this connection (it is paced).
    pub(super) balance_read_at: Option<tokio::time::Instant>,
    /// The settings in force at the current read, and their reload generation: taken
    /// again by [`Session::tick`] only after a reload.
    pub(super) current: Arc<super::Current>,
    current_gen: u64,
}

impl Session {
    pub fn new(shared: Arc<Shared>, peer: SocketAddr) -> Self {
        Session {
            id: shared.client_id(),
            current_gen: shared.generation(),
            current: shared.current_full(),
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
            replies_off: false,
            skip_next: false,
            skipping: false,
            charges: Charges::default(),
            running: None,
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
                max_args: self.current.max_args,
                max_bytes: self.current.max_request_bytes,
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
        if self.replies_off || self.skip_next {
            return self.submit_quietly(req, out, io).await;
        }
        self.run(req, out, io).await;
        if self.batch.holds_too_much() {
            self.flush(out).await;
        }
    }

    /// [`Session::submit`] after `CLIENT REPLY OFF` or `SKIP`, as Redis runs it: the
    /// command runs (and is paid) as usual, alone, and what it answered is taken back unless
    /// it switched replies on again.
    async fn submit_quietly(&mut self, req: Request, out: &mut BytesMut, io: &mut ClientIo) {
        self.skipping = std::mem::take(&mut self.skip_next);
        self.flush(out).await;
        let mark = out.len();
        self.run(req, out, io).await;
        self.flush(out).await;
        if self.replies_off || self.skipping {
            out.truncate(mark);
        }
        self.skipping = false;
    }

    /// [`Session::submit`], before the replies waiting in the batch are checked.
    async fn run(&mut self, req: Request, out: &mut BytesMut, io: &mut ClientIo) {
        let (mut args, wire_len) = (req.args, req.wire_len);
        if args.is_empty() {
            return;
        }
        self.commands += 1;
        // Step 1: the command's row. Before AUTH, anything but the handshake (known or
        // not) is answered NOAUTH, so strangers learn nothing about what is served.
        let spec = match commands::lookup(&args) {
            Ok(spec) => spec,
            Err(_) if self.auth.is_none() => return self.reject(ClientError::NoAuth, out),
            Err(commands::LookupError::Denied(name))
                if self.txn.multi.is_some() && commands::NO_MULTI.contains(&name.as_str()) =>
            {
                return self.reject(ClientError::CommandInMulti, out);
            }
            Err(err) => {
                let args = args.iter().take(9).cloned().collect();
                return self.reject(ClientError::Lookup { err, args }, out);
            }
        };
        // Step 2: authentication.
        if !spec.has(flags::NO_AUTH) {
            match &self.auth {
                None => return self.reject(ClientError::NoAuth, out),
                Some(a) if self.now_ms / 1000 >= a.valid_until => {
                    return self.reject(ClientError::TokenExpired, out)
                }
                Some(_) => {}
            }
        }
        // Metered storage has an end: "no expiry" is served as the longest one.
        let mut spec = spec;
        if spec.has(flags::WRITE) && self.shared.meter.enabled() {
            let max_ttl = self.current.max_ttl;
            if let Some((row, longest)) = commands::persist::as_longest_expiry(spec, &args, max_ttl)
            {
                (spec, args) = (row, longest);
            }
        }
        if self.proto == Proto::Resp2
            && self.is_waiting_for_messages()
            && !spec.has(flags::SUBSCRIBED_OK)
        {
            let command = String::from_utf8_lossy(&args[0]).to_lowercase();
            return self.reject(ClientError::Subscribed { command }, out);
        }
        self.running = Some(spec);
        match spec.exec {
            // Step 3: pkv's own commands.
            Exec::Local(local) => {
                let started = std::time::Instant::now();
                self.metered_local(local, spec, &args, wire_len, out, io)
                    .await;
                // Not refused: it ran, and took this long.
                if let (Some(spec), Some(auth)) = (self.running.take(), &self.auth) {
                    let usec = started.elapsed().as_micros() as u64;
                    auth.tenant.commands.ran(spec, usec, false);
                }
            }
            // Steps 4 and 5; counted when its reply comes ([`Session::complete`]).
            Exec::Forward => {
                self.forward(spec, &args, wire_len, out, io).await;
                self.running = None;
            }
        }
    }

    /// Answers with an error; inside MULTI the transaction is then aborted, as Redis does
    /// for commands refused while queuing.
    pub(super) fn reject(&mut self, err: impl Into<ClientError>, out: &mut BytesMut) {
        if let (Some(spec), Some(auth)) = (self.running.take(), &self.auth) {
            auth.tenant.commands.rejected(spec);
        }
        if let Some(multi) = &mut self.txn.multi {
            multi.aborted = true;
        }
        self.error_reply(err, out);
    }

    /// Answers with an error, in its turn, without touching a transaction.
    pub(super) fn error_reply(&mut self, err: impl Into<ClientError>, out: &mut BytesMut) {
        let line = err.into().line();
        self.reply(out, |w| w.error(&line));
    }

    /// Writes a reply pkv produced itself, after every reply still owed before it.
    pub(super) fn reply(&mut self, out: &mut BytesMut, write: impl FnOnce(&mut ReplyWriter)) {
        if self.batch.slots.is_empty() {
            write(&mut ReplyWriter::new(out, self.proto));
        } else {
            let mut buf = BytesMut::new();
            write(&mut ReplyWriter::new(&mut buf, self.proto));
            self.batch.waiting_bytes += buf.len();
            self.batch.slots.push(Slot::Ready(buf.freeze()));
        }
    }

    pub(super) fn ns(&self) -> Option<&Namespace> {
        self.auth.as_ref().map(|a| &a.ns)
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
    /// Takes up reloaded settings too.
    pub fn tick(&mut self) {
        self.now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let generation = self.shared.generation();
        if generation != self.current_gen {
            self.current = self.shared.current_full();
            self.current_gen = generation;
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
}
