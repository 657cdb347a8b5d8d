"""Structured outputs on hf-candle (SmolLM2 GGUF) through the official `openai` client:
`chat.completions.parse` with pydantic models (enums, nested objects, arrays with
min/max items, bounded integers, string patterns), streamed and not; `json_object`; forced
tool calls (`tool_choice="required"` and a named function) whose arguments validate; vLLM's
`guided_choice` / `guided_regex`; and a bad schema refused with a 400. The constraint is
enforced by constrained decoding (llguidance token masks), so every reply must validate
whatever the small model would have said."""

from __future__ import annotations

import json
import re
from enum import Enum

import pytest
from pydantic import BaseModel, ConfigDict, Field, conint, constr

from helpers import assert_error, user

LIMIT = {"temperature": 0, "max_tokens": 160}


class Color(str, Enum):
    red = "red"
    green = "green"
    blue = "blue"


class City(BaseModel):
    name: constr(max_length=20)
    country_code: constr(pattern=r"^[A-Z]{2}$")
    population_millions: conint(ge=0, le=50)


class Palette(BaseModel):
    # No extra keys (`additionalProperties: false`), as OpenAI's strict mode requires.
    model_config = ConfigDict(extra="forbid")

    favourite: Color
    others: list[Color] = Field(min_length=1, max_length=3)
    brightness: conint(ge=1, le=10)


class Trip(BaseModel):
    origin: City
    destination: City
    days: conint(ge=1, le=30)


@pytest.mark.parametrize("model, prompt", [
    (City, "Describe Paris as JSON."),
    (Palette, "Pick your favourite colours."),
    (Trip, "Plan a trip from Paris to Rome."),
])
def test_parse_with_pydantic_models(hf_server, model, prompt):
    r = hf_server.client().chat.completions.parse(
        model=hf_server.model, messages=user(prompt), response_format=model, **LIMIT)
    c = r.choices[0]
    assert c.finish_reason == "stop", c.message.content
    assert isinstance(c.message.parsed, model), c.message.content


def test_streamed_structured_output_validates(hf_server):
    schema = {"name": "palette", "schema": Palette.model_json_schema(), "strict": True}
    chunks = hf_server.client().chat.completions.create(
        model=hf_server.model, messages=user("Pick colours."), stream=True,
        response_format={"type": "json_schema", "json_schema": schema}, **LIMIT)
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert sum(1 for d in deltas if d) > 2, "streamed in pieces"
    Palette.model_validate_json("".join(deltas))


def test_json_object_mode(hf_server):
    r = hf_server.client().chat.completions.create(
        model=hf_server.model, messages=user("Give me a JSON object about cats."),
        response_format={"type": "json_object"}, **LIMIT)
    text = r.choices[0].message.content
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict), text
    else:
        assert text.startswith("{"), text


WEATHER = {"type": "function", "function": {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 10}},
                   "required": ["zone"]}}}


class WeatherArgs(BaseModel):
    city: str
    unit: str


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_forced_tool_calls_validate(hf_server, choice):
    r = hf_server.client().chat.completions.create(
        model=hf_server.model, messages=user("What is the weather in Paris?"),
        tools=[WEATHER, TIME], tool_choice=choice, **LIMIT)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", c.message
    call = c.message.tool_calls[0]
    assert call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    if isinstance(choice, dict):
        assert call.function.name == "get_time"
        assert isinstance(args["zone"], str)
    else:
        assert call.function.name in ("get_weather", "get_time")
        if call.function.name == "get_weather":
            WeatherArgs.model_validate(args)
            assert args["unit"] in ("celsius", "fahrenheit")


def test_vllm_guided_choice_and_regex(hf_server):
    client = hf_server.client()
    r = client.chat.completions.create(
        model=hf_server.model, messages=user("Is the sky blue?"),
        extra_body={"guided_choice": ["yes", "no", "maybe"]}, **LIMIT)
    assert r.choices[0].message.content in ("yes", "no", "maybe")
    r = client.chat.completions.create(
        model=hf_server.model, messages=user("Give me a date."),
        extra_body={"guided_regex": r"20[0-9]{2}-[01][0-9]-[0-3][0-9]"}, **LIMIT)
    assert re.fullmatch(r"20[0-9]{2}-[01][0-9]-[0-3][0-9]", r.choices[0].message.content)


def test_bad_constraints_are_400s(hf_server):
    http = hf_server.http()
    base = {"model": hf_server.model, "messages": user("hi"), "max_tokens": 4}
    r = http.post("/v1/chat/completions", json={**base, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frobnicate"}}}})
    assert_error(r, 400, contains="frobnicate")
    r = http.post("/v1/chat/completions", json={**base, "guided_regex": "(unclosed"})
    assert_error(r, 400, contains="regex")
