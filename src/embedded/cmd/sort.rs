//! SORT and SORT_RO: sorting a list, set or sorted set by its elements or by other keys
//! (`BY`), fetching other keys per element (`GET`), as Redis 7.0's `sortCommandGeneric`
//! does (facts from redis/src/sort.c).
//!
//! The `BY` and `GET` patterns name other keys. The request path has already put them in
//! the tenant's namespace (the prefix goes in front of the pattern, `#` stays as it is;
//! see `ArgRole::SortPattern`), and a tenant prefix holds no `*`, so the substitution
//! always lands after it: every key a pattern names is one of the tenant's own.

use std::cmp::Ordering;

use crate::protocol::frame::Frame;

use super::Command;
use super::{bulk, int_arg, is, Cx, Error, Reply, StoreError};
use crate::embedded::data::{Data, Entry};
use crate::redis_num::{c_str, strtod};

pub const COMMANDS: &[Command] = &[
    Command {
        name: "SORT",
        run: sort,
    },
    Command {
        name: "SORT_RO",
        run: sort_ro,
    },
];

/// The most values the GET patterns of one SORT may fetch (elements in range × patterns).
const MAX_GET_VALUES: usize = 1 << 24;
/// The most bytes the GET patterns of one SORT may fetch from other keys.
const MAX_GET_BYTES: usize = 1 << 28;

fn too_large() -> Error {
    StoreError::SortGetTooLarge {
        values: MAX_GET_VALUES,
        bytes: MAX_GET_BYTES,
    }
    .into()
}

fn sort(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    generic(cx, args, false)
}

fn sort_ro(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    generic(cx, args, true)
}

/// Whether a call of `name` reads keys that only its elements name (SORT or SORT_RO with
/// `BY` or `GET`): they cannot be located before it runs, so it holds every stripe of the
/// store's gate ([`crate::embedded::gate`]). Any `BY` or `GET` word counts, even where it
/// is an argument (`LIMIT`'s, `STORE`'s): holding more stripes than needed is only slower.
pub fn names_other_keys(name: &str, args: &[&[u8]]) -> bool {
    matches!(name, "SORT" | "SORT_RO")
        && args
            .iter()
            .skip(2)
            .any(|arg| is(arg, "BY") || is(arg, "GET"))
}

/// The value a pattern names for one element (`lookupKeyByPattern`): the element itself
/// for `#`; else the first `*` replaced by the element, and the string under that key, or
/// the field after `->` of the hash under it. `None` when there is no such value.
fn lookup(cx: &Cx, pattern: &[u8], element: &[u8]) -> Option<Vec<u8>> {
    if pattern == b"#" {
        return Some(element.to_vec());
    }
    // C reads the pattern up to its first NUL.
    let pattern = c_str(pattern);
    let star = pattern.iter().position(|&b| b == b'*')?;
    let after = &pattern[star + 1..];
    let (suffix, field) = match after.windows(2).position(|w| w == b"->") {
        Some(at) if at + 2 < after.len() => (&after[..at], Some(&after[at + 2..])),
        _ => (after, None),
    };
    let mut key = Vec::with_capacity(pattern.len() + element.len());
    key.extend_from_slice(&pattern[..star]);
    key.extend_from_slice(element);
    key.extend_from_slice(suffix);
    cx.read(&key, |e| match (e.map(|e| &e.data), field) {
        (Some(Data::Str(s)), None) => Some(s.clone()),
        (Some(Data::Hash(h)), Some(field)) => h.get(field).cloned(),
        _ => None,
    })
}

/// How C's `strcoll` in the C locale compares: bytes, up to the first NUL.
fn coll(a: &[u8], b: &[u8]) -> Ordering {
    c_str(a).cmp(c_str(b))
}

/// What an element sorts by.
enum SortKey {
    Score(f64),
    Text(Option<Vec<u8>>),
    None,
}

fn generic(cx: &mut Cx, args: &[&[u8]], readonly: bool) -> Reply {
    let (mut desc, mut alpha, mut dontsort) = (false, false, false);
    let (mut limit_start, mut limit_count) = (0i64, -1i64);
    let mut by: Option<&[u8]> = None;
    let mut gets: Vec<&[u8]> = Vec::new();
    let mut store: Option<&[u8]> = None;
    let mut j = 2;
    while j < args.len() {
        let left = args.len() - j - 1;
        let arg = args[j];
        if is(arg, "ASC") {
            desc = false;
        } else if is(arg, "DESC") {
            desc = true;
        } else if is(arg, "ALPHA") {
            alpha = true;
        } else if is(arg, "LIMIT") && left >= 2 {
            limit_start = int_arg(args[j + 1])?;
            limit_count = int_arg(args[j + 2])?;
            j += 2;
        } else if !readonly && is(arg, "STORE") && left >= 1 {
            store = Some(args[j + 1]);
            j += 1;
        } else if is(arg, "BY") && left >= 1 {
            by = Some(args[j + 1]);
            // A pattern without `*` names no key per element: nothing to sort by.
            dontsort = !c_str(args[j + 1]).contains(&b'*');
            j += 1;
        } else if is(arg, "GET") && left >= 1 {
            gets.push(args[j + 1]);
            j += 1;
        } else {
            return Err(StoreError::Syntax.into());
        }
        j += 1;
    }
    // The elements, in the order the sort starts from.
    let (mut elements, is_set) = cx.read(args[1], |e| match e.map(|e| &e.data) {
        None => Ok((Vec::new(), false)),
        Some(Data::List(l)) => Ok((l.iter().cloned().collect::<Vec<_>>(), false)),
        Some(Data::Set(s)) => Ok((s.iter().cloned().collect(), true)),
        Some(Data::ZSet(z)) => Ok((z.iter().map(|(m, _)| m.to_vec()).collect(), false)),
        Some(_) => Err(Error::from(StoreError::WrongType)),
    })?;
    // A set has no order of its own: stored unsorted, it would differ between runs.
    if dontsort && is_set && store.is_some() {
        (dontsort, alpha, by) = (false, true, None);
    }
    if dontsort && desc && !is_set {
        elements.reverse();
    }
    let len = elements.len() as i64;
    let mut start = limit_start.max(0).min(len);
    let count = limit_count.max(-1).min(len);
    let mut end = if count < 0 {
        len - 1
    } else {
        start + count - 1
    };
    if start >= len {
        start = len - 1;
        end = len - 2;
    }
    end = end.min(len - 1);

    let mut not_a_number = false;
    if !dontsort {
        let keys: Vec<SortKey> = elements
            .iter()
            .map(|element| {
                let value = match by {
                    Some(pattern) => lookup(cx, pattern, element),
                    None => Some(element.clone()),
                };
                match (alpha, value) {
                    (true, value) if by.is_some() => SortKey::Text(value),
                    (true, _) => SortKey::None,
                    (false, None) => SortKey::Score(0.0),
                    (false, Some(v)) => {
                        let text = c_str(&v);
                        let (score, used, out_of_range) = strtod(text);
                        if used != text.len() || out_of_range || score.is_nan() {
                            not_a_number = true;
                        }
                        SortKey::Score(score)
                    }
                }
            })
            .collect();
        let mut order: Vec<usize> = (0..elements.len()).collect();
        let by_pattern = by.is_some();
        let binary = store.is_some();
        order.sort_by(|&a, &b| {
            let cmp = match (&keys[a], &keys[b]) {
                (SortKey::Score(x), SortKey::Score(y)) => x
                    .partial_cmp(y)
                    .unwrap_or(Ordering::Equal)
                    .then_with(|| elements[a].cmp(&elements[b])),
                (SortKey::Text(x), SortKey::Text(y)) if by_pattern => match (x, y) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Less,
                    (Some(_), None) => Ordering::Greater,
                    (Some(x), Some(y)) if binary => x.cmp(y),
                    (Some(x), Some(y)) => coll(x, y),
                },
                _ if binary => elements[a].cmp(&elements[b]),
                _ => coll(&elements[a], &elements[b]),
            };
            if desc {
                cmp.reverse()
            } else {
                cmp
            }
        });
        let mut sorted: Vec<Option<Vec<u8>>> = elements.into_iter().map(Some).collect();
        elements = order
            .into_iter()
            .filter_map(|i| sorted.get_mut(i).and_then(Option::take))
            .collect();
    }
    if not_a_number {
        return Err(StoreError::SortNotDouble.into());
    }
    let picked = if end >= start {
        &elements[start as usize..=end as usize]
    } else {
        &[][..]
    };
    // GET fetches other keys per element: a few patterns over a long list (or one pattern
    // over a list repeating an element whose key holds a large value) would hold the store
    // alone and build a reply far larger than anything the tenant stored. Bounded, as
    // Redis is not, with pkv's own error.
    if picked.len().saturating_mul(gets.len()) > MAX_GET_VALUES {
        return Err(too_large());
    }
    let mut out: Vec<Option<Vec<u8>>> = Vec::new();
    let mut fetched = 0usize;
    for element in picked {
        if gets.is_empty() {
            out.push(Some(element.clone()));
        }
        for pattern in &gets {
            let value = lookup(cx, pattern, element);
            if *pattern != b"#" {
                fetched = fetched.saturating_add(value.as_ref().map_or(0, Vec::len));
                if fetched > MAX_GET_BYTES {
                    return Err(too_large());
                }
            }
            out.push(value);
        }
    }
    match store {
        None => Ok(Frame::Array(
            out.into_iter()
                .map(|v| v.map_or(Frame::Null, bulk))
                .collect(),
        )),
        Some(dest) => {
            let n = out.len();
            if n == 0 {
                cx.remove(dest);
            } else {
                let list = out.into_iter().map(Option::unwrap_or_default).collect();
                cx.insert(dest, Entry::new(Data::List(list)));
            }
            Ok(Frame::Integer(n as i64))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::embedded::Store;
    use crate::protocol::frame::Frame;
    use crate::protocol::Proto;

    fn run(store: &Store, args: &[&[u8]]) -> Frame {
        crate::embedded::into_frame(store.run(Proto::Resp2, args))
    }

    #[test]
    fn gets_that_would_fetch_out_of_proportion_are_refused() {
        let store = Store::default();
        // A list repeating one element whose key holds 1 MiB: each GET fetches the MiB.
        let big = vec![b'v'; 1 << 20];
        assert_eq!(run(&store, &[b"SET", b"vx", &big]), Frame::OK);
        let mut push: Vec<&[u8]> = vec![b"RPUSH", b"l"];
        push.extend(std::iter::repeat_n(&b"x"[..], 300));
        assert_eq!(run(&store, &push), Frame::Integer(300));
        let refused = run(&store, &[b"SORT", b"l", b"BY", b"nosort", b"GET", b"v*"]);
        assert!(
            matches!(&refused, Frame::Error(e) if e.starts_with(b"ERR SORT's GET patterns")),
            "{refused:?}"
        );
        // Within the bound (LIMIT), the same SORT answers.
        let some = run(
            &store,
            &[
                b"SORT", b"l", b"BY", b"nosort", b"LIMIT", b"0", b"10", b"GET", b"v*",
            ],
        );
        assert!(matches!(&some, Frame::Array(items) if items.len() == 10));
        // Many GET patterns over a long list: refused before any lookup.
        let mut push: Vec<&[u8]> = vec![b"RPUSH", b"long"];
        push.extend(std::iter::repeat_n(&b"y"[..], 1 << 16));
        run(&store, &push);
        let mut sort: Vec<&[u8]> = vec![b"SORT", b"long", b"BY", b"nosort"];
        for _ in 0..257 {
            sort.extend([&b"GET"[..], b"#"]);
        }
        let refused = run(&store, &sort);
        assert!(matches!(&refused, Frame::Error(_)), "{refused:?}");
        // A plain sort of the same list is not limited: it returns what the tenant stored.
        let plain = run(&store, &[b"SORT", b"long", b"BY", b"nosort"]);
        assert!(matches!(&plain, Frame::Array(items) if items.len() == 1 << 16));
    }
}
