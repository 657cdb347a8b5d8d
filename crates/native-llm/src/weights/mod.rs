//! Model weights as the kernels read them: [`Matrix`] (rows in a storage format, mapped from
//! the file or repacked), loaded from a GGUF file ([`GgufWeights`], the header read by the
//! caller into a [`GgufDirectory`]) or from a Hugging Face folder's safetensors.
//!
//! Layering: `matrix` (the matrix and its memory), `low_rank` (LoRA updates) ← `gguf`,
//! `safetensors` (the two sources).

mod gguf;
mod low_rank;
mod matrix;
mod safetensors;

pub use gguf::{GgufDirectory, GgufTensor, GgufWeights, TensorFormat};
pub use low_rank::{LowRank, LowRankUpdates};
pub use matrix::{Matrix, map_file};
/// The read-only file mapping [`map_file`] returns.
pub use memmap2::Mmap;
pub(crate) use safetensors::SafeTensors;
