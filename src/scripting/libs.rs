//! The libraries Redis gives scripts beyond Lua's own, written over mlua: `cjson`
//! (encode/decode, with `cjson.null`) and `bit` (LuaBitOp's 32-bit operations).
//! `cmsgpack` and `struct` are not provided yet.

use mlua::{LightUserData, Lua, Table, Value};

/// How deep `cjson.encode` and `cjson.decode` go (cjson's own default is 1000).
const MAX_DEPTH: usize = 1000;

pub(super) fn install(lua: &Lua) -> mlua::Result<()> {
    let g = lua.globals();
    g.raw_set("cjson", cjson(lua)?)?;
    g.raw_set("bit", bit(lua)?)?;
    Ok(())
}

/// `cjson.null`: a light userdata holding NULL, as lua-cjson has it.
fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

fn cjson(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("null", null())?;
    t.raw_set(
        "encode",
        super::lua::function(lua, |_, value: Value| {
            let mut out = String::new();
            encode(&value, &mut out, 0)?;
            Ok(out)
        })?,
    )?;
    t.raw_set(
        "decode",
        super::lua::function(lua, |lua, text: mlua::LuaString| {
            let parsed: serde_json::Value =
                serde_json::from_slice(&text.as_bytes()).map_err(|e| {
                    mlua::Error::runtime(format!("Expected value but found invalid JSON: {e}"))
                })?;
            decode(lua, &parsed, 0)
        })?,
    )?;
    Ok(t)
}

fn encode(value: &Value, out: &mut String, depth: usize) -> mlua::Result<()> {
    if depth > MAX_DEPTH {
        return Err(mlua::Error::runtime(
            "Cannot serialise, excessive nesting (1001)",
        ));
    }
    match value {
        Value::Nil => out.push_str("null"),
        Value::LightUserData(p) if p.0.is_null() => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => out.push_str(&i.to_string()),
        Value::Number(n) => {
            if !n.is_finite() {
                return Err(mlua::Error::runtime(
                    "Cannot serialise number: must not be NaN or Inf",
                ));
            }
            if n.fract() == 0.0 && n.abs() < 1e15 {
                out.push_str(&(*n as i64).to_string());
            } else {
                out.push_str(&format!("{n}"));
            }
        }
        Value::String(s) => quote(&s.to_string_lossy(), out),
        Value::Table(t) => {
            // An array when its keys are exactly 1..n (an empty table is an object, as
            // lua-cjson encodes it).
            let mut max = 0usize;
            let mut count = 0usize;
            let mut array = true;
            for pair in t.pairs::<Value, Value>() {
                let (k, _) = pair?;
                count += 1;
                match k {
                    Value::Integer(i) if i >= 1 => max = max.max(i as usize),
                    Value::Number(n) if n >= 1.0 && n.fract() == 0.0 => max = max.max(n as usize),
                    _ => array = false,
                }
            }
            if array && count > 0 && max == count {
                out.push('[');
                for i in 1..=max {
                    if i > 1 {
                        out.push(',');
                    }
                    encode(&t.raw_get::<Value>(i)?, out, depth + 1)?;
                }
                out.push(']');
            } else {
                out.push('{');
                let mut first = true;
                for pair in t.pairs::<Value, Value>() {
                    let (k, v) = pair?;
                    let key = match &k {
                        Value::String(s) => s.to_string_lossy(),
                        Value::Integer(i) => i.to_string(),
                        Value::Number(n) => format!("{n}"),
                        _ => {
                            return Err(mlua::Error::runtime(
                                "Cannot serialise table: table key must be a number or string",
                            ))
                        }
                    };
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    quote(&key, out);
                    out.push(':');
                    encode(&v, out, depth + 1)?;
                }
                out.push('}');
            }
        }
        other => {
            return Err(mlua::Error::runtime(format!(
                "Cannot serialise {}: type not supported",
                other.type_name()
            )))
        }
    }
    Ok(())
}

fn quote(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn decode(lua: &Lua, value: &serde_json::Value, depth: usize) -> mlua::Result<Value> {
    if depth > MAX_DEPTH {
        return Err(mlua::Error::runtime(
            "Found too many nested data structures",
        ));
    }
    Ok(match value {
        serde_json::Value::Null => null(),
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Number(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::String(lua.create_string(s)?),
        serde_json::Value::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, decode(lua, item, depth + 1)?)?;
            }
            Value::Table(t)
        }
        serde_json::Value::Object(map) => {
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, v) in map {
                t.raw_set(lua.create_string(k)?, decode(lua, v, depth + 1)?)?;
            }
            Value::Table(t)
        }
    })
}

/// A number as LuaBitOp reads it: its value modulo 2^32, as a signed 32-bit integer.
fn tobit(v: f64) -> i32 {
    (v.trunc().rem_euclid(4_294_967_296.0) as u64 as u32) as i32
}

fn bit(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "tobit",
        super::lua::function(lua, |_, x: f64| Ok(tobit(x)))?,
    )?;
    t.raw_set(
        "bnot",
        super::lua::function(lua, |_, x: f64| Ok(!tobit(x)))?,
    )?;
    let fold = |op: fn(i32, i32) -> i32| {
        move |_: &Lua, args: mlua::Variadic<f64>| {
            Ok(args.iter().map(|x| tobit(*x)).reduce(op).unwrap_or(0))
        }
    };
    t.raw_set("band", super::lua::function(lua, fold(|a, b| a & b))?)?;
    t.raw_set("bor", super::lua::function(lua, fold(|a, b| a | b))?)?;
    t.raw_set("bxor", super::lua::function(lua, fold(|a, b| a ^ b))?)?;
    let shift = |op: fn(i32, u32) -> i32| {
        move |_: &Lua, (x, n): (f64, f64)| Ok(op(tobit(x), (tobit(n) & 31) as u32))
    };
    t.raw_set(
        "lshift",
        super::lua::function(lua, shift(|x, n| ((x as u32) << n) as i32))?,
    )?;
    t.raw_set(
        "rshift",
        super::lua::function(lua, shift(|x, n| ((x as u32) >> n) as i32))?,
    )?;
    t.raw_set("arshift", super::lua::function(lua, shift(|x, n| x >> n))?)?;
    t.raw_set(
        "rol",
        super::lua::function(lua, shift(|x, n| (x as u32).rotate_left(n) as i32))?,
    )?;
    t.raw_set(
        "ror",
        super::lua::function(lua, shift(|x, n| (x as u32).rotate_right(n) as i32))?,
    )?;
    t.raw_set(
        "bswap",
        super::lua::function(lua, |_, x: f64| Ok(tobit(x).swap_bytes()))?,
    )?;
    t.raw_set(
        "tohex",
        super::lua::function(lua, |_, (x, n): (f64, Option<f64>)| {
            let x = tobit(x) as u32;
            let n = n.map_or(8, tobit);
            let (upper, width) = (n < 0, n.unsigned_abs().min(8) as usize);
            let text = if upper {
                format!("{x:08X}")
            } else {
                format!("{x:08x}")
            };
            Ok(text[8 - width..].to_owned())
        })?,
    )?;
    Ok(t)
}
