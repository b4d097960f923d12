"""What `geoloc cv` reads and where it writes: the photos cross-validated, their files (for the text
expert, which reads pixels), and where --ship writes the experts and --write-fusion the fusion."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def cv_photos(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """The photos cross-validated: features [n, d], places [n, 2], photographers, and what they are.
    Im2GPS3k train + val (features cached), or a features folder's photos with --features."""
    if args.features:
        from geoloc.training.feature_shards import load_feature_set

        loaded = load_feature_set(args.features)
        return loaded.features, loaded.places, list(loaded.authors), f"{args.features} ({loaded.backbone})"
    from geoloc.evaluation.dataset import im2gps3k_split
    from geoloc.training.features import split_features

    splits = [im2gps3k_split(name, args.data) for name in ("train", "val")]
    images = [i for s in splits for i in s.images]
    features = np.concatenate([split_features(s) for s in splits])
    truth = np.array([(i.lat, i.lon) for i in images])
    return features, truth, [i.author for i in images], "Im2GPS3k train + val"


def cv_photo_paths(args: argparse.Namespace) -> list[Path]:
    """The files of the photos cv_photos gives (Im2GPS3k train + val), in the same order."""
    from geoloc.evaluation.dataset import im2gps3k_split

    return [i.path for name in ("train", "val") for i in im2gps3k_split(name, args.data).images]


def written_models(args: argparse.Namespace) -> tuple[dict[str, Path], Path]:
    """Where --ship writes each expert and --write-fusion the fusion: --models, or the shipped places."""
    from geoloc.common.paths import MODELS_DIR
    from geoloc.embedding.model_config import DEFAULT_MODELS
    from geoloc.training.expert_outputs import checkpoints_in, fusion_in, shipped_checkpoints
    from geoloc.training.feature_shards import MANIFEST

    if args.models is None:
        return shipped_checkpoints(), fusion_in(MODELS_DIR)
    model = DEFAULT_MODELS[0]  # the Im2GPS3k features' backbone
    if args.features:  # the gallery head is named for the Triton model of the features
        model = json.loads((Path(args.features) / MANIFEST).read_text())["model"]
    return checkpoints_in(args.models, model), fusion_in(args.models)
