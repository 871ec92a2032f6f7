//! The process's counters and histograms, which the request path, the meter, the upstream
//! pool and the embedded store add to as things happen.
//!
//! They are plain atomics in one static, so each event costs an atomic add and no lookup:
//! commands are counted in an array indexed by command family and result, and a family is
//! found from the command's table row by its position in the table. No figure has a label
//! per account (the cardinality would grow with the customers); per-account usage is in
//! `PKV.BALANCE` and `pkv accounts top`. [`super::exposition`] writes them out.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use crate::auth::token::TokenError;
use crate::commands::table::TABLE;
use crate::commands::CommandSpec;
use crate::meter::price::{Prices, Usage};

/// Prices are held in atto-units (10^-18), charges in nano-units (10^-9).
const ATTO_PER_NANO: u128 = 1_000_000_000;

/// A command family: the section of the command table a row is in, named as Redis names
/// its command groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Connection,
    Transactions,
    Pubsub,
    Generic,
    String,
    Bitmap,
    Hash,
    List,
    Set,
    SortedSet,
    Stream,
    Hyperloglog,
    Geo,
    Pkv,
}

impl Family {
    pub const ALL: [Family; 14] = [
        Family::Connection,
        Family::Transactions,
        Family::Pubsub,
        Family::Generic,
        Family::String,
        Family::Bitmap,
        Family::Hash,
        Family::List,
        Family::Set,
        Family::SortedSet,
        Family::Stream,
        Family::Hyperloglog,
        Family::Geo,
        Family::Pkv,
    ];

    /// The `family` label.
    pub fn label(self) -> &'static str {
        match self {
            Family::Connection => "connection",
            Family::Transactions => "transactions",
            Family::Pubsub => "pubsub",
            Family::Generic => "generic",
            Family::String => "string",
            Family::Bitmap => "bitmap",
            Family::Hash => "hash",
            Family::List => "list",
            Family::Set => "set",
            Family::SortedSet => "sorted_set",
            Family::Stream => "stream",
            Family::Hyperloglog => "hyperloglog",
            Family::Geo => "geo",
            Family::Pkv => "pkv",
        }
    }

    /// The family of a row of the command table.
    pub fn of(spec: &'static CommandSpec) -> Family {
        let families = families();
        // Rows are found by their place in the table (an address difference, checked),
        // so the request path pays no name lookup.
        let offset = (spec as *const CommandSpec as usize).wrapping_sub(TABLE.as_ptr() as usize);
        let index = offset / std::mem::size_of::<CommandSpec>().max(1);
        match TABLE.get(index) {
            Some(row) if std::ptr::eq(row, spec) => families[index],
            _ => TABLE
                .iter()
                .position(|row| row.name == spec.name)
                .map_or(Family::Pkv, |i| families[i]),
        }
    }
}

/// The first row of each section of the command table, and the section's family.
pub(crate) const SECTIONS: [(&str, Family); 14] = [
    ("AUTH", Family::Connection),
    ("MULTI", Family::Transactions),
    ("SUBSCRIBE", Family::Pubsub),
    ("DEL", Family::Generic),
    ("GET", Family::String),
    ("SETBIT", Family::Bitmap),
    ("HSET", Family::Hash),
    ("LPUSH", Family::List),
    ("SADD", Family::Set),
    ("ZADD", Family::SortedSet),
    ("XADD", Family::Stream),
    ("PFADD", Family::Hyperloglog),
    ("GEOADD", Family::Geo),
    ("PKV.SESSION", Family::Pkv),
];

/// Each table row's family, in table order.
fn families() -> &'static [Family] {
    static FAMILIES: OnceLock<Vec<Family>> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let mut current = Family::Connection;
        TABLE
            .iter()
            .map(|row| {
                if let Some((_, family)) = SECTIONS.iter().find(|(first, _)| *first == row.name) {
                    current = *family;
                }
                current
            })
            .collect()
    })
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It ran and its reply was not an error.
    Ok,
    /// Its reply was an error, or no reply came from the backend.
    Error,
    /// pkv did not run it: the balance could not pay for it (`NOQUOTA`).
    Refused,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Error, Outcome::Refused];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Refused => "refused",
        }
    }
}

/// Why an AUTH ended as it did: success, or one reason per kind of refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    Ok,
    Malformed,
    BadAlgorithm,
    UnknownIssuer,
    BadSignature,
    WrongAudience,
    Expired,
    NotYetValid,
    WrongUsage,
    BadQuantity,
    MissingJti,
    TooLong,
    /// The token was already redeemed by a top-up.
    SpentOnTopup,
}

impl AuthResult {
    pub const ALL: [AuthResult; 13] = [
        AuthResult::Ok,
        AuthResult::Malformed,
        AuthResult::BadAlgorithm,
        AuthResult::UnknownIssuer,
        AuthResult::BadSignature,
        AuthResult::WrongAudience,
        AuthResult::Expired,
        AuthResult::NotYetValid,
        AuthResult::WrongUsage,
        AuthResult::BadQuantity,
        AuthResult::MissingJti,
        AuthResult::TooLong,
        AuthResult::SpentOnTopup,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AuthResult::Ok => "ok",
            AuthResult::Malformed => "malformed",
            AuthResult::BadAlgorithm => "bad_algorithm",
            AuthResult::UnknownIssuer => "unknown_issuer",
            AuthResult::BadSignature => "bad_signature",
            AuthResult::WrongAudience => "wrong_audience",
            AuthResult::Expired => "expired",
            AuthResult::NotYetValid => "not_yet_valid",
            AuthResult::WrongUsage => "wrong_usage",
            AuthResult::BadQuantity => "bad_quantity",
            AuthResult::MissingJti => "missing_jti",
            AuthResult::TooLong => "too_long",
            AuthResult::SpentOnTopup => "spent_on_topup",
        }
    }
}

impl From<&TokenError> for AuthResult {
    fn from(e: &TokenError) -> Self {
        match e {
            TokenError::Malformed(_) | TokenError::CriticalHeader => AuthResult::Malformed,
            TokenError::BadAlgorithm(_) => AuthResult::BadAlgorithm,
            TokenError::UnknownIssuer => AuthResult::UnknownIssuer,
            TokenError::BadSignature => AuthResult::BadSignature,
            TokenError::WrongAudience => AuthResult::WrongAudience,
            TokenError::Expired => AuthResult::Expired,
            TokenError::NotYetValid => AuthResult::NotYetValid,
            TokenError::WrongUsage(_) => AuthResult::WrongUsage,
            TokenError::BadQuantity | TokenError::QuantityTooLarge => AuthResult::BadQuantity,
            TokenError::MissingJti => AuthResult::MissingJti,
            TokenError::TooLong => AuthResult::TooLong,
        }
    }
}

/// The metered quantities, in the order of [`Process::revenue`].
pub const QUANTITIES: [&str; 5] = ["ops", "bytes_in", "bytes_out", "byte_seconds", "time_ms"];

/// A latency histogram: fixed buckets, each an atomic counter, so that an observation is a
/// few atomic adds and never waits for a lock (prometheus-client's own histogram takes a
/// mutex per observation, which every connection's every reply would contend for).
pub struct Histogram {
    /// Observations at or below each bound of [`BOUNDS_US`], not cumulative; the last
    /// counts those above every bound.
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
}

/// Bucket bounds, in microseconds: 100 µs to 10 s.
pub const BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

impl Histogram {
    const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BOUNDS_US.len() + 1],
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let index = BOUNDS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(BOUNDS_US.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Sum in seconds, count, and each bucket's bound in seconds with its own count (the
    /// encoder makes them cumulative).
    pub fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets = BOUNDS_US
            .iter()
            .map(|us| *us as f64 / 1e6)
            .chain([f64::INFINITY])
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect::<Vec<_>>();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Every process-wide figure.
pub struct Process {
    /// Commands by family and outcome.
    commands: [[AtomicU64; Outcome::ALL.len()]; Family::ALL.len()],
    /// From the moment a read's requests are taken up to their replies written.
    pub client_latency: Histogram,
    /// One pipeline's round trip to the backend.
    pub backend_latency: Histogram,
    /// Commands refused `NOQUOTA`.
    pub noquota: AtomicU64,
    auth: [AtomicU64; AuthResult::ALL.len()],
    /// Whole units credited by redeemed quota tokens (AUTH and PKV.TOPUP).
    pub credited_units: AtomicU64,
    /// Tokens redeemed.
    pub redeemed: AtomicU64,
    /// Nano-units charged, per quantity of [`QUANTITIES`] (each quantity's share rounded
    /// down; a command's total is rounded up, so these sum to at most [`Self::spent`]).
    revenue: [AtomicU64; QUANTITIES.len()],
    /// Nano-units charged in all.
    pub spent: AtomicU64,
    /// Connections holding a Pub/Sub subscription.
    pub subscribed: AtomicI64,
    /// Upstream connections opened by the pool, and attempts that failed.
    pub upstream_connects: AtomicU64,
    pub upstream_connect_failures: AtomicU64,
    /// Keys the embedded store's active expiry deleted.
    pub expired_keys: AtomicU64,
}

static PROCESS: LazyLock<Process> = LazyLock::new(|| Process {
    commands: [const { [const { AtomicU64::new(0) }; Outcome::ALL.len()] }; Family::ALL.len()],
    client_latency: Histogram::new(),
    backend_latency: Histogram::new(),
    noquota: AtomicU64::new(0),
    auth: [const { AtomicU64::new(0) }; AuthResult::ALL.len()],
    credited_units: AtomicU64::new(0),
    redeemed: AtomicU64::new(0),
    revenue: [const { AtomicU64::new(0) }; QUANTITIES.len()],
    spent: AtomicU64::new(0),
    subscribed: AtomicI64::new(0),
    upstream_connects: AtomicU64::new(0),
    upstream_connect_failures: AtomicU64::new(0),
    expired_keys: AtomicU64::new(0),
});

/// The process's figures.
pub fn process() -> &'static Process {
    &PROCESS
}

impl Process {
    pub fn commands(&self, family: Family, outcome: Outcome) -> u64 {
        self.commands[family as usize][outcome as usize].load(Ordering::Relaxed)
    }

    pub fn auth(&self, result: AuthResult) -> u64 {
        self.auth[result as usize].load(Ordering::Relaxed)
    }

    pub fn revenue(&self, quantity: usize) -> u64 {
        self.revenue[quantity].load(Ordering::Relaxed)
    }
}

/// A command of `family` ended with `outcome`.
pub fn command(family: Family, outcome: Outcome) {
    PROCESS.commands[family as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
}

/// A command of `spec`'s family was refused `NOQUOTA`.
pub fn refused(spec: &'static CommandSpec) {
    command(Family::of(spec), Outcome::Refused);
    PROCESS.noquota.fetch_add(1, Ordering::Relaxed);
}

/// An AUTH ended with `result`.
pub fn auth(result: AuthResult) {
    PROCESS.auth[result as usize].fetch_add(1, Ordering::Relaxed);
}

/// A token refused at AUTH: counts its reason, and returns the client's line for it.
pub fn token_refused(e: &TokenError) -> String {
    auth(AuthResult::from(e));
    e.to_string()
}

/// A quota token of `quantity` units was credited.
pub fn credited(quantity: i64) {
    PROCESS.redeemed.fetch_add(1, Ordering::Relaxed);
    PROCESS
        .credited_units
        .fetch_add(u64::try_from(quantity).unwrap_or(0), Ordering::Relaxed);
}

/// Usage charged at `prices`, `spent` nano-units in all.
pub fn charged(prices: &Prices, usage: &Usage, spent: i64) {
    if spent <= 0 {
        return;
    }
    PROCESS
        .spent
        .fetch_add(u64::try_from(spent).unwrap_or(0), Ordering::Relaxed);
    let nanos = |q: u64, p: u128, per: u128| {
        u64::try_from(u128::from(q).saturating_mul(p) / per).unwrap_or(u64::MAX)
    };
    let parts = [
        nanos(usage.ops, prices.op.0, ATTO_PER_NANO),
        nanos(usage.bytes_in, prices.byte_in.0, ATTO_PER_NANO),
        nanos(usage.bytes_out, prices.byte_out.0, ATTO_PER_NANO),
        nanos(usage.byte_seconds, prices.byte_second.0, ATTO_PER_NANO),
        // Time is counted in microseconds and priced per millisecond.
        nanos(usage.time_us, prices.time_ms.0, ATTO_PER_NANO * 1000),
    ];
    for (counter, part) in PROCESS.revenue.iter().zip(parts) {
        if part > 0 {
            counter.fetch_add(part, Ordering::Relaxed);
        }
    }
}

/// A connection holding a Pub/Sub subscription, counted while it lives.
#[derive(Debug)]
pub struct Subscribed(());

impl Subscribed {
    pub fn new() -> Self {
        PROCESS.subscribed.fetch_add(1, Ordering::Relaxed);
        Subscribed(())
    }
}

impl Default for Subscribed {
    fn default() -> Self {
        Subscribed::new()
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        PROCESS.subscribed.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(name: &str) -> Family {
        let spec = TABLE.iter().find(|s| s.name == name).unwrap();
        Family::of(spec)
    }

    #[test]
    fn every_section_of_the_table_is_found_in_order() {
        let mut last = 0;
        for (first, _) in SECTIONS {
            let at = TABLE.iter().position(|s| s.name == first);
            let at = at.unwrap_or_else(|| panic!("no row {first}"));
            assert!(at >= last, "{first} out of order");
            last = at;
        }
    }

    #[test]
    fn rows_get_their_sections_family() {
        assert_eq!(family("AUTH"), Family::Connection);
        assert_eq!(family("CLIENT|SETNAME"), Family::Connection);
        assert_eq!(family("EXEC"), Family::Transactions);
        assert_eq!(family("PUBLISH"), Family::Pubsub);
        assert_eq!(family("EXPIRE"), Family::Generic);
        assert_eq!(family("GET"), Family::String);
        assert_eq!(family("INCRBY"), Family::String);
        assert_eq!(family("BITCOUNT"), Family::Bitmap);
        assert_eq!(family("HGETALL"), Family::Hash);
        assert_eq!(family("BLPOP"), Family::List);
        assert_eq!(family("SMEMBERS"), Family::Set);
        assert_eq!(family("ZRANGE"), Family::SortedSet);
        assert_eq!(family("XREADGROUP"), Family::Stream);
        assert_eq!(family("PFCOUNT"), Family::Hyperloglog);
        assert_eq!(family("GEOSEARCH"), Family::Geo);
        assert_eq!(family("PKV.BALANCE"), Family::Pkv);
    }

    #[test]
    fn histogram_buckets_each_observation_once() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let (sum, count, buckets) = h.read();
        assert_eq!(count, 4);
        assert_eq!(buckets[0], (0.0001, 2));
        assert_eq!(buckets[5], (0.005, 1));
        assert_eq!(buckets[BOUNDS_US.len()], (f64::INFINITY, 1));
        assert!((sum - 60.00315).abs() < 1e-9, "{sum}");
    }
}
