"""`POST /v1/embeddings` with the official `openai` client (`client.embeddings.create`) against
`switchyard api` on hf-candle serving all-MiniLM-L6-v2 (scripts/fetch-minilm.sh), compared with
sentence-transformers' vectors (tests/fixtures/minilm/embeddings.json, recorded by
scripts/fixtures/record_minilm_embeddings.py): float and base64, list input, token-id input,
and the refusals (`dimensions`, a chat model, chat on the embedding model)."""

from __future__ import annotations

import base64
import json
import math
import os
import struct
from pathlib import Path

import openai
import pytest

from conftest import CACHE, REPO, require, running
from helpers import assert_error, user

MINILM = Path(os.environ.get("SWITCHYARD_MINILM") or CACHE / "models" / "all-MiniLM-L6-v2")
FIXTURE = json.loads((REPO / "tests" / "fixtures" / "minilm" / "embeddings.json").read_text())
CASES = FIXTURE["cases"]
DIM = FIXTURE["dimension"]


def cosine(a, b) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def assert_close(got, case) -> None:
    want = case["embedding"]
    assert len(got) == len(want) == DIM
    c = cosine(got, want)
    assert c >= 1 - 1e-4, (c, case["text"])
    assert max(abs(x - y) for x, y in zip(got, want)) < 1e-4, case["text"]


@pytest.fixture(scope="module")
def embed_server(tmp_path_factory, hf_plugin):
    """all-MiniLM-L6-v2 (a sentence-transformers folder) on hf-candle."""
    require(MINILM / "modules.json", "all-MiniLM-L6-v2 (scripts/fetch-minilm.sh)")
    cfg = f'sample_backend = "hf-candle"\n\n[model]\npath = "{MINILM}"\n'
    with running(tmp_path_factory.mktemp("embed"), cfg, ready_timeout=120) as s:
        yield s


def test_list_of_texts_as_floats(embed_server):
    r = embed_server.client().embeddings.create(
        model=embed_server.model, input=[c["text"] for c in CASES], encoding_format="float")
    assert r.object == "list"
    assert r.model == embed_server.model
    assert [d.index for d in r.data] == list(range(len(CASES)))
    assert all(d.object == "embedding" for d in r.data)
    for d, case in zip(r.data, CASES):
        assert_close(d.embedding, case)
    # Text inputs' token counts stay in the backend: the server counts only token-id inputs.
    assert r.usage.prompt_tokens == r.usage.total_tokens == 0


def test_base64_is_the_same_vector(embed_server):
    case = CASES[1]
    with embed_server.http() as http:
        raw = http.post("/v1/embeddings", json={
            "model": embed_server.model, "input": case["text"], "encoding_format": "base64"})
        floats = http.post("/v1/embeddings", json={
            "model": embed_server.model, "input": case["text"]})
    assert raw.status_code == 200, raw.text
    b = base64.b64decode(raw.json()["data"][0]["embedding"])
    assert len(b) == 4 * DIM
    decoded = list(struct.unpack(f"<{DIM}f", b))  # little-endian f32, as OpenAI sends
    assert decoded == floats.json()["data"][0]["embedding"]
    assert_close(decoded, case)
    # The client's default is base64, decoded on its side.
    r = embed_server.client().embeddings.create(model=embed_server.model, input=case["text"])
    assert_close(r.data[0].embedding, case)


def test_token_id_inputs(embed_server):
    client = embed_server.client()
    ids = [c["ids"] for c in CASES[:3]]
    r = client.embeddings.create(model=embed_server.model, input=ids, encoding_format="float")
    for d, case in zip(r.data, CASES[:3]):
        assert_close(d.embedding, case)
    assert r.usage.prompt_tokens == sum(len(i) for i in ids)
    one = client.embeddings.create(model=embed_server.model, input=ids[0],
                                   encoding_format="float")
    assert len(one.data) == 1
    assert_close(one.data[0].embedding, CASES[0])
    assert one.usage.prompt_tokens == len(ids[0])


def test_dimensions_other_than_the_models_are_refused(embed_server):
    client = embed_server.client()
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=embed_server.model, input="x", dimensions=128)
    body = e.value.body
    assert body["param"] == "dimensions", body
    assert str(DIM) in body["message"], body
    ok = client.embeddings.create(model=embed_server.model, input="x", dimensions=DIM,
                                  user="someone")
    assert len(ok.data[0].embedding) == DIM


def test_bad_fields_are_named(embed_server):
    with embed_server.http() as http:
        body = {"model": embed_server.model, "input": "x"}
        assert_error(http.post("/v1/embeddings", json={**body, "encoding_format": "int8"}),
                     400, param="encoding_format")
        assert_error(http.post("/v1/embeddings", json={**body, "truncate": True}),
                     400, param="truncate")
        assert_error(http.post("/v1/embeddings", json={"model": embed_server.model,
                                                       "input": ["a", 1]}),
                     400, param="input[1]")
        assert_error(http.post("/v1/embeddings", json={"model": embed_server.model,
                                                       "input": [[101, 99999]]}),
                     400, contains="99999")


def test_chat_on_the_embedding_model_is_refused(embed_server):
    with embed_server.http() as http:
        r = http.post("/v1/chat/completions",
                      json={"model": embed_server.model, "messages": user("hi")})
    assert_error(r, 400)


def test_embeddings_on_a_chat_model_are_refused(echo_server):
    with echo_server.http() as http:
        r = http.post("/v1/embeddings", json={"model": echo_server.model, "input": "hi"})
    err = assert_error(r, 400, code="unsupported")
    assert "embeddings" in err["message"], err
