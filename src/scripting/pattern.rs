//! Lua 5.1's pattern matching (reference manual 5.4.1), in Rust, behind `string.find`,
//! `string.match`, `string.gmatch` and `string.gsub`.
//!
//! Lua's own matcher is C that backtracks without bound, where the instruction hook that
//! stops a script past its time limit never runs: one `match` call with a pattern like
//! `('.-'):rep(100) .. 'y'` holds the embedded store's gate (so every tenant) for hours.
//! This one gives the same results and the same errors, and counts every step (each
//! character test and each backtrack) against the run's [`Clock`], which stops it as the
//! hook does. Its recursion is bounded as Lua 5.2 bounds it (`pattern too complex`), so
//! patterns need no length cap.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::{Function, Lua, LuaString, MultiValue, Value};

use super::lua::Running;

/// Lua's escape character in patterns.
const ESC: u8 = b'%';

/// The most captures in one pattern (`LUA_MAXCAPTURES`).
const MAX_CAPTURES: usize = 32;

/// How deep the matcher recurses (`MAXCCALLS` of Lua 5.2's matcher).
const MAX_DEPTH: usize = 200;

/// How many matcher steps run between two looks at the clock.
const STEPS_PER_CHECK: u32 = 16_384;

/// The error a stopped script raises (the instruction hook's).
pub const STOPPED: &str = "script stopped";

/// When a script run must stop: its time limit, `SCRIPT KILL`, or an earlier stop. Shared
/// by the instruction hook and the matcher.
pub struct Clock {
    pub started: Instant,
    pub time: Duration,
    pub control: Arc<Running>,
    /// Set once the run is stopped; the run's outcome reads it.
    pub stopped: Arc<AtomicBool>,
    /// The state's memory limit, which also bounds what `gsub` builds outside the state.
    pub memory: usize,
    steps: Cell<u32>,
}

impl Clock {
    pub fn new(
        time: Duration,
        memory: usize,
        control: Arc<Running>,
        stopped: Arc<AtomicBool>,
    ) -> Clock {
        Clock {
            started: Instant::now(),
            time,
            control,
            stopped,
            memory,
            steps: Cell::new(0),
        }
    }

    /// Whether the run must stop now; once it must, it stays stopped.
    pub fn due(&self) -> bool {
        let killed = self.control.kill.load(Ordering::Acquire);
        if killed || self.stopped.load(Ordering::Acquire) || self.started.elapsed() > self.time {
            self.stopped.store(true, Ordering::Release);
            return true;
        }
        false
    }

    /// Counts one matcher step; looks at the clock every [`STEPS_PER_CHECK`].
    fn step(&self) -> Result<(), Fail> {
        let n = self.steps.get().wrapping_add(1);
        self.steps.set(n);
        if n.is_multiple_of(STEPS_PER_CHECK) && self.due() {
            return Err(Fail::Stopped);
        }
        Ok(())
    }
}

/// Why a match did not finish.
#[derive(Debug, PartialEq)]
enum Fail {
    /// A malformed pattern or capture use: Lua's message.
    Error(&'static str),
    /// The run's time is up (or it was killed).
    Stopped,
}

impl From<Fail> for mlua::Error {
    fn from(f: Fail) -> mlua::Error {
        match f {
            Fail::Error(m) => mlua::Error::runtime(m),
            Fail::Stopped => mlua::Error::runtime(STOPPED),
        }
    }
}

/// A capture's length while open, or for a position capture `()`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Len {
    Unfinished,
    Position,
    Bytes(usize),
}

/// One match attempt's state (Lua's `MatchState`).
struct State<'a> {
    src: &'a [u8],
    /// The pattern up to its first NUL: Lua 5.1 reads patterns as C strings.
    pat: &'a [u8],
    level: usize,
    captures: [(usize, Len); MAX_CAPTURES],
    depth: usize,
    clock: &'a Clock,
}

/// What a capture holds when handed back to Lua.
enum Capture<'a> {
    Text(&'a [u8]),
    Position(usize),
}

/// A pattern as Lua 5.1 sees it: up to its first NUL.
fn c_str(p: &[u8]) -> &[u8] {
    match p.iter().position(|&b| b == 0) {
        Some(end) => &p[..end],
        None => p,
    }
}

fn class_matches(c: u8, class: u8) -> bool {
    let res = match class.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        b'z' => c == 0,
        _ => return class == c,
    };
    if class.is_ascii_uppercase() {
        !res
    } else {
        res
    }
}

impl<'a> State<'a> {
    fn new(src: &'a [u8], pat: &'a [u8], clock: &'a Clock) -> State<'a> {
        State {
            src,
            pat,
            level: 0,
            captures: [(0, Len::Unfinished); MAX_CAPTURES],
            depth: 0,
            clock,
        }
    }

    /// The pattern byte at `i`, NUL past its end (as the C string has).
    fn p(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    /// The subject byte at `i`, NUL at or past its end (Lua strings end in a NUL).
    fn s(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    /// Where the single-character class starting at `p` ends.
    fn class_end(&self, mut p: usize) -> Result<usize, Fail> {
        let c = self.p(p);
        p += 1;
        match c {
            ESC => {
                if self.p(p) == 0 {
                    return Err(Fail::Error("malformed pattern (ends with '%')"));
                }
                Ok(p + 1)
            }
            b'[' => {
                if self.p(p) == b'^' {
                    p += 1;
                }
                loop {
                    if self.p(p) == 0 {
                        return Err(Fail::Error("malformed pattern (missing ']')"));
                    }
                    let c = self.p(p);
                    p += 1;
                    if c == ESC && self.p(p) != 0 {
                        p += 1;
                    }
                    if self.p(p) == b']' {
                        break;
                    }
                }
                Ok(p + 1)
            }
            _ => Ok(p),
        }
    }

    /// Whether `c` is in the set from `p` (its `[`) to `ec` (its `]`).
    fn bracket(&self, c: u8, mut p: usize, ec: usize) -> bool {
        let mut sig = true;
        if self.p(p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                break;
            }
            if self.p(p) == ESC {
                p += 1;
                if class_matches(c, self.p(p)) {
                    return sig;
                }
            } else if self.p(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if self.p(p - 2) <= c && c <= self.p(p) {
                    return sig;
                }
            } else if self.p(p) == c {
                return sig;
            }
        }
        !sig
    }

    /// Whether the subject byte at `s` matches the class from `p` to `ep`.
    fn single(&self, s: usize, p: usize, ep: usize) -> Result<bool, Fail> {
        self.clock.step()?;
        if s >= self.src.len() {
            return Ok(false);
        }
        let c = self.src[s];
        Ok(match self.p(p) {
            b'.' => true,
            ESC => class_matches(c, self.p(p + 1)),
            b'[' => self.bracket(c, p, ep - 1),
            other => other == c,
        })
    }

    /// Where a match of the pattern from `p` at subject position `s` ends, if it does.
    fn do_match(&mut self, s: usize, p: usize) -> Result<Option<usize>, Fail> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Fail::Error("pattern too complex"));
        }
        let res = self.match_at(s, p);
        self.depth -= 1;
        res
    }

    fn match_at(&mut self, mut s: usize, mut p: usize) -> Result<Option<usize>, Fail> {
        loop {
            self.clock.step()?;
            match self.p(p) {
                b'(' => {
                    return if self.p(p + 1) == b')' {
                        self.start_capture(s, p + 2, Len::Position)
                    } else {
                        self.start_capture(s, p + 1, Len::Unfinished)
                    };
                }
                b')' => return self.end_capture(s, p + 1),
                0 => return Ok(Some(s)),
                b'$' if self.p(p + 1) == 0 => {
                    return Ok((s == self.src.len()).then_some(s));
                }
                ESC if self.p(p + 1) == b'b' => match self.balance(s, p + 2)? {
                    Some(end) => {
                        s = end;
                        p += 4;
                        continue;
                    }
                    None => return Ok(None),
                },
                ESC if self.p(p + 1) == b'f' => {
                    p += 2;
                    if self.p(p) != b'[' {
                        return Err(Fail::Error("missing '[' after '%f' in pattern"));
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.s(s - 1) };
                    if self.bracket(previous, p, ep - 1) || !self.bracket(self.s(s), p, ep - 1) {
                        return Ok(None);
                    }
                    p = ep;
                    continue;
                }
                ESC if self.p(p + 1).is_ascii_digit() => {
                    match self.match_capture(s, self.p(p + 1))? {
                        Some(end) => {
                            s = end;
                            p += 2;
                            continue;
                        }
                        None => return Ok(None),
                    }
                }
                _ => {
                    let ep = self.class_end(p)?;
                    let m = self.single(s, p, ep)?;
                    match self.p(ep) {
                        b'?' => {
                            if m {
                                if let Some(res) = self.do_match(s + 1, ep + 1)? {
                                    return Ok(Some(res));
                                }
                            }
                            p = ep + 1;
                        }
                        b'*' => return self.max_expand(s, p, ep),
                        b'+' => {
                            return if m {
                                self.max_expand(s + 1, p, ep)
                            } else {
                                Ok(None)
                            };
                        }
                        b'-' => return self.min_expand(s, p, ep),
                        _ => {
                            if !m {
                                return Ok(None);
                            }
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        }
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Result<Option<usize>, Fail> {
        let mut i = 0;
        while self.single(s + i, p, ep)? {
            i += 1;
        }
        loop {
            if let Some(res) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(res));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> Result<Option<usize>, Fail> {
        loop {
            if let Some(res) = self.do_match(s, ep + 1)? {
                return Ok(Some(res));
            }
            if self.single(s, p, ep)? {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: Len) -> Result<Option<usize>, Fail> {
        if self.level >= MAX_CAPTURES {
            return Err(Fail::Error("too many captures"));
        }
        self.captures[self.level] = (s, what);
        self.level += 1;
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.level -= 1;
        }
        Ok(res)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Result<Option<usize>, Fail> {
        let l = (0..self.level)
            .rev()
            .find(|&l| self.captures[l].1 == Len::Unfinished)
            .ok_or(Fail::Error("invalid pattern capture"))?;
        self.captures[l].1 = Len::Bytes(s - self.captures[l].0);
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.captures[l].1 = Len::Unfinished;
        }
        Ok(res)
    }

    fn balance(&self, s: usize, p: usize) -> Result<Option<usize>, Fail> {
        if self.p(p) == 0 || self.p(p + 1) == 0 {
            return Err(Fail::Error("unbalanced pattern"));
        }
        let (open, close) = (self.p(p), self.p(p + 1));
        if self.s(s) != open {
            return Ok(None);
        }
        let mut depth = 1;
        let mut i = s + 1;
        while i < self.src.len() {
            self.clock.step()?;
            let c = self.src[i];
            if c == close {
                depth -= 1;
                if depth == 0 {
                    return Ok(Some(i + 1));
                }
            } else if c == open {
                depth += 1;
            }
            i += 1;
        }
        Ok(None)
    }

    fn match_capture(&self, s: usize, l: u8) -> Result<Option<usize>, Fail> {
        let l = self.check_capture(l)?;
        let (init, len) = self.captures[l];
        let Len::Bytes(len) = len else {
            return Ok(None);
        };
        let rest = &self.src[s.min(self.src.len())..];
        Ok((rest.len() >= len && rest[..len] == self.src[init..init + len]).then_some(s + len))
    }

    fn check_capture(&self, l: u8) -> Result<usize, Fail> {
        let l = usize::from(l).wrapping_sub(usize::from(b'1'));
        if l >= self.level || self.captures[l].1 == Len::Unfinished {
            return Err(Fail::Error("invalid capture index"));
        }
        Ok(l)
    }

    /// Capture `i` of a match from `s` to `e` (the whole match when there are none).
    fn capture(&self, i: usize, s: usize, e: usize) -> Result<Capture<'a>, Fail> {
        if i >= self.level {
            if i == 0 {
                return Ok(Capture::Text(&self.src[s..e]));
            }
            return Err(Fail::Error("invalid capture index"));
        }
        let (init, len) = self.captures[i];
        match len {
            Len::Unfinished => Err(Fail::Error("unfinished capture")),
            Len::Position => Ok(Capture::Position(init + 1)),
            Len::Bytes(n) => Ok(Capture::Text(&self.src[init..init + n])),
        }
    }

    /// How many values a match hands back: its captures, or the whole match if it has
    /// none (none at all for `find`, which gives no `whole`).
    fn count(&self, whole: bool) -> usize {
        if self.level == 0 && whole {
            1
        } else {
            self.level
        }
    }
}

fn to_value(lua: &Lua, c: Capture<'_>) -> mlua::Result<Value> {
    Ok(match c {
        Capture::Text(t) => Value::String(lua.create_string(t)?),
        Capture::Position(n) => Value::Integer(n as i64),
    })
}

fn captures(
    lua: &Lua,
    st: &State<'_>,
    s: usize,
    e: usize,
    whole: bool,
) -> mlua::Result<MultiValue> {
    let mut out = MultiValue::new();
    for i in 0..st.count(whole) {
        out.push_back(to_value(lua, st.capture(i, s, e)?)?);
    }
    Ok(out)
}

/// Lua's type name of a value, as `luaL_typename` gives it.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::Integer(_) | Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::Thread(_) => "thread",
        Value::LightUserData(_) | Value::UserData(_) => "userdata",
        _ => "userdata",
    }
}

fn bad_argument(n: usize, name: &str, what: &str, got: Option<&Value>) -> mlua::Error {
    let got = got.map_or("no value", type_name);
    mlua::Error::runtime(format!(
        "bad argument #{n} to '{name}' ({what} expected, got {got})"
    ))
}

/// Argument `n` as a string, numbers converted (`luaL_checklstring`).
/// The string itself, not a copy: `find` in a loop over a long subject would otherwise copy
/// it on every call.
fn check_string(lua: &Lua, args: &MultiValue, n: usize, name: &str) -> mlua::Result<LuaString> {
    let v = args.get(n - 1);
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v @ (Value::Integer(_) | Value::Number(_))) => match lua.coerce_string(v.clone())? {
            Some(s) => Ok(s),
            None => Err(bad_argument(n, name, "string", Some(v))),
        },
        _ => Err(bad_argument(n, name, "string", v)),
    }
}

/// Argument `n` as an integer, or `default` when absent or nil (`luaL_optinteger`).
fn opt_integer(
    lua: &Lua,
    args: &MultiValue,
    n: usize,
    name: &str,
    default: i64,
) -> mlua::Result<i64> {
    let v = args.get(n - 1);
    match v {
        None | Some(Value::Nil) => Ok(default),
        Some(Value::Integer(i)) => Ok(*i),
        Some(Value::Number(x)) => Ok(*x as i64),
        Some(s @ Value::String(_)) => match lua.coerce_number(s.clone())? {
            Some(x) => Ok(x as i64),
            None => Err(bad_argument(n, name, "number", v)),
        },
        _ => Err(bad_argument(n, name, "number", v)),
    }
}

/// A relative string position made absolute (Lua's `posrelat`).
fn relative(pos: i64, len: usize) -> i64 {
    let pos = if pos < 0 { pos + len as i64 + 1 } else { pos };
    pos.max(0)
}

/// Characters that make `find` match a pattern rather than search for plain text.
const SPECIALS: &[u8] = b"^$*+?.([%-";

fn find_aux(lua: &Lua, args: MultiValue, clock: &Clock, find: bool) -> mlua::Result<MultiValue> {
    let name = if find { "find" } else { "match" };
    let (s, p) = (
        check_string(lua, &args, 1, name)?,
        check_string(lua, &args, 2, name)?,
    );
    let (s, p) = (s.as_bytes(), p.as_bytes());
    let (s, p): (&[u8], &[u8]) = (&s, &p);
    let init = relative(opt_integer(lua, &args, 3, name, 1)?, s.len()) - 1;
    let init = init.clamp(0, s.len() as i64) as usize;
    let plain = find
        && args
            .get(3)
            .is_some_and(|v| !matches!(v, Value::Nil | Value::Boolean(false)));
    let pat = c_str(p);
    if find && (plain || !pat.iter().any(|c| SPECIALS.contains(c))) {
        let at = if p.is_empty() {
            Some(init)
        } else {
            // Two-way search: linear, where Lua's compares at every candidate.
            memchr::memmem::find(&s[init..], p).map(|i| i + init)
        };
        if let Some(at) = at {
            return Ok(MultiValue::from_iter([
                Value::Integer(at as i64 + 1),
                Value::Integer((at + p.len()) as i64),
            ]));
        }
        return Ok(MultiValue::from_iter([Value::Nil]));
    }
    let (anchor, pat) = match pat.split_first() {
        Some((b'^', rest)) => (true, rest),
        _ => (false, pat),
    };
    let mut st = State::new(s, pat, clock);
    let mut s1 = init;
    loop {
        st.level = 0;
        if let Some(e) = st.do_match(s1, 0)? {
            if find {
                let mut out = captures(lua, &st, s1, e, false)?;
                out.push_front(Value::Integer(e as i64));
                out.push_front(Value::Integer(s1 as i64 + 1));
                return Ok(out);
            }
            return captures(lua, &st, s1, e, true);
        }
        s1 += 1;
        if s1 > s.len() || anchor {
            break;
        }
    }
    Ok(MultiValue::from_iter([Value::Nil]))
}

fn gmatch(lua: &Lua, args: MultiValue, clock: Rc<Clock>) -> mlua::Result<Function> {
    let s = check_string(lua, &args, 1, "gmatch")?.as_bytes().to_vec();
    let p = check_string(lua, &args, 2, "gmatch")?.as_bytes().to_vec();
    let next = RefCell::new(0usize);
    lua.create_function(move |lua, ()| outcome(lua, next_match(lua, &s, &p, &next, &clock)))
}

/// The next match of a `gmatch` iterator, from where the last one ended.
fn next_match(
    lua: &Lua,
    s: &[u8],
    p: &[u8],
    next: &RefCell<usize>,
    clock: &Clock,
) -> mlua::Result<MultiValue> {
    {
        let pat = c_str(p);
        let mut st = State::new(s, pat, clock);
        let mut src = *next.borrow();
        while src <= s.len() {
            st.level = 0;
            if let Some(e) = st.do_match(src, 0)? {
                *next.borrow_mut() = if e == src { e + 1 } else { e };
                return captures(lua, &st, src, e, true);
            }
            src += 1;
        }
        Ok(MultiValue::new())
    }
}

/// Marks an error from a replacement function or metamethod (see [`PASSED`]).
#[allow(clippy::arc_with_non_send_sync)] // mlua's error type holds its cause in an `Arc`
fn passed(e: mlua::Error) -> mlua::Error {
    mlua::Error::WithContext {
        context: PASSED.to_owned(),
        cause: Arc::new(e),
    }
}

/// Appends what replaces the match from `s` to `e` (Lua 5.1's `add_value`).
fn add_value(
    lua: &Lua,
    out: &mut Vec<u8>,
    st: &State<'_>,
    s: usize,
    e: usize,
    repl: &Value,
    text: Option<&[u8]>,
) -> mlua::Result<()> {
    let value = match (repl, text) {
        (_, Some(news)) => {
            let mut i = 0;
            while i < news.len() {
                // `%0` repeated would multiply the subject: bounded as the result is.
                if out.len() > st.clock.memory {
                    return Err(mlua::Error::MemoryError(OUT_OF_MEMORY.to_owned()));
                }
                let c = news[i];
                i += 1;
                if c != ESC {
                    out.push(c);
                    continue;
                }
                // A `%` at the end reads the string's terminating NUL, as in Lua 5.1.
                let d = news.get(i).copied().unwrap_or(0);
                i += 1;
                if !d.is_ascii_digit() {
                    out.push(d);
                } else if d == b'0' {
                    out.extend_from_slice(&st.src[s..e]);
                } else {
                    match st.capture(usize::from(d - b'1'), s, e)? {
                        Capture::Text(t) => out.extend_from_slice(t),
                        Capture::Position(n) => out.extend_from_slice(n.to_string().as_bytes()),
                    }
                }
            }
            return Ok(());
        }
        (Value::Function(f), None) => f
            .call::<Value>(captures(lua, st, s, e, true)?)
            .map_err(passed)?,
        (Value::Table(t), None) => {
            let key = to_value(lua, st.capture(0, s, e)?)?;
            t.get::<Value>(key).map_err(passed)?
        }
        _ => Value::Nil,
    };
    match &value {
        Value::Nil | Value::Boolean(false) => out.extend_from_slice(&st.src[s..e]),
        Value::String(v) => out.extend_from_slice(&v.as_bytes()),
        Value::Integer(_) | Value::Number(_) => match lua.coerce_string(value.clone())? {
            Some(v) => out.extend_from_slice(&v.as_bytes()),
            None => return Err(mlua::Error::runtime("invalid replacement value (a number)")),
        },
        other => {
            return Err(mlua::Error::runtime(format!(
                "invalid replacement value (a {})",
                type_name(other)
            )))
        }
    }
    Ok(())
}

fn gsub(lua: &Lua, args: MultiValue, clock: &Clock) -> mlua::Result<(LuaString, i64)> {
    let src = check_string(lua, &args, 1, "gsub")?.as_bytes().to_vec();
    let p = check_string(lua, &args, 2, "gsub")?.as_bytes().to_vec();
    let repl = args.get(2).cloned().unwrap_or(Value::Nil);
    let max = opt_integer(lua, &args, 4, "gsub", src.len() as i64 + 1)?;
    let text = match &repl {
        Value::String(_) | Value::Integer(_) | Value::Number(_) => {
            Some(check_string(lua, &args, 3, "gsub")?.as_bytes().to_vec())
        }
        Value::Function(_) | Value::Table(_) => None,
        _ => {
            return Err(mlua::Error::runtime(
                "bad argument #3 to 'gsub' (string/function/table expected)",
            ))
        }
    };
    let pat = c_str(&p);
    let (anchor, pat) = match pat.split_first() {
        Some((b'^', rest)) => (true, rest),
        _ => (false, pat),
    };
    let mut st = State::new(&src, pat, clock);
    let mut out = Vec::with_capacity(src.len());
    let mut at = 0;
    let mut n = 0i64;
    while n < max {
        st.level = 0;
        let e = st.do_match(at, 0)?;
        if let Some(e) = e {
            n += 1;
            add_value(lua, &mut out, &st, at, e, &repl, text.as_deref())?;
            // Lua builds the result in the state, under its memory limit; this buffer is
            // outside it, so it is held to the same bound.
            if out.len() > clock.memory {
                return Err(mlua::Error::MemoryError(OUT_OF_MEMORY.to_owned()));
            }
        }
        match e {
            Some(e) if e > at => at = e,
            _ if at < src.len() => {
                out.push(src[at]);
                at += 1;
            }
            _ => break,
        }
        if anchor {
            break;
        }
    }
    out.extend_from_slice(&src[at..]);
    Ok((lua.create_string(&out)?, n))
}

/// What marks an error raised by a replacement function or table's metamethods, which
/// `gsub` passes on as it came (Lua's own does not add to it).
const PASSED: &str = "raised by a gsub replacement";

/// Lua's message when its allocator fails.
const OUT_OF_MEMORY: &str = "not enough memory";

/// A call's results behind `true`, or `false`, an error message and the level the prelude
/// raises it at, as a Lua string (a Rust error would reach the script as userdata, and
/// `pcall` would not see the message Lua gives). Level 3 names the line that called the
/// string function, as Lua's `luaL_error` does; 0 passes a replacement function's error
/// on as it is. Running out of memory, and errors that are not messages (a failed
/// `redis.call` in a replacement function), stay errors.
fn outcome(lua: &Lua, result: mlua::Result<MultiValue>) -> mlua::Result<MultiValue> {
    fn message(e: &mlua::Error, level: i64) -> Option<(String, i64)> {
        match e {
            mlua::Error::RuntimeError(m) => Some((m.clone(), level)),
            // As Lua raises it, so that the run ends as out of memory.
            mlua::Error::MemoryError(_) => Some((OUT_OF_MEMORY.to_owned(), 0)),
            mlua::Error::CallbackError { cause, .. } => message(cause, level),
            mlua::Error::WithContext { context, cause } if context == PASSED => {
                // mlua adds a traceback to an error from a Lua function it calls; Lua's
                // own gsub passes the error on without one.
                let (m, _) = message(cause, 0)?;
                let cut = m.rfind("\nstack traceback:").unwrap_or(m.len());
                Some((m[..cut].to_owned(), 0))
            }
            _ => None,
        }
    }
    match result {
        Ok(mut values) => {
            values.push_front(Value::Boolean(true));
            Ok(values)
        }
        Err(e) => match message(&e, 3) {
            Some((m, level)) => Ok(MultiValue::from_iter([
                Value::Boolean(false),
                Value::String(lua.create_string(m)?),
                Value::Integer(level),
            ])),
            None => match e {
                mlua::Error::WithContext { context, cause } if context == PASSED => {
                    Err((*cause).clone())
                }
                e => Err(e),
            },
        },
    }
}

/// The Rust `find`, `match`, `gmatch` and `gsub`, each answering as [`outcome`] does;
/// the prelude puts them in the `string` table.
pub fn functions(lua: &Lua, clock: Rc<Clock>) -> mlua::Result<[Function; 4]> {
    let c = clock.clone();
    let find = lua.create_function(move |lua, args: MultiValue| {
        outcome(lua, find_aux(lua, args, &c, true))
    })?;
    let c = clock.clone();
    let matcher = lua.create_function(move |lua, args: MultiValue| {
        outcome(lua, find_aux(lua, args, &c, false))
    })?;
    let c = clock.clone();
    let gmatch = lua.create_function(move |lua, args: MultiValue| {
        let iterator =
            gmatch(lua, args, c.clone()).map(|f| MultiValue::from_iter([Value::Function(f)]));
        outcome(lua, iterator)
    })?;
    let c = clock;
    let gsub = lua.create_function(move |lua, args: MultiValue| {
        let replaced = gsub(lua, args, &c)
            .map(|(s, n)| MultiValue::from_iter([Value::String(s), Value::Integer(n)]));
        outcome(lua, replaced)
    })?;
    Ok([find, matcher, gmatch, gsub])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Wraps the Rust functions as the prelude does, in `mine`, beside the C originals in
    /// `string`, and gives a function that runs one case through both.
    const HARNESS: &str = r#"
local find, match, gmatch, gsub = ...
local function raise(ok, ...)
  if ok then return ... end
  local message, level = ...
  error(message, level)
end
mine = {
  find = function(...) return raise(find(...)) end,
  match = function(...) return raise(match(...)) end,
  gmatch = function(...)
    local next = raise(gmatch(...))
    return function() return raise(next()) end
  end,
  gsub = function(...) return raise(gsub(...)) end,
}
local function ser(ok, ...)
  local out = {tostring(ok), tostring(select('#', ...))}
  for i = 1, select('#', ...) do
    local v = select(i, ...)
    out[#out + 1] = type(v) .. ':' .. tostring(v)
  end
  return table.concat(out, '|')
end
local repls = {
  function(...) return table.concat({...}, '<>') end,
  function() return false end,
  function() return {} end,
  function() return 42 end,
  {a = 'T', b = false, ['('] = 7, [1] = 'one', x = {}},
}
return function(F, s, p, init, repl, n)
  if type(repl) == 'number' and repls[repl] then repl = repls[repl] end
  local r = {}
  r[1] = ser(pcall(F.find, s, p))
  r[2] = ser(pcall(F.find, s, p, init))
  r[3] = ser(pcall(F.find, s, p, init, true))
  r[4] = ser(pcall(F.match, s, p, init))
  r[5] = ser(pcall(function()
    local out = {}
    local it = F.gmatch(s, p)
    for _ = 1, 20 do
      local line = ser(true, it())
      out[#out + 1] = line
      if line == 'true|0' then break end
    end
    return table.concat(out, ';')
  end))
  r[6] = ser(pcall(F.gsub, s, p, repl, n))
  return table.concat(r, '\n')
end
"#;

    fn harness() -> (Lua, Function) {
        let lua = Lua::new();
        let clock = Rc::new(Clock::new(
            Duration::from_secs(3600),
            1 << 30,
            Arc::new(Running::default()),
            Arc::new(AtomicBool::new(false)),
        ));
        let [f, m, g, s] = functions(&lua, clock).unwrap();
        let check: Function = lua.load(HARNESS).call((f, m, g, s)).unwrap();
        (lua, check)
    }

    /// A small seeded generator (xorshift), so a failure can be replayed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn text(&mut self, alphabet: &[&[u8]], max: u64) -> Vec<u8> {
            let len = self.below(max + 1);
            (0..len)
                .flat_map(|_| alphabet[self.below(alphabet.len() as u64) as usize].to_vec())
                .collect()
        }
    }

    const PATTERN: &[&[u8]] = &[
        b"a", b"b", b"(", b")", b"%", b".", b"[", b"]", b"^", b"$", b"*", b"+", b"-", b"?", b"1",
        b"2", b"d", b"s", b"f", b"z", b"A", b"%a", b"%b()", b"%f[%w]", b"[^a]", b"%1", b"()", b"x",
        b"\0",
    ];
    const SUBJECT: &[&[u8]] = &[b"a", b"b", b"(", b")", b".", b"x", b"1", b" ", b"A", b"\0"];
    const REPLACEMENT: &[&[u8]] = &[b"a", b"%0", b"%1", b"%2", b"%%", b"%x", b"-", b"%"];

    /// Thousands of random patterns, subjects and replacements give the same values and
    /// the same errors from the C originals and from the Rust matcher.
    #[test]
    fn the_same_as_lua_5_1() {
        let (lua, check) = harness();
        let string: Value = lua.globals().get("string").unwrap();
        let mine: Value = lua.globals().get("mine").unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut matched = 0;
        for case in 0..CASES {
            let s = lua.create_string(rng.text(SUBJECT, 12)).unwrap();
            let p = lua.create_string(rng.text(PATTERN, 8)).unwrap();
            let init = rng.below(17) as i64 - 8;
            let repl = match rng.below(3) {
                0 => Value::Integer(rng.below(5) as i64 + 1),
                1 => Value::String(lua.create_string(rng.text(REPLACEMENT, 3)).unwrap()),
                _ => Value::Integer(rng.below(3) as i64 + 1),
            };
            let n = match rng.below(3) {
                0 => Value::Nil,
                _ => Value::Integer(rng.below(6) as i64 - 1),
            };
            let args = (s.clone(), p.clone(), init, repl.clone(), n.clone());
            let theirs: String = check.call((string.clone(), args.clone())).unwrap();
            let ours: String = check.call((mine.clone(), args)).unwrap();
            assert_eq!(
                ours,
                theirs,
                "case {case}: s={:?} p={:?} init={init} repl={repl:?} n={n:?}",
                s.to_string_lossy(),
                p.to_string_lossy()
            );
            if theirs.starts_with("true|2|number") {
                matched += 1;
            }
        }
        // The alphabets are small so that matches happen.
        assert!(matched > CASES / 20, "{matched}");
        // Numbers for the subject, the pattern and a replacement, a numeric string for
        // `init` and `n`, and a nil `n`, converted as Lua converts them.
        let fixed: [(Value, Value, Value, Value, Value); 4] = [
            (
                Value::Integer(12345),
                Value::Integer(3),
                Value::String(lua.create_string("2").unwrap()),
                Value::Number(7.5),
                Value::String(lua.create_string("1").unwrap()),
            ),
            (
                Value::Number(0.5),
                Value::String(lua.create_string("%d").unwrap()),
                Value::Integer(-100),
                Value::Integer(100),
                Value::Nil,
            ),
            (
                Value::String(lua.create_string("a.b.c").unwrap()),
                Value::String(lua.create_string("%.").unwrap()),
                Value::Integer(100),
                Value::String(lua.create_string("%0%0").unwrap()),
                Value::Number(1.9),
            ),
            (
                Value::String(lua.create_string("hello world from lua").unwrap()),
                Value::String(lua.create_string("(%w+) (%w+)").unwrap()),
                Value::Integer(1),
                Value::String(lua.create_string("%2 %1").unwrap()),
                Value::Nil,
            ),
        ];
        for args in fixed {
            let theirs: String = check.call((string.clone(), args.clone())).unwrap();
            let ours: String = check.call((mine.clone(), args.clone())).unwrap();
            assert_eq!(ours, theirs, "{args:?}");
        }
    }

    const CASES: usize = 10_000;

    /// What a call costs, the C original against the Rust one (through the prelude's
    /// wrapper), for a plain search and for a pattern with captures. A figure to read,
    /// not to assert: `cargo test --release --lib pattern::tests::cost -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore]
    fn cost() {
        let (lua, _) = harness();
        let time = |f: &str, p: &str| -> f64 {
            let body = format!(
                "local f, s = {f}, 'user:12345:profile' local t = os.clock() \
                 for _ = 1, 1000000 do f(s, '{p}') end return os.clock() - t"
            );
            let secs: f64 = lua.load(body).eval().unwrap();
            secs * 1e3 // ns per call, over 1,000,000 calls
        };
        for (what, p) in [
            ("find", ":"),
            ("find", "(%w+):(%d+)"),
            ("match", "(%w+):(%d+)"),
        ] {
            let c = time(&format!("string.{what}"), p);
            let rust = time(&format!("mine.{what}"), p);
            println!("string.{what}(s, '{p}'): C {c:.0} ns, Rust {rust:.0} ns per call");
        }
    }
}
