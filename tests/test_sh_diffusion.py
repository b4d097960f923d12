"""LocDiffusion's SH diffusion (sampler issue): the schedule, and a small denoiser trained on a
synthetic conditional task whose samples decode back to the condition's places."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoloc.geo.sphere import haversine_km
from geoloc.sampler.sh_diffusion import (
    CoefficientDenoiser,
    SHDiffusionConfig,
    denoising_loss,
    place_coefficients,
    sample,
    sample_coefficients,
    signal_level,
)
from geoloc.sampler.spherical_harmonics import SphericalGrid

pytestmark = pytest.mark.timeout(600)

DEGREE = 16
# Condition 0 means one place; condition 1 means either of two places, half and half.
PLACES = {0: [(48.85, 2.35)], 1: [(35.68, 139.65), (-33.87, 151.21)]}


def embedding_of(condition: int) -> torch.Tensor:
    return torch.tensor(np.eye(2)[condition] * 3, dtype=torch.float32)


def test_the_schedule_runs_from_clean_to_pure_noise():
    alpha = signal_level(torch.linspace(0, 1, 101))
    assert alpha[0] > 0.9998 and alpha[-1] < 1e-12
    assert torch.all(alpha[1:] < alpha[:-1])


def test_the_coefficients_have_unit_mean_square_over_the_sphere():
    grid = SphericalGrid(DEGREE)
    coefficients = place_coefficients(grid.lat, grid.lon, DEGREE)
    assert abs(float(coefficients.pow(2).mean()) - 1.0) < 0.01


@pytest.fixture(scope="module")
def trained() -> CoefficientDenoiser:
    """1500 steps of batch 128 on the two conditions (about half a minute on two cores)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    targets = {c: place_coefficients(*np.array(places).T, DEGREE) for c, places in PLACES.items()}
    network = CoefficientDenoiser(SHDiffusionConfig(embedding_dim=2, degree=DEGREE, width=256, depth=3))
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    steps = 1500
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=1e-5)
    for _ in range(steps):
        conditions = rng.integers(0, 2, 128)
        clean = torch.stack([targets[c][rng.integers(len(PLACES[c]))] for c in conditions])
        loss = denoising_loss(network, clean, torch.stack([embedding_of(c) for c in conditions]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        decay.step()
    return network.eval()


def share_near(latlon: np.ndarray, place: tuple[float, float], km: float) -> float:
    return float(np.mean(haversine_km(latlon[:, 0], latlon[:, 1], *place) < km))


@pytest.mark.slow  # the trained fixture: about a minute of training
def test_samples_decode_to_the_conditions_places(trained):
    grid = SphericalGrid(DEGREE)
    one = sample(trained, grid, embedding_of(0), 64, 32, generator=torch.Generator().manual_seed(1))
    assert share_near(one, PLACES[0][0], 100) > 0.95
    two = sample(trained, grid, embedding_of(1), 200, 32, generator=torch.Generator().manual_seed(1))
    tokyo, sydney = (share_near(two, place, 100) for place in PLACES[1])
    assert tokyo + sydney > 0.95 and min(tokyo, sydney) > 0.25, (tokyo, sydney)


@pytest.mark.slow  # the trained fixture: about a minute of training
def test_the_same_generator_seed_gives_the_same_coefficients(trained):
    a, b = (
        sample_coefficients(trained, embedding_of(1), 16, 8, 1.0, torch.Generator().manual_seed(5)) for _ in range(2)
    )
    c = sample_coefficients(trained, embedding_of(1), 16, 8, 1.0, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
