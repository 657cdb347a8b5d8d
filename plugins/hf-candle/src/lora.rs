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
    // On a float folder the always-on adapters were merged; a GGUF base applies them here.
    let base_is_gguf = !merged;
    if base_is_gguf {
        for path in always_on {
            let (updates, layout) = read_any(path, base_is_gguf)?;
            let i = model.attach_adapter(&path.display().to_string(), &updates, layout)?;
            model.set_always_on(i);
        }
    }
    for (name, path) in named {
        let (updates, layout) = read_any(path, base_is_gguf)?;
        model.attach_adapter(name, &updates, layout)?;
        tracing::info!(adapter = %name, path = %path.display(), "named LoRA adapter attached");
    }
    Ok(named.keys().cloned().collect())
}

/// The attached adapter a request names (`[model.lora_modules]`), by index; `None` for the
/// base model.
pub(crate) fn index(model: Option<&Transformer>, name: Option<&str>) -> Result<Option<usize>> {
    let Some(name) = name else {
        return Ok(None);
    };
    model
        .and_then(|m| m.adapter_index(name))
        .map(Some)
        .ok_or_else(|| {
            Error::InvalidRequest(format!(
                "the LoRA adapter `{name}` is not loaded; name one of [model.lora_modules]"
            ))
        })
}

/// One adapter for run-time use: a PEFT folder, or a llama.cpp GGUF LoRA file (GGUF bases only).
fn read_any(path: &Path, base_is_gguf: bool) -> Result<(LowRankUpdates, AdapterLayout)> {
    if !path.is_file() {
        return Ok((read(&[path.to_path_buf()])?, AdapterLayout::HuggingFace));
    }
    if !base_is_gguf {
        return Err(Error::file(
            path,
            "is a file: on a Hugging Face base an adapter is a PEFT folder (adapter_config.json + adapter_model.safetensors); GGUF LoRA files go with GGUF bases",
        ));
    }
    let mut updates = LowRankUpdates::new();
    for (name, update) in read_gguf(path)? {
        updates.entry(name).or_default().push(update);
    }
    Ok((updates, AdapterLayout::Gguf))
}

/// A llama.cpp LoRA file (what its `convert_lora_to_gguf.py` writes): `general.type =
/// "adapter"`, `adapter.type = "lora"`, `adapter.lora.alpha`, and `<weight>.lora_a` /
/// `<weight>.lora_b` pairs; each pair scales by `alpha / rank` (1 when alpha is 0), as
/// llama.cpp applies it at scale 1.
fn read_gguf(path: &Path) -> Result<Vec<(String, LowRank)>> {
    let header = crate::gguf::read_header(path)?;
    let md = &header.content.metadata;
    let text = |k: &str| crate::gguf::md_str(md, k).map(str::to_owned);
    if text("general.type").as_deref() != Some("adapter")
        || text("adapter.type").as_deref() != Some("lora")
    {
        return Err(Error::file(
            path,
            "is not a LoRA adapter GGUF (general.type = \"adapter\", adapter.type = \"lora\"); give a PEFT folder or a file from llama.cpp's convert_lora_to_gguf.py",
        ));
    }
    let alpha = md
        .get("adapter.lora.alpha")
        .and_then(|v| v.to_f32().ok())
        .unwrap_or(0.0);
    let mut cursor = std::io::Cursor::new(&header.map[..]);
    let mut tensor = |name: &str| -> Result<candle_core::Tensor> {
        let q = header
            .content
            .tensor(&mut cursor, name, &Device::Cpu)
            .map_err(|e| Error::file(path, format!("cannot read `{name}` ({e})")))?;
        Ok(q.dequantize(&Device::Cpu)?)
    };
    let mut out = Vec::new();
    let mut names: Vec<&String> = header.content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let Some(base) = name.strip_suffix(".lora_a") else {
            if !name.ends_with(".lora_b") {
                return Err(Error::file(
                    path,
                    format!("holds `{name}`, which is not a LoRA A or B matrix; not supported"),
                ));
            }
            continue;
        };
        let b_name = format!("{base}.lora_b");
        if !header.content.tensor_infos.contains_key(&b_name) {
            return Err(Error::file(
                path,
                format!("has `{name}` but not `{b_name}`"),
            ));
        }
        let (a, b) = (tensor(name)?, tensor(&b_name)?);
        let (rank, _) = a.dims2()?;
        let (_, b_rank) = b.dims2()?;
        if rank == 0 || b_rank != rank {
            return Err(Error::file(
                path,
                format!("`{base}`: lora_a has rank {rank} and lora_b {b_rank}"),
            ));
        }
        let flat = |t: &candle_core::Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        out.push((
            base.to_owned(),
            LowRank {
                a: flat(&a)?,
                b: flat(&b)?,
                rank,
                scale: if alpha == 0.0 {
                    1.0
                } else {
                    alpha / rank as f32
                },
            },
        ));
    }
    if out.is_empty() {
        return Err(Error::file(path, "holds no LoRA matrices"));
    }
    tracing::info!(adapter = %path.display(), alpha, matrices = out.len(), "GGUF LoRA adapter read");
    Ok(out)
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
