//! Attention over a [`Tile`] of queries that share a key/value head: keys and values read in
//! blocks shared by all the tile's queries.

use std::arch::x86_64::*;

use super::activation::exp_shifted_sum_imp;
use super::float::{axpy_imp, dot_f32_imp};
use super::simd::{BF16, F16, F32, load_f32x8, load_w8, store_f32x8};
use crate::kernels::attention::{Head, Tile};
use crate::kernels::format::WeightKind;

/// Several queries against one key/value head (see `kernels::attend_many`), in blocks of
/// [`ATTN_BLOCK`] positions: each block's keys and values are loaded into L1 once and serve
/// every query of the tile. Each score is one FMA chain per 8 dimensions reduced in a fixed
/// order (the same alone or four at a time), each output element one FMA chain over the
/// positions in order, so a query's result depends only on its own inputs, not on its
/// tile-mates or on the blocking.
pub fn attend_many(tile: &Tile<'_>, scratch: &mut Vec<f32>, out: &mut [f32]) {
    // SAFETY: as in `quant::dot_q`: reached only after `available()`.
    unsafe {
        match tile.kind {
            WeightKind::F16 => attend_many_imp::<F16>(tile, scratch, out),
            WeightKind::BF16 => attend_many_imp::<BF16>(tile, scratch, out),
            _ => attend_many_imp::<F32>(tile, scratch, out),
        }
    }
}

/// Positions per block of [`attend_many`].
const ATTN_BLOCK: usize = 16;

/// The lanes of `acc` summed as `((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))`, the order
/// the 4-position score reduction in [`attend_many_imp`] gives each position.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn reduce_pairs(acc: __m256) -> f32 {
    let h = _mm256_hadd_ps(acc, acc);
    let h = _mm256_hadd_ps(h, h);
    _mm_cvtss_f32(_mm_add_ps(
        _mm256_castps256_ps128(h),
        _mm256_extractf128_ps(h, 1),
    ))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn attend_many_imp<'t, const K: u8>(tile: &Tile<'t>, scratch: &mut Vec<f32>, out: &mut [f32]) {
    let hd = tile.qs.first().map_or(0, |q| q.len());
    if !hd.is_multiple_of(8) {
        let one = |h: &Head<'_>, sc: &mut Vec<f32>, o: &mut [f32]| {
            h.run(|a, b| dot_f32_imp(a, b), |y, a, x| axpy_imp(y, a, x), sc, o)
        };
        tile.run_each(one, scratch, out);
        return;
    }
    let m_count = tile.qs.len();
    let lo = tile.spans.iter().map(|s| s.0).min().unwrap_or(0);
    let hi = tile.spans.iter().map(|s| s.0 + s.1).max().unwrap_or(0);
    let width = hi - lo;
    scratch.clear();
    scratch.resize(m_count * width, 0.0);
    // Key / value `j` as the bytes of its `hd` elements; `load_w8` reads 8 of them as f32.
    let esz = if K == F32 { 4 } else { 2 };
    debug_assert_eq!(esz, tile.kind.row_bytes(1));
    let key = |j: usize| &tile.keys[(j * tile.stride + tile.offset) * esz..][..hd * esz];
    let value = |j: usize| &tile.values[(j * tile.stride + tile.offset) * esz..][..hd * esz];
    let visible = |m: usize, b0: usize, b1: usize| {
        let (f, n) = tile.spans[m];
        (b0.max(f), b1.min(f + n))
    };
    // Scores, two queries at a time where they see the same positions of the block (every
    // key vector loaded once for both); each score is the same dot product either way.
    for b0 in (lo..hi).step_by(ATTN_BLOCK) {
        let b1 = (b0 + ATTN_BLOCK).min(hi);
        let mut m = 0;
        while m < m_count {
            let (s, e) = visible(m, b0, b1);
            let pair = m + 1 < m_count && visible(m + 1, b0, b1) == (s, e);
            let mut j = s;
            if pair {
                let (qa, qb) = (tile.qs[m], tile.qs[m + 1]);
                while j + 4 <= e {
                    let k = [key(j), key(j + 1), key(j + 2), key(j + 3)];
                    let mut acc_a = [_mm256_setzero_ps(); 4];
                    let mut acc_b = [_mm256_setzero_ps(); 4];
                    // 8 dimensions at a time as fixed-size pieces (no bounds checks).
                    let pieces = |kr: &'t [u8]| kr.chunks_exact(8 * esz);
                    let qs = qa.chunks_exact(8).zip(qb.chunks_exact(8));
                    let ks = pieces(k[0])
                        .zip(pieces(k[1]))
                        .zip(pieces(k[2]).zip(pieces(k[3])));
                    for ((qa8, qb8), ((k0, k1), (k2, k3))) in qs.zip(ks) {
                        let va = load_f32x8(qa8.try_into().expect("8 floats"));
                        let vb = load_f32x8(qb8.try_into().expect("8 floats"));
                        for (c, kr) in [k0, k1, k2, k3].into_iter().enumerate() {
                            let kv = load_w8::<K>(kr, 0);
                            acc_a[c] = _mm256_fmadd_ps(va, kv, acc_a[c]);
                            acc_b[c] = _mm256_fmadd_ps(vb, kv, acc_b[c]);
                        }
                    }
                    store_scores(acc_a, tile.scale, &mut scratch[m * width + j - lo..][..4]);
                    store_scores(
                        acc_b,
                        tile.scale,
                        &mut scratch[(m + 1) * width + j - lo..][..4],
                    );
                    j += 4;
                }
            }
            for mm in m..m + 1 + usize::from(pair) {
                let q = tile.qs[mm];
                let q8 = |i: usize| load_f32x8(q[i..i + 8].try_into().expect("8 floats"));
                let row = &mut scratch[mm * width..(mm + 1) * width];
                let mut j = j;
                while j + 4 <= e {
                    let k = [key(j), key(j + 1), key(j + 2), key(j + 3)];
                    let mut acc = [_mm256_setzero_ps(); 4];
                    for i in (0..hd).step_by(8) {
                        let qv = q8(i);
                        for (a, kr) in acc.iter_mut().zip(&k) {
                            *a = _mm256_fmadd_ps(qv, load_w8::<K>(kr, i), *a);
                        }
                    }
                    store_scores(acc, tile.scale, &mut row[j - lo..j - lo + 4]);
                    j += 4;
                }
                while j < e {
                    let kr = key(j);
                    let mut acc = _mm256_setzero_ps();
                    for i in (0..hd).step_by(8) {
                        acc = _mm256_fmadd_ps(q8(i), load_w8::<K>(kr, i), acc);
                    }
                    row[j - lo] = reduce_pairs(acc) * tile.scale;
                    j += 1;
                }
            }
            m += 1 + usize::from(pair);
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
    // Weighted values, two queries at a time where they see the same positions of the block
    // (every value vector loaded once for both). Each output lane adds its positions' terms
    // in the same order either way.
    out[..m_count * hd].fill(0.0);
    for b0 in (lo..hi).step_by(ATTN_BLOCK) {
        let b1 = (b0 + ATTN_BLOCK).min(hi);
        let mut m = 0;
        while m < m_count {
            let (s, e) = visible(m, b0, b1);
            if s >= e {
                m += 1;
                continue;
            }
            if m + 1 < m_count && visible(m + 1, b0, b1) == (s, e) {
                let (oa, ob) = out[m * hd..(m + 2) * hd].split_at_mut(hd);
                let wa = &scratch[m * width..(m + 1) * width];
                let wb = &scratch[(m + 1) * width..(m + 2) * width];
                let (ia, ib) = (inv[m], inv[m + 1]);
                for c0 in (0..hd).step_by(32) {
                    let lanes = (hd - c0).min(32) / 8;
                    let w = [&wa[s - lo..e - lo], &wb[s - lo..e - lo]];
                    let o = [&mut oa[c0..c0 + 8 * lanes], &mut ob[c0..c0 + 8 * lanes]];
                    let vals = |j: usize| {
                        let at = ((s + j) * tile.stride + tile.offset + c0) * esz;
                        &tile.values[at..at + 8 * lanes * esz]
                    };
                    match lanes {
                        4 => weigh_pair::<K, 4>(vals, w, [ia, ib], o),
                        3 => weigh_pair::<K, 3>(vals, w, [ia, ib], o),
                        2 => weigh_pair::<K, 2>(vals, w, [ia, ib], o),
                        _ => weigh_pair::<K, 1>(vals, w, [ia, ib], o),
                    }
                }
                m += 2;
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
                    let v = value(j);
                    for (k, a) in acc.iter_mut().enumerate().take(lanes) {
                        *a = _mm256_fmadd_ps(wv, load_w8::<K>(v, c0 + 8 * k), *a);
                    }
                }
                for (k, a) in acc.iter().enumerate().take(lanes) {
                    store_f32x8(&mut o[c0 + 8 * k..c0 + 8 * k + 8], *a);
                }
            }
            m += 1;
        }
    }
}

/// Two queries' weighted sums over the same positions, `L` × 8 output elements: `o[q] +=
/// Σ_j w[q][j] · inv[q] · value(j)`, each output lane one FMA chain over the positions in
/// order. `value(j)` holds exactly the `L × 8` elements (const-sized, so the loads carry no
/// bounds checks).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn weigh_pair<'v, const K: u8, const L: usize>(
    value: impl Fn(usize) -> &'v [u8],
    w: [&[f32]; 2],
    inv: [f32; 2],
    o: [&mut [f32]; 2],
) {
    let [oa, ob] = o;
    let mut acc_a: [__m256; L] =
        std::array::from_fn(|k| load_f32x8(oa[8 * k..8 * k + 8].try_into().expect("8")));
    let mut acc_b: [__m256; L] =
        std::array::from_fn(|k| load_f32x8(ob[8 * k..8 * k + 8].try_into().expect("8")));
    for (j, (wa, wb)) in w[0].iter().zip(w[1]).enumerate() {
        let xa = _mm256_set1_ps(wa * inv[0]);
        let xb = _mm256_set1_ps(wb * inv[1]);
        let v = value(j);
        for k in 0..L {
            let x = load_w8::<K>(v, 8 * k);
            acc_a[k] = _mm256_fmadd_ps(xa, x, acc_a[k]);
            acc_b[k] = _mm256_fmadd_ps(xb, x, acc_b[k]);
        }
    }
    for k in 0..L {
        store_f32x8(&mut oa[8 * k..8 * k + 8], acc_a[k]);
        store_f32x8(&mut ob[8 * k..8 * k + 8], acc_b[k]);
    }
}

/// Four keys' dot products (`acc[c]` summed across lanes, as pairs) times `scale`, into `dst`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn store_scores(acc: [__m256; 4], scale: f32, dst: &mut [f32]) {
    let h = _mm256_hadd_ps(
        _mm256_hadd_ps(acc[0], acc[1]),
        _mm256_hadd_ps(acc[2], acc[3]),
    );
    let four = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    let four = _mm_mul_ps(four, _mm_set1_ps(scale));
    let dst: &mut [f32; 4] = dst.try_into().expect("4 scores");
    // SAFETY: writes exactly the 4 floats of `dst`; no alignment requirement.
    unsafe { _mm_storeu_ps(dst.as_mut_ptr(), four) };
}
