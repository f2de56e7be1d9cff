"""Rate and spend counters: requests and tokens in one-second buckets over a sliding 60 s window,
and USD spent per budget period. An admission checks every limit and reserves against all of them,
or none; a settlement moves a reservation to what was used.

Two implementations of one contract: `MemoryCounters` (one process; the reference) and
`RedisCounters` (one Lua script per admission and per settlement, so that workers and replicas
share the limits atomically; the window follows Redis's clock).
"""

from __future__ import annotations

import asyncio
import calendar
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.access.keys import Principal
from gateway.redis_client import is_cluster, tag

WINDOW_S = 60
OK, REQUESTS, TOKENS, BUDGET = 0, 1, 2, 3
KINDS = {REQUESTS: "requests", TOKENS: "tokens", BUDGET: "budget"}


@dataclass(slots=True)
class Ask:
    """What a request reserves: at least `tokens` (the prompt estimate and the output it asks for,
    or its minimal answer) at their worst `cost`; and up to `extra` more output tokens at
    `extra_rate` USD each, granted as far as the key's token limit and budgets still pay for them
    (a request that sets no `max_tokens`)."""

    tokens: int
    cost: float
    extra: int = 0
    extra_rate: float = 0.0

    def granted(self, extra: int) -> Ask:
        """The reservation with `extra` of the extra tokens granted."""
        return Ask(self.tokens + extra, self.cost + extra * self.extra_rate)


@dataclass(slots=True)
class Verdict:
    """The counters' answer. `retry_after` < 0: the request can never fit (it alone exceeds the limit)."""

    outcome: int
    retry_after: float = 0.0
    requests_left: int = -1
    requests_reset: float = 0.0
    tokens_left: int = -1
    tokens_reset: float = 0.0
    period: str = ""
    """For BUDGET: the period (`day`, `month`) that is spent."""
    extra: int = 0
    """For OK: how many of the ask's extra tokens were granted."""
    spent: tuple[float, ...] = ()
    """For OK: each budget period's spend after this reservation, in the order asked."""


class Counters(Protocol):
    async def admit(self, principal: Principal, ask: Ask, periods: Sequence[tuple[str, str, float, int]]) -> tuple[int, Verdict]:
        """Check every limit and reserve against all of them, or none. `periods`: (period, id,
        budget USD, seconds until the period ends). Returns the bucket it counted in."""
        ...

    async def settle(self, principal: Principal, bucket: int, token_delta: int, cost_delta: float, ids: Sequence[str]) -> None:
        """Move a reservation to the actual usage (deltas are actual - reserved)."""
        ...

    async def spent(self, principal: Principal, ids: Sequence[str]) -> list[float]: ...


@dataclass(slots=True)
class Known:
    """A key's counts as the shared counters last reported them: requests and tokens in the window
    (counted at `bucket`), and the spend of each budget period id."""

    bucket: int
    requests: int
    tokens: int
    spent: dict[str, float]


def period_ids(now: float) -> dict[str, tuple[str, int]]:
    """Each budget period's id and the whole seconds until it ends (UTC calendar day and month)."""
    day = datetime.fromtimestamp(now, UTC)
    day_end = calendar.timegm((day.year, day.month, day.day, 0, 0, 0)) + 86400
    next_month = (day.year + day.month // 12, day.month % 12 + 1)
    month_end = calendar.timegm((*next_month, 1, 0, 0, 0))
    return {
        "day": (f"day:{day:%Y%m%d}", math.ceil(day_end - now)),
        "month": (f"month:{day:%Y%m}", math.ceil(month_end - now)),
    }


class MemoryCounters:
    """The counters in this process. The reference for the Redis script, which does the same."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._requests: dict[str, dict[int, int]] = {}
        self._tokens: dict[str, dict[int, int]] = {}
        self._spend: dict[tuple[str, str], tuple[float, float]] = {}  # (key id, period id) -> (USD, expires at)

    async def admit(self, principal: Principal, ask: Ask, periods: Sequence[tuple[str, str, float, int]]) -> tuple[int, Verdict]:
        now = self._clock()
        bucket = math.floor(now)
        verdict = Verdict(OK)
        requests = self._requests.setdefault(principal.id, {}) if principal.rpm else None
        tokens = self._tokens.setdefault(principal.id, {}) if principal.tpm else None
        if requests is not None and principal.rpm:
            used, live = _window(requests, bucket)
            if used + 1 > principal.rpm:
                return bucket, Verdict(REQUESTS, _wait(live, used, 1, principal.rpm, now), 0, _reset(live, now))
            verdict.requests_left, verdict.requests_reset = principal.rpm - used - 1, _reset([*live, (bucket, 1)], now)
        extra = ask.extra
        counted: list[tuple[int, int]] = []
        if tokens is not None and principal.tpm:
            used, counted = _window(tokens, bucket)
            if used + ask.tokens > principal.tpm:
                wait = -1.0 if ask.tokens > principal.tpm else _wait(counted, used, ask.tokens, principal.tpm, now)
                left = max(0, principal.tpm - used)
                return bucket, Verdict(TOKENS, wait, verdict.requests_left, verdict.requests_reset, left, _reset(counted, now))
            extra = min(extra, principal.tpm - used - ask.tokens)
        for period, pid, limit, ends_in in periods:
            spent, _ = self._spend.get((principal.id, pid), (0.0, 0.0))
            if spent >= limit or spent + ask.cost > limit:
                return bucket, Verdict(BUDGET, float(ends_in), period=period)
            if ask.extra_rate > 0:
                extra = min(extra, math.floor((limit - spent - ask.cost) / ask.extra_rate))
        reserved = ask.granted(extra)
        verdict.extra = extra
        if tokens is not None and principal.tpm:
            verdict.tokens_left = principal.tpm - sum(v for _, v in counted) - reserved.tokens
            verdict.tokens_reset = _reset([*counted, (bucket, reserved.tokens)], now)
        if requests is not None:
            requests[bucket] = requests.get(bucket, 0) + 1
        if tokens is not None:
            tokens[bucket] = tokens.get(bucket, 0) + reserved.tokens
        after = []
        for _, pid, _, ends_in in periods:
            spent, _ = self._spend.get((principal.id, pid), (0.0, 0.0))
            self._spend[principal.id, pid] = (spent + reserved.cost, now + ends_in)
            after.append(spent + reserved.cost)
        verdict.spent = tuple(after)
        self._drop_expired(now)
        return bucket, verdict

    def resume(self, principal: Principal, known: Known, periods: Sequence[tuple[str, str, float, int]]) -> None:
        """Start counting a key from what the shared counters last said of it (when Redis has gone
        away), unless this process counts it already."""
        now = self._clock()
        if principal.rpm and principal.id not in self._requests:
            self._requests[principal.id] = {known.bucket: known.requests}
        if principal.tpm and principal.id not in self._tokens:
            self._tokens[principal.id] = {known.bucket: known.tokens}
        for _, pid, _, ends_in in periods:
            if (principal.id, pid) not in self._spend and pid in known.spent:
                self._spend[principal.id, pid] = (known.spent[pid], now + ends_in)

    async def settle(self, principal: Principal, bucket: int, token_delta: int, cost_delta: float, ids: Sequence[str]) -> None:
        self.settle_now(principal, bucket, token_delta, cost_delta, ids)

    def settle_now(self, principal: Principal, bucket: int, token_delta: int, cost_delta: float, ids: Sequence[str]) -> None:
        tokens = self._tokens.get(principal.id)
        if token_delta and tokens is not None and bucket in tokens:
            tokens[bucket] += token_delta
        for pid in ids:
            if (principal.id, pid) in self._spend:
                spent, expires = self._spend[principal.id, pid]
                self._spend[principal.id, pid] = (spent + cost_delta, expires)

    async def spent(self, principal: Principal, ids: Sequence[str]) -> list[float]:
        return [self._spend.get((principal.id, pid), (0.0, 0.0))[0] for pid in ids]

    def _drop_expired(self, now: float) -> None:
        if len(self._spend) > 4096:
            self._spend = {k: v for k, v in self._spend.items() if v[1] > now}


def _window(buckets: dict[int, int], bucket: int) -> tuple[int, list[tuple[int, int]]]:
    for old in [b for b in buckets if b <= bucket - WINDOW_S]:
        del buckets[old]
    live = sorted(buckets.items())
    return sum(v for _, v in live), live


def _wait(live: list[tuple[int, int]], used: int, amount: int, limit: int, now: float) -> float:
    """Seconds until enough of the window has gone by for `amount` more to fit."""
    free, gone = used + amount - limit, 0
    for bucket, value in live:
        gone += value
        if gone >= free:
            return bucket + WINDOW_S - now
    return float(WINDOW_S)


def _reset(live: list[tuple[int, int]], now: float) -> float:
    """Seconds until the oldest counted second leaves the window (and the remaining count goes up)."""
    return max(0.0, live[0][0] + WINDOW_S - now) if live else 0.0


_LUA_COMMON = """
local W = 60
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local bucket = math.floor(now)
local function window(key)
  local flat = redis.call('HGETALL', key)
  local used, live = 0, {}
  for i = 1, #flat, 2 do
    local b, v = tonumber(flat[i]), tonumber(flat[i + 1])
    if b <= bucket - W then redis.call('HDEL', key, flat[i]) else used = used + v; live[#live + 1] = {b, v} end
  end
  table.sort(live, function(x, y) return x[1] < y[1] end)
  return used, live
end
local function wait(live, used, amount, limit)
  local free, gone = used + amount - limit, 0
  for _, bv in ipairs(live) do
    gone = gone + bv[2]
    if gone >= free then return bv[1] + W - now end
  end
  return W
end
local function reset(live, extra)
  local oldest = bucket
  if #live > 0 and live[1][1] < oldest then oldest = live[1][1] end
  if #live == 0 and extra == 0 then return 0 end
  return math.max(0, oldest + W - now)
end
"""

_ADMIT = (
    _LUA_COMMON
    + """
local rpm, tpm, tokens, cost = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local rkey, tkey = KEYS[1], KEYS[2]
local out = {'0', '0', '-1', '0', '-1', '0', '', tostring(bucket), '0'}
if rpm > 0 then
  local used, live = window(rkey)
  if used + 1 > rpm then
    return {'1', tostring(wait(live, used, 1, rpm)), '0', tostring(reset(live, 0)), '-1', '0', '', tostring(bucket), '0'}
  end
  out[3], out[4] = tostring(rpm - used - 1), tostring(reset(live, 1))
end
local extra, rate = tonumber(ARGV[8]), tonumber(ARGV[9])
local tused, tlive = 0, {}
if tpm > 0 then
  tused, tlive = window(tkey)
  if tused + tokens > tpm then
    local w = -1
    if tokens <= tpm then w = wait(tlive, tused, tokens, tpm) end
    local left = tostring(math.max(0, tpm - tused))
    return {'2', tostring(w), out[3], out[4], left, tostring(reset(tlive, 0)), '', tostring(bucket), '0'}
  end
  extra = math.min(extra, tpm - tused - tokens)
end
local n = tonumber(ARGV[7])
for i = 0, n - 1 do
  local period, pid, limit, ends = ARGV[10 + 4 * i], ARGV[11 + 4 * i], tonumber(ARGV[12 + 4 * i]), ARGV[13 + 4 * i]
  local spent = tonumber(redis.call('GET', KEYS[3 + i]) or '0')
  if spent >= limit or spent + cost > limit then return {'3', ends, '-1', '0', '-1', '0', period, tostring(bucket), '0'} end
  if rate > 0 then extra = math.min(extra, math.floor((limit - spent - cost) / rate)) end
end
tokens, cost = tokens + extra, cost + extra * rate
if tpm > 0 then out[5], out[6] = tostring(tpm - tused - tokens), tostring(reset(tlive, tokens)) end
if rpm > 0 then redis.call('HINCRBY', rkey, bucket, 1); redis.call('EXPIRE', rkey, 2 * W) end
if tpm > 0 then redis.call('HINCRBY', tkey, bucket, tokens); redis.call('EXPIRE', tkey, 2 * W) end
out[9] = tostring(extra)
for i = 0, n - 1 do
  local key = KEYS[3 + i]
  out[10 + i] = redis.call('INCRBYFLOAT', key, string.format('%.17g', cost))
  redis.call('EXPIRE', key, tonumber(ARGV[13 + 4 * i]) + 86400)
end
return out
"""
)

_SETTLE = """
local bucket, tokens = ARGV[1], tonumber(ARGV[2])
if tokens ~= 0 and redis.call('HEXISTS', KEYS[1], bucket) == 1 then redis.call('HINCRBY', KEYS[1], bucket, tokens) end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBYFLOAT', KEYS[i], ARGV[3]) end
end
return 1
"""


class RedisCounters:
    """The same counters in Redis, shared by every worker and replica; the window follows Redis's clock.

    A key's counters are `rl:<id>:r` (requests), `rl:<id>:t` (tokens) and `spend:<id>:<period id>`
    under the prefix; on Redis Cluster the id is a hash tag (`rl:{<id>}:r`), so that one script
    may touch them all."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._p = prefix
        self._cluster = is_cluster(client)
        self._admit = client.register_script(_ADMIT)
        self._settle = client.register_script(_SETTLE)

    def _keys(self, principal: Principal, ids: Sequence[str]) -> list[str]:
        """The key's request and token windows, then its spend in each period of `ids`."""
        id_ = tag(self._client, principal.id)
        return [f"{self._p}rl:{id_}:r", f"{self._p}rl:{id_}:t", *(f"{self._p}spend:{id_}:{pid}" for pid in ids)]

    async def admit(self, principal: Principal, ask: Ask, periods: Sequence[tuple[str, str, float, int]]) -> tuple[int, Verdict]:
        args: list[Any] = [self._p, principal.id, principal.rpm or 0, principal.tpm or 0, ask.tokens, repr(ask.cost)]
        args += [len(periods), ask.extra, repr(ask.extra_rate)]
        for period, pid, limit, ends_in in periods:
            args += [period, pid, repr(limit), ends_in]
        keys = self._keys(principal, [pid for _, pid, _, _ in periods])
        raw = [r.decode() if isinstance(r, bytes) else str(r) for r in await self._admit(keys=keys, args=args)]
        verdict = Verdict(int(raw[0]), float(raw[1]), int(raw[2]), float(raw[3]), int(raw[4]), float(raw[5]), raw[6])
        verdict.extra = int(float(raw[8]))
        verdict.spent = tuple(float(v) for v in raw[9:])
        return int(raw[7]), verdict

    async def settle(self, principal: Principal, bucket: int, token_delta: int, cost_delta: float, ids: Sequence[str]) -> None:
        await self._settle(keys=self._keys(principal, ids)[1:], args=[bucket, token_delta, repr(cost_delta)])

    async def settle_many(self, items: Sequence[tuple[Principal, int, int, float, Sequence[str]]]) -> None:
        """Several settlements in one round trip (a pipeline of the same script). A cluster's
        pipeline does not load a script a node lacks, so there each goes on its own, together."""
        if self._cluster:
            await asyncio.gather(*(self.settle(*item) for item in items))
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for principal, bucket, token_delta, cost_delta, ids in items:
                keys = self._keys(principal, ids)[1:]
                await self._settle(keys=keys, args=[bucket, token_delta, repr(cost_delta)], client=pipe)
            await pipe.execute()

    async def spent(self, principal: Principal, ids: Sequence[str]) -> list[float]:
        if not ids:
            return []
        values = await self._client.mget(self._keys(principal, ids)[2:])
        return [float(v) if v is not None else 0.0 for v in values]
