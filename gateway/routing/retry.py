"""Retry timing: the request's deadline, and how long to wait before the next attempt. Pure."""

from __future__ import annotations

import random
import time

from backends.errors import APIError, DeadlineExceeded
from gateway.routing.breaker import Clock
from gateway.settings import RetrySettings


class Deadline:
    """One time budget for a whole request: every attempt, backoff and fallback spends from it."""

    __slots__ = ("_clock", "at", "seconds")

    def __init__(self, seconds: float, clock: Clock = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self.at = clock() + seconds

    def remaining(self) -> float:
        return self.at - self._clock()

    def error(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"The request did not complete within its deadline of {self.seconds:g}s.")


class RetryPolicy:
    """When to retry within a pool, and after how long."""

    def __init__(self, settings: RetrySettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or random.Random()

    def backoff(self, failures: int) -> float:
        """Full-jitter exponential backoff after the `failures`-th failed attempt (1-based)."""
        s = self.settings
        return self._rng.uniform(0, min(s.backoff_max_s, s.backoff_initial_s * 2 ** (failures - 1)))

    def delay(self, failures: int, *, alternative: bool, ready_in: float, retry_after: float | None) -> float | None:
        """Seconds to wait before the next attempt, or None to stop trying this pool.

        `alternative`: another healthy deployment that this request has not tried yet can take the
        retry, so it goes at once. Otherwise the retry waits out the backoff and the upstream's
        Retry-After, unless that is longer than `retry_after_max_s` or every breaker of the pool
        stays open longer (then the fallback chain goes on at once).
        """
        if alternative:
            return 0.0
        if retry_after is not None and retry_after > self.settings.retry_after_max_s:
            return None
        wait = max(retry_after or 0.0, self.backoff(failures))
        return None if ready_in > wait else wait


def retryable(exc: BaseException) -> bool:
    return isinstance(exc, APIError) and exc.retryable
