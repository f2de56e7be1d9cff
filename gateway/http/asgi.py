"""ASGI plumbing for the hot endpoints: reading a bounded body, sending a reply or a stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, TypeVar

from gateway.errors import InvalidRequest, PayloadTooLarge
from gateway.http.replies import Reply, StreamReply

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body; 413 past `limit` bytes, checked before reading when announced."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                announced = int(value)
            except ValueError:
                raise InvalidRequest("The Content-Length header is not a number.") from None
            if announced > limit:
                raise _too_large(limit)
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
        if not message.get("more_body"):
            return body


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than this gateway accepts ({limit} bytes).")


async def send_reply(send: Send, reply: Reply) -> None:
    headers = [*reply.headers, (b"content-length", str(len(reply.body)).encode())]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def send_stream(receive: Receive, send: Send, reply: StreamReply) -> None:
    """Relay SSE frames as they come. A client that goes away stops the upstream at once, or, for
    a reply that must learn its cost (`read_on_s`), after the upstream's usage has arrived (the
    frames are read on, not sent), or at the latest after `read_on_s` (then `cut`)."""
    gone = False

    async def pump() -> None:
        async for chunk in reply.frames:
            if not gone:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if not gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True

    tasks: list[asyncio.Future[None]] = []
    done: set[asyncio.Future[None]] = set()
    try:
        await send({"type": "http.response.start", "status": 200, "headers": reply.headers})
        tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(watch())]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if tasks[0] not in done and reply.read_on_s > 0:  # the client left: read on for the bill
            done, _ = await asyncio.wait(tasks[:1], timeout=reply.read_on_s)
            if tasks[0] not in done and reply.cut is not None:
                reply.cut()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        await reply.frames.aclose()  # type: ignore[attr-defined]
        await reply.close()  # for frames that never started, whose own cleanup never ran
    for task in done:
        if not task.cancelled() and (exc := task.exception()) is not None and not isinstance(exc, OSError):
            raise exc


WATCH_AFTER_S = 0.5
"""A request still running after this long starts watching for its client's disconnect (watching
costs a task per request, about 7% of throughput, so short requests are not watched)."""


async def until_disconnect(receive: Receive, work: Coroutine[Any, Any, T]) -> T | None:
    """Run `work` in this task; if the client disconnects first, cancel it (so the upstream
    request stops) and return None. A disconnect is noticed from `WATCH_AFTER_S` on."""
    task = asyncio.current_task()
    assert task is not None
    gone = False
    watcher: asyncio.Future[None] | None = None

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(watch())

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            return None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
