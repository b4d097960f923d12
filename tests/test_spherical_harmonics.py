"""Real spherical harmonics and LocDiffusion's Dirac-delta encoding of a place (sampler issue)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geoloc.geo.sphere import haversine_km
from geoloc.sampler.spherical_harmonics import SphericalGrid, column, encode, real_harmonics


def test_low_degrees_match_their_closed_forms():
    lat, lon = np.array([10.0, -45.0, 80.0]), np.array([20.0, 170.0, -60.0])
    theta, phi = np.radians(90 - lat), np.radians(lon)
    y = real_harmonics(lat, lon, 2)
    np.testing.assert_allclose(y[:, column(0, 0)], 0.5 / math.sqrt(math.pi))
    np.testing.assert_allclose(y[:, column(1, 0)], math.sqrt(3 / (4 * math.pi)) * np.cos(theta))
    np.testing.assert_allclose(y[:, column(1, 1)], math.sqrt(3 / (4 * math.pi)) * np.sin(theta) * np.cos(phi))
    np.testing.assert_allclose(y[:, column(1, -1)], math.sqrt(3 / (4 * math.pi)) * np.sin(theta) * np.sin(phi))
    np.testing.assert_allclose(y[:, column(2, 0)], math.sqrt(5 / (16 * math.pi)) * (3 * np.cos(theta) ** 2 - 1))


def test_the_harmonics_are_orthonormal_over_the_sphere():
    grid = SphericalGrid(12, points=200_000)  # equal-area points: the mean is the integral / 4π
    gram = grid.basis.T @ grid.basis * (4 * math.pi / len(grid.basis))
    assert np.abs(gram - np.eye(len(gram))).max() < 1e-4


@pytest.mark.parametrize("degree", [8, 16, 32])
def test_encoding_a_place_and_decoding_it_returns_the_place(degree):
    rng = np.random.default_rng(degree)
    lat = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, 40))), [89.9, -89.9, 0.0, 0.0]])
    lon = np.concatenate([rng.uniform(-180, 180, 40), [0.0, 45.0, 179.99, -179.99]])
    got_lat, got_lon = SphericalGrid(degree).decode(encode(lat, lon, degree))
    assert haversine_km(lat, lon, got_lat, got_lon).max() < 1.0


def test_the_encoded_bump_narrows_as_the_degree_grows():
    """Σ c_lm Y_lm around the place falls to half its peak at an angle of about 2/L radians:
    the resolution a degree allows."""
    widths = []
    for degree in (8, 16, 32):
        peak = encode([0.0], [0.0], degree)[0]
        along = np.linspace(0, 60, 6001)
        field = real_harmonics(np.zeros_like(along), along, degree) @ peak
        widths.append(along[np.argmax(field < field[0] / 2)])
    assert widths[0] > 1.8 * widths[1] > 3.2 * widths[2]
    assert all(abs(math.radians(w) * d - 2.0) < 0.3 for w, d in zip(widths, (8, 16, 32), strict=True)), widths
