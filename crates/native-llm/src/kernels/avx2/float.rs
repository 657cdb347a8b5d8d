//! Float weights (`F32`, `F16`, `BF16`) against f32 activations, in tiles of rows × tokens,
//! row-major or in interleaved groups of 4 rows; and the plain f32 dot product and axpy.

use std::arch::x86_64::*;

use super::simd::{BF16, F16, F32, available, hsum, load_f32x8, load_w1, load_w8, prefetch_line};
use crate::kernels::format::{STREAM_TOKENS, WeightKind};

/// Float weight row · f32 activations.
pub fn dot_f(kind: WeightKind, row: &[u8], act: &[f32]) -> f32 {
    let mut out = [0f32];
    dot_f_block(kind, row, row.len(), false, &[act], &mut out, 1);
    out[0]
}

/// `Σ a[i] * b[i]`.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: as in `quant::dot_q`: reached only after `available()`.
    unsafe { dot_f32_imp(a, b) }
}

/// `y[i] += a * x[i]`.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    // SAFETY: as in `quant::dot_q`: reached only after `available()`.
    unsafe { axpy_imp(y, a, x) }
}

/// `R` float rows against `T` activation vectors: `out[t][r] = rows[r] · acts[t]`. Each
/// weight vector is loaded once for all `T` tokens and each activation vector once for all
/// `R` rows (12 FMAs per 7 loads at 4 × 3). Every output has one accumulator chain, summed
/// the same way whatever `R` and `T` are, so a result does not depend on its tile-mates.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_f<const K: u8, const R: usize, const T: usize>(
    rows: [&[u8]; R],
    acts: [&[f32]; T],
) -> [[f32; R]; T] {
    let n = acts[0].len();
    let full = n / 8 * 8;
    let mut acc = [[_mm256_setzero_ps(); R]; T];
    for i in (0..full).step_by(8) {
        let x: [__m256; T] =
            std::array::from_fn(|t| load_f32x8(acts[t][i..i + 8].try_into().expect("8 floats")));
        for r in 0..R {
            let w = load_w8::<K>(rows[r], i);
            for t in 0..T {
                acc[t][r] = _mm256_fmadd_ps(w, x[t], acc[t][r]);
            }
        }
    }
    std::array::from_fn(|t| {
        std::array::from_fn(|r| {
            let mut total = hsum(acc[t][r]);
            for (i, x) in acts[t].iter().enumerate().skip(full) {
                total += load_w1::<K>(rows[r], i) * x;
            }
            total
        })
    })
}

/// One interleaved group of 4 float rows of format `K` (see `kernels::interleave`) against
/// `T` activation vectors whose length is a multiple of 8. The same arithmetic as
/// [`tile_f`] over the 4 rows (one chain per output, in column order), read as one forward
/// stream. The group is walked in fixed-size pieces (8 columns of the 4 rows) and the
/// activations are cut to the same number of 8-float chunks up front, so the loop carries no
/// bounds checks (with them, a bf16 decode step ran at about half the speed in L2).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_g4<const K: u8, const T: usize>(
    group: &[u8],
    acts: [&[f32]; T],
    stream: bool,
) -> [[f32; 4]; T] {
    // Bytes of the group per 8 columns (4 rows' pieces): 128 (f32) or 64 (f16, bf16).
    let per_k = 32 * if K == F32 { 4 } else { 2 };
    let n8 = acts[0].len() / 8;
    let group = &group[..n8 * per_k];
    let acts: [&[f32]; T] = std::array::from_fn(|t| &acts[t][..n8 * 8]);
    let mut acc = [[_mm256_setzero_ps(); 4]; T];
    for (k, piece) in group.chunks_exact(per_k).enumerate() {
        if stream && (k * per_k).is_multiple_of(128) {
            prefetch_line(group, k * per_k);
            prefetch_line(group, k * per_k + 64);
        }
        let x: [__m256; T] = std::array::from_fn(|t| {
            load_f32x8(acts[t][k * 8..k * 8 + 8].try_into().expect("8 floats"))
        });
        for r in 0..4 {
            let w = load_w8::<K>(piece, r * 8);
            for (a, xt) in acc.iter_mut().zip(&x) {
                a[r] = _mm256_fmadd_ps(w, *xt, a[r]);
            }
        }
    }
    std::array::from_fn(|t| std::array::from_fn(|r| hsum(acc[t][r])))
}

/// Float rows (`row_bytes` each; row-major, or interleaved groups of 4 when `grouped`)
/// against activation vectors: `out[t * stride + r] = row r · acts[t]`, in tiles of 4 rows ×
/// up to 3 tokens. Row-major rows take one row at a time for a single token (a sequential
/// stream); grouped rows are a sequential stream at 4 rows a time. See `kernels::dot_f_block`.
pub fn dot_f_block(
    kind: WeightKind,
    rows: &[u8],
    row_bytes: usize,
    grouped: bool,
    acts: &[&[f32]],
    out: &mut [f32],
    stride: usize,
) {
    debug_assert!(available());
    // SAFETY: as in `quant::dot_q`: reached only after `available()`.
    unsafe {
        match (kind, grouped) {
            (WeightKind::F32, false) => block_f::<F32>(rows, row_bytes, acts, out, stride),
            (WeightKind::F16, false) => block_f::<F16>(rows, row_bytes, acts, out, stride),
            (WeightKind::BF16, false) => block_f::<BF16>(rows, row_bytes, acts, out, stride),
            (WeightKind::F32, true) => block_g4::<F32>(rows, row_bytes, acts, out, stride),
            (WeightKind::F16, true) => block_g4::<F16>(rows, row_bytes, acts, out, stride),
            (WeightKind::BF16, true) => block_g4::<BF16>(rows, row_bytes, acts, out, stride),
            _ => unreachable!("quantized weights use dot_q"),
        }
    }
}

/// Stores a tile's results: `res[k][r]` is token `t0 + k`, row `j + r`.
#[inline]
fn put_tile(res: &[[f32; 4]], out: &mut [f32], t0: usize, j: usize, stride: usize) {
    for (k, r) in res.iter().enumerate() {
        let at = (t0 + k) * stride + j;
        out[at..at + 4].copy_from_slice(r);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn block_g4<const K: u8>(
    w: &[u8],
    row_bytes: usize,
    acts: &[&[f32]],
    out: &mut [f32],
    stride: usize,
) {
    // A few tokens (decode steps) stream through the weights once: prefetch them.
    let stream = acts.len() <= STREAM_TOKENS;
    for (g, group) in w.chunks_exact(4 * row_bytes).enumerate() {
        for (c, a) in acts.chunks(3).enumerate() {
            let res: &[[f32; 4]] = match *a {
                [x, y, z] => &tile_g4::<K, 3>(group, [x, y, z], stream),
                [x, y] => &tile_g4::<K, 2>(group, [x, y], stream),
                [x] => &tile_g4::<K, 1>(group, [x], stream),
                _ => unreachable!(),
            };
            put_tile(res, out, c * 3, g * 4, stride);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn block_f<const K: u8>(
    w: &[u8],
    row_bytes: usize,
    acts: &[&[f32]],
    out: &mut [f32],
    stride: usize,
) {
    let n_rows = w.len() / row_bytes;
    let row = |r: usize| &w[r * row_bytes..(r + 1) * row_bytes];
    let mut j = 0;
    while j < n_rows {
        if acts.len() > 1 && n_rows - j >= 4 {
            let rows = [row(j), row(j + 1), row(j + 2), row(j + 3)];
            for (c, a) in acts.chunks(3).enumerate() {
                let res: &[[f32; 4]] = match *a {
                    [x, y, z] => &tile_f::<K, 4, 3>(rows, [x, y, z]),
                    [x, y] => &tile_f::<K, 4, 2>(rows, [x, y]),
                    [x] => &tile_f::<K, 4, 1>(rows, [x]),
                    _ => unreachable!(),
                };
                put_tile(res, out, c * 3, j, stride);
            }
            j += 4;
        } else {
            for (t, a) in acts.iter().enumerate() {
                out[t * stride + j] = tile_f::<K, 1, 1>([row(j)], [a])[0][0];
            }
            j += 1;
        }
    }
}

#[target_feature(enable = "avx2,fma")]
pub(super) fn dot_f32_imp(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let m = n / 16 * 16;
    for i in (0..m).step_by(16) {
        let a0: &[f32; 8] = a[i..i + 8].try_into().expect("8");
        let b0: &[f32; 8] = b[i..i + 8].try_into().expect("8");
        let a1: &[f32; 8] = a[i + 8..i + 16].try_into().expect("8");
        let b1: &[f32; 8] = b[i + 8..i + 16].try_into().expect("8");
        acc0 = _mm256_fmadd_ps(load_f32x8(a0), load_f32x8(b0), acc0);
        acc1 = _mm256_fmadd_ps(load_f32x8(a1), load_f32x8(b1), acc1);
    }
    let mut total = hsum(_mm256_add_ps(acc0, acc1));
    for i in m..n {
        total += a[i] * b[i];
    }
    total
}

#[target_feature(enable = "avx2,fma")]
pub(super) fn axpy_imp(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let m = n / 8 * 8;
    let av = _mm256_set1_ps(a);
    for i in (0..m).step_by(8) {
        let xv: &[f32; 8] = x[i..i + 8].try_into().expect("8");
        let yv: &mut [f32; 8] = (&mut y[i..i + 8]).try_into().expect("8");
        let r = _mm256_fmadd_ps(av, load_f32x8(xv), load_f32x8(yv));
        // SAFETY: writes exactly the 8 floats of `yv`; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_ps(yv.as_mut_ptr(), r) };
    }
    for i in m..n {
        y[i] += a * x[i];
    }
}
