//! HyperLogLog commands: PFADD, PFCOUNT, PFMERGE, on string values in Redis's own
//! representation ([`crate::embedded::hll`]), so a HyperLogLog is also a string to GET.

use super::{int, ok, wrongtype, Command, Cx, Error, Reply, StoreError};
use crate::embedded::data::{Data, Entry};
use crate::embedded::hll::{self, Corrupt, REGISTERS};

pub const COMMANDS: &[Command] = &[
    Command {
        name: "PFADD",
        run: pfadd,
    },
    Command {
        name: "PFCOUNT",
        run: pfcount,
    },
    Command {
        name: "PFMERGE",
        run: pfmerge,
    },
];

impl From<Corrupt> for Error {
    fn from(_: Corrupt) -> Self {
        Error::Store(StoreError::CorruptHll)
    }
}

/// The HyperLogLog in an entry, checked as Redis checks it before any use.
fn hll_of(entry: &Entry) -> Result<&Vec<u8>, Error> {
    match &entry.data {
        Data::Str(s) if hll::is_hll(s) => Ok(s),
        Data::Str(_) => Err(StoreError::NotHll.into()),
        _ => wrongtype(),
    }
}

/// The same, to change it in place (its expiry stays).
fn hll_of_mut(entry: &mut Entry) -> Result<&mut Vec<u8>, Error> {
    hll_of(entry)?;
    match &mut entry.data {
        Data::Str(s) => Ok(s),
        _ => wrongtype(),
    }
}

/// `PFADD key [element ...]`: 1 when the key was created or a register grew.
fn pfadd(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    cx.write(args[1], |slot| {
        let mut updated = slot.is_none();
        let entry = slot.get_or_insert_with(|| Entry::new(Data::Str(hll::empty())));
        let v = hll_of_mut(entry)?;
        for element in &args[2..] {
            updated |= hll::add(v, element)?;
        }
        if updated {
            hll::invalidate(v);
        }
        int(i64::from(updated))
    })
}

/// `PFCOUNT key [key ...]`: one key's estimate (cached in the value, as Redis does), or
/// the estimate of several keys' union. Missing keys count as empty.
fn pfcount(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    if let [_, key] = args {
        let (card, cached_now) = cx.write(key, |slot| -> Result<(u64, bool), Error> {
            let Some(entry) = slot else {
                return Ok((0, false));
            };
            let v = hll_of_mut(entry)?;
            Ok(match hll::cached(v) {
                Some(card) => (card, false),
                None => {
                    let card = hll::count(v)?;
                    hll::cache(v, card);
                    (card, true)
                }
            })
        })?;
        // Redis counts the cache update as a change of the key (`signalModifiedKey`): a
        // transaction watching it does not run.
        let watches = &cx.store.watches;
        if cached_now && watches.active.load(std::sync::atomic::Ordering::Acquire) > 0 {
            watches.touch(key);
        }
        return int(card as i64);
    }
    let max = union(cx, &args[1..])?.0;
    int(hll::count_registers(&max) as i64)
}

/// The registers of the union of `keys`, one per byte, and whether any of them is dense.
///
/// A key named twice is merged once: merging is idempotent, so the answer is the same, and
/// the work stays proportional to the bytes the keys hold (a request naming one dense key
/// 65,536 times would otherwise read a billion registers while holding the store alone).
fn union(cx: &Cx, keys: &[&[u8]]) -> Result<(Box<[u8; REGISTERS]>, bool), Error> {
    let mut max = Box::new([0u8; REGISTERS]);
    let mut dense = false;
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    for key in keys {
        if !seen.insert(*key) {
            continue;
        }
        cx.read(key, |e| -> Result<(), Error> {
            let Some(entry) = e else {
                return Ok(());
            };
            let v = hll_of(entry)?;
            dense |= v.len() == hll::DENSE_SIZE && v[4] == 0;
            hll::merge_into(&mut max, v)?;
            Ok(())
        })?;
    }
    Ok((max, dense))
}

/// `PFMERGE destkey [sourcekey ...]`: the destination (itself a source) becomes the
/// union; it turns dense when any source is.
fn pfmerge(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let (max, dense) = union(cx, &args[1..])?;
    cx.write(args[1], |slot| {
        let entry = slot.get_or_insert_with(|| Entry::new(Data::Str(hll::empty())));
        let v = hll_of_mut(entry)?;
        if dense {
            hll::make_dense(v)?;
        }
        hll::raise_all(v, &max)?;
        ok()
    })
}

#[cfg(test)]
mod tests {
    use crate::embedded::Store;
    use crate::protocol::frame::Frame;
    use crate::protocol::Proto;
    use std::time::{Duration, Instant};

    #[test]
    fn a_key_named_many_times_is_merged_once() {
        let store = Store::default();
        let elements: Vec<String> = (0..5_000).map(|i| format!("e{i}")).collect();
        let mut add: Vec<&[u8]> = vec![b"PFADD", b"dense"];
        add.extend(elements.iter().map(|e| e.as_bytes()));
        assert_eq!(store.run(Proto::Resp2, &add), Ok(Frame::Integer(1)));
        let single = store.run(Proto::Resp2, &[b"PFCOUNT", b"dense"]);
        // One dense key named 65,536 times, as a hostile tenant may: merged once, it is
        // as fast as naming it twice; merged every time it would read 10^9 registers.
        let mut count: Vec<&[u8]> = vec![b"PFCOUNT"];
        count.extend(std::iter::repeat_n(&b"dense"[..], 1 << 16));
        let started = Instant::now();
        let many = store.run(Proto::Resp2, &count);
        let took = started.elapsed();
        assert_eq!(many, single);
        let mut merge: Vec<&[u8]> = vec![b"PFMERGE", b"dest"];
        merge.extend(std::iter::repeat_n(&b"dense"[..], 1 << 16));
        assert_eq!(store.run(Proto::Resp2, &merge), Ok(Frame::OK));
        let took_both = started.elapsed();
        assert!(
            took_both < Duration::from_secs(5),
            "PFCOUNT of one key named 65,536 times took {took:?}, with PFMERGE {took_both:?}"
        );
        assert_eq!(store.run(Proto::Resp2, &[b"PFCOUNT", b"dest"]), single);
    }
}
