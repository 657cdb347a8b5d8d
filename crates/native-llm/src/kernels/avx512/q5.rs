//! The 8-row kernels over interleaved `Q5_0` and `Q5_1` groups (per block
//! `[d; 8] [m; 8]? [qh; 8] [qs]`, see `kernels::interleave`) against up to 4 [`BlockQ8`]
//! activation vectors, with AVX-512 VNNI.
//!
//! One 64-byte load holds two nibble pieces (8 rows × 8 columns as low nibbles, 8 as high);
//! the 8 rows' `qh` sit in both 256-bit halves of one register, and one byte shuffle, a
//! `vptestmb` against each byte's bit and a masked byte add put each value's fifth bit on
//! its nibble. `vpdpbusd` then multiplies the 5-bit values (unsigned, 0..32) with each
//! token's activation quads, placed under them by `vpermd` as in the `Q4_0` kernel: the same
//! exact integer sums as the AVX2 kernel, and the floats formed from them the same way.

use std::arch::x86_64::*;

use super::available;
use super::quant::{fold, load_64, load_act, quads};
use crate::kernels::avx2::simd::{load_16, load_32, prefetch_span, store_8};
use crate::kernels::format::{BlockQ8, WeightKind};

/// The 8 dot products of an interleaved `Q5_0`/`Q5_1` group with each of up to 4 activation
/// vectors (`out[t]` for `acts[t]`).
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
        // SAFETY: reached only when `kernels::isa()` is `Isa::Avx512`, chosen after
        // `available()` confirmed AVX2, FMA, F16C, AVX-512 F/BW/VL and AVX-512 VNNI.
        unsafe {
            match kind {
                WeightKind::Q5_0 => dot_x8_q5::<N, false>(group, acts, stream),
                WeightKind::Q5_1 => dot_x8_q5::<N, true>(group, acts, stream),
                _ => unreachable!("{kind:?} is not Q5_0 or Q5_1"),
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

/// The `vpshufb` index that gives every byte of each 32-bit lane byte `b` of that lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn lane_byte(b: i8) -> __m512i {
    let base = _mm512_set4_epi32(0x0C0C_0C0C, 0x0808_0808, 0x0404_0404, 0);
    _mm512_add_epi8(base, _mm512_set1_epi8(b))
}

/// 8 interleaved `Q5_0`/`Q5_1` (`MIN`) rows against `N` activation vectors. Load `h` holds
/// pieces `2h` (lanes 0..8) and `2h + 1` (lanes 8..16): as low nibbles columns
/// `8h..8h + 8`, whose fifth bits are byte `h` of each row's `qh` (bits 0..4 for the first
/// piece, 4..8 for the second), as high nibbles `16 + 8h..`, byte `2 + h`. Products at most
/// 4 × 31 × 128 per lane and instruction: exact.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_x8_q5<const N: usize, const MIN: bool>(
    group: &[u8],
    acts: [&[BlockQ8]; N],
    stream: bool,
) -> [[f32; 8]; N] {
    let gb = if MIN { 192 } else { 176 };
    let qoff = if MIN { 32 } else { 16 };
    let mask = _mm512_set1_epi8(0x0F);
    let sixteen = _mm512_set1_epi8(0x10);
    // Bits 0..4 of the byte under the first piece, 4..8 under the second.
    let bit = _mm512_inserti64x4::<1>(
        _mm512_set1_epi32(0x0804_0201),
        _mm256_set1_epi32(0x8040_2010_u32 as i32),
    );
    let shuf = [lane_byte(0), lane_byte(2), lane_byte(1), lane_byte(3)];
    let idx = [quads(0), quads(4), quads(2), quads(6)];
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, g) in group.chunks_exact(gb).enumerate() {
        if stream {
            prefetch_span(group, i * gb, gb);
        }
        let a: [&BlockQ8; N] = std::array::from_fn(|t| &acts[t][i]);
        let x: [__m512i; N] = std::array::from_fn(|t| load_act(a[t]));
        let qh =
            _mm512_broadcast_i64x4(load_32(g[qoff..qoff + 32].try_into().expect("8 rows' qh")));
        let mut sum = [_mm512_setzero_si512(); N];
        for h in 0..2 {
            let at = qoff + 32 + 64 * h;
            let w = load_64(&g[at..at + 64]);
            let lo = _mm512_and_si512(w, mask);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(w), mask);
            let lo_set = _mm512_test_epi8_mask(_mm512_shuffle_epi8(qh, shuf[2 * h]), bit);
            let hi_set = _mm512_test_epi8_mask(_mm512_shuffle_epi8(qh, shuf[2 * h + 1]), bit);
            let lo = _mm512_mask_add_epi8(lo, lo_set, lo, sixteen);
            let hi = _mm512_mask_add_epi8(hi, hi_set, hi, sixteen);
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
            dv
        };
        for t in 0..N {
            let off = if MIN { a[t].s } else { -16.0 * a[t].s };
            acc[t] = _mm256_fmadd_ps(
                _mm256_mul_ps(dv, _mm256_set1_ps(a[t].d)),
                _mm256_cvtepi32_ps(fold(sum[t])),
                _mm256_fmadd_ps(mv, _mm256_set1_ps(off), acc[t]),
            );
        }
    }
    std::array::from_fn(|t| store_8(acc[t]))
}
