#!/usr/bin/env bash
# End-to-end test of the web chat page (GET /) in headless Chromium against real `switchyard api`
# servers. Builds nothing: expects `cargo build --release -p switchyard-cli -p custom-backend`
# (and the hf-candle plugin for the real-model run) in ${CARGO_TARGET_DIR:-target}/release.
#
# Servers started here (each on a free port, all stopped on exit):
#   main  - hf-candle on the real model (configs/smollm2.toml) when libhf_candle.so is next to the
#           binary, else the echo backend (configs/echo.toml); the test says which it used.
#   echo  - the echo example backend, slowed down, for Stop, Markdown/injection and <think> checks.
#   key   - the echo backend behind --api-key, for the API-key prompt.
#   vlm   - hf-candle on the tiny Qwen2-VL fixture (tests/fixtures/hf/qwen2-vl), for the image
#           button on a real vision-language model (only with the hf-candle plugin).
#   models - two echo entries in a [[models]] file (the first with a named adapter), for the
#            model picker.
# Installs Debian's `chromium` when /usr/bin/chromium is missing and the test's npm packages
# (playwright-core only; no browser download). Screenshot: ${ARTIFACTS_DIR:-artifacts}/webchat.png.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

log() { echo "[test-web] $*" >&2; }
die() { log "error: $*"; exit 1; }

TARGET="${CARGO_TARGET_DIR:-target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
REL="$TARGET/release"
BIN="$REL/switchyard"
[[ -x "$BIN" ]] || die "$BIN not found; run: cargo build --release -p switchyard-cli -p custom-backend"
[[ -f "$REL/libcustom_backend.so" ]] || die "$REL/libcustom_backend.so not found; run: cargo build --release -p custom-backend"

if [[ ! -x /usr/bin/chromium ]]; then
  log "installing chromium (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends chromium >&2
fi
command -v node >/dev/null || die "node is needed (Node.js 20 or newer)"

log "npm ci (tests/web)"
(cd tests/web && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2)

ARTIFACTS_DIR="${ARTIFACTS_DIR:-$ROOT/artifacts}"
case "$ARTIFACTS_DIR" in /*) ;; *) ARTIFACTS_DIR="$ROOT/$ARTIFACTS_DIR" ;; esac
mkdir -p "$ARTIFACTS_DIR"
export ARTIFACTS_DIR

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

# start_server NAME SECONDS_TO_WAIT CONFIG [ARGS...]: starts `switchyard api`, waits for /health,
# and sets URL to its address.
start_server() {
  local name="$1" wait_s="$2" config="$3"
  shift 3
  local port
  port="$(free_port)"
  "$BIN" --plugin-dir "$REL" api --config "$config" --host 127.0.0.1 --port "$port" "$@" \
    >"$WORK/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  local deadline=$((SECONDS + wait_s))
  until curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$WORK/$name.log" >&2
      die "the $name server exited during startup"
    fi
    if ((SECONDS > deadline)); then
      cat "$WORK/$name.log" >&2
      die "the $name server did not answer /health within ${wait_s}s"
    fi
    sleep 0.2
  done
  URL="http://127.0.0.1:$port"
  log "$name server: $URL ($(head -c 300 "$WORK/$name.log" | tr -d '\r' | grep -m1 '^backend' || echo "config $config"))"
}

if [[ -f "$REL/libhf_candle.so" ]]; then
  log "libhf_candle.so found: the main server runs hf-candle on the real model"
  MODEL="$(scripts/fetch-model.sh)"
  start_server main 180 configs/smollm2.toml --set "model.path=$MODEL"
  export SY_MAIN_BACKEND=hf-candle
  MAIN_URL="$URL"
  cat >"$WORK/vlm.toml" <<EOF
sample_backend = "hf-candle"

[model]
path = "$ROOT/tests/fixtures/hf/qwen2-vl"
EOF
  start_server vlm 120 "$WORK/vlm.toml"
  export SY_VLM_URL="$URL"
  export SY_VLM_IMAGE="$ROOT/tests/fixtures/hf/qwen2-vl/images/square.png"
  URL="$MAIN_URL"
else
  log "libhf_candle.so not found next to the binary: the main server runs the echo backend"
  start_server main 30 configs/echo.toml
  export SY_MAIN_BACKEND=echo
fi
export SY_MAIN_URL="$URL"

cat >"$WORK/echo-slow.toml" <<'EOF'
sample_backend = "echo"
max_concurrent = 2

[backends.echo]
delay_ms = 40
EOF
start_server echo 30 "$WORK/echo-slow.toml"
export SY_ECHO_URL="$URL"

SY_API_KEY="web-test-$RANDOM$RANDOM"
export SY_API_KEY
API_KEY="$SY_API_KEY" start_server key 30 configs/echo.toml
export SY_KEY_URL="$URL"

cat >"$WORK/models.toml" <<'EOF'
[[models]]
name = "alpha"
sample_backend = "echo"
preload = true
[models.model.lora_modules]
sql = "adapters/sql"
[models.backends.echo]
prefix = "A:"

[[models]]
name = "beta"
sample_backend = "echo"
[models.backends.echo]
prefix = "B:"
EOF
start_server models 30 "$WORK/models.toml"
export SY_MODELS_URL="$URL"

log "running the browser test"
status=0
(cd tests/web && node --test --test-concurrency=1 webchat.test.mjs) || status=$?
if ((status != 0)); then
  for name in main vlm echo key models; do
    log "--- $name server log (tail) ---"
    tail -n 40 "$WORK/$name.log" >&2 || true
  done
fi
exit "$status"
