"""The request pipeline: parse, resolve the model, call a deployment, answer.

It knows nothing of HTTP framing: it turns a request body into a `Reply` (JSON) or a
`StreamReply` (SSE frames), and every failure into an OpenAI-shaped error reply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec

from backends.errors import APIError
from backends.protocol import EventStream
from backends.sse import DONE_FRAME, frame
from backends.types import REQUEST_TYPES, Endpoint
from gateway.errors import InvalidRequest
from gateway.routing.pools import Deployment
from gateway.runtime import Runtime

Headers = list[tuple[bytes, bytes]]
JSON = b"application/json"


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: Headers


@dataclass(slots=True)
class StreamReply:
    headers: Headers
    frames: AsyncIterator[bytes]
    """SSE frames; closing it early releases the upstream."""


class Pipeline:
    def __init__(self, runtime_source: Any) -> None:
        self._source = runtime_source  # anything with a `.runtime` attribute (the Reloader)

    async def handle(self, endpoint: Endpoint, body: bytes) -> Reply | StreamReply:
        runtime = self._source.runtime.acquire()
        streaming = False
        try:
            payload, model, stream = parse(endpoint, body)
            pool = runtime.models.resolve(model)
            deployment = pool.pick()
            payload["model"] = deployment.upstream_model(model)
            if stream:
                reply = await self._stream(runtime, deployment, endpoint, payload)
                streaming = True
                return reply
            return await self._complete(deployment, endpoint, payload)
        except APIError as exc:
            return error_reply(exc, [(b"x-gateway-config-version", runtime.version.encode())])
        finally:
            if not streaming:
                runtime.release()

    async def _complete(self, deployment: Deployment, endpoint: Endpoint, payload: dict[str, Any]) -> Reply:
        deployment.in_flight += 1
        try:
            completion = await deployment.backend.complete(endpoint, payload)
        finally:
            deployment.in_flight -= 1
        headers = [(b"content-type", JSON), *deployment.headers]
        if completion.usage is not None:
            cost = deployment.settings.price.cost(completion.usage.prompt_tokens, completion.usage.completion_tokens)
            headers.append((b"x-gateway-cost-usd", _usd(cost)))
        return Reply(200, completion.body, headers)

    async def _stream(self, runtime: Runtime, deployment: Deployment, endpoint: Endpoint, payload: dict[str, Any]) -> StreamReply:
        """Open the upstream stream and wait for its first event before anything reaches the client,
        so that a failure up to here is still an ordinary error response."""
        deployment.in_flight += 1
        events: EventStream | None = None
        try:
            events = await deployment.backend.stream(endpoint, payload)
            iterator = aiter(events)
            first = await anext(iterator, None)
        except BaseException:
            deployment.in_flight -= 1
            if events is not None:
                await events.aclose()
            raise
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), *deployment.headers]
        return StreamReply(headers, _relay(runtime, deployment, events, iterator, first))


async def _relay(
    runtime: Runtime, deployment: Deployment, events: EventStream, iterator: AsyncIterator[bytes], first: bytes | None
) -> AsyncIterator[bytes]:
    """Frames for the client: each upstream event as it arrives, an error event if the upstream
    breaks, and exactly one `[DONE]`."""
    try:
        if first is not None:
            yield frame(first)
        async for data in iterator:
            yield frame(data)
    except APIError as exc:
        yield frame(exc.body())
    finally:
        deployment.in_flight -= 1
        await _close(iterator)
        await events.aclose()
        runtime.release()
    yield DONE_FRAME


async def _close(iterator: AsyncIterator[bytes]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def parse(endpoint: Endpoint, body: bytes) -> tuple[dict[str, Any], str, bool]:
    """The client's JSON object (kept whole, unknown fields included), its model and stream flag."""
    try:
        payload = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise InvalidRequest("We could not parse the JSON body of your request. The body must be valid JSON (UTF-8).") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        request = msgspec.convert(payload, REQUEST_TYPES[endpoint])
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        param = _param(message, where.rstrip("`"))
        raise InvalidRequest(f"Invalid request: {message}" + (f" (at '{param}')" if param else ""), param=param) from None
    return payload, getattr(request, "model"), bool(getattr(request, "stream", False))  # noqa: B009


def _param(message: str, where: str) -> str | None:
    """`messages[0].role` from msgspec's `$.messages[0]` and 'Object missing required field `role`'."""
    path = where.lstrip(".")
    if message.startswith("Object missing required field `"):
        missing = message.split("`")[1]
        path = f"{path}.{missing}" if path else missing
    return path or None


def error_reply(exc: APIError, headers: Headers) -> Reply:
    out = [(b"content-type", JSON), *headers]
    if exc.status in (429, 503) or exc.retry_after is not None:
        out.append((b"retry-after", str(max(1, round(exc.retry_after or 1))).encode()))
    return Reply(exc.status, exc.body(), out)


def _usd(cost: float) -> bytes:
    return (f"{cost:.10f}".rstrip("0").rstrip(".") or "0").encode()
