"""Summary figures for a set of great-circle errors: accuracy at fixed radii, GeoScore, median, mean."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoloc.geo.geoscore import geoscore_of_km

# The street / city / region / country / continent radii used since Im2GPS (Hays & Efros 2008).
THRESHOLDS_KM: tuple[float, ...] = (1, 25, 200, 750, 2500)


@dataclass(frozen=True)
class Metrics:
    n: int
    thresholds_km: tuple[float, ...]
    accuracy: tuple[float, ...]  # fraction of errors <= each threshold, aligned with thresholds_km
    geoscore: float
    median_km: float
    mean_km: float

    def accuracy_at(self, threshold_km: float) -> float:
        try:
            return self.accuracy[self.thresholds_km.index(threshold_km)]
        except ValueError:
            raise KeyError(f"no accuracy at {threshold_km} km; thresholds are {self.thresholds_km}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            # JSON keys are strings; "%g" keeps 1 as "1" rather than "1.0".
            "accuracy_within_km": {f"{t:g}": a for t, a in zip(self.thresholds_km, self.accuracy, strict=True)},
            "geoscore": self.geoscore,
            "median_km": self.median_km,
            "mean_km": self.mean_km,
        }


def summarize(
    distances_km: Sequence[float] | np.ndarray,
    thresholds_km: Sequence[float] = THRESHOLDS_KM,
    weights: Sequence[float] | np.ndarray | None = None,
) -> Metrics:
    """The figures of these errors; with `weights` (one per error, non-negative, not all zero) each
    figure is the weighted one (the median a weighted median), as when every photographer gets one
    vote."""
    d = np.asarray(distances_km, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError("no distances to summarise")
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ValueError("distances must be finite and non-negative")
    if weights is None:
        share = None
    else:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != d.shape or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"weights must be {d.size} finite non-negative numbers, not all zero")
        share = w / w.sum()

    def mean(values: np.ndarray) -> float:
        return float(np.mean(values)) if share is None else float(share @ values)

    thresholds = tuple(thresholds_km)
    return Metrics(
        n=int(d.size),
        thresholds_km=thresholds,
        accuracy=tuple(mean(d <= t) for t in thresholds),
        geoscore=mean(geoscore_of_km(d)),
        median_km=float(np.median(d)) if share is None else _weighted_median(d, share),
        mean_km=mean(d),
    )


def _weighted_median(values: np.ndarray, share: np.ndarray) -> float:
    """The smallest value at which the cumulative share reaches one half."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(share[order])
    return float(values[order][min(np.searchsorted(cumulative, 0.5 - 1e-12), len(values) - 1)])
