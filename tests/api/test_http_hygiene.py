"""HTTP hygiene a hostile client tests: slow and idle connections, cross-site text/plain POSTs,
what /health tells a keyless caller, and streams cut by a shutdown."""

from __future__ import annotations

import json
import signal
import socket
import time

import httpx

from conftest import echo_config, running
from helpers import user

LONG = " ".join(f"w{i}" for i in range(300))


def test_a_text_plain_post_is_refused_so_no_page_can_post_cross_site(echo_server):
    body = json.dumps({"model": echo_server.model, "messages": user("a b")})
    with echo_server.http() as http:
        r = http.post("/v1/chat/completions", content=body,
                      headers={"Content-Type": "text/plain"})
        assert r.status_code == 415, r.text
        assert "application/json" in r.json()["error"]["message"]
        r = http.post("/v1/chat/completions", content=body)  # no content type at all
        assert r.status_code == 415, r.text
        r = http.post("/v1/chat/completions", content=body,
                      headers={"Content-Type": "application/json; charset=utf-8"})
        assert r.status_code == 200, r.text


def test_slow_and_idle_connections_are_closed_and_the_server_keeps_answering(tmp_path, echo_plugin):
    with running(tmp_path, echo_config(), args=("--header-timeout-s", "1",
                                                "--max-connections", "20")) as s:
        # Slow-loris: headers that never finish.
        slow = []
        for _ in range(10):
            c = socket.create_connection(("127.0.0.1", s.port))
            c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            slow.append(c)
        # More connections than the cap: the extra ones are closed, the server stays up.
        idle = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(30)]
        time.sleep(2.5)
        for c in slow:
            c.settimeout(5)
            try:
                data = c.recv(1024)
            except (ConnectionResetError, socket.timeout):
                data = b""
            # Closed (empty read) or answered with a timeout status, never left hanging.
            assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
            c.close()
        for c in idle:
            c.close()
        assert httpx.get(s.base + "/health", timeout=5).status_code == 200
        r = s.client().chat.completions.create(model=s.model, messages=user("a b"))
        assert r.choices[0].message.content == "b a"


def test_health_does_not_tell_a_keyless_caller_why(echo_server):
    r = httpx.get(echo_server.base + "/health", timeout=10)
    assert r.json() == {"status": "ok"}


def test_a_stream_cut_by_shutdown_ends_with_an_error_event(tmp_path, echo_plugin):
    with running(tmp_path, echo_config(delay_ms=50), args=("--shutdown-grace-s", "1")) as s:
        with httpx.Client(base_url=s.base, timeout=30) as http:
            with http.stream("POST", "/v1/chat/completions",
                             json={"messages": user(LONG), "stream": True}) as r:
                lines = r.iter_lines()
                assert next(lines).startswith("data:")
                s.proc.send_signal(signal.SIGTERM)
                rest = [line for line in lines if line.startswith("data:")]
        assert rest[-1] == "data: [DONE]", rest[-3:]
        err = json.loads(rest[-2][len("data: "):])
        assert "shutting down" in err["error"]["message"], err
        assert s.proc.wait(timeout=15) == 0
