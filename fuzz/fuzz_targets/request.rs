//! Fuzz target `request`: the client request parser ([`pkv::protocol::request::parse`], and
//! [`pkv::protocol::request::parse_resuming`] as a connection calls it, read after read).
//!
//! The input's first byte seeds the chunk sizes, the rest is what a client sends. The
//! stream is parsed with each limit set pkv uses (before AUTH, the default after AUTH, and a
//! tiny one that makes every limit reachable), once from a single buffer and once fed in
//! chunks as a socket would deliver it. Checked on every input:
//!
//! - nothing panics;
//! - a parse that asks for more bytes leaves the buffer exactly as it was;
//! - a request consumes exactly its `wire_len` bytes, and any shorter prefix of those bytes
//!   is not yet a request;
//! - every request stays within the limits (argument count, bytes on the wire);
//! - the same stream split differently yields the same requests and ends the same way.

#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pkv::config::Settings;
use pkv::protocol::request::{parse, parse_resuming, Limits, Progress, ProtocolError, Request};

/// The limit sets a connection can be under.
static LIMITS: LazyLock<[Limits; 3]> = LazyLock::new(|| {
    let settings = Settings::from_map(&BTreeMap::new()).expect("the default settings are valid");
    [
        Limits::UNAUTHENTICATED,
        Limits {
            max_args: settings.max_args,
            max_bytes: settings.max_request_bytes,
        },
        Limits {
            max_args: 3,
            max_bytes: 40,
        },
    ]
});

/// How a stream ended after its last whole request.
#[derive(Debug, PartialEq)]
enum End {
    /// The connection would answer this error and close.
    Error(ProtocolError),
    /// These bytes wait for more.
    NeedMore(Vec<u8>),
}

/// Everything parsing one stream produced.
#[derive(Debug, PartialEq)]
struct Outcome {
    requests: Vec<Request>,
    end: End,
}

/// Checks one request taken off the front of `frame` (the bytes it consumed).
fn check_request(req: &Request, frame: &[u8], limits: Limits) {
    assert_eq!(req.wire_len, frame.len(), "wire_len is what was consumed");
    assert!(
        req.args.len() <= limits.max_args,
        "{} args over the limit {}",
        req.args.len(),
        limits.max_args
    );
    assert!(
        req.wire_len <= limits.max_bytes,
        "{} bytes on the wire over the limit {}",
        req.wire_len,
        limits.max_bytes
    );
    let payload: usize = req.args.iter().map(|a| a.len()).sum();
    assert!(payload <= req.wire_len, "arguments larger than the frame");
    // A strict prefix of a request is never taken for a request, nor consumed.
    let mut partial = BytesMut::from(&frame[..frame.len() - 1]);
    assert_eq!(
        parse(&mut partial, limits),
        Ok(None),
        "a prefix of a request was not left waiting"
    );
    assert_eq!(
        partial.len(),
        frame.len() - 1,
        "a partial request was consumed"
    );
    // The frame alone parses to the same request, with nothing left.
    let mut alone = BytesMut::from(frame);
    assert_eq!(parse(&mut alone, limits).as_ref(), Ok(&Some(req.clone())));
    assert!(alone.is_empty());
}

/// Parses `stream` from one buffer.
fn whole(stream: &[u8], limits: Limits) -> Outcome {
    let mut buf = BytesMut::from(stream);
    let mut requests = Vec::new();
    let mut at = 0;
    loop {
        let before = buf.len();
        match parse(&mut buf, limits) {
            Ok(Some(req)) => {
                assert_eq!(buf.len() + req.wire_len, before, "consumed != wire_len");
                check_request(&req, &stream[at..at + req.wire_len], limits);
                at += req.wire_len;
                requests.push(req);
            }
            Ok(None) => {
                assert_eq!(
                    &buf[..],
                    &stream[at..],
                    "a waiting parse changed the buffer"
                );
                return Outcome {
                    requests,
                    end: End::NeedMore(buf.to_vec()),
                };
            }
            Err(e) => {
                return Outcome {
                    requests,
                    end: End::Error(e),
                }
            }
        }
    }
}

/// Parses `stream` delivered in chunks whose sizes come from `seed`, parsing after each
/// chunk as the connection loop does: resuming where the last call stopped.
fn chunked(stream: &[u8], limits: Limits, seed: u8) -> Outcome {
    let mut rng = u32::from(seed) | 0x100;
    let mut progress = Progress::default();
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    let mut fed = 0;
    while fed < stream.len() {
        // xorshift32: chunk sizes of 1 to 64 bytes.
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let n = (1 + (rng % 64) as usize).min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            let before = buf.clone();
            match parse_resuming(&mut buf, limits, &mut progress) {
                Ok(Some(req)) => {
                    assert_eq!(buf.len() + req.wire_len, before.len());
                    requests.push(req);
                }
                Ok(None) => {
                    assert_eq!(buf, before, "a waiting parse changed the buffer");
                    break;
                }
                Err(e) => {
                    return Outcome {
                        requests,
                        end: End::Error(e),
                    }
                }
            }
        }
    }
    Outcome {
        requests,
        end: End::NeedMore(buf.to_vec()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    for &limits in LIMITS.iter() {
        let one = whole(stream, limits);
        let split = chunked(stream, limits, seed);
        assert_eq!(one, split, "splitting the stream changed what was parsed");
    }
});
