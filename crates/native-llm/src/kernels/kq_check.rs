//! Test support shared by the SIMD kernel tests: a seeded generator, random modest f16
//! scales, and the one check every K-quant kernel set must pass (against the portable body,
//! and batch-independent).

use super::format::{BlockQ8K, K_TOKENS, QK_K, WeightKind};
use super::kgroup::{self, K_GROUP};
use super::kquants::{dot_k_multi_body, quantize_row_k_body};

/// A K-quant row kernel: `out[t] = row · acts[t]` for 1 to [`K_TOKENS`] vectors.
pub(super) type KernelK = fn(WeightKind, &[u8], &[&[BlockQ8K]], &mut [f32]);

pub(super) fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

pub(super) fn uniform(seed: &mut u64) -> f32 {
    lcg(seed) as f32 / (1u64 << 31) as f32 - 0.5
}

/// An f16 in ±[2^-9, 2^-5): finite and modest, so the float sums stay well-conditioned.
pub(super) fn small_f16(seed: &mut u64) -> [u8; 2] {
    let v = (1.0 + uniform(seed)) * 2f32.powi(-(5 + (lcg(seed) % 4) as i32));
    let v = if lcg(seed).is_multiple_of(2) { v } else { -v };
    half::f16::from_f32(v).to_le_bytes()
}

/// `rows` random rows of `blocks` super-blocks of `kind`: random quant bytes, modest f16
/// scales.
pub(super) fn random_k_rows(
    kind: WeightKind,
    blocks: usize,
    rows: usize,
    seed: &mut u64,
) -> Vec<u8> {
    let bb = kind.block_bytes();
    // Where each format keeps its f16 scales (`d`, and `dmin` for Q4_K/Q5_K).
    let scales: &[usize] = if kind == WeightKind::Q6_K {
        &[208]
    } else {
        &[0, 2]
    };
    let mut out: Vec<u8> = (0..rows * blocks * bb).map(|_| lcg(seed) as u8).collect();
    for b in out.chunks_exact_mut(bb) {
        for &i in scales {
            b[i..i + 2].copy_from_slice(&small_f16(seed));
        }
    }
    out
}

/// [`K_TOKENS`] random activation vectors of `blocks` super-blocks, quantized by the portable
/// code.
pub(super) fn random_acts(blocks: usize, seed: &mut u64) -> Vec<Vec<BlockQ8K>> {
    (0..K_TOKENS)
        .map(|_| {
            let x: Vec<f32> = (0..blocks * QK_K).map(|_| uniform(seed)).collect();
            let mut q = vec![BlockQ8K::default(); blocks];
            quantize_row_k_body(&x, &mut q);
            q
        })
        .collect()
}

/// Checks `kernel` on random rows of each of `kinds` (1, 3 and 35 super-blocks; random quant
/// bytes, modest f16 scales, activations quantized by the portable code): each token's result
/// in a batch of 1 to [`K_TOKENS`] equals that token alone bit for bit (the engine's batched ==
/// single rule), and the portable body within rounding.
pub(super) fn k_kernel_matches_portable_and_batch(
    kinds: &[WeightKind],
    mut seed: u64,
    kernel: KernelK,
) {
    for blocks in [1, 3, 35] {
        for &kind in kinds {
            let row = random_k_rows(kind, blocks, 1, &mut seed);
            let acts = random_acts(blocks, &mut seed);
            check(kind, blocks, &row, &acts, |a| {
                let mut o = [0f32; K_TOKENS];
                kernel(kind, &row, a, &mut o);
                o[..a.len()].iter().map(|v| vec![*v]).collect()
            });
        }
    }
}

/// [`k_kernel_matches_portable_and_batch`] for a K-quant group kernel: 16 random rows of
/// each of `Q4_K` and `Q6_K` repacked into a group, each row's result against the portable
/// row body.
pub(super) fn k_group_matches_portable_and_batch(mut seed: u64, kernel: KernelGroup) {
    for blocks in [1, 3, 35] {
        for kind in [WeightKind::Q4_K, WeightKind::Q6_K] {
            let cols = blocks * QK_K;
            let rows = random_k_rows(kind, blocks, K_GROUP, &mut seed);
            let mut group = vec![0u8; kgroup::group_bytes(kind, cols)];
            kgroup::interleave(kind, &rows, cols, &mut group);
            let acts = random_acts(blocks, &mut seed);
            check(kind, blocks, &rows, &acts, |a| {
                let mut o = [[0f32; K_GROUP]; K_TOKENS];
                kernel(kind, &group, a, &mut o);
                o[..a.len()].iter().map(|r| r.to_vec()).collect()
            });
        }
    }
}

/// A K-quant group kernel: `out[t][r] = row r · acts[t]`.
pub(super) type KernelGroup = fn(WeightKind, &[u8], &[&[BlockQ8K]], &mut [[f32; K_GROUP]]);

/// The shared check: `run(acts)` gives `[token][row]` results for the rows of `rows`
/// (row-major, `blocks` super-blocks each).
fn check(
    kind: WeightKind,
    blocks: usize,
    rows: &[u8],
    acts: &[Vec<BlockQ8K>],
    run: impl Fn(&[&[BlockQ8K]]) -> Vec<Vec<f32>>,
) {
    // Each token alone: the reference for the batched calls, bit for bit.
    let alone: Vec<Vec<f32>> = acts.iter().map(|a| run(&[a]).remove(0)).collect();
    for n in 1..=K_TOKENS {
        let a: Vec<&[BlockQ8K]> = acts[..n].iter().map(Vec::as_slice).collect();
        let fast = run(&a);
        assert_eq!(fast[..n], alone[..n], "{kind:?} with {n} vectors vs alone");
        for (r, row) in rows.chunks_exact(kind.row_bytes(blocks * QK_K)).enumerate() {
            let mut plain = [0f32; K_TOKENS];
            dot_k_multi_body(kind, row, &a, &mut plain);
            // The portable body sums super-block by super-block in one float; the SIMD
            // kernels in float lanes: equal up to rounding (the integer sums are exact), which
            // grows with the number of super-blocks and with the cancellation between the
            // scaled sums and the minimum terms (each far larger than the result with these
            // random scales). A wrong scale, minimum or quant moves a result by a whole term.
            let scale: f32 = plain[..n].iter().map(|v| v.abs()).fold(0.0, f32::max);
            for t in 0..n {
                assert!(
                    (fast[t][r] - plain[t]).abs() <= 1e-4 * blocks as f32 * (1.0 + scale),
                    "{kind:?} ({blocks} blocks) row {r} token {t} of {n}: {} vs portable {}",
                    fast[t][r],
                    plain[t]
                );
            }
            assert!(plain[..n].iter().all(|v| v.is_finite() && *v != 0.0));
        }
    }
}
