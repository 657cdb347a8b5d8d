//! `Q5_0` and `Q5_1` groups of 16 rows (layout in
//! [`kernels::q5group`](crate::kernels::q5group)) against up to 8 [`BlockQ8`] activation
//! vectors with AVX-512 VNNI.
//!
//! Per block, the group's 4 nibble vectors are loaded once and split into 8 vectors of 16
//! rows × 4 quants; the stored fifth-bit masks add 16 to the bytes that have it (one masked
//! byte add each). Per token, one `vpdpbusd` per vector with the matching activation quad
//! broadcast from memory adds 4 products into each row's own 32-bit lane: the 16 rows'
//! exact block sums in one vector, with no shuffle and no lanes to fold. The floats are
//! then formed per row exactly as the 8-row kernels form them, so results equal theirs bit
//! for bit.

use std::arch::x86_64::*;

use super::available;
use super::kgroup::lanes;
use super::quant::load_64;
use crate::kernels::avx2::simd::{load_32, prefetch_span};
use crate::kernels::format::{BlockQ8, WeightKind};
use crate::kernels::kgroup::bytes_at;
use crate::kernels::q5group::{Q5_GROUP, hi_at};

/// `out[t][r] = row r · acts[t]` for a `Q5_0` or `Q5_1` group and 1 to 8 activation
/// vectors; `stream` prefetches the group ahead (decode steps).
pub fn dot_group(
    kind: WeightKind,
    group: &[u8],
    acts: &[&[BlockQ8]],
    out: &mut [[f32; Q5_GROUP]],
    stream: bool,
) {
    debug_assert!(available());
    fn run<const N: usize>(
        kind: WeightKind,
        group: &[u8],
        stream: bool,
        acts: [&[BlockQ8]; N],
    ) -> [[f32; Q5_GROUP]; N] {
        // SAFETY: reached only when `kernels::isa()` is `Isa::Avx512`, chosen after
        // `available()` confirmed AVX2, FMA, F16C, AVX-512 F/BW/VL and AVX-512 VNNI.
        unsafe {
            match kind {
                WeightKind::Q5_0 => q5_g16::<N, false>(group, acts, stream),
                WeightKind::Q5_1 => q5_g16::<N, true>(group, acts, stream),
                _ => unreachable!("{kind:?} is not Q5_0 or Q5_1"),
            }
        }
    }
    let res: &[[f32; Q5_GROUP]] = with_token_array!(acts, run(kind, group, stream));
    out[..res.len()].copy_from_slice(res);
}

/// Activation quad `c` (bytes `4c..4c + 4`) of `a` in every 32-bit lane.
#[inline]
#[target_feature(enable = "avx512f")]
fn quad(a: &BlockQ8, c: usize) -> __m512i {
    let q: &[i8; 4] = a.qs[4 * c..4 * c + 4].try_into().expect("4 quants");
    _mm512_set1_epi32(i32::from_le_bytes(q.map(|v| v as u8)))
}

/// 16 `Q5_0`/`Q5_1` (`MIN`) rows against `N` activation vectors. Products at most
/// 4 × 31 × 128 per lane and instruction: exact.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q5_g16<const N: usize, const MIN: bool>(
    group: &[u8],
    acts: [&[BlockQ8]; N],
    stream: bool,
) -> [[f32; Q5_GROUP]; N] {
    let kind = if MIN {
        WeightKind::Q5_1
    } else {
        WeightKind::Q5_0
    };
    let gb = kind.block_bytes() * Q5_GROUP;
    let hi = hi_at(kind);
    let nib = _mm512_set1_epi8(0x0F);
    let sixteen = _mm512_set1_epi8(0x10);
    let mut acc = [_mm512_setzero_ps(); N];
    for (i, g) in group.chunks_exact(gb).enumerate() {
        if stream {
            prefetch_span(group, i * gb, gb);
        }
        let a: [&BlockQ8; N] = std::array::from_fn(|t| &acts[t][i]);
        let mut sum = [_mm512_setzero_si512(); N];
        for k in 0..4 {
            let w = load_64(&g[hi + 64 + 64 * k..hi + 128 + 64 * k]);
            let fifth = |c: usize| u64::from_le_bytes(*bytes_at(g, hi + 8 * c));
            let lo = _mm512_and_si512(w, nib);
            let lo = _mm512_mask_add_epi8(lo, fifth(k), lo, sixteen);
            let up = _mm512_and_si512(_mm512_srli_epi16::<4>(w), nib);
            let up = _mm512_mask_add_epi8(up, fifth(k + 4), up, sixteen);
            for t in 0..N {
                sum[t] = _mm512_dpbusd_epi32(sum[t], lo, quad(a[t], k));
                sum[t] = _mm512_dpbusd_epi32(sum[t], up, quad(a[t], k + 4));
            }
        }
        let dv = _mm512_cvtph_ps(load_32(bytes_at(g, 0)));
        let mv = if MIN {
            _mm512_cvtph_ps(load_32(bytes_at(g, 32)))
        } else {
            // `-16 d · s` as the 8-row kernels' `d · (-16 s)`: scaling by a power of two is
            // exact, so the product (and the sum `fma` rounds) is the same bit for bit.
            _mm512_mul_ps(dv, _mm512_set1_ps(-16.0))
        };
        for t in 0..N {
            acc[t] = _mm512_fmadd_ps(
                _mm512_mul_ps(dv, _mm512_set1_ps(a[t].d)),
                _mm512_cvtepi32_ps(sum[t]),
                _mm512_fmadd_ps(mv, _mm512_set1_ps(a[t].s), acc[t]),
            );
        }
    }
    std::array::from_fn(|t| lanes(acc[t]))
}
