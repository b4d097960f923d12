"""A sampler expert's answer: each photo's samples from its own seed, served and fitted alike.

One seeding rule for the service and the fitting path: a photo's starting noise comes from a
generator seeded with the request's seed, whatever else is in its batch. The service
(sampler/server.py) batches concurrent requests through `photo_samples`; the fitting path
(training/expert_outputs.py) answers a split through `sampled_points`, which calls it with the
seed the orchestrator sends (0), so the fusion is fitted on the samples the suite serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from geoloc.geo.sphere import unit_to_latlon
from geoloc.sampler.model import LocationSampler

CHUNK_PHOTOS = 40  # photos drawn at once by the fitting path: bounds the SH decoding's grid products


def photo_samples(
    sampler: LocationSampler, features: np.ndarray, n_samples: int, steps: int, guidance: float, seeds: Sequence[int]
) -> np.ndarray:
    """[q, n_samples, 3] unit vectors for features [q, d], photo i's noise from its own seeds[i]."""
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    return sampler.sample_places(features, n_samples, steps, guidance, generators=generators)


def sampled_points(sampler: LocationSampler, features: np.ndarray, asked: Mapping[str, int], seed: int = 0):
    """[n, samples, 4] (lat, lon, 1/samples, radius_km 0) for features [n, d]: what the service answers
    each photo asked with `seed`, at the sampler's default guidance and the method's asked samples and steps."""
    n, steps = asked[f"{sampler.method}_samples"], asked[f"{sampler.method}_steps"]
    chunks = []
    for start in range(0, len(features), CHUNK_PHOTOS):
        batch = features[start : start + CHUNK_PHOTOS]
        xyz = photo_samples(sampler, batch, n, steps, sampler.default_guidance, [seed] * len(batch))
        lat, lon = unit_to_latlon(xyz)
        chunks.append(np.stack([lat, lon, np.full_like(lat, 1.0 / n), np.zeros_like(lat)], axis=-1))
    return np.concatenate(chunks) if chunks else np.zeros((0, n, 4))
