//! LLaMA-Factory's inference configs: a YAML (or JSON) file of `llamafactory-cli chat` keys,
//! read as the Switchyard config it means.
//!
//! ```yaml
//! model_name_or_path: saves/base            # -> [model] path
//! adapter_name_or_path: saves/lora/sft      # -> [model] adapter_name_or_path (comma list too)
//! template: qwen3_nothink                   # -> [model] template
//! infer_backend: huggingface                # -> sample_backend = "hf-candle" (vllm, sglang, ktransformers)
//! do_sample: false                          # GeneratingArguments -> [generation]
//! ```
//!
//! The file becomes a TOML table of Switchyard's shape, which then goes through the same
//! checks as a TOML config ([`crate::Config`]): one validation path for both. Trailing
//! `key=value` arguments override the file's keys as `llamafactory-cli chat FILE.yaml key=value`
//! does (values read as YAML); an override whose key is not a LLaMA-Factory key is a Switchyard
//! `--set` path (`generation.temperature=0`), applied after the translation.
//!
//! Keys fall in four groups: those Switchyard honours (translated below); those that only matter
//! for training, downloading or exporting (ignored, with one warning that names them); those
//! that would change the model's answers in a way no backend here can reproduce
//! (`quantization_bit`, `rope_scaling`, beam search, added tokens…: an error naming the key and
//! the fix); and unknown keys (an error naming the key, as LLaMA-Factory's own parser does).

use std::path::Path;

use crate::config::apply_override;
use crate::error::{Error, Result};

/// Keys of LLaMA-Factory's `DataArguments`, `FinetuningArguments`, `ModelArguments` and the
/// Trainer's `TrainingArguments` that do not affect inference (read from LLaMA-Factory's
/// `hparams/*.py`); they are ignored with a warning.
#[rustfmt::skip]
const TRAINING_ONLY: &[&str] = &[
    // DataArguments
    "dataset", "eval_dataset", "dataset_dir", "media_dir", "cutoff_len", "train_on_prompt",
    "mask_history", "streaming", "buffer_size", "mix_strategy", "interleave_probs",
    "overwrite_cache", "preprocessing_batch_size", "preprocessing_num_workers", "max_samples",
    "eval_num_beams", "ignore_pad_token_for_loss", "val_size", "eval_on_each_dataset", "packing",
    "neat_packing", "tokenized_path", "data_shared_file_system",
    // FinetuningArguments
    "stage", "finetuning_type", "lora_rank", "lora_alpha", "lora_dropout", "lora_target",
    "loraplus_lr_ratio", "loraplus_lr_embedding", "use_rslora", "use_dora", "pissa_init",
    "pissa_iter", "pissa_convert", "create_new_adapter", "additional_target", "module_dropout",
    "oft_rank", "oft_block_size", "oft_target", "freeze_trainable_layers",
    "freeze_trainable_modules", "freeze_extra_modules", "pref_beta", "pref_ftx", "pref_bco_weight",
    "pref_loss", "dpo_label_smoothing", "kto_chosen_weight", "kto_rejected_weight", "simpo_gamma",
    "ppo_buffer_size", "ppo_epochs", "ppo_score_norm", "ppo_target", "ppo_whiten_rewards",
    "ref_model", "ref_model_adapters", "ref_model_quantization_bit", "reward_model",
    "reward_model_adapters", "reward_model_quantization_bit", "reward_model_type", "ld_alpha",
    "use_galore", "galore_target", "galore_rank", "galore_update_interval", "galore_scale",
    "galore_proj_type", "galore_layerwise", "use_apollo", "apollo_target", "apollo_rank",
    "apollo_update_interval", "apollo_scale", "apollo_proj", "apollo_proj_type",
    "apollo_scale_type", "apollo_layerwise", "apollo_scale_front", "use_badam", "badam_mode",
    "badam_start_block", "badam_switch_mode", "badam_switch_interval", "badam_update_ratio",
    "badam_mask_mode", "badam_verbose", "use_swanlab", "swanlab_project", "swanlab_workspace",
    "swanlab_run_name", "swanlab_mode", "swanlab_api_key", "swanlab_logdir", "use_llama_pro",
    "use_adam_mini", "use_mca", "use_muon", "use_dft_loss", "freeze_vision_tower",
    "freeze_multi_modal_projector", "freeze_language_model", "compute_accuracy",
    "disable_shuffling", "early_stopping_steps", "plot_loss", "include_effective_tokens_per_second",
    // ModelArguments that only matter for downloading, training or exporting
    "cache_dir", "use_fast_tokenizer", "split_special_tokens", "model_revision",
    "low_cpu_mem_usage", "flash_attn", "shift_attn", "use_unsloth", "use_unsloth_gc",
    "enable_liger_kernel", "moe_aux_loss_coef", "disable_gradient_checkpointing",
    "use_reentrant_gc", "upcast_layernorm", "upcast_lmhead_output", "train_from_scratch",
    "offload_folder", "use_kv_cache", "hf_hub_token", "ms_hub_token", "om_hub_token",
    "print_param_status", "quantization_method", "quantization_type", "double_quantization",
    "quantization_device_map", "export_dir", "export_size", "export_device",
    "export_quantization_bit", "export_quantization_dataset", "export_quantization_nsamples",
    "export_quantization_maxlen", "export_legacy_format", "export_hub_model_id", "compute_dtype",
    "device_map", "model_max_length", "block_diag_attn",
    // TrainingArguments (the Trainer's)
    "output_dir", "overwrite_output_dir", "do_train", "do_eval", "do_predict",
    "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
    "learning_rate", "weight_decay", "max_grad_norm", "num_train_epochs", "max_steps",
    "lr_scheduler_type", "warmup_ratio", "warmup_steps", "logging_steps", "logging_dir",
    "save_steps", "save_strategy", "save_total_limit", "save_only_model", "eval_steps",
    "eval_strategy", "evaluation_strategy", "load_best_model_at_end", "bf16", "fp16", "tf32",
    "ddp_timeout", "report_to", "run_name", "seed", "resume_from_checkpoint", "deepspeed",
    "gradient_checkpointing", "optim", "dataloader_num_workers", "remove_unused_columns",
    "push_to_hub", "hub_model_id", "predict_with_generate", "ray_num_workers", "ray_init_kwargs",
];

/// Keys whose meaning no Switchyard backend reproduces: an error with the fix.
const REFUSED: &[(&str, &str)] = &[
    (
        "quantization_bit",
        "on-the-fly bitsandbytes quantization is not available; serve a quantized GGUF file instead",
    ),
    (
        "rope_scaling",
        "RoPE scaling is read from the model's own config.json; remove the key",
    ),
    (
        "add_tokens",
        "tokens added at load time would change the vocabulary; save the tokenizer with them and point model_name_or_path at it",
    ),
    (
        "add_special_tokens",
        "tokens added at load time would change the vocabulary; save the tokenizer with them and point model_name_or_path at it",
    ),
    (
        "new_special_tokens_config",
        "tokens added at load time would change the vocabulary; save the tokenizer with them",
    ),
    (
        "init_special_tokens",
        "tokens added at load time would change the vocabulary; save the tokenizer with them",
    ),
    (
        "resize_vocab",
        "resizing the vocabulary is a training step; export the resized model first",
    ),
    (
        "adapter_folder",
        "give the adapter folders in adapter_name_or_path",
    ),
    (
        "mixture_of_depths",
        "mixture-of-depths models are not supported",
    ),
    (
        "tool_format",
        "the template's own tool format is used; remove the key",
    ),
    (
        "preserve_thinking",
        "earlier turns' reasoning is dropped as the template does; remove the key",
    ),
];

/// Multimodal preprocessing keys hf-candle's vision-language models read (as
/// `[backends.hf-candle]` options of the same names); other backends ignore them with a warning.
const HF_CANDLE_MEDIA: &[&str] = &[
    "image_max_pixels",
    "image_min_pixels",
    "video_max_pixels",
    "video_min_pixels",
    "video_fps",
    "video_maxlen",
];

/// Multimodal preprocessing keys: kept for the backends that read images, ignored otherwise.
const MEDIA: &[&str] = &[
    "image_max_pixels",
    "image_min_pixels",
    "image_do_pan_and_scan",
    "crop_to_patches",
    "video_max_pixels",
    "video_min_pixels",
    "video_fps",
    "video_maxlen",
    "use_audio_in_video",
    "audio_sampling_rate",
];

/// GeneratingArguments that map one to one onto `[generation]`.
const GENERATION: &[&str] = &[
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "max_length",
    "max_new_tokens",
    "repetition_penalty",
    "length_penalty",
    "skip_special_tokens",
];

/// `(LLaMA-Factory key, the backend that reads it, its key in that backend's table)`.
const BACKEND_KEYS: &[(&str, &str, &str)] = &[
    ("vllm_maxlen", "vllm", "max_model_len"),
    ("vllm_gpu_util", "vllm", "gpu_memory_utilization"),
    ("vllm_enforce_eager", "vllm", "enforce_eager"),
    ("vllm_max_lora_rank", "vllm", "max_lora_rank"),
    ("sglang_maxlen", "sglang", "max_model_len"),
    ("sglang_mem_fraction", "sglang", "gpu_memory_utilization"),
    ("sglang_tp_size", "sglang", "tensor_parallel_size"),
    ("sglang_lora_backend", "sglang", "lora_backend"),
];

/// Free-form engine argument tables, merged into the backend's table.
const BACKEND_TABLES: &[(&str, &str)] = &[("vllm_config", "vllm"), ("sglang_config", "sglang")];

/// The rest of the keys Switchyard reads.
const HONOURED: &[&str] = &[
    "model_name_or_path",
    "adapter_name_or_path",
    "template",
    "infer_backend",
    "default_system",
    "enable_thinking",
    "infer_dtype",
    "trust_remote_code",
    "num_beams",
    "use_kt",
];

/// Whether `path` names a LLaMA-Factory config (`.yaml`, `.yml` or `.json`), not a TOML one.
pub fn is_llamafactory_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["yaml", "yml", "json"].contains(&e.to_ascii_lowercase().as_str()))
}

fn is_known(key: &str) -> bool {
    let root = key.split('.').next().unwrap_or(key);
    HONOURED.contains(&root)
        || GENERATION.contains(&root)
        || TRAINING_ONLY.contains(&root)
        || MEDIA.contains(&root)
        || REFUSED.iter().any(|(k, _)| *k == root)
        || BACKEND_KEYS.iter().any(|(k, _, _)| *k == root)
        || BACKEND_TABLES.iter().any(|(k, _)| *k == root)
        || root.starts_with("kt_")
}

/// Translates a LLaMA-Factory config text into a Switchyard config table. `overrides` are
/// `key=value` pairs: LLaMA-Factory keys override the file, other keys are `--set` paths.
pub(crate) fn to_table(text: &str, origin: &str, overrides: &[String]) -> Result<toml::Table> {
    let bad = |msg: String| Error::Config(format!("invalid config: {origin}: {msg}"));
    let mut doc: serde_json::Map<String, serde_json::Value> =
        match yaml_serde::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(serde_json::Value::Null) => serde_json::Map::new(),
            Ok(other) => {
                return Err(bad(format!(
                    "a LLaMA-Factory config is a mapping of keys (model_name_or_path: ...), not {}",
                    kind(&other)
                )));
            }
            Err(e) => return Err(bad(format!("not valid YAML: {e}"))),
        };
    let mut switchyard_sets = Vec::new();
    for o in overrides {
        let Some((key, raw)) = o.split_once('=') else {
            return Err(bad(format!(
                "override `{o}`: expected key=value, e.g. template=qwen3 or temperature=0.5"
            )));
        };
        let key = key.trim();
        if !is_known(key) {
            switchyard_sets.push(o.clone());
            continue;
        }
        let value: serde_json::Value = yaml_serde::from_str(raw.trim())
            .unwrap_or_else(|_| serde_json::Value::String(raw.trim().to_owned()));
        match key.split_once('.') {
            Some((table, sub)) => {
                let entry = doc
                    .entry(table.to_owned())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                let serde_json::Value::Object(map) = entry else {
                    return Err(bad(format!("override `{o}`: `{table}` is not a mapping")));
                };
                map.insert(sub.to_owned(), value);
            }
            None => {
                doc.insert(key.to_owned(), value);
            }
        }
    }
    doc.retain(|_, v| !v.is_null());

    if let Some(key) = doc.keys().find(|k| !is_known(k)) {
        return Err(bad(format!(
            "unknown key `{key}`; Switchyard reads LLaMA-Factory's inference keys (model_name_or_path, adapter_name_or_path, template, infer_backend, default_system, enable_thinking, infer_dtype, the generating arguments {}, vllm_*, sglang_*, kt_*) and ignores training keys",
            GENERATION.join(", ")
        )));
    }
    for (key, fix) in REFUSED {
        if let Some(v) = doc.get(*key)
            && !matches!(v, serde_json::Value::Bool(false))
        {
            return Err(bad(format!("`{key}: {v}` cannot be honoured: {fix}")));
        }
    }
    if let Some(n) = doc.get("num_beams")
        && n.as_u64() != Some(1)
    {
        return Err(bad(format!(
            "`num_beams: {n}`: beam search is not supported; remove the key (sampling or greedy decoding is used)"
        )));
    }

    let backend = match doc.get("infer_backend").map(|v| v.as_str()) {
        None | Some(Some("huggingface" | "hf")) => "hf-candle",
        Some(Some("vllm")) => "vllm",
        Some(Some("sglang")) => "sglang",
        Some(Some("ktransformers")) => "ktransformers",
        Some(other) => {
            return Err(bad(format!(
                "infer_backend: {}: use huggingface (hf-candle), vllm, sglang or ktransformers",
                other.unwrap_or("(not a string)")
            )));
        }
    };
    if doc
        .get("use_kt")
        .is_some_and(|v| v == &serde_json::Value::Bool(true))
        && backend != "ktransformers"
    {
        return Err(bad(format!(
            "use_kt: true with infer_backend {backend}: set infer_backend: ktransformers"
        )));
    }

    let mut table = toml::Table::new();
    table.insert("sample_backend".into(), backend.into());
    let mut model = toml::Table::new();
    let mut generation = toml::Table::new();
    let mut options = toml::Table::new();
    let mut ignored: Vec<&str> = Vec::new();
    let to_toml = |key: &str, v: &serde_json::Value| -> Result<toml::Value> {
        toml::Value::try_from(v).map_err(|e| bad(format!("`{key}`: {e}")))
    };
    let string = |key: &str, v: &serde_json::Value| -> Result<String> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad(format!("`{key}: {v}`: expected a string")))
    };
    for (key, v) in &doc {
        let key = key.as_str();
        match key {
            "model_name_or_path" => {
                model.insert("path".into(), string(key, v)?.into());
            }
            "adapter_name_or_path" => {
                // LLaMA-Factory takes a comma-separated string or a list.
                let list: Vec<String> = match v {
                    serde_json::Value::Array(items) => items
                        .iter()
                        .map(|i| string(key, i))
                        .collect::<Result<_>>()?,
                    _ => string(key, v)?
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect(),
                };
                model.insert("adapter_name_or_path".into(), to_toml(key, &list.into())?);
            }
            "template" | "default_system" => {
                model.insert(key.into(), string(key, v)?.into());
            }
            "enable_thinking" => {
                let mut kwargs = toml::Table::new();
                kwargs.insert(key.into(), to_toml(key, v)?);
                table.insert("chat_template_kwargs".into(), kwargs.into());
            }
            "infer_dtype" => match (string(key, v)?.as_str(), backend) {
                ("auto", _) => {}
                (d @ ("float32" | "bfloat16" | "float16"), "hf-candle") => {
                    let short = match d {
                        "float32" => "f32",
                        "bfloat16" => "bf16",
                        _ => "f16",
                    };
                    options.insert("dtype".into(), short.into());
                }
                (d @ ("float32" | "bfloat16" | "float16"), _) => {
                    options.insert("dtype".into(), d.into());
                }
                (d, _) => {
                    return Err(bad(format!(
                        "infer_dtype: {d}: use auto, float16, bfloat16 or float32"
                    )));
                }
            },
            "trust_remote_code" => {
                if backend == "hf-candle" {
                    ignored.push(key);
                } else {
                    options.insert(key.into(), to_toml(key, v)?);
                }
            }
            "num_beams" | "use_kt" => {}
            k if GENERATION.contains(&k) => {
                generation.insert(key.into(), to_toml(key, v)?);
            }
            k if k.starts_with("kt_") => {
                if backend == "ktransformers" {
                    options.insert(key.into(), to_toml(key, v)?);
                } else {
                    ignored.push(key);
                }
            }
            k if HF_CANDLE_MEDIA.contains(&k) && backend == "hf-candle" => {
                options.insert(key.into(), to_toml(key, v)?);
            }
            k if MEDIA.contains(&k) || TRAINING_ONLY.contains(&k) => ignored.push(key),
            _ => {
                if let Some((_, b, name)) = BACKEND_KEYS.iter().find(|(k, _, _)| *k == key) {
                    if *b == backend {
                        options.insert((*name).into(), to_toml(key, v)?);
                    } else {
                        ignored.push(key);
                    }
                } else if let Some((_, b)) = BACKEND_TABLES.iter().find(|(k, _)| *k == key) {
                    // A mapping, or a JSON string of one (LLaMA-Factory takes both).
                    let map = match v {
                        serde_json::Value::String(s) => serde_json::from_str(s)
                            .map_err(|e| bad(format!("`{key}`: not a JSON object: {e}")))?,
                        other => other.clone(),
                    };
                    let serde_json::Value::Object(map) = map else {
                        return Err(bad(format!(
                            "`{key}`: expected a mapping of engine arguments"
                        )));
                    };
                    if *b == backend {
                        for (k, v) in &map {
                            options.insert(k.clone(), to_toml(key, v)?);
                        }
                    } else {
                        ignored.push(key);
                    }
                }
            }
        }
    }
    if !ignored.is_empty() {
        tracing::warn!(
            "{origin}: ignoring keys that do not affect serving with {backend}: {}",
            ignored.join(", ")
        );
    }
    table.insert("model".into(), model.into());
    if !generation.is_empty() {
        table.insert("generation".into(), generation.into());
    }
    if !options.is_empty() {
        let mut backends = toml::Table::new();
        backends.insert(backend.into(), options.into());
        table.insert("backends".into(), backends.into());
    }
    for o in &switchyard_sets {
        apply_override(&mut table, o)?;
    }
    Ok(table)
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::Bool(_) => "a boolean",
        _ => "this",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn config(yaml: &str, overrides: &[&str]) -> Result<Config> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let table = to_table(yaml, "t.yaml", &overrides)?;
        Config::from_table(table, "t.yaml", yaml)
    }

    #[test]
    fn the_lora_sft_example_becomes_an_hf_candle_config() {
        let c = config(
            "model_name_or_path: base\nadapter_name_or_path: a, b\ntemplate: qwen3_nothink\n\
             infer_backend: huggingface\ntrust_remote_code: true\ndo_sample: false\n\
             max_new_tokens: 64\nenable_thinking: false\ndefault_system: Be brief.\n\
             infer_dtype: bfloat16\nstage: sft\nfinetuning_type: lora\noutput_dir: saves\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.sample_backend, "hf-candle");
        assert_eq!(c.model.path.as_deref(), Some("base"));
        assert_eq!(c.model.adapter_name_or_path, ["a", "b"]);
        assert_eq!(c.model.template.as_deref(), Some("qwen3_nothink"));
        assert_eq!(c.model.default_system.as_deref(), Some("Be brief."));
        assert_eq!(c.generation.do_sample, Some(false));
        assert_eq!(c.generation.max_new_tokens, Some(64));
        assert_eq!(c.chat_template_kwargs["enable_thinking"], false);
        assert_eq!(c.backends["hf-candle"]["dtype"].as_str(), Some("bf16"));
    }

    #[test]
    fn overrides_follow_llamafactory_cli_and_switchyard_paths() {
        let c = config(
            "model_name_or_path: base\ntemperature: 0.9\n",
            &["temperature=0.2", "template=chatml", "generation.seed=7"],
        )
        .unwrap();
        assert_eq!(c.generation.temperature, Some(0.2));
        assert_eq!(c.model.template.as_deref(), Some("chatml"));
        assert_eq!(c.generation.seed, Some(7));
    }

    #[test]
    fn media_keys_reach_hf_candle_and_are_ignored_elsewhere() {
        let yaml =
            "model_name_or_path: m\nimage_max_pixels: 262144\nvideo_fps: 1.0\nvideo_maxlen: 8\n";
        let c = config(yaml, &[]).unwrap();
        let t = &c.backends["hf-candle"];
        assert_eq!(t["image_max_pixels"].as_integer(), Some(262144));
        assert_eq!(t["video_fps"].as_float(), Some(1.0));
        assert_eq!(t["video_maxlen"].as_integer(), Some(8));
        let v = config(&format!("{yaml}infer_backend: vllm\n"), &[]).unwrap();
        assert!(
            v.backends
                .get("vllm")
                .is_none_or(|t| t.get("video_fps").is_none())
        );
    }

    #[test]
    fn vllm_keys_reach_the_vllm_table_only_for_vllm() {
        let c = config(
            "model_name_or_path: m\ninfer_backend: vllm\nvllm_maxlen: 2048\nvllm_gpu_util: 0.8\n\
             vllm_enforce_eager: true\nvllm_config: {max_num_seqs: 8}\nsglang_maxlen: 10\n",
            &[],
        )
        .unwrap();
        let t = &c.backends["vllm"];
        assert_eq!(t["max_model_len"].as_integer(), Some(2048));
        assert_eq!(t["gpu_memory_utilization"].as_float(), Some(0.8));
        assert_eq!(t["enforce_eager"].as_bool(), Some(true));
        assert_eq!(t["max_num_seqs"].as_integer(), Some(8));
        assert!(!c.backends.contains_key("sglang"));
        let s = config(
            "model_name_or_path: m\ninfer_backend: sglang\nsglang_tp_size: 2\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            s.backends["sglang"]["tensor_parallel_size"].as_integer(),
            Some(2)
        );
    }

    #[test]
    fn unknown_and_unhonourable_keys_are_named_errors() {
        let e = config("model_name_or_path: m\ntemprature: 0.5\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`temprature`") && e.contains("t.yaml"), "{e}");
        let e = config("model_name_or_path: m\nquantization_bit: 4\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("quantization_bit") && e.contains("GGUF"), "{e}");
        let e = config("model_name_or_path: m\nnum_beams: 4\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("num_beams"), "{e}");
        let e = config("model_name_or_path: m\ninfer_backend: llamacpp\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("llamacpp") && e.contains("vllm"), "{e}");
        let e = config("- a\n- b\n", &[]).unwrap_err().to_string();
        assert!(e.contains("mapping"), "{e}");
        assert!(
            config(
                "model_name_or_path: m\nnum_beams: 1\nquantization_bit: null\n",
                &[]
            )
            .is_ok()
        );
    }
}
