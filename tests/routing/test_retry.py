"""Retry delays and the request deadline."""

from __future__ import annotations

import random

from gateway.routing.retry import Deadline, RetryPolicy
from gateway.settings import RetrySettings

SETTINGS = RetrySettings(max_attempts=5, backoff_initial_s=0.1, backoff_max_s=1.0, retry_after_max_s=5.0)


def policy() -> RetryPolicy:
    return RetryPolicy(SETTINGS, random.Random(7))


def test_a_healthy_alternative_takes_the_retry_at_once() -> None:
    assert policy().delay(1, alternative=True, ready_in=0, retry_after=3.0) == 0.0


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    p = policy()
    for failures, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        delays = [p.backoff(failures) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8  # spread over the whole range, not a fixed step


def test_retry_after_is_waited_out_when_short_enough() -> None:
    assert policy().delay(1, alternative=False, ready_in=2.0, retry_after=2.0) == 2.0
    assert policy().delay(1, alternative=False, ready_in=0, retry_after=6.0) is None  # longer than retry_after_max_s


def test_no_wait_for_breakers_that_stay_open_longer_than_the_backoff() -> None:
    assert policy().delay(1, alternative=False, ready_in=10.0, retry_after=None) is None
    d = policy().delay(2, alternative=False, ready_in=0.0, retry_after=None)
    assert d is not None and 0 <= d <= 0.2


def test_deadline_counts_down_on_its_clock() -> None:
    now = [50.0]
    deadline = Deadline(2.0, lambda: now[0])
    assert deadline.remaining() == 2.0
    now[0] += 2.5
    assert deadline.remaining() == -0.5
    error = deadline.error()
    assert (error.status, error.code) == (504, "deadline_exceeded")
