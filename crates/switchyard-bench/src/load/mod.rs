//! `switchyard-bench load`: serving under load. `switchyard api` and `llama-server --parallel
//! N --cont-batching` on the same GGUF file, threads and per-sequence context, each driven by
//! C concurrent streaming clients (closed loop) through `POST /v1/chat/completions`, A B A B
//! (for every client count and rep: llama-server, then Switchyard, on the same requests).
//!
//! ```text
//! switchyard-bench load --model M.gguf --llama-bin-dir DIR [--threads 2] [--clients 1,4,16,64]
//!     [--reps 2] [--requests-per-client 2] [--min-requests 8] [--prompt-words 16,64,256]
//!     [--max-tokens 16,64,128] [--seed 42] [--parallel N] [--ctx 2048] [--timeout-s 600]
//!     [--llama-url URL] [--switchyard-url URL]
//! ```
//!
//! Attached servers must serve the model under the name `bench` (`llama-server --alias bench`,
//! `switchyard api --model-name bench`); their settings are their own.
//!
//! The mix: each run sends `max(min-requests, requests-per-client × C)` requests; each one's
//! prompt length (words of a fixed list, about one token each) and `max_tokens` are drawn
//! uniformly from the two lists by a splitmix64 generator seeded with `--seed` and the
//! request's index, so every run replays the same lengths; the words change from run to run
//! (no prefix-cache hits across runs). Greedy (`temperature` 0), no repetition penalty, usage
//! in the stream, `ignore_eos: true`: llama-server then always produces `max_tokens`;
//! Switchyard has no such switch and may stop at the end-of-sequence token, so each server's
//! rate is over the tokens it produced (its `usage.completion_tokens`), and the table shows
//! both counts.
//!
//! Figures: aggregate output tokens/s (every completed request's tokens over the run's wall
//! time, median over reps); time to first token (request sent to the first chunk with text)
//! and inter-token latency (gaps between consecutive text chunks of a request), p50 and p99
//! over the requests of all reps; requests lost (HTTP errors, error events, streams cut or
//! without `[DONE]`, timeouts).

mod client;
mod servers;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use servers::{MODEL_NAME, Server, Setup};
use stats::{Pooled, Run, percentile};

/// The load generator's flags.
struct LoadArgs {
    model: PathBuf,
    llama_dir: Option<PathBuf>,
    llama_url: Option<String>,
    switchyard_url: Option<String>,
    threads: usize,
    clients: Vec<usize>,
    reps: usize,
    requests_per_client: usize,
    min_requests: usize,
    prompt_words: Vec<usize>,
    max_tokens: Vec<u32>,
    seed: u64,
    parallel: Option<usize>,
    ctx: usize,
    timeout_s: u64,
}

const USAGE: &str = "usage: switchyard-bench load --model M.gguf (--llama-bin-dir DIR | --llama-url URL) \
[--switchyard-url URL] [--threads 2] [--clients 1,4,16,64] [--reps 2] [--requests-per-client 2] \
[--min-requests 8] [--prompt-words 16,64,256] [--max-tokens 16,64,128] [--seed 42] \
[--parallel N (default: the most clients)] [--ctx 2048] [--timeout-s 600]";

fn list<T: std::str::FromStr>(flag: &str, v: &str) -> anyhow::Result<Vec<T>> {
    let out: Vec<T> = v
        .split(',')
        .map(|x| x.trim().parse::<T>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("{flag} {v}: expected comma-separated numbers"))?;
    if out.is_empty() {
        bail!("{flag} is empty");
    }
    Ok(out)
}

fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<LoadArgs> {
    let mut a = LoadArgs {
        model: PathBuf::new(),
        llama_dir: None,
        llama_url: None,
        switchyard_url: None,
        threads: 2,
        clients: vec![1, 4, 16, 64],
        reps: 2,
        requests_per_client: 2,
        min_requests: 8,
        prompt_words: vec![16, 64, 256],
        max_tokens: vec![16, 64, 128],
        seed: 42,
        parallel: None,
        ctx: 2048,
        timeout_s: 600,
    };
    let mut it = args;
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        let num = |v: String| -> anyhow::Result<usize> {
            v.parse()
                .map_err(|_| anyhow::anyhow!("{flag} {v}: expected a number"))
        };
        match flag.as_str() {
            "--model" => a.model = PathBuf::from(value()?),
            "--llama-bin-dir" => a.llama_dir = Some(PathBuf::from(value()?)),
            "--llama-url" => a.llama_url = Some(value()?),
            "--switchyard-url" => a.switchyard_url = Some(value()?),
            "--threads" => a.threads = num(value()?)?,
            "--clients" => a.clients = list(&flag, &value()?)?,
            "--reps" => a.reps = num(value()?)?,
            "--requests-per-client" => a.requests_per_client = num(value()?)?,
            "--min-requests" => a.min_requests = num(value()?)?,
            "--prompt-words" => a.prompt_words = list(&flag, &value()?)?,
            "--max-tokens" => a.max_tokens = list(&flag, &value()?)?,
            "--seed" => a.seed = num(value()?)? as u64,
            "--parallel" => a.parallel = Some(num(value()?)?),
            "--ctx" => a.ctx = num(value()?)?,
            "--timeout-s" => a.timeout_s = num(value()?)? as u64,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    if a.llama_url.is_none() && a.llama_dir.is_none() {
        bail!("give --llama-bin-dir DIR (the folder of llama-server) or --llama-url URL\n{USAGE}");
    }
    if (a.llama_url.is_none() || a.switchyard_url.is_none()) && !a.model.is_file() {
        bail!(
            "--model {} is not a file (the GGUF both servers are started on)",
            a.model.display()
        );
    }
    if a.clients.contains(&0) || a.reps == 0 || a.threads == 0 {
        bail!("--clients, --reps and --threads must be at least 1");
    }
    Ok(a)
}

/// Entry point of `switchyard-bench load ARGS`.
pub fn main(args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let a = parse(args)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(&a))
}

async fn run(a: &LoadArgs) -> anyhow::Result<()> {
    let most = a.clients.iter().copied().max().unwrap_or(1);
    let parallel = a.parallel.unwrap_or(most);
    let dir = std::env::temp_dir().join(format!("switchyard-bench-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let setup = Setup {
        model: &a.model,
        threads: a.threads,
        parallel,
        ctx: a.ctx,
        dir: &dir,
    };
    // A fresh connection for every request: llama-server (cpp-httplib) closes a connection
    // after some streamed responses while the client pools it, and the next request sent on it
    // fails ("connection closed before message completed"), a loss of the client's making.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .no_proxy()
        .tcp_nodelay(true)
        .build()?;
    // llama-server first (A), then Switchyard (B): the order of every run.
    let mut sides = [
        match (&a.llama_url, &a.llama_dir) {
            (Some(url), _) => Server::attached("llama-server", url),
            (None, Some(d)) => servers::start_llama(d, &setup)?,
            (None, None) => unreachable!("checked by parse"),
        },
        match &a.switchyard_url {
            Some(url) => Server::attached("switchyard", url),
            None => servers::start_switchyard(&setup, most)?,
        },
    ];
    for s in &mut sides {
        s.wait_ready(&http, Duration::from_secs(300)).await?;
        // Warm-up, not measured.
        let warm = client::mix(a.seed, u64::MAX, 1, &[8], &[4]);
        let r = client::run(
            &http,
            &s.chat_url(),
            MODEL_NAME,
            &warm,
            1,
            Duration::from_secs(120),
        )
        .await;
        if let Some(e) = &r[0].error {
            bail!("{} warm-up failed: {e}\n{}", s.name, s.log_tail());
        }
    }
    println!(
        "model: {}   threads: {}\n{}\n{}\n\
         mix: prompt words {:?}, max_tokens {:?} (uniform, seed {}), max({}, {} × clients) requests a run, greedy, ignore_eos\n\
         reps: {} (A B A B: llama-server, then switchyard, same requests); logs: {}\n",
        a.model.display(),
        a.threads,
        sides[0].how,
        sides[1].how,
        a.prompt_words,
        a.max_tokens,
        a.seed,
        a.min_requests,
        a.requests_per_client,
        a.reps,
        dir.display()
    );
    let mut rows = Vec::new();
    let mut run_index = 0u64;
    for &c in &a.clients {
        let n = a.min_requests.max(a.requests_per_client * c);
        let mut pooled = [Pooled::default(), Pooled::default()];
        for rep in 0..a.reps {
            let jobs = client::mix(a.seed, run_index, n, &a.prompt_words, &a.max_tokens);
            run_index += 1;
            for (side, pool) in sides.iter().zip(&mut pooled) {
                let timeout = Duration::from_secs(a.timeout_s);
                let records =
                    client::run(&http, &side.chat_url(), MODEL_NAME, &jobs, c, timeout).await;
                let run = Run::from_records(&records);
                eprintln!(
                    "clients {c:>3} rep {rep}: {:<12} {:>8.1} t/s, {} tokens in {:.1} s, {} lost",
                    side.name,
                    run.tokens_per_s(),
                    run.tokens,
                    run.wall_s,
                    run.lost
                );
                pool.add(run);
            }
        }
        rows.push((c, n, pooled));
    }
    print_table(&rows);
    for (c, _, pooled) in &rows {
        for (side, p) in sides.iter().zip(pooled) {
            if let Some(e) = &p.first_error {
                println!(
                    "\n{} lost {} requests at {c} clients; the first: {e}",
                    side.name, p.lost
                );
            }
        }
    }
    Ok(())
}

/// The one table: per client count, llama-server (l) vs Switchyard (s).
fn print_table(rows: &[(usize, usize, [Pooled; 2])]) {
    println!(
        "| clients | requests / run | output tokens l / s | llama-server t/s | switchyard t/s | ratio | TTFT p50 ms l / s | TTFT p99 ms l / s | ITL p50 ms l / s | ITL p99 ms l / s | lost l / s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ms = |v: &[f64], p: f64| percentile(v, p) * 1e3;
    for (c, n, [l, s]) in rows {
        println!(
            "| {c} | {n} | {} / {} | {:.1} | {:.1} | {:.2}x | {:.0} / {:.0} | {:.0} / {:.0} | {:.1} / {:.1} | {:.1} / {:.1} | {} / {} |",
            l.tokens,
            s.tokens,
            l.rate(),
            s.rate(),
            s.rate() / l.rate(),
            ms(&l.ttft, 50.0),
            ms(&s.ttft, 50.0),
            ms(&l.ttft, 99.0),
            ms(&s.ttft, 99.0),
            ms(&l.itl, 50.0),
            ms(&s.itl, 50.0),
            ms(&l.itl, 99.0),
            ms(&s.itl, 99.0),
            l.lost,
            s.lost
        );
    }
}
