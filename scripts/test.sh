#!/usr/bin/env bash
# Run every test. Installs what the tests need (the default model, llama.cpp's llama-server as a
# real peer, a Python venv with the official `openai` client, Chromium + playwright-core), checks
# formatting and lints, builds the workspace, then runs the Rust unit and integration tests, the
# OpenAI-client API tests and the browser test of the web chat page.
set -euo pipefail
cd "$(dirname "$0")/.."
export SWITCHYARD_CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
step() { echo "[test] $*" >&2; }

step "fetching the default model"
SWITCHYARD_MODEL="$(scripts/fetch-model.sh)"
export SWITCHYARD_MODEL

step "fetching Gemma-3-270m Q4_K_M (GGUF for hf-candle's format tests)"
SWITCHYARD_GEMMA3="$(scripts/fetch-gemma3.sh | tail -n 1)"
export SWITCHYARD_GEMMA3

step "the SmolLM2 Hugging Face folder made from the GGUF (for the safetensors-path test)"
SWITCHYARD_SMOLLM2_HF="$(scripts/make-smollm2-hf.sh | tail -n 1)"
export SWITCHYARD_SMOLLM2_HF

step "all-MiniLM-L6-v2 (a sentence-transformers folder for the embedding tests)"
SWITCHYARD_MINILM="$(scripts/fetch-minilm.sh | tail -n 1)"
export SWITCHYARD_MINILM

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy"
cargo clippy --release --workspace --all-targets -- -D warnings
step "cargo build --release --workspace"
cargo build --release --workspace

step "llama.cpp (the real peer server for the bridge tests)"
SWITCHYARD_LLAMA_CPP_BIN="$(scripts/build-llama-cpp.sh | tail -n 1)"
export SWITCHYARD_LLAMA_CPP_BIN

step "cargo test --release --workspace"
cargo test --release --workspace

step "API tests with the official openai client"
scripts/test-api.sh
step "web chat page in headless Chromium"
scripts/test-web.sh

step "all tests passed"
