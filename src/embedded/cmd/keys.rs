//! Commands on keys whatever their type: deletion, existence, expiry, renaming, copying,
//! walking the keyspace (KEYS, SCAN) and looking inside (TYPE, OBJECT, MEMORY USAGE).

use redis::Value;

use super::strings::invalid_expire;
use super::{int, int_arg, is, Command, Cx, Kind, Reply, SYNTAX};

pub const COMMANDS: &[Command] = &[
    Command {
        name: "DEL",
        kind: Kind::Multi,
        run: del,
    },
    Command {
        name: "EXISTS",
        kind: Kind::Multi,
        run: exists,
    },
    Command {
        name: "TTL",
        kind: Kind::Read,
        run: ttl,
    },
    Command {
        name: "PTTL",
        kind: Kind::Read,
        run: pttl,
    },
    Command {
        name: "EXPIRE",
        kind: Kind::Write,
        run: expire,
    },
    Command {
        name: "PEXPIRE",
        kind: Kind::Write,
        run: pexpire,
    },
    Command {
        name: "EXPIREAT",
        kind: Kind::Write,
        run: expireat,
    },
    Command {
        name: "PEXPIREAT",
        kind: Kind::Write,
        run: pexpireat,
    },
    Command {
        name: "MEMORY",
        kind: Kind::Walk,
        run: memory,
    },
];

/// What `MEMORY USAGE` adds to the key and the value: the entry's own bookkeeping.
const ENTRY_OVERHEAD: usize = 48;

// === DEL, EXISTS ===

/// `DEL key...`: how many of the keys existed.
fn del(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let removed = args[1..].iter().filter(|k| cx.remove(k).is_some()).count();
    int(removed as i64)
}

/// `EXISTS key...`: how many of the keys exist (a key named twice counts twice).
fn exists(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let found = args[1..]
        .iter()
        .filter(|k| cx.read(k, |e| e.is_some()))
        .count();
    int(found as i64)
}

// === TTL, PTTL ===

/// Milliseconds left: -2 without the key, -1 without a deadline.
fn ms_left(cx: &Cx, key: &[u8]) -> i64 {
    cx.read(key, |e| match e {
        None => -2,
        Some(e) => e.expires_at.map_or(-1, |at| (at - cx.now).max(0)),
    })
}

fn ttl(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let ms = ms_left(cx, args[1]);
    int(if ms < 0 { ms } else { (ms + 500) / 1000 })
}

fn pttl(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    int(ms_left(cx, args[1]))
}

// === EXPIRE and friends ===

fn expire(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_expiry(cx, args, true, cx.now, "expire")
}

fn pexpire(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_expiry(cx, args, false, cx.now, "pexpire")
}

fn expireat(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_expiry(cx, args, true, 0, "expireat")
}

fn pexpireat(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_expiry(cx, args, false, 0, "pexpireat")
}

/// `EXPIRE key n [NX | XX | GT | LT]` and friends: `n` is in seconds or milliseconds,
/// counted from `base` (now, or the epoch). A deadline already past deletes the key. GT and
/// LT take a key without a deadline as one that never expires.
fn set_expiry(cx: &mut Cx, args: &[&[u8]], seconds: bool, base: i64, name: &str) -> Reply {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for word in &args[3..] {
        if is(word, "NX") {
            nx = true;
        } else if is(word, "XX") {
            xx = true;
        } else if is(word, "GT") {
            gt = true;
        } else if is(word, "LT") {
            lt = true;
        } else {
            return Err(format!("ERR Unsupported option {}", String::from_utf8_lossy(word)).into());
        }
    }
    if nx && (xx || gt || lt) {
        return Err("ERR NX and XX, GT or LT options at the same time are not compatible".into());
    }
    if gt && lt {
        return Err("ERR GT and LT options at the same time are not compatible".into());
    }
    let n = int_arg(args[2])?;
    let ms = if seconds {
        n.checked_mul(1000).ok_or_else(|| invalid_expire(name))?
    } else {
        n
    };
    let at = ms.checked_add(base).ok_or_else(|| invalid_expire(name))?;
    let now = cx.now;
    cx.write(args[1], |slot| {
        let Some(entry) = slot.as_mut() else {
            return int(0);
        };
        let current = entry.expires_at;
        let refused = (nx && current.is_some())
            || (xx && current.is_none())
            || (gt && current.is_none_or(|c| at <= c))
            || (lt && current.is_some_and(|c| at >= c));
        if refused {
            return int(0);
        }
        if at <= now {
            *slot = None;
        } else {
            entry.expires_at = Some(at);
        }
        int(1)
    })
}

// === MEMORY USAGE ===

/// `MEMORY USAGE key [SAMPLES n]`: an estimate of the bytes the key takes; nil without it.
fn memory(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let sub = args.get(1).copied().unwrap_or_default();
    if !is(sub, "USAGE") {
        return Err(format!(
            "ERR unknown subcommand '{}'. Try MEMORY HELP.",
            String::from_utf8_lossy(sub)
        )
        .into());
    }
    let Some(key) = args.get(2) else {
        return Err(super::arity_error("memory|usage"));
    };
    let mut i = 3;
    while i < args.len() {
        match args.get(i + 1) {
            Some(n) if is(args[i], "SAMPLES") => {
                if int_arg(n)? < 0 {
                    return Err(SYNTAX.into());
                }
                i += 2;
            }
            _ => return Err(SYNTAX.into()),
        }
    }
    cx.read(key, |e| {
        Ok(e.map_or(Value::Nil, |e| {
            Value::Int((key.len() + e.data.size() + ENTRY_OVERHEAD) as i64)
        }))
    })
}
