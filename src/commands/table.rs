//! The command table: every command pkv serves, stated once.
//!
//! Arity and key positions follow Redis 7.0's `COMMAND INFO` (a test checks them against a
//! real redis-server); flags, reply rewrites and local handling are pkv's own.
//!
//! A container row (`CLIENT`, `OBJECT`, ...) with arity `-2` is never executed itself:
//! [`super::lookup`] always resolves it to its `NAME|SUB` row. Only `COMMAND` (arity `-1`)
//! is answered on its own.

use super::spec::flags::*;
use super::spec::{
    CommandSpec as C, DataArgs, Dest as D, Element as E, KeyRule, Local as L, Most, Opt,
    ReplyRewrite as R, Step, Storage as S, Takes, Timeout as T, TtlUnit as U, Written,
};

// === key rules ===

/// The single argument at index `i` is a key.
const fn at(i: u8) -> KeyRule {
    KeyRule::Range {
        first: i,
        last: i as i8,
        step: 1,
    }
}

/// An option keyword followed by `n` plain arguments.
const fn plain(word: &'static str, n: u8) -> Opt {
    Opt {
        word,
        takes: Takes::Plain(n),
    }
}

/// An option keyword followed by one key.
const fn key_opt(word: &'static str) -> Opt {
    Opt {
        word,
        takes: Takes::Key,
    }
}

/// An option keyword followed by one key pattern.
const fn pattern_opt(word: &'static str) -> Opt {
    Opt {
        word,
        takes: Takes::KeyPattern,
    }
}

/// No keys.
const NONE: &[KeyRule] = &[];
/// The key is argument 1.
const K1: &[KeyRule] = &[at(1)];
/// The key is argument 2 (subcommands: `OBJECT ENCODING key`).
const K2: &[KeyRule] = &[at(2)];
/// Keys are arguments 1 and 2.
const K12: &[KeyRule] = &[KeyRule::Range {
    first: 1,
    last: 2,
    step: 1,
}];
/// Every argument is a key.
const ALL: &[KeyRule] = &[KeyRule::Range {
    first: 1,
    last: -1,
    step: 1,
}];
/// Every argument from 2 is a key (`BITOP op dest src...`).
const FROM2: &[KeyRule] = &[KeyRule::Range {
    first: 2,
    last: -1,
    step: 1,
}];
/// Every argument but the last (a timeout) is a key (`BLPOP k... timeout`).
const ALL_BUT_LAST: &[KeyRule] = &[KeyRule::Range {
    first: 1,
    last: -2,
    step: 1,
}];
/// Key/value pairs: every other argument from 1 is a key.
const PAIRS: &[KeyRule] = &[KeyRule::Range {
    first: 1,
    last: -1,
    step: 2,
}];
/// `numkeys` at 1, then the keys (`ZUNION numkeys k...`).
const NUMKEYS1: &[KeyRule] = &[KeyRule::NumKeys { at: 1 }];
/// `numkeys` at 2, then the keys (`BLMPOP timeout numkeys k...`).
const NUMKEYS2: &[KeyRule] = &[KeyRule::NumKeys { at: 2 }];
/// A destination at 1, `numkeys` at 2, then the sources (`ZUNIONSTORE dest numkeys k...`).
const DEST_NUMKEYS2: &[KeyRule] = &[at(1), KeyRule::NumKeys { at: 2 }];
/// A key glob pattern at 1 (`KEYS pattern`).
const KEY_PATTERN1: &[KeyRule] = &[KeyRule::KeyPattern { at: 1 }];
/// Channels from argument 1 on.
const CHANNELS1: &[KeyRule] = &[KeyRule::Channels { first: 1 }];
/// Channel patterns from argument 1 on.
const PATTERNS1: &[KeyRule] = &[KeyRule::ChannelPatterns { first: 1 }];
/// Channels from argument 2 on (`PUBSUB NUMSUB ch...`).
const CHANNELS2: &[KeyRule] = &[KeyRule::Channels { first: 2 }];
/// The optional channel pattern at 2 (`PUBSUB CHANNELS [pattern]`).
const PATTERNS2: &[KeyRule] = &[KeyRule::OptionalChannelPattern { at: 2 }];
/// `PUBLISH channel message`: only argument 1 is a channel, so `Channels` (which runs to the
/// last argument) would prefix the message too. A key and a channel are rewritten the same
/// way (both get the plain prefix), so a one-argument range states it exactly.
const PUBLISH_CHANNEL: &[KeyRule] = &[at(1)];

/// `SORT key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC] [ALPHA]
/// [STORE destination]`, as `sortCommand` reads it.
const SORT_OPTS: &[Opt] = &[
    plain("ASC", 0),
    plain("DESC", 0),
    plain("ALPHA", 0),
    plain("LIMIT", 2),
    pattern_opt("BY"),
    pattern_opt("GET"),
    key_opt("STORE"),
];
/// `SORT_RO`: the same options without `STORE`.
const SORT_RO_OPTS: &[Opt] = &[
    plain("ASC", 0),
    plain("DESC", 0),
    plain("ALPHA", 0),
    plain("LIMIT", 2),
    pattern_opt("BY"),
    pattern_opt("GET"),
];
const SORT_KEYS: &[KeyRule] = &[
    at(1),
    KeyRule::Options {
        start: 2,
        grammar: SORT_OPTS,
    },
];
const SORT_RO_KEYS: &[KeyRule] = &[
    at(1),
    KeyRule::Options {
        start: 2,
        grammar: SORT_RO_OPTS,
    },
];

/// `COPY source destination [DB n] [REPLACE]`: the database must be 0 (SPEC 5), so a
/// tenant's copy never lands in a database that FLUSHDB and DBSIZE do not see.
const COPY_OPTS: &[Opt] = &[
    Opt {
        word: "DB",
        takes: Takes::Database,
    },
    plain("REPLACE", 0),
];
const COPY_KEYS: &[KeyRule] = &[
    KeyRule::Range {
        first: 1,
        last: 2,
        step: 1,
    },
    KeyRule::Options {
        start: 3,
        grammar: COPY_OPTS,
    },
];

// === storage: which arguments are data ===

/// The option words that may lead `ZADD`'s score/member pairs; they are not data.
const ZADD_OPTS: &[Opt] = &[
    plain("NX", 0),
    plain("XX", 0),
    plain("GT", 0),
    plain("LT", 0),
    plain("CH", 0),
    plain("INCR", 0),
];
/// The option words that may lead `GEOADD`'s longitude/latitude/member triples.
const GEOADD_OPTS: &[Opt] = &[plain("NX", 0), plain("XX", 0), plain("CH", 0)];
/// The options that may lead `XADD`'s ID and field/value pairs, as
/// `streamParseAddOrTrimArgsOrReply` reads them.
const XADD_OPTS: &[Opt] = &[
    plain("NOMKSTREAM", 0),
    Opt {
        word: "MAXLEN",
        takes: Takes::Threshold,
    },
    Opt {
        word: "MINID",
        takes: Takes::Threshold,
    },
    plain("LIMIT", 1),
];
/// Every argument from 2 on is data, all of it written.
const ADDS: S = S::Grow {
    data: DataArgs::From(2),
    written: Written::All,
};
/// Every argument from 2 on is data, written when the reply is positive.
const ADDS_IF_POSITIVE: S = S::Grow {
    data: DataArgs::From(2),
    written: Written::IfPositive,
};

/// The options of `GEORADIUS` and `GEORADIUSBYMEMBER`, as `georadiusGeneric` reads them.
/// When both `STORE` and `STOREDIST` are given Redis writes only the last one, but both name
/// keys (Redis's own key specs agree), so both are prefixed.
const GEO_OPTS: &[Opt] = &[
    plain("WITHDIST", 0),
    plain("WITHHASH", 0),
    plain("WITHCOORD", 0),
    plain("ASC", 0),
    plain("DESC", 0),
    plain("ANY", 0),
    plain("COUNT", 1),
    key_opt("STORE"),
    key_opt("STOREDIST"),
];
/// The read-only variants refuse `STORE` and `STOREDIST`.
const GEO_RO_OPTS: &[Opt] = &[
    plain("WITHDIST", 0),
    plain("WITHHASH", 0),
    plain("WITHCOORD", 0),
    plain("ASC", 0),
    plain("DESC", 0),
    plain("ANY", 0),
    plain("COUNT", 1),
];
/// `GEORADIUS key longitude latitude radius unit [options]`.
const GEORADIUS_KEYS: &[KeyRule] = &[
    at(1),
    KeyRule::Options {
        start: 6,
        grammar: GEO_OPTS,
    },
];
/// `GEORADIUSBYMEMBER key member radius unit [options]`.
const GEORADIUSBYMEMBER_KEYS: &[KeyRule] = &[
    at(1),
    KeyRule::Options {
        start: 5,
        grammar: GEO_OPTS,
    },
];
const GEORADIUS_RO_KEYS: &[KeyRule] = &[
    at(1),
    KeyRule::Options {
        start: 6,
        grammar: GEO_RO_OPTS,
    },
];
const GEORADIUSBYMEMBER_RO_KEYS: &[KeyRule] = &[
    at(1),
    KeyRule::Options {
        start: 5,
        grammar: GEO_RO_OPTS,
    },
];

/// `BLOCK ms`: the request waits for data.
const BLOCK_OPT: Opt = Opt {
    word: "BLOCK",
    takes: Takes::Block,
};
/// `XREAD [COUNT n] [BLOCK ms] STREAMS key... id...`.
const XREAD_OPTS: &[Opt] = &[
    plain("COUNT", 1),
    BLOCK_OPT,
    Opt {
        word: "STREAMS",
        takes: Takes::StreamsRest,
    },
];
/// `XREADGROUP GROUP group consumer [COUNT n] [BLOCK ms] [NOACK] STREAMS key... id...`.
const XREADGROUP_OPTS: &[Opt] = &[
    plain("GROUP", 2),
    plain("COUNT", 1),
    BLOCK_OPT,
    plain("NOACK", 0),
    Opt {
        word: "STREAMS",
        takes: Takes::StreamsRest,
    },
];
const XREAD_KEYS: &[KeyRule] = &[KeyRule::Options {
    start: 1,
    grammar: XREAD_OPTS,
}];
const XREADGROUP_KEYS: &[KeyRule] = &[KeyRule::Options {
    start: 1,
    grammar: XREADGROUP_OPTS,
}];

/// The served commands.
pub static TABLE: &[C] = &[
    // === connection and handshake ===
    C::local("AUTH", -2, FREE | NO_AUTH, L::Auth),
    C::local("HELLO", -1, FREE | NO_AUTH, L::Hello),
    C::local("PING", -1, FREE_BARE | NO_AUTH | SUBSCRIBED_OK, L::Ping),
    C::local("ECHO", 2, NO_AUTH, L::Echo),
    C::local("QUIT", -1, FREE | NO_AUTH | SUBSCRIBED_OK, L::Quit),
    C::local("RESET", 1, FREE | NO_AUTH | SUBSCRIBED_OK, L::Reset),
    // The connection set-up client libraries send by themselves is free (SPEC 7); what
    // it carries is bounded (a name or library string of at most 128 bytes; SELECT
    // other than 0 is refused).
    C::local("SELECT", 2, FREE, L::Select),
    C::fwd("CLIENT", -2, CONTAINER, NONE),
    C::local("CLIENT|SETNAME", 3, FREE, L::ClientSetName),
    C::local("CLIENT|GETNAME", 2, FREE, L::ClientGetName),
    // Added in Redis 7.2; client libraries send it on connect, so pkv answers it anyway.
    C::local("CLIENT|SETINFO", 4, FREE, L::ClientSetInfo),
    C::local("CLIENT|ID", 2, FREE, L::ClientId),
    C::local("CLIENT|INFO", 2, 0, L::ClientInfo),
    // The caller's own connection only: what a tenant observes of the server is its own.
    C::local("CLIENT|LIST", -2, 0, L::ClientList),
    // Added in Redis 7.2.
    C::local("CLIENT|NO-TOUCH", 3, 0, L::ClientNoTouch),
    C::local("CLIENT|REPLY", 3, 0, L::ClientReply),
    // The keyspace and memory sections walk the namespace: the walk's time is paid.
    C::local("INFO", -1, UPSTREAM_TIME, L::Info),
    C::fwd("CONFIG", -2, CONTAINER, NONE),
    C::local("CONFIG|GET", -3, 0, L::ConfigGet),
    C::local("COMMAND", -1, CONTAINER, L::Command),
    C::local("COMMAND|COUNT", 2, 0, L::CommandCount),
    C::local("COMMAND|DOCS", -2, 0, L::CommandDocs),
    C::local("COMMAND|INFO", -2, 0, L::CommandInfo),
    C::local("COMMAND|LIST", -2, 0, L::CommandList),
    C::local("READONLY", 1, FREE, L::ReadOnly),
    C::local("READWRITE", 1, FREE, L::ReadWrite),
    C::local("TIME", 1, 0, L::Time),
    // === transactions ===
    C::local("MULTI", 1, DEDICATED | UPSTREAM_TIME, L::Multi),
    C::local("EXEC", 1, DEDICATED | UPSTREAM_TIME, L::Exec),
    C::local("DISCARD", 1, DEDICATED | UPSTREAM_TIME, L::Discard),
    C::local("WATCH", -2, DEDICATED | UPSTREAM_TIME, L::Watch).keys(ALL),
    C::local("UNWATCH", 1, DEDICATED | UPSTREAM_TIME, L::Unwatch),
    // === pub/sub ===
    C::local(
        "SUBSCRIBE",
        -2,
        PUBSUB | SUBSCRIBED_OK | UPSTREAM_TIME,
        L::Subscribe,
    )
    .keys(CHANNELS1),
    C::local(
        "UNSUBSCRIBE",
        -1,
        PUBSUB | SUBSCRIBED_OK | UPSTREAM_TIME,
        L::Unsubscribe,
    )
    .keys(CHANNELS1),
    C::local(
        "PSUBSCRIBE",
        -2,
        PUBSUB | SUBSCRIBED_OK | UPSTREAM_TIME,
        L::PSubscribe,
    )
    .keys(PATTERNS1),
    C::local(
        "PUNSUBSCRIBE",
        -1,
        PUBSUB | SUBSCRIBED_OK | UPSTREAM_TIME,
        L::PUnsubscribe,
    )
    .keys(PATTERNS1),
    C::fwd("PUBLISH", 3, PUBSUB, PUBLISH_CHANNEL),
    C::fwd("PUBSUB", -2, CONTAINER, NONE),
    // Without a pattern Redis would list every tenant's channels: the session adds the
    // namespace's own pattern when none is given.
    C::fwd("PUBSUB|CHANNELS", -2, PUBSUB, PATTERNS2).reply(R::Channels),
    C::fwd("PUBSUB|NUMSUB", -2, PUBSUB, CHANNELS2).reply(R::ChannelCounts),
    C::local("PUBSUB|NUMPAT", 2, PUBSUB, L::PubsubNumpat),
    // === keys and expiry ===
    C::fwd("DEL", -2, WRITE, ALL),
    C::fwd("UNLINK", -2, WRITE, ALL),
    C::fwd("EXISTS", -2, READONLY, ALL),
    C::fwd("TOUCH", -2, READONLY, ALL),
    C::fwd("TYPE", 2, READONLY, K1),
    C::fwd("TTL", 2, READONLY, K1),
    C::fwd("PTTL", 2, READONLY, K1),
    C::fwd("EXPIRE", -3, WRITE, K1).storage(S::Expire { unit: U::Seconds }),
    C::fwd("PEXPIRE", -3, WRITE, K1).storage(S::Expire { unit: U::Millis }),
    C::fwd("PERSIST", 2, WRITE, K1).storage(S::Persist),
    C::fwd("EXPIREAT", -3, WRITE, K1).storage(S::Expire {
        unit: U::UnixSeconds,
    }),
    C::fwd("PEXPIREAT", -3, WRITE, K1).storage(S::Expire {
        unit: U::UnixMillis,
    }),
    C::fwd("EXPIRETIME", 2, READONLY, K1),
    C::fwd("PEXPIRETIME", 2, READONLY, K1),
    C::fwd("RENAME", 3, WRITE, K12).storage(S::Rename),
    C::fwd("RENAMENX", 3, WRITE, K12).storage(S::Rename),
    C::fwd("COPY", -3, WRITE, COPY_KEYS).storage(S::Store { dest: D::Second }),
    C::fwd("KEYS", 2, READONLY | WALKS_KEYSPACE, KEY_PATTERN1).reply(R::Keys),
    C::local(
        "SCAN",
        -2,
        READONLY | UPSTREAM_TIME | WALKS_KEYSPACE,
        L::Scan,
    ),
    C::local(
        "RANDOMKEY",
        1,
        READONLY | UPSTREAM_TIME | WALKS_KEYSPACE,
        L::RandomKey,
    ),
    C::local(
        "DBSIZE",
        1,
        READONLY | UPSTREAM_TIME | WALKS_KEYSPACE,
        L::DbSize,
    ),
    C::local(
        "FLUSHDB",
        -1,
        WRITE | UPSTREAM_TIME | WALKS_KEYSPACE,
        L::FlushDb,
    ),
    C::local(
        "FLUSHALL",
        -1,
        WRITE | UPSTREAM_TIME | WALKS_KEYSPACE,
        L::FlushDb,
    ),
    C::fwd("OBJECT", -2, CONTAINER, NONE),
    C::fwd("OBJECT|ENCODING", 3, READONLY, K2),
    C::fwd("OBJECT|IDLETIME", 3, READONLY, K2),
    C::fwd("OBJECT|REFCOUNT", 3, READONLY, K2),
    C::local("OBJECT|HELP", 2, 0, L::Help),
    C::fwd("MEMORY", -2, CONTAINER, NONE),
    C::fwd("MEMORY|USAGE", -3, READONLY, K2),
    C::fwd("SORT", -2, WRITE, SORT_KEYS).storage(S::Store {
        dest: D::LastStoreOption,
    }),
    C::fwd("SORT_RO", -2, READONLY, SORT_RO_KEYS),
    // === strings and counters ===
    C::fwd("GET", 2, READONLY, K1),
    C::fwd("SET", -3, WRITE, K1).storage(S::Set),
    C::fwd("SETNX", 3, WRITE, K1).storage(S::Strlen { most: Most::Arg(2) }),
    C::fwd("SETEX", 4, WRITE, K1).storage(S::SetEx { millis: false }),
    C::fwd("PSETEX", 4, WRITE, K1).storage(S::SetEx { millis: true }),
    C::fwd("GETSET", 3, WRITE, K1).storage(S::Strlen { most: Most::Arg(2) }),
    C::fwd("GETDEL", 2, WRITE, K1),
    C::fwd("GETEX", -2, WRITE, K1).storage(S::GetEx),
    C::fwd("MGET", -2, READONLY, ALL),
    C::fwd("MSET", -3, WRITE, PAIRS).storage(S::Pairs),
    C::fwd("MSETNX", -3, WRITE, PAIRS).storage(S::Pairs),
    C::fwd("APPEND", 3, WRITE, K1).storage(S::Strlen { most: Most::Arg(2) }),
    C::fwd("STRLEN", 2, READONLY, K1),
    C::fwd("INCR", 2, WRITE, K1).storage(S::Counter { step: Step::Up }),
    C::fwd("DECR", 2, WRITE, K1).storage(S::Counter { step: Step::Down }),
    C::fwd("INCRBY", 3, WRITE, K1).storage(S::Counter {
        step: Step::UpByArg,
    }),
    C::fwd("DECRBY", 3, WRITE, K1).storage(S::Counter {
        step: Step::DownByArg,
    }),
    C::fwd("INCRBYFLOAT", 3, WRITE, K1).storage(S::Strlen { most: Most::Float }),
    C::fwd("GETRANGE", 4, READONLY, K1),
    C::fwd("SETRANGE", 4, WRITE, K1).storage(S::Strlen { most: Most::Range }),
    C::fwd("SUBSTR", 4, READONLY, K1),
    C::fwd("LCS", -3, READONLY, K12),
    // === bits ===
    C::fwd("SETBIT", 4, WRITE, K1).storage(S::Strlen { most: Most::Bit }),
    C::fwd("GETBIT", 3, READONLY, K1),
    C::fwd("BITCOUNT", -2, READONLY, K1),
    C::fwd("BITPOS", -3, READONLY, K1),
    C::fwd("BITOP", -4, WRITE, FROM2).storage(S::Store { dest: D::First }),
    C::fwd("BITFIELD", -2, WRITE, K1).storage(S::Strlen {
        most: Most::Bitfield,
    }),
    C::fwd("BITFIELD_RO", -2, READONLY, K1),
    // === hashes ===
    C::fwd("HSET", -4, WRITE, K1).storage(ADDS),
    C::fwd("HSETNX", 4, WRITE, K1).storage(ADDS_IF_POSITIVE),
    C::fwd("HMSET", -4, WRITE, K1).storage(ADDS),
    C::fwd("HGET", 3, READONLY, K1),
    C::fwd("HMGET", -3, READONLY, K1),
    C::fwd("HDEL", -3, WRITE, K1),
    C::fwd("HEXISTS", 3, READONLY, K1),
    C::fwd("HGETALL", 2, READONLY, K1),
    C::fwd("HKEYS", 2, READONLY, K1),
    C::fwd("HVALS", 2, READONLY, K1),
    C::fwd("HLEN", 2, READONLY, K1),
    C::fwd("HINCRBY", 4, WRITE, K1).storage(S::HashIncr {
        most: Most::Integer,
    }),
    C::fwd("HINCRBYFLOAT", 4, WRITE, K1).storage(S::HashIncr { most: Most::Float }),
    C::fwd("HSTRLEN", 3, READONLY, K1),
    C::fwd("HSCAN", -3, READONLY, K1),
    C::fwd("HRANDFIELD", -2, READONLY, K1),
    // === lists ===
    C::fwd("LPUSH", -3, WRITE, K1).storage(ADDS),
    C::fwd("RPUSH", -3, WRITE, K1).storage(ADDS),
    C::fwd("LPUSHX", -3, WRITE, K1).storage(ADDS_IF_POSITIVE),
    C::fwd("RPUSHX", -3, WRITE, K1).storage(ADDS_IF_POSITIVE),
    C::fwd("LPOP", -2, WRITE, K1),
    C::fwd("RPOP", -2, WRITE, K1),
    C::fwd("LLEN", 2, READONLY, K1),
    C::fwd("LRANGE", 4, READONLY, K1),
    C::fwd("LINDEX", 3, READONLY, K1),
    C::fwd("LSET", 4, WRITE, K1).storage(S::Replace),
    C::fwd("LINSERT", 5, WRITE, K1).storage(S::Grow {
        data: DataArgs::Only(4),
        written: Written::IfPositive,
    }),
    C::fwd("LREM", 4, WRITE, K1),
    C::fwd("LTRIM", 4, WRITE, K1),
    C::fwd("LPOS", -3, READONLY, K1),
    C::fwd("LMOVE", 5, WRITE, K12).storage(S::Move { element: E::Reply }),
    C::fwd("RPOPLPUSH", 3, WRITE, K12).storage(S::Move { element: E::Reply }),
    C::fwd("LMPOP", -4, WRITE, NUMKEYS1).reply(R::FirstKey),
    C::fwd("BLPOP", -3, WRITE | BLOCKING, ALL_BUT_LAST)
        .reply(R::FirstKey)
        .timeout(T::Last),
    C::fwd("BRPOP", -3, WRITE | BLOCKING, ALL_BUT_LAST)
        .reply(R::FirstKey)
        .timeout(T::Last),
    C::fwd("BLMOVE", 6, WRITE | BLOCKING, K12)
        .storage(S::Move { element: E::Reply })
        .timeout(T::Last),
    C::fwd("BRPOPLPUSH", 4, WRITE | BLOCKING, K12)
        .storage(S::Move { element: E::Reply })
        .timeout(T::Last),
    C::fwd("BLMPOP", -5, WRITE | BLOCKING, NUMKEYS2)
        .reply(R::FirstKey)
        .timeout(T::At(1)),
    // === sets ===
    C::fwd("SADD", -3, WRITE, K1).storage(S::Grow {
        data: DataArgs::From(2),
        written: Written::Counted { per: 1 },
    }),
    C::fwd("SREM", -3, WRITE, K1),
    C::fwd("SMEMBERS", 2, READONLY, K1),
    C::fwd("SISMEMBER", 3, READONLY, K1),
    C::fwd("SMISMEMBER", -3, READONLY, K1),
    C::fwd("SCARD", 2, READONLY, K1),
    C::fwd("SPOP", -2, WRITE, K1),
    C::fwd("SRANDMEMBER", -2, READONLY, K1),
    C::fwd("SMOVE", 4, WRITE, K12).storage(S::Move { element: E::Arg3 }),
    C::fwd("SINTER", -2, READONLY, ALL),
    C::fwd("SINTERSTORE", -3, WRITE, ALL).storage(S::Store { dest: D::First }),
    C::fwd("SINTERCARD", -3, READONLY, NUMKEYS1),
    C::fwd("SUNION", -2, READONLY, ALL),
    C::fwd("SUNIONSTORE", -3, WRITE, ALL).storage(S::Store { dest: D::First }),
    C::fwd("SDIFF", -2, READONLY, ALL),
    C::fwd("SDIFFSTORE", -3, WRITE, ALL).storage(S::Store { dest: D::First }),
    C::fwd("SSCAN", -3, READONLY, K1),
    // === sorted sets ===
    C::fwd("ZADD", -4, WRITE, K1).storage(S::Grow {
        data: DataArgs::AfterOptions {
            at: 2,
            options: ZADD_OPTS,
        },
        written: Written::Counted { per: 2 },
    }),
    C::fwd("ZREM", -3, WRITE, K1),
    C::fwd("ZSCORE", 3, READONLY, K1),
    C::fwd("ZMSCORE", -3, READONLY, K1),
    C::fwd("ZINCRBY", 4, WRITE, K1).storage(ADDS),
    C::fwd("ZCARD", 2, READONLY, K1),
    C::fwd("ZCOUNT", 4, READONLY, K1),
    C::fwd("ZLEXCOUNT", 4, READONLY, K1),
    C::fwd("ZRANGE", -4, READONLY, K1),
    C::fwd("ZRANGESTORE", -5, WRITE, K12).storage(S::Store { dest: D::First }),
    C::fwd("ZRANGEBYSCORE", -4, READONLY, K1),
    C::fwd("ZREVRANGEBYSCORE", -4, READONLY, K1),
    C::fwd("ZRANGEBYLEX", -4, READONLY, K1),
    C::fwd("ZREVRANGEBYLEX", -4, READONLY, K1),
    C::fwd("ZREVRANGE", -4, READONLY, K1),
    C::fwd("ZRANK", 3, READONLY, K1),
    C::fwd("ZREVRANK", 3, READONLY, K1),
    C::fwd("ZREMRANGEBYRANK", 4, WRITE, K1),
    C::fwd("ZREMRANGEBYSCORE", 4, WRITE, K1),
    C::fwd("ZREMRANGEBYLEX", 4, WRITE, K1),
    C::fwd("ZPOPMIN", -2, WRITE, K1),
    C::fwd("ZPOPMAX", -2, WRITE, K1),
    C::fwd("BZPOPMIN", -3, WRITE | BLOCKING, ALL_BUT_LAST)
        .reply(R::FirstKey)
        .timeout(T::Last),
    C::fwd("BZPOPMAX", -3, WRITE | BLOCKING, ALL_BUT_LAST)
        .reply(R::FirstKey)
        .timeout(T::Last),
    C::fwd("ZMPOP", -4, WRITE, NUMKEYS1).reply(R::FirstKey),
    C::fwd("BZMPOP", -5, WRITE | BLOCKING, NUMKEYS2)
        .reply(R::FirstKey)
        .timeout(T::At(1)),
    C::fwd("ZUNION", -3, READONLY, NUMKEYS1),
    C::fwd("ZINTER", -3, READONLY, NUMKEYS1),
    C::fwd("ZDIFF", -3, READONLY, NUMKEYS1),
    C::fwd("ZINTERCARD", -3, READONLY, NUMKEYS1),
    C::fwd("ZUNIONSTORE", -4, WRITE, DEST_NUMKEYS2).storage(S::Store { dest: D::First }),
    C::fwd("ZINTERSTORE", -4, WRITE, DEST_NUMKEYS2).storage(S::Store { dest: D::First }),
    C::fwd("ZDIFFSTORE", -4, WRITE, DEST_NUMKEYS2).storage(S::Store { dest: D::First }),
    C::fwd("ZRANDMEMBER", -2, READONLY, K1),
    C::fwd("ZSCAN", -3, READONLY, K1),
    // === streams ===
    C::fwd("XADD", -5, WRITE, K1).storage(S::Grow {
        data: DataArgs::AfterOptions {
            at: 2,
            options: XADD_OPTS,
        },
        written: Written::All,
    }),
    C::fwd("XRANGE", -4, READONLY, K1),
    C::fwd("XREVRANGE", -4, READONLY, K1),
    C::fwd("XLEN", 2, READONLY, K1),
    C::fwd("XDEL", -3, WRITE, K1),
    C::fwd("XTRIM", -4, WRITE, K1),
    C::fwd("XSETID", -3, WRITE, K1),
    C::fwd("XACK", -4, WRITE, K1),
    C::fwd("XPENDING", -3, READONLY, K1),
    C::fwd("XCLAIM", -6, WRITE, K1).storage(S::Consumer {
        group_option: false,
    }),
    C::fwd("XAUTOCLAIM", -6, WRITE, K1).storage(S::Consumer {
        group_option: false,
    }),
    C::fwd("XREAD", -4, READONLY | MAY_BLOCK, XREAD_KEYS).reply(R::Streams),
    C::fwd("XREADGROUP", -7, WRITE | MAY_BLOCK, XREADGROUP_KEYS)
        .reply(R::Streams)
        .storage(S::Consumer { group_option: true }),
    C::fwd("XGROUP", -2, CONTAINER, NONE),
    C::fwd("XGROUP|CREATE", -5, WRITE, K2).storage(S::Grow {
        data: DataArgs::Only(3),
        written: Written::All,
    }),
    C::fwd("XGROUP|CREATECONSUMER", 5, WRITE, K2).storage(S::Grow {
        data: DataArgs::Only(4),
        written: Written::IfPositive,
    }),
    C::fwd("XGROUP|DELCONSUMER", 5, WRITE, K2),
    C::fwd("XGROUP|DESTROY", 4, WRITE, K2),
    C::fwd("XGROUP|SETID", -5, WRITE, K2),
    C::local("XGROUP|HELP", 2, 0, L::Help),
    C::fwd("XINFO", -2, CONTAINER, NONE),
    C::fwd("XINFO|STREAM", -3, READONLY, K2),
    C::fwd("XINFO|GROUPS", 3, READONLY, K2),
    C::fwd("XINFO|CONSUMERS", 4, READONLY, K2),
    C::local("XINFO|HELP", 2, 0, L::Help),
    // === hyperloglog ===
    C::fwd("PFADD", -2, WRITE, K1).storage(S::Strlen { most: Most::Hll }),
    C::fwd("PFCOUNT", -2, READONLY, ALL),
    C::fwd("PFMERGE", -2, WRITE, ALL).storage(S::Store { dest: D::First }),
    // === geo ===
    C::fwd("GEOADD", -5, WRITE, K1).storage(S::Grow {
        data: DataArgs::AfterOptions {
            at: 2,
            options: GEOADD_OPTS,
        },
        written: Written::Counted { per: 3 },
    }),
    C::fwd("GEODIST", -4, READONLY, K1),
    C::fwd("GEOHASH", -2, READONLY, K1),
    C::fwd("GEOPOS", -2, READONLY, K1),
    C::fwd("GEORADIUS", -6, WRITE, GEORADIUS_KEYS).storage(S::Store {
        dest: D::LastStoreOption,
    }),
    C::fwd("GEORADIUSBYMEMBER", -5, WRITE, GEORADIUSBYMEMBER_KEYS).storage(S::Store {
        dest: D::LastStoreOption,
    }),
    C::fwd("GEORADIUS_RO", -6, READONLY, GEORADIUS_RO_KEYS),
    C::fwd(
        "GEORADIUSBYMEMBER_RO",
        -5,
        READONLY,
        GEORADIUSBYMEMBER_RO_KEYS,
    ),
    C::fwd("GEOSEARCH", -7, READONLY, K1),
    C::fwd("GEOSEARCHSTORE", -8, WRITE, K12).storage(S::Store { dest: D::First }),
    // === pkv ===
    C::local("PKV.SESSION", -1, FREE, L::PkvSession),
    C::local("PKV.TOPUP", 2, FREE, L::PkvTopup),
    C::local("PKV.BALANCE", 1, FREE, L::PkvBalance),
    C::local("PKV.PRICES", 1, FREE, L::PkvPrices),
    C::local("PKV.DEFAULTTTL", -1, FREE_BARE, L::PkvDefaultTtl),
    // Scripting (src/scripting): run by pkv on the embedded store, refused on an upstream.
    C::local("EVAL", -3, UPSTREAM_TIME, L::Eval),
    C::local("EVALSHA", -3, UPSTREAM_TIME, L::EvalSha),
    C::local("EVAL_RO", -3, READONLY | UPSTREAM_TIME, L::EvalRo),
    C::local("EVALSHA_RO", -3, READONLY | UPSTREAM_TIME, L::EvalShaRo),
    C::fwd("SCRIPT", -2, CONTAINER, NONE),
    C::local("SCRIPT|LOAD", 3, 0, L::ScriptLoad),
    C::local("SCRIPT|EXISTS", -3, 0, L::ScriptExists),
    C::local("SCRIPT|FLUSH", -2, 0, L::ScriptFlush),
    C::local("SCRIPT|KILL", 2, 0, L::ScriptKill),
];
