//! x86-64 kernels with AVX-512 (F, BW, VL) and AVX-512 VNNI, used only after run-time
//! detection, for the quantized dot products: the interleaved 8-row `Q4_0`, `Q4_1` and `Q8_0`
//! groups, the 16-row `Q5_0`/`Q5_1` groups (`q5group`), the `Q4_K`/`Q6_K` groups of 16 rows
//! and the `Q4_K` and `Q6_K` rows; and, where the CPU also has AVX-512 BF16
//! ([`bf16::available`]), interleaved `BF16` groups against bf16 activations ([`bf16`]).
//! Everything else (activation quantization, `Q5_K`, other float weights, attention) stays on
//! the AVX2 kernels, which the dispatch in `super` also uses on these CPUs.
//!
//! The integer sums are formed with `vpdpbusd` (4 unsigned × signed byte products summed into
//! a 32-bit lane) or `vpmaddubsw` + `vpdpwssd` (16-bit pairs times 16-bit scales into 32-bit
//! lanes), 64 bytes per instruction instead of the AVX2 kernels' 32 and one or two
//! instructions instead of three. The sums are exact (far below 2^31). For the groups the
//! floats are formed from them with the same operations in the same order as the AVX2 and
//! portable kernels, so every result equals theirs bit for bit; the K-quant rows keep 16
//! float lanes per token and sum them once per row, so they equal the portable body within
//! rounding. Either way a token's result never depends on the other tokens of the call (the
//! tests check both on random blocks).
//!
//! The `unsafe` here is confined to unaligned loads of fixed-size arrays and to entering
//! `#[target_feature]` functions, which the public functions below do only when
//! `super::isa()` chose `Isa::Avx512`, that is after [`available`] said yes.

pub mod bf16;
mod kgroup;
mod kquants;
mod q5group;
mod quant;

pub use kgroup::dot_group as dot_k_group;
pub use kquants::dot_k_multi;
pub use q5group::dot_group as dot_q5_group;

use crate::kernels::format::{BlockQ8, WeightKind};

/// The 8 dot products of an interleaved group (`Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`) with
/// each of up to 4 activation vectors (`out[t]` for `acts[t]`).
pub fn dot_x8_multi(
    kind: WeightKind,
    group: &[u8],
    acts: &[&[BlockQ8]],
    out: &mut [[f32; 8]],
    stream: bool,
) {
    match kind {
        // Matrices of these formats are 16-row groups here (`q5group`); 8-row groups (tests)
        // take the AVX2 kernel.
        WeightKind::Q5_0 | WeightKind::Q5_1 => {
            super::avx2::dot_x8_multi(kind, group, acts, out, stream)
        }
        _ => quant::dot_x8_multi(kind, group, acts, out, stream),
    }
}

/// Whether this CPU has everything these kernels use (and the AVX2 kernels they sit beside).
pub fn available() -> bool {
    super::avx2::available()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

#[cfg(test)]
mod tests;
