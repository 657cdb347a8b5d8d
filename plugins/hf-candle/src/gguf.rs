//! A GGUF file as the plugin reads it: the header parsed with candle's reader from a memory
//! mapping and checked against the file size ([`read_header`]), metadata lookups, and the
//! tensor directory handed to the native engine ([`native_directory`]). Which engine runs the
//! file is decided in `load.rs`; candle's models are built in [`crate::candle::gguf`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{self, Value};
use native_llm::kernels::WeightKind;
use native_llm::weights::{GgufDirectory, GgufTensor, GgufWeights, Mmap, TensorFormat, map_file};

use crate::error::{Error, Result};

/// How to fix a damaged model file (the end of every message about one).
pub fn fix_hint() -> &'static str {
    "re-download it (scripts/fetch-model.sh fetches the default model) and check its sha256"
}

/// A GGUF file's header and the mapping it was read from.
pub struct Header {
    /// The whole file, mapped read-only (the native engine's weights are views into it).
    pub map: Arc<Mmap>,
    /// The parsed header: metadata and tensor directory.
    pub content: gguf_file::Content,
}

/// Maps the GGUF file at `path` and reads its header, checking that every tensor lies inside
/// the file before anything is loaded.
pub fn read_header(path: &Path) -> Result<Header> {
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
    Ok(Header { map, content })
}

/// `general.architecture`, or `(none)`.
pub fn architecture(content: &gguf_file::Content) -> String {
    content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_else(|| "(none)".to_owned())
}

/// The context window the metadata declares for `arch` (4096 when it says nothing).
pub fn context_length(content: &gguf_file::Content, arch: &str) -> usize {
    let md_u32 = |key: &str| content.metadata.get(key).and_then(|v| v.to_u32().ok());
    md_u32(&format!("{arch}.context_length")).unwrap_or(4096) as usize
}

/// Reads a string metadata value.
pub fn md_str<'a>(md: &'a HashMap<String, Value>, key: &str) -> Option<&'a str> {
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
        GgmlDType::Q5_0 => WeightKind::Q5_0,
        GgmlDType::Q5_1 => WeightKind::Q5_1,
        GgmlDType::Q8_0 => WeightKind::Q8_0,
        GgmlDType::Q4K => WeightKind::Q4_K,
        GgmlDType::Q5K => WeightKind::Q5_K,
        GgmlDType::Q6K => WeightKind::Q6_K,
        _ => return None,
    })
}

/// How the native engine sees a GGML type: one its kernels multiply, or another, by name.
fn tensor_format(t: GgmlDType) -> TensorFormat {
    match weight_kind(t) {
        Some(kind) => TensorFormat::Kernel(kind),
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
