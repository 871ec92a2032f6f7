//! pkv's own RESP value: what the backends answer and what the reply path rewrites.
//!
//! A [`Frame`] is one reply, in either protocol version. Strings are [`Bytes`], so a reply
//! read from the upstream is sliced out of the read buffer rather than copied, and a frame
//! is written to a client by [`super::reply::ReplyWriter::frame`] in the client's version
//! (RESP3-only types are flattened for RESP2 clients).
//!
//! [`Decoder`] reads frames from a byte stream (the upstream's replies). It keeps how far it
//! has checked the frame being received, so a large reply arriving over many reads is
//! scanned once, not once per read; and it allocates nothing a reply's headers announce
//! until the bytes announced have arrived.

use bytes::{Bytes, BytesMut};

/// One RESP2 or RESP3 value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Frame {
    /// `+text`
    Simple(Bytes),
    /// `-CODE message`: the whole line, code first.
    Error(Bytes),
    /// `:n`
    Integer(i64),
    /// `$len` and the bytes.
    Bulk(Bytes),
    /// The null reply: `$-1` in RESP2, `_` in RESP3.
    #[default]
    Null,
    /// RESP2's null array, `*-1` (`_` in RESP3): a timed-out `BLPOP`, an aborted `EXEC`.
    NullArray,
    /// `*n`
    Array(Vec<Frame>),
    /// `%n`: pairs in order (a flat array in RESP2).
    Map(Vec<(Frame, Frame)>),
    /// `~n` (an array in RESP2).
    Set(Vec<Frame>),
    /// `,text`: the double as its text, which is what Redis sends (a bulk string in RESP2).
    Double(Bytes),
    /// `#t` / `#f` (1 / 0 in RESP2).
    Boolean(bool),
    /// `(digits` (a bulk string in RESP2).
    BigNumber(Bytes),
    /// `=len` and `fmt:text`, the three-letter format included (the text alone in RESP2).
    Verbatim(Bytes),
    /// `>n`: out-of-band data such as a Pub/Sub message, its kind first.
    Push(Vec<Frame>),
}

impl Frame {
    /// `+OK`
    pub const OK: Frame = Frame::Simple(Bytes::from_static(b"OK"));
    /// `+QUEUED`
    pub const QUEUED: Frame = Frame::Simple(Bytes::from_static(b"QUEUED"));

    /// An error reply; `message` starts with its code (`ERR`, `WRONGTYPE`, ...). A line
    /// cannot carry CR or LF, so they become spaces.
    pub fn error(message: impl Into<String>) -> Frame {
        let mut line = message.into();
        if line.contains(['\r', '\n']) {
            line = line.replace(['\r', '\n'], " ");
        }
        Frame::Error(Bytes::from(line))
    }

    /// A bulk string.
    pub fn bulk(bytes: impl Into<Bytes>) -> Frame {
        Frame::Bulk(bytes.into())
    }

    /// A status reply.
    pub fn simple(text: &'static str) -> Frame {
        Frame::Simple(Bytes::from_static(text.as_bytes()))
    }

    /// True for an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_))
    }

    /// The code of an error reply (`ERR`, `WRONGTYPE`, ...), or `None` for other frames.
    pub fn error_code(&self) -> Option<&[u8]> {
        match self {
            Frame::Error(line) => Some(line.split(|&b| b == b' ').next().unwrap_or(line)),
            _ => None,
        }
    }

    /// The integer a frame holds: an integer reply, or a bulk or simple string of digits.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Frame::Integer(n) => Some(*n),
            Frame::Bulk(b) | Frame::Simple(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }
}

/// Why the upstream's bytes are not RESP. The connection cannot be read past this point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown reply type byte {0:#04x}")]
    Type(u8),
    #[error("malformed reply header")]
    Header,
    #[error("reply line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("reply nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// The longest line (a status, an error, a header) a reply may have.
pub const MAX_LINE: usize = 64 * 1024;
/// How deeply aggregates may nest. Redis's own replies nest a few levels.
pub const MAX_DEPTH: usize = 128;

/// Reads frames from a stream of bytes, resuming where the last call stopped.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes of the buffer already checked as part of the frame being received.
    pos: usize,
    /// Elements still expected by each aggregate opened and not yet complete.
    open: Vec<u64>,
}

impl Decoder {
    /// The next complete frame, taken off the front of `buf`; `None` until all of it has
    /// arrived (call again after more bytes are appended).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some(len) = self.scan(buf)? else {
            return Ok(None);
        };
        self.pos = 0;
        let bytes = buf.split_to(len).freeze();
        let mut reader = Reader { buf: bytes, pos: 0 };
        reader.frame(0).map(Some)
    }

    /// Checks the frame at the front of `buf` from where the last call stopped; its length
    /// once complete.
    fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        loop {
            let Some((kind, header, next)) = line_at(buf, self.pos)? else {
                return Ok(None);
            };
            let end = match kind {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => next,
                b'$' | b'=' | b'!' => match length(header)? {
                    None => next,
                    Some(n) => {
                        let end = next.checked_add(n).ok_or(DecodeError::Header)?;
                        if buf.len() < end + 2 {
                            return Ok(None);
                        }
                        if &buf[end..end + 2] != b"\r\n" {
                            return Err(DecodeError::Header);
                        }
                        end + 2
                    }
                },
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n = length(header)?.unwrap_or(0) as u64;
                    let n = match kind {
                        b'%' => n.checked_mul(2),
                        // An attribute's pairs, then the value they describe.
                        b'|' => n.checked_mul(2).and_then(|n| n.checked_add(1)),
                        _ => Some(n),
                    }
                    .ok_or(DecodeError::Header)?;
                    self.pos = next;
                    if n > 0 {
                        if self.open.len() >= MAX_DEPTH {
                            return Err(DecodeError::TooDeep);
                        }
                        self.open.push(n);
                        continue;
                    }
                    next
                }
                other => return Err(DecodeError::Type(other)),
            };
            self.pos = end;
            // One element is complete: close every aggregate it completes.
            loop {
                match self.open.last_mut() {
                    None => return Ok(Some(self.pos)),
                    Some(left) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }
}

/// A line: its type byte, the text after it, and where the next line starts.
type Line<'a> = (u8, &'a [u8], usize);

/// The line starting at `pos`; `None` while its end has not arrived.
fn line_at(buf: &[u8], pos: usize) -> Result<Option<Line<'_>>, DecodeError> {
    let Some(rest) = buf.get(pos..).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let window = &rest[..rest.len().min(MAX_LINE + 2)];
    // The line's end is looked for after its type byte, which may be any byte.
    match window[1..].windows(2).position(|w| w == b"\r\n") {
        Some(at) => Ok(Some((rest[0], &rest[1..=at], pos + at + 3))),
        None if window.len() > MAX_LINE => Err(DecodeError::LineTooLong),
        None => Ok(None),
    }
}

/// A length header: `None` for `-1` (a null), an error for anything else negative.
fn length(header: &[u8]) -> Result<Option<usize>, DecodeError> {
    if header == b"-1" {
        return Ok(None);
    }
    if header.is_empty() || header.len() > 19 || !header.iter().all(u8::is_ascii_digit) {
        return Err(DecodeError::Header);
    }
    let text = std::str::from_utf8(header).map_err(|_| DecodeError::Header)?;
    text.parse().map(Some).map_err(|_| DecodeError::Header)
}

/// Builds a frame from bytes the decoder has checked are complete.
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn line(&mut self) -> Result<(u8, Bytes), DecodeError> {
        let (kind, header, next) = line_at(&self.buf, self.pos)?.ok_or(DecodeError::Header)?;
        let start = self.pos + 1;
        let text = self.buf.slice(start..start + header.len());
        self.pos = next;
        Ok((kind, text))
    }

    fn frame(&mut self, depth: usize) -> Result<Frame, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let (kind, text) = self.line()?;
        Ok(match kind {
            b'+' => Frame::Simple(text),
            b'-' => Frame::Error(text),
            b':' => Frame::Integer(integer(&text)?),
            b'_' => Frame::Null,
            b',' => Frame::Double(text),
            b'#' => match &text[..] {
                b"t" => Frame::Boolean(true),
                b"f" => Frame::Boolean(false),
                _ => return Err(DecodeError::Header),
            },
            b'(' => Frame::BigNumber(text),
            b'$' | b'=' | b'!' => match length(&text)? {
                None => Frame::Null,
                Some(n) => {
                    let body = self.buf.slice(self.pos..self.pos + n);
                    self.pos += n + 2;
                    match kind {
                        b'$' => Frame::Bulk(body),
                        b'=' => Frame::Verbatim(body),
                        _ => Frame::Error(body),
                    }
                }
            },
            b'*' if &text[..] == b"-1" => Frame::NullArray,
            b'*' | b'~' | b'>' => {
                let items = self.items(&text, depth)?;
                match kind {
                    b'*' => Frame::Array(items),
                    b'~' => Frame::Set(items),
                    _ => Frame::Push(items),
                }
            }
            b'%' => {
                let n = length(&text)?.unwrap_or(0);
                let mut pairs = Vec::with_capacity(self.capacity(n));
                for _ in 0..n {
                    let key = self.frame(depth + 1)?;
                    pairs.push((key, self.frame(depth + 1)?));
                }
                Frame::Map(pairs)
            }
            // Attributes describe the value that follows; pkv relays the value alone.
            b'|' => {
                let n = length(&text)?.unwrap_or(0);
                for _ in 0..n.saturating_mul(2) {
                    self.frame(depth + 1)?;
                }
                self.frame(depth)?
            }
            other => return Err(DecodeError::Type(other)),
        })
    }

    fn items(&mut self, header: &[u8], depth: usize) -> Result<Vec<Frame>, DecodeError> {
        let n = length(header)?.unwrap_or(0);
        let mut items = Vec::with_capacity(self.capacity(n));
        for _ in 0..n {
            items.push(self.frame(depth + 1)?);
        }
        Ok(items)
    }

    /// Room for `n` elements, never more than the bytes left could hold (each takes at
    /// least three), whatever a header claims.
    fn capacity(&self, n: usize) -> usize {
        n.min(self.buf.len().saturating_sub(self.pos) / 3)
    }
}

fn integer(text: &[u8]) -> Result<i64, DecodeError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(DecodeError::Header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(wire: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(wire);
        let mut decoder = Decoder::default();
        let mut frames = Vec::new();
        while let Some(frame) = decoder.decode(&mut buf).expect("valid RESP") {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        frames
    }

    #[test]
    fn every_type_decodes() {
        let wire = b"+OK\r\n-ERR bad thing\r\n:-42\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n_\r\n\
            *2\r\n:1\r\n$0\r\n\r\n%1\r\n+k\r\n,1.5\r\n~1\r\n#t\r\n(123\r\n=7\r\ntxt:abc\r\n\
            >2\r\n+message\r\n$1\r\nx\r\n|1\r\n+a\r\n+b\r\n:7\r\n*0\r\n!3\r\nERR\r\n";
        let frames = decode_all(wire);
        assert_eq!(
            frames,
            vec![
                Frame::OK,
                Frame::Error("ERR bad thing".into()),
                Frame::Integer(-42),
                Frame::Bulk("abc".into()),
                Frame::Null,
                Frame::NullArray,
                Frame::Null,
                Frame::Array(vec![Frame::Integer(1), Frame::Bulk("".into())]),
                Frame::Map(vec![(
                    Frame::Simple("k".into()),
                    Frame::Double("1.5".into())
                )]),
                Frame::Set(vec![Frame::Boolean(true)]),
                Frame::BigNumber("123".into()),
                Frame::Verbatim("txt:abc".into()),
                Frame::Push(vec![
                    Frame::Simple("message".into()),
                    Frame::Bulk("x".into())
                ]),
                Frame::Integer(7),
                Frame::Array(vec![]),
                Frame::Error("ERR".into()),
            ]
        );
    }

    #[test]
    fn a_frame_arriving_byte_by_byte_is_read_once_complete() {
        let wire = b"*3\r\n$5\r\nhello\r\n*1\r\n:1\r\n%1\r\n+a\r\n$2\r\nbc\r\n+OK\r\n";
        let mut buf = BytesMut::new();
        let mut decoder = Decoder::default();
        let mut frames = Vec::new();
        for &b in wire {
            buf.extend_from_slice(&[b]);
            if let Some(frame) = decoder.decode(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1], Frame::OK);
        assert!(matches!(&frames[0], Frame::Array(items) if items.len() == 3));
    }

    #[test]
    fn headers_that_lie_allocate_nothing_and_wait() {
        let mut buf = BytesMut::from(&b"*4294967295\r\n:1\r\n"[..]);
        let mut decoder = Decoder::default();
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        let mut buf = BytesMut::from(&b"$9999999999\r\nab"[..]);
        assert_eq!(Decoder::default().decode(&mut buf), Ok(None));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for wire in [
            &b"?\r\n"[..],
            b"$-2\r\n",
            b"$3\r\nabcd\r\n",
            b":12x\r\n",
            b"#x\r\n",
            b"*+1\r\n",
            b"$99999999999999999999\r\n",
        ] {
            let mut buf = BytesMut::from(wire);
            assert!(Decoder::default().decode(&mut buf).is_err(), "{wire:?}");
        }
        // A map or attribute whose element count does not fit.
        for wire in [
            &b"%9999999999999999991\r\n"[..],
            b"|9999999999999999991\r\n",
        ] {
            let mut buf = BytesMut::from(wire);
            assert_eq!(
                Decoder::default().decode(&mut buf),
                Err(DecodeError::Header)
            );
        }
        // A line end right after the type byte: the type is `\r`, the line its text.
        let mut buf = BytesMut::from(&b"\r\n+OK\r\n"[..]);
        assert_eq!(
            Decoder::default().decode(&mut buf),
            Err(DecodeError::Type(b'\r'))
        );
        let mut buf = BytesMut::from(&b"\r\n"[..]);
        assert_eq!(Decoder::default().decode(&mut buf), Ok(None));
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        let mut buf = BytesMut::from(deep.as_bytes());
        assert_eq!(
            Decoder::default().decode(&mut buf),
            Err(DecodeError::TooDeep)
        );
        let long = vec![b'+'; MAX_LINE + 10];
        let mut buf = BytesMut::from(&long[..]);
        assert_eq!(
            Decoder::default().decode(&mut buf),
            Err(DecodeError::LineTooLong)
        );
    }

    #[test]
    fn error_lines_are_single_lines() {
        assert_eq!(
            Frame::error("ERR two\r\nlines"),
            Frame::Error("ERR two  lines".into())
        );
        assert_eq!(
            Frame::error("WRONGTYPE x").error_code(),
            Some(&b"WRONGTYPE"[..])
        );
    }
}
