"""Every trained head shipped in models/ comes with a manifest that matches its bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[1] / "models"
MANIFESTS = sorted(MODELS.glob("*/*.json"))


def test_every_checkpoint_has_a_manifest():
    checkpoints = sorted(MODELS.glob("*/*.pt"))
    assert checkpoints and [c.with_suffix(".json") for c in checkpoints] == MANIFESTS


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_manifest_names_the_files_hash_data_command_and_val_figures(manifest: Path):
    fields = json.loads(manifest.read_text())
    checkpoint = manifest.parent / fields["file"]
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == fields["sha256"]
    assert "im2gps3k/train" in fields["data"]["train"] or fields["data"]["train"].endswith("features)")
    assert "im2gps3k/val" in fields["data"]["val"]
    assert fields["command"].startswith("geoloc train ")
    assert fields["val_top1"]["n"] == 360 and 0 < fields["val_top1"]["geoscore"] < 5000
