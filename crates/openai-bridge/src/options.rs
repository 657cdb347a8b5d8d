//! The `[backends.<name>]` table: attach or launch settings, timeouts, and the launch command line.
//!
//! ```toml
//! [backends.vllm]
//! # attach mode: a running server (the root URL, with or without /v1)
//! base_url = "http://gpu-box:8000/v1"
//! api_key = "token-abc123"
//! model = "my-model"              # default: the first model the server lists
//!
//! # launch mode (no base_url): Switchyard starts `vllm serve <model.path>` itself
//! tensor_parallel_size = 2        # server flags by name (see the flavor's option list)
//! args = ["--max-num-seqs", "64"] # anything else, verbatim
//! max_lora_rank = 64              # with LoRA adapters (default: from their adapter_config.json)
//! # command = ["/opt/llama-server", "-m", "{model}", "--host", "{host}", "--port", "{port}"]
//! ready_timeout_s = 900
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use switchyard_plugin::EngineConfig;

use crate::error::{BridgeError, Result};
use crate::flavor::Flavor;
use crate::lora::Adapters;

/// What happens to a server's reasoning text (`reasoning` / `reasoning_content`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReasoningMode {
    /// Passed on as the response's reasoning (`reasoning = "keep"`; the old name `"inline"`
    /// means the same).
    #[default]
    Keep,
    /// Dropped (`reasoning = "drop"`).
    Drop,
}

/// Parsed `[backends.<name>]` options.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Attach mode: the server's root URL (`/v1` optional).
    pub base_url: Option<String>,
    /// Bearer token for the server.
    pub api_key: Option<String>,
    /// The served model name; default the first the server lists.
    pub model: Option<String>,
    /// Launch mode: the full command line, replacing the flavor's (placeholders `{model}`,
    /// `{host}`, `{port}`).
    pub command: Option<Vec<String>>,
    /// Launch mode: extra arguments appended verbatim.
    pub args: Vec<String>,
    /// Launch mode: environment variables for the server.
    pub env: BTreeMap<String, String>,
    /// Launch mode: listen address (default `127.0.0.1`).
    pub host: Option<String>,
    /// Launch mode: port (default a free one).
    pub port: Option<u16>,
    /// Launch mode: the name to serve the model under.
    pub served_model_name: Option<String>,
    /// Launch mode: how long to wait for the readiness probe (default 900 s).
    pub ready_timeout_s: Option<f64>,
    /// Launch mode: grace period between SIGTERM and SIGKILL on shutdown (default 10 s).
    pub stop_timeout_s: Option<f64>,
    /// Time to the response headers, and the longest silence inside a stream (default 600 s).
    pub request_timeout_s: Option<f64>,
    /// TCP connect timeout (default 5 s).
    pub connect_timeout_s: Option<f64>,
    /// Retries for connection failures before a request is sent (default 2).
    pub connect_retries: Option<u32>,
    /// `"inline"` (default) or `"drop"`.
    pub reasoning: Option<String>,
    /// Whether to accept images, videos and audio (default true where the server can).
    pub multimodal: Option<bool>,
    /// vLLM scores: `"classify"` (default) or `"pooling"`.
    pub score_endpoint: Option<String>,
    /// KTransformers: `"sglang"` (default) or `"legacy"`.
    pub server: Option<String>,
    /// Launch mode with LoRA adapters: the server's `--max-lora-rank` (LLaMA-Factory's
    /// `vllm_max_lora_rank`). vLLM default: the adapters' largest rank rounded up to one it
    /// accepts; SGLang infers it itself.
    pub max_lora_rank: Option<u32>,
    /// Server flags by name (checked against the flavor's list).
    #[serde(flatten)]
    pub flags: Map<String, Value>,
}

fn secs(v: Option<f64>, default: f64) -> Duration {
    Duration::from_secs_f64(v.filter(|s| s.is_finite() && *s > 0.0).unwrap_or(default))
}

impl Options {
    /// Parses and checks the table for `flavor`.
    pub fn parse(flavor: &Flavor, options: &Value) -> Result<Self> {
        let table = if options.is_null() {
            Value::Object(Map::new())
        } else {
            options.clone()
        };
        let o: Options = serde_json::from_value(table).map_err(|e| {
            BridgeError::Config(format!("invalid [backends.{}] table: {e}", flavor.backend))
        })?;
        let known: Vec<&str> = flavor.launch.option_flags.iter().map(|(k, _)| *k).collect();
        for key in o.flags.keys() {
            let prefixed = flavor
                .launch
                .prefix_flags
                .is_some_and(|(p, _)| key.starts_with(p));
            if !known.contains(&key.as_str()) && !prefixed {
                return Err(BridgeError::Config(format!(
                    "unknown key `{key}` in [backends.{}]; known keys: base_url, api_key, model, command, args, env, host, port, served_model_name, ready_timeout_s, stop_timeout_s, request_timeout_s, connect_timeout_s, connect_retries, reasoning, multimodal, score_endpoint, max_lora_rank{}, and the server flags {}{}",
                    flavor.backend,
                    if flavor.backend == "ktransformers" {
                        ", server"
                    } else {
                        ""
                    },
                    known.join(", "),
                    flavor
                        .launch
                        .prefix_flags
                        .map(|(p, _)| format!(", {p}*"))
                        .unwrap_or_default(),
                )));
            }
        }
        if let Some(r) = &o.reasoning
            && !["keep", "inline", "drop"].contains(&r.as_str())
        {
            return Err(BridgeError::Config(format!(
                "[backends.{}] reasoning = \"{r}\": use \"keep\" or \"drop\"",
                flavor.backend
            )));
        }
        if let Some(s) = &o.score_endpoint
            && s != "classify"
            && s != "pooling"
        {
            return Err(BridgeError::Config(format!(
                "[backends.{}] score_endpoint = \"{s}\": use \"classify\" or \"pooling\"",
                flavor.backend
            )));
        }
        if o.command.as_ref().is_some_and(Vec::is_empty) {
            return Err(BridgeError::Config(format!(
                "[backends.{}] command is empty; give the program and its arguments",
                flavor.backend
            )));
        }
        Ok(o)
    }

    /// The reasoning mode.
    pub fn reasoning_mode(&self) -> ReasoningMode {
        match self.reasoning.as_deref() {
            Some("drop") => ReasoningMode::Drop,
            _ => ReasoningMode::Keep,
        }
    }

    /// Readiness timeout.
    pub fn ready_timeout(&self) -> Duration {
        secs(self.ready_timeout_s, 900.0)
    }

    /// Shutdown grace period.
    pub fn stop_timeout(&self) -> Duration {
        secs(self.stop_timeout_s, 10.0)
    }

    /// Header / stream-silence timeout.
    pub fn request_timeout(&self) -> Duration {
        secs(self.request_timeout_s, 600.0)
    }

    /// Connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        secs(self.connect_timeout_s, 5.0)
    }

    /// Connection retries.
    pub fn connect_retries(&self) -> u32 {
        self.connect_retries.unwrap_or(2)
    }
}

/// Builds the launch command line: the flavor's program with model, host, port, key, flags and
/// the LoRA adapters' flags, or the configured `command` with its placeholders filled; then
/// `args`.
pub fn launch_argv(
    flavor: &Flavor,
    options: &Options,
    config: &EngineConfig,
    adapters: &Adapters,
    host: &str,
    port: u16,
) -> Result<Vec<String>> {
    let model = config.model.path.clone().unwrap_or_default();
    let fill = |s: &str| {
        s.replace("{model}", &model)
            .replace("{host}", host)
            .replace("{port}", &port.to_string())
    };
    let mut argv: Vec<String> = Vec::new();
    if let Some(command) = &options.command {
        argv.extend(command.iter().map(|a| fill(a)));
        argv.extend(options.args.iter().map(|a| fill(a)));
        return Ok(argv);
    }
    let spec = &flavor.launch;
    if model.is_empty() {
        return Err(BridgeError::Config(format!(
            "launch mode needs the model to serve: set `path` in [model] (or set `base_url` in [backends.{}] to attach to a running server)",
            flavor.backend
        )));
    }
    argv.extend(spec.program.iter().map(|s| s.to_string()));
    if let Some(flag) = spec.model_flag {
        argv.push(flag.to_owned());
    }
    argv.push(model.clone());
    argv.extend([spec.host_flag.to_owned(), host.to_owned()]);
    argv.extend([spec.port_flag.to_owned(), port.to_string()]);
    if let Some(key) = &options.api_key {
        argv.extend([spec.api_key_flag.to_owned(), key.clone()]);
    }
    if let Some(name) = &options.served_model_name {
        argv.extend([spec.served_name_flag.to_owned(), name.clone()]);
    }
    if let (Some(flag), Some(file)) = (spec.chat_template_flag, &config.model.chat_template_file) {
        argv.extend([flag.to_owned(), file.clone()]);
    }
    for (key, value) in &options.flags {
        let flag = match spec.option_flags.iter().find(|(k, _)| k == key) {
            Some((_, f)) => f.to_string(),
            None => match spec.prefix_flags {
                Some((p, fp)) if key.starts_with(p) => {
                    format!("{fp}{}", key[p.len()..].replace('_', "-"))
                }
                _ => continue,
            },
        };
        match value {
            Value::Bool(true) => argv.push(flag),
            Value::Bool(false) | Value::Null => {}
            Value::String(s) => argv.extend([flag, s.clone()]),
            other => argv.extend([flag, other.to_string()]),
        }
    }
    argv.extend(adapters.launch_flags(flavor, options)?);
    argv.extend(options.args.iter().map(|a| fill(a)));
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flavor::{KT_LEGACY, KT_SGLANG, VLLM};
    use serde_json::json;

    fn config(path: &str) -> EngineConfig {
        let mut c = EngineConfig::default();
        c.model.path = Some(path.to_owned());
        c
    }

    fn none() -> Adapters {
        Adapters::default()
    }

    #[test]
    fn vllm_argv_has_model_positional_and_named_flags() {
        let o = Options::parse(
            &VLLM,
            &json!({"tensor_parallel_size": 2, "trust_remote_code": true, "dtype": "bfloat16", "api_key": "k", "args": ["--max-num-seqs", "8"]}),
        )
        .unwrap();
        let argv = launch_argv(
            &VLLM,
            &o,
            &config("Qwen/Qwen3-8B"),
            &none(),
            "127.0.0.1",
            8000,
        )
        .unwrap();
        assert_eq!(
            argv.join(" "),
            "vllm serve Qwen/Qwen3-8B --host 127.0.0.1 --port 8000 --api-key k --tensor-parallel-size 2 --trust-remote-code --dtype bfloat16 --max-num-seqs 8"
        );
    }

    #[test]
    fn ktransformers_kt_flags_and_legacy_underscores() {
        let o = Options::parse(
            &KT_SGLANG,
            &json!({"kt_method": "AMXINT8", "kt_num_gpu_experts": 32, "tensor_parallel_size": 1}),
        )
        .unwrap();
        let argv = launch_argv(&KT_SGLANG, &o, &config("/m/q"), &none(), "0.0.0.0", 30000).unwrap();
        assert_eq!(
            argv.join(" "),
            "python3 -m sglang.launch_server --model-path /m/q --host 0.0.0.0 --port 30000 --kt-method AMXINT8 --kt-num-gpu-experts 32 --tp-size 1"
        );
        let o = Options::parse(
            &KT_LEGACY,
            &json!({"gguf_path": "/g", "served_model_name": "DeepSeek-V3"}),
        )
        .unwrap();
        let argv = launch_argv(
            &KT_LEGACY,
            &o,
            &config("/m/cfg"),
            &none(),
            "127.0.0.1",
            10002,
        )
        .unwrap();
        assert_eq!(
            argv.join(" "),
            "ktransformers --model_path /m/cfg --host 127.0.0.1 --port 10002 --model_name DeepSeek-V3 --gguf_path /g"
        );
    }

    #[test]
    fn command_placeholders_and_unknown_keys() {
        let o = Options::parse(
            &VLLM,
            &json!({"command": ["llama-server", "-m", "{model}", "--port", "{port}"]}),
        )
        .unwrap();
        let argv = launch_argv(&VLLM, &o, &config("/m.gguf"), &none(), "127.0.0.1", 1234).unwrap();
        assert_eq!(argv.join(" "), "llama-server -m /m.gguf --port 1234");
        let e = Options::parse(&VLLM, &json!({"tensor_paralel_size": 2}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tensor_paralel_size") && e.contains("tensor_parallel_size"),
            "{e}"
        );
    }
}
