"""The slow reference of the fused answer: the decision computed the plain way, for the fast one to
be checked against.

Three parts of serving are written for speed, and each has its plain counterpart here:
- the expected GeoScore: here in float64, from the kernel table read by angle (an arccos per
  candidate and kernel), where serving reads a table by sin(θ/2) in float32, blockwise;
- the regional maxima: here every candidate against every other, where serving compares most
  candidates with their nearest neighbours only, and the answer's own through coarse cells;
- the experts' modes: here ascended to 1e-9 rad, where serving stops at MODE_TOL_RAD.
`reference_fuse` is `fusion.fuse` with these three swapped in, on a prior of its own (a prior
caches its scores at the fixed candidates). `same_best_guess` is the comparison: within 1 km, or
an exact tie (TIE_POINTS).
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np

from geoloc.geo.sphere import EARTH_RADIUS_KM, haversine_km, latlon_to_unit
from geoloc.orchestrator import decision, fusion
from geoloc.orchestrator.decision import TABLE_ANGLES, TABLE_RADII_KM, kernel_score_table


def reference_expected_geoscore(centres, weights, radius_km, candidates) -> np.ndarray:
    table = kernel_score_table()
    position = np.interp(np.log(radius_km), np.log(TABLE_RADII_KM), np.arange(len(TABLE_RADII_KM)))
    low = np.minimum(position.astype(int), len(TABLE_RADII_KM) - 2)
    rows = table[low] * (1 - (position - low))[:, None] + table[low + 1] * (position - low)[:, None]
    at = np.arccos(np.clip(candidates @ centres.T, -1.0, 1.0)) / TABLE_ANGLES[1]
    i = np.minimum(at.astype(int), len(TABLE_ANGLES) - 2)
    f = at - i
    kernel = np.arange(len(centres))[None, :]
    return (rows[kernel, i] * (1 - f) + rows[kernel, i + 1] * f) @ weights


def reference_regional_maxima(self, candidates, scores) -> np.ndarray:
    near = candidates @ candidates.T >= np.cos(self.region_km / EARTH_RADIUS_KM)
    index = np.arange(len(candidates))
    better = (scores[None, :] > scores[:, None]) | (
        (scores[None, :] == scores[:, None]) & (index[None, :] < index[:, None])
    )
    maxima = np.flatnonzero(~(near & better).any(axis=1))
    return maxima[np.argsort(-scores[maxima], kind="stable")]


@contextlib.contextmanager
def slow_reference():
    saved = fusion.expected_geoscore, decision.FixedCandidates.regional_maxima, fusion.MODE_TOL_RAD
    fusion.expected_geoscore = reference_expected_geoscore
    decision.FixedCandidates.regional_maxima = reference_regional_maxima
    fusion.MODE_TOL_RAD = 1e-9
    try:
        yield
    finally:
        fusion.expected_geoscore, decision.FixedCandidates.regional_maxima, fusion.MODE_TOL_RAD = saved


def reference_fuse(answers, params, prior, top_k: int = 5, seed: int = 0) -> fusion.FusedAnswer:
    own_prior = copy.copy(prior)  # the same points in the same order, without the fast scores it cached
    own_prior._fixed_scores, own_prior._fixed_by_region, own_prior._answer_entropy = None, {}, {}
    with slow_reference():
        return fusion.fuse(answers, params, own_prior, top_k, seed)


TIE_POINTS = 0.01  # of GeoScore's 5000: two places whose expected scores differ by less are a tie


def reference_expected_score(answers, params, prior, lat_deg: float, lon_deg: float) -> float:
    """The mixture's expected GeoScore of answering (lat, lon), computed the slow way (without the
    uniform floor's constant, as the decision compares places)."""
    place = latlon_to_unit(np.array([lat_deg]), np.array([lon_deg]))
    shares = fusion.build_mixture(answers, params, prior).expert_weights
    radius = np.full(len(prior.centres), prior.bandwidth_km)
    score = shares[fusion.PRIOR] * reference_expected_geoscore(prior.centres, prior.weights, radius, place)
    for expert, (centres, weights, radii) in fusion.weighted_parts(answers, params, prior).items():
        score = score + shares[expert] * reference_expected_geoscore(centres, weights, radii, place)
    return float(score[0])


def same_best_guess(fast, slow, answers, params, prior) -> bool:
    """Within 1 km of the reference's best guess, or as good as it to within TIE_POINTS: places
    far apart can tie to a millionth of a point, and then any change of summation order picks."""
    a, b = fast.best_guess, slow.best_guess
    if haversine_km(a.lat_deg, a.lon_deg, b.lat_deg, b.lon_deg) <= 1.0:
        return True
    fast_score = reference_expected_score(answers, params, prior, a.lat_deg, a.lon_deg)
    return fast_score >= reference_expected_score(answers, params, prior, b.lat_deg, b.lon_deg) - TIE_POINTS
