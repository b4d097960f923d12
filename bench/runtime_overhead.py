"""What the server runtime costs per call: a factory-built server against a bare grpc.aio server.

Both serve the same trivial handler on loopback, measured in the same run, so the ratio is
the price of the interceptor (request id, readiness gate, metrics, access log, error mapping).
Access logging is measured on and off, since it is the largest part.

Tracing (geoloc.common.tracing) is measured off (the factory rows: the default), on with every
call unsampled, and on with every call sampled and its spans exported over OTLP/gRPC to a
receiver in this process (tests/otlp_receiver.py), each with the access log on. With tracing off
the server has no tracing interceptor; what remains on the call's path is a check per hook (the
request id, each step, each log line), timed on its own in the last line as a share of a call.

    .venv/bin/python bench/runtime_overhead.py [--calls 2000] [--concurrency 1 8]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import time
import timeit

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

from geoloc.common.logs import configure_logging
from geoloc.common.paths import CHECKOUT
from geoloc.common.server import ServiceSpec, create_server
from geoloc.common.settings import ServerSettings
from geoloc.common.tracing import add_trace_ids, record_request_id, step, use_tracer_provider
from geoloc.v1 import common_pb2, gallery_pb2, gallery_pb2_grpc

sys.path.insert(0, str(CHECKOUT))
from tests.otlp_receiver import OtlpReceiver


class EchoGallery(gallery_pb2_grpc.GalleryServiceServicer):
    async def Search(self, request, context):
        return gallery_pb2.SearchResponse(points=[common_pb2.WeightedPoint(lat_deg=1.0, weight=1.0)] * request.k)


def spec() -> ServiceSpec:
    servicer = EchoGallery()
    return ServiceSpec(
        name="geoloc.v1.GalleryService",
        register=lambda server: gallery_pb2_grpc.add_GalleryServiceServicer_to_server(servicer, server),
    )


async def bare_server() -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    gallery_pb2_grpc.add_GalleryServiceServicer_to_server(EchoGallery(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def drive(port: int, calls: int, concurrency: int) -> tuple[list[float], float]:
    """Per-call latencies (s) and throughput (calls/s) for `calls` calls from `concurrency` clients."""
    request = gallery_pb2.SearchRequest(embedding=common_pb2.Embedding(values=[0.0] * 512), k=5)
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = gallery_pb2_grpc.GalleryServiceStub(channel)
        for _ in range(50):  # warm the connection and the server's code paths
            await stub.Search(request)

        async def client(n: int) -> None:
            for _ in range(n):
                started = time.perf_counter()
                await stub.Search(request)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client(calls // concurrency) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, len(latencies) / elapsed


async def factory_run(calls: int, concurrency: int, log_requests: bool) -> tuple[list[float], float]:
    settings = ServerSettings(port=0, metrics_port=None, log_requests=log_requests)
    server, port = create_server(settings, [spec()])
    await server.start()
    await server.wait_until_ready()
    try:
        return await drive(port, calls, concurrency)
    finally:
        await server.shutdown(grace_s=0)


async def traced_run(calls: int, concurrency: int, sampled: bool, endpoint: str) -> tuple[list[float], float]:
    """A factory run with tracing on, every call sampled or none, spans exported to `endpoint`."""
    provider = TracerProvider(sampler=ALWAYS_ON if sampled else ALWAYS_OFF)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    use_tracer_provider(provider)
    try:
        return await factory_run(calls, concurrency, log_requests=True)
    finally:
        use_tracer_provider(None)
        provider.shutdown()


def off_hooks_s() -> float:
    """Seconds per call of the tracing checks a call makes with tracing off: the request id, one
    step and three log lines."""

    def hooks() -> None:
        record_request_id("0" * 32)
        with step("bench.step"):
            pass
        for _ in range(3):
            add_trace_ids(None, None, {})

    rounds = 200_000
    return min(timeit.repeat(hooks, number=rounds, repeat=5)) / rounds


async def main(calls: int, concurrencies: list[int]) -> None:
    configure_logging("info", "json", stream=io.StringIO())  # logs are formatted, not printed
    rows = []
    with OtlpReceiver() as receiver:
        for concurrency in concurrencies:
            results = {}
            server, port = await bare_server()
            results["bare grpc.aio (baseline)"] = await drive(port, calls, concurrency)
            await server.stop(0)
            for log_requests in (False, True):
                label = f"factory, access log {'on' if log_requests else 'off'}"
                results[label] = await factory_run(calls, concurrency, log_requests)
            for sampled in (False, True):
                label = f"+ tracing, {'sampled' if sampled else 'unsampled'}"
                results[label] = await traced_run(calls, concurrency, sampled, receiver.grpc_endpoint)
            base_p50 = statistics.median(results["bare grpc.aio (baseline)"][0])
            off_p50 = statistics.median(results["factory, access log on"][0])
            for label, (latencies, throughput) in results.items():
                p50 = statistics.median(latencies)
                p99 = statistics.quantiles(latencies, n=100)[98]
                rows.append((concurrency, label, p50 * 1e3, p99 * 1e3, throughput, p50 / base_p50, p50 / off_p50))
        exported = len(receiver.spans())
    header = f"{'p50 / baseline':>15} {'p50 / tracing off':>18}"
    print(f"{'clients':>7}  {'server':<28} {'p50 ms':>7} {'p99 ms':>7} {'calls/s':>8} {header}")
    for concurrency, label, p50, p99, throughput, ratio, traced in rows:
        print(
            f"{concurrency:>7}  {label:<28} {p50:>7.3f} {p99:>7.3f} {throughput:>8.0f} {ratio:>15.2f} {traced:>18.2f}"
        )
    hooks = off_hooks_s()
    off_p50 = min(p50 for _, label, p50, *_ in rows if label == "factory, access log on") / 1e3
    print(f"spans the receiver got from the sampled runs: {exported}")
    print(f"tracing off: its checks take {hooks * 1e9:.0f} ns a call, {hooks / off_p50:.4%} of the fastest p50 above")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.concurrency))
