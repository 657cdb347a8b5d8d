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
use native_llm::kernels::{self, WeightKind};

enum Bytes {
    /// A range of the mapped file.
    Mapped { map: Arc<Mmap>, start: usize },
    /// Converted in memory.
    Owned(Vec<u8>),
    /// Repacked into anonymous memory (huge pages where the kernel grants them).
    Anon(memmap2::MmapMut),
}

/// A 2-D weight matrix: rows in GGUF block layout (mapped from the file), or groups of rows
/// interleaved for the multi-row kernels ([`kernels::interleave`]: 8 rows of `Q4_0`, `Q4_1`,
/// `Q8_0`; 4 float rows).
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
    /// Stored as interleaved groups of `kind.group_rows(cols)` rows.
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

    /// The bytes of rows `r..r + n`: those rows in row layout, or, interleaved, the groups
    /// that hold them (`r` and `n` multiples of the group size).
    #[inline]
    pub fn rows(&self, r: usize, n: usize) -> &[u8] {
        debug_assert!(
            !self.interleaved
                || (r.is_multiple_of(self.group_rows()) && n.is_multiple_of(self.group_rows()))
        );
        &self.all()[r * self.row_bytes..(r + n) * self.row_bytes]
    }

    /// Rows per interleaved group.
    fn group_rows(&self) -> usize {
        self.kind.group_rows(self.cols).unwrap_or(1)
    }

    /// The bytes of interleaved group `g`.
    #[inline]
    pub fn group(&self, g: usize) -> &[u8] {
        let gb = self.row_bytes * self.group_rows();
        &self.all()[g * gb..(g + 1) * gb]
    }

    /// Row `r` as f32 (embedding lookups), whatever the layout.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        if self.interleaved {
            let n = self.group_rows();
            let row = kernels::deinterleave_row(self.kind, self.group(r / n), r % n, self.cols);
            kernels::dequantize_row(self.kind, &row, out);
        } else {
            kernels::dequantize_row(self.kind, self.row(r), out);
        }
    }

    /// Bytes the matrix occupies.
    pub fn bytes(&self) -> usize {
        self.rows * self.row_bytes
    }

    /// This matrix repacked for the multi-row kernels when its format and shape allow;
    /// otherwise itself.
    pub fn for_kernels(self) -> Matrix {
        let Some(n) = self.kind.group_rows(self.cols) else {
            return self;
        };
        if !self.rows.is_multiple_of(n) || self.interleaved {
            return self;
        }
        let gb = self.row_bytes * n;
        let src = self.all();
        // In parallel (loading runs inside the engine's thread pool): repacking is most of
        // the load time.
        let fill = |packed: &mut [u8]| {
            packed
                .par_chunks_mut(gb)
                .zip(src.par_chunks_exact(gb))
                .for_each(|(out, g)| kernels::interleave_into(self.kind, g, self.cols, out));
        };
        let data = anon_filled(src.len(), fill);
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

/// `len` bytes of anonymous memory asking for transparent huge pages (2 MiB page faults
/// while filling, fewer TLB misses while streaming the weights), filled by `fill`; a `Vec`
/// if mapping fails.
fn anon_filled(len: usize, fill: impl FnOnce(&mut [u8])) -> Bytes {
    match memmap2::MmapMut::map_anon(len) {
        Ok(mut m) => {
            #[cfg(unix)]
            let _ = m.advise(memmap2::Advice::HugePage);
            fill(&mut m);
            Bytes::Anon(m)
        }
        Err(_) => {
            let mut v = vec![0u8; len];
            fill(&mut v);
            Bytes::Owned(v)
        }
    }
}

/// The model file at `path`, mapped read-only and populated up front (every byte is read by
/// the header parse or the repacking right after).
pub fn map_file(path: &Path) -> Result<Arc<Mmap>> {
    let file =
        std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot open ({e})")))?;
    // SAFETY: the file is mapped read-only; like every mmap-based loader (llama.cpp,
    // safetensors) this assumes nobody truncates the model file while it is loaded.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }
        .map_err(|e| Error::file(path, format!("cannot be memory-mapped ({e})")))?;
    Ok(Arc::new(map))
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
        Self::with_map(path, map_file(path)?, content)
    }

    /// The tensors of `content` in `map`, a mapping of the file at `path` ([`map_file`]).
    pub fn with_map(path: &Path, map: Arc<Mmap>, content: &Content) -> Result<Self> {
        Ok(Self {
            map,
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

/// One tensor of a safetensors file: its format, shape and byte range in the mapping.
struct SafeTensor {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// One mapped safetensors file with its tensor directory.
struct SafeFile {
    path: std::path::PathBuf,
    map: Arc<Mmap>,
    tensors: HashMap<String, SafeTensor>,
}

/// The safetensors files of a Hugging Face folder, memory-mapped. Each matrix is written once
/// into anonymous memory in the weight format asked for (converted if the file stores
/// another) and the file's pages of it are released, so the weights are resident once:
/// peak memory is the weights in the asked format, not the file plus a copy.
pub(crate) struct SafeTensors {
    files: Vec<SafeFile>,
}

impl SafeTensors {
    pub(crate) fn open(files: &[std::path::PathBuf]) -> Result<Self> {
        let mut out = Vec::new();
        for path in files {
            let file = std::fs::File::open(path)
                .map_err(|e| Error::file(path, format!("cannot open ({e})")))?;
            // SAFETY: read-only mapping of a model file (see `map_file`). Not
            // populated: each tensor is read once, in order, while it is copied.
            let map = unsafe { memmap2::MmapOptions::new().map(&file) }
                .map_err(|e| Error::file(path, format!("cannot be memory-mapped ({e})")))?;
            let (header, meta) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| {
                Error::file(path, format!("is not a valid safetensors file ({e}); the header is corrupt or the file is truncated: re-download or re-export the model"))
            })?;
            // `read_metadata` checked that every tensor lies inside the file.
            let data = 8 + header;
            let tensors = meta
                .tensors()
                .into_iter()
                .map(|(name, t)| {
                    let tensor = SafeTensor {
                        dtype: t.dtype,
                        shape: t.shape.clone(),
                        start: data + t.data_offsets.0,
                        end: data + t.data_offsets.1,
                    };
                    (name, tensor)
                })
                .collect();
            out.push(SafeFile {
                path: path.clone(),
                map: Arc::new(map),
                tensors,
            });
        }
        Ok(Self { files: out })
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.files.iter().any(|f| f.tensors.contains_key(name))
    }

    /// The file holding tensor `name`, and the tensor, checked to be a float format.
    fn find(&self, name: &str) -> Result<(&SafeFile, &SafeTensor)> {
        let Some((file, t)) = self
            .files
            .iter()
            .find_map(|f| f.tensors.get(name).map(|t| (f, t)))
        else {
            return Err(Error::Unsupported(format!(
                "the safetensors files have no tensor `{name}`; the weights do not match config.json"
            )));
        };
        if float_width(t.dtype).is_none() {
            return Err(Error::file(
                &file.path,
                format!(
                    "tensor `{name}` is {:?}; only F32, BF16 and F16 weights are supported",
                    t.dtype
                ),
            ));
        }
        Ok((file, t))
    }

    /// A 1-D tensor as f32 (norm weights, biases).
    pub(crate) fn vector(&self, name: &str) -> Result<Vec<f32>> {
        let (file, t) = self.find(name)?;
        let src = &file.map[t.start..t.end];
        let width = float_width(t.dtype).unwrap_or(4);
        Ok(src
            .chunks_exact(width)
            .map(|v| decode(v, t.dtype))
            .collect())
    }

    /// A 2-D tensor `[rows, cols]` stored as `kind` (F32/BF16/F16), in anonymous memory
    /// (transparent huge pages where granted), interleaved for the 4-row kernels when its
    /// shape allows ([`kernels::interleave`]); the file's pages of it are released.
    pub(crate) fn matrix(&self, name: &str, kind: WeightKind) -> Result<Matrix> {
        let (file, t) = self.find(name)?;
        let [rows, cols] = t.shape[..] else {
            return Err(Error::Unsupported(format!(
                "tensor `{name}` has shape {:?}, expected a matrix",
                t.shape
            )));
        };
        if !matches!(kind, WeightKind::F32 | WeightKind::BF16 | WeightKind::F16) {
            return Err(Error::Unsupported(format!(
                "safetensors weights run as F32, BF16 or F16, not {}",
                kind.name()
            )));
        }
        let src = &file.map[t.start..t.end];
        let group = kind.group_rows(cols).filter(|&n| rows.is_multiple_of(n));
        let data = anon_filled(kind.row_bytes(cols) * rows, |out| match group {
            // Group by group: transcoded rows (unless the file holds `kind` already), then
            // interleaved into place.
            Some(n) => {
                let w_in = float_width(t.dtype).unwrap_or(4);
                out.par_chunks_mut(kind.row_bytes(cols) * n)
                    .zip(src.par_chunks(cols * w_in * n))
                    .for_each_init(Vec::new, |buf, (o, s)| {
                        let rows = if same_format(t.dtype, kind) {
                            s
                        } else {
                            buf.resize(o.len(), 0);
                            transcode_values(s, t.dtype, kind, buf);
                            &buf[..]
                        };
                        kernels::interleave_into(kind, rows, cols, o);
                    })
            }
            None => transcode(src, t.dtype, kind, out),
        });
        release(&file.map, t.start, t.end - t.start);
        Ok(Matrix {
            kind,
            rows,
            cols,
            data: Arc::new(data),
            row_bytes: kind.row_bytes(cols),
            interleaved: group.is_some(),
        })
    }
}

/// Bytes per value of a float safetensors format, `None` for the others.
fn float_width(d: safetensors::Dtype) -> Option<usize> {
    match d {
        safetensors::Dtype::F32 => Some(4),
        safetensors::Dtype::BF16 | safetensors::Dtype::F16 => Some(2),
        _ => None,
    }
}

/// One little-endian value of float format `d` (F32, BF16 or F16) as f32.
#[inline]
fn decode(b: &[u8], d: safetensors::Dtype) -> f32 {
    match d {
        safetensors::Dtype::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        safetensors::Dtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
        _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    }
}

/// `src` (values of float format `from`) written into `out` as `to` (F32/BF16/F16; rounding
/// to nearest even, as PyTorch's `.to(dtype)` does), in parallel. A plain copy when the
/// formats agree.
fn transcode(src: &[u8], from: safetensors::Dtype, to: WeightKind, out: &mut [u8]) {
    const CHUNK: usize = 1 << 16;
    let w_in = float_width(from).unwrap_or(4);
    let w_out = to.row_bytes(1);
    out.par_chunks_mut(CHUNK * w_out)
        .zip(src.par_chunks(CHUNK * w_in))
        .for_each(|(o, s)| transcode_values(s, from, to, o));
}

/// Whether values of `from` are already `to` (a transcode is a plain copy).
fn same_format(from: safetensors::Dtype, to: WeightKind) -> bool {
    matches!(
        (from, to),
        (safetensors::Dtype::F32, WeightKind::F32)
            | (safetensors::Dtype::BF16, WeightKind::BF16)
            | (safetensors::Dtype::F16, WeightKind::F16)
    )
}

/// [`transcode`] on the calling thread.
fn transcode_values(src: &[u8], from: safetensors::Dtype, to: WeightKind, out: &mut [u8]) {
    let w_in = float_width(from).unwrap_or(4);
    let w_out = to.row_bytes(1);
    if same_format(from, to) {
        out.copy_from_slice(src);
        return;
    }
    for (o, s) in out.chunks_exact_mut(w_out).zip(src.chunks_exact(w_in)) {
        let v = decode(s, from);
        match to {
            WeightKind::BF16 => o.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
            WeightKind::F16 => o.copy_from_slice(&half::f16::from_f32(v).to_le_bytes()),
            _ => o.copy_from_slice(&v.to_le_bytes()),
        }
    }
}
