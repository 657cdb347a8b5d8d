//! LoRA adapters in PEFT's format (`adapter_config.json` + `adapter_model.safetensors`), read
//! into the low-rank updates the native engine merges while it loads the base weights.
//!
//! What PEFT writes for a LoRA on a Llama-family model is supported: `r`, `lora_alpha`,
//! `use_rslora` (scale `alpha / sqrt(r)` instead of `alpha / r`), any of the q/k/v/o/gate/up/down
//! projections as `target_modules`, `bias = "none"`. What would change the model in another way
//! is an error that names the key: DoRA (`use_dora`), `modules_to_save`, per-layer ranks or
//! alphas (`rank_pattern`, `alpha_pattern`), `layers_to_transform`, `fan_in_fan_out` (GPT-2's
//! transposed layers), trained biases.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use native_llm::model::{AdapterLayout, Transformer};
use native_llm::weights::{LowRank, LowRankUpdates};
use serde_json::Value;

use crate::error::{Error, Result};

/// The projections a LoRA may target on the models the native engine runs.
const TARGETS: &[&str] = &[
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// The updates of `dirs`, in order (a weight updated by several adapters gets them all).
/// Attaches adapters to a native model for run-time use: each `[model.lora_modules]` entry
/// by its name, and — when the base could not merge them at load (`merged` is false: a
/// quantized GGUF base) — the always-on `adapter_name_or_path` ones as one adapter applied to
/// every token. Returns the named adapters' names.
pub(crate) fn attach(
    model: &mut Transformer,
    named: &BTreeMap<String, PathBuf>,
    always_on: &[PathBuf],
    merged: bool,
) -> Result<Vec<String>> {
    if !merged && !always_on.is_empty() {
        let updates = read(always_on)?;
        let i = model.attach_adapter(
            "(adapter_name_or_path)",
            &updates,
            AdapterLayout::HuggingFace,
        )?;
        model.set_always_on(i);
    }
    for (name, dir) in named {
        let updates = read(std::slice::from_ref(dir))?;
        model.attach_adapter(name, &updates, AdapterLayout::HuggingFace)?;
        tracing::info!(adapter = %name, dir = %dir.display(), "named LoRA adapter attached");
    }
    Ok(named.keys().cloned().collect())
}

pub(crate) fn read(dirs: &[PathBuf]) -> Result<LowRankUpdates> {
    let mut out = LowRankUpdates::new();
    for dir in dirs {
        for (name, update) in read_one(dir)? {
            out.entry(name).or_default().push(update);
        }
    }
    Ok(out)
}

fn key<'a>(config: &'a Value, k: &str) -> Option<&'a Value> {
    config.get(k).filter(|v| !v.is_null())
}

/// Reads one adapter folder.
fn read_one(dir: &Path) -> Result<Vec<(String, LowRank)>> {
    let config_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| {
        Error::file(
            &config_path,
            format!("cannot read ({e}); a LoRA adapter folder (PEFT's save_pretrained) has adapter_config.json and adapter_model.safetensors"),
        )
    })?;
    let config: Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(&config_path, format!("is not JSON ({e})")))?;
    let bad = |k: &str, why: &str| Err(Error::file(&config_path, format!("`{k}`: {why}")));
    match key(&config, "peft_type").and_then(Value::as_str) {
        None | Some("LORA") => {}
        Some(other) => {
            return bad(
                "peft_type",
                &format!("{other} adapters are not supported; only LORA"),
            );
        }
    }
    for (k, what) in [
        ("use_dora", "DoRA adapters are not supported"),
        (
            "fan_in_fan_out",
            "transposed (Conv1D) layers are not supported",
        ),
    ] {
        if key(&config, k).and_then(Value::as_bool) == Some(true) {
            return bad(k, what);
        }
    }
    // `layers_to_transform` only says which layers have updates; the file holds exactly
    // those. `layers_pattern` names the layer list, which is `layers` in these models.
    if let Some(p) = key(&config, "layers_pattern")
        && p != "layers"
        && p.as_array().is_none_or(|a| a.iter().any(|x| x != "layers"))
    {
        return bad(
            "layers_pattern",
            &format!("{p}: these models keep their layers in `layers`; not supported"),
        );
    }
    for k in ["modules_to_save"] {
        if key(&config, k).is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty())) {
            return bad(
                k,
                "is set, which changes the model beyond a LoRA update; not supported",
            );
        }
    }
    for k in ["rank_pattern", "alpha_pattern"] {
        if key(&config, k)
            .and_then(Value::as_object)
            .is_some_and(|o| !o.is_empty())
        {
            return bad(k, "per-module ranks or alphas are not supported");
        }
    }
    if let Some(b) = key(&config, "bias")
        .and_then(Value::as_str)
        .filter(|b| *b != "none")
    {
        return bad(
            "bias",
            &format!("\"{b}\": trained biases are not supported; use \"none\""),
        );
    }
    let r = key(&config, "r").and_then(Value::as_u64).filter(|&r| r > 0);
    let Some(r) = r else {
        return bad("r", "missing or not a positive integer");
    };
    let alpha = key(&config, "lora_alpha")
        .and_then(Value::as_f64)
        .unwrap_or(8.0);
    let rslora = key(&config, "use_rslora").and_then(Value::as_bool) == Some(true);
    let scale = if rslora {
        alpha / (r as f64).sqrt()
    } else {
        alpha / r as f64
    } as f32;

    let weights_path = dir.join("adapter_model.safetensors");
    if !weights_path.is_file() {
        return Err(Error::file(
            &weights_path,
            if dir.join("adapter_model.bin").is_file() {
                "is missing (the folder has the pickle form, adapter_model.bin): re-save the adapter with safe_serialization=True"
            } else {
                "is missing; a LoRA adapter folder has adapter_config.json and adapter_model.safetensors"
            },
        ));
    }
    let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)
        .map_err(|e| Error::file(&weights_path, format!("cannot read ({e})")))?;
    let mut out = Vec::new();
    for (name, a) in &tensors {
        let Some(module) = name
            .strip_suffix(".lora_A.weight")
            .or_else(|| name.strip_suffix(".lora_A.default.weight"))
        else {
            if !name.contains(".lora_B.") {
                return Err(Error::file(
                    &weights_path,
                    format!("holds `{name}`, which is not a LoRA A or B matrix; not supported"),
                ));
            }
            continue;
        };
        let b_name = name.replace(".lora_A.", ".lora_B.");
        let b = tensors.get(&b_name).ok_or_else(|| {
            Error::file(&weights_path, format!("has `{name}` but not `{b_name}`"))
        })?;
        let base = module.strip_prefix("base_model.model.").unwrap_or(module);
        if !TARGETS.iter().any(|t| base.ends_with(&format!(".{t}"))) {
            return Err(Error::file(
                &weights_path,
                format!(
                    "updates `{base}`; LoRA is supported on the q/k/v/o/gate/up/down projections"
                ),
            ));
        }
        let (ar, _) = a.dims2()?;
        let (_, br) = b.dims2()?;
        if ar != r as usize || br != r as usize {
            return Err(Error::file(
                &weights_path,
                format!("`{base}` has rank {ar}/{br}, but adapter_config.json says r = {r}"),
            ));
        }
        let flat = |t: &candle_core::Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        out.push((
            format!("{base}.weight"),
            LowRank {
                a: flat(a)?,
                b: flat(b)?,
                rank: r as usize,
                scale,
            },
        ));
    }
    if out.is_empty() {
        return Err(Error::file(&weights_path, "holds no LoRA matrices"));
    }
    tracing::info!(adapter = %dir.display(), r, alpha, rslora, matrices = out.len(), "LoRA adapter read");
    Ok(out)
}
