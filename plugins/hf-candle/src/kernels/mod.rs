//! CPU kernels for the native transformer: dot products between weight rows stored in GGUF
//! block formats (or plain floats) and activations, picked once at run time.
//!
//! Quantized weights (`Q4_0`, `Q4_1`, `Q8_0`) are multiplied against activations quantized to
//! [`BlockQ8`] (32 values, an f32 scale and the scaled sum), the way llama.cpp does, so the
//! inner loop is 8-bit integer multiply-adds; K-quants (`Q4_K`, `Q5_K`, `Q6_K`) against
//! [`BlockQ8K`] (256 values; see [`kquants`]). Float weights (`F32`, `F16`, `BF16`) meet f32
//! activations.
//!
//! Every kernel computes one row against one activation vector, so a token's result does not
//! depend on what else is in the batch: batched prefill, batched decoding and a solo run give
//! bit-identical logits.
//!
//! Instruction sets are chosen at run time (`is_x86_feature_detected!`), never at compile time:
//! the binary runs on any x86-64 (or other) CPU, and uses AVX2 + FMA + F16C where the CPU has
//! them. `SWITCHYARD_KERNELS=portable` forces the portable code (used by the tests to check
//! that both paths agree).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_kquants;
pub mod kquants;
pub mod portable;

pub use kquants::{BlockQ8K, QK_K};

use std::sync::OnceLock;

/// Values per quantized block.
pub const QK: usize = 32;

/// How a weight matrix's rows are stored (GGUF `ggml_type`s this module can multiply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)] // GGUF's names
pub enum WeightKind {
    /// 32-bit floats.
    F32,
    /// IEEE half floats.
    F16,
    /// bfloat16.
    BF16,
    /// 32 4-bit values with one f16 scale: `(q - 8) * d`.
    Q4_0,
    /// 32 4-bit values with an f16 scale and minimum: `q * d + m`.
    Q4_1,
    /// 32 signed bytes with one f16 scale: `q * d`.
    Q8_0,
    /// 256 4-bit values in 8 sub-blocks with 6-bit scales and minimums.
    Q4_K,
    /// 256 5-bit values in 8 sub-blocks with 6-bit scales and minimums.
    Q5_K,
    /// 256 6-bit values in 16 sub-blocks with 8-bit scales.
    Q6_K,
}

/// The activation format a weight format is multiplied against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActFormat {
    /// Plain f32 (float weights).
    F32,
    /// [`BlockQ8`], 32 values per block.
    Q8,
    /// [`BlockQ8K`], 256 values per block.
    Q8K,
}

impl WeightKind {
    /// Values per storage block.
    pub fn block_elems(self) -> usize {
        match self {
            WeightKind::F32 | WeightKind::F16 | WeightKind::BF16 => 1,
            WeightKind::Q4_0 | WeightKind::Q4_1 | WeightKind::Q8_0 => QK,
            WeightKind::Q4_K | WeightKind::Q5_K | WeightKind::Q6_K => QK_K,
        }
    }

    /// Bytes per storage block.
    pub fn block_bytes(self) -> usize {
        match self {
            WeightKind::F32 => 4,
            WeightKind::F16 | WeightKind::BF16 => 2,
            WeightKind::Q4_0 => 18,
            WeightKind::Q4_1 => 20,
            WeightKind::Q8_0 => 34,
            WeightKind::Q4_K => 144,
            WeightKind::Q5_K => 176,
            WeightKind::Q6_K => 210,
        }
    }

    /// Bytes one row of `cols` values takes (`cols` must be a multiple of the block size).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_elems() * self.block_bytes()
    }

    /// Bytes before the quants in a quantized block: the f16 scale, and `Q4_1`'s f16 minimum.
    pub fn head_bytes(self) -> usize {
        if self == WeightKind::Q4_1 { 4 } else { 2 }
    }

    /// Whether activations must be quantized before multiplying.
    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// The activation format this weight format is multiplied against.
    pub fn act_format(self) -> ActFormat {
        match self.block_elems() {
            1 => ActFormat::F32,
            QK => ActFormat::Q8,
            _ => ActFormat::Q8K,
        }
    }

    /// Rows per interleaved group when a matrix of this format with `cols` columns can be
    /// repacked for the multi-row kernels ([`interleave`]): [`GROUP`] for `Q4_0`/`Q4_1`/`Q8_0`,
    /// [`F_GROUP`] for floats whose width is a multiple of [`F_PIECE`]; `None` otherwise.
    pub fn group_rows(self, cols: usize) -> Option<usize> {
        match self.act_format() {
            ActFormat::Q8 => Some(GROUP),
            ActFormat::F32 if cols.is_multiple_of(F_PIECE) => Some(F_GROUP),
            _ => None,
        }
    }

    /// The GGUF name of the format.
    pub fn name(self) -> &'static str {
        match self {
            WeightKind::F32 => "F32",
            WeightKind::F16 => "F16",
            WeightKind::BF16 => "BF16",
            WeightKind::Q4_0 => "Q4_0",
            WeightKind::Q4_1 => "Q4_1",
            WeightKind::Q8_0 => "Q8_0",
            WeightKind::Q4_K => "Q4_K",
            WeightKind::Q5_K => "Q5_K",
            WeightKind::Q6_K => "Q6_K",
        }
    }
}

/// 32 activation values quantized to signed bytes: `x ≈ d * q`, with `s = d * Σq`
/// (the term `Q4_0`'s offset and `Q4_1`'s minimum need).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct BlockQ8 {
    /// Scale.
    pub d: f32,
    /// `d` times the sum of `qs`.
    pub s: f32,
    /// The quantized values.
    pub qs: [i8; QK],
}

/// The instruction set the kernels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// Plain Rust (what the compiler makes of it for the build target).
    Portable,
}

impl Isa {
    /// A short name for logs and benchmark tables.
    pub fn name(self) -> &'static str {
        match self {
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
        if avx2::available() {
            return Isa::Avx2;
        }
        Isa::Portable
    })
}

/// Quantizes `x` (a multiple of 32 values) into `out` (`x.len() / 32` blocks).
pub fn quantize_row(x: &[f32], out: &mut [BlockQ8]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::quantize_row(x, out),
        _ => portable::quantize_row(x, out),
    }
}

/// Dot product of one quantized weight row (`kind`'s bytes) with quantized activations.
pub fn dot_q(kind: WeightKind, row: &[u8], act: &[BlockQ8]) -> f32 {
    debug_assert!(row.len() >= kind.row_bytes(act.len() * QK));
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::dot_q(kind, row, act),
        _ => portable::dot_q(kind, row, act),
    }
}

/// Rows per interleaved group of a quantized matrix (see [`interleave`]).
pub const GROUP: usize = 8;

/// Rows per interleaved group of a float matrix (see [`interleave`]).
pub const F_GROUP: usize = 4;

/// Columns per piece of an interleaved float group (one 8-lane vector).
pub const F_PIECE: usize = 8;

/// Bytes one interleaved group of 8 rows takes per 32-column block.
pub fn group_block_bytes(kind: WeightKind) -> usize {
    kind.block_bytes() * GROUP
}

/// Repacks the rows of one group (`kind.group_rows(cols)` consecutive rows, row-major) so
/// the multi-row kernels read it as one sequential stream and produce the group's outputs
/// together:
/// - quantized (8 rows): block by block, the 8 scales (and `Q4_1` minimums) first, then the
///   8 rows' quants, `[d; 8] [m; 8]? [qs; 8]` (laid out as [`quant_at`] says). One SIMD load
///   then converts all 8 scales, and the kernel produces 8 outputs with no per-row
///   horizontal sum.
/// - float (4 rows): pieces of [`F_PIECE`] columns, piece `k` of rows 0..4 side by side
///   (`[r0 k] [r1 k] [r2 k] [r3 k] [r0 k+1] …`). A single token's decode step then runs four
///   independent accumulator chains over one forward stream (four separate row streams
///   defeat the hardware prefetcher), each row still summed in its own column order.
pub fn interleave(kind: WeightKind, src: &[u8], cols: usize) -> Vec<u8> {
    let mut out = vec![0u8; src.len()];
    interleave_into(kind, src, cols, &mut out);
    out
}

/// [`interleave`] into `out` (as long as `src`, one group).
pub fn interleave_into(kind: WeightKind, src: &[u8], cols: usize, out: &mut [u8]) {
    // Block sizes as constants, so each piece is a fixed-size move rather than a `memmove`
    // call (this runs over every quantized weight at load).
    match kind {
        WeightKind::Q4_0 => interleave8_fixed::<2, 16, 18>(src, cols, out),
        WeightKind::Q4_1 => interleave8_fixed::<4, 16, 20>(src, cols, out),
        WeightKind::Q8_0 => interleave8_fixed::<2, 32, 34>(src, cols, out),
        WeightKind::F32 => interleave_f4::<32>(src, cols, out),
        WeightKind::F16 | WeightKind::BF16 => interleave_f4::<16>(src, cols, out),
        _ => unreachable!("{kind:?} is not interleaved"),
    }
}

/// Where piece `k` (columns `8k..8k + 8`, `pb` bytes) of row `r` starts in an interleaved
/// float group.
fn f_piece_at(pb: usize, r: usize, k: usize) -> usize {
    (k * F_GROUP + r) * pb
}

/// [`interleave_into`] for 4 float rows, pieces of `PB` bytes (8 values).
fn interleave_f4<const PB: usize>(src: &[u8], cols: usize, out: &mut [u8]) {
    let rb = cols / F_PIECE * PB;
    for r in 0..F_GROUP {
        for (k, piece) in src[r * rb..(r + 1) * rb].chunks_exact(PB).enumerate() {
            let at = f_piece_at(PB, r, k);
            out[at..at + PB].copy_from_slice(piece);
        }
    }
}

/// [`interleave_into`] for 8 quantized rows, blocks of `BB` bytes: `HEAD` bytes of f16
/// scale (and minimum), then `QB` bytes of quants.
///
/// Each block is taken as a fixed-size array and each output piece written in order, so the
/// moves are register copies without bounds checks (this runs over every quantized weight
/// at load, and a byte-wise version was a third of a Q8_0 file's load time).
fn interleave8_fixed<const HEAD: usize, const QB: usize, const BB: usize>(
    src: &[u8],
    cols: usize,
    out: &mut [u8],
) {
    const { assert!(HEAD + QB == BB && QB.is_multiple_of(4)) };
    let rb = cols / QK * BB;
    let rows: [&[u8]; GROUP] = std::array::from_fn(|r| &src[r * rb..(r + 1) * rb]);
    for (i, o) in out.chunks_exact_mut(GROUP * BB).enumerate() {
        let blocks: [&[u8; BB]; GROUP] = std::array::from_fn(|r| {
            rows[r][i * BB..(i + 1) * BB]
                .try_into()
                .expect("one block per row")
        });
        let (heads, quants) = o.split_at_mut(GROUP * HEAD);
        for (r, b) in blocks.iter().enumerate() {
            // Scales of the 8 rows first, then (Q4_1) their minimums.
            heads[r * 2..r * 2 + 2].copy_from_slice(&b[..2]);
            if HEAD == 4 {
                heads[16 + r * 2..16 + r * 2 + 2].copy_from_slice(&b[2..4]);
            }
        }
        // 4-byte pieces, piece k of the 8 rows side by side (see `quant_at`).
        for (k, piece) in quants.chunks_exact_mut(GROUP * 4).enumerate() {
            for (dst, b) in piece.chunks_exact_mut(4).zip(&blocks) {
                dst.copy_from_slice(&b[HEAD + k * 4..HEAD + k * 4 + 4]);
            }
        }
        if QB == QK {
            // Q8_0: -128 (which llama.cpp's quantizers never write) becomes -127, so the
            // 8-row kernel can take any weight's absolute value within a byte.
            quants
                .iter_mut()
                .for_each(|v| *v = (*v as i8).max(-127) as u8);
        }
    }
}

/// Rebuilds row `j` of an interleaved group (see [`interleave`]) in its GGUF layout
/// (embedding lookups).
pub fn deinterleave_row(kind: WeightKind, group: &[u8], j: usize, cols: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(kind.row_bytes(cols));
    if kind.act_format() == ActFormat::F32 {
        let pb = kind.row_bytes(F_PIECE);
        for k in 0..cols / F_PIECE {
            let at = f_piece_at(pb, j, k);
            out.extend_from_slice(&group[at..at + pb]);
        }
        return out;
    }
    let bb = kind.block_bytes();
    let gb = group_block_bytes(kind);
    let head = kind.head_bytes();
    let qb = bb - head;
    for i in 0..cols / QK {
        let g = &group[i * gb..(i + 1) * gb];
        out.extend_from_slice(&g[j * 2..j * 2 + 2]);
        if kind == WeightKind::Q4_1 {
            out.extend_from_slice(&g[16 + j * 2..16 + j * 2 + 2]);
        }
        let quants = &g[head * GROUP..];
        out.extend((0..qb).map(|b| quants[quant_at(j, b)]));
    }
    out
}

/// Where byte `b` of row `r`'s quants sits among an interleaved group block's quants: in
/// 4-byte pieces, piece `k` of rows 0..8 side by side (`[r0 k0] [r1 k0] … [r7 k0] [r0 k1] …`),
/// so one 32-byte load holds the same columns of all 8 rows (`Q8_0`: 4 columns; `Q4_0`/`Q4_1`:
/// 8, as 4 low nibbles and 4 high) and one broadcast activation quad multiplies them into 8
/// row sums without a horizontal add.
pub fn quant_at(r: usize, b: usize) -> usize {
    (b / 4 * GROUP + r) * 4 + b % 4
}

/// Most activation vectors [`dot_x8_multi`] takes at once.
pub const MAX_TOKENS: usize = 4;

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
        Isa::Avx2 => avx2::dot_x8_multi(kind, group, acts, out, stream),
        _ => {
            for (o, a) in out.iter_mut().zip(acts) {
                *o = portable::dot_x8(kind, group, a);
            }
        }
    }
}

/// `x[i] = e^(x[i] - max)`, returning their sum (a softmax's numerators).
pub fn exp_shifted_sum(x: &mut [f32], max: f32) -> f32 {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::exp_shifted_sum(x, max),
        _ => portable::exp_shifted_sum(x, max),
    }
}

/// The feed-forward gate: `gate[i] = act(gate[i]) * up[i]`, `act` SiLU or (`gelu`) GELU
/// in its tanh form.
pub fn gated_activation(gelu: bool, gate: &mut [f32], up: &[f32]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::gated_activation(gelu, gate, up),
        _ => gate
            .iter_mut()
            .zip(up)
            .for_each(|(g, u)| *g = activation(gelu, *g) * u),
    }
}

/// SiLU `x sigmoid(x)` or (`gelu`) GELU, tanh approximation, of one value.
pub fn activation(gelu: bool, x: f32) -> f32 {
    if gelu {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh())
    } else {
        x / (1.0 + (-x).exp())
    }
}

/// Dot product of one float weight row (`F32`/`F16`/`BF16` bytes) with f32 activations.
pub fn dot_f(kind: WeightKind, row: &[u8], act: &[f32]) -> f32 {
    debug_assert!(row.len() >= kind.row_bytes(act.len()));
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::dot_f(kind, row, act),
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
        Isa::Avx2 => avx2::dot_f_block(kind, rows, rb, grouped, acts, out, stride),
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

/// `Σ a[i] * b[i]`.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::dot_f32(a, b),
        _ => portable::dot_f32(a, b),
    }
}

/// Queries that read the same key/value head — the query heads of one KV group, for one or
/// more tokens of one sequence — and the positions each attends.
pub struct Tile<'a> {
    /// The queries (`head_dim` values each).
    pub qs: &'a [&'a [f32]],
    /// Per query, `(first, n)`: it attends positions `first..first + n`.
    pub spans: &'a [(usize, usize)],
    /// Keys, stored as `kind`: key `j` of this head starts at element `j * stride + offset`.
    pub keys: &'a [u8],
    /// Values, laid out as `keys`.
    pub values: &'a [u8],
    /// The cache's number format (`F32`, `F16` or `BF16`); scores and sums are f32 whatever
    /// it is.
    pub kind: WeightKind,
    /// Elements per position in `keys` / `values`.
    pub stride: usize,
    /// This head's first element within a position.
    pub offset: usize,
    /// Score scale (`1 / sqrt(head_dim)` for most models).
    pub scale: f32,
}

impl Tile<'_> {
    /// Each query alone through `one` (its [`Head`], scratch, output).
    fn run_each(
        &self,
        one: impl Fn(&Head<'_>, &mut Vec<f32>, &mut [f32]),
        scratch: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let hd = self.qs.first().map_or(0, |q| q.len());
        for ((q, &(first, n)), o) in self.qs.iter().zip(self.spans).zip(out.chunks_mut(hd)) {
            let at = first * self.stride * self.kind.row_bytes(1);
            let head = Head {
                q,
                keys: &self.keys[at..],
                values: &self.values[at..],
                kind: self.kind,
                stride: self.stride,
                offset: self.offset,
                n,
                scale: self.scale,
            };
            one(&head, scratch, o);
        }
    }
}

/// Attention for a [`Tile`]: query `m`'s result into `out[m * head_dim..]`. With AVX2 the
/// keys and values are read in blocks shared by all the tile's queries; every query's result
/// is the same whatever its tile-mates (it equals the result of a tile of its own).
pub fn attend_many(tile: &Tile<'_>, scratch: &mut Vec<f32>, out: &mut [f32]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::attend_many(tile, scratch, out),
        _ => tile.run_each(
            |h, sc, o| h.run(portable::dot_f32, portable::axpy, sc, o),
            scratch,
            out,
        ),
    }
}

/// One query of a [`Tile`] on its own (the portable path, and head widths the AVX2 kernel
/// does not block).
pub(crate) struct Head<'a> {
    q: &'a [f32],
    keys: &'a [u8],
    values: &'a [u8],
    kind: WeightKind,
    stride: usize,
    offset: usize,
    n: usize,
    scale: f32,
}

impl Head<'_> {
    /// The attention loop, with the instruction set's dot product and axpy (each key and
    /// value read as f32 first).
    #[inline(always)]
    pub(crate) fn run(
        &self,
        dot: impl Fn(&[f32], &[f32]) -> f32,
        axpy: impl Fn(&mut [f32], f32, &[f32]),
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let hd = self.q.len();
        let width = self.kind.row_bytes(1);
        let mut row = vec![0f32; hd];
        let read = |data: &[u8], j: usize, row: &mut [f32]| {
            let at = (j * self.stride + self.offset) * width;
            portable::dequantize_row(self.kind, &data[at..at + hd * width], row);
        };
        scores.clear();
        let mut max = f32::NEG_INFINITY;
        for j in 0..self.n {
            read(self.keys, j, &mut row);
            let sc = dot(self.q, &row) * self.scale;
            max = max.max(sc);
            scores.push(sc);
        }
        let sum = portable::exp_shifted_sum(scores, max);
        out.fill(0.0);
        let inv = 1.0 / sum;
        for (j, w) in scores.iter().enumerate() {
            read(self.values, j, &mut row);
            axpy(out, w * inv, &row);
        }
    }
}

/// Appends `src` to `dst` as little-endian values of `kind` (`F32`, `F16` or `BF16`; 16-bit
/// formats round to nearest even, as PyTorch's `.to(dtype)` and llama.cpp's cache writes do).
pub fn push_floats(kind: WeightKind, src: &[f32], dst: &mut Vec<u8>) {
    use half::slice::HalfFloatSliceExt;
    // Written into the grown tail in place (a KV append runs per layer and token: a
    // byte-by-byte `extend` there cost several times a copy).
    let start = dst.len();
    dst.resize(start + src.len() * kind.row_bytes(1), 0);
    let out = &mut dst[start..];
    match kind {
        WeightKind::F16 => put_16(
            src,
            out,
            half::f16::ZERO,
            |b, c| b.convert_from_f32_slice(c),
            half::f16::to_le_bytes,
        ),
        WeightKind::BF16 => put_16(
            src,
            out,
            half::bf16::ZERO,
            |b, c| b.convert_from_f32_slice(c),
            half::bf16::to_le_bytes,
        ),
        _ => {
            for (o, v) in out.chunks_exact_mut(4).zip(src) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// [`push_floats`] for a 16-bit format `T` into `out` (2 bytes per value), converted 64
/// values at a time (`half`'s slice conversion uses F16C where the CPU has it).
fn put_16<T: Copy>(
    src: &[f32],
    out: &mut [u8],
    zero: T,
    convert: fn(&mut [T], &[f32]),
    le_bytes: fn(T) -> [u8; 2],
) {
    let mut buf = [zero; 64];
    for (c, o) in src.chunks(buf.len()).zip(out.chunks_mut(2 * buf.len())) {
        let b = &mut buf[..c.len()];
        convert(b, c);
        for (pair, &v) in o.chunks_exact_mut(2).zip(b.iter()) {
            pair.copy_from_slice(&le_bytes(v));
        }
    }
}

/// `y[i] += a * x[i]`.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::axpy(y, a, x),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }

    /// Encodes `w` in `kind` with the reference (scalar) rules, for tests.
    fn encode(kind: WeightKind, w: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        match kind {
            WeightKind::F32 => w.iter().for_each(|x| out.extend(x.to_le_bytes())),
            WeightKind::F16 => w
                .iter()
                .for_each(|x| out.extend(half::f16::from_f32(*x).to_le_bytes())),
            WeightKind::BF16 => w
                .iter()
                .for_each(|x| out.extend(half::bf16::from_f32(*x).to_le_bytes())),
            WeightKind::Q8_0 => {
                for b in w.chunks(QK) {
                    let amax = b.iter().fold(0f32, |m, x| m.max(x.abs()));
                    let d = amax / 127.0;
                    out.extend(half::f16::from_f32(d).to_le_bytes());
                    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
                    out.extend(b.iter().map(|x| (x * id).round() as i8 as u8));
                }
            }
            WeightKind::Q4_0 | WeightKind::Q4_1 => {
                for b in w.chunks(QK) {
                    let (min, max) = b
                        .iter()
                        .fold((f32::MAX, f32::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
                    let (d, m) = if kind == WeightKind::Q4_1 {
                        ((max - min) / 15.0, min)
                    } else {
                        let amax = if max.abs() > min.abs() { max } else { min };
                        (amax / -8.0, 0.0)
                    };
                    out.extend(half::f16::from_f32(d).to_le_bytes());
                    if kind == WeightKind::Q4_1 {
                        out.extend(half::f16::from_f32(m).to_le_bytes());
                    }
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    let q = |x: f32| -> u8 {
                        if kind == WeightKind::Q4_1 {
                            ((x - m) * id + 0.5).clamp(0.0, 15.0) as u8
                        } else {
                            (x * id + 8.5).clamp(0.0, 15.0) as u8
                        }
                    };
                    for j in 0..QK / 2 {
                        out.push(q(b[j]) | (q(b[j + QK / 2]) << 4));
                    }
                }
            }
            // Checked against the `gguf` package's decoder instead (tests/kquant_tests.rs).
            WeightKind::Q4_K | WeightKind::Q5_K | WeightKind::Q6_K => unimplemented!(),
        }
        out
    }

    const KINDS: [WeightKind; 6] = [
        WeightKind::F32,
        WeightKind::F16,
        WeightKind::BF16,
        WeightKind::Q4_0,
        WeightKind::Q4_1,
        WeightKind::Q8_0,
    ];

    #[test]
    fn attention_kernel_agrees_with_the_portable_loop() {
        let mut seed = 3;
        for kind in [WeightKind::F32, WeightKind::F16, WeightKind::BF16] {
            for hd in [64usize, 72, 256, 12] {
                let (heads, stride) = (3, 3 * hd);
                for n in [1usize, 3, 4, 5, 9, 37] {
                    let q: Vec<f32> = (0..hd).map(|_| lcg(&mut seed)).collect();
                    let (mut keys, mut values) = (Vec::new(), Vec::new());
                    let fk: Vec<f32> = (0..n * stride).map(|_| lcg(&mut seed)).collect();
                    let fv: Vec<f32> = (0..n * stride).map(|_| lcg(&mut seed)).collect();
                    push_floats(kind, &fk, &mut keys);
                    push_floats(kind, &fv, &mut values);
                    for h in 0..heads {
                        let mut scores = Vec::new();
                        let mut fast = vec![9f32; hd];
                        let scale = 1.0 / (hd as f32).sqrt();
                        let tile = Tile {
                            qs: &[&q],
                            spans: &[(0, n)],
                            keys: &keys,
                            values: &values,
                            kind,
                            stride,
                            offset: h * hd,
                            scale,
                        };
                        attend_many(&tile, &mut scores, &mut fast);
                        let head = Head {
                            q: &q,
                            keys: &keys,
                            values: &values,
                            kind,
                            stride,
                            offset: h * hd,
                            n,
                            scale,
                        };
                        let mut slow = vec![0f32; hd];
                        head.run(portable::dot_f32, portable::axpy, &mut scores, &mut slow);
                        for (a, b) in fast.iter().zip(&slow) {
                            assert!((a - b).abs() <= 1e-5, "{kind:?} hd {hd} n {n}: {a} vs {b}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn interleaved_groups_give_back_every_row() {
        let mut seed = 5;
        for kind in [
            WeightKind::Q4_0,
            WeightKind::Q4_1,
            WeightKind::Q8_0,
            WeightKind::F32,
            WeightKind::F16,
            WeightKind::BF16,
        ] {
            let cols = 96;
            let n = kind.group_rows(cols).expect("an interleaved kind");
            let rows: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let w: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
                    encode(kind, &w)
                })
                .collect();
            let group = interleave(kind, &rows.concat(), cols);
            for (j, row) in rows.iter().enumerate() {
                assert_eq!(
                    &deinterleave_row(kind, &group, j, cols),
                    row,
                    "{kind:?} row {j}"
                );
            }
        }
    }

    #[test]
    fn q8_0_minus_128_is_read_as_minus_127_by_the_8_row_kernels() {
        let mut seed = 11;
        let cols = 64;
        let mut rows: Vec<u8> = (0..GROUP)
            .flat_map(|_| {
                let w: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
                encode(WeightKind::Q8_0, &w)
            })
            .collect();
        rows[2] = 0x80; // row 0, block 0, first quant
        let group = interleave(WeightKind::Q8_0, &rows, cols);
        let clamped = deinterleave_row(WeightKind::Q8_0, &group, 0, cols);
        assert_eq!(clamped[2] as i8, -127);
        let x: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
        let mut xq = vec![BlockQ8::default(); cols / QK];
        quantize_row(&x, &mut xq);
        let want = portable::dot_q(WeightKind::Q8_0, &clamped, &xq);
        let got = dot_x8(WeightKind::Q8_0, &group, &xq)[0];
        assert!(
            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
            "{got} vs {want}"
        );
    }

    #[test]
    fn grouped_float_rows_equal_row_major_bit_for_bit() {
        // 8 rows (two groups of 4), 1 to 5 tokens (tiles of 3, 2 and 1).
        let mut seed = 11;
        for cols in [8usize, 64, 576] {
            for kind in [WeightKind::F32, WeightKind::F16, WeightKind::BF16] {
                assert_eq!(kind.group_rows(cols), Some(F_GROUP));
                let rows: Vec<u8> = (0..8)
                    .flat_map(|_| {
                        encode(kind, &(0..cols).map(|_| lcg(&mut seed)).collect::<Vec<_>>())
                    })
                    .collect();
                let rb = kind.row_bytes(cols);
                let grouped: Vec<u8> = rows
                    .chunks_exact(rb * F_GROUP)
                    .flat_map(|g| interleave(kind, g, cols))
                    .collect();
                for (r, row) in rows.chunks_exact(rb).enumerate() {
                    let g = &grouped[r / F_GROUP * F_GROUP * rb..][..F_GROUP * rb];
                    assert_eq!(deinterleave_row(kind, g, r % F_GROUP, cols), row);
                }
                for n in 1..=5 {
                    let acts: Vec<Vec<f32>> = (0..n)
                        .map(|_| (0..cols).map(|_| lcg(&mut seed)).collect())
                        .collect();
                    let acts: Vec<&[f32]> = acts.iter().map(Vec::as_slice).collect();
                    let mut plain = vec![0f32; n * 8];
                    let mut tiled = vec![0f32; n * 8];
                    dot_f_block(kind, &rows, cols, false, &acts, &mut plain, 8);
                    dot_f_block(kind, &grouped, cols, true, &acts, &mut tiled, 8);
                    assert_eq!(plain, tiled, "{kind:?} cols {cols}, {n} tokens");
                    for (r, row) in rows.chunks_exact(rb).enumerate() {
                        assert_eq!(tiled[r], dot_f(kind, row, acts[0]), "{kind:?}: == alone");
                    }
                }
            }
        }
        assert_eq!(WeightKind::F32.group_rows(12), None);
        assert_eq!(WeightKind::Q4_K.group_rows(256), None);
    }

    #[test]
    fn float_tiles_equal_single_rows_at_any_width() {
        // Widths with tails after the 8- and 16-value vector steps, and a 7-row matrix
        // (tiles of 4 or 2 rows, then single rows), 5 tokens (tiles of 3, then 2).
        let mut seed = 5;
        for cols in [8usize, 24, 40, 600] {
            let acts: Vec<Vec<f32>> = (0..5)
                .map(|_| (0..cols).map(|_| lcg(&mut seed)).collect())
                .collect();
            let acts: Vec<&[f32]> = acts.iter().map(Vec::as_slice).collect();
            for kind in [WeightKind::F32, WeightKind::F16, WeightKind::BF16] {
                let w: Vec<Vec<f32>> = (0..7)
                    .map(|_| (0..cols).map(|_| lcg(&mut seed)).collect())
                    .collect();
                let rows: Vec<u8> = w.iter().flat_map(|r| encode(kind, r)).collect();
                let mut block = vec![0f32; 5 * 7];
                dot_f_block(kind, &rows, cols, false, &acts, &mut block, 7);
                for (r, row) in rows.chunks_exact(kind.row_bytes(cols)).enumerate() {
                    for (t, a) in acts.iter().enumerate() {
                        let one = dot_f(kind, row, a);
                        assert_eq!(block[t * 7 + r], one, "{kind:?} cols {cols}: tile == alone");
                        let slow = portable::dot_f(kind, row, a);
                        assert!(
                            (one - slow).abs() <= 1e-5 * (1.0 + slow.abs()) * cols as f32,
                            "{kind:?} cols {cols}: {one} vs portable {slow}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_tile_of_queries_equals_each_query_alone() {
        let mut seed = 21;
        for kind in [WeightKind::F32, WeightKind::F16, WeightKind::BF16] {
            for hd in [64usize, 256, 12] {
                let (kv_heads, n) = (2, 70);
                let stride = kv_heads * hd;
                let mut keys = Vec::new();
                let mut values = Vec::new();
                let fk: Vec<f32> = (0..n * stride).map(|_| lcg(&mut seed)).collect();
                let fv: Vec<f32> = (0..n * stride).map(|_| lcg(&mut seed)).collect();
                push_floats(kind, &fk, &mut keys);
                push_floats(kind, &fv, &mut values);
                let qs: Vec<Vec<f32>> = (0..6)
                    .map(|_| (0..hd).map(|_| lcg(&mut seed)).collect())
                    .collect();
                let qs: Vec<&[f32]> = qs.iter().map(Vec::as_slice).collect();
                // Causal spans of consecutive tokens, one with a sliding window.
                let spans = [(0, 61), (0, 61), (0, 62), (0, 62), (40, 23), (0, 1)];
                let tile = |qs: &'_ [&'_ [f32]], spans: &'_ [(usize, usize)]| {
                    let mut out = vec![0f32; qs.len() * hd];
                    let t = Tile {
                        qs,
                        spans,
                        keys: &keys,
                        values: &values,
                        kind,
                        stride,
                        offset: hd,
                        scale: 0.125,
                    };
                    attend_many(&t, &mut Vec::new(), &mut out);
                    out
                };
                let out = tile(&qs, &spans);
                for (m, (q, span)) in qs.iter().zip(&spans).enumerate() {
                    let one = tile(&[q], &[*span]);
                    assert_eq!(
                        &out[m * hd..(m + 1) * hd],
                        &one[..],
                        "{kind:?} hd {hd} query {m}"
                    );
                    // Against f64 softmax attention over the stored (rounded) keys and values.
                    let (first, len) = *span;
                    let read = |data: &[u8], j: usize| {
                        let w = kind.row_bytes(1);
                        let mut row = vec![0f32; hd];
                        let at = (j * stride + hd) * w;
                        portable::dequantize_row(kind, &data[at..at + hd * w], &mut row);
                        row
                    };
                    let scores: Vec<f64> = (first..first + len)
                        .map(|j| {
                            let k = read(&keys, j);
                            q.iter()
                                .zip(&k)
                                .map(|(a, b)| *a as f64 * *b as f64)
                                .sum::<f64>()
                                * 0.125
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                    for d in 0..hd {
                        let want: f64 = (first..first + len)
                            .zip(&scores)
                            .map(|(j, s)| (s - max).exp() / sum * read(&values, j)[d] as f64)
                            .sum();
                        let got = out[m * hd + d] as f64;
                        assert!(
                            (got - want).abs() < 1e-5,
                            "{kind:?} hd {hd} query {m} dim {d}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn vector_exp_and_activations_match_f64_math() {
        // Softmax numerators over a wide range (including far below the maximum).
        let xs: Vec<f32> = (0..2001).map(|i| (i as f32 - 1000.0) * 0.11).collect();
        let mut e = xs.clone();
        let max = 110.0; // at least every value: arguments from -220 to 0
        let sum = exp_shifted_sum(&mut e, max);
        let mut want_sum = 0f64;
        for (x, got) in xs.iter().zip(&e) {
            let want = ((*x - max) as f64).exp();
            want_sum += want;
            assert!(
                (*got as f64 - want).abs() <= 2e-7 * want + 1e-37,
                "e^{} = {got}, want {want}",
                x - max
            );
        }
        assert!((sum as f64 - want_sum).abs() <= 1e-6 * want_sum);
        // SiLU and GELU (tanh form), against the textbook formulas in f64.
        let up: Vec<f32> = xs.iter().map(|x| 1.0 + x * 0.01).collect();
        for gelu in [false, true] {
            let mut g: Vec<f32> = xs.iter().map(|x| x * 0.2).collect();
            gated_activation(gelu, &mut g, &up);
            for ((x, u), got) in xs.iter().zip(&up).zip(&g) {
                let x = (x * 0.2) as f64;
                let act = if gelu {
                    let t =
                        ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh();
                    0.5 * x * (1.0 + t)
                } else {
                    x / (1.0 + (-x).exp())
                };
                let want = act * *u as f64;
                assert!(
                    (*got as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "gelu={gelu} x={x}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn every_kind_dequantizes_close_to_the_source() {
        let mut seed = 7;
        let w: Vec<f32> = (0..256).map(|_| lcg(&mut seed)).collect();
        for kind in KINDS {
            let bytes = encode(kind, &w);
            assert_eq!(bytes.len(), kind.row_bytes(w.len()), "{kind:?}");
            let mut back = vec![0f32; w.len()];
            dequantize_row(kind, &bytes, &mut back);
            let tol = match kind {
                WeightKind::F32 => 0.0,
                WeightKind::F16 => 1e-3,
                WeightKind::BF16 => 1e-2,
                WeightKind::Q8_0 => 1e-2,
                _ => 0.14,
            };
            for (a, b) in w.iter().zip(&back) {
                assert!((a - b).abs() <= tol, "{kind:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn simd_and_portable_kernels_agree_with_the_dequantized_dot() {
        let mut seed = 42;
        for cols in [32usize, 64, 576, 1536] {
            let w: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
            let x: Vec<f32> = (0..cols).map(|_| lcg(&mut seed) * 3.0).collect();
            let mut xq = vec![BlockQ8::default(); cols / QK];
            quantize_row(&x, &mut xq);
            for kind in KINDS {
                let bytes = encode(kind, &w);
                let mut wd = vec![0f32; cols];
                dequantize_row(kind, &bytes, &mut wd);
                let exact: f64 = wd.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
                let (fast, slow) = if kind.is_quantized() {
                    (dot_q(kind, &bytes, &xq), portable::dot_q(kind, &bytes, &xq))
                } else {
                    (dot_f(kind, &bytes, &x), portable::dot_f(kind, &bytes, &x))
                };
                // Activation quantization error: at most half a step per value.
                let tol = if kind.is_quantized() {
                    wd.iter().map(|v| v.abs()).sum::<f32>() * 3.0 / 254.0 + 1e-3
                } else {
                    1e-3 * cols as f32
                };
                assert!(
                    (fast as f64 - exact).abs() <= tol as f64,
                    "{kind:?} cols {cols}: fast {fast} vs exact {exact}"
                );
                assert!(
                    (fast - slow).abs() <= 1e-4 * (1.0 + exact.abs() as f32),
                    "{kind:?} cols {cols}: {:?} {fast} vs portable {slow}",
                    isa()
                );
            }
            for kind in [WeightKind::Q4_0, WeightKind::Q4_1, WeightKind::Q8_0] {
                let rows: Vec<u8> = (0..GROUP)
                    .flat_map(|_| {
                        let w: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
                        encode(kind, &w)
                    })
                    .collect();
                let rb = kind.row_bytes(cols);
                let group = interleave(kind, &rows, cols);
                assert_eq!(group.len(), rows.len());
                let eight = dot_x8(kind, &group, &xq);
                let mut xq2 = xq.clone();
                xq2.reverse();
                for n in 2..=MAX_TOKENS {
                    let acts: Vec<&[BlockQ8]> = (0..n)
                        .map(|t| if t % 2 == 1 { &xq[..] } else { &xq2[..] })
                        .collect();
                    let mut multi = [[0f32; GROUP]; MAX_TOKENS];
                    dot_x8_multi(kind, &group, &acts, &mut multi, n % 2 == 0);
                    let alone2 = dot_x8(kind, &group, &xq2);
                    for (t, got) in multi[..n].iter().enumerate() {
                        let want = if t % 2 == 1 { &eight } else { &alone2 };
                        assert_eq!(
                            got, want,
                            "{kind:?}: token {t} of {n} == alone, bit for bit"
                        );
                    }
                }
                let slow = portable::dot_x8(kind, &group, &xq);
                for r in 0..GROUP {
                    let row = &rows[r * rb..(r + 1) * rb];
                    assert_eq!(
                        deinterleave_row(kind, &group, r, cols),
                        row,
                        "{kind:?} row {r}"
                    );
                    let one = dot_q(kind, row, &xq);
                    assert!(
                        (eight[r] - one).abs() <= 1e-4 * (1.0 + one.abs()),
                        "{kind:?} x8 row {r}: {} vs {one}",
                        eight[r]
                    );
                    assert!((slow[r] - one).abs() <= 1e-4 * (1.0 + one.abs()));
                }
            }
            for kind in [WeightKind::F32, WeightKind::F16, WeightKind::BF16] {
                // 9 rows: two 4-row tiles and one single row.
                let rows: Vec<u8> = (0..9)
                    .flat_map(|_| {
                        let w: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
                        encode(kind, &w)
                    })
                    .collect();
                let x2: Vec<f32> = x.iter().rev().copied().collect();
                let acts: [&[f32]; 5] = [&x2, &x, &x2, &x, &x];
                let mut block = vec![0f32; 5 * 9];
                dot_f_block(kind, &rows, cols, false, &acts, &mut block, 9);
                let rb = kind.row_bytes(cols);
                for (r, row) in rows.chunks_exact(rb).enumerate() {
                    for (t, a) in acts.iter().enumerate() {
                        assert_eq!(
                            block[t * 9 + r],
                            dot_f(kind, row, a),
                            "{kind:?}: tile == alone"
                        );
                    }
                    let slow = portable::dot_f(kind, row, &x);
                    assert!((block[9 + r] - slow).abs() <= 1e-4 * (1.0 + slow.abs()));
                }
            }
            let mut slow_q = vec![BlockQ8::default(); cols / QK];
            portable::quantize_row(&x, &mut slow_q);
            assert_eq!(
                xq,
                slow_q,
                "{:?} quantization == portable, bit for bit",
                isa()
            );
            let y: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
            let d = dot_f32(&x, &y);
            let e: f32 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
            assert!((d - e).abs() < 1e-3, "dot_f32 {d} vs {e}");
            let mut z = y.clone();
            axpy(&mut z, 0.5, &x);
            for i in 0..cols {
                assert!((z[i] - (y[i] + 0.5 * x[i])).abs() < 1e-6);
            }
        }
    }
}
