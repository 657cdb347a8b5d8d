#!/usr/bin/env python3
"""Hugging Face Transformers `generate()` speed on CPU or CUDA for a Hugging Face model folder.

Called by `switchyard-bench` (crates/switchyard-bench, the safetensors table) as the peer of the
hf-candle safetensors path; run it with the venv-ref Python (torch + transformers):

    ~/.cache/switchyard/venv-ref/bin/python scripts/bench/transformers_generate.py \
        --model ~/.cache/switchyard/models/SmolLM2-135M-Instruct-hf \
        --threads 2 --dtype float32 --prompt-tokens 512 --gen-tokens 128 --reps 3

Per rep (after one untimed warm-up of both measurements):

- pp (prefill tokens/s): a prompt of exactly P tokens (repeated words, ids truncated to P, no
  chat template) through one forward pass under `torch.inference_mode()`, with
  `logits_to_keep=1` as `generate()` does for its prefill; pp = P / seconds.
- tg (decode tokens/s): from a short chat prompt (the tokenizer's chat template), time
  `generate(max_new_tokens=1)` (= time to first token, TTFT) and then
  `generate(max_new_tokens=G, min_new_tokens=G, do_sample=False)` (total);
  tg = (G - 1) / (total - TTFT), i.e. tokens after the first over the time after the first
  (the same definition as Switchyard's decode speed).

With `--device cuda` the model and inputs live on GPU 0 and every timed span ends with
`torch.cuda.synchronize()`.

Prints one JSON line on stdout (everything else goes to stderr):
{"pp": median, "tg": median, "ids": [greedy ids of the last decode run], "threads": N,
 "dtype": ..., "device": ..., "torch": ..., "transformers": ...}
"""

import argparse
import contextlib
import json
import statistics
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="Hugging Face model folder")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    if a.gen_tokens < 2 or a.prompt_tokens < 1 or a.reps < 1 or a.threads < 1:
        sys.exit("need --gen-tokens >= 2, --prompt-tokens >= 1, --reps >= 1, --threads >= 1")

    # Keep stdout for the single JSON line: library chatter goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        result = run(a)
    print(json.dumps(result), flush=True)


def run(a: argparse.Namespace) -> dict:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[a.dtype]

    tok = AutoTokenizer.from_pretrained(a.model)
    # `dtype` is the transformers 5 name of the former `torch_dtype` argument.
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype).to(a.device)
    model.eval()

    def sync() -> None:
        if a.device == "cuda":
            torch.cuda.synchronize()

    # Prefill prompt: exactly P ids.
    words = "the quick brown fox jumps over the lazy dog while a small model reads its prompt "
    text = words * (a.prompt_tokens // 8 + 8)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    while len(ids) < a.prompt_tokens:
        ids = ids + ids
    pp_ids = torch.tensor([ids[: a.prompt_tokens]], dtype=torch.long, device=a.device)

    # Decode prompt: a short chat turn.
    chat = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    enc = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gen_inputs = {
        "input_ids": enc["input_ids"].to(a.device),
        "attention_mask": enc["attention_mask"].to(a.device),
    }
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def prefill() -> float:
        with torch.inference_mode():
            sync()
            t0 = time.perf_counter()
            model(input_ids=pp_ids, logits_to_keep=1)
            sync()
            return time.perf_counter() - t0

    last_ids: list = []

    def generate(n: int) -> float:
        with torch.inference_mode():
            sync()
            t0 = time.perf_counter()
            out = model.generate(
                **gen_inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=pad
            )
            sync()
            dt = time.perf_counter() - t0
        got = out.shape[1] - gen_inputs["input_ids"].shape[1]
        if got != n:
            raise RuntimeError(f"generate produced {got} tokens, wanted {n}")
        last_ids[:] = out[0, gen_inputs["input_ids"].shape[1] :].tolist()
        return dt

    # Warm-up (untimed).
    prefill()
    generate(1)
    generate(min(a.gen_tokens, 8))

    pps, tgs = [], []
    for _ in range(a.reps):
        pps.append(a.prompt_tokens / prefill())
        ttft = generate(1)
        total = generate(a.gen_tokens)
        tgs.append((a.gen_tokens - 1) / max(total - ttft, 1e-9))

    return {
        "pp": round(statistics.median(pps), 2),
        "tg": round(statistics.median(tgs), 2),
        "ids": last_ids,
        "threads": a.threads,
        "dtype": a.dtype,
        "device": a.device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


if __name__ == "__main__":
    main()
