"""Tracing's configuration and its edges, on the probe service (tests/probe_service.py) behind the
real server factory: spans with an in-memory exporter in this process, and real exports to an OTLP
receiver (tests/otlp_receiver.py) from service processes configured by OTEL_* variables. The whole
suite's trace is tests/test_observability.py's."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from geoloc.common.channels import create_channel
from geoloc.common.tracing import TracingSettingsError, exporter_named, use_tracer_provider
from geoloc.tritonserver.launcher import TritonLaunch, traces_url_from, triton_command
from geoloc.v1 import gallery_pb2_grpc
from tests.otlp_receiver import OtlpReceiver
from tests.probe_service import ProbeGallery
from tests.test_server_runtime import ROOT, probe_process_env, search, serving, start_probe_process

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("environ", "exporter"),
    [
        ({}, "none"),
        ({"OTEL_TRACES_EXPORTER": "none"}, "none"),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "OTLP", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, "none"),
    ],
)
def test_tracing_is_off_unless_an_exporter_is_named(environ, exporter) -> None:
    assert exporter_named(environ) == exporter


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER='zipkin'"),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, "set one exporter"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, "OTLP/gRPC only"),
    ],
)
def test_what_this_build_cannot_export_is_refused_by_name(environ, named) -> None:
    with pytest.raises(TracingSettingsError, match=named):
        exporter_named(environ)


def test_a_service_with_an_unknown_exporter_stops_before_serving_with_exit_2() -> None:
    env = {**probe_process_env(port=0, metrics_port="none"), "OTEL_TRACES_EXPORTER": "jaeger"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.probe_service"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "OTEL_TRACES_EXPORTER='jaeger'" in done.stderr


def test_triton_traces_only_when_tracing_is_on_and_given_a_url() -> None:
    url = "http://collector:4318/v1/traces"
    assert traces_url_from({"GEOLOC_TRITON_OTLP_TRACES_URL": url}) is None
    assert traces_url_from({"OTEL_TRACES_EXPORTER": "otlp"}) is None
    assert traces_url_from({"OTEL_TRACES_EXPORTER": "otlp", "GEOLOC_TRITON_OTLP_TRACES_URL": url}) == url
    plain = triton_command(TritonLaunch(), ROOT)
    traced = triton_command(TritonLaunch(traces_url=url), ROOT)
    assert not any(flag.startswith("--trace-config") for flag in plain)
    assert set(traced) - set(plain) == {
        "--trace-config=mode=opentelemetry",
        "--trace-config=rate=0",
        "--trace-config=count=-1",
        "--trace-config=level=TIMESTAMPS",
        f"--trace-config=opentelemetry,url={url}",
        "--trace-config=opentelemetry,resource=service.name=triton",
    }


@pytest.fixture()
def spans():
    """This process traced into memory while the test runs; servers and channels made meanwhile trace."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_tracer_provider(provider)
    yield exporter
    use_tracer_provider(None)
    provider.shutdown()


@pytest.mark.integration
def test_a_call_passed_on_is_one_trace_and_only_the_servers_faults_are_its_errors(spans) -> None:
    async def scenario():
        async with serving() as (downstream, _):
            forwarder = ProbeGallery(forward_to=f"127.0.0.1:{downstream.port}")
            async with serving(forwarder) as (front, _):
                # A channel of geoloc's own, so that the test's call is a traced client too.
                async with create_channel(f"127.0.0.1:{front.port}") as channel:
                    stub = gallery_pb2_grpc.GalleryServiceStub(channel)
                    await stub.Search(search(3), metadata=(("x-request-id", "traced-1"),), timeout=5)
                    codes = []
                    for k in (0, 13):  # INVALID_ARGUMENT: the caller's fault; INTERNAL: the server's
                        with pytest.raises(grpc.aio.AioRpcError) as refused:
                            await stub.Search(search(k), timeout=5)
                        codes.append(refused.value.code())
        return codes

    codes = asyncio.run(scenario())
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL]
    finished = spans.get_finished_spans()
    search_spans = [s for s in finished if s.name == "geoloc.v1.GalleryService/Search"]
    # The good call: test client -> forwarder server -> forwarder's client -> downstream server.
    traced = [s for s in search_spans if s.context.trace_id == search_spans[0].context.trace_id]
    kinds = [s.kind for s in sorted(traced, key=lambda s: s.start_time)]
    assert kinds == [SpanKind.CLIENT, SpanKind.SERVER, SpanKind.CLIENT, SpanKind.SERVER]
    ordered = sorted(traced, key=lambda s: s.start_time)
    for parent, child in zip(ordered, ordered[1:], strict=False):
        assert child.parent.span_id == parent.context.span_id
    assert [s.attributes["geoloc.request_id"] for s in ordered if s.kind == SpanKind.SERVER] == ["traced-1"] * 2
    # The refused calls: the server span of INVALID_ARGUMENT is no error, INTERNAL's is; on the
    # client side both are.
    refused = [s for s in search_spans if s not in traced]
    by_code = {(s.kind, s.attributes["rpc.grpc.status_code"]): s.status.status_code for s in refused}
    assert by_code[SpanKind.SERVER, grpc.StatusCode.INVALID_ARGUMENT.value[0]] == StatusCode.UNSET
    assert by_code[SpanKind.SERVER, grpc.StatusCode.INTERNAL.value[0]] == StatusCode.ERROR
    assert by_code[SpanKind.CLIENT, grpc.StatusCode.INVALID_ARGUMENT.value[0]] == StatusCode.ERROR


@pytest.mark.integration
@pytest.mark.parametrize("tracing", ["off", "on"])
def test_a_service_process_exports_its_spans_only_when_tracing_is_on(tracing) -> None:
    """The same process, the same call from a traced caller (its traceparent sent): with tracing
    off nothing reaches the receiver and the log lines carry no trace ids; on, the span continues
    the caller's trace."""
    with OtlpReceiver() as receiver:
        environment = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        if tracing == "on":
            environment["OTEL_TRACES_EXPORTER"] = "otlp"
        process, port, events = start_probe_process(environment)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = gallery_pb2_grpc.GalleryServiceStub(channel)
                metadata = (("traceparent", TRACEPARENT), ("x-request-id", "from-a-traced-caller"))
                grpc.channel_ready_future(channel).result(timeout=10)
                stub.Search(search(2), metadata=metadata, timeout=10)
            if tracing == "on":
                (span,) = receiver.wait_for(lambda spans: len(spans) >= 1, timeout_s=10)
                assert (span.trace_id, span.parent_span_id) == (TRACEPARENT[3:35], TRACEPARENT[36:52])
                assert span.service == "geoloc-probe"
            else:
                time.sleep(1.0)  # twenty times the export delay that tracing would have
                assert receiver.spans() == []
        finally:
            process.terminate()
            process.wait(30)
        (access,) = [e for e in events if e.get("event") == "rpc" and e.get("request_id") == "from-a-traced-caller"]
        assert ("trace_id" in access) == (tracing == "on"), json.dumps(access)
