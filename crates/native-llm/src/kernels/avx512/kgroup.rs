//! `Q4_K` and `Q6_K` groups of 16 rows (layouts in [`kernels::kgroup`](crate::kernels::kgroup))
//! against up to 8 [`BlockQ8K`] activation vectors with AVX-512 VNNI.
//!
//! Per super-block and sub-block, the group's quant vectors are loaded once and unpacked
//! into vectors of 16 rows × 4 quants (unsigned bytes: `Q4_K` nibbles, `Q6_K` 6-bit values
//! `q` where the weight is `q - 32`); per token, one `vpdpbusd` per vector with a broadcast
//! activation quad forms the 16 rows' sub-block sums in their own 32-bit lanes, which are
//! multiplied by the rows' scales (`vpmulld`) and summed over the super-block. The `Q4_K`
//! minimum terms and the `Q6_K` `- 32` are `vpdpwssd` of the rows' scale or minimum pairs
//! with the activation's 16- or 32-value sums. The integer sums are exact (below 2^29);
//! they are scaled by `d · d_y` (and `dmin · d_y`) into 16 float lanes, one per row, so a
//! result equals the portable body within rounding and never depends on the other tokens
//! of the call.

use std::arch::x86_64::*;

use super::available;
use super::quant::load_64;
use crate::kernels::avx2::simd::{load_16, load_32};
use crate::kernels::format::{BlockQ8K, WeightKind};
use crate::kernels::kgroup::{
    K_GROUP, K4_BLOCK, K6_BLOCK, at, at6, bytes_at, sum16_pair, sum32_pair,
};

/// `out[t][r] = row r · acts[t]` for a `Q4_K` or `Q6_K` group and 1 to 8 activation vectors.
pub fn dot_group(kind: WeightKind, group: &[u8], acts: &[&[BlockQ8K]], out: &mut [[f32; K_GROUP]]) {
    debug_assert!(available());
    fn run<const N: usize>(
        kind: WeightKind,
        group: &[u8],
        acts: [&[BlockQ8K]; N],
    ) -> [[f32; K_GROUP]; N] {
        // SAFETY: reached only when `kernels::isa()` is `Isa::Avx512`, chosen after
        // `available()` confirmed AVX2, FMA, F16C, AVX-512 F/BW/VL and AVX-512 VNNI.
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

/// The 4 activation bytes `i..i + 4` of `a` in every 32-bit lane.
#[inline]
#[target_feature(enable = "avx512f")]
fn quad(a: &BlockQ8K, i: usize) -> __m512i {
    let q: &[i8; 4] = a.qs[i..i + 4].try_into().expect("4 quants");
    _mm512_set1_epi32(i32::from_le_bytes(q.map(|v| v as u8)))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4k_g16<const N: usize>(group: &[u8], acts: [&[BlockQ8K]; N]) -> [[f32; K_GROUP]; N] {
    let nib = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); N];
    for (i, b) in group.chunks_exact(K4_BLOCK).enumerate() {
        let mut isum = [_mm512_setzero_si512(); N];
        for j in 0..8 {
            let q = &b[at::QS + 256 * j..at::QS + 256 * j + 256];
            let lo: [__m512i; 4] =
                std::array::from_fn(|k| _mm512_and_si512(load_64(&q[64 * k..64 * k + 64]), nib));
            let hi: [__m512i; 4] = std::array::from_fn(|k| {
                _mm512_and_si512(
                    _mm512_srli_epi16::<4>(load_64(&q[64 * k..64 * k + 64])),
                    nib,
                )
            });
            let scale = _mm512_cvtepu8_epi32(load_16(bytes_at(b, at::SC + K_GROUP * j)));
            for t in 0..N {
                let a = &acts[t][i];
                let (mut s_lo, mut s_hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for k in 0..4 {
                    s_lo = _mm512_dpbusd_epi32(s_lo, lo[k], quad(a, 32 * j + 4 * k));
                    s_hi = _mm512_dpbusd_epi32(s_hi, hi[k], quad(a, 32 * j + 16 + 4 * k));
                }
                let s = _mm512_mullo_epi32(_mm512_add_epi32(s_lo, s_hi), scale);
                isum[t] = _mm512_add_epi32(isum[t], s);
            }
        }
        let d = _mm512_cvtph_ps(load_32(bytes_at(b, at::D)));
        let dmin = _mm512_cvtph_ps(load_32(bytes_at(b, at::DMIN)));
        let mins: [__m512i; 4] =
            std::array::from_fn(|p| _mm512_cvtepu8_epi16(load_32(bytes_at(b, at::MINS + 32 * p))));
        for t in 0..N {
            let a = &acts[t][i];
            let mut msum = _mm512_setzero_si512();
            for (p, m) in mins.iter().enumerate() {
                msum = _mm512_dpwssd_epi32(msum, *m, _mm512_set1_epi32(sum32_pair(a, p)));
            }
            let dy = _mm512_set1_ps(a.d);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(d, dy), acc[t]);
            acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_mul_ps(dmin, dy), acc[t]);
        }
    }
    std::array::from_fn(|t| lanes(acc[t]))
}

/// The 16 float lanes of `v`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn lanes(v: __m512) -> [f32; K_GROUP] {
    let mut o = [0f32; K_GROUP];
    // SAFETY: writes exactly the 16 floats of `o`; `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
    o
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q6k_g16<const N: usize>(group: &[u8], acts: [&[BlockQ8K]; N]) -> [[f32; K_GROUP]; N] {
    let nib = _mm512_set1_epi8(0x0F);
    let high = _mm512_set1_epi8(0x30);
    let mut acc = [_mm512_setzero_ps(); N];
    for (i, b) in group.chunks_exact(K6_BLOCK).enumerate() {
        let mut isum = [_mm512_setzero_si512(); N];
        for p in 0..8 {
            let ql: [__m512i; 4] =
                std::array::from_fn(|k| load_64(&b[at6::ql(p, k)..at6::ql(p, k) + 64]));
            // Each row's scales `2p` and `2p + 1` as 16-bit halves, then each alone.
            let pair = _mm512_cvtepi8_epi16(load_32(bytes_at(b, at6::SC + 32 * p)));
            let scale = [
                _mm512_srai_epi32::<16>(_mm512_slli_epi32::<16>(pair)),
                _mm512_srai_epi32::<16>(pair),
            ];
            for (g, scale) in scale.into_iter().enumerate() {
                let s = 2 * p + g;
                let qh = load_64(&b[at6::qh(s)..at6::qh(s) + 64]);
                // Quants `16s + 4k..`: their 4 low bits from `ql`, the 2 high bits of field
                // `k` of `qh` moved to bits 4..6.
                let h = [
                    _mm512_slli_epi16::<4>(qh),
                    _mm512_slli_epi16::<2>(qh),
                    qh,
                    _mm512_srli_epi16::<2>(qh),
                ];
                let q: [__m512i; 4] = std::array::from_fn(|k| {
                    let lo = if g == 0 {
                        ql[k]
                    } else {
                        _mm512_srli_epi16::<4>(ql[k])
                    };
                    // `lo | (h & high)` in one instruction (truth table 0xF8).
                    _mm512_ternarylogic_epi32::<0xF8>(_mm512_and_si512(lo, nib), h[k], high)
                });
                for t in 0..N {
                    let a = &acts[t][i];
                    let mut sum = _mm512_setzero_si512();
                    for (k, q) in q.iter().enumerate() {
                        sum = _mm512_dpbusd_epi32(sum, *q, quad(a, 16 * s + 4 * k));
                    }
                    let v = _mm512_mullo_epi32(sum, scale);
                    isum[t] = _mm512_add_epi32(isum[t], v);
                }
            }
        }
        let d = _mm512_cvtph_ps(load_32(bytes_at(b, at6::D)));
        for t in 0..N {
            let a = &acts[t][i];
            // The `- 32`: 32 × Σ scale × the activation's 16-value sum.
            let mut off = _mm512_setzero_si512();
            for p in 0..8 {
                let pair = _mm512_cvtepi8_epi16(load_32(bytes_at(b, at6::SC + 32 * p)));
                off = _mm512_dpwssd_epi32(off, pair, _mm512_set1_epi32(sum16_pair(a, p)));
            }
            let isum = _mm512_sub_epi32(isum[t], _mm512_slli_epi32::<5>(off));
            let dy = _mm512_set1_ps(a.d);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(d, dy), acc[t]);
        }
    }
    std::array::from_fn(|t| lanes(acc[t]))
}
