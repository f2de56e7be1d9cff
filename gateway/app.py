"""The app factory: the shared services, Litestar for routing and lifespan, wrapped by the
request-context middleware."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Callable

from litestar import Litestar

from gateway.config import default_path
from gateway.http.admin import Listeners
from gateway.http.drain import DRAIN
from gateway.http.handlers import routes
from gateway.http.middleware import RequestContext
from gateway.http.responses import EXCEPTION_HANDLERS
from gateway.reloader import Reloader
from gateway.services import Services

GC_THRESHOLDS = (50_000, 20, 100)
"""The cyclic collector runs after 50,000 net allocations, not 700. Requests free what they make by
reference counting; what the collector walks is what lives: with 10,000 connections open (slow
clients), a full collection took 150-450 ms every few seconds at the default thresholds, and the
other clients' p99 went from 7 ms to 0.3-2.4 s (loadtest/bench_slow_clients.py)."""


def create_app(config_path: str | None = None) -> RequestContext:
    """Build the ASGI app for a config file (default: $GATEWAY_CONFIG, else config/gateway.yaml in
    the working directory or the checkout).

    Raises `gateway.config.ConfigError` when the file is invalid: the gateway never starts on a
    bad config.
    """
    services = Services(Reloader(config_path or default_path()))
    app = Litestar(
        route_handlers=routes(services),
        lifespan=[_lifespan(services)],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=None,
        logging_config=None,
    )
    return RequestContext(Listeners(app, services))


def _lifespan(services: Services) -> Callable[[Litestar], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        services.reloader.start_watching()
        services.breaker_sync.start()
        services.access.start()
        if services.cache is not None:
            services.cache.start()
        # What start-up built lives as long as the process: out of the collector's sight, a full
        # collection no longer walks it (about 90,000 objects, 25 ms a pass, every few seconds under load).
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        bounds = services.reloader.runtime.settings.server
        DRAIN.install(bounds.drain_delay_s, bounds.drain_timeout_s, lambda: setattr(services, "draining", True))
        try:
            yield
        finally:
            services.draining = True
            DRAIN.forget_signal()
            await services.breaker_sync.aclose()
            await services.reloader.aclose()
            await services.access.aclose()
            if services.cache is not None:
                await services.cache.aclose()
            if services.embedder is not None:
                services.embedder.close()
            services.tracing.shutdown()  # exports what is still queued
            if services.decisions is not None:
                services.decisions.close()

    return lifespan
