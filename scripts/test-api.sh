#!/usr/bin/env bash
# HTTP API tests: the official `openai` Python client against real `switchyard api` processes
# (tests/api). Installs a venv with openai + pytest + httpx + psutil (and the client libraries
# instructor, langchain-openai and lm-eval) under the cache, builds the
# server and the plugins the tests use (a no-op when they are up to date), then runs pytest.
#
#   scripts/test-api.sh                  # whole suite
#   scripts/test-api.sh -k load -x       # extra arguments go to pytest
#   scripts/test-api.sh tests/api/test_tools.py
#
# Env: SWITCHYARD_CACHE (default ~/.cache/switchyard), CARGO_TARGET_DIR (default ./target),
# SWITCHYARD_API_NO_BUILD=1 to skip the cargo build, SWITCHYARD_API_STRICT=0 to let tests skip
# when the hf-candle plugin or the model is missing (by default that fails the run).
set -euo pipefail
cd "$(dirname "$0")/.."
export SWITCHYARD_CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
VENV="$SWITCHYARD_CACHE/venv-api"
PY="${PYTHON:-python3}"

# lm-eval (tests/api/test_lm_eval.py) comes with its `api` extra and transformers for the model
# folder's tokenizer; no torch (lm-eval's `hf` extra is only for the recorded reference).
LM_EVAL=0.4.13
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import openai, pytest, httpx, psutil, instructor, langchain_openai
from importlib.metadata import version; assert version('lm_eval') == '$LM_EVAL' and version('transformers')" 2>/dev/null; then
    echo "[test-api] creating $VENV" >&2
    mkdir -p "$SWITCHYARD_CACHE"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "openai>=1.40,<3" "pytest>=8" "httpx>=0.27" "psutil>=5.9" \
        "instructor>=1.4" "langchain-openai>=0.2" "lm-eval[api]==$LM_EVAL" "transformers==5.24.0"
fi

if [[ "${SWITCHYARD_API_NO_BUILD:-0}" != 1 ]]; then
    echo "[test-api] cargo build --release -p switchyard-cli -p custom-backend -p hf-candle" >&2
    cargo build --release -p switchyard-cli -p custom-backend -p hf-candle
fi

if [[ -z "${SWITCHYARD_MODEL:-}" && -x scripts/fetch-model.sh ]]; then
    SWITCHYARD_MODEL="$(scripts/fetch-model.sh)"
    export SWITCHYARD_MODEL
fi

# The f32 SmolLM2 Hugging Face folder (tests/api/test_lm_eval.py); a no-op when it is there.
if [[ -z "${SWITCHYARD_SMOLLM2_HF:-}" && -x scripts/make-smollm2-hf.sh ]]; then
    SWITCHYARD_SMOLLM2_HF="$(scripts/make-smollm2-hf.sh | tail -n 1)"
    export SWITCHYARD_SMOLLM2_HF
fi

export SWITCHYARD_API_STRICT="${SWITCHYARD_API_STRICT:-1}"
echo "[test-api] pytest tests/api" >&2
# Test paths given on the command line replace the default (the whole of tests/api).
paths=(tests/api)
for a in "$@"; do [[ "$a" == tests/* ]] && paths=() && break; done
exec "$VENV/bin/python" -m pytest "${paths[@]}" -q -rs -p no:cacheprovider "$@"
