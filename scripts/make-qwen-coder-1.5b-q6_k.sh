#!/usr/bin/env bash
# Make a Q6_K file of Qwen2.5-Coder-1.5B-Instruct for benchmarks of Q6_K files: llama.cpp's own
# `llama-quantize --allow-requantize ... Q6_K` over the Q4_K_M file of
# scripts/fetch-qwen-coder-1.5b.sh (no f16 original is reachable here). Every matrix becomes
# Q6_K (widths 1536 and 8960 are multiples of 256, so none falls back to another format); the
# values are the Q4_K_M ones re-quantized, so the file is for speed, not for quality.
# Idempotent: does nothing when the output exists. Prints the output path on stdout (last line).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
DEST="$CACHE/models/qwen2.5-coder-1.5b-instruct-q6_k.gguf"

log() { echo "[make-qwen-coder-1.5b-q6_k] $*" >&2; }

if [[ -f "$DEST" ]]; then
  echo "$DEST"
  exit 0
fi
SRC="$("$ROOT/scripts/fetch-qwen-coder-1.5b.sh" | tail -n 1)"
BIN="$(SWITCHYARD_LLAMA_EXTRA_TARGETS=llama-quantize "$ROOT/scripts/build-llama-cpp.sh" | tail -n 1)"
log "re-quantizing $SRC to Q6_K"
tmp="$DEST.tmp.$$"
trap 'rm -f "$tmp"' EXIT
"$BIN/llama-quantize" --allow-requantize "$SRC" "$tmp" Q6_K >&2
mv "$tmp" "$DEST"
trap - EXIT
echo "$DEST"
