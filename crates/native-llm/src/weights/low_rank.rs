//! Low-rank updates of weight matrices (LoRA): `W' = W + scale · B·A`, merged into a matrix
//! while it loads. The caller reads the adapter files (PEFT's `adapter_config.json` and
//! `adapter_model.safetensors`) and hands the updates over by the base weight's name, in the
//! order they apply (LLaMA-Factory merges a list of adapters one after the other).

use std::collections::HashMap;

use crate::error::{Error, Result};

/// One low-rank update of a `[rows, cols]` matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct LowRank {
    /// `A`, `[rank, cols]`, row-major.
    pub a: Vec<f32>,
    /// `B`, `[rows, rank]`, row-major.
    pub b: Vec<f32>,
    /// The rank `r`.
    pub rank: usize,
    /// `lora_alpha / r` (or `/ sqrt(r)` with rsLoRA).
    pub scale: f32,
}

/// Updates by base weight name (`model.layers.0.self_attn.q_proj.weight`).
pub type LowRankUpdates = HashMap<String, Vec<LowRank>>;

impl LowRank {
    /// Adds `scale · B·A` to `w` (`[rows, cols]`, row-major); `name` is for errors.
    pub fn add_to(&self, w: &mut [f32], rows: usize, cols: usize, name: &str) -> Result<()> {
        let r = self.rank;
        if r == 0 || self.a.len() != r * cols || self.b.len() != rows * r {
            return Err(Error::Unsupported(format!(
                "the adapter's update of `{name}` does not fit it: the weight is [{rows}, {cols}], lora_A has {} values and lora_B {} for rank {r} (expected [{r}, {cols}] and [{rows}, {r}]); the adapter was trained for another base model",
                self.a.len(),
                self.b.len()
            )));
        }
        for (i, row) in w.chunks_exact_mut(cols).enumerate() {
            for k in 0..r {
                let s = self.b[i * r + k] * self.scale;
                if s != 0.0 {
                    for (x, &a) in row.iter_mut().zip(&self.a[k * cols..(k + 1) * cols]) {
                        *x += s * a;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_scaled_product() {
        // W = 0 (2x3), A = [[1,2,3]], B = [[1],[2]], scale 0.5.
        let d = LowRank {
            a: vec![1.0, 2.0, 3.0],
            b: vec![1.0, 2.0],
            rank: 1,
            scale: 0.5,
        };
        let mut w = vec![0.0; 6];
        d.add_to(&mut w, 2, 3, "w").unwrap();
        assert_eq!(w, [0.5, 1.0, 1.5, 1.0, 2.0, 3.0]);
        let e = d.add_to(&mut w, 3, 2, "w").unwrap_err().to_string();
        assert!(e.contains("another base model"), "{e}");
    }
}
