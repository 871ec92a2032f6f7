//! Why a command of the embedded store fails, by meaning, with the facts each error needs.
//!
//! The store answers as Redis would, so each of these becomes Redis's own error line; pkv's
//! own words only where Redis has no such limit or no such refusal. The lines are written
//! in [`crate::error`] with every other line a client can see.

use crate::commands::set_options::SyntaxError;
use crate::redis_num::TimeoutError;

/// An error reply of the embedded store.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreError {
    // === any command ===
    /// The key holds a value of another type.
    WrongType,
    /// An argument that must be a whole number (in range) is not.
    NotInteger,
    /// An argument that must be a double is not.
    NotFloat,
    /// Arguments or options Redis does not take.
    Syntax,
    /// The wrong number of arguments for `command` (as the client spelt it).
    Arity { command: String },
    /// A command the table serves but the store does not run: it needs an upstream Redis.
    NeedsUpstream { command: String },
    /// A write refused because the append-only log cannot be written (the error).
    Misconf(String),
    /// A `denyoom` command refused because the data would pass `PKV_MAXMEMORY`.
    OutOfMemory,
    /// A blocking command's timeout that Redis refuses.
    Timeout(TimeoutError),
    /// A SCAN cursor that is not an unsigned number.
    InvalidCursor,
    /// The key does not exist (LSET, RENAME).
    NoSuchKey,
    /// A count that must not be negative (LPOP's, SPOP's, ZPOPMIN's).
    NotPositive,
    /// A number the command does not accept, said without its range.
    OutOfRange,
    /// A count of `i64::MIN`, which has no positive counterpart.
    CountBelowMin,
    /// A negative count that asks for more random picks than pkv gives (Redis has no such
    /// limit; the answer would exhaust memory).
    TooManyPicks { max: u64 },
    /// `numkeys` of 0 or less.
    NumKeysNotPositive,
    /// `numkeys` larger than the arguments that follow.
    NumKeysTooLarge,
    /// A COUNT option below 1 (LMPOP, ZMPOP).
    CountNotPositive,
    /// A negative LIMIT (SINTERCARD, ZINTERCARD).
    NegativeLimit,
    /// An unknown subcommand of `container` (MEMORY).
    UnknownSubcommand {
        container: &'static str,
        sub: String,
    },

    // === lists ===
    /// LSET past the list's ends.
    IndexOutOfRange,
    /// LPOS with RANK 0.
    RankZero,
    /// LPOS with a negative COUNT.
    NegativeCount,
    /// LPOS with a negative MAXLEN.
    NegativeMaxlen,

    // === strings and hashes ===
    /// The expiry of `command` is not positive, or its deadline does not fit.
    InvalidExpire { command: &'static str },
    /// INCR, INCRBY, HINCRBY past the 64-bit range.
    IncrOverflow,
    /// DECRBY with `i64::MIN`, whose negation does not fit.
    DecrOverflow,
    /// INCRBYFLOAT or HINCRBYFLOAT whose result is not finite.
    IncrNotFinite,
    /// HINCRBYFLOAT with an increment that is not finite.
    NotFinite,
    /// HINCRBY on a field that does not hold an integer.
    HashNotInteger,
    /// HINCRBYFLOAT on a field that does not hold a double.
    HashNotFloat,
    /// SETRANGE, APPEND or SETBIT past the largest string Redis allows.
    StringTooLong,
    /// SETRANGE at a negative offset.
    OffsetOutOfRange,
    /// LCS of a key that does not hold a string.
    LcsNotStrings,
    /// LCS with both LEN and IDX.
    LcsLenAndIdx,
    /// LCS of strings whose table would be too large.
    LcsTooLarge,
    /// A bit offset that is not a whole number in range.
    BitOffset,
    /// SETBIT's value is not 0 or 1.
    BitValue,
    /// BITPOS's bit is not 0 or 1.
    BitArgument,
    /// BITOP NOT with more than one source.
    BitopNotOneSource,
    /// A BITFIELD type other than `i1`..`i64`, `u1`..`u63`.
    BitfieldType,
    /// A BITFIELD OVERFLOW other than WRAP, SAT, FAIL.
    BitfieldOverflow,
    /// BITFIELD_RO with a subcommand other than GET.
    BitfieldReadOnly,

    // === keys ===
    /// EXPIRE with an option it does not know.
    UnsupportedOption { option: String },
    /// EXPIRE with NX and XX, GT or LT.
    ExpireNxAndOthers,
    /// EXPIRE with both GT and LT.
    ExpireGtAndLt,
    /// OBJECT with a subcommand it does not know, or the wrong number of arguments.
    ObjectUsage { sub: String },
    /// COPY to another database: the store has one.
    CopyOtherDatabase,
    /// COPY of a key onto itself.
    SameObject,

    // === sorted sets ===
    /// ZINCRBY (or ZADD INCR) whose result is NaN.
    NanScore,
    /// A score range end that is not a double.
    NotFloatRange,
    /// A lexicographic range end that does not start with `[`, `(`, `-` or `+`.
    NotLexRange,
    /// ZADD with XX and NX.
    XxAndNx,
    /// ZADD with two of GT, LT and NX.
    GtLtNx,
    /// ZADD INCR with more than one pair.
    IncrPair,
    /// ZRANGE with LIMIT but neither BYSCORE nor BYLEX.
    LimitWithoutBy,
    /// ZRANGE BYLEX with WITHSCORES.
    WithscoresByLex,
    /// ZUNION, ZINTER, ZDIFF and their STORE forms with `numkeys` below 1.
    NoInputKey { command: String },
    /// A WEIGHTS value that is not a double.
    WeightNotFloat,

    // === HyperLogLog ===
    /// A string that is not a HyperLogLog where one is needed.
    NotHll,
    /// A value that claims to be a HyperLogLog but whose registers do not add up.
    CorruptHll,

    // === geo ===
    /// A longitude or latitude outside what a geohash encodes.
    GeoInvalidPair { lon: f64, lat: f64 },
    /// A distance unit other than m, km, ft, mi.
    GeoUnit,
    /// A radius, width or height (`what`) that is not a number.
    GeoNeedNumeric { what: &'static str },
    /// A negative radius.
    GeoRadiusNegative,
    /// A negative width or height.
    GeoBoxNegative,
    /// A search around a member the set does not hold.
    GeoNoMember,
    /// A COUNT below 1.
    GeoCountNotPositive,
    /// STORE with WITHDIST, WITHHASH or WITHCOORD (`search_store`: said by GEOSEARCHSTORE).
    GeoStoreWith { search_store: bool },
    /// GEOSEARCH without FROMMEMBER or FROMLONLAT.
    GeoNeedFrom { command: String },
    /// GEOSEARCH without BYRADIUS or BYBOX.
    GeoNeedBy { command: String },
    /// ANY without COUNT.
    GeoAnyWithoutCount,

    // === SORT ===
    /// A numeric SORT of a value that is not a number.
    SortNotDouble,
    /// SORT whose GET patterns would fetch more than `values` values or `bytes` bytes
    /// (Redis has no such limit; the reply would be out of all proportion to the data).
    SortGetTooLarge { values: usize, bytes: usize },

    // === the store itself ===
    /// A blocking command's retry that did not run because its client left; no client
    /// ever reads this reply.
    Abandoned,

    // === streams ===
    /// A stream command's own refusal.
    Stream(StreamError),
}

/// Why a stream command fails (Redis 7.0's words, in [`crate::error`]).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamError {
    /// An ID that does not parse.
    InvalidId,
    /// XADD with an ID at or below the stream's last.
    AddIdTooSmall,
    /// XADD with the ID 0-0.
    AddIdZero,
    /// XADD `*` after the last possible ID.
    Exhausted,
    /// Both MAXLEN and MINID.
    MaxlenAndMinid,
    /// A negative MAXLEN.
    MaxlenNegative,
    /// A negative LIMIT.
    LimitNegative,
    /// LIMIT without MAXLEN or MINID.
    LimitWithoutStrategy,
    /// LIMIT without `~`.
    LimitWithoutApprox,
    /// XTRIM without MAXLEN or MINID.
    TrimWithoutStrategy,
    /// An exclusive start at the last possible ID.
    InvalidStart,
    /// An exclusive end at 0-0.
    InvalidEnd,
    /// GROUP given to XREAD.
    GroupInXread,
    /// NOACK given to XREAD.
    NoackInXread,
    /// XREADGROUP without GROUP.
    MissingGroup,
    /// `$` given to XREADGROUP.
    DollarInXreadgroup,
    /// `>` given to XREAD.
    GreaterInXread,
    /// The key or group does not exist; `suffix` names the command when Redis does.
    NoKeyOrGroup {
        key: String,
        group: String,
        suffix: &'static str,
    },
    /// The group does not exist (XGROUP, XINFO CONSUMERS).
    NoGroup { key: String, group: String },
    /// XGROUP CREATE of an existing group.
    BusyGroup,
    /// XGROUP on a missing key (without CREATE ... MKSTREAM).
    XgroupNoKey,
    /// ENTRIESREAD below -1.
    EntriesReadNegative,
    /// XSETID's ENTRIESADDED below 0.
    EntriesAddedNegative,
    /// XSETID below the stream's last entry.
    SetIdBelowTop,
    /// XSETID below the MAXDELETEDID it gives.
    SetIdBelowGivenMaxDeleted,
    /// XSETID's ENTRIESADDED below the stream's length.
    EntriesAddedBelowLength,
    /// XINFO STREAM or XSETID of a missing key.
    NoSuchKey,
    /// A bad number for an XCLAIM or XAUTOCLAIM option (`what` as Redis names it).
    InvalidNumber { what: &'static str },
    /// An option XCLAIM does not know.
    UnknownXclaimOption { option: String },
    /// XAUTOCLAIM's COUNT out of range.
    CountNotPositive,
    /// A blocked XREADGROUP whose stream was deleted.
    Unblocked,
}

impl From<TimeoutError> for StoreError {
    fn from(err: TimeoutError) -> Self {
        StoreError::Timeout(err)
    }
}

impl From<SyntaxError> for StoreError {
    fn from(_: SyntaxError) -> Self {
        StoreError::Syntax
    }
}
