"""Mixtures of vMF kernels on the sphere: their density, mean-shift ascent and the modes it finds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from geoloc.geo.sphere import as_float64, great_circle_angle, km_to_radians, normalised, unit_to_latlon
from geoloc.geo.vmf import checked_kappa, vmf_draws, vmf_log_normaliser

_CHUNK_ELEMENTS = 4_000_000  # bound on rows × centres held in memory at once


def _prepare_mixture(centers: ArrayLike, weights: ArrayLike, kappa: ArrayLike):
    c = normalised(as_float64(centers))
    if c.ndim != 2 or c.shape[1] != 3 or len(c) == 0:
        raise ValueError(f"centers must have shape (n, 3) with n >= 1, got {c.shape}")
    w = as_float64(weights)
    if w.shape != (len(c),) or not np.all(np.isfinite(w) & (w >= 0)) or w.sum() <= 0:
        raise ValueError("weights must be (n,), finite, >= 0 and not all zero")
    k = np.broadcast_to(checked_kappa(kappa), (len(c),))
    return c, w / w.sum(), k


def vmf_mixture_sample(
    centres: ArrayLike, weights: ArrayLike, kappa: ArrayLike, n: int, rng: np.random.Generator
) -> np.ndarray:
    """n exact draws (n, 3) from Σ w_i vMF(c_i, κ_i): a component by weight, then its vMF."""
    c, w, k = _prepare_mixture(centres, weights, kappa)
    component = rng.choice(len(w), size=n, p=w)
    return vmf_draws(c[component], k[component], rng)


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
    x = normalised(as_float64(x))
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
    x = normalised(as_float64(starts))
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
