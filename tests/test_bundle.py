"""Model bundles (issue 21): `geoloc bundle build|verify` over the shipped models and the default
backbone, and bundles that must be refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from geoloc.cli import main
from geoloc.common.paths import MODEL_REPOSITORY, MODELS_DIR
from geoloc.evaluation.csvio import InputError
from geoloc.training.bundle import BUNDLE_FILE, build_bundle, verify_bundle

MODEL = "efficientnet_lite2"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bundles") / "default"
    assert main(["bundle", "build", "--out", str(root)]) == 0
    return root


def test_the_shipped_models_build_into_a_bundle_that_verifies(bundle, tmp_path):
    manifest = json.loads((bundle / BUNDLE_FILE).read_text())
    assert manifest["backbone"]["name"] == "efficientnet-lite2" and manifest["backbone"]["dimension"] == 1280
    assert manifest["backbone"]["preprocessing"]["preprocess_crop"] == "padded_center_crop"
    assert set(manifest["files"]) == {"triton_model", "gallery", "flow", "sh", "tokens", "fusion"}
    for role in ("gallery", "flow", "sh", "tokens"):  # each checkpoint with its manifest
        assert (bundle / manifest["files"][role]).with_suffix(".json").is_file(), role
    assert (bundle / "model_repository" / MODEL / "config.pbtxt").is_file()
    assert verify_bundle(bundle) == []
    again = build_bundle(tmp_path / "again", MODEL, MODEL_REPOSITORY, MODELS_DIR)
    assert again["version"] == manifest["version"]  # the same bytes, the same version


def test_a_changed_missing_or_added_file_is_named(bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    (copy / "experts" / "sampler" / "sh.pt").write_bytes(b"not the checkpoint")
    (copy / "experts" / "tokens" / "decoder.json").unlink()
    (copy / "notes.txt").write_text("extra")
    problems = verify_bundle(copy)
    assert problems == [
        "experts/sampler/sh.pt: changed since the bundle was built "
        f"(sha256 {problems[0].split('sha256 ')[1][:12]}, recorded {problems[0].split('recorded ')[1][:12]})",
        "experts/tokens/decoder.json: missing",
        "notes.txt: not part of the bundle as built",
    ]
    assert main(["bundle", "verify", str(copy)]) == 1
    assert verify_bundle(tmp_path / "nowhere") == [f"{tmp_path / 'nowhere'}: no {BUNDLE_FILE}"]
    record = json.loads((copy / BUNDLE_FILE).read_text())
    del record["files"]
    (copy / BUNDLE_FILE).write_text(json.dumps(record))  # read as the services read it: refused, not a KeyError
    assert verify_bundle(copy) == [f"{copy / BUNDLE_FILE}: not a readable bundle record ('files')"]


def test_an_expert_of_another_backbone_is_refused(tmp_path):
    from geoloc.gallery.heads import ImageMLP, save_head

    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models)
    save_head(models / "gallery" / f"{MODEL}_head.pt", ImageMLP(768, 16), 10.0, "clip-vit-l14")
    with pytest.raises(InputError, match="takes 768-d clip-vit-l14 features; the bundle's backbone serves 1280-d"):
        build_bundle(tmp_path / "bundle", MODEL, MODEL_REPOSITORY, models)
    assert not (tmp_path / "bundle").exists()


def test_a_bundle_is_built_into_a_new_folder_only(bundle, capsys):
    assert main(["bundle", "build", "--out", str(bundle)]) == 2
    assert "exists: a bundle is built into a new folder" in capsys.readouterr().err
