//! The embedded store's append-only log: `<PKV_DATA_FILE>.aof`, beside the snapshot.
//!
//! Every command that wrote (and every ledger step) appends a record per key it changed,
//! each a RESP array of bulk strings, so a log can be read with Redis's tools:
//! - `PUT <entry>`: the key's whole state (the snapshot's encoding of one entry, with its
//!   absolute deadline and its change counter);
//! - `DEL <key>`: the key is gone;
//! - `ALL <records>`: several `PUT`/`DEL` records replayed whole or not at all (a ledger
//!   step that changes several keys, a redemption's credit and its token id);
//! - `DELTA <base> <counter> <command...>`: a single-key write into a key that was there,
//!   to be run again against the state with change counter `base` only (see
//!   [`super::delta`], which decides between the three). A write logs what it changed, not
//!   what the key holds.
//!
//! Replay needs no clock and no randomness: a `PUT` sets its state, a `DELTA` applies
//! once, to the state it was made from, and is skipped over any other; so replaying a
//! record twice, or over a snapshot taken after it, leaves the same state. That is what
//! makes a snapshot's reset of the log safe at every step (see [`Aof::rotate`]). Logs
//! written before change counters (only `PUT` and `DEL`) are still read.
//!
//! A record is appended to a buffer in memory while the key's shard is still locked, so
//! the records of one key are in the order of its changes. A writer thread does the I/O:
//! - `always`: the request path waits ([`Aof::wait_synced`]) until the writer has written
//!   and fsynced everything appended before its reply; one fsync covers every write that
//!   arrived meanwhile (group commit);
//! - `everysec`: written every [`WRITE_EVERY`], fsynced once a second;
//! - `no`: written every [`WRITE_EVERY`], fsynced when the OS decides.
//!
//! Ledger steps always wait for an fsync, whatever the policy: a redeemed token that is
//! forgotten after a crash would be credited again.
//!
//! A failed write or fsync is loud: the store refuses writes with `MISCONF` until the
//! writer has written everything again ([`Aof::failure`]); the bytes not written are kept
//! and retried, so nothing acknowledged before the failure is dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::data::Entry;
use super::snapshot;
use super::Store;

/// How often `everysec` and `no` hand the buffer to the OS.
pub const WRITE_EVERY: Duration = Duration::from_millis(10);
/// How long a failed write waits before it is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// When the log is fsynced (`PKV_APPENDFSYNC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Before each write's reply.
    Always,
    /// Once a second, in the background.
    #[default]
    EverySec,
    /// When the OS decides.
    No,
}

impl Policy {
    /// Redis's word for it, as `CONFIG GET appendfsync` answers.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Always => "always",
            Policy::EverySec => "everysec",
            Policy::No => "no",
        }
    }

    /// The policy named `text` (Redis's words); `None` for anything else.
    pub fn parse(text: &str) -> Option<Policy> {
        match text.to_ascii_lowercase().as_str() {
            "always" => Some(Policy::Always),
            "everysec" => Some(Policy::EverySec),
            "no" => Some(Policy::No),
            _ => None,
        }
    }
}

/// `<data file>.aof`.
pub fn path_for(data_file: &Path) -> PathBuf {
    let mut name = data_file.as_os_str().to_owned();
    name.push(".aof");
    PathBuf::from(name)
}

/// What the writer has made durable.
#[derive(Debug, Clone, Default)]
struct Durable {
    /// Every byte before this position is fsynced.
    synced: u64,
    /// The last write or fsync failed, with this error.
    error: Option<Arc<str>>,
}

/// What the request path hands to the writer.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// The log's position after `buf`: bytes appended since the log began.
    end: u64,
    /// An fsync was asked for (`always`, a ledger step).
    sync: bool,
    /// A snapshot holds everything before this position: drop it from the file.
    rotate: Option<(u64, mpsc::Sender<Result<(), String>>)>,
}

/// The log; shared by the store and its writer thread.
pub struct Aof {
    path: PathBuf,
    policy: Policy,
    pending: Mutex<Pending>,
    wake: Condvar,
    durable: tokio::sync::watch::Sender<Durable>,
    /// Set while writes must be refused.
    failed: AtomicBool,
}

impl Aof {
    /// Replays the log at `path` into `store` (loaded from its snapshot already), drops a
    /// torn last record, and starts the writer. A log that is damaged elsewhere stops
    /// start-up and is left as it is.
    pub fn open(path: PathBuf, policy: Policy, store: &Store) -> Result<Arc<Aof>, String> {
        let fail = |problem: String| {
            format!(
                "the append-only log {}: {problem}; the file was left as it is",
                path.display()
            )
        };
        let end = match fs::read(&path) {
            Ok(bytes) => {
                let replayed = replay(&bytes, store).map_err(fail)?;
                if let Some(torn) = &replayed.torn {
                    tracing::warn!(
                        file = %path.display(),
                        kept = replayed.valid,
                        dropped = bytes.len() - replayed.valid,
                        problem = %torn,
                        "the log's last record is incomplete (a crash mid-write); dropped it"
                    );
                    let file = OpenOptions::new().write(true).open(&path);
                    file.and_then(|f| f.set_len(replayed.valid as u64).and_then(|()| f.sync_all()))
                        .map_err(|e| fail(format!("cannot drop the torn record ({e})")))?;
                }
                tracing::info!(
                    file = %path.display(),
                    records = replayed.records,
                    "replayed the append-only log"
                );
                replayed.valid as u64
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(fail(format!("cannot read it ({e})"))),
        };
        let file = open_append(&path)
            .map_err(|e| format!("the append-only log {}: {e}", path.display()))?;
        Aof::start(path, policy, file, end)
    }

    /// Starts the writer on `file`, which holds `end` bytes of log.
    fn start(path: PathBuf, policy: Policy, file: File, end: u64) -> Result<Arc<Aof>, String> {
        let (durable, _) = tokio::sync::watch::channel(Durable {
            synced: end,
            error: None,
        });
        let aof = Arc::new(Aof {
            path,
            policy,
            pending: Mutex::new(Pending {
                end,
                ..Pending::default()
            }),
            wake: Condvar::new(),
            durable,
            failed: AtomicBool::new(false),
        });
        let writer = Writer {
            aof: Arc::downgrade(&aof),
            file,
            file_start: 0,
            written: end,
            unsynced: false,
            last_sync: Instant::now(),
            retry: Vec::new(),
        };
        std::thread::Builder::new()
            .name("pkv-aof".into())
            .spawn(move || writer.run())
            .map_err(|e| format!("cannot start the append-only log's writer: {e}"))?;
        Ok(aof)
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends the record of `key`'s state: `entry`, or its absence. The caller holds the
    /// key's shard, so records of one key keep the order of its changes.
    pub fn record(&self, key: &[u8], entry: Option<&Entry>) {
        let mut pending = self.lock();
        let before = pending.buf.len();
        encode_state(&mut pending.buf, key, entry);
        let added = (pending.buf.len() - before) as u64;
        pending.end += added;
    }

    /// Appends `states` (records written by [`encode_state`]) as one `ALL` record, replayed
    /// whole or not at all: a step that changes several keys (a redemption's credit and its
    /// token id) never comes back half done from a log a crash tore. The caller keeps the
    /// keys from changing until this returns.
    pub fn record_together(&self, states: &[u8]) {
        let mut pending = self.lock();
        let before = pending.buf.len();
        write_record(&mut pending.buf, b"ALL", states);
        let added = (pending.buf.len() - before) as u64;
        pending.end += added;
    }

    /// Appends the record of a change: `args` (a single-key write of
    /// [`super::delta::CHANGES`], its key at `args[1]`), to be run again at replay against
    /// the key's state `base` only, which it turns into state `version`. `chosen` replaces
    /// one argument with what the write chose (an `XADD`'s ID). The caller holds the key's
    /// shard, as for [`Aof::record`].
    pub fn record_change(
        &self,
        base: u64,
        version: u64,
        args: &[Vec<u8>],
        chosen: Option<(usize, Vec<u8>)>,
    ) {
        let (base, version) = (base.to_string(), version.to_string());
        let mut parts: Vec<&[u8]> = vec![b"DELTA", base.as_bytes(), version.as_bytes()];
        parts.extend(args.iter().enumerate().map(|(i, arg)| match &chosen {
            Some((at, id)) if *at == i => id.as_slice(),
            _ => arg.as_slice(),
        }));
        let mut pending = self.lock();
        let before = pending.buf.len();
        write_parts(&mut pending.buf, &parts);
        let added = (pending.buf.len() - before) as u64;
        pending.end += added;
    }

    /// The log's position after everything appended so far.
    pub fn end(&self) -> u64 {
        self.lock().end
    }

    /// Why writes are refused, while they are.
    pub fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        let error = self.durable.borrow().error.clone();
        Some(error.map_or_else(|| "write failed".to_owned(), |e| e.to_string()))
    }

    /// Waits until everything appended so far is fsynced; the error when the writer could
    /// not write or fsync it.
    pub async fn wait_synced(&self) -> Result<(), String> {
        let mut rx = self.durable.subscribe();
        let target = {
            let mut pending = self.lock();
            pending.sync = true;
            pending.end
        };
        self.wake.notify_one();
        let outcome = rx
            .wait_for(|d| d.synced >= target || d.error.is_some())
            .await
            .map(|d| d.clone());
        match outcome {
            Ok(d) if d.synced >= target => Ok(()),
            Ok(d) => Err(d.error.map_or_else(String::new, |e| e.to_string())),
            Err(_) => Err("the log's writer stopped".into()),
        }
    }

    /// Drops from the file what a snapshot now holds: every record before `upto` (the
    /// log's position read before the snapshot's walk). Blocks until done.
    ///
    /// The writer copies the records from `upto` on to `<log>.tmp`, fsyncs it, renames it
    /// over the log and fsyncs the directory. A crash before the rename leaves the new
    /// snapshot with the whole old log, which replays to the same state (states, and
    /// changes that apply only to the state they were made from, in order); after it, the
    /// new snapshot with the new log.
    pub fn rotate(&self, upto: u64) -> Result<(), String> {
        let (done, result) = mpsc::channel();
        self.lock().rotate = Some((upto, done));
        self.wake.notify_one();
        result
            .recv()
            .unwrap_or_else(|_| Err("the log's writer stopped".into()))
    }
}

/// For the fuzz target `aof` (`fuzz/fuzz_targets/aof.rs`), which builds logs by running
/// commands and replays them: not part of pkv's interface.
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::Arc;

    use super::{Aof, Durable, Pending, Policy, Store};

    /// Attaches to `store` a log with no file and no writer, which keeps every record
    /// appended ([`appended`]); `None` when `store` has a log already.
    pub fn attach_in_memory(store: &Store) -> Option<Arc<Aof>> {
        let (durable, _) = tokio::sync::watch::channel(Durable::default());
        let aof = Arc::new(Aof {
            path: std::path::PathBuf::new(),
            policy: Policy::No,
            pending: std::sync::Mutex::new(Pending::default()),
            wake: std::sync::Condvar::new(),
            durable,
            failed: std::sync::atomic::AtomicBool::new(false),
        });
        store.aof.set(aof.clone()).ok()?;
        Some(aof)
    }

    /// Every byte appended to a log made by [`attach_in_memory`].
    pub fn appended(aof: &Aof) -> Vec<u8> {
        aof.lock().buf.clone()
    }

    /// What start-up's replay does with `bytes` over `store`: the records applied, the bytes
    /// of whole records and why the bytes after them were dropped; or why the log is damaged.
    pub fn replay(bytes: &[u8], store: &Store) -> Result<(usize, usize, Option<String>), String> {
        super::replay(bytes, store).map(|r| (r.records, r.valid, r.torn))
    }
}

/// Writes the record of `key`'s state: `PUT <entry>`, or `DEL <key>` when it is gone.
pub fn encode_state(buf: &mut Vec<u8>, key: &[u8], entry: Option<&Entry>) {
    match entry {
        Some(entry) => {
            let mut encoded = Vec::new();
            snapshot::encode_entry(&mut encoded, key, entry);
            write_record(buf, b"PUT", &encoded);
        }
        None => write_record(buf, b"DEL", key),
    }
}

/// Appends `*2 $<n> <verb> $<n> <body>`.
fn write_record(buf: &mut Vec<u8>, verb: &[u8], body: &[u8]) {
    write_parts(buf, &[verb, body]);
}

/// Appends `parts` as a RESP array of bulk strings.
fn write_parts(buf: &mut Vec<u8>, parts: &[&[u8]]) {
    buf.push(b'*');
    buf.extend_from_slice(parts.len().to_string().as_bytes());
    buf.extend_from_slice(b"\r\n");
    for part in parts {
        buf.push(b'$');
        buf.extend_from_slice(part.len().to_string().as_bytes());
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(part);
        buf.extend_from_slice(b"\r\n");
    }
}

/// Writes `bytes` to `tmp`, fsyncs it, renames it over `path` and fsyncs the directory.
fn replace_with(tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let written = (|| {
        let mut file = File::create(tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(tmp);
    }
    written?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    // Read too: a rotation reads the tail through this handle (see `Writer::rotate`).
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// The thread that writes and fsyncs the log.
struct Writer {
    /// Gone when the store is: the thread ends.
    aof: Weak<Aof>,
    file: File,
    /// The log position of the file's first byte.
    file_start: u64,
    /// The log position after the last byte written to the file.
    written: u64,
    unsynced: bool,
    last_sync: Instant,
    /// Bytes a failed write left unwritten, to go before anything newer.
    retry: Vec<u8>,
}

impl Writer {
    fn run(mut self) {
        while let Some(aof) = self.aof.upgrade() {
            self.turn(&aof);
        }
    }

    /// Waits for work (at most [`WRITE_EVERY`]), writes what is pending, fsyncs when the
    /// policy or a waiter asks, and rotates when a snapshot asks.
    fn turn(&mut self, aof: &Aof) {
        let (buf, end, sync, rotate) = {
            let mut pending = aof.lock();
            // `always` writes as soon as there is something; the others gather for
            // [`WRITE_EVERY`] unless an fsync or a rotation is asked for.
            let asked = pending.sync || pending.rotate.is_some();
            let idle = !asked && (aof.policy != Policy::Always || pending.buf.is_empty());
            if idle || !self.retry.is_empty() {
                let wait = if self.retry.is_empty() {
                    WRITE_EVERY
                } else {
                    RETRY_EVERY
                };
                pending = aof
                    .wake
                    .wait_timeout(pending, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let buf = std::mem::take(&mut pending.buf);
            let sync = std::mem::take(&mut pending.sync);
            (buf, pending.end, sync, pending.rotate.take())
        };
        let mut chunk = std::mem::take(&mut self.retry);
        if chunk.is_empty() {
            chunk = buf;
        } else {
            chunk.extend_from_slice(&buf);
        }
        let mut outcome = self.write(&chunk, end);
        let due = match aof.policy {
            Policy::Always => true,
            Policy::EverySec => self.last_sync.elapsed() >= Duration::from_secs(1),
            Policy::No => false,
        };
        if outcome.is_ok() && self.unsynced && (sync || due) {
            outcome = self.file.sync_data().map_err(|e| format!("fsync: {e}"));
            if outcome.is_ok() {
                self.unsynced = false;
                self.last_sync = Instant::now();
            }
        }
        match outcome {
            Ok(()) => {
                let synced = if self.unsynced {
                    aof.durable.borrow().synced
                } else {
                    self.written
                };
                aof.failed.store(false, Ordering::Release);
                aof.durable.send_replace(Durable {
                    synced,
                    error: None,
                });
            }
            Err(e) => {
                if !aof.failed.swap(true, Ordering::AcqRel) {
                    tracing::error!(file = %aof.path.display(), error = %e,
                        "cannot write the append-only log; refusing writes until it can");
                }
                let synced = aof.durable.borrow().synced;
                aof.durable.send_replace(Durable {
                    synced,
                    error: Some(e.into()),
                });
            }
        }
        if let Some((upto, done)) = rotate {
            let result = if self.retry.is_empty() {
                self.rotate(&aof.path, upto)
            } else {
                Err("the log has unwritten records".into())
            };
            let _ = done.send(result);
        }
    }

    /// Writes `chunk`, which ends at log position `end`; what a failure leaves unwritten
    /// is kept for the next turn.
    fn write(&mut self, chunk: &[u8], end: u64) -> Result<(), String> {
        let mut done = 0;
        while done < chunk.len() {
            match self.file.write(&chunk[done..]) {
                Ok(0) => {
                    self.retry = chunk[done..].to_vec();
                    self.written = end - self.retry.len() as u64;
                    return Err("write: no space written".into());
                }
                Ok(n) => {
                    done += n;
                    self.unsynced = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.retry = chunk[done..].to_vec();
                    self.written = end - self.retry.len() as u64;
                    return Err(format!("write: {e}"));
                }
            }
        }
        self.written = end;
        Ok(())
    }

    /// Replaces the file with its records from `upto` on (see [`Aof::rotate`]).
    fn rotate(&mut self, path: &Path, upto: u64) -> Result<(), String> {
        if upto <= self.file_start {
            return Ok(());
        }
        let skip = upto - self.file_start;
        let mut tail = Vec::new();
        // Through the open handle, not the name: the name may be gone (its directory
        // removed and made again), and the handle still reaches every record written.
        // Writes append whatever the position a read leaves.
        self.file
            .seek(SeekFrom::Start(skip))
            .and_then(|_| self.file.read_to_end(&mut tail))
            .map_err(|e| format!("read: {e}"))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        replace_with(&tmp, path, &tail).map_err(|e| format!("rewrite: {e}"))?;
        self.file = open_append(path).map_err(|e| format!("reopen: {e}"))?;
        self.file_start = upto;
        Ok(())
    }
}

/// What a replay found.
struct Replayed {
    records: usize,
    /// Bytes of whole records.
    valid: usize,
    /// Why the bytes after `valid` were dropped.
    torn: Option<String>,
}

/// Applies the records of `bytes` to `store`, in order. An incomplete last record (or
/// zeros where one should start: a crash after the file grew but before its data reached
/// the disk) is torn; a malformed record followed by more bytes is an error.
fn replay(bytes: &[u8], store: &Store) -> Result<Replayed, String> {
    let now = super::now_ms();
    let mut pos = 0;
    let mut records = 0;
    while pos < bytes.len() {
        let record = match parse_record(&bytes[pos..]) {
            Parsed::Record(parts, len) => (parts, len),
            Parsed::Incomplete => {
                return Ok(Replayed {
                    records,
                    valid: pos,
                    torn: Some("incomplete record".into()),
                })
            }
            Parsed::Bad(problem) if bytes[pos..].iter().all(|&b| b == 0) => {
                return Ok(Replayed {
                    records,
                    valid: pos,
                    torn: Some(format!("zeros instead of a record ({problem})")),
                })
            }
            Parsed::Bad(problem) => {
                return Err(format!("record {records} at byte {pos}: {problem}"))
            }
        };
        let (parts, len) = record;
        let at = |problem: String| format!("record {records} at byte {pos}: {problem}");
        match &parts[..] {
            [verb, body] => apply(verb, body, store, now).map_err(at)?,
            [b"DELTA", base, version, args @ ..] if args.len() >= 2 => {
                replay_change(store, base, version, args, now).map_err(at)?;
            }
            _ => return Err(at(format!("a record of {} parts", parts.len()))),
        }
        pos += len;
        records += 1;
    }
    Ok(Replayed {
        records,
        valid: pos,
        torn: None,
    })
}

/// Applies one record's effect.
fn apply(verb: &[u8], body: &[u8], store: &Store, now: i64) -> Result<(), String> {
    match verb {
        b"PUT" => {
            let (key, entry) = snapshot::decode_entry(body)?;
            let mut shard = store.keys.write_shard(store.keys.shard_of(&key));
            if entry.expired(now) {
                shard.remove(&key[..]);
            } else {
                shard.insert(key.into(), entry);
            }
        }
        b"DEL" => {
            store
                .keys
                .write_shard(store.keys.shard_of(body))
                .remove(body);
        }
        // The records inside were written together; the outer record being whole, each
        // of them must be too.
        b"ALL" => {
            let mut pos = 0;
            while pos < body.len() {
                match parse_record(&body[pos..]) {
                    Parsed::Record(parts, len) => match &parts[..] {
                        [b"ALL", _] => return Err("an ALL inside an ALL".into()),
                        [verb, inner] => {
                            apply(verb, inner, store, now)?;
                            pos += len;
                        }
                        _ => return Err(format!("a record of {} parts inside ALL", parts.len())),
                    },
                    Parsed::Incomplete => return Err("an incomplete record inside ALL".into()),
                    Parsed::Bad(problem) => return Err(format!("inside ALL: {problem}")),
                }
            }
        }
        other => return Err(format!("unknown verb {:?}", String::from_utf8_lossy(other))),
    }
    Ok(())
}

/// Runs a `DELTA` record's command again when `key`'s state is the one it was made from
/// (see [`super::delta`]); skips it otherwise. The command's own error, if any, is the one
/// the live run got: it changed nothing then either.
fn replay_change(
    store: &Store,
    base: &[u8],
    version: &[u8],
    args: &[&[u8]],
    now: i64,
) -> Result<(), String> {
    let number = |text: &[u8]| {
        std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| "a change counter that is not a number".to_owned())
    };
    let (base, version) = (number(base)?, number(version)?);
    super::delta::seen(version)?;
    // Whether the record is damaged does not depend on the state it meets, so a log that
    // replays once replays again over a later snapshot.
    let command = super::cmd::find(args[0])
        .filter(|c| super::delta::CHANGES.contains(&c.name))
        .ok_or_else(|| format!("a change by {:?}", String::from_utf8_lossy(args[0])))?;
    let key = args[1];
    let current = store.keys.read(key, now, |e| e.map(|e| e.version));
    if current != Some(base) {
        return Ok(());
    }
    let _ = store.execute(command, crate::protocol::Proto::Resp2, args, now);
    let mut shard = store.keys.write_shard(store.keys.shard_of(key));
    if let Some(entry) = shard.get_mut(key) {
        entry.version = version;
    }
    Ok(())
}

enum Parsed<'a> {
    /// The record's parts (a verb first), and its length.
    Record(Vec<&'a [u8]>, usize),
    Incomplete,
    Bad(String),
}

/// One record at the start of `bytes`: `*2 $n verb $n body`, or `*n` parts for a
/// `DELTA`.
fn parse_record(bytes: &[u8]) -> Parsed<'_> {
    let mut pos = 0;
    let n = match line(bytes, &mut pos, b'*') {
        Ok(n) if n >= 2 => n,
        Ok(n) => return Parsed::Bad(format!("an array of {n}, fewer than 2")),
        Err(p) => return p,
    };
    let mut parts = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let n = match line(bytes, &mut pos, b'$') {
            Ok(n) => n,
            Err(p) => return p,
        };
        let Some(end) = pos.checked_add(n).filter(|e| e.checked_add(2).is_some()) else {
            return Parsed::Bad("a length past the end of memory".into());
        };
        if bytes.len() < end + 2 {
            return Parsed::Incomplete;
        }
        if &bytes[end..end + 2] != b"\r\n" {
            return Parsed::Bad("a bulk string not followed by CRLF".into());
        }
        parts.push(&bytes[pos..end]);
        pos = end + 2;
    }
    Parsed::Record(parts, pos)
}

/// `<mark><digits>\r\n` at `pos`; moves `pos` past it.
fn line<'a>(bytes: &[u8], pos: &mut usize, mark: u8) -> Result<usize, Parsed<'a>> {
    let rest = &bytes[*pos..];
    let Some(&first) = rest.first() else {
        return Err(Parsed::Incomplete);
    };
    if first != mark {
        return Err(Parsed::Bad(format!(
            "expected {:?}, found byte {first}",
            mark as char
        )));
    }
    let Some(cr) = rest.iter().position(|&b| b == b'\r') else {
        return if rest.len() > 21 {
            Err(Parsed::Bad("a length line without CRLF".into()))
        } else {
            Err(Parsed::Incomplete)
        };
    };
    if rest.len() < cr + 2 {
        return Err(Parsed::Incomplete);
    }
    if rest[cr + 1] != b'\n' {
        return Err(Parsed::Bad("a length line without CRLF".into()));
    }
    let n = std::str::from_utf8(&rest[1..cr])
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .ok_or_else(|| Parsed::Bad("a length that is not a number".into()))?;
    *pos += cr + 2;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::data::Data;
    use crate::embedded::error::StoreError;
    use crate::protocol::Proto;

    fn store() -> Store {
        Store::default()
    }

    fn record_of(store: &Store, key: &[u8], buf: &mut Vec<u8>) {
        store
            .keys
            .read(key, super::super::now_ms(), |entry| match entry {
                Some(entry) => {
                    let mut encoded = Vec::new();
                    snapshot::encode_entry(&mut encoded, key, entry);
                    write_record(buf, b"PUT", &encoded);
                }
                None => write_record(buf, b"DEL", key),
            });
    }

    fn get(store: &Store, key: &[u8]) -> Option<Vec<u8>> {
        store.keys.read(key, super::super::now_ms(), |e| match e {
            Some(Entry {
                data: Data::Str(s), ..
            }) => Some(s.clone()),
            _ => None,
        })
    }

    #[test]
    fn a_log_replays_to_the_state_it_recorded_and_again_over_a_later_snapshot() {
        let source = store();
        let mut log = Vec::new();
        for args in [
            &[&b"SET"[..], b"a", b"1"][..],
            &[b"SET", b"b", b"2"],
            &[b"SET", b"a", b"3"],
            &[b"DEL", b"b"],
            &[b"RPUSH", b"l", b"x", b"y"],
        ] {
            assert!(source.run(Proto::Resp2, args).is_ok());
            record_of(&source, args[1], &mut log);
        }
        let replayed = store();
        let outcome = replay(&log, &replayed).unwrap();
        assert_eq!((outcome.records, outcome.valid), (5, log.len()));
        assert_eq!(get(&replayed, b"a"), Some(b"3".to_vec()));
        assert_eq!(get(&replayed, b"b"), None);
        // The worst crash of a rotation: the new snapshot is in place, the old log not yet
        // cut. Replaying the whole log over the later state gives that state again.
        let later = store();
        let (bytes, _, _) = source.snapshot(0);
        snapshot::decode_with(&bytes, 0, |key, entry| {
            later.keys.insert(key, entry);
            true
        })
        .unwrap();
        replay(&log, &later).unwrap();
        for key in [&b"a"[..], b"b", b"l"] {
            let at = |s: &Store| {
                s.keys.read(key, 0, |e| {
                    e.map(|e| {
                        let mut b = Vec::new();
                        snapshot::encode_entry(&mut b, key, e);
                        b
                    })
                })
            };
            assert_eq!(at(&later), at(&source), "{key:?}");
        }
    }

    #[tokio::test]
    async fn a_log_that_cannot_be_written_refuses_writes_and_says_so_in_health() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pkv.data.aof");
        std::fs::write(&path, b"").unwrap();
        // Opened for reading only: every write fails, as on a full disk.
        let file = File::open(&path).unwrap();
        let store = store();
        let log = Aof::start(path, Policy::Always, file, 0).unwrap();
        assert!(store.aof.set(log).is_ok());
        assert!(store.health().is_ok());
        assert!(store.run(Proto::Resp2, &[b"SET", b"a", b"1"]).is_ok());
        let Some(aof) = store.aof() else {
            panic!("no log")
        };
        assert!(
            aof.wait_synced().await.is_err(),
            "the write reached the disk"
        );
        let health = store.health().unwrap_err();
        assert!(health.contains("append-only log"), "{health}");
        let refused = store.run(Proto::Resp2, &[b"SET", b"b", b"2"]);
        assert!(
            matches!(
                &refused,
                Err(crate::embedded::cmd::Error::Store(StoreError::Misconf(_)))
            ),
            "{refused:?}"
        );
        assert!(
            store.run(Proto::Resp2, &[b"GET", b"a"]).is_ok(),
            "reads are served"
        );
    }

    #[tokio::test]
    async fn a_redemption_comes_back_from_a_torn_log_whole_or_not_at_all() {
        use crate::meter::ledger::{account_key, token_key, Book, RedeemedBy};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pkv.data.aof");
        let source = store();
        let log = Aof::open(path.clone(), Policy::Always, &source).unwrap();
        assert!(source.aof.set(log).is_ok());
        source
            .redeem("jti-1", "acct", 10, i64::MAX / 1000, RedeemedBy::Auth)
            .await
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (credit, token) = (account_key("acct"), token_key("jti-1"));
        let has = |s: &Store, key: &str| s.keys.read(key.as_bytes(), 0, |e| e.is_some());
        // Wherever a crash cuts the log, the credit never comes back without its token id
        // (which would let the token be credited again).
        for cut in 0..=bytes.len() {
            let replayed = store();
            replay(&bytes[..cut], &replayed).unwrap();
            assert_eq!(
                has(&replayed, &credit),
                has(&replayed, &token),
                "cut at {cut} of {}",
                bytes.len()
            );
        }
        let replayed = store();
        replay(&bytes, &replayed).unwrap();
        assert!(has(&replayed, &credit) && has(&replayed, &token));
    }

    /// The `index`th command of the property's sequences, on key `k{key}` (a few of them
    /// name a second key): changes logged as commands, whole states (random, multi-key,
    /// deadlines, small strings), errors (wrong types), no-ops.
    fn command(index: u8, key: u8, a: u16, b: u8) -> Vec<Vec<u8>> {
        let k = format!("k{}", key % 3);
        let other = format!("k{}", (key + 1) % 3);
        let words: Vec<String> = match index % 40 {
            0 => vec!["HSET".into(), k, format!("f{}", a % 8), format!("v{b}")],
            1 => vec!["HDEL".into(), k, format!("f{}", a % 8)],
            2 => vec!["HINCRBY".into(), k, format!("n{}", a % 4), b.to_string()],
            3 => vec![
                "SADD".into(),
                k,
                format!("m{}", a % 16),
                format!("m{}", b % 16),
            ],
            4 => vec!["SREM".into(), k, format!("m{}", a % 16)],
            5 => vec!["SPOP".into(), k],
            6 => vec!["ZADD".into(), k, a.to_string(), format!("m{}", b % 16)],
            7 => vec!["ZINCRBY".into(), k, "1.5".into(), format!("m{}", a % 16)],
            8 => vec!["ZREM".into(), k, format!("m{}", a % 16)],
            9 => vec![
                "LPUSH".into(),
                k,
                format!("e{}", a % 8),
                format!("e{}", b % 8),
            ],
            10 => vec!["RPUSH".into(), k, format!("e{}", a % 8)],
            11 => vec!["LPOP".into(), k, "2".into()],
            12 => vec!["LREM".into(), k, "0".into(), format!("e{}", a % 8)],
            13 => vec!["LTRIM".into(), k, "0".into(), (a % 10).to_string()],
            14 => vec!["LSET".into(), k, "0".into(), format!("x{a}")],
            15 => vec![
                "LINSERT".into(),
                k,
                "BEFORE".into(),
                format!("e{}", a % 8),
                "i".into(),
            ],
            16 => vec!["XADD".into(), k, "*".into(), "f".into(), a.to_string()],
            17 => vec![
                "XADD".into(),
                k,
                "MAXLEN".into(),
                "5".into(),
                "*".into(),
                "f".into(),
                b.to_string(),
            ],
            18 => vec!["XTRIM".into(), k, "MAXLEN".into(), (a % 6).to_string()],
            19 => vec!["APPEND".into(), k, "x".repeat(usize::from(a % 128) * 40)],
            20 => vec!["SETRANGE".into(), k, (a % 6000).to_string(), "yy".into()],
            21 => vec!["INCR".into(), k],
            22 => vec!["SET".into(), k, a.to_string()],
            23 => vec!["DEL".into(), k],
            24 => vec!["EXPIRE".into(), k, "1000".into()],
            25 => vec!["PEXPIRE".into(), k, "100000".into(), "NX".into()],
            26 => vec!["RENAME".into(), k, other],
            27 => vec!["LMOVE".into(), k, other, "LEFT".into(), "RIGHT".into()],
            28 => vec![
                "SETBIT".into(),
                k,
                (u32::from(a) * 8).to_string(),
                "1".into(),
            ],
            29 => vec!["ZPOPMIN".into(), k],
            31 => vec!["SMOVE".into(), k, other, format!("m{}", a % 16)],
            32 => vec!["BLPOP".into(), k, other, "0".into()],
            33 => vec!["MSET".into(), k, a.to_string(), other, b.to_string()],
            34 => vec!["SUNIONSTORE".into(), k.clone(), k, other],
            35 => vec!["COPY".into(), k, other, "REPLACE".into()],
            36 => vec!["SET".into(), k, a.to_string(), "NX".into()],
            37 => vec!["GETEX".into(), k],
            38 => vec!["GETEX".into(), k, "EX".into(), "100".into()],
            39 => vec!["XACK".into(), k, "g".into(), "0-1".into()],
            _ => vec!["PFADD".into(), k, format!("e{a}")],
        };
        words.into_iter().map(String::into_bytes).collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Random writes on a few keys, with a snapshot taken while they go on (each key
        /// read at its own moment, as a snapshot's walk reads each shard at its own, and
        /// the log cut a little before the walk began; multi-key commands wait for the
        /// walk, as they wait for the gate it holds): the snapshot plus the log from the cut
        /// replays to the live state, change counters included.
        #[test]
        fn a_fuzzy_snapshot_and_the_log_after_its_start_replay_to_the_live_state(
            ops in proptest::collection::vec((0u8..40, 0u8..3, 0u16..8000, 0u8..=255), 1..80),
            start in 0usize..80,
            delay in 0usize..8,
            moments in proptest::collection::vec(0usize..80, 3),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("pkv.data.aof");
            let file = open_append(&path).unwrap();
            let live = store();
            let log = Aof::start(path.clone(), Policy::No, file, 0).unwrap();
            assert!(live.aof.set(log).is_ok());
            let aof = live.aof().unwrap();
            let keys: Vec<Vec<u8>> = (0..3).map(|i| format!("k{i}").into_bytes()).collect();
            let start = start % (ops.len() + 1);
            // The log's end is read before the walk takes the gate: anything may run in
            // between.
            let walk = (start + delay).min(ops.len());
            // A multi-key command waits for the walk to end (the walk holds the gate
            // shared): the walk reads every key before the first one from `walk` on.
            let multi = |&(index, key, a, b): &(u8, u8, u16, u8)| {
                let args = command(index, key, a, b);
                crate::embedded::cmd::find(&args[0])
                    .is_some_and(|c| c.kind == crate::embedded::cmd::Kind::Multi)
            };
            let end = (walk..ops.len())
                .find(|&i| multi(&ops[i]))
                .unwrap_or(ops.len());
            let moments: Vec<usize> = moments
                .iter()
                .map(|m| walk + m % (end + 1 - walk))
                .collect();
            let mut cut = 0;
            let mut snapshot: Vec<Option<Vec<u8>>> = vec![None; 3];
            for step in 0..=ops.len() {
                if step == start {
                    cut = aof.end();
                }
                for (i, key) in keys.iter().enumerate() {
                    if moments[i] == step {
                        snapshot[i] = live.keys.read(key, super::super::now_ms(), |e| {
                            e.map(|e| {
                                let mut b = Vec::new();
                                snapshot::encode_entry(&mut b, key, e);
                                b
                            })
                        });
                    }
                }
                if let Some(&(index, key, a, b)) = ops.get(step) {
                    let args = command(index, key, a, b);
                    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                    let _ = live.run(Proto::Resp2, &args);
                }
            }
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(aof.wait_synced()).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let replayed = store();
            for encoded in snapshot.iter().flatten() {
                let (key, entry) = snapshot::decode_entry(encoded).unwrap();
                replayed.keys.insert(&key, entry);
            }
            let cut = usize::try_from(cut).unwrap();
            let outcome = replay(&bytes[cut..], &replayed).unwrap();
            proptest::prop_assert!(outcome.torn.is_none());
            let now = super::super::now_ms();
            for key in &keys {
                let live_entry = live.keys.read(key, now, |e| e.cloned());
                let replayed_entry = replayed.keys.read(key, now, |e| e.cloned());
                proptest::prop_assert_eq!(live_entry, replayed_entry, "{:?}", String::from_utf8_lossy(key));
            }
        }
    }

    /// Whether a `DELTA` is damage does not depend on the state it meets: one that names
    /// a command pkv never logs as a change is an error wherever it is, not only when the
    /// key happens to hold its base state. Otherwise a log that replayed once could fail
    /// over a later snapshot (the crash between a snapshot and the cut of the log) and stop
    /// start-up.
    #[test]
    fn a_change_by_a_command_that_is_not_one_is_damage_whatever_the_state() {
        let mut entry = Entry::new(Data::Str(b"1".to_vec()));
        entry.version = 5;
        let mut log = Vec::new();
        write_parts(&mut log, &[b"DELTA", b"5", b"6", b"GET", b"k"]);
        encode_state(&mut log, b"k", Some(&entry));
        let error = replay(&log, &store()).err();
        assert!(
            error.as_deref().is_some_and(|e| e.contains("GET")),
            "{error:?}"
        );
    }

    /// A change counter no pkv could have given out (it takes one per write: 2^62 is
    /// centuries away) is damage, in a `DELTA` and in a `PUT`'s entry: believed, it would
    /// make the next counter wrap to 0 ("none") and then repeat counters that states
    /// already have, so a `DELTA` could apply to a state it was not made from.
    #[test]
    fn a_change_counter_past_the_last_one_pkv_gives_is_damage() {
        let huge = u64::MAX.to_string();
        let mut change = Vec::new();
        write_parts(
            &mut change,
            &[b"DELTA", b"1", huge.as_bytes(), b"INCR", b"k"],
        );
        let error = replay(&change, &store()).err();
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("change counter")),
            "{error:?}"
        );
        let mut entry = Entry::new(Data::Str(b"1".to_vec()));
        entry.version = u64::MAX - 1;
        let mut put = Vec::new();
        encode_state(&mut put, b"k", Some(&entry));
        let error = replay(&put, &store()).err();
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("change counter")),
            "{error:?}"
        );
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_damage_before_the_end_is_an_error() {
        let mut log = Vec::new();
        write_record(&mut log, b"DEL", b"a");
        let whole = log.len();
        write_record(&mut log, b"DEL", b"bbbb");
        for cut in whole..log.len() {
            let outcome = replay(&log[..cut], &store()).unwrap();
            assert_eq!(outcome.valid, whole, "cut at {cut}");
            assert_eq!(outcome.torn.is_some(), cut > whole, "cut at {cut}");
        }
        let mut zeros = log[..whole].to_vec();
        zeros.extend_from_slice(&[0; 64]);
        assert_eq!(replay(&zeros, &store()).unwrap().valid, whole);
        let mut damaged = log.clone();
        damaged[whole] = b'x';
        assert!(replay(&damaged, &store()).is_err());
    }
}
