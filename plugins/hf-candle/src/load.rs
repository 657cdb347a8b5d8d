//! Loading a model: where it is, which format, and which engine runs it — the native engine
//! ([`native_llm`]) for every GGUF file and Hugging Face folder it can run, candle
//! ([`crate::candle`]) for the rest — plus what comes with the weights (tokenizer, chat
//! template, generation defaults, end ids).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use candle_core::{DType, Device};
use native_llm::kernels::WeightKind;
use native_llm::model::{DecoderConfig, NATIVE_ARCHITECTURES, Transformer};
use native_llm::weights::GgufWeights;
use serde_json::{Map, Value as Json};
use switchyard_plugin::EngineConfig;

use crate::assets::{self, GenerationDefaults, TokenizerConfig};
use crate::candle::dense::Family;
use crate::candle::gguf::QuantModel;
use crate::candle::{Net, ScoreHead, hf};
use crate::config::{HfConfig, Options, ids_of};
use crate::error::{Error, Result};
use crate::gguf;
use crate::tokenizer::{self, Tok};
use crate::vision::request::VisionSpec;

/// Where the default model lives (fetched by `scripts/fetch-model.sh`).
pub fn default_model_path() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/switchyard/models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The model path `config` names (`~/` expanded, relative to the config file's folder), or
/// the default model.
pub(crate) fn resolve_path(config: &EngineConfig) -> Result<PathBuf> {
    let Some(raw) = config.model.path.as_deref() else {
        return Err(Error::Config(format!(
            "[model] path is not set; give a .gguf file or a Hugging Face folder (the default model, after scripts/fetch-model.sh: {})",
            default_model_path().display()
        )));
    };
    Ok(resolve(config, raw))
}

/// `raw` with `~/` expanded and, when relative, taken from the config file's folder.
fn resolve(config: &EngineConfig, raw: &str) -> PathBuf {
    let p = match raw.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map_or_else(|| PathBuf::from(raw), |h| PathBuf::from(h).join(rest)),
        None => PathBuf::from(raw),
    };
    match (&config.config_dir, p.is_relative()) {
        (Some(dir), true) => Path::new(dir).join(p),
        _ => p,
    }
}

/// The named adapters of `[model.lora_modules]`, their folders resolved as the model path is.
pub(crate) fn named_adapter_paths(
    config: &EngineConfig,
) -> std::collections::BTreeMap<String, PathBuf> {
    (config.model.lora_modules.iter())
        .map(|(name, raw)| (name.clone(), resolve(config, raw)))
        .collect()
}

/// The adapter folders `config` names, resolved as the model path is.
pub(crate) fn adapter_paths(config: &EngineConfig) -> Vec<PathBuf> {
    config
        .model
        .adapter_name_or_path
        .iter()
        .map(|raw| resolve(config, raw))
        .collect()
}

fn is_gguf(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return true;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|_| &magic == b"GGUF")
}

/// What runs a loaded model.
pub(crate) enum Runner {
    /// candle (reward models, CUDA, formats the native engine lacks, `engine = "candle"`).
    Candle(Net),
    /// The native engine.
    Native(Transformer),
}

/// A loaded model and what came with it.
pub(crate) struct Loaded {
    pub(crate) net: Runner,
    pub(crate) tok: Tok,
    pub(crate) model_template: Option<String>,
    pub(crate) gen_defaults: GenerationDefaults,
    pub(crate) context_length: usize,
    pub(crate) head: Option<ScoreHead>,
    pub(crate) pad_id: Option<u32>,
    pub(crate) details: Map<String, Json>,
    /// A vision-language model's image input (`None` for text models).
    pub(crate) vision: Option<VisionSpec>,
}

/// Loads the model at `path` (a Hugging Face folder or a GGUF file) as `opts` say. Call
/// inside the compute thread pool.
/// `adapters` are LoRA folders merged into the weights, in order (a GGUF base leaves them to
/// the caller, which attaches them for run-time use: see `lora::attach`).
pub(crate) fn load_model(
    path: &Path,
    opts: &Options,
    device: &Device,
    adapters: &[PathBuf],
) -> Result<Loaded> {
    if path.is_dir() {
        let mut loaded = load_folder(path, opts.dtype, device, opts.native, adapters)?;
        if let Some(v) = loaded.vision.as_mut() {
            v.limits = opts.media.clone();
        }
        Ok(loaded)
    } else if is_gguf(path) {
        // A quantized base cannot merge adapters: the engine applies them at run time.
        let loaded = load_gguf(path, device, opts.native)?;
        if let (Some(a), Runner::Candle(_)) = (adapters.first(), &loaded.net) {
            return Err(Error::Unsupported(format!(
                "adapter {}: LoRA adapters on a GGUF base run on the native engine, which does not run this architecture; merge the adapter before converting",
                a.display()
            )));
        }
        Ok(loaded)
    } else {
        Err(Error::file(
            path,
            "is neither a GGUF file nor a Hugging Face model folder (config.json + model.safetensors)",
        ))
    }
}

/// Which implementation runs a GGUF file.
enum GgufModel {
    /// The native engine.
    Native(Transformer),
    /// candle's quantized model (architectures or tensor formats the native model lacks).
    Candle(QuantModel),
}

/// A parsed GGUF file: its metadata plus the model.
struct LoadedGguf {
    model: GgufModel,
    /// `general.architecture`.
    arch: String,
    /// Usable context window.
    context_length: usize,
    /// All metadata (tokenizer, chat template...).
    metadata: HashMap<String, Value>,
}

/// Reads and loads a GGUF file, natively when `allow_native` and the file allows it, and
/// runs `side` on its metadata (the tokenizer build): on another thread while the native
/// model repacks its weights, so the two overlap.
fn read_gguf<R: Send>(
    path: &Path,
    device: &Device,
    allow_native: bool,
    side: impl FnOnce(&HashMap<String, Value>) -> Result<R> + Send,
) -> Result<(LoadedGguf, R)> {
    let header = gguf::read_header(path)?;
    let arch = gguf::architecture(&header.content);
    let ctx = gguf::context_length(&header.content, &arch);
    if allow_native && device.is_cpu() && NATIVE_ARCHITECTURES.contains(&arch.as_str()) {
        let weights = GgufWeights::with_map(
            path,
            header.map.clone(),
            gguf::native_directory(&header.content),
        )?;
        match weights.unsupported_tensor() {
            None => {
                let md = &header.content.metadata;
                let (model, extra) = std::thread::scope(|s| {
                    let h = s.spawn(move || side(md));
                    let model = Transformer::load(&weights, &arch);
                    (model, h.join())
                });
                let extra = extra.map_err(|_| {
                    Error::file(path, "reading its tokenizer metadata panicked".to_owned())
                })??;
                let model = model?;
                let context_length = model.hp.context_length;
                let loaded = LoadedGguf {
                    model: GgufModel::Native(model),
                    arch,
                    context_length,
                    metadata: header.content.metadata,
                };
                return Ok((loaded, extra));
            }
            Some((name, format)) => tracing::info!(
                tensor = %name,
                %format,
                "a tensor format the native kernels lack: running on candle's quantized model"
            ),
        }
    }
    if arch == "gemma3" {
        // candle-transformers 0.11's quantized_gemma3 applies SiLU where Gemma 3 uses GELU:
        // never run it (wrong text is worse than an error).
        let why = if !device.is_cpu() {
            "runs on the CPU only (the native engine); set `cuda = false`".to_owned()
        } else if !allow_native {
            "needs the native engine; remove `engine = \"candle\"`".to_owned()
        } else {
            let w = GgufWeights::with_map(
                path,
                header.map.clone(),
                gguf::native_directory(&header.content),
            )?;
            let (name, format) = w.unsupported_tensor().unwrap_or_default();
            format!(
                "has tensor `{name}` in {format}, which the native kernels do not run (they run F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K); re-quantize it, e.g. `llama-quantize in.gguf out.gguf Q4_K_M`"
            )
        };
        return Err(Error::file(path, format!("is a `gemma3` GGUF that {why}")));
    }
    // candle's models consume the file's content; the tokenizer still needs the metadata.
    let metadata = header.content.metadata.clone();
    let (candle, context_length) = QuantModel::from_header(path, header, device, &arch, ctx)?;
    let extra = side(&metadata)?;
    let loaded = LoadedGguf {
        model: GgufModel::Candle(candle),
        arch,
        context_length,
        metadata,
    };
    Ok((loaded, extra))
}

fn load_gguf(path: &Path, device: &Device, allow_native: bool) -> Result<Loaded> {
    let started = std::time::Instant::now();
    let (g, tok) = read_gguf(path, device, allow_native, |md| {
        let t0 = std::time::Instant::now();
        let tok = tokenizer::from_gguf(md, path);
        tracing::debug!(
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "GGUF tokenizer built"
        );
        tok
    })?;
    tracing::debug!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        "GGUF loaded (weights and tokenizer)"
    );
    let template = gguf::md_str(&g.metadata, "tokenizer.chat_template").map(str::to_owned);
    let pad_id = g
        .metadata
        .get("tokenizer.ggml.padding_token_id")
        .and_then(|v| v.to_u32().ok());
    let mut details = Map::new();
    details.insert("format".into(), "gguf".into());
    details.insert("architecture".into(), g.arch.clone().into());
    let net = match g.model {
        GgufModel::Native(m) => {
            details.insert("engine".into(), "native".into());
            details.insert("kernels".into(), native_llm::kernels::isa().name().into());
            Runner::Native(m)
        }
        GgufModel::Candle(m) => {
            details.insert("engine".into(), "candle".into());
            Runner::Candle(Net::Quant(m))
        }
    };
    Ok(Loaded {
        net,
        tok,
        model_template: template,
        gen_defaults: GenerationDefaults::default(),
        context_length: g.context_length,
        head: None,
        pad_id,
        details,
        vision: None,
    })
}

/// What the native safetensors loader needs of `config`, the family's rules applied.
fn native_decoder(config: &HfConfig, family: Family) -> Result<DecoderConfig> {
    let head_dim = config.head_dim();
    Ok(DecoderConfig {
        architecture: config.architecture(),
        hidden_size: config.hidden_size,
        num_hidden_layers: config.num_hidden_layers,
        num_attention_heads: config.num_attention_heads,
        num_key_value_heads: config.kv_heads(),
        head_dim,
        rms_norm_eps: config.rms_norm_eps,
        max_position_embeddings: config.max_position_embeddings,
        qkv_bias: family == Family::Qwen2 || config.attention_bias,
        qk_norm: family == Family::Qwen3,
        tie_word_embeddings: config.tie_word_embeddings.unwrap_or(false),
        inv_freq: config.rope()?.inv_freq(head_dim),
    })
}

fn load_folder(
    dir: &Path,
    dtype: DType,
    device: &Device,
    allow_native: bool,
    adapters: &[PathBuf],
) -> Result<Loaded> {
    if !dir.join("config.json").is_file() {
        return Err(Error::file(
            dir,
            "has no config.json; point [model] path at a Hugging Face model folder or a .gguf file",
        ));
    }
    let inner = Tok::from_file(&dir.join("tokenizer.json"))?;
    let tc = TokenizerConfig::load(dir)?;
    let gen_defaults = GenerationDefaults::load(dir)?;
    let template = assets::folder_template(dir, &tc)?;
    if let Some(arch) = crate::vision::folder_arch(dir) {
        let tok = Tok {
            inner,
            bos_token: tc.bos_token.clone(),
            eos_token: tc.eos_token.clone(),
            eos_ids: Vec::new(),
            derived: Default::default(),
        };
        return load_vision(
            dir,
            &arch,
            dtype,
            device,
            adapters,
            tok,
            &tc,
            gen_defaults,
            template,
        );
    }
    let config = HfConfig::load(&dir.join("config.json"))?;
    let arch = config.architecture();
    let family = Family::from_arch(&arch);
    // Generating models of the supported families run natively (batched, f32 math over
    // f32/bf16/f16 weights); reward models and sliding-window attention stay on candle.
    let native = allow_native
        && device.is_cpu()
        && arch.ends_with("ForCausalLM")
        && family.is_some()
        && !dir.join("value_head.safetensors").is_file()
        && config
            .effective_sliding_window()
            .is_none_or(|w| w >= config.max_position_embeddings);
    let (net, head, context_length) = match family {
        Some(family) if native => {
            let kind = match dtype {
                DType::BF16 => WeightKind::BF16,
                DType::F16 => WeightKind::F16,
                _ => WeightKind::F32,
            };
            let files = hf::weight_files(dir)?;
            let updates = crate::lora::read(adapters)?;
            let model =
                Transformer::load_hf(&native_decoder(&config, family)?, &files, kind, &updates)?;
            let ctx = model.hp.context_length;
            (Runner::Native(model), None, ctx)
        }
        _ if !adapters.is_empty() => {
            return Err(Error::Unsupported(format!(
                "LoRA adapters are merged by the native engine, which runs generating Llama/Mistral/Qwen2/Qwen3 folders on the CPU; {} ({arch}) runs on candle",
                dir.display()
            )));
        }
        _ => {
            let m = hf::load(dir, dtype, device)?;
            let ctx = m.model.max_positions();
            (Runner::Candle(Net::Dense(m.model)), m.head, ctx)
        }
    };
    let mut eos_ids: Vec<u32> = Vec::new();
    for id in ids_of(config.eos_token_id.as_ref())
        .into_iter()
        .chain(gen_defaults.eos_ids.iter().copied())
        .chain(tc.eos_token.as_deref().and_then(|t| inner.token_to_id(t)))
    {
        if !eos_ids.contains(&id) {
            eos_ids.push(id);
        }
    }
    let pad_id = config
        .pad_id()
        .or_else(|| tc.pad_token.as_deref().and_then(|t| inner.token_to_id(t)));
    let mut details = Map::new();
    details.insert("format".into(), "safetensors".into());
    details.insert("architecture".into(), arch.into());
    details.insert("dtype".into(), format!("{dtype:?}").to_lowercase().into());
    details.insert(
        "engine".into(),
        match net {
            Runner::Native(_) => "native",
            Runner::Candle(_) => "candle",
        }
        .into(),
    );
    Ok(Loaded {
        net,
        tok: Tok {
            inner,
            bos_token: tc.bos_token,
            eos_token: tc.eos_token,
            eos_ids,
            derived: Default::default(),
        },
        model_template: template,
        gen_defaults,
        context_length,
        head,
        pad_id,
        details,
        vision: None,
    })
}

/// A vision-language folder: its family on candle (f32), its processor, its end ids.
#[allow(clippy::too_many_arguments)]
fn load_vision(
    dir: &Path,
    arch: &str,
    dtype: DType,
    device: &Device,
    adapters: &[PathBuf],
    mut tok: Tok,
    tc: &TokenizerConfig,
    gen_defaults: GenerationDefaults,
    template: Option<String>,
) -> Result<Loaded> {
    if let Some(a) = adapters.first() {
        return Err(Error::Unsupported(format!(
            "adapter {}: LoRA adapters are not merged into vision-language models yet; merge it with PEFT (merge_and_unload) and serve the merged folder",
            a.display()
        )));
    }
    if dtype != DType::F32 {
        tracing::warn!("vision-language models run in f32 on candle; the dtype option is ignored");
    }
    let family = crate::vision::load(dir, arch, device)?;
    for (token, id) in &family.tokens {
        let found = tok.inner.token_to_id(token);
        if found != Some(*id) {
            return Err(Error::file(
                dir.join("config.json"),
                format!(
                    "the config gives {token} the id {id}, but the tokenizer has {found:?}; the tokenizer and config do not belong together"
                ),
            ));
        }
    }
    let mut eos_ids: Vec<u32> = gen_defaults.eos_ids.clone();
    if let Some(id) = tc
        .eos_token
        .as_deref()
        .and_then(|t| tok.inner.token_to_id(t))
        && !eos_ids.contains(&id)
    {
        eos_ids.push(id);
    }
    tok.eos_ids = eos_ids;
    let pad_id = tc
        .pad_token
        .as_deref()
        .and_then(|t| tok.inner.token_to_id(t));
    let mut details = Map::new();
    details.insert("format".into(), "safetensors".into());
    details.insert("architecture".into(), arch.into());
    details.insert("dtype".into(), "f32".into());
    details.insert("engine".into(), "candle".into());
    details.insert("inputs".into(), "text, images".into());
    Ok(Loaded {
        context_length: family.model.max_positions(),
        net: Runner::Candle(Net::Vision(family.model)),
        tok,
        model_template: template,
        gen_defaults,
        head: None,
        pad_id,
        details,
        vision: Some(VisionSpec {
            processor: family.processor,
            placeholders: switchyard_plugin::placeholders::Placeholders::from_env(),
            limits: Default::default(),
        }),
    })
}
