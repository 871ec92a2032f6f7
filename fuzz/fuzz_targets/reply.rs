//! Fuzz target `reply`: the reply path, from upstream bytes to what the client reads.
//!
//! The input is what an upstream Redis answers. It is read by pkv's upstream [`Decoder`]
//! (once whole, and once in two parts split at a point the input chooses, as it would
//! arrive over two reads), rewritten by [`Namespace::rewrite_reply`] with every
//! [`ReplyRewrite`], and written by [`ReplyWriter`] in RESP2 and RESP3. Checked on every
//! input:
//!
//! - nothing panics;
//! - the decoder reads the same frames however the bytes arrive;
//! - the output decodes back as one frame, and writing that frame again gives the same
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
use pkv::protocol::frame::{DecodeError, Decoder, Frame};
use pkv::protocol::reply::ReplyWriter;
use pkv::protocol::Proto;

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

fn write(frame: &Frame, proto: Proto) -> BytesMut {
    let mut out = BytesMut::new();
    ReplyWriter::new(&mut out, proto).frame(frame);
    out
}

/// Every bulk string in `frame`, at any depth.
fn bulk_strings<'a>(frame: &'a Frame, out: &mut Vec<&'a [u8]>) {
    match frame {
        Frame::Bulk(b) => out.push(b),
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
            items.iter().for_each(|f| bulk_strings(f, out));
        }
        Frame::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            bulk_strings(k, out);
            bulk_strings(v, out);
        }),
        _ => {}
    }
}

/// True when `frame` holds a type RESP2 cannot carry.
fn has_resp3_type(frame: &Frame) -> bool {
    match frame {
        Frame::Map(_)
        | Frame::Set(_)
        | Frame::Double(_)
        | Frame::Boolean(_)
        | Frame::BigNumber(_)
        | Frame::Verbatim(_)
        | Frame::Push(_) => true,
        Frame::Array(items) => items.iter().any(has_resp3_type),
        _ => false,
    }
}

/// Every frame in `wire`, read in one go or in two reads split at `split`.
fn decode(wire: &[u8], split: Option<usize>) -> Result<Vec<Frame>, DecodeError> {
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let parts = match split {
        Some(at) => vec![&wire[..at], &wire[at..]],
        None => vec![wire],
    };
    for part in parts {
        buf.extend_from_slice(part);
        while let Some(frame) = decoder.decode(&mut buf)? {
            frames.push(frame);
        }
    }
    Ok(frames)
}

fn check_output(out: &[u8], proto: Proto) {
    let back = match decode(out, None) {
        Ok(frames) if frames.len() == 1 => frames.into_iter().next().unwrap(),
        other => panic!(
            "{proto:?} output does not decode back as one frame ({other:?}): {:?}",
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
        "{proto:?} output is not what it decodes back to"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, wire)) = data.split_first() else {
        return;
    };
    let whole = decode(wire, None);
    let split_at = usize::from(split).min(wire.len());
    let parts = decode(wire, Some(split_at));
    match (&whole, &parts) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "frames differ when read in two parts"),
        // An error may be found in the first part before the frames after it are read.
        (Err(_), Err(_)) => {}
        (Ok(a), Err(e)) | (Err(e), Ok(a)) if a.is_empty() => {
            panic!("one read fails ({e}) where the other reads nothing")
        }
        _ => {}
    }
    let Some(upstream) = whole.ok().and_then(|frames| frames.into_iter().next()) else {
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
                Frame::Array(items) | Frame::Set(items),
            ) => Some(items),
            (ReplyRewrite::Scan, Frame::Array(items)) => match items.get(1) {
                Some(Frame::Array(keys)) => Some(keys),
                _ => None,
            },
            _ => None,
        };
        for item in listing.into_iter().flatten() {
            if let Frame::Bulk(name) = item {
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
