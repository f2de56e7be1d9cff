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
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from backends.protocol import EventStream
from backends.sse import DONE_FRAME, frame
from backends.types import Endpoint, Usage
from gateway.access.tokens import for_deployment, over_window
from gateway.cache.assemble import Assembler
from gateway.errors import APIError, DeadlineExceeded
from gateway.http.drain import DRAIN
from gateway.routing.dispatcher import Call, Outcome
from gateway.routing.pools import Deployment
from gateway.routing.retry import Deadline
from gateway.telemetry.stats import Tally
from gateway.telemetry.tracing import Trace
from gateway.text import RESERVE_BYTES_PER_TOKEN, request_tokens

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
        if deployment.settings.context_window is not None:
            await over_window(deployment, endpoint, payload, model, prepare is not None)
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
    chunk even when the client did not (`hide_usage`: that chunk then stops here). Without one,
    the stream is charged by the gateway's own count: the whole request's tokens for the input
    (`gateway.access.tokens`) and one token per 3 bytes of the text it relayed (content,
    reasoning, tool-call arguments; from a deployment whose last stream did send usage, the text
    is not read as it passes, and the whole events' bytes are counted instead, an over-count);
    a stream cut before its usage arrived (the deadline, or a client that left while the
    upstream was still writing) is charged its `reserved` usage, when it has one."""

    def __init__(
        self,
        tally: Tally,
        started: float,
        deployment: Deployment,
        endpoint: Endpoint,
        payload: dict[str, Any],
        hide: bool,
        reserved: Usage | None = None,
    ) -> None:
        self.tally, self.started, self.deployment = tally, started, deployment
        self.endpoint, self.payload, self.hide_usage = endpoint, payload, hide
        self.reserved = reserved
        self.usage: Usage | None = None
        self.text_bytes = 0
        self.raw_bytes = 0
        self.read_text = not deployment.sends_usage  # decoding each chunk's text costs ~1 µs
        self.cut = False
        self.last: bytes | None = None
        self.counted: Usage | None = None
        """The gateway's own count, once a usage chunk was made from it."""

    def missing_usage_chunk(self) -> bytes | None:
        """The usage chunk a client asked for (`stream_options.include_usage`) and the upstream did
        not send (llama.cpp's server never does): made from the gateway's own count, which the
        request is then charged too. None when none is missing."""
        if self.hide_usage or self.usage is not None or self.last is None:
            return None
        try:
            envelope = msgspec.json.decode(self.last, type=_Envelope)
        except msgspec.DecodeError:
            return None
        self.counted = usage = self._estimate()
        body = {"id": envelope.id, "object": envelope.object, "created": envelope.created, "model": envelope.model}
        return msgspec.json.encode({**body, "choices": [], "usage": usage})

    def saw(self, data: bytes) -> bool:
        """Note one event; whether the client gets it."""
        self.last = data
        if self.tally.ttft is None:
            self.tally.ttft = time.perf_counter() - self.started
        if b'"usage"' in data:
            chunk = _usage_chunk(data)
            if chunk is not None and chunk.usage is not None:
                if chunk.usage.total_tokens or chunk.usage.prompt_tokens or chunk.usage.completion_tokens:
                    self.usage = chunk.usage  # not Ollama's zeros on every completions chunk before the last
                if self.hide_usage and not chunk.choices:
                    return False
        if self.read_text:
            self.text_bytes += _text_bytes(data)
        else:
            self.raw_bytes += len(data)
        return True

    def ended(self, error: APIError | None) -> Usage:
        if error is not None:
            self.tally.status = error.status
        if error is None:
            self.deployment.sends_usage = self.usage is not None
        if self.usage is not None:
            usage = self.usage
        elif self.reserved is not None and (self.cut or isinstance(error, DeadlineExceeded)):
            usage = self.reserved  # the upstream was cut off before it told what it used
        else:
            usage = self.counted or self._estimate()
        self.tally.count(usage, self.deployment)
        return usage

    def _estimate(self) -> Usage:
        prompt = request_tokens(self.endpoint, self.payload, for_deployment(self.deployment, str(self.payload.get("model", ""))))
        relayed = self.text_bytes if self.read_text else self.raw_bytes  # the whole events: an over-count
        completion = math.ceil(relayed / RESERVE_BYTES_PER_TOKEN)
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


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
            if (chunk := self._meter.missing_usage_chunk()) is not None:
                yield frame(chunk)
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

    def cut(self) -> None:
        """The client left and the upstream's usage did not come in time: charge the reservation."""
        self._meter.cut = True

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
        self._error: DeadlineExceeded | None = None
        self._timer = asyncio.get_running_loop().call_later(max(0.0, deadline.remaining()), self._expire)
        DRAIN.live.add(self)

    def _expire(self) -> None:
        self._expired = True
        if self._waiting and self._task is not None:
            self._task.cancel()

    def end(self, error: DeadlineExceeded) -> None:
        """End the stream now with `error` (the gateway is shutting down: `gateway.http.drain`)."""
        self._error = error
        self._timer.cancel()
        self._expire()

    async def next(self, iterator: AsyncIterator[bytes]) -> bytes | None:
        """The next upstream event, None at the end; `DeadlineExceeded` once the deadline passes."""
        if self._expired:
            raise self._error or self._deadline.error()
        self._waiting = True
        try:
            return await anext(iterator, None)
        except asyncio.CancelledError:
            if self._expired and self._task is not None and self._task.uncancel() == 0:
                raise (self._error or self._deadline.error()) from None
            raise
        finally:
            self._waiting = False

    def cancel(self) -> None:
        self._timer.cancel()
        DRAIN.live.discard(self)


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


class _Call(msgspec.Struct):
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    function: _Call | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    text: str | None = None


class _TextChunk(msgspec.Struct):
    choices: list[_Choice] = msgspec.field(default_factory=list)


_text_decoder = msgspec.json.Decoder(_TextChunk)


def _text_bytes(data: bytes) -> int:
    """The UTF-8 bytes of the text a chunk carries (0 for a chunk that is not JSON)."""
    try:
        chunk = _text_decoder.decode(data)
    except msgspec.DecodeError:
        return 0
    total = 0
    for choice in chunk.choices:
        if choice.text:
            total += len(choice.text.encode())
        delta = choice.delta
        if delta is None:
            continue
        for text in (delta.content, delta.reasoning_content):
            if text:
                total += len(text.encode())
        for call in delta.tool_calls or ():
            if call.function is not None and call.function.arguments:
                total += len(call.function.arguments.encode())
    return total


class _Envelope(msgspec.Struct):
    id: str = ""
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str = ""


class _UsageChunk(msgspec.Struct):
    usage: Usage | None = None
    choices: list[Any] = msgspec.field(default_factory=list)


def _usage_chunk(data: bytes) -> _UsageChunk | None:
    try:
        return msgspec.json.decode(data, type=_UsageChunk)
    except msgspec.DecodeError:
        return None
