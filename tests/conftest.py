"""Fixtures with real parts: fake upstreams on loopback ports, and the gateway as a real
`gateway serve` process on another loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.fake_upstream import Behavior, FakeUpstream
from loadtest.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]


class GatewayProcess:
    """`gateway serve` on a free loopback port, with a config file the test may rewrite."""

    def __init__(self, config_path: Path, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.port = free_port()
        self.log = config_path.with_suffix(".log")
        cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(config_path), "--port", str(self.port)]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health/readiness", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"gateway did not become ready:\n{self.log.read_text()}")

    def write_config(self, text: str) -> None:
        self.config_path.write_text(textwrap.dedent(text))

    def logs(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def upstream_pool(
    name: str, upstream: FakeUpstream, *, model: str | None = None, extra: str = "", aliases: str = "[]", pool_extra: str = ""
) -> str:
    """YAML for a pool of one deployment at `upstream`."""
    model_line = f"\n        model: {model}" if model else ""
    return f"""
  {name}:
    aliases: {aliases}{pool_extra}
    deployments:
      - id: {name}-dep
        base_url: {upstream.base_url}{model_line}{extra}
"""


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(Behavior(chunks=5), name="primary").start_in_thread()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def faulty() -> Iterator[FakeUpstream]:
    """An upstream whose behaviour each test sets (and the `faulty` fixture resets)."""
    server = FakeUpstream(name="faulty").start_in_thread()
    yield server
    server.stop()


@pytest.fixture
def fault(faulty: FakeUpstream) -> Iterator[FakeUpstream]:
    faulty.behavior = Behavior()
    yield faulty
    faulty.behavior = Behavior()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream, faulty: FakeUpstream) -> Iterator[GatewayProcess]:
    """A gateway with a pool on the healthy upstream, one on the faulty one, and the echo pool."""
    path = tmp_path_factory.mktemp("gw") / "gateway.yaml"
    # The faulty pool tests how each fault is reported, attempt by attempt: no retries, no breaker.
    fast_timeouts = "\n        timeouts: {read: 1.0, total: 3.0}"
    single_attempt = "\n    retry: {max_attempts: 1}\n    breaker: {enabled: false}"
    price = "\n        price: {input_per_1m: 2.5, output_per_1m: 10}"
    path.write_text(
        "server: {max_body_bytes: 65536}\nreload: {watch: false}\nauth: {enabled: false}\npools:"
        + upstream_pool("main", upstream, model="upstream-model", extra=price, aliases="[gpt-4o, gpt-4o-mini]")
        + upstream_pool("faulty", faulty, extra=fast_timeouts, pool_extra=single_attempt)
        + "\n  echo:\n    deployments: [{id: echo-dep, backend: echo}]\n"
    )
    proc = GatewayProcess(path)
    yield proc
    proc.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()
