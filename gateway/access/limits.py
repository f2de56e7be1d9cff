"""Per-key rate limits (requests and tokens per minute) and spend budgets (USD per day / month).

Both count in one-second buckets over a sliding 60 s window: a key limited to N requests per
minute is admitted at most N times in any 60 s (to the second), with no burst at a window edge.
A request reserves up front what it may use (one request; its prompt's estimated tokens plus the
output it asks for; that many tokens' worst price) and settles to what it used when it ends, so
concurrent requests cannot together overrun a limit or a budget.

Two counters with the same contract: `MemoryCounters` (one process) and `RedisCounters` (one Lua
script per admission and per settlement, so several workers and replicas share the limits
atomically). `Limits` chooses between them and applies the failure policy when Redis is down.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from redis.exceptions import RedisError

from gateway.access.keys import Principal
from gateway.errors import APIError, ServiceUnavailable

log = logging.getLogger("gateway.access.limits")

WINDOW_S = 60
OK, REQUESTS, TOKENS, BUDGET = 0, 1, 2, 3
_KINDS = {REQUESTS: "requests", TOKENS: "tokens", BUDGET: "budget"}


@dataclass(slots=True)
class Ask:
    """What a request reserves: tokens (prompt estimate + output asked for) and their worst cost."""

    tokens: int
    cost: float


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


@dataclass(slots=True)
class Admission:
    """An admitted request's reservation, to be settled when it ends."""

    principal: Principal
    bucket: int
    ask: Ask
    periods: list[tuple[str, str]]
    """(period, its id such as `day:20261201`) for each budget reserved against."""
    verdict: Verdict
    counters: Counters
    settled: bool = False

    def headers(self) -> list[tuple[bytes, bytes]]:
        return rate_headers(self.principal, self.verdict)


class Counters(Protocol):
    async def admit(self, principal: Principal, ask: Ask, periods: Sequence[tuple[str, str, float, int]]) -> tuple[int, Verdict]:
        """Check every limit and reserve against all of them, or none. `periods`: (period, id,
        budget USD, seconds until the period ends). Returns the bucket it counted in."""
        ...

    async def settle(self, principal: Principal, bucket: int, token_delta: int, cost_delta: float, ids: Sequence[str]) -> None:
        """Move a reservation to the actual usage (deltas are actual - reserved)."""
        ...

    async def spent(self, principal: Principal, ids: Sequence[str]) -> list[float]: ...


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
        if tokens is not None and principal.tpm:
            used, live = _window(tokens, bucket)
            if used + ask.tokens > principal.tpm:
                wait = -1.0 if ask.tokens > principal.tpm else _wait(live, used, ask.tokens, principal.tpm, now)
                left = max(0, principal.tpm - used)
                return bucket, Verdict(TOKENS, wait, verdict.requests_left, verdict.requests_reset, left, _reset(live, now))
            verdict.tokens_left = principal.tpm - used - ask.tokens
            verdict.tokens_reset = _reset([*live, (bucket, ask.tokens)], now)
        for period, pid, limit, ends_in in periods:
            spent, _ = self._spend.get((principal.id, pid), (0.0, 0.0))
            if spent >= limit or spent + ask.cost > limit:
                return bucket, Verdict(BUDGET, float(ends_in), period=period)
        if requests is not None:
            requests[bucket] = requests.get(bucket, 0) + 1
        if tokens is not None:
            tokens[bucket] = tokens.get(bucket, 0) + ask.tokens
        for _, pid, _, ends_in in periods:
            spent, _ = self._spend.get((principal.id, pid), (0.0, 0.0))
            self._spend[principal.id, pid] = (spent + ask.cost, now + ends_in)
        self._drop_expired(now)
        return bucket, verdict

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
local p, id = ARGV[1], ARGV[2]
local rpm, tpm, tokens, cost = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local rkey, tkey = p .. 'rl:' .. id .. ':r', p .. 'rl:' .. id .. ':t'
local out = {'0', '0', '-1', '0', '-1', '0', '', tostring(bucket)}
if rpm > 0 then
  local used, live = window(rkey)
  if used + 1 > rpm then
    return {'1', tostring(wait(live, used, 1, rpm)), '0', tostring(reset(live, 0)), '-1', '0', '', tostring(bucket)}
  end
  out[3], out[4] = tostring(rpm - used - 1), tostring(reset(live, 1))
end
if tpm > 0 then
  local used, live = window(tkey)
  if used + tokens > tpm then
    local w = -1
    if tokens <= tpm then w = wait(live, used, tokens, tpm) end
    return {'2', tostring(w), out[3], out[4], tostring(math.max(0, tpm - used)), tostring(reset(live, 0)), '', tostring(bucket)}
  end
  out[5], out[6] = tostring(tpm - used - tokens), tostring(reset(live, tokens))
end
local n = tonumber(ARGV[7])
for i = 0, n - 1 do
  local period, pid, limit, ends = ARGV[8 + 4 * i], ARGV[9 + 4 * i], tonumber(ARGV[10 + 4 * i]), ARGV[11 + 4 * i]
  local spent = tonumber(redis.call('GET', p .. 'spend:' .. id .. ':' .. pid) or '0')
  if spent >= limit or spent + cost > limit then return {'3', ends, '-1', '0', '-1', '0', period, tostring(bucket)} end
end
if rpm > 0 then redis.call('HINCRBY', rkey, bucket, 1); redis.call('EXPIRE', rkey, 2 * W) end
if tpm > 0 then redis.call('HINCRBY', tkey, bucket, tokens); redis.call('EXPIRE', tkey, 2 * W) end
for i = 0, n - 1 do
  local key = p .. 'spend:' .. id .. ':' .. ARGV[9 + 4 * i]
  redis.call('INCRBYFLOAT', key, ARGV[6])
  redis.call('EXPIRE', key, tonumber(ARGV[11 + 4 * i]) + 86400)
end
return out
"""
)

_SETTLE = """
local p, id, bucket, tokens = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local tkey = p .. 'rl:' .. id .. ':t'
if tokens ~= 0 and redis.call('HEXISTS', tkey, bucket) == 1 then redis.call('HINCRBY', tkey, bucket, tokens) end
for i = 6, #ARGV do
  local key = p .. 'spend:' .. id .. ':' .. ARGV[i]
  if redis.call('EXISTS', key) == 1 then redis.call('INCRBYFLOAT', key, ARGV[5]) end
end
return 1
"""


class RedisCounters:
    """The same counters in Redis, shared by every worker and replica; the window follows Redis's clock."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._p = prefix
        self._admit = client.register_script(_ADMIT)
        self._settle = client.register_script(_SETTLE)

    async def admit(self, principal: Principal, ask: Ask, periods: Sequence[tuple[str, str, float, int]]) -> tuple[int, Verdict]:
        args: list[Any] = [self._p, principal.id, principal.rpm or 0, principal.tpm or 0, ask.tokens, repr(ask.cost)]
        args.append(len(periods))
        for period, pid, limit, ends_in in periods:
            args += [period, pid, repr(limit), ends_in]
        raw = [r.decode() if isinstance(r, bytes) else str(r) for r in await self._admit(args=args)]
        verdict = Verdict(int(raw[0]), float(raw[1]), int(raw[2]), float(raw[3]), int(raw[4]), float(raw[5]), raw[6])
        return int(raw[7]), verdict

    async def settle(self, principal: Principal, bucket: int, token_delta: int, cost_delta: float, ids: Sequence[str]) -> None:
        await self._settle(args=[self._p, principal.id, bucket, token_delta, repr(cost_delta), *ids])

    async def settle_many(self, items: Sequence[tuple[Principal, int, int, float, Sequence[str]]]) -> None:
        """Several settlements in one round trip (a pipeline of the same script)."""
        async with self._client.pipeline(transaction=False) as pipe:
            for principal, bucket, token_delta, cost_delta, ids in items:
                await self._settle(args=[self._p, principal.id, bucket, token_delta, repr(cost_delta), *ids], client=pipe)
            await pipe.execute()

    async def spent(self, principal: Principal, ids: Sequence[str]) -> list[float]:
        if not ids:
            return []
        values = await self._client.mget([f"{self._p}spend:{principal.id}:{pid}" for pid in ids])
        return [float(v) if v is not None else 0.0 for v in values]


class RateLimited(APIError):
    """429 for a key over its requests or tokens per minute (OpenAI's shape: type `requests` / `tokens`)."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, kind: str, retry_after: float, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(message, retry_after=retry_after)
        self.type = kind
        self.headers = headers


class InsufficientQuota(APIError):
    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


@dataclass
class _Outage:
    """Redis trouble: when it began, and when to try Redis again."""

    retry_at: float = 0.0
    errors: int = 0
    settlements_lost: int = 0
    down: bool = False


class Limits:
    """Admission and settlement for keys with limits. With Redis: shared counters, and on a Redis
    error the failure policy: `open` counts in this process until Redis answers again (retried
    after `retry_s`), `closed` answers 503."""

    def __init__(
        self,
        redis_client: Any | None,
        prefix: str,
        fail_open: bool,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.local = MemoryCounters(clock)
        self.shared: Counters | None = RedisCounters(redis_client, prefix) if redis_client is not None else None
        self.fail_open = fail_open
        self._retry_s = retry_s
        self._clock = clock
        self.outage = _Outage()
        self._pending: list[tuple[Principal, int, int, float, Sequence[str]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._periods: tuple[int, dict[str, tuple[str, int]]] = (-1, {})
        self.refused: dict[tuple[str, str], int] = {}
        """(key alias, limit: requests / tokens / budget) -> requests refused, for /metrics."""

    @staticmethod
    def needed(principal: Principal) -> bool:
        return bool(principal.rpm or principal.tpm or principal.budget)

    async def admit(self, principal: Principal, ask: Ask) -> Admission:
        """Reserve `ask` for the key, or raise the 429 (rate) / 429 insufficient_quota (budget) /
        503 (Redis down, fail-closed) that refuses it."""
        now = self._clock()
        periods = []
        if principal.budget:
            second = int(now)
            if self._periods[0] != second:  # formatting dates costs more than the rest of admission
                self._periods = (second, period_ids(now))
            ids = self._periods[1]
            periods = [(p, ids[p][0], limit, ids[p][1]) for p, limit in sorted(principal.budget.items())]
        counters = self._counters(now)
        try:
            bucket, verdict = await counters.admit(principal, ask, periods)
        except (RedisError, OSError) as exc:
            counters = self._failed(exc)
            bucket, verdict = await counters.admit(principal, ask, periods)
        if counters is self.shared and self.outage.down:
            self.outage.down = False
            log.warning("limits: Redis answers again; counting there")
        if verdict.outcome != OK:
            kind = _KINDS[verdict.outcome]
            self.refused[principal.alias, kind] = self.refused.get((principal.alias, kind), 0) + 1
            raise _refusal(principal, ask, verdict)
        return Admission(principal, bucket, ask, [(p, pid) for p, pid, _, _ in periods], verdict, counters)

    def settle(self, admission: Admission, tokens: int, cost: float) -> None:
        """Set the reservation to what the request used. In this process: at once. In Redis: in
        the background (never delaying a reply), with the settlements that came meanwhile in the
        same round trip."""
        if admission.settled:
            return
        admission.settled = True
        token_delta, cost_delta = tokens - admission.ask.tokens, cost - admission.ask.cost
        if token_delta == 0 and cost_delta == 0:
            return
        ids = [pid for _, pid in admission.periods]
        if isinstance(admission.counters, MemoryCounters):
            admission.counters.settle_now(admission.principal, admission.bucket, token_delta, cost_delta, ids)
            return
        self._pending.append((admission.principal, admission.bucket, token_delta, cost_delta, ids))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await cast(RedisCounters, self.shared).settle_many(batch)
                except (RedisError, OSError) as exc:
                    self.outage.errors += 1
                    self.outage.settlements_lost += len(batch)
                    if not self.outage.down:  # admissions log the outage itself
                        log.warning(
                            "limits: %d settlements were lost (%s); the keys' counters keep their reservations",
                            len(batch),
                            type(exc).__name__,
                        )
        finally:
            self._flusher = None

    async def drain(self) -> None:
        """Wait for settlements in flight (at shutdown)."""
        if self._flusher is not None:
            await asyncio.wait([self._flusher], timeout=2)

    async def usage(self, principal: Principal) -> dict[str, float]:
        """What the key has spent (settled and reserved) in each of its budget periods."""
        ids = period_ids(self._clock())
        periods = sorted(principal.budget)
        counters = self._counters(self._clock())
        try:
            values = await counters.spent(principal, [ids[p][0] for p in periods])
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"Redis did not answer ({type(exc).__name__}).", code="limits_unavailable") from exc
        return dict(zip(periods, values, strict=True))

    def _counters(self, now: float) -> Counters:
        if self.shared is None or (self.outage.down and now < self.outage.retry_at):
            return self.local if self.shared is None or self.fail_open else self._closed()
        return self.shared

    def _closed(self) -> Counters:
        raise ServiceUnavailable("Rate limits cannot be checked (Redis is down); try again shortly.", code="limits_unavailable")

    def _failed(self, exc: BaseException) -> Counters:
        self.outage.errors += 1
        self.outage.retry_at = self._clock() + self._retry_s
        if not self.outage.down:
            self.outage.down = True
            policy = "counting limits in this process meanwhile" if self.fail_open else "refusing requests with 503"
            log.warning("limits: Redis failed (%s); %s", type(exc).__name__, policy)
        if not self.fail_open:
            self._closed()
        return self.local


def _refusal(principal: Principal, ask: Ask, verdict: Verdict) -> APIError:
    headers = rate_headers(principal, verdict)
    if verdict.outcome == REQUESTS:
        return RateLimited(
            f"Rate limit reached for key {principal.alias!r} on requests per minute: limit {principal.rpm}. "
            f"Try again in {_duration(verdict.retry_after)}.",
            "requests",
            verdict.retry_after,
            headers,
        )
    if verdict.outcome == TOKENS:
        if verdict.retry_after < 0:
            return RateLimited(
                f"Request too large for key {principal.alias!r}: it reserves {ask.tokens} tokens (prompt estimate plus "
                f"max_tokens) and the key's limit is {principal.tpm} tokens per minute. Lower max_tokens or shorten the prompt.",
                "tokens",
                60.0,
                headers,
            )
        return RateLimited(
            f"Rate limit reached for key {principal.alias!r} on tokens per minute: limit {principal.tpm}, "
            f"requested {ask.tokens}. Try again in {_duration(verdict.retry_after)}.",
            "tokens",
            verdict.retry_after,
            headers,
        )
    limit = principal.budget.get(verdict.period, 0.0)
    return InsufficientQuota(
        f"You exceeded your current quota: key {principal.alias!r} has spent its budget of ${limit:g} for this "
        f"{verdict.period} (UTC), counting requests in flight. It renews in {_duration(verdict.retry_after)}.",
        retry_after=verdict.retry_after,
    )


def rate_headers(principal: Principal, verdict: Verdict) -> list[tuple[bytes, bytes]]:
    """OpenAI's `x-ratelimit-*` headers for the key's limits."""
    out: list[tuple[bytes, bytes]] = []
    if principal.rpm and verdict.requests_left >= 0:
        out += [
            (b"x-ratelimit-limit-requests", b"%d" % principal.rpm),
            (b"x-ratelimit-remaining-requests", b"%d" % verdict.requests_left),
            (b"x-ratelimit-reset-requests", _duration(verdict.requests_reset).encode()),
        ]
    if principal.tpm and verdict.tokens_left >= 0:
        out += [
            (b"x-ratelimit-limit-tokens", b"%d" % principal.tpm),
            (b"x-ratelimit-remaining-tokens", b"%d" % verdict.tokens_left),
            (b"x-ratelimit-reset-tokens", _duration(verdict.tokens_reset).encode()),
        ]
    return out


def _duration(seconds: float) -> str:
    """OpenAI's way: `20ms`, `1.5s`, `6m0s`, `1h2m3s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs}s"
