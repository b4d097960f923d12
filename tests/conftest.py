"""Shared fixtures, each started once per test session on loopback: a real tritonserver with the
default backbone, the embedding service in its own process in front of it, the gallery, sampler
and tokens experts as their own processes, and the orchestrator as its own process over them all.

These processes are shared by every test file that asks for them: a test that kills, slows or
reconfigures a service starts its own instead.

Every test is in one of three tiers, which .ci/run runs in this order, stopping at the first
that fails:

- unit (`-m "not integration and not slow"`): no server and no long training: lint, the layers,
  the maths, the CLIs' arguments, the manifests: about 2 minutes on two cores.
- integration (`-m "integration and not slow"`): the test starts servers: tritonserver, a service
  process, a gRPC server in this process on loopback, or a suite.
- slow (`-m slow`): a minute or more a module or a test: training networks (in this process or
  data-parallel), cross-validation and out-of-fold answers, the fast fusion against its slow
  reference, the whole chain, the traced whole suite, the shipped models' pinned answers.

A test's tier is the highest of: its module's in TIERS below (every test module must be there:
collection fails on one that is not, so a new test file is placed when it is added), its own
`integration` or `slow` mark, and `integration` when its fixtures include one of
SERVER_FIXTURES. The markers (pyproject.toml) are what `-m` selects; the third, `im2gps3k`, marks
a test that needs the Im2GPS3k splits (their labels, the val split's figures): where they are
absent it is skipped, naming GEOLOC_DATA_DIR; under CI (CI=true, as .ci/run runs) it errors
instead, since CI must run them. Tests that only need some photos use `photos` instead.
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

TIER_NAMES = ("unit", "integration", "slow")
# Each test module's tier (module docstring), by file name: a test in it may rise above it by its
# own mark or by a server fixture, never fall below it. A module that takes more than about 25 s
# alone on two quiet cores, or trains in a process group, is slow.
TIERS = {
    # unit: no server, nothing trained for more than seconds
    "test_api_protos": "unit",
    "test_artifacts": "unit",
    "test_batching": "unit",  # three tests serve the sampler and tokens: integration by their marks
    "test_bundle": "unit",
    "test_decision": "unit",
    "test_decision_fit": "unit",
    "test_evaluation": "unit",
    "test_exif": "unit",
    "test_experts": "unit",
    "test_feature_pipeline": "unit",  # marks of its own: two slow tests, one on a real Triton
    "test_flow_matching": "unit",  # the tests of its trained fixture are slow by their marks
    "test_folds": "unit",
    "test_fusion": "unit",
    "test_fusion_fit": "unit",
    "test_gallery_index": "unit",
    "test_gallery_training": "unit",
    "test_geodesy": "unit",
    "test_judge_answer": "unit",
    "test_k8s_manifests": "unit",
    "test_layers": "unit",
    "test_lint": "unit",
    "test_load": "unit",
    "test_mapped_features": "unit",
    "test_model_repository": "unit",  # the tests that start Triton are integration by their marks
    "test_ops_cli": "unit",
    "test_photos": "unit",
    "test_places": "unit",
    "test_prior_and_smoke": "unit",  # `geoloc smoke` is integration by its mark
    "test_promql": "unit",
    "test_sample_density": "unit",
    "test_sampler_checkpoint": "unit",
    "test_settings": "unit",
    "test_sh_diffusion": "unit",  # the tests of its trained fixture are slow by their marks
    "test_shipped_models": "unit",
    "test_spherical_harmonics": "unit",
    "test_suite": "unit",  # the plan as functions; the real suites are integration by their marks
    "test_tesseract": "unit",
    "test_text_evidence": "unit",
    "test_token_decoder": "unit",
    "test_token_training": "unit",
    "test_tracing": "unit",  # the exports from service processes are integration by their marks
    "test_triton_launcher": "unit",  # the tests that start tritonserver are integration by their marks
    "test_world_map": "unit",
    # integration: servers on loopback
    "test_admission": "integration",
    "test_bad_input": "integration",
    "test_bundle_services": "integration",
    "test_embedding_service": "integration",
    "test_faults": "integration",
    "test_gallery_service": "integration",
    "test_judge_replay": "integration",
    "test_judge_service": "integration",
    "test_locate_cli": "integration",
    "test_orchestrator": "integration",
    "test_sampler_service": "integration",
    "test_served_equals_fitted": "integration",
    "test_server_runtime": "integration",
    "test_text_queries": "integration",
    "test_text_service": "integration",
    "test_tls": "integration",
    "test_tokens_service": "integration",
    "test_validation_fuzz": "integration",
    # slow: a minute or more a module, servers of their own or none (so that the session's servers,
    # which the integration tier starts, are not started a second time)
    "test_cross_validation": "slow",
    "test_data_parallel": "slow",  # two processes in a gloo group train each expert
    "test_fusion_reference": "slow",  # against the slow float64 reference, seconds a case
    "test_observability": "slow",
    "test_out_of_fold": "slow",
    "test_val_answers": "slow",
    "test_whole_chain": "slow",
}
TIER_RECORD_ENV = "GEOLOC_TIER_RECORD"


def im2gps3k_present() -> bool:
    split = data_root() / "im2gps3k"
    return all((split / name / "labels.csv").is_file() for name in ("train", "val"))


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks each test with its tier (module docstring); skips the `im2gps3k` ones where the
    splits are absent (outside CI: under CI, pytest_runtest_setup fails them)."""
    unplaced = sorted({item.path.name for item in items if TIERS.get(item.path.stem) not in TIER_NAMES})
    if unplaced:
        raise pytest.UsageError(
            f"test modules in no tier: {', '.join(unplaced)}; place each in TIERS in tests/conftest.py "
            f"as {' or '.join(map(repr, TIER_NAMES))}"
        )
    missing = None if im2gps3k_present() else IM2GPS3K_MISSING.format(root=data_root())
    for item in items:
        tier = TIERS[item.path.stem]
        if tier == "slow":
            item.add_marker(pytest.mark.slow)
        if tier == "integration" or SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        if missing and not in_ci() and item.get_closest_marker("im2gps3k"):
            item.add_marker(pytest.mark.skip(reason=missing))


_deselected: list[str] = []


def pytest_deselected(items: list[pytest.Item]) -> None:
    _deselected.extend(item.nodeid for item in items)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Where $GEOLOC_TIER_RECORD is set (.ci/run sets it for each tier), writes the node ids this run
    selected to $GEOLOC_TIER_RECORD.selected and every one it collected to .collected, one a line,
    so that .ci/run can check that its tiers together run every test once."""
    record = os.environ.get(TIER_RECORD_ENV)
    if not record:
        return
    selected = [item.nodeid for item in session.items]
    Path(f"{record}.selected").write_text("".join(f"{node}\n" for node in selected))
    Path(f"{record}.collected").write_text("".join(f"{node}\n" for node in sorted(selected + _deselected)))


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
