//! `Q4_0`, `Q4_1` and `Q8_0` weights against [`BlockQ8`] activations: activation
//! quantization, one row at a time, and the 8-row kernels over interleaved groups.
//!
//! The integer dot products follow the classic scheme: unpack a block of weights to 32 bytes,
//! multiply with the activation bytes by `vpmaddubsw` (unsigned × signed → i16 pairs; signed
//! weights go through `vpsignb` first), widen with `vpmaddwd`, convert to f32 and accumulate
//! with one FMA per block scaled by `d_w * d_x`.

use std::arch::x86_64::*;

use super::simd::{
    available, f16, hsum, load_16, load_32, load_f32x8, load_q8, prefetch_span, store_8,
};
use crate::kernels::format::{BlockQ8, QK, WeightKind};

/// Quantized weight row · quantized activations.
pub fn dot_q(kind: WeightKind, row: &[u8], act: &[BlockQ8]) -> f32 {
    debug_assert!(available());
    // SAFETY: `kernels::isa()` returns `Isa::Avx2`, the only way here, after `available()`
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

/// Quantizes 32-value blocks of `x` (see `kernels::portable::quantize_row`, which this equals
/// bit for bit).
pub fn quantize_row(x: &[f32], out: &mut [BlockQ8]) {
    debug_assert!(available());
    // SAFETY: as in `dot_q`: reached only after `available()`.
    unsafe { quantize_row_imp(x, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn quantize_row_imp(x: &[f32], out: &mut [BlockQ8]) {
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

/// 16 bytes of packed nibbles → 32 bytes: low nibbles (values 0..16) then high (16..32).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn unpack_nibbles(q: &[u8; 16]) -> __m256i {
    let q = load_16(q);
    let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// `Σ w[i] * x[i]` over 32 unsigned weight bytes (< 128) and signed activation bytes, as 8 f32.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn dot_u8_i8(w: __m256i, x: __m256i) -> __m256 {
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
pub(super) fn dot_q8_0(row: &[u8], act: &[BlockQ8]) -> f32 {
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

/// Activation quad `j` (values `4j..4j + 4`) of `a`, broadcast to all 8 32-bit lanes (one
/// per row of an interleaved group).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn quad(a: &BlockQ8, j: usize) -> __m256i {
    let q = &a.qs[4 * j..4 * j + 4];
    _mm256_set1_epi32(i32::from_le_bytes([
        q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8,
    ]))
}

/// 8 interleaved `Q4_0`/`Q4_1` (`MIN`) rows against `N` activation vectors: per block
/// `[d; 8] [m; 8]? [qs]`, the quants in 4-byte pieces with piece `k` of the 8 rows side by
/// side (`kernels::quant_at`). One 32-byte load holds 4 columns of all 8 rows as low nibbles
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
/// (`kernels::quant_at`). Each piece is loaded and made absolute once for all `N` tokens; each
/// token's activation quad, broadcast to every row and given the weights' signs, multiplies
/// it into the 8 rows' lanes (`vpmaddubsw`: |w| · ±x, pairs at most 2 × 127 × 127 < 2^15,
/// exact), widened by `vpmaddwd` and summed in 32 bits: no horizontal adds. The weights are
/// in -127..=127 (see `kernels::interleave`) and so are the activations, so both signs flip
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
