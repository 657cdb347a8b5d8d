//! The AVX-512 kernels against the portable ones (the group kernels also against the AVX2
//! ones, which they must equal bit for bit) on random blocks: random quant bytes, random
//! modest f16 scales, random activations quantized by the portable code. Skipped (passing)
//! on CPUs without AVX-512 VNNI (the bf16 test: without AVX-512 BF16).

use super::available;
use crate::kernels::format::{BlockQ8, GROUP, MAX_TOKENS, QK, WeightKind};
use crate::kernels::kq_check::{
    k_group_matches_portable_and_batch, k_kernel_matches_portable_and_batch, lcg, small_f16,
    uniform,
};
use crate::kernels::q5group::{self, Q5_GROUP};
use crate::kernels::{avx2, interleave, portable};

#[test]
fn avx512_group_kernels_equal_avx2_bit_for_bit_and_portable_closely() {
    if !available() {
        return;
    }
    let mut seed = 17;
    let cols = 7 * QK;
    for kind in [
        WeightKind::Q4_0,
        WeightKind::Q4_1,
        WeightKind::Q5_0,
        WeightKind::Q5_1,
        WeightKind::Q8_0,
    ] {
        let bb = kind.block_bytes();
        let mut rows = vec![0u8; GROUP * kind.row_bytes(cols)];
        for b in rows.chunks_exact_mut(bb) {
            b.iter_mut().for_each(|v| *v = lcg(&mut seed) as u8);
            b[..2].copy_from_slice(&small_f16(&mut seed));
            if kind.has_min() {
                b[2..4].copy_from_slice(&small_f16(&mut seed));
            }
            if kind == WeightKind::Q8_0 {
                // Q8_0 quants are in -127..=127 (llama.cpp never writes -128).
                b[2..]
                    .iter_mut()
                    .filter(|v| **v == 0x80)
                    .for_each(|v| *v = 0x81);
            }
        }
        let group = interleave(kind, &rows, cols);
        let acts = random_acts(&mut seed, cols);
        for n in 1..=MAX_TOKENS {
            let a: Vec<&[BlockQ8]> = acts[..n].iter().map(Vec::as_slice).collect();
            let mut fast = [[0f32; GROUP]; MAX_TOKENS];
            let mut avx2 = fast;
            super::dot_x8_multi(kind, &group, &a, &mut fast, n % 2 == 0);
            avx2::dot_x8_multi(kind, &group, &a, &mut avx2, n % 2 == 0);
            assert_eq!(fast[..n], avx2[..n], "{kind:?} with {n} vectors vs AVX2");
            for t in 0..n {
                let slow = portable::dot_x8(kind, &group, a[t]);
                for r in 0..GROUP {
                    assert!(
                        (fast[t][r] - slow[r]).abs() <= 1e-4 * (1.0 + slow[r].abs()),
                        "{kind:?} token {t} of {n}, row {r}: {} vs portable {}",
                        fast[t][r],
                        slow[r]
                    );
                }
                assert!(slow.iter().all(|v| v.is_finite() && *v != 0.0));
            }
        }
    }
}

/// [`MAX_TOKENS`] random activation vectors of `cols` values, quantized by the portable code.
fn random_acts(seed: &mut u64, cols: usize) -> Vec<Vec<BlockQ8>> {
    (0..MAX_TOKENS)
        .map(|_| {
            let x: Vec<f32> = (0..cols).map(|_| uniform(seed)).collect();
            let mut q = vec![BlockQ8::default(); cols / QK];
            portable::quantize_row(&x, &mut q);
            q
        })
        .collect()
}

#[test]
fn q5_groups_of_16_rows_equal_the_8_row_kernels_bit_for_bit() {
    if !available() {
        return;
    }
    let mut seed = 29;
    for (kind, blocks) in [
        (WeightKind::Q5_0, 7),
        (WeightKind::Q5_1, 3),
        (WeightKind::Q5_0, 1),
    ] {
        let cols = blocks * QK;
        let rb = kind.row_bytes(cols);
        let mut rows = vec![0u8; Q5_GROUP * rb];
        for b in rows.chunks_exact_mut(kind.block_bytes()) {
            b.iter_mut().for_each(|v| *v = lcg(&mut seed) as u8);
            b[..2].copy_from_slice(&small_f16(&mut seed));
            if kind.has_min() {
                b[2..4].copy_from_slice(&small_f16(&mut seed));
            }
        }
        let mut group = vec![0u8; rows.len()];
        q5group::interleave(kind, &rows, cols, &mut group);
        for r in 0..Q5_GROUP {
            let back = q5group::deinterleave_row(kind, &group, r, cols);
            assert_eq!(back, rows[r * rb..(r + 1) * rb], "{kind:?} row {r} back");
        }
        // The same rows as two 8-row groups, through the AVX2 8-row kernel.
        let halves = [0, 1].map(|h| interleave(kind, &rows[h * 8 * rb..(h + 1) * 8 * rb], cols));
        let acts = random_acts(&mut seed, cols);
        for n in 1..=MAX_TOKENS {
            let a: Vec<&[BlockQ8]> = acts[..n].iter().map(Vec::as_slice).collect();
            let mut wide = [[0f32; Q5_GROUP]; MAX_TOKENS];
            super::dot_q5_group(kind, &group, &a, &mut wide, n % 2 == 0);
            for (h, half) in halves.iter().enumerate() {
                let mut eight = [[0f32; GROUP]; MAX_TOKENS];
                avx2::dot_x8_multi(kind, half, &a, &mut eight, false);
                for t in 0..n {
                    assert_eq!(
                        wide[t][8 * h..8 * h + 8],
                        eight[t],
                        "{kind:?}, {blocks} blocks, token {t} of {n}, rows {}..",
                        8 * h
                    );
                }
            }
            let mut alone = [[0f32; Q5_GROUP]; 1];
            super::dot_q5_group(kind, &group, &a[n - 1..], &mut alone, false);
            assert_eq!(
                alone[0],
                wide[n - 1],
                "{kind:?}: a token alone == in a batch of {n}"
            );
        }
    }
}

#[test]
fn avx512_k_quant_kernels_match_the_portable_body_and_do_not_depend_on_the_batch() {
    if !available() {
        return;
    }
    let kinds = [WeightKind::Q4_K, WeightKind::Q6_K];
    k_kernel_matches_portable_and_batch(&kinds, 5, super::dot_k_multi);
}

#[test]
fn avx512_k_quant_group_kernels_match_the_portable_rows_and_do_not_depend_on_the_batch() {
    if !available() {
        return;
    }
    k_group_matches_portable_and_batch(11, super::dot_k_group);
}

#[test]
fn avx512_k_quant_group_kernels_equal_the_avx2_ones_bit_for_bit() {
    use crate::kernels::format::{K_TOKENS, QK_K};
    use crate::kernels::kgroup::{self, K_GROUP};
    use crate::kernels::kq_check::{random_acts, random_k_rows};
    if !available() {
        return;
    }
    let mut seed = 17;
    for kind in [WeightKind::Q4_K, WeightKind::Q6_K] {
        let blocks = 6;
        let rows = random_k_rows(kind, blocks, K_GROUP, &mut seed);
        let mut group = vec![0u8; kgroup::group_bytes(kind, blocks * QK_K)];
        kgroup::interleave(kind, &rows, blocks * QK_K, &mut group);
        let acts = random_acts(blocks, &mut seed);
        let a: Vec<&[crate::kernels::BlockQ8K]> = acts.iter().map(Vec::as_slice).collect();
        let (mut wide, mut narrow) = ([[0f32; K_GROUP]; K_TOKENS], [[0f32; K_GROUP]; K_TOKENS]);
        super::dot_k_group(kind, &group, &a, &mut wide);
        crate::kernels::avx2::dot_k_group(kind, &group, &a, &mut narrow);
        assert_eq!(wide, narrow, "{kind:?}");
    }
}

#[test]
fn avx512_bf16_groups_match_an_f64_reference_and_do_not_depend_on_the_batch() {
    if !super::bf16::available() {
        return;
    }
    let mut seed = 23;
    let (cols, rows) = (8 * 37, 28);
    let weights: Vec<f32> = (0..rows * cols).map(|_| uniform(&mut seed)).collect();
    let mut bytes = Vec::new();
    crate::kernels::push_floats(WeightKind::BF16, &weights, &mut bytes);
    let rb = 2 * cols;
    let grouped: Vec<u8> = bytes
        .chunks_exact(4 * rb)
        .flat_map(|g| interleave(WeightKind::BF16, g, cols))
        .collect();
    let acts: Vec<Vec<f32>> = (0..13)
        .map(|_| (0..cols).map(|_| 4.0 * uniform(&mut seed)).collect())
        .collect();
    let pieces: Vec<Vec<[u16; 8]>> = acts
        .iter()
        .map(|x| {
            let mut p = vec![[0u16; 8]; cols / 8];
            super::bf16::to_bf16(x, &mut p);
            p
        })
        .collect();
    let a: Vec<&[[u16; 8]]> = pieces.iter().map(Vec::as_slice).collect();
    let mut all = vec![0f32; acts.len() * rows];
    super::bf16::dot_g4(&grouped, rb, &a, &mut all, rows);
    let bf = |v: f32| half::bf16::from_f32(v).to_f32() as f64;
    for (t, x) in acts.iter().enumerate() {
        // The rounding is `half`'s (to nearest even) for these normal values.
        let want: Vec<u16> = x
            .iter()
            .map(|v| half::bf16::from_f32(*v).to_bits())
            .collect();
        assert_eq!(pieces[t].concat(), want, "token {t} rounded to bf16");
        // Alone, and with only the first group (a tile of one group, not four).
        let p = &pieces[t][..];
        let mut alone = vec![0f32; rows];
        super::bf16::dot_g4(&grouped, rb, &[p], &mut alone, rows);
        assert_eq!(
            all[t * rows..(t + 1) * rows],
            alone[..],
            "token {t} in a batch vs alone"
        );
        let mut first = [0f32; 4];
        super::bf16::dot_g4(&grouped[..4 * rb], rb, &[p], &mut first, 4);
        assert_eq!(first[..], alone[..4], "token {t}: one group vs four");
        let mut three = [0f32; 12];
        super::bf16::dot_g4(&grouped[4 * rb..16 * rb], rb, &[p], &mut three, 12);
        assert_eq!(
            three[..],
            alone[4..16],
            "token {t}: groups 1..4 as two and one vs four"
        );
        for r in 0..rows {
            let w = &weights[r * cols..(r + 1) * cols];
            let exact: f64 = w.iter().zip(x).map(|(w, x)| bf(*w) * bf(*x)).sum();
            let scale: f64 = w.iter().zip(x).map(|(w, x)| (bf(*w) * bf(*x)).abs()).sum();
            let got = alone[r] as f64;
            assert!(
                (got - exact).abs() <= 1e-6 * scale,
                "token {t} row {r}: {got} vs {exact} (scale {scale})"
            );
        }
    }
}
