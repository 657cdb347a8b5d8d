#!/usr/bin/env python3
"""Writes a random-weight Llama checkpoint (bf16 safetensors, Hugging Face folder) of a named shape.

For the CUDA comparison (`scripts/bench/cuda-compare.sh`): Switchyard and Transformers load the
same folder, so both run the same weights. No model hub is reachable on the GPU machines, so the
weights are drawn here (transformers' own initialisation, seed 0) and the tokenizer files are
copied from a local SmolLM2 folder (its 49152-token vocabulary serves both shapes).

    python3 scripts/bench/make_random_llama.py --shape smollm2-135m \
        --tokenizer-dir ~/.cache/switchyard/models/SmolLM2-135M-Instruct-hf --out /tmp/m135

Shapes:
- smollm2-135m: SmolLM2-135M's (576 wide, 30 layers, 9 heads / 3 KV heads, MLP 1536).
- llama-1b: Llama-3.2-1B's (2048 wide, 16 layers, 32 heads / 8 KV heads, MLP 8192), with the
  SmolLM2 vocabulary and plain rotary positions (theta 500000, no scaling).
"""

import argparse
import json
import shutil
from pathlib import Path

SHAPES = {
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        rope_theta=100000.0,
    ),
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        rope_theta=500000.0,
    ),
}

TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--tokenizer-dir", required=True, help="folder with SmolLM2's tokenizer files")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(a.seed)
    shape = SHAPES[a.shape]
    cfg = LlamaConfig(
        vocab_size=49152,
        head_dim=64,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        hidden_act="silu",
        **shape,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    src = Path(a.tokenizer_dir)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"shape": a.shape, "params": params, "out": str(out)}))


if __name__ == "__main__":
    main()
