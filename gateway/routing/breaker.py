"""A circuit breaker per deployment. Pure: time comes from an injected clock.

    closed ──(failure ratio over the window >= threshold, with >= min_requests outcomes)──▶ open
    closed ──(consecutive_failures failures in a row, whatever came before)──▶ open
    closed ──(429/503 with Retry-After)──▶ open until then
    open ──(cooldown over)──▶ half-open: `half_open_probes` requests let through at once
    half-open ──(every probe succeeded)──▶ closed, window cleared
    half-open ──(a probe failed)──▶ open for another cooldown

Only upstream faults count as failures (connection errors, timeouts, 408/409/429/5xx, broken
streams). A client's 4xx is a success: the upstream answered. A request the client abandoned says
nothing and only frees its probe slot.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from gateway.settings import BreakerSettings

log = logging.getLogger("gateway.breakers")
Clock = Callable[[], float]
State = Literal["closed", "open", "half_open"]
Outcome = Literal["success", "failure", "neutral"]
STATE_VALUES: dict[State, int] = {"closed": 0, "half_open": 1, "open": 2}
"""The number each state is exported as (metrics)."""


class Window:
    """Successes and failures over the last `span` seconds, kept in `buckets` time slices."""

    def __init__(self, span: float, clock: Clock, buckets: int = 10) -> None:
        self._span = span
        self._width = span / buckets
        self._clock = clock
        self._slices: deque[list[float]] = deque()  # [start, total, failures]
        self.total = 0
        self.failures = 0

    def add(self, failed: bool) -> None:
        now = self._clock()
        self._expire(now)
        if not self._slices or now - self._slices[-1][0] >= self._width:
            self._slices.append([now, 0, 0])
        last = self._slices[-1]
        last[1] += 1
        self.total += 1
        if failed:
            last[2] += 1
            self.failures += 1

    def counts(self) -> tuple[int, int]:
        """(outcomes, failures) in the window now."""
        self._expire(self._clock())
        return self.total, self.failures

    def clear(self) -> None:
        self._slices.clear()
        self.total = self.failures = 0

    def _expire(self, now: float) -> None:
        while self._slices and now - self._slices[0][0] >= self._span:
            _, total, failures = self._slices.popleft()
            self.total -= int(total)
            self.failures -= int(failures)


class Breaker:
    def __init__(self, settings: BreakerSettings, clock: Clock = time.monotonic, name: str = "") -> None:
        """`name`: the deployment's, for the log line each change of state writes."""
        self.settings = settings
        self.name = name
        self._clock = clock
        self._window = Window(settings.window_s, clock)
        self._state: State = "closed"
        self.open_until = 0.0
        """Clock time at which an open breaker turns half-open."""
        self._probes = 0  # probes in flight while half-open
        self._passed = 0  # probes that succeeded in this half-open spell
        self._streak = 0  # failures in a row while closed (Envoy's consecutive-failure ejection)
        self.times_opened = 0

    @property
    def state(self) -> State:
        if self._state == "open" and self._clock() >= self.open_until:
            self._state, self._probes, self._passed = "half_open", 0, 0
            log.info("circuit breaker of %s is half-open: %d probe(s) may go through", self.name, self.settings.half_open_probes)
        return self._state

    def admits(self) -> bool:
        """Whether a request may go to the deployment now."""
        state = self.state
        return state == "closed" or (state == "half_open" and self._probes < self.settings.half_open_probes)

    def ready_in(self) -> float:
        """Seconds until the breaker admits a request (a guess of one cooldown while probes are out)."""
        if self.admits():
            return 0.0
        if self._state == "open":
            return max(0.0, self.open_until - self._clock())
        return self.settings.cooldown_s

    def acquire(self) -> bool:
        """Count a request that `admits()` let through; returns whether it is a half-open probe."""
        if self.state != "half_open":
            return False
        self._probes += 1
        return True

    def record(self, outcome: Outcome, probe: bool, retry_after: float | None = None) -> None:
        """The outcome of a request that `acquire()` counted."""
        if probe:
            return self._record_probe(outcome, retry_after)
        if self._state != "closed" or outcome == "neutral" or not self.settings.enabled:
            return None  # a late answer to a request sent before the breaker opened
        if outcome == "failure" and retry_after:
            return self.open(min(retry_after, self.settings.max_open_s), "the upstream asked to wait (Retry-After)")
        self._window.add(outcome == "failure")
        self._streak = self._streak + 1 if outcome == "failure" else 0
        if 0 < self.settings.consecutive_failures <= self._streak:
            return self.open(self.settings.cooldown_s, f"{self._streak} failures in a row")
        if self._tripped():
            total, failures = self._window.counts()
            self.open(self.settings.cooldown_s, f"{failures} failures in the last {total} requests")
        return None

    def open(self, seconds: float, why: str = "") -> None:
        if self._state != "open":
            log.warning("circuit breaker of %s opened for %.1f s: %s", self.name, seconds, why or "opened")
        self._state = "open"
        self._streak = 0
        self.open_until = max(self.open_until, self._clock() + seconds)
        self.times_opened += 1

    def open_until_at_least(self, until: float) -> None:
        """Open until clock time `until` unless already open longer (state shared by other workers)."""
        if until > self._clock() and (self._state != "open" or until > self.open_until):
            self.open(until - self._clock(), "opened by another worker or replica")

    def counts(self) -> tuple[int, int]:
        """(outcomes, failures) in the current window."""
        return self._window.counts()

    def _record_probe(self, outcome: Outcome, retry_after: float | None) -> None:
        self._probes = max(0, self._probes - 1)
        if self._state != "half_open":
            return
        if outcome == "failure":
            self.open(min(retry_after, self.settings.max_open_s) if retry_after else self.settings.cooldown_s, "a probe failed")
        elif outcome == "success":
            self._passed += 1
            if self._passed >= self.settings.half_open_probes:
                self._state = "closed"
                self._window.clear()
                log.info("circuit breaker of %s closed: its probes succeeded", self.name)

    def _tripped(self) -> bool:
        total, failures = self._window.counts()
        return total >= self.settings.min_requests and failures >= self.settings.failure_ratio * total
