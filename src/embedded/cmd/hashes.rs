//! Hash commands: HSET and friends, HINCRBY/HINCRBYFLOAT, HRANDFIELD and HSCAN.
//!
//! A hash is a `HashMap` of field to value. Commands that change a hash change it in place
//! (it keeps its expiry); a hash left empty is deleted by the keyspace.

use std::collections::HashMap;

use redis::Value;

use super::sets::{pick, rand_count, random_below, scan_cursor, scan_options};
use super::{arity_error, bulk, int, int_arg, is, ok, wrongtype, Command, Cx, Error, Kind, Reply};
use crate::embedded::data::{Data, Entry};
use crate::embedded::glob;

pub const COMMANDS: &[Command] = &[
    Command {
        name: "HSET",
        kind: Kind::Write,
        run: hset,
    },
    Command {
        name: "HMSET",
        kind: Kind::Write,
        run: hset,
    },
    Command {
        name: "HSETNX",
        kind: Kind::Write,
        run: hsetnx,
    },
    Command {
        name: "HGET",
        kind: Kind::Read,
        run: hget,
    },
    Command {
        name: "HMGET",
        kind: Kind::Read,
        run: hmget,
    },
    Command {
        name: "HDEL",
        kind: Kind::Write,
        run: hdel,
    },
    Command {
        name: "HLEN",
        kind: Kind::Read,
        run: hlen,
    },
    Command {
        name: "HSTRLEN",
        kind: Kind::Read,
        run: hstrlen,
    },
    Command {
        name: "HEXISTS",
        kind: Kind::Read,
        run: hexists,
    },
    Command {
        name: "HKEYS",
        kind: Kind::Read,
        run: hkeys,
    },
    Command {
        name: "HVALS",
        kind: Kind::Read,
        run: hvals,
    },
    Command {
        name: "HGETALL",
        kind: Kind::Read,
        run: hgetall,
    },
    Command {
        name: "HINCRBY",
        kind: Kind::Write,
        run: hincrby,
    },
    Command {
        name: "HINCRBYFLOAT",
        kind: Kind::Write,
        run: hincrbyfloat,
    },
    Command {
        name: "HRANDFIELD",
        kind: Kind::Read,
        run: hrandfield,
    },
    Command {
        name: "HSCAN",
        kind: Kind::Read,
        run: hscan,
    },
];

type Hash = HashMap<Vec<u8>, Vec<u8>>;

/// Runs `f` on the hash under `key` (`None` when there is no key); WRONGTYPE for another
/// type.
fn read_hash<R>(cx: &Cx, key: &[u8], f: impl FnOnce(Option<&Hash>) -> R) -> Result<R, Error> {
    cx.read(key, |entry| match entry.map(|e| &e.data) {
        None => Ok(f(None)),
        Some(Data::Hash(hash)) => Ok(f(Some(hash))),
        Some(_) => wrongtype(),
    })
}

/// The hash in `entry`, created empty when there is none; WRONGTYPE for another type.
fn hash_or_new(entry: &mut Option<Entry>) -> Result<&mut Hash, Error> {
    let entry = entry.get_or_insert_with(|| Entry::new(Data::Hash(HashMap::new())));
    match &mut entry.data {
        Data::Hash(hash) => Ok(hash),
        _ => wrongtype(),
    }
}

/// `HSET key field value [field value ...]` (new fields) and `HMSET` (OK).
fn hset(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    if args.len() < 4 || !args.len().is_multiple_of(2) {
        return Err(arity_error(&String::from_utf8_lossy(args[0])));
    }
    let added = cx.write(args[1], |entry| {
        let hash = hash_or_new(entry)?;
        let mut added = 0;
        for pair in args[2..].chunks_exact(2) {
            if hash.insert(pair[0].to_vec(), pair[1].to_vec()).is_none() {
                added += 1;
            }
        }
        Ok::<_, Error>(added)
    })?;
    if is(args[0], "HMSET") {
        ok()
    } else {
        int(added)
    }
}

/// `HSETNX key field value`: sets the field only if it is new.
fn hsetnx(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.write(args[1], |entry| {
        let hash = hash_or_new(entry)?;
        if hash.contains_key(args[2]) {
            return int(0);
        }
        hash.insert(args[2].to_vec(), args[3].to_vec());
        int(1)
    })
}

fn hget(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_hash(cx, args[1], |hash| {
        match hash.and_then(|h| h.get(args[2])) {
            Some(value) => bulk(value.clone()),
            None => Value::Nil,
        }
    })
}

fn hmget(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_hash(cx, args[1], |hash| {
        let values = args[2..]
            .iter()
            .map(|field| match hash.and_then(|h| h.get(*field)) {
                Some(value) => bulk(value.clone()),
                None => Value::Nil,
            });
        Value::Array(values.collect())
    })
}

/// `HDEL key field [field ...]`: how many fields were removed.
fn hdel(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.write(args[1], |entry| match entry.as_mut().map(|e| &mut e.data) {
        None => int(0),
        Some(Data::Hash(hash)) => {
            let removed = args[2..]
                .iter()
                .filter(|field| hash.remove(**field).is_some())
                .count();
            int(removed as i64)
        }
        Some(_) => wrongtype(),
    })
}

fn hlen(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_hash(cx, args[1], |hash| {
        Value::Int(hash.map_or(0, |h| h.len() as i64))
    })
}

fn hstrlen(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_hash(cx, args[1], |hash| {
        Value::Int(
            hash.and_then(|h| h.get(args[2]))
                .map_or(0, |v| v.len() as i64),
        )
    })
}

fn hexists(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_hash(cx, args[1], |hash| {
        Value::Int(i64::from(hash.is_some_and(|h| h.contains_key(args[2]))))
    })
}

fn hkeys(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_hash(cx, args[1], |hash| {
        Value::Array(
            hash.into_iter()
                .flatten()
                .map(|(f, _)| bulk(f.clone()))
                .collect(),
        )
    })
}

fn hvals(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_hash(cx, args[1], |hash| {
        Value::Array(
            hash.into_iter()
                .flatten()
                .map(|(_, v)| bulk(v.clone()))
                .collect(),
        )
    })
}

/// `HGETALL key`: a map (a flat field/value array in RESP2).
fn hgetall(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_hash(cx, args[1], |hash| {
        let pairs = hash.into_iter().flatten();
        Value::Map(
            pairs
                .map(|(f, v)| (bulk(f.clone()), bulk(v.clone())))
                .collect(),
        )
    })
}

/// `HINCRBY key field increment`.
fn hincrby(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let increment = int_arg(args[3])?;
    cx.write(args[1], |entry| {
        let hash = hash_or_new(entry)?;
        let current = match hash.get(args[2]) {
            None => 0,
            Some(raw) => crate::commands::parse_redis_int(raw)
                .ok_or_else(|| Error::from("ERR hash value is not an integer"))?,
        };
        let value = current
            .checked_add(increment)
            .ok_or_else(|| Error::from("ERR increment or decrement would overflow"))?;
        hash.insert(args[2].to_vec(), value.to_string().into_bytes());
        int(value)
    })
}

/// `HINCRBYFLOAT key field increment`. Redis adds in `long double` (x87 80-bit) and writes
/// the sum with 17 decimals, trailing zeros removed; [`long_double`] does the same.
fn hincrbyfloat(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let increment = match long_double::parse(args[3]) {
        None => return Err(super::NOT_FLOAT.into()),
        Some(x) if !x.is_finite() => return Err("ERR value is NaN or Infinity".into()),
        Some(x) => x,
    };
    cx.write(args[1], |entry| {
        let hash = hash_or_new(entry)?;
        let current = match hash.get(args[2]) {
            None => long_double::Ld::ZERO,
            Some(raw) => long_double::parse(raw)
                .ok_or_else(|| Error::from("ERR hash value is not a float"))?,
        };
        let sum = current.add(increment);
        if !sum.is_finite() {
            return Err("ERR increment would produce NaN or Infinity".into());
        }
        let text = sum.to_human();
        hash.insert(args[2].to_vec(), text.clone().into_bytes());
        Ok(bulk(text))
    })
}

/// `HRANDFIELD key [count [WITHVALUES]]`.
fn hrandfield(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let Some(raw_count) = args.get(2) else {
        return read_hash(cx, args[1], |hash| match hash.filter(|h| !h.is_empty()) {
            None => Value::Nil,
            Some(h) => h
                .keys()
                .nth(random_below(h.len()))
                .map_or(Value::Nil, |f| bulk(f.clone())),
        });
    };
    let count = rand_count(raw_count)?;
    let with_values = match args.get(3) {
        None => false,
        Some(word) if args.len() == 4 && is(word, "WITHVALUES") => true,
        Some(_) => return Err(super::SYNTAX.into()),
    };
    if with_values && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&count) {
        return Err("ERR value is out of range".into());
    }
    let resp3 = cx.resp3();
    read_hash(cx, args[1], |hash| {
        let Some(hash) = hash.filter(|_| count != 0) else {
            return Ok(Value::Array(Vec::new()));
        };
        let pairs: Vec<(&Vec<u8>, &Vec<u8>)> = hash.iter().collect();
        let picked = pick(&pairs, count)?;
        let mut reply = Vec::with_capacity(picked.len() * if with_values { 2 } else { 1 });
        for (field, value) in picked {
            match (with_values, resp3) {
                (false, _) => reply.push(bulk(field.clone())),
                (true, true) => {
                    reply.push(Value::Array(vec![bulk(field.clone()), bulk(value.clone())]))
                }
                (true, false) => {
                    reply.push(bulk(field.clone()));
                    reply.push(bulk(value.clone()));
                }
            }
        }
        Ok(Value::Array(reply))
    })?
}

/// `HSCAN key cursor [MATCH pattern] [COUNT count]`: the whole hash in one page, as Redis
/// answers for small hashes: cursor `0` and a flat field/value list.
fn hscan(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    scan_cursor(args[2])?;
    // Redis reads the options only once it has found the hash.
    let options = scan_options(&args[3..]);
    let items = read_hash(cx, args[1], |hash| {
        let Some(hash) = hash else {
            return Ok::<_, Error>(Vec::new());
        };
        let pattern = options?;
        let mut items = Vec::new();
        for (field, value) in hash {
            if pattern.is_none_or(|p| glob::matches(p, field)) {
                items.push(bulk(field.clone()));
                items.push(bulk(value.clone()));
            }
        }
        Ok(items)
    })??;
    Ok(Value::Array(vec![bulk("0"), Value::Array(items)]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::Store;
    use crate::protocol::Proto;

    fn run(store: &Store, proto: Proto, line: &str) -> Reply {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        store.run(proto, &args)
    }

    #[test]
    fn hset_counts_pairs() {
        let store = Store::default();
        assert_eq!(
            run(&store, Proto::Resp2, "HSET h a 1 b 2 a 3"),
            Ok(Value::Int(2))
        );
        assert_eq!(run(&store, Proto::Resp2, "HGET h a"), Ok(bulk("3")));
        assert!(run(&store, Proto::Resp2, "HSET h a 1 b").is_err());
        assert_eq!(run(&store, Proto::Resp2, "HMSET h c 1"), Ok(Value::Okay));
        assert_eq!(run(&store, Proto::Resp2, "HLEN h"), Ok(Value::Int(3)));
    }

    #[test]
    fn reply_shapes_follow_redis() {
        let store = Store::default();
        run(&store, Proto::Resp3, "HSET h a 1 b 2").unwrap();
        assert!(
            matches!(run(&store, Proto::Resp3, "HGETALL h"), Ok(Value::Map(m)) if m.len() == 2)
        );
        assert!(
            matches!(run(&store, Proto::Resp3, "HKEYS h"), Ok(Value::Array(m)) if m.len() == 2)
        );
        let Ok(Value::Array(pairs)) = run(&store, Proto::Resp3, "HRANDFIELD h -3 WITHVALUES")
        else {
            panic!("not an array");
        };
        assert_eq!(pairs.len(), 3);
        assert!(pairs
            .iter()
            .all(|p| matches!(p, Value::Array(pair) if pair.len() == 2)));
        assert!(matches!(
            run(&store, Proto::Resp2, "HRANDFIELD h -3 WITHVALUES"),
            Ok(Value::Array(flat)) if flat.len() == 6
        ));
        assert_eq!(
            run(&store, Proto::Resp3, "HRANDFIELD nokey"),
            Ok(Value::Nil)
        );
        assert_eq!(
            run(&store, Proto::Resp3, "HRANDFIELD nokey 2"),
            Ok(Value::Array(vec![]))
        );
    }

    #[test]
    fn increments() {
        let store = Store::default();
        assert_eq!(
            run(&store, Proto::Resp2, "HINCRBY h n 9223372036854775807"),
            Ok(Value::Int(i64::MAX))
        );
        assert!(run(&store, Proto::Resp2, "HINCRBY h n 1").is_err());
        assert_eq!(
            run(&store, Proto::Resp2, "HINCRBYFLOAT h f 0.1"),
            Ok(bulk("0.1"))
        );
        assert_eq!(
            run(&store, Proto::Resp2, "HINCRBYFLOAT h f 0.2"),
            Ok(bulk("0.3"))
        );
        assert!(run(&store, Proto::Resp2, "HINCRBY h f 1").is_err());
        assert!(run(&store, Proto::Resp2, "HINCRBYFLOAT h f inf").is_err());
        assert_eq!(run(&store, Proto::Resp2, "HGET h f"), Ok(bulk("0.3")));
    }
}

/// Redis's `long double` arithmetic for HINCRBYFLOAT: the x87 80-bit extended format
/// (64-bit mantissa, 15-bit exponent), emulated exactly so that sums and their text match
/// what redis-server on x86-64 answers (`0.1 + 0.2` is `0.3` there, not
/// `0.30000000000000004`).
///
/// Parsing follows `strtold` as Redis calls it (decimal and hexadecimal notation, `inf`,
/// `infinity`; NaN, overflow and underflow to zero refused), rounding to nearest, ties to
/// even; the text is `printf("%.17Lf")` with trailing zeros removed.
pub(super) mod long_double {
    use std::cmp::Ordering;

    /// Exponent of a mantissa's lowest bit for the smallest numbers (subnormals).
    const EMIN: i64 = -16445;
    /// Exponent of a mantissa's lowest bit for the largest numbers.
    const EMAX: i64 = 16320;
    /// Redis refuses float texts this long (its conversion buffer).
    const MAX_TEXT: usize = 5 * 1024;

    /// An extended-precision number: `mant * 2^exp` (zero when `mant` is 0), or an
    /// infinity. NaN never appears.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Ld {
        neg: bool,
        mant: u64,
        exp: i64,
        inf: bool,
    }

    impl Ld {
        pub const ZERO: Ld = Ld {
            neg: false,
            mant: 0,
            exp: 0,
            inf: false,
        };

        fn infinity(neg: bool) -> Ld {
            Ld {
                neg,
                mant: 0,
                exp: 0,
                inf: true,
            }
        }

        pub fn is_finite(&self) -> bool {
            !self.inf
        }

        /// The sum, rounded to nearest (ties to even).
        pub fn add(self, other: Ld) -> Ld {
            if self.inf || other.inf {
                // Both infinite with opposite signs would be NaN; increments are finite.
                return if self.inf { self } else { other };
            }
            if other.mant == 0 {
                return self;
            }
            if self.mant == 0 {
                return other;
            }
            let low = self.exp.min(other.exp);
            let a = Big::from_u128(u128::from(self.mant)).shl((self.exp - low) as u64);
            let b = Big::from_u128(u128::from(other.mant)).shl((other.exp - low) as u64);
            let (neg, magnitude) = if self.neg == other.neg {
                (self.neg, a.add(&b))
            } else {
                match a.cmp(&b) {
                    Ordering::Equal => return Ld::ZERO,
                    Ordering::Greater => (self.neg, a.sub(&b)),
                    Ordering::Less => (other.neg, b.sub(&a)),
                }
            };
            round(neg, &magnitude, &Big::from_u128(1), low)
        }

        /// `%.17Lf` with the trailing zeros (and a bare point) removed; `-0` reads `0`.
        /// Only for finite numbers.
        pub fn to_human(self) -> String {
            const SCALE: u128 = 100_000_000_000_000_000; // 10^17
            let mut text = String::new();
            if self.neg {
                text.push('-');
            }
            if self.exp >= 0 {
                // A whole number: no fraction to print.
                let whole = Big::from_u128(u128::from(self.mant)).shl(self.exp as u64);
                text.push_str(&whole.to_decimal());
            } else {
                let shift = -self.exp;
                // The value times 10^17, rounded to a whole number.
                let scaled = u128::from(self.mant) * SCALE;
                let rounded = if shift >= 122 {
                    0 // below half a unit of the 17th decimal
                } else {
                    let q = scaled >> shift;
                    let rem = scaled & ((1u128 << shift) - 1);
                    let half = 1u128 << (shift - 1);
                    if rem > half || (rem == half && q & 1 == 1) {
                        q + 1
                    } else {
                        q
                    }
                };
                text.push_str(&format!("{}.{:017}", rounded / SCALE, rounded % SCALE));
                let trimmed = text.trim_end_matches('0').trim_end_matches('.').len();
                text.truncate(trimmed);
            }
            if text == "-0" {
                text = "0".into();
            }
            text
        }
    }

    /// Parses `raw` as Redis reads a long double; `None` when Redis would refuse it.
    pub fn parse(raw: &[u8]) -> Option<Ld> {
        if raw.is_empty() || raw.len() >= MAX_TEXT || raw[0].is_ascii_whitespace() || raw[0] == 0x0b
        {
            return None;
        }
        let (neg, body) = match raw[0] {
            b'-' => (true, &raw[1..]),
            b'+' => (false, &raw[1..]),
            _ => (false, raw),
        };
        if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
            return Some(Ld::infinity(neg));
        }
        if body.len() > 1 && body[0] == b'0' && (body[1] | 0x20) == b'x' {
            return parse_hex(neg, &body[2..]);
        }
        parse_decimal(neg, body)
    }

    /// Splits `digits[.digits]` (at least one digit) off the front of `text`; returns the
    /// digits without the point, how many followed the point, and the rest.
    fn mantissa(text: &[u8], hex: bool) -> Option<(Vec<u8>, i64, &[u8])> {
        let is_digit = |b: u8| {
            if hex {
                b.is_ascii_hexdigit()
            } else {
                b.is_ascii_digit()
            }
        };
        let mut digits = Vec::new();
        let mut after_point = 0i64;
        let mut seen_point = false;
        let mut i = 0;
        while i < text.len() {
            let b = text[i];
            if is_digit(b) {
                digits.push(b);
                if seen_point {
                    after_point += 1;
                }
            } else if b == b'.' && !seen_point {
                seen_point = true;
            } else {
                break;
            }
            i += 1;
        }
        (!digits.is_empty()).then_some((digits, after_point, &text[i..]))
    }

    /// An exponent (`[+-]digits`) that must make up the rest of the text; saturated, as
    /// anything this large overflows or underflows anyway.
    fn exponent(text: &[u8]) -> Option<i64> {
        let (neg, digits) = match text.first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let value = digits.iter().fold(0i64, |acc, d| {
            (acc * 10 + i64::from(d - b'0')).min(1_000_000_000)
        });
        Some(if neg { -value } else { value })
    }

    fn parse_decimal(neg: bool, body: &[u8]) -> Option<Ld> {
        let (digits, after_point, rest) = mantissa(body, false)?;
        let exp10 = match rest.first() {
            None => 0,
            Some(b'e' | b'E') => exponent(&rest[1..])?,
            Some(_) => return None,
        };
        let significant: &[u8] = {
            let start = digits.iter().position(|&d| d != b'0');
            match start {
                None => return Some(Ld { neg, ..Ld::ZERO }),
                Some(start) => &digits[start..],
            }
        };
        // The value is significant * 10^k, with 10^(len-1+k) <= value < 10^(len+k).
        let k = exp10 - after_point;
        let magnitude = significant.len() as i64 + k;
        if magnitude > 4934 {
            return None; // overflows: strtold answers HUGE_VAL with ERANGE
        }
        if magnitude < -4952 {
            return None; // underflows to zero
        }
        let mut n = Big::default();
        for &d in significant {
            n.mul_add_small(10, u32::from(d - b'0'));
        }
        let mut m = Big::from_u128(1);
        if k >= 0 {
            n.mul_pow10(k as u64);
        } else {
            m.mul_pow10((-k) as u64);
        }
        finish(round(neg, &n, &m, 0))
    }

    fn parse_hex(neg: bool, body: &[u8]) -> Option<Ld> {
        let (digits, after_point, rest) = mantissa(body, true)?;
        let exp2 = match rest.first() {
            None => 0,
            Some(b'p' | b'P') => exponent(&rest[1..])?,
            Some(_) => return None,
        };
        let mut n = Big::default();
        for &d in &digits {
            let value = (d as char).to_digit(16).unwrap_or(0);
            n.mul_add_small(16, value);
        }
        if n.is_zero() {
            return Some(Ld { neg, ..Ld::ZERO });
        }
        let p2 = exp2 - 4 * after_point;
        let top = n.bits() as i64 + p2;
        if top > 16385 {
            return None;
        }
        if top < EMIN - 2 {
            return None;
        }
        finish(round(neg, &n, &Big::from_u128(1), p2))
    }

    /// A parsed number as Redis keeps it: refused when it overflowed or underflowed to
    /// zero.
    fn finish(x: Ld) -> Option<Ld> {
        (!x.inf && x.mant != 0).then_some(x)
    }

    /// The extended number nearest to `n / m * 2^p2` (`n`, `m` > 0): ties to even,
    /// subnormals below the normal range, infinity above it.
    fn round(neg: bool, n: &Big, m: &Big, p2: i64) -> Ld {
        // Scale so that the quotient has 66 or 67 bits.
        let s = 66 - (n.bits() as i64 - m.bits() as i64);
        let (mut rem, divisor) = if s >= 0 {
            (n.shl(s as u64), m.clone())
        } else {
            (n.clone(), m.shl((-s) as u64))
        };
        let mut q: u128 = 0;
        let mut step = divisor.shl(67);
        for bit in (0..=67).rev() {
            if rem.cmp(&step) != Ordering::Less {
                rem = rem.sub(&step);
                q |= 1u128 << bit;
            }
            step.shr1();
        }
        let sticky = !rem.is_zero();
        let bits = 128 - i64::from(q.leading_zeros());
        let mut extra = bits - 64;
        let mut exp = p2 - s + extra;
        if exp < EMIN {
            extra += EMIN - exp;
            exp = EMIN;
        }
        if extra >= 100 {
            return Ld { neg, ..Ld::ZERO };
        }
        let (mut mant, low) = if extra > 0 {
            (q >> extra, q & ((1u128 << extra) - 1))
        } else {
            (q, 0)
        };
        if extra > 0 {
            let half = 1u128 << (extra - 1);
            if low > half || (low == half && (sticky || mant & 1 == 1)) {
                mant += 1;
            }
        }
        if mant == 1u128 << 64 {
            mant >>= 1;
            exp += 1;
        }
        if exp > EMAX {
            return Ld::infinity(neg);
        }
        Ld {
            neg,
            mant: mant as u64,
            exp,
            inf: false,
        }
    }

    /// A natural number in 32-bit limbs, lowest first, no high zero limbs: just what the
    /// conversions above need.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    struct Big(Vec<u32>);

    impl Big {
        fn from_u128(mut v: u128) -> Big {
            let mut limbs = Vec::new();
            while v > 0 {
                limbs.push(v as u32);
                v >>= 32;
            }
            Big(limbs)
        }

        fn is_zero(&self) -> bool {
            self.0.is_empty()
        }

        fn trim(&mut self) {
            while self.0.last() == Some(&0) {
                self.0.pop();
            }
        }

        fn bits(&self) -> u64 {
            match self.0.last() {
                None => 0,
                Some(top) => self.0.len() as u64 * 32 - u64::from(top.leading_zeros()),
            }
        }

        fn mul_add_small(&mut self, factor: u32, addend: u32) {
            let mut carry = u64::from(addend);
            for limb in &mut self.0 {
                let v = u64::from(*limb) * u64::from(factor) + carry;
                *limb = v as u32;
                carry = v >> 32;
            }
            if carry > 0 {
                self.0.push(carry as u32);
            }
        }

        fn mul_pow10(&mut self, mut k: u64) {
            while k >= 9 {
                self.mul_add_small(1_000_000_000, 0);
                k -= 9;
            }
            if k > 0 {
                self.mul_add_small(10u32.pow(k as u32), 0);
            }
        }

        fn shl(&self, n: u64) -> Big {
            if self.is_zero() {
                return Big::default();
            }
            let (words, bits) = ((n / 32) as usize, (n % 32) as u32);
            let mut out = vec![0u32; words];
            if bits == 0 {
                out.extend_from_slice(&self.0);
            } else {
                let mut carry = 0u32;
                for &limb in &self.0 {
                    out.push((limb << bits) | carry);
                    carry = limb >> (32 - bits);
                }
                out.push(carry);
            }
            let mut big = Big(out);
            big.trim();
            big
        }

        fn shr1(&mut self) {
            let mut carry = 0u32;
            for limb in self.0.iter_mut().rev() {
                let next = *limb & 1;
                *limb = (*limb >> 1) | (carry << 31);
                carry = next;
            }
            self.trim();
        }

        fn cmp(&self, other: &Big) -> Ordering {
            self.0
                .len()
                .cmp(&other.0.len())
                .then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
        }

        fn add(&self, other: &Big) -> Big {
            let (long, short) = if self.0.len() >= other.0.len() {
                (self, other)
            } else {
                (other, self)
            };
            let mut out = Vec::with_capacity(long.0.len() + 1);
            let mut carry = 0u64;
            for (i, &limb) in long.0.iter().enumerate() {
                let v = u64::from(limb) + u64::from(short.0.get(i).copied().unwrap_or(0)) + carry;
                out.push(v as u32);
                carry = v >> 32;
            }
            if carry > 0 {
                out.push(carry as u32);
            }
            Big(out)
        }

        /// `self - other`, for `self >= other`.
        fn sub(&self, other: &Big) -> Big {
            let mut out = Vec::with_capacity(self.0.len());
            let mut borrow = 0i64;
            for (i, &limb) in self.0.iter().enumerate() {
                let mut v =
                    i64::from(limb) - i64::from(other.0.get(i).copied().unwrap_or(0)) - borrow;
                borrow = 0;
                if v < 0 {
                    v += 1 << 32;
                    borrow = 1;
                }
                out.push(v as u32);
            }
            let mut big = Big(out);
            big.trim();
            big
        }

        /// Divides in place by `d`; returns the remainder.
        fn div_small(&mut self, d: u32) -> u32 {
            let mut rem = 0u64;
            for limb in self.0.iter_mut().rev() {
                let v = (rem << 32) | u64::from(*limb);
                *limb = (v / u64::from(d)) as u32;
                rem = v % u64::from(d);
            }
            self.trim();
            rem as u32
        }

        fn to_decimal(&self) -> String {
            if self.is_zero() {
                return "0".into();
            }
            let mut chunks = Vec::new();
            let mut n = self.clone();
            while !n.is_zero() {
                chunks.push(n.div_small(1_000_000_000));
            }
            let mut text = String::new();
            for (i, chunk) in chunks.iter().rev().enumerate() {
                if i == 0 {
                    text.push_str(&chunk.to_string());
                } else {
                    text.push_str(&format!("{chunk:09}"));
                }
            }
            text
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn sum(a: &str, b: &str) -> String {
            let a = parse(a.as_bytes()).expect("a float");
            let b = parse(b.as_bytes()).expect("a float");
            a.add(b).to_human()
        }

        #[test]
        fn sums_read_like_redis() {
            // Expected texts from redis-server 7.0 on x86-64.
            assert_eq!(sum("10.5", "0.1"), "10.6");
            assert_eq!(sum("0.1", "0.2"), "0.3");
            assert_eq!(sum("0.3", "0.0000001"), "0.3000001");
            assert_eq!(sum("10.6", "1e20"), "100000000000000000008");
            assert_eq!(sum("100000000000000000008", "-1e20"), "8");
            assert_eq!(sum("0", "3.0e3"), "3000");
            assert_eq!(sum("3000", "1.23456789012345678"), "3001.23456789012345669");
            assert_eq!(sum("17.5", "0x1p-2"), "17.75");
            assert_eq!(sum("-1e-4940", "0"), "0");
            assert_eq!(sum("1", "-1"), "0");
            assert_eq!(sum("0x10", ".5"), "16.5");
            assert_eq!(sum("5.", "+5"), "10");
        }

        #[test]
        fn huge_sums_are_written_in_full() {
            let text = sum("1e308", "1e308");
            assert!(text.starts_with("199999999999999999993371759311691291321120199694831"));
            assert_eq!(text.len(), 309);
        }

        #[test]
        fn refused_texts() {
            for bad in [
                "", " 1", "1 ", "1e", "0x", "nan", "-nan", "1e5000", "1e-5000", "abc", "1.2.3",
                "--1", "e5", ".", "0x1p", "infx",
            ] {
                assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
            }
            assert_eq!(parse(&vec![b'1'; 5120]), None);
            assert_eq!(parse(b"1\x00"), None);
            assert_eq!(parse(b"\x00"), None);
            assert!(parse(&vec![b'1'; 5000]).is_none()); // about 10^5000: overflows
            assert!(parse(&vec![b'1'; 4000]).is_some());
            assert!(parse(b"0e-5000").is_some());
            assert!(parse(b"-inf").is_some_and(|x| !x.is_finite()));
            assert!(parse(b"Infinity").is_some_and(|x| !x.is_finite()));
        }

        #[test]
        fn overflow_is_infinite() {
            let max = parse(b"1.18e4932").expect("in range");
            assert!(!max.add(max).is_finite());
            assert!(parse(b"1.19e4932").is_none());
        }

        #[test]
        fn tiny_numbers_print_as_zero() {
            assert_eq!(sum("1e-18", "0"), "0");
            assert_eq!(sum("-1e-18", "0"), "0");
            assert_eq!(sum("5e-18", "0"), "0");
            assert_eq!(sum("6e-18", "0"), "0.00000000000000001");
            assert_eq!(sum("1.5e-17", "0"), "0.00000000000000002");
            assert_eq!(sum("2.5e-17", "0"), "0.00000000000000002");
            // Exact ties in the 17th decimal round to even.
            assert_eq!(sum("0x1p-18", "0"), "0.00000381469726562");
            assert_eq!(sum("0x3p-18", "0"), "0.00001144409179688");
            assert_eq!(sum("1e-4950", "0"), "0");
        }
    }
}
