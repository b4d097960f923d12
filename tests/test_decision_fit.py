"""The decision's fit on synthetic experts: it reads the best guesses and radii serving gives, it
weighs an informative expert over a misleading one, and the photo weightings count as stated."""

from __future__ import annotations

import numpy as np
import pytest

from geoloc.geo.sphere import haversine_km, unit_to_latlon
from geoloc.orchestrator.decision import radius_holding_mass
from geoloc.orchestrator.fusion import PRIOR, FusionParameters, Prior, fuse
from geoloc.training.decision_fit import (
    best_guess_distances,
    best_guess_xyz,
    decision_tables,
    fit_decision,
    mass_levels,
    with_decision,
)
from geoloc.training.expert_outputs import photo_answers
from tests.synthetic_experts import GALLERY, informative_and_misleading

PRIORS = {b: Prior(GALLERY, b) for b in (200.0, 800.0)}


def synthetic_case(n: int):
    outputs, truth, _ = informative_and_misleading(n)
    return outputs, truth


def test_the_fit_reads_off_the_best_guesses_and_radii_that_serving_gives():
    outputs, truth = synthetic_case(12)
    params = FusionParameters(
        weights={"gallery": 0.3, "tokens": 0.2, PRIOR: 0.5},
        bandwidth_km={"gallery": 100.0, "tokens": 100.0, PRIOR: 800.0},
        uniform_weight=0.1,
    )
    tables = decision_tables(outputs, truth, params, PRIORS)
    rows = np.arange(len(truth))
    lat, lon = unit_to_latlon(best_guess_xyz(params, tables, rows))
    distances = best_guess_distances(outputs, params, PRIORS[800.0], tables, rows)
    for row in rows:
        served = fuse(photo_answers(outputs, row), params, PRIORS[800.0])
        assert haversine_km(lat[row], lon[row], served.best_guess.lat_deg, served.best_guess.lon_deg) < 1e-6
        assert radius_holding_mass(distances[row], 0.1, 0.9) == pytest.approx(served.radius_90_km, rel=1e-9)


def test_the_fit_trusts_the_informative_expert_and_not_the_misleading_one():
    outputs, truth = synthetic_case(80)
    params = FusionParameters(
        weights={"gallery": 1.0, "tokens": 1.0, PRIOR: 1.0},
        bandwidth_km={"gallery": 150.0, "tokens": 150.0, PRIOR: 800.0},
    )
    tables = decision_tables(outputs, truth, params, PRIORS)
    fit = fit_decision(tables, np.ones(len(truth)))
    assert fit.weights["gallery"] > 0.5 and fit.weights["tokens"] < fit.weights["gallery"] / 4, fit
    fitted = with_decision(params, fit, 0.0)
    lat, lon = unit_to_latlon(best_guess_xyz(fitted, tables, np.arange(len(truth))))
    assert np.median(haversine_km(lat, lon, truth[:, 0], truth[:, 1])) < 300


def test_fitted_levels_make_the_radii_hold_what_they_state_on_the_photos_fitted():
    """Per photo the truth lies at some mass level of its answer; the levels stated as 50 % and 90 %
    are those levels' quantiles, so the radii at them hold the truth for 50 % and 90 % of the photos."""
    rng = np.random.default_rng(5)
    distances = [rng.exponential(scale, 500) for scale in rng.uniform(100, 3000, 200)]
    errors = rng.exponential(2000, 200)
    levels = mass_levels(distances, errors, np.ones(200), 0.1)
    held = [np.mean(errors <= [radius_holding_mass(d, 0.1, m) for d in distances]) for m in levels]
    assert held == pytest.approx([0.5, 0.9], abs=0.01)
    assert 0 < levels[0] < levels[1] < 1
