//! llama.cpp's "K-quant" formats (`Q4_K`, `Q5_K`, `Q6_K`: 256-value super-blocks with
//! quantized per-sub-block scales) multiplied the way llama.cpp multiplies them: against
//! activations quantized per 256 values ([`BlockQ8K`]), integer sums per super-block, one
//! float multiply-add per super-block.
//!
//! Layouts (little-endian, per super-block of 256 values):
//! - `Q4_K` (144 bytes): `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`; value
//!   `d * sc[s] * q - dmin * m[s]` with 8 sub-blocks of 32, 6-bit `sc`/`m`, 4-bit `q`.
//! - `Q5_K` (176 bytes): as `Q4_K` plus `qh: [u8; 32]` (the fifth bit) before `qs`.
//! - `Q6_K` (210 bytes): `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`; value
//!   `d * sc[s] * (q - 32)` with 16 sub-blocks of 16, 6-bit `q`.

use super::format::{BlockQ8K, QK_K, WeightKind, f16_at};

/// The portable body of [`quantize_row_k`](super::quantize_row_k) (the reference the AVX2
/// version equals bit for bit).
pub(crate) fn quantize_row_k_body(x: &[f32], out: &mut [BlockQ8K]) {
    for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xs {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *blk = BlockQ8K::default();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, v) in blk.qs.iter_mut().zip(xs) {
            *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
        }
        blk.fill_bsums();
        blk.d = 1.0 / iscale;
    }
}

/// The 8 six-bit scales and minimums of a `Q4_K`/`Q5_K` super-block (12 packed bytes).
#[inline]
pub(crate) fn scales_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        if j < 4 {
            sc[j] = s[j] & 63;
            m[j] = s[j + 4] & 63;
        } else {
            sc[j] = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
            m[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
    }
    (sc, m)
}

/// One super-block unpacked: the 256 quants as small integers, the sub-block scales, and
/// the float factors (also what the `Q4_K` group layout is built from and read back into,
/// see [`kgroup`](super::kgroup)).
pub(crate) struct Unpacked {
    pub(crate) q: [i8; QK_K],
    /// Per sub-block scale (8 sub-blocks of 32, or 16 of 16 for `Q6_K`).
    pub(crate) sc: [i32; 16],
    /// Per sub-block minimum (`Q4_K`/`Q5_K`; 8 of them).
    pub(crate) m: [i32; 8],
    pub(crate) d: f32,
    pub(crate) dmin: f32,
}

impl Unpacked {
    pub(crate) fn new() -> Self {
        Self {
            q: [0; QK_K],
            sc: [0; 16],
            m: [0; 8],
            d: 0.0,
            dmin: 0.0,
        }
    }

    /// Decodes super-block `b` of `kind`.
    #[inline(always)]
    pub(crate) fn load(&mut self, kind: WeightKind, b: &[u8]) {
        match kind {
            WeightKind::Q4_K | WeightKind::Q5_K => {
                self.d = f16_at(b, 0);
                self.dmin = f16_at(b, 2);
                let (sc, m) = scales_mins(&b[4..16]);
                for j in 0..8 {
                    self.sc[j] = sc[j] as i32;
                    self.m[j] = m[j] as i32;
                }
                let (qh, qs) = if kind == WeightKind::Q5_K {
                    (Some(&b[16..48]), &b[48..176])
                } else {
                    (None, &b[16..144])
                };
                // 64 values per 32 bytes: low nibbles first, then high nibbles.
                for j in 0..4 {
                    let src = &qs[32 * j..32 * j + 32];
                    for l in 0..32 {
                        let (mut lo, mut hi) = (src[l] & 0x0F, src[l] >> 4);
                        if let Some(qh) = qh {
                            lo |= ((qh[l] >> (2 * j)) & 1) << 4;
                            hi |= ((qh[l] >> (2 * j + 1)) & 1) << 4;
                        }
                        self.q[64 * j + l] = lo as i8;
                        self.q[64 * j + 32 + l] = hi as i8;
                    }
                }
            }
            WeightKind::Q6_K => {
                let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
                self.d = f16_at(b, 208);
                for (o, s) in self.sc.iter_mut().zip(sc) {
                    *o = *s as i8 as i32;
                }
                for n in 0..2 {
                    let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
                    let q = &mut self.q[128 * n..];
                    for l in 0..32 {
                        let h = qh[l];
                        q[l] = ((ql[l] & 0x0F) | ((h & 3) << 4)) as i8 - 32;
                        q[l + 32] = ((ql[l + 32] & 0x0F) | (((h >> 2) & 3) << 4)) as i8 - 32;
                        q[l + 64] = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
                        q[l + 96] = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
                    }
                }
            }
            _ => unreachable!("{kind:?} is not a K-quant"),
        }
    }

    /// Values per sub-block scale.
    fn sub(kind: WeightKind) -> usize {
        if kind == WeightKind::Q6_K { 16 } else { 32 }
    }

    /// This super-block · one activation block.
    #[inline(always)]
    pub(crate) fn dot(&self, kind: WeightKind, a: &BlockQ8K) -> f32 {
        let sub = Self::sub(kind);
        let mut isum = 0i32;
        for (s, (q, y)) in self
            .q
            .chunks_exact(sub)
            .zip(a.qs.chunks_exact(sub))
            .enumerate()
        {
            let d: i32 = q.iter().zip(y).map(|(a, b)| *a as i32 * *b as i32).sum();
            isum += self.sc[s] * d;
        }
        let mut total = self.d * a.d * isum as f32;
        if kind != WeightKind::Q6_K {
            let msum: i32 = a
                .bsums
                .iter()
                .enumerate()
                .map(|(j, s)| *s as i32 * self.m[j / 2])
                .sum();
            total -= self.dmin * a.d * msum as f32;
        }
        total
    }

    pub(crate) fn dequantize(&self, kind: WeightKind, out: &mut [f32]) {
        let sub = Self::sub(kind);
        for (i, o) in out.iter_mut().enumerate() {
            let s = i / sub;
            let mut v = self.d * self.sc[s] as f32 * self.q[i] as f32;
            if kind != WeightKind::Q6_K {
                v -= self.dmin * self.m[s] as f32;
            }
            *o = v;
        }
    }
}

/// The portable body of [`dot_k_multi`](super::dot_k_multi) (CPUs without AVX2; the reference
/// the SIMD kernels equal within float rounding: they keep the integer sums exact but add the
/// scaled super-blocks in vector lanes).
pub(crate) fn dot_k_multi_body(
    kind: WeightKind,
    row: &[u8],
    acts: &[&[BlockQ8K]],
    out: &mut [f32],
) {
    let bb = kind.block_bytes();
    out[..acts.len()].fill(0.0);
    let mut u = Unpacked::new();
    for (i, b) in row.chunks_exact(bb).enumerate() {
        u.load(kind, b);
        for (o, a) in out.iter_mut().zip(acts) {
            *o += u.dot(kind, &a[i]);
        }
    }
}

/// Writes the first `out.len()` values of a K-quant row as f32.
pub fn dequantize_row_k(kind: WeightKind, row: &[u8], out: &mut [f32]) {
    let mut u = Unpacked::new();
    for (b, o) in row
        .chunks_exact(kind.block_bytes())
        .zip(out.chunks_mut(QK_K))
    {
        u.load(kind, b);
        if o.len() == QK_K {
            u.dequantize(kind, o);
        } else {
            let mut full = [0f32; QK_K];
            u.dequantize(kind, &mut full);
            o.copy_from_slice(&full[..o.len()]);
        }
    }
}
