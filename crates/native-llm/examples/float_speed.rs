//! Float-weight decode kernel throughput:
//! `cargo run --release -p native-llm --example float_speed [-- f32|bf16|f16]`.
//! One token's activations against ~`BYTES` (default 200 MB) of rows, as one decode step of
//! a model that size, on 1 thread and on 2 (rows split in halves); then the same rows made
//! small enough to stay in L2, which shows the kernel's compute ceiling.

use std::time::Instant;

use native_llm::kernels::{self, WeightKind};

/// Whether to run the interleaved 4-row layout (`GROUPED=0` for plain rows).
fn grouped() -> bool {
    std::env::var("GROUPED").map_or(true, |v| v != "0")
}

fn run(kind: WeightKind, cols: usize, data: &[u8], x: &[f32], threads: usize) -> f64 {
    let rb = kind.row_bytes(cols);
    let rows = data.len() / rb;
    let mut out = vec![0f32; rows];
    let per = rows.div_ceil(threads);
    let reps = (400_000_000 / data.len()).max(3);
    let t = Instant::now();
    for _ in 0..reps {
        if threads == 1 {
            kernels::dot_f_block(kind, data, cols, grouped(), &[x], &mut out, 0);
            continue;
        }
        std::thread::scope(|s| {
            for (c, o) in out.chunks_mut(per).enumerate() {
                let w = &data[c * per * rb..(c * per + o.len()) * rb];
                s.spawn(move || kernels::dot_f_block(kind, w, cols, grouped(), &[x], o, 0));
            }
        });
    }
    let dt = t.elapsed().as_secs_f64() / reps as f64;
    std::hint::black_box(&out);
    data.len() as f64 / dt / 1e9
}

/// A plain sum of the same bytes on `threads` threads (the memory-bandwidth bound).
fn plain_read(data: &[u8], threads: usize) -> f64 {
    let per = data.len().div_ceil(threads);
    let t = Instant::now();
    let reps = 3;
    for _ in 0..reps {
        std::thread::scope(|s| {
            for c in data.chunks(per) {
                s.spawn(move || {
                    let sum = c.chunks_exact(8).fold(0u64, |a, w| {
                        a.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()))
                    });
                    std::hint::black_box(sum);
                });
            }
        });
    }
    data.len() as f64 * reps as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn main() {
    let kind = match std::env::args().nth(1).as_deref() {
        Some("f32") => WeightKind::F32,
        Some("f16") => WeightKind::F16,
        _ => WeightKind::BF16,
    };
    let cols = 576;
    let rb = kind.row_bytes(cols);
    let total = std::env::var("BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000_000usize);
    let rows = total / rb;
    // Small finite values in every format (f16 exponent bits kept low).
    // Anonymous memory with transparent huge pages, as the engine stores weights.
    let mut data = memmap2::MmapMut::map_anon(rows * rb).expect("anonymous memory");
    let _ = data.advise(memmap2::Advice::HugePage);
    for (i, b) in data.iter_mut().enumerate() {
        *b = (((i * 2654435761usize) >> 7) as u8) & if i % 2 == 1 { 0x3b } else { 0xff };
    }
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let small = &data[..(256 * 1024 / rb) * rb];
    for round in 0..3 {
        println!(
            "round {round} {:?} {}: plain read 2 threads {:.2} GB/s; stream 1 thread {:.2} GB/s, 2 threads {:.2} GB/s; in L2 1 thread {:.2} GB/s",
            kernels::isa(),
            kind.name(),
            plain_read(&data, 2),
            run(kind, cols, &data, &x, 1),
            run(kind, cols, &data, &x, 2),
            run(kind, cols, small, &x, 1),
        );
    }
}
