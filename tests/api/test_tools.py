"""Tool calling and reasoning: the server parses model output into `tool_calls` and
`reasoning_content`. The echo backend's `!say TEXT` plays the model, so every format is exact."""

from __future__ import annotations

import json

import pytest

from helpers import stream_raw, user

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
TOOLS = [WEATHER, TIME]

HERMES = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}</tool_call>'
HERMES_TWO = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
)
MISTRAL = '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}]'
LLAMA = '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "C"}}'
LLAMA_TAG = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "C"}}'

FORMATS = {"hermes": HERMES, "mistral": MISTRAL, "llama": LLAMA, "llama-python-tag": LLAMA_TAG}


def create(server, messages, **kw):
    return server.client().chat.completions.create(model=server.model, messages=messages, **kw)


def stream_collect(server, messages, **kw):
    """Streams with the openai client; returns (content, reasoning, tool calls, finish, chunks)."""
    chunks = list(create(server, messages, stream=True, **kw))
    content, reasoning, calls, finish = "", "", {}, None
    for c in chunks:
        if not c.choices:
            continue
        d = c.choices[0].delta
        content += d.content or ""
        reasoning += getattr(d, "reasoning_content", None) or ""
        for tc in d.tool_calls or []:
            slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            slot["id"] = tc.id or slot["id"]
            if tc.function and tc.function.name:
                slot["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                slot["arguments"] += tc.function.arguments
        finish = c.choices[0].finish_reason or finish
    return content, reasoning, [calls[i] for i in sorted(calls)], finish, chunks


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_tool_call_formats_non_streaming(echo_server, fmt):
    r = create(echo_server, user("!say " + FORMATS[fmt]), tools=TOOLS)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    assert c.message.content in (None, "")
    assert len(c.message.tool_calls) == 1
    call = c.message.tool_calls[0]
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "C"}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_tool_call_formats_streaming(echo_server, fmt):
    content, _, calls, finish, _ = stream_collect(echo_server, user("!say " + FORMATS[fmt]),
                                                  tools=TOOLS)
    assert finish == "tool_calls"
    assert content == ""  # the call text is not leaked as content
    assert len(calls) == 1
    assert calls[0]["id"].startswith("call_")
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "C"}


def test_parallel_calls_with_leading_text(echo_server):
    text = "Let me look that up.\n" + HERMES_TWO
    r = create(echo_server, user("!say " + text), tools=TOOLS)
    m = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    assert m.content == "Let me look that up."
    assert [t.function.name for t in m.tool_calls] == ["get_weather", "get_time"]
    assert json.loads(m.tool_calls[1].function.arguments) == {}
    assert len({t.id for t in m.tool_calls}) == 2

    content, _, calls, finish, _ = stream_collect(echo_server, user("!say " + text), tools=TOOLS)
    assert finish == "tool_calls"
    assert content.strip() == "Let me look that up."
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]


def test_without_tools_the_text_stays_content(echo_server):
    r = create(echo_server, user("!say " + HERMES))
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == HERMES
    assert r.choices[0].message.tool_calls is None
    # tool_choice "none" keeps tools out of the prompt and output unparsed.
    r = create(echo_server, user("!say " + HERMES), tools=TOOLS, tool_choice="none")
    assert r.choices[0].message.content == HERMES


def test_text_that_only_looks_like_a_call_is_content(echo_server):
    for text in ("{not json at all}", "<tool_call>{broken</tool_call>", "The answer is 4."):
        r = create(echo_server, user("!say " + text), tools=TOOLS)
        assert r.choices[0].finish_reason == "stop", text
        assert r.choices[0].message.content == text
        assert not r.choices[0].message.tool_calls
        content, _, calls, finish, _ = stream_collect(echo_server, user("!say " + text),
                                                      tools=TOOLS)
        assert (content, calls, finish) == (text, [], "stop")


def test_tool_round_trip(echo_server):
    """Tool call -> tool result message -> answer, the way an OpenAI client drives it."""
    messages = [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "!say " + HERMES},
    ]
    first = create(echo_server, messages, tools=TOOLS)
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    args = json.loads(call.function.arguments)
    result = f"It is 21 degrees {args['unit']} and sunny in {args['city']}."
    # The assistant message goes back as the client library produced it (content None).
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    second = create(echo_server, messages, tools=TOOLS)
    assert second.choices[0].message.role == "assistant"
    # Every message reached the backend: echo counts the words of all of them.
    words = sum(len(m.get("content", "").split()) for m in messages
                if isinstance(m.get("content"), str))
    assert second.usage.prompt_tokens == words
    # The model answers from the tool result (echo plays the model with `!say`).
    messages.append({"role": "user", "content": "!say " + result})
    third = create(echo_server, messages, tools=TOOLS)
    assert third.choices[0].finish_reason == "stop"
    assert third.choices[0].message.content == result
    assert not third.choices[0].message.tool_calls
    # Streamed, the same conversation gives the same answer.
    content, _, calls, finish, _ = stream_collect(echo_server, messages, tools=TOOLS)
    assert (content, calls, finish) == (result, [], "stop")


def test_bad_tool_definitions_are_400(echo_server):
    with echo_server.http() as http:
        r = http.post("/v1/chat/completions", json={
            "model": echo_server.model, "messages": user("x"),
            "tools": [{"type": "function", "function": {"description": "no name"}}]})
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "tools[0]"
        r = http.post("/v1/chat/completions", json={
            "model": echo_server.model, "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": None, "tool_calls": "not a list"}]})
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "messages[1].tool_calls"


THINK = "<think>First, 2 + 2 is 4.</think> The answer is 4."


def test_reasoning_is_split_when_asked(echo_server):
    r = create(echo_server, user("!say " + THINK), extra_body={"include_reasoning": True})
    m = r.choices[0].message
    assert m.content == "The answer is 4."
    assert m.reasoning_content == "First, 2 + 2 is 4."
    content, reasoning, _, finish, _ = stream_collect(
        echo_server, user("!say " + THINK), extra_body={"include_reasoning": True})
    assert content.strip() == "The answer is 4."
    assert reasoning.strip() == "First, 2 + 2 is 4."
    assert finish == "stop"


def test_reasoning_stays_in_content_by_default(echo_server):
    r = create(echo_server, user("!say " + THINK))
    assert r.choices[0].message.content == THINK
    assert getattr(r.choices[0].message, "reasoning_content", None) is None
    content, reasoning, _, _, _ = stream_collect(echo_server, user("!say " + THINK))
    assert content == THINK and reasoning == ""


def test_reasoning_then_tool_call(echo_server):
    text = "<think>I need the weather.</think>\n" + HERMES
    r = create(echo_server, user("!say " + text), tools=TOOLS,
               extra_body={"include_reasoning": True})
    m = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    assert m.reasoning_content == "I need the weather."
    assert m.tool_calls[0].function.name == "get_weather"
    content, reasoning, calls, finish, _ = stream_collect(
        echo_server, user("!say " + text), tools=TOOLS, extra_body={"include_reasoning": True})
    assert finish == "tool_calls"
    assert reasoning.strip() == "I need the weather."
    assert content.strip() == ""
    assert calls[0]["name"] == "get_weather"


def test_tool_call_wire_format_when_streaming(echo_server):
    with echo_server.http() as http:
        status, events, _ = stream_raw(http, {"model": echo_server.model,
                                              "messages": user("!say " + HERMES), "tools": TOOLS})
    assert status == 200 and events[-1] == "[DONE]"
    with_calls = [e for e in events[:-1] if e["choices"][0]["delta"].get("tool_calls")]
    assert len(with_calls) == 1
    tc = with_calls[0]["choices"][0]["delta"]["tool_calls"][0]
    assert tc["index"] == 0 and tc["type"] == "function" and tc["id"].startswith("call_")
    assert tc["function"]["name"] == "get_weather"
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
