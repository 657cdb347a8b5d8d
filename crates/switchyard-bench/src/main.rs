//! `switchyard-bench`: decode and prefill speed of the embedded `hf-candle` backend, measured
//! through the dynamically loaded plugin exactly as users run it, side by side with llama.cpp's
//! `llama-bench` on the same GGUF file and thread count, alternating A B A B, and printed as one
//! table of medians and ratios.
//!
//! ```text
//! cargo build --release -p switchyard-bench -p hf-candle
//! target/release/switchyard-bench --model M.gguf --llama-bench $(scripts/build-llama-cpp.sh)/llama-bench \
//!     [--threads 1,2] [--reps 3] [--prompt-tokens 512] [--gen-tokens 128]
//! ```
//!
//! Each Switchyard measurement runs in a child process with `CANDLE_NUM_THREADS` set, because
//! candle sizes its kernel thread pool once per process. Prefill: time to the first event of a
//! ~`prompt-tokens` prompt with one new token. Decode: tokens after the first, over the time
//! after the first, greedy. Not run in CI (CI only builds it).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use switchyard::{ChatModel, ChatRequest, Config, Message, Registry, registry::resolve_plugin_dir};

struct Args {
    model: PathBuf,
    llama_bench: Option<PathBuf>,
    threads: Vec<usize>,
    reps: usize,
    prompt_tokens: usize,
    gen_tokens: u32,
    child: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        model: PathBuf::new(),
        llama_bench: None,
        threads: vec![1, 2],
        reps: 3,
        prompt_tokens: 512,
        gen_tokens: 128,
        child: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = PathBuf::from(value()?),
            "--llama-bench" => a.llama_bench = Some(PathBuf::from(value()?)),
            "--threads" => {
                a.threads = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--reps" => a.reps = value()?.parse()?,
            "--prompt-tokens" => a.prompt_tokens = value()?.parse()?,
            "--gen-tokens" => a.gen_tokens = value()?.parse()?,
            "--child" => a.child = true,
            other => bail!("unknown flag {other}; see the crate docs for usage"),
        }
    }
    if !a.model.is_file() {
        bail!(
            "--model {} is not a file (try $(scripts/fetch-model.sh))",
            a.model.display()
        );
    }
    Ok(a)
}

fn request(text: String, max_new_tokens: u32) -> ChatRequest {
    let mut r = ChatRequest {
        messages: vec![Message::user(text)],
        ..Default::default()
    };
    r.generation.temperature = Some(0.0);
    r.generation.max_new_tokens = Some(max_new_tokens);
    r
}

/// In the child: load the plugin, measure prefill and decode once, print JSON.
fn child(a: &Args, threads: usize) -> anyhow::Result<()> {
    let toml = format!(
        "sample_backend = \"hf-candle\"\n[model]\npath = \"{}\"\n[generation]\nrepetition_penalty = 1.0\n[backends.hf-candle]\nthreads = {threads}\n",
        a.model.display()
    );
    let config = Config::parse(&toml, "bench", &[])?;
    let registry = Registry::scan(&resolve_plugin_dir(None, None))?;
    let model = ChatModel::new(&registry, config)?;
    // Warm-up (page in the weights).
    model.chat(request("Hi".into(), 2))?;

    // Prefill: a long prompt, one new token; the 10-token chat scaffold is included.
    let words = "the quick brown fox jumps over the lazy dog ".repeat(a.prompt_tokens / 9 + 1);
    let start = Instant::now();
    let mut prompt_len = 0;
    for e in model.stream_chat(request(words, 1))? {
        if let Some(f) = e?.finish {
            prompt_len = f.prompt_length;
        }
    }
    let pp = f64::from(prompt_len) / start.elapsed().as_secs_f64();

    // Decode: tokens after the first over the time after the first.
    let mut first = None;
    let mut n = 0u32;
    let mut last = Instant::now();
    for e in model.stream_chat(request(
        "Write a long story about a lighthouse keeper.".into(),
        a.gen_tokens,
    ))? {
        let e = e?;
        n += e.token_ids.len().max(usize::from(!e.delta.is_empty())) as u32;
        last = Instant::now();
        first.get_or_insert(last);
    }
    let tg =
        f64::from(n.saturating_sub(1)) / (last - first.unwrap_or(last)).as_secs_f64().max(1e-9);
    println!(
        "{}",
        json!({"pp": pp, "pp_tokens": prompt_len, "tg": tg, "tg_tokens": n})
    );
    Ok(())
}

fn run_child(a: &Args, threads: usize) -> anyhow::Result<Value> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--child", "--model"])
        .arg(&a.model)
        .args([
            "--threads",
            &threads.to_string(),
            "--prompt-tokens",
            &a.prompt_tokens.to_string(),
        ])
        .args(["--gen-tokens", &a.gen_tokens.to_string()])
        .env("CANDLE_NUM_THREADS", threads.to_string())
        .output()?;
    if !out.status.success() {
        bail!(
            "switchyard child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(out.stdout.trim_ascii())?)
}

fn run_llama(a: &Args, bin: &PathBuf, threads: usize) -> anyhow::Result<(f64, f64)> {
    let out = Command::new(bin)
        .arg("-m")
        .arg(&a.model)
        .args([
            "-t",
            &threads.to_string(),
            "-p",
            &a.prompt_tokens.to_string(),
            "-n",
            &a.gen_tokens.to_string(),
        ])
        .args(["-r", "1", "-o", "json"])
        .output()?;
    if !out.status.success() {
        bail!(
            "llama-bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    let ts = |decode: bool| {
        rows.iter()
            .find(|r| (r["n_gen"].as_u64().unwrap_or(0) > 0) == decode)
            .and_then(|r| r["avg_ts"].as_f64())
            .unwrap_or(f64::NAN)
    };
    Ok((ts(false), ts(true)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    if a.child {
        return child(&a, a.threads[0]);
    }
    println!(
        "model: {}   reps: {}   (A B A B: llama.cpp, then switchyard)",
        a.model.display(),
        a.reps
    );
    println!("| threads | test | llama.cpp t/s | switchyard t/s | ratio |");
    println!("|---:|---|---:|---:|---:|");
    for &t in &a.threads {
        let (mut lpp, mut ltg, mut spp, mut stg) = (vec![], vec![], vec![], vec![]);
        for _ in 0..a.reps {
            if let Some(bin) = &a.llama_bench {
                let (pp, tg) = run_llama(&a, bin, t)?;
                lpp.push(pp);
                ltg.push(tg);
            }
            let s = run_child(&a, t)?;
            spp.push(s["pp"].as_f64().unwrap_or(f64::NAN));
            stg.push(s["tg"].as_f64().unwrap_or(f64::NAN));
        }
        for (name, l, s) in [
            (format!("pp{}", a.prompt_tokens), lpp, spp),
            (format!("tg{}", a.gen_tokens), ltg, stg),
        ] {
            let (l, s) = (median(l), median(s));
            println!("| {t} | {name} | {l:.1} | {s:.1} | {:.2}x |", s / l);
        }
    }
    Ok(())
}
