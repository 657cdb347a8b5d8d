//! `Q4_K` rows repacked at load into groups of [`K_GROUP`] rows for the AVX-512 VNNI group
//! kernel (the idea of llama.cpp's `q4_K_8x8` repack, with a layout of our own): the
//! layout, the way back (embedding lookups), and the portable body of the group product,
//! which equals the row kernels' portable body bit for bit.
//!
//! Why: a `Q4_K` row kernel unpacks the 12 bytes of 6-bit scales and minimums, converts two
//! f16s and reduces its lanes to one float for every row, ~60 instructions per super-block
//! and token; the rows of Qwen2.5-1.5B are 6 super-blocks long, so the per-row work shows
//! too. In a group the scales are stored unpacked as bytes, the 16 rows' f16 factors side by
//! side (one conversion for all 16), and the quants 4 bytes per row side by side, so one
//! `vpdpbusd` with a broadcast activation quad forms 4 products for each of the 16 rows in
//! their own lanes: no horizontal sum, and the 16 results come out as one vector. The group
//! is 2.8% larger than the 16 rows it holds (2368 bytes per super-block against 2304).
//!
//! Layout of super-block `i` of a group (`K_GROUP_BLOCK` bytes; row `r` in `0..16`):
//! - `D` + 2r: the row's f16 `d`; `DMIN` + 2r: its f16 `dmin` (as in the file);
//! - `SC` + 16j + r: the 6-bit scale of sub-block `j` (`0..8`), one byte;
//! - `MINS` + 32p + 2r + e: the minimum of sub-block `2p + e`, one byte (pairs, so one
//!   widening load gives each row's two minimums in its 32-bit lane);
//! - `QS` + ((4j + k) · 16 + r) · 4 + b: quant `32j + 4k + b` (low nibble) and quant
//!   `32j + 16 + 4k + b` (high nibble) of the row, for sub-block `j`, `k` and `b` in `0..4`.

use super::format::{BlockQ8K, QK_K, WeightKind, f16_at};
use super::kquants::{Unpacked, scales_mins};

/// Rows per `Q4_K` group.
pub const K_GROUP: usize = 16;

/// Offsets of the parts of a group super-block (see the module docs).
pub(crate) mod at {
    use super::K_GROUP;
    pub(crate) const D: usize = 0;
    pub(crate) const DMIN: usize = D + 2 * K_GROUP;
    pub(crate) const SC: usize = DMIN + 2 * K_GROUP;
    pub(crate) const MINS: usize = SC + 8 * K_GROUP;
    pub(crate) const QS: usize = MINS + 8 * K_GROUP;
}
use at::{D, DMIN, MINS, QS, SC};

/// Bytes of one super-block of a group.
pub const K_GROUP_BLOCK: usize = QS + K_GROUP * QK_K / 2;

/// Bytes of one group of `cols`-wide rows.
pub fn group_bytes(cols: usize) -> usize {
    cols / QK_K * K_GROUP_BLOCK
}

/// Repacks [`K_GROUP`] consecutive `Q4_K` rows (`src`, row-major, `cols` wide) into one
/// group (`out`, [`group_bytes`] long).
pub fn interleave_q4k(src: &[u8], cols: usize, out: &mut [u8]) {
    let rb = WeightKind::Q4_K.row_bytes(cols);
    let mut u = Unpacked::new();
    for r in 0..K_GROUP {
        let row = &src[r * rb..(r + 1) * rb];
        for (b, o) in row
            .chunks_exact(WeightKind::Q4_K.block_bytes())
            .zip(out.chunks_exact_mut(K_GROUP_BLOCK))
        {
            o[D + 2 * r..D + 2 * r + 2].copy_from_slice(&b[0..2]);
            o[DMIN + 2 * r..DMIN + 2 * r + 2].copy_from_slice(&b[2..4]);
            let (sc, m) = scales_mins(&b[4..16]);
            for j in 0..8 {
                o[SC + K_GROUP * j + r] = sc[j];
                o[MINS + 2 * K_GROUP * (j / 2) + 2 * r + j % 2] = m[j];
            }
            u.load(WeightKind::Q4_K, b);
            for j in 0..8 {
                for k in 0..4 {
                    for e in 0..4 {
                        let lo = u.q[32 * j + 4 * k + e] as u8;
                        let hi = u.q[32 * j + 16 + 4 * k + e] as u8;
                        o[quant_at(j, k, r, e)] = lo | (hi << 4);
                    }
                }
            }
        }
    }
}

/// Where the byte holding quants `32j + 4k + e` and `32j + 16 + 4k + e` of row `r` sits.
fn quant_at(j: usize, k: usize, r: usize, e: usize) -> usize {
    QS + ((4 * j + k) * K_GROUP + r) * 4 + e
}

/// Row `r`'s super-block in group super-block `b`, unpacked as the row kernels unpack it.
fn unpack(b: &[u8], r: usize, u: &mut Unpacked) {
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
pub fn dequantize_row(group: &[u8], r: usize, out: &mut [f32]) {
    let mut u = Unpacked::new();
    let mut full = [0f32; QK_K];
    for (b, o) in group.chunks_exact(K_GROUP_BLOCK).zip(out.chunks_mut(QK_K)) {
        unpack(b, r, &mut u);
        u.dequantize(WeightKind::Q4_K, &mut full);
        o.copy_from_slice(&full[..o.len()]);
    }
}

/// The portable body of the group product: `out[t][r] = row r · acts[t]`, each equal bit for
/// bit to the row kernels' portable body on the row in its file layout.
pub(crate) fn dot_group_body(group: &[u8], acts: &[&[BlockQ8K]], out: &mut [[f32; K_GROUP]]) {
    let mut u = Unpacked::new();
    for o in out[..acts.len()].iter_mut() {
        o.fill(0.0);
    }
    for (i, b) in group.chunks_exact(K_GROUP_BLOCK).enumerate() {
        for r in 0..K_GROUP {
            unpack(b, r, &mut u);
            for (o, a) in out.iter_mut().zip(acts) {
                o[r] += u.dot(WeightKind::Q4_K, &a[i]);
            }
        }
    }
}

const _: () = assert!(K_GROUP_BLOCK == 2368);
