"""Pools of deployments, and the table that resolves a request's `model` to a pool."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from backends.errors import APIError
from backends.protocol import Backend
from gateway.routing.balancer import Balancer, balancer
from gateway.settings import DeploymentSettings, PoolSettings


class ModelNotFound(APIError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


@dataclass(eq=False)
class Deployment:
    """A backend with its settings and live load."""

    settings: DeploymentSettings
    backend: Backend
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    """Response headers that name this deployment and its config version."""
    in_flight: int = 0

    @property
    def id(self) -> str:
        return self.settings.id

    @property
    def weight(self) -> int:
        return self.settings.weight

    def upstream_model(self, requested: str) -> str:
        return self.settings.model or requested


@dataclass(eq=False)
class Pool:
    name: str
    deployments: list[Deployment]
    balancer: Balancer

    @classmethod
    def build(cls, name: str, settings: PoolSettings, deployments: list[Deployment]) -> Pool:
        return cls(name, deployments, balancer(settings.strategy))

    def pick(self) -> Deployment:
        return self.balancer.pick(self.deployments)


@dataclass
class ModelTable:
    """Model names clients may ask for: every pool's name and aliases."""

    names: dict[str, Pool] = field(default_factory=dict)

    @classmethod
    def build(cls, pools: Iterable[tuple[Pool, PoolSettings]]) -> ModelTable:
        table = cls()
        for pool, settings in pools:
            table.names[pool.name] = pool
            for alias in settings.aliases:
                table.names[alias] = pool
        return table

    def resolve(self, model: str) -> Pool:
        pool = self.names.get(model)
        if pool is None:
            known = sorted(self.names)
            listed = ", ".join(known[:50]) + (", ..." if len(known) > 50 else "")
            raise ModelNotFound(f"The model `{model[:200]}` does not exist. Available models: {listed}.", param="model")
        return pool
