//! Fuzz target `reply`: the reply path, from upstream bytes to what the client reads.
//!
//! The input is what an upstream Redis answers. It is parsed with the `redis` crate's
//! parser (the one pkv's upstream connections use), rewritten by
//! [`Namespace::rewrite_reply`] with every [`ReplyRewrite`], and written by
//! [`ReplyWriter`] in RESP2 and RESP3. Checked on every input:
//!
//! - nothing panics;
//! - the output parses back as one RESP value, and writing that value again gives the same
//!   bytes (the output is well formed and means what it says);
//! - a RESP2 client never receives a RESP3-only type;
//! - the rewrite leaks no name: every bulk string it outputs was in the upstream reply, or
//!   is a name from the account's namespace with the prefix taken off.

#![no_main]

use std::collections::HashSet;
use std::sync::LazyLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pkv::commands::ReplyRewrite;
use pkv::namespace::Namespace;
use pkv::protocol::reply::ReplyWriter;
use pkv::protocol::Proto;
use redis::Value;

const REWRITES: [ReplyRewrite; 7] = [
    ReplyRewrite::Plain,
    ReplyRewrite::Keys,
    ReplyRewrite::FirstKey,
    ReplyRewrite::Streams,
    ReplyRewrite::Channels,
    ReplyRewrite::ChannelCounts,
    ReplyRewrite::Scan,
];

/// The account whose namespace the replies are rewritten for: its prefix is `pkv:t:a:`.
static NS: LazyLock<Namespace> = LazyLock::new(|| Namespace::new("a"));

fn write(value: &Value, proto: Proto) -> BytesMut {
    let mut out = BytesMut::new();
    ReplyWriter::new(&mut out, proto).value(value);
    out
}

/// Every bulk string in `value`, at any depth.
fn bulk_strings<'a>(value: &'a Value, out: &mut Vec<&'a [u8]>) {
    match value {
        Value::BulkString(b) => out.push(b),
        Value::Array(items) | Value::Set(items) => {
            items.iter().for_each(|v| bulk_strings(v, out));
        }
        Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            bulk_strings(k, out);
            bulk_strings(v, out);
        }),
        Value::Attribute { data, attributes } => {
            bulk_strings(data, out);
            attributes.iter().for_each(|(k, v)| {
                bulk_strings(k, out);
                bulk_strings(v, out);
            });
        }
        Value::Push { data, .. } => data.iter().for_each(|v| bulk_strings(v, out)),
        _ => {}
    }
}

/// True when `value` holds a type RESP2 cannot carry.
fn has_resp3_type(value: &Value) -> bool {
    match value {
        Value::Map(_)
        | Value::Set(_)
        | Value::Double(_)
        | Value::Boolean(_)
        | Value::BigNumber(_)
        | Value::VerbatimString { .. }
        | Value::Push { .. }
        | Value::Attribute { .. } => true,
        Value::Array(items) => items.iter().any(has_resp3_type),
        _ => false,
    }
}

fn check_output(out: &[u8], proto: Proto) {
    let back = match redis::parse_redis_value(out) {
        Ok(v) => v,
        Err(e) => panic!(
            "{proto:?} output does not parse back ({e}): {:?}",
            String::from_utf8_lossy(out)
        ),
    };
    if proto == Proto::Resp2 {
        assert!(
            !has_resp3_type(&back),
            "a RESP2 client got a RESP3 type: {:?}",
            String::from_utf8_lossy(out)
        );
    }
    let again = write(&back, proto);
    assert_eq!(
        String::from_utf8_lossy(&again),
        String::from_utf8_lossy(out),
        "{proto:?} output is not what it parses back to"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(upstream) = redis::parse_redis_value(data) else {
        return;
    };
    let mut seen = Vec::new();
    bulk_strings(&upstream, &mut seen);
    let seen: HashSet<&[u8]> = seen.into_iter().collect();
    for kind in REWRITES {
        let rewritten = NS.rewrite_reply(kind, upstream.clone());
        let mut names = Vec::new();
        bulk_strings(&rewritten, &mut names);
        for name in names {
            assert!(
                seen.contains(name) || seen.contains(NS.wrap(name).as_ref()),
                "{kind:?} put a name in the reply that upstream did not send: {:?}",
                String::from_utf8_lossy(name)
            );
        }
        // A listing of names (KEYS, SCAN, PUBSUB CHANNELS) only lists the account's own.
        let listing = match (kind, &rewritten) {
            (
                ReplyRewrite::Keys | ReplyRewrite::Channels,
                Value::Array(items) | Value::Set(items),
            ) => Some(items),
            (ReplyRewrite::Scan, Value::Array(items)) => match items.get(1) {
                Some(Value::Array(keys)) => Some(keys),
                _ => None,
            },
            _ => None,
        };
        for item in listing.into_iter().flatten() {
            if let Value::BulkString(name) = item {
                assert!(
                    seen.contains(NS.wrap(name).as_ref()),
                    "{kind:?} listed a name from outside the namespace: {:?}",
                    String::from_utf8_lossy(name)
                );
            }
        }
        for proto in [Proto::Resp2, Proto::Resp3] {
            let out = write(&rewritten, proto);
            check_output(&out, proto);
        }
    }
});
