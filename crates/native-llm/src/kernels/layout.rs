//! The interleaved layout of weight groups the multi-row kernels read: rows repacked at load
//! so that a group of rows is one sequential stream ([`interleave`]), and the way back
//! ([`deinterleave_row`]).

use super::format::ActFormat;
use super::format::{F_GROUP, F_PIECE, GROUP, QK, WeightKind};

/// Bytes one interleaved group of 8 rows takes per 32-column block.
pub fn group_block_bytes(kind: WeightKind) -> usize {
    kind.block_bytes() * GROUP
}

/// Repacks the rows of one group (`kind.group_rows(cols)` consecutive rows, row-major) so
/// the multi-row kernels read it as one sequential stream and produce the group's outputs
/// together:
/// - quantized (8 rows): block by block, the 8 scales (and `Q4_1`/`Q5_1` minimums) first,
///   then the 8 rows' quants, `[d; 8] [m; 8]? [qs; 8]` (laid out as [`quant_at`] says). One
///   SIMD load then converts all 8 scales, and the kernel produces 8 outputs with no per-row
///   horizontal sum. `Q5_0`/`Q5_1` quants are the 4 bytes of `qh` then the 16 of nibbles, so
///   the first 32 quant bytes are the 8 rows' `qh`, one row per 32-bit lane, and the
///   nibbles follow in `Q4_0`'s pieces.
/// - float (4 rows): pieces of [`F_PIECE`] columns, piece `k` of rows 0..4 side by side
///   (`[r0 k] [r1 k] [r2 k] [r3 k] [r0 k+1] …`). A single token's decode step then runs four
///   independent accumulator chains over one forward stream (four separate row streams
///   defeat the hardware prefetcher), each row still summed in its own column order.
pub fn interleave(kind: WeightKind, src: &[u8], cols: usize) -> Vec<u8> {
    let mut out = vec![0u8; src.len()];
    interleave_into(kind, src, cols, &mut out);
    out
}

/// [`interleave`] into `out` (as long as `src`, one group).
pub fn interleave_into(kind: WeightKind, src: &[u8], cols: usize, out: &mut [u8]) {
    // Block sizes as constants, so each piece is a fixed-size move rather than a `memmove`
    // call (this runs over every quantized weight at load).
    match kind {
        WeightKind::Q4_0 => interleave8_fixed::<2, 16, 18>(src, cols, out),
        WeightKind::Q4_1 => interleave8_fixed::<4, 16, 20>(src, cols, out),
        WeightKind::Q5_0 => interleave8_fixed::<2, 20, 22>(src, cols, out),
        WeightKind::Q5_1 => interleave8_fixed::<4, 20, 24>(src, cols, out),
        WeightKind::Q8_0 => interleave8_fixed::<2, 32, 34>(src, cols, out),
        WeightKind::F32 => interleave_f4::<32>(src, cols, out),
        WeightKind::F16 | WeightKind::BF16 => interleave_f4::<16>(src, cols, out),
        _ => unreachable!("{kind:?} is not interleaved"),
    }
}

/// Where piece `k` (columns `8k..8k + 8`, `pb` bytes) of row `r` starts in an interleaved
/// float group.
fn f_piece_at(pb: usize, r: usize, k: usize) -> usize {
    (k * F_GROUP + r) * pb
}

/// [`interleave_into`] for 4 float rows, pieces of `PB` bytes (8 values).
fn interleave_f4<const PB: usize>(src: &[u8], cols: usize, out: &mut [u8]) {
    let rb = cols / F_PIECE * PB;
    for r in 0..F_GROUP {
        for (k, piece) in src[r * rb..(r + 1) * rb].chunks_exact(PB).enumerate() {
            let at = f_piece_at(PB, r, k);
            out[at..at + PB].copy_from_slice(piece);
        }
    }
}

/// [`interleave_into`] for 8 quantized rows, blocks of `BB` bytes: `HEAD` bytes of f16
/// scale (and minimum), then `QB` bytes of quants.
///
/// Each block is taken as a fixed-size array and each output piece written in order, so the
/// moves are register copies without bounds checks (this runs over every quantized weight
/// at load, and a byte-wise version was a third of a Q8_0 file's load time).
fn interleave8_fixed<const HEAD: usize, const QB: usize, const BB: usize>(
    src: &[u8],
    cols: usize,
    out: &mut [u8],
) {
    const { assert!(HEAD + QB == BB && QB.is_multiple_of(4)) };
    let rb = cols / QK * BB;
    let rows: [&[u8]; GROUP] = std::array::from_fn(|r| &src[r * rb..(r + 1) * rb]);
    for (i, o) in out.chunks_exact_mut(GROUP * BB).enumerate() {
        let blocks: [&[u8; BB]; GROUP] = std::array::from_fn(|r| {
            rows[r][i * BB..(i + 1) * BB]
                .try_into()
                .expect("one block per row")
        });
        let (heads, quants) = o.split_at_mut(GROUP * HEAD);
        for (r, b) in blocks.iter().enumerate() {
            // Scales of the 8 rows first, then (Q4_1) their minimums.
            heads[r * 2..r * 2 + 2].copy_from_slice(&b[..2]);
            if HEAD == 4 {
                heads[16 + r * 2..16 + r * 2 + 2].copy_from_slice(&b[2..4]);
            }
        }
        // 4-byte pieces, piece k of the 8 rows side by side (see `quant_at`).
        for (k, piece) in quants.chunks_exact_mut(GROUP * 4).enumerate() {
            for (dst, b) in piece.chunks_exact_mut(4).zip(&blocks) {
                dst.copy_from_slice(&b[HEAD + k * 4..HEAD + k * 4 + 4]);
            }
        }
        if QB == QK {
            // Q8_0: -128 (which llama.cpp's quantizers never write) becomes -127, so the
            // 8-row kernel can take any weight's absolute value within a byte.
            quants
                .iter_mut()
                .for_each(|v| *v = (*v as i8).max(-127) as u8);
        }
    }
}

/// Rebuilds row `j` of an interleaved group (see [`interleave`]) in its GGUF layout
/// (embedding lookups).
pub fn deinterleave_row(kind: WeightKind, group: &[u8], j: usize, cols: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(kind.row_bytes(cols));
    if kind.act_format() == ActFormat::F32 {
        let pb = kind.row_bytes(F_PIECE);
        for k in 0..cols / F_PIECE {
            let at = f_piece_at(pb, j, k);
            out.extend_from_slice(&group[at..at + pb]);
        }
        return out;
    }
    let bb = kind.block_bytes();
    let gb = group_block_bytes(kind);
    let head = kind.head_bytes();
    let qb = bb - head;
    for i in 0..cols / QK {
        let g = &group[i * gb..(i + 1) * gb];
        out.extend_from_slice(&g[j * 2..j * 2 + 2]);
        if kind.has_min() {
            out.extend_from_slice(&g[16 + j * 2..16 + j * 2 + 2]);
        }
        let quants = &g[head * GROUP..];
        out.extend((0..qb).map(|b| quants[quant_at(j, b)]));
    }
    out
}

/// Where byte `b` of row `r`'s quants sits among an interleaved group block's quants: in
/// 4-byte pieces, piece `k` of rows 0..8 side by side (`[r0 k0] [r1 k0] … [r7 k0] [r0 k1] …`),
/// so one 32-byte load holds the same columns of all 8 rows (`Q8_0`: 4 columns; `Q4_0`/`Q4_1`:
/// 8, as 4 low nibbles and 4 high; `Q5_0`/`Q5_1`: piece 0 is the rows' `qh`, pieces 1..5 the
/// nibbles as `Q4_0`'s 0..4) and one broadcast activation quad multiplies them into 8
/// row sums without a horizontal add.
pub fn quant_at(r: usize, b: usize) -> usize {
    (b / 4 * GROUP + r) * 4 + b % 4
}
