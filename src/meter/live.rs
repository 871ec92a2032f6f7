//! The meter's settings a reload may change (prices, lease size, low-balance bound), read
//! on every command.
//!
//! A sequence lock over atomic words: a reader copies the words and tries again if a reload
//! wrote in between, so reading takes no lock, writes nothing shared and allocates nothing,
//! where a reference-counted swap costs each command more than its pricing does.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Mutex;

use super::{MeterConfig, Price, Prices};

/// Five prices of two words each, then the lease and the low-balance bound.
const WORDS: usize = 12;

/// What a reader gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveConfig {
    pub prices: Prices,
    pub lease: i64,
    pub low_balance: i64,
}

/// The current [`LiveConfig`], replaced whole by [`Live::store`].
pub struct Live {
    /// Odd while a write is under way; each write adds two.
    seq: AtomicU64,
    words: [AtomicU64; WORDS],
    /// One writer at a time.
    writer: Mutex<()>,
}

fn encode(config: &MeterConfig) -> [u64; WORDS] {
    let p = &config.prices;
    let mut words = [0; WORDS];
    for (i, price) in [p.op, p.byte_in, p.byte_out, p.byte_second, p.time_ms]
        .iter()
        .enumerate()
    {
        words[2 * i] = price.0 as u64;
        words[2 * i + 1] = (price.0 >> 64) as u64;
    }
    words[10] = config.lease as u64;
    words[11] = config.low_balance as u64;
    words
}

fn decode(words: &[u64; WORDS]) -> LiveConfig {
    let price = |i: usize| Price(u128::from(words[2 * i]) | (u128::from(words[2 * i + 1]) << 64));
    LiveConfig {
        prices: Prices {
            op: price(0),
            byte_in: price(1),
            byte_out: price(2),
            byte_second: price(3),
            time_ms: price(4),
        },
        lease: words[10] as i64,
        low_balance: words[11] as i64,
    }
}

impl Live {
    pub fn new(config: &MeterConfig) -> Self {
        Live {
            seq: AtomicU64::new(0),
            words: encode(config).map(AtomicU64::new),
            writer: Mutex::new(()),
        }
    }

    /// The settings in force, as one consistent copy.
    pub fn read(&self) -> LiveConfig {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                let words = std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed));
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == before {
                    return decode(&words);
                }
            }
            std::hint::spin_loop();
        }
    }

    /// Replaces the settings; readers see the old ones or the new ones, never a mix.
    pub fn store(&self, config: &MeterConfig) {
        let _one_writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let words = encode(config);
        self.seq.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (word, value) in self.words.iter().zip(words) {
            word.store(value, Ordering::Relaxed);
        }
        self.seq.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_stored_exactly() {
        let config = |op: &str, lease| MeterConfig {
            enabled: true,
            prices: Prices {
                op: Price::parse(op).unwrap(),
                byte_in: Price::parse("0.000000001").unwrap(),
                byte_out: Price(u128::MAX >> 1),
                byte_second: Price::default(),
                time_ms: Price::parse("1000000").unwrap(),
            },
            lease,
            low_balance: -5,
            hold_back: std::time::Duration::ZERO,
        };
        let first = config("0.001", 10);
        let live = Live::new(&first);
        let expect = |c: &MeterConfig| LiveConfig {
            prices: c.prices,
            lease: c.lease,
            low_balance: c.low_balance,
        };
        assert_eq!(live.read(), expect(&first));
        let second = config("12.5", i64::MAX);
        live.store(&second);
        assert_eq!(live.read(), expect(&second));
    }
}
