"""Riemannian flow matching on the sphere (sampler issue): the schedule, the geodesic target, and
a small model trained on a synthetic conditional distribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoloc.geo.mixtures import find_modes
from geoloc.geo.sphere import haversine_km, latlon_to_unit, unit_to_latlon
from geoloc.geo.vmf import vmf_kappa_for_radius_km, vmf_sample
from geoloc.sampler.flow import (
    FlowConfig,
    VelocityNetwork,
    flow_matching_loss,
    geodesic_point_and_velocity,
    sample,
    schedule,
    trajectory,
    uniform_on_sphere,
)

# The trained fixture takes about two minutes on two cores, more under load: past the suite's
# 120 s default.
pytestmark = pytest.mark.timeout(900)

# Two conditions, each a pair of 20 km vMF clusters on different continents.
CLUSTERS = {0: [(48.85, 2.35), (40.71, -74.0)], 1: [(35.68, 139.65), (-33.87, 151.21)]}


def test_the_schedule_runs_from_noise_to_data_and_its_derivative_is_right():
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    fraction, derivative = schedule(t)
    assert abs(fraction[0]) < 1e-6 and abs(fraction[-1] - 1) < 1e-6 and torch.all(torch.diff(fraction) > 0)
    numeric = torch.gradient(fraction, spacing=(t,))[0]
    assert torch.allclose(derivative[1:-1], numeric[1:-1], atol=1e-4)


def test_the_target_velocity_is_the_derivative_of_the_geodesic_point():
    torch.manual_seed(0)
    x0, x1, t = (
        uniform_on_sphere(64).double(),
        uniform_on_sphere(64).double(),
        torch.rand(64, dtype=torch.float64) * 0.9 + 0.05,
    )
    point, velocity = geodesic_point_and_velocity(x0, x1, t)
    ahead, _ = geodesic_point_and_velocity(x0, x1, t + 1e-6)
    assert torch.allclose((ahead - point) / 1e-6, velocity, atol=1e-4)
    assert torch.allclose(point.norm(dim=-1), torch.ones(64, dtype=torch.float64))
    assert torch.allclose((point * velocity).sum(-1), torch.zeros(64, dtype=torch.float64), atol=1e-5)  # tangent


def embedding_of(condition: int) -> torch.Tensor:
    return torch.tensor(np.eye(2)[condition] * 3, dtype=torch.float32)


@pytest.fixture(scope="module")
def trained() -> VelocityNetwork:
    """3000 steps of batch 256 (about two minutes on two cores): enough for 20 km clusters."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    kappa = float(vmf_kappa_for_radius_km(20.0))
    network = VelocityNetwork(FlowConfig(embedding_dim=2, width=128, depth=4))
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    steps = 3000
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=1e-5)
    for _ in range(steps):
        conditions, which = rng.integers(0, 2, 256), rng.integers(0, 2, 256)
        places = np.stack(
            [
                vmf_sample(latlon_to_unit(*CLUSTERS[c][w]), kappa, 1, rng)[0]
                for c, w in zip(conditions, which, strict=True)
            ]
        )
        loss = flow_matching_loss(
            network, torch.tensor(places, dtype=torch.float32), torch.stack([embedding_of(c) for c in conditions])
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        decay.step()
    return network.eval()


def near_fraction(points: np.ndarray, places: list[tuple[float, float]], km: float) -> float:
    lat, lon = unit_to_latlon(points)
    nearest = np.min([haversine_km(lat, lon, a, b) for a, b in places], axis=0)
    return float(np.mean(nearest < km))


@pytest.mark.slow  # the trained fixture: minutes of training
@pytest.mark.parametrize("condition", [0, 1])
def test_the_trained_flow_recovers_each_conditions_clusters_within_50_km(trained, condition):
    points = sample(trained, embedding_of(condition), 512, 250, generator=torch.Generator().manual_seed(1)).numpy()
    modes = find_modes(points, np.ones(len(points)), float(vmf_kappa_for_radius_km(50.0)))
    heavy = [m for m in modes if m.mass > 0.2]
    assert len(heavy) == 2, [(m.lat_deg, m.lon_deg, m.mass) for m in modes[:4]]
    for lat, lon in CLUSTERS[condition]:
        assert min(haversine_km(lat, lon, m.lat_deg, m.lon_deg) for m in heavy) < 50


@pytest.mark.slow  # the trained fixture: minutes of training
def test_every_point_of_a_trajectory_is_on_the_sphere(trained):
    for points in trajectory(trained, embedding_of(0), 64, 32, guidance=2.0):
        assert torch.allclose(points.norm(dim=-1), torch.ones(64), atol=1e-5)


@pytest.mark.slow  # the trained fixture: minutes of training
def test_guidance_zero_follows_the_condition_and_guidance_two_sharpens_it(trained):
    """ω = 0 samples the conditional distribution; the empty embedding the marginal (both
    conditions' clusters); ω = 2 pushes away from the marginal, so no fewer samples land near
    the condition's own clusters."""
    generator = lambda: torch.Generator().manual_seed(2)
    own, other = CLUSTERS[0], CLUSTERS[1]
    plain = sample(trained, embedding_of(0), 400, 64, guidance=0.0, generator=generator()).numpy()
    guided = sample(trained, embedding_of(0), 400, 64, guidance=2.0, generator=generator()).numpy()
    marginal = sample(trained, torch.zeros(2), 400, 64, generator=generator()).numpy()
    assert near_fraction(plain, own, 300) > 0.8 and near_fraction(plain, other, 300) < 0.1
    assert near_fraction(guided, own, 300) >= near_fraction(plain, own, 300) - 0.02
    assert near_fraction(guided, other, 300) <= near_fraction(plain, other, 300)
    assert 0.25 < near_fraction(marginal, own, 300) < 0.75 and 0.25 < near_fraction(marginal, other, 300) < 0.75
