"""Prometheus metrics at `/metrics`, read from live state when scraped (nothing on the hot path)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.access.limits import Limits
from gateway.routing.breaker import STATE_VALUES
from gateway.runtime import Runtime
from gateway.telemetry.health import deployment_health
from gateway.telemetry.stats import RequestStats

if TYPE_CHECKING:
    from gateway.cache.embedder import Embedder
    from gateway.cache.service import ResponseCache
    from gateway.telemetry.tracing import Tracing

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HealthCollector(Collector):
    def __init__(
        self,
        runtime: Callable[[], Runtime],
        in_flight: Callable[[], int],
        cache: ResponseCache | None,
        embedder: Embedder | None,
        tracing: Tracing | None,
        stats: RequestStats | None,
        limits: Limits | None = None,
        revoked: Callable[[], int] | None = None,
        connections: Callable[[], tuple[int, dict[str, int]]] | None = None,
    ) -> None:
        self._limits = limits
        self._revoked = revoked
        self._connections = connections
        self._runtime = runtime
        self._in_flight = in_flight
        self._cache = cache
        self._embedder = embedder
        self._tracing = tracing
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        labels = ["pool", "deployment"]
        state = GaugeMetricFamily("gateway_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", labels=labels)
        opened = CounterMetricFamily("gateway_breaker_opened", "Times the breaker has opened.", labels=labels)
        busy = GaugeMetricFamily("gateway_deployment_in_flight", "Requests in flight to the deployment.", labels=labels)
        for h in deployment_health(self._runtime()):
            key = [h.pool, h.deployment]
            state.add_metric(key, STATE_VALUES[h.state])
            opened.add_metric(key, h.times_opened)
            busy.add_metric(key, h.in_flight)
        yield from (state, opened, busy)
        yield GaugeMetricFamily("gateway_in_flight", "Requests in flight in this gateway process.", value=self._in_flight())
        if self._stats is not None:
            yield from self._stats.collect()
        dropped = "Spans not exported: the trace collector did not take them, or they found the span queue full."
        yield CounterMetricFamily("gateway_trace_spans_dropped", dropped, value=self._tracing.dropped if self._tracing else 0)
        capped = "New traces not recorded because telemetry.max_traces_per_s had been reached."
        yield CounterMetricFamily("gateway_traces_capped", capped, value=self._tracing.capped if self._tracing else 0)
        decisions = CounterMetricFamily(
            "gateway_router_decisions", "Requests per router and tier.", labels=["router", "tier", "how"]
        )
        for router in self._runtime().routers.values():
            for (tier, how), count in router.decisions.items():
                decisions.add_metric([router.name, tier, how], count)
        yield decisions
        if self._embedder is not None:
            help_text = "Texts embedded (the router and the cache share one per request)."
            yield CounterMetricFamily("gateway_embedder_texts", help_text, value=self._embedder.texts)
            batches = "Embedding batches run (texts that arrive together share one)."
            yield CounterMetricFamily("gateway_embedder_batches", batches, value=self._embedder.batches)
        if self._cache is not None:
            yield from _cache_metrics(self._cache)
        if self._limits is not None:
            yield from _limit_metrics(self._limits)
        if self._connections is not None:
            held, refused = self._connections()
            yield GaugeMetricFamily("gateway_connections_open", "Client connections open in this process.", value=held)
            bounds = CounterMetricFamily(
                "gateway_connections_refused",
                "Client connections and requests refused by a server bound (429/503 caps, 408 timeouts, 431/414 heads).",
                labels=["reason"],
            )
            for reason, count in sorted(refused.items()):
                bounds.add_metric([reason], count)
            yield bounds
        if self._revoked is not None:
            known = "Keys revoked anywhere that this process knows of (refused even while Redis is down)."
            yield GaugeMetricFamily("gateway_keys_revoked_known", known, value=self._revoked())


def _limit_metrics(limits: Limits) -> Iterator[Metric]:
    refused = CounterMetricFamily(
        "gateway_limits_refused", "Requests refused for a key's rate limit or budget.", labels=["tenant", "limit"]
    )
    for (alias, kind), count in limits.refused.items():
        refused.add_metric([alias, kind], count)
    yield refused
    if limits.shared is not None:
        up = "1 while the shared limit counters (Redis) answer, 0 while the failure policy applies."
        yield GaugeMetricFamily("gateway_limits_store_up", up, value=int(not limits.outage.down))
        errors = "Calls to the shared limit counters that failed or timed out."
        yield CounterMetricFamily("gateway_limits_store_errors", errors, value=limits.outage.errors)


def _cache_metrics(cache: ResponseCache) -> Iterator[Metric]:
    lookups = CounterMetricFamily("gateway_cache_lookups", "Cache lookups by outcome.", labels=["outcome"])
    for outcome, count in cache.counts.items():
        lookups.add_metric([outcome], count)
    yield lookups
    yield CounterMetricFamily(
        "gateway_cache_refused",
        "Semantic candidates refused by the rules (numbers, quoted text, code, unreadable text).",
        value=cache.layers.refused,
    )
    yield CounterMetricFamily(
        "gateway_cache_rejected", "Semantic candidates the verifier scored below the threshold.", value=cache.layers.rejected
    )
    yield CounterMetricFamily("gateway_cache_reported_wrong", "Hits reported wrong through feedback.", value=cache.reported_wrong)
    yield GaugeMetricFamily(
        "gateway_cache_index_vectors", "Vectors in this worker's semantic index.", value=cache.layers.index.size()
    )
    yield GaugeMetricFamily(
        "gateway_cache_store_up", "1 while the cache store answers, 0 while it is bypassed.", value=int(cache.store_up)
    )
    yield CounterMetricFamily(
        "gateway_cache_store_errors", "Cache store calls that failed or timed out.", value=cache.store_errors
    )


def registry(
    runtime: Callable[[], Runtime],
    in_flight: Callable[[], int],
    cache: ResponseCache | None = None,
    embedder: Embedder | None = None,
    tracing: Tracing | None = None,
    stats: RequestStats | None = None,
    limits: Limits | None = None,
    revoked: Callable[[], int] | None = None,
    connections: Callable[[], tuple[int, dict[str, int]]] | None = None,
) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(HealthCollector(runtime, in_flight, cache, embedder, tracing, stats, limits, revoked, connections))
    return reg


def render(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
