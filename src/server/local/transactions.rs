//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH. While one is open the session's
//! commands use its dedicated connection, where Redis keeps the transaction; each queued
//! command is paid when EXEC's results show what it did.

use bytes::{Bytes, BytesMut};

use crate::commands::{Call, CommandSpec, Local, ReplyRewrite};
use crate::error::ClientError;
use crate::protocol::frame::Frame;
use crate::protocol::reply::ReplyWriter;
use crate::server::session::{Multi, Pending, Session, Share, Txn};

/// Keys per `UNLINK` a FLUSHDB queued in a transaction sends.
const FLUSH_STEP: usize = 1000;

/// The most keys a FLUSHDB queued in a transaction removes: their names are queued in the
/// transaction (held by pkv while sent, by the backend until EXEC). An account with more
/// is told to flush outside the transaction, which walks its keys a page at a time.
const FLUSH_IN_MULTI_MOST: usize = 100_000;

impl Session {
    /// `MULTI`: opens the transaction on the dedicated connection.
    pub(super) async fn multi(&mut self, out: &mut BytesMut) {
        self.flush(out).await;
        match self.run_dedicated(Call::named("MULTI")).await {
            Ok(Frame::Simple(ref ok)) if &ok[..] == b"OK" => {
                self.txn.multi = Some(Multi::default());
                self.reply(out, |w| w.ok());
            }
            Ok(other) => self.write_upstream(out, ReplyRewrite::Plain, other),
            Err(e) => self.error_reply(e, out),
        }
    }

    /// `WATCH key...`, on the dedicated connection.
    pub(super) async fn watch(
        &mut self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        out: &mut BytesMut,
    ) {
        self.flush(out).await;
        let cmd = match self.rewrite(spec, args) {
            Ok(cmd) => cmd,
            Err(err) => return self.reject(err, out),
        };
        match self.run_dedicated(cmd).await {
            Ok(value) => {
                self.txn.watching = !value.is_error();
                self.write_upstream(out, ReplyRewrite::Plain, value);
            }
            Err(e) => self.error_reply(e, out),
        }
    }

    /// `UNWATCH`
    pub(super) async fn unwatch(&mut self, out: &mut BytesMut) {
        self.flush(out).await;
        if self.txn.watching {
            let result = self.run_dedicated(Call::named("UNWATCH")).await;
            self.txn.watching = false;
            if let Err(e) = result {
                return self.error_reply(e, out);
            }
        }
        self.reply(out, |w| w.ok());
    }

    /// Inside MULTI, keyless commands Redis can queue are forwarded to be queued; commands
    /// pkv emulates or that change the connection cannot be, and abort the transaction.
    pub(super) async fn local_in_multi(
        &mut self,
        local: Local,
        spec: &'static CommandSpec,
        args: &[Bytes],
        out: &mut BytesMut,
    ) {
        match local {
            Local::Exec => self.exec(out).await,
            Local::Discard => {
                self.flush(out).await;
                let result = self.run_dedicated(Call::named("DISCARD")).await;
                if let Some(multi) = self.txn.multi.take() {
                    self.pay_unexecuted(multi);
                }
                self.txn = Txn::default();
                match result {
                    Ok(value) => self.write_upstream(out, ReplyRewrite::Plain, value),
                    Err(e) => self.error_reply(e, out),
                }
            }
            // As Redis: an error, and the transaction goes on.
            Local::Multi => self.error_reply(ClientError::NestedMulti, out),
            Local::Watch => self.error_reply(ClientError::WatchInMulti, out),
            Local::FlushDb => self.flush_in_multi(out).await,
            Local::Ping | Local::Echo | Local::Time => {
                let call = Call::new(spec, args.to_vec());
                self.enqueue_plain(call, ReplyRewrite::Plain, out).await;
            }
            Local::Quit => {
                self.reply(out, |w| w.ok());
                self.closing = true;
            }
            Local::Eval | Local::EvalSha | Local::EvalRo | Local::EvalShaRo => {
                self.script_in_multi(local, args, out).await
            }
            _ => {
                let command = spec.name.to_ascii_lowercase();
                self.reject(ClientError::NotInMulti { command }, out);
            }
        }
    }

    /// `FLUSHDB`/`FLUSHALL` inside MULTI: queued as `UNLINK`s of the account's keys, those
    /// it holds now and those the writes queued before it name, so that at EXEC it
    /// removes what Redis's would in the namespace, and nothing of another tenant's. A
    /// key another connection of the account creates between this and EXEC is not
    /// removed (Redis's FLUSHDB would remove it).
    async fn flush_in_multi(&mut self, out: &mut BytesMut) {
        self.flush(out).await;
        let Some(ns) = self.ns().cloned() else { return };
        let mut keys = match self.namespace_keys(FLUSH_IN_MULTI_MOST).await {
            Ok(keys) => keys,
            Err(e) => return self.reject(e, out),
        };
        if let Some(multi) = self.txn.multi.as_mut() {
            keys.append(&mut multi.written);
        }
        // The account's key named "" keeps the last call from being empty.
        keys.push(ns.wrap(b""));
        let mut calls: Vec<Call> = keys
            .chunks(FLUSH_STEP)
            .map(|chunk| {
                chunk
                    .iter()
                    .fold(Call::named("UNLINK"), |call, key| call.arg(key.clone()))
            })
            .collect();
        let Some(last) = calls.pop() else { return };
        let pending = Pending {
            rewrite: ReplyRewrite::Flushed,
            before: calls.len(),
            after: 0,
            bill: None,
            family: None,
            row: None,
        };
        self.enqueue(calls, last, Vec::new(), pending, out).await;
    }

    async fn exec(&mut self, out: &mut BytesMut) {
        self.flush(out).await;
        let Some(multi) = self.txn.multi.take() else {
            return;
        };
        if multi.aborted {
            let _ = self.run_dedicated(Call::named("DISCARD")).await;
            self.txn = Txn::default();
            self.pay_unexecuted(multi);
            return self.reply(out, |w| w.error(&ClientError::ExecAbort.line()));
        }
        let turn = self.scripts_turn(&multi.scripts).await;
        let result = self.run_dedicated(Call::named("EXEC")).await;
        self.txn = Txn::default();
        self.pay_scripts(&multi.scripts, turn);
        match result {
            Ok(Frame::Array(results)) => {
                // One result per client command; bookkeeping results are read, not shown.
                // The reply's bytes are EXEC's own; each queued command pays its storage.
                ReplyWriter::new(out, self.proto).array(multi.queued.len());
                let mut results = results.into_iter();
                for pending in multi.queued {
                    let replies = pending.take_replies(&mut results);
                    self.complete(pending, replies, Share::InExec, out);
                }
            }
            Err(e) if e.may_have_run() => {
                // EXEC was sent and its reply lost: the transaction may have run, so each
                // queued command pays its known cost, storage bound included.
                for pending in multi.queued {
                    self.pay_lost(pending.bill, &e, 0);
                }
                ReplyWriter::new(out, self.proto).error(&ClientError::from(e).line());
            }
            other => {
                self.pay_unexecuted(multi);
                match other {
                    Ok(Frame::Null | Frame::NullArray) => {
                        ReplyWriter::new(out, self.proto).null_array()
                    }
                    Ok(other) => self.write_upstream(out, ReplyRewrite::Plain, other),
                    Err(e) => ReplyWriter::new(out, self.proto).error(&ClientError::from(e).line()),
                }
            }
        }
    }

    /// Queued commands that never ran pay what they used (their op, request and QUEUED
    /// reply), and no storage.
    pub(in crate::server) fn pay_unexecuted(&mut self, multi: Multi) {
        for pending in multi.queued {
            if let Some(bill) = pending.bill {
                self.pay(bill, 0, 0, 0);
            }
        }
    }
}
