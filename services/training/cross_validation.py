"""Photographer-grouped cross-validation of the fused answer, and of the baselines it must beat.

Each outer fold's photos are answered by experts trained without them (training/out_of_fold.py)
and by a fusion and decision fitted without them: the likelihood fit of the experts' bandwidths
(training/fusion.py), then the prior's bandwidth, the weights and the uniform floor on GeoScore
(training/decision_fit.py), all on the other folds' out-of-fold answers. (Stacking: a fold's
experts were trained on the folds the fusion is fitted on, and scored on the one it is tested on;
the fusion is fitted on answers to photos those experts had not seen either, which is the
situation it serves in.) Nothing a fold is scored on enters any choice made for it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from geoloc.common.sphere import haversine_km, latlon_to_unit, unit_to_latlon
from geoloc.evaluation.folds import photo_weights
from geoloc.evaluation.metrics import Metrics, summarize
from geoloc.orchestrator.decision import radius_holding_mass
from geoloc.orchestrator.fusion import Prior, subset_key
from geoloc.training.decision_fit import (
    PRIOR_BANDWIDTHS_KM,
    DecisionTables,
    best_guess_distances,
    best_guess_xyz,
    decision_tables,
    fit_decision,
    fit_uniform_share,
    mass_levels,
    with_decision,
)
from geoloc.training.fusion import fit_fusion

CONSTANT = "constant"
RANDOM = "random gallery point"
FUSED = "fused"


def top_points(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each expert's own answer [n, 2]: the gallery's and the tokens' most probable point, a sampler's
    highest mode of its samples (as the sampler service reports it)."""
    from geoloc.sampler.density import summarize_samples

    tops = {}
    for expert, points in outputs.items():
        if expert in ("flow", "sh"):
            rows = []
            for row in points:
                mode = summarize_samples(latlon_to_unit(row[:, 0], row[:, 1])).modes[0]
                rows.append((mode.lat_deg, mode.lon_deg))
            tops[expert] = np.array(rows)
        else:
            best = np.argmax(np.nan_to_num(points[:, :, 2], nan=-np.inf), axis=1)
            tops[expert] = points[np.arange(len(points)), best, :2]
    return tops


# The constant the issue measured against: the densest point of the 100K GPS gallery.
CONSTANT_PLACE = (50.0, 5.7)


@dataclass
class FoldResult:
    fold: int
    n: int
    metrics: dict[str, Metrics]  # per answer: fused, each expert's top, the constant, a random point
    coverage: dict[str, tuple[float, float]]  # per expert subset (subset_key): (within r50, within r90)
    fitted: dict  # what was chosen on the other folds


def expert_subsets(experts: Sequence[str]) -> list[tuple[str, ...]]:
    """Every subset of the experts, the whole set first and the empty one last."""
    return [c for size in range(len(experts), -1, -1) for c in itertools.combinations(experts, size)]


def fit_answer(
    outputs: dict[str, np.ndarray],
    truth: np.ndarray,
    authors: Sequence[str],
    rows: np.ndarray,
    gallery_coordinates: np.ndarray,
    weighting: str,
    tables: Callable[[object], DecisionTables],
    calibrate: bool = True,
):
    """The fusion, prior and decision fitted on `rows` alone: (parameters, prior, tables, what was
    chosen). `tables(params)` gives every photo's decision tables for likelihood-fitted parameters.
    With `calibrate`, also the uniform floor and every expert subset's radius levels."""
    likelihood = fit_fusion({e: a[rows] for e, a in outputs.items()}, truth[rows], gallery_coordinates)
    table = tables(likelihood.parameters)
    weight = photo_weights([authors[i] for i in rows], weighting)
    decision = fit_decision(table.rows(rows), weight)
    prior = Prior(gallery_coordinates, decision.prior_bandwidth_km)
    params = with_decision(likelihood.parameters, decision, 0.0)
    if calibrate:
        distances = best_guess_distances(outputs, params, prior, table, rows)
        floor = fit_uniform_share(distances, best_guess_errors(params, table, rows, truth), weight)
        params = with_decision(likelihood.parameters, decision, floor)
        levels = {}
        for experts in expert_subsets(list(outputs)):
            answering = {e: outputs[e] for e in experts}
            distances = best_guess_distances(answering, params, prior, table, rows, experts)
            errors = best_guess_errors(params, table, rows, truth, experts)
            levels[subset_key(experts)] = mass_levels(distances, errors, weight, floor)
        params = replace(params, radius_levels=levels)
    chosen = {
        "weights": decision.weights,
        "bandwidth_km": params.bandwidth_km,
        "gallery_density_power": params.gallery_density_power,
        "uniform_weight": params.uniform_weight,
        "radius_levels": params.radius_levels,
        "fit_weighted_geoscore": decision.weighted_geoscore,
    }
    return params, prior, table, chosen


def best_guess_errors(params, table: DecisionTables, rows: np.ndarray, truth: np.ndarray, experts=None):
    """km from the true place of each photo's best guess, with `experts` (default all) answering."""
    lat, lon = unit_to_latlon(best_guess_xyz(params, table, rows, experts))
    return haversine_km(lat, lon, truth[rows, 0], truth[rows, 1])


def score_fold(
    fold: int,
    folds: np.ndarray,
    outputs: dict[str, np.ndarray],
    truth: np.ndarray,
    authors: Sequence[str],
    gallery_coordinates: np.ndarray,
    weighting: str,
    tables: Callable[[object], DecisionTables],
    tops: dict[str, np.ndarray],
    calibrate: bool = True,
) -> FoldResult:
    """Fit on the other folds, score this one: every answer's metrics and, with `calibrate`, the
    radii's coverage for every subset of experts answering."""
    fit_rows, test_rows = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    params, prior, table, chosen = fit_answer(
        outputs, truth, authors, fit_rows, gallery_coordinates, weighting, tables, calibrate
    )
    lat, lon = truth[test_rows, 0], truth[test_rows, 1]
    metrics = {FUSED: summarize(best_guess_errors(params, table, test_rows, truth))}
    for expert, top in tops.items():
        metrics[expert] = summarize(haversine_km(top[test_rows, 0], top[test_rows, 1], lat, lon))
    metrics[CONSTANT] = summarize(haversine_km(*CONSTANT_PLACE, lat, lon))
    rng = np.random.default_rng(fold)
    random_points = gallery_coordinates[rng.integers(0, len(gallery_coordinates), len(test_rows))]
    metrics[RANDOM] = summarize(haversine_km(random_points[:, 0], random_points[:, 1], lat, lon))
    coverage = {}
    for experts in expert_subsets(list(outputs)) if calibrate else []:
        answering = {e: outputs[e] for e in experts}
        errors = best_guess_errors(params, table, test_rows, truth, experts)
        distances = best_guess_distances(answering, params, prior, table, test_rows, experts)
        coverage[subset_key(experts)] = tuple(
            float(np.mean(errors <= np.array([radius_holding_mass(d, params.uniform_weight, m) for d in distances])))
            for m in params.levels(experts)
        )
    return FoldResult(fold, len(test_rows), metrics, coverage, chosen)


def table_cache(outputs, truth, gallery_coordinates) -> Callable[[object], DecisionTables]:
    """decision_tables for given likelihood-fitted parameters, computed once per distinct choice of
    the experts' bandwidths and density power (folds often agree on them)."""
    priors = {b: Prior(gallery_coordinates, b) for b in PRIOR_BANDWIDTHS_KM}
    cache: dict[str, DecisionTables] = {}

    def tables(params) -> DecisionTables:
        key = repr((sorted(params.bandwidth_km.items()), params.gallery_density_power))
        if key not in cache:
            cache[key] = decision_tables(outputs, truth, replace(params), priors)
        return cache[key]

    return tables
