"""Fitting the fusion's likelihood: bandwidths and the gallery-density power per expert, then EM weights.

Each expert's bandwidth (and, for the gallery, the density power) is the grid value under which
its own kernels give the true places the highest mean log-likelihood; the prior's bandwidth
likewise. With the components fixed, the mixing weights that maximise the mixture's likelihood are
found exactly by EM (a concave problem on the simplex). Likelihood is a proper scoring rule, so the
fit rewards calibrated spreads, not confident ones. Its bandwidths are kept; the weights, the
prior's bandwidth and the radii are then fitted on GeoScore and coverage (training/decision_fit.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoloc.experts import DENSITY_TILTED_EXPERTS
from geoloc.geo.sphere import latlon_to_unit
from geoloc.geo.vmf import vmf_log_density
from geoloc.orchestrator.fusion import PRIOR, FusionParameters, Prior, expert_kernels, kappa_for_half_mass_km

BANDWIDTHS_KM = (10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0)
DENSITY_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0)


def expert_log_likelihood(
    points: np.ndarray, truth_xyz: np.ndarray, bandwidth_km: float, prior: Prior, density_power: float = 0.0
) -> np.ndarray:
    """log p_e(true place) [n] under one expert's kernels, exactly as the orchestrator builds them
    (fusion.expert_kernels); points [n, P, 4] (lat, lon, weight, radius_km). A photo the expert gave
    no weighted point for scores −inf."""
    centres, weights, radius = expert_kernels(points, bandwidth_km, density_power, prior)
    with np.errstate(divide="ignore"):  # zero weights (padding, dropped points) contribute log 0 = −inf
        terms = np.log(weights) + vmf_log_density(truth_xyz[:, None, :], centres, kappa_for_half_mass_km(radius))
    top = terms.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return top[:, 0] + np.log(np.exp(terms - top).sum(axis=1))


def mixing_weights(log_likelihoods: np.ndarray, iterations: int = 500) -> np.ndarray:
    """EM for the weights [c] of fixed components, from log p_c(x_n) [n, c]."""
    weights = np.full(log_likelihoods.shape[1], 1.0 / log_likelihoods.shape[1])
    for _ in range(iterations):
        with np.errstate(divide="ignore"):  # a weight EM drove to 0 stays there
            terms = log_likelihoods + np.log(weights)
        responsibilities = np.exp(terms - terms.max(axis=1, keepdims=True))
        responsibilities /= responsibilities.sum(axis=1, keepdims=True)
        weights = responsibilities.mean(axis=0)
    return weights


@dataclass
class FusionFit:
    parameters: FusionParameters
    prior: Prior
    mean_log_likelihood: dict[str, float]  # per component at its chosen bandwidth, and of the fitted mixture


def mixture_log_likelihood(columns: dict[str, np.ndarray], weights: np.ndarray) -> float:
    """Mean log Σ_c w_c p_c(x_n) over photos, from log p_c(x_n) columns."""
    matrix = np.stack(list(columns.values()), axis=1)
    top = matrix.max(axis=1, keepdims=True)
    return float((top[:, 0] + np.log(np.exp(matrix - top) @ weights)).mean())


def fit_fusion(
    outputs: dict[str, np.ndarray], truth_latlon: np.ndarray, gallery_coordinates: np.ndarray, rounds: int = 3
) -> FusionFit:
    """Bandwidths (and the gallery's density power) by coordinate ascent on the mixture's likelihood,
    the weights by EM at every step: an expert's best bandwidth inside the mixture is narrower than
    alone, because the prior and the other experts cover its misses."""
    truth = latlon_to_unit(truth_latlon[:, 0], truth_latlon[:, 1])
    priors = {b: Prior(gallery_coordinates, b) for b in BANDWIDTHS_KM}
    candidates = {PRIOR: {(b, 0.0): p.log_density(truth) for b, p in priors.items()}}
    reference = priors[BANDWIDTHS_KM[0]]  # its points; the density correction smooths them at DENSITY_BANDWIDTH_KM
    for expert, points in outputs.items():
        powers = DENSITY_POWERS if expert in DENSITY_TILTED_EXPERTS else (0.0,)
        candidates[expert] = {
            (b, a): expert_log_likelihood(points, truth, b, reference, a) for b in BANDWIDTHS_KM for a in powers
        }
    # Start from each component's own best, then improve one component at a time.
    chosen = {name: max(c, key=lambda key: c[key].mean()) for name, c in candidates.items()}
    for _ in range(rounds):
        for name, options in candidates.items():

            def score(key, name=name):
                columns = {n: candidates[n][key if n == name else chosen[n]] for n in candidates}
                return mixture_log_likelihood(columns, mixing_weights(np.stack(list(columns.values()), axis=1)))

            chosen[name] = max(options, key=score)
    columns = {n: candidates[n][chosen[n]] for n in candidates}
    weights = mixing_weights(np.stack(list(columns.values()), axis=1))
    report = {n: float(c.mean()) for n, c in columns.items()}
    report["mixture"] = mixture_log_likelihood(columns, weights)
    parameters = FusionParameters(
        weights={n: float(w) for n, w in zip(columns, weights, strict=True)},
        bandwidth_km={n: key[0] for n, key in chosen.items()},
        gallery_density_power=next((chosen[e][1] for e in chosen if e in DENSITY_TILTED_EXPERTS), 0.0),
    )
    return FusionFit(parameters, priors[chosen[PRIOR][0]], report)
