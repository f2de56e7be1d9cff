"""Prometheus metrics of the engine: queue, KV cache, prefix cache, tokens, TTFT and inter-token latency."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from backends.local_engine.engine import Delta, LLMEngine

# The OpenTelemetry GenAI buckets for time to first token and time per output token.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


class _Stats:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        stats = self.engine.stats()
        for name, key, doc in (
            ("engine_requests_running", "running", "Sequences running."),
            ("engine_requests_waiting", "waiting", "Sequences waiting for KV blocks or a batch slot."),
            ("engine_kv_cache_usage_ratio", "kv_usage", "Share of KV blocks held by sequences."),
            (
                "engine_prefix_cache_hit_ratio",
                "prefix_hit_rate",
                "Prompt tokens found in the prefix cache / prompt tokens admitted.",
            ),
            ("engine_preemptions", "preemptions", "Sequences preempted (recomputed later) so far."),
            ("engine_prompt_tokens", "prompt_tokens", "Prompt tokens received so far."),
            ("engine_generation_tokens", "generation_tokens", "Tokens generated so far."),
        ):
            yield GaugeMetricFamily(name, doc, value=float(stats[key]))


class EngineMetrics:
    def __init__(self, engine: LLMEngine) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Stats(engine))
        self.ttft = Histogram(
            "engine_time_to_first_token_seconds", "From request to first token.", buckets=TTFT_BUCKETS, registry=self.registry
        )
        self.itl = Histogram(
            "engine_inter_token_latency_seconds", "Between a request's tokens.", buckets=ITL_BUCKETS, registry=self.registry
        )
        self.step_seconds = Histogram(
            "engine_step_seconds", "One engine step (schedule, forward, sample).", registry=self.registry
        )
        self.finished = Counter("engine_requests_finished", "Choices finished, by reason.", ["reason"], registry=self.registry)

    def step(self, deltas: list[Delta], seconds: float) -> None:
        self.step_seconds.observe(seconds)
        for delta in deltas:
            if delta.finish_reason is not None:
                self.finished.labels(delta.finish_reason).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
