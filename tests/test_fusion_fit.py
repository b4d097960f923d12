"""Fitting scores exactly the mixture that serving builds: one definition of an expert's kernels.

The fusion is fitted by the likelihood of the true places under each expert's kernels
(geoloc.training.fusion) and served by building those kernels per answer
(geoloc.orchestrator.fusion.build_mixture). Both call fusion.expert_kernels; these tests hold the
fit's numbers equal to the log density of the mixture the orchestrator builds for the same
answers, on seeded synthetic answers shaped like the real ones (padded token beams with radii,
equal-weight sampler draws, a gallery tilted by photo density).
"""

from __future__ import annotations

import numpy as np
import pytest

from geoloc.geo.sphere import latlon_to_unit
from geoloc.orchestrator.fusion import PRIOR, FusionParameters, Prior, build_mixture, expert_kernels
from geoloc.training.expert_outputs import photo_answers
from geoloc.training.fusion import expert_log_likelihood, mixing_weights, mixture_log_likelihood

RNG = np.random.default_rng(7)
PHOTOS = 40
GALLERY = np.stack([RNG.uniform(-60, 70, 4000), RNG.uniform(-180, 180, 4000)], axis=1)
BANDWIDTHS = {"gallery": 50.0, "flow": 400.0, "sh": 200.0, "tokens": 25.0, PRIOR: 800.0}
DENSITY_POWER = 0.5


def synthetic_outputs() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({expert: [n, P, 4]} as expert_outputs makes them, true places [n, 2]) near each other."""
    truth = np.stack([RNG.uniform(-50, 60, PHOTOS), RNG.uniform(-170, 170, PHOTOS)], axis=1)

    def around(count: int, spread_deg: float) -> tuple[np.ndarray, np.ndarray]:
        lat = np.clip(truth[:, None, 0] + RNG.normal(0, spread_deg, (PHOTOS, count)), -89, 89)
        lon = (truth[:, None, 1] + RNG.normal(0, spread_deg, (PHOTOS, count)) + 180) % 360 - 180
        return lat, lon

    outputs = {}
    lat, lon = around(32, 8.0)
    gallery_weight = RNG.dirichlet(np.ones(32), PHOTOS) * 0.3  # a softmax's top 32 hold part of the mass
    outputs["gallery"] = np.stack([lat, lon, gallery_weight, np.zeros_like(lat)], axis=-1)
    for method in ("flow", "sh"):
        lat, lon = around(64, 15.0)
        outputs[method] = np.stack([lat, lon, np.full_like(lat, 1 / 64), np.zeros_like(lat)], axis=-1)
    lat, lon = around(5, 3.0)
    beams = np.stack([lat, lon, RNG.dirichlet(np.ones(5), PHOTOS), RNG.uniform(5, 300, (PHOTOS, 5))], axis=-1)
    beams[::3, 3:] = 0.0  # rows padded with zero weights, as a beam that found fewer cells
    outputs["tokens"] = beams
    return outputs, truth


def params(weights: dict[str, float]) -> FusionParameters:
    return FusionParameters(weights=weights, bandwidth_km=BANDWIDTHS, gallery_density_power=DENSITY_POWER)


@pytest.fixture(scope="module")
def case():
    outputs, truth = synthetic_outputs()
    return outputs, truth, latlon_to_unit(truth[:, 0], truth[:, 1]), Prior(GALLERY, BANDWIDTHS[PRIOR])


@pytest.mark.parametrize("expert", ["gallery", "flow", "sh", "tokens"])
def test_an_experts_fitted_likelihood_is_the_served_kernels_density(case, expert):
    outputs, _, truth_xyz, prior = case
    power = DENSITY_POWER if expert == "gallery" else 0.0
    fitted = expert_log_likelihood(outputs[expert], truth_xyz, BANDWIDTHS[expert], prior, power)
    alone = params({expert: 1.0, PRIOR: 0.0})
    served = [
        build_mixture(photo_answers(outputs, row, [expert]), alone, prior).log_density(truth_xyz[row])
        for row in range(PHOTOS)
    ]
    np.testing.assert_allclose(fitted, served, rtol=1e-9, atol=1e-9)


def test_the_fitted_mixture_likelihood_is_the_served_mixtures(case):
    outputs, _, truth_xyz, prior = case
    columns = {
        e: expert_log_likelihood(a, truth_xyz, BANDWIDTHS[e], prior, DENSITY_POWER if e == "gallery" else 0.0)
        for e, a in outputs.items()
    }
    columns[PRIOR] = prior.log_density(truth_xyz)
    weights = mixing_weights(np.stack(list(columns.values()), axis=1))
    fitted = mixture_log_likelihood(columns, weights)
    served_params = params({name: float(w) for name, w in zip(columns, weights, strict=True)})
    served = np.mean(
        [
            build_mixture(photo_answers(outputs, row), served_params, prior).log_density(truth_xyz[row])
            for row in range(PHOTOS)
        ]
    )
    assert fitted == pytest.approx(served, rel=1e-9)
    # And the tilt matters: without it the same weights score differently, so the check above can fail.
    untilted = expert_log_likelihood(outputs["gallery"], truth_xyz, BANDWIDTHS["gallery"], prior, 0.0)
    assert not np.allclose(untilted, columns["gallery"])


def test_kernels_drop_points_without_weight_and_renormalise_each_row(case):
    outputs, _, _, prior = case
    points = outputs["tokens"].copy()
    points[0, 1, 2] = np.nan  # a NaN weight is dropped like a zero one
    points[1, :, 2] = 0.0  # a photo with nothing: all weights 0, not NaN
    _, weights, radius = expert_kernels(points, 25.0, 0.0, prior)
    assert weights[0, 1] == 0.0 and weights[1].sum() == 0.0
    live = weights.sum(axis=1) > 0
    np.testing.assert_allclose(weights[live].sum(axis=1), 1.0)
    np.testing.assert_allclose(radius[2], np.sqrt(points[2, :, 3] ** 2 + 25.0**2))
