//! The K-quant (`Q4_K`, `Q5_K`, `Q6_K`), `Q5_0` and `Q5_1` decoders and dot products against an
//! independent reference: tests/fixtures/gguf/kquants.{gguf,json}
//! (scripts/fixtures/gen_kquant_fixture.py), random blocks dequantized by the `gguf` Python
//! package, and the exact dot products of those values with a random activation vector.

mod common;

use std::fs::File;
use std::io::BufReader;

use candle_core::quantized::gguf_file::Content;
use native_llm::kernels::{self, BlockQ8, BlockQ8K, QK, QK_K, WeightKind};
use native_llm::weights::{GgufWeights, Matrix};
use serde_json::Value;

fn fixture() -> (GgufWeights, Value) {
    let dir = common::fixtures().join("gguf");
    let path = dir.join("kquants.gguf");
    let mut r = BufReader::new(File::open(&path).unwrap());
    let content = Content::read(&mut r).unwrap();
    let w = hf_candle::gguf::native_weights(&path, &content).unwrap();
    (w, common::read_json(&dir.join("kquants.json")))
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn k_quant_and_q5_rows_dequantize_as_the_gguf_package_does() {
    let (w, fx) = fixture();
    assert!(w.unsupported_tensor().is_none(), "every format is native");
    for (name, t) in fx["tensors"].as_object().unwrap() {
        let m = w.matrix(name).unwrap();
        let want_kind = match t["type"].as_str().unwrap() {
            "Q4_K" => WeightKind::Q4_K,
            "Q5_K" => WeightKind::Q5_K,
            "Q6_K" => WeightKind::Q6_K,
            "Q5_0" => WeightKind::Q5_0,
            "Q5_1" => WeightKind::Q5_1,
            other => panic!("unexpected type {other}"),
        };
        assert_eq!(m.kind, want_kind, "{name}");
        assert_eq!((m.rows, m.cols), (2, 512), "{name}");
        for (r, want) in t["values"].as_array().unwrap().iter().enumerate() {
            let want = floats(want);
            let mut got = vec![0f32; m.cols];
            m.dequantize_row(r, &mut got);
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - e).abs() <= 1e-6 * (1.0 + e.abs()),
                    "{name} row {r} value {i}: {g} vs gguf's {e}"
                );
            }
        }
    }
}

#[test]
fn k_quant_and_q5_dot_products_match_the_exact_ones() {
    let (w, fx) = fixture();
    for (name, t) in fx["tensors"].as_object().unwrap() {
        let m = w.matrix(name).unwrap();
        let x = floats(&t["x"]);
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (r, (exact, vals)) in floats(&t["dot"])
            .iter()
            .zip(t["values"].as_array().unwrap())
            .enumerate()
        {
            let got = if m.kind.act_format() == kernels::ActFormat::Q8K {
                let mut xq = vec![BlockQ8K::default(); m.cols / QK_K];
                kernels::quantize_row_k(&x, &mut xq);
                let one = kernels::dot_k(m.kind, m.row(r), &xq);
                // A tile of tokens gives each token the result it gets alone, bit for bit.
                let mut rev = x.clone();
                rev.reverse();
                let mut rq = vec![BlockQ8K::default(); m.cols / QK_K];
                kernels::quantize_row_k(&rev, &mut rq);
                let mut multi = [0f32; 3];
                kernels::dot_k_multi(m.kind, m.row(r), &[&rq, &xq, &rq], &mut multi);
                assert_eq!(multi[1], one, "{name} row {r}: batched == alone");
                assert_eq!(multi[0], multi[2]);
                if let Some(n) = kernels::group_rows(m.kind, m.cols) {
                    // The two rows repeated into a group, repacked as the loader repacks a
                    // matrix for the group kernel (`Q4_K`, `Q6_K` on AVX-512 CPUs): the same values
                    // back, and the same dot products within rounding.
                    let rows: Vec<u8> = (0..n).flat_map(|j| m.row(j % 2).to_vec()).collect();
                    let g = Matrix::owned(m.kind, n, m.cols, rows).for_kernels();
                    assert!(g.interleaved, "{name}: repacked");
                    let mut back = vec![0f32; m.cols];
                    g.dequantize_row(r + 2, &mut back);
                    assert_eq!(back, floats(vals), "{name} row {r}: repacked values");
                    let mut res = [[0f32; kernels::K_GROUP]; 3];
                    kernels::dot_k_group(m.kind, g.group(0), &[&rq, &xq, &rq], &mut res);
                    assert_eq!(res[1][r], res[1][r + 2], "{name} row {r}");
                    assert_eq!(res[0], res[2], "{name}: batched == alone");
                    assert!(
                        (res[1][r] - one).abs() <= 1e-4 * (1.0 + one.abs()),
                        "{name} row {r}: group kernel {} vs one row {one}",
                        res[1][r]
                    );
                }
                one
            } else {
                let mut xq = vec![BlockQ8::default(); m.cols / QK];
                kernels::quantize_row(&x, &mut xq);
                let one = kernels::dot_q(m.kind, m.row(r), &xq);
                // The two rows repeated into a group, repacked as the loader repacks a matrix
                // for the multi-row kernels (8 rows; `Q5_0`/`Q5_1` on AVX-512 CPUs 16): the
                // same values back, and the same dot products.
                let n = kernels::group_rows(m.kind, m.cols).expect("grouped format");
                let rows: Vec<u8> = (0..n).flat_map(|j| m.row(j % 2).to_vec()).collect();
                let g = Matrix::owned(m.kind, n, m.cols, rows).for_kernels();
                assert!(g.interleaved, "{name}: repacked");
                let mut back = vec![0f32; m.cols];
                g.dequantize_row(r + 2, &mut back);
                assert_eq!(back, floats(vals), "{name} row {r}: repacked values");
                let res: Vec<f32> = if n == kernels::Q5_GROUP {
                    let mut res = [[0f32; kernels::Q5_GROUP]];
                    kernels::dot_q5_group(m.kind, g.group(0), &[&xq], &mut res, false);
                    res[0].to_vec()
                } else {
                    kernels::dot_x8(m.kind, g.group(0), &xq).to_vec()
                };
                assert_eq!(res[r], res[r + 2], "{name} row {r}");
                assert!(
                    (res[r] - one).abs() <= 1e-4 * (1.0 + one.abs()),
                    "{name} row {r}: {n}-row kernel {} vs one row {one}",
                    res[r]
                );
                one
            };
            // Activation quantization moves each value by at most half a step (amax / 254).
            let bound: f32 = floats(vals).iter().map(|v| v.abs()).sum::<f32>() * amax / 254.0;
            assert!(
                (got - exact).abs() <= bound + 1e-3,
                "{name} row {r}: {got} vs exact {exact} (bound {bound})"
            );
        }
    }
}
