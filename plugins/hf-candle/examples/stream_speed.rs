//! Decode-step kernel throughput out of memory:
//! `cargo run --release -p hf-candle --example stream_speed [-- MB [threads]]`.
//! Streams interleaved `Q4_1` groups (~100 MB by default, far more than the caches, like one
//! decode step of a 135M model) through the multi-token kernel against 1 to 4 activation
//! vectors, on 1 or 2 threads, and prints GB/s of weights and GMAC/s: whether the kernel's
//! compute hides behind the weight stream (compare `tile_speed`, the in-L2 ceiling).

use std::time::Instant;

use hf_candle::kernels::{self, BlockQ8, GROUP, MAX_TOKENS, QK, WeightKind};

fn main() {
    let mut args = std::env::args().skip(1);
    let mb: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(100);
    let threads: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(1);
    let cols = 576;
    let kind = WeightKind::Q4_1;
    let rb = kind.row_bytes(cols);
    let groups = mb * 1_000_000 / (rb * GROUP);
    let mut data = vec![0u8; groups * GROUP * rb];
    for (i, b) in data.iter_mut().enumerate() {
        *b = ((i * 2654435761usize) >> 7) as u8;
    }
    for blk in data.chunks_exact_mut(kind.block_bytes()) {
        for h in blk[..kind.head_bytes()].chunks_exact_mut(2) {
            h.copy_from_slice(&[0x00, 0x20]);
        }
    }
    let packed: Vec<u8> = data
        .chunks_exact(rb * GROUP)
        .flat_map(|g| kernels::interleave(kind, g, cols))
        .collect();
    drop(data);
    let acts: Vec<Vec<BlockQ8>> = (0..MAX_TOKENS)
        .map(|t| {
            let x: Vec<f32> = (0..cols).map(|i| ((i + t) as f32 * 0.37).sin()).collect();
            let mut q = vec![BlockQ8::default(); cols / QK];
            kernels::quantize_row(&x, &mut q);
            q
        })
        .collect();
    let acts: Vec<&[BlockQ8]> = acts.iter().map(Vec::as_slice).collect();
    // `NO_PREFETCH=1`: the hardware prefetchers alone (no software prefetch hint).
    let hint = std::env::var_os("NO_PREFETCH").is_none();
    let gbytes = rb * GROUP;
    let per_thread = packed.len().div_ceil(threads * gbytes) * gbytes;
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
                        for g in part.chunks_exact(gbytes) {
                            kernels::dot_x8_multi(kind, g, acts, &mut res, hint);
                            std::hint::black_box(&res);
                        }
                    });
                }
            });
            best = best.min(t.elapsed().as_secs_f64());
        }
        let macs = (groups * GROUP * cols * n) as f64;
        line += &format!(
            " {n}: {:.1} | {:.1}",
            packed.len() as f64 / best / 1e9,
            macs / best / 1e9
        );
    }
    println!("{line}");
}
