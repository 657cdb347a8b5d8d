//! x86-64 kernels with AVX2, FMA and F16C, used only after run-time detection.
//!
//! The integer dot products follow the classic scheme: unpack a block of weights to 32 bytes,
//! multiply with the activation bytes by `vpmaddubsw` (unsigned × signed → i16 pairs; signed
//! weights go through `vpsignb` first), widen with `vpmaddwd`, convert to f32 and accumulate
//! with one FMA per block scaled by `d_w * d_x`.
//!
//! The `unsafe` here is confined to unaligned SIMD loads from fixed-size arrays (the
//! `load_*` helpers) and to entering `#[target_feature]` functions, which the dispatch in
//! `super` does only after `available()` said yes.

use std::arch::x86_64::*;

use super::{BlockQ8, QK, WeightKind};

/// Whether this CPU has everything these kernels use.
pub fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Quantized weight row · quantized activations.
pub fn dot_q(kind: WeightKind, row: &[u8], act: &[BlockQ8]) -> f32 {
    debug_assert!(available());
    // SAFETY: `super::isa()` returns `Isa::Avx2`, the only way here, after `available()`
    // confirmed AVX2, FMA and F16C on this CPU.
    unsafe {
        match kind {
            WeightKind::Q4_0 => dot_q4_0(row, act),
            WeightKind::Q4_1 => dot_q4_1(row, act),
            WeightKind::Q8_0 => dot_q8_0(row, act),
            _ => unreachable!("float weights use dot_f"),
        }
    }
}

/// Quantizes 32-value blocks of `x` (see `super::portable::quantize_row`, which this equals
/// bit for bit).
pub fn quantize_row(x: &[f32], out: &mut [BlockQ8]) {
    debug_assert!(available());
    // SAFETY: as in `dot_q`: reached only after `available()`.
    unsafe { quantize_row_imp(x, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_row_imp(x: &[f32], out: &mut [BlockQ8]) {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let v: [__m256; 4] =
            std::array::from_fn(|k| load_f32x8(xs[8 * k..8 * k + 8].try_into().expect("8 floats")));
        let m = _mm256_max_ps(
            _mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask)),
            _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask)),
        );
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        // Round to nearest, ties to even (the default MXCSR mode), as the portable code.
        let q: [__m256i; 4] = std::array::from_fn(|k| _mm256_cvtps_epi32(_mm256_mul_ps(v[k], id)));
        let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let s4 = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256(sum, 1),
        );
        let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
        let total = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b10_11_00_01)));
        // Pack to bytes: packs interleave 128-bit lanes, the permute restores the order.
        let p16a = _mm256_packs_epi32(q[0], q[1]);
        let p16b = _mm256_packs_epi32(q[2], q[3]);
        let p8 = _mm256_packs_epi16(p16a, p16b);
        let ordered = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: writes exactly the 32 bytes of `blk.qs`; no alignment requirement.
        unsafe { _mm256_storeu_si256(blk.qs.as_mut_ptr().cast(), ordered) };
        blk.d = half::f16::from_f32(d).to_f32();
        blk.s = half::f16::from_f32(d * total as f32).to_f32();
    }
}

/// K-quant row · activations (see `super::avx2_kquants`).
pub fn dot_k_multi(
    kind: WeightKind,
    row: &[u8],
    acts: &[&[super::BlockQ8K]],
    out: &mut [f32],
    stream: bool,
) {
    super::avx2_kquants::dot_k_multi(kind, row, acts, out, stream);
}

/// The 8 dot products of an interleaved group with each of up to 4 activation vectors
/// (`out[t]` for `acts[t]`).
pub fn dot_x8_multi(
    kind: WeightKind,
    group: &[u8],
    acts: &[&[BlockQ8]],
    out: &mut [[f32; 8]],
    stream: bool,
) {
    debug_assert!(available());
    fn run<const N: usize>(
        kind: WeightKind,
        group: &[u8],
        acts: [&[BlockQ8]; N],
        stream: bool,
    ) -> [[f32; 8]; N] {
        // SAFETY: as in `dot_q`: reached only after `available()`.
        unsafe {
            match kind {
                WeightKind::Q4_0 => dot_x8_q4::<N, false>(group, acts, stream),
                WeightKind::Q4_1 => dot_x8_q4::<N, true>(group, acts, stream),
                WeightKind::Q8_0 => dot_x8_q8_0(group, acts, stream),
                _ => unreachable!("float weights are not interleaved"),
            }
        }
    }
    match *acts {
        [a] => out[..1].copy_from_slice(&run(kind, group, [a], stream)),
        [a, b] => out[..2].copy_from_slice(&run(kind, group, [a, b], stream)),
        [a, b, c] => out[..3].copy_from_slice(&run(kind, group, [a, b, c], stream)),
        [a, b, c, d] => out[..4].copy_from_slice(&run(kind, group, [a, b, c, d], stream)),
        _ => unreachable!("1 to 4 activation vectors"),
    }
}

/// Float weight row · f32 activations.
pub fn dot_f(kind: WeightKind, row: &[u8], act: &[f32]) -> f32 {
    let mut out = [0f32];
    dot_f_block(kind, row, row.len(), false, &[act], &mut out, 1);
    out[0]
}

/// `Σ a[i] * b[i]`.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: as in `dot_q`: reached only after `available()`.
    unsafe { dot_f32_imp(a, b) }
}

/// Several queries against one key/value head (see `super::attend_many`), in blocks of
/// [`ATTN_BLOCK`] positions: each block's keys and values are loaded into L1 once and serve
/// every query of the tile. Each score is one FMA chain per 8 dimensions reduced in a fixed
/// order (the same alone or four at a time), each output element one FMA chain over the
/// positions in order, so a query's result depends only on its own inputs, not on its
/// tile-mates or on the blocking.
pub fn attend_many(tile: &super::Tile<'_>, scratch: &mut Vec<f32>, out: &mut [f32]) {
    // SAFETY: as in `dot_q`: reached only after `available()`.
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
fn reduce_pairs(acc: __m256) -> f32 {
    let h = _mm256_hadd_ps(acc, acc);
    let h = _mm256_hadd_ps(h, h);
    _mm_cvtss_f32(_mm_add_ps(
        _mm256_castps256_ps128(h),
        _mm256_extractf128_ps(h, 1),
    ))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn attend_many_imp<'t, const K: u8>(
    tile: &super::Tile<'t>,
    scratch: &mut Vec<f32>,
    out: &mut [f32],
) {
    let hd = tile.qs.first().map_or(0, |q| q.len());
    if !hd.is_multiple_of(8) {
        let one = |h: &super::Head<'_>, sc: &mut Vec<f32>, o: &mut [f32]| {
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
fn store_scores(acc: [__m256; 4], scale: f32, dst: &mut [f32]) {
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

/// Stores 8 floats into `dst` (8 long).
#[inline]
#[target_feature(enable = "avx2")]
fn store_f32x8(dst: &mut [f32], v: __m256) {
    let dst: &mut [f32; 8] = dst.try_into().expect("8 floats");
    // SAFETY: writes exactly the 8 floats of `dst`; no alignment requirement.
    unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) };
}

/// `e^x` for 8 values: `x = n ln 2 + r` (`|r| <= ln 2 / 2`, `ln 2` in two parts), a
/// degree-6 polynomial for `e^r` (Cephes' `expf` coefficients, about 1 ulp), times `2^n`
/// built in the exponent bits. Inputs are clamped to the finite range (`e^x` of very negative
/// `x` comes out as ~1e-38 rather than 0).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp8(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.336_55)),
        _mm256_set1_ps(88.376_26),
    );
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let p = _mm256_fmadd_ps(
        p,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    let pow2 = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
        23,
    );
    _mm256_mul_ps(p, _mm256_castsi256_ps(pow2))
}

/// `x[i] = e^(x[i] - max)`; returns their sum (see `super::exp_shifted_sum`).
pub fn exp_shifted_sum(x: &mut [f32], max: f32) -> f32 {
    // SAFETY: as in `dot_q`: reached only after `available()`.
    unsafe { exp_shifted_sum_imp(x, max) }
}

#[target_feature(enable = "avx2,fma")]
fn exp_shifted_sum_imp(x: &mut [f32], max: f32) -> f32 {
    let m = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        let c: &mut [f32; 8] = c.try_into().expect("8 floats");
        let e = exp8(_mm256_sub_ps(load_f32x8(c), m));
        acc = _mm256_add_ps(acc, e);
        // SAFETY: writes exactly the 8 floats of `c`; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), e) };
    }
    let mut sum = hsum(acc);
    for v in chunks.into_remainder() {
        *v = (*v - max).exp();
        sum += *v;
    }
    sum
}

/// `gate[i] = act(gate[i]) * up[i]` (see `super::gated_activation`).
pub fn gated_activation(gelu: bool, gate: &mut [f32], up: &[f32]) {
    // SAFETY: as in `dot_q`: reached only after `available()`.
    unsafe { gated_activation_imp(gelu, gate, up) }
}

/// SiLU `x / (1 + e^-x)`; GELU (tanh form) written the same way, since
/// `0.5 x (1 + tanh u) = x / (1 + e^(-2u))`, `u = sqrt(2/pi) (x + 0.044715 x^3)`.
#[target_feature(enable = "avx2,fma")]
fn gated_activation_imp(gelu: bool, gate: &mut [f32], up: &[f32]) {
    let one = _mm256_set1_ps(1.0);
    let n = gate.len().min(up.len());
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        let g: &mut [f32; 8] = (&mut gate[i..i + 8]).try_into().expect("8 floats");
        let u: &[f32; 8] = up[i..i + 8].try_into().expect("8 floats");
        let x = load_f32x8(g);
        let z = if gelu {
            // -2u = x · (-2 sqrt(2/pi)) · (1 + 0.044715 x^2)
            let inner = _mm256_fmadd_ps(_mm256_mul_ps(x, x), _mm256_set1_ps(0.044_715), one);
            _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(-1.595_769_2)), inner)
        } else {
            _mm256_sub_ps(_mm256_setzero_ps(), x)
        };
        let act = _mm256_div_ps(x, _mm256_add_ps(one, exp8(z)));
        let r = _mm256_mul_ps(act, load_f32x8(u));
        // SAFETY: writes exactly the 8 floats of `g`; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_ps(g.as_mut_ptr(), r) };
    }
    for i in full..n {
        gate[i] = super::activation(gelu, gate[i]) * up[i];
    }
}

/// `y[i] += a * x[i]`.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    // SAFETY: as in `dot_q`: reached only after `available()`.
    unsafe { axpy_imp(y, a, x) }
}

/// The 32 bytes of `b`, loaded.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load_32(b: &[u8; 32]) -> __m256i {
    // SAFETY: reads exactly the 32 bytes of `b`; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn load_16(b: &[u8; 16]) -> __m128i {
    // SAFETY: reads exactly the 16 bytes of `b`; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn load_q8(a: &BlockQ8) -> __m256i {
    // SAFETY: reads exactly the 32 bytes of `a.qs`; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn load_f32x8(x: &[f32; 8]) -> __m256 {
    // SAFETY: reads exactly the 8 floats of `x`; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(x.as_ptr()) }
}

#[inline]
#[target_feature(enable = "f16c")]
fn f16(lo: u8, hi: u8) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
        u16::from_le_bytes([lo, hi]) as i32,
    )))
}

#[inline]
#[target_feature(enable = "avx2")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// 16 bytes of packed nibbles → 32 bytes: low nibbles (values 0..16) then high (16..32).
#[inline]
#[target_feature(enable = "avx2")]
fn unpack_nibbles(q: &[u8; 16]) -> __m256i {
    let q = load_16(q);
    let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// `Σ w[i] * x[i]` over 32 unsigned weight bytes (< 128) and signed activation bytes, as 8 f32.
#[inline]
#[target_feature(enable = "avx2")]
fn dot_u8_i8(w: __m256i, x: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(w, x);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q4_1(row: &[u8], act: &[BlockQ8]) -> f32 {
    // Two blocks per iteration, two accumulator chains.
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut mins = [0f32; 2];
    let pairs = act.len() / 2;
    for (bb, aa) in row.chunks_exact(40).zip(act.chunks_exact(2)).take(pairs) {
        for k in 0..2 {
            let b = &bb[k * 20..k * 20 + 20];
            let a = &aa[k];
            let qs: &[u8; 16] = b[4..20].try_into().expect("20-byte block");
            let p = dot_u8_i8(unpack_nibbles(qs), load_q8(a));
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(f16(b[0], b[1]) * a.d), p, acc[k]);
            mins[k] += f16(b[2], b[3]) * a.s;
        }
    }
    if act.len() % 2 == 1 {
        let i = act.len() - 1;
        let (b, a) = (&row[i * 20..i * 20 + 20], &act[i]);
        let qs: &[u8; 16] = b[4..20].try_into().expect("20-byte block");
        let p = dot_u8_i8(unpack_nibbles(qs), load_q8(a));
        acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(f16(b[0], b[1]) * a.d), p, acc[0]);
        mins[0] += f16(b[2], b[3]) * a.s;
    }
    hsum(_mm256_add_ps(acc[0], acc[1])) + (mins[0] + mins[1])
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q4_0(row: &[u8], act: &[BlockQ8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut offs = 0f32;
    for (b, a) in row.chunks_exact(18).zip(act) {
        let qs: &[u8; 16] = b[2..18].try_into().expect("18-byte block");
        let d = f16(b[0], b[1]);
        let p = dot_u8_i8(unpack_nibbles(qs), load_q8(a));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), p, acc);
        offs += 8.0 * d * a.s;
    }
    hsum(acc) - offs
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q8_0(row: &[u8], act: &[BlockQ8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (b, a) in row.chunks_exact(34).zip(act) {
        let qs: &[u8; 32] = b[2..34].try_into().expect("34-byte block");
        let w = load_32(qs);
        let x = load_q8(a);
        // |w| · (x with w's sign): unsigned × signed, as vpmaddubsw needs.
        let p = dot_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(b[0], b[1]) * a.d), p, acc);
    }
    hsum(acc)
}

#[inline]
#[target_feature(enable = "avx2")]
fn store_8(v: __m256) -> [f32; 8] {
    let mut out = [0f32; 8];
    // SAFETY: writes exactly the 8 floats of `out`; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// Activation quad `j` (values `4j..4j + 4`) of `a`, broadcast to all 8 32-bit lanes (one
/// per row of an interleaved group).
#[inline]
#[target_feature(enable = "avx2")]
fn quad(a: &BlockQ8, j: usize) -> __m256i {
    let q = &a.qs[4 * j..4 * j + 4];
    _mm256_set1_epi32(i32::from_le_bytes([
        q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8,
    ]))
}

/// 8 interleaved `Q4_0`/`Q4_1` (`MIN`) rows against `N` activation vectors: per block
/// `[d; 8] [m; 8]? [qs]`, the quants in 4-byte pieces with piece `k` of the 8 rows side by
/// side (`super::quant_at`). One 32-byte load holds 4 columns of all 8 rows as low nibbles
/// (columns `4k..4k + 4`) and 4 as high nibbles (`16 + 4k..`); unpacked once for all `N`
/// tokens, each meets its activation quad broadcast to every row, so the 16-bit products
/// land directly in the 8 rows' lanes: 8 `vpmaddubsw` per token and block summed in 16 bits
/// (at most 8 × 2 × 15 × 128 < 2^15: exact in any order), one `vpmaddwd`, no horizontal
/// adds. The pieces are taken one at a time, each unpacked and consumed by every token before
/// the next is loaded, so with 4 tokens the 4 running sums, the 4 accumulators and one
/// unpacked piece stay in the 16 registers (unpacking all 4 pieces first spilled). Every token
/// goes through the same operations in the same order whatever `N` is, so its results do not
/// depend on its batch-mates.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_x8_q4<const N: usize, const MIN: bool>(
    group: &[u8],
    acts: [&[BlockQ8]; N],
    stream: bool,
) -> [[f32; 8]; N] {
    let gb = if MIN { 160 } else { 144 };
    let qoff = if MIN { 32 } else { 16 };
    let mask = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, g) in group.chunks_exact(gb).enumerate() {
        if stream {
            prefetch_span(group, i * gb, gb);
        }
        let a: [&BlockQ8; N] = std::array::from_fn(|t| &acts[t][i]);
        let mut sum = [_mm256_setzero_si256(); N];
        for k in 0..4 {
            let q: &[u8; 32] = g[qoff + 32 * k..qoff + 32 * k + 32]
                .try_into()
                .expect("one piece of 8 rows");
            let w = load_32(q);
            let lo = _mm256_and_si256(w, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), mask);
            for (t, s) in sum.iter_mut().enumerate() {
                let p = _mm256_add_epi16(
                    _mm256_maddubs_epi16(lo, quad(a[t], k)),
                    _mm256_maddubs_epi16(hi, quad(a[t], 4 + k)),
                );
                *s = _mm256_add_epi16(*s, p);
            }
        }
        let d: &[u8; 16] = g[0..16].try_into().expect("8 scales");
        let dv = _mm256_cvtph_ps(load_16(d));
        let mv = if MIN {
            let m: &[u8; 16] = g[16..32].try_into().expect("8 minimums");
            _mm256_cvtph_ps(load_16(m))
        } else {
            dv
        };
        for t in 0..N {
            let sums = _mm256_madd_epi16(sum[t], _mm256_set1_epi16(1));
            let off = if MIN { a[t].s } else { -8.0 * a[t].s };
            acc[t] = _mm256_fmadd_ps(
                _mm256_mul_ps(dv, _mm256_set1_ps(a[t].d)),
                _mm256_cvtepi32_ps(sums),
                _mm256_fmadd_ps(mv, _mm256_set1_ps(off), acc[t]),
            );
        }
    }
    std::array::from_fn(|t| store_8(acc[t]))
}

/// 8 interleaved `Q8_0` rows against `N` activation vectors: per block `[d; 8] [qs]`, the
/// quants in 4-byte pieces with piece `k` (columns `4k..4k + 4`) of the 8 rows side by side
/// (`super::quant_at`). Each piece is loaded and made absolute once for all `N` tokens; each
/// token's activation quad, broadcast to every row and given the weights' signs, multiplies
/// it into the 8 rows' lanes (`vpmaddubsw`: |w| · ±x, pairs at most 2 × 127 × 127 < 2^15,
/// exact), widened by `vpmaddwd` and summed in 32 bits: no horizontal adds. The weights are
/// in -127..=127 (see `super::interleave`) and so are the activations, so both signs flip
/// within a byte. Every token goes through the same operations in the same order whatever `N`
/// is, so its results do not depend on its batch-mates.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_x8_q8_0<const N: usize>(group: &[u8], acts: [&[BlockQ8]; N], stream: bool) -> [[f32; 8]; N] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, g) in group.chunks_exact(272).enumerate() {
        if stream {
            prefetch_span(group, i * 272, 272);
        }
        let a: [&BlockQ8; N] = std::array::from_fn(|t| &acts[t][i]);
        let mut sum = [_mm256_setzero_si256(); N];
        for k in 0..8 {
            let w = load_32(
                g[16 + 32 * k..48 + 32 * k]
                    .try_into()
                    .expect("one piece of 8 rows"),
            );
            let wabs = _mm256_sign_epi8(w, w);
            for (t, s) in sum.iter_mut().enumerate() {
                let p = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(quad(a[t], k), w));
                *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, ones));
            }
        }
        let d: &[u8; 16] = g[0..16].try_into().expect("8 scales");
        let dv = _mm256_cvtph_ps(load_16(d));
        for t in 0..N {
            acc[t] = _mm256_fmadd_ps(
                _mm256_mul_ps(dv, _mm256_set1_ps(a[t].d)),
                _mm256_cvtepi32_ps(sum[t]),
                acc[t],
            );
        }
    }
    std::array::from_fn(|t| store_8(acc[t]))
}

/// `QK` is the block size the quantized kernels assume.
const _: () = assert!(QK == 32);

/// Float weight formats as const parameters of [`tile_f`].
const F32: u8 = 0;
const F16: u8 = 1;
const BF16: u8 = 2;

/// 8 weights `i..i + 8` of a float row of format `K`, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_w8<const K: u8>(row: &[u8], i: usize) -> __m256 {
    match K {
        F32 => _mm256_castsi256_ps(load_32(row[i * 4..i * 4 + 32].try_into().expect("8 f32"))),
        F16 => _mm256_cvtph_ps(load_16(row[i * 2..i * 2 + 16].try_into().expect("8 f16"))),
        _ => {
            let b = load_16(row[i * 2..i * 2 + 16].try_into().expect("8 bf16"));
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16))
        }
    }
}

/// Weight `i` of a float row of format `K`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_w1<const K: u8>(row: &[u8], i: usize) -> f32 {
    match K {
        F32 => f32::from_le_bytes(row[i * 4..i * 4 + 4].try_into().expect("4 bytes")),
        F16 => f16(row[i * 2], row[i * 2 + 1]),
        _ => half::bf16::from_le_bytes([row[i * 2], row[i * 2 + 1]]).to_f32(),
    }
}

/// `R` float rows against `T` activation vectors: `out[t][r] = rows[r] · acts[t]`. Each
/// weight vector is loaded once for all `T` tokens and each activation vector once for all
/// `R` rows (12 FMAs per 7 loads at 4 × 3). Every output has one accumulator chain, summed
/// the same way whatever `R` and `T` are, so a result does not depend on its tile-mates.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_f<const K: u8, const R: usize, const T: usize>(
    rows: [&[u8]; R],
    acts: [&[f32]; T],
) -> [[f32; R]; T] {
    let n = acts[0].len();
    let full = n / 8 * 8;
    let mut acc = [[_mm256_setzero_ps(); R]; T];
    for i in (0..full).step_by(8) {
        let x: [__m256; T] =
            std::array::from_fn(|t| load_f32x8(acts[t][i..i + 8].try_into().expect("8 floats")));
        for r in 0..R {
            let w = load_w8::<K>(rows[r], i);
            for t in 0..T {
                acc[t][r] = _mm256_fmadd_ps(w, x[t], acc[t][r]);
            }
        }
    }
    std::array::from_fn(|t| {
        std::array::from_fn(|r| {
            let mut total = hsum(acc[t][r]);
            for (i, x) in acts[t].iter().enumerate().skip(full) {
                total += load_w1::<K>(rows[r], i) * x;
            }
            total
        })
    })
}

/// How far ahead (bytes) the streaming kernels prefetch their weights. Software prefetch keeps
/// more cache-line fills in flight than the hardware prefetchers do for one stream per core:
/// measured here (`examples/float_speed`), a bf16 decode stream rises from ~9 to ~12 GB/s on
/// one core and from ~14 to ~18 GB/s on two; decode steps of Q4_1 and Q8_0 files run 10-25%
/// faster, prefill (weights reused from cache) the same. 16 KiB rather than 4 KiB: f32 decode
/// (the fastest-consuming stream) +4% on average, 7 of 8 alternating pairs faster; bf16, Q4_1
/// and Q8_0 decode unchanged (same-process A/B of the plugin, 2 threads).
const PREFETCH: usize = 16384;

/// Prefetches the cache lines of `data[at..at + len]`, `PREFETCH` bytes ahead, into L1 as
/// non-temporal (`prefetchnta`: the line is used once and need not displace the KV cache and
/// activations from L2/L3; decode +1-3% over `prefetcht0` in same-process A/B runs of bf16,
/// f32 and Q4_1 files). Only where the weights stream by once (decode steps: `stream` in the
/// kernels); a prefill tile reads each block again for every few tokens, from cache, and the
/// hints only cost there.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn prefetch_span(data: &[u8], at: usize, len: usize) {
    for off in (0..len).step_by(64).chain([len.saturating_sub(1)]) {
        prefetch_line(data, at + off);
    }
}

/// Prefetches the cache line of `data[at]`, `PREFETCH` bytes ahead, as [`prefetch_span`]
/// does (two calls per 128 bytes of a forward stream reach every line).
#[inline]
#[target_feature(enable = "avx2")]
fn prefetch_line(data: &[u8], at: usize) {
    // A prefetch is a hint that never faults, whatever the address; `wrapping_add` keeps the
    // pointer arithmetic defined past the end of `data`.
    let p = data.as_ptr().wrapping_add(at + PREFETCH);
    _mm_prefetch::<_MM_HINT_NTA>(p as *const i8);
}

/// One interleaved group of 4 float rows of format `K` (see `super::interleave`) against
/// `T` activation vectors whose length is a multiple of 8. The same arithmetic as
/// [`tile_f`] over the 4 rows (one chain per output, in column order), read as one forward
/// stream. The group is walked in fixed-size pieces (8 columns of the 4 rows) and the
/// activations are cut to the same number of 8-float chunks up front, so the loop carries no
/// bounds checks (with them, a bf16 decode step ran at about half the speed in L2).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_g4<const K: u8, const T: usize>(
    group: &[u8],
    acts: [&[f32]; T],
    stream: bool,
) -> [[f32; 4]; T] {
    // Bytes of the group per 8 columns (4 rows' pieces): 128 (f32) or 64 (f16, bf16).
    let per_k = 32 * if K == F32 { 4 } else { 2 };
    let n8 = acts[0].len() / 8;
    let group = &group[..n8 * per_k];
    let acts: [&[f32]; T] = std::array::from_fn(|t| &acts[t][..n8 * 8]);
    let mut acc = [[_mm256_setzero_ps(); 4]; T];
    for (k, piece) in group.chunks_exact(per_k).enumerate() {
        if stream && (k * per_k).is_multiple_of(128) {
            prefetch_line(group, k * per_k);
            prefetch_line(group, k * per_k + 64);
        }
        let x: [__m256; T] = std::array::from_fn(|t| {
            load_f32x8(acts[t][k * 8..k * 8 + 8].try_into().expect("8 floats"))
        });
        for r in 0..4 {
            let w = load_w8::<K>(piece, r * 8);
            for (a, xt) in acc.iter_mut().zip(&x) {
                a[r] = _mm256_fmadd_ps(w, *xt, a[r]);
            }
        }
    }
    std::array::from_fn(|t| std::array::from_fn(|r| hsum(acc[t][r])))
}

/// Float rows (`row_bytes` each; row-major, or interleaved groups of 4 when `grouped`)
/// against activation vectors: `out[t * stride + r] = row r · acts[t]`, in tiles of 4 rows ×
/// up to 3 tokens. Row-major rows take one row at a time for a single token (a sequential
/// stream); grouped rows are a sequential stream at 4 rows a time. See `super::dot_f_block`.
pub fn dot_f_block(
    kind: WeightKind,
    rows: &[u8],
    row_bytes: usize,
    grouped: bool,
    acts: &[&[f32]],
    out: &mut [f32],
    stride: usize,
) {
    debug_assert!(available());
    // SAFETY: as in `dot_q`: reached only after `available()`.
    unsafe {
        match (kind, grouped) {
            (WeightKind::F32, false) => block_f::<F32>(rows, row_bytes, acts, out, stride),
            (WeightKind::F16, false) => block_f::<F16>(rows, row_bytes, acts, out, stride),
            (WeightKind::BF16, false) => block_f::<BF16>(rows, row_bytes, acts, out, stride),
            (WeightKind::F32, true) => block_g4::<F32>(rows, row_bytes, acts, out, stride),
            (WeightKind::F16, true) => block_g4::<F16>(rows, row_bytes, acts, out, stride),
            (WeightKind::BF16, true) => block_g4::<BF16>(rows, row_bytes, acts, out, stride),
            _ => unreachable!("quantized weights use dot_q"),
        }
    }
}

/// Stores a tile's results: `res[k][r]` is token `t0 + k`, row `j + r`.
#[inline]
fn put_tile(res: &[[f32; 4]], out: &mut [f32], t0: usize, j: usize, stride: usize) {
    for (k, r) in res.iter().enumerate() {
        let at = (t0 + k) * stride + j;
        out[at..at + 4].copy_from_slice(r);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn block_g4<const K: u8>(
    w: &[u8],
    row_bytes: usize,
    acts: &[&[f32]],
    out: &mut [f32],
    stride: usize,
) {
    // A few tokens (decode steps) stream through the weights once: prefetch them.
    let stream = acts.len() <= super::MAX_TOKENS;
    for (g, group) in w.chunks_exact(4 * row_bytes).enumerate() {
        for (c, a) in acts.chunks(3).enumerate() {
            let res: &[[f32; 4]] = match *a {
                [x, y, z] => &tile_g4::<K, 3>(group, [x, y, z], stream),
                [x, y] => &tile_g4::<K, 2>(group, [x, y], stream),
                [x] => &tile_g4::<K, 1>(group, [x], stream),
                _ => unreachable!(),
            };
            put_tile(res, out, c * 3, g * 4, stride);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn block_f<const K: u8>(
    w: &[u8],
    row_bytes: usize,
    acts: &[&[f32]],
    out: &mut [f32],
    stride: usize,
) {
    let n_rows = w.len() / row_bytes;
    let row = |r: usize| &w[r * row_bytes..(r + 1) * row_bytes];
    let mut j = 0;
    while j < n_rows {
        if acts.len() > 1 && n_rows - j >= 4 {
            let rows = [row(j), row(j + 1), row(j + 2), row(j + 3)];
            for (c, a) in acts.chunks(3).enumerate() {
                let res: &[[f32; 4]] = match *a {
                    [x, y, z] => &tile_f::<K, 4, 3>(rows, [x, y, z]),
                    [x, y] => &tile_f::<K, 4, 2>(rows, [x, y]),
                    [x] => &tile_f::<K, 4, 1>(rows, [x]),
                    _ => unreachable!(),
                };
                put_tile(res, out, c * 3, j, stride);
            }
            j += 4;
        } else {
            for (t, a) in acts.iter().enumerate() {
                out[t * stride + j] = tile_f::<K, 1, 1>([row(j)], [a])[0][0];
            }
            j += 1;
        }
    }
}

#[target_feature(enable = "avx2,fma")]
fn dot_f32_imp(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let m = n / 16 * 16;
    for i in (0..m).step_by(16) {
        let a0: &[f32; 8] = a[i..i + 8].try_into().expect("8");
        let b0: &[f32; 8] = b[i..i + 8].try_into().expect("8");
        let a1: &[f32; 8] = a[i + 8..i + 16].try_into().expect("8");
        let b1: &[f32; 8] = b[i + 8..i + 16].try_into().expect("8");
        acc0 = _mm256_fmadd_ps(load_f32x8(a0), load_f32x8(b0), acc0);
        acc1 = _mm256_fmadd_ps(load_f32x8(a1), load_f32x8(b1), acc1);
    }
    let mut total = hsum(_mm256_add_ps(acc0, acc1));
    for i in m..n {
        total += a[i] * b[i];
    }
    total
}

#[target_feature(enable = "avx2,fma")]
fn axpy_imp(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let m = n / 8 * 8;
    let av = _mm256_set1_ps(a);
    for i in (0..m).step_by(8) {
        let xv: &[f32; 8] = x[i..i + 8].try_into().expect("8");
        let yv: &mut [f32; 8] = (&mut y[i..i + 8]).try_into().expect("8");
        let r = _mm256_fmadd_ps(av, load_f32x8(xv), load_f32x8(yv));
        // SAFETY: writes exactly the 8 floats of `yv`; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_ps(yv.as_mut_ptr(), r) };
    }
    for i in m..n {
        y[i] += a * x[i];
    }
}
