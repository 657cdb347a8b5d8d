//! Single-file GGUF models, run quantized with `candle-transformers`' quantized architectures
//! (GGUF files the native engine cannot run; `load.rs` decides).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use candle_core::quantized::gguf_file::Value;
use candle_transformers::models::{quantized_llama, quantized_qwen2, quantized_qwen3};

use crate::error::{Error, Result};
use crate::gguf::{self, Header, fix_hint};

/// GGUF architectures (`general.architecture`) supported here.
pub const ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3", "gemma3"];

/// A quantized model with its own KV cache.
pub enum QuantModel {
    /// `llama` (also SmolLM2, Mistral-in-llama-format).
    Llama(quantized_llama::ModelWeights),
    /// `qwen2`. candle's quantized Qwen2 cannot be cloned, so a second instance is read from
    /// the file again (the path is kept for that).
    Qwen2(quantized_qwen2::ModelWeights, Arc<PathBuf>),
    /// `qwen3`.
    Qwen3(quantized_qwen3::ModelWeights),
}

impl QuantModel {
    /// Builds candle's model of architecture `arch` from the file at `path` (read into
    /// `header`), `ctx` being the context window its metadata declares. Returns the model and
    /// the usable context window (candle's llama caps it). Gemma 3 is refused by the caller.
    pub fn from_header(
        path: &Path,
        header: Header,
        device: &Device,
        arch: &str,
        ctx: usize,
    ) -> Result<(Self, usize)> {
        // candle seeks to each tensor from the start of the file.
        let mut reader = std::io::Cursor::new(&header.map[..]);
        let mut content = header.content;
        let wrap = |e: candle_core::Error| {
            Error::file(
                path,
                format!("cannot load the `{arch}` model ({e}); {}", fix_hint()),
            )
        };
        if arch == "qwen3" && !content.metadata.contains_key("general.dtype") {
            // candle's quantized Qwen3 builds its rotary tables in F16 unless `general.dtype` says
            // F32 (0); llama.cpp never writes that key, so say it here (rope in F32, as llama.cpp).
            content
                .metadata
                .insert("general.dtype".into(), Value::U32(0));
        }
        let (candle, context_length) = match arch {
            "llama" => (
                QuantModel::Llama(
                    quantized_llama::ModelWeights::from_gguf(content, &mut reader, device)
                        .map_err(wrap)?,
                ),
                // candle's quantized llama precomputes rotary tables for this many positions.
                ctx.min(quantized_llama::MAX_SEQ_LEN),
            ),
            "qwen2" => (
                QuantModel::Qwen2(
                    quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, device)
                        .map_err(wrap)?,
                    Arc::new(path.to_path_buf()),
                ),
                ctx,
            ),
            "qwen3" => (
                QuantModel::Qwen3(
                    quantized_qwen3::ModelWeights::from_gguf(content, &mut reader, device)
                        .map_err(wrap)?,
                ),
                ctx,
            ),
            other => {
                return Err(Error::UnsupportedArch {
                    arch: format!("{other} (GGUF {})", path.display()),
                    supported: ARCHITECTURES.join(", "),
                });
            }
        };
        if context_length < ctx {
            tracing::info!(
                arch,
                ctx,
                context_length,
                "context window capped by the candle model"
            );
        }
        Ok((candle, context_length))
    }

    /// Reads the model from the GGUF file at `path` again.
    fn read(path: &Path, device: &Device) -> Result<(Self, usize)> {
        let header = gguf::read_header(path)?;
        let arch = gguf::architecture(&header.content);
        let ctx = gguf::context_length(&header.content, &arch);
        Self::from_header(path, header, device, &arch, ctx)
    }
}

impl std::fmt::Debug for QuantModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            QuantModel::Llama(_) => "llama",
            QuantModel::Qwen2(..) => "qwen2",
            QuantModel::Qwen3(_) => "qwen3",
        };
        write!(f, "QuantModel({name})")
    }
}

impl QuantModel {
    /// A second instance sharing the weights; `true` when it also kept the KV cache
    /// (a reloaded Qwen2 starts empty).
    pub fn try_clone(&self, device: &Device) -> Result<(Self, bool)> {
        Ok(match self {
            QuantModel::Llama(m) => (QuantModel::Llama(m.clone()), true),
            QuantModel::Qwen3(m) => (QuantModel::Qwen3(m.clone()), true),
            QuantModel::Qwen2(_, path) => match Self::read(path, device)?.0 {
                fresh @ QuantModel::Qwen2(..) => (fresh, false),
                _ => {
                    return Err(Error::file(
                        path.as_path(),
                        "changed architecture while loaded",
                    ));
                }
            },
        })
    }

    /// Runs `ids` at position `pos` and returns the last position's logits.
    pub fn forward_last(&mut self, ids: &[u32], pos: usize, dev: &Device) -> Result<Vec<f32>> {
        let x = candle_core::Tensor::new(ids, dev)?.unsqueeze(0)?;
        let out = match self {
            QuantModel::Llama(m) => m.forward(&x, pos)?,
            QuantModel::Qwen2(m, _) => m.forward(&x, pos)?,
            QuantModel::Qwen3(m) => m.forward(&x, pos)?,
        };
        Ok(out
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?)
    }

    /// Forgets the KV cache.
    pub fn reset(&mut self) {
        match self {
            QuantModel::Llama(m) => m.clear_kv_cache(),
            QuantModel::Qwen2(m, _) => m.clear_kv_cache(),
            QuantModel::Qwen3(m) => m.clear_kv_cache(),
        }
    }
}
