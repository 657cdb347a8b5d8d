#!/usr/bin/env bash
# Make a Hugging Face (safetensors) folder of SmolLM2-135M-Instruct from the Q4_1 GGUF, for the
# hf-candle safetensors-path test (plugins/hf-candle/tests/smollm2_hf_tests.rs).
# Idempotent: does nothing when the folder is already complete and newer than the GGUF and the
# converter. Creates a small venv ($CACHE/venv-convert: gguf, numpy, safetensors, tokenizers;
# no torch) when needed. Prints the folder path on stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
GGUF="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
DEST="$CACHE/models/SmolLM2-135M-Instruct-hf"
VENV="$CACHE/venv-convert"
CONVERTER="$ROOT/scripts/fixtures/gguf_to_hf.py"
PKGS=(gguf==0.19.0 numpy==2.4.6 safetensors==0.8.0 tokenizers==0.23.3)
FILES=(config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json)

log() { echo "[make-smollm2-hf] $*" >&2; }

complete() {
  local f
  for f in "${FILES[@]}"; do
    [[ -f "$DEST/$f" && "$DEST/$f" -nt "$GGUF" && "$DEST/$f" -nt "$CONVERTER" ]] || return 1
  done
}

if [[ ! -f "$GGUF" ]]; then
  log "fetching the GGUF"
  GGUF="$("$ROOT/scripts/fetch-model.sh")"
fi

if complete; then
  echo "$DEST"
  exit 0
fi

if ! "$VENV/bin/python" -c 'import gguf, numpy, safetensors, tokenizers' 2>/dev/null; then
  log "creating $VENV (${PKGS[*]})"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PKGS[@]}" >&2
fi

log "converting $GGUF"
tmp="$DEST.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
"$VENV/bin/python" "$CONVERTER" "$GGUF" "$tmp"
chmod 644 "$tmp"/*
rm -rf "$DEST"
mv "$tmp" "$DEST"
log "done in $((SECONDS - start)) s"
echo "$DEST"
