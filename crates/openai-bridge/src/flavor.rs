//! What differs between the servers, as data: which request fields each accepts, how to launch
//! it, how to probe it, where its reward scores come from, how it takes LoRA adapters.
//!
//! The plugins pick one of the constants here ([`VLLM`], [`SGLANG`], [`KT_SGLANG`],
//! [`KT_LEGACY`]); everything else is shared code.

/// A request field beyond the common OpenAI subset (`model`, `messages`, `max_tokens`,
/// `temperature`, `top_p`, penalties, `stream`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `top_k` (`-1` = off).
    TopK,
    /// `repetition_penalty`.
    RepetitionPenalty,
    /// `stop` strings.
    Stop,
    /// `stop_token_ids`.
    StopTokenIds,
    /// `skip_special_tokens`.
    SkipSpecialTokens,
    /// `chat_template_kwargs`.
    ChatTemplateKwargs,
    /// `seed`.
    Seed,
    /// `n` (several sequences).
    N,
    /// `tools` and tool messages.
    Tools,
    /// Images, videos and audio as content parts.
    Media,
    /// `logprobs` and `top_logprobs`.
    Logprobs,
    /// `tool_choice` `"required"` or a named function.
    ToolChoice,
}

/// How a server takes a structured-output constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConstraintDialect {
    /// None: a constraint is refused.
    None,
    /// vLLM ≥ 0.12: `response_format` for JSON, `structured_outputs` for regex, choice and
    /// grammar (the old `guided_*` fields are ignored there without an error).
    Vllm,
    /// SGLang: `response_format` for JSON, `regex` and `ebnf` fields; a choice becomes a regex.
    Sglang,
}

/// How a server takes LoRA adapters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraDialect {
    /// None: `[model] adapter_name_or_path` and `[model.lora_modules]` are refused by name.
    None,
    /// vLLM: launched with `--enable-lora --lora-modules NAME=DIR ... --max-lora-rank R`; a
    /// request names the adapter as its `model`; `/v1/models` lists each adapter with its
    /// `parent`.
    Vllm,
    /// SGLang: launched with `--enable-lora --lora-paths NAME=DIR ...`; a request names the
    /// adapter in its `lora_path` field and keeps the base model as `model`.
    Sglang,
}

/// Where reward scores come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreApi {
    /// vLLM: `POST /classify` with `input` texts (`/pooling` with `messages` for conversations).
    Vllm,
    /// SGLang: `POST /classify` with `text`, answering `[{"embedding":[score]}, ...]`.
    Sglang,
    /// The server has no reward endpoint.
    None,
}

/// How the server is started in launch mode.
#[derive(Debug)]
pub struct LaunchSpec {
    /// The program and its fixed leading arguments.
    pub program: &'static [&'static str],
    /// The flag before the model path; `None` passes it positionally.
    pub model_flag: Option<&'static str>,
    /// Flag for the listen address.
    pub host_flag: &'static str,
    /// Flag for the port.
    pub port_flag: &'static str,
    /// Flag for the API key.
    pub api_key_flag: &'static str,
    /// Flag for the name the model is served under.
    pub served_name_flag: &'static str,
    /// Flag for a chat template file.
    pub chat_template_flag: Option<&'static str>,
    /// `[backends.<name>]` keys turned into flags: `(key, flag)`. `true` gives the bare flag,
    /// `false` leaves it out, any other value follows the flag.
    pub option_flags: &'static [(&'static str, &'static str)],
    /// Keys with this prefix become flags with the other prefix, `_` turned into `-`
    /// (KTransformers: `kt_method` → `--kt-method`).
    pub prefix_flags: Option<(&'static str, &'static str)>,
    /// How to install the server, for "not found" errors.
    pub install_hint: &'static str,
}

/// One server kind.
#[derive(Debug)]
pub struct Flavor {
    /// The Switchyard backend name (`[backends.<name>]`).
    pub backend: &'static str,
    /// A human label for messages and `info().details.server`.
    pub server: &'static str,
    /// Extra request fields the server understands.
    pub fields: &'static [Field],
    /// The readiness probe path (`GET`, 200 = ready).
    pub ready_path: &'static str,
    /// Reward endpoint family.
    pub scores: ScoreApi,
    /// Launch mode.
    pub launch: LaunchSpec,
    /// Structured outputs.
    pub constraints: ConstraintDialect,
    /// LoRA adapters.
    pub lora: LoraDialect,
}

impl Flavor {
    /// Whether the server accepts `field`.
    pub fn supports(&self, field: Field) -> bool {
        self.fields.contains(&field)
    }
}

const COMMON_FIELDS: &[Field] = &[
    Field::TopK,
    Field::RepetitionPenalty,
    Field::Stop,
    Field::StopTokenIds,
    Field::SkipSpecialTokens,
    Field::ChatTemplateKwargs,
    Field::Seed,
    Field::N,
    Field::Tools,
    Field::Media,
    Field::Logprobs,
    Field::ToolChoice,
];

const SGLANG_OPTIONS: &[(&str, &str)] = &[
    ("tensor_parallel_size", "--tp-size"),
    ("dtype", "--dtype"),
    ("max_model_len", "--context-length"),
    ("gpu_memory_utilization", "--mem-fraction-static"),
    ("trust_remote_code", "--trust-remote-code"),
    ("max_running_requests", "--max-running-requests"),
    ("reasoning_parser", "--reasoning-parser"),
    ("tool_call_parser", "--tool-call-parser"),
    ("is_embedding", "--is-embedding"),
    ("max_loras_per_batch", "--max-loras-per-batch"),
    ("lora_backend", "--lora-backend"),
];

const SGLANG_LAUNCH: LaunchSpec = LaunchSpec {
    program: &["python3", "-m", "sglang.launch_server"],
    model_flag: Some("--model-path"),
    host_flag: "--host",
    port_flag: "--port",
    api_key_flag: "--api-key",
    served_name_flag: "--served-model-name",
    chat_template_flag: Some("--chat-template"),
    option_flags: SGLANG_OPTIONS,
    prefix_flags: None,
    install_hint: "install SGLang (`pip install \"sglang[all]\"`)",
};

/// vLLM's OpenAI-compatible server (`vllm serve`).
pub const VLLM: Flavor = Flavor {
    backend: "vllm",
    server: "vllm",
    fields: COMMON_FIELDS,
    ready_path: "/health",
    scores: ScoreApi::Vllm,
    launch: LaunchSpec {
        program: &["vllm", "serve"],
        model_flag: None,
        host_flag: "--host",
        port_flag: "--port",
        api_key_flag: "--api-key",
        served_name_flag: "--served-model-name",
        chat_template_flag: Some("--chat-template"),
        option_flags: &[
            ("tensor_parallel_size", "--tensor-parallel-size"),
            ("pipeline_parallel_size", "--pipeline-parallel-size"),
            ("dtype", "--dtype"),
            ("max_model_len", "--max-model-len"),
            ("gpu_memory_utilization", "--gpu-memory-utilization"),
            ("trust_remote_code", "--trust-remote-code"),
            ("max_num_seqs", "--max-num-seqs"),
            ("enforce_eager", "--enforce-eager"),
            ("reasoning_parser", "--reasoning-parser"),
            ("runner", "--runner"),
            ("convert", "--convert"),
            ("max_loras", "--max-loras"),
            ("max_cpu_loras", "--max-cpu-loras"),
        ],
        prefix_flags: None,
        install_hint: "install vLLM (`pip install vllm`)",
    },
    constraints: ConstraintDialect::Vllm,
    lora: LoraDialect::Vllm,
};

/// SGLang's server (`python -m sglang.launch_server`).
pub const SGLANG: Flavor = Flavor {
    backend: "sglang",
    server: "sglang",
    fields: COMMON_FIELDS,
    ready_path: "/health",
    scores: ScoreApi::Sglang,
    launch: SGLANG_LAUNCH,
    constraints: ConstraintDialect::Sglang,
    lora: LoraDialect::Sglang,
};

/// Today's KTransformers: SGLang with the kt-kernel CPU MoE kernel and `--kt-*` flags.
pub const KT_SGLANG: Flavor = Flavor {
    backend: "ktransformers",
    server: "ktransformers (sglang + kt-kernel)",
    fields: COMMON_FIELDS,
    ready_path: "/health",
    scores: ScoreApi::Sglang,
    launch: LaunchSpec {
        prefix_flags: Some(("kt_", "--kt-")),
        install_hint: "install KTransformers' SGLang fork (`pip install kt-kernel sglang-kt`, without the official `sglang`)",
        ..SGLANG_LAUNCH
    },
    constraints: ConstraintDialect::Sglang,
    // KTransformers documents LoRA serving with SGLang's flags (its Kimi-K2.5 SFT guide:
    // `--enable-lora --lora-paths lora1=DIR --lora-backend triton`, the adapter converted with
    // kt-kernel's `scripts/convert_lora.py` first).
    lora: LoraDialect::Sglang,
};

/// The legacy KTransformers server (≤ v0.3): string content only, no `/health`, no `top_k`,
/// `stop`, `seed`, `n` or media, underscore flags.
pub const KT_LEGACY: Flavor = Flavor {
    backend: "ktransformers",
    server: "ktransformers (legacy server)",
    fields: &[],
    ready_path: "/v1/models",
    scores: ScoreApi::None,
    launch: LaunchSpec {
        program: &["ktransformers"],
        model_flag: Some("--model_path"),
        host_flag: "--host",
        port_flag: "--port",
        api_key_flag: "--api_key",
        served_name_flag: "--model_name",
        chat_template_flag: None,
        option_flags: &[
            ("gguf_path", "--gguf_path"),
            ("optimize_config_path", "--optimize_config_path"),
            ("max_new_tokens", "--max_new_tokens"),
            ("cache_lens", "--cache_lens"),
            ("chunk_size", "--chunk_size"),
            ("max_batch_size", "--max_batch_size"),
            ("backend_type", "--backend_type"),
            ("cpu_infer", "--cpu_infer"),
            ("force_think", "--force_think"),
            ("tp", "--tp"),
        ],
        prefix_flags: None,
        install_hint: "install the legacy KTransformers server (`pip install ktransformers`)",
    },
    constraints: ConstraintDialect::None,
    // The legacy server has no LoRA serving.
    lora: LoraDialect::None,
};
