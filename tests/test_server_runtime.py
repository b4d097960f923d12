"""The server factory, tested on real gRPC servers on loopback port 0.

The served domain is a probe (tests/probe_service.py); everything the factory adds is real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from geoloc.common.channels import create_channel
from geoloc.common.errors import GENERIC_INTERNAL_MESSAGE
from geoloc.common.paths import CHECKOUT
from geoloc.common.server import create_server
from geoloc.common.server import serving as runtime_serving
from geoloc.common.settings import ServerSettings
from geoloc.v1 import common_pb2, gallery_pb2, gallery_pb2_grpc
from tests.probe_service import GALLERY_SERVICE, SECRET, ProbeGallery, probe_spec

pytestmark = pytest.mark.integration  # every test serves the probe service, in-process or as its own process

ROOT = CHECKOUT
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def settings(**overrides) -> ServerSettings:
    return ServerSettings(port=0, metrics_port=0, **overrides)


def search(k: int = 3) -> gallery_pb2.SearchRequest:
    return gallery_pb2.SearchRequest(embedding=common_pb2.Embedding(values=[0.1, 0.2]), k=k)


@contextlib.asynccontextmanager
async def serving(servicer: ProbeGallery | None = None, **overrides):
    """A factory-built server with the probe, warm, and a channel to it; shut down on exit."""
    async with runtime_serving(settings(**overrides), [probe_spec(servicer or ProbeGallery())], 5, grace_s=0) as (
        server,
        port,
    ):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield server, channel


async def health_of(channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)).status


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def metric_value(text: str, name: str, **labels) -> float:
    """The value of one sample of the Prometheus text format, matched on the labels given."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(match.group(2))
    raise AssertionError(f"no sample {name} {labels}")


def test_health_reports_not_serving_until_warm_then_serving_then_not_serving_on_shutdown():
    async def scenario():
        gate = asyncio.Event()
        server, port = create_server(settings(drain_s=0.5), [probe_spec(ProbeGallery(warm_up_gate=gate))])
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await health_of(channel) == NOT_SERVING
            assert await health_of(channel, GALLERY_SERVICE) == NOT_SERVING
            stub = gallery_pb2_grpc.GalleryServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as not_ready:
                await stub.Search(search(), timeout=2)
            assert not_ready.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "not ready" in not_ready.value.details()

            gate.set()
            await server.wait_until_ready(timeout_s=5)
            assert await health_of(channel) == SERVING
            assert await health_of(channel, GALLERY_SERVICE) == SERVING
            assert len((await stub.Search(search(k=3), timeout=2)).points) == 3

            shutdown = server.shutdown(grace_s=1)
            await asyncio.sleep(0.1)  # inside the drain: still answering, but NOT_SERVING
            assert await health_of(channel) == NOT_SERVING
            assert await health_of(channel, GALLERY_SERVICE) == NOT_SERVING
            await shutdown
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Search(search(), timeout=2)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    asyncio.run(scenario())


def test_reflection_lists_the_services_and_resolves_their_descriptors():
    async def scenario():
        async with serving() as (_, channel):
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            requests = [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=GALLERY_SERVICE),
            ]
            return [r async for r in stub.ServerReflectionInfo(iter(requests), timeout=5)]

    responses = asyncio.run(scenario())
    listed = {s.name for s in responses[0].list_services_response.service}
    assert listed == {GALLERY_SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
    files = responses[1].file_descriptor_response.file_descriptor_proto
    assert files, "reflection could not resolve the gallery service's descriptor"


def test_metrics_count_calls_by_code_and_track_calls_in_flight():
    async def scenario():
        async with serving() as (server, channel):
            stub = gallery_pb2_grpc.GalleryServiceStub(channel)
            await stub.Search(search(k=2), timeout=2)
            await stub.Search(search(k=2), timeout=2)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Search(search(k=0), timeout=2)
            slow = asyncio.ensure_future(stub.Search(search(), metadata=(("x-probe-delay-s", "0.8"),), timeout=5))
            await asyncio.sleep(0.3)
            during = await asyncio.to_thread(scrape, server.metrics_port)
            await slow
            after = await asyncio.to_thread(scrape, server.metrics_port)
        return during, after

    during, after = asyncio.run(scenario())
    rpc = {"grpc_service": GALLERY_SERVICE, "grpc_method": "Search"}
    assert metric_value(during, "grpc_server_in_flight", **rpc) == 1
    assert metric_value(after, "grpc_server_in_flight", **rpc) == 0
    assert metric_value(after, "grpc_server_handled_total", grpc_code="OK", **rpc) == 3
    assert metric_value(after, "grpc_server_handled_total", grpc_code="INVALID_ARGUMENT", **rpc) == 1
    assert metric_value(after, "grpc_server_started_total", **rpc) == 4
    assert metric_value(after, "grpc_server_handling_seconds_count", **rpc) == 4
    # The slow call landed above the 0.5 s bucket boundary, the others below it.
    assert metric_value(after, "grpc_server_handling_seconds_bucket", le="0.5", **rpc) == 3
    assert metric_value(after, "geoloc_service_ready", service=GALLERY_SERVICE) == 1
    assert metric_value(after, "process_resident_memory_bytes") > 0


def test_bad_input_is_invalid_argument_naming_the_field_and_the_server_keeps_serving():
    async def scenario():
        async with serving() as (_, channel):
            stub = gallery_pb2_grpc.GalleryServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub.Search(search(k=5000), timeout=2)
            good = await stub.Search(search(k=1), timeout=2)
        return bad.value, good

    error, good = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "k: must be in [1, 1000], got 5000"
    # The rich status names the field for clients that read google.rpc details.
    status = rpc_status.from_call(error)
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [("k", "must be in [1, 1000], got 5000")]
    assert len(good.points) == 1


def test_unexpected_errors_become_internal_without_leaking_details(capsys):
    from geoloc.common.logs import configure_logging

    configure_logging("info", "json")

    async def scenario():
        async with serving() as (_, channel):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await gallery_pb2_grpc.GalleryServiceStub(channel).Search(
                    search(k=13), metadata=(("x-request-id", "req-internal-1"),), timeout=2
                )
        return failed.value

    error = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == GENERIC_INTERNAL_MESSAGE
    assert SECRET not in error.details()
    assert ("x-request-id", "req-internal-1") in tuple(error.trailing_metadata())
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    failed = [e for e in events if e.get("event") == "rpc_failed"]
    assert failed and failed[0]["request_id"] == "req-internal-1" and SECRET in failed[0]["exception"]
    access = [e for e in events if e.get("event") == "rpc" and e.get("request_id") == "req-internal-1"]
    assert access[0]["grpc_code"] == "INTERNAL" and access[0]["grpc_method"] == "Search"


@pytest.mark.parametrize(
    ("k", "code", "details"),
    [
        (14, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"),
        (15, grpc.StatusCode.PERMISSION_DENIED, "probe: not allowed"),
    ],
)
def test_timeouts_map_to_deadline_exceeded_and_a_handlers_own_abort_is_kept(k, code, details):
    async def scenario():
        async with serving() as (server, channel):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await gallery_pb2_grpc.GalleryServiceStub(channel).Search(search(k=k), timeout=2)
            return failed.value, await asyncio.to_thread(scrape, server.metrics_port)

    error, text = asyncio.run(scenario())
    assert (error.code(), error.details()) == (code, details)
    labels = {"grpc_service": GALLERY_SERVICE, "grpc_method": "Search", "grpc_code": code.name}
    assert metric_value(text, "grpc_server_handled_total", **labels) == 1


def test_request_id_is_taken_from_metadata_generated_when_absent_and_passed_downstream():
    async def scenario():
        async with serving() as (downstream, _):
            forwarder = ProbeGallery(forward_to=f"127.0.0.1:{downstream.port}")
            async with serving(forwarder) as (_, channel):
                stub = gallery_pb2_grpc.GalleryServiceStub(channel)
                given = await stub.Search(search(), metadata=(("x-request-id", "photo-42"),), timeout=5)
                fresh = await stub.Search(search(), timeout=5)
            # Outside any call, a channel from create_channel makes an id up.
            async with create_channel(f"127.0.0.1:{downstream.port}") as direct_channel:
                direct = await gallery_pb2_grpc.GalleryServiceStub(direct_channel).Search(search(), timeout=5)
        return given, fresh, direct

    given, fresh, direct = asyncio.run(scenario())
    # The downstream handler saw the id the client gave the upstream server.
    assert given.model.version == "photo-42"
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.model.version)
    assert re.fullmatch(r"[0-9a-f]{32}", direct.model.version)


def test_requests_over_the_size_limit_get_resource_exhausted():
    async def scenario():
        async with serving(max_receive_message_bytes=64 * 1024) as (_, channel):
            stub = gallery_pb2_grpc.GalleryServiceStub(channel)
            big = gallery_pb2.SearchRequest(embedding=common_pb2.Embedding(values=[0.5] * 20_000), k=1)
            with pytest.raises(grpc.aio.AioRpcError) as too_big:
                await stub.Search(big, timeout=2)
            still = await stub.Search(search(k=1), timeout=2)
        return too_big.value, still

    error, still = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(still.points) == 1


def probe_process_env(**values) -> dict[str, str]:
    """This environment without GEOLOC_PROBE_* variables, plus one for each value given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOLOC_PROBE_")}
    env.update({f"GEOLOC_PROBE_{name.upper()}": str(value) for name, value in values.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_probe_process(
    environment: dict[str, str] | None = None, **values
) -> tuple[subprocess.Popen, int, list[dict]]:
    """Starts tests/probe_service.py as a process configured by GEOLOC_PROBE_* variables (and
    any other `environment`).

    Returns the process, its port (read from its JSON start-up log line) and a list that a
    reader thread keeps filling with the process's JSON log events.
    """
    env = {**probe_process_env(port=0, metrics_port="none", **values), **(environment or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.probe_service"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    events: list[dict] = []
    started = threading.Event()

    def read_logs() -> None:
        for line in process.stdout:
            if line.startswith("{"):
                events.append(json.loads(line))
                if events[-1].get("event") == "server_started":
                    started.set()

    threading.Thread(target=read_logs, daemon=True).start()
    if not started.wait(30):
        process.kill()
        raise AssertionError(f"probe server did not start; it logged {events}")
    port = next(e["port"] for e in events if e.get("event") == "server_started")
    return process, port, events


async def wait_for_health(channel, wanted: int, timeout_s: float) -> int:
    """Polls the server's overall health until it reports `wanted`; returns the last status."""
    deadline = time.monotonic() + timeout_s
    status = await health_of(channel)
    while status != wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        status = await health_of(channel)
    return status


def test_invalid_settings_stop_the_process_at_start_up_naming_the_variable():
    env = probe_process_env(port=70000, grace_period_s="soon")
    result = subprocess.run(
        [sys.executable, "-m", "tests.probe_service"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "GEOLOC_PROBE_PORT='70000'" in result.stderr and "GEOLOC_PROBE_GRACE_PERIOD_S='soon'" in result.stderr
    assert "Traceback" not in result.stderr and "server_started" not in result.stdout


def test_sigterm_lets_a_slow_call_in_flight_finish_and_refuses_new_calls():
    process, port, events = start_probe_process(grace_period_s=10, drain_s=1.0)

    async def scenario():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = gallery_pb2_grpc.GalleryServiceStub(channel)
            assert await wait_for_health(channel, SERVING, timeout_s=10) == SERVING
            slow = asyncio.ensure_future(stub.Search(search(k=2), metadata=(("x-probe-delay-s", "2.5"),), timeout=20))
            await asyncio.sleep(0.3)  # let the call arrive; the log order below proves it was in flight
            process.send_signal(signal.SIGTERM)
            draining = await wait_for_health(channel, NOT_SERVING, timeout_s=0.9)
            answer = await slow
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as fresh:
                    await gallery_pb2_grpc.GalleryServiceStub(fresh).Search(search(), timeout=2)
            return draining, answer, refused.value

    try:
        draining, answer, refused = asyncio.run(scenario())
        exit_code = process.wait(timeout=15)
    finally:
        process.kill()
    assert draining == NOT_SERVING
    assert len(answer.points) == 2
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert exit_code == 0
    # The server's own log orders the events: the slow call finished OK after shutdown began.
    names = [e.get("event") for e in events]
    slow_done = next(i for i, e in enumerate(events) if e.get("event") == "rpc" and e.get("grpc_method") == "Search")
    assert names.index("shutdown_started") < slow_done < names.index("shutdown_finished")
    assert events[slow_done]["grpc_code"] == "OK" and events[slow_done]["duration_ms"] >= 2500


def test_sigterm_cancels_calls_still_running_after_the_grace_period():
    process, port, events = start_probe_process(grace_period_s=0.5)

    async def scenario():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await wait_for_health(channel, SERVING, timeout_s=10) == SERVING
            stub = gallery_pb2_grpc.GalleryServiceStub(channel)
            hung = asyncio.ensure_future(stub.Search(search(), metadata=(("x-probe-delay-s", "30"),), timeout=20))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.aio.AioRpcError) as cut:
                await hung
            return cut.value, time.monotonic() - started

    try:
        error, waited = asyncio.run(scenario())
        exit_code = process.wait(timeout=10)
    finally:
        process.kill()
    assert error.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    assert waited < 5  # bounded by the 0.5 s grace period, not by the 30 s call
    assert exit_code == 0


def test_a_failed_warm_up_keeps_the_service_not_serving_and_exits_1():
    from geoloc.common.server import ServiceSpec, serve

    async def broken_warm_up():
        raise RuntimeError("model file is corrupt")

    spec = ServiceSpec(name=GALLERY_SERVICE, register=probe_spec(ProbeGallery()).register, warm_up=broken_warm_up)

    async def in_process():
        server, port = create_server(settings(), [spec])
        await server.start()
        with pytest.raises(RuntimeError, match="corrupt"):
            await server.wait_until_ready(timeout_s=5)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            status = await health_of(channel, GALLERY_SERVICE)
        await server.shutdown(grace_s=0)
        return status

    assert asyncio.run(in_process()) == NOT_SERVING
    assert asyncio.run(serve(settings(), [spec])) == 1
