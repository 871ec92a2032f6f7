//! The command table: every command pkv serves, stated once.
//!
//! Arity and key positions follow Redis 7.0's `COMMAND INFO` (a test checks them against a
//! real redis-server); flags, reply rewrites and local handling are pkv's own.

use super::spec::flags::*;
use super::spec::{CommandSpec as C, KeyRule, Local as L, Opt, ReplyRewrite as R, Takes};

/// No keys.
const NONE: &[KeyRule] = &[];
/// The key is argument 1.
const K1: &[KeyRule] = &[KeyRule::Range {
    first: 1,
    last: 1,
    step: 1,
}];
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
/// Key/value pairs: every other argument from 1 is a key.
const PAIRS: &[KeyRule] = &[KeyRule::Range {
    first: 1,
    last: -1,
    step: 2,
}];

/// The served commands.
pub static TABLE: &[C] = &[
    // === connection and handshake ===
    C::local("AUTH", -2, FREE | NO_AUTH, L::Auth),
    C::local("PING", -1, FREE | NO_AUTH | SUBSCRIBED_OK, L::Ping),
    // === strings ===
    C::fwd("GET", 2, READONLY, K1),
    C::fwd("SET", -3, WRITE, K1),
    C::fwd("MSET", -3, WRITE, PAIRS),
    C::fwd("DEL", -2, WRITE, ALL),
    C::fwd("RENAME", 3, WRITE, K12),
    // === lists ===
    C::fwd(
        "BLPOP",
        -3,
        WRITE | BLOCKING,
        &[KeyRule::Range {
            first: 1,
            last: -2,
            step: 1,
        }],
    )
    .reply(R::FirstKey),
];
