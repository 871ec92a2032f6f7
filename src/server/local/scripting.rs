//! EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT LOAD|EXISTS|FLUSH|KILL.
//!
//! On the embedded store a script runs on the blocking pool with the store's gate held
//! ([`crate::embedded::Store::run_script`]); it pays like any command (one op, its bytes,
//! its run time as upstream time: the rows carry `UPSTREAM_TIME`), and on top, one op per
//! `redis.call` and the storage its writes bought, as the same writes outside a script
//! would. Inside MULTI they are queued on the transaction's connection and run by EXEC
//! ([`Session::script_in_multi`]) on the embedded store; on an upstream the script runs
//! inside Redis, wrapped (`upscript.rs`), and is refused inside MULTI for now.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::commands::{Local, LookupError, ReplyRewrite};
use crate::embedded::script::{Caller, Queued, Spent};
use crate::error::ClientError;
use crate::meter::{Admitted, Usage};
use crate::protocol::frame::Frame;
use crate::scripting::fair::Turn;
use crate::scripting::lua::{self, Limits, Script};
use crate::scripting::{parse_eval, sha1hex, EvalArgs, ScriptError, MEMORY_LIMIT};
use crate::server::session::{Pending, Session};

impl Session {
    /// Runs a scripting command.
    pub(super) async fn script(&mut self, local: Local, args: &[Bytes], out: &mut BytesMut) {
        if !self.current.scripting {
            return self.reject(ScriptError::Disabled, out);
        }
        let store = self.shared.backend.embedded().cloned();
        if store.is_none() && !self.upstream_scripting() {
            let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
            let err = LookupError::Denied(name);
            return self.reject(
                ClientError::Lookup {
                    err,
                    args: Vec::new(),
                },
                out,
            );
        }
        let Some(account) = self.auth.as_ref().map(|a| a.account.clone()) else {
            return self.reject(ClientError::NoAuth, out);
        };
        let scripts = &self.shared.scripts;
        match local {
            Local::ScriptLoad => match scripts.load(&account, &args[2]) {
                Ok(sha) => self.reply(out, |w| w.bulk(sha.as_bytes())),
                Err(err) => self.reject(err, out),
            },
            Local::ScriptExists => {
                let found = args[2..]
                    .iter()
                    .map(|sha| Frame::Integer(i64::from(scripts.get(&account, sha).is_some())))
                    .collect();
                self.reply(out, |w| w.frame(&Frame::Array(found)));
            }
            Local::ScriptFlush => {
                let mode_ok = match &args[2..] {
                    [] => true,
                    [mode] => {
                        mode.eq_ignore_ascii_case(b"ASYNC") || mode.eq_ignore_ascii_case(b"SYNC")
                    }
                    _ => false,
                };
                if !mode_ok {
                    return self.reject(ScriptError::FlushOption, out);
                }
                scripts.flush(&account);
                self.reply(out, |w| w.ok());
            }
            // Another connection of the account may be running one.
            Local::ScriptKill => match scripts.kill(&account) {
                Ok(()) => self.reply(out, |w| w.ok()),
                Err(err) => self.reject(err, out),
            },
            _ => match store {
                Some(store) => self.eval(store, local, args, account, out).await,
                None => self.upstream_eval(local, args, account, out).await,
            },
        }
    }

    /// EVAL and its kin, on the embedded store.
    async fn eval(
        &mut self,
        store: crate::embedded::Store,
        local: Local,
        args: &[Bytes],
        account: Arc<str>,
        out: &mut BytesMut,
    ) {
        let (parsed, body, sha) = match self.resolve(local, args, &account) {
            Ok(resolved) => resolved,
            Err(err) => return self.reject(err, out),
        };
        let Some(ns) = self.ns().cloned() else {
            return self.reject(ClientError::NoAuth, out);
        };
        // The commands before it in the pipeline run first.
        self.flush(out).await;
        let caller = Caller {
            ns,
            policy: self.ttl_policy(),
            metering: self.shared.meter.enabled(),
        };
        // Waits, off the threads and with the store free, while the account's scripts
        // have held the store past their share.
        let turn = self
            .shared
            .scripts
            .budgets
            .turn(&account, self.current.script_budget)
            .await;
        let running = self.shared.scripts.start(&account);
        let limits = Limits {
            time: self.current.script_time_limit,
            memory: MEMORY_LIMIT,
            control: running.control.clone(),
        };
        let read_only = matches!(local, Local::EvalRo | Local::EvalShaRo);
        let job_store = store.clone();
        let job = move || {
            job_store.run_script(&caller, |host| {
                let script = Script {
                    body: &body,
                    sha: &sha,
                    keys: &parsed.keys,
                    argv: &parsed.argv,
                    read_only,
                };
                lua::run(&script, &limits, host)
            })
        };
        let done = tokio::task::spawn_blocking(job).await;
        drop(running);
        let (result, spent) = match done {
            Ok((result, spent)) => {
                if let Some(turn) = turn {
                    turn.held(spent.held_us, 1);
                }
                (result, spent)
            }
            Err(e) => {
                let err = crate::backend::BackendError::Lost(format!("script: {e}"));
                return self.reject(ClientError::from(err), out);
            }
        };
        self.pay_spent(spent);
        if spent.wrote {
            if let Err(why) = store.script_committed().await {
                let err = crate::embedded::error::StoreError::Misconf(why);
                return self.error_reply(ClientError::from(err), out);
            }
        }
        match result {
            Ok(frame) => self.reply(out, |w| w.frame(&frame)),
            Err(err) => self.error_reply(err, out),
        }
    }

    /// The script an `EVAL`-like command names, with its keys and arguments: its text and
    /// SHA1, or why it cannot run (`NOSCRIPT` for a SHA1 the account never loaded).
    fn resolve(
        &self,
        local: Local,
        args: &[Bytes],
        account: &Arc<str>,
    ) -> Result<(EvalArgs, Bytes, String), ScriptError> {
        let parsed = parse_eval(args)?;
        match local {
            Local::Eval | Local::EvalRo => {
                // Cached as Redis caches what EVAL ran, unless the account's scripts are
                // full (then it runs all the same).
                let _ = self.shared.scripts.load(account, &parsed.script);
                let sha = sha1hex(&parsed.script);
                let body = parsed.script.clone();
                Ok((parsed, body, sha))
            }
            _ => match self.shared.scripts.get(account, &parsed.script) {
                Some(body) => {
                    let sha = String::from_utf8_lossy(&parsed.script).to_ascii_lowercase();
                    Ok((parsed, body, sha))
                }
                None => Err(ScriptError::NoScript),
            },
        }
    }

    /// `EVAL` and its kin inside MULTI, on the embedded store: queued on the transaction's
    /// connection, to run at EXEC in its turn with the other queued commands, under the
    /// same exclusive hold. As in Redis, a script that cannot run (`NOSCRIPT`, a bad key
    /// count) is queued all the same, and its error is its result in EXEC's reply. Its
    /// calls and storage are paid when EXEC has run ([`Session::pay_scripts`]). `SCRIPT
    /// KILL` does not reach a script inside EXEC; its time limit does.
    pub(super) async fn script_in_multi(
        &mut self,
        local: Local,
        args: &[Bytes],
        out: &mut BytesMut,
    ) {
        if !self.current.scripting {
            return self.reject(ScriptError::Disabled, out);
        }
        let (Some(account), Some(ns)) = (
            self.auth.as_ref().map(|a| a.account.clone()),
            self.ns().cloned(),
        ) else {
            return self.reject(ClientError::NoAuth, out);
        };
        // The commands queued before it reach the connection first.
        self.flush(out).await;
        let resolved = self.resolve(local, args, &account);
        let caller = Caller {
            ns,
            policy: self.ttl_policy(),
            metering: self.shared.meter.enabled(),
        };
        let limits = Limits {
            time: self.current.script_time_limit,
            memory: MEMORY_LIMIT,
            control: Arc::default(),
        };
        let read_only = matches!(local, Local::EvalRo | Local::EvalShaRo);
        // The scripts of one EXEC share one time limit: they hold the store as one.
        let run = move |host: &mut dyn lua::Host, before: Duration| {
            let timed_out = ScriptError::TimedOut {
                limit_ms: limits.time.as_millis() as u64,
            };
            let left = limits.time.saturating_sub(before);
            let ran = resolved.and_then(|(parsed, body, sha)| {
                if left.is_zero() {
                    return Err(timed_out);
                }
                let script = Script {
                    body: &body,
                    sha: &sha,
                    keys: &parsed.keys,
                    argv: &parsed.argv,
                    read_only,
                };
                let limits = Limits {
                    time: left,
                    ..limits
                };
                lua::run(&script, &limits, host).map_err(|err| match err {
                    ScriptError::TimedOut { .. } => timed_out,
                    other => other,
                })
            });
            ran.unwrap_or_else(|err| Frame::error(ClientError::from(err).line()))
        };
        let spent = Arc::new(Mutex::new(Spent::default()));
        let queued = Queued {
            caller,
            run: Box::new(run),
            spent: spent.clone(),
        };
        match self.dedicated.as_mut().and_then(|c| c.queue_script(queued)) {
            Some(reply) if reply == Frame::QUEUED => {
                if let Some(multi) = self.txn.multi.as_mut() {
                    multi.queued.push(Pending {
                        rewrite: ReplyRewrite::Plain,
                        before: 0,
                        after: 0,
                        bill: None,
                        family: None,
                        row: None,
                    });
                    multi.scripts.push(spent);
                }
                self.reply(out, |w| w.frame(&reply));
            }
            Some(other) => {
                if let Some(multi) = self.txn.multi.as_mut() {
                    multi.aborted = true;
                }
                self.reply(out, |w| w.frame(&other));
            }
            None => {
                let command = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
                self.reject(ClientError::NotInMulti { command }, out);
            }
        }
    }

    /// The account's turn to run the scripts a transaction queued (none queued: no
    /// turn), waited for as a script's ([`crate::scripting::fair`]).
    pub(in crate::server) async fn scripts_turn(
        &mut self,
        scripts: &[Arc<Mutex<Spent>>],
    ) -> Option<Turn> {
        let account = self.auth.as_ref().map(|a| a.account.clone())?;
        if scripts.is_empty() {
            return None;
        }
        let budget = self.current.script_budget;
        self.shared.scripts.budgets.turn(&account, budget).await
    }

    /// Pays what the scripts of a transaction used, once EXEC has run them (nothing for
    /// those that never ran), and takes the time they held the store off the account's
    /// share.
    pub(in crate::server) fn pay_scripts(
        &mut self,
        scripts: &[Arc<Mutex<Spent>>],
        turn: Option<Turn>,
    ) {
        let mut held_us = 0;
        for spent in scripts {
            let spent = *spent.lock().unwrap_or_else(|p| p.into_inner());
            held_us += spent.held_us;
            self.pay_spent(spent);
        }
        if let Some(turn) = turn {
            turn.held(held_us, scripts.len() as u64);
        }
    }

    /// Charges a script's calls and the storage its writes bought.
    fn pay_spent(&mut self, spent: Spent) {
        if self.shared.meter.enabled() && (spent.calls > 0 || spent.byte_seconds > 0) {
            let usage = Usage {
                ops: spent.calls,
                byte_seconds: spent.byte_seconds,
                ..Usage::default()
            };
            self.shared
                .meter
                .charge(&mut self.charges, Admitted::default(), &usage);
        }
    }
}
