//! Decode attention kernel throughput: `cargo run --release -p native-llm --example attend_speed`.
//! One KV head of a 16-bit cache (`CTX` positions, default 256, × 64 dimensions, in cache)
//! against the 3 query heads that share it (SmolLM2's grouping), as in one decode step; prints
//! nanoseconds per call and the rate in key/value elements per second, best of 5 rounds.

use std::time::Instant;

use native_llm::kernels::{self, Tile, WeightKind};

fn main() {
    let ctx: usize = std::env::var("CTX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let hd = 64;
    for kind in [WeightKind::F16, WeightKind::BF16, WeightKind::F32] {
        let vals: Vec<f32> = (0..ctx * hd)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        kernels::push_floats(kind, &vals, &mut keys);
        let rev: Vec<f32> = vals.iter().rev().copied().collect();
        kernels::push_floats(kind, &rev, &mut values);
        let queries: Vec<Vec<f32>> = (0..3)
            .map(|h| (0..hd).map(|i| ((i + h * 13) as f32 * 0.1).sin()).collect())
            .collect();
        let qs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
        let spans = vec![(0, ctx); 3];
        let tile = Tile {
            qs: &qs,
            spans: &spans,
            keys: &keys,
            values: &values,
            kind,
            stride: hd,
            offset: 0,
            scale: 0.125,
        };
        let mut scratch = Vec::new();
        let mut out = vec![0f32; 3 * hd];
        let reps = 20_000;
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                kernels::attend_many(&tile, &mut scratch, &mut out);
                std::hint::black_box(&out);
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        println!(
            "{:?} {}: {ctx} positions x 3 queries: {:.0} ns/call, {:.2} G elements/s",
            kernels::isa(),
            kind.name(),
            best * 1e9,
            (2 * ctx * hd * 3) as f64 / best / 1e9
        );
    }
}
