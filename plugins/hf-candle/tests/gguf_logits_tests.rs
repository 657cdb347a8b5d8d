//! Logits of the tiny GGUF fixtures (tests/fixtures/gguf, scripts/fixtures/gen_gguf_fixtures.py)
//! against the reference implementations, below the engine: greedy ids (formats_tests.rs) only
//! show that the argmax agrees, these show how close the numbers are.
//!
//! * F32 files: conversation 0's last-position logits equal transformers' (the HF fixture the
//!   file was made from) within 1e-4, as the safetensors path does (hf_fixtures_tests.rs).
//! * Q8_0 files: fed llama.cpp's greedy ids, the logits of llama.cpp's top-1 and top-2 tokens at
//!   each step equal llama.cpp's (recorded with an f32 KV cache and no flash attention, i.e. f32
//!   attention as candle computes it). Both run the same Q8_0 x Q8_0 dot products on the same
//!   bytes, and the differences are ~1e-5 at all but an isolated step (one of the 96 llama/qwen2
//!   steps differs by 0.036: the two quantize one activation to a different int8 value). So at
//!   least 90% of the steps must agree within 1e-3 and every step within 0.05.
//!
//! They read the logits through `HfCandle::logits` (per-position logits of the natively run
//! model), feeding the sequence again from an empty cache at every step.

mod common;

use hf_candle::HfCandle;
use serde_json::Value;

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Incremental feeding on top of the engine's per-position logits (a fresh pass over the
/// whole sequence each time, from an empty cache).
struct Instance {
    eng: HfCandle,
    seq: Vec<u32>,
}

impl Instance {
    fn feed(&mut self, ids: &[u32]) -> hf_candle::Result<Vec<f32>> {
        self.seq.extend_from_slice(ids);
        let all = self.eng.logits(&self.seq)?;
        let last = all.get(self.seq.len() - 1)?;
        Ok(last.to_vec1::<f32>()?)
    }

    fn reset(&mut self) {
        self.seq.clear();
    }
}

fn instance(file: &str) -> Instance {
    let path = common::fixtures().join("gguf").join(file);
    // The references ran with an f32 KV cache (llama.cpp `-ctk f32 -ctv f32`; transformers in
    // float32): the same here (a Q8_0 file's default would be f16).
    let options = serde_json::json!({"threads": 2, "kv_cache_dtype": "f32"});
    Instance {
        eng: common::engine_with(&path, options, serde_json::json!({})).unwrap(),
        seq: Vec::new(),
    }
}

fn expected(arch: &str, kind: &str) -> Value {
    common::read_json(&common::fixtures().join("gguf/expected.json"))["archs"][arch][kind].clone()
}

fn check_f32_logits(arch: &str) {
    let hf = common::read_json(
        &common::fixtures()
            .join("hf")
            .join(arch)
            .join("expected.json"),
    );
    assert_eq!(hf["last_logits"]["conversation"], 0);
    let want: Vec<f32> = serde_json::from_value(hf["last_logits"]["logits"].clone()).unwrap();
    let e = expected(arch, "f32");
    let prompt = ids(&hf["conversations"][0]["prompt_ids"]);
    assert_eq!(ids(&e["cases"][0]["prompt_ids"]), prompt);
    let mut inst = instance(e["file"].as_str().unwrap());
    let got = inst.feed(&prompt).unwrap();
    assert_eq!(got.len(), want.len());
    let d = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!("{arch} F32 GGUF: last-position logits max |diff| vs transformers = {d:.3e}");
    assert!(
        d < 1e-4,
        "{arch} F32 GGUF: last-position logits differ from transformers' by {d}"
    );
}

#[test]
fn gguf_f32_llama_logits_match_transformers() {
    check_f32_logits("llama");
}

#[test]
fn gguf_f32_qwen2_logits_match_transformers() {
    check_f32_logits("qwen2");
}

#[test]
fn gguf_f32_qwen3_logits_match_transformers() {
    check_f32_logits("qwen3");
}

fn check_q8_0_logits(arch: &str) {
    let e = expected(arch, "q8_0");
    let mut inst = instance(e["file"].as_str().unwrap());
    let (mut worst, mut off, mut steps) = ((0f32, 0, 0), 0, 0);
    for (i, c) in e["cases"].as_array().unwrap().iter().enumerate() {
        inst.reset();
        let want = ids(&c["greedy_ids"]);
        let mut logits = inst.feed(&ids(&c["prompt_ids"])).unwrap();
        for (k, t) in c["top2"].as_array().unwrap().iter().enumerate() {
            let d = [(&t[0], &t[1]), (&t[2], &t[3])]
                .iter()
                .map(|(id, l)| {
                    (logits[id.as_u64().unwrap() as usize] - l.as_f64().unwrap() as f32).abs()
                })
                .fold(0f32, f32::max);
            if d > worst.0 {
                worst = (d, i, k);
            }
            off += usize::from(d > 1e-3);
            steps += 1;
            logits = inst.feed(&[want[k]]).unwrap();
        }
    }
    println!(
        "{arch} Q8_0 GGUF: top-2 logits vs llama.cpp: {off}/{steps} steps differ by more than 1e-3, \
         at most {:.3e} (case {}, step {})",
        worst.0, worst.1, worst.2
    );
    assert!(
        off * 10 <= steps && worst.0 < 0.05,
        "{arch} Q8_0 GGUF: logits differ from llama.cpp's by more than 1e-3 at {off}/{steps} steps, \
         at most by {} (case {}, step {})",
        worst.0,
        worst.1,
        worst.2
    );
}

#[test]
fn gguf_q8_0_llama_logits_match_llama_cpp() {
    check_q8_0_logits("llama");
}

#[test]
fn gguf_q8_0_qwen2_logits_match_llama_cpp() {
    check_q8_0_logits("qwen2");
}

#[test]
fn gguf_q8_0_qwen3_logits_match_llama_cpp() {
    check_q8_0_logits("qwen3");
}
