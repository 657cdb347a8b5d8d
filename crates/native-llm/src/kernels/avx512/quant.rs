//! The 8-row kernels over interleaved `Q4_0`, `Q4_1` and `Q8_0` groups (layout in
//! `kernels::interleave`: per block `[d; 8] [m; 8]? [qs]`, the quants in 4-byte pieces with
//! piece `k` of the 8 rows side by side) against up to 8 [`BlockQ8`] activation vectors, with
//! AVX-512 VNNI.
//!
//! One 512-bit register holds two pieces (8 rows × 8 columns); each token's matching
//! activation quads are placed under them by one `vpermd` (lanes 0..8 get the first quad,
//! 8..16 the second) and `vpdpbusd` adds the 4-byte products straight into the rows' 32-bit
//! lanes. At the end of a block the two halves are added, which gives the same 8 exact
//! integer sums as the AVX2 kernel; the floats are then formed exactly as there.

use std::arch::x86_64::*;

use super::available;
use crate::kernels::avx2::simd::{load_16, prefetch_span, store_8};
use crate::kernels::format::{BlockQ8, WeightKind};

/// The 8 dot products of an interleaved group with each of up to 8 activation vectors
/// (`out[t]` for `acts[t]`); `Q4_0`, `Q4_1` and `Q8_0` only.
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
        stream: bool,
        acts: [&[BlockQ8]; N],
    ) -> [[f32; 8]; N] {
        // SAFETY: reached only when `kernels::isa()` is `Isa::Avx512`, chosen after
        // `available()` confirmed AVX2, FMA, F16C, AVX-512 F/BW/VL and AVX-512 VNNI.
        unsafe {
            match kind {
                WeightKind::Q4_0 => dot_x8_q4::<N, false>(group, acts, stream),
                WeightKind::Q4_1 => dot_x8_q4::<N, true>(group, acts, stream),
                WeightKind::Q8_0 => dot_x8_q8_0(group, acts, stream),
                _ => unreachable!("{kind:?} is not an interleaved 32-value format"),
            }
        }
    }
    let res: &[[f32; 8]] = with_token_array!(acts, run(kind, group, stream));
    out[..res.len()].copy_from_slice(res);
}

/// The 64 bytes of `b`, loaded.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn load_64(b: &[u8]) -> __m512i {
    let b: &[u8; 64] = b.try_into().expect("64 bytes");
    // SAFETY: reads exactly the 64 bytes of `b`; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

/// The 32 activation bytes of `a` in the low half of a 512-bit register (high half zero).
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn load_act(a: &BlockQ8) -> __m512i {
    // SAFETY: reads exactly the 32 bytes of `a.qs`; `loadu` has no alignment requirement.
    _mm512_zextsi256_si512(unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) })
}

/// The `vpermd` index that puts quad `q` of a block under lanes 0..8 and quad `q + 1` under
/// lanes 8..16.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn quads(q: i32) -> __m512i {
    _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_set1_epi32(q)),
        _mm256_set1_epi32(q + 1),
    )
}

/// The two 256-bit halves of `v`, added: 8 rows' sums.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn fold(v: __m512i) -> __m256i {
    _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v))
}

/// 8 interleaved `Q4_0`/`Q4_1` (`MIN`) rows against `N` activation vectors. A 64-byte load
/// holds pieces `k` and `k + 1`: as low nibbles columns `4k..4k + 8`, as high nibbles
/// `16 + 4k..16 + 4k + 8`; every token meets them with its quads `k, k + 1` and
/// `4 + k, 5 + k`. Products at most 4 × 15 × 128 per lane and instruction: exact.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_x8_q4<const N: usize, const MIN: bool>(
    group: &[u8],
    acts: [&[BlockQ8]; N],
    stream: bool,
) -> [[f32; 8]; N] {
    let gb = if MIN { 160 } else { 144 };
    let qoff = if MIN { 32 } else { 16 };
    let mask = _mm512_set1_epi8(0x0F);
    let idx = [quads(0), quads(4), quads(2), quads(6)];
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, g) in group.chunks_exact(gb).enumerate() {
        if stream {
            prefetch_span(group, i * gb, gb);
        }
        let a: [&BlockQ8; N] = std::array::from_fn(|t| &acts[t][i]);
        let x: [__m512i; N] = std::array::from_fn(|t| load_act(a[t]));
        let mut sum = [_mm512_setzero_si512(); N];
        for h in 0..2 {
            let w = load_64(&g[qoff + 64 * h..qoff + 64 * h + 64]);
            let lo = _mm512_and_si512(w, mask);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(w), mask);
            for t in 0..N {
                let xl = _mm512_permutexvar_epi32(idx[2 * h], x[t]);
                let xh = _mm512_permutexvar_epi32(idx[2 * h + 1], x[t]);
                sum[t] = _mm512_dpbusd_epi32(sum[t], lo, xl);
                sum[t] = _mm512_dpbusd_epi32(sum[t], hi, xh);
            }
        }
        let d: &[u8; 16] = g[0..16].try_into().expect("8 scales");
        let dv = _mm256_cvtph_ps(load_16(d));
        let mv = if MIN {
            let m: &[u8; 16] = g[16..32].try_into().expect("8 minimums");
            _mm256_cvtph_ps(load_16(m))
        } else {
            // `-8 d · s` as the AVX2 kernel's `d · (-8 s)`: scaling by a power of two is
            // exact, so the product (and the sum `fma` rounds) is the same bit for bit.
            _mm256_mul_ps(dv, _mm256_set1_ps(-8.0))
        };
        for t in 0..N {
            acc[t] = _mm256_fmadd_ps(
                _mm256_mul_ps(dv, _mm256_set1_ps(a[t].d)),
                _mm256_cvtepi32_ps(fold(sum[t])),
                _mm256_fmadd_ps(mv, _mm256_set1_ps(a[t].s), acc[t]),
            );
        }
    }
    std::array::from_fn(|t| store_8(acc[t]))
}

/// 8 interleaved `Q8_0` rows against `N` activation vectors: per block `[d; 8] [qs]`, 4
/// loads of two pieces each. The weights (in -127..=127, see `kernels::interleave`) are made
/// absolute once for all tokens and each token's quads take their signs (a masked `0 - x`),
/// so `vpdpbusd` multiplies |w| · ±x: products at most 4 × 127 × 127 per lane and
/// instruction, exact.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_x8_q8_0<const N: usize>(group: &[u8], acts: [&[BlockQ8]; N], stream: bool) -> [[f32; 8]; N] {
    let zero = _mm512_setzero_si512();
    let idx = [quads(0), quads(2), quads(4), quads(6)];
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, g) in group.chunks_exact(272).enumerate() {
        if stream {
            prefetch_span(group, i * 272, 272);
        }
        let a: [&BlockQ8; N] = std::array::from_fn(|t| &acts[t][i]);
        let x: [__m512i; N] = std::array::from_fn(|t| load_act(a[t]));
        let mut sum = [_mm512_setzero_si512(); N];
        for (k, ix) in idx.iter().enumerate() {
            let w = load_64(&g[16 + 64 * k..80 + 64 * k]);
            let wabs = _mm512_abs_epi8(w);
            let neg = _mm512_movepi8_mask(w);
            for t in 0..N {
                let xq = _mm512_permutexvar_epi32(*ix, x[t]);
                let xs = _mm512_mask_sub_epi8(xq, neg, zero, xq);
                sum[t] = _mm512_dpbusd_epi32(sum[t], wabs, xs);
            }
        }
        let d: &[u8; 16] = g[0..16].try_into().expect("8 scales");
        let dv = _mm256_cvtph_ps(load_16(d));
        for t in 0..N {
            acc[t] = _mm256_fmadd_ps(
                _mm256_mul_ps(dv, _mm256_set1_ps(a[t].d)),
                _mm256_cvtepi32_ps(fold(sum[t])),
                acc[t],
            );
        }
    }
    std::array::from_fn(|t| store_8(acc[t]))
}
