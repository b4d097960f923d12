"""Reading an answer off the fused distribution: the place with the highest expected GeoScore.

GeoScore (common/geoscore) rewards an answer by its distance from the truth on a 1,493 km scale.
Under the fused distribution, answering place c earns E[5000·exp(−d(x, c)/1492.7 km)] in
expectation, and the best guess is the candidate that maximises it. The mixture's expectation is
the weighted sum of its components' (the prior, each expert; the uniform floor adds the same to
every place and is left out), and a vMF kernel's expectation depends only on its radius and its
angle from the place (tabulated once), so each component's expected score at every candidate is
computed once, exactly up to interpolation, and the weights only mix these columns:
fitting (training/decision_fit.py) searches the weights over exactly the tables serving builds.
When the experts carry little weight the prior's column wins, and the answer is the prior's best
place: the weights decide, on held-out photographers, how much the experts may move it.

Candidates: an equal-area lattice about 350 km apart, the prior's points, and the answer's own
expert points and the modes of each expert's kernels, so that a sharp expert can be answered
exactly rather than to the nearest lattice point.

Hypotheses are the maximisers of distinct regions: candidates whose expected score is the highest
within `region_km` of them. Each holds the mass nearer to it than to any other (its Voronoi cell:
the structured draws in it, and the uniform floor's share of the sphere's area), with radii from
its own draws. The radii around the best guess hold their mass of the whole mixture, the floor's
part exactly (a cap of angle θ holds (1 − cos θ)/2 of the uniform density).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from geoloc.common.geoscore import geoscore_of_km
from geoloc.common.sphere import EARTH_RADIUS_KM, great_circle_angle

LATTICE_POINTS = 4096  # ~350 km apart: GeoScore changes by under a quarter across one spacing
CHUNK = 1 << 21  # candidates × kernels per block, bounding memory


def fibonacci_lattice(n: int) -> np.ndarray:
    """n unit vectors [n, 3] spread evenly (each stands for an equal area) over the sphere."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


# The expected GeoScore of one vMF kernel at a place depends only on the kernel's half-mass radius
# and its angle from the place: tabulated once, on a grid fine enough that linear interpolation
# between grid points is well below the score's Monte Carlo error at any practical number of draws.
TABLE_RADII_KM = np.geomspace(0.5, 10_000.0, 96)  # kernels are capped at a hemisphere (~10,007 km)
TABLE_ANGLES = np.linspace(0.0, np.pi, 721)  # 28 km apart
QUADRATURE = (64, 32)  # strata of the kernel's angle from its centre, and of its bearing


@functools.cache
def kernel_score_table() -> np.ndarray:
    """[radii, angles]: E[GeoScore of answering at angle θ from a kernel's centre], x ~ that vMF.

    Stratified quadrature: the kernel's angle α from its centre at its quantiles (the vMF's
    P(1 − cos α ≤ a) = (1 − e^(−κa)) / (1 − e^(−2κ)) inverted), bearings φ evenly spaced."""
    from geoloc.common.sphere import vmf_kappa_for_radius_km

    n_angle, n_bearing = QUADRATURE
    p = (np.arange(n_angle) + 0.5) / n_angle
    phi = 2 * np.pi * (np.arange(n_bearing) + 0.5) / n_bearing
    cos_t, sin_t = np.cos(TABLE_ANGLES)[:, None, None], np.sin(TABLE_ANGLES)[:, None, None]
    table = np.empty((len(TABLE_RADII_KM), len(TABLE_ANGLES)))
    for row, radius in enumerate(TABLE_RADII_KM):
        kappa = float(vmf_kappa_for_radius_km(radius, 0.5))
        height = -np.log1p(-p * -np.expm1(-2 * kappa)) / kappa  # 1 − cos α
        cos_a = np.clip(1 - height, -1, 1)[None, :, None]
        sin_a = np.sqrt(1 - cos_a**2)
        cosine = np.clip(cos_a * cos_t + sin_a * sin_t * np.cos(phi)[None, None, :], -1, 1)
        table[row] = geoscore_of_km(np.arccos(cosine) * EARTH_RADIUS_KM).mean(axis=(1, 2))
    return table


def expected_geoscore(
    centres: np.ndarray, weights: np.ndarray, radius_km: np.ndarray, candidates: np.ndarray
) -> np.ndarray:
    """Σ_k w_k E_{x ~ kernel k}[GeoScore of answering c] [c], for vMF kernels given by their centres
    [k, 3], weights [k] and half-mass radii [k], at candidates [c, 3]."""
    table = kernel_score_table()
    position = np.interp(np.log(radius_km), np.log(TABLE_RADII_KM), np.arange(len(TABLE_RADII_KM)))
    low = np.minimum(position.astype(int), len(TABLE_RADII_KM) - 2)
    rows = table[low] * (1 - (position - low))[:, None] + table[low + 1] * (position - low)[:, None]  # [k, angles]
    step = max(1, CHUNK // max(len(centres), 1))
    spacing = TABLE_ANGLES[1]
    kernel = np.arange(len(centres))[None, :]
    out = np.empty(len(candidates))
    for start in range(0, len(candidates), step):
        at = np.arccos(np.clip(candidates[start : start + step] @ centres.T, -1.0, 1.0)) / spacing
        i = np.minimum(at.astype(int), len(TABLE_ANGLES) - 2)
        f = at - i
        out[start : start + step] = (rows[kernel, i] * (1 - f) + rows[kernel, i + 1] * f) @ weights
    return out


class FixedCandidates:
    """The candidates every answer begins with (the lattice, the prior's points), and which of them
    lie within region_km of each other, found once: per answer only its own few hundred are new."""

    def __init__(self, xyz: np.ndarray, region_km: float):
        self.xyz, self.region_km = xyz, region_km
        self._near = np.cos(region_km / EARTH_RADIUS_KM)
        rows, cols = [], []
        for start in range(0, len(xyz), 1024):
            r, c = np.nonzero(xyz[start : start + 1024] @ xyz.T >= self._near)
            rows.append(r + start)
            cols.append(c)
        self._rows, self._cols = np.concatenate(rows), np.concatenate(cols)

    def regional_maxima(self, candidates: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Indices of the candidates (these fixed ones, then the answer's own) whose score no other
        within region_km beats, best first; of equal scores the earlier candidate wins."""
        n = len(self.xyz)

        def beats(s_a, s_b, a, b):
            return (s_a > s_b) | ((s_a == s_b) & (a < b))

        beaten = np.zeros(len(candidates), dtype=bool)
        rows, cols = self._rows, self._cols
        beaten[rows[beats(scores[cols], scores[rows], cols, rows)]] = True
        if len(candidates) > n:
            own = np.arange(n, len(candidates))
            near = candidates[n:] @ candidates.T >= self._near  # [own, all]
            everyone = np.arange(len(candidates))
            own_beaten = beats(scores[None, :], scores[own, None], everyone[None, :], own[:, None])
            beaten[n:] |= (near & own_beaten).any(1)
            fixed_beaten = beats(scores[own, None], scores[None, :n], own[:, None], everyone[None, :n])
            beaten[:n] |= (near[:, :n] & fixed_beaten).any(0)
        maxima = np.flatnonzero(~beaten)
        return maxima[np.argsort(-scores[maxima], kind="stable")]


def uniform_cap_mass(radius_km: np.ndarray) -> np.ndarray:
    """The share of the uniform density within radius_km of any point."""
    return (1 - np.cos(np.clip(np.asarray(radius_km) / EARTH_RADIUS_KM, 0, np.pi))) / 2


def radius_holding_mass(distances_km: np.ndarray, uniform_share: float, mass: float) -> float:
    """The smallest radius around a point within which (1 − u)·(share of the draws at `distances_km`)
    + u·(uniform cap mass) reaches `mass`: the structured mixture by its draws, the floor exactly."""
    d = np.sort(np.asarray(distances_km, dtype=np.float64))
    if uniform_share <= 0:
        return float(d[min(len(d) - 1, max(0, int(np.ceil(mass * len(d))) - 1))])

    def held(r: float) -> float:
        return (1 - uniform_share) * np.searchsorted(d, r, side="right") / len(d) + uniform_share * float(
            uniform_cap_mass(r)
        )

    low, high = 0.0, np.pi * EARTH_RADIUS_KM
    for _ in range(60):  # bisection to well under a metre
        middle = (low + high) / 2
        low, high = (middle, high) if held(middle) < mass else (low, middle)
    return high


@dataclass(frozen=True)
class Region:
    index: int  # into the candidates
    probability: float  # of the whole mixture, nearest this region's maximiser
    radius_50_km: float  # of its own draws, around it
    radius_90_km: float


def regions_of(
    fixed: FixedCandidates,
    candidates: np.ndarray,
    scores: np.ndarray,
    draws: np.ndarray,
    uniform_share: float,
    lattice: np.ndarray,
    top_k: int,
) -> list[Region]:
    """The best-scoring region first, then the most probable of the others, top_k in all; draws [n, 3]
    are of the structured mixture (all but the uniform floor), `lattice` equal-area points."""
    maxima = fixed.regional_maxima(candidates, scores)
    places = candidates[maxima]
    cell = np.argmax(draws @ places.T, axis=1)
    area = np.bincount(np.argmax(lattice @ places.T, axis=1), minlength=len(maxima)) / len(lattice)
    counts = np.bincount(cell, minlength=len(maxima))
    probability = (1 - uniform_share) * counts / len(draws) + uniform_share * area
    others = [j for j in np.argsort(-probability, kind="stable") if j != 0 and counts[j] > 0]
    regions = []
    for j in [0, *others][:top_k]:
        own = draws[cell == j] if counts[j] else draws  # the best guess's cell may hold no draw
        distance = great_circle_angle(own, places[j]) * EARTH_RADIUS_KM
        r50, r90 = (float(np.quantile(distance, q, method="inverted_cdf")) for q in (0.5, 0.9))
        regions.append(Region(int(maxima[j]), float(probability[j]), max(r50, 1e-3), max(r90, r50, 1e-3)))
    return regions
