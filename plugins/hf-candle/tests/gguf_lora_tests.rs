//! LoRA adapters on the default GGUF base (SmolLM2-135M-Instruct Q4_1) against llama.cpp's
//! `llama-server --lora` (tests/fixtures/adapters/smollm2_gguf_lora_ids.json, recorded by
//! scripts/fixtures/record_smollm2_gguf_lora_ids.py): the adapters in llama.cpp's own GGUF LoRA
//! form (its convert_lora_to_gguf.py), and the same adapters as PEFT folders, whose query/key
//! updates hf-candle reorders for the GGUF's row layout itself.
//!
//! Quantized mat-muls round activations to 8 bits, so a perturbation far below the adapters'
//! own precision (their bf16 → f16 rounding) can move a logit by a few hundredths, and
//! rounding differs here and in llama.cpp. Ids are therefore compared over the leading steps
//! where the top-2 logit gap is at least 0.5 both in llama.cpp (its `reliable_prefix`) and in
//! Transformers + PEFT on the f32 folder the Q4_1 file dequantizes to
//! (tests/fixtures/adapters/smollm2_lora_ids.json): a step that is a near-tie in either
//! reference is not a clear call.

mod common;

use serde_json::{Value, json};
use switchyard_plugin::{Backend, ChatRequest, GenerationParams};

const ADAPTERS: [&str; 3] = ["pirate", "butler", "random-rslora"];

/// The smallest top-2 logit gap a compared step has in both references.
const CLEAR: f64 = 0.5;

fn fixture() -> Value {
    common::read_json(&common::fixtures().join("adapters/smollm2_gguf_lora_ids.json"))
}

/// Leading steps of `case` whose gaps are clear in llama.cpp and in Transformers + PEFT.
fn clear_steps(gguf: &Value, hf: &Value, adapter: &str, case: usize) -> usize {
    let llama = gguf["variants"][adapter]["cases"][case]["reliable_prefix"]
        .as_u64()
        .unwrap() as usize;
    let margins = hf["variants"][adapter]["cases"][case]["margins"]
        .as_array()
        .unwrap();
    let hf_clear = margins
        .iter()
        .position(|m| m.as_f64().unwrap() < CLEAR)
        .unwrap_or(margins.len());
    llama.min(hf_clear)
}

fn adapter(name: &str, gguf: bool) -> String {
    let dir = common::fixtures().join("adapters").join(name);
    if gguf { dir.join("adapter.gguf") } else { dir }
        .display()
        .to_string()
}

/// Every adapter picked by name on one engine gives llama.cpp's ids over the reliable prefixes.
fn check(gguf_files: bool) {
    let Some(model) = common::smollm2() else {
        return;
    };
    let exp = fixture();
    let hf = common::read_json(&common::fixtures().join("adapters/smollm2_lora_ids.json"));
    let modules: serde_json::Map<String, Value> = ADAPTERS
        .iter()
        .map(|n| (n.to_string(), json!(adapter(n, gguf_files))))
        .collect();
    let eng = common::engine_with(
        &model,
        json!({"threads": 2, "kv_cache_dtype": "f32"}),
        json!({"lora_modules": modules}),
    )
    .unwrap();
    let cases = exp["cases"].as_array().unwrap();
    for name in ADAPTERS {
        let mut compared = 0;
        for (i, case) in cases.iter().enumerate() {
            let rec = &exp["variants"][name]["cases"][i];
            let n = clear_steps(&exp, &hf, name, i);
            let want: Vec<u32> = serde_json::from_value(rec["greedy_ids"].clone()).unwrap();
            let req = ChatRequest {
                messages: common::messages(&case["messages"]),
                generation: GenerationParams {
                    do_sample: Some(false),
                    max_new_tokens: Some(24),
                    ..Default::default()
                },
                adapter: Some(name.to_owned()),
                ..Default::default()
            };
            let got = eng.chat(req).unwrap().remove(0).token_ids.unwrap();
            assert_eq!(
                &got[..n.min(got.len())],
                &want[..n],
                "{name} case {i} (gguf file: {gguf_files}): the first {n} ids"
            );
            compared += n;
        }
        assert!(compared >= 5, "{name}: only {compared} reliable steps");
    }
}

#[test]
fn gguf_lora_files_match_llama_cpp() {
    check(true);
}

#[test]
fn peft_folders_on_the_gguf_base_match_llama_cpp() {
    check(false);
}
