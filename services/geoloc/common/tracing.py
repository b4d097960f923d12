"""Distributed tracing with OpenTelemetry: one trace per request, across every service and Triton.

Off by default. A service process traces when the standard OTEL_* variables say so:

    OTEL_TRACES_EXPORTER=otlp                       # or console (JSON spans on stderr); none: off
    OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317   # OTLP over gRPC, the only protocol here
    OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1   # optional
    OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*, OTEL_EXPORTER_OTLP_* (TLS, headers)

Spans are exported in batches by a background thread, never on the request path. With tracing
off nothing is built: the server and channels get no tracing interceptor, `step` hands back a
shared no-op context, and nothing is sent anywhere.

W3C trace context (`traceparent`, `tracestate`) travels in gRPC metadata: the server interceptor
continues the caller's trace, the client interceptor and `triton_headers` pass the current span
on, so one Locate is one trace from the orchestrator through the embedding service (and Triton,
which continues it in its own OpenTelemetry mode) to every expert. Health checks are not traced:
the kubelet's probes would outnumber the calls.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from collections.abc import Mapping

import grpc
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

REQUEST_ID_ATTRIBUTE = "geoloc.request_id"
UNTRACED_SERVICES = frozenset({"grpc.health.v1.Health"})
EXPORTERS = ("otlp", "console", "none")
# The codes that are the server's fault (OpenTelemetry's gRPC conventions): the others are answers.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_W3C = TraceContextTextMapPropagator()
_OFF = contextlib.nullcontext()
_tracer: trace.Tracer | None = None


class TracingSettingsError(ValueError):
    """An OTEL_* variable asks for something this build cannot do; the message names it."""


def exporter_named(environ: Mapping[str, str]) -> str:
    """The span exporter the environment asks for: "otlp", "console" or "none" (tracing off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return "none"
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "none").split(",") if n.strip()]
    for name in names:
        if name not in EXPORTERS:
            raise TracingSettingsError(f"OTEL_TRACES_EXPORTER={name!r}: this build exports with one of {EXPORTERS}")
    if len(set(names) - {"none"}) > 1:
        raise TracingSettingsError(f"OTEL_TRACES_EXPORTER names {names}: set one exporter")
    chosen = [n for n in names if n != "none"]
    if chosen == ["otlp"]:
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        if protocol not in (None, "", "grpc"):
            raise TracingSettingsError(
                f"OTLP protocol {protocol!r}: this build sends spans over OTLP/gRPC only; set "
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc and point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's gRPC port"
            )
    return chosen[0] if chosen else "none"


def tracing_on(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment turns tracing on (an invalid setting raises TracingSettingsError)."""
    return exporter_named(environ) != "none"


def start_tracing(service_name: str, environ: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """Starts this process's tracing as the environment says; returns the provider to shut down
    (which flushes the spans not yet sent) when the process ends, or None when tracing is off.

    `service_name` is the resource's service.name unless OTEL_SERVICE_NAME sets one."""
    exporter = exporter_named(environ)
    if exporter == "none":
        return None
    name = environ.get("OTEL_SERVICE_NAME") or service_name
    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES; the sampler comes from OTEL_TRACES_SAMPLER.
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(_exporter(exporter)))
    trace.set_tracer_provider(provider)
    use_tracer_provider(provider)
    return provider


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter(out=sys.stderr)
    # Imported here: the exporter loads grpc's OTLP stubs, which a process that never traces does not need.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, TLS, headers, timeout and compression from OTEL_EXPORTER_OTLP_*


def use_tracer_provider(provider: trace.TracerProvider | None) -> None:
    """Traces this process's calls with `provider` from now on (None: stops tracing). For
    `start_tracing` and in-process tests; servers and channels made before keep what they had."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("geoloc")


def step(name: str, **attributes):
    """A span for one step of a call (`with step("gallery.search", k=k):`), child of the current
    span; a shared no-op context when tracing is off."""
    if _tracer is None:
        return _OFF
    return _tracer.start_as_current_span(name, attributes=attributes)


def annotate(**attributes) -> None:
    """Adds attributes to the current span (when tracing is on)."""
    if _tracer is not None:
        trace.get_current_span().set_attributes(attributes)


def triton_inference(model: str, batch_size: int):
    """A CLIENT span for one inference call to Triton, whose own spans continue it when the call
    sends `triton_headers()`; a shared no-op context when tracing is off."""
    if _tracer is None:
        return _OFF
    attributes = {
        "rpc.system": "grpc",
        "rpc.service": "inference.GRPCInferenceService",
        "rpc.method": "ModelInfer",
        "triton.model": model,
        "triton.batch_size": batch_size,
    }
    return _tracer.start_as_current_span("triton ModelInfer", kind=SpanKind.CLIENT, attributes=attributes)


def record_request_id(request_id: str) -> None:
    """Puts the call's request id on the current span, so that an id from a log line or an
    answer finds its trace."""
    if _tracer is not None:
        trace.get_current_span().set_attribute(REQUEST_ID_ATTRIBUTE, request_id)


def triton_headers() -> dict[str, str] | None:
    """The W3C trace context of the current span as request headers for tritonclient, when the
    span is sampled; else None. Triton traces every request that carries a context (and, started
    with `--trace-config rate=0`, only those), so an unsampled call sends none."""
    if _tracer is None or not trace.get_current_span().get_span_context().trace_flags.sampled:
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


def add_trace_ids(_logger, _method, event_dict: dict) -> dict:
    """structlog processor: the current span's trace_id and span_id on every log line of a traced call."""
    if _tracer is not None:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event_dict["trace_id"] = format(context.trace_id, "032x")
            event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The tracing interceptor for a server when tracing is on; none when it is off."""
    return [] if _tracer is None else [ServerTracingInterceptor(_tracer)]


def client_interceptors() -> list[grpc.aio.UnaryUnaryClientInterceptor]:
    """The tracing interceptor for a channel when tracing is on; none when it is off."""
    return [] if _tracer is None else [ClientTracingInterceptor(_tracer)]


def _rpc_attributes(full_method: str) -> dict[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def _end_status(span: trace.Span, code: grpc.StatusCode, server: bool) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    failed = code in _SERVER_ERRORS if server else code != grpc.StatusCode.OK
    if failed:
        span.set_status(Status(StatusCode.ERROR, code.name))


class ServerTracingInterceptor(grpc.aio.ServerInterceptor):
    """A SERVER span per unary call, continuing the caller's trace from its metadata.

    It runs outside geoloc's runtime interceptor, so that the access-log line and every log
    line of the call are written inside the span and carry its ids."""

    def __init__(self, tracer: trace.Tracer):
        self._tracer = tracer
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        # Decided once per method (an untraced one keeps its own handler), as the runtime
        # interceptor builds its wrappers.
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            traced = _rpc_attributes(method)["rpc.service"] not in UNTRACED_SERVICES
            wrapped = self._wrapped[method] = self._wrap(method, handler) if traced else handler
        return wrapped

    def _wrap(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        inner, name, attributes = handler.unary_unary, full_method.lstrip("/"), _rpc_attributes(full_method)

        async def behavior(request, context: grpc.aio.ServicerContext):
            carrier = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
            with self._tracer.start_as_current_span(
                name,
                context=_W3C.extract(carrier),
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                code = grpc.StatusCode.OK
                try:
                    result = inner(request, context)
                    if inspect.isawaitable(result):
                        result = await result
                    code = context.code() or grpc.StatusCode.OK
                    return result
                except BaseException:
                    code = context.code() or grpc.StatusCode.CANCELLED
                    raise
                finally:
                    _end_status(span, code, server=True)

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class ClientTracingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """A CLIENT span per outgoing unary call, its context sent on in the call's metadata."""

    def __init__(self, tracer: trace.Tracer):
        self._tracer = tracer

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        method = client_call_details.method
        method = method.decode() if isinstance(method, bytes) else method
        with self._tracer.start_as_current_span(
            method.lstrip("/"),
            kind=SpanKind.CLIENT,
            attributes=_rpc_attributes(method),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            carrier: dict[str, str] = {}
            _W3C.inject(carrier)
            metadata = [*(client_call_details.metadata or ()), *carrier.items()]
            call = await continuation(client_call_details._replace(metadata=grpc.aio.Metadata(*metadata)), request)
            # Waited for here so that the span ends with the call; the caller's own await gets the
            # same response or error.
            try:
                await call
            except grpc.aio.AioRpcError as error:
                _end_status(span, error.code(), server=False)
            except BaseException:
                _end_status(span, grpc.StatusCode.CANCELLED, server=False)
                raise
            else:
                _end_status(span, grpc.StatusCode.OK, server=False)
            return call
