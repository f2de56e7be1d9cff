"""A fast fake OpenAI-compatible upstream for tests and benchmarks.

Raw asyncio + httptools, HTTP/1.1 keep-alive, so that it costs little CPU when it shares a core
with the load generator. Behaviour (latency, chunk count and pacing, faults) lives in a mutable
`Behavior` that a test may swap while the server runs.

    python -m tests.helpers.fake_upstream --port 9001 --latency-ms 0 --chunks 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import httptools
import msgspec

Mode = Literal["ok", "status", "garbage", "disconnect", "hang", "reset_mid_stream", "truncated_sse", "stream_error"]
"""`status`: answer `status` (with `retry_after`). `garbage`: 200 with a body that is not JSON.
`disconnect`: close the connection without answering. `hang`: never answer. `reset_mid_stream`:
abort the connection halfway through a stream. `truncated_sse`: end a stream without [DONE].
`stream_error`: 200, then an in-band `{"error": ...}` event instead of chunks. A refused connection
is `kill()`; slow first token is `latency_s` on a stream."""


@dataclass
class Behavior:
    """What the fake upstream does with each request."""

    mode: Mode = "ok"
    latency_s: float = 0.0
    """Delay before the response (non-stream) or before the first chunk (stream)."""
    chunks: int = 8
    """Content chunks in a streamed answer; also the completion token count."""
    chunk_interval_s: float = 0.0
    status: int = 500
    """HTTP status for mode `status`."""
    retry_after: str | None = None
    error_message: str | None = None
    """The message of error answers (default: "fake upstream status N")."""
    error_ratio: float = 0.0
    """In mode `ok`, the share of requests answered with `status` instead (drawn from a seeded RNG)."""
    headers: dict[str, str] = field(default_factory=dict)
    content: str | None = None
    """The answer's text in a non-streamed completion (default: `chunks` times "tok")."""
    release: threading.Event | None = None
    """When set, every answer waits for this event first (a test holds requests in flight with it)."""


class _Body(msgspec.Struct):
    model: str = "fake"
    stream: bool = False
    stream_options: dict[str, bool] | None = None
    input: object = None


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}
_ids = itertools.count()


class FakeUpstream:
    """One fake upstream server; `name` comes back as `system_fingerprint` and a header."""

    def __init__(self, behavior: Behavior | None = None, name: str = "fake") -> None:
        self.behavior = behavior or Behavior()
        self.name = name
        self.requests = 0
        self.open_connections = 0
        self.streams_in_progress = 0
        self.on_request: Callable[[dict[str, object]], None] | None = None
        """Called with each request's JSON body (tests use it to see what the gateway sent)."""
        self.last_headers: dict[str, str] = {}
        self.port = 0
        self.rng = random.Random(0)
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port or self.port, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    def kill(self) -> None:
        """Stop listening and abort every connection: from now on connections are refused."""
        self._in_loop(self._close())

    def revive(self) -> None:
        """Listen again on the same port after `kill()`."""
        self._in_loop(self.start())

    def _in_loop(self, work: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None, "start_in_thread() first"
        asyncio.run_coroutine_threadsafe(work, self._loop).result(5)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(_Connection.live.get(id(self), ())):
            conn.abort()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start_in_thread(self) -> FakeUpstream:
        """Serve from a daemon thread with its own event loop (tests)."""
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"fake-upstream-{self.name}", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        """Close the listener and every open connection (the upstream 'dies')."""
        if self._loop is None or self._server is None:
            return
        self.kill()
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)


class _Connection(asyncio.Protocol):
    live: dict[int, set[_Connection]] = {}

    def __init__(self, upstream: FakeUpstream) -> None:
        self.up = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.tasks: set[asyncio.Task[None]] = set()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.up.open_connections += 1
        self.live.setdefault(id(self.up), set()).add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.up.open_connections -= 1
        self.live.get(id(self.up), set()).discard(self)
        for task in self.tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        url, body, headers = self.url, bytes(self.body), self.headers
        self.url, self.body, self.headers = b"", bytearray(), {}
        self.up.requests += 1
        self.up.last_headers = headers
        task = asyncio.get_running_loop().create_task(self.respond(url, body))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # responses
    async def respond(self, url: bytes, raw: bytes) -> None:
        b = self.up.behavior
        try:
            req = msgspec.json.decode(raw, type=_Body) if raw else _Body()
        except msgspec.DecodeError:
            return self.send(400, _error("could not parse JSON body"))
        if self.up.on_request is not None:
            self.up.on_request(msgspec.json.decode(raw))
        if url.endswith(b"/models"):
            return self.send(200, b'{"object":"list","data":[{"id":"fake","object":"model"}]}')
        if b.mode == "hang":
            await asyncio.sleep(3600)
        if b.mode == "disconnect":
            return self.abort()
        if b.release is not None:
            await asyncio.get_running_loop().run_in_executor(None, b.release.wait)
        if b.latency_s:
            await asyncio.sleep(b.latency_s)
        if b.mode == "status" or (b.error_ratio and self.up.rng.random() < b.error_ratio):
            extra = {"retry-after": b.retry_after} if b.retry_after else {}
            return self.send(b.status, _error(b.error_message or f"fake upstream status {b.status}"), extra)
        if b.mode == "garbage":
            return self.send(200, b"<html>not json at all")
        if url.endswith(b"/embeddings"):
            return self.send(200, self.embeddings(req))
        kind = "chat" if url.endswith(b"/chat/completions") else "text"
        if req.stream:
            return await self.stream(req, kind)
        return self.send(200, self.completion(req, kind))

    def completion(self, req: _Body, kind: str) -> bytes:
        n = self.up.behavior.chunks
        text = self.up.behavior.content if self.up.behavior.content is not None else " ".join(["tok"] * n)
        choice: dict[str, object] = {"index": 0, "finish_reason": "stop", "logprobs": None}
        if kind == "chat":
            choice["message"] = {"role": "assistant", "content": text, "refusal": None}
        else:
            choice["text"] = text
        return msgspec.json.encode(
            {
                "id": f"cmpl-{next(_ids)}",
                "object": "chat.completion" if kind == "chat" else "text_completion",
                "created": int(time.time()),
                "model": req.model,
                "system_fingerprint": self.up.name,
                "choices": [choice],
                "usage": {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n},
            }
        )

    def embeddings(self, req: _Body) -> bytes:
        inputs = req.input if isinstance(req.input, list) else [req.input]
        data = [{"object": "embedding", "index": i, "embedding": [0.0, 1.0, 0.5]} for i in range(len(inputs))]
        usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
        return msgspec.json.encode({"object": "list", "data": data, "model": req.model, "usage": usage})

    async def stream(self, req: _Body, kind: str) -> None:
        self.up.streams_in_progress += 1
        try:
            await self._stream(req, kind)
        finally:
            self.up.streams_in_progress -= 1

    async def _stream(self, req: _Body, kind: str) -> None:
        b, t = self.up.behavior, self.transport
        assert t is not None
        head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
        t.write((head + f"x-fake-upstream: {self.up.name}\r\n\r\n").encode())
        cid, created = f"cmpl-{next(_ids)}", int(time.time())
        if b.mode == "stream_error":
            error = {"error": {"message": "fake upstream failed to generate", "type": "server_error", "code": None}}
            t.write(_chunk(b"data: " + msgspec.json.encode(error) + b"\n\n") + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            return
        for i in range(b.chunks):
            if i and b.chunk_interval_s:
                await asyncio.sleep(b.chunk_interval_s)
            if b.mode == "reset_mid_stream" and i == b.chunks // 2:
                return self.abort()
            finish = "stop" if i == b.chunks - 1 else None
            t.write(_chunk(_event(kind, cid, created, req.model, "tok ", finish, self.up.name)))
        if b.mode == "truncated_sse":
            t.write(b"0\r\n\r\n")
            return
        if req.stream_options and req.stream_options.get("include_usage"):
            usage = {"prompt_tokens": 10, "completion_tokens": b.chunks, "total_tokens": 10 + b.chunks}
            last = {"id": cid, "object": _object(kind), "created": created, "model": req.model, "choices": [], "usage": usage}
            t.write(_chunk(b"data: " + msgspec.json.encode(last) + b"\n\n"))
        t.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    def send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        headers = {**self.up.behavior.headers, **(extra or {}), "x-fake-upstream": self.up.name}
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        reason = _REASONS.get(status, "Error")
        head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        self.transport.write((head + lines + "\r\n").encode() + body)


def _object(kind: str) -> str:
    return "chat.completion.chunk" if kind == "chat" else "text_completion"


def _event(kind: str, cid: str, created: int, model: str, text: str, finish: str | None, fp: str) -> bytes:
    choice: dict[str, object] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if kind == "chat":
        choice["delta"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    event = {
        "id": cid,
        "object": _object(kind),
        "created": created,
        "model": model,
        "system_fingerprint": fp,
        "choices": [choice],
    }
    return b"data: " + msgspec.json.encode(event) + b"\n\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _error(message: str) -> bytes:
    return msgspec.json.encode({"error": {"message": message, "type": "fake_error", "param": None, "code": None}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--name", default="fake")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--chunk-interval-ms", type=float, default=0.0)
    args = parser.parse_args()
    behavior = Behavior(latency_s=args.latency_ms / 1e3, chunks=args.chunks, chunk_interval_s=args.chunk_interval_ms / 1e3)
    upstream = FakeUpstream(behavior, name=args.name)

    async def serve() -> None:
        await upstream.start(args.host, args.port)
        print(f"fake upstream {args.name} on http://{args.host}:{upstream.port}/v1", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:
            asyncio.run(serve())
        else:
            uvloop.run(serve())


if __name__ == "__main__":
    main()
