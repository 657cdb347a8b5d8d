"""Errors (status and body), API keys, /health, /metrics, /openapi.json, the score endpoint on a
backend without scores."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

from conftest import REPO, echo_config, running
from helpers import assert_error, user

OK = user("hello")


@pytest.mark.parametrize("body,param,needle", [
    ({"messages": []}, "messages", "empty"),
    ({}, "messages", "empty"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "wizard"),
    ({"messages": [{"content": "x"}]}, "messages[0].role", "role"),
    ({"messages": ["just a string"]}, "messages[0]", "object"),
    ({"messages": [{"role": "user", "content": ""}]}, "messages[0].content", "empty"),
    ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content", "string"),
    ({"messages": [{"role": "user", "content": [{"type": "hologram"}]}]},
     "messages[0].content", "hologram"),
    ({"messages": OK, "temperature": 2.5}, "temperature", "range"),
    ({"messages": OK, "temperature": -0.1}, "temperature", "range"),
    ({"messages": OK, "top_p": 1.5}, "top_p", "range"),
    ({"messages": OK, "top_p": 0}, "top_p", "greater than 0"),
    ({"messages": OK, "presence_penalty": 3}, "presence_penalty", "range"),
    ({"messages": OK, "frequency_penalty": -3}, "frequency_penalty", "range"),
    ({"messages": OK, "repetition_penalty": 0}, "repetition_penalty", "greater than 0"),
    ({"messages": OK, "n": 0}, "n", "allowed: 1 to 16"),
    ({"messages": OK, "n": 17}, "n", "allowed: 1 to 16"),
    ({"messages": OK, "max_tokens": 0}, "max_tokens", "1 or more"),
    ({"messages": OK, "stop": [""]}, "stop", "stop"),
    ({"messages": OK, "stop": [str(i) for i in range(17)]}, "stop", "at most 16"),
])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_bad_requests_are_400_before_any_stream(echo_server, body, param, needle, stream):
    body = {"model": echo_server.model, **body, "stream": stream}
    with echo_server.http() as http:
        r = http.post("/v1/chat/completions", json=body)
    err = assert_error(r, 400, param=param, type_="invalid_request_error", contains=needle)
    assert err["param"] == param


@pytest.mark.parametrize("raw", [
    b"{not json",
    b"",
    b"[1, 2, 3]",
    b'{"messages": "hello"}',
    b'{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
    b'{"messages": [{"role": "user", "content": "x"}], "n": -1}',
    b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1e99}',
    b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
])
def test_malformed_json_is_400(echo_server, raw):
    with echo_server.http() as http:
        r = http.post("/v1/chat/completions", content=raw,
                      headers={"content-type": "application/json"})
    assert_error(r, 400, type_="invalid_request_error")


def test_bad_values_through_the_openai_client(echo_server):
    client = echo_server.client()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=echo_server.model, messages=[])
    assert e.value.status_code == 400
    assert e.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=echo_server.model, messages=OK, temperature=5)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=echo_server.model, messages=OK, stream=True,
                                       top_p=2)


def test_unknown_model_is_404(echo_server):
    with echo_server.http() as http:
        for stream in (False, True):
            r = http.post("/v1/chat/completions", json={"model": "gpt-9", "messages": OK,
                                                          "stream": stream})
            err = assert_error(r, 404, param="model", code="model_not_found")
            assert "gpt-9" in err["message"] and echo_server.model in err["message"]
        r = http.post("/v1/score/evaluation", json={"model": "gpt-9", "messages": ["x"]})
        assert_error(r, 404, code="model_not_found")
    with pytest.raises(openai.NotFoundError):
        echo_server.client().chat.completions.create(model="gpt-9", messages=OK)


def test_unknown_route_and_wrong_method(echo_server):
    with echo_server.http() as http:
        assert_error(http.get("/v1/nothing-here"), 404, code="not_found")
        assert_error(http.get("/v1/chat/completions"), 405, code="method_not_allowed")
        assert_error(http.post("/v1/models"), 405, code="method_not_allowed")


def test_score_on_a_backend_without_scores_is_a_clear_400(echo_server):
    with echo_server.http() as http:
        r = http.post("/v1/score/evaluation", json={"model": echo_server.model,
                                                      "messages": ["a text"]})
        err = assert_error(r, 400, code="unsupported")
        assert "score" in err["message"]
        r = http.post("/v1/score/evaluation", json={"model": echo_server.model, "messages": [
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]})
        assert_error(r, 400, code="unsupported")
        # Shape errors come first, named.
        assert_error(http.post("/v1/score/evaluation", json={"messages": []}), 400,
                     param="messages")
        assert_error(http.post("/v1/score/evaluation", json={"messages": [3]}), 400,
                     param="messages[0]")
        assert_error(http.post("/v1/score/evaluation", json={"messages": [[{"role": "x"}]]}),
                     400, param="messages[0]")
        assert_error(http.post("/v1/score/evaluation", content=b"{oops",
                               headers={"content-type": "application/json"}), 400)


# --- API keys ------------------------------------------------------------------------------

def test_without_a_configured_key_any_bearer_works(echo_server):
    for key in ("unused", "sk-anything"):
        r = httpx.post(echo_server.base + "/v1/chat/completions", json={"messages": OK},
                       headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert r.status_code == 200, r.text
    r = httpx.post(echo_server.base + "/v1/chat/completions", json={"messages": OK}, timeout=10)
    assert r.status_code == 200


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer sk-test-12"},
    {"Authorization": "Bearer sk-test-1234"},
    {"Authorization": "sk-test-123"},
    {"Authorization": "Basic sk-test-123"},
])
def test_bad_key_is_401_on_every_protected_route(keyed_server, headers):
    base = keyed_server.base
    for method, path, body in [
        ("POST", "/v1/chat/completions", {"messages": OK}),
        ("POST", "/v1/chat/completions", {"messages": OK, "stream": True}),
        ("POST", "/v1/score/evaluation", {"messages": ["x"]}),
        ("GET", "/v1/models", None),
        ("GET", "/v1/info", None),
        ("GET", "/metrics", None),
    ]:
        r = httpx.request(method, base + path, json=body, headers=headers, timeout=10)
        assert_error(r, 401, type_="authentication_error", code="invalid_api_key")


def test_bad_key_is_checked_before_the_body(keyed_server):
    r = httpx.post(keyed_server.base + "/v1/chat/completions", content=b"{garbage",
                   headers={"Authorization": "Bearer nope", "content-type": "application/json"},
                   timeout=10)
    assert_error(r, 401)


def test_right_key_works_and_health_is_open(keyed_server):
    client = keyed_server.client()
    r = client.chat.completions.create(model=keyed_server.model, messages=user("a b"))
    assert r.choices[0].message.content == "b a"
    assert [m.id for m in client.models.list().data] == [keyed_server.model]
    assert httpx.get(keyed_server.base + "/health", timeout=10).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        keyed_server.client(api_key="sk-wrong").chat.completions.create(
            model=keyed_server.model, messages=OK)


def test_body_limit_is_413_in_openai_shape(keyed_server):
    big = "word " * 300_000  # ~1.5 MB, over the server's 1 MiB limit
    with keyed_server.http() as http:
        r = http.post("/v1/chat/completions", json={"messages": user(big)})
        assert_error(r, 413)
        # Just under the limit is fine.
        r = http.post("/v1/chat/completions", json={"messages": user("word " * 150_000),
                                                      "max_tokens": 1})
        assert r.status_code == 200, r.text


# --- /health, /metrics, /openapi.json ------------------------------------------------------

def test_health(echo_server):
    r = httpx.get(echo_server.base + "/health", timeout=10)
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_info(echo_server):
    r = httpx.get(echo_server.base + "/v1/info", timeout=10)
    assert r.status_code == 200
    info = r.json()
    assert info["model"] == echo_server.model
    assert info["backend"] == "echo"
    assert info["max_concurrent"] == 4


def test_metrics_count_requests_tokens_and_errors(echo_server):
    before = echo_server.metrics()
    client = echo_server.client()
    client.chat.completions.create(model=echo_server.model, messages=user("a b c"))
    list(client.chat.completions.create(model=echo_server.model, messages=user("d e"),
                                        stream=True))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=echo_server.model, messages=[])
    after = echo_server.metrics()
    d = {k: after[k] - before.get(k, 0) for k in after}
    assert d["switchyard_requests_total"] == 3
    assert d["switchyard_errors_total"] == 1
    assert d["switchyard_prompt_tokens_total"] == 5
    assert d["switchyard_generated_tokens_total"] == 5
    assert d["switchyard_time_to_first_token_seconds_count"] == 1
    assert d["switchyard_request_duration_seconds_count"] == 2
    assert after["switchyard_queue_depth"] == 0
    assert after["switchyard_running"] == 0
    r = httpx.get(echo_server.base + "/metrics", timeout=10)
    assert r.headers["content-type"].startswith("text/plain")
    # Valid Prometheus text: every sample has HELP and TYPE lines.
    names = set(re.findall(r"^# TYPE (\S+) (counter|gauge|summary)$", r.text, re.M))
    assert {n for n, _ in names} >= {
        "switchyard_requests_total", "switchyard_errors_total", "switchyard_rejected_total",
        "switchyard_prompt_tokens_total", "switchyard_generated_tokens_total",
        "switchyard_queue_depth", "switchyard_time_to_first_token_seconds",
        "switchyard_request_duration_seconds"}


def server_routes() -> set[tuple[str, str]]:
    """(method, path) of every route the server registers, read from its source."""
    src = (REPO / "crates" / "switchyard-server" / "src" / "lib.rs").read_text()
    routes = set(re.findall(r'\.route\(\s*"([^"]+)",\s*(get|post|put|delete)\(', src))
    assert len(routes) >= 8, routes
    return {(m, p) for p, m in routes}


def test_openapi_lists_every_route_and_matches_the_server(echo_server):
    r = httpx.get(echo_server.base + "/openapi.json", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"]
    documented = {(m.lower(), p) for p, ops in doc["paths"].items() for m in ops
                  if m.lower() in ("get", "post", "put", "delete", "patch")}
    assert documented == server_routes()
    # Every documented route answers (not 404/405) with the documented method.
    with echo_server.http() as http:
        for method, path in sorted(documented):
            body = {"messages": user("x")} if path == "/v1/chat/completions" else \
                {"messages": ["x"]} if method == "post" else None
            # Path parameters: the one model this server has.
            resp = http.request(method.upper(), path.replace("{name}", echo_server.model),
                                json=body)
            assert resp.status_code not in (404, 405), (method, path, resp.status_code)
    # Every $ref resolves.
    text = json.dumps(doc)
    for ref in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
        node = doc
        for part in ref.split("/"):
            assert part in node, f"dangling $ref #/{ref}"
            node = node[part]
    # The chat endpoint documents its errors.
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert {"200", "400", "401", "404", "429"} <= set(chat["responses"])


def test_llamafactory_environment_variables(tmp_path, echo_plugin):
    """API_KEY, API_MODEL_NAME and MAX_CONCURRENT work as LLaMA-Factory users know them."""
    env = {"API_KEY": "sk-env", "API_MODEL_NAME": "my-model", "MAX_CONCURRENT": "3"}
    with running(tmp_path, echo_config(), env=env) as s:
        assert s.model == "my-model"
        info = httpx.get(s.base + "/v1/info", headers=s.headers(), timeout=10).json()
        assert info["max_concurrent"] == 3 and info["model"] == "my-model"
        r = s.client().chat.completions.create(model="my-model", messages=user("b a"))
        assert r.choices[0].message.content == "a b"
        assert r.model == "my-model"
        with pytest.raises(openai.NotFoundError):
            s.client().chat.completions.create(model="reverse-words", messages=user("x"))
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="sk-other").models.list()
        # The key is not printed where logs would show it.
        assert "sk-env" not in s.log_text()
