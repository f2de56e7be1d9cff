"""Retries, fallbacks, escalation and the deadline, with attempts played by plain functions."""

from __future__ import annotations

import textwrap
from collections.abc import Awaitable, Callable

import pytest

from backends.errors import APIError, ContextWindowExceeded, UpstreamStatusError, UpstreamUnavailable
from gateway import config
from gateway.errors import PoolUnavailable
from gateway.routing.dispatcher import Dispatcher, Progress
from gateway.routing.pools import Deployment, Pool
from gateway.routing.retry import Deadline, DeadlineExceeded
from gateway.runtime import Runtime

CONFIG = """
auth: {enabled: false}
pools:
  chat:
    tier: small
    fallbacks: [backup]
    context_fallbacks: [long]
    retry: {max_attempts: 3, backoff_initial_s: 0.01, backoff_max_s: 0.01}
    breaker: {min_requests: 2, failure_ratio: 0.5, cooldown_s: 30}
    deployments: [{id: a, backend: echo}, {id: b, backend: echo}]
  backup:
    deployments: [{id: c, backend: echo}]
  long:
    deployments: [{id: d, backend: echo}]
  big:
    tier: large
    deployments: [{id: e, backend: echo}]
"""


def pools(text: str = CONFIG) -> dict[str, Pool]:
    runtime = Runtime(config.parse(textwrap.dedent(text).encode(), "test.yaml", {}))
    return {p.name: p for p in runtime.pools}


class Script:
    """An attempt function: fails as told for each deployment id, else answers with the id."""

    def __init__(self, **errors: Callable[[], APIError] | list[Callable[[], APIError]]) -> None:
        self.errors = errors
        self.calls: list[str] = []

    async def __call__(self, deployment: Deployment, deadline: Deadline) -> str:
        self.calls.append(deployment.id)
        plan = self.errors.get(deployment.id)
        if isinstance(plan, list):
            plan = plan.pop(0) if plan else None
        if plan is not None:
            raise plan()
        return deployment.id


def down() -> APIError:
    return UpstreamUnavailable("down")


def status(code: int, retry_after: float | None = None) -> Callable[[], APIError]:
    return lambda: UpstreamStatusError("x", code, f"status {code}", retry_after=retry_after)


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def run(
    pool: Pool, script: Callable[[Deployment, Deadline], Awaitable[str]], seconds: float = 5.0
) -> tuple[str, Progress, Sleeps]:
    sleeps, progress = Sleeps(), Progress()
    outcome = await Dispatcher(sleeps).run(pool, script, Deadline(seconds), progress)
    outcome.lease.succeed()
    return outcome.value, progress, sleeps


async def test_a_retry_moves_to_the_other_deployment_at_once() -> None:
    calls: list[str] = []

    async def first_fails(deployment: Deployment, deadline: Deadline) -> str:
        calls.append(deployment.id)
        if len(calls) == 1:
            raise UpstreamUnavailable("down")
        return deployment.id

    answer, progress, sleeps = await run(pools()["chat"], first_fails)
    assert calls[0] != calls[1] and answer == calls[1]
    assert (progress.attempts, progress.fallbacks) == (2, 0)
    assert sleeps.waits == [0.0]


async def test_a_refused_connection_on_the_only_deployment_goes_to_the_fallback_at_once() -> None:
    p = pools("""
    auth: {enabled: false}
    pools:
      solo:
        fallbacks: [backup]
        retry: {max_attempts: 3, backoff_initial_s: 1, backoff_max_s: 1}
        deployments: [{id: a, backend: echo}]
      backup:
        deployments: [{id: c, backend: echo}]
    """)
    script = Script(a=down)
    answer, _, sleeps = await run(p["solo"], script)
    assert (answer, script.calls, sleeps.waits) == ("c", ["a", "c"], [])
    # Without a pool to go on to, the same refusal is retried after its backoff (it may be a restart).
    alone = Script(a=[down])
    answer, _, sleeps = await run(_solo(), alone)
    assert (answer, alone.calls) == ("a", ["a", "a"]) and len(sleeps.waits) == 1 and sleeps.waits[0] > 0


def _solo() -> Pool:
    return pools("""
    auth: {enabled: false}
    pools:
      solo:
        retry: {max_attempts: 3, backoff_initial_s: 1, backoff_max_s: 1}
        deployments: [{id: a, backend: echo}]
    """)["solo"]


async def test_client_errors_are_not_retried() -> None:
    script = Script(a=status(400), b=status(400))
    with pytest.raises(APIError) as caught:
        await run(pools()["chat"], script)
    assert caught.value.status == 400
    assert len(script.calls) == 1


@pytest.mark.parametrize("code", [408, 409, 429, 500, 502, 503])
async def test_retryable_statuses_are_retried_up_to_the_attempt_limit_then_fall_back(code: int) -> None:
    script = Script(a=status(code), b=status(code))
    answer, progress, _ = await run(pools()["chat"], script)
    assert sorted(set(script.calls[:3])) == ["a", "b"] and script.calls[3:] == ["c"]
    assert (answer, progress.attempts, progress.fallbacks) == ("c", 4, 1)


async def test_retry_after_is_honoured_on_the_only_deployment() -> None:
    p = pools("""
    auth: {enabled: false}
    pools:
      solo:
        retry: {max_attempts: 2, retry_after_max_s: 5}
        deployments: [{id: a, backend: echo}]
    """)
    script = Script(a=[status(429, retry_after=0.2)])
    progress = Progress()
    outcome = await Dispatcher().run(p["solo"], script, Deadline(5), progress)  # real sleep: the breaker's clock must move
    assert outcome.value == "a" and progress.attempts == 2
    assert outcome.lease.started - p["solo"].deployments[0].breaker.open_until >= 0


async def test_a_retry_after_longer_than_the_cap_is_not_waited_out() -> None:
    p = pools("""
    auth: {enabled: false}
    pools:
      solo:
        retry: {max_attempts: 3, retry_after_max_s: 1}
        deployments: [{id: a, backend: echo}]
    """)
    script = Script(a=[status(429, retry_after=30)])
    with pytest.raises(APIError) as caught:
        await run(p["solo"], script)
    assert caught.value.status == 429 and caught.value.retry_after == 30
    assert script.calls == ["a"]


async def test_every_breaker_open_fails_fast_without_calling_anyone() -> None:
    p = pools()
    for pool in p.values():
        for d in pool.deployments:
            d.breaker.open(30)
    script = Script()
    with pytest.raises(PoolUnavailable) as caught:
        await run(p["chat"], script)
    assert script.calls == []
    assert caught.value.status == 503 and caught.value.retry_after is not None and caught.value.retry_after > 29


async def test_breakers_see_each_attempt_and_open() -> None:
    p = pools()
    script = Script(a=down, b=down)
    for _ in range(2):
        await run(p["chat"], script)
    assert [d.breaker.state for d in p["chat"].deployments] == ["open", "open"]
    calls = len(script.calls)
    answer, progress, _ = await run(p["chat"], script)
    assert len(script.calls) == calls + 1 and answer == "c" and progress.attempts == 1


async def test_a_prompt_too_long_goes_to_the_context_fallback() -> None:
    script = Script(a=lambda: ContextWindowExceeded("too long"), b=lambda: ContextWindowExceeded("too long"))
    answer, progress, _ = await run(pools()["chat"], script)
    assert (answer, progress.attempts, progress.fallbacks) == ("d", 2, 1)


async def test_escalation_to_the_next_tier_after_the_fallbacks() -> None:
    script = Script(a=down, b=down, c=down)
    answer, progress, _ = await run(pools()["chat"], script)
    assert (answer, progress.fallbacks) == ("e", 2)


async def test_an_attempt_out_of_time_ends_the_request_without_blaming_the_deployment() -> None:
    p = pools()
    progress = Progress()

    async def out_of_time(deployment: Deployment, deadline: Deadline) -> str:
        raise deadline.error()

    with pytest.raises(DeadlineExceeded):
        await Dispatcher().run(p["chat"], out_of_time, Deadline(1), progress)
    assert progress.attempts == 1  # not retried: the budget is spent
    assert all(d.in_flight == 0 and d.breaker.counts() == (0, 0) for d in p["chat"].deployments)


async def test_no_attempt_starts_once_the_deadline_has_passed() -> None:
    script = Script()
    with pytest.raises(DeadlineExceeded):
        await Dispatcher().run(pools()["chat"], script, Deadline(0), Progress())
    assert script.calls == []


async def test_retries_do_not_sleep_past_the_deadline() -> None:
    now = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # a backoff spends the request's time
        waits.append(seconds)
        now[0] += seconds

    p = pools("""
    auth: {enabled: false}
    pools:
      solo:
        retry: {max_attempts: 50, backoff_initial_s: 0.3, backoff_max_s: 0.3}
        breaker: {enabled: false}
        deployments: [{id: a, backend: echo}]
    """)
    script = Script(a=down)
    with pytest.raises(UpstreamUnavailable):
        await Dispatcher(sleep).run(p["solo"], script, Deadline(0.5, clock=lambda: now[0]), Progress())
    # Backoffs of up to 0.3 s each: at least one fits the 0.5 s budget, and together they never pass it.
    assert waits and sum(waits) < 0.5 and len(script.calls) == len(waits) + 1
