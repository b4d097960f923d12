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
def test_the_manifest_names_the_files_hash_data_command_and_cv_figures(manifest: Path):
    """Each expert was trained on all 1,902 train + val photos by `geoloc cv --ship`, and carries
    the CV figures of its own answer: the same row as the shipped cv.json's."""
    fields = json.loads(manifest.read_text())
    checkpoint = manifest.parent / fields["file"]
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == fields["sha256"]
    assert "train + val (1902 photos, 119 photographers)" in fields["data"]["train"]
    assert fields["command"].startswith("geoloc cv") and "--ship" in fields["command"]
    expert = {"efficientnet_lite2_head.json": "gallery", "decoder.json": "tokens"}.get(manifest.name, manifest.stem)
    figures = json.loads((MODELS / "fusion" / "cv.json").read_text())["chosen"]["summary"]["answers"]
    assert fields["cv_top1"] == figures[expert] and fields["cv_constant"] == figures["constant"]
    assert 0 < fields["cv_top1"]["geoscore"]["mean"] < 5000


def shipped_fusion():
    from geoloc.orchestrator.parameters import load_fusion

    path = MODELS / "fusion" / "fusion.json"
    return load_fusion(path), json.loads(path.read_text())  # load_fusion refuses a file not matching its version


def test_the_shipped_fusion_is_the_one_its_cross_validation_figures_describe():
    """The manifest's photographer-grouped CV (K >= 5, all 1,902 train + val photos) is of this
    fit's procedure: the parameters it records are the file's own, fitted for the shipped experts."""
    from geoloc.training.expert_outputs import models_fingerprint

    fitted, fields = shipped_fusion()
    assert fitted.version == fields["version"] and fields["command"].startswith("geoloc cv")
    cv = fields["cv"]
    assert len(cv["fold_sizes"]) >= 5 and sum(cv["fold_sizes"]) == 1902
    recorded = fields["fitted"]
    assert recorded["weights"] == fitted.parameters.weights
    assert recorded["bandwidth_km"] == fitted.parameters.bandwidth_km
    assert recorded["uniform_weight"] == fitted.parameters.uniform_weight
    assert recorded["radius_levels"] == fitted.parameters.radius_levels
    # The experts that answer every photo and the prior share 1; an add-on (the text expert) is
    # weighed beside them, and counts only where it says something.
    add_ons = recorded["add_ons"]
    assert abs(sum(w for e, w in fitted.parameters.weights.items() if e not in add_ons) - 1) < 1e-6
    assert fields["experts"]["shipped_models_fingerprint"] == models_fingerprint()


def test_the_orchestrator_asks_the_experts_what_the_shipped_fusion_was_fitted_on():
    """Samples, steps, beam width and k change what each expert answers, and so what the fusion's
    bandwidths, weights and radius levels were fitted to: the orchestrator's defaults must be those."""
    from geoloc.training.expert_outputs import ExpertRequests

    _, fields = shipped_fusion()
    assert fields["experts"]["requests"] == ExpertRequests().__dict__


def test_under_cv_the_radii_hold_what_they_state_with_every_subset_of_experts():
    """Issue 18's calibration: the 90 % radius holds the truth for 85-95 % of CV photos and the 50 %
    one for 45-55 %, with all experts and with each subset of them (levels fitted per subset, on the
    photos where the subset's experts all said something). A set with the text expert is measured
    on the few photos with text, so its band is widened by 2.5 binomial standard errors of its count."""
    from geoloc.orchestrator.fusion import subset_key
    from geoloc.training.cross_validation import expert_subsets

    fitted, fields = shipped_fusion()
    coverage = fields["cv"]["coverage"]
    subsets = {subset_key(s) for s in expert_subsets(["gallery", "flow", "sh", "tokens", "text"])}
    assert set(coverage) == subsets == set(fitted.parameters.radius_levels)
    for subset, held in coverage.items():
        for figure, stated in (("within_r90", 0.9), ("within_r50", 0.5)):
            band = max(0.05, 2.5 * (stated * (1 - stated) / held["photos"]) ** 0.5)
            assert abs(held[figure]["mean"] - stated) <= band, (subset, figure, held)


GUARDED = ("geoscore", "acc_200km", "acc_750km", "acc_2500km")
# Where the shipped fusion's CV figure is still below the constant's (issue 18, declared blocked).
# A figure that rises to the constant's fails its test, so that it leaves this list.
BELOW_THE_CONSTANT = {
    "acc_2500km": "CV 36.2 % within 2500 km against the constant's 37.7 % (issue 18 blocked)",
}


@pytest.mark.parametrize("figure", GUARDED)
def test_under_cv_the_fused_answer_is_at_least_the_constant_guess(figure: str):
    """Issue 18's guard: the fused best guess's CV mean at least the constant's (the GPS gallery's
    densest point), in GeoScore and within 200, 750 and 2500 km."""
    _, fields = shipped_fusion()
    fused, constant = fields["cv"]["answers"]["fused"], fields["cv"]["answers"]["constant"]
    if figure in BELOW_THE_CONSTANT:
        assert fused[figure]["mean"] < constant[figure]["mean"], "no longer below: take it out of BELOW_THE_CONSTANT"
        pytest.xfail(BELOW_THE_CONSTANT[figure])
    assert fused[figure]["mean"] >= constant[figure]["mean"]


def test_under_cv_the_fused_answer_with_the_text_expert_is_at_least_without_it_on_every_figure():
    """Issue 19's guard, on the CV figures shipped beside the fusion (models/fusion/cv.json): with the
    text expert, every accuracy, the GeoScore and the median error are at least as good as the fusion
    it is fitted beside, on all photos, on those with text and on those without."""
    from geoloc.training.cv_reports import at_least_as_good

    figures = json.loads((MODELS_DIR / "fusion" / "cv.json").read_text())["text"]["answers"]
    for scope in ("", " · with text", " · without text"):
        held = at_least_as_good(figures[f"fused{scope}"], figures[f"fused without text{scope}"])
        assert {"geoscore", "median_km", "acc_25km", "acc_2500km"} <= set(held)
        assert all(held.values()), (scope, held)
