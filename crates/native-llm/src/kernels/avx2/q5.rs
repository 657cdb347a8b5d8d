//! `Q5_0` and `Q5_1` weights against [`BlockQ8`] activations: one row at a time, and the
//! 8-row kernels over interleaved groups.
//!
//! A block's 32 values are `q = nibble | fifth_bit << 4` (0..32): the nibbles unpack as
//! `Q4_0`'s do, and each value's fifth bit (bit `j` of the block's `qh`) is spread to its
//! byte by a byte shuffle, an AND with that byte's bit and a compare. The unsigned `q` then
//! meets the signed activations in `vpmaddubsw` (pairs at most 2 × 31 × 128 < 2^15, exact)
//! and `vpmaddwd`; `Q5_0`'s offset of 16 is taken off afterwards as `16 d s_x` (the
//! activations' scaled sum), `Q5_1`'s minimum added as `m s_x`, as for `Q4_0` / `Q4_1`.

use std::arch::x86_64::*;

use super::quant::{dot_u8_i8, quad, unpack_nibbles};
use super::simd::{available, f16, hsum, load_16, load_32, load_q8, prefetch_span, store_8};
use crate::kernels::format::{BlockQ8, WeightKind};

/// `Q5_0`/`Q5_1` weight row · quantized activations.
pub fn dot_q(kind: WeightKind, row: &[u8], act: &[BlockQ8]) -> f32 {
    debug_assert!(available());
    // SAFETY: `kernels::isa()` returns `Isa::Avx2` or `Isa::Avx512`, the only ways here,
    // after `available()` confirmed AVX2, FMA and F16C on this CPU.
    unsafe {
        match kind {
            WeightKind::Q5_0 => dot_q5::<false>(row, act),
            WeightKind::Q5_1 => dot_q5::<true>(row, act),
            _ => unreachable!("{kind:?} is not Q5_0 or Q5_1"),
        }
    }
}

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
        // SAFETY: as in `dot_q`: reached only after `available()`.
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

/// The 32 values of one block (`qh`, nibbles `qs`) as bytes 0..32.
#[inline]
#[target_feature(enable = "avx2")]
fn values(qh: u32, qs: &[u8; 16]) -> __m256i {
    // Byte j gets byte j / 8 of `qh`, then its own bit of it (j % 8).
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(qh as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_or_si256(
        unpack_nibbles(qs),
        _mm256_and_si256(set, _mm256_set1_epi8(0x10)),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q5<const MIN: bool>(row: &[u8], act: &[BlockQ8]) -> f32 {
    let (bb, off) = if MIN { (24, 4) } else { (22, 2) };
    let mut acc = _mm256_setzero_ps();
    let mut extra = 0f32;
    for (b, a) in row.chunks_exact(bb).zip(act) {
        let qh = u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]);
        let qs: &[u8; 16] = b[off + 4..off + 20].try_into().expect("16 nibble bytes");
        let d = f16(b[0], b[1]);
        let p = dot_u8_i8(values(qh, qs), load_q8(a));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), p, acc);
        if MIN {
            extra += f16(b[2], b[3]) * a.s;
        } else {
            extra -= 16.0 * d * a.s;
        }
    }
    hsum(acc) + extra
}

/// The `vpshufb` index that gives every byte of each row's 32-bit lane byte `b` of that
/// lane (the byte of `qh` holding the fifth bits wanted).
#[inline]
#[target_feature(enable = "avx2")]
fn lane_byte(b: i8) -> __m256i {
    let base = _mm256_set_epi32(
        0x0C0C_0C0C,
        0x0808_0808,
        0x0404_0404,
        0,
        0x0C0C_0C0C,
        0x0808_0808,
        0x0404_0404,
        0,
    );
    _mm256_add_epi8(base, _mm256_set1_epi8(b))
}

/// The fifth bits of piece `k` of an interleaved group, as 0x10 or 0 in each byte: `qh` holds
/// the 8 rows' `qh` (one per 32-bit lane); bits `4k..4k + 4` (low nibbles) or `16 + 4k..`
/// (`high`) of each, one per byte of the lane.
#[inline]
#[target_feature(enable = "avx2")]
fn fifth_bits(qh: __m256i, k: usize, high: bool) -> __m256i {
    let byte = (k / 2 + if high { 2 } else { 0 }) as i8;
    let spread = _mm256_shuffle_epi8(qh, lane_byte(byte));
    let bit = _mm256_set1_epi32(if k.is_multiple_of(2) {
        0x0804_0201
    } else {
        0x8040_2010_u32 as i32
    });
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// 8 interleaved `Q5_0`/`Q5_1` (`MIN`) rows against `N` activation vectors: per block
/// `[d; 8] [m; 8]? [qh; 8] [qs]` (`kernels::interleave`), the nibbles in `Q4_0`'s 4-byte
/// pieces. Each piece is unpacked to 5-bit values once for all `N` tokens (4 columns of the
/// 8 rows as low nibbles, 4 as high, each with its fifth bit), and each token's activation
/// quads, broadcast to every row, multiply them into the 8 rows' lanes: `vpmaddubsw`, then
/// `vpmaddwd` into 32 bits per piece (two 5-bit products per 16-bit lane and piece: at most
/// 2 × 2 × 31 × 128 < 2^15, exact), no horizontal adds. Every token goes through the same
/// operations in the same order whatever `N` is, so its results do not depend on its
/// batch-mates; the AVX-512 kernel forms the same integer sums and the same floats.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_x8_q5<const N: usize, const MIN: bool>(
    group: &[u8],
    acts: [&[BlockQ8]; N],
    stream: bool,
) -> [[f32; 8]; N] {
    let gb = if MIN { 192 } else { 176 };
    let qoff = if MIN { 32 } else { 16 };
    let mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, g) in group.chunks_exact(gb).enumerate() {
        if stream {
            prefetch_span(group, i * gb, gb);
        }
        let a: [&BlockQ8; N] = std::array::from_fn(|t| &acts[t][i]);
        let qh = load_32(g[qoff..qoff + 32].try_into().expect("8 rows' qh"));
        let mut sum = [_mm256_setzero_si256(); N];
        for k in 0..4 {
            let at = qoff + 32 + 32 * k;
            let w = load_32(g[at..at + 32].try_into().expect("one piece of 8 rows"));
            let lo = _mm256_or_si256(_mm256_and_si256(w, mask), fifth_bits(qh, k, false));
            let hi = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(w, 4), mask),
                fifth_bits(qh, k, true),
            );
            for (t, s) in sum.iter_mut().enumerate() {
                let p = _mm256_add_epi16(
                    _mm256_maddubs_epi16(lo, quad(a[t], k)),
                    _mm256_maddubs_epi16(hi, quad(a[t], 4 + k)),
                );
                *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, ones));
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
                _mm256_cvtepi32_ps(sum[t]),
                _mm256_fmadd_ps(mv, _mm256_set1_ps(off), acc[t]),
            );
        }
    }
    std::array::from_fn(|t| store_8(acc[t]))
}
