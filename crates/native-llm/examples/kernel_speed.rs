//! Kernel throughput: `cargo run --release -p native-llm --example kernel_speed`.
//! Streams ~100 MB of Q4_1 rows through the dot kernel (like one decode step of a 135M model)
//! and compares with a plain memory read of the same bytes.

use std::time::Instant;

use native_llm::kernels::{self, BlockQ8, QK, WeightKind};

fn main() {
    let cols = 576;
    let kind = WeightKind::Q4_1;
    let rb = kind.row_bytes(cols);
    let total = std::env::var("BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000_000usize);
    let rows = total / rb;
    let mut data = vec![0u8; rows * rb];
    for (i, b) in data.iter_mut().enumerate() {
        *b = ((i * 2654435761usize) >> 7) as u8;
    }
    // Valid f16 scales.
    for r in 0..rows * (cols / QK) {
        data[r * 20] = 0x00;
        data[r * 20 + 1] = 0x20;
        data[r * 20 + 2] = 0x00;
        data[r * 20 + 3] = 0x20;
    }
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut xq = vec![BlockQ8::default(); cols / QK];
    kernels::quantize_row(&x, &mut xq);
    let mut out = vec![0f32; rows];
    for round in 0..3 {
        let reps = 100_000_000 / total;
        let t = Instant::now();
        for _ in 0..reps {
            for (r, o) in out.iter_mut().enumerate() {
                *o = kernels::dot_q(kind, &data[r * rb..(r + 1) * rb], &xq);
            }
        }
        let dt = t.elapsed().as_secs_f64() / reps as f64;
        let t2 = Instant::now();
        let mut s = 0u64;
        for c in data.chunks_exact(8) {
            s = s.wrapping_add(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let dt2 = t2.elapsed().as_secs_f64();
        println!(
            "round {round}: {:?} dot {:.2} GB/s ({:.1} ns/block); plain read {:.2} GB/s (sum {s}, {})",
            kernels::isa(),
            data.len() as f64 / dt / 1e9,
            dt * 1e9 / (rows * cols / QK) as f64,
            data.len() as f64 / dt2 / 1e9,
            out[rows / 2]
        );
    }
}
