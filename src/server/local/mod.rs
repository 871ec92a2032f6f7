//! Commands pkv answers or emulates itself, one file per concern:
//!
//! - [`handshake`]: AUTH, HELLO, RESET, SELECT, CLIENT, PING, ECHO, QUIT, TIME;
//! - [`transactions`]: MULTI, EXEC, DISCARD, WATCH, UNWATCH;
//! - [`pubsub`]: SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE;
//! - [`keyspace`]: SCAN, RANDOMKEY, DBSIZE, FLUSHDB confined to the namespace;
//! - [`introspect`]: COMMAND; [`info`]: INFO, CONFIG GET, the HELP subcommands, PUBSUB NUMPAT;
//! - [`account`]: PKV.SESSION, PKV.TOPUP, PKV.BALANCE, PKV.PRICES.
//!
//! [`Session::local`] dispatches on the command table's [`Local`]; [`Session::metered_local`]
//! wraps it with the bill every metered local command pays.

mod account;
mod handshake;
mod info;
mod introspect;
mod keyspace;
mod pubsub;
mod scripting;
mod transactions;
mod upscript;
pub(in crate::server) use upscript::check_upstream_scripting;

use bytes::{Bytes, BytesMut};

use super::client_io::ClientIo;
use super::session::Session;
use crate::commands::{flags, CommandSpec, Local};
use crate::error::ClientError;
use crate::meter::storage;

impl Session {
    /// Runs a command pkv answers itself.
    pub(in crate::server) async fn local(
        &mut self,
        local: Local,
        spec: &'static CommandSpec,
        args: &[Bytes],
        out: &mut BytesMut,
        io: &mut ClientIo,
    ) {
        let _ = io;
        crate::metrics::process::command(
            crate::metrics::Family::of(spec),
            crate::metrics::Outcome::Ok,
        );
        if self.txn.multi.is_some() {
            return self.local_in_multi(local, spec, args, out).await;
        }
        match local {
            Local::Auth => self.auth(args, out).await,
            Local::Hello => self.hello(args, out).await,
            Local::Ping => self.ping(args, out),
            Local::Echo => self.reply(out, |w| w.bulk(&args[1])),
            Local::Quit => {
                self.reply(out, |w| w.ok());
                self.closing = true;
            }
            Local::Reset => self.reset(out).await,
            Local::Select => self.select(args, out),
            Local::Time => self.time(out),
            Local::ClientSetName
            | Local::ClientGetName
            | Local::ClientSetInfo
            | Local::ClientNoTouch
            | Local::ClientNoEvict
            | Local::ReadOnly
            | Local::ReadWrite
            | Local::ClientReply
            | Local::ClientId
            | Local::ClientInfo
            | Local::ClientList => self.client(local, args, out),
            Local::Info | Local::ConfigGet | Local::Help | Local::PubsubNumpat => {
                self.introspect(local, args, out).await
            }
            Local::Command
            | Local::CommandInfo
            | Local::CommandCount
            | Local::CommandDocs
            | Local::CommandList => self.command(local, args, out),
            Local::Multi => self.multi(out).await,
            Local::Exec => self.reject(ClientError::ExecWithoutMulti, out),
            Local::Discard => self.reject(ClientError::DiscardWithoutMulti, out),
            Local::Watch => self.watch(spec, args, out).await,
            Local::Unwatch => self.unwatch(out).await,
            Local::Subscribe | Local::PSubscribe => {
                self.subscribe(spec, args, local == Local::PSubscribe, out)
                    .await
            }
            Local::Unsubscribe | Local::PUnsubscribe => {
                self.unsubscribe(args, local == Local::PUnsubscribe, out)
                    .await
            }
            Local::Scan => self.scan(args, out).await,
            Local::RandomKey | Local::DbSize | Local::FlushDb => {
                self.flush(out).await;
                self.walk_namespace(local, out).await;
            }
            Local::PkvSession => self.pkv_session(args, out),
            Local::PkvTopup => self.pkv_topup(args, out).await,
            Local::PkvBalance => {
                self.flush(out).await;
                self.balance(out).await;
            }
            Local::PkvPrices => self.prices(out),
            Local::PkvDefaultTtl => self.pkv_default_ttl(args, out).await,
            Local::Eval
            | Local::EvalSha
            | Local::EvalRo
            | Local::EvalShaRo
            | Local::ScriptLoad
            | Local::ScriptExists
            | Local::ScriptFlush
            | Local::ScriptKill => self.script(local, args, out).await,
        }
    }

    /// Runs a local command, metered: it pays one op, its request and reply bytes, and the
    /// time it spent upstream. Free commands (AUTH, HELLO, bare PING, QUIT, RESET, PKV.*,
    /// the connection set-up: see [`flags::FREE`]) and commands before authentication are
    /// not metered.
    pub(in crate::server) async fn metered_local(
        &mut self,
        local: Local,
        spec: &'static CommandSpec,
        args: &[Bytes],
        wire_len: usize,
        out: &mut BytesMut,
        io: &mut ClientIo,
    ) {
        if spec.is_free(args.len()) || self.auth.is_none() || !self.shared.meter.enabled() {
            return self.local(local, spec, args, out, io).await;
        }
        // Alone in the output, so the reply bytes counted are this command's.
        self.flush(out).await;
        // EXEC and DISCARD end a transaction whatever the balance (a transaction that ran
        // out while queuing is already aborted); they pay afterwards.
        let bill = if matches!(local, Local::Exec | Local::Discard) && self.txn.multi.is_some() {
            self.unreserved_bill(wire_len)
        } else {
            match self
                .admit(wire_len, 0, storage::After::None, false, out)
                .await
            {
                Ok(bill) => bill,
                Err(err) => {
                    crate::metrics::process::refused(spec);
                    return self.reject(err, out);
                }
            }
        };
        let start = out.len();
        let started = std::time::Instant::now();
        self.local(local, spec, args, out, io).await;
        if local == Local::Scan {
            self.flush(out).await;
        }
        let upstream_time = if spec.has(flags::UPSTREAM_TIME) {
            started.elapsed().as_micros() as u64
        } else {
            0
        };
        if let Some(bill) = bill {
            self.pay(bill, 0, out.len().saturating_sub(start), upstream_time);
        }
    }
}
