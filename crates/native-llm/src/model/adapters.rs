//! LoRA adapters applied at run time: `y = W·x + scale · B·(A·x)` for the tokens of the
//! sequences that asked for an adapter, next to the unchanged base matrix.
//!
//! Merging an adapter into the weights (what [`Transformer::load_hf`] does with always-on
//! adapters on float bases) costs nothing per token but fixes one adapter per model and does not
//! work on quantized matrices. Applied at run time, any number of adapters share one copy of the
//! base weights, and one batched step may mix sequences of different adapters (and none): the
//! base product runs once over all the step's tokens, then each token gets its own adapter's
//! low-rank term, which is `r·(rows + cols)` multiply-adds per token and projection — about
//! `2r / min(rows, cols)` of the base product (3% for r = 8 on a 576-wide model). A step with
//! no adapter in it does no extra work.
//!
//! An adapter is attached once, when the model loads; sequences name it by index
//! ([`crate::model::SeqStep::adapter`]). The model may also hold *always-on* adapters
//! (LLaMA-Factory's `adapter_name_or_path` on a quantized base), applied to every token.

use std::collections::HashMap;

use super::transformer::Transformer;
use crate::error::{Error, Result};
use crate::weights::{LowRank, LowRankUpdates};

/// The projections a LoRA adapter may update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proj {
    /// Attention query.
    Q,
    /// Attention key.
    K,
    /// Attention value.
    V,
    /// Attention output.
    O,
    /// Feed-forward gate.
    Gate,
    /// Feed-forward up.
    Up,
    /// Feed-forward down.
    Down,
}

impl Proj {
    /// The layer and projection a base weight's name refers to, in Hugging Face naming
    /// (`model.layers.3.self_attn.q_proj.weight`) or GGUF naming (`blk.3.attn_q.weight`).
    pub fn of(name: &str) -> Option<(usize, Proj)> {
        let name = name.strip_suffix(".weight").unwrap_or(name);
        if let Some(rest) = name.strip_prefix("blk.") {
            let (layer, part) = rest.split_once('.')?;
            let proj = match part {
                "attn_q" => Proj::Q,
                "attn_k" => Proj::K,
                "attn_v" => Proj::V,
                "attn_output" => Proj::O,
                "ffn_gate" => Proj::Gate,
                "ffn_up" => Proj::Up,
                "ffn_down" => Proj::Down,
                _ => return None,
            };
            return Some((layer.parse().ok()?, proj));
        }
        let rest = name.strip_prefix("model.layers.")?;
        let (layer, part) = rest.split_once('.')?;
        let proj = match part {
            "self_attn.q_proj" => Proj::Q,
            "self_attn.k_proj" => Proj::K,
            "self_attn.v_proj" => Proj::V,
            "self_attn.o_proj" => Proj::O,
            "mlp.gate_proj" => Proj::Gate,
            "mlp.up_proj" => Proj::Up,
            "mlp.down_proj" => Proj::Down,
            _ => return None,
        };
        Some((layer.parse().ok()?, proj))
    }
}

/// Where an adapter's matrices come from, which decides whether the rows of its query and key
/// updates must be reordered for this model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterLayout {
    /// Hugging Face / PEFT order (`adapter_model.safetensors`).
    HuggingFace,
    /// GGUF order (llama.cpp's LoRA files): already as the GGUF base stores its matrices.
    Gguf,
}

/// One attached adapter: its updates by layer and projection.
pub(super) struct RuntimeAdapter {
    pub(super) name: String,
    pub(super) updates: HashMap<(usize, Proj), Vec<LowRank>>,
}

/// Reorders the rows of a query or key update from Hugging Face's order to the one llama.cpp's
/// converter gives LLaMA GGUF files (each head's two rotary halves interleaved).
fn interleave_heads(b: &[f32], rows: usize, rank: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0f32; b.len()];
    for h in 0..heads {
        for i in 0..half {
            for (src, dst) in [(i, 2 * i), (half + i, 2 * i + 1)] {
                let from = (h * hd + src) * rank;
                let to = (h * hd + dst) * rank;
                out[to..to + rank].copy_from_slice(&b[from..from + rank]);
            }
        }
    }
    out
}

impl Transformer {
    /// The `(rows, cols)` of a projection's matrix.
    fn proj_shape(&self, layer: usize, proj: Proj) -> Option<(usize, usize)> {
        let l = self.layers.get(layer)?;
        let m = match proj {
            Proj::Q => &l.wq,
            Proj::K => &l.wk,
            Proj::V => &l.wv,
            Proj::O => &l.wo,
            Proj::Gate => &l.w_gate,
            Proj::Up => &l.w_up,
            Proj::Down => &l.w_down,
        };
        Some((m.rows, m.cols))
    }

    /// Attaches an adapter for run-time use (`updates` by base weight name, in either naming);
    /// returns its index for [`crate::model::SeqStep::adapter`]. Each update's shape is checked
    /// against the model's matrix.
    pub fn attach_adapter(
        &mut self,
        name: &str,
        updates: &LowRankUpdates,
        layout: AdapterLayout,
    ) -> Result<usize> {
        // LLaMA GGUF files store query and key rows interleaved per head (rotary pairs
        // adjacent); Hugging Face-ordered updates are reordered to match.
        let reorder = layout == AdapterLayout::HuggingFace && !self.hp.rope_neox;
        let mut by_proj: HashMap<(usize, Proj), Vec<LowRank>> = HashMap::new();
        for (weight, list) in updates {
            let (layer, proj) = Proj::of(weight)
                .filter(|(layer, _)| *layer < self.layers.len())
                .ok_or_else(|| {
                    Error::Unsupported(format!(
                        "adapter `{name}` updates `{weight}`, which this model does not have (LoRA applies to the q/k/v/o/gate/up/down projections of its {} layers)",
                        self.layers.len()
                    ))
                })?;
            let (rows, cols) = self.proj_shape(layer, proj).expect("layer checked");
            for u in list {
                let r = u.rank;
                if r == 0 || u.a.len() != r * cols || u.b.len() != rows * r {
                    return Err(Error::Unsupported(format!(
                        "adapter `{name}`: the update of `{weight}` does not fit it: the weight is [{rows}, {cols}], lora_A has {} values and lora_B {} for rank {r}; the adapter was trained for another base model",
                        u.a.len(),
                        u.b.len()
                    )));
                }
                let mut u = u.clone();
                if reorder && matches!(proj, Proj::Q | Proj::K) {
                    let heads = if proj == Proj::Q {
                        self.hp.n_heads
                    } else {
                        self.hp.n_kv_heads
                    };
                    u.b = interleave_heads(&u.b, rows, r, heads);
                }
                by_proj.entry((layer, proj)).or_default().push(u);
            }
        }
        self.adapters.push(RuntimeAdapter {
            name: name.to_owned(),
            updates: by_proj,
        });
        Ok(self.adapters.len() - 1)
    }

    /// Makes an attached adapter apply to every token, after those already made always-on
    /// (always-on adapters that could not be merged, e.g. on a quantized base).
    pub fn set_always_on(&mut self, adapter: usize) {
        self.always_on.push(adapter);
    }

    /// The index of the attached adapter called `name`.
    pub fn adapter_index(&self, name: &str) -> Option<usize> {
        self.adapters.iter().position(|a| a.name == name)
    }

    /// Whether a step over tokens whose adapters are `per_token` needs any low-rank work.
    pub(super) fn any_adapter(&self, per_token: &[Option<usize>]) -> bool {
        !self.always_on.is_empty() || per_token.iter().any(Option::is_some)
    }

    /// Adds each token's adapter term to `out` (`[t][rows]`), given the matrix input `x`
    /// (`[t][cols]`); tokens without an adapter are left alone.
    pub(super) fn apply_adapters(
        &self,
        layer: usize,
        proj: Proj,
        per_token: &[Option<usize>],
        x: &[f32],
        out: &mut [f32],
    ) {
        use rayon::prelude::*;
        let t = per_token.len();
        if t == 0 {
            return;
        }
        let (cols, rows) = (x.len() / t, out.len() / t);
        let term = |adapter: usize, xr: &[f32], yr: &mut [f32]| {
            let Some(list) = self.adapters[adapter].updates.get(&(layer, proj)) else {
                return;
            };
            for u in list {
                let r = u.rank;
                let ax: Vec<f32> =
                    u.a.chunks_exact(cols)
                        .map(|row| row.iter().zip(xr).map(|(a, b)| a * b).sum::<f32>() * u.scale)
                        .collect();
                for (y, brow) in yr.iter_mut().zip(u.b.chunks_exact(r)) {
                    *y += brow.iter().zip(&ax).map(|(b, a)| b * a).sum::<f32>();
                }
            }
        };
        out.par_chunks_mut(rows)
            .zip(x.par_chunks(cols))
            .zip(per_token.par_iter())
            .for_each(|((yr, xr), named)| {
                for &a in &self.always_on {
                    term(a, xr, yr);
                }
                if let Some(a) = *named {
                    term(a, xr, yr);
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_layers_and_projections_in_both_namings() {
        assert_eq!(
            Proj::of("model.layers.12.self_attn.k_proj.weight"),
            Some((12, Proj::K))
        );
        assert_eq!(
            Proj::of("model.layers.0.mlp.down_proj"),
            Some((0, Proj::Down))
        );
        assert_eq!(Proj::of("blk.3.attn_output.weight"), Some((3, Proj::O)));
        assert_eq!(Proj::of("blk.3.ffn_gate.weight"), Some((3, Proj::Gate)));
        assert_eq!(Proj::of("model.embed_tokens.weight"), None);
        assert_eq!(Proj::of("blk.x.attn_q.weight"), None);
    }

    #[test]
    fn head_rows_interleave_as_llama_cpp_permutes_them() {
        // One head of width 4, rank 1: rows [0, 1, 2, 3] → halves [0, 1] and [2, 3]
        // interleaved → [0, 2, 1, 3].
        let b = vec![0.0, 1.0, 2.0, 3.0];
        assert_eq!(interleave_heads(&b, 4, 1, 1), [0.0, 2.0, 1.0, 3.0]);
        // Two heads, rank 2: each head reordered on its own, each row's rank values kept.
        let b: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let got = interleave_heads(&b, 8, 2, 2);
        assert_eq!(&got[..8], &[0.0, 1.0, 4.0, 5.0, 2.0, 3.0, 6.0, 7.0]);
        assert_eq!(&got[8..], &[8.0, 9.0, 12.0, 13.0, 10.0, 11.0, 14.0, 15.0]);
    }
}
