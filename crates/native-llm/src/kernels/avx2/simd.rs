//! The building blocks every AVX2 kernel shares: CPU detection, unaligned loads and stores of
//! fixed-size arrays, float-format loads, horizontal sums and weight-stream prefetching.
//! Uses nothing else of the kernels.

use std::arch::x86_64::*;

use crate::kernels::format::BlockQ8;

/// Whether this CPU has everything these kernels use.
pub fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The 32 bytes of `b`, loaded.
#[inline]
#[target_feature(enable = "avx2")]
pub(in crate::kernels) fn load_32(b: &[u8; 32]) -> __m256i {
    // SAFETY: reads exactly the 32 bytes of `b`; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
pub(in crate::kernels) fn load_16(b: &[u8; 16]) -> __m128i {
    // SAFETY: reads exactly the 16 bytes of `b`; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load_q8(a: &BlockQ8) -> __m256i {
    // SAFETY: reads exactly the 32 bytes of `a.qs`; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load_f32x8(x: &[f32; 8]) -> __m256 {
    // SAFETY: reads exactly the 8 floats of `x`; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(x.as_ptr()) }
}

#[inline]
#[target_feature(enable = "f16c")]
pub(super) fn f16(lo: u8, hi: u8) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
        u16::from_le_bytes([lo, hi]) as i32,
    )))
}

#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[inline]
#[target_feature(enable = "avx2")]
pub(in crate::kernels) fn store_8(v: __m256) -> [f32; 8] {
    let mut out = [0f32; 8];
    // SAFETY: writes exactly the 8 floats of `out`; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// Stores 8 floats into `dst` (8 long).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn store_f32x8(dst: &mut [f32], v: __m256) {
    let dst: &mut [f32; 8] = dst.try_into().expect("8 floats");
    // SAFETY: writes exactly the 8 floats of `dst`; no alignment requirement.
    unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) };
}

/// Float weight formats as const parameters of [`tile_f`].
pub(super) const F32: u8 = 0;
pub(super) const F16: u8 = 1;
pub(super) const BF16: u8 = 2;

/// 8 weights `i..i + 8` of a float row of format `K`, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_w8<const K: u8>(row: &[u8], i: usize) -> __m256 {
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
pub(super) fn load_w1<const K: u8>(row: &[u8], i: usize) -> f32 {
    match K {
        F32 => f32::from_le_bytes(row[i * 4..i * 4 + 4].try_into().expect("4 bytes")),
        F16 => f16(row[i * 2], row[i * 2 + 1]),
        _ => half::bf16::from_le_bytes([row[i * 2], row[i * 2 + 1]]).to_f32(),
    }
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
pub(in crate::kernels) fn prefetch_span(data: &[u8], at: usize, len: usize) {
    for off in (0..len).step_by(64).chain([len.saturating_sub(1)]) {
        prefetch_line(data, at + off);
    }
}

/// Prefetches the cache line of `data[at]`, `PREFETCH` bytes ahead, as [`prefetch_span`]
/// does (two calls per 128 bytes of a forward stream reach every line).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn prefetch_line(data: &[u8], at: usize) {
    // A prefetch is a hint that never faults, whatever the address; `wrapping_add` keeps the
    // pointer arithmetic defined past the end of `data`.
    let p = data.as_ptr().wrapping_add(at + PREFETCH);
    _mm_prefetch::<_MM_HINT_NTA>(p as *const i8);
}
