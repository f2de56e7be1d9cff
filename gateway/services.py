"""What the handlers share, built once when the app starts: the live config (through the
reloader), the pipeline and what it runs on (embedder, cache, tracing, access), metrics, and
breaker sharing. Start-only settings are read here; everything else from the live config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gateway.access.control import Access
from gateway.cache.service import ResponseCache
from gateway.http.server import connection_counts
from gateway.pipeline import Pipeline
from gateway.reloader import Reloader
from gateway.routing.breaker_sync import BreakerSync
from gateway.routing.outcomes import DecisionLog, resolve_path
from gateway.telemetry import metrics
from gateway.telemetry.tracing import Tracing

if TYPE_CHECKING:
    from gateway.cache.embedder import Embedder


class Services:
    def __init__(self, reloader: Reloader) -> None:
        self.reloader = reloader
        settings = reloader.runtime.settings
        self.embedder: Embedder | None = None
        if settings.cache.enabled or settings.routers:  # built at start: turning either on later takes a restart
            from gateway.cache.embedder import OnnxEmbedder

            self.embedder = OnnxEmbedder(settings.cache.embedder)
        self.cache = (
            ResponseCache(settings.cache, self.embedder, settings.redis) if self.embedder and settings.cache.enabled else None
        )
        self.tracing = Tracing(settings.telemetry)
        self.access = Access(settings)
        self.decisions = (
            DecisionLog(
                resolve_path(settings.routing_log.path, Path(reloader.path).parent), requests=settings.routing_log.requests
            )
            if settings.routing_log.path
            else None
        )
        self.pipeline = Pipeline(reloader, self.tracing, self.access, self.cache, self.embedder, self.decisions)
        self.draining = False
        self.metrics = metrics.registry(
            lambda: reloader.runtime,
            lambda: self.pipeline.in_flight,
            self.cache,
            self.embedder,
            self.tracing,
            self.pipeline.stats,
            self.access.limits,
            self.access.revocations_known if self.access.keys is not None else None,
            connection_counts,
        )
        self.breaker_sync = BreakerSync(lambda: reloader.runtime)
