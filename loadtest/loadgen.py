"""A closed-loop HTTP/1.1 load generator for OpenAI-style endpoints (loopback only).

Each of `concurrency` workers holds one keep-alive connection and sends the next request as soon
as the previous answer is complete. It records latency per request and, for streams, the time to
the first SSE event. Raw asyncio + httptools keeps its own cost per request small.

    python -m loadtest.loadgen --url http://127.0.0.1:8000/v1/chat/completions -c 1 -n 2000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools
import msgspec

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Result:
    """Latencies in seconds of the successful requests, and the count of failed ones."""

    latencies: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    cpu_s: float = float("nan")
    """CPU seconds the server used for these requests, when the caller measured it (see `run`)."""

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float, values: list[float] | None = None) -> float:
        data = sorted(self.latencies if values is None else values)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, int(q / 100 * len(data)))]

    def summary(self) -> dict[str, float]:
        out = {
            "requests": float(len(self.latencies)),
            "errors": float(self.errors),
            "rps": self.rps,
            "p50_ms": self.pct(50) * 1e3,
            "p99_ms": self.pct(99) * 1e3,
            "mean_ms": statistics.fmean(self.latencies) * 1e3 if self.latencies else float("nan"),
        }
        if self.ttfb:
            out["ttft_p50_ms"] = self.pct(50, self.ttfb) * 1e3
            out["ttft_p99_ms"] = self.pct(99, self.ttfb) * 1e3
        return out


def chat_body(stream: bool = False, model: str = "fake", content: str = "Say hello.") -> bytes:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return msgspec.json.encode(body)


class _Client(asyncio.Protocol):
    """One keep-alive connection; `request()` sends and waits for the whole answer."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[int] | None = None
        self.first_body = 0.0
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("connection lost"))
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.done is not None and not self.done.done():
                self.done.set_exception(exc)

    def on_body(self, body: bytes) -> None:
        if not self.first_body:
            self.first_body = time.perf_counter()

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(self.parser.get_status_code())

    async def request(self, raw: bytes) -> tuple[int, float]:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.first_body = 0.0
        self.transport.write(raw)
        status = await self.done
        return status, self.first_body


KEY = "loadgen"
"""The client key the load generator sends (configs under load give it a key or turn auth off)."""


async def run(
    url: str,
    body: bytes,
    concurrency: int,
    requests: int,
    duration: float = 0.0,
    warmup: int = 0,
    cpu: Callable[[], float] | None = None,
    settle_s: float = 0.0,
) -> Result:
    """Send `requests` requests (or for `duration` seconds if set) with `concurrency` workers.
    With `cpu` (the server's CPU seconds so far), `cpu_s` is what the server used from the end of
    the warm-up to `settle_s` after the last answer (work it defers, such as exporting spans, counts)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if host not in LOOPBACK:
        raise SystemExit(f"refusing to load {host}: the load generator targets loopback only")
    raw = (
        f"POST {parts.path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {KEY}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    clients = []
    for _ in range(concurrency):
        _, client = await loop.create_connection(_Client, host, port)
        clients.append(client)
    for i in range(warmup):
        await clients[i % concurrency].request(raw)
    cpu_start = cpu() if cpu is not None else 0.0
    result, remaining = Result(), [requests]
    deadline = time.perf_counter() + duration if duration else float("inf")

    async def worker(client: _Client) -> None:
        while (duration and time.perf_counter() < deadline) or (not duration and remaining[0] > 0):
            remaining[0] -= 1
            start = time.perf_counter()
            try:
                status, first = await client.request(raw)
            except (ConnectionError, httptools.HttpParserError):
                result.errors += 1
                return
            end = time.perf_counter()
            if status != 200:
                result.errors += 1
                continue
            result.latencies.append(end - start)
            if first:
                result.ttfb.append(first - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    result.elapsed = time.perf_counter() - start
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    if cpu is not None:
        await asyncio.sleep(settle_s)
        result.cpu_s = cpu() - cpu_start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-n", "--requests", type=int, default=1000)
    parser.add_argument("-d", "--duration", type=float, default=0.0, help="seconds; overrides -n")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--model", default="fake")
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    body = chat_body(args.stream, args.model)
    result = _run(run(args.url, body, args.concurrency, args.requests, args.duration, args.warmup))
    for key, value in result.summary().items():
        print(f"{key:>12}: {value:.3f}")


def _run(coro: object) -> Result:
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type, no-any-return]
    return asyncio.run(coro)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
