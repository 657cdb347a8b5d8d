//! Attention over a `Q8_0` KV cache (`kv_cache_dtype = "q8_0"`), read the way llama.cpp's
//! CPU attention reads one: each query quantized to [`BlockQ8`] once and multiplied against
//! the keys' blocks in 8-bit integers, each value block dequantized to f32 (exactly: an f16
//! scale times a byte) and added with FMA. As in `attention`, keys and values are read in
//! blocks of [`ATTN_BLOCK`] positions shared by all the tile's queries (values dequantized
//! once per block for all of them), scores four positions at a time, and each output element
//! is one FMA chain over the positions in order, so a query's result does not depend on its
//! tile-mates.

use std::arch::x86_64::*;

use super::activation::exp_shifted_sum_imp;
use super::attention::{reduce_pairs, store_scores};
use super::quant::{dot_u8_i8, quantize_row_imp};
use super::simd::{f16, load_32, load_f32x8, load_q8, store_f32x8};
use crate::kernels::attention::Tile;
use crate::kernels::format::{BlockQ8, QK, WeightKind};

/// Positions per block.
const ATTN_BLOCK: usize = 16;

/// `kernels::attend_many` for a `Q8_0` tile (`head_dim`, `stride` and `offset` multiples of
/// 32).
pub fn attend_q8(tile: &Tile<'_>, scratch: &mut Vec<f32>, out: &mut [f32]) {
    debug_assert!(super::available());
    // SAFETY: as in `quant::dot_q`: reached only after `available()`.
    unsafe { attend_q8_imp(tile, scratch, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn attend_q8_imp(tile: &Tile<'_>, scratch: &mut Vec<f32>, out: &mut [f32]) {
    let hd = tile.qs.first().map_or(0, |q| q.len());
    debug_assert!(hd.is_multiple_of(QK) && tile.offset.is_multiple_of(QK));
    let kind = WeightKind::Q8_0;
    let (nb, rb) = (hd / QK, kind.row_bytes(hd));
    let m_count = tile.qs.len();
    let lo = tile.spans.iter().map(|s| s.0).min().unwrap_or(0);
    let hi = tile.spans.iter().map(|s| s.0 + s.1).max().unwrap_or(0);
    let width = hi - lo;
    scratch.clear();
    scratch.resize(m_count * width, 0.0);
    let at = |j: usize| kind.row_bytes(j * tile.stride + tile.offset);
    let key = |j: usize| &tile.keys[at(j)..][..rb];
    let visible = |m: usize, b0: usize, b1: usize| {
        let (f, n) = tile.spans[m];
        (b0.max(f), b1.min(f + n))
    };
    let mut qb = vec![BlockQ8::default(); m_count * nb];
    for (q, b) in tile.qs.iter().zip(qb.chunks_exact_mut(nb)) {
        quantize_row_imp(q, b);
    }
    // Scores: per key block, one FMA chain over the head's blocks, reduced as `attention`
    // reduces them (four positions at a time, the same order for one alone).
    let block_dot = |acc: __m256, kr: &[u8], a: &BlockQ8, x: __m256i| {
        let w = load_32(kr[2..34].try_into().expect("34-byte block"));
        let p = dot_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
        _mm256_fmadd_ps(_mm256_set1_ps(f16(kr[0], kr[1]) * a.d), p, acc)
    };
    for b0 in (lo..hi).step_by(ATTN_BLOCK) {
        let b1 = (b0 + ATTN_BLOCK).min(hi);
        for (m, q) in qb.chunks_exact(nb).enumerate() {
            let (s, e) = visible(m, b0, b1);
            let row = &mut scratch[m * width..(m + 1) * width];
            let mut j = s;
            while j + 4 <= e {
                let k = [key(j), key(j + 1), key(j + 2), key(j + 3)];
                let mut acc = [_mm256_setzero_ps(); 4];
                for (bi, a) in q.iter().enumerate() {
                    let x = load_q8(a);
                    for (c, kr) in acc.iter_mut().zip(&k) {
                        *c = block_dot(*c, &kr[bi * 34..bi * 34 + 34], a, x);
                    }
                }
                store_scores(acc, tile.scale, &mut row[j - lo..j - lo + 4]);
                j += 4;
            }
            while j < e {
                let kr = key(j);
                let mut acc = _mm256_setzero_ps();
                for (bi, a) in q.iter().enumerate() {
                    acc = block_dot(acc, &kr[bi * 34..bi * 34 + 34], a, load_q8(a));
                }
                row[j - lo] = reduce_pairs(acc) * tile.scale;
                j += 1;
            }
        }
    }
    // Softmax numerators and each query's 1 / sum.
    let inv: Vec<f32> = (0..m_count)
        .map(|m| {
            let (f, n) = tile.spans[m];
            let row = &mut scratch[m * width + f - lo..m * width + f - lo + n];
            let max = row.iter().fold(f32::NEG_INFINITY, |a, v| a.max(*v));
            1.0 / exp_shifted_sum_imp(row, max)
        })
        .collect();
    // Weighted values: each block's values dequantized once, then per query 64 output
    // elements at a time in registers, one FMA chain per element over the positions.
    out[..m_count * hd].fill(0.0);
    let mut vals = vec![0f32; ATTN_BLOCK * hd];
    for b0 in (lo..hi).step_by(ATTN_BLOCK) {
        let b1 = (b0 + ATTN_BLOCK).min(hi);
        for j in b0..b1 {
            dequantize_q8_0(
                &tile.values[at(j)..][..rb],
                &mut vals[(j - b0) * hd..][..hd],
            );
        }
        for m in 0..m_count {
            let (s, e) = visible(m, b0, b1);
            if s >= e {
                continue;
            }
            let w = &scratch[m * width..(m + 1) * width];
            let o = &mut out[m * hd..(m + 1) * hd];
            for c0 in (0..hd).step_by(64) {
                let lanes = (hd - c0).min(64) / 8;
                let mut acc = [_mm256_setzero_ps(); 8];
                for (k, a) in acc.iter_mut().enumerate().take(lanes) {
                    *a = load_f32x8(o[c0 + 8 * k..c0 + 8 * k + 8].try_into().expect("8 floats"));
                }
                for j in s..e {
                    let wv = _mm256_set1_ps(w[j - lo] * inv[m]);
                    let v = &vals[(j - b0) * hd + c0..];
                    for (k, a) in acc.iter_mut().enumerate().take(lanes) {
                        let x = load_f32x8(v[8 * k..8 * k + 8].try_into().expect("8 floats"));
                        *a = _mm256_fmadd_ps(wv, x, *a);
                    }
                }
                for (k, a) in acc.iter().enumerate().take(lanes) {
                    store_f32x8(&mut o[c0 + 8 * k..c0 + 8 * k + 8], *a);
                }
            }
        }
    }
}

/// `Q8_0` blocks (`row`) as f32 into `out` (`row.len() / 34 * 32` values).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn dequantize_q8_0(row: &[u8], out: &mut [f32]) {
    for (b, o) in row.chunks_exact(34).zip(out.chunks_exact_mut(QK)) {
        let d = _mm256_set1_ps(f16(b[0], b[1]));
        let q = load_32(b[2..34].try_into().expect("34-byte block"));
        let halves = [_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)];
        for (k, o8) in o.chunks_exact_mut(8).enumerate() {
            let h = halves[k / 2];
            let bytes = if k % 2 == 0 { h } else { _mm_srli_si128(h, 8) };
            let x = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
            store_f32x8(o8, _mm256_mul_ps(d, x));
        }
    }
}
