//! The libraries Redis gives scripts beyond Lua's own, written over mlua: `cjson`
//! (encode/decode, with `cjson.null`), `bit` (LuaBitOp's 32-bit operations) and
//! `cmsgpack` (pack/unpack, encoded as Redis's bundled lua-cmsgpack encodes).
//! `struct` is in `lstruct`.

use mlua::{LightUserData, Lua, Table, Value};

/// How deep `cjson.encode`, `cjson.decode` and `cmsgpack.unpack` go. lua-cjson allows
/// 1000; pkv's walks are recursive Rust on a thread of the blocking pool, whose stack this
/// keeps far from its end (`tests/hostile_scripting.rs` nests 100,000 deep).
const MAX_DEPTH: usize = 128;

pub(super) fn install(lua: &Lua) -> mlua::Result<()> {
    let g = lua.globals();
    g.raw_set("cjson", cjson(lua)?)?;
    g.raw_set("bit", bit(lua)?)?;
    g.raw_set("cmsgpack", cmsgpack(lua)?)?;
    g.raw_set("struct", super::lstruct::table(lua)?)?;
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
            "Cannot serialise, excessive nesting (129)",
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
            let (max, array) = table_shape(t)?;
            if array && max > 0 {
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

/// lua-cmsgpack's nesting bound: deeper tables are packed as nil.
const MSGPACK_MAX_NESTING: usize = 16;

fn cmsgpack(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "pack",
        super::lua::function(lua, |lua, values: mlua::Variadic<Value>| {
            if values.is_empty() {
                return Err(mlua::Error::runtime(
                    "MessagePack pack needs input. Expected at least one argument",
                ));
            }
            let mut out = Vec::new();
            for value in values.iter() {
                pack(value, &mut out, 0)?;
            }
            lua.create_string(out)
        })?,
    )?;
    t.raw_set(
        "unpack",
        super::lua::function(lua, |lua, bytes: mlua::LuaString| {
            let bytes = bytes.as_bytes();
            let mut at = 0;
            let mut values = Vec::new();
            while at < bytes.len() {
                values.push(unpack(lua, &bytes, &mut at, 0)?);
            }
            Ok(mlua::MultiValue::from_vec(values))
        })?,
    )?;
    Ok(t)
}

fn pack(value: &Value, out: &mut Vec<u8>, depth: usize) -> mlua::Result<()> {
    match value {
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(i) => pack_int(*i, out),
        Value::Number(n) => {
            if n.fract() == 0.0 && n.abs() < 9.2e18 {
                pack_int(*n as i64, out);
            } else if f64::from(*n as f32) == *n {
                out.push(0xca);
                out.extend_from_slice(&(*n as f32).to_be_bytes());
            } else {
                out.push(0xcb);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        Value::String(s) => {
            let b = s.as_bytes();
            let len = b.len();
            if len < 32 {
                out.push(0xa0 | len as u8);
            } else if len <= 0xff {
                out.extend_from_slice(&[0xd9, len as u8]);
            } else if len <= 0xffff {
                out.push(0xda);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                out.push(0xdb);
                out.extend_from_slice(&(len as u32).to_be_bytes());
            }
            out.extend_from_slice(&b);
        }
        Value::Table(t) if depth < MSGPACK_MAX_NESTING => {
            let (count, array) = table_shape(t)?;
            if array {
                header(out, count, 0x90, 0xdc, 0xdd);
                for i in 1..=count {
                    pack(&t.raw_get::<Value>(i)?, out, depth + 1)?;
                }
            } else {
                header(out, count, 0x80, 0xde, 0xdf);
                for pair in t.pairs::<Value, Value>() {
                    let (k, v) = pair?;
                    pack(&k, out, depth + 1)?;
                    pack(&v, out, depth + 1)?;
                }
            }
        }
        _ => out.push(0xc0),
    }
    Ok(())
}

/// An array or map header: the fix form below 16 entries, then 16 or 32 bits.
/// How many pairs `t` holds, and whether its keys are exactly 1..n (an empty table's are):
/// an array.
fn table_shape(t: &Table) -> mlua::Result<(usize, bool)> {
    let (mut count, mut max, mut array) = (0usize, 0usize, true);
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        count += 1;
        match k {
            Value::Integer(i) if i >= 1 => max = max.max(i as usize),
            Value::Number(n) if n >= 1.0 && n.fract() == 0.0 => max = max.max(n as usize),
            _ => array = false,
        }
    }
    Ok((count, array && max == count))
}

fn header(out: &mut Vec<u8>, n: usize, fix: u8, b16: u8, b32: u8) {
    if n < 16 {
        out.push(fix | n as u8);
    } else if n <= 0xffff {
        out.push(b16);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(b32);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

fn pack_int(i: i64, out: &mut Vec<u8>) {
    if i >= 0 {
        let u = i as u64;
        if u < 128 {
            out.push(u as u8);
        } else if u <= 0xff {
            out.extend_from_slice(&[0xcc, u as u8]);
        } else if u <= 0xffff {
            out.push(0xcd);
            out.extend_from_slice(&(u as u16).to_be_bytes());
        } else if u <= 0xffff_ffff {
            out.push(0xce);
            out.extend_from_slice(&(u as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&u.to_be_bytes());
        }
    } else if i >= -32 {
        out.push(i as i8 as u8);
    } else if i >= -128 {
        out.extend_from_slice(&[0xd0, i as i8 as u8]);
    } else if i >= -32768 {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= -2_147_483_648 {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

fn take<'a>(bytes: &'a [u8], at: &mut usize, n: usize) -> mlua::Result<&'a [u8]> {
    let end = at
        .checked_add(n)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| mlua::Error::runtime("Missing bytes in input."))?;
    let out = &bytes[*at..end];
    *at = end;
    Ok(out)
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b))
}

fn unpack(lua: &Lua, bytes: &[u8], at: &mut usize, depth: usize) -> mlua::Result<Value> {
    if depth > MAX_DEPTH {
        return Err(mlua::Error::runtime("Too many nested data structures"));
    }
    let tag = take(bytes, at, 1)?[0];
    let len =
        |at: &mut usize, n: usize| -> mlua::Result<usize> { Ok(be(take(bytes, at, n)?) as usize) };
    Ok(match tag {
        0x00..=0x7f => Value::Integer(i64::from(tag)),
        0xe0..=0xff => Value::Integer(i64::from(tag as i8)),
        0xc0 => Value::Nil,
        0xc2 => Value::Boolean(false),
        0xc3 => Value::Boolean(true),
        0xcc => Value::Integer(be(take(bytes, at, 1)?) as i64),
        0xcd => Value::Integer(be(take(bytes, at, 2)?) as i64),
        0xce => Value::Integer(be(take(bytes, at, 4)?) as i64),
        0xcf => {
            let u = be(take(bytes, at, 8)?);
            match i64::try_from(u) {
                Ok(i) => Value::Integer(i),
                Err(_) => Value::Number(u as f64),
            }
        }
        0xd0 => Value::Integer(i64::from(take(bytes, at, 1)?[0] as i8)),
        0xd1 => Value::Integer(i64::from(be(take(bytes, at, 2)?) as u16 as i16)),
        0xd2 => Value::Integer(i64::from(be(take(bytes, at, 4)?) as u32 as i32)),
        0xd3 => Value::Integer(be(take(bytes, at, 8)?) as i64),
        0xca => Value::Number(f64::from(f32::from_bits(be(take(bytes, at, 4)?) as u32))),
        0xcb => Value::Number(f64::from_bits(be(take(bytes, at, 8)?))),
        0xa0..=0xbf => {
            Value::String(lua.create_string(take(bytes, at, usize::from(tag & 0x1f))?)?)
        }
        0xd9 | 0xc4 => {
            let n = len(at, 1)?;
            Value::String(lua.create_string(take(bytes, at, n)?)?)
        }
        0xda | 0xc5 => {
            let n = len(at, 2)?;
            Value::String(lua.create_string(take(bytes, at, n)?)?)
        }
        0xdb | 0xc6 => {
            let n = len(at, 4)?;
            Value::String(lua.create_string(take(bytes, at, n)?)?)
        }
        0x90..=0x9f | 0xdc | 0xdd => {
            let n = match tag {
                0xdc => len(at, 2)?,
                0xdd => len(at, 4)?,
                _ => usize::from(tag & 0x0f),
            };
            let t = lua.create_table()?;
            for i in 1..=n {
                t.raw_set(i, unpack(lua, bytes, at, depth + 1)?)?;
            }
            Value::Table(t)
        }
        0x80..=0x8f | 0xde | 0xdf => {
            let n = match tag {
                0xde => len(at, 2)?,
                0xdf => len(at, 4)?,
                _ => usize::from(tag & 0x0f),
            };
            let t = lua.create_table()?;
            for _ in 0..n {
                let k = unpack(lua, bytes, at, depth + 1)?;
                let v = unpack(lua, bytes, at, depth + 1)?;
                if !matches!(k, Value::Nil) {
                    t.raw_set(k, v)?;
                }
            }
            Value::Table(t)
        }
        _ => return Err(mlua::Error::runtime("Bad data format in input.")),
    })
}
