"""`switchyard api` runs the backend in a worker process by default: a crash that no
`catch_unwind` can catch (the echo plugin's `!abort`) fails the requests in flight with 503, the
server keeps serving, and the next request gets a new worker."""

from __future__ import annotations

import threading

import httpx
import psutil

from conftest import echo_config, running
from helpers import user

LONG = " ".join(f"w{i}" for i in range(150))


def test_a_backend_crash_is_a_503_and_the_server_keeps_serving(tmp_path, echo_plugin):
    with running(tmp_path, echo_config(delay_ms=20)) as s:
        workers = [p for p in psutil.Process(s.pid).children() if "worker" in p.cmdline()]
        assert len(workers) == 1, [p.cmdline() for p in psutil.Process(s.pid).children()]
        streamed = {}
        started = threading.Event()

        def stream():
            with httpx.Client(base_url=s.base, timeout=60) as http:
                with http.stream("POST", "/v1/chat/completions",
                                 json={"messages": user(LONG), "stream": True}) as r:
                    lines = []
                    for line in r.iter_lines():
                        if line:
                            lines.append(line)
                        if len(lines) == 2:  # the role chunk and a first word
                            started.set()
                    streamed["lines"] = lines

        t = threading.Thread(target=stream)
        t.start()
        assert started.wait(timeout=30)
        with s.http() as http:
            r = http.post("/v1/chat/completions", json={"messages": user("!abort")})
            assert r.status_code == 503, r.text
            assert "worker" in r.json()["error"]["message"]
        t.join(timeout=60)
        # The stream that was running ends with an error event, not a hang.
        assert any("error" in line for line in streamed["lines"]), streamed["lines"][-3:]
        assert s.alive()
        r = s.client().chat.completions.create(model=s.model, messages=user("a b"))
        assert r.choices[0].message.content == "b a"
        assert httpx.get(s.base + "/health", timeout=10).status_code == 200
