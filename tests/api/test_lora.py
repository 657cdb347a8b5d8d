"""LoRA adapters served by one `switchyard api` (hf-candle, the f32 SmolLM2 folder made by
scripts/make-smollm2-hf.sh): the base and three named adapters of tests/fixtures/adapters
(two personas fine-tuned with PEFT on CPU, a random rsLoRA on every linear layer) are models of
their own in /v1/models (with `parent`, as vLLM lists them), the `model` field picks one, a
concurrent mix of all four gives each request its solo reply, and the pirate persona's greedy
reply is Transformers + PEFT's (tests/fixtures/adapters/smollm2_lora_ids.json).

A LLaMA-Factory YAML (base + adapter + named template + `do_sample: false`) serves the same
replies as the equivalent TOML."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import CACHE, REPO, require, running

FOLDER = Path(
    os.environ.get("SWITCHYARD_SMOLLM2_HF", CACHE / "models" / "SmolLM2-135M-Instruct-hf")
)
ADAPTERS = REPO / "tests" / "fixtures" / "adapters"
NAMES = ["pirate", "butler", "random-rslora"]
FIXTURE = json.loads((ADAPTERS / "smollm2_lora_ids.json").read_text())


def ask(server, model: str, messages: list[dict]) -> str:
    r = server.client().chat.completions.create(
        model=model, messages=messages, temperature=0, max_tokens=24
    )
    return r.choices[0].message.content


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory, hf_plugin):
    require(FOLDER / "model.safetensors", "the SmolLM2 f32 folder (scripts/make-smollm2-hf.sh)")
    modules = "".join(f'"{n}" = "{ADAPTERS / n}"\n' for n in NAMES)
    cfg = (
        'sample_backend = "hf-candle"\nmax_concurrent = 8\nmax_queue = 64\n\n'
        f'[model]\npath = "{FOLDER}"\n\n[model.lora_modules]\n{modules}\n'
        '[backends.hf-candle]\ndtype = "f32"\n'
    )
    with running(tmp_path_factory.mktemp("lora"), cfg, ready_timeout=180) as s:
        yield s


def test_models_lists_the_adapters_with_their_parent(lora_server):
    data = lora_server.http().get("/v1/models").json()["data"]
    by_id = {m["id"]: m for m in data}
    base = data[0]["id"]
    assert by_id[base]["parent"] is None
    for n in NAMES:
        assert by_id[n]["parent"] == base, by_id[n]
        assert Path(by_id[n]["root"]) == ADAPTERS / n


def test_the_pirate_answers_as_transformers_and_peft(lora_server):
    # A case where every greedy step is a clear call (f32 rounding cannot flip it).
    i = next(i for i, c in enumerate(FIXTURE["variants"]["pirate"]["cases"])
             if c["min_margin"] > 1e-2)
    case = FIXTURE["cases"][i]
    want = FIXTURE["variants"]["pirate"]["cases"][i]
    got = ask(lora_server, "pirate", case["messages"])
    assert got == want["greedy_text"]
    base = ask(lora_server, lora_server.model, case["messages"])
    assert "Arr" not in base and base != got


def test_a_concurrent_mix_of_adapters_equals_each_solo_run(lora_server):
    models = [lora_server.model, *NAMES]
    questions = [c["messages"] for c in FIXTURE["cases"][:3]]
    jobs = [(m, q) for q in questions for m in models]
    solo = {(m, json.dumps(q)): ask(lora_server, m, q) for m, q in jobs}
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        mixed = list(pool.map(lambda j: ask(lora_server, *j), jobs * 2))
    for (m, q), got in zip(jobs * 2, mixed):
        assert got == solo[(m, json.dumps(q))], (m, q)
    # The personas answer differently from the base (the random adapter may agree on one).
    first = json.dumps(questions[0])
    assert len({solo[(m, first)] for m in models[:3]}) == 3


def test_an_unknown_adapter_is_a_404_listing_the_known_ones(lora_server):
    r = lora_server.http().post(
        "/v1/chat/completions",
        json={"model": "poet", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 404, r.text
    assert "poet" in r.text and "pirate" in r.text


def test_a_llamafactory_yaml_serves_what_the_equivalent_toml_serves(tmp_path, hf_plugin):
    require(FOLDER / "model.safetensors", "the SmolLM2 f32 folder (scripts/make-smollm2-hf.sh)")
    yaml = (
        f"model_name_or_path: {FOLDER}\nadapter_name_or_path: {ADAPTERS / 'pirate'}\n"
        "template: chatml\ninfer_backend: huggingface\ntrust_remote_code: true\n"
        "infer_dtype: float32\ndo_sample: false\nmax_new_tokens: 24\n"
    )
    toml = (
        f'sample_backend = "hf-candle"\n[model]\npath = "{FOLDER}"\n'
        f'adapter_name_or_path = ["{ADAPTERS / "pirate"}"]\ntemplate = "chatml"\n'
        '[generation]\ndo_sample = false\nmax_new_tokens = 24\n'
        '[backends.hf-candle]\ndtype = "f32"\n'
    )
    messages = FIXTURE["cases"][1]["messages"]
    replies = []
    for name, text in (("config.yaml", yaml), ("config.toml", toml)):
        with running(tmp_path / name, text, config_name=name, ready_timeout=180) as s:
            r = s.client().chat.completions.create(model=s.model, messages=messages)
            replies.append(r.choices[0].message.content)
    assert replies[0] == replies[1] and replies[0]
