"""The gallery service's gRPC edge: a backbone feature in, the top-k gallery points out.

The points' weights are GeoCLIP's whole-gallery softmax probabilities (gallery/retrieval.py); the
partition function is exact for a flat index and estimated otherwise, and `exact_normalizer`
says which.
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np

from geoloc.artifacts.bundles import Bundle
from geoloc.common.batching import Batcher
from geoloc.common.embeddings import validated_embedding
from geoloc.common.errors import InvalidArgument, NotReady
from geoloc.common.metrics import BatchMetrics, ServerMetrics
from geoloc.common.server import ServiceSpec, run_service, servicer_spec
from geoloc.common.tracing import step
from geoloc.gallery.config import GallerySettings
from geoloc.gallery.heads import GalleryHead
from geoloc.gallery.retrieval import GalleryRetrieval
from geoloc.v1 import common_pb2, gallery_pb2, gallery_pb2_grpc

MAX_K = 1000


def validated_feature(embedding: common_pb2.Embedding, head: GalleryHead) -> np.ndarray:
    """The request's feature as float32 [1, d]; raises InvalidArgument if the head cannot take it."""
    return validated_embedding(embedding, head.in_dim, head.backbone, "gallery head")[np.newaxis]


def searched_together(top_k, queries: list[tuple[np.ndarray, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Queries (feature, k) searched in one call of `top_k(features, k)` at their largest k: a flat
    search costs about the same for one query as for ten (the gallery is read once either way)."""
    k = max(wanted for _, wanted in queries)
    probabilities, ids = top_k(np.stack([feature for feature, _ in queries]), k)
    return [(probabilities[row, :wanted], ids[row, :wanted]) for row, (_, wanted) in enumerate(queries)]


class GalleryServicer(gallery_pb2_grpc.GalleryServiceServicer):
    def __init__(self, settings: GallerySettings):
        self.settings = settings
        self._retrieval: GalleryRetrieval | None = None
        self._batcher: Batcher | None = None
        self._batch_metrics: BatchMetrics | None = None

    async def warm_up(self) -> None:
        s = self.settings
        bundle = None if s.bundle is None else Bundle.read(s.bundle)
        head = s.head if bundle is None else str(bundle.file("gallery"))
        retrieval = await asyncio.to_thread(
            GalleryRetrieval.load, head, s.gallery_dir, s.build_if_missing, s.use_gpu, s.nprobe
        )
        if bundle is not None:
            bundle.check_served("gallery head", retrieval.head.backbone, retrieval.head.in_dim)
        self._batcher = Batcher(
            lambda queries: searched_together(retrieval.top_k, queries), metrics=self._batch_metrics
        )
        self._retrieval = retrieval
        probe = common_pb2.Embedding(values=[0.5] * retrieval.head.in_dim)  # one real search before SERVING
        await self.Search(gallery_pb2.SearchRequest(embedding=probe, k=1), None)

    def bind_metrics(self, metrics: ServerMetrics) -> None:
        self._batch_metrics = metrics.batcher("gallery")

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()

    async def Search(self, request: gallery_pb2.SearchRequest, context) -> gallery_pb2.SearchResponse:
        if self._retrieval is None:
            raise NotReady("the gallery is still loading")
        head, gallery = self._retrieval.head, self._retrieval.gallery
        if not 1 <= request.k <= MAX_K:
            raise InvalidArgument("k", f"must be in [1, {MAX_K}], got {request.k}")
        feature = validated_feature(request.embedding, head)
        k = min(request.k, len(gallery))
        with step("gallery.search"):
            probabilities, ids = await self._batcher.submit((feature[0], k))
        points = [
            common_pb2.WeightedPoint(lat_deg=float(lat), lon_deg=float(lon), weight=float(p))
            for (lat, lon), p in zip(gallery.coordinates[ids], probabilities, strict=True)
        ]
        return gallery_pb2.SearchResponse(
            points=points,
            model=common_pb2.ModelInfo(name=f"geoclip-gallery/{head.backbone}", version=head.version),
            gallery_size=len(gallery),
            exact_normalizer=gallery.exact,
        )


def gallery_spec(servicer: GalleryServicer) -> ServiceSpec:
    return servicer_spec(gallery_pb2, "GalleryService", gallery_pb2_grpc.add_GalleryServiceServicer_to_server, servicer)


if __name__ == "__main__":
    sys.exit(run_service(GallerySettings, lambda settings: [gallery_spec(GalleryServicer(settings))]))
