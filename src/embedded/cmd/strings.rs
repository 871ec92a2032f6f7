//! String commands: GET and SET with their variants, counters, ranges and bits.

use crate::protocol::frame::Frame;

use super::{bulk, int, int_arg, is, ok, wrongtype, Command, Cx, Error, Reply, StoreError};
use crate::commands::set_options::{self, Expiry, OptionsOf};
use crate::commands::TtlUnit;
use crate::embedded::data::{Data, Entry};

pub const COMMANDS: &[Command] = &[
    Command {
        name: "GET",
        run: get,
    },
    Command {
        name: "SET",
        run: set,
    },
    Command {
        name: "SETNX",
        run: setnx,
    },
    Command {
        name: "SETEX",
        run: setex,
    },
    Command {
        name: "PSETEX",
        run: psetex,
    },
    Command {
        name: "GETSET",
        run: getset,
    },
    Command {
        name: "GETDEL",
        run: getdel,
    },
    Command {
        name: "GETEX",
        run: getex,
    },
    Command {
        name: "MGET",
        run: mget,
    },
    Command {
        name: "MSET",
        run: mset,
    },
    Command {
        name: "MSETNX",
        run: msetnx,
    },
    Command {
        name: "APPEND",
        run: append,
    },
    Command {
        name: "STRLEN",
        run: strlen,
    },
    Command {
        name: "GETRANGE",
        run: getrange,
    },
    Command {
        name: "SUBSTR",
        run: getrange,
    },
    Command {
        name: "SETRANGE",
        run: setrange,
    },
    Command {
        name: "INCR",
        run: incr,
    },
    Command {
        name: "DECR",
        run: decr,
    },
    Command {
        name: "INCRBY",
        run: incrby,
    },
    Command {
        name: "DECRBY",
        run: decrby,
    },
    Command {
        name: "INCRBYFLOAT",
        run: incrbyfloat,
    },
    Command {
        name: "LCS",
        run: lcs,
    },
    Command {
        name: "SETBIT",
        run: setbit,
    },
    Command {
        name: "GETBIT",
        run: getbit,
    },
    Command {
        name: "BITCOUNT",
        run: bitcount,
    },
    Command {
        name: "BITPOS",
        run: bitpos,
    },
    Command {
        name: "BITOP",
        run: bitop,
    },
    Command {
        name: "BITFIELD",
        run: bitfield,
    },
    Command {
        name: "BITFIELD_RO",
        run: bitfield_ro,
    },
];

// === expiry options ===

/// The error for an expiry of `command` that is out of range.
pub(super) fn invalid_expire(command: &'static str) -> Error {
    StoreError::InvalidExpire { command }.into()
}

/// The deadline (ms since the epoch) an expiry option sets: the value must be positive,
/// and so must the deadline.
fn deadline(cx: &Cx, unit: TtlUnit, raw: &[u8], command: &'static str) -> Result<i64, Error> {
    let n = int_arg(raw)?;
    let seconds = unit.in_seconds();
    if n <= 0 || (seconds && n > i64::MAX / 1000) {
        return Err(invalid_expire(command));
    }
    let ms = if seconds { n * 1000 } else { n };
    let at = if unit.is_absolute() {
        Some(ms)
    } else {
        ms.checked_add(cx.now)
    };
    match at {
        Some(at) if at > 0 => Ok(at),
        _ => Err(invalid_expire(command)),
    }
}

/// A string value, or the wrong-type error for anything else.
fn string_of(entry: Option<&Entry>) -> Result<Option<&Vec<u8>>, Error> {
    match entry.map(|e| &e.data) {
        None => Ok(None),
        Some(Data::Str(s)) => Ok(Some(s)),
        Some(_) => wrongtype(),
    }
}

// === GET, SET ===

fn get(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.read(args[1], |e| {
        Ok(string_of(e)?.map_or(Frame::Null, |s| bulk(s.clone())))
    })
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT ts | PXAT ms-ts | KEEPTTL]`
fn set(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let options = set_options::parse(args, OptionsOf::Set)?;
    let (nx, xx, get) = (options.nx, options.xx, options.get);
    let keepttl = options.expiry == Some(Expiry::Keep);
    let expires_at = match options.expiry {
        Some(Expiry::In(unit, raw)) => Some(deadline(cx, unit, raw, "set")?),
        _ => None,
    };
    let value = args[2];
    cx.write(args[1], |slot| {
        let old = match slot.as_ref() {
            Some(Entry {
                data: Data::Str(s), ..
            }) if get => Some(bulk(s.clone())),
            Some(_) if get => return wrongtype(),
            _ => None,
        };
        let exists = slot.is_some();
        if (nx && exists) || (xx && !exists) {
            return Ok(old.unwrap_or(Frame::Null));
        }
        let expires_at = if keepttl {
            slot.as_ref().and_then(|e| e.expires_at)
        } else {
            expires_at
        };
        *slot = Some(Entry {
            data: Data::Str(value.to_vec()),
            expires_at,
            version: 0,
        });
        if get {
            Ok(old.unwrap_or(Frame::Null))
        } else {
            ok()
        }
    })
}

/// `SETNX key value`: 1 if it set the key, 0 if the key exists.
fn setnx(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.write(args[1], |slot| {
        if slot.is_some() {
            return int(0);
        }
        *slot = Some(Entry::new(Data::Str(args[2].to_vec())));
        int(1)
    })
}

fn setex(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_with_expiry(cx, args, TtlUnit::Seconds, "setex")
}

fn psetex(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    set_with_expiry(cx, args, TtlUnit::Millis, "psetex")
}

/// `SETEX key seconds value`, `PSETEX key ms value`.
fn set_with_expiry(cx: &mut Cx, args: &[&[u8]], unit: TtlUnit, name: &'static str) -> Reply {
    let expires_at = deadline(cx, unit, args[2], name)?;
    cx.insert(
        args[1],
        Entry {
            data: Data::Str(args[3].to_vec()),
            expires_at: Some(expires_at),
            version: 0,
        },
    );
    ok()
}

/// `GETSET key value`: the old value; the new one has no deadline.
fn getset(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.write(args[1], |slot| {
        let old = string_of(slot.as_ref())?.map_or(Frame::Null, |s| bulk(s.clone()));
        *slot = Some(Entry::new(Data::Str(args[2].to_vec())));
        Ok(old)
    })
}

/// `GETDEL key`: the value, and the key is gone.
fn getdel(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.write(args[1], |slot| {
        let Some(value) = string_of(slot.as_ref())?.cloned() else {
            return Ok(Frame::Null);
        };
        *slot = None;
        Ok(bulk(value))
    })
}

/// `GETEX key [EX s | PX ms | EXAT ts | PXAT ms-ts | PERSIST]`: the value, and a new
/// deadline (or none).
fn getex(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let options = set_options::parse(args, OptionsOf::GetEx)?;
    let persist = options.expiry == Some(Expiry::Persist);
    let expiry = match options.expiry {
        Some(Expiry::In(unit, raw)) => Some((unit, raw)),
        _ => None,
    };
    let now = cx.now;
    // Checked once the key is known to hold a string, as Redis does.
    let at = expiry.map(|(unit, raw)| deadline(cx, unit, raw, "getex"));
    cx.write(args[1], |slot| {
        let Some(value) = string_of(slot.as_ref())?.cloned() else {
            return Ok(Frame::Null);
        };
        match at {
            Some(Err(e)) => return Err(e),
            Some(Ok(at)) if at <= now => *slot = None,
            Some(Ok(at)) => {
                if let Some(entry) = slot.as_mut() {
                    entry.expires_at = Some(at);
                }
            }
            None if persist => {
                if let Some(entry) = slot.as_mut() {
                    entry.expires_at = None;
                }
            }
            None => {}
        }
        Ok(bulk(value))
    })
}

// === several keys ===

/// `MGET key...`: each value, nil for a missing key or one that is not a string.
fn mget(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let values = args[1..]
        .iter()
        .map(|k| {
            cx.read(k, |e| match e.map(|e| &e.data) {
                Some(Data::Str(s)) => bulk(s.clone()),
                _ => Frame::Null,
            })
        })
        .collect();
    Ok(Frame::Array(values))
}

/// The pairs of `MSET`/`MSETNX`, or the arity error for an odd count.
fn pairs<'a>(args: &'a [&'a [u8]], name: &str) -> Result<std::slice::Chunks<'a, &'a [u8]>, Error> {
    if args.len() < 3 || args.len().is_multiple_of(2) {
        return Err(super::arity_error(name));
    }
    Ok(args[1..].chunks(2))
}

/// `MSET key value [key value ...]`
fn mset(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    for pair in pairs(args, "mset")? {
        cx.insert(pair[0], Entry::new(Data::Str(pair[1].to_vec())));
    }
    ok()
}

/// `MSETNX key value [key value ...]`: sets them all (1) only if none exists (else 0).
fn msetnx(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let pairs = pairs(args, "msetnx")?;
    if pairs.clone().any(|pair| cx.read(pair[0], |e| e.is_some())) {
        return int(0);
    }
    for pair in pairs {
        cx.insert(pair[0], Entry::new(Data::Str(pair[1].to_vec())));
    }
    int(1)
}

// === lengths and ranges ===

/// The largest string Redis builds (its `proto-max-bulk-len`).
const MAX_STRING: u64 = 512 * 1024 * 1024;

/// Refuses a string that would grow past [`MAX_STRING`].
fn check_length(offset: u64, len: u64) -> Result<(), Error> {
    match offset.checked_add(len) {
        Some(total) if total <= MAX_STRING => Ok(()),
        _ => Err(StoreError::StringTooLong.into()),
    }
}

/// Runs `f` on the string under `key`, created empty if missing; the deadline is kept.
fn modify_string<R>(
    cx: &Cx,
    key: &[u8],
    f: impl FnOnce(&mut Vec<u8>) -> Result<R, Error>,
) -> Result<R, Error> {
    cx.write(key, |slot| {
        let created = slot.is_none();
        let entry = slot.get_or_insert_with(|| Entry::new(Data::Str(Vec::new())));
        let Data::Str(s) = &mut entry.data else {
            return wrongtype();
        };
        let result = f(s);
        // A key created for nothing (an error) is not left behind.
        if result.is_err() && created {
            *slot = None;
        }
        result
    })
}

/// `APPEND key value`: the new length.
fn append(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    modify_string(cx, args[1], |s| {
        check_length(s.len() as u64, args[2].len() as u64)?;
        s.extend_from_slice(args[2]);
        int(s.len() as i64)
    })
}

fn strlen(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.read(
        args[1],
        |e| int(string_of(e)?.map_or(0, |s| s.len() as i64)),
    )
}

/// Resolves an inclusive `start..=end` range with negative positions counted from the end
/// of `len`; `None` when it is empty.
fn clamp_range(start: i64, end: i64, len: i64) -> Option<(usize, usize)> {
    if start < 0 && end < 0 && start > end {
        return None;
    }
    let start = if start < 0 { len + start } else { start }.max(0);
    let end = if end < 0 { len + end } else { end }.max(0).min(len - 1);
    (len > 0 && start <= end).then_some((start as usize, end as usize))
}

/// `GETRANGE key start end` (and `SUBSTR`).
fn getrange(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let start = int_arg(args[2])?;
    let end = int_arg(args[3])?;
    cx.read(args[1], |e| {
        let Some(s) = string_of(e)? else {
            return Ok(bulk(Vec::new()));
        };
        Ok(match clamp_range(start, end, s.len() as i64) {
            Some((a, b)) => bulk(&s[a..=b]),
            None => bulk(Vec::new()),
        })
    })
}

/// `SETRANGE key offset value`: overwrites from `offset`, padding with zero bytes; the
/// new length.
fn setrange(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let offset = int_arg(args[2])?;
    if offset < 0 {
        return Err(StoreError::OffsetOutOfRange.into());
    }
    let offset = offset as u64;
    let value = args[3];
    cx.write(args[1], |slot| {
        let Some(entry) = slot.as_mut() else {
            if value.is_empty() {
                return int(0);
            }
            check_length(offset, value.len() as u64)?;
            let mut s = vec![0; offset as usize];
            s.extend_from_slice(value);
            let len = s.len();
            *slot = Some(Entry::new(Data::Str(s)));
            return int(len as i64);
        };
        let Data::Str(s) = &mut entry.data else {
            return wrongtype();
        };
        if value.is_empty() {
            return int(s.len() as i64);
        }
        check_length(offset, value.len() as u64)?;
        let (offset, end) = (offset as usize, offset as usize + value.len());
        if s.len() < end {
            s.resize(end, 0);
        }
        s[offset..end].copy_from_slice(value);
        int(s.len() as i64)
    })
}

// === counters ===

fn incr(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    add_integer(cx, args[1], 1)
}

fn decr(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    add_integer(cx, args[1], -1)
}

fn incrby(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let by = int_arg(args[2])?;
    add_integer(cx, args[1], by)
}

fn decrby(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let by = int_arg(args[2])?;
    let by = by
        .checked_neg()
        .ok_or_else(|| Error::from(StoreError::DecrOverflow))?;
    add_integer(cx, args[1], by)
}

/// Adds `by` to the integer under `key` (0 if missing); the new value.
fn add_integer(cx: &Cx, key: &[u8], by: i64) -> Reply {
    cx.write(key, |slot| {
        let current = match string_of(slot.as_ref())? {
            None => 0,
            Some(s) => int_arg(s)?,
        };
        let value = current
            .checked_add(by)
            .ok_or_else(|| Error::from(StoreError::IncrOverflow))?;
        store_keeping_ttl(slot, value.to_string().into_bytes());
        int(value)
    })
}

/// Replaces the value in `slot` with the string `value`, keeping the deadline.
fn store_keeping_ttl(slot: &mut Option<Entry>, value: Vec<u8>) {
    match slot {
        Some(entry) => entry.data = Data::Str(value),
        None => *slot = Some(Entry::new(Data::Str(value))),
    }
}

/// `INCRBYFLOAT key increment`: the new value as text, computed the way Redis does (see
/// [`crate::redis_num::long_double`]).
fn incrbyfloat(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.write(args[1], |slot| {
        let current = string_of(slot.as_ref())?.map(|s| s.as_slice());
        let text = add_float(current.unwrap_or(b"0"), args[2])?;
        store_keeping_ttl(slot, text.clone().into_bytes());
        Ok(bulk(text))
    })
}

/// `current + increment` as Redis's INCRBYFLOAT writes it; `HINCRBYFLOAT` does the same.
pub(super) fn add_float(current: &[u8], increment: &[u8]) -> Result<String, Error> {
    use crate::redis_num::long_double::{LongDouble, Value as Ld};
    let not_float = || Error::from(StoreError::NotFloat);
    let a = LongDouble::parse(current).ok_or_else(not_float)?;
    let b = LongDouble::parse(increment).ok_or_else(not_float)?;
    let infinite = || Error::from(StoreError::IncrNotFinite);
    match (a, b) {
        (Ld::Finite(a), Ld::Finite(b)) => match a.add(b) {
            Ld::Finite(sum) => Ok(sum.to_text()),
            Ld::Infinite => Err(infinite()),
        },
        _ => Err(infinite()),
    }
}

// === LCS ===

/// `LCS key1 key2 [LEN] [IDX] [MINMATCHLEN n] [WITHMATCHLEN]`: the longest common
/// subsequence of two strings, its length, or where its runs are.
fn lcs(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let mut strings = Vec::with_capacity(2);
    for key in &args[1..3] {
        let value = cx.read(key, |e| match e.map(|e| &e.data) {
            None => Ok(Vec::new()),
            Some(Data::Str(s)) => Ok(s.clone()),
            Some(_) => Err(Error::from(StoreError::LcsNotStrings)),
        })?;
        strings.push(value);
    }
    let (mut len_only, mut idx, mut with_len, mut min_len) = (false, false, false, 0u64);
    let mut i = 3;
    while i < args.len() {
        let word = args[i];
        if is(word, "IDX") {
            idx = true;
        } else if is(word, "LEN") {
            len_only = true;
        } else if is(word, "WITHMATCHLEN") {
            with_len = true;
        } else if let (true, Some(n)) = (is(word, "MINMATCHLEN"), args.get(i + 1)) {
            min_len = int_arg(n)?.max(0) as u64;
            i += 1;
        } else {
            return Err(StoreError::Syntax.into());
        }
        i += 1;
    }
    if len_only && idx {
        return Err(StoreError::LcsLenAndIdx.into());
    }
    let (a, b) = (&strings[0], &strings[1]);
    let cells = (a.len() as u64 + 1).saturating_mul(b.len() as u64 + 1);
    if cells.saturating_mul(4) > MAX_STRING {
        return Err(StoreError::LcsTooLarge.into());
    }
    // table[i][j]: the LCS length of a[..i] and b[..j].
    let width = b.len() + 1;
    let mut table = vec![0u32; (a.len() + 1) * width];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            table[i * width + j] = if a[i - 1] == b[j - 1] {
                table[(i - 1) * width + j - 1] + 1
            } else {
                table[(i - 1) * width + j].max(table[i * width + j - 1])
            };
        }
    }
    let total = table[a.len() * width + b.len()];
    if len_only {
        return int(i64::from(total));
    }
    // Walk back from the end, collecting the common bytes and the runs they form
    // (positions in a and b, inclusive), last run first.
    let mut common = Vec::with_capacity(total as usize);
    let mut runs: Vec<((usize, usize), (usize, usize))> = Vec::new();
    let mut run: Option<((usize, usize), (usize, usize))> = None;
    let (mut i, mut j) = (a.len(), b.len());
    while i > 0 && j > 0 {
        if a[i - 1] == b[j - 1] {
            common.push(a[i - 1]);
            run = Some(match run {
                Some(((_, a_end), (_, b_end))) => ((i - 1, a_end), (j - 1, b_end)),
                None => ((i - 1, i - 1), (j - 1, j - 1)),
            });
            i -= 1;
            j -= 1;
            if i == 0 || j == 0 {
                runs.extend(run.take());
            }
        } else {
            if table[(i - 1) * width + j] > table[i * width + j - 1] {
                i -= 1;
            } else {
                j -= 1;
            }
            runs.extend(run.take());
        }
    }
    if !idx {
        common.reverse();
        return Ok(bulk(common));
    }
    let matches = runs
        .into_iter()
        .filter(|((a0, a1), _)| (a1 - a0 + 1) as u64 >= min_len)
        .map(|((a0, a1), (b0, b1))| {
            let pos = |x: usize, y: usize| {
                Frame::Array(vec![Frame::Integer(x as i64), Frame::Integer(y as i64)])
            };
            let mut item = vec![pos(a0, a1), pos(b0, b1)];
            if with_len {
                item.push(Frame::Integer((a1 - a0 + 1) as i64));
            }
            Frame::Array(item)
        })
        .collect();
    Ok(Frame::Map(vec![
        (bulk("matches"), Frame::Array(matches)),
        (bulk("len"), Frame::Integer(i64::from(total))),
    ]))
}

// === bits ===

/// A bit offset: a whole number from 0 to the last bit of the largest string.
fn bit_offset(raw: &[u8]) -> Result<u64, Error> {
    let out_of_range = || Error::from(StoreError::BitOffset);
    let n = crate::redis_num::parse_int(raw).ok_or_else(out_of_range)?;
    if n < 0 || (n as u64 >> 3) >= MAX_STRING {
        return Err(out_of_range());
    }
    Ok(n as u64)
}

/// Bit `i` of `s`, bit 0 being the most significant bit of the first byte.
fn bit_at(s: &[u8], i: u64) -> u8 {
    s.get((i >> 3) as usize)
        .map_or(0, |byte| byte >> (7 - (i & 7)) & 1)
}

/// `SETBIT key offset 0|1`: the bit's old value.
fn setbit(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let offset = bit_offset(args[2])?;
    let on = match args[3] {
        b"0" => false,
        b"1" => true,
        _ => return Err(StoreError::BitValue.into()),
    };
    modify_string(cx, args[1], |s| {
        let byte = (offset >> 3) as usize;
        if s.len() <= byte {
            s.resize(byte + 1, 0);
        }
        let mask = 1u8 << (7 - (offset & 7));
        let old = s[byte] & mask != 0;
        if on {
            s[byte] |= mask;
        } else {
            s[byte] &= !mask;
        }
        int(i64::from(old))
    })
}

/// `GETBIT key offset`
fn getbit(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let offset = bit_offset(args[2])?;
    cx.read(args[1], |e| {
        int(string_of(e)?.map_or(0, |s| i64::from(bit_at(s, offset))))
    })
}

/// Reads the optional `BYTE|BIT` unit of BITCOUNT and BITPOS: true for BIT.
fn bit_unit(raw: Option<&&[u8]>) -> Result<bool, Error> {
    match raw {
        None => Ok(false),
        Some(w) if is(w, "BYTE") => Ok(false),
        Some(w) if is(w, "BIT") => Ok(true),
        Some(_) => Err(StoreError::Syntax.into()),
    }
}

/// An inclusive range of bits of a string of `len` bytes from a `start end` pair in bytes
/// or bits, negative positions counting from the end; `None` when empty.
fn bit_range(start: i64, end: i64, len: usize, bits: bool) -> Option<(u64, u64)> {
    let total = if bits { len as i64 * 8 } else { len as i64 };
    let start = if start < 0 { total + start } else { start }.max(0);
    let end = if end < 0 { total + end } else { end }
        .max(0)
        .min(total - 1);
    if start > end {
        return None;
    }
    let (start, end) = (start as u64, end as u64);
    Some(if bits {
        (start, end)
    } else {
        (start * 8, end * 8 + 7)
    })
}

/// Set bits in the inclusive bit range `lo..=hi` of `s`.
fn count_bits(s: &[u8], lo: u64, hi: u64) -> u64 {
    let (first, last) = ((lo >> 3) as usize, (hi >> 3) as usize);
    let mut count: u64 = s[first..=last]
        .iter()
        .map(|b| u64::from(b.count_ones()))
        .sum();
    // Take off the bits of the end bytes outside the range.
    let head = u32::from(s[first]) >> (8 - (lo & 7));
    let tail = u32::from(s[last]) & ((1 << (7 - (hi & 7))) - 1);
    count -= u64::from(head.count_ones() + tail.count_ones());
    count
}

/// `BITCOUNT key [start end [BYTE|BIT]]`
fn bitcount(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let Some(s) = cx.read(args[1], |e| string_of(e).map(|s| s.cloned()))? else {
        return int(0);
    };
    let range = match args.len() {
        2 => (!s.is_empty()).then(|| (0, s.len() as u64 * 8 - 1)),
        4 | 5 => {
            let start = int_arg(args[2])?;
            let end = int_arg(args[3])?;
            let bits = bit_unit(args.get(4))?;
            bit_range(start, end, s.len(), bits)
        }
        _ => return Err(StoreError::Syntax.into()),
    };
    int(range.map_or(0, |(lo, hi)| count_bits(&s, lo, hi)) as i64)
}

/// `BITPOS key 0|1 [start [end [BYTE|BIT]]]`: the first bit with that value, or -1. Without
/// an end, a string is taken as followed by clear bits.
fn bitpos(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let bit = int_arg(args[2])?;
    if bit != 0 && bit != 1 {
        return Err(StoreError::BitArgument.into());
    }
    let bit = bit as u8;
    let Some(s) = cx.read(args[1], |e| string_of(e).map(|s| s.cloned()))? else {
        return int(if bit == 1 { -1 } else { 0 });
    };
    if args.len() > 6 {
        return Err(StoreError::Syntax.into());
    }
    let start = match args.get(3) {
        Some(raw) => int_arg(raw)?,
        None => 0,
    };
    let bits = bit_unit(args.get(5))?;
    let end_given = args.len() >= 5;
    let end = match args.get(4) {
        Some(raw) => int_arg(raw)?,
        None => -1,
    };
    let Some((lo, hi)) = bit_range(start, end, s.len(), bits) else {
        return int(-1);
    };
    match find_bit(&s, lo, hi, bit) {
        Some(i) => int(i as i64),
        None if bit == 0 && !end_given => int(hi as i64 + 1),
        None => int(-1),
    }
}

/// The first bit equal to `bit` in the inclusive range `lo..=hi` of `s`, skipping whole
/// bytes that cannot hold it.
fn find_bit(s: &[u8], lo: u64, hi: u64, bit: u8) -> Option<u64> {
    let hopeless = if bit == 1 { 0x00 } else { 0xff };
    let mut i = lo;
    while i <= hi {
        if i & 7 == 0 && i + 7 <= hi && s.get((i >> 3) as usize) == Some(&hopeless) {
            i += 8;
            continue;
        }
        if bit_at(s, i) == bit {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// `BITOP AND|OR|XOR|NOT destkey key...`: stores the result; its length.
fn bitop(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let op = args[1];
    let known = ["AND", "OR", "XOR", "NOT"].iter().any(|w| is(op, w));
    if !known {
        return Err(StoreError::Syntax.into());
    }
    let sources = &args[3..];
    if is(op, "NOT") && sources.len() != 1 {
        return Err(StoreError::BitopNotOneSource.into());
    }
    let mut values = Vec::with_capacity(sources.len());
    for key in sources {
        values.push(cx.read(key, |e| {
            string_of(e).map(|s| s.cloned().unwrap_or_default())
        })?);
    }
    let len = values.iter().map(Vec::len).max().unwrap_or(0);
    let byte = |v: &Vec<u8>, i: usize| v.get(i).copied().unwrap_or(0);
    let result: Vec<u8> = (0..len)
        .map(|i| {
            let mut bytes = values.iter().map(|v| byte(v, i));
            let first = bytes.next().unwrap_or(0);
            if is(op, "NOT") {
                !first
            } else if is(op, "AND") {
                bytes.fold(first, |acc, b| acc & b)
            } else if is(op, "OR") {
                bytes.fold(first, |acc, b| acc | b)
            } else {
                bytes.fold(first, |acc, b| acc ^ b)
            }
        })
        .collect();
    if result.is_empty() {
        cx.remove(args[2]);
    } else {
        cx.insert(args[2], Entry::new(Data::Str(result)));
    }
    int(len as i64)
}

/// What BITFIELD does when a value does not fit its field.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum FieldOp {
    Get,
    Set(i64),
    IncrBy(i64),
}

/// One operation of a BITFIELD command.
#[derive(Debug, Clone, Copy)]
struct Field {
    op: FieldOp,
    signed: bool,
    bits: u32,
    offset: u64,
    overflow: Overflow,
}

impl Field {
    /// The field's value in `s` (zeros past the end).
    fn get(&self, s: &[u8]) -> i64 {
        let raw = (0..u64::from(self.bits)).fold(0u64, |acc, i| {
            acc << 1 | u64::from(bit_at(s, self.offset + i))
        });
        if self.signed && self.bits < 64 && raw >> (self.bits - 1) & 1 == 1 {
            (raw | (u64::MAX << self.bits)) as i64
        } else {
            raw as i64
        }
    }

    /// Writes the low `bits` bits of `value`; `s` is long enough.
    fn put(&self, s: &mut [u8], value: i64) {
        for i in 0..u64::from(self.bits) {
            let bit = (value as u64) >> (u64::from(self.bits) - 1 - i) & 1;
            let pos = self.offset + i;
            let (byte, mask) = ((pos >> 3) as usize, 1u8 << (7 - (pos & 7)));
            if bit == 1 {
                s[byte] |= mask;
            } else {
                s[byte] &= !mask;
            }
        }
    }

    /// `value + incr` fitted to the field: `None` when it overflows and the policy is FAIL.
    fn fit(&self, value: i128, incr: i128) -> Option<i64> {
        let (min, max) = if self.signed {
            (-(1i128 << (self.bits - 1)), (1i128 << (self.bits - 1)) - 1)
        } else {
            (0, (1i128 << self.bits) - 1)
        };
        let sum = value + incr;
        if (min..=max).contains(&sum) {
            return Some(sum as i64);
        }
        match self.overflow {
            Overflow::Fail => None,
            Overflow::Sat => Some(if sum > max { max } else { min } as i64),
            Overflow::Wrap => {
                let wrapped = sum.rem_euclid(1i128 << self.bits);
                let signed_wrap = self.signed && wrapped > max;
                Some(if signed_wrap {
                    wrapped - (1i128 << self.bits)
                } else {
                    wrapped
                } as i64)
            }
        }
    }

    /// Runs a write operation on `s`; the reply.
    fn apply(&self, s: &mut [u8]) -> Frame {
        let old = self.get(s);
        let old_wide = if self.signed {
            i128::from(old)
        } else {
            i128::from(old as u64)
        };
        let (fitted, reply_old) = match self.op {
            FieldOp::Get => return Frame::Integer(old),
            // A value to set is read as the field's type: unsigned fields see a negative
            // number as its 64-bit two's complement.
            FieldOp::Set(v) if self.signed => (self.fit(i128::from(v), 0), true),
            FieldOp::Set(v) => (self.fit(i128::from(v as u64), 0), true),
            FieldOp::IncrBy(by) => (self.fit(old_wide, i128::from(by)), false),
        };
        match fitted {
            None => Frame::Null,
            Some(new) => {
                self.put(s, new);
                Frame::Integer(if reply_old { old } else { new })
            }
        }
    }
}

/// A BITFIELD type: `i1`..`i64` or `u1`..`u63`.
fn field_type(raw: &[u8]) -> Result<(bool, u32), Error> {
    let invalid = || Error::from(StoreError::BitfieldType);
    let (signed, digits) = match raw.split_first() {
        Some((b'i', rest)) => (true, rest),
        Some((b'u', rest)) => (false, rest),
        _ => return Err(invalid()),
    };
    let bits = crate::redis_num::parse_int(digits).ok_or_else(invalid)?;
    let limit = if signed { 64 } else { 63 };
    if !(1..=limit).contains(&bits) {
        return Err(invalid());
    }
    Ok((signed, bits as u32))
}

/// A BITFIELD offset: bits, or `#n` for the n-th field of this width.
fn field_offset(raw: &[u8], bits: u32) -> Result<u64, Error> {
    let out_of_range = || Error::from(StoreError::BitOffset);
    let (by_index, digits) = match raw.split_first() {
        Some((b'#', rest)) => (true, rest),
        _ => (false, raw),
    };
    let mut n = crate::redis_num::parse_int(digits).ok_or_else(out_of_range)?;
    if by_index {
        n = n.checked_mul(i64::from(bits)).ok_or_else(out_of_range)?;
    }
    if n < 0 || (n as u64 >> 3) >= MAX_STRING {
        return Err(out_of_range());
    }
    Ok(n as u64)
}

/// Parses BITFIELD's operations.
fn bitfield_ops(args: &[&[u8]]) -> Result<Vec<Field>, Error> {
    let mut fields = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut i = 2;
    while i < args.len() {
        let word = args[i];
        let left = args.len() - i - 1;
        let takes_value = is(word, "SET") || is(word, "INCRBY");
        if is(word, "OVERFLOW") && left >= 1 {
            let policy = args[i + 1];
            overflow = if is(policy, "WRAP") {
                Overflow::Wrap
            } else if is(policy, "SAT") {
                Overflow::Sat
            } else if is(policy, "FAIL") {
                Overflow::Fail
            } else {
                return Err(StoreError::BitfieldOverflow.into());
            };
            i += 2;
            continue;
        }
        if !((is(word, "GET") && left >= 2) || (takes_value && left >= 3)) {
            return Err(StoreError::Syntax.into());
        }
        let (signed, bits) = field_type(args[i + 1])?;
        let offset = field_offset(args[i + 2], bits)?;
        let op = if is(word, "GET") {
            FieldOp::Get
        } else {
            let value = int_arg(args[i + 3])?;
            if is(word, "SET") {
                FieldOp::Set(value)
            } else {
                FieldOp::IncrBy(value)
            }
        };
        fields.push(Field {
            op,
            signed,
            bits,
            offset,
            overflow,
        });
        i += if op == FieldOp::Get { 3 } else { 4 };
    }
    Ok(fields)
}

/// `BITFIELD key [GET type offset] [SET type offset value] [INCRBY type offset incr]
/// [OVERFLOW WRAP|SAT|FAIL] ...`: one reply per GET, SET (the old value) and INCRBY (the new
/// value, or nil when it overflows under FAIL).
fn bitfield(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let fields = bitfield_ops(args)?;
    let Some(last_bit) = fields
        .iter()
        .filter(|f| f.op != FieldOp::Get)
        .map(|f| f.offset + u64::from(f.bits) - 1)
        .max()
    else {
        return read_fields(cx, args[1], &fields);
    };
    modify_string(cx, args[1], |s| {
        let len = (last_bit >> 3) as usize + 1;
        if s.len() < len {
            s.resize(len, 0);
        }
        Ok(Frame::Array(fields.iter().map(|f| f.apply(s)).collect()))
    })
}

/// `BITFIELD_RO key [GET type offset] ...`
fn bitfield_ro(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let fields = bitfield_ops(args)?;
    if fields.iter().any(|f| f.op != FieldOp::Get) {
        return Err(StoreError::BitfieldReadOnly.into());
    }
    read_fields(cx, args[1], &fields)
}

/// The values of GET-only fields (a missing key reads as zeros).
fn read_fields(cx: &Cx, key: &[u8], fields: &[Field]) -> Reply {
    cx.read(key, |e| {
        let s = string_of(e)?.map_or(&[][..], |s| s.as_slice());
        Ok(Frame::Array(
            fields.iter().map(|f| Frame::Integer(f.get(s))).collect(),
        ))
    })
}
