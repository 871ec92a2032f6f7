//! Fuzz target `aof`: the embedded store's append-only log replay
//! ([`pkv::embedded::aof::fuzzing::replay`], what start-up runs over `<data file>.aof`).
//!
//! The first byte picks the mode:
//!
//! - below `0x80` (a real log starts with `*`): the whole input is a log file, as found on
//!   disk. Checked: nothing panics; a replay that succeeds kept whole records only (the
//!   bytes it kept replay again with nothing torn, to the same state), and kept every byte
//!   unless it says why; replaying the log a second time over what it left changes nothing
//!   (the log doc's promise, which a crash between a snapshot and the cut of the log relies
//!   on).
//! - `0x80` and above: the rest of the input drives a sequence of real commands with fuzzed
//!   arguments (every command of `delta::CHANGES`, so `DELTA` records, and whole-state
//!   writes: `PUT`, `DEL`, `ALL`) against a store whose log is kept in memory, with a
//!   snapshot taken between two of them and the log's end read a few commands earlier (as
//!   a snapshot reads it before its walk). Checked: the log replays to the live state, and
//!   again over that state; the snapshot plus the log from its cut, and the snapshot plus
//!   the whole log (a crash before the cut), replay to the live state; the log cut at a
//!   fuzzed byte replays its whole records only (never half of one), to the state of those.
//!
//! States are compared through the store's own dump (`Store::snapshot`, decoded, sorted by
//! key), so the change counters count too.
//!
//! Memory: run with `-malloc_limit_mb=512` like the other targets. A `SETRANGE` or `SETBIT`
//! may legitimately ask the store for a 512 MB string, as in Redis: the generator keeps
//! offsets below 1 MiB, and a raw log with a `DELTA` of either beyond that is skipped
//! (see [`skipped`], which also skips the one record whose replay reads the clock).

#![no_main]

use libfuzzer_sys::fuzz_target;
use pkv::embedded::aof::fuzzing::{appended, attach_in_memory, replay};
use pkv::embedded::data::Entry;
use pkv::embedded::snapshot::decode;
use pkv::embedded::{now_ms, Store};
use pkv::protocol::Proto;

/// Offsets above this in a raw log's `SETRANGE`/`SETBIT` (bytes, bits / 8) are skipped.
const BIG_OFFSET: i64 = 1 << 20;
/// Commands per structured input.
const MAX_COMMANDS: usize = 96;

type Dump = Vec<(Vec<u8>, Entry)>;

/// The store's keys and entries, through its snapshot encoder and decoder.
fn dump(store: &Store) -> Dump {
    let (bytes, _, _) = store.snapshot(0);
    let mut entries = decode(&bytes, now_ms())
        .expect("a store's own snapshot decodes")
        .entries;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
}

/// A store loaded from a dump, as start-up loads the data file.
fn load(entries: &Dump) -> Store {
    let store = Store::default();
    for (key, entry) in entries {
        store.keys.insert(key, entry.clone());
    }
    store
}

/// The records at the start of `bytes` (pkv's grammar, read independently: `*n`, then
/// n bulk strings), as far as they are whole.
fn records(bytes: &[u8]) -> Vec<Vec<&[u8]>> {
    fn number(bytes: &[u8], pos: &mut usize, mark: u8) -> Option<usize> {
        let rest = bytes.get(*pos..)?;
        if rest.first() != Some(&mark) {
            return None;
        }
        let cr = rest.iter().position(|&b| b == b'\r')?;
        if rest.get(cr + 1) != Some(&b'\n') {
            return None;
        }
        let n = std::str::from_utf8(&rest[1..cr]).ok()?.parse().ok()?;
        *pos += cr + 2;
        Some(n)
    }
    let mut out = Vec::new();
    let mut pos = 0;
    'records: while pos < bytes.len() {
        let mut at = pos;
        let Some(n) = number(bytes, &mut at, b'*') else {
            break;
        };
        let mut parts = Vec::new();
        for _ in 0..n {
            let Some(len) = number(bytes, &mut at, b'$') else {
                break 'records;
            };
            let Some(end) = at.checked_add(len).filter(|e| e + 2 <= bytes.len()) else {
                break 'records;
            };
            parts.push(&bytes[at..end]);
            at = end + 2;
        }
        out.push(parts);
        pos = at;
    }
    out
}

/// True when a raw log holds a record whose replay is legitimate but outside what this
/// target checks:
/// - a `DELTA` of `SETRANGE` or `SETBIT` whose offset is not a small number: the store
///   makes strings of up to 512 MB, which the malloc limit would report (module doc);
/// - a `DELTA` of `XADD` with the ID `*`: pkv logs the ID a stream took, and leaves `*`
///   only when the `XADD` failed on a key of another type (which fails again at replay).
///   Against a stream, replay would take the clock's ID, and two replays would differ.
fn skipped(bytes: &[u8]) -> bool {
    records(bytes).iter().any(|parts| match &parts[..] {
        [verb, _, _, name, _, rest @ ..] if verb == b"DELTA" => {
            if name.eq_ignore_ascii_case(b"XADD") {
                return rest.iter().any(|arg| arg == b"*");
            }
            let per_byte = if name.eq_ignore_ascii_case(b"SETRANGE") {
                1
            } else if name.eq_ignore_ascii_case(b"SETBIT") {
                8
            } else {
                return false;
            };
            rest.first()
                .and_then(|offset| std::str::from_utf8(offset).ok())
                .and_then(|t| t.parse::<i64>().ok())
                .is_none_or(|n| n / per_byte > BIG_OFFSET)
        }
        _ => false,
    })
}

fn raw(log: &[u8]) {
    if skipped(log) {
        return;
    }
    let store = Store::default();
    let Ok((count, valid, torn)) = replay(log, &store) else {
        return;
    };
    assert!(valid <= log.len());
    assert_eq!(torn.is_none(), valid == log.len(), "{torn:?}");
    let once = dump(&store);
    // What was kept is whole records, and all of them.
    let kept = Store::default();
    let again = replay(&log[..valid], &kept).expect("the kept records replay");
    assert_eq!(
        again,
        (count, valid, None),
        "the kept bytes are whole records"
    );
    assert_eq!(
        dump(&kept),
        once,
        "the kept records replay to the same state"
    );
    // Replayed a second time over what it left, the log changes nothing.
    let twice = replay(&log[..valid], &store);
    assert_eq!(
        twice,
        Ok((count, valid, None)),
        "a second replay read the log differently"
    );
    assert_eq!(dump(&store), once, "a second replay changed the state");
}

/// Reads the structured input.
struct Input<'a> {
    bytes: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, rest)) => {
                self.bytes = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Up to 7 raw bytes: numbers and names the generator would not write.
    fn word(&mut self) -> Vec<u8> {
        let n = usize::from(self.byte() % 8).min(self.bytes.len());
        let (word, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        word.to_vec()
    }

    /// A key of a few: the store's commands meet the same keys again.
    fn key(&mut self) -> Vec<u8> {
        format!("k{}", self.byte() % 4).into_bytes()
    }

    fn member(&mut self) -> Vec<u8> {
        format!("m{}", self.byte() % 16).into_bytes()
    }

    /// An integer argument: mostly small, sometimes negative or not a number at all.
    fn int(&mut self) -> Vec<u8> {
        let b = self.byte();
        match b % 16 {
            0 => self.word(),
            1 => b"-1".to_vec(),
            2 => b"-3".to_vec(),
            3 => self.u16().to_string().into_bytes(),
            _ => (b / 16).to_string().into_bytes(),
        }
    }

    fn float(&mut self) -> Vec<u8> {
        match self.byte() % 8 {
            0 => self.word(),
            1 => b"1.5".to_vec(),
            2 => b"-inf".to_vec(),
            3 => b"+inf".to_vec(),
            4 => b"1e308".to_vec(),
            n => format!("-{n}.25").into_bytes(),
        }
    }

    /// A score range bound (ZREMRANGEBYSCORE).
    fn bound(&mut self) -> Vec<u8> {
        match self.byte() % 6 {
            0 => b"-inf".to_vec(),
            1 => b"+inf".to_vec(),
            2 => format!("({}", self.byte() % 20).into_bytes(),
            _ => (self.byte() % 20).to_string().into_bytes(),
        }
    }

    /// A lex range bound (ZREMRANGEBYLEX).
    fn lex(&mut self) -> Vec<u8> {
        match self.byte() % 4 {
            0 => b"-".to_vec(),
            1 => b"+".to_vec(),
            2 => [b"(".as_slice(), &self.member()].concat(),
            _ => [b"[".as_slice(), &self.member()].concat(),
        }
    }

    /// A stream ID argument: explicit (small, so that some go backwards), partial, or `*`.
    fn stream_id(&mut self) -> Vec<u8> {
        match self.byte() % 5 {
            0 => b"*".to_vec(),
            1 => format!("{}-*", self.byte() % 8).into_bytes(),
            2 => self.word(),
            _ => format!("{}-{}", self.byte() % 8, self.byte() % 4).into_bytes(),
        }
    }

    /// A deadline that is far away, or already passed: never one that could pass while the
    /// input runs (the live state and the replayed one are read at different moments).
    fn seconds(&mut self) -> Vec<u8> {
        match self.byte() % 4 {
            0 => b"-1".to_vec(),
            1 => b"0".to_vec(),
            _ => (100_000 + u32::from(self.u16())).to_string().into_bytes(),
        }
    }

    /// The next command, or `None` when the input is used up.
    fn command(&mut self) -> Option<Vec<Vec<u8>>> {
        if self.bytes.is_empty() {
            return None;
        }
        let op = self.byte();
        let k = self.key();
        let mut args: Vec<Vec<u8>> = match op % 64 {
            0 => vec![b"HSET".into(), k, self.member(), self.int()],
            1 => vec![
                b"HMSET".into(),
                k,
                self.member(),
                self.int(),
                self.member(),
                self.word(),
            ],
            2 => vec![b"HSETNX".into(), k, self.member(), self.int()],
            3 => vec![b"HDEL".into(), k, self.member(), self.member()],
            4 => vec![b"HINCRBY".into(), k, self.member(), self.int()],
            5 => vec![b"HINCRBYFLOAT".into(), k, self.member(), self.float()],
            6 => vec![b"SADD".into(), k, self.member(), self.member()],
            7 => vec![b"SREM".into(), k, self.member()],
            8 => vec![b"ZADD".into(), k, self.float(), self.member()],
            9 => {
                let flag =
                    [&b"NX"[..], b"XX", b"GT", b"LT", b"CH", b"INCR"][usize::from(self.byte() % 6)];
                vec![b"ZADD".into(), k, flag.into(), self.int(), self.member()]
            }
            10 => vec![b"ZREM".into(), k, self.member()],
            11 => vec![b"ZINCRBY".into(), k, self.float(), self.member()],
            12 => vec![b"ZREMRANGEBYSCORE".into(), k, self.bound(), self.bound()],
            13 => vec![b"ZREMRANGEBYRANK".into(), k, self.int(), self.int()],
            14 => vec![b"ZREMRANGEBYLEX".into(), k, self.lex(), self.lex()],
            15 => vec![b"ZPOPMIN".into(), k, self.int()],
            16 => vec![b"ZPOPMAX".into(), k],
            17 => vec![b"LPUSH".into(), k, self.member(), self.member()],
            18 => vec![b"RPUSH".into(), k, self.member()],
            19 => vec![b"LPUSHX".into(), k, self.member()],
            20 => vec![b"RPUSHX".into(), k, self.member()],
            21 => vec![b"LSET".into(), k, self.int(), self.member()],
            22 => {
                let side = if self.byte() % 2 == 0 {
                    "BEFORE"
                } else {
                    "AFTER"
                };
                vec![
                    b"LINSERT".into(),
                    k,
                    side.into(),
                    self.member(),
                    self.member(),
                ]
            }
            23 => vec![b"LREM".into(), k, self.int(), self.member()],
            24 => vec![b"LTRIM".into(), k, self.int(), self.int()],
            25 => vec![b"LPOP".into(), k, self.int()],
            26 => vec![b"RPOP".into(), k],
            27 => vec![b"XADD".into(), k, self.stream_id(), b"f".into(), self.int()],
            28 => {
                let n = self.byte() % 6;
                vec![
                    b"XADD".into(),
                    k,
                    b"MAXLEN".into(),
                    n.to_string().into(),
                    self.stream_id(),
                    b"f".into(),
                    self.member(),
                ]
            }
            29 => vec![b"XDEL".into(), k, self.stream_id()],
            30 => vec![b"XTRIM".into(), k, b"MAXLEN".into(), self.int()],
            31 => vec![b"XTRIM".into(), k, b"MINID".into(), self.stream_id()],
            32 => vec![b"XACK".into(), k, b"g".into(), self.stream_id()],
            33 => vec![b"XSETID".into(), k, self.stream_id()],
            34 => vec![
                b"XGROUP".into(),
                b"CREATE".into(),
                k,
                b"g".into(),
                b"0".into(),
                b"MKSTREAM".into(),
            ],
            35 => vec![
                b"XREADGROUP".into(),
                b"GROUP".into(),
                b"g".into(),
                b"c".into(),
                b"COUNT".into(),
                b"2".into(),
                b"STREAMS".into(),
                k,
                b">".into(),
            ],
            36 => vec![
                b"APPEND".into(),
                k,
                vec![b'x'; usize::from(self.byte()) * 40],
            ],
            37 => vec![b"APPEND".into(), k, self.word()],
            38 => {
                let offset = u32::from(self.u16()) % (1 << 20);
                vec![
                    b"SETRANGE".into(),
                    k,
                    offset.to_string().into(),
                    self.word(),
                ]
            }
            39 => {
                let bit = u32::from(self.u16()) * 8 + u32::from(self.byte() % 8);
                let value = if self.byte() % 2 == 0 { "1" } else { "0" };
                vec![b"SETBIT".into(), k, bit.to_string().into(), value.into()]
            }
            40 => vec![b"INCR".into(), k],
            41 => vec![b"DECR".into(), k],
            42 => vec![b"INCRBY".into(), k, self.int()],
            43 => vec![b"DECRBY".into(), k, self.int()],
            44 => vec![b"INCRBYFLOAT".into(), k, self.float()],
            45 => vec![b"PFADD".into(), k, self.member(), self.word()],
            // Whole-state writes and multi-key ones.
            46 => vec![b"SET".into(), k, self.int()],
            47 => vec![b"SET".into(), k, vec![b'v'; usize::from(self.byte()) * 24]],
            48 => vec![b"DEL".into(), k],
            49 => vec![b"EXPIRE".into(), k, self.seconds()],
            50 => vec![b"PERSIST".into(), k],
            51 => vec![b"RENAME".into(), k, self.key()],
            52 => vec![b"MSET".into(), k, self.int(), self.key(), self.word()],
            53 => vec![b"SUNIONSTORE".into(), k, self.key(), self.key()],
            54 => vec![b"COPY".into(), k, self.key(), b"REPLACE".into()],
            55 => vec![
                b"LMOVE".into(),
                k,
                self.key(),
                b"LEFT".into(),
                b"RIGHT".into(),
            ],
            56 => vec![b"SMOVE".into(), k, self.key(), self.member()],
            57 => vec![b"SPOP".into(), k],
            58 => vec![b"GETEX".into(), k, b"EX".into(), self.seconds()],
            59 => vec![b"SET".into(), k, self.int(), b"NX".into()],
            60 => vec![
                b"ZUNIONSTORE".into(),
                k,
                b"2".into(),
                self.key(),
                self.key(),
            ],
            61 => vec![b"GETDEL".into(), k],
            62 => vec![b"HDEL".into(), k, self.member()],
            _ => vec![b"SETEX".into(), k, self.seconds(), self.int()],
        };
        // Sometimes the command name in another case: the log keeps what the client sent.
        if op & 0x40 != 0 {
            args[0].make_ascii_lowercase();
        }
        Some(args)
    }
}

fn structured(bytes: &[u8]) {
    let mut input = Input { bytes };
    let snapshot_at = usize::from(input.byte());
    let delay = usize::from(input.byte() % 4);
    let cut_at = usize::from(input.u16());
    let live = Store::default();
    let aof = attach_in_memory(&live).expect("a new store has no log");
    let mut ends = vec![0];
    let mut cut = None;
    let mut snapshot = None;
    let mut step = 0;
    while step < MAX_COMMANDS {
        if step + delay == snapshot_at {
            cut = Some(appended(&aof).len());
        }
        if step == snapshot_at {
            snapshot = Some(dump(&live));
        }
        // Now and then, the states of two keys as one record, as a ledger step logs them.
        if input.bytes.first() == Some(&0xFF) {
            input.byte();
            let (a, b) = (input.key(), input.key());
            let mut states = Vec::new();
            for key in [&a, &b] {
                live.keys.read(key, now_ms(), |entry| {
                    pkv::embedded::aof::encode_state(&mut states, key, entry)
                });
            }
            aof.record_together(&states);
        } else {
            let Some(args) = input.command() else {
                break;
            };
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let _ = live.run(Proto::Resp2, &args);
        }
        ends.push(appended(&aof).len());
        step += 1;
    }
    let log = appended(&aof);
    let state = dump(&live);

    // The log replays to the live state, and again over it.
    let replayed = Store::default();
    let (_, valid, torn) = replay(&log, &replayed).expect("pkv's own log replays");
    assert_eq!((valid, torn), (log.len(), None));
    assert_eq!(
        dump(&replayed),
        state,
        "the log did not replay to the live state"
    );
    replay(&log, &replayed).expect("pkv's own log replays twice");
    assert_eq!(dump(&replayed), state, "a second replay changed the state");

    // A snapshot taken between two commands, the log's end read a little before it: the
    // snapshot with the log from that end (after a rotation), or with the whole log (a
    // crash before the rotation cut it), replays to the live state.
    if let (Some(snapshot), Some(cut)) = (&snapshot, cut) {
        let after = load(snapshot);
        replay(&log[cut..], &after).expect("the log after the cut replays");
        assert_eq!(dump(&after), state, "snapshot + log from its cut");
        let before = load(snapshot);
        replay(&log, &before).expect("the whole log replays over the snapshot");
        assert_eq!(dump(&before), state, "snapshot + whole log");
    }

    // Cut anywhere (a crash mid-write), the log replays its whole records and no more.
    let cut_at = cut_at % (log.len() + 1);
    let torn = Store::default();
    let (count, valid, why) = replay(&log[..cut_at], &torn).expect("a torn log replays");
    let whole = ends
        .iter()
        .copied()
        .filter(|&e| e <= cut_at)
        .max()
        .unwrap_or(0);
    assert!(
        (whole..=cut_at).contains(&valid),
        "kept {valid} of {cut_at} bytes, but {whole} are whole commands"
    );
    assert_eq!(why.is_none(), valid == cut_at);
    let kept = Store::default();
    assert_eq!(replay(&log[..valid], &kept), Ok((count, valid, None)));
    assert_eq!(dump(&torn), dump(&kept), "a torn log left half a record");
}

fuzz_target!(|data: &[u8]| {
    match data.first() {
        Some(&mode) if mode >= 0x80 => structured(&data[1..]),
        _ => raw(data),
    }
});
