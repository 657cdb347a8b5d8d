//! Weights of a GGUF file, memory-mapped: each matrix is a view into the mapped file, so
//! loading copies nothing and the page cache is shared between processes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{Content, Value};
use memmap2::Mmap;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::{self, WeightKind};

enum Bytes {
    /// A range of the mapped file.
    Mapped { map: Arc<Mmap>, start: usize },
    /// Converted in memory.
    Owned(Vec<u8>),
    /// Repacked into anonymous memory (huge pages where the kernel grants them).
    Anon(memmap2::MmapMut),
}

/// A 2-D weight matrix: rows in GGUF block layout (mapped from the file), or, for quantized
/// matrices, groups of 8 rows interleaved for the 8-row kernels ([`kernels::interleave8`]).
#[derive(Clone)]
pub struct Matrix {
    /// Storage format.
    pub kind: WeightKind,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    data: Arc<Bytes>,
    row_bytes: usize,
    /// Stored as interleaved groups of [`kernels::GROUP`] rows.
    pub interleaved: bool,
}

impl Matrix {
    fn all(&self) -> &[u8] {
        match &*self.data {
            Bytes::Mapped { map, start } => &map[*start..*start + self.rows * self.row_bytes],
            Bytes::Owned(v) => v,
            Bytes::Anon(m) => m,
        }
    }

    /// The bytes of row `r` (row layout only).
    #[inline]
    pub fn row(&self, r: usize) -> &[u8] {
        debug_assert!(!self.interleaved);
        &self.all()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// The bytes of rows `r..r + n` (row layout only).
    #[inline]
    pub fn rows(&self, r: usize, n: usize) -> &[u8] {
        debug_assert!(!self.interleaved);
        &self.all()[r * self.row_bytes..(r + n) * self.row_bytes]
    }

    /// The bytes of interleaved group `g` (rows `8g..8g + 8`).
    #[inline]
    pub fn group(&self, g: usize) -> &[u8] {
        let gb = self.row_bytes * kernels::GROUP;
        &self.all()[g * gb..(g + 1) * gb]
    }

    /// Row `r` as f32 (embedding lookups), whatever the layout.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        if self.interleaved {
            let g = self.group(r / kernels::GROUP);
            let row = kernels::deinterleave_row(self.kind, g, r % kernels::GROUP, self.cols);
            kernels::dequantize_row(self.kind, &row, out);
        } else {
            kernels::dequantize_row(self.kind, self.row(r), out);
        }
    }

    /// Bytes the matrix occupies.
    pub fn bytes(&self) -> usize {
        self.rows * self.row_bytes
    }

    /// This matrix repacked for the 8-row kernels when it is quantized and its row count
    /// allows; otherwise itself.
    pub fn for_kernels(self) -> Matrix {
        if !self.kind.interleaves() || !self.rows.is_multiple_of(kernels::GROUP) || self.interleaved
        {
            return self;
        }
        let gb = self.row_bytes * kernels::GROUP;
        let src = self.all();
        // In parallel (loading runs inside the engine's thread pool): repacking is most of
        // the load time.
        let fill = |packed: &mut [u8]| {
            packed
                .par_chunks_mut(gb)
                .zip(src.par_chunks_exact(gb))
                .for_each(|(out, g)| kernels::interleave8_into(self.kind, g, self.cols, out));
        };
        // Anonymous memory asking for transparent huge pages: 2 MiB page faults while
        // repacking, fewer TLB misses while streaming the weights. A Vec if mapping fails.
        let data = match memmap2::MmapMut::map_anon(src.len()) {
            Ok(mut m) => {
                #[cfg(unix)]
                let _ = m.advise(memmap2::Advice::HugePage);
                fill(&mut m);
                Bytes::Anon(m)
            }
            Err(_) => {
                let mut v = vec![0u8; src.len()];
                fill(&mut v);
                Bytes::Owned(v)
            }
        };
        if let Bytes::Mapped { map, start } = &*self.data {
            release(map, *start, src.len());
        }
        Matrix {
            data: Arc::new(data),
            interleaved: true,
            ..self
        }
    }
}

/// Drops the process's pages of a range of the mapped file that has been copied (repacked or
/// transcoded) and is never read again, so the model is not resident twice. The file stays
/// in the page cache; a page shared with a neighbouring tensor is simply read again on use.
fn release(map: &Mmap, start: usize, len: usize) {
    #[cfg(unix)]
    // SAFETY: the mapping is read-only and file-backed, so MADV_DONTNEED only drops this
    // process's page table entries: a later access re-reads the same bytes from the file. It
    // cannot change any byte another reference sees.
    let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
    #[cfg(not(unix))]
    let _ = (map, start, len);
}

impl Matrix {
    /// A matrix owning `data` (row-major rows of `kind`).
    pub fn owned(kind: WeightKind, rows: usize, cols: usize, data: Vec<u8>) -> Matrix {
        debug_assert_eq!(data.len(), kind.row_bytes(cols) * rows);
        Matrix {
            kind,
            rows,
            cols,
            data: Arc::new(Bytes::Owned(data)),
            row_bytes: kind.row_bytes(cols),
            interleaved: false,
        }
    }
}

impl std::fmt::Debug for Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Matrix({} {}x{})",
            self.kind.name(),
            self.rows,
            self.cols
        )
    }
}

/// The GGUF formats the native kernels multiply, or `None`.
pub fn weight_kind(t: GgmlDType) -> Option<WeightKind> {
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

/// Whether the native model runs tensors of format `t` (directly, or `Q5_0` transcoded to
/// `Q8_0` at load).
pub fn native_format(t: GgmlDType) -> bool {
    t == GgmlDType::Q5_0 || weight_kind(t).is_some()
}

/// Where a tensor lies in the file.
struct Tensor {
    ggml_dtype: GgmlDType,
    dims: Vec<usize>,
    offset: u64,
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

/// A parsed, mapped GGUF file.
pub struct GgufWeights {
    map: Arc<Mmap>,
    data_offset: usize,
    tensors: HashMap<String, Tensor>,
    /// The numeric metadata (hyper-parameters), as f64.
    numbers: HashMap<String, f64>,
    path: std::path::PathBuf,
}

impl GgufWeights {
    /// Maps `path` and takes the tensor directory from `content` (already read from it).
    pub fn new(path: &Path, content: &Content) -> Result<Self> {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::file(path, format!("cannot open ({e})")))?;
        // SAFETY: the file is mapped read-only; like every mmap-based loader (llama.cpp,
        // safetensors) this assumes nobody truncates the model file while it is loaded.
        // Populated up front: every byte is read by the repacking right after.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }
            .map_err(|e| Error::file(path, format!("cannot be memory-mapped ({e})")))?;
        Ok(Self {
            map: Arc::new(map),
            data_offset: content.tensor_data_offset as usize,
            tensors: content
                .tensor_infos
                .iter()
                .map(|(n, t)| {
                    let tensor = Tensor {
                        ggml_dtype: t.ggml_dtype,
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
            path: path.to_path_buf(),
        })
    }

    /// Whether a tensor exists.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The first tensor format the native kernels cannot run, if any (`(name, format)`).
    pub fn unsupported_tensor(&self) -> Option<(String, String)> {
        let mut names: Vec<&String> = self.tensors.keys().collect();
        names.sort();
        names.into_iter().find_map(|n| {
            let t = self.tensors[n].ggml_dtype;
            (!native_format(t)).then(|| (n.clone(), format!("{t:?}")))
        })
    }

    fn info(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| {
            Error::file(
                &self.path,
                format!("has no tensor `{name}`; the file is incomplete or not a supported model"),
            )
        })
    }

    /// A 2-D matrix `[rows, cols]`.
    pub fn matrix(&self, name: &str) -> Result<Matrix> {
        let info = self.info(name)?;
        let dims = &info.dims;
        let (rows, cols) = match dims[..] {
            [r, c] => (r, c),
            [c] => (1, c),
            _ => {
                return Err(Error::file(
                    &self.path,
                    format!("tensor `{name}` has shape {dims:?}, expected a matrix"),
                ));
            }
        };
        if info.ggml_dtype == GgmlDType::Q5_0 {
            return self.q5_0_matrix(name, info, rows, cols);
        }
        let kind = weight_kind(info.ggml_dtype).ok_or_else(|| {
            Error::file(
                &self.path,
                format!(
                    "tensor `{name}` is {:?}, which the native kernels do not run",
                    info.ggml_dtype
                ),
            )
        })?;
        if cols % kind.block_elems() != 0 {
            return Err(Error::file(
                &self.path,
                format!(
                    "tensor `{name}`: {cols} columns is not a multiple of the {}-value block",
                    kind.block_elems()
                ),
            ));
        }
        let row_bytes = kind.row_bytes(cols);
        let start = self.data_offset + info.offset as usize;
        if start + rows * row_bytes > self.map.len() {
            return Err(Error::file(
                &self.path,
                format!("is truncated: tensor `{name}` runs past the end of the file"),
            ));
        }
        Ok(Matrix {
            kind,
            rows,
            cols,
            data: Arc::new(Bytes::Mapped {
                map: Arc::clone(&self.map),
                start,
            }),
            row_bytes,
            interleaved: false,
        })
    }

    /// A `Q5_0` tensor, rewritten as `Q8_0` (same values; see [`kernels::kquants::q5_0_to_q8_0`]).
    fn q5_0_matrix(&self, name: &str, info: &Tensor, rows: usize, cols: usize) -> Result<Matrix> {
        if !cols.is_multiple_of(kernels::QK) {
            return Err(Error::file(
                &self.path,
                format!("tensor `{name}`: {cols} columns is not a multiple of the 32-value block"),
            ));
        }
        let bytes = rows * cols / kernels::QK * kernels::kquants::Q5_0_BLOCK_BYTES;
        let start = self.data_offset + info.offset as usize;
        let src = self.map.get(start..start + bytes).ok_or_else(|| {
            Error::file(
                &self.path,
                format!("is truncated: tensor `{name}` runs past the end of the file"),
            )
        })?;
        let data = kernels::kquants::q5_0_to_q8_0(src);
        release(&self.map, start, bytes);
        Ok(Matrix::owned(WeightKind::Q8_0, rows, cols, data))
    }

    /// A 1-D tensor as f32 (norm weights, biases).
    pub fn vector(&self, name: &str) -> Result<Vec<f32>> {
        let m = self.matrix(name)?;
        let n = m.rows * m.cols;
        let mut out = vec![0f32; n];
        for r in 0..m.rows {
            m.dequantize_row(r, &mut out[r * m.cols..(r + 1) * m.cols]);
        }
        Ok(out)
    }

    /// A 1-D tensor when present.
    pub fn opt_vector(&self, name: &str) -> Result<Option<Vec<f32>>> {
        if self.has(name) {
            self.vector(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A metadata number (any integer or float type) as f64.
    pub fn md_num(&self, key: &str) -> Option<f64> {
        self.numbers.get(key).copied()
    }

    /// A required metadata number.
    pub fn md_req(&self, key: &str) -> Result<f64> {
        self.md_num(key).ok_or_else(|| {
            Error::file(
                &self.path,
                format!("has no metadata `{key}`; the file is incomplete or was written by an unsupported converter"),
            )
        })
    }
}

/// The safetensors files of a Hugging Face folder, read through candle's mapped reader and
/// copied into memory in the weight format asked for.
pub(crate) struct SafeTensors {
    files: Vec<(
        std::path::PathBuf,
        candle_core::safetensors::MmapedSafetensors,
    )>,
}

impl SafeTensors {
    pub(crate) fn open(files: &[std::path::PathBuf]) -> Result<Self> {
        let mut out = Vec::new();
        for f in files {
            // SAFETY: read-only mapping of a model file (see `GgufWeights::new`).
            let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(f) }.map_err(|e| {
                Error::file(f, format!("is not a valid safetensors file ({e}); the header is corrupt or the file is truncated: re-download or re-export the model"))
            })?;
            out.push((f.clone(), st));
        }
        Ok(Self { files: out })
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.files.iter().any(|(_, st)| st.get(name).is_ok())
    }

    /// `(dims, values as f32)` of a tensor.
    fn floats(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        for (path, st) in &self.files {
            let Ok(view) = st.get(name) else { continue };
            let data = view.data();
            let vals: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                safetensors::Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                safetensors::Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                other => {
                    return Err(Error::file(
                        path,
                        format!(
                            "tensor `{name}` is {other:?}; only F32, BF16 and F16 weights are supported"
                        ),
                    ));
                }
            };
            return Ok((view.shape().to_vec(), vals));
        }
        Err(Error::Unsupported(format!(
            "the safetensors files have no tensor `{name}`; the weights do not match config.json"
        )))
    }

    pub(crate) fn vector(&self, name: &str) -> Result<Vec<f32>> {
        Ok(self.floats(name)?.1)
    }

    pub(crate) fn matrix(&self, name: &str, kind: WeightKind) -> Result<Matrix> {
        let (dims, vals) = self.floats(name)?;
        let [rows, cols] = dims[..] else {
            return Err(Error::Unsupported(format!(
                "tensor `{name}` has shape {dims:?}, expected a matrix"
            )));
        };
        let mut bytes = Vec::with_capacity(kind.row_bytes(cols) * rows);
        match kind {
            WeightKind::F32 => vals.iter().for_each(|v| bytes.extend(v.to_le_bytes())),
            WeightKind::BF16 => vals
                .iter()
                .for_each(|v| bytes.extend(half::bf16::from_f32(*v).to_le_bytes())),
            WeightKind::F16 => vals
                .iter()
                .for_each(|v| bytes.extend(half::f16::from_f32(*v).to_le_bytes())),
            _ => {
                return Err(Error::Unsupported(format!(
                    "safetensors weights run as F32, BF16 or F16, not {}",
                    kind.name()
                )));
            }
        }
        Ok(Matrix::owned(kind, rows, cols, bytes))
    }
}
