"""Per-request figures for /metrics, kept in plain dicts on the hot path and turned into Prometheus
families only when scraped (a `prometheus_client` labelled metric costs a lock and a lookup per
update; this costs a dict update).

Labels come from the config, never from the client: `model` is the pool the request resolved to
(a router's request: its tier's pool; `-` for one that never resolved), `tier` the router's tier
or the pool's own, `tenant` the key's alias (empty until keys exist). Retries and fallbacks count
under the pool the request started in; the cost is the answering deployment's price.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

if TYPE_CHECKING:
    from backends.types import Usage
    from gateway.routing.pools import Deployment

# The OpenTelemetry GenAI buckets: gen_ai.server.request.duration and gen_ai.server.time_to_first_token.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
STEP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


@dataclass(slots=True)
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


@dataclass(slots=True)
class Tally:
    """What one request came to. The pipeline fills it in as it goes and hands it over at the end."""

    model: str = "-"
    tier: str = ""
    tenant: str = ""
    status: int = 200
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    saved: float = 0.0
    attempts: int = 0
    fallbacks: int = 0
    ttft: float | None = None

    def count(self, usage: Usage, deployment: Deployment) -> None:
        """Add an upstream call's usage, priced at the deployment that gave it (a request may pay
        for more than one: an answer asked again, an attempt abandoned before it told its usage)."""
        self.input_tokens += usage.prompt_tokens
        self.output_tokens += usage.completion_tokens
        self.cost += deployment.cost(usage)


class RequestStats:
    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        self.tokens: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.cost: defaultdict[tuple[str, str, str], float] = defaultdict(float)
        self.saved: defaultdict[tuple[str, str, str], float] = defaultdict(float)
        self.retries: defaultdict[str, int] = defaultdict(int)
        self.fallbacks: defaultdict[str, int] = defaultdict(int)
        self.duration: dict[tuple[str, str], _Histogram] = {}
        self.ttft: dict[tuple[str, str], _Histogram] = {}
        self.embedding = _Histogram(STEP_BUCKETS)
        self.classifier = _Histogram(STEP_BUCKETS)

    def steps(self, embedding: float | None, classifier: float) -> None:
        """A routed request's embedding (None when it had none) and classification times."""
        if embedding is not None:
            self.embedding.observe(embedding)
        self.classifier.observe(classifier)

    def record(self, o: Tally, seconds: float) -> None:
        self.requests[o.model, o.tier, o.status] += 1
        key = (o.model, o.tier)
        if key not in self.duration:
            self.duration[key] = _Histogram(DURATION_BUCKETS)
            self.ttft[key] = _Histogram(TTFT_BUCKETS)
        self.duration[key].observe(seconds)
        if o.ttft is not None:
            self.ttft[key].observe(o.ttft)
        if o.input_tokens or o.output_tokens:
            self.tokens[o.model, o.tier, "input"] += o.input_tokens
            self.tokens[o.model, o.tier, "output"] += o.output_tokens
        if o.cost:
            self.cost[o.model, o.tier, o.tenant] += o.cost
        if o.saved:
            self.saved[o.model, o.tier, o.tenant] += o.saved
        if o.attempts > 1 + o.fallbacks:
            self.retries[o.model] += o.attempts - 1 - o.fallbacks
        if o.fallbacks:
            self.fallbacks[o.model] += o.fallbacks

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "gateway_requests", "Requests by pool, tier and status.", labels=["model", "tier", "status"]
        )
        for (model, tier, status), n in self.requests.items():
            requests.add_metric([model, tier, str(status)], n)
        yield requests
        yield from self._histograms()
        tokens = CounterMetricFamily(
            "gateway_tokens", "Tokens by pool, tier and type (input, output).", labels=["model", "tier", "type"]
        )
        for (model, tier, kind), n in self.tokens.items():
            tokens.add_metric([model, tier, kind], n)
        yield tokens
        labels = ["model", "tier", "tenant"]
        cost = CounterMetricFamily("gateway_cost_usd", "Spend in USD at the YAML prices.", labels=labels)
        for key, usd in self.cost.items():
            cost.add_metric(list(key), usd)
        yield cost
        saved = CounterMetricFamily("gateway_cache_saved_usd", "What cache hits would have cost, in USD.", labels=labels)
        for key, usd in self.saved.items():
            saved.add_metric(list(key), usd)
        yield saved
        retries = CounterMetricFamily("gateway_retries", "Upstream attempts beyond the first in a pool.", labels=["model"])
        for model, n in self.retries.items():
            retries.add_metric([model], n)
        yield retries
        fallbacks = CounterMetricFamily("gateway_fallbacks", "Pools passed over to a fallback.", labels=["model"])
        for model, n in self.fallbacks.items():
            fallbacks.add_metric([model], n)
        yield fallbacks

    def _histograms(self) -> Iterator[Metric]:
        for name, doc, table in (
            ("gateway_request_duration_seconds", "Time to the whole answer (a stream's last byte).", self.duration),
            ("gateway_time_to_first_token_seconds", "Time to a stream's first event.", self.ttft),
        ):
            family = HistogramMetricFamily(name, doc, labels=["model", "tier"])
            for (model, tier), h in table.items():
                if h.counts:
                    family.add_metric([model, tier], h.buckets(), h.total)
            yield family
        for name, doc, h in (
            ("gateway_embedding_seconds", "Embedding a routed request (shared with the cache).", self.embedding),
            ("gateway_classifier_seconds", "Classifying a routed request, the embedding excluded.", self.classifier),
        ):
            family = HistogramMetricFamily(name, doc)
            if h.counts:
                family.add_metric([], h.buckets(), h.total)
            yield family
