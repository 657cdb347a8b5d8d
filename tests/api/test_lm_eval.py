"""lm-evaluation-harness (`lm-eval` on PyPI, pinned by scripts/test-api.sh) against `switchyard
api` on hf-candle with the f32 SmolLM2 Hugging Face folder (scripts/make-smollm2-hf.sh), on the
two small tasks in tests/lm_eval/tasks (local JSONL, nothing from a hub):

* `local-completions` on the 4-choice loglikelihood task: every per-choice loglikelihood equals
  lm-eval's own `hf` model (Transformers in-process on the same folder, recorded by
  scripts/fixtures/record_lm_eval_reference.py into tests/fixtures/lm_eval/reference.json)
  within LL_TOL, is_greedy and the per-document acc / acc_norm are the same, and so are the
  task's acc / acc_norm. Run twice: prompts as token ids (lm-eval tokenizes with the folder's
  tokenizer through transformers, no torch) one per request, and as text (switchyard
  tokenizes) eight per request.
* `local-chat-completions` on the generate-until task with the chat template: lm-eval's
  greedy answers are the `hf` model's texts and exact_match is the same.

Both check on /metrics that the server answered every request lm-eval made, and none failed.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

# No hub: the tasks read local JSONL and the tokenizer comes from the model folder. Set before
# lm_eval (datasets, huggingface_hub) is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lm_eval  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from conftest import CACHE, REPO, require, running  # noqa: E402

FOLDER = Path(
    os.environ.get("SWITCHYARD_SMOLLM2_HF", CACHE / "models" / "SmolLM2-135M-Instruct-hf")
)
TASKS = REPO / "tests" / "lm_eval" / "tasks"
REFERENCE = REPO / "tests" / "fixtures" / "lm_eval" / "reference.json"
LL_TASK = "switchyard_facts_mc"
GEN_TASK = "switchyard_short_answer"

# Absolute tolerance on one choice's loglikelihood (a sum over its tokens) against the `hf`
# model. Measured: at most 6.0e-5 over the 128 choices (f32 candle vs f32 torch, 2 threads).
LL_TOL = 5e-4


@pytest.fixture(scope="module")
def f32_server(tmp_path_factory, hf_plugin):
    """The f32 SmolLM2 folder on hf-candle (f32 weights and activations, one slot)."""
    require(FOLDER / "model.safetensors", "the f32 SmolLM2 folder (scripts/make-smollm2-hf.sh)")
    cfg = (
        'sample_backend = "hf-candle"\nmax_concurrent = 1\n\n'
        f'[model]\npath = "{FOLDER}"\n\n'
        '[backends.hf-candle]\ndtype = "f32"\nthreads = 2\n'
    )
    with running(tmp_path_factory.mktemp("lm-eval"), cfg, ready_timeout=120) as s:
        yield s


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


def evaluate(server, monkeypatch, model: str, task: str, model_args: dict, chat: bool):
    """Runs lm-eval in-process; returns (task metrics, samples by doc_id, requests served)."""
    monkeypatch.chdir(REPO)  # the tasks' data_files paths are relative to the repository root
    before = server.metrics()
    endpoint = "chat/completions" if chat else "completions"
    results = lm_eval.simple_evaluate(
        model=model,
        model_args={"base_url": f"{server.base}/v1/{endpoint}", "model": server.model,
                    "max_retries": 1, "timeout": 120, **model_args},
        tasks=[task],
        task_manager=TaskManager(include_path=str(TASKS), include_defaults=False),
        num_fewshot=0,
        apply_chat_template=chat,
        log_samples=True,
    )
    after = server.metrics()
    assert after["switchyard_errors_total"] == before["switchyard_errors_total"], \
        server.log_text()[-3000:]
    served = after["switchyard_requests_total"] - before["switchyard_requests_total"]
    samples = {s["doc_id"]: s for s in results["samples"][task]}
    return results["results"][task], samples, served


@pytest.mark.parametrize(
    "model_args",
    [
        pytest.param({"tokenized_requests": True, "batch_size": 1}, id="token-ids"),
        pytest.param({"tokenized_requests": False, "batch_size": 8}, id="text-batched"),
    ],
)
def test_loglikelihood_task_equals_the_hf_model(f32_server, reference, monkeypatch, model_args):
    ref = reference["loglikelihood"]
    args = {"tokenizer_backend": "huggingface", "tokenizer": str(FOLDER), **model_args}
    metrics, samples, served = evaluate(f32_server, monkeypatch, "local-completions", LL_TASK,
                                        args, chat=False)
    assert sorted(samples) == [d["doc_id"] for d in ref["docs"]]
    n_choices = sum(len(d["resps"]) for d in ref["docs"])
    assert served == math.ceil(n_choices / model_args["batch_size"]), served

    worst, mismatched = 0.0, []
    for d in ref["docs"]:
        s = samples[d["doc_id"]]
        assert s["target"] == d["target"]
        for i, ((ll, greedy), (ref_ll, ref_greedy)) in enumerate(
                zip([r[0] for r in s["resps"]], d["resps"], strict=True)):
            if abs(ll - ref_ll) > LL_TOL or bool(greedy) != ref_greedy:
                mismatched.append((d["doc_id"], i, s["arguments"][i], ll, greedy, ref_ll,
                                   ref_greedy))
            else:
                worst = max(worst, abs(ll - ref_ll))
    print(f"max |loglikelihood - hf| = {worst:.2e} over {n_choices - len(mismatched)} choices")

    # Choices the model would end right after (`<|im_end|>` next) count too: the completion
    # lists the end token's logprob, and lm-eval drops that last entry as the generated one.
    assert not mismatched, (
        f"loglikelihoods differ from lm-eval's hf model by more than {LL_TOL} "
        "(doc, choice, (context, continuation), switchyard, is_greedy, hf, is_greedy):\n"
        + "\n".join(map(repr, mismatched))
    )
    for d in ref["docs"]:
        s = samples[d["doc_id"]]
        assert (s["acc"], s["acc_norm"]) == (d["acc"], d["acc_norm"]), (d, s["resps"])
    assert metrics["acc,none"] == ref["acc"]
    assert metrics["acc_norm,none"] == ref["acc_norm"]


def test_a_completion_that_stops_on_the_end_token_lists_it(f32_server):
    """What lm-eval's loglikelihood requests rely on: with `echo`, `max_tokens: 1` and
    `logprobs`, the one generated entry is there even when it is the end token."""
    r = f32_server.http().post("/v1/completions", json={
        "model": f32_server.model, "prompt": "Question: Which planet do we live on?\nAnswer: Earth",
        "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}).json()
    c = r["choices"][0]
    assert c["finish_reason"] == "stop", r
    assert len(c["logprobs"]["tokens"]) == r["usage"]["prompt_tokens"] + 1, r
    assert c["logprobs"]["tokens"][-1] == "<|im_end|>" and c["logprobs"]["token_logprobs"][-1] < 0


def test_generate_until_task_through_chat_completions(f32_server, reference, monkeypatch):
    ref = reference["generate_until"]
    metrics, samples, served = evaluate(f32_server, monkeypatch, "local-chat-completions",
                                        GEN_TASK, {}, chat=True)
    assert served == len(ref["docs"])
    for d in ref["docs"]:
        s = samples[d["doc_id"]]
        assert (s["target"], s["resps"][0][0]) == (d["target"], d["resp"]), d["doc_id"]
        assert (s["filtered_resps"][0], s["exact_match"]) == (d["filtered"], d["exact_match"])
    assert metrics["exact_match,last-word"] == ref["exact_match"]
