"""What hostile clients cost everyone else: a well-behaved client's latency while others hold slow
connections or send endless headers, against one gateway with the default `server:` bounds.

    python -m loadtest.bench_slow_clients
    python -m loadtest.bench_slow_clients --connections 20000 --sources 40 --hold 40
    python -m loadtest.bench_slow_clients --tree ../base       # the gateway from another checkout

The gateway runs pinned to core 0; the fake upstream, the attackers and the probe share core 1,
the attackers at the lowest priority (`nice 19`: on another machine they would not slow the probe).
Scenarios, one after the other against the same gateway process:

- `baseline`: the probe alone;
- `slow connections`: `--connections` attacker connections from `--sources` loopback addresses
  (127.0.2.x), split over two processes (a process may open 20,000 files here). Each sends a
  chat request's head and one byte of its 100-byte body, then nothing; a connection the gateway
  closes is opened again at once, for `--hold` seconds;
- `endless headers`: 40 connections (one address each) sending one header line of 25 MB.

The probe, meanwhile, from 127.0.0.1: a chat completion every 20 ms on one keep-alive connection,
and a `/health/liveness` on a new connection every 20 ms (as a load balancer checks), p50 / p99 /
failures. Beside them: the gateway's RSS and its open sockets at most, sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from loadtest.bench_gateway import GATEWAY_PORT, ROOT, UPSTREAM_PORT, cpu_seconds, start, wait_http
from loadtest.loadgen import chat_body
from loadtest.report import footer

CONFIG = f"""
reload: {{watch: false}}
auth: {{enabled: false}}
pools:
  fake:
    deployments: [{{id: fake-dep, base_url: "http://127.0.0.1:{UPSTREAM_PORT}/v1"}}]
"""
SLOW_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sockets(pid: int) -> int:
    count = 0
    for fd in os.scandir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(fd.path).startswith("socket:")
    return count


class _Hold(asyncio.Protocol):
    def __init__(self, closed: asyncio.Future[None]) -> None:
        self.closed = closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(SLOW_HEAD)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def attack(connections: int, sources: list[str], hold: float) -> None:
    """Keep `connections` slow connections open (reopening closed ones) for `hold` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + hold

    async def one(i: int) -> None:
        source = sources[i % len(sources)]
        while loop.time() < end:
            closed: asyncio.Future[None] = loop.create_future()
            try:
                transport, _ = await loop.create_connection(
                    lambda closed=closed: _Hold(closed), "127.0.0.1", GATEWAY_PORT, local_addr=(source, 0)
                )
            except OSError:
                await asyncio.sleep(0.05)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(closed), max(0.0, end - loop.time()))
            transport.close()

    await asyncio.gather(*(one(i) for i in range(connections)))


async def endless_headers(n: int, hold: float) -> None:
    async def one(i: int) -> None:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", GATEWAY_PORT, local_addr=(f"127.0.3.{i + 1}", 0))
        except OSError:
            return
        try:
            writer.write(b"GET /health/liveness HTTP/1.1\r\nx-endless: ")
            chunk = b"a" * (1 << 20)
            for _ in range(25):
                writer.write(chunk)
                await writer.drain()
            await asyncio.sleep(hold)
        except OSError:
            pass
        finally:
            writer.close()

    await asyncio.gather(*(one(i) for i in range(n)))


async def probe(duration: float) -> dict[str, list[float | None]]:
    """Latencies in seconds (None: failed) of the probe's two request kinds over `duration`."""
    out: dict[str, list[float | None]] = {"chat": [], "liveness": [], "direct": []}
    body = chat_body()
    base = f"http://127.0.0.1:{GATEWAY_PORT}"
    direct = f"http://127.0.0.1:{UPSTREAM_PORT}/v1"
    end = time.monotonic() + duration
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=2)) as kept:
        while time.monotonic() < end:
            began = time.perf_counter()
            try:
                r = await kept.post(f"{base}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
                out["chat"].append(time.perf_counter() - began if r.status_code == 200 else None)
            except httpx.HTTPError:
                out["chat"].append(None)
            began = time.perf_counter()
            try:
                async with asyncio.timeout(10):
                    reader, writer = await asyncio.open_connection("127.0.0.1", GATEWAY_PORT)
                    writer.write(b"GET /health/liveness HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                    answer = await reader.read()
                    writer.close()
                out["liveness"].append(time.perf_counter() - began if answer.startswith(b"HTTP/1.1 200") else None)
            except (OSError, TimeoutError):
                out["liveness"].append(None)
            began = time.perf_counter()  # the control: the same chat straight to the upstream, on core 1 too
            try:
                r = await kept.post(f"{direct}/chat/completions", content=body, headers={"content-type": "application/json"})
                out["direct"].append(time.perf_counter() - began if r.status_code == 200 else None)
            except httpx.HTTPError:
                out["direct"].append(None)
            await asyncio.sleep(0.02)
    return out


class Sampler:
    """The gateway's RSS and open sockets at most, sampled every 0.2 s in a thread, and its CPU use."""

    def __init__(self, pid: int) -> None:
        self.pid, self.rss, self.held = pid, 0.0, 0
        self._cpu, self._began = cpu_seconds(pid), time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.rss, self.held = max(self.rss, rss_mb(self.pid)), max(self.held, sockets(self.pid))

    def stop(self) -> tuple[float, int, float]:
        self._stop.set()
        self._thread.join()
        return self.rss, self.held, (cpu_seconds(self.pid) - self._cpu) / (time.monotonic() - self._began)


def row(name: str, lat: dict[str, list[float | None]], rss: float, held: int, cpu: float) -> str:
    cells = []
    for kind in ("chat", "liveness", "direct"):
        ok = sorted(x for x in lat[kind] if x is not None)
        failed = len(lat[kind]) - len(ok)
        p50 = statistics.median(ok) * 1e3 if ok else float("nan")
        p99 = ok[min(len(ok) - 1, int(len(ok) * 0.99))] * 1e3 if ok else float("nan")
        cells += [f"{p50:.2f}", f"{p99:.2f}", f"{failed} of {len(lat[kind])}"]
    return f"| {name} | " + " | ".join(cells) + f" | {rss:.0f} | {held:,} | {cpu:.0%} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=20_000)
    parser.add_argument("--sources", type=int, default=40, help="loopback addresses the attackers spread over")
    parser.add_argument("--hold", type=float, default=40.0, help="seconds the slow connections are held")
    parser.add_argument("--tree", help="run the gateway from another checkout (e.g. a git worktree of the code before)")
    parser.add_argument("--attacker", nargs=2, metavar=("N", "FIRST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sources = [f"127.0.2.{i + 1}" for i in range(args.sources)]
    if args.attacker:  # a child: its share of the slow connections
        n, first = int(args.attacker[0]), int(args.attacker[1])
        asyncio.run(attack(n, sources[first:] + sources[:first], args.hold))
        return

    os.sched_setaffinity(0, {1})
    folder = Path(tempfile.mkdtemp())
    (folder / "gateway.yaml").write_text(CONFIG)
    upstream = start([sys.executable, "-m", "tests.helpers.fake_upstream", "--port", str(UPSTREAM_PORT)], 1)
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(folder / "gateway.yaml"), "--port", str(GATEWAY_PORT)]
    tree = Path(args.tree).resolve() if args.tree else ROOT
    if "--admin-port" in (tree / "gateway" / "cli.py").read_text():  # an older checkout has no admin listener
        cmd += ["--admin-port", "0"]  # on a free port
    gateway = start([*cmd, "--log-level", "warning"], 0, cwd=tree)
    lines = [
        "| scenario | chat p50 ms | chat p99 ms | chat failed | liveness (new connection) p50 ms | liveness p99 ms |"
        " liveness failed | direct to upstream p50 ms | direct p99 ms | direct failed | gateway RSS MB at most |"
        " gateway sockets at most | gateway CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    try:
        wait_http(f"http://127.0.0.1:{GATEWAY_PORT}/health/liveness", gateway)
        asyncio.run(probe(2.0))  # warm-up
        window = min(20.0, args.hold - 10)

        sampler = Sampler(gateway.pid)
        lat = asyncio.run(probe(window))
        lines.append(row("baseline (probe alone)", lat, *sampler.stop()))

        half = args.connections // 2
        me = [sys.executable, "-m", "loadtest.bench_slow_clients", "--sources", str(args.sources), "--hold", str(args.hold)]
        attackers = [
            subprocess.Popen(["nice", "-n", "19", "taskset", "-c", "1", *me, "--attacker", str(n), str(first)], cwd=ROOT)
            for n, first in ((half, 0), (args.connections - half, args.sources // 2))
        ]
        time.sleep(8)  # let the connections pile up
        sampler = Sampler(gateway.pid)
        lat = asyncio.run(probe(window))
        measured = sampler.stop()
        for attacker in attackers:
            attacker.wait()
        lines.append(row(f"{args.connections:,} slow connections from {args.sources} addresses", lat, *measured))

        async def headers_scenario() -> dict[str, list[float | None]]:
            attack_task = asyncio.create_task(endless_headers(40, 10.0))
            await asyncio.sleep(1.0)
            result = await probe(8.0)
            await attack_task
            return result

        before = rss_mb(gateway.pid)
        sampler = Sampler(gateway.pid)
        lat = asyncio.run(headers_scenario())
        lines.append(row(f"40 x 25 MB header lines (RSS before {before:.0f} MB)", lat, *sampler.stop()))
    finally:
        gateway.send_signal(signal.SIGINT)  # SIGTERM would wait out server.drain_delay_s
        upstream.terminate()
    print("\n".join([*lines, "", *footer("loadtest.bench_slow_clients")]))


if __name__ == "__main__":
    main()
