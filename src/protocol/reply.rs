//! Writing replies in the client's protocol version.
//!
//! Upstream replies arrive as [`redis::Value`]s and are written back as they are, in RESP2
//! or RESP3 depending on what the client asked for with `HELLO`. pkv's own replies use the
//! same writers, so both kinds look alike on the wire.

use std::io::Write as _;

use bytes::{BufMut, BytesMut};
use redis::Value;

use super::Proto;
use crate::redis_num::format_double;

/// Writes RESP replies into an output buffer.
pub struct ReplyWriter<'a> {
    out: &'a mut BytesMut,
    proto: Proto,
}

impl<'a> ReplyWriter<'a> {
    pub fn new(out: &'a mut BytesMut, proto: Proto) -> Self {
        ReplyWriter { out, proto }
    }

    fn line(&mut self, marker: u8, text: &[u8]) {
        self.out.reserve(text.len() + 3);
        self.out.put_u8(marker);
        // A line reply cannot carry CR or LF; replace them rather than break the stream.
        for &b in text {
            self.out
                .put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.out.put_slice(b"\r\n");
    }

    fn header(&mut self, marker: u8, n: i64) {
        let mut num = itoa_buf(n);
        self.out.reserve(num.len() + 3);
        self.out.put_u8(marker);
        self.out.put_slice(num.as_bytes());
        self.out.put_slice(b"\r\n");
        num.clear();
    }

    /// `+text`
    pub fn simple(&mut self, text: &str) {
        self.line(b'+', text.as_bytes());
    }

    /// `+OK`
    pub fn ok(&mut self) {
        self.out.put_slice(b"+OK\r\n");
    }

    /// `-CODE message`; `message` starts with the error code (`ERR`, `WRONGPASS`, ...).
    pub fn error(&mut self, message: &str) {
        self.line(b'-', message.as_bytes());
    }

    /// `:n`
    pub fn int(&mut self, n: i64) {
        self.header(b':', n);
    }

    /// `$len\r\nbytes`
    pub fn bulk(&mut self, bytes: &[u8]) {
        self.header(b'$', bytes.len() as i64);
        self.out.extend_from_slice(bytes);
        self.out.put_slice(b"\r\n");
    }

    /// The null reply: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) {
        match self.proto {
            Proto::Resp2 => self.out.put_slice(b"$-1\r\n"),
            Proto::Resp3 => self.out.put_slice(b"_\r\n"),
        }
    }

    /// The null of commands that answer with arrays (`BLPOP` timing out, `EXEC` after a
    /// failed `WATCH`): `*-1` in RESP2, `_` in RESP3.
    pub fn null_array(&mut self) {
        match self.proto {
            Proto::Resp2 => self.out.put_slice(b"*-1\r\n"),
            Proto::Resp3 => self.out.put_slice(b"_\r\n"),
        }
    }

    /// An array header for `n` elements.
    pub fn array(&mut self, n: usize) {
        self.header(b'*', n as i64);
    }

    /// A map header for `n` pairs: `%n` in RESP3, a flat array of `2n` in RESP2.
    pub fn map(&mut self, n: usize) {
        match self.proto {
            Proto::Resp2 => self.header(b'*', 2 * n as i64),
            Proto::Resp3 => self.header(b'%', n as i64),
        }
    }

    /// A push header (`>n` in RESP3, an array in RESP2), for Pub/Sub messages.
    pub fn push(&mut self, n: usize) {
        match self.proto {
            Proto::Resp2 => self.header(b'*', n as i64),
            Proto::Resp3 => self.header(b'>', n as i64),
        }
    }

    /// Writes an upstream value.
    pub fn value(&mut self, value: &Value) {
        match value {
            Value::Nil => self.null(),
            Value::Int(n) => self.int(*n),
            Value::BulkString(bytes) => self.bulk(bytes),
            Value::Array(items) => {
                self.array(items.len());
                items.iter().for_each(|v| self.value(v));
            }
            Value::SimpleString(s) => self.simple(s),
            Value::Okay => self.ok(),
            Value::Map(pairs) => {
                self.map(pairs.len());
                for (k, v) in pairs {
                    self.value(k);
                    self.value(v);
                }
            }
            Value::Attribute { data, .. } => self.value(data),
            Value::Set(items) => {
                match self.proto {
                    Proto::Resp2 => self.array(items.len()),
                    Proto::Resp3 => self.header(b'~', items.len() as i64),
                }
                items.iter().for_each(|v| self.value(v));
            }
            Value::Double(d) => match self.proto {
                Proto::Resp2 => self.bulk(format_double(*d).as_bytes()),
                Proto::Resp3 => self.line(b',', format_double(*d).as_bytes()),
            },
            Value::Boolean(b) => match self.proto {
                Proto::Resp2 => self.int(i64::from(*b)),
                Proto::Resp3 => self.out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            },
            Value::VerbatimString { format, text } => match self.proto {
                Proto::Resp2 => self.bulk(text.as_bytes()),
                Proto::Resp3 => {
                    let body = format!("{format}:{text}");
                    self.header(b'=', body.len() as i64);
                    self.out.extend_from_slice(body.as_bytes());
                    self.out.put_slice(b"\r\n");
                }
            },
            Value::BigNumber(digits) => match self.proto {
                Proto::Resp2 => self.bulk(digits),
                Proto::Resp3 => self.line(b'(', digits),
            },
            Value::Push { kind, data } => {
                self.push(data.len() + 1);
                self.bulk(kind.to_string().as_bytes());
                data.iter().for_each(|v| self.value(v));
            }
            Value::ServerError(err) => {
                let mut text = err.code().to_owned();
                if let Some(details) = err.details() {
                    text.push(' ');
                    text.push_str(details);
                }
                self.error(&text);
            }
            // `Value` is non-exhaustive; anything newer is written as an error, never dropped.
            #[allow(unreachable_patterns)]
            _ => self.error("ERR pkv cannot relay this reply type"),
        }
    }
}

/// Decimal text of `n` in a small stack buffer.
fn itoa_buf(n: i64) -> InlineNum {
    let mut num = InlineNum {
        buf: [0; 20],
        len: 0,
    };
    let _ = write!(&mut num, "{n}");
    num
}

struct InlineNum {
    buf: [u8; 20],
    len: usize,
}

impl InlineNum {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    fn len(&self) -> usize {
        self.len
    }
    fn clear(&mut self) {
        self.len = 0;
    }
}

impl std::io::Write for InlineNum {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.buf.len() - self.len;
        let n = data.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&data[..n]);
        self.len += n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(proto: Proto, value: &Value) -> Vec<u8> {
        let mut out = BytesMut::new();
        ReplyWriter::new(&mut out, proto).value(value);
        out.to_vec()
    }

    #[test]
    fn resp2_flattens_resp3_types() {
        let map = Value::Map(vec![(Value::BulkString(b"a".to_vec()), Value::Int(1))]);
        assert_eq!(encode(Proto::Resp2, &map), b"*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(encode(Proto::Resp3, &map), b"%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(encode(Proto::Resp2, &Value::Nil), b"$-1\r\n");
        assert_eq!(encode(Proto::Resp3, &Value::Nil), b"_\r\n");
        assert_eq!(encode(Proto::Resp3, &Value::Double(2.5)), b",2.5\r\n");
        assert_eq!(encode(Proto::Resp2, &Value::Double(3.0)), b"$1\r\n3\r\n");
        assert_eq!(encode(Proto::Resp3, &Value::Boolean(true)), b"#t\r\n");
    }

    #[test]
    fn simple_lines_never_break_the_stream() {
        let mut out = BytesMut::new();
        ReplyWriter::new(&mut out, Proto::Resp2).error("ERR bad\r\nthing");
        assert_eq!(&out[..], b"-ERR bad  thing\r\n");
    }
}
