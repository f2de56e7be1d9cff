"""Cache entries in Redis, shared by every worker and replica.

Keys, under `{redis.key_prefix}cache:` (on Redis Cluster `{redis.key_prefix}{cache}:`: one hash slot,
so that a put and the evictions it makes stay one script):

    e:{id}   hash   k (exact key), n (namespace), b (body), x (expires at), t (text), v (vector)
                    with a Redis TTL: the entry ends when it should, on every worker at once
    lru      zset   id -> a counter bumped on every put and hit; the lowest goes first past max_entries
    exp      zset   id -> expires at; expired ids leave `lru` on the next put
    tick     int    the counter
    log      stream every entry added with a vector (id, n, v, x) or removed (id, n), capped;
                    record ids are `{seq}-0`, so a reader knows when it missed one
    seq      int    the last record's number
    thresholds hash namespace -> the verifier threshold feedback raised it to (only ever raised)

Writes are Lua scripts, so a put, its eviction and its log records are one atomic step and one
round trip; so is a read, which also bumps the entry in `lru`. The scripts declare the keys they
are called for; the entries a put evicts, found as it runs, share their hash slot.

Each worker rebuilds its vector index from the `e:` hashes at start (`follow`), then tails `log`.
If it misses a record (trimmed before it read it, or Redis lost its data) or loses Redis, it rebuilds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.cache.store import Change, Entry, StoreUnavailable, within
from gateway.redis_client import client, tag
from gateway.tasks import raise_if_cancelled

log = logging.getLogger("gateway.cache")

_RECORD = """
local function record(p, maxlen, ...)
  redis.call('XADD', p .. 'log', 'MAXLEN', '~', maxlen, redis.call('INCR', p .. 'seq') .. '-0', ...)
end
"""

_PUT = (
    _RECORD
    + """
local p, id, ttl_ms, expires_at, max, maxlen, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7]
local entry = p .. 'e:' .. id
redis.call('DEL', entry)
redis.call('HSET', entry, 'k', ARGV[8], 'n', ARGV[9], 'b', ARGV[10], 'x', expires_at)
if ARGV[11] == '1' then redis.call('HSET', entry, 't', ARGV[12]) end
if ARGV[13] ~= '' then redis.call('HSET', entry, 'v', ARGV[13]) end
redis.call('PEXPIRE', entry, ttl_ms)
redis.call('ZADD', p .. 'lru', redis.call('INCR', p .. 'tick'), id)
redis.call('ZADD', p .. 'exp', expires_at, id)
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', p .. 'exp', '-inf', now)) do
  redis.call('ZREM', p .. 'lru', gone)
  redis.call('ZREM', p .. 'exp', gone)
end
local dropped = {}
local over = redis.call('ZCARD', p .. 'lru') - max
if over > 0 then
  for _, gone in ipairs(redis.call('ZRANGE', p .. 'lru', 0, over - 1)) do
    local ns = redis.call('HGET', p .. 'e:' .. gone, 'n')
    redis.call('DEL', p .. 'e:' .. gone)
    redis.call('ZREM', p .. 'lru', gone)
    redis.call('ZREM', p .. 'exp', gone)
    if ns then
      record(p, maxlen, 'id', gone, 'n', ns)
      table.insert(dropped, gone)
      table.insert(dropped, ns)
    end
  end
end
if ARGV[13] ~= '' then
  record(p, maxlen, 'id', id, 'n', ARGV[9], 'v', ARGV[13], 'x', expires_at)
end
return dropped
"""
)

_GET = """
local p, id = ARGV[1], ARGV[2]
local fields = redis.call('HGETALL', p .. 'e:' .. id)
if #fields > 0 then redis.call('ZADD', p .. 'lru', 'XX', redis.call('INCR', p .. 'tick'), id) end
return fields
"""

_DELETE = (
    _RECORD
    + """
local p, id, maxlen = ARGV[1], ARGV[2], ARGV[3]
local fields = redis.call('HGETALL', p .. 'e:' .. id)
redis.call('DEL', p .. 'e:' .. id)
redis.call('ZREM', p .. 'lru', id)
redis.call('ZREM', p .. 'exp', id)
for i = 1, #fields, 2 do
  if fields[i] == 'n' then record(p, maxlen, 'id', id, 'n', fields[i + 1]) end
end
return fields
"""
)

_RAISE = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local wanted = tonumber(ARGV[2])
if wanted > current then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return ARGV[2]
end
return tostring(current)
"""
_CHUNK = 500


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "gw:",
        max_entries: int = 10_000,
        timeout_s: float = 0.25,
        log_max: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self._client = client(url, timeout_s)
        self._p = f"{prefix}{tag(self._client, 'cache')}:"
        self._max = max_entries
        self._log_max = log_max or max(10 * max_entries, 10_000)
        self._clock = clock
        self._put = self._client.register_script(_PUT)
        self._get = self._client.register_script(_GET)
        self._delete = self._client.register_script(_DELETE)
        self._raise = self._client.register_script(_RAISE)

    async def get(self, entry_id: int) -> Entry | None:
        """The entry, while it lives: Redis drops it at its TTL, and until then an entry past its
        `expires_at` by this worker's clock (a replica whose clock runs ahead of Redis's) is dead too."""
        with _Unavailable():
            found = _entry(await self._get(keys=self._keys(entry_id), args=[self._p, entry_id]))
        return found if found is not None and found.expires_at > self._clock() else None

    async def put(self, entry: Entry) -> list[Change]:
        now = self._clock()
        ttl_ms = max(1, math.ceil((entry.expires_at - now) * 1000))
        args: list[Any] = [self._p, entry.id, ttl_ms, repr(entry.expires_at), self._max, self._log_max, repr(now)]
        args += [entry.key, entry.namespace, entry.body, int(entry.text is not None), entry.text or "", entry.vector or b""]
        with _Unavailable():
            dropped = await self._put(keys=self._keys(entry.id), args=args)
        return [Change(int(dropped[i]), dropped[i + 1].decode(), None) for i in range(0, len(dropped), 2)]

    async def delete(self, entry_id: int) -> Entry | None:
        with _Unavailable():
            return _entry(await self._delete(keys=self._keys(entry_id), args=[self._p, entry_id, self._log_max]))

    def _keys(self, entry_id: int) -> list[str]:
        """What the scripts touch: the entry and the shared structures (for a cluster's routing;
        entries a put evicts share their slot)."""
        return [f"{self._p}e:{entry_id}", *(self._p + name for name in ("lru", "exp", "tick", "log", "seq"))]

    async def threshold(self, namespace: str) -> float | None:
        with _Unavailable():
            found = await self._client.hget(f"{self._p}thresholds", namespace)
        return None if found is None else float(found)

    async def raise_threshold(self, namespace: str, value: float) -> float:
        with _Unavailable():
            return float(await self._raise(keys=[f"{self._p}thresholds"], args=[namespace, repr(value)]))

    async def ids(self, namespace: str | None = None) -> list[int]:
        with _Unavailable():
            return await self._ids(namespace)

    async def _ids(self, namespace: str | None) -> list[int]:
        live = await self._live(self._client)
        if namespace is None:
            return live
        found = []
        for start in range(0, len(live), _CHUNK):
            chunk = live[start : start + _CHUNK]
            async with self._client.pipeline(transaction=False) as pipe:
                for i in chunk:
                    pipe.hget(f"{self._p}e:{i}", "n")
                names = await pipe.execute()
            found += [i for i, n in zip(chunk, names, strict=True) if n is not None and within(n.decode(), namespace)]
        return found

    async def count(self) -> int:
        with _Unavailable():
            return int(await self._client.zcount(f"{self._p}exp", f"({self._clock()!r}", "+inf"))

    async def follow(self, apply: Callable[[Change], None], reset: Callable[[], None], block_ms: int = 1000) -> None:
        feed = client(self._url, block_ms / 1000 + 5)  # a blocking read outlasts the requests' timeout
        lost = False
        try:
            while True:
                try:
                    last = await self._snapshot(feed, apply, reset)
                    if lost:
                        log.info("cache index in step with Redis again")
                    lost = False
                    while (read_to := await self._tail(feed, last, apply, block_ms)) is not None:
                        raise_if_cancelled()  # a blocking read can swallow a cancellation and just return
                        last = read_to
                    log.warning("cache change feed fell behind its cap; rebuilding this worker's index")
                except (RedisError, OSError) as exc:
                    raise_if_cancelled(exc)
                    if not lost:
                        log.warning("cache change feed lost (%s); retrying every second", type(exc).__name__)
                    lost = True
                    await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await feed.aclose()

    async def aclose(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()

    async def _snapshot(self, feed: aioredis.Redis, apply: Callable[[Change], None], reset: Callable[[], None]) -> int:
        """Every live entry with a vector; returns the feed record they are current to."""
        last = int(await feed.get(f"{self._p}seq") or 0)
        ids = await self._live(feed)
        reset()
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            async with feed.pipeline(transaction=False) as pipe:
                for i in chunk:
                    pipe.hmget(f"{self._p}e:{i}", ["n", "v", "x"])
                rows = await pipe.execute()
            for i, (n, v, x) in zip(chunk, rows, strict=True):
                if n is not None and v is not None:
                    apply(Change(i, n.decode(), v, float(x)))
        return last

    async def _live(self, redis: aioredis.Redis) -> list[int]:
        ids: list[bytes] = await redis.zrangebyscore(f"{self._p}exp", f"({self._clock()!r}", "+inf")  # type: ignore[assignment]
        return [int(i) for i in ids]

    async def _tail(self, feed: aioredis.Redis, last: int, apply: Callable[[Change], None], block_ms: int) -> int | None:
        """Apply the feed's records after record `last`; None when one was missed (trimmed before it
        was read, or Redis lost its data), and the index must be rebuilt."""
        replies: Any = await feed.xread({f"{self._p}log": f"{last}-0"}, count=1000, block=block_ms)
        if not replies:  # quiet: check that the counter did not go back (Redis emptied under us)
            return last if int(await feed.get(f"{self._p}seq") or 0) >= last else None
        for record_id, fields in replies[0][1]:
            seq = int(record_id.partition(b"-")[0])
            if seq != last + 1:
                return None
            vector, expires = fields.get(b"v"), fields.get(b"x")
            apply(Change(int(fields[b"id"]), fields[b"n"].decode(), vector, float(expires) if expires else math.inf))
            last = seq
        return last


class _Unavailable:
    """Redis errors and timeouts as `StoreUnavailable`."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, RedisError | OSError):
            raise StoreUnavailable(f"Redis: {type(exc).__name__}") from exc


def _entry(fields: list[bytes]) -> Entry | None:
    if not fields:
        return None
    f = dict(zip(fields[::2], fields[1::2], strict=True))
    text = f.get(b"t")
    return Entry(
        f[b"k"].decode(), f[b"n"].decode(), None if text is None else text.decode(), f[b"b"], float(f[b"x"]), f.get(b"v")
    )
