//! The `hf-candle` engine: assembling a loaded model into the [`Backend`] (options, device,
//! threads, template, the native batcher), request validation, scores; the prompt a request
//! runs on is built in `engine/prompt.rs`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use serde_json::Map;
use switchyard_formats::{ForcedCall, OutputFormat, ParsedEvents, ReasoningStart};
use switchyard_plugin::{
    Backend, CancelToken, Capabilities, ChatRequest, EngineConfig, EngineError, EngineInfo, Event,
    EventIter, Finish, FinishReason, GenerationParams, ScoreInput, ScoreRequest, TokenLogprob,
};

use crate::assets::{self, TemplateSource};
use crate::candle::Instance;
use crate::config::Options;
use crate::constraint;
use crate::error::{Error, Result};
use crate::load::{self, Runner};
use crate::native_stream::NativeStream;
use crate::shared::Shared;
use crate::stream::GenStream;
use crate::template::ChatTemplate;
use crate::template::named::{HeldCalls, NamedTemplate};
use crate::tokenizer::Tok;
use native_llm::batcher::{BatchConfig, Batcher, Job, StatsSnapshot};
use native_llm::plan::GenPlan;
use native_llm::sampling::SamplingParams;
use std::sync::atomic::AtomicBool;

mod prompt;

pub use crate::load::default_model_path;

/// New tokens generated when neither the request nor the model sets a limit.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 512;

/// The engine. Cheap to clone; every method takes `&self` and may run on any thread.
#[derive(Clone)]
pub struct HfCandle {
    shared: Arc<Shared>,
}

impl HfCandle {
    /// Loads the model named by `config` (`[model] path`: a `.gguf` file or a Hugging Face folder).
    pub fn load(config: &EngineConfig) -> Result<Self> {
        let opts = Options::from_value(&config.options)?;
        let device = if opts.cuda {
            Device::new_cuda(0).map_err(|e| {
                Error::Config(format!(
                    "[backends.hf-candle] device = \"cuda\": {e} (build the plugin with `--features cuda` on a machine with CUDA)"
                ))
            })?
        } else {
            Device::Cpu
        };
        let path = load::resolve_path(config)?;
        if !path.exists() {
            return Err(Error::file(
                &path,
                "does not exist; run scripts/fetch-model.sh for the default model, or set [model] path to a .gguf file or a Hugging Face folder",
            ));
        }
        let threads = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(opts.threads)
                .thread_name(|i| format!("hf-candle-{i}"))
                .build()
                .map_err(|e| {
                    Error::Config(format!(
                        "cannot start {} compute threads: {e}",
                        opts.threads
                    ))
                })?,
        );
        let candle_threads = candle_core::utils::get_num_threads();
        if candle_threads != opts.threads {
            tracing::warn!(
                threads = opts.threads,
                candle_threads,
                "candle's quantized kernels size their pool from CANDLE_NUM_THREADS / the physical cores; set CANDLE_NUM_THREADS to match"
            );
        }
        let adapters = load::adapter_paths(config);
        let loaded = threads.install(|| load::load_model(&path, &opts, &device, &adapters))?;
        // `[model] template = "NAME"`: LLaMA-Factory's template of that name renders prompts.
        let named_template = match config.model.template.as_deref() {
            Some(name) => Some(NamedTemplate::new(
                name,
                &loaded.tok,
                opts.escape_special_tokens,
            )?),
            None => None,
        };
        let template_file = config.model.chat_template_file.as_deref().map(|f| {
            let p = PathBuf::from(f);
            match (&config.config_dir, p.is_relative()) {
                (Some(dir), true) => Path::new(dir).join(p),
                _ => p,
            }
        });
        let (template_src, source) = assets::choose_template(
            config.model.chat_template.as_deref(),
            template_file.as_deref(),
            loaded.model_template,
        )?;
        let template = ChatTemplate::new(&template_src)?;
        let is_reward = loaded.head.is_some();
        let capabilities = Capabilities {
            chat: !is_reward,
            stream: !is_reward,
            scores: is_reward,
            tools: !is_reward,
            logprobs: !is_reward,
            completions: !is_reward,
            // Structured outputs run as a token filter in the native batcher.
            constraints: !is_reward && matches!(loaded.net, Runner::Native(_)),
            tool_choice: !is_reward && matches!(loaded.net, Runner::Native(_)),
            images: loaded.vision.is_some(),
            videos: loaded
                .vision
                .as_ref()
                .is_some_and(|v| v.processor.takes_video()),
            ..Default::default()
        };
        let mut details = loaded.details;
        let mut loaded_net = loaded.net;
        let lora_modules = load::named_adapter_paths(config);
        match &mut loaded_net {
            Runner::Native(model) => {
                // Float folders merged the always-on adapters at load; a GGUF base applies
                // them at run time, as it does the named ones.
                let merged = path.is_dir();
                let names = crate::lora::attach(model, &lora_modules, &adapters, merged)?;
                if !names.is_empty() {
                    details.insert("lora_modules".into(), names.into());
                }
                if let Some(kind) = opts.kv_cache {
                    model.set_kv_kind(kind).map_err(|e| {
                        Error::Config(format!("[backends.hf-candle] kv_cache_dtype: {e}"))
                    })?;
                }
                details.insert(
                    "kv_cache_dtype".into(),
                    model.kv_kind().name().to_lowercase().into(),
                );
            }
            Runner::Candle(_) if opts.kv_cache.is_some() => tracing::warn!(
                "[backends.hf-candle] kv_cache_dtype applies to the native engine only; this model runs on candle, whose cache follows the model's dtype"
            ),
            Runner::Candle(_) => {
                if let Some(name) = lora_modules.keys().next() {
                    return Err(Error::Unsupported(format!(
                        "[model.lora_modules] {name}: named adapters run on the native engine, and this model runs on candle; merge the adapter with `adapter_name_or_path` or serve it as its own [[models]] entry"
                    )));
                }
            }
        }
        details.insert(
            "device".into(),
            if opts.cuda { "cuda:0" } else { "cpu" }.into(),
        );
        details.insert("threads".into(), opts.threads.into());
        details.insert(
            "chat_template".into(),
            match source {
                TemplateSource::ConfigInline => "config",
                TemplateSource::ConfigFile => "config file",
                TemplateSource::Model => "model",
                TemplateSource::ChatMlFallback => "chatml fallback",
            }
            .into(),
        );
        if let Some(n) = &named_template {
            details.insert(
                "chat_template".into(),
                format!("llamafactory template {}", n.name()).into(),
            );
        }
        details.insert("path".into(), path.display().to_string().into());
        // A short name clients can type: the file stem of a GGUF, the folder name otherwise.
        let name = if path.is_file() {
            path.file_stem()
        } else {
            path.file_name()
        }
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
        let info = EngineInfo {
            backend: "hf-candle".into(),
            model: name,
            context_length: Some(loaded.context_length as u32),
            capabilities,
            // The model's generation_config, merged by the host after the request and the
            // config (`max_length` stays here: `plan` applies it only when it leaves room).
            generation_defaults: GenerationParams {
                do_sample: loaded.gen_defaults.do_sample,
                temperature: loaded.gen_defaults.temperature,
                top_p: loaded.gen_defaults.top_p,
                top_k: loaded.gen_defaults.top_k,
                repetition_penalty: loaded.gen_defaults.repetition_penalty,
                max_new_tokens: loaded.gen_defaults.max_new_tokens,
                ..Default::default()
            },
            details,
        };
        tracing::info!(model = %path.display(), context = loaded.context_length, threads = opts.threads, "hf-candle model loaded");
        let (proto, native, native_model) = match loaded_net {
            Runner::Candle(net) => (Some(Instance::new(net, device)), None, None),
            Runner::Native(model) => {
                let model = Arc::new(model);
                let config = BatchConfig {
                    prefill_chunk: opts.prefill_chunk,
                    prefix_cache_bytes: opts.prefix_cache_mb << 20,
                };
                let batcher = Batcher::start(Arc::clone(&model), Arc::clone(&threads), config)
                    .map_err(|e| Error::Config(format!("cannot start the batching thread: {e}")))?;
                (None, Some(batcher), Some(model))
            }
        };
        Ok(Self {
            shared: Arc::new(Shared {
                info,
                proto,
                pool: Mutex::new(Vec::new()),
                native,
                native_model,
                tok: Arc::new(loaded.tok),
                template,
                named: named_template,
                escape_specials: opts.escape_special_tokens,
                default_system: config.model.default_system.clone(),
                gen_defaults: loaded.gen_defaults,
                context_length: loaded.context_length,
                head: loaded.head,
                pad_id: loaded.pad_id,
                threads,
                constraint_vocab: Default::default(),
                vision: loaded.vision,
            }),
        })
    }

    /// The batching engine's counters (`None` for models candle runs).
    pub fn batch_stats(&self) -> Option<StatsSnapshot> {
        self.shared.native.as_ref().map(Batcher::stats)
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tok {
        &self.shared.tok
    }

    /// The context window in tokens.
    pub fn context_length(&self) -> usize {
        self.shared.context_length
    }

    /// What to read out of this request's output: `<think>` reasoning when the template writes
    /// it (starting inside it when the prompt already opened it), tool calls when tools are
    /// offered.
    fn output_format(&self, request: &ChatRequest, prompt: &str) -> OutputFormat {
        let thinks = match &self.shared.named {
            Some(n) => n.thinks(),
            None => self.shared.template.thinks(),
        };
        let reasoning = if !thinks {
            ReasoningStart::None
        } else if prompt.trim_end().ends_with("<think>") {
            ReasoningStart::Opened
        } else {
            ReasoningStart::Closed
        };
        OutputFormat {
            reasoning,
            tools: request.tools.as_ref().is_some_and(|t| !t.is_empty())
                && self.held_calls(request).is_none(),
        }
    }

    /// The named template's tool format, where calls are read here rather than by
    /// `switchyard-formats` (see [`HeldCalls`]) and tools are offered.
    fn held_calls(&self, request: &ChatRequest) -> Option<switchyard_templates::ToolFormat> {
        let format = self.shared.named.as_ref()?.tool_format();
        let offered = request.tools.as_ref().is_some_and(|t| !t.is_empty());
        (offered && HeldCalls::<()>::needed(format)).then_some(format)
    }

    /// `events` after `lead`, with calls of the named template's tool format read out.
    fn with_calls(
        &self,
        lead: impl Iterator<Item = Result<Event, EngineError>> + Send + 'static,
        events: impl Iterator<Item = Result<Event, EngineError>> + Send + 'static,
        request: &ChatRequest,
    ) -> EventIter {
        match self.held_calls(request) {
            Some(format) => Box::new(lead.chain(HeldCalls::new(events, format))),
            None => Box::new(lead.chain(events)),
        }
    }
    /// The prompt's tokens for `echo`: each one's log-probability given those before it (when
    /// `top` is set, with that many alternatives), from one forward pass over the prompt.
    fn prompt_logprobs(
        &self,
        ids: &[u32],
        top: Option<usize>,
        adapter: Option<usize>,
    ) -> Result<Vec<TokenLogprob>> {
        let rows: Option<Vec<Vec<f32>>> = match top {
            None => None,
            Some(_) => Some(self.logits_with(ids, adapter)?.to_vec2()?),
        };
        Ok(ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let lp = match (&rows, i) {
                    (Some(rows), 1..) => {
                        native_llm::logprobs::of(&rows[i - 1], id, top.unwrap_or(0))
                    }
                    _ => native_llm::logprobs::Logprobs {
                        logprob: 0.0,
                        top: Vec::new(),
                    },
                };
                crate::text::token_logprob(&self.shared.tok, id, lp)
            })
            .collect())
    }

    /// Logits (f32) at every position of `ids` (safetensors models only), `(len, vocab)`.
    pub fn logits(&self, ids: &[u32]) -> Result<Tensor> {
        self.logits_with(ids, None)
    }

    /// [`HfCandle::logits`] with a named adapter (an index from `adapter_index`) applied.
    fn logits_with(&self, ids: &[u32], adapter: Option<usize>) -> Result<Tensor> {
        let s = &self.shared;
        if let Some(m) = &s.native_model {
            if ids.is_empty() || ids.len() > s.context_length {
                return Err(Error::InvalidRequest(format!(
                    "{} tokens: need 1 to {}",
                    ids.len(),
                    s.context_length
                )));
            }
            let rows = s.threads.install(|| m.all_logits(ids, adapter));
            let vocab = rows.first().map_or(0, Vec::len);
            let flat: Vec<f32> = rows.into_iter().flatten().collect();
            return Ok(Tensor::from_vec(flat, (ids.len(), vocab), &Device::Cpu)?);
        }
        let mut inst = s.checkout()?;
        let out = s.threads.install(|| inst.all_logits(ids));
        s.checkin(inst);
        out
    }

    fn plan(&self, request: &ChatRequest, prompt_len: usize) -> Result<GenPlan> {
        let s = &self.shared;
        let g = &request.generation;
        let d = &s.gen_defaults;
        let ctx = s.context_length;
        let room = ctx - prompt_len;
        let max_new = if let Some(n) = g.max_new_tokens {
            n as usize
        } else if let Some(l) = g.max_length {
            let l = l as usize;
            if l <= prompt_len {
                return Err(Error::InvalidRequest(format!(
                    "max_length = {l} leaves no room to generate: the prompt has {prompt_len} tokens"
                )));
            }
            l - prompt_len
        } else if let Some(l) = d.max_length.map(|l| l as usize).filter(|&l| l > prompt_len) {
            l - prompt_len
        } else {
            DEFAULT_MAX_NEW_TOKENS
        };
        // The host has merged the request, the config and the model's defaults (reported in
        // `EngineInfo::generation_defaults`) and normalised them: read them as they are.
        let n = g.num_return_sequences.unwrap_or(1).max(1) as usize;
        let do_sample = g.do_sample.unwrap_or(n > 1);
        let temperature = g.temperature.unwrap_or(1.0);
        let greedy = !do_sample || temperature <= 0.0;
        let sampling = SamplingParams {
            greedy,
            temperature,
            top_p: g.top_p.unwrap_or(1.0),
            top_k: g.top_k.unwrap_or(0) as usize,
            repetition_penalty: g.repetition_penalty.unwrap_or(1.0),
            presence_penalty: g.presence_penalty.unwrap_or(0.0),
            frequency_penalty: g.frequency_penalty.unwrap_or(0.0),
        };
        // A named template stops where LLaMA-Factory does: its EOS and stop words (with
        // `replace_eos` the model's own EOS is no longer one).
        let mut stop_ids: HashSet<u32> = match &s.named {
            Some(n) if n.replaces_eos() => HashSet::new(),
            _ => s.tok.eos_ids.iter().copied().collect(),
        };
        stop_ids.extend(s.named.iter().flat_map(|n| n.stop_ids()));
        stop_ids.extend(g.stop_token_ids.iter().flatten().copied());
        Ok(GenPlan {
            sampling,
            seed: g.seed,
            max_new: max_new.min(room),
            stops: g.stop.clone().unwrap_or_default(),
            stop_ids,
            skip_special: g.skip_special_tokens.unwrap_or(true),
            n,
            logprobs: request.logprobs.then_some(request.top_logprobs as usize),
            end_logprob: request.prompt.is_some(),
        })
    }

    /// What this engine cannot do is refused here too, never dropped: the host checks the same
    /// against the capabilities, but a plugin may run under an older host.
    fn check_chat(&self, request: &ChatRequest) -> Result<()> {
        if self.shared.head.is_some() {
            return Err(Error::Unsupported(format!(
                "{} is a reward model: it computes scores (get_scores), not chat replies",
                self.shared.info.model
            )));
        }
        // A vision-language model takes images and videos in chat messages.
        let vision = self.shared.vision.is_some() && request.prompt.is_none();
        let visual = |n: usize| if vision { 0 } else { n };
        for (name, n) in [
            ("images", visual(request.images.len())),
            ("videos", visual(request.videos.len())),
            ("audios", request.audios.len()),
        ] {
            if n > 0 {
                return Err(Error::Unsupported(format!(
                    "the request has {n} {name}, but {} is a text-only model (no `{name}` capability)",
                    self.shared.info.model
                )));
            }
        }
        Ok(())
    }

    fn score_ids(&self, input: &ScoreInput, max_length: Option<u32>) -> Result<Vec<u32>> {
        let s = &self.shared;
        let mut ids = match input {
            ScoreInput::Text(t) => s.tok.encode(t, true)?,
            ScoreInput::Conversation(msgs) => {
                self.conversation_ids(msgs, None, None, false, &Map::new(), None)?
                    .1
            }
            ScoreInput::Tokens(ids) => ids.clone(),
        };
        if let Some(m) = max_length {
            ids.truncate(m as usize);
        }
        if ids.is_empty() {
            return Err(Error::InvalidRequest(
                "an input to score has no tokens".into(),
            ));
        }
        if ids.len() > s.context_length {
            return Err(Error::InvalidRequest(format!(
                "an input to score has {} tokens, more than the context window of {} tokens; set max_length to truncate",
                ids.len(),
                s.context_length
            )));
        }
        Ok(ids)
    }
}

impl Backend for HfCandle {
    fn info(&self) -> EngineInfo {
        self.shared.info.clone()
    }

    fn stream_chat(
        &self,
        request: ChatRequest,
        cancel: CancelToken,
    ) -> Result<EventIter, EngineError> {
        self.check_chat(&request)?;
        // Media prompts run on candle without prefix reuse: every request prefills its media.
        let (text, ids, images) = self.prompt_with_media(&request)?;
        let format = self.output_format(&request, &text);
        let ctx = self.shared.context_length;
        if ids.len() >= ctx {
            return Err(EngineError::invalid_request(format!(
                "the prompt has {} tokens, but the context window is {ctx} tokens (and generation needs at least one more); shorten the conversation",
                ids.len()
            )));
        }
        if ids.is_empty() {
            return Err(EngineError::invalid_request(
                "nothing to run: the prompt has no tokens",
            ));
        }
        let plan = self.plan(&request, ids.len())?;
        let adapter = crate::lora::index(
            self.shared.native_model.as_deref(),
            request.adapter.as_deref(),
        )?;
        // `echo`: the prompt's tokens lead the stream; with no new tokens asked for (the
        // loglikelihood case) they are all of it.
        let echo = if request.echo {
            let tokens = self.prompt_logprobs(
                &ids,
                request.logprobs.then_some(request.top_logprobs as usize),
                adapter,
            )?;
            let only = plan.max_new == 0;
            let prompt_length = ids.len() as u32;
            Some(
                (0..plan.n as u32)
                    .map(move |index| Event {
                        index,
                        prompt_logprobs: tokens.clone(),
                        finish: only.then_some(Finish {
                            reason: FinishReason::Length,
                            prompt_length,
                            response_length: 0,
                        }),
                        ..Default::default()
                    })
                    .map(Ok)
                    .collect::<Vec<_>>(),
            )
        } else {
            None
        };
        let lead = echo.unwrap_or_default().into_iter();
        if request.echo && plan.max_new == 0 {
            return Ok(Box::new(lead));
        }
        tracing::debug!(
            prompt_tokens = ids.len(),
            max_new = plan.max_new,
            n = plan.n,
            "generation starts"
        );
        let constrained = match constraint::spec(&request)? {
            Some((spec, forced_call)) if self.shared.native.is_some() => Some((
                constraint::filter(&self.shared.constraint_vocab, &self.shared.tok, &spec)?,
                forced_call,
            )),
            Some(_) => {
                return Err(EngineError::unsupported(
                    "structured outputs (`response_format`, forced `tool_choice`) run on the native engine; this model runs on candle",
                ));
            }
            None => None,
        };
        let (filter, forced_call) = match constrained {
            Some((f, forced)) => (Some(f), forced),
            None => (None, false),
        };
        if let Some(batcher) = &self.shared.native {
            let (tx, rx) = std::sync::mpsc::channel();
            let stop: Arc<[AtomicBool]> =
                (0..plan.n.max(1)).map(|_| AtomicBool::new(false)).collect();
            NativeStream::watch_cancel(&cancel, &stop);
            let prompt_len = ids.len();
            let job = Job {
                prompt: ids,
                plan: plan.clone(),
                out: tx,
                stop: Arc::clone(&stop),
                filter,
                adapter,
            };
            if !batcher.submit(job) {
                return Err(EngineError::backend(
                    "the hf-candle generation thread is gone; reload the model",
                ));
            }
            let events = NativeStream::new(
                Arc::clone(&self.shared.tok),
                rx,
                stop,
                cancel,
                plan,
                prompt_len,
            );
            if forced_call {
                return Ok(Box::new(lead.chain(ForcedCall::new(events))));
            }
            return Ok(self.with_calls(lead, ParsedEvents::new(events, format), &request));
        }
        let events = GenStream::with_images(Arc::clone(&self.shared), ids, images, plan, cancel);
        Ok(self.with_calls(lead, ParsedEvents::new(events, format), &request))
    }

    fn get_scores(&self, request: ScoreRequest) -> Result<Vec<f32>, EngineError> {
        let s = &self.shared;
        if request.embed {
            return Err(EngineError::unsupported(format!(
                "{} is not a sentence-embedding model; load a sentence-transformers (BERT) folder for embeddings",
                s.info.model
            )));
        }
        let Some(head) = s.head.as_ref() else {
            return Err(EngineError::unsupported(format!(
                "{} is a generating model without a reward head; load a *ForSequenceClassification model or one with value_head.safetensors for scores",
                s.info.model
            )));
        };
        let all: Vec<Vec<u32>> = request
            .inputs
            .iter()
            .map(|i| self.score_ids(i, request.max_length))
            .collect::<Result<_>>()?;
        let mut inst = s.checkout()?;
        let out = s.threads.install(|| {
            all.iter()
                .map(|ids| inst.score(ids, head, s.pad_id))
                .collect::<Result<Vec<f32>>>()
        });
        s.checkin(inst);
        Ok(out?)
    }
}
