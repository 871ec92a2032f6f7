//! The same commands on both backends: every case file in `tests/cases/*.redis` runs
//! against pkv in front of a real redis-server and pkv on its embedded store, in RESP2 and
//! in RESP3, and the replies must agree.
//!
//! A case file is a list of groups; each group (`## name`) runs on a fresh account (an
//! empty namespace), one connection per backend, its lines in order. Lines are split like
//! redis-cli splits them. A leading `~` compares the reply order-insensitively (arrays and
//! sets as multisets, maps as sets of pairs, recursively); a leading `?` compares only the
//! reply's type and, for aggregates, its length (a string's length is not compared).
//! Errors are compared by their code (the first word) only, at any depth. (Un)subscribe
//! commands answer once per channel; those replies are read and compared together.
//! Every difference is collected, and the test fails once with all of them. Lines the
//! embedded store answers with "is not available in the embedded store" fail the test
//! too, listed apart: case files must use only commands the store runs.
//!
//! `CASES=strings,basics:MULTI cargo test --test backends` runs only the files (and, after
//! `:`, the groups whose name contains the text) listed; `CASES_SHOW=1` prints every
//! line's replies (with `-- --nocapture`).
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{encode, quoted, Issuer, PkvConfig, Redis, Resp, RespConn, Server};

/// How long one reply may take (blocking commands in cases use short timeouts).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the embedded store answers for a served command it does not run.
const NOT_AVAILABLE: &str = "not available in the embedded store";

/// Longest command shown in a report before it is cut.
const SHOWN_MAX: usize = 160;

/// Units on each group's token: plenty for any case.
const GROUP_QUANTITY: i64 = 1000;

// === Case files ===

/// How a line's replies are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Exact,
    /// `~`: order-insensitive.
    Unordered,
    /// `?`: type and length only.
    Random,
}

#[derive(Debug, Clone)]
struct Line {
    /// `file:line`
    at: String,
    mode: Mode,
    args: Vec<Vec<u8>>,
}

impl Line {
    /// The command as it would be typed, for reports.
    fn shown(&self) -> String {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| {
                let plain = !a.is_empty()
                    && a.iter()
                        .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\'' && b != b'\\');
                if plain {
                    String::from_utf8_lossy(a).into_owned()
                } else {
                    quoted(a)
                }
            })
            .collect();
        let prefix = match self.mode {
            Mode::Exact => "",
            Mode::Unordered => "~",
            Mode::Random => "?",
        };
        let text = format!("{prefix}{}", args.join(" "));
        if text.len() <= SHOWN_MAX {
            return text;
        }
        let mut cut = SHOWN_MAX - 40;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{} ... ({} arguments)", &text[..cut], self.args.len())
    }

    fn name(&self) -> String {
        String::from_utf8_lossy(&self.args[0]).to_ascii_uppercase()
    }
}

#[derive(Debug, Clone)]
struct Group {
    file: String,
    /// `file:line` of the `##` line.
    at: String,
    name: String,
    lines: Vec<Line>,
}

/// Splits a command line into arguments the way redis-cli does: whitespace separates,
/// "double quotes" take `\n \r \t \b \a \" \\ \xHH` escapes (other escaped characters
/// stand for themselves), 'single quotes' take only `\'`. A closing quote must end the
/// argument.
fn split_args(line: &str) -> Result<Vec<Vec<u8>>, String> {
    let bytes = line.as_bytes();
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            return Ok(args);
        }
        let mut arg = Vec::new();
        while let Some(&c) = bytes.get(i) {
            if c.is_ascii_whitespace() {
                break;
            }
            match c {
                b'"' => {
                    i += 1;
                    loop {
                        match bytes.get(i) {
                            None => return Err("unbalanced double quotes".into()),
                            Some(b'"') => break,
                            Some(b'\\') => {
                                let Some(&e) = bytes.get(i + 1) else {
                                    return Err("unbalanced double quotes".into());
                                };
                                i += 2;
                                match e {
                                    b'n' => arg.push(b'\n'),
                                    b'r' => arg.push(b'\r'),
                                    b't' => arg.push(b'\t'),
                                    b'b' => arg.push(8),
                                    b'a' => arg.push(7),
                                    b'x' => {
                                        let hex = bytes
                                            .get(i..i + 2)
                                            .and_then(|h| std::str::from_utf8(h).ok())
                                            .and_then(|h| u8::from_str_radix(h, 16).ok());
                                        match hex {
                                            Some(b) => {
                                                arg.push(b);
                                                i += 2;
                                            }
                                            None => arg.push(b'x'),
                                        }
                                    }
                                    other => arg.push(other),
                                }
                            }
                            Some(&b) => {
                                arg.push(b);
                                i += 1;
                            }
                        }
                    }
                    i += 1;
                    if bytes.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                        return Err("closing quote must be followed by a space".into());
                    }
                }
                b'\'' => {
                    i += 1;
                    loop {
                        match bytes.get(i) {
                            None => return Err("unbalanced single quotes".into()),
                            Some(b'\'') => break,
                            Some(b'\\') if bytes.get(i + 1) == Some(&b'\'') => {
                                arg.push(b'\'');
                                i += 2;
                            }
                            Some(&b) => {
                                arg.push(b);
                                i += 1;
                            }
                        }
                    }
                    i += 1;
                    if bytes.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                        return Err("closing quote must be followed by a space".into());
                    }
                }
                _ => {
                    arg.push(c);
                    i += 1;
                }
            }
        }
        args.push(arg);
    }
}

/// Parses one case file; an error names `file:line`.
fn parse_cases(file: &str, text: &str) -> Result<Vec<Group>, String> {
    let mut groups: Vec<Group> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let at = format!("{file}:{}", n + 1);
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("##") {
            let name = name.trim();
            if name.is_empty() {
                return Err(format!("{at}: a group needs a name (`## name`)"));
            }
            groups.push(Group {
                file: file.to_owned(),
                at,
                name: name.to_owned(),
                lines: Vec::new(),
            });
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (mode, rest) = if let Some(rest) = line.strip_prefix('~') {
            (Mode::Unordered, rest)
        } else if let Some(rest) = line.strip_prefix('?') {
            (Mode::Random, rest)
        } else {
            (Mode::Exact, line)
        };
        let args = split_args(rest).map_err(|e| format!("{at}: {e}: {raw}"))?;
        if args.is_empty() {
            return Err(format!("{at}: no command after {:?}", &line[..1]));
        }
        let Some(group) = groups.last_mut() else {
            return Err(format!(
                "{at}: command before the first group; start one with `## name`"
            ));
        };
        group.lines.push(Line { at, mode, args });
    }
    if let Some(empty) = groups.iter().find(|g| g.lines.is_empty()) {
        return Err(format!(
            "{}: group {:?} has no commands",
            empty.at, empty.name
        ));
    }
    Ok(groups)
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}

/// Every case file, in name order, parsed; parse errors are collected.
fn load_cases() -> (Vec<Group>, Vec<String>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/cases exists")
        .map(|e| e.expect("readable tests/cases").path())
        .filter(|p| p.extension().is_some_and(|e| e == "redis"))
        .collect();
    files.sort();
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                errors.push(format!("{name}: unreadable: {e}"));
                continue;
            }
        };
        match parse_cases(&name, &text) {
            Ok(parsed) => groups.extend(parsed),
            Err(e) => errors.push(e),
        }
    }
    (groups, errors)
}

/// The `CASES` filter: `file[:group text],...`; empty runs everything.
fn selected(group: &Group, filter: &str) -> bool {
    if filter.trim().is_empty() {
        return true;
    }
    filter.split(',').any(|item| {
        let (file, name) = item.trim().split_once(':').unwrap_or((item.trim(), ""));
        let stem = group.file.trim_end_matches(".redis");
        (file.is_empty() || stem == file || group.file == file) && group.name.contains(name)
    })
}

// === Comparing replies ===

/// A value as it is compared: errors reduced to their code; with `unordered`, arrays,
/// sets and pushes sorted and maps' pairs sorted, at every depth.
fn canonical(value: &Resp, unordered: bool) -> Resp {
    let all = |items: &[Resp]| -> Vec<Resp> {
        let mut out: Vec<Resp> = items.iter().map(|v| canonical(v, unordered)).collect();
        if unordered {
            out.sort();
        }
        out
    };
    match value {
        Resp::Error(_) => Resp::Error(value.error_code().unwrap_or_default()),
        Resp::BulkError(_) => Resp::BulkError(value.error_code().unwrap_or_default().into()),
        Resp::Array(v) => Resp::Array(all(v)),
        Resp::Set(v) => Resp::Set(all(v)),
        Resp::Push(v) => Resp::Push(all(v)),
        Resp::Map(pairs) => {
            let mut out: Vec<(Resp, Resp)> = pairs
                .iter()
                .map(|(k, v)| (canonical(k, unordered), canonical(v, unordered)))
                .collect();
            if unordered {
                out.sort();
            }
            Resp::Map(out)
        }
        Resp::Attribute(attrs, inner) => Resp::Attribute(
            attrs
                .iter()
                .map(|(k, v)| (canonical(k, unordered), canonical(v, unordered)))
                .collect(),
            Box::new(canonical(inner, unordered)),
        ),
        other => other.clone(),
    }
}

/// What a `?` line compares: the type, the length of an aggregate, an error's code.
fn shape(value: &Resp) -> (String, Option<usize>, Option<String>) {
    (
        value.type_name().to_owned(),
        value.len(),
        value.error_code(),
    )
}

/// Whether two replies to the same line agree.
fn agree(mode: Mode, redis: &Resp, embedded: &Resp) -> bool {
    match mode {
        Mode::Exact => canonical(redis, false) == canonical(embedded, false),
        Mode::Unordered => canonical(redis, true) == canonical(embedded, true),
        Mode::Random => shape(redis) == shape(embedded),
    }
}

fn all_agree(mode: Mode, redis: &[Resp], embedded: &[Resp]) -> bool {
    redis.len() == embedded.len() && redis.iter().zip(embedded).all(|(r, e)| agree(mode, r, e))
}

fn shown(replies: &[Resp]) -> String {
    let parts: Vec<String> = replies.iter().map(Resp::to_string).collect();
    parts.join("  then  ")
}

/// The commands a reply says the embedded store does not run.
fn unavailable_in(replies: &[Resp], line: &Line) -> Vec<String> {
    let mut names = Vec::new();
    for reply in replies {
        reply.visit(&mut |v| {
            let text = match v {
                Resp::Error(t) => t.clone(),
                Resp::BulkError(b) => String::from_utf8_lossy(b).into_owned(),
                _ => return,
            };
            if text.contains(NOT_AVAILABLE) {
                // The error names the command: `ERR 'NAME' is not available ...`.
                let named = text.split('\'').nth(1).map(str::to_owned);
                names.push(named.unwrap_or_else(|| line.name()));
            }
        });
    }
    names
}

// === Running cases ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Resp2,
    Resp3,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Resp2 => "RESP2",
            Proto::Resp3 => "RESP3",
        })
    }
}

/// Both pkv processes, and the issuer whose tokens they trust.
struct Backends {
    issuer: Issuer,
    _redis: Redis,
    upstream: Server,
    embedded: Server,
}

impl Backends {
    fn start() -> Backends {
        let issuer = Issuer::new();
        let redis = Redis::start();
        let upstream = PkvConfig::new(&redis, &issuer).start();
        let embedded = PkvConfig::embedded(&issuer).start();
        Backends {
            issuer,
            _redis: redis,
            upstream,
            embedded,
        }
    }
}

/// A connection for one group: authenticated with a fresh token (a fresh account), in
/// `proto`.
fn open(pkv: &Server, token: &str, proto: Proto) -> Result<RespConn, String> {
    let mut conn = pkv.resp();
    conn.send(&encode(&[b"AUTH", token.as_bytes()]));
    match conn.try_value(REPLY_TIMEOUT)? {
        Resp::Simple(ok) if ok == "OK" => {}
        other => return Err(format!("AUTH answered {other}")),
    }
    if proto == Proto::Resp3 {
        conn.send(&encode(&[b"HELLO", b"3"]));
        match conn.try_value(REPLY_TIMEOUT)? {
            Resp::Map(_) => {}
            other => return Err(format!("HELLO 3 answered {other}")),
        }
    }
    Ok(conn)
}

/// A group's connection to one backend, and what it is subscribed to (for knowing how
/// many replies an UNSUBSCRIBE without arguments sends).
struct Conn {
    resp: RespConn,
    /// Channels, patterns and shard channels.
    subscribed: [BTreeSet<Vec<u8>>; 3],
}

/// Which of [`Conn::subscribed`] a (un)subscription command or reply kind is about, and
/// whether it subscribes.
fn subscription_kind(name: &str) -> Option<(usize, bool)> {
    Some(match name {
        "SUBSCRIBE" => (0, true),
        "UNSUBSCRIBE" => (0, false),
        "PSUBSCRIBE" => (1, true),
        "PUNSUBSCRIBE" => (1, false),
        "SSUBSCRIBE" => (2, true),
        "SUNSUBSCRIBE" => (2, false),
        _ => return None,
    })
}

impl Conn {
    /// Reads a line's replies, all due by `deadline`: one, or for (un)subscriptions one
    /// per channel named (without names, one per channel subscribed, at least one).
    fn replies(&mut self, line: &Line, deadline: Instant) -> Result<Vec<Resp>, String> {
        // What is already in the socket is read even once the deadline has passed.
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100))
        };
        let first = self.resp.try_value(left())?;
        let Some((set, _)) = subscription_kind(&line.name()) else {
            return Ok(vec![first]);
        };
        let expected = if line.args.len() > 1 {
            line.args.len() - 1
        } else {
            self.subscribed[set].len().max(1)
        };
        let mut replies = vec![first];
        loop {
            let last = replies.last().unwrap();
            // `[kind, name, count]`, or something else (queued, refused): nothing follows.
            let (Resp::Array(items) | Resp::Push(items)) = last else {
                return Ok(replies);
            };
            let [Resp::Bulk(kind), name, Resp::Int(_)] = items.as_slice() else {
                return Ok(replies);
            };
            let kind = String::from_utf8_lossy(kind).to_ascii_uppercase();
            if let (Some((set, subscribing)), Resp::Bulk(name)) = (subscription_kind(&kind), name) {
                if subscribing {
                    self.subscribed[set].insert(name.clone());
                } else {
                    self.subscribed[set].remove(name);
                }
            }
            if replies.len() >= expected {
                return Ok(replies);
            }
            replies.push(self.resp.try_value(left())?);
        }
    }
}

/// What one run found.
#[derive(Default)]
struct Findings {
    mismatches: Vec<String>,
    /// The command the store does not run, where (`file:line [group]: command`), and in
    /// which protocol.
    unavailable: Vec<(String, String, Proto)>,
    impossible: Vec<String>,
    lines: usize,
    /// Print every line's replies (`CASES_SHOW=1`).
    show: bool,
}

/// Runs one group in `proto` on both backends, line by line.
fn run_group(backends: &Backends, group: &Group, proto: Proto, found: &mut Findings) {
    let token_upstream = backends.issuer.token(GROUP_QUANTITY);
    let token_embedded = backends.issuer.token(GROUP_QUANTITY);
    let here = format!("[{}] {proto}", group.name);
    let mut conns = match (
        open(&backends.upstream, &token_upstream, proto),
        open(&backends.embedded, &token_embedded, proto),
    ) {
        (Ok(r), Ok(e)) => [r, e].map(|resp| Conn {
            resp,
            subscribed: Default::default(),
        }),
        (r, e) => {
            found.mismatches.push(format!(
                "{} {here}: could not open the group's connections: redis {:?}, embedded {:?}",
                group.at,
                r.err(),
                e.err()
            ));
            return;
        }
    };
    for line in &group.lines {
        found.lines += 1;
        let request = {
            let args: Vec<&[u8]> = line.args.iter().map(Vec::as_slice).collect();
            encode(&args)
        };
        for conn in &mut conns {
            conn.resp.send(&request);
        }
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let [r, e] = &mut conns;
        let (redis, embedded) = (r.replies(line, deadline), e.replies(line, deadline));
        let (redis, embedded) = match (redis, embedded) {
            (Ok(r), Ok(e)) => (r, e),
            (r, e) => {
                let show = |x: &Result<Vec<Resp>, String>| match x {
                    Ok(v) => shown(v),
                    Err(e) => format!("(no reply: {e})"),
                };
                found.mismatches.push(format!(
                    "{} {here}: {}\n    redis:    {}\n    embedded: {}\n    (rest of the group skipped)",
                    line.at,
                    line.shown(),
                    show(&r),
                    show(&e)
                ));
                return;
            }
        };
        if found.show {
            println!(
                "{} {here}: {}\n    redis:    {}\n    embedded: {}",
                line.at,
                line.shown(),
                shown(&redis),
                shown(&embedded)
            );
        }
        if !unavailable_in(&redis, line).is_empty() {
            found.impossible.push(format!(
                "{} {here}: {}: the redis side answered {}",
                line.at,
                line.shown(),
                shown(&redis)
            ));
        }
        let missing = unavailable_in(&embedded, line);
        if !missing.is_empty() {
            for name in missing {
                let place = format!("{} [{}]: {}", line.at, group.name, line.shown());
                found.unavailable.push((name, place, proto));
            }
            continue;
        }
        if !all_agree(line.mode, &redis, &embedded) {
            found.mismatches.push(format!(
                "{} {here}: {}\n    redis:    {}\n    embedded: {}",
                line.at,
                line.shown(),
                shown(&redis),
                shown(&embedded)
            ));
        }
    }
}

#[test]
fn every_case_answers_the_same_on_both_backends() {
    let (groups, parse_errors) = load_cases();
    assert!(
        parse_errors.is_empty(),
        "case files do not parse:\n  {}",
        parse_errors.join("\n  ")
    );
    assert!(!groups.is_empty(), "no case files in {:?}", cases_dir());
    let filter = std::env::var("CASES").unwrap_or_default();
    let groups: Vec<&Group> = groups.iter().filter(|g| selected(g, &filter)).collect();
    assert!(!groups.is_empty(), "CASES={filter:?} selects no group");

    let backends = Backends::start();
    // The two protocols run side by side; each runs its groups in order.
    let results: Vec<Findings> = std::thread::scope(|scope| {
        let runs: Vec<_> = [Proto::Resp2, Proto::Resp3]
            .into_iter()
            .map(|proto| {
                let backends = &backends;
                let groups = &groups;
                scope.spawn(move || {
                    let mut found = Findings {
                        show: std::env::var_os("CASES_SHOW").is_some(),
                        ..Findings::default()
                    };
                    for group in groups {
                        run_group(backends, group, proto, &mut found);
                    }
                    found
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });

    let mut mismatches = Vec::new();
    let mut unavailable = Vec::new();
    let mut impossible = Vec::new();
    let mut lines = 0;
    for found in results {
        mismatches.extend(found.mismatches);
        unavailable.extend(found.unavailable);
        impossible.extend(found.impossible);
        lines += found.lines;
    }
    let files: std::collections::BTreeSet<&str> = groups.iter().map(|g| g.file.as_str()).collect();
    println!(
        "{} case files, {} groups, {lines} lines run in RESP2 and RESP3 on both backends",
        files.len(),
        groups.len()
    );

    let mut report = Vec::new();
    if !mismatches.is_empty() {
        mismatches.sort_by_key(|m| by_place(m));
        report.push(format!(
            "{} replies differ between redis and the embedded store:\n  {}",
            mismatches.len(),
            mismatches.join("\n  ")
        ));
    }
    if !unavailable.is_empty() {
        // One entry per line, with the protocols it was seen in.
        let mut lines: BTreeMap<(String, Place), Vec<String>> = BTreeMap::new();
        for (name, place, proto) in unavailable {
            let protos = lines.entry((name, by_place(&place))).or_default();
            if !protos.contains(&proto.to_string()) {
                protos.push(proto.to_string());
            }
        }
        let mut names: Vec<&str> = lines.keys().map(|(n, _)| n.as_str()).collect();
        names.dedup();
        let wheres: Vec<String> = lines
            .iter()
            .map(|((name, (file, line, rest)), protos)| {
                format!("{name}: {file}:{line} {rest} ({})", protos.join(", "))
            })
            .collect();
        report.push(format!(
            "case files use commands the embedded store does not run: {}\n  {}",
            names.join(", "),
            wheres.join("\n  ")
        ));
    }
    if !impossible.is_empty() {
        report.push(format!(
            "the redis side answered that a command is {NOT_AVAILABLE}:\n  {}",
            impossible.join("\n  ")
        ));
    }
    assert!(report.is_empty(), "{}", report.join("\n\n"));
}

/// Where a report is about: file, line number, the rest.
type Place = (String, usize, String);

/// Orders reports that start with `file:line` by file, then line number, then the rest.
fn by_place(report: &str) -> Place {
    let (place, rest) = report.split_once(' ').unwrap_or((report, ""));
    let (file, line) = place.rsplit_once(':').unwrap_or((place, ""));
    (file.to_owned(), line.parse().unwrap_or(0), rest.to_owned())
}

// === The runner's own pieces ===

#[test]
fn lines_split_like_redis_cli() {
    let split = |s: &str| split_args(s).unwrap();
    assert_eq!(
        split("SET k v"),
        vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]
    );
    assert_eq!(split("  GET   k  "), vec![b"GET".to_vec(), b"k".to_vec()]);
    assert_eq!(
        split(r#"SET "a b" "\x00\xff\n\r\t\"\\""#),
        vec![
            b"SET".to_vec(),
            b"a b".to_vec(),
            b"\x00\xff\n\r\t\"\\".to_vec()
        ]
    );
    assert_eq!(
        split(r#"SET k """#),
        vec![b"SET".to_vec(), b"k".to_vec(), b"".to_vec()]
    );
    assert_eq!(
        split(r"SET k 'it\'s \n'"),
        vec![b"SET".to_vec(), b"k".to_vec(), b"it's \\n".to_vec()]
    );
    assert_eq!(
        split("SET k #v"),
        vec![b"SET".to_vec(), b"k".to_vec(), b"#v".to_vec()]
    );
    assert!(split_args(r#"SET k "open"#).is_err());
    assert!(split_args(r#"SET k "a"b"#).is_err());
    assert!(split_args("SET k 'open").is_err());
}

#[test]
fn case_files_parse_into_groups_with_modes() {
    let text = "# comment\n\n## first\nSET k v\n~SMEMBERS s\n? SRANDMEMBER s 2\n## second\nPING\n";
    let groups = parse_cases("x.redis", text).unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].name, "first");
    assert_eq!(groups[0].at, "x.redis:3");
    let modes: Vec<Mode> = groups[0].lines.iter().map(|l| l.mode).collect();
    assert_eq!(modes, [Mode::Exact, Mode::Unordered, Mode::Random]);
    assert_eq!(groups[0].lines[2].args[0], b"SRANDMEMBER");
    assert_eq!(groups[1].lines[0].at, "x.redis:8");

    let err = parse_cases("x.redis", "SET k v\n").unwrap_err();
    assert!(err.starts_with("x.redis:1:"), "{err}");
    let err = parse_cases("x.redis", "## g\nSET k \"v\n").unwrap_err();
    assert!(err.starts_with("x.redis:2:"), "{err}");
    let err = parse_cases("x.redis", "## g\n~\n").unwrap_err();
    assert!(err.starts_with("x.redis:2:"), "{err}");
    let err = parse_cases("x.redis", "## g\nPING\n## empty\n").unwrap_err();
    assert!(err.starts_with("x.redis:3:"), "{err}");
}

#[test]
fn replies_are_compared_exactly_unless_the_line_says_otherwise() {
    let v = |raw: &str| Resp::parse(raw.as_bytes()).unwrap();
    // Types are kept apart.
    assert!(!agree(Mode::Exact, &v("$1\r\n1\r\n"), &v(":1\r\n")));
    assert!(!agree(Mode::Exact, &v("$-1\r\n"), &v("*-1\r\n")));
    assert!(!agree(Mode::Exact, &v("_\r\n"), &v("$-1\r\n")));
    assert!(!agree(Mode::Exact, &v("*1\r\n:1\r\n"), &v("~1\r\n:1\r\n")));
    assert!(!agree(
        Mode::Exact,
        &v("%1\r\n:1\r\n:2\r\n"),
        &v("*2\r\n:1\r\n:2\r\n")
    ));
    assert!(!agree(Mode::Exact, &v(",1\r\n"), &v("$1\r\n1\r\n")));
    assert!(!agree(Mode::Exact, &v(">1\r\n:1\r\n"), &v("*1\r\n:1\r\n")));
    assert!(!agree(Mode::Exact, &v("#t\r\n"), &v(":1\r\n")));
    assert!(!agree(Mode::Exact, &v("+OK\r\n"), &v("$2\r\nOK\r\n")));
    // Errors: the code only, at any depth.
    assert!(agree(Mode::Exact, &v("-ERR one\r\n"), &v("-ERR two\r\n")));
    assert!(!agree(
        Mode::Exact,
        &v("-ERR x\r\n"),
        &v("-WRONGTYPE x\r\n")
    ));
    assert!(agree(
        Mode::Exact,
        &v("*2\r\n+OK\r\n-ERR a\r\n"),
        &v("*2\r\n+OK\r\n-ERR b\r\n")
    ));
    // Order matters unless `~`.
    let ab = v("*2\r\n$1\r\na\r\n$1\r\nb\r\n");
    let ba = v("*2\r\n$1\r\nb\r\n$1\r\na\r\n");
    assert!(!agree(Mode::Exact, &ab, &ba));
    assert!(agree(Mode::Unordered, &ab, &ba));
    assert!(!agree(
        Mode::Unordered,
        &ab,
        &v("*2\r\n$1\r\na\r\n$1\r\na\r\n")
    ));
    let m1 = v("%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:2\r\n");
    let m2 = v("%2\r\n$1\r\nb\r\n:2\r\n$1\r\na\r\n:1\r\n");
    let m3 = v("%2\r\n$1\r\nb\r\n:1\r\n$1\r\na\r\n:2\r\n");
    assert!(agree(Mode::Unordered, &m1, &m2));
    assert!(!agree(Mode::Unordered, &m1, &m3));
    // Nested: sorted at every depth, but types still count.
    let n1 = v("*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n:3\r\n");
    let n2 = v("*2\r\n*1\r\n:3\r\n*2\r\n:2\r\n:1\r\n");
    assert!(agree(Mode::Unordered, &n1, &n2));
    assert!(!agree(
        Mode::Unordered,
        &v("~2\r\n:1\r\n:2\r\n"),
        &v("*2\r\n:2\r\n:1\r\n")
    ));
    // `?`: type and length.
    assert!(agree(
        Mode::Random,
        &ab,
        &v("*2\r\n$1\r\nc\r\n$3\r\nddd\r\n")
    ));
    assert!(!agree(Mode::Random, &ab, &v("*1\r\n$1\r\nc\r\n")));
    assert!(!agree(
        Mode::Random,
        &ab,
        &v("~2\r\n$1\r\nc\r\n$1\r\nd\r\n")
    ));
    assert!(agree(Mode::Random, &v("$1\r\na\r\n"), &v("$2\r\nbb\r\n")));
    assert!(!agree(Mode::Random, &v("$1\r\na\r\n"), &v("$-1\r\n")));
    // Several replies to one line (subscriptions): all, in order.
    assert!(!all_agree(
        Mode::Exact,
        &[v(":1\r\n")],
        &[v(":1\r\n"), v(":1\r\n")]
    ));
}

#[test]
fn every_resp3_type_parses_exactly() {
    let all = "*12\r\n+s\r\n-ERR e\r\n:-3\r\n$2\r\nb\x00\r\n_\r\n#f\r\n,3.5\r\n(123\r\n\
               !3\r\nERR\r\n=7\r\ntxt:abc\r\n~1\r\n$-1\r\n%1\r\n*-1\r\n>1\r\n:0\r\n";
    let parsed = Resp::parse(all.as_bytes()).unwrap();
    assert_eq!(
        parsed,
        Resp::Array(vec![
            Resp::Simple("s".into()),
            Resp::Error("ERR e".into()),
            Resp::Int(-3),
            Resp::Bulk(b"b\x00".to_vec()),
            Resp::Null,
            Resp::Bool(false),
            Resp::Double("3.5".into()),
            Resp::BigNumber("123".into()),
            Resp::BulkError(b"ERR".to_vec()),
            Resp::Verbatim("txt".into(), b"abc".to_vec()),
            Resp::Set(vec![Resp::NullBulk]),
            Resp::Map(vec![(Resp::NullArray, Resp::Push(vec![Resp::Int(0)]))]),
        ])
    );
    assert_eq!(
        parsed.to_string(),
        r#"*[+s, -ERR e, :-3, "b\x00", _, #f, ,3.5, (123, !"ERR", =txt:"abc", ~{$-1}, %{*-1 => >[:0]}]"#
    );
    assert!(Resp::parse(b"$3\r\nab\r\n").is_err());
    assert!(Resp::parse(b":1\r\n:2\r\n").is_err());
}
