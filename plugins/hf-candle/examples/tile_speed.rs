//! Prefill kernel throughput: `cargo run --release -p hf-candle --example tile_speed`.
//! Interleaved 8-row groups of a 576-column matrix small enough to stay in L2 (512 rows),
//! against 1 to 4 quantized activation vectors at a time (decode steps and prefill tiles), on one thread: the
//! kernel's compute ceiling in multiply-accumulates per second.

use std::time::Instant;

use hf_candle::kernels::{self, BlockQ8, GROUP, MAX_TOKENS, QK, WeightKind};

fn main() {
    let cols = 576;
    let rows = 512;
    for kind in [WeightKind::Q4_0, WeightKind::Q4_1, WeightKind::Q8_0] {
        let rb = kind.row_bytes(cols);
        let mut data = vec![0u8; rows * rb];
        for (i, b) in data.iter_mut().enumerate() {
            *b = ((i * 2654435761usize) >> 7) as u8;
        }
        // Valid f16 scales (and minimums) at the start of every block.
        for blk in data.chunks_exact_mut(kind.block_bytes()) {
            for h in blk[..kind.head_bytes()].chunks_exact_mut(2) {
                h.copy_from_slice(&[0x00, 0x20]);
            }
        }
        let packed: Vec<u8> = data
            .chunks_exact(rb * GROUP)
            .flat_map(|g| kernels::interleave(kind, g, cols))
            .collect();
        let acts: Vec<Vec<BlockQ8>> = (0..MAX_TOKENS)
            .map(|t| {
                let x: Vec<f32> = (0..cols).map(|i| ((i + t) as f32 * 0.37).sin()).collect();
                let mut q = vec![BlockQ8::default(); cols / QK];
                kernels::quantize_row(&x, &mut q);
                q
            })
            .collect();
        let acts: Vec<&[BlockQ8]> = acts.iter().map(Vec::as_slice).collect();
        let mut res = [[0f32; GROUP]; MAX_TOKENS];
        let reps = 400;
        let mut line = format!(
            "{:?} {} GMAC/s (1 thread, weights in L2) by tokens per call:",
            kernels::isa(),
            kind.name()
        );
        for n in 1..=MAX_TOKENS {
            let mut best = 0f64;
            for _ in 0..3 {
                let t = Instant::now();
                for _ in 0..reps {
                    for g in packed.chunks_exact(rb * GROUP) {
                        kernels::dot_x8_multi(kind, g, &acts[..n], &mut res, false);
                        std::hint::black_box(&res);
                    }
                }
                let macs = (reps * rows * cols * n) as f64;
                best = best.max(macs / t.elapsed().as_secs_f64() / 1e9);
            }
            line += &format!(" {n}: {best:.1}");
        }
        println!("{line}");
    }
}
