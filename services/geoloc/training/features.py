"""Backbone features of a labelled split's photos, computed once in-process and cached.

Training the expert heads needs the same feature the embedding service returns for each
photo. On a machine without Triton running, this runs the model's own `backbone.py` network
in-process with the same preprocessing (config.pbtxt's, through `model_input_from_photo`),
which the model-repository tests hold equal to Triton's output. The cache is keyed by the
model's config, its network code and the split's file list, so a change to any of them
recomputes. Larger sets (MP-16 on a GPU, say) go through `geoloc features` instead
(feature_shards.py: shards, workers, Triton), whose in-process backbone this uses.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from geoloc.artifacts.files import written_atomically
from geoloc.common.paths import cache_dir as default_cache_dir
from geoloc.embedding.config import EmbeddingSettings
from geoloc.embedding.model_config import DEFAULT_MODEL_REPOSITORY, read_model_config
from geoloc.embedding.preprocessing import model_input_from_photo
from geoloc.evaluation.dataset import Split
from geoloc.training.feature_shards import BATCH, InProcessFeatures


def split_features(
    split: Split,
    model: str = "efficientnet_lite2",
    cache_dir: Path | None = None,
    repository: Path = DEFAULT_MODEL_REPOSITORY,
    progress: bool = True,
) -> np.ndarray:
    """Features [len(split.images), d] float32, in the split's order; cached on disk."""
    config = read_model_config(model, repository)
    code = (Path(repository) / model / "1" / "backbone.py").read_bytes()
    names = [image.image for image in split.images]
    key = hashlib.sha256(json.dumps([config, names], sort_keys=True).encode() + code).hexdigest()[:16]
    path = (cache_dir or default_cache_dir()) / "features" / model / f"{split.name}-{key}.npz"
    if path.exists():
        cached = np.load(path)
        if list(cached["images"]) == names:
            return cached["features"]
    features = compute_features([image.path for image in split.images], model, repository, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_atomically(path) as stream:  # torchrun's ranks may compute and write it at once
        np.savez(stream, images=np.asarray(names), features=features)
    return features


def compute_features(photos: list[Path], model: str, repository: Path, progress: bool) -> np.ndarray:
    """Features [len(photos), d] float32 of photo files, in order: the feature pipeline's in-process
    backbone and the embedding service's decode and crop, in batches of BATCH."""
    backbone = InProcessFeatures(model, repository)
    limits = EmbeddingSettings().photo_limits()
    chunks = []
    for start in tqdm(range(0, len(photos), BATCH), desc=f"{model} features", unit="batch", disable=not progress):
        batch = photos[start : start + BATCH]
        chunks.append(
            backbone.features(
                np.stack([model_input_from_photo(p.read_bytes(), limits, backbone.info.crop) for p in batch])
            )
        )
    return np.concatenate(chunks).astype(np.float32)
