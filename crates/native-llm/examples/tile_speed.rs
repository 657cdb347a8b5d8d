//! Quantized group kernel throughput:
//! `cargo run --release -p native-llm --example tile_speed [-- MB [threads]]`.
//! Interleaved 8-row groups of a 576-column matrix against 1 to 4 quantized activation vectors
//! at a time (decode steps of 1-4 sequences, prefill tiles), in multiply-accumulates per second:
//! - in L2: 512 rows on one thread, the kernel's compute ceiling (`Q4_0`, `Q4_1`, `Q8_0`);
//! - streamed: `MB` (default 100) of `Q4_1` groups, far more than the caches (one decode step of
//!   a 135M model), on `threads` threads (default 2), also in GB/s of weights: whether the
//!   arithmetic hides behind the weight stream. `NO_PREFETCH=1` drops the software prefetch.

use std::time::Instant;

use native_llm::kernels::{self, BlockQ8, GROUP, MAX_TOKENS, QK, WeightKind};

const COLS: usize = 576;

/// `rows` rows of `kind` (pseudo-random quants, valid f16 scales), interleaved in groups.
fn groups(kind: WeightKind, rows: usize) -> Vec<u8> {
    let rb = kind.row_bytes(COLS);
    let mut data = vec![0u8; rows / GROUP * GROUP * rb];
    for (i, b) in data.iter_mut().enumerate() {
        *b = ((i * 2654435761usize) >> 7) as u8;
    }
    // Valid f16 scales (and minimums) at the start of every block.
    for blk in data.chunks_exact_mut(kind.block_bytes()) {
        for h in blk[..kind.head_bytes()].chunks_exact_mut(2) {
            h.copy_from_slice(&[0x00, 0x20]);
        }
    }
    data.chunks_exact(rb * GROUP)
        .flat_map(|g| kernels::interleave(kind, g, COLS))
        .collect()
}

/// `MAX_TOKENS` quantized activation vectors.
fn activations() -> Vec<Vec<BlockQ8>> {
    (0..MAX_TOKENS)
        .map(|t| {
            let x: Vec<f32> = (0..COLS).map(|i| ((i + t) as f32 * 0.37).sin()).collect();
            let mut q = vec![BlockQ8::default(); COLS / QK];
            kernels::quantize_row(&x, &mut q);
            q
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mb: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(100);
    let threads: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(2);
    let acts = activations();
    let acts: Vec<&[BlockQ8]> = acts.iter().map(Vec::as_slice).collect();
    let rows = 512;
    for kind in [WeightKind::Q4_0, WeightKind::Q4_1, WeightKind::Q8_0] {
        let gb = kind.row_bytes(COLS) * GROUP;
        let packed = groups(kind, rows);
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
                    for g in packed.chunks_exact(gb) {
                        kernels::dot_x8_multi(kind, g, &acts[..n], &mut res, false);
                        std::hint::black_box(&res);
                    }
                }
                let macs = (reps * rows * COLS * n) as f64;
                best = best.max(macs / t.elapsed().as_secs_f64() / 1e9);
            }
            line += &format!(" {n}: {best:.1}");
        }
        println!("{line}");
    }
    streamed(mb, threads, &acts);
}

/// The streamed measurement (see the file's doc).
fn streamed(mb: usize, threads: usize, acts: &[&[BlockQ8]]) {
    let kind = WeightKind::Q4_1;
    let gb = kind.row_bytes(COLS) * GROUP;
    let packed = groups(kind, mb * 1_000_000 / kind.row_bytes(COLS));
    let hint = std::env::var_os("NO_PREFETCH").is_none();
    let per_thread = packed.len().div_ceil(threads * gb) * gb;
    let mut line = format!(
        "{:?} {} streamed ({mb} MB, {threads} thread(s)) GB/s | GMAC/s by tokens per call:",
        kernels::isa(),
        kind.name()
    );
    for n in 1..=MAX_TOKENS {
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            std::thread::scope(|s| {
                for part in packed.chunks(per_thread) {
                    let acts = &acts[..n];
                    s.spawn(move || {
                        let mut res = [[0f32; GROUP]; MAX_TOKENS];
                        for g in part.chunks_exact(gb) {
                            kernels::dot_x8_multi(kind, g, acts, &mut res, hint);
                            std::hint::black_box(&res);
                        }
                    });
                }
            });
            best = best.min(t.elapsed().as_secs_f64());
        }
        let macs = (packed.len() / gb * GROUP * COLS * n) as f64;
        line += &format!(
            " {n}: {:.1} | {:.1}",
            packed.len() as f64 / best / 1e9,
            macs / best / 1e9
        );
    }
    println!("{line}");
}
