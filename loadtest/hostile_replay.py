"""The hostile-client table of issue 27, replayed with figures: what a client with a valid key got
past its budget, its token limit and the gateway's secrets. Real `gateway serve` processes, the
spying upstream of the tests (it honours `max_tokens` and otherwise writes 200k tokens), a
redis-server per run, loopback only. The connection rows are `loadtest/bench_slow_clients.py`.

    python -m loadtest.hostile_replay
    python -m loadtest.hostile_replay --tree ../base      # the gateway from another checkout
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import httpx
import msgspec

from loadtest.report import footer
from tests.helpers.gateway import ROOT, GatewayProcess
from tests.helpers.hostile import ENV, HEADER_SECRET, UPSTREAM_KEY, auth, burst, charged, chat, config, cost
from tests.helpers.redis_server import RedisServer
from tests.helpers.spy_upstream import Script, SpyUpstream

SECRETS = (UPSTREAM_KEY, HEADER_SECRET)


def billed(spy: SpyUpstream) -> float:
    """What the upstream billed for what it was sent: its prompt count, and the output it wrote."""
    return sum(cost(spy.script.prompt_tokens, spy.output_tokens(s.body)) for s in spy.seen)


def fresh(spy: SpyUpstream, redis: RedisServer, script: Script | None = None) -> None:
    spy.script = script or Script()
    spy.seen.clear()
    redis.client().flushall()


def replay(tree: Path) -> list[tuple[str, str]]:
    folder = Path(tempfile.mkdtemp())
    spy = SpyUpstream().start()
    redis = RedisServer(folder)
    (folder / "gateway.yaml").write_text(config(spy, redis, auth_extra="on_store_error: open", admin=False))
    gateway = GatewayProcess(folder / "gateway.yaml", env=ENV, tree=tree)
    url, rows = gateway.url, []
    try:
        fresh(spy, redis)
        statuses = [r.status_code for r in asyncio.run(burst(url, "budget", [chat("write a long story")] * 30))]
        spend = charged(gateway, redis, "budget")
        rows.append(
            (
                "budget $1/day, 30 concurrent requests without max_tokens",
                f"{statuses.count(200)} answered, spent ${spend:.4f} of $1.00 (upstream billed ${billed(spy):.4f})",
            )
        )

        fresh(spy, redis)
        tool = {
            "type": "function",
            "function": {"name": "f", "description": "look it up " * 11_000, "parameters": {"type": "object"}},
        }
        statuses = [r.status_code for r in asyncio.run(burst(url, "tokens", [chat("hi", max_tokens=1, tools=[tool])] * 10))]
        sent = sum(len(msgspec.json.encode(s.body)) for s in spy.seen) // 4
        rows.append(
            (
                "tpm 5000, 10 concurrent requests with a 120 KB tool description",
                f"{statuses.count(200)} answered; about {sent:,} prompt tokens reached the upstream (JSON bytes / 4)",
            )
        )

        fresh(spy, redis, Script(usage_delay_s=1.0))
        with (
            httpx.Client(timeout=30) as client,
            client.stream("POST", f"{url}/v1/chat/completions", json=chat(stream=True), headers=auth("meter")) as r,
        ):
            for line in r.iter_lines():
                if '"finish_reason":"length"' in line:
                    break
        charge = charged(gateway, redis, "meter")
        rows.append(
            (
                "stream left after finish_reason, before the usage chunk",
                f"charged ${charge:.4f}; upstream billed ${billed(spy):.4f}",
            )
        )

        fresh(spy, redis, Script(stream_usage=False, stream_text="word " * 50_000))
        httpx.post(f"{url}/v1/chat/completions", json=chat(stream=True), headers=auth("meter"), timeout=60)
        charge = charged(gateway, redis, "meter")
        rows.append(("50,000 words in one chunk, no usage", f"charged ${charge:.4f}; 50,000 words at $30/1M: $1.50"))

        fresh(spy, redis, Script(latency_s=3.0))
        httpx.post(
            f"{url}/v1/chat/completions", json=chat(max_tokens=1000), headers={**auth("meter"), "x-gateway-deadline-ms": "300"}
        )
        charge = charged(gateway, redis, "meter")
        rows.append(
            (
                "request cut by x-gateway-deadline-ms (asked max_tokens 1000)",
                f"charged ${charge:.4f}; asked for ${1000 * 30 / 1e6:.4f} of output",
            )
        )

        fresh(spy, redis)
        wide = {"model": "gpt-4o", "prompt": "hi", "max_tokens": 1000, "best_of": 20}
        r = httpx.post(f"{url}/v1/completions", json=wide, headers=auth("tokens"))
        rows.append(
            ("/v1/completions best_of 20, max_tokens 1000 on tpm 5000", f"{r.status_code}; upstream saw {len(spy.seen)} requests")
        )

        seen_bytes = []
        for status, error in (
            (400, {"message": "bad {authorization}", "code": "{authorization}", "param": "{authorization}"}),
            (500, {"message": "proxy failed; headers: {x-key}", "code": None}),
        ):
            fresh(spy, redis, Script(error=(status, error)))
            for stream in (False, True):
                seen_bytes.append(
                    httpx.post(f"{url}/v1/chat/completions", json=chat(max_tokens=5, stream=stream), headers=auth("open")).text
                )
        fresh(spy, redis, Script(stream_error={"message": "died {authorization}", "code": "{x-key}"}))
        seen_bytes.append(
            httpx.post(f"{url}/v1/chat/completions", json=chat(max_tokens=5, stream=True), headers=auth("open")).text
        )
        found = sum(text.count(secret) for text in seen_bytes for secret in SECRETS)
        rows.append(
            (
                "upstream errors quoting Authorization and a headers: value (5 replies, plain and streamed)",
                f"{found} secrets in the replies",
            )
        )

        r = httpx.get(f"{gateway.admin_url}/admin/config", headers={"x-forwarded-for": "203.0.113.7"})
        rows.append(
            ("X-Forwarded-For from an unlisted loopback peer", f"admin API {r.status_code} (believed: 401; ignored: 200)")
        )
        r = httpx.post(f"{url}/v1/chat/completions", content=b"<x/>", headers={"content-type": "text/xml"})
        rows.append(("no client key and a wrong content type", f"{r.status_code}"))
    finally:
        gateway.stop()
        redis.stop()
        spy.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", help="run the gateway from another checkout")
    args = parser.parse_args()
    rows = replay(Path(args.tree).resolve() if args.tree else ROOT)
    lines = ["| what was tried | what happened |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    print("\n".join([*lines, "", *footer("loadtest.hostile_replay")]))


if __name__ == "__main__":
    main()
