//! What a client may learn about the server: COMMAND (from the command table); INFO and
//! the other introspection commands are in [`super::info`].

use bytes::{Bytes, BytesMut};

use crate::commands::{self, flags, CommandSpec, Local};
use crate::protocol::reply::ReplyWriter;
use crate::server::session::Session;

/// The Redis version pkv reports; the command set follows Redis 7.0.
pub(super) const REDIS_VERSION: &str = "7.0.15";

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
