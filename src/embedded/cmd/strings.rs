//! String commands.

use super::{bulk, ok, wrongtype, Command, Cx, Kind, Reply};
use crate::embedded::data::{Data, Entry};
use redis::Value;

pub const COMMANDS: &[Command] = &[
    Command {
        name: "GET",
        kind: Kind::Read,
        run: get,
    },
    Command {
        name: "SET",
        kind: Kind::Write,
        run: set,
    },
];

fn get(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.read(args[1], |e| match e.map(|e| &e.data) {
        None => Ok(Value::Nil),
        Some(Data::Str(s)) => Ok(bulk(s.clone())),
        Some(_) => wrongtype(),
    })
}

fn set(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.insert(args[1], Entry::new(Data::Str(args[2].to_vec())));
    ok()
}
