//! `Q5_0` and `Q5_1` rows repacked at load into groups of [`Q5_GROUP`] rows for the AVX-512
//! VNNI kernel (`avx512::q5group`): the layout and the way back (embedding lookups, tests).
//!
//! Why: the 8-row groups (`layout::interleave`) put two 4-column pieces of 8 rows in one
//! 512-bit register, so every token's activation quads must be moved under them by a
//! `vpermd` (4 per block and token) and the two halves added at the end of each block; with
//! 16 rows one piece fills the register, each lane is one row, and one `vpdpbusd` whose
//! activation quad is broadcast straight from memory forms 4 products for each of the 16
//! rows: no shuffle per token and no halves to add. The fifth bits of the quants are stored
//! as the byte masks the kernel applies (bit `4r + b` of mask `c` set when byte `b` of row
//! `r`'s quad `c` has it), so a masked byte add restores them without any unpacking. A group
//! is exactly as large as its 16 rows.
//!
//! Block `i` of a group (`16 × block_bytes` bytes; row `r` in `0..16`, quad `c` in `0..8` =
//! columns `4c..4c + 4`):
//! - `2r`: the row's f16 `d`; `Q5_1`: then `32 + 2r`: its f16 `m`;
//! - `HI + 8c` (`HI` = 32, `Q5_1` 64): a little-endian u64, bit `4r + b` the fifth bit of the
//!   quant in column `4c + b` of row `r` (bit `4c + b` of the row's `qh`);
//! - `HI + 64 + 64k + 4r + b`, `k` in `0..4`: byte `4k + b` of the row's nibbles (`qs`): as
//!   low nibble column `4k + b`, as high nibble column `16 + 4k + b`.
//!
//! Results equal the 8-row kernels' bit for bit: the same exact integer sums per block and
//! the same float operations per row.

use super::format::{QK, WeightKind};

/// Rows per `Q5_0`/`Q5_1` group on CPUs with AVX-512 VNNI.
pub const Q5_GROUP: usize = 16;

/// Where the fifth-bit masks of a block start (after the scales, and `Q5_1` minimums).
pub(crate) fn hi_at(kind: WeightKind) -> usize {
    if kind.has_min() { 64 } else { 32 }
}

/// Repacks 16 consecutive rows (`src`, row-major, file layout) into `out` (as long).
pub fn interleave(kind: WeightKind, src: &[u8], cols: usize, out: &mut [u8]) {
    let (bb, head) = (kind.block_bytes(), kind.head_bytes());
    let rb = cols / QK * bb;
    let hi = hi_at(kind);
    for (i, o) in out.chunks_exact_mut(Q5_GROUP * bb).enumerate() {
        let mut masks = [0u64; 8];
        for r in 0..Q5_GROUP {
            let b = &src[r * rb + i * bb..r * rb + (i + 1) * bb];
            o[2 * r..2 * r + 2].copy_from_slice(&b[..2]);
            if kind.has_min() {
                o[32 + 2 * r..32 + 2 * r + 2].copy_from_slice(&b[2..4]);
            }
            let qh = u32::from_le_bytes(b[head..head + 4].try_into().expect("4 bytes of qh"));
            for (c, m) in masks.iter_mut().enumerate() {
                *m |= u64::from((qh >> (4 * c)) & 0xF) << (4 * r);
            }
            for k in 0..4 {
                let at = hi + 64 + 64 * k + 4 * r;
                o[at..at + 4].copy_from_slice(&b[head + 4 + 4 * k..head + 8 + 4 * k]);
            }
        }
        for (c, m) in masks.iter().enumerate() {
            o[hi + 8 * c..hi + 8 * c + 8].copy_from_slice(&m.to_le_bytes());
        }
    }
}

/// Row `r` of a group, back in the file layout.
pub fn deinterleave_row(kind: WeightKind, group: &[u8], r: usize, cols: usize) -> Vec<u8> {
    let bb = kind.block_bytes();
    let hi = hi_at(kind);
    let mut out = Vec::with_capacity(cols / QK * bb);
    for g in group.chunks_exact(Q5_GROUP * bb).take(cols / QK) {
        out.extend_from_slice(&g[2 * r..2 * r + 2]);
        if kind.has_min() {
            out.extend_from_slice(&g[32 + 2 * r..32 + 2 * r + 2]);
        }
        let qh = (0..8).fold(0u32, |qh, c| {
            let m = u64::from_le_bytes(g[hi + 8 * c..hi + 8 * c + 8].try_into().expect("mask"));
            qh | (((m >> (4 * r)) & 0xF) as u32) << (4 * c)
        });
        out.extend_from_slice(&qh.to_le_bytes());
        for k in 0..4 {
            let at = hi + 64 + 64 * k + 4 * r;
            out.extend_from_slice(&g[at..at + 4]);
        }
    }
    out
}
