//! `Q4_K` and `Q6_K` rows (layouts in [`kernels::kquants`](crate::kernels::kquants)) against
//! up to 8 [`BlockQ8K`] activation vectors with AVX-512 VNNI; `Q5_K` stays on AVX2.
//!
//! Each super-block is unpacked once for all tokens into 4 registers of 64 quants (unsigned
//! bytes); per token and register one `vpmaddubsw` with the activation bytes (pairs at most
//! 2 × 63 × 127 < 2^15: exact) and one `vpdpwssd` by the sub-block scales (16-bit lanes)
//! into 32-bit lanes. The integer sums per super-block are exact; they are scaled into 16
//! float lanes per token (`d · d_y`, and `dmin · d_y` for the minimums) and the lanes summed
//! once at the end of the row, so a result equals the portable body's within rounding and
//! never depends on the other tokens of the call.

use std::arch::x86_64::*;

use super::available;
use super::quant::load_64;
use crate::kernels::avx2::scales_mins_bytes;
use crate::kernels::format::{BlockQ8K, QK_K, WeightKind};

/// `out[t] = row · acts[t]` for a `Q4_K` or `Q6_K` row (`out.len() >= acts.len()`, 1 to 8
/// vectors; no software prefetch, see [`kernels::dot_k_multi`](crate::kernels::dot_k_multi)).
pub fn dot_k_multi(kind: WeightKind, row: &[u8], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    debug_assert!(available());
    fn run<const N: usize>(kind: WeightKind, row: &[u8], acts: [&[BlockQ8K]; N]) -> [f32; N] {
        // SAFETY: reached only when `kernels::isa()` is `Isa::Avx512`, chosen after
        // `available()` confirmed AVX2, FMA, F16C, AVX-512 F/BW/VL and AVX-512 VNNI.
        unsafe {
            match kind {
                WeightKind::Q4_K => q4k::<N>(row, acts),
                WeightKind::Q6_K => q6k::<N>(row, acts),
                _ => unreachable!("{kind:?} has no AVX-512 kernel"),
            }
        }
    }
    let n = acts.len();
    let res: &[f32] = with_token_array!(acts, run(kind, row));
    out[..n].copy_from_slice(res);
}

/// Activation bytes `64 r..64 r + 64`.
#[inline]
#[target_feature(enable = "avx512f")]
fn load_y(a: &BlockQ8K, r: usize) -> __m512i {
    let y: &[i8; 64] = a.qs[64 * r..64 * r + 64].try_into().expect("64 quants");
    // SAFETY: reads exactly the 64 bytes of `y`; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(y.as_ptr().cast()) }
}

/// The 16 sums of 16 activations, as 16-bit lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn load_bsums(a: &BlockQ8K) -> __m256i {
    // SAFETY: reads exactly the 32 bytes of the 16 `i16` sums; no alignment requirement.
    unsafe { _mm256_loadu_si256(a.bsums.as_ptr().cast()) }
}

/// The f16s in bytes `0..2` and `2..4` of `b` as f32 (one F16C conversion; `half`'s own
/// conversion checks the CPU's features on every call).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16_pair(b: &[u8]) -> (f32, f32) {
    let w = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(w as i32));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// The f16 of bytes `lo`, `hi` as f32 (F16C).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16_one(lo: u8, hi: u8) -> f32 {
    let w = u16::from_le_bytes([lo, hi]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(w as i32)))
}

/// `lo` in the low 256 bits, `hi` in the high.
#[inline]
#[target_feature(enable = "avx512f")]
fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// `Q4_K` row · `N` activation vectors. Register `j` holds sub-blocks `2j` (the low nibbles
/// of bytes `32j..32j + 32`) and `2j + 1` (their high nibbles), under activation bytes
/// `64j..64j + 64`. Per token, each super-block's exact integer sums (16 lanes of scaled
/// products, 8 lanes of minimums times activation sums) are scaled by `d · d_y` and
/// `dmin · d_y` into float lanes; the lanes are summed once, at the end of the row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4k<const N: usize>(row: &[u8], acts: [&[BlockQ8K]; N]) -> [f32; N] {
    let nib = _mm512_set1_epi8(0x0F);
    // For register `j`: scale `2j` in 16-bit lanes 0..16, scale `2j + 1` in lanes 16..32.
    let pick: [__m512i; 4] = std::array::from_fn(|j| {
        join(
            _mm256_set1_epi16(2 * j as i16),
            _mm256_set1_epi16(2 * j as i16 + 1),
        )
    });
    // Each minimum twice (one per 16-value activation sum of its sub-block).
    let dup = _mm256_setr_epi16(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    let mut acc = [_mm512_setzero_ps(); N];
    let mut acc_min = [_mm256_setzero_ps(); N];
    for (i, b) in row.chunks_exact(144).enumerate() {
        let (d, dmin) = f16_pair(b);
        // Scales in 16-bit lanes 0..8, minimums in lanes 8..16.
        let sm = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(scales_mins_bytes(b)));
        let sm512 = _mm512_castsi256_si512(sm);
        let scale: [__m512i; 4] = std::array::from_fn(|j| _mm512_permutexvar_epi16(pick[j], sm512));
        let mins = _mm256_permutexvar_epi16(dup, sm);
        let qs = &b[16..144];
        let q: [__m512i; 4] = std::array::from_fn(|j| {
            let w: &[u8; 32] = qs[32 * j..32 * j + 32].try_into().expect("32 bytes");
            // SAFETY: reads exactly the 32 bytes of `w`; `loadu` has no alignment requirement.
            let w = unsafe { _mm256_loadu_si256(w.as_ptr().cast()) };
            _mm512_and_si512(join(w, _mm256_srli_epi16::<4>(w)), nib)
        });
        for t in 0..N {
            let a = &acts[t][i];
            let mut isum = _mm512_setzero_si512();
            for j in 0..4 {
                let p = _mm512_maddubs_epi16(q[j], load_y(a, j));
                isum = _mm512_dpwssd_epi32(isum, p, scale[j]);
            }
            let msum = _mm256_madd_epi16(load_bsums(a), mins);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(d * a.d), acc[t]);
            acc_min[t] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(msum),
                _mm256_set1_ps(dmin * a.d),
                acc_min[t],
            );
        }
    }
    std::array::from_fn(|t| _mm512_reduce_add_ps(acc[t]) - hsum_ps(acc_min[t]))
}

/// Sum of the 8 float lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `Q6_K` row · `N` activation vectors. The quants plus 32 (0..64, unsigned); register
/// `2n + k` holds values `128n + 64k..` (bytes `64n..64n + 64` of `ql`, low nibbles for
/// `k = 0`, high for `k = 1`, with two bits each of `qh[32n..32n + 32]` on top), 16-value
/// sub-blocks `4(2n + k)..`, one per 128-bit lane. Per token, the super-block's exact integer
/// sum (16 lanes, less 32 × the scaled activation sums for the `+ 32`) is scaled by `d · d_y`
/// into float lanes, summed once at the end of the row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q6k<const N: usize>(row: &[u8], acts: [&[BlockQ8K]; N]) -> [f32; N] {
    let nib = _mm512_set1_epi8(0x0F);
    let two = _mm512_set1_epi8(0x30);
    // The `qh` bits for the four 32-value quarters of a 128-value half: shifted left by 4 and
    // 2 (low nibbles: values 0..32 and 32..64), right by 0 and 2 (high nibbles: 64..128).
    let up = _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2);
    let down = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
    // The scale index for each 16-bit lane of register `r`: lane group `l` (a 128-bit lane)
    // takes scale `4r + l`.
    let pick: [__m512i; 4] = std::array::from_fn(|r| {
        let r = 4 * r as i32;
        let lane = |l: i32| _mm_set1_epi16((r + l) as i16);
        join(
            _mm256_set_m128i(lane(1), lane(0)),
            _mm256_set_m128i(lane(3), lane(2)),
        )
    });
    let mut acc = [_mm512_setzero_ps(); N];
    for (i, b) in row.chunks_exact(210).enumerate() {
        let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
        let d = f16_one(b[208], b[209]);
        let mut q = [_mm512_setzero_si512(); 4];
        for n in 0..2 {
            let h: &[u8; 32] = qh[32 * n..32 * n + 32].try_into().expect("32 bytes");
            // SAFETY: reads exactly the 32 bytes of `h`; `loadu` has no alignment requirement.
            let h = unsafe { _mm256_loadu_si256(h.as_ptr().cast()) };
            let hh = join(h, h);
            let l = load_64(&ql[64 * n..64 * n + 64]);
            let h_lo = _mm512_and_si512(_mm512_sllv_epi64(hh, up), two);
            let h_hi = _mm512_and_si512(_mm512_srlv_epi64(hh, down), two);
            q[2 * n] = _mm512_or_si512(_mm512_and_si512(l, nib), h_lo);
            q[2 * n + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(l), nib), h_hi);
        }
        // SAFETY: reads exactly the 16 bytes of `sc`; `loadu` has no alignment requirement.
        let scales16 = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(sc.as_ptr().cast()) });
        let s512 = _mm512_castsi256_si512(scales16);
        let scale: [__m512i; 4] = std::array::from_fn(|r| _mm512_permutexvar_epi16(pick[r], s512));
        for t in 0..N {
            let a = &acts[t][i];
            let mut isum = _mm512_setzero_si512();
            for r in 0..4 {
                let p = _mm512_maddubs_epi16(q[r], load_y(a, r));
                isum = _mm512_dpwssd_epi32(isum, p, scale[r]);
            }
            let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(load_bsums(a), scales16));
            let isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(offset));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(d * a.d), acc[t]);
        }
    }
    std::array::from_fn(|t| _mm512_reduce_add_ps(acc[t]))
}

const _: () = assert!(QK_K == 256);
