//! CPU kernels for the native transformer: dot products between weight rows stored in GGUF
//! block formats (or plain floats) and activations, picked once at run time.
//!
//! Quantized weights (`Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`) are multiplied against
//! activations quantized to [`BlockQ8`] (32 values, an f32 scale and the scaled sum), the way
//! llama.cpp does, so the inner loop is 8-bit integer multiply-adds; K-quants (`Q4_K`, `Q5_K`,
//! `Q6_K`) against [`BlockQ8K`] (256 values; see [`kquants`]). Float weights (`F32`, `F16`,
//! `BF16`) meet f32 activations.
//!
//! Every kernel computes one row against one activation vector, so a token's result does not
//! depend on what else is in the batch: batched prefill, batched decoding and a solo run give
//! bit-identical logits.
//!
//! Instruction sets are chosen at run time (`is_x86_feature_detected!`), never at compile time:
//! the binary runs on any x86-64 (or other) CPU, and uses AVX2 + FMA + F16C where the CPU has
//! them, and AVX-512 VNNI for the quantized decode kernels where it has AVX-512 F/BW/VL/VNNI.
//! `SWITCHYARD_KERNELS=portable` forces the portable code (used by the tests to check that
//! the paths agree); `SWITCHYARD_KERNELS=avx2` keeps an AVX-512 CPU on the AVX2 kernels (for
//! A/B measurements).
//!
//! # Layering
//!
//! Each module uses only the ones listed before it; this one (the dispatch) uses them all
//! and none of them uses it:
//!
//! - `format.rs`: storage formats, block and group sizes, value readers and writers;
//! - `layout.rs`: the interleaved group layout ([`interleave`], [`deinterleave_row`]);
//! - [`kquants`]: the K-quant formats' portable reference;
//! - [`kgroup`]: the `Q4_K`/`Q6_K` group layout (16 rows repacked for the AVX-512 and AVX2
//!   group kernels) and its portable body;
//! - [`q5group`]: the `Q5_0`/`Q5_1` group layout of 16 rows (fifth bits as byte masks) the
//!   AVX-512 kernel reads, and the way back;
//! - [`portable`]: the portable kernels, the reference the SIMD ones are tested against;
//! - `attention.rs`: the attention work unit ([`Tile`]) and the per-query loop;
//! - `avx2/` (x86-64 only): the AVX2 + FMA + F16C kernels;
//! - `avx512/` (x86-64 only): AVX-512 VNNI kernels for the quantized dot products
//!   (`Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0` groups, `Q4_K` and `Q6_K` groups and rows) and, where the
//!   CPU has AVX-512 BF16, interleaved `BF16` groups against bf16 activations; used beside
//!   the AVX2 ones.
//!
//! The functions below pick one of the last three per call from [`isa()`], chosen once per
//! process; with [`Isa::Avx512`] everything the AVX-512 module lacks runs on AVX2.

/// `&$f($($arg,)* [a, b, …])` for the 1 to [`K_TOKENS`] activation vectors of the slice
/// `$acts`: each per-ISA K-quant kernel gets the token count as a const-generic array length.
macro_rules! with_token_array {
    ($acts:expr, $f:ident($($arg:expr),*)) => {
        match *$acts {
            [a] => &$f($($arg,)* [a]),
            [a, b] => &$f($($arg,)* [a, b]),
            [a, b, c] => &$f($($arg,)* [a, b, c]),
            [a, b, c, d] => &$f($($arg,)* [a, b, c, d]),
            [a, b, c, d, e] => &$f($($arg,)* [a, b, c, d, e]),
            [a, b, c, d, e, f] => &$f($($arg,)* [a, b, c, d, e, f]),
            [a, b, c, d, e, f, g] => &$f($($arg,)* [a, b, c, d, e, f, g]),
            [a, b, c, d, e, f, g, h] => &$f($($arg,)* [a, b, c, d, e, f, g, h]),
            _ => unreachable!("1 to {} activation vectors", $crate::kernels::K_TOKENS),
        }
    };
}

mod attention;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod format;
pub mod kgroup;
#[cfg(test)]
mod kq_check;
pub mod kquants;
#[cfg(test)]
mod kv_q8_tests;
mod layout;
pub mod portable;
pub mod q5group;
#[cfg(test)]
mod tests;

#[cfg(test)]
use attention::Head;
pub use attention::Tile;
pub use format::{
    ActFormat, BlockQ8, BlockQ8K, F_GROUP, F_PIECE, GROUP, K_TOKENS, MAX_TOKENS, QK, QK_K,
    STREAM_TOKENS, WeightKind, push_floats,
};
pub use kgroup::K_GROUP;
pub use layout::{deinterleave_row, group_block_bytes, interleave, interleave_into, quant_at};
pub use portable::activation;
pub use q5group::Q5_GROUP;

use std::sync::OnceLock;

/// The instruction set the kernels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 with AVX-512 F/BW/VL and AVX-512 VNNI (and AVX2, FMA, F16C): the quantized
    /// decode kernels in AVX-512, the rest in AVX2.
    Avx512,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// Plain Rust (what the compiler makes of it for the build target).
    Portable,
}

impl Isa {
    /// A short name for logs and benchmark tables.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512vnni+avx2+fma+f16c",
            Isa::Avx2 => "avx2+fma+f16c",
            Isa::Portable => "portable",
        }
    }
}

/// The instruction set picked for this process (detected once).
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        if std::env::var("SWITCHYARD_KERNELS").is_ok_and(|v| v.eq_ignore_ascii_case("portable")) {
            return Isa::Portable;
        }
        #[cfg(target_arch = "x86_64")]
        if std::env::var("SWITCHYARD_KERNELS").is_ok_and(|v| v.eq_ignore_ascii_case("avx2"))
            && avx2::available()
        {
            return Isa::Avx2;
        }
        #[cfg(target_arch = "x86_64")]
        if avx512::available() {
            return Isa::Avx512;
        }
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            return Isa::Avx2;
        }
        Isa::Portable
    })
}

/// Rows per interleaved group of a `kind` matrix with `cols` columns on this CPU, or `None`
/// for the row layout: the one place that decides which layout the kernels read. `Q4_K` and
/// `Q6_K` are grouped ([`K_GROUP`] rows, [`kgroup`]) where the AVX-512 or AVX2 group kernels
/// run (the portable code keeps rows); `Q5_0`/`Q5_1` into [`Q5_GROUP`] rows ([`q5group`])
/// where the AVX-512 kernels run; the other formats as [`WeightKind::group_rows`] says.
pub fn group_rows(kind: WeightKind, cols: usize) -> Option<usize> {
    if k_grouped(kind) {
        return (isa() != Isa::Portable).then_some(K_GROUP);
    }
    if q5_grouped(kind) {
        return Some(Q5_GROUP);
    }
    kind.group_rows(cols)
}

/// Whether `kind` has a K-quant group layout ([`kgroup`]).
fn k_grouped(kind: WeightKind) -> bool {
    matches!(kind, WeightKind::Q4_K | WeightKind::Q6_K)
}

/// Whether `kind` matrices are repacked into the 16-row `Q5_0`/`Q5_1` groups ([`q5group`]):
/// where the AVX-512 VNNI kernels run (elsewhere they keep the 8-row groups).
fn q5_grouped(kind: WeightKind) -> bool {
    matches!(kind, WeightKind::Q5_0 | WeightKind::Q5_1) && isa() == Isa::Avx512
}

/// Bytes of one group of [`group_rows`] rows (`Q4_K` groups are larger than their rows).
pub fn group_bytes(kind: WeightKind, cols: usize) -> usize {
    if k_grouped(kind) {
        return kgroup::group_bytes(kind, cols);
    }
    kind.row_bytes(cols) * group_rows(kind, cols).unwrap_or(1)
}

/// Repacks one group's rows (`src`, row-major) into `out` ([`group_bytes`] long).
pub fn repack_group(kind: WeightKind, src: &[u8], cols: usize, out: &mut [u8]) {
    if k_grouped(kind) {
        kgroup::interleave(kind, src, cols, out);
    } else if q5_grouped(kind) {
        q5group::interleave(kind, src, cols, out);
    } else {
        interleave_into(kind, src, cols, out);
    }
}

/// Row `r` of a repacked group as f32 (embedding lookups), equal bit for bit to
/// [`dequantize_row`] on the row in its file layout.
pub fn dequantize_group_row(
    kind: WeightKind,
    group: &[u8],
    r: usize,
    cols: usize,
    out: &mut [f32],
) {
    if k_grouped(kind) {
        kgroup::dequantize_row(kind, group, r, out);
    } else if q5_grouped(kind) {
        dequantize_row(kind, &q5group::deinterleave_row(kind, group, r, cols), out);
    } else {
        dequantize_row(kind, &deinterleave_row(kind, group, r, cols), out);
    }
}

/// A `Q4_K` or `Q6_K` group ([`kgroup`]) against 1 to [`K_TOKENS`] activation vectors:
/// `out[t][r] = row r · acts[t]`. Each result equals a call with that activation alone, and
/// the rows kernels' within rounding.
pub fn dot_k_group(
    kind: WeightKind,
    group: &[u8],
    acts: &[&[BlockQ8K]],
    out: &mut [[f32; K_GROUP]],
) {
    debug_assert!((1..=K_TOKENS).contains(&acts.len()) && out.len() >= acts.len());
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::dot_k_group(kind, group, acts, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::dot_k_group(kind, group, acts, out),
        _ => kgroup::dot_group_body(kind, group, acts, out),
    }
}

/// Quantizes `x` (a multiple of 32 values) into `out` (`x.len() / 32` blocks).
pub fn quantize_row(x: &[f32], out: &mut [BlockQ8]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => avx2::quantize_row(x, out),
        _ => portable::quantize_row(x, out),
    }
}

/// Dot product of one quantized weight row (`kind`'s bytes) with quantized activations.
pub fn dot_q(kind: WeightKind, row: &[u8], act: &[BlockQ8]) -> f32 {
    debug_assert!(row.len() >= kind.row_bytes(act.len() * QK));
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => avx2::dot_q(kind, row, act),
        _ => portable::dot_q(kind, row, act),
    }
}

/// The 8 dot products of an interleaved group (see [`interleave`]) with quantized
/// activations.
pub fn dot_x8(kind: WeightKind, group: &[u8], act: &[BlockQ8]) -> [f32; GROUP] {
    let mut out = [[0f32; GROUP]];
    dot_x8_multi(kind, group, &[act], &mut out, true);
    out[0]
}

/// [`dot_x8`] for up to [`MAX_TOKENS`] activation vectors at once (`out[t]` for `acts[t]`):
/// the weights are unpacked once for all of them. Each result equals, bit for bit, a
/// [`dot_x8`] call of its own.
pub fn dot_x8_multi(
    kind: WeightKind,
    group: &[u8],
    acts: &[&[BlockQ8]],
    out: &mut [[f32; GROUP]],
    stream: bool,
) {
    debug_assert!((1..=MAX_TOKENS).contains(&acts.len()) && out.len() >= acts.len());
    debug_assert!(
        acts.iter()
            .all(|a| group.len() >= group_block_bytes(kind) * a.len())
    );
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::dot_x8_multi(kind, group, acts, out, stream),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::dot_x8_multi(kind, group, acts, out, stream),
        _ => {
            for (o, a) in out.iter_mut().zip(acts) {
                *o = portable::dot_x8(kind, group, a);
            }
        }
    }
}

/// A 16-row `Q5_0`/`Q5_1` group ([`q5group`], AVX-512 VNNI CPUs only) against 1 to
/// [`MAX_TOKENS`] activation vectors: `out[t][r] = row r · acts[t]`, each equal bit for bit
/// to the 8-row kernels' result for that row and token alone.
pub fn dot_q5_group(
    kind: WeightKind,
    group: &[u8],
    acts: &[&[BlockQ8]],
    out: &mut [[f32; Q5_GROUP]],
    stream: bool,
) {
    debug_assert!((1..=MAX_TOKENS).contains(&acts.len()) && out.len() >= acts.len());
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::dot_q5_group(kind, group, acts, out, stream),
        _ => unreachable!("16-row {kind:?} groups exist only where the AVX-512 kernels run"),
    }
}

/// `x[i] = e^(x[i] - max)`, returning their sum (a softmax's numerators).
pub fn exp_shifted_sum(x: &mut [f32], max: f32) -> f32 {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => avx2::exp_shifted_sum(x, max),
        _ => portable::exp_shifted_sum(x, max),
    }
}

/// The feed-forward gate: `gate[i] = act(gate[i]) * up[i]`, `act` SiLU or (`gelu`) GELU
/// in its tanh form.
pub fn gated_activation(gelu: bool, gate: &mut [f32], up: &[f32]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => avx2::gated_activation(gelu, gate, up),
        _ => gate
            .iter_mut()
            .zip(up)
            .for_each(|(g, u)| *g = activation(gelu, *g) * u),
    }
}

/// Dot product of one float weight row (`F32`/`F16`/`BF16` bytes) with f32 activations.
pub fn dot_f(kind: WeightKind, row: &[u8], act: &[f32]) -> f32 {
    debug_assert!(row.len() >= kind.row_bytes(act.len()));
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => avx2::dot_f(kind, row, act),
        _ => portable::dot_f(kind, row, act),
    }
}

/// Float weight rows (`F32`/`F16`/`BF16`, `cols` values each; row-major in `rows`, or
/// groups of [`F_GROUP`] rows when `grouped`, see [`interleave`]) against activation
/// vectors: `out[t * stride + r] = row r · acts[t]`. The kernel works in tiles of 4 rows × up
/// to 3 vectors, loading each weight and activation vector once per tile; each result still
/// equals, bit for bit, a [`dot_f`] call of its own (one accumulator chain per output, in
/// column order, whatever the layout or the tile).
pub fn dot_f_block(
    kind: WeightKind,
    rows: &[u8],
    cols: usize,
    grouped: bool,
    acts: &[&[f32]],
    out: &mut [f32],
    stride: usize,
) {
    let rb = kind.row_bytes(cols);
    debug_assert!(rows.len().is_multiple_of(rb) && acts.iter().all(|a| a.len() == cols));
    debug_assert!(!grouped || rows.len().is_multiple_of(rb * F_GROUP));
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => avx2::dot_f_block(kind, rows, rb, grouped, acts, out, stride),
        _ => {
            // Row by row; a grouped matrix is rebuilt into rows one group at a time.
            let per = if grouped { F_GROUP } else { 1 };
            let mut buf = Vec::new();
            for (g, chunk) in rows.chunks_exact(rb * per).enumerate() {
                let chunk = if grouped {
                    buf.clear();
                    for j in 0..F_GROUP {
                        buf.extend(deinterleave_row(kind, chunk, j, cols));
                    }
                    &buf[..]
                } else {
                    chunk
                };
                for (j, row) in chunk.chunks_exact(rb).enumerate() {
                    for (t, a) in acts.iter().enumerate() {
                        out[t * stride + g * per + j] = portable::dot_f(kind, row, a);
                    }
                }
            }
        }
    }
}

/// Whether a float matrix of `kind` (interleaved when `grouped`) is multiplied with bf16
/// activations by [`dot_bf16_g4`] on this CPU (interleaved `BF16` with AVX-512 BF16) rather
/// than with f32 ones by [`dot_f_block`].
pub fn uses_bf16_acts(kind: WeightKind, grouped: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 && kind == WeightKind::BF16 && grouped {
        return avx512::bf16::available();
    }
    let _ = (kind, grouped);
    false
}

/// Rounds `x` to bf16 pieces for [`dot_bf16_g4`] (only where [`uses_bf16_acts`] said yes).
pub fn to_bf16_pieces(x: &[f32], out: &mut [[u16; 8]]) {
    #[cfg(target_arch = "x86_64")]
    avx512::bf16::to_bf16(x, out);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, out);
        unreachable!("bf16 activations are used only where `uses_bf16_acts` said yes");
    }
}

/// Interleaved `BF16` rows (`cols` each) against bf16 activations ([`to_bf16_pieces`]):
/// `out[t * stride + r] = row r · acts[t]`, only where [`uses_bf16_acts`] said yes. Each
/// result is the same whatever the tile or batch it is computed in.
pub fn dot_bf16_g4(rows: &[u8], cols: usize, acts: &[&[[u16; 8]]], out: &mut [f32], stride: usize) {
    #[cfg(target_arch = "x86_64")]
    avx512::bf16::dot_g4(rows, 2 * cols, acts, out, stride);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (rows, cols, acts, out, stride);
        unreachable!("bf16 activations are used only where `uses_bf16_acts` said yes");
    }
}

/// `Σ a[i] * b[i]`.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => avx2::dot_f32(a, b),
        _ => portable::dot_f32(a, b),
    }
}

/// Attention for a [`Tile`]: query `m`'s result into `out[m * head_dim..]`. With AVX2 the
/// keys and values are read in blocks shared by all the tile's queries; every query's result
/// is the same whatever its tile-mates (it equals the result of a tile of its own). A `Q8_0`
/// cache is read as llama.cpp reads one: the query quantized to [`BlockQ8`], 8-bit integer
/// dot products with the keys, values dequantized to f32.
pub fn attend_many(tile: &Tile<'_>, scratch: &mut Vec<f32>, out: &mut [f32]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 if tile.kind == WeightKind::Q8_0 => {
            avx2::attend_q8(tile, scratch, out)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => avx2::attend_many(tile, scratch, out),
        _ if tile.kind == WeightKind::Q8_0 => tile.run_each(
            |h, sc, o| {
                h.run_q8(
                    portable::quantize_row,
                    portable::dot_q,
                    portable::axpy,
                    sc,
                    o,
                )
            },
            scratch,
            out,
        ),
        _ => tile.run_each(
            |h, sc, o| h.run(portable::dot_f32, portable::axpy, sc, o),
            scratch,
            out,
        ),
    }
}

/// `y[i] += a * x[i]`.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => avx2::axpy(y, a, x),
        _ => portable::axpy(y, a, x),
    }
}

/// Writes row values `0..out.len()` of a weight row as f32 (embedding lookups).
pub fn dequantize_row(kind: WeightKind, row: &[u8], out: &mut [f32]) {
    if kind.act_format() == ActFormat::Q8K {
        kquants::dequantize_row_k(kind, row, out);
    } else {
        portable::dequantize_row(kind, row, out);
    }
}

/// Quantizes 256-value blocks of `x` as llama.cpp's `quantize_row_q8_K`: the value of
/// largest magnitude (the first of equals) maps to -127 (scale `max / -127`), rounding to
/// nearest, ties to even.
pub fn quantize_row_k(x: &[f32], out: &mut [BlockQ8K]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => avx2::quantize_row_k(x, out),
        _ => kquants::quantize_row_k_body(x, out),
    }
}

/// One K-quant weight row against up to [`K_TOKENS`] activation vectors
/// (`out[t]` for `acts[t]`); each super-block is unpacked once for all of them, and each
/// result equals a call with that activation alone. No K-quant kernel prefetches: the rows
/// stream forward and the hardware prefetcher keeps up (software prefetching 16 KiB ahead
/// cost 7-15% of decode on Qwen2.5-Coder-1.5B Q4_K_M).
pub fn dot_k_multi(kind: WeightKind, row: &[u8], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if kind != WeightKind::Q5_K => avx512::dot_k_multi(kind, row, acts, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => avx2::dot_k_multi(kind, row, acts, out),
        _ => kquants::dot_k_multi_body(kind, row, acts, out),
    }
}

/// One K-quant weight row · one activation vector.
pub fn dot_k(kind: WeightKind, row: &[u8], act: &[BlockQ8K]) -> f32 {
    let mut out = [0f32];
    dot_k_multi(kind, row, &[act], &mut out);
    out[0]
}
