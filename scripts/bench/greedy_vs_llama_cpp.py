#!/usr/bin/env python3
"""Greedy reply of the native engine (`switchyard chat`) against llama.cpp's greedy ids on one chat
question, for a GGUF that no test fixture covers (a benchmark model such as
scripts/fetch-qwen-coder-1.5b.sh's). A sanity check before timing a model, not a test.

llama.cpp side: the question rendered with the GGUF's own chat template (jinja2), tokenized by
llama-tokenize, decoded greedily by scripts/fixtures/llama_cpp_top2.cpp (f32 KV cache, flash
attention off: llama_cpp_tools.REFERENCE) with the top-1/top-2 logit gap of every step, and the ids
turned back into text with the GGUF's vocabulary (GPT-2 byte-level BPE). Switchyard side: the same
question piped to `switchyard chat` (hf-candle, native engine, temperature 0, repetition penalty 1,
f32 KV cache, the same number of new tokens). Prints both texts and the gaps; passes (exit 0) when
Switchyard's text reproduces llama.cpp's steps at least up to the first step whose top-1/top-2 gap
is under --min-gap (where rounding may pick either), and says where they part after that.

Needs the gguf package (llama.cpp's gguf-py works: PYTHONPATH=.../vendor/llama.cpp/gguf-py) and
jinja2, e.g. ~/.cache/switchyard/venv-ref. Usage:
  greedy_vs_llama_cpp.py --model GGUF --switchyard-bin DIR [--llama-bin-dir DIR] [--question Q] [-n 40]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from llama_cpp_tools import REFERENCE, build_top2_helper, top2_steps  # noqa: E402


def byte_decoder():
    """GPT-2's byte-to-unicode table, inverted (the vocabulary of a `gpt2` GGUF tokenizer)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--switchyard-bin", required=True, help="folder with the switchyard binary and libhf_candle.so")
    ap.add_argument("--llama-bin-dir", default=os.path.expanduser("~/.cache/switchyard/llama.cpp/build-0.3.36/bin"))
    ap.add_argument("--question", default="Write a Python function that returns the factorial of n.")
    ap.add_argument("-n", type=int, default=40, help="new tokens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-gap", type=float, default=0.5, help="top-1/top-2 logit gap of a reliable step")
    args = ap.parse_args()

    import jinja2
    from gguf import GGUFReader

    reader = GGUFReader(args.model)
    field = reader.fields["tokenizer.chat_template"]
    template = bytes(field.parts[field.data[0]]).decode()
    field = reader.fields["tokenizer.ggml.tokens"]
    vocab = [bytes(field.parts[i]).decode() for i in field.data]
    prompt = jinja2.Environment().from_string(template).render(
        messages=[{"role": "user", "content": args.question}], add_generation_prompt=True)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "prompt.txt")
        with open(path, "w") as f:
            f.write(prompt)
        out = subprocess.run([os.path.join(args.llama_bin_dir, "llama-tokenize"), "-m", args.model, "-f", path,
                              "--ids", "--log-disable", "--no-bos"], capture_output=True, text=True, check=True)
        ids = json.loads(out.stdout.strip().splitlines()[-1])
        conf = os.path.join(tmp, "model.toml")
        with open(conf, "w") as f:
            f.write(f'sample_backend = "hf-candle"\n[model]\npath = {json.dumps(os.path.abspath(args.model))}\n'
                    f"[generation]\ntemperature = 0.0\nmax_new_tokens = {args.n}\nrepetition_penalty = 1.0\n"
                    f'[backends.hf-candle]\nthreads = {args.threads}\nkv_cache_dtype = "f32"\n')
        ours = subprocess.run([os.path.join(args.switchyard_bin, "switchyard"), "chat", "-c", conf,
                               "--plugin-dir", args.switchyard_bin], input=args.question + "\n",
                              capture_output=True, text=True, check=True).stdout

    helper = build_top2_helper(os.path.join(args.llama_bin_dir, "llama-server"))
    steps = top2_steps(helper, args.model, [ids], args.threads, REFERENCE, args.n, len(ids) + args.n + 16)[0]
    dec = byte_decoder()
    special = {i for i, t in enumerate(vocab) if t.startswith("<|") and t.endswith("|>")}

    def piece(i):
        return vocab[i].encode() if i in special else bytes(dec[c] for c in vocab[i])

    # Switchyard stops at an end-of-generation token (and does not print it); the helper does not.
    end = next((k for k, st in enumerate(steps) if st[0] in special), len(steps))
    steps = steps[:end]
    gaps = [round(st[1] - st[3], 3) for st in steps]
    reliable = next((k for k, g in enumerate(gaps) if g < args.min_gap), len(gaps))
    theirs = b"".join(piece(st[0]) for st in steps).decode("utf-8", "replace")
    # `switchyard chat` ends each reply with one newline of its own.
    ours = ours.removesuffix("\n").encode()
    # Steps of llama.cpp's reply that Switchyard's text reproduces, from the start.
    agree, text = 0, b""
    while agree < len(steps) and ours.startswith(text + piece(steps[agree][0])):
        text += piece(steps[agree][0])
        agree += 1
    print(json.dumps({"prompt_tokens": len(ids), "llama_cpp_ids": [st[0] for st in steps], "top2_gaps": gaps,
                      "reliable_steps": reliable, "agreeing_steps": agree, "llama_cpp": theirs,
                      "switchyard": ours.decode("utf-8", "replace")}, ensure_ascii=False, indent=1))
    if agree == len(steps) and ours == text:
        print(f"EQUAL: {agree} steps (the first {reliable} with a top-2 gap >= {args.min_gap})")
        return 0
    if agree >= reliable:
        second = agree < len(steps) and ours.startswith(text + piece(steps[agree][2]))
        print(f"AGREE on the {reliable} reliable steps; differ from step {agree} (llama.cpp's top-2 gap "
              f"{gaps[agree] if agree < len(gaps) else '-'}"
              f"{', Switchyard took its second choice' if second else ''})")
        return 0
    print(f"DIFFERENT at step {agree}, inside the reliable prefix of {reliable} steps")
    return 1


if __name__ == "__main__":
    sys.exit(main())
