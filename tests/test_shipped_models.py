"""Every trained head shipped in models/ comes with a manifest that matches its bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from geoloc.common.paths import MODELS_DIR

MODELS = MODELS_DIR
MANIFESTS = sorted(p.with_suffix(".json") for p in MODELS.glob("*/*.pt"))


def test_every_checkpoint_has_a_manifest():
    assert MANIFESTS and all(m.exists() for m in MANIFESTS)


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_manifest_names_the_files_hash_data_command_and_val_figures(manifest: Path):
    fields = json.loads(manifest.read_text())
    checkpoint = manifest.parent / fields["file"]
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == fields["sha256"]
    assert "im2gps3k/train" in fields["data"]["train"] or fields["data"]["train"].endswith("features)")
    assert "im2gps3k/val" in fields["data"]["val"]
    assert fields["command"].startswith("geoloc train ")
    assert fields["val_top1"]["n"] == 360 and 0 < fields["val_top1"]["geoscore"] < 5000


def test_the_shipped_fusion_loads_matches_its_version_and_records_its_calibration_on_val():
    from geoloc.orchestrator.parameters import load_fusion

    path = MODELS / "fusion" / "fusion.json"
    fitted = load_fusion(path)  # refuses a file whose parameters do not match its version
    fields = json.loads(path.read_text())
    assert fitted.version == fields["version"] and fields["command"].startswith("geoloc train fusion")
    calibrated = fields["val_calibration"]["all experts"]
    assert calibrated["n"] == 360 and 0.85 <= calibrated["coverage_90"] <= 0.95
    assert 0.85 <= fields["val_calibration_2fold"]["coverage_90"] <= 0.95
    assert abs(sum(fitted.parameters.weights.values()) - 1) < 1e-6 and 0 <= fitted.parameters.uniform_weight < 1
