//! HyperLogLog values, byte for byte as Redis 7.0 keeps them, so that `GET`, `STRLEN`,
//! `PFCOUNT` and a value copied between pkv and Redis all agree.
//!
//! The layout, hash and estimator are Redis's (facts from redis/src/hyperloglog.c, 7.0):
//! a 16-byte header (`HYLL`, the encoding, three reserved bytes, the cached cardinality
//! little endian with its top bit set when stale), then 16384 registers of 6 bits, either
//! dense (12288 bytes, least significant bits first) or sparse (ZERO, XZERO and VAL
//! opcodes). Elements are hashed with MurmurHash64A, seed `0xadc83b19`; the low 14 bits
//! pick the register, the run of zeros above them (plus one) is its value. A sparse value
//! becomes dense when a register needs more than 32 or when it would grow past
//! `hll-sparse-max-bytes` (3000, Redis's default). The count is Ertl's improved estimator.
//!
//! A string may claim to be a HyperLogLog and be corrupt (anyone can `SET` one): nothing
//! here panics on any bytes; a corrupt value is reported as [`Corrupt`].

/// The header's size.
const HDR: usize = 16;
/// Registers in every HyperLogLog.
pub const REGISTERS: usize = 1 << P;
/// Bits of the hash that pick the register.
const P: u32 = 14;
/// Bits of the hash left for the run of zeros.
const Q: usize = 64 - P as usize;
/// A dense value's size: the header and 16384 six-bit registers.
pub const DENSE_SIZE: usize = HDR + REGISTERS * 6 / 8;
const DENSE: u8 = 0;
const SPARSE: u8 = 1;
/// The largest value a sparse VAL opcode holds, and the most registers it covers.
const VAL_MAX_VALUE: u8 = 32;
const VAL_MAX_LEN: usize = 4;
/// The most registers a one-byte ZERO opcode covers.
const ZERO_MAX_LEN: usize = 64;
/// Redis's default `hll-sparse-max-bytes`: past it a value becomes dense.
pub const SPARSE_MAX_BYTES: usize = 3000;
/// 0.5 / ln(2), the estimator's constant for an unbounded number of registers.
const ALPHA_INF: f64 = 0.721_347_520_444_481_7;

/// A value that claims to be a HyperLogLog but whose registers do not add up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

/// MurmurHash2, 64-bit version (MurmurHash64A), reading the input little endian as Redis
/// does on every architecture.
pub fn murmur64a(key: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let mut h = seed ^ (key.len() as u64).wrapping_mul(M);
    let mut chunks = key.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let mut k = u64::from_le_bytes(word);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= u64::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// The register `element` falls in and the value it offers that register.
fn register_of(element: &[u8]) -> (usize, u8) {
    let hash = murmur64a(element, 0xadc8_3b19);
    let index = (hash as usize) & (REGISTERS - 1);
    // The bit past the last one used makes the run end by Q + 1 at the latest.
    let rest = (hash >> P) | (1u64 << Q);
    (index, rest.trailing_zeros() as u8 + 1)
}

/// A new, empty HyperLogLog: sparse, one XZERO opcode covering every register.
pub fn empty() -> Vec<u8> {
    let mut v = header(SPARSE);
    v.extend_from_slice(&xzero(REGISTERS));
    v
}

fn header(encoding: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(HDR + 2);
    v.extend_from_slice(b"HYLL");
    v.push(encoding);
    v.extend_from_slice(&[0; 11]);
    v
}

/// Whether a string is a HyperLogLog as Redis checks it: long enough, the magic, a known
/// encoding, and the exact size when dense. (The registers are checked when read.)
pub fn is_hll(v: &[u8]) -> bool {
    v.len() >= HDR
        && v.starts_with(b"HYLL")
        && v[4] <= SPARSE
        && (v[4] != DENSE || v.len() == DENSE_SIZE)
}

/// Adds one element; true when a register grew (the estimate may have changed).
pub fn add(v: &mut Vec<u8>, element: &[u8]) -> Result<bool, Corrupt> {
    let (index, count) = register_of(element);
    set(v, index, count)
}

/// Raises register `index` to `count` if it is lower, in whichever encoding `v` has.
fn set(v: &mut Vec<u8>, index: usize, count: u8) -> Result<bool, Corrupt> {
    if v.len() < HDR {
        return Err(Corrupt);
    }
    match v.get(4) {
        Some(&DENSE) => Ok(dense_raise(&mut v[HDR..], index, count)),
        Some(&SPARSE) => sparse_set(v, index, count),
        _ => Err(Corrupt),
    }
}

/// Marks the cached cardinality stale.
pub fn invalidate(v: &mut [u8]) {
    if let Some(b) = v.get_mut(15) {
        *b |= 0x80;
    }
}

/// The cached cardinality, if it is valid.
pub fn cached(v: &[u8]) -> Option<u64> {
    let card: [u8; 8] = v.get(8..16)?.try_into().ok()?;
    (card[7] & 0x80 == 0).then(|| u64::from_le_bytes(card))
}

/// Stores `card` as the cached cardinality.
pub fn cache(v: &mut [u8], card: u64) {
    if let Some(slot) = v.get_mut(8..16) {
        slot.copy_from_slice(&card.to_le_bytes());
    }
}

// === Dense registers ===

fn dense_get(regs: &[u8], i: usize) -> u8 {
    let byte = i * 6 / 8;
    let fb = (i * 6) & 7;
    let b0 = u32::from(regs.get(byte).copied().unwrap_or(0));
    let b1 = u32::from(regs.get(byte + 1).copied().unwrap_or(0));
    (((b0 >> fb) | (b1 << (8 - fb))) & 63) as u8
}

fn dense_put(regs: &mut [u8], i: usize, val: u8) {
    let byte = i * 6 / 8;
    let fb = (i * 6) & 7;
    let v = u32::from(val);
    if let Some(b) = regs.get_mut(byte) {
        *b &= !((63u32 << fb) as u8);
        *b |= (v << fb) as u8;
    }
    if let Some(b) = regs.get_mut(byte + 1) {
        *b &= !((63u32 >> (8 - fb)) as u8);
        *b |= (v >> (8 - fb)) as u8;
    }
}

fn dense_raise(regs: &mut [u8], i: usize, count: u8) -> bool {
    if count > dense_get(regs, i) {
        dense_put(regs, i, count);
        true
    } else {
        false
    }
}

// === Sparse opcodes ===

#[derive(Clone, Copy)]
enum Op {
    /// `00xxxxxx`: 1..=64 zero registers.
    Zero(usize),
    /// `01xxxxxx yyyyyyyy`: 1..=16384 zero registers.
    XZero(usize),
    /// `1vvvvvxx`: 1..=4 registers of value 1..=32.
    Val(u8, usize),
}

impl Op {
    /// The opcode at `p` (a byte past the end reads as 0, as Redis's string terminator).
    fn at(v: &[u8], p: usize) -> Op {
        let b = v.get(p).copied().unwrap_or(0);
        match b & 0xc0 {
            0 => Op::Zero(usize::from(b & 0x3f) + 1),
            0x40 => {
                let low = usize::from(v.get(p + 1).copied().unwrap_or(0));
                Op::XZero(((usize::from(b & 0x3f) << 8) | low) + 1)
            }
            _ => Op::Val(((b >> 2) & 0x1f) + 1, usize::from(b & 3) + 1),
        }
    }

    fn span(self) -> usize {
        match self {
            Op::Zero(n) | Op::XZero(n) | Op::Val(_, n) => n,
        }
    }

    fn bytes(self) -> usize {
        match self {
            Op::XZero(_) => 2,
            _ => 1,
        }
    }
}

fn val(value: u8, len: usize) -> u8 {
    0x80 | ((value - 1) << 2) | (len as u8 - 1)
}

fn xzero(len: usize) -> [u8; 2] {
    let l = len - 1;
    [0x40 | (l >> 8) as u8, (l & 0xff) as u8]
}

/// A run of `len` zero registers: ZERO when it fits, else XZERO.
fn zeros(out: &mut Vec<u8>, len: usize) {
    if len > ZERO_MAX_LEN {
        out.extend_from_slice(&xzero(len));
    } else {
        out.push((len - 1) as u8);
    }
}

/// Calls `f(first register, opcode)` for each opcode of a sparse value; the registers the
/// opcodes cover in all.
fn walk(v: &[u8], mut f: impl FnMut(usize, Op) -> bool) -> usize {
    let (mut p, mut idx) = (HDR, 0);
    while p < v.len() {
        let op = Op::at(v, p);
        if !f(idx, op) {
            break;
        }
        idx += op.span();
        p += op.bytes();
    }
    idx
}

/// Rewrites a sparse value as dense (as `hllSparseToDense`: the header, cached
/// cardinality included, is kept).
fn to_dense(v: &mut Vec<u8>) -> Result<(), Corrupt> {
    if v.get(4) == Some(&DENSE) {
        return Ok(());
    }
    let header = v.get(..HDR).ok_or(Corrupt)?;
    let mut dense = vec![0u8; DENSE_SIZE];
    dense[..HDR].copy_from_slice(header);
    dense[4] = DENSE;
    let regs = &mut dense[HDR..];
    let idx = walk(v, |first, op| match op {
        Op::Val(_, len) if first + len > REGISTERS => false,
        Op::Val(value, len) => {
            (first..first + len).for_each(|i| dense_put(regs, i, value));
            true
        }
        _ => true,
    });
    if idx != REGISTERS {
        return Err(Corrupt);
    }
    *v = dense;
    Ok(())
}

/// `hllSparseSet`: raises one register of a sparse value, splitting the opcode that
/// covers it, merging equal neighbours, and turning the value dense when it must.
fn sparse_set(v: &mut Vec<u8>, index: usize, count: u8) -> Result<bool, Corrupt> {
    if count > VAL_MAX_VALUE {
        return promote(v, index, count);
    }
    // Find the opcode that covers `index`.
    let (mut p, mut first, mut prev) = (HDR, 0usize, None);
    let mut op = None;
    while p < v.len() {
        let here = Op::at(v, p);
        op = Some(here);
        if index < first + here.span() {
            break;
        }
        prev = Some(p);
        p += here.bytes();
        first += here.span();
    }
    let Some(op) = op.filter(|_| p < v.len()) else {
        return Err(Corrupt);
    };
    let last = first + op.span() - 1;
    match op {
        Op::Val(old, _) if old >= count => return Ok(false),
        Op::Val(_, 1) | Op::Zero(1) => {
            v[p] = val(count, 1);
        }
        _ => {
            let mut seq = Vec::with_capacity(5);
            match op {
                Op::Val(old, _) => {
                    if index != first {
                        seq.push(val(old, index - first));
                    }
                    seq.push(val(count, 1));
                    if index != last {
                        seq.push(val(old, last - index));
                    }
                }
                _ => {
                    if index != first {
                        zeros(&mut seq, index - first);
                    }
                    seq.push(val(count, 1));
                    if index != last {
                        zeros(&mut seq, last - index);
                    }
                }
            }
            let old_len = op.bytes();
            if seq.len() > old_len && v.len() + seq.len() - old_len > SPARSE_MAX_BYTES {
                return promote(v, index, count);
            }
            let end = (p + old_len).min(v.len());
            v.splice(p..end, seq);
        }
    }
    // Merge adjacent VAL opcodes of one value, scanning at most five opcodes from the one
    // before the change.
    let mut p = prev.unwrap_or(HDR);
    let mut budget = 5;
    while p < v.len() && budget > 0 {
        budget -= 1;
        match Op::at(v, p) {
            Op::XZero(_) => p += 2,
            Op::Zero(_) => p += 1,
            Op::Val(v1, l1) => {
                if p + 1 < v.len() {
                    if let Op::Val(v2, l2) = Op::at(v, p + 1) {
                        if v1 == v2 && l1 + l2 <= VAL_MAX_LEN {
                            v[p + 1] = val(v1, l1 + l2);
                            v.remove(p);
                            continue;
                        }
                    }
                }
                p += 1;
            }
        }
    }
    invalidate(v);
    Ok(true)
}

fn promote(v: &mut Vec<u8>, index: usize, count: u8) -> Result<bool, Corrupt> {
    to_dense(v)?;
    dense_raise(v.get_mut(HDR..).ok_or(Corrupt)?, index, count);
    Ok(true)
}

// === Counting and merging ===

/// Raises `max[i]` to each register of `v` (`hllMerge`).
pub fn merge_into(max: &mut [u8; REGISTERS], v: &[u8]) -> Result<(), Corrupt> {
    if v.get(4) == Some(&DENSE) {
        let regs = v.get(HDR..).ok_or(Corrupt)?;
        for (i, m) in max.iter_mut().enumerate() {
            *m = (*m).max(dense_get(regs, i));
        }
        return Ok(());
    }
    let idx = walk(v, |first, op| match op {
        Op::Val(_, len) if first + len > REGISTERS => false,
        Op::Val(value, len) => {
            for m in &mut max[first..first + len] {
                *m = (*m).max(value);
            }
            true
        }
        _ => true,
    });
    if idx != REGISTERS {
        return Err(Corrupt);
    }
    Ok(())
}

/// The estimate for one HyperLogLog value.
pub fn count(v: &[u8]) -> Result<u64, Corrupt> {
    let mut histo = [0u64; 64];
    if v.get(4) == Some(&DENSE) {
        let regs = v.get(HDR..).ok_or(Corrupt)?;
        for i in 0..REGISTERS {
            histo[usize::from(dense_get(regs, i))] += 1;
        }
    } else {
        let idx = walk(v, |_, op| {
            match op {
                Op::Val(value, len) => histo[usize::from(value)] += len as u64,
                zero => histo[0] += zero.span() as u64,
            }
            true
        });
        if idx != REGISTERS {
            return Err(Corrupt);
        }
    }
    Ok(estimate(&histo))
}

/// The estimate for registers held one per byte (the union of several values).
pub fn count_registers(regs: &[u8; REGISTERS]) -> u64 {
    let mut histo = [0u64; 64];
    for &r in regs {
        histo[usize::from(r & 63)] += 1;
    }
    estimate(&histo)
}

/// Ertl's improved estimator over the registers' histogram, in Redis's order of
/// operations (so that the rounding, and therefore the answer, is the same).
fn estimate(histo: &[u64; 64]) -> u64 {
    let m = REGISTERS as f64;
    let mut z = m * tau((m - histo[Q + 1] as f64) / m);
    for j in (1..=Q).rev() {
        z += histo[j] as f64;
        z *= 0.5;
    }
    z += m * sigma(histo[0] as f64 / m);
    let e = (ALPHA_INF * m * m / z).round();
    if e.is_finite() {
        e as u64
    } else {
        // What the C conversion gives on x86-64 for a value it cannot hold.
        1u64 << 63
    }
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if before == z {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        let d = 1.0 - x;
        z -= d * d * y;
        if before == z {
            return z / 3.0;
        }
    }
}

/// Writes registers held one per byte into `v` (PFMERGE's destination), raising each one
/// that is not zero, in the encoding `v` has (it may turn dense on the way).
pub fn raise_all(v: &mut Vec<u8>, max: &[u8; REGISTERS]) -> Result<(), Corrupt> {
    for (i, &m) in max.iter().enumerate() {
        if m != 0 {
            set(v, i, m)?;
        }
    }
    invalidate(v);
    Ok(())
}

/// Makes `v` dense (PFMERGE does when any source is dense).
pub fn make_dense(v: &mut Vec<u8>) -> Result<(), Corrupt> {
    to_dense(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_hll_is_redis_s_eighteen_bytes() {
        let v = empty();
        assert_eq!(
            v,
            b"HYLL\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x7f\xff"
        );
        assert_eq!(count(&v), Ok(0));
    }

    #[test]
    fn registers_round_trip_in_the_dense_layout() {
        let mut regs = vec![0u8; DENSE_SIZE - HDR];
        for i in 0..REGISTERS {
            dense_put(&mut regs, i, (i % 64) as u8);
        }
        for i in 0..REGISTERS {
            assert_eq!(dense_get(&regs, i), (i % 64) as u8, "{i}");
        }
    }

    #[test]
    fn sparse_and_dense_count_alike() {
        let mut v = empty();
        for i in 0..500u32 {
            add(&mut v, i.to_string().as_bytes()).unwrap();
        }
        assert_eq!(v[4], SPARSE);
        let sparse = count(&v).unwrap();
        to_dense(&mut v).unwrap();
        assert_eq!(count(&v).unwrap(), sparse);
    }

    #[test]
    fn corrupt_values_are_reported_not_panicked_on() {
        for bad in [
            &b"HYLL\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"[..],
            b"HYLL\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x40",
            b"HYLL\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff",
        ] {
            let mut v = bad.to_vec();
            assert_eq!(count(&v), Err(Corrupt));
            let mut short = bad[..6].to_vec();
            short[4] = DENSE;
            assert_eq!(count(&short), Err(Corrupt));
            assert_eq!(add(&mut short, b"x"), Err(Corrupt));
            assert_eq!(make_dense(&mut bad[..6].to_vec()), Err(Corrupt));
            let _ = add(&mut v, b"x");
            let mut max = [0u8; REGISTERS];
            let _ = merge_into(&mut max, bad);
        }
    }
}
