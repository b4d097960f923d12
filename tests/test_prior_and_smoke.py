"""The prior baseline (one vote per photographer) and the `geoloc smoke` main job (real Triton included)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geoloc.cli import main
from geoloc.evaluation.dataset import load_split
from geoloc.evaluation.prior import PriorPredictions, densest_place, photographer_weights
from geoloc.geo.sphere import haversine_km
from tests.photos import write_split


def test_one_photographer_burst_does_not_outvote_many_photographers(tmp_path):
    rng = np.random.default_rng(0)
    # One author with 50 photos around Reykjavik; 20 authors with one photo each around Paris.
    burst = [(f"b{i}.jpg", 64.1 + rng.normal(0, 0.1), -21.9 + rng.normal(0, 0.1), "traveller") for i in range(50)]
    crowd = [(f"c{i}.jpg", 48.86 + rng.normal(0, 0.3), 2.35 + rng.normal(0, 0.3), f"a{i}") for i in range(20)]
    split = load_split(write_split(tmp_path / "train", burst + crowd))

    weights = photographer_weights(split)
    assert weights[:50] == pytest.approx(np.full(50, 1 / 50))
    assert weights[50:] == pytest.approx(np.ones(20))
    lat, lon = densest_place(split)
    assert haversine_km(lat, lon, 48.86, 2.35) < 50


def test_prior_predictions_give_every_image_the_same_guess(tmp_path):
    train = load_split(write_split(tmp_path / "train", [("t1.jpg", 10.0, 20.0, "a"), ("t2.jpg", 10.1, 20.1, "b")]))
    val = load_split(write_split(tmp_path / "val", [("v1.jpg", 0.0, 0.0, "c"), ("v2.jpg", 5.0, 5.0, "d")]))
    source = PriorPredictions(train)
    guesses = {(p.lat, p.lon) for p in source.predict(val.images)}
    assert len(guesses) == 1
    ((lat, lon),) = guesses
    assert haversine_km(lat, lon, 10.05, 20.05) < 10


def test_eval_prior_from_cli_writes_a_report(tmp_path, capsys):
    train = write_split(tmp_path / "train", [("t1.jpg", 10.0, 20.0, "a"), ("t2.jpg", 10.0, 20.0, "b")])
    val = write_split(tmp_path / "val", [("v1.jpg", 10.0, 20.0, "c"), ("v2.jpg", 10.0, 21.0, "d")])
    report = tmp_path / "out" / "prior.json"
    assert main(["eval", "--data", str(val), "--prior-from", str(train), "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    # v1 is at the prior (0 km); v2 is 1 degree of longitude away at lat 10: 109.5 km.
    assert data["metrics"]["accuracy_within_km"] == {"1": 0.5, "25": 0.5, "200": 1.0, "750": 1.0, "2500": 1.0}
    assert data["source"].startswith("prior:")


@pytest.mark.im2gps3k  # the prior scored on the val split, from the train split
@pytest.mark.integration  # geoloc smoke starts Triton and servers
def test_smoke_checks_the_runtime_and_scores_the_prior_on_val(tmp_path, capsys):
    report = tmp_path / "prior.json"
    assert main(["smoke", "--report", str(report), "--photos", "3"]) == 0
    out = capsys.readouterr().out
    assert "health: SERVING" in out
    assert out.count("efficientnet-lite2 v1 1280-d") == 3 and "cosine between different photos" in out
    assert "grpc.health.v1.Health" in out and "grpc.reflection.v1alpha.ServerReflection" in out
    assert 'grpc_code="OK",grpc_method="Check"' in out
    data = json.loads(report.read_text())
    assert data["split"] == "val" and data["n"] == 360 and data["n_missing"] == 0
