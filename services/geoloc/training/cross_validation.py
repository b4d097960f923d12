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

from geoloc.evaluation.folds import photo_weights
from geoloc.evaluation.metrics import Metrics, summarize
from geoloc.experts import SAMPLED_EXPERTS
from geoloc.geo.sphere import haversine_km, latlon_to_unit, unit_to_latlon
from geoloc.orchestrator.decision import radius_holding_mass
from geoloc.orchestrator.fusion import Prior, subset_key
from geoloc.training.decision_fit import (
    PRIOR_BANDWIDTHS_KM,
    DecisionTables,
    best_guess_distances,
    best_guess_xyz,
    decision_tables,
    fit_add_on,
    fit_decision,
    fit_uniform_share,
    joined_tables,
    mass_levels,
    with_decision,
)
from geoloc.training.fusion import BANDWIDTHS_KM, fit_fusion

CONSTANT = "constant"
MIN_CALIBRATION_PHOTOS = 10  # fewer photos on which a set of experts all answered: no levels of its own
RANDOM = "random gallery point"
FUSED = "fused"


def fused_without(expert: str) -> str:
    """The name of the fusion of the others that an add-on expert is fitted beside, as folds report it."""
    return f"{FUSED} without {expert}"


def top_points(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each expert's own answer [n, 2]: its most probable point, or for an expert whose points are
    samples (a sampler's) the highest mode of its samples (as the sampler service reports it)."""
    from geoloc.sampler.density import summarize_samples

    tops = {}
    for expert, points in outputs.items():
        if expert in SAMPLED_EXPERTS:
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
    # Per expert subset (subset_key): (within r50, within r90, photos), on the photos where all of
    # the subset's experts said something.
    coverage: dict[str, tuple[float, float, int]]
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
    tables: Callable[..., DecisionTables],
    calibrate: bool = True,
):
    """The fusion, prior and decision fitted on `rows` alone: (parameters, prior, tables, what was
    chosen). `tables(params, rows=None)` gives the photos' decision tables for likelihood-fitted
    parameters (table_cache). With `calibrate`, also the uniform floor and every expert subset's
    radius levels. An add-on expert's bandwidth and weight are chosen together on GeoScore
    (decision_fit.fit_add_on), on the photos of `rows` it answered."""
    # Where an add-on says nothing, the answer is the fusion of the others, fitted without it.
    add_ons = add_on_experts(outputs, rows)
    base = {e: a[rows] for e, a in outputs.items() if e not in add_ons}
    likelihood = fit_fusion(base, truth[rows], gallery_coordinates)
    # The others' columns do not depend on an add-on's bandwidth (only the candidates on its photos do,
    # by its kernels' modes): their fit takes the grid's widest, and the add-on's own is chosen after.
    bandwidths = {**likelihood.parameters.bandwidth_km, **dict.fromkeys(add_ons, BANDWIDTHS_KM[-1])}
    weight = photo_weights([authors[i] for i in rows], weighting)
    fitted_rows = tables(replace(likelihood.parameters, bandwidth_km=bandwidths), rows)
    decision = fit_decision(replace(fitted_rows, experts={e: fitted_rows.experts[e] for e in base}), weight)
    for expert in add_ons:
        said = answered_by(outputs, [expert], rows)
        by_bandwidth = {
            b: tables(replace(likelihood.parameters, bandwidth_km={**bandwidths, expert: b}), rows[said])
            for b in BANDWIDTHS_KM
        }
        decision, bandwidths[expert] = fit_add_on(by_bandwidth, decision, expert, weight[said])
    likelihood = replace(likelihood, parameters=replace(likelihood.parameters, bandwidth_km=bandwidths))
    table = tables(likelihood.parameters)
    prior = Prior(gallery_coordinates, decision.prior_bandwidth_km)
    params = with_decision(likelihood.parameters, decision, 0.0)
    if calibrate:
        distances = best_guess_distances(outputs, params, prior, table, rows)
        floor = fit_uniform_share(distances, best_guess_errors(params, table, rows, truth), weight)
        params = with_decision(likelihood.parameters, decision, floor)
        levels = {}
        for experts in expert_subsets(list(outputs)):
            # A set's levels are stated only when those experts all said something, so they are
            # fitted on those photos alone (the text expert's sets: the photos with text).
            said = answered_by(outputs, experts, rows)
            if said.sum() < MIN_CALIBRATION_PHOTOS:
                continue  # serving falls back to the largest set within it that has levels
            answering = {e: outputs[e] for e in experts}
            distances = best_guess_distances(answering, params, prior, table, rows[said], experts)
            errors = best_guess_errors(params, table, rows[said], truth, experts)
            levels[subset_key(experts)] = mass_levels(distances, errors, weight[said], floor)
        params = replace(params, radius_levels=levels)
    chosen = {
        "weights": decision.weights,
        "bandwidth_km": params.bandwidth_km,
        "gallery_density_power": params.gallery_density_power,
        "uniform_weight": params.uniform_weight,
        "radius_levels": params.radius_levels,
        "fit_weighted_geoscore": decision.weighted_geoscore,
        "add_ons": add_ons,
    }
    return params, prior, table, chosen


def answered_by(outputs: dict[str, np.ndarray], experts, rows: np.ndarray) -> np.ndarray:
    """[len(rows)] bool: every one of `experts` gave the photo a point with weight."""
    said = np.ones(len(rows), dtype=bool)
    for expert in experts:
        said &= np.nan_to_num(outputs[expert][rows, :, 2]).max(axis=1) > 0
    return said


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
    tables: Callable[..., DecisionTables],
    tops: dict[str, np.ndarray],
    calibrate: bool = True,
    groups: dict[str, np.ndarray] | None = None,
) -> FoldResult:
    """Fit on the other folds, score this one: every answer's metrics and, with `calibrate`, the
    radii's coverage for every subset of experts answering.

    An expert that answers only some photos (the text expert: photos with text) is scored on those
    alone, as "EXPERT (answered)". `groups` ({name: mask over all photos}) adds the fused answer's,
    each expert's and the constant's metrics on each group's photos, as "ANSWER · NAME"."""
    fit_rows, test_rows = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    params, prior, table, chosen = fit_answer(
        outputs, truth, authors, fit_rows, gallery_coordinates, weighting, tables, calibrate
    )
    lat, lon = truth[test_rows, 0], truth[test_rows, 1]
    errors = {FUSED: best_guess_errors(params, table, test_rows, truth)}
    for expert in chosen["add_ons"]:  # exactly the fusion of the others, fitted without it
        others = [e for e in outputs if e != expert]
        errors[fused_without(expert)] = best_guess_errors(params, table, test_rows, truth, others)
    answered = {e: np.nan_to_num(a[test_rows, :, 2]).max(axis=1) > 0 for e, a in outputs.items()}
    for expert, top in tops.items():
        errors[expert] = haversine_km(top[test_rows, 0], top[test_rows, 1], lat, lon)
    errors[CONSTANT] = haversine_km(*CONSTANT_PLACE, lat, lon)
    rng = np.random.default_rng(fold)
    random_points = gallery_coordinates[rng.integers(0, len(gallery_coordinates), len(test_rows))]
    errors[RANDOM] = haversine_km(random_points[:, 0], random_points[:, 1], lat, lon)
    metrics = {}
    for answer, error in errors.items():
        if answer in answered and not answered[answer].all():
            metrics[f"{answer} (answered)"] = summarize(error[answered[answer]])
        else:
            metrics[answer] = summarize(error)
    for name, mask in (groups or {}).items():
        inside = mask[test_rows]
        for answer in (FUSED, *(fused_without(e) for e in chosen["add_ons"]), *tops, CONSTANT):
            keep = inside & answered.get(answer, True)
            if keep.any():  # a fold may hold none of a group's photos: that fold leaves the row out
                metrics[f"{answer} · {name}"] = summarize(errors[answer][keep])
    coverage = {}
    for experts in expert_subsets(list(outputs)) if calibrate else []:
        said = test_rows[answered_by(outputs, experts, test_rows)]
        if not len(said):
            continue
        answering = {e: outputs[e] for e in experts}
        errors = best_guess_errors(params, table, said, truth, experts)
        distances = best_guess_distances(answering, params, prior, table, said, experts)
        held = (
            float(np.mean(errors <= np.array([radius_holding_mass(d, params.uniform_weight, m) for d in distances])))
            for m in params.levels(experts)
        )
        coverage[subset_key(experts)] = (*held, len(said))
    return FoldResult(fold, len(test_rows), metrics, coverage, chosen)


def table_cache(outputs, truth, gallery_coordinates) -> Callable[..., DecisionTables]:
    """`tables(params, rows=None)`: decision_tables of `rows` (default every photo, in that order) for
    given likelihood-fitted parameters, computed once per distinct choice of the bandwidths and
    density power that bear on them (folds often agree). The photos no add-on expert answered do not
    depend on the add-ons' bandwidths, so trying an add-on's bandwidths recomputes its photos alone."""
    priors = {b: Prior(gallery_coordinates, b) for b in PRIOR_BANDWIDTHS_KM}
    every = np.arange(len(truth))
    add_ons = add_on_experts(outputs, every)
    spoken = np.zeros(len(truth), dtype=bool)
    for expert in add_ons:
        spoken |= answered_by(outputs, [expert], every)
    base = [e for e in outputs if e not in add_ons]
    groups = [(np.flatnonzero(~spoken), base), (np.flatnonzero(spoken), list(outputs))]
    cache: dict[str, DecisionTables] = {}

    def group_tables(params, group: int) -> DecisionTables:
        photos, keyed = groups[group]
        key = repr((group, sorted((e, params.bandwidth_km[e]) for e in keyed), params.gallery_density_power))
        if key not in cache:
            answers = {e: a[photos] for e, a in outputs.items()}
            cache[key] = decision_tables(answers, truth[photos], replace(params), priors)
        return cache[key]

    def tables(params, rows: np.ndarray | None = None) -> DecisionTables:
        rows = every if rows is None else np.asarray(rows)
        parts, order = [], []
        for group, (photos, _) in enumerate(groups):
            inside = np.isin(rows, photos)
            if inside.any():
                parts.append(group_tables(params, group).rows(np.searchsorted(photos, rows[inside])))
                order.append(np.flatnonzero(inside))
        if len(parts) == 1:
            return parts[0]
        return joined_tables(parts).rows(np.argsort(np.concatenate(order)))

    return tables


def add_on_experts(outputs: dict[str, np.ndarray], rows: np.ndarray) -> list[str]:
    """The experts that answer only some of these photos (the text expert: those with text). They are
    fitted as add-ons to the fusion of the others, on the photos they answered."""
    return [e for e in outputs if not answered_by(outputs, [e], rows).all()]
