"""Several models behind one server (`[[models]]`): routing by `model` (names and aliases),
`/v1/models` with status, load on first use, `keep_alive` (per entry and per request), the
admin load/unload routes, a broken entry that reports its error while the others serve, and
metrics labelled by model. Echo entries with different prefixes stand in for different models."""

from __future__ import annotations

import concurrent.futures
import time

import httpx

from conftest import running
from helpers import user

CONFIG = """
keep_alive = "-1"

[[models]]
name = "alpha"
aliases = ["a"]
sample_backend = "echo"
preload = true
[models.backends.echo]
prefix = "A:"

[[models]]
name = "beta"
sample_backend = "echo"
keep_alive = 0
[models.backends.echo]
prefix = "B:"

[[models]]
name = "broken"
sample_backend = "no-such-backend"
"""


def statuses(s) -> dict[str, str]:
    with s.http() as http:
        return {m["id"]: m["status"] for m in http.get("/v1/models").json()["data"]}


def wait_status(s, name, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while statuses(s)[name] != want:
        assert time.monotonic() < deadline, f"{name} never became {want}: {statuses(s)}"
        time.sleep(0.05)


def say(s, model, text, **kw):
    r = s.client().chat.completions.create(model=model, messages=user(text), **kw)
    return r.model, r.choices[0].message.content


def test_models_route_load_on_use_and_unload_when_idle(tmp_path, echo_plugin):
    with running(tmp_path, CONFIG) as s:
        assert statuses(s) == {"alpha": "loaded", "beta": "unloaded", "broken": "unloaded"}
        assert say(s, "alpha", "x y") == ("alpha", "A: y x")
        assert say(s, "a", "x y") == ("alpha", "A: y x"), "aliases route to their model"
        assert say(s, "beta", "x y") == ("beta", "B: y x"), "loaded on first use"
        # keep_alive = 0: unloaded once the reply is done.
        wait_status(s, "beta", "unloaded")
        # Concurrent requests to both models, each answered by its own.
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            jobs = [pool.submit(say, s, ["alpha", "beta"][i % 2], f"m{i} n") for i in range(6)]
            for i, j in enumerate(jobs):
                model, text = j.result()
                assert text == ("A:" if model == "alpha" else "B:") + f" n m{i}", (model, text)
        # A per-request keep_alive overrides the entry's.
        assert say(s, "alpha", "p q", extra_body={"keep_alive": 0})[1] == "A: q p"
        wait_status(s, "alpha", "unloaded")


def test_unknown_and_broken_models_and_the_admin_routes(tmp_path, echo_plugin):
    with running(tmp_path, CONFIG, api_key="sk-admin") as s:
        with s.http() as http:
            r = http.post("/v1/chat/completions", json={"model": "gamma", "messages": user("x")})
            assert r.status_code == 404
            err = r.json()["error"]
            assert err["param"] == "model" and err["code"] == "model_not_found"
            for name in ("alpha", "beta", "broken"):
                assert name in err["message"]
            r = http.post("/v1/chat/completions", json={"model": "broken", "messages": user("x")})
            assert r.status_code == 503, r.text
            assert "no-such-backend" in r.json()["error"]["message"]
            listed = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
            assert listed["broken"]["status"] == "failed"
            assert "no-such-backend" in listed["broken"]["error"]
            assert listed["alpha"]["backend"] == "echo" and listed["alpha"]["aliases"] == ["a"]
            # The others keep serving.
            assert say(s, "beta", "u v")[1] == "B: v u"
            # Admin routes, behind the key.
            assert httpx.post(s.base + "/v1/models/beta/load", json={},
                              timeout=10).status_code == 401
            assert http.post("/v1/models/alpha/unload", json={}).json()["status"] == "unloaded"
            assert statuses(s)["alpha"] == "unloaded"
            assert http.post("/v1/models/alpha/load", json={}).json()["status"] == "loaded"
            assert statuses(s)["alpha"] == "loaded"
            assert http.post("/v1/models/gamma/load", json={}).status_code == 404
            # Metrics labelled by model.
            text = http.get("/metrics").text
            assert 'switchyard_model_requests_total{model="beta"}' in text
            assert 'switchyard_model_loaded{model="alpha"} 1' in text
