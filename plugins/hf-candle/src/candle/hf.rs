//! Hugging Face model folders: `config.json` plus `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), memory-mapped; optional reward heads.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::ScoreHead;
use super::dense::{DenseModel, FAMILIES, Family};
use crate::config::HfConfig;
use crate::error::{Error, Result};

/// A loaded safetensors model.
pub struct LoadedHf {
    /// The decoder.
    pub model: DenseModel,
    /// The reward head, for reward models.
    pub head: Option<ScoreHead>,
    /// Its config.
    pub config: HfConfig,
}

/// The safetensors files of a folder, in shard order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index)
            .map_err(|e| Error::file(&index, format!("cannot read ({e})")))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Error::file(
                &index,
                format!("is not valid JSON ({e}); re-download the model"),
            )
        })?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                Error::file(&index, "has no `weight_map` object; re-download the model")
            })?;
        let mut files: Vec<PathBuf> = Vec::new();
        for f in map.values().filter_map(|f| f.as_str()) {
            let p = dir.join(f);
            if !files.contains(&p) {
                files.push(p);
            }
        }
        for f in &files {
            if !f.is_file() {
                return Err(Error::file(
                    f,
                    "is listed in model.safetensors.index.json but missing; re-download the model",
                ));
            }
        }
        return Ok(files);
    }
    Err(Error::file(
        dir,
        "has no model.safetensors or model.safetensors.index.json; point [model] path at a Hugging Face model folder or a .gguf file",
    ))
}

/// Loads the decoder (and reward head) of a folder.
pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<LoadedHf> {
    let config = HfConfig::load(&dir.join("config.json"))?;
    let arch = config.architecture();
    let family = Family::from_arch(&arch).ok_or_else(|| Error::UnsupportedArch {
        arch: arch.clone(),
        supported: FAMILIES
            .iter()
            .map(|f| format!("{f}ForCausalLM"))
            .chain(["LlamaForSequenceClassification (and the other families')".to_owned()])
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let is_causal = arch.ends_with("ForCausalLM") || !arch.contains("For");
    let is_seqcls = arch.ends_with("ForSequenceClassification");
    if !is_causal && !is_seqcls {
        return Err(Error::UnsupportedArch {
            arch,
            supported: "<Family>ForCausalLM, <Family>ForSequenceClassification".into(),
        });
    }
    let files = weight_files(dir)?;
    for f in &files {
        // SAFETY: the file is memory-mapped read-only; like every mmap-based loader we rely on
        // the model file not being modified while the engine runs.
        unsafe { candle_core::safetensors::MmapedSafetensors::new(f) }.map_err(|e| {
            Error::file(
                f,
                format!("is not a valid safetensors file ({e}); the header is corrupt or the file is truncated: re-download or re-export the model"),
            )
        })?;
    }
    // SAFETY: as above — read-only mappings of files validated just now.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }
        .map_err(|e| Error::file(dir, format!("cannot map the weights ({e})")))?;
    let wrap = |e: Error| match e {
        Error::Candle(c) => Error::file(
            dir,
            format!("weights do not match config.json ({c}); re-export the model"),
        ),
        other => other,
    };
    let model = DenseModel::load(&config, family, vb.clone(), is_causal).map_err(wrap)?;
    let hidden = config.hidden_size;
    let head = if is_seqcls {
        let labels = config.labels();
        if labels != 1 {
            return Err(Error::Unsupported(format!(
                "{arch} has {labels} labels; reward scores need num_labels = 1"
            )));
        }
        let w = vb.get((1, hidden), "score.weight").map_err(|e| {
            Error::file(
                dir,
                format!("sequence-classification model without `score.weight` ({e})"),
            )
        })?;
        Some(ScoreHead::SequenceClassification(w.to_dtype(DType::F32)?))
    } else {
        let vh = dir.join("value_head.safetensors");
        if vh.is_file() {
            let t = candle_core::safetensors::load(&vh, device).map_err(|e| {
                Error::file(
                    &vh,
                    format!("is not a valid safetensors file ({e}); re-export the value head"),
                )
            })?;
            let get = |name: &str| -> Result<Tensor> {
                t.get(name).cloned().ok_or_else(|| {
                    Error::file(&vh, format!("has no `{name}`; expected LLaMA-Factory's v_head.summary.weight and .bias"))
                })
            };
            let w = get("v_head.summary.weight")?
                .to_dtype(DType::F32)?
                .reshape((1, hidden))?;
            let b = get("v_head.summary.bias")?
                .to_dtype(DType::F32)?
                .reshape(1)?;
            Some(ScoreHead::ValueHead(w, b))
        } else {
            None
        }
    };
    Ok(LoadedHf {
        model,
        head,
        config,
    })
}
