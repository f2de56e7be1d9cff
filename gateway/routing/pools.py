"""Pools of deployments, and the table that resolves a request's `model` to a pool.

A `Deployment` carries its live health (breaker, latency EWMA, requests in flight); a `Lease` is
one attempt on it, which reports its outcome back exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Literal

from backends.errors import APIError
from backends.protocol import Backend
from backends.types import Endpoint, Usage
from gateway.errors import InvalidRequest, ModelNotFound, PoolSaturated, PoolUnavailable
from gateway.routing.balancer import Balancer, LatencyEWMA, balancer
from gateway.routing.breaker import Breaker
from gateway.routing.retry import RetryPolicy
from gateway.settings import TIERS, DeploymentSettings, PoolSettings


@dataclass(eq=False)
class Deployment:
    """A backend with its settings and live health."""

    settings: DeploymentSettings
    backend: Backend
    breaker: Breaker
    latency: LatencyEWMA = field(default_factory=LatencyEWMA)
    in_flight: int = 0
    sends_usage: bool = False
    """Its last stream ended with a usage chunk (the next one's text need not be counted as it passes)."""

    def __post_init__(self) -> None:
        self.max_in_flight = self.settings.max_in_flight or self.settings.max_connections

    @property
    def id(self) -> str:
        return self.settings.id

    @property
    def weight(self) -> int:
        return self.settings.weight

    def upstream_model(self, requested: str) -> str:
        return self.settings.model or requested

    def cost(self, usage: Usage) -> float:
        """USD for a request's tokens: the YAML prices, or the GPU-hour price over the bundled
        engine's measured seconds per token."""
        price = self.settings.price
        measured: float | None = getattr(self.backend, "seconds_per_token", None)  # the bundled engine's LocalBackend
        if price.gpu_hour_usd and measured is not None:
            return price.gpu_hour_usd / 3600 * measured * (usage.prompt_tokens + usage.completion_tokens)
        return price.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)

    def available(self) -> bool:
        return self.in_flight < self.max_in_flight and self.breaker.admits()

    def lease(self) -> Lease:
        """Start an attempt here (the caller has checked `available()`)."""
        self.in_flight += 1
        return Lease(self, self.breaker.acquire())


class Lease:
    """One attempt on a deployment: counts it in flight until it reports how it went."""

    __slots__ = ("_open", "deployment", "probe", "started")

    def __init__(self, deployment: Deployment, probe: bool) -> None:
        self.deployment = deployment
        self.probe = probe
        self.started = time.monotonic()
        self._open = True

    def observe_latency(self) -> None:
        """The answer (or a stream's first event) arrived now."""
        self.deployment.latency.observe(time.monotonic() - self.started)

    def succeed(self) -> None:
        self._close("success")

    def fail(self, exc: APIError) -> None:
        """A retryable error is the upstream's fault; any other error means the upstream answered."""
        if exc.retryable:
            self._close("failure", exc.retry_after if exc.status in (429, 503) else None)
        else:
            self._close("success")

    def abandon(self) -> None:
        """Neither: the client went away, or the request's own deadline ran out."""
        self._close("neutral")

    def _close(self, outcome: Literal["success", "failure", "neutral"], retry_after: float | None = None) -> None:
        if self._open:
            self._open = False
            self.deployment.in_flight -= 1
            self.deployment.breaker.record(outcome, self.probe, retry_after)


@dataclass(eq=False)
class Pool:
    name: str
    settings: PoolSettings
    deployments: list[Deployment]
    balancer: Balancer
    retry: RetryPolicy
    fallbacks: list[Pool] = field(default_factory=list)
    """This pool's whole chain after itself: its `fallbacks`, then the pools of the tiers above."""
    context_fallbacks: list[Pool] = field(default_factory=list)
    endpoints: frozenset[Endpoint] = field(init=False)
    """What its deployments serve between them (an attempt picks among all of them)."""
    caps_output: bool = field(init=False)
    """A deployment of it sets `max_output_tokens` (sent to requests that set none)."""

    def __post_init__(self) -> None:
        self.endpoints = frozenset(e for d in self.deployments for e in d.backend.endpoints)
        self.caps_output = any(d.settings.max_output_tokens is not None for d in self.deployments)

    @classmethod
    def build(cls, name: str, settings: PoolSettings, deployments: list[Deployment]) -> Pool:
        return cls(name, settings, deployments, balancer(settings.strategy), RetryPolicy(settings.retry))

    def serves(self, endpoint: Endpoint) -> bool:
        return endpoint in self.endpoints

    def pick(self, tried: Collection[Deployment] = ()) -> Deployment:
        """A deployment for the next attempt, preferring ones this request has not tried."""
        ready = [d for d in self.deployments if d.breaker.admits()]
        if not ready:
            raise PoolUnavailable(
                f"No deployment of pool {self.name} is healthy right now (all circuit breakers are open).",
                retry_after=self.ready_in(),
            )
        free = [d for d in ready if d.in_flight < d.max_in_flight]
        if not free:
            raise PoolSaturated(f"Every deployment of pool {self.name} is at its limit of requests in flight.", retry_after=1)
        fresh = [d for d in free if d not in tried] if tried else free
        return self.balancer.pick(fresh or free)

    def has_alternative(self, tried: Collection[Deployment]) -> bool:
        return any(d.available() and d not in tried for d in self.deployments)

    def ready_in(self) -> float:
        """Seconds until some deployment's breaker lets a request through."""
        return min(d.breaker.ready_in() for d in self.deployments)


@dataclass
class ModelTable:
    """Model names clients may ask for: every pool's name and aliases."""

    names: dict[str, Pool] = field(default_factory=dict)

    @classmethod
    def build(cls, pools: Iterable[Pool]) -> ModelTable:
        table = cls()
        for pool in pools:
            table.names[pool.name] = pool
            for alias in pool.settings.aliases:
                table.names[alias] = pool
        return table

    def resolve(self, model: str, endpoint: Endpoint | None = None) -> Pool:
        """The pool of `model`: 404 when there is none, 400 when it does not answer `endpoint`."""
        pool = self.names.get(model)
        if pool is None:
            listed = _listed(self.names)
            raise ModelNotFound(f"The model `{model[:200]}` does not exist. Available models: {listed}.", param="model")
        if endpoint is not None and not pool.serves(endpoint):
            serving = [name for name, p in self.names.items() if p.serves(endpoint)]
            raise InvalidRequest(
                f"The model `{model[:200]}` does not serve {endpoint}; models that do: {_listed(serving) or 'none'}.",
                param="model",
                code="model_not_supported",
            )
        return pool


def _listed(names: Iterable[str]) -> str:
    known = sorted(names)
    return ", ".join(known[:50]) + (", ..." if len(known) > 50 else "")


def link_fallbacks(pools: dict[str, Pool]) -> None:
    """Give each pool its fallback chain: its `fallbacks` in order, then (with `escalate` and a
    `tier`) the pools of each higher tier in config order."""
    for pool in pools.values():
        chain = [pools[name] for name in pool.settings.fallbacks]
        tier = pool.settings.tier
        if pool.settings.escalate and tier is not None:
            above = TIERS[TIERS.index(tier) + 1 :]
            for t in above:
                chain += [p for p in pools.values() if p.settings.tier == t and p is not pool and p not in chain]
        pool.fallbacks = chain
        pool.context_fallbacks = [pools[name] for name in pool.settings.context_fallbacks]
