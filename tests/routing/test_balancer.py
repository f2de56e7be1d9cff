"""Balancers are pure: plain objects in, choices out."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from gateway.routing.balancer import LatencyEWMA, LeastInFlight, PeakEWMA, WeightedRoundRobin, balancer


@dataclass(eq=False)
class Dep:
    name: str
    weight: int = 1
    in_flight: int = 0
    latency: LatencyEWMA = field(default_factory=LatencyEWMA)


def test_weighted_round_robin_is_smooth_and_exact() -> None:
    a, b = Dep("a", 3), Dep("b", 1)
    wrr = WeightedRoundRobin()
    picks = [wrr.pick([a, b]).name for _ in range(8)]
    assert picks == ["a", "a", "b", "a", "a", "a", "b", "a"]
    assert Counter(wrr.pick([a, b, Dep("c", 2)]).name for _ in range(600)) == {"a": 300, "b": 100, "c": 200}


def test_least_in_flight_prefers_idle_and_rotates_ties() -> None:
    busy, idle = Dep("busy", in_flight=5), Dep("idle", in_flight=1)
    lif = LeastInFlight()
    assert all(lif.pick([busy, idle]) is idle for _ in range(5))
    x, y = Dep("x"), Dep("y")
    assert {lif.pick([x, y]).name for _ in range(4)} == {"x", "y"}
    heavy = Dep("heavy", weight=10, in_flight=5)  # 0.5 per unit of weight beats 1
    assert lif.pick([heavy, idle]) is heavy


def test_strategy_names() -> None:
    assert isinstance(balancer("least_in_flight"), LeastInFlight)
    assert isinstance(balancer("weighted_round_robin"), WeightedRoundRobin)
    assert isinstance(balancer("peak_ewma"), PeakEWMA)


def test_peak_ewma_prefers_the_faster_deployment_and_reacts_to_a_slowdown_at_once() -> None:
    now = [0.0]
    fast, slow = Dep("fast"), Dep("slow")
    for d in (fast, slow):
        d.latency = LatencyEWMA(decay_s=10, clock=lambda: now[0])
    fast.latency.observe(0.010)
    slow.latency.observe(0.200)
    picker = PeakEWMA(random.Random(1))
    assert [picker.pick([fast, slow]).name for _ in range(20)] == ["fast"] * 20
    fast.in_flight = 30  # 0.010 x 31 > 0.200 x 1: load counts too
    assert picker.pick([fast, slow]).name == "slow"
    fast.in_flight = 0
    now[0] += 1
    fast.latency.observe(0.500)  # a slow answer counts in full at once
    assert picker.pick([fast, slow]).name == "slow"
    for _ in range(50):
        now[0] += 1
        fast.latency.observe(0.010)  # fast again: the average decays back
    assert fast.latency.value < 0.02
