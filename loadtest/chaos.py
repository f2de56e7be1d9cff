"""Chaos scenarios against the high-availability example config, with figures.

Three fake upstreams (replicas A and B of pool `chat`, and `fallback`) run in this process so
that their request counts and stream states can be read as they change; the gateway runs as
`gateway serve` on config/examples/high-availability.yaml. Loopback only, bounded in count and time.

    python -m loadtest.chaos                  # every scenario, breaker cooldown 2 s
    python -m loadtest.chaos --only hard_down,all_down --cooldown 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from gateway.access.keys import hash_key
from loadtest.loadgen import KEY, Result, chat_body, run
from loadtest.report import footer
from tests.helpers.fake_upstream import Behavior, FakeUpstream

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "examples" / "high-availability.yaml"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
Row = tuple[str, str, str]  # scenario, figure, value
AUTH = {"authorization": f"Bearer {KEY}"}


class Setup:
    """Fresh upstreams and a fresh gateway for one scenario."""

    def __init__(self, cooldown: float, config: Path = EXAMPLE, **env: str) -> None:
        self.cooldown = cooldown
        self.a, self.b, self.fallback = (FakeUpstream(name=n).start_in_thread() for n in ("a", "b", "fallback"))
        with socket.socket() as s, socket.socket() as t:
            s.bind(("127.0.0.1", 0))
            t.bind(("127.0.0.1", 0))
            self.port, self.admin_port = s.getsockname()[1], t.getsockname()[1]
        env = {
            **os.environ,
            "UPSTREAM_A_BASE_URL": self.a.base_url,
            "UPSTREAM_B_BASE_URL": self.b.base_url,
            "UPSTREAM_FALLBACK_BASE_URL": self.fallback.base_url,
            "BREAKER_COOLDOWN_S": str(cooldown),
            "GATEWAY_APP_KEY_HASH": hash_key(KEY),
            **env,
        }
        cmd = [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(config),
            "--port",
            str(self.port),
            "--admin-port",
            str(self.admin_port),
            "--log-level",
            "error",
        ]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health/readiness", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise SystemExit("gateway did not start")

    def state(self, deployment: str) -> str:
        rows = httpx.get(f"{self.admin_url}/admin/breakers").json()["data"]
        return str(next(r["state"] for r in rows if r["deployment"] == deployment))

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # SIGTERM would wait out server.drain_delay_s
        self.proc.wait(10)
        for up in (self.a, self.b, self.fallback):
            up.stop()


async def load(url: str, n: int, concurrency: int, **extra: object) -> list[tuple[int, float, str]]:
    """(status, seconds, x-gateway-model) for `n` chat requests, `concurrency` at a time."""
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers=AUTH, timeout=30, limits=httpx.Limits(max_connections=concurrency)
    ) as client:

        async def one() -> tuple[int, float, str]:
            async with limit:
                start = time.perf_counter()
                r = await client.post("/v1/chat/completions", json={**CHAT, **extra})
                return r.status_code, time.perf_counter() - start, r.headers.get("x-gateway-model", "")

        return await asyncio.gather(*(one() for _ in range(n)))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def hard_down(cooldown: float) -> list[Row]:
    rows: list[Row] = []
    s = Setup(cooldown)
    try:
        s.a.kill()
        results = asyncio.run(load(s.url, 1000, 16))
        errors = sum(status != 200 for status, _, _ in results)
        rows.append(("A refuses connections, 1,000 requests at c=16", "client-visible errors", str(errors)))
    finally:
        s.close()
    s = Setup(cooldown)
    try:
        s.a.behavior = Behavior(mode="status", status=503)
        while s.state("replica-a") == "closed":
            asyncio.run(load(s.url, 1, 1))
        rows.append(("A answers 503", "failures A saw before its breaker opened", str(s.a.requests)))
        per_cooldown = []
        for _ in range(5):
            before, end = s.a.requests, time.monotonic() + cooldown
            while time.monotonic() < end:
                asyncio.run(load(s.url, 20, 4))
            per_cooldown.append(s.a.requests - before)
        rows.append(
            (
                "A answers 503, load at c=4 for 5 cooldowns",
                "requests A got per cooldown, max (half_open_probes: 1)",
                str(max(per_cooldown)),
            )
        )
    finally:
        s.close()
    return rows


async def attempts(url: str, n: int, concurrency: int) -> list[tuple[int, int]]:
    """(status, x-gateway-attempts) for `n` chat requests, `concurrency` at a time."""
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:

        async def one() -> tuple[int, int]:
            async with limit:
                r = await client.post("/v1/chat/completions", json=CHAT)
                return r.status_code, int(r.headers.get("x-gateway-attempts", 0))

        return await asyncio.gather(*(one() for _ in range(n)))


def dies_after_run(cooldown: float) -> list[Row]:
    """A serves half of 200 requests, then dies: failed attempts on it until its breaker opens,
    with the consecutive-failure rule (default 5) and with only the ratio rule (0), same run.
    Round robin (the default strategy), so that A keeps its share until its breaker opens."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "round-robin.yaml"
        config.write_text(EXAMPLE.read_text().replace("strategy: peak_ewma", "strategy: weighted_round_robin"))
        for streak in ("5", "0"):
            rows.append(_dies_after_run(config, max(cooldown, 60.0), streak))  # no probe within the run
    return rows


def _dies_after_run(config: Path, cooldown: float, streak: str) -> Row:
    s = Setup(cooldown, config, BREAKER_CONSECUTIVE_FAILURES=streak)
    try:
        asyncio.run(attempts(s.url, 200, 16))
        s.a.kill()
        results = asyncio.run(attempts(s.url, 300, 16))
    finally:
        s.close()
    failed = sum(n - 1 for _, n in results)
    errors = sum(status != 200 for status, _ in results)
    scenario = f"A dies after ~100 successes, 300 requests at c=16, consecutive_failures: {streak}"
    return scenario, "failed attempts on A / client-visible errors", f"{failed} / {errors}"


def errors_30(cooldown: float) -> list[Row]:
    s = Setup(cooldown)
    rows: list[Row] = []
    url, body = f"{s.url}/v1/chat/completions", chat_body(model="gpt-4o-mini")
    try:
        healthy = asyncio.run(run(url, body, 8, 3000, warmup=200))
        for label, faulty in [("A 30% 5xx", (s.a,)), ("A and B 30% 5xx", (s.a, s.b))]:
            for up in faulty:
                up.behavior = Behavior(error_ratio=0.3, status=500)
            r = asyncio.run(run(url, body, 8, 3000))
            scenario = f"{label}, 3,000 requests at c=8"
            rows.append((scenario, "success", f"{len(r.latencies) / (len(r.latencies) + r.errors):.2%}"))
            figure = "p50 / p99 (same run, healthy: p50 / p99)"
            rows.append((scenario, figure, f"{_p50_99(r)} ({_p50_99(healthy)})"))
            rows.append((scenario, "added p99", ms(r.pct(99) - healthy.pct(99))))
    finally:
        s.close()
    return rows


def _p50_99(r: Result) -> str:
    return f"{ms(r.pct(50))} / {ms(r.pct(99))}"


def recovery(cooldown: float) -> list[Row]:
    s = Setup(cooldown)
    try:
        s.a.kill()
        while s.state("replica-a") != "open":
            asyncio.run(load(s.url, 10, 2))
        s.a.revive()
        revived = time.monotonic()
        while time.monotonic() - revived < 5 * cooldown:
            if any(model == "replica-a" for _, _, model in asyncio.run(load(s.url, 4, 2))):
                break
        back = time.monotonic() - revived
        return [(f"A dies, breaker opens, A returns (cooldown {cooldown:g} s)", "time until A serves again", f"{back:.2f} s")]
    finally:
        s.close()


def all_down(cooldown: float) -> list[Row]:
    s = Setup(cooldown)
    try:
        for up in (s.a, s.b, s.fallback):
            up.kill()
        while any(s.state(d) != "open" for d in ("replica-a", "replica-b", "fallback")):
            asyncio.run(load(s.url, 5, 1))
        results = asyncio.run(load(s.url, 200, 1))
        assert {status for status, _, _ in results} == {503}, "expected 503s"
        lat = [t for _, t, _ in results]
        value = f"{ms(pct(lat, 50))} / {ms(pct(lat, 99))} / {ms(max(lat))}"
        return [("every deployment down, 200 requests at c=1 (httpx client)", "time to 503 p50 / p99 / max", value)]
    finally:
        s.close()


def disconnect(cooldown: float) -> list[Row]:
    s = Setup(cooldown)
    try:
        for up in (s.a, s.b):
            up.behavior = Behavior(chunks=400, chunk_interval_s=0.02)
        body = httpx.Request("POST", "/", json={**CHAT, "stream": True}).content
        head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        head += f"authorization: Bearer {KEY}\r\ncontent-length: {len(body)}\r\n\r\n"
        delays = []
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", s.port))
            sock.sendall(head.encode() + body)
            sock.recv(65536)  # headers and the first events: the stream runs
            wait_until(lambda: s.a.streams_in_progress + s.b.streams_in_progress == 1)
            closed = time.perf_counter()
            sock.close()
            wait_until(lambda: s.a.streams_in_progress + s.b.streams_in_progress == 0)
            delays.append(time.perf_counter() - closed)
        return [
            (
                "client leaves mid-stream, 20 trials",
                "upstream stream closed after p50 / max",
                f"{ms(statistics.median(delays))} / {ms(max(delays))}",
            )
        ]
    finally:
        s.close()


def kill_streams(cooldown: float) -> list[Row]:
    s = Setup(cooldown)
    try:
        for up in (s.a, s.b):
            up.behavior = Behavior(chunks=1000, chunk_interval_s=0.02)
        started: list[int] = []

        async def one(client: httpx.AsyncClient) -> tuple[str, float]:
            async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response:
                parts = []
                async for chunk in response.aiter_text():
                    if not parts:
                        started.append(1)
                    parts.append(chunk)
                return "".join(parts), time.perf_counter()

        async def go() -> tuple[list[tuple[str, float]], float]:
            async with httpx.AsyncClient(
                base_url=s.url, headers=AUTH, timeout=60, limits=httpx.Limits(max_connections=200)
            ) as client:
                tasks = [asyncio.ensure_future(one(client)) for _ in range(100)]
                while len(started) < 100:
                    await asyncio.sleep(0.01)
                killed = time.perf_counter()
                await asyncio.to_thread(s.a.kill)
                await asyncio.to_thread(s.b.kill)
                return await asyncio.wait_for(asyncio.gather(*tasks), 30), killed

        results, killed = asyncio.run(go())
        clean = sum(body.rstrip().endswith("data: [DONE]") and '"error"' in body.split("\n\n")[-3] for body, _ in results)
        last = max(t for _, t in results) - killed
        return [
            ("100 streams, both replicas killed mid-stream", "streams ending with an error event and [DONE]", f"{clean} / 100"),
            ("100 streams, both replicas killed mid-stream", "last stream ended after the kill", ms(last)),
        ]
    finally:
        s.close()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("condition not reached")
        time.sleep(0.0005)


SCENARIOS: dict[str, Callable[[float], list[Row]]] = {
    "hard_down": hard_down,
    "dies_after_run": dies_after_run,
    "errors_30": errors_30,
    "recovery": recovery,
    "all_down": all_down,
    "disconnect": disconnect,
    "kill_streams": kill_streams,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--cooldown", type=float, default=2.0, help="breaker cooldown_s in seconds")
    args = parser.parse_args()
    rows: list[Row] = []
    for name in args.only.split(","):
        rows += SCENARIOS[name](args.cooldown)
    lines = ["| scenario | figure | value |", "|---|---|---|", *(f"| {a} | {b} | {c} |" for a, b, c in rows)]
    lines += ["", *footer("loadtest.chaos")]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
