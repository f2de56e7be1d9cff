"""What the gateway answers, before HTTP framing: a JSON `Reply` or a `StreamReply` of SSE frames.

Built by the pipeline, sent by the ASGI handlers (`gateway.http.asgi`); every failure becomes an
OpenAI-shaped error reply, with `Retry-After` on 429 and 503.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from gateway.errors import APIError

Headers = list[tuple[bytes, bytes]]
JSON = b"application/json"
SSE_HEADERS: Headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: Headers


@dataclass(slots=True)
class StreamReply:
    headers: Headers
    frames: AsyncIterator[bytes]
    """SSE frames, ending with one `[DONE]`."""
    close: Callable[[], Awaitable[None]]
    """Releases the upstream and the request's hold on its config. The server calls it once the
    frames are sent or abandoned (even if iteration never started); calling it again does nothing."""
    read_on_s: float = 0.0
    """When the client leaves: how long the frames are still read (not sent), so that the upstream's
    usage arrives and is charged."""
    cut: Callable[[], None] | None = None
    """Called when the reading on is given up: the request is then charged its reservation."""


def json_reply(body: bytes, headers: Sequence[tuple[bytes, bytes]], status: int = 200) -> Reply:
    return Reply(status, body, [(b"content-type", JSON), *headers])


def error_reply(exc: APIError, headers: Sequence[tuple[bytes, bytes]] = ()) -> Reply:
    out = list(headers)
    if exc.status in (429, 503) or exc.retry_after is not None:
        out.append((b"retry-after", str(max(1, round(exc.retry_after or 1))).encode()))
    return json_reply(exc.body(), out, exc.status)


def replayed(frames: list[bytes], headers: Headers) -> StreamReply:
    """A stream whose frames are all known already (a cache hit)."""
    return StreamReply([*SSE_HEADERS, *headers], _each(frames), _nothing_to_close)


def usd(cost: float) -> bytes:
    """A cost for `x-gateway-cost-usd`: plain decimal, no trailing zeros."""
    return (f"{cost:.10f}".rstrip("0").rstrip(".") or "0").encode()


async def _each(frames: list[bytes]) -> AsyncIterator[bytes]:
    for f in frames:
        yield f


async def _nothing_to_close() -> None:
    return None
