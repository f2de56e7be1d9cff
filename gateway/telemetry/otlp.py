"""OTLP/HTTP span export with an encoder that writes protobuf bytes directly.

The SDK's encoder builds a protobuf message object for every span, attribute and value, then
serialises the tree: 42-88 µs per span of the gateway's on the two-core VMs measured, most of
what recording every request cost; `encode` takes about 8-13, mostly by reusing the bytes of
attributes it has encoded before (`python -m loadtest.bench_tracing`, loadtest/RESULTS.md). It writes the
same `ExportTraceServiceRequest` bytes straight from the `ReadableSpan`s (the test parses both and
compares), for what the gateway's spans hold: attributes of scalars and sequences of scalars, a
status, no events or links (a span that has them goes through the SDK's encoder, as does the
whole batch).

Field numbers are those of opentelemetry-proto's `trace/v1/trace.proto`, `common/v1/common.proto`
and `resource/v1/resource.proto`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind

_FIXED64 = struct.Struct("<Q").pack
_DOUBLE = struct.Struct("<d").pack
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags


_SMALL = [bytes((i,)) for i in range(128)]


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    if value < 0:
        value += 1 << 64  # int64 as two's complement, ten bytes
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, message)."""
    n = len(payload)
    return _SMALL[number << 3 | 2] + (_SMALL[n] if n < 0x80 else _varint(n)) + payload


def _string(number: int, text: str | None) -> bytes:
    return _field(number, text.encode()) if text else b""  # proto3 leaves an empty string out


def _value(value: Any) -> bytes:
    """An `AnyValue`: a oneof, so present even when it holds a default (False, 0, "")."""
    if isinstance(value, str):
        return _field(1, value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(6, b"".join(_field(1, _key_value(str(k), v)) for k, v in value.items()))
    return b""  # None: an empty AnyValue


def _key_value(key: str, value: Any) -> bytes:
    return _field(1, key.encode()) + _field(2, _value(value))


_PAIRS: dict[tuple[int, str, str], bytes] = {}
_PREFIXES: dict[tuple[int, str, int], bytes] = {}
_LISTS: dict[tuple[Any, ...], bytes] = {}
_CACHED = 4096
"""Whole attributes with a string value (an operation, a model, a tier: the same few pairs on every
span) or a short list of strings, under the field that holds them (a span's 9, a resource's 1),
and for numbers everything before the value's own bytes, up to this many of each; past it they
are encoded every time."""


def _attributes(number: int, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    out = []
    for key, value in attributes.items():
        kind = type(value)
        if kind is str:
            pair = _PAIRS.get((number, key, value))
            if pair is None:
                pair = _field(number, _key_value(key, value))
                if len(_PAIRS) < _CACHED:
                    _PAIRS[number, key, value] = pair
            out.append(pair)
        elif kind is int or kind is float:  # not bool: its own type
            # the bytes before the value's own depend only on the key and the value's length
            if kind is int:
                tail = _varint(value)
                size = len(tail)
            else:
                tail, size = _DOUBLE(value), 0  # 0: no varint is that long
            prefix = _PREFIXES.get((number, key, size))
            if prefix is None:
                whole = _field(number, _key_value(key, value))
                prefix = whole[: len(whole) - len(tail)]
                if len(_PREFIXES) < _CACHED:
                    _PREFIXES[number, key, size] = prefix
            out.append(prefix + tail)
        elif (kind is list or kind is tuple) and len(value) <= 4 and all(type(v) is str for v in value):
            # finish reasons, route reasons: a few strings, the same few lists over and over
            names = (number, key, *value)
            pair = _LISTS.get(names)
            if pair is None:
                pair = _field(number, _key_value(key, value))
                if len(_LISTS) < _CACHED:
                    _LISTS[names] = pair
            out.append(pair)
        else:
            out.append(_field(number, _key_value(key, value)))
    return b"".join(out)


# The SDK's SpanKind starts at INTERNAL = 0, the proto's at UNSPECIFIED.
_KINDS = {kind: b"\x30" + _varint(kind.value + 1) for kind in SpanKind}
_FLAGS = {remote: b"\x85\x01" + struct.pack("<I", _HAS_IS_REMOTE | (_IS_REMOTE if remote else 0)) for remote in (False, True)}
_NO_STATUS = _field(15, b"")


def _span(span: ReadableSpan) -> bytes:
    context, parent = span.context, span.parent
    assert context is not None
    status = span.status
    code = status.status_code.value
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big") + b"\x12\x08" + context.span_id.to_bytes(8, "big"),
        _string(3, context.trace_state.to_header()) if context.trace_state else b"",
        b"\x22\x08" + parent.span_id.to_bytes(8, "big") if parent is not None else b"",
        _string(5, span.name),
        _KINDS[span.kind],
        b"\x39" + _FIXED64(span.start_time or 0) + b"\x41" + _FIXED64(span.end_time or 0),
        _attributes(9, span.attributes),
        b"\x50" + _varint(span.dropped_attributes) if span.dropped_attributes else b"",
        _field(15, _string(2, status.description) + (b"\x18" + _varint(code) if code else b""))
        if code or status.description
        else _NO_STATUS,
        _FLAGS[parent is not None and parent.is_remote],
    ]
    return b"".join(parts)


def encode(spans: Sequence[ReadableSpan]) -> bytes:
    """`ExportTraceServiceRequest` bytes for `spans`, grouped by resource and then by scope in
    first-seen order, as the SDK's encoder groups them."""
    if any(s.events or s.links for s in spans):
        data: bytes = encode_spans(spans).SerializePartialToString()
        return data
    groups: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
    for span in spans:
        by_scope = groups.setdefault(id(span.resource), (span.resource, {}))[1]
        by_scope.setdefault(id(span.instrumentation_scope), (span.instrumentation_scope, []))[1].append(_span(span))
    out = []
    for resource, scopes in groups.values():
        body = [_field(1, _attributes(1, resource.attributes))]
        for scope, encoded in scopes.values():
            about = schema = b""
            if scope is not None:
                about = _string(1, scope.name) + _string(2, scope.version) + _attributes(3, scope.attributes)
                schema = _string(3, scope.schema_url)
            body.append(_field(2, _field(1, about) + b"".join(_field(2, s) for s in encoded) + schema))
        body.append(_string(3, resource.schema_url))
        out.append(_field(1, b"".join(body)))
    return b"".join(out)


class HttpExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter (endpoint, headers, compression, retries, the `OTEL_*`
    variables) with `encode` in place of its encoder. An SDK without the internal client this uses
    keeps its own export."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = getattr(self, "_client", None)
        if client is None or self._shutdown:
            return super().export(spans)
        try:
            data = encode(spans)
        except Exception:  # a value no rule covers: the SDK's encoder says what it makes of it
            return super().export(spans)
        return SpanExportResult.SUCCESS if client.export(data).success else SpanExportResult.FAILURE
