"""Retrieved places as the decoder's neighbour input.

At serving time the orchestrator passes the gallery expert's top points with a Decode request; in
training the same points come from the same gallery retrieval (geoloc.training.expert_outputs), so
the decoder learns from neighbours as good (and as wrong) as it will be given.
"""

from __future__ import annotations

import numpy as np
import torch

from geoloc.geo.s2cells import latlon_to_cell_id
from geoloc.tokens.decoder import TOKEN_COUNT, Neighbours
from geoloc.tokens.geotokens import cell_id_to_tokens


def neighbour_sets(lat_deg: np.ndarray, lon_deg: np.ndarray, weights: np.ndarray, count: int) -> Neighbours:
    """Neighbours [n, count] from places [n, m] (lat, lon, weight >= 0), heaviest first.

    Each row keeps its `count` heaviest places with positive weight, their weights rescaled to
    sum to 1; missing slots are absent (weight 0). A row with no positive weight has none.
    """
    lat, lon, weights = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (lat_deg, lon_deg, weights))
    rows = len(weights)
    tokens = np.zeros((rows, count, TOKEN_COUNT), dtype=np.int64)
    shares = np.zeros((rows, count), dtype=np.float32)
    order = np.argsort(-weights, axis=1, kind="stable")[:, :count]
    for row in range(rows):
        kept = [j for j in order[row] if weights[row, j] > 0]
        if not kept:
            continue
        cells = np.atleast_1d(latlon_to_cell_id(lat[row, kept], lon[row, kept], 20))
        tokens[row, : len(kept)] = [cell_id_to_tokens(int(c)) for c in cells]
        shares[row, : len(kept)] = weights[row, kept] / weights[row, kept].sum()
    return Neighbours(torch.from_numpy(tokens), torch.from_numpy(shares))
