"""Who may call, and how much: the keys (config and Redis), the limits, and what a request reserves.

Built once at start (the Redis client and the failure policy); the config's keys and whether auth
is on are read from the live config on every request, so a reload adds, changes or removes keys.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from redis.exceptions import RedisError

from backends.types import Endpoint, Usage
from gateway.access.counters import Ask
from gateway.access.keys import KeyTable, Principal, RedisKeys, authenticate
from gateway.access.limits import Limits
from gateway.redis_client import client as redis_client
from gateway.routing.pools import Pool
from gateway.settings import Settings
from gateway.text import reserved_prompt_tokens

log = logging.getLogger("gateway.access.control")


class Access:
    def __init__(self, settings: Settings) -> None:
        auth = settings.auth
        url = settings.redis.address()
        store = auth.store or ("redis" if url else "memory")
        self.client: Any = redis_client(url, auth.store_timeout_s) if store == "redis" and url else None
        prefix = settings.redis.key_prefix
        self.fail_open = auth.on_store_error == "open"
        self.keys = RedisKeys(self.client, prefix) if self.client is not None else None
        self.limits = Limits(self.client, prefix, self.fail_open)
        if not auth.enabled:
            log.warning("auth is off (auth.enabled: false): anyone who can reach this gateway may call it, with no limits")

    async def authenticate(self, headers: Iterable[tuple[bytes, bytes]], table: KeyTable) -> Principal:
        return await authenticate(headers, table, self.keys, self.fail_open)

    async def aclose(self) -> None:
        await self.limits.drain()
        if self.client is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.client.aclose()


def reservation(endpoint: Endpoint, payload: dict[str, Any], chain: Sequence[Pool], output_reserve: int) -> Ask:
    """What a request reserves: its prompt's tokens (`gateway.text.reserved_prompt_tokens`), plus
    the output it asks for (`max_completion_tokens` / `max_tokens`, else `output_reserve`, times
    `n`), priced at the dearest deployment that may answer it."""
    output = 0
    if endpoint != "embeddings":
        asked = payload.get("max_completion_tokens") or payload.get("max_tokens") or output_reserve
        output = int(asked) * int(payload.get("n") or 1)
    prompt = reserved_prompt_tokens(endpoint, payload)
    usage = Usage(prompt_tokens=prompt, completion_tokens=output, total_tokens=prompt + output)
    cost = max((d.cost(usage) for pool in chain for d in pool.deployments), default=0.0)
    return Ask(prompt + output, cost)
