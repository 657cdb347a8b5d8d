#!/usr/bin/env bash
# hf-candle on CUDA vs Hugging Face Transformers generate() on the same GPU, in one run, on
# random-weight Llama shapes (SmolLM2-135M's and Llama-3.2-1B's), bf16, batch 1.
#
# Runs on the GPU machine, from the repository root, where python3 has torch and transformers
# (their CUDA 13 wheels also provide cuBLAS, cuRAND, NVRTC and the runtime the plugin links):
#
#   scripts/bench/cuda-compare.sh BUNDLE [WORKDIR]
#
# BUNDLE is what scripts/build-cuda-plugin.sh packs: switchyard-bench, plugins/libhf_candle.so
# (either gzipped) and tokenizer/. Every folder BUNDLE/plugins* is measured in turn (e.g. plugins-base/ holding
# an older build for an A/B). Env: SHAPES (default "smollm2-135m llama-1b"), REPS (3),
# GEN (128 new tokens), PROMPT (512 prompt tokens).
set -euo pipefail
bundle=$(realpath "${1:?usage: scripts/bench/cuda-compare.sh BUNDLE [WORKDIR]}")
work=${2:-/tmp/switchyard-cuda}
find "$bundle" -name '*.gz' -exec gunzip -f {} +
chmod +x "$bundle/switchyard-bench"
# Every folder of NVIDIA's wheels that holds shared libraries (cu13 wheels: nvidia/cu13/lib).
nvlib=$(python3 -c 'import nvidia, glob, os
print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__
                       for p in glob.glob(d + "/**/lib*.so*", recursive=True)})))')
export LD_LIBRARY_PATH="$nvlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
for so in "$bundle"/plugins*/libhf_candle.so; do
    if ldd "$so" | grep 'not found'; then echo "missing libraries for $so" >&2; fi
done
status=0
for shape in ${SHAPES:-smollm2-135m llama-1b}; do
    python3 scripts/bench/make_random_llama.py --shape "$shape" \
        --tokenizer-dir "$bundle/tokenizer" --out "$work/$shape"
    for plugins in "$bundle"/plugins*/; do
        echo
        echo "## $shape, $(basename "$plugins")"
        SWITCHYARD_PLUGIN_DIR=$plugins "$bundle/switchyard-bench" \
            --model "$work/$shape" --hf-model "$work/$shape" --transformers-python python3 \
            --device cuda --tables cuda --threads "$(nproc)" --reps "${REPS:-3}" \
            --gen-tokens "${GEN:-128}" --prompt-tokens "${PROMPT:-512}" ||
            { status=1; echo "FAILED: $shape, $(basename "$plugins")"; }
    done
done
exit $status
