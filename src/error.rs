//! Every error line pkv's request path sends a client, written in one place.
//!
//! Each concern says what went wrong in its own type, with the facts and without wire text:
//! [`ProtocolError`] (a request's bytes), [`LookupError`] and [`KeyError`] (the command
//! table), [`BackendError`] (where commands run), [`LimitError`] (an account's bounds),
//! [`Refusal`] (the meter), [`LedgerError`], [`PlanError`] (storage bought by a write), and
//! the refusals of the request path itself below. They all become a [`ClientError`], and
//! [`ClientError::line`] is where their RESP error lines (code first, then the words) are
//! written. Replies that copy Redis's own errors keep Redis's words; those that are pkv's own
//! say what to do.
//!
//! The embedded store's command errors are the store's replies (it answers as Redis would),
//! kept beside its handlers in [`crate::embedded::cmd`].

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

use crate::backend::BackendError;
use crate::commands::{KeyError, LookupError};
use crate::meter::ledger::{format_nanos, LedgerError};
use crate::meter::storage::PlanError;
use crate::meter::Refusal;
use crate::protocol::request::ProtocolError;
use crate::server::LimitError;

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
    /// CLIENT REPLY OFF or SKIP.
    ClientReplyOnly,
    /// PKV.SESSION with a lifetime out of range.
    Lifetime {
        max: u64,
    },
    ExecWithoutMulti,
    DiscardWithoutMulti,
    NestedMulti,
    WatchInMulti,
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
    Backend(BackendError),
    Limit(LimitError),
    Ledger(LedgerError),
    Protocol(ProtocolError),
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
            E::Syntax => "ERR syntax error",
            E::OtherDatabase => "ERR pkv serves database 0 only",
            E::ClientReplyOnly => "ERR pkv supports CLIENT REPLY ON only",
            E::ExecWithoutMulti => "ERR EXEC without MULTI",
            E::DiscardWithoutMulti => "ERR DISCARD without MULTI",
            E::NestedMulti => "ERR MULTI calls can not be nested",
            E::WatchInMulti => "ERR WATCH inside MULTI is not allowed",
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
            E::Lookup { err, args } => return lookup_line(err, args).into(),
            E::Subscribed { command } => return format!(
                "ERR Can't execute '{command}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
            )
            .into(),
            E::Lifetime { max } => return format!("ERR lifetime must be 1 to {max} seconds").into(),
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
    PlanError
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
            format!(
                "ERR unknown subcommand '{}'. Try {} HELP.",
                truncate(&sub),
                name.to_uppercase()
            )
        }
        LookupError::Arity => format!(
            "ERR wrong number of arguments for '{}' command",
            name.to_lowercase()
        ),
    }
}

/// At most 128 characters of a name a client sent, for an error line.
fn truncate(s: &str) -> String {
    s.chars().take(128).collect()
}

fn key_line(err: KeyError) -> &'static str {
    match err {
        KeyError::NotInteger => "ERR value is not an integer or out of range",
        KeyError::NumKeysNotPositive => "ERR numkeys should be greater than 0",
        KeyError::NumKeysTooLarge => "ERR Number of keys can't be greater than number of args",
        KeyError::Syntax => "ERR syntax error",
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
            "ERR too many dedicated upstream connections for this account (limit {max}; MULTI/WATCH, blocking commands and subscriptions each hold one)"
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
        PlanError::NotInteger => "ERR value is not an integer or out of range".to_owned(),
        PlanError::Syntax => "ERR syntax error".to_owned(),
        PlanError::Persist => {
            "ERR command 'GETEX PERSIST' is not allowed through pkv: storage must have an end"
                .to_owned()
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
