//! Element-wise math: the softmax numerators (`e^(x - max)` and their sum) and the gated
//! feed-forward activation (SiLU or GELU), both on a vector `e^x`.

use std::arch::x86_64::*;

use super::simd::{hsum, load_f32x8};
use crate::kernels::portable::activation;

/// `e^x` for 8 values: `x = n ln 2 + r` (`|r| <= ln 2 / 2`, `ln 2` in two parts), a
/// degree-6 polynomial for `e^r` (Cephes' `expf` coefficients, about 1 ulp), times `2^n`
/// built in the exponent bits. Inputs are clamped to the finite range (`e^x` of very negative
/// `x` comes out as ~1e-38 rather than 0).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp8(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.336_55)),
        _mm256_set1_ps(88.376_26),
    );
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let p = _mm256_fmadd_ps(
        p,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    let pow2 = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
        23,
    );
    _mm256_mul_ps(p, _mm256_castsi256_ps(pow2))
}

/// `x[i] = e^(x[i] - max)`; returns their sum (see `kernels::exp_shifted_sum`).
pub fn exp_shifted_sum(x: &mut [f32], max: f32) -> f32 {
    // SAFETY: as in `quant::dot_q`: reached only after `available()`.
    unsafe { exp_shifted_sum_imp(x, max) }
}

#[target_feature(enable = "avx2,fma")]
pub(super) fn exp_shifted_sum_imp(x: &mut [f32], max: f32) -> f32 {
    let m = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        let c: &mut [f32; 8] = c.try_into().expect("8 floats");
        let e = exp8(_mm256_sub_ps(load_f32x8(c), m));
        acc = _mm256_add_ps(acc, e);
        // SAFETY: writes exactly the 8 floats of `c`; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), e) };
    }
    let mut sum = hsum(acc);
    for v in chunks.into_remainder() {
        *v = (*v - max).exp();
        sum += *v;
    }
    sum
}

/// `gate[i] = act(gate[i]) * up[i]` (see `kernels::gated_activation`).
pub fn gated_activation(gelu: bool, gate: &mut [f32], up: &[f32]) {
    // SAFETY: as in `quant::dot_q`: reached only after `available()`.
    unsafe { gated_activation_imp(gelu, gate, up) }
}

/// SiLU `x / (1 + e^-x)`; GELU (tanh form) written the same way, since
/// `0.5 x (1 + tanh u) = x / (1 + e^(-2u))`, `u = sqrt(2/pi) (x + 0.044715 x^3)`.
#[target_feature(enable = "avx2,fma")]
fn gated_activation_imp(gelu: bool, gate: &mut [f32], up: &[f32]) {
    let one = _mm256_set1_ps(1.0);
    let n = gate.len().min(up.len());
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        let g: &mut [f32; 8] = (&mut gate[i..i + 8]).try_into().expect("8 floats");
        let u: &[f32; 8] = up[i..i + 8].try_into().expect("8 floats");
        let x = load_f32x8(g);
        let z = if gelu {
            // -2u = x · (-2 sqrt(2/pi)) · (1 + 0.044715 x^2)
            let inner = _mm256_fmadd_ps(_mm256_mul_ps(x, x), _mm256_set1_ps(0.044_715), one);
            _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(-1.595_769_2)), inner)
        } else {
            _mm256_sub_ps(_mm256_setzero_ps(), x)
        };
        let act = _mm256_div_ps(x, _mm256_add_ps(one, exp8(z)));
        let r = _mm256_mul_ps(act, load_f32x8(u));
        // SAFETY: writes exactly the 8 floats of `g`; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_ps(g.as_mut_ptr(), r) };
    }
    for i in full..n {
        gate[i] = activation(gelu, gate[i]) * up[i];
    }
}
