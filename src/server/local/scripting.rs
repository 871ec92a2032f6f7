//! EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT LOAD|EXISTS|FLUSH|KILL.
//!
//! On the embedded store a script runs on the blocking pool with the store's gate held
//! ([`crate::embedded::Store::run_script`]); it pays like any command (one op, its bytes,
//! its run time as upstream time: the rows carry `UPSTREAM_TIME`), and on top, one op per
//! `redis.call` and the storage its writes bought, as the same writes outside a script
//! would. On an upstream the script runs inside Redis, wrapped (`upscript.rs`).

use bytes::{Bytes, BytesMut};

use crate::commands::{Local, LookupError};
use crate::embedded::script::Caller;
use crate::error::ClientError;
use crate::meter::{Admitted, Usage};
use crate::protocol::frame::Frame;
use crate::scripting::lua::{self, Limits, Script};
use crate::scripting::{parse_eval, sha1hex, ScriptError, MEMORY_LIMIT};
use crate::server::session::Session;

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
        account: std::sync::Arc<str>,
        out: &mut BytesMut,
    ) {
        let parsed = match parse_eval(args) {
            Ok(parsed) => parsed,
            Err(err) => return self.reject(err, out),
        };
        let (body, sha) = match local {
            Local::Eval | Local::EvalRo => {
                // Cached as Redis caches what EVAL ran, unless the account's scripts are
                // full (then it runs all the same).
                let _ = self.shared.scripts.load(&account, &parsed.script);
                (parsed.script.clone(), sha1hex(&parsed.script))
            }
            _ => match self.shared.scripts.get(&account, &parsed.script) {
                Some(body) => {
                    let sha = String::from_utf8_lossy(&parsed.script).to_ascii_lowercase();
                    (body, sha)
                }
                None => return self.reject(ScriptError::NoScript, out),
            },
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
            Ok(done) => done,
            Err(e) => {
                let err = crate::backend::BackendError::Lost(format!("script: {e}"));
                return self.reject(ClientError::from(err), out);
            }
        };
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
}
