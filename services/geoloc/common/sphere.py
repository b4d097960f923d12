"""Maths on the sphere: distances, unit vectors, vMF kernels, their mixtures and modes.

Conventions used across the project:

* The Earth is a sphere of radius EARTH_RADIUS_KM; distances are great-circle km.
* Latitude/longitude are degrees, latitude in [-90, 90], longitude in [-180, 180).
* Unit vectors are float64 in the last axis of shape (..., 3): x toward (0°, 0°),
  y toward (0°, 90°E), z toward the north pole. Every function broadcasts over the
  leading dimensions.
* von Mises-Fisher (vMF) densities are per steradian (w.r.t. area on the unit sphere):
  f(x) = κ / (2π(1 − e^{−2κ})) · e^{κ(μ·x − 1)}; κ = 0 is the uniform density 1/(4π).
* A weighted point's ``radius_km`` is the great-circle radius of the cap holding HALF
  of its kernel's mass; vmf_kappa_for_radius_km and vmf_radius_km convert between the two.

S2 cells are in geoloc.common.s2cells.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

EARTH_RADIUS_KM = 6371.0
HEMISPHERE_RADIUS_KM = 0.5 * np.pi * EARTH_RADIUS_KM  # the great-circle radius of half the sphere


# --- Distances and unit vectors ----------------------------------------------


def haversine_km(lat1_deg, lon1_deg, lat2_deg, lon2_deg) -> np.ndarray:
    """Great-circle distance in km on a sphere of radius EARTH_RADIUS_KM; broadcasts."""
    lat1, lon1, lat2, lon2 = (
        np.radians(np.asarray(v, dtype=np.float64)) for v in (lat1_deg, lon1_deg, lat2_deg, lon2_deg)
    )
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _f64(a: ArrayLike) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def latlon_to_unit(lat_deg: ArrayLike, lon_deg: ArrayLike) -> np.ndarray:
    """Unit vectors (..., 3) for latitude/longitude in degrees."""
    lat, lon = np.broadcast_arrays(np.radians(_f64(lat_deg)), np.radians(_f64(lon_deg)))
    cos_lat = np.cos(lat)
    # Same operation order as S2's LatLng.ToPoint, so leaf cell ids match bit for bit.
    return np.stack([np.cos(lon) * cos_lat, np.sin(lon) * cos_lat, np.sin(lat)], axis=-1)


def unit_to_latlon(xyz: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(lat_deg in [-90, 90], lon_deg in [-180, 180)) of vectors (..., 3); any length > 0."""
    v = _f64(xyz)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    # atan2 is scale invariant, which is what makes non-normalised input safe.
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    lon = np.degrees(np.arctan2(y, x))
    return lat, np.where(lon >= 180.0, lon - 360.0, lon)


# --- Great-circle geometry ---------------------------------------------------


def great_circle_angle(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Angle in radians, in [0, π], between vectors (..., 3); any length > 0."""
    x, y = _f64(x), _f64(y)
    # atan2(|x×y|, x·y) keeps full relative precision near 0 and near π, unlike acos.
    return np.arctan2(np.linalg.norm(np.cross(x, y), axis=-1), np.sum(x * y, axis=-1))


def km_to_radians(km: ArrayLike) -> np.ndarray:
    """Great-circle distance in km -> central angle in radians."""
    return _f64(km) / EARTH_RADIUS_KM


def radians_to_km(rad: ArrayLike) -> np.ndarray:
    """Central angle in radians -> great-circle distance in km."""
    return _f64(rad) * EARTH_RADIUS_KM


_DEGENERATE_SIN = 1e-12  # |x0 × x1| below this: the arc's direction is numerically undefined


def _default_tangent(x0: np.ndarray) -> np.ndarray:
    """Unit tangent at x0 pointing north; at the poles, toward +x (the lon 0 meridian)."""
    at_pole = np.hypot(x0[..., :1], x0[..., 1:2]) < _DEGENERATE_SIN
    ref = np.where(at_pole, [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    return _normalise(ref - np.sum(ref * x0, axis=-1, keepdims=True) * x0)


def geodesic_interpolate(x0: ArrayLike, x1: ArrayLike, t: ArrayLike) -> np.ndarray:
    """Point at fraction t along the shortest great-circle arc x0 -> x1 (slerp); unit norm.

    x0, x1: (..., 3), t: (...), all broadcast; t outside [0, 1] extrapolates along the
    same great circle. Identical endpoints return x0. For (numerically) antipodal
    endpoints every great circle is shortest; we leave x0 heading north along its
    meridian (from a pole: along the lon 0 meridian, toward +x).
    """
    x0, x1 = _normalise(_f64(x0)), _normalise(_f64(x1))
    t = _f64(t)[..., None]
    axis = np.cross(x0, x1)
    sin_theta = np.linalg.norm(axis, axis=-1, keepdims=True)
    theta = np.arctan2(sin_theta, np.sum(x0 * x1, axis=-1, keepdims=True))
    degenerate = sin_theta < _DEGENERATE_SIN
    # (x0 × x1) × x0 = x1 − (x0·x1) x0: the in-plane direction toward x1, of length sin θ.
    tangent = np.cross(axis, x0) / np.where(degenerate, 1.0, sin_theta)
    tangent = np.where(degenerate, _default_tangent(x0), tangent)
    angle = t * theta
    return _normalise(np.cos(angle) * x0 + np.sin(angle) * tangent)


# --- von Mises-Fisher kernels on S² ------------------------------------------

_SMALL_KAPPA = 1e-4  # below this the series for log C(κ) is exact to double precision
_LARGE_KAPPA = 50.0  # above this e^{−2κ} is negligible and the cap formulas close


def _check_kappa(kappa: ArrayLike) -> np.ndarray:
    k = _f64(kappa)
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
    x, mu, k = _normalise(_f64(x)), _normalise(_f64(mu)), _check_kappa(kappa)
    # 1 − μ·x from the chord: no cancellation when x ≈ μ, which matters once κ ~ 1e10.
    one_minus_cos = 0.5 * np.sum((x - mu) ** 2, axis=-1)
    return vmf_log_normaliser(k) - k * one_minus_cos


def vmf_sample(mu: ArrayLike, kappa: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n exact draws (n, 3) from vMF(mu, kappa) on S² via the inverse CDF of w = μ·x."""
    mu = _normalise(_f64(mu))
    if mu.shape != (3,):
        raise ValueError(f"mu must have shape (3,), got {mu.shape}")
    k = float(_check_kappa(kappa))
    return _vmf_draws(np.broadcast_to(mu, (n, 3)), np.full(n, k), rng)


def vmf_mixture_sample(
    centres: ArrayLike, weights: ArrayLike, kappa: ArrayLike, n: int, rng: np.random.Generator
) -> np.ndarray:
    """n exact draws (n, 3) from Σ w_i vMF(c_i, κ_i): a component by weight, then its vMF."""
    c, w, k = _prepare_mixture(centres, weights, kappa)
    component = rng.choice(len(w), size=n, p=w)
    return _vmf_draws(c[component], k[component], rng)


def _vmf_draws(mu: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw from vMF(mu_j, k_j) per row of unit mu (n, 3) and k (n,), vectorised."""
    n = len(mu)
    r = rng.random(n)  # r = 1 − u in [0, 1): log1p below never sees −1
    # 1 − w = −log(u + (1 − u) e^{−2κ}) / κ = −log1p(r · expm1(−2κ)) / κ, stable at any κ; 2r at κ = 0.
    safe = np.where(k > 0, k, 1.0)
    one_minus_w = np.where(k > 0, -np.log1p(r * np.expm1(-2.0 * safe)) / safe, 2.0 * r)
    one_minus_w = np.clip(one_minus_w, 0.0, 2.0)
    sin_theta = np.sqrt(one_minus_w * (2.0 - one_minus_w))
    phi = 2.0 * np.pi * rng.random(n)
    e1 = _normalise(np.cross(mu, np.eye(3)[np.argmin(np.abs(mu), axis=-1)]))  # any axis far from mu
    e2 = np.cross(mu, e1)
    x = (
        (1.0 - one_minus_w)[:, None] * mu
        + (sin_theta * np.cos(phi))[:, None] * e1
        + (sin_theta * np.sin(phi))[:, None] * e2
    )
    return _normalise(x)


def _cap_height(radius_km: np.ndarray) -> np.ndarray:
    """1 − cos θ for a cap of great-circle radius r, via 2 sin²(θ/2) to keep small caps exact."""
    theta = np.clip(radius_km / EARTH_RADIUS_KM, 0.0, np.pi)
    return 2.0 * np.sin(0.5 * theta) ** 2


def _cap_mass(k: np.ndarray, a: np.ndarray) -> np.ndarray:
    safe = np.where(k > 0, k, 1.0)
    return np.where(k > 0, np.expm1(-safe * a) / np.expm1(-2.0 * safe), 0.5 * a)


def vmf_cap_mass(kappa: ArrayLike, radius_km: ArrayLike) -> np.ndarray:
    """Probability mass of vMF(κ) within great-circle radius_km of its mean; broadcasts."""
    r = _f64(radius_km)
    if np.any(~(r >= 0)):
        raise ValueError(f"radius_km must be >= 0, got {radius_km!r}")
    return _cap_mass(_check_kappa(kappa), _cap_height(r))


def vmf_kappa_for_radius_km(radius_km: ArrayLike, mass: ArrayLike = 0.5) -> np.ndarray:
    """κ whose cap of great-circle radius_km holds `mass` (in (0, 1)); broadcasts.

    The uniform density (κ = 0) already puts (1 − cos θ)/2 in the cap, so a smaller
    mass cannot be reached with κ ≥ 0 and raises ValueError.
    """
    r, m = np.broadcast_arrays(_f64(radius_km), _f64(mass))
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
    k = _check_kappa(kappa)
    m = _f64(mass)
    if np.any(~((m > 0) & (m <= 1))):
        raise ValueError(f"mass must be in (0, 1], got {mass!r}")
    safe = np.where(k > 0, k, 1.0)
    # Solve 1 − e^{−κa} = m(1 − e^{−2κ}) for the cap height a = 1 − cos θ.
    a = np.where(k > 0, -np.log1p(m * np.expm1(-2.0 * safe)) / safe, 2.0 * m)
    return 2.0 * np.arcsin(np.sqrt(np.clip(0.5 * a, 0.0, 1.0))) * EARTH_RADIUS_KM


# --- Mixtures and modes ------------------------------------------------------

_CHUNK_ELEMENTS = 4_000_000  # bound on rows × centres held in memory at once


def _prepare_mixture(centers: ArrayLike, weights: ArrayLike, kappa: ArrayLike):
    c = _normalise(_f64(centers))
    if c.ndim != 2 or c.shape[1] != 3 or len(c) == 0:
        raise ValueError(f"centers must have shape (n, 3) with n >= 1, got {c.shape}")
    w = _f64(weights)
    if w.shape != (len(c),) or not np.all(np.isfinite(w) & (w >= 0)) or w.sum() <= 0:
        raise ValueError("weights must be (n,), finite, >= 0 and not all zero")
    k = np.broadcast_to(_check_kappa(kappa), (len(c),))
    return c, w / w.sum(), k


def _row_chunks(n_rows: int, n_cols: int) -> Iterator[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, start + step)


def _kernel_terms(x: np.ndarray, c: np.ndarray, log_coef: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(m, n) log-terms log_coef_i + κ_i (c_i·x − 1) for rows x (m, 3)."""
    return log_coef + k * (x @ c.T - 1.0)


def _safe_max(terms: np.ndarray) -> np.ndarray:
    top = terms.max(axis=1, keepdims=True)
    return np.where(np.isfinite(top), top, 0.0)


def mixture_log_density(x: ArrayLike, centers: ArrayLike, weights: ArrayLike, kappa: ArrayLike) -> np.ndarray:
    """log Σ_i w_i vMF(x; c_i, κ_i) per steradian, weights normalised to sum 1.

    x: (..., 3); centers (n, 3); weights (n,); kappa scalar or (n,).
    """
    c, w, k = _prepare_mixture(centers, weights, kappa)
    x = _normalise(_f64(x))
    flat = x.reshape(-1, 3)
    with np.errstate(divide="ignore"):  # zero weights contribute log 0 = −inf
        log_coef = np.log(w) + vmf_log_normaliser(k)
    out = np.empty(len(flat))
    for sl in _row_chunks(len(flat), len(c)):
        terms = _kernel_terms(flat[sl], c, log_coef, k)
        top = _safe_max(terms)
        out[sl] = top[:, 0] + np.log(np.exp(terms - top).sum(axis=1))
    return out.reshape(x.shape[:-1])


def _ascend(x: np.ndarray, c, log_coef, k, max_iter: int, tol_rad: float) -> np.ndarray:
    x = x.copy()
    active = np.arange(len(x))
    for _ in range(max_iter):
        if active.size == 0:
            break
        xa = x[active]
        terms = _kernel_terms(xa, c, log_coef, k)
        step = np.exp(terms - _safe_max(terms)) @ c
        norm = np.linalg.norm(step, axis=1, keepdims=True)
        # A zero gradient (e.g. every κ = 0) is a fixed point: stay put.
        stuck = norm[:, 0] <= 0
        new = np.where(stuck[:, None], xa, step / np.where(stuck[:, None], 1.0, norm))
        moved = np.linalg.norm(new - xa, axis=1)  # the chord: the angle to well below tol_rad
        x[active] = new
        active = active[(moved > tol_rad) & ~stuck]
    return x


def spherical_mean_shift(
    starts: ArrayLike,
    centers: ArrayLike,
    weights: ArrayLike,
    kappa: ArrayLike,
    max_iter: int = 200,
    tol_rad: float = 1e-9,
) -> np.ndarray:
    """Ascend the vMF mixture from each start (..., 3); returns the converged unit vectors.

    Step: x ← normalise(Σ_i w_i κ_i C(κ_i) e^{κ_i(c_i·x − 1)} c_i), the direction of the
    mixture's gradient, until a step moves less than tol_rad (or max_iter steps).
    """
    c, w, k = _prepare_mixture(centers, weights, kappa)
    x = _normalise(_f64(starts))
    flat = x.reshape(-1, 3).copy()
    # κ_i C(κ_i) is each kernel's gradient scale: without it wide kernels would be over-weighted.
    with np.errstate(divide="ignore"):
        log_coef = np.log(w) + np.log(k) + vmf_log_normaliser(k)
    for sl in _row_chunks(len(flat), len(c)):
        flat[sl] = _ascend(flat[sl], c, log_coef, k, max_iter, tol_rad)
    return flat.reshape(x.shape)


@dataclass(frozen=True, eq=False)
class Mode:
    """A local maximum of a vMF mixture.

    xyz is a read-only unit vector; log_density is per steradian; mass is the total
    normalised weight of the centres assigned to this mode (all modes sum to 1).
    """

    lat_deg: float
    lon_deg: float
    xyz: np.ndarray
    log_density: float
    mass: float


def responsible_modes(
    centres: np.ndarray, kappa: np.ndarray, mode_xyz: np.ndarray, mode_log_density: np.ndarray
) -> np.ndarray:
    """For each unit centre i (m, 3) with κ_i (m,), the index of the mode (k, 3) most responsible for
    it: argmax_j log p(m_j) + κ_i (c_i·m_j − 1), its own kernel weighted by the mode's density. The
    nearest mode, tilted toward taller ones, whose basins are larger."""
    owner = np.empty(len(centres), dtype=np.int64)
    for sl in _row_chunks(len(centres), len(mode_xyz)):
        score = mode_log_density + kappa[sl, None] * (centres[sl] @ mode_xyz.T - 1.0)
        owner[sl] = np.argmax(score, axis=1)
    return owner


def find_modes(
    centers: ArrayLike,
    weights: ArrayLike,
    kappa: ArrayLike,
    merge_km: float = 50.0,
    max_starts: int = 512,
    tol_rad: float = 1e-9,
) -> list[Mode]:
    """Modes of Σ w_i vMF(c_i, κ_i), sorted by log_density descending.

    Mean-shift runs from the heaviest `max_starts` centres (all of them if there are
    that few); end points within merge_km merge into the densest of them. A started
    centre's weight goes to the mode its ascent reached; each other centre goes to the
    mode most responsible for it (responsible_modes).
    """
    c, w, k = _prepare_mixture(centers, weights, kappa)
    if max_starts < 1:
        raise ValueError(f"max_starts must be >= 1, got {max_starts}")
    # Ties (e.g. equal weights) break in a fixed pseudo-random order, so that input order,
    # often grouped by place, cannot decide which regions get starts.
    tiebreak = np.random.default_rng(0).permutation(len(w))
    order = np.lexsort((tiebreak, -w))
    started, leftover = order[:max_starts], order[max_starts:]
    ends = spherical_mean_shift(c[started], c, w, k, tol_rad=tol_rad)
    end_logp = mixture_log_density(ends, c, w, k)

    merge_rad = km_to_radians(merge_km)
    between = great_circle_angle(ends[:, None, :], ends[None, :, :])
    reps: list[int] = []
    label = np.empty(len(ends), dtype=np.int64)
    for e in np.argsort(-end_logp, kind="stable"):  # densest first: each mode sits at its best end point
        if reps:
            angles = between[reps, e]
            nearest = int(np.argmin(angles))
            if angles[nearest] <= merge_rad:
                label[e] = nearest
                continue
        label[e] = len(reps)
        reps.append(int(e))
    mode_xyz, mode_logp = ends[reps], end_logp[reps]

    mass = np.zeros(len(reps))
    np.add.at(mass, label, w[started])
    np.add.at(mass, responsible_modes(c[leftover], k[leftover], mode_xyz, mode_logp), w[leftover])

    lat, lon = unit_to_latlon(mode_xyz)
    modes = []
    for j in np.argsort(-mode_logp, kind="stable"):
        xyz = mode_xyz[j].copy()
        xyz.flags.writeable = False
        modes.append(Mode(float(lat[j]), float(lon[j]), xyz, float(mode_logp[j]), float(mass[j])))
    return modes
