//! The `ktransformers` backend: Switchyard over a KTransformers server.
//!
//! Two server generations exist, chosen with `server` in `[backends.ktransformers]`:
//!
//! - `"sglang"` (default): today's KTransformers, SGLang with the kt-kernel CPU MoE kernel. The
//!   protocol is SGLang's; in launch mode `kt_*` keys become `--kt-*` flags
//!   (`kt_method = "AMXINT8"` → `--kt-method AMXINT8`). LoRA adapters go as with SGLang
//!   (`--enable-lora --lora-paths NAME=DIR`, the request's `lora_path`); KTransformers' guide
//!   converts a MoE adapter with kt-kernel's `scripts/convert_lora.py` first.
//! - `"legacy"`: the ≤ v0.3 server (`ktransformers --model_path … --gguf_path …`). It takes string
//!   content only and no `top_k`/`stop`/`seed`/`n` (those are left out with a warning), has no
//!   `/health` (readiness polls `/v1/models`), always sends a usage chunk and may repeat the
//!   finish chunk, and has no reward endpoint or LoRA serving (adapters are refused by key).

use openai_bridge::{Bridge, Flavor, KT_LEGACY, KT_SGLANG};
use switchyard_plugin::{EngineConfig, EngineError, export_backend};

fn flavor(config: &EngineConfig) -> Result<&'static Flavor, EngineError> {
    match config.options.get("server").and_then(|v| v.as_str()) {
        None | Some("sglang") => Ok(&KT_SGLANG),
        Some("legacy") => Ok(&KT_LEGACY),
        Some(other) => Err(EngineError::config(format!(
            "[backends.ktransformers] server = \"{other}\": use \"sglang\" (KTransformers with kt-kernel, the default) or \"legacy\" (the ≤ v0.3 server)"
        ))),
    }
}

fn create(config: EngineConfig) -> Result<Bridge, EngineError> {
    Bridge::create(flavor(&config)?, config)
}

export_backend! {
    metadata: || openai_bridge::metadata(&KT_SGLANG, "KTransformers server (SGLang + kt-kernel, or the legacy server), attach or launch"),
    create: create,
}
