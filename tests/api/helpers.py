"""Shared helpers: raw SSE reading and error-body checks."""

from __future__ import annotations

import json

import httpx


def sse_events(response: httpx.Response) -> list:
    """Reads a whole SSE body: a list of decoded JSON payloads, and the string "[DONE]"."""
    out = []
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:"):].strip()
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def stream_raw(http: httpx.Client, body: dict) -> tuple[int, list, dict]:
    """POSTs a streaming chat request; returns (status, events, headers)."""
    body = {**body, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, [r.json()], dict(r.headers)
        return r.status_code, sse_events(r), dict(r.headers)


def assert_error(r: httpx.Response, status: int, *, param=None, code=None, type_=None,
                 contains: str | None = None) -> dict:
    """Checks OpenAI's error shape `{"error": {"message", "type", "param", "code"}}`."""
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    if type_ is not None:
        assert err["type"] == type_, err
    if contains is not None:
        assert contains.lower() in err["message"].lower(), err
    return err


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def reverse_words(text: str) -> str:
    return " ".join(reversed(text.split()))
