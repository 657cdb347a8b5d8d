//! The `lifecycle` tables: what process isolation costs (decode rate and time to first token
//! through a worker process vs in-process, one child alternating rounds), and what loading on
//! demand costs (time to first token of a model the router loads for the request vs the same
//! model already loaded), with the host's RSS before a load, after it and after the unload.

use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};
use switchyard::worker::WorkerLauncher;
use switchyard::{Catalog, ChatModel, Config, ModelRouter, Registry, registry::resolve_plugin_dir};

use crate::{Args, STORY, decode_span, median, request, run_child};

/// Rounds of the isolation child (each measures both sides twice, alternating).
const ROUNDS: usize = 3;

fn config_toml(a: &Args, threads: usize, isolation: &str) -> String {
    format!(
        "sample_backend = \"hf-candle\"\nisolation = \"{isolation}\"\n[model]\npath = \"{}\"\n[generation]\nrepetition_penalty = 1.0\n[backends.hf-candle]\nthreads = {threads}\nprefix_cache_mb = 0\n",
        a.model.display()
    )
}

/// `switchyard worker`, next to this executable (both are built into the same target dir).
fn launcher() -> anyhow::Result<WorkerLauncher> {
    let exe = std::env::current_exe()?;
    let program = exe
        .parent()
        .context("the bench has no directory")?
        .join("switchyard");
    anyhow::ensure!(
        program.exists(),
        "{} not found: cargo build --release -p switchyard-cli",
        program.display()
    );
    Ok(WorkerLauncher {
        program,
        args: vec!["worker".into()],
    })
}

fn open(a: &Args, threads: usize, isolation: &str) -> anyhow::Result<ChatModel> {
    let config = Config::parse(&config_toml(a, threads, isolation), "bench", &[])?;
    let registry = Registry::scan(&resolve_plugin_dir(None, None))?;
    Ok(ChatModel::open(&registry, config, Some(&launcher()?))?)
}

/// Time to the first event of a short prompt, seconds.
fn ttft(model: &ChatModel) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut events = model.stream_chat(request("Hi there", 8))?;
    events.next().context("no event")??;
    let t = start.elapsed().as_secs_f64();
    for e in events {
        e?;
    }
    Ok(t)
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The children: `isolation` and `on-demand`.
pub fn child(a: &Args, mode: &str) -> anyhow::Result<Option<Value>> {
    let t = a.threads[0];
    Ok(Some(match mode {
        "isolation" => {
            let inproc = open(a, t, "in-process")?;
            let worker = open(a, t, "process")?;
            for m in [&inproc, &worker] {
                m.chat(request("Hi", 2))?; // warm-up
            }
            let (mut tg, mut ft) = ([vec![], vec![]], [vec![], vec![]]);
            for round in 0..ROUNDS {
                let order: [usize; 4] = if round % 2 == 0 {
                    [0, 1, 1, 0]
                } else {
                    [1, 0, 0, 1]
                };
                for side in order {
                    let m = if side == 0 { &inproc } else { &worker };
                    let d = decode_span(m.stream_chat(request(STORY, a.gen_tokens))?)?;
                    tg[side].push(d.rate());
                    ft[side].push(ttft(m)?);
                }
            }
            json!({"tg": [median(tg[0].clone()), median(tg[1].clone())],
                   "ttft": [median(ft[0].clone()), median(ft[1].clone())]})
        }
        "on-demand" => {
            let text = format!(
                "keep_alive = \"-1\"\n[[models]]\nname = \"m\"\n{}",
                config_toml(a, t, "in-process")
                    .replace("[model]", "[models.model]")
                    .replace("[generation]", "[models.generation]")
                    .replace("[backends.hf-candle]", "[models.backends.hf-candle]")
            );
            let catalog = Catalog::parse(&text, "bench", &[], None)?;
            let registry = Registry::scan(&resolve_plugin_dir(None, None))?;
            let router = ModelRouter::new(catalog, registry, None);
            let before = rss_mb();
            let start = Instant::now();
            let model = router.get("m")?;
            let mut events = model.stream_chat(request("Hi there", 8))?;
            events.next().context("no event")??;
            let cold = start.elapsed().as_secs_f64();
            for e in events {
                e?;
            }
            let loaded = rss_mb();
            let warm = median(
                (0..3)
                    .map(|_| ttft(&model))
                    .collect::<anyhow::Result<Vec<_>>>()?,
            );
            drop(model);
            router.unload("m")?;
            let after = rss_mb();
            json!({"cold": cold, "warm": warm, "rss": [before, loaded, after]})
        }
        _ => return Ok(None),
    }))
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = match p.parse::<usize>() {
            Ok(i) => &x[i],
            Err(_) => &x[p],
        };
    }
    x.as_f64().unwrap_or(f64::NAN)
}

/// Runs both children `a.reps` times and prints the tables.
pub fn tables(a: &Args) -> anyhow::Result<()> {
    let t = a.threads[0];
    let (mut tg, mut ft, mut cold, mut warm) =
        (vec![vec![], vec![]], vec![vec![], vec![]], vec![], vec![]);
    let mut rss = Value::Null;
    for _ in 0..a.reps {
        let (v, _) = run_child(a, "isolation", t, &a.model, &a.dtype)?;
        for side in 0..2 {
            tg[side].push(f(&v, &["tg", &side.to_string()]));
            ft[side].push(f(&v, &["ttft", &side.to_string()]));
        }
        let (v, _) = run_child(a, "on-demand", t, &a.model, &a.dtype)?;
        cold.push(f(&v, &["cold"]));
        warm.push(f(&v, &["warm"]));
        rss = v["rss"].clone();
    }
    let m = |v: &Vec<f64>| median(v.clone());
    println!(
        "\nlifecycle: {} ({t} threads, reps: {}; isolation rounds alternate in one child)\n",
        a.model.display(),
        a.reps
    );
    println!("| test | baseline | baseline | measured | measured / baseline |");
    println!("|---|---|---:|---:|---:|");
    println!(
        "| decode t/s, backend in a worker process | in-process | {:.1} | {:.1} | {:.3}x |",
        m(&tg[0]),
        m(&tg[1]),
        m(&tg[1]) / m(&tg[0])
    );
    println!(
        "| time to first token (ms), backend in a worker process | in-process | {:.1} | {:.1} | {:.3}x |",
        m(&ft[0]) * 1e3,
        m(&ft[1]) * 1e3,
        m(&ft[1]) / m(&ft[0])
    );
    println!(
        "| time to first token (ms), model loaded on demand | already loaded | {:.1} | {:.1} | {:.1}x |",
        m(&warm) * 1e3,
        m(&cold) * 1e3,
        m(&cold) / m(&warm)
    );
    println!(
        "\nhost RSS (MiB), in-process: before the load {:.1}, loaded {:.1}, after the unload {:.1}",
        f(&rss, &["0"]),
        f(&rss, &["1"]),
        f(&rss, &["2"])
    );
    Ok(())
}
