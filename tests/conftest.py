"""Shared fixtures, each started once per test session on loopback: a real tritonserver with the
default backbone, the embedding service in its own process in front of it, the gallery, sampler
and tokens experts as their own processes, and the orchestrator as its own process over them all.

These processes are shared by every test file that asks for them: a test that kills, slows or
reconfigures a service starts its own instead.

Three markers sort the tests (registered here):

- `integration`: the test starts servers (tritonserver, a service process, or a gRPC server in
  this process on loopback). Every test that uses one of SERVER_FIXTURES is marked here; modules
  and tests that start their own servers carry the mark themselves. `-m "not integration"` runs
  the unit layer alone.
- `slow`: the test, without any server, first trains a network for a minute or more (the flow
  and SH-diffusion fixtures). `-m "not integration and not slow"` is the quick layer.
- `im2gps3k`: the test needs the Im2GPS3k splits (their labels, the val split's figures). Where
  they are absent it is skipped, naming GEOLOC_DATA_DIR; under CI (CI=true, as .ci/run runs) it
  errors instead, since CI must run them. Tests that only need some photos use `photos` instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from geoloc.common.paths import DATA_DIR_ENV, data_root
from geoloc.common.ports import free_port
from geoloc.experts import EXPERT_SERVICES
from tests.photos import write_photos
from tests.servers import start_embedding_service, start_service, stop, wait_for_health

IM2GPS3K_MISSING = (
    f"needs the Im2GPS3k splits: set {DATA_DIR_ENV} to a folder holding im2gps3k/train and "
    f"im2gps3k/val (not found under {{root}})"
)
# The session's server fixtures below: a test whose fixture closure holds one is an integration test.
SERVER_FIXTURES = frozenset({"triton", "embedding_address", "embedding_stub", "experts", "orchestrator_address"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "integration: starts servers (tritonserver, service processes, or an "
        "in-process gRPC server on loopback); deselect with -m 'not integration'",
    )
    config.addinivalue_line(
        "markers", "slow: trains a network for a minute or more first (no server); deselect with -m 'not slow'"
    )
    config.addinivalue_line(
        "markers",
        f"im2gps3k: needs the Im2GPS3k splits under ${DATA_DIR_ENV}; skipped where "
        "they are absent, an error under CI=true",
    )


def im2gps3k_present() -> bool:
    split = data_root() / "im2gps3k"
    return all((split / name / "labels.csv").is_file() for name in ("train", "val"))


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks the tests using a server fixture `integration`; skips the `im2gps3k` ones where the
    splits are absent (outside CI: under CI, pytest_runtest_setup fails them)."""
    missing = None if im2gps3k_present() else IM2GPS3K_MISSING.format(root=data_root())
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        if missing and not in_ci() and item.get_closest_marker("im2gps3k"):
            item.add_marker(pytest.mark.skip(reason=missing))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under CI an `im2gps3k` test without its data is an error, raised before any of its fixtures
    is set up (so no server is started for a test that cannot run)."""
    if in_ci() and item.get_closest_marker("im2gps3k") and not im2gps3k_present():
        reason = IM2GPS3K_MISSING.format(root=data_root())
        pytest.fail(f"CI (CI=true) requires the Im2GPS3k tests to run, not skip: {reason}", pytrace=False)


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> list[Path]:
    """16 real image files to decode, embed and locate: samples/kauai.jpg, then 15 synthetic scenes
    of varied kinds and sizes (tests/photos.py). Not Im2GPS photos: no data needed."""
    return write_photos(tmp_path_factory.mktemp("photos"), 16)


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


@pytest.fixture(scope="session")
def experts() -> Iterator[dict[str, str]]:
    """The gallery, sampler, tokens and text services, each as its own process with its shipped settings."""
    # The text expert reads with one onnxruntime thread: every process here shares two cores, and
    # a reader on both slows the embedding calls the orchestrator makes at the same time.
    started = {name: start_service(name, **({"threads": "1"} if name == "text" else {})) for name in EXPERT_SERVICES}
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
    patient = {
        "default_deadline_s": "60",
        "embed_timeout_s": "30",
        "gallery_timeout_s": "30",
        "sampler_timeout_s": "30",
        "tokens_timeout_s": "30",
        "text_timeout_s": "30",
    }
    addresses = {f"{name}_address": address for name, address in experts.items()}
    process, address = start_service("orchestrator", embedding_address=embedding_address, **addresses, **patient)
    try:
        wait_for_health(address, 120, process)
        yield address
    finally:
        stop(process)
