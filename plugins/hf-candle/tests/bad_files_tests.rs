//! Broken or unsupported model files give clear errors that name the file and the fix.

mod common;

use std::path::Path;

use candle_core::quantized::{QTensor, gguf_file};
use candle_core::{Device, Tensor};
use serde_json::json;

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn load_err(path: &Path) -> String {
    match common::engine_with(path, json!({}), json!({})) {
        Ok(_) => panic!("{} should not load", path.display()),
        Err(e) => e.to_string(),
    }
}

fn tiny_llama() -> Option<std::path::PathBuf> {
    let d = common::fixtures().join("hf/llama");
    d.join("model.safetensors").is_file().then_some(d)
}

#[test]
fn missing_tokenizer_is_named() {
    let Some(src) = tiny_llama() else { return };
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&src, dir.path());
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("tokenizer.json") && e.contains("missing"), "{e}");
}

#[test]
fn corrupt_safetensors_header_is_named() {
    let Some(src) = tiny_llama() else { return };
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&src, dir.path());
    let p = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[8..40].copy_from_slice(&[b'#'; 32]);
    std::fs::write(&p, bytes).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("model.safetensors") && e.contains("corrupt"),
        "{e}"
    );
}

#[test]
fn unsupported_architecture_lists_the_supported_ones() {
    let Some(src) = tiny_llama() else { return };
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&src, dir.path());
    let p = dir.path().join("config.json");
    let mut cfg = common::read_json(&p);
    cfg["architectures"] = json!(["GPTNeoXForCausalLM"]);
    std::fs::write(&p, cfg.to_string()).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("GPTNeoXForCausalLM") && e.contains("LlamaForCausalLM") && e.contains("Qwen3"),
        "{e}"
    );
}

fn write_gguf(path: &Path, arch: &str) {
    let t = QTensor::quantize(
        &Tensor::zeros((64, 64), candle_core::DType::F32, &Device::Cpu).unwrap(),
        candle_core::quantized::GgmlDType::F32,
    )
    .unwrap();
    let arch = gguf_file::Value::String(arch.into());
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(
        &mut f,
        &[("general.architecture", &arch)],
        &[("token_embd.weight", &t)],
    )
    .unwrap();
}

#[test]
fn truncated_gguf_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.gguf");
    write_gguf(&p, "llama");
    let len = std::fs::metadata(&p).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len - 1000).unwrap();
    let e = load_err(&p);
    assert!(e.contains("model.gguf") && e.contains("truncated"), "{e}");
    // Cut inside the header too.
    f.set_len(20).unwrap();
    let e = load_err(&p);
    assert!(
        e.contains("model.gguf") && e.contains("truncated or corrupt"),
        "{e}"
    );
}

#[test]
fn unsupported_gguf_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    write_gguf(&p, "rwkv6");
    let e = load_err(&p);
    assert!(
        e.contains("rwkv6") && e.contains("llama, qwen2, qwen3, gemma3"),
        "{e}"
    );
}

#[test]
fn missing_model_path_says_how_to_fetch() {
    let e = load_err(Path::new("/nonexistent/model.gguf"));
    assert!(
        e.contains("/nonexistent/model.gguf") && e.contains("fetch-model.sh"),
        "{e}"
    );
}
