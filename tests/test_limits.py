"""The rate and spend counters: one contract for the in-process counters and the Redis script
(a real redis-server per test), plus the sliding window under a hand-moved clock and the
failure policy when Redis goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.access.counters import BUDGET, OK, REQUESTS, TOKENS, Ask, MemoryCounters, RedisCounters, period_ids
from gateway.access.keys import Principal
from gateway.access.limits import Limits
from gateway.errors import InsufficientQuota, RateLimited, ServiceUnavailable
from gateway.redis_client import client as redis_client
from gateway.settings import StoreErrorPolicy
from tests.helpers.redis_server import RedisServer


def key(**limits: Any) -> Principal:
    return Principal(id="key_test", alias="test", tenant="test", source="api", **limits)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
async def counters(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryCounters()
        return
    server = RedisServer(tmp_path)
    client = redis_client(server.url, 2.0)
    try:
        yield RedisCounters(client, "t:")
    finally:
        await client.aclose()
        server.stop()


def budget(now: float, **limits: float) -> list[tuple[str, str, float, int]]:
    ids = period_ids(now)
    return [(p, ids[p][0], limit, ids[p][1]) for p, limit in limits.items()]


async def test_exactly_the_limit_is_admitted_among_concurrent_requests(counters: Any) -> None:
    k = key(rpm=50)
    verdicts = await asyncio.gather(*(counters.admit(k, Ask(0, 0.0), []) for _ in range(200)))
    outcomes = [v.outcome for _, v in verdicts]
    assert outcomes.count(OK) == 50 and outcomes.count(REQUESTS) == 150
    refused = next(v for _, v in verdicts if v.outcome == REQUESTS)
    assert 0 < refused.retry_after <= 60 and refused.requests_left == 0
    remaining = sorted(v.requests_left for _, v in verdicts if v.outcome == OK)
    assert remaining == list(range(50))  # every admission saw the one before it


async def test_tokens_are_reserved_then_settled_to_actual_use(counters: Any) -> None:
    k = key(tpm=1000)
    bucket, first = await counters.admit(k, Ask(600, 0.0), [])
    assert first.outcome == OK and first.tokens_left == 400
    _, second = await counters.admit(k, Ask(600, 0.0), [])
    assert second.outcome == TOKENS and second.tokens_left == 400 and second.retry_after > 0
    await counters.settle(k, bucket, -500, 0.0, [])  # it used 100 of the 600 it reserved
    _, third = await counters.admit(k, Ask(600, 0.0), [])
    assert third.outcome == OK and third.tokens_left == 300


async def test_a_request_larger_than_the_limit_can_never_fit(counters: Any) -> None:
    _, verdict = await counters.admit(key(tpm=100), Ask(101, 0.0), [])
    assert verdict.outcome == TOKENS and verdict.retry_after < 0


async def test_a_refused_request_reserves_nothing(counters: Any) -> None:
    k = key(rpm=2, tpm=100)
    _, big = await counters.admit(k, Ask(500, 0.0), [])
    assert big.outcome == TOKENS
    assert (await counters.admit(k, Ask(10, 0.0), []))[1].outcome == OK
    assert (await counters.admit(k, Ask(10, 0.0), []))[1].outcome == OK  # the refused one did not count
    assert (await counters.admit(k, Ask(10, 0.0), []))[1].outcome == REQUESTS


async def test_budget_holds_reservations_and_settles(counters: Any) -> None:
    import time

    k = key(budget={"day": 1.0})
    periods = budget(time.time(), day=1.0)
    bucket, a = await counters.admit(k, Ask(0, 0.6), periods)
    assert a.outcome == OK
    _, b = await counters.admit(k, Ask(0, 0.6), periods)  # 0.6 reserved + 0.6 would pass 1.0
    assert b.outcome == BUDGET and b.period == "day" and 0 < b.retry_after <= 86400
    await counters.settle(k, bucket, 0, -0.5, [periods[0][1]])  # the first cost 0.1
    assert (await counters.admit(k, Ask(0, 0.6), periods))[1].outcome == OK
    assert await counters.spent(k, [periods[0][1]]) == [pytest.approx(0.7)]


async def test_spent_budget_refuses_even_a_free_request(counters: Any) -> None:
    import time

    k = key(budget={"month": 0.5})
    periods = budget(time.time(), month=0.5)
    assert (await counters.admit(k, Ask(0, 0.5), periods))[1].outcome == OK
    assert (await counters.admit(k, Ask(0, 0.0), periods))[1].outcome == BUDGET


async def test_keys_do_not_share_counters(counters: Any) -> None:
    a, b = key(rpm=1), Principal(id="key_other", alias="other", tenant="other", source="api", rpm=1)
    assert (await counters.admit(a, Ask(0, 0.0), []))[1].outcome == OK
    assert (await counters.admit(b, Ask(0, 0.0), []))[1].outcome == OK
    assert (await counters.admit(a, Ask(0, 0.0), []))[1].outcome == REQUESTS


async def test_the_window_slides_second_by_second() -> None:
    now = [1000.25]
    counters = MemoryCounters(lambda: now[0])
    k = key(rpm=3)
    for t in (1000.25, 1010.5, 1020.75):
        now[0] = t
        assert (await counters.admit(k, Ask(0, 0.0), []))[1].outcome == OK
    now[0] = 1030.0
    _, refused = await counters.admit(k, Ask(0, 0.0), [])
    assert refused.outcome == REQUESTS and refused.retry_after == pytest.approx(1060 - 1030.0)
    now[0] = 1059.9  # the first request's second (1000) is still inside the window
    assert (await counters.admit(k, Ask(0, 0.0), []))[1].outcome == REQUESTS
    now[0] = 1060.0
    assert (await counters.admit(k, Ask(0, 0.0), []))[1].outcome == OK


def test_periods_are_utc_calendar_day_and_month() -> None:
    ids = period_ids(1_764_633_599.5)  # 2025-12-01 23:59:59.5 UTC
    assert ids["day"] == ("day:20251201", 1) and ids["month"] == ("month:202512", 2_592_001)


async def test_rate_limited_and_quota_errors_are_openai_shaped() -> None:
    limits = Limits(None, "t:", StoreErrorPolicy())
    k = key(rpm=1, budget={"day": 0.0})
    with pytest.raises(InsufficientQuota) as quota:
        await limits.admit(k, Ask(1, 0.001))
    assert quota.value.status == 429 and quota.value.code == "insufficient_quota" and quota.value.retry_after
    k = key(rpm=1)
    admitted = await limits.admit(k, Ask(1, 0.0))
    assert dict(admitted.headers())[b"x-ratelimit-remaining-requests"] == b"0"
    with pytest.raises(RateLimited) as limited:
        await limits.admit(k, Ask(1, 0.0))
    error = limited.value
    assert error.status == 429 and error.type == "requests" and error.code == "rate_limit_exceeded"
    assert dict(error.headers)[b"x-ratelimit-limit-requests"] == b"1" and 0 < (error.retry_after or 0) <= 60


async def test_redis_down_fails_open_to_local_counters_or_closed(redis: RedisServer) -> None:
    client = redis_client(redis.url, 0.5)
    opened, closed = Limits(client, "t:", StoreErrorPolicy()), Limits(client, "t:", StoreErrorPolicy("open", "closed", "closed"))
    k = key(rpm=2)
    assert (await opened.admit(k, Ask(0, 0.0))).counters is opened.shared
    redis.stop()
    first = await opened.admit(k, Ask(0, 0.0))
    assert first.counters is opened.local and opened.outage.down and opened.outage.errors == 1
    with pytest.raises(RateLimited):  # the process counts on from what Redis last said (1 used), not from zero
        await opened.admit(k, Ask(0, 0.0))
    with pytest.raises(ServiceUnavailable) as info:
        await closed.admit(k, Ask(0, 0.0))
    assert info.value.status == 503 and info.value.code == "limits_unavailable"
    await client.aclose()


async def test_extra_output_is_granted_as_far_as_the_token_limit_and_budget_pay(counters: Any) -> None:
    import time

    k = key(tpm=1000)
    _, first = await counters.admit(k, Ask(100, 0.0, extra=4000), [])
    assert first.outcome == OK and first.extra == 900 and first.tokens_left == 0
    _, second = await counters.admit(k, Ask(100, 0.0, extra=4000), [])
    assert second.outcome == TOKENS  # the minimal part no longer fits

    spender = key(budget={"day": 1.0})
    periods = budget(time.time(), day=1.0)
    _, paid = await counters.admit(spender, Ask(10, 0.1, extra=5000, extra_rate=0.001), periods)
    assert paid.outcome == OK and paid.extra == 900  # $0.90 left after the fixed $0.10
    assert await counters.spent(spender, [periods[0][1]]) == [pytest.approx(1.0)]
    _, broke = await counters.admit(spender, Ask(10, 0.0001, extra=5000, extra_rate=0.001), periods)
    assert broke.outcome == BUDGET


async def test_budgets_fail_closed_by_default_and_open_ones_resume_from_the_last_spend(redis: RedisServer) -> None:
    import time

    client = redis_client(redis.url, 0.5)
    default, spending = Limits(client, "t1:", StoreErrorPolicy()), Limits(client, "t2:", StoreErrorPolicy(budgets="open"))
    spender = key(budget={"day": 1.0})
    counted = Principal(id="key_counted", alias="counted", tenant="counted", source="api", rpm=100)
    for limits in (default, spending):
        await limits.admit(spender, Ask(0, 0.6))  # $0.60 of $1 spent, as Redis knows
        await limits.admit(counted, Ask(0, 0.0))
    assert await default.usage(spender) == {"day": pytest.approx(0.6)}
    redis.stop()
    with pytest.raises(ServiceUnavailable) as closed:
        await default.admit(spender, Ask(0, 0.1))
    assert closed.value.code == "limits_unavailable" and "budget" in closed.value.message
    assert (await default.admit(counted, Ask(0, 0.0))).counters is default.local  # rate limits stay open
    assert (await spending.admit(spender, Ask(0, 0.3))).counters is spending.local  # open: on from the last $0.60
    with pytest.raises(InsufficientQuota):
        await spending.admit(spender, Ask(0, 0.2))
    ids = period_ids(time.time())
    assert await spending.local.spent(spender, [ids["day"][0]]) == [pytest.approx(0.9)]
    await client.aclose()
