//! Model loading and the per-request model instance.
//!
//! A loaded model is a prototype [`Instance`]; every request works on its own clone (weights are
//! shared through reference-counted tensors, so a clone costs a few pointers) with its own KV
//! cache. Cloning after the prompt is processed snapshots the cache, which is how
//! `num_return_sequences > 1` reuses one prefill.

pub mod dense;
pub mod gguf;
pub mod hf;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::vision::{Prepared, VisionLm};
use dense::DenseModel;
use gguf::QuantModel;

/// The network behind an instance.
#[derive(Debug)]
pub enum Net {
    /// A safetensors checkpoint run by [`dense::DenseModel`].
    Dense(DenseModel),
    /// A quantized GGUF model.
    Quant(QuantModel),
    /// A vision-language model (Qwen2-VL): its prompt may carry images.
    Vision(Box<dyn VisionLm>),
}

/// A reward head on top of the final hidden state.
#[derive(Clone, Debug)]
pub enum ScoreHead {
    /// `*ForSequenceClassification`: `score.weight` `[1, hidden]`, no bias.
    SequenceClassification(Tensor),
    /// LLaMA-Factory's value head: `v_head.summary.weight` `[1, hidden]` and `.bias` `[1]`.
    ValueHead(Tensor, Tensor),
}

/// One model with its own KV cache.
#[derive(Debug)]
pub struct Instance {
    net: Net,
    pos: usize,
    device: Device,
}

impl Instance {
    /// Wraps a network.
    pub fn new(net: Net, device: Device) -> Self {
        Self {
            net,
            pos: 0,
            device,
        }
    }

    /// A second instance sharing the weights. It keeps a copy of the KV cache when the model
    /// allows (check [`Instance::position`]: 0 means it starts empty).
    pub fn try_clone(&self) -> Result<Self> {
        let (net, kept) = match &self.net {
            Net::Dense(m) => (Net::Dense(m.clone()), true),
            Net::Vision(m) => (Net::Vision(m.boxed_clone()), true),
            Net::Quant(m) => {
                let (q, kept) = m.try_clone(&self.device)?;
                (Net::Quant(q), kept)
            }
        };
        Ok(Self {
            net,
            pos: if kept { self.pos } else { 0 },
            device: self.device.clone(),
        })
    }

    /// Forgets everything fed so far.
    pub fn reset(&mut self) {
        self.pos = 0;
        match &mut self.net {
            Net::Dense(m) => m.reset(),
            Net::Quant(m) => m.reset(),
            Net::Vision(m) => m.reset(),
        }
    }

    /// Tokens fed since the last reset.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Feeds `ids` after what was fed before and returns the logits of the last one.
    pub fn feed(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(Error::InvalidRequest(
                "nothing to run: the prompt has no tokens".into(),
            ));
        }
        let out = match &mut self.net {
            Net::Dense(m) => m.forward_last(ids)?,
            Net::Quant(m) => m.forward_last(ids, self.pos, &self.device)?,
            Net::Vision(m) => m.extend(ids)?,
        };
        self.pos += ids.len();
        Ok(out)
    }

    /// Runs a whole prompt from an empty cache: its image tokens take `images`' embeddings
    /// (vision-language models only; other models need `images` empty).
    pub fn feed_prompt(&mut self, ids: &[u32], images: &[Prepared]) -> Result<Vec<f32>> {
        if images.is_empty() {
            self.reset();
            return self.feed(ids);
        }
        let Net::Vision(m) = &mut self.net else {
            return Err(Error::Unsupported(
                "this model takes no images (it is not a vision-language model)".into(),
            ));
        };
        let out = m.prefill(ids, images)?;
        self.pos = ids.len();
        Ok(out)
    }

    /// Logits (f32) for every position of `ids`, from an empty cache: `(ids.len(), vocab)`.
    /// Only safetensors models can do this.
    pub fn all_logits(&mut self, ids: &[u32]) -> Result<Tensor> {
        self.reset();
        match &mut self.net {
            Net::Dense(m) => {
                let h = m.forward_hidden(ids)?;
                let l = m.logits(&h)?;
                m.reset();
                Ok(l)
            }
            Net::Quant(_) | Net::Vision(_) => Err(Error::Unsupported(
                "per-position logits are only available for safetensors text models".into(),
            )),
        }
    }

    /// The reward score of `ids` (from an empty cache) under `head`, taken at the last token
    /// that is not `pad_id` (transformers' rule).
    pub fn score(&mut self, ids: &[u32], head: &ScoreHead, pad_id: Option<u32>) -> Result<f32> {
        self.reset();
        let Net::Dense(m) = &mut self.net else {
            return Err(Error::Unsupported(
                "reward heads need a safetensors model".into(),
            ));
        };
        let hidden = m.forward_hidden(ids)?;
        m.reset();
        let idx = ids
            .iter()
            .rposition(|&t| Some(t) != pad_id)
            .unwrap_or(ids.len().saturating_sub(1));
        let h = DenseModel::hidden_at(&hidden, idx)?.unsqueeze(1)?;
        let s = match head {
            ScoreHead::SequenceClassification(w) => w.matmul(&h)?,
            ScoreHead::ValueHead(w, b) => w.matmul(&h)?.broadcast_add(&b.unsqueeze(1)?)?,
        };
        Ok(s.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?[0])
    }
}
