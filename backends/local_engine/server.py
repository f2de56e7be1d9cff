"""The engine's OpenAI-compatible HTTP server: /v1/chat/completions, /v1/completions, /v1/models,
/health and /metrics, as a plain ASGI app (run by uvicorn from `__main__`)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec

from backends.local_engine.async_engine import AsyncEngine
from backends.local_engine.engine import Delta, LLMEngine
from backends.local_engine.errors import EngineError, InvalidRequest
from backends.local_engine.metrics import EngineMetrics
from backends.local_engine.protocol import ChatRequest, CompletionRequest, Emitter, parse_chat, parse_completion

log = logging.getLogger("local_engine.server")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
JSON = [(b"content-type", b"application/json")]
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
MAX_BODY = 8 * 1024 * 1024


class EngineServer:
    """The ASGI app. `engine` is built before the server starts (loading weights takes a while)."""

    def __init__(self, engine: LLMEngine, served_name: str) -> None:
        self.served_name = served_name
        self.metrics = EngineMetrics(engine)
        self.engine = AsyncEngine(engine, on_step=self.metrics.step)
        self.tokenizer = engine.tokenizer
        self.max_model_len = engine.max_model_len
        self.defaults = engine.checkpoint.generation_defaults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._route(scope, receive, send)
        except EngineError as exc:
            await _json(send, exc.status, _error(exc))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.engine.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.engine.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"].rstrip("/")
        if method == "GET" and path == "/health":
            ok = self.engine.dead is None
            await _json(send, 200 if ok else 503, {"status": "ok" if ok else "dead", **self.engine.engine.stats()})
        elif method == "GET" and path == "/metrics":
            body, content_type = self.metrics.render()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type.encode())]})
            await send({"type": "http.response.body", "body": body})
        elif method == "GET" and path == "/v1/models":
            model = {
                "id": self.served_name,
                "object": "model",
                "created": 0,
                "owned_by": "local",
                "max_model_len": self.max_model_len,
            }
            await _json(send, 200, {"object": "list", "data": [model]})
        elif method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            body = await _read_body(receive)
            await self._generate(path.endswith("chat/completions"), body, receive, send)
        else:
            await _json(
                send,
                404,
                {
                    "error": {
                        "message": f"no route {method} {path}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "not_found",
                    }
                },
            )

    async def _generate(self, chat: bool, body: bytes, receive: Receive, send: Send) -> None:
        request = parse_chat(body, self.defaults) if chat else parse_completion(body, self.defaults)
        if request.model != self.served_name:
            message = f"The model `{request.model}` does not exist; this server serves `{self.served_name}`."
            await _json(
                send,
                404,
                {"error": {"message": message, "type": "invalid_request_error", "param": "model", "code": "model_not_found"}},
            )
            return
        prompt = self._prompt(request)
        params = request.sampling(len(prompt), self.max_model_len)
        request_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        emitter = Emitter(request_id, self.served_name, chat, int(time.time()), params.n, self.tokenizer, request.logprobs_wanted)
        deltas = self._timed(self.engine.generate(request_id, prompt, params))
        handler = (
            self._stream(emitter, deltas, request.include_usage, send) if request.stream else self._whole(emitter, deltas, send)
        )
        await _until_disconnect(handler, receive)

    def _prompt(self, request: ChatRequest | CompletionRequest) -> list[int]:
        if isinstance(request, ChatRequest):
            return self.tokenizer.encode_chat(request.messages, request.tools)
        if isinstance(request.prompt, str):
            return self.tokenizer.encode(request.prompt)
        return request.prompt

    async def _timed(self, deltas: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
        started = last = time.perf_counter()
        first = True
        async for delta in deltas:
            now = time.perf_counter()
            if first:
                self.metrics.ttft.observe(now - started)
                first = False
            else:
                self.metrics.itl.observe(now - last)
            last = now
            yield delta

    async def _whole(self, emitter: Emitter, deltas: AsyncIterator[Delta], send: Send) -> None:
        async for delta in deltas:
            emitter.add(delta)
        await _json(send, 200, emitter.whole())

    async def _stream(self, emitter: Emitter, deltas: AsyncIterator[Delta], include_usage: bool, send: Send) -> None:
        started = False
        try:
            async for delta in deltas:
                if not started:
                    await send({"type": "http.response.start", "status": 200, "headers": SSE})
                    started = True
                    for chunk in emitter.opening():
                        await _event(send, chunk)
                for chunk in emitter.chunks(delta):
                    await _event(send, chunk)
        except EngineError as exc:
            if not started:
                raise
            await _event(send, _error(exc))  # the status line is gone; say it in the stream, as OpenAI does
        else:
            if include_usage:
                await _event(send, emitter.usage_chunk())
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


async def _until_disconnect(handler: Awaitable[None], receive: Receive) -> None:
    """Run the handler; if the client goes away first, cancel it (which aborts the engine request)."""
    work = asyncio.ensure_future(handler)

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        work.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        await work
    except asyncio.CancelledError:
        if not watcher.done():
            raise
    finally:
        watcher.cancel()


async def _read_body(receive: Receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise InvalidRequest(f"request body over {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _error(exc: EngineError) -> dict[str, Any]:
    return {"error": {"message": str(exc), "type": exc.type, "param": getattr(exc, "param", None), "code": exc.code}}


async def _json(send: Send, status: int, payload: object) -> None:
    body = msgspec.json.encode(payload)
    await send({"type": "http.response.start", "status": status, "headers": JSON})
    await send({"type": "http.response.body", "body": body})


async def _event(send: Send, payload: object) -> None:
    await send({"type": "http.response.body", "body": b"data: " + msgspec.json.encode(payload) + b"\n\n", "more_body": True})
