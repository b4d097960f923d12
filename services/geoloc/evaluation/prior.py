"""The prior baseline: answer every photo with the place where training photos are densest.

This is the floor every model must beat (docs/design.md §5: with the backbones available here,
models land near it). The density is a von Mises-Fisher kernel density over the training
split's GPS labels; the answer is its highest mode, found by spherical mean-shift.

Each photographer counts once: a photo weighs 1 / (photos by its author). Im2GPS3k's
splits are drawn by photographer, and one author's burst (167 training photos on Skye)
says where that author travelled, not where photos are taken.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np

from geoloc.evaluation.dataset import LabelledImage, Split
from geoloc.evaluation.predictions import Prediction
from geoloc.geo.mixtures import find_modes
from geoloc.geo.sphere import latlon_to_unit
from geoloc.geo.vmf import vmf_kappa_for_radius_km

# Half of each training photo's kernel mass within this radius: wide enough that a city's
# photos merge into one bump, narrow enough that Europe and North America stay apart.
DEFAULT_BANDWIDTH_KM = 250.0


def densest_place(split: Split, bandwidth_km: float = DEFAULT_BANDWIDTH_KM) -> tuple[float, float]:
    """(lat, lon) of the highest mode of the split's GPS kernel density."""
    lat = np.array([r.lat for r in split.images])
    lon = np.array([r.lon for r in split.images])
    kappa = float(vmf_kappa_for_radius_km(bandwidth_km, 0.5))
    modes = find_modes(latlon_to_unit(lat, lon), photographer_weights(split), kappa, merge_km=bandwidth_km / 2)
    return float(modes[0].lat_deg), float(modes[0].lon_deg)


def photographer_weights(split: Split) -> np.ndarray:
    """1 / (photos by the same author) per photo; a photo with no author stands alone."""
    photos_by = Counter(r.author for r in split.images if r.author)
    return np.array([1.0 / photos_by[r.author] if r.author else 1.0 for r in split.images])


class PriorPredictions:
    """A PredictionSource that gives every image the same guess: the training split's densest place."""

    def __init__(self, train: Split, bandwidth_km: float = DEFAULT_BANDWIDTH_KM) -> None:
        self.train = train
        self.bandwidth_km = bandwidth_km
        self.lat, self.lon = densest_place(train, bandwidth_km)

    @property
    def description(self) -> str:
        return (
            f"prior:densest place of {self.train.name} ({len(self.train)} photos, one vote per photographer, "
            f"{self.bandwidth_km:g} km kernels) at {self.lat:.3f},{self.lon:.3f}"
        )

    def predict(self, records: Sequence[LabelledImage]) -> Iterator[Prediction]:
        for record in records:
            yield Prediction(image=record.image, lat=self.lat, lon=self.lon)
