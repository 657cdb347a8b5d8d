//! `switchyard-bench`: the embedded `hf-candle` backend measured through the dynamically loaded
//! plugin exactly as users run it, side by side with its peers on the same file and thread
//! count, alternating A B A B, printed as tables of medians and ratios.
//!
//! ```text
//! cargo build --release -p switchyard-bench -p hf-candle
//! target/release/switchyard-bench --model M.gguf \
//!     --llama-bin-dir "$(scripts/build-llama-cpp.sh | tail -n 1)" \
//!     [--threads 1,2] [--reps 3] [--prompt-tokens 512] [--gen-tokens 128] \
//!     [--hf-model DIR --transformers-python ~/.cache/switchyard/venv-ref/bin/python] \
//!     [--tables gguf,safetensors] [--kv-cache-dtype q8_0]
//! ```
//!
//! `--kv-cache-dtype T` sets `[backends.hf-candle] kv_cache_dtype = "T"` in every Switchyard
//! child and gives `llama-bench` the same cache (`-ctk T -ctv T`, with `-fa on` for `q8_0`,
//! which llama.cpp quantizes V only with); a long-context run is e.g. `--tables speed
//! --prompt-tokens 4096 --kv-cache-dtype q8_0`.
//!
//! Tables:
//! - speed: prefill (`pp`, time to the first event of a `prompt-tokens` prompt, prefix cache
//!   off) and decode (`tg`, greedy, tokens after the first over the time after the first) vs
//!   `llama-bench`; then the decode bound: the weight bytes a decode step reads (every GGUF
//!   tensor but the token embedding, unless it is also the output projection) over the
//!   machine's measured read bandwidth at that thread count, and each engine's `tg` as a
//!   fraction of it;
//! - cold start: wall time of a fresh process that loads the plugin and the model and prints
//!   the first token of the raw prompt "Hi", vs `llama-simple` generating one token from it;
//! - multi-turn: time to first token of turn 1 and turn 5 of a conversation (prefix cache on);
//! - concurrency: aggregate decode tokens/s of 4 concurrent streams (`max_concurrent = 4`;
//!   the tokens all streams got while all four were decoding: from the latest first token to
//!   the earliest last token) vs one stream (tokens after its first over the time after its
//!   first);
//! - plugin boundary: decode through the loaded plugin vs the same engine linked statically,
//!   both loaded in one child, alternating in rounds (static, plugin, plugin, static, then the
//!   other way round); the ratio is the median of the rounds' paired ratios;
//! - memory: peak RSS of the decode child vs the model file size;
//! - safetensors (with `--hf-model`): the Hugging Face folder in f32 and bf16 vs Transformers
//!   `generate()` (`scripts/bench/transformers_generate.py`);
//! - cuda (with `--device cuda --hf-model`): the folder in bf16 on GPU 0 vs Transformers
//!   `generate()` on the same GPU (`scripts/bench/cuda-compare.sh` runs it on random-weight
//!   Llama shapes).
//!
//! - lifecycle (`--tables lifecycle`): decode rate and time to first token with the backend in a
//!   worker process vs in-process, and the time to first token of a model loaded on demand vs
//!   already loaded, with the host's RSS around the load and unload (`lifecycle.rs`).
//!
//! - constrained (`--tables constrained`): decode rate free vs under structured-output
//!   constraints (llguidance token masks), alternating in one child (`constrained.rs`).
//!
//! `--tables` picks the table groups to run: `gguf` (every table above but the last four),
//! `speed` (only the first of them, with the decode bound), `safetensors`, `cuda`, `lifecycle`
//! and `constrained`; `gguf` and `safetensors` by default.
//!
//! `switchyard-bench load ...` is the load generator instead (`load/`): `switchyard api` vs
//! `llama-server --parallel N --cont-batching` under concurrent streaming clients.
//!
//! Every Switchyard measurement runs in its own child process (fresh caches, its own RSS).
//! Not run in CI (CI only builds it).
//! Tables reach the backend through `ChatModel`, as users do; `hf-candle` is linked statically
//! only for the plugin-boundary table's static side, `native-llm` only to name the kernels.

mod constrained;
mod cuda;
mod lifecycle;
mod load;
mod safetensors;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use switchyard::{ChatModel, ChatRequest, Config, Message, Registry, registry::resolve_plugin_dir};
use switchyard_plugin::Backend;

#[derive(Clone)]
struct Args {
    model: PathBuf,
    llama_dir: Option<PathBuf>,
    threads: Vec<usize>,
    reps: usize,
    prompt_tokens: usize,
    gen_tokens: u32,
    hf_model: Option<PathBuf>,
    transformers_python: Option<PathBuf>,
    child: Option<String>,
    dtype: String,
    /// `[backends.hf-candle] device` of the Switchyard children (`cpu`, `cuda`).
    device: String,
    /// Table groups to run (`gguf`, `safetensors`, `cuda`).
    tables: Vec<String>,
    /// `[backends.hf-candle] kv_cache_dtype` of the Switchyard children, and llama-bench's
    /// `-ctk`/`-ctv` (`None`: each side's default).
    kv_cache_dtype: Option<String>,
    /// Measure decode right after the `--prompt-tokens` prompt (Switchyard: the same prompt
    /// again, its KV from the prefix cache; llama-bench: `-d N`), not after a short prompt.
    decode_at_depth: bool,
}

/// Usage, printed for `--help` and after a flag error.
const USAGE: &str = "usage: switchyard-bench --model M.gguf [--llama-bin-dir DIR] [--threads 1,2] \
[--reps 3] [--prompt-tokens 512] [--gen-tokens 128] [--hf-model DIR --transformers-python PY] \
[--tables gguf,speed,safetensors,cuda,lifecycle,constrained] [--device cpu|cuda] \
[--kv-cache-dtype f32|f16|bf16|q8_0] [--decode-at-depth]
       switchyard-bench load --help   (serving under load: switchyard api vs llama-server)";

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        model: PathBuf::new(),
        llama_dir: None,
        threads: vec![1, 2],
        reps: 3,
        prompt_tokens: 512,
        gen_tokens: 128,
        hf_model: None,
        transformers_python: None,
        child: None,
        dtype: "f32".into(),
        device: "cpu".into(),
        tables: vec!["gguf".into(), "safetensors".into()],
        kv_cache_dtype: None,
        decode_at_depth: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = PathBuf::from(value()?),
            "--llama-bin-dir" => a.llama_dir = Some(PathBuf::from(value()?)),
            "--threads" => {
                a.threads = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--reps" => a.reps = value()?.parse()?,
            "--prompt-tokens" => a.prompt_tokens = value()?.parse()?,
            "--gen-tokens" => a.gen_tokens = value()?.parse()?,
            "--hf-model" => a.hf_model = Some(PathBuf::from(value()?)),
            "--transformers-python" => a.transformers_python = Some(PathBuf::from(value()?)),
            "--child" => a.child = Some(value()?),
            "--dtype" => a.dtype = value()?,
            "--device" => a.device = value()?,
            "--kv-cache-dtype" => a.kv_cache_dtype = Some(value()?),
            "--decode-at-depth" => a.decode_at_depth = true,
            "--tables" => {
                a.tables = value()?.split(',').map(str::to_owned).collect();
                if let Some(t) = a.tables.iter().find(|t| {
                    ![
                        "gguf",
                        "speed",
                        "safetensors",
                        "cuda",
                        "lifecycle",
                        "constrained",
                    ]
                    .contains(&t.as_str())
                }) {
                    bail!(
                        "unknown table group `{t}` in --tables (known: gguf, speed, safetensors, cuda, lifecycle, constrained)"
                    );
                }
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    if !a.model.exists() {
        bail!(
            "--model {} does not exist (try $(scripts/fetch-model.sh))",
            a.model.display()
        );
    }
    Ok(a)
}

fn request(text: &str, max_new_tokens: u32) -> ChatRequest {
    let mut r = ChatRequest {
        messages: vec![Message::user(text)],
        ..Default::default()
    };
    r.generation.temperature = Some(0.0);
    r.generation.max_new_tokens = Some(max_new_tokens);
    r
}

fn load(a: &Args, threads: usize, extra: &str, max_concurrent: u32) -> anyhow::Result<ChatModel> {
    load_with(a, threads, extra, max_concurrent, "")
}

/// [`load`] with extra `[model]` lines.
fn load_with(
    a: &Args,
    threads: usize,
    extra: &str,
    max_concurrent: u32,
    model_extra: &str,
) -> anyhow::Result<ChatModel> {
    let kv = a
        .kv_cache_dtype
        .as_ref()
        .map_or(String::new(), |k| format!("kv_cache_dtype = \"{k}\"\n"));
    let toml = format!(
        "sample_backend = \"hf-candle\"\nmax_concurrent = {max_concurrent}\n[model]\npath = \"{}\"\n{model_extra}\n[generation]\nrepetition_penalty = 1.0\n[backends.hf-candle]\nthreads = {threads}\ndtype = \"{}\"\ndevice = \"{}\"\n{kv}{extra}\n",
        a.model.display(),
        a.dtype,
        a.device
    );
    let config = Config::parse(&toml, "bench", &[])?;
    let registry = Registry::scan(&resolve_plugin_dir(None, None))?;
    Ok(ChatModel::new(&registry, config)?)
}

const STORY: &str = "Write a long story about a lighthouse keeper.";

/// Rounds of the plugin-boundary child (each decodes twice through each side).
const STATIC_ROUNDS: usize = 3;

/// Decode speed of one stream: (tokens after the first) / (time after the first).
fn decode<I, E>(events: I) -> anyhow::Result<(f64, u32)>
where
    I: IntoIterator<Item = Result<switchyard_plugin::Event, E>>,
    E: std::fmt::Display,
{
    let d = decode_span(events)?;
    Ok((d.rate(), d.n))
}

/// When a stream's first and last tokens came, how many tokens it had, and when each event
/// came with how many tokens.
struct Span {
    first: Instant,
    last: Instant,
    n: u32,
    events: Vec<(Instant, u32)>,
    /// The token ids the stream carried, in order.
    ids: Vec<u32>,
}

impl Span {
    /// Tokens after the first over the time after the first.
    fn rate(&self) -> f64 {
        let dt = (self.last - self.first).as_secs_f64().max(1e-9);
        f64::from(self.n.saturating_sub(1)) / dt
    }
}

fn decode_span<I, E>(events: I) -> anyhow::Result<Span>
where
    I: IntoIterator<Item = Result<switchyard_plugin::Event, E>>,
    E: std::fmt::Display,
{
    let mut first = None;
    let mut n = 0u32;
    let mut last = Instant::now();
    let mut timed = Vec::new();
    let mut ids = Vec::new();
    for e in events {
        let e = e.map_err(|e| anyhow::anyhow!("{e}"))?;
        ids.extend_from_slice(&e.token_ids);
        let k = e.token_ids.len().max(usize::from(!e.delta.is_empty())) as u32;
        n += k;
        last = Instant::now();
        first.get_or_insert(last);
        timed.push((last, k));
    }
    Ok(Span {
        first: first.unwrap_or(last),
        last,
        n,
        events: timed,
        ids,
    })
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// In a child process: one measurement, printed as JSON.
fn child(a: &Args, mode: &str) -> anyhow::Result<Value> {
    let t = a.threads[0];
    Ok(match mode {
        "speed" => {
            // At depth, the prompt's KV is kept for the decode request (the prefill is timed on
            // the first request, with the cache still empty).
            let cache = if a.decode_at_depth {
                "prefix_cache_mb = 4096"
            } else {
                "prefix_cache_mb = 0"
            };
            let model = load(a, t, cache, 1)?;
            model.chat(request("Hi", 2))?; // warm-up
            let words =
                "the quick brown fox jumps over the lazy dog ".repeat(a.prompt_tokens / 9 + 1);
            let start = Instant::now();
            let mut prompt_len = 0;
            for e in model.stream_chat(request(&words, 1))? {
                if let Some(f) = e?.finish {
                    prompt_len = f.prompt_length;
                }
            }
            let pp = f64::from(prompt_len) / start.elapsed().as_secs_f64();
            let after = if a.decode_at_depth { &words } else { STORY };
            let d = decode_span(model.stream_chat(request(after, a.gen_tokens))?)?;
            json!({"pp": pp, "pp_tokens": prompt_len, "tg": d.rate(), "tg_tokens": d.n,
                   "ids": d.ids, "rss_mb": peak_rss_mb()})
        }
        "cold" => {
            // The raw prompt "Hi", as llama-simple gets it (no chat template).
            let model = load_with(
                a,
                t,
                "",
                1,
                "chat_template = \"{{ messages[0]['content'] }}\"",
            )?;
            let mut stream = model.stream_chat(request("Hi", 1))?;
            let first = stream.next().context("no event")??;
            json!({"first": first.delta})
        }
        "turns" => {
            let model = load(a, t, "", 1)?;
            // Warm-up sharing no prefix with the conversation (another system prompt).
            let mut warm = request("Hi", 2);
            warm.system = Some("Be brief.".into());
            model.chat(warm)?;
            let mut messages: Vec<Message> = Vec::new();
            let mut ttft = Vec::new();
            for i in 0..5 {
                messages.push(Message::user(format!(
                    "Tell me one more short fact about animal number {i}."
                )));
                let mut r = request("", 48);
                r.messages = messages.clone();
                let start = Instant::now();
                let mut text = String::new();
                let mut first = None;
                for e in model.stream_chat(r)? {
                    let e = e?;
                    first.get_or_insert_with(|| start.elapsed().as_secs_f64());
                    text.push_str(&e.delta);
                }
                ttft.push(first.unwrap_or(f64::NAN) * 1e3);
                messages.push(Message::assistant(text));
            }
            json!({"ttft_ms": ttft})
        }
        "concurrent" => {
            let model = load(a, t, "prefix_cache_mb = 0", 4)?;
            model.chat(request("Hi", 2))?;
            let (solo, _) = decode(model.stream_chat(request(STORY, a.gen_tokens))?)?;
            let prompts = [
                STORY,
                "Write a long story about a dragon.",
                "Write a long story about a sailor.",
                "Write a long story about a robot.",
            ];
            let spans = std::thread::scope(|s| {
                let hs: Vec<_> = prompts
                    .iter()
                    .map(|p| {
                        let model = &model;
                        s.spawn(move || decode_span(model.stream_chat(request(p, a.gen_tokens))?))
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().expect("stream thread"))
                    .collect::<anyhow::Result<Vec<Span>>>()
            })?;
            // Like the solo figure, the decode phase only: from the moment every stream has its
            // first token (the requests reach the batcher a few milliseconds apart, so the
            // first one may already decode while the others prefill) to the first stream's
            // end, the tokens all streams got in between.
            let start = spans.iter().map(|s| s.first).max().context("no stream")?;
            let end = spans.iter().map(|s| s.last).min().context("no stream")?;
            let tokens: u32 = spans
                .iter()
                .flat_map(|s| &s.events)
                .filter(|(at, _)| *at > start && *at <= end)
                .map(|(_, k)| k)
                .sum();
            let agg = f64::from(tokens) / (end - start).as_secs_f64().max(1e-9);
            // How far apart the streams' first tokens came (0 when prefilled in one step).
            let first = spans.iter().map(|s| s.first).min().context("no stream")?;
            json!({"solo": solo, "aggregate": agg,
                   "first_spread_ms": (start - first).as_secs_f64() * 1e3,
                   "tokens": spans.iter().map(|s| s.n).collect::<Vec<_>>()})
        }
        "static" => {
            let cfg: switchyard_plugin::EngineConfig = serde_json::from_value(json!({
                "backend": "hf-candle",
                "model": {"path": a.model},
                "options": {"threads": t, "prefix_cache_mb": 0, "dtype": a.dtype},
            }))?;
            let eng = hf_candle::HfCandle::load(&cfg)?;
            let cancel = switchyard_plugin::CancelToken::new();
            let model = load(a, t, "prefix_cache_mb = 0", 1)?;
            let run_static = || -> anyhow::Result<f64> {
                let events = eng.stream_chat(request(STORY, a.gen_tokens), cancel.clone())?;
                Ok(decode(events)?.0)
            };
            let run_plugin = || -> anyhow::Result<f64> {
                Ok(decode(model.stream_chat(request(STORY, a.gen_tokens))?)?.0)
            };
            // Rounds of static-plugin-plugin-static (then the next round starts with the
            // plugin), so a drift of the machine's speed during the child weighs on both
            // sides alike; each round's pair gives one ratio.
            let (mut st, mut pl, mut ratios) = (vec![], vec![], vec![]);
            for round in 0..STATIC_ROUNDS {
                let first_static = round % 2 == 0;
                let (mut s, mut p) = (0.0, 0.0);
                for is_static in [first_static, !first_static, !first_static, first_static] {
                    if is_static {
                        let tg = run_static()?;
                        st.push(tg);
                        s += tg;
                    } else {
                        let tg = run_plugin()?;
                        pl.push(tg);
                        p += tg;
                    }
                }
                ratios.push(p / s);
            }
            json!({"static": median(st), "plugin": median(pl), "ratio": median(ratios)})
        }
        "constrained" => constrained::child(a)?,
        other => match lifecycle::child(a, other)? {
            Some(v) => v,
            None => bail!("unknown child mode {other}"),
        },
    })
}

fn run_child(
    a: &Args,
    mode: &str,
    threads: usize,
    model: &Path,
    dtype: &str,
) -> anyhow::Result<(Value, f64)> {
    let start = Instant::now();
    let mut cmd = Command::new(std::env::current_exe()?);
    if let Some(k) = &a.kv_cache_dtype {
        cmd.args(["--kv-cache-dtype", k]);
    }
    if a.decode_at_depth {
        cmd.arg("--decode-at-depth");
    }
    let out = cmd
        .args(["--child", mode, "--model"])
        .arg(model)
        .args(["--threads", &threads.to_string(), "--dtype", dtype])
        .args(["--device", &a.device])
        .args(["--prompt-tokens", &a.prompt_tokens.to_string()])
        .args(["--gen-tokens", &a.gen_tokens.to_string()])
        .output()?;
    let wall = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "switchyard child ({mode}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((serde_json::from_slice(out.stdout.trim_ascii())?, wall))
}

/// llama-bench's prefill and decode t/s; with `--decode-at-depth`, decode after a context of
/// the prompt's length (`-d`), in a second run.
fn run_llama_bench(a: &Args, dir: &Path, threads: usize) -> anyhow::Result<(f64, f64)> {
    if !a.decode_at_depth {
        let (p, n) = (a.prompt_tokens.to_string(), a.gen_tokens.to_string());
        return llama_bench_once(a, dir, threads, &["-p", &p, "-n", &n]);
    }
    let (p, n) = (a.prompt_tokens.to_string(), a.gen_tokens.to_string());
    let (pp, _) = llama_bench_once(a, dir, threads, &["-p", &p, "-n", "0"])?;
    let (_, tg) = llama_bench_once(a, dir, threads, &["-p", "0", "-n", &n, "-d", &p])?;
    Ok((pp, tg))
}

fn llama_bench_once(
    a: &Args,
    dir: &Path,
    threads: usize,
    sizes: &[&str],
) -> anyhow::Result<(f64, f64)> {
    let mut cmd = Command::new(dir.join("llama-bench"));
    if let Some(k) = &a.kv_cache_dtype {
        cmd.args(["-ctk", k, "-ctv", k]);
        if k == "q8_0" {
            cmd.args(["-fa", "on"]);
        }
    }
    let out = cmd
        .env("LD_LIBRARY_PATH", dir)
        .arg("-m")
        .arg(&a.model)
        .args(["-t", &threads.to_string()])
        .args(sizes)
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

/// Wall time of `llama-simple` loading the model and generating one token.
fn run_llama_cold(a: &Args, dir: &Path) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = Command::new(dir.join("llama-simple"))
        .env("LD_LIBRARY_PATH", dir)
        .arg("-m")
        .arg(&a.model)
        .args(["-n", "1", "Hi"])
        .output()?;
    if !out.status.success() {
        bail!(
            "llama-simple failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(start.elapsed().as_secs_f64())
}

/// This machine's memory read bandwidth in GB/s with `threads` threads: the best of 5
/// passes summing a 1 GiB buffer (far larger than any cache), each thread its own slice.
fn read_bandwidth(threads: usize) -> f64 {
    let words = (1usize << 30) / 8;
    let buf: Vec<u64> = (0..words as u64).collect();
    let per = words.div_ceil(threads.max(1));
    let mut best = 0f64;
    for _ in 0..5 {
        let start = Instant::now();
        let sum: u64 = std::thread::scope(|s| {
            buf.chunks(per)
                .map(|c| s.spawn(move || c.iter().fold(0u64, |a, &x| a.wrapping_add(x))))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().expect("bandwidth thread"))
                .fold(0u64, u64::wrapping_add)
        });
        std::hint::black_box(sum);
        best = best.max((words * 8) as f64 / start.elapsed().as_secs_f64() / 1e9);
    }
    best
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("load") {
        return load::main(std::env::args().skip(2));
    }
    let a = parse_args()?;
    if let Some(mode) = a.child.clone() {
        println!("{}", child(&a, &mode)?);
        return Ok(());
    }
    if a.tables.iter().any(|t| t == "gguf") {
        gguf_tables(&a)?;
    } else if a.tables.iter().any(|t| t == "speed") {
        speed_table(&a)?;
    }
    if a.tables.iter().any(|t| t == "safetensors") {
        safetensors::tables(&a)?;
    }
    if a.tables.iter().any(|t| t == "cuda") {
        cuda::tables(&a)?;
    }
    if a.tables.iter().any(|t| t == "constrained") {
        constrained::table(&a)?;
    }
    if a.tables.iter().any(|t| t == "lifecycle") {
        lifecycle::tables(&a)?;
    }
    Ok(())
}

/// The GGUF tables: speed vs `llama-bench` (with the decode bound), cold start, multi-turn,
/// concurrency, plugin boundary, memory.
fn gguf_tables(a: &Args) -> anyhow::Result<()> {
    let rss = speed_table(a)?;
    let file_mb = std::fs::metadata(&a.model).map_or(f64::NAN, |m| m.len() as f64 / 1048576.0);
    let t = *a.threads.iter().max().unwrap_or(&1);
    println!("\n| threads | test | peer | peer | switchyard | switchyard / peer |");
    println!("|---:|---|---|---:|---:|---:|");
    if let Some(dir) = &a.llama_dir {
        let (mut l, mut s) = (vec![], vec![]);
        for _ in 0..a.reps {
            l.push(run_llama_cold(a, dir)?);
            s.push(run_child(a, "cold", t, &a.model, &a.dtype)?.1);
        }
        let (l, s) = (median(l), median(s));
        println!(
            "| {t} | cold start to first token (s) | llama-simple | {l:.2} | {s:.2} | {:.2}x |",
            s / l
        );
    }
    let (mut t1, mut t5) = (vec![], vec![]);
    let (mut solo, mut agg) = (vec![], vec![]);
    let (mut st, mut pl, mut boundary) = (vec![], vec![], vec![]);
    for _ in 0..a.reps {
        let (v, _) = run_child(a, "turns", t, &a.model, &a.dtype)?;
        t1.push(v["ttft_ms"][0].as_f64().unwrap_or(f64::NAN));
        t5.push(v["ttft_ms"][4].as_f64().unwrap_or(f64::NAN));
        let (v, _) = run_child(a, "concurrent", t, &a.model, &a.dtype)?;
        solo.push(f(&v, "solo"));
        agg.push(f(&v, "aggregate"));
        let (v, _) = run_child(a, "static", t, &a.model, &a.dtype)?;
        st.push(f(&v, "static"));
        pl.push(f(&v, "plugin"));
        boundary.push(f(&v, "ratio"));
    }
    let (t1, t5) = (median(t1), median(t5));
    println!(
        "| {t} | time to first token, turn 5 vs turn 1 (ms) | turn 1 | {t1:.1} | {t5:.1} | {:.2}x |",
        t5 / t1
    );
    let (solo, agg) = (median(solo), median(agg));
    println!(
        "| {t} | decode t/s, 4 concurrent streams (aggregate) vs 1 | 1 stream | {solo:.1} | {agg:.1} | {:.2}x |",
        agg / solo
    );
    // The ratio column is the median of the rounds' paired ratios (each round alternates
    // the two within one process), not the ratio of the two medians.
    let (st, pl) = (median(st), median(pl));
    println!(
        "| {t} | decode t/s through the plugin vs linked statically | static | {st:.1} | {pl:.1} | {:.3}x |",
        median(boundary)
    );
    let rss = median(rss);
    println!(
        "| - | peak RSS of the speed child (MiB) vs model file | file | {file_mb:.1} | {rss:.1} | {:.2}x |",
        rss / file_mb
    );
    Ok(())
}

/// The GGUF speed table vs `llama-bench` and the decode bound; returns the speed children's
/// peak RSS samples.
fn speed_table(a: &Args) -> anyhow::Result<Vec<f64>> {
    let file_mb = std::fs::metadata(&a.model).map_or(f64::NAN, |m| m.len() as f64 / 1048576.0);
    println!(
        "model: {} ({file_mb:.1} MiB)   reps: {}   kernels: {:?}   (A B A B: peer, then switchyard)\n",
        a.model.display(),
        a.reps,
        native_llm::kernels::isa()
    );
    println!("| threads | test | peer | peer t/s | switchyard t/s | ratio |");
    println!("|---:|---|---|---:|---:|---:|");
    let mut rss = Vec::new();
    // (threads, best read GB/s, llama.cpp tg, switchyard tg) for the decode-bound table.
    let mut roofline = Vec::new();
    for &t in &a.threads {
        let (mut lpp, mut ltg, mut spp, mut stg) = (vec![], vec![], vec![], vec![]);
        // The read bandwidth drifts over a run (other tenants of the VM host): sampled
        // before every rep, the best sample is the bound.
        let mut gbs = 0f64;
        for _ in 0..a.reps {
            gbs = gbs.max(read_bandwidth(t));
            if let Some(dir) = &a.llama_dir {
                let (pp, tg) = run_llama_bench(a, dir, t)?;
                lpp.push(pp);
                ltg.push(tg);
            }
            let (s, _) = run_child(a, "speed", t, &a.model, &a.dtype)?;
            spp.push(f(&s, "pp"));
            stg.push(f(&s, "tg"));
            rss.push(f(&s, "rss_mb"));
        }
        roofline.push((t, gbs, median(ltg.clone()), median(stg.clone())));
        for (name, l, s) in [
            (format!("pp{}", a.prompt_tokens), lpp, spp),
            (format!("tg{}", a.gen_tokens), ltg, stg),
        ] {
            let (l, s) = (median(l), median(s));
            println!(
                "| {t} | {name} | llama.cpp | {l:.1} | {s:.1} | {:.2}x |",
                s / l
            );
        }
    }
    // Batch-1 decode reads every weight it multiplies once per token: the machine's read
    // bandwidth over those bytes bounds tokens/s; the fraction is how close each engine gets.
    let read_mb = gguf_decode_read_mb(&a.model)?;
    println!(
        "\n| threads | weights read per token (MiB) | read GB/s | decode bound t/s | llama.cpp tg / bound | switchyard tg / bound |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (t, gbs, ltg, stg) in roofline {
        let bound = gbs * 1e9 / (read_mb * 1048576.0);
        println!(
            "| {t} | {read_mb:.1} | {gbs:.1} | {bound:.1} | {:.0}% | {:.0}% |",
            100.0 * ltg / bound,
            100.0 * stg / bound
        );
    }
    Ok(rss)
}

/// The bytes (MiB) of weights a batch-1 decode step reads from a GGUF file: every tensor but
/// the token embedding (one row of it is looked up), which is read in full when it doubles as
/// the output projection (no `output.weight`).
fn gguf_decode_read_mb(path: &Path) -> anyhow::Result<f64> {
    use candle_core::quantized::gguf_file::Content;
    let mut file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let content = Content::read(&mut file).with_context(|| format!("{}", path.display()))?;
    let tied = !content.tensor_infos.contains_key("output.weight");
    let bytes: usize = content
        .tensor_infos
        .iter()
        .filter(|(name, _)| tied || name.as_str() != "token_embd.weight")
        .map(|(_, info)| {
            let d = info.ggml_dtype;
            info.shape.elem_count() / d.block_size() * d.type_size()
        })
        .sum();
    Ok(bytes as f64 / 1048576.0)
}
