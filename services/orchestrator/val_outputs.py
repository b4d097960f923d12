"""Every expert's answer for every photo of a split, computed in-process as the services compute them.

Fitting the fusion needs each expert's weighted points on the 360 val photos; asking the live
services would give the same points (the services call these same functions) but needs the
suite running. The answers are cached per split and per model version under the cache dir.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geoloc.orchestrator.fusion import ExpertPoints


@dataclass(frozen=True)
class ExpertRequests:
    """What the orchestrator asks of each expert (its settings' defaults)."""

    gallery_k: int = 32
    sampler_samples: int = 128
    sampler_steps: int = 16
    tokens_beam_width: int = 5


def _padded(rows: list[tuple[np.ndarray, ...]], width: int) -> np.ndarray:
    """[n, width, 4] of (lat, lon, weight, radius) rows, padded with zero weights."""
    out = np.zeros((len(rows), width, 4))
    for i, columns in enumerate(rows):
        stacked = np.stack(columns, axis=1)[:width]
        out[i, :len(stacked)] = stacked
    return out


def compute_expert_outputs(features: np.ndarray, requests: ExpertRequests, seed: int = 0) -> dict[str, np.ndarray]:
    """{expert: [n, points, 4] (lat, lon, weight, radius_km)} for backbone features [n, d]."""
    from geoloc.common.geodesy import unit_to_latlon
    from geoloc.gallery.build import DEFAULT_GALLERY_DIR
    from geoloc.gallery.heads import SHIPPED_HEADS, load_head
    from geoloc.gallery.index import GalleryIndex
    from geoloc.sampler.model import SHIPPED_SAMPLERS, load_sampler
    from geoloc.tokens.cells import decode_photo
    from geoloc.tokens.model import SHIPPED_TOKENS, load_token_model

    head, gallery = load_head(SHIPPED_HEADS / "efficientnet_lite2_head.pt"), GalleryIndex.load(DEFAULT_GALLERY_DIR)
    probabilities, ids = gallery.softmax_top_k(head.queries(features), requests.gallery_k, head.logit_scale)
    places = gallery.coordinates[ids]
    outputs = {"gallery": np.stack([places[..., 0], places[..., 1], probabilities, np.zeros_like(probabilities)], axis=-1)}
    n = requests.sampler_samples
    for method in ("flow", "sh"):
        sampler = load_sampler(SHIPPED_SAMPLERS / f"{method}.pt")
        chunks = []
        for start in range(0, len(features), 40):  # bounds the SH decoding's grid products in memory
            generator = torch.Generator().manual_seed(seed + start)
            batch = features[start:start + 40]
            xyz = sampler.sample_places(batch, n, requests.sampler_steps, sampler.default_guidance, generator)
            lat, lon = unit_to_latlon(xyz)
            chunks.append(np.stack([lat, lon, np.full_like(lat, 1.0 / n), np.zeros_like(lat)], axis=-1))
        outputs[method] = np.concatenate(chunks)
    model = load_token_model(SHIPPED_TOKENS / "decoder.pt")
    rows = []
    for feature in features:
        cells = decode_photo(model, feature, "beam", beam_width=requests.tokens_beam_width)
        rows.append(tuple(np.array([getattr(c, f) for c in cells]) for f in ("lat_deg", "lon_deg", "probability", "radius_km")))
    outputs["tokens"] = _padded(rows, requests.tokens_beam_width)
    return outputs


def models_fingerprint() -> str:
    """A short hash of the shipped expert checkpoints: cached outputs are only reused for the same models."""
    from geoloc.gallery.heads import SHIPPED_HEADS
    from geoloc.sampler.model import SHIPPED_SAMPLERS
    from geoloc.tokens.model import SHIPPED_TOKENS

    digest = hashlib.sha256()
    for path in (SHIPPED_HEADS / "efficientnet_lite2_head.pt", SHIPPED_SAMPLERS / "flow.pt", SHIPPED_SAMPLERS / "sh.pt",
                 SHIPPED_TOKENS / "decoder.pt"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def cached_expert_outputs(features: np.ndarray, requests: ExpertRequests, cache_dir: Path, split: str) -> dict[str, np.ndarray]:
    key = hashlib.sha256(features.tobytes() + repr(requests).encode() + models_fingerprint().encode()).hexdigest()[:16]
    path = cache_dir / "fusion" / f"{split}-experts-{key}.npz"
    if path.exists():
        with np.load(path) as saved:
            return dict(saved)
    outputs = compute_expert_outputs(features, requests)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **outputs)
    return outputs


def photo_answers(outputs: dict[str, np.ndarray], row: int, experts=None) -> list[ExpertPoints]:
    """The experts' answers for one photo, as the orchestrator would hold them."""
    chosen = outputs if experts is None else {e: outputs[e] for e in experts}
    return [ExpertPoints(e, a[row, :, 0], a[row, :, 1], a[row, :, 2], a[row, :, 3]) for e, a in chosen.items()]
