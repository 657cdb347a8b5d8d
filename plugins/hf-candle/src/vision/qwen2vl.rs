//! Qwen2-VL (`Qwen2VLForConditionalGeneration`) on candle ops: the vision tower (patch embedding
//! as a matmul, 2D rotary, pre-norm blocks with per-frame attention, the 2x2 patch merger) and
//! the Qwen2 language model with M-RoPE (three rotary sections over temporal / height / width
//! position ids). Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`) is the same model with
//! [`super::qwen25vl`]'s tower and video positions spaced by `tokens_per_second`. Follows
//! transformers' `modeling_qwen2_vl.py` / `modeling_qwen2_5_vl.py`; f32 on the CPU.

use std::path::Path;

use candle_core::{Device, IndexOp, Module, Tensor};
use candle_nn::{LayerNorm, Linear, RmsNorm, VarBuilder};
use serde_json::Value;

use super::image::{IMAGE_PAD, VISION_START};
use super::qwen_video::{QwenProcessor, VIDEO_PAD};
use super::qwen25vl::{Vision25, Vision25Config, segment_attention};
use super::{Family, MediaKind, Prepared, VisionLm};
use crate::error::{Error, Result};

/// `config.json` of a Qwen2-VL folder (flat text keys as on the Hub, or transformers 5's
/// `text_config`).
#[derive(Clone, Debug)]
pub struct Qwen2VlConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Text hidden size.
    pub hidden_size: usize,
    /// Text MLP width.
    pub intermediate_size: usize,
    /// Text layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// RMS norm epsilon.
    pub rms_norm_eps: f64,
    /// Text rotary base.
    pub rope_theta: f64,
    /// M-RoPE sections (temporal, height, width), in rotary pairs; they sum to head_dim / 2.
    pub mrope_section: [usize; 3],
    /// Largest position.
    pub max_positions: usize,
    /// `lm_head` shares the embedding.
    pub tie_word_embeddings: bool,
    /// `<|image_pad|>` id.
    pub image_token_id: u32,
    /// `<|video_pad|>` id.
    pub video_token_id: u32,
    /// Qwen2.5-VL's tower (`None`: Qwen2-VL's, the `v_*` fields).
    pub vision25: Option<Vision25Config>,
    /// `<|vision_start|>` id.
    pub vision_start_token_id: u32,
    /// Vision tower depth.
    pub v_depth: usize,
    /// Vision width.
    pub v_embed_dim: usize,
    /// Vision heads.
    pub v_heads: usize,
    /// Vision MLP ratio.
    pub v_mlp_ratio: usize,
    /// Vision patch side.
    pub v_patch: usize,
    /// Vision temporal patch.
    pub v_temporal: usize,
    /// Vision spatial merge.
    pub v_merge: usize,
    /// Vision rotary base.
    pub v_rope_theta: f64,
}

impl Qwen2VlConfig {
    /// Parses `config.json`'s JSON; errors name the missing key.
    pub fn from_json(v: &Value) -> std::result::Result<Self, String> {
        let text = v.get("text_config").filter(|t| t.is_object()).unwrap_or(v);
        let vis = v
            .get("vision_config")
            .ok_or("no `vision_config`: not a Qwen2-VL config")?;
        let get = |o: &Value, k: &str| o.get(k).or_else(|| v.get(k)).and_then(Value::as_u64);
        let need = |o: &Value, k: &str| get(o, k).ok_or(format!("missing `{k}`"));
        let rope = text
            .get("rope_parameters")
            .or_else(|| text.get("rope_scaling"))
            .or_else(|| v.get("rope_scaling"));
        let rope_theta = rope
            .and_then(|r| r.get("rope_theta"))
            .or_else(|| text.get("rope_theta"))
            .or_else(|| v.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(1_000_000.0);
        let sec: Vec<usize> = rope
            .and_then(|r| r.get("mrope_section"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64().map(|x| x as usize))
                    .collect()
            })
            .unwrap_or_else(|| vec![16, 24, 24]);
        let [t, h, w] = sec[..] else {
            return Err("`mrope_section` must have 3 entries".into());
        };
        let hidden = need(text, "hidden_size")? as usize;
        let heads = need(text, "num_attention_heads")? as usize;
        if sec.iter().sum::<usize>() * 2 != hidden / heads {
            return Err(format!(
                "`mrope_section` {sec:?} must sum to head_dim / 2 = {}",
                hidden / heads / 2
            ));
        }
        let v_rope = vis
            .get("rope_parameters")
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(10_000.0);
        let arch = v.pointer("/architectures/0").and_then(Value::as_str);
        let model_type = v.get("model_type").and_then(Value::as_str);
        let vision25 = if arch == Some("Qwen2_5_VLForConditionalGeneration")
            || model_type == Some("qwen2_5_vl")
        {
            Some(Vision25Config::from_json(vis)?)
        } else {
            None
        };
        if let Some(act) = vis.get("hidden_act").and_then(Value::as_str)
            && act != "quick_gelu"
            && vision25.is_none()
        {
            return Err(format!(
                "vision `hidden_act` = {act:?} is not supported (Qwen2-VL uses quick_gelu)"
            ));
        }
        Ok(Self {
            vocab_size: need(text, "vocab_size")? as usize,
            hidden_size: hidden,
            intermediate_size: need(text, "intermediate_size")? as usize,
            num_layers: need(text, "num_hidden_layers")? as usize,
            num_heads: heads,
            num_kv_heads: get(text, "num_key_value_heads").unwrap_or(heads as u64) as usize,
            rms_norm_eps: text
                .get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6),
            rope_theta,
            mrope_section: [t, h, w],
            max_positions: get(text, "max_position_embeddings").unwrap_or(32768) as usize,
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .or_else(|| text.get("tie_word_embeddings"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            image_token_id: get(v, "image_token_id").unwrap_or(151655) as u32,
            video_token_id: get(v, "video_token_id").unwrap_or(151656) as u32,
            vision_start_token_id: get(v, "vision_start_token_id").unwrap_or(151652) as u32,
            v_depth: need(vis, "depth")? as usize,
            v_embed_dim: match &vision25 {
                Some(c) => c.hidden,
                None => need(vis, "embed_dim")? as usize,
            },
            v_heads: need(vis, "num_heads")? as usize,
            v_mlp_ratio: vis.get("mlp_ratio").and_then(Value::as_u64).unwrap_or(4) as usize,
            v_patch: vis.get("patch_size").and_then(Value::as_u64).unwrap_or(14) as usize,
            v_temporal: vis
                .get("temporal_patch_size")
                .and_then(Value::as_u64)
                .unwrap_or(2) as usize,
            v_merge: vis
                .get("spatial_merge_size")
                .and_then(Value::as_u64)
                .unwrap_or(2) as usize,
            v_rope_theta: v_rope,
            vision25,
        })
        .and_then(|c: Self| match &c.vision25 {
            Some(v) if v.out_hidden != c.hidden_size => Err(format!(
                "vision `out_hidden_size` {} must equal the text `hidden_size` {}",
                v.out_hidden, c.hidden_size
            )),
            _ => Ok(c),
        })
    }
}

pub(crate) fn linear(vb: &VarBuilder, inp: usize, out: usize, bias: bool) -> Result<Linear> {
    let w = vb.get((out, inp), "weight")?;
    let b = if bias {
        Some(vb.get(out, "bias")?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

fn layer_norm(vb: &VarBuilder, size: usize) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        vb.get(size, "weight")?,
        vb.get(size, "bias")?,
        1e-6,
    ))
}

/// Rotary inverse frequencies `1 / base^(2i / dim)` for `i < dim / 2`, rounded to f32 as torch does.
pub(crate) fn inv_freq(base: f64, dim: usize) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| {
            let e = (2 * i) as f32 / dim as f32;
            1.0 / (base as f32).powf(e)
        })
        .collect()
}

/// The vision towers' rotary tables `(n, head_dim / 2)`: for each patch of each frame, in
/// merge-block order, the row position's angles then the column position's.
pub(crate) fn vision_rope(
    inv_freq: &[f32],
    grid: [usize; 3],
    m: usize,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let [t, h, w] = grid;
    let q = inv_freq.len();
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for _ in 0..t {
        for bh in 0..h / m {
            for bw in 0..w / m {
                for mh in 0..m {
                    for mw in 0..m {
                        for p in [(bh * m + mh) as f32, (bw * m + mw) as f32] {
                            for f in inv_freq {
                                let a = p * f;
                                cos.push(a.cos());
                                sin.push(a.sin());
                            }
                        }
                    }
                }
            }
        }
    }
    let n = cos.len() / (2 * q);
    Ok((
        Tensor::from_vec(cos, (n, 2 * q), dev)?,
        Tensor::from_vec(sin, (n, 2 * q), dev)?,
    ))
}

#[derive(Clone, Debug)]
struct VisionBlock {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

#[derive(Clone, Debug)]
struct Vision {
    patch_w: Tensor,
    blocks: Vec<VisionBlock>,
    ln_q: LayerNorm,
    mlp0: Linear,
    mlp2: Linear,
    heads: usize,
    merge: usize,
    inv_freq: Vec<f32>,
}

impl Vision {
    fn load(c: &Qwen2VlConfig, vb: VarBuilder) -> Result<Self> {
        let e = c.v_embed_dim;
        let patch_dim = 3 * c.v_temporal * c.v_patch * c.v_patch;
        let patch_w = vb
            .get(
                (e, 3, c.v_temporal, c.v_patch, c.v_patch),
                "patch_embed.proj.weight",
            )?
            .reshape((e, patch_dim))?;
        let blocks = (0..c.v_depth)
            .map(|i| {
                let b = vb.pp(format!("blocks.{i}"));
                let hid = e * c.v_mlp_ratio;
                Ok(VisionBlock {
                    norm1: layer_norm(&b.pp("norm1"), e)?,
                    qkv: linear(&b.pp("attn.qkv"), e, 3 * e, true)?,
                    proj: linear(&b.pp("attn.proj"), e, e, true)?,
                    norm2: layer_norm(&b.pp("norm2"), e)?,
                    fc1: linear(&b.pp("mlp.fc1"), e, hid, true)?,
                    fc2: linear(&b.pp("mlp.fc2"), hid, e, true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let merged = e * c.v_merge * c.v_merge;
        let head_dim = e / c.v_heads;
        Ok(Self {
            patch_w,
            blocks,
            ln_q: layer_norm(&vb.pp("merger.ln_q"), e)?,
            mlp0: linear(&vb.pp("merger.mlp.0"), merged, merged, true)?,
            mlp2: linear(&vb.pp("merger.mlp.2"), merged, c.hidden_size, true)?,
            heads: c.v_heads,
            merge: c.v_merge,
            inv_freq: inv_freq(c.v_rope_theta, head_dim / 2),
        })
    }

    /// Image embeddings `(sum of tokens, hidden)` for the images' patches, in order.
    fn forward(&self, images: &[Prepared], dev: &Device) -> Result<Tensor> {
        let mut outs = Vec::with_capacity(images.len());
        for img in images {
            let grid = img.grid()?;
            let n = grid.iter().product::<usize>();
            let dim = self.patch_w.dim(1)?;
            let px = Tensor::from_slice(&img.pixel_values, (n, dim), dev)?;
            let mut x = px.matmul(&self.patch_w.t()?)?;
            let (cos, sin) = vision_rope(&self.inv_freq, grid, self.merge, dev)?;
            // Attention never crosses frames (transformers' cu_seqlens: one segment a frame).
            let frames: Vec<(usize, usize)> = (0..grid[0])
                .map(|t| (t * grid[1] * grid[2], grid[1] * grid[2]))
                .collect();
            for b in &self.blocks {
                let h = b.norm1.forward(&x)?;
                x = (x + segment_attention(&h, &b.qkv, &b.proj, self.heads, &cos, &sin, &frames)?)?;
                let hmid = b.fc1.forward(&b.norm2.forward(&x)?)?;
                let hmid = (&hmid * candle_nn::ops::sigmoid(&(&hmid * 1.702)?)?)?;
                x = (x + b.fc2.forward(&hmid)?)?;
            }
            let e = x.dim(1)?;
            let merged = self
                .ln_q
                .forward(&x)?
                .reshape((n / (self.merge * self.merge), e * self.merge * self.merge))?;
            let y = self.mlp0.forward(&merged)?.gelu_erf()?;
            outs.push(self.mlp2.forward(&y)?);
        }
        Ok(Tensor::cat(&outs, 0)?)
    }
}

#[derive(Clone, Debug)]
struct TextLayer {
    input_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// The vision tower of either family.
#[derive(Clone, Debug)]
enum Tower {
    Qwen2(Vision),
    Qwen25(Vision25),
}

/// A loaded Qwen2-VL or Qwen2.5-VL with its KV cache (cloning shares the weights and copies
/// the cache).
#[derive(Clone, Debug)]
pub struct Qwen2Vl {
    cfg: Qwen2VlConfig,
    vision: Tower,
    embed: Tensor,
    layers: Vec<TextLayer>,
    norm: RmsNorm,
    lm_head: Tensor,
    inv_freq: Vec<f32>,
    cache: Vec<Option<(Tensor, Tensor)>>,
    /// Next text position (after the prompt: the largest M-RoPE position + 1).
    next_pos: usize,
    device: Device,
}

/// One image or video run in a prompt: its token, its patch grid, and the temporal position
/// step per temporal patch (1 for images and Qwen2-VL; Qwen2.5-VL's videos:
/// `tokens_per_second * second_per_grid_t`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MediaRun {
    /// `<|image_pad|>` or `<|video_pad|>` id.
    pub token: u32,
    /// `[t, h, w]` in patches.
    pub grid: [usize; 3],
    /// Temporal position step.
    pub interval: f32,
}

/// M-RoPE position ids `[t, h, w]` per token, and the next free position after them (the
/// largest + 1, as transformers' `rope_deltas` gives it): the rule of transformers'
/// `get_rope_index`. `media` are the runs of media tokens in prompt order.
pub fn mrope_positions(
    ids: &[u32],
    media: &[MediaRun],
    merge: usize,
) -> Result<(Vec<[u32; 3]>, usize)> {
    let is_media = |t: u32| media.iter().any(|m| m.token == t);
    let mut out = Vec::with_capacity(ids.len());
    let (mut pos, mut max) = (0usize, 0usize);
    let mut i = 0;
    let mut runs = media.iter();
    while i < ids.len() {
        if !is_media(ids[i]) {
            out.push([pos as u32; 3]);
            max = max.max(pos);
            pos += 1;
            i += 1;
            continue;
        }
        let Some(m) = runs.next() else {
            return Err(Error::InvalidRequest(
                "the prompt has more media tokens than images and videos".into(),
            ));
        };
        let [t, h, w] = m.grid;
        let (gh, gw) = (h / merge, w / merge);
        let n = t * gh * gw;
        if ids[i..].len() < n || ids[i..i + n].iter().any(|&x| x != m.token) {
            return Err(Error::InvalidRequest(format!(
                "an image or video needs {n} consecutive media tokens in the prompt"
            )));
        }
        for ti in 0..t {
            // torch: (arange(t) * interval).long() in f32, then + start.
            let tp = pos + (ti as f32 * m.interval) as usize;
            for hi in 0..gh {
                for wi in 0..gw {
                    out.push([tp as u32, (pos + hi) as u32, (pos + wi) as u32]);
                }
            }
            max = max.max(tp);
        }
        max = max.max(pos + gh.max(gw).saturating_sub(1));
        // transformers advances by the spatial extent only (also for videos).
        pos += gh.max(gw);
        i += n;
    }
    if runs.next().is_some() {
        return Err(Error::InvalidRequest(
            "the prompt has fewer media tokens than images and videos".into(),
        ));
    }
    Ok((out, if ids.is_empty() { 0 } else { max + 1 }))
}

impl Qwen2Vl {
    /// Loads `config.json` and the safetensors weights of a folder (f32).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg = super::folder_config(dir, Qwen2VlConfig::from_json)?;
        super::build_from_weights(dir, device, |vb| Self::from_vb(cfg, vb, device))
    }

    fn from_vb(cfg: Qwen2VlConfig, vb: VarBuilder, device: &Device) -> Result<Self> {
        // Hub checkpoints: `model.*` + `visual.*`; transformers 5 may also write
        // `model.language_model.*` + `model.visual.*`.
        let (lm, vis) = if vb.contains_tensor("model.language_model.embed_tokens.weight") {
            (vb.pp("model.language_model"), vb.pp("model.visual"))
        } else {
            (vb.pp("model"), vb.pp("visual"))
        };
        let c = &cfg;
        let hd = c.hidden_size / c.num_heads;
        let embed = lm.get((c.vocab_size, c.hidden_size), "embed_tokens.weight")?;
        let layers = (0..c.num_layers)
            .map(|i| {
                let l = lm.pp(format!("layers.{i}"));
                let a = l.pp("self_attn");
                let m = l.pp("mlp");
                let (h, kv) = (c.hidden_size, c.num_kv_heads * hd);
                Ok(TextLayer {
                    input_norm: RmsNorm::new(l.get(h, "input_layernorm.weight")?, c.rms_norm_eps),
                    q: linear(&a.pp("q_proj"), h, c.num_heads * hd, true)?,
                    k: linear(&a.pp("k_proj"), h, kv, true)?,
                    v: linear(&a.pp("v_proj"), h, kv, true)?,
                    o: linear(&a.pp("o_proj"), c.num_heads * hd, h, false)?,
                    post_norm: RmsNorm::new(
                        l.get(h, "post_attention_layernorm.weight")?,
                        c.rms_norm_eps,
                    ),
                    gate: linear(&m.pp("gate_proj"), h, c.intermediate_size, false)?,
                    up: linear(&m.pp("up_proj"), h, c.intermediate_size, false)?,
                    down: linear(&m.pp("down_proj"), c.intermediate_size, h, false)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(lm.get(c.hidden_size, "norm.weight")?, c.rms_norm_eps);
        let lm_head = if c.tie_word_embeddings {
            embed.clone()
        } else {
            vb.get((c.vocab_size, c.hidden_size), "lm_head.weight")?
        };
        Ok(Self {
            vision: match &c.vision25 {
                Some(v) => Tower::Qwen25(Vision25::load(v.clone(), vis)?),
                None => Tower::Qwen2(Vision::load(c, vis)?),
            },
            inv_freq: inv_freq(c.rope_theta, hd),
            cache: vec![None; c.num_layers],
            embed,
            layers,
            norm,
            lm_head,
            next_pos: 0,
            device: device.clone(),
            cfg,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &Qwen2VlConfig {
        &self.cfg
    }

    /// Drops the KV cache.
    pub fn reset(&mut self) {
        self.cache.iter_mut().for_each(|c| *c = None);
        self.next_pos = 0;
    }

    /// The vision tower's output (merged embeddings) for the images and videos, in order.
    pub fn image_embeddings(&self, images: &[Prepared]) -> Result<Tensor> {
        match &self.vision {
            Tower::Qwen2(v) => v.forward(images, &self.device),
            Tower::Qwen25(v) => v.forward(images, &self.device),
        }
    }

    /// The media's runs in the prompt: token, grid and temporal step.
    fn runs(&self, media: &[Prepared]) -> Result<Vec<MediaRun>> {
        let c = &self.cfg;
        media
            .iter()
            .map(|m| {
                let video = m.kind == MediaKind::Video;
                let interval = match (&c.vision25, video) {
                    (Some(v), true) => {
                        v.tokens_per_second as f32 * m.second_per_grid_t.unwrap_or(1.0)
                    }
                    _ => 1.0,
                };
                Ok(MediaRun {
                    token: if video {
                        c.video_token_id
                    } else {
                        c.image_token_id
                    },
                    grid: m.grid()?,
                    interval,
                })
            })
            .collect()
    }

    /// Runs a whole prompt (resetting the cache): its image tokens take the images' embeddings.
    /// Returns the last position's logits.
    pub fn prefill(&mut self, ids: &[u32], images: &[Prepared]) -> Result<Vec<f32>> {
        self.reset();
        let runs = self.runs(images)?;
        let (pos, next) = mrope_positions(ids, &runs, self.cfg.v_merge)?;
        let dev = self.device.clone();
        let ids_t = Tensor::from_slice(ids, ids.len(), &dev)?;
        let mut x = self.embed.index_select(&ids_t, 0)?;
        if !images.is_empty() {
            let img = self.image_embeddings(images)?;
            // Row i of [text; media] for every prompt position: media tokens take the next
            // media row, in order.
            let mut k = 0u32;
            let rows: Vec<u32> = ids
                .iter()
                .enumerate()
                .map(|(i, &t)| {
                    if t == self.cfg.image_token_id || t == self.cfg.video_token_id {
                        k += 1;
                        ids.len() as u32 + k - 1
                    } else {
                        i as u32
                    }
                })
                .collect();
            if k as usize != img.dim(0)? {
                return Err(Error::InvalidRequest(format!(
                    "the prompt has {k} media tokens but the images and videos make {}",
                    img.dim(0)?
                )));
            }
            let all = Tensor::cat(&[&x, &img], 0)?;
            x = all.index_select(&Tensor::from_vec(rows, ids.len(), &dev)?, 0)?;
        }
        self.next_pos = next;
        self.run(x, &pos)
    }

    /// Feeds one generated token and returns the next logits.
    pub fn step(&mut self, id: u32) -> Result<Vec<f32>> {
        self.extend(&[id])
    }

    /// Feeds text tokens after what was fed (positions continue from the last one; a first
    /// call is a text-only prompt) and returns the last logits.
    pub fn extend(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        if self.cache[0].is_none() {
            return self.prefill(ids, &[]);
        }
        let x = self
            .embed
            .index_select(&Tensor::from_slice(ids, ids.len(), &self.device)?, 0)?;
        let start = self.next_pos as u32;
        let pos: Vec<[u32; 3]> = (0..ids.len() as u32).map(|i| [start + i; 3]).collect();
        self.next_pos += ids.len();
        self.run(x, &pos)
    }

    /// The largest position the model takes (`max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.cfg.max_positions
    }

    fn run(&mut self, x: Tensor, pos: &[[u32; 3]]) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let seq = pos.len();
        if self.next_pos > c.max_positions {
            return Err(Error::InvalidRequest(format!(
                "the sequence reaches position {}, beyond max_position_embeddings {}",
                self.next_pos, c.max_positions
            )));
        }
        let (nh, nkv) = (c.num_heads, c.num_kv_heads);
        let hd = c.hidden_size / nh;
        // cos/sin `(seq, hd / 2)`: pair j rotates by the position of its M-RoPE section.
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for p in pos {
            let mut j = 0;
            for (s, &len) in c.mrope_section.iter().enumerate() {
                for _ in 0..len {
                    let a = p[s] as f32 * self.inv_freq[j];
                    cos.push(a.cos());
                    sin.push(a.sin());
                    j += 1;
                }
            }
        }
        let dev = &self.device;
        let cos = Tensor::from_vec(cos, (seq, hd / 2), dev)?;
        let sin = Tensor::from_vec(sin, (seq, hd / 2), dev)?;
        let past = self.cache[0].as_ref().map_or(Ok(0), |(k, _)| k.dim(2))?;
        let mask = (seq > 1).then(|| {
            let total = past + seq;
            let m: Vec<f32> = (0..seq)
                .flat_map(|i| {
                    (0..total).map(move |k| if k > past + i { f32::NEG_INFINITY } else { 0.0 })
                })
                .collect();
            Tensor::from_vec(m, (seq, total), dev)
        });
        let mask = mask.transpose()?;
        let mut x = x.unsqueeze(0)?;
        for (i, l) in self.layers.iter().enumerate() {
            let h = l.input_norm.forward(&x)?;
            let heads = |lin: &Linear, n: usize| -> Result<Tensor> {
                Ok(lin
                    .forward(&h)?
                    .reshape((1, seq, n, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = candle_nn::rotary_emb::rope(&heads(&l.q, nh)?, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope(&heads(&l.k, nkv)?, &cos, &sin)?;
            let v = heads(&l.v, nkv)?;
            let (k, v) = match &self.cache[i] {
                Some((ck, cv)) => (Tensor::cat(&[ck, &k], 2)?, Tensor::cat(&[cv, &v], 2)?),
                None => (k, v),
            };
            self.cache[i] = Some((k.clone(), v.clone()));
            let total = k.dim(2)?;
            let groups = nh / nkv;
            let qg = q.reshape((1, nkv, groups * seq, hd))?;
            let att = (qg.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
            let att = match &mask {
                Some(m) => att
                    .reshape((1, nkv, groups, seq, total))?
                    .broadcast_add(m)?
                    .reshape((1, nkv, groups * seq, total))?,
                None => att,
            };
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att.matmul(&v)?.reshape((1, nh, seq, hd))?;
            let y = y.transpose(1, 2)?.reshape((1, seq, nh * hd))?;
            x = (x + l.o.forward(&y)?)?;
            let h = l.post_norm.forward(&x)?;
            let g = candle_nn::ops::silu(&l.gate.forward(&h)?)?;
            x = (&x + l.down.forward(&(g * l.up.forward(&h)?)?)?)?;
        }
        let last = self.norm.forward(&x.i((0, seq - 1..seq, ..))?)?;
        Ok(last.matmul(&self.lm_head.t()?)?.squeeze(0)?.to_vec1()?)
    }
}

impl VisionLm for Qwen2Vl {
    fn prefill(&mut self, ids: &[u32], media: &[Prepared]) -> Result<Vec<f32>> {
        Qwen2Vl::prefill(self, ids, media)
    }

    fn extend(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        Qwen2Vl::extend(self, ids)
    }

    fn reset(&mut self) {
        Qwen2Vl::reset(self);
    }

    fn max_positions(&self) -> usize {
        Qwen2Vl::max_positions(self)
    }

    fn boxed_clone(&self) -> Box<dyn VisionLm> {
        Box::new(self.clone())
    }
}

/// A Qwen2-VL folder: its image processor and model; `<|image_pad|>` and `<|vision_start|>`
/// must be the tokenizer's ids the config names.
pub fn family(dir: &Path, device: &Device) -> Result<Family> {
    let processor = QwenProcessor::from_folder(dir)?;
    let model = Qwen2Vl::load(dir, device)?;
    let c = model.config();
    let tokens = vec![
        (IMAGE_PAD.to_owned(), c.image_token_id),
        (VIDEO_PAD.to_owned(), c.video_token_id),
        (VISION_START.to_owned(), c.vision_start_token_id),
    ];
    Ok(Family {
        processor: Box::new(processor),
        model: Box::new(model),
        tokens,
    })
}
