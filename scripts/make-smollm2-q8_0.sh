#!/usr/bin/env bash
# Make a Q8_0 re-encoding of the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) for benchmarks
# that want a Q8_0 file of the same model: every 2-D `.weight` tensor is dequantized and
# re-quantized to Q8_0 (gguf.quants), 1-D tensors (norms) stay F32, all metadata is copied
# (general.file_type is set to MOSTLY_Q8_0). Tensor order and shapes are kept.
# Idempotent: does nothing when the output already exists. Uses the venv of make-smollm2-hf.sh
# ($CACHE/venv-convert: gguf, numpy, ...), creating it when needed. Prints the output path on
# stdout (last line).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
DEST="$CACHE/models/SmolLM2-135M-Instruct.Q8_0.gguf"
VENV="$CACHE/venv-convert"
# Same pins as scripts/make-smollm2-hf.sh (same venv); keep the two lists in sync.
PKGS=(gguf==0.19.0 numpy==2.4.6 safetensors==0.8.0 tokenizers==0.23.3)

log() { echo "[make-smollm2-q8_0] $*" >&2; }

if [[ -f "$DEST" ]]; then
  echo "$DEST"
  exit 0
fi

SRC="$("$ROOT/scripts/fetch-model.sh" | tail -n 1)"

if ! "$VENV/bin/python" -c 'import gguf, numpy' 2>/dev/null; then
  log "creating $VENV (${PKGS[*]})"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PKGS[@]}" >&2
fi

log "re-encoding $SRC to Q8_0"
tmp="$DEST.tmp.$$"
trap 'rm -f "$tmp"' EXIT
start=$SECONDS
"$VENV/bin/python" - "$SRC" "$tmp" <<'PY'
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT, GGUFValueType as VT

src, out = sys.argv[1:]
reader = gguf.GGUFReader(src)
arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
writer = gguf.GGUFWriter(out, arch)  # writes general.architecture itself

for field in reader.fields.values():
    # GGUF.* are header fields and general.architecture is written by GGUFWriter.
    if field.name.startswith("GGUF.") or field.name == gguf.Keys.General.ARCHITECTURE:
        continue
    if field.name == gguf.Keys.General.ALIGNMENT:
        writer.add_custom_alignment(int(field.contents()))
        continue
    vtype = field.types[0]
    sub_type = field.types[-1] if vtype == VT.ARRAY else None
    value = field.contents()
    if field.name == gguf.Keys.General.FILE_TYPE:
        value = int(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_key_value(field.name, value, vtype, sub_type=sub_type)

REQUANT_FROM = {QT.F32, QT.F16, QT.BF16, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0}
n_q8 = n_f32 = 0
for t in reader.tensors:
    qtype = QT(t.tensor_type)
    if t.name.endswith(".weight") and len(t.shape) == 2 and qtype in REQUANT_FROM:
        # dequantize gives numpy order (rows, cols) = reversed GGUF shape; quantize gives
        # (rows, bytes-per-row) uint8, which add_tensor turns back into the element shape.
        f = gguf.quants.dequantize(t.data, qtype).astype(np.float32, copy=False)
        q = gguf.quants.quantize(f, QT.Q8_0)
        writer.add_tensor(t.name, q, raw_dtype=QT.Q8_0)
        n_q8 += 1
    elif len(t.shape) == 1:
        f = gguf.quants.dequantize(t.data, qtype).astype(np.float32, copy=False)
        writer.add_tensor(t.name, np.ascontiguousarray(f))
        n_f32 += 1
    else:
        sys.exit(f"unexpected tensor {t.name}: {qtype.name} shape {list(t.shape)}")

writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
print(f"{n_q8} tensors Q8_0, {n_f32} F32", file=sys.stderr)
PY
chmod 644 "$tmp"
mv -f "$tmp" "$DEST"
log "done in $((SECONDS - start)) s ($(stat -c %s "$DEST") bytes)"
echo "$DEST"
