#!/usr/bin/env bash
# Build llama.cpp (the copy vendored in the llama-cpp-python sdist) as a reference
# implementation / speed baseline / OpenAI-compatible peer server for Switchyard.
#
# Idempotent: everything is cached under ${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/llama.cpp/
# and the build is skipped when the binaries already exist and were built with the same CPU
# flags (recorded in $BUILD/switchyard-cpu-flags; a change of flags rebuilds in place, so the
# bin dir stays the same path). Prints the bin dir on stdout.
#
# CPU flags: never -DGGML_NATIVE=ON (it SIGILLs on these VMs). Every x86 feature llama.cpp can
# use is named explicitly, ON exactly when /proc/cpuinfo reports it: SSE4.2, AVX, AVX2, FMA,
# F16C, BMI2, AVX-VNNI, AVX-512 (F+CD+VL+DQ+BW), AVX-512 VBMI/VNNI/BF16 and AMX (tile, int8,
# bf16), so the peer is the one a user would build on this CPU. SWITCHYARD_LLAMA_AVX512=ON|OFF
# overrides the AVX-512 family as a whole.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="${SWITCHYARD_LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
# llama.cpp commit vendored by llama-cpp-python 0.3.36 (sdist .git/modules/vendor/llama.cpp/HEAD).
# The extracted tree has no git metadata, so it is passed to CMake for build-info / --version.
LLAMA_CPP_COMMIT="${SWITCHYARD_LLAMA_CPP_COMMIT:-0c1e57098bba43ac29e6e3b677cdceebdd22334f}"
CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
ROOT="$CACHE/llama.cpp"
SRC_PARENT="$ROOT/src"
SRC="$SRC_PARENT/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
BUILD="$ROOT/build-$LLAMA_CPP_PYTHON_VERSION"
BIN="$BUILD/bin"
VENV="$ROOT/venv"
TARGETS=(llama-server llama-bench llama-cli llama-simple llama-tokenize)
# More targets on demand (e.g. llama-quantize for scripts/make-qwen-coder-1.5b-q6_k.sh).
read -r -a EXTRA <<< "${SWITCHYARD_LLAMA_EXTRA_TARGETS:-}"
TARGETS+=("${EXTRA[@]}")
JOBS="${SWITCHYARD_BUILD_JOBS:-2}"

log() { echo "[build-llama-cpp] $*" >&2; }

# CPU feature flags (computed first: they decide whether the cached build is still valid).
flags="$(grep -m1 '^flags' /proc/cpuinfo || true)"
has() {
  local f
  for f in "$@"; do
    [[ " $flags " == *" $f "* ]] || { echo OFF; return; }
  done
  echo ON
}
avx512() {
  if [[ -n "${SWITCHYARD_LLAMA_AVX512:-}" ]]; then
    [[ "$SWITCHYARD_LLAMA_AVX512" == ON ]] && has "$@" || echo OFF
  else
    has "$@"
  fi
}
AVX512_BASE=(avx512f avx512cd avx512vl avx512dq avx512bw)
CPU_FLAGS=(
  -DGGML_NATIVE=OFF
  -DGGML_SSE42="$(has sse4_2)"
  -DGGML_AVX="$(has avx)"
  -DGGML_AVX2="$(has avx2)"
  -DGGML_FMA="$(has fma)"
  -DGGML_F16C="$(has f16c)"
  -DGGML_BMI2="$(has bmi2)"
  -DGGML_AVX_VNNI="$(has avx_vnni)"
  -DGGML_AVX512="$(avx512 "${AVX512_BASE[@]}")"
  -DGGML_AVX512_VBMI="$(avx512 "${AVX512_BASE[@]}" avx512vbmi)"
  -DGGML_AVX512_VNNI="$(avx512 "${AVX512_BASE[@]}" avx512_vnni)"
  -DGGML_AVX512_BF16="$(avx512 "${AVX512_BASE[@]}" avx512_bf16)"
  -DGGML_AMX_TILE="$(has amx_tile)"
  -DGGML_AMX_INT8="$(has amx_tile amx_int8)"
  -DGGML_AMX_BF16="$(has amx_tile amx_bf16)"
)
STAMP="$BUILD/switchyard-cpu-flags"

all_built() {
  local t
  for t in "${TARGETS[@]}"; do
    [[ -x "$BIN/$t" ]] || return 1
  done
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "${CPU_FLAGS[*]}" ]]
}

if all_built; then
  log "binaries already present in $BIN (CPU flags: ${CPU_FLAGS[*]})"
  echo "$BIN"
  exit 0
fi

mkdir -p "$ROOT" "$SRC_PARENT"

# 1. Source: the llama-cpp-python sdist (no model hub / GitHub access here, PyPI only).
if [[ ! -f "$SRC/CMakeLists.txt" ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  log "downloading llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist"
  # --no-binary only for this package: with --no-binary=:all: pip would also build the
  # sdist's build dependencies (cmake, ninja) from source just to prepare metadata.
  pip download -q --no-deps --no-binary=llama-cpp-python -d "$tmp" \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&2
  sdist="$(ls "$tmp"/llama_cpp_python-*.tar.gz)"
  rm -rf "$SRC_PARENT/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
  tar -xzf "$sdist" -C "$SRC_PARENT" \
    "llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
  rm -rf "$tmp"
  trap - EXIT
fi

# 2. Build tools in a small venv.
if [[ ! -x "$VENV/bin/cmake" || ! -x "$VENV/bin/ninja" ]]; then
  log "creating build venv $VENV (cmake, ninja)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q cmake ninja >&2
fi
export PATH="$VENV/bin:$PATH"

# 3. Configure + build.
log "CPU flags: ${CPU_FLAGS[*]}"
cmake -S "$SRC" -B "$BUILD" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_COMMIT="${LLAMA_CPP_COMMIT:0:9}" \
  "${CPU_FLAGS[@]}" >&2
cmake --build "$BUILD" -j"$JOBS" --target "${TARGETS[@]}" >&2

echo "${CPU_FLAGS[*]}" > "$STAMP"
all_built || { log "build finished but binaries are missing in $BIN"; exit 1; }
log "built: ${TARGETS[*]}"
echo "$BIN"
