"""A span kept as plain data until it ends, then handed on as one OpenTelemetry `ReadableSpan`.

The SDK's own spans run a sampler, span metrics and an attribute check under a lock for every span
and every attribute: on the request path that was most of what a recorded request cost. The
gateway needs none of it: it samples before building anything (`Tracing.request`) and sets only
strings, numbers, booleans and lists of strings (None is skipped).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)


class Recorder(Protocol):
    """Where spans come from and go: ids, the resource and scope they carry, and what takes them when they end."""

    resource: Resource
    scope: InstrumentationScope

    def new_id(self, bits: int) -> int: ...

    def finish(self, span: ReadableSpan) -> None: ...


class Span:
    """One span as plain data; `end` hands it to its recorder (once)."""

    __slots__ = ("_ended", "_tracing", "attributes", "context", "kind", "name", "parent", "start", "status")

    def __init__(
        self, tracing: Recorder, name: str, kind: SpanKind, parent: SpanContext | None, attributes: dict[str, Any]
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
            self.attributes[key] = attribute(value)

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


def attribute(value: Any) -> Any:
    """A value OTLP can carry: a scalar, or a tuple of them. Anything else (a numpy number, an
    enum, an integer past int64, such as a client's `seed` of 10**23) becomes its string, rather
    than failing the encoding of a whole batch later."""
    if isinstance(value, _SCALARS) and (type(value) is not int or _INT64_MIN <= value <= _INT64_MAX):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(attribute(v) if isinstance(v, _SCALARS) else str(v) for v in value)
    return str(value)


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

