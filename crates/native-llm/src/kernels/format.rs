//! Storage formats: how a weight row, an activation block or a cache entry is laid out in
//! bytes ([`WeightKind`], [`BlockQ8`], [`BlockQ8K`]), the block and group sizes every kernel
//! shares, and reading / writing single values. The leaf of the kernels: it uses nothing else
//! here.

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
    /// 32 5-bit values with one f16 scale: `(q - 16) * d`; per block `d`, the 32 fifth bits
    /// `qh` (a little-endian u32, bit `j` for value `j`), then the low 4 bits as `Q4_0` packs
    /// them (value `j` in the low nibble of byte `j`, value `16 + j` in its high nibble).
    Q5_0,
    /// 32 5-bit values with an f16 scale and minimum: `q * d + m`; `d`, `m`, then `Q5_0`'s
    /// `qh` and nibbles.
    Q5_1,
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
            WeightKind::Q4_0
            | WeightKind::Q4_1
            | WeightKind::Q5_0
            | WeightKind::Q5_1
            | WeightKind::Q8_0 => QK,
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
            WeightKind::Q5_0 => 22,
            WeightKind::Q5_1 => 24,
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

    /// Bytes before the quants in a quantized block: the f16 scale, and the f16 minimum of
    /// `Q4_1` and `Q5_1` (for `Q5_0`/`Q5_1` the quants are `qh` and the nibbles).
    pub fn head_bytes(self) -> usize {
        if self.has_min() { 4 } else { 2 }
    }

    /// Whether a block stores a minimum after its scale (`Q4_1`, `Q5_1`).
    pub fn has_min(self) -> bool {
        matches!(self, WeightKind::Q4_1 | WeightKind::Q5_1)
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
    /// repacked for the multi-row kernels ([`interleave`](super::interleave)): [`GROUP`] for
    /// `Q4_0`/`Q4_1`/`Q5_0`/`Q5_1`/`Q8_0`, [`F_GROUP`] for floats whose width is a multiple
    /// of [`F_PIECE`]; `None` otherwise.
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
            WeightKind::Q5_0 => "Q5_0",
            WeightKind::Q5_1 => "Q5_1",
            WeightKind::Q8_0 => "Q8_0",
            WeightKind::Q4_K => "Q4_K",
            WeightKind::Q5_K => "Q5_K",
            WeightKind::Q6_K => "Q6_K",
        }
    }
}

/// 32 activation values quantized to signed bytes: `x ≈ d * q`, with `s = d * Σq`
/// (the term the offsets of `Q4_0`/`Q5_0` and the minimums of `Q4_1`/`Q5_1` need).
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

/// Rows per interleaved group of a quantized matrix (see [`interleave`](super::interleave)).
pub const GROUP: usize = 8;

/// Rows per interleaved group of a float matrix (see [`interleave`](super::interleave)).
pub const F_GROUP: usize = 4;

/// Columns per piece of an interleaved float group (one 8-lane vector).
pub const F_PIECE: usize = 8;

/// Most activation vectors [`dot_x8_multi`](super::dot_x8_multi) takes at once: the
/// AVX-512 kernels unpack each block once for up to 8 tokens (16 vector sums in flight); the
/// AVX2 kernels, with half the registers, take them 4 at a time.
pub const MAX_TOKENS: usize = 8;

/// Most tokens of a step that stream through the weights once, in large runs of rows with
/// software prefetch (decode steps of a few sequences); more tokens reuse each block of
/// rows from cache.
pub const STREAM_TOKENS: usize = 4;

/// Most activation vectors [`dot_k_multi`](super::dot_k_multi) takes at once: a K-quant
/// super-block costs more to unpack than a 32-value block, so prefill shares each unpacked
/// super-block among more tokens (8 rather than 4: pp512 on Qwen2.5-Coder-1.5B Q4_K_M
/// 38.9 -> 42.9 t/s at 1 thread, unchanged at 2, AVX-512 on Zen 4).
pub const K_TOKENS: usize = 8;

/// Values per K-quant super-block.
pub const QK_K: usize = 256;

/// 256 activation values quantized to signed bytes with one f32 scale (`x ≈ d * q`), and the
/// sums of each 16 quants (the `Q4_K`/`Q5_K` minimum terms need them).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    /// Scale.
    pub d: f32,
    /// The quantized values.
    pub qs: [i8; QK_K],
    /// `Σ qs[16j..16j + 16]` for each `j`.
    pub bsums: [i16; QK_K / 16],
}

impl BlockQ8K {
    /// Sets `bsums` from `qs`.
    pub(crate) fn fill_bsums(&mut self) {
        for (s, qs) in self.bsums.iter_mut().zip(self.qs.chunks_exact(16)) {
            *s = qs.iter().map(|&q| q as i16).sum();
        }
    }
}

impl Default for BlockQ8K {
    fn default() -> Self {
        Self {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        }
    }
}

/// The little-endian f16 at bytes `i..i + 2` of `b`, as f32.
#[inline]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Appends `src` to `dst` as little-endian values of `kind` (`F32`, `F16` or `BF16`; 16-bit
/// formats round to nearest even, as PyTorch's `.to(dtype)` and llama.cpp's cache writes do),
/// or as `Q8_0` blocks (`src.len()` a multiple of [`QK`]; see [`push_q8_0`]).
pub fn push_floats(kind: WeightKind, src: &[f32], dst: &mut Vec<u8>) {
    if kind == WeightKind::Q8_0 {
        push_q8_0(src, dst);
        return;
    }
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

/// Appends `src` (a multiple of [`QK`] values) to `dst` as `Q8_0` blocks the way llama.cpp's
/// x86 `quantize_row_q8_0` writes its KV cache (`-ctk q8_0 -ctv q8_0`): per 32 values, `amax`
/// their largest magnitude, the f16 of `amax / 127` as the scale, and each value times `127 /
/// amax` rounded to nearest (ties to even) as a signed byte.
fn push_q8_0(src: &[f32], dst: &mut Vec<u8>) {
    debug_assert!(src.len().is_multiple_of(QK));
    let start = dst.len();
    dst.resize(start + WeightKind::Q8_0.row_bytes(src.len()), 0);
    for (xs, b) in src
        .chunks_exact(QK)
        .zip(dst[start..].chunks_exact_mut(WeightKind::Q8_0.block_bytes()))
    {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        b[..2].copy_from_slice(&half::f16::from_f32(amax / 127.0).to_le_bytes());
        for (q, v) in b[2..].iter_mut().zip(xs) {
            *q = (v * id).round_ties_even() as i8 as u8;
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
