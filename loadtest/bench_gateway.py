"""Gateway overhead benchmark: direct-to-upstream against through-the-gateway, in one run.

The gateway runs pinned to core 0; the fake upstream and this load generator share core 1.
For each gateway variant (HTTP server x upstream transport) it measures:
  - latency p50/p99 at concurrency 1 (non-streaming), and the latency the gateway adds;
  - requests/s at saturation (closed loop, `--concurrency` connections);
  - streaming time to first token (first SSE event) at concurrency 1.

    python -m loadtest.bench_gateway                       # uvicorn + pooled transport (the default)
    python -m loadtest.bench_gateway --variants uvicorn:pooled,uvicorn:httpx,granian:pooled
    python -m loadtest.bench_gateway --variants uvicorn:pooled,uvicorn:pooled:traced   # tracing's cost
    python -m loadtest.bench_gateway --variants uvicorn:pooled,uvicorn:pooled:keys,uvicorn:pooled:keys-redis
    python -m loadtest.bench_gateway --variants uvicorn:pooled@../base,uvicorn:pooled --rounds 6   # before/after

A variant ending in `@DIR` runs the gateway from another checkout (e.g. `git worktree add ../base
HEAD~3`), with this checkout's Python environment: a change measured against what it changed, in
one run.

With `--rounds N` the gateway variants run N times in turn (in reverse order every other round,
so that a VM slowing down or speeding up through the run favours none) and each row is the round
with the median requests/s (this VM's speed drifts by a fifth within minutes); the median over rounds of
each variant's requests/s divided by the first variant's in the same round is printed too (to
stderr), the figure that drift disturbs least, and the same for CPU per request.

"gateway CPU µs/request": the gateway process's CPU time (all its threads) from the end of the
c=32 run's warm-up to 6 s after its last answer (the tracing batch processor's 5 s schedule, so
spans exported after the run are counted), divided by that run's requests.

A `:traced` variant turns tracing on, exporting every span over OTLP/HTTP to a receiver in a process of
its own (on core 1 with the load generator), at `--sample-ratio` (default 1) and
`--max-traces-per-s` (default: the config's, 100 new traces a second; 0: no limit, so that with a
ratio of 1 every request is recorded). The
receiver keeps the bodies and decodes them only when asked how many spans came, after the
measurement: decoding them as they came took the load generator's core at the traced variant's
expense (a collector runs elsewhere).
Without `:keys`, auth is off. `:keys` turns it on with a config key that has rpm, tpm and a daily
budget (far above what the run uses), counted in the gateway process; `:keys-redis` counts in a
redis-server started for the run (on core 1). `:no-hiredis` hides the `hiredis` package from the
gateway, so that redis-py parses Redis's replies in Python (what it does without the package).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from gateway.access.keys import hash_key
from loadtest.loadgen import KEY, Result, chat_body, run
from loadtest.report import footer
from tests.helpers.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_PORT, GATEWAY_PORT, RECEIVER_PORT = 9301, 9302, 9303


def start(cmd: list[str], core: int, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    full = ["taskset", "-c", str(core), *cmd]
    return subprocess.Popen(full, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def gateway_cmd(server: str, config: str) -> tuple[list[str], dict[str, str]]:
    if server == "granian":
        cmd = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--port", str(GATEWAY_PORT)]
        return [*cmd, "--loop", "uvloop", "--no-log", "gateway.app:create_app"], {"GATEWAY_CONFIG": config}
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", config, "--port", str(GATEWAY_PORT), "--log-level", "warning"]
    cmd += ["--admin-port", "0"]  # the admin listener on a free port
    return cmd, {}


def cpu_per_request(r: Result) -> float:
    return r.cpu_s / len(r.latencies) if r.latencies else float("nan")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process `pid` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(base: str, requests: int, duration: float, concurrency: int, pid: int | None = None) -> dict[str, Result]:
    url = f"{base}/chat/completions"
    # CPU counted until 6 s after the last answer: the tracing batch processor exports every 5 s.
    cpu = (lambda: cpu_seconds(pid)) if pid is not None else None
    return {
        "c1": await run(url, chat_body(), 1, requests, warmup=200),
        "saturation": await run(url, chat_body(), concurrency, 0, duration=duration, warmup=200, cpu=cpu, settle_s=6.0),
        "stream": await run(url, chat_body(stream=True), 1, requests // 2, warmup=100),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="uvicorn:pooled", help="comma-separated server:transport pairs")
    parser.add_argument("--requests", type=int, default=3000, help="requests per concurrency-1 measurement")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per saturation measurement")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--chunks", type=int, default=16, help="SSE chunks per streamed answer")
    parser.add_argument("--sample-ratio", type=float, default=1.0, help="telemetry.sample_ratio of `:traced` variants")
    parser.add_argument(
        "--max-traces-per-s",
        type=float,
        default=None,
        help="telemetry.max_traces_per_s of `:traced` variants (default: the config's)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the gateway variants this many times in turn; each row is its median round"
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})

    upstream = start(
        [sys.executable, "-m", "tests.helpers.fake_upstream", "--port", str(UPSTREAM_PORT), "--chunks", str(args.chunks)], 1
    )
    direct_base = f"http://127.0.0.1:{UPSTREAM_PORT}/v1"
    rows: list[tuple[str, dict[str, Result]]] = []
    try:
        wait_http(f"{direct_base}/models", upstream)
        rows.append(("direct (no gateway)", asyncio.run(measure(direct_base, args.requests, args.duration, args.concurrency))))
        runs: dict[str, list[dict[str, Result]]] = {}
        variants = args.variants.split(",")
        for i in range(args.rounds):  # in turn, so that a slow minute of the VM hits every variant alike,
            for variant in variants if i % 2 == 0 else variants[::-1]:  # and first and last by turns: the VM drifts
                spec, _, tree = variant.partition("@")
                server, transport, *flags = spec.split(":")
                name = " + ".join([f"gateway {server}", transport, *flags]) + (f" ({tree})" if tree else "")
                root = Path(tree).resolve() if tree else ROOT
                runs.setdefault(name, []).append(bench_variant(server, transport, direct_base, args, set(flags), root))
        for name, results in runs.items():
            ordered = sorted(results, key=lambda r: r["saturation"].rps)
            rows.append((name, ordered[len(ordered) // 2]))
            if args.rounds > 1:
                rates = ", ".join(f"{r['saturation'].rps:,.0f}" for r in results)
                cpus = ", ".join(f"{cpu_per_request(r['saturation']) * 1e6:.0f}" for r in results)
                print(f"{name}: req/s at c={args.concurrency} by round: {rates}; CPU µs/request: {cpus}", file=sys.stderr)
        if args.rounds > 1 and len(runs) > 1:  # each round's variants ran back to back: their ratios cancel the VM's drift
            (base_name, base), *others = runs.items()
            for name, results in others:
                for what, value in (("req/s", lambda r: r.rps), ("CPU per request", cpu_per_request)):
                    ratios = sorted(value(r["saturation"]) / value(b["saturation"]) for r, b in zip(results, base, strict=True))
                    listed = ", ".join(f"{x:.3f}" for x in ratios)
                    median = statistics.median(ratios)  # with an even count of rounds, the mean of the middle two
                    print(f"{name} / {base_name}, {what} paired by round: median {median:.3f} ({listed})", file=sys.stderr)
    finally:
        upstream.terminate()
    print(report(rows, args))


def bench_variant(
    server: str, transport: str, upstream_base: str, args: argparse.Namespace, flags: set[str], root: Path = ROOT
) -> dict[str, Result]:
    unknown = flags - {"traced", "keys", "keys-redis", "no-hiredis"}
    if unknown:
        raise SystemExit(f"unknown variant flags: {', '.join(sorted(unknown))}")
    # The receiver is a process of its own on core 1; it decodes the spans only when asked for their count.
    traced = "traced" in flags
    receiver_cmd = [sys.executable, "-m", "tests.helpers.otlp_receiver", "--port", str(RECEIVER_PORT), "--defer"]
    receiver = start(receiver_cmd, 1) if traced else None
    redis = None
    if "keys-redis" in flags:
        redis = RedisServer(Path(tempfile.mkdtemp()))
        os.sched_setaffinity(redis.proc.pid, {1})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write("reload: {watch: false}\n")
        if flags & {"keys", "keys-redis"}:
            limits = "rpm: 100000000, tpm: 1000000000000, budget: {day: 1000000}"
            f.write(f"auth:\n  keys:\n    - {{alias: bench, key_hash: '{hash_key(KEY)}', {limits}}}\n")
            if redis is not None:
                f.write(f"redis: {{url: '{redis.url}'}}\n")
                f.write("resilience: {share_breakers: false}\n")
        else:
            f.write("auth: {enabled: false}\n")
        if receiver is not None:
            endpoint = f"http://127.0.0.1:{RECEIVER_PORT}/v1/traces"
            cap = "" if args.max_traces_per_s is None else f", max_traces_per_s: {args.max_traces_per_s}"
            f.write(f"telemetry: {{enabled: true, endpoint: '{endpoint}', sample_ratio: {args.sample_ratio}{cap}}}\n")
        f.write("pools:\n  fake:\n    deployments:\n")
        price = "{input_per_1m: 1, output_per_1m: 2}"
        f.write(f"      - {{id: fake-1, base_url: '{upstream_base}', transport: {transport}, price: {price}}}\n")
    if receiver is not None:
        wait_http(f"http://127.0.0.1:{RECEIVER_PORT}/count", receiver)
    cmd, env = gateway_cmd(server, f.name)
    path = str(root)
    if "no-hiredis" in flags:  # redis-py falls back to its own Python reply parser
        blocked = Path(tempfile.mkdtemp()) / "hiredis"
        blocked.mkdir()
        (blocked / "__init__.py").write_text('raise ImportError("hiredis is left out of this variant")\n')
        path = f"{blocked.parent}{os.pathsep}{root}"
    gateway = start(cmd, 0, {**env, "PYTHONPATH": path}, cwd=root)
    try:
        wait_http(f"http://127.0.0.1:{GATEWAY_PORT}/health/liveness", gateway)
        base = f"http://127.0.0.1:{GATEWAY_PORT}/v1"
        return asyncio.run(measure(base, args.requests, args.duration, args.concurrency, gateway.pid))
    finally:
        gateway.send_signal(signal.SIGINT)  # SIGTERM would wait out server.drain_delay_s
        gateway.wait(10)
        os.unlink(f.name)
        if redis is not None:
            redis.stop()
        if receiver is not None:
            print(f"{httpx.get(f'http://127.0.0.1:{RECEIVER_PORT}/count').text} spans reached the OTLP receiver", file=sys.stderr)
            receiver.terminate()
            receiver.wait(10)  # its port is free for the next round's receiver


def report(rows: list[tuple[str, dict[str, Result]]], args: argparse.Namespace) -> str:
    direct = rows[0][1]
    lines = [
        "| setup | c=1 p50 ms | c=1 p99 ms | added p50 ms | added p99 ms "
        f"| req/s at c={args.concurrency} | gateway CPU µs/request | errors | stream TTFT p50 ms | TTFT added p50 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        c1, sat, st = r["c1"], r["saturation"], r["stream"]
        added50 = (c1.pct(50) - direct["c1"].pct(50)) * 1e3
        added99 = (c1.pct(99) - direct["c1"].pct(99)) * 1e3
        ttft, ttft_added = (
            st.pct(50, st.ttfb) * 1e3,
            (st.pct(50, st.ttfb) - direct["stream"].pct(50, direct["stream"].ttfb)) * 1e3,
        )
        errors = c1.errors + sat.errors + st.errors
        cpu = "-" if math.isnan(cpu_per_request(sat)) else f"{cpu_per_request(sat) * 1e6:.0f}"
        lines.append(
            f"| {name} | {c1.pct(50) * 1e3:.3f} | {c1.pct(99) * 1e3:.3f} | {added50:.3f} | {added99:.3f} | "
            f"{sat.rps:,.0f} | {cpu} | {errors} | {ttft:.3f} | {ttft_added:.3f} |"
        )
    lines += ["", *footer("loadtest.bench_gateway")]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
