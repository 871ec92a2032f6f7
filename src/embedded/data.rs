//! What the embedded store keeps under each key.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;

/// A key's value and its deadline.
#[derive(Debug, Clone)]
pub struct Entry {
    pub data: Data,
    /// When the key expires, in milliseconds since the epoch; `None` keeps it forever.
    pub expires_at: Option<i64>,
    /// What the memory accounting last counted for the value ([`super::memory`]).
    pub counted: super::memory::Counted,
    /// Which logged change made this state: the append-only log's change records apply
    /// only to the state they were made from ([`super::delta`]). 0 before any.
    pub version: u64,
}

/// Two entries are equal when their values, deadlines and change counters are: the
/// accounting's figure is not part of the value.
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
            && self.expires_at == other.expires_at
            && self.version == other.version
    }
}

impl Entry {
    pub fn new(data: Data) -> Self {
        Entry::expiring(data, None)
    }

    /// A value with its deadline.
    pub fn expiring(data: Data, expires_at: Option<i64>) -> Self {
        Entry {
            data,
            expires_at,
            counted: Default::default(),
            version: 0,
        }
    }

    /// True once the deadline has passed at `now` (milliseconds since the epoch).
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// The six data types.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Str(Vec<u8>),
    List(VecDeque<Vec<u8>>),
    Hash(HashMap<Vec<u8>, Vec<u8>>),
    Set(HashSet<Vec<u8>>),
    ZSet(ZSet),
    Stream(Box<super::stream::Stream>),
}

impl Data {
    /// The name `TYPE` answers with.
    pub fn type_name(&self) -> &'static str {
        match self {
            Data::Str(_) => "string",
            Data::List(_) => "list",
            Data::Hash(_) => "hash",
            Data::Set(_) => "set",
            Data::ZSet(_) => "zset",
            Data::Stream(_) => "stream",
        }
    }

    /// An aggregate with no elements left; Redis deletes such keys, and so does the store.
    pub fn is_empty_aggregate(&self) -> bool {
        match self {
            Data::Str(_) => false,
            Data::List(l) => l.is_empty(),
            Data::Hash(h) => h.is_empty(),
            Data::Set(s) => s.is_empty(),
            Data::ZSet(z) => z.is_empty(),
            // An empty stream is a value of its own (XADD with MAXLEN 0, XGROUP MKSTREAM).
            Data::Stream(_) => false,
        }
    }

    /// Holds enough that reading all of it takes long (over 8192 elements, or a string
    /// over 1 MiB); O(1).
    pub fn is_big(&self) -> bool {
        const ELEMENTS: usize = 8192;
        match self {
            Data::Str(s) => s.len() > 1 << 20,
            Data::List(l) => l.len() > ELEMENTS,
            Data::Hash(h) => h.len() > ELEMENTS,
            Data::Set(s) => s.len() > ELEMENTS,
            Data::ZSet(z) => z.len() > ELEMENTS,
            Data::Stream(s) => s.len() > ELEMENTS,
        }
    }

    /// An estimate of the bytes the value occupies, for `MEMORY USAGE`.
    pub fn size(&self) -> usize {
        // Per-element bookkeeping, roughly what a compact encoding spends.
        const ELEMENT: usize = 16;
        match self {
            Data::Str(s) => s.len(),
            Data::List(l) => l.iter().map(|e| e.len() + ELEMENT).sum(),
            Data::Hash(h) => h.iter().map(|(f, v)| f.len() + v.len() + ELEMENT).sum(),
            Data::Set(s) => s.iter().map(|e| e.len() + ELEMENT).sum(),
            Data::ZSet(z) => z.iter().map(|(m, _)| m.len() + 8 + ELEMENT).sum(),
            Data::Stream(s) => s.size(),
        }
    }
}

/// A score with a total order (the store never keeps NaN; -0 is kept as 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A sorted set: members by score (ties by member bytes), and each member's score.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZSet {
    scores: HashMap<Vec<u8>, f64>,
    order: BTreeSet<(Score, Vec<u8>)>,
}

impl ZSet {
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    /// Sets `member`'s score; returns the previous score.
    pub fn insert(&mut self, member: Vec<u8>, score: f64) -> Option<f64> {
        let score = if score == 0.0 { 0.0 } else { score };
        let old = self.scores.insert(member.clone(), score);
        if let Some(old) = old {
            self.order.remove(&(Score(old), member.clone()));
        }
        self.order.insert((Score(score), member));
        old
    }

    /// Removes `member`; returns its score.
    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let score = self.scores.remove(member)?;
        self.order.remove(&(Score(score), member.to_vec()));
        Some(score)
    }

    /// Members in order: lowest score first, ties by member bytes.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&[u8], f64)> + '_ {
        self.order.iter().map(|(s, m)| (m.as_slice(), s.0))
    }

    /// Members with `min <= score <= max`, in order (use the iterator's `rev` for the
    /// other direction).
    pub fn range_by_score(
        &self,
        min: f64,
        max: f64,
    ) -> impl DoubleEndedIterator<Item = (&[u8], f64)> + '_ {
        let (min, max) = if min <= max { (min, max) } else { (1.0, 0.0) };
        let lower = (Score(min), Vec::new());
        self.order
            .range(lower..)
            .take_while(move |(s, _)| s.0 <= max)
            .map(|(s, m)| (m.as_slice(), s.0))
            // `take_while` is not double-ended; collect the (usually short) range.
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// Members between two `(score, member)` positions of the order, in order (use the
    /// iterator's `rev` for the other direction). An empty or inverted range yields nothing.
    pub fn range(
        &self,
        lower: Bound<(f64, &[u8])>,
        upper: Bound<(f64, &[u8])>,
    ) -> impl DoubleEndedIterator<Item = (&[u8], f64)> + '_ {
        let own = |b: Bound<(f64, &[u8])>| {
            b.map(|(s, m)| (Score(if s == 0.0 { 0.0 } else { s }), m.to_vec()))
        };
        let (lower, upper) = (own(lower), own(upper));
        // `BTreeSet::range` panics on an inverted range; such a range is empty.
        let valid = match (&lower, &upper) {
            (Bound::Included(a), Bound::Included(b)) => a <= b,
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                a < b
            }
            _ => true,
        };
        valid
            .then(|| self.order.range((lower, upper)))
            .into_iter()
            .flatten()
            .map(|(s, m)| (m.as_slice(), s.0))
    }

    /// Removes and returns the member with the lowest score (ties: the first by bytes).
    pub fn pop_first(&mut self) -> Option<(Vec<u8>, f64)> {
        let (score, member) = self.order.pop_first()?;
        self.scores.remove(&member);
        Some((member, score.0))
    }

    /// Removes and returns the member with the highest score (ties: the last by bytes).
    pub fn pop_last(&mut self) -> Option<(Vec<u8>, f64)> {
        let (score, member) = self.order.pop_last()?;
        self.scores.remove(&member);
        Some((member, score.0))
    }

    /// 0-based rank of `member`, lowest score first.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let score = self.scores.get(member)?;
        Some(self.order.range(..(Score(*score), member.to_vec())).count())
    }
}
