"""The Redis client the gateway's shared state goes through: cache entries, keys, limits and budgets."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

POOL_SIZE = 64
"""Connections per client. Redis runs commands one at a time, so more would only queue there; a
request that finds them all busy waits for one (up to its timeout) instead of failing at once,
as redis-py's default pool does past 100 concurrent calls."""


def client(url: str, timeout_s: float) -> aioredis.Redis:
    """A client that fails at once rather than retrying: its caller decides what a failure means."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes its connections
