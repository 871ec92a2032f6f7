//! The stream value type: entries by ID, consumer groups with their pending entries, and
//! the counters Redis 7.0 keeps beside them (last ID, entries added, max deleted ID, first
//! ID), which XINFO reports and the groups' lag is computed from.
//!
//! Redis keeps entries in listpack nodes of at most 100 entries under a radix tree; the
//! store keeps them in a `BTreeMap`, and remembers only where Redis's nodes would start
//! (`nodes`), because approximate trimming (`MAXLEN ~`) removes whole nodes and nothing
//! else, and its answer depends on where they begin.

use std::collections::{BTreeMap, BTreeSet};

/// Entries per node, Redis's default `stream-node-max-entries`.
pub const NODE_ENTRIES: u32 = 100;

/// A stream entry ID, `ms-seq`; the derived order is Redis's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    pub fn new(ms: u64, seq: u64) -> Self {
        StreamId { ms, seq }
    }

    /// The next ID, or `None` past the last one.
    pub fn next(self) -> Option<StreamId> {
        match (self.ms, self.seq) {
            (u64::MAX, u64::MAX) => None,
            (ms, u64::MAX) => Some(StreamId::new(ms + 1, 0)),
            (ms, seq) => Some(StreamId::new(ms, seq + 1)),
        }
    }

    /// The previous ID, or `None` before 0-0.
    pub fn prev(self) -> Option<StreamId> {
        match (self.ms, self.seq) {
            (0, 0) => None,
            (ms, 0) => Some(StreamId::new(ms - 1, u64::MAX)),
            (ms, seq) => Some(StreamId::new(ms, seq - 1)),
        }
    }

    pub fn is_zero(self) -> bool {
        self == StreamId::MIN
    }

    /// `ms-seq`, as replies spell it.
    pub fn text(self) -> String {
        format!("{}-{}", self.ms, self.seq)
    }
}

/// An entry's field-value pairs, in the order they were added.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stream {
    pub entries: BTreeMap<StreamId, Fields>,
    /// Redis's nodes by the ID they start at: a node takes [`NODE_ENTRIES`] appends.
    pub nodes: BTreeMap<StreamId, Node>,
    pub last_id: StreamId,
    /// The first entry's ID, 0-0 when empty (as Redis records it).
    pub first_id: StreamId,
    pub max_deleted: StreamId,
    pub entries_added: u64,
    /// Groups by name (Redis lists them in name order).
    pub groups: BTreeMap<Vec<u8>, Group>,
}

/// One of Redis's nodes: it keeps its deleted entries (flagged) until it goes whole.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Node {
    /// Entries appended to it, deleted ones included.
    pub appended: u32,
    /// The last appended ID, deleted or not (what MINID trimming compares).
    pub last: StreamId,
}

/// A consumer group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    pub last_id: StreamId,
    /// Entries the group has read, when known (Redis's -1 is `None`).
    pub entries_read: Option<u64>,
    /// Entries delivered and not acknowledged.
    pub pel: BTreeMap<StreamId, Pending>,
    pub consumers: BTreeMap<Vec<u8>, Consumer>,
}

/// A delivered, unacknowledged entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub consumer: Vec<u8>,
    /// Last delivery, ms since the epoch.
    pub delivered_at: i64,
    pub deliveries: u64,
}

/// A consumer of a group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Consumer {
    /// Last time it read or claimed, ms since the epoch.
    pub seen_at: i64,
    pub pel: BTreeSet<StreamId>,
}

impl Stream {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends an entry whose ID the caller checked is above `last_id`.
    pub fn append(&mut self, id: StreamId, fields: Fields) {
        match self.nodes.iter_mut().next_back() {
            Some((_, node)) if node.appended < NODE_ENTRIES => {
                node.appended += 1;
                node.last = id;
            }
            _ => {
                self.nodes.insert(
                    id,
                    Node {
                        appended: 1,
                        last: id,
                    },
                );
            }
        }
        if self.entries.is_empty() {
            self.first_id = id;
        }
        self.entries.insert(id, fields);
        self.last_id = id;
        self.entries_added += 1;
    }

    /// The node that holds `id`.
    fn node_of(&self, id: StreamId) -> Option<StreamId> {
        self.nodes.range(..=id).next_back().map(|(start, _)| *start)
    }

    /// Live entries of the node starting at `start`.
    fn node_live(&self, start: StreamId) -> usize {
        let end = self
            .nodes
            .range((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))
            .next()
            .map(|(s, _)| *s);
        match end {
            Some(end) => self.entries.range(start..end).count(),
            None => self.entries.range(start..).count(),
        }
    }

    /// Removes one entry (XDEL): a node left with no live entry goes, as in Redis.
    pub fn delete(&mut self, id: StreamId) -> bool {
        if self.entries.remove(&id).is_none() {
            return false;
        }
        if let Some(node) = self.node_of(id) {
            if self.node_live(node) == 0 {
                self.nodes.remove(&node);
            }
        }
        if id > self.max_deleted {
            self.max_deleted = id;
        }
        self.refresh_first();
        true
    }

    fn refresh_first(&mut self) {
        self.first_id = self.entries.keys().next().copied().unwrap_or(StreamId::MIN);
    }

    /// Trims as XADD and XTRIM do: `maxlen` keeps at most that many entries, `minid` drops
    /// those below it; `approx` removes whole nodes only, and at most `limit` entries
    /// (0: no limit). Returns the entries removed.
    pub fn trim(&mut self, strategy: Trim, approx: bool, limit: u64) -> u64 {
        if let Trim::MaxLen(max) = strategy {
            if self.entries.len() as u64 <= max {
                return 0;
            }
        }
        let mut deleted = 0u64;
        // Node by node from the first; only the nodes it works on are visited.
        let mut next = self.nodes.keys().next().copied();
        while let Some(start) = next {
            let start = &start;
            let len = self.entries.len() as u64;
            if let Trim::MaxLen(max) = strategy {
                if len <= max {
                    break;
                }
            }
            let end = self
                .nodes
                .range((
                    std::ops::Bound::Excluded(*start),
                    std::ops::Bound::Unbounded,
                ))
                .next()
                .map(|(s, _)| *s);
            next = end;
            let ids: Vec<StreamId> = match end {
                Some(end) => self.entries.range(*start..end).map(|(k, _)| *k).collect(),
                None => self.entries.range(*start..).map(|(k, _)| *k).collect(),
            };
            let live = ids.len() as u64;
            if limit > 0 && deleted + live > limit {
                break;
            }
            let whole = match strategy {
                Trim::MaxLen(max) => len - live >= max,
                Trim::MinId(min) => self.nodes.get(start).is_none_or(|n| n.last < min),
            };
            if whole {
                for id in &ids {
                    self.entries.remove(id);
                }
                self.nodes.remove(start);
                deleted += live;
                continue;
            }
            if approx {
                break;
            }
            // Exact trimming inside the node: the node stays, with its entries marked
            // deleted, as Redis leaves it.
            for id in ids {
                let stop = match strategy {
                    Trim::MaxLen(max) => self.entries.len() as u64 <= max,
                    Trim::MinId(min) => id >= min,
                };
                if stop {
                    break;
                }
                self.entries.remove(&id);
                deleted += 1;
            }
            break;
        }
        if deleted > 0 {
            self.refresh_first();
        }
        deleted
    }

    /// Redis's `streamRangeHasTombstones` from `start` to the end.
    pub fn has_tombstones_from(&self, start: StreamId) -> bool {
        if self.entries.is_empty() || self.max_deleted.is_zero() {
            return false;
        }
        if self.first_id > self.max_deleted {
            return false;
        }
        start <= self.max_deleted
    }

    /// Redis's `streamEstimateDistanceFromFirstEverEntry`: how many entries were added up to
    /// `id`, when that can be known.
    pub fn entries_up_to(&self, id: StreamId) -> Option<u64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        if self.entries.is_empty() && id <= self.last_id {
            return Some(self.entries_added);
        }
        if id == self.last_id {
            return Some(self.entries_added);
        }
        if id > self.last_id {
            return None;
        }
        if self.max_deleted.is_zero() || self.max_deleted < self.first_id {
            let len = self.entries.len() as u64;
            if id < self.first_id {
                return Some(self.entries_added - len);
            }
            if id == self.first_id {
                return Some(self.entries_added - len + 1);
            }
        }
        None
    }

    /// A group's lag, when it can be known (Redis's `streamReplyWithCGLag`). Negative when
    /// ENTRIESREAD or XSETID claim more than was added, as Redis answers then.
    pub fn lag(&self, group: &Group) -> Option<i64> {
        let lag = |read: u64| (self.entries_added as i64).wrapping_sub(read as i64);
        if self.entries_added == 0 {
            return Some(0);
        }
        if let Some(read) = group.entries_read {
            if !self.has_tombstones_from(group.last_id) {
                return Some(lag(read));
            }
        }
        self.entries_up_to(group.last_id).map(lag)
    }

    /// An estimate of the bytes the stream occupies, for `MEMORY USAGE`: grows with every
    /// entry, field, group, consumer and pending entry.
    pub fn size(&self) -> usize {
        const ENTRY: usize = 16;
        let entries: usize = self
            .entries
            .values()
            .map(|f| ENTRY + f.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>())
            .sum();
        let groups: usize = self
            .groups
            .iter()
            .map(|(name, g)| {
                name.len()
                    + 32
                    + g.pel.len() * 40
                    + g.consumers
                        .iter()
                        .map(|(n, c)| n.len() + 16 + c.pel.len() * 16)
                        .sum::<usize>()
            })
            .sum();
        entries + groups + self.nodes.len() * 16
    }

    /// The stream as bytes, for the snapshot.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let id = |out: &mut Vec<u8>, id: StreamId| {
            out.extend_from_slice(&id.ms.to_le_bytes());
            out.extend_from_slice(&id.seq.to_le_bytes());
        };
        let n = |out: &mut Vec<u8>, n: u64| out.extend_from_slice(&n.to_le_bytes());
        let blob = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            out.extend_from_slice(b);
        };
        id(&mut out, self.last_id);
        id(&mut out, self.max_deleted);
        n(&mut out, self.entries_added);
        n(&mut out, self.nodes.len() as u64);
        for (start, node) in &self.nodes {
            id(&mut out, *start);
            n(&mut out, u64::from(node.appended));
            id(&mut out, node.last);
        }
        n(&mut out, self.entries.len() as u64);
        for (eid, fields) in &self.entries {
            id(&mut out, *eid);
            n(&mut out, fields.len() as u64);
            for (f, v) in fields {
                blob(&mut out, f);
                blob(&mut out, v);
            }
        }
        n(&mut out, self.groups.len() as u64);
        for (name, g) in &self.groups {
            blob(&mut out, name);
            id(&mut out, g.last_id);
            n(&mut out, g.entries_read.map_or(u64::MAX, |r| r));
            n(&mut out, g.consumers.len() as u64);
            for (cname, c) in &g.consumers {
                blob(&mut out, cname);
                n(&mut out, c.seen_at as u64);
            }
            n(&mut out, g.pel.len() as u64);
            for (pid, p) in &g.pel {
                id(&mut out, *pid);
                blob(&mut out, &p.consumer);
                n(&mut out, p.delivered_at as u64);
                n(&mut out, p.deliveries);
            }
        }
        out
    }

    /// The stream [`Stream::encode`] wrote, or `None` when the bytes do not hold one.
    pub fn decode(bytes: &[u8]) -> Option<Stream> {
        let mut r = Reader { bytes };
        let mut s = Stream {
            last_id: r.id()?,
            max_deleted: r.id()?,
            entries_added: r.u64()?,
            ..Stream::default()
        };
        for _ in 0..r.count(40)? {
            let start = r.id()?;
            let appended = u32::try_from(r.u64()?).ok()?;
            let last = r.id()?;
            s.nodes.insert(start, Node { appended, last });
        }
        for _ in 0..r.count(24)? {
            let id = r.id()?;
            let mut fields = Vec::new();
            for _ in 0..r.count(16)? {
                fields.push((r.blob()?.to_vec(), r.blob()?.to_vec()));
            }
            s.entries.insert(id, fields);
        }
        for _ in 0..r.count(40)? {
            let name = r.blob()?.to_vec();
            let mut g = Group {
                last_id: r.id()?,
                entries_read: Some(r.u64()?).filter(|n| *n != u64::MAX),
                ..Group::default()
            };
            for _ in 0..r.count(16)? {
                let cname = r.blob()?.to_vec();
                let seen_at = r.u64()? as i64;
                g.consumers.insert(
                    cname,
                    Consumer {
                        seen_at,
                        pel: BTreeSet::new(),
                    },
                );
            }
            for _ in 0..r.count(40)? {
                let id = r.id()?;
                let consumer = r.blob()?.to_vec();
                let delivered_at = r.u64()? as i64;
                let deliveries = r.u64()?;
                g.consumers.get_mut(&consumer)?.pel.insert(id);
                g.pel.insert(
                    id,
                    Pending {
                        consumer,
                        delivered_at,
                        deliveries,
                    },
                );
            }
            s.groups.insert(name, g);
        }
        if !r.bytes.is_empty() {
            return None;
        }
        s.refresh_first();
        Some(s)
    }
}

/// How a stream is trimmed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trim {
    MaxLen(u64),
    MinId(StreamId),
}

/// Reads what [`Stream::encode`] wrote.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn id(&mut self) -> Option<StreamId> {
        Some(StreamId::new(self.u64()?, self.u64()?))
    }

    /// A count of items of at least `min_each` bytes, refused when the bytes left cannot
    /// hold that many (a corrupt count must not make the loader spin or allocate).
    fn count(&mut self, min_each: usize) -> Option<usize> {
        let n = usize::try_from(self.u64()?).ok()?;
        (n <= self.bytes.len() / min_each.max(1)).then_some(n)
    }

    fn blob(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u64()?).ok()?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(n: u64) -> Stream {
        let mut s = Stream::default();
        for i in 1..=n {
            s.append(StreamId::new(i, 0), vec![(b"f".to_vec(), b"v".to_vec())]);
        }
        s
    }

    #[test]
    fn approximate_trimming_removes_whole_nodes_only() {
        let mut s = stream(250);
        assert_eq!(s.trim(Trim::MaxLen(10), true, 0), 200);
        assert_eq!(s.len(), 50);
        assert_eq!(s.trim(Trim::MaxLen(10), false, 0), 40);
        assert_eq!(s.first_id, StreamId::new(241, 0));
    }

    #[test]
    fn encoding_round_trips() {
        let mut s = stream(120);
        s.delete(StreamId::new(5, 0));
        let mut g = Group {
            last_id: StreamId::new(7, 0),
            entries_read: Some(6),
            ..Group::default()
        };
        g.consumers.insert(
            b"c".to_vec(),
            Consumer {
                seen_at: 3,
                pel: [StreamId::new(7, 0)].into(),
            },
        );
        g.pel.insert(
            StreamId::new(7, 0),
            Pending {
                consumer: b"c".to_vec(),
                delivered_at: 9,
                deliveries: 2,
            },
        );
        s.groups.insert(b"g".to_vec(), g);
        assert_eq!(Stream::decode(&s.encode()), Some(s.clone()));
        let bytes = s.encode();
        assert_eq!(Stream::decode(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn size_grows_with_entries() {
        let sizes: Vec<usize> = (0..50).map(|n| stream(n).size()).collect();
        assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
    }
}
