"""The circuit breaker, driven by a hand-moved clock."""

from __future__ import annotations

from gateway.routing.breaker import Breaker
from gateway.settings import BreakerSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **kw: object) -> Breaker:
    settings = BreakerSettings(**{"window_s": 10.0, "min_requests": 4, "failure_ratio": 0.5, "cooldown_s": 5.0, **kw})  # type: ignore[arg-type]
    return Breaker(settings, clock)


def call(b: Breaker, outcome: str, retry_after: float | None = None) -> None:
    assert b.admits()
    b.record(outcome, b.acquire(), retry_after)  # type: ignore[arg-type]


def test_opens_when_the_failure_ratio_reaches_the_threshold_with_enough_requests() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        call(b, "failure")
    assert b.state == "closed"  # 3 failures are fewer than min_requests
    call(b, "success")
    assert b.state == "open"  # 3 of 4 >= 50%
    assert not b.admits()
    assert b.ready_in() == 5.0


def test_it_opens_at_exactly_the_failure_ratio_and_not_below_it() -> None:
    clock = Clock()
    at = breaker(clock)
    for outcome in ("failure", "success", "failure", "success"):
        call(at, outcome)
    assert at.state == "open"  # 2 of 4 is exactly 50%: "reach" includes the threshold
    below = breaker(clock, min_requests=5)
    for outcome in ("failure", "success", "failure", "success", "success"):
        call(below, outcome)
    assert below.state == "closed"  # 2 of 5 is under it


def test_a_healthy_ratio_keeps_it_closed() -> None:
    clock = Clock()
    b = breaker(clock)
    for i in range(100):
        call(b, "failure" if i % 3 == 2 else "success")  # a third fail
    assert b.state == "closed"


def test_old_failures_leave_the_window() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        call(b, "failure")
    clock.now += 11
    call(b, "failure")
    assert b.state == "closed"
    assert b.counts() == (1, 1)


def test_half_open_admits_the_configured_probes_and_closes_when_they_pass() -> None:
    clock = Clock()
    b = breaker(clock, half_open_probes=2)
    for _ in range(4):
        call(b, "failure")
    clock.now += 4.9
    assert not b.admits()
    clock.now += 0.2
    assert b.state == "half_open"
    probes = [b.acquire(), b.acquire()]
    assert probes == [True, True]
    assert not b.admits()  # no third request while two probes are out
    b.record("success", True)
    assert b.state == "half_open"
    b.record("success", True)
    assert b.state == "closed"
    assert b.counts() == (0, 0)  # a fresh window after recovery


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(4):
        call(b, "failure")
    clock.now += 5
    call(b, "failure")
    assert b.state == "open"
    assert b.ready_in() == 5.0
    assert b.times_opened == 2


def test_an_abandoned_probe_frees_its_slot() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(4):
        call(b, "failure")
    clock.now += 5
    call(b, "neutral")
    assert b.state == "half_open"
    assert b.admits()


def test_retry_after_opens_it_until_then_capped() -> None:
    clock = Clock()
    b = breaker(clock, max_open_s=30.0)
    call(b, "failure", retry_after=2.5)
    assert b.state == "open"
    assert b.ready_in() == 2.5
    clock.now += 2.5
    assert b.admits()
    b.record("success", b.acquire())
    call(b, "failure", retry_after=3600)
    assert b.ready_in() == 30.0


def test_client_errors_and_late_answers_do_not_trip_it() -> None:
    clock = Clock()
    b = breaker(clock)
    late = [b.acquire() for _ in range(3)]  # sent while closed
    for _ in range(4):
        call(b, "failure")
    clock.now += 5
    assert b.state == "half_open"
    for probe in late:
        b.record("failure", probe)  # answers to requests sent before it opened
    assert b.state == "half_open"


def test_disabled_breaker_never_opens() -> None:
    clock = Clock()
    b = breaker(clock, enabled=False)
    for _ in range(50):
        call(b, "failure", retry_after=10)
    assert b.state == "closed"


def test_shared_state_opens_it_until_a_given_time() -> None:
    clock = Clock()
    b = breaker(clock)
    b.open_until_at_least(clock.now + 7)
    assert b.state == "open"
    assert b.ready_in() == 7
    b.open_until_at_least(clock.now + 1)  # shorter than it already is: no change
    assert b.ready_in() == 7
    b.open_until_at_least(clock.now - 1)  # already past
    assert b.ready_in() == 7


def test_failures_in_a_row_open_it_whatever_the_window_holds() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=5)
    for _ in range(100):
        call(b, "success")
    for _ in range(4):
        call(b, "failure")
    assert b.state == "closed"  # 4 of 104 is far under the ratio, and not yet 5 in a row
    call(b, "success")  # a success breaks the run
    for _ in range(4):
        call(b, "failure")
    assert b.state == "closed"
    call(b, "failure")
    assert b.state == "open" and b.ready_in() == 5.0


def test_consecutive_failures_zero_leaves_only_the_ratio_rule() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=0)
    for _ in range(100):
        call(b, "success")
    for _ in range(20):
        call(b, "failure")
    assert b.state == "closed"
