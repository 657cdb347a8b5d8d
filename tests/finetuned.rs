//! Serving a fine-tuned model from the command line as a LLaMA-Factory user does: a
//! `llamafactory-cli`-style YAML (base + LoRA adapter, `infer_backend: huggingface`,
//! `do_sample: false`) drives `switchyard chat FILE.yaml` and `batch` to the same replies as the
//! equivalent TOML, and those replies are Transformers + PEFT's greedy ids for the adapter
//! (tests/fixtures/hf/llama-lora, recorded by scripts/fixtures/gen_lora_fixtures.py).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use switchyard_tests::{plugin_library, switchyard_bin, workspace_root, write_file};

fn fixtures() -> PathBuf {
    workspace_root().join("tests/fixtures")
}

fn run(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    plugin_library("hf-candle");
    let mut c = Command::new(switchyard_bin());
    c.args(args).current_dir(dir);
    if let Some(text) = stdin {
        c.stdin(std::fs::File::open(write_file(dir, "stdin.txt", text)).unwrap());
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "switchyard {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The YAML and the TOML that mean the same: the tiny Llama folder with the q/v adapter.
fn configs(dir: &Path) -> (PathBuf, PathBuf) {
    let base = fixtures().join("hf/llama");
    let adapter = fixtures().join("hf/llama-lora/qv");
    let yaml = write_file(
        dir,
        "llama_lora_sft.yaml",
        &format!(
            "### model\nmodel_name_or_path: {}\nadapter_name_or_path: {}\n\
             infer_backend: huggingface  # choices: [huggingface, vllm, sglang, ktransformers]\n\
             trust_remote_code: true\n\n### method (training only)\nstage: sft\nfinetuning_type: lora\n\n\
             ### generation\ndo_sample: false\nmax_new_tokens: 32\n",
            base.display(),
            adapter.display()
        ),
    );
    let toml = write_file(
        dir,
        "llama_lora_sft.toml",
        &format!(
            "sample_backend = \"hf-candle\"\n[model]\npath = {:?}\nadapter_name_or_path = [{:?}]\n\
             [generation]\ndo_sample = false\nmax_new_tokens = 32\n",
            base.display().to_string(),
            adapter.display().to_string()
        ),
    );
    (yaml, toml)
}

#[test]
fn a_llamafactory_yaml_drives_batch_like_the_toml_and_peft() {
    let dir = tempfile::tempdir().unwrap();
    let (yaml, toml) = configs(dir.path());
    let exp: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("hf/llama-lora/expected.json")).unwrap(),
    )
    .unwrap();
    let cases = exp["cases"].as_array().unwrap();
    let input: String = cases
        .iter()
        .map(|c| {
            format!(
                "{}\n",
                serde_json::json!({"messages": c["messages"], "max_tokens": 16})
            )
        })
        .collect();
    let input = write_file(dir.path(), "in.jsonl", &input);
    let mut outputs = Vec::new();
    for (config, name) in [(&yaml, "yaml.jsonl"), (&toml, "toml.jsonl")] {
        let out_path = dir.path().join(name);
        let out = run(
            dir.path(),
            &[
                "batch",
                config.to_str().unwrap(),
                "-i",
                input.to_str().unwrap(),
                "-o",
                out_path.to_str().unwrap(),
            ],
            None,
        );
        if config == &yaml {
            // Training keys are named once and ignored.
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("stage") && stderr.contains("finetuning_type"),
                "{stderr}"
            );
        }
        outputs.push(std::fs::read_to_string(out_path).unwrap());
    }
    assert_eq!(outputs[0], outputs[1], "the YAML and the TOML reply alike");
    for (i, line) in outputs[0].lines().enumerate() {
        let record: Value = serde_json::from_str(line).unwrap();
        let want = &exp["variants"]["qv"]["cases"][i]["greedy_ids"];
        assert_eq!(&record["token_ids"], want, "case {i}: Transformers + PEFT");
    }
}

#[test]
fn switchyard_chat_takes_the_yaml_as_llamafactory_cli_does() {
    let dir = tempfile::tempdir().unwrap();
    let (yaml, toml) = configs(dir.path());
    let ask = "Hello there\n";
    let from_yaml = run(dir.path(), &["chat", yaml.to_str().unwrap()], Some(ask));
    let from_toml = run(
        dir.path(),
        &["chat", "--config", toml.to_str().unwrap()],
        Some(ask),
    );
    let long = String::from_utf8_lossy(&from_yaml.stdout).into_owned();
    assert_eq!(long, String::from_utf8_lossy(&from_toml.stdout));
    assert!(!long.trim().is_empty());
    // key=value overrides after the file, as llamafactory-cli takes them.
    let short = run(
        dir.path(),
        &["chat", yaml.to_str().unwrap(), "max_new_tokens=2"],
        Some(ask),
    );
    let cut = String::from_utf8_lossy(&short.stdout);
    assert!(
        cut.trim().len() < long.trim().len() && long.starts_with(cut.trim_end()),
        "{cut:?} vs {long:?}"
    );
    // An unknown key is an error naming it.
    let bad = write_file(
        dir.path(),
        "bad.yaml",
        "model_name_or_path: x\ntemprature: 0.1\n",
    );
    let out = Command::new(switchyard_bin())
        .args(["chat", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("temprature"), "{stderr}");
}

/// Batch rows pick named adapters with `model` (as the API does) or `adapter`; each row gets
/// Transformers + PEFT's ids for its adapter, the base rows the base's.
#[test]
fn batch_rows_pick_named_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let lora = fixtures().join("hf/llama-lora");
    let config = write_file(
        dir.path(),
        "named.toml",
        &format!(
            "sample_backend = \"hf-candle\"\nmax_concurrent = 4\n[model]\npath = {:?}\n\
             [model.lora_modules]\nqv = {:?}\nrslora = {:?}\n[generation]\ndo_sample = false\n",
            fixtures().join("hf/llama").display().to_string(),
            lora.join("qv").display().to_string(),
            lora.join("rslora-all").display().to_string(),
        ),
    );
    let exp: Value =
        serde_json::from_str(&std::fs::read_to_string(lora.join("expected.json")).unwrap())
            .unwrap();
    let mut rows = String::new();
    let mut want = Vec::new();
    for (i, case) in exp["cases"].as_array().unwrap().iter().enumerate() {
        for (pick, variant) in [
            (serde_json::json!({}), "base"),
            (serde_json::json!({"model": "qv"}), "qv"),
            (serde_json::json!({"adapter": "rslora"}), "rslora-all"),
        ] {
            let mut row = serde_json::json!({"messages": case["messages"], "max_tokens": 16});
            for (k, v) in pick.as_object().unwrap() {
                row[k] = v.clone();
            }
            rows.push_str(&format!("{row}\n"));
            want.push(exp["variants"][variant]["cases"][i]["greedy_ids"].clone());
        }
    }
    let input = write_file(dir.path(), "rows.jsonl", &rows);
    let output = dir.path().join("out.jsonl");
    run(
        dir.path(),
        &[
            "batch",
            "--config",
            config.to_str().unwrap(),
            "-i",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ],
        None,
    );
    let got: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["token_ids"].clone())
        .collect();
    assert_eq!(got, want);
}
