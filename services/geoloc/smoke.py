"""`geoloc smoke`: the main job until the orchestrator lands.

It proves the runtime end to end on this machine: a real gRPC server built by the
factory on loopback, its health, reflection and metrics read over the wire, and a
graceful shutdown. It then starts tritonserver with the default backbone and the embedding
service in front of it, embeds sample photos of the validation split, samples where three
of them were taken with the sampler service's two methods, and decodes them into S2 cells with
the tokens service's beam search. Last, it scores
the prior baseline (every photo guessed at the densest place of the training photos) on the
validation split with the evaluation harness: the floor that every expert, and the fusion,
must beat.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.request
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("smoke", help="check the runtime and score the prior baseline", description=__doc__)
    parser.add_argument(
        "--data", type=Path, metavar="DIR", help="data root holding im2gps3k/ (default: ../shared/data)"
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=Path("reports/prior_baseline_val.json"),
        metavar="PATH.json",
        help="where to write the baseline's JSON report (default: %(default)s)",
    )
    parser.add_argument("--photos", type=int, default=6, metavar="N", help="val photos to embed (default: %(default)s)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from geoloc.common.logs import configure_logging

    configure_logging("warning", "console")  # what the smoke saw is printed below; skip the servers' chatter
    print("== runtime: a factory-built gRPC server on loopback")
    for line in asyncio.run(check_runtime()):
        print("  " + line)

    from geoloc.evaluation.csvio import InputError
    from geoloc.evaluation.dataset import im2gps3k_split
    from geoloc.evaluation.harness import evaluate
    from geoloc.evaluation.prior import PriorPredictions

    try:
        train, val = im2gps3k_split("train", args.data), im2gps3k_split("val", args.data)
    except InputError as exc:
        print(f"geoloc smoke: error: {exc}", file=sys.stderr)
        return 2

    photos = sorted((val.root / "images").glob("*.jpg"))[: args.photos]
    print(f"\n== embedding: tritonserver + the embedding service on loopback, {len(photos)} val photos")
    for line in embed_sample_photos(photos):
        print("  " + line)
    source = PriorPredictions(train)
    print(f"\n== prior baseline on the Im2GPS3k val split ({len(val)} photos)\n  {source.description}")
    report = evaluate(val, source)
    print(report.format_table())
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report.to_json() + "\n", encoding="utf-8")
    print(f"\nreport written to {args.report}")
    return 0


async def check_runtime() -> list[str]:
    """Starts a server with only the runtime's own services, checks them over gRPC; returns what it saw."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from geoloc.common.server import serving
    from geoloc.common.settings import ServerSettings

    async with serving(ServerSettings(port=0, metrics_port=0, log_requests=False), [], ready_timeout_s=10) as (
        server,
        port,
    ):
        seen = [f"listening on 127.0.0.1:{port}, metrics on :{server.metrics_port}"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            seen.append(f"health: {health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)}")
            listing = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            names = [s.name async for r in listing for s in r.list_services_response.service]
            seen.append("reflection lists: " + ", ".join(sorted(names)))
        text = await asyncio.to_thread(_scrape, server.metrics_port)
        handled = [line for line in text.splitlines() if line.startswith("grpc_server_handled_total{")]
        seen.append("metrics: " + "; ".join(handled))
    seen.append("shutdown: graceful")
    return seen


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def embed_sample_photos(photos: list[Path]) -> list[str]:
    """Starts Triton and the embedding service, embeds `photos`; returns what it saw."""
    from geoloc.common.ports import free_port
    from geoloc.tritonserver.launcher import TritonLaunch, TritonServer

    with TritonServer(TritonLaunch(grpc_port=free_port(), metrics_port=None)) as triton:
        seen = [f"tritonserver ready at {triton.grpc_url} (model efficientnet_lite2)"]
        return seen + asyncio.run(_embed(triton.grpc_url, photos))


async def _embed(triton_url: str, photos: list[Path]) -> list[str]:
    import time

    import grpc
    import numpy as np

    from geoloc.common.server import serving
    from geoloc.embedding.config import EmbeddingSettings
    from geoloc.embedding.server import EmbeddingServicer, embedding_spec
    from geoloc.v1 import embedding_pb2, embedding_pb2_grpc

    settings = EmbeddingSettings(port=0, metrics_port=None, triton_url=triton_url, log_requests=False)
    async with serving(settings, [embedding_spec(EmbeddingServicer(settings))]) as (_, port):
        seen = [f"embedding service SERVING on 127.0.0.1:{port}"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
            vectors, embeddings = [], []
            for photo in photos:
                started = time.perf_counter()
                response = await stub.Embed(embedding_pb2.EmbedRequest(image=photo.read_bytes()), timeout=30)
                elapsed_ms = (time.perf_counter() - started) * 1000
                vectors.append(np.asarray(response.embedding.values))
                embeddings.append(response.embedding)
                backbone = response.embedding.backbone
                seen.append(
                    f"{photo.name[:40]:<40} {backbone.name} v{backbone.version} {response.dimension}-d "
                    f"|v|={np.linalg.norm(vectors[-1]):.2f} in {elapsed_ms:.0f} ms"
                )
        unit = np.stack(vectors) / np.linalg.norm(np.stack(vectors), axis=1, keepdims=True)
        cosines = (unit @ unit.T)[np.triu_indices(len(unit), 1)]
        if len(cosines):
            seen.append(f"cosine between different photos: {cosines.min():.2f} to {cosines.max():.2f}")
    return seen + await _sample(embeddings[:3]) + await _decode_tokens(embeddings[:3])


async def _sample(embeddings: list) -> list[str]:
    """Starts the sampler service with the shipped checkpoints and samples each embedding with both methods."""
    import grpc

    from geoloc.common.server import serving
    from geoloc.sampler.config import SamplerSettings
    from geoloc.sampler.server import SamplerServicer, sampler_spec
    from geoloc.v1 import sampler_pb2, sampler_pb2_grpc

    settings = SamplerSettings(port=0, metrics_port=None, log_requests=False)
    async with serving(settings, [sampler_spec(SamplerServicer(settings))], ready_timeout_s=120) as (_, port):
        seen = [f"sampler service SERVING on 127.0.0.1:{port}; 256 samples, 32 steps, seed 0"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = sampler_pb2_grpc.SamplerServiceStub(channel)
            for number, embedding in enumerate(embeddings):
                for method in (sampler_pb2.SAMPLING_METHOD_FLOW, sampler_pb2.SAMPLING_METHOD_SH_DIFFUSION):
                    answer = await stub.Sample(
                        sampler_pb2.SampleRequest(embedding=embedding, method=method, seed=0), timeout=60
                    )
                    top = answer.modes[0]
                    seen.append(
                        f"photo {number + 1} {sampler_pb2.SamplingMethod.Name(method)[16:]:<12} "
                        f"top mode {top.lat_deg:7.2f},{top.lon_deg:8.2f} holds {top.weight:4.0%} "
                        f"of {len(answer.modes)} modes; mean log-density {answer.mean_log_density:.2f}"
                    )
    return seen


async def _decode_tokens(embeddings: list) -> list[str]:
    """Starts the tokens service with the shipped decoder and beam-decodes each embedding."""
    import grpc

    from geoloc.common.server import serving
    from geoloc.tokens.config import TokensSettings
    from geoloc.tokens.server import TokensServicer, tokens_spec
    from geoloc.v1 import tokens_pb2, tokens_pb2_grpc

    settings = TokensSettings(port=0, metrics_port=None, log_requests=False)
    async with serving(settings, [tokens_spec(TokensServicer(settings))], ready_timeout_s=120) as (_, port):
        seen = [f"tokens service SERVING on 127.0.0.1:{port}; beam search of width 5 to level 20"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = tokens_pb2_grpc.TokensServiceStub(channel)
            for number, embedding in enumerate(embeddings):
                answer = await stub.Decode(tokens_pb2.DecodeRequest(embedding=embedding), timeout=60)
                top = answer.cells[0]
                seen.append(
                    f"photo {number + 1} top cell {top.s2_token} (level {top.level}) at "
                    f"{top.lat_deg:7.2f},{top.lon_deg:8.2f} holds {top.probability:4.0%} of {len(answer.cells)} beams"
                )
    return seen
