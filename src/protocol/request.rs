//! Parsing client requests: RESP arrays of bulk strings, and inline commands.
//!
//! The parser never consumes a partial request: it checks whether the buffer holds a whole
//! request and, only then, splits it off and slices the arguments out of it without copying.
//! Declared lengths are checked against [`Limits`] as soon as their header is read, so a
//! client announcing a 1 GB bulk string or a million arguments is refused before pkv buffers
//! any of it. What it has checked of a partial request is kept in [`Progress`], and the next
//! read resumes there: a request costs time linear in its size however slowly it arrives.

use bytes::{Bytes, BytesMut};

/// Size limits for one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most arguments in one request, the command name included.
    pub max_args: usize,
    /// Most bytes in one request, headers included.
    pub max_bytes: usize,
}

impl Limits {
    /// Limits for a connection that has not authenticated yet: enough for
    /// `HELLO 3 AUTH user <token> SETNAME name`, little enough that strangers cannot make
    /// pkv buffer much. Redis applies similar limits to unauthenticated clients.
    pub const UNAUTHENTICATED: Limits = Limits {
        max_args: 16,
        max_bytes: 16 * 1024,
    };
}

/// Longest inline command line, its line ending included, as in Redis.
const MAX_INLINE: usize = 64 * 1024;

/// One complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The arguments; `args[0]` is the command name. Empty for a blank inline line.
    pub args: Vec<Bytes>,
    /// Bytes the request occupied on the wire.
    pub wire_len: usize,
}

/// A request that cannot be parsed. The stream is out of step after one of these, so the
/// connection answers with the error and closes, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    InvalidMultibulkLength,
    InvalidBulkLength,
    ExpectedBulk(char),
    InlineTooBig,
    UnbalancedQuotes,
    TooManyArgs(usize),
    TooLarge(usize),
    BadLineEnding,
}

/// What has been checked of the partial request at the front of a buffer. Kept with the
/// buffer between reads; it describes that buffer only, and is reset when a request is taken
/// off it or refused.
#[derive(Debug, Default)]
pub struct Progress {
    /// The argument count of a multibulk request whose header has been read.
    count: Option<usize>,
    /// Where the next unchecked argument (or the unsearched rest of an inline line) starts.
    pos: usize,
    /// Where each checked argument lies.
    spans: Vec<(usize, usize)>,
    /// Where the argument being received lies, once its header has been read.
    current: Option<(usize, usize)>,
    /// Bytes looked at since the buffer's request began: what parsing has cost so far.
    examined: usize,
}

impl Progress {
    /// Bytes looked at for the current request so far (tests check this stays linear).
    pub fn examined(&self) -> usize {
        self.examined
    }
}

/// Takes one complete request off the front of `buf`, or returns `Ok(None)` when more
/// bytes are needed. Starts over each time; a connection uses [`parse_resuming`].
pub fn parse(buf: &mut BytesMut, limits: Limits) -> Result<Option<Request>, ProtocolError> {
    parse_resuming(buf, limits, &mut Progress::default())
}

/// Spans a connection keeps room for between requests (a request with more arguments
/// allocates its own).
const SPANS_KEPT: usize = 64;

/// [`parse`] that resumes where the last call on the same buffer stopped.
pub fn parse_resuming(
    buf: &mut BytesMut,
    limits: Limits,
    progress: &mut Progress,
) -> Result<Option<Request>, ProtocolError> {
    let result = match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits, progress),
        Some(_) => parse_inline(buf, limits, progress),
    };
    if !matches!(result, Ok(None)) {
        // Starts over for the next request, keeping a small list of spans for it.
        let mut spans = std::mem::take(&mut progress.spans);
        spans.clear();
        if spans.capacity() > SPANS_KEPT {
            spans = Vec::new();
        }
        *progress = Progress {
            spans,
            ..Progress::default()
        };
    }
    result
}

/// Finds `\r\n` starting at `from`; returns the index of `\r`.
fn find_crlf(
    buf: &[u8],
    from: usize,
    max_line: usize,
    examined: &mut usize,
) -> Result<Option<usize>, ProtocolError> {
    let window = &buf[from..buf.len().min(from + max_line + 2)];
    *examined += window.len();
    match window.iter().position(|&b| b == b'\n') {
        Some(nl) if nl > 0 && window[nl - 1] == b'\r' => Ok(Some(from + nl - 1)),
        Some(_) => Err(ProtocolError::BadLineEnding),
        None if window.len() >= max_line + 2 => Err(ProtocolError::BadLineEnding),
        None => Ok(None),
    }
}

/// Parses a length header such as `*3` or `$5` (the marker already skipped).
fn parse_len(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let (neg, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some(if neg { -n } else { n })
}

fn parse_multibulk(
    buf: &mut BytesMut,
    limits: Limits,
    p: &mut Progress,
) -> Result<Option<Request>, ProtocolError> {
    let count = match p.count {
        Some(count) => count,
        None => {
            let Some(end) = find_crlf(buf, 1, 20, &mut p.examined)? else {
                return Ok(None);
            };
            let count = parse_len(&buf[1..end]).ok_or(ProtocolError::InvalidMultibulkLength)?;
            if count > limits.max_args as i64 {
                return Err(ProtocolError::TooManyArgs(limits.max_args));
            }
            if count <= 0 {
                let _ = buf.split_to(end + 2);
                return Ok(Some(Request {
                    args: Vec::new(),
                    wire_len: end + 2,
                }));
            }
            p.pos = end + 2;
            p.spans.clear();
            p.spans.reserve((count as usize).min(SPANS_KEPT));
            p.count = Some(count as usize);
            count as usize
        }
    };
    if count > limits.max_args {
        return Err(ProtocolError::TooManyArgs(limits.max_args));
    }
    // Check that the whole request is here, recording where each argument lies; an
    // argument is checked once, however many reads it takes to arrive.
    while p.spans.len() < count {
        let (start, stop) = match p.current {
            Some(span) => span,
            None => {
                let pos = p.pos;
                if pos >= buf.len() {
                    return Ok(None);
                }
                if buf[pos] != b'$' {
                    return Err(ProtocolError::ExpectedBulk(char::from(buf[pos])));
                }
                let Some(end) = find_crlf(buf, pos + 1, 20, &mut p.examined)? else {
                    return Ok(None);
                };
                let len = parse_len(&buf[pos + 1..end]).ok_or(ProtocolError::InvalidBulkLength)?;
                if len < 0 {
                    return Err(ProtocolError::InvalidBulkLength);
                }
                let start = end + 2;
                let stop = start.saturating_add(len as usize);
                if stop.saturating_add(2) > limits.max_bytes {
                    return Err(ProtocolError::TooLarge(limits.max_bytes));
                }
                p.current = Some((start, stop));
                (start, stop)
            }
        };
        if buf.len() < stop + 2 {
            return Ok(None);
        }
        p.current = None;
        p.examined += 2;
        if &buf[stop..stop + 2] != b"\r\n" {
            return Err(ProtocolError::BadLineEnding);
        }
        p.spans.push((start, stop));
        p.pos = stop + 2;
    }
    let pos = p.pos;
    let frame = buf.split_to(pos).freeze();
    let args = p.spans.iter().map(|&(a, b)| frame.slice(a..b)).collect();
    Ok(Some(Request {
        args,
        wire_len: pos,
    }))
}

fn parse_inline(
    buf: &mut BytesMut,
    limits: Limits,
    p: &mut Progress,
) -> Result<Option<Request>, ProtocolError> {
    // The whole line, its `\n` included, counts against the limit.
    let max_line = MAX_INLINE.min(limits.max_bytes);
    // Only the bytes not searched by an earlier call are searched for the line's end.
    let from = p.pos.min(buf.len());
    let upto = buf.len().min(max_line);
    let found = buf[from..upto.max(from)]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| from + i);
    p.examined += upto.saturating_sub(from);
    let Some(nl) = found else {
        p.pos = upto.max(from);
        return if buf.len() >= max_line {
            Err(ProtocolError::InlineTooBig)
        } else {
            Ok(None)
        };
    };
    let line = buf.split_to(nl + 1).freeze();
    let text = line.strip_suffix(b"\n").unwrap_or(&line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let args = split_inline(text)?;
    if args.len() > limits.max_args {
        return Err(ProtocolError::TooManyArgs(limits.max_args));
    }
    Ok(Some(Request {
        args,
        wire_len: nl + 1,
    }))
}

/// Splits an inline command line into words, honouring double quotes (with `\n`, `\t`,
/// `\"`, `\\` and `\xHH` escapes) and single quotes, the way redis-cli writes them.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        let mut word = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(ProtocolError::UnbalancedQuotes),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let (byte, used) = unescape(&line[i + 1..]);
                            word.push(byte);
                            i += 1 + used;
                        }
                        Some(&b) => {
                            word.push(b);
                            i += 1;
                        }
                    }
                }
                if line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(ProtocolError::UnbalancedQuotes),
                        Some(b'\'') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                            word.push(b'\'');
                            i += 2;
                        }
                        Some(&b) => {
                            word.push(b);
                            i += 1;
                        }
                    }
                }
                if line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    word.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(word));
    }
    Ok(args)
}

/// Decodes one backslash escape; returns the byte and how many bytes after `\` it used.
fn unescape(rest: &[u8]) -> (u8, usize) {
    match rest {
        [b'x', h, l, ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
            let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            (hex(*h) * 16 + hex(*l), 3)
        }
        [b'n', ..] => (b'\n', 1),
        [b'r', ..] => (b'\r', 1),
        [b't', ..] => (b'\t', 1),
        [b'b', ..] => (8, 1),
        [b'a', ..] => (7, 1),
        [c, ..] => (*c, 1),
        [] => (b'\\', 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: Limits = Limits {
        max_args: 1024,
        max_bytes: 1 << 20,
    };

    fn words(req: &Request) -> Vec<&[u8]> {
        req.args.iter().map(|a| a.as_ref()).collect()
    }

    #[test]
    fn parses_pipelined_requests_one_at_a_time() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n"[..]);
        let first = parse(&mut buf, BIG).unwrap().unwrap();
        assert_eq!(words(&first), vec![&b"GET"[..], b"k"]);
        assert_eq!(first.wire_len, 20);
        let second = parse(&mut buf, BIG).unwrap().unwrap();
        assert_eq!(words(&second), vec![&b"PING"[..]]);
        assert!(buf.is_empty());
    }

    #[test]
    fn waits_for_partial_requests_without_consuming() {
        let whole = b"*2\r\n$3\r\nSET\r\n$5\r\nhello\r\n";
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(parse(&mut buf, BIG).unwrap(), None, "cut at {cut}");
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn refuses_oversized_declarations_before_buffering() {
        let mut buf = BytesMut::from(&b"*1\r\n$1000000000\r\n"[..]);
        assert_eq!(parse(&mut buf, BIG), Err(ProtocolError::TooLarge(1 << 20)));
        let mut buf = BytesMut::from(&b"*1000000\r\n"[..]);
        assert_eq!(parse(&mut buf, BIG), Err(ProtocolError::TooManyArgs(1024)));
    }

    #[test]
    fn refuses_malformed_streams() {
        for bad in [
            &b"*x\r\n"[..],
            b"*1\r\n+OK\r\n",
            b"*1\r\n$-5\r\n",
            b"*1\r\n$3\r\nabcde\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(
                parse(&mut buf, BIG).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Feeds `whole` one byte at a time, as a trickling client sends it, and returns the
    /// request and the bytes the parser looked at.
    fn trickle(whole: &[u8], limits: Limits) -> (Request, usize) {
        let mut buf = BytesMut::new();
        let mut progress = Progress::default();
        for (i, byte) in whole.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            // What the calls before this one looked at (the last call adds a few bytes).
            let examined = progress.examined();
            if let Some(req) = parse_resuming(&mut buf, limits, &mut progress).unwrap() {
                assert_eq!(i + 1, whole.len(), "request recognised too early");
                assert!(buf.is_empty());
                return (req, examined);
            }
        }
        panic!("request never completed");
    }

    #[test]
    fn a_trickled_request_is_parsed_in_linear_time() {
        let limits = Limits {
            max_args: 1 << 20,
            max_bytes: 64 << 20,
        };
        // 65,536 one-byte arguments (458,764 bytes), one byte per read: starting over on
        // every read would look at about 458,764^2 / 2, some 10^11 bytes.
        let mut whole = b"*65536\r\n$5\r\nRPUSH\r\n$1\r\nk\r\n".to_vec();
        for _ in 0..65534 {
            whole.extend_from_slice(b"$1\r\na\r\n");
        }
        let (req, examined) = trickle(&whole, limits);
        assert_eq!(req.args.len(), 65536);
        assert_eq!(req.wire_len, whole.len());
        assert!(
            examined <= 4 * whole.len(),
            "parsing {} bytes looked at {examined} bytes",
            whole.len()
        );
        // An inline line, likewise.
        let mut line = b"SET k ".to_vec();
        line.extend(std::iter::repeat_n(b'v', 60_000));
        line.extend_from_slice(b"\r\n");
        let (req, examined) = trickle(&line, limits);
        assert_eq!(req.args.len(), 3);
        assert!(examined <= 2 * line.len(), "{examined} for {}", line.len());
    }

    #[test]
    fn resuming_gives_what_parsing_at_once_gives() {
        let whole = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\nPING\r\n*1\r\n$4\r\nPING\r\n";
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            let mut progress = Progress::default();
            let mut got = Vec::new();
            while let Some(req) = parse_resuming(&mut buf, BIG, &mut progress).unwrap() {
                got.push(req);
            }
            buf.extend_from_slice(&whole[cut..]);
            while let Some(req) = parse_resuming(&mut buf, BIG, &mut progress).unwrap() {
                got.push(req);
            }
            let mut all = BytesMut::from(&whole[..]);
            let mut expected = Vec::new();
            while let Some(req) = parse(&mut all, BIG).unwrap() {
                expected.push(req);
            }
            assert_eq!(got, expected, "cut at {cut}");
        }
    }

    #[test]
    fn parses_inline_commands_with_quotes() {
        let mut buf = BytesMut::from(&b"set k \"a b\\x41\" 'c d'\r\nPING\n"[..]);
        let req = parse(&mut buf, BIG).unwrap().unwrap();
        assert_eq!(words(&req), vec![&b"set"[..], b"k", b"a bA", b"c d"]);
        let req = parse(&mut buf, BIG).unwrap().unwrap();
        assert_eq!(words(&req), vec![&b"PING"[..]]);
        let mut buf = BytesMut::from(&b"get \"k\r\n"[..]);
        assert_eq!(parse(&mut buf, BIG), Err(ProtocolError::UnbalancedQuotes));
    }

    /// Found by the `request` fuzz target: an inline line of `max_bytes + 1` bytes, its
    /// `\n` included, was accepted, one byte over the limit.
    #[test]
    fn an_inline_line_counts_its_line_ending_against_the_limit() {
        let line = |len: usize| {
            let mut line = vec![b'x'; len - 2];
            line.extend_from_slice(b"\r\n");
            BytesMut::from(&line[..])
        };
        let tiny = Limits {
            max_args: 3,
            max_bytes: 40,
        };
        for limits in [tiny, Limits::UNAUTHENTICATED] {
            let most = limits.max_bytes;
            let req = parse(&mut line(most), limits).unwrap().unwrap();
            assert_eq!(req.wire_len, most);
            assert_eq!(
                parse(&mut line(most + 1), limits),
                Err(ProtocolError::InlineTooBig),
                "a {}-byte line under a {most}-byte limit",
                most + 1
            );
            // Without its line ending yet, a line at the limit can no longer become a
            // request either.
            let mut waiting = BytesMut::from(&vec![b'x'; most][..]);
            assert_eq!(
                parse(&mut waiting, limits),
                Err(ProtocolError::InlineTooBig)
            );
            let mut waiting = BytesMut::from(&vec![b'x'; most - 1][..]);
            assert_eq!(parse(&mut waiting, limits), Ok(None));
        }
    }
}
