//! The engine's state that its streams share: the loaded model (a candle prototype and its
//! pool of leased instances, or the native engine's batcher), tokenizer, template, defaults
//! and the compute thread pool.

use std::sync::{Arc, Mutex};

use native_llm::batcher::Batcher;
use native_llm::model::Transformer;
use switchyard_plugin::EngineInfo;

use crate::assets::GenerationDefaults;
use crate::candle::{Instance, ScoreHead};
use crate::error::{Error, Result};
use crate::template::ChatTemplate;
use crate::tokenizer::Tok;

/// State shared by the engine and its streams (model pool, tokenizer, template, thread pool).
pub struct Shared {
    pub(crate) info: EngineInfo,
    /// The candle-run model (safetensors folders, GGUF files the native model cannot run).
    pub(crate) proto: Option<Instance>,
    pub(crate) pool: Mutex<Vec<Instance>>,
    /// The batching thread of a natively run model.
    pub(crate) native: Option<Batcher>,
    /// The natively run model (shared with the batching thread; per-position logits).
    pub(crate) native_model: Option<Arc<Transformer>>,
    pub(crate) tok: Arc<Tok>,
    pub(crate) template: ChatTemplate,
    /// `[model] template = "NAME"`: LLaMA-Factory's named template, used instead of `template`.
    pub(crate) named: Option<crate::template::named::NamedTemplate>,
    /// Break special-token text in messages (`escape_special_tokens`).
    pub(crate) escape_specials: bool,
    pub(crate) default_system: Option<String>,
    pub(crate) gen_defaults: GenerationDefaults,
    pub(crate) context_length: usize,
    pub(crate) head: Option<ScoreHead>,
    pub(crate) pad_id: Option<u32>,
    pub(crate) threads: Arc<rayon::ThreadPool>,
    /// llguidance's view of the vocabulary, built on the first constrained request.
    pub(crate) constraint_vocab: crate::constraint::ConstraintVocab,
    /// A vision-language model's image input.
    pub(crate) vision: Option<crate::vision::request::VisionSpec>,
}

impl Shared {
    /// Leases a model instance (a cheap clone of the prototype when the pool is empty).
    pub(crate) fn checkout(&self) -> Result<Instance> {
        let idle = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match (idle, &self.proto) {
            (Some(i), _) => Ok(i),
            (None, Some(p)) => p.try_clone(),
            (None, None) => Err(Error::Unsupported(
                "this operation needs a safetensors model (GGUF models run on the batching engine)"
                    .into(),
            )),
        }
    }

    /// Returns a leased instance, with its cache cleared.
    pub(crate) fn checkin(&self, mut inst: Instance) {
        inst.reset();
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(inst);
    }
}
