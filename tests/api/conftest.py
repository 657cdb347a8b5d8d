"""Fixtures for the HTTP API tests: start and stop real `switchyard api` processes.

Nothing is built here. The binaries come from `${CARGO_TARGET_DIR:-<repo>/target}/release/`
(or `SWITCHYARD_BIN`): `switchyard` plus the plugins next to it (`libcustom_backend.so` for the
`echo` backend, `libhf_candle.so` for the real-model tests). `scripts/test-api.sh` builds them.

Every server gets a free loopback port, its own config file and a log file; a server that fails
to come up fails the test with its log. Servers are shared per module to keep the suite fast.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SWITCHYARD_CACHE", Path.home() / ".cache" / "switchyard"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
BIN = Path(os.environ.get("SWITCHYARD_BIN", TARGET / "release" / "switchyard"))
PLUGIN_DIR = BIN.parent
SMOLLM2 = Path(
    os.environ.get("SWITCHYARD_MODEL", CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
)
SEQCLS = REPO / "tests" / "fixtures" / "hf" / "llama-seqcls"

# Environment variables the server reads; a developer's shell must not leak into the tests.
SERVER_ENV_DROP = ("API_KEY", "API_HOST", "API_PORT", "API_MODEL_NAME", "MAX_CONCURRENT")

# `SWITCHYARD_API_STRICT=1` (set by scripts/test-api.sh in CI) turns "plugin or model missing"
# skips into failures, so CI cannot pass by skipping the real-model tests.
STRICT = os.environ.get("SWITCHYARD_API_STRICT") == "1"


def lib_name(stem: str) -> str:
    if sys.platform == "darwin":
        return f"lib{stem}.dylib"
    if sys.platform == "win32":
        return f"{stem}.dll"
    return f"lib{stem}.so"


def require(path: Path, what: str) -> None:
    if path.exists():
        return
    msg = f"{what} not found at {path}; run scripts/test-api.sh (it builds it)"
    if STRICT:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One running `switchyard api` process."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path, api_key: str | None):
        self.proc = proc
        self.port = port
        self.log = log
        self.api_key = api_key
        self.base = f"http://127.0.0.1:{port}"
        self.model = ""  # filled from /v1/models once up

    @property
    def pid(self) -> int:
        return self.proc.pid

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _client_kw(self, kw: dict) -> dict:
        kw.setdefault("timeout", 60.0)
        kw.setdefault("max_retries", 0)
        kw.setdefault("api_key", self.api_key or "unused")
        kw.setdefault("base_url", self.base + "/v1")
        return kw

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(**self._client_kw(kw))

    def async_client(self, **kw) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(**self._client_kw(kw))

    def http(self, **kw) -> httpx.Client:
        kw.setdefault("timeout", 60.0)
        return httpx.Client(base_url=self.base, headers=self.headers(), **kw)

    def metrics(self) -> dict[str, float]:
        r = httpx.get(self.base + "/metrics", headers=self.headers(), timeout=10)
        r.raise_for_status()
        out = {}
        for line in r.text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_server(
    tmp: Path,
    config: str,
    *,
    api_key: str | None = None,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    ready_timeout: float = 60.0,
    config_name: str = "config.toml",
) -> Server:
    """Writes `config` (to `config_name`: a `.yaml` name makes it a LLaMA-Factory config),
    starts `switchyard api` on a free port and waits for `/health`."""
    require(BIN, "the switchyard binary")
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / config_name
    cfg.write_text(config)
    extra_env = env or {}
    env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV_DROP}
    env.setdefault("SWITCHYARD_LOG", "warn")
    env.update(extra_env)
    last_log = ""
    for attempt in range(3):  # a free port may be taken between probing and binding
        port = free_port()
        log = tmp / f"server-{port}.log"
        cmd = [str(BIN), "api", "--config", str(cfg), "--port", str(port), *args]
        if api_key is not None:
            cmd += ["--api-key", api_key]
        with open(log, "wb") as f:
            proc = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=tmp,
                start_new_session=True,
            )
        server = Server(proc, port, log, api_key or extra_env.get("API_KEY"))
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.base + "/health", timeout=2).status_code == 200:
                    r = httpx.get(server.base + "/v1/models", headers=server.headers(), timeout=5)
                    server.model = r.json()["data"][0]["id"]
                    return server
            time.sleep(0.05)
        server.stop()
        last_log = server.log_text()
        if "Address already in use" not in last_log and "in use" not in last_log:
            break
    pytest.fail(
        f"`switchyard api` did not become healthy ({' '.join(cmd)}):\n{last_log}",
        pytrace=False,
    )


@contextlib.contextmanager
def running(tmp: Path, config: str, **kw):
    server = start_server(tmp, config, **kw)
    try:
        yield server
    finally:
        server.stop()


def echo_config(delay_ms: int = 0, max_concurrent: int = 4, prefix: str = "") -> str:
    cfg = f'sample_backend = "echo"\nmax_concurrent = {max_concurrent}\n\n[backends.echo]\n'
    cfg += f"delay_ms = {delay_ms}\n"
    if prefix:
        cfg += f'prefix = "{prefix}"\n'
    return cfg


@pytest.fixture(scope="session")
def echo_plugin() -> Path:
    p = PLUGIN_DIR / lib_name("custom_backend")
    require(p, "the echo plugin (examples/custom-backend)")
    return p


@pytest.fixture(scope="session")
def hf_plugin() -> Path:
    p = PLUGIN_DIR / lib_name("hf_candle")
    require(p, "the hf-candle plugin")
    return p


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory, echo_plugin):
    """The echo backend, no delay, 4 slots, no API key."""
    with running(tmp_path_factory.mktemp("echo"), echo_config(delay_ms=1)) as s:
        yield s


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, echo_plugin):
    """The echo backend behind an API key."""
    with running(
        tmp_path_factory.mktemp("echo-key"), echo_config(), api_key="sk-test-123",
        args=("--body-limit-mb", "1"),
    ) as s:
        yield s


@pytest.fixture(scope="module")
def hf_server(tmp_path_factory, hf_plugin):
    """SmolLM2-135M-Instruct on hf-candle (one slot)."""
    require(SMOLLM2, "the SmolLM2 model (scripts/fetch-model.sh)")
    cfg = (
        'sample_backend = "hf-candle"\nmax_concurrent = 1\n\n'
        f'[model]\npath = "{SMOLLM2}"\n\n'
        "[generation]\ntemperature = 0.7\ntop_p = 0.9\nmax_new_tokens = 64\n"
    )
    with running(tmp_path_factory.mktemp("hf"), cfg, ready_timeout=120) as s:
        yield s


@pytest.fixture(scope="module")
def score_server(tmp_path_factory, hf_plugin):
    """A tiny random LlamaForSequenceClassification (reward model) on hf-candle."""
    require(SEQCLS / "model.safetensors", "the llama-seqcls fixture")
    cfg = f'sample_backend = "hf-candle"\n\n[model]\npath = "{SEQCLS}"\n'
    with running(tmp_path_factory.mktemp("score"), cfg, ready_timeout=120) as s:
        yield s
