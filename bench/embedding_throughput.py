"""Photos per second through the embedding service against the same torch network in-process.

One run measures, on the same photos (Im2GPS3k val JPEGs):
- in-process: model_repository/efficientnet_lite2/1/backbone.py called directly, forward only
  and with the service's decode + crop, at batch 1 and batch 8 (the baseline);
- Triton direct: tritonclient's gRPC client, pre-cropped images, batch 1 and 8 concurrent;
- the service: Embed from 1 client and from 8 concurrent clients (Triton's dynamic batcher
  forms the batches), and EmbedBatch of 8.
Figures are the median of 3 passes; ratios are against the in-process decode + crop +
forward at batch 1 of this same run.
Everything shares this machine's cores, one mode at a time.

    .venv/bin/python bench/embedding_throughput.py [--photos 48]

For Triton alone in production, use perf_analyzer from NVIDIA's Triton SDK container
(docs/triton.md gives the command).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
import torch
from PIL import Image

from geoloc.common.logs import configure_logging
from geoloc.common.paths import data_root
from geoloc.common.ports import free_port
from geoloc.common.server import serving
from geoloc.embedding.config import EmbeddingSettings
from geoloc.embedding.model_config import float_parameter, load_backbone_module, read_model_config
from geoloc.embedding.preprocessing import CropSpec, model_input_from_photo
from geoloc.embedding.server import EmbeddingServicer, embedding_spec
from geoloc.tritonserver.launcher import TritonLaunch, TritonServer
from geoloc.v1 import embedding_pb2, embedding_pb2_grpc

MODEL = "efficientnet_lite2"
CONFIG = read_model_config(MODEL)
CROP = CropSpec.from_model_config(CONFIG)
LIMITS = EmbeddingSettings().photo_limits()


def in_process_network():
    backbone = load_backbone_module(MODEL)
    return backbone.EfficientNetLite2Features(
        float_parameter(CONFIG, "preprocess_mean"), float_parameter(CONFIG, "preprocess_std")
    )


def crop(data: bytes) -> np.ndarray:
    return model_input_from_photo(data, LIMITS, CROP)


REPEATS = 3


def timed(fn: Callable[[], object], images: int) -> float:
    """Median photos/s over REPEATS passes, after one warm-up pass."""
    fn()
    rates = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        fn()
        rates.append(images / (time.perf_counter() - started))
    return statistics.median(rates)


async def timed_async(fn: Callable[[], Awaitable[object]], images: int) -> float:
    await fn()
    rates = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        await fn()
        rates.append(images / (time.perf_counter() - started))
    return statistics.median(rates)


async def concurrently(clients: int, items: list, call: Callable[[object], Awaitable[object]]) -> None:
    async def client(share: list) -> None:
        for item in share:
            await call(item)

    await asyncio.gather(*(client(items[i::clients]) for i in range(clients)))


def measure_in_process(photos: list[bytes]) -> dict[str, float]:
    network = in_process_network()
    crops = torch.from_numpy(np.stack([crop(p) for p in photos]))
    n = len(photos)
    return {
        "in-process forward, batch 1": timed(lambda: [network(crops[i : i + 1]) for i in range(n)], n),
        "in-process forward, batch 8": timed(lambda: [network(crops[i : i + 8]) for i in range(0, n, 8)], n),
        "in-process decode+crop+forward, batch 1": timed(
            lambda: [network(torch.from_numpy(crop(p)[None])) for p in photos], n
        ),
        "in-process decode+crop+forward, batch 8": timed(
            lambda: [network(torch.from_numpy(np.stack([crop(p) for p in photos[i : i + 8]]))) for i in range(0, n, 8)],
            n,
        ),
    }


async def measure_triton_direct(url: str, photos: list[bytes]) -> dict[str, float]:
    import tritonclient.grpc as triton_grpc
    import tritonclient.grpc.aio as triton_aio

    crops = [crop(p)[None] for p in photos]
    client = triton_aio.InferenceServerClient(url)

    async def infer(batch: np.ndarray) -> None:
        image = triton_grpc.InferInput("IMAGE", list(batch.shape), "UINT8")
        image.set_data_from_numpy(batch)
        await client.infer(MODEL, [image])

    try:
        return {
            "Triton direct, batch 1, 1 client": await timed_async(lambda: concurrently(1, crops, infer), len(crops)),
            "Triton direct, batch 1, 8 clients": await timed_async(lambda: concurrently(8, crops, infer), len(crops)),
        }
    finally:
        await client.close()


async def measure_service(url: str, photos: list[bytes]) -> dict[str, float]:
    settings = EmbeddingSettings(port=0, metrics_port=None, triton_url=url, log_requests=False)
    async with serving(settings, [embedding_spec(EmbeddingServicer(settings))]) as (_, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)

            async def embed(photo: bytes) -> None:
                await stub.Embed(embedding_pb2.EmbedRequest(image=photo))

            async def embed_batches() -> None:
                for i in range(0, len(photos), 8):
                    await stub.EmbedBatch(embedding_pb2.EmbedBatchRequest(images=photos[i : i + 8]))

            n = len(photos)
            return {
                "service Embed, 1 client": await timed_async(lambda: concurrently(1, photos, embed), n),
                "service Embed, 8 clients (dynamic batching)": await timed_async(
                    lambda: concurrently(8, photos, embed), n
                ),
                "service EmbedBatch of 8, 1 client": await timed_async(embed_batches, n),
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=48, help="val photos per measurement (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=None, help="data root holding im2gps3k/")
    args = parser.parse_args()
    configure_logging("warning", "console")
    files = sorted(((args.data or data_root()) / "im2gps3k" / "val" / "images").glob("*.jpg"))[: args.photos]
    photos = [f.read_bytes() for f in files]
    sizes = [Image.open(f).size for f in files]

    rates = measure_in_process(photos)
    with TritonServer(TritonLaunch(grpc_port=free_port(), metrics_port=None)) as triton:
        rates |= asyncio.run(measure_triton_direct(triton.grpc_url, photos))
        rates |= asyncio.run(measure_service(triton.grpc_url, photos))

    baseline = rates["in-process decode+crop+forward, batch 1"]
    print(
        f"\n{len(photos)} Im2GPS3k val photos, {sizes[0][0]}x{sizes[0][1]}-ish JPEGs; "
        f"torch threads: {torch.get_num_threads()}"
    )
    print(f"{'mode':<48} {'photos/s':>9} {'x baseline':>11}")
    for mode, rate in rates.items():
        print(f"{mode:<48} {rate:>9.1f} {rate / baseline:>11.2f}")


if __name__ == "__main__":
    main()
