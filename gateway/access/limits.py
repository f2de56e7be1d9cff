"""Per-key rate limits (requests and tokens per minute) and spend budgets (USD per day / month).

A key limited to N requests per minute is admitted at most N times in any 60 s (to the second),
with no burst at a window edge. A request reserves up front what it may use (one request; its
prompt's estimated tokens plus the output it asks for; that many tokens' worst price) and settles
to what it used when it ends, so concurrent requests cannot together overrun a limit or a budget.

`Limits` counts in Redis when it has a client (`counters.RedisCounters`), else in this process,
and applies the failure policy while Redis is down; its refusals carry OpenAI's rate-limit headers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.exceptions import RedisError

from gateway.access.counters import (
    KINDS,
    OK,
    REQUESTS,
    TOKENS,
    Ask,
    Counters,
    Known,
    MemoryCounters,
    RedisCounters,
    Verdict,
    period_ids,
)
from gateway.access.keys import Principal
from gateway.errors import APIError, InsufficientQuota, RateLimited, ServiceUnavailable
from gateway.settings import StoreErrorPolicy

Period = tuple[str, str, float, int]
"""(period, its id, budget USD, seconds until it ends)."""

log = logging.getLogger("gateway.access.limits")


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
    extra: int = 0
    """The ask's extra output tokens that were granted (and are reserved in `ask`)."""
    settled: bool = False

    def headers(self) -> list[tuple[bytes, bytes]]:
        return rate_headers(self.principal, self.verdict)


@dataclass
class _Outage:
    """Redis trouble: when it began, and when to try Redis again."""

    retry_at: float = 0.0
    errors: int = 0
    settlements_lost: int = 0
    down: bool = False


class Limits:
    """Admission and settlement for keys with limits. With Redis: shared counters, and on a Redis
    error the failure policy of each kind (`StoreErrorPolicy`): `open` counts in this process until
    Redis answers again (retried after `retry_s`), starting from each key's last counts seen in
    Redis; `closed` answers 503."""

    def __init__(
        self,
        redis_client: Any | None,
        prefix: str,
        policy: StoreErrorPolicy,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.local = MemoryCounters(clock)
        self.shared: Counters | None = RedisCounters(redis_client, prefix) if redis_client is not None else None
        self.policy = policy
        self._known: dict[str, Known] = {}
        """Each key's counts as Redis last reported them, to resume from in an outage."""
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
        counters = self._counters(now, principal, periods)
        try:
            bucket, verdict = await counters.admit(principal, ask, periods)
        except (RedisError, OSError) as exc:
            counters = self._failed(exc, principal, periods)
            bucket, verdict = await counters.admit(principal, ask, periods)
        if counters is self.shared:
            if self.outage.down:
                self.outage.down = False
                log.warning("limits: Redis answers again; counting there")
            if verdict.outcome == OK:
                self._remember(principal, bucket, verdict, periods)
        if verdict.outcome != OK:
            kind = KINDS[verdict.outcome]
            self.refused[principal.alias, kind] = self.refused.get((principal.alias, kind), 0) + 1
            raise _refusal(principal, ask, verdict)
        reserved = ask.granted(verdict.extra)
        return Admission(principal, bucket, reserved, [(p, pid) for p, pid, _, _ in periods], verdict, counters, verdict.extra)

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
        counters = self.shared or self.local
        try:
            values = await counters.spent(principal, [ids[p][0] for p in periods])
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"Redis did not answer ({type(exc).__name__}).", code="limits_unavailable") from exc
        return dict(zip(periods, values, strict=True))

    def _counters(self, now: float, principal: Principal, periods: Sequence[Period]) -> Counters:
        if self.shared is None:
            return self.local
        if self.outage.down and now < self.outage.retry_at:
            return self._fallback(principal, periods)
        return self.shared

    def _fallback(self, principal: Principal, periods: Sequence[Period]) -> Counters:
        """The counters in this process for a key while Redis is down, or the 503 its policy wants."""
        if principal.budget and self.policy.budgets == "closed":
            raise ServiceUnavailable(
                "This key's budget cannot be checked (the limits store is down); try again shortly.", code="limits_unavailable"
            )
        if (principal.rpm or principal.tpm) and self.policy.rate_limits == "closed":
            raise ServiceUnavailable(
                "Rate limits cannot be checked (Redis is down); try again shortly.", code="limits_unavailable"
            )
        if (known := self._known.get(principal.id)) is not None:
            self.local.resume(principal, known, periods)
        return self.local

    def _failed(self, exc: BaseException, principal: Principal, periods: Sequence[Period]) -> Counters:
        self.outage.errors += 1
        self.outage.retry_at = self._clock() + self._retry_s
        if not self.outage.down:
            self.outage.down = True
            p = self.policy
            log.warning(
                "limits: Redis failed (%s); rate limits %s, budgets %s until it answers",
                type(exc).__name__,
                "counted in this process" if p.rate_limits == "open" else "answered with 503",
                "counted in this process" if p.budgets == "open" else "answered with 503",
            )
        return self._fallback(principal, periods)

    def _remember(self, principal: Principal, bucket: int, verdict: Verdict, periods: Sequence[Period]) -> None:
        requests = principal.rpm - verdict.requests_left if principal.rpm and verdict.requests_left >= 0 else 0
        tokens = principal.tpm - verdict.tokens_left if principal.tpm and verdict.tokens_left >= 0 else 0
        spent = {pid: value for (_, pid, _, _), value in zip(periods, verdict.spent, strict=False)}
        self._known[principal.id] = Known(bucket, requests, tokens, spent)
        if len(self._known) > 100_000:  # keys seen long ago go first (dicts keep insertion order)
            self._known.pop(next(iter(self._known)))


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
                f"Request too large for key {principal.alias!r}: it reserves {ask.tokens} tokens (the whole "
                f"request, estimated, plus its output) and the key's limit is {principal.tpm} tokens per minute. "
                "Lower max_tokens or shorten the prompt.",
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
