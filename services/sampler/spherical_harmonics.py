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

from geoloc.common.geodesy import latlon_to_unit, unit_to_latlon


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
        directions = np.exp(1j * np.linspace(0, 2 * math.pi, 8, endpoint=False))
        for _ in range(refine_steps):
            x = latlon_to_unit(lat, lon)
            candidates = [(lat, lon)]
            for d in directions:
                moved = _step(x, d.real * step, d.imag * step)
                candidates.append(unit_to_latlon(moved))
            lats = np.stack([c[0] for c in candidates], axis=1)
            lons = np.stack([c[1] for c in candidates], axis=1)
            values = np.einsum("qc,qkc->qk", coefficients, real_harmonics(lats, lons, self.degree).reshape(*lats.shape, -1))
            pick = np.argmax(values, axis=1)
            lat, lon = lats[np.arange(len(pick)), pick], lons[np.arange(len(pick)), pick]
            step *= 0.6
        return lat, lon


def _step(x: np.ndarray, north_deg: float, east_deg: float) -> np.ndarray:
    """Points moved from unit vectors x [q, 3] by small angles to the north and the east."""
    z = np.array([0.0, 0.0, 1.0])
    east = np.cross(z, x)
    norm = np.linalg.norm(east, axis=1, keepdims=True)
    east = np.where(norm > 1e-12, east / np.maximum(norm, 1e-12), np.array([0.0, 1.0, 0.0]))
    north = np.cross(x, east)
    moved = x + math.radians(north_deg) * north + math.radians(east_deg) * east
    return moved / np.linalg.norm(moved, axis=1, keepdims=True)
