//! Long doubles, as Redis reads `INCRBYFLOAT` and `HINCRBYFLOAT` arguments and blocking
//! timeouts: C `long double`s (x87 extended precision: a 64-bit mantissa). INCRBYFLOAT adds
//! two and writes the sum with 17 digits after the point, trailing zeros removed. The digits
//! a client sees depend on that precision (`1000` + `0.1` is `1000.09999999999999998`), so
//! this module does the same computation exactly, in software: decimal and hexadecimal text
//! to the nearest 64-bit-mantissa value, correctly rounded sums and products, and exact
//! decimal output.

use std::cmp::Ordering;

/// Significant bits of the mantissa.
const BITS: i64 = 64;
/// The smallest exponent of the mantissa's last bit (subnormal numbers reach it).
const MIN_LSB: i64 = -16445;
/// Values must stay below `2^MAX_TOP`.
const MAX_TOP: i64 = 16384;
/// The longest text Redis reads as a long double (its buffer holds one byte more).
const MAX_TEXT: usize = 5 * 1024;
/// Digits after the point in the output.
const FRACTION_DIGITS: u32 = 17;

/// A finite extended-precision number: `mant * 2^exp` with a sign (`mant == 0` is zero).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LongDouble {
    neg: bool,
    mant: u64,
    exp: i64,
}

/// What parsing or adding can give besides a finite number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Finite(LongDouble),
    /// An infinity (read from "inf"), or a sum too large.
    Infinite,
}

impl LongDouble {
    const ZERO: LongDouble = LongDouble {
        neg: false,
        mant: 0,
        exp: 0,
    };

    /// Reads `text` the way Redis does (`strtold` over the whole text: no spaces, no
    /// NaN, nothing left over, nothing that overflows or underflows to zero).
    pub fn parse(text: &[u8]) -> Option<Value> {
        if text.is_empty() || text.len() >= MAX_TEXT || is_space(text[0]) {
            return None;
        }
        let (neg, body) = match text[0] {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
            return Some(Value::Infinite);
        }
        let magnitude = match body {
            [b'0', b'x' | b'X', hex @ ..] => parse_hex(hex)?,
            _ => parse_decimal(body)?,
        };
        Some(Value::Finite(LongDouble { neg, ..magnitude }))
    }

    /// The correctly rounded sum.
    pub fn add(self, other: LongDouble) -> Value {
        if self.mant == 0 {
            if other.mant == 0 {
                // -0 + -0 is -0; any other sum of zeros is +0.
                return Value::Finite(LongDouble {
                    neg: self.neg && other.neg,
                    ..LongDouble::ZERO
                });
            }
            return Value::Finite(other);
        }
        if other.mant == 0 {
            return Value::Finite(self);
        }
        let (ta, tb) = (self.top(), other.top());
        // A term below the other's last bit by far only decides rounding, never enough
        // to move it.
        if ta - tb > 2 * BITS {
            return Value::Finite(self);
        }
        if tb - ta > 2 * BITS {
            return Value::Finite(other);
        }
        let e = self.exp.min(other.exp);
        let a = Big::from_u64(self.mant).shl((self.exp - e) as u64);
        let b = Big::from_u64(other.mant).shl((other.exp - e) as u64);
        let (sum, neg) = if self.neg == other.neg {
            (a.add(&b), self.neg)
        } else {
            match a.cmp(&b) {
                Ordering::Equal => return Value::Finite(LongDouble::ZERO),
                Ordering::Greater => (a.sub(&b), self.neg),
                Ordering::Less => (b.sub(&a), other.neg),
            }
        };
        round(&sum, e, false, neg)
    }

    /// The position above the highest bit: the value is below `2^top`.
    fn top(&self) -> i64 {
        self.exp + i64::from(64 - self.mant.leading_zeros())
    }

    /// The text Redis writes: 17 digits after the point, then trailing zeros (and a bare
    /// point) removed; negative zero is "0".
    pub fn to_text(self) -> String {
        if self.mant == 0 {
            return "0".into();
        }
        let digits = if self.exp >= 0 {
            Big::from_u64(self.mant).shl(self.exp as u64).to_decimal()
        } else {
            let drop = (-self.exp) as u64;
            let mut scaled = Big::from_u64(self.mant);
            scaled.mul_pow10(FRACTION_DIGITS);
            let mut q = scaled.shr(drop);
            let half = scaled.bit(drop - 1);
            let rest = scaled.any_below(drop - 1);
            if half && (rest || q.bit(0)) {
                q.add_small(1);
            }
            if q.is_zero() {
                return "0".into();
            }
            let mut digits = q.to_decimal();
            let width = FRACTION_DIGITS as usize + 1;
            if digits.len() < width {
                digits = format!("{}{digits}", "0".repeat(width - digits.len()));
            }
            let (whole, fraction) = digits.split_at(digits.len() - FRACTION_DIGITS as usize);
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() {
                whole.to_string()
            } else {
                format!("{whole}.{fraction}")
            }
        };
        if self.neg {
            format!("-{digits}")
        } else {
            digits
        }
    }
}

impl LongDouble {
    /// `(long long) ceill(self * 1000)`: how Redis turns a timeout in seconds into
    /// milliseconds, the product rounded to a long double first. `None` when the result
    /// does not fit a 64-bit integer (C's conversion then gives `LLONG_MIN` on x86-64,
    /// which Redis reports as a negative timeout).
    pub fn millis_ceil(self) -> Option<i64> {
        let mut n = Big::from_u64(self.mant);
        n.mul_small(1000, 0);
        match round(&n, self.exp, false, self.neg) {
            Value::Finite(ms) => ms.ceil_i64(),
            Value::Infinite => None,
        }
    }

    /// The smallest whole number not below the value, if it fits an `i64`.
    fn ceil_i64(self) -> Option<i64> {
        if self.mant == 0 {
            return Some(0);
        }
        if self.top() > 64 {
            return None;
        }
        let magnitude: u128 = if self.exp >= 0 {
            u128::from(self.mant) << self.exp
        } else if self.exp <= -64 {
            // Below one: the ceiling is 1 for a positive value, 0 for a negative one.
            u128::from(!self.neg)
        } else {
            let drop = (-self.exp) as u32;
            let whole = u128::from(self.mant >> drop);
            let fraction = self.mant & ((1u64 << drop) - 1) != 0;
            whole + u128::from(fraction && !self.neg)
        };
        let signed = i128::try_from(magnitude).ok()?;
        i64::try_from(if self.neg { -signed } else { signed }).ok()
    }
}

/// `isspace` in the C locale.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// An exponent's digits, saturating far beyond any exponent that can matter.
fn exponent(text: &[u8]) -> Option<i64> {
    let (neg, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits.iter().fold(0i64, |n, d| {
        (n * 10 + i64::from(d - b'0')).min(1_000_000_000)
    });
    Some(if neg { -value } else { value })
}

/// Splits `text` into mantissa digits (with an optional point) and the exponent after
/// `marker`; `None` unless there is at least one digit and nothing else.
fn split_number(
    text: &[u8],
    is_digit: fn(&u8) -> bool,
    markers: &[u8],
) -> Option<(Vec<u8>, usize, i64)> {
    let end = text
        .iter()
        .position(|c| markers.contains(c))
        .unwrap_or(text.len());
    let (mantissa, rest) = text.split_at(end);
    let exp = match rest.split_first() {
        None => 0,
        Some((_, digits)) => exponent(digits)?,
    };
    let (whole, fraction) = match mantissa.iter().position(|&c| c == b'.') {
        Some(dot) => (&mantissa[..dot], &mantissa[dot + 1..]),
        None => (mantissa, &[][..]),
    };
    if whole.len() + fraction.len() == 0
        || !whole.iter().all(is_digit)
        || !fraction.iter().all(is_digit)
    {
        return None;
    }
    let digits = [whole, fraction].concat();
    Some((digits, fraction.len(), exp))
}

/// `digits[.digits][e[+-]digits]`, unsigned.
fn parse_decimal(text: &[u8]) -> Option<LongDouble> {
    let (digits, fraction, exp) = split_number(text, u8::is_ascii_digit, b"eE")?;
    let first = digits.iter().position(|&d| d != b'0');
    let Some(first) = first else {
        return Some(LongDouble::ZERO);
    };
    let digits = &digits[first..];
    let exp10 = exp - fraction as i64;
    // Far outside the range: overflow or underflow, which Redis refuses.
    let magnitude = digits.len() as i64 + exp10;
    if !(-4960..=4940).contains(&magnitude) {
        return None;
    }
    let mut n = Big::default();
    for &d in digits {
        n.mul_small(10, u32::from(d - b'0'));
    }
    let value = if exp10 >= 0 {
        n.mul_pow10(exp10 as u32);
        round(&n, 0, false, false)
    } else {
        let mut p = Big::from_u64(1);
        p.mul_pow10((-exp10) as u32);
        // Enough quotient bits to round correctly, the remainder as a sticky bit.
        let k = (p.bit_len() as i64 + BITS + 3 - n.bit_len() as i64).max(0) as u64;
        let (q, rest) = n.shl(k).div_rem(&p);
        round(&q, -(k as i64), !rest.is_zero(), false)
    };
    match value {
        Value::Finite(v) if v.mant != 0 => Some(v),
        _ => None,
    }
}

/// `hexdigits[.hexdigits][p[+-]digits]` after `0x`, unsigned.
fn parse_hex(text: &[u8]) -> Option<LongDouble> {
    let (digits, fraction, exp) = split_number(text, u8::is_ascii_hexdigit, b"pP")?;
    let first = digits.iter().position(|&d| d != b'0');
    let Some(first) = first else {
        return Some(LongDouble::ZERO);
    };
    let digits = &digits[first..];
    let exp2 = exp - 4 * fraction as i64;
    let magnitude = 4 * digits.len() as i64 + exp2;
    if !(MIN_LSB - 8..=MAX_TOP + 8).contains(&magnitude) {
        return None;
    }
    let mut n = Big::default();
    for &d in digits {
        let v = (d as char).to_digit(16).unwrap_or(0);
        n.mul_small(16, v);
    }
    match round(&n, exp2, false, false) {
        Value::Finite(v) if v.mant != 0 => Some(v),
        _ => None,
    }
}

/// `n * 2^exp` (plus something nonzero below `n`'s last bit when `sticky`) rounded to the
/// nearest extended-precision value, ties to even.
fn round(n: &Big, exp: i64, sticky: bool, neg: bool) -> Value {
    if n.is_zero() {
        return Value::Finite(LongDouble {
            neg,
            ..LongDouble::ZERO
        });
    }
    let len = n.bit_len() as i64;
    let mut drop = len - BITS;
    if exp + drop < MIN_LSB {
        drop = MIN_LSB - exp;
    }
    let (mant, exp) = if drop <= 0 {
        (n.low_u64() << (-drop), exp + drop)
    } else {
        let d = drop as u64;
        let mant = n.shr(d).low_u64();
        let half = n.bit(d - 1);
        let rest = sticky || n.any_below(d - 1);
        if half && (rest || mant & 1 == 1) {
            match mant.checked_add(1) {
                Some(m) => (m, exp + drop),
                None => (1 << 63, exp + drop + 1),
            }
        } else {
            (mant, exp + drop)
        }
    };
    if mant == 0 {
        return Value::Finite(LongDouble {
            neg,
            ..LongDouble::ZERO
        });
    }
    let value = LongDouble { neg, mant, exp };
    if value.top() > MAX_TOP {
        return Value::Infinite;
    }
    Value::Finite(value)
}

// === a small unsigned big integer ===

/// Little-endian 32-bit limbs, no high zero limbs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Big(Vec<u32>);

impl Big {
    fn from_u64(v: u64) -> Big {
        let mut b = Big(vec![v as u32, (v >> 32) as u32]);
        b.trim();
        b
    }

    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    fn bit_len(&self) -> u64 {
        match self.0.last() {
            None => 0,
            Some(top) => self.0.len() as u64 * 32 - u64::from(top.leading_zeros()),
        }
    }

    fn bit(&self, i: u64) -> bool {
        self.0
            .get((i / 32) as usize)
            .is_some_and(|limb| limb >> (i % 32) & 1 == 1)
    }

    /// True if any bit below `i` is set.
    fn any_below(&self, i: u64) -> bool {
        let whole = ((i / 32) as usize).min(self.0.len());
        if self.0[..whole].iter().any(|&l| l != 0) {
            return true;
        }
        let part = i % 32;
        part > 0
            && self
                .0
                .get(whole)
                .is_some_and(|&l| l & ((1 << part) - 1) != 0)
    }

    fn low_u64(&self) -> u64 {
        let lo = u64::from(self.0.first().copied().unwrap_or(0));
        let hi = u64::from(self.0.get(1).copied().unwrap_or(0));
        hi << 32 | lo
    }

    /// `self = self * m + add`.
    fn mul_small(&mut self, m: u32, add: u32) {
        let mut carry = u64::from(add);
        for limb in &mut self.0 {
            let v = u64::from(*limb) * u64::from(m) + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
        self.trim();
    }

    fn add_small(&mut self, add: u32) {
        self.mul_small(1, add);
    }

    fn mul_pow10(&mut self, mut n: u32) {
        while n >= 9 {
            self.mul_small(1_000_000_000, 0);
            n -= 9;
        }
        if n > 0 {
            self.mul_small(10u32.pow(n), 0);
        }
    }

    fn shl(&self, bits: u64) -> Big {
        if self.is_zero() {
            return Big::default();
        }
        let (limbs, part) = ((bits / 32) as usize, bits % 32);
        let mut out = vec![0u32; limbs];
        let mut carry = 0u32;
        for &l in &self.0 {
            if part == 0 {
                out.push(l);
            } else {
                out.push(l << part | carry);
                carry = l >> (32 - part);
            }
        }
        if carry > 0 {
            out.push(carry);
        }
        let mut b = Big(out);
        b.trim();
        b
    }

    fn shr(&self, bits: u64) -> Big {
        let (limbs, part) = ((bits / 32) as usize, bits % 32);
        if limbs >= self.0.len() {
            return Big::default();
        }
        let src = &self.0[limbs..];
        let out = (0..src.len())
            .map(|i| {
                let lo = src[i] >> part;
                let hi = match src.get(i + 1) {
                    Some(&h) if part > 0 => h << (32 - part),
                    _ => 0,
                };
                lo | hi
            })
            .collect();
        let mut b = Big(out);
        b.trim();
        b
    }

    fn add(&self, other: &Big) -> Big {
        let len = self.0.len().max(other.0.len());
        let mut out = Vec::with_capacity(len + 1);
        let mut carry = 0u64;
        for i in 0..len {
            let v = u64::from(self.0.get(i).copied().unwrap_or(0))
                + u64::from(other.0.get(i).copied().unwrap_or(0))
                + carry;
            out.push(v as u32);
            carry = v >> 32;
        }
        if carry > 0 {
            out.push(carry as u32);
        }
        let mut b = Big(out);
        b.trim();
        b
    }

    /// `self - other`; `self` must not be smaller.
    fn sub(&self, other: &Big) -> Big {
        let mut out = Vec::with_capacity(self.0.len());
        let mut borrow = 0i64;
        for i in 0..self.0.len() {
            let mut v =
                i64::from(self.0[i]) - i64::from(other.0.get(i).copied().unwrap_or(0)) - borrow;
            borrow = 0;
            if v < 0 {
                v += 1 << 32;
                borrow = 1;
            }
            out.push(v as u32);
        }
        let mut b = Big(out);
        b.trim();
        b
    }

    fn cmp(&self, other: &Big) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }

    /// Quotient and remainder, for quotients of a few dozen bits (shift and subtract).
    fn div_rem(&self, divisor: &Big) -> (Big, Big) {
        let mut rest = self.clone();
        let mut q = Big::default();
        if divisor.is_zero() || self.cmp(divisor) == Ordering::Less {
            return (q, rest);
        }
        let top = self.bit_len() - divisor.bit_len();
        let mut bits = vec![0u32; (top / 32 + 1) as usize];
        for i in (0..=top).rev() {
            let shifted = divisor.shl(i);
            if rest.cmp(&shifted) != Ordering::Less {
                rest = rest.sub(&shifted);
                bits[(i / 32) as usize] |= 1 << (i % 32);
            }
        }
        q.0 = bits;
        q.trim();
        (q, rest)
    }

    fn to_decimal(&self) -> String {
        if self.is_zero() {
            return "0".into();
        }
        let mut n = self.0.clone();
        let mut chunks = Vec::new();
        while !n.is_empty() {
            let mut rem = 0u64;
            for limb in n.iter_mut().rev() {
                let v = rem << 32 | u64::from(*limb);
                *limb = (v / 1_000_000_000) as u32;
                rem = v % 1_000_000_000;
            }
            while n.last() == Some(&0) {
                n.pop();
            }
            chunks.push(rem as u32);
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

    fn incr(a: &str, b: &str) -> Option<String> {
        let (Some(Value::Finite(a)), Some(Value::Finite(b))) = (
            LongDouble::parse(a.as_bytes()),
            LongDouble::parse(b.as_bytes()),
        ) else {
            return None;
        };
        match a.add(b) {
            Value::Finite(v) => Some(v.to_text()),
            Value::Infinite => None,
        }
    }

    #[test]
    fn sums_read_like_redis() {
        // Replies of redis-server 7.0 (x86-64) to SET k <a>, INCRBYFLOAT k <b>.
        let cases = [
            ("1000", "0.1", "1000.09999999999999998"),
            ("100000", "0.1", "100000.10000000000000142"),
            ("10.5", "0.1", "10.6"),
            ("0", "1e30", "1000000000000000000024696061952"),
            ("0", "1e-20", "0"),
            ("0.1", "0.2", "0.3"),
            ("1234567.123456789", "1.1", "1234568.22345678900001076"),
            ("5", "-5", "0"),
            ("0", "-0.0", "0"),
            ("1", ".5", "1.5"),
            ("1", "5.", "6"),
            ("1", "-.5e1", "-4"),
            ("1", "1E2", "101"),
            ("1", "0x1p-2", "1.25"),
            ("1", "0x.8", "1.5"),
            ("1", "0x10", "17"),
            ("1", "0e99999", "1"),
            ("1", "4.9e-4951", "1"),
            ("2.5", "1e-17", "2.50000000000000001"),
            ("0", "0.000000000000000015", "0.00000000000000002"),
            ("0", "0.000000000000000025", "0.00000000000000002"),
            ("0", "-0.000000000000000001", "0"),
            // Ties at the 17th digit go to even.
            ("0.000003814697265625", "0", "0.00000381469726562"),
            ("0.000011444091796875", "0", "0.00001144409179688"),
            ("1.00000000000000000001", "0", "1"),
            ("-3.5", "1.25", "-2.25"),
            ("0", "1e-4940", "0"),
            ("99999999999999999999", "1", "100000000000000000000"),
        ];
        for (a, b, expected) in cases {
            assert_eq!(incr(a, b).as_deref(), Some(expected), "{a} + {b}");
        }
        let big = incr("1e308", "1e308").unwrap_or_default();
        assert!(big.starts_with("199999999999999999993371759311691291321120199694831134"));
        assert_eq!(big.len(), 309);
    }

    #[test]
    fn refused_like_redis() {
        for text in [
            "", " 1", "1 ", "1e", ".", "nan", "1_0", "1e99999", "1e-99999", "0x", "abc", "--1",
            "1e+", "0x1p",
        ] {
            assert_eq!(LongDouble::parse(text.as_bytes()), None, "{text:?}");
        }
        assert_eq!(LongDouble::parse(b"+inf"), Some(Value::Infinite));
        assert_eq!(LongDouble::parse(b"-Infinity"), Some(Value::Infinite));
        assert_eq!(
            incr(
                "1.18973149535723176502e+4932",
                "1.18973149535723176502e+4932"
            ),
            None
        );
    }
}
