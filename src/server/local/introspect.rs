//! What a client may learn about the server: INFO (the account's own figures) and
//! COMMAND (from the command table).

use bytes::{Bytes, BytesMut};

use crate::commands::{self, flags, CommandSpec, Local};
use crate::protocol::reply::ReplyWriter;
use crate::server::session::Session;

/// The Redis version pkv reports; the command set follows Redis 7.0.
pub(super) const REDIS_VERSION: &str = "7.0.0";

impl Session {
    /// `COMMAND`, `COMMAND INFO|COUNT|DOCS|LIST`.
    pub(super) fn command(&mut self, local: Local, args: &[Bytes], out: &mut BytesMut) {
        match local {
            Local::Command | Local::CommandInfo => {
                let names: Vec<Bytes> = if local == Local::Command {
                    Vec::new()
                } else {
                    args[2..].to_vec()
                };
                self.reply(out, |w| command_info(w, &names));
            }
            Local::CommandCount => {
                let n = commands::served_names()
                    .filter(|n| !n.contains('|'))
                    .count() as i64;
                self.reply(out, |w| w.int(n));
            }
            Local::CommandDocs => self.reply(out, |w| w.map(0)),
            Local::CommandList => self.reply(out, |w| {
                let names: Vec<_> = commands::served_names()
                    .filter(|n| !n.contains('|'))
                    .collect();
                w.array(names.len());
                for n in names {
                    w.bulk(n.to_ascii_lowercase().as_bytes());
                }
            }),
            _ => {}
        }
    }

    /// `INFO`: the account's own figures in this process (its connections, its
    /// commands), never the process's, which would show other tenants' traffic.
    pub(super) fn info_text(&self) -> String {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let (clients, blocked, received, commands) = self.auth.as_ref().map_or((0, 0, 0, 0), |a| {
            (
                load(&a.tenant.connections),
                load(&a.tenant.blocked),
                load(&a.tenant.connections_total),
                // Those run before this INFO in the same read count too. This INFO is
                // counted once, in one of the two (an admission that had to wait for the
                // ledger moves the pending count to the account's), and Redis leaves the
                // running command out.
                (load(&a.tenant.commands_total) + self.commands_pending()).saturating_sub(1),
            )
        });
        format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nserver_name:pkv\r\npkv_version:{}\r\n\r\n# Clients\r\nconnected_clients:{clients}\r\nblocked_clients:{blocked}\r\n\r\n# Stats\r\ntotal_connections_received:{received}\r\ntotal_commands_processed:{commands}\r\n",
            env!("CARGO_PKG_VERSION"),
        )
    }
}

/// `COMMAND` / `COMMAND INFO name...`: Redis's reply shape, from the table.
fn command_info(w: &mut ReplyWriter, names: &[Bytes]) {
    let specs: Vec<Option<&CommandSpec>> = if names.is_empty() {
        commands::table::TABLE
            .iter()
            .filter(|s| !s.name.contains('|'))
            .map(Some)
            .collect()
    } else {
        names
            .iter()
            .map(|n| {
                commands::lookup(std::slice::from_ref(n))
                    .ok()
                    .or_else(|| find_spec(n))
            })
            .collect()
    };
    w.array(specs.len());
    for spec in specs {
        let Some(spec) = spec else {
            w.null();
            continue;
        };
        let (first, last, step) = match spec.keys.first() {
            Some(commands::KeyRule::Range { first, last, step }) => {
                (i64::from(*first), i64::from(*last), i64::from(*step))
            }
            _ => (0, 0, 0),
        };
        w.array(10);
        w.bulk(spec.name.to_ascii_lowercase().as_bytes());
        w.int(i64::from(spec.arity));
        let mut words: Vec<&[u8]> = Vec::new();
        if spec.has(flags::WRITE) {
            words.push(b"write");
        }
        if spec.has(flags::READONLY) {
            words.push(b"readonly");
        }
        if spec.has(flags::BLOCKING) {
            words.push(b"blocking");
        }
        if spec.has(flags::PUBSUB) {
            words.push(b"pubsub");
        }
        w.array(words.len());
        words.iter().for_each(|f| w.bulk(f));
        w.int(first);
        w.int(last);
        w.int(step);
        for _ in 0..4 {
            w.array(0);
        }
    }
}

fn find_spec(name: &[u8]) -> Option<&'static CommandSpec> {
    let upper = String::from_utf8_lossy(name).to_ascii_uppercase();
    commands::table::TABLE.iter().find(|s| s.name == upper)
}
