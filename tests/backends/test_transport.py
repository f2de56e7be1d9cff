"""The pooled transport against a real loopback server."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from backends.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable
from backends.openai_http import HTTPBackend
from backends.transport import PooledTransport
from backends.types import Timeouts
from tests.helpers.fake_upstream import Behavior, FakeUpstream
from tests.helpers.ports import refused_port

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def server() -> FakeUpstream:
    up = FakeUpstream(Behavior(chunks=3), name="t").start_in_thread()
    yield up  # type: ignore[misc]
    up.stop()


async def test_connections_are_reused(server: FakeUpstream) -> None:
    transport = PooledTransport(max_connections=4)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(20):
            response = await client.post(f"{server.base_url}/chat/completions", json=BODY)
            assert response.json()["choices"][0]["message"]["content"] == "tok tok tok"
        assert server.open_connections == 1
        await asyncio.gather(*(client.post(f"{server.base_url}/chat/completions", json=BODY) for _ in range(20)))
        assert server.open_connections <= 4


async def test_a_connection_closed_by_the_peer_while_idle_is_replaced(server: FakeUpstream) -> None:
    backend = HTTPBackend("t", server.base_url)
    await backend.complete("chat/completions", BODY)
    server.behavior = Behavior(mode="disconnect")
    with pytest.raises(UpstreamProtocolError):
        await backend.complete("chat/completions", BODY)
    server.behavior = Behavior()
    assert (await backend.complete("chat/completions", BODY)).usage is not None
    await backend.aclose()


async def test_timeouts_and_refused_connections(server: FakeUpstream) -> None:
    server.behavior = Behavior(mode="hang")
    backend = HTTPBackend("t", server.base_url, timeouts=Timeouts(read=0.2))
    with pytest.raises(UpstreamTimeout):
        await backend.complete("chat/completions", BODY)
    await backend.aclose()
    dead = HTTPBackend("dead", f"http://127.0.0.1:{refused_port()}/v1")
    with pytest.raises(UpstreamUnavailable):
        await dead.complete("chat/completions", BODY)


async def test_streamed_body_arrives_in_pieces(server: FakeUpstream) -> None:
    server.behavior = Behavior(chunks=4, chunk_interval_s=0.05)
    backend = HTTPBackend("t", server.base_url)
    stream = await backend.stream("chat/completions", {**BODY, "stream": True})
    events = [e async for e in stream]
    await stream.aclose()
    assert len(events) == 4
    await backend.aclose()


def test_base_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        HTTPBackend("x", "ftp://nope")


def test_data_that_came_while_the_process_was_starved_is_not_a_read_timeout() -> None:
    """A gateway starved of CPU for longer than the read timeout wakes with the timer due and the
    upstream's next chunk waiting in the socket: uvloop runs due timers before it reads sockets, so
    the timer fires first. The chunk was on time, and the stream goes on."""
    import socket
    import time

    import uvloop

    from backends.transport import _Connection

    async def starved() -> bytes | None:
        ours, upstream = socket.socketpair()
        loop = asyncio.get_running_loop()
        conn = _Connection()
        await loop.create_connection(lambda: conn, sock=ours)
        upstream.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await conn.read_head(timeout=1)

        def late_but_delivered() -> None:
            upstream.sendall(b"5\r\nhello\r\n")  # the upstream answers in time...
            time.sleep(0.3)  # ...while the loop is blocked past the 0.1 s timeout

        loop.call_later(0.05, late_but_delivered)
        try:
            return await conn.read_chunk(timeout=0.1)
        finally:
            conn.close()
            upstream.close()

    assert uvloop.run(starved()) == b"hello"
