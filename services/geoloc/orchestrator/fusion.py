"""Fusing the experts' weighted points into one distribution on the sphere, and reading an answer off it.

Every expert's points become von Mises-Fisher kernels: a point's own radius_km (a token cell's
size) widened by the expert's fitted bandwidth, r = √(radius² + bandwidth²), read as the kernel's
half-mass radius. Within an expert the weights are renormalised (the gallery's first divided by
the gallery density to a fitted power, since retrieval favours where photos are dense); across
experts they are mixed with fitted weights, and the prior of where photos are taken (a sample of
the GPS gallery, as kernels) is one more component. Experts left out of a call drop out and the
rest are renormalised, so with no expert at all the answer is the prior, never less. A fixed
share of the uniform density under it all, and mass levels per set of experts answering, keep the
stated radii honest (fitted on out-of-fold answers so that they hold the truth as often as they
state on photographers the experts never saw; training/cross_validation.py).

The answer is read off the mixture by decision.py: the best guess is the place with the highest
expected GeoScore, the hypotheses the best places of distinct regions, with their Voronoi masses
and radii. Localizability compares the entropy of where the experts' part of the mixture falls
among ~580 km S2 cells with the prior's (0) and a single cell's (1). (The prior and the floor are
left out of it: they are the same for every photo, and the floor alone would spread any answer.)
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

import numpy as np

from geoloc.experts import DENSITY_TILTED_EXPERTS
from geoloc.geo.mixtures import find_modes, mixture_log_density, vmf_mixture_sample
from geoloc.geo.s2cells import latlon_to_cell_id
from geoloc.geo.sphere import EARTH_RADIUS_KM, HEMISPHERE_RADIUS_KM, great_circle_angle, latlon_to_unit, unit_to_latlon
from geoloc.geo.vmf import vmf_kappa_for_radius_km
from geoloc.orchestrator.decision import (
    LATTICE_POINTS,
    FixedCandidates,
    expected_geoscore,
    fibonacci_lattice,
    radius_holding_mass,
    regions_of,
)

PRIOR = "prior"
UNIFORM = "uniform"
UNIFORM_HALF_MASS_KM = HEMISPHERE_RADIUS_KM  # a hemisphere holds half of the uniform density
LOCALIZABILITY_LEVEL = 4  # S2 cells of about 580 km: localizability counts regions, not kilometres
MAX_RADIUS_KM = HEMISPHERE_RADIUS_KM  # wider kernels are near uniform anyway
MODE_TOL_RAD = 1e-7  # an expert's modes are candidates: found to well under a metre, not to a micrometre
DENSITY_BANDWIDTH_KM = 400.0  # the scale at which the gallery's crowding correction measures photo density


@dataclass(frozen=True)
class ExpertPoints:
    """One expert's answer as weighted points; weights need not sum to 1 (they are renormalised)."""

    expert: str
    lat_deg: np.ndarray
    lon_deg: np.ndarray
    weight: np.ndarray
    radius_km: np.ndarray

    @classmethod
    def of(cls, expert: str, points) -> ExpertPoints:
        """From WeightedPoint messages (or anything with lat_deg, lon_deg, weight, radius_km)."""
        rows = np.array([(p.lat_deg, p.lon_deg, p.weight, p.radius_km) for p in points], dtype=np.float64).reshape(
            -1, 4
        )
        return cls(expert, rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3])


@dataclass(frozen=True)
class FusionParameters:
    weights: dict[str, float]  # per expert and "prior"; renormalised over those present
    bandwidth_km: dict[str, float]  # per expert and "prior": the kernel half-mass radius added to a point's own
    gallery_density_power: float = 0.0  # gallery weights ÷ (prior density)^power
    uniform_weight: float = 0.0  # a floor of the uniform density, for radii that hold what they state
    min_separation_km: float = 100.0  # an expert's kernels' modes closer than this are one candidate
    samples: int = 2000  # drawn from the mixture for radii, hypotheses' masses and entropy
    region_km: float = 1000.0  # hypotheses are the best places within this of themselves
    # Per set of experts answering (subset_key): the mixture masses whose radii are stated as the 50 %
    # and 90 % radii. Fitted so that they hold the truth that often on held-out photographers: the
    # mixture's own masses do not (each expert is over- or under-confident its own way).
    radius_levels: dict[str, list[float]] = field(default_factory=dict)
    version: str = "unfitted"

    def levels(self, experts) -> tuple[float, float]:
        """The stated masses for this set of experts answering; for a set the fit saw too rarely to
        calibrate (cross_validation.MIN_CALIBRATION_PHOTOS), the largest set within it that it did."""
        experts = sorted(experts)
        for size in range(len(experts), -1, -1):
            for within in itertools.combinations(experts, size):
                if subset_key(within) in self.radius_levels:
                    return tuple(self.radius_levels[subset_key(within)])
        return (0.5, 0.9)

    def to_dict(self) -> dict:
        return {
            "weights": self.weights,
            "bandwidth_km": self.bandwidth_km,
            "gallery_density_power": self.gallery_density_power,
            "uniform_weight": self.uniform_weight,
            "min_separation_km": self.min_separation_km,
            "samples": self.samples,
            "region_km": self.region_km,
            "radius_levels": self.radius_levels,
        }


def subset_key(experts) -> str:
    """The name of a set of answering experts, as radius_levels keys it: "flow+gallery", "none"."""
    return "+".join(sorted(experts)) or "none"


@dataclass(frozen=True)
class Mixture:
    centres: np.ndarray  # [m, 3] unit vectors
    weights: np.ndarray  # [m], sum 1
    kappa: np.ndarray  # [m]
    half_mass_km: np.ndarray  # [m]: each kernel's radius_km as a weighted point
    expert_weights: dict[str, float]  # the renormalised weight of each component present
    from_experts: np.ndarray  # [m] bool: the kernel is an expert's (not the prior's or the floor's)

    def log_density(self, xyz: np.ndarray) -> np.ndarray:
        return mixture_log_density(xyz, self.centres, self.weights, self.kappa)


# An expert's kernels mostly share its bandwidth, the same on every call; points' own radii (token
# cells) vary, so the cache is bounded. lru_cache is safe for fusions running on several threads.
@functools.lru_cache(maxsize=4096)
def _kappa_for_half_mass(radius_km: float) -> float:
    return float(vmf_kappa_for_radius_km(radius_km, 0.5))


def kappa_for_half_mass_km(radius_km: np.ndarray) -> np.ndarray:
    radius = np.clip(np.asarray(radius_km, dtype=np.float64), 1e-3, MAX_RADIUS_KM)
    distinct, which = np.unique(radius, return_inverse=True)
    return np.array([_kappa_for_half_mass(r) for r in distinct.tolist()])[which].reshape(radius.shape)


class Prior:
    """Where photos are taken: kernels on a fixed sample of the GPS gallery's coordinates."""

    def __init__(self, coordinates: np.ndarray, bandwidth_km: float, size: int = 2048, seed: int = 0):
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(coordinates), size=min(size, len(coordinates)), replace=False)
        self.lat_deg, self.lon_deg = coordinates[chosen, 0], coordinates[chosen, 1]
        self.centres = latlon_to_unit(self.lat_deg, self.lon_deg)
        self.bandwidth_km = bandwidth_km
        self.kappa = float(kappa_for_half_mass_km(np.array(bandwidth_km)))
        self.weights = np.full(len(self.centres), 1.0 / len(self.centres))
        self._density_kappa = float(kappa_for_half_mass_km(np.array(DENSITY_BANDWIDTH_KM)))
        self._answer_entropy: dict[int, float] = {}
        self.lattice = fibonacci_lattice(LATTICE_POINTS)
        # Every answer's candidates begin with these, so the prior's scores on them are computed once.
        self.fixed_candidates = np.concatenate([self.lattice, self.centres])
        self._fixed_scores: np.ndarray | None = None
        self._fixed_by_region: dict[float, FixedCandidates] = {}

    def fixed(self, region_km: float) -> FixedCandidates:
        if region_km not in self._fixed_by_region:
            self._fixed_by_region[region_km] = FixedCandidates(self.fixed_candidates, region_km)
        return self._fixed_by_region[region_km]

    def expected_geoscore(self, candidates: np.ndarray) -> np.ndarray:
        """The prior's expected GeoScore [c] at candidates that begin with `fixed_candidates`."""
        radius = np.full(len(self.centres), self.bandwidth_km)
        if self._fixed_scores is None:
            self._fixed_scores = expected_geoscore(self.centres, self.weights, radius, self.fixed_candidates)
        extra = candidates[len(self.fixed_candidates) :]
        return np.concatenate([self._fixed_scores, expected_geoscore(self.centres, self.weights, radius, extra)])

    def answer_entropy(self, params: FusionParameters) -> float:
        """Cell entropy of this prior alone, drawn as many times as an answer is: the localizability's zero."""
        key = params.samples
        if key not in self._answer_entropy:
            alone = FusionParameters(**{**params.__dict__, "weights": {PRIOR: 1.0}, "uniform_weight": 0.0})
            mixture = build_mixture([], alone, self)
            draws = sample_mixture(mixture, params.samples, seed=0)
            self._answer_entropy[key] = cell_entropy(draws)
        return self._answer_entropy[key]

    def log_density(self, xyz: np.ndarray) -> np.ndarray:
        return mixture_log_density(xyz, self.centres, self.weights, self.kappa)

    def photo_density(self, xyz: np.ndarray) -> np.ndarray:
        """log density of photo places smoothed at DENSITY_BANDWIDTH_KM, whatever the prior's own bandwidth:
        the gallery's correction measures crowding at the scale of regions, not of single spots."""
        return mixture_log_density(xyz, self.centres, self.weights, self._density_kappa)


def expert_kernels(
    points: np.ndarray, bandwidth_km: float, density_power: float, prior: Prior
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One expert's points [..., P, 4] (lat, lon, weight, radius_km) as its kernels: centres [..., P, 3],
    weights [..., P] summing to 1 along P (0 for points without a finite positive weight, and a row
    without any is all 0), half-mass radii km [..., P].

    The one definition of an expert's component, for serving (one answer) and for fitting (every
    photo of a split at once, padded with zero weights): weights ÷ (photo density)^density_power,
    radii widened to √(r² + bandwidth²)."""
    points = np.asarray(points, dtype=np.float64)
    lat, lon, weight, radius = np.moveaxis(points, -1, 0)
    keep = np.isfinite(weight) & (weight > 0)
    centres = latlon_to_unit(np.where(keep, lat, 0.0), np.where(keep, lon, 0.0))
    weights = np.where(keep, weight, 0.0)
    if density_power and keep.any():
        tilt = np.where(keep, -density_power * prior.photo_density(centres), -np.inf)
        top = tilt.max(axis=-1, keepdims=True)
        # Shifted: only the ratios matter, and exp must not overflow.
        weights = np.where(keep, weights * np.exp(tilt - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = weights.sum(axis=-1, keepdims=True)
    weights = weights / np.where(total > 0, total, 1.0)
    return centres, weights, np.sqrt(np.nan_to_num(radius) ** 2 + bandwidth_km**2)


def expert_components(answer: ExpertPoints, params: FusionParameters, prior: Prior) -> tuple[np.ndarray, ...] | None:
    """(centres, weights summing to 1, half-mass radii km) of one expert's points that carry weight, or
    None if none does."""
    points = np.stack([answer.lat_deg, answer.lon_deg, answer.weight, answer.radius_km], axis=-1)
    power = params.gallery_density_power if answer.expert in DENSITY_TILTED_EXPERTS else 0.0
    centres, weights, radius = expert_kernels(points, params.bandwidth_km[answer.expert], power, prior)
    held = weights > 0
    if not held.any():
        return None
    return centres[held], weights[held], radius[held]


def weighted_parts(answers: list[ExpertPoints], params: FusionParameters, prior: Prior) -> dict[str, tuple]:
    """{expert: (centres, weights, half-mass radii km)} of the experts that carry weight in the mixture."""
    # An expert the fit gave no weight (or that it never saw, as a newly deployed one) is left out.
    parts = {a.expert: expert_components(a, params, prior) for a in answers if params.weights.get(a.expert, 0) > 0}
    return {expert: p for expert, p in parts.items() if p is not None}


def build_mixture(answers: list[ExpertPoints], params: FusionParameters, prior: Prior) -> Mixture:
    parts = weighted_parts(answers, params, prior)
    present = {expert: params.weights[expert] for expert in parts}
    present[PRIOR] = params.weights[PRIOR]
    total = sum(present.values())
    floor = params.uniform_weight
    shares = {expert: (1 - floor) * w / total for expert, w in present.items()}
    centres = [prior.centres] + [p[0] for p in parts.values()]
    weights = [prior.weights * shares[PRIOR]] + [p[1] * shares[e] for e, p in parts.items()]
    radii = [np.full(len(prior.centres), prior.bandwidth_km)] + [p[2] for p in parts.values()]
    radius = np.concatenate(radii)
    kappa = kappa_for_half_mass_km(radius)
    from_experts = np.arange(len(radius)) >= len(prior.centres)
    if floor > 0:  # the uniform density: κ = 0, any centre
        shares[UNIFORM] = floor
        centres.append(np.array([[0.0, 0.0, 1.0]]))
        weights.append(np.array([floor]))
        radius = np.append(radius, UNIFORM_HALF_MASS_KM)
        kappa = np.append(kappa, 0.0)
        from_experts = np.append(from_experts, False)
    return Mixture(np.concatenate(centres), np.concatenate(weights), kappa, radius, shares, from_experts)


def sample_mixture(mixture: Mixture, n: int, seed: int, components: np.ndarray | None = None) -> np.ndarray:
    """n draws [n, 3] from the mixture (or from its `components` alone, a mask or indices), fixed by `seed`."""
    keep = slice(None) if components is None else components
    return vmf_mixture_sample(
        mixture.centres[keep], mixture.weights[keep], mixture.kappa[keep], n, np.random.default_rng(seed)
    )


@dataclass(frozen=True)
class Hypothesis:
    lat_deg: float
    lon_deg: float
    probability: float
    radius_50_km: float
    radius_90_km: float


@dataclass(frozen=True)
class FusedAnswer:
    hypotheses: list[Hypothesis]  # the first is the best guess
    radius_50_km: float  # around the best guess, of the whole mixture
    radius_90_km: float
    localizability: float
    mixture: Mixture

    @property
    def best_guess(self) -> Hypothesis:
        return self.hypotheses[0]


def cell_entropy(draws: np.ndarray) -> float:
    """Entropy in nats of where the draws [n, 3] fall among S2 cells of LOCALIZABILITY_LEVEL, with the
    Miller-Madow correction (k − 1)/2n for the k cells seen.

    At this resolution a 10 km kernel on a popular spot and a 300 km one count alike: what is
    measured is how many regions the answer spreads over, not how sharp its sharpest kernel is
    (the differential entropy of a mixture holding narrow kernels is all about the latter)."""
    lat, lon = unit_to_latlon(draws)
    _, counts = np.unique(latlon_to_cell_id(lat, lon, LOCALIZABILITY_LEVEL), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() + (len(counts) - 1) / (2 * counts.sum()))


def localizability(entropy: float, prior_entropy: float) -> float:
    """1 − H / H_prior in cell entropy, clipped to [0, 1]: 0 when spread over as many regions as the
    prior of where photos are taken, 1 when all in one cell."""
    return float(np.clip(1.0 - entropy / prior_entropy, 0.0, 1.0))


@dataclass(frozen=True)
class ScoreTable:
    """Each component's expected GeoScore at the answer's candidates: the decision's whole input."""

    candidates: np.ndarray  # [c, 3]: the prior's fixed candidates, then the answer's own
    columns: dict[str, np.ndarray]  # per component ("prior", experts): [c], of that component alone

    def expected(self, shares: dict[str, float]) -> np.ndarray:
        """The mixture's expected GeoScore [c], up to the uniform floor's constant, for these shares."""
        return sum(shares.get(name, 0.0) * column for name, column in self.columns.items())


def score_table(answers: list[ExpertPoints], params: FusionParameters, prior: Prior) -> ScoreTable:
    """The one definition of the decision's input, for serving (one answer) and fitting (each photo)."""
    parts = weighted_parts(answers, params, prior)
    own = []
    for centres, weights, radius in parts.values():
        kappa = kappa_for_half_mass_km(radius)
        modes = find_modes(centres, weights, kappa, params.min_separation_km, max_starts=32, tol_rad=MODE_TOL_RAD)
        own += [centres, np.stack([m.xyz for m in modes])]
    candidates = np.concatenate([prior.fixed_candidates, *own])
    columns = {PRIOR: prior.expected_geoscore(candidates)}
    for expert, (centres, weights, radius) in parts.items():
        columns[expert] = expected_geoscore(centres, weights, radius, candidates)
    return ScoreTable(candidates, columns)


def fuse(
    answers: list[ExpertPoints], params: FusionParameters, prior: Prior, top_k: int = 5, seed: int = 0
) -> FusedAnswer:
    """The fused answer of the experts' points (any subset, none included)."""
    mixture = build_mixture(answers, params, prior)
    table = score_table(answers, params, prior)
    floor = mixture.expert_weights.get(UNIFORM, 0.0)
    draws = sample_mixture(mixture, params.samples, seed, components=mixture.kappa > 0)
    scores = table.expected(mixture.expert_weights)
    regions = regions_of(prior.fixed(params.region_km), table.candidates, scores, draws, floor, prior.lattice, top_k)
    experts = mixture.from_experts
    if experts.any():  # how concentrated what the experts said is; with no expert there is nothing to localize by
        said = sample_mixture(mixture, params.samples, seed, components=experts)
        located = localizability(cell_entropy(said), prior.answer_entropy(params))
    else:
        located = 0.0
    lat, lon = unit_to_latlon(table.candidates[[r.index for r in regions]])
    hypotheses = [
        Hypothesis(float(a), float(o), r.probability, r.radius_50_km, r.radius_90_km)
        for a, o, r in zip(np.atleast_1d(lat), np.atleast_1d(lon), regions, strict=True)
    ]
    to_best = great_circle_angle(draws, table.candidates[regions[0].index]) * EARTH_RADIUS_KM
    experts_in = [e for e in mixture.expert_weights if e not in (PRIOR, UNIFORM)]
    radii = (radius_holding_mass(to_best, floor, mass) for mass in params.levels(experts_in))
    return FusedAnswer(hypotheses, *radii, located, mixture)


def mixture_points(mixture: Mixture) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The mixture's components as (lat, lon, weight, radius_km) arrays, for the response's distribution."""
    lat, lon = unit_to_latlon(mixture.centres)
    return lat, lon, mixture.weights, mixture.half_mass_km
