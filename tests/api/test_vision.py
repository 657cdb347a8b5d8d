"""Images through the OpenAI API on hf-candle's vision-language models: the openai client sends
`image_url` content parts (data URLs) to `switchyard api` serving the tiny random Qwen2-VL of
tests/fixtures/hf/qwen2-vl, and the greedy replies are Transformers' `generate()` ids recorded by
scripts/fixtures/gen_tiny_qwen2vl.py (expected.json): one image, two images, a multi-turn chat
with an image in each user turn. Concurrent requests with different images get their solo replies
(no image is ever reused from another request), and a bad image is a 400 naming it. Replies are
compared as text: the recorded ids decoded by the fixture's tokenizer.json with the `tokenizers`
library (special tokens skipped, as the API does)."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from tokenizers import Tokenizer

from conftest import REPO, require, running
from helpers import assert_error

FOLDER = REPO / "tests" / "fixtures" / "hf" / "qwen2-vl"
EXPECTED = json.loads((FOLDER / "expected.json").read_text())
CASES = EXPECTED["cases"]


def data_url(name: str) -> str:
    raw = (FOLDER / "images" / f"{name}.png").read_bytes()
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def wire_messages(case: dict) -> list[dict]:
    """The fixture's messages as OpenAI content parts, images as data URLs in their places."""
    images = iter(case["images"])
    out = []
    for m in case["messages"]:
        parts = []
        for p in m["content"]:
            if p["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": data_url(next(images))}})
            else:
                parts.append({"type": "text", "text": p["text"]})
        out.append({"role": m["role"], "content": parts})
    return out


@pytest.fixture(scope="module")
def vlm_server(tmp_path_factory, hf_plugin):
    require(FOLDER / "model.safetensors", "the tiny Qwen2-VL fixture")
    cfg = (
        'sample_backend = "hf-candle"\nmax_concurrent = 4\n\n'
        f'[model]\npath = "{FOLDER}"\n'
    )
    with running(
        tmp_path_factory.mktemp("vlm"), cfg, ready_timeout=120,
        args=("--media-dir", str(FOLDER / "images")),
    ) as s:
        yield s


def decode(ids: list[int]) -> str:
    return Tokenizer.from_file(str(FOLDER / "tokenizer.json")).decode(ids, skip_special_tokens=True)


def ask(server, messages: list[dict], max_tokens: int):
    return server.client().chat.completions.create(
        model="qwen2-vl", messages=messages, temperature=0, max_tokens=max_tokens
    )


def test_info_declares_images(vlm_server):
    info = vlm_server.http().get("/v1/info").json()
    assert info["capabilities"]["images"] is True, info


@pytest.mark.parametrize("case", sorted(CASES))
def test_greedy_replies_equal_transformers(vlm_server, case):
    e = CASES[case]
    want = e["greedy_ids"]
    r = ask(vlm_server, wire_messages(e), len(want))
    assert r.usage.prompt_tokens == len(e["prompt_ids"]), "prompt with every image token"
    assert r.choices[0].message.content == decode(want)


def test_concurrent_requests_with_different_images_get_their_solo_replies(vlm_server):
    names = sorted(CASES) * 2
    solo = {n: ask(vlm_server, wire_messages(CASES[n]), 8).choices[0].message.content for n in CASES}
    with ThreadPoolExecutor(len(names)) as pool:
        got = list(pool.map(lambda n: ask(vlm_server, wire_messages(CASES[n]), 8), names))
    for n, r in zip(names, got):
        assert r.choices[0].message.content == solo[n], n


def test_a_local_file_under_the_media_dir_is_read(vlm_server):
    e = CASES["one_image"]
    messages = wire_messages(e)
    want = ask(vlm_server, messages, 8).choices[0].message.content
    for p in messages[0]["content"]:
        if p["type"] == "image_url":
            p["image_url"]["url"] = (FOLDER / "images" / f"{e['images'][0]}.png").as_uri()
    assert ask(vlm_server, messages, 8).choices[0].message.content == want


def test_a_bad_image_is_a_400_naming_it(vlm_server):
    bad = "data:image/png;base64," + base64.b64encode(b"not a png").decode()
    r = vlm_server.http().post("/v1/chat/completions", json={
        "model": "qwen2-vl",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what?"},
            {"type": "image_url", "image_url": {"url": bad}}]}],
        "max_tokens": 2,
    })
    assert_error(r, 400, contains="image 0")
