//! Hash commands: HSET and friends, HINCRBY/HINCRBYFLOAT, HRANDFIELD and HSCAN.
//!
//! A hash is a `HashMap` of field to value. Commands that change a hash change it in place
//! (it keeps its expiry); a hash left empty is deleted by the keyspace.

use std::collections::HashMap;

use crate::protocol::frame::Frame;

use super::sets::{pick, rand_count, random_below, scan_cursor, scan_options};
use super::{
    arity_error, bulk, int, int_arg, is, ok, wrongtype, Command, Cx, Error, Reply, StoreError,
};
use crate::embedded::data::{Data, Entry};
use crate::embedded::glob;

pub const COMMANDS: &[Command] = &[
    Command {
        name: "HSET",
        run: hset,
    },
    Command {
        name: "HMSET",
        run: hset,
    },
    Command {
        name: "HSETNX",
        run: hsetnx,
    },
    Command {
        name: "HGET",
        run: hget,
    },
    Command {
        name: "HMGET",
        run: hmget,
    },
    Command {
        name: "HDEL",
        run: hdel,
    },
    Command {
        name: "HLEN",
        run: hlen,
    },
    Command {
        name: "HSTRLEN",
        run: hstrlen,
    },
    Command {
        name: "HEXISTS",
        run: hexists,
    },
    Command {
        name: "HKEYS",
        run: hkeys,
    },
    Command {
        name: "HVALS",
        run: hvals,
    },
    Command {
        name: "HGETALL",
        run: hgetall,
    },
    Command {
        name: "HINCRBY",
        run: hincrby,
    },
    Command {
        name: "HINCRBYFLOAT",
        run: hincrbyfloat,
    },
    Command {
        name: "HRANDFIELD",
        run: hrandfield,
    },
    Command {
        name: "HSCAN",
        run: hscan,
    },
];

type Hash = HashMap<Vec<u8>, Vec<u8>>;

/// Runs `f` on the hash under `key` (`None` when there is no key); WRONGTYPE for another
/// type.
fn read_hash<R>(cx: &Cx, key: &[u8], f: impl FnOnce(Option<&Hash>) -> R) -> Result<R, Error> {
    cx.read(key, |entry| match entry.map(|e| &e.data) {
        None => Ok(f(None)),
        Some(Data::Hash(hash)) => Ok(f(Some(hash))),
        Some(_) => wrongtype(),
    })
}

/// The hash in `entry`, created empty when there is none; WRONGTYPE for another type.
fn hash_or_new(entry: &mut Option<Entry>) -> Result<&mut Hash, Error> {
    let entry = entry.get_or_insert_with(|| Entry::new(Data::Hash(HashMap::new())));
    match &mut entry.data {
        Data::Hash(hash) => Ok(hash),
        _ => wrongtype(),
    }
}

/// `HSET key field value [field value ...]` (new fields) and `HMSET` (OK).
fn hset(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    if args.len() < 4 || !args.len().is_multiple_of(2) {
        return Err(arity_error(&String::from_utf8_lossy(args[0])));
    }
    let added = cx.write(args[1], |entry| {
        let hash = hash_or_new(entry)?;
        let mut added = 0;
        for pair in args[2..].chunks_exact(2) {
            if hash.insert(pair[0].to_vec(), pair[1].to_vec()).is_none() {
                added += 1;
            }
        }
        Ok::<_, Error>(added)
    })?;
    if is(args[0], "HMSET") {
        ok()
    } else {
        int(added)
    }
}

/// `HSETNX key field value`: sets the field only if it is new.
fn hsetnx(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.write(args[1], |entry| {
        let hash = hash_or_new(entry)?;
        if hash.contains_key(args[2]) {
            return int(0);
        }
        hash.insert(args[2].to_vec(), args[3].to_vec());
        int(1)
    })
}

fn hget(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_hash(cx, args[1], |hash| {
        match hash.and_then(|h| h.get(args[2])) {
            Some(value) => bulk(value.clone()),
            None => Frame::Null,
        }
    })
}

fn hmget(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_hash(cx, args[1], |hash| {
        let values = args[2..]
            .iter()
            .map(|field| match hash.and_then(|h| h.get(*field)) {
                Some(value) => bulk(value.clone()),
                None => Frame::Null,
            });
        Frame::Array(values.collect())
    })
}

/// `HDEL key field [field ...]`: how many fields were removed.
fn hdel(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.write(args[1], |entry| match entry.as_mut().map(|e| &mut e.data) {
        None => int(0),
        Some(Data::Hash(hash)) => {
            let removed = args[2..]
                .iter()
                .filter(|field| hash.remove(**field).is_some())
                .count();
            int(removed as i64)
        }
        Some(_) => wrongtype(),
    })
}

fn hlen(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_hash(cx, args[1], |hash| {
        Frame::Integer(hash.map_or(0, |h| h.len() as i64))
    })
}

fn hstrlen(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_hash(cx, args[1], |hash| {
        Frame::Integer(
            hash.and_then(|h| h.get(args[2]))
                .map_or(0, |v| v.len() as i64),
        )
    })
}

fn hexists(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_hash(cx, args[1], |hash| {
        Frame::Integer(i64::from(hash.is_some_and(|h| h.contains_key(args[2]))))
    })
}

fn hkeys(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_hash(cx, args[1], |hash| {
        Frame::Array(
            hash.into_iter()
                .flatten()
                .map(|(f, _)| bulk(f.clone()))
                .collect(),
        )
    })
}

fn hvals(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_hash(cx, args[1], |hash| {
        Frame::Array(
            hash.into_iter()
                .flatten()
                .map(|(_, v)| bulk(v.clone()))
                .collect(),
        )
    })
}

/// `HGETALL key`: a map (a flat field/value array in RESP2).
fn hgetall(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_hash(cx, args[1], |hash| {
        let pairs = hash.into_iter().flatten();
        Frame::Map(
            pairs
                .map(|(f, v)| (bulk(f.clone()), bulk(v.clone())))
                .collect(),
        )
    })
}

/// `HINCRBY key field increment`.
fn hincrby(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let increment = int_arg(args[3])?;
    cx.write(args[1], |entry| {
        let hash = hash_or_new(entry)?;
        let current = match hash.get(args[2]) {
            None => 0,
            Some(raw) => crate::redis_num::parse_int(raw)
                .ok_or_else(|| Error::from(StoreError::HashNotInteger))?,
        };
        let value = current
            .checked_add(increment)
            .ok_or_else(|| Error::from(StoreError::IncrOverflow))?;
        hash.insert(args[2].to_vec(), value.to_string().into_bytes());
        int(value)
    })
}

/// `HINCRBYFLOAT key field increment`: the sum computed and written as `INCRBYFLOAT`
/// does (see [`crate::redis_num::long_double`]).
fn hincrbyfloat(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    use crate::redis_num::long_double::{LongDouble, Value as Ld};
    let increment = match LongDouble::parse(args[3]) {
        None => return Err(StoreError::NotFloat.into()),
        Some(Ld::Infinite) => return Err(StoreError::NotFinite.into()),
        Some(Ld::Finite(x)) => x,
    };
    cx.write(args[1], |entry| {
        let hash = hash_or_new(entry)?;
        let not_float = || Error::from(StoreError::HashNotFloat);
        let current = match hash.get(args[2]) {
            None => LongDouble::parse(b"0").ok_or_else(not_float)?,
            Some(raw) => LongDouble::parse(raw).ok_or_else(not_float)?,
        };
        let sum = match current {
            Ld::Finite(current) => current.add(increment),
            Ld::Infinite => Ld::Infinite,
        };
        let Ld::Finite(sum) = sum else {
            return Err(StoreError::IncrNotFinite.into());
        };
        let text = sum.to_text();
        hash.insert(args[2].to_vec(), text.clone().into_bytes());
        Ok(bulk(text))
    })
}

/// `HRANDFIELD key [count [WITHVALUES]]`.
fn hrandfield(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let Some(raw_count) = args.get(2) else {
        return read_hash(cx, args[1], |hash| match hash.filter(|h| !h.is_empty()) {
            None => Frame::Null,
            Some(h) => h
                .keys()
                .nth(random_below(h.len()))
                .map_or(Frame::Null, |f| bulk(f.clone())),
        });
    };
    let count = rand_count(raw_count)?;
    let with_values = match args.get(3) {
        None => false,
        Some(word) if args.len() == 4 && is(word, "WITHVALUES") => true,
        Some(_) => return Err(StoreError::Syntax.into()),
    };
    if with_values && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&count) {
        return Err(StoreError::OutOfRange.into());
    }
    let resp3 = cx.resp3();
    read_hash(cx, args[1], |hash| {
        let Some(hash) = hash.filter(|_| count != 0) else {
            return Ok(Frame::Array(Vec::new()));
        };
        let pairs: Vec<(&Vec<u8>, &Vec<u8>)> = hash.iter().collect();
        let picked = pick(&pairs, count)?;
        let mut reply = Vec::with_capacity(picked.len() * if with_values { 2 } else { 1 });
        for (field, value) in picked {
            match (with_values, resp3) {
                (false, _) => reply.push(bulk(field.clone())),
                (true, true) => {
                    reply.push(Frame::Array(vec![bulk(field.clone()), bulk(value.clone())]))
                }
                (true, false) => {
                    reply.push(bulk(field.clone()));
                    reply.push(bulk(value.clone()));
                }
            }
        }
        Ok(Frame::Array(reply))
    })?
}

/// `HSCAN key cursor [MATCH pattern] [COUNT count]`: the whole hash in one page, as Redis
/// answers for small hashes: cursor `0` and a flat field/value list.
fn hscan(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    scan_cursor(args[2])?;
    // Redis reads the options only once it has found the hash.
    let options = scan_options(&args[3..]);
    let items = read_hash(cx, args[1], |hash| {
        let Some(hash) = hash else {
            return Ok::<_, Error>(Vec::new());
        };
        let pattern = options?;
        let mut items = Vec::new();
        for (field, value) in hash {
            if pattern.is_none_or(|p| glob::matches(p, field)) {
                items.push(bulk(field.clone()));
                items.push(bulk(value.clone()));
            }
        }
        Ok(items)
    })??;
    Ok(Frame::Array(vec![bulk("0"), Frame::Array(items)]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::Store;
    use crate::protocol::Proto;

    fn run(store: &Store, proto: Proto, line: &str) -> Reply {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        store.run(proto, &args)
    }

    #[test]
    fn hset_counts_pairs() {
        let store = Store::default();
        assert_eq!(
            run(&store, Proto::Resp2, "HSET h a 1 b 2 a 3"),
            Ok(Frame::Integer(2))
        );
        assert_eq!(run(&store, Proto::Resp2, "HGET h a"), Ok(bulk("3")));
        assert!(run(&store, Proto::Resp2, "HSET h a 1 b").is_err());
        assert_eq!(run(&store, Proto::Resp2, "HMSET h c 1"), Ok(Frame::OK));
        assert_eq!(run(&store, Proto::Resp2, "HLEN h"), Ok(Frame::Integer(3)));
    }

    #[test]
    fn reply_shapes_follow_redis() {
        let store = Store::default();
        run(&store, Proto::Resp3, "HSET h a 1 b 2").unwrap();
        assert!(
            matches!(run(&store, Proto::Resp3, "HGETALL h"), Ok(Frame::Map(m)) if m.len() == 2)
        );
        assert!(
            matches!(run(&store, Proto::Resp3, "HKEYS h"), Ok(Frame::Array(m)) if m.len() == 2)
        );
        let Ok(Frame::Array(pairs)) = run(&store, Proto::Resp3, "HRANDFIELD h -3 WITHVALUES")
        else {
            panic!("not an array");
        };
        assert_eq!(pairs.len(), 3);
        assert!(pairs
            .iter()
            .all(|p| matches!(p, Frame::Array(pair) if pair.len() == 2)));
        assert!(matches!(
            run(&store, Proto::Resp2, "HRANDFIELD h -3 WITHVALUES"),
            Ok(Frame::Array(flat)) if flat.len() == 6
        ));
        assert_eq!(
            run(&store, Proto::Resp3, "HRANDFIELD nokey"),
            Ok(Frame::Null)
        );
        assert_eq!(
            run(&store, Proto::Resp3, "HRANDFIELD nokey 2"),
            Ok(Frame::Array(vec![]))
        );
    }

    #[test]
    fn increments() {
        let store = Store::default();
        assert_eq!(
            run(&store, Proto::Resp2, "HINCRBY h n 9223372036854775807"),
            Ok(Frame::Integer(i64::MAX))
        );
        assert!(run(&store, Proto::Resp2, "HINCRBY h n 1").is_err());
        assert_eq!(
            run(&store, Proto::Resp2, "HINCRBYFLOAT h f 0.1"),
            Ok(bulk("0.1"))
        );
        assert_eq!(
            run(&store, Proto::Resp2, "HINCRBYFLOAT h f 0.2"),
            Ok(bulk("0.3"))
        );
        assert!(run(&store, Proto::Resp2, "HINCRBY h f 1").is_err());
        assert!(run(&store, Proto::Resp2, "HINCRBYFLOAT h f inf").is_err());
        assert_eq!(run(&store, Proto::Resp2, "HGET h f"), Ok(bulk("0.3")));
    }
}
