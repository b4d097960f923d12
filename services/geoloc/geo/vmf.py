"""von Mises-Fisher kernels on S²: densities, draws, and the cap a kernel's mass fills.

* vMF densities are per steradian (w.r.t. area on the unit sphere):
  f(x) = κ / (2π(1 − e^{−2κ})) · e^{κ(μ·x − 1)}; κ = 0 is the uniform density 1/(4π).
* A weighted point's ``radius_km`` is the great-circle radius of the cap holding HALF
  of its kernel's mass; vmf_kappa_for_radius_km and vmf_radius_km convert between the two.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from geoloc.geo.sphere import EARTH_RADIUS_KM, as_float64, normalised

_SMALL_KAPPA = 1e-4  # below this the series for log C(κ) is exact to double precision
_LARGE_KAPPA = 50.0  # above this e^{−2κ} is negligible and the cap formulas close


def checked_kappa(kappa: ArrayLike) -> np.ndarray:
    k = as_float64(kappa)
    if not np.all(np.isfinite(k) & (k >= 0)):
        raise ValueError(f"kappa must be finite and >= 0, got {kappa!r}")
    return k


def vmf_log_normaliser(k: np.ndarray) -> np.ndarray:
    """log C(κ), C(κ) = κ / (2π(1 − e^{−2κ})) per steradian: the log density at the mean; κ >= 0."""
    small = k < _SMALL_KAPPA
    safe = np.where(small, 1.0, k)
    direct = np.log(safe) - np.log(-np.expm1(-2.0 * safe)) - np.log(2.0 * np.pi)
    # log(2κ / (1 − e^{−2κ})) = κ − κ²/6 + O(κ⁴) removes the 0/0 at κ = 0.
    series = k - k * k / 6.0 - np.log(4.0 * np.pi)
    return np.where(small, series, direct)


def vmf_log_density(x: ArrayLike, mu: ArrayLike, kappa: ArrayLike) -> np.ndarray:
    """log vMF density per steradian at x for mean direction mu; x, mu (..., 3), kappa (...)."""
    x, mu, k = normalised(as_float64(x)), normalised(as_float64(mu)), checked_kappa(kappa)
    # 1 − μ·x from the chord: no cancellation when x ≈ μ, which matters once κ ~ 1e10.
    one_minus_cos = 0.5 * np.sum((x - mu) ** 2, axis=-1)
    return vmf_log_normaliser(k) - k * one_minus_cos


def vmf_sample(mu: ArrayLike, kappa: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n exact draws (n, 3) from vMF(mu, kappa) on S² via the inverse CDF of w = μ·x."""
    mu = normalised(as_float64(mu))
    if mu.shape != (3,):
        raise ValueError(f"mu must have shape (3,), got {mu.shape}")
    k = float(checked_kappa(kappa))
    return vmf_draws(np.broadcast_to(mu, (n, 3)), np.full(n, k), rng)


def vmf_draws(mu: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw from vMF(mu_j, k_j) per row of unit mu (n, 3) and k (n,), vectorised."""
    n = len(mu)
    r = rng.random(n)  # r = 1 − u in [0, 1): log1p below never sees −1
    # 1 − w = −log(u + (1 − u) e^{−2κ}) / κ = −log1p(r · expm1(−2κ)) / κ, stable at any κ; 2r at κ = 0.
    safe = np.where(k > 0, k, 1.0)
    one_minus_w = np.where(k > 0, -np.log1p(r * np.expm1(-2.0 * safe)) / safe, 2.0 * r)
    one_minus_w = np.clip(one_minus_w, 0.0, 2.0)
    sin_theta = np.sqrt(one_minus_w * (2.0 - one_minus_w))
    phi = 2.0 * np.pi * rng.random(n)
    e1 = normalised(np.cross(mu, np.eye(3)[np.argmin(np.abs(mu), axis=-1)]))  # any axis far from mu
    e2 = np.cross(mu, e1)
    x = (
        (1.0 - one_minus_w)[:, None] * mu
        + (sin_theta * np.cos(phi))[:, None] * e1
        + (sin_theta * np.sin(phi))[:, None] * e2
    )
    return normalised(x)


def _cap_height(radius_km: np.ndarray) -> np.ndarray:
    """1 − cos θ for a cap of great-circle radius r, via 2 sin²(θ/2) to keep small caps exact."""
    theta = np.clip(radius_km / EARTH_RADIUS_KM, 0.0, np.pi)
    return 2.0 * np.sin(0.5 * theta) ** 2


def _cap_mass(k: np.ndarray, a: np.ndarray) -> np.ndarray:
    safe = np.where(k > 0, k, 1.0)
    return np.where(k > 0, np.expm1(-safe * a) / np.expm1(-2.0 * safe), 0.5 * a)


def vmf_cap_mass(kappa: ArrayLike, radius_km: ArrayLike) -> np.ndarray:
    """Probability mass of vMF(κ) within great-circle radius_km of its mean; broadcasts."""
    r = as_float64(radius_km)
    if np.any(~(r >= 0)):
        raise ValueError(f"radius_km must be >= 0, got {radius_km!r}")
    return _cap_mass(checked_kappa(kappa), _cap_height(r))


def vmf_kappa_for_radius_km(radius_km: ArrayLike, mass: ArrayLike = 0.5) -> np.ndarray:
    """κ whose cap of great-circle radius_km holds `mass` (in (0, 1)); broadcasts.

    The uniform density (κ = 0) already puts (1 − cos θ)/2 in the cap, so a smaller
    mass cannot be reached with κ ≥ 0 and raises ValueError.
    """
    r, m = np.broadcast_arrays(as_float64(radius_km), as_float64(mass))
    if np.any(~((r > 0) & (r < np.pi * EARTH_RADIUS_KM))):
        raise ValueError(f"radius_km must be in (0, π·R), got {radius_km!r}")
    if np.any(~((m > 0) & (m < 1))):
        raise ValueError(f"mass must be in (0, 1), got {mass!r}")
    a = _cap_height(r)
    if np.any(m < 0.5 * a):
        raise ValueError(
            "mass is below the uniform cap fraction (1 − cos θ)/2 for that radius: "
            "no kappa >= 0 concentrates less than the uniform density"
        )
    # Bisect: the cap mass increases in κ, is ≤ m at κ = 0 and ≥ m at k_closed, the root of
    # 1 − e^{−κa} = m (the equation with e^{−2κ} dropped), which bounds the answer from above.
    k_closed = np.asarray(-np.log1p(-m) / a)
    # Where e^{−2κ} is negligible the closed form is exact, so prefer it to the bisection's last ulps.
    # Above 2·_LARGE_KAPPA the bound is so tight (by m·e^{−2κ}/((1 − m)·a), under 1e-25 at any radius
    # of a metre or more) that the root is above _LARGE_KAPPA too: no bisection needed.
    kappa = k_closed.copy()
    bisect = k_closed < 2 * _LARGE_KAPPA
    if bisect.any():
        lo, hi, a_b, m_b = np.zeros_like(k_closed[bisect]), k_closed[bisect], a[bisect], m[bisect]
        for _ in range(110):
            mid = 0.5 * (lo + hi)
            above = _cap_mass(mid, a_b) > m_b
            hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
        root = 0.5 * (lo + hi)
        kappa[bisect] = np.where(root >= _LARGE_KAPPA, k_closed[bisect], root)
    return kappa


def vmf_radius_km(kappa: ArrayLike, mass: ArrayLike = 0.5) -> np.ndarray:
    """Great-circle radius in km of the cap holding `mass` (in (0, 1]) of vMF(κ); broadcasts."""
    k = checked_kappa(kappa)
    m = as_float64(mass)
    if np.any(~((m > 0) & (m <= 1))):
        raise ValueError(f"mass must be in (0, 1], got {mass!r}")
    safe = np.where(k > 0, k, 1.0)
    # Solve 1 − e^{−κa} = m(1 − e^{−2κ}) for the cap height a = 1 − cos θ.
    a = np.where(k > 0, -np.log1p(m * np.expm1(-2.0 * safe)) / safe, 2.0 * m)
    return 2.0 * np.arcsin(np.sqrt(np.clip(0.5 * a, 0.0, 1.0))) * EARTH_RADIUS_KM
