//! AVX2 kernels for the K-quant formats (`Q4_K`, `Q5_K`, `Q6_K`; layouts in
//! [`kernels::kquants`](crate::kernels::kquants)): one weight row against up to
//! [`K_TOKENS`](crate::kernels::K_TOKENS) activation vectors, each super-block unpacked
//! into registers once for all of them. `Q5_K` runs here on AVX-512 machines too.
//!
//! Per super-block and token the integer sums are exact (`vpmaddubsw` of unsigned quants and
//! signed activations, then `vpmaddwd` by the sub-block scales, in 32-bit lanes). They stay
//! in 8 lanes: each super-block's lanes become floats, scaled by `d · d_y` (and the minimum
//! sums by `dmin · d_y`) into float lanes per token, summed once at the end of the row. So a
//! token's result is the same whatever the number of tokens in the call (the same operations
//! on its own lanes), and equals the portable body's within rounding (that one adds one float
//! per super-block), not bit for bit.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::simd::{available, hsum, load_16, load_32};
use crate::kernels::format::{BlockQ8K, QK_K, WeightKind};

/// `out[t] = row · acts[t]` for a K-quant row (`out.len() >= acts.len()`, at most
/// [`K_TOKENS`](crate::kernels::K_TOKENS) vectors). Callers check AVX2/FMA/F16C first. No
/// software prefetch: the rows stream forward and the hardware prefetcher keeps up
/// (`prefetchnta` 16 KiB ahead cost the AVX-512 kernels 7-15% of decode).
pub fn dot_k_multi(kind: WeightKind, row: &[u8], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    debug_assert!(available());
    fn run<const N: usize>(kind: WeightKind, row: &[u8], acts: [&[BlockQ8K]; N]) -> [f32; N] {
        // SAFETY: reached only after `available()` confirmed AVX2, FMA and F16C.
        unsafe {
            match kind {
                WeightKind::Q4_K => q45k::<N, false>(row, acts),
                WeightKind::Q5_K => q45k::<N, true>(row, acts),
                WeightKind::Q6_K => q6k::<N>(row, acts),
                _ => unreachable!("{kind:?} is not a K-quant"),
            }
        }
    }
    let n = acts.len();
    let res: &[f32] = with_token_array!(acts, run(kind, row));
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

/// The two little-endian f16s of `w` (bytes `0..2`, `2..4`) as f32, each broadcast to all
/// lanes (one F16C conversion; `half`'s own conversion checks the CPU's features on every
/// call).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16_pair(w: [u8; 4]) -> (__m256, __m256) {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes(w)));
    (
        _mm256_broadcastss_ps(v),
        _mm256_broadcastss_ps(_mm_movehdup_ps(v)),
    )
}

/// The 8 scales (bytes `0..8`) and 8 minimums (bytes `8..16`) of a `Q4_K`/`Q5_K`
/// super-block, in both 128-bit halves, unpacked from the super-block's first 16 bytes (`d`,
/// `dmin` and the 12 scale bytes) with 32-bit lane operations: the same values as
/// [`scales_mins`](crate::kernels::kquants::scales_mins), without its byte loop.
#[inline]
#[target_feature(enable = "avx2")]
pub(in crate::kernels) fn scales_mins_bytes(b: &[u8]) -> __m256i {
    // 32-bit lanes: `d dmin`, then the scale words w0, w1, w2.
    let v = load_16(b[..16].try_into().expect("16 bytes"));
    // Scales 0..4 and minimums 0..4 are the low 6 bits of w0 and w1; scales and minimums
    // 4..8 are the low and high nibbles of w2, with the top two bits of w0 and w1 above them.
    let low = _mm_srlv_epi32(
        _mm_shuffle_epi32::<0b11_10_11_01>(v),
        _mm_setr_epi32(0, 0, 0, 4),
    );
    let low = _mm_and_si128(
        low,
        _mm_setr_epi32(0x3F3F_3F3F, 0x0F0F_0F0F, 0x3F3F_3F3F, 0x0F0F_0F0F),
    );
    let top = _mm_srli_epi32::<2>(_mm_shuffle_epi32::<0b10_10_01_01>(v));
    let top = _mm_and_si128(top, _mm_setr_epi32(0, 0x3030_3030, 0, 0x3030_3030));
    _mm256_broadcastsi128_si256(_mm_or_si128(low, top))
}

/// Byte `s` of each 128-bit half of `v` as every 16-bit lane (zero-extended: `vpshufb` writes
/// zero for an index with the top bit set).
#[inline]
#[target_feature(enable = "avx2")]
fn splat16(v: __m256i, s: usize) -> __m256i {
    _mm256_shuffle_epi8(v, _mm256_set1_epi16(0x8000u16 as i16 | s as i16))
}

/// `Q4_K` (`Q5 = false`) or `Q5_K` (`Q5 = true`) row · `N` activation vectors. Register `s`
/// holds sub-block `s` (32 values: the low nibbles of bytes `32j..32j + 32` for `s = 2j`,
/// their high nibbles for `s = 2j + 1`, with the fifth bits of `Q5_K` on top), under
/// activation bytes `32s..32s + 32`. Per token, each super-block's exact integer sums (8
/// lanes of scaled products, 8 of minimums times activation sums) are scaled by `d · d_y` and
/// `dmin · d_y` into one float accumulator, summed once at the end of the row.
#[target_feature(enable = "avx2,fma,f16c")]
fn q45k<const N: usize, const Q5: bool>(row: &[u8], acts: [&[BlockQ8K]; N]) -> [f32; N] {
    let bb = if Q5 { 176 } else { 144 };
    let nib = _mm256_set1_epi8(0x0F);
    let top = _mm256_set1_epi8(0x10);
    let z = -128i8;
    #[rustfmt::skip]
    let dup = _mm256_setr_epi8(
        8, z, 8, z, 9, z, 9, z, 10, z, 10, z, 11, z, 11, z,
        12, z, 12, z, 13, z, 13, z, 14, z, 14, z, 15, z, 15, z,
    );
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, b) in row.chunks_exact(bb).enumerate() {
        let (d, dmin) = f16_pair([b[0], b[1], b[2], b[3]]);
        let sm = scales_mins_bytes(b);
        // Minimum `j` in 16-bit lanes `2j` and `2j + 1` (one per 16-value activation sum of
        // its sub-block).
        let mins = _mm256_shuffle_epi8(sm, dup);
        let qs = if Q5 { &b[48..176] } else { &b[16..144] };
        // `Q5_K`: bits 2j and 2j + 1 of each `qh` byte are the fifth bits of register 2j's and
        // 2j + 1's values; `h` holds them in bits 0 and 1 for step j.
        let mut h = if Q5 {
            load_at(b, 16)
        } else {
            _mm256_setzero_si256()
        };
        // Register pair by register pair, all tokens (few registers live: the pair, its two
        // scales and one integer sum per token).
        let mut isum = [_mm256_setzero_si256(); N];
        for j in 0..4 {
            let w = load_at(qs, 32 * j);
            let mut lo = _mm256_and_si256(w, nib);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(w), nib);
            if Q5 {
                // 16-bit shifts move no bit that the byte mask keeps across bytes (bits 0, 1
                // to bit 4; bits 2.. to 0..).
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16::<4>(h), top));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16::<3>(h), top));
                h = _mm256_srli_epi16::<2>(h);
            }
            let (s_lo, s_hi) = (splat16(sm, 2 * j), splat16(sm, 2 * j + 1));
            for t in 0..N {
                let a = &acts[t][i];
                let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load_y(a, 64 * j)), s_lo);
                let p_hi =
                    _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load_y(a, 64 * j + 32)), s_hi);
                isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(p_lo, p_hi));
            }
        }
        for t in 0..N {
            let a = &acts[t][i];
            let msum = _mm256_madd_epi16(load_bsums(a), mins);
            let ad = _mm256_set1_ps(a.d);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(d, ad), acc[t]);
            acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(dmin, ad), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum(acc[t]))
}

/// `Q6_K` row · `N` activation vectors. The quants plus 32 (0..64, unsigned), 32 values per
/// register: register `4n + k` holds values `128n + 32k..` (bytes `64n + 32(k % 2)..` of
/// `ql`, low nibbles for `k < 2`, high for `k >= 2`, with two bits of each `qh[32n..]` byte on
/// top), 16-value sub-blocks `2r` and `2r + 1` of register `r`, one per 128-bit half. Per
/// token, the super-block's exact integer sum (8 lanes, less 32 × the scaled activation sums
/// for the `+ 32`) is scaled by `d · d_y` into float lanes, summed once at the end of the row.
#[target_feature(enable = "avx2,fma,f16c")]
fn q6k<const N: usize>(row: &[u8], acts: [&[BlockQ8K]; N]) -> [f32; N] {
    let nib = _mm256_set1_epi8(0x0F);
    let two = _mm256_set1_epi8(0x30);
    // Register `4m + k`'s scales: lanes `2k` (low half) and `2k + 1` (high half) of the
    // half `m` of the 16 scales.
    let pick: [__m256i; 4] = std::array::from_fn(|k| {
        let b = 4 * k as i16;
        _mm256_set_m128i(
            _mm_set1_epi16(((b + 3) << 8) | (b + 2)),
            _mm_set1_epi16(((b + 1) << 8) | b),
        )
    });
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, b) in row.chunks_exact(210).enumerate() {
        let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
        let (d, _) = f16_pair([b[208], b[209], 0, 0]);
        // SAFETY: reads exactly the 16 bytes of `sc`; `loadu` has no alignment requirement.
        let scales16 = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(sc.as_ptr().cast()) });
        // Register pair by register pair (`4n + k`, `4n + k + 2`: the low and high nibbles of
        // the same `ql` bytes), all tokens.
        let mut isum = [_mm256_setzero_si256(); N];
        for n in 0..2 {
            let h = load_at(qh, 32 * n);
            let half = if n == 0 {
                _mm256_permute4x64_epi64::<0b01_00_01_00>(scales16)
            } else {
                _mm256_permute4x64_epi64::<0b11_10_11_10>(scales16)
            };
            for k in 0..2 {
                let l = load_at(ql, 64 * n + 32 * k);
                let hi = |v: __m256i| _mm256_and_si256(v, two);
                // The `qh` bits: bits 0-1 (k = 0) or 2-3 (k = 1) for the low nibbles, 4-5 or
                // 6-7 for the high ones, moved to bits 4-5.
                let (h_lo, h_hi) = if k == 0 {
                    (_mm256_slli_epi16::<4>(h), h)
                } else {
                    (_mm256_slli_epi16::<2>(h), _mm256_srli_epi16::<2>(h))
                };
                let q_lo = _mm256_or_si256(_mm256_and_si256(l, nib), hi(h_lo));
                let q_hi =
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(l), nib), hi(h_hi));
                let s_lo = _mm256_shuffle_epi8(half, pick[k]);
                let s_hi = _mm256_shuffle_epi8(half, pick[k + 2]);
                let (r_lo, r_hi) = (4 * n + k, 4 * n + k + 2);
                for t in 0..N {
                    let a = &acts[t][i];
                    let p_lo =
                        _mm256_madd_epi16(_mm256_maddubs_epi16(q_lo, load_y(a, 32 * r_lo)), s_lo);
                    let p_hi =
                        _mm256_madd_epi16(_mm256_maddubs_epi16(q_hi, load_y(a, 32 * r_hi)), s_hi);
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(p_lo, p_hi));
                }
            }
        }
        for t in 0..N {
            let a = &acts[t][i];
            let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(load_bsums(a), scales16));
            let isum = _mm256_sub_epi32(isum[t], offset);
            let dd = _mm256_mul_ps(d, _mm256_set1_ps(a.d));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), dd, acc[t]);
        }
    }
    std::array::from_fn(|t| hsum(acc[t]))
}

const _: () = assert!(QK_K == 256);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::kq_check::{k_kernel_matches_portable_and_batch, lcg};
    use crate::kernels::kquants::quantize_row_k_body;

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
    fn simd_k_quant_kernels_match_the_portable_body_and_do_not_depend_on_the_batch() {
        if !available() {
            return;
        }
        let kinds = [WeightKind::Q4_K, WeightKind::Q5_K, WeightKind::Q6_K];
        k_kernel_matches_portable_and_batch(&kinds, 3, dot_k_multi);
    }
}
