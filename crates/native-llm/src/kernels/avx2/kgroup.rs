//! `Q4_K` and `Q6_K` groups of 16 rows (layouts in [`kernels::kgroup`](crate::kernels::kgroup))
//! against up to 8 [`BlockQ8K`] activation vectors with AVX2: the AVX-512 group kernels'
//! method on CPUs without AVX-512 VNNI.
//!
//! Each group super-block runs as two halves of 8 rows (one 32-bit lane per row). Without
//! `vpdpbusd`, each 4-quant step is a `vpmaddubsw` (unsigned quants × signed activations,
//! pairs summed in 16 bits) whose 16-bit sums are added while they fit (`Q4_K`: a whole
//! 32-value sub-block, at most 16 × 15 × 128 = 30720; `Q6_K`: two steps, 4 × 63 × 128 =
//! 32256), then one `vpmaddwd` by the rows' scales (each in both 16-bit halves of its lane)
//! gives the exact 32-bit sums. The floats are formed as the AVX-512 kernels form them, lane
//! for lane, so the two give the same results bit for bit.

use std::arch::x86_64::*;

use super::simd::{available, load_16, load_32};
use crate::kernels::format::{BlockQ8K, WeightKind};
use crate::kernels::kgroup::{
    K_GROUP, K4_BLOCK, K6_BLOCK, at, at6, bytes_at, sum16_pair, sum32_pair,
};

/// Rows per half group (one 256-bit register of 32-bit lanes).
const HALF: usize = K_GROUP / 2;

/// `out[t][r] = row r · acts[t]` for a `Q4_K` or `Q6_K` group and 1 to 8 activation vectors.
pub fn dot_group(kind: WeightKind, group: &[u8], acts: &[&[BlockQ8K]], out: &mut [[f32; K_GROUP]]) {
    debug_assert!(available());
    fn run<const N: usize>(
        kind: WeightKind,
        group: &[u8],
        acts: [&[BlockQ8K]; N],
    ) -> [[f32; K_GROUP]; N] {
        // SAFETY: reached only when `kernels::isa()` chose AVX2 or AVX-512 (which includes
        // the AVX2 set), after `available()` confirmed AVX2, FMA and F16C.
        unsafe {
            match kind {
                WeightKind::Q4_K => q4k_g16::<N>(group, acts),
                WeightKind::Q6_K => q6k_g16::<N>(group, acts),
                _ => unreachable!("{kind:?} has no group kernel"),
            }
        }
    }
    let n = acts.len();
    let res: &[[f32; K_GROUP]] = with_token_array!(acts, run(kind, group));
    out[..n].copy_from_slice(res);
}

/// The 8 bytes at `b[i..]` in the low bits of a 128-bit register.
#[inline]
#[target_feature(enable = "avx2")]
fn load_8(b: &[u8], i: usize) -> __m128i {
    let v: &[u8; 8] = bytes_at(b, i);
    // SAFETY: reads exactly the 8 bytes of `v`; no alignment requirement.
    unsafe { _mm_loadl_epi64(v.as_ptr().cast()) }
}

/// The 4 activation bytes `i..i + 4` of `a` in every 32-bit lane.
#[inline]
#[target_feature(enable = "avx2")]
fn quad(a: &BlockQ8K, i: usize) -> __m256i {
    let q: &[i8; 4] = a.qs[i..i + 4].try_into().expect("4 quants");
    _mm256_set1_epi32(i32::from_le_bytes(q.map(|v| v as u8)))
}

/// The low 16 bits of each 32-bit lane of `x` in both its halves.
#[inline]
#[target_feature(enable = "avx2")]
fn both_halves(x: __m256i) -> __m256i {
    let low = _mm256_srli_epi32::<16>(_mm256_slli_epi32::<16>(x));
    _mm256_or_si256(low, _mm256_slli_epi32::<16>(low))
}

/// The 16 f16 bytes at `b[i..]` as 8 floats.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn halfs(b: &[u8], i: usize) -> __m256 {
    _mm256_cvtph_ps(load_16(bytes_at(b, i)))
}

/// The 8 float lanes of `v` into `out`.
#[inline]
#[target_feature(enable = "avx2")]
fn store(v: __m256, out: &mut [f32]) {
    let o: &mut [f32; 8] = out.try_into().expect("8 floats");
    // SAFETY: writes exactly the 8 floats of `o`; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) };
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4k_g16<const N: usize>(group: &[u8], acts: [&[BlockQ8K]; N]) -> [[f32; K_GROUP]; N] {
    let nib = _mm256_set1_epi8(0x0F);
    let mut acc = [[_mm256_setzero_ps(); N]; 2];
    for (i, b) in group.chunks_exact(K4_BLOCK).enumerate() {
        for (h, acc) in acc.iter_mut().enumerate() {
            let mut isum = [_mm256_setzero_si256(); N];
            for j in 0..8 {
                let scale = both_halves(_mm256_cvtepu8_epi32(load_8(
                    b,
                    at::SC + K_GROUP * j + HALF * h,
                )));
                let q: [__m256i; 4] = std::array::from_fn(|k| {
                    load_32(bytes_at(b, at::QS + 256 * j + 64 * k + 32 * h))
                });
                let lo: [__m256i; 4] = std::array::from_fn(|k| _mm256_and_si256(q[k], nib));
                let hi: [__m256i; 4] =
                    std::array::from_fn(|k| _mm256_and_si256(_mm256_srli_epi16::<4>(q[k]), nib));
                for t in 0..N {
                    let a = &acts[t][i];
                    let mut s = _mm256_setzero_si256();
                    for k in 0..4 {
                        s = _mm256_add_epi16(
                            s,
                            _mm256_maddubs_epi16(lo[k], quad(a, 32 * j + 4 * k)),
                        );
                        let y = quad(a, 32 * j + 16 + 4 * k);
                        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(hi[k], y));
                    }
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s, scale));
                }
            }
            let d = halfs(b, at::D + 2 * HALF * h);
            let dmin = halfs(b, at::DMIN + 2 * HALF * h);
            let mins: [__m256i; 4] = std::array::from_fn(|p| {
                _mm256_cvtepu8_epi16(load_16(bytes_at(
                    b,
                    at::MINS + 2 * K_GROUP * p + 2 * HALF * h,
                )))
            });
            for t in 0..N {
                let a = &acts[t][i];
                let mut msum = _mm256_setzero_si256();
                for (p, m) in mins.iter().enumerate() {
                    let pair = sum32_pair(a, p);
                    msum = _mm256_add_epi32(msum, _mm256_madd_epi16(*m, _mm256_set1_epi32(pair)));
                }
                let dy = _mm256_set1_ps(a.d);
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(d, dy), acc[t]);
                acc[t] =
                    _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(dmin, dy), acc[t]);
            }
        }
    }
    finish(acc)
}

/// Both halves' float lanes as the 16 results of each token.
#[target_feature(enable = "avx2")]
fn finish<const N: usize>(acc: [[__m256; N]; 2]) -> [[f32; K_GROUP]; N] {
    std::array::from_fn(|t| {
        let mut o = [0f32; K_GROUP];
        store(acc[0][t], &mut o[..HALF]);
        store(acc[1][t], &mut o[HALF..]);
        o
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q6k_g16<const N: usize>(group: &[u8], acts: [&[BlockQ8K]; N]) -> [[f32; K_GROUP]; N] {
    let nib = _mm256_set1_epi8(0x0F);
    let high = _mm256_set1_epi8(0x30);
    let mut acc = [[_mm256_setzero_ps(); N]; 2];
    for (i, b) in group.chunks_exact(K6_BLOCK).enumerate() {
        for (h, acc) in acc.iter_mut().enumerate() {
            let mut isum = [_mm256_setzero_si256(); N];
            // Each row's scales `2p` and `2p + 1` as 16-bit halves of its lane.
            let pairs: [__m256i; 8] = std::array::from_fn(|p| {
                _mm256_cvtepi8_epi16(load_16(bytes_at(
                    b,
                    at6::SC + 2 * K_GROUP * p + 2 * HALF * h,
                )))
            });
            for (p, pair) in pairs.iter().enumerate() {
                let ql: [__m256i; 4] =
                    std::array::from_fn(|k| load_32(bytes_at(b, at6::ql(p, k) + 32 * h)));
                let scale = [
                    both_halves(*pair),
                    both_halves(_mm256_srli_epi32::<16>(*pair)),
                ];
                for (g, scale) in scale.into_iter().enumerate() {
                    let s = 2 * p + g;
                    let qh = load_32(bytes_at(b, at6::qh(s) + 32 * h));
                    let hb = [
                        _mm256_slli_epi16::<4>(qh),
                        _mm256_slli_epi16::<2>(qh),
                        qh,
                        _mm256_srli_epi16::<2>(qh),
                    ];
                    let q: [__m256i; 4] = std::array::from_fn(|k| {
                        let lo = if g == 0 {
                            ql[k]
                        } else {
                            _mm256_srli_epi16::<4>(ql[k])
                        };
                        _mm256_or_si256(_mm256_and_si256(lo, nib), _mm256_and_si256(hb[k], high))
                    });
                    for t in 0..N {
                        let a = &acts[t][i];
                        let m = |k: usize| _mm256_maddubs_epi16(q[k], quad(a, 16 * s + 4 * k));
                        let s01 = _mm256_add_epi16(m(0), m(1));
                        let s23 = _mm256_add_epi16(m(2), m(3));
                        let v = _mm256_add_epi32(
                            _mm256_madd_epi16(s01, scale),
                            _mm256_madd_epi16(s23, scale),
                        );
                        isum[t] = _mm256_add_epi32(isum[t], v);
                    }
                }
            }
            let d = halfs(b, at6::D + 2 * HALF * h);
            for t in 0..N {
                let a = &acts[t][i];
                // The `- 32`: 32 × Σ scale × the activation's 16-value sum.
                let mut off = _mm256_setzero_si256();
                for (p, pair) in pairs.iter().enumerate() {
                    let y = _mm256_set1_epi32(sum16_pair(a, p));
                    off = _mm256_add_epi32(off, _mm256_madd_epi16(*pair, y));
                }
                let isum = _mm256_sub_epi32(isum[t], _mm256_slli_epi32::<5>(off));
                let dy = _mm256_set1_ps(a.d);
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(d, dy), acc[t]);
            }
        }
    }
    finish(acc)
}

#[cfg(test)]
mod tests {
    use crate::kernels::kq_check::k_group_matches_portable_and_batch;

    #[test]
    fn avx2_k_quant_group_kernels_match_the_portable_rows_and_do_not_depend_on_the_batch() {
        if !super::available() {
            return;
        }
        k_group_matches_portable_and_batch(13, super::dot_group);
    }
}
