"""Fitting the decision: the prior's bandwidth, the mixing weights and the uniform floor, on GeoScore.

The likelihood fit (training/fusion.py) gives each expert's kernel bandwidth (but an add-on's, an
expert that answers only some photos: fit_add_on chooses it here, with its weight); it also gives mixing
weights, but those reward the density at the truth, not the answer read off it, and on Im2GPS3k
they let the experts move the answer further than held-out photographers bear out. Here the
weights are chosen for the GeoScore of the best guess itself: for each photo, serving's own score
table (fusion.score_table: every component's expected GeoScore at every candidate) is built once,
and a set of weights picks, per photo, the candidate that maximises their mix, scored against the
true place. The objective is a photo-weighted mean, so that one prolific photographer need not
decide it (`photo_weights`). The floor is then the smallest share of the uniform density under
which the 90 % radius holds the truth for 90 % of the photos (radii as serving computes them).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from geoloc.geo.geoscore import geoscore_of_km
from geoloc.geo.sphere import EARTH_RADIUS_KM, great_circle_angle, latlon_to_unit
from geoloc.orchestrator.decision import radius_holding_mass, uniform_cap_mass
from geoloc.orchestrator.fusion import PRIOR, FusionParameters, Prior, build_mixture, sample_mixture, score_table
from geoloc.training.expert_outputs import photo_answers

PRIOR_BANDWIDTHS_KM = (50.0, 200.0, 800.0, 1600.0)
PRIOR_SHARES = (0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.96, 0.98, 0.99, 1.0)
EXPERT_FACTORS = (0.0, 0.25, 0.5, 2.0, 4.0)  # an expert's relative weight is tried at these multiples
UNIFORM_SHARES = tuple(np.round(np.arange(0.0, 0.61, 0.02), 2))
TARGET_COVERAGE_90 = 0.90


@dataclass
class DecisionTables:
    """For each photo, padded to a common number of candidates C: each component's expected GeoScore
    there (−inf in padding) and the GeoScore of each candidate against the true place."""

    experts: dict[str, np.ndarray]  # [n, C] per expert
    prior: dict[float, np.ndarray]  # [n, C] per prior bandwidth
    truth: np.ndarray  # [n, C]
    candidates: list[np.ndarray]  # per photo [c_i, 3]

    def rows(self, index: np.ndarray) -> DecisionTables:
        return DecisionTables(
            {e: a[index] for e, a in self.experts.items()},
            {b: a[index] for b, a in self.prior.items()},
            self.truth[index],
            [self.candidates[i] for i in index],
        )


def decision_tables(
    outputs: dict[str, np.ndarray], truth_latlon: np.ndarray, params: FusionParameters, priors: dict[float, Prior]
) -> DecisionTables:
    """Serving's score tables for every photo of `outputs`, with the prior's column at each bandwidth.
    Every expert counts (weight 1): which experts answer changes the mix, not the columns."""
    every = replace(params, weights={**dict.fromkeys(outputs, 1.0), PRIOR: 1.0})
    first = next(iter(priors.values()))  # the priors share their points, so the candidates are the same
    tables = [score_table(photo_answers(outputs, row), every, first) for row in range(len(truth_latlon))]
    width = max(len(t.candidates) for t in tables)

    def padded(columns: list[np.ndarray]) -> np.ndarray:
        out = np.full((len(columns), width), -np.inf, dtype=np.float32)
        for i, column in enumerate(columns):
            out[i, : len(column)] = column
        return out

    truth_xyz = latlon_to_unit(truth_latlon[:, 0], truth_latlon[:, 1])
    truth = [
        geoscore_of_km(great_circle_angle(t.candidates, x) * EARTH_RADIUS_KM)
        for t, x in zip(tables, truth_xyz, strict=True)
    ]
    experts = {e: padded([t.columns.get(e, np.zeros(len(t.candidates))) for t in tables]) for e in outputs}
    prior = {b: padded([p.expected_geoscore(t.candidates) for t in tables]) for b, p in priors.items()}
    return DecisionTables(experts, prior, padded(truth), [t.candidates for t in tables])


def decided(
    tables: DecisionTables, bandwidth_km: float, shares: dict[str, float], rows=None, experts=None
) -> np.ndarray:
    """The index of each photo's best guess (of `rows`, default all) among its candidates, under
    these component shares, with `experts` (default all) answering."""
    rows = np.arange(len(tables.truth)) if rows is None else rows
    mix = shares[PRIOR] * tables.prior[bandwidth_km][rows]
    for expert, column in tables.experts.items():
        if shares.get(expert, 0.0) > 0 and (experts is None or expert in experts):
            mix = mix + shares[expert] * column[rows]
    return np.argmax(mix, axis=1)


def decided_scores(tables: DecisionTables, bandwidth_km: float, shares: dict[str, float]) -> np.ndarray:
    """The GeoScore [n] of each photo's best guess under these component shares."""
    best = decided(tables, bandwidth_km, shares)
    return tables.truth[np.arange(len(best)), best].astype(np.float64)


def best_guess_xyz(params: FusionParameters, tables: DecisionTables, rows: np.ndarray, experts=None) -> np.ndarray:
    """[len(rows), 3]: the best guesses fusion.fuse gives with these parameters, read off the tables."""
    best = decided(tables, params.bandwidth_km[PRIOR], params.weights, rows, experts)
    return np.stack([tables.candidates[r][b] for r, b in zip(rows, best, strict=True)])


@dataclass(frozen=True)
class DecisionFit:
    prior_bandwidth_km: float
    weights: dict[str, float]  # "prior" and each expert, summing to 1; add-on experts (fit_add_on) beside
    weighted_geoscore: float  # the objective at the fit, on the photos it was fitted on


def shares_of(prior_share: float, relative: dict[str, float]) -> dict[str, float]:
    total = sum(relative.values())
    experts = {e: (1 - prior_share) * w / total if total > 0 else 0.0 for e, w in relative.items()}
    return {PRIOR: prior_share if total > 0 else 1.0, **experts}


def fit_decision(tables: DecisionTables, photo_weight: np.ndarray, rounds: int = 3) -> DecisionFit:
    """Coordinate ascent, per prior bandwidth, on the weighted mean GeoScore of the best guesses:
    the prior's share over PRIOR_SHARES, then each expert's relative weight by EXPERT_FACTORS."""
    share = photo_weight / photo_weight.sum()

    def objective(bandwidth, prior_share, relative) -> float:
        return float(decided_scores(tables, bandwidth, shares_of(prior_share, relative)) @ share)

    best: DecisionFit | None = None
    for bandwidth in tables.prior:
        prior_share, relative = 0.9, dict.fromkeys(tables.experts, 1.0)
        for _ in range(rounds):
            prior_share = max(PRIOR_SHARES, key=lambda p: objective(bandwidth, p, relative))
            for expert in tables.experts:
                values = {relative[expert] * f for f in (1.0, *EXPERT_FACTORS)} | {1.0}  # 1: a dropped one back
                options = [o for o in ({**relative, expert: v} for v in sorted(values)) if sum(o.values()) > 0]
                relative = max(options, key=lambda o: objective(bandwidth, prior_share, o))
        score = objective(bandwidth, prior_share, relative)
        if best is None or score > best.weighted_geoscore:
            best = DecisionFit(bandwidth, shares_of(prior_share, relative), score)
    return best


# An add-on expert's weight beside the others' shares (which sum to 1), tried on the photos it answered;
# the largest let it all but decide alone where it speaks.
ADD_ON_WEIGHTS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def fit_add_on(
    tables_by_bandwidth: dict[float, DecisionTables], fit: DecisionFit, expert: str, photo_weight: np.ndarray
) -> tuple[DecisionFit, float]:
    """(`fit` with `expert` added, its bandwidth km): the pair of bandwidth (the keys, each with the
    photos' tables under it) and weight that maximises the weighted mean GeoScore of the best guesses
    on these photos (those it answered), the others' shares kept. Serving renormalises over the
    experts present, so where it says nothing the answer is `fit`'s own, photo for photo. Ties go to
    the smaller weight, then the wider bandwidth: the choice that moves the answer least.

    Its bandwidth is chosen here, on GeoScore, rather than by the likelihood fit: an expert that
    speaks on few photos mixes sharp evidence (a named city) with broad (a language's countries),
    and alone its likelihood prefers one wide kernel that blurs the cities away."""
    share = photo_weight / photo_weight.sum()

    def objective(bandwidth: float, weight: float) -> float:
        shares = {**fit.weights, expert: weight}
        return float(decided_scores(tables_by_bandwidth[bandwidth], fit.prior_bandwidth_km, shares) @ share)

    pairs = [(b, w) for b in tables_by_bandwidth for w in ADD_ON_WEIGHTS]
    bandwidth, weight = max(pairs, key=lambda pair: (objective(*pair), -pair[1], pair[0]))
    return replace(fit, weights={**fit.weights, expert: float(weight)}), bandwidth


def joined_tables(parts: list[DecisionTables]) -> DecisionTables:
    """The photos of `parts`, in order, as one table padded to the widest (the experts of the first)."""
    width = max(p.truth.shape[1] for p in parts)

    def joined(arrays: list[np.ndarray]) -> np.ndarray:
        padded = [np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=-np.inf) for a in arrays]
        return np.concatenate(padded)

    return DecisionTables(
        {e: joined([p.experts[e] for p in parts]) for e in parts[0].experts},
        {b: joined([p.prior[b] for p in parts]) for b in parts[0].prior},
        joined([p.truth for p in parts]),
        [c for p in parts for c in p.candidates],
    )


def with_decision(params: FusionParameters, fit: DecisionFit, uniform_share: float) -> FusionParameters:
    bandwidths = {**params.bandwidth_km, PRIOR: fit.prior_bandwidth_km}
    return replace(params, weights=fit.weights, bandwidth_km=bandwidths, uniform_weight=uniform_share)


def best_guess_distances(
    outputs: dict[str, np.ndarray],
    params: FusionParameters,
    prior: Prior,
    tables: DecisionTables,
    rows: np.ndarray,
    experts=None,
) -> list[np.ndarray]:
    """Per photo of `rows`, the distances km of serving's structured draws (fusion.fuse's, seed 0)
    from its best guess, with `experts` (default all) answering."""
    best = best_guess_xyz(params, tables, rows, experts)
    out = []
    for xyz, row in zip(best, rows, strict=True):
        mixture = build_mixture(photo_answers(outputs, row, experts), params, prior)
        draws = sample_mixture(mixture, params.samples, 0, components=mixture.kappa > 0)
        out.append(great_circle_angle(draws, xyz) * EARTH_RADIUS_KM)
    return out


def fit_uniform_share(distances: list[np.ndarray], errors_km: np.ndarray, photo_weight: np.ndarray) -> float:
    """The smallest floor whose 90 % radius holds the truth for at least TARGET_COVERAGE_90 of the
    photos' weight (the radii only widen as the floor grows)."""
    share = photo_weight / photo_weight.sum()
    for u in UNIFORM_SHARES:
        radii = np.array([radius_holding_mass(d, u, 0.9) for d in distances])
        if float((errors_km <= radii) @ share) >= TARGET_COVERAGE_90:
            return float(u)
    return float(UNIFORM_SHARES[-1])


def mass_levels(
    distances: list[np.ndarray], errors_km: np.ndarray, photo_weight: np.ndarray, uniform_share: float
) -> list[float]:
    """The mixture masses [m50, m90] whose radii hold the truth for 50 % and 90 % of the photos' weight.

    Each photo's truth lies at some mass level of its own answer (the mass within the error, floor
    included); the levels stated as 50 % and 90 % are those levels' weighted quantiles, so that on
    the photos fitted the radii hold exactly what they state (split-conformal, on the mass)."""
    level = np.array(
        [
            (1 - uniform_share) * np.mean(d <= e) + uniform_share * float(uniform_cap_mass(e))
            for d, e in zip(distances, errors_km, strict=True)
        ]
    )
    order = np.argsort(level)
    cumulative = np.cumsum(photo_weight[order]) / photo_weight.sum()
    picked = [float(level[order][min(np.searchsorted(cumulative, q), len(level) - 1)]) for q in (0.5, 0.9)]
    return [float(np.clip(m, 1e-3, 1 - 1e-6)) for m in picked]
