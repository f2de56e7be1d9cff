"""The setting of the hostile-client tests and of their replay (`loadtest/hostile_replay.py`): a
gateway config with keys of each kind in front of the spying upstream, and what a test reads back
(the spend a key has settled in Redis)."""

from __future__ import annotations

import asyncio
import time

import httpx

from gateway.access.keys import hash_key
from tests.helpers.gateway import GatewayProcess
from tests.helpers.polling import wait_until
from tests.helpers.redis_server import RedisServer
from tests.helpers.spy_upstream import SpyUpstream

KEYS = {alias: f"sk-gw-hostile-{alias}-0123456789abcdef" for alias in ("budget", "tokens", "meter", "open", "paced")}
UPSTREAM_KEY = "sk-UPSTREAM-SECRET-0123456789"
HEADER_SECRET = "HDR-SECRET-777"
ADMIN_KEY = "admin-hostile-secret-4242"
ENV = {"UPSTREAM_KEY": UPSTREAM_KEY, "HEADER_SECRET": HEADER_SECRET, "ADMIN_KEY": ADMIN_KEY}
INPUT_PER_1M, OUTPUT_PER_1M = 10, 30
"""USD per 1M tokens, as a hosted model is priced."""


def config(spy: SpyUpstream, redis: RedisServer | None, extra: str = "", auth_extra: str = "", admin: bool = True) -> str:
    """Keys: `budget` ($1 a day), `tokens` (5,000 a minute), `meter` ($1,000 a day), `open` (no
    limits), `paced` (1,000 requests a minute); one pool `gpt-4o` of one deployment at the spy,
    with an API key and a header that must never come back."""
    return f"""
reload: {{watch: false}}
{'admin: {api_key: "${ADMIN_KEY}"}' if admin else ""}
{f'redis: {{url: "{redis.url}"}}' if redis else ""}
auth:
  {auth_extra}
  keys:
    - {{alias: budget, key_hash: "{hash_key(KEYS["budget"])}", budget: {{day: 1.0}}}}
    - {{alias: tokens, key_hash: "{hash_key(KEYS["tokens"])}", tpm: 5000}}
    - {{alias: meter, key_hash: "{hash_key(KEYS["meter"])}", budget: {{day: 1000}}}}
    - {{alias: open, key_hash: "{hash_key(KEYS["open"])}"}}
    - {{alias: paced, key_hash: "{hash_key(KEYS["paced"])}", rpm: 1000}}
pools:
  hosted:
    aliases: [gpt-4o]
    breaker: {{enabled: false}}  # the upstream errors on purpose
    retry: {{max_attempts: 1}}
    deployments:
      - id: hosted-dep
        base_url: "{spy.base_url}"
        api_key: "${{UPSTREAM_KEY}}"
        headers: {{x-key: "xkey=${{HEADER_SECRET}}"}}
        price: {{input_per_1m: {INPUT_PER_1M}, output_per_1m: {OUTPUT_PER_1M}}}
{extra}"""


def auth(alias: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[alias]}"}


def chat(content: str = "hi", **fields: object) -> dict[str, object]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": content}], **fields}


def cost(prompt: int, completion: int) -> float:
    return (prompt * INPUT_PER_1M + completion * OUTPUT_PER_1M) / 1e6


def spent(redis: RedisServer, alias: str) -> float:
    client = redis.client()
    return sum(float(client.get(k) or 0) for k in client.keys(f"gw:spend:cfg:{alias}:day:*"))


def charged(gateway: GatewayProcess, redis: RedisServer, alias: str) -> float:
    """The key's spend once its requests have ended and settled (settlements reach Redis in the
    background, just after a request ends)."""
    wait_until(lambda: "gateway_in_flight 0.0" in httpx.get(f"{gateway.url}/metrics").text, what="requests to end")
    before = -1.0
    while (now := spent(redis, alias)) != before:
        before = now
        time.sleep(0.1)
    return now


async def burst(
    url: str, alias: str, bodies: list[dict[str, object]], path: str = "/v1/chat/completions"
) -> list[httpx.Response]:
    """All `bodies` at once, each on its own connection."""
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=len(bodies)), headers=auth(alias)) as client:
        return await asyncio.gather(*(client.post(url + path, json=body) for body in bodies))
