"""A real OTLP/HTTP trace receiver for tests and benchmarks: decodes the exported protobuf and
keeps every span as a plain dict. Answers 200 (or, with `refuse`, 503, as a sick collector).

    python -m tests.helpers.otlp_receiver --port 4318      # on its own; GET /count says how many spans came
"""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class OTLPReceiver:
    def __init__(self, port: int = 0, defer: bool = False) -> None:
        """`defer`: keep the bodies and decode them when the spans are asked for (a benchmark's
        receiver, so that decoding does not compete with the load during the measurement)."""
        self.spans: list[dict[str, Any]] = []
        self.defer = defer
        self._pending: list[bytes] = []
        self.requests = 0
        self.refuse = False
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.requests += 1
                if receiver.refuse:
                    self.send_response(503)
                    self.end_headers()
                    return
                if receiver.defer:
                    with receiver._lock:
                        receiver._pending.append(body)
                else:
                    receiver._add(body)
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_GET(self) -> None:
                out = str(len(receiver.snapshot())).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def start(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        with self._lock:
            for resource in request.resource_spans:
                service = {a.key: _value(a.value) for a in resource.resource.attributes}.get("service.name")
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        self.spans.append({
                            "name": span.name,
                            "kind": KINDS.get(span.kind, str(span.kind)),
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "attributes": {a.key: _value(a.value) for a in span.attributes},
                            "status": span.status.code,
                            "service": service,
                        })  # fmt: skip

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            pending, self._pending = self._pending, []
        for body in pending:
            self._add(body)
        with self._lock:
            return list(self.spans)


class OTLPGrpcReceiver(OTLPReceiver):
    """The same, over OTLP/gRPC (`endpoint` is then `http://127.0.0.1:PORT`)."""

    def __init__(self) -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        super().__init__()
        receiver = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:
                receiver.requests += 1
                receiver._add(request.SerializeToString())
                return ExportTraceServiceResponse()

        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self._grpc)
        self.port = self._grpc.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OTLPGrpcReceiver:
        self._grpc.start()
        return self

    def stop(self) -> None:
        self._grpc.stop(0)
        self._server.server_close()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="an OTLP/HTTP trace receiver on loopback")
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument("--defer", action="store_true", help="decode the spans only when GET /count asks")
    args = parser.parse_args()
    receiver = OTLPReceiver(args.port, defer=args.defer)
    receiver._server.serve_forever()
