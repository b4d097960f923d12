"""What the server runtime costs per call: a factory-built server against a bare grpc.aio server.

Both serve the same trivial handler on loopback, measured in the same run, so the ratio is
the price of the interceptor (request id, readiness gate, metrics, access log, error mapping).
Access logging is measured on and off, since it is the largest part.

    .venv/bin/python bench/runtime_overhead.py [--calls 2000] [--concurrency 1 8]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time

import grpc

from geoloc.common.logs import configure_logging
from geoloc.common.server import ServiceSpec, create_server
from geoloc.common.settings import ServerSettings
from geoloc.v1 import common_pb2, gallery_pb2, gallery_pb2_grpc


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


async def main(calls: int, concurrencies: list[int]) -> None:
    configure_logging("info", "json", stream=io.StringIO())  # logs are formatted, not printed
    rows = []
    for concurrency in concurrencies:
        results = {}
        server, port = await bare_server()
        results["bare grpc.aio (baseline)"] = await drive(port, calls, concurrency)
        await server.stop(0)
        for log_requests in (False, True):
            settings = ServerSettings(port=0, metrics_port=None, log_requests=log_requests)
            server, port = create_server(settings, [spec()])
            await server.start()
            await server.wait_until_ready()
            label = f"factory, access log {'on' if log_requests else 'off'}"
            results[label] = await drive(port, calls, concurrency)
            await server.shutdown(grace_s=0)
        base_p50 = statistics.median(results["bare grpc.aio (baseline)"][0])
        for label, (latencies, throughput) in results.items():
            p50 = statistics.median(latencies)
            p99 = statistics.quantiles(latencies, n=100)[98]
            rows.append((concurrency, label, p50 * 1e3, p99 * 1e3, throughput, p50 / base_p50))
    print(f"{'clients':>7}  {'server':<28} {'p50 ms':>7} {'p99 ms':>7} {'calls/s':>8} {'p50 / baseline':>15}")
    for concurrency, label, p50, p99, throughput, ratio in rows:
        print(f"{concurrency:>7}  {label:<28} {p50:>7.3f} {p99:>7.3f} {throughput:>8.0f} {ratio:>15.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.concurrency))
