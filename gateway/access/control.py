"""Who may call, and how much: the keys (config and Redis), the limits, and what a request reserves.

Built once at start (the Redis client and the failure policy); the config's keys and whether auth
is on are read from the live config on every request, so a reload adds, changes or removes keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from backends.types import Endpoint, Usage
from gateway.access.counters import Ask
from gateway.access.keys import KeyTable, Principal, RedisKeys, authenticate
from gateway.access.limits import Limits
from gateway.access.tokens import for_deployment, request_tokens
from gateway.redis_client import client as redis_client
from gateway.routing.pools import Deployment, Pool
from gateway.settings import Settings

log = logging.getLogger("gateway.access.control")


class Access:
    def __init__(self, settings: Settings) -> None:
        auth = settings.auth
        url = settings.redis.address()
        store = auth.store or ("redis" if url else "memory")
        self.client: Any = redis_client(url, auth.store_timeout_s) if store == "redis" and url else None
        prefix = settings.redis.key_prefix
        self.policy = auth.store_policy()
        self.keys = RedisKeys(self.client, prefix) if self.client is not None else None
        self.limits = Limits(self.client, prefix, self.policy)
        self._sync_s = auth.revocation_sync_s
        self._sync: asyncio.Task[None] | None = None
        if not auth.enabled:
            log.warning("auth is off (auth.enabled: false): anyone who can reach this gateway may call it, with no limits")

    async def authenticate(self, headers: Iterable[tuple[bytes, bytes]], table: KeyTable) -> Principal:
        return await authenticate(headers, table, self.keys, self.policy.keys == "open")

    def revocations_known(self) -> int:
        return 0 if self.keys is None else len(self.keys.revoked)

    def start(self) -> None:
        """Keep this process's revocation list in step with Redis (needs the event loop)."""
        if self.keys is not None:
            self._sync = asyncio.get_running_loop().create_task(self._follow_revocations(self.keys))

    async def _follow_revocations(self, keys: RedisKeys) -> None:
        while True:
            try:
                await keys.sync()
            except (RedisError, OSError):
                pass  # an outage: the list read so far stays
            except Exception:  # the sync must outlive its own bugs
                log.exception("revocation sync failed")
            await asyncio.sleep(self._sync_s)

    async def aclose(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync
        await self.limits.drain()
        if self.client is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.client.aclose()


DEFAULT_MAX_OUTPUT_TOKENS = 4096
"""The output cap of a deployment without `max_output_tokens`, for a request whose key has limits."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """What a request reserves, and for one that sets no output limit, the limit the gateway sets."""

    ask: Ask
    prompt: int
    """The whole request's estimated tokens."""
    copies: int
    """Answers generated: the larger of `n` and `best_of`."""
    least: int | None
    """Output tokens per answer at least (None: the request set its own limit)."""

    def output_cap(self, extra: int) -> int | None:
        """The `max_tokens` to send, given the extra tokens the limits granted (None: the request's own)."""
        return None if self.least is None else self.least + extra // self.copies

    def usage(self, extra: int) -> Usage:
        """The usage the reservation stands for (what is charged when the real figure cannot be known)."""
        output = self.ask.tokens - self.prompt + extra
        return Usage(prompt_tokens=self.prompt, completion_tokens=output, total_tokens=self.prompt + output)


def reservation(endpoint: Endpoint, payload: dict[str, Any], chain: Sequence[Pool], least: int, prompt: int) -> Reservation:
    """What a request reserves: its whole request's tokens (`prompt`, from `counted`), plus the
    output it asks for (`max_completion_tokens` / `max_tokens` times `n` or `best_of`), priced at
    the dearest deployment that may answer it. A request that sets no output limit reserves `least`
    tokens per answer and asks for up to its chain's output cap more, granted as far as its key's
    token limit and budgets pay for them."""
    deployments = [d for pool in chain for d in pool.deployments]
    input_rate = max((d.cost(Usage(prompt_tokens=1, total_tokens=1)) for d in deployments), default=0.0)
    output_rate = max((d.cost(Usage(completion_tokens=1, total_tokens=1)) for d in deployments), default=0.0)
    if endpoint == "embeddings":
        return Reservation(Ask(prompt, prompt * input_rate), prompt, 1, None)
    copies = max(_count(payload.get("n")), _count(payload.get("best_of")))
    if (asked := output_limit(payload)) is not None:
        output = asked * copies
        return Reservation(Ask(prompt + output, prompt * input_rate + output * output_rate), prompt, copies, None)
    cap = max((d.settings.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS for d in deployments), default=DEFAULT_MAX_OUTPUT_TOKENS)
    least = min(least, cap)
    fixed = prompt + least * copies
    ask = Ask(fixed, prompt * input_rate + least * copies * output_rate, (cap - least) * copies, output_rate)
    return Reservation(ask, prompt, copies, least)


def _count(value: object) -> int:
    return value if isinstance(value, int) and value > 1 else 1


async def counted(endpoint: Endpoint, payload: dict[str, Any], chain: Sequence[Pool], model: str) -> int:
    """The request's tokens by the tokenizer of each deployment of its chain, at most."""
    deployments = [d for pool in chain for d in pool.deployments]
    counters = [for_deployment(d, model) for d in deployments]
    return await request_tokens(endpoint, payload, counters)


def limit_output(endpoint: Endpoint, payload: dict[str, Any], deployment: Deployment, cap: int | None) -> None:
    """Before an attempt on `deployment`: a request that set no output limit is sent the smaller of
    `cap` (what its key's limits granted) and the deployment's `max_output_tokens` (the default cap
    when the key has limits); the request's own limit is left as it is."""
    if endpoint == "embeddings":
        return
    field = "max_tokens" if endpoint == "completions" else deployment.settings.output_limit_field
    own = deployment.settings.max_output_tokens
    if cap is not None:
        payload[field] = min(cap, own or DEFAULT_MAX_OUTPUT_TOKENS)
    elif own is not None:
        payload[field] = own


def output_limit(payload: dict[str, Any]) -> int | None:
    """The output limit the request sets itself (None: none)."""
    asked = payload.get("max_completion_tokens") or payload.get("max_tokens")
    return asked if isinstance(asked, int) and asked > 0 else None
