"""What one recorded request costs the serving process, measured in-process on one core.

Two figures, for the spans `bench_gateway`'s traced variant makes (a SERVER span and one CLIENT
span, the attributes of a non-streamed chat completion with usage and cost):
  - building: the pipeline's tracing calls for one request (start, route, attempt, the upstream
    context, answer, end), spans handed to a queue that only keeps them;
  - encoding: OTLP protobuf bytes per span, `gateway.otlp.encode` against the SDK's encoder on
    the same spans (batches of 512, as the exporter sends them).

    python -m loadtest.bench_tracing

The garbage collector is frozen after warm-up, as the gateway's lifespan does. Medians of rounds.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from types import SimpleNamespace
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from backends.propagation import UPSTREAM_TRACE
from backends.types import Usage
from gateway.settings import TelemetrySettings
from gateway.telemetry import otlp
from gateway.telemetry.tracing import Tracing
from loadtest.report import footer

BODY = (
    b'{"id":"chatcmpl-0123456789","object":"chat.completion","created":1,"model":"fake-model","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}'
)


class _Nowhere(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _tracing() -> tuple[Tracing, list[ReadableSpan]]:
    settings = TelemetrySettings(enabled=True, service_name="bench", max_traces_per_s=0)
    tracing = Tracing(settings, env={}, exporter=_Nowhere())
    kept: list[ReadableSpan] = []
    tracing.finish = kept.append  # type: ignore[method-assign]
    return tracing, kept


# What one request's tracing calls are given, made once: the measurement is the calls alone.
DEPLOYMENT: Any = SimpleNamespace(
    id="bench-dep",
    settings=SimpleNamespace(base_url="http://127.0.0.1:9301/v1", backend="openai"),
    breaker=SimpleNamespace(state="closed"),
    cost=lambda usage: 1.23e-4,
)
ROUTE: Any = SimpleNamespace(tier=None, why="static", decision=None)
PROGRESS: Any = SimpleNamespace(attempts=1, fallbacks=0)
PAYLOAD = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
USAGE = Usage(prompt_tokens=12, completion_tokens=5, total_tokens=17)
HEADERS = [(b"content-type", b"application/json")]


def _request(tracing: Tracing) -> None:
    request = tracing.request("chat/completions", "fake", PAYLOAD, HEADERS)
    request.routed(ROUTE)
    with request.attempt(DEPLOYMENT, PROGRESS, "fake") as attempt:
        sent = {"content-type": "application/json", **(UPSTREAM_TRACE.get() or {})}
        assert "traceparent" in sent
    attempt.succeeded(BODY, USAGE)
    request.end("config-v1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=2000, help="requests built per round")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})

    tracing, kept = _tracing()
    for _ in range(args.requests):
        _request(tracing)
    gc.collect()
    gc.freeze()
    build = []
    for _ in range(args.rounds):
        kept.clear()
        started = time.process_time()
        for _ in range(args.requests):
            _request(tracing)
        build.append((time.process_time() - started) / args.requests * 1e6)

    batch = kept[:512]
    ours, sdk = [], []
    for _ in range(args.rounds):
        started = time.process_time()
        data = otlp.encode(batch)
        ours.append((time.process_time() - started) / len(batch) * 1e6)
        started = time.process_time()
        reference = encode_spans(batch).SerializePartialToString()
        sdk.append((time.process_time() - started) / len(batch) * 1e6)
    assert len(data) == len(reference)

    spans = len(kept) // args.requests
    print("| what | µs (median of rounds) | rounds |")
    print("|---|---|---|")
    for what, values in ((f"build a recorded request's {spans} spans", build), ("encode a span, gateway.telemetry.otlp", ours),
                         ("encode a span, the SDK's encoder", sdk)):  # fmt: skip
        print(f"| {what} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    print(f"\n{len(data) / len(batch):.0f} bytes a span; {len(kept[0].attributes)} and {len(kept[1].attributes)} attributes")
    print("\n".join(footer("loadtest.bench_tracing")))


if __name__ == "__main__":
    main()
