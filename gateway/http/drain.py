"""Graceful drain on SIGTERM, for a replica behind a load balancer:

    SIGTERM ──▶ readiness 503 at once; the listener stays open `server.drain_delay_s`, serving
                 (so that the load balancer sees the 503 and stops sending before anything is refused)
            ──▶ the listener closes; requests and streams in flight go on
            ──▶ `server.drain_timeout_s` later, a stream still open ends with an OpenAI-shaped
                 error event (503 `server_shutting_down`) and `[DONE]`, not a cut connection
            ──▶ the application shuts down (the bundled engine after the last request); exit 0.

SIGINT (Ctrl-C) skips the delay: the listener closes at once, in-flight work still finishes. A
second signal of either kind stops waiting.

uvicorn handles SIGTERM by closing the listener at once and, when it is done, raising the signal
again (the process then dies by it). `install` puts a handler of ours in front of uvicorn's: it
only records the signal; a task on the loop turns readiness 503, hands the signal on to uvicorn
after the delay, and ends the streams at the deadline. The signal uvicorn kept to raise again is
forgotten at shutdown, so the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

from backends.errors import DeadlineExceeded

log = logging.getLogger("gateway.drain")


class Draining(DeadlineExceeded):
    """A stream the gateway ended because it is shutting down (billed as a deadline cut)."""

    status = 503
    type = "api_error"
    code = "server_shutting_down"


class Drain:
    def __init__(self) -> None:
        self.signal: int | None = None  # set by the signal handler, acted on by the watcher
        self.started: float | None = None
        self.live: weakref.WeakSet[Any] = weakref.WeakSet()
        """The open streams' deadline guards (`streaming.StreamDeadline`): ended at the deadline."""
        self._previous: dict[int, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._signalled: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def active(self) -> bool:
        return self.started is not None

    def install(self, delay_s: float, timeout_s: float, on_start: Callable[[], None]) -> None:
        """Take SIGTERM and SIGINT (in the main thread; elsewhere, as in tests, nothing happens)."""
        self.signal = self.started = None
        try:
            previous: dict[int, Any] = {int(sig): signal.signal(sig, self._record) for sig in (signal.SIGTERM, signal.SIGINT)}
        except ValueError:  # not the main thread
            return
        self._previous = previous
        self._loop, self._signalled = asyncio.get_running_loop(), asyncio.Event()
        self._task = self._loop.create_task(self._watch(self._signalled, delay_s, timeout_s, on_start))

    def _record(self, sig: int, frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = sig
            if self._loop is not None and self._signalled is not None:  # wakes the loop through its self-pipe
                self._loop.call_soon_threadsafe(self._signalled.set)
            return
        server = self._server()  # a second signal: uvicorn stops waiting
        if server is not None:
            server.should_exit = server.force_exit = True

    async def _watch(self, signalled: asyncio.Event, delay_s: float, timeout_s: float, on_start: Callable[[], None]) -> None:
        await signalled.wait()
        sig = self.signal or signal.SIGTERM
        self.started = time.monotonic()
        on_start()
        delay = delay_s if sig == signal.SIGTERM else 0.0
        log.warning("draining: readiness is 503; the listener closes in %.1f s, open streams end %.1f s after that",
                    delay, timeout_s)  # fmt: skip
        await asyncio.sleep(delay)
        self._hand_on(sig, None)
        await asyncio.sleep(timeout_s)
        ending = list(self.live)
        if ending:
            log.warning("drain deadline: ending %d open stream(s) with an error event", len(ending))
        for guard in ending:
            guard.end(Draining("The gateway is shutting down; this stream was ended. Retry the request."))

    def _hand_on(self, sig: int, frame: FrameType | None) -> None:
        previous = self._previous.get(sig)
        if callable(previous):
            previous(sig, frame)

    def _server(self) -> Any:
        """uvicorn's Server, whose bound `handle_exit` was the handler before ours."""
        return getattr(self._previous.get(signal.SIGTERM), "__self__", None)

    def forget_signal(self) -> None:
        """At shutdown: the drain has run its course, so uvicorn need not raise the signal again;
        the handlers before ours are put back."""
        captured = getattr(self._server(), "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()
        if self._task is not None:
            self._task.cancel()
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


DRAIN = Drain()
"""One per worker process."""
