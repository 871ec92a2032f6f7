//! Every error line pkv's request path sends a client, written in one place.
//!
//! Each concern says what went wrong in its own type, with the facts and without wire text:
//! [`ProtocolError`] (a request's bytes), [`LookupError`] and [`KeyError`] (the command
//! table), [`BackendError`] (where commands run), [`LimitError`] (an account's bounds),
//! [`Refusal`] (the meter), [`LedgerError`], [`PlanError`] (storage bought by a write),
//! [`StoreError`] (the embedded store's commands, with [`TimeoutError`] and [`SyntaxError`]
//! from the parsers they share with the request path), and the refusals of the request path
//! itself below. They all become a [`ClientError`], and [`ClientError::line`] is where their
//! RESP error lines (code first, then the words) are written. Replies that copy Redis's own
//! errors keep Redis's words; those that are pkv's own say what to do.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

use crate::backend::BackendError;
use crate::commands::set_options::SyntaxError;
use crate::commands::{KeyError, LookupError};
use crate::embedded::error::StoreError;
use crate::meter::ledger::{format_nanos, LedgerError};
use crate::meter::storage::PlanError;
use crate::meter::Refusal;
use crate::protocol::request::ProtocolError;
use crate::redis_num::TimeoutError;
use crate::server::LimitError;

// Lines that more than one concern answers with.
const SYNTAX: &str = "ERR syntax error";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const NUMKEYS_NOT_POSITIVE: &str = "ERR numkeys should be greater than 0";
const NUMKEYS_TOO_LARGE: &str = "ERR Number of keys can't be greater than number of args";

/// An error a client is answered with.
#[derive(Debug, Clone)]
pub enum ClientError {
    /// A command other than the handshake before AUTH.
    NoAuth,
    /// The connection's token is no longer valid.
    TokenExpired,
    /// A token refused at AUTH, HELLO or PKV.TOPUP; the reason is for the client.
    WrongPass(String),
    /// HELLO without AUTH on a connection that has not authenticated.
    HelloNeedsAuth,
    /// HELLO with a protocol version other than 2 or 3.
    NoProto,
    /// An option HELLO does not know.
    HelloOption(String),
    /// PKV.TOPUP given a session token.
    TopupNeedsQuota,
    /// PKV.TOPUP given a token already redeemed (by anyone, however).
    AlreadyRedeemed,
    /// A client name (or library name or version) Redis would refuse, or too long.
    ClientName(NameError),
    /// `CLIENT SETINFO` with an attribute Redis does not know.
    UnknownClientInfo(String),
    /// `CLIENT LIST TYPE` with a type Redis does not know.
    UnknownClientType(String),
    /// `CLIENT LIST ID` with an id that is not an integer.
    InvalidClientId,
    /// A request that does not match the table: unknown, refused, wrong arity.
    Lookup {
        err: LookupError,
        args: Vec<Bytes>,
    },
    /// A command a subscribed RESP2 client may not send.
    Subscribed {
        command: String,
    },
    /// Redis's own words for a malformed command.
    Syntax,
    /// Where a command's keys are could not be read.
    Key(KeyError),
    /// SELECT of another database.
    OtherDatabase,
    /// PKV.SESSION with a lifetime out of range.
    Lifetime {
        max: u64,
    },
    /// PKV.DEFAULTTTL with a TTL out of range.
    DefaultTtl {
        max: u64,
    },
    ExecWithoutMulti,
    DiscardWithoutMulti,
    NestedMulti,
    WatchInMulti,
    /// A command Redis flags `no-multi` (SAVE, SHUTDOWN, ...) sent inside MULTI.
    CommandInMulti,
    /// FLUSHDB inside MULTI on an account with more keys than a transaction may queue.
    FlushInMultiTooBig {
        most: usize,
    },
    /// A command pkv answers itself that cannot be queued in a transaction.
    NotInMulti {
        command: String,
    },
    /// EXEC after a command was refused while queuing.
    ExecAbort,
    /// The upstream answered SCAN with something that is not a SCAN reply.
    BadScanReply,
    /// The meter refused the command: no balance, or no ledger.
    Refused(Refusal),
    /// The storage a write would buy cannot be sold.
    Plan(PlanError),
    /// Scripting: its own errors ([`crate::scripting::ScriptError`]).
    Script(crate::scripting::ScriptError),
    Backend(BackendError),
    Limit(LimitError),
    Ledger(LedgerError),
    Protocol(ProtocolError),
    /// An error of the embedded store's commands.
    Store(StoreError),
    /// A blocked client told that pkv is shutting down. Redis answers a wait it must end
    /// for a reason other than data or the timeout (its instance changing role, a slot
    /// moving) with an `UNBLOCKED` error; a null reply would tell the client its timeout
    /// passed, which never happens for a timeout of 0.
    ShuttingDown,
    /// A connection closed for not authenticating in time.
    AuthTimeout,
    /// The oldest unauthenticated connection, closed to make room for a new one.
    TooManyStrangers,
    /// A request that did not finish arriving in time.
    RequestTimeout {
        secs: u64,
    },
    /// A subscriber whose Pub/Sub connection upstream was lost.
    PubSubLost,
    /// Plain text sent to the TLS listener.
    TlsRequired,
    /// A Redis Cluster upstream: the command's keys are in more than one hash slot.
    CrossSlot,
    /// A Redis Cluster upstream: KEYS or SCAN inside a transaction, which runs on one
    /// master while they must ask every one.
    ClusterKeyspaceWalk,
    /// A SCAN cursor pkv never gave (Redis's own words).
    InvalidCursor,
    /// A Redis Cluster upstream kept redirecting one command.
    TooManyRedirects,
    /// A Redis Cluster upstream whose slot map has no master for the command's slot.
    ClusterDown,
}

/// What is wrong with a client name, a library name or a library version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Longer than pkv keeps (`what`: "client name", "lib-name", "lib-ver").
    TooLong { what: &'static str, max: usize },
    /// Spaces, newlines or other characters Redis refuses.
    Characters { what: &'static str },
}

impl ClientError {
    /// The RESP error line, code first.
    pub fn line(&self) -> Cow<'static, str> {
        use ClientError as E;
        let fixed: &'static str = match self {
            E::NoAuth => "NOAUTH Authentication required.",
            E::TokenExpired => "NOAUTH token expired; AUTH again",
            E::HelloNeedsAuth => "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            E::NoProto => "NOPROTO unsupported protocol version",
            E::TopupNeedsQuota => "ERR PKV.TOPUP takes a quota token, not a session token",
            E::AlreadyRedeemed => "ERR token already redeemed",
            E::Syntax => SYNTAX,
            E::InvalidClientId => "ERR Invalid client ID",
            E::OtherDatabase => "ERR pkv serves database 0 only",
            E::ExecWithoutMulti => "ERR EXEC without MULTI",
            E::DiscardWithoutMulti => "ERR DISCARD without MULTI",
            E::NestedMulti => "ERR MULTI calls can not be nested",
            E::WatchInMulti => "ERR WATCH inside MULTI is not allowed",
            E::CommandInMulti => "ERR Command not allowed inside a transaction",
            E::ExecAbort => "EXECABORT Transaction discarded because of previous errors.",
            E::BadScanReply => "ERR unexpected SCAN reply from upstream",
            E::ShuttingDown => "UNBLOCKED server shutting down; reconnect and retry",
            E::AuthTimeout => {
                "ERR authentication timeout: AUTH within PKV_AUTH_TIMEOUT seconds of connecting"
            }
            E::TooManyStrangers => {
                "ERR max number of unauthenticated clients reached; the oldest is closed to make room"
            }
            E::PubSubLost => "ERR upstream unavailable: Pub/Sub connection lost",
            E::TlsRequired => "ERR this port speaks TLS only; connect with TLS (redis-cli --tls)",
            E::CrossSlot => "CROSSSLOT Keys in request don't hash to the same slot",
            E::ClusterKeyspaceWalk => {
                "ERR KEYS and SCAN cannot run in a transaction through pkv on a Redis Cluster upstream: they ask every master"
            }
            E::InvalidCursor => "ERR invalid cursor",
            E::TooManyRedirects => {
                "TRYAGAIN the cluster redirected this command too many times; try again"
            }
            E::ClusterDown => "CLUSTERDOWN Hash slot not served",
            E::Key(err) => key_line(*err),
            // Redis's own words for a client name; pkv's for the library attributes.
            E::ClientName(NameError::Characters {
                what: "client name",
            }) => "ERR Client names cannot contain spaces, newlines or special characters.",
            E::ClientName(NameError::Characters { what }) => {
                return format!("ERR {what} cannot contain spaces, newlines or special characters.")
                    .into()
            }
            E::ClientName(NameError::TooLong { what, max }) => {
                return format!("ERR {what} longer than {max} bytes").into()
            }
            E::WrongPass(reason) => return format!("WRONGPASS {reason}").into(),
            E::HelloOption(opt) => {
                return format!("ERR Syntax error in HELLO option '{opt}'").into()
            }
            E::UnknownClientInfo(attr) => return format!("ERR Unrecognized option '{attr}'").into(),
            E::UnknownClientType(kind) => {
                return format!("ERR Unknown client type '{kind}'").into()
            }
            E::Lookup { err, args } => return lookup_line(err, args).into(),
            E::Subscribed { command } => return format!(
                "ERR Can't execute '{command}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
            )
            .into(),
            E::Lifetime { max } => return format!("ERR lifetime must be 1 to {max} seconds").into(),
            E::DefaultTtl { max } => {
                return format!(
                    "ERR default TTL must be 1 to {max} seconds, or 0 for the server's default"
                )
                .into()
            }
            E::FlushInMultiTooBig { most } => {
                return format!(
                    "ERR FLUSHDB inside MULTI removes at most {most} keys through pkv; run it outside the transaction"
                )
                .into()
            }
            E::NotInMulti { command } => {
                return format!("ERR '{command}' cannot be used inside MULTI through pkv").into()
            }
            E::Refused(Refusal::NoQuota { balance }) => return format!(
                "NOQUOTA balance exhausted: {} left; top up with PKV.TOPUP <token>",
                format_nanos((*balance).max(0))
            )
            .into(),
            E::Refused(Refusal::Ledger(err)) | E::Ledger(err) => return ledger_line(err).into(),
            E::Plan(err) => return plan_line(err).into(),
            E::Store(err) => return store_line(err),
            E::Script(err) => return err.line(),
            E::Backend(err) => return backend_line(err).into(),
            E::Limit(err) => return limit_line(*err).into(),
            E::Protocol(err) => {
                return format!("ERR Protocol error: {}", protocol_words(err)).into()
            }
            E::RequestTimeout { secs } => {
                return format!("ERR Protocol error: request not completed within {secs} seconds")
                    .into()
            }
        };
        Cow::Borrowed(fixed)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line())
    }
}

impl std::error::Error for ClientError {}

/// The concerns' errors show as the line a client gets for them.
macro_rules! shown_as_line {
    ($($ty:ty),* $(,)?) => {
        $(impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&ClientError::from(self.clone()).line())
            }
        }
        impl std::error::Error for $ty {})*
    };
}

shown_as_line!(
    KeyError,
    BackendError,
    LimitError,
    LedgerError,
    ProtocolError,
    PlanError,
    StoreError,
    TimeoutError,
    SyntaxError
);

fn lookup_line(err: &LookupError, args: &[Bytes]) -> String {
    let name = args
        .first()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .unwrap_or_default();
    match err {
        LookupError::Unknown => {
            let mut line = format!(
                "ERR unknown command '{}', with args beginning with: ",
                truncate(&name)
            );
            for arg in args.iter().skip(1).take(8) {
                line.push_str(&format!("'{}' ", truncate(&String::from_utf8_lossy(arg))));
            }
            line
        }
        LookupError::Denied(what) => format!("ERR command '{what}' is not allowed through pkv"),
        LookupError::UnknownSubcommand => {
            let sub = args
                .get(1)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .unwrap_or_default();
            unknown_subcommand(&sub, &name)
        }
        // As Redis: a subcommand's arity error names it `container|sub`.
        LookupError::Arity => match (
            crate::commands::row(&name.to_ascii_uppercase()),
            args.get(1),
        ) {
            (Some(row), Some(sub)) if row.has(crate::commands::flags::CONTAINER) => {
                arity_line(&format!("{name}|{}", String::from_utf8_lossy(sub)).to_lowercase())
            }
            _ => arity_line(&name),
        },
    }
}

/// Redis's line for an unknown subcommand `sub` of `container`.
fn unknown_subcommand(sub: &str, container: &str) -> String {
    format!(
        "ERR unknown subcommand '{}'. Try {} HELP.",
        truncate(sub),
        container.to_uppercase()
    )
}

/// Redis's line for a wrong number of arguments to `command`.
fn arity_line(command: &str) -> String {
    format!(
        "ERR wrong number of arguments for '{}' command",
        command.to_lowercase()
    )
}

/// At most 128 characters of a name a client sent, for an error line.
fn truncate(s: &str) -> String {
    s.chars().take(128).collect()
}

fn key_line(err: KeyError) -> &'static str {
    match err {
        KeyError::NotInteger => NOT_INTEGER,
        KeyError::NumKeysNotPositive => NUMKEYS_NOT_POSITIVE,
        KeyError::NumKeysTooLarge => NUMKEYS_TOO_LARGE,
        KeyError::Syntax => SYNTAX,
        KeyError::UnbalancedStreams => "ERR Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be specified.",
        KeyError::OtherDatabase => {
            "ERR DB is refused: through pkv an account has one database, DB 0"
        }
    }
}

fn backend_line(err: &BackendError) -> String {
    match err {
        BackendError::Unavailable(why) | BackendError::Lost(why) => {
            format!("ERR upstream unavailable: {why}")
        }
        BackendError::Limit(limit) => limit_line(*limit),
    }
}

fn limit_line(err: LimitError) -> String {
    match err {
        LimitError::Connections(max) => {
            format!("ERR max number of connections for this account reached (limit {max})")
        }
        LimitError::Dedicated(max) => format!(
            "ERR too many dedicated upstream connections for this account (limit {max}; MULTI/WATCH, blocking commands, subscriptions and running scripts each hold one)"
        ),
        LimitError::Buffered(max) => format!(
            "ERR unfinished requests of this account's connections passed {max} bytes; closing"
        ),
        LimitError::Output(max) => format!(
            "ERR replies waiting for this account's clients to read passed {max} bytes; closing"
        ),
    }
}

fn ledger_line(err: &LedgerError) -> String {
    match err {
        LedgerError::Backend(err) => backend_line(err),
        LedgerError::Bad(why) => format!("ERR ledger: {why}"),
        LedgerError::Overflow => "ERR quantity too large".to_owned(),
    }
}

fn plan_line(err: &PlanError) -> String {
    match err {
        PlanError::TtlTooLong { max } => format!(
            "ERR expiry above the maximum TTL of {max} seconds that storage can be bought for"
        ),
        PlanError::NotInteger => NOT_INTEGER.to_owned(),
        PlanError::Syntax => SYNTAX.to_owned(),
    }
}

/// The embedded store's lines: Redis's words for the same errors, byte for byte (the
/// embedded tests compare them with a real redis-server's).
fn store_line(err: &StoreError) -> Cow<'static, str> {
    use StoreError as S;
    let fixed: &'static str = match err {
        S::WrongType => "WRONGTYPE Operation against a key holding the wrong kind of value",
        S::NotInteger => NOT_INTEGER,
        S::NotFloat => "ERR value is not a valid float",
        S::Syntax => SYNTAX,
        S::Timeout(TimeoutError::NotFloat) => "ERR timeout is not a float or out of range",
        S::Timeout(TimeoutError::NotInteger) => "ERR timeout is not an integer or out of range",
        S::Timeout(TimeoutError::Negative) => "ERR timeout is negative",
        S::InvalidCursor => "ERR invalid cursor",
        S::NoSuchKey => "ERR no such key",
        S::NotPositive => "ERR value is out of range, must be positive",
        S::OutOfRange => "ERR value is out of range",
        S::CountBelowMin => "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
        S::NumKeysNotPositive => NUMKEYS_NOT_POSITIVE,
        S::NumKeysTooLarge => NUMKEYS_TOO_LARGE,
        S::CountNotPositive => "ERR count should be greater than 0",
        S::NegativeLimit => "ERR LIMIT can't be negative",
        S::IndexOutOfRange => "ERR index out of range",
        S::RankZero => "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list",
        S::NegativeCount => "ERR COUNT can't be negative",
        S::NegativeMaxlen => "ERR MAXLEN can't be negative",
        S::IncrOverflow => "ERR increment or decrement would overflow",
        S::DecrOverflow => "ERR decrement would overflow",
        S::IncrNotFinite => "ERR increment would produce NaN or Infinity",
        S::NotFinite => "ERR value is NaN or Infinity",
        S::HashNotInteger => "ERR hash value is not an integer",
        S::HashNotFloat => "ERR hash value is not a float",
        S::StringTooLong => "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
        S::OffsetOutOfRange => "ERR offset is out of range",
        S::LcsNotStrings => "ERR The specified keys must contain string values",
        S::LcsLenAndIdx => "ERR If you want both the length and indexes, please just use IDX.",
        S::LcsTooLarge => {
            "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len"
        }
        S::BitOffset => "ERR bit offset is not an integer or out of range",
        S::BitValue => "ERR bit is not an integer or out of range",
        S::BitArgument => "ERR The bit argument must be 1 or 0.",
        S::BitopNotOneSource => "ERR BITOP NOT must be called with a single source key.",
        S::BitfieldType => "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.",
        S::BitfieldOverflow => "ERR Invalid OVERFLOW type specified",
        S::BitfieldReadOnly => "ERR BITFIELD_RO only supports the GET subcommand",
        S::ExpireNxAndOthers => {
            "ERR NX and XX, GT or LT options at the same time are not compatible"
        }
        S::ExpireGtAndLt => "ERR GT and LT options at the same time are not compatible",
        S::CopyOtherDatabase => {
            "ERR COPY to another database is not available: the embedded store has one database"
        }
        S::SameObject => "ERR source and destination objects are the same",
        S::NanScore => "ERR resulting score is not a number (NaN)",
        S::NotFloatRange => "ERR min or max is not a float",
        S::NotLexRange => "ERR min or max not valid string range item",
        S::XxAndNx => "ERR XX and NX options at the same time are not compatible",
        S::GtLtNx => "ERR GT, LT, and/or NX options at the same time are not compatible",
        S::IncrPair => "ERR INCR option supports a single increment-element pair",
        S::LimitWithoutBy => {
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
        }
        S::WithscoresByLex => {
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX"
        }
        S::WeightNotFloat => "ERR weight value is not a float",
        S::NotHll => "WRONGTYPE Key is not a valid HyperLogLog string value.",
        S::CorruptHll => "INVALIDOBJ Corrupted HLL object detected",
        S::GeoUnit => "ERR unsupported unit provided. please use M, KM, FT, MI",
        S::GeoRadiusNegative => "ERR radius cannot be negative",
        S::GeoBoxNegative => "ERR height or width cannot be negative",
        S::GeoNoMember => "ERR could not decode requested zset member",
        S::GeoCountNotPositive => "ERR COUNT must be > 0",
        S::GeoAnyWithoutCount => "ERR the ANY argument requires COUNT argument",
        S::SortNotDouble => "ERR One or more scores can't be converted into double",
        S::GeoStoreWith { search_store } => {
            if *search_store {
                "ERR GEOSEARCHSTORE is not compatible with WITHDIST, WITHHASH and WITHCOORD options"
            } else {
                "ERR STORE option in GEORADIUS is not compatible with WITHDIST, WITHHASH and WITHCOORD options"
            }
        }
        S::GeoInvalidPair { lon, lat } => {
            return format!("ERR invalid longitude,latitude pair {lon:.6},{lat:.6}").into()
        }
        S::GeoNeedNumeric { what } => return format!("ERR need numeric {what}").into(),
        S::Abandoned => "ERR the client left before the command ran",
        S::OutOfMemory => "OOM command not allowed when used memory > 'maxmemory'.",
        S::SortGetTooLarge { values, bytes } => {
            return format!(
                "ERR SORT's GET patterns would fetch more than {values} values or {bytes} bytes; use LIMIT"
            )
            .into()
        }
        S::GeoNeedFrom { command } => return one_line(format!(
            "ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for {command}"
        )),
        S::GeoNeedBy { command } => return one_line(format!(
            "ERR exactly one of BYRADIUS and BYBOX can be specified for {command}"
        )),
        S::InvalidExpire { command } => {
            return format!("ERR invalid expire time in '{command}' command").into()
        }
        S::TooManyPicks { max } => {
            return format!(
                "ERR value is out of range: a negative count may ask for at most {max} elements"
            )
            .into()
        }
        // The rest carry what the client sent: one line, whatever it sent.
        S::Arity { command } => return one_line(arity_line(command)),
        S::NeedsUpstream { command } => return one_line(format!(
            "ERR '{}' is not available in the embedded store; it needs an upstream Redis (set PKV_UPSTREAM_URL)",
            command.to_ascii_uppercase()
        )),
        S::UnknownSubcommand { container, sub } => {
            return one_line(unknown_subcommand(sub, container))
        }
        S::Misconf(why) => {
            return one_line(format!("MISCONF Errors writing to the AOF file: {why}"))
        }
        S::UnsupportedOption { option } => {
            return one_line(format!("ERR Unsupported option {option}"))
        }
        S::ObjectUsage { sub } => return one_line(format!(
            "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try OBJECT HELP."
        )),
        S::NoInputKey { command } => return one_line(format!(
            "ERR at least 1 input key is needed for '{}' command",
            command.to_ascii_lowercase()
        )),
        S::Stream(err) => return stream_line(err),
    };
    Cow::Borrowed(fixed)
}

/// Redis 7.0's words for a stream command's refusal.
fn stream_line(err: &crate::embedded::error::StreamError) -> Cow<'static, str> {
    use crate::embedded::error::StreamError as X;
    let fixed = match err {
        X::InvalidId => "ERR Invalid stream ID specified as stream command argument",
        X::AddIdTooSmall => {
            "ERR The ID specified in XADD is equal or smaller than the target stream top item"
        }
        X::AddIdZero => "ERR The ID specified in XADD must be greater than 0-0",
        X::Exhausted => {
            "ERR The stream has exhausted the last possible ID, unable to add more items"
        }
        X::MaxlenAndMinid => {
            "ERR syntax error, MAXLEN and MINID options at the same time are not compatible"
        }
        X::MaxlenNegative => "ERR The MAXLEN argument must be >= 0.",
        X::LimitNegative => "ERR The LIMIT argument must be >= 0.",
        X::LimitWithoutStrategy => {
            "ERR syntax error, LIMIT cannot be used without specifying a trimming strategy"
        }
        X::LimitWithoutApprox => "ERR syntax error, LIMIT cannot be used without the special ~ option",
        X::TrimWithoutStrategy => "ERR syntax error, XTRIM must be called with a trimming strategy",
        X::InvalidStart => "ERR invalid start ID for the interval",
        X::InvalidEnd => "ERR invalid end ID for the interval",
        X::GroupInXread => {
            "ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead."
        }
        X::NoackInXread => {
            "ERR The NOACK option is only supported by XREADGROUP. You called XREAD instead."
        }
        X::MissingGroup => "ERR Missing GROUP option for XREADGROUP",
        X::DollarInXreadgroup => "ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set.",
        X::GreaterInXread => "ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option.",
        X::BusyGroup => "BUSYGROUP Consumer Group name already exists",
        X::XgroupNoKey => "ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.",
        X::EntriesReadNegative => "ERR value for ENTRIESREAD must be positive or -1",
        X::EntriesAddedNegative => "ERR entries_added must be positive",
        X::SetIdBelowTop => {
            "ERR The ID specified in XSETID is smaller than the target stream top item"
        }
        X::SetIdBelowGivenMaxDeleted => {
            "ERR The ID specified in XSETID is smaller than the provided max_deleted_entry_id"
        }
        X::EntriesAddedBelowLength => {
            "ERR The entries_added specified in XSETID is smaller than the target stream length"
        }
        X::NoSuchKey => "ERR no such key",
        X::CountNotPositive => "ERR COUNT must be > 0",
        X::Unblocked => "UNBLOCKED the stream key no longer exists",
        X::InvalidNumber { what } => return format!("ERR Invalid {what}").into(),
        X::UnknownXclaimOption { option } => {
            return one_line(format!("ERR Unrecognized XCLAIM option '{option}'"))
        }
        X::NoKeyOrGroup { key, group, suffix } => {
            return one_line(format!(
                "NOGROUP No such key '{key}' or consumer group '{group}'{suffix}"
            ))
        }
        X::NoGroup { key, group } => {
            return one_line(format!(
                "NOGROUP No such consumer group '{group}' for key name '{key}'"
            ))
        }
    };
    Cow::Borrowed(fixed)
}

/// `line` with any CR or LF a client sent turned into a space, as Redis does in the error
/// lines that quote it.
fn one_line(line: String) -> Cow<'static, str> {
    if line.contains(['\r', '\n']) {
        line.replace(['\r', '\n'], " ").into()
    } else {
        line.into()
    }
}

fn protocol_words(err: &ProtocolError) -> String {
    match err {
        ProtocolError::InvalidMultibulkLength => "invalid multibulk length".to_owned(),
        ProtocolError::InvalidBulkLength => "invalid bulk length".to_owned(),
        ProtocolError::ExpectedBulk(got) => format!("expected '$', got '{got}'"),
        ProtocolError::InlineTooBig => "too big inline request".to_owned(),
        ProtocolError::UnbalancedQuotes => "unbalanced quotes in request".to_owned(),
        ProtocolError::TooManyArgs(max) => {
            format!("request exceeds the maximum of {max} arguments")
        }
        ProtocolError::TooLarge(max) => format!("request exceeds the maximum size of {max} bytes"),
        ProtocolError::BadLineEnding => "bad line ending".to_owned(),
    }
}

macro_rules! from {
    ($($from:ty => $variant:ident),* $(,)?) => {
        $(impl From<$from> for ClientError {
            fn from(err: $from) -> Self {
                ClientError::$variant(err)
            }
        })*
    };
}

from! {
    KeyError => Key,
    Refusal => Refused,
    PlanError => Plan,
    BackendError => Backend,
    LimitError => Limit,
    LedgerError => Ledger,
    ProtocolError => Protocol,
    NameError => ClientName,
    StoreError => Store,
}

impl From<TimeoutError> for ClientError {
    fn from(err: TimeoutError) -> Self {
        ClientError::Store(err.into())
    }
}

impl From<SyntaxError> for ClientError {
    fn from(_: SyntaxError) -> Self {
        ClientError::Syntax
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each of the embedded store's errors; those that quote the client quote a CR
    /// LF. [`store_variant`] does not compile without an arm for a new variant: give it the
    /// next number and add the variant here.
    fn every_store_error() -> Vec<StoreError> {
        use StoreError as S;
        let sent = || "a\r\nb".to_owned();
        vec![
            S::WrongType,
            S::NotInteger,
            S::NotFloat,
            S::Syntax,
            S::Arity { command: sent() },
            S::NeedsUpstream { command: sent() },
            S::Timeout(TimeoutError::NotFloat),
            S::Timeout(TimeoutError::NotInteger),
            S::Timeout(TimeoutError::Negative),
            S::InvalidCursor,
            S::NoSuchKey,
            S::NotPositive,
            S::OutOfRange,
            S::CountBelowMin,
            S::TooManyPicks { max: 1 << 20 },
            S::NumKeysNotPositive,
            S::NumKeysTooLarge,
            S::CountNotPositive,
            S::NegativeLimit,
            S::UnknownSubcommand {
                container: "MEMORY",
                sub: sent(),
            },
            S::IndexOutOfRange,
            S::RankZero,
            S::NegativeCount,
            S::NegativeMaxlen,
            S::InvalidExpire { command: "set" },
            S::IncrOverflow,
            S::DecrOverflow,
            S::IncrNotFinite,
            S::NotFinite,
            S::HashNotInteger,
            S::HashNotFloat,
            S::StringTooLong,
            S::OffsetOutOfRange,
            S::LcsNotStrings,
            S::LcsLenAndIdx,
            S::LcsTooLarge,
            S::BitOffset,
            S::BitValue,
            S::BitArgument,
            S::BitopNotOneSource,
            S::BitfieldType,
            S::BitfieldOverflow,
            S::BitfieldReadOnly,
            S::UnsupportedOption { option: sent() },
            S::ExpireNxAndOthers,
            S::ExpireGtAndLt,
            S::ObjectUsage { sub: sent() },
            S::CopyOtherDatabase,
            S::SameObject,
            S::NanScore,
            S::NotFloatRange,
            S::NotLexRange,
            S::XxAndNx,
            S::GtLtNx,
            S::IncrPair,
            S::LimitWithoutBy,
            S::WithscoresByLex,
            S::NoInputKey { command: sent() },
            S::WeightNotFloat,
            S::NotHll,
            S::CorruptHll,
            S::GeoInvalidPair {
                lon: 200.0,
                lat: 1.0,
            },
            S::GeoUnit,
            S::GeoNeedNumeric { what: "radius" },
            S::GeoRadiusNegative,
            S::GeoBoxNegative,
            S::GeoNoMember,
            S::GeoCountNotPositive,
            S::GeoStoreWith { search_store: true },
            S::GeoNeedFrom { command: sent() },
            S::GeoNeedBy { command: sent() },
            S::GeoAnyWithoutCount,
            S::SortNotDouble,
            S::SortGetTooLarge {
                values: 1,
                bytes: 2,
            },
            S::Misconf("write: No space left on device\r\nx".into()),
            S::Abandoned,
            S::OutOfMemory,
            S::Stream(crate::embedded::error::StreamError::NoKeyOrGroup {
                key: sent(),
                group: sent(),
                suffix: "",
            }),
        ]
    }

    /// A number per variant (the three timeouts count as one).
    fn store_variant(err: &StoreError) -> usize {
        use StoreError as S;
        match err {
            S::WrongType => 0,
            S::NotInteger => 1,
            S::NotFloat => 2,
            S::Syntax => 3,
            S::Arity { .. } => 4,
            S::NeedsUpstream { .. } => 5,
            S::Timeout(_) => 6,
            S::InvalidCursor => 7,
            S::NoSuchKey => 8,
            S::NotPositive => 9,
            S::OutOfRange => 10,
            S::CountBelowMin => 11,
            S::TooManyPicks { .. } => 12,
            S::NumKeysNotPositive => 13,
            S::NumKeysTooLarge => 14,
            S::CountNotPositive => 15,
            S::NegativeLimit => 16,
            S::UnknownSubcommand { .. } => 17,
            S::IndexOutOfRange => 18,
            S::RankZero => 19,
            S::NegativeCount => 20,
            S::NegativeMaxlen => 21,
            S::InvalidExpire { .. } => 22,
            S::IncrOverflow => 23,
            S::DecrOverflow => 24,
            S::IncrNotFinite => 25,
            S::NotFinite => 26,
            S::HashNotInteger => 27,
            S::HashNotFloat => 28,
            S::StringTooLong => 29,
            S::OffsetOutOfRange => 30,
            S::LcsNotStrings => 31,
            S::LcsLenAndIdx => 32,
            S::LcsTooLarge => 33,
            S::BitOffset => 34,
            S::BitValue => 35,
            S::BitArgument => 36,
            S::BitopNotOneSource => 37,
            S::BitfieldType => 38,
            S::BitfieldOverflow => 39,
            S::BitfieldReadOnly => 40,
            S::UnsupportedOption { .. } => 41,
            S::ExpireNxAndOthers => 42,
            S::ExpireGtAndLt => 43,
            S::ObjectUsage { .. } => 44,
            S::CopyOtherDatabase => 45,
            S::SameObject => 46,
            S::NanScore => 47,
            S::NotFloatRange => 48,
            S::NotLexRange => 49,
            S::XxAndNx => 50,
            S::GtLtNx => 51,
            S::IncrPair => 52,
            S::LimitWithoutBy => 53,
            S::WithscoresByLex => 54,
            S::NoInputKey { .. } => 55,
            S::WeightNotFloat => 56,
            S::NotHll => 57,
            S::CorruptHll => 58,
            S::GeoInvalidPair { .. } => 59,
            S::GeoUnit => 60,
            S::GeoNeedNumeric { .. } => 61,
            S::GeoRadiusNegative => 62,
            S::GeoBoxNegative => 63,
            S::GeoNoMember => 64,
            S::GeoCountNotPositive => 65,
            S::GeoStoreWith { .. } => 66,
            S::GeoNeedFrom { .. } => 67,
            S::GeoNeedBy { .. } => 68,
            S::GeoAnyWithoutCount => 69,
            S::SortNotDouble => 70,
            S::SortGetTooLarge { .. } => 71,
            S::Misconf(_) => 72,
            S::Abandoned => 73,
            S::Stream(_) => 74,
            S::OutOfMemory => 75,
        }
    }

    #[test]
    fn every_store_error_is_one_line_with_a_redis_code() {
        let errors = every_store_error();
        let covered: std::collections::BTreeSet<usize> = errors.iter().map(store_variant).collect();
        let highest = covered.last().copied().unwrap_or_default();
        assert_eq!(
            covered.len(),
            highest + 1,
            "a variant is missing from the list"
        );
        for err in errors {
            let line = ClientError::from(err.clone()).line();
            let (code, words) = line.split_once(' ').unwrap_or((&line, ""));
            assert!(
                code.len() >= 3 && code.chars().all(|c| c.is_ascii_uppercase()),
                "{err:?}: {line:?}"
            );
            assert!(!words.trim().is_empty(), "{err:?}: {line:?}");
            assert!(!line.contains(['\r', '\n']), "{err:?}: {line:?}");
            assert_eq!(err.to_string(), line, "Display shows the line");
        }
    }

    #[test]
    fn store_lines_keep_redis_words() {
        let line = |err: StoreError| ClientError::from(err).line().into_owned();
        assert_eq!(
            line(StoreError::WrongType),
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        );
        assert_eq!(
            line(StoreError::Arity {
                command: "HSET".into()
            }),
            "ERR wrong number of arguments for 'hset' command"
        );
        assert_eq!(
            line(StoreError::InvalidExpire { command: "getex" }),
            "ERR invalid expire time in 'getex' command"
        );
        assert_eq!(
            line(StoreError::UnknownSubcommand {
                container: "memory",
                sub: "FOO".into()
            }),
            "ERR unknown subcommand 'FOO'. Try MEMORY HELP."
        );
        assert_eq!(
            TimeoutError::Negative.to_string(),
            "ERR timeout is negative"
        );
        assert_eq!(SyntaxError.to_string(), "ERR syntax error");
    }

    #[test]
    fn lines_start_with_their_code_and_are_one_line() {
        let errors = [
            ClientError::NoAuth,
            ClientError::WrongPass("bad signature".into()),
            ClientError::Lookup {
                err: LookupError::Unknown,
                args: vec![Bytes::from_static(b"FOO"), Bytes::from_static(b"a\r\nb")],
            },
            ClientError::Refused(Refusal::NoQuota { balance: 1_500 }),
            ClientError::Backend(BackendError::Limit(LimitError::Dedicated(16))),
            ClientError::Protocol(ProtocolError::ExpectedBulk('x')),
            ClientError::ClientName(NameError::Characters {
                what: "client name",
            }),
            ClientError::CrossSlot,
            ClientError::ClusterKeyspaceWalk,
            ClientError::InvalidCursor,
            ClientError::TooManyRedirects,
            ClientError::ClusterDown,
        ];
        for err in errors {
            let line = err.line();
            let code = line.split(' ').next().unwrap_or_default();
            assert!(
                !code.is_empty() && code.chars().all(|c| c.is_ascii_uppercase()),
                "{line}"
            );
        }
        assert_eq!(
            ClientError::Refused(Refusal::NoQuota { balance: 1_500 }).line(),
            "NOQUOTA balance exhausted: 0.000001500 left; top up with PKV.TOPUP <token>"
        );
    }
}
