//! Matrix products of a step: activations quantized once into every format the step's
//! matrices need, then each matrix against all the step's tokens, the kernel and the work
//! split picked by the weight format and the number of tokens.

use rayon::prelude::*;

use super::ops::each_row;
use crate::kernels::{self, ActFormat, BlockQ8, BlockQ8K, QK, QK_K};
use crate::weights::Matrix;

/// A step's activations (`[t][cols]`) in every format the matrices reading them need,
/// quantized once and shared by all of them.
pub(super) struct Input<'a> {
    f: &'a [f32],
    q8: &'a [BlockQ8],
    q8k: &'a [BlockQ8K],
    /// bf16 pieces of 8 values, for the matrices [`kernels::uses_bf16_acts`] names.
    bf: &'a [[u16; 8]],
}

/// Reusable buffers for quantized activations.
#[derive(Default)]
pub(super) struct QuantBufs {
    q8: Vec<BlockQ8>,
    q8k: Vec<BlockQ8K>,
    bf: Vec<[u16; 8]>,
}

/// Prepares `x` (`[t][cols]`) for the matrices `mats`: quantized into each activation
/// format one of them needs.
pub(super) fn prepare<'a>(
    mats: &[&Matrix],
    x: &'a [f32],
    cols: usize,
    bufs: &'a mut QuantBufs,
) -> Input<'a> {
    let needs = |f: ActFormat| mats.iter().any(|m| m.kind.act_format() == f);
    let QuantBufs { q8, q8k, bf } = bufs;
    q8.clear();
    q8k.clear();
    bf.clear();
    if needs(ActFormat::Q8) {
        quantize_rows(x, cols, QK, q8, kernels::quantize_row);
    }
    if needs(ActFormat::Q8K) {
        quantize_rows(x, cols, QK_K, q8k, kernels::quantize_row_k);
    }
    if mats.iter().any(|m| bf16_acts(m)) {
        quantize_rows(x, cols, 8, bf, kernels::to_bf16_pieces);
    }
    Input { f: x, q8, q8k, bf }
}

/// Quantizes each `cols`-wide row of `x` into `out` (blocks of `block` values), in parallel.
fn quantize_rows<B: Clone + Default + Send>(
    x: &[f32],
    cols: usize,
    block: usize,
    out: &mut Vec<B>,
    quantize: impl Fn(&[f32], &mut [B]) + Sync,
) {
    let per_row = cols / block;
    out.resize(x.len() / cols * per_row, B::default());
    out.par_chunks_mut(per_row)
        .with_min_len(8)
        .zip(x.par_chunks(cols))
        .for_each(|(b, r)| quantize(r, b));
}

/// Whether `w` reads the step's activations as bf16.
fn bf16_acts(w: &Matrix) -> bool {
    kernels::uses_bf16_acts(w.kind, w.interleaved)
}

/// Rows per task in prefill (their weights stay in L1 while every token passes).
const ROW_BLOCK: usize = 16;

/// `out[j] = w[r0 + j] · x[tok]` for a run of rows (`r0` and the run's length are multiples
/// of the group size for interleaved matrices).
fn dot_rows(w: &Matrix, x: &Input<'_>, tok: usize, r0: usize, out: &mut [f32]) {
    match w.kind.act_format() {
        ActFormat::Q8 => {
            let per = w.cols / QK;
            let act = &x.q8[tok * per..(tok + 1) * per];
            if w.interleaved && w.group_rows() == kernels::Q5_GROUP {
                let mut res = [[0f32; kernels::Q5_GROUP]];
                for (k, o) in out.chunks_exact_mut(kernels::Q5_GROUP).enumerate() {
                    let g = w.group(r0 / kernels::Q5_GROUP + k);
                    kernels::dot_q5_group(w.kind, g, &[act], &mut res, true);
                    o.copy_from_slice(&res[0]);
                }
            } else if w.interleaved {
                for (k, o) in out.chunks_exact_mut(kernels::GROUP).enumerate() {
                    o.copy_from_slice(&kernels::dot_x8(
                        w.kind,
                        w.group(r0 / kernels::GROUP + k),
                        act,
                    ));
                }
            } else {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = kernels::dot_q(w.kind, w.row(r0 + j), act);
                }
            }
        }
        ActFormat::Q8K if w.interleaved => {
            let per = w.cols / QK_K;
            let act = &x.q8k[tok * per..(tok + 1) * per];
            let mut res = [[0f32; kernels::K_GROUP]];
            for (k, o) in out.chunks_exact_mut(kernels::K_GROUP).enumerate() {
                kernels::dot_k_group(w.kind, w.group(r0 / kernels::K_GROUP + k), &[act], &mut res);
                o.copy_from_slice(&res[0]);
            }
        }
        ActFormat::Q8K => {
            let per = w.cols / QK_K;
            let act = &x.q8k[tok * per..(tok + 1) * per];
            for (j, o) in out.iter_mut().enumerate() {
                *o = kernels::dot_k(w.kind, w.row(r0 + j), act);
            }
        }
        ActFormat::F32 if bf16_acts(w) => {
            let per = w.cols / 8;
            let act = &x.bf[tok * per..(tok + 1) * per];
            let n = out.len();
            kernels::dot_bf16_g4(w.rows(r0, n), w.cols, &[act], out, n);
        }
        ActFormat::F32 => {
            let act = &x.f[tok * w.cols..(tok + 1) * w.cols];
            let n = out.len();
            kernels::dot_f_block(w.kind, w.rows(r0, n), w.cols, w.interleaved, &[act], out, n);
        }
    }
}

/// Tokens per block in float prefill (their f32 activations stay in L2 while rows pass).
const F_TOKEN_BLOCK: usize = 48;

/// `out[t][r] = w[r] · x[t]` for `t` tokens.
pub(super) fn matmul(w: &Matrix, x: &Input<'_>, t: usize, out: &mut [f32]) {
    let rows = w.rows;
    // Decode steps: a few large contiguous runs of rows per thread (a sequential stream
    // through the weights, few tasks); prefill: small blocks whose weights stay in L1 while
    // every token passes.
    let threads = rayon::current_num_threads().max(1);
    let chunk = rows
        .div_ceil(threads * 4)
        .max(ROW_BLOCK)
        .next_multiple_of(kernels::K_GROUP);
    if t == 1 {
        out[..rows]
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(ci, o)| dot_rows(w, x, 0, ci * chunk, o));
        return;
    }
    // A batch of a few tokens (decode steps of several sequences) streams through the
    // weights once, in large runs; more tokens reuse each block from cache.
    let stream = t <= kernels::STREAM_TOKENS;
    let block = if stream { chunk } else { ROW_BLOCK };
    // Each token's f32 activations (float weights), listed once for every block.
    let float_acts: Vec<&[f32]> = if w.kind.act_format() == ActFormat::F32 {
        x.f.chunks_exact(w.cols).collect()
    } else {
        Vec::new()
    };
    let bf_acts: Vec<&[[u16; 8]]> = if bf16_acts(w) {
        x.bf.chunks_exact(w.cols / 8).collect()
    } else {
        Vec::new()
    };
    // Blocks of rows × tiles of tokens, computed token-major into a per-block buffer and
    // scattered into `[t][r]`.
    let blocks: Vec<Vec<f32>> = (0..rows.div_ceil(block))
        .into_par_iter()
        .map(|bi| {
            let r0 = bi * block;
            let nr = block.min(rows - r0);
            let mut o = vec![0f32; nr * t];
            match w.kind.act_format() {
                // 16-row `Q5_0`/`Q5_1` groups (AVX-512): unpacked once per tile of tokens.
                ActFormat::Q8 if w.interleaved && w.group_rows() == kernels::Q5_GROUP => {
                    group_tiles::<_, { kernels::Q5_GROUP }, { kernels::MAX_TOKENS }>(
                        w,
                        (x.q8, w.cols / QK),
                        (t, r0),
                        &mut o,
                        |g, acts, res| kernels::dot_q5_group(w.kind, g, acts, res, stream),
                    );
                }
                // Interleaved groups: each group's weights unpacked once per tile of tokens.
                ActFormat::Q8 if w.interleaved => {
                    group_tiles::<_, { kernels::GROUP }, { kernels::MAX_TOKENS }>(
                        w,
                        (x.q8, w.cols / QK),
                        (t, r0),
                        &mut o,
                        |g, acts, res| kernels::dot_x8_multi(w.kind, g, acts, res, stream),
                    );
                }
                // bf16 weights and activations (AVX-512 BF16): tiles of 8 rows × 6 tokens.
                ActFormat::F32 if bf16_acts(w) => {
                    for t0 in (0..t).step_by(F_TOKEN_BLOCK) {
                        let block = &bf_acts[t0..(t0 + F_TOKEN_BLOCK).min(t)];
                        kernels::dot_bf16_g4(w.rows(r0, nr), w.cols, block, &mut o[t0 * nr..], nr);
                    }
                }
                // Float weights: tiles of 4 rows × 3 tokens over blocks of tokens whose
                // activations stay in cache while the block's rows pass.
                ActFormat::F32 => {
                    for t0 in (0..t).step_by(F_TOKEN_BLOCK) {
                        let block = &float_acts[t0..(t0 + F_TOKEN_BLOCK).min(t)];
                        let rows = w.rows(r0, nr);
                        kernels::dot_f_block(
                            w.kind,
                            rows,
                            w.cols,
                            w.interleaved,
                            block,
                            &mut o[t0 * nr..],
                            nr,
                        );
                    }
                }
                // K-quant groups of 16 rows: each group's quants unpacked once per tile of
                // tokens.
                ActFormat::Q8K if w.interleaved => {
                    group_tiles::<_, { kernels::K_GROUP }, { kernels::K_TOKENS }>(
                        w,
                        (x.q8k, w.cols / QK_K),
                        (t, r0),
                        &mut o,
                        |g, acts, res| kernels::dot_k_group(w.kind, g, acts, res),
                    );
                }
                // K-quants: each row's super-blocks unpacked once per tile of tokens.
                ActFormat::Q8K => {
                    let per = w.cols / QK_K;
                    let mut res = [0f32; kernels::K_TOKENS];
                    for t0 in (0..t).step_by(kernels::K_TOKENS) {
                        let (all, n) = tile::<_, { kernels::K_TOKENS }>(x.q8k, per, t0, t);
                        let acts = &all[..n];
                        for j in 0..nr {
                            kernels::dot_k_multi(w.kind, w.row(r0 + j), acts, &mut res);
                            for (k, r) in res[..n].iter().enumerate() {
                                o[(t0 + k) * nr + j] = *r;
                            }
                        }
                    }
                }
                _ => {
                    for tok in 0..t {
                        dot_rows(w, x, tok, r0, &mut o[tok * nr..(tok + 1) * nr]);
                    }
                }
            }
            o
        })
        .collect();
    each_row(&mut out[..t * rows], rows, |tok, dst| {
        for (bi, o) in blocks.iter().enumerate() {
            let r0 = bi * block;
            let nr = o.len() / t;
            let src = &o[tok * nr..(tok + 1) * nr];
            if nr == ROW_BLOCK {
                // Prefill blocks as fixed-size moves (a `memmove` call per 16 floats was
                // ~5% of a 512-token prefill).
                let d: &mut [f32; ROW_BLOCK] = (&mut dst[r0..r0 + nr]).try_into().expect("a block");
                *d = src.try_into().expect("a block");
            } else {
                dst[r0..r0 + nr].copy_from_slice(src);
            }
        }
    });
}

/// Tokens `t0..` of the step (`t` in all) as an on-stack array of `N` activation vectors of
/// `per` blocks each (this runs once per tile of every block), and how many of them are real
/// (past the last token the array repeats it).
fn tile<B, const N: usize>(acts: &[B], per: usize, t0: usize, t: usize) -> ([&[B]; N], usize) {
    let all = std::array::from_fn(|j| {
        let tok = (t0 + j).min(t - 1);
        &acts[tok * per..(tok + 1) * per]
    });
    (all, N.min(t - t0))
}

/// One block of rows (`r0`, `o.len() / t` rows) of an interleaved matrix with groups of `G`
/// rows, against the step's `t` tokens in tiles of `N`: `kernel(group, tile, results)` per
/// group and tile, the results scattered token-major into `o` (`[tok][row of the block]`).
fn group_tiles<B, const G: usize, const N: usize>(
    w: &Matrix,
    (acts, per): (&[B], usize),
    (t, r0): (usize, usize),
    o: &mut [f32],
    kernel: impl Fn(&[u8], &[&[B]], &mut [[f32; G]]),
) {
    let nr = o.len() / t;
    let mut res = [[0f32; G]; N];
    for t0 in (0..t).step_by(N) {
        let (all, n) = tile::<B, N>(acts, per, t0, t);
        for k in 0..nr / G {
            kernel(w.group(r0 / G + k), &all[..n], &mut res);
            for (j, r) in res[..n].iter().enumerate() {
                let at = (t0 + j) * nr + k * G;
                o[at..at + G].copy_from_slice(r);
            }
        }
    }
}
