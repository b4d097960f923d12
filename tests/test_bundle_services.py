"""Each service that loads its models from a bundle checks it itself (artifacts/bundles.py): it serves
from a good bundle, and refuses to start, saying why, when its file changed since the bundle was
built or when the bundle is for another backbone, width or preprocessing. Real servers on
loopback, in this process; the bundle is the shipped models' (`geoloc bundle build`)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import grpc
import pytest

from geoloc.artifacts.bundles import BUNDLE_FILE, Bundle, BundleError
from geoloc.common.paths import MODEL_REPOSITORY, MODELS_DIR
from geoloc.common.server import serving
from geoloc.common.settings import SettingsError, load_settings
from geoloc.embedding.config import EmbeddingSettings
from geoloc.embedding.server import EmbeddingServicer, embedding_spec
from geoloc.gallery.config import GallerySettings
from geoloc.gallery.server import GalleryServicer, gallery_spec
from geoloc.orchestrator.config import OrchestratorSettings
from geoloc.orchestrator.server import OrchestratorServicer, orchestrator_spec
from geoloc.sampler.config import SamplerSettings
from geoloc.sampler.server import SamplerServicer, sampler_spec
from geoloc.tokens.config import TokensSettings
from geoloc.tokens.server import TokensServicer, tokens_spec
from geoloc.training.bundle import build_bundle
from geoloc.v1 import tokens_pb2, tokens_pb2_grpc
from tests.servers import made_up_embedding, pooled_feature, small_gallery

pytestmark = pytest.mark.integration  # real servers on loopback
# Served on a free port, no /metrics, logging only what goes wrong.
QUIET = {"port": 0, "metrics_port": None, "log_level": "warning"}

MODEL = "efficientnet_lite2"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bundles") / "default"
    build_bundle(root, MODEL, MODEL_REPOSITORY, MODELS_DIR)
    return root


def edited(bundle: Path, folder: Path, edit) -> Path:
    """A copy of `bundle` whose bundle.json `edit` changed (the files, and so their hashes, untouched)."""
    copy = folder / "edited"
    shutil.copytree(bundle, copy)
    record = json.loads((copy / BUNDLE_FILE).read_text())
    edit(record)
    (copy / BUNDLE_FILE).write_text(json.dumps(record))
    return copy


def start(settings, spec) -> None:
    """Serves `spec` until its warm-up is done; raises what the warm-up raised."""

    async def scenario():
        async with serving(settings, [spec], ready_timeout_s=240):
            pass

    asyncio.run(scenario())


def for_another_backbone(record: dict) -> None:
    record["backbone"].update(name="clip-vit-l14", dimension=768)


def test_the_token_decoder_serves_from_a_bundle_as_from_its_own_file(bundle):
    own = TokensSettings(**QUIET)
    from_bundle = TokensSettings(**QUIET, bundle=bundle)
    request = tokens_pb2.DecodeRequest(embedding=made_up_embedding(pooled_feature(4)))

    async def decode(settings):
        async with serving(settings, [tokens_spec(TokensServicer(settings))]) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                return await tokens_pb2_grpc.TokensServiceStub(channel).Decode(request, timeout=60)

    assert asyncio.run(decode(own)).cells == asyncio.run(decode(from_bundle)).cells


@pytest.mark.parametrize(
    ("service", "settings_class", "spec_of"),
    [
        ("token decoder", TokensSettings, lambda s: tokens_spec(TokensServicer(s))),
        ("flow sampler", SamplerSettings, lambda s: sampler_spec(SamplerServicer(s))),
    ],
)
def test_an_expert_refuses_a_bundle_for_another_backbone(bundle, tmp_path, service, settings_class, spec_of):
    settings = settings_class(**QUIET, bundle=edited(bundle, tmp_path, for_another_backbone))
    with pytest.raises(
        BundleError,
        match=f"the {service} takes 1280-d efficientnet-lite2 features; the bundle .* is "
        "for 768-d clip-vit-l14 features",
    ):
        start(settings, spec_of(settings))


def test_the_gallery_refuses_a_head_changed_since_the_bundle_was_built(bundle, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(bundle, changed)
    head = changed / Bundle.read(changed).files["gallery"]
    head.write_bytes(head.read_bytes() + b"\0")
    gallery_dir = small_gallery(tmp_path, 500)
    for root, problem in ((changed, "head.pt: changed since the bundle was built"), (bundle, None)):
        settings = GallerySettings(**QUIET, bundle=root, gallery_dir=gallery_dir, build_if_missing=False)
        if problem is None:
            start(settings, gallery_spec(GalleryServicer(settings)))
            continue
        with pytest.raises(BundleError, match=problem):
            start(settings, gallery_spec(GalleryServicer(settings)))


def test_the_orchestrator_refuses_a_bundle_without_its_fusion(bundle, tmp_path):
    settings = OrchestratorSettings(**QUIET, bundle=edited(bundle, tmp_path, lambda r: r["files"].pop("fusion")))
    with pytest.raises(BundleError, match="holds no fusion file"):
        start(settings, orchestrator_spec(OrchestratorServicer(settings)))


def test_the_embedding_service_refuses_a_bundle_whose_backbone_triton_does_not_serve(triton, bundle, tmp_path):
    def other_crop(record: dict) -> None:
        record["backbone"]["preprocessing"]["preprocess_resample"] = "nearest"

    settings = EmbeddingSettings(**QUIET, triton_url=triton.grpc_url, bundle=edited(bundle, tmp_path, other_crop))
    with pytest.raises(BundleError, match="not the backbone of the bundle .*preprocessing"):
        start(settings, embedding_spec(EmbeddingServicer(settings)))
    good = EmbeddingSettings(**QUIET, triton_url=triton.grpc_url, bundle=bundle)
    start(good, embedding_spec(EmbeddingServicer(good)))


def test_a_bundle_beside_a_file_setting_it_replaces_is_refused_by_name(bundle, monkeypatch):
    monkeypatch.setenv("GEOLOC_TOKENS_BUNDLE", str(bundle))
    monkeypatch.setenv("GEOLOC_TOKENS_CHECKPOINT", str(MODELS_DIR / "tokens" / "decoder.pt"))
    with pytest.raises(SettingsError, match="bundle replaces checkpoint: set one or the other"):
        load_settings(TokensSettings)


def test_a_folder_that_is_not_a_bundle_is_named(tmp_path):
    with pytest.raises(BundleError, match="not a model bundle"):
        Bundle.read(tmp_path)
