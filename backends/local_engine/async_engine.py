"""AsyncEngine: the LLMEngine's loop on its own thread, with an asyncio face.

Requests and aborts reach the loop through a command queue between steps; each step's deltas go back
to the event loop in one call. A failure inside a step kills the engine (every request gets an
`EngineDead` error and /health turns red) rather than leaving requests hanging.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from backends.local_engine.engine import Delta, LLMEngine
from backends.local_engine.errors import EngineDead
from backends.local_engine.sampling import SamplingParams

log = logging.getLogger("local_engine")


@dataclass(slots=True)
class _Waiter:
    queue: asyncio.Queue[Delta | BaseException] = field(default_factory=asyncio.Queue)
    remaining: int = 1  # choices not finished yet


class AsyncEngine:
    def __init__(self, engine: LLMEngine, on_step: Callable[[list[Delta], float], None] | None = None) -> None:
        self.engine = engine
        self._on_step = on_step
        self._commands: deque[Callable[[], None]] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, _Waiter] = {}
        self.dead: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=30)

    async def generate(self, request_id: str, prompt: list[int], params: SamplingParams) -> AsyncIterator[Delta]:
        """Deltas of every choice of one request until all have finished. Leaving early (a client gone)
        aborts the request and frees its blocks."""
        if self.dead is not None:
            raise EngineDead(f"the engine stopped: {self.dead}")
        waiter = _Waiter(remaining=params.n)
        accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = waiter
        self._submit(lambda: self.engine.add_request(request_id, prompt, params), accepted)
        finished = False
        try:
            await accepted
            while waiter.remaining:
                item = await waiter.queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item.finish_reason is not None:
                    waiter.remaining -= 1
                yield item
            finished = True
        finally:
            self._waiters.pop(request_id, None)
            if not finished:
                self._submit(lambda: self.engine.abort(request_id), None)

    def _submit(self, command: Callable[[], object], done: asyncio.Future[None] | None) -> None:
        loop = self._loop
        assert loop is not None, "start() first"

        def run() -> None:
            try:
                command()
            except Exception as exc:
                if done is not None:
                    loop.call_soon_threadsafe(_settle, done, exc)
            else:
                if done is not None:
                    loop.call_soon_threadsafe(_settle, done, None)

        self._commands.append(run)
        self._wake.set()

    def _run(self) -> None:
        try:
            while not self._stop:
                while self._commands:
                    self._commands.popleft()()
                if not self.engine.has_unfinished():
                    self._wake.wait(timeout=1.0)
                    self._wake.clear()
                    continue
                started = time.perf_counter()
                deltas = self.engine.step()
                if self._on_step is not None:
                    self._on_step(deltas, time.perf_counter() - started)
                if deltas:
                    assert self._loop is not None
                    self._loop.call_soon_threadsafe(self._deliver, deltas)
        except BaseException as exc:
            log.exception("the engine loop failed; every request in flight fails")
            self.dead = exc
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._fail_all, exc)

    def _deliver(self, deltas: list[Delta]) -> None:
        for delta in deltas:
            waiter = self._waiters.get(delta.request_id)
            if waiter is not None:
                waiter.queue.put_nowait(delta)

    def _fail_all(self, exc: BaseException) -> None:
        for waiter in self._waiters.values():
            waiter.queue.put_nowait(EngineDead(f"the engine stopped: {exc}"))


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
