"""Replicas behind HAProxy: does throughput grow with replicas, and what does the added hop cost?
And does a replica drain on SIGTERM under load without failing a request?

Real parts: three `gateway serve` processes sharing one redis-server (client keys on, limits
counted in Redis), Debian's HAProxy checking each replica's readiness every 200 ms, the fake
upstream as a process of its own, and the closed-loop load generator (`loadtest/loadgen.py`).

Scaling, for each `--concurrency` c (connections per replica), each configuration `--rounds`
times in turn (the round with the median requests/s is shown):
  - direct: the load generator straight to the upstream at c connections (what the gateway's
    latency is measured against);
  - 1 replica: HAProxy in front of one replica, at c connections;
  - 3 replicas: HAProxy in front of three, at 3c (the same load per replica).
"added p99" is the configuration's p99 minus direct's p99; "gateway CPU cores", the CPU time the
gateway processes used during the run divided by its length. Every process may use any core.

Drain (`--sigterm-runs N`): N times, three fresh replicas behind HAProxy, `--concurrency` x 3
connections of load (half of them streaming), one replica gets SIGTERM 2 s in: the failed
requests, and how long the replica took from the signal to its exit (drain_delay_s 2 s,
drain_timeout_s 10 s).

Memory: one worker's resident set after 500 distinct requests, without and with the semantic
cache (whose embedder and FAISS index are most of a worker's memory).

    python -m loadtest.bench_replicas --rounds 3 --sigterm-runs 3
"""

from __future__ import annotations

import argparse
import asyncio
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

from gateway.access.keys import hash_key
from loadtest.loadgen import KEY, Result, chat_body, run
from loadtest.report import footer
from tests.helpers.gateway import GatewayProcess
from tests.helpers.haproxy import HAProxy
from tests.helpers.ports import free_port
from tests.helpers.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]


def config(upstream: str, redis_url: str) -> str:
    return f"""
reload: {{watch: false}}
server: {{drain_delay_s: 2.0, drain_timeout_s: 10}}
auth:
  keys:
    - {{alias: load, key_hash: "{hash_key(KEY)}", rpm: 100000000, budget: {{day: 100000000}}}}
redis: {{url: "{redis_url}"}}
pools:
  fake:
    deployments: [{{id: up, base_url: "{upstream}"}}]
"""


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds the processes have used so far (/proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def measure(url: str, concurrency: int, duration: float, gateways: list[int]) -> tuple[Result, float]:
    """The load's result, and the CPU cores the gateway processes used meanwhile."""
    result = asyncio.run(
        run(
            f"{url}/v1/chat/completions", chat_body(False), concurrency, 0, duration, warmup=50, cpu=lambda: cpu_seconds(gateways)
        )
    )
    return result, result.cpu_s / result.elapsed


def scaling(folder: Path, upstream: str, redis: RedisServer, concurrency: int, duration: float, rounds: int) -> list[str]:
    (folder / f"replica-{concurrency}.yaml").write_text(config(upstream, redis.url))
    replicas = [GatewayProcess(folder / f"replica-{concurrency}.yaml") for _ in range(3)]
    one = HAProxy(folder, [f"127.0.0.1:{replicas[0].port}"], check="/health/readiness")
    three = HAProxy(folder, [f"127.0.0.1:{r.port}" for r in replicas], check="/health/readiness")
    pids = [r.proc.pid for r in replicas]
    runs: dict[str, list[tuple[Result, float]]] = {"direct": [], "1 replica": [], "3 replicas": []}
    try:
        for i in range(rounds):
            order = [
                ("direct", upstream.removesuffix("/v1"), concurrency, []),
                ("1 replica", one.url, concurrency, pids[:1]),
                ("3 replicas", three.url, 3 * concurrency, pids),
            ]
            for name, url, c, watched in order if i % 2 == 0 else order[::-1]:
                runs[name].append(measure(url, c, duration, watched))
    finally:
        one.stop()
        three.stop()
        for r in replicas:
            r.stop()
    chosen = {name: sorted(rs, key=lambda r: r[0].rps)[len(rs) // 2] for name, rs in runs.items()}
    direct = chosen["direct"][0]
    ratio = statistics.median(b[0].rps / a[0].rps for a, b in zip(runs["1 replica"], runs["3 replicas"], strict=True))
    added = [chosen[n][0].pct(99) - direct.pct(99) for n in ("1 replica", "3 replicas")]
    lines = []
    labels = {
        "direct": "direct to the upstream",
        "1 replica": "1 replica behind HAProxy",
        "3 replicas": "3 replicas behind HAProxy",
    }
    for name, label in labels.items():
        res, cores = chosen[name]
        c = 3 * concurrency if name == "3 replicas" else concurrency
        add = f"{(res.pct(99) - direct.pct(99)) * 1000:.2f}" if name != "direct" else "-"
        gw = f"{cores:.2f}" if name != "direct" else "-"
        p50, p99 = res.pct(50) * 1000, res.pct(99) * 1000
        lines.append(f"| {label}, c={c} | {res.rps:,.0f} | {p50:.2f} | {p99:.2f} | {add} | {gw} | {res.errors} |")
    return [
        *lines,
        "",
        f"c={concurrency} per replica: 3 replicas / 1 replica requests/s {ratio:.2f}x (median of {rounds} rounds' ratios); "
        f"added p99 3 replicas / 1 replica {added[1] / added[0]:.2f}x",
    ]


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(folder: Path, upstream: str, redis: RedisServer) -> list[str]:
    """Resident memory of one gateway worker after 500 requests: keys and limits in Redis, then
    also the semantic cache in Redis (the embedder loaded, 500 entries)."""
    lines = ["| worker | resident MB after 500 requests |", "|---|---|"]
    for name, extra in (
        ("keys and limits in Redis", ""),
        ("the same + semantic cache (embedder)", "cache: {enabled: true, store: redis}\n"),
    ):
        path = folder / f"memory-{len(lines)}.yaml"
        path.write_text(config(upstream, redis.url) + extra)
        gateway = GatewayProcess(path)
        try:
            with httpx.Client(headers={"authorization": f"Bearer {KEY}"}, timeout=30) as client:
                for i in range(500):
                    body = {"model": "fake", "messages": [{"role": "user", "content": f"question number {i} about sizing"}]}
                    assert client.post(f"{gateway.url}/v1/chat/completions", json=body).status_code == 200
            lines.append(f"| {name} | {resident_mb(gateway.proc.pid):.0f} |")
        finally:
            gateway.stop()
    return lines


def drain_runs(folder: Path, upstream: str, redis: RedisServer, concurrency: int, runs: int) -> list[str]:
    lines = [
        "| run | requests | failed | SIGTERM to exit s (drain_delay_s 2, drain_timeout_s 10) | exit code |",
        "|---|---|---|---|---|",
    ]
    for n in range(1, runs + 1):
        (folder / f"drain-{n}.yaml").write_text(config(upstream, redis.url))
        replicas = [GatewayProcess(folder / f"drain-{n}.yaml") for _ in range(3)]
        proxy = HAProxy(folder, [f"127.0.0.1:{r.port}" for r in replicas], check="/health/readiness")
        try:
            results: list[Result] = []

            async def load(proxy_url: str = proxy.url, into: list[Result] = results) -> None:
                url = f"{proxy_url}/v1/chat/completions"
                half = max(1, 3 * concurrency // 2)
                into.extend(
                    await asyncio.gather(run(url, chat_body(False), half, 0, 8.0), run(url, chat_body(True), half, 0, 8.0))
                )

            loader = threading.Thread(target=lambda: asyncio.run(load()), daemon=True)
            loader.start()
            time.sleep(2.0)
            signalled = time.monotonic()
            replicas[0].proc.send_signal(signal.SIGTERM)
            code = replicas[0].proc.wait(30)
            took = time.monotonic() - signalled
            loader.join(60)
            total = sum(len(r.latencies) + r.errors for r in results)
            failed = sum(r.errors for r in results)
            lines.append(f"| {n} | {total:,} | {failed} | {took:.2f} | {code} |")
        finally:
            proxy.stop()
            for r in replicas:
                if r.proc.poll() is None:
                    r.stop()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--concurrency", type=lambda v: [int(c) for c in v.split(",")], default=[1, 8], help="connections per replica (list)"
    )
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sigterm-runs", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    port = free_port()
    upstream_proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.fake_upstream", "--port", str(port)], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    upstream = f"http://127.0.0.1:{port}/v1"
    redis = RedisServer(folder)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("the fake upstream did not start") from None
                time.sleep(0.1)
        head = "| configuration | requests/s | p50 ms | p99 ms | added p99 ms | gateway CPU cores | failed |"
        lines, notes = [head, "|---|---|---|---|---|---|---|"], []
        for c in args.concurrency:
            *rows, _, note = scaling(folder, upstream, redis, c, args.duration, args.rounds)
            lines += rows
            notes.append(note)
        lines += ["", *notes]
        if args.sigterm_runs:
            lines += ["", *drain_runs(folder, upstream, redis, max(args.concurrency), args.sigterm_runs)]
        lines += ["", *memory(folder, upstream, redis)]
    finally:
        redis.stop()
        upstream_proc.terminate()
        upstream_proc.wait(10)
    print("\n".join([*lines, "", *footer("loadtest.bench_replicas", f", HAProxy {haproxy_version()}")]))


def haproxy_version() -> str:
    out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
    return out.split()[2] if out.split()[:2] == ["HAProxy", "version"] else "?"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
