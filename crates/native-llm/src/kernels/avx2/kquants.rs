//! AVX2 kernels for the K-quant formats (`Q4_K`, `Q5_K`, `Q6_K`; layouts in
//! [`kernels::kquants`](crate::kernels::kquants)): one weight row against up to
//! [`K_TOKENS`](crate::kernels::K_TOKENS) activation vectors, each super-block unpacked
//! into registers once for all of them.
//!
//! Per super-block and token the integer sums are exact (`vpmaddubsw` of unsigned quants and
//! signed activations, then `vpmaddwd` by the sub-block scales, in 32-bit lanes), and the
//! floats are formed exactly as the portable body does (`d · d_y · Σ` then `- dmin · d_y ·
//! Σ mins`, added to the running total super-block by super-block), so every result equals
//! the portable kernel's bit for bit, whatever the number of tokens.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::simd::{available, load_32, prefetch_span};
use crate::kernels::format::{BlockQ8K, QK_K, WeightKind, f16_at};
use crate::kernels::kquants::scales_mins;

/// `out[t] = row · acts[t]` for a K-quant row (`out.len() >= acts.len()`, at most
/// [`K_TOKENS`](crate::kernels::K_TOKENS) vectors). Callers check AVX2/FMA/F16C first.
pub fn dot_k_multi(
    kind: WeightKind,
    row: &[u8],
    acts: &[&[BlockQ8K]],
    out: &mut [f32],
    stream: bool,
) {
    debug_assert!(available());
    fn run<const N: usize>(
        kind: WeightKind,
        row: &[u8],
        acts: [&[BlockQ8K]; N],
        stream: bool,
    ) -> [f32; N] {
        // SAFETY: reached only after `available()` confirmed AVX2, FMA and F16C.
        unsafe {
            match kind {
                WeightKind::Q4_K => q45k::<N, false>(row, acts, stream),
                WeightKind::Q5_K => q45k::<N, true>(row, acts, stream),
                WeightKind::Q6_K => q6k::<N>(row, acts, stream),
                _ => unreachable!("{kind:?} is not a K-quant"),
            }
        }
    }
    let n = acts.len();
    let res: &[f32] = match *acts {
        [a] => &run(kind, row, [a], stream),
        [a, b] => &run(kind, row, [a, b], stream),
        [a, b, c] => &run(kind, row, [a, b, c], stream),
        [a, b, c, d] => &run(kind, row, [a, b, c, d], stream),
        [a, b, c, d, e] => &run(kind, row, [a, b, c, d, e], stream),
        [a, b, c, d, e, f] => &run(kind, row, [a, b, c, d, e, f], stream),
        [a, b, c, d, e, f, g] => &run(kind, row, [a, b, c, d, e, f, g], stream),
        [a, b, c, d, e, f, g, h] => &run(kind, row, [a, b, c, d, e, f, g, h], stream),
        _ => unreachable!("1 to 8 activation vectors"),
    };
    out[..n].copy_from_slice(res);
}

/// [`kernels::quantize_row_k`](crate::kernels::quantize_row_k) with AVX2: the same scale, the
/// same products rounded the same way (to nearest, ties to even), so the same blocks bit for
/// bit.
pub fn quantize_row_k(x: &[f32], out: &mut [BlockQ8K]) {
    debug_assert!(available());
    // SAFETY: reached only after `available()` confirmed AVX2 and FMA.
    unsafe { quantize_row_k_imp(x, out) }
}

#[target_feature(enable = "avx2,fma")]
fn quantize_row_k_imp(x: &[f32], out: &mut [BlockQ8K]) {
    let sign = _mm256_set1_ps(-0.0);
    for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
        let load = |i: usize| {
            let v: &[f32; 8] = xs[i..i + 8].try_into().expect("8 floats");
            // SAFETY: reads exactly the 8 floats of `v`; no alignment requirement.
            unsafe { _mm256_loadu_ps(v.as_ptr()) }
        };
        let mut m = _mm256_setzero_ps();
        for i in (0..QK_K).step_by(8) {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, load(i)));
        }
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        if amax == 0.0 {
            *blk = BlockQ8K::default();
            continue;
        }
        // The first value whose magnitude is the maximum gives the sign.
        let first = xs.iter().position(|v| v.abs() == amax).unwrap_or(0);
        let iscale = -127.0 / xs[first];
        let iv = _mm256_set1_ps(iscale);
        let top = _mm256_set1_epi32(127);
        for i in (0..QK_K).step_by(32) {
            let q: [__m256i; 4] = std::array::from_fn(|k| {
                let r = _mm256_round_ps(
                    _mm256_mul_ps(iv, load(i + 8 * k)),
                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
                );
                _mm256_min_epi32(_mm256_cvtps_epi32(r), top)
            });
            // Pack 4 × 8 i32 → 32 i8 (in range, so no saturation), then undo the lane
            // interleaving of the packs.
            let p = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            let dst: &mut [i8; 32] = (&mut blk.qs[i..i + 32]).try_into().expect("32 quants");
            // SAFETY: writes exactly the 32 bytes of `dst`; no alignment requirement.
            unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), p) };
        }
        blk.fill_bsums();
        blk.d = 1.0 / iscale;
    }
}

/// Bytes `i..i + 32` of `b`, loaded.
#[inline]
#[target_feature(enable = "avx2")]
fn load_at(b: &[u8], i: usize) -> __m256i {
    load_32(b[i..i + 32].try_into().expect("32 bytes"))
}

/// Activation bytes `i..i + 32`.
#[inline]
#[target_feature(enable = "avx2")]
fn load_y(a: &BlockQ8K, i: usize) -> __m256i {
    let y: &[i8; 32] = a.qs[i..i + 32].try_into().expect("32 quants");
    // SAFETY: reads exactly the 32 bytes of `y`; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(y.as_ptr().cast()) }
}

/// The 16 sums of 16 activations, as 16-bit lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn load_bsums(a: &BlockQ8K) -> __m256i {
    // SAFETY: reads exactly the 32 bytes of the 16 `i16` sums; no alignment requirement.
    unsafe { _mm256_loadu_si256(a.bsums.as_ptr().cast()) }
}

/// Sum of the 8 32-bit lanes (exact: the callers' sums stay far below 2^31).
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// `Q4_K` (`Q5 = false`) or `Q5_K` (`Q5 = true`) row · `N` activation vectors.
#[target_feature(enable = "avx2,fma,f16c")]
fn q45k<const N: usize, const Q5: bool>(
    row: &[u8],
    acts: [&[BlockQ8K]; N],
    stream: bool,
) -> [f32; N] {
    let bb = if Q5 { 176 } else { 144 };
    let nib = _mm256_set1_epi8(0x0F);
    let mut out = [0f32; N];
    for (i, b) in row.chunks_exact(bb).enumerate() {
        if stream {
            prefetch_span(row, i * bb, bb);
        }
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let (sc, m) = scales_mins(&b[4..16]);
        let qs = if Q5 { &b[48..176] } else { &b[16..144] };
        // The 256 quants as unsigned bytes, 32 values (one sub-block) per register.
        let mut q = [_mm256_setzero_si256(); 8];
        let qh = if Q5 {
            load_at(b, 16)
        } else {
            _mm256_setzero_si256()
        };
        for j in 0..4 {
            let w = load_at(qs, 32 * j);
            let mut lo = _mm256_and_si256(w, nib);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), nib);
            if Q5 {
                // Bits 2j and 2j + 1 of each `qh` byte are the fifth bits of the two halves.
                let bit = _mm256_set1_epi8(1 << (2 * j));
                let top = _mm256_set1_epi8(0x10);
                let l5 = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
                let h5 = _mm256_cmpeq_epi8(
                    _mm256_and_si256(qh, _mm256_slli_epi16(bit, 1)),
                    _mm256_slli_epi16(bit, 1),
                );
                lo = _mm256_or_si256(lo, _mm256_and_si256(l5, top));
                hi = _mm256_or_si256(hi, _mm256_and_si256(h5, top));
            }
            q[2 * j] = lo;
            q[2 * j + 1] = hi;
        }
        // Each sub-block's scale, and each 16-value group's minimum, as 16-bit lanes.
        let scale = |s: usize| _mm256_set1_epi16(sc[s] as i16);
        let mins = _mm256_setr_epi16(
            m[0] as i16,
            m[0] as i16,
            m[1] as i16,
            m[1] as i16,
            m[2] as i16,
            m[2] as i16,
            m[3] as i16,
            m[3] as i16,
            m[4] as i16,
            m[4] as i16,
            m[5] as i16,
            m[5] as i16,
            m[6] as i16,
            m[6] as i16,
            m[7] as i16,
            m[7] as i16,
        );
        for t in 0..N {
            let a = &acts[t][i];
            let mut acc = _mm256_setzero_si256();
            for (s, qv) in q.iter().enumerate() {
                let p = _mm256_maddubs_epi16(*qv, load_y(a, 32 * s));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, scale(s)));
            }
            let isum = hsum_i32(acc);
            let msum = hsum_i32(_mm256_madd_epi16(load_bsums(a), mins));
            let mut total = d * a.d * isum as f32;
            total -= dmin * a.d * msum as f32;
            out[t] += total;
        }
    }
    out
}

/// `Q6_K` row · `N` activation vectors.
#[target_feature(enable = "avx2,fma,f16c")]
fn q6k<const N: usize>(row: &[u8], acts: [&[BlockQ8K]; N], stream: bool) -> [f32; N] {
    let nib = _mm256_set1_epi8(0x0F);
    let two = _mm256_set1_epi8(0x30);
    let mut out = [0f32; N];
    for (i, b) in row.chunks_exact(210).enumerate() {
        if stream {
            prefetch_span(row, i * 210, 210);
        }
        let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
        let d = f16_at(b, 208);
        // The 256 quants plus 32 (0..64, unsigned), 32 values per register: register
        // 4n + k holds values 128n + 32k.. (sub-blocks 8n + 2k and 8n + 2k + 1).
        let mut q = [_mm256_setzero_si256(); 8];
        for n in 0..2 {
            let h = load_at(qh, 32 * n);
            let l0 = load_at(ql, 64 * n);
            let l1 = load_at(ql, 64 * n + 32);
            let high = |shift: i32| match shift {
                4 => _mm256_and_si256(_mm256_slli_epi16(h, 4), two),
                2 => _mm256_and_si256(_mm256_slli_epi16(h, 2), two),
                0 => _mm256_and_si256(h, two),
                _ => _mm256_and_si256(_mm256_srli_epi16(h, 2), two),
            };
            q[4 * n] = _mm256_or_si256(_mm256_and_si256(l0, nib), high(4));
            q[4 * n + 1] = _mm256_or_si256(_mm256_and_si256(l1, nib), high(2));
            q[4 * n + 2] =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), nib), high(0));
            q[4 * n + 3] =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), nib), high(-2));
        }
        // Register r's two sub-block scales, one per 128-bit half, as 16-bit lanes; and all
        // 16 scales for the `- 32` correction (through the 16-value sums).
        let scale = |r: usize| {
            _mm256_set_m128i(
                _mm_set1_epi16(sc[2 * r + 1] as i8 as i16),
                _mm_set1_epi16(sc[2 * r] as i8 as i16),
            )
        };
        // SAFETY: reads exactly the 16 bytes of `sc`; `loadu` has no alignment requirement.
        let scales16 = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(sc.as_ptr().cast()) });
        for t in 0..N {
            let a = &acts[t][i];
            let mut acc = _mm256_setzero_si256();
            for (r, qv) in q.iter().enumerate() {
                let p = _mm256_maddubs_epi16(*qv, load_y(a, 32 * r));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, scale(r)));
            }
            let offset = _mm256_slli_epi32(_mm256_madd_epi16(load_bsums(a), scales16), 5);
            let isum = hsum_i32(_mm256_sub_epi32(acc, offset));
            out[t] += d * a.d * isum as f32;
        }
    }
    out
}

const _: () = assert!(QK_K == 256);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::K_TOKENS;
    use crate::kernels::kquants::{dot_k_multi_body, quantize_row_k_body};

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn simd_q8k_quantization_equals_the_portable_body_bit_for_bit() {
        if !available() {
            return;
        }
        let mut seed = 9;
        let mut x: Vec<f32> = (0..4 * QK_K)
            .map(|_| lcg(&mut seed) as f32 / (1u64 << 31) as f32 - 0.5)
            .collect();
        // Ties: block 1 holds halves of the step exactly; block 2 a negative maximum that
        // also appears positive later; block 3 is all zeros.
        for (i, v) in x[QK_K..2 * QK_K].iter_mut().enumerate() {
            *v = (i as f32 - 128.0) * 0.5;
        }
        x[2 * QK_K + 5] = -3.0;
        x[2 * QK_K + 9] = 3.0;
        x[3 * QK_K..].fill(0.0);
        let (mut simd, mut plain) = (vec![BlockQ8K::default(); 4], vec![BlockQ8K::default(); 4]);
        quantize_row_k(&x, &mut simd);
        quantize_row_k_body(&x, &mut plain);
        assert_eq!(simd, plain);
    }

    #[test]
    fn simd_k_quant_kernels_equal_the_portable_body_bit_for_bit() {
        if !available() {
            return;
        }
        let mut seed = 3;
        let blocks = 3;
        for (kind, bb) in [
            (WeightKind::Q4_K, 144),
            (WeightKind::Q5_K, 176),
            (WeightKind::Q6_K, 210),
        ] {
            // Random bytes with finite, modest f16 scales (exponent bits kept low).
            let mut row: Vec<u8> = (0..blocks * bb).map(|_| lcg(&mut seed) as u8).collect();
            for b in row.chunks_exact_mut(bb) {
                let at: &[usize] = if kind == WeightKind::Q6_K {
                    &[209]
                } else {
                    &[1, 3]
                };
                for &i in at {
                    b[i] &= 0x1f;
                }
            }
            let acts: Vec<Vec<BlockQ8K>> = (0..K_TOKENS)
                .map(|_| {
                    let x: Vec<f32> = (0..blocks * QK_K)
                        .map(|_| lcg(&mut seed) as f32 / (1u64 << 31) as f32 - 0.5)
                        .collect();
                    let mut q = vec![BlockQ8K::default(); blocks];
                    quantize_row_k_body(&x, &mut q);
                    q
                })
                .collect();
            for n in 1..=K_TOKENS {
                let a: Vec<&[BlockQ8K]> = acts[..n].iter().map(Vec::as_slice).collect();
                let (mut simd, mut plain) = ([0f32; K_TOKENS], [0f32; K_TOKENS]);
                dot_k_multi(kind, &row, &a, &mut simd, true);
                dot_k_multi_body(kind, &row, &a, &mut plain);
                assert_eq!(simd[..n], plain[..n], "{kind:?} with {n} vectors");
                assert!(plain[..n].iter().all(|v| v.is_finite() && *v != 0.0));
            }
        }
    }
}
