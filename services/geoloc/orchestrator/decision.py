"""Reading an answer off the fused distribution: the place with the highest expected GeoScore.

GeoScore (geo/geoscore) rewards an answer by its distance from the truth on a 1,493 km scale.
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

from geoloc.geo.geoscore import geoscore_of_km
from geoloc.geo.sphere import EARTH_RADIUS_KM, great_circle_angle

LATTICE_POINTS = 4096  # ~350 km apart: GeoScore changes by under a quarter across one spacing


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
    from geoloc.geo.vmf import vmf_kappa_for_radius_km

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


# Serving reads the table by sin(θ/2), half the chord between kernel and place: that is
# √((1 − c·x)/2) of a dot product, far cheaper than its arccos, and its steps are finest near a
# kernel's centre (1.6 km) and coarsest at the antipode (100 km), where the score is flat.
HALF_CHORD_STEPS = 8192
CHUNK = 1 << 16  # candidates × kernels per block: the block's arrays stay in the CPU's cache


# The prior's radius and the bandwidths recur on every call; points' own radii (token cells) vary,
# so the cache is bounded. lru_cache is safe for fusions running on several threads at once.
@functools.lru_cache(maxsize=4096)
def half_chord_row(radius_km: float) -> np.ndarray:
    """[HALF_CHORD_STEPS + 1] float32, read-only: E[GeoScore] at sin(θ/2) = 0, 1/steps, …, 1 from
    a kernel of this half-mass radius, interpolated from kernel_score_table (linearly in log
    radius, then in angle)."""
    table = kernel_score_table()
    position = float(np.interp(np.log(radius_km), np.log(TABLE_RADII_KM), np.arange(len(TABLE_RADII_KM))))
    low = min(int(position), len(TABLE_RADII_KM) - 2)
    at_radius = table[low] * (1 - (position - low)) + table[low + 1] * (position - low)
    angles = 2 * np.arcsin(np.linspace(0.0, 1.0, HALF_CHORD_STEPS + 1))
    row = np.interp(angles, TABLE_ANGLES, at_radius).astype(np.float32)
    row.flags.writeable = False
    return row


def expected_geoscore(
    centres: np.ndarray, weights: np.ndarray, radius_km: np.ndarray, candidates: np.ndarray
) -> np.ndarray:
    """Σ_k w_k E_{x ~ kernel k}[GeoScore of answering c] [c], for vMF kernels given by their centres
    [k, 3], weights [k] and half-mass radii [k], at candidates [c, 3].

    The angles in float64, the rest in float32 (scores within about 0.01 of 5000 of a float64
    reading of the same table), blockwise so that each block stays in cache."""
    radii, which = np.unique(np.asarray(radius_km, dtype=np.float64), return_inverse=True)
    rows = np.stack([half_chord_row(radius) for radius in radii.tolist()])
    # Each step's value and slope side by side (as one complex64), so that one gather reads both.
    table = (rows + 1j * np.diff(rows, axis=1, append=rows[:, -1:])).astype(np.complex64).ravel()
    offset = (which.ravel() * (HALF_CHORD_STEPS + 1)).astype(np.int32)
    kernels = np.ascontiguousarray(centres.T, dtype=np.float64)
    places = np.ascontiguousarray(candidates, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float32)
    step = max(1, CHUNK // max(len(centres), 1))
    out = np.empty(len(candidates))
    for start in range(0, len(candidates), step):
        cosine = places[start : start + step] @ kernels
        # 1 − cos θ in float64, then float32: in float32 the cosine itself would blur θ by 2 km.
        at = np.subtract(1.0, cosine, out=np.empty(cosine.shape, np.float32), casting="same_kind")
        np.maximum(at, 0.0, out=at)
        at *= 0.5
        np.sqrt(at, out=at)
        at *= HALF_CHORD_STEPS
        np.minimum(at, HALF_CHORD_STEPS, out=at)
        i = at.astype(np.int32)
        at -= i
        i += offset
        step_at = table.take(i)
        out[start : start + step] = (step_at.real + at * step_at.imag) @ w
    return out


NEAREST_FIRST = 8  # neighbours each fixed candidate is compared with before its whole region
COARSE_POINTS = 512  # cells (about 1,000 km apart) through which an answer's own candidates find their fixed neighbours


def _beats(score_a, score_b, index_a, index_b):
    """a beats b: a higher score, or an equal one and an earlier index."""
    return (score_a > score_b) | ((score_a == score_b) & (index_a < index_b))


class FixedCandidates:
    """The candidates every answer begins with (the lattice, the prior's points), and which of them
    lie within region_km of each other, found once: per answer only its own few hundred are new.

    Per answer, a fixed candidate is first compared with its NEAREST_FIRST nearest neighbours, which
    beat almost all of them (scores change smoothly); only the survivors are compared with their
    whole region. An answer's own candidates reach the fixed ones within their region through the
    coarse cell nearest to them, whose list holds every fixed candidate within region_km plus the
    cell's reach."""

    def __init__(self, xyz: np.ndarray, region_km: float):
        self.xyz, self.region_km = xyz, region_km
        n = len(xyz)
        self._near = np.cos(region_km / EARTH_RADIUS_KM)
        rows, cols, dots = [], [], []
        for start in range(0, n, 1024):
            dot = xyz[start : start + 1024] @ xyz.T
            r, c = np.nonzero(dot >= self._near)
            keep = r + start != c
            rows.append(r[keep] + start)
            cols.append(c[keep])
            dots.append(dot[r[keep], c[keep]])
        rows, cols, dots = np.concatenate(rows), np.concatenate(cols), np.concatenate(dots)
        order = np.lexsort((-dots, rows))  # by candidate, nearest neighbour first
        self._cols = cols[order]
        self._count = np.bincount(rows, minlength=n)
        self._start = np.concatenate([[0], np.cumsum(self._count)[:-1]])
        first = np.full((n, NEAREST_FIRST), n)  # n: no neighbour (its score is −∞)
        for j in range(NEAREST_FIRST):
            has = self._count > j
            first[has, j] = self._cols[self._start[has] + j]
        self._first = first
        self._xyz_padded = np.concatenate([xyz, np.zeros((1, 3))])
        self._coarse = fibonacci_lattice(COARSE_POINTS)
        self._cell_reach = np.cos(np.sqrt(4 * np.pi / COARSE_POINTS))  # beyond any point's nearest cell
        reach = (self._coarse @ xyz.T) >= np.cos(region_km / EARTH_RADIUS_KM + np.arccos(self._cell_reach))
        width = int(reach.sum(1).max())
        self._cell_lists = np.full((COARSE_POINTS, width), n)
        for cell, members in enumerate(reach):
            found = np.flatnonzero(members)
            self._cell_lists[cell, : len(found)] = found

    def regional_maxima(self, candidates: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Indices of the candidates (these fixed ones, then the answer's own) whose score no other
        within region_km beats, best first; of equal scores the earlier candidate wins."""
        n = len(self.xyz)
        fixed = scores[:n]
        padded = np.append(fixed, -np.inf)
        index = np.arange(n)
        beaten = np.zeros(len(candidates), dtype=bool)
        beaten[:n] = _beats(padded[self._first], fixed[:, None], self._first, index[:, None]).any(1)
        survivors = np.flatnonzero(~beaten[:n])
        counts = self._count[survivors]
        owner = np.repeat(survivors, counts)
        at = np.repeat(self._start[survivors] - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        other = self._cols[at]
        beaten[owner[_beats(fixed[other], fixed[owner], other, owner)]] = True
        if len(candidates) > n:
            own, own_scores = candidates[n:], scores[n:]
            beaten[n:] = self._own_beaten(own, own_scores, padded, beaten)
        maxima = np.flatnonzero(~beaten)
        return maxima[np.argsort(-scores[maxima], kind="stable")]

    def _own_beaten(self, own: np.ndarray, own_scores: np.ndarray, padded: np.ndarray, beaten: np.ndarray):
        """Which of an answer's own candidates a candidate within region_km beats; marks in `beaten`
        the fixed ones that one of them beats."""
        n = len(self.xyz)
        to_cell = own @ self._coarse.T
        cell = np.argmax(to_cell, axis=1)
        lists = self._cell_lists[cell]
        # Not expected on a Fibonacci lattice of this size; exact all the same.
        outside = to_cell[np.arange(len(own)), cell] < self._cell_reach
        if outside.any():
            lists = np.pad(lists, ((0, 0), (0, n - lists.shape[1])), constant_values=n)
            lists[outside] = np.arange(n)
        dots = np.einsum("ok,olk->ol", own, self._xyz_padded[lists])
        near = (dots >= self._near) & (lists < n)
        neighbour = padded[lists]
        # A fixed candidate comes before every own one, so it wins ties.
        own_beaten = (near & (neighbour >= own_scores[:, None])).any(1)
        beaten[lists[near & (own_scores[:, None] > neighbour)]] = True
        index = np.arange(len(own))
        among = (own @ own.T >= self._near) & _beats(
            own_scores[None, :], own_scores[:, None], index[None, :], index[:, None]
        )
        return own_beaten | among.any(1)


def uniform_cap_mass(radius_km: np.ndarray) -> np.ndarray:
    """The share of the uniform density within radius_km of any point."""
    return (1 - np.cos(np.clip(np.asarray(radius_km) / EARTH_RADIUS_KM, 0, np.pi))) / 2


def radius_holding_mass(distances_km: np.ndarray, uniform_share: float, mass: float) -> float:
    """The smallest radius around a point within which (1 − u)·(share of the draws at `distances_km`)
    + u·(uniform cap mass) reaches `mass`: the structured mixture by its draws, the floor exactly.

    Between two consecutive draws the draws' share is constant and the cap's mass rises as
    (1 − cos(r/R))/2, so each gap has its own closed-form solution; the first gap in which the
    solution falls is the answer."""
    d = np.sort(np.asarray(distances_km, dtype=np.float64))
    n = len(d)
    if uniform_share <= 0:
        return float(d[min(n - 1, max(0, int(np.ceil(mass * n)) - 1))])
    # Gap k runs from the k-th draw (0 km for k = 0) to the next one (half the globe after the last),
    # holding the k nearest draws.
    starts = np.concatenate([[0.0], d])
    ends = np.concatenate([d, [np.pi * EARTH_RADIUS_KM]])
    from_cap = (mass - (1 - uniform_share) * np.arange(n + 1) / n) / uniform_share
    cap_angle = np.arccos(np.clip(1 - 2 * from_cap, -1.0, 1.0))
    radius = np.maximum(starts, cap_angle * EARTH_RADIUS_KM)
    first = int(np.argmax((radius < ends) | (np.arange(n + 1) == n)))
    return float(radius[first])


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
