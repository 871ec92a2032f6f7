//! For the tests that hold the embedded store to Redis's replies: a seeded generator of
//! inputs, and one text for a reply from either side, so two replies compare as strings
//! and a difference prints readably.

use pkv::embedded::cmd::Error;
use pkv::protocol::frame::Frame;

/// xorshift64*: small, deterministic, good enough to pick test inputs.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    /// A number in `[lo, hi]` with six decimals, as a client would type it.
    pub fn coord(&mut self, lo: f64, hi: f64) -> String {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        format!("{:.6}", lo + (hi - lo) * unit)
    }

    /// Up to 23 random bytes.
    pub fn element(&mut self) -> Vec<u8> {
        let len = self.below(24) as usize;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// `PKV_PROPERTY_SEED`, or one from the clock; printed, so a failure can be replayed.
pub fn property_seed() -> u64 {
    let seed = std::env::var("PKV_PROPERTY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| pkv::embedded::now_ms() as u64 | 1);
    eprintln!("seed {seed} (PKV_PROPERTY_SEED replays it)");
    seed
}

/// Redis's reply as text: `nil`, `:1`, `"bulk"`, `+OK`, `[a, b]`, `-CODE`.
pub fn redis_text(reply: redis::RedisResult<redis::Value>) -> String {
    fn one(v: &redis::Value) -> String {
        match v {
            redis::Value::Nil => "nil".into(),
            redis::Value::Int(n) => format!(":{n}"),
            redis::Value::BulkString(b) => format!("{:?}", String::from_utf8_lossy(b)),
            redis::Value::Array(items) => {
                format!("[{}]", items.iter().map(one).collect::<Vec<_>>().join(", "))
            }
            redis::Value::Okay => "+OK".into(),
            redis::Value::SimpleString(s) => format!("+{s}"),
            redis::Value::ServerError(e) => format!("-{}", e.code()),
            other => format!("{other:?}"),
        }
    }
    match reply {
        Ok(v) => one(&v),
        Err(e) => format!("-{}", e.code().unwrap_or("?")),
    }
}

/// The store's reply as [`redis_text`] writes Redis's (RESP2: a double is a bulk string).
pub fn store_text(reply: Result<Frame, Error>) -> String {
    fn one(f: &Frame) -> String {
        match f {
            Frame::Null | Frame::NullArray => "nil".into(),
            Frame::Integer(n) => format!(":{n}"),
            Frame::Bulk(b) | Frame::Double(b) => format!("{:?}", String::from_utf8_lossy(b)),
            Frame::Array(items) => {
                format!("[{}]", items.iter().map(one).collect::<Vec<_>>().join(", "))
            }
            Frame::Simple(s) => format!("+{}", String::from_utf8_lossy(s)),
            other => format!("{other:?}"),
        }
    }
    match reply {
        Ok(f) => one(&f),
        Err(Error::Store(e)) => {
            let line = pkv::error::ClientError::from(e).line().into_owned();
            format!("-{}", line.split(' ').next().unwrap_or("?"))
        }
        Err(other) => format!("{other:?}"),
    }
}
