//! The `cuda` table: a Hugging Face folder in bf16 on GPU 0 vs Transformers `generate()` on
//! the same GPU (`scripts/bench/cuda-compare.sh` runs it on random-weight Llama shapes).

use anyhow::bail;
use serde_json::Value;

use crate::safetensors::run_transformers;
use crate::{Args, f, median, run_child};

/// The CUDA table (`--tables cuda --device cuda --hf-model DIR --transformers-python PY`):
/// the folder in bf16 on GPU 0 vs Transformers `generate()` on the same GPU, prefill and
/// batch-1 decode, and how many of the decode's greedy ids the two agree on.
pub fn tables(a: &Args) -> anyhow::Result<()> {
    let (Some(hf), Some(py)) = (&a.hf_model, &a.transformers_python) else {
        bail!("--tables cuda needs --hf-model DIR and --transformers-python PY");
    };
    if a.device != "cuda" {
        bail!("--tables cuda needs --device cuda");
    }
    let t = a.threads[0];
    let (mut hpp, mut htg, mut spp, mut stg) = (vec![], vec![], vec![], vec![]);
    let (mut hids, mut sids) = (Value::Null, Value::Null);
    for _ in 0..a.reps {
        let v = run_transformers(a, py, hf, t, "bfloat16")?;
        hpp.push(f(&v, "pp"));
        htg.push(f(&v, "tg"));
        hids = v["ids"].clone();
        let (s, _) = run_child(a, "speed", t, hf, "bf16")?;
        spp.push(f(&s, "pp"));
        stg.push(f(&s, "tg"));
        sids = s["ids"].clone();
    }
    let ids = |v: &Value| -> Vec<u64> {
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    };
    let (hids, sids) = (ids(&hids), ids(&sids));
    let agree = hids.iter().zip(&sids).take_while(|(h, s)| h == s).count();
    println!(
        "\n{} on cuda:0, bf16, batch 1, vs Transformers generate() (reps: {}, A B A B)\n",
        hf.display(),
        a.reps
    );
    println!("| test | transformers t/s | switchyard t/s | ratio |");
    println!("|---|---:|---:|---:|");
    for (name, h, s) in [
        (format!("pp{}", a.prompt_tokens), hpp, spp),
        (format!("tg{}", a.gen_tokens), htg, stg),
    ] {
        let (h, s) = (median(h), median(s));
        println!("| {name} | {h:.1} | {s:.1} | {:.2}x |", s / h);
    }
    println!(
        "\ngreedy decode ids: transformers {} tokens, switchyard {} tokens, first {agree} equal",
        hids.len(),
        sids.len()
    );
    Ok(())
}
