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
import time
from pathlib import Path

import httpx
import msgspec

from gateway.access.keys import hash_key
from loadtest.report import footer
from tests.helpers.gateway import ROOT, GatewayProcess
from tests.helpers.redis_server import RedisServer
from tests.helpers.spy_upstream import Script, SpyUpstream

KEYS = {a: f"sk-gw-replay-{a}-0123456789abcdef" for a in ("budget", "tokens", "meter", "open")}
SECRETS = ("sk-UPSTREAM-SECRET-0123456789", "HDR-SECRET-777")
ENV = {"UPSTREAM_KEY": SECRETS[0], "HEADER_SECRET": SECRETS[1]}


def config(spy: SpyUpstream, redis: RedisServer) -> str:
    return f"""
reload: {{watch: false}}
redis: {{url: "{redis.url}"}}
auth:
  on_store_error: open
  keys:
    - {{alias: budget, key_hash: "{hash_key(KEYS["budget"])}", budget: {{day: 1.0}}}}
    - {{alias: tokens, key_hash: "{hash_key(KEYS["tokens"])}", tpm: 5000}}
    - {{alias: meter, key_hash: "{hash_key(KEYS["meter"])}", budget: {{day: 1000}}}}
    - {{alias: open, key_hash: "{hash_key(KEYS["open"])}"}}
pools:
  hosted:
    aliases: [gpt-4o]
    breaker: {{enabled: false}}
    retry: {{max_attempts: 1}}
    deployments:
      - id: hosted-dep
        base_url: "{spy.base_url}"
        api_key: "${{UPSTREAM_KEY}}"
        headers: {{x-key: "xkey=${{HEADER_SECRET}}"}}
        price: {{input_per_1m: 10, output_per_1m: 30}}
"""


def auth(alias: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[alias]}"}


def chat(content: str = "hi", **fields: object) -> dict[str, object]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": content}], **fields}


def spent(redis: RedisServer, alias: str) -> float:
    client = redis.client()
    return sum(float(client.get(k) or 0) for k in client.keys(f"gw:spend:cfg:{alias}:day:*"))


def settled(gateway: GatewayProcess, redis: RedisServer, alias: str) -> float:
    for _ in range(300):
        if "gateway_in_flight 0.0" in httpx.get(f"{gateway.url}/metrics").text:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    return spent(redis, alias)


def billed(spy: SpyUpstream) -> float:
    """What the upstream billed for what it was sent: its prompt count, and the output it wrote."""
    return sum((spy.script.prompt_tokens * 10 + spy.output_tokens(s.body) * 30) / 1e6 for s in spy.seen)


async def burst(url: str, alias: str, bodies: list[dict[str, object]], path: str = "/v1/chat/completions") -> list[int]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=len(bodies)), headers=auth(alias)) as client:
        replies = await asyncio.gather(*(client.post(url + path, json=b) for b in bodies))
    return [r.status_code for r in replies]


def fresh(spy: SpyUpstream, redis: RedisServer, script: Script | None = None) -> None:
    spy.script = script or Script()
    spy.seen.clear()
    redis.client().flushall()


def replay(tree: Path) -> list[tuple[str, str]]:
    folder = Path(tempfile.mkdtemp())
    spy = SpyUpstream().start()
    redis = RedisServer(folder)
    (folder / "gateway.yaml").write_text(config(spy, redis))
    gateway = GatewayProcess(folder / "gateway.yaml", env=ENV, tree=tree)
    url, rows = gateway.url, []
    try:
        fresh(spy, redis)
        statuses = asyncio.run(burst(url, "budget", [chat("write a long story")] * 30))
        spend = settled(gateway, redis, "budget")
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
        statuses = asyncio.run(burst(url, "tokens", [chat("hi", max_tokens=1, tools=[tool])] * 10))
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
        charge = settled(gateway, redis, "meter")
        rows.append(
            (
                "stream left after finish_reason, before the usage chunk",
                f"charged ${charge:.4f}; upstream billed ${billed(spy):.4f}",
            )
        )

        fresh(spy, redis, Script(stream_usage=False, stream_text="word " * 50_000))
        httpx.post(f"{url}/v1/chat/completions", json=chat(stream=True), headers=auth("meter"), timeout=60)
        charge = settled(gateway, redis, "meter")
        rows.append(("50,000 words in one chunk, no usage", f"charged ${charge:.4f}; 50,000 words at $30/1M: $1.50"))

        fresh(spy, redis, Script(latency_s=3.0))
        httpx.post(
            f"{url}/v1/chat/completions", json=chat(max_tokens=1000), headers={**auth("meter"), "x-gateway-deadline-ms": "300"}
        )
        charge = settled(gateway, redis, "meter")
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

        r = httpx.get(f"{url}/admin/config", headers={"x-forwarded-for": "203.0.113.7"})
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
