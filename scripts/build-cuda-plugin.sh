#!/usr/bin/env bash
# Builds the hf-candle plugin with CUDA on a machine without a GPU or a CUDA install, and packs
# what `scripts/bench/cuda-compare.sh` needs on the GPU machine into one folder.
#
#   scripts/build-cuda-plugin.sh [BUNDLE_DIR]      (default: .gpu, ignored by git)
#
# The CUDA 13.0 compiler (nvcc, nvvm, headers) and the libraries the plugin links against
# (cuBLAS, cuRAND, NVRTC, the runtime) come from NVIDIA's PyPI wheels, unpacked once under
# ~/.cache/switchyard/cuda-13.0. The driver library (libcuda.so.1) is not on PyPI: the link uses
# a stub of the same soname, and the GPU machine's driver provides the real one at run time.
# CUDA 13.0 matches the GPU machines' driver (580) and their PyTorch (cu130), whose wheels
# provide the same libraries there.
#
# Bundle: switchyard-bench.gz, plugins/libhf_candle.so.gz (CUDA; ~65 MB stripped, mostly GPU
# code, so both travel compressed), tokenizer/ (SmolLM2's files). cuda-compare.sh unpacks them.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=${1:-.gpu}
cache=${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}
# SWITCHYARD_CUDA_HOME: a CUDA 13.0 tree of the same layout elsewhere.
cuda=${SWITCHYARD_CUDA_HOME:-$cache/cuda-13.0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}

if [ ! -x "$cuda/bin/nvcc" ]; then
    wheels=$(mktemp -d)
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$wheels" \
        "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" \
        "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-nvrtc==13.0.*" \
        "nvidia-cublas==13.0.*" "nvidia-curand==10.4.*"
    unpacked=$(mktemp -d)
    for w in "$wheels"/*.whl; do python3 -m zipfile -e "$w" "$unpacked"; done
    rm -rf "$cuda" && mkdir -p "$(dirname "$cuda")"
    mv "$unpacked/nvidia/cu13" "$cuda"
    chmod +x "$cuda"/bin/* "$cuda"/nvvm/bin/*
    rm -rf "$wheels" "$unpacked"
    for l in cublas cublasLt nvrtc cudart; do ln -sf "lib$l.so.13" "$cuda/lib/lib$l.so"; done
    ln -sf libcurand.so.10 "$cuda/lib/libcurand.so"
    # The driver stub: one symbol candle calls, so the linker keeps libcuda.so.1 as a needed
    # library; every driver symbol resolves against the real driver when the plugin loads.
    mkdir -p "$cuda/lib/stubs"
    echo 'int cuInit(unsigned int flags) { (void)flags; return 100; }' >"$cuda/lib/stubs/cuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$cuda/lib/stubs/libcuda.so" "$cuda/lib/stubs/cuda_stub.c"
fi

export CUDA_HOME=$cuda PATH=$cuda/bin:$PATH
export LIBRARY_PATH=$cuda/lib:$cuda/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
# Hopper (H100 / H200): candle's kernels are built for compute capability 9.0.
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
cargo build --release -p switchyard-bench
cp "$CARGO_TARGET_DIR/release/switchyard-bench" "$bundle.bench.tmp"
cargo build --release -p hf-candle --features cuda --lib
mkdir -p "$bundle/plugins" "$bundle/tokenizer"
strip -o "$bundle/switchyard-bench" "$bundle.bench.tmp" && rm "$bundle.bench.tmp"
strip -o "$bundle/plugins/libhf_candle.so" "$CARGO_TARGET_DIR/release/libhf_candle.so"
gzip -9f "$bundle/switchyard-bench" "$bundle/plugins/libhf_candle.so"
hf=$cache/models/SmolLM2-135M-Instruct-hf
for f in tokenizer.json tokenizer_config.json special_tokens_map.json generation_config.json; do
    if [ -f "$hf/$f" ]; then cp "$hf/$f" "$bundle/tokenizer/"; fi
done
# The CPU plugin goes back in place for everything else that uses the target folder.
cargo build --release -p hf-candle
du -sh "$bundle"/* "$bundle"/plugins/*
