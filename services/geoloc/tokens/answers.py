"""The token expert's answer as points: its beam's cells, as the service decodes them (tokens/cells.py)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from geoloc.tokens.cells import decode_photo
from geoloc.tokens.model import TokenModel

CELL_FIELDS = ("lat_deg", "lon_deg", "probability", "radius_km")  # a decoded cell's, as answer columns


def beam_points(model: TokenModel, features: np.ndarray, asked: Mapping[str, int], seed: int = 0) -> np.ndarray:
    """[n, beam_width, 4] (lat, lon, probability, radius_km) for features [n, d], zero-weight padding where
    the beam holds fewer distinct cells; `seed` is unused (a beam draws nothing)."""
    width = asked["tokens_beam_width"]
    out = np.zeros((len(features), width, 4))
    for i, feature in enumerate(features):
        cells = decode_photo(model, feature, "beam", beam_width=width)[:width]
        for j, cell in enumerate(cells):
            out[i, j] = [getattr(cell, f) for f in CELL_FIELDS]
    return out
