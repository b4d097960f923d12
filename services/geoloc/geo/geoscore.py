"""GeoGuessr's scoring curve, as used by OSV-5M and PIGEON: the score of an answer `d` km from the truth.

Shared by the evaluation (which reports it) and the orchestrator (whose best guess maximises its
expectation), so that both mean the same curve.
"""

from __future__ import annotations

import numpy as np

GEOSCORE_MAX = 5000.0  # points at 0 km
GEOSCORE_SCALE_KM = 1492.7  # the e-folding distance


def geoscore_of_km(distance_km: np.ndarray) -> np.ndarray:
    return GEOSCORE_MAX * np.exp(-np.asarray(distance_km) / GEOSCORE_SCALE_KM)
