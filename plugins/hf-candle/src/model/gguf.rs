//! Single-file GGUF models, run quantized with `candle-transformers`' quantized architectures.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{self, Value};
use candle_transformers::models::{quantized_llama, quantized_qwen2, quantized_qwen3};
use native_llm::kernels::WeightKind;
use native_llm::model::{NATIVE_ARCHITECTURES, Transformer};
use native_llm::weights::{GgufDirectory, GgufTensor, GgufWeights, TensorFormat, map_file};

use crate::error::{Error, Result};

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

/// Which implementation runs a GGUF file.
pub enum GgufModel {
    /// Switchyard's own batched transformer with SIMD kernels (see [`native_llm`]).
    Native(Transformer),
    /// candle's quantized model (architectures or tensor formats the native model lacks).
    Candle(QuantModel),
}

/// A parsed GGUF file: its metadata plus the model.
pub struct LoadedGguf {
    /// The model.
    pub model: GgufModel,
    /// `general.architecture`.
    pub arch: String,
    /// Usable context window.
    pub context_length: usize,
    /// All metadata (tokenizer, chat template...).
    pub metadata: std::collections::HashMap<String, Value>,
}

fn fix_hint() -> &'static str {
    "re-download it (scripts/fetch-model.sh fetches the default model) and check its sha256"
}

/// Reads and loads a GGUF file, natively when `allow_native` and the file allows it, and
/// runs `side` on its metadata (the tokenizer build): on another thread while the native
/// model repacks its weights, so the two overlap.
pub fn load<R: Send>(
    path: &Path,
    device: &Device,
    allow_native: bool,
    side: impl FnOnce(&std::collections::HashMap<String, Value>) -> Result<R> + Send,
) -> Result<(LoadedGguf, R)> {
    // The header is parsed from the mapping: candle's reader asks for its position before
    // every string (a system call each through a `BufReader<File>`: ~100k of them for a
    // tokenizer's tokens and merges), which is free on an in-memory cursor.
    let map = map_file(path)?;
    let file_len = map.len() as u64;
    let mut reader = std::io::Cursor::new(&map[..]);
    let content = gguf_file::Content::read(&mut reader).map_err(|e| {
        Error::file(
            path,
            format!(
                "is not a readable GGUF file ({e}); the file is truncated or corrupt: {}",
                fix_hint()
            ),
        )
    })?;
    tracing::trace!(tensors = content.tensor_infos.len(), "GGUF header read");
    // Check every tensor lies inside the file before loading anything.
    for (name, info) in &content.tensor_infos {
        let elems = info.shape.elem_count();
        let block = info.ggml_dtype.block_size();
        let bytes = (elems / block.max(1) * info.ggml_dtype.type_size()) as u64;
        let end = content
            .tensor_data_offset
            .saturating_add(info.offset)
            .saturating_add(bytes);
        if end > file_len {
            return Err(Error::file(
                path,
                format!(
                    "is truncated: tensor `{name}` ends at byte {end} but the file has {file_len} bytes; {}",
                    fix_hint()
                ),
            ));
        }
    }
    let arch = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_else(|| "(none)".to_owned());
    let md_u32 = |key: &str| content.metadata.get(key).and_then(|v| v.to_u32().ok());
    let ctx = md_u32(&format!("{arch}.context_length")).unwrap_or(4096) as usize;
    if allow_native && device.is_cpu() && NATIVE_ARCHITECTURES.contains(&arch.as_str()) {
        let weights = GgufWeights::with_map(path, map.clone(), native_directory(&content))?;
        match weights.unsupported_tensor() {
            None => {
                let md = &content.metadata;
                let (model, extra) = std::thread::scope(|s| {
                    let h = s.spawn(move || side(md));
                    let model = Transformer::load(&weights, &arch);
                    (model, h.join())
                });
                let extra = extra.map_err(|_| {
                    Error::file(path, "reading its tokenizer metadata panicked".to_owned())
                })??;
                let model = model?;
                let context_length = model.hp.context_length;
                let loaded = LoadedGguf {
                    model: GgufModel::Native(model),
                    arch,
                    context_length,
                    metadata: content.metadata,
                };
                return Ok((loaded, extra));
            }
            Some((name, format)) => tracing::info!(
                tensor = %name,
                %format,
                "a tensor format the native kernels lack: running on candle's quantized model"
            ),
        }
    }
    let wrap = |e: candle_core::Error| {
        Error::file(
            path,
            format!("cannot load the `{arch}` model ({e}); {}", fix_hint()),
        )
    };
    // candle's models consume the file's content; the tokenizer still needs the metadata.
    let metadata = content.metadata.clone();
    let mut content = content;
    if arch == "qwen3" && !content.metadata.contains_key("general.dtype") {
        // candle's quantized Qwen3 builds its rotary tables in F16 unless `general.dtype` says
        // F32 (0); llama.cpp never writes that key, so say it here (rope in F32, as llama.cpp).
        content
            .metadata
            .insert("general.dtype".into(), Value::U32(0));
    }
    if arch == "gemma3" {
        // candle-transformers 0.11's quantized_gemma3 applies SiLU where Gemma 3 uses GELU:
        // never run it (wrong text is worse than an error).
        let why = if !device.is_cpu() {
            "runs on the CPU only (the native engine); set `cuda = false`".to_owned()
        } else if !allow_native {
            "needs the native engine; remove `engine = \"candle\"`".to_owned()
        } else {
            let w = GgufWeights::with_map(path, map.clone(), native_directory(&content))?;
            let (name, format) = w.unsupported_tensor().unwrap_or_default();
            format!(
                "has tensor `{name}` in {format}, which the native kernels do not run (they run F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K); re-quantize it, e.g. `llama-quantize in.gguf out.gguf Q4_K_M`"
            )
        };
        return Err(Error::file(path, format!("is a `gemma3` GGUF that {why}")));
    }
    let (candle, context_length) = match arch.as_str() {
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
    let extra = side(&metadata)?;
    let loaded = LoadedGguf {
        model: GgufModel::Candle(candle),
        arch,
        context_length,
        metadata,
    };
    Ok((loaded, extra))
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
            QuantModel::Qwen2(_, path) => match load(path, device, false, |_| Ok(()))?.0.model {
                GgufModel::Candle(fresh @ QuantModel::Qwen2(..)) => (fresh, false),
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

/// Reads a string metadata value.
pub fn md_str<'a>(md: &'a std::collections::HashMap<String, Value>, key: &str) -> Option<&'a str> {
    md.get(key)
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
}

/// The tensor directory and numeric metadata of `content` (read from a GGUF file), as the
/// native engine takes them.
pub fn native_directory(content: &gguf_file::Content) -> GgufDirectory {
    GgufDirectory {
        data_offset: content.tensor_data_offset,
        tensors: content
            .tensor_infos
            .iter()
            .map(|(n, t)| {
                let tensor = GgufTensor {
                    format: tensor_format(t.ggml_dtype),
                    dims: t.shape.dims().to_vec(),
                    offset: t.offset,
                };
                (n.clone(), tensor)
            })
            .collect(),
        numbers: content
            .metadata
            .iter()
            .filter_map(|(k, v)| number(v).map(|n| (k.clone(), n)))
            .collect(),
    }
}

/// The native engine's weights of the GGUF file at `path`, whose header is `content`.
pub fn native_weights(path: &Path, content: &gguf_file::Content) -> Result<GgufWeights> {
    Ok(GgufWeights::new(path, native_directory(content))?)
}

/// The GGUF formats the native kernels multiply, or `None`.
fn weight_kind(t: GgmlDType) -> Option<WeightKind> {
    Some(match t {
        GgmlDType::F32 => WeightKind::F32,
        GgmlDType::F16 => WeightKind::F16,
        GgmlDType::BF16 => WeightKind::BF16,
        GgmlDType::Q4_0 => WeightKind::Q4_0,
        GgmlDType::Q4_1 => WeightKind::Q4_1,
        GgmlDType::Q8_0 => WeightKind::Q8_0,
        GgmlDType::Q4K => WeightKind::Q4_K,
        GgmlDType::Q5K => WeightKind::Q5_K,
        GgmlDType::Q6K => WeightKind::Q6_K,
        _ => return None,
    })
}

/// How the native engine sees a GGML type: one its kernels multiply, `Q5_0` (transcoded to
/// `Q8_0` at load), or another, by name.
fn tensor_format(t: GgmlDType) -> TensorFormat {
    match weight_kind(t) {
        Some(kind) => TensorFormat::Kernel(kind),
        None if t == GgmlDType::Q5_0 => TensorFormat::Q5_0,
        None => TensorFormat::Other(format!("{t:?}")),
    }
}

/// A numeric metadata value (any integer or float type) as f64.
fn number(v: &Value) -> Option<f64> {
    Some(match v {
        Value::U8(v) => *v as f64,
        Value::I8(v) => *v as f64,
        Value::U16(v) => *v as f64,
        Value::I16(v) => *v as f64,
        Value::U32(v) => *v as f64,
        Value::I32(v) => *v as f64,
        Value::U64(v) => *v as f64,
        Value::I64(v) => *v as f64,
        Value::F32(v) => *v as f64,
        Value::F64(v) => *v,
        _ => return None,
    })
}
