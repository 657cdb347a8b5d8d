//! Sentence embeddings: a BERT encoder folder (sentence-transformers layout) served through
//! `get_scores` with `embed: true`.
//!
//! The pipeline is sentence-transformers' `Transformer -> Pooling -> Normalize`:
//! * **Tokenizing** with the folder's `tokenizer.json`, its own truncation and padding settings
//!   switched off (Transformers overrides them per call too); the text is cut to
//!   `max_seq_length` (`sentence_bert_config.json`, or the request's smaller `max_length`)
//!   before the special tokens are added, so `[SEP]` stays, as `truncation="longest_first"`
//!   does. Token-id inputs are used as they are (cut to the same limit).
//! * **Encoder**: candle-transformers' `models::bert::BertModel` (absolute positions, token
//!   type 0), run in batches of [`BATCH`] inputs of similar length, right-padded with the
//!   model's pad id and masked.
//! * **Pooling** ([`folder::pool`]) over the real tokens only, per `1_Pooling/config.json`;
//!   L2 normalisation when `modules.json` lists `Normalize`.
//!
//! A folder with a BERT `config.json` and no `modules.json` is mean-pooled without
//! normalisation, as sentence-transformers does when it wraps a plain Transformers model.

pub mod folder;

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use serde_json::Value;
use switchyard_plugin::{
    Backend, CancelToken, Capabilities, ChatRequest, EngineConfig, EngineError, EngineInfo,
    EventIter, ScoreInput, ScoreRequest,
};
use tokenizers::{PostProcessor, Tokenizer, TruncationDirection};

use crate::config::Options;
use crate::error::{Error, Result};
use folder::{Pipeline, Pool};

/// Inputs run through the encoder together (sentence-transformers' default `batch_size`).
pub const BATCH: usize = 32;

/// A loaded sentence-embedding model. Cheap to clone; every method takes `&self`.
#[derive(Clone)]
pub struct Embedder {
    inner: Arc<Inner>,
}

struct Inner {
    info: EngineInfo,
    model: BertModel,
    tok: Tokenizer,
    /// Special tokens the post-processor adds to one sequence (`[CLS]`, `[SEP]`: 2).
    added: usize,
    pipeline: Pipeline,
    /// The token limit: `max_seq_length`, at most `max_position_embeddings`.
    max_len: usize,
    vocab: usize,
    pad_id: u32,
    hidden: usize,
    device: Device,
    threads: rayon::ThreadPool,
}

impl Embedder {
    /// Loads the folder `config` names; the `[model]` fields of chat models are refused by name
    /// (an embedding model has no template, system prompt or adapters to apply).
    pub fn from_config(config: &EngineConfig, dir: &Path) -> Result<Self> {
        let m = &config.model;
        for (key, set) in [
            ("chat_template", m.chat_template.is_some()),
            ("chat_template_file", m.chat_template_file.is_some()),
            ("default_system", m.default_system.is_some()),
            ("adapter_name_or_path", !m.adapter_name_or_path.is_empty()),
            ("lora_modules", !m.lora_modules.is_empty()),
            ("template", m.template.is_some()),
        ] {
            if set {
                return Err(Error::Config(format!(
                    "[model] {key} is set, but {} is a sentence-embedding model (no chat template, system prompt or adapters); remove `{key}`",
                    dir.display()
                )));
            }
        }
        Self::load(dir, &Options::from_value(&config.options)?)
    }

    /// Loads the sentence-transformers (or plain BERT) folder at `dir`.
    pub fn load(dir: &Path, opts: &Options) -> Result<Self> {
        let pipeline = folder::read(dir)?;
        let enc = &pipeline.encoder_dir;
        let config_path = enc.join("config.json");
        let raw: Value = serde_json::from_str(
            &std::fs::read_to_string(&config_path)
                .map_err(|e| Error::file(&config_path, format!("cannot be read ({e})")))?,
        )
        .map_err(|e| Error::file(&config_path, format!("is not valid JSON ({e})")))?;
        let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("");
        if model_type != "bert" {
            return Err(Error::UnsupportedArch {
                arch: format!("{model_type} (a sentence-embedding encoder)"),
                supported:
                    "bert (sentence-transformers folders of BERT encoders, e.g. all-MiniLM-L6-v2)"
                        .into(),
            });
        }
        let config: BertConfig = serde_json::from_value(raw.clone()).map_err(|e| {
            Error::file(
                &config_path,
                format!("is not a BERT config candle can run ({e}); hidden_act must be gelu, gelu_approximate or relu and position_embedding_type absolute"),
            )
        })?;
        let device = if opts.cuda {
            Device::new_cuda(0).map_err(|e| {
                Error::Config(format!(
                    "[backends.hf-candle] device = \"cuda\": {e} (build the plugin with `--features cuda` on a machine with CUDA)"
                ))
            })?
        } else {
            Device::Cpu
        };
        let files = crate::candle::hf::weight_files(enc)?;
        for f in &files {
            // SAFETY: the file is memory-mapped read-only; like every mmap-based loader we rely
            // on the model file not being modified while the engine runs.
            unsafe { candle_core::safetensors::MmapedSafetensors::new(f) }.map_err(|e| {
                Error::file(
                    f,
                    format!(
                        "is not a valid safetensors file ({e}); re-download or re-export the model"
                    ),
                )
            })?;
        }
        // SAFETY: as above — read-only mappings of files validated just now.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, opts.dtype, &device) }
            .map_err(|e| Error::file(enc, format!("cannot map the weights ({e})")))?;
        let model = BertModel::load(vb, &config).map_err(|e| {
            Error::file(
                enc,
                format!("weights do not match config.json ({e}); re-export the model"),
            )
        })?;
        let tok_path = enc.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(Error::file(
                &tok_path,
                "is missing; a sentence-embedding folder needs its fast tokenizer (save it with `tokenizer.save_pretrained`)",
            ));
        }
        let mut tok = Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::file(&tok_path, format!("cannot be loaded ({e})")))?;
        tok.with_padding(None);
        tok.with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let added = tok
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        let tok_limit = std::fs::read_to_string(enc.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v.get("model_max_length").and_then(Value::as_u64))
            .map(|n| n as usize);
        // sentence-transformers: max_seq_length, else the tokenizer's model_max_length, and
        // never past the position table.
        let max_len = pipeline
            .max_seq_length
            .or(tok_limit)
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        if max_len <= added {
            return Err(Error::file(
                dir,
                format!(
                    "max_seq_length = {max_len} leaves no room for text next to the {added} special tokens"
                ),
            ));
        }
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads)
            .thread_name(|i| format!("hf-candle-embed-{i}"))
            .build()
            .map_err(|e| {
                Error::Config(format!(
                    "cannot start {} compute threads: {e}",
                    opts.threads
                ))
            })?;
        let dimension = config.hidden_size * pipeline.pools.len();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let mut details = serde_json::Map::new();
        details.insert("path".into(), dir.display().to_string().into());
        details.insert("architecture".into(), "bert (sentence embeddings)".into());
        details.insert("dimension".into(), dimension.into());
        details.insert(
            "pooling".into(),
            pipeline
                .pools
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join("+")
                .into(),
        );
        details.insert("normalize".into(), pipeline.normalize.into());
        details.insert("max_seq_length".into(), max_len.into());
        details.insert(
            "device".into(),
            if opts.cuda { "cuda:0" } else { "cpu" }.into(),
        );
        details.insert("threads".into(), opts.threads.into());
        if pipeline.implicit {
            tracing::warn!(
                model = %dir.display(),
                "no modules.json: mean pooling without normalisation, as sentence-transformers does for a plain Transformers model"
            );
        }
        let info = EngineInfo {
            backend: "hf-candle".into(),
            model: name,
            context_length: Some(max_len as u32),
            capabilities: Capabilities {
                embeddings: true,
                ..Default::default()
            },
            details,
            ..Default::default()
        };
        tracing::info!(model = %dir.display(), dimension, max_len, "hf-candle embedding model loaded");
        Ok(Self {
            inner: Arc::new(Inner {
                info,
                model,
                added,
                vocab: config.vocab_size,
                pad_id: config.pad_token_id as u32,
                hidden: config.hidden_size,
                tok,
                pipeline,
                max_len,
                device,
                threads,
            }),
        })
    }

    /// The vector length.
    pub fn dimension(&self) -> usize {
        self.inner.hidden * self.inner.pipeline.pools.len()
    }

    /// The token limit of an input (`max_length`, when smaller, lowers it).
    pub fn max_len(&self, max_length: Option<u32>) -> usize {
        max_length.map_or(self.inner.max_len, |m| self.inner.max_len.min(m as usize))
    }

    /// An input's token ids, truncated to `limit` as sentence-transformers does.
    pub fn ids(&self, input: &ScoreInput, limit: usize) -> Result<Vec<u32>> {
        let s = &self.inner;
        match input {
            ScoreInput::Text(text) => {
                let text = if s.pipeline.lower_case {
                    text.to_lowercase()
                } else {
                    text.clone()
                };
                let mut enc = s
                    .tok
                    .encode(text.as_str(), false)
                    .map_err(|e| Error::Tokenizer(e.to_string()))?;
                // Room for the special tokens the post-processor adds, as Transformers'
                // truncation leaves.
                let room = limit.saturating_sub(s.added).max(1);
                enc.truncate(room, 0, TruncationDirection::Right);
                let enc = s
                    .tok
                    .post_process(enc, None, true)
                    .map_err(|e| Error::Tokenizer(e.to_string()))?;
                Ok(enc.get_ids().to_vec())
            }
            ScoreInput::Tokens(ids) => {
                if ids.is_empty() {
                    return Err(Error::InvalidRequest(
                        "an input to embed has no tokens".into(),
                    ));
                }
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= s.vocab) {
                    return Err(Error::InvalidRequest(format!(
                        "token id {bad} is outside the vocabulary of {} tokens",
                        s.vocab
                    )));
                }
                Ok(ids[..ids.len().min(limit)].to_vec())
            }
            ScoreInput::Conversation(_) => Err(Error::Unsupported(format!(
                "{} embeds text or token ids; it has no chat template for a conversation (send the text)",
                s.info.model
            ))),
        }
    }

    /// Every input's vector, in input order.
    pub fn embed(&self, inputs: &[ScoreInput], max_length: Option<u32>) -> Result<Vec<Vec<f32>>> {
        let limit = self.max_len(max_length);
        let all: Vec<Vec<u32>> = inputs
            .iter()
            .map(|i| self.ids(i, limit))
            .collect::<Result<_>>()?;
        // Batches of similar length waste less on padding (sentence-transformers sorts too).
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(all[i].len()));
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); all.len()];
        self.inner.threads.install(|| -> Result<()> {
            for chunk in order.chunks(BATCH) {
                let seqs: Vec<&[u32]> = chunk.iter().map(|&i| all[i].as_slice()).collect();
                for (&i, v) in chunk.iter().zip(self.run_batch(&seqs)?) {
                    out[i] = v;
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// One encoder pass over right-padded sequences, pooled (and normalised) per sequence.
    fn run_batch(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let s = &self.inner;
        let width = seqs.iter().map(|q| q.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(seqs.len() * width);
        let mut mask = Vec::with_capacity(seqs.len() * width);
        for q in seqs {
            ids.extend_from_slice(q);
            ids.extend(std::iter::repeat_n(s.pad_id, width - q.len()));
            mask.extend(std::iter::repeat_n(1u32, q.len()));
            mask.extend(std::iter::repeat_n(0u32, width - q.len()));
        }
        let shape = (seqs.len(), width);
        let ids = Tensor::from_vec(ids, shape, &s.device)?;
        let mask = Tensor::from_vec(mask, shape, &s.device)?;
        let types = ids.zeros_like()?;
        let hidden = s
            .model
            .forward(&ids, &types, Some(&mask))?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?;
        let hidden: Vec<Vec<Vec<f32>>> = hidden.to_vec3()?;
        Ok(hidden
            .into_iter()
            .zip(seqs)
            .map(|(rows, q)| {
                let flat: Vec<f32> = rows.into_iter().flatten().collect();
                let mut v = folder::pool(&flat, s.hidden, q.len(), &s.pipeline.pools);
                if s.pipeline.normalize {
                    folder::normalize(&mut v);
                }
                v
            })
            .collect())
    }

    /// The pooling modes (for reports).
    pub fn pools(&self) -> &[Pool] {
        &self.inner.pipeline.pools
    }
}

impl Backend for Embedder {
    fn info(&self) -> EngineInfo {
        self.inner.info.clone()
    }

    fn stream_chat(
        &self,
        _request: ChatRequest,
        _cancel: CancelToken,
    ) -> Result<EventIter, EngineError> {
        Err(EngineError::unsupported(format!(
            "{} is a sentence-embedding model: it computes embeddings (POST /v1/embeddings, `switchyard embed`), not chat or completion replies",
            self.inner.info.model
        )))
    }

    fn get_scores(&self, request: ScoreRequest) -> Result<Vec<f32>, EngineError> {
        if !request.embed {
            return Err(EngineError::unsupported(format!(
                "{} is a sentence-embedding model without a reward head: ask for embeddings (`embed`), or load a reward model for scores",
                self.inner.info.model
            )));
        }
        if request.inputs.is_empty() {
            return Err(EngineError::invalid_request("no inputs to embed"));
        }
        Ok(self
            .embed(&request.inputs, request.max_length)?
            .into_iter()
            .flatten()
            .collect())
    }
}
