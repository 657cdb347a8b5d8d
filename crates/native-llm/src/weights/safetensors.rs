//! The safetensors files of a Hugging Face folder, memory-mapped and converted into weight
//! matrices of the float format asked for.

use std::collections::HashMap;
use std::sync::Arc;

use memmap2::Mmap;
use rayon::prelude::*;

use super::low_rank::LowRankUpdates;
use super::matrix::{Matrix, anon_filled, release};
use crate::error::{Error, Result};
use crate::kernels::{self, WeightKind};

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
    /// shape allows ([`kernels::interleave`]); the file's pages of it are released. `updates`
    /// (LoRA) are merged first, in f32, in order.
    pub(crate) fn matrix(
        &self,
        name: &str,
        kind: WeightKind,
        updates: &LowRankUpdates,
    ) -> Result<Matrix> {
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
        let m = match updates.get(name).filter(|u| !u.is_empty()) {
            None => build(src, t.dtype, rows, cols, kind),
            Some(updates) => {
                let width = float_width(t.dtype).unwrap_or(4);
                let mut w: Vec<f32> = src
                    .chunks_exact(width)
                    .map(|v| decode(v, t.dtype))
                    .collect();
                for u in updates {
                    u.add_to(&mut w, rows, cols, name)?;
                }
                let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
                build(&bytes, safetensors::Dtype::F32, rows, cols, kind)
            }
        };
        release(&file.map, t.start, t.end - t.start);
        Ok(m)
    }
}

/// A `[rows, cols]` matrix of `kind` from `src` values stored as `dtype`.
fn build(
    src: &[u8],
    dtype: safetensors::Dtype,
    rows: usize,
    cols: usize,
    kind: WeightKind,
) -> Matrix {
    let group = kind.group_rows(cols).filter(|&n| rows.is_multiple_of(n));
    let data = anon_filled(kind.row_bytes(cols) * rows, |out| match group {
        // Group by group: transcoded rows (unless the source holds `kind` already), then
        // interleaved into place.
        Some(n) => {
            let w_in = float_width(dtype).unwrap_or(4);
            out.par_chunks_mut(kind.row_bytes(cols) * n)
                .zip(src.par_chunks(cols * w_in * n))
                .for_each_init(Vec::new, |buf, (o, s)| {
                    let rows = if same_format(dtype, kind) {
                        s
                    } else {
                        buf.resize(o.len(), 0);
                        transcode_values(s, dtype, kind, buf);
                        &buf[..]
                    };
                    kernels::interleave_into(kind, rows, cols, o);
                })
        }
        None => transcode(src, dtype, kind, out),
    });
    Matrix {
        kind,
        rows,
        cols,
        data: Arc::new(data),
        row_bytes: kind.row_bytes(cols),
        interleaved: group.is_some(),
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
