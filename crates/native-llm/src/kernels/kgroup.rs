//! K-quant rows (`Q4_K`, `Q6_K`) repacked at load into groups of [`K_GROUP`] rows for the
//! AVX-512 VNNI group kernels (the idea of llama.cpp's `q4_K_8x8` repack, with layouts of
//! our own): the layouts, the way back (embedding lookups), and the portable body of the
//! group product, which equals the row kernels' portable body bit for bit.
//!
//! Why: a K-quant row kernel unpacks the packed scales, converts the f16 factors and reduces
//! its lanes to one float for every row, ~60 instructions per super-block and token; the
//! rows of Qwen2.5-1.5B are 6 super-blocks long, so the per-row work shows too. In a group
//! the scales are stored unpacked as bytes, the 16 rows' f16 factors side by side (one
//! conversion for all 16), and the quants 4 per row side by side, so one `vpdpbusd` with a
//! broadcast activation quad forms 4 products for each of the 16 rows in their own lanes:
//! no horizontal sum, and the 16 results come out as one vector. A `Q4_K` group is 2.8%
//! larger than its 16 rows (2368 bytes per super-block against 2304), a `Q6_K` group 1%
//! (3392 against 3360: 32 bytes of padding keep its vectors on cache lines; a layout that
//! split every other super-block's loads across lines cost a third of the kernel's speed).
//!
//! `Q4_K`, super-block `i` of a group (`K4_BLOCK` bytes; row `r` in `0..16`):
//! - `D` + 2r: the row's f16 `d`; `DMIN` + 2r: its f16 `dmin` (as in the file);
//! - `SC` + 16j + r: the 6-bit scale of sub-block `j` (`0..8`), one byte;
//! - `MINS` + 32p + 2r + e: the minimum of sub-block `2p + e`, one byte (pairs, so one
//!   widening load gives each row's two minimums in its 32-bit lane);
//! - `QS` + ((4j + k) · 16 + r) · 4 + b: quant `32j + 4k + b` (low nibble) and quant
//!   `32j + 16 + 4k + b` (high nibble) of the row, for sub-block `j`, `k` and `b` in `0..4`.
//!
//! `Q6_K` (`K6_BLOCK` bytes; quants `q` in `0..64`, the value is `d · sc · (q - 32)`):
//! - `D` + 2r: the row's f16 `d`, then 32 bytes of padding;
//! - `SC` + 32p + 2r + e: the signed scale of 16-value sub-block `2p + e` (`p` in `0..8`);
//! - then per sub-block pair `p`, in one forward stream: `ql(p, k)` + 4r + b for `k` in
//!   `0..4`: the low 4 bits of quant `32p + 4k + b` (low nibble) and of quant
//!   `32p + 16 + 4k + b` (high nibble); `qh(s)` + 4r + b for `s` in `2p, 2p + 1`: the high 2
//!   bits of quant `16s + 4f + b` in bits `2f..2f + 2`, `f` in `0..4`.

use super::format::{BlockQ8K, QK_K, WeightKind, f16_at};
use super::kquants::{Unpacked, scales_mins};

/// Rows per K-quant group.
pub const K_GROUP: usize = 16;

/// Offsets of the parts of a `Q4_K` group super-block (see the module docs).
pub(crate) mod at {
    use super::K_GROUP;
    pub(crate) const D: usize = 0;
    pub(crate) const DMIN: usize = D + 2 * K_GROUP;
    pub(crate) const SC: usize = DMIN + 2 * K_GROUP;
    pub(crate) const MINS: usize = SC + 8 * K_GROUP;
    pub(crate) const QS: usize = MINS + 8 * K_GROUP;
}
use at::{D, DMIN, MINS, QS, SC};

/// Offsets of the parts of a `Q6_K` group super-block (see the module docs).
pub(crate) mod at6 {
    use super::K_GROUP;
    pub(crate) const D: usize = 0;
    /// After 32 bytes of padding, so that every 64-byte vector of a group is aligned.
    pub(crate) const SC: usize = D + 4 * K_GROUP;
    /// Where the quants of sub-block pair `p` start.
    const PAIR: usize = SC + 16 * K_GROUP;
    /// Bytes of the quants of a sub-block pair.
    pub(crate) const PAIR_BYTES: usize = 24 * K_GROUP;
    /// The 64 bytes of `ql` for step `k` of sub-block pair `p`.
    pub(crate) const fn ql(p: usize, k: usize) -> usize {
        PAIR + PAIR_BYTES * p + 4 * K_GROUP * k
    }
    /// The 64 bytes of `qh` for sub-block `s`.
    pub(crate) const fn qh(s: usize) -> usize {
        PAIR + PAIR_BYTES * (s / 2) + 16 * K_GROUP + 4 * K_GROUP * (s % 2)
    }
    /// Bytes of one super-block.
    pub(crate) const BLOCK: usize = PAIR + 8 * PAIR_BYTES;
}

/// Bytes of one super-block of a `Q4_K` group.
pub const K4_BLOCK: usize = QS + K_GROUP * QK_K / 2;
/// Bytes of one super-block of a `Q6_K` group.
pub const K6_BLOCK: usize = at6::BLOCK;

/// Bytes of one group super-block of `kind` (`Q4_K` or `Q6_K`).
pub fn block_bytes(kind: WeightKind) -> usize {
    match kind {
        WeightKind::Q4_K => K4_BLOCK,
        WeightKind::Q6_K => K6_BLOCK,
        _ => unreachable!("{kind:?} has no group layout"),
    }
}

/// Bytes of one group of `cols`-wide rows of `kind`.
pub fn group_bytes(kind: WeightKind, cols: usize) -> usize {
    cols / QK_K * block_bytes(kind)
}

/// Repacks [`K_GROUP`] consecutive rows of `kind` (`src`, row-major, `cols` wide) into one
/// group (`out`, [`group_bytes`] long).
pub fn interleave(kind: WeightKind, src: &[u8], cols: usize, out: &mut [u8]) {
    let rb = kind.row_bytes(cols);
    let pack = match kind {
        WeightKind::Q4_K => pack_q4k,
        _ => pack_q6k,
    };
    for r in 0..K_GROUP {
        let row = &src[r * rb..(r + 1) * rb];
        for (b, o) in row
            .chunks_exact(kind.block_bytes())
            .zip(out.chunks_exact_mut(block_bytes(kind)))
        {
            pack(b, r, o);
        }
    }
}

/// Row `r`'s `Q6_K` super-block `b` into group super-block `o`. In the file, quant `i`
/// (`n = i / 128`, chunk `c = i % 128 / 32`, `l = i % 32`) has its low 4 bits in the low
/// (`c < 2`) or high nibble of `ql[64n + 32 (c % 2) + l]` and its high 2 bits at bit `2c` of
/// `qh[32n + l]`; moved 4 bytes at a time (this runs over every weight at load).
fn pack_q6k(b: &[u8], r: usize, o: &mut [u8]) {
    o[at6::D + 2 * r..at6::D + 2 * r + 2].copy_from_slice(&b[208..210]);
    let (ql, qh) = (&b[..128], &b[128..192]);
    let word = |s: &[u8], i: usize| u32::from_le_bytes(s[i..i + 4].try_into().expect("4 bytes"));
    for s in 0..16 {
        o[at6::SC + 2 * K_GROUP * (s / 2) + 2 * r + s % 2] = b[192 + s];
        let (n, c, l) = (s / 8, s % 8 / 2, 16 * (s % 2));
        let v = (0..4).fold(0u32, |v, f| {
            v | ((word(qh, 32 * n + l + 4 * f) >> (2 * c)) & 0x0303_0303) << (2 * f)
        });
        let at = at6::qh(s) + 4 * r;
        o[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    for p in 0..8 {
        let (n, c) = (p / 4, p % 4);
        let base = 64 * n + 32 * (c % 2);
        for k in 0..4 {
            let v = nibble_pair(word(ql, base + 4 * k), word(ql, base + 16 + 4 * k), c >= 2);
            let at = at6::ql(p, k) + 4 * r;
            o[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// The low (or, `high`, the high) nibbles of the 4 bytes of `a` in the low nibbles and
/// those of `b` in the high nibbles.
fn nibble_pair(a: u32, b: u32, high: bool) -> u32 {
    const LOW: u32 = 0x0F0F_0F0F;
    if high {
        ((a >> 4) & LOW) | (b & !LOW)
    } else {
        (a & LOW) | ((b & LOW) << 4)
    }
}

/// Row `r`'s `Q6_K` super-block in group super-block `b`, unpacked as the row kernels
/// unpack it.
fn unpack_q6k(b: &[u8], r: usize, u: &mut Unpacked) {
    u.d = f16_at(b, at6::D + 2 * r);
    for s in 0..16 {
        u.sc[s] = b[at6::SC + 2 * K_GROUP * (s / 2) + 2 * r + s % 2] as i8 as i32;
        for f in 0..4 {
            for e in 0..4 {
                let i = 16 * s + 4 * f + e;
                let (p, k) = (i / 32, (i % 16) / 4);
                let l = b[at6::ql(p, k) + 4 * r + e];
                let lo = if i % 32 < 16 { l & 0x0F } else { l >> 4 };
                let hi = (b[at6::qh(s) + 4 * r + e] >> (2 * f)) & 3;
                u.q[i] = (lo | (hi << 4)) as i8 - 32;
            }
        }
    }
}

/// Row `r`'s `Q4_K` super-block `b` (unpacked in `u`) into group super-block `o`.
fn pack_q4k(b: &[u8], r: usize, o: &mut [u8]) {
    o[D + 2 * r..D + 2 * r + 2].copy_from_slice(&b[0..2]);
    o[DMIN + 2 * r..DMIN + 2 * r + 2].copy_from_slice(&b[2..4]);
    let (sc, m) = scales_mins(&b[4..16]);
    // In the file, bytes `32c..32c + 32` of `qs` hold quants `64c + l` (low nibble) and
    // `64c + 32 + l` (high nibble): sub-block `j` is the low (even `j`) or high (odd `j`)
    // nibbles of chunk `j / 2`. Moved 4 bytes at a time (this runs over every weight at load).
    let qs = &b[16..144];
    let word = |i: usize| u32::from_le_bytes(qs[i..i + 4].try_into().expect("4 bytes"));
    for j in 0..8 {
        o[SC + K_GROUP * j + r] = sc[j];
        o[MINS + 2 * K_GROUP * (j / 2) + 2 * r + j % 2] = m[j];
        let c = 32 * (j / 2);
        for k in 0..4 {
            let v = nibble_pair(word(c + 4 * k), word(c + 16 + 4 * k), j % 2 == 1);
            let at = quant_at(j, k, r, 0);
            o[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// The `L` bytes of a group super-block `b` at `i`, for the SIMD kernels' loads.
#[inline]
pub(crate) fn bytes_at<const L: usize>(b: &[u8], i: usize) -> &[u8; L] {
    b[i..i + L].try_into().expect("L bytes")
}

/// The activation's 32-value sums of sub-blocks `2p` and `2p + 1` as the 16-bit halves of a
/// 32-bit value (each fits 16 bits), for the SIMD kernels' `Q4_K` minimum terms.
#[inline]
pub(crate) fn sum32_pair(a: &BlockQ8K, p: usize) -> i32 {
    let s = |j: usize| (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32) as u16 as u32;
    (s(2 * p) | (s(2 * p + 1) << 16)) as i32
}

/// The activation's 16-value sums `2p` and `2p + 1` as the 16-bit halves of a 32-bit value,
/// for the SIMD kernels' `Q6_K` offset terms.
#[inline]
pub(crate) fn sum16_pair(a: &BlockQ8K, p: usize) -> i32 {
    (a.bsums[2 * p] as u16 as u32 | (a.bsums[2 * p + 1] as u16 as u32) << 16) as i32
}

/// Where the byte holding quants `32j + 4k + e` and `32j + 16 + 4k + e` of row `r` sits.
fn quant_at(j: usize, k: usize, r: usize, e: usize) -> usize {
    QS + ((4 * j + k) * K_GROUP + r) * 4 + e
}

/// Row `r`'s super-block in group super-block `b`, unpacked as the row kernels unpack it.
fn unpack(kind: WeightKind, b: &[u8], r: usize, u: &mut Unpacked) {
    if kind == WeightKind::Q6_K {
        return unpack_q6k(b, r, u);
    }
    u.d = f16_at(b, D + 2 * r);
    u.dmin = f16_at(b, DMIN + 2 * r);
    for j in 0..8 {
        u.sc[j] = b[SC + K_GROUP * j + r] as i32;
        u.m[j] = b[MINS + 2 * K_GROUP * (j / 2) + 2 * r + j % 2] as i32;
        for k in 0..4 {
            for e in 0..4 {
                let v = b[quant_at(j, k, r, e)];
                u.q[32 * j + 4 * k + e] = (v & 0x0F) as i8;
                u.q[32 * j + 16 + 4 * k + e] = (v >> 4) as i8;
            }
        }
    }
}

/// Row `r` of a group as f32 (`out.len()` values; embedding lookups), equal bit for bit to
/// dequantizing the row in its file layout.
pub fn dequantize_row(kind: WeightKind, group: &[u8], r: usize, out: &mut [f32]) {
    let mut u = Unpacked::new();
    let mut full = [0f32; QK_K];
    for (b, o) in group
        .chunks_exact(block_bytes(kind))
        .zip(out.chunks_mut(QK_K))
    {
        unpack(kind, b, r, &mut u);
        u.dequantize(kind, &mut full);
        o.copy_from_slice(&full[..o.len()]);
    }
}

/// The portable body of the group product: `out[t][r] = row r · acts[t]`, each equal bit for
/// bit to the row kernels' portable body on the row in its file layout.
pub(crate) fn dot_group_body(
    kind: WeightKind,
    group: &[u8],
    acts: &[&[BlockQ8K]],
    out: &mut [[f32; K_GROUP]],
) {
    let mut u = Unpacked::new();
    for o in out[..acts.len()].iter_mut() {
        o.fill(0.0);
    }
    for (i, b) in group.chunks_exact(block_bytes(kind)).enumerate() {
        for r in 0..K_GROUP {
            unpack(kind, b, r, &mut u);
            for (o, a) in out.iter_mut().zip(acts) {
                o[r] += u.dot(kind, &a[i]);
            }
        }
    }
}

const _: () = assert!(K4_BLOCK == 2368 && K6_BLOCK == 16 * 212);
