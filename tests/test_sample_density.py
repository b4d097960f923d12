"""The kernel summary of a sample set: width by leave-one-out likelihood, modes, localizability."""

from __future__ import annotations

import numpy as np
import pytest

from geoloc.geo.sphere import haversine_km, latlon_to_unit
from geoloc.geo.vmf import vmf_kappa_for_radius_km, vmf_log_density, vmf_sample
from geoloc.sampler.density import KAPPAS, leave_one_out_log_densities, summarize_samples

PARIS, NEW_YORK = (48.85, 2.35), (40.71, -74.0)


def clusters(radius_km: float, counts=(300, 100), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kappa = float(vmf_kappa_for_radius_km(radius_km))
    return np.concatenate(
        [vmf_sample(latlon_to_unit(*place), kappa, n, rng) for place, n in zip((PARIS, NEW_YORK), counts, strict=True)]
    )


def test_leave_one_out_densities_equal_the_direct_sum():
    xyz = clusters(200.0, (40, 20))
    for kappa in (KAPPAS[0], KAPPAS[9], KAPPAS[-1]):
        terms = vmf_log_density(xyz[:, None], xyz[None], float(kappa))
        np.fill_diagonal(terms, -np.inf)
        top = terms.max(axis=1, keepdims=True)
        direct = top[:, 0] + np.log(np.exp(terms - top).sum(axis=1)) - np.log(len(xyz) - 1)
        np.testing.assert_allclose(leave_one_out_log_densities(xyz, np.array([kappa]))[0], direct, rtol=1e-9, atol=1e-9)


def test_modes_land_on_the_clusters_with_their_shares_of_the_samples():
    """Clusters of 100 km half-mass radius: a kernel mode from a few hundred samples lies within 60 km."""
    summary = summarize_samples(clusters(100.0))
    top, second = summary.modes[:2]
    assert haversine_km(top.lat_deg, top.lon_deg, *PARIS) < 60 and top.mass == pytest.approx(0.75, abs=0.02)
    assert haversine_km(second.lat_deg, second.lon_deg, *NEW_YORK) < 60 and second.mass == pytest.approx(0.25, abs=0.02)
    assert sum(m.mass for m in summary.modes) == pytest.approx(1.0)
    assert 20 < summary.radius_km < 200


def test_tighter_samples_are_more_localizable():
    wide, tight = summarize_samples(clusters(1000.0)), summarize_samples(clusters(50.0))
    assert tight.mean_log_density > wide.mean_log_density + 2
    assert tight.radius_km < wide.radius_km


def test_uniform_samples_get_the_widest_kernels_and_about_the_uniform_density():
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(400, 3))
    summary = summarize_samples(xyz / np.linalg.norm(xyz, axis=1, keepdims=True))
    assert summary.radius_km > 2000
    assert abs(summary.mean_log_density - np.log(1 / (4 * np.pi))) < 0.3
