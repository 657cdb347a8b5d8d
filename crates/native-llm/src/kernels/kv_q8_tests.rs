//! The `Q8_0` KV cache's attention (`kv_cache_dtype = "q8_0"`) against the f32 cache's on
//! random data, the SIMD kernel against the portable loop, and a tile against each query
//! alone.

use super::*;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
}

/// `n` positions of `kv_heads` heads of `hd` random values (`[-amp, amp]`), as `(f32 bytes,
/// Q8_0 bytes)`.
fn cache(seed: &mut u64, n: usize, stride: usize, amp: f32) -> (Vec<u8>, Vec<u8>) {
    let x: Vec<f32> = (0..n * stride).map(|_| amp * lcg(seed)).collect();
    let (mut f, mut q) = (Vec::new(), Vec::new());
    push_floats(WeightKind::F32, &x, &mut f);
    push_floats(WeightKind::Q8_0, &x, &mut q);
    (f, q)
}

fn attend(
    kind: WeightKind,
    kv: (&[u8], &[u8]),
    qs: &[&[f32]],
    spans: &[(usize, usize)],
    stride: usize,
    offset: usize,
) -> Vec<f32> {
    let hd = qs[0].len();
    let tile = Tile {
        qs,
        spans,
        keys: kv.0,
        values: kv.1,
        kind,
        stride,
        offset,
        scale: 1.0 / (hd as f32).sqrt(),
    };
    let mut out = vec![7f32; qs.len() * hd];
    attend_many(&tile, &mut Vec::new(), &mut out);
    out
}

#[test]
fn q8_0_cache_writes_llama_cpp_blocks() {
    // 32 values whose largest magnitude is -2.54: scale f16(0.02), values × 127 / 2.54
    // rounded to nearest, ties to even (1.27 · 50 = 63.5 → 64 is even; 0.03 · 50 = 1.5 → 2).
    let mut x = vec![0f32; 32];
    x[0] = -2.54;
    x[1] = 1.27;
    x[2] = 0.03;
    x[3] = 0.05;
    let mut b = Vec::new();
    push_floats(WeightKind::Q8_0, &x, &mut b);
    assert_eq!(b.len(), 34);
    assert_eq!(&b[..2], &half::f16::from_f32(2.54 / 127.0).to_le_bytes());
    let qs: Vec<i8> = b[2..].iter().map(|&v| v as i8).collect();
    assert_eq!(&qs[..5], &[-127, 64, 2, 2, 0]);
    // An all-zero block: zero scale, zero quants.
    let mut z = Vec::new();
    push_floats(WeightKind::Q8_0, &[0.0; 32], &mut z);
    assert!(z.iter().all(|&v| v == 0));
}

/// Tolerance: keys and values in [-1, 1] quantized to 8 bits per 32-value block (step ≤ 1/127)
/// and the query likewise move each output (a convex mix of values) by at most ~1e-2; the
/// measured worst case is printed by `--nocapture`.
#[test]
fn q8_0_attention_is_close_to_the_f32_cache() {
    let mut seed = 5;
    let mut worst = 0f32;
    for hd in [32usize, 64, 128, 256] {
        let (kv_heads, n) = (2, 300);
        let stride = kv_heads * hd;
        let (fk, qk) = cache(&mut seed, n, stride, 1.0);
        let (fv, qv) = cache(&mut seed, n, stride, 1.0);
        // Queries scaled so that the softmax is far from uniform (scores of several units).
        let qs: Vec<Vec<f32>> = (0..5)
            .map(|_| (0..hd).map(|_| 3.0 * lcg(&mut seed)).collect())
            .collect();
        let qs: Vec<&[f32]> = qs.iter().map(Vec::as_slice).collect();
        let spans = [(0, 1), (0, 17), (0, 300), (250, 50), (3, 200)];
        let want = attend(WeightKind::F32, (&fk, &fv), &qs, &spans, stride, hd);
        let got = attend(WeightKind::Q8_0, (&qk, &qv), &qs, &spans, stride, hd);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            worst = worst.max((a - b).abs());
            assert!(
                (a - b).abs() < 1e-2,
                "hd {hd} element {i}: q8_0 {a} vs f32 {b}"
            );
        }
    }
    println!("q8_0 vs f32 cache: worst |Δ| = {worst:e}");
}

#[test]
fn q8_0_simd_kernel_agrees_with_the_portable_loop_and_tiles_equal_single_queries() {
    let mut seed = 9;
    for hd in [32usize, 64, 256] {
        let (kv_heads, n) = (3, 70);
        let stride = kv_heads * hd;
        let (_, keys) = cache(&mut seed, n, stride, 2.0);
        let (_, values) = cache(&mut seed, n, stride, 2.0);
        let qs: Vec<Vec<f32>> = (0..6)
            .map(|_| (0..hd).map(|_| lcg(&mut seed)).collect())
            .collect();
        let qs: Vec<&[f32]> = qs.iter().map(Vec::as_slice).collect();
        let spans = [(0, 61), (0, 61), (0, 62), (0, 62), (40, 23), (0, 1)];
        for h in 0..kv_heads {
            let kv = (&keys[..], &values[..]);
            let out = attend(WeightKind::Q8_0, kv, &qs, &spans, stride, h * hd);
            for (m, (q, &(first, len))) in qs.iter().zip(&spans).enumerate() {
                let got = &out[m * hd..(m + 1) * hd];
                let one = attend(WeightKind::Q8_0, kv, &[q], &[(first, len)], stride, h * hd);
                assert_eq!(got, &one[..], "hd {hd} head {h} query {m}: tile vs alone");
                let at = WeightKind::Q8_0.row_bytes(first * stride);
                let head = Head {
                    q,
                    keys: &keys[at..],
                    values: &values[at..],
                    kind: WeightKind::Q8_0,
                    stride,
                    offset: h * hd,
                    n: len,
                    scale: 1.0 / (hd as f32).sqrt(),
                };
                let mut slow = vec![0f32; hd];
                head.run_q8(
                    portable::quantize_row,
                    portable::dot_q,
                    portable::axpy,
                    &mut Vec::new(),
                    &mut slow,
                );
                for (a, b) in got.iter().zip(&slow) {
                    assert!(
                        (a - b).abs() <= 1e-5,
                        "hd {hd} head {h} query {m}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
