"""Open circuit breakers shared by every worker and replica through Redis.

Each worker runs its own breakers on what it sees. Every `breaker_sync_interval_s` it publishes
the breakers it has opened (`{prefix}breaker:{deployment id}` = wall-clock time until which it is
open, expiring then) and opens its own copy of every breaker another worker has published, until
the same time. One round trip per tick, never on the request path. Without Redis, or while Redis
is unreachable, breakers are simply per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from gateway.redis_client import client
from gateway.routing.pools import Deployment
from gateway.tasks import raise_if_cancelled

if TYPE_CHECKING:
    from gateway.runtime import Runtime  # the live config; imported for its type only (it builds HTTP backends)

log = logging.getLogger("gateway.breakers")


class BreakerSync:
    def __init__(self, runtime: Callable[[], Runtime]) -> None:
        self._runtime = runtime
        self._client: Any = None  # a client of gateway.redis_client: one Redis, Sentinel's master, or a cluster
        self._url: str | None = None
        self._published: dict[str, float] = {}  # deployment id -> monotonic open_until sent or taken
        self._healthy = True
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            settings = self._runtime().settings
            url = settings.redis.address()
            if url is not None and settings.resilience.share_breakers:
                try:
                    await self._tick(url, settings.redis.key_prefix)
                except Exception:  # the sync must outlive its own bugs; breakers still work per worker
                    log.exception("breaker sync failed")
            raise_if_cancelled()
            await asyncio.sleep(settings.resilience.breaker_sync_interval_s)

    async def _tick(self, url: str, prefix: str) -> None:
        client = await self._connect(url)
        deployments = _unique(self._runtime())
        keys = [f"{prefix}breaker:{d.id}" for d in deployments]
        try:
            async with client.pipeline(transaction=False) as pipe:
                for key, d in zip(keys, deployments, strict=True):
                    self._publish(pipe, key, d)
                for key in keys:  # not MGET: on a cluster the keys lie in different slots
                    pipe.get(key)
                replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            if self._healthy:
                log.warning("breaker state is per worker until Redis answers again: %s", type(exc).__name__)
            self._healthy = False
            return
        if not self._healthy:
            log.info("breaker state is shared through Redis again")
        self._healthy = True
        self._adopt(deployments, replies[-len(keys) :] if keys else [])

    def _publish(self, pipe: Any, key: str, d: Deployment) -> None:
        breaker = d.breaker
        if breaker.state != "open" or breaker.open_until <= self._published.get(d.id, 0.0):
            return
        seconds = breaker.open_until - time.monotonic()
        if seconds > 0.001:
            pipe.set(key, repr(time.time() + seconds), px=int(seconds * 1000))
            self._published[d.id] = breaker.open_until

    def _adopt(self, deployments: list[Deployment], values: list[bytes | None]) -> None:
        for d, value in zip(deployments, values, strict=True):
            if value is None:
                continue
            try:
                until = float(value) - time.time() + time.monotonic()
            except ValueError:
                continue
            d.breaker.open_until_at_least(until)
            self._published[d.id] = max(self._published.get(d.id, 0.0), d.breaker.open_until)

    async def _connect(self, url: str) -> Any:
        if self._client is None or url != self._url:
            if self._client is not None:
                await self._client.aclose()
            self._client = client(url, 1.0)
            self._url = url
        return self._client


def _unique(runtime: Runtime) -> list[Deployment]:
    return [d for pool in runtime.pools for d in pool.deployments]
