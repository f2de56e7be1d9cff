"""A spying upstream for the hostile-client tests: it records every request (body and headers) and
answers the way a test scripts it, as a real server would be abused or would misbehave.

- a completion honours `max_tokens` / `max_completion_tokens` and otherwise generates
  `unbounded_tokens`, and bills that many (times `n`) in its usage;
- a stream may leave out the usage chunk, send its whole text in one chunk, or wait before the
  usage chunk (`usage_delay_s`) so that a client can leave between the last token and the bill;
- an error may quote the request's own headers (`{authorization}` in any field is replaced by the
  header the gateway sent).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any, cast

import httptools
import msgspec


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Script:
    unbounded_tokens: int = 200_000
    """Tokens generated for a request that sets no limit on its output."""
    prompt_tokens: int = 10
    latency_s: float = 0.0
    stream_usage: bool = True
    """Send the usage chunk when asked for it (a server like llama.cpp's never does)."""
    stream_text: str | None = None
    """The whole answer in one chunk (default: one short chunk per token, at most `max_chunks`)."""
    max_chunks: int = 4
    usage_delay_s: float = 0.0
    """Wait between the chunk with `finish_reason` and the usage chunk."""
    error: tuple[int, dict[str, Any]] | None = None
    """Answer this status and `{"error": object}`; string values may hold `{authorization}` or
    `{x-key}`: the request's header of that name."""
    stream_error: dict[str, Any] | None = None
    """A stream that sends one chunk, then this object as an in-band `{"error": ...}` event."""
    release: threading.Event | None = None


@dataclass
class SpyUpstream:
    script: Script = field(default_factory=Script)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    tls: ssl.SSLContext | None = None
    """Serve HTTPS with this context (as `localhost`)."""
    _loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}/v1" if self.tls else f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> SpyUpstream:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            server = self._loop.run_until_complete(self._loop.create_server(self._protocol, "127.0.0.1", 0, ssl=self.tls))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, name="spy-upstream", daemon=True).start()
        ready.wait(10)
        return self

    def _protocol(self) -> asyncio.Protocol:
        return _Conn(self)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    def output_tokens(self, body: dict[str, Any]) -> int:
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        per = int(asked) if asked else self.script.unbounded_tokens
        return per * max(int(body.get("n") or 1), int(body.get("best_of") or 1))


class _Conn(asyncio.Protocol):
    def __init__(self, spy: SpyUpstream) -> None:
        self.spy = spy
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url, self.headers, self.body = b"", {}, bytearray()  # type: tuple[bytes, dict[str, str], bytearray]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            cast(asyncio.Transport, self.transport).abort()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        seen = Seen(self.url.decode(), self.headers, msgspec.json.decode(bytes(self.body)) if self.body else {})
        self.url, self.headers, self.body = b"", {}, bytearray()
        self.spy.seen.append(seen)
        asyncio.get_running_loop().create_task(self.answer(seen))

    async def answer(self, seen: Seen) -> None:
        s = self.spy.script
        if s.release is not None:
            await asyncio.get_running_loop().run_in_executor(None, s.release.wait)
        if s.latency_s:
            await asyncio.sleep(s.latency_s)
        if s.error is not None:
            status, error = s.error
            return self.send(status, msgspec.json.encode({"error": _quoted(error, seen.headers)}))
        chat = seen.path.endswith("/chat/completions")
        out = self.spy.output_tokens(seen.body)
        usage = {"prompt_tokens": s.prompt_tokens, "completion_tokens": out, "total_tokens": s.prompt_tokens + out}
        if not seen.body.get("stream"):
            text = "tok " * min(out, 64)
            choice = {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": text}}
            if not chat:
                choice = {"index": 0, "finish_reason": "length", "text": text}
            self.send(
                200,
                msgspec.json.encode(
                    {"id": "spy-1", "object": "x", "created": 1, "model": "m", "choices": [choice], "usage": usage}
                ),
            )
            return
        await self.stream(seen, chat, out, usage)

    async def stream(self, seen: Seen, chat: bool, out: int, usage: dict[str, int]) -> None:
        s, t = self.spy.script, cast(asyncio.Transport, self.transport)
        t.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        texts = [s.stream_text] if s.stream_text is not None else ["tok "] * max(1, min(out, s.max_chunks))
        for i, text in enumerate(texts):
            finish = "length" if i == len(texts) - 1 else None
            delta = {"content": text} if chat else None
            choice = {"index": 0, "finish_reason": finish, **({"delta": delta} if chat else {"text": text})}
            t.write(_chunk({"id": "spy-1", "object": "chunk", "created": 1, "model": "m", "choices": [choice]}))
            if s.stream_error is not None:
                t.write(_chunk({"error": _quoted(s.stream_error, seen.headers)}) + _chunk_raw(b"data: [DONE]\n\n") + b"0\r\n\r\n")
                return
        if s.usage_delay_s:
            await asyncio.sleep(s.usage_delay_s)
        options = seen.body.get("stream_options") or {}
        if s.stream_usage and options.get("include_usage"):
            t.write(_chunk({"id": "spy-1", "object": "chunk", "created": 1, "model": "m", "choices": [], "usage": usage}))
        if t.is_closing():
            return
        t.write(_chunk_raw(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    def send(self, status: int, body: bytes) -> None:
        t = cast(asyncio.Transport, self.transport)
        head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        t.write(head.encode() + body)


def _quoted(value: Any, headers: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, header in headers.items():
            value = value.replace("{" + name + "}", header)
        return value
    if isinstance(value, dict):
        return {k: _quoted(v, headers) for k, v in value.items()}
    if isinstance(value, list):
        return [_quoted(v, headers) for v in value]
    return value


def _chunk(event: dict[str, Any]) -> bytes:
    return _chunk_raw(b"data: " + msgspec.json.encode(event) + b"\n\n")


def _chunk_raw(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)
