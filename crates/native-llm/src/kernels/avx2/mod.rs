//! x86-64 kernels with AVX2, FMA and F16C, used only after run-time detection.
//!
//! The `unsafe` here is confined to unaligned SIMD loads and stores of fixed-size arrays (the
//! `load_*` / `store_*` helpers in `simd.rs`) and to entering `#[target_feature]` functions,
//! which each public function below does only when `super::isa()` chose AVX2, that is after
//! [`available`] said yes.
//!
//! Layering (each module uses only those before it): `simd` (detection, loads, stores,
//! prefetch) → `quant` (`Q4_0`/`Q4_1`/`Q8_0`), `float` (float weights, dot, axpy),
//! `activation` (vector `e^x`), `kquants` (`Q4_K`/`Q5_K`/`Q6_K`) → `attention_q8` (a `Q8_0`
//! cache; uses `quant`, `float` and `activation`) → `attention` (uses `float`, `activation`
//! and `attention_q8`). This module only re-exports; the dispatch in `super` calls it.

mod activation;
mod attention;
mod attention_q8;
mod float;
mod kquants;
mod quant;
pub(super) mod simd;

pub use activation::{exp_shifted_sum, gated_activation};
pub use attention::attend_many;
pub use float::{axpy, dot_f, dot_f_block, dot_f32};
pub use kquants::{dot_k_multi, quantize_row_k};
pub use quant::{dot_q, dot_x8_multi, quantize_row};
pub use simd::available;
