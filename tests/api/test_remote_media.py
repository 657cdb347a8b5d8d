"""Remote `http(s)` media under `--allow-remote-media`: `switchyard api` fetches them itself
(host resolved once, every address checked, only a checked address connected to) and hands the
bytes to the backend, so hf-candle — which fetches nothing — answers for a remote image exactly as
for the same image sent as a data URL, and as Transformers' `generate()` did (the replies
recorded in tests/fixtures/hf/qwen2-vl/expected.json; see test_vision.py).

The images are served by a Python `http.server` on 127.0.0.1. Loopback is refused by design, so
the VLM server runs with the test-only `SWITCHYARD_MEDIA_ALLOW_LOOPBACK_FOR_TESTS=1`; a second
server without it shows loopback refused. Failures — a body over `--max-media-mb`, a 404, a host
slower than `--media-timeout-s`, a redirect to a refused address, a private address, an HTML
page — are each a 400 naming the host and the problem, as the official client sees them."""

from __future__ import annotations

import http.server
import threading
import time

import openai
import pytest

from conftest import echo_config, require, running
from test_vision import CASES, FOLDER, data_url, decode

IMAGES = FOLDER / "images"
HOOK = "SWITCHYARD_MEDIA_ALLOW_LOOPBACK_FOR_TESTS"


class Handler(http.server.BaseHTTPRequestHandler):
    """The fixture's images at /NAME.png, and the failure cases."""

    hits: list[str] = []

    def log_message(self, *args):  # quiet
        pass

    def send(self, status: int, body: bytes, ctype: str, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        Handler.hits.append(self.path)
        path = self.path.lstrip("/")
        if path.endswith(".png") and (IMAGES / path).is_file():
            self.send(200, (IMAGES / path).read_bytes(), "image/png")
        elif path == "big":
            # 2 MiB with no Content-Length (the body ends when the connection closes): the
            # server must stop reading at --max-media-mb 1 on its own.
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            chunk = b"\0" * (64 << 10)
            try:
                for _ in range(32):
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif path == "slow":
            time.sleep(4)
            self.send(200, (IMAGES / "square.png").read_bytes(), "image/png")
        elif path == "to-square":
            self.send(302, b"", "text/plain", {"Location": "/square.png"})
        elif path == "to-metadata":
            self.send(302, b"", "text/plain",
                      {"Location": "http://169.254.169.254/latest/meta-data/"})
        elif path == "page":
            self.send(200, b"<html>an image?</html>", "text/html; charset=utf-8")
        else:
            self.send(404, b"no such file", "text/plain")


@pytest.fixture(scope="module")
def images():
    """Base URL of the image server."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def vlm_remote(tmp_path_factory, hf_plugin):
    require(FOLDER / "model.safetensors", "the tiny Qwen2-VL fixture")
    cfg = f'sample_backend = "hf-candle"\nmax_concurrent = 2\n\n[model]\npath = "{FOLDER}"\n'
    with running(
        tmp_path_factory.mktemp("vlm-remote"), cfg, ready_timeout=120,
        args=("--allow-remote-media", "--max-media-mb", "1", "--media-timeout-s", "1.5"),
        env={HOOK: "1"},
    ) as s:
        yield s


def messages(case: dict, url_of) -> list[dict]:
    """The fixture's messages as OpenAI content parts, each image as `url_of(name)`."""
    names = iter(case["images"])
    out = []
    for m in case["messages"]:
        parts = []
        for p in m["content"]:
            if p["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": url_of(next(names))}})
            else:
                parts.append({"type": "text", "text": p["text"]})
        out.append({"role": m["role"], "content": parts})
    return out


def ask(server, msgs: list[dict], max_tokens: int = 8):
    return server.client().chat.completions.create(
        model=server.model, messages=msgs, temperature=0, max_tokens=max_tokens
    )


def refused(server, url: str) -> str:
    """The message of the 400 the official client gets for one remote image."""
    msgs = [{"role": "user", "content": [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": url}}]}]
    with pytest.raises(openai.BadRequestError) as e:
        ask(server, msgs, 2)
    assert e.value.status_code == 400
    return e.value.body["message"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_remote_image_gets_the_reply_of_the_same_image_as_a_data_url(vlm_remote, images, case):
    e = CASES[case]
    want = e["greedy_ids"]
    Handler.hits.clear()
    remote = ask(vlm_remote, messages(e, lambda n: f"{images}/{n}.png"), len(want))
    inline = ask(vlm_remote, messages(e, data_url), len(want))
    assert remote.choices[0].message.content == inline.choices[0].message.content
    assert remote.choices[0].message.content == decode(want), "Transformers' greedy reply"
    assert remote.usage.prompt_tokens == len(e["prompt_ids"])
    assert sorted(Handler.hits) == sorted(f"/{n}.png" for n in e["images"]), "each fetched once"


def test_a_redirect_to_a_checked_host_is_followed(vlm_remote, images):
    e = CASES["one_image"]
    got = ask(vlm_remote, messages(e, lambda n: f"{images}/to-square"), len(e["greedy_ids"]))
    assert got.choices[0].message.content == decode(e["greedy_ids"])


@pytest.mark.parametrize("path,needles", [
    ("big", ["more than 1048576 bytes", "--max-media-mb"]),
    ("missing.png", ["HTTP 404"]),
    ("slow", ["within 1.5 s", "--media-timeout-s"]),
    ("to-metadata", ["`169.254.169.254` (redirected from `127.0.0.1`)", "not a public address"]),
    ("page", ["`text/html`"]),
])
def test_fetch_failures_are_400s_naming_host_and_problem(vlm_remote, images, path, needles):
    started = time.monotonic()
    msg = refused(vlm_remote, f"{images}/{path}")
    for needle in needles:
        assert needle in msg, msg
    assert "127.0.0.1" in msg, msg
    assert time.monotonic() - started < 4, "the timeout (1.5 s) bounds every failure"


def test_the_test_hook_adds_loopback_only(vlm_remote):
    msg = refused(vlm_remote, "http://10.0.0.1/x.png")
    assert "`10.0.0.1` is (or resolves to) 10.0.0.1, which is not a public address" in msg, msg


def test_loopback_is_refused_without_the_test_hook(tmp_path_factory, echo_plugin, images):
    with running(
        tmp_path_factory.mktemp("echo-remote"), echo_config(),
        args=("--allow-remote-media",), env={HOOK: "0"},
    ) as s:
        Handler.hits.clear()
        for url in (f"{images}/square.png", f"http://localhost:{images.rsplit(':', 1)[1]}/x"):
            msg = refused(s, url)
            assert "which is not a public address; refused" in msg, msg
        assert Handler.hits == [], "refused before connecting"
