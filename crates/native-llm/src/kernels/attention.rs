//! The attention work unit ([`Tile`]: queries that read one key/value head) and the plain
//! per-query loop ([`Head`]) that the portable path runs and the AVX2 path falls back to.

use super::format::{BlockQ8, QK, WeightKind};
use super::portable;

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
    /// The cache's number format (`F32`, `F16`, `BF16`, or `Q8_0` when `stride` and
    /// `offset` are multiples of 32); scores and sums are f32 whatever it is.
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
    pub(super) fn run_each(
        &self,
        one: impl Fn(&Head<'_>, &mut Vec<f32>, &mut [f32]),
        scratch: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let hd = self.qs.first().map_or(0, |q| q.len());
        for ((q, &(first, n)), o) in self.qs.iter().zip(self.spans).zip(out.chunks_mut(hd)) {
            let at = self.kind.row_bytes(first * self.stride);
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

/// One query of a [`Tile`] on its own (the portable path, and head widths the AVX2 kernel
/// does not block).
pub(crate) struct Head<'a> {
    pub(super) q: &'a [f32],
    pub(super) keys: &'a [u8],
    pub(super) values: &'a [u8],
    pub(super) kind: WeightKind,
    pub(super) stride: usize,
    pub(super) offset: usize,
    pub(super) n: usize,
    pub(super) scale: f32,
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
        let mut row = vec![0f32; hd];
        scores.clear();
        for j in 0..self.n {
            self.read(self.keys, j, &mut row);
            scores.push(dot(self.q, &row) * self.scale);
        }
        self.weigh(axpy, scores, out);
    }

    /// [`Head::run`] for a `Q8_0` cache the way llama.cpp's CPU attention reads one: the
    /// query quantized to [`BlockQ8`] (`quantize`) and multiplied against each key's blocks
    /// in 8-bit integers (`dot_q`), each value dequantized to f32 and added (`axpy`).
    #[inline(always)]
    pub(crate) fn run_q8(
        &self,
        quantize: impl Fn(&[f32], &mut [BlockQ8]),
        dot_q: impl Fn(WeightKind, &[u8], &[BlockQ8]) -> f32,
        axpy: impl Fn(&mut [f32], f32, &[f32]),
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let hd = self.q.len();
        let mut q = vec![BlockQ8::default(); hd / QK];
        quantize(self.q, &mut q);
        scores.clear();
        for j in 0..self.n {
            scores.push(dot_q(WeightKind::Q8_0, self.bytes(self.keys, j), &q) * self.scale);
        }
        self.weigh(axpy, scores, out);
    }

    /// The stored bytes of key or value `j`.
    fn bytes<'d>(&self, data: &'d [u8], j: usize) -> &'d [u8] {
        let at = self.kind.row_bytes(j * self.stride + self.offset);
        &data[at..at + self.kind.row_bytes(self.q.len())]
    }

    /// Key or value `j` as f32.
    fn read(&self, data: &[u8], j: usize, row: &mut [f32]) {
        portable::dequantize_row(self.kind, self.bytes(data, j), row);
    }

    /// Softmax of `scores` and the weighted sum of the values into `out`.
    #[inline(always)]
    fn weigh(&self, axpy: impl Fn(&mut [f32], f32, &[f32]), scores: &mut [f32], out: &mut [f32]) {
        let mut row = vec![0f32; self.q.len()];
        let max = scores.iter().fold(f32::NEG_INFINITY, |a, v| a.max(*v));
        let sum = portable::exp_shifted_sum(scores, max);
        out.fill(0.0);
        let inv = 1.0 / sum;
        for (j, w) in scores.iter().enumerate() {
            self.read(self.values, j, &mut row);
            axpy(out, w * inv, &row);
        }
    }
}
