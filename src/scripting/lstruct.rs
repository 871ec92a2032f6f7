//! `struct`: `pack`, `unpack` and `size`, as Redis's bundled `lua_struct.c` (Roberto
//! Ierusalimschy's struct library) reads its format language: `<` and `>` set little and
//! big endian (little by default, as on the machines Redis runs on), `![n]` the largest
//! alignment (8 by default with `!`, 1 without), `x` a zero byte, `b`/`B` `h`/`H` `l`/`L`
//! `T` `i[n]`/`I[n]` signed and unsigned integers of 1, 2, 8, 8 and n (4 by default, at
//! most 32) bytes, `f` and `d` floats and doubles, `s` a zero-terminated string, `c[n]` a
//! fixed string of n bytes (1 by default; `c0` is the whole string when packing, and takes
//! its length from the value before it when unpacking), and spaces, which are ignored.
//! Its results and error messages are compared byte for byte with a real redis-server's
//! in `tests/scripting.rs`.
//!
//! Written in Rust from that description, so that nothing a script gives it (a size of
//! two billion, alignment 0, an offset past the data) reads or writes out of bounds.

use mlua::{Lua, MultiValue, Table, Value};

/// The largest integer `i[n]`/`I[n]` packs.
const MAX_INT_SIZE: usize = 32;

/// The alignment `!` without a number sets (a double's, on 64-bit machines).
const MAX_ALIGN: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

/// The options in force: byte order and largest alignment.
struct Header {
    endian: Endian,
    align: usize,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            endian: Endian::Little,
            align: 1,
        }
    }
}

fn error(message: String) -> mlua::Error {
    mlua::Error::RuntimeError(message)
}

/// `luaL_argerror`'s message.
fn arg_error(n: usize, function: &str, message: &str) -> mlua::Error {
    error(format!("bad argument #{n} to '{function}' ({message})"))
}

/// A format being read, up to its first zero byte (the C library reads a C string).
struct Format<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Format<'_> {
    fn next(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at).filter(|b| **b != 0)?;
        self.at += 1;
        Some(byte)
    }

    /// The number that follows, or `default` when none does.
    fn number(&mut self, default: usize) -> mlua::Result<usize> {
        let digit = |f: &Self| f.bytes.get(f.at).copied().filter(u8::is_ascii_digit);
        if digit(self).is_none() {
            return Ok(default);
        }
        let mut n: usize = 0;
        while let Some(d) = digit(self) {
            let d = usize::from(d - b'0');
            let max = i32::MAX as usize;
            if n > max / 10 || n * 10 > max - d {
                return Err(error("integral size overflow".to_owned()));
            }
            n = n * 10 + d;
            self.at += 1;
        }
        Ok(n)
    }

    /// The size of option `opt` (0 for those that take no room or have no fixed size).
    fn size(&mut self, opt: u8) -> mlua::Result<usize> {
        Ok(match opt {
            b'b' | b'B' | b'x' => 1,
            b'h' | b'H' => 2,
            b'l' | b'L' | b'T' | b'd' => 8,
            b'f' => 4,
            b'c' => self.number(1)?,
            b'i' | b'I' => {
                let size = self.number(4)?;
                if size > MAX_INT_SIZE {
                    return Err(error(format!(
                        "integral size {size} is larger than limit of {MAX_INT_SIZE}"
                    )));
                }
                size
            }
            _ => 0,
        })
    }

    /// Applies a control option (`<`, `>`, `!n`, space), or refuses an unknown one.
    fn control(&mut self, opt: u8, h: &mut Header, function: &str) -> mlua::Result<()> {
        match opt {
            b' ' => {}
            b'>' => h.endian = Endian::Big,
            b'<' => h.endian = Endian::Little,
            b'!' => {
                let align = self.number(MAX_ALIGN)?;
                if align == 0 || align & (align - 1) != 0 {
                    return Err(error(format!("alignment {align} is not a power of 2")));
                }
                h.align = align;
            }
            other => {
                let message = format!("invalid format option '{}'", char::from(other));
                return Err(arg_error(1, function, &message));
            }
        }
        Ok(())
    }
}

/// Padding before an item of `size` bytes at offset `len`.
fn padding(len: usize, h: &Header, opt: u8, size: usize) -> usize {
    if size == 0 || opt == b'c' {
        return 0;
    }
    let size = size.min(h.align).max(1);
    (size.wrapping_sub(len & (size - 1))) & (size - 1)
}

/// A value's type as Lua 5.1 names it.
fn type_name(value: Option<&Value>) -> &'static str {
    match value.map_or("nil", Value::type_name) {
        "integer" => "number",
        "lightuserdata" => "userdata",
        other => other,
    }
}

fn number(lua: &Lua, args: &[Value], n: usize, function: &str) -> mlua::Result<f64> {
    let value = args.get(n - 1);
    match value.map(|v| lua.coerce_number(v.clone())) {
        Some(Ok(Some(x))) => Ok(x),
        _ => {
            let message = format!("number expected, got {}", type_name(value));
            Err(arg_error(n, function, &message))
        }
    }
}

fn string(lua: &Lua, args: &[Value], n: usize, function: &str) -> mlua::Result<Vec<u8>> {
    let value = args.get(n - 1);
    match value.map(|v| lua.coerce_string(v.clone())) {
        Some(Ok(Some(s))) => Ok(s.as_bytes().to_vec()),
        _ => {
            let message = format!("string expected, got {}", type_name(value));
            Err(arg_error(n, function, &message))
        }
    }
}

/// An integer of `size` bytes: the number as C converts it to a 64-bit integer, its bytes
/// past the eighth zero.
fn put_integer(out: &mut Vec<u8>, n: f64, endian: Endian, size: usize) {
    let mut value = if n < 0.0 { n as i64 as u64 } else { n as u64 };
    let start = out.len();
    out.resize(start + size, 0);
    let bytes = &mut out[start..];
    for i in 0..size {
        let at = match endian {
            Endian::Little => i,
            Endian::Big => size - 1 - i,
        };
        bytes[at] = (value & 0xff) as u8;
        value >>= 8;
    }
}

/// Reads an integer of `size` bytes, as the C library does on x86-64 (where a shift
/// counts modulo 64, which decides the sign of integers of more than 8 bytes).
fn get_integer(bytes: &[u8], endian: Endian, signed: bool) -> f64 {
    let mut value: u64 = 0;
    let mut push = |b: &u8| value = (value << 8) | u64::from(*b);
    match endian {
        Endian::Big => bytes.iter().for_each(&mut push),
        Endian::Little => bytes.iter().rev().for_each(&mut push),
    }
    if !signed {
        return value as f64;
    }
    let shift = (bytes.len() * 8).wrapping_sub(1) & 63;
    let mask = u64::MAX << shift;
    if value & mask != 0 {
        value |= mask;
    }
    value as i64 as f64
}

fn float_bytes(bytes: [u8; 8], size: usize, endian: Endian) -> Vec<u8> {
    let mut b = bytes[..size].to_vec();
    if endian == Endian::Big {
        b.reverse();
    }
    b
}

/// `struct.pack(format, ...)`
fn pack(lua: &Lua, args: MultiValue) -> mlua::Result<MultiValue> {
    let args: Vec<Value> = args.into_iter().collect();
    let format = string_arg(lua, &args, "pack")?;
    let mut fmt = Format {
        bytes: &format,
        at: 0,
    };
    let mut h = Header::default();
    let mut arg = 2;
    let mut out = Vec::new();
    while let Some(opt) = fmt.next() {
        let mut size = fmt.size(opt)?;
        let pad = padding(out.len(), &h, opt, size);
        out.resize(out.len() + pad, 0);
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let n = number(lua, &args, arg, "pack")?;
                arg += 1;
                put_integer(&mut out, n, h.endian, size);
            }
            b'x' => out.push(0),
            b'f' => {
                let n = number(lua, &args, arg, "pack")? as f32;
                arg += 1;
                let mut bytes = [0; 8];
                bytes[..4].copy_from_slice(&n.to_le_bytes());
                out.extend(float_bytes(bytes, 4, h.endian));
            }
            b'd' => {
                let n = number(lua, &args, arg, "pack")?;
                arg += 1;
                out.extend(float_bytes(n.to_le_bytes(), 8, h.endian));
            }
            b'c' | b's' => {
                let s = string(lua, &args, arg, "pack")?;
                arg += 1;
                if size == 0 {
                    size = s.len();
                }
                if s.len() < size {
                    return Err(arg_error(arg, "pack", "string too short"));
                }
                out.extend_from_slice(&s[..size]);
                if opt == b's' {
                    out.push(0);
                }
            }
            _ => fmt.control(opt, &mut h, "pack")?,
        }
    }
    Ok(MultiValue::from_iter([Value::String(
        lua.create_string(&out)?,
    )]))
}

/// The format, argument 1 (a number is read as its text, as Lua's `luaL_checkstring`).
fn string_arg(lua: &Lua, args: &[Value], function: &str) -> mlua::Result<Vec<u8>> {
    string(lua, args, 1, function)
}

/// `struct.unpack(format, data [, init])`: the values, then the position after them.
fn unpack(lua: &Lua, args: MultiValue) -> mlua::Result<MultiValue> {
    let args: Vec<Value> = args.into_iter().collect();
    let format = string_arg(lua, &args, "unpack")?;
    let data = string(lua, &args, 2, "unpack")?;
    let init = match args.get(2) {
        None | Some(Value::Nil) => 1.0,
        Some(_) => number(lua, &args, 3, "unpack")?,
    };
    // As Redis's patched library: 0 is refused, and a negative offset (read as a huge
    // unsigned one) finds the data too short.
    let init = init as i64;
    if init == 0 {
        return Err(arg_error(3, "unpack", "offset must be 1 or greater"));
    }
    if init < 0 {
        return Err(arg_error(2, "unpack", "data string too short"));
    }
    let mut pos = (init - 1) as usize;
    let mut fmt = Format {
        bytes: &format,
        at: 0,
    };
    let mut h = Header::default();
    let mut values: Vec<Value> = Vec::new();
    let too_short = || arg_error(2, "unpack", "data string too short");
    while let Some(opt) = fmt.next() {
        let mut size = fmt.size(opt)?;
        pos = pos.saturating_add(padding(pos, &h, opt, size));
        let fits = |pos: usize, size: usize| pos.checked_add(size).is_some_and(|e| e <= data.len());
        if !fits(pos, size) {
            return Err(too_short());
        }
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let signed = opt.is_ascii_lowercase();
                let n = get_integer(&data[pos..pos + size], h.endian, signed);
                values.push(Value::Number(n));
            }
            b'x' => {}
            b'f' => {
                let mut b = [0; 4];
                b.copy_from_slice(&data[pos..pos + 4]);
                let f = match h.endian {
                    Endian::Little => f32::from_le_bytes(b),
                    Endian::Big => f32::from_be_bytes(b),
                };
                values.push(Value::Number(f64::from(f)));
            }
            b'd' => {
                let mut b = [0; 8];
                b.copy_from_slice(&data[pos..pos + 8]);
                let d = match h.endian {
                    Endian::Little => f64::from_le_bytes(b),
                    Endian::Big => f64::from_be_bytes(b),
                };
                values.push(Value::Number(d));
            }
            b'c' => {
                if size == 0 {
                    let previous = values
                        .last()
                        .and_then(|v| lua.coerce_number(v.clone()).ok().flatten());
                    let Some(n) = previous else {
                        return Err(error("format 'c0' needs a previous size".to_owned()));
                    };
                    values.pop();
                    size = if n < 0.0 { usize::MAX } else { n as usize };
                    if !fits(pos, size) {
                        return Err(too_short());
                    }
                }
                values.push(Value::String(lua.create_string(&data[pos..pos + size])?));
            }
            b's' => {
                let Some(end) = data[pos..].iter().position(|b| *b == 0) else {
                    return Err(error("unfinished string in data".to_owned()));
                };
                size = end + 1;
                values.push(Value::String(lua.create_string(&data[pos..pos + end])?));
            }
            _ => fmt.control(opt, &mut h, "unpack")?,
        }
        pos += size;
    }
    values.push(Value::Number((pos + 1) as f64));
    Ok(MultiValue::from_iter(values))
}

/// `struct.size(format)`: the bytes a format packs into, when that is fixed.
fn size(lua: &Lua, args: MultiValue) -> mlua::Result<MultiValue> {
    let args: Vec<Value> = args.into_iter().collect();
    let format = string_arg(lua, &args, "size")?;
    let mut fmt = Format {
        bytes: &format,
        at: 0,
    };
    let mut h = Header::default();
    let mut pos: usize = 0;
    while let Some(opt) = fmt.next() {
        let size = fmt.size(opt)?;
        pos = pos.saturating_add(padding(pos, &h, opt, size));
        if opt == b's' {
            return Err(arg_error(1, "size", "option 's' has no fixed size"));
        }
        if opt == b'c' && size == 0 {
            return Err(arg_error(1, "size", "option 'c0' has no fixed size"));
        }
        if !opt.is_ascii_alphanumeric() {
            fmt.control(opt, &mut h, "size")?;
        }
        pos = pos.saturating_add(size);
    }
    Ok(MultiValue::from_iter([Value::Number(pos as f64)]))
}

/// The `struct` table. Its functions raise their errors as Lua's C library does
/// ([`super::lua::raise`]), named `?` when called from a C function (`pcall`).
pub(super) fn table(lua: &Lua) -> mlua::Result<Table> {
    type Run = fn(&Lua, MultiValue) -> mlua::Result<MultiValue>;
    let t = lua.create_table()?;
    let runs: [(&str, Run); 3] = [("pack", pack), ("unpack", unpack), ("size", size)];
    for (name, run) in runs {
        let function = lua.create_function(move |lua, args| {
            run(lua, args).map_err(|e| match e {
                mlua::Error::RuntimeError(m) => {
                    let m = match super::lua::called_from_c(lua) {
                        true => m.replacen(&format!("to '{name}'"), "to '?'", 1),
                        false => m,
                    };
                    super::lua::raise(lua, m)
                }
                e => e,
            })
        })?;
        t.raw_set(name, function)?;
    }
    Ok(t)
}
