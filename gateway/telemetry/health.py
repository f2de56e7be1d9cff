"""What the gateway knows of its deployments' health, for the admin API and for metrics."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

from gateway.routing.breaker import State
from gateway.runtime import Runtime


@dataclass(frozen=True)
class DeploymentHealth:
    pool: str
    deployment: str
    state: State
    open_for_s: float
    """Seconds until an open breaker lets probes through (0 unless open)."""
    window_requests: int
    window_failures: int
    times_opened: int
    in_flight: int
    latency_ewma_ms: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def deployment_health(runtime: Runtime) -> Iterator[DeploymentHealth]:
    for pool in runtime.pools:
        for d in pool.deployments:
            state = d.breaker.state
            requests, failures = d.breaker.counts()
            yield DeploymentHealth(
                pool=pool.name,
                deployment=d.id,
                state=state,
                open_for_s=round(d.breaker.ready_in(), 3) if state == "open" else 0.0,
                window_requests=requests,
                window_failures=failures,
                times_opened=d.breaker.times_opened,
                in_flight=d.in_flight,
                latency_ewma_ms=round(d.latency.value * 1000, 3),
            )
