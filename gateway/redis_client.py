"""The Redis client the gateway's shared state goes through: cache entries, keys, limits, budgets
and breakers. `redis.url` names one of three deployments:

    redis://[[user]:password@]host:port/db      one Redis (with replicas of its own, or none);
    rediss://...                                 the same over TLS; unix:///path.sock?db=0 too
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]
                                                 the master Sentinel names for `service`: after a
                                                 failover, new connections go to the new master
    redis+cluster://[[user]:password@]host:port[,host:port...]
                                                 Redis Cluster, from any of its nodes

(`rediss+sentinel://` and `rediss+cluster://` speak TLS to the data nodes.) With Sentinel the
password is the data nodes'; sentinels that want one of their own take `?sentinel_password=`.

On Redis Cluster a Lua script may only touch keys of one hash slot, so key names carry hash
tags there (`tag`): a key's counters share `{<key id>}`, the made keys' records share `{key}`,
the cache's `{cache}`. A single Redis and Sentinel keep the untagged names they always had, so an
upgrade keeps its data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

POOL_SIZE = 64
"""Connections per client (per node on a cluster). Redis runs commands one at a time, so more
would only queue there; a request that finds them all busy waits for one (up to its timeout)
instead of failing at once, as redis-py's default pool does past 100 concurrent calls."""
CLUSTER_POOL_SIZE = 256
"""Per node on a cluster, whose client fails a command rather than wait for a connection."""
SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://", "redis+cluster://", "rediss+cluster://")


class BadURL(ValueError):
    """`redis.url` that names no deployment; the message never quotes the URL (it may hold a password)."""


@dataclass(frozen=True)
class Target:
    kind: str  # "single", "sentinel" or "cluster"
    nodes: list[tuple[str, int]] = field(default_factory=list)
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    tls: bool = False


def target(url: str) -> Target:
    """What `url` names; `BadURL` when it names nothing."""
    scheme, _, rest = url.partition("://")
    if not rest or f"{scheme}://" not in SCHEMES:
        raise BadURL(f"must start with {', '.join(SCHEMES[:-1])} or {SCHEMES[-1]}")
    if "+" not in scheme:
        return Target("single")
    kind = scheme.partition("+")[2]
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    user, _, password = credentials.partition(":")
    nodes = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadURL(f"every node must be host:port, as in {scheme}://10.0.0.1:{26379 if kind == 'sentinel' else 6379}")
        nodes.append((name.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    query = parse_qs(parts.query)
    if kind == "sentinel":
        if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise BadURL("a Sentinel URL names its service and optionally a db: redis+sentinel://host:26379/mymaster/0")
        service, db = unquote(path[0]), int(path[1]) if len(path) == 2 else 0
    else:
        if path:
            raise BadURL("a Redis Cluster URL has no path: a cluster has only db 0")
        service, db = "", 0
    sentinel_password = query.get("sentinel_password", [None])[0]
    return Target(
        kind, nodes, service, db, unquote(user) or None, unquote(password) or None, sentinel_password, scheme.startswith("rediss")
    )


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool (connections go to the master it names now) that waits for a free
    connection as `BlockingConnectionPool` does."""


def client(url: str, timeout_s: float) -> Any:
    """A client that fails at once rather than retrying: its caller decides what a failure means
    (a retried admission could charge twice). A cluster client still follows MOVED and ASK."""
    where = target(url)
    no_retry = Retry(NoBackoff(), 0)
    timeouts: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    auth: dict[str, Any] = {"username": where.username, "password": where.password}
    if where.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in where.nodes]
        return RedisCluster(
            startup_nodes=nodes, max_connections=CLUSTER_POOL_SIZE, retry=no_retry, ssl=where.tls, **timeouts, **auth
        )
    if where.kind == "sentinel":
        sentinels = Sentinel(where.nodes, sentinel_kwargs={**timeouts, "password": where.sentinel_password})
        return sentinels.master_for(
            where.service,
            connection_pool_class=_BlockingSentinelPool,
            max_connections=POOL_SIZE,
            timeout=timeout_s,
            retry=no_retry,
            db=where.db,
            ssl=where.tls,
            **timeouts,
            **auth,
        )
    pool = BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE, timeout=timeout_s, retry=no_retry, **timeouts)
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes its connections


def is_cluster(redis: Any) -> bool:
    return isinstance(redis, RedisCluster)


def tag(redis: Any, name: str) -> str:
    """`name` as a hash tag on a cluster (keys that share it share a slot), as it is elsewhere."""
    return "{" + name + "}" if is_cluster(redis) else name
