"""OpenTelemetry traces of the request path, after the GenAI semantic conventions.

The one place the SDK is configured. Each sampled request gets a SERVER span (`chat {model}` /
`text_completion {model}`) continuing the client's `traceparent`, a child span per step (embed,
classify, cache lookup, cache store), and a CLIENT span per upstream attempt, whose context goes
upstream in `traceparent`. A request that is not traced (telemetry off, not sampled, over
`max_traces_per_s`) gets `NULL_TRACE`, whose every method does nothing: the request path calls
the same methods either way and has no tracing branches of its own, and an untraced request's
backend calls are not wrapped at all. Spans are plain data until they end (`spans.Span`), then
leave through a bounded queue to the exporter (`export.SpanQueue`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from backends.errors import APIError
from backends.propagation import UPSTREAM_TRACE
from backends.types import Usage
from gateway.settings import TelemetrySettings
from gateway.telemetry.attributes import Answer, answer_attributes, fail, request_attributes, server, usage_attributes
from gateway.telemetry.export import CountingExporter, SpanQueue, otlp_exporter
from gateway.telemetry.spans import Span

if TYPE_CHECKING:
    from contextvars import Token

    from backends.protocol import Completion
    from gateway.cache.service import Lookup
    from gateway.routing.dispatcher import Call, Progress
    from gateway.routing.pools import Deployment
    from gateway.routing.retry import Deadline
    from gateway.routing.router import Route

T = TypeVar("T")
OPERATIONS = {"chat/completions": "chat", "completions": "text_completion", "embeddings": "embeddings"}
_PROPAGATOR = TraceContextTextMapPropagator()


class Trace(Protocol):
    """One request's trace, as the request path sees it (a `RequestTrace`, or `NULL_TRACE`)."""

    def keyed(self, alias: str) -> None: ...

    def step(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A child span around one step of the request."""
        ...

    def routed(self, route: Route) -> None: ...

    def looked_up(self, lookup: Lookup, first: Deployment) -> None: ...

    def completions(self, call: Call[Completion], progress: Progress, model: str) -> Call[Completion]:
        """`call` (one attempt at a whole answer) with a CLIENT span around each attempt, whose trace
        context goes upstream; an untraced request gets `call` back as it is."""
        ...

    def stream_openings(self, call: Call[T], progress: Progress, model: str) -> Call[T]:
        """The same for opening a stream; the span of the attempt that opened it stays open
        (`stream_attempt`) until the stream has ended."""
        ...

    def stream_attempt(self) -> Attempt:
        """The attempt whose stream reaches the client."""
        ...

    def failed(self, exc: APIError) -> None: ...

    def end(self, config_version: str) -> None:
        """The request has ended; unless it failed, its last attempt's answer was the client's."""
        ...


class Attempt(Protocol):
    """A streamed attempt's span, as the relay sees it."""

    def chunk(self, data: bytes) -> None:
        """A streamed event went by."""
        ...

    def stream_ended(self, usage: Usage, error: APIError | None, estimated: bool) -> None: ...


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



class Tracing:
    def __init__(
        self, settings: TelemetrySettings, env: Mapping[str, str] | None = None, exporter: SpanExporter | None = None
    ) -> None:
        """`exporter`: where spans go instead of the OTLP exporter that `settings` describe."""
        self.enabled = settings.enabled
        self.cost_key = settings.cost_attribute
        self.capped = 0
        """New traces sampled but not recorded: `max_traces_per_s` had been reached."""
        self._exporter: CountingExporter | None = None
        self._processor: SpanQueue | None = None
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
        self._exporter = CountingExporter(exporter or otlp_exporter(settings, env))
        # The exporters log every failed batch, with the collector's URL; `CountingExporter` says it once per outage instead.
        logging.getLogger("opentelemetry.exporter").setLevel(logging.CRITICAL)
        self._processor = SpanQueue(self._exporter, env)

    @property
    def dropped(self) -> int:
        """Spans the collector did not take, and spans that found the queue full."""
        if self._exporter is None or self._processor is None:
            return 0
        return self._exporter.dropped + self._processor.full

    def request(
        self, endpoint: str, model: str, payload: dict[str, Any], headers: Sequence[tuple[bytes, bytes]]
    ) -> Trace:
        """The request's trace, or `NULL_TRACE` when it is not traced: then nothing more is done for it
        (not even passing `traceparent` on), so that `sample_ratio` cuts the cost as much as the spans.
        The decision comes first and costs a random draw and a token from `max_traces_per_s`'s
        bucket (a new trace) or a look at the caller's `traceparent` flags (a continued one), before
        any span or attribute is made."""
        if not self.enabled:
            return NULL_TRACE
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in (b"traceparent", b"tracestate")}
        context = _PROPAGATOR.extract(carrier) if carrier else None
        parent = trace.get_current_span(context).get_span_context() if context is not None else None
        if parent is None or not parent.is_valid:  # a new trace (a malformed traceparent starts one too)
            if self._ratio < 1.0 and self._draw() >= self._ratio:
                return NULL_TRACE
            if self._limit is not None and not self._limit.take(time.monotonic()):
                self.capped += 1
                return NULL_TRACE
        elif not parent.trace_flags.sampled:  # the caller did not sample it
            return NULL_TRACE
        operation = OPERATIONS.get(endpoint, endpoint)
        attributes = request_attributes(operation, model, payload)
        remote = parent if parent is not None and parent.is_valid else None
        return RequestTrace(self, self.span(f"{operation} {model}", SpanKind.SERVER, remote, attributes), operation)

    def span(self, name: str, kind: SpanKind, parent: SpanContext | None, attributes: dict[str, Any] | None = None) -> Span:
        """A new span under `parent` (None: the root of a new trace), which takes `attributes` as they
        are (see `Span.extend`)."""
        return Span(self, name, kind, parent, {} if attributes is None else attributes)

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


class RequestTrace:
    """The spans of one sampled request. Attributes are set as the pipeline learns them."""

    def __init__(self, tracing: Tracing, span: Span, operation: str) -> None:
        self.tracing = tracing
        self.span = span
        self.operation = operation
        self.started = time.perf_counter()
        self.last_attempt: AttemptTrace | None = None
        self._failed = False

    def keyed(self, alias: str) -> None:
        self.span.set_attribute("gateway.key.alias", alias)

    def routed(self, route: Route) -> None:
        attributes: dict[str, Any] = {"gateway.tier": route.tier, "gateway.route.how": route.why}
        if route.decision is not None:
            attributes["gateway.route.score"] = route.decision.score
            attributes["gateway.route.reasons"] = list(route.decision.reasons)
        self.span.set_attributes(attributes)

    def looked_up(self, lookup: Lookup, first: Deployment) -> None:
        self.span.set_attribute("gateway.cache.outcome", lookup.outcome)
        hit = lookup.hit
        if hit is not None:
            self.span.set_attribute("gateway.cache.similarity", hit.similarity)
            usage = msgspec.json.decode(hit.entry.body, type=Answer).usage
            saved = first.cost(usage) if usage else 0.0
            self.span.set_attributes({self.tracing.cost_key: 0.0, "gateway.cache.saved_usd": saved})

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
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
            **server(deployment),
        }
        span = self.tracing.span(f"{self.operation} {model}", SpanKind.CLIENT, self.span.context, attributes)
        self.last_attempt = AttemptTrace(self, span, deployment)
        return self.last_attempt

    def completions(self, call: Call[Completion], progress: Progress, model: str) -> Call[Completion]:
        async def traced(deployment: Deployment, deadline: Deadline) -> Completion:
            with self.attempt(deployment, progress, deployment.upstream_model(model)) as attempt:
                done = await call(deployment, deadline)
            attempt.succeeded(done.body, done.usage)
            return done

        return traced

    def stream_openings(self, call: Call[T], progress: Progress, model: str) -> Call[T]:
        async def traced(deployment: Deployment, deadline: Deadline) -> T:
            with self.attempt(deployment, progress, deployment.upstream_model(model)):
                return await call(deployment, deadline)

        return traced

    def stream_attempt(self) -> Attempt:
        return NULL_ATTEMPT if self.last_attempt is None else self.last_attempt

    def failed(self, exc: APIError) -> None:
        self._failed = True
        fail(self.span, exc)

    def end(self, config_version: str) -> None:
        attempt = self.last_attempt
        if attempt is not None and not self._failed:  # its answer is the one the client got
            self.span.extend({"gateway.deployment.id": attempt.deployment.id, **attempt.answer})
        self.span.set_attribute("gateway.config_version", config_version)
        self.span.end()
        # An attempt points back at its request: without this, every traced request's objects
        # (both traces, their spans, attributes) waited for the cyclic garbage collector.
        self.last_attempt = None


class AttemptTrace:
    """One upstream attempt's CLIENT span. Inside `with attempt:` the backend sends its W3C trace
    context upstream (`backends.propagation`); an exception inside ends the span as failed."""

    def __init__(self, request: RequestTrace, span: Span, deployment: Deployment) -> None:
        self.request = request
        self.span = span
        self.deployment = deployment
        self.started = time.perf_counter()
        self.first_chunk: float | None = None
        self.finish_reasons: list[str] = []
        self.answer: dict[str, Any] = {}
        """What the answer said (finish reasons, id, model, usage, cost), once it has ended."""
        self._token: Token[dict[str, str] | None] | None = None

    def __enter__(self) -> AttemptTrace:
        context = self.span.context
        headers = {"traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-01"}
        if context.trace_state:
            headers["tracestate"] = context.trace_state.to_header()
        self._token = UPSTREAM_TRACE.set(headers)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._token is not None:
            UPSTREAM_TRACE.reset(self._token)
            self._token = None
        if exc is not None:
            self._failed(exc)

    def chunk(self, data: bytes) -> None:
        """Time to first chunk, finish reasons, the model that answered."""
        if self.first_chunk is None:
            self.first_chunk = time.perf_counter() - self.started
            self.span.set_attribute("gen_ai.response.time_to_first_chunk", self.first_chunk)
            self.request.span.set_attribute("gen_ai.response.time_to_first_chunk", time.perf_counter() - self.request.started)
        if b'"finish_reason":"' not in data and b'"model":"' not in data:
            return
        try:
            chunk = msgspec.json.decode(data, type=Answer)
        except msgspec.DecodeError:
            return
        self.finish_reasons += [c.finish_reason for c in chunk.choices if c.finish_reason]
        if chunk.model:
            self.span.set_attribute("gen_ai.response.model", chunk.model)

    def succeeded(self, body: bytes, usage: Usage | None) -> None:
        self.answer = answer_attributes(body)
        if usage is not None:
            self.answer.update(usage_attributes(usage, self.deployment, self.request.tracing.cost_key))
        self.span.extend(self.answer)
        self.span.end()

    def stream_ended(self, usage: Usage, error: APIError | None, estimated: bool) -> None:
        """The whole stream went by (or broke): its usage and finish reasons on both spans."""
        if error is not None:
            fail(self.span, error)
            self.request.failed(error)
        attributes: dict[str, Any] = {"gen_ai.response.finish_reasons": self.finish_reasons} if self.finish_reasons else {}
        attributes.update(usage_attributes(usage, self.deployment, self.request.tracing.cost_key))
        if estimated:
            self.request.span.set_attribute("gateway.usage.estimated", True)
        self.span.extend(attributes)
        self.request.span.extend(attributes)
        self.span.end()

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, APIError):
            fail(self.span, exc)
        else:
            self.span.set_attribute("error.type", type(exc).__name__)
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()


class _NullTrace:
    """The trace of a request that is not traced: every method does nothing."""

    __slots__ = ()

    def keyed(self, alias: str) -> None:
        return None

    def step(self, name: str) -> contextlib.AbstractContextManager[None]:
        return _NO_STEP

    def routed(self, route: Route) -> None:
        return None

    def looked_up(self, lookup: Lookup, first: Deployment) -> None:
        return None

    def completions(self, call: Call[Completion], progress: Progress, model: str) -> Call[Completion]:
        return call

    def stream_openings(self, call: Call[T], progress: Progress, model: str) -> Call[T]:
        return call

    def stream_attempt(self) -> Attempt:
        return NULL_ATTEMPT

    def failed(self, exc: APIError) -> None:
        return None

    def end(self, config_version: str) -> None:
        return None


class _NullAttempt:
    __slots__ = ()

    def chunk(self, data: bytes) -> None:
        return None

    def stream_ended(self, usage: Usage, error: APIError | None, estimated: bool) -> None:
        return None


_NO_STEP = contextlib.nullcontext()
NULL_TRACE: Trace = _NullTrace()
NULL_ATTEMPT: Attempt = _NullAttempt()
