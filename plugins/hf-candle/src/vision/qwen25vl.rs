//! Qwen2.5-VL's vision tower (`Qwen2_5_VisionTransformerPretrainedModel`): RMSNorm pre-norm
//! blocks with a gated SiLU MLP, window attention (windows of `window_size` pixels, in merged
//! 2x2 units) except in the `fullatt_block_indexes` blocks, which attend over a whole frame, and
//! an RMSNorm patch merger. The language model, M-RoPE and the processor are Qwen2-VL's
//! ([`super::qwen2vl`], [`super::image`]); only the tower and `tokens_per_second` (the temporal
//! spacing of video positions) differ. Follows transformers' `modeling_qwen2_5_vl.py` and
//! `vision_utils.get_vision_window_index`.

use candle_core::{Device, Module, Tensor};
use candle_nn::{Linear, RmsNorm, VarBuilder};
use serde_json::Value;

use super::Prepared;
use super::qwen2vl::{inv_freq, linear, vision_rope};
use crate::error::{Error, Result};

/// `vision_config` of a Qwen2.5-VL folder.
#[derive(Clone, Debug, PartialEq)]
pub struct Vision25Config {
    /// Blocks.
    pub depth: usize,
    /// Vision width (`hidden_size`).
    pub hidden: usize,
    /// MLP width (`intermediate_size`).
    pub intermediate: usize,
    /// Attention heads.
    pub heads: usize,
    /// Patch side.
    pub patch: usize,
    /// Frames per temporal patch.
    pub temporal: usize,
    /// Spatial merge.
    pub merge: usize,
    /// Window side in pixels (`window_size`).
    pub window_size: usize,
    /// Blocks that attend over the whole frame.
    pub fullatt: Vec<usize>,
    /// Output width (the language model's hidden size).
    pub out_hidden: usize,
    /// Rotary base.
    pub rope_theta: f64,
    /// Temporal position steps per second of video.
    pub tokens_per_second: f64,
}

impl Vision25Config {
    /// Parses `vision_config`; errors name the missing or unsupported key.
    pub fn from_json(vis: &Value) -> std::result::Result<Self, String> {
        let num = |k: &str| vis.get(k).and_then(Value::as_u64).map(|x| x as usize);
        let need = |k: &str| num(k).ok_or(format!("`vision_config.{k}` is missing"));
        if let Some(act) = vis.get("hidden_act").and_then(Value::as_str)
            && act != "silu"
        {
            return Err(format!(
                "vision `hidden_act` = {act:?} is not supported (Qwen2.5-VL uses silu)"
            ));
        }
        let fullatt = vis
            .get("fullatt_block_indexes")
            .and_then(Value::as_array)
            .ok_or("`vision_config.fullatt_block_indexes` is missing")?
            .iter()
            .map(|x| x.as_u64().map(|x| x as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or("`vision_config.fullatt_block_indexes` must hold block numbers")?;
        let c = Self {
            depth: need("depth")?,
            hidden: need("hidden_size")?,
            intermediate: need("intermediate_size")?,
            heads: need("num_heads")?,
            patch: num("patch_size").unwrap_or(14),
            temporal: num("temporal_patch_size").unwrap_or(2),
            merge: num("spatial_merge_size").unwrap_or(2),
            window_size: num("window_size").unwrap_or(112),
            fullatt,
            out_hidden: need("out_hidden_size")?,
            rope_theta: vis
                .get("rope_parameters")
                .and_then(|r| r.get("rope_theta"))
                .and_then(Value::as_f64)
                .unwrap_or(10_000.0),
            tokens_per_second: vis
                .get("tokens_per_second")
                .and_then(Value::as_f64)
                .unwrap_or(4.0),
        };
        if c.heads == 0
            || !c.hidden.is_multiple_of(c.heads)
            || !(c.hidden / c.heads).is_multiple_of(4)
        {
            return Err(format!(
                "vision `hidden_size` {} / `num_heads` {} must be a multiple of 4",
                c.hidden, c.heads
            ));
        }
        if c.window_size < c.merge * c.patch {
            return Err(format!(
                "`window_size` {} is smaller than one merged patch ({} pixels)",
                c.window_size,
                c.merge * c.patch
            ));
        }
        Ok(c)
    }
}

#[derive(Clone, Debug)]
struct Block {
    norm1: RmsNorm,
    qkv: Linear,
    proj: Linear,
    norm2: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// The loaded tower.
#[derive(Clone, Debug)]
pub struct Vision25 {
    cfg: Vision25Config,
    patch_w: Tensor,
    blocks: Vec<Block>,
    ln_q: RmsNorm,
    mlp0: Linear,
    mlp2: Linear,
    inv_freq: Vec<f32>,
}

/// Attention over each `(start, len)` segment of `x` (rows), no mask inside a segment: the
/// Qwen vision towers' `cu_seqlens` attention, with the 2D rotary tables `cos`/`sin` per row.
pub(crate) fn segment_attention(
    x: &Tensor,
    qkv: &Linear,
    proj: &Linear,
    heads: usize,
    cos: &Tensor,
    sin: &Tensor,
    segments: &[(usize, usize)],
) -> Result<Tensor> {
    let (n, e) = x.dims2()?;
    let hd = e / heads;
    let qkv = qkv.forward(x)?.reshape((n, 3, heads, hd))?;
    let mut outs = Vec::with_capacity(segments.len());
    for &(start, len) in segments {
        let part = qkv.narrow(0, start, len)?;
        let (c, s) = (cos.narrow(0, start, len)?, sin.narrow(0, start, len)?);
        let head = |i: usize| -> Result<Tensor> {
            Ok(part
                .narrow(1, i, 1)?
                .squeeze(1)?
                .transpose(0, 1)?
                .contiguous()?
                .unsqueeze(0)?)
        };
        let q = candle_nn::rotary_emb::rope(&head(0)?, &c, &s)?;
        let k = candle_nn::rotary_emb::rope(&head(1)?, &c, &s)?;
        let v = head(2)?;
        let att = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        outs.push(
            att.matmul(&v)?
                .squeeze(0)?
                .transpose(0, 1)?
                .reshape((len, e))?,
        );
    }
    Ok(proj.forward(&Tensor::cat(&outs, 0)?)?)
}

/// transformers' `get_vision_window_index` for one grid: the merged units (groups of
/// `merge^2` rows) in window order, and each window's length in rows (empty windows left out).
pub fn window_index(
    grid: [usize; 3],
    merge: usize,
    window_size: usize,
    patch: usize,
) -> (Vec<usize>, Vec<usize>) {
    let [t, h, w] = grid;
    let vws = window_size / merge / patch;
    let (lh, lw) = (h / merge, w / merge);
    let (nh, nw) = ((lh + vws - lh % vws) / vws, (lw + vws - lw % vws) / vws);
    let (mut index, mut lens) = (Vec::new(), Vec::new());
    for ti in 0..t {
        for wh in 0..nh {
            for ww in 0..nw {
                let before = index.len();
                for i in 0..vws {
                    for j in 0..vws {
                        let (r, c) = (wh * vws + i, ww * vws + j);
                        if r < lh && c < lw {
                            index.push(ti * lh * lw + r * lw + c);
                        }
                    }
                }
                if index.len() > before {
                    lens.push((index.len() - before) * merge * merge);
                }
            }
        }
    }
    (index, lens)
}

fn rms(vb: &VarBuilder, size: usize) -> Result<RmsNorm> {
    Ok(RmsNorm::new(vb.get(size, "weight")?, 1e-6))
}

impl Vision25 {
    /// Loads the tower's weights (`visual.*` / `model.visual.*`).
    pub fn load(cfg: Vision25Config, vb: VarBuilder) -> Result<Self> {
        let (e, c) = (cfg.hidden, &cfg);
        let patch_dim = 3 * c.temporal * c.patch * c.patch;
        let patch_w = vb
            .get(
                (e, 3, c.temporal, c.patch, c.patch),
                "patch_embed.proj.weight",
            )?
            .reshape((e, patch_dim))?;
        let blocks = (0..c.depth)
            .map(|i| {
                let b = vb.pp(format!("blocks.{i}"));
                Ok(Block {
                    norm1: rms(&b.pp("norm1"), e)?,
                    qkv: linear(&b.pp("attn.qkv"), e, 3 * e, true)?,
                    proj: linear(&b.pp("attn.proj"), e, e, true)?,
                    norm2: rms(&b.pp("norm2"), e)?,
                    gate: linear(&b.pp("mlp.gate_proj"), e, c.intermediate, true)?,
                    up: linear(&b.pp("mlp.up_proj"), e, c.intermediate, true)?,
                    down: linear(&b.pp("mlp.down_proj"), c.intermediate, e, true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let merged = e * c.merge * c.merge;
        Ok(Self {
            patch_w,
            blocks,
            ln_q: rms(&vb.pp("merger.ln_q"), e)?,
            mlp0: linear(&vb.pp("merger.mlp.0"), merged, merged, true)?,
            mlp2: linear(&vb.pp("merger.mlp.2"), merged, c.out_hidden, true)?,
            inv_freq: inv_freq(c.rope_theta, e / c.heads / 2),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Vision25Config {
        &self.cfg
    }

    /// Merged embeddings `(sum of tokens, out_hidden)` for the media's patches, in order.
    pub fn forward(&self, media: &[Prepared], dev: &Device) -> Result<Tensor> {
        let c = &self.cfg;
        let unit = c.merge * c.merge;
        let mut outs = Vec::with_capacity(media.len());
        for m in media {
            let grid = m.grid()?;
            let n = grid.iter().product::<usize>();
            let dim = self.patch_w.dim(1)?;
            if m.pixel_values.len() != n * dim {
                return Err(Error::InvalidRequest(format!(
                    "pixel values hold {} floats; grid {grid:?} needs {}",
                    m.pixel_values.len(),
                    n * dim
                )));
            }
            let px = Tensor::from_slice(&m.pixel_values, (n, dim), dev)?;
            let (index, window_lens) = window_index(grid, c.merge, c.window_size, c.patch);
            // Row order: merged units in window order, the unit's rows kept together.
            let rows: Vec<u32> = index
                .iter()
                .flat_map(|&u| (0..unit).map(move |k| (u * unit + k) as u32))
                .collect();
            let rows = Tensor::from_vec(rows, n, dev)?;
            let mut x = px.matmul(&self.patch_w.t()?)?.index_select(&rows, 0)?;
            let (cos, sin) = vision_rope(&self.inv_freq, grid, c.merge, dev)?;
            let (cos, sin) = (cos.index_select(&rows, 0)?, sin.index_select(&rows, 0)?);
            let segments = |lens: &mut dyn Iterator<Item = usize>| {
                let mut start = 0;
                lens.map(|l| {
                    start += l;
                    (start - l, l)
                })
                .collect::<Vec<_>>()
            };
            let windows = segments(&mut window_lens.iter().copied());
            let frames = segments(&mut std::iter::repeat_n(grid[1] * grid[2], grid[0]));
            for (i, b) in self.blocks.iter().enumerate() {
                let segs = if c.fullatt.contains(&i) {
                    &frames
                } else {
                    &windows
                };
                let h = b.norm1.forward(&x)?;
                x = (&x + segment_attention(&h, &b.qkv, &b.proj, c.heads, &cos, &sin, segs)?)?;
                let h = b.norm2.forward(&x)?;
                let g = candle_nn::ops::silu(&b.gate.forward(&h)?)?;
                x = (&x + b.down.forward(&(g * b.up.forward(&h)?)?)?)?;
            }
            let merged = self
                .ln_q
                .forward(&x)?
                .reshape((n / unit, c.hidden * unit))?;
            let y = self
                .mlp2
                .forward(&self.mlp0.forward(&merged)?.gelu_erf()?)?;
            // Back to raster order: unit `index[i]` is row i of `y`.
            let mut back = vec![0u32; index.len()];
            for (i, &u) in index.iter().enumerate() {
                back[u] = i as u32;
            }
            outs.push(y.index_select(&Tensor::from_vec(back, index.len(), dev)?, 0)?);
        }
        Ok(Tensor::cat(&outs, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_as_transformers_pads_them() {
        // 2x3 merged units, windows of 2x2 units: two windows (4 units, then 2).
        let (index, lens) = window_index([1, 4, 6], 2, 56, 14);
        assert_eq!(index, vec![0, 1, 3, 4, 2, 5]);
        assert_eq!(lens, vec![16, 8]);
        // Two frames: the second frame's windows follow the first's.
        let (index, lens) = window_index([2, 2, 2], 2, 56, 14);
        assert_eq!(index, vec![0, 1]);
        assert_eq!(lens, vec![4, 4]);
    }
}
