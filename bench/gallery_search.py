"""Gallery search: per-query latency and, for large synthetic galleries, recall and memory.

Part 1, GeoCLIP's 100K MP-16 gallery (exact index), with real queries (the shipped head on
Im2GPS3k val features), measured in one run at batch 1 and batch 64:
- bare FAISS top-10 search on the same index: the floor;
- GalleryIndex.softmax_top_k in-process: top 10 with the exact whole-gallery softmax;
- the gallery service's Search over gRPC (batch 64 = 64 concurrent calls);
- the geoclip package's predict path given the same 512-d query: it re-embeds the whole
  gallery with its location encoder on every call (run with the package's own encoder code).

Part 2, synthetic galleries (1M and 10M points: real gallery embeddings plus Gaussian noise of
0.01 per dimension, cosine about 0.97 to their parent) in the approximate index galleries
beyond 1M get (IVF-SQ8; forced at exactly 1M, which is still flat): recall@10
against exact search, per-query latency at batch 1 and 64, resident memory of the index, and
the partition function's estimate against the exact one.

    .venv/bin/python bench/gallery_search.py [--sizes 1000000 10000000] [--skip-geoclip]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import faiss
import grpc
import numpy as np
import torch

from geoloc.common.logs import configure_logging
from geoloc.common.paths import data_root
from geoloc.common.server import serving
from geoloc.evaluation.dataset import load_split
from geoloc.gallery.build import DEFAULT_GALLERY_DIR, build_gallery, default_gallery_csv
from geoloc.gallery.config import GallerySettings
from geoloc.gallery.heads import load_head
from geoloc.gallery.index import GalleryIndex, index_type_for
from geoloc.gallery.server import GalleryServicer, gallery_spec
from geoloc.training.features import split_features
from geoloc.v1 import common_pb2, gallery_pb2, gallery_pb2_grpc

K = 10


def per_query_ms(fn, queries: np.ndarray, batch: int, repeats: int = 3) -> float:
    """Median over `repeats` of the time per query, running `fn` on batches of `batch` queries."""
    fn(queries[:batch])
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(queries), batch):
            fn(queries[start : start + batch])
        times.append((time.perf_counter() - started) / len(queries) * 1000)
    return float(np.median(times))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def geoclip_predict_path():
    """The geoclip package's predict, given a 512-d image feature instead of a photo."""
    from geoloc.gallery.geoclip_reference import geoclip_reference_encoder

    encoder = geoclip_reference_encoder()
    gallery = torch.as_tensor(np.loadtxt(default_gallery_csv(), delimiter=",", skiprows=1), dtype=torch.float32)

    @torch.no_grad()
    def predict(queries: np.ndarray):
        locations = torch.nn.functional.normalize(encoder(gallery), dim=1)
        logits = 39.69 * torch.as_tensor(queries) @ locations.T
        return torch.topk(logits.softmax(dim=-1), K, dim=1)

    return predict


def part_one(gallery_dir: Path, skip_geoclip: bool) -> list[tuple[str, float, float]]:
    if not (gallery_dir / "manifest.json").exists():
        build_gallery(default_gallery_csv(), gallery_dir)
    gallery, head = GalleryIndex.load(gallery_dir), load_head(GallerySettings().head)
    val = load_split(data_root() / "im2gps3k" / "val")
    features = split_features(val, progress=False)[:128]
    queries = head.queries(features)
    rows = [
        (
            "bare FAISS search (floor)",
            *(per_query_ms(lambda q: gallery.index.search(q, K), queries, b) for b in (1, 64)),
        ),
        (
            "GalleryIndex.softmax_top_k",
            *(per_query_ms(lambda q: gallery.softmax_top_k(q, K, head.logit_scale), queries, b) for b in (1, 64)),
        ),
        ("service Search over gRPC", *asyncio.run(service_latency(gallery_dir, features))),
    ]
    if not skip_geoclip:
        predict = geoclip_predict_path()
        rows.append(
            (
                "geoclip predict path (re-embeds gallery)",
                per_query_ms(predict, queries[:2], 1, repeats=1),
                per_query_ms(predict, queries[:64], 64, repeats=1),
            )
        )
    return rows


async def service_latency(gallery_dir: Path, features: np.ndarray) -> tuple[float, float]:
    settings = GallerySettings(port=0, metrics_port=None, gallery_dir=gallery_dir, log_requests=False)
    async with serving(settings, [gallery_spec(GalleryServicer(settings))], ready_timeout_s=300) as (_, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = gallery_pb2_grpc.GalleryServiceStub(channel)
            requests = [
                gallery_pb2.SearchRequest(embedding=common_pb2.Embedding(values=f.tolist()), k=K) for f in features
            ]
            await stub.Search(requests[0])
            started = time.perf_counter()
            for r in requests:
                await stub.Search(r)
            one = (time.perf_counter() - started) / len(requests) * 1000
            started = time.perf_counter()
            for start in range(0, len(requests), 64):
                await asyncio.gather(*(stub.Search(r) for r in requests[start : start + 64]))
            return one, (time.perf_counter() - started) / len(requests) * 1000


def synthetic_chunks(parents: np.ndarray, size: int, chunk: int = 500_000, seed: int = 0):
    """The synthetic gallery in chunks, the same every time for the same seed."""
    for number, start in enumerate(range(0, size, chunk)):
        rng = np.random.default_rng([seed, number])
        n = min(chunk, size - start)
        vectors = parents[rng.integers(0, len(parents), n)] + rng.normal(0, 0.01, (n, parents.shape[1])).astype(
            np.float32
        )
        yield vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_top_k(parents, size, queries, k=K) -> tuple[np.ndarray, np.ndarray]:
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), k), dtype=np.int64)
    offset = 0
    for vectors in synthetic_chunks(parents, size):
        scores = queries @ vectors.T
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, offset + np.arange(len(vectors))[None].repeat(len(queries), 0)], axis=1)
        pick = np.argsort(-all_scores, axis=1)[:, :k]
        best_scores, best_ids = np.take_along_axis(all_scores, pick, 1), np.take_along_axis(all_ids, pick, 1)
        offset += len(vectors)
    return best_scores, best_ids


def exact_log_partition(parents, size, queries, scale) -> np.ndarray:
    total = np.zeros(len(queries))
    for vectors in synthetic_chunks(parents, size):
        total += np.exp(scale * (queries @ vectors.T).astype(np.float64) - scale).sum(axis=1)
    return np.log(total) + scale


def part_two(gallery_dir: Path, sizes: list[int]) -> list[tuple]:
    real = GalleryIndex.load(gallery_dir)
    parents, head = real.vectors().copy(), load_head(GallerySettings().head)
    val = load_split(data_root() / "im2gps3k" / "val")
    queries = head.queries(split_features(val, progress=False)[:128])
    rows = []
    for size in sizes:
        kind = "ivfsq8" if index_type_for(size) == "flat" else index_type_for(size)
        before, started = rss_mb(), time.perf_counter()
        chunks = synthetic_chunks(parents, size)
        first = next(chunks)
        gallery = GalleryIndex.build(first, np.zeros((len(first), 2)), encoder_sha256="synthetic", index_type=kind)
        for vectors in chunks:
            gallery.add(vectors, np.zeros((len(vectors), 2)))
        build_s = time.perf_counter() - started
        memory = rss_mb() - before
        _, truth = exact_top_k(parents, size, queries)
        _, found = gallery.search(queries, K)
        recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth, strict=True)])
        b1, b64 = (per_query_ms(lambda q, g=gallery: g.search(q, K), queries, b) for b in (1, 64))
        estimate = gallery.log_partition(queries, head.logit_scale)
        error = np.abs(estimate - exact_log_partition(parents, size, queries, head.logit_scale))
        rows.append((size, kind, recall, b1, b64, memory, build_s, float(np.median(error)), float(error.max())))
        gallery = None  # free it before the next size is built
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", type=Path, default=DEFAULT_GALLERY_DIR)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--skip-geoclip", action="store_true", help="skip the slow geoclip predict path")
    args = parser.parse_args()
    configure_logging("warning", "console")
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")

    rows = part_one(args.gallery, args.skip_geoclip)
    floor = rows[0]
    print(f"\nGeoCLIP 100K gallery, exact index, 128 real queries (Im2GPS3k val), top {K}")
    print(f"{'path':<44} {'batch 1 ms/q':>13} {'x floor':>8} {'batch 64 ms/q':>14} {'x floor':>8}")
    for name, one, many in rows:
        print(f"{name:<44} {one:>13.2f} {one / floor[1]:>8.1f} {many:>14.3f} {many / floor[2]:>8.1f}")

    if args.sizes:
        print(f"\nsynthetic galleries, approximate index, 128 real queries, recall@{K} against exact search")
        print(
            f"{'points':>10} {'index':>7} {'recall':>7} {'b1 ms/q':>8} {'b64 ms/q':>9} {'RSS MB':>8} {'build s':>8} "
            f"{'|dlogZ| med':>11} {'max':>6}"
        )
        for size, kind, recall, b1, b64, memory, build_s, err_med, err_max in part_two(args.gallery, args.sizes):
            print(
                f"{size:>10} {kind:>7} {recall:>7.3f} {b1:>8.2f} {b64:>9.3f} {memory:>8.0f} {build_s:>8.0f} "
                f"{err_med:>11.3f} {err_max:>6.3f}"
            )


if __name__ == "__main__":
    main()
