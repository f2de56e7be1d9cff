"""OpenTelemetry traces of the request path, after the GenAI semantic conventions.

The one place the SDK is configured. With `telemetry.enabled` off nothing is made: the pipeline
holds `None` instead of a `RequestTrace` and skips every call. On, each request gets a SERVER span
(`chat {model}` / `text_completion {model}`) continuing the client's `traceparent`, and each
upstream attempt a CLIENT span under it, whose context goes upstream in `traceparent`. A span is
plain data (`_Span`) until it ends; then it leaves as an SDK `ReadableSpan` through a bounded
queue (`_Batcher`) to the OTLP exporter on its own thread: a slow or absent collector never holds a
request, and spans it could not take, or that found the queue full, are counted (`dropped`), not
retried.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from backends.errors import APIError
from backends.propagation import Propagating
from backends.types import Usage
from gateway.settings import TelemetrySettings

if TYPE_CHECKING:
    from gateway.cache.service import Lookup
    from gateway.routing.dispatcher import Progress
    from gateway.routing.pools import Deployment
    from gateway.routing.router import Route

log = logging.getLogger("gateway.telemetry.tracing")
OPERATIONS = {"chat/completions": "chat", "completions": "text_completion", "embeddings": "embeddings"}
_PROPAGATOR = TraceContextTextMapPropagator()
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)


class _Counting(SpanExporter):
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


class _Batcher:
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
            self.exporter.export(batch)  # `_Counting`: never raises
        self._warned = False

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Export what is queued (for at most `timeout_s`) and stop."""
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.exporter.shutdown()


class _Bucket:
    """A token bucket: `rate` tokens a second, up to a second's worth (at least one) at once."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(rate, 1.0)
        self._tokens = self.burst
        self._last: float | None = None

    def take(self, now: float) -> bool:
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        value = int(env.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


class Tracing:
    def __init__(
        self, settings: TelemetrySettings, env: Mapping[str, str] | None = None, exporter: SpanExporter | None = None
    ) -> None:
        """`exporter`: where spans go instead of the OTLP exporter that `settings` describe."""
        self.enabled = settings.enabled
        self.cost_key = settings.cost_attribute
        self.capped = 0
        """New traces sampled but not recorded: `max_traces_per_s` had been reached."""
        self._exporter: _Counting | None = None
        self._processor: _Batcher | None = None
        if not self.enabled:
            return
        env = os.environ if env is None else env
        name = settings.service_name or env.get("OTEL_SERVICE_NAME") or "llm-gateway"
        # A new trace is sampled here, before anything is built for it (see `request`).
        self._ratio = settings.sample_ratio
        self._limit = _Bucket(settings.max_traces_per_s) if settings.max_traces_per_s > 0 else None
        # The `random` module's generator, for draws and ids alike: Python reseeds it in a forked worker.
        self._draw = random.random
        self._ids = random.getrandbits
        self.resource = Resource.create({"service.name": name})
        self.scope = InstrumentationScope("llm-gateway")
        self._exporter = _Counting(exporter or _exporter(settings, env))
        # The exporters log every failed batch, with the collector's URL; `_Counting` says it once per outage instead.
        logging.getLogger("opentelemetry.exporter").setLevel(logging.CRITICAL)
        self._processor = _Batcher(self._exporter, env)

    @property
    def dropped(self) -> int:
        """Spans the collector did not take, and spans that found the queue full."""
        if self._exporter is None or self._processor is None:
            return 0
        return self._exporter.dropped + self._processor.full

    def request(
        self, endpoint: str, model: str, payload: dict[str, Any], headers: Sequence[tuple[bytes, bytes]]
    ) -> RequestTrace | None:
        """The request's trace, or None when it is not sampled: then nothing more is done for it
        (not even passing `traceparent` on), so that `sample_ratio` cuts the cost as much as the spans.
        The decision comes first and costs a random draw and a token from `max_traces_per_s`'s
        bucket (a new trace) or a look at the caller's `traceparent` flags (a continued one), before
        any span or attribute is made."""
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in (b"traceparent", b"tracestate")}
        context = _PROPAGATOR.extract(carrier) if carrier else None
        parent = trace.get_current_span(context).get_span_context() if context is not None else None
        if parent is None or not parent.is_valid:  # a new trace (a malformed traceparent starts one too)
            if self._ratio < 1.0 and self._draw() >= self._ratio:
                return None
            if self._limit is not None and not self._limit.take(time.monotonic()):
                self.capped += 1
                return None
        elif not parent.trace_flags.sampled:  # the caller did not sample it
            return None
        operation = OPERATIONS.get(endpoint, endpoint)
        attributes = _request_attributes(operation, model, payload)
        remote = parent if parent is not None and parent.is_valid else None
        return RequestTrace(self, self.span(f"{operation} {model}", SpanKind.SERVER, remote, attributes), operation)

    def span(self, name: str, kind: SpanKind, parent: SpanContext | None, attributes: dict[str, Any] | None = None) -> _Span:
        """A new span under `parent` (None: the root of a new trace), which takes `attributes` as they
        are (see `_Span.extend`)."""
        return _Span(self, name, kind, parent, {} if attributes is None else attributes)

    def new_id(self, bits: int) -> int:
        while not (value := self._ids(bits)):  # zero is the invalid id
            pass
        return value

    def finish(self, span: ReadableSpan) -> None:
        if self._processor is not None:
            self._processor.put(span)

    def shutdown(self) -> None:
        if self._processor is not None:
            self._processor.shutdown()


class _Span:
    """A span kept as plain data until it ends, then queued for export (`_Batcher`) as one
    `ReadableSpan`. The SDK's own spans run a sampler, span metrics and an attribute check under a
    lock for every span and every attribute: on this path that was most of what a recorded request
    cost. The gateway needs none of it: it samples before building anything (`Tracing.request`) and
    sets only strings, numbers, booleans and lists of strings (None is skipped)."""

    __slots__ = ("_ended", "_tracing", "attributes", "context", "kind", "name", "parent", "start", "status")

    def __init__(
        self, tracing: Tracing, name: str, kind: SpanKind, parent: SpanContext | None, attributes: dict[str, Any]
    ) -> None:
        """`attributes`: the span's own from now on, not checked (see `extend`)."""
        self._tracing = tracing
        self.name, self.kind, self.parent = name, kind, parent
        trace_id = parent.trace_id if parent is not None else tracing.new_id(128)
        state = parent.trace_state if parent is not None else None
        self.context = SpanContext(trace_id, tracing.new_id(64), is_remote=False, trace_flags=_SAMPLED, trace_state=state)
        self.attributes = attributes
        self.status = _UNSET
        self.start = time.time_ns()
        self._ended = False

    def set_attribute(self, key: str, value: Any) -> None:
        if value is not None:
            self.attributes[key] = _attribute(value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def extend(self, attributes: Mapping[str, Any]) -> None:
        """Attributes the gateway built itself from values OTLP carries (strings, numbers,
        booleans, lists of strings; no None): added without `set_attribute`'s check, which was a
        third of what building a recorded request's spans cost."""
        self.attributes.update(attributes)

    def set_status(self, status: Status) -> None:
        self.status = status

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        tracing = self._tracing
        tracing.finish(
            ReadableSpan(
                self.name, self.context, self.parent, tracing.resource, self.attributes, kind=self.kind, status=self.status,
                start_time=self.start, end_time=time.time_ns(), instrumentation_scope=tracing.scope,
            )
        )  # fmt: skip


_SCALARS = (str, bool, int, float)


def _attribute(value: Any) -> Any:
    """A value OTLP can carry: a scalar, or a tuple of them. Anything else (a numpy number, an
    enum, an integer past int64, such as a client's `seed` of 10**23) becomes its string, rather
    than failing the encoding of a whole batch later."""
    if isinstance(value, _SCALARS) and (type(value) is not int or _INT64_MIN <= value <= _INT64_MAX):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_attribute(v) if isinstance(v, _SCALARS) else str(v) for v in value)
    return str(value)


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class RequestTrace:
    """The spans of one request. Attributes are set as the pipeline learns them."""

    def __init__(self, tracing: Tracing, span: _Span, operation: str) -> None:
        self.tracing = tracing
        self.span = span
        self.operation = operation
        self.started = time.perf_counter()
        self.last_attempt: AttemptTrace | None = None

    def routed(self, route: Route) -> None:
        attributes: dict[str, Any] = {"gateway.tier": route.tier, "gateway.route.how": route.why}
        if route.decision is not None:
            attributes["gateway.route.score"] = route.decision.score
            attributes["gateway.route.reasons"] = list(route.decision.reasons)
        self.span.set_attributes(attributes)

    def looked_up(self, lookup: Lookup | None, first: Deployment) -> None:
        if lookup is None:
            return
        self.span.set_attribute("gateway.cache.outcome", lookup.outcome)
        hit = lookup.hit
        if hit is not None:
            self.span.set_attribute("gateway.cache.similarity", hit.similarity)
            usage = msgspec.json.decode(hit.entry.body, type=_Answer).usage
            saved = first.cost(usage) if usage else 0.0
            self.span.set_attributes({self.tracing.cost_key: 0.0, "gateway.cache.saved_usd": saved})

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """A child span for one step of the request (embed, classify, cache lookup, cache store)."""
        span = self.tracing.span(name, SpanKind.INTERNAL, self.span.context)
        try:
            yield
        finally:
            span.end()

    def attempt(self, deployment: Deployment, progress: Progress, model: str) -> AttemptTrace:
        attributes = {
            "gen_ai.operation.name": self.operation,
            "gen_ai.request.model": model,
            "gateway.deployment.id": deployment.id,
            "gateway.attempt": progress.attempts,
            "gateway.fallback_index": progress.fallbacks,
            "gateway.breaker.state": deployment.breaker.state,
            **_server(deployment),
        }
        span = self.tracing.span(f"{self.operation} {model}", SpanKind.CLIENT, self.span.context, attributes)
        self.last_attempt = AttemptTrace(self, span, deployment)
        return self.last_attempt

    def answered(self, attempt: AttemptTrace | None) -> None:
        """The answer that reaches the client is `attempt`'s: its answer attributes go on the request span too."""
        if attempt is not None:
            self.span.extend({"gateway.deployment.id": attempt.deployment.id, **attempt.answer})

    def failed(self, exc: APIError) -> None:
        _fail(self.span, exc)

    def end(self, config_version: str | None = None) -> None:
        if config_version is not None:
            self.span.set_attribute("gateway.config_version", config_version)
        self.span.end()
        # An attempt points back at its request: without this, every traced request's objects
        # (both traces, their spans, attributes) waited for the cyclic garbage collector.
        self.last_attempt = None


class AttemptTrace:
    """One upstream attempt's CLIENT span. Inside `context()` the backend sends its `traceparent` upstream."""

    def __init__(self, request: RequestTrace, span: _Span, deployment: Deployment) -> None:
        self.request = request
        self.span = span
        self.deployment = deployment
        self.started = time.perf_counter()
        self.first_chunk: float | None = None
        self.finish_reasons: list[str] = []
        self.answer: dict[str, Any] = {}
        """What the answer said (finish reasons, id, model, usage, cost), once it has ended."""

    def context(self) -> Propagating:
        """Backend calls inside `with attempt.context():` send this span's W3C trace context upstream."""
        context = self.span.context
        headers = {"traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-01"}
        if context.trace_state:
            headers["tracestate"] = context.trace_state.to_header()
        return Propagating(headers)

    def chunk(self, data: bytes) -> Usage | None:
        """A streamed event went by: time to first chunk, finish reasons, usage (the last chunk's)."""
        if self.first_chunk is None:
            self.first_chunk = time.perf_counter() - self.started
            self.span.set_attribute("gen_ai.response.time_to_first_chunk", self.first_chunk)
            self.request.span.set_attribute("gen_ai.response.time_to_first_chunk", time.perf_counter() - self.request.started)
        if b'"finish_reason":"' not in data and b'"usage":{' not in data:
            return None
        try:
            chunk = msgspec.json.decode(data, type=_Answer)
        except msgspec.DecodeError:
            return None
        self.finish_reasons += [c.finish_reason for c in chunk.choices if c.finish_reason]
        if chunk.model:
            self.span.set_attribute("gen_ai.response.model", chunk.model)
        return chunk.usage

    def succeeded(self, body: bytes, usage: Usage | None) -> None:
        self.answer = _answer_attributes(body)
        if usage is not None:
            self.answer.update(_usage_attributes(usage, self.deployment, self.request.tracing.cost_key))
        self.span.extend(self.answer)
        self.span.end()

    def stream_ended(self, usage: Usage | None, error: APIError | None) -> None:
        """The whole stream went by (or broke): its usage and finish reasons on both spans."""
        if error is not None:
            _fail(self.span, error)
            _fail(self.request.span, error)
        attributes: dict[str, Any] = {"gen_ai.response.finish_reasons": self.finish_reasons} if self.finish_reasons else {}
        if usage is not None:
            attributes.update(_usage_attributes(usage, self.deployment, self.request.tracing.cost_key))
        self.span.extend(attributes)
        self.request.span.extend(attributes)
        self.span.end()

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, APIError):
            _fail(self.span, exc)
        else:
            self.span.set_attribute("error.type", type(exc).__name__)
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()


class _Choice(msgspec.Struct):
    finish_reason: str | None = None


class _Answer(msgspec.Struct):
    """What a trace reads from an answer or a chunk."""

    id: str | None = None
    model: str | None = None
    choices: list[_Choice] = msgspec.field(default_factory=list)
    usage: Usage | None = None


def _request_attributes(operation: str, model: str, payload: dict[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": model,
        "gen_ai.provider.name": "llm-gateway",
    }
    for field, key in (("max_tokens", "max_tokens"), ("max_completion_tokens", "max_tokens"), ("temperature", "temperature"),
                       ("top_p", "top_p"), ("seed", "seed"), ("n", "choice.count")):  # fmt: skip
        value = payload.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[f"gen_ai.request.{key}"] = _attribute(value)  # the client's number: int64 or its string
    return attributes


def _answer_attributes(body: bytes) -> dict[str, Any]:
    try:
        answer = msgspec.json.decode(body, type=_Answer)
    except msgspec.DecodeError:
        return {}
    attributes: dict[str, Any] = {"gen_ai.response.finish_reasons": [c.finish_reason or "" for c in answer.choices]}
    if answer.id:
        attributes["gen_ai.response.id"] = answer.id
    if answer.model:
        attributes["gen_ai.response.model"] = answer.model
    return attributes


def _usage_attributes(usage: Usage, deployment: Deployment, cost_key: str) -> dict[str, Any]:
    return {
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        cost_key: deployment.cost(usage),
    }


def _server(deployment: Deployment) -> Mapping[str, Any]:
    return _server_attributes(deployment.settings.base_url, deployment.settings.backend)


@functools.lru_cache(maxsize=256)
def _server_attributes(url: str | None, backend: str) -> Mapping[str, Any]:
    """Per deployment URL, parsed once (read only: every attempt's span shares it)."""
    if not url:
        return {"gen_ai.provider.name": backend}
    parts = urlsplit(url)  # host and port only: a URL may carry credentials
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {"gen_ai.provider.name": "openai", "server.address": parts.hostname or "", "server.port": port}


def _fail(span: _Span, exc: APIError) -> None:
    span.set_attribute("error.type", exc.code or type(exc).__name__)
    span.set_status(Status(StatusCode.ERROR, exc.message[:200]))


def _exporter(settings: TelemetrySettings, env: Mapping[str, str]) -> SpanExporter:
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

    return HttpExporter(endpoint=settings.endpoint, headers=headers, timeout=5)
