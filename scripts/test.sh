#!/usr/bin/env bash
# Run every test: installs what the tests need (the default model), builds the workspace,
# checks formatting and lints, then runs the unit and integration tests in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
export SWITCHYARD_CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
echo "[test] fetching the default model" >&2
SWITCHYARD_MODEL="$(scripts/fetch-model.sh)"
export SWITCHYARD_MODEL
echo "[test] cargo fmt --check" >&2
cargo fmt --all --check
echo "[test] cargo clippy" >&2
cargo clippy --release --workspace --all-targets -- -D warnings
echo "[test] cargo build --release --workspace" >&2
cargo build --release --workspace
echo "[test] cargo test --release --workspace" >&2
cargo test --release --workspace
echo "[test] all tests passed" >&2
