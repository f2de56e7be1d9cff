"""The W3C trace context an upstream call carries.

A traced attempt (`gateway.telemetry.tracing.AttemptTrace`) sets `UPSTREAM_TRACE` to its
`traceparent` (and `tracestate`) headers around the backend call; the HTTP backend adds them to the
request. An untraced call finds None and pays one context-variable read. (OpenTelemetry's context
and propagator API did the same job for about 9 µs a traced request, and a current-span look-up on
every untraced one.)
"""

from __future__ import annotations

from contextvars import ContextVar

UPSTREAM_TRACE: ContextVar[dict[str, str] | None] = ContextVar("upstream_trace", default=None)
