"""Chat completions through the official `openai` client against the deterministic echo backend.

The echo backend replies with the last user message reversed word by word (one word per event,
token counts are word counts); `!say TEXT` replies TEXT verbatim.
"""

from __future__ import annotations


import openai
import pytest

from helpers import assert_error, reverse_words, stream_raw, user


def test_models_lists_the_served_model(echo_server):
    models = echo_server.client().models.list()
    ids = [m.id for m in models.data]
    assert ids == [echo_server.model]
    assert ids[0]  # the backend's model name ("reverse-words")
    assert models.data[0].object == "model"


def test_chat_reply_finish_reason_and_usage(echo_server):
    client = echo_server.client()
    text = "the quick brown fox"
    r = client.chat.completions.create(model=echo_server.model, messages=user(text))
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == echo_server.model
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.index == 0
    assert c.message.role == "assistant"
    assert c.message.content == reverse_words(text)
    assert c.finish_reason == "stop"
    assert c.message.tool_calls is None
    # Echo counts words: the prompt is every message's words.
    assert r.usage.prompt_tokens == 4
    assert r.usage.completion_tokens == 4
    assert r.usage.total_tokens == 8


def test_usage_counts_every_message(echo_server):
    client = echo_server.client()
    messages = [
        {"role": "system", "content": "be brief please"},
        {"role": "user", "content": "one two"},
        {"role": "assistant", "content": "two one"},
        {"role": "user", "content": [{"type": "text", "text": "alpha beta gamma"}]},
    ]
    r = client.chat.completions.create(model=echo_server.model, messages=messages)
    assert r.choices[0].message.content == "gamma beta alpha"
    assert r.usage.prompt_tokens == 3 + 2 + 2 + 3
    assert r.usage.completion_tokens == 3


def test_model_may_be_omitted_or_empty(echo_server):
    with echo_server.http() as http:
        r = http.post("/v1/chat/completions", json={"messages": user("a b")})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "b a"


def test_max_tokens_cuts_with_finish_reason_length(echo_server):
    client = echo_server.client()
    for field in ("max_tokens", "max_completion_tokens"):
        r = client.chat.completions.create(
            model=echo_server.model, messages=user("one two three four five"), **{field: 2}
        )
        assert r.choices[0].message.content == "five four"
        assert r.choices[0].finish_reason == "length"
        assert r.usage.completion_tokens == 2


def test_streaming_with_the_openai_client(echo_server):
    client = echo_server.client()
    text = "streaming words come back one at a time"
    stream = client.chat.completions.create(
        model=echo_server.model, messages=user(text), stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == reverse_words(text)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == len(text.split())
    assert chunks[-1].usage.prompt_tokens == len(text.split())
    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_streaming_wire_format(echo_server):
    """The SSE sequence itself: role chunk, one delta per word, final chunk, usage, [DONE]."""
    with echo_server.http() as http:
        status, events, headers = stream_raw(http, {
            "model": echo_server.model, "messages": user("a b c"),
            "stream_options": {"include_usage": True},
        })
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["choices"][0]["finish_reason"] is None
    deltas = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert deltas == ["c", " b", " a"]
    final = chunks[-2]["choices"][0]
    assert final["finish_reason"] == "stop" and final["delta"] == {}
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


def test_streaming_without_usage_has_no_usage_chunk(echo_server):
    with echo_server.http() as http:
        _, events, _ = stream_raw(http, {"model": echo_server.model, "messages": user("x y")})
    assert events[-1] == "[DONE]"
    assert all("usage" not in e or e["usage"] is None for e in events[:-1])
    assert all(e["choices"] for e in events[:-1])


def test_streaming_cut_by_max_tokens_ends_with_length(echo_server):
    client = echo_server.client()
    chunks = list(client.chat.completions.create(
        model=echo_server.model, messages=user("1 2 3 4 5 6"), max_tokens=3, stream=True,
        stream_options={"include_usage": True},
    ))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "6 5 4"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 3


def test_streamed_text_equals_non_streamed_text(echo_server):
    client = echo_server.client()
    msg = user("!say Hello there, <b>friend</b>! 1 < 2 & \"quotes\" \u00e9t\u00e9 \u2603")
    whole = client.chat.completions.create(model=echo_server.model, messages=msg)
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model=echo_server.model, messages=msg, stream=True)
        if c.choices
    )
    assert whole.choices[0].message.content == streamed
    assert streamed == 'Hello there, <b>friend</b>! 1 < 2 & "quotes" \u00e9t\u00e9 \u2603'


def test_sampling_fields_are_accepted(echo_server):
    """Every documented request field is accepted; unknown fields are ignored."""
    client = echo_server.client()
    r = client.chat.completions.create(
        model=echo_server.model, messages=user("x y z"),
        temperature=0.5, top_p=0.9, seed=42, stop=["never"], presence_penalty=0.5,
        frequency_penalty=-0.5, max_completion_tokens=10, n=1, tool_choice="none",
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        extra_body={"top_k": 20, "repetition_penalty": 1.1, "do_sample": True,
                    "chat_template_kwargs": {"enable_thinking": False},
                    "some_future_field": {"nested": [1, 2]}},
    )
    assert r.choices[0].message.content == "z y x"
    # Seeded requests on a deterministic backend are reproducible, trivially.
    again = client.chat.completions.create(model=echo_server.model, messages=user("x y z"), seed=42)
    assert again.choices[0].message.content == r.choices[0].message.content


def test_plugin_panic_is_a_500_and_the_server_keeps_serving(echo_server):
    with echo_server.http() as http:
        r = http.post("/v1/chat/completions", json={"model": echo_server.model,
                                                      "messages": user("!panic")})
        assert_error(r, 500, type_="server_error")
        status, events, _ = stream_raw(http, {"model": echo_server.model,
                                              "messages": user("!panic")})
        assert status == 500, events
        assert events[0]["error"]["type"] == "server_error"
        assert http.get("/health").status_code == 200
    r = echo_server.client().chat.completions.create(model=echo_server.model, messages=user("ok"))
    assert r.choices[0].message.content == "ok"
    assert echo_server.alive()


def test_panic_mid_stream_sends_an_error_event_then_done(echo_server):
    with echo_server.http() as http:
        status, events, _ = stream_raw(http, {"model": echo_server.model,
                                              "messages": user("!panic-mid-stream a b c")})
    assert status == 200
    assert events[-1] == "[DONE]"
    errors = [e for e in events[:-1] if "error" in e]
    assert len(errors) == 1, events
    assert errors[0]["error"]["message"]
    # The official client turns the error event into an exception.
    with pytest.raises(openai.APIError):
        for _ in echo_server.client().chat.completions.create(
            model=echo_server.model, messages=user("!panic-mid-stream a b c"), stream=True
        ):
            pass
    r = echo_server.client().chat.completions.create(model=echo_server.model, messages=user("y x"))
    assert r.choices[0].message.content == "x y"
    m = echo_server.metrics()
    assert m["switchyard_running"] == 0


def test_media_on_a_text_only_backend_is_a_clear_400(echo_server):
    png = "data:image/png;base64,iVBORw0KGgo="
    with echo_server.http() as http:
        r = http.post("/v1/chat/completions", json={"model": echo_server.model, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "what is it"},
                                         {"type": "image_url", "image_url": {"url": png}}]}]})
        assert_error(r, 400, contains="images")


@pytest.mark.parametrize("url,needle", [
    ("http://127.0.0.1/x.png", "--allow-remote-media"),
    ("file:///etc/passwd", "--media-dir"),
    ("ftp://example.com/x.png", "scheme"),
    ("data:image/png;base64,%%%notbase64", "base64"),
])
def test_media_sources_are_checked(echo_server, url, needle):
    with echo_server.http() as http:
        r = http.post("/v1/chat/completions", json={"model": echo_server.model, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "what is it"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]})
        assert_error(r, 400, contains=needle)


def test_too_many_media_items(echo_server):
    png = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with echo_server.http() as http:
        r = http.post("/v1/chat/completions", json={"model": echo_server.model, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "x"}] + [png] * 5}]})
        assert_error(r, 400, param="messages", contains="limit")


def test_image_only_message_is_not_empty(echo_server):
    """A message made of an image alone passes validation (and reaches the backend, which here
    has no image support)."""
    png = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    with echo_server.http() as http:
        r = http.post("/v1/chat/completions", json={"model": echo_server.model, "messages": [
            {"role": "user", "content": [png]}]})
        err = assert_error(r, 400, code="unsupported")
        assert "empty" not in err["message"]
