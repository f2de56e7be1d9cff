"""Real peer servers: llama.cpp's server (llama-cpp-python), serving the engine's tiny random
checkpoint converted to GGUF. Run with `scripts/test-peers`, which builds llama-cpp-python once and
installs it; without it these tests are skipped with that advice."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.polling import wait_until
from tests.helpers.ports import free_port

LLAMA_CPP_VERSION = "0.3.36"


def _require() -> None:
    try:
        import gguf  # noqa: F401
        import llama_cpp
    except ImportError:
        pytest.skip("llama-cpp-python[server] and gguf are not installed: run scripts/test-peers")
    if llama_cpp.__version__ != LLAMA_CPP_VERSION:
        pytest.skip(f"llama-cpp-python {llama_cpp.__version__} is installed; these tests know {LLAMA_CPP_VERSION}")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from backends.local_engine.tiny import build

    return build(tmp_path_factory.mktemp("tiny"), "tiny", seed=0)


@pytest.fixture(scope="session")
def ggufs(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    _require()
    from tests.helpers.gguf_export import export

    folder = tmp_path_factory.mktemp("gguf")
    return {kind: export(checkpoint, folder / f"tiny-{kind}.gguf", kind) for kind in ("f32", "f16", "q8_0")}


class LlamaServer:
    """`python -m llama_cpp.server` on a loopback port."""

    def __init__(self, model: Path, log: Path, n_ctx: int = 256, alias: str = "tiny-llama") -> None:
        self.port = free_port()
        self.log = log
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", str(n_ctx), "--model_alias", alias, "--n_threads", "1"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout=60, what="llama_cpp.server to answer")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.base_url}/models", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture(scope="module")
def llama(ggufs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = LlamaServer(ggufs["f32"], tmp_path_factory.mktemp("llama") / "server.log")
    yield server
    server.kill()
