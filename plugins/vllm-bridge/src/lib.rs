//! The `vllm` backend: Switchyard over a vLLM server's OpenAI-compatible API.
//!
//! Attach with `base_url` in `[backends.vllm]`, or leave it out and Switchyard runs
//! `vllm serve <model.path>` itself. vLLM-specific request fields (`top_k`,
//! `repetition_penalty`, `stop_token_ids`, `skip_special_tokens`, `chat_template_kwargs`, `seed`,
//! `n`) are sent as such; scores come from `/classify` (or `/pooling`). LoRA adapters
//! (`[model.lora_modules]`, `[model] adapter_name_or_path`) are launched with `--enable-lora
//! --lora-modules NAME=DIR ... --max-lora-rank R` and named as the request's `model`; attached,
//! the server must list them at `/v1/models`. All of it lives in the shared `openai-bridge`
//! crate; this crate only picks the vLLM flavor.

use openai_bridge::{Bridge, VLLM};
use switchyard_plugin::{EngineConfig, EngineError, export_backend};

fn create(config: EngineConfig) -> Result<Bridge, EngineError> {
    Bridge::create(&VLLM, config)
}

export_backend! {
    metadata: || openai_bridge::metadata(&VLLM, "vLLM server over its OpenAI-compatible API (attach or launch)"),
    create: create,
}
