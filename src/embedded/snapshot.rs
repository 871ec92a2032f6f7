//! Persistence of the embedded store: snapshots to `PKV_DATA_FILE`.
//!
//! With `PKV_DATA_FILE` set, the store loads the file at start-up ([`Store::load`]), saves
//! a snapshot every `PKV_SNAPSHOT_SECONDS` while pkv serves, and a last one at graceful
//! shutdown, after the ledger is settled. Without it, nothing is read or written. The
//! append-only log beside it ([`super::aof`]) holds the writes since the last snapshot;
//! each snapshot cuts it.
//!
//! # Taking a snapshot
//!
//! Every stripe of the store's gate is held shared for the whole walk over the shards, so
//! no multi-key command (they hold the stripes of their keys exclusively: MSET, RENAME,
//! EXEC) is ever half-seen. A ledger step (which holds its keys' stripes shared) may be:
//! its log record is kept past the snapshot and replay completes it. Each shard is encoded
//! under its read lock, one at a time; single-key commands
//! keep running on the other shards, so each key is saved as it was at the moment its shard
//! was visited. Expired keys are not saved. The ledger lives in the keyspace (under
//! `pkv:ledger:`) and is saved with the data. The encoded bytes are then written with the
//! locks released, off the async threads: to `<file>.tmp` in the same directory (mode 0600),
//! fsynced, renamed over `<file>`, and the directory fsynced. A crash at any moment leaves
//! either the previous snapshot or the new one, never a mix.
//!
//! # Loading
//!
//! No file: the store starts empty. A file that fails any check (magic, version, size,
//! checksum, lengths, types, duplicates) stops start-up with one line naming the file and
//! the problem; the file is never modified, renamed or overwritten. Keys whose deadline
//! passed while pkv was down are skipped: deadlines are absolute times.
//!
//! # Format (version 2)
//!
//! Integers are little endian; a *blob* is a `u64` length followed by that many bytes.
//!
//! ```text
//! header   magic "PKVSNAP\0" (8 bytes)
//!          version       u32 = 2 (1 is still read: its flags never have bit 1)
//!          file size     u64   total bytes of the file, trailer included
//!          saved at      i64   milliseconds since the epoch
//! entries  type          u8    1 string, 2 list, 3 hash, 4 set, 5 sorted set
//!          flags         u8    bit 0: has a deadline; bit 1: has a change counter
//!          deadline      i64   only with bit 0: ms since the epoch
//!          counter       u64   only with bit 1: the change that made this state, which
//!                              the append-only log's change records check (`aof`)
//!          key           blob
//!          data          string:     blob
//!                        list:       u64 count, count blobs (head first)
//!                        hash:       u64 count, count (field blob, value blob)
//!                        set:        u64 count, count blobs
//!                        sorted set: u64 count, count (member blob, score as f64 bits u64)
//! trailer  end marker    u8 = 0
//!          entries       u64   number of entries above
//!          checksum      u64   FNV-1a 64 of every byte before it
//! ```
//!
//! The loader checks the magic, the version, that the file has the size its header says
//! (so truncation is named as such), then the checksum, and only then parses. While
//! parsing, every declared length and count is checked against the bytes remaining, so
//! even a file with a valid checksum cannot make it allocate more than the file's size or
//! read past its end. Aggregates are never empty, members and keys never repeat, scores are
//! never NaN; a file where they do is rejected.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::data::{Data, Entry, ZSet};
use super::keyspace::SHARDS;
use super::{now_ms, Store};
use crate::config::Settings;

const MAGIC: &[u8; 8] = b"PKVSNAP\0";
const VERSION: u32 = 2;
/// The version before entries carried their change counter: still read.
const VERSION_1: u32 = 1;
/// Bits of an entry's flags byte (version 1 has only [`HAS_DEADLINE`]).
const HAS_DEADLINE: u8 = 1;
const HAS_VERSION: u8 = 2;
/// Magic, version, file size, saved at.
const HEADER: usize = 8 + 4 + 8 + 8;
/// End marker, entry count, checksum.
const TRAILER: usize = 1 + 8 + 8;
const END: u8 = 0;
const STR: u8 = 1;
const LIST: u8 = 2;
const HASH: u8 = 3;
const SET: u8 = 4;
const ZSET: u8 = 5;
const STREAM: u8 = 6;
/// Most elements reserved ahead of reading them; larger aggregates grow as they are read.
const PREALLOC: usize = 1 << 16;

/// Where and how often the store is saved.
pub struct Persistence {
    pub path: PathBuf,
    pub every: Duration,
    /// Held while a snapshot is taken and written, so two never overlap. Holds the size
    /// of the last one, so the next one's buffer is reserved at once rather than grown
    /// while the gate is held.
    writing: Mutex<usize>,
    /// How the snapshots are going, for `/metrics` and `/readyz`.
    pub health: crate::metrics::SnapshotHealth,
}

impl Persistence {
    pub fn from_settings(settings: &Settings) -> Option<Persistence> {
        settings.data_file.as_ref().map(|path| Persistence {
            path: path.clone(),
            every: settings.snapshot_interval,
            writing: Mutex::new(0),
            health: crate::metrics::SnapshotHealth::default(),
        })
    }
}

/// FNV-1a, 64 bits.
fn checksum(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Builds a snapshot: [`Encoder::new`], an [`Encoder::entry`] per key, [`Encoder::finish`].
pub struct Encoder {
    buf: Vec<u8>,
    entries: u64,
}

impl Encoder {
    pub fn new(saved_at: i64) -> Encoder {
        Encoder::with_capacity(saved_at, 64 * 1024)
    }

    /// An encoder whose buffer starts with room for `bytes`.
    pub fn with_capacity(saved_at: i64, bytes: usize) -> Encoder {
        let mut buf = Vec::with_capacity(bytes.max(HEADER + TRAILER));
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.extend_from_slice(&0u64.to_le_bytes()); // the file size, set by `finish`
        buf.extend_from_slice(&saved_at.to_le_bytes());
        Encoder { buf, entries: 0 }
    }

    fn u64(&mut self, n: u64) {
        self.buf.extend_from_slice(&n.to_le_bytes());
    }

    fn blob(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    pub fn entry(&mut self, key: &[u8], entry: &Entry) {
        let kind = match &entry.data {
            Data::Str(_) => STR,
            Data::List(_) => LIST,
            Data::Hash(_) => HASH,
            Data::Set(_) => SET,
            Data::ZSet(_) => ZSET,
            Data::Stream(_) => STREAM,
        };
        self.buf.push(kind);
        let mut flags = 0;
        if entry.expires_at.is_some() {
            flags |= HAS_DEADLINE;
        }
        if entry.version != 0 {
            flags |= HAS_VERSION;
        }
        self.buf.push(flags);
        if let Some(at) = entry.expires_at {
            self.buf.extend_from_slice(&at.to_le_bytes());
        }
        if entry.version != 0 {
            self.u64(entry.version);
        }
        self.blob(key);
        match &entry.data {
            Data::Str(s) => self.blob(s),
            Data::List(list) => {
                self.u64(list.len() as u64);
                list.iter().for_each(|item| self.blob(item));
            }
            Data::Hash(hash) => {
                self.u64(hash.len() as u64);
                for (field, value) in hash {
                    self.blob(field);
                    self.blob(value);
                }
            }
            Data::Set(set) => {
                self.u64(set.len() as u64);
                set.iter().for_each(|member| self.blob(member));
            }
            Data::ZSet(zset) => {
                self.u64(zset.len() as u64);
                for (member, score) in zset.iter() {
                    self.blob(member);
                    self.u64(score.to_bits());
                }
            }
            Data::Stream(stream) => self.blob(&stream.encode()),
        }
        self.entries += 1;
    }

    /// Entries encoded so far.
    pub fn len(&self) -> u64 {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The finished snapshot.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(END);
        self.u64(self.entries);
        let size = (self.buf.len() + 8) as u64;
        self.buf[12..20].copy_from_slice(&size.to_le_bytes());
        let sum = checksum(&self.buf);
        self.u64(sum);
        self.buf
    }
}

/// Appends one entry as a snapshot encodes it (type, deadline, key, data): the
/// append-only log's records use it.
pub fn encode_entry(buf: &mut Vec<u8>, key: &[u8], entry: &Entry) {
    let mut encoder = Encoder {
        buf: std::mem::take(buf),
        entries: 0,
    };
    encoder.entry(key, entry);
    *buf = encoder.buf;
}

/// The one entry of `bytes`, encoded by [`encode_entry`], whether or not it expired.
pub fn decode_entry(bytes: &[u8]) -> Result<(Vec<u8>, Entry), String> {
    let mut reader = Reader {
        bytes,
        pos: 0,
        entry: 0,
    };
    let kind = reader.u8("type")?;
    let (expires_at, version) = reader.flags()?;
    let key = reader.blob("key")?.to_vec();
    let data = reader.data(kind)?;
    if reader.left() != 0 {
        return Err(format!(
            "{} unexpected bytes after the entry",
            reader.left()
        ));
    }
    let entry = Entry {
        version,
        ..Entry::expiring(data, expires_at)
    };
    Ok((key, entry))
}

/// What a snapshot held, besides its entries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loaded {
    pub saved_at: i64,
    /// Entries live at load time.
    pub live: usize,
    /// Entries whose deadline had passed at load time.
    pub expired: usize,
}

/// A decoded snapshot.
#[derive(Debug)]
pub struct Snapshot {
    pub loaded: Loaded,
    /// The entries still live at load time.
    pub entries: Vec<(Vec<u8>, Entry)>,
}

/// Reads a snapshot's body; every length is checked against what is left.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The entry being read, for messages.
    entry: u64,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.left() {
            return Err(format!(
                "entry {}: {what} needs {n} bytes but only {} remain",
                self.entry,
                self.left()
            ));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let raw = self.take(8, what)?;
        Ok(u64::from_le_bytes(raw.try_into().expect("8 bytes")))
    }

    /// A declared length or count; each of the `n` items takes at least `min_each` bytes.
    fn count(&mut self, what: &str, min_each: usize) -> Result<usize, String> {
        let n = self.u64(what)?;
        let most = self.left() / min_each.max(1);
        match usize::try_from(n) {
            Ok(n) if n <= most => Ok(n),
            _ => Err(format!(
                "entry {}: bad length: {what} declares {n}, but only {} bytes remain",
                self.entry,
                self.left()
            )),
        }
    }

    /// An entry's flags byte and what it announces: its deadline and its change counter
    /// (0 when it has none: a version 1 file, or a key no logged change made).
    fn flags(&mut self) -> Result<(Option<i64>, u64), String> {
        let flags = self.u8("flags")?;
        if flags & !(HAS_DEADLINE | HAS_VERSION) != 0 {
            return Err(format!(
                "entry {}: bad flags {flags} (bit 0: deadline, bit 1: change counter)",
                self.entry
            ));
        }
        let expires_at = if flags & HAS_DEADLINE != 0 {
            Some(self.u64("deadline")? as i64)
        } else {
            None
        };
        let version = if flags & HAS_VERSION != 0 {
            self.u64("change counter")?
        } else {
            0
        };
        super::delta::seen(version).map_err(|e| format!("entry {}: {e}", self.entry))?;
        Ok((expires_at, version))
    }

    fn blob(&mut self, what: &str) -> Result<&'a [u8], String> {
        let n = self.count(what, 1)?;
        self.take(n, what)
    }

    fn data(&mut self, kind: u8) -> Result<Data, String> {
        let entry = self.entry;
        let data = match kind {
            STR => Data::Str(self.blob("string value")?.to_vec()),
            LIST => {
                let n = self.count("list length", 8)?;
                let mut list = VecDeque::with_capacity(n.min(PREALLOC));
                for _ in 0..n {
                    list.push_back(self.blob("list element")?.to_vec());
                }
                Data::List(list)
            }
            HASH => {
                let n = self.count("hash length", 16)?;
                let mut hash = HashMap::with_capacity(n.min(PREALLOC));
                for _ in 0..n {
                    let field = self.blob("hash field")?.to_vec();
                    let value = self.blob("hash value")?.to_vec();
                    if hash.insert(field, value).is_some() {
                        return Err(format!("entry {entry}: a hash field appears twice"));
                    }
                }
                Data::Hash(hash)
            }
            SET => {
                let n = self.count("set length", 8)?;
                let mut set = HashSet::with_capacity(n.min(PREALLOC));
                for _ in 0..n {
                    if !set.insert(self.blob("set member")?.to_vec()) {
                        return Err(format!("entry {entry}: a set member appears twice"));
                    }
                }
                Data::Set(set)
            }
            ZSET => {
                let n = self.count("sorted set length", 16)?;
                let mut zset = ZSet::default();
                for _ in 0..n {
                    let member = self.blob("sorted set member")?.to_vec();
                    let score = f64::from_bits(self.u64("score")?);
                    if score.is_nan() {
                        return Err(format!("entry {entry}: a score is NaN"));
                    }
                    if zset.insert(member, score).is_some() {
                        return Err(format!("entry {entry}: a sorted set member appears twice"));
                    }
                }
                Data::ZSet(zset)
            }
            STREAM => Data::Stream(Box::new(
                crate::embedded::stream::Stream::decode(self.blob("stream")?)
                    .ok_or_else(|| format!("entry {entry}: a corrupt stream"))?,
            )),
            other => return Err(format!("entry {entry}: unknown type {other}")),
        };
        if data.is_empty_aggregate() {
            return Err(format!("entry {entry}: an empty {}", data.type_name()));
        }
        Ok(data)
    }
}

/// Decodes a snapshot into a list, dropping the entries expired at `now`.
pub fn decode(bytes: &[u8], now: i64) -> Result<Snapshot, String> {
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    let loaded = decode_with(bytes, now, |key, entry| {
        if !seen.insert(key.to_vec()) {
            return false;
        }
        entries.push((key.to_vec(), entry));
        true
    })?;
    Ok(Snapshot { loaded, entries })
}

/// Checks a snapshot and hands each entry live at `now` to `keep`, which answers false
/// when it was already given that key. The error says what is wrong with the file.
pub fn decode_with(
    bytes: &[u8],
    now: i64,
    mut keep: impl FnMut(&[u8], Entry) -> bool,
) -> Result<Loaded, String> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a pkv snapshot (bad magic)".into());
    }
    if bytes.len() < HEADER {
        return Err(format!(
            "truncated: {} bytes, shorter than the header",
            bytes.len()
        ));
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION && version != VERSION_1 {
        return Err(format!(
            "unsupported snapshot version {version} (this pkv reads version {VERSION})"
        ));
    }
    let size = u64_at(12);
    if size != bytes.len() as u64 {
        return Err(format!(
            "size mismatch: the header says {size} bytes, the file has {} (truncated or corrupt)",
            bytes.len()
        ));
    }
    if bytes.len() < HEADER + TRAILER {
        return Err(format!("bad size in header: {size} bytes is too small"));
    }
    let body_end = bytes.len() - 8;
    let stored = u64_at(body_end);
    let computed = checksum(&bytes[..body_end]);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:016x}, computed {computed:016x}): the file is corrupt"
        ));
    }
    let saved_at = u64_at(20) as i64;
    let mut reader = Reader {
        bytes: &bytes[..body_end],
        pos: HEADER,
        entry: 0,
    };
    let mut live = 0;
    let mut expired = 0;
    loop {
        let kind = reader.u8("type")?;
        if kind == END {
            break;
        }
        let (expires_at, version) = reader.flags()?;
        let key = reader.blob("key")?;
        let data = reader.data(kind)?;
        let entry = Entry {
            version,
            ..Entry::expiring(data, expires_at)
        };
        if entry.expired(now) {
            expired += 1;
        } else if keep(key, entry) {
            live += 1;
        } else {
            return Err(format!("entry {}: a key appears twice", reader.entry));
        }
        reader.entry += 1;
    }
    let count = reader.u64("entry count")?;
    if reader.left() != 0 {
        return Err(format!(
            "{} unexpected bytes after the entry count",
            reader.left()
        ));
    }
    if count != reader.entry {
        return Err(format!(
            "entry count mismatch: the trailer says {count}, the file has {}",
            reader.entry
        ));
    }
    Ok(Loaded {
        saved_at,
        live,
        expired,
    })
}

/// `<file>.tmp`, next to the file.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

/// The directory `path` is in.
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Creates (or truncates) a file only the owner can read: it holds every account's data.
fn create_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Replaces the file at `path` with `bytes`, so that a crash leaves the old file or the new
/// one: write `<file>.tmp`, fsync it, rename it over `<file>`, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let written = (|| {
        let mut file = create_private(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    File::open(dir_of(path))?.sync_all()
}

/// What one snapshot wrote.
#[derive(Debug, Clone, Copy)]
pub struct Saved {
    pub keys: u64,
    pub bytes: usize,
    /// How long the walk held the gate's stripes.
    pub walk: Duration,
}

impl Store {
    /// Every live key, encoded, with no multi-key command half done; `expected` is the
    /// size to reserve.
    pub fn snapshot(&self, expected: usize) -> (Vec<u8>, u64, Duration) {
        let now = now_ms();
        let mut encoder = Encoder::with_capacity(now, expected + expected / 8);
        let started = Instant::now();
        {
            let _shared = self.gate.all_shared();
            for i in 0..SHARDS {
                let shard = self.keys.read_shard(i);
                for (key, entry) in shard.iter().filter(|(_, e)| !e.expired(now)) {
                    encoder.entry(key, entry);
                }
            }
        }
        let walk = started.elapsed();
        let keys = encoder.len();
        (encoder.finish(), keys, walk)
    }

    /// Takes a snapshot and writes it to the data file (blocking). Without a data file,
    /// does nothing.
    pub fn save_blocking(&self) -> Result<Option<Saved>, String> {
        let Some(persistence) = &self.persistence else {
            return Ok(None);
        };
        let mut last_size = persistence
            .writing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Everything the log held before the walk is in the snapshot.
        let logged = self.aof().map(|aof| aof.end());
        let (bytes, keys, walk) = self.snapshot(*last_size);
        *last_size = bytes.len();
        let saved = write_atomically(&persistence.path, &bytes).map_err(|e| {
            format!(
                "cannot save the snapshot to {}: {e}",
                persistence.path.display()
            )
        });
        self.snapshot_outcome(saved.as_ref().err());
        saved?;
        if let (Some(aof), Some(upto)) = (self.aof(), logged) {
            aof.rotate(upto)
                .map_err(|e| format!("snapshot saved, but the log was not cut: {e}"))?;
        }
        Ok(Some(Saved {
            keys,
            bytes: bytes.len(),
            walk,
        }))
    }

    /// [`Store::save_blocking`] on a blocking thread.
    pub async fn save(&self) -> Result<Option<Saved>, String> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.save_blocking())
            .await
            .map_err(|e| format!("the snapshot task failed: {e}"))?
    }

    /// Saves a snapshot every `PKV_SNAPSHOT_SECONDS`; never returns. A failed snapshot is
    /// logged, and the next one tried on time.
    pub(super) async fn save_forever(&self) {
        let Some(every) = self.persistence.as_ref().map(|p| p.every) else {
            return std::future::pending().await;
        };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let saved = self.save().await;
            if let Some(p) = &self.persistence {
                p.health.record(&saved);
            }
            match saved {
                Ok(Some(saved)) => tracing::debug!(
                    keys = saved.keys,
                    bytes = saved.bytes,
                    walk_ms = saved.walk.as_millis() as u64,
                    "snapshot saved"
                ),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "snapshot failed; still serving"),
            }
        }
    }

    /// The last snapshot, at shutdown.
    pub(super) async fn save_at_shutdown(&self) -> Result<(), String> {
        if let (Some(saved), Some(persistence)) = (self.save().await?, &self.persistence) {
            tracing::info!(
                keys = saved.keys,
                bytes = saved.bytes,
                file = %persistence.path.display(),
                "snapshot saved at shutdown"
            );
        }
        Ok(())
    }

    /// Loads the data file into this (empty) store, if there is one, and checks that the
    /// snapshots can be written next to it. A bad file is left untouched.
    pub(super) fn load(&self) -> Result<(), String> {
        let Some(persistence) = &self.persistence else {
            return Ok(());
        };
        let path = &persistence.path;
        let fail = |problem: String| {
            format!(
                "PKV_DATA_FILE {}: {problem}; the file was left as it is",
                path.display()
            )
        };
        match fs::read(path) {
            Ok(bytes) => {
                let now = now_ms();
                let loaded = decode_with(&bytes, now, |key, entry| {
                    let mut shard = self.keys.write_shard(self.keys.shard_of(key));
                    shard.insert(key.into(), entry).is_none()
                })
                .map_err(fail)?;
                *persistence
                    .writing
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = bytes.len();
                tracing::info!(
                    file = %path.display(),
                    keys = loaded.live,
                    expired = loaded.expired,
                    age_s = (now - loaded.saved_at).max(0) / 1000,
                    "loaded the snapshot"
                );
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::info!(file = %path.display(), "no snapshot yet; starting empty");
            }
            Err(e) => return Err(fail(format!("cannot read it ({e})"))),
        }
        // Fail now rather than at the first snapshot if the directory is not writable.
        let tmp = tmp_path(path);
        create_private(&tmp)
            .and_then(|_| fs::remove_file(&tmp))
            .map_err(|e| {
                format!(
                    "PKV_DATA_FILE {}: cannot write snapshots next to it ({}: {e})",
                    path.display(),
                    tmp.display()
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(Vec<u8>, Entry)> {
        // 2100-01-01.
        let far = 4_102_444_800_000;
        let mut zset = ZSet::default();
        zset.insert(b"a".to_vec(), 1.5);
        zset.insert(b"b".to_vec(), f64::INFINITY);
        zset.insert(b"c".to_vec(), f64::NEG_INFINITY);
        zset.insert(b"".to_vec(), -0.000_001);
        zset.insert(vec![0, 255], 1e300);
        vec![
            (b"s".to_vec(), Entry::new(Data::Str(b"value".to_vec()))),
            (
                b"empty".to_vec(),
                Entry {
                    data: Data::Str(Vec::new()),
                    expires_at: Some(far),
                    counted: Default::default(),
                    version: 0,
                },
            ),
            (Vec::new(), Entry::new(Data::Str(vec![0, 1, 2, 255]))),
            (
                vec![0, b'\r', b'\n', 255],
                Entry::new(Data::Str(vec![b'\n'; 3])),
            ),
            (
                b"list".to_vec(),
                Entry {
                    data: Data::List(
                        [b"x".to_vec(), Vec::new(), vec![0; 1000], b"x".to_vec()].into(),
                    ),
                    expires_at: Some(far + 1),
                    counted: Default::default(),
                    version: 0,
                },
            ),
            (
                b"hash".to_vec(),
                Entry::new(Data::Hash(
                    [
                        (b"f".to_vec(), b"v".to_vec()),
                        (Vec::new(), Vec::new()),
                        (vec![255], vec![0]),
                    ]
                    .into(),
                )),
            ),
            (
                b"set".to_vec(),
                Entry::new(Data::Set([b"m".to_vec(), Vec::new(), vec![200; 30]].into())),
            ),
            (
                b"zset".to_vec(),
                Entry {
                    data: Data::ZSet(zset),
                    expires_at: Some(far + 2),
                    counted: Default::default(),
                    version: 0,
                },
            ),
        ]
    }

    fn encode(entries: &[(Vec<u8>, Entry)]) -> Vec<u8> {
        let mut encoder = Encoder::new(now_ms());
        for (key, entry) in entries {
            encoder.entry(key, entry);
        }
        encoder.finish()
    }

    fn sorted(mut entries: Vec<(Vec<u8>, Entry)>) -> Vec<(Vec<u8>, Entry)> {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
    }

    #[test]
    fn round_trip_of_every_type() {
        let entries = sample();
        let bytes = encode(&entries);
        let snapshot = decode(&bytes, now_ms()).unwrap();
        assert_eq!(snapshot.loaded.expired, 0);
        assert_eq!(snapshot.loaded.live, entries.len());
        assert_eq!(sorted(snapshot.entries), sorted(entries));
        // Scores come back bit for bit.
        let Data::ZSet(z) = &sample()[7].1.data else {
            unreachable!()
        };
        let decoded = decode(&bytes, now_ms()).unwrap();
        let Some((
            _,
            Entry {
                data: Data::ZSet(back),
                ..
            },
        )) = decoded.entries.iter().find(|(k, _)| k == b"zset")
        else {
            panic!("no zset")
        };
        for (member, score) in z.iter() {
            assert_eq!(back.score(member).map(f64::to_bits), Some(score.to_bits()));
        }
    }

    #[test]
    fn an_empty_store_round_trips() {
        let bytes = encode(&[]);
        assert_eq!(bytes.len(), HEADER + TRAILER);
        let snapshot = decode(&bytes, 0).unwrap();
        assert!(snapshot.entries.is_empty());
    }

    #[test]
    fn expired_entries_are_skipped_at_load() {
        let now = now_ms();
        let entries = vec![
            (
                b"gone".to_vec(),
                Entry {
                    data: Data::Str(b"v".to_vec()),
                    expires_at: Some(now - 1),
                    counted: Default::default(),
                    version: 0,
                },
            ),
            (
                b"kept".to_vec(),
                Entry {
                    data: Data::Str(b"v".to_vec()),
                    expires_at: Some(now + 10_000),
                    counted: Default::default(),
                    version: 0,
                },
            ),
        ];
        let snapshot = decode(&encode(&entries), now).unwrap();
        assert_eq!(snapshot.loaded.expired, 1);
        assert_eq!(snapshot.entries, entries[1..].to_vec());
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = encode(&sample());
        for len in 0..bytes.len() {
            let err = decode(&bytes[..len], now_ms()).unwrap_err();
            if len >= HEADER {
                assert!(err.contains("truncated"), "{len}: {err}");
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, now_ms()).is_err());
    }

    #[test]
    fn every_flipped_byte_is_rejected() {
        let bytes = encode(&sample());
        for i in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                assert!(decode(&bad, now_ms()).is_err(), "byte {i} ^ {flip:#x}");
            }
        }
    }

    #[test]
    fn header_problems_are_named() {
        let bytes = encode(&sample());
        assert!(decode(b"garbage that is not a snapshot at all", 0)
            .unwrap_err()
            .contains("magic"));
        let mut bad = bytes.clone();
        bad[8] = 9;
        assert!(decode(&bad, 0).unwrap_err().contains("version 9"));
        let mut bad = bytes.clone();
        let middle = bad.len() / 2;
        bad[middle] ^= 0x10;
        assert!(decode(&bad, 0).unwrap_err().contains("checksum"));
    }

    /// Rewrites a hand-made body into a file with a valid size and checksum, so that the
    /// parser's own checks are what rejects it.
    fn sealed(body: &[u8]) -> Vec<u8> {
        let mut bytes = Encoder::new(0).buf;
        bytes.extend_from_slice(body);
        let size = (bytes.len() + 8) as u64;
        bytes[12..20].copy_from_slice(&size.to_le_bytes());
        let sum = checksum(&bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
        bytes
    }

    fn trailer(count: u64) -> Vec<u8> {
        let mut out = vec![END];
        out.extend_from_slice(&count.to_le_bytes());
        out
    }

    #[test]
    fn lengths_cannot_claim_more_than_the_file() {
        // A key declaring u64::MAX bytes, and a list declaring 2^40 elements.
        let mut body = vec![STR, 0];
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        body.extend_from_slice(&trailer(1));
        let err = decode(&sealed(&body), 0).unwrap_err();
        assert!(err.contains("bad length"), "{err}");

        let mut body = vec![LIST, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'k'];
        body.extend_from_slice(&(1u64 << 40).to_le_bytes());
        body.extend_from_slice(&trailer(1));
        let err = decode(&sealed(&body), 0).unwrap_err();
        assert!(err.contains("bad length"), "{err}");
    }

    #[test]
    fn sealed_but_malformed_bodies_are_rejected() {
        let key = |k: &[u8]| {
            let mut out = (k.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(k);
            out
        };
        // Unknown type.
        let mut body = vec![9, 0];
        body.extend(key(b"k"));
        body.extend_from_slice(&trailer(1));
        assert!(decode(&sealed(&body), 0)
            .unwrap_err()
            .contains("unknown type"));
        // Bad deadline flag.
        let mut body = vec![STR, 7];
        body.extend(key(b"k"));
        body.extend(key(b"v"));
        body.extend_from_slice(&trailer(1));
        assert!(decode(&sealed(&body), 0).unwrap_err().contains("deadline"));
        // The same key twice.
        let mut body = Vec::new();
        for _ in 0..2 {
            body.extend([STR, 0]);
            body.extend(key(b"k"));
            body.extend(key(b"v"));
        }
        body.extend_from_slice(&trailer(2));
        assert!(decode(&sealed(&body), 0).unwrap_err().contains("twice"));
        // An empty set.
        let mut body = vec![SET, 0];
        body.extend(key(b"k"));
        body.extend_from_slice(&0u64.to_le_bytes());
        body.extend_from_slice(&trailer(1));
        assert!(decode(&sealed(&body), 0).unwrap_err().contains("empty"));
        // A NaN score.
        let mut body = vec![ZSET, 0];
        body.extend(key(b"k"));
        body.extend_from_slice(&1u64.to_le_bytes());
        body.extend(key(b"m"));
        body.extend_from_slice(&f64::NAN.to_bits().to_le_bytes());
        body.extend_from_slice(&trailer(1));
        assert!(decode(&sealed(&body), 0).unwrap_err().contains("NaN"));
        // A wrong entry count.
        let mut body = vec![STR, 0];
        body.extend(key(b"k"));
        body.extend(key(b"v"));
        body.extend_from_slice(&trailer(5));
        assert!(decode(&sealed(&body), 0).unwrap_err().contains("count"));
    }

    #[test]
    fn a_store_saves_and_loads_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.pkv");
        let settings = {
            let mut raw = std::collections::BTreeMap::new();
            raw.insert(
                "PKV_DATA_FILE".to_string(),
                path.to_str().unwrap().to_string(),
            );
            Settings::from_map(&raw).unwrap()
        };
        let store = Store::open(&settings).unwrap();
        assert!(!path.exists(), "opening writes nothing");
        for (key, entry) in sample() {
            store.keys.insert(&key, entry);
        }
        store.keys.insert(
            b"expired",
            Entry {
                data: Data::Str(b"v".to_vec()),
                expires_at: Some(1),
                counted: Default::default(),
                version: 0,
            },
        );
        let saved = store.save_blocking().unwrap().unwrap();
        assert_eq!(saved.keys, sample().len() as u64);
        assert!(!tmp_path(&path).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let reopened = Store::open(&settings).unwrap();
        let mut back = Vec::new();
        for i in 0..SHARDS {
            for (k, e) in reopened.keys.read_shard(i).iter() {
                back.push((k.to_vec(), e.clone()));
            }
        }
        assert_eq!(sorted(back), sorted(sample()));

        // A bad file stops the store from opening, and stays as it was.
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let err = Store::open(&settings).err().unwrap();
        assert!(err.contains(path.to_str().unwrap()), "{err}");
        assert!(err.contains("checksum"), "{err}");
        assert!(err.contains("left as it is"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }
}
