"""The decision: expected GeoScore against Monte Carlo, regional maxima against brute force, radii
with the uniform floor exact, and the best guess falling back to the prior's when experts weigh little."""

from __future__ import annotations

import numpy as np
import pytest

from geoloc.experts import EXPERTS
from geoloc.geo.geoscore import geoscore_of_km
from geoloc.geo.mixtures import vmf_mixture_sample
from geoloc.geo.sphere import EARTH_RADIUS_KM, haversine_km, latlon_to_unit
from geoloc.orchestrator.decision import (
    FixedCandidates,
    expected_geoscore,
    fibonacci_lattice,
    radius_holding_mass,
    uniform_cap_mass,
)
from geoloc.orchestrator.fusion import ExpertPoints, FusionParameters, Prior, fuse, kappa_for_half_mass_km

RNG = np.random.default_rng(0)
# Where photos are taken: most around central Europe, the rest anywhere between 60° S and 70° N.
PRIOR = Prior(
    np.concatenate(
        [
            np.stack([RNG.normal(48, 5, 1800), RNG.normal(8, 8, 1800)], axis=1),
            np.stack([RNG.uniform(-60, 70, 1200), RNG.uniform(-180, 180, 1200)], axis=1),
        ]
    ),
    800.0,
)


def monte_carlo_geoscore(centres, weights, radius_km, candidates, n=200_000, seed=1) -> np.ndarray:
    draws = vmf_mixture_sample(centres, weights, kappa_for_half_mass_km(radius_km), n, np.random.default_rng(seed))
    angle = np.arccos(np.clip(candidates @ draws.T, -1, 1))
    return geoscore_of_km(angle * EARTH_RADIUS_KM).mean(axis=1)


@pytest.mark.parametrize("radius_km", [3.0, 200.0, 2500.0])
def test_the_tabulated_expected_geoscore_is_monte_carlos(radius_km):
    """Two kernels of one radius; candidates at their centres, near them and far away. Monte Carlo's
    own error at 200,000 draws is about 3 points of 5000."""
    centres = latlon_to_unit(np.array([35.0, -20.0]), np.array([139.0, -60.0]))
    weights, radius = np.array([0.7, 0.3]), np.full(2, radius_km)
    rng = np.random.default_rng(2)
    candidates = np.concatenate([centres, latlon_to_unit(rng.uniform(-80, 80, 30), rng.uniform(-180, 180, 30))])
    candidates = np.concatenate([candidates, latlon_to_unit(np.array([35.05, 35.3]), np.array([139.0, 139.4]))])
    exact = expected_geoscore(centres, weights, radius, candidates)
    assert exact == pytest.approx(monte_carlo_geoscore(centres, weights, radius, candidates), abs=15.0)


def test_regional_maxima_are_the_brute_force_ones():
    """Random places and scores: a candidate is a regional maximum iff no other within region_km
    scores more (ties: the earlier wins), whether it is one of the fixed candidates or the answer's own."""
    rng = np.random.default_rng(3)
    places = latlon_to_unit(rng.uniform(-90, 90, 900), rng.uniform(-180, 180, 900))
    scores = rng.integers(0, 50, 900).astype(float)  # ties on purpose
    fixed = FixedCandidates(places[:700], 1500.0)
    found = fixed.regional_maxima(places, scores)
    near = places @ places.T >= np.cos(1500.0 / EARTH_RADIUS_KM)
    index = np.arange(900)
    better = (scores[None, :] > scores[:, None]) | (
        (scores[None, :] == scores[:, None]) & (index[None, :] < index[:, None])
    )
    brute = np.flatnonzero(~(near & better).any(axis=1))
    assert sorted(found) == sorted(brute) and len(brute) > 5
    assert list(scores[found]) == sorted(scores[found], reverse=True)


def test_the_radius_holds_its_mass_with_the_uniform_floor_counted_exactly():
    """Draws of a tight kernel at the point, a 30 % floor: below the kernel's reach only the floor's
    cap adds, so the 90 % radius is where 0.7 + 0.3·(1 − cos θ)/2 = 0.9."""
    distances = np.random.default_rng(4).uniform(0, 50, 10_000)
    r90 = radius_holding_mass(distances, 0.3, 0.9)
    assert 0.7 + 0.3 * uniform_cap_mass(r90) == pytest.approx(0.9, abs=1e-6)
    assert radius_holding_mass(distances, 0.3, 0.5) < 50  # 0.7 of the kernel reaches half before it ends
    assert radius_holding_mass(distances, 0.0, 0.5) == pytest.approx(np.quantile(distances, 0.5), abs=0.1)


def radius_by_bisection(distances_km: np.ndarray, uniform_share: float, mass: float) -> float:
    """The smallest radius holding `mass`, found by bisecting on held(r), which rises with r."""
    d = np.sort(distances_km)

    def held(r: float) -> float:
        share = np.searchsorted(d, r, side="right") / len(d)
        return (1 - uniform_share) * share + uniform_share * float(uniform_cap_mass(r))

    low, high = 0.0, np.pi * EARTH_RADIUS_KM
    for _ in range(80):
        middle = (low + high) / 2
        low, high = (middle, high) if held(middle) < mass else (low, middle)
    return high


@pytest.mark.parametrize("seed", range(6))
def test_the_radius_holding_a_mass_is_the_one_a_bisection_finds(seed):
    """Draws bunched and spread, some at the very same distance, every floor share and mass."""
    rng = np.random.default_rng(seed)
    distances = np.concatenate([rng.exponential(50.0 * (seed + 1), 300), rng.uniform(0, 20_000, 40)])
    distances[:30] = distances[30]  # ties
    for share in (0.0, 1e-3, 0.02, 0.3, 0.9, 1.0):
        for mass in (0.01, 0.5, 0.9, 0.999):
            found = radius_holding_mass(distances, share, mass)
            if share > 0:
                assert found == pytest.approx(radius_by_bisection(distances, share, mass), abs=1e-6)
            held = (1 - share) * np.mean(distances <= found) + share * float(uniform_cap_mass(found))
            assert held >= mass - 1e-9


def parameters(prior_weight: float, expert_weight: float) -> FusionParameters:
    return FusionParameters(
        weights={**dict.fromkeys(EXPERTS, expert_weight), "prior": prior_weight},
        bandwidth_km={**dict.fromkeys(EXPERTS, 300.0), "prior": 800.0},
    )


def test_with_little_expert_weight_the_answer_is_the_priors_best_place_and_with_much_the_experts():
    """An expert sure of Tokyo: at 1 % of the weight it cannot move the prior's best place; at 60 %
    the best guess is Tokyo. The prior's best is checked against Monte Carlo over the whole lattice."""
    tokyo = [ExpertPoints("gallery", np.array([35.68]), np.array([139.69]), np.ones(1), np.zeros(1))]
    alone = fuse([], parameters(1.0, 0.0), PRIOR).best_guess
    weak = fuse(tokyo, parameters(0.99, 0.01), PRIOR).best_guess
    strong = fuse(tokyo, parameters(0.4, 0.6), PRIOR).best_guess
    assert haversine_km(weak.lat_deg, weak.lon_deg, alone.lat_deg, alone.lon_deg) < 1.0
    assert haversine_km(strong.lat_deg, strong.lon_deg, 35.68, 139.69) < 1.0
    lattice = fibonacci_lattice(4096)
    radius = np.full(len(PRIOR.centres), PRIOR.bandwidth_km)
    by_draws = monte_carlo_geoscore(PRIOR.centres, PRIOR.weights, radius, lattice, n=20_000)
    best = monte_carlo_geoscore(
        PRIOR.centres, PRIOR.weights, radius, latlon_to_unit(alone.lat_deg, alone.lon_deg)[None], n=20_000
    )
    assert best[0] >= by_draws.max() - 20.0  # within Monte Carlo's error of the best lattice point
