#!/usr/bin/env bash
# Build everything, fetch the default model and open `switchyard chat` on it.
# Usage: scripts/quickstart.sh [extra switchyard chat flags, e.g. --set generation.temperature=0]
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
echo "[quickstart] building (cargo build --release --workspace)..." >&2
cargo build --release --workspace
model="$(SWITCHYARD_CACHE="$CACHE" scripts/fetch-model.sh)"
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/switchyard" chat --config configs/smollm2.toml --set "model.path=$model" "$@"
