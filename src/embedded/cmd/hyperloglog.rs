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
        return cx.write(key, |slot| {
            let Some(entry) = slot else {
                return int(0);
            };
            let v = hll_of_mut(entry)?;
            let card = match hll::cached(v) {
                Some(card) => card,
                None => {
                    let card = hll::count(v)?;
                    hll::cache(v, card);
                    card
                }
            };
            int(card as i64)
        });
    }
    let max = union(cx, &args[1..])?.0;
    int(hll::count_registers(&max) as i64)
}

/// The registers of the union of `keys`, one per byte, and whether any of them is dense.
fn union(cx: &Cx, keys: &[&[u8]]) -> Result<(Box<[u8; REGISTERS]>, bool), Error> {
    let mut max = Box::new([0u8; REGISTERS]);
    let mut dense = false;
    for key in keys {
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
