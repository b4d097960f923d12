"""The gallery service on a real gRPC server over a real FAISS gallery and the shipped head."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from geoloc.common.server import serving
from geoloc.gallery.config import GallerySettings
from geoloc.gallery.heads import load_head
from geoloc.gallery.index import GalleryIndex
from geoloc.gallery.server import GalleryServicer, gallery_spec
from geoloc.v1 import gallery_pb2, gallery_pb2_grpc
from tests.calls import assert_refused, call_each
from tests.servers import made_up_embedding, small_gallery
from tests.servers import pooled_feature as feature

pytestmark = pytest.mark.integration  # every test serves the gallery on loopback


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory):
    """2000 real MP-16 gallery coordinates (the geoclip package's first rows), built once."""
    return small_gallery(tmp_path_factory.mktemp("gallery"), 2000)


def search_all(gallery_dir, requests, head: str | None = None):
    settings = GallerySettings(
        port=0, metrics_port=None, gallery_dir=gallery_dir, build_if_missing=False, **({"head": head} if head else {})
    )
    spec = gallery_spec(GalleryServicer(settings))
    return call_each(settings, spec, gallery_pb2_grpc.GalleryServiceStub, "Search", requests, timeout_s=30)


def request(values, k=10, backbone="efficientnet-lite2") -> gallery_pb2.SearchRequest:
    return gallery_pb2.SearchRequest(embedding=made_up_embedding(values, backbone), k=k)


def test_search_returns_geoclips_softmax_over_the_whole_gallery(gallery_dir):
    values = feature(0)
    (response,) = search_all(gallery_dir, [request(values, k=25)])
    head, gallery = load_head(GallerySettings().head), GalleryIndex.load(gallery_dir)
    query = head.queries(np.asarray([values]))[0].astype(np.float64)
    logits = head.logit_scale * (gallery.vectors().astype(np.float64) @ query)
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    best = np.argsort(-probabilities, kind="stable")[:25]
    assert response.gallery_size == 2000 and response.exact_normalizer
    assert response.model.name == "geoclip-gallery/efficientnet-lite2" and len(response.model.version) == 12
    got = np.array([[p.lat_deg, p.lon_deg, p.weight] for p in response.points])
    np.testing.assert_allclose(got[:, 2], probabilities[best], rtol=1e-4)
    np.testing.assert_allclose(got[:, :2], gallery.coordinates[best], atol=1e-9)
    assert np.all(np.diff(got[:, 2]) <= 0) and got[:, 2].sum() < 1


@pytest.mark.parametrize(
    "bad, field, problem",
    [
        (
            request(feature(1)[:512]),
            "embedding.values",
            "has 512 values; the gallery head for efficientnet-lite2 takes 1280",
        ),
        (request([float("nan")] + feature(1)[1:]), "embedding.values", "holds 1 NaN or infinite values"),
        (request([float("inf")] * 1280), "embedding.values", "holds 1280 NaN or infinite values"),
        (request(feature(1), k=0), "k", "must be in [1, 1000], got 0"),
        (request(feature(1), k=1001), "k", "must be in [1, 1000], got 1001"),
        (
            request(feature(1), backbone="clip-vit-l14"),
            "embedding.backbone.name",
            "the gallery head takes 'efficientnet-lite2'",
        ),
    ],
)
def test_bad_requests_get_invalid_argument_and_the_service_keeps_serving(gallery_dir, bad, field, problem):
    error, good = search_all(gallery_dir, [bad, request(feature(2), k=3)])
    assert_refused(error, field, problem)
    assert len(good.points) == 3


def test_a_gallery_that_cannot_be_loaded_never_serves(tmp_path):
    """Missing on disk, with building off: the warm-up fails, so health never turns SERVING
    (the runtime's tests cover NOT_SERVING during a warm-up in general)."""
    settings = GallerySettings(port=0, metrics_port=None, gallery_dir=tmp_path / "absent", build_if_missing=False)

    async def scenario():
        async with serving(settings, [gallery_spec(GalleryServicer(settings))]):
            pass

    with pytest.raises(FileNotFoundError):
        asyncio.run(scenario())


def test_concurrent_searches_are_batched_and_each_gets_its_own_answer(gallery_dir):
    settings = GallerySettings(port=0, metrics_port=None, gallery_dir=gallery_dir, build_if_missing=False)
    requests = [request(feature(10 + i), k=1 + i % 7) for i in range(24)]

    async def scenario():
        async with serving(settings, [gallery_spec(GalleryServicer(settings))]) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = gallery_pb2_grpc.GalleryServiceStub(channel)
                alone = [await stub.Search(r, timeout=30) for r in requests]
                together = await asyncio.gather(*(stub.Search(r, timeout=30) for r in requests))
                return alone, together

    alone, together = asyncio.run(scenario())
    for one, many, sent in zip(alone, together, requests, strict=True):
        assert len(many.points) == sent.k
        np.testing.assert_allclose([p.weight for p in many.points], [p.weight for p in one.points], rtol=1e-5)
        assert [(p.lat_deg, p.lon_deg) for p in many.points] == [(p.lat_deg, p.lon_deg) for p in one.points]


def test_with_geoclips_released_head_the_service_takes_clip_features(gallery_dir):
    clip_feature = np.random.default_rng(5).normal(0, 1, 768).tolist()
    response, refused = search_all(
        gallery_dir, [request(clip_feature, k=5, backbone="clip-vit-l14"), request(feature(3), k=5)], head="clip"
    )
    assert response.model.name == "geoclip-gallery/clip-vit-l14" and len(response.points) == 5
    assert_refused(refused, "embedding.values", "takes 768")
