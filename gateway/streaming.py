"""A streamed answer on its way from an upstream to the client.

open ─▶ wait for the upstream's first event (until then a failure is retried, or answered as
     │  an ordinary error: nothing has reached the client)
     ▼
relay ─▶ each event as it arrives ─▶ meter (usage, cost, time to first token)
      │                          └─▶ keeper (the cache's copy, stored once the stream ended well)
      ├─ upstream breaks, or the deadline passes ─▶ one OpenAI-shaped error event
      └─ exactly one `[DONE]`; then the upstream is released and the request finished
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from backends.protocol import EventStream
from backends.sse import DONE_FRAME, frame
from backends.types import Endpoint, Usage
from gateway.cache.assemble import Assembler
from gateway.errors import APIError, DeadlineExceeded
from gateway.routing.dispatcher import Call, Outcome
from gateway.routing.pools import Deployment
from gateway.routing.retry import Deadline
from gateway.telemetry.stats import Tally
from gateway.telemetry.tracing import Trace
from gateway.text import estimated_prompt_tokens

log = logging.getLogger("gateway.upstreams")


Prepare = Callable[[Deployment], None]
"""What changes the payload for an attempt on one deployment (its output limit)."""


@dataclass(slots=True)
class Opened:
    """An upstream stream that has sent its first event (None: it ended at once)."""

    events: EventStream
    iterator: AsyncIterator[bytes]
    first: bytes | None


def opener(endpoint: Endpoint, payload: dict[str, Any], model: str, prepare: Prepare | None = None) -> Call[Opened]:
    """One attempt at opening the stream on a deployment, under the request's deadline."""

    async def open_stream(deployment: Deployment, deadline: Deadline) -> Opened:
        payload["model"] = deployment.upstream_model(model)
        if prepare is not None:
            prepare(deployment)
        try:
            async with asyncio.timeout(deadline.remaining()):
                events = await deployment.backend.stream(endpoint, payload)
                iterator, first = await _first_event(events)
        except TimeoutError:
            raise deadline.error() from None
        return Opened(events, iterator, first)

    return open_stream


def ask_for_usage(payload: dict[str, Any]) -> bool:
    """Ask the upstream for the usage chunk; True when the client had not (its copy is then held back)."""
    options = payload.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        return False
    payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return True


@dataclass(slots=True)
class Keeper:
    """What stores a streamed answer in the cache once it has ended well."""

    assembler: Assembler
    store: Callable[[bytes], Awaitable[None]]


class Meter:
    """A stream's usage and cost, taken as its events pass. The gateway asks upstreams for the usage
    chunk even when the client did not (`hide_usage`: that chunk then stops here); an upstream
    that sends none has its tokens estimated: one per content chunk, and the prompt's JSON
    length / 4 for the input."""

    def __init__(
        self, tally: Tally, started: float, deployment: Deployment, endpoint: Endpoint, payload: dict[str, Any], hide: bool
    ) -> None:
        self.tally, self.started, self.deployment = tally, started, deployment
        self.endpoint, self.payload, self.hide_usage = endpoint, payload, hide
        self.usage: Usage | None = None
        self.chunks = 0

    def saw(self, data: bytes) -> bool:
        """Note one event; whether the client gets it."""
        if self.tally.ttft is None:
            self.tally.ttft = time.perf_counter() - self.started
        if b'"usage"' in data:
            chunk = _usage_chunk(data)
            if chunk is not None and chunk.usage is not None:
                self.usage = chunk.usage
                if self.hide_usage and not chunk.choices:
                    return False
        if b'"delta"' in data or b'"text"' in data:
            self.chunks += 1
        return True

    def ended(self, error: APIError | None) -> Usage:
        if error is not None:
            self.tally.status = error.status
        usage = self.usage or self._estimate()
        self.tally.count(usage, self.deployment)
        return usage

    def _estimate(self) -> Usage:
        prompt = estimated_prompt_tokens(self.endpoint, self.payload)
        return Usage(prompt_tokens=prompt, completion_tokens=self.chunks, total_tokens=prompt + self.chunks)


class Relay:
    """An opened upstream stream on its way to the client."""

    def __init__(
        self,
        opened: Outcome[Opened],
        deadline: Deadline,
        meter: Meter,
        keeper: Keeper | None,
        trace: Trace,
        finish: Callable[[], None],
    ) -> None:
        self._opened = opened.value
        self._attempt = trace.stream_attempt()
        self._lease = opened.lease
        self._deadline = deadline
        self._meter = meter
        self._keeper = keeper
        self._trace = trace
        self._finish = finish
        self._guard: StreamDeadline | None = None
        self._closed = False

    async def frames(self) -> AsyncIterator[bytes]:
        """Each upstream event as it arrives, an error event if the upstream breaks or the
        deadline passes, and exactly one `[DONE]`."""
        self._guard = guard = StreamDeadline(self._deadline)
        error: APIError | None = None
        try:
            if self._opened.first is not None and self._keep(self._opened.first):
                yield frame(self._opened.first)
            while (data := await guard.next(self._opened.iterator)) is not None:
                if self._keep(data):
                    yield frame(data)
            self._lease.succeed()
            if self._keeper is not None:
                with self._trace.step("cache store"):
                    await self._keeper.store(self._keeper.assembler.body())
        except DeadlineExceeded as exc:
            error = exc
            self._lease.abandon()
            yield frame(exc.body())
        except APIError as exc:
            error = exc
            self._lease.fail(exc)
            log.warning("stream from %s broke after its first event: %d %s: %s", self._lease.deployment.id, exc.status,
                        exc.code or exc.type, exc.message[:300])  # fmt: skip
            yield frame(exc.body())
        finally:
            usage = self._meter.ended(error)
            self._attempt.stream_ended(usage, error, estimated=self._meter.usage is None)
            await self.close()
        yield DONE_FRAME

    def _keep(self, data: bytes) -> bool:
        """Note the event (usage, the trace, the cache's copy); whether the client gets it."""
        if self._keeper is not None:
            try:
                self._keeper.assembler.feed(data)
            except msgspec.DecodeError:  # not JSON: pass it on, but do not cache this answer
                self._keeper = None
        self._attempt.chunk(data)
        return self._meter.saw(data)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._guard is not None:
            self._guard.cancel()
        self._lease.abandon()  # the client went away (a no-op when the outcome is already in)
        try:
            await _close(self._opened.iterator)
            await self._opened.events.aclose()
        finally:
            self._finish()


class StreamDeadline:
    """Ends a stream at the request's deadline with one timer for the whole stream (a timeout
    around each event would cost ~10 µs per event). The timer cancels the relay only while it is
    waiting on the upstream, never while it is handing a frame to the client."""

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._task = asyncio.current_task()
        self._waiting = self._expired = False
        self._timer = asyncio.get_running_loop().call_later(max(0.0, deadline.remaining()), self._expire)

    def _expire(self) -> None:
        self._expired = True
        if self._waiting and self._task is not None:
            self._task.cancel()

    async def next(self, iterator: AsyncIterator[bytes]) -> bytes | None:
        """The next upstream event, None at the end; `DeadlineExceeded` once the deadline passes."""
        if self._expired:
            raise self._deadline.error()
        self._waiting = True
        try:
            return await anext(iterator, None)
        except asyncio.CancelledError:
            if self._expired and self._task is not None and self._task.uncancel() == 0:
                raise self._deadline.error() from None
            raise
        finally:
            self._waiting = False

    def cancel(self) -> None:
        self._timer.cancel()


async def _first_event(events: EventStream) -> tuple[AsyncIterator[bytes], bytes | None]:
    iterator = aiter(events)
    try:
        first = await anext(iterator, None)
    except BaseException:
        await _close(iterator)
        await events.aclose()
        raise
    return iterator, first


async def _close(iterator: AsyncIterator[bytes]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


class _UsageChunk(msgspec.Struct):
    usage: Usage | None = None
    choices: list[Any] = msgspec.field(default_factory=list)


def _usage_chunk(data: bytes) -> _UsageChunk | None:
    try:
        return msgspec.json.decode(data, type=_UsageChunk)
    except msgspec.DecodeError:
        return None
