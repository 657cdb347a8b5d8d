//! Configuration: the `[backends.hf-candle]` options table and Hugging Face `config.json`.
//!
//! `config.json` comes in two shapes: transformers 4.x writes `rope_theta` and `rope_scaling` at
//! the top level, 5.x nests both in `rope_parameters`. [`HfConfig::rope`] reads either.

use std::path::Path;

use candle_core::DType;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::vision::request::MediaLimits;
use native_llm::kernels::WeightKind;

/// The `[backends.hf-candle]` options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Weight and activation dtype for safetensors models (GGUF runs quantized).
    pub dtype: DType,
    /// Compute threads.
    pub threads: usize,
    /// Run on CUDA device 0 instead of the CPU (needs the `cuda` feature).
    pub cuda: bool,
    /// Run GGUF files on the native batched engine when it supports them (`engine = "auto"`,
    /// the default) or always on candle's quantized models (`engine = "candle"`).
    pub native: bool,
    /// Byte budget of the prefix (multi-turn) KV cache, in MiB (`prefix_cache_mb`, 0 = off).
    pub prefix_cache_mb: usize,
    /// Prompt tokens prefilled per batched step (`prefill_chunk`).
    pub prefill_chunk: usize,
    /// Number format of the native engine's KV cache (`kv_cache_dtype`: `"f32"`, `"f16"`,
    /// `"bf16"`, or `"q8_0"`: blocks of 32 signed bytes and an f16 scale as llama.cpp's `-ctk
    /// q8_0 -ctv q8_0`, head widths a multiple of 32); `None` (`"auto"`, the default) picks it
    /// from the weights (`Transformer::default_kv_kind`). Bytes per token: `2 × layers ×
    /// kv_heads × head_dim` times 4 (f32), 2 (f16, bf16) or 34/32 (q8_0); Qwen2.5-0.5B (24
    /// layers, 2 KV heads of 64): 24,576 / 12,288 / 6,528.
    pub kv_cache: Option<WeightKind>,
    /// Keep special-token text in messages from being read as control tokens
    /// (`escape_special_tokens`, default true): `<|im_start|>system` typed by a user stays text.
    pub escape_special_tokens: bool,
    /// Vision-language models' media limits and LLaMA-Factory preprocessing keys
    /// (`image_max_pixels`, `image_min_pixels`, `video_max_pixels`, `video_min_pixels`,
    /// `video_fps`, `video_maxlen`, `max_media_per_request`).
    pub media: MediaLimits,
}

/// The keys of `[backends.hf-candle]`.
pub const OPTION_KEYS: &[&str] = &[
    "dtype",
    "threads",
    "device",
    "engine",
    "kv_cache_dtype",
    "prefix_cache_mb",
    "prefill_chunk",
    "escape_special_tokens",
    "image_max_pixels",
    "image_min_pixels",
    "video_max_pixels",
    "video_min_pixels",
    "video_fps",
    "video_maxlen",
    "max_media_per_request",
];

impl Options {
    /// Reads the options table; unknown keys and bad values are errors naming the key.
    pub fn from_value(v: &Value) -> Result<Self> {
        if let Some(key) = v
            .as_object()
            .and_then(|o| o.keys().find(|k| !OPTION_KEYS.contains(&k.as_str())))
        {
            return Err(Error::Config(format!(
                "[backends.hf-candle] has no key `{key}`; the keys are: {}",
                OPTION_KEYS.join(", ")
            )));
        }
        let get_str = |key: &str| -> Result<Option<String>> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.to_lowercase())),
                Some(other) => Err(Error::Config(format!(
                    "[backends.hf-candle] {key} must be a string, got {other}"
                ))),
            }
        };
        let dtype = match get_str("dtype")?.as_deref() {
            None | Some("f32") | Some("float32") => DType::F32,
            Some("bf16") | Some("bfloat16") => DType::BF16,
            Some("f16") | Some("float16") => DType::F16,
            Some(other) => {
                return Err(Error::Config(format!(
                    "[backends.hf-candle] dtype = \"{other}\" is not supported; use \"f32\", \"bf16\" or \"f16\""
                )));
            }
        };
        let threads = match v.get("threads") {
            None | Some(Value::Null) => default_threads(),
            Some(t) => match t.as_u64() {
                Some(0) => default_threads(),
                Some(n) => n as usize,
                None => {
                    return Err(Error::Config(format!(
                        "[backends.hf-candle] threads must be a whole number (0 = all cores), got {t}"
                    )));
                }
            },
        };
        let cuda = match get_str("device")?.as_deref() {
            None | Some("cpu") => false,
            Some("cuda") | Some("gpu") => true,
            Some(other) => {
                return Err(Error::Config(format!(
                    "[backends.hf-candle] device = \"{other}\" is not supported; use \"cpu\" or \"cuda\""
                )));
            }
        };
        let native = match get_str("engine")?.as_deref() {
            None | Some("auto") | Some("native") => true,
            Some("candle") => false,
            Some(other) => {
                return Err(Error::Config(format!(
                    "[backends.hf-candle] engine = \"{other}\" is not supported; use \"auto\" (native kernels where the GGUF allows) or \"candle\""
                )));
            }
        };
        let kv_cache = match get_str("kv_cache_dtype")?.as_deref() {
            None | Some("auto") => None,
            Some("f32") | Some("float32") => Some(WeightKind::F32),
            Some("f16") | Some("float16") => Some(WeightKind::F16),
            Some("bf16") | Some("bfloat16") => Some(WeightKind::BF16),
            Some("q8_0") => Some(WeightKind::Q8_0),
            Some(other) => {
                return Err(Error::Config(format!(
                    "[backends.hf-candle] kv_cache_dtype = \"{other}\" is not supported; use \"auto\" (f32 for f32 weights, bf16 for bf16, f16 otherwise), \"f32\", \"f16\", \"bf16\" or \"q8_0\" (8-bit blocks as llama.cpp's -ctk q8_0 -ctv q8_0)"
                )));
            }
        };
        let count = |key: &str, default: usize| -> Result<usize> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(t) => t.as_u64().map(|n| n as usize).ok_or_else(|| {
                    Error::Config(format!(
                        "[backends.hf-candle] {key} must be a whole number, got {t}"
                    ))
                }),
            }
        };
        let d = MediaLimits::default();
        let pixels =
            |key: &str, default: u64| -> Result<u64> { Ok(count(key, default as usize)? as u64) };
        let media = MediaLimits {
            image_max_pixels: pixels("image_max_pixels", d.image_max_pixels)?,
            image_min_pixels: pixels("image_min_pixels", d.image_min_pixels)?,
            video_max_pixels: pixels("video_max_pixels", d.video_max_pixels)?,
            video_min_pixels: pixels("video_min_pixels", d.video_min_pixels)?,
            video_fps: match v.get("video_fps") {
                None | Some(Value::Null) => d.video_fps,
                Some(t) => t.as_f64().filter(|f| *f > 0.0).ok_or_else(|| {
                    Error::Config(format!(
                        "[backends.hf-candle] video_fps must be a number of frames per second above 0, got {t}"
                    ))
                })?,
            },
            video_maxlen: count("video_maxlen", d.video_maxlen)?.max(1),
            max_media: count("max_media_per_request", d.max_media)?,
        };
        for (kind, max, min) in [
            ("image", media.image_max_pixels, media.image_min_pixels),
            ("video", media.video_max_pixels, media.video_min_pixels),
        ] {
            if max < min {
                return Err(Error::Config(format!(
                    "[backends.hf-candle] {kind}_max_pixels ({max}) is smaller than {kind}_min_pixels ({min}); raise the maximum or lower the minimum"
                )));
            }
        }
        Ok(Options {
            media,
            dtype,
            threads,
            cuda,
            native,
            prefix_cache_mb: count("prefix_cache_mb", 256)?,
            prefill_chunk: count("prefill_chunk", 512)?.max(1),
            kv_cache,
            escape_special_tokens: match v.get("escape_special_tokens") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(Error::Config(format!(
                        "[backends.hf-candle] escape_special_tokens must be true or false, got {other}"
                    )));
                }
            },
        })
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Rotary position embedding settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    /// Base frequency.
    pub theta: f64,
    /// Frequency scaling.
    pub scaling: RopeScaling,
}

impl Rope {
    /// The rotary inverse frequencies (`head_dim / 2`), scaling applied (f64).
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f64> {
        let mut inv_freq: Vec<f64> = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0 / self.theta.powf(i as f64 / head_dim as f64))
            .collect();
        match self.scaling {
            RopeScaling::Default => {}
            RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= factor),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f64::consts::PI / *f;
                    if wavelen > low_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_wavelen {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
        }
        inv_freq
    }
}

/// The rope scaling kinds implemented here.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// No scaling.
    Default,
    /// Positions divided by `factor`.
    Linear {
        /// Scale factor.
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        /// Scale factor.
        factor: f64,
        /// Low frequency factor.
        low_freq_factor: f64,
        /// High frequency factor.
        high_freq_factor: f64,
        /// Context the model was trained with before scaling.
        original_max_position_embeddings: f64,
    },
}

/// The parts of a Hugging Face `config.json` the decoder models here need.
#[derive(Clone, Debug, Deserialize)]
pub struct HfConfig {
    /// E.g. `["LlamaForCausalLM"]`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// E.g. `llama`.
    #[serde(default)]
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (defaults to the query heads).
    pub num_key_value_heads: Option<usize>,
    /// Per-head size (defaults to hidden / heads).
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// transformers 4.x rope base.
    pub rope_theta: Option<f64>,
    /// transformers 4.x rope scaling.
    pub rope_scaling: Option<Value>,
    /// transformers 5.x rope settings.
    pub rope_parameters: Option<Value>,
    /// Context window.
    #[serde(default = "default_ctx")]
    pub max_position_embeddings: usize,
    /// Whether the LM head shares the embedding matrix.
    pub tie_word_embeddings: Option<bool>,
    /// Bias on q/k/v/o projections (Llama).
    #[serde(default)]
    pub attention_bias: bool,
    /// Activation (only `silu` is implemented).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Mistral/Qwen sliding-window attention span.
    pub sliding_window: Option<usize>,
    /// Qwen2/3: whether the sliding window is actually used.
    pub use_sliding_window: Option<bool>,
    /// Padding token id (reward models score the last token that is not this one).
    pub pad_token_id: Option<Value>,
    /// End-of-sequence id(s).
    pub eos_token_id: Option<Value>,
    /// Number of classification labels (sequence classification heads).
    pub num_labels: Option<usize>,
    /// Label names (their count is the number of labels when `num_labels` is absent).
    pub id2label: Option<serde_json::Map<String, Value>>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_ctx() -> usize {
    4096
}
fn default_act() -> String {
    "silu".to_owned()
}

impl HfConfig {
    /// Reads `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::file(
                path,
                format!("cannot read ({e}); a Hugging Face model folder needs a config.json"),
            )
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|e| {
            Error::file(
                path,
                format!("is not a valid model config ({e}); re-export the model with transformers"),
            )
        })?;
        config.check_sizes(path)?;
        Ok(config)
    }

    /// Declared sizes are checked before anything is allocated for them (the limits are far
    /// above any released model), so a corrupt file is an error naming the key, not an abort.
    fn check_sizes(&self, path: &Path) -> Result<()> {
        const MAX_WIDTH: usize = 1 << 18;
        for (key, v, max) in [
            ("vocab_size", self.vocab_size, 1 << 22),
            ("hidden_size", self.hidden_size, MAX_WIDTH),
            ("intermediate_size", self.intermediate_size, 1 << 20),
            ("num_hidden_layers", self.num_hidden_layers, 1 << 12),
            ("num_attention_heads", self.num_attention_heads, MAX_WIDTH),
            ("num_key_value_heads", self.kv_heads(), MAX_WIDTH),
            ("head_dim", self.head_dim(), MAX_WIDTH),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                1 << 24,
            ),
        ] {
            if v == 0 || v > max {
                return Err(Error::file(
                    path,
                    format!("{key} = {v} is not a usable size (1 to {max}); the file is damaged"),
                ));
            }
        }
        Ok(())
    }

    /// The first entry of `architectures`, or one derived from `model_type`.
    pub fn architecture(&self) -> String {
        self.architectures
            .first()
            .cloned()
            .unwrap_or_else(|| self.model_type.clone())
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head size.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Number of classification labels.
    pub fn labels(&self) -> usize {
        self.num_labels
            .or_else(|| self.id2label.as_ref().map(|m| m.len()))
            .unwrap_or(2)
    }

    /// The padding id, when set.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_token_id
            .as_ref()
            .and_then(Value::as_u64)
            .map(|v| v as u32)
    }

    /// The sliding window actually in force, if any.
    pub fn effective_sliding_window(&self) -> Option<usize> {
        let used = match self.model_type.as_str() {
            "qwen2" | "qwen3" => self.use_sliding_window.unwrap_or(false),
            _ => true,
        };
        self.sliding_window.filter(|_| used)
    }

    /// Rope settings from either config shape.
    pub fn rope(&self) -> Result<Rope> {
        let params = self.rope_parameters.as_ref().filter(|v| v.is_object());
        let scaling_src = match params {
            Some(p) => Some(p),
            None => self.rope_scaling.as_ref().filter(|v| v.is_object()),
        };
        let theta = params
            .and_then(|p| p.get("rope_theta"))
            .and_then(Value::as_f64)
            .or(self.rope_theta)
            .unwrap_or(10_000.0);
        let Some(s) = scaling_src else {
            return Ok(Rope {
                theta,
                scaling: RopeScaling::Default,
            });
        };
        let kind = s
            .get("rope_type")
            .or_else(|| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let num = |key: &str| -> Result<f64> {
            s.get(key).and_then(Value::as_f64).ok_or_else(|| {
                Error::Config(format!(
                    "rope scaling `{kind}` needs a numeric `{key}` in config.json"
                ))
            })
        };
        let scaling = match kind {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear {
                factor: num("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            },
            other => {
                return Err(Error::Config(format!(
                    "rope scaling `{other}` is not supported; supported: default, linear, llama3"
                )));
            }
        };
        Ok(Rope { theta, scaling })
    }
}

/// Reads an id or a list of ids (`eos_token_id` may be either).
pub fn ids_of(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|n| n as u32)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: Value) -> HfConfig {
        let mut base = serde_json::json!({
            "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2,
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn rope_v4_and_v5_shapes() {
        let v4 = cfg(serde_json::json!({"rope_theta": 500000.0, "rope_scaling": {
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}));
        let v5 = cfg(
            serde_json::json!({"rope_parameters": {"rope_theta": 500000.0,
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}),
        );
        assert_eq!(v4.rope().unwrap(), v5.rope().unwrap());
        assert_eq!(v4.rope().unwrap().theta, 500000.0);
        let plain = cfg(serde_json::json!({"rope_theta": 1e6, "rope_scaling": null}));
        assert_eq!(plain.rope().unwrap().scaling, RopeScaling::Default);
        let yarn =
            cfg(serde_json::json!({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}));
        assert!(yarn.rope().unwrap_err().to_string().contains("yarn"));
    }

    #[test]
    fn options_parse() {
        let o = Options::from_value(&serde_json::json!({"dtype": "bf16", "threads": 3})).unwrap();
        assert_eq!(o.dtype, DType::BF16);
        assert_eq!(o.threads, 3);
        assert!(Options::from_value(&serde_json::json!({"dtype": "int3"})).is_err());
        assert_eq!(o.kv_cache, None);
        let kv = |v: &str| Options::from_value(&serde_json::json!({ "kv_cache_dtype": v }));
        assert_eq!(kv("F16").unwrap().kv_cache, Some(WeightKind::F16));
        assert_eq!(kv("bfloat16").unwrap().kv_cache, Some(WeightKind::BF16));
        assert_eq!(kv("auto").unwrap().kv_cache, None);
        assert_eq!(kv("Q8_0").unwrap().kv_cache, Some(WeightKind::Q8_0));
        let e = kv("q8").unwrap_err().to_string();
        assert!(e.contains("kv_cache_dtype") && e.contains("\"f16\""), "{e}");
    }
}
