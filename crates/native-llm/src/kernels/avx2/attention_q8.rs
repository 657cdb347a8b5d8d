//! Attention over a `Q8_0` KV cache (`kv_cache_dtype = "q8_0"`), read the way llama.cpp's
//! CPU attention reads one: each query quantized to [`BlockQ8`] once and multiplied against
//! the keys' blocks in 8-bit integers, each value block dequantized to f32 (exactly: an f16
//! scale times a byte) and added with FMA. Keys and values are read position by position, each
//! once for all the tile's queries; each query's result is one chain per output element over
//! its positions in order, so it does not depend on its tile-mates.

use std::arch::x86_64::*;

use super::activation::exp_shifted_sum_imp;
use super::float::axpy_imp;
use super::quant::{dot_q8_0, quantize_row_imp};
use super::simd::{f16, load_32, store_f32x8};
use crate::kernels::attention::Tile;
use crate::kernels::format::{BlockQ8, QK, WeightKind};

/// [`super::attend_many`] for a `Q8_0` tile (`head_dim`, `stride` and `offset` multiples of
/// 32).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn attend_q8_imp(tile: &Tile<'_>, scratch: &mut Vec<f32>, out: &mut [f32]) {
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
    let sees = |m: usize, j: usize| {
        let (f, n) = tile.spans[m];
        (f..f + n).contains(&j)
    };
    let mut qb = vec![BlockQ8::default(); m_count * nb];
    for (q, b) in tile.qs.iter().zip(qb.chunks_exact_mut(nb)) {
        quantize_row_imp(q, b);
    }
    for j in lo..hi {
        let key = &tile.keys[at(j)..][..rb];
        for (m, q) in qb.chunks_exact(nb).enumerate() {
            if sees(m, j) {
                scratch[m * width + j - lo] = dot_q8_0(key, q) * tile.scale;
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
    out[..m_count * hd].fill(0.0);
    let mut value = vec![0f32; hd];
    for j in lo..hi {
        dequantize_q8_0(&tile.values[at(j)..][..rb], &mut value);
        for m in (0..m_count).filter(|&m| sees(m, j)) {
            let w = scratch[m * width + j - lo] * inv[m];
            axpy_imp(&mut out[m * hd..(m + 1) * hd], w, &value);
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
