//! x86-64 kernels with AVX2, FMA and F16C, used only after run-time detection.
//!
//! The `unsafe` here is confined to unaligned SIMD loads and stores of fixed-size arrays (the
//! `load_*` / `store_*` helpers in `simd.rs`) and to entering `#[target_feature]` functions,
//! which each public function below does only when `super::isa()` chose AVX2, that is after
//! [`available`] said yes.
//!
//! Layering (each module uses only those before it): `simd` (detection, loads, stores,
//! prefetch) → `quant` (`Q4_0`/`Q4_1`/`Q8_0`), `float` (float weights, dot, axpy),
//! `activation` (vector `e^x`), `kquants` (`Q4_K`/`Q5_K`/`Q6_K` rows), `kgroup` (`Q4_K`/`Q6_K`
//! groups of 16 rows) → `attention` (uses `float`
//! and `activation`) → `attention_q8` (a `Q8_0` cache; uses `quant`, `activation` and
//! `attention`'s score reductions). This module only re-exports; the dispatch in `super` calls it.

mod activation;
mod attention;
mod attention_q8;
mod float;
mod kgroup;
mod kquants;
mod q5;
mod quant;
pub(super) mod simd;

pub use activation::{exp_shifted_sum, gated_activation};
pub use attention::attend_many;
pub use attention_q8::attend_q8;
pub use float::{axpy, dot_f, dot_f_block, dot_f32};
pub use kgroup::dot_group as dot_k_group;
pub(super) use kquants::scales_mins_bytes;
pub use kquants::{dot_k_multi, quantize_row_k};
pub use quant::quantize_row;
pub use simd::available;

use crate::kernels::format::{BlockQ8, WeightKind};

/// Quantized weight row (`Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`) · quantized activations.
pub fn dot_q(kind: WeightKind, row: &[u8], act: &[BlockQ8]) -> f32 {
    match kind {
        WeightKind::Q5_0 | WeightKind::Q5_1 => q5::dot_q(kind, row, act),
        _ => quant::dot_q(kind, row, act),
    }
}

/// The 8 dot products of an interleaved group (`Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`) with
/// each of up to 8 activation vectors (`out[t]` for `acts[t]`).
pub fn dot_x8_multi(
    kind: WeightKind,
    group: &[u8],
    acts: &[&[BlockQ8]],
    out: &mut [[f32; 8]],
    stream: bool,
) {
    // 4 tokens at a time: 8 would not fit the 16 vector registers.
    for (acts, out) in acts.chunks(4).zip(out.chunks_mut(4)) {
        match kind {
            WeightKind::Q5_0 | WeightKind::Q5_1 => q5::dot_x8_multi(kind, group, acts, out, stream),
            _ => quant::dot_x8_multi(kind, group, acts, out, stream),
        }
    }
}
