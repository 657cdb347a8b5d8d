//! Batched decode step time of the native GGUF model, without the engine around it:
//! `cargo run --release -p hf-candle --example step_speed -- MODEL.gguf [steps] [context] [threads]`.
//! For 1 to 4 sequences (each with a `context`-token cache), times `steps` decode steps of one
//! token per sequence (rounds alternating between the batch sizes, best round kept) and prints
//! milliseconds per step and the aggregate tokens/s relative to one sequence: the ceiling of the
//! engine's concurrency ratio, apart from sampling and batching.

use std::fs::File;
use std::io::BufReader;
use std::time::Instant;

use candle_core::quantized::gguf_file::Content;
use native_llm::model::{SeqStep, Transformer};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::PathBuf::from(args.get(1).expect("usage: step_speed MODEL.gguf"));
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let context: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
    let content =
        Content::read(&mut BufReader::new(File::open(&path).expect("open"))).expect("a GGUF file");
    let arch = content.metadata["general.architecture"]
        .to_string()
        .expect("architecture")
        .clone();
    let weights = hf_candle::gguf::native_weights(&path, &content).expect("weights");
    let model = Transformer::load(&weights, &arch).expect("model");
    let threads: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(2);
    // Like the engine: the steps run on a worker of the compute pool.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    pool.install(|| run(&model, steps, context));
}

fn run(model: &Transformer, steps: usize, context: usize) {
    // `ONLY=n`: that batch size alone (for a profiler).
    let only: Option<usize> = std::env::var("ONLY").ok().and_then(|v| v.parse().ok());
    let prompt: Vec<u32> = (0..context as u32).map(|i| 100 + i * 7).collect();
    let mut best = [f64::INFINITY; 4];
    for _round in 0..3 {
        for (n, best) in best.iter_mut().enumerate().map(|(i, b)| (i + 1, b)) {
            if only.is_some_and(|o| o != n) {
                continue;
            }
            let mut caches: Vec<_> = (0..n).map(|_| model.new_cache()).collect();
            for kv in &mut caches {
                model.forward(&mut [SeqStep {
                    kv,
                    tokens: &prompt,
                    adapter: None,
                }]);
            }
            let token = [42u32];
            let start = Instant::now();
            for _ in 0..steps {
                let mut seqs: Vec<SeqStep<'_>> = caches
                    .iter_mut()
                    .map(|kv| SeqStep {
                        kv,
                        tokens: &token,
                        adapter: None,
                    })
                    .collect();
                std::hint::black_box(model.forward(&mut seqs));
            }
            *best = best.min(start.elapsed().as_secs_f64() * 1e3 / steps as f64);
        }
    }
    for (i, ms) in best.iter().enumerate().filter(|(_, ms)| ms.is_finite()) {
        let n = i + 1;
        println!(
            "{n} sequence(s): {ms:.2} ms/step, {:.1} tokens/s, {:.2}x one sequence",
            n as f64 * 1e3 / ms,
            n as f64 * best[0] / ms
        );
    }
}
