"""Spans on their way to the collector: a bounded queue, a thread that exports in batches, and
a count of what did not get through. A slow or absent collector never holds a request: spans it
could not take, or that found the queue full, are counted (`dropped`), never retried.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Mapping, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from gateway.settings import TelemetrySettings

log = logging.getLogger("gateway.telemetry")


class CountingExporter(SpanExporter):
    """Passes spans to the real exporter and counts the ones that did not get through."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.dropped = 0
        self._warned = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter must not take the processor's thread down
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.dropped += len(spans)
            if not self._warned:
                log.warning("the trace collector did not take %d spans; spans are dropped until it does", len(spans))
                self._warned = True
        else:
            self._warned = False
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

class SpanQueue:
    """The batch span processor, without its per-span cost: ended spans wait in a bounded queue and
    a thread exports them in batches, every `delay` seconds or as soon as a batch is full. When the
    queue is full (a collector slower than the traffic) a span is dropped and counted at once, with
    one warning per episode; the SDK's processor logs every such span and counts none. Sizes and
    delay come from the standard `OTEL_BSP_*` variables, with the SDK's defaults."""

    def __init__(self, exporter: SpanExporter, env: Mapping[str, str]) -> None:
        self.exporter = exporter
        self.capacity = _positive(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self.batch = min(self.capacity, _positive(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512))
        self.delay = _positive(env, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self.full = 0
        self._warned = False
        self._queue: deque[ReadableSpan] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        forked = weakref.WeakMethod(self._forked)
        os.register_at_fork(after_in_child=lambda: (method := forked()) and method())

    def _forked(self) -> None:
        """A forked child has none of the parent's threads: it starts its own, with an empty queue."""
        self._queue.clear()
        self._thread = None

    def put(self, span: ReadableSpan) -> None:
        if self._closed:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gateway-span-export", daemon=True)
            self._thread.start()
        if len(self._queue) >= self.capacity:
            self.full += 1
            if not self._warned:
                log.warning("the span queue is full (%d); spans are dropped until the collector catches up", self.capacity)
                self._warned = True
            return
        self._queue.append(span)
        if len(self._queue) >= self.batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.delay)
            self._wake.clear()
            self._drain(everything=False)
        self._drain(everything=True)

    def _drain(self, everything: bool) -> None:
        """One batch, then more only while full batches wait (or all of them, at shutdown): the
        spans that arrive during an export wait for the next wake-up instead of leaving a few at a
        time, one export each."""
        first = True
        while self._queue and (first or everything or len(self._queue) >= self.batch):
            first = False
            batch = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
            self.exporter.export(batch)  # `CountingExporter`: never raises
        self._warned = False

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Export what is queued (for at most `timeout_s`) and stop."""
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.exporter.shutdown()

def _seconds(value: str | None, default: float) -> float:
    try:
        seconds = float(value) if value else default
    except ValueError:
        return default
    return seconds if seconds > 0 else default


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        value = int(env.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default

def otlp_exporter(settings: TelemetrySettings, env: Mapping[str, str]) -> SpanExporter:
    protocol = (
        settings.protocol
        or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    headers = {k: v.reveal() for k, v in settings.headers.items()} or None
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=settings.endpoint, headers=headers)
    from gateway.telemetry.otlp import HttpExporter

    # The export's whole time budget, retries included: the standard variables when set, else 5 s.
    timeout = env.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or env.get("OTEL_EXPORTER_OTLP_TIMEOUT")
    return HttpExporter(endpoint=settings.endpoint, headers=headers, timeout=_seconds(timeout, 5.0))
