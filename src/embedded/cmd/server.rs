//! Commands that touch no key: PING, ECHO and TIME (queued inside MULTI), PUBLISH and
//! PUBSUB.

use crate::protocol::frame::Frame;

use super::{bulk, bulks, int, is, Command, Cx, Reply, StoreError};

pub const COMMANDS: &[Command] = &[
    Command {
        name: "PING",
        run: ping,
    },
    Command {
        name: "ECHO",
        run: echo,
    },
    Command {
        name: "TIME",
        run: time,
    },
    Command {
        name: "PUBLISH",
        run: publish,
    },
    Command {
        name: "PUBSUB",
        run: pubsub,
    },
];

fn ping(_: &mut Cx, args: &[&[u8]]) -> Reply {
    match args.get(1) {
        Some(message) => Ok(bulk(*message)),
        None => Ok(Frame::simple("PONG")),
    }
}

fn echo(_: &mut Cx, args: &[&[u8]]) -> Reply {
    Ok(bulk(args[1]))
}

fn time(cx: &mut Cx, _: &[&[u8]]) -> Reply {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(cx.now * 1000, |d| d.as_micros() as i64);
    Ok(bulks([
        (micros / 1_000_000).to_string(),
        (micros % 1_000_000).to_string(),
    ]))
}

fn publish(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    int(cx.store.channels.publish(args[1], args[2]))
}

/// `PUBSUB CHANNELS [pattern]` and `PUBSUB NUMSUB [channel ...]`.
fn pubsub(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let sub = args.get(1).copied().unwrap_or_default();
    if is(sub, "CHANNELS") && args.len() <= 3 {
        Ok(bulks(cx.store.channels.channels(args.get(2).copied())))
    } else if is(sub, "NUMSUB") {
        let mut reply = Vec::new();
        for channel in &args[2..] {
            reply.push(bulk(*channel));
            reply.push(Frame::Integer(cx.store.channels.numsub(channel)));
        }
        Ok(Frame::Array(reply))
    } else {
        Err(StoreError::Syntax.into())
    }
}
