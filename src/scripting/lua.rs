//! The interpreter: one fresh Lua 5.1 state per script run, with Redis's globals (`KEYS`,
//! `ARGV`, `redis`, `cjson`, `bit`, `cmsgpack`, `struct`), Redis's conversions between Lua values and replies,
//! and pkv's sandbox.
//!
//! The sandbox does not make the boundary between tenants: that is [`Host::call`], which is
//! Rust and runs every command through the request path's own key location and
//! namespacing, whatever the script did to its globals. The sandbox keeps a script from
//! the process (no `io`, `os`, `debug`, `package`, `require`, `loadfile`, `dofile`, no
//! binary chunks) and from running without bound: a memory limit on the state and an
//! instruction-count hook that stops it past its time limit. A fresh state per run means
//! nothing a script leaves in its globals reaches another run, of any tenant.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mlua::{
    chunk::ChunkMode, Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value,
    VmState,
};

use super::pattern::{Clock, STOPPED};
use super::{check_call, sha1hex, ScriptError};
use crate::commands::CommandSpec;
use crate::protocol::frame::Frame;

/// How many Lua instructions run between two looks at the clock.
const INSTRUCTIONS_PER_CHECK: u32 = 10_000;

/// How deep a reply or a table is converted; deeper is cut off (Redis has a like bound).
const MAX_DEPTH: usize = 200;

/// Where a script's `redis.call`s run.
pub trait Host {
    /// Runs a command a script called, checked by [`check_call`], with its arguments as
    /// the script gave them (key names as the script's client names them). The reply
    /// names keys as the client does; errors are [`Frame::Error`].
    fn call(&mut self, spec: &'static CommandSpec, args: Vec<Bytes>) -> Frame;

    /// Whether the calls that follow answer in RESP3 (`redis.setresp(3)`): maps, sets,
    /// doubles and booleans as such. A host that speaks only RESP2 ignores it (the
    /// conversions then see RESP2 replies, as before).
    fn resp3(&mut self, _on: bool) {}
}

/// A script run's bounds.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `PKV_SCRIPT_TIME_LIMIT`.
    pub time: Duration,
    /// Bytes the Lua state may allocate.
    pub memory: usize,
    /// What `SCRIPT KILL` sees of the run, and how it stops it.
    pub control: Arc<Running>,
}

/// A script while it runs: whether it has written, and whether `SCRIPT KILL` asked it to
/// stop (it stops at the next look at the clock).
#[derive(Debug, Default)]
pub struct Running {
    pub kill: AtomicBool,
    pub wrote: AtomicBool,
}

/// A script to run.
pub struct Script<'a> {
    pub body: &'a [u8],
    pub sha: &'a str,
    pub keys: &'a [Bytes],
    pub argv: &'a [Bytes],
    /// `EVAL_RO`/`EVALSHA_RO`: writes are refused.
    pub read_only: bool,
}

/// The Lua that builds the `redis` table and the protected globals around the Rust
/// functions it is given. It runs before the script, as pkv's own code: the functions it
/// keeps as locals (the original `pcall`, `error`) are out of the script's reach, since no
/// `debug` library can read upvalues.
const PRELUDE: &str = r#"
local call, pcall_redis, stopped, sha1hex, setresp, caught, find, match, gmatch, gsub = ...
local error_, pcall_, xpcall_, setmetatable_ = error, pcall, xpcall, setmetatable
local STOP = "script stopped"
local function finish(ok, ...)
  if stopped() then error_(STOP, 0) end
  if not ok then return false, caught((...)) end
  return ok, ...
end
-- A stopped script cannot catch its own stop; a failed redis.call is caught as its error
-- line, as Redis 7.0 gives it.
pcall = function(f, ...) return finish(pcall_(f, ...)) end
xpcall = function(f, h) return finish(xpcall_(f, h)) end
-- pkv's pattern matching (scripting/pattern.rs), which the time limit stops; its errors
-- are raised here so that scripts see Lua's messages, as strings. Each call of `raise` is
-- a tail call, so that level 3 is the line that called the string function.
local function raise(ok, ...)
  if ok then return ... end
  local message, level = ...
  error_(message, level)
end
string.find = function(...) return raise(find(...)) end
string.match = function(...) return raise(match(...)) end
string.gmatch = function(...)
  local next = raise(gmatch(...))
  return function() return raise(next()) end
end
string.gsub = function(...) return raise(gsub(...)) end
local redis = {}
redis.call = call
redis.pcall = pcall_redis
redis.error_reply = function(e) return {err = e} end
redis.status_reply = function(s) return {ok = s} end
redis.sha1hex = sha1hex
redis.setresp = setresp
redis.log = function() end
redis.debug = function() end
redis.breakpoint = function() return false end
redis.replicate_commands = function() return true end
redis.set_repl = function() end
redis.REDIS_VERSION = "7.0.15"
redis.REDIS_VERSION_NUM = 0x0007000f
redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING = 0, 1, 2, 3
redis.REPL_NONE, redis.REPL_AOF, redis.REPL_SLAVE, redis.REPL_REPLICA, redis.REPL_ALL = 0, 1, 2, 2, 3
_G.redis = redis
return function()
  setmetatable_(_G, {
    __index = function(_, name)
      error_("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
    end,
    __newindex = function() error_("Attempt to modify a readonly table", 2) end,
    __metatable = false,
  })
end, function(f) return pcall_(f) end
"#;

/// Runs `script` with `host` answering its `redis.call`s.
pub fn run(
    script: &Script<'_>,
    limits: &Limits,
    host: &mut dyn Host,
) -> Result<Frame, ScriptError> {
    let internal = |e: mlua::Error| ScriptError::Runtime {
        line: format!("ERR {e}"),
        sha: script.sha.to_owned(),
        at: None,
    };
    let lua = Lua::new_with(
        StdLib::STRING | StdLib::TABLE | StdLib::MATH,
        LuaOptions::default(),
    )
    .map_err(internal)?;
    lua.set_memory_limit(limits.memory).map_err(internal)?;
    let stopped = Arc::new(AtomicBool::new(false));
    sandbox(&lua).map_err(internal)?;
    // One clock for the instruction hook and the pattern matcher, whose C original the
    // hook cannot stop.
    let clock = Rc::new(Clock::new(
        limits.time,
        limits.memory,
        limits.control.clone(),
        stopped.clone(),
    ));
    let [find, matcher, gmatch, gsub] =
        super::pattern::functions(&lua, clock.clone()).map_err(internal)?;
    super::libs::install(&lua).map_err(internal)?;
    let globals = lua.globals();
    let keys = lua
        .create_sequence_from(
            script
                .keys
                .iter()
                .map(|k| lua.create_string(k))
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal)?,
        )
        .map_err(internal)?;
    let argv = lua
        .create_sequence_from(
            script
                .argv
                .iter()
                .map(|a| lua.create_string(a))
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal)?,
        )
        .map_err(internal)?;
    globals.raw_set("KEYS", keys).map_err(internal)?;
    globals.raw_set("ARGV", argv).map_err(internal)?;
    let compiled = lua
        .load(script.body)
        .set_name("@user_script")
        .set_mode(ChunkMode::Text)
        .into_function();
    let function = match compiled {
        Ok(f) => f,
        Err(mlua::Error::SyntaxError { message, .. }) => return Err(ScriptError::Compile(message)),
        Err(mlua::Error::MemoryError(_)) => {
            return Err(ScriptError::OutOfMemory {
                limit: limits.memory,
            })
        }
        Err(e) => return Err(internal(e)),
    };
    let is_stopped = {
        let stopped = stopped.clone();
        lua.create_function(move |_, ()| Ok(stopped.load(Ordering::Acquire)))
            .map_err(internal)?
    };
    let sha1 = lua
        .create_function(|lua, text: mlua::LuaString| lua.create_string(sha1hex(&text.as_bytes())))
        .map_err(internal)?;
    // `redis.setresp`: the protocol the script's calls answer in (RESP2 until it asks).
    let resp3 = Cell::new(false);
    let read_only = script.read_only;
    let error_at: Cell<Option<usize>> = Cell::new(None);
    let caught = lua
        .create_function(|lua, value: Value| {
            match call_failure(&value).or_else(|| raised(&value)) {
                Some(line) => Ok(Value::String(lua.create_string(line)?)),
                None => Ok(value),
            }
        })
        .map_err(internal)?;
    let host = std::cell::RefCell::new(host);
    // Runs one `redis.call`: the reply as the script sees it, or the error line.
    let run_call = |lua: &Lua, args: MultiValue| -> mlua::Result<Result<Value, String>> {
        let mut words = Vec::with_capacity(args.len());
        for arg in &args {
            match argument(arg) {
                Some(word) => words.push(word),
                None => return Ok(Err(ScriptError::BadArgument.line().into_owned())),
            }
        }
        let spec = match check_call(&words, read_only) {
            Ok(spec) => spec,
            Err(err) => return Ok(Err(err.line().into_owned())),
        };
        let reply = {
            let mut host = host.borrow_mut();
            host.resp3(resp3.get());
            host.call(spec, words)
        };
        if spec.has(crate::commands::flags::WRITE) && !reply.is_error() {
            limits.control.wrote.store(true, Ordering::Release);
        }
        match reply {
            Frame::Error(line) => Ok(Err(String::from_utf8_lossy(&line).into_owned())),
            reply => Ok(Ok(to_lua(lua, reply, 0, resp3.get())?)),
        }
    };
    let outcome = lua.scope(|scope| {
        let call = scope.create_function(|lua, args: MultiValue| match run_call(lua, args)? {
            Ok(value) => Ok(value),
            Err(line) => {
                error_at.set(script_line(lua));
                Err(mlua::Error::external(CallFailed(line)))
            }
        })?;
        let pcall_redis =
            scope.create_function(|lua, args: MultiValue| match run_call(lua, args)? {
                Ok(value) => Ok(value),
                Err(line) => {
                    let t = lua.create_table()?;
                    t.raw_set("err", line)?;
                    Ok(Value::Table(t))
                }
            })?;
        let setresp = scope.create_function(|lua, args: MultiValue| {
            let version = match args.len() {
                1 => args
                    .front()
                    .and_then(|v| lua.coerce_number(v.clone()).ok().flatten()),
                _ => None,
            };
            match version {
                Some(v) if v == 2.0 || v == 3.0 => {
                    resp3.set(v == 3.0);
                    Ok(())
                }
                _ => {
                    error_at.set(script_line(lua));
                    let line = ScriptError::Resp.line().into_owned();
                    Err(mlua::Error::external(CallFailed(line)))
                }
            }
        })?;
        let prelude: MultiValue = lua
            .load(PRELUDE)
            .set_name("=pkv")
            .set_mode(ChunkMode::Text)
            .call((
                call,
                pcall_redis,
                is_stopped.clone(),
                sha1.clone(),
                setresp,
                caught.clone(),
                find.clone(),
                matcher.clone(),
                gmatch.clone(),
                gsub.clone(),
            ))?;
        let mut prelude = prelude.into_iter();
        let (Some(Value::Function(protect)), Some(Value::Function(runner))) =
            (prelude.next(), prelude.next())
        else {
            return Err(mlua::Error::runtime("prelude"));
        };
        protect.call::<()>(())?;
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(INSTRUCTIONS_PER_CHECK),
            move |_, _| {
                if clock.due() {
                    return Err(mlua::Error::runtime(STOPPED));
                }
                Ok(VmState::Continue)
            },
        )?;
        let (ok, value): (bool, Value) = runner.call(function)?;
        lua.remove_hook();
        let frame = if ok {
            Ok(to_frame(&value, 0, resp3.get()))
        } else {
            Err(value)
        };
        Ok(frame.map_err(|value| error_value(&value, &error_at)))
    });
    if stopped.load(Ordering::Acquire) && limits.control.kill.load(Ordering::Acquire) {
        return Err(ScriptError::Killed);
    }
    if stopped.load(Ordering::Acquire) {
        return Err(ScriptError::TimedOut {
            limit_ms: limits.time.as_millis() as u64,
        });
    }
    match outcome {
        Ok(Ok(frame)) => Ok(frame),
        Ok(Err((line, _))) if line == "not enough memory" => Err(ScriptError::OutOfMemory {
            limit: limits.memory,
        }),
        Ok(Err((line, at))) => Err(ScriptError::Runtime {
            line,
            sha: script.sha.to_owned(),
            at,
        }),
        Err(mlua::Error::MemoryError(_)) => Err(ScriptError::OutOfMemory {
            limit: limits.memory,
        }),
        Err(e) => Err(internal(e)),
    }
}

/// Removes what Redis's scripts do not have, and what would reach the process.
fn sandbox(lua: &Lua) -> mlua::Result<()> {
    let g = lua.globals();
    for name in [
        "dofile",
        "loadfile",
        "load",
        "print",
        "setfenv",
        "getfenv",
        "newproxy",
        "module",
        "require",
        "package",
        "io",
        "os",
        "debug",
        "coroutine",
        "loadstring",
    ] {
        g.raw_set(name, Value::Nil)?;
    }
    // `string.dump` would hand a script bytecode, which Lua 5.1 loads without checks.
    let string: Table = g.raw_get("string")?;
    string.raw_set("dump", Value::Nil)?;
    // `loadstring` as Redis has it, for source text only (never a binary chunk).
    let loadstring =
        lua.create_function(|lua, (text, name): (mlua::LuaString, Option<String>)| {
            let chunk = lua
                .load(text.as_bytes().to_vec())
                .set_mode(ChunkMode::Text)
                .set_name(name.unwrap_or_else(|| "=(load)".to_owned()))
                .into_function();
            match chunk {
                Ok(f) => Ok((Value::Function(f), Value::Nil)),
                Err(mlua::Error::SyntaxError { message, .. }) => {
                    Ok((Value::Nil, Value::String(lua.create_string(message)?)))
                }
                Err(e) => Err(e),
            }
        })?;
    g.raw_set("loadstring", loadstring)?;
    Ok(())
}

/// A `redis.call` argument as Redis takes it: a string, or a number written in decimal.
fn argument(value: &Value) -> Option<Bytes> {
    match value {
        Value::String(s) => Some(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Integer(i) => Some(Bytes::from(i.to_string())),
        Value::Number(n) => Some(Bytes::from(number_text(*n))),
        _ => None,
    }
}

/// A Lua number as Redis writes it into a command (`%.17g`).
fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e17 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// A failed `redis.call`, raised as a Lua error: its error line.
#[derive(Debug)]
struct CallFailed(String);

impl std::fmt::Display for CallFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CallFailed {}

/// The line of a failed `redis.call`, when `value` is its error (however Lua wrapped it).
fn call_failure(value: &Value) -> Option<String> {
    fn find(e: &mlua::Error) -> Option<String> {
        match e {
            mlua::Error::CallbackError { cause, .. } => find(cause),
            mlua::Error::WithContext { cause, .. } => find(cause),
            mlua::Error::ExternalError(inner) => {
                inner.downcast_ref::<CallFailed>().map(|c| c.0.clone())
            }
            _ => None,
        }
    }
    match value {
        Value::Error(e) => find(e),
        _ => None,
    }
}

/// The line of the user script running now, from the innermost frame that is its own.
fn script_line(lua: &Lua) -> Option<usize> {
    (1..16).find_map(|level| {
        lua.inspect_stack(level, |d| {
            let src = d.source();
            (src.short_src.as_deref() == Some("user_script"))
                .then(|| d.current_line())
                .flatten()
        })
        .flatten()
    })
}

/// What an uncaught error says, and at which line of the script.
fn error_value(value: &Value, error_at: &Cell<Option<usize>>) -> (String, Option<usize>) {
    if let Some(line) = call_failure(value) {
        return (line, error_at.get());
    }
    if let Some(message) = raised(value) {
        return message_error(message);
    }
    match value {
        Value::Table(t) => match t.raw_get::<Value>("err") {
            Ok(Value::String(s)) => (s.to_string_lossy(), error_at.get()),
            _ => ("ERR unknown error".to_owned(), error_at.get()),
        },
        Value::String(s) => message_error(s.to_string_lossy()),
        Value::Error(e) => (format!("ERR {e}"), None),
        _ => ("ERR unknown error".to_owned(), None),
    }
}

/// An error message raised as a string: its line, and the script's line it names.
fn message_error(text: String) -> (String, Option<usize>) {
    if text == "not enough memory" {
        return (text, None);
    }
    // `user_script:7: message`
    let at = text
        .strip_prefix("user_script:")
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok());
    (format!("ERR {text}"), at)
}

/// A reply as a script sees it: Redis's RESP2 conversion, or with `redis.setresp(3)` its
/// RESP3 one (null is nil, booleans are booleans, and maps, sets, doubles, big numbers and
/// verbatim strings are tables with a `map`, `set`, `double`, `big_number` or
/// `verbatim_string` field).
fn to_lua(lua: &Lua, frame: Frame, depth: usize, resp3: bool) -> mlua::Result<Value> {
    if depth > MAX_DEPTH {
        return Ok(Value::Boolean(false));
    }
    let tagged = |name: &str, value: Value| -> mlua::Result<Value> {
        let t = lua.create_table()?;
        t.raw_set(name, value)?;
        Ok(Value::Table(t))
    };
    Ok(match frame {
        Frame::Null | Frame::NullArray if resp3 => Value::Nil,
        Frame::Boolean(b) if resp3 => Value::Boolean(b),
        Frame::Double(text) if resp3 => {
            let n = std::str::from_utf8(&text)
                .ok()
                .and_then(parse_double)
                .unwrap_or(0.0);
            tagged("double", Value::Number(n))?
        }
        Frame::BigNumber(digits) if resp3 => {
            tagged("big_number", Value::String(lua.create_string(&digits)?))?
        }
        Frame::Verbatim(body) if resp3 => {
            let (format, text) = match body.get(3) {
                Some(b':') => (&body[..3], &body[4..]),
                _ => (&b"txt"[..], &body[..]),
            };
            let t = lua.create_table()?;
            t.raw_set("format", lua.create_string(format)?)?;
            t.raw_set("string", lua.create_string(text)?)?;
            tagged("verbatim_string", Value::Table(t))?
        }
        Frame::Map(pairs) if resp3 => {
            let t = lua.create_table_with_capacity(0, pairs.len())?;
            for (k, v) in pairs {
                let key = to_lua(lua, k, depth + 1, resp3)?;
                if !key.is_nil() {
                    t.raw_set(key, to_lua(lua, v, depth + 1, resp3)?)?;
                }
            }
            tagged("map", Value::Table(t))?
        }
        Frame::Set(items) if resp3 => {
            let t = lua.create_table_with_capacity(0, items.len())?;
            for item in items {
                let key = to_lua(lua, item, depth + 1, resp3)?;
                if !key.is_nil() {
                    t.raw_set(key, true)?;
                }
            }
            tagged("set", Value::Table(t))?
        }
        Frame::Integer(i) => Value::Integer(i),
        Frame::Bulk(b) | Frame::Double(b) | Frame::BigNumber(b) | Frame::Verbatim(b) => {
            Value::String(lua.create_string(&b)?)
        }
        Frame::Simple(s) => tagged("ok", Value::String(lua.create_string(&s)?))?,
        Frame::Error(e) => tagged("err", Value::String(lua.create_string(&e)?))?,
        Frame::Null | Frame::NullArray => Value::Boolean(false),
        Frame::Boolean(b) => Value::Integer(i64::from(b)),
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, item, depth + 1, resp3)?)?;
            }
            Value::Table(t)
        }
        Frame::Map(pairs) => {
            let t = lua.create_table_with_capacity(pairs.len() * 2, 0)?;
            for (i, (k, v)) in pairs.into_iter().enumerate() {
                t.raw_set(2 * i + 1, to_lua(lua, k, depth + 1, resp3)?)?;
                t.raw_set(2 * i + 2, to_lua(lua, v, depth + 1, resp3)?)?;
            }
            Value::Table(t)
        }
    })
}

/// A RESP3 double's text as a number (`inf`, `-inf` and `nan` included).
fn parse_double(text: &str) -> Option<f64> {
    match text {
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// A double as Redis 7.0 replies with it: `%.17g`, and `inf`/`-inf`.
fn double_text(n: f64) -> String {
    if n.is_infinite() {
        return if n > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if n.is_nan() {
        return "nan".to_owned();
    }
    if n == 0.0 {
        return if n.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // 17 significant digits, correctly rounded, then laid out as C's `%g` lays them out.
    let sci = format!("{n:.16e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        match s.contains('.') {
            true => s.trim_end_matches('0').trim_end_matches('.').to_owned(),
            false => s.to_owned(),
        }
    };
    if (-4..17).contains(&exp) {
        let decimals = (16 - exp).max(0) as usize;
        trim(&format!("{n:.decimals$}"))
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    }
}

/// A script's return value as the reply (Redis's conversion: numbers truncated to
/// integers, `true` is 1, `false` and `nil` are nil, `{ok=}` a status, `{err=}` an error,
/// `{double=}`, `{big_number=}`, `{verbatim_string=}`, `{map=}` and `{set=}` those RESP3
/// types, a table its array part up to the first nil). After `redis.setresp(3)`
/// (`resp3`), booleans are booleans.
fn to_frame(value: &Value, depth: usize, resp3: bool) -> Frame {
    match value {
        Value::Boolean(b) if resp3 => Frame::Boolean(*b),
        Value::Boolean(true) => Frame::Integer(1),
        Value::Integer(i) => Frame::Integer(*i),
        Value::Number(n) => Frame::Integer(integer(*n)),
        Value::String(s) => Frame::Bulk(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Table(t) if depth <= MAX_DEPTH => {
            if let Ok(Value::String(e)) = t.raw_get::<Value>("err") {
                return Frame::error(e.to_string_lossy());
            }
            if let Ok(Value::String(s)) = t.raw_get::<Value>("ok") {
                let text = s.to_string_lossy().replace(['\r', '\n'], " ");
                return Frame::Simple(Bytes::from(text));
            }
            if let Some(frame) = resp3_frame(t, depth, resp3) {
                return frame;
            }
            let mut items = Vec::new();
            for i in 1.. {
                match t.raw_get::<Value>(i) {
                    Ok(Value::Nil) | Err(_) => break,
                    Ok(v) => items.push(to_frame(&v, depth + 1, resp3)),
                }
            }
            Frame::Array(items)
        }
        _ => Frame::Null,
    }
}

/// A table a script returns as a RESP3 type: `{double=n}`, `{big_number=s}`,
/// `{verbatim_string={format=, string=}}`, `{map={...}}` or `{set={...}}`, checked in
/// Redis's order.
fn resp3_frame(t: &Table, depth: usize, resp3: bool) -> Option<Frame> {
    let field = |name: &str| t.raw_get::<Value>(name).ok().filter(|v| !v.is_nil());
    match field("double") {
        Some(Value::Number(n)) => return Some(Frame::Double(Bytes::from(double_text(n)))),
        Some(Value::Integer(i)) => return Some(Frame::Double(Bytes::from(double_text(i as f64)))),
        _ => {}
    }
    if let Some(Value::String(s)) = field("big_number") {
        let digits = s.to_string_lossy().replace(['\r', '\n'], " ");
        return Some(Frame::BigNumber(Bytes::from(digits)));
    }
    if let Some(Value::Table(v)) = field("verbatim_string") {
        let format = v.raw_get::<mlua::LuaString>("format").ok();
        let text = v.raw_get::<mlua::LuaString>("string").ok();
        if let (Some(format), Some(text)) = (format, text) {
            let mut body = format.as_bytes().to_vec();
            body.push(b':');
            body.extend_from_slice(&text.as_bytes());
            return Some(Frame::Verbatim(Bytes::from(body)));
        }
    }
    if let Some(Value::Table(m)) = field("map") {
        let pairs = m
            .pairs::<Value, Value>()
            .filter_map(Result::ok)
            .map(|(k, v)| {
                (
                    to_frame(&k, depth + 1, resp3),
                    to_frame(&v, depth + 1, resp3),
                )
            })
            .collect();
        return Some(Frame::Map(pairs));
    }
    if let Some(Value::Table(m)) = field("set") {
        let items = m
            .pairs::<Value, Value>()
            .filter_map(Result::ok)
            .map(|(k, _)| to_frame(&k, depth + 1, resp3))
            .collect();
        return Some(Frame::Set(items));
    }
    None
}

/// A Lua number as Redis's reply gives it: truncated, as C converts a double to a 64-bit
/// integer on x86-64 (a number out of range, infinite or NaN is the smallest integer).
fn integer(n: f64) -> i64 {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    if (-LIMIT..LIMIT).contains(&n) {
        n as i64
    } else {
        i64::MIN
    }
}

/// An error a library function raises, as Lua's `luaL_error` words it: with the position
/// of the script's line that called it, unless it was called from a C function
/// (`pcall(struct.pack, ...)`), where Lua knows no line.
pub(super) fn raise(lua: &Lua, message: String) -> mlua::Error {
    let line = lua
        .inspect_stack(1, |d| {
            let src = d.source();
            (src.short_src.as_deref() == Some("user_script"))
                .then(|| d.current_line())
                .flatten()
        })
        .flatten();
    match line {
        Some(line) => mlua::Error::RuntimeError(format!("user_script:{line}: {message}")),
        None => mlua::Error::RuntimeError(message),
    }
}

/// True when the function running now was called from a C function (`pcall`), where
/// Lua names it `?` in its argument errors.
pub(super) fn called_from_c(lua: &Lua) -> bool {
    lua.inspect_stack(1, |d| d.source().what == "C")
        .unwrap_or(false)
}

/// The message of an error a library function raised ([`raise`]), however mlua wrapped
/// it.
fn raised(value: &Value) -> Option<String> {
    fn find(e: &mlua::Error) -> Option<String> {
        match e {
            mlua::Error::CallbackError { cause, .. } => find(cause),
            mlua::Error::RuntimeError(m) => Some(m.clone()),
            _ => None,
        }
    }
    match value {
        Value::Error(e) => find(e),
        _ => None,
    }
}

/// A function of the state, for the libraries.
pub(super) fn function<A, R>(
    lua: &Lua,
    f: impl Fn(&Lua, A) -> mlua::Result<R> + Send + 'static,
) -> mlua::Result<Function>
where
    A: mlua::FromLuaMulti,
    R: mlua::IntoLuaMulti,
{
    lua.create_function(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every call with an error.
    struct Refusing;

    impl Host for Refusing {
        fn call(&mut self, _: &'static CommandSpec, _: Vec<Bytes>) -> Frame {
            Frame::error("ERR no")
        }
    }

    fn run_text(body: &str) -> Result<Frame, ScriptError> {
        run_within(body, 200)
    }

    fn run_within(body: &str, ms: u64) -> Result<Frame, ScriptError> {
        let limits = Limits {
            time: Duration::from_millis(ms),
            memory: 1 << 24,
            control: Arc::default(),
        };
        let script = Script {
            body: body.as_bytes(),
            sha: "x",
            keys: &[],
            argv: &[],
            read_only: false,
        };
        run(&script, &limits, &mut Refusing)
    }

    /// A failed `redis.call` names the script's line, even when the script returns the
    /// call (a tail call).
    #[test]
    fn a_failed_call_names_its_line() {
        let err = run_text("\nreturn redis.call('get', 'k')").unwrap_err();
        assert_eq!(err.line(), "ERR no script: x, on @user_script:2.");
    }

    /// `pcall` catches a failed `redis.call` as its error line, and cannot catch the stop
    /// of a script past its time.
    #[test]
    fn pcall_sees_error_lines_and_not_the_stop() {
        let caught = run_text("local ok, e = pcall(redis.call, 'get', 'k') return e");
        assert_eq!(caught.unwrap(), Frame::bulk("ERR no"));
        let err = run_text("while true do pcall(function() while true do end end) end");
        assert_eq!(err.unwrap_err(), ScriptError::TimedOut { limit_ms: 200 });
    }

    /// The pattern functions' errors read as Lua's own: a malformed pattern names the
    /// script's line, a replacement function's error passes through `gsub` as it was,
    /// a failed `redis.call` inside one stays that call's error, and a matcher that
    /// backtracks past the time limit (even under `pcall`) is stopped.
    #[test]
    fn pattern_errors_read_as_lua_s_own() {
        let err = run_text("\nlocal at = string.find('a', '%')").unwrap_err();
        assert_eq!(
            err.line(),
            "ERR user_script:2: malformed pattern (ends with '%') script: x, on @user_script:2."
        );
        let err = run_text("return ('ab'):gsub('a', function() error('boom') end)").unwrap_err();
        assert_eq!(
            err.line(),
            "ERR user_script:1: boom script: x, on @user_script:1."
        );
        let err = run_text("return ('ab'):gsub('a', function() return redis.call('get', 'k') end)")
            .unwrap_err();
        assert_eq!(err.line(), "ERR no script: x, on @user_script:1.");
        let caught = run_text("local ok, e = pcall(string.gsub, 'a', '(', '%1') return e");
        assert_eq!(caught.unwrap(), Frame::bulk("unfinished capture"));
        let slow = "return pcall(string.match, ('x'):rep(5000), ('.-'):rep(150) .. 'y')";
        assert_eq!(
            run_text(slow).unwrap_err(),
            ScriptError::TimedOut { limit_ms: 200 }
        );
    }

    #[test]
    fn memory_is_bounded() {
        // A generous time limit: an unoptimised build allocates slowly.
        let bomb = "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 4096) .. i end";
        let err = run_within(bomb, 30_000);
        assert_eq!(
            err.unwrap_err(),
            ScriptError::OutOfMemory { limit: 1 << 24 }
        );
    }
}
