"""Slots, queueing, disconnects and a bounded load test against real server processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time

import httpx
import openai
import psutil
import pytest

from conftest import echo_config, running
from helpers import assert_error, reverse_words, user

LONG = " ".join(f"w{i}" for i in range(200))  # 200 words: seconds of streaming at 20+ ms/word


def wait_idle(server, timeout=5.0) -> dict:
    """Polls /metrics until no request is running or queued; returns the last metrics."""
    deadline = time.monotonic() + timeout
    while True:
        m = server.metrics()
        if m["switchyard_running"] == 0 and m["switchyard_queue_depth"] == 0:
            return m
        if time.monotonic() > deadline:
            pytest.fail(f"the server is still busy after {timeout} s: {m}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def single_slot(tmp_path_factory, echo_plugin):
    """One slot, a small queue, 25 ms per word: a held slot is easy to see."""
    with running(tmp_path_factory.mktemp("single"), echo_config(delay_ms=25, max_concurrent=1),
                 args=("--max-queue", "2")) as s:
        yield s


def test_disconnect_mid_stream_frees_the_slot(single_slot):
    s = single_slot
    for _ in range(3):  # repeatedly: a leaked slot would show on the second round
        with s.http() as http:
            with http.stream("POST", "/v1/chat/completions",
                             json={"messages": user(LONG), "stream": True}) as r:
                assert r.status_code == 200
                lines = r.iter_lines()
                got = 0
                for line in lines:
                    if line.startswith("data:"):
                        got += 1
                    if got == 3:  # role chunk + 2 words, then hang up
                        break
            # The stream is closed here; ~5 s of generation are left if it was not cancelled.
        start = time.monotonic()
        r = s.client().chat.completions.create(model=s.model, messages=user("are you free"))
        elapsed = time.monotonic() - start
        assert r.choices[0].message.content == "free you are"
        assert elapsed < 1.5, f"the next request waited {elapsed:.2f} s: the slot was not freed"
        wait_idle(s)


def test_disconnect_with_the_openai_client_frees_the_slot(single_slot):
    s = single_slot
    stream = s.client().chat.completions.create(model=s.model, messages=user(LONG), stream=True)
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()
    start = time.monotonic()
    r = s.client().chat.completions.create(model=s.model, messages=user("b a"))
    assert r.choices[0].message.content == "a b"
    assert time.monotonic() - start < 1.5
    wait_idle(s)


def test_non_streaming_client_timeout_frees_the_slot(single_slot):
    """A non-streaming client that gives up also cancels its generation."""
    s = single_slot
    with pytest.raises(openai.APITimeoutError):
        s.client(timeout=0.5).chat.completions.create(model=s.model, messages=user(LONG))
    start = time.monotonic()
    r = s.client().chat.completions.create(model=s.model, messages=user("b a"))
    assert r.choices[0].message.content == "a b"
    elapsed = time.monotonic() - start
    assert elapsed < 1.5, f"the next request waited {elapsed:.2f} s: the slot was not freed"
    wait_idle(s)


def test_queue_full_is_429_and_queued_requests_are_served(single_slot):
    """max_concurrent 1 + max_queue 2: three requests are admitted, the fourth gets 429."""
    s = single_slot
    msgs = ["a b c", "d e f"]
    results: dict[int, object] = {}

    def run(i):
        try:
            results[i] = s.client().chat.completions.create(model=s.model,
                                                            messages=user(msgs[i]))
        except Exception as e:  # noqa: BLE001 - recorded and checked below
            results[i] = e

    with s.http() as http:
        # A long stream holds the only slot (its first chunk proves it started)...
        with http.stream("POST", "/v1/chat/completions",
                         json={"messages": user(LONG), "stream": True}) as held:
            assert held.status_code == 200
            lines = held.iter_lines()  # kept: closing this iterator would close the stream
            assert next(lines).startswith("data:")
            # ...two more wait in the queue...
            threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 20
            while s.metrics()["switchyard_queue_depth"] < 3:
                assert time.monotonic() < deadline, "three requests were never admitted"
                time.sleep(0.01)
            assert not results, results
            # ...and the next one is refused at once, in every form.
            r = http.post("/v1/chat/completions", json={"messages": user("x")})
            err = assert_error(r, 429, type_="rate_limit_error", code="overloaded")
            assert "busy" in err["message"]
            r = http.post("/v1/chat/completions", json={"messages": user("x"), "stream": True})
            assert_error(r, 429, code="overloaded")
            r = http.post("/v1/score/evaluation", json={"messages": ["x"]})
            assert_error(r, 429, code="overloaded")
            with pytest.raises(openai.RateLimitError):
                s.client().chat.completions.create(model=s.model, messages=user("x"))
        # Hanging up the long stream lets the queued requests through.
        for t in threads:
            t.join(timeout=20)
            assert not t.is_alive()
    for i in range(2):
        assert not isinstance(results[i], Exception), results[i]
        assert results[i].choices[0].message.content == reverse_words(msgs[i])
    wait_idle(s)


def test_sigterm_lets_in_flight_streams_finish(tmp_path, echo_plugin):
    with running(tmp_path, echo_config(delay_ms=20)) as s:
        text = " ".join(f"s{i}" for i in range(40))  # ~0.8 s
        with s.http() as http:
            with http.stream("POST", "/v1/chat/completions",
                             json={"messages": user(text), "stream": True}) as r:
                lines = r.iter_lines()
                assert next(lines).startswith("data:")
                s.proc.terminate()  # SIGTERM while the stream runs
                rest = [line for line in lines if line.startswith("data:")]
        assert rest[-1] == "data: [DONE]"
        content = "".join(json.loads(line[5:])["choices"][0]["delta"].get("content") or ""
                          for line in rest[:-1])
        assert content == reverse_words(text)
        assert s.proc.wait(timeout=10) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(s.base + "/health", timeout=2)


def test_sigterm_cuts_streams_after_the_grace_period(tmp_path, echo_plugin):
    with running(tmp_path, echo_config(delay_ms=25), args=("--shutdown-grace-s", "1")) as s:
        with s.http() as http:
            with http.stream("POST", "/v1/chat/completions",
                             json={"messages": user(LONG), "stream": True}) as r:
                lines = r.iter_lines()
                assert next(lines).startswith("data:")
                start = time.monotonic()
                s.proc.terminate()
                with contextlib.suppress(httpx.HTTPError):
                    for _ in lines:
                        pass
        assert s.proc.wait(timeout=10) == 0
        assert time.monotonic() - start < 4, "the server waited past its grace period"


# --- bounded load test ---------------------------------------------------------------------

CLIENTS = 32
ROUNDS = 5


@pytest.fixture(scope="module")
def load_server(tmp_path_factory, echo_plugin):
    """max_concurrent = 4, the default queue (16), 15 ms per word."""
    with running(tmp_path_factory.mktemp("load"), echo_config(delay_ms=15, max_concurrent=4)) \
            as s:
        yield s


async def one_client(client, model, i, rnd, abort_early):
    """One streaming client. Returns ("ok" | "429" | "aborted", detail)."""
    words = [f"r{rnd}c{i}"] + [f"w{j}" for j in range(11)]
    text = " ".join(words)
    try:
        stream = await client.chat.completions.create(
            model=model, messages=user(text), stream=True,
            stream_options={"include_usage": True})
    except openai.RateLimitError as e:
        assert e.status_code == 429
        assert e.body["code"] == "overloaded"
        return "429", None
    content, finish, usage, n = "", None, None, 0
    async for chunk in stream:
        n += 1
        if abort_early and n == 3:
            await stream.close()
            return "aborted", None
        if chunk.choices:
            content += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    # Nothing lost or mixed up: each client gets exactly its own reply.
    assert content == reverse_words(text), (i, content)
    assert finish == "stop"
    assert usage.completion_tokens == len(words)
    return "ok", None


async def load_round(server, rnd, abort_some):
    client = server.async_client(timeout=httpx.Timeout(30.0, connect=10.0))
    try:
        tasks = [
            asyncio.wait_for(
                one_client(client, server.model, i, rnd, abort_some and i % 4 == 3), 45)
            for i in range(CLIENTS)
        ]
        return await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await client.close()


def test_load_32_streaming_clients_on_4_slots(load_server):
    s = load_server
    proc = psutil.Process(s.pid)
    m0 = s.metrics()
    # Warm-up round: allocator pools and thread pools reach their working size.
    asyncio.run(load_round(s, 0, False))
    wait_idle(s)
    baseline = proc.memory_info().rss
    totals = {"ok": 0, "429": 0, "aborted": 0}
    start = time.monotonic()
    for rnd in range(1, ROUNDS + 1):
        results = asyncio.run(load_round(s, rnd, abort_some=rnd % 2 == 0))
        errors = [r for r in results if isinstance(r, BaseException)]
        # None hangs (wait_for/timeout would raise), none fails in another way, none is lost.
        assert not errors, errors[:3]
        assert len(results) == CLIENTS
        kinds = [r[0] for r in results]
        assert kinds.count("ok") >= 4, kinds
        for k in kinds:
            totals[k] += 1
        wait_idle(s)
    elapsed = time.monotonic() - start
    assert sum(totals.values()) == CLIENTS * ROUNDS
    assert totals["429"] > 0, f"the queue never overflowed: {totals}"
    m1 = s.metrics()
    # Every refusal was counted as such, every request was counted once.
    assert m1["switchyard_rejected_total"] - m0["switchyard_rejected_total"] >= totals["429"]
    assert m1["switchyard_requests_total"] - m0["switchyard_requests_total"] == \
        CLIENTS * (ROUNDS + 1)
    assert m1["switchyard_running"] == 0 and m1["switchyard_queue_depth"] == 0
    # Memory returns near the baseline (allow allocator slack, no per-request growth).
    time.sleep(0.5)
    rss = proc.memory_info().rss
    grown = rss - baseline
    print(f"load: {totals} in {elapsed:.1f} s; rss {baseline / 2**20:.1f} -> "
          f"{rss / 2**20:.1f} MiB")
    assert grown < 8 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over {ROUNDS} rounds"
    # And the server still answers at once.
    r = s.client().chat.completions.create(model=s.model, messages=user("still here"))
    assert r.choices[0].message.content == "here still"
    assert s.alive()
