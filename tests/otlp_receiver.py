"""A real OTLP trace receiver on loopback: the collector's own two endpoints, OTLP/gRPC (the
TraceService of opentelemetry-proto, which the geoloc services export to) and OTLP/HTTP with a
protobuf or JSON body (`POST /v1/traces`; Triton exports OTLP/JSON), keeping every span it is sent.

    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint, ...}
        ...
        spans = receiver.wait_for(lambda spans: ..., timeout_s=30)
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the resource's service.name
    name: str
    trace_id: str  # hex, as the W3C traceparent and geoloc's log lines write it
    span_id: str
    parent_span_id: str  # "" for a root span
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind
    attributes: dict
    protocol: str  # "grpc" or "http": how it reached the receiver


def _value(any_value: common_pb2.AnyValue):
    which = any_value.WhichOneof("value")
    return None if which is None else getattr(any_value, which)


def request_from_json(body: bytes) -> trace_service_pb2.ExportTraceServiceRequest:
    """An OTLP/JSON export, which differs from protobuf's own JSON mapping in writing ids in hex
    (Triton's exporter sends this encoding)."""
    document = json.loads(body)
    for resource_spans in document.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    return json_format.ParseDict(document, trace_service_pb2.ExportTraceServiceRequest(), ignore_unknown_fields=True)


def spans_in(request: trace_service_pb2.ExportTraceServiceRequest, protocol: str) -> list[ReceivedSpan]:
    found = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(
                    ReceivedSpan(
                        service=str(resource.get("service.name", "")),
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        protocol=protocol,
                    )
                )
    return found


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, host: str = "127.0.0.1"):
        self._host = host
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._grpc)
        self.grpc_port = self._grpc.add_insecure_port(f"{host}:0")
        self._http = ThreadingHTTPServer((host, 0), self._http_handler())
        self.http_port = self._http.server_port
        self._http_thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def grpc_endpoint(self) -> str:
        """For OTEL_EXPORTER_OTLP_ENDPOINT (the http scheme makes the exporter send plaintext)."""
        return f"http://{self._host}:{self.grpc_port}"

    @property
    def http_traces_url(self) -> str:
        return f"http://{self._host}:{self.http_port}/v1/traces"

    def Export(self, request, context):
        self._keep(spans_in(request, "grpc"))
        return trace_service_pb2.ExportTraceServiceResponse()

    def _keep(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self._spans.extend(spans)

    def _http_handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                kind = self.headers.get("Content-Type", "")
                if self.path != "/v1/traces" or kind not in ("application/x-protobuf", "application/json"):
                    self.send_error(404 if self.path != "/v1/traces" else 415)
                    return
                answer = trace_service_pb2.ExportTraceServiceResponse()
                if kind == "application/json":
                    receiver._keep(spans_in(request_from_json(body), "http"))
                    answer = json_format.MessageToJson(answer).encode()
                else:
                    receiver._keep(spans_in(trace_service_pb2.ExportTraceServiceRequest.FromString(body), "http"))
                    answer = answer.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        return Handler

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for(self, enough: Callable[[list[ReceivedSpan]], bool], timeout_s: float = 30.0) -> list[ReceivedSpan]:
        """The spans received once `enough(spans)` holds; raises TimeoutError with what came if it never does."""
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.spans()
            if enough(spans):
                return spans
            if time.monotonic() > deadline:
                raise TimeoutError(f"after {timeout_s} s the receiver holds {[(s.service, s.name) for s in spans]}")
            time.sleep(0.1)

    def __enter__(self) -> OtlpReceiver:
        self._grpc.start()
        self._http_thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._grpc.stop(0)
