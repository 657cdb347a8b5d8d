//! The kernels against each other and against plain math: SIMD vs portable, grouped vs
//! row-major, a tile of tokens vs each token alone (bit for bit where the docs promise it).

use super::*;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
}

/// Encodes `w` in `kind` with the reference (scalar) rules, for tests.
fn encode(kind: WeightKind, w: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    match kind {
        WeightKind::F32 => w.iter().for_each(|x| out.extend(x.to_le_bytes())),
        WeightKind::F16 => w
            .iter()
            .for_each(|x| out.extend(half::f16::from_f32(*x).to_le_bytes())),
        WeightKind::BF16 => w
            .iter()
            .for_each(|x| out.extend(half::bf16::from_f32(*x).to_le_bytes())),
        WeightKind::Q8_0 => {
            for b in w.chunks(QK) {
                let amax = b.iter().fold(0f32, |m, x| m.max(x.abs()));
                let d = amax / 127.0;
                out.extend(half::f16::from_f32(d).to_le_bytes());
                let id = if d > 0.0 { 1.0 / d } else { 0.0 };
                out.extend(b.iter().map(|x| (x * id).round() as i8 as u8));
            }
        }
        WeightKind::Q4_0 | WeightKind::Q4_1 => {
            for b in w.chunks(QK) {
                let (min, max) = b
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
                let (d, m) = if kind == WeightKind::Q4_1 {
                    ((max - min) / 15.0, min)
                } else {
                    let amax = if max.abs() > min.abs() { max } else { min };
                    (amax / -8.0, 0.0)
                };
                out.extend(half::f16::from_f32(d).to_le_bytes());
                if kind == WeightKind::Q4_1 {
                    out.extend(half::f16::from_f32(m).to_le_bytes());
                }
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let q = |x: f32| -> u8 {
                    if kind == WeightKind::Q4_1 {
                        ((x - m) * id + 0.5).clamp(0.0, 15.0) as u8
                    } else {
                        (x * id + 8.5).clamp(0.0, 15.0) as u8
                    }
                };
                for j in 0..QK / 2 {
                    out.push(q(b[j]) | (q(b[j + QK / 2]) << 4));
                }
            }
        }
        // ggml's `quantize_row_q5_0_ref` / `quantize_row_q5_1_ref`.
        WeightKind::Q5_0 | WeightKind::Q5_1 => {
            for b in w.chunks(QK) {
                let (min, max) = b
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
                let (d, m) = if kind == WeightKind::Q5_1 {
                    ((max - min) / 31.0, min)
                } else {
                    let amax = if max.abs() > min.abs() { max } else { min };
                    (amax / -16.0, 0.0)
                };
                out.extend(half::f16::from_f32(d).to_le_bytes());
                if kind == WeightKind::Q5_1 {
                    out.extend(half::f16::from_f32(m).to_le_bytes());
                }
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let q: Vec<u32> = b
                    .iter()
                    .map(|x| {
                        if kind == WeightKind::Q5_1 {
                            ((x - m) * id + 0.5).clamp(0.0, 31.0) as u32
                        } else {
                            (x * id + 16.5).clamp(0.0, 31.0) as u32
                        }
                    })
                    .collect();
                let qh = q
                    .iter()
                    .enumerate()
                    .fold(0u32, |h, (j, v)| h | (v >> 4) << j);
                out.extend(qh.to_le_bytes());
                out.extend((0..QK / 2).map(|j| (q[j] & 0x0F | (q[j + QK / 2] & 0x0F) << 4) as u8));
            }
        }
        // Checked against the `gguf` package's decoder instead (tests/kquant_tests.rs).
        WeightKind::Q4_K | WeightKind::Q5_K | WeightKind::Q6_K => unimplemented!(),
    }
    out
}

const KINDS: [WeightKind; 8] = [
    WeightKind::F32,
    WeightKind::F16,
    WeightKind::BF16,
    WeightKind::Q4_0,
    WeightKind::Q4_1,
    WeightKind::Q5_0,
    WeightKind::Q5_1,
    WeightKind::Q8_0,
];

/// The formats of the 8-row group kernels.
const GROUPED: [WeightKind; 5] = [
    WeightKind::Q4_0,
    WeightKind::Q4_1,
    WeightKind::Q5_0,
    WeightKind::Q5_1,
    WeightKind::Q8_0,
];

#[test]
fn attention_kernel_agrees_with_the_portable_loop() {
    let mut seed = 3;
    for kind in [WeightKind::F32, WeightKind::F16, WeightKind::BF16] {
        for hd in [64usize, 72, 256, 12] {
            let (heads, stride) = (3, 3 * hd);
            for n in [1usize, 3, 4, 5, 9, 37] {
                let q: Vec<f32> = (0..hd).map(|_| lcg(&mut seed)).collect();
                let (mut keys, mut values) = (Vec::new(), Vec::new());
                let fk: Vec<f32> = (0..n * stride).map(|_| lcg(&mut seed)).collect();
                let fv: Vec<f32> = (0..n * stride).map(|_| lcg(&mut seed)).collect();
                push_floats(kind, &fk, &mut keys);
                push_floats(kind, &fv, &mut values);
                for h in 0..heads {
                    let mut scores = Vec::new();
                    let mut fast = vec![9f32; hd];
                    let scale = 1.0 / (hd as f32).sqrt();
                    let tile = Tile {
                        qs: &[&q],
                        spans: &[(0, n)],
                        keys: &keys,
                        values: &values,
                        kind,
                        stride,
                        offset: h * hd,
                        scale,
                    };
                    attend_many(&tile, &mut scores, &mut fast);
                    let head = Head {
                        q: &q,
                        keys: &keys,
                        values: &values,
                        kind,
                        stride,
                        offset: h * hd,
                        n,
                        scale,
                    };
                    let mut slow = vec![0f32; hd];
                    head.run(portable::dot_f32, portable::axpy, &mut scores, &mut slow);
                    for (a, b) in fast.iter().zip(&slow) {
                        assert!((a - b).abs() <= 1e-5, "{kind:?} hd {hd} n {n}: {a} vs {b}");
                    }
                }
            }
        }
    }
}

#[test]
fn interleaved_groups_give_back_every_row() {
    let mut seed = 5;
    for kind in GROUPED
        .into_iter()
        .chain([WeightKind::F32, WeightKind::F16, WeightKind::BF16])
    {
        let cols = 96;
        let n = kind.group_rows(cols).expect("an interleaved kind");
        let rows: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let w: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
                encode(kind, &w)
            })
            .collect();
        let group = interleave(kind, &rows.concat(), cols);
        for (j, row) in rows.iter().enumerate() {
            assert_eq!(
                &deinterleave_row(kind, &group, j, cols),
                row,
                "{kind:?} row {j}"
            );
        }
    }
}

#[test]
fn k_quant_groups_give_back_every_row_and_its_products_bit_for_bit() {
    use super::kq_check::{random_acts, random_k_rows};
    let mut seed = 23;
    for kind in [WeightKind::Q4_K, WeightKind::Q6_K] {
        let blocks = 3;
        let cols = blocks * QK_K;
        let rows = random_k_rows(kind, blocks, K_GROUP, &mut seed);
        let mut group = vec![0u8; group_bytes(kind, cols)];
        kgroup::interleave(kind, &rows, cols, &mut group);
        assert_eq!(group.len(), blocks * kgroup::block_bytes(kind));
        let acts = random_acts(blocks, &mut seed);
        let a: Vec<&[BlockQ8K]> = acts.iter().map(Vec::as_slice).collect();
        let mut grouped = [[0f32; K_GROUP]; K_TOKENS];
        kgroup::dot_group_body(kind, &group, &a, &mut grouped);
        for (r, row) in rows.chunks_exact(kind.row_bytes(cols)).enumerate() {
            let (mut want, mut got) = (vec![0f32; cols], vec![0f32; cols]);
            kquants::dequantize_row_k(kind, row, &mut want);
            kgroup::dequantize_row(kind, &group, r, &mut got);
            assert_eq!(got, want, "{kind:?} row {r} dequantized");
            let mut plain = [0f32; K_TOKENS];
            kquants::dot_k_multi_body(kind, row, &a, &mut plain);
            for t in 0..K_TOKENS {
                assert_eq!(
                    grouped[t][r].to_bits(),
                    plain[t].to_bits(),
                    "{kind:?} row {r} token {t}"
                );
            }
        }
    }
}

#[test]
fn q8_0_minus_128_is_read_as_minus_127_by_the_8_row_kernels() {
    let mut seed = 11;
    let cols = 64;
    let mut rows: Vec<u8> = (0..GROUP)
        .flat_map(|_| {
            let w: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
            encode(WeightKind::Q8_0, &w)
        })
        .collect();
    rows[2] = 0x80; // row 0, block 0, first quant
    let group = interleave(WeightKind::Q8_0, &rows, cols);
    let clamped = deinterleave_row(WeightKind::Q8_0, &group, 0, cols);
    assert_eq!(clamped[2] as i8, -127);
    let x: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
    let mut xq = vec![BlockQ8::default(); cols / QK];
    quantize_row(&x, &mut xq);
    let want = portable::dot_q(WeightKind::Q8_0, &clamped, &xq);
    let got = dot_x8(WeightKind::Q8_0, &group, &xq)[0];
    assert!(
        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
        "{got} vs {want}"
    );
}

#[test]
fn grouped_float_rows_equal_row_major_bit_for_bit() {
    // 8 rows (two groups of 4), 1 to 5 tokens (tiles of 3, 2 and 1).
    let mut seed = 11;
    for cols in [8usize, 64, 576] {
        for kind in [WeightKind::F32, WeightKind::F16, WeightKind::BF16] {
            assert_eq!(kind.group_rows(cols), Some(F_GROUP));
            let rows: Vec<u8> = (0..8)
                .flat_map(|_| encode(kind, &(0..cols).map(|_| lcg(&mut seed)).collect::<Vec<_>>()))
                .collect();
            let rb = kind.row_bytes(cols);
            let grouped: Vec<u8> = rows
                .chunks_exact(rb * F_GROUP)
                .flat_map(|g| interleave(kind, g, cols))
                .collect();
            for (r, row) in rows.chunks_exact(rb).enumerate() {
                let g = &grouped[r / F_GROUP * F_GROUP * rb..][..F_GROUP * rb];
                assert_eq!(deinterleave_row(kind, g, r % F_GROUP, cols), row);
            }
            for n in 1..=5 {
                let acts: Vec<Vec<f32>> = (0..n)
                    .map(|_| (0..cols).map(|_| lcg(&mut seed)).collect())
                    .collect();
                let acts: Vec<&[f32]> = acts.iter().map(Vec::as_slice).collect();
                let mut plain = vec![0f32; n * 8];
                let mut tiled = vec![0f32; n * 8];
                dot_f_block(kind, &rows, cols, false, &acts, &mut plain, 8);
                dot_f_block(kind, &grouped, cols, true, &acts, &mut tiled, 8);
                assert_eq!(plain, tiled, "{kind:?} cols {cols}, {n} tokens");
                for (r, row) in rows.chunks_exact(rb).enumerate() {
                    assert_eq!(tiled[r], dot_f(kind, row, acts[0]), "{kind:?}: == alone");
                }
            }
        }
    }
    assert_eq!(WeightKind::F32.group_rows(12), None);
    assert_eq!(WeightKind::Q4_K.group_rows(256), None);
}

#[test]
fn float_tiles_equal_single_rows_at_any_width() {
    // Widths with tails after the 8- and 16-value vector steps, and a 7-row matrix
    // (tiles of 4 or 2 rows, then single rows), 5 tokens (tiles of 3, then 2).
    let mut seed = 5;
    for cols in [8usize, 24, 40, 600] {
        let acts: Vec<Vec<f32>> = (0..5)
            .map(|_| (0..cols).map(|_| lcg(&mut seed)).collect())
            .collect();
        let acts: Vec<&[f32]> = acts.iter().map(Vec::as_slice).collect();
        for kind in [WeightKind::F32, WeightKind::F16, WeightKind::BF16] {
            let w: Vec<Vec<f32>> = (0..7)
                .map(|_| (0..cols).map(|_| lcg(&mut seed)).collect())
                .collect();
            let rows: Vec<u8> = w.iter().flat_map(|r| encode(kind, r)).collect();
            let mut block = vec![0f32; 5 * 7];
            dot_f_block(kind, &rows, cols, false, &acts, &mut block, 7);
            for (r, row) in rows.chunks_exact(kind.row_bytes(cols)).enumerate() {
                for (t, a) in acts.iter().enumerate() {
                    let one = dot_f(kind, row, a);
                    assert_eq!(block[t * 7 + r], one, "{kind:?} cols {cols}: tile == alone");
                    let slow = portable::dot_f(kind, row, a);
                    assert!(
                        (one - slow).abs() <= 1e-5 * (1.0 + slow.abs()) * cols as f32,
                        "{kind:?} cols {cols}: {one} vs portable {slow}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_tile_of_queries_equals_each_query_alone() {
    let mut seed = 21;
    for kind in [WeightKind::F32, WeightKind::F16, WeightKind::BF16] {
        for hd in [64usize, 256, 12] {
            let (kv_heads, n) = (2, 70);
            let stride = kv_heads * hd;
            let mut keys = Vec::new();
            let mut values = Vec::new();
            let fk: Vec<f32> = (0..n * stride).map(|_| lcg(&mut seed)).collect();
            let fv: Vec<f32> = (0..n * stride).map(|_| lcg(&mut seed)).collect();
            push_floats(kind, &fk, &mut keys);
            push_floats(kind, &fv, &mut values);
            let qs: Vec<Vec<f32>> = (0..13)
                .map(|_| (0..hd).map(|_| lcg(&mut seed)).collect())
                .collect();
            let qs: Vec<&[f32]> = qs.iter().map(Vec::as_slice).collect();
            // Causal spans of consecutive tokens (runs of 2 to 5 heads, so the kernels form
            // groups of every size they use), one with a sliding window.
            let spans = [
                (0, 61),
                (0, 61),
                (0, 62),
                (0, 62),
                (0, 62),
                (40, 23),
                (0, 1),
                (0, 69),
                (0, 69),
                (0, 69),
                (0, 69),
                (0, 69),
                (0, 70),
            ];
            let tile = |qs: &'_ [&'_ [f32]], spans: &'_ [(usize, usize)]| {
                let mut out = vec![0f32; qs.len() * hd];
                let t = Tile {
                    qs,
                    spans,
                    keys: &keys,
                    values: &values,
                    kind,
                    stride,
                    offset: hd,
                    scale: 0.125,
                };
                attend_many(&t, &mut Vec::new(), &mut out);
                out
            };
            let out = tile(&qs, &spans);
            for (m, (q, span)) in qs.iter().zip(&spans).enumerate() {
                let one = tile(&[q], &[*span]);
                assert_eq!(
                    &out[m * hd..(m + 1) * hd],
                    &one[..],
                    "{kind:?} hd {hd} query {m}"
                );
                // Against f64 softmax attention over the stored (rounded) keys and values.
                let (first, len) = *span;
                let read = |data: &[u8], j: usize| {
                    let w = kind.row_bytes(1);
                    let mut row = vec![0f32; hd];
                    let at = (j * stride + hd) * w;
                    portable::dequantize_row(kind, &data[at..at + hd * w], &mut row);
                    row
                };
                let scores: Vec<f64> = (first..first + len)
                    .map(|j| {
                        let k = read(&keys, j);
                        q.iter()
                            .zip(&k)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * 0.125
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for d in 0..hd {
                    let want: f64 = (first..first + len)
                        .zip(&scores)
                        .map(|(j, s)| (s - max).exp() / sum * read(&values, j)[d] as f64)
                        .sum();
                    let got = out[m * hd + d] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "{kind:?} hd {hd} query {m} dim {d}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn vector_exp_and_activations_match_f64_math() {
    // Softmax numerators over a wide range (including far below the maximum).
    let xs: Vec<f32> = (0..2001).map(|i| (i as f32 - 1000.0) * 0.11).collect();
    let mut e = xs.clone();
    let max = 110.0; // at least every value: arguments from -220 to 0
    let sum = exp_shifted_sum(&mut e, max);
    let mut want_sum = 0f64;
    for (x, got) in xs.iter().zip(&e) {
        let want = ((*x - max) as f64).exp();
        want_sum += want;
        assert!(
            (*got as f64 - want).abs() <= 2e-7 * want + 1e-37,
            "e^{} = {got}, want {want}",
            x - max
        );
    }
    assert!((sum as f64 - want_sum).abs() <= 1e-6 * want_sum);
    // SiLU and GELU (tanh form), against the textbook formulas in f64.
    let up: Vec<f32> = xs.iter().map(|x| 1.0 + x * 0.01).collect();
    for gelu in [false, true] {
        let mut g: Vec<f32> = xs.iter().map(|x| x * 0.2).collect();
        gated_activation(gelu, &mut g, &up);
        for ((x, u), got) in xs.iter().zip(&up).zip(&g) {
            let x = (x * 0.2) as f64;
            let act = if gelu {
                let t = ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh();
                0.5 * x * (1.0 + t)
            } else {
                x / (1.0 + (-x).exp())
            };
            let want = act * *u as f64;
            assert!(
                (*got as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "gelu={gelu} x={x}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn every_kind_dequantizes_close_to_the_source() {
    let mut seed = 7;
    let w: Vec<f32> = (0..256).map(|_| lcg(&mut seed)).collect();
    for kind in KINDS {
        let bytes = encode(kind, &w);
        assert_eq!(bytes.len(), kind.row_bytes(w.len()), "{kind:?}");
        let mut back = vec![0f32; w.len()];
        dequantize_row(kind, &bytes, &mut back);
        let tol = match kind {
            WeightKind::F32 => 0.0,
            WeightKind::F16 => 1e-3,
            WeightKind::BF16 => 1e-2,
            WeightKind::Q8_0 => 1e-2,
            WeightKind::Q5_0 | WeightKind::Q5_1 => 0.07,
            _ => 0.14,
        };
        for (a, b) in w.iter().zip(&back) {
            assert!((a - b).abs() <= tol, "{kind:?}: {a} vs {b}");
        }
    }
}

#[test]
fn simd_and_portable_kernels_agree_with_the_dequantized_dot() {
    let mut seed = 42;
    for cols in [32usize, 64, 576, 1536] {
        let w: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
        let x: Vec<f32> = (0..cols).map(|_| lcg(&mut seed) * 3.0).collect();
        let mut xq = vec![BlockQ8::default(); cols / QK];
        quantize_row(&x, &mut xq);
        for kind in KINDS {
            let bytes = encode(kind, &w);
            let mut wd = vec![0f32; cols];
            dequantize_row(kind, &bytes, &mut wd);
            let exact: f64 = wd.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
            let (fast, slow) = if kind.is_quantized() {
                (dot_q(kind, &bytes, &xq), portable::dot_q(kind, &bytes, &xq))
            } else {
                (dot_f(kind, &bytes, &x), portable::dot_f(kind, &bytes, &x))
            };
            // Activation quantization error: at most half a step per value.
            let tol = if kind.is_quantized() {
                wd.iter().map(|v| v.abs()).sum::<f32>() * 3.0 / 254.0 + 1e-3
            } else {
                1e-3 * cols as f32
            };
            assert!(
                (fast as f64 - exact).abs() <= tol as f64,
                "{kind:?} cols {cols}: fast {fast} vs exact {exact}"
            );
            assert!(
                (fast - slow).abs() <= 1e-4 * (1.0 + exact.abs() as f32),
                "{kind:?} cols {cols}: {:?} {fast} vs portable {slow}",
                isa()
            );
        }
        for kind in GROUPED {
            let rows: Vec<u8> = (0..GROUP)
                .flat_map(|_| {
                    let w: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
                    encode(kind, &w)
                })
                .collect();
            let rb = kind.row_bytes(cols);
            let group = interleave(kind, &rows, cols);
            assert_eq!(group.len(), rows.len());
            let eight = dot_x8(kind, &group, &xq);
            let mut xq2 = xq.clone();
            xq2.reverse();
            for n in 2..=MAX_TOKENS {
                let acts: Vec<&[BlockQ8]> = (0..n)
                    .map(|t| if t % 2 == 1 { &xq[..] } else { &xq2[..] })
                    .collect();
                let mut multi = [[0f32; GROUP]; MAX_TOKENS];
                dot_x8_multi(kind, &group, &acts, &mut multi, n % 2 == 0);
                let alone2 = dot_x8(kind, &group, &xq2);
                for (t, got) in multi[..n].iter().enumerate() {
                    let want = if t % 2 == 1 { &eight } else { &alone2 };
                    assert_eq!(
                        got, want,
                        "{kind:?}: token {t} of {n} == alone, bit for bit"
                    );
                }
            }
            let slow = portable::dot_x8(kind, &group, &xq);
            for r in 0..GROUP {
                let row = &rows[r * rb..(r + 1) * rb];
                assert_eq!(
                    deinterleave_row(kind, &group, r, cols),
                    row,
                    "{kind:?} row {r}"
                );
                let one = dot_q(kind, row, &xq);
                assert!(
                    (eight[r] - one).abs() <= 1e-4 * (1.0 + one.abs()),
                    "{kind:?} x8 row {r}: {} vs {one}",
                    eight[r]
                );
                assert!((slow[r] - one).abs() <= 1e-4 * (1.0 + one.abs()));
            }
        }
        for kind in [WeightKind::F32, WeightKind::F16, WeightKind::BF16] {
            // 9 rows: two 4-row tiles and one single row.
            let rows: Vec<u8> = (0..9)
                .flat_map(|_| {
                    let w: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
                    encode(kind, &w)
                })
                .collect();
            let x2: Vec<f32> = x.iter().rev().copied().collect();
            let acts: [&[f32]; 5] = [&x2, &x, &x2, &x, &x];
            let mut block = vec![0f32; 5 * 9];
            dot_f_block(kind, &rows, cols, false, &acts, &mut block, 9);
            let rb = kind.row_bytes(cols);
            for (r, row) in rows.chunks_exact(rb).enumerate() {
                for (t, a) in acts.iter().enumerate() {
                    assert_eq!(
                        block[t * 9 + r],
                        dot_f(kind, row, a),
                        "{kind:?}: tile == alone"
                    );
                }
                let slow = portable::dot_f(kind, row, &x);
                assert!((block[9 + r] - slow).abs() <= 1e-4 * (1.0 + slow.abs()));
            }
        }
        let mut slow_q = vec![BlockQ8::default(); cols / QK];
        portable::quantize_row(&x, &mut slow_q);
        assert_eq!(
            xq,
            slow_q,
            "{:?} quantization == portable, bit for bit",
            isa()
        );
        let y: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
        let d = dot_f32(&x, &y);
        let e: f32 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        assert!((d - e).abs() < 1e-3, "dot_f32 {d} vs {e}");
        let mut z = y.clone();
        axpy(&mut z, 0.5, &x);
        for i in 0..cols {
            assert!((z[i] - (y[i] + 0.5 * x[i])).abs() < 1e-6);
        }
    }
}

#[test]
fn q8k_quantization_follows_llama_cpp() {
    // Scale `max / -127` for the value of largest magnitude (so it maps to -127 whatever its
    // sign), round to nearest with ties to even, as llama.cpp's `nearest_int`.
    let mut x = vec![0f32; QK_K];
    x[..4].copy_from_slice(&[-127.0, 2.5, 3.5, -2.5]);
    let mut q = [BlockQ8K::default()];
    quantize_row_k(&x, &mut q);
    assert_eq!(q[0].qs[..5], [-127, 2, 4, -2, 0]);
    assert_eq!(q[0].bsums[0], -123);
    assert_eq!(q[0].bsums[1], 0);
    assert_eq!(q[0].d, 1.0);
    let zero = vec![0f32; QK_K];
    quantize_row_k(&zero, &mut q);
    assert_eq!(q[0], BlockQ8K::default());
}
