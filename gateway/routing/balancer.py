"""Balancers pick one deployment of a pool for each attempt. Pure objects, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar


class Candidate(Protocol):
    """What a balancer needs to know of a deployment."""

    @property
    def weight(self) -> int: ...

    @property
    def in_flight(self) -> int: ...


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


def balancer(strategy: str) -> Balancer:
    """The balancer for a pool's `strategy` setting."""
    return LeastInFlight() if strategy == "least_in_flight" else WeightedRoundRobin()
