"""The fast fused answer against the slow reference (tests/fusion_reference.py), with the shipped
fusion and its prior: the same best guess (within 1 km, or an exact tie) and radii within 2 %, on
seeded answers of every expert's shape; and the same answer every time."""

from __future__ import annotations

import numpy as np
import pytest

from geoloc.geo.mixtures import vmf_mixture_sample
from geoloc.geo.sphere import latlon_to_unit, unit_to_latlon
from geoloc.orchestrator.config import SHIPPED_FUSION
from geoloc.orchestrator.fusion import ExpertPoints, fuse, kappa_for_half_mass_km
from geoloc.orchestrator.parameters import load_fusion
from tests.fusion_reference import reference_fuse, same_best_guess

FITTED = load_fusion(SHIPPED_FUSION)


def spread(rng, lat, lon, n, radius_km) -> tuple[np.ndarray, np.ndarray]:
    centre = latlon_to_unit(np.array([lat]), np.array([lon]))
    draws = vmf_mixture_sample(centre, [1.0], kappa_for_half_mass_km(np.array([radius_km])), n, rng)
    return unit_to_latlon(draws)


def photo_answers(seed: int) -> list[ExpertPoints]:
    """A photo somewhere people take photos, answered as the shipped experts answer: the gallery's 32
    points (some near it, some elsewhere), the flow's 128 equal samples, the tokens' 5 sharp cells,
    and on every third photo a text expert's named place."""
    rng = np.random.default_rng(seed)
    truth = FITTED.prior.lat_deg[seed * 37 % 2048], FITTED.prior.lon_deg[seed * 37 % 2048]
    near_lat, near_lon = spread(rng, *truth, 20, 300.0)
    far_lat, far_lon = rng.uniform(-50, 65, 12), rng.uniform(-180, 180, 12)
    gallery = ExpertPoints(
        "gallery", np.r_[near_lat, far_lat], np.r_[near_lon, far_lon], rng.dirichlet(np.ones(32)), np.zeros(32)
    )
    flow_lat, flow_lon = spread(rng, *truth, 128, rng.choice([400.0, 1500.0, 4000.0]))
    flow = ExpertPoints("flow", flow_lat, flow_lon, np.full(128, 1 / 128), np.zeros(128))
    token_lat, token_lon = spread(rng, *truth, 5, 150.0)
    tokens = ExpertPoints("tokens", token_lat, token_lon, rng.dirichlet(np.ones(5)), rng.uniform(0.001, 30, 5))
    answers = [gallery, flow, tokens]
    if seed % 3 == 0:
        answers.append(ExpertPoints("text", np.array([truth[0]]), np.array([truth[1]]), np.ones(1), np.array([8.0])))
    return answers


@pytest.mark.parametrize("seed", range(20))
def test_the_fast_answer_is_the_slow_references(seed):
    answers = photo_answers(seed)
    fast = fuse(answers, FITTED.parameters, FITTED.prior)
    slow = reference_fuse(answers, FITTED.parameters, FITTED.prior)
    assert same_best_guess(fast, slow, answers, FITTED.parameters, FITTED.prior), (fast.best_guess, slow.best_guess)
    assert fast.radius_50_km == pytest.approx(slow.radius_50_km, rel=0.02)
    assert fast.radius_90_km == pytest.approx(slow.radius_90_km, rel=0.02)
    assert fast.localizability == pytest.approx(slow.localizability, abs=1e-9)


def test_the_answer_is_the_same_every_time():
    answers = photo_answers(3)
    first, again = (fuse(answers, FITTED.parameters, FITTED.prior) for _ in range(2))
    assert first.hypotheses == again.hypotheses and first.radius_90_km == again.radius_90_km
