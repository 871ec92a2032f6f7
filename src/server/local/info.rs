//! `INFO` with Redis 7.0's sections, each field the account's own figure or a harmless
//! constant, never another tenant's or the process's; and the small introspection commands
//! tools send: `CONFIG GET` of a fixed subset, `OBJECT|XINFO|XGROUP HELP`, `PUBSUB NUMPAT`.
//!
//! The keyspace and memory sections walk the account's namespace (SCAN, then `PTTL` and
//! `MEMORY USAGE` per key, a page per round trip), as DBSIZE does: their cost grows with
//! the keys, and the account pays the walk's time (INFO is metered with
//! [`crate::commands::flags::UPSTREAM_TIME`]). The other sections read counters in memory.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::introspect::REDIS_VERSION;
use crate::commands::{Call, Local};
use crate::error::ClientError;
use crate::protocol::frame::Frame;
use crate::server::session::Session;
use crate::server::Shared;

/// Redis 7.0's sections, in the order it writes them.
const SECTIONS: [&str; 13] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "commandstats",
    "errorstats",
    "latencystats",
    "cluster",
    "keyspace",
];

/// Sections chosen by an INFO request, one bit per entry of [`SECTIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chosen(u16);

impl Chosen {
    const ALL: Chosen = Chosen((1 << SECTIONS.len()) - 1);

    fn bit(name: &str) -> u16 {
        SECTIONS
            .iter()
            .position(|s| *s == name)
            .map_or(0, |i| 1 << i)
    }

    /// Redis's default: every section but commandstats and latencystats.
    fn default_sections() -> Chosen {
        Chosen(Self::ALL.0 & !(Self::bit("commandstats") | Self::bit("latencystats")))
    }

    /// From INFO's arguments (`args[1..]`), as Redis reads them: no argument is `default`;
    /// `all` and `everything` are every section (pkv has no module sections); a name
    /// Redis does not know adds nothing.
    fn parse(args: &[Bytes]) -> Chosen {
        if args.len() < 2 {
            return Self::default_sections();
        }
        let mut chosen = 0;
        for arg in &args[1..] {
            let name = String::from_utf8_lossy(arg).to_ascii_lowercase();
            chosen |= match name.as_str() {
                "all" | "everything" => Self::ALL.0,
                "default" => Self::default_sections().0,
                other => Self::bit(other),
            };
        }
        Chosen(chosen)
    }

    fn has(self, name: &str) -> bool {
        self.0 & Self::bit(name) != 0
    }
}

/// The account's keys, as one walk of its namespace finds them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct KeyFigures {
    pub keys: u64,
    /// Keys with a TTL.
    pub expires: u64,
    /// The sum of those TTLs, in milliseconds.
    pub ttl_ms: u64,
    /// `MEMORY USAGE` summed over the keys (Redis's own sampling of aggregates).
    pub bytes: u64,
}

/// Keys asked for per SCAN step of the walk.
const WALK_STEP: usize = 1000;

/// `PKV_MAXMEMORY` on the embedded store; 0 (none of pkv's) in front of an upstream.
fn maxmemory(session: &Session) -> u64 {
    let current = &session.current;
    if current.upstream_url.is_none() {
        current.maxmemory
    } else {
        0
    }
}

/// The settings `CONFIG GET` answers, with their values: what Redis tools read
/// (redis-benchmark asks `save` and `appendonly`), none of them the process's secrets or
/// another tenant's.
fn config_pairs(session: &Session) -> Vec<(&'static str, String)> {
    let current = &session.current;
    let timeout = current.idle_timeout.map_or(0, |d| d.as_secs());
    // The embedded store's own settings; an upstream's are its operator's business.
    let embedded = current.upstream_url.is_none();
    let logged = embedded && current.data_file.is_some();
    vec![
        ("maxmemory", maxmemory(session).to_string()),
        ("maxmemory-policy", "noeviction".into()),
        ("appendonly", if logged { "yes" } else { "no" }.into()),
        ("appendfsync", current.append_fsync.name().into()),
        ("save", String::new()),
        ("databases", "1".into()),
        ("timeout", timeout.to_string()),
        ("notify-keyspace-events", current.notify_keyspace_events()),
        ("proto-max-bulk-len", current.max_request_bytes.to_string()),
        (
            "maxclients",
            current.max_connections_per_account.to_string(),
        ),
        ("hz", "10".into()),
        ("cluster-enabled", "no".into()),
        ("lua-time-limit", "5000".into()),
        ("busy-reply-threshold", "5000".into()),
        ("slowlog-log-slower-than", "10000".into()),
        ("slowlog-max-len", "128".into()),
    ]
}

/// Redis 7.0.15's help text for `OBJECT HELP`, `XINFO HELP` and `XGROUP HELP`.
fn help_lines(container: &str) -> &'static [&'static str] {
    match container {
        "OBJECT" => &[
            "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "FREQ <key>",
            "    Return the access frequency index of the <key>. The returned integer is",
            "    proportional to the logarithm of the recent access frequency of the key.",
            "IDLETIME <key>",
            "    Return the idle time of the <key>, that is the approximated number of",
            "    seconds elapsed since the last access to the key.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key>.",
            "HELP",
            "    Prints this help.",
        ],
        "XINFO" => &[
            "XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "CONSUMERS <key> <groupname>",
            "    Show consumers of <groupname>.",
            "GROUPS <key>",
            "    Show the stream consumer groups.",
            "STREAM <key> [FULL [COUNT <count>]",
            "    Show information about the stream.",
            "HELP",
            "    Prints this help.",
        ],
        "XGROUP" => &[
            "XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "CREATE <key> <groupname> <id|$> [option]",
            "    Create a new consumer group. Options are:",
            "    * MKSTREAM",
            "      Create the empty stream if it does not exist.",
            "    * ENTRIESREAD entries_read",
            "      Set the group's entries_read counter (internal use).",
            "CREATECONSUMER <key> <groupname> <consumer>",
            "    Create a new consumer in the specified group.",
            "DELCONSUMER <key> <groupname> <consumer>",
            "    Remove the specified consumer.",
            "DESTROY <key> <groupname>",
            "    Remove the specified group.",
            "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
            "    Set the current group ID and entries_read counter.",
            "HELP",
            "    Prints this help.",
        ],
        _ => &[],
    }
}

/// Bytes as Redis's `bytesToHuman` writes them (`1.09M`, `200B`).
fn human(n: u64) -> String {
    let d = n as f64;
    const UNITS: [(f64, &str); 6] = [
        (1024.0, "K"),
        (1024.0 * 1024.0, "M"),
        (1024.0 * 1024.0 * 1024.0, "G"),
        (1024.0 * 1024.0 * 1024.0 * 1024.0, "T"),
        (1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0, "P"),
        (1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0, "E"),
    ];
    if d < 1024.0 {
        return format!("{n}B");
    }
    let mut shown = format!("{:.2}K", d / 1024.0);
    for pair in UNITS.windows(2) {
        let (unit, _) = pair[1];
        if d >= unit {
            shown = format!("{:.2}{}", d / unit, pair[1].1);
        }
    }
    shown
}

/// Glob matching as Redis's `stringmatchlen` does it, case-insensitive as `CONFIG GET`
/// matches (`*`, `?`, `[...]` with ranges and `^`, `\` escapes).
fn glob_nocase(pattern: &[u8], text: &[u8]) -> bool {
    let p: Vec<u8> = pattern.to_ascii_lowercase();
    let t: Vec<u8> = text.to_ascii_lowercase();
    crate::embedded::glob::matches(&p, &t)
}

impl Session {
    /// `INFO [section ...]`.
    pub(super) async fn info(&mut self, args: &[Bytes], out: &mut BytesMut) {
        let chosen = Chosen::parse(args);
        let walk = chosen.has("keyspace") || chosen.has("memory");
        let keys = if walk {
            self.flush(out).await;
            match self
                .walk_keys(chosen.has("memory"), chosen.has("keyspace"))
                .await
            {
                Ok(keys) => keys,
                Err(e) => return self.error_reply(e, out),
            }
        } else {
            KeyFigures::default()
        };
        let version = Shared::redis_version(self.shared.clone()).await;
        // A verbatim string in RESP3, as Redis sends it (a bulk string in RESP2).
        let text =
            Frame::Verbatim(format!("txt:{}", self.info_text(chosen, &keys, &version)).into());
        self.reply(out, |w| w.frame(&text));
    }

    /// The account's keys: SCAN over its namespace, and per page one pipeline asking each
    /// key's `PTTL` (`ttl`) and `MEMORY USAGE` (`memory`). A key that expired between the
    /// two steps counts as gone.
    pub(super) async fn walk_keys(
        &mut self,
        memory: bool,
        ttl: bool,
    ) -> Result<KeyFigures, ClientError> {
        let Some(ns) = self.ns().cloned() else {
            return Ok(KeyFigures::default());
        };
        let glob = ns.wrap_glob(b"*");
        let mut figures = KeyFigures::default();
        let mut cursor = Bytes::from_static(b"0");
        loop {
            let (next, keys) = self.scan_page(cursor, glob.clone()).await?;
            cursor = next;
            let mut calls = Vec::new();
            for key in &keys {
                if let Frame::Bulk(k) = key {
                    if ttl {
                        calls.push(Call::named("PTTL").arg(k.clone()));
                    }
                    if memory {
                        calls.push(Call::named("MEMORY").arg("USAGE").arg(k.clone()));
                    }
                }
            }
            if calls.is_empty() {
                figures.keys += keys.len() as u64;
            } else {
                let per_key = usize::from(ttl) + usize::from(memory);
                let replies = self.shared.backend.pipeline(self.proto, &calls).await?;
                for key in replies.chunks(per_key) {
                    let mut gone = false;
                    let (mut key_ttl, mut bytes) = (None, 0);
                    for (i, reply) in key.iter().enumerate() {
                        match (ttl && i == 0, reply) {
                            (true, Frame::Integer(-2)) => gone = true,
                            (true, Frame::Integer(ms)) if *ms >= 0 => key_ttl = Some(*ms as u64),
                            (false, Frame::Integer(n)) => bytes = (*n).max(0) as u64,
                            (false, Frame::Null) => gone = true,
                            _ => {}
                        }
                    }
                    if gone {
                        continue;
                    }
                    figures.keys += 1;
                    figures.bytes += bytes;
                    if let Some(ms) = key_ttl {
                        figures.expires += 1;
                        figures.ttl_ms += ms;
                    }
                }
            }
            if cursor[..] == b"0"[..] {
                break;
            }
        }
        Ok(figures)
    }

    /// Every key of the account's namespace now, as the backend names them (prefixed);
    /// [`ClientError::FlushInMultiTooBig`] past `most` keys.
    pub(super) async fn namespace_keys(&mut self, most: usize) -> Result<Vec<Bytes>, ClientError> {
        let Some(ns) = self.ns().cloned() else {
            return Ok(Vec::new());
        };
        let glob = ns.wrap_glob(b"*");
        let mut found = Vec::new();
        let mut cursor = Bytes::from_static(b"0");
        loop {
            let (next, keys) = self.scan_page(cursor, glob.clone()).await?;
            found.extend(keys.into_iter().filter_map(|k| match k {
                Frame::Bulk(k) => Some(k),
                _ => None,
            }));
            cursor = next;
            if found.len() > most {
                return Err(ClientError::FlushInMultiTooBig { most });
            }
            if cursor[..] == b"0"[..] {
                return Ok(found);
            }
        }
    }

    /// One SCAN step over `glob`: the next cursor and the keys.
    async fn scan_page(
        &mut self,
        cursor: Bytes,
        glob: Bytes,
    ) -> Result<(Bytes, Vec<Frame>), ClientError> {
        let scan = [Call::named("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(glob)
            .arg("COUNT")
            .arg(WALK_STEP.to_string())];
        let page = self.shared.backend.pipeline(self.proto, &scan).await?.pop();
        let Some(Frame::Array(mut parts)) = page else {
            return Err(ClientError::BadScanReply);
        };
        let keys = match parts.pop() {
            Some(Frame::Array(keys)) => keys,
            _ => Vec::new(),
        };
        let cursor = match parts.pop() {
            Some(Frame::Bulk(c)) => c,
            _ => Bytes::from_static(b"0"),
        };
        Ok((cursor, keys))
    }

    /// INFO's text for the `chosen` sections: the account's own figures (its connections,
    /// commands, keys and their bytes) and constants.
    fn info_text(&self, chosen: Chosen, keys: &KeyFigures, version: &str) -> String {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let tenant = self.auth.as_ref().map(|a| &a.tenant);
        let (clients, blocked, received, commands) = tenant.map_or((0, 0, 0, 0), |t| {
            (
                load(&t.connections),
                load(&t.blocked),
                load(&t.connections_total),
                // Those run before this INFO in the same read count too. This INFO is
                // counted once, in one of the two (an admission that had to wait for the
                // ledger moves the pending count to the account's), and Redis leaves the
                // running command out.
                (load(&t.commands_total) + self.commands_pending()).saturating_sub(1),
            )
        });
        let (channels, patterns) = self
            .pubsub
            .as_ref()
            .map_or((0, 0), |s| (s.channels.len(), s.patterns.len()));
        let mut text = String::new();
        let mut section = |name: &str, body: &str| {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            let _ = write!(text, "# {name}\r\n{body}");
        };
        if chosen.has("server") {
            section(
                "Server",
                &format!(
                    "redis_version:{version}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_build_id:0\r\nredis_mode:standalone\r\narch_bits:64\r\nserver_name:pkv\r\npkv_version:{}\r\nhz:10\r\nconfigured_hz:10\r\n",
                    env!("CARGO_PKG_VERSION"),
                ),
            );
        }
        if chosen.has("clients") {
            section(
                "Clients",
                &format!(
                    "connected_clients:{clients}\r\ncluster_connections:0\r\nmaxclients:{}\r\nclient_recent_max_input_buffer:0\r\nclient_recent_max_output_buffer:0\r\nblocked_clients:{blocked}\r\ntracking_clients:0\r\nclients_in_timeout_table:0\r\n",
                    self.current.max_connections_per_account,
                ),
            );
        }
        if chosen.has("memory") {
            let used = keys.bytes;
            let max = maxmemory(self);
            section(
                "Memory",
                &format!(
                    "used_memory:{used}\r\nused_memory_human:{}\r\nused_memory_dataset:{used}\r\nmaxmemory:{max}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:noeviction\r\n",
                    human(used),
                    human(max),
                ),
            );
        }
        if chosen.has("persistence") {
            section(
                "Persistence",
                "loading:0\r\nasync_loading:0\r\nrdb_changes_since_last_save:0\r\nrdb_bgsave_in_progress:0\r\nrdb_last_bgsave_status:ok\r\naof_enabled:0\r\naof_rewrite_in_progress:0\r\naof_last_bgrewrite_status:ok\r\naof_last_write_status:ok\r\n",
            );
        }
        if chosen.has("stats") {
            section(
                "Stats",
                &format!(
                    "total_connections_received:{received}\r\ntotal_commands_processed:{commands}\r\nrejected_connections:0\r\nexpired_keys:0\r\nevicted_keys:0\r\nkeyspace_hits:0\r\nkeyspace_misses:0\r\npubsub_channels:{channels}\r\npubsub_patterns:{patterns}\r\npubsubshard_channels:0\r\n",
                ),
            );
        }
        if chosen.has("replication") {
            section(
                "Replication",
                "role:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\nmaster_repl_offset:0\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:0\r\n",
            );
        }
        if chosen.has("cpu") {
            section(
                "CPU",
                "used_cpu_sys:0.000000\r\nused_cpu_user:0.000000\r\nused_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\n",
            );
        }
        if chosen.has("modules") {
            section("Modules", "");
        }
        if chosen.has("commandstats") {
            let mut body = String::new();
            for f in tenant.map(|t| t.commands.figures()).unwrap_or_default() {
                let per_call = if f.calls == 0 {
                    0.0
                } else {
                    f.usec as f64 / f.calls as f64
                };
                let _ = write!(
                    body,
                    "cmdstat_{}:calls={},usec={},usec_per_call={per_call:.2},rejected_calls={},failed_calls={}\r\n",
                    f.spec.name.to_ascii_lowercase(),
                    f.calls,
                    f.usec,
                    f.rejected,
                    f.failed,
                );
            }
            section("Commandstats", &body);
        }
        if chosen.has("errorstats") {
            section("Errorstats", "");
        }
        if chosen.has("latencystats") {
            section("Latencystats", "");
        }
        if chosen.has("cluster") {
            section("Cluster", "cluster_enabled:0\r\n");
        }
        if chosen.has("keyspace") {
            // As Redis: no line for a database without keys.
            let body = if keys.keys == 0 {
                String::new()
            } else {
                let avg_ttl = keys.ttl_ms.checked_div(keys.expires).unwrap_or(0);
                format!(
                    "db0:keys={},expires={},avg_ttl={avg_ttl}\r\n",
                    keys.keys, keys.expires
                )
            };
            section("Keyspace", &body);
        }
        text
    }

    /// `CONFIG GET pattern [pattern ...]`: the fixed subset, each setting once however
    /// many patterns match it; a map in RESP3.
    pub(super) fn config_get(&mut self, args: &[Bytes], out: &mut BytesMut) {
        let pairs: Vec<(&str, String)> = config_pairs(self)
            .into_iter()
            .filter(|(name, _)| args[2..].iter().any(|p| glob_nocase(p, name.as_bytes())))
            .collect();
        self.reply(out, |w| {
            w.map(pairs.len());
            for (name, value) in &pairs {
                w.bulk(name.as_bytes());
                w.bulk(value.as_bytes());
            }
        });
    }

    /// `OBJECT HELP`, `XINFO HELP`, `XGROUP HELP`: Redis's lines, as simple strings.
    pub(super) fn help(&mut self, args: &[Bytes], out: &mut BytesMut) {
        let container = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        let lines = help_lines(&container);
        self.reply(out, |w| {
            w.array(lines.len());
            for line in lines {
                w.simple(line);
            }
        });
    }

    /// `PUBSUB NUMPAT`: the patterns this connection is subscribed to. Redis counts every
    /// client's; the upstream's count would hold other tenants' patterns.
    pub(super) fn numpat(&mut self, out: &mut BytesMut) {
        let n = self.pubsub.as_ref().map_or(0, |s| s.patterns.len()) as i64;
        self.reply(out, |w| w.int(n));
    }

    /// Runs the introspection commands of this file.
    pub(super) async fn introspect(&mut self, local: Local, args: &[Bytes], out: &mut BytesMut) {
        match local {
            Local::Info => self.info(args, out).await,
            Local::ConfigGet => self.config_get(args, out),
            Local::Help => self.help(args, out),
            Local::PubsubNumpat => self.numpat(out),
            _ => {}
        }
    }
}

impl Shared {
    /// The Redis version pkv reports (INFO, HELLO): the upstream's own, read once from
    /// its `INFO server` (at start-up, and again on first need if it had not answered) and
    /// kept; [`REDIS_VERSION`] on the embedded store, or while the upstream has not
    /// answered.
    pub(in crate::server) async fn redis_version(shared: Arc<Shared>) -> String {
        if shared.settings.upstream_url.is_none() {
            return REDIS_VERSION.to_owned();
        }
        let asked = shared.clone();
        match shared
            .upstream_version
            .get_or_try_init(|| upstream_version(asked))
            .await
        {
            Ok(version) => version.clone(),
            Err(()) => REDIS_VERSION.to_owned(),
        }
    }
}

/// The upstream's `redis_version`, from its `INFO server`.
async fn upstream_version(shared: Arc<Shared>) -> Result<String, ()> {
    let call = [Call::named("INFO").arg("server")];
    let reply = shared
        .backend
        .pipeline(crate::protocol::Proto::Resp2, &call)
        .await
        .map_err(|_| ())?;
    let text = match reply.first() {
        Some(Frame::Bulk(b) | Frame::Verbatim(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => return Err(()),
    };
    text.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_read_as_redis_reads_them() {
        let args = |list: &[&str]| -> Vec<Bytes> {
            std::iter::once("INFO")
                .chain(list.iter().copied())
                .map(|s| Bytes::copy_from_slice(s.as_bytes()))
                .collect()
        };
        let default = Chosen::parse(&args(&[]));
        assert!(default.has("keyspace") && default.has("memory") && !default.has("commandstats"));
        assert_eq!(Chosen::parse(&args(&["default"])), default);
        assert_eq!(Chosen::parse(&args(&["ALL"])), Chosen::ALL);
        assert_eq!(Chosen::parse(&args(&["everything"])), Chosen::ALL);
        let two = Chosen::parse(&args(&["Clients", "keyspace"]));
        assert!(two.has("clients") && two.has("keyspace") && !two.has("server"));
        assert_eq!(Chosen::parse(&args(&["nosuch"])), Chosen(0));
    }

    #[test]
    fn human_sizes_follow_redis() {
        assert_eq!(human(200), "200B");
        assert_eq!(human(1_138_456), "1.09M");
        assert_eq!(human(2048), "2.00K");
    }

    #[test]
    fn config_patterns_are_globs() {
        assert!(glob_nocase(b"*", b"maxmemory"));
        assert!(glob_nocase(b"MAXMEMORY*", b"maxmemory-policy"));
        assert!(glob_nocase(b"sav?", b"save"));
        assert!(!glob_nocase(b"save", b"saves"));
    }
}
