//! Model file formats against reference implementations (issue #3):
//!
//! * tiny GGUF files (tests/fixtures/gguf, scripts/fixtures/gen_gguf_fixtures.py) made from the
//!   tiny random HF models: F32 greedy ids equal transformers' (llama.cpp gives the same ids on
//!   these files), Q8_0 greedy ids equal llama.cpp's over each case's reliable prefix; the
//!   tokenizer and chat template come from the GGUF metadata;
//! * the real Gemma-3-270m Q4_K_M GGUF (scripts/fetch-gemma3.sh; skipped with a note when absent):
//!   greedy ids equal llama.cpp's over the reliable prefix, raw prompts through a `[model]
//!   chat_template` override (tests/fixtures/llama_cpp/gemma3_270m_q4_k_m_greedy.json,
//!   scripts/fixtures/record_gemma3_ids.py);
//! * Hugging Face folder variants (scripts/fixtures/gen_hf_variants.py): bf16 and f16 weights read
//!   as f32 and in their own dtype, sharded safetensors, a template only in chat_template.jinja,
//!   llama3 rope scaling in the transformers 5 and 4.x config shapes.
//!
//! Every expectation is a recorded reference value, never a second run of Switchyard.

mod common;
use common::greedy;

use std::path::{Path, PathBuf};

use hf_candle::HfCandle;
use serde_json::{Value, json};
use switchyard_plugin::{Backend, ChatRequest};

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

fn engine(path: &Path, options: Value, model_extra: Value) -> HfCandle {
    common::engine_with(path, options, model_extra)
        .unwrap_or_else(|e| panic!("load {}: {e}", path.display()))
}

/// Greedy ids of a chat request with at most `n` new tokens.
fn greedy_ids(eng: &HfCandle, req: &ChatRequest, n: usize) -> Vec<u32> {
    let out = eng
        .chat(ChatRequest {
            generation: greedy(n as u32),
            ..req.clone()
        })
        .unwrap();
    out[0].token_ids.clone().unwrap()
}

fn request(messages: &Value) -> ChatRequest {
    ChatRequest {
        messages: common::messages(messages),
        ..Default::default()
    }
}

/// Checks the prompt (text and ids) of `case` and returns the request.
fn check_prompt(eng: &HfCandle, case: &Value, what: &str) -> ChatRequest {
    let req = request(&case["messages"]);
    let (text, got) = eng.prompt(&req).unwrap();
    assert_eq!(
        text,
        case["prompt_text"].as_str().unwrap(),
        "{what}: prompt text"
    );
    assert_eq!(got, ids(&case["prompt_ids"]), "{what}: prompt ids");
    req
}

/// Compares `got` with the first `n` ids of `want`; a shorter `got` must end at an EOS id.
fn assert_prefix(eng: &HfCandle, got: &[u32], want: &[u32], n: usize, what: &str) {
    let m = got.len().min(n);
    assert_eq!(
        &got[..m],
        &want[..m],
        "{what}: greedy ids (first {n} compared)"
    );
    assert!(
        got.len() == n
            || got
                .last()
                .is_some_and(|t| eng.tokenizer().eos_ids.contains(t)),
        "{what}: {} ids, want {n}",
        got.len()
    );
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Last-position logits (f32) of `prompt` (safetensors models).
fn last_logits(eng: &HfCandle, prompt: &[u32]) -> Vec<f32> {
    let all = eng.logits(prompt).unwrap();
    all.get(prompt.len() - 1).unwrap().to_vec1().unwrap()
}

// --------------------------------------------------------------------------- tiny GGUF

fn gguf_fixture(arch: &str, kind: &str) -> (PathBuf, Value) {
    let exp = common::read_json(&common::fixtures().join("gguf/expected.json"));
    let e = exp["archs"][arch][kind].clone();
    let path = common::fixtures()
        .join("gguf")
        .join(e["file"].as_str().unwrap());
    (path, e)
}

/// The KV cache format follows the weights unless the config names one; a bad name is an
/// error that lists the good ones.
#[test]
fn kv_cache_dtype_follows_the_weights_unless_set() {
    let kv = |path: &Path, options: Value| {
        engine(path, options, json!({})).info().details["kv_cache_dtype"].clone()
    };
    let (q8, _) = gguf_fixture("llama", "q8_0");
    let (f32_file, _) = gguf_fixture("llama", "f32");
    assert_eq!(kv(&q8, json!({"threads": 2})), "f16");
    assert_eq!(kv(&f32_file, json!({"threads": 2})), "f32");
    assert_eq!(
        kv(&q8, json!({"threads": 2, "kv_cache_dtype": "bf16"})),
        "bf16"
    );
    let err = common::engine_with(&q8, json!({"kv_cache_dtype": "q4"}), json!({}))
        .err()
        .expect("an unknown cache format is refused")
        .to_string();
    assert!(
        err.contains("kv_cache_dtype") && err.contains("\"f16\""),
        "{err}"
    );
}

fn check_gguf_f32(arch: &str) {
    let (path, e) = gguf_fixture(arch, "f32");
    let eng = engine(&path, json!({"threads": 2}), json!({}));
    let info = eng.info();
    assert_eq!(info.details["format"], "gguf");
    assert_eq!(info.details["architecture"], arch);
    assert_eq!(info.details["chat_template"], "model");
    assert_eq!(eng.context_length(), 256);
    assert_eq!(
        eng.tokenizer().eos_ids,
        vec![2],
        "{arch}: EOS from the metadata"
    );
    for (i, c) in e["cases"].as_array().unwrap().iter().enumerate() {
        let what = format!("{arch} F32 GGUF case {i}");
        let req = check_prompt(&eng, c, &what);
        let want = ids(&c["greedy_ids"]);
        let got = greedy_ids(&eng, &req, want.len());
        assert_eq!(got, want, "{what}: greedy ids (transformers')");
    }
}

#[test]
fn gguf_f32_llama_matches_transformers() {
    check_gguf_f32("llama");
}

#[test]
fn gguf_f32_qwen2_matches_transformers() {
    check_gguf_f32("qwen2");
}

#[test]
fn gguf_f32_qwen3_matches_transformers() {
    check_gguf_f32("qwen3");
}

fn check_gguf_q8_0(arch: &str) {
    let (path, e) = gguf_fixture(arch, "q8_0");
    // llama.cpp recorded these with an f32 KV cache (`-ctk f32 -ctv f32`): the same here.
    let eng = engine(
        &path,
        json!({"threads": 2, "kv_cache_dtype": "f32"}),
        json!({}),
    );
    let mut compared = 0;
    for (i, c) in e["cases"].as_array().unwrap().iter().enumerate() {
        let what = format!("{arch} Q8_0 GGUF case {i}");
        let req = check_prompt(&eng, c, &what);
        let want = ids(&c["greedy_ids"]);
        let n = c["reliable_prefix"].as_u64().unwrap() as usize;
        let got = greedy_ids(&eng, &req, n);
        assert_prefix(&eng, &got, &want, n, &what);
        compared += n;
    }
    println!("{arch} Q8_0: {compared} greedy ids compared with llama.cpp's");
    assert!(compared >= 16, "{arch}: too few reliable steps recorded");
}

#[test]
fn gguf_q8_0_llama_matches_llama_cpp() {
    check_gguf_q8_0("llama");
}

#[test]
fn gguf_q8_0_qwen2_matches_llama_cpp() {
    check_gguf_q8_0("qwen2");
}

#[test]
fn gguf_q8_0_qwen3_matches_llama_cpp() {
    check_gguf_q8_0("qwen3");
}

// --------------------------------------------------------------------------- Gemma 3 GGUF

/// The Gemma-3-270m Q4_K_M GGUF, when it has been fetched (scripts/fetch-gemma3.sh):
/// `SWITCHYARD_GEMMA3`, else `${SWITCHYARD_CACHE:-~/.cache/switchyard}/models/`.
fn gemma3() -> Option<PathBuf> {
    let p = common::cached_model("SWITCHYARD_GEMMA3", "gemma-3-270m-q4_k_m.gguf");
    if p.is_file() {
        Some(p)
    } else {
        println!(
            "note: {} is absent (scripts/fetch-gemma3.sh fetches it); skipping",
            p.display()
        );
        None
    }
}

#[test]
fn gemma3_q4_k_m_matches_llama_cpp() {
    let Some(path) = gemma3() else {
        return;
    };
    let fx =
        common::read_json(&common::fixtures().join("llama_cpp/gemma3_270m_q4_k_m_greedy.json"));
    // A base model without a chat template: the override renders `<bos>` + the message.
    // llama.cpp ran with an f32 KV cache (`-ctk f32 -ctv f32`): the same here.
    let eng = engine(
        &path,
        json!({"threads": 2, "kv_cache_dtype": "f32"}),
        json!({"chat_template": fx["chat_template"]}),
    );
    assert_eq!(eng.info().details["architecture"], "gemma3");
    assert_eq!(eng.info().details["chat_template"], "config");
    // Every case is run before failing, so a failure lists all the diverging cases.
    let (mut compared, mut failures) = (0, Vec::new());
    for (i, c) in fx["cases"].as_array().unwrap().iter().enumerate() {
        let what = format!("gemma3 case {i} ({:?})", c["content"].as_str().unwrap());
        let case = json!({
            "messages": [{"role": "user", "content": c["content"]}],
            "prompt_text": c["prompt_text"],
            "prompt_ids": c["prompt_ids"],
        });
        let req = check_prompt(&eng, &case, &what);
        let want = ids(&c["greedy_ids"]);
        let n = c["reliable_prefix"].as_u64().unwrap() as usize;
        let got = greedy_ids(&eng, &req, n);
        let text = |t: &[u32]| eng.tokenizer().decode(t, false).unwrap();
        let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        println!(
            "{what}: {:?}; llama.cpp: {:?}; equal for {same}/{n} steps",
            text(&got),
            text(&want[..n])
        );
        let ended = got.len() < n
            && got
                .last()
                .is_some_and(|t| eng.tokenizer().eos_ids.contains(t));
        if same < got.len().min(n) || (got.len() < n && !ended) {
            let step = match got.get(same) {
                Some(&t) => format!("{:?} (id {t})", text(&[t])),
                None => "the end of the output".to_owned(),
            };
            failures.push(format!(
                "{what}: step {same} is {step}, llama.cpp's is {:?} (id {}, top-1/top-2 gap {})",
                text(&want[same..=same]),
                want[same],
                c["margins"][same]
            ));
        }
        compared += n;
    }
    assert!(compared >= 16, "too few reliable steps recorded");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// --------------------------------------------------------------------------- HF folders

fn hf_fixture(name: &str) -> (PathBuf, Value) {
    let dir = common::fixtures().join("hf").join(name);
    let exp = common::read_json(&dir.join("expected.json"));
    (dir, exp)
}

/// Prompts, conversation 0's last-position logits (within `tol`) and 16 greedy ids, against
/// transformers' float32 outputs in `exp`.
fn check_f32_outputs(eng: &HfCandle, exp: &Value, tol: f32, name: &str) {
    for (i, c) in exp["conversations"].as_array().unwrap().iter().enumerate() {
        let what = format!("{name} conversation {i}");
        let req = check_prompt(eng, c, &what);
        if exp["last_logits"]["conversation"].as_u64() == Some(i as u64) {
            let want: Vec<f32> =
                serde_json::from_value(exp["last_logits"]["logits"].clone()).unwrap();
            let d = max_abs_diff(&last_logits(eng, &ids(&c["prompt_ids"])), &want);
            println!("{name}: last-position logits max |diff| = {d:.3e} (tolerance {tol:e})");
            assert!(d < tol, "{what}: last-position logits differ by {d}");
        }
        let want = ids(&c["greedy_ids"]);
        assert_eq!(greedy_ids(eng, &req, 16), want, "{what}: greedy ids");
    }
}

fn check_half_as_f32(name: &str) {
    let (dir, exp) = hf_fixture(name);
    let eng = engine(&dir, json!({"threads": 2, "dtype": "float32"}), json!({}));
    assert_eq!(eng.info().details["dtype"], "f32");
    check_f32_outputs(&eng, &exp, 1e-4, &format!("{name} read as f32"));
}

#[test]
fn bf16_folder_read_as_f32_matches_transformers() {
    check_half_as_f32("llama-bf16");
}

#[test]
fn f16_folder_read_as_f32_matches_transformers() {
    check_half_as_f32("llama-f16");
}

/// A folder read in its own half-precision dtype against transformers run in that dtype.
///
/// Two implementations round differently, so neither logits nor greedy ids can agree exactly.
/// The tolerances come from transformers' own error: on the steps of its greedy run, its
/// half-precision logits are up to `own` away from the exact float32 ones (0.244 for bf16, 0.054
/// for f16; `native.max_abs_diff_vs_float32_along_path`). An implementation as accurate as that
/// is within `own` of the exact logits, so:
/// * candle's logits (the two tokens of each step of transformers' run) must be within `2 * own`
///   of transformers' and of the exact float32 ones;
/// * a top-1/top-2 gap can move by up to `2 * own` in each implementation, so a step is compared
///   (argmax along transformers' run, and free-running greedy ids until the first smaller step)
///   only when transformers' gap is at least `4 * own` (0.98 for bf16, 0.22 for f16).
fn check_half_native(name: &str, dtype: &str) {
    let (dir, exp) = hf_fixture(name);
    let eng = engine(&dir, json!({"threads": 2, "dtype": dtype}), json!({}));
    assert_eq!(eng.info().details["dtype"], dtype);
    // The cache in the weights' dtype, as transformers keeps it.
    assert_eq!(eng.info().details["kv_cache_dtype"], dtype);
    let native = &exp["native"];
    let own = native["max_abs_diff_vs_float32_along_path"]
        .as_f64()
        .unwrap() as f32;
    let tol_logits = 2.0 * own;
    let tol_gap = 4.0 * own;
    let (mut vs_torch, mut vs_f32, mut gap_diff) = (0f32, 0f32, 0f32);
    let (mut argmax_checked, mut greedy_compared) = (0, 0);
    for (i, (c, nc)) in exp["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .zip(native["conversations"].as_array().unwrap())
        .enumerate()
    {
        let what = format!("{name} in {dtype}, conversation {i}");
        let req = check_prompt(&eng, c, &what);
        let want = ids(&nc["greedy_ids"]);
        let top2 = nc["top2"].as_array().unwrap();
        let f = |v: &Value| v.as_f64().unwrap() as f32;
        let gap = |t: &Value| f(&t[1]) - f(&t[3]);
        // Along transformers' run (its prompt + ids in one forward pass).
        let prompt = ids(&c["prompt_ids"]);
        let seq: Vec<u32> = prompt.iter().chain(&want).copied().collect();
        let all = eng.logits(&seq).unwrap();
        for (k, (t, exact)) in top2
            .iter()
            .zip(nc["float32_top2"].as_array().unwrap())
            .enumerate()
        {
            let row: Vec<f32> = all.get(prompt.len() - 1 + k).unwrap().to_vec1().unwrap();
            let (a, b) = (
                row[t[0].as_u64().unwrap() as usize],
                row[t[2].as_u64().unwrap() as usize],
            );
            vs_torch = vs_torch.max((a - f(&t[1])).abs()).max((b - f(&t[3])).abs());
            vs_f32 = vs_f32
                .max((a - f(&exact[0])).abs())
                .max((b - f(&exact[1])).abs());
            gap_diff = gap_diff.max(((a - b) - gap(t)).abs());
            if gap(t) >= tol_gap {
                let argmax = (0..row.len())
                    .max_by(|&x, &y| row[x].total_cmp(&row[y]))
                    .unwrap() as u32;
                assert_eq!(
                    argmax, want[k],
                    "{what}: argmax at step {k} of transformers' run"
                );
                argmax_checked += 1;
            }
        }
        // Free-running greedy: transformers' ids until its first step with a smaller gap.
        let n = top2.iter().take_while(|t| gap(t) >= tol_gap).count();
        let got = greedy_ids(&eng, &req, 16);
        assert_eq!(got.len(), 16);
        let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        println!("{what}: greedy = transformers' {dtype} ids for {same}/16 steps ({n} required)");
        assert_eq!(&got[..n], &want[..n], "{what}: greedy ids");
        greedy_compared += n;
    }
    println!(
        "{name} in {dtype}: on transformers' {dtype} run, logits max |diff| vs transformers {dtype} \
         {vs_torch:.4} and vs exact f32 {vs_f32:.4} (transformers {dtype} vs exact f32: {own:.4}; \
         tolerance {}); top-2 gaps differ by <= {gap_diff:.4}; argmax checked at {argmax_checked}/48 \
         steps with gap >= {}, {greedy_compared} free-running greedy ids compared",
        tol_logits, tol_gap
    );
    assert!(
        vs_torch < tol_logits,
        "{name} in {dtype}: logits differ from transformers' by {vs_torch}"
    );
    assert!(
        vs_f32 < tol_logits,
        "{name} in {dtype}: logits differ from the exact ones by {vs_f32}"
    );
    assert!(
        argmax_checked >= 6 && greedy_compared >= 1,
        "{name}: too few steps compared"
    );
}

#[test]
fn bf16_folder_in_bf16_matches_transformers_bf16() {
    check_half_native("llama-bf16", "bf16");
}

#[test]
fn f16_folder_in_f16_matches_transformers_f16() {
    check_half_native("llama-f16", "f16");
}

#[test]
fn sharded_folder_loads_and_matches_transformers() {
    let (dir, exp) = hf_fixture("llama-sharded");
    assert!(!dir.join("model.safetensors").exists());
    let index = common::read_json(&dir.join("model.safetensors.index.json"));
    let shards: std::collections::BTreeSet<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(shards.len() >= 2, "{shards:?}");
    let eng = engine(&dir, json!({"threads": 2}), json!({}));
    check_f32_outputs(&eng, &exp, 1e-4, "llama-sharded");
}

#[test]
fn chat_template_jinja_file_is_used() {
    let (dir, exp) = hf_fixture("llama-jinja");
    let tc = common::read_json(&dir.join("tokenizer_config.json"));
    assert!(tc.get("chat_template").is_none());
    let eng = engine(&dir, json!({"threads": 2}), json!({}));
    assert_eq!(eng.info().details["chat_template"], "model");
    for (i, c) in exp["conversations"].as_array().unwrap().iter().enumerate() {
        let text = eng
            .render(
                &common::messages(&c["messages"]),
                None,
                None,
                true,
                &Default::default(),
            )
            .unwrap();
        assert_eq!(text, c["prompt_text"].as_str().unwrap(), "conversation {i}");
    }
    assert!(
        exp["conversations"][0]["prompt_text"]
            .as_str()
            .unwrap()
            .starts_with("<|im_start|>system\nYou are a tiny test model.")
    );
    check_f32_outputs(&eng, &exp, 1e-4, "llama-jinja");
}

fn check_llama3_rope(name: &str) {
    let (dir, exp) = hf_fixture(name);
    let cfg = common::read_json(&dir.join("config.json"));
    let scaling = if name.ends_with("-v4") {
        assert!(cfg.get("rope_parameters").is_none());
        assert_eq!(cfg["rope_theta"], 500000.0);
        &cfg["rope_scaling"]
    } else {
        assert!(cfg.get("rope_scaling").is_none());
        &cfg["rope_parameters"]
    };
    assert_eq!(scaling["rope_type"], "llama3");
    // The scaling matters for these prompts: unscaled rope moves the logits by this much.
    let moved = exp["same_weights_other_rope"]["default"]["max_abs_logit_diff"]
        .as_f64()
        .unwrap();
    assert!(moved > 1.0, "{name}: {moved}");
    let eng = engine(&dir, json!({"threads": 2}), json!({}));
    check_f32_outputs(&eng, &exp, 1e-4, name);
}

#[test]
fn llama3_rope_scaling_matches_transformers() {
    check_llama3_rope("llama3-rope");
}

#[test]
fn llama3_rope_scaling_v4_config_matches_transformers() {
    check_llama3_rope("llama3-rope-v4");
}
