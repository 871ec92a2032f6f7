//! Prices, parsed exactly from decimal text, and the cost of a command's usage.
//!
//! Prices are kept in atto-units (10^-18 of a unit) so that a price such as one
//! thousandth of a nano-unit per byte-second is exact. A command's cost is computed in
//! integers and rounded up to a whole nano-unit, as the contract requires; balances are
//! whole nano-units.

use std::fmt;

/// Atto-units in one unit.
const ATTO_PER_UNIT: u128 = 1_000_000_000_000_000_000;
/// Atto-units in one nano-unit.
const ATTO_PER_NANO: u128 = 1_000_000_000;
/// Most fractional digits a price may have.
const PRICE_DIGITS: usize = 18;

/// A non-negative amount in atto-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Price(pub u128);

impl Price {
    /// Parses `"12"`, `"0.000001"`, `"1.5"`: digits with at most 18 after the point.
    pub fn parse(text: &str) -> Result<Price, String> {
        let text = text.trim();
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (!frac.is_empty() && !digits(frac)) || (text.ends_with('.')) {
            return Err(format!("expected a decimal such as 0.000001, got {text:?}"));
        }
        if frac.len() > PRICE_DIGITS {
            return Err(format!(
                "at most {PRICE_DIGITS} digits after the point, got {text:?}"
            ));
        }
        let whole: u128 = whole.parse().map_err(|_| format!("too large: {text:?}"))?;
        let mut frac_atto: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse()
                .map_err(|_| format!("bad fraction: {text:?}"))?
        };
        frac_atto *= 10u128.pow((PRICE_DIGITS - frac.len()) as u32);
        // A price above a million units per quantity is a typo, and keeps every product of
        // a price and a 64-bit quantity far inside u128.
        if whole > 1_000_000 {
            return Err(format!("above 1000000 units: {text:?}"));
        }
        Ok(Price(whole * ATTO_PER_UNIT + frac_atto))
    }
}

impl fmt::Display for Price {
    /// The shortest exact decimal, with at least 9 fractional digits (`0.000001000`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / ATTO_PER_UNIT;
        let frac = format!("{:018}", self.0 % ATTO_PER_UNIT);
        let trimmed = frac.trim_end_matches('0');
        let shown = if trimmed.len() < 9 {
            &frac[..9]
        } else {
            trimmed
        };
        write!(f, "{whole}.{shown}")
    }
}

/// The price of each metered quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prices {
    pub op: Price,
    pub byte_in: Price,
    pub byte_out: Price,
    pub byte_second: Price,
    /// Per millisecond; time is measured in microseconds.
    pub time_ms: Price,
}

/// The five metered quantities of one command (or a sum of commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub ops: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub byte_seconds: u64,
    /// Time held upstream, in microseconds (`time_ms` with three decimals).
    pub time_us: u64,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.ops = self.ops.saturating_add(other.ops);
        self.bytes_in = self.bytes_in.saturating_add(other.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(other.bytes_out);
        self.byte_seconds = self.byte_seconds.saturating_add(other.byte_seconds);
        self.time_us = self.time_us.saturating_add(other.time_us);
    }
}

impl Prices {
    /// The cost of `usage` in nano-units, rounded up to a whole nano-unit:
    /// ops·op + bytes_in·byte_in + bytes_out·byte_out + byte_seconds·byte_second
    /// + (time_us / 1000)·time_ms.
    pub fn cost(&self, usage: &Usage) -> u64 {
        let mul = |q: u64, p: Price| u128::from(q).saturating_mul(p.0);
        // Everything times 1000 so that microseconds stay whole.
        let milli_atto = mul(usage.ops, self.op)
            .saturating_add(mul(usage.bytes_in, self.byte_in))
            .saturating_add(mul(usage.bytes_out, self.byte_out))
            .saturating_add(mul(usage.byte_seconds, self.byte_second))
            .saturating_mul(1000)
            .saturating_add(mul(usage.time_us, self.time_ms));
        let per_nano = ATTO_PER_NANO * 1000;
        let nanos = milli_atto.div_ceil(per_nano);
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_exactly() {
        assert_eq!(Price::parse("1").unwrap(), Price(ATTO_PER_UNIT));
        assert_eq!(Price::parse("0.000000001").unwrap(), Price(ATTO_PER_NANO));
        assert_eq!(Price::parse("0.000000000000000001").unwrap(), Price(1));
        assert_eq!(Price::parse("2.5").unwrap().to_string(), "2.500000000");
        assert_eq!(
            Price::parse("0.000000000001").unwrap().to_string(),
            "0.000000000001"
        );
        for bad in [
            "",
            "-1",
            "1e-9",
            "0.0000000000000000001",
            "abc",
            "1.",
            ".5",
            "1,5",
            "2000000",
        ] {
            assert!(Price::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cost_is_exact_and_rounds_up_once_per_command() {
        let prices = Prices {
            op: Price::parse("0.000001").unwrap(),
            byte_in: Price::parse("0.000000001").unwrap(),
            byte_out: Price::parse("0.000000002").unwrap(),
            byte_second: Price::parse("0.000000000001").unwrap(),
            time_ms: Price::parse("0.000001").unwrap(),
        };
        let usage = Usage {
            ops: 1,
            bytes_in: 30,
            bytes_out: 5,
            byte_seconds: 2_000,
            time_us: 1_500,
        };
        // 1000 + 30 + 10 + 2 (2000 × 0.001) + 1500 (1.5 ms × 1000) nano-units.
        assert_eq!(prices.cost(&usage), 2542);
        // 1 byte-second at a thousandth of a nano-unit still costs one whole nano-unit.
        let tiny = Usage {
            byte_seconds: 1,
            ..Usage::default()
        };
        assert_eq!(prices.cost(&tiny), 1);
        assert_eq!(prices.cost(&Usage::default()), 0);
    }
}
