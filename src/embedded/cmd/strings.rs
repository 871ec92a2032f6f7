//! String commands: GET and SET with their variants, counters, ranges and bits.

use redis::Value;

use super::{bulk, int_arg, is, ok, wrongtype, Command, Cx, Error, Kind, Reply, SYNTAX};
use crate::embedded::data::{Data, Entry};

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

// === expiry options ===

/// The expiry options of SET and GETEX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unit {
    /// `EX seconds`
    Ex,
    /// `PX milliseconds`
    Px,
    /// `EXAT unix-seconds`
    ExAt,
    /// `PXAT unix-milliseconds`
    PxAt,
}

impl Unit {
    fn of(word: &[u8]) -> Option<Unit> {
        [
            ("EX", Unit::Ex),
            ("PX", Unit::Px),
            ("EXAT", Unit::ExAt),
            ("PXAT", Unit::PxAt),
        ]
        .into_iter()
        .find(|(w, _)| is(word, w))
        .map(|(_, unit)| unit)
    }
}

/// The error for an expiry that is out of range, as Redis words it.
pub(super) fn invalid_expire(command: &str) -> Error {
    format!("ERR invalid expire time in '{command}' command").into()
}

/// The deadline (ms since the epoch) an expiry option sets: the value must be positive,
/// and so must the deadline.
fn deadline(cx: &Cx, unit: Unit, raw: &[u8], command: &str) -> Result<i64, Error> {
    let n = int_arg(raw)?;
    let seconds = matches!(unit, Unit::Ex | Unit::ExAt);
    if n <= 0 || (seconds && n > i64::MAX / 1000) {
        return Err(invalid_expire(command));
    }
    let ms = if seconds { n * 1000 } else { n };
    let at = match unit {
        Unit::Ex | Unit::Px => ms.checked_add(cx.now),
        Unit::ExAt | Unit::PxAt => Some(ms),
    };
    match at {
        Some(at) if at > 0 => Ok(at),
        _ => Err(invalid_expire(command)),
    }
}

/// A string value, or the wrong-type error for anything else.
fn string_of(entry: Option<&Entry>) -> Result<Option<&Vec<u8>>, Error> {
    match entry.map(|e| &e.data) {
        None => Ok(None),
        Some(Data::Str(s)) => Ok(Some(s)),
        Some(_) => wrongtype(),
    }
}

// === GET, SET ===

fn get(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.read(args[1], |e| {
        Ok(string_of(e)?.map_or(Value::Nil, |s| bulk(s.clone())))
    })
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT ts | PXAT ms-ts | KEEPTTL]`
fn set(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let (mut nx, mut xx, mut get, mut keepttl) = (false, false, false, false);
    let mut expiry: Option<(Unit, &[u8])> = None;
    let mut i = 3;
    while i < args.len() {
        let word = args[i];
        let unit = Unit::of(word);
        if is(word, "NX") && !xx {
            nx = true;
        } else if is(word, "XX") && !nx {
            xx = true;
        } else if is(word, "GET") {
            get = true;
        } else if is(word, "KEEPTTL") && expiry.is_none() {
            keepttl = true;
        } else if let (Some(unit), Some(value)) = (unit, args.get(i + 1)) {
            // The same option twice is allowed (the last wins); two different ones are not.
            if keepttl || expiry.is_some_and(|(u, _)| u != unit) {
                return Err(SYNTAX.into());
            }
            expiry = Some((unit, value));
            i += 1;
        } else {
            return Err(SYNTAX.into());
        }
        i += 1;
    }
    let expires_at = match expiry {
        Some((unit, raw)) => Some(deadline(cx, unit, raw, "set")?),
        None => None,
    };
    let value = args[2];
    cx.write(args[1], |slot| {
        let old = match slot.as_ref() {
            Some(Entry {
                data: Data::Str(s), ..
            }) if get => Some(bulk(s.clone())),
            Some(_) if get => return wrongtype(),
            _ => None,
        };
        let exists = slot.is_some();
        if (nx && exists) || (xx && !exists) {
            return Ok(old.unwrap_or(Value::Nil));
        }
        let expires_at = if keepttl {
            slot.as_ref().and_then(|e| e.expires_at)
        } else {
            expires_at
        };
        *slot = Some(Entry {
            data: Data::Str(value.to_vec()),
            expires_at,
        });
        if get {
            Ok(old.unwrap_or(Value::Nil))
        } else {
            ok()
        }
    })
}
