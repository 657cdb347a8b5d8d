"""`POST /v1/completions` (OpenAI's legacy text completions) through the official `openai`
client against `switchyard api` on hf-candle with SmolLM2: raw prompts without the chat
template, `echo` with prompt log-probabilities (what lm-evaluation-harness's loglikelihood
tasks read), integer `logprobs`, several prompts, streaming, and clear errors.

The values themselves are checked against Transformers in
plugins/hf-candle/tests/smollm2_hf_tests.rs; here two independent paths of the server must
agree: a generated token's logprob (sampled from the decode step's logits) equals the same
token's logprob when the prompt plus that text is scored with `echo` (one forward pass over
the whole prompt)."""

from __future__ import annotations

import math

from helpers import assert_error

PROMPT = "The capital of France is"


def complete(server, **kw):
    kw.setdefault("temperature", 0)
    return server.client().completions.create(model=server.model, **kw)


def test_raw_prompt_echo_and_legacy_logprobs(hf_server):
    r = complete(hf_server, prompt=PROMPT, max_tokens=6, logprobs=3, echo=True)
    assert r.object == "text_completion"
    c = r.choices[0]
    assert c.text.startswith(PROMPT) and len(c.text) > len(PROMPT), c.text
    lp = c.logprobs
    assert "".join(lp.tokens) == c.text
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(x <= 0 for x in lp.token_logprobs[1:])
    assert all(1 <= len(t) <= 3 for t in lp.top_logprobs[1:])
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    # Without the chat template the prompt is a handful of tokens, not a ChatML conversation.
    assert r.usage.prompt_tokens < 10
    assert r.usage.completion_tokens == 6 or c.finish_reason == "stop"
    # Greedy: each generated token is the best of its alternatives.
    n_prompt = r.usage.prompt_tokens
    for tok, top, val in zip(lp.tokens[n_prompt:], lp.top_logprobs[n_prompt:],
                             lp.token_logprobs[n_prompt:]):
        assert max(top.values()) == val and top.get(tok) == val, (tok, top, val)


def test_generated_logprobs_equal_the_scored_prompt(hf_server):
    # Two tokens (" Paris", "."): further on "\n" "\n" would re-tokenize as one "\n\n".
    gen = complete(hf_server, prompt=PROMPT, max_tokens=2, logprobs=1)
    lp = gen.choices[0].logprobs
    assert "".join(lp.tokens) == gen.choices[0].text
    scored = complete(hf_server, prompt=PROMPT + gen.choices[0].text, max_tokens=0, echo=True,
                      logprobs=1)
    c = scored.choices[0]
    assert c.text == PROMPT + gen.choices[0].text
    assert scored.usage.completion_tokens == 0
    tail = c.logprobs.tokens[-len(lp.tokens):]
    assert tail == lp.tokens, "the text re-tokenizes to the same tokens"
    for a, b in zip(c.logprobs.token_logprobs[-len(lp.tokens):], lp.token_logprobs):
        assert math.isclose(a, b, abs_tol=2e-3), (a, b)


def test_token_prompts_several_prompts_and_n(hf_server):
    scored = complete(hf_server, prompt=PROMPT, max_tokens=0, echo=True, logprobs=0)
    tokens = scored.choices[0].logprobs.tokens
    assert scored.choices[0].logprobs.top_logprobs[1] == {}
    r = complete(hf_server, prompt=[PROMPT, "One, two,"], max_tokens=3)
    assert [c.index for c in r.choices] == [0, 1]
    ids = hf_server.http().post("/v1/completions", json={
        "model": hf_server.model, "prompt": [[504, 3575]], "max_tokens": 2, "echo": True,
        "temperature": 0}).json()
    assert ids["choices"][0]["text"].startswith("The capital"), ids
    assert len(tokens) == scored.usage.prompt_tokens
    r = complete(hf_server, prompt=PROMPT, max_tokens=2, n=2, temperature=0.8, seed=1)
    assert [c.index for c in r.choices] == [0, 1]


def test_streamed_equals_whole_for_greedy(hf_server):
    whole = complete(hf_server, prompt=PROMPT, max_tokens=8, logprobs=2)
    chunks = list(complete(hf_server, prompt=PROMPT, max_tokens=8, logprobs=2, stream=True,
                           stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs
                for t in c.choices[0].logprobs.tokens]
    assert streamed == whole.choices[0].logprobs.tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices and
            c.choices[0].finish_reason] == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_bad_completion_requests_name_the_field(hf_server, echo_server):
    http = hf_server.http()
    for body, param in [
        ({"prompt": PROMPT, "suffix": "!"}, "suffix"),
        ({"prompt": PROMPT, "logit_bias": {"1": 5}}, "logit_bias"),
        ({"prompt": PROMPT, "best_of": 4}, "best_of"),
        ({}, "prompt"),
        ({"prompt": [1, "x"]}, "prompt"),
        ({"prompt": [99999999]}, None),
        ({"prompt": PROMPT, "logprobs": 21}, "top_logprobs"),
        ({"prompt": PROMPT, "max_tokens": 0}, "max_tokens"),
    ]:
        body["model"] = hf_server.model
        assert_error(http.post("/v1/completions", json=body), 400, param=param)
    # A backend without raw prompts says so by name instead of answering something else.
    r = echo_server.http().post("/v1/completions",
                                json={"model": echo_server.model, "prompt": "hi"})
    err = assert_error(r, 400, param="prompt")
    assert "completions" in err["message"] or "prompt" in err["message"]


def test_tokenize_and_detokenize(hf_server, echo_server):
    http = hf_server.http()
    # Transformers' ids for this text (tests/fixtures/smollm2_hf/logprobs.json).
    r = http.post("/tokenize", json={"model": hf_server.model, "prompt": PROMPT}).json()
    assert r["tokens"] == [504, 3575, 282, 4649, 314], r
    assert r["count"] == 5 and r["max_model_len"] > 1000
    assert "".join(r["token_strs"]) == PROMPT
    back = http.post("/detokenize", json={"model": hf_server.model, "tokens": r["tokens"]}).json()
    assert back["prompt"] == PROMPT
    # A conversation is rendered with the chat template, as the chat endpoint renders it.
    msgs = [{"role": "user", "content": "Name three colors."}]
    t = http.post("/tokenize", json={"model": hf_server.model, "messages": msgs}).json()
    chat = hf_server.client().chat.completions.create(model=hf_server.model, messages=msgs,
                                                      max_tokens=1)
    assert t["count"] == chat.usage.prompt_tokens
    assert t["tokens"][0] == 1, "<|im_start|>"
    assert_error(http.post("/tokenize", json={"model": hf_server.model}), 400, param="prompt")
    assert_error(http.post("/detokenize", json={"model": hf_server.model, "tokens": [10**8]}), 400)
    # A backend that cannot tokenize says so by name.
    r = echo_server.http().post("/tokenize", json={"model": echo_server.model, "prompt": "x"})
    assert_error(r, 400, param="prompt")
