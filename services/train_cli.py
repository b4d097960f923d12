"""`geoloc train EXPERT`: train an expert's head on the Im2GPS3k train split, choose it on val."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads in the handlers only, so that `geoloc --help` stays quick
    import numpy as np


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train", help="train an expert's model", description=__doc__)
    experts = parser.add_subparsers(dest="expert", required=True)
    from geoloc.gallery import train_cli as gallery
    from geoloc.orchestrator import train_cli as fusion
    from geoloc.sampler import train_cli as sampler
    from geoloc.tokens import train_cli as tokens

    gallery.add_parser(experts)
    sampler.add_parser(experts)
    tokens.add_parser(experts)
    fusion.add_parser(experts)
    return parser


def add_training_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """The options every expert trained on backbone features shares: data, features, output, steps, device, seed."""
    parser.add_argument("--data", type=Path, metavar="DIR", help="data root holding im2gps3k/ (default: ../shared/data)")
    parser.add_argument("--features", type=Path, metavar="FILE.npz",
                        help="train on these features and places instead of the train split's")
    parser.add_argument("--out", type=Path, metavar="PATH.pt", help=f"(default: {default_out} in the checkout)")
    parser.add_argument("--steps", type=int, help="optimiser steps per configuration (default: the grid's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)


@dataclass
class TrainingData:
    train: object  # geoloc.evaluation.dataset.Split: the Im2GPS3k train split (the prior baseline's source)
    val: object
    train_features: np.ndarray  # [n, d] float32
    train_places: np.ndarray  # [n, 2] lat, lon
    val_features: np.ndarray
    val_places: np.ndarray
    train_source: str  # what the features are, for logs and manifests


def training_data(args: argparse.Namespace) -> TrainingData:
    """The train split's cached features (or --features) and the val split's, with their places."""
    import numpy as np

    from geoloc.embedding.features import split_features
    from geoloc.evaluation.dataset import default_data_root, load_split

    data = (args.data or default_data_root()) / "im2gps3k"
    train, val = load_split(data / "train"), load_split(data / "val")
    if args.features:
        loaded = np.load(args.features)
        train_features, train_places = loaded["features"].astype(np.float32), loaded["latlon"].astype(np.float64)
        train_source = f"{args.features} ({len(train_features)} features)"
    else:
        train_features, train_places = split_features(train), np.array([(i.lat, i.lon) for i in train.images])
        train_source = f"{train.root} ({len(train)} photos)"
    return TrainingData(train, val, train_features, train_places, split_features(val),
                        np.array([(i.lat, i.lon) for i in val.images]), train_source)
