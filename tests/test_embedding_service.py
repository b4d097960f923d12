"""The embedding service against a real tritonserver running the real EfficientNet-Lite2 weights."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from PIL import Image

from geoloc.common.ports import free_port
from geoloc.tritonserver.launcher import TritonLaunch, TritonServer
from geoloc.v1 import embedding_pb2, embedding_pb2_grpc
from tests.calls import assert_refused, refusal
from tests.photos import encode
from tests.servers import start_embedding_service, stop, wait_for_health


def vector(embedding) -> np.ndarray:
    return np.asarray(embedding.values, dtype=np.float64)


def cosine(a, b) -> float:
    a, b = vector(a), vector(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def embed(stub, data: bytes):
    return stub.Embed(embedding_pb2.EmbedRequest(image=data), timeout=30).embedding


def test_a_photo_gives_the_same_embedding_across_calls_and_batch_sizes(embedding_stub, photos):
    photo = photos[0].read_bytes()
    others = [p.read_bytes() for p in photos[1:8]]
    response = embedding_stub.Embed(embedding_pb2.EmbedRequest(image=photo), timeout=30)
    again = embed(embedding_stub, photo)
    alone = embedding_stub.EmbedBatch(embedding_pb2.EmbedBatchRequest(images=[photo]), timeout=30).embeddings[0]
    batch = embedding_stub.EmbedBatch(embedding_pb2.EmbedBatchRequest(images=[*others, photo, *others]), timeout=60)

    assert response.dimension == batch.dimension == 1280 == len(response.embedding.values)
    first = response.embedding
    assert (first.backbone.name, first.backbone.version, first.l2_normalized) == ("efficientnet-lite2", "1", False)
    assert np.isfinite(vector(first)).all() and np.linalg.norm(vector(first)) > 1.5  # raw, not unit length
    assert len(batch.embeddings) == 15
    for twin in (again, alone, batch.embeddings[7]):
        assert cosine(first, twin) > 0.9999
    # The batch's other members kept their own order and their own vectors.
    assert cosine(batch.embeddings[0], batch.embeddings[8]) > 0.9999


def test_different_photos_give_different_embeddings(embedding_stub, photos):
    embeddings = embedding_stub.EmbedBatch(
        embedding_pb2.EmbedBatchRequest(images=[p.read_bytes() for p in photos[:6]]), timeout=60
    ).embeddings
    pairs = [cosine(embeddings[i], embeddings[j]) for i in range(6) for j in range(i + 1, 6)]
    assert max(pairs) < 0.9, pairs


def test_a_photo_rotated_through_exif_embeds_like_its_upright_twin(embedding_stub, photos):
    upright = Image.open(photos[1]).convert("RGB")
    # Stored turned a quarter to the left, with EXIF orientation 6: "rotate 90° clockwise to view".
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    reference = embed(embedding_stub, encode(upright, "PNG"))
    with_exif = embed(embedding_stub, encode(stored, "PNG", exif=exif.tobytes()))
    without_exif = embed(embedding_stub, encode(stored, "PNG"))
    assert cosine(reference, with_exif) > 0.9999
    assert cosine(reference, without_exif) < 0.99  # the check above could fail: sideways differs


@pytest.mark.parametrize(
    "format, options, at_least",
    [
        ("JPEG", {"quality": 95}, 0.98),
        ("WEBP", {"lossless": True}, 0.9999),
        ("BMP", {}, 0.9999),
    ],
)
def test_every_supported_format_is_accepted(embedding_stub, photos, format, options, at_least):
    image = Image.open(photos[2]).convert("RGB")
    reference = embed(embedding_stub, encode(image, "PNG"))
    assert cosine(reference, embed(embedding_stub, encode(image, format, **options))) > at_least


def test_gifs_still_and_animated_are_refused_naming_the_format(embedding_stub, photos):
    """GIF is a palette format no camera writes; a still one and an animated one are both refused."""
    first, second = (Image.open(p).convert("RGB").resize((320, 240)) for p in photos[3:5])
    still = encode(first, "GIF")
    animated = encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    for data in (still, animated):
        error = refusal(embedding_stub.Embed, embedding_pb2.EmbedRequest(image=data))
        assert error.details() == "image: is a GIF image; supported formats are JPEG, PNG, WebP or BMP"
        assert_refused(error, "image")
    batch = embedding_pb2.EmbedBatchRequest(images=[photos[0].read_bytes(), animated])
    assert_refused(refusal(embedding_stub.EmbedBatch, batch), "images[1]", "is a GIF image")
    assert len(embed(embedding_stub, encode(first, "PNG")).values) == 1280


def bomb_png() -> bytes:
    """A 20000 x 20000 PNG (400 megapixels) that compresses to about 50 kB."""
    return encode(Image.new("1", (20000, 20000)), "PNG")


def truncated_jpeg(path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


BAD_PHOTOS = {
    "empty": (lambda _: b"", "is empty"),
    "random bytes": (lambda _: np.random.default_rng(0).bytes(5000), "not an image in a supported format"),
    "a text file": (lambda _: b"lat,lon\n48.85,2.35\n" * 50, "not an image in a supported format"),
    "a truncated JPEG": (truncated_jpeg, "truncated or corrupt"),
    "a decompression bomb": (lambda _: bomb_png(), "over the limit of 64000000 pixels"),
    "a 1x1 image": (lambda _: encode(Image.new("RGB", (1, 1)), "PNG"), "at least 32"),
    "a 400x16 strip": (lambda _: encode(Image.new("RGB", (400, 16)), "PNG"), "at least 32"),
    "a TIFF": (lambda _: encode(Image.new("RGB", (64, 64)), "TIFF"), "is a TIFF image"),
    "17 MiB": (lambda p: p.read_bytes() + bytes(17 * 1024 * 1024), "over the limit of 16777216 bytes"),
}


@pytest.mark.parametrize("name", BAD_PHOTOS)
def test_bad_photos_get_invalid_argument_and_the_service_keeps_serving(embedding_stub, photos, name):
    make, expected = BAD_PHOTOS[name]
    assert_refused(refusal(embedding_stub.Embed, embedding_pb2.EmbedRequest(image=make(photos[0]))), "image", expected)
    assert len(embed(embedding_stub, photos[0].read_bytes()).values) == 1280


def test_a_batch_with_one_bad_photo_is_refused_whole_naming_it(embedding_stub, photos):
    good, batch = photos[0].read_bytes(), embedding_stub.EmbedBatch
    one_empty = embedding_pb2.EmbedBatchRequest(images=[good, good, b"", good])
    assert_refused(refusal(batch, one_empty), "images[2]", "is empty")
    assert_refused(refusal(batch, embedding_pb2.EmbedBatchRequest(images=[])), "images", "1 to 64 photos, got 0")
    assert_refused(refusal(batch, embedding_pb2.EmbedBatchRequest(images=[b"x"] * 65)), "images", "got 65")


def test_a_payload_over_the_message_limit_gets_resource_exhausted(embedding_stub, photos):
    error = refusal(embedding_stub.Embed, embedding_pb2.EmbedRequest(image=bytes(21 * 1024 * 1024)))
    assert_refused(error, None, code=grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert len(embed(embedding_stub, photos[0].read_bytes()).values) == 1280


@pytest.mark.integration  # starts its own Triton
def test_the_service_waits_for_triton_then_is_unavailable_while_it_is_down_and_recovers(photos):
    """Started before Triton: NOT_SERVING until the model is READY. Triton stopped: UNAVAILABLE at
    once. Triton back on the same address: calls succeed again without restarting the service."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    launch = TritonLaunch(grpc_port=free_port(), metrics_port=None)
    photo = photos[0].read_bytes()
    process, address = start_embedding_service(launch.grpc_url)
    try:
        with grpc.insecure_channel(address) as channel:
            stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            # The process may still be starting (a refused connection, under load): wait until it
            # listens; from then until Triton's model is READY it must say NOT_SERVING.
            starting = health.Check(health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True)
            assert starting.status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as warming:
                stub.Embed(embedding_pb2.EmbedRequest(image=photo), timeout=5)
            assert warming.value.code() == grpc.StatusCode.UNAVAILABLE

            with TritonServer(launch) as triton:
                wait_for_health(address, 120, process)
                before = embed(stub, photo)
                triton.stop()
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as down:
                    stub.Embed(embedding_pb2.EmbedRequest(image=photo), timeout=20)
                waited = time.monotonic() - started
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE, down.value.details()
            assert "Triton" in down.value.details() and waited < 5

            with TritonServer(launch):  # the same address again
                after = _embed_with_retries(stub, photo, attempts=50)
            assert cosine(before, after) > 0.9999
    finally:
        stop(process)


def _embed_with_retries(stub, photo: bytes, attempts: int):
    for _ in range(attempts - 1):
        try:
            return embed(stub, photo)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            time.sleep(0.2)
    return embed(stub, photo)
