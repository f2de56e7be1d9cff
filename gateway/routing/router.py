"""A router: a virtual model name (`auto`) whose requests go to the cheapest adequate tier.

request ─▶ forced tier (header / body)? ─▶ classifier decision ─▶ tier's pool
        ─▶ chain: the pool, its own fallbacks, then (escalate) the pools of the tiers above
        ─▶ shadow: the decision is made and shown, the shadow pool answers
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.errors import InvalidRequest, PermissionDenied
from gateway.routing.classifier import ComplexityModel, Decision
from gateway.routing.pools import Pool
from gateway.routing.task import Task
from gateway.settings import RouterSettings


@dataclass(frozen=True, slots=True)
class Route:
    tier: str
    pool: Pool
    chain: list[Pool]
    decision: Decision | None
    """None when the tier was chosen for the classifier."""
    why: str = "routed"
    """routed (the classifier), forced (the client), shadow, json_schema (a tier below broke the
    schema), capped (the classifier's tier is above what the client's key may use)."""

    @property
    def shadow(self) -> bool:
        return self.why == "shadow"

    def headers(self) -> list[tuple[bytes, bytes]]:
        found = [(b"x-gateway-tier", self.tier.encode())]
        if self.decision is not None:
            found.append((b"x-gateway-route-score", f"{self.decision.score:.4f}".encode()))
            found.append((b"x-gateway-route-reasons", "; ".join(self.decision.reasons).encode("ascii", "replace")))
        if self.why == "forced":
            found.append((b"x-gateway-route-forced", b"true"))
        elif self.why == "capped":
            found.append((b"x-gateway-route-capped", b"key"))
        elif self.why == "json_schema":
            found.append((b"x-gateway-route-escalated", b"json_schema"))
        elif self.shadow:
            found.append((b"x-gateway-route-shadow", self.pool.name.encode()))
        return found


class Router:
    def __init__(self, name: str, settings: RouterSettings, model: ComplexityModel, pools: Mapping[str, Pool]) -> None:
        self.name = name
        self.settings = settings
        self.model = model
        self.tiers = list(settings.tiers)
        self.thresholds = [
            t.threshold if t.threshold is not None else model.thresholds[i] for i, t in enumerate(settings.tiers.values())
        ]
        self.pools = [pools[t.pool] for t in settings.tiers.values()]
        self.chains = [self._chain(i) for i in range(len(self.pools))]
        self.shadow = pools[settings.shadow] if settings.shadow else None
        self.decisions: dict[tuple[str, str], int] = {}
        """(tier, how: routed / forced / shadow) -> requests."""

    def _chain(self, index: int) -> list[Pool]:
        """The tier's pool and its own fallbacks; with `escalate`, then each tier above (and its fallbacks)."""
        pool = self.pools[index]
        chain = [pool, *pool.fallbacks]
        if self.settings.escalate:
            for above in self.pools[index + 1 :]:
                chain += [p for p in (above, *above.fallbacks) if p not in chain]
        return chain

    def route(
        self,
        payload: Mapping[str, Any],
        vector: np.ndarray | None,
        forced: str | None,
        why: str = "forced",
        allowed: Collection[str] | None = None,
        found: Task | None = None,
    ) -> Route:
        """The tier's route: `forced` (by the client, or `why` else) or the classifier's choice.
        With `allowed` (a key's tiers) the choice is capped at the largest allowed tier below it,
        and the chain keeps only allowed tiers' pools. `found`: the request's `task`, when known."""
        if forced is not None:
            if forced not in self.tiers:
                raise InvalidRequest(
                    f"Unknown tier {forced!r} for {self.name!r}; its tiers: {', '.join(self.tiers)}.", param="tier"
                )
            index, decision = self.tiers.index(forced), None
        else:
            decision = self.model.decide(payload, vector, thresholds=self.thresholds, bias=self.settings.bias, found=found)
            index = self.tiers.index(decision.tier)
        how = why if decision is None else "routed"
        if allowed is not None and self.tiers[index] not in allowed:
            below = [i for i in range(index) if self.tiers[i] in allowed]
            if decision is None or not below:
                raise PermissionDenied(
                    f"This API key may not use tier {self.tiers[index]!r} of {self.name!r}; "
                    f"it may use: {', '.join(t for t in self.tiers if t in allowed) or 'none'}.",
                    param="tier",
                    code="tier_not_allowed",
                )
            index, how = below[-1], "capped"
        tier = self.tiers[index]
        if self.shadow is not None:
            self._count(tier, "shadow")
            return Route(tier, self.shadow, [self.shadow, *self.shadow.fallbacks], decision, "shadow")
        self._count(tier, how)
        chain = self.chains[index]
        if allowed is not None:
            barred = {id(p) for t, p in zip(self.tiers, self.pools, strict=True) if t not in allowed}
            chain = [p for p in chain if id(p) not in barred]
        return Route(tier, self.pools[index], chain, decision, how)

    def above(self, tier: str) -> str | None:
        """The next larger tier (None for the largest)."""
        index = self.tiers.index(tier) + 1
        return self.tiers[index] if index < len(self.tiers) else None

    def _count(self, tier: str, how: str) -> None:
        self.decisions[(tier, how)] = self.decisions.get((tier, how), 0) + 1
