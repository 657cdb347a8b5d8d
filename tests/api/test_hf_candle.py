"""The official `openai` client against `switchyard api` on hf-candle with a real model
(SmolLM2-135M-Instruct, Q4_1 GGUF), and the score endpoint with a real reward-model checkpoint
(tests/fixtures/hf/llama-seqcls, a tiny random LlamaForSequenceClassification with scores
recorded from transformers). Generation is kept short: the suite runs on 2 CPU cores."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import SEQCLS
from helpers import assert_error, user

Q = user("Name three colors.")
GREEDY = {"temperature": 0, "max_tokens": 16}
OPEN = user("Tell me something surprising.")


def chat(server, messages=Q, **kw):
    return server.client().chat.completions.create(model=server.model, messages=messages, **kw)


def stream_text(server, messages=Q, **kw):
    chunks = list(chat(server, messages, stream=True, stream_options={"include_usage": True},
                       **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and
              c.choices[0].finish_reason]
    return text, finish, chunks


@pytest.fixture(scope="module")
def greedy(hf_server):
    """One greedy non-streamed answer, shared by the tests that compare against it."""
    return chat(hf_server, **GREEDY)


def test_chat_and_usage(hf_server, greedy):
    c = greedy.choices[0]
    assert greedy.object == "chat.completion"
    assert greedy.model == hf_server.model
    assert c.message.role == "assistant"
    assert c.message.content.strip()
    assert c.finish_reason in ("stop", "length")
    u = greedy.usage
    assert u.prompt_tokens > 5
    assert 1 <= u.completion_tokens <= 16
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    # Usage is the real token count: a longer prompt has more prompt tokens, the same prompt
    # the same count.
    longer = chat(hf_server, user("Name three colors. Then name three animals, please."),
                  temperature=0, max_tokens=1)
    assert longer.usage.prompt_tokens > u.prompt_tokens
    assert longer.usage.completion_tokens == 1
    same = chat(hf_server, temperature=0, max_tokens=1)
    assert same.usage.prompt_tokens == u.prompt_tokens


def test_streamed_text_equals_non_streamed_text_for_greedy(hf_server, greedy):
    text, finish, chunks = stream_text(hf_server, **GREEDY)
    assert text == greedy.choices[0].message.content
    assert finish == [greedy.choices[0].finish_reason]
    assert chunks[0].choices[0].delta.role == "assistant"
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage.prompt_tokens == greedy.usage.prompt_tokens
    assert usage.completion_tokens == greedy.usage.completion_tokens
    # Deltas are real increments (several content chunks, not one blob).
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 2


def test_max_tokens_gives_finish_reason_length(hf_server, greedy):
    full = greedy.choices[0].message.content
    assert greedy.usage.completion_tokens > 3, full
    r = chat(hf_server, temperature=0, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3
    assert full.startswith(r.choices[0].message.content)
    text, finish, chunks = stream_text(hf_server, temperature=0, max_tokens=3)
    assert finish == ["length"]
    assert chunks[-1].usage.completion_tokens == 3
    assert text == r.choices[0].message.content


def test_stop_strings(hf_server, greedy):
    full = greedy.choices[0].message.content
    # A stop string taken from the greedy answer: generation must end right before it.
    stop = next((w for w in full.split()[1:] if full.index(w) > 0), None)
    assert stop, full
    cut = full[:full.index(stop)]
    r = chat(hf_server, stop=stop, **GREEDY)
    assert r.choices[0].message.content == cut, (stop, full)
    assert r.choices[0].finish_reason == "stop"
    text, finish, _ = stream_text(hf_server, stop=["\u2603never", stop], **GREEDY)
    assert text == cut, (stop, full)
    assert finish == ["stop"]


def test_n_2(hf_server):
    r = chat(hf_server, OPEN, n=2, temperature=1.0, seed=7, max_tokens=6)
    assert [c.index for c in r.choices] == [0, 1]
    for c in r.choices:
        assert c.message.content.strip()
        assert c.finish_reason in ("stop", "length")
    assert 2 <= r.usage.completion_tokens <= 12
    # Streamed: both indexes get content and a finish reason, and the same seed gives the
    # same sampled answers.
    chunks = list(chat(hf_server, OPEN, n=2, temperature=1.0, seed=7, max_tokens=6,
                       stream=True))
    texts, finishes = {0: "", 1: ""}, {}
    for ch in chunks:
        for c in ch.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
    assert set(finishes) == {0, 1}
    assert [texts[0], texts[1]] == [c.message.content for c in r.choices]


def test_seed_reproducibility_with_sampling(hf_server):
    kw = {"temperature": 1.5, "top_p": 1.0, "max_tokens": 8}
    a = chat(hf_server, OPEN, seed=1234, **kw).choices[0].message.content
    # The same seed gives the same sample, streamed or not.
    s, _, _ = stream_text(hf_server, OPEN, seed=1234, **kw)
    assert s == a
    others = {chat(hf_server, OPEN, seed=seed, **kw).choices[0].message.content
              for seed in (1, 2)}
    assert len(others | {a}) > 1, "different seeds never changed a sampled answer"


def test_prompt_too_long_is_400(hf_server):
    ctx = httpx.get(hf_server.base + "/v1/info", timeout=10).json()["context_length"]
    assert ctx and ctx > 0
    long = "hello " * (ctx + 100)
    with hf_server.http() as http:
        for stream in (False, True):
            r = http.post("/v1/chat/completions", json={"messages": user(long), "stream": stream,
                                                          "max_tokens": 4})
            assert_error(r, 400, type_="invalid_request_error", contains="context")
    assert hf_server.alive()


def test_tool_conversation_on_a_real_template(hf_server):
    """A tiny model cannot be relied on to call tools, but a request with tools and a tool-call
    history (assistant `tool_calls`, `tool` result) must render on a real template and answer."""
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 C, sunny"},
    ]
    r = chat(hf_server, messages, tools=tools, temperature=0, max_tokens=4)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert r.usage.prompt_tokens > 10


def test_score_on_a_generating_model_is_400(hf_server):
    with hf_server.http() as http:
        r = http.post("/v1/score/evaluation", json={"messages": ["text"]})
        assert_error(r, 400, code="unsupported", contains="reward")


def test_health_and_metrics_on_hf(hf_server):
    assert httpx.get(hf_server.base + "/health", timeout=10).json()["status"] == "ok"
    m = hf_server.metrics()
    assert m["switchyard_generated_tokens_total"] > 0
    assert m["switchyard_time_to_first_token_seconds_count"] > 0


# --- reward model ----------------------------------------------------------------------------

def expected():
    return json.loads((SEQCLS / "expected.json").read_text())


def test_scores_match_transformers(score_server):
    exp = expected()
    texts = [s["text"] for s in exp["singles"]]
    with score_server.http() as http:
        r = http.post("/v1/score/evaluation", json={"model": score_server.model,
                                                      "messages": texts})
        assert r.status_code == 200, r.text
        body = r.json()
    assert body["object"] == "score.evaluation"
    assert body["model"] == score_server.model
    assert body["id"]
    assert len(body["scores"]) == len(texts)
    for got, s in zip(body["scores"], exp["singles"]):
        assert got == pytest.approx(s["score"], abs=1e-3), s["text"]


def test_score_a_conversation(score_server):
    conv = expected()["conversation"]
    with score_server.http() as http:
        r = http.post("/v1/score/evaluation", json={"messages": [conv["messages"], "Hi"]})
        assert r.status_code == 200, r.text
    scores = r.json()["scores"]
    assert scores[0] == pytest.approx(conv["score"], abs=1e-3)
    assert scores[1] == pytest.approx(expected()["singles"][0]["score"], abs=1e-3)


def test_score_errors(score_server):
    ctx = httpx.get(score_server.base + "/v1/info", timeout=10).json()["context_length"]
    too_long = "a b c d " * ctx
    with score_server.http() as http:
        r = http.post("/v1/score/evaluation", json={"messages": [too_long]})
        assert_error(r, 400, contains="max_length")
        r = http.post("/v1/score/evaluation", json={"messages": [too_long], "max_length": 16})
        assert r.status_code == 200, r.text
        # A reward model does not chat.
        r = http.post("/v1/chat/completions", json={"messages": user("hi")})
        assert_error(r, 400, code="unsupported", contains="reward")
