"""Fusion on synthetic mixtures: where the modes land, how much mass the radii hold, the prior's role."""

from __future__ import annotations

import numpy as np
import pytest

from geoloc.experts import EXPERTS
from geoloc.geo.mixtures import vmf_mixture_sample
from geoloc.geo.sphere import haversine_km, latlon_to_unit
from geoloc.geo.vmf import vmf_cap_mass
from geoloc.orchestrator.config import SHIPPED_FUSION
from geoloc.orchestrator.fusion import (
    ExpertPoints,
    FusionParameters,
    Prior,
    fuse,
    kappa_for_half_mass_km,
    sample_mixture,
)
from geoloc.orchestrator.parameters import load_fusion
from geoloc.training.fusion import mixing_weights

RNG = np.random.default_rng(0)
PRIOR = Prior(np.stack([RNG.uniform(-60, 70, 3000), RNG.uniform(-180, 180, 3000)], axis=1), 800.0)


def parameters(prior_weight: float = 0.0, bandwidth_km: float = 200.0, **weights) -> FusionParameters:
    return FusionParameters(
        weights={**{e: weights.get(e, 1.0) for e in EXPERTS}, "prior": prior_weight},
        bandwidth_km={**dict.fromkeys(EXPERTS, bandwidth_km), "prior": 800.0},
    )


def points(expert: str, lat, lon, weight=None, radius=None) -> ExpertPoints:
    lat, lon = np.atleast_1d(lat).astype(float), np.atleast_1d(lon).astype(float)
    weight = np.ones_like(lat) if weight is None else np.asarray(weight, float)
    radius = np.zeros_like(lat) if radius is None else np.asarray(radius, float)
    return ExpertPoints(expert, lat, lon, weight, radius)


def test_a_single_kernel_is_its_own_best_guess_and_its_radii_are_the_vmf_radii():
    answer = fuse([points("gallery", 35.0, 139.0)], parameters(), PRIOR)
    best = answer.best_guess
    assert haversine_km(best.lat_deg, best.lon_deg, 35.0, 139.0) < 0.5
    kappa = kappa_for_half_mass_km(np.array(200.0))
    assert abs(vmf_cap_mass(kappa, answer.radius_50_km) - 0.5) < 0.02
    assert abs(vmf_cap_mass(kappa, answer.radius_90_km) - 0.9) < 0.02
    assert answer.radius_50_km == pytest.approx(200.0, rel=0.05)


def test_four_symmetric_points_have_their_mode_at_the_centre():
    """Four kernels 150 km north, south, east and west of (0, 30): the mixture peaks at the centre."""
    d = 150.0 / 111.195
    answer = fuse([points("sh", [d, -d, 0, 0], [30, 30, 30 + d, 30 - d])], parameters(bandwidth_km=300.0), PRIOR)
    assert haversine_km(answer.best_guess.lat_deg, answer.best_guess.lon_deg, 0.0, 30.0) < 1.0


def test_the_radii_hold_the_stated_mass_of_a_two_place_mixture_within_two_percent():
    experts = [points("gallery", [48.85, 40.7], [2.35, -74.0], [0.7, 0.3]), points("tokens", 48.9, 2.4, radius=[5.0])]
    answer = fuse(experts, parameters(prior_weight=0.2), PRIOR)
    m = answer.mixture
    check = sample_mixture(m, 200_000, seed=99)  # independent of the answer's own draws
    best = latlon_to_unit(answer.best_guess.lat_deg, answer.best_guess.lon_deg)
    distance = np.arccos(np.clip(check @ best, -1, 1)) * 6371.0
    assert abs((distance <= answer.radius_50_km).mean() - 0.5) < 0.02
    assert abs((distance <= answer.radius_90_km).mean() - 0.9) < 0.02


def test_the_mixture_sampler_draws_a_kernel_with_the_exact_vmf_distribution():
    """Deciles of 1 − μ·x against the vMF's own: P(1 − μ·x ≤ a) = (1 − e^(−κa)) / (1 − e^(−2κ))."""
    kappa = float(kappa_for_half_mass_km(np.array(300.0)))
    mu = latlon_to_unit(10.0, 20.0)
    drawn = 1 - vmf_mixture_sample(mu[None], np.ones(1), np.array([kappa]), 200_000, np.random.default_rng(1)) @ mu
    p = np.array([0.1, 0.5, 0.9])
    exact = -np.log1p(-p * -np.expm1(-2 * kappa)) / kappa
    assert np.quantile(drawn, p) == pytest.approx(exact, rel=0.01)  # Monte Carlo error at 200,000 draws: ~0.3 %


def test_hypotheses_are_distinct_places_with_their_shares_and_the_densest_first():
    experts = [points("gallery", [48.85, 35.68, -33.87], [2.35, 139.69, 151.21], [0.5, 0.3, 0.2])]
    answer = fuse(experts, parameters(), PRIOR, top_k=5)
    places = [(h.lat_deg, h.lon_deg) for h in answer.hypotheses]
    assert len(places) == 3
    assert haversine_km(*places[0], 48.85, 2.35) < 1
    shares = [h.probability for h in answer.hypotheses]
    assert shares == pytest.approx([0.5, 0.3, 0.2], abs=0.03) and sum(shares) <= 1 + 1e-9
    for h in answer.hypotheses:
        assert 0 < h.radius_50_km < h.radius_90_km < 1000


def test_experts_left_out_are_renormalised_away_and_with_none_the_answer_is_the_prior():
    params = parameters(prior_weight=0.5, gallery=1.0, flow=3.0)
    only_gallery = fuse([points("gallery", 10.0, 10.0)], params, PRIOR).mixture.expert_weights
    assert only_gallery == pytest.approx({"gallery": 2 / 3, "prior": 1 / 3})
    nothing = fuse([], params, PRIOR)
    assert nothing.mixture.expert_weights == {"prior": 1.0}
    assert nothing.localizability == pytest.approx(0.0, abs=0.02) and nothing.radius_90_km > 3000


def test_localizability_is_near_one_for_a_tight_answer_and_grows_with_concentration():
    wide = fuse([points("gallery", 10.0, 10.0)], parameters(bandwidth_km=3000.0), PRIOR).localizability
    mid = fuse([points("gallery", 10.0, 10.0)], parameters(bandwidth_km=300.0), PRIOR).localizability
    tight = fuse([points("gallery", 10.0, 10.0)], parameters(bandwidth_km=5.0), PRIOR).localizability
    assert 0 <= wide < mid < tight and tight > 0.95


def test_em_recovers_the_mixing_weights_of_known_components():
    rng = np.random.default_rng(3)
    which = rng.choice(3, size=4000, p=[0.6, 0.3, 0.1])
    x = rng.normal(loc=np.array([-4.0, 0.0, 4.0])[which])
    log_p = -0.5 * (x[:, None] - np.array([-4.0, 0.0, 4.0])) ** 2 - 0.5 * np.log(2 * np.pi)
    assert mixing_weights(log_p) == pytest.approx([0.6, 0.3, 0.1], abs=0.03)


def test_a_uniform_floor_widens_the_radii_and_keeps_its_share_whatever_answers():
    plain = fuse([points("gallery", 10.0, 10.0)], parameters(prior_weight=0.5), PRIOR)
    params = FusionParameters(**{**parameters(prior_weight=0.5).__dict__, "uniform_weight": 0.2})
    floored = fuse([points("gallery", 10.0, 10.0)], params, PRIOR)
    assert floored.radius_90_km > plain.radius_90_km and floored.radius_50_km >= plain.radius_50_km
    assert floored.mixture.expert_weights == pytest.approx({"gallery": 0.8 * 2 / 3, "prior": 0.8 / 3, "uniform": 0.2})
    assert fuse([], params, PRIOR).mixture.expert_weights == pytest.approx({"prior": 0.8, "uniform": 0.2})


def spread_answer(expert: str, lat: float, lon: float, seed: int):
    """64 equally weighted points scattered a few degrees around (lat, lon), as a sampler answers."""
    rng = np.random.default_rng(seed)
    return ExpertPoints(expert, lat + rng.normal(0, 3, 64), lon + rng.normal(0, 3, 64), np.ones(64), np.zeros(64))


def test_every_hypothesis_has_the_radii_of_its_own_basin():
    """Found by the Locate fuzz: radii from the draws nearest each mode left a broad kernel's best
    guess, among the prior's 10 km kernels and their own modes, with no draws and radii of 0."""
    fitted = load_fusion(SHIPPED_FUSION)
    for seed in range(10):  # sampler-like answers over Illinois: 7 of these 10 gave radii of 0
        answers = [spread_answer("sh", 40.1, -90.3, seed), spread_answer("flow", 40.1, -90.3, 100 + seed)]
        answer = fuse(answers, fitted.parameters, fitted.prior)
        for h in answer.hypotheses:
            assert 0 < h.radius_50_km <= h.radius_90_km, (seed, h)
        # The best guess is the broad kernels' basin: its radius is of their size (points scattered
        # over ~300 km), not a 10 km prior kernel's.
        assert answer.best_guess.radius_90_km > 100, (seed, answer.best_guess)


def test_a_set_of_experts_without_levels_of_its_own_takes_those_of_the_largest_set_within_it():
    """The text expert answers few photos: a set with it that the fit saw too rarely to calibrate
    states the levels of the same set without it, never uncalibrated defaults."""
    params = FusionParameters(
        weights={"prior": 1.0},
        bandwidth_km={"prior": 800.0},
        radius_levels={"gallery+tokens": [0.4, 0.8], "gallery": [0.45, 0.85], "none": [0.55, 0.95]},
    )
    assert params.levels(["tokens", "gallery"]) == (0.4, 0.8)
    assert params.levels(["gallery", "text", "tokens"]) == (0.4, 0.8)
    assert params.levels(["text", "gallery"]) == (0.45, 0.85)
    assert params.levels(["text"]) == (0.55, 0.95)
    assert FusionParameters(weights={}, bandwidth_km={}).levels(["text"]) == (0.5, 0.9)


def test_an_expert_the_fit_never_saw_is_left_out_of_the_mixture():
    """A fusion fitted before the text expert existed has no weight or bandwidth for it: its answer
    is left out, and the answer is the one the others give alone."""
    before = FusionParameters(weights={"gallery": 0.3, "prior": 0.7}, bandwidth_km={"gallery": 200.0, "prior": 800.0})
    gallery = points("gallery", 48.85, 2.35)
    answer = fuse([gallery, points("text", 38.72, -9.14, radius=[10.0])], before, PRIOR)
    alone = fuse([gallery], before, PRIOR)
    assert set(answer.mixture.expert_weights) == {"gallery", "prior"}
    assert (answer.best_guess.lat_deg, answer.best_guess.lon_deg) == (
        alone.best_guess.lat_deg,
        alone.best_guess.lon_deg,
    )
