//! The safetensors tables (`--tables safetensors`, with `--hf-model` and
//! `--transformers-python`): a Hugging Face folder in f32, bf16 and f16 vs Transformers
//! `generate()` (`scripts/bench/transformers_generate.py`) on the same threads, and the decode
//! bound of each dtype.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{Args, f, median, read_bandwidth, run_child};

/// The safetensors tables (with `--hf-model` and `--transformers-python`): the folder in f32,
/// bf16 and f16 vs Transformers `generate()`, and the decode bound.
pub fn tables(a: &Args) -> anyhow::Result<()> {
    if let (Some(hf), Some(py)) = (&a.hf_model, &a.transformers_python) {
        println!(
            "\nSafetensors folder {} vs Transformers generate() (same threads)\n",
            hf.display()
        );
        // f32 bytes of the weights: the file holds f32 or half-width values.
        let weights_f32_mb = hf_weights_f32_mb(hf)?;
        println!("| threads | dtype | test | transformers t/s | switchyard t/s | ratio |");
        println!("|---:|---|---|---:|---:|---:|");
        let mut roofline = Vec::new();
        // Best read bandwidth per thread count.
        let mut bandwidth = Vec::new();
        for &t in &a.threads {
            // The machine's read bandwidth drifts over a run (other tenants of the VM host):
            // sampled before every rep, the best sample is the bound.
            let mut gbs = 0f64;
            for (dtype, tdtype, width) in [
                ("f32", "float32", 4.0),
                ("bf16", "bfloat16", 2.0),
                ("f16", "float16", 2.0),
            ] {
                let (mut hpp, mut htg, mut spp, mut stg, mut rss) =
                    (vec![], vec![], vec![], vec![], vec![]);
                for _ in 0..a.reps {
                    gbs = gbs.max(read_bandwidth(t));
                    let v = run_transformers(a, py, hf, t, tdtype)?;
                    hpp.push(f(&v, "pp"));
                    htg.push(f(&v, "tg"));
                    let (s, _) = run_child(a, "speed", t, hf, dtype)?;
                    spp.push(f(&s, "pp"));
                    stg.push(f(&s, "tg"));
                    rss.push(f(&s, "rss_mb"));
                }
                let weights_mb = weights_f32_mb * width / 4.0;
                let (htg_m, stg_m) = (median(htg.clone()), median(stg.clone()));
                roofline.push((t, dtype, weights_mb, htg_m, stg_m, median(rss)));
                for (name, h, s) in [
                    (format!("pp{}", a.prompt_tokens), hpp, spp),
                    (format!("tg{}", a.gen_tokens), htg, stg),
                ] {
                    let (h, s) = (median(h), median(s));
                    println!(
                        "| {t} | {dtype} | {name} | {h:.1} | {s:.1} | {:.2}x |",
                        s / h
                    );
                }
            }
            bandwidth.push((t, gbs));
        }
        // Batch-1 decode reads every weight once per token: the machine's read bandwidth over
        // the weight bytes bounds tokens/s, and so the ratio any engine can reach.
        println!(
            "\n| threads | dtype | weights (MiB) | read GB/s | decode bound t/s | switchyard tg / bound | bound / transformers tg | peak RSS (MiB) |"
        );
        println!("|---:|---|---:|---:|---:|---:|---:|---:|");
        for (t, dtype, mb, htg, stg, rss) in roofline {
            let gbs = bandwidth
                .iter()
                .find(|b| b.0 == t)
                .map_or(f64::NAN, |b| b.1);
            let bound = gbs * 1e9 / (mb * 1048576.0);
            println!(
                "| {t} | {dtype} | {mb:.1} | {gbs:.1} | {bound:.1} | {:.0}% | {:.2}x | {rss:.1} |",
                100.0 * stg / bound,
                bound / htg
            );
        }
    }
    Ok(())
}

/// One run of `scripts/bench/transformers_generate.py` on `a.device`: its JSON line (`pp`,
/// `tg`, the greedy `ids` of the decode run, versions).
pub fn run_transformers(
    a: &Args,
    py: &Path,
    hf: &Path,
    threads: usize,
    dtype: &str,
) -> anyhow::Result<Value> {
    // The checkout this binary was built from, else (a binary carried to another machine)
    // the checkout it runs in.
    let built =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench/transformers_generate.py");
    let script = if built.is_file() {
        built
    } else {
        PathBuf::from("scripts/bench/transformers_generate.py")
    };
    let out = Command::new(py)
        .arg(script)
        .arg("--model")
        .arg(hf)
        .args([
            "--threads",
            &threads.to_string(),
            "--dtype",
            dtype,
            "--device",
            &a.device,
            "--reps",
            "1",
        ])
        .args(["--prompt-tokens", &a.prompt_tokens.to_string()])
        .args(["--gen-tokens", &a.gen_tokens.to_string()])
        .output()?;
    if !out.status.success() {
        bail!(
            "transformers failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(line.lines().last().unwrap_or("{}"))?)
}

/// Size in MiB of a Hugging Face folder's weights as f32 (from the safetensors headers).
fn hf_weights_f32_mb(dir: &Path) -> anyhow::Result<f64> {
    let mut values = 0usize;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            // The header: an u64 length, then that many bytes of JSON
            // (`{"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {..}}`).
            use std::io::Read;
            let mut file = std::fs::File::open(&path)?;
            let mut len = [0u8; 8];
            file.read_exact(&mut len)?;
            let mut header = vec![0u8; usize::try_from(u64::from_le_bytes(len))?];
            file.read_exact(&mut header)?;
            let header: serde_json::Map<String, Value> = serde_json::from_slice(&header)
                .with_context(|| format!("{} has no safetensors header", path.display()))?;
            values += header
                .values()
                .filter_map(|t| t["shape"].as_array())
                .map(|dims| dims.iter().filter_map(Value::as_u64).product::<u64>() as usize)
                .sum::<usize>();
        }
    }
    Ok(values as f64 * 4.0 / 1048576.0)
}
