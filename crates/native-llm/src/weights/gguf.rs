//! The tensors of a GGUF file, memory-mapped: each matrix is a view into the mapped file, so
//! loading copies nothing and the page cache is shared between processes.
//!
//! The header is read by the caller (the plugin uses candle's reader, which it needs for the
//! tokenizer metadata anyway) and handed over as a [`GgufDirectory`]: where each tensor lies,
//! in which format, and the numeric metadata. This crate never parses GGUF itself.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use super::matrix::{Bytes, Matrix, map_file};
use crate::error::{Error, Result};
use crate::kernels::WeightKind;

/// How a GGUF tensor's values are stored, as far as the native kernels are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TensorFormat {
    /// A format the kernels multiply directly.
    Kernel(WeightKind),
    /// Any other GGML type, by the name messages show; the native model cannot run it.
    Other(String),
}

/// Where one tensor lies in the file.
#[derive(Clone, Debug)]
pub struct GgufTensor {
    /// Its storage format.
    pub format: TensorFormat,
    /// Its shape, as the GGUF reader gives it (`[rows, cols]` for a matrix).
    pub dims: Vec<usize>,
    /// Its start, relative to [`GgufDirectory::data_offset`].
    pub offset: u64,
}

/// What the engine needs of a GGUF header.
#[derive(Clone, Debug, Default)]
pub struct GgufDirectory {
    /// Where the tensor data starts in the file.
    pub data_offset: u64,
    /// Every tensor, by name.
    pub tensors: HashMap<String, GgufTensor>,
    /// The numeric metadata (hyper-parameters), any integer or float type as f64.
    pub numbers: HashMap<String, f64>,
}

/// A parsed, mapped GGUF file.
pub struct GgufWeights {
    map: Arc<Mmap>,
    data_offset: usize,
    tensors: HashMap<String, GgufTensor>,
    /// The numeric metadata (hyper-parameters), as f64.
    numbers: HashMap<String, f64>,
    path: std::path::PathBuf,
}

impl GgufWeights {
    /// Maps `path` and takes the tensor directory from `directory` (already read from it).
    pub fn new(path: &Path, directory: GgufDirectory) -> Result<Self> {
        Self::with_map(path, map_file(path)?, directory)
    }

    /// The tensors of `directory` in `map`, a mapping of the file at `path`
    /// ([`map_file`](super::map_file)).
    pub fn with_map(path: &Path, map: Arc<Mmap>, directory: GgufDirectory) -> Result<Self> {
        Ok(Self {
            map,
            data_offset: directory.data_offset as usize,
            tensors: directory.tensors,
            numbers: directory.numbers,
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
        names
            .into_iter()
            .find_map(|n| match &self.tensors[n].format {
                TensorFormat::Other(t) => Some((n.clone(), t.clone())),
                TensorFormat::Kernel(_) => None,
            })
    }

    fn info(&self, name: &str) -> Result<&GgufTensor> {
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
        let kind = match &info.format {
            TensorFormat::Kernel(kind) => *kind,
            TensorFormat::Other(t) => {
                return Err(Error::file(
                    &self.path,
                    format!("tensor `{name}` is {t}, which the native kernels do not run"),
                ));
            }
        };
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
