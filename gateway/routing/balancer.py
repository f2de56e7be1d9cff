"""Balancers pick one deployment of a pool for each attempt. Pure objects, no I/O."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar


class LatencyEWMA:
    """Peak-sensitive moving average of a deployment's latency (Finagle's and Linkerd's peak-EWMA):
    a slower answer counts in full at once, faster ones pull the average down over `decay_s`."""

    __slots__ = ("_clock", "_stamp", "_tau", "value")

    def __init__(self, decay_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tau = decay_s
        self._stamp = clock()
        self.value = 0.0
        """Seconds; 0 until the first observation, so a new deployment is tried soon."""

    def observe(self, seconds: float) -> None:
        now = self._clock()
        if seconds > self.value:
            self.value = seconds
        else:
            w = math.exp(-(now - self._stamp) / self._tau)
            self.value = self.value * w + seconds * (1 - w)
        self._stamp = now


class Candidate(Protocol):
    """What a balancer needs to know of a deployment."""

    @property
    def weight(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def latency(self) -> LatencyEWMA: ...


C = TypeVar("C", bound=Candidate)


class Balancer(Protocol):
    def pick(self, candidates: Sequence[C]) -> C:
        """One of `candidates`, which is never empty."""
        ...


class WeightedRoundRobin:
    """Smooth weighted round robin (nginx's): weights 3:1 give a, a, b, a rather than a, a, a, b."""

    def __init__(self) -> None:
        self._current: dict[int, int] = {}

    def pick(self, candidates: Sequence[C]) -> C:
        if len(candidates) == 1:
            return candidates[0]
        total, best, best_score = 0, candidates[0], None
        for c in candidates:
            score = self._current.get(id(c), 0) + c.weight
            self._current[id(c)] = score
            total += c.weight
            if best_score is None or score > best_score:
                best, best_score = c, score
        self._current[id(best)] -= total
        return best


class LeastInFlight:
    """The candidate with the fewest requests in flight per unit of weight; ties rotate."""

    def __init__(self) -> None:
        self._turn = 0

    def pick(self, candidates: Sequence[C]) -> C:
        self._turn += 1
        n = len(candidates)
        order = [candidates[(self._turn + i) % n] for i in range(n)]
        return min(order, key=lambda c: c.in_flight / c.weight)


class PeakEWMA:
    """Latency-aware: of two candidates drawn at random, the one with the lower
    latency EWMA x (in flight + 1) per unit of weight (power of two choices)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, candidates: Sequence[C]) -> C:
        if len(candidates) == 1:
            return candidates[0]
        a, b = self._rng.sample(range(len(candidates)), 2)
        return min(candidates[a], candidates[b], key=_cost)


def _cost(c: Candidate) -> float:
    return c.latency.value * (c.in_flight + 1) / c.weight


def balancer(strategy: str) -> Balancer:
    """The balancer for a pool's `strategy` setting."""
    if strategy == "least_in_flight":
        return LeastInFlight()
    if strategy == "peak_ewma":
        return PeakEWMA()
    return WeightedRoundRobin()
