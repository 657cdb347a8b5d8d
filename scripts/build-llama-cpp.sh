#!/usr/bin/env bash
# Build llama.cpp (the copy vendored in the llama-cpp-python sdist) as a reference
# implementation / speed baseline / OpenAI-compatible peer server for Switchyard.
#
# Idempotent: everything is cached under ${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/llama.cpp/
# and the build is skipped when the binaries already exist. Prints the bin dir on stdout.
#
# CPU flags: never -DGGML_NATIVE=ON (it SIGILLs on this VM). The x86 features are named
# explicitly; AVX-512 is enabled only if /proc/cpuinfo reports avx512f (override with
# SWITCHYARD_LLAMA_AVX512=ON|OFF).
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
JOBS="${SWITCHYARD_BUILD_JOBS:-2}"

log() { echo "[build-llama-cpp] $*" >&2; }

all_built() {
  local t
  for t in "${TARGETS[@]}"; do
    [[ -x "$BIN/$t" ]] || return 1
  done
}

if all_built; then
  log "binaries already present in $BIN"
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

# 3. CPU feature flags.
flags="$(grep -m1 '^flags' /proc/cpuinfo || true)"
has() { [[ " $flags " == *" $1 "* ]] && echo ON || echo OFF; }
AVX512="${SWITCHYARD_LLAMA_AVX512:-$(has avx512f)}"
CPU_FLAGS=(
  -DGGML_NATIVE=OFF
  -DGGML_SSE42="$(has sse4_2)"
  -DGGML_AVX="$(has avx)"
  -DGGML_AVX2="$(has avx2)"
  -DGGML_FMA="$(has fma)"
  -DGGML_F16C="$(has f16c)"
  -DGGML_BMI2="$(has bmi2)"
  -DGGML_AVX_VNNI=OFF
  -DGGML_AVX512="$AVX512"
  -DGGML_AVX512_VBMI=OFF
  -DGGML_AVX512_VNNI=OFF
  -DGGML_AVX512_BF16=OFF
)
log "CPU flags: ${CPU_FLAGS[*]}"

# 4. Configure + build.
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

all_built || { log "build finished but binaries are missing in $BIN"; exit 1; }
log "built: ${TARGETS[*]}"
echo "$BIN"
