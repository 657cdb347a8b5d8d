//! The `sglang` backend: Switchyard over an SGLang server's OpenAI-compatible API.
//!
//! Attach with `base_url` in `[backends.sglang]`, or leave it out and Switchyard runs
//! `python3 -m sglang.launch_server --model-path <model.path>` itself. SGLang's separate finish
//! chunk and `matched_stop` are handled by the shared stream reader; scores come from
//! `/classify`. LoRA adapters are launched with `--enable-lora --lora-paths NAME=DIR ...` and
//! named in the request's `lora_path`. All of it lives in the shared `openai-bridge` crate; this
//! crate only picks the SGLang flavor.

use openai_bridge::{Bridge, SGLANG};
use switchyard_plugin::{EngineConfig, EngineError, export_backend};

fn create(config: EngineConfig) -> Result<Bridge, EngineError> {
    Bridge::create(&SGLANG, config)
}

export_backend! {
    metadata: || openai_bridge::metadata(&SGLANG, "SGLang server over its OpenAI-compatible API (attach or launch)"),
    create: create,
}
