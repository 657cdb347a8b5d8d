//! Row-wise arithmetic of the forward pass: norms, bias and residual adds, rotary tables,
//! and [`each_row`], which runs a row operation serially for a few rows and in parallel for
//! many.

use rayon::prelude::*;

/// Rotary cos/sin tables for each token's position (`[t][head_dim / 2]`).
pub(super) fn rope_tables(inv_freq: &[f64], where_: &[(usize, usize)]) -> (Vec<f32>, Vec<f32>) {
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(where_.len() * half);
    let mut sin = Vec::with_capacity(where_.len() * half);
    for &(_, pos) in where_ {
        for f in inv_freq {
            // transformers: f32 frequency × f32 position; llama.cpp (GGUF): f32 angle too.
            let angle = (*f as f32) * pos as f32;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

pub(super) fn add_bias(x: &mut [f32], b: Option<&[f32]>) {
    if let Some(b) = b {
        for row in x.chunks_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(a, c)| *a += c);
        }
    }
}

/// RMSNorm of each `w.len()`-wide row of `x` into `out`.
pub(super) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    out.copy_from_slice(x);
    rms_norm_in_place(out, w, eps);
}

/// RMSNorm of each `w.len()`-wide row of `x`, in place (also per head for q/k norms).
pub(super) fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let n = w.len();
    each_row(x, n, |_, row| {
        let ss: f32 = row.iter().map(|v| v * v).sum::<f32>() / n as f32;
        let r = 1.0 / (ss + eps).sqrt();
        for (a, g) in row.iter_mut().zip(w) {
            *a = *a * r * g;
        }
    });
}

/// `x += y`, `width`-wide rows (the residual stream).
pub(super) fn add_rows(x: &mut [f32], y: &[f32], width: usize) {
    each_row(x, width, |i, row| {
        let y = &y[i * width..(i + 1) * width];
        row.iter_mut().zip(y).for_each(|(a, b)| *a += b);
    });
}

/// Rows (of a prefill) from which [`each_row`] goes parallel.
const PAR_ROWS: usize = 32;

/// `f(i, row)` for each `width`-wide row of `x`: on this thread for a few rows (decode steps),
/// in parallel for many (prefill). Each row's result is the same either way.
pub(super) fn each_row(x: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if width == 0 {
        return;
    }
    if x.len() / width < PAR_ROWS {
        x.chunks_mut(width).enumerate().for_each(|(i, r)| f(i, r));
    } else {
        x.par_chunks_mut(width)
            .with_min_len(PAR_ROWS / 2)
            .enumerate()
            .for_each(|(i, r)| f(i, r));
    }
}
