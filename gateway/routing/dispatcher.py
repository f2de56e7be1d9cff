"""Runs one request's attempts: deployments of a pool with retries, then the pool's fallback chain,
all under the request's deadline. Knows nothing of HTTP: an attempt is any `call(deployment)`.

    pool ──▶ attempt ──(retryable failure)──▶ wait (0 if another healthy deployment can take it)
          ──▶ attempt ... up to retry.max_attempts ──▶ next pool of the chain ──▶ ...
    a prompt too long for the context window ──▶ the pool's context_fallbacks instead
    a client's error (4xx) ──▶ straight back to the client
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from backends.errors import APIError, ContextWindowExceeded, DeadlineExceeded, UpstreamUnavailable
from gateway.errors import PoolSaturated, PoolUnavailable
from gateway.routing.pools import Deployment, Lease, Pool
from gateway.routing.retry import Deadline, retryable

log = logging.getLogger("gateway.upstreams")
T = TypeVar("T")
Call = Callable[[Deployment, Deadline], Awaitable[T]]
"""One attempt on a deployment; it must end by the deadline (raising `DeadlineExceeded`)."""
Sleep = Callable[[float], Awaitable[None]]


@dataclass(eq=False)
class Progress:
    """What a request has done so far (it goes into the response headers)."""

    attempts: int = 0
    fallbacks: int = 0
    tried: set[Deployment] = field(default_factory=set)


@dataclass(slots=True)
class Outcome(Generic[T]):
    """A successful attempt. The caller closes `lease` once the answer is complete (a stream's
    outcome is known only at its end)."""

    value: T
    deployment: Deployment
    lease: Lease
    progress: Progress


class Dispatcher:
    def __init__(self, sleep: Sleep = asyncio.sleep) -> None:
        self._sleep = sleep

    async def run(
        self, pool: Pool, call: Call[T], deadline: Deadline, progress: Progress, chain: list[Pool] | None = None
    ) -> Outcome[T]:
        """The first successful attempt along `chain` (default: `pool` and its fallbacks), or the
        error that ended the last one. `progress` is filled in as attempts are made, so that it is
        known on failure too."""
        chain = chain or [pool, *pool.fallbacks]
        index = 0
        error: APIError | None = None
        while index < len(chain):
            current = chain[index]
            progress.fallbacks = index
            try:
                return await self._in_pool(current, call, deadline, progress, onward=index + 1 < len(chain))
            except ContextWindowExceeded as exc:
                if not current.context_fallbacks:
                    raise
                chain, error = [*chain[: index + 1], *current.context_fallbacks], exc
            except APIError as exc:
                if not _falls_back(exc):
                    raise
                error = exc
            index += 1
            progress.tried.clear()
        assert error is not None
        raise error

    async def _in_pool(
        self, pool: Pool, call: Call[T], deadline: Deadline, progress: Progress, onward: bool = False
    ) -> Outcome[T]:
        """`onward`: a pool after this one in the chain can take the request."""
        # The first attempt runs outside tenacity: its loop costs about 40 µs per request even
        # when nothing fails, which is a tenth of what the whole gateway adds.
        try:
            return await self._attempt(pool, call, deadline, progress)
        except APIError as exc:
            if not exc.retryable or pool.retry.settings.max_attempts == 1:
                raise
            first_failure = exc
        return await self._retry(pool, call, deadline, progress, first_failure, onward)

    async def _retry(
        self, pool: Pool, call: Call[T], deadline: Deadline, progress: Progress, first_failure: APIError, onward: bool
    ) -> Outcome[T]:
        """Attempts 2 and later. Tenacity sees the first failure replayed, so that its counters,
        waits and stop rules cover every attempt alike."""
        policy = pool.retry

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            alternative = pool.has_alternative(progress.tried)
            if onward and not alternative and isinstance(exc, UpstreamUnavailable):
                return math.inf  # nothing listens there: the next pool at once, not a backoff and the same refusal
            delay = policy.delay(
                state.attempt_number,
                alternative=alternative,
                ready_in=pool.ready_in(),
                retry_after=exc.retry_after if isinstance(exc, APIError) else None,
            )
            return math.inf if delay is None else delay

        def stop(state: RetryCallState) -> bool:
            return state.attempt_number >= policy.settings.max_attempts or state.upcoming_sleep >= deadline.remaining()

        replay: APIError | None = first_failure
        retrying = AsyncRetrying(stop=stop, wait=wait, retry=retry_if_exception(retryable), sleep=self._sleep, reraise=True)
        async for attempt in retrying:
            with attempt:
                if replay is not None:
                    failure, replay = replay, None
                    raise failure
                return await self._attempt(pool, call, deadline, progress)
        raise AssertionError("tenacity ends with a result or an exception")

    async def _attempt(self, pool: Pool, call: Call[T], deadline: Deadline, progress: Progress) -> Outcome[T]:
        if deadline.remaining() <= 0:
            raise deadline.error()
        deployment = pool.pick(progress.tried)
        progress.attempts += 1
        progress.tried.add(deployment)
        lease = deployment.lease()
        try:
            value = await call(deployment, deadline)
        except DeadlineExceeded:
            lease.abandon()
            raise
        except APIError as exc:
            lease.fail(exc)
            _log_failure(pool, deployment, progress.attempts, exc)
            raise
        except BaseException:
            lease.abandon()
            raise
        lease.observe_latency()
        return Outcome(value, deployment, lease, progress)


def _log_failure(pool: Pool, deployment: Deployment, attempt: int, exc: APIError) -> None:
    """One line per failed attempt: a warning when the upstream is at fault, info when the request is."""
    level = logging.WARNING if exc.retryable else logging.INFO
    log.log(level, "attempt %d (pool %s) failed on %s: %d %s: %s", attempt, pool.name, deployment.id, exc.status,
            exc.code or exc.type, exc.message[:300])  # fmt: skip


def _falls_back(exc: APIError) -> bool:
    """Whether the next pool of the chain should get the request after this pool ended with `exc`."""
    return exc.retryable or isinstance(exc, (PoolUnavailable, PoolSaturated))
