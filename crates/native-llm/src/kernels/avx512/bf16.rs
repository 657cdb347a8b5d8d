//! `BF16` weights in interleaved groups of 4 rows (see
//! [`kernels::interleave`](crate::kernels::interleave)) against activations rounded to bf16,
//! with AVX-512 BF16's `vdpbf16ps`: 32 products per instruction, summed in pairs into f32
//! lanes, where the AVX2 path widens every weight to f32 and needs four times the FMAs.
//!
//! This is what PyTorch does with a bf16 model on such a CPU (bf16 activations, f32
//! accumulation), so the results are as close to Transformers' bf16 results as the f32-activation
//! path, and prefill on these CPUs gets the instructions torch's bf16 GEMM uses. A step's
//! activations are rounded to bf16 once ([`to_bf16`]), for every matrix that reads them.
//!
//! A group's piece of 8 columns (4 rows × 8 bf16 = 64 bytes) is one 512-bit register, one row
//! per 128-bit lane; the 8 activation values of those columns are broadcast to the 4 lanes.
//! Each output is one f32 lane chain per column pair-of-4 plus a fixed final sum, the same
//! whatever the tile of rows and tokens it was computed in: a token's result does not depend
//! on the batch it came in (the engine requires batched == single).

use std::arch::x86_64::*;

use crate::kernels::format::F_GROUP;

/// Tokens per tile (6 accumulators per group, up to 4 groups: 24 of the 32 registers, and
/// one activation broadcast feeds 4 products).
const TILE_TOKENS: usize = 6;

/// Whether this CPU has AVX-512 BF16 next to what the rest of the AVX-512 kernels need.
pub fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| super::available() && is_x86_feature_detected!("avx512bf16"))
}

/// Interleaved `BF16` groups (`row_bytes` per row, 4 rows a group) against activation
/// vectors already rounded to bf16 (see [`to_bf16`]), as pieces of 8 values:
/// `out[t * stride + r] = row r · acts[t]`.
pub fn dot_g4(w: &[u8], row_bytes: usize, acts: &[&[[u16; 8]]], out: &mut [f32], stride: usize) {
    debug_assert!(available());
    debug_assert!(acts.iter().all(|a| a.len() * 16 == row_bytes));
    let gb = F_GROUP * row_bytes;
    let group = |g: usize| &w[g * gb..(g + 1) * gb];
    let n_groups = w.len() / gb;
    let mut g = 0;
    while g < n_groups {
        let left = n_groups - g;
        let step = match left {
            4.. => 4,
            2 | 3 => 2,
            _ => 1,
        };
        for (c, x) in acts.chunks(TILE_TOKENS).enumerate() {
            let (t0, r0) = (c * TILE_TOKENS, g * F_GROUP);
            // SAFETY (each arm): reached only after `available()` (AVX-512 F/BW/VL, BF16,
            // AVX2).
            if step == 4 {
                let r = unsafe { tile::<4>(std::array::from_fn(|i| group(g + i)), x) };
                put(&r.res[..r.n], out, t0, r0, stride);
            } else if step == 2 {
                let r = unsafe { tile::<2>([group(g), group(g + 1)], x) };
                put(&r.res[..r.n], out, t0, r0, stride);
            } else {
                let r = unsafe { tile::<1>([group(g)], x) };
                put(&r.res[..r.n], out, t0, r0, stride);
            }
        }
        g += step;
    }
}

/// `x` (a multiple of 8 values) rounded to bf16 (to nearest even, as `.to(torch.bfloat16)`;
/// subnormal inputs become zero, as `vcvtneps2bf16` does) into `out`, 8 values a piece.
pub fn to_bf16(x: &[f32], out: &mut [[u16; 8]]) {
    debug_assert!(available() && x.len() == 8 * out.len());
    // SAFETY: reached only after `available()`.
    unsafe { to_bf16_imp(x, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2")]
fn to_bf16_imp(x: &[f32], out: &mut [[u16; 8]]) {
    for (o, c) in out.iter_mut().zip(x.chunks_exact(8)) {
        let c: &[f32; 8] = c.try_into().expect("8 floats");
        // SAFETY: reads exactly the 8 floats of `c` and writes exactly the 16 bytes of `o`;
        // no alignment requirement; `__m128bh` and `__m128i` are both 16 plain bytes.
        unsafe {
            let b = _mm256_cvtneps_pbh(_mm256_loadu_ps(c.as_ptr()));
            _mm_storeu_si128(
                o.as_mut_ptr().cast(),
                std::mem::transmute::<__m128bh, __m128i>(b),
            );
        }
    }
}

/// `res[t][4 i + r]` (group `i`, row `r`) into `out[(t0 + t) * stride + r0 + 4 i + r]`.
fn put<const G: usize>(
    res: &[[[f32; 4]; G]],
    out: &mut [f32],
    t0: usize,
    r0: usize,
    stride: usize,
) {
    for (t, groups) in res.iter().enumerate() {
        for (i, rows) in groups.iter().enumerate() {
            let at = (t0 + t) * stride + r0 + 4 * i;
            out[at..at + 4].copy_from_slice(rows);
        }
    }
}

/// `G` groups (4 rows each) × up to [`TILE_TOKENS`] tokens.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2")]
fn tile<const G: usize>(groups: [&[u8]; G], xs: &[&[[u16; 8]]]) -> Tile<G> {
    let mut res = [[[0f32; 4]; G]; TILE_TOKENS];
    let n = xs.len();
    match n {
        1 => res[..1].copy_from_slice(&tile_n::<G, 1>(groups, xs)),
        2 => res[..2].copy_from_slice(&tile_n::<G, 2>(groups, xs)),
        3 => res[..3].copy_from_slice(&tile_n::<G, 3>(groups, xs)),
        4 => res[..4].copy_from_slice(&tile_n::<G, 4>(groups, xs)),
        5 => res[..5].copy_from_slice(&tile_n::<G, 5>(groups, xs)),
        6 => res[..6].copy_from_slice(&tile_n::<G, 6>(groups, xs)),
        n => unreachable!("{n} tokens in a tile of {TILE_TOKENS}"),
    }
    Tile { res, n }
}

/// A tile's results: `res[t][i][r]` for token `t < n`, group `i`, row `r`.
struct Tile<const G: usize> {
    res: [[[f32; 4]; G]; TILE_TOKENS],
    n: usize,
}

/// The accumulators stay in registers only if nothing in the loop may read them: no bounds
/// checks (their panic calls would keep every accumulator stored to the stack after each
/// product, which made an earlier version store-bound), and the sums formed in plain loops.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2")]
fn tile_n<const G: usize, const T: usize>(
    groups: [&[u8]; G],
    xs: &[&[[u16; 8]]],
) -> [[[f32; 4]; G]; T] {
    let pieces = xs[0].len();
    assert!(
        xs.len() == T
            && xs.iter().all(|x| x.len() == pieces)
            && groups.iter().all(|g| g.len() >= 64 * pieces),
        "a tile of {T} tokens over {pieces} pieces"
    );
    let mut wp = [std::ptr::null::<u8>(); G];
    for i in 0..G {
        wp[i] = groups[i].as_ptr();
    }
    let mut xp = [std::ptr::null::<[u16; 8]>(); T];
    for t in 0..T {
        xp[t] = xs[t].as_ptr();
    }
    let mut acc = [[_mm512_setzero_ps(); G]; T];
    for k in 0..pieces {
        // SAFETY: `k < pieces`, every group holds at least `64 * pieces` bytes and every
        // activation `pieces` pieces (asserted above), so each load reads inside its slice;
        // `loadu` has no alignment requirement; `__m512i` and `__m512bh` are both 64 plain
        // bytes.
        unsafe {
            let mut w = [std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); G];
            for i in 0..G {
                let v = _mm512_loadu_si512(wp[i].add(64 * k).cast());
                w[i] = std::mem::transmute::<__m512i, __m512bh>(v);
            }
            for t in 0..T {
                let v = _mm_loadu_si128(xp[t].add(k).cast());
                let x = std::mem::transmute::<__m512i, __m512bh>(_mm512_broadcast_i32x4(v));
                for i in 0..G {
                    acc[t][i] = _mm512_dpbf16_ps(acc[t][i], w[i], x);
                }
            }
        }
    }
    let mut res = [[[0f32; 4]; G]; T];
    for t in 0..T {
        for i in 0..G {
            res[t][i] = lane_sums(acc[t][i]);
        }
    }
    res
}

/// The sums of the four 128-bit lanes' 4 floats each, in a fixed order: `(a + b) + (c + d)`.
#[inline]
#[target_feature(enable = "avx512f")]
fn lane_sums(v: __m512) -> [f32; 4] {
    let mut f = [0f32; 16];
    // SAFETY: writes exactly the 16 floats of `f`; `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_ps(f.as_mut_ptr(), v) };
    std::array::from_fn(|r| {
        let l = &f[4 * r..4 * r + 4];
        (l[0] + l[1]) + (l[2] + l[3])
    })
}
