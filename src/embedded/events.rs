//! The keyspace events of the embedded store's writes, named and ordered as Redis 7.0
//! publishes them, derived in one place from each command's name, arguments, reply and
//! whether its keys existed before and after it ran (see [`events`]); the store publishes
//! them as `__keyevent@0__:<event>` with the key as payload ([`crate::notify`]).
//!
//! Where the reply does not tell what Redis decides inside a command (whether ZADD changed
//! a score, whether XADD trimmed, whether XREADGROUP made a consumer), the keys' states
//! before and after do. Key-miss events (`m`) are not published.

use crate::notify::Flags;
use crate::protocol::frame::Frame;

/// What one key was, before or after a command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State {
    pub exists: bool,
    /// It had an expiry.
    pub volatile: bool,
    /// Entries, when it is a stream (to tell whether XADD trimmed it).
    pub stream_len: usize,
    /// Consumers in all its groups, when it is a stream (to tell whether a read or a
    /// claim created one).
    pub consumers: usize,
}

/// One event: its class, its name, and the index of its key in the command's keys.
pub type Event = (Flags, &'static str, usize);

/// A write that ran: the command, its keys (as the table locates them) and their states.
pub struct Effect<'a> {
    /// Upper case.
    pub name: &'a str,
    pub args: &'a [&'a [u8]],
    pub reply: &'a Frame,
    pub keys: &'a [Vec<u8>],
    pub before: &'a [State],
    pub after: &'a [State],
    /// For ZADD and GEOADD: whether a score of the members it names changed (their
    /// scores before and after), which their reply does not tell without CH.
    pub scores_changed: bool,
    /// For SMOVE: its destination held the member already.
    pub dest_had_member: bool,
}

impl Effect<'_> {
    fn int(&self) -> i64 {
        match self.reply {
            Frame::Integer(n) => *n,
            _ => 0,
        }
    }

    /// The reply holds something (a popped element, a value).
    fn some(&self) -> bool {
        match self.reply {
            Frame::Null | Frame::NullArray => false,
            Frame::Array(items) | Frame::Set(items) => !items.is_empty(),
            _ => true,
        }
    }

    fn has_word(&self, word: &str) -> bool {
        self.args
            .iter()
            .skip(1)
            .any(|a| a.eq_ignore_ascii_case(word.as_bytes()))
    }

    fn existed(&self, i: usize) -> bool {
        self.before.get(i).is_some_and(|s| s.exists)
    }

    fn exists(&self, i: usize) -> bool {
        self.after.get(i).is_some_and(|s| s.exists)
    }

    /// The key at `i` was emptied and so deleted by the command.
    fn emptied(&self, i: usize) -> bool {
        self.existed(i) && !self.exists(i)
    }

    /// The index of `key` among the command's keys.
    fn index_of(&self, key: &[u8]) -> Option<usize> {
        self.keys.iter().position(|k| k.as_slice() == key)
    }
}

const G: Flags = Flags::GENERIC;
const S: Flags = Flags::STRING;
const L: Flags = Flags::LIST;
const SET: Flags = Flags::SET;
const H: Flags = Flags::HASH;
const Z: Flags = Flags::ZSET;
const T: Flags = Flags::STREAM;

/// The events of `e`, in Redis's order, `new` ones first for keys it created.
pub fn events(e: &Effect<'_>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for i in 0..e.keys.len() {
        if !e.existed(i) && e.exists(i) {
            out.push((Flags::NEW, "new", i));
        }
    }
    let mut push = |class, name, i| out.push((class, name, i));
    // A command that takes from the key at `i` (a pop, a removal): its event, then `del`
    // when that emptied it.
    let take = |push: &mut dyn FnMut(Flags, &'static str, usize), class, name, i| {
        push(class, name, i);
        if e.emptied(i) {
            push(G, "del", i);
        }
    };
    // A store into the key at `i`: its event, or `del` when the result was empty and
    // replaced a key.
    let store = |push: &mut dyn FnMut(Flags, &'static str, usize), class, name, i| {
        if e.exists(i) {
            push(class, name, i);
        } else if e.existed(i) {
            push(G, "del", i);
        }
    };
    let left = |arg: usize| {
        e.args
            .get(arg)
            .is_some_and(|a| a.eq_ignore_ascii_case(b"LEFT"))
    };
    let timed = || ["EX", "PX", "EXAT", "PXAT"].iter().any(|w| e.has_word(w));
    match e.name {
        "SET" => {
            let (nx, xx) = (e.has_word("NX"), e.has_word("XX"));
            let refused = if e.existed(0) { nx } else { xx };
            if !refused {
                push(S, "set", 0);
                if timed() {
                    push(G, "expire", 0);
                }
            }
        }
        "SETNX" | "MSETNX" if e.int() == 1 => (0..e.keys.len()).for_each(|i| push(S, "set", i)),
        "MSET" | "GETSET" => (0..e.keys.len()).for_each(|i| push(S, "set", i)),
        "SETEX" | "PSETEX" => {
            push(S, "set", 0);
            push(G, "expire", 0);
        }
        "APPEND" => push(S, "append", 0),
        "SETRANGE" if e.args.get(3).is_some_and(|v| !v.is_empty()) => push(S, "setrange", 0),
        "INCR" | "DECR" | "INCRBY" | "DECRBY" => push(S, "incrby", 0),
        "INCRBYFLOAT" => push(S, "incrbyfloat", 0),
        "SETBIT" => push(S, "setbit", 0),
        "BITFIELD" if e.has_word("SET") || e.has_word("INCRBY") => push(S, "setbit", 0),
        "BITOP" => store(&mut push, S, "set", 0),
        "PFADD" if e.int() == 1 => push(S, "pfadd", 0),
        "PFMERGE" => push(S, "pfadd", 0),
        "GETDEL" if e.some() => push(G, "del", 0),
        "GETEX" if e.existed(0) => {
            if !e.exists(0) {
                push(G, "del", 0);
            } else if timed() {
                push(G, "expire", 0);
            } else if e.has_word("PERSIST") && e.before[0].volatile {
                push(G, "persist", 0);
            }
        }
        "DEL" | "UNLINK" => (0..e.keys.len())
            .filter(|&i| e.existed(i))
            .for_each(|i| push(G, "del", i)),
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" if e.int() == 1 => {
            push(G, if e.exists(0) { "expire" } else { "del" }, 0)
        }
        "PERSIST" if e.int() == 1 => push(G, "persist", 0),
        "RENAME" | "RENAMENX" => {
            let done = matches!(e.reply, Frame::Simple(_)) || e.int() == 1;
            if done && e.keys.len() == 2 && e.keys[0] != e.keys[1] {
                push(G, "rename_from", 0);
                push(G, "rename_to", 1);
            }
        }
        "COPY" if e.int() == 1 => push(G, "copy_to", 1),
        "SORT" => {
            let dest = e.args.iter().position(|a| a.eq_ignore_ascii_case(b"STORE"));
            let dest = dest
                .and_then(|i| e.args.get(i + 1))
                .and_then(|d| e.index_of(d));
            if let Some(i) = dest {
                store(&mut push, L, "sortstore", i);
            }
        }
        // Lists.
        "LPUSH" | "LPUSHX" if e.int() > 0 => push(L, "lpush", 0),
        "RPUSH" | "RPUSHX" if e.int() > 0 => push(L, "rpush", 0),
        "LINSERT" if e.int() > 0 => push(L, "linsert", 0),
        "LSET" => push(L, "lset", 0),
        "LTRIM" => take(&mut push, L, "ltrim", 0),
        "LREM" if e.int() > 0 => take(&mut push, L, "lrem", 0),
        "LPOP" if e.some() => take(&mut push, L, "lpop", 0),
        "RPOP" if e.some() => take(&mut push, L, "rpop", 0),
        "RPOPLPUSH" | "BRPOPLPUSH" | "LMOVE" | "BLMOVE" if e.some() => {
            let (from_left, to_left) = match e.name {
                "LMOVE" | "BLMOVE" => (left(3), left(4)),
                _ => (false, true),
            };
            // As Redis: the push to the destination, then the pop from the source.
            push(L, if to_left { "lpush" } else { "rpush" }, 1);
            take(&mut push, L, if from_left { "lpop" } else { "rpop" }, 0);
        }
        "BLPOP" | "BRPOP" | "LMPOP" | "BLMPOP" | "BZPOPMIN" | "BZPOPMAX" | "ZMPOP" | "BZMPOP"
            if e.some() =>
        {
            let key = match e.reply {
                Frame::Array(items) => match items.first() {
                    Some(Frame::Bulk(k)) => e.index_of(k),
                    _ => None,
                },
                _ => None,
            };
            let (class, name) = match e.name {
                "BLPOP" => (L, "lpop"),
                "BRPOP" => (L, "rpop"),
                "LMPOP" | "BLMPOP" if e.has_word("LEFT") => (L, "lpop"),
                "LMPOP" | "BLMPOP" => (L, "rpop"),
                "BZPOPMIN" => (Z, "zpopmin"),
                "BZPOPMAX" => (Z, "zpopmax"),
                _ if e.has_word("MIN") => (Z, "zpopmin"),
                _ => (Z, "zpopmax"),
            };
            if let Some(i) = key {
                take(&mut push, class, name, i);
            }
        }
        // Hashes.
        "HSET" | "HMSET" => push(H, "hset", 0),
        "HSETNX" if e.int() == 1 => push(H, "hset", 0),
        "HDEL" if e.int() > 0 => take(&mut push, H, "hdel", 0),
        "HINCRBY" => push(H, "hincrby", 0),
        "HINCRBYFLOAT" => push(H, "hincrbyfloat", 0),
        // Sets.
        "SADD" if e.int() > 0 => push(SET, "sadd", 0),
        "SREM" if e.int() > 0 => take(&mut push, SET, "srem", 0),
        "SPOP" if e.some() => take(&mut push, SET, "spop", 0),
        // A move within one set changes nothing; a destination that held the member
        // already gains nothing, so has no `sadd`.
        "SMOVE" if e.int() == 1 && e.keys.first() != e.keys.get(1) => {
            take(&mut push, SET, "srem", 0);
            if !e.dest_had_member {
                push(SET, "sadd", 1);
            }
        }
        "SINTERSTORE" => store(&mut push, SET, "sinterstore", 0),
        "SUNIONSTORE" => store(&mut push, SET, "sunionstore", 0),
        "SDIFFSTORE" => store(&mut push, SET, "sdiffstore", 0),
        // Sorted sets: an event when a member was added or its score changed (ZADD
        // without CH answers only the first; the scores tell the rest).
        "ZADD" | "GEOADD" => {
            let incr = e.has_word("INCR");
            let changed = if incr { e.some() } else { e.scores_changed };
            if changed {
                push(Z, if incr { "zincr" } else { "zadd" }, 0);
            }
        }
        "ZINCRBY" => push(Z, "zincr", 0),
        "ZREM" if e.int() > 0 => take(&mut push, Z, "zrem", 0),
        "ZREMRANGEBYSCORE" if e.int() > 0 => take(&mut push, Z, "zremrangebyscore", 0),
        "ZREMRANGEBYRANK" if e.int() > 0 => take(&mut push, Z, "zremrangebyrank", 0),
        "ZREMRANGEBYLEX" if e.int() > 0 => take(&mut push, Z, "zremrangebylex", 0),
        "ZPOPMIN" if e.some() => take(&mut push, Z, "zpopmin", 0),
        "ZPOPMAX" if e.some() => take(&mut push, Z, "zpopmax", 0),
        "ZUNIONSTORE" => store(&mut push, Z, "zunionstore", 0),
        "ZINTERSTORE" => store(&mut push, Z, "zinterstore", 0),
        "ZDIFFSTORE" => store(&mut push, Z, "zdiffstore", 0),
        "ZRANGESTORE" => store(&mut push, Z, "zrangestore", 0),
        "GEOSEARCHSTORE" => store(&mut push, Z, "geosearchstore", 0),
        // Streams.
        "XADD" if e.some() => {
            push(T, "xadd", 0);
            let (was, now) = (e.before[0].stream_len, e.after[0].stream_len);
            if now < was + 1 {
                push(T, "xtrim", 0);
            }
        }
        "XDEL" if e.int() > 0 => push(T, "xdel", 0),
        "XTRIM" if e.int() > 0 => push(T, "xtrim", 0),
        "XSETID" => push(T, "xsetid", 0),
        "XREADGROUP" | "XCLAIM" | "XAUTOCLAIM" => {
            for i in 0..e.keys.len() {
                let (was, now) = (e.before[i].consumers, e.after[i].consumers);
                if now > was {
                    push(T, "xgroup-createconsumer", i);
                }
            }
        }
        "XGROUP" => {
            let sub = e.args.get(1).map(|s| s.to_ascii_uppercase());
            let name = match sub.as_deref() {
                Some(b"CREATE") => Some("xgroup-create"),
                Some(b"SETID") => Some("xgroup-setid"),
                Some(b"DESTROY") if e.int() == 1 => Some("xgroup-destroy"),
                Some(b"CREATECONSUMER") if e.int() == 1 => Some("xgroup-createconsumer"),
                Some(b"DELCONSUMER") => Some("xgroup-delconsumer"),
                _ => None,
            };
            if let Some(name) = name {
                push(T, name, 0);
            }
        }
        _ => {}
    }
    out
}

/// The keys a write is about to touch and their states, taken before it runs.
pub(super) struct Watched {
    keys: Vec<Vec<u8>>,
    before: Vec<State>,
    /// ZADD's and GEOADD's members' scores before it ran.
    scores: Vec<Option<f64>>,
    /// SMOVE's destination held the member before it ran.
    dest_had_member: bool,
}

/// The members a ZADD or GEOADD names (none for other commands).
fn named_members<'a>(name: &str, args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let (options, stride): (&[&str], usize) = match name {
        "ZADD" => (&["NX", "XX", "GT", "LT", "CH", "INCR"], 2),
        "GEOADD" => (&["NX", "XX", "CH"], 3),
        _ => return Vec::new(),
    };
    let mut i = 2;
    while args
        .get(i)
        .is_some_and(|a| options.iter().any(|o| a.eq_ignore_ascii_case(o.as_bytes())))
    {
        i += 1;
    }
    args.iter()
        .skip(i + stride - 1)
        .step_by(stride)
        .copied()
        .collect()
}

impl super::Store {
    /// The scores of `members` in the sorted set under `key`.
    fn scores(&self, key: &[u8], members: &[&[u8]], now: i64) -> Vec<Option<f64>> {
        if members.is_empty() {
            return Vec::new();
        }
        self.keys
            .read(key, now, |entry| match entry.map(|e| &e.data) {
                Some(super::data::Data::ZSet(z)) => members.iter().map(|m| z.score(m)).collect(),
                _ => vec![None; members.len()],
            })
    }

    fn state(&self, key: &[u8], now: i64) -> State {
        self.keys.read(key, now, |entry| State {
            exists: entry.is_some(),
            volatile: entry.and_then(|e| e.expires_at).is_some(),
            stream_len: match entry.map(|e| &e.data) {
                Some(super::data::Data::Stream(s)) => s.len(),
                _ => 0,
            },
            consumers: match entry.map(|e| &e.data) {
                Some(super::data::Data::Stream(s)) => {
                    s.groups.values().map(|g| g.consumers.len()).sum()
                }
                _ => 0,
            },
        })
    }

    /// Before a command runs: its keys' states, when notifications are on and it writes.
    pub(super) fn before_write(
        &self,
        command: &super::Runnable,
        args: &[&[u8]],
        now: i64,
    ) -> Option<Watched> {
        self.notify?;
        if !super::Store::writes(command, args) {
            return None;
        }
        let keys = super::keys_of(command, args);
        let before = keys.iter().map(|k| self.state(k, now)).collect();
        let members = named_members(command.name, args);
        let scores = match keys.first() {
            Some(key) => self.scores(key, &members, now),
            None => Vec::new(),
        };
        let dest_had_member = command.name == "SMOVE"
            && match (keys.get(1), args.get(3)) {
                (Some(dest), Some(member)) => self.keys.read(dest, now, |entry| {
                    matches!(entry.map(|e| &e.data), Some(super::data::Data::Set(s)) if s.contains(*member))
                }),
                _ => false,
            };
        Some(Watched {
            keys,
            before,
            scores,
            dest_had_member,
        })
    }

    /// After it ran: publishes its events (see [`events`]).
    pub(super) fn publish_events(
        &self,
        command: &super::Runnable,
        args: &[&[u8]],
        reply: &Frame,
        watched: Watched,
        now: i64,
    ) {
        let Some(flags) = self.notify else { return };
        let after: Vec<State> = watched.keys.iter().map(|k| self.state(k, now)).collect();
        let members = named_members(command.name, args);
        let scores_changed = match watched.keys.first() {
            Some(key) if !members.is_empty() => self.scores(key, &members, now) != watched.scores,
            _ => false,
        };
        let effect = Effect {
            scores_changed,
            dest_had_member: watched.dest_had_member,
            name: command.name,
            args,
            reply,
            keys: &watched.keys,
            before: &watched.before,
            after: &after,
        };
        for (class, name, i) in events(&effect) {
            if flags.any(class) {
                self.publish_event(name.as_bytes(), &watched.keys[i]);
            }
        }
    }

    /// With the `x` class on, has the keyspace publish `expired` for each key it removes
    /// because its time passed (on access or in the background sweep), as Redis does.
    pub(super) fn publish_expired(&self) {
        if !self.notify.is_some_and(|f| f.any(Flags::EXPIRED)) {
            return;
        }
        let channels = self.channels.clone();
        let mut channel = crate::notify::KEYEVENT.to_vec();
        channel.extend_from_slice(b"expired");
        let hook: super::keyspace::ExpiredHook = Box::new(move |key: &[u8]| {
            channels.publish_known(&channel, key, crate::notify::SOURCE_PATTERN);
        });
        self.keys.on_expired(hook);
    }

    /// Publishes one key event in the store's Pub/Sub, as Redis does.
    pub(super) fn publish_event(&self, event: &[u8], key: &[u8]) {
        let mut channel = Vec::with_capacity(crate::notify::KEYEVENT.len() + event.len());
        channel.extend_from_slice(crate::notify::KEYEVENT);
        channel.extend_from_slice(event);
        self.channels
            .publish_known(&channel, key, crate::notify::SOURCE_PATTERN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        name: &str,
        args: &[&[u8]],
        reply: Frame,
        before: &[bool],
        after: &[bool],
    ) -> Vec<&'static str> {
        let keys: Vec<Vec<u8>> = (0..before.len()).map(|i| vec![b'k', i as u8]).collect();
        let state = |b: &bool| State {
            exists: *b,
            ..State::default()
        };
        let before: Vec<State> = before.iter().map(state).collect();
        let after: Vec<State> = after.iter().map(state).collect();
        let effect = Effect {
            scores_changed: false,
            dest_had_member: false,
            name,
            args,
            reply: &reply,
            keys: &keys,
            before: &before,
            after: &after,
        };
        events(&effect).into_iter().map(|(_, n, _)| n).collect()
    }

    #[test]
    fn zadd_and_geoadd_name_their_members() {
        let zadd: &[&[u8]] = &[b"ZADD", b"z", b"XX", b"ch", b"1", b"a", b"2", b"b"];
        assert_eq!(named_members("ZADD", zadd), [&b"a"[..], b"b"]);
        let geo: &[&[u8]] = &[
            b"GEOADD", b"g", b"NX", b"13.3", b"38.1", b"p", b"1", b"2", b"q",
        ];
        assert_eq!(named_members("GEOADD", geo), [&b"p"[..], b"q"]);
    }

    #[test]
    fn the_rules_follow_redis() {
        // Each checked against redis-server 7.0.15 with notify-keyspace-events KEA.
        let set: &[&[u8]] = &[b"SET", b"k", b"v", b"EX", b"10"];
        assert_eq!(
            run("SET", set, Frame::OK, &[true], &[true]),
            ["set", "expire"]
        );
        let nx: &[&[u8]] = &[b"SET", b"k", b"v", b"NX"];
        assert!(run("SET", nx, Frame::Null, &[true], &[true]).is_empty());
        let pop: &[&[u8]] = &[b"LPOP", b"l"];
        let one = Frame::Bulk(bytes::Bytes::from_static(b"a"));
        assert_eq!(run("LPOP", pop, one, &[true], &[false]), ["lpop", "del"]);
        let mv: &[&[u8]] = &[b"LMOVE", b"q", b"q2", b"LEFT", b"RIGHT"];
        let a = Frame::Bulk(bytes::Bytes::from_static(b"a"));
        assert_eq!(
            run("LMOVE", mv, a, &[true, false], &[false, true]),
            ["new", "rpush", "lpop", "del"]
        );
        let exp: &[&[u8]] = &[b"EXPIRE", b"s", b"0"];
        assert_eq!(
            run("EXPIRE", exp, Frame::Integer(1), &[true], &[false]),
            ["del"]
        );
    }
}
