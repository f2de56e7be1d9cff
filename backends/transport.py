"""A lean pooled HTTP/1.1 transport for httpx, on asyncio protocols and httptools.

httpx's default transport (httpcore on anyio) spends about 1.5 ms of CPU per loopback request
on this project's benchmark machine, and an aiohttp-backed transport about 0.9 ms; this one spends
a fraction of that (loadtest/RESULTS.md has the figures), which is most of what a proxy does.
It keeps the httpx API: `httpx.AsyncClient(transport=PooledTransport(...))`, and raises httpx's
own exceptions (`ConnectError`, `ConnectTimeout`, `ReadTimeout`, `PoolTimeout`, `ReadError`,
`RemoteProtocolError`), so callers handle one family of errors whatever the transport.

Scope: HTTP/1.1 with keep-alive (plain or TLS), and HTTP/1.0 answers whose body ends with the
connection; no proxies, no HTTP/2. The body a request sends
is read in full before it is written (requests to model servers are small); response bodies stream.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from typing import cast

import httptools
import httpx

_HIGH_WATER = 256 * 1024  # bytes buffered from the peer before we stop reading the socket
_Origin = tuple[bytes, str, int]


class _Connection(asyncio.Protocol):
    """One keep-alive connection. It serves one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.data_ready = asyncio.Event()
        self.complete = False
        self.error: Exception | None = None
        self.idle_since = 0.0
        self.got_bytes = False
        self.keep_alive = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.complete and self.error is None:
            if exc is None and self.head_ready.done() and self._close_delimited():
                self.complete = True  # a body with no length ends where the connection does (MLX LM's HTTP/1.0 errors)
            else:
                self.error = httpx.RemoteProtocolError("upstream closed the connection before the response was complete")
        self._wake()

    def _close_delimited(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.error = httpx.RemoteProtocolError("unexpected protocol upgrade from upstream")
            self.close()
        except httptools.HttpParserError as exc:
            self.error = httpx.RemoteProtocolError(f"malformed HTTP response from upstream: {exc}")
            self.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # Asked here: llhttp forgets the message's flags once it is complete.
        self.keep_alive = self.parser.should_keep_alive()
        if not self.head_ready.done():
            self.head_ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self.data_ready.set()

    def on_message_complete(self) -> None:
        self.complete = True
        self.data_ready.set()

    # used by the pool
    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing() and self.error is None

    @property
    def reusable(self) -> bool:
        return self.alive and self.complete and self.keep_alive

    def reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers = []
        self.head_ready = asyncio.get_running_loop().create_future()
        self.chunks.clear()
        self.buffered = 0
        self.data_ready.clear()
        self.complete = False
        self.got_bytes = False
        self.keep_alive = False

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if not self.head_ready.done():
            self.head_ready.set_result(None)
        self.data_ready.set()

    async def read_head(self, timeout: float | None) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self.head_ready
        except TimeoutError:
            if not self.head_ready.done():  # else the headers came in time and only this task was late
                raise httpx.ReadTimeout("timed out waiting for the upstream's response headers") from None
        if self.error is not None and not self.headers:
            raise self.error

    async def read_chunk(self, timeout: float | None) -> bytes | None:
        """The next piece of body, or None at the end of the message."""
        while not self.chunks:
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            self.data_ready.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self.data_ready.wait()
            except TimeoutError:
                # A process starved of CPU for longer than the timeout runs the timer before it reads
                # what the upstream sent meanwhile (uvloop runs timers before polling sockets): data
                # that is here was on time, and the stream goes on.
                if not self.data_ready.is_set():
                    raise httpx.ReadTimeout("timed out waiting for data from the upstream") from None
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.buffered <= _HIGH_WATER // 4 and self.transport is not None:
            self.transport.resume_reading()
        return chunk


class _Body(httpx.AsyncByteStream):
    """A response body read off the connection; closing it hands the connection back."""

    def __init__(self, pool: PooledTransport, origin: _Origin, conn: _Connection, timeout: float | None) -> None:
        self.pool, self.origin, self.conn, self.timeout = pool, origin, conn, timeout
        self.released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self.conn.read_chunk(self.timeout)) is not None:
            yield chunk

    async def aclose(self) -> None:
        if not self.released:
            self.released = True
            self.pool.release(self.origin, self.conn)


class PooledTransport(httpx.AsyncBaseTransport):
    """Keep-alive connection pool with at most `max_connections` connections per origin."""

    def __init__(
        self,
        max_connections: int = 256,
        max_keepalive: int = 256,
        keepalive_expiry: float = 30.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.max_connections = max_connections
        self.max_keepalive = max_keepalive
        self.keepalive_expiry = keepalive_expiry
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None  # built on the first https connection (loading CAs is slow)
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._slots: dict[_Origin, asyncio.Semaphore] = {}
        self._open: set[_Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        origin = (request.url.raw_scheme, request.url.host, request.url.port or _default_port(request.url))
        head, body = await _serialize(request)
        for attempt in range(2):
            conn, reused = await self._acquire(origin, timeouts)
            try:
                conn.transport.write(head + body)  # type: ignore[union-attr]
                await conn.read_head(timeouts.get("read"))
            except BaseException as exc:
                self._discard(origin, conn)
                # A kept-alive connection the peer closed while idle: one fresh try, nothing was read.
                if reused and attempt == 0 and isinstance(exc, httpx.RemoteProtocolError) and not conn.got_bytes:
                    continue
                raise
            status = conn.parser.get_status_code()
            stream = _Body(self, origin, conn, timeouts.get("read"))
            return httpx.Response(status, headers=conn.headers, stream=stream, extensions={"http_version": b"HTTP/1.1"})
        raise AssertionError("unreachable")

    async def _acquire(self, origin: _Origin, timeouts: dict[str, float | None]) -> tuple[_Connection, bool]:
        slots = self._slots.get(origin)
        if slots is None:
            slots = self._slots[origin] = asyncio.Semaphore(self.max_connections)
        try:
            await asyncio.wait_for(slots.acquire(), timeouts.get("pool"))
        except TimeoutError:
            raise httpx.PoolTimeout("timed out waiting for a free upstream connection") from None
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.alive and now - conn.idle_since < self.keepalive_expiry:
                conn.reset()
                return conn, True
            self._forget(conn)
        try:
            return await self._connect(origin, timeouts.get("connect")), False
        except BaseException:
            slots.release()
            raise

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        tls = self._tls() if scheme == b"https" else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(_Connection, host, port, ssl=tls)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except OSError as exc:
            raise httpx.ConnectError(f"could not connect to {host}:{port}: {exc.strerror or exc}") from None
        self._open.add(conn)
        return conn

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            v = self._verify
            self._ssl = v if isinstance(v, ssl.SSLContext) else _ssl_context(v)
        return self._ssl

    def release(self, origin: _Origin, conn: _Connection) -> None:
        """Hand a connection back after its response was read, or drop it if it cannot serve again."""
        idle = self._idle.setdefault(origin, [])
        if conn.reusable and len(idle) < self.max_keepalive:
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            self._forget(conn)
        self._slots[origin].release()

    def _discard(self, origin: _Origin, conn: _Connection) -> None:
        self._forget(conn)
        self._slots[origin].release()

    def _forget(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    async def aclose(self) -> None:
        for conn in list(self._open):
            self._forget(conn)
        self._idle.clear()


async def _serialize(request: httpx.Request) -> tuple[bytes, bytes]:
    body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
    headers = request.headers.raw
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), request.url.raw_path)]
    lines += [b"%s: %s" % (k, v) for k, v in headers if k.lower() != b"transfer-encoding"]
    if body and b"content-length" not in (k.lower() for k, _ in headers):
        lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n", body


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


def _ssl_context(verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
