"""Tests for geoloc.geo.sphere, geoloc.geo.s2cells and geoloc.tokens.geotokens.

S2 results are checked against s2sphere."""

from __future__ import annotations

import math

import numpy as np
import pytest
import s2sphere

from geoloc.geo import mixtures, s2cells, sphere, vmf
from geoloc.tokens import geotokens

R = sphere.EARTH_RADIUS_KM
PARIS = (48.8566, 2.3522)
NEW_YORK = (40.7128, -74.0060)
SYDNEY = (-33.8688, 151.2093)
LONDON = (51.5074, -0.1278)
LOS_ANGELES = (34.0522, -118.2437)


def random_latlon(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Points uniform on the sphere."""
    return np.degrees(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(-180, 180, n)


def random_unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def lon_diff(a, b) -> np.ndarray:
    return np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)


# ---------------------------------------------------------------------------
# Distances and unit vectors
# ---------------------------------------------------------------------------


def test_paris_new_york():
    assert abs(sphere.haversine_km(*PARIS, *NEW_YORK) - 5837.0) < 5.0


@pytest.mark.parametrize(
    "a, b, km",
    [(LONDON, PARIS, 343.5), (PARIS, SYDNEY, 16960.0)],
)
def test_known_distances(a, b, km):
    assert abs(sphere.haversine_km(*a, *b) - km) < 5.0


def test_haversine_matches_vincenty_sphere_formula():
    rng = np.random.default_rng(12)
    lat1, lon1 = np.radians(random_latlon(rng, 500))
    lat2, lon2 = np.radians(random_latlon(rng, 500))
    dlon = lon2 - lon1
    num = np.hypot(
        np.cos(lat2) * np.sin(dlon), np.cos(lat1) * np.sin(lat2) - np.sin(lat1) * np.cos(lat2) * np.cos(dlon)
    )
    den = np.sin(lat1) * np.sin(lat2) + np.cos(lat1) * np.cos(lat2) * np.cos(dlon)
    expected = R * np.arctan2(num, den)
    got = sphere.haversine_km(*np.degrees([lat1, lon1, lat2, lon2]))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-3)
    assert abs(sphere.haversine_km(*SYDNEY, *LOS_ANGELES) - 12073.5) < 1.0


def test_exact_distances():
    assert sphere.haversine_km(0, 0, 90, 0) == pytest.approx(math.pi * R / 2, rel=1e-14)
    assert sphere.haversine_km(0, 10, 0, 11) == pytest.approx(2 * math.pi * R / 360, rel=1e-12)
    # Haversine loses ~1e-8 relative precision at the antipode (asin near 1).
    assert sphere.haversine_km(10, 20, -10, -160) == pytest.approx(math.pi * R, abs=1e-3)
    assert sphere.haversine_km(*PARIS, *PARIS) == 0.0


def test_haversine_symmetric_and_broadcasts():
    rng = np.random.default_rng(0)
    lat1, lon1 = random_latlon(rng, 100)
    lat2, lon2 = random_latlon(rng, 100)
    np.testing.assert_allclose(
        sphere.haversine_km(lat1, lon1, lat2, lon2), sphere.haversine_km(lat2, lon2, lat1, lon1), rtol=1e-13
    )
    assert sphere.haversine_km(lat1[:, None], lon1[:, None], lat2[:5], lon2[:5]).shape == (100, 5)


def test_latlon_to_unit_axes():
    np.testing.assert_allclose(sphere.latlon_to_unit(0, 0), [1, 0, 0], atol=1e-15)
    np.testing.assert_allclose(sphere.latlon_to_unit(0, 90), [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(sphere.latlon_to_unit(90, 37), [0, 0, 1], atol=1e-15)
    np.testing.assert_allclose(sphere.latlon_to_unit(-90, 0), [0, 0, -1], atol=1e-15)
    assert sphere.latlon_to_unit(np.zeros((4, 1)), np.zeros(5)).shape == (4, 5, 3)


def test_unit_latlon_round_trip():
    rng = np.random.default_rng(1)
    lat, lon = random_latlon(rng, 1000)
    lat2, lon2 = sphere.unit_to_latlon(sphere.latlon_to_unit(lat, lon))
    np.testing.assert_allclose(lat2, lat, atol=1e-12)
    np.testing.assert_allclose(lon2, lon, atol=1e-12)
    # Non-normalised input reads the same.
    lat3, lon3 = sphere.unit_to_latlon(7.5 * sphere.latlon_to_unit(lat, lon))
    np.testing.assert_allclose(lat3, lat, atol=1e-12)
    np.testing.assert_allclose(lon3, lon, atol=1e-12)


def test_unit_to_latlon_poles_and_dateline():
    lat, _ = sphere.unit_to_latlon([[0, 0, 1], [0, 0, -3]])
    np.testing.assert_array_equal(lat, [90.0, -90.0])
    lat, lon = sphere.unit_to_latlon(sphere.latlon_to_unit([0, 0, 10, -10], [180, -180, 179.9999, -179.9999]))
    np.testing.assert_allclose(lat, [0, 0, 10, -10], atol=1e-12)
    assert lon[0] == -180.0 and lon[1] == -180.0  # longitude is in [-180, 180)
    np.testing.assert_allclose(lon[2:], [179.9999, -179.9999], atol=1e-9)
    assert np.all((lon >= -180) & (lon < 180))
    lat, lon = sphere.unit_to_latlon(sphere.latlon_to_unit([90, -90], [45, -45]))
    np.testing.assert_allclose(lat, [90, -90], atol=1e-12)


def test_great_circle_angle_matches_haversine():
    rng = np.random.default_rng(2)
    lat1, lon1 = random_latlon(rng, 500)
    lat2, lon2 = random_latlon(rng, 500)
    angle = sphere.great_circle_angle(sphere.latlon_to_unit(lat1, lon1), sphere.latlon_to_unit(lat2, lon2))
    np.testing.assert_allclose(
        sphere.radians_to_km(angle), sphere.haversine_km(lat1, lon1, lat2, lon2), rtol=1e-10, atol=1e-9
    )
    np.testing.assert_allclose(sphere.km_to_radians(sphere.radians_to_km(angle)), angle, rtol=1e-15)


def test_great_circle_angle_tiny_and_near_pi():
    x = np.array([1.0, 0.0, 0.0])
    for eps in (1e-12, 1e-9, 1e-6):
        tiny = np.array([math.cos(eps), math.sin(eps), 0.0])
        assert sphere.great_circle_angle(x, tiny) == pytest.approx(eps, rel=1e-9)
        near_pi = np.array([-math.cos(eps), math.sin(eps), 0.0])
        assert sphere.great_circle_angle(x, near_pi) == pytest.approx(math.pi - eps, rel=1e-15)
    assert sphere.great_circle_angle(x, x) == 0.0
    assert sphere.great_circle_angle(x, -x) == pytest.approx(math.pi, rel=1e-15)


# ---------------------------------------------------------------------------
# Geodesic interpolation
# ---------------------------------------------------------------------------


def test_geodesic_interpolate_endpoints_norm_and_speed():
    rng = np.random.default_rng(3)
    x0, x1 = random_unit(rng, 200), random_unit(rng, 200)
    np.testing.assert_allclose(sphere.geodesic_interpolate(x0, x1, 0.0), x0, atol=1e-15)
    np.testing.assert_allclose(sphere.geodesic_interpolate(x0, x1, 1.0), x1, atol=1e-13)
    t = np.linspace(0, 1, 11)
    path = sphere.geodesic_interpolate(x0[:, None], x1[:, None], t)  # (200, 11, 3)
    assert path.shape == (200, 11, 3)
    np.testing.assert_allclose(np.linalg.norm(path, axis=-1), 1.0, atol=1e-15)
    total = sphere.great_circle_angle(x0, x1)
    np.testing.assert_allclose(sphere.great_circle_angle(x0[:, None], path), total[:, None] * t, atol=1e-12)
    steps = sphere.great_circle_angle(path[:, 1:], path[:, :-1])
    np.testing.assert_allclose(steps, np.broadcast_to(total[:, None] / 10, steps.shape), atol=1e-12)
    # Points stay on the great circle through x0 and x1.
    normal = np.cross(x0, x1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.einsum("nk,ntk->nt", normal, path), 0.0, atol=1e-12)


def test_geodesic_interpolate_identical_and_antipodal():
    x = sphere.latlon_to_unit(*PARIS)
    np.testing.assert_allclose(sphere.geodesic_interpolate(x, x, np.linspace(0, 1, 5)), np.tile(x, (5, 1)), atol=1e-15)
    mid = sphere.geodesic_interpolate(x, -x, 0.5)
    lat, lon = sphere.unit_to_latlon(mid)
    # Documented axis: leave x0 heading north along its meridian, over the pole.
    assert lat == pytest.approx(90 - PARIS[0], abs=1e-9)
    assert lon_diff(lon, PARIS[1] + 180) < 1e-9
    np.testing.assert_allclose(sphere.geodesic_interpolate(x, -x, 1.0), -x, atol=1e-15)
    np.testing.assert_allclose(
        sphere.geodesic_interpolate(x, -x, np.linspace(0, 1, 7)),
        sphere.geodesic_interpolate(x, -x, np.linspace(0, 1, 7)),
        atol=0,
    )  # deterministic
    # From a pole the path follows the lon 0 meridian.
    north = np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(sphere.geodesic_interpolate(north, -north, 0.5), [1, 0, 0], atol=1e-15)
    np.testing.assert_allclose(sphere.geodesic_interpolate(-north, north, 0.5), [1, 0, 0], atol=1e-15)


# ---------------------------------------------------------------------------
# von Mises-Fisher kernels
# ---------------------------------------------------------------------------


def integral_over_sphere(kappa: float) -> float:
    """∫ f dA = 2π ∫₀² f(s) ds with s = 1 − cos θ; Gauss-Legendre panels refined toward s = 0."""
    nodes, weights = np.polynomial.legendre.leggauss(30)
    edges = np.concatenate([[0.0], np.geomspace(1e-16, 2.0, 120)])
    a, b = edges[:-1, None], edges[1:, None]
    s = (a + (b - a) * (nodes + 1) / 2).ravel()
    ds = ((b - a) / 2 * weights).ravel()
    x = np.stack([np.sqrt(s * (2 - s)), np.zeros_like(s), 1 - s], axis=-1)
    return float(2 * np.pi * np.sum(np.exp(vmf.vmf_log_density(x, [0, 0, 1], kappa)) * ds))


@pytest.mark.parametrize("kappa", [0.0, 1e-8, 1.0, 50.0, 1e4, 1e10])
def test_vmf_density_integrates_to_one(kappa):
    assert integral_over_sphere(kappa) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("kappa", [0.0, 1e-8, 1.0, 50.0])
def test_vmf_density_fibonacci_quadrature(kappa):
    n = 200_000
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    phi = np.pi * (1 + 5**0.5) * k
    r = np.sqrt(1 - z * z)
    x = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)
    mu = sphere.latlon_to_unit(*SYDNEY)
    assert 4 * np.pi * np.mean(np.exp(vmf.vmf_log_density(x, mu, kappa))) == pytest.approx(1.0, abs=1e-6)


def test_vmf_log_density_values_and_stability():
    mu = np.array([0.0, 0.0, 1.0])
    assert vmf.vmf_log_density(mu, mu, 0.0) == pytest.approx(-math.log(4 * math.pi), abs=1e-15)
    expected = math.log(1 / (2 * math.pi * (1 - math.exp(-2)))) - 2
    assert vmf.vmf_log_density(-mu, mu, 1.0) == pytest.approx(expected, rel=1e-14)
    # The series and direct branches meet smoothly.
    k = np.array([1e-4 * (1 - 1e-9), 1e-4 * (1 + 1e-9)])
    values = vmf.vmf_log_density(mu, mu, k)
    assert abs(values[1] - values[0]) < 1e-12
    # κ = 1e10: finite everywhere, exact at the mean and 1 km away.
    x = sphere.geodesic_interpolate(mu, [1.0, 0, 0], np.array([0.0, 1 / (R * np.pi / 2), 0.5, 1.0]))
    out = vmf.vmf_log_density(x, mu, 1e10)
    assert np.all(np.isfinite(out))
    assert out[0] == pytest.approx(math.log(1e10 / (2 * math.pi)), rel=1e-15)
    theta = 1 / R
    assert out[1] == pytest.approx(math.log(1e10 / (2 * math.pi)) - 1e10 * 2 * math.sin(theta / 2) ** 2, rel=1e-9)
    with pytest.raises(ValueError):
        vmf.vmf_log_density(mu, mu, -1.0)


@pytest.mark.parametrize("kappa", [0.5, 2.0, 10.0, 100.0, 1e4])
def test_vmf_sample_mean_resultant_length(kappa):
    rng = np.random.default_rng(4)
    mu = sphere.latlon_to_unit(*PARIS)
    x = vmf.vmf_sample(mu, kappa, 20_000, rng)
    assert x.shape == (20_000, 3)
    np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0, atol=1e-15)
    w = x @ mu
    expected = 1 / math.tanh(kappa) - 1 / kappa
    assert abs(w.mean() - expected) < 5 * w.std() / math.sqrt(len(w))
    # No preferred direction around the mean.
    mean = x.mean(axis=0)
    tangential = mean - (mean @ mu) * mu
    assert np.linalg.norm(tangential) < 5 * math.sqrt((1 - w.mean() ** 2 + 1e-12) / len(w))


def test_vmf_sample_uniform_and_huge_kappa():
    rng = np.random.default_rng(5)
    mu = np.array([0.0, 1.0, 0.0])
    for kappa in (0.0, 1e-8):
        w = vmf.vmf_sample(mu, kappa, 40_000, rng) @ mu
        # Archimedes: w is uniform on [-1, 1] for the uniform distribution.
        counts, _ = np.histogram(w, bins=4, range=(-1, 1))
        assert np.all(np.abs(counts - 10_000) < 5 * math.sqrt(10_000 * 0.75))
    x = vmf.vmf_sample(mu, 1e10, 1000, rng)
    assert np.all(np.isfinite(x))
    km = sphere.radians_to_km(sphere.great_circle_angle(x, mu))
    # Median distance at κ = 1e10 is vmf_radius_km(1e10) ≈ 75 m.
    assert np.median(km) == pytest.approx(float(vmf.vmf_radius_km(1e10)), rel=0.15)


@pytest.mark.parametrize("kappa, radius_km", [(0.0, 3000.0), (1.0, 5000.0), (30.0, 1000.0), (5000.0, 100.0)])
def test_vmf_cap_mass_matches_samples(kappa, radius_km):
    rng = np.random.default_rng(6)
    mu = sphere.latlon_to_unit(*SYDNEY)
    x = vmf.vmf_sample(mu, kappa, 20_000, rng)
    frac = np.mean(sphere.radians_to_km(sphere.great_circle_angle(x, mu)) <= radius_km)
    p = float(vmf.vmf_cap_mass(kappa, radius_km))
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / len(x))


def test_vmf_cap_mass_limits():
    assert vmf.vmf_cap_mass(0.0, R * math.pi / 2) == pytest.approx(0.5, abs=1e-15)
    assert vmf.vmf_cap_mass(3.0, R * math.pi) == pytest.approx(1.0, abs=1e-15)
    assert vmf.vmf_cap_mass(3.0, 0.0) == 0.0
    expected = [(1 - math.cos(1)) / 2, 1 - math.exp(-1e10 * 2 * math.sin(0.075 / R / 2) ** 2)]
    np.testing.assert_allclose(vmf.vmf_cap_mass([1e-9, 1e10], [R, 0.075]), expected, rtol=1e-8)
    with pytest.raises(ValueError):
        vmf.vmf_cap_mass(1.0, -1.0)


def test_vmf_kappa_radius_inverses():
    radius = np.array([0.01, 1.0, 25.0, 100.0, 1000.0, 5000.0, 9000.0, 15000.0])[:, None]
    mass = np.array([0.1, 0.5, 0.9, 0.99])[None, :]
    feasible = mass > (1 - np.cos(radius / R)) / 2
    r, m = np.broadcast_arrays(radius, mass)
    r, m = r[feasible], m[feasible]
    assert len(r) >= 25
    kappa = vmf.vmf_kappa_for_radius_km(r, m)
    assert np.all(np.isfinite(kappa)) and np.all(kappa >= 0)
    np.testing.assert_allclose(vmf.vmf_cap_mass(kappa, r), m, rtol=1e-12)
    np.testing.assert_allclose(vmf.vmf_radius_km(kappa, m), r, rtol=1e-8)
    np.testing.assert_allclose(vmf.vmf_kappa_for_radius_km(vmf.vmf_radius_km(kappa, m), m), kappa, rtol=1e-6)


def test_vmf_kappa_for_radius_closed_form_and_small_kappa():
    # Small caps: the closed form κ = log 2 / (1 − cos θ) holds exactly for half mass.
    for r in (0.1, 10.0, 100.0):
        assert vmf.vmf_kappa_for_radius_km(r) == pytest.approx(math.log(2) / (2 * math.sin(r / R / 2) ** 2), rel=1e-12)
    # Large caps need the full equation; the closed form would be badly off here.
    r = 9500.0
    kappa = float(vmf.vmf_kappa_for_radius_km(r))
    assert kappa < 0.5 * math.log(2) / (1 - math.cos(r / R))
    assert vmf.vmf_cap_mass(kappa, r) == pytest.approx(0.5, abs=1e-14)
    # Mass just above the uniform fraction gives a κ just above 0.
    r = 12000.0
    uniform = (1 - math.cos(r / R)) / 2
    kappa = float(vmf.vmf_kappa_for_radius_km(r, uniform + 1e-6))
    assert 0 < kappa < 1e-4
    assert vmf.vmf_cap_mass(kappa, r) == pytest.approx(uniform + 1e-6, abs=1e-12)
    # Half the mass of the uniform density lies within a quarter circumference.
    assert vmf.vmf_radius_km(0.0) == pytest.approx(math.pi * R / 2, rel=1e-15)
    assert np.all(np.isfinite(vmf.vmf_radius_km([1e10, 1e-300], 0.5)))


@pytest.mark.parametrize(
    "radius_km, mass",
    [
        (10_100.0, 0.5),
        (15_000.0, 0.6),
        (100.0, 1.0),
        (100.0, 0.0),
        (0.0, 0.5),
        (-5.0, 0.5),
        (R * math.pi, 0.5),
        (100.0, float("nan")),
    ],
)
def test_vmf_kappa_for_radius_rejects_unreachable(radius_km, mass):
    with pytest.raises(ValueError):
        vmf.vmf_kappa_for_radius_km(radius_km, mass)


# ---------------------------------------------------------------------------
# Mixtures, mean-shift and modes
# ---------------------------------------------------------------------------


def test_mixture_log_density_matches_direct_sum():
    rng = np.random.default_rng(7)
    centers, x = random_unit(rng, 5), random_unit(rng, 50)
    weights = rng.uniform(0.1, 2.0, 5)
    kappa = rng.uniform(0.5, 30.0, 5)
    parts = [
        w / weights.sum() * np.exp(vmf.vmf_log_density(x, c, k))
        for c, w, k in zip(centers, weights, kappa, strict=True)
    ]
    direct = np.log(sum(parts))
    np.testing.assert_allclose(mixtures.mixture_log_density(x, centers, weights, kappa), direct, rtol=1e-12)
    np.testing.assert_allclose(mixtures.mixture_log_density(x, centers, 3 * weights, kappa), direct, rtol=1e-12)
    np.testing.assert_allclose(
        mixtures.mixture_log_density(x, centers[:1], [2.0], 7.0), vmf.vmf_log_density(x, centers[0], 7.0), rtol=1e-12
    )
    assert mixtures.mixture_log_density(x.reshape(5, 10, 3), centers, weights, kappa).shape == (5, 10)


def test_mixture_log_density_stable_far_from_sharp_kernels():
    centers = sphere.latlon_to_unit([0, 0], [0, 1])
    far = sphere.latlon_to_unit(0, 90)
    log_parts = [float(vmf.vmf_log_density(far, c, 1e6)) for c in centers]
    assert math.exp(max(log_parts)) == 0.0  # a naive sum of densities would give log 0
    out = mixtures.mixture_log_density(far, centers, [1, 1], 1e6)
    assert np.isfinite(out)
    expected = math.log(0.5) + max(log_parts) + math.log1p(math.exp(min(log_parts) - max(log_parts)))
    assert out == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError):
        mixtures.mixture_log_density(far, centers, [0, 0], 1.0)


def test_mixture_chunking_gives_same_answer(monkeypatch):
    rng = np.random.default_rng(8)
    centers, x = random_unit(rng, 40), random_unit(rng, 100)
    weights, kappa = rng.uniform(size=40), 20.0
    full_density = mixtures.mixture_log_density(x, centers, weights, kappa)
    full_shift = mixtures.spherical_mean_shift(x, centers, weights, kappa)
    monkeypatch.setattr(mixtures, "_CHUNK_ELEMENTS", 100)
    np.testing.assert_allclose(mixtures.mixture_log_density(x, centers, weights, kappa), full_density, rtol=1e-14)
    np.testing.assert_allclose(mixtures.spherical_mean_shift(x, centers, weights, kappa), full_shift, atol=1e-12)


def test_mean_shift_converges_to_a_stationary_point():
    rng = np.random.default_rng(9)
    paris = sphere.latlon_to_unit(*PARIS)
    centers = vmf.vmf_sample(paris, float(vmf.vmf_kappa_for_radius_km(300)), 50, rng)
    kappa = float(vmf.vmf_kappa_for_radius_km(200))
    starts = vmf.vmf_sample(paris, float(vmf.vmf_kappa_for_radius_km(500)), 6, rng).reshape(2, 3, 3)
    ends = mixtures.spherical_mean_shift(starts, centers, np.ones(50), kappa)
    assert ends.shape == (2, 3, 3)
    np.testing.assert_allclose(np.linalg.norm(ends, axis=-1), 1.0, atol=1e-15)
    # A unimodal blob: every start reaches the same point, and one more step leaves it there.
    flat = ends.reshape(-1, 3)
    assert sphere.radians_to_km(sphere.great_circle_angle(flat, flat[0])).max() < 1e-3
    again = mixtures.spherical_mean_shift(flat, centers, np.ones(50), kappa, max_iter=1)
    assert sphere.radians_to_km(sphere.great_circle_angle(again, flat)).max() < 1e-4
    # The end point is a local maximum of the density.
    best = mixtures.mixture_log_density(flat[0], centers, np.ones(50), kappa)
    nearby = sphere.geodesic_interpolate(flat[0], random_unit(rng, 20), 1.0 / R)
    assert np.all(mixtures.mixture_log_density(nearby, centers, np.ones(50), kappa) < best)


def test_mean_shift_weights_kernels_of_different_widths():
    # Overlapping kernels of different widths: the fixed point must be a true density maximum,
    # which needs each kernel's κ·C(κ) gradient scale.
    centers = sphere.latlon_to_unit([0.0, 0.0], [0.0, 0.3])
    weights, kappa = np.array([0.7, 0.3]), vmf.vmf_kappa_for_radius_km(np.array([100.0, 20.0]))
    end = mixtures.spherical_mean_shift(
        sphere.latlon_to_unit(0.0, 0.15), centers, weights, kappa, max_iter=2000, tol_rad=1e-13
    )
    best = mixtures.mixture_log_density(end, centers, weights, kappa)
    lat, lon = sphere.unit_to_latlon(end)
    delta = 0.05 / 111.19  # 50 m in degrees
    around = sphere.latlon_to_unit(lat + delta * np.array([1, -1, 0, 0]), lon + delta * np.array([0, 0, 1, -1]))
    assert np.all(mixtures.mixture_log_density(around, centers, weights, kappa) < best)


def test_find_modes_exact_kernel_centres():
    centers = sphere.latlon_to_unit([PARIS[0], SYDNEY[0]], [PARIS[1], SYDNEY[1]])
    modes = mixtures.find_modes(centers, [0.7, 0.3], vmf.vmf_kappa_for_radius_km(100.0))
    assert len(modes) == 2
    assert sphere.haversine_km(modes[0].lat_deg, modes[0].lon_deg, *PARIS) < 1.0
    assert sphere.haversine_km(modes[1].lat_deg, modes[1].lon_deg, *SYDNEY) < 1.0
    assert [m.mass for m in modes] == pytest.approx([0.7, 0.3], abs=1e-12)
    assert modes[0].log_density > modes[1].log_density
    np.testing.assert_allclose(modes[0].xyz, sphere.latlon_to_unit(modes[0].lat_deg, modes[0].lon_deg), atol=1e-12)
    density = mixtures.mixture_log_density(modes[0].xyz, centers, [0.7, 0.3], vmf.vmf_kappa_for_radius_km(100.0))
    assert modes[0].log_density == pytest.approx(float(density))
    with pytest.raises(ValueError):
        modes[0].xyz[0] = 0.0  # read-only


def test_find_modes_per_centre_kappa_weights_by_normaliser():
    centers = sphere.latlon_to_unit([PARIS[0], SYDNEY[0]], [PARIS[1], SYDNEY[1]])
    kappa = vmf.vmf_kappa_for_radius_km(np.array([500.0, 20.0]))
    modes = mixtures.find_modes(centers, [0.6, 0.4], kappa)
    # Sydney's narrow kernel is taller despite its smaller weight.
    assert len(modes) == 2
    assert sphere.haversine_km(modes[0].lat_deg, modes[0].lon_deg, *SYDNEY) < 1.0
    assert [m.mass for m in modes] == pytest.approx([0.4, 0.6], abs=1e-12)


@pytest.mark.parametrize("max_starts", [512, 64])
def test_find_modes_sampled_clusters(max_starts):
    rng = np.random.default_rng(10)
    kappa_cluster = float(vmf.vmf_kappa_for_radius_km(100.0))
    points = np.concatenate(
        [
            vmf.vmf_sample(sphere.latlon_to_unit(*PARIS), kappa_cluster, 300, rng),
            vmf.vmf_sample(sphere.latlon_to_unit(*SYDNEY), kappa_cluster, 150, rng),
        ]
    )
    modes = mixtures.find_modes(points, np.ones(len(points)), vmf.vmf_kappa_for_radius_km(100.0), max_starts=max_starts)
    assert len(modes) == 2
    assert sphere.haversine_km(modes[0].lat_deg, modes[0].lon_deg, *PARIS) < 50.0
    assert sphere.haversine_km(modes[1].lat_deg, modes[1].lon_deg, *SYDNEY) < 50.0
    assert [m.mass for m in modes] == pytest.approx([2 / 3, 1 / 3], abs=0.03)
    assert sum(m.mass for m in modes) == pytest.approx(1.0, abs=1e-12)
    assert modes[0].log_density > modes[1].log_density


def test_find_modes_merges_close_peaks():
    centers = sphere.latlon_to_unit([0.0, 0.0], [0.0, 0.2])  # 22 km apart, each kernel ~1 km wide
    kappa = vmf.vmf_kappa_for_radius_km(1.0)
    assert len(mixtures.find_modes(centers, [1, 1], kappa, merge_km=50.0)) == 1
    assert len(mixtures.find_modes(centers, [1, 1], kappa, merge_km=5.0)) == 2


# ---------------------------------------------------------------------------
# S2 cells
# ---------------------------------------------------------------------------

CORNER_LAT = math.degrees(math.atan(1 / math.sqrt(2)))
EDGE_LAT = [90, -90, 90, -90, 0, 0, 0, 45, -45, 0, 0, 0, 0, 0, 45, -45, 45, CORNER_LAT, -CORNER_LAT, 89.9999999, 1e-12]
EDGE_LON = [0, 0, 123, -77, 180, -180, 0, 180, -180, 45, 135, -45, -135, 90, 0, 90, 45, 45, -135, 179.9999999, -1e-12]
LEVELS = list(range(0, 21)) + [30]


@pytest.fixture(scope="module")
def s2_points():
    rng = np.random.default_rng(11)
    lat, lon = random_latlon(rng, 2000)
    lat, lon = np.concatenate([lat, EDGE_LAT]), np.concatenate([lon, EDGE_LON])
    leaves = [s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b)) for a, b in zip(lat, lon, strict=True)]
    return lat, lon, leaves


def test_latlon_to_cell_id_matches_s2sphere(s2_points):
    lat, lon, leaves = s2_points
    for level in LEVELS:
        ours = s2cells.latlon_to_cell_id(lat, lon, level)
        assert ours.dtype == np.uint64
        expected = np.array([c.parent(level).id() for c in leaves], dtype=np.uint64)
        np.testing.assert_array_equal(ours, expected, err_msg=f"level {level}")
    paris = s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(*PARIS))
    assert int(s2cells.latlon_to_cell_id(*PARIS)) == paris.id()  # scalar input, default level 30
    assert s2cells.latlon_to_cell_id(np.zeros((2, 3)), 0.0, 5).shape == (2, 3)


def test_cell_level_and_parent_match_s2sphere(s2_points):
    lat, lon, leaves = s2_points
    ids = s2cells.latlon_to_cell_id(lat, lon, 17)
    np.testing.assert_array_equal(s2cells.cell_id_level(ids), 17)
    for level in (0, 3, 12, 17):
        expected = np.array([c.parent(level).id() for c in leaves], dtype=np.uint64)
        np.testing.assert_array_equal(s2cells.cell_id_parent(ids, level), expected)
    with pytest.raises(ValueError):
        s2cells.cell_id_parent(ids, 18)


@pytest.mark.parametrize("level", [0, 1, 10, 20, 30])
def test_cell_id_to_latlon_matches_s2sphere(s2_points, level):
    lat, lon, leaves = s2_points
    ids = s2cells.latlon_to_cell_id(lat, lon, level)
    clat, clon = s2cells.cell_id_to_latlon(ids)
    centres = [s2sphere.CellId(int(i)).to_lat_lng() for i in ids]
    np.testing.assert_allclose(clat, [c.lat().degrees for c in centres], atol=1e-9)
    off_pole = np.abs(clat) < 90 - 1e-9  # longitude is arbitrary at a pole (level-0 faces 2 and 5)
    assert np.all(lon_diff(clon, [c.lng().degrees for c in centres])[off_pole] < 1e-9)
    # The centre lies in its own cell.
    np.testing.assert_array_equal(s2cells.latlon_to_cell_id(clat, clon, level), ids)


@pytest.mark.parametrize("level", [0, 1, 5, 12, 20, 30])
def test_cell_vertices_match_s2sphere(s2_points, level):
    lat, lon, _ = s2_points
    ids = s2cells.latlon_to_cell_id(lat[::10], lon[::10], level)
    ours = s2cells.cell_id_to_vertices(ids)
    assert ours.shape == (len(ids), 4, 3)
    cells = [s2sphere.Cell(s2sphere.CellId(int(i))) for i in ids]
    expected = np.array([[[c.get_vertex(k)[q] for q in range(3)] for k in range(4)] for c in cells])
    np.testing.assert_allclose(ours, expected, atol=1e-12, rtol=0)


def test_s2_tokens_match_s2sphere(s2_points):
    lat, lon, leaves = s2_points
    for level in LEVELS:
        for cid in s2cells.latlon_to_cell_id(lat[:200], lon[:200], level):
            token = s2cells.cell_id_to_s2_token(int(cid))
            assert token == s2sphere.CellId(int(cid)).to_token()
            assert s2cells.s2_token_to_cell_id(token) == int(cid)
            assert s2cells.s2_token_to_cell_id(token.upper()) == int(cid)
    assert s2cells.cell_id_to_s2_token(0) == "X"
    assert s2cells.s2_token_to_cell_id("X") == 0
    assert s2cells.cell_id_to_s2_token(np.uint64(1 << 63)) == "8"
    for bad in ("", "0x12", "12g4", "1" * 17, "-1", " 1", "1_0"):
        with pytest.raises(ValueError):
            s2cells.s2_token_to_cell_id(bad)
    with pytest.raises(ValueError):
        s2cells.cell_id_to_s2_token(-1)


def test_geotokens_round_trip_and_prefixes(s2_points):
    lat, lon, leaves = s2_points
    assert geotokens.GEOTOKEN_LEVEL == 20 and geotokens.TOKEN_VOCAB_SIZES == (6,) + (16,) * 10
    for level in range(0, 31):
        for cid in s2cells.latlon_to_cell_id(lat[:300], lon[:300], level):
            tokens = geotokens.cell_id_to_tokens(int(cid))
            assert len(tokens) == 1 + (level + 1) // 2
            assert geotokens.tokens_to_cell_id(tokens, level) == int(cid)
            if level % 2 == 0:
                assert geotokens.tokens_to_cell_id(tokens) == int(cid)
            else:
                assert tokens[-1] % 4 == 0
    for cid, leaf in zip(s2cells.latlon_to_cell_id(lat, lon, geotokens.GEOTOKEN_LEVEL), leaves, strict=True):
        tokens = geotokens.cell_id_to_tokens(int(cid))
        assert len(tokens) == len(geotokens.TOKEN_VOCAB_SIZES)
        assert all(0 <= t < size for t, size in zip(tokens, geotokens.TOKEN_VOCAB_SIZES, strict=True))
        for m in range(len(tokens)):
            assert geotokens.tokens_to_cell_id(tokens[: m + 1]) == leaf.parent(2 * m).id()


def test_geotokens_known_values():
    # Face 4's level-0 cell, and the face-0 cell whose first two digits are 2 and 3.
    assert geotokens.cell_id_to_tokens(s2sphere.CellId.from_face_pos_level(4, 0, 0).id()) == (4,)
    cid = s2sphere.CellId.from_face_pos_level(0, (2 << 59) | (3 << 57), 2).id()
    assert geotokens.cell_id_to_tokens(cid) == (0, 11)
    assert geotokens.cell_id_to_tokens(s2sphere.CellId(cid).parent(1).id()) == (0, 8)
    assert geotokens.tokens_to_cell_id((0, 8), level=1) == s2sphere.CellId(cid).parent(1).id()
    with pytest.raises(ValueError):
        geotokens.cell_id_to_tokens([cid, cid])  # one id at a time


@pytest.mark.parametrize(
    "tokens, level",
    [
        ((6,), None),
        ((-1,), None),
        ((0, 16), None),
        ((0, -1), None),
        ((), None),
        ((0, 5), 1),
        ((0, 4), 3),
        ((0, 4), 31),
        ((0, 4), -1),
        ((0, 4), 2.0),
        ((0, 1.5), None),
        ((0,) + (0,) * 16, None),
        ((1, 2, 3), 2),
    ],
)
def test_tokens_to_cell_id_rejects_bad_input(tokens, level):
    with pytest.raises(ValueError):
        geotokens.tokens_to_cell_id(tokens, level)


@pytest.mark.parametrize("bad_id", [0, 2, (6 << 61) | 1, (1 << 64) + 1, -5, 1 << 62, 1 << 61 | 1 << 59])
def test_invalid_cell_ids_raise(bad_id):
    with pytest.raises(ValueError):
        geotokens.cell_id_to_tokens(bad_id)
    if 0 <= bad_id < 1 << 64:
        with pytest.raises(ValueError):
            s2cells.cell_id_level(np.uint64(bad_id))
        with pytest.raises(ValueError):
            s2cells.cell_id_to_latlon([np.uint64(bad_id)])


def test_latlon_to_cell_id_rejects_bad_input():
    with pytest.raises(ValueError):
        s2cells.latlon_to_cell_id(0.0, 0.0, 31)
    with pytest.raises(ValueError):
        s2cells.latlon_to_cell_id(float("nan"), 0.0)
