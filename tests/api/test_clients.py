"""Real client libraries that users point at an OpenAI-compatible server, against
`switchyard api` on hf-candle (SmolLM2 GGUF): `instructor` (pydantic models extracted through
tool calls and through JSON schema mode) and LangChain's `ChatOpenAI.with_structured_output`
(json_schema and function-calling methods). Each must return a validated object; the server
guarantees it by constrained decoding."""

from __future__ import annotations

from typing import Literal

import instructor
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, ConfigDict, Field

QUESTION = "Extract: Marie Curie was a physicist, 66 years old."


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=24)
    job: Literal["physicist", "chemist", "writer", "other"]
    age: int = Field(ge=0, le=130)


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA])
def test_instructor_extracts_a_validated_model(hf_server, mode):
    client = instructor.from_openai(hf_server.client(), mode=mode)
    person = client.chat.completions.create(
        model=hf_server.model, response_model=Person, max_retries=0,
        messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=80)
    assert isinstance(person, Person)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output(hf_server, method):
    llm = ChatOpenAI(model=hf_server.model, base_url=hf_server.base + "/v1",
                     api_key=hf_server.api_key or "unused", temperature=0, max_tokens=80)
    person = llm.with_structured_output(Person, method=method).invoke(QUESTION)
    assert isinstance(person, Person)
