"""Shared fixtures: a real tritonserver with the default backbone, and the embedding service
in its own process in front of it, both on loopback and started once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from geoloc.evaluation.dataset import default_data_root
from geoloc.tritonserver.launcher import free_port
from tests.servers import start_embedding_service, stop, wait_for_health


@pytest.fixture(scope="session")
def val_photos() -> list[Path]:
    """The validation split's photos, sorted by name (real Flickr JPEGs, 384 px longest side)."""
    photos = sorted((default_data_root() / "im2gps3k" / "val" / "images").glob("*.jpg"))
    assert len(photos) >= 16, f"expected the Im2GPS3k val photos under {default_data_root()}"
    return photos


@pytest.fixture(scope="session")
def triton() -> Iterator:
    """tritonserver from the nvidia-pytriton wheel, serving model_repository/'s default backbone."""
    from geoloc.tritonserver.launcher import TritonLaunch, TritonServer

    with TritonServer(TritonLaunch(grpc_port=free_port(), metrics_port=None)) as server:
        yield server


@pytest.fixture(scope="session")
def embedding_address(triton) -> Iterator[str]:
    """The embedding service, as its own process, in front of the session's Triton."""
    process, address = start_embedding_service(triton.grpc_url)
    try:
        wait_for_health(address, 120, process)
        yield address
    finally:
        stop(process)


@pytest.fixture()
def embedding_stub(embedding_address):
    from geoloc.v1 import embedding_pb2_grpc

    with grpc.insecure_channel(embedding_address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        yield embedding_pb2_grpc.EmbeddingServiceStub(channel)
