"""Real spherical harmonics up to degree L, and LocDiffusion's encoding of a place with them.

A place x on the sphere is encoded as the vector of every real harmonic evaluated there,
c_lm = Y_lm(x) for l <= L: (L+1)^2 numbers, the coefficients of a Dirac delta at x truncated
to degree L (LocDiffusion's "spherical harmonics Dirac delta"). Summed back,
f(y) = Σ c_lm Y_lm(y) = Σ_l (2l+1)/(4π) P_l(x·y), a bump at x of angular width about π/L.
Decoding needs no learning: evaluate f on a grid (one matrix product with a precomputed
basis), take the argmax, and refine it locally.

The harmonics are orthonormal over the sphere (∫ Y_lm Y_l'm' dΩ = δ), computed with the
standard three-term recurrences of the fully normalised associated Legendre functions, which
stay stable to high degree. Columns are ordered l = 0..L and, within l, m = -l..l.
"""

from __future__ import annotations

import math

import numpy as np


def coefficient_count(degree: int) -> int:
    return (degree + 1) ** 2


def column(l: int, m: int) -> int:  # noqa: E741 - l is the harmonic's degree
    """The column of Y_lm."""
    return l * l + l + m


def real_harmonics(lat_deg: np.ndarray, lon_deg: np.ndarray, degree: int) -> np.ndarray:
    """Y_lm at each point: [n, (degree+1)^2] float64, orthonormal over the sphere."""
    if degree < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")
    theta = np.radians(90.0 - np.asarray(lat_deg, dtype=np.float64).ravel())  # colatitude
    phi = np.radians(np.asarray(lon_deg, dtype=np.float64).ravel())
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    out = np.empty((len(theta), coefficient_count(degree)))
    p_mm = np.full_like(theta, 1.0 / math.sqrt(4 * math.pi))  # normalised P_0^0
    for m in range(degree + 1):
        if m > 0:
            p_mm = math.sqrt((2 * m + 1) / (2 * m)) * sin_t * p_mm
        # Climb l from m with the three-term recurrence, for this m.
        p_prev, p_curr = np.zeros_like(theta), p_mm
        for l in range(m, degree + 1):  # noqa: E741
            if l > m:
                a = math.sqrt((4 * l * l - 1) / (l * l - m * m))
                b = math.sqrt(((l - 1) ** 2 - m * m) / (4 * (l - 1) ** 2 - 1))
                p_prev, p_curr = p_curr, a * (cos_t * p_curr - b * p_prev)
            if m == 0:
                out[:, column(l, 0)] = p_curr
            else:
                out[:, column(l, m)] = math.sqrt(2) * p_curr * np.cos(m * phi)
                out[:, column(l, -m)] = math.sqrt(2) * p_curr * np.sin(m * phi)
    return out


def encode(lat_deg, lon_deg, degree: int) -> np.ndarray:
    """The Dirac-delta coefficients of each place: [n, (degree+1)^2]."""
    return real_harmonics(lat_deg, lon_deg, degree)


class SphericalGrid:
    """A near-uniform grid of points (a Fibonacci lattice) with its harmonic basis precomputed."""

    def __init__(self, degree: int, points: int | None = None):
        self.degree = degree
        # About 8 points per wavelength of the highest degree: the argmax lands within the
        # bump's core, and refinement does the rest.
        n = points or max(2000, 8 * coefficient_count(degree))
        golden = (1 + math.sqrt(5)) / 2
        k = np.arange(n) + 0.5
        self.lat = np.degrees(np.arcsin(1 - 2 * k / n))
        self.lon = (np.degrees(2 * math.pi * k / golden) + 180) % 360 - 180
        self.basis = real_harmonics(self.lat, self.lon, degree)  # [n, C]

    def decode(self, coefficients: np.ndarray, refine_steps: int = 24) -> tuple[np.ndarray, np.ndarray]:
        """The mode of Σ c_lm Y_lm for each row of coefficients [q, C]: (lat, lon) arrays [q].

        Grid argmax, then a local search on shrinking rings of 8 points around the best point,
        which converges on the maximum of the smooth field to well under a kilometre.
        """
        coefficients = np.atleast_2d(coefficients)
        best = np.argmax(coefficients @ self.basis.T, axis=1)
        lat, lon = self.lat[best].copy(), self.lon[best].copy()
        spacing = math.degrees(math.sqrt(4 * math.pi / len(self.lat)))
        step = spacing
        ring = np.exp(1j * np.linspace(0, 2 * math.pi, 8, endpoint=False))
        north, east = np.r_[0.0, ring.imag], np.r_[0.0, ring.real]  # the point itself, then the ring
        for _ in range(refine_steps):
            # Offsets in degrees with plain arithmetic (no trigonometry on the moving point), so that
            # the same coefficients give bit-identical candidates, and the same seed the same places.
            lats = np.clip(lat[:, None] + step * north, -90.0, 90.0)
            stretch = np.maximum(np.cos(np.radians(lat)), 1e-6)[:, None]
            lons = (lon[:, None] + step * east / stretch + 180.0) % 360.0 - 180.0
            basis = real_harmonics(lats, lons, self.degree).reshape(*lats.shape, -1)
            values = np.einsum("qc,qkc->qk", coefficients, basis)
            pick = np.argmax(values, axis=1)
            lat, lon = lats[np.arange(len(pick)), pick], lons[np.arange(len(pick)), pick]
            step *= 0.6
        return lat, lon
