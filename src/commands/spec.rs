//! The shape of one row of the command table: what pkv knows about a command.
//!
//! Every fact pkv uses about a command (how many arguments it takes, whether it writes,
//! blocks or subscribes, where its keys are, how its reply is rewritten, whether pkv answers
//! it itself) is stated once, in [`super::table`], using the types here.

/// One served command (or one subcommand of a container command such as `OBJECT`).
#[derive(Debug)]
pub struct CommandSpec {
    /// Upper-case name; subcommands are written `CONTAINER|SUB`, as Redis's `COMMAND` does.
    pub name: &'static str,
    /// Redis's arity convention, counting the command name: `n` means exactly `n`
    /// arguments, `-n` means at least `n`.
    pub arity: i32,
    /// Properties, an OR of the `flags::*` constants.
    pub flags: u16,
    /// Where the keys (or channels) are, applied in order; empty for keyless commands.
    pub keys: &'static [KeyRule],
    /// How the upstream reply is rewritten before it reaches the client.
    pub reply: ReplyRewrite,
    /// Who answers the command.
    pub exec: Exec,
    /// What storage a write buys; see `docs/metering.md`.
    pub storage: Storage,
    /// Where a `BLOCKING` command says how long it may wait (a `BLOCK` option of the key
    /// grammar says it for `MAY_BLOCK` commands).
    pub timeout: Option<Timeout>,
}

/// Where a blocking command's timeout is: in seconds (a float, as Redis reads it; 0 waits
/// for ever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The last argument (`BLPOP key... timeout`, `BLMOVE ... timeout`).
    Last,
    /// The argument at this index (`BLMPOP timeout numkeys ...`).
    At(u8),
}

/// Command properties. A command may carry several.
pub mod flags {
    /// Changes data; storage is metered on these.
    pub const WRITE: u16 = 1 << 0;
    /// Reads data only.
    pub const READONLY: u16 = 1 << 1;
    /// May block waiting for data (BLPOP, XREAD BLOCK, ...): needs a dedicated connection.
    pub const BLOCKING: u16 = 1 << 2;
    /// A Pub/Sub command.
    pub const PUBSUB: u16 = 1 << 3;
    /// Pins the client to a dedicated upstream connection (MULTI, WATCH).
    pub const DEDICATED: u16 = 1 << 4;
    /// Not metered at all (PKV.*, AUTH, HELLO, QUIT, RESET, and the connection set-up
    /// client libraries send by themselves: CLIENT SETNAME|SETINFO|GETNAME|ID, SELECT,
    /// READONLY, READWRITE). What a free command carries and answers must be small.
    pub const FREE: u16 = 1 << 5;
    /// Served before authentication (the handshake commands).
    pub const NO_AUTH: u16 = 1 << 6;
    /// Has subcommands; the row for `NAME|SUB` says the rest.
    pub const CONTAINER: u16 = 1 << 7;
    /// Blocks only when an option asks for it (`XREAD BLOCK`, `XREADGROUP BLOCK`); the
    /// option's [`Takes::Block`] in the key grammar says whether a request does.
    pub const MAY_BLOCK: u16 = 1 << 8;
    /// Allowed while a RESP2 client is subscribed.
    pub const SUBSCRIBED_OK: u16 = 1 << 9;
    /// Answered by pkv but spends time upstream (transactions, subscriptions, namespace
    /// walks): metered for that time.
    pub const UPSTREAM_TIME: u16 = 1 << 10;
    /// Free only as the bare command name (`PING`): with an argument it carries data, and
    /// is metered and admitted like `ECHO`, so a free command never carries free work.
    pub const FREE_BARE: u16 = 1 << 11;
    /// Visits the whole keyspace rather than keys it names (KEYS, SCAN, and what pkv
    /// builds on them: RANDOMKEY, DBSIZE, FLUSHDB): the embedded store lets no multi-key
    /// write run half seen under it.
    pub const WALKS_KEYSPACE: u16 = 1 << 12;
}

/// One rule locating key (or channel) arguments. Indices count the command name as 0.
#[derive(Debug, Clone, Copy)]
pub enum KeyRule {
    /// Keys at `first`, `first + step`, ... up to `last`; a negative `last` counts from the
    /// end (`-1` is the last argument).
    Range { first: u8, last: i8, step: u8 },
    /// The argument at `at` is a count `n`; the `n` arguments after it are keys.
    NumKeys { at: u8 },
    /// Options parsed the way Redis parses them, starting at argument `start`.
    Options { start: u8, grammar: &'static [Opt] },
    /// Pub/Sub channel names from `first` to the last argument.
    Channels { first: u8 },
    /// Pub/Sub channel patterns from `first` to the last argument.
    ChannelPatterns { first: u8 },
    /// A key glob pattern at `at` (`KEYS pattern`), confined to the namespace.
    KeyPattern { at: u8 },
    /// An optional channel pattern at `at` (`PUBSUB CHANNELS [pattern]`); when it is
    /// missing, pkv adds the namespace's own `*` so Redis lists only the tenant's channels.
    OptionalChannelPattern { at: u8 },
}

/// One keyword of an option grammar, and what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt {
    /// The keyword, upper-case; matched case-insensitively.
    pub word: &'static str,
    /// What the arguments after the keyword are.
    pub takes: Takes,
}

/// The arguments that follow an option keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// `n` plain arguments that are not keys.
    Plain(u8),
    /// One timeout (`BLOCK ms`): the request waits for data, so it needs a connection of
    /// its own. Whether a request blocks is read here, by the same walk that finds its
    /// keys, so a group or consumer named `BLOCK` or `STREAMS` is never taken for an option.
    Block,
    /// A trim threshold: an optional `=` or `~`, then one argument (`XADD ... MAXLEN ~ 1000`).
    Threshold,
    /// A logical database number (`COPY ... DB n`), which must be 0: nothing a tenant does
    /// reaches another database (SPEC 5). Any other number refuses the command before it runs.
    Database,
    /// One key (`STORE dest`).
    Key,
    /// One pattern that names keys, such as `SORT ... BY weight_*`; `#` and patterns that do
    /// not name keys are left alone.
    KeyPattern,
    /// The rest of the arguments: the first half are keys, the second half their IDs
    /// (`STREAMS k1 k2 id1 id2`). Ends the option list.
    StreamsRest,
}

/// What storage a write command buys (SPEC 7: storage is prepaid for the key's TTL, and
/// charged on what the write really holds).
///
/// "Data" means the client-visible bytes a write stores: the key's name when the write
/// creates the key, plus the data arguments it writes. Option words (`ZADD NX CH`, `XADD
/// MAXLEN ~ 1000`) are not data. A write that writes nothing (its reply says so) pays
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Stores nothing new: reads, deletions, pops, trims.
    None,
    /// `SET key value [options]`: pays key + value for the TTL its expiry option gives, or
    /// the default TTL, which pkv adds as `EX`; not when `NX`/`XX` kept it from setting.
    /// With `KEEPTTL` it is charged like `Strlen`.
    Set,
    /// `SETEX key ttl value`: TTL in seconds (or milliseconds) at arg 2, value at arg 3.
    SetEx { millis: bool },
    /// `MSET k v [k v ...]`: every pair at the default TTL.
    Pairs,
    /// A string write (`APPEND`, `SETRANGE`, `SETBIT`, `INCR`, `PFADD`, ...) measured with
    /// `STRLEN` before and after it: a new key pays name + length for the default TTL, an
    /// existing key pays what it grew by for its remaining TTL. `most` bounds the growth
    /// for admission.
    Strlen { most: Most },
    /// An integer counter (`INCR`, `DECRBY`, ...): the reply is the new value, and the old
    /// one is the reply less the step, so both lengths are known without bookkeeping
    /// reads. A new key pays name + digits for the default TTL, an existing key what the
    /// digits grew by for its remaining TTL.
    Counter { step: Step },
    /// Adds the data arguments to the command's first key, creating it if absent: a new key
    /// pays name + data for the default TTL, an existing key pays the data for its
    /// remaining TTL; `written` reads from the reply how much of the data was written.
    Grow { data: DataArgs, written: Written },
    /// `LSET key index element`: pays what the element is longer than the one it replaces
    /// (read with `LINDEX` before), for the key's remaining TTL.
    Replace,
    /// `HINCRBY`/`HINCRBYFLOAT key field n`: pays the field and the number the reply
    /// carries, less what the field held before (`HSTRLEN`); `most` bounds the number.
    HashIncr { most: Most },
    /// Writes a value computed upstream into a destination key: pays the stored size
    /// (`MEMORY USAGE ... SAMPLES 0`, every element counted) for the default TTL when the
    /// key is left without one (most such commands replace the key and drop its TTL), else
    /// for the TTL it kept. A reply of 0 stored nothing.
    Store { dest: Dest },
    /// Moves one element into the second key (`LMOVE`, `SMOVE`): grows that key by the
    /// element.
    Move { element: Element },
    /// Sets the TTL of the first key from arg 2: pays the key's size for the added seconds.
    Expire { unit: TtlUnit },
    /// `GETEX key [EX|PX|EXAT|PXAT t|PERSIST]`: like `Expire` when an option is given.
    GetEx,
    /// `PERSIST key`: served as `PEXPIRE key` to the maximum TTL ([`super::persist`]), and
    /// paid like it.
    Persist,
    /// `RENAME key newkey`: the key keeps its TTL, and pays what the new name is longer
    /// than the old one, for that TTL.
    Rename,
    /// A stream consumer (`XCLAIM key group consumer`; with `group_option`, the one of
    /// `XREADGROUP ... GROUP group consumer`), which Redis creates in the group of every
    /// stream key the command names when it is new: a new one pays its name for each
    /// key's remaining TTL. The group comes right before the consumer.
    Consumer { group_option: bool },
}

/// How a counter command moves its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// By one (`INCR`).
    Up,
    /// By minus one (`DECR`).
    Down,
    /// By argument 2 (`INCRBY key n`).
    UpByArg,
    /// By minus argument 2 (`DECRBY key n`).
    DownByArg,
}

/// The most a string write can grow its key by, in bytes, for admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Most {
    /// The length of the argument at this index (`APPEND key value`).
    Arg(u8),
    /// A 64-bit integer in decimal: 20 bytes.
    Integer,
    /// A long double in decimal: Redis formats it into at most 5 KiB.
    Float,
    /// `SETRANGE key offset value`: offset + length of the value.
    Range,
    /// `SETBIT key offset bit`: the byte holding the bit.
    Bit,
    /// `BITFIELD key [SET|INCRBY type offset value]...`: the byte after the last bit set.
    Bitfield,
    /// A HyperLogLog in its dense form (12,304 bytes).
    Hll,
}

/// Which arguments of a `Storage::Grow` write are its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataArgs {
    /// Every argument from this index on.
    From(u8),
    /// Every argument from `at` on, after the option words of `options` that lead them
    /// (`ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member ...`).
    AfterOptions { at: u8, options: &'static [Opt] },
    /// The argument at this index alone (`XGROUP CREATE key group id`).
    Only(u8),
}

/// How a `Storage::Grow` write's reply says what it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// All the data, unless the reply is nil (`XADD NOMKSTREAM` on a missing key).
    All,
    /// All the data when the reply is a positive integer, nothing otherwise (`HSETNX` on
    /// an existing field, `LINSERT` with a missing pivot, `LPUSHX` on a missing key).
    IfPositive,
    /// The reply counts the new elements, each `per` data arguments (`SADD`: 1, `ZADD`:
    /// score and member, `GEOADD`: longitude, latitude and member): pays for the largest
    /// that many, since the reply does not say which.
    Counted { per: u8 },
}

/// Which key a `Storage::Store` command writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    First,
    Second,
    /// The last key, present only when a `STORE` option was given (`SORT`, `GEORADIUS`).
    LastStoreOption,
}

/// Where a moved element comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    /// The reply is the element (`LMOVE`).
    Reply,
    /// Argument 3 is the element (`SMOVE src dst member`).
    Arg3,
}

/// How an expiry argument counts time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlUnit {
    Seconds,
    Millis,
    UnixSeconds,
    UnixMillis,
}

impl TtlUnit {
    /// The unit of an expiry option of SET and GETEX (`EX`, `PX`, `EXAT`, `PXAT`).
    pub fn option(word: &[u8]) -> Option<TtlUnit> {
        [
            ("EX", TtlUnit::Seconds),
            ("PX", TtlUnit::Millis),
            ("EXAT", TtlUnit::UnixSeconds),
            ("PXAT", TtlUnit::UnixMillis),
        ]
        .into_iter()
        .find(|(w, _)| word.eq_ignore_ascii_case(w.as_bytes()))
        .map(|(_, unit)| unit)
    }

    /// True for the units that count seconds.
    pub fn in_seconds(self) -> bool {
        matches!(self, TtlUnit::Seconds | TtlUnit::UnixSeconds)
    }

    /// True for the units that name a moment rather than a duration.
    pub fn is_absolute(self) -> bool {
        matches!(self, TtlUnit::UnixSeconds | TtlUnit::UnixMillis)
    }
}

/// How a reply is rewritten on its way back to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyRewrite {
    /// Passed through unchanged.
    Plain,
    /// An array of key names (`KEYS`): the namespace prefix is removed.
    Keys,
    /// An array whose first element is a key name (`BLPOP`, `LMPOP`, `BZPOPMIN`).
    FirstKey,
    /// Stream replies keyed by stream name (`XREAD`, `XREADGROUP`): an array of
    /// `[name, entries]` pairs in RESP2, a map in RESP3.
    Streams,
    /// `PUBSUB CHANNELS`: an array of channel names.
    Channels,
    /// `PUBSUB NUMSUB`: alternating channel names and counts.
    ChannelCounts,
    /// `SCAN`: a cursor and an array of key names.
    Scan,
    /// `FLUSHDB` queued in a transaction, run as `UNLINK`s: whatever they answer is `OK`.
    Flushed,
}

/// Who answers a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exec {
    /// Rewritten and forwarded upstream.
    Forward,
    /// Answered or emulated by pkv itself.
    Local(Local),
}

/// Commands that pkv answers or emulates itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    Auth,
    Hello,
    Ping,
    Echo,
    Quit,
    Reset,
    Select,
    ClientSetName,
    ClientGetName,
    ClientSetInfo,
    ClientId,
    ClientInfo,
    ClientList,
    ClientNoEvict,
    ClientNoTouch,
    ClientReply,
    Info,
    Command,
    CommandCount,
    CommandDocs,
    CommandInfo,
    CommandList,
    ReadOnly,
    ReadWrite,
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    Subscribe,
    Unsubscribe,
    PSubscribe,
    PUnsubscribe,
    Scan,
    RandomKey,
    DbSize,
    FlushDb,
    Time,
    PkvSession,
    PkvTopup,
    PkvBalance,
    PkvPrices,
    PkvDefaultTtl,
    /// `CONFIG GET`: a fixed, harmless subset of settings.
    ConfigGet,
    /// `OBJECT HELP`, `XINFO HELP`, `XGROUP HELP`: Redis's help text.
    Help,
    /// `PUBSUB NUMPAT`: the connection's own patterns.
    PubsubNumpat,
    Eval,
    EvalSha,
    EvalRo,
    EvalShaRo,
    ScriptLoad,
    ScriptExists,
    ScriptFlush,
    ScriptKill,
}

impl CommandSpec {
    /// A forwarded command with a plain reply.
    pub const fn fwd(name: &'static str, arity: i32, flags: u16, keys: &'static [KeyRule]) -> Self {
        CommandSpec {
            name,
            arity,
            flags,
            keys,
            reply: ReplyRewrite::Plain,
            exec: Exec::Forward,
            storage: Storage::None,
            timeout: None,
        }
    }

    /// A command pkv answers itself.
    pub const fn local(name: &'static str, arity: i32, flags: u16, local: Local) -> Self {
        CommandSpec {
            name,
            arity,
            flags,
            keys: &[],
            reply: ReplyRewrite::Plain,
            exec: Exec::Local(local),
            storage: Storage::None,
            timeout: None,
        }
    }

    /// The same row with a reply rewrite.
    pub const fn reply(mut self, reply: ReplyRewrite) -> Self {
        self.reply = reply;
        self
    }

    /// The same row with key rules (for local commands that still name keys, like WATCH).
    pub const fn keys(mut self, keys: &'static [KeyRule]) -> Self {
        self.keys = keys;
        self
    }

    /// The same row with a storage rule.
    pub const fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// The same row with the position of its timeout (blocking commands).
    pub const fn timeout(mut self, timeout: Timeout) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// True when the row carries `flag`.
    pub const fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// True when this call (with `argc` arguments, the name included) is not metered.
    pub const fn is_free(&self, argc: usize) -> bool {
        self.has(flags::FREE) || (self.has(flags::FREE_BARE) && argc <= 1)
    }
}
