"""Shared fixtures, each started once per test session on loopback: a real tritonserver with the
default backbone, the embedding service in its own process in front of it, the gallery, sampler
and tokens experts as their own processes, and the orchestrator as its own process over them all.

These processes are shared by every test file that asks for them: a test that kills, slows or
reconfigures a service starts its own instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from geoloc.common.paths import data_root
from geoloc.tritonserver.launcher import free_port
from tests.servers import start_embedding_service, start_service, stop, wait_for_health


@pytest.fixture(scope="session")
def val_photos() -> list[Path]:
    """The validation split's photos, sorted by name (real Flickr JPEGs, 384 px longest side)."""
    photos = sorted((data_root() / "im2gps3k" / "val" / "images").glob("*.jpg"))
    assert len(photos) >= 16, f"expected the Im2GPS3k val photos under {data_root()}"
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


EXPERTS = ("gallery", "sampler", "tokens")


@pytest.fixture(scope="session")
def experts() -> Iterator[dict[str, str]]:
    """The gallery, sampler and tokens services, each as its own process with its shipped settings."""
    started = {name: start_service(name) for name in EXPERTS}
    try:
        for process, address in started.values():
            wait_for_health(address, 240, process)
        yield {name: address for name, (_, address) in started.items()}
    finally:
        for process, _ in started.values():
            stop(process)


@pytest.fixture(scope="session")
def orchestrator_address(embedding_address, experts) -> Iterator[str]:
    """The orchestrator as its own process over the session's embedding service and experts.

    Every process shares this machine's few cores here, so the deadlines, set for a deployment,
    are lifted: these tests are about answers and refusals, not about timeouts."""
    patient = {"default_deadline_s": "60", "embed_timeout_s": "30", "gallery_timeout_s": "30",
               "sampler_timeout_s": "30", "tokens_timeout_s": "30"}
    addresses = {f"{name}_address": address for name, address in experts.items()}
    process, address = start_service("orchestrator", embedding_address=embedding_address, **addresses, **patient)
    try:
        wait_for_health(address, 120, process)
        yield address
    finally:
        stop(process)
