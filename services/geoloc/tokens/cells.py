"""From decoded token sequences to the expert's answer: distinct S2 cells with probabilities and sizes.

A cell stands for the model's belief that the photo was taken somewhere inside it, so as a
weighted point it is read as a cap of the cell's area: `radius_km` is the radius of the cap
holding half of that area, the half-mass radius of a uniform spread over the cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from geoloc.geo.s2cells import cell_id_to_latlon, cell_id_to_vertices
from geoloc.geo.sphere import EARTH_RADIUS_KM
from geoloc.tokens.decoder import Neighbours
from geoloc.tokens.geotokens import tokens_to_cell_id
from geoloc.tokens.model import TokenModel
from geoloc.tokens.search import Decoded, beam_search_batch, greedy, sample_sequences

Strategy = Literal["greedy", "beam", "sample"]


@dataclass(frozen=True)
class DecodedCell:
    tokens: tuple[int, ...]
    cell_id: int
    level: int
    lat_deg: float
    lon_deg: float
    log_probability: float  # of the sequence under the model
    probability: float  # normalised over the cells of one answer
    radius_km: float


def _triangle_area_sr(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    # Van Oosterom and Strackee: tan(E/2) = |a·(b×c)| / (1 + a·b + b·c + c·a), exact for geodesic sides.
    numerator = abs(float(np.dot(a, np.cross(b, c))))
    return 2.0 * float(np.arctan2(numerator, 1.0 + a @ b + b @ c + c @ a))


def cell_area_sr(cell_id: int) -> float:
    """The cell's area in steradians (its edges are great-circle arcs, so two triangles are exact)."""
    v = cell_id_to_vertices(np.uint64(cell_id))
    return _triangle_area_sr(v[0], v[1], v[2]) + _triangle_area_sr(v[0], v[2], v[3])


def cell_radius_km(cell_id: int) -> float:
    """Radius of the cap holding half the cell's area: a cap of area A has 1 − cos θ = A / 2π."""
    return float(np.arccos(1.0 - cell_area_sr(cell_id) / (4 * np.pi))) * EARTH_RADIUS_KM


def distinct_cells(decoded: Decoded, level: int) -> list[DecodedCell]:
    """The distinct cells of decoded sequences, most probable first, probabilities normalised over them.

    Sampling may draw a sequence more than once: it counts once, with the model's probability.
    """
    seen: dict[tuple[int, ...], float] = {}
    for tokens, log_p in zip(decoded.tokens.tolist(), decoded.log_probs.tolist(), strict=True):
        seen.setdefault(tuple(tokens), log_p)
    ranked = sorted(seen.items(), key=lambda item: -item[1])
    log_ps = np.array([log_p for _, log_p in ranked])
    shares = np.exp(log_ps - log_ps.max())
    shares /= shares.sum()
    cells = []
    for (tokens, log_p), share in zip(ranked, shares, strict=True):
        cell_id = tokens_to_cell_id(tokens, level)
        lat, lon = cell_id_to_latlon(np.uint64(cell_id))
        cells.append(
            DecodedCell(tokens, cell_id, level, float(lat), float(lon), log_p, float(share), cell_radius_km(cell_id))
        )
    return cells


@torch.no_grad()
def decode_photos(
    model: TokenModel,
    features: np.ndarray,
    strategy: Strategy,
    *,
    level: int = 20,
    beam_width: int = 5,
    n_samples: int = 30,
    temperature: float = 0.7,
    neighbours: Neighbours | None = None,
    generator: torch.Generator | None = None,
) -> list[list[DecodedCell]]:
    """The cells each photo's feature [b, d] decodes to by `strategy`, the batch decoded together
    (one forward pass a step for all of them); neighbours (a batch of b) when the model attends to
    them. Sampling takes one photo: its draws come from the one `generator`."""
    conditions = model.standardiser(features)
    if neighbours is not None:
        neighbours = neighbours.to(model.device)
    if strategy == "greedy":
        decoded = greedy(model.decoder, conditions, level, neighbours)
        per_photo = [Decoded(decoded.tokens[i : i + 1], decoded.log_probs[i : i + 1]) for i in range(len(features))]
    elif strategy == "beam":
        per_photo = beam_search_batch(model.decoder, conditions, beam_width, level, neighbours)
    elif strategy == "sample":
        if len(features) != 1:
            raise ValueError(f"sampling decodes one photo at a time, got {len(features)}")
        per_photo = [
            sample_sequences(model.decoder, conditions[0], n_samples, temperature, level, generator, neighbours)
        ]
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    return [distinct_cells(decoded, level) for decoded in per_photo]


def decode_photo(model: TokenModel, feature: np.ndarray, strategy: Strategy, **options) -> list[DecodedCell]:
    """The cells one photo's feature [d] decodes to (decode_photos, a batch of one)."""
    return decode_photos(model, feature[np.newaxis], strategy, **options)[0]
