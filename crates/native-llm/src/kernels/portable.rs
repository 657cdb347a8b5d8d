//! The portable kernels: plain Rust, correct on every target, and the reference the SIMD
//! kernels are tested against.

use half::{bf16, f16};

use super::format::{BlockQ8, GROUP, QK, WeightKind, f16_at};
use super::kquants;
use super::layout::{group_block_bytes, quant_at};

fn bf16_at(b: &[u8], i: usize) -> f32 {
    bf16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Quantizes 32-value blocks of `x` to signed bytes (round to nearest, ties to even), the way
/// llama.cpp's x86 code does: the values are scaled by the exact `amax / 127`, the stored
/// scale and scaled sum are rounded to f16 (so results agree with llama.cpp's to float
/// rounding).
pub fn quantize_row(x: &[f32], out: &mut [BlockQ8]) {
    for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in blk.qs.iter_mut().zip(xs) {
            let r = (v * id).round_ties_even() as i8;
            *q = r;
            sum += r as i32;
        }
        blk.d = f16::from_f32(d).to_f32();
        blk.s = f16::from_f32(d * sum as f32).to_f32();
    }
}

/// `Σ q[j] * y[j]` over 32 nibbles (low nibbles are values 0..16, high ones 16..32).
fn nibble_dot(qs: &[u8], y: &[i8; QK]) -> i32 {
    let (lo, hi) = y.split_at(QK / 2);
    qs.iter()
        .zip(lo.iter().zip(hi))
        .map(|(q, (l, h))| (q & 0x0F) as i32 * *l as i32 + (q >> 4) as i32 * *h as i32)
        .sum()
}

/// `Σ q[j] * y[j]` over the 32 5-bit values of a `Q5_0`/`Q5_1` block's quants (`qh`, then
/// the nibbles; values 0..32, before `Q5_0`'s offset).
fn q5_dot(qs: &[u8], y: &[i8; QK]) -> i32 {
    let qh = u32::from_le_bytes([qs[0], qs[1], qs[2], qs[3]]);
    (0..QK)
        .map(|j| q5_value(qh, &qs[4..], j) as i32 * y[j] as i32)
        .sum()
}

/// Value `j` (0..32, before `Q5_0`'s offset) of a `Q5_0`/`Q5_1` block with fifth bits `qh`
/// and nibbles `nibs`, as ggml's `dequantize_row_q5_0` reads them.
fn q5_value(qh: u32, nibs: &[u8], j: usize) -> u8 {
    let nib = if j < QK / 2 {
        nibs[j] & 0x0F
    } else {
        nibs[j - QK / 2] >> 4
    };
    nib | (((qh >> j) & 1) as u8) << 4
}

/// One quantized block (scale `d`, `Q4_1`/`Q5_1` minimum `m`, quants `qs`) · one activation
/// block.
fn block_dot(kind: WeightKind, d: f32, m: f32, qs: &[u8], a: &BlockQ8) -> f32 {
    match kind {
        WeightKind::Q8_0 => {
            let s: i32 = qs
                .iter()
                .zip(&a.qs)
                .map(|(w, y)| (*w as i8 as i32) * (*y as i32))
                .sum();
            d * a.d * s as f32
        }
        WeightKind::Q4_1 => d * a.d * nibble_dot(qs, &a.qs) as f32 + m * a.s,
        WeightKind::Q4_0 => d * a.d * nibble_dot(qs, &a.qs) as f32 - 8.0 * d * a.s,
        WeightKind::Q5_1 => d * a.d * q5_dot(qs, &a.qs) as f32 + m * a.s,
        WeightKind::Q5_0 => d * a.d * q5_dot(qs, &a.qs) as f32 - 16.0 * d * a.s,
        _ => unreachable!("float weights use dot_f"),
    }
}

/// Quantized weight row · quantized activations.
pub fn dot_q(kind: WeightKind, row: &[u8], act: &[BlockQ8]) -> f32 {
    let (bb, head) = (kind.block_bytes(), kind.head_bytes());
    let mut total = 0f32;
    for (b, a) in row.chunks_exact(bb).zip(act) {
        let m = if kind.has_min() { f16_at(b, 2) } else { 0.0 };
        total += block_dot(kind, f16_at(b, 0), m, &b[head..], a);
    }
    total
}

/// Float weight row · f32 activations.
pub fn dot_f(kind: WeightKind, row: &[u8], act: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (i, x) in act.iter().enumerate() {
        let w = match kind {
            WeightKind::F32 => f32_at(row, i * 4),
            WeightKind::F16 => f16_at(row, i * 2),
            WeightKind::BF16 => bf16_at(row, i * 2),
            _ => unreachable!("quantized weights use dot_q"),
        };
        acc[i % 8] += w * x;
    }
    acc.iter().sum()
}

/// `Σ a[i] * b[i]`, eight partial sums (so the compiler can vectorize it).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y[i] += a * x[i]`.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// Dequantizes the first `out.len()` values of a weight row.
pub fn dequantize_row(kind: WeightKind, row: &[u8], out: &mut [f32]) {
    match kind {
        WeightKind::F32 => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = f32_at(row, i * 4)),
        WeightKind::F16 => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = f16_at(row, i * 2)),
        WeightKind::BF16 => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = bf16_at(row, i * 2)),
        WeightKind::Q8_0 => {
            for (bi, o) in out.chunks_mut(QK).enumerate() {
                let b = &row[bi * 34..];
                let d = f16_at(b, 0);
                for (j, v) in o.iter_mut().enumerate() {
                    *v = d * b[2 + j] as i8 as f32;
                }
            }
        }
        WeightKind::Q4_0 | WeightKind::Q4_1 => {
            let bb = kind.block_bytes();
            for (bi, o) in out.chunks_mut(QK).enumerate() {
                let b = &row[bi * bb..];
                let d = f16_at(b, 0);
                let (m, off, sub) = if kind == WeightKind::Q4_1 {
                    (f16_at(b, 2), 4, 0.0)
                } else {
                    (0.0, 2, 8.0)
                };
                for (j, v) in o.iter_mut().enumerate() {
                    let byte = b[off + j % (QK / 2)];
                    let q = if j < QK / 2 { byte & 0x0F } else { byte >> 4 };
                    *v = (q as f32 - sub) * d + m;
                }
            }
        }
        WeightKind::Q5_0 | WeightKind::Q5_1 => {
            let bb = kind.block_bytes();
            for (bi, o) in out.chunks_mut(QK).enumerate() {
                let b = &row[bi * bb..];
                let d = f16_at(b, 0);
                let (m, off, sub) = if kind == WeightKind::Q5_1 {
                    (f16_at(b, 2), 4, 0.0)
                } else {
                    (0.0, 2, 16.0)
                };
                let qh = u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]);
                for (j, v) in o.iter_mut().enumerate() {
                    *v = (q5_value(qh, &b[off + 4..], j) as f32 - sub) * d + m;
                }
            }
        }
        WeightKind::Q4_K | WeightKind::Q5_K | WeightKind::Q6_K => {
            kquants::dequantize_row_k(kind, row, out)
        }
    }
}

/// The 8 dot products of an interleaved group (see `kernels::interleave`).
pub fn dot_x8(kind: WeightKind, group: &[u8], act: &[BlockQ8]) -> [f32; GROUP] {
    let gb = group_block_bytes(kind);
    let heads = kind.head_bytes() * GROUP;
    let qb = kind.block_bytes() - kind.head_bytes();
    let mut out = [0f32; GROUP];
    for (g, a) in group.chunks_exact(gb).zip(act) {
        for (r, o) in out.iter_mut().enumerate() {
            let m = if kind.has_min() {
                f16_at(g, 16 + r * 2)
            } else {
                0.0
            };
            let qs: Vec<u8> = (0..qb).map(|b| g[heads + quant_at(r, b)]).collect();
            *o += block_dot(kind, f16_at(g, r * 2), m, &qs, a);
        }
    }
    out
}

/// `x[i] = e^(x[i] - max)`, returning their sum, in order (see `kernels::exp_shifted_sum`).
pub fn exp_shifted_sum(x: &mut [f32], max: f32) -> f32 {
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    sum
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
