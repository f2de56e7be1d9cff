"""The bundled engine as a backend: a managed child process spoken to over loopback HTTP.

`LocalBackend` starts `python -m backends.local_engine serve` for its deployment, waits until
/health answers, restarts it (with growing back-off) whenever it exits, and forwards requests to it
through an `HTTPBackend`. While the engine is starting or restarting, a call waits for it (up to
`ready_wait_s`, or the caller's own time budget when shorter), then fails with a retryable
`UpstreamUnavailable`, so the gateway's retries and fallbacks take over. If another
process (another gateway worker) already serves the same model on the port, it is used as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field

import httpx

from backends.errors import UpstreamUnavailable
from backends.openai_http import HTTPBackend
from backends.protocol import Completion, EventStream
from backends.types import Endpoint, Timeouts

log = logging.getLogger("backends.local")


@dataclass(frozen=True, slots=True)
class EngineProcess:
    """How to run the engine: the command-line flags of `python -m backends.local_engine serve`."""

    model: str
    served_name: str
    host: str = "127.0.0.1"
    port: int = 8100
    flags: tuple[str, ...] = field(default=())
    startup_timeout_s: float = 300.0
    restart_backoff_s: float = 1.0
    ready_wait_s: float = 30.0

    def command(self) -> list[str]:
        return [sys.executable, "-m", "backends.local_engine", "serve", "--model", self.model, "--served-model-name",
                self.served_name, "--host", self.host, "--port", str(self.port), *self.flags]  # fmt: skip

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


class LocalBackend:
    endpoints: frozenset[Endpoint] = frozenset(("chat/completions", "completions"))
    """The bundled engine generates; it does not embed."""

    def __init__(self, name: str, process: EngineProcess, timeouts: Timeouts, max_connections: int) -> None:
        self.name = name
        self.process = process
        self.http = HTTPBackend(name, process.base_url + "/v1", timeouts=timeouts, max_connections=max_connections)
        self._ready = asyncio.Event()
        self.restarts = 0
        self.seconds_per_token: float | None = None
        """The engine's busy time per computed token so far (from /health), for GPU-hour pricing."""
        self.child: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._users = 1  # a config reload hands the same backend on; the last user stops the engine

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"engine-{self.name}")

    def share(self) -> LocalBackend:
        self._users += 1
        return self

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def complete(self, endpoint: Endpoint, payload: dict[str, object], timeout: float | None = None) -> Completion:
        started = time.monotonic()
        await self._wait_until_ready(timeout)
        left = None if timeout is None else max(0.001, timeout - (time.monotonic() - started))
        return await self.http.complete(endpoint, {**payload, "model": self.process.served_name}, left)

    async def stream(self, endpoint: Endpoint, payload: dict[str, object]) -> EventStream:
        await self._wait_until_ready(None)
        return await self.http.stream(endpoint, {**payload, "model": self.process.served_name})

    async def _wait_until_ready(self, timeout: float | None) -> None:
        self.start()
        if self._ready.is_set():
            return
        wait = self.process.ready_wait_s if timeout is None else min(timeout, self.process.ready_wait_s)
        try:
            await asyncio.wait_for(self._ready.wait(), wait)
        except TimeoutError:
            raise UpstreamUnavailable(f"the local engine of {self.name} is not ready (starting or restarting)") from None

    async def _supervise(self) -> None:
        backoff = self.process.restart_backoff_s
        async with httpx.AsyncClient(base_url=self.process.base_url, timeout=2.0) as probe:
            while True:
                if await self._healthy(probe):  # someone (another worker) already serves it
                    self._ready.set()
                    await self._watch_foreign(probe)
                    continue
                started = asyncio.get_running_loop().time()
                self.child = await asyncio.create_subprocess_exec(*self.process.command(), preexec_fn=_die_with_parent)
                log.info("local engine %s: started pid %d on %s", self.name, self.child.pid, self.process.base_url)
                if await self._wait_ready(probe, self.child):
                    self._ready.set()
                code = await self._watch_child(probe, self.child)
                self._ready.clear()
                ran = asyncio.get_running_loop().time() - started
                backoff = self.process.restart_backoff_s if ran > 60 else min(backoff * 2, 30.0)
                self.restarts += 1
                log.warning(
                    "local engine %s exited with code %s after %.0f s; restarting in %.1f s", self.name, code, ran, backoff
                )
                await asyncio.sleep(backoff)

    async def _healthy(self, probe: httpx.AsyncClient) -> bool:
        """Whether an engine serving this deployment's model answers on the port (anything else there does not count)."""
        try:
            health = await self._health(probe)
            models = await probe.get("/v1/models")
            served = {m.get("id") for m in models.json().get("data", [])} if models.status_code == 200 else set()
        except (httpx.HTTPError, ValueError, AttributeError, TypeError):
            return False
        return health == 200 and self.process.served_name in served

    async def _health(self, probe: httpx.AsyncClient) -> int:
        """/health's status; its counters update `seconds_per_token`."""
        response = await probe.get("/health")
        try:
            stats = response.json()
            busy, tokens = float(stats["busy_seconds"]), float(stats["computed_tokens"])
        except (ValueError, KeyError, TypeError):
            return response.status_code
        if tokens > 0:
            self.seconds_per_token = busy / tokens
        return response.status_code

    async def _wait_ready(self, probe: httpx.AsyncClient, child: asyncio.subprocess.Process) -> bool:
        deadline = asyncio.get_running_loop().time() + self.process.startup_timeout_s
        while child.returncode is None and asyncio.get_running_loop().time() < deadline:
            if await self._healthy(probe):
                log.info("local engine %s: ready", self.name)
                return True
            await asyncio.sleep(0.2)
        if child.returncode is None:
            log.error("local engine %s: not ready after %.0f s; killing it", self.name, self.process.startup_timeout_s)
            child.kill()
        return False

    async def _watch_child(self, probe: httpx.AsyncClient, child: asyncio.subprocess.Process) -> int:
        """Wait for the child to exit; kill it if its engine loop died (it answers /health with 503)."""
        while child.returncode is None:
            try:
                await asyncio.wait_for(child.wait(), 2.0)
            except TimeoutError:
                with contextlib.suppress(httpx.HTTPError):
                    if await self._health(probe) == 503:
                        log.error("local engine %s: its engine loop died; killing it", self.name)
                        self._ready.clear()
                        child.kill()
        return child.returncode

    async def _watch_foreign(self, probe: httpx.AsyncClient) -> None:
        while await self._healthy(probe):
            await asyncio.sleep(1.0)
        self._ready.clear()

    async def aclose(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        child = self.child
        if child is not None and child.returncode is None:
            child.terminate()
            try:
                await asyncio.wait_for(child.wait(), 10)
            except TimeoutError:
                child.kill()
                await child.wait()
        await self.http.aclose()


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, ask for SIGTERM when the gateway dies, so that a killed
    gateway leaves no engine behind holding the port and the memory."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
